//! The front channel (RFC 6749 §4.1, RFC 9126 §4, RFC 9207, OpenID Connect Core §3.1.2):
//! `GET` or `POST /authorize`, then the login and consent pages, then the code, sent back to
//! the client's redirect_uri with `state` and `iss`.
//!
//! ```text
//! /authorize ──(no session)──> 303 /authorize/login ──POST──> 303 /authorize/consent ──POST──┐
//!     │  └────(session)────────> 303 /authorize/consent                                      │
//!     └──(session + remembered consent)──> 303 redirect_uri?code=…&state=…&iss=…  <──────────┘
//! ```
//!
//! The user can refuse on either page: Cancel on the login page, Deny on the consent page.
//! Both consume the interaction and send `access_denied` back the way every other error goes
//! ([`denied`]).
//!
//! Between the steps the browser holds an *interaction* ([`cookies`]): a database row with the
//! validated request, a CSRF token the forms must echo ([`page_form`]), and, after sign-in, who
//! signed in. Signing in gives the interaction a new id ([`login`]); the consent step
//! ([`consent`]) consumes it in one statement, so an interaction yields at most one code. A
//! login session lets later requests skip the login page; a remembered consent lets them skip
//! the consent page.
//!
//! A pushed request (RFC 9126) is read, not spent, when the browser brings its request_uri: a
//! reload, a second tab or a link scanner fetching the URL must not break the flow. It is spent
//! at the point of authorization, by the write that issues the code (or, on the consent page,
//! just before the approval is recorded), so one request_uri yields at most one code (FAPI 2.0
//! SP §5.3.2.2; RFC 9126 §4). A refusal (Cancel or Deny) authorizes nothing and so does not
//! spend it: it lasts until it expires or yields a code, as after a visit.
//!
//! Errors that cannot be trusted to the client — an unknown client, a redirect_uri it did not
//! register, a used or expired request_uri, a form without the right cookie and CSRF token — are
//! shown as an HTML page and never redirected. Once the redirect_uri is known to be registered,
//! every error goes back to it, the server's own failures as `server_error` ([`respond`]).
//!
//! `POST /authorize` (OpenID Connect Core §3.1.2.1: the endpoint must accept both methods)
//! takes the same parameters as a form body and runs the same code. A cross-site POST carries
//! no SameSite=Lax cookie, so such a request never finds the login session: the user signs in
//! (or `prompt=none` answers `login_required`).

mod consent;
mod cookies;
mod login;
mod page_form;
mod respond;

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

pub use consent::{consent_page, consent_submit};
pub use login::{login_page, login_submit};

use crate::authz_request::{self, AuthorizationRequest, Prompt};
use crate::error::{ErrorCode, OAuthError};
use crate::form::{Form, MAX_FORM_BYTES};
use crate::issue::{self, IdTokenRequest};
use crate::model::Client;
use crate::policy::Policy;
use crate::request_object;
use crate::state::AppState;
use crate::store::{AuthorizationGrant, Interaction, SignedIn, StoreError};
use cookies::{INTERACTION_COOKIE, SESSION_COOKIE, cookie, set_cookie};
use respond::{Stop, ToClient, finish, page, see_other};

/// `GET /authorize`: the parameters in the query.
pub async fn authorize(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let params = if query.len() > MAX_FORM_BYTES {
        Err(OAuthError::invalid_request("the query string is too long"))
    } else {
        Form::parse(query.as_bytes())
    };
    answer(&state, &headers, params).await
}

/// `POST /authorize`: the same parameters as a form body (at most 64 KiB).
pub async fn authorize_post(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let params = crate::form::read_form(&headers, body).await;
    answer(&state, &headers, params).await
}

/// Both methods: the request, or the page saying why its parameters could not be read.
async fn answer(
    state: &AppState,
    headers: &HeaderMap,
    params: Result<Form, OAuthError>,
) -> Response {
    finish(match params {
        Ok(params) => start(state, headers, &params).await,
        Err(e) => Err(e.into()),
    })
}

