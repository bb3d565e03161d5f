//! A real SoftHSM2 token, a TLS echo server on tokio-rustls, and an OpenSSL client.
//!
//! SoftHSM2 reads SOFTHSM2_CONF at C_Initialize, once per process, so every test in a process
//! shares one token and one signing pool; under cargo-nextest each test is a process of its own.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};

use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVersion};
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use strongroom_keystore::hsm::{
    KeyId, KeySpec, KeyUsage, Pin, PoolConfig, PublicKey, SigningPool, Token,
};
use strongroom_keystore::tls::{Validity, self_signed_certificate};
use strongroom_keystore::{Clock, SystemClock, UnixTime};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

pub const LABEL: &str = "strongroom-tls-test";
pub use strongroom_testkit::USER_PIN;

pub struct Fixture {
    pub dir: &'static tempfile::TempDir,
    pub token: Token,
    pub pool: Arc<SigningPool>,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let t = strongroom_testkit::process_token(LABEL);
        let token = Token::open_with_pin(&t.module, &t.label, Pin::new(USER_PIN)).unwrap();
        let pool = Arc::new(SigningPool::start(&token, PoolConfig::with_workers(2)).unwrap());
        Fixture {
            dir: &t.dir,
            token,
            pool,
        }
    })
}

/// A key id unique to this process and call, so tests sharing a token never collide.
pub fn unique_id(prefix: &str) -> KeyId {
    KeyId::new(strongroom_testkit::unique_name(prefix)).unwrap()
}

pub fn now() -> UnixTime {
    SystemClock.now()
}

/// A fresh signing key in the token and its public half.
pub fn new_key(prefix: &str, spec: KeySpec) -> (KeyId, PublicKey) {
    let f = fixture();
    let kid = unique_id(prefix);
    f.token.generate(&kid, spec, KeyUsage::Sign).unwrap();
    let public = f.token.public_key(&kid).unwrap();
    (kid, public)
}

pub fn names() -> Vec<String> {
    vec!["localhost".to_string(), "127.0.0.1".to_string()]
}

/// A self-signed certificate for `kid`, valid for a day around now.
pub fn self_signed(kid: &KeyId, public: &PublicKey) -> CertificateDer<'static> {
    self_signed_certificate(
        &fixture().pool,
        kid,
        public,
        &names(),
        Validity::days_from(now(), 1),
    )
    .unwrap()
}

/// What the server saw of one connection's handshake.
#[derive(Debug)]
pub enum Handshake {
    Done {
        version: String,
        suite: String,
        alpn: Option<Vec<u8>>,
        /// The client's certificate, if it sent one.
        client_cert: Option<Vec<u8>>,
    },
    Failed(String),
}

pub struct Server {
    pub addr: SocketAddr,
    pub handshakes: mpsc::UnboundedReceiver<Handshake>,
}

impl Server {
    pub async fn next_handshake(&mut self) -> Handshake {
        tokio::time::timeout(std::time::Duration::from_secs(20), self.handshakes.recv())
            .await
            .expect("no handshake within 20 s")
            .expect("server stopped")
    }
}

/// Serves `config` on 127.0.0.1:0: each connection echoes every line back, prefixed `echo: `.
pub async fn serve(config: Arc<ServerConfig>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        let _ = tx.send(Handshake::Failed(format!("{e:?}")));
                        return;
                    }
                };
                let (_, conn) = tls.get_ref();
                let _ = tx.send(Handshake::Done {
                    version: format!("{:?}", conn.protocol_version().unwrap()),
                    suite: format!("{:?}", conn.negotiated_cipher_suite().unwrap().suite()),
                    alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                    client_cert: conn
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.to_vec()),
                });
                let (read, mut write) = tokio::io::split(tls);
                let mut lines = tokio::io::BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if write
                        .write_all(format!("echo: {line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let _ = write.flush().await;
                }
            });
        }
    });
    Server {
        addr,
        handshakes: rx,
    }
}

