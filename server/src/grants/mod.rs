//! The grants of the token endpoint (RFC 6749 §4), one file each. The token endpoint has
//! already authenticated the client; a grant checks what the client presented and answers with
//! the token response.

pub mod authorization_code;
pub mod client_credentials;
pub mod refresh_token;

use axum::http::StatusCode;

use serde_json::json;

use crate::error::{ErrorCode, OAuthError};
use crate::issue::{self, AccessTokenRequest, IdTokenRequest};
use crate::model::Client;
use crate::state::AppState;
use crate::store::AuthorizationGrant;

/// `unauthorized_client` unless the client registered `grant_type` (RFC 6749 §5.2).
pub fn require_grant_type(client: &Client, grant_type: &str) -> Result<(), OAuthError> {
    if client.grant_types.iter().any(|g| g == grant_type) {
        Ok(())
    } else {
        Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnauthorizedClient,
            format!("this client may not use the {grant_type} grant"),
        ))
    }
}

/// The scopes of `requested` (space-separated), each of which must be in `allowed`; an
/// absent or empty request means all of `allowed`. `invalid_scope` otherwise (RFC 6749 §5.2).
pub fn narrow_scope(requested: Option<&str>, allowed: &str) -> Result<String, OAuthError> {
    let allowed: Vec<&str> = allowed.split_whitespace().collect();
    let Some(requested) = requested.filter(|r| !r.trim().is_empty()) else {
        return Ok(allowed.join(" "));
    };
    let mut granted: Vec<&str> = Vec::new();
    for s in requested.split_whitespace() {
        if !allowed.contains(&s) {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidScope,
                format!("scope {s:?} is not allowed here"),
            ));
        }
        if !granted.contains(&s) {
            granted.push(s);
        }
    }
    Ok(granted.join(" "))
}

/// A user's grant, as the code exchange and the refresh see it.
#[derive(Debug)]
pub struct UserGrant<'a> {
    pub grant: &'a AuthorizationGrant,
    pub grant_id: &'a str,
    /// The scope of this token response (a refresh may narrow the grant's).
    pub scope: &'a str,
    pub cnf_x5t_s256: Option<&'a str>,
    /// For the ID token: the authorization request's nonce (a code exchange only).
    pub nonce: Option<&'a str>,
    /// For the ID token's c_hash (a code exchange only).
    pub code: Option<&'a str>,
}

/// The token response for a user's grant: an access token for our own endpoints and, when
/// `openid` is in scope, an ID token whose at_hash covers it.
pub async fn user_tokens(
    state: &AppState,
    client: &Client,
    u: &UserGrant<'_>,
) -> Result<serde_json::Value, OAuthError> {
    let g = u.grant;
    let access = issue::access_token(
        state,
        client,
        &AccessTokenRequest {
            sub: &g.sub,
            scope: u.scope,
            audience: &state.issuer,
            grant_id: Some(u.grant_id),
            auth_time: g.auth_time,
            acr: g.acr.as_deref(),
            cnf_x5t_s256: u.cnf_x5t_s256,
        },
    )
    .await?;
    let mut body = json!({
        "access_token": access.token,
        "token_type": "Bearer",
        "expires_in": access.expires_in,
        "scope": u.scope,
    });
    if u.scope.split_whitespace().any(|s| s == "openid") {
        let id_token = issue::id_token(
            state,
            client,
            &IdTokenRequest {
                sub: &g.sub,
                auth_time: g.auth_time,
                nonce: u.nonce,
                acr: g.acr.as_deref(),
                access_token: Some(&access.token),
                code: u.code,
                s_hash: g.s_hash.as_deref(),
            },
        )
        .await?;
        insert(&mut body, "id_token", id_token);
    }
    Ok(body)
}

/// Adds a member to a token response under construction.
pub fn insert(body: &mut serde_json::Value, name: &str, value: String) {
    if let Some(m) = body.as_object_mut() {
        m.insert(name.to_owned(), serde_json::Value::String(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_narrow_but_never_widen() {
        assert_eq!(narrow_scope(None, "a b").unwrap(), "a b");
        assert_eq!(narrow_scope(Some(" "), "a b").unwrap(), "a b");
        assert_eq!(narrow_scope(Some("b b"), "a b").unwrap(), "b");
        let e = narrow_scope(Some("a c"), "a b").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidScope);
        assert_eq!(
            narrow_scope(Some("a"), "").unwrap_err().code,
            ErrorCode::InvalidScope
        );
    }
}
