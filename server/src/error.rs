//! Errors at the edge: every failure a client sees is an OAuth / OpenID error object
//! (`{"error": …, "error_description": …}`) with the status its RFC gives, and never anything
//! else. This is the one place where errors become HTTP.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error code defined by RFC 6749, 6750, 7591, 9126, 9101, 9396, 8705 or OpenID Connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    InvalidScope,
    AccessDenied,
    ServerError,
    TemporarilyUnavailable,
    InvalidToken,
    InsufficientScope,
    InvalidRequestUri,
    InvalidClientMetadata,
    InvalidRedirectUri,
    InvalidAuthorizationDetails,
    LoginRequired,
    ConsentRequired,
    /// RFC 8707 §2: the requested resource is unknown or not allowed.
    InvalidTarget,
    /// RFC 9101 §6.3: the request object is invalid (signature, claims, encryption).
    InvalidRequestObject,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::InvalidRequestUri => "invalid_request_uri",
            ErrorCode::InvalidClientMetadata => "invalid_client_metadata",
            ErrorCode::InvalidRedirectUri => "invalid_redirect_uri",
            ErrorCode::InvalidAuthorizationDetails => "invalid_authorization_details",
            ErrorCode::LoginRequired => "login_required",
            ErrorCode::ConsentRequired => "consent_required",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::InvalidRequestObject => "invalid_request_object",
        }
    }
}

/// An OAuth error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub description: String,
    /// Seconds, for 503 answers.
    pub retry_after: Option<u32>,
    /// The `WWW-Authenticate` of a 401, when not the one its code implies.
    pub challenge: Option<&'static str>,
}

impl OAuthError {
    pub fn new(status: StatusCode, code: ErrorCode, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            code,
            description: description_chars(&description.into()),
            retry_after: None,
            challenge: None,
        }
    }

    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, d)
    }

    /// RFC 6749 §5.2: 401 when the client tried to authenticate and failed.
    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::InvalidClient, d)
    }

    /// RFC 6749 §5.2: a client that tried HTTP Basic gets a 401 with a `Basic` challenge, "matching
    /// the authentication scheme used by the client".
    pub fn invalid_client_basic(d: impl Into<String>) -> Self {
        OAuthError {
            challenge: Some("Basic realm=\"strongroom\""),
            ..Self::invalid_client(d)
        }
    }

    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidGrant, d)
    }

    /// RFC 9101 §6.3 (and RFC 9126 §2.3 at PAR): 400 for a request object that is refused.
    pub fn invalid_request_object(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequestObject, d)
    }

    pub fn invalid_client_metadata(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidClientMetadata, d)
    }

    pub fn invalid_redirect_uri(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRedirectUri, d)
    }

    pub fn invalid_token(d: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken, d)
    }

    /// RFC 6750 §3.1: the token is good but lacks a scope the resource needs.
    pub fn insufficient_scope(d: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::InsufficientScope, d)
    }

    pub fn server_error(d: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::ServerError, d)
    }

    /// The HSM pool is saturated: 503 with Retry-After, so clients back off.
    pub fn busy() -> Self {
        OAuthError {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::TemporarilyUnavailable,
                "the server is at capacity; retry shortly",
            )
        }
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": self.code.as_str(), "error_description": self.description})
    }
}

/// RFC 6749 §5.2 (and §4.1.2.1, RFC 6750 §3): `error_description` holds only %x20-21 / %x23-5B
/// / %x5D-7E. Quotes become apostrophes, a backslash a slash, and anything else outside the set
/// (non-ASCII, controls) a readable ASCII stand-in or `?`.
fn description_chars(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push('\''),
            '\\' => out.push('/'),
            '…' => out.push_str("..."),
            '§' => out.push_str("section "),
            '—' | '–' => out.push('-'),
            '‘' | '’' => out.push('\''),
            '“' | '”' => out.push('\''),
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.description)
    }
}

impl std::error::Error for OAuthError {}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = match self.challenge {
                Some(c) => c,
                None if self.code == ErrorCode::InvalidToken => "Bearer error=\"invalid_token\"",
                None => "Bearer",
            };
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if self.status == StatusCode::FORBIDDEN && self.code == ErrorCode::InsufficientScope {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"insufficient_scope\""),
            );
        }
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// Keystore failures at the edge: `Busy` becomes 503; everything else is the server's fault and
/// is logged, not shown.
impl From<strongroom_keystore::Error> for OAuthError {
    fn from(e: strongroom_keystore::Error) -> Self {
        use strongroom_keystore::{Error as K, hsm::Error as H};
        match e {
            K::Hsm(H::Busy) => OAuthError::busy(),
            other => {
                tracing::error!(error = %other, "keystore failure");
                OAuthError::server_error("the server could not complete the request")
            }
        }
    }
}

/// Storage failures are the server's fault: logged, not shown.
impl From<sqlx::Error> for OAuthError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "database failure");
        OAuthError::server_error("the server could not complete the request")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_stay_within_the_rfc_6749_character_set() {
        let e = OAuthError::invalid_request("scope \"a\\b\" … see §5.2 — ünïcode\n");
        assert_eq!(e.description, "scope 'a/b' ... see section 5.2 - ?n?code?");
        assert!(
            e.description
                .bytes()
                .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5b | 0x5d..=0x7e))
        );
    }
}