/// How the OpenSSL client connects.
#[derive(Debug, Clone)]
pub struct Client {
    /// The only certificate the client trusts (a self-signed leaf, or a CA).
    pub trust: CertificateDer<'static>,
    pub min: SslVersion,
    pub max: SslVersion,
    /// TLS 1.2 and older cipher list (OpenSSL names), if not the default.
    pub ciphers: Option<String>,
    /// TLS 1.3 cipher suites, if not the default.
    pub tls13_suites: Option<String>,
    /// Signature algorithms offered, if not the default.
    pub sigalgs: Option<String>,
    /// ALPN protocols offered (wire format), if any.
    pub alpn: Option<Vec<u8>>,
    /// A client certificate and its key, if the client is to present one.
    pub identity: Option<(X509, PKey<Private>)>,
}

impl Client {
    pub fn new(trust: &CertificateDer<'static>, version: SslVersion) -> Self {
        Client {
            trust: trust.clone(),
            min: version,
            max: version,
            ciphers: None,
            tls13_suites: None,
            sigalgs: None,
            alpn: None,
            identity: None,
        }
    }

    pub fn ciphers(mut self, c: &str) -> Self {
        self.ciphers = Some(c.to_string());
        self
    }

    pub fn sigalgs(mut self, s: &str) -> Self {
        self.sigalgs = Some(s.to_string());
        self
    }

    pub fn alpn(mut self, wire: &[u8]) -> Self {
        self.alpn = Some(wire.to_vec());
        self
    }

    /// Connects to `addr` as `localhost`, verifying the server's chain against `trust` alone
    /// and the name. Blocking: call it from `spawn_blocking`.
    pub fn connect(&self, addr: SocketAddr) -> Result<SslStream<TcpStream>, String> {
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
        let mut store = X509StoreBuilder::new().unwrap();
        store
            .add_cert(X509::from_der(&self.trust).unwrap())
            .unwrap();
        b.set_cert_store(store.build());
        b.set_min_proto_version(Some(self.min)).unwrap();
        b.set_max_proto_version(Some(self.max)).unwrap();
        if let Some(c) = &self.ciphers {
            b.set_cipher_list(c)
                .map_err(|e| format!("cipher list {c}: {e}"))?;
        }
        if let Some(c) = &self.tls13_suites {
            b.set_ciphersuites(c).unwrap();
        }
        if let Some(s) = &self.sigalgs {
            b.set_sigalgs_list(s)
                .map_err(|e| format!("sigalgs {s}: {e}"))?;
        }
        if let Some(a) = &self.alpn {
            b.set_alpn_protos(a).unwrap();
        }
        if let Some((cert, key)) = &self.identity {
            b.set_certificate(cert).unwrap();
            b.set_private_key(key).unwrap();
        }
        let connector = b.build();
        let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        connector
            .configure()
            .unwrap()
            .connect("localhost", tcp)
            .map_err(|e| format!("{e}"))
    }

    pub async fn connect_async(&self, addr: SocketAddr) -> Result<SslStream<TcpStream>, String> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.connect(addr))
            .await
            .unwrap()
    }
}

/// Sends a line and reads the echo. Blocking.
pub fn echo(stream: &mut SslStream<TcpStream>, line: &str) -> String {
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    stream.flush().unwrap();
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer).unwrap();
    answer.trim_end().to_string()
}

/// As [`echo`], from async code; gives the stream back.
pub async fn echo_async(
    mut stream: SslStream<TcpStream>,
    line: &str,
) -> (SslStream<TcpStream>, String) {
    let line = line.to_string();
    tokio::task::spawn_blocking(move || {
        let answer = echo(&mut stream, &line);
        (stream, answer)
    })
    .await
    .unwrap()
}

/// The DER of the certificate the server presented.
pub fn peer_der(stream: &SslStream<TcpStream>) -> Vec<u8> {
    stream.ssl().peer_certificate().unwrap().to_der().unwrap()
}

/// A self-signed EC client certificate made by OpenSSL.
pub fn client_identity() -> (X509, PKey<Private>) {
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::x509::X509NameBuilder;
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "test client").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (b.build(), key)
}

/// The server's client-certificate verifier: offers (does not require) client authentication,
/// accepts any certificate, checks only the handshake signature; the policy runs in the app.
pub type AcceptAnyClientCert = strongroom_keystore::tls::OptionalClientCert;
