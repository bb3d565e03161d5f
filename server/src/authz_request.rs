//! An authorization request's parameters (RFC 6749 §4.1.1, RFC 7636, OpenID Connect Core
//! §3.1.2.1), parsed and checked against the client's registration. PAR checks a pushed request
//! with it before storing it; `/authorize` checks plain query parameters with it for clients
//! that need not push.
//!
//! Checking is split in two because of RFC 6749 §4.1.2.1: until the `redirect_uri` is known to
//! be one the client registered ([`registered_redirect_uri`]), an error must not be sent there;
//! after that ([`validate`]) errors go back to the client by redirect.

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, OAuthError};
use crate::form::Form;
use crate::model::Client;
use crate::policy::{self, Policy};
use crate::state::AppState;

/// Longest `state` and `nonce` accepted: they come back in URLs and tokens.
pub const MAX_STATE_LEN: usize = 512;
/// Longest `login_hint` and `acr_values` accepted.
const MAX_HINT_LEN: usize = 512;
/// A base64url SHA-256 digest without padding (RFC 7636 §4.2, S256) is exactly this long.
const S256_CHALLENGE_LEN: usize = 43;
/// The hybrid response type (OpenID Connect Core §3.3).
pub const HYBRID: &str = "code id_token";
/// The response types this server implements.
pub const SUPPORTED_RESPONSE_TYPES: [&str; 2] = ["code", HYBRID];

/// The scopes any client may ask for without registering a `scope` (OpenID Connect Core §5.4,
/// §11): each of §5.4's releases claims at /userinfo (`userinfo::SCOPE_CLAIMS`). A client that
/// registered a `scope` may ask for those and `openid`.
pub const STANDARD_SCOPES: [&str; 6] = [
    "openid",
    "profile",
    "email",
    "address",
    "phone",
    "offline_access",
];

/// OpenID Connect Core §3.1.2.1 `prompt` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// No page may be shown: fail with login_required / consent_required instead.
    None,
    /// Authenticate again even with a live session.
    Login,
    /// Ask for consent even when it was given before.
    Consent,
    /// Let the user choose an account: here, sign in again (one account per browser session).
    SelectAccount,
}

impl Prompt {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Prompt::None),
            "login" => Some(Prompt::Login),
            "consent" => Some(Prompt::Consent),
            "select_account" => Some(Prompt::SelectAccount),
            _ => None,
        }
    }
}

/// A validated authorization request: what PAR stores and what an interaction carries to the
/// code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    pub client_id: String,
    /// `code`, or `code id_token` (the hybrid flow: the response in the fragment, with an ID
    /// token as a detached signature).
    pub response_type: String,
    /// One of the client's registered redirect URIs (exactly, or matching its wildcard).
    pub redirect_uri: String,
    /// The request did not send `redirect_uri` (the client's only registered one was taken):
    /// the token request then need not send it either (RFC 6749 §4.1.3).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redirect_uri_defaulted: bool,
    /// Space-separated, each scope once, in the order asked.
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// RFC 7636, S256 only; required on every compliance level, optional otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_challenge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_challenge_method: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompt: Vec<Prompt>,
    /// Seconds since the last authentication beyond which the user must sign in again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr_values: Option<String>,
    /// The OpenID Connect `claims` parameter (a JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<serde_json::Value>,
    /// `query` for `code`, `fragment` for `code id_token` (absent: that default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_hint: Option<String>,
    /// RFC 8707: the registered API the tokens are to be for (`audience` is a synonym). Its
    /// scopes are checked by [`check_resource`], not by [`validate`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// RFC 9396: the transaction(s) to approve, as sent (checked against the API's types and
    /// schemas by [`check_resource`], which also fills in `resource` when only the types name
    /// the API). A request with them always shows the consent page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<Vec<serde_json::Value>>,
    /// OpenID Connect Core §3.1.2.1 `id_token_hint`, as sent: [`check_subject`] verifies it
    /// into `subject`. Never stored.
    #[serde(skip)]
    pub id_token_hint: Option<String>,
    /// The user the request names: the `sub` of its verified `id_token_hint`, or a `sub` value
    /// asked for in `claims` (§5.5.1). Only that user's session may answer it; another user's
    /// is treated as none (`login_required` under prompt=none). Empty: a hint signed with a key
    /// no longer published, whose user cannot be known, so no session answers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The pushed request this came from (its handle, see `Store::find_par`), set by the
    /// authorization endpoint, never by a client's parameters: the request_uri is spent by the
    /// write that issues the code, not by visiting the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<String>,
}

