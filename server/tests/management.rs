//! Black-box: the management API (`/api/v2/clients`), `strongroom users`, clients whose keys are
//! at a `jwks_uri` served over HTTPS by this test, and RFC 9440 `Client-Cert` from a trusted
//! proxy. The real binary on a fresh SoftHSM2 token, reached with OpenSSL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use serde_json::{Value, json};

const ALL_SCOPES: &str = "read:clients create:clients update:clients delete:clients";
const JWT_BEARER: &str = "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer";

fn b64(b: Vec<u8>) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// An RSA key and its public JWK under `kid`.
fn rsa_key(kid: &str) -> (jsonwebtoken::EncodingKey, Value) {
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let jwk = json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "PS256",
                     "n": b64(rsa.n().to_vec()), "e": b64(rsa.e().to_vec())});
    let key = jsonwebtoken::EncodingKey::from_rsa_der(&rsa.private_key_to_der().unwrap());
    (key, jwk)
}

fn signed_assertion(
    client_id: &str,
    aud: &str,
    key: &jsonwebtoken::EncodingKey,
    kid: &str,
) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::PS256);
    header.kid = Some(kid.into());
    let jti = format!("jti-{}-{}", now, rand_serial());
    let claims = json!({"iss": client_id, "sub": client_id, "aud": aud,
                        "exp": now + 60, "iat": now, "jti": jti});
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

/// client_credentials with private_key_jwt; `extra` is appended to the form.
fn token_request(
    server: &Server,
    client_id: &str,
    key: &jsonwebtoken::EncodingKey,
    kid: &str,
    extra: &str,
) -> (String, String) {
    let issuer = format!("https://localhost:{}", server.port);
    let a = signed_assertion(client_id, &issuer, key, kid);
    let form = format!(
        "grant_type=client_credentials&client_assertion_type={JWT_BEARER}&client_assertion={a}{extra}"
    );
    let (status, _, body) = post_form(server.port, "/token", &form);
    (status, body)
}

fn access_token(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

/// A management client registered with the CLI (as an operator bootstraps one), allowed
/// `scope`; returns its id and key (kid "mgmt").
fn management_client(server: &Server, scope: &str) -> (String, jsonwebtoken::EncodingKey) {
    let (key, jwk) = rsa_key("mgmt");
    let id = create_client(
        server,
        &json!({
            "client_name": "operator console",
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [jwk]},
            "grant_types": ["client_credentials"],
            "scope": scope,
        }),
    );
    (id, key)
}

/// A token for the management API (`audience={issuer}/api/v2/`) with `scope`.
fn management_token(
    server: &Server,
    client: &(String, jsonwebtoken::EncodingKey),
    scope: &str,
) -> String {
    let audience = format!("https%3A%2F%2Flocalhost%3A{}%2Fapi%2Fv2%2F", server.port);
    let (status, body) = token_request(
        server,
        &client.0,
        &client.1,
        "mgmt",
        &format!("&scope={}&audience={audience}", scope.replace(' ', "+")),
    );
    assert!(status.contains("200"), "{status} {body}");
    access_token(&body)
}

