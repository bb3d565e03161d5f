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
    _dir: tempfile::TempDir,
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
    let dir = strongroom_testkit::create_token("serve-test");
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
        _dir: dir,
        port,
        mtls_port,
    }
}

/// GET over HTTPS with OpenSSL (HTTP/1.1, Connection: close); returns (status line, headers, body).
fn get(port: u16, path: &str) -> (String, String, String) {
    let mut connector = SslConnector::builder(SslMethod::tls_client()).unwrap();
    // The self-signed development certificate: what is checked here is the HTTP layer.
    connector.set_verify(SslVerifyMode::NONE);
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = connector.build().connect("localhost", tcp).unwrap();
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    tls.read_to_string(&mut raw).unwrap();
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
