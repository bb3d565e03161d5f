//! Client-side FAPI tooling for the black-box tests of issue 6 (compliance levels), included by
//! `compliance.rs` and `fapi_flows.rs` (and, for its browser, PKCE and JWT checks, by `flow.rs`)
//! with `#[path = "common/fapi.rs"] mod fapi;` next to `mod common;`.
//!
//! Everything a FAPI client does is built here with OpenSSL, independently of the server (which
//! uses josekit): JWS (PS256 = RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt; RS256;
//! ES256 as raw r‖s; HS256; `none`), JWE compact serialization (RFC 7516 §7.1: RSA-OAEP or
//! RSA-OAEP-256 key wrap, A256GCM or A128CBC-HS256 content encryption with the ASCII of the
//! encoded protected header as AAD), request objects (RFC 9101), client assertions
//! (RFC 7523), certificates, PKCE, the browser that signs in and consents, and the flows of
//! each level. What the server signs is checked with jsonwebtoken against the served JWKS and
//! with OpenSSL's SHA-256.
//!
//! Every request goes through [`send`], which notes two things for the tests that want them:
//! every `error` code the server answered with, and every response without a well-formed
//! `x-fapi-interaction-id` (or with one other than the UUID the request sent).
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::md::Md;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private, Public};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer};
use openssl::symm::Cipher;
use openssl::x509::X509;
use serde_json::{Map, Value, json};

use crate::common::*;

pub const REDIRECT_URI: &str = "https://client.example/cb";
pub const USERNAME: &str = "alice";
pub const PASSWORD: &str = "correct horse battery staple";
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The seed's exact `error_description` when a level's client skips PAR.
pub const PAR_REQUIRED: &str =
    "Pushed Authorization Requests are required by the configured compliance level";
/// Scopes every test client registers.
pub const CLIENT_SCOPE: &str = "openid profile email accounts";
/// Scopes the flows ask for (`profile`: `updated_at` at /userinfo).
pub const FLOW_SCOPE: &str = "openid profile email";

/// Every error code the OAuth 2.0 and OpenID standards define (the seed's behaviour row "only
/// OIDC conformant error codes").
pub const STANDARD_ERROR_CODES: &[&str] = &[
    // RFC 6749 §4.1.2.1 and §5.2
    "invalid_request",
    "unauthorized_client",
    "access_denied",
    "unsupported_response_type",
    "invalid_scope",
    "server_error",
    "temporarily_unavailable",
    "invalid_client",
    "invalid_grant",
    "unsupported_grant_type",
    // RFC 6750 §3.1
    "invalid_token",
    "insufficient_scope",
    // RFC 7009 §2.2.1
    "unsupported_token_type",
    // RFC 7591 §3.2.2
    "invalid_redirect_uri",
    "invalid_client_metadata",
    "invalid_software_statement",
    "unapproved_software_statement",
    // RFC 8707 §2
    "invalid_target",
    // RFC 9101 §6.3, RFC 9126 §2.3, OpenID Connect Core §3.1.2.6
    "invalid_request_uri",
    "invalid_request_object",
    "request_not_supported",
    "request_uri_not_supported",
    "interaction_required",
    "login_required",
    "account_selection_required",
    "consent_required",
    "registration_not_supported",
    // RFC 9396 §5
    "invalid_authorization_details",
];

// ---------------------------------------------------------------------------------------------
// Encodings.

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub fn form(pairs: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    openssl::rand::rand_bytes(&mut b).unwrap();
    b
}

pub fn unique() -> String {
    b64(&random_bytes::<16>())
}

/// A random (version 4) UUID, RFC 9562 §5.4.
pub fn uuid_v4() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The RFC 9562 textual form: 8-4-4-4-12 hexadecimal digits.
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// A version 4 (random) UUID: version nibble 4, variant bits 10 (RFC 9562 §5.4).
pub fn is_uuid_v4(s: &str) -> bool {
    is_uuid(s)
        && s.as_bytes()[14] == b'4'
        && matches!(
            s.as_bytes()[19].to_ascii_lowercase(),
            b'8' | b'9' | b'a' | b'b'
        )
}

