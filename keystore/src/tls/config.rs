//! The rustls server configuration FAPI allows, and the resolver that serves the HSM key and its
//! certificate and swaps them atomically on rotation.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self, cipher_suite};
use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WantsServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ConfigBuilder, ServerConfig, SupportedCipherSuite, WantsVerifier};
use strongroom_hsm::{KeyId, PublicKey, SigningPool};

use super::certificate::check_chain_matches_key;
use super::signing_key::HsmTlsKey;
use crate::clock::UnixTime;
use crate::error::{Error, Result};

/// The ALPN protocols offered, in order of preference.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The TLS 1.2 suites FAPI 1 Advanced (8.5) allows that rustls implements: ECDHE with an RSA
/// certificate and AES-GCM. (The DHE suites it also lists are not in rustls.)
const FAPI_TLS12_SUITES: [SupportedCipherSuite; 2] = [
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
];

/// aws-lc-rs's default provider, its cipher suites cut down to every TLS 1.3 suite plus the two
/// TLS 1.2 suites FAPI 1 allows (TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 and
/// TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384). With an EC P-256 server key TLS 1.2 therefore has no
/// suite: such a server speaks TLS 1.3 only.
pub fn fapi_crypto_provider() -> CryptoProvider {
    let mut provider = aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .retain(|s| matches!(s, SupportedCipherSuite::Tls13(_)));
    provider.cipher_suites.extend(FAPI_TLS12_SUITES);
    provider
}

/// A server config builder on [`fapi_crypto_provider`] with TLS 1.2 and 1.3, waiting for the
/// client-certificate verifier.
pub fn fapi_server_config_builder() -> Result<ConfigBuilder<ServerConfig, WantsVerifier>> {
    ServerConfig::builder_with_provider(Arc::new(fapi_crypto_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Tls(format!("protocol versions: {e}")))
}

/// The server's TLS configuration: [`fapi_server_config_builder`], the certificate from
/// `resolver`, ALPN `h2` and `http/1.1`. `client_auth` is the verifier of client certificates
/// (for mutual-TLS endpoints); `None` asks for no client certificate.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    client_auth: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<ServerConfig> {
    let builder: ConfigBuilder<ServerConfig, WantsServerCert> = match client_auth {
        Some(verifier) => fapi_server_config_builder()?.with_client_cert_verifier(verifier),
        None => fapi_server_config_builder()?
            .with_client_cert_verifier(WebPkiClientVerifier::no_client_auth()),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The HSM key `kid` with its certificate `chain`, ready to serve, after
/// [`check_chain_matches_key`] at time `now`, rustls' own key/certificate consistency check, and
/// [`HsmTlsKey::self_test`] (which makes one HSM signature per scheme: this call blocks).
pub fn certified_key(
    pool: Arc<SigningPool>,
    kid: KeyId,
    public_key: &PublicKey,
    chain: Vec<CertificateDer<'static>>,
    now: UnixTime,
) -> Result<Arc<CertifiedKey>> {
    check_chain_matches_key(&chain, public_key, now)?;
    let key = Arc::new(HsmTlsKey::new(pool, kid, public_key.clone())?);
    let certified = CertifiedKey::new(chain, key.clone());
    certified
        .keys_match()
        .map_err(|e| Error::Certificate(format!("rustls: {e}")))?;
    key.self_test()?;
    Ok(Arc::new(certified))
}

/// Serves one [`CertifiedKey`] to every handshake and replaces it atomically: after
/// [`TlsCertResolver::swap`] new handshakes get the new key and chain, while connections
/// already established keep their session keys and never touch the old key again.
pub struct TlsCertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl std::fmt::Debug for TlsCertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.current.load();
        f.debug_struct("TlsCertResolver")
            .field("key", &current.key)
            .field("chain_len", &current.cert.len())
            .finish()
    }
}

impl TlsCertResolver {
    pub fn new(initial: Arc<CertifiedKey>) -> Self {
        TlsCertResolver {
            current: ArcSwap::new(initial),
        }
    }

    /// Serves `new` from the next handshake on; returns the key it replaces.
    pub fn swap(&self, new: Arc<CertifiedKey>) -> Arc<CertifiedKey> {
        self.current.swap(new)
    }

    /// The key and chain served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for TlsCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