/// One request to the API; `body` with `content_type` when given.
fn api(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: &str,
) -> (String, String, String) {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(t) = token {
        raw.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(ct) = content_type {
        raw.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    raw.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let answer = request(server.port, &raw);
    assert!(
        answer.1.contains("cache-control: no-store"),
        "{method} {path}: {} {}",
        answer.0,
        answer.1
    );
    answer
}

fn json_api(
    server: &Server,
    method: &str,
    path: &str,
    token: &str,
    body: &Value,
) -> (String, String, String) {
    api(
        server,
        method,
        path,
        Some(token),
        Some("application/json"),
        &body.to_string(),
    )
}

#[test]
fn management_api_crud_with_scopes_and_rfc_7591_errors() {
    let server = start();
    let admin = management_client(&server, ALL_SCOPES);
    let token = management_token(&server, &admin, ALL_SCOPES);
    let clients = "/api/v2/clients";

    // No token: 401 with a Bearer challenge.
    let (status, headers, body) = api(&server, "GET", clients, None, None, "");
    assert!(status.contains("401"), "{status} {body}");
    assert!(headers.contains("www-authenticate: bearer"), "{headers}");
    error_code(&body);
    // A good token for another audience (a plain client_credentials token: aud = issuer) is no
    // token for this API: 401 invalid_token (RFC 9068 §4, RFC 6750 §3.1).
    let (status, body) =
        token_request(&server, &admin.0, &admin.1, "mgmt", "&scope=read%3Aclients");
    assert!(status.contains("200"), "{status} {body}");
    let (status, _, body) = api(
        &server,
        "GET",
        clients,
        Some(&access_token(&body)),
        None,
        "",
    );
    assert!(status.contains("401"), "{status} {body}");
    assert_eq!(error_code(&body), "invalid_token");
    // A management token without the operation's scope: 403 insufficient_scope.
    let reader = management_token(&server, &admin, "read:clients");
    let (status, _, body) = api(&server, "GET", clients, Some(&reader), None, "");
    assert!(status.contains("200"), "{status} {body}");
    let (status, headers, body) = json_api(&server, "POST", clients, &reader, &json!({}));
    assert!(status.contains("403"), "{status} {body}");
    assert_eq!(error_code(&body), "insufficient_scope");
    assert!(headers.contains("insufficient_scope"), "{headers}");
    for (method, path) in [
        ("PATCH", format!("{clients}/x")),
        ("DELETE", format!("{clients}/x")),
    ] {
        let (status, _, body) = json_api(&server, method, &path, &reader, &json!({}));
        assert!(status.contains("403"), "{method} {status} {body}");
    }

    // Create: the server picks the client_id; compliance_level is there, null.
    let (key, jwk) = rsa_key("app-key");
    let metadata = json!({
        "client_name": "Bank app",
        "redirect_uris": ["https://app.example/cb"],
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [jwk]},
        "grant_types": ["authorization_code", "client_credentials"],
        "scope": "accounts",
    });
    let (status, headers, body) = json_api(&server, "POST", clients, &token, &metadata);
    assert!(status.contains("201"), "{status} {body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    let id = created["client_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 43, "{id}");
    assert!(headers.contains(&format!(
        "location: /api/v2/clients/{}",
        id.to_ascii_lowercase()
    )));
    assert_eq!(created["client_name"], "Bank app");
    assert!(created["compliance_level"].is_null() && created.get("compliance_level").is_some());
    // The client works at once: a token with its key.
    let (status, body) = token_request(&server, &id, &key, "app-key", "&scope=accounts");
    assert!(status.contains("200"), "{status} {body}");
    // Keys for other purposes beside a usable one are left alone (RFC 7517 §5): an RS256 key,
    // a P-384 key, an encryption key.
    let mut rs256 = jwk.clone();
    rs256["kid"] = json!("for-another-idp");
    rs256["alg"] = json!("RS256");
    let mut enc = jwk.clone();
    enc["kid"] = json!("enc");
    enc["use"] = json!("enc");
    enc["alg"] = json!("RSA-OAEP-256");
    let p384 = json!({"kty": "EC", "crv": "P-384", "kid": "p384",
                      "x": b64(vec![7u8; 48]), "y": b64(vec![9u8; 48])});
    let mut mixed = metadata.clone();
    mixed["jwks"] = json!({"keys": [rs256, jwk, p384, enc]});
    let (status, _, body) = json_api(&server, "POST", clients, &token, &mixed);
    assert!(status.contains("201"), "{status} {body}");
    let mixed_id = serde_json::from_str::<Value>(&body).unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = token_request(&server, &mixed_id, &key, "app-key", "&scope=accounts");
    assert!(status.contains("200"), "{status} {body}");
    let (status, _, body) = api(
        &server,
        "DELETE",
        &format!("{clients}/{mixed_id}"),
        Some(&token),
        None,
        "",
    );
    assert!(status.contains("204"), "{status} {body}");

    // A chosen client_id, once.
    let chosen = json!({"client_id": "bank-app", "token_endpoint_auth_method": "private_key_jwt",
                        "jwks_uri": "https://keys.example/jwks", "grant_types": ["client_credentials"]});
    let (status, _, body) = json_api(&server, "POST", clients, &token, &chosen);
    assert!(status.contains("201"), "{status} {body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["client_id"],
        "bank-app"
    );
    let (status, _, body) = json_api(&server, "POST", clients, &token, &chosen);
    assert!(status.contains("409"), "{status} {body}");
    error_code(&body);

    // Read one, read all.
    let one = format!("{clients}/{id}");
    let (status, _, body) = api(&server, "GET", &one, Some(&token), None, "");
    assert!(status.contains("200"), "{status} {body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), created);
    let (_, _, body) = api(&server, "GET", clients, Some(&token), None, "");
    let all: Vec<Value> = serde_json::from_str(&body).unwrap();
    let mut ids: Vec<&str> = all
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want = vec![admin.0.as_str(), id.as_str(), "bank-app"];
    want.sort_unstable();
    assert_eq!(ids, want);

    // The seed's PATCH, then GET returns it; null clears it.
    let (status, _, body) = json_api(
        &server,
        "PATCH",
        &one,
        &token,
        &json!({"compliance_level": "fapi1_adv_mtls_par"}),
    );
    assert!(status.contains("200"), "{status} {body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["compliance_level"],
        "fapi1_adv_mtls_par"
    );
    let (_, _, body) = api(&server, "GET", &one, Some(&token), None, "");
    let got: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(got["compliance_level"], "fapi1_adv_mtls_par");
    assert_eq!(
        got["client_name"], "Bank app",
        "a patch leaves other fields alone"
    );
    let (status, _, body) = api(
        &server,
        "PATCH",
        &one,
        Some(&token),
        Some("application/merge-patch+json"),
        r#"{"compliance_level": null, "client_name": null}"#,
    );
    assert!(status.contains("200"), "{status} {body}");
    let (_, _, body) = api(&server, "GET", &one, Some(&token), None, "");
    let got: Value = serde_json::from_str(&body).unwrap();
    assert!(got["compliance_level"].is_null() && got.get("compliance_level").is_some());
    assert!(got.get("client_name").is_none(), "{got}");
    assert_eq!(got["redirect_uris"], json!(["https://app.example/cb"]));

    // Refusals; none of them changes the client.
    let before = body;
    for (method, path, patch, code) in [
        (
            "PATCH",
            one.as_str(),
            json!({"redirect_uris": ["http://app.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            "PATCH",
            one.as_str(),
            json!({"redirect_uris": ["https://app.example/cb#x"]}),
            "invalid_redirect_uri",
        ),
        (
            "PATCH",
            one.as_str(),
            json!({"redirect_uris": null}),
            "invalid_redirect_uri",
        ),
        (
            "PATCH",
            one.as_str(),
            json!({"colour": "blue"}),
            "invalid_client_metadata",
        ),
        (
            "PATCH",
            one.as_str(),
            json!({"colour": null}),
            "invalid_client_metadata",
        ),
        (
            "PATCH",
            one.as_str(),
            json!({"client_id": "other"}),
            "invalid_client_metadata",
        ),
        (
            "PATCH",
            one.as_str(),
            json!({"compliance_level": "fapi3"}),
            "invalid_client_metadata",
        ),
        (
            "PATCH",
            one.as_str(),
            json!({"jwks_uri": "https://keys.example/jwks"}),
            "invalid_client_metadata",
        ),
        (
            "PATCH",
            one.as_str(),
            json!(["not", "an", "object"]),
            "invalid_client_metadata",
        ),
        (
            "POST",
            clients,
            json!({"token_endpoint_auth_method": "self_signed_tls_client_auth", "grant_types": ["client_credentials"],
                   "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x5c": ["not base64!"]}]}}),
            "invalid_client_metadata",
        ),
        (
            "POST",
            clients,
            json!({"token_endpoint_auth_method": "self_signed_tls_client_auth", "grant_types": ["client_credentials"],
                   "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x5c": []}]}}),
            "invalid_client_metadata",
        ),
        (
            "POST",
            clients,
            json!({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "http://keys.example/jwks", "grant_types": ["client_credentials"]}),
            "invalid_client_metadata",
        ),
        (
            "POST",
            clients,
            json!({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://k.example/", "redirect_uris": ["ftp://x/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            "POST",
            clients,
            json!({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://k.example/", "grant_types": ["client_credentials"], "colour": 1}),
            "invalid_client_metadata",
        ),
        (
            "POST",
            clients,
            json!({"client_id": "a/b", "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://k.example/", "grant_types": ["client_credentials"]}),
            "invalid_client_metadata",
        ),
        (
            "POST",
            clients,
            json!("a string"),
            "invalid_client_metadata",
        ),
    ]
    .into_iter()
    .chain(never_authenticate(clients))
    {
        let (status, _, body) = json_api(&server, method, path, &token, &patch);
        assert!(status.contains("400"), "{method} {patch}: {status} {body}");
        assert_eq!(error_code(&body), code, "{method} {patch}");
    }
    // Not JSON, or not declared as JSON: invalid_request.
    let (status, _, body) = api(
        &server,
        "POST",
        clients,
        Some(&token),
        Some("application/json"),
        r#"{"client_name": "#,
    );
    assert!(status.contains("400"), "{status} {body}");
    assert_eq!(error_code(&body), "invalid_request");
    let (status, _, body) = api(
        &server,
        "PATCH",
        &one,
        Some(&token),
        Some("text/plain"),
        "{}",
    );
    assert!(status.contains("400"), "{status} {body}");
    assert_eq!(error_code(&body), "invalid_request");
    let (status, _, body) = api(&server, "POST", clients, Some(&token), None, "{}");
    assert!(status.contains("400"), "{status} {body}");
    assert_eq!(error_code(&body), "invalid_request");
    // 1 MiB: 413, an error object.
    let big = format!(r#"{{"client_name": "{}"}}"#, "x".repeat(1 << 20));
    let (status, _, body) = api(
        &server,
        "PATCH",
        &one,
        Some(&token),
        Some("application/json"),
        &big,
    );
    assert!(status.contains("413"), "{status}");
    error_code(&body);
    let (_, _, after) = api(&server, "GET", &one, Some(&token), None, "");
    assert_eq!(after, before);
    // Another method: 405 with Allow.
    let (status, headers, body) = api(
        &server,
        "PUT",
        &one,
        Some(&token),
        Some("application/json"),
        "{}",
    );
    assert!(status.contains("405"), "{status} {body}");
    assert!(headers.contains("allow: get, patch, delete"), "{headers}");

    // Delete; then it is gone, and the deleted client can no longer get tokens.
    let (status, _, body) = api(&server, "DELETE", &one, Some(&token), None, "");
    assert!(status.contains("204"), "{status} {body}");
    assert!(body.is_empty());
    let (status, _, body) = api(&server, "GET", &one, Some(&token), None, "");
    assert!(status.contains("404"), "{status} {body}");
    error_code(&body);
    let (status, _, body) = api(&server, "DELETE", &one, Some(&token), None, "");
    assert!(status.contains("404"), "{status} {body}");
    let (status, _, body) = api(
        &server,
        "PATCH",
        &one,
        Some(&token),
        Some("application/json"),
        "{}",
    );
    assert!(status.contains("404"), "{status} {body}");
    let (status, body) = token_request(&server, &id, &key, "app-key", "");
    assert!(status.contains("401"), "{status} {body}");
}

/// Runs `strongroom users …` against a database-only configuration.
fn users(config: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["--config", config.to_str().unwrap(), "users"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        Ok(()) => {}
        // A command that refuses its arguments may exit before reading stdin; its output and
        // status still say what happened.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => panic!("writing the command's stdin: {e}"),
    }
    child.wait_with_output().unwrap()
}

#[test]
fn users_create_reads_the_password_from_stdin_or_a_file_and_stores_an_argon2id_hash() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    let config = dir.path().join("strongroom.toml");
    std::fs::write(
        &config,
        format!("database_url = \"sqlite://{}\"\n", db.display()),
    )
    .unwrap();
    let claims = dir.path().join("claims.json");
    std::fs::write(
        &claims,
        r#"{"name": "Alice Liddell", "email": "alice@example.com"}"#,
    )
    .unwrap();

    let out = users(
        &config,
        &[
            "create",
            "--username",
            "alice",
            "--claims-file",
            claims.to_str().unwrap(),
        ],
        "correct horse battery\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["username"], "alice");
    let alice_id = created["user_id"].as_str().unwrap().to_owned();
    assert_eq!(alice_id.len(), 43);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("correct horse"));

    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, "another long password\n").unwrap();
    let out = users(
        &config,
        &[
            "create",
            "--username",
            "bob",
            "--password-file",
            pw_file.to_str().unwrap(),
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Refused: a taken username, a short password, a claims file with `sub`.
    let out = users(
        &config,
        &["create", "--username", "alice"],
        "some other password\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = users(&config, &["create", "--username", "carol"], "short\n");
    assert!(!out.status.success());
    std::fs::write(&claims, r#"{"sub": "admin"}"#).unwrap();
    let out = users(
        &config,
        &[
            "create",
            "--username",
            "carol",
            "--claims-file",
            claims.to_str().unwrap(),
        ],
        "long enough pw\n",
    );
    assert!(!out.status.success());

    // The database, read independently of the server's code.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows: Vec<(String, String, String, String)> = rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query_as(
            "SELECT user_id, username, password_hash, claims FROM users ORDER BY username",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    });
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (id, name, hash, claims) = &rows[0];
    assert_eq!((id.as_str(), name.as_str()), (alice_id.as_str(), "alice"));
    let claims: Value = serde_json::from_str(claims).unwrap();
    assert_eq!(claims["email"], "alice@example.com");
    use argon2::PasswordVerifier as _;
    let verify = |hash: &str, pw: &str| {
        argon2::Argon2::default()
            .verify_password(pw.as_bytes(), &argon2::PasswordHash::new(hash).unwrap())
            .is_ok()
    };
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(verify(hash, "correct horse battery"));
    assert!(!verify(hash, "correct horse battery\n"));
    assert!(verify(&rows[1].2, "another long password"));

    let out = users(&config, &["list"], "");
    assert!(out.status.success());
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = listed
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["alice", "bob"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("argon2"));
}

/// A CA and a `localhost` server certificate it issued (webpki refuses a CA certificate as the
/// server's own).
fn https_identity() -> (X509, X509, PKey<Private>) {
    use openssl::asn1::Asn1Time;
    use openssl::x509::extension::{
        BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    };
    let (ca, ca_key) = certificate("jwks_uri test CA", None, true);
    let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "localhost").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(
        &openssl::bn::BigNum::from_u32(rand_serial())
            .unwrap()
            .to_asn1_integer()
            .unwrap(),
    )
    .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(ca.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().critical().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.append_extension(ExtendedKeyUsage::new().server_auth().build().unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .dns("localhost")
        .ip("127.0.0.1")
        .build(&b.x509v3_context(Some(&ca), None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&ca_key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    (ca, b.build(), key)
}

/// A small HTTPS server (OpenSSL, a thread) answering every request with the current `body`;
/// counts the requests. Returns its port.
fn serve_jwks(
    cert: X509,
    key: PKey<Private>,
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
) -> u16 {
    use openssl::ssl::{SslAcceptor, SslMethod};
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
    acceptor.set_certificate(&cert).unwrap();
    acceptor.set_private_key(&key).unwrap();
    let acceptor = acceptor.build();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let Ok(mut tls) = acceptor.accept(tcp) else {
                continue;
            };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            hits.fetch_add(1, Ordering::SeqCst);
            let body = body.lock().unwrap().clone();
            let _ = write!(
                tls,
                "HTTP/1.1 200 OK\r\nContent-Type: application/jwk-set+json\r\n\
                 Cache-Control: max-age=3600\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.shutdown();
        }
    });
    port
}

#[test]
fn private_key_jwt_with_keys_at_a_jwks_uri_cached_and_refetched_after_an_update() {
    let (ca, cert, key) = https_identity();
    let (key1, jwk1) = rsa_key("k1");
    let (key2, jwk2) = rsa_key("k2");
    let body = Arc::new(Mutex::new(json!({"keys": [jwk1]}).to_string()));
    let hits = Arc::new(AtomicUsize::new(0));
    let jwks_port = serve_jwks(cert, key, body.clone(), hits.clone());
    let ca_pem = ca.to_pem().unwrap();
    let server = start_with("jwks_uri_ca_file = \"@DIR@/jwks-ca.pem\"", |dir| {
        std::fs::write(dir.join("jwks-ca.pem"), &ca_pem).unwrap();
    });
    let client_id = create_client(
        &server,
        &json!({
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks_uri": format!("https://localhost:{jwks_port}/jwks"),
            "grant_types": ["client_credentials"],
        }),
    );

    let (status, resp) = token_request(&server, &client_id, &key1, "k1", "");
    assert!(status.contains("200"), "{status} {resp}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Cached: a second authentication fetches nothing.
    let (status, resp) = token_request(&server, &client_id, &key1, "k1", "");
    assert!(status.contains("200"), "{status} {resp}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // The client rotates to k2 at its URI. The cached set (max-age 3600) does not know k2 yet.
    *body.lock().unwrap() = json!({"keys": [jwk2]}).to_string();
    let (status, resp) = token_request(&server, &client_id, &key2, "k2", "");
    assert!(status.contains("401"), "{status} {resp}");
    assert_eq!(error_code(&resp), "invalid_client");

    // An operator's update of the client drops the cached set: k2 now works, k1 no longer.
    let admin = management_client(&server, ALL_SCOPES);
    let token = management_token(&server, &admin, "update:clients");
    let (status, _, resp) = json_api(
        &server,
        "PATCH",
        &format!("/api/v2/clients/{client_id}"),
        &token,
        &json!({"client_name": "rotated keys"}),
    );
    assert!(status.contains("200"), "{status} {resp}");
    let (status, resp) = token_request(&server, &client_id, &key2, "k2", "");
    assert!(status.contains("200"), "{status} {resp}");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    let (status, resp) = token_request(&server, &client_id, &key1, "k1", "");
    assert!(status.contains("401"), "{status} {resp}");
}

#[test]
fn jwks_uri_with_an_untrusted_certificate_is_refused() {
    // The same kind of server, but its CA is not configured: the TLS check fails.
    let (_, cert, key) = https_identity();
    let (key1, jwk1) = rsa_key("k1");
    let hits = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(Mutex::new(json!({"keys": [jwk1]}).to_string()));
    let jwks_port = serve_jwks(cert, key, body, hits.clone());
    let server = start();
    let client_id = create_client(
        &server,
        &json!({
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks_uri": format!("https://localhost:{jwks_port}/jwks"),
            "grant_types": ["client_credentials"],
        }),
    );
    let (status, resp) = token_request(&server, &client_id, &key1, "k1", "");
    assert!(status.contains("401"), "{status} {resp}");
    assert_eq!(error_code(&resp), "invalid_client");
    assert!(resp.contains("jwks_uri"), "{resp}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "no request passed the TLS handshake"
    );
}

/// A self_signed_tls_client_auth client with bound tokens, and its certificate.
fn mtls_client(server: &Server) -> (String, X509) {
    let (cert, key) = certificate("proxied client", None, false);
    let rsa = key.rsa().unwrap();
    let id = create_client(
        server,
        &json!({
            "token_endpoint_auth_method": "self_signed_tls_client_auth",
            "jwks": {"keys": [{"kty": "RSA", "n": b64(rsa.n().to_vec()), "e": b64(rsa.e().to_vec())}]},
            "tls_client_certificate_bound_access_tokens": true,
            "grant_types": ["client_credentials"],
        }),
    );
    (id, cert)
}

/// POST /token on the MAIN listener (no TLS client certificate) with extra header lines.
fn token_via_proxy(server: &Server, client_id: &str, headers: &str) -> (String, String) {
    let form = format!("grant_type=client_credentials&client_id={client_id}");
    let raw = format!(
        "POST /token HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    let (status, _, body) = request(server.port, &raw);
    (status, body)
}

#[test]
fn client_cert_header_counts_from_a_trusted_proxy_only() {
    let server = start_with("trusted_proxies = [\"127.0.0.1\"]", |_| {});
    let (id, cert) = mtls_client(&server);
    let header = format!(
        "Client-Cert: :{}:\r\n",
        STANDARD.encode(cert.to_der().unwrap())
    );

    let (status, body) = token_via_proxy(&server, &id, &header);
    assert!(status.contains("200"), "{status} {body}");
    assert_eq!(cnf_of(&access_token(&body)), Some(thumbprint(&cert)));
    // Every endpoint sees it, PAR too: authenticated, then refused for the incomplete request
    // (400), where without the header it is 401 invalid_client.
    let par = |headers: &str| {
        let form = format!("response_type=code&client_id={id}");
        let raw = format!(
            "POST /par HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        );
        request(server.port, &raw)
    };
    let (status, _, body) = par(&header);
    assert!(status.contains("400"), "{status} {body}");
    assert_ne!(error_code(&body), "invalid_client");
    let (status, _, body) = par("");
    assert!(status.contains("401"), "{status} {body}");
    // With an (ignored here) chain too.
    let (ca, _) = certificate("some CA", None, true);
    let chain = format!(
        "Client-Cert-Chain: :{}:\r\n",
        STANDARD.encode(ca.to_der().unwrap())
    );
    let (status, body) = token_via_proxy(&server, &id, &format!("{header}{chain}"));
    assert!(status.contains("200"), "{status} {body}");
    // Malformed: 400 invalid_request.
    for bad in [
        format!(
            "Client-Cert: {}\r\n",
            STANDARD.encode(cert.to_der().unwrap())
        ),
        format!(
            "Client-Cert: :{}:\r\n",
            STANDARD.encode(b"not a certificate")
        ),
        chain.clone(),
    ] {
        let (status, body) = token_via_proxy(&server, &id, &bad);
        assert!(status.contains("400"), "{bad}: {status} {body}");
        assert_eq!(error_code(&body), "invalid_request");
    }
    // No header from the proxy: no certificate.
    let (status, body) = token_via_proxy(&server, &id, "");
    assert!(status.contains("401"), "{status} {body}");
    assert_eq!(error_code(&body), "invalid_client");

    // A server that trusts no proxy ignores the header: the client is unauthenticated.
    let untrusting = start();
    let (id, cert) = mtls_client(&untrusting);
    let header = format!(
        "Client-Cert: :{}:\r\n",
        STANDARD.encode(cert.to_der().unwrap())
    );
    let (status, body) = token_via_proxy(&untrusting, &id, &header);
    assert!(status.contains("401"), "{status} {body}");
    assert_eq!(error_code(&body), "invalid_client");
    // Even a malformed one is not looked at.
    let (status, body) = token_via_proxy(&untrusting, &id, "Client-Cert: garbage\r\n");
    assert!(status.contains("401"), "{status} {body}");
}

#[test]
fn a_registered_id_token_alg_must_be_the_keys_and_a_rotation_that_changes_it_says_who_breaks() {
    let server = start();
    let admin = management_client(&server, ALL_SCOPES);
    let token = management_token(&server, &admin, ALL_SCOPES);
    let clients = "/api/v2/clients";
    let (_, jwk) = rsa_key("k");
    let metadata = |alg: &str| {
        json!({"redirect_uris": ["https://app.example/cb"],
               "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [jwk]},
               "grant_types": ["authorization_code"], "id_token_signed_response_alg": alg})
    };
    // The ID-token key is PS256 (the default): a client registering ES256 would get
    // server_error on every token request, so it is refused at registration.
    let (status, _, body) = json_api(&server, "POST", clients, &token, &metadata("ES256"));
    assert!(status.contains("400"), "{status} {body}");
    assert_eq!(error_code(&body), "invalid_client_metadata");
    assert!(body.contains("PS256"), "{body}");
    let (status, _, body) = json_api(&server, "POST", clients, &token, &metadata("PS256"));
    assert!(status.contains("201"), "{status} {body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Through PATCH too.
    let (status, _, body) = json_api(
        &server,
        "PATCH",
        &format!("{clients}/{id}"),
        &token,
        &json!({"id_token_signed_response_alg": "ES256"}),
    );
    assert!(status.contains("400"), "{status} {body}");
    assert_eq!(error_code(&body), "invalid_client_metadata");

    // New ID-token keys are to be ES256: a rotation would break the client, so it is refused
    // and names it; --force rotates and says so.
    let config = server.dir.path().join("strongroom.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("algorithms = { id_token = \"ES256\" }\n");
    std::fs::write(&config, text).unwrap();
    let out = server.cli(&["keys", "rotate", "--purpose", "id_token"], "");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rotation accepted: {said}");
    assert!(
        said.contains(&format!("client {id}")) && said.contains("--force"),
        "{said}"
    );
    let out = server.cli(&["keys", "rotate", "--purpose", "id_token", "--force"], "");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("WARNING") && said.contains(&format!("client {id}")),
        "{said}"
    );
}

/// Registrations that pass every shape check but could never authenticate (RFC 7591 §3.2.2):
/// refused at once rather than 401 at every token request.
fn never_authenticate(clients: &str) -> Vec<(&'static str, &str, Value, &'static str)> {
    let mtls = |field: &str, value: &str| {
        let mut m = json!({"token_endpoint_auth_method": "tls_client_auth",
                           "grant_types": ["client_credentials"]});
        m[field] = json!(value);
        ("POST", clients, m, "invalid_client_metadata")
    };
    let jwk = |key: Value| {
        (
            "POST",
            clients,
            json!({"token_endpoint_auth_method": "private_key_jwt",
                   "grant_types": ["client_credentials"], "jwks": {"keys": [key]}}),
            "invalid_client_metadata",
        )
    };
    let zeros = b64(vec![0u8; 32]);
    let ones = b64(vec![1u8; 32]);
    vec![
        mtls("client_name", "Bank\u{202e}ppa"),
        mtls("client_name", "Bank\u{0}app"),
        mtls("tls_client_auth_subject_dn", "=,=,,"),
        mtls(
            "tls_client_auth_subject_dn",
            "CN=demo-client,O=Strongroom demo,",
        ),
        mtls("tls_client_auth_san_ip", "999.1.1.1"),
        mtls("tls_client_auth_san_uri", "not a uri"),
        jwk(json!({"kty": "RSA", "n": "AA", "e": "AQAB"})),
        jwk(json!({"kty": "EC", "crv": "P-256", "x": zeros, "y": ones})),
        jwk(json!({"kty": "FOO"})),
        jwk(json!({"kty": "OKP", "crv": "Ed25519", "x": zeros})),
    ]
}
