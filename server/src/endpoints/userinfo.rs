//! `GET` and `POST /userinfo` (OpenID Connect Core §5.3): the claims about the signed-in user
//! that the access token's scopes release.
//!
//! The access token travels in the Authorization header (RFC 6750 §2.1). A token of a client
//! without a compliance level may also come as `access_token` in the query or a form body
//! (§2.3, §2.2); a client's compliance level forbids both (seed 004, first row: they end up in
//! logs), and so does sending more than one. The token must be one of ours, meant for this
//! server (`aud` names the issuer) and carry `openid`. A certificate-bound token is accepted
//! only with its certificate, so bound clients call the mTLS alias (discovery's
//! `mtls_endpoint_aliases`).
//!
//! `updated_at` (OpenID Connect Core §5.1) is the user's stored claim, else the account's
//! creation time: a unix timestamp for clients of a compliance level, an RFC 3339 string for
//! the others (seed 004, behaviour table, second row).

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::{Map, Value};

use crate::bearer::{self, resource_error};
use crate::endpoints::token::token_response;
use crate::error::OAuthError;
use crate::form::MAX_FORM_BYTES;
use crate::policy::Policy;
use crate::state::AppState;
use crate::tls_edge::Connection;

/// The claims each scope releases (OpenID Connect Core §5.4).
pub const SCOPE_CLAIMS: [(&str, &[&str]); 4] = [
    (
        "profile",
        &[
            "name",
            "family_name",
            "given_name",
            "middle_name",
            "nickname",
            "preferred_username",
            "profile",
            "picture",
            "website",
            "gender",
            "birthdate",
            "zoneinfo",
            "locale",
            "updated_at",
        ],
    ),
    ("email", &["email", "email_verified"]),
    ("phone", &["phone_number", "phone_number_verified"]),
    ("address", &["address"]),
];

/// `sub` and every claim a scope can release here (discovery's `claims_supported`).
pub fn claims_supported() -> Vec<&'static str> {
    let mut claims = vec!["sub"];
    for (_, names) in SCOPE_CLAIMS {
        claims.extend_from_slice(names);
    }
    claims
}

pub async fn userinfo(
    State(state): State<Arc<AppState>>,
    Extension(conn): Extension<Connection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    handle(&state, &conn, &method, &uri, &headers, body)
        .await
        .unwrap_or_else(resource_error)
}

async fn handle(
    state: &AppState,
    conn: &Connection,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Response, OAuthError> {
    let outside = token_outside_header(method, uri, headers, body).await?;
    let token = match &outside {
        Some(t) => t.as_str(),
        None => bearer::bearer_token(headers)?,
    };
    let verified = bearer::verify_access_token(state, token, conn.leaf_certificate()).await?;
    let client = state
        .clients
        .get(&state.store, &verified.client_id)
        .await?
        .ok_or_else(|| OAuthError::invalid_token("the access token's client no longer exists"))?;
    let policy = Policy::of(&client);
    if outside.is_some() && !policy.token_in_query_allowed() {
        return Err(OAuthError::invalid_request(
            "the configured compliance level requires the access token in the Authorization \
             header, not in the query or the body",
        ));
    }
    if policy.fapi_headers_validated() {
        crate::fapi_headers::validate(headers)?;
    }
    verified.require(&state.issuer, &["openid"])?;
    // Only a user's grant has a user behind it: a client_credentials token's sub is a
    // client_id, and must never be read as a user_id (a client_id can be chosen at registration).
    if verified.grant_id.is_none() {
        return Err(OAuthError::invalid_token(
            "the access token was issued to a client for itself; its subject is not a user",
        ));
    }
    let user = state.store.get_user(&verified.sub).await?.ok_or_else(|| {
        OAuthError::invalid_token("the access token's subject is not a user of this server")
    })?;
    let scopes: Vec<&str> = verified.scope.split_whitespace().collect();
    let mut claims = released_claims(&user.user_id, &user.claims, &scopes);
    if scopes.contains(&"profile") {
        let at = updated_at(&user.claims, user.created_at);
        if let (Some(m), Some(t)) = (claims.as_object_mut(), at) {
            let value = if policy.updated_at_as_number() {
                Value::from(t)
            } else {
                Value::from(rfc3339(t))
            };
            m.insert("updated_at".into(), value);
        }
    }
    Ok(token_response(claims))
}

/// `sub` and, of the user's stored claims, those the scopes release.
pub fn released_claims(user_id: &str, stored: &Value, scopes: &[&str]) -> Value {
    let mut out = Map::new();
    out.insert("sub".into(), Value::from(user_id));
    for (scope, names) in SCOPE_CLAIMS {
        if !scopes.contains(&scope) {
            continue;
        }
        for name in names {
            if let Some(v) = stored.get(*name).filter(|v| !v.is_null()) {
                out.insert((*name).to_owned(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// The user's `updated_at` in unix seconds: the stored claim (a number, or an RFC 3339 string),
/// else `created_at`.
fn updated_at(stored: &Value, created_at: i64) -> Option<i64> {
    match stored.get("updated_at") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => humantime::parse_rfc3339_weak(s)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_secs()).ok()),
        _ => Some(created_at),
    }
}

fn rfc3339(t: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(t).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The access token when it came as `access_token` in the query or a form body (RFC 6750 §2.3,
/// §2.2) rather than the Authorization header; `invalid_request` when it came more than one way.
async fn token_outside_header(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Option<String>, OAuthError> {
    let from = |bytes: &[u8]| -> Vec<String> {
        url::form_urlencoded::parse(bytes)
            .filter(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
            .collect()
    };
    let mut found = from(uri.query().unwrap_or("").as_bytes());
    if method == Method::POST && crate::form::is_form_urlencoded(headers) {
        let bytes = crate::form::read_body(body, MAX_FORM_BYTES).await?;
        found.extend(from(&bytes));
    }
    let in_header = headers.contains_key(axum::http::header::AUTHORIZATION);
    match (found.len(), in_header) {
        (0, _) => Ok(None),
        (1, false) => Ok(found.pop()),
        _ => Err(OAuthError::invalid_request(
            "the access token must be sent exactly once, by one method (RFC 6750 section 2)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_follow_the_scopes() {
        let stored = json!({
            "name": "Ada", "email": "ada@example.com", "email_verified": true,
            "phone_number": "+44", "address": {"country": "UK"}, "sub": "forged",
            "nickname": null,
        });
        assert_eq!(
            released_claims("u1", &stored, &["openid"]),
            json!({"sub": "u1"})
        );
        assert_eq!(
            released_claims("u1", &stored, &["openid", "profile", "email"]),
            json!({"sub": "u1", "name": "Ada", "email": "ada@example.com", "email_verified": true})
        );
        assert_eq!(
            released_claims("u1", &stored, &["phone", "address"]),
            json!({"sub": "u1", "phone_number": "+44", "address": {"country": "UK"}})
        );
    }
}
