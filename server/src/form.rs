//! Form bodies (`application/x-www-form-urlencoded`), read the one way every endpoint reads
//! them: a size limit, the content type checked, each parameter at most once, and every refusal
//! an OAuth error object (never a framework's plain-text rejection).

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::{ErrorCode, OAuthError};

/// One percent-encoded name or value, as UTF-8.
fn decode(raw: &[u8]) -> Result<String, OAuthError> {
    let spaced: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
    String::from_utf8(bytes)
        .map_err(|_| OAuthError::invalid_request("parameter names and values must be UTF-8"))
}

/// The largest form body accepted; a larger one is refused unread.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// Form parameters, each at most once (RFC 6749 §3.1, §3.2).
#[derive(Debug)]
pub struct Form(HashMap<String, String>);

impl Form {
    /// `name=value` pairs separated by `&`, `+` for a space, percent-encoded bytes (an invalid
    /// `%` sequence is kept as it is, as WHATWG URL parsing does). Names and values must decode
    /// to UTF-8: `invalid_request` otherwise, rather than a value quietly altered (a `state`
    /// must come back exactly as sent, RFC 6749 §4.1.2).
    pub fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let mut map = HashMap::new();
        for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            let (k, v) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => {
                    let (k, rest) = pair.split_at(i);
                    (k, rest.get(1..).unwrap_or_default())
                }
                None => (pair, &[][..]),
            };
            let (k, v) = (decode(k)?, decode(v)?);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_a_browser_and_refuses_what_is_not_utf8() {
        let f = Form::parse(b"a=1+2&b=%C3%A9t%C3%A9&c&&d=%zz&e=x%3Dy=z").unwrap();
        assert_eq!(f.get("a"), Some("1 2"));
        assert_eq!(f.get("b"), Some("\u{e9}t\u{e9}"));
        assert_eq!(
            f.get("c"),
            None,
            "present, empty: absent (RFC 6749 section 3.1)"
        );
        assert_eq!(f.get("d"), Some("%zz"), "an invalid escape is kept as sent");
        assert_eq!(f.get("e"), Some("x=y=z"));
        // The same as serde_urlencoded for what both accept.
        let encoded =
            serde_urlencoded::to_string([("state", "a b&c=d/\u{263a}"), ("x", "")]).unwrap();
        assert_eq!(
            Form::parse(encoded.as_bytes()).unwrap().get("state"),
            Some("a b&c=d/\u{263a}")
        );
        for bad in [&b"state=%ff%fe"[..], b"client_id=\xc3\x28", b"%ff=1"] {
            let e = Form::parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{bad:?}");
        }
        assert!(Form::parse(b"a=1&a=2").is_err(), "repeated");
    }
}