/// One request's parameters, from the query or the body.
async fn start(state: &AppState, headers: &HeaderMap, params: &Form) -> Result<Response, Stop> {
    let client_id = params
        .get("client_id")
        .ok_or_else(|| OAuthError::invalid_request("client_id is required"))?;
    let client = state
        .clients
        .get(&state.store, client_id)
        .await
        .map_err(page)?
        .ok_or_else(|| OAuthError::invalid_request("client_id is not a registered client"))?;
    let now = state.now();
    let request = match params.get("request_uri") {
        // RFC 9126 §4: the pushed parameters are the request; other parameters are ignored
        // (client_id had to match: find_par only returns the client's own request). Visiting
        // does not spend the request_uri; issuing the code does (see `issue_code`).
        Some(uri) => {
            let pushed = state
                .store
                .find_par(uri, &client.client_id, now)
                .await
                .map_err(page)?
                .ok_or_else(|| {
                    OAuthError::new(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::InvalidRequestUri,
                        "the request_uri is unknown, expired, already used, or another client's",
                    )
                })?;
            let mut request = AuthorizationRequest::from_json(pushed.params).map_err(|e| {
                tracing::error!(error = %e, "a stored pushed request does not parse");
                OAuthError::server_error("the server could not complete the request")
            })?;
            request.pushed = Some(pushed.handle);
            // Registered when pushed; the registration may have changed since.
            authz_request::ensure_registered(&client, &request.redirect_uri)?;
            request
        }
        None => {
            // RFC 9101 §5: a request object by value; its parameters are the request. Until
            // it has been verified nothing in it is trusted, so its errors are pages.
            let from_object;
            let params = match params.get("request") {
                Some(jwt) if Policy::of(&client).par_required(&client).is_none() => {
                    let rules = Policy::of(&client).request_object_rules();
                    from_object = request_object::open(state, &client, jwt, rules, now)
                        .await
                        .map_err(page)?;
                    &from_object
                }
                _ => params,
            };
            let par_required = Policy::of(&client).par_required(&client);
            let redirect_uri = match authz_request::registered_redirect_uri(&client, params) {
                Ok(uri) => uri,
                // Nowhere trusted to send it, but the reason to give is that this client must
                // push its requests (such a client's request object is not opened here).
                Err(e) => {
                    return Err(par_required.map_or(e, OAuthError::invalid_request).into());
                }
            };
            authz_request::state_too_long(params)?;
            let back = ToClient::new(
                state,
                &redirect_uri,
                authz_request::echo_state(params),
                authz_request::wants_fragment(params),
            );
            if let Some(why) = par_required {
                return Err(back.fail(OAuthError::invalid_request(why)));
            }
            let mut request = authz_request::validate(&client, params, redirect_uri.clone())
                .map_err(|e| back.fail(e))?;
            authz_request::check_subject(state, &mut request).map_err(|e| back.fail(e))?;
            authz_request::check_resource(state, &client, &mut request)
                .await
                .map_err(|e| back.fail(e))?;
            request
        }
    };
    begin(state, headers, &client, request, now).await
}

/// A validated request: answer at once if the session and a remembered consent allow it (or
/// prompt=none forbids pages), otherwise start an interaction and send the browser to its page.
async fn begin(
    state: &AppState,
    headers: &HeaderMap,
    client: &Client,
    request: AuthorizationRequest,
    now: i64,
) -> Result<Response, Stop> {
    let back = ToClient::of(state, &request);
    // OpenID Connect Core §5.5.1.1: an essential acr no sign-in here satisfies is a failed
    // authentication; better said now than after the user has signed in for nothing.
    chosen_acr(state, &request).map_err(|e| back.fail(e))?;
    // The session and what its user granted this client, in one read.
    let session = match cookie(headers, SESSION_COOKIE) {
        Some(id) => state
            .store
            .get_login_session_and_consent(
                id,
                &client.client_id,
                consent_resource(state, &request),
                now,
            )
            .await
            .map_err(|e| back.fail(e))?,
        None => None,
    };
    let (user, granted) = match session.filter(|(s, _)| !must_sign_in(&request, s, now)) {
        Some((user, granted)) => (Some(user), granted),
        None => (None, Vec::new()),
    };
    let silent = request.has_prompt(Prompt::None);
    match &user {
        None if silent => {
            return Err(back.fail(OAuthError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::LoginRequired,
                "the user is not signed in and prompt=none forbids asking",
            )));
        }
        Some(u) if !request.has_prompt(Prompt::Consent) && covers(&request, &granted) => {
            let spends = request.pushed.as_deref();
            return issue_code(state, client, &request, u, None, spends, now).await;
        }
        Some(_) if silent => {
            return Err(back.fail(OAuthError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::ConsentRequired,
                "the user has not consented and prompt=none forbids asking",
            )));
        }
        _ => {}
    }
    let json = request.to_json().map_err(|e| {
        tracing::error!(error = %e, "an authorization request does not serialize");
        back.fail(OAuthError::server_error("the request could not be stored"))
    })?;
    let created = state
        .store
        .create_interaction(
            &client.client_id,
            &json,
            user.as_ref(),
            now + state.lifetimes.interaction,
        )
        .await
        .map_err(|e| back.fail(e))?;
    let next = if user.is_some() {
        "/authorize/consent"
    } else {
        "/authorize/login"
    };
    let mut resp = see_other(next).map_err(|e| back.fail(e))?;
    set_cookie(
        &mut resp,
        INTERACTION_COOKIE,
        &created.id,
        state.lifetimes.interaction,
    )
    .map_err(|e| back.fail(e))?;
    Ok(resp)
}

