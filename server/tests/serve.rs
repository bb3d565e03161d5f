//! Black-box: the real `strongroom serve` on a fresh SoftHSM2 token and SQLite file, over real
//! HTTPS, checked with an OpenSSL client.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

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
    // No client_ca_file: tls_client_auth cannot work, so it is not offered.
    for list in [
        "token_endpoint_auth_methods_supported",
        "introspection_endpoint_auth_methods_supported",
        "revocation_endpoint_auth_methods_supported",
    ] {
        assert_eq!(
            discovery[list],
            serde_json::json!(["private_key_jwt", "self_signed_tls_client_auth"]),
            "{list}"
        );
    }

    // The ID token's claims about the authentication are among the claims supplied.
    for claim in ["sub", "iss", "auth_time", "acr", "email"] {
        assert!(
            discovery["claims_supported"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!(claim)),
            "{claim}"
        );
    }
    // RFC 8414 §3: the same metadata at the OAuth well-known path.
    let (status, _, body) = get(server.port, "/.well-known/oauth-authorization-server");
    assert!(status.contains("200"), "{status}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), discovery);

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

#[test]
fn client_credentials_with_private_key_jwt_and_the_errors_around_it() {
    let mut server = start();
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

    // The same after a restart, when only the database remembers the assertions: at /token,
    // and at /revoke, whose replay must not revoke anything.
    // (aud: the issuer, which both endpoints accept, so the replay is refused for being one.)
    let auth = |a: &str| {
        format!(
            "client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={a}&token={token}"
        )
    };
    let i1 = assertion(&client_id, &issuer, &key, "jti-introspect-1");
    let (status, _, body) = post_form(server.port, "/introspect", &auth(&i1));
    assert!(status.contains("200"), "{status} {body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["active"],
        true
    );
    server.restart();
    let (status, _, body) = post_form(server.port, "/token", &form(&a1, ""));
    assert!(status.contains("401"), "{status} {body}");
    assert_eq!(error_code(&body), "invalid_client");
    let (status, _, body) = post_form(server.port, "/revoke", &auth(&i1));
    assert!(status.contains("401"), "{status} {body}");
    assert_eq!(error_code(&body), "invalid_client");
    let i2 = assertion(&client_id, &issuer, &key, "jti-introspect-2");
    let (_, _, body) = post_form(server.port, "/introspect", &auth(&i2));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["active"],
        true,
        "a replayed assertion revoked the token: {body}"
    );
    let r1 = assertion(&client_id, &issuer, &key, "jti-revoke-1");
    let (status, _, body) = post_form(server.port, "/revoke", &auth(&r1));
    assert!(status.contains("200"), "{status} {body}");

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
    // A refused request spends its assertion all the same (it was recorded after the refusal,
    // not before): sent again, corrected, it is a replay.
    let (status, _, body) = post_form(server.port, "/token", &form(&a4, "&scope=accounts"));
    assert!(status.contains("401"), "{status} {body}");
    assert_eq!(error_code(&body), "invalid_client");
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
    // With a client CA, discovery offers tls_client_auth.
    let discovery: Value =
        serde_json::from_str(&get(server.port, "/.well-known/openid-configuration").2).unwrap();
    assert_eq!(
        discovery["token_endpoint_auth_methods_supported"],
        serde_json::json!([
            "private_key_jwt",
            "tls_client_auth",
            "self_signed_tls_client_auth"
        ])
    );

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

#[test]
fn token_requests_beyond_the_admission_limit_get_503_at_once() {
    use std::io::Write as _;
    let server = start_with("max_concurrent_token_requests = 1", |_| {});
    // One request holds the only permit: its headers promise a body that never comes.
    let mut connector =
        openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client()).unwrap();
    connector.set_verify(openssl::ssl::SslVerifyMode::NONE);
    let tcp = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let mut held = connector.build().connect("localhost", tcp).unwrap();
    held.write_all(
        b"POST /token HTTP/1.1\r\nHost: localhost\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n",
    )
    .unwrap();
    held.flush().unwrap();
    // Until the server has read those headers, a second request may still get through: retry
    // briefly until it is refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, headers, body) = loop {
        let r = post_form(server.port, "/token", "grant_type=client_credentials");
        if r.0.contains("503") || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.contains("503"), "{status} {body}");
    assert!(headers.contains("retry-after: 1"), "{headers}");
    assert_eq!(error_code(&body), "temporarily_unavailable");
    // The held request ends: the permit is back, and requests are served (here: refused for
    // want of client authentication, which is the point: they are served).
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = post_form(server.port, "/token", "grant_type=client_credentials");
        if status.contains("401") {
            assert_eq!(error_code(&body), "invalid_client");
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {status} {body}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// With the signing pool's queue full, /token answers 503 before it authenticates the client:
/// the refused assertion is not spent (its jti is not recorded) and works once the HSM catches
/// up. The HSM is made to fall behind for real: its worker processes are stopped (SIGSTOP).
#[test]
fn a_full_signing_queue_refuses_token_requests_before_client_authentication() {
    use std::io::{ErrorKind, Read as _, Write as _};
    let server = start_with_hsm("", "queue_depth = 1", |_| {});
    let (client_id, key) = register_client(&server);
    let aud = format!("https://localhost:{}/token", server.port);
    let request = |jti: &str| {
        let body = format!(
            "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={}",
            assertion(&client_id, &aud, &key, jti)
        );
        format!(
            "POST /token HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // Every TLS handshake signs with the server's key in the HSM: connect before stopping it.
    let mut connector =
        openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client()).unwrap();
    connector.set_verify(openssl::ssl::SslVerifyMode::NONE);
    let connector = connector.build();
    let mut conns: Vec<_> = (0..4)
        .map(|_| {
            let tcp = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            connector.connect("localhost", tcp).unwrap()
        })
        .collect();
    let workers = strongroom_testkit::child_processes(server.child.id());
    assert_eq!(
        workers.len(),
        2,
        "pool_workers = 2 worker processes: {workers:?}"
    );
    let stopped = Stopped::new(workers);

    // Two requests occupy the two workers' relay threads, a third fills the queue (depth 1):
    // none of them can be answered while the workers are stopped.
    for (i, conn) in conns.iter_mut().take(3).enumerate() {
        conn.write_all(request(&format!("held-{i}")).as_bytes())
            .unwrap();
        conn.get_ref()
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut byte = [0u8; 1];
        let e = conn
            .read(&mut byte)
            .expect_err("answered while the HSM is stopped");
        assert!(
            matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "request {i}: {e}"
        );
    }
    // The fourth is refused at once, with the standard error and Retry-After.
    let refused = request("refused");
    let conn = &mut conns[3];
    conn.write_all(refused.as_bytes()).unwrap();
    // A bound, so that a request let through (the defect this test is for) fails the test
    // rather than waiting for the stopped HSM for ever.
    conn.get_ref()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 503"), "{raw}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    assert_eq!(error_code(body), "temporarily_unavailable");

    // The HSM resumes: the held requests are served.
    drop(stopped);
    for (i, conn) in conns.iter_mut().take(3).enumerate() {
        conn.get_ref().set_read_timeout(None).unwrap();
        let mut raw = String::new();
        conn.read_to_string(&mut raw).unwrap();
        assert!(raw.starts_with("HTTP/1.1 200"), "request {i}: {raw}");
    }
    // The refused assertion was never checked, so never spent: sent again, it is accepted.
    let (status, _, body) = request_as(server.port, &refused, None);
    assert!(status.contains("200"), "{status} {body}");
    assert!(
        serde_json::from_str::<Value>(&body).unwrap()["access_token"].is_string(),
        "{body}"
    );
}

/// Processes stopped (SIGSTOP) until this is dropped (SIGCONT), so that a failing assertion
/// leaves no process stopped behind it.
struct Stopped(Vec<u32>);

impl Stopped {
    fn new(pids: Vec<u32>) -> Self {
        let status = Command::new("kill")
            .arg("-STOP")
            .args(pids.iter().map(u32::to_string))
            .status()
            .unwrap();
        assert!(status.success());
        Stopped(pids)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .args(self.0.iter().map(u32::to_string))
            .status();
    }
}

/// A TLS connection to `port` (HTTP/1.1 or h2 by ALPN) whose reads give up after 20 s, far beyond
/// the server's timeouts in the test below.
fn slow_client(port: u16, alpn: &[u8]) -> openssl::ssl::SslStream<std::net::TcpStream> {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let mut connector = SslConnector::builder(SslMethod::tls_client()).unwrap();
    connector.set_verify(SslVerifyMode::NONE);
    connector.set_alpn_protos(alpn).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    connector.build().connect("localhost", tcp).unwrap()
}

/// Reads until the server closes the connection; what it sent. A read that times out (the server
/// kept the connection) fails the test.
fn until_closed(tls: &mut openssl::ssl::SslStream<std::net::TcpStream>) -> Vec<u8> {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the server kept a stalled connection open: {e}")
            }
            // A reset or a TLS close without close_notify is a close too.
            Err(_) => return got,
        }
    }
}

