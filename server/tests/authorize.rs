//! Black-box: the front channel of the code flow on the real `strongroom serve` — PAR
//! (RFC 9126), /authorize, the login and consent pages, and the code response with `state` and
//! `iss` (RFC 9207) — driven like a browser over real HTTPS, with the cookies carried by hand.
//! Then the front channel's defences: failed logins per interaction, the bound on concurrent
//! password checks, POST /authorize, the interaction and session rotated at sign-in, and the
//! server's own failures answered to the client once its redirect_uri is trusted. Last, the
//! login page's Cancel: `access_denied` with `state` and `iss` (query or fragment), the same
//! CSRF checks as a sign-in, and a cancelled interaction that nothing can use again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;

use base64::Engine as _;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use serde_json::{Value, json};

const CB: &str = "https://rp.example/cb";
const CB_WITH_QUERY: &str = "https://rp.example/cb2?tenant=a%20b";

/// A response with its headers as sent (the harness lowercases them, which would spoil cookie
/// values and codes).
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn location(&self) -> &str {
        assert_eq!(
            self.status, 303,
            "not a redirect: {} {}",
            self.status, self.body
        );
        self.header("location").unwrap()
    }

    /// The query of a redirect to the client, as a map.
    fn client_query(&self) -> HashMap<String, String> {
        let url = url::Url::parse(self.location()).unwrap();
        url.query_pairs().into_owned().collect()
    }

    /// The value of the hidden csrf field of a page.
    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("no csrf field") + marker.len();
        let len = self.body[start..].find('"').unwrap();
        self.body[start..start + len].to_owned()
    }

    /// An HTML page of ours: escaped, script-free, and sent with the protective headers.
    fn assert_page(&self, status: u16) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(
            !self.body.to_lowercase().contains("<script"),
            "{}",
            self.body
        );
        let csp = self.header("content-security-policy").unwrap();
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(self.header("x-frame-options"), Some("DENY"));
        assert_eq!(self.header("cache-control"), Some("no-store"));
    }

    /// An error page (never a redirect) naming `code`.
    fn assert_error_page(&self, code: &str) {
        self.assert_page(400);
        assert!(self.header("location").is_none());
        assert!(
            self.body.contains(&format!("<code>{code}</code>")),
            "{}",
            self.body
        );
    }
}

fn fetch(port: u16, raw_request: &str) -> Resp {
    exchange(connect(port), raw_request)
}

/// A TLS connection to the server, handshake done.
fn connect(port: u16) -> openssl::ssl::SslStream<TcpStream> {
    let mut connector = SslConnector::builder(SslMethod::tls_client()).unwrap();
    connector.set_verify(SslVerifyMode::NONE);
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    connector.build().connect("localhost", tcp).unwrap()
}

/// Sends one request (Connection: close) and reads the whole answer.
fn exchange(mut tls: openssl::ssl::SslStream<TcpStream>, raw_request: &str) -> Resp {
    // A server may answer (413) and close before an oversized body is fully written: the
    // write then fails, and the answer is still there to read.
    let _ = tls.write_all(raw_request.as_bytes());
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    Resp {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A browser: keeps the cookies the server sets and sends them back.
struct Browser {
    port: u16,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn new(port: u16) -> Self {
        Browser {
            port,
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        if self.cookies.is_empty() {
            return String::new();
        }
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("Cookie: {}\r\n", pairs.join("; "))
    }

    fn absorb(&mut self, resp: &Resp) {
        for c in resp.set_cookies() {
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (name, value) = pair.split_once('=').unwrap();
            // Every cookie of ours is a __Host- cookie with these attributes.
            assert!(name.starts_with("__Host-strongroom-"), "{c}");
            for a in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
                assert!(attrs.split(';').any(|x| x.trim() == a), "{a} missing: {c}");
            }
            if value.is_empty() || attrs.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    fn get(&mut self, path: &str) -> Resp {
        let raw = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{}\r\n",
            self.cookie_header()
        );
        let resp = fetch(self.port, &raw);
        self.absorb(&resp);
        resp
    }

    fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Resp {
        let body = serde_urlencoded::to_string(form).unwrap();
        let raw = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{}\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            self.cookie_header(),
            body.len()
        );
        let resp = fetch(self.port, &raw);
        self.absorb(&resp);
        resp
    }

    /// Follows a redirect within the server.
    fn follow(&mut self, resp: &Resp) -> Resp {
        let location = resp.location().to_owned();
        assert!(location.starts_with('/'), "leaves the server: {location}");
        self.get(&location)
    }

    fn has(&self, cookie: &str) -> bool {
        self.cookies.contains_key(cookie)
    }
}

const INTERACTION: &str = "__Host-strongroom-interaction";
const SESSION: &str = "__Host-strongroom-session";

/// A private_key_jwt client for the code flow, registered through the CLI.
fn register_web_client(server: &Server, extra: Value) -> (String, jsonwebtoken::EncodingKey) {
    let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let jwk = json!({
        "kty": "RSA", "kid": "client-key-1", "use": "sig", "alg": "PS256",
        "n": b64(rsa.n().to_vec()), "e": b64(rsa.e().to_vec()),
    });
    let mut metadata = json!({
        "client_name": "Rabbit <Hole> & Co",
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [jwk]},
        "redirect_uris": [CB, CB_WITH_QUERY],
        "grant_types": ["authorization_code"],
        "scope": "accounts payments",
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            metadata.as_object_mut().unwrap().remove(k);
        } else {
            metadata[k] = v.clone();
        }
    }
    let client_id = create_client(server, &metadata);
    let key = jsonwebtoken::EncodingKey::from_rsa_der(&rsa.private_key_to_der().unwrap());
    (client_id, key)
}

/// Writes a user straight into the server's SQLite file, with an argon2id PHC hash made here
/// by the `argon2` crate (as store/users.rs makes them). The binary is the only way in and its
/// `users create` command is being added in parallel; the users table comes from the server's
/// own migration, so this runs once the server has started (the file is in WAL mode, so the
/// write goes in beside the running server). Returns the user_id.
fn add_user(server: &Server, username: &str, password: &str) -> String {
    use argon2::PasswordHasher as _;
    let mut salt = [0u8; 16];
    openssl::rand::rand_bytes(&mut salt).unwrap();
    let salt = argon2::password_hash::SaltString::encode_b64(&salt).unwrap();
    let phc = argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string();
    let user_id = format!("user-{username}");
    let db = server.dir.path().join("strongroom.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection as _;
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .busy_timeout(std::time::Duration::from_secs(10));
        let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        sqlx::query(
            "INSERT INTO users (user_id, username, password_hash, claims, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&user_id)
        .bind(username)
        .bind(phc)
        .bind(json!({"name": "Alice Liddell"}).to_string())
        .bind(0i64)
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    });
    user_id
}

/// What the server stored for a code: found by the code's SHA-256 (computed here with
/// OpenSSL), as the store keeps it.
fn stored_code(server: &Server, code: &str) -> (String, Value) {
    let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(openssl::sha::sha256(code.as_bytes()));
    let (rt, mut conn) = read_db(server);
    rt.block_on(async {
        use sqlx::Row as _;
        let row =
            sqlx::query("SELECT client_id, data FROM authorization_codes WHERE code_hash = $1")
                .bind(hash)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        let data: String = row.get("data");
        (row.get("client_id"), serde_json::from_str(&data).unwrap())
    })
}

/// RFC 7636 S256, computed with OpenSSL.
fn pkce() -> (String, String) {
    let mut bytes = [0u8; 32];
    openssl::rand::rand_bytes(&mut bytes).unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let verifier = b64.encode(bytes);
    let challenge = b64.encode(openssl::sha::sha256(verifier.as_bytes()));
    (verifier, challenge)
}

/// Parameters to change in a push: `None` drops a default one.
type Params<'a> = &'a [(&'a str, Option<&'a str>)];

struct Rp<'a> {
    server: &'a Server,
    client_id: String,
    key: jsonwebtoken::EncodingKey,
    jti: std::cell::Cell<u32>,
}