/// Days since 1970-01-01 to (year, month, day) (proleptic Gregorian; H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// RFC 7231 §7.1.1.1 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the x-fapi-auth-date format.
pub fn imf_fixdate(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    format!(
        "{wd}, {d:02} {mon} {y:04} {:02}:{:02}:{:02} GMT",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// An RFC 3339 date-time (`2024-05-01T12:00:00Z`, fractions and offsets allowed) as unix
/// seconds; `None` when it is not one.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    fn digits(t: &str) -> Option<i64> {
        (!t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    }
    let part = |r: std::ops::Range<usize>| s.get(r).and_then(digits);
    let sep = |i: usize, c: &[u8]| s.as_bytes().get(i).is_some_and(|b| c.contains(b));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (y, mo, d) = (part(0..4)?, part(5..7)?, part(8..10)?);
    let (h, mi, se) = (part(11..13)?, part(14..16)?, part(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && o.get(3..4) == Some(":") => {
            let v = digits(o.get(1..3)?)? * 3600 + digits(o.get(4..6)?)? * 60;
            match o.get(0..1)? {
                "+" => v,
                "-" => -v,
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset)
}

// ---------------------------------------------------------------------------------------------
// What every response is checked for, noted per "column" (a label the test sets).

#[derive(Debug, Default)]
pub struct Seen {
    pub column: String,
    /// error code -> the columns it was seen in.
    pub codes: BTreeMap<String, BTreeSet<String>>,
    /// column -> responses without a proper x-fapi-interaction-id.
    pub interaction_id: BTreeMap<String, Vec<String>>,
}

thread_local! {
    static SEEN: RefCell<Seen> = RefCell::new(Seen::default());
}

/// Labels the responses from now on (for the per-column checks).
pub fn set_column(label: &str) {
    SEEN.with(|s| s.borrow_mut().column = label.to_owned());
}

/// What has been seen so far (and forgets it).
pub fn take_seen() -> Seen {
    SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

fn note_code(code: &str) {
    SEEN.with(|s| {
        let mut s = s.borrow_mut();
        let column = s.column.clone();
        s.codes.entry(code.to_owned()).or_default().insert(column);
    });
}

fn observe(what: &str, sent_interaction_id: Option<&str>, r: &Response) {
    let problem = match (r.header("x-fapi-interaction-id"), sent_interaction_id) {
        (None, _) => Some("no x-fapi-interaction-id".to_owned()),
        (Some(got), Some(sent)) if is_uuid(sent) && got != sent => Some(format!(
            "x-fapi-interaction-id {got:?}, not the {sent:?} sent"
        )),
        (Some(got), _) if !is_uuid(got) => {
            Some(format!("x-fapi-interaction-id {got:?} is not a UUID"))
        }
        // Not echoed: the server's own, a fresh random (version 4) UUID.
        (Some(got), sent) if !sent.is_some_and(is_uuid) && !is_uuid_v4(got) => Some(format!(
            "x-fapi-interaction-id {got:?} is not a version 4 UUID"
        )),
        _ => None,
    };
    SEEN.with(|s| {
        let mut s = s.borrow_mut();
        if let Some(p) = problem {
            let column = s.column.clone();
            s.interaction_id
                .entry(column)
                .or_default()
                .push(format!("{what} ({}): {p}", r.status));
        }
    });
    if let Ok(v) = serde_json::from_str::<Value>(&r.body) {
        if let Some(code) = v.get("error").and_then(Value::as_str) {
            note_code(code);
        }
    }
    // An error page shows its code as `Error: <code>…</code>`.
    if let Some(rest) = r.body.split("Error: <code>").nth(1) {
        if let Some(code) = rest.split("</code>").next() {
            note_code(code);
        }
    }
    if let Some(loc) = r.header("location") {
        if let Ok(u) = url::Url::parse(loc) {
            let frag: Vec<(String, String)> = u
                .fragment()
                .map(|f| {
                    url::form_urlencoded::parse(f.as_bytes())
                        .into_owned()
                        .collect()
                })
                .unwrap_or_default();
            for (k, v) in u.query_pairs().into_owned().chain(frag) {
                if k == "error" {
                    note_code(&v);
                }
            }
        }
    }
}

/// Sends one HTTP/1.1 request over TLS (with a client certificate when given) and notes what
/// the answer says (see [`Seen`]).
pub fn send(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Option<(&str, &str)>,
    identity: Identity<'_>,
) -> Response {
    let mut raw =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n");
    for (n, v) in headers {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    match body {
        Some((ct, b)) => raw.push_str(&format!(
            "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => raw.push_str("\r\n"),
    }
    let r = exchange(port, &raw, identity);
    let sent = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-fapi-interaction-id"))
        .map(|(_, v)| v.as_str());
    observe(
        &format!("{method} {}", path.split('?').next().unwrap_or(path)),
        sent,
        &r,
    );
    r
}

pub fn post_pairs(
    port: u16,
    path: &str,
    pairs: &[(String, String)],
    headers: &[(String, String)],
    identity: Identity<'_>,
) -> Response {
    send(
        port,
        "POST",
        path,
        headers,
        Some(("application/x-www-form-urlencoded", &form(pairs))),
        identity,
    )
}

pub fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// An OAuth error object's (status, error, error_description), if the body is one.
pub fn oauth_error(r: &Response) -> Option<(u16, String, String)> {
    let v: Value = serde_json::from_str(&r.body).ok()?;
    Some((
        r.status,
        v.get("error")?.as_str()?.to_owned(),
        v.get("error_description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    ))
}

// ---------------------------------------------------------------------------------------------
// JWS (RFC 7515) with OpenSSL.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwsAlg {
    Ps256,
    Rs256,
    Es256,
    Hs256,
    None,
}

impl JwsAlg {
    pub fn name(self) -> &'static str {
        match self {
            JwsAlg::Ps256 => "PS256",
            JwsAlg::Rs256 => "RS256",
            JwsAlg::Es256 => "ES256",
            JwsAlg::Hs256 => "HS256",
            JwsAlg::None => "none",
        }
    }
}

/// The key a JWS is made with.
pub enum SignKey<'a> {
    /// PS256 / RS256.
    Rsa(&'a PKey<Private>),
    /// ES256 (P-256).
    Ec(&'a PKey<Private>),
    /// HS256.
    Secret(&'a [u8]),
    /// `none`.
    Nothing,
}

/// RSASSA-PSS with SHA-256, MGF1 with SHA-256, salt 32 bytes (RFC 7518 §3.5).
pub fn ps256(key: &PKey<Private>, data: &[u8]) -> Vec<u8> {
    let mut s = Signer::new(MessageDigest::sha256(), key).unwrap();
    s.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
    s.set_rsa_mgf1_md(MessageDigest::sha256()).unwrap();
    s.set_rsa_pss_saltlen(RsaPssSaltlen::custom(32)).unwrap();
    s.sign_oneshot_to_vec(data).unwrap()
}

/// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3).
pub fn rs256(key: &PKey<Private>, data: &[u8]) -> Vec<u8> {
    let mut s = Signer::new(MessageDigest::sha256(), key).unwrap();
    s.set_rsa_padding(Padding::PKCS1).unwrap();
    s.sign_oneshot_to_vec(data).unwrap()
}

/// ECDSA P-256 with SHA-256, as JWS wants it: r‖s, 32 bytes each (RFC 7518 §3.4), not DER.
pub fn es256(key: &PKey<Private>, data: &[u8]) -> Vec<u8> {
    let mut s = Signer::new(MessageDigest::sha256(), key).unwrap();
    let der = s.sign_oneshot_to_vec(data).unwrap();
    let sig = EcdsaSig::from_der(&der).unwrap();
    let mut out = sig.r().to_vec_padded(32).unwrap();
    out.extend(sig.s().to_vec_padded(32).unwrap());
    out
}

pub fn hs256(secret: &[u8], data: &[u8]) -> Vec<u8> {
    let key = PKey::hmac(secret).unwrap();
    let mut s = Signer::new(MessageDigest::sha256(), &key).unwrap();
    s.sign_oneshot_to_vec(data).unwrap()
}

/// A compact JWS: `header` gets `alg`; the payload is `claims` serialised.
pub fn jws(alg: JwsAlg, key: SignKey<'_>, header: Value, claims: &Value) -> String {
    let mut h = match header {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    h.insert("alg".into(), json!(alg.name()));
    let input = format!(
        "{}.{}",
        b64(Value::Object(h).to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = match (alg, key) {
        (JwsAlg::Ps256, SignKey::Rsa(k)) => ps256(k, input.as_bytes()),
        (JwsAlg::Rs256, SignKey::Rsa(k)) => rs256(k, input.as_bytes()),
        (JwsAlg::Es256, SignKey::Ec(k)) => es256(k, input.as_bytes()),
        (JwsAlg::Hs256, SignKey::Secret(k)) => hs256(k, input.as_bytes()),
        (JwsAlg::None, _) => Vec::new(),
        (alg, _) => panic!("no key of the right type for {}", alg.name()),
    };
    format!("{input}.{}", b64(&sig))
}

// ---------------------------------------------------------------------------------------------
// JWE (RFC 7516) with OpenSSL.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWrap {
    /// RSAES-OAEP with SHA-1 and MGF1-SHA-1 (RFC 7518 §4.3).
    RsaOaep,
    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256.
    RsaOaep256,
}

impl KeyWrap {
    pub fn name(self) -> &'static str {
        match self {
            KeyWrap::RsaOaep => "RSA-OAEP",
            KeyWrap::RsaOaep256 => "RSA-OAEP-256",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentEnc {
    /// AES-256-GCM, 96-bit IV, 128-bit tag (RFC 7518 §5.3).
    A256Gcm,
    /// AES-128-CBC + HMAC-SHA-256 truncated to 128 bits (RFC 7518 §5.2.3).
    A128CbcHs256,
}

impl ContentEnc {
    pub fn name(self) -> &'static str {
        match self {
            ContentEnc::A256Gcm => "A256GCM",
            ContentEnc::A128CbcHs256 => "A128CBC-HS256",
        }
    }
}

/// One of the server's `use: enc` keys from its JWKS.
#[derive(Clone)]
pub struct EncKey {
    pub kid: String,
    pub alg: Option<String>,
    pub key: PKey<Public>,
}

pub fn rsa_public_from_jwk(jwk: &Value) -> PKey<Public> {
    let n = openssl::bn::BigNum::from_slice(&unb64(jwk["n"].as_str().unwrap())).unwrap();
    let e = openssl::bn::BigNum::from_slice(&unb64(jwk["e"].as_str().unwrap())).unwrap();
    PKey::from_rsa(Rsa::from_public_components(n, e).unwrap()).unwrap()
}

/// Encrypts `plaintext` to `to` as a compact JWE: `BASE64URL(protected) . BASE64URL(encrypted
/// key) . BASE64URL(iv) . BASE64URL(ciphertext) . BASE64URL(tag)` (RFC 7516 §7.1), with the
/// ASCII of the encoded protected header as the additional authenticated data (§5.1 step 14).
pub fn jwe(
    plaintext: &[u8],
    to: &EncKey,
    wrap: KeyWrap,
    content: ContentEnc,
    cty: Option<&str>,
) -> String {
    let mut header = json!({"alg": wrap.name(), "enc": content.name(), "kid": to.kid});
    if let Some(c) = cty {
        header["cty"] = json!(c);
    }
    let protected = b64(header.to_string().as_bytes());
    let aad = protected.as_bytes();
    // Both A256GCM and A128CBC-HS256 take a 256-bit CEK.
    let cek = random_bytes::<32>();
    let mut ctx = PkeyCtx::new(&to.key).unwrap();
    ctx.encrypt_init().unwrap();
    ctx.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
    let md = match wrap {
        KeyWrap::RsaOaep => Md::sha1(),
        KeyWrap::RsaOaep256 => Md::sha256(),
    };
    ctx.set_rsa_oaep_md(md).unwrap();
    ctx.set_rsa_mgf1_md(md).unwrap();
    let mut encrypted_key = Vec::new();
    ctx.encrypt_to_vec(&cek, &mut encrypted_key).unwrap();
    let (iv, ciphertext, tag) = match content {
        ContentEnc::A256Gcm => {
            let iv = random_bytes::<12>().to_vec();
            let mut tag = [0u8; 16];
            let ct = openssl::symm::encrypt_aead(
                Cipher::aes_256_gcm(),
                &cek,
                Some(&iv),
                aad,
                plaintext,
                &mut tag,
            )
            .unwrap();
            (iv, ct, tag.to_vec())
        }
        ContentEnc::A128CbcHs256 => {
            let (mac_key, enc_key) = cek.split_at(16);
            let iv = random_bytes::<16>().to_vec();
            let ct = openssl::symm::encrypt(Cipher::aes_128_cbc(), enc_key, Some(&iv), plaintext)
                .unwrap();
            let al = ((aad.len() as u64) * 8).to_be_bytes();
            let mut mac_input = aad.to_vec();
            mac_input.extend_from_slice(&iv);
            mac_input.extend_from_slice(&ct);
            mac_input.extend_from_slice(&al);
            let mac = hs256(mac_key, &mac_input);
            (iv, ct, mac[..16].to_vec())
        }
    };
    format!(
        "{protected}.{}.{}.{}.{}",
        b64(&encrypted_key),
        b64(&iv),
        b64(&ciphertext),
        b64(&tag)
    )
}

/// `compact` with one bit flipped in part `index` (0-based, of the dot-separated parts).
pub fn tamper(compact: &str, index: usize) -> String {
    let mut parts: Vec<String> = compact.split('.').map(str::to_owned).collect();
    let mut bytes = unb64(&parts[index]);
    let last = bytes.len() - 1;
    bytes[last / 2] ^= 0x01;
    parts[index] = b64(&bytes);
    parts.join(".")
}

// ---------------------------------------------------------------------------------------------
// The server's keys and what it signs.

pub fn served_jwks(server: &Server) -> Value {
    let r = send(server.port, "GET", "/jwks", &[], None, None);
    assert_eq!(r.status, 200, "/jwks: {}", r.body);
    r.json()
}

/// The server's request-object encryption key (`use: enc`) from the served JWKS.
pub fn encryption_key(server: &Server) -> EncKey {
    let set = served_jwks(server);
    let jwk = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["use"] == "enc")
        .unwrap_or_else(|| panic!("no use=enc key in the JWKS: {set}"))
        .clone();
    EncKey {
        kid: jwk["kid"].as_str().unwrap().to_owned(),
        alg: jwk["alg"].as_str().map(str::to_owned),
        key: rsa_public_from_jwk(&jwk),
    }
}

pub fn discovery(server: &Server) -> Value {
    let r = send(
        server.port,
        "GET",
        "/.well-known/openid-configuration",
        &[],
        None,
        None,
    );
    assert_eq!(r.status, 200, "discovery: {}", r.body);
    r.json()
}

/// Verifies a JWT the server signed, with jsonwebtoken against the served JWKS: signature (the
/// kid must be in the set), `iss`, `aud` and `exp`; `typ` when given. Returns the claims.
pub fn verify_jwt(
    server: &Server,
    token: &str,
    audience: &str,
    typ: Option<&str>,
) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("{e}: {token}"))?;
    if typ.is_some() && header.typ.as_deref() != typ {
        return Err(format!("typ {:?}, want {typ:?}", header.typ));
    }
    if !matches!(
        header.alg,
        jsonwebtoken::Algorithm::PS256 | jsonwebtoken::Algorithm::ES256
    ) {
        return Err(format!("alg {:?}", header.alg));
    }
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(served_jwks(server)).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = set.find(&kid).ok_or(format!("kid {kid} not in the JWKS"))?;
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_audience(&[audience]);
    v.set_issuer(&[server.issuer()]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?,
        &v,
    )
    .map(|d| d.claims)
    .map_err(|e| format!("{e}: {token}"))
}

/// OpenID Connect Core §3.3.2.11 (c_hash), FAPI 1 Advanced §5.2.2.1 (s_hash): the left half of
/// the SHA-256 of the ASCII value, base64url.
pub fn left_half_sha256(s: &str) -> String {
    b64(&openssl::sha::sha256(s.as_bytes())[..16])
}

/// RFC 8705 §3.1: base64url(SHA-256(DER of the certificate)).
pub fn x5t_s256(cert: &X509) -> String {
    b64(&openssl::sha::sha256(&cert.to_der().unwrap()))
}

// ---------------------------------------------------------------------------------------------
// Levels and clients.

/// A client's `compliance_level` (seed 004), `None` being null.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Fapi1AdvPkjPar,
    Fapi1AdvMtlsPar,
    Fapi2SpPkjMtls,
    Fapi2SpMtlsMtls,
    None,
}

impl Level {
    /// The seed's columns, then null.
    pub const COLUMNS: [Level; 5] = [
        Level::Fapi1AdvPkjPar,
        Level::Fapi1AdvMtlsPar,
        Level::Fapi2SpPkjMtls,
        Level::Fapi2SpMtlsMtls,
        Level::None,
    ];

    pub fn name(self) -> Option<&'static str> {
        match self {
            Level::Fapi1AdvPkjPar => Some("fapi1_adv_pkj_par"),
            Level::Fapi1AdvMtlsPar => Some("fapi1_adv_mtls_par"),
            Level::Fapi2SpPkjMtls => Some("fapi2_sp_pkj_mtls"),
            Level::Fapi2SpMtlsMtls => Some("fapi2_sp_mtls_mtls"),
            Level::None => None,
        }
    }

    pub fn label(self) -> &'static str {
        self.name().unwrap_or("null")
    }

    pub fn json(self) -> Value {
        self.name().map_or(Value::Null, |n| json!(n))
    }

    pub fn fapi1(self) -> bool {
        matches!(self, Level::Fapi1AdvPkjPar | Level::Fapi1AdvMtlsPar)
    }

    pub fn fapi2(self) -> bool {
        matches!(self, Level::Fapi2SpPkjMtls | Level::Fapi2SpMtlsMtls)
    }

    /// The client authentication the level demands (null: none in particular).
    pub fn method(self) -> Option<Method> {
        match self {
            Level::Fapi1AdvPkjPar | Level::Fapi2SpPkjMtls => Some(Method::PrivateKeyJwt),
            Level::Fapi1AdvMtlsPar | Level::Fapi2SpMtlsMtls => Some(Method::TlsClientAuth),
            Level::None => None,
        }
    }

    /// The response type of the level's flow.
    pub fn response_type(self) -> &'static str {
        if self.fapi1() {
            "code id_token"
        } else {
            "code"
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    PrivateKeyJwt,
    TlsClientAuth,
    SelfSignedTlsClientAuth,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::PrivateKeyJwt => "private_key_jwt",
            Method::TlsClientAuth => "tls_client_auth",
            Method::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
        }
    }
}

/// A registered test client and everything it holds.
pub struct FapiClient {
    pub id: String,
    pub level: Level,
    pub method: Method,
    /// kid "rsa-1": client assertions and PS256 / RS256 request objects.
    pub rsa: PKey<Private>,
    /// kid "ec-1": ES256 request objects.
    pub ec: PKey<Private>,
    /// Presented on the mTLS listener: issued by the test CA for tls_client_auth, self-signed
    /// otherwise (for self_signed_tls_client_auth its key is "tls-1" in the client's jwks; for
    /// private_key_jwt it is only what the tokens are bound to).
    pub cert: X509,
    pub cert_key: PKey<Private>,
    pub redirect_uri: String,
}

pub fn rsa_jwk(key: &PKey<Private>, kid: &str, alg: &str) -> Value {
    let rsa = key.rsa().unwrap();
    json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": alg,
           "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())})
}

pub fn ec_jwk(key: &PKey<Private>, kid: &str) -> Value {
    let ec = key.ec_key().unwrap();
    let mut ctx = openssl::bn::BigNumContext::new().unwrap();
    let mut x = openssl::bn::BigNum::new().unwrap();
    let mut y = openssl::bn::BigNum::new().unwrap();
    ec.public_key()
        .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
        .unwrap();
    json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
           "x": b64(&x.to_vec_padded(32).unwrap()), "y": b64(&y.to_vec_padded(32).unwrap())})
}

pub fn new_rsa() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

pub fn new_ec() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

impl FapiClient {
    pub fn identity(&self) -> Identity<'_> {
        Some((&self.cert, &self.cert_key))
    }

    /// The public key (PEM) of "rsa-1", the secret of an algorithm-confusion HS256 forgery.
    pub fn public_pem(&self) -> Vec<u8> {
        self.rsa.public_key_to_pem().unwrap()
    }

    /// A private_key_jwt assertion (PS256, kid "rsa-1") with `aud`.
    pub fn assertion(&self, aud: Value) -> String {
        let t = now();
        jws(
            JwsAlg::Ps256,
            SignKey::Rsa(&self.rsa),
            json!({"kid": "rsa-1", "typ": "JWT"}),
            &json!({"iss": self.id, "sub": self.id, "aud": aud, "exp": t + 60, "iat": t,
                    "jti": unique()}),
        )
    }

    /// Client authentication for a back-channel request: an assertion whose `aud` is the
    /// issuer (or `aud`), or the client_id for mTLS methods (the certificate does the rest).
    pub fn auth_pairs(&self, server: &Server, aud: Option<&Value>) -> Vec<(String, String)> {
        match self.method {
            Method::PrivateKeyJwt => {
                let aud = aud.cloned().unwrap_or_else(|| json!(server.issuer()));
                pairs(&[
                    ("client_id", &self.id),
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", &self.assertion(aud)),
                ])
            }
            Method::TlsClientAuth | Method::SelfSignedTlsClientAuth => {
                pairs(&[("client_id", &self.id)])
            }
        }
    }

    /// POSTs `params` plus this client's authentication to `path` on the mTLS listener, with the
    /// client certificate.
    pub fn post(&self, server: &Server, path: &str, params: &[(String, String)]) -> Response {
        self.post_with(server, path, params, None, &[])
    }

    pub fn post_with(
        &self,
        server: &Server,
        path: &str,
        params: &[(String, String)],
        aud: Option<&Value>,
        headers: &[(String, String)],
    ) -> Response {
        let mut body: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| k != "client_id")
            .cloned()
            .collect();
        body.extend(self.auth_pairs(server, aud));
        post_pairs(server.mtls_port, path, &body, headers, self.identity())
    }
}

// ---------------------------------------------------------------------------------------------
// The test server with a client CA, a user, and a management API token.

pub struct Fapi {
    pub server: Server,
    pub ca: (X509, PKey<Private>),
    pub admin_token: String,
    /// When the user was created (unix seconds, a little before).
    pub user_created: i64,
}

impl Fapi {
    /// The server (with `extra` in its [server] table), a client CA, user alice, and a token for
    /// the management API.
    pub fn start(extra: &str) -> Fapi {
        let (server, ca) = start_with_client_ca(extra);
        let user_created = now() - 1;
        create_user(
            &server,
            USERNAME,
            &json!({"name": "Alice Example", "email": "alice@example.com",
                    "email_verified": true}),
        );
        // The operator's client (CLI bootstrap), then client_credentials for the API.
        let rsa = new_rsa();
        let id = create_client(
            &server,
            &json!({
                "client_name": "operations",
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [rsa_jwk(&rsa, "rsa-1", "PS256")]},
                "grant_types": ["client_credentials"],
                "scope": "read:clients create:clients update:clients delete:clients",
            }),
        );
        let t = now();
        let a = jws(
            JwsAlg::Ps256,
            SignKey::Rsa(&rsa),
            json!({"kid": "rsa-1"}),
            &json!({"iss": id, "sub": id, "aud": server.issuer(), "exp": t + 60, "iat": t,
                    "jti": unique()}),
        );
        let r = post_pairs(
            server.port,
            "/token",
            &pairs(&[
                ("grant_type", "client_credentials"),
                ("audience", &format!("{}/api/v2/", server.issuer())),
                (
                    "scope",
                    "read:clients create:clients update:clients delete:clients",
                ),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &a),
            ]),
            &[],
            None,
        );
        assert_eq!(r.status, 200, "management token: {}", r.body);
        let admin_token = r.json()["access_token"].as_str().unwrap().to_owned();
        Fapi {
            server,
            ca,
            admin_token,
            user_created,
        }
    }

    pub fn api(&self, method: &str, path: &str, body: &Value) -> Response {
        send(
            self.server.port,
            method,
            path,
            &[bearer(&self.admin_token)],
            Some(("application/json", &body.to_string())),
            None,
        )
    }

    /// Client metadata for `level` authenticating with `method`, and the keys it names. Code
    /// flow with refresh tokens; both response types registered, so that what the level allows
    /// is the level's doing, not the registration's.
    pub fn metadata(&self, level: Level, method: Method) -> (Value, ClientKeys) {
        let cn = format!("client-{}", &unique()[..10]);
        let rsa = new_rsa();
        let ec = new_ec();
        let (cert, cert_key) = match method {
            Method::TlsClientAuth => certificate(&cn, Some((&self.ca.0, &self.ca.1)), false),
            _ => certificate(&cn, None, false),
        };
        let mut keys = vec![rsa_jwk(&rsa, "rsa-1", "PS256"), ec_jwk(&ec, "ec-1")];
        if method == Method::SelfSignedTlsClientAuth {
            keys.push(rsa_jwk(&cert_key, "tls-1", "PS256"));
        }
        let mut m = json!({
            "client_name": format!("{} {} {cn}", level.label(), method.name()),
            "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code", "code id_token"],
            "scope": CLIENT_SCOPE,
            "token_endpoint_auth_method": method.name(),
            "jwks": {"keys": keys},
            "compliance_level": level.json(),
        });
        if method == Method::TlsClientAuth {
            m["tls_client_auth_subject_dn"] = json!(format!("CN={cn},O=Test Bank"));
        }
        (
            m,
            ClientKeys {
                rsa,
                ec,
                cert,
                cert_key,
            },
        )
    }

    /// Registers a client through the management API (`tweak` edits the metadata first).
    pub fn try_client(
        &self,
        level: Level,
        method: Method,
        tweak: impl FnOnce(&mut Value),
    ) -> Result<FapiClient, Response> {
        let (mut m, keys) = self.metadata(level, method);
        tweak(&mut m);
        let r = self.api("POST", "/api/v2/clients", &m);
        if r.status != 201 {
            return Err(r);
        }
        let created = r.json();
        Ok(FapiClient {
            id: created["client_id"].as_str().unwrap().to_owned(),
            level,
            method,
            rsa: keys.rsa,
            ec: keys.ec,
            cert: keys.cert,
            cert_key: keys.cert_key,
            redirect_uri: REDIRECT_URI.to_owned(),
        })
    }

    pub fn client(&self, level: Level, method: Method) -> FapiClient {
        self.try_client(level, method, |_| {})
            .unwrap_or_else(|r| panic!("register {level:?} {method:?}: {} {}", r.status, r.body))
    }
}