/// OpenID Connect Core §3.1.2.1: prompt=login / select_account, or a `max_age` the session's
/// `auth_time` exceeds (max_age=0 always does), mean the user signs in again; so does a session
/// of another user than the request names (`id_token_hint`, or a `sub` in `claims`, §5.5.1).
fn must_sign_in(request: &AuthorizationRequest, session: &SignedIn, now: i64) -> bool {
    request
        .subject
        .as_deref()
        .is_some_and(|s| s != session.user_id)
        || request.has_prompt(Prompt::Login)
        || request.has_prompt(Prompt::SelectAccount)
        || request
            .max_age
            .is_some_and(|m| m == 0 || now.saturating_sub(session.auth_time) > m)
}

/// Whether `user` has granted this client every scope the request asks for, for the same
/// resource ([`covers`]).
async fn consented(
    state: &AppState,
    user: &SignedIn,
    request: &AuthorizationRequest,
) -> Result<bool, StoreError> {
    let granted = state
        .store
        .granted_scopes(
            &user.user_id,
            &request.client_id,
            consent_resource(state, request),
        )
        .await?;
    Ok(covers(request, &granted))
}

/// Whether the remembered scopes `granted` answer `request` without the consent page. A request
/// with `authorization_details` never is: each transaction is approved by itself. Nothing
/// remembered means the page is shown once, even for a request asking for no scope.
fn covers(request: &AuthorizationRequest, granted: &[String]) -> bool {
    request.authorization_details.is_none()
        && !granted.is_empty()
        && request.scopes().iter().all(|s| granted.contains(s))
}

/// The key remembered consents are kept under: the API's identifier, or `""` for this server's
/// own endpoints.
fn consent_resource<'a>(state: &AppState, request: &'a AuthorizationRequest) -> &'a str {
    request
        .resource
        .as_deref()
        .filter(|r| *r != state.issuer)
        .unwrap_or("")
}

/// Issues the code for `user` and redirects the browser back to the client with it (and, for
/// `code id_token`, with an ID token that is a detached signature over code and state). A
/// request with `authorization_details` needs the `txn` of the user's approval of them.
/// `spends`: the pushed request to spend with the code, unless the caller spent it already.
async fn issue_code(
    state: &AppState,
    client: &Client,
    request: &AuthorizationRequest,
    user: &SignedIn,
    txn: Option<String>,
    spends: Option<&str>,
    now: i64,
) -> Result<Response, Stop> {
    let back = ToClient::of(state, request);
    if request.authorization_details.is_some() && txn.is_none() {
        tracing::error!(client_id = %client.client_id,
            "a code was about to be issued for authorization_details nobody approved");
        return Err(back.fail(OAuthError::server_error(
            "the authorization_details were not approved",
        )));
    }
    let acr = chosen_acr(state, request).map_err(|e| back.fail(e))?;
    let policy = Policy::of(client);
    let s_hash = request
        .state
        .as_deref()
        .filter(|_| policy.s_hash())
        .map(issue::left_half_hash);
    let grant = AuthorizationGrant {
        sub: user.user_id.clone(),
        scope: request.scope.clone(),
        redirect_uri: request.redirect_uri.clone(),
        redirect_uri_defaulted: request.redirect_uri_defaulted,
        code_challenge: request.code_challenge.clone(),
        code_challenge_method: request.code_challenge_method.clone(),
        nonce: request.nonce.clone(),
        auth_time: Some(user.auth_time),
        acr: Some(acr.to_owned()),
        claims: request.claims.clone(),
        s_hash: s_hash.clone(),
        resource: request.resource.clone(),
        authorization_details: request.authorization_details.clone(),
        txn,
    };
    let lifetime = policy.code_lifetime(state.lifetimes.authorization_code);
    let issued = state
        .store
        .issue_code(&request.client_id, &grant, now + lifetime, spends)
        .await
        .map_err(|e| spent_or(back, e))?;
    if !request.is_hybrid() {
        return Ok(back.code(&issued.code, None));
    }
    // OpenID Connect Core §3.3.2.11; FAPI 1 Advanced §5.2.2.1: c_hash, s_hash and nonce. The
    // only ID token with a c_hash: the token endpoint's omits it (`grants::user_tokens`).
    let id_token = issue::id_token(
        state,
        client,
        &IdTokenRequest {
            sub: &user.user_id,
            auth_time: Some(user.auth_time),
            nonce: request.nonce.as_deref(),
            acr: Some(acr),
            access_token: None,
            code: Some(&issued.code),
            s_hash: s_hash.as_deref(),
        },
    )
    .await
    .map_err(|e| back.fail(e))?;
    Ok(back.code(&issued.code, Some(&id_token)))
}

