//! Form bodies (`application/x-www-form-urlencoded`), read the one way every endpoint reads
//! them: a size limit, the content type checked, each parameter at most once, and every refusal
//! an OAuth error object (never a framework's plain-text rejection).

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::{ErrorCode, OAuthError};

/// The largest form body accepted; a larger one is refused unread.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// Form parameters, each at most once (RFC 6749 §3.1, §3.2).
#[derive(Debug)]
pub struct Form(HashMap<String, String>);

impl Form {
    pub fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|_| {
            OAuthError::invalid_request("the body is not application/x-www-form-urlencoded")
        })?;
        let mut map = HashMap::with_capacity(pairs.len());
        for (k, v) in pairs {
            if map.insert(k.clone(), v).is_some() {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {k} is repeated"
                )));
            }
        }
        Ok(Form(map))
    }

    /// Parameters already separated (e.g. the claims of a request object), each name once by
    /// construction.
    pub fn from_map(map: HashMap<String, String>) -> Self {
        Form(map)
    }

    /// The parameter's value; an empty value counts as absent (RFC 6749 §3.1).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Whether the request says its body is a form.
pub fn is_form_urlencoded(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The body, at most `limit` bytes; a larger one: 413 `invalid_request`; one that does not
/// arrive in time (`slow_clients::DeadlineBody`): 408.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, OAuthError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if crate::slow_clients::is_body_timeout(&e) {
            OAuthError::new(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::InvalidRequest,
                "the request body did not arrive in time",
            )
        } else {
            OAuthError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::InvalidRequest,
                format!("the body is larger than {limit} bytes"),
            )
        }
    })
}

/// Reads a form body of at most [`MAX_FORM_BYTES`]: `invalid_request` for another content type
/// or a repeated parameter, 413 for an oversized body.
pub async fn read_form(headers: &HeaderMap, body: Body) -> Result<Form, OAuthError> {
    if !is_form_urlencoded(headers) {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    Form::parse(&read_body(body, MAX_FORM_BYTES).await?)
}

/// Runs an endpoint that takes a form: the form read by [`read_form`], then `handle`; any
/// error, from either, answered as an OAuth error response.
pub async fn form_endpoint(
    headers: &HeaderMap,
    body: Body,
    handle: impl AsyncFnOnce(Form) -> Result<Response, OAuthError>,
) -> Response {
    let result = match read_form(headers, body).await {
        Ok(form) => handle(form).await,
        Err(e) => Err(e),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}
