//! Black-box: the real `strongroom serve` on a fresh SoftHSM2 token and SQLite file, over real
//! HTTPS, checked with an OpenSSL client.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use serde_json::Value;

struct Server {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    mtls_port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start() -> Server {
    start_with("", |_| {})
}

/// Starts the server; `extra_server_config` goes into the [server] table (`@DIR@` is the
/// server's directory), and `prepare` may write files there first.
fn start_with(extra_server_config: &str, prepare: impl FnOnce(&std::path::Path)) -> Server {
    let dir = strongroom_testkit::create_token("serve-test");
    prepare(dir.path());
    let (port, mtls_port) = (free_port(), free_port());
    let config = dir.path().join("strongroom.toml");
    std::fs::write(
        &config,
        format!(
            r#"
database_url = "sqlite://{db}"
[server]
issuer = "https://localhost:{port}"
listen = "127.0.0.1:{port}"
mtls_listen = "127.0.0.1:{mtls_port}"
mtls_base_url = "https://localhost:{mtls_port}"
{extra}
[hsm]
module = "{module}"
token_label = "serve-test"
pin_file = "{pin}"
pool_workers = 2
[keys]
tls_self_signed_names = ["localhost"]
"#,
            db = dir.path().join("strongroom.db").display(),
            module = strongroom_testkit::module_path().display(),
            pin = dir.path().join("user-pin").display(),
            extra = extra_server_config.replace("@DIR@", &dir.path().display().to_string()),
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env("SOFTHSM2_CONF", dir.path().join("softhsm2.conf"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The server prints one line once it listens.
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("serving"), "server did not start: {line:?}");
    Server {
        child,
        dir,
        port,
        mtls_port,
    }
}

/// GET over HTTPS with OpenSSL (HTTP/1.1, Connection: close); returns (status line, headers, body).
fn get(port: u16, path: &str) -> (String, String, String) {
    request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
}

/// POST a form over HTTPS.
fn post_form(port: u16, path: &str, body: &str) -> (String, String, String) {
    request(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn request(port: u16, raw_request: &str) -> (String, String, String) {
    request_as(port, raw_request, None)
}

type Identity<'a> = Option<(
    &'a openssl::x509::X509,
    &'a openssl::pkey::PKey<openssl::pkey::Private>,
)>;

/// A request with an optional client certificate (for the mTLS listener).
fn request_as(port: u16, raw_request: &str, identity: Identity<'_>) -> (String, String, String) {
    let mut connector = SslConnector::builder(SslMethod::tls_client()).unwrap();
    // The self-signed development certificate: what is checked here is the HTTP layer.
    connector.set_verify(SslVerifyMode::NONE);
    if let Some((cert, key)) = identity {
        connector.set_certificate(cert).unwrap();
        connector.set_private_key(key).unwrap();
    }
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = connector.build().connect("localhost", tcp).unwrap();
    // A server may answer (413) and close before an oversized body is fully written: the
    // write then fails, and the answer is still there to read.
    let _ = tls.write_all(raw_request.as_bytes());
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    assert!(!raw.is_empty(), "no response");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap();
    (
        status.to_owned(),
        headers.to_ascii_lowercase(),
        body.to_owned(),
    )
}

#[test]
fn serves_jwks_and_discovery_over_tls_on_both_listeners_and_stops_cleanly() {
    let mut server = start();

    let (status, headers, body) = get(server.port, "/jwks");
    assert!(status.contains("200"), "{status}");
    assert!(
        headers.contains("cache-control: public, max-age=900"),
        "{headers}"
    );
    assert!(
        headers.contains("content-type: application/jwk-set+json"),
        "{headers}"
    );
    let jwks: Value = serde_json::from_str(&body).unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert!(
        keys.iter()
            .any(|k| k["use"] == "sig" && k["alg"] == "PS256")
    );
    assert!(keys.iter().any(|k| k["use"] == "enc"));
    for k in keys {
        assert!(k.get("d").is_none() && k.get("p").is_none());
    }

    let (status, _, body) = get(server.port, "/.well-known/openid-configuration");
    assert!(status.contains("200"));
    let discovery: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        discovery["issuer"],
        format!("https://localhost:{}", server.port)
    );
    assert_eq!(
        discovery["jwks_uri"],
        format!("https://localhost:{}/jwks", server.port)
    );

    // The mTLS listener serves the same routes.
    let (status, _, _) = get(server.mtls_port, "/jwks");
    assert!(status.contains("200"));

    // SIGTERM: a clean stop.
    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

/// Registers a private_key_jwt client (RSA key made with OpenSSL) through the CLI, as an
/// operator would; returns its client_id and the key to sign assertions with.
fn register_client(server: &Server) -> (String, jsonwebtoken::EncodingKey) {
    use base64::Engine as _;
    let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let jwk = serde_json::json!({
        "kty": "RSA", "kid": "client-key-1", "use": "sig", "alg": "PS256",
        "n": b64(rsa.n().to_vec()), "e": b64(rsa.e().to_vec()),
    });
    let metadata = serde_json::json!({
        "client_name": "test client",
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [jwk]},
        "grant_types": ["client_credentials"],
        "scope": "accounts payments",
    });
    let client_id = create_client(server, &metadata);
    let key = jsonwebtoken::EncodingKey::from_rsa_der(&rsa.private_key_to_der().unwrap());
    (client_id, key)
}

fn assertion(client_id: &str, aud: &str, key: &jsonwebtoken::EncodingKey, jti: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::PS256);
    header.kid = Some("client-key-1".into());
    let claims = serde_json::json!({"iss": client_id, "sub": client_id, "aud": aud, "exp": now + 60, "iat": now, "jti": jti});
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|_| panic!("not an OAuth error object: {body:?}"));
    assert!(v["error_description"].is_string(), "{body}");
    v["error"].as_str().unwrap().to_owned()
}

#[test]
fn client_credentials_with_private_key_jwt_and_the_errors_around_it() {
    let server = start();
    let (client_id, key) = register_client(&server);
    let issuer = format!("https://localhost:{}", server.port);
    let form = |a: &str, extra: &str| {
        format!(
            "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={a}{extra}"
        )
    };

    let a1 = assertion(&client_id, &format!("{issuer}/token"), &key, "jti-1");
    let (status, headers, body) = post_form(server.port, "/token", &form(&a1, "&scope=accounts"));
    assert!(status.contains("200"), "{status} {body}");
    assert!(headers.contains("cache-control: no-store"), "{headers}");
    let resp: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(resp["token_type"], "Bearer");
    assert_eq!(resp["scope"], "accounts");
    let token = resp["access_token"].as_str().unwrap();

    // The access token verifies against the served JWKS with an independent JOSE library.
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(&get(server.port, "/jwks").2).unwrap();
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("kid in the JWKS");
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&[issuer.as_str()]);
    validation.set_issuer(&[issuer.as_str()]);
    let claims = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["client_id"], client_id.as_str());
    assert_eq!(claims["sub"], client_id.as_str());
    assert_eq!(claims["scope"], "accounts");
    assert!(claims["jti"].is_string() && claims.get("cnf").is_none());

