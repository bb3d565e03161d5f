//! The front channel (RFC 6749 §4.1, RFC 9126 §4, RFC 9207, OpenID Connect Core §3.1.2):
//! `GET /authorize`, then the login and consent pages, then the code, sent back to the client's
//! redirect_uri with `state` and `iss`.
//!
//! ```text
//! GET /authorize ──(no session)──> 303 /authorize/login ──POST──> 303 /authorize/consent ──POST──┐
//!       │  └────(session)────────> 303 /authorize/consent                                        │
//!       └──(session + remembered consent)──> 303 redirect_uri?code=…&state=…&iss=…  <────────────┘
//! ```
//!
//! Between the steps the browser holds an *interaction* (cookie `__Host-strongroom-interaction`):
//! a database row with the validated request, a CSRF token the forms must echo, and, after
//! sign-in, who signed in. The consent step consumes it in one statement, so an interaction
//! yields at most one code. A login session (cookie `__Host-strongroom-session`) lets later
//! requests skip the login page; a remembered consent lets them skip the consent page.
//!
//! Errors that cannot be trusted to the client — an unknown client, a redirect_uri it did not
//! register, a used or expired request_uri, a form without the right cookie and CSRF token — are
//! shown as an HTML page and never redirected. Once the redirect_uri is known to be registered,
//! errors go back to it.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use zeroize::Zeroizing;

use crate::authz_request::{self, AuthorizationRequest, Prompt};
use crate::error::{ErrorCode, OAuthError};
use crate::form::{Form, MAX_FORM_BYTES};
use crate::model::Client;
use crate::pages;
use crate::state::AppState;
use crate::store::{AuthorizationGrant, Interaction, SignedIn, StoreError};

pub const INTERACTION_COOKIE: &str = "__Host-strongroom-interaction";
pub const SESSION_COOKIE: &str = "__Host-strongroom-session";
/// The `acr` of a password sign-in (advertised in `acr_values_supported`).
pub const ACR_PASSWORD: &str = "urn:strongroom:acr:password";
/// The login and consent forms are a few short fields.
const MAX_PAGE_FORM_BYTES: usize = 8 * 1024;

/// A step that stops: the response already chosen (an error page, or a redirect of the error to
/// the client). Plain `?` on an [`OAuthError`] or a store failure yields the error page.
struct Stop(Response);

impl From<OAuthError> for Stop {
    fn from(e: OAuthError) -> Self {
        Stop(pages::error(&e))
    }
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        OAuthError::from(e).into()
    }
}

fn finish(r: Result<Response, Stop>) -> Response {
    r.unwrap_or_else(|Stop(resp)| resp)
}

/// `GET /authorize`.
pub async fn authorize(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    finish(start(&state, &headers, query.as_deref().unwrap_or("")).await)
}

/// `GET /authorize/login`: the login form of the browser's interaction.
pub async fn login_page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    finish(show_login(&state, &headers).await)
}

/// `POST /authorize/login`: username, password, csrf.
pub async fn login_submit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    finish(submit_login(&state, &headers, body).await)
}

/// `GET /authorize/consent`: the consent form of the browser's signed-in interaction.
pub async fn consent_page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    finish(show_consent(&state, &headers).await)
}

/// `POST /authorize/consent`: csrf, decision (approve | deny).
pub async fn consent_submit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    finish(submit_consent(&state, &headers, body).await)
}