impl Rp<'_> {
    fn issuer(&self) -> String {
        format!("https://localhost:{}", self.server.port)
    }

    /// POST /par with a fresh client assertion and `params` (None drops a default one).
    fn push_raw(&self, params: &[(&str, Option<&str>)], authenticate: bool) -> Resp {
        let (_, challenge) = pkce();
        let mut form: Vec<(String, String)> = [
            ("client_id", self.client_id.as_str()),
            ("response_type", "code"),
            ("redirect_uri", CB),
            ("scope", "openid accounts"),
            ("state", "st-1"),
            ("nonce", "n-1"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .filter(|(k, _)| !params.iter().any(|(p, _)| p == k))
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (k, v) in params {
            if let Some(v) = v {
                form.push(((*k).to_owned(), (*v).to_owned()));
            }
        }
        if authenticate {
            self.jti.set(self.jti.get() + 1);
            let a = assertion(
                &self.client_id,
                &self.issuer(),
                &self.key,
                &format!("jti-{}-{}", self.jti.get(), rand_serial()),
            );
            form.push((
                "client_assertion_type".into(),
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
            ));
            form.push(("client_assertion".into(), a));
        }
        let body = serde_urlencoded::to_string(&form).unwrap();
        fetch(
            self.server.port,
            &format!(
                "POST /par HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
    }

    /// A successful push; returns the request_uri.
    fn push(&self, params: &[(&str, Option<&str>)]) -> String {
        let resp = self.push_raw(params, true);
        assert_eq!(resp.status, 201, "{}", resp.body);
        let v: Value = serde_json::from_str(&resp.body).unwrap();
        v["request_uri"].as_str().unwrap().to_owned()
    }

    fn authorize_path(&self, request_uri: &str) -> String {
        format!(
            "/authorize?{}",
            serde_urlencoded::to_string([
                ("client_id", self.client_id.as_str()),
                ("request_uri", request_uri),
            ])
            .unwrap()
        )
    }

    /// A redirect back to the client with a code: checks state and iss, returns the code.
    fn code_of(&self, resp: &Resp, redirect_uri: &str, state: &str) -> String {
        let location = resp.location();
        assert!(
            location.starts_with(&format!(
                "{redirect_uri}{}",
                if redirect_uri.contains('?') { "&" } else { "?" }
            )),
            "{location}"
        );
        let q = resp.client_query();
        assert_eq!(
            q.get("state").map(String::as_str),
            Some(state),
            "{location}"
        );
        assert_eq!(q.get("iss"), Some(&self.issuer()), "{location}");
        assert!(!q.contains_key("error"), "{location}");
        q["code"].clone()
    }

    fn error_of(&self, resp: &Resp, state: Option<&str>) -> String {
        let q = resp.client_query();
        assert!(resp.location().starts_with(CB), "{}", resp.location());
        assert_eq!(q.get("state").map(String::as_str), state);
        assert_eq!(q.get("iss"), Some(&self.issuer()));
        assert!(q.contains_key("error_description"));
        assert!(!q.contains_key("code"));
        q["error"].clone()
    }
}

fn oauth_error(resp: &Resp) -> String {
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    error_code(&resp.body)
}

#[test]
fn pushed_request_login_consent_and_code_with_the_errors_around_them() {
    let server = start();
    let (client_id, key) = register_web_client(&server, json!({}));
    let rp = Rp {
        server: &server,
        client_id,
        key,
        jti: Default::default(),
    };
    let alice = add_user(&server, "alice", "correct horse battery");

    // PAR refusals: JSON OAuth errors.
    let cases: [(Params, &str); 7] = [
        (
            &[("request_uri", Some("urn:ietf:params:oauth:request_uri:x"))],
            "invalid_request",
        ),
        (&[("redirect_uri", None)], "invalid_request"),
        (
            &[("redirect_uri", Some("https://rp.example/elsewhere"))],
            "invalid_request",
        ),
        (&[("code_challenge", None)], "invalid_request"),
        (
            &[("code_challenge_method", Some("plain"))],
            "invalid_request",
        ),
        (&[("scope", Some("openid admin"))], "invalid_scope"),
        (
            &[(
                "authorization_details",
                Some(r#"[{"type":"payment_initiation"}]"#),
            )],
            "invalid_authorization_details",
        ),
    ];
    for (params, expected) in cases {
        let resp = rp.push_raw(params, true);
        assert_eq!(resp.status, 400, "{params:?}: {}", resp.body);
        assert_eq!(oauth_error(&resp), expected, "{params:?}");
    }
    let resp = rp.push_raw(&[("code_challenge_method", None)], true);
    assert_eq!(oauth_error(&resp), "invalid_request", "method missing");
    let resp = rp.push_raw(&[], false);
    assert_eq!(resp.status, 401, "{}", resp.body);
    assert_eq!(oauth_error(&resp), "invalid_client");

    // PAR: 201 with a one-time URN.
    let resp = rp.push_raw(&[], true);
    assert_eq!(resp.status, 201, "{}", resp.body);
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let pushed: Value = serde_json::from_str(&resp.body).unwrap();
    let request_uri = pushed["request_uri"].as_str().unwrap().to_owned();
    assert!(request_uri.starts_with("urn:ietf:params:oauth:request_uri:"));
    assert!(request_uri.len() > "urn:ietf:params:oauth:request_uri:".len() + 30);
    assert_eq!(pushed["expires_in"], 60);

    // The browser arrives: an interaction cookie, then the login page.
    let mut browser = Browser::new(server.port);
    let resp = browser.get(&rp.authorize_path(&request_uri));
    assert_eq!(resp.location(), "/authorize/login");
    assert!(browser.has(INTERACTION));
    let login = browser.follow(&resp);
    login.assert_page(200);
    for field in [
        "name=\"username\"",
        "name=\"password\"",
        "type=\"password\"",
    ] {
        assert!(login.body.contains(field), "{field}: {}", login.body);
    }
    assert!(login.body.contains("action=\"/authorize/login\""));
    // The client's name is escaped.
    assert!(
        login.body.contains("Rabbit &lt;Hole&gt; &amp; Co"),
        "{}",
        login.body
    );
    let csrf = login.csrf();
    assert_eq!(csrf.len(), 43);

    // Visiting the request_uri again before it has authorized anything (a reload, a second
    // tab, a link scanner) is no error: it is spent at the point of authorization (FAPI 2.0
    // SP §5.3.2.2; RFC 9126 §4 allows duplicates for reloads).
    let mut second_tab = Browser::new(server.port);
    let resp = second_tab.get(&rp.authorize_path(&request_uri));
    assert_eq!(resp.location(), "/authorize/login");
    let second_login = second_tab.follow(&resp);
    second_login.assert_page(200);
    assert_ne!(second_login.csrf(), csrf, "an interaction of its own");
    let mut other = Browser::new(server.port);

    // Login posts without the right csrf, or without the interaction cookie: 400 pages.
    let good = [
        ("username", "alice"),
        ("password", "correct horse battery"),
        ("csrf", csrf.as_str()),
    ];
    browser
        .post("/authorize/login", &good[..2])
        .assert_error_page("invalid_request");
    browser
        .post(
            "/authorize/login",
            &[
                good[0],
                good[1],
                ("csrf", "forged-csrf-token-forged-csrf-token-forged"),
            ],
        )
        .assert_error_page("invalid_request");
    other
        .post("/authorize/login", &good)
        .assert_error_page("invalid_request");
    assert!(!browser.has(SESSION) && !other.has(SESSION));

    // A wrong password: the login page again, no session, the password not echoed.
    let resp = browser.post(
        "/authorize/login",
        &[good[0], ("password", "Tr0ub4dor&3"), good[2]],
    );
    resp.assert_page(401);
    assert!(resp.body.contains("incorrect"), "{}", resp.body);
    assert!(!resp.body.contains("Tr0ub4dor"));
    assert!(resp.set_cookies().is_empty());
    assert_eq!(resp.csrf(), csrf, "the interaction is unchanged");
    let resp = browser.post(
        "/authorize/login",
        &[("username", "mallory"), good[1], good[2]],
    );
    resp.assert_page(401);

    // The right password: a session, then the consent page.
    let resp = browser.post("/authorize/login", &good);
    assert_eq!(resp.location(), "/authorize/consent");
    assert!(browser.has(SESSION));
    let consent = browser.follow(&resp);
    consent.assert_page(200);
    assert!(consent.body.contains("Rabbit &lt;Hole&gt; &amp; Co"));
    assert!(consent.body.contains("<code>openid</code>"));
    assert!(consent.body.contains("<code>accounts</code>"));
    assert!(consent.body.contains("action=\"/authorize/consent\""));
    let csp = consent.header("content-security-policy").unwrap();
    assert!(
        csp.contains("form-action 'self' https://rp.example"),
        "{csp}"
    );
    // Signing in rotated the interaction: a new CSRF token too.
    assert_ne!(consent.csrf(), csrf);
    assert_eq!(consent.csrf().len(), 43);
    let csrf = consent.csrf();

    // A consent post with a forged csrf changes nothing; the real one yields the code.
    browser
        .post(
            "/authorize/consent",
            &[("decision", "approve"), ("csrf", "forged")],
        )
        .assert_error_page("invalid_request");
    let approve = [("decision", "approve"), ("csrf", csrf.as_str())];
    let resp = browser.post("/authorize/consent", &approve);
    let code = rp.code_of(&resp, CB, "st-1");
    assert_eq!(code.len(), 43);
    assert!(
        !browser.has(INTERACTION),
        "the interaction cookie is cleared"
    );
    let (owner, grant) = stored_code(&server, &code);
    assert_eq!(owner, rp.client_id);
    assert_eq!(grant["sub"], alice);
    assert_eq!(grant["scope"], "openid accounts");
    assert_eq!(grant["redirect_uri"], CB);
    assert_eq!(grant["code_challenge_method"], "S256");
    assert_eq!(grant["code_challenge"].as_str().unwrap().len(), 43);
    assert_eq!(grant["nonce"], "n-1");
    assert_eq!(grant["acr"], "urn:strongroom:acr:password");
    assert!(grant["auth_time"].as_i64().unwrap() > 1_700_000_000);
    // The interaction was single use.
    browser
        .post("/authorize/consent", &approve)
        .assert_error_page("invalid_request");
    // The code spent the request_uri: visiting it again is an error page, and the second tab,
    // signing in now (consent is remembered, so straight to the code), gets no code from it.
    let mut late = Browser::new(server.port);
    late.get(&rp.authorize_path(&request_uri))
        .assert_error_page("invalid_request_uri");
    assert!(!late.has(INTERACTION));
    let resp = second_tab.post(
        "/authorize/login",
        &[good[0], good[1], ("csrf", second_login.csrf().as_str())],
    );
    resp.assert_error_page("invalid_request_uri");
    assert_eq!(
        sql_count(&server, "SELECT COUNT(*) FROM authorization_codes"),
        1,
        "one code from one request_uri"
    );

    // Second flow, same browser, more scope: the session skips the login page, not consent.
    let uri = rp.push(&[
        ("scope", Some("openid accounts payments")),
        ("state", Some("st-2")),
    ]);
    let resp = browser.get(&rp.authorize_path(&uri));
    assert_eq!(resp.location(), "/authorize/consent");
    let consent = browser.follow(&resp);
    consent.assert_page(200);
    assert!(consent.body.contains("<code>payments</code>"));
    // Deny: access_denied back to the client, with state and iss.
    let resp = browser.post(
        "/authorize/consent",
        &[("decision", "deny"), ("csrf", consent.csrf().as_str())],
    );
    assert_eq!(rp.error_of(&resp, Some("st-2")), "access_denied");
    assert!(!browser.has(INTERACTION));

    // Third flow: session and remembered consent: straight back with a code, to a redirect_uri
    // that has a query of its own (kept, and added to).
    let uri = rp.push(&[
        ("redirect_uri", Some(CB_WITH_QUERY)),
        ("state", Some("s t&3")),
    ]);
    let resp = browser.get(&rp.authorize_path(&uri));
    let code = rp.code_of(&resp, CB_WITH_QUERY, "s t&3");
    assert_eq!(resp.client_query()["tenant"], "a b");
    assert_eq!(stored_code(&server, &code).1["redirect_uri"], CB_WITH_QUERY);

    // prompt=consent shows the page even so; prompt=login the login page.
    let uri = rp.push(&[("prompt", Some("consent"))]);
    assert_eq!(
        browser.get(&rp.authorize_path(&uri)).location(),
        "/authorize/consent"
    );
    let uri = rp.push(&[("prompt", Some("login"))]);
    assert_eq!(
        browser.get(&rp.authorize_path(&uri)).location(),
        "/authorize/login"
    );

    // prompt=none: consent_required where consent was denied, login_required with no session.
    let uri = rp.push(&[
        ("prompt", Some("none")),
        ("scope", Some("openid payments")),
        ("state", Some("st-4")),
    ]);
    let resp = browser.get(&rp.authorize_path(&uri));
    assert_eq!(rp.error_of(&resp, Some("st-4")), "consent_required");
    let uri = rp.push(&[("prompt", Some("none")), ("state", Some("st-5"))]);
    let resp = Browser::new(server.port).get(&rp.authorize_path(&uri));
    assert_eq!(rp.error_of(&resp, Some("st-5")), "login_required");
    let uri = rp.push(&[("prompt", Some("none")), ("state", Some("st-6"))]);
    let code = rp.code_of(&browser.get(&rp.authorize_path(&uri)), CB, "st-6");
    assert_eq!(stored_code(&server, &code).1["sub"], alice);

    // A new browser with remembered consent: after the login, straight back with a code.
    let mut fresh = Browser::new(server.port);
    let uri = rp.push(&[("state", Some("st-7"))]);
    let resp = fresh.get(&rp.authorize_path(&uri));
    let login = fresh.follow(&resp);
    let resp = fresh.post(
        "/authorize/login",
        &[good[0], good[1], ("csrf", login.csrf().as_str())],
    );
    rp.code_of(&resp, CB, "st-7");
    assert!(fresh.has(SESSION) && !fresh.has(INTERACTION));

    // Another client cannot use this client's request_uri (nor consume it).
    let (other_client, _) = register_web_client(&server, json!({"client_name": "other"}));
    let uri = rp.push(&[("state", Some("st-8"))]);
    let path = format!(
        "/authorize?{}",
        serde_urlencoded::to_string([("client_id", other_client.as_str()), ("request_uri", &uri)])
            .unwrap()
    );
    Browser::new(server.port)
        .get(&path)
        .assert_error_page("invalid_request_uri");
    let resp = browser.get(&rp.authorize_path(&uri));
    rp.code_of(&resp, CB, "st-8");
}

#[test]
fn an_expired_request_uri_is_refused() {
    let server = start_with("par_lifetime_seconds = 1", |_| {});
    let (client_id, key) = register_web_client(&server, json!({}));
    let rp = Rp {
        server: &server,
        client_id,
        key,
        jti: Default::default(),
    };
    let resp = rp.push_raw(&[], true);
    assert_eq!(resp.status, 201, "{}", resp.body);
    let pushed: Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(pushed["expires_in"], 1);
    std::thread::sleep(std::time::Duration::from_secs(2));
    Browser::new(server.port)
        .get(&rp.authorize_path(pushed["request_uri"].as_str().unwrap()))
        .assert_error_page("invalid_request_uri");
}

#[test]
fn plain_authorization_requests_error_pages_and_discovery() {
    let server = start();
    let (client_id, key) = register_web_client(&server, json!({}));
    let rp = Rp {
        server: &server,
        client_id: client_id.clone(),
        key,
        jti: Default::default(),
    };
    let (_, challenge) = pkce();
    let query = |extra: &[(&str, &str)], client: &str| {
        let mut q: Vec<(&str, &str)> = vec![
            ("client_id", client),
            ("response_type", "code"),
            ("redirect_uri", CB),
            ("scope", "openid"),
            ("state", "plain-1"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ];
        q.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        q.extend_from_slice(extra);
        format!("/authorize?{}", serde_urlencoded::to_string(&q).unwrap())
    };

    // A client that need not push may send the parameters in the query.
    let mut browser = Browser::new(server.port);
    let resp = browser.get(&query(&[], &client_id));
    assert_eq!(resp.location(), "/authorize/login");
    browser.follow(&resp).assert_page(200);

    // Errors before the redirect_uri is trusted: pages, never redirects.
    let mut b = Browser::new(server.port);
    b.get(&query(&[], "no-such-client"))
        .assert_error_page("invalid_request");
    b.get("/authorize?response_type=code")
        .assert_error_page("invalid_request");
    b.get(&query(
        &[("redirect_uri", "https://attacker.example/cb")],
        &client_id,
    ))
    .assert_error_page("invalid_request");
    b.get(&query(&[("redirect_uri", "")], &client_id))
        .assert_error_page("invalid_request");
    b.get("/authorize/login")
        .assert_error_page("invalid_request");
    b.get("/authorize/consent")
        .assert_error_page("invalid_request");
    assert!(b.cookies.is_empty());

    // After it: redirected to the client, with state and iss.
    for (extra, expected) in [
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (vec![("scope", "openid admin")], "invalid_scope"),
        (vec![("prompt", "none login")], "invalid_request"),
    ] {
        let resp = b.get(&query(&extra, &client_id));
        assert_eq!(rp.error_of(&resp, Some("plain-1")), expected, "{extra:?}");
    }
    // A request object (RFC 9101) that does not verify: nothing in it is trusted, not even its
    // redirect_uri, so a page.
    b.get(&query(
        &[("request", "eyJhbGciOiJub25lIn0.e30.")],
        &client_id,
    ))
    .assert_error_page("invalid_request_object");

    // An over-long state: a redirect without it could not be matched by the client (RFC 6749
    // §4.1.2.1), and with it could outgrow a proxy's header buffer; refused with a page.
    let long = "s".repeat(600);
    b.get(&query(&[("state", &long)], &client_id))
        .assert_error_page("invalid_request");

    // A client that must push: the plain request goes back as invalid_request.
    let (must_push, _) = register_web_client(
        &server,
        json!({"require_pushed_authorization_requests": true}),
    );
    let resp = b.get(&query(&[], &must_push));
    assert_eq!(rp.error_of(&resp, Some("plain-1")), "invalid_request");
    assert!(resp.client_query()["error_description"].contains("pushed"));
    // Its request object by value, with no redirect_uri beside it (as FAPI 1 clients send
    // them): nowhere trusted to redirect, and the page says why it is refused: not the missing
    // redirect_uri of an object it will not open.
    let resp = b.get(&format!(
        "/authorize?client_id={must_push}&request=eyJhbGciOiJQUzI1NiJ9.e30.c2ln"
    ));
    resp.assert_error_page("invalid_request");
    assert!(resp.body.contains("pushed"), "{}", resp.body);

    // Discovery advertises the front channel truthfully.
    let (_, _, body) = get(server.port, "/.well-known/openid-configuration");
    let d: Value = serde_json::from_str(&body).unwrap();
    let issuer = rp.issuer();
    assert_eq!(d["authorization_endpoint"], format!("{issuer}/authorize"));
    assert_eq!(
        d["pushed_authorization_request_endpoint"],
        format!("{issuer}/par")
    );
    assert_eq!(
        d["mtls_endpoint_aliases"]["pushed_authorization_request_endpoint"],
        format!("https://localhost:{}/par", server.mtls_port)
    );
    assert_eq!(
        d["response_types_supported"],
        json!(["code", "code id_token"])
    );
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    assert_eq!(d["request_uri_parameter_supported"], false);
    assert_eq!(d["request_parameter_supported"], true);
    assert_eq!(
        d["scopes_supported"],
        json!([
            "openid",
            "profile",
            "email",
            "address",
            "phone",
            "offline_access"
        ])
    );
    assert_eq!(
        d["acr_values_supported"],
        json!(["urn:strongroom:acr:password"])
    );

    // PAR on the mTLS listener answers too (here without a certificate: the client is a
    // private_key_jwt one, which may use either listener).
    let (_, challenge2) = pkce();
    let a = assertion(&client_id, &issuer, &rp.key, "mtls-listener-jti");
    let body = serde_urlencoded::to_string([
        ("client_id", client_id.as_str()),
        ("response_type", "code"),
        ("redirect_uri", CB),
        ("code_challenge", &challenge2),
        ("code_challenge_method", "S256"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", &a),
    ])
    .unwrap();
    let resp = fetch(
        server.mtls_port,
        &format!(
            "POST /par HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(resp.status, 201, "{}", resp.body);
}

// ---- Hardening of the front channel ----------------------------------------------------------

/// Runs one SQL statement on the server's database beside the running server (WAL mode). A
/// trigger that aborts writes to one table is how these tests make the store fail.
fn sql(server: &Server, statement: &str) {
    let db = server.dir.path().join("strongroom.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection as _;
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .busy_timeout(std::time::Duration::from_secs(10));
        let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    });
}

/// The number a `SELECT COUNT(*) …` finds in the server's database.
fn sql_count(server: &Server, query: &str) -> i64 {
    let (rt, mut conn) = read_db(server);
    rt.block_on(sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned())).fetch_one(&mut conn))
        .unwrap()
}

/// A read-only connection to the server's database, and the runtime to drive it with.
fn read_db(server: &Server) -> (tokio::runtime::Runtime, sqlx::SqliteConnection) {
    use sqlx::Connection as _;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(server.dir.path().join("strongroom.db"))
        .read_only(true);
    let conn = rt
        .block_on(sqlx::SqliteConnection::connect_with(&opts))
        .unwrap();
    (rt, conn)
}

/// A trigger making every `event` (INSERT, UPDATE, DELETE) on `table` fail.
fn break_table(server: &Server, event: &str, table: &str) {
    sql(
        server,
        &format!(
            "CREATE TRIGGER broken_{table} BEFORE {event} ON {table} \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        ),
    );
}

fn mend_table(server: &Server, table: &str) {
    sql(server, &format!("DROP TRIGGER broken_{table}"));
}

/// The parameters of a plain (not pushed) authorization request; `extra` replaces or adds.
fn plain_params<'a>(
    client_id: &'a str,
    challenge: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut q: Vec<(&str, &str)> = vec![
        ("client_id", client_id),
        ("response_type", "code"),
        ("redirect_uri", CB),
        ("scope", "openid accounts"),
        ("state", "plain-1"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ];
    q.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    q.extend_from_slice(extra);
    q
}

fn plain_path(client_id: &str, challenge: &str, extra: &[(&str, &str)]) -> String {
    format!(
        "/authorize?{}",
        serde_urlencoded::to_string(plain_params(client_id, challenge, extra)).unwrap()
    )
}

/// A browser whose only cookie is `name=value` (a stolen or planted one).
fn browser_with(port: u16, name: &str, value: &str) -> Browser {
    let mut b = Browser::new(port);
    b.cookies.insert(name.to_owned(), value.to_owned());
    b
}

/// Posts `password` for alice on the browser's current login page.
fn sign_in(browser: &mut Browser, password: &str) -> Resp {
    let login = browser.get("/authorize/login");
    login.assert_page(200);
    browser.post(
        "/authorize/login",
        &[
            ("username", "alice"),
            ("password", password),
            ("csrf", login.csrf().as_str()),
        ],
    )
}

/// Signs alice in on the browser's current login page and approves on the consent page that
/// follows: the answer to the approval.
fn sign_in_and_approve(browser: &mut Browser, password: &str) -> Resp {
    let resp = sign_in(browser, password);
    let consent = browser.follow(&resp);
    browser.post(
        "/authorize/consent",
        &[("decision", "approve"), ("csrf", consent.csrf().as_str())],
    )
}

fn rp_for(server: &Server, extra: Value) -> Rp<'_> {
    let (client_id, key) = register_web_client(server, extra);
    Rp {
        server,
        client_id,
        key,
        jti: Default::default(),
    }
}

#[test]
fn five_failed_logins_end_the_interaction_and_the_client_hears_access_denied() {
    let server = start();
    let rp = rp_for(&server, json!({}));
    add_user(&server, "alice", "correct horse battery");
    let (_, challenge) = pkce();
    let path = plain_path(&rp.client_id, &challenge, &[]);

    // Four failures and then the right password: signed in (the count is per interaction and
    // the fifth attempt is still allowed).
    let mut browser = Browser::new(server.port);
    browser.get(&path);
    for _ in 0..4 {
        let resp = sign_in(&mut browser, "wrong");
        resp.assert_page(401);
        assert!(resp.body.contains("The username or password is incorrect."));
    }
    let resp = sign_in(&mut browser, "correct horse battery");
    assert_eq!(resp.location(), "/authorize/consent");

    // Five failures.
    let mut browser = Browser::new(server.port);
    browser.get(&path);
    let login = browser.get("/authorize/login");
    let csrf = login.csrf();
    let cookie = browser.cookies[INTERACTION].clone();
    let attempt = |b: &mut Browser, user: &str, password: &str| {
        b.post(
            "/authorize/login",
            &[
                ("username", user),
                ("password", password),
                ("csrf", csrf.as_str()),
            ],
        )
    };
    // Unknown usernames count the same: one generic message.
    for user in ["alice", "mallory", "alice", "bob"] {
        let resp = attempt(&mut browser, user, "wrong");
        resp.assert_page(401);
        assert!(resp.body.contains("The username or password is incorrect."));
    }
    // The fifth ends the request: the client hears access_denied (RFC 6749 §4.1.2.1), with
    // state and iss, as for Cancel.
    let resp = attempt(&mut browser, "alice", "wrong");
    assert_eq!(rp.error_of(&resp, Some("plain-1")), "access_denied");
    assert!(resp.client_query()["error_description"].contains("too many failed sign-in attempts"));
    assert!(
        !browser.has(INTERACTION),
        "the interaction cookie is cleared"
    );

    // The interaction is gone: even the right password, or its pages, get nothing.
    let mut replay = browser_with(server.port, INTERACTION, &cookie);
    attempt(&mut replay, "alice", "correct horse battery").assert_error_page("invalid_request");
    replay
        .get("/authorize/login")
        .assert_error_page("invalid_request");
    assert!(!replay.has(SESSION));

    // A fresh /authorize starts over.
    let mut browser = Browser::new(server.port);
    browser.get(&path);
    let resp = sign_in(&mut browser, "correct horse battery");
    assert_eq!(resp.location(), "/authorize/consent");
}

/// A `kB` figure of `/proc/<pid>/status` (`VmRSS:` now, `VmHWM:` the peak so far).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_flood_of_login_posts_runs_a_bounded_number_of_password_checks() {
    let server = start();
    let rp = rp_for(&server, json!({}));
    add_user(&server, "alice", "correct horse battery");
    let (_, challenge) = pkce();
    let path = plain_path(&rp.client_id, &challenge, &[]);
    let cpus = std::thread::available_parallelism().unwrap().get();
    let flood = (24 * cpus + 16).min(160);

    // Interactions with their CSRF tokens: four wrong passwords each (the fifth would end it).
    let interactions: Vec<(String, String)> = (0..flood.div_ceil(4))
        .map(|_| {
            let mut b = Browser::new(server.port);
            let resp = b.get(&path);
            let login = b.follow(&resp);
            (b.cookies[INTERACTION].clone(), login.csrf())
        })
        .collect();
    let request = |(cookie, csrf): &(String, String)| {
        let body = serde_urlencoded::to_string([
            ("username", "alice"),
            ("password", "wrong"),
            ("csrf", csrf.as_str()),
        ])
        .unwrap();
        format!(
            "POST /authorize/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Cookie: {INTERACTION}={cookie}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };

    // Every post is sent at once, on connections opened beforehand (so that the handshakes do
    // not spread the posts out). Each argon2id verification holds 19 MiB while it runs: without a limit they
    // all start together and the server's peak memory grows by about `flood` × 19 MiB. With
    // one verification per CPU at a time, only a few are live at once (what grows beyond them
    // is the allocator keeping freed blocks for its threads' next use).
    let connections: Vec<_> = (0..flood).map(|_| connect(server.port)).collect();
    let pid = server.child.id();
    let rss_before = status_kib(pid, "VmRSS:");
    let barrier = std::sync::Barrier::new(flood);
    std::thread::scope(|s| {
        let posts: Vec<_> = connections
            .into_iter()
            .enumerate()
            .map(|(i, tls)| {
                let (raw, barrier) = (request(&interactions[i / 4]), &barrier);
                s.spawn(move || {
                    barrier.wait();
                    exchange(tls, &raw).status
                })
            })
            .collect();
        for p in posts {
            assert_eq!(p.join().unwrap(), 401);
        }
    });
    let grown_mib = status_kib(pid, "VmHWM:").saturating_sub(rss_before) / 1024;
    let all_at_once_mib = flood as u64 * 19;
    eprintln!(
        "{flood} concurrent login posts on {cpus} CPUs: peak memory +{grown_mib} MiB \
         (all at once: ~{all_at_once_mib} MiB)"
    );
    assert!(
        grown_mib < all_at_once_mib / 2,
        "{flood} concurrent login posts on {cpus} CPUs grew the server's peak memory by \
         {grown_mib} MiB: the password checks ran all at once"
    );
}

#[test]
fn post_authorize_takes_the_same_parameters_as_a_form() {
    let server = start();
    let rp = rp_for(&server, json!({}));
    add_user(&server, "alice", "correct horse battery");
    let (_, challenge) = pkce();

    // The parameters in the body: the same walk as with GET, to the code.
    let mut browser = Browser::new(server.port);
    let params = plain_params(&rp.client_id, &challenge, &[("state", "posted")]);
    let resp = browser.post("/authorize", &params);
    assert_eq!(resp.location(), "/authorize/login");
    assert!(browser.has(INTERACTION));
    let resp = sign_in(&mut browser, "correct horse battery");
    let consent = browser.follow(&resp);
    consent.assert_page(200);
    let resp = browser.post(
        "/authorize/consent",
        &[("decision", "approve"), ("csrf", consent.csrf().as_str())],
    );
    let code = rp.code_of(&resp, CB, "posted");
    assert_eq!(stored_code(&server, &code).1["scope"], "openid accounts");

    // A pushed request by POST; the session and consent now skip both pages.
    let uri = rp.push(&[("state", Some("pushed-posted"))]);
    let resp = browser.post(
        "/authorize",
        &[("client_id", rp.client_id.as_str()), ("request_uri", &uri)],
    );
    rp.code_of(&resp, CB, "pushed-posted");

    // The same checks: after the redirect_uri, errors go back to the client...
    let params = plain_params(
        &rp.client_id,
        &challenge,
        &[("code_challenge_method", "plain")],
    );
    let resp = Browser::new(server.port).post("/authorize", &params);
    assert_eq!(rp.error_of(&resp, Some("plain-1")), "invalid_request");
    // ...before it, they are pages: an unregistered redirect_uri, a repeated parameter, a body
    // that is not a form, or one over 64 KiB.
    let params = plain_params(
        &rp.client_id,
        &challenge,
        &[("redirect_uri", "https://attacker.example/cb")],
    );
    Browser::new(server.port)
        .post("/authorize", &params)
        .assert_error_page("invalid_request");
    let mut repeated = plain_params(&rp.client_id, &challenge, &[]);
    repeated.push(("scope", "openid"));
    Browser::new(server.port)
        .post("/authorize", &repeated)
        .assert_error_page("invalid_request");
    let json_body = r#"{"client_id":"x"}"#;
    fetch(
        server.port,
        &format!(
            "POST /authorize HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{json_body}",
            json_body.len()
        ),
    )
    .assert_error_page("invalid_request");
    let padding = "x".repeat(65 * 1024);
    let mut big = plain_params(&rp.client_id, &challenge, &[]);
    big.push(("padding", &padding));
    let resp = Browser::new(server.port).post("/authorize", &big);
    resp.assert_page(413);
    assert!(resp.header("location").is_none());
}

#[test]
fn signing_in_rotates_the_interaction_and_replaces_the_session() {
    let server = start();
    let rp = rp_for(&server, json!({}));
    add_user(&server, "alice", "correct horse battery");
    let (_, challenge) = pkce();

    let mut browser = Browser::new(server.port);
    browser.get(&plain_path(&rp.client_id, &challenge, &[("state", "s1")]));
    let before = browser.cookies[INTERACTION].clone();
    let old_csrf = browser.get("/authorize/login").csrf();
    let resp = sign_in(&mut browser, "correct horse battery");
    assert_eq!(resp.location(), "/authorize/consent");
    let after = browser.cookies[INTERACTION].clone();
    assert_ne!(after, before, "a new interaction id at sign-in");
    assert_eq!(after.len(), 43);

    // Whoever holds the pre-login id (planted it, or saw it) gets nothing.
    let mut fixer = browser_with(server.port, INTERACTION, &before);
    fixer
        .get("/authorize/consent")
        .assert_error_page("invalid_request");
    fixer
        .post(
            "/authorize/consent",
            &[("decision", "approve"), ("csrf", old_csrf.as_str())],
        )
        .assert_error_page("invalid_request");
    // Nor does the pre-login CSRF token with the new id.
    browser
        .post(
            "/authorize/consent",
            &[("decision", "approve"), ("csrf", old_csrf.as_str())],
        )
        .assert_error_page("invalid_request");
    let consent = browser.get("/authorize/consent");
    consent.assert_page(200);
    let resp = browser.post(
        "/authorize/consent",
        &[("decision", "approve"), ("csrf", consent.csrf().as_str())],
    );
    rp.code_of(&resp, CB, "s1");

    // Signing in again (prompt=login) replaces the browser's session: the old one is ended.
    let first_session = browser.cookies[SESSION].clone();
    let resp = browser.get(&plain_path(
        &rp.client_id,
        &challenge,
        &[("prompt", "login"), ("state", "s2")],
    ));
    assert_eq!(resp.location(), "/authorize/login");
    let resp = sign_in(&mut browser, "correct horse battery");
    rp.code_of(&resp, CB, "s2");
    let second_session = browser.cookies[SESSION].clone();
    assert_ne!(second_session, first_session);

    let silent = |session: &str, state: &'static str| {
        browser_with(server.port, SESSION, session).get(&plain_path(
            &rp.client_id,
            &challenge,
            &[("prompt", "none"), ("state", state)],
        ))
    };
    assert_eq!(
        rp.error_of(&silent(&first_session, "s3"), Some("s3")),
        "login_required"
    );
    rp.code_of(&silent(&second_session, "s4"), CB, "s4");
}

#[test]
fn server_failures_after_the_redirect_uri_is_trusted_go_back_to_the_client() {
    let server = start();
    let rp = rp_for(&server, json!({}));
    add_user(&server, "alice", "correct horse battery");
    let (_, challenge) = pkce();
    let server_error_page = |resp: &Resp| {
        resp.assert_page(500);
        assert!(resp.header("location").is_none());
        assert!(
            resp.body.contains("<code>server_error</code>"),
            "{}",
            resp.body
        );
    };
    let server_error_redirect = |resp: &Resp, state: &str| {
        assert_eq!(rp.error_of(resp, Some(state)), "server_error");
        let description = &resp.client_query()["error_description"];
        assert!(!description.contains("injected"), "{description}");
    };

    // Before: the request is not known yet (the pushed request cannot be read), so a page.
    let uri = rp.push(&[]);
    sql(&server, "UPDATE par_requests SET params = 'not JSON'");
    server_error_page(&Browser::new(server.port).get(&rp.authorize_path(&uri)));

    // After: the interaction cannot be stored.
    break_table(&server, "INSERT", "interactions");
    let resp =
        Browser::new(server.port).get(&plain_path(&rp.client_id, &challenge, &[("state", "f1")]));
    server_error_redirect(&resp, "f1");
    mend_table(&server, "interactions");

    // After: the login step cannot count the attempt.
    let mut browser = Browser::new(server.port);
    browser.get(&plain_path(&rp.client_id, &challenge, &[("state", "f2")]));
    let login = browser.get("/authorize/login");
    break_table(&server, "UPDATE", "interactions");
    let resp = browser.post(
        "/authorize/login",
        &[
            ("username", "alice"),
            ("password", "correct horse battery"),
            ("csrf", login.csrf().as_str()),
        ],
    );
    server_error_redirect(&resp, "f2");
    mend_table(&server, "interactions");

    // After: the consent step cannot issue the code; the interaction is spent all the same.
    let mut browser = Browser::new(server.port);
    browser.get(&plain_path(&rp.client_id, &challenge, &[("state", "f3")]));
    let resp = sign_in(&mut browser, "correct horse battery");
    let consent = browser.follow(&resp);
    break_table(&server, "INSERT", "authorization_codes");
    let resp = browser.post(
        "/authorize/consent",
        &[("decision", "approve"), ("csrf", consent.csrf().as_str())],
    );
    server_error_redirect(&resp, "f3");
    assert!(!browser.has(INTERACTION));

    // After, with a session and remembered consent: straight to the code, which fails.
    let uri = rp.push(&[("state", Some("f4"))]);
    server_error_redirect(&browser.get(&rp.authorize_path(&uri)), "f4");
    mend_table(&server, "authorization_codes");
    let uri = rp.push(&[("state", Some("f5"))]);
    rp.code_of(&browser.get(&rp.authorize_path(&uri)), CB, "f5");
}

#[test]
fn phone_and_address_are_standard_scopes() {
    let server = start();
    // A client that registered no scope may ask for the standard ones.
    let rp = rp_for(&server, json!({"scope": null}));
    add_user(&server, "alice", "correct horse battery");
    let (_, challenge) = pkce();
    let mut browser = Browser::new(server.port);
    let resp = browser.get(&plain_path(
        &rp.client_id,
        &challenge,
        &[("scope", "openid phone address"), ("state", "pa")],
    ));
    assert_eq!(resp.location(), "/authorize/login");
    let resp = sign_in(&mut browser, "correct horse battery");
    let consent = browser.follow(&resp);
    consent.assert_page(200);
    for shown in [
        "<code>phone</code>",
        "See your phone number",
        "<code>address</code>",
        "See your postal address",
    ] {
        assert!(consent.body.contains(shown), "{shown}: {}", consent.body);
    }
    let resp = browser.post(
        "/authorize/consent",
        &[("decision", "approve"), ("csrf", consent.csrf().as_str())],
    );
    let code = rp.code_of(&resp, CB, "pa");
    assert_eq!(
        stored_code(&server, &code).1["scope"],
        "openid phone address"
    );
    // Still not any scope at all.
    let resp = browser.get(&plain_path(
        &rp.client_id,
        &challenge,
        &[("scope", "openid accounts"), ("state", "pb")],
    ));
    assert_eq!(rp.error_of(&resp, Some("pb")), "invalid_scope");
}

// ---- Cancel on the login page ----------------------------------------------------------------

/// The login page's Cancel form: its fields, as the page renders them.
fn cancel_form(login: &Resp) -> [(&'static str, String); 2] {
    assert!(
        login
            .body
            .contains("<button type=\"submit\" name=\"decision\" value=\"cancel\">Cancel</button>"),
        "{}",
        login.body
    );
    [("decision", "cancel".to_owned()), ("csrf", login.csrf())]
}

fn fields<'a>(form: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    form.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The fragment of a redirect to the client, as a map.
fn client_fragment(resp: &Resp) -> HashMap<String, String> {
    let url = url::Url::parse(resp.location()).unwrap();
    url::form_urlencoded::parse(url.fragment().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

#[test]
fn cancel_on_the_login_page_sends_access_denied_with_state_and_iss() {
    let server = start();
    let rp = rp_for(
        &server,
        json!({"response_types": ["code", "code id_token"]}),
    );
    add_user(&server, "alice", "correct horse battery");

    // The conformance suite's order: a happy flow first, so the consent is remembered and a
    // sign-in alone would go straight back with a code.
    let mut browser = Browser::new(server.port);
    let uri = rp.push(&[("state", Some("happy"))]);
    browser.get(&rp.authorize_path(&uri));
    let resp = sign_in_and_approve(&mut browser, "correct horse battery");
    rp.code_of(&resp, CB, "happy");

    // Cookies cleared, a pushed request, the login page: Cancel, with no username or password.
    let mut browser = Browser::new(server.port);
    let uri = rp.push(&[("state", Some("cancel-1"))]);
    let resp = browser.get(&rp.authorize_path(&uri));
    let login = browser.follow(&resp);
    login.assert_page(200);
    let cancel = cancel_form(&login);
    let resp = browser.post("/authorize/login", &fields(&cancel));
    assert_eq!(rp.error_of(&resp, Some("cancel-1")), "access_denied");
    assert!(
        resp.location().starts_with(&format!("{CB}?")),
        "in the query"
    );
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    assert!(
        !browser.has(INTERACTION),
        "the interaction cookie is cleared"
    );
    assert!(!browser.has(SESSION), "nobody signed in");
    assert_eq!(
        sql_count(&server, "SELECT COUNT(*) FROM authorization_codes"),
        1,
        "only the happy flow's code"
    );

    // A plain request whose redirect_uri has a query: kept, and added to.
    let (_, challenge) = pkce();
    let mut browser = Browser::new(server.port);
    browser.get(&plain_path(
        &rp.client_id,
        &challenge,
        &[("redirect_uri", CB_WITH_QUERY), ("state", "cancel-2")],
    ));
    let login = browser.get("/authorize/login");
    let resp = browser.post("/authorize/login", &fields(&cancel_form(&login)));
    assert!(
        resp.location().starts_with(CB_WITH_QUERY),
        "{}",
        resp.location()
    );
    let q = resp.client_query();
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "cancel-2");
    assert_eq!(q["iss"], rp.issuer());
    assert_eq!(q["tenant"], "a b");

    // The hybrid flow: in the fragment, as its every answer (OpenID Connect Core §3.3.2.5).
    let mut browser = Browser::new(server.port);
    let resp = browser.get(&plain_path(
        &rp.client_id,
        &challenge,
        &[
            ("response_type", "code id_token"),
            ("nonce", "n-hybrid"),
            ("state", "cancel-3"),
        ],
    ));
    assert_eq!(resp.location(), "/authorize/login");
    let login = browser.follow(&resp);
    let resp = browser.post("/authorize/login", &fields(&cancel_form(&login)));
    let location = resp.location();
    assert!(location.starts_with(&format!("{CB}#")), "{location}");
    let f = client_fragment(&resp);
    assert_eq!(f["error"], "access_denied", "{location}");
    assert_eq!(f["state"], "cancel-3");
    assert_eq!(f["iss"], rp.issuer());
    assert!(f.contains_key("error_description"));
    assert!(!f.contains_key("code") && !f.contains_key("id_token"));
}

#[test]
fn a_cancel_without_the_right_csrf_token_or_cookie_is_refused() {
    let server = start();
    let rp = rp_for(&server, json!({}));
    add_user(&server, "alice", "correct horse battery");
    let mut browser = Browser::new(server.port);
    let uri = rp.push(&[("state", Some("csrf-1"))]);
    let resp = browser.get(&rp.authorize_path(&uri));
    let login = browser.follow(&resp);
    let cancel = cancel_form(&login);
    let csrf = cancel[1].1.clone();

    // No token, a forged one, another interaction's, a repeated field, or no interaction
    // cookie: error pages, never a redirect to the client.
    let mut other_tab = Browser::new(server.port);
    let resp = other_tab.get(&rp.authorize_path(&uri));
    let other_csrf = other_tab.follow(&resp).csrf();
    assert_ne!(other_csrf, csrf);
    for form in [
        vec![("decision", "cancel")],
        vec![("decision", "cancel"), ("csrf", "")],
        vec![
            ("decision", "cancel"),
            ("csrf", "forged-csrf-token-forged-csrf-token-forged"),
        ],
        vec![("decision", "cancel"), ("csrf", other_csrf.as_str())],
        vec![
            ("decision", "cancel"),
            ("decision", "cancel"),
            ("csrf", csrf.as_str()),
        ],
        vec![("decision", "deny"), ("csrf", csrf.as_str())],
    ] {
        let resp = browser.post("/authorize/login", &form);
        resp.assert_error_page("invalid_request");
        assert!(browser.has(INTERACTION), "{form:?}");
    }
    Browser::new(server.port)
        .post("/authorize/login", &fields(&cancel))
        .assert_error_page("invalid_request");

    // None of them touched the interaction: the page is still there, and its Cancel works.
    let login = browser.get("/authorize/login");
    login.assert_page(200);
    assert_eq!(login.csrf(), csrf);
    let resp = browser.post("/authorize/login", &fields(&cancel));
    assert_eq!(rp.error_of(&resp, Some("csrf-1")), "access_denied");
    // And the other tab's interaction is its own: still alive.
    other_tab.get("/authorize/login").assert_page(200);
}

#[test]
fn a_cancelled_interaction_cannot_be_used_again() {
    let server = start();
    let rp = rp_for(&server, json!({}));
    add_user(&server, "alice", "correct horse battery");
    let mut browser = Browser::new(server.port);
    let uri = rp.push(&[("state", Some("once"))]);
    let resp = browser.get(&rp.authorize_path(&uri));
    let login = browser.follow(&resp);
    let cancel = cancel_form(&login);
    let cookie = browser.cookies[INTERACTION].clone();
    let resp = browser.post("/authorize/login", &fields(&cancel));
    assert_eq!(rp.error_of(&resp, Some("once")), "access_denied");

    // Whoever still holds the cookie and the token: a second cancel, the right password, the
    // pages, the consent post — error pages, nothing at the client, no session.
    let mut replay = browser_with(server.port, INTERACTION, &cookie);
    replay
        .post("/authorize/login", &fields(&cancel))
        .assert_error_page("invalid_request");
    replay
        .post(
            "/authorize/login",
            &[
                ("username", "alice"),
                ("password", "correct horse battery"),
                ("csrf", cancel[1].1.as_str()),
            ],
        )
        .assert_error_page("invalid_request");
    replay
        .get("/authorize/login")
        .assert_error_page("invalid_request");
    replay
        .get("/authorize/consent")
        .assert_error_page("invalid_request");
    replay
        .post(
            "/authorize/consent",
            &[("decision", "approve"), ("csrf", cancel[1].1.as_str())],
        )
        .assert_error_page("invalid_request");
    assert!(!replay.has(SESSION));
    assert_eq!(
        sql_count(&server, "SELECT COUNT(*) FROM interactions"),
        0,
        "the interaction row is gone"
    );
    assert_eq!(
        sql_count(&server, "SELECT COUNT(*) FROM authorization_codes"),
        0
    );

    // As with Deny on the consent page, a refusal authorizes nothing and so does not spend the
    // pushed request: it starts a new interaction (and only that one can yield its code).
    let mut again = Browser::new(server.port);
    let resp = again.get(&rp.authorize_path(&uri));
    assert_eq!(resp.location(), "/authorize/login");
    let resp = sign_in_and_approve(&mut again, "correct horse battery");
    rp.code_of(&resp, CB, "once");

    // A signed-in interaction (the user came back to the login page from consent) can be
    // cancelled too, with the token the login page now shows, and only once.
    let mut browser = Browser::new(server.port);
    let uri = rp.push(&[
        ("state", Some("after-sign-in")),
        ("prompt", Some("consent")),
    ]);
    browser.get(&rp.authorize_path(&uri));
    let resp = sign_in(&mut browser, "correct horse battery");
    assert_eq!(resp.location(), "/authorize/consent");
    let login = browser.get("/authorize/login");
    let cancel = cancel_form(&login);
    let resp = browser.post("/authorize/login", &fields(&cancel));
    assert_eq!(rp.error_of(&resp, Some("after-sign-in")), "access_denied");
    assert!(!browser.has(INTERACTION) && browser.has(SESSION));
    browser
        .get("/authorize/consent")
        .assert_error_page("invalid_request");
}