impl AuthorizationRequest {
    pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(self)
    }

    pub fn from_json(value: serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(value)
    }

    /// `response_type=code id_token`: the front channel carries an ID token too.
    pub fn is_hybrid(&self) -> bool {
        self.response_type == HYBRID
    }

    /// Whether the response goes in the URL fragment rather than the query.
    pub fn in_fragment(&self) -> bool {
        self.is_hybrid() || self.response_mode.as_deref() == Some("fragment")
    }

    pub fn has_prompt(&self, p: Prompt) -> bool {
        self.prompt.contains(&p)
    }

    pub fn scopes(&self) -> Vec<String> {
        self.scope.split_whitespace().map(str::to_owned).collect()
    }
}

/// Parses and checks a whole request (PAR: every error is answered to the client directly).
pub fn parse(client: &Client, params: &Form) -> Result<AuthorizationRequest, OAuthError> {
    let redirect_uri = registered_redirect_uri(client, params)?;
    validate(client, params, redirect_uri)
}

/// The request's `redirect_uri`, if it is one the client registered ([`ensure_registered`]).
/// `invalid_request` otherwise: until this succeeds, errors must be shown to the user, never
/// sent to the URI. Absent, it is the client's only registered URI (RFC 6749 §3.1.2.3), unless
/// the client's level requires it (FAPI 2: at PAR). Also in an OpenID Connect request, although
/// OpenID Connect Core §3.1.2.1 makes it REQUIRED: the seed's tables make requiring it a
/// compliance-level behaviour, and the product's clients without a level rely on the default.
pub fn registered_redirect_uri(client: &Client, params: &Form) -> Result<String, OAuthError> {
    let Some(uri) = params.get("redirect_uri") else {
        let policy = Policy::of(client);
        return match client.redirect_uris.as_slice() {
            [only] if !policy.redirect_uri_required_at_par() && !policy::is_wildcard(only) => {
                Ok(only.clone())
            }
            _ => Err(OAuthError::invalid_request("redirect_uri is required")),
        };
    };
    ensure_registered(client, uri)?;
    Ok(uri.to_owned())
}

/// The one check that a redirect_uri is the client's: one it registered, by exact string
/// comparison (RFC 9700 §4.1.3), or matching a registered `https://*.host/path` where the
/// client's level allows wildcards (`policy::redirect_uri_matches`). `/authorize` runs it again
/// on a pushed or stored request, since the client's registration may have changed since.
pub fn ensure_registered(client: &Client, uri: &str) -> Result<(), OAuthError> {
    let wildcards = Policy::of(client).wildcard_callbacks_allowed();
    if client
        .redirect_uris
        .iter()
        .any(|r| policy::redirect_uri_matches(r, uri, wildcards))
    {
        Ok(())
    } else {
        Err(OAuthError::invalid_request(
            "redirect_uri is not one of the client's registered redirect URIs",
        ))
    }
}

/// Whether a request not yet validated asks for its response in the fragment (so that its
/// errors go there too).
pub fn wants_fragment(params: &Form) -> bool {
    params
        .get("response_type")
        .map(canonical_response_type)
        .as_deref()
        == Some(HYBRID)
        || params.get("response_mode") == Some("fragment")
}

/// RFC 6749 §3.1.1: a response_type of several values is a set, in any order. Its values in the
/// order this server names them (`code id_token`); a single value as sent.
fn canonical_response_type(sent: &str) -> std::borrow::Cow<'_, str> {
    let mut values: Vec<&str> = sent.split(' ').collect();
    values.sort_unstable();
    let joined = values.join(" ");
    if joined == sent {
        std::borrow::Cow::Borrowed(sent)
    } else {
        std::borrow::Cow::Owned(joined)
    }
}

