//! `POST /introspect` (RFC 7662): tells an authenticated client whether a token is active and
//! what it stands for.
//!
//! A client learns about its own tokens, and a registered API's own credentials (the clients in
//! its `introspection_clients`) about every access token issued for that API, so the API sees
//! revocations. Any other token, like an unknown, expired, revoked or unverifiable one, is
//! `{"active": false}` (RFC 7662 §2.2 leaves the choice to the server, and saying less tells a
//! stranger nothing). Refresh tokens are for their client only. A JWT access token is checked like
//! at a resource (signature, typ, iss, exp, nbf, record, revocation) except for its certificate
//! binding: the caller is not the token's presenter, so `cnf` is reported, not checked.
//!
//! A JWE access token (encrypted to its API's key, see [`crate::token_encryption`]) cannot be
//! read here: its record is found by the hash of the token string, and the answer is the claims
//! that were signed inside it, as recorded when it was issued.

use axum::body::Body;
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::bearer;
use crate::endpoints::token::{ClientRequest, token_response};
use crate::error::OAuthError;
use crate::form::Form;
use crate::model::Client;
use crate::state::AppState;

/// The two kinds of token this server issues, in the order to look a token up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    AccessToken,
    RefreshToken,
}

/// The lookup order for a `token_type_hint` (RFC 7662 §2.1, RFC 7009 §2.1): the hinted kind
/// first; no hint, or one we do not know, is no hint at all.
pub fn lookup_order(hint: Option<&str>) -> [TokenKind; 2] {
    if hint == Some("refresh_token") {
        [TokenKind::RefreshToken, TokenKind::AccessToken]
    } else {
        [TokenKind::AccessToken, TokenKind::RefreshToken]
    }
}

pub async fn introspect(req: ClientRequest, body: Body) -> Response {
    req.serve(body, "/introspect", async |state, client, _, form| {
        handle(state, client, form).await
    })
    .await
}

async fn handle(state: &AppState, client: &Client, form: &Form) -> Result<Response, OAuthError> {
    let token = form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    for kind in lookup_order(form.get("token_type_hint")) {
        let found = match kind {
            TokenKind::AccessToken => access_token(state, token, &client.client_id).await?,
            TokenKind::RefreshToken => refresh_token(state, token, &client.client_id).await?,
        };
        if let Some(body) = found {
            return Ok(token_response(body));
        }
    }
    Ok(token_response(json!({"active": false})))
}

/// The answer for an active access token of `client_id`; `None` if it is not one.
async fn access_token(
    state: &AppState,
    token: &str,
    client_id: &str,
) -> Result<Option<Value>, OAuthError> {
    if is_compact_jwe(token) {
        return encrypted_access_token(state, token, client_id).await;
    }
    let verified = match bearer::verify_active(state, token).await {
        Ok(v) => v,
        // Only a failure of the server itself is an error here; any fault of the token's is an
        // inactive token.
        Err(e) if e.status.is_server_error() => return Err(e),
        Err(_) => return Ok(None),
    };
    if verified.client_id != client_id
        && !introspects_for_audience(state, &verified.claims, client_id).await?
    {
        return Ok(Some(json!({"active": false})));
    }
    Ok(Some(active_access_token(&verified.claims)))
}

/// Whether `client_id` is among the `introspection_clients` of an API the token is for (its
/// `aud`: a string, or an array of which the first few are looked at).
async fn introspects_for_audience(
    state: &AppState,
    claims: &Value,
    client_id: &str,
) -> Result<bool, OAuthError> {
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list.iter().take(4).filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    for aud in audiences {
        if let Some(api) = state.store.get_resource_server(aud).await? {
            if api.lets_introspect(client_id) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The answer for an access token whose claims are `claims`.
fn active_access_token(claims: &Value) -> Value {
    let mut out = Map::new();
    out.insert("active".into(), Value::Bool(true));
    out.insert("token_type".into(), Value::from("Bearer"));
    for name in [
        "scope",
        "client_id",
        "sub",
        "exp",
        "iat",
        "nbf",
        "iss",
        "aud",
        "jti",
        "cnf",
        "authorization_details",
        "txn",
    ] {
        if let Some(v) = claims.get(name) {
            out.insert(name.to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

/// Five base64url parts: a JWE in compact serialization (RFC 7516 §7.1).
pub fn is_compact_jwe(token: &str) -> bool {
    token.len() <= MAX_TOKEN_LEN
        && token.split('.').count() == 5
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Tokens longer than this are not looked up.
const MAX_TOKEN_LEN: usize = 32 * 1024;

/// A JWE access token, by the hash of its string: active while its record is live and the
/// asking client's; `None` if no such token was issued.
async fn encrypted_access_token(
    state: &AppState,
    token: &str,
    client_id: &str,
) -> Result<Option<Value>, OAuthError> {
    let Some(record) = state
        .store
        .get_access_token_by_token::<Value>(token)
        .await?
    else {
        return Ok(None);
    };
    // As for a signed token (bearer::verify_active): our own expiry, no leeway.
    let live = record.is_active(state.now());
    let may_know = record.client_id == client_id
        || introspects_for_audience(state, &record.data, client_id).await?;
    if !may_know || !live {
        return Ok(Some(json!({"active": false})));
    }
    Ok(Some(active_access_token(&record.data)))
}

/// The answer for a refresh token of ours; `None` if the token is not one.
async fn refresh_token(
    state: &AppState,
    token: &str,
    client_id: &str,
) -> Result<Option<Value>, OAuthError> {
    let Some(record) = state.store.get_refresh_token::<Value>(token).await? else {
        return Ok(None);
    };
    if record.client_id != client_id || !record.is_active(state.now()) {
        return Ok(Some(json!({"active": false})));
    }
    let mut out = Map::new();
    out.insert("active".into(), Value::Bool(true));
    out.insert("token_type".into(), Value::from("refresh_token"));
    out.insert("client_id".into(), Value::from(record.client_id));
    out.insert("exp".into(), Value::from(record.expires_at));
    out.insert("iat".into(), Value::from(record.created_at));
    for name in ["scope", "sub"] {
        // No empty scope member for a grant made without one (as in token responses).
        if let Some(v) = record
            .data
            .get(name)
            .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
        {
            out.insert(name.to_owned(), v.clone());
        }
    }
    Ok(Some(Value::Object(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_order_the_lookup_and_unknown_hints_are_ignored() {
        use TokenKind::*;
        assert_eq!(lookup_order(None), [AccessToken, RefreshToken]);
        assert_eq!(
            lookup_order(Some("access_token")),
            [AccessToken, RefreshToken]
        );
        assert_eq!(
            lookup_order(Some("refresh_token")),
            [RefreshToken, AccessToken]
        );
        assert_eq!(lookup_order(Some("id_token")), [AccessToken, RefreshToken]);
    }
}