async fn start(state: &AppState, headers: &HeaderMap, query: &str) -> Result<Response, Stop> {
    if query.len() > MAX_FORM_BYTES {
        return Err(OAuthError::invalid_request("the query string is too long").into());
    }
    let params = Form::parse(query.as_bytes())?;
    let client_id = params
        .get("client_id")
        .ok_or_else(|| OAuthError::invalid_request("client_id is required"))?;
    let client = state
        .store
        .get_client(client_id)
        .await?
        .ok_or_else(|| OAuthError::invalid_request("client_id is not a registered client"))?;
    let now = state.now();
    let request = match params.get("request_uri") {
        // RFC 9126 §4: the pushed parameters are the request; other query parameters are
        // ignored (client_id had to match: take_par only returns the client's own request).
        Some(uri) => {
            let pushed = state
                .store
                .take_par(uri, &client.client_id, now)
                .await?
                .ok_or_else(|| {
                    OAuthError::new(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::InvalidRequestUri,
                        "the request_uri is unknown, expired, already used, or another client's",
                    )
                })?;
            let request = AuthorizationRequest::from_json(pushed).map_err(|e| {
                tracing::error!(error = %e, "a stored pushed request does not parse");
                OAuthError::server_error("the server could not complete the request")
            })?;
            if !client.redirect_uris.contains(&request.redirect_uri) {
                return Err(OAuthError::invalid_request(
                    "the pushed redirect_uri is no longer registered for this client",
                )
                .into());
            }
            request
        }
        None => {
            let redirect_uri = authz_request::registered_redirect_uri(&client, &params)?;
            let echo = authz_request::echo_state(&params);
            if let Some(why) = par_required(&client) {
                let e = OAuthError::invalid_request(why);
                return Err(Stop(error_redirect(state, &redirect_uri, echo, &e)));
            }
            authz_request::validate(&client, &params, redirect_uri.clone())
                .map_err(|e| Stop(error_redirect(state, &redirect_uri, echo, &e)))?
        }
    };
    begin(state, headers, &client, request, now).await
}

/// RFC 9126 §5 and seed 004 (every compliance level requires PAR): why this client must push,
/// if it must.
fn par_required(client: &Client) -> Option<&'static str> {
    if client.compliance_level.is_some() {
        Some("Pushed Authorization Requests are required by the configured compliance level")
    } else if client.require_pushed_authorization_requests {
        Some("this client must use pushed authorization requests (RFC 9126)")
    } else {
        None
    }
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
    let session = match cookie(headers, SESSION_COOKIE) {
        Some(id) => state.store.get_login_session(id, now).await?,
        None => None,
    };
    let user = session.filter(|s| !must_sign_in(&request, s, now));
    let silent = request.has_prompt(Prompt::None);
    match &user {
        None if silent => {
            let e = OAuthError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::LoginRequired,
                "the user is not signed in and prompt=none forbids asking",
            );
            return Err(Stop(client_error(state, &request, &e)));
        }
        Some(u)
            if !request.has_prompt(Prompt::Consent) && consented(state, u, &request).await? =>
        {
            return issue_code(state, client, &request, u, now).await;
        }
        Some(_) if silent => {
            let e = OAuthError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::ConsentRequired,
                "the user has not consented and prompt=none forbids asking",
            );
            return Err(Stop(client_error(state, &request, &e)));
        }
        _ => {}
    }
    let json = request
        .to_json()
        .map_err(|_| OAuthError::server_error("the request could not be stored"))?;
    let created = state
        .store
        .create_interaction(
            &client.client_id,
            &json,
            user.as_ref(),
            now + state.lifetimes.interaction,
        )
        .await?;
    let next = if user.is_some() {
        "/authorize/consent"
    } else {
        "/authorize/login"
    };
    let mut resp = see_other(next)?;
    set_cookie(
        &mut resp,
        INTERACTION_COOKIE,
        &created.id,
        state.lifetimes.interaction,
    )?;
    Ok(resp)
}

/// OpenID Connect Core §3.1.2.1: prompt=login / select_account, or a `max_age` the session's
/// `auth_time` exceeds (max_age=0 always does), mean the user signs in again.
fn must_sign_in(request: &AuthorizationRequest, session: &SignedIn, now: i64) -> bool {
    request.has_prompt(Prompt::Login)
        || request.has_prompt(Prompt::SelectAccount)
        || request
            .max_age
            .is_some_and(|m| m == 0 || now.saturating_sub(session.auth_time) > m)
}

