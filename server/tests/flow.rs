//! End to end: the real binary on a fresh SoftHSM2 token and SQLite file; clients registered
//! through the management API; PAR → login form → consent → code → token → userinfo →
//! introspect → refresh → revoke over HTTPS, for a private_key_jwt client and for a
//! tls_client_auth client with certificate-bound tokens. Every signature is checked with
//! jsonwebtoken against the served JWKS, every hash and thumbprint with OpenSSL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
#[path = "common/fapi.rs"]
mod fapi;

use common::*;
use fapi::{
    Browser, Callback, HtmlForm, PASSWORD, Pkce, REDIRECT_URI, USERNAME, b64, enc,
    left_half_sha256, now, pkce, unique,
};

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use serde_json::{Value, json};

const ASSERTION_TYPE: &str = "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer";

/// How a test client authenticates.
enum Auth {
    /// private_key_jwt: the key signs assertions (PS256, kid "client-key-1").
    Jwt(jsonwebtoken::EncodingKey),
    /// tls_client_auth: the certificate goes on the mTLS listener.
    Mtls(X509, PKey<Private>),
}

struct TestClient {
    id: String,
    auth: Auth,
    /// The public key (PEM) of a private_key_jwt client.
    public_pem: Vec<u8>,
}

impl TestClient {
    /// The port this client talks to for back-channel calls.
    fn port(&self, server: &Server) -> u16 {
        match self.auth {
            Auth::Jwt(_) => server.port,
            Auth::Mtls(..) => server.mtls_port,
        }
    }

    fn identity(&self) -> Identity<'_> {
        match &self.auth {
            Auth::Jwt(_) => None,
            Auth::Mtls(c, k) => Some((c, k)),
        }
    }

    /// Client authentication parameters for a request to `endpoint` (a fresh assertion each
    /// time).
    fn auth_params(&self, server: &Server) -> String {
        match &self.auth {
            Auth::Jwt(key) => {
                let a = sign_assertion(
                    key,
                    json!({"iss": self.id, "sub": self.id, "aud": server.issuer(),
                           "exp": now() + 60, "iat": now(), "jti": unique()}),
                    jsonwebtoken::Algorithm::PS256,
                    Some("client-key-1"),
                );
                format!("client_assertion_type={ASSERTION_TYPE}&client_assertion={a}")
            }
            Auth::Mtls(..) => format!("client_id={}", enc(&self.id)),
        }
    }

    /// POSTs a form to `path` with this client's authentication.
    fn post(&self, server: &Server, path: &str, params: &str) -> Response {
        let auth = self.auth_params(server);
        // An mTLS client names itself with client_id, which the parameters may carry already.
        let named = params.starts_with("client_id=") || params.contains("&client_id=");
        let body = if named && auth.starts_with("client_id=") {
            params.to_owned()
        } else {
            format!("{params}&{auth}")
        };
        post(self.port(server), path, &body, self.identity())
    }
}

fn sign_assertion(
    key: &jsonwebtoken::EncodingKey,
    claims: Value,
    alg: jsonwebtoken::Algorithm,
    kid: Option<&str>,
) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn post(port: u16, path: &str, body: &str, identity: Identity<'_>) -> Response {
    exchange(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        identity,
    )
}

fn bearer(port: u16, method: &str, path: &str, token: &str, identity: Identity<'_>) -> Response {
    exchange(
        port,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Authorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
        ),
        identity,
    )
}

fn json_request(port: u16, method: &str, path: &str, token: &str, body: &Value) -> Response {
    let body = body.to_string();
    exchange(
        port,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        None,
    )
}