/// The `state` to send back with an error, when it is within limits. An over-long one is
/// refused with a page before anything is redirected ([`state_too_long`]): RFC 6749 §4.1.2.1
/// wants it back exactly, and re-encoded in a `Location` header it could triple in size.
pub fn echo_state(params: &Form) -> Option<&str> {
    params.get("state").filter(|s| s.len() <= MAX_STATE_LEN)
}

/// `invalid_request` for a `state` over [`MAX_STATE_LEN`] bytes, to be shown as a page: an error
/// redirected without it could not be matched by the client.
pub fn state_too_long(params: &Form) -> Result<(), OAuthError> {
    match params.get("state") {
        Some(s) if s.len() > MAX_STATE_LEN => Err(OAuthError::invalid_request(format!(
            "state is longer than {MAX_STATE_LEN} bytes"
        ))),
        _ => Ok(()),
    }
}

/// Checks every parameter but `redirect_uri` (already checked by [`registered_redirect_uri`]).
pub fn validate(
    client: &Client,
    params: &Form,
    redirect_uri: String,
) -> Result<AuthorizationRequest, OAuthError> {
    let bad = |code: ErrorCode, d: &str| {
        OAuthError::new(axum::http::StatusCode::BAD_REQUEST, code, d.to_owned())
    };
    if params
        .get("client_id")
        .is_some_and(|id| id != client.client_id)
    {
        return Err(OAuthError::invalid_request(
            "client_id is not the authenticated client",
        ));
    }
    // The endpoints open a request object before they get here (`request_object::open`); one
    // inside another is refused there.
    if params.get("request").is_some() {
        return Err(OAuthError::invalid_request_object(
            "a request object must not contain a request parameter",
        ));
    }
    let authorization_details = params
        .get("authorization_details")
        .map(crate::authorization_details::parse)
        .transpose()?;

    let policy = Policy::of(client);
    let response_type = canonical_response_type(
        params
            .get("response_type")
            .ok_or_else(|| OAuthError::invalid_request("response_type is required"))?,
    );
    let response_type = response_type.as_ref();
    let allowed = match policy.response_types() {
        Some(level) => level.contains(&response_type),
        None => client.response_types.iter().any(|r| r == response_type),
    };
    if !allowed || !SUPPORTED_RESPONSE_TYPES.contains(&response_type) {
        let why = match policy.response_types() {
            Some(level) => format!(
                "response_type {:?} is not allowed by the configured compliance level: use {}",
                truncate(response_type),
                level.join(" or ")
            ),
            None => format!(
                "response_type {:?} is not registered for this client",
                truncate(response_type)
            ),
        };
        return Err(bad(ErrorCode::UnsupportedResponseType, &why));
    }
    if !client.grant_types.iter().any(|g| g == "authorization_code") {
        return Err(bad(
            ErrorCode::UnauthorizedClient,
            "this client may not use the authorization_code grant",
        ));
    }
    // OpenID Connect Core §3.3.2.5 and OAuth 2.0 Multiple Response Types §5: the hybrid
    // response must not go in the query.
    let response_mode = params.get("response_mode");
    let hybrid = response_type == HYBRID;
    match (hybrid, response_mode) {
        (_, None | Some("fragment")) | (false, Some("query")) => {}
        (false, Some(_)) => {
            return Err(OAuthError::invalid_request(
                "response_mode: query or fragment for response_type=code",
            ));
        }
        (true, Some(_)) => {
            return Err(OAuthError::invalid_request(
                "response_mode: only fragment is supported for response_type=code id_token",
            ));
        }
    }

    let (code_challenge, code_challenge_method) = checked_pkce(policy, params)?;

    let resource = checked_resource(params)?;
    let scope = if resource.is_none() && authorization_details.is_none() {
        checked_scope(client, params.get("scope").unwrap_or(""))?
    } else {
        // For an API (named, or found from the details' types): checked with the API's
        // registration by check_resource.
        deduplicated_scope(params.get("scope").unwrap_or(""))?
    };
    // OpenID Connect Core §3.3.2.1: the hybrid flow is an OpenID Connect request.
    if hybrid && !scope.split_whitespace().any(|s| s == "openid") {
        return Err(OAuthError::invalid_request(
            "response_type=code id_token requires the openid scope",
        ));
    }
    let state = bounded(params, "state", MAX_STATE_LEN)?;
    let nonce = bounded(params, "nonce", MAX_STATE_LEN)?;
    // OpenID Connect Core §3.3.2.11: the front-channel ID token must carry a nonce.
    if hybrid && nonce.is_none() {
        return Err(OAuthError::invalid_request(
            "nonce is required for response_type=code id_token",
        ));
    }
    let login_hint = bounded(params, "login_hint", MAX_HINT_LEN)?;
    let acr_values = bounded(params, "acr_values", MAX_HINT_LEN)?;
    let prompt = checked_prompt(params.get("prompt"))?;
    let max_age =
        match params.get("max_age") {
            None => None,
            Some(v) => Some(v.parse::<u32>().map(i64::from).map_err(|_| {
                OAuthError::invalid_request("max_age must be a non-negative integer")
            })?),
        };
    let claims = match params.get("claims") {
        None => None,
        Some(c) => match serde_json::from_str::<serde_json::Value>(c) {
            Ok(v @ serde_json::Value::Object(_)) => Some(v),
            _ => return Err(OAuthError::invalid_request("claims must be a JSON object")),
        },
    };
    if let Some(c) = &claims {
        crate::acr::check_claims(c).map_err(OAuthError::invalid_request)?;
    }
    let id_token_hint = bounded(params, "id_token_hint", crate::own_jws::MAX_TOKEN_LEN)?;
    let subject = claimed_subject(claims.as_ref())?;

    Ok(AuthorizationRequest {
        client_id: client.client_id.clone(),
        response_type: response_type.to_owned(),
        redirect_uri,
        redirect_uri_defaulted: params.get("redirect_uri").is_none(),
        scope,
        state,
        nonce,
        code_challenge,
        code_challenge_method,
        prompt,
        max_age,
        acr_values,
        claims,
        response_mode: response_mode.map(str::to_owned),
        login_hint,
        resource,
        authorization_details,
        id_token_hint,
        subject,
        pushed: None,
    })
}