#[test]
fn slow_and_idle_clients_are_cut_off() {
    use std::io::Write;
    let server = start_with(
        "request_timeout_seconds = 2\nidle_timeout_seconds = 3",
        |_| {},
    );

    // Headers never finished: the connection is closed.
    let mut tls = slow_client(server.port, b"\x08http/1.1");
    tls.write_all(b"POST /token HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    until_closed(&mut tls);

    // No request at all after the handshake: closed too.
    let mut tls = slow_client(server.port, b"\x08http/1.1");
    until_closed(&mut tls);

    // A body that never arrives whole: 408 with the error object.
    let mut tls = slow_client(server.port, b"\x08http/1.1");
    tls.write_all(
        b"POST /token HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n\
          grant_type=",
    )
    .unwrap();
    let answer = String::from_utf8_lossy(&until_closed(&mut tls)).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"invalid_request\""), "{answer}");

    // HTTP/2: a preface and SETTINGS, then a HEADERS frame that never ends (no END_HEADERS):
    // closed once nothing has moved for the idle time.
    let mut tls = slow_client(server.mtls_port, b"\x02h2");
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    tls.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap(); // SETTINGS, empty
    // HEADERS on stream 1, 1 byte of header block, flags 0 (no END_HEADERS, no END_STREAM).
    tls.write_all(&[0, 0, 1, 1, 0, 0, 0, 0, 1, 0x82]).unwrap();
    until_closed(&mut tls);

    // A connection in use is no idle one: a request every second for longer than the idle
    // time (3 s), all answered on the one connection.
    let mut tls = slow_client(server.port, b"\x08http/1.1");
    for i in 0..6 {
        tls.write_all(b"GET /jwks HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let answer = read_one_response(&mut tls);
        assert!(answer.starts_with("HTTP/1.1 200"), "request {i}: {answer}");
        std::thread::sleep(Duration::from_secs(1));
    }

    // Pipelined requests from a client that never reads its answers: once the answers fill the
    // buffers the connection stalls, and it is dropped (idle 3 s, then 2 s to close), rather
    // than held for as long as the client likes. Reading afterwards finds the connection
    // closed well before the last answer.
    let sent = 8000;
    let mut tls = slow_client(server.port, b"\x08http/1.1");
    tls.write_all(&b"GET /jwks HTTP/1.1\r\nHost: l\r\n\r\n".repeat(sent))
        .unwrap();
    std::thread::sleep(Duration::from_secs(9));
    let answers = String::from_utf8_lossy(&until_closed(&mut tls))
        .matches("HTTP/1.1 200")
        .count();
    assert!(
        answers < sent,
        "all {answers} answers came: the stalled connection was kept"
    );

    // The server still serves.
    let (status, _, _) = get(server.port, "/jwks");
    assert!(status.contains("200"), "{status}");
}

/// Reads one HTTP/1.1 response with a Content-Length body.
fn read_one_response(tls: &mut openssl::ssl::SslStream<std::net::TcpStream>) -> String {
    use std::io::Read;
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).unwrap();
        got.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; length];
    tls.read_exact(&mut body).unwrap();
    got.extend_from_slice(&body);
    String::from_utf8_lossy(&got).into_owned()
}