/// Whether `user` has granted this client every scope the request asks for.
async fn consented(
    state: &AppState,
    user: &SignedIn,
    request: &AuthorizationRequest,
) -> Result<bool, Stop> {
    let granted = state
        .store
        .granted_scopes(&user.user_id, &request.client_id)
        .await?;
    if granted.is_empty() {
        // Nothing remembered: even a request for no scope shows the consent page once.
        return Ok(false);
    }
    Ok(request.scopes().iter().all(|s| granted.contains(s)))
}

async fn show_login(state: &AppState, headers: &HeaderMap) -> Result<Response, Stop> {
    let (_, interaction) = current_interaction(state, headers).await?;
    let (client, request) = context(state, &interaction).await?;
    Ok(pages::login(
        StatusCode::OK,
        display_name(&client),
        &interaction.csrf,
        request.login_hint.as_deref(),
        None,
        client_origin(&request).as_deref(),
    ))
}

async fn submit_login(
    state: &AppState,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Response, Stop> {
    let form = PageForm::read(headers, body).await?;
    let (id, interaction) = current_interaction(state, headers).await?;
    check_csrf(&form, &interaction)?;
    let (client, request) = context(state, &interaction).await?;
    let username = form.username.unwrap_or_default();
    // The password moves into verify_password, which zeroizes it; it is never logged or shown.
    let Some(user) = state
        .store
        .verify_password(&username, form.password)
        .await?
    else {
        return Ok(pages::login(
            StatusCode::UNAUTHORIZED,
            display_name(&client),
            &interaction.csrf,
            Some(&username),
            Some("The username or password is incorrect."),
            client_origin(&request).as_deref(),
        ));
    };
    let now = state.now();
    let signed_in = SignedIn {
        user_id: user.user_id,
        auth_time: now,
        acr: ACR_PASSWORD.to_owned(),
    };
    if !state
        .store
        .sign_in_interaction(&id, &interaction.csrf, &signed_in, now)
        .await?
    {
        return Err(expired_interaction().into());
    }
    let session = state
        .store
        .create_login_session(&signed_in, now + state.lifetimes.login_session)
        .await?;
    let mut resp =
        if !request.has_prompt(Prompt::Consent) && consented(state, &signed_in, &request).await? {
            // Consent given before: straight back to the client.
            state
                .store
                .take_interaction(&id, &interaction.csrf, now)
                .await?
                .ok_or_else(expired_interaction)?;
            let mut resp = issue_code(state, &client, &request, &signed_in, now).await?;
            clear_cookie(&mut resp, INTERACTION_COOKIE);
            resp
        } else {
            see_other("/authorize/consent")?
        };
    set_cookie(
        &mut resp,
        SESSION_COOKIE,
        &session,
        state.lifetimes.login_session,
    )?;
    Ok(resp)
}

async fn show_consent(state: &AppState, headers: &HeaderMap) -> Result<Response, Stop> {
    let (_, interaction) = current_interaction(state, headers).await?;
    if interaction.user.is_none() {
        return see_other("/authorize/login").map_err(Stop::from);
    }
    let (client, request) = context(state, &interaction).await?;
    let host = url::Url::parse(&request.redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    Ok(pages::consent(
        display_name(&client),
        &request.scopes(),
        &interaction.csrf,
        &host,
        client_origin(&request).as_deref(),
    ))
}

async fn submit_consent(
    state: &AppState,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Response, Stop> {
    let form = PageForm::read(headers, body).await?;
    let approve = match form.decision.as_deref() {
        Some("approve") => true,
        Some("deny") => false,
        _ => {
            return Err(OAuthError::invalid_request("decision must be approve or deny").into());
        }
    };
    let id = cookie(headers, INTERACTION_COOKIE).ok_or_else(expired_interaction)?;
    let csrf = form.csrf.as_deref().ok_or_else(forged)?;
    let now = state.now();
    // Single use: only one submission of this interaction gets past this line.
    let interaction = state
        .store
        .take_interaction(id, csrf, now)
        .await?
        .ok_or_else(forged)?;
    let user = interaction.user.clone().ok_or_else(expired_interaction)?;
    let (client, request) = context(state, &interaction).await?;
    let mut resp = if approve {
        state
            .store
            .remember_consent(&user.user_id, &client.client_id, &request.scopes(), now)
            .await?;
        issue_code(state, &client, &request, &user, now).await?
    } else {
        let e = OAuthError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::AccessDenied,
            "the user denied the request",
        );
        client_error(state, &request, &e)
    };
    clear_cookie(&mut resp, INTERACTION_COOKIE);
    Ok(resp)
}

/// Issues the code for `user` and redirects the browser back to the client with it.
async fn issue_code(
    state: &AppState,
    client: &Client,
    request: &AuthorizationRequest,
    user: &SignedIn,
    now: i64,
) -> Result<Response, Stop> {
    let grant = AuthorizationGrant {
        sub: user.user_id.clone(),
        scope: request.scope.clone(),
        redirect_uri: request.redirect_uri.clone(),
        code_challenge: Some(request.code_challenge.clone()),
        code_challenge_method: Some("S256".to_owned()),
        nonce: request.nonce.clone(),
        auth_time: Some(user.auth_time),
        acr: Some(user.acr.clone()),
        claims: request.claims.clone(),
        ..Default::default()
    };
    let issued = state
        .store
        .issue_code(
            &client.client_id,
            &grant,
            now + state.lifetimes.authorization_code,
        )
        .await?;
    Ok(client_redirect(
        state,
        &request.redirect_uri,
        &[("code", &issued.code)],
        request.state.as_deref(),
    ))
}

/// An error sent back to a validated request's redirect_uri.
fn client_error(state: &AppState, request: &AuthorizationRequest, e: &OAuthError) -> Response {
    error_redirect(state, &request.redirect_uri, request.state.as_deref(), e)
}

/// RFC 6749 §4.1.2.1 with RFC 9207's `iss`: the error to a registered redirect_uri.
fn error_redirect(
    state: &AppState,
    redirect_uri: &str,
    client_state: Option<&str>,
    e: &OAuthError,
) -> Response {
    client_redirect(
        state,
        redirect_uri,
        &[
            ("error", e.code.as_str()),
            ("error_description", &e.description),
        ],
        client_state,
    )
}

/// 303 to `redirect_uri` with `params`, then `state` and `iss` added to its query (keeping any
/// query it has, each value URL-encoded).
fn client_redirect(
    state: &AppState,
    redirect_uri: &str,
    params: &[(&str, &str)],
    client_state: Option<&str>,
) -> Response {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        // Registration only accepts URLs; a row edited by hand is no reason to redirect blindly.
        return pages::error(&OAuthError::server_error(
            "the client's redirect_uri is not a URL",
        ));
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
        if let Some(s) = client_state {
            q.append_pair("state", s);
        }
        q.append_pair("iss", &state.issuer);
    }
    see_other(url.as_str()).unwrap_or_else(|e| pages::error(&e))
}

fn see_other(location: &str) -> Result<Response, OAuthError> {
    let location = HeaderValue::from_str(location)
        .map_err(|_| OAuthError::server_error("the redirect location is not a valid header"))?;
    let mut resp = StatusCode::SEE_OTHER.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(resp)
}

/// `__Host-` cookies (RFC 6265bis §4.1.3.2): Secure, Path=/, no Domain, so only this host sets
/// and reads them. Lax, so the top-level navigation to /authorize from the client carries the
/// session, while cross-site posts do not.
fn set_cookie(
    resp: &mut Response,
    name: &str,
    value: &str,
    max_age: i64,
) -> Result<(), OAuthError> {
    let v = HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}"
    ))
    .map_err(|_| OAuthError::server_error("the cookie is not a valid header"))?;
    resp.headers_mut().append(header::SET_COOKIE, v);
    Ok(())
}