fn oauth_error(r: &Response) -> String {
    let v = r.json();
    assert!(v["error_description"].is_string(), "{}", r.body);
    v["error"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------------
// Set-up: a user, a management client, and clients registered through the management API.

/// A management access token: a client registered with the CLI (the bootstrap), then
/// client_credentials with the management API as the audience.
fn management_token(server: &Server) -> String {
    let rsa = fapi::new_rsa();
    let id = create_client(
        server,
        &json!({
            "client_name": "operations",
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [fapi::rsa_jwk(&rsa, "client-key-1", "PS256")]},
            "grant_types": ["client_credentials"],
            "scope": "read:clients create:clients update:clients delete:clients",
        }),
    );
    let ops = TestClient {
        id,
        auth: Auth::Jwt(jsonwebtoken::EncodingKey::from_rsa_der(
            &rsa.private_key_to_der().unwrap(),
        )),
        public_pem: rsa.public_key_to_pem().unwrap(),
    };
    let r = ops.post(
        server,
        "/token",
        &format!(
            "grant_type=client_credentials&audience={}",
            enc(&format!("{}/api/v2/", server.issuer()))
        ),
    );
    assert_eq!(r.status, 200, "management token: {}", r.body);
    r.json()["access_token"].as_str().unwrap().to_owned()
}

fn register(server: &Server, mgmt_token: &str, metadata: Value) -> String {
    let r = json_request(
        server.port,
        "POST",
        "/api/v2/clients",
        mgmt_token,
        &metadata,
    );
    assert_eq!(r.status, 201, "register: {}", r.body);
    let created = r.json();
    assert_eq!(created["redirect_uris"], metadata["redirect_uris"]);
    created["client_id"].as_str().unwrap().to_owned()
}

fn code_flow_metadata() -> Value {
    json!({
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "scope": "openid profile email accounts",
        "require_pushed_authorization_requests": true,
    })
}

fn jwt_client(server: &Server, mgmt_token: &str, name: &str) -> TestClient {
    let rsa = fapi::new_rsa();
    let mut m = code_flow_metadata();
    m["client_name"] = json!(name);
    m["token_endpoint_auth_method"] = json!("private_key_jwt");
    m["jwks"] = json!({"keys": [fapi::rsa_jwk(&rsa, "client-key-1", "PS256")]});
    TestClient {
        id: register(server, mgmt_token, m),
        auth: Auth::Jwt(jsonwebtoken::EncodingKey::from_rsa_der(
            &rsa.private_key_to_der().unwrap(),
        )),
        public_pem: rsa.public_key_to_pem().unwrap(),
    }
}

/// A tls_client_auth client whose certificate the test CA issued for `cn`.
fn mtls_client(
    server: &Server,
    mgmt_token: &str,
    ca: &(X509, PKey<Private>),
    cn: &str,
) -> TestClient {
    let (cert, key) = certificate(cn, Some((&ca.0, &ca.1)), false);
    let mut m = code_flow_metadata();
    m["client_name"] = json!(cn);
    m["token_endpoint_auth_method"] = json!("tls_client_auth");
    m["tls_client_auth_subject_dn"] = json!(format!("CN={cn},O=Test Bank"));
    m["tls_client_certificate_bound_access_tokens"] = json!(true);
    TestClient {
        id: register(server, mgmt_token, m),
        auth: Auth::Mtls(cert, key),
        public_pem: Vec::new(),
    }
}

fn start_server(extra: &str) -> (Server, (X509, PKey<Private>)) {
    let (server, ca) = fapi::start_with_client_ca(extra);
    fapi::create_user(
        &server,
        USERNAME,
        &json!({"name": "Alice Example", "email": "alice@example.com", "email_verified": true}),
    );
    (server, ca)
}

// ---------------------------------------------------------------------------------------------
// The browser (tests/common/fapi.rs), with what this file checks of the pages it signs in and
// consents on.

/// Submits a form as a browser does (the server's forms all POST).
fn submit(
    browser: &mut Browser,
    form: &HtmlForm,
    extra: &[(&str, &str)],
    button: Option<usize>,
) -> Response {
    assert!(form.method.eq_ignore_ascii_case("post"), "{form:?}");
    browser.submit(form, extra, button)
}

fn login_form(page: &Response) -> HtmlForm {
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        !page.body.contains("<script"),
        "pages work without JavaScript"
    );
    fapi::login_form(page).unwrap_or_else(|| panic!("no login form in {}", page.body))
}

/// The consent form and the index of the button that approves.
fn consent_form(page: &Response, approve: bool) -> (HtmlForm, usize) {
    assert_eq!(page.status, 200, "{}", page.body);
    fapi::consent_form(page, approve).unwrap_or_else(|| panic!("no consent form in {}", page.body))
}

/// The parameters of a redirect to the client.
fn redirect_params(r: &Response) -> Callback {
    Callback::of(r, REDIRECT_URI).unwrap_or_else(|| {
        panic!(
            "not a redirect to {REDIRECT_URI}: {} {:?} {}",
            r.status,
            r.header("location"),
            r.body
        )
    })
}

