//! Black-box: the resource side of the real `strongroom serve` — bearer tokens at /userinfo,
//! RFC 7662 introspection and RFC 7009 revocation — over real HTTPS with OpenSSL.
//!
//! Access tokens come from the client_credentials grant (the authorization-code flow's user
//! tokens are tested end to end with that flow). Tokens are inspected and forged with OpenSSL
//! and jsonwebtoken only, never with the server's code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

const ASSERTION_TYPE: &str = "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer";

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

fn issuer(server: &Server) -> String {
    format!("https://localhost:{}", server.port)
}

/// A private_key_jwt client allowed `scope` (none registered if empty); its key signs
/// assertions (kid client-key-1).
fn register(server: &Server, scope: &str) -> (String, jsonwebtoken::EncodingKey) {
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let jwk = json!({
        "kty": "RSA", "kid": "client-key-1", "use": "sig", "alg": "PS256",
        "n": b64(rsa.n().to_vec()), "e": b64(rsa.e().to_vec()),
    });
    let mut metadata = json!({
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [jwk]},
        "grant_types": ["client_credentials"],
    });
    if !scope.is_empty() {
        metadata["scope"] = json!(scope);
    }
    let client_id = create_client(server, &metadata);
    let key = jsonwebtoken::EncodingKey::from_rsa_der(&rsa.private_key_to_der().unwrap());
    (client_id, key)
}

/// The form parameters that authenticate a private_key_jwt client (a fresh assertion each time).
fn client_auth(server: &Server, client: &(String, jsonwebtoken::EncodingKey)) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let jti = format!("jti-{}", N.fetch_add(1, Ordering::Relaxed));
    let a = assertion(&client.0, &issuer(server), &client.1, &jti);
    format!("client_assertion_type={ASSERTION_TYPE}&client_assertion={a}")
}

/// An access token from the client_credentials grant.
fn cc_token(server: &Server, client: &(String, jsonwebtoken::EncodingKey), scope: &str) -> String {
    let body = format!(
        "grant_type=client_credentials&scope={scope}&{}",
        client_auth(server, client)
    );
    let (status, _, resp) = post_form(server.port, "/token", &body);
    assert!(status.contains("200"), "{status} {resp}");
    let resp: Value = serde_json::from_str(&resp).unwrap();
    resp["access_token"].as_str().unwrap().to_owned()
}

/// `GET path` with `Authorization: Bearer token` (none if `token` is `None`).
fn get_with(
    port: u16,
    path: &str,
    token: Option<&str>,
    identity: Identity<'_>,
) -> (String, String, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    request_as(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"),
        identity,
    )
}

fn post_to(port: u16, path: &str, body: &str, identity: Identity<'_>) -> (String, String, String) {
    request_as(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        identity,
    )
}

/// The WWW-Authenticate value (lower-cased by the harness), if any.
fn challenge(headers: &str) -> Option<String> {
    headers
        .lines()
        .find_map(|l| l.strip_prefix("www-authenticate:"))
        .map(|v| v.trim().to_owned())
}

fn description(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap();
    v["error_description"].as_str().unwrap().to_owned()
}

/// Asserts a `401 invalid_token` with its Bearer challenge; returns the description.
fn assert_invalid_token(resp: &(String, String, String)) -> String {
    let (status, headers, body) = resp;
    assert!(status.contains("401"), "{status} {body}");
    assert_eq!(error_code(body), "invalid_token", "{body}");
    assert_eq!(
        challenge(headers).as_deref(),
        Some("bearer error=\"invalid_token\""),
        "{headers}"
    );
    description(body)
}

/// Verifies an access token against the served JWKS with jsonwebtoken; returns its claims.
fn inspect(server: &Server, token: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(&get(server.port, "/jwks").2).unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let iss = issuer(server);
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&[iss.as_str()]);
    validation.set_issuer(&[iss.as_str()]);
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap()
    .claims
}

