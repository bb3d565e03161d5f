//! The HTML the browser sees: the login page, the consent page and the error page.
//!
//! Server-rendered, no JavaScript. Every interpolated value goes through [`escape`]. Each page is
//! sent with a Content-Security-Policy that allows nothing but its own hashed stylesheet and form
//! posts to this server (and, where a form's answer redirects to the client, to the client's
//! redirect origin: browsers apply `form-action` to the redirects after a form post), with
//! `X-Frame-Options: DENY` and `frame-ancestors 'none'` against clickjacking, and `no-store` so no
//! cache keeps a CSRF token or a username.

use std::sync::OnceLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::OAuthError;

mod details;

/// The only style the pages have; allowed by its hash, so no other inline style can run.
const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;\
padding:0 1rem;color:#1b1b1b}h1{font-size:1.4rem}label{display:block;margin:.8rem 0 .2rem}\
input[type=text],input[type=password]{width:100%;padding:.5rem;box-sizing:border-box}\
button{margin:1rem .5rem 0 0;padding:.5rem 1.2rem}.error{color:#a00}code{word-break:break-all}\
section{border:1px solid #bbb;border-radius:.3rem;padding:.2rem 1rem;margin:1rem 0}\
h2{font-size:1.1rem}dt{font-weight:600}dd{margin:0 0 .6rem 0;overflow-wrap:anywhere}\
dd dl{margin:.2rem 0 0 .8rem}";

fn style_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()))
    })
}

/// A bidirectional embedding, override or isolate character (U+202A–U+202E, U+2066–U+2069):
/// HTML escaping leaves it, and in a name shown to users it can make one name read as another.
/// Registrations refuse it in what these pages show (client names, API names and scope
/// descriptions).
pub fn is_bidi_control(c: char) -> bool {
    ('\u{202a}'..='\u{202e}').contains(&c) || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// HTML-escapes text for element content and double- or single-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// The login form: posts `username`, `password` and the hidden `csrf` to /authorize/login.
/// `message` is shown above the form (e.g. after a wrong password); `username` refills its field.
/// Cancel is a form of its own, posting only `csrf` and `decision=cancel` to the same place: the
/// user declines (`access_denied` to the client) without the browser's required-field checks in
/// the way, and a password typed already is not sent.
pub fn login(
    status: StatusCode,
    client_name: &str,
    csrf: &str,
    username: Option<&str>,
    message: Option<&str>,
    client_origin: Option<&str>,
) -> Response {
    let message = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(m)))
        .unwrap_or_default();
    let body = format!(
        "<h1>Sign in</h1>\n<p>to continue to <strong>{client}</strong></p>\n{message}\n\
         <form method=\"post\" action=\"/authorize/login\">\n\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n\
         <label for=\"username\">Username</label>\n\
         <input type=\"text\" id=\"username\" name=\"username\" value=\"{username}\" \
         autocomplete=\"username\" required autofocus>\n\
         <label for=\"password\">Password</label>\n\
         <input type=\"password\" id=\"password\" name=\"password\" \
         autocomplete=\"current-password\" required>\n\
         <button type=\"submit\">Sign in</button>\n</form>\n\
         <form method=\"post\" action=\"/authorize/login\">\n\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n\
         <button type=\"submit\" name=\"decision\" value=\"cancel\">Cancel</button>\n</form>",
        client = escape(client_name),
        csrf = escape(csrf),
        username = escape(username.unwrap_or("")),
    );
    page(status, "Sign in", &body, form_action(client_origin))
}

/// The consent form: approve or deny, posted with the hidden `csrf` to /authorize/consent.
/// `authorization_details` (RFC 9396), if any, are shown in full, one section each, before the
/// scopes: they are what the user approves or refuses as a whole.
/// Each scope comes with what it means (`describe_scope`, or the API's registered description).
pub fn consent(
    client_name: &str,
    scopes: &[(String, String)],
    authorization_details: &[serde_json::Value],
    csrf: &str,
    return_host: &str,
    client_origin: Option<&str>,
) -> Response {
    let items: String = scopes
        .iter()
        .map(|(s, meaning)| {
            format!(
                "<li>{} (<code>{}</code>)</li>\n",
                escape(meaning),
                escape(s)
            )
        })
        .collect();
    let asked = match (items.is_empty(), authorization_details.is_empty()) {
        (true, true) => "<p>It asks for no particular access.</p>".to_owned(),
        (true, false) => String::new(),
        (false, true) => format!("<p>It asks to:</p>\n<ul>\n{items}</ul>"),
        (false, false) => format!("<p>It also asks to:</p>\n<ul>\n{items}</ul>"),
    };
    let (title, intro, yes) = if authorization_details.is_empty() {
        ("Allow access?", "wants to access your account.", "Allow")
    } else {
        ("Approve this request?", "asks you to approve:", "Approve")
    };
    let body = format!(
        "<h1>{title}</h1>\n<p><strong>{client}</strong> {intro}</p>\n{details}\
         {asked}\n<p>You will then return to <strong>{host}</strong>.</p>\n\
         <form method=\"post\" action=\"/authorize/consent\">\n\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n\
         <button type=\"submit\" name=\"decision\" value=\"approve\">{yes}</button>\n\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button>\n</form>",
        client = escape(client_name),
        details = details::render(authorization_details),
        host = escape(return_host),
        csrf = escape(csrf),
    );
    page(StatusCode::OK, title, &body, form_action(client_origin))
}

