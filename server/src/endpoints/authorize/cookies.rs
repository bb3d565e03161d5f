//! The front channel's two cookies: the interaction (one authorization request's walk through
//! the pages) and the login session (a signed-in browser).
//!
//! Both are `__Host-` cookies (RFC 6265bis §4.1.3.2): Secure, Path=/, no Domain, so only this
//! host sets and reads them, and a sibling subdomain cannot plant one. HttpOnly, and
//! SameSite=Lax, so the top-level navigation to /authorize from the client carries the session,
//! while cross-site posts do not. Their values are random ids the database keeps only hashed.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use crate::error::OAuthError;

pub(super) const INTERACTION_COOKIE: &str = "__Host-strongroom-interaction";
pub(super) const SESSION_COOKIE: &str = "__Host-strongroom-session";

/// Sets cookie `name` for `max_age` seconds.
pub(super) fn set_cookie(
    resp: &mut Response,
    name: &str,
    value: &str,
    max_age: i64,
) -> Result<(), OAuthError> {
    let v = HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
        max_age.max(0)
    ))
    .map_err(|_| OAuthError::server_error("the cookie is not a valid header"))?;
    resp.headers_mut().append(header::SET_COOKIE, v);
    Ok(())
}

/// Tells the browser to forget cookie `name`.
pub(super) fn clear_cookie(resp: &mut Response, name: &'static str) {
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
    )) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The value of cookie `name` from the request's Cookie header(s).
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

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
    fn set_and_clear_carry_the_host_prefix_attributes() {
        let mut resp = ().into_response();
        set_cookie(&mut resp, SESSION_COOKIE, "v", 60).unwrap();
        set_cookie(&mut resp, INTERACTION_COOKIE, "w", -5).unwrap();
        clear_cookie(&mut resp, INTERACTION_COOKIE);
        let set: Vec<_> = resp
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            set,
            [
                "__Host-strongroom-session=v; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=60",
                "__Host-strongroom-interaction=w; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0",
                "__Host-strongroom-interaction=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0",
            ]
        );
        assert!(set_cookie(&mut resp, SESSION_COOKIE, "bad\nvalue", 1).is_err());
    }
}