fn parts(token: &str) -> (Value, Value, String) {
    let mut p = token.split('.');
    let header = serde_json::from_slice(&unb64(p.next().unwrap())).unwrap();
    let claims = serde_json::from_slice(&unb64(p.next().unwrap())).unwrap();
    (header, claims, p.next().unwrap().to_owned())
}

/// HS256 over `header.claims` with `secret` as the HMAC key, computed with OpenSSL.
fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let key = openssl::pkey::PKey::hmac(secret).unwrap();
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
    signer.update(input.as_bytes()).unwrap();
    format!("{input}.{}", b64(signer.sign_to_vec().unwrap()))
}

fn introspect(
    server: &Server,
    client: &(String, jsonwebtoken::EncodingKey),
    params: &str,
) -> Value {
    let body = format!("{params}&{}", client_auth(server, client));
    let (status, headers, resp) = post_form(server.port, "/introspect", &body);
    assert!(status.contains("200"), "{status} {resp}");
    assert!(headers.contains("cache-control: no-store"), "{headers}");
    assert!(
        headers.contains("content-type: application/json"),
        "{headers}"
    );
    serde_json::from_str(&resp).unwrap()
}

fn revoke(
    server: &Server,
    client: &(String, jsonwebtoken::EncodingKey),
    params: &str,
) -> (String, String, String) {
    let body = format!("{params}&{}", client_auth(server, client));
    post_form(server.port, "/revoke", &body)
}

