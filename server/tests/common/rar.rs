//! Helpers for the rich-authorization-request tests (`tests/rar.rs`, issue 7 part 3), included
//! with `#[path = "common/rar.rs"] mod rar;` next to `mod common;`, `mod apis_common;` and
//! `mod fapi;`.
//!
//! The operator token, the service client and the JWE decryption are `common/apis.rs`'s, shared
//! with `apis.rs`. The RFC 8785 canonical JSON and the consent-page reading are written here
//! from the RFCs and the contract, sharing nothing with the server.
#![allow(dead_code)]

use serde_json::{Value, json};

pub use crate::apis_common::*;
use crate::common::*;
use crate::fapi::*;

// ---------------------------------------------------------------------------------------------
// The seed's payment and the APIs that accept it.

pub const PAYMENT_TYPE: &str = "one_time_payment";
pub const ACCOUNTS_TYPE: &str = "account_information";
/// The scope every test API registers (and the flows ask for, beside `openid`).
pub const API_SCOPE: &str = "payments";
pub const RAR_SCOPE: &str = "openid payments";

/// The seed's `authorization_details` entry (seed 000, "Dynamic Linking"), with `recipient`.
pub fn payment(recipient: &str) -> Value {
    json!({
        "type": PAYMENT_TYPE,
        "amount": {"amount": 2460.46, "currency": "USD"},
        "sourceAccount": "xxxxxxxxxxx4567",
        "recipient": recipient,
        "concept": "All Inclusive Resort Package for Two",
    })
}

/// The seed's example, as an array of one.
pub fn seed_details() -> Value {
    json!([payment("Acme Travel, Inc.")])
}

/// A JSON Schema (2020-12 vocabulary) for the seed's object. The currency pattern has no digits
/// in it, so that an error description naming an entry index can be told apart from it.
pub fn payment_schema() -> Value {
    json!({
        "type": "object",
        "required": ["type", "amount", "sourceAccount", "recipient"],
        "properties": {
            "type": {"const": PAYMENT_TYPE},
            "amount": {
                "type": "object",
                "required": ["amount", "currency"],
                "properties": {
                    "amount": {"type": "number", "exclusiveMinimum": 0},
                    "currency": {"type": "string", "pattern": "^[A-Z][A-Z][A-Z]$"}
                },
                "additionalProperties": false
            },
            "sourceAccount": {"type": "string", "maxLength": 34},
            "recipient": {"type": "string", "maxLength": 140},
            "concept": {"type": "string"},
            "locations": {"type": "array", "items": {"type": "string"}}
        },
        "additionalProperties": false
    })
}

/// POST /api/v2/resource-servers with the operator token.
pub fn post_api(fapi: &Fapi, admin: &str, body: &Value) -> Response {
    send(
        fapi.server.port,
        "POST",
        "/api/v2/resource-servers",
        &[bearer(admin)],
        Some(("application/json", &body.to_string())),
        None,
    )
}

/// Registers an API (201 checked) with scope [`API_SCOPE`], `types` ((type, schema) pairs),
/// `clients` allowed, and `extra` fields merged in. Returns its identifier.
pub fn register_api(
    fapi: &Fapi,
    admin: &str,
    types: &[(&str, Value)],
    clients: &[&str],
    extra: Value,
) -> String {
    let identifier = unique_api();
    let mut body = json!({
        "identifier": identifier,
        "name": "Payments",
        "scopes": [{"value": API_SCOPE, "description": "Make payments"}],
        "allowed_clients": clients,
        "authorization_details": types.iter()
            .map(|(t, s)| json!({"type": t, "schema": s}))
            .collect::<Vec<_>>(),
    });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    let r = post_api(fapi, admin, &body);
    assert_eq!(r.status, 201, "register API: {}", r.body);
    identifier
}

/// A user-facing client (private_key_jwt, plain parameters at PAR, code flow with refresh).
pub fn web_client(fapi: &Fapi) -> FapiClient {
    fapi.client(Level::None, Method::PrivateKeyJwt)
}

// ---------------------------------------------------------------------------------------------
// Requests carrying details.

/// The client's request with scope [`RAR_SCOPE`] and `details`: as the form parameter's JSON
/// text for plain parameters, as a JSON array claim inside a request object (RFC 9396 §3).
pub fn rar_request(fapi: &Fapi, client: &FapiClient, details: &Value) -> AuthzRequest {
    let mut r = AuthzRequest::for_client(&fapi.server, client);
    r.set("scope", RAR_SCOPE);
    match r.carry {
        Carry::Plain => r.set("authorization_details", &details.to_string()),
        Carry::Signed(_) => {
            r.params
                .insert("authorization_details".to_owned(), details.clone());
        }
    }
    r
}

