//! The grants of the token endpoint (RFC 6749 §4), one file each. The token endpoint has
//! already authenticated the client; a grant checks what the client presented and answers with
//! the token response.

pub mod authorization_code;
pub mod client_credentials;
pub mod refresh_token;

use axum::http::StatusCode;

use crate::error::{ErrorCode, OAuthError};
use crate::model::Client;

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