/// OpenID Connect Core §5.5.1: a `sub` value asked for in `claims` (for the ID token or
/// userinfo) names the only user the request may be answered for.
fn claimed_subject(claims: Option<&serde_json::Value>) -> Result<Option<String>, OAuthError> {
    let mut named: Option<&str> = None;
    for member in ["id_token", "userinfo"] {
        let Some(sub) = claims
            .and_then(|c| c.get(member))
            .and_then(|m| m.get("sub"))
        else {
            continue;
        };
        let value = match sub.get("value") {
            None | Some(serde_json::Value::Null) => continue,
            Some(serde_json::Value::String(v)) if !v.is_empty() && v.len() <= 255 => v.as_str(),
            Some(_) => {
                return Err(OAuthError::invalid_request(format!(
                    "claims.{member}.sub.value must be a string of 1 to 255 characters"
                )));
            }
        };
        if named.is_some_and(|n| n != value) {
            return Err(OAuthError::invalid_request(
                "claims.id_token and claims.userinfo ask for different sub values",
            ));
        }
        named = Some(value);
    }
    Ok(named.map(str::to_owned))
}

/// Verifies the request's `id_token_hint` (OpenID Connect Core §3.1.2.1): an ID token this
/// server signed with one of its published ID-token keys, expired or not. Its `sub` becomes the
/// request's `subject`; `invalid_request` for a hint we did not issue, or one naming another
/// user than a `sub` in `claims`. The endpoints run it after [`parse`] / [`validate`].
pub fn check_subject(
    state: &AppState,
    request: &mut AuthorizationRequest,
) -> Result<(), OAuthError> {
    let Some(hint) = request.id_token_hint.take() else {
        return Ok(());
    };
    let purpose = strongroom_keystore::KeyPurpose::IdToken;
    let verified = crate::own_jws::verify(
        state,
        &hint,
        &crate::own_jws::Expected {
            purpose,
            what: "the id_token_hint",
            typ: "jwt",
            fail: OAuthError::invalid_request,
        },
    );
    let claims = match verified {
        Ok(claims) => claims,
        // Signed, perhaps by us, with a key since withdrawn (an RP may keep an ID token for
        // months): its user cannot be known, so it names none, and no session answers it
        // (login_required under prompt=none), rather than a refusal of the whole request.
        Err(_) if crate::own_jws::names_unpublished_key(state, &hint) => {
            request.subject.get_or_insert_with(String::new);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let Some(sub) = claims.get("sub").and_then(serde_json::Value::as_str) else {
        return Err(OAuthError::invalid_request("the id_token_hint has no sub"));
    };
    if request.subject.as_deref().is_some_and(|s| s != sub) {
        return Err(OAuthError::invalid_request(
            "the id_token_hint and the sub asked for in claims name different users",
        ));
    }
    request.subject = Some(sub.to_owned());
    Ok(())
}

/// RFC 8707 §2: `resource` (or `audience`, its synonym here) is an absolute URI without a
/// fragment; `invalid_target` otherwise. Whether it names a registered API the client may use
/// is [`check_resource`]'s question.
fn checked_resource(params: &Form) -> Result<Option<String>, OAuthError> {
    let target = |d: &str| crate::resource_server::invalid_target(d.to_owned());
    let named = match (params.get("resource"), params.get("audience")) {
        (Some(r), Some(a)) if r != a => {
            return Err(target("resource and audience name different resources"));
        }
        (Some(r), _) | (None, Some(r)) => r,
        (None, None) => return Ok(None),
    };
    let absolute = named.len() <= 1024
        && url::Url::parse(named).is_ok_and(|u| u.has_host() && u.fragment().is_none())
        && !named.contains('#');
    if !absolute {
        return Err(target(
            "resource must be an absolute URI without a fragment (RFC 8707 section 2)",
        ));
    }
    Ok(Some(named.to_owned()))
}

/// The checks of a request's `resource` that need the server: the issuer (no API), or a
/// registered API the client may use (`invalid_target` otherwise) whose scopes, with the OpenID
/// Connect scopes the client may ask for, cover the request's (`invalid_scope` otherwise). The
/// endpoints run it after [`parse`] / [`validate`]; the token endpoint checks again.
///
/// With `authorization_details`, the API is the one they are for
/// ([`crate::authorization_details::resolve`]): named by `resource`, or found from the types and
/// then written into `resource`, so that the tokens are for it.
pub async fn check_resource(
    state: &crate::state::AppState,
    client: &Client,
    request: &mut AuthorizationRequest,
) -> Result<(), OAuthError> {
    if let Some(details) = &request.authorization_details {
        let api = crate::authorization_details::resolve(
            state,
            client,
            request.resource.as_deref(),
            details,
        )
        .await?;
        api.check_user_scope(client, &request.scope)?;
        request.resource = Some(api.identifier);
        return Ok(());
    }
    match request.resource.as_deref() {
        None => Ok(()),
        Some(r) if r == state.issuer => checked_scope(client, &request.scope).map(|_| ()),
        Some(r) => {
            let api = crate::resource_server::resolve(state, client, r).await?;
            api.check_user_scope(client, &request.scope)
        }
    }
}

/// Whether `client` may ask for `scope` at all (without a resource): one it registered, or
/// `openid`, or, when it registered none, a standard OpenID Connect scope.
pub fn client_may_ask(client: &Client, scope: &str) -> bool {
    match &client.scope {
        Some(s) => scope == "openid" || s.split_whitespace().any(|r| r == scope),
        None => STANDARD_SCOPES.contains(&scope),
    }
}

/// The requested scopes, each once, in order; each must be an RFC 6749 §3.3 scope-token.
fn deduplicated_scope(requested: &str) -> Result<String, OAuthError> {
    let mut scopes: Vec<&str> = Vec::new();
    for s in requested.split_whitespace() {
        if !s
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e))
        {
            return Err(OAuthError::new(
                axum::http::StatusCode::BAD_REQUEST,
                ErrorCode::InvalidScope,
                format!("scope {:?} is not a valid scope value", truncate(s)),
            ));
        }
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    Ok(scopes.join(" "))
}

/// RFC 7636: a challenge, if the level requires one or the client sent one, must be S256 and
/// well-formed. `plain` is refused for every client.
fn checked_pkce(
    policy: Policy,
    params: &Form,
) -> Result<(Option<String>, Option<String>), OAuthError> {
    let Some(code_challenge) = params.get("code_challenge") else {
        if policy.pkce_required() {
            return Err(OAuthError::invalid_request(
                "PKCE is required by the configured compliance level: code_challenge is missing",
            ));
        }
        if params.get("code_challenge_method").is_some() {
            return Err(OAuthError::invalid_request(
                "code_challenge_method was sent without code_challenge",
            ));
        }
        return Ok((None, None));
    };
    if params.get("code_challenge_method") != Some("S256") {
        return Err(OAuthError::invalid_request(
            "code_challenge_method must be S256",
        ));
    }
    if code_challenge.len() != S256_CHALLENGE_LEN
        || !code_challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(OAuthError::invalid_request(
            "code_challenge must be the base64url SHA-256 of the code_verifier (43 characters)",
        ));
    }
    Ok((Some(code_challenge.to_owned()), Some("S256".to_owned())))
}