#[test]
fn userinfo_takes_bearer_tokens_in_the_header_only_and_refuses_forgeries() {
    let server = start();
    let client = register(&server, "openid accounts");
    let iss = issuer(&server);

    // Discovery lists the endpoints and their mTLS aliases.
    let discovery: Value =
        serde_json::from_str(&get(server.port, "/.well-known/openid-configuration").2).unwrap();
    assert_eq!(discovery["userinfo_endpoint"], format!("{iss}/userinfo"));
    assert_eq!(
        discovery["introspection_endpoint"],
        format!("{iss}/introspect")
    );
    assert_eq!(discovery["revocation_endpoint"], format!("{iss}/revoke"));
    let mtls = format!("https://localhost:{}", server.mtls_port);
    for (name, path) in [
        ("userinfo_endpoint", "/userinfo"),
        ("introspection_endpoint", "/introspect"),
        ("revocation_endpoint", "/revoke"),
    ] {
        assert_eq!(
            discovery["mtls_endpoint_aliases"][name],
            format!("{mtls}{path}")
        );
    }
    assert!(
        discovery["claims_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("email"))
    );

    let accounts = cc_token(&server, &client, "accounts");
    let claims = inspect(&server, &accounts);
    assert_eq!(claims["scope"], "accounts");

    // No Authorization header: 401 with a bare Bearer challenge (RFC 6750 §3.1: no error code).
    let (status, headers, body) = get_with(server.port, "/userinfo", None, None);
    assert!(status.contains("401"), "{status}");
    assert_eq!(challenge(&headers).as_deref(), Some("bearer"), "{headers}");
    error_code(&body);
    // Another scheme is no bearer credential either.
    let (status, headers, _) = request(
        server.port,
        "GET /userinfo HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic YTpi\r\n\
         Connection: close\r\n\r\n",
    );
    assert!(status.contains("401"), "{status}");
    assert_eq!(challenge(&headers).as_deref(), Some("bearer"), "{headers}");

    // The token in the query or the body (RFC 6750 section 2.3 / 2.2): read for a client without a
    // compliance level (this one), so the scope check answers (403); refused for a client with a
    // level (tests/compliance.rs). Sent two ways at once: 400 invalid_request.
    let (status, _, body) = get_with(
        server.port,
        &format!("/userinfo?access_token={accounts}"),
        None,
        None,
    );
    assert!(status.contains("403"), "{status} {body}");
    assert_eq!(error_code(&body), "insufficient_scope");
    let (status, _, body) = post_form(
        server.port,
        "/userinfo",
        &format!("access_token={accounts}"),
    );
    assert!(status.contains("403"), "{status} {body}");
    assert_eq!(error_code(&body), "insufficient_scope");
    let (status, _, body) = get_with(
        server.port,
        &format!("/userinfo?access_token={accounts}"),
        Some(&accounts),
        None,
    );
    assert!(status.contains("400"), "{status} {body}");
    assert_eq!(error_code(&body), "invalid_request");

    // A valid token without openid: 403 insufficient_scope with its challenge. (A
    // client_credentials token is a token of the client, not of a user: it has no business at
    // /userinfo, and without openid the scope check says so first.)
    let (status, headers, body) = get_with(server.port, "/userinfo", Some(&accounts), None);
    assert!(status.contains("403"), "{status} {body}");
    assert_eq!(error_code(&body), "insufficient_scope");
    assert_eq!(
        challenge(&headers).as_deref(),
        Some("bearer error=\"insufficient_scope\""),
        "{headers}"
    );
    // POST works the same way.
    let (status, _, body) = request(
        server.port,
        &format!(
            "POST /userinfo HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {accounts}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(status.contains("403"), "{status} {body}");

    // With openid, the token's sub is the client, which is not a user of this server:
    // 401 invalid_token (the token does not identify a user whose claims could be released).
    let openid = cc_token(&server, &client, "openid");
    let why = assert_invalid_token(&get_with(server.port, "/userinfo", Some(&openid), None));
    assert!(why.contains("not a user"), "{why}");

    // Forgeries, all built from the genuine token with OpenSSL: 401 invalid_token.
    let (header, claims, signature) = parts(&accounts);
    let with_openid = {
        let mut c = claims.clone();
        c["scope"] = json!("openid accounts");
        c
    };
    // 1. One signature byte changed.
    let mut sig = unb64(&signature);
    sig[10] ^= 0x01;
    let tampered_sig = format!(
        "{}.{}.{}",
        b64(header.to_string()),
        b64(claims.to_string()),
        b64(&sig)
    );
    // 2. The claims changed, the signature kept.
    let tampered_claims = format!(
        "{}.{}.{signature}",
        b64(header.to_string()),
        b64(with_openid.to_string())
    );
    // 3. alg none, with and without the old signature.
    let none_header = json!({"alg": "none", "typ": "at+jwt", "kid": header["kid"]});
    let alg_none = format!(
        "{}.{}.",
        b64(none_header.to_string()),
        b64(with_openid.to_string())
    );
    let alg_none_sig = format!("{alg_none}{signature}");
    // 4. HS256 keyed with the served public key, in every encoding a confused verifier might use.
    let jwks: Value = serde_json::from_str(&get(server.port, "/jwks").2).unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap()
        .clone();
    let rsa = openssl::rsa::Rsa::from_public_components(
        openssl::bn::BigNum::from_slice(&unb64(jwk["n"].as_str().unwrap())).unwrap(),
        openssl::bn::BigNum::from_slice(&unb64(jwk["e"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let hs_header = json!({"alg": "HS256", "typ": "at+jwt", "kid": header["kid"]});
    let secrets: Vec<Vec<u8>> = vec![
        rsa.public_key_to_pem().unwrap(),
        rsa.public_key_to_pem_pkcs1().unwrap(),
        rsa.public_key_to_der().unwrap(),
        jwk.to_string().into_bytes(),
        unb64(jwk["n"].as_str().unwrap()),
    ];
    let mut forgeries = vec![tampered_sig, tampered_claims, alg_none, alg_none_sig];
    forgeries.extend(secrets.iter().map(|s| hs256(&hs_header, &with_openid, s)));
    // 5. Not a JWT at all.
    forgeries.push("not-a-token".into());
    for forged in &forgeries {
        assert_invalid_token(&get_with(server.port, "/userinfo", Some(forged), None));
    }
    // The genuine token still gets past verification to the scope check.
    let (status, _, _) = get_with(server.port, "/userinfo", Some(&accounts), None);
    assert!(status.contains("403"), "{status}");
}

#[test]
fn introspection_and_revocation_for_the_owner_only() {
    let server = start();
    let a = register(&server, "accounts payments");
    let b = register(&server, "accounts");
    let token_a = cc_token(&server, &a, "accounts payments");
    let token_b = cc_token(&server, &b, "accounts");
    let claims_a = inspect(&server, &token_a);

    // The owner sees an active token and what it stands for.
    let info = introspect(&server, &a, &format!("token={token_a}"));
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["scope"], "accounts payments");
    assert_eq!(info["client_id"], a.0.as_str());
    assert_eq!(info["sub"], a.0.as_str());
    assert_eq!(info["token_type"], "Bearer");
    assert_eq!(info["exp"], claims_a["exp"]);
    assert_eq!(info["iat"], claims_a["iat"]);
    assert_eq!(info["jti"], claims_a["jti"]);
    assert_eq!(info["iss"], issuer(&server));
    assert_eq!(info["aud"], claims_a["aud"]);
    assert!(info.get("cnf").is_none());
    // A hint only orders the lookup: a wrong or unknown hint still finds the token.
    for hint in ["refresh_token", "access_token", "id_token"] {
        let info = introspect(
            &server,
            &a,
            &format!("token={token_a}&token_type_hint={hint}"),
        );
        assert_eq!(info["active"], true, "{hint}: {info}");
    }

    // Another client's token, garbage, a forged token: inactive, and nothing more said.
    assert_eq!(
        introspect(&server, &a, &format!("token={token_b}")),
        json!({"active": false})
    );
    assert_eq!(
        introspect(&server, &a, "token=garbage"),
        json!({"active": false})
    );
    let (header, mut claims, _) = parts(&token_a);
    claims["scope"] = json!("accounts payments admin");
    let forged = format!(
        "{}.{}.{}",
        b64(header.to_string()),
        b64(claims.to_string()),
        b64([0u8; 256])
    );
    assert_eq!(
        introspect(&server, &a, &format!("token={forged}")),
        json!({"active": false})
    );

    // No token: invalid_request. No client authentication: 401 invalid_client.
    let (status, _, body) = post_form(server.port, "/introspect", &client_auth(&server, &a));
    assert!(status.contains("400"), "{status} {body}");
    assert_eq!(error_code(&body), "invalid_request");
    let (status, _, body) = post_form(server.port, "/introspect", &format!("token={token_a}"));
    assert!(status.contains("401"), "{status} {body}");
    assert_eq!(error_code(&body), "invalid_client");
    let (status, _, body) = post_form(server.port, "/revoke", &format!("token={token_a}"));
    assert!(status.contains("401"), "{status} {body}");
    assert_eq!(error_code(&body), "invalid_client");

    // Revocation: another client's token is refused and stays active.
    let (status, _, body) = revoke(&server, &a, &format!("token={token_b}"));
    assert!(status.contains("400"), "{status} {body}");
    assert_eq!(error_code(&body), "invalid_request");
    assert_eq!(
        introspect(&server, &b, &format!("token={token_b}"))["active"],
        true
    );
    // Garbage, and a forged JWS naming A's jti: 200, and nothing is revoked.
    let (status, _, body) = revoke(&server, &a, "token=garbage");
    assert!(status.contains("200"), "{status} {body}");
    assert!(body.is_empty(), "{body:?}");
    let (status, _, _) = revoke(&server, &a, &format!("token={forged}"));
    assert!(status.contains("200"), "{status}");
    assert_eq!(
        introspect(&server, &a, &format!("token={token_a}"))["active"],
        true
    );
    // Missing token: invalid_request.
    let (status, _, body) = post_form(server.port, "/revoke", &client_auth(&server, &a));
    assert!(status.contains("400"), "{status} {body}");
    assert_eq!(error_code(&body), "invalid_request");

    // Before revocation the token passes verification at /userinfo (and stops at the scope
    // check); the owner revokes it (with an unknown hint, which is ignored) …
    let (status, _, _) = get_with(server.port, "/userinfo", Some(&token_a), None);
    assert!(status.contains("403"), "{status}");
    let (status, headers, body) = revoke(
        &server,
        &a,
        &format!("token={token_a}&token_type_hint=something_else"),
    );
    assert!(status.contains("200"), "{status} {body}");
    assert!(body.is_empty(), "{body:?}");
    assert!(headers.contains("cache-control: no-store"), "{headers}");
    // … and it is inactive, and refused at /userinfo because it was revoked.
    assert_eq!(
        introspect(&server, &a, &format!("token={token_a}")),
        json!({"active": false})
    );
    let why = assert_invalid_token(&get_with(server.port, "/userinfo", Some(&token_a), None));
    assert!(why.contains("revoked"), "{why}");
    // Revoking again is no error.
    let (status, _, _) = revoke(&server, &a, &format!("token={token_a}"));
    assert!(status.contains("200"), "{status}");
    // B's token was untouched.
    assert_eq!(
        introspect(&server, &b, &format!("token={token_b}"))["active"],
        true
    );
}

#[test]
fn certificate_bound_tokens_need_their_certificate() {
    let server = start();
    let (cert, key) = certificate("bound client", None, false);
    let rsa = key.rsa().unwrap();
    let client_id = create_client(
        &server,
        &json!({
            "token_endpoint_auth_method": "self_signed_tls_client_auth",
            "jwks": {"keys": [{"kty": "RSA", "n": b64(rsa.n().to_vec()), "e": b64(rsa.e().to_vec())}]},
            "tls_client_certificate_bound_access_tokens": true,
            "grant_types": ["client_credentials"],
            "scope": "accounts",
        }),
    );
    let me = Some((&cert, &key));
    let body = format!("grant_type=client_credentials&client_id={client_id}&scope=accounts");
    let (status, _, resp) = post_form_as(server.mtls_port, &body, me);
    assert!(status.contains("200"), "{status} {resp}");
    let token: Value = serde_json::from_str(&resp).unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let claims = inspect(&server, &token);
    assert_eq!(claims["cnf"]["x5t#S256"], thumbprint(&cert));

    // With its certificate, the token passes verification (and stops at the scope check).
    let (status, _, body) = get_with(server.mtls_port, "/userinfo", Some(&token), me);
    assert!(status.contains("403"), "{status} {body}");
    assert_eq!(error_code(&body), "insufficient_scope");
    // Without a certificate (main listener, and the mTLS one without presenting one): 401.
    let why = assert_invalid_token(&get_with(server.port, "/userinfo", Some(&token), None));
    assert!(why.contains("certificate"), "{why}");
    assert_invalid_token(&get_with(server.mtls_port, "/userinfo", Some(&token), None));
    // With another certificate: 401.
    let (other, other_key) = certificate("someone else", None, false);
    let why = assert_invalid_token(&get_with(
        server.mtls_port,
        "/userinfo",
        Some(&token),
        Some((&other, &other_key)),
    ));
    assert!(why.contains("another client certificate"), "{why}");

    // Introspection by the owner (authenticated by its certificate) reports the binding: the
    // thumbprint is the certificate's SHA-256 computed here with OpenSSL.
    let auth = format!("client_id={client_id}");
    let (status, headers, resp) = post_to(
        server.mtls_port,
        "/introspect",
        &format!("token={token}&{auth}"),
        me,
    );
    assert!(status.contains("200"), "{status} {resp}");
    assert!(headers.contains("cache-control: no-store"), "{headers}");
    let info: Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["cnf"]["x5t#S256"], thumbprint(&cert));
    assert_eq!(info["client_id"], client_id.as_str());
    assert_eq!(info["scope"], "accounts");
    assert_eq!(info["exp"], claims["exp"]);

    // The owner revokes it over mTLS; then it is refused even with its certificate.
    let (status, _, resp) = post_to(
        server.mtls_port,
        "/revoke",
        &format!("token={token}&{auth}"),
        me,
    );
    assert!(status.contains("200"), "{status} {resp}");
    let why = assert_invalid_token(&get_with(server.mtls_port, "/userinfo", Some(&token), me));
    assert!(why.contains("revoked"), "{why}");
}

/// Refresh tokens come from the authorization-code flow; here one is written into the database
/// as that flow records it (its SHA-256, the grant it belongs to), and a genuine access token is
/// attached to the same grant, to check introspection and whole-grant revocation.
#[test]
fn refresh_tokens_introspect_and_revoke_their_whole_grant() {
    let server = start();
    let a = register(&server, "accounts");
    let b = register(&server, "accounts");
    let access = cc_token(&server, &a, "accounts");
    let jti = inspect(&server, &access)["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    let refresh = b64(openssl::sha::sha256(b"a refresh token for this test only"));
    let hash = b64(openssl::sha::sha256(refresh.as_bytes()));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let db = format!(
        "sqlite://{}",
        server.dir.path().join("strongroom.db").display()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = sqlx::sqlite::SqlitePool::connect(&db).await.unwrap();
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, grant_id, client_id, data, created_at, \
             expires_at) VALUES ($1, 'grant-1', $2, $3, $4, $5)",
        )
        .bind(&hash)
        .bind(&a.0)
        .bind(json!({"sub": "user-1", "scope": "openid accounts"}).to_string())
        .bind(now)
        .bind(now + 3600)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("UPDATE access_tokens SET grant_id = 'grant-1' WHERE jti = $1")
            .bind(&jti)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });

    for hint in [
        "",
        "&token_type_hint=refresh_token",
        "&token_type_hint=access_token",
    ] {
        let info = introspect(&server, &a, &format!("token={refresh}{hint}"));
        assert_eq!(info["active"], true, "{info}");
        assert_eq!(info["token_type"], "refresh_token");
        assert_eq!(info["client_id"], a.0.as_str());
        assert_eq!(info["sub"], "user-1");
        assert_eq!(info["scope"], "openid accounts");
        assert_eq!(info["exp"], now + 3600);
    }
    assert_eq!(
        introspect(&server, &b, &format!("token={refresh}")),
        json!({"active": false})
    );
    // Another client may not revoke it.
    let (status, _, body) = revoke(&server, &b, &format!("token={refresh}"));
    assert!(status.contains("400"), "{status} {body}");
    assert_eq!(error_code(&body), "invalid_request");
    assert_eq!(
        introspect(&server, &a, &format!("token={refresh}"))["active"],
        true
    );
    // The owner revokes it: the refresh token and the grant's access token go down together.
    let (status, _, body) = revoke(
        &server,
        &a,
        &format!("token={refresh}&token_type_hint=refresh_token"),
    );
    assert!(status.contains("200"), "{status} {body}");
    assert_eq!(
        introspect(&server, &a, &format!("token={refresh}")),
        json!({"active": false})
    );
    assert_eq!(
        introspect(&server, &a, &format!("token={access}")),
        json!({"active": false})
    );
    let why = assert_invalid_token(&get_with(server.port, "/userinfo", Some(&access), None));
    assert!(why.contains("revoked"), "{why}");
}

/// POST `body` to `path` with `Authorization: Basic` of `client_id:secret`.
fn post_basic(
    server: &Server,
    path: &str,
    client_id: &str,
    body: &str,
) -> (String, String, String) {
    post_basic_as(server.port, path, client_id, body, None)
}

fn post_basic_as(
    port: u16,
    path: &str,
    client_id: &str,
    body: &str,
    identity: Identity<'_>,
) -> (String, String, String) {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:secret"));
    request_as(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Authorization: Basic {basic}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        identity,
    )
}

#[test]
fn client_secrets_basic_or_posted_are_refused_as_rfc_6749_says() {
    let server = start();
    let client = register(&server, "accounts");
    let token = cc_token(&server, &client, "accounts");
    for path in ["/token", "/par", "/introspect", "/revoke"] {
        // Basic alone: client_secret_basic is not offered, so 401 invalid_client with a Basic
        // challenge, "matching the authentication scheme used by the client" (§5.2).
        let body = match path {
            "/token" => "grant_type=client_credentials".to_owned(),
            _ => format!("token={token}"),
        };
        let (status, headers, resp) = post_basic(&server, path, &client.0, &body);
        assert!(status.contains("401"), "{path}: {status} {resp}");
        assert_eq!(error_code(&resp), "invalid_client", "{path}: {resp}");
        assert_eq!(
            challenge(&headers).as_deref(),
            Some("basic realm=\"strongroom\""),
            "{path}: {headers}"
        );
        // Basic beside a valid assertion: "more than one mechanism", 400 invalid_request.
        let with_assertion = format!("{body}&{}", client_auth(&server, &client));
        let (status, _, resp) = post_basic(&server, path, &client.0, &with_assertion);
        assert!(status.contains("400"), "{path}: {status} {resp}");
        assert_eq!(error_code(&resp), "invalid_request", "{path}: {resp}");
        // client_secret_post the same way: alone 401 invalid_client, beside an assertion 400.
        let posted = format!("{body}&client_id={}&client_secret=s3cret", client.0);
        let (status, _, resp) = post_form(server.port, path, &posted);
        assert!(status.contains("401"), "{path}: {status} {resp}");
        assert_eq!(error_code(&resp), "invalid_client", "{path}: {resp}");
        let posted = format!(
            "{body}&client_secret=s3cret&{}",
            client_auth(&server, &client)
        );
        let (status, _, resp) = post_form(server.port, path, &posted);
        assert!(status.contains("400"), "{path}: {status} {resp}");
        assert_eq!(error_code(&resp), "invalid_request", "{path}: {resp}");
    }
    // On the mTLS listener with a client certificate (which every FAPI client presents there,
    // for authentication or for bound tokens alone), Basic is still the method tried: 401.
    let (cert, key) = certificate("a client", None, false);
    let (status, headers, resp) = post_basic_as(
        server.mtls_port,
        "/token",
        &client.0,
        "grant_type=client_credentials",
        Some((&cert, &key)),
    );
    assert!(status.contains("401"), "{status} {resp}");
    assert!(
        challenge(&headers).is_some_and(|c| c.starts_with("basic ")),
        "{headers}"
    );
    // Nothing above revoked the token.
    assert_eq!(
        introspect(&server, &client, &format!("token={token}"))["active"],
        true
    );
}

#[test]
fn a_client_granted_no_scope_gets_no_scope_member() {
    let server = start();
    // Registered without a scope: client_credentials grants none.
    let client = register(&server, "");
    let body = format!(
        "grant_type=client_credentials&{}",
        client_auth(&server, &client)
    );
    let (status, _, resp) = post_form(server.port, "/token", &body);
    assert!(status.contains("200"), "{status} {resp}");
    let resp: Value = serde_json::from_str(&resp).unwrap();
    // Not `"scope": ""` (RFC 6749 §5.1, RFC 9068 §2.2.3, RFC 7662 §2.2: an optional member).
    assert!(resp.get("scope").is_none(), "{resp}");
    let token = resp["access_token"].as_str().unwrap();
    assert!(inspect(&server, token).get("scope").is_none());
    let info = introspect(&server, &client, &format!("token={token}"));
    assert_eq!(info["active"], true, "{info}");
    assert!(info.get("scope").is_none(), "{info}");
}