/// The same request with the parameter's raw text (for malformed values).
pub fn raw_request(fapi: &Fapi, client: &FapiClient, raw: &str) -> AuthzRequest {
    let mut r = AuthzRequest::for_client(&fapi.server, client);
    r.set("scope", RAR_SCOPE);
    r.set("authorization_details", raw);
    r
}

/// PAR (201 checked), /authorize and the sign-in as needed: the page the browser stops at
/// (the consent page, when one is shown) and the request_uri.
pub fn to_consent(
    fapi: &Fapi,
    browser: &mut Browser,
    client: &FapiClient,
    request: &AuthzRequest,
) -> Response {
    let (request_uri, _) = pushed(&request.push(&fapi.server, client)).unwrap();
    let r = browser.send("GET", &authorize_path(&client.id, &request_uri), None);
    let page = browser.follow(r);
    match login_form(&page) {
        Some(login) if page.status == 200 => {
            let (u, p) = browser.user.clone();
            browser.submit(&login, &[("username", &u), ("password", &p)], None)
        }
        _ => page,
    }
}

/// Approves or denies on a consent page: the redirect to the client.
pub fn decide(browser: &mut Browser, page: &Response, approve: bool) -> Callback {
    assert_eq!(page.status, 200, "not a page: {}", page.body);
    let (form, button) =
        consent_form(page, approve).unwrap_or_else(|| panic!("no consent form in {}", page.body));
    let back = browser.submit(&form, &[], Some(button));
    Callback::of(&back, REDIRECT_URI)
        .unwrap_or_else(|| panic!("no redirect to the client: {} {}", back.status, back.body))
}

/// The code of an approving redirect (the fragment for `code id_token`).
pub fn code_of(request: &AuthzRequest, callback: &Callback) -> String {
    assert!(
        callback.get("error").is_none(),
        "refused: {}",
        callback.location
    );
    let code = if request.param("response_type") == Some("code id_token") {
        callback.in_fragment("code")
    } else {
        callback.in_query("code")
    };
    code.unwrap_or_else(|| panic!("no code: {}", callback.location))
        .to_owned()
}

/// The token request for `code`, with `extra` parameters.
pub fn exchange_code(
    fapi: &Fapi,
    client: &FapiClient,
    request: &AuthzRequest,
    code: &str,
    extra: &[(&str, &str)],
) -> Response {
    let mut p = pairs(&[
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", &client.redirect_uri),
        ("code_verifier", &request.pkce.verifier),
    ]);
    p.extend(pairs(extra));
    client.post(&fapi.server, "/token", &p)
}

/// The whole front channel with approval, and the token response (200 checked): (consent page,
/// callback, token response).
pub fn approved_tokens(
    fapi: &Fapi,
    browser: &mut Browser,
    client: &FapiClient,
    request: &AuthzRequest,
) -> (Response, Callback, Value) {
    let page = to_consent(fapi, browser, client, request);
    let callback = decide(browser, &page, true);
    let code = code_of(request, &callback);
    let r = exchange_code(fapi, client, request, &code, &[]);
    assert_eq!(r.status, 200, "token: {}", r.body);
    (page, callback, r.json())
}

/// `strongroom approvals show <txn>` (the CLI, on the server's database): its JSON, or `None`
/// when it fails.
pub fn approval(server: &Server, txn: &str) -> Option<Value> {
    let out = server.cli(&["approvals", "show", txn], "");
    if !out.status.success() {
        eprintln!(
            "approvals show {txn}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "approvals show: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    }))
}

