//! The black-box harness: the real `strongroom serve` on a fresh SoftHSM2 token and SQLite
//! file, reached over real HTTPS with OpenSSL (an implementation independent of the server).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use serde_json::Value;

pub struct Server {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub mtls_port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn start() -> Server {
    start_with("", |_| {})
}

/// Starts the server; `extra_server_config` goes into the [server] table (`@DIR@` is the
/// server's directory), and `prepare` may write files there first.
pub fn start_with(extra_server_config: &str, prepare: impl FnOnce(&std::path::Path)) -> Server {
    start_with_hsm(extra_server_config, "", prepare)
}

/// As [`start_with`], with `extra_hsm_config` added to the [hsm] table (which already sets
/// `pool_workers = 2`).
pub fn start_with_hsm(
    extra_server_config: &str,
    extra_hsm_config: &str,
    prepare: impl FnOnce(&std::path::Path),
) -> Server {
    let dir = strongroom_testkit::create_token("serve-test");
    prepare(dir.path());
    // A port free a moment ago may be taken meanwhile (an outgoing connection of a test
    // running beside this one can get it as its local port): try other ports, then give up.
    for attempt in 1..=3 {
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
{extra_hsm}
[keys]
tls_self_signed_names = ["localhost"]
"#,
                db = dir.path().join("strongroom.db").display(),
                module = strongroom_testkit::module_path().display(),
                pin = dir.path().join("user-pin").display(),
                extra = extra_server_config.replace("@DIR@", &dir.path().display().to_string()),
                extra_hsm = extra_hsm_config,
            ),
        )
        .unwrap();
        let (mut child, line) = spawn_serve(dir.path());
        if line.contains("serving") {
            return Server {
                child,
                dir,
                port,
                mtls_port,
            };
        }
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("server did not start (attempt {attempt}): {line:?}");
    }
    panic!("server did not start on three sets of ports");
}

/// `strongroom serve` on `dir`'s configuration and token, with the first line it prints (it
/// prints one once it listens; nothing if it exits first).
fn spawn_serve(dir: &std::path::Path) -> (Child, String) {
    let config = dir.join("strongroom.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

/// GET over HTTPS with OpenSSL (HTTP/1.1, Connection: close); returns (status line, headers, body).
pub fn get(port: u16, path: &str) -> (String, String, String) {
    request(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
}

/// POST a form over HTTPS.
pub fn post_form(port: u16, path: &str, body: &str) -> (String, String, String) {
    request(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

pub fn request(port: u16, raw_request: &str) -> (String, String, String) {
    request_as(port, raw_request, None)
}

pub type Identity<'a> = Option<(
    &'a openssl::x509::X509,
    &'a openssl::pkey::PKey<openssl::pkey::Private>,
)>;

/// Sends one raw request over TLS (with a client certificate when given) and reads the whole
/// answer. The server's self-signed development certificate is not checked: what these tests
/// check is the HTTP layer.
fn round_trip(port: u16, raw_request: &str, identity: Identity<'_>) -> String {
    let mut connector = SslConnector::builder(SslMethod::tls_client()).unwrap();
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
    raw
}

/// A request with an optional client certificate (for the mTLS listener): (status line,
/// headers lowercased, body).
pub fn request_as(
    port: u16,
    raw_request: &str,
    identity: Identity<'_>,
) -> (String, String, String) {
    let raw = round_trip(port, raw_request, identity);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap();
    (
        status.to_owned(),
        headers.to_ascii_lowercase(),
        body.to_owned(),
    )
}

/// Registers a private_key_jwt client (RSA key made with OpenSSL) through the CLI, as an
/// operator would; returns its client_id and the key to sign assertions with.
pub fn register_client(server: &Server) -> (String, jsonwebtoken::EncodingKey) {
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

pub fn assertion(client_id: &str, aud: &str, key: &jsonwebtoken::EncodingKey, jti: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::PS256);
    header.kid = Some("client-key-1".into());
    let claims = serde_json::json!({"iss": client_id, "sub": client_id, "aud": aud, "exp": now + 60, "iat": now, "jti": jti});
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

pub fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|_| panic!("not an OAuth error object: {body:?}"));
    assert!(v["error_description"].is_string(), "{body}");
    v["error"].as_str().unwrap().to_owned()
}

/// A key and a certificate for it, signed by `issuer` (or self-signed when `None`).
pub fn certificate(
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

pub fn rand_serial() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        | 1
}

pub fn create_client(server: &Server, metadata: &Value) -> String {
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

pub fn post_form_as(port: u16, body: &str, identity: Identity<'_>) -> (String, String, String) {
    let raw = format!(
        "POST /token HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    request_as(port, &raw, identity)
}

/// The `cnf.x5t#S256` claim of an access token, read without verification (the signature is
/// checked in the private_key_jwt test): base64url(SHA-256(certificate DER)).
pub fn cnf_of(token: &str) -> Option<String> {
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

pub fn thumbprint(cert: &openssl::x509::X509) -> String {
    use base64::Engine as _;
    let digest = openssl::sha::sha256(&cert.to_der().unwrap());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// An HTTP response with its headers as sent (names lowercased, values untouched: cookies,
/// codes and Locations are case-sensitive).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {:?}", self.status, self.body))
    }
}

/// Sends one raw HTTP/1.1 request (which should say `Connection: close`) over TLS, with an
/// optional client certificate, and parses the answer without altering its case.
pub fn exchange(port: u16, raw_request: &str, identity: Identity<'_>) -> Response {
    let raw = round_trip(port, raw_request, identity);
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

impl Server {
    /// Stops the server (SIGKILL: nothing may depend on a clean stop) and starts it again on the
    /// same token, database, configuration and ports.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, line) = spawn_serve(self.dir.path());
        assert!(line.contains("serving"), "server did not restart: {line:?}");
        self.child = child;
    }

    pub fn issuer(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    pub fn mtls_base(&self) -> String {
        format!("https://localhost:{}", self.mtls_port)
    }

    /// Runs the `strongroom` CLI against this server's configuration, with `stdin` as input.
    pub fn cli(&self, args: &[&str], stdin: &str) -> std::process::Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_strongroom"))
            .args([
                "--config",
                self.dir.path().join("strongroom.toml").to_str().unwrap(),
            ])
            .args(args)
            .env("SOFTHSM2_CONF", self.dir.path().join("softhsm2.conf"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        if !out.status.success() {
            // Expected refusals print their message; an exit with nothing on stderr (seen twice
            // under load, not reproduced) at least leaves its status (a signal?) in the log.
            eprintln!(
                "cli {args:?}: {} (stderr {} bytes)",
                out.status,
                out.stderr.len()
            );
        }
        out
    }
}