/// Pushes an authorization request; returns the request_uri.
fn par(server: &Server, client: &TestClient, pkce: &Pkce, state: &str, nonce: &str) -> String {
    let r = client.post(
        server,
        "/par",
        &format!(
            "response_type=code&client_id={}&redirect_uri={}&scope={}&state={state}&nonce={nonce}\
             &code_challenge={}&code_challenge_method=S256",
            enc(&client.id),
            enc(REDIRECT_URI),
            enc("openid profile email"),
            pkce.challenge
        ),
    );
    assert_eq!(r.status, 201, "PAR: {}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    assert!(v["expires_in"].as_i64().unwrap() > 0);
    let uri = v["request_uri"].as_str().unwrap().to_owned();
    assert!(
        uri.starts_with("urn:ietf:params:oauth:request_uri:"),
        "{uri}"
    );
    uri
}

fn authorize_path(client: &TestClient, request_uri: &str) -> String {
    fapi::authorize_path(&client.id, request_uri)
}

/// The browser part: /authorize, login, consent; returns the redirect to the client.
fn browse(browser: &mut Browser, client: &TestClient, request_uri: &str) -> Response {
    let page = browser.send("GET", &authorize_path(client, request_uri), None);
    let page = browser.follow(page);
    let page = if (300..400).contains(&page.status) {
        return page; // a remembered session and consent: straight back to the client
    } else if fapi::login_form(&page).is_some() {
        let form = login_form(&page);
        submit(
            browser,
            &form,
            &[("username", USERNAME), ("password", PASSWORD)],
            None,
        )
    } else {
        page
    };
    if (300..400).contains(&page.status) {
        return page;
    }
    let (form, approve) = consent_form(&page, true);
    submit(browser, &form, &[], Some(approve))
}

/// Runs the front channel and returns the code (state and iss checked).
fn authorization_code(
    server: &Server,
    browser: &mut Browser,
    client: &TestClient,
    pkce: &Pkce,
    nonce: &str,
) -> String {
    let state = unique();
    let request_uri = par(server, client, pkce, &state, nonce);
    let back = browse(browser, client, &request_uri);
    let params = redirect_params(&back);
    assert_eq!(params.in_query("state"), Some(state.as_str()));
    assert_eq!(
        params.in_query("iss"),
        Some(server.issuer().as_str()),
        "RFC 9207"
    );
    assert!(params.in_query("error").is_none(), "{params:?}");
    params.in_query("code").unwrap().to_owned()
}

fn redeem(server: &Server, client: &TestClient, code: &str, verifier: &str) -> Response {
    client.post(
        server,
        "/token",
        &format!(
            "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={verifier}",
            enc(code),
            enc(REDIRECT_URI)
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Independent verification.

/// A JWT the server signed, checked with jsonwebtoken against the served JWKS (typ `typ`).
fn verify_jwt(server: &Server, token: &str, audience: &str, typ: &str) -> Value {
    fapi::verify_jwt(server, token, audience, Some(typ)).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------------

fn full_flow(server: &Server, client: &TestClient) {
    let mut browser = Browser::new(server);
    let pkce = pkce();
    let nonce = unique();
    let before = now();
    let code = authorization_code(server, &mut browser, client, &pkce, &nonce);

    let r = redeem(server, client, &code, &pkce.verifier);
    assert_eq!(r.status, 200, "token: {}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let tokens = r.json();
    assert_eq!(tokens["token_type"], "Bearer");
    let access = tokens["access_token"].as_str().unwrap();
    let id_token = tokens["id_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();

    // The ID token, by jsonwebtoken against the served JWKS; hashes by OpenSSL.
    let id = verify_jwt(server, id_token, &client.id, "JWT");
    assert_eq!(id["nonce"], nonce.as_str());
    assert_eq!(id["at_hash"], left_half_sha256(access).as_str());
    // OpenID Connect Core §3.1.3.6: the code flow's ID token has no c_hash (the token response
    // carries no code), and the FAPI conformance suite warns on one.
    assert!(id.get("c_hash").is_none(), "{id}");
    let auth_time = id["auth_time"].as_i64().unwrap();
    assert!(
        auth_time + 5 >= before && auth_time <= now() + 5,
        "{auth_time}"
    );
    assert!(id["acr"].is_string());
    let sub = id["sub"].as_str().unwrap().to_owned();

    // The access token: RFC 9068, bound to the certificate for the mTLS client.
    let at = verify_jwt(server, access, &server.issuer(), "at+jwt");
    assert_eq!(at["sub"], sub.as_str());
    assert_eq!(at["client_id"], client.id.as_str());
    assert_eq!(at["scope"], "openid profile email");
    match &client.auth {
        Auth::Mtls(cert, _) => assert_eq!(at["cnf"]["x5t#S256"], thumbprint(cert).as_str()),
        Auth::Jwt(_) => assert!(at.get("cnf").is_none()),
    }

    // userinfo: header bearer only; bound tokens with their certificate.
    let u = bearer(
        client.port(server),
        "GET",
        "/userinfo",
        access,
        client.identity(),
    );
    assert_eq!(u.status, 200, "userinfo: {}", u.body);
    let info = u.json();
    assert_eq!(info["sub"], sub.as_str());
    assert_eq!(info["email"], "alice@example.com");
    assert_eq!(info["name"], "Alice Example");
    if let Auth::Mtls(..) = client.auth {
        // Without the certificate, or with another one: refused.
        let r = bearer(server.port, "GET", "/userinfo", access, None);
        assert_eq!(r.status, 401, "{}", r.body);
        let (other, other_key) = certificate("someone else", None, false);
        let r = bearer(
            server.mtls_port,
            "GET",
            "/userinfo",
            access,
            Some((&other, &other_key)),
        );
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(oauth_error(&r), "invalid_token");
    }

    // introspection
    let i = client.post(server, "/introspect", &format!("token={access}"));
    assert_eq!(i.status, 200, "introspect: {}", i.body);
    let info = i.json();
    assert_eq!(info["active"], true);
    assert_eq!(info["sub"], sub.as_str());
    assert_eq!(info["client_id"], client.id.as_str());
    if let Auth::Mtls(cert, _) = &client.auth {
        assert_eq!(info["cnf"]["x5t#S256"], thumbprint(cert).as_str());
    }

    // refresh: a new pair; the old refresh token is spent.
    let r = client.post(
        server,
        "/token",
        &format!("grant_type=refresh_token&refresh_token={}", enc(refresh)),
    );
    assert_eq!(r.status, 200, "refresh: {}", r.body);
    let renewed = r.json();
    let access2 = renewed["access_token"].as_str().unwrap();
    let refresh2 = renewed["refresh_token"].as_str().unwrap();
    assert_ne!(refresh2, refresh);
    let id2 = verify_jwt(
        server,
        renewed["id_token"].as_str().unwrap(),
        &client.id,
        "JWT",
    );
    assert_eq!(id2["sub"], sub.as_str());
    assert_eq!(id2["auth_time"].as_i64(), Some(auth_time));

    // revocation of the refresh token takes the grant down: both access tokens too.
    let r = client.post(server, "/revoke", &format!("token={}", enc(refresh2)));
    assert_eq!(r.status, 200, "revoke: {}", r.body);
    for t in [access, access2] {
        let i = client.post(server, "/introspect", &format!("token={t}"));
        assert_eq!(i.json()["active"], false, "{}", i.body);
        let u = bearer(
            client.port(server),
            "GET",
            "/userinfo",
            t,
            client.identity(),
        );
        assert_eq!(u.status, 401);
    }
    let r = client.post(
        server,
        "/token",
        &format!("grant_type=refresh_token&refresh_token={}", enc(refresh2)),
    );
    assert_eq!(r.status, 400);
    assert_eq!(oauth_error(&r), "invalid_grant");
}

#[test]
fn full_flow_for_a_private_key_jwt_client_and_an_mtls_client() {
    let (server, ca) = start_server("");
    let mgmt = management_token(&server);
    let pkj = jwt_client(&server, &mgmt, "payments app");
    full_flow(&server, &pkj);
    let mtls = mtls_client(&server, &mgmt, &ca, "mtls-client");
    full_flow(&server, &mtls);

    // A second login in the same browser: the session and the remembered consent carry it.
    let mut browser = Browser::new(&server);
    let pkce1 = pkce();
    let _ = authorization_code(&server, &mut browser, &pkj, &pkce1, "n1");
    let pkce2 = pkce();
    let state = unique();
    let uri = par(&server, &pkj, &pkce2, &state, "n2");
    let r = browser.send("GET", &authorize_path(&pkj, &uri), None);
    let params = redirect_params(&browser.follow(r));
    assert_eq!(params.in_query("state"), Some(state.as_str()));
    let code = params.in_query("code").unwrap();
    assert_eq!(redeem(&server, &pkj, code, &pkce2.verifier).status, 200);
}

#[test]
fn a_restart_in_the_middle_of_a_flow_loses_nothing() {
    let (mut server, _ca) = start_server("");
    let mgmt = management_token(&server);
    let client = jwt_client(&server, &mgmt, "restart app");
    let mut browser = Browser::new(&server);

    // Restart after PAR.
    let pkce1 = pkce();
    let state = unique();
    let uri = par(&server, &client, &pkce1, &state, "n");
    server.restart();
    let back = browse(&mut browser, &client, &uri);
    let params = redirect_params(&back);
    let code = params.in_query("code").unwrap().to_owned();

    // Restart after the code.
    server.restart();
    let r = redeem(&server, &client, &code, &pkce1.verifier);
    assert_eq!(r.status, 200, "{}", r.body);
    let access = r.json()["access_token"].as_str().unwrap().to_owned();
    verify_jwt(&server, &access, &server.issuer(), "at+jwt");
    server.restart();
    let u = bearer(server.port, "GET", "/userinfo", &access, None);
    assert_eq!(u.status, 200, "{}", u.body);
}

#[test]
fn authorization_code_and_par_negative_cases() {
    let (server, ca) = start_server("");
    let mgmt = management_token(&server);
    let a = jwt_client(&server, &mgmt, "client a");
    let b = jwt_client(&server, &mgmt, "client b");
    let mut browser = Browser::new(&server);

    // Code issued to another client: invalid_grant, and not consumed.
    let p = pkce();
    let code = authorization_code(&server, &mut browser, &a, &p, "n");
    let r = redeem(&server, &b, &code, &p.verifier);
    assert_eq!((r.status, oauth_error(&r).as_str()), (400, "invalid_grant"));
    // Wrong redirect_uri at the token endpoint: invalid_grant (the code is now spent).
    let with_other_redirect_uri = |code: &str, verifier: &str| {
        a.post(
            &server,
            "/token",
            &format!(
                "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={verifier}",
                enc(code),
                enc("https://client.example/other"),
            ),
        )
    };
    let r = with_other_redirect_uri(&code, &p.verifier);
    assert_eq!((r.status, oauth_error(&r).as_str()), (400, "invalid_grant"));

    // RFC 6749 §4.1.3: the token request must repeat a redirect_uri the authorization request
    // sent; one that sent none (the client's only URI was taken) may leave it out, but any it
    // sends must still be the one the code went to.
    let p = pkce();
    let code = authorization_code(&server, &mut browser, &a, &p, "n");
    let without_redirect_uri = |code: &str, verifier: &str| {
        a.post(
            &server,
            "/token",
            &format!(
                "grant_type=authorization_code&code={}&code_verifier={verifier}",
                enc(code)
            ),
        )
    };
    let r = without_redirect_uri(&code, &p.verifier);
    assert_eq!((r.status, oauth_error(&r).as_str()), (400, "invalid_grant"));
    let defaulted_code = |p: &Pkce| {
        let state = unique();
        let r = a.post(
            &server,
            "/par",
            &format!(
                "response_type=code&client_id={}&scope=openid&state={state}\
                 &code_challenge={}&code_challenge_method=S256",
                enc(&a.id),
                p.challenge
            ),
        );
        assert_eq!(r.status, 201, "PAR without redirect_uri: {}", r.body);
        let request_uri = r.json()["request_uri"].as_str().unwrap().to_owned();
        let back = browse(&mut Browser::new(&server), &a, &request_uri);
        let params = redirect_params(&back);
        assert_eq!(params.in_query("state"), Some(state.as_str()));
        params.in_query("code").unwrap().to_owned()
    };
    let p = pkce();
    let code = defaulted_code(&p);
    let r = without_redirect_uri(&code, &p.verifier);
    assert_eq!(r.status, 200, "{}", r.body);
    let p = pkce();
    let code = defaulted_code(&p);
    let r = with_other_redirect_uri(&code, &p.verifier);
    assert_eq!((r.status, oauth_error(&r).as_str()), (400, "invalid_grant"));

    // Wrong PKCE verifier; missing verifier. A refused exchange spends the code: the right
    // verifier after a wrong one is refused too (a code is tried at most once).
    let p = pkce();
    let code = authorization_code(&server, &mut browser, &a, &p, "n");
    let r = redeem(&server, &a, &code, &pkce().verifier);
    assert_eq!((r.status, oauth_error(&r).as_str()), (400, "invalid_grant"));
    let r = redeem(&server, &a, &code, &p.verifier);
    assert_eq!(
        (r.status, oauth_error(&r).as_str()),
        (400, "invalid_grant"),
        "the code is spent: {}",
        r.body
    );
    let p = pkce();
    let code = authorization_code(&server, &mut browser, &a, &p, "n");
    let r = a.post(
        &server,
        "/token",
        &format!(
            "grant_type=authorization_code&code={}&redirect_uri={}",
            enc(&code),
            enc(REDIRECT_URI)
        ),
    );
    assert_eq!((r.status, oauth_error(&r).as_str()), (400, "invalid_grant"));

    // Reused code: invalid_grant, and the tokens of the first use are revoked.
    let p = pkce();
    let code = authorization_code(&server, &mut browser, &a, &p, "n");
    let first = redeem(&server, &a, &code, &p.verifier);
    assert_eq!(first.status, 200, "{}", first.body);
    let access = first.json()["access_token"].as_str().unwrap().to_owned();
    let r = redeem(&server, &a, &code, &p.verifier);
    assert_eq!((r.status, oauth_error(&r).as_str()), (400, "invalid_grant"));
    let i = a.post(&server, "/introspect", &format!("token={access}"));
    assert_eq!(i.json()["active"], false, "{}", i.body);

    // A rotated refresh token presented again revokes the grant.
    let p = pkce();
    let code = authorization_code(&server, &mut browser, &a, &p, "n");
    let t = redeem(&server, &a, &code, &p.verifier).json();
    let rt = t["refresh_token"].as_str().unwrap();
    let refresh = |rt: &str| {
        a.post(
            &server,
            "/token",
            &format!("grant_type=refresh_token&refresh_token={}", enc(rt)),
        )
    };
    let renewed = refresh(rt).json();
    let r = refresh(rt);
    assert_eq!((r.status, oauth_error(&r).as_str()), (400, "invalid_grant"));
    let r = refresh(renewed["refresh_token"].as_str().unwrap());
    assert_eq!((r.status, oauth_error(&r).as_str()), (400, "invalid_grant"));

    // PAR: an unregistered redirect_uri, a request_uri parameter, PKCE plain. (A missing
    // redirect_uri or PKCE challenge is refused only under a compliance level, since this client
    // registered one redirect_uri and has none: tests/compliance.rs.)
    let p = pkce();
    let base = format!(
        "response_type=code&client_id={}&scope=openid&code_challenge={}&code_challenge_method=S256",
        enc(&a.id),
        p.challenge
    );
    for (params, error) in [
        (
            format!("{base}&redirect_uri={}", enc("https://attacker.example/cb")),
            "invalid_request",
        ),
        (
            format!(
                "{base}&redirect_uri={}&request_uri={}",
                enc(REDIRECT_URI),
                enc("urn:ietf:params:oauth:request_uri:abc")
            ),
            "invalid_request",
        ),
        (
            format!(
                "response_type=code&client_id={}&scope=openid&redirect_uri={}&code_challenge={}&code_challenge_method=plain",
                enc(&a.id),
                enc(REDIRECT_URI),
                p.verifier
            ),
            "invalid_request",
        ),
    ] {
        let r = a.post(&server, "/par", &params);
        assert_eq!(
            (r.status, oauth_error(&r).as_str()),
            (400, error),
            "{params}"
        );
    }

    // A request_uri is single use; another client's is refused.
    let p = pkce();
    let uri = par(&server, &a, &p, "s", "n");
    let r = browser.send("GET", &authorize_path(&b, &uri), None);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("invalid_request_uri"), "{}", r.body);
    let _ = browse(&mut browser, &a, &uri);
    let r = browser.send("GET", &authorize_path(&a, &uri), None);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("invalid_request_uri"), "{}", r.body);

    // Client assertions at PAR: replayed, expired, wrong aud, unknown kid, alg none, HS256
    // keyed with the client's public key.
    let Auth::Jwt(key) = &a.auth else {
        unreachable!()
    };
    let good_par = format!("{base}&redirect_uri={}", enc(REDIRECT_URI));
    let with_assertion = |assertion: &str| {
        post(
            server.port,
            "/par",
            &format!(
                "{good_par}&client_assertion_type={ASSERTION_TYPE}&client_assertion={assertion}"
            ),
            None,
        )
    };
    let claims = |aud: &str, exp: i64| json!({"iss": a.id, "sub": a.id, "aud": aud, "exp": exp, "iat": now(), "jti": unique()});
    let ps256 = jsonwebtoken::Algorithm::PS256;
    let once = sign_assertion(
        key,
        claims(&server.issuer(), now() + 60),
        ps256,
        Some("client-key-1"),
    );
    assert_eq!(with_assertion(&once).status, 201);
    // RFC 9126 section 2: PAR also accepts the token endpoint's URL and its own as aud.
    for aud in [
        format!("{}/token", server.issuer()),
        format!("{}/par", server.issuer()),
    ] {
        let other = sign_assertion(key, claims(&aud, now() + 60), ps256, Some("client-key-1"));
        assert_eq!(with_assertion(&other).status, 201, "aud {aud}");
    }
    let expired = sign_assertion(
        key,
        claims(&server.issuer(), now() - 120),
        ps256,
        Some("client-key-1"),
    );
    let wrong_aud = sign_assertion(
        key,
        claims("https://elsewhere.example", now() + 60),
        ps256,
        Some("client-key-1"),
    );
    let unknown_kid = sign_assertion(
        key,
        claims(&server.issuer(), now() + 60),
        ps256,
        Some("no-such-key"),
    );
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes()),
        b64(claims(&server.issuer(), now() + 60).to_string().as_bytes())
    );
    // HS256 with the client's public key (as registered) as the HMAC secret: the classic
    // algorithm-confusion forgery.
    let hs256 = sign_assertion(
        &jsonwebtoken::EncodingKey::from_secret(&a.public_pem),
        claims(&server.issuer(), now() + 60),
        jsonwebtoken::Algorithm::HS256,
        Some("client-key-1"),
    );
    for (what, assertion) in [
        ("replayed", once.as_str()),
        ("expired", expired.as_str()),
        ("wrong aud", wrong_aud.as_str()),
        ("unknown kid", unknown_kid.as_str()),
        ("alg none", none.as_str()),
        ("HS256 with the public key", hs256.as_str()),
    ] {
        let r = with_assertion(assertion);
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(oauth_error(&r), "invalid_client", "{what}");
        assert!(r.header("www-authenticate").is_some(), "{what}");
    }

    // Malformed and oversized bodies: JSON where a form is due, a repeated parameter, 64 KiB+.
    let json_body = format!("{{\"client_id\": \"{}\"}}", a.id);
    let r = exchange(
        server.port,
        &format!(
            "POST /par HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{json_body}",
            json_body.len()
        ),
        None,
    );
    assert_eq!(
        (r.status, oauth_error(&r).as_str()),
        (400, "invalid_request")
    );
    let r = a.post(&server, "/par", &format!("{good_par}&scope=openid"));
    assert_eq!(
        (r.status, oauth_error(&r).as_str()),
        (400, "invalid_request")
    );
    let r = post(server.port, "/par", &"a=b&".repeat(30_000), None);
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(oauth_error(&r), "invalid_request");

    // An mTLS client's token presented with another client's certificate, at the token
    // endpoint (authentication) and at userinfo (binding).
    let m1 = mtls_client(&server, &mgmt, &ca, "mtls-one");
    let m2 = mtls_client(&server, &mgmt, &ca, "mtls-two");
    let (Auth::Mtls(c2, k2), Auth::Mtls(..)) = (&m2.auth, &m1.auth) else {
        unreachable!()
    };
    let r = post(
        server.mtls_port,
        "/token",
        &format!(
            "grant_type=refresh_token&refresh_token=x&client_id={}",
            enc(&m1.id)
        ),
        Some((c2, k2)),
    );
    assert_eq!(
        (r.status, oauth_error(&r).as_str()),
        (401, "invalid_client")
    );
    let p = pkce();
    let code = authorization_code(&server, &mut browser, &m1, &p, "n");
    let t = redeem(&server, &m1, &code, &p.verifier).json();
    let access = t["access_token"].as_str().unwrap();
    let r = bearer(server.mtls_port, "GET", "/userinfo", access, Some((c2, k2)));
    assert_eq!((r.status, oauth_error(&r).as_str()), (401, "invalid_token"));
    let r = bearer(server.mtls_port, "GET", "/userinfo", access, m1.identity());
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn expired_request_uri_and_expired_code() {
    let (server, _ca) =
        start_server("par_lifetime_seconds = 2\nauthorization_code_lifetime_seconds = 1");
    let mgmt = management_token(&server);
    let client = jwt_client(&server, &mgmt, "slow app");
    let mut browser = Browser::new(&server);

    let p = pkce();
    let uri = par(&server, &client, &p, "s", "n");
    std::thread::sleep(std::time::Duration::from_millis(3_100));
    let r = browser.send("GET", &authorize_path(&client, &uri), None);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("invalid_request_uri"), "{}", r.body);

    let p = pkce();
    let code = authorization_code(&server, &mut browser, &client, &p, "n");
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    let r = redeem(&server, &client, &code, &p.verifier);
    assert_eq!((r.status, oauth_error(&r).as_str()), (400, "invalid_grant"));
}

/// FAPI 2.0 Security Profile §5.3.2.1 item 10: a client of a FAPI 2 level keeps its refresh
/// token (no rotation, so a lost response can be retried); a client without a level has it
/// rotated (the full flows above), and its replay revokes the grant.
#[test]
fn fapi2_clients_keep_their_refresh_token() {
    let (server, ca) = start_server("");
    let mgmt = management_token(&server);
    let client = mtls_client(&server, &mgmt, &ca, "fapi2-client");
    let r = json_request(
        server.port,
        "PATCH",
        &format!("/api/v2/clients/{}", client.id),
        &mgmt,
        &json!({"compliance_level": "fapi2_sp_mtls_mtls"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["compliance_level"], "fapi2_sp_mtls_mtls");

    let mut browser = Browser::new(&server);
    let pkce = pkce();
    let code = authorization_code(&server, &mut browser, &client, &pkce, "n");
    let r = redeem(&server, &client, &code, &pkce.verifier);
    assert_eq!(r.status, 200, "{}", r.body);
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();
    let mut access_tokens = Vec::new();
    for _ in 0..2 {
        let r = client.post(
            &server,
            "/token",
            &format!("grant_type=refresh_token&refresh_token={}", enc(&refresh)),
        );
        assert_eq!(r.status, 200, "refresh: {}", r.body);
        let body = r.json();
        assert!(body.get("refresh_token").is_none(), "{body}");
        let access = body["access_token"].as_str().unwrap().to_owned();
        let at = verify_jwt(&server, &access, &server.issuer(), "at+jwt");
        let Auth::Mtls(cert, _) = &client.auth else {
            unreachable!()
        };
        assert_eq!(at["cnf"]["x5t#S256"], thumbprint(cert).as_str());
        // Recorded: introspection knows it (and so revocation can reach it).
        let i = client.post(&server, "/introspect", &format!("token={access}"));
        assert_eq!(i.json()["active"], true, "{}", i.body);
        access_tokens.push(access);
    }
    // Revoking it still takes the grant down.
    let r = client.post(&server, "/revoke", &format!("token={}", enc(&refresh)));
    assert_eq!(r.status, 200, "{}", r.body);
    for t in &access_tokens {
        let i = client.post(&server, "/introspect", &format!("token={t}"));
        assert_eq!(i.json()["active"], false, "{}", i.body);
    }
    let r = client.post(
        &server,
        "/token",
        &format!("grant_type=refresh_token&refresh_token={}", enc(&refresh)),
    );
    assert_eq!((r.status, oauth_error(&r).as_str()), (400, "invalid_grant"));
}