/// `strongroom approvals list --client-id <id>`: every approval recorded for the client,
/// newest first.
pub fn approvals_of(server: &Server, client_id: &str) -> Vec<Value> {
    let out = server.cli(&["approvals", "list", "--client-id", client_id], "");
    assert!(
        out.status.success(),
        "approvals list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "approvals list: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    list.as_array()
        .cloned()
        .unwrap_or_else(|| panic!("not an array: {list}"))
}

/// A `txn`: random and URL-safe (base64url / unreserved characters), at least 16 of them.
pub fn assert_txn(txn: &Value) -> String {
    let t = txn
        .as_str()
        .unwrap_or_else(|| panic!("txn not a string: {txn}"));
    assert!(
        t.len() >= 16
            && t.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
        "txn {t:?} is not a random URL-safe reference"
    );
    t.to_owned()
}

/// An approval's `approved_at` as unix seconds (a number, or an RFC 3339 date-time).
pub fn approved_at(record: &Value) -> i64 {
    match &record["approved_at"] {
        Value::Number(n) => n.as_i64().unwrap(),
        Value::String(s) => parse_rfc3339(s).unwrap_or_else(|| panic!("approved_at {s:?}")),
        other => panic!("approved_at {other}"),
    }
}

/// RFC 8785 (JCS) canonical JSON, written here from the RFC: object members sorted by the
/// UTF-16 code units of their names (§3.2.3), no whitespace, strings escaped as ECMAScript's
/// JSON.stringify does (§3.2.2.2: only `"`, `\` and controls; the short forms \b \t \n \f \r,
/// else \u00xx lowercase), numbers in ECMAScript's shortest round-trip form (§3.2.2.3). For the
/// numbers these tests use (integers, 2460.46), Rust's shortest `f64` Display prints the same
/// digits as ECMAScript, which this checks rather than assumes.
pub fn jcs(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            let f = n.as_f64().unwrap();
            assert!(f.is_finite() && f.abs() < 1e21 && (f == 0.0 || f.abs() >= 1e-6));
            if f.fract() == 0.0 {
                format!("{}", f as i64)
            } else {
                format!("{f}")
            }
        }
        Value::String(s) => {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\u{8}' => out.push_str("\\b"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\u{c}' => out.push_str("\\f"),
                    '\r' => out.push_str("\\r"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        Value::Array(items) => format!("[{}]", items.iter().map(jcs).collect::<Vec<_>>().join(",")),
        Value::Object(members) => {
            let mut names: Vec<&String> = members.keys().collect();
            names.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            let body: Vec<String> = names
                .into_iter()
                .map(|k| format!("{}:{}", jcs(&json!(k)), jcs(&members[k])))
                .collect();
            format!("{{{}}}", body.join(","))
        }
    }
}

/// Lowercase hex SHA-256 (OpenSSL) of the canonical JSON.
pub fn details_sha256(details: &Value) -> String {
    openssl::sha::sha256(jcs(details).as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Reading the consent page.

/// The HTML of each `authorization-detail` section: from its opening tag to the next one (or
/// the form).
pub fn detail_sections(html: &str) -> Vec<String> {
    let marker = "authorization-detail";
    let starts: Vec<usize> = html
        .match_indices(marker)
        .map(|(i, _)| i)
        .filter(|&i| {
            // The class name itself, not e.g. "authorization-details-list".
            let after = html.as_bytes().get(i + marker.len()).copied();
            matches!(after, Some(b'"' | b'\'' | b' '))
        })
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(n, &s)| {
            let end = starts
                .get(n + 1)
                .copied()
                .or_else(|| html[s..].find("<form").map(|f| s + f))
                .unwrap_or(html.len());
            html[s..end].to_owned()
        })
        .collect()
}

/// Text without tags, whitespace collapsed; entities left as they are.
pub fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every `<dt>label</dt><dd>value</dd>` row in `html`, as (label text, value text); a value
/// holding a nested list gives its whole text.
pub fn rows(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("<dt") {
        rest = &rest[i..];
        let Some(open_end) = rest.find('>') else {
            break;
        };
        let Some(close) = rest.find("</dt>") else {
            break;
        };
        let label = text(&rest[open_end + 1..close]);
        rest = &rest[close..];
        let Some(d) = rest.find("<dd") else {
            break;
        };
        let dd = &rest[d..];
        // The matching </dd>, counting nested <dd>s.
        let (mut depth, mut pos, mut end) = (0usize, 0usize, dd.len());
        while pos < dd.len() {
            if dd[pos..].starts_with("<dd") {
                depth += 1;
            } else if dd[pos..].starts_with("</dd>") {
                depth -= 1;
                if depth == 0 {
                    end = pos;
                    break;
                }
            }
            pos += dd[pos..].chars().next().map_or(1, char::len_utf8);
        }
        let inner = &dd[dd.find('>').map_or(0, |g| g + 1)..end];
        out.push((label, text(inner)));
        // Nested rows are found by the next iterations, from inside this value.
        rest = &dd[dd.find('>').map_or(1, |g| g + 1)..];
    }
    out
}

/// The value of the row labelled `label` (case-insensitive), if any.
pub fn row<'a>(rows: &'a [(String, String)], label: &str) -> Option<&'a str> {
    rows.iter()
        .find(|(l, _)| l.eq_ignore_ascii_case(label))
        .map(|(_, v)| v.as_str())
}

/// Asserts that a detail's section shows each (label, value) row, value exactly as given.
pub fn assert_shown(section: &str, expected: &[(&str, &str)]) {
    let shown = rows(section);
    for (label, value) in expected {
        assert_eq!(row(&shown, label), Some(*value), "{label}: {shown:?}");
    }
}

/// Whether a section's heading (the text before its first row) names `ty` (as sent, or with
/// underscores as spaces).
pub fn heading_names(section: &str, ty: &str) -> bool {
    let head = text(section.split("<dt").next().unwrap_or_default()).to_lowercase();
    head.contains(&ty.to_lowercase()) || head.contains(&ty.replace('_', " ").to_lowercase())
}