/// The `acr` the request's ID tokens state (`acr.rs`), or why it cannot succeed.
fn chosen_acr<'s>(
    state: &'s AppState,
    request: &AuthorizationRequest,
) -> Result<&'s str, OAuthError> {
    crate::acr::choose(request, &state.acr_values).map_err(|crate::acr::Unmet| {
        OAuthError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::AccessDenied,
            "none of the essential acr values requested can be satisfied by this server",
        )
    })
}

/// The browser's live interaction (cookie value and row), or the error page.
async fn current_interaction(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(String, Interaction), Stop> {
    let id = cookie(headers, INTERACTION_COOKIE).ok_or_else(expired_interaction)?;
    let interaction = state
        .store
        .get_interaction(id, state.now())
        .await
        .map_err(page)?
        .ok_or_else(expired_interaction)?;
    Ok((id.to_owned(), interaction))
}

/// The client and the request an interaction is for. From here on errors go to the client:
/// its redirect_uri is checked again against the client's current registration.
async fn context(
    state: &AppState,
    interaction: &Interaction,
) -> Result<(Client, AuthorizationRequest), Stop> {
    let request = AuthorizationRequest::from_json(interaction.request.clone()).map_err(|e| {
        tracing::error!(error = %e, "a stored interaction does not parse");
        OAuthError::server_error("the server could not complete the request")
    })?;
    let client = state
        .store
        .get_client(&interaction.client_id)
        .await
        .map_err(|e| ToClient::of(state, &request).fail(e))?
        .ok_or_else(|| OAuthError::invalid_request("the client no longer exists"))?;
    authz_request::ensure_registered(&client, &request.redirect_uri)?;
    Ok((client, request))
}

/// A request_uri another authorization spent first is shown as a page, as when it is visited
/// after that (the same request cannot end twice at the client); other failures go to the
/// client.
fn spent_or(back: ToClient<'_>, e: StoreError) -> Stop {
    match e {
        StoreError::RequestUriSpent => page(e),
        e => back.fail(e),
    }
}

/// The user's refusal — Cancel on the login page, Deny on the consent page — once the caller
/// has consumed the interaction: `access_denied` (RFC 6749 §4.1.2.1, OpenID Connect Core
/// §3.1.2.6) back to the client with `state` and `iss`, in the fragment for the hybrid flow.
/// The caller clears the interaction cookie. A pushed request is left unspent (see the module
/// documentation).
fn denied(back: ToClient<'_>) -> Response {
    back.error(&OAuthError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::AccessDenied,
        "the user denied the request",
    ))
}

fn expired_interaction() -> OAuthError {
    OAuthError::invalid_request(
        "this sign-in is unknown or has expired; return to the application and start again",
    )
}

fn display_name(client: &Client) -> &str {
    client.client_name.as_deref().unwrap_or(&client.client_id)
}

/// The origin the code response goes to (the pages' CSP lets forms redirect there).
fn client_origin(request: &AuthorizationRequest) -> Option<String> {
    let origin = url::Url::parse(&request.redirect_uri).ok()?.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed_in(auth_time: i64) -> SignedIn {
        SignedIn {
            user_id: "u".into(),
            auth_time,
            acr: crate::acr::PASSWORD.into(),
        }
    }

    #[test]
    fn prompt_and_max_age_decide_whether_to_sign_in_again() {
        let mut r = AuthorizationRequest::from_json(serde_json::json!({"client_id": "c",
            "response_type": "code", "redirect_uri": "https://rp.example/cb", "scope": "openid",
            "code_challenge": "x", "code_challenge_method": "S256"}))
        .unwrap();
        assert!(!must_sign_in(&r, &signed_in(0), 10_000));
        r.max_age = Some(100);
        assert!(!must_sign_in(&r, &signed_in(1000), 1100));
        assert!(must_sign_in(&r, &signed_in(1000), 1101));
        r.max_age = Some(0);
        assert!(must_sign_in(&r, &signed_in(1000), 1000));
        r.max_age = None;
        r.prompt = vec![Prompt::Login];
        assert!(must_sign_in(&r, &signed_in(1000), 1000));
        r.prompt = vec![Prompt::SelectAccount];
        assert!(must_sign_in(&r, &signed_in(1000), 1000));
        assert_eq!(
            client_origin(&r).as_deref(),
            Some("https://rp.example"),
            "the CSP's form-action origin"
        );
    }
}
