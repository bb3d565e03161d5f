//! `GET` and `POST /userinfo` (OpenID Connect Core §5.3): the claims about the signed-in user
//! that the access token's scopes release.
//!
//! The access token travels in the Authorization header only (FAPI: never in the query or the
//! body, where it would be logged). It must be one of ours, meant for this server (`aud` names
//! the issuer) and carry `openid`. A certificate-bound token is accepted only with its
//! certificate, so bound clients call the mTLS alias (discovery's `mtls_endpoint_aliases`).

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
    bearer::refuse_token_in_query(uri)?;
    if method == Method::POST {
        refuse_token_in_body(headers, body).await?;
    }
    let token = bearer::bearer_token(headers)?;
    let verified = bearer::verify_access_token(state, token, conn.leaf_certificate()).await?;
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
    Ok(token_response(released_claims(
        &user.user_id,
        &user.claims,
        &scopes,
    )))
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

/// RFC 6750 §2.2 (`access_token` in a form body) is not accepted: 400 invalid_request.
async fn refuse_token_in_body(
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<(), OAuthError> {
    let is_form = crate::form::is_form_urlencoded(headers);
    let bytes = crate::form::read_body(body, MAX_FORM_BYTES).await?;
    if is_form && url::form_urlencoded::parse(&bytes).any(|(k, _)| k == "access_token") {
        return Err(OAuthError::invalid_request(
            "access tokens are accepted only in the Authorization header, not in the body",
        ));
    }
    Ok(())
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