fn clear_cookie(resp: &mut Response, name: &'static str) {
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
    )) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The value of cookie `name` from the request's Cookie header(s).
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
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
        .await?
        .ok_or_else(expired_interaction)?;
    Ok((id.to_owned(), interaction))
}

/// The client and the request an interaction is for.
async fn context(
    state: &AppState,
    interaction: &Interaction,
) -> Result<(Client, AuthorizationRequest), Stop> {
    let client = state
        .store
        .get_client(&interaction.client_id)
        .await?
        .ok_or_else(|| OAuthError::invalid_request("the client no longer exists"))?;
    let request = AuthorizationRequest::from_json(interaction.request.clone()).map_err(|e| {
        tracing::error!(error = %e, "a stored interaction does not parse");
        OAuthError::server_error("the server could not complete the request")
    })?;
    Ok((client, request))
}

fn check_csrf(form: &PageForm, interaction: &Interaction) -> Result<(), OAuthError> {
    match &form.csrf {
        Some(c) if same_secret(c, &interaction.csrf) => Ok(()),
        _ => Err(forged()),
    }
}

/// Compares without stopping at the first difference.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn expired_interaction() -> OAuthError {
    OAuthError::invalid_request(
        "this sign-in is unknown or has expired; return to the application and start again",
    )
}