    // Replayed assertion: 401 invalid_client with a challenge.
    let (status, headers, body) = post_form(server.port, "/token", &form(&a1, ""));
    assert!(status.contains("401"), "{status}");
    assert!(headers.contains("www-authenticate"), "{headers}");
    assert_eq!(error_code(&body), "invalid_client");

    // alg none, wrong audience, unknown client, scope not allowed, unsupported grant.
    let none = {
        use base64::Engine as _;
        let e = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            e(serde_json::json!({"alg": "none"})),
            e(
                serde_json::json!({"iss": client_id, "sub": client_id, "aud": issuer, "exp": 9_999_999_999u64, "jti": "n"})
            )
        )
    };
    assert_eq!(
        error_code(&post_form(server.port, "/token", &form(&none, "")).2),
        "invalid_client"
    );
    let wrong_aud = assertion(&client_id, "https://elsewhere.example", &key, "jti-2");
    assert_eq!(
        error_code(&post_form(server.port, "/token", &form(&wrong_aud, "")).2),
        "invalid_client"
    );
    let stranger = assertion("no-such-client", &issuer, &key, "jti-3");
    assert_eq!(
        error_code(&post_form(server.port, "/token", &form(&stranger, "")).2),
        "invalid_client"
    );
    let a4 = assertion(&client_id, &issuer, &key, "jti-4");
    let (status, _, body) = post_form(server.port, "/token", &form(&a4, "&scope=admin"));
    assert!(status.contains("400"));
    assert_eq!(error_code(&body), "invalid_scope");
    let a5 = assertion(&client_id, &issuer, &key, "jti-5");
    let body = format!(
        "grant_type=password&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={a5}"
    );
    assert_eq!(
        error_code(&post_form(server.port, "/token", &body).2),
        "unsupported_grant_type"
    );

    // Malformed, repeated-parameter and oversized bodies: OAuth error objects too.
    let (status, _, body) = post_form(
        server.port,
        "/token",
        "grant_type=client_credentials&grant_type=x",
    );
    assert!(status.contains("400"));
    assert_eq!(error_code(&body), "invalid_request");
    let (status, _, body) = post_form(server.port, "/token", &"a=b&".repeat(30_000));
    assert!(status.contains("413"), "{status}");
    assert_eq!(error_code(&body), "invalid_request");
}

/// A key and a certificate for it, signed by `issuer` (or self-signed when `None`).
fn certificate(
    cn: &str,
    issuer: Option<(
        &openssl::x509::X509,
        &openssl::pkey::PKey<openssl::pkey::Private>,
    )>,
    ca: bool,
) -> (
    openssl::x509::X509,
    openssl::pkey::PKey<openssl::pkey::Private>,
) {
    use openssl::asn1::Asn1Time;
    use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage};
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("O", "Test Bank").unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = openssl::x509::X509::builder().unwrap();
    b.set_version(2).unwrap();
    let serial = openssl::bn::BigNum::from_u32(rand_serial())
        .unwrap()
        .to_asn1_integer()
        .unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&name, |(c, _)| c.subject_name()))
        .unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(KeyUsage::new().critical().key_cert_sign().build().unwrap())
            .unwrap();
    } else {
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .build()
                .unwrap(),
        )
        .unwrap();
        b.append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap())
            .unwrap();
    }
    b.sign(
        issuer.map_or(&key, |(_, k)| k),
        openssl::hash::MessageDigest::sha256(),
    )
    .unwrap();
    (b.build(), key)
}