/// An error that cannot go back to the client (unknown client, unregistered redirect_uri,
/// used request_uri, forged form post…): shown to the user, with its OAuth error code.
pub fn error(e: &OAuthError) -> Response {
    let body = format!(
        "<h1>This request cannot be completed</h1>\n<p>{description}</p>\n\
         <p>Error: <code>{code}</code></p>\n\
         <p>Return to the application you came from and start again.</p>",
        description = escape(&e.description),
        code = escape(e.code.as_str()),
    );
    page(e.status, "Error", &body, "'none'".to_owned())
}

fn form_action(client_origin: Option<&str>) -> String {
    match client_origin {
        Some(o) => format!("'self' {o}"),
        None => "'self'".to_owned(),
    }
}

/// What a standard scope means to the user (an API's scopes carry their own description).
pub fn describe_scope(scope: &str) -> &'static str {
    match scope {
        "openid" => "Confirm who you are",
        "profile" => "See your name and profile",
        "email" => "See your email address",
        "address" => "See your postal address",
        "phone" => "See your phone number",
        "offline_access" => "Keep access while you are not using it",
        _ => "Access the resource",
    }
}

fn page(status: StatusCode, title: &str, body: &str, form_action: String) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n",
        title = escape(title),
    );
    let csp = format!(
        "default-src 'none'; style-src 'sha256-{}'; form-action {form_action}; \
         frame-ancestors 'none'; base-uri 'none'",
        style_hash()
    );
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The origin comes from a parsed, registered URL; should it ever not fit in a header, the
    // page goes out with the strictest form-action instead of none at all.
    let csp = HeaderValue::from_str(&csp).unwrap_or_else(|_| {
        HeaderValue::from_static(
            "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        )
    });
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_could_leave_text_or_an_attribute() {
        assert_eq!(
            escape(r#"<script>alert('x')</script> & "q""#),
            "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(escape("plain"), "plain");
    }

    #[tokio::test]
    async fn pages_escape_values_and_carry_the_security_headers() {
        let resp = login(
            StatusCode::OK,
            "<b>Evil</b>",
            "tok\"en",
            Some("a\"><script>"),
            None,
            Some("https://rp.example"),
        );
        let h = resp.headers().clone();
        let csp = h
            .get(header::CONTENT_SECURITY_POLICY)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(
            csp.starts_with("default-src 'none'; style-src 'sha256-"),
            "{csp}"
        );
        assert!(
            csp.contains("form-action 'self' https://rp.example;"),
            "{csp}"
        );
        assert_eq!(h.get(header::X_FRAME_OPTIONS).unwrap(), "DENY");
        assert_eq!(h.get(header::CACHE_CONTROL).unwrap(), "no-store");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let html = String::from_utf8(body.to_vec()).unwrap();
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<b>Evil"), "{html}");
        assert!(html.contains("value=\"tok&quot;en\""), "{html}");
        // Cancel: a form of its own, with the same CSRF token and no password field.
        let (_, cancel) = html.split_once("</form>").unwrap();
        assert!(
            cancel.contains("<button type=\"submit\" name=\"decision\" value=\"cancel\">"),
            "{html}"
        );
        assert!(
            cancel.contains("name=\"csrf\" value=\"tok&quot;en\""),
            "{html}"
        );
        assert!(!cancel.contains("password"), "{html}");
        // The stylesheet is the hashed one.
        let expected =
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
        assert!(csp.contains(&expected));
        assert!(html.contains(&format!("<style>{STYLE}</style>")));
    }
}