fn forged() -> OAuthError {
    OAuthError::invalid_request("the form does not belong to this sign-in (CSRF check failed)")
}

fn display_name(client: &Client) -> &str {
    client.client_name.as_deref().unwrap_or(&client.client_id)
}

/// The origin the code response goes to (the pages' CSP lets forms redirect there).
fn client_origin(request: &AuthorizationRequest) -> Option<String> {
    let origin = url::Url::parse(&request.redirect_uri).ok()?.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// A form posted by the login or consent page. The body and the password are held in zeroizing
/// buffers (best effort: the HTTP stack's own buffers are out of reach).
struct PageForm {
    csrf: Option<String>,
    username: Option<String>,
    password: Zeroizing<String>,
    decision: Option<String>,
}

impl PageForm {
    async fn read(headers: &HeaderMap, body: axum::body::Body) -> Result<Self, OAuthError> {
        if !crate::form::is_form_urlencoded(headers) {
            return Err(OAuthError::invalid_request(
                "the form must be application/x-www-form-urlencoded",
            ));
        }
        let bytes = crate::form::read_body(body, MAX_PAGE_FORM_BYTES).await?;
        let raw = Zeroizing::new(Vec::from(bytes));
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&raw)
            .map_err(|_| OAuthError::invalid_request("the form is not URL-encoded"))?;
        let mut form = PageForm {
            csrf: None,
            username: None,
            password: Zeroizing::new(String::new()),
            decision: None,
        };
        let mut seen_password = false;
        for (k, v) in pairs {
            let repeated = match k.as_str() {
                "csrf" => form.csrf.replace(v).is_some(),
                "username" => form.username.replace(v).is_some(),
                "decision" => form.decision.replace(v).is_some(),
                "password" => {
                    form.password = Zeroizing::new(v);
                    std::mem::replace(&mut seen_password, true)
                }
                _ => false,
            };
            if repeated {
                return Err(OAuthError::invalid_request(format!(
                    "field {k} is repeated"
                )));
            }
        }
        Ok(form)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others_and_across_headers() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-strongroom-session=s3ss; c=3"),
        );
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("s3ss"));
        assert_eq!(cookie(&h, INTERACTION_COOKIE), None);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }

    fn signed_in(auth_time: i64) -> SignedIn {
        SignedIn {
            user_id: "u".into(),
            auth_time,
            acr: ACR_PASSWORD.into(),
        }
    }

    #[test]
    fn prompt_and_max_age_decide_whether_to_sign_in_again() {
        let mut r = AuthorizationRequest {
            client_id: "c".into(),
            response_type: "code".into(),
            redirect_uri: "https://rp.example/cb".into(),
            scope: "openid".into(),
            state: None,
            nonce: None,
            code_challenge: "x".into(),
            code_challenge_method: "S256".into(),
            prompt: vec![],
            max_age: None,
            acr_values: None,
            claims: None,
            response_mode: None,
            login_hint: None,
        };
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
