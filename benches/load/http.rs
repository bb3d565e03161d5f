//! The generator's HTTP client: hyper's HTTP/1.1 client connection over tokio-rustls (aws-lc-rs),
//! one request at a time per connection, with a client certificate where the scenario needs
//! one. TLS session resumption is off, so every new connection is a full handshake (and a
//! signature by the server's HSM key).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper::header::{CONNECTION, CONTENT_TYPE, COOKIE, HOST, HeaderValue, ORIGIN};
use hyper::{HeaderMap, Method, Request};
use hyper_util::rt::TokioIo;
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// What the server's certificate is not checked for: it is the self-signed development
/// certificate of the HSM key. Its handshake signatures are checked (by the provider), and the
/// scheme the server used is remembered, to be reported.
#[derive(Debug)]
struct AnyServerCertificate {
    algorithms: WebPkiSupportedAlgorithms,
    seen: Arc<Mutex<Option<(SignatureScheme, &'static str)>>>,
}

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if let Ok(mut s) = self.seen.lock() {
            *s = Some((dss.scheme, "TLS 1.2"));
        }
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if let Ok(mut s) = self.seen.lock() {
            *s = Some((dss.scheme, "TLS 1.3"));
        }
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS client configuration (with or without a client certificate) and the address it
/// talks to.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The Host header: `localhost:PORT`.
    pub host: HeaderValue,
    connector: TlsConnector,
    seen: Arc<Mutex<Option<(SignatureScheme, &'static str)>>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Endpoint {
    pub fn new(
        addr: SocketAddr,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let seen = Arc::new(Mutex::new(None));
        let verifier = Arc::new(AnyServerCertificate {
            algorithms: provider.signature_verification_algorithms,
            seen: seen.clone(),
        });
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .map_err(|e| format!("TLS versions: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = Resumption::disabled();
        let host = HeaderValue::from_str(&format!("localhost:{}", addr.port()))
            .map_err(|e| e.to_string())?;
        Ok(Endpoint {
            addr,
            host,
            connector: TlsConnector::from(Arc::new(config)),
            seen,
        })
    }

    /// The last handshake's protocol and server signature scheme, e.g. "TLS 1.3, RSA_PSS_SHA256".
    pub fn handshake_seen(&self) -> Option<String> {
        let s = self.seen.lock().ok()?;
        s.map(|(scheme, version)| format!("{version}, server signature {scheme:?}"))
    }

    /// A new TCP + TLS connection with an HTTP/1.1 client on it.
    pub async fn connect(&self) -> Result<Conn, String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let tls = self
            .connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let (sender, conn) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            sender,
            host: self.host.clone(),
        })
    }
}

/// One HTTP/1.1 connection, one request at a time.
#[derive(Debug)]
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What a request needs beyond method, path and body.
#[derive(Debug, Default, Clone, Copy)]
pub struct Extra<'a> {
    pub cookie: Option<&'a str>,
    /// `Connection: close` (the new-connection-per-request scenario).
    pub close: bool,
    /// Send `Origin: https://HOST` (the login and consent form posts).
    pub origin: bool,
}

impl Conn {
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        extra: Extra<'_>,
    ) -> Result<Resp, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone());
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        if let Some(c) = extra.cookie {
            req = req.header(COOKIE, c);
        }
        if extra.close {
            req = req.header(CONNECTION, "close");
        }
        if extra.origin {
            let origin = format!("https://{}", self.host.to_str().unwrap_or("localhost"));
            req = req.header(ORIGIN, origin);
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| format!("request: {e}"))?;
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("response body: {e}"))?
            .to_bytes();
        Ok(Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    pub async fn post(&mut self, path: &str, body: String) -> Result<Resp, String> {
        self.send(
            Method::POST,
            path,
            Some(Bytes::from(body)),
            Extra::default(),
        )
        .await
    }
}

/// application/x-www-form-urlencoded value encoding.
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