/// A client-supplied value, short enough to quote in an error description.
fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Every requested scope must be allowed: the client's registered `scope` plus `openid`, or the
/// standard OpenID scopes for a client that registered none. Duplicates are dropped.
fn checked_scope(client: &Client, requested: &str) -> Result<String, OAuthError> {
    let mut scopes: Vec<&str> = Vec::new();
    for s in requested.split_whitespace() {
        if !client_may_ask(client, s) {
            return Err(OAuthError::new(
                axum::http::StatusCode::BAD_REQUEST,
                ErrorCode::InvalidScope,
                format!("scope {s:?} is not allowed for this client"),
            ));
        }
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    Ok(scopes.join(" "))
}

fn checked_prompt(value: Option<&str>) -> Result<Vec<Prompt>, OAuthError> {
    let mut prompts = Vec::new();
    for v in value.unwrap_or("").split_whitespace() {
        let p = Prompt::parse(v)
            .ok_or_else(|| OAuthError::invalid_request(format!("prompt value {v:?} is unknown")))?;
        if !prompts.contains(&p) {
            prompts.push(p);
        }
    }
    if prompts.contains(&Prompt::None) && prompts.len() > 1 {
        return Err(OAuthError::invalid_request(
            "prompt=none cannot be combined with other prompt values",
        ));
    }
    Ok(prompts)
}

fn bounded(params: &Form, name: &str, max: usize) -> Result<Option<String>, OAuthError> {
    match params.get(name) {
        Some(v) if v.len() > max => Err(OAuthError::invalid_request(format!(
            "{name} is longer than {max} bytes"
        ))),
        v => Ok(v.map(str::to_owned)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn client(scope: Option<&str>) -> Client {
        let mut c: Client = serde_json::from_value(serde_json::json!({
            "client_id": "c1",
            "token_endpoint_auth_method": "private_key_jwt",
            "redirect_uris": ["https://rp.example/cb", "https://rp.example/cb2?x=1"],
        }))
        .unwrap();
        c.scope = scope.map(str::to_owned);
        c
    }

    fn form(extra: &[(&str, &str)], drop: &[&str]) -> Form {
        let mut pairs = vec![
            ("client_id", "c1"),
            ("response_type", "code"),
            ("redirect_uri", "https://rp.example/cb"),
            ("scope", "openid accounts"),
            ("state", "st"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ];
        pairs.retain(|(k, _)| !drop.contains(k) && !extra.iter().any(|(e, _)| e == k));
        pairs.extend_from_slice(extra);
        Form::parse(serde_urlencoded::to_string(&pairs).unwrap().as_bytes()).unwrap()
    }

    fn code_of(r: Result<AuthorizationRequest, OAuthError>) -> &'static str {
        r.unwrap_err().code.as_str()
    }

    #[test]
    fn a_good_request_round_trips_through_json() {
        let c = client(Some("accounts payments"));
        let r = parse(
            &c,
            &form(
                &[
                    ("scope", "openid accounts openid"),
                    ("nonce", "n"),
                    ("prompt", "login consent"),
                    ("max_age", "0"),
                    ("claims", r#"{"userinfo":{"email":null}}"#),
                ],
                &[],
            ),
        )
        .unwrap();
        assert_eq!(r.scope, "openid accounts");
        assert_eq!(r.scopes(), ["openid", "accounts"]);
        assert_eq!(r.state.as_deref(), Some("st"));
        assert_eq!(r.max_age, Some(0));
        assert!(r.has_prompt(Prompt::Login) && r.has_prompt(Prompt::Consent));
        assert!(!r.has_prompt(Prompt::None));
        let back = AuthorizationRequest::from_json(r.to_json().unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn redirect_uri_must_be_registered_exactly() {
        let c = client(None);
        assert_eq!(
            registered_redirect_uri(&c, &form(&[], &[])).unwrap(),
            "https://rp.example/cb"
        );
        // Left out: the only registered URI (RFC 6749 §3.1.2.3), in an OpenID Connect request
        // too (the seed's rule; see registered_redirect_uri).
        let mut one = client(None);
        one.redirect_uris = vec!["https://rp.example/cb".into()];
        for scope in ["accounts", "accounts openid"] {
            assert_eq!(
                registered_redirect_uri(&one, &form(&[("scope", scope)], &["redirect_uri"]))
                    .unwrap(),
                "https://rp.example/cb"
            );
        }
        assert!(
            registered_redirect_uri(
                &c,
                &form(&[("redirect_uri", "https://rp.example/cb2?x=1")], &[])
            )
            .is_ok()
        );
        for bad in [
            "https://rp.example/cb/",
            "https://rp.example/cb?x=1",
            "https://RP.example/cb",
            "https://rp.example/cb2",
        ] {
            let e = registered_redirect_uri(&c, &form(&[("redirect_uri", bad)], &[]));
            assert_eq!(e.unwrap_err().code, ErrorCode::InvalidRequest, "{bad}");
        }
        assert_eq!(
            code_of(parse(&c, &form(&[], &["redirect_uri"]))),
            "invalid_request"
        );
    }

    #[test]
    fn pkce_is_required_with_s256() {
        let c = client(None);
        for (extra, drop) in [
            (vec![], vec!["code_challenge"]),
            (vec![], vec!["code_challenge_method"]),
            (vec![("code_challenge_method", "plain")], vec![]),
            (vec![("code_challenge", "short")], vec![]),
            (
                vec![(
                    "code_challenge",
                    "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM",
                )],
                vec![],
            ),
        ] {
            assert_eq!(
                code_of(parse(&c, &form(&extra, &drop))),
                "invalid_request",
                "{extra:?} {drop:?}"
            );
        }
    }

    #[test]
    fn scopes_response_type_and_grant() {
        let registered = client(Some("accounts"));
        assert_eq!(
            code_of(parse(
                &registered,
                &form(&[("scope", "openid payments")], &[])
            )),
            "invalid_scope"
        );
        // No registered scope: the standard OpenID scopes only.
        let open = client(None);
        assert_eq!(
            code_of(parse(&open, &form(&[], &[]))),
            "invalid_scope",
            "accounts is not standard"
        );
        assert!(parse(&open, &form(&[("scope", "openid profile email")], &[])).is_ok());
        assert!(parse(&open, &form(&[("scope", "openid phone address")], &[])).is_ok());

        assert_eq!(
            code_of(parse(&open, &form(&[("response_type", "token")], &[]))),
            "unsupported_response_type"
        );
        assert_eq!(
            code_of(parse(&open, &form(&[], &["response_type"]))),
            "invalid_request"
        );
        let mut cc = client(None);
        cc.grant_types = vec!["client_credentials".into()];
        assert_eq!(
            code_of(parse(&cc, &form(&[("scope", "openid")], &[]))),
            "unauthorized_client"
        );
        let mut hybrid_only = client(None);
        hybrid_only.response_types = vec!["code id_token".into()];
        assert_eq!(
            code_of(parse(&hybrid_only, &form(&[("scope", "openid")], &[]))),
            "unsupported_response_type"
        );
        // The values of a response_type are a set (RFC 6749 §3.1.1): either order is the same.
        let reversed = [
            ("scope", "openid"),
            ("response_type", "id_token code"),
            ("response_mode", "fragment"),
            ("nonce", "n-1"),
        ];
        let r = parse(&hybrid_only, &form(&reversed, &[])).unwrap();
        assert_eq!(r.response_type, HYBRID);
        assert!(wants_fragment(&form(
            &[("response_type", "id_token code")],
            &[]
        )));
        assert!(!wants_fragment(&form(&[("response_type", "code")], &[])));
        assert_eq!(
            code_of(parse(
                &hybrid_only,
                &form(
                    &[("response_type", "id_token  code"), ("nonce", "n-1")],
                    &[]
                )
            )),
            "unsupported_response_type",
            "a value is not an empty string"
        );
    }

    #[test]
    fn the_other_parameters_are_bounded() {
        let c = client(Some("accounts"));
        let long = "x".repeat(MAX_STATE_LEN + 1);
        for extra in [
            ("state", long.as_str()),
            ("nonce", long.as_str()),
            ("max_age", "-1"),
            ("max_age", "soon"),
            ("prompt", "none login"),
            ("prompt", "sometimes"),
            ("claims", "[1]"),
            ("claims", "{"),
            ("response_mode", "form_post"),
            ("response_mode", "jwt"),
            ("client_id", "someone-else"),
        ] {
            assert_eq!(
                code_of(parse(&c, &form(&[extra], &[]))),
                "invalid_request",
                "{extra:?}"
            );
        }
        // What the endpoints pass here is already out of a request object; one inside it is not.
        assert_eq!(
            code_of(parse(&c, &form(&[("request", "eyJ.eyJ.sig")], &[]))),
            "invalid_request_object"
        );
        // The syntax of authorization_details is checked here, its types with the API later.
        assert_eq!(
            code_of(parse(
                &c,
                &form(&[("authorization_details", r#"{"type":"x"}"#)], &[])
            )),
            "invalid_authorization_details"
        );
        let with_details = parse(
            &c,
            &form(&[("authorization_details", r#"[{"type":"x"}]"#)], &[]),
        );
        assert_eq!(
            with_details.unwrap().authorization_details,
            Some(vec![serde_json::json!({"type": "x"})])
        );
        assert!(
            parse(
                &c,
                &form(&[("prompt", "none"), ("response_mode", "query")], &[])
            )
            .is_ok()
        );
        // Both modes discovery lists work for the code flow (OAuth 2.0 Multiple Response Types).
        let in_fragment = parse(&c, &form(&[("response_mode", "fragment")], &[])).unwrap();
        assert!(in_fragment.in_fragment());
        // RFC 8707: an absolute URI without a fragment; its scopes wait for the API.
        for bad in ["relative/path", "https://api.example/#f", "urn-no-colon"] {
            assert_eq!(
                code_of(parse(&c, &form(&[("resource", bad)], &[]))),
                "invalid_target",
                "{bad}"
            );
        }
        assert_eq!(
            code_of(parse(
                &c,
                &form(
                    &[
                        ("resource", "https://a.example"),
                        ("audience", "https://b.example")
                    ],
                    &[]
                )
            )),
            "invalid_target"
        );
        let r = parse(
            &c,
            &form(
                &[
                    ("audience", "https://api.example/p"),
                    ("scope", "openid pay pay"),
                ],
                &[],
            ),
        )
        .unwrap();
        assert_eq!(r.resource.as_deref(), Some("https://api.example/p"));
        assert_eq!(r.scope, "openid pay");
        // The state is echoed in errors only within limits.
        assert_eq!(echo_state(&form(&[], &[])), Some("st"));
        assert_eq!(echo_state(&form(&[("state", long.as_str())], &[])), None);
    }
}