fn rand_serial() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        | 1
}

fn create_client(server: &Server, metadata: &Value) -> String {
    let file = server.dir.path().join("client.json");
    std::fs::write(&file, metadata.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args([
            "--config",
            server.dir.path().join("strongroom.toml").to_str().unwrap(),
        ])
        .args(["clients", "create", "--file", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    created["client_id"].as_str().unwrap().to_owned()
}

fn post_form_as(port: u16, body: &str, identity: Identity<'_>) -> (String, String, String) {
    let raw = format!(
        "POST /token HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    request_as(port, &raw, identity)
}

/// The `cnf.x5t#S256` claim of an access token, read without verification (the signature is
/// checked in the private_key_jwt test): base64url(SHA-256(certificate DER)).
fn cnf_of(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["cnf"]["x5t#S256"].as_str().map(str::to_owned)
}

fn thumbprint(cert: &openssl::x509::X509) -> String {
    use base64::Engine as _;
    let digest = openssl::sha::sha256(&cert.to_der().unwrap());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

#[test]
fn mtls_clients_get_certificate_bound_tokens_on_the_mtls_listener_only() {
    use base64::Engine as _;
    let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    // A CA for tls_client_auth, written where the server's config says.
    let (ca, ca_key) = certificate("Test Bank Client CA", None, true);
    let ca_pem = ca.to_pem().unwrap();
    let server = start_with("client_ca_file = \"@DIR@/client-ca.pem\"", |dir| {
        std::fs::write(dir.join("client-ca.pem"), &ca_pem).unwrap();
    });

    // self_signed_tls_client_auth: the certificate's key is in the client's JWKS.
    let (self_cert, self_key) = certificate("self-signed client", None, false);
    let rsa = self_key.rsa().unwrap();
    let self_id = create_client(
        &server,
        &serde_json::json!({
            "token_endpoint_auth_method": "self_signed_tls_client_auth",
            "jwks": {"keys": [{"kty": "RSA", "n": b64(rsa.n().to_vec()), "e": b64(rsa.e().to_vec())}]},
            "tls_client_certificate_bound_access_tokens": true,
            "grant_types": ["client_credentials"],
        }),
    );
    let body = format!("grant_type=client_credentials&client_id={self_id}");
    let (status, _, resp) = post_form_as(server.mtls_port, &body, Some((&self_cert, &self_key)));
    assert!(status.contains("200"), "{status} {resp}");
    let token: Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(
        cnf_of(token["access_token"].as_str().unwrap()),
        Some(thumbprint(&self_cert))
    );
    // Without a certificate (the main listener never asks for one): refused.
    let (status, _, resp) = post_form_as(server.port, &body, None);
    assert!(status.contains("401"), "{status} {resp}");
    assert_eq!(error_code(&resp), "invalid_client");
    // Another certificate: refused.
    let (other_cert, other_key) = certificate("someone else", None, false);
    let (status, _, resp) = post_form_as(server.mtls_port, &body, Some((&other_cert, &other_key)));
    assert!(status.contains("401"), "{status} {resp}");
    assert_eq!(error_code(&resp), "invalid_client");

    // tls_client_auth: a certificate from the configured CA with the registered subject DN.
    let (ca_cert, ca_cert_key) = certificate("payments-client", Some((&ca, &ca_key)), false);
    let pki_id = create_client(
        &server,
        &serde_json::json!({
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_subject_dn": "CN=payments-client,O=Test Bank",
            "tls_client_certificate_bound_access_tokens": true,
            "grant_types": ["client_credentials"],
        }),
    );
    let body = format!("grant_type=client_credentials&client_id={pki_id}");
    let (status, _, resp) = post_form_as(server.mtls_port, &body, Some((&ca_cert, &ca_cert_key)));
    assert!(status.contains("200"), "{status} {resp}");
    let token: Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(
        cnf_of(token["access_token"].as_str().unwrap()),
        Some(thumbprint(&ca_cert))
    );
    // The same DN on a self-signed certificate (not from the CA): refused.
    let (status, _, resp) = post_form_as(server.mtls_port, &body, Some((&self_cert, &self_key)));
    assert!(status.contains("401"), "{status} {resp}");
    // A certificate from the CA for another subject: refused.
    let (wrong_subject, wrong_key) = certificate("other-client", Some((&ca, &ca_key)), false);
    let (status, _, resp) =
        post_form_as(server.mtls_port, &body, Some((&wrong_subject, &wrong_key)));
    assert!(status.contains("401"), "{status} {resp}");
    assert_eq!(error_code(&resp), "invalid_client");
}