/// The server (with `extra` in its [server] table) trusting a fresh test client CA, and that CA.
pub fn start_with_client_ca(extra: &str) -> (Server, (X509, PKey<Private>)) {
    let ca = certificate("Test Bank Client CA", None, true);
    let ca_pem = ca.0.to_pem().unwrap();
    let server = start_with(
        &format!("client_ca_file = \"@DIR@/client-ca.pem\"\n{extra}"),
        |dir| std::fs::write(dir.join("client-ca.pem"), &ca_pem).unwrap(),
    );
    (server, ca)
}

/// Creates a user (password [`PASSWORD`]) with these claims through the CLI.
pub fn create_user(server: &Server, username: &str, claims: &Value) {
    let file = server.dir.path().join(format!("{username}.json"));
    std::fs::write(&file, claims.to_string()).unwrap();
    let out = server.cli(
        &[
            "users",
            "create",
            "--username",
            username,
            "--claims-file",
            file.to_str().unwrap(),
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(
        out.status.success(),
        "users create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct ClientKeys {
    pub rsa: PKey<Private>,
    pub ec: PKey<Private>,
    pub cert: X509,
    pub cert_key: PKey<Private>,
}

// ---------------------------------------------------------------------------------------------
// Authorization requests: plain, or as a request object (signed, optionally encrypted).

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

pub fn pkce() -> Pkce {
    let verifier = b64(&random_bytes::<32>());
    let challenge = b64(&openssl::sha::sha256(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

/// How an authorization request travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carry {
    /// Each parameter as itself.
    Plain,
    /// One `request` parameter: a request object signed with this algorithm (the client's
    /// "rsa-1" for PS256 and RS256, "ec-1" for ES256, its public key as the HS256 secret).
    Signed(JwsAlg),
}

pub struct AuthzRequest {
    /// The authorization parameters (strings).
    pub params: Map<String, Value>,
    pub carry: Carry,
    /// The request object's own claims (iss, aud, nbf, exp, iat, jti), beside `params`.
    pub ro: Map<String, Value>,
    /// The request object's `kid` (default: the signing key's).
    pub kid: Option<String>,
    /// Encrypt the signed request object to this key.
    pub encrypt: Option<(EncKey, KeyWrap, ContentEnc)>,
    /// Applied to the finished compact request object (JWS or JWE), e.g. to tamper with it.
    pub mangle: Option<fn(&str) -> String>,
    /// Applied to the signed request object before it is encrypted.
    pub mangle_signed: Option<fn(&str) -> String>,
    /// Parameters sent beside `request` (they must be ignored) or beside the plain ones.
    pub outer: Vec<(String, String)>,
    /// Extra HTTP headers.
    pub headers: Vec<(String, String)>,
    /// The client assertion's aud (default: the issuer).
    pub aud: Option<Value>,
    pub pkce: Pkce,
    /// The server's issuer and mTLS base URL (for edits that need them).
    pub issuer: String,
    pub mtls_base: String,
}

impl AuthzRequest {
    /// The level's well-formed request: its response type, the one redirect URI, state, nonce,
    /// PKCE S256; a PS256 request object (nbf now, exp in 5 minutes) for FAPI 1, plain
    /// parameters otherwise.
    pub fn for_client(server: &Server, client: &FapiClient) -> Self {
        let pkce = pkce();
        let t = now();
        let mut params = Map::new();
        for (k, v) in [
            ("response_type", client.level.response_type()),
            ("client_id", client.id.as_str()),
            ("redirect_uri", client.redirect_uri.as_str()),
            ("scope", FLOW_SCOPE),
            ("state", &unique()),
            ("nonce", &unique()),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
        ] {
            params.insert(k.to_owned(), json!(v));
        }
        let ro = json!({"iss": client.id, "aud": server.issuer(), "nbf": t, "iat": t,
                        "exp": t + 300, "jti": unique()});
        AuthzRequest {
            params,
            carry: if client.level.fapi1() {
                Carry::Signed(JwsAlg::Ps256)
            } else {
                Carry::Plain
            },
            ro: ro.as_object().unwrap().clone(),
            kid: None,
            encrypt: None,
            mangle: None,
            mangle_signed: None,
            outer: Vec::new(),
            headers: Vec::new(),
            aud: None,
            pkce,
            issuer: server.issuer(),
            mtls_base: server.mtls_base(),
        }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).and_then(Value::as_str)
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.params.insert(name.to_owned(), json!(value));
    }

    pub fn remove(&mut self, name: &str) {
        self.params.remove(name);
    }

    pub fn header(&mut self, name: &str, value: &str) {
        self.headers.push((name.to_owned(), value.to_owned()));
    }

    /// The request object: the parameters and its own claims, signed, maybe encrypted.
    pub fn request_object(&self, client: &FapiClient, alg: JwsAlg) -> String {
        let mut claims = self.params.clone();
        claims.extend(self.ro.clone());
        let claims = Value::Object(claims);
        let pem = client.public_pem();
        let (key, kid) = match alg {
            JwsAlg::Ps256 | JwsAlg::Rs256 => (SignKey::Rsa(&client.rsa), Some("rsa-1")),
            JwsAlg::Es256 => (SignKey::Ec(&client.ec), Some("ec-1")),
            JwsAlg::Hs256 => (SignKey::Secret(&pem), Some("rsa-1")),
            JwsAlg::None => (SignKey::Nothing, None),
        };
        let mut header = json!({"typ": "oauth-authz-req+jwt"});
        if let Some(k) = self.kid.as_deref().or(kid) {
            header["kid"] = json!(k);
        }
        let mut signed = jws(alg, key, header, &claims);
        if let Some(f) = self.mangle_signed {
            signed = f(&signed);
        }
        let out = match &self.encrypt {
            Some((to, wrap, content)) => jwe(signed.as_bytes(), to, *wrap, *content, Some("JWT")),
            None => signed,
        };
        match self.mangle {
            Some(f) => f(&out),
            None => out,
        }
    }

    /// The form of the pushed request (without client authentication).
    pub fn par_params(&self, client: &FapiClient) -> Vec<(String, String)> {
        let mut out = match self.carry {
            Carry::Plain => self
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect(),
            Carry::Signed(alg) => vec![
                ("client_id".to_owned(), client.id.clone()),
                ("request".to_owned(), self.request_object(client, alg)),
            ],
        };
        out.extend(self.outer.iter().cloned());
        out
    }

    /// Pushes the request (RFC 9126) on the mTLS listener.
    pub fn push(&self, server: &Server, client: &FapiClient) -> Response {
        client.post_with(
            server,
            "/par",
            &self.par_params(client),
            self.aud.as_ref(),
            &self.headers,
        )
    }
}

/// The request_uri of a 201 PAR response, and its expires_in.
pub fn pushed(r: &Response) -> Result<(String, i64), String> {
    if r.status != 201 {
        return Err(format!("PAR: {} {}", r.status, r.body));
    }
    let v = r.json();
    Ok((
        v["request_uri"]
            .as_str()
            .ok_or(format!("no request_uri: {}", r.body))?
            .to_owned(),
        v["expires_in"]
            .as_i64()
            .ok_or(format!("no expires_in: {}", r.body))?,
    ))
}

pub fn authorize_path(client_id: &str, request_uri: &str) -> String {
    format!(
        "/authorize?client_id={}&request_uri={}",
        enc(client_id),
        enc(request_uri)
    )
}

// ---------------------------------------------------------------------------------------------
// The browser: cookies, redirects and HTML forms, as a user agent without JavaScript sees them.

pub struct Browser {
    pub port: u16,
    pub cookies: Vec<(String, String)>,
    /// Who signs in: (username, password).
    pub user: (String, String),
}

#[derive(Debug)]
pub struct HtmlForm {
    pub action: String,
    pub method: String,
    pub fields: Vec<(String, String)>,
    /// Submit buttons (name, value, label).
    pub buttons: Vec<(String, String, String)>,
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn attr(tag: &str, name: &str) -> Option<String> {
    for quote in ['"', '\''] {
        let needle = format!(" {name}={quote}");
        if let Some(i) = tag.find(&needle) {
            let rest = &tag[i + needle.len()..];
            let end = rest.find(quote)?;
            return Some(unescape(&rest[..end]));
        }
    }
    None
}

pub fn forms(html: &str) -> Vec<HtmlForm> {
    let mut out = Vec::new();
    for chunk in html.split("<form").skip(1) {
        let body = chunk.split("</form>").next().unwrap_or_default();
        let Some(close) = body.find('>') else {
            continue;
        };
        let open = &body[..close];
        let mut form = HtmlForm {
            action: attr(open, "action").unwrap_or_default(),
            method: attr(open, "method").unwrap_or_else(|| "get".into()),
            fields: Vec::new(),
            buttons: Vec::new(),
        };
        for input in body.split("<input").skip(1) {
            let tag = &input[..input.find('>').unwrap_or(input.len())];
            let (Some(name), kind) = (attr(tag, "name"), attr(tag, "type").unwrap_or_default())
            else {
                continue;
            };
            let value = attr(tag, "value").unwrap_or_default();
            if kind.eq_ignore_ascii_case("submit") {
                form.buttons.push((name, value.clone(), value));
            } else if !kind.eq_ignore_ascii_case("checkbox") || tag.contains(" checked") {
                form.fields.push((name, value));
            }
        }
        for button in body.split("<button").skip(1) {
            let close = button.find('>').unwrap_or(button.len());
            let tag = &button[..close];
            let label = button[close..]
                .trim_start_matches('>')
                .split("</button>")
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            form.buttons.push((
                attr(tag, "name").unwrap_or_default(),
                attr(tag, "value").unwrap_or_default(),
                label,
            ));
        }
        out.push(form);
    }
    out
}

impl Browser {
    pub fn new(server: &Server) -> Self {
        Self::signing_in_as(server, USERNAME, PASSWORD)
    }

    pub fn signing_in_as(server: &Server, username: &str, password: &str) -> Self {
        Browser {
            port: server.port,
            cookies: Vec::new(),
            user: (username.to_owned(), password.to_owned()),
        }
    }

    pub fn send(&mut self, method: &str, path: &str, body: Option<&str>) -> Response {
        let mut headers = Vec::new();
        if !self.cookies.is_empty() {
            let c: Vec<String> = self
                .cookies
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect();
            headers.push(("Cookie".to_owned(), c.join("; ")));
        }
        if body.is_some() {
            headers.push((
                "Origin".to_owned(),
                format!("https://localhost:{}", self.port),
            ));
        }
        let r = send(
            self.port,
            method,
            path,
            &headers,
            body.map(|b| ("application/x-www-form-urlencoded", b)),
            None,
        );
        for set in r.headers_named("set-cookie") {
            let pair = set.split(';').next().unwrap_or_default();
            let Some((n, v)) = pair.split_once('=') else {
                continue;
            };
            self.cookies.retain(|(name, _)| name != n.trim());
            let expired = set.to_ascii_lowercase().contains("max-age=0");
            if !expired && !v.is_empty() {
                self.cookies
                    .push((n.trim().to_owned(), v.trim().to_owned()));
            }
        }
        r
    }

    /// Follows redirects within this server; stops at a page or at a redirect elsewhere (the
    /// client's redirect_uri).
    pub fn follow(&mut self, mut r: Response) -> Response {
        for _ in 0..10 {
            if !(300..400).contains(&r.status) {
                return r;
            }
            let Some(location) = r.header("location").map(str::to_owned) else {
                return r;
            };
            let own = format!("https://localhost:{}", self.port);
            let path = if let Some(p) = location.strip_prefix(&own) {
                p.to_owned()
            } else if location.starts_with('/') {
                location
            } else {
                return r;
            };
            r = self.send("GET", &path, None);
        }
        panic!("redirect loop");
    }

    pub fn submit(
        &mut self,
        form: &HtmlForm,
        extra: &[(&str, &str)],
        button: Option<usize>,
    ) -> Response {
        let mut fields: Vec<(String, String)> = form
            .fields
            .iter()
            .filter(|(n, _)| !extra.iter().any(|(e, _)| e == n))
            .cloned()
            .collect();
        fields.extend(
            extra
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
        );
        if let Some(i) = button {
            let (n, v, _) = &form.buttons[i];
            if !n.is_empty() {
                fields.push((n.clone(), v.clone()));
            }
        }
        let r = self.send("POST", &form.action, Some(&form_body(&fields)));
        self.follow(r)
    }

    /// /authorize with `path`, then sign-in and consent as needed: the answer that leaves the
    /// server (normally the redirect to the client), or the page it stopped at.
    pub fn authorize(&mut self, path: &str) -> Response {
        self.authorize_answering(path, true)
    }

    /// As [`Browser::authorize`], approving or denying at the consent page.
    pub fn authorize_answering(&mut self, path: &str, approve: bool) -> Response {
        let r = self.send("GET", path, None);
        let page = self.follow(r);
        if page.status != 200 {
            return page;
        }
        let page = match login_form(&page) {
            Some(login) => {
                let (u, p) = self.user.clone();
                self.submit(&login, &[("username", &u), ("password", &p)], None)
            }
            None => page,
        };
        if page.status != 200 {
            return page;
        }
        match consent_form(&page, approve) {
            Some((f, i)) => self.submit(&f, &[], Some(i)),
            None => page,
        }
    }
}

/// The sign-in form on a page: the one with a password field.
pub fn login_form(page: &Response) -> Option<HtmlForm> {
    forms(&page.body)
        .into_iter()
        .find(|f| f.fields.iter().any(|(n, _)| n == "password"))
}

/// The consent form on a page and the index of its button that approves (or denies).
pub fn consent_form(page: &Response, approve: bool) -> Option<(HtmlForm, usize)> {
    let words: &[&str] = if approve {
        &["approve", "allow", "accept", "grant"]
    } else {
        &["deny", "refuse", "reject", "cancel"]
    };
    forms(&page.body).into_iter().find_map(|f| {
        let button = f.buttons.iter().position(|(n, v, l)| {
            let s = format!("{n} {v} {l}").to_ascii_lowercase();
            words.iter().any(|w| s.contains(w))
        })?;
        Some((f, button))
    })
}

fn form_body(fields: &[(String, String)]) -> String {
    form(fields)
}

/// The parameters of a redirect to the client: its query and its fragment.
#[derive(Debug, Clone, Default)]
pub struct Callback {
    pub location: String,
    pub query: Vec<(String, String)>,
    pub fragment: Vec<(String, String)>,
}

impl Callback {
    /// A redirect (3xx) to `redirect_uri`, parsed; `None` for anything else.
    pub fn of(r: &Response, redirect_uri: &str) -> Option<Callback> {
        if !(300..400).contains(&r.status) {
            return None;
        }
        let location = r.header("location")?;
        if !location.starts_with(redirect_uri) {
            return None;
        }
        let u = url::Url::parse(location).ok()?;
        Some(Callback {
            location: location.to_owned(),
            query: u.query_pairs().into_owned().collect(),
            fragment: u
                .fragment()
                .map(|f| {
                    url::form_urlencoded::parse(f.as_bytes())
                        .into_owned()
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    pub fn in_query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn in_fragment(&self, name: &str) -> Option<&str> {
        self.fragment
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// From the fragment if there is one, else from the query.
    pub fn get(&self, name: &str) -> Option<&str> {
        if self.fragment.is_empty() {
            self.in_query(name)
        } else {
            self.in_fragment(name)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The flows.

/// A front channel run to the client's redirect_uri.
pub struct Flow {
    pub request: AuthzRequest,
    pub request_uri: String,
    pub expires_in: i64,
    pub callback: Callback,
    /// The code, from the fragment for `code id_token`, else from the query.
    pub code: String,
}

/// PAR, then the browser (sign-in and consent as needed): the code, not yet redeemed.
pub fn front_channel(
    fapi: &Fapi,
    browser: &mut Browser,
    client: &FapiClient,
    request: AuthzRequest,
) -> Result<Flow, String> {
    let (request_uri, expires_in) = pushed(&request.push(&fapi.server, client))?;
    let back = browser.authorize(&authorize_path(&client.id, &request_uri));
    let callback = Callback::of(&back, &client.redirect_uri)
        .ok_or_else(|| format!("no redirect to the client: {} {}", back.status, back.body))?;
    if callback.get("error").is_some() {
        return Err(format!("authorization error: {}", callback.location));
    }
    let hybrid = request.param("response_type") == Some("code id_token");
    let code = if hybrid {
        callback.in_fragment("code")
    } else {
        callback.in_query("code")
    }
    .ok_or_else(|| format!("no code where it belongs: {}", callback.location))?
    .to_owned();
    Ok(Flow {
        request,
        request_uri,
        expires_in,
        callback,
        code,
    })
}

/// The parameters of the token request for a flow's code (without client authentication).
pub fn code_grant(client: &FapiClient, flow: &Flow) -> Vec<(String, String)> {
    pairs(&[
        ("grant_type", "authorization_code"),
        ("code", &flow.code),
        ("redirect_uri", &client.redirect_uri),
        ("code_verifier", &flow.request.pkce.verifier),
    ])
}

/// The token request for a code (on the mTLS listener, with the client's certificate).
pub fn redeem(fapi: &Fapi, client: &FapiClient, flow: &Flow) -> Response {
    client.post(&fapi.server, "/token", &code_grant(client, flow))
}

/// The level's whole flow: the front channel, then the token response (200 checked).
pub fn tokens(
    fapi: &Fapi,
    browser: &mut Browser,
    client: &FapiClient,
) -> Result<(Flow, Value), String> {
    let request = AuthzRequest::for_client(&fapi.server, client);
    let flow = front_channel(fapi, browser, client, request)?;
    let r = redeem(fapi, client, &flow);
    if r.status != 200 {
        return Err(format!("token: {} {}", r.status, r.body));
    }
    Ok((flow, r.json()))
}

/// Where a /userinfo call carries its access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenIn {
    /// `Authorization: Bearer` (GET).
    Header,
    /// `?access_token=` (GET).
    Query,
    /// `access_token=` in a form body (POST).
    Body,
}

/// The `Authorization: Bearer` header.
pub fn bearer(token: &str) -> (String, String) {
    ("Authorization".to_owned(), format!("Bearer {token}"))
}

/// A GET with `Authorization: Bearer` (and a client certificate when given).
pub fn bearer_get(port: u16, path: &str, token: &str, identity: Identity<'_>) -> Response {
    send(port, "GET", path, &[bearer(token)], None, identity)
}

/// /userinfo on the mTLS listener with the client's certificate.
pub fn userinfo(
    fapi: &Fapi,
    client: &FapiClient,
    token: &str,
    how: TokenIn,
    headers: &[(String, String)],
) -> Response {
    let mut h = headers.to_vec();
    let port = fapi.server.mtls_port;
    match how {
        TokenIn::Header => {
            h.push(bearer(token));
            send(port, "GET", "/userinfo", &h, None, client.identity())
        }
        TokenIn::Query => send(
            port,
            "GET",
            &format!("/userinfo?access_token={}", enc(token)),
            &h,
            None,
            client.identity(),
        ),
        TokenIn::Body => send(
            port,
            "POST",
            "/userinfo",
            &h,
            Some((
                "application/x-www-form-urlencoded",
                &format!("access_token={}", enc(token)),
            )),
            client.identity(),
        ),
    }
}
