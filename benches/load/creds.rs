//! The clients' credentials, all made before anything is timed: an RSA key and its PS256
//! client assertions (private_key_jwt, a unique jti each), a client CA and a tls_client_auth
//! certificate, and PKCE pairs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair as _, RSA_PSS_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};

pub const CLIENT_KID: &str = "bench-key-1";
/// How far ahead an assertion's `exp` lies (the server accepts up to 300 s, plus its skew):
/// every measurement with the assertions of one batch ends well before.
pub const ASSERTION_LIFETIME: u64 = 300;

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A prefix no other run of this bench shares, so every jti is unique even across runs.
fn run_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut r = [0u8; 6];
    let _ = aws_lc_rs::rand::fill(&mut r);
    format!("{}-{}", b64(&r), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The private_key_jwt key of the bench's clients (RSA-2048, PS256).
#[derive(Debug)]
pub struct ClientKey {
    key: RsaKeyPair,
}

impl ClientKey {
    pub fn generate() -> Result<Self, String> {
        RsaKeyPair::generate(KeySize::Rsa2048)
            .map(|key| ClientKey { key })
            .map_err(|e| format!("RSA key generation: {e}"))
    }

    /// The public JWK, for the client's registered `jwks`.
    pub fn jwk(&self) -> Value {
        let public = self.key.public_key();
        json!({
            "kty": "RSA", "kid": CLIENT_KID, "use": "sig", "alg": "PS256",
            "n": b64(public.modulus().big_endian_without_leading_zero()),
            "e": b64(public.exponent().big_endian_without_leading_zero()),
        })
    }

    fn sign(&self, rng: &SystemRandom, input: &str) -> Result<String, String> {
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(&RSA_PSS_SHA256, rng, input.as_bytes(), &mut sig)
            .map_err(|e| format!("PS256 signature: {e}"))?;
        Ok(format!("{input}.{}", b64(&sig)))
    }

    /// `n` client assertions for `client_id` with audience `aud`, unique jti each, `exp` =
    /// now + 300 s, signed on `threads` threads.
    pub fn assertions(
        &self,
        client_id: &str,
        aud: &str,
        n: usize,
        threads: usize,
    ) -> Result<Vec<String>, String> {
        let header =
            b64(format!(r#"{{"alg":"PS256","kid":"{CLIENT_KID}","typ":"JWT"}}"#).as_bytes());
        let prefix = run_prefix();
        let iat = now();
        let exp = iat + ASSERTION_LIFETIME;
        let threads = threads.clamp(1, 16);
        let per = n.div_ceil(threads);
        let parts: Vec<Result<Vec<String>, String>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (header, prefix) = (&header, &prefix);
                    s.spawn(move || {
                        let rng = SystemRandom::new();
                        let from = t * per;
                        let to = ((t + 1) * per).min(n);
                        (from..to)
                            .map(|i| {
                                let claims = json!({
                                    "iss": client_id, "sub": client_id, "aud": aud,
                                    "iat": iat, "exp": exp, "jti": format!("{prefix}-{i}"),
                                });
                                self.sign(
                                    &rng,
                                    &format!("{header}.{}", b64(claims.to_string().as_bytes())),
                                )
                            })
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a signing thread panicked".into()))
                })
                .collect()
        });
        let mut out = Vec::with_capacity(n);
        for p in parts {
            out.extend(p?);
        }
        Ok(out)
    }
}

/// A client CA and one client certificate it issued (ECDSA P-256, rcgen), with a DNS SAN the
/// tls_client_auth client registers.
pub struct MtlsIdentity {
    pub ca_pem: String,
    pub chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
    pub san_dns: String,
}

impl std::fmt::Debug for MtlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsIdentity")
            .field("san_dns", &self.san_dns)
            .finish_non_exhaustive()
    }
}

impl MtlsIdentity {
    pub fn generate() -> Result<Self, String> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let e = |e: rcgen::Error| format!("rcgen: {e}");
        let ca_key = KeyPair::generate().map_err(e)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        ca.distinguished_name
            .push(DnType::OrganizationName, "Strongroom Bench");
        ca.distinguished_name
            .push(DnType::CommonName, "Strongroom Bench Client CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
        let issuer = Issuer::new(ca, ca_key);

        let san_dns = "bench-client.strongroom.test".to_owned();
        let key = KeyPair::generate().map_err(e)?;
        let mut leaf = CertificateParams::new(vec![san_dns.clone()]).map_err(e)?;
        leaf.distinguished_name
            .push(DnType::OrganizationName, "Strongroom Bench");
        leaf.distinguished_name
            .push(DnType::CommonName, "bench-mtls-client");
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = leaf.signed_by(&key, &issuer).map_err(e)?;
        Ok(MtlsIdentity {
            ca_pem: ca_cert.pem(),
            chain: vec![cert.der().clone()],
            key_der: key.serialize_der(),
            san_dns,
        })
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// base64url(SHA-256(leaf DER)): the `cnf.x5t#S256` a bound token must carry.
    pub fn thumbprint(&self) -> String {
        let der = self.chain.first().map_or(&[][..], |c| c.as_ref());
        b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref())
    }
}

/// A PKCS verifier and its S256 challenge.
#[derive(Debug, Clone)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

pub fn pkce() -> Pkce {
    let mut b = [0u8; 32];
    let _ = aws_lc_rs::rand::fill(&mut b);
    let verifier = b64(&b);
    let challenge =
        b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref());
    Pkce {
        verifier,
        challenge,
    }
}

/// The claims of a JWT, read without verification (the tests verify signatures; the bench
/// only looks at what was issued).
pub fn jwt_parts(token: &str) -> Option<(Value, Value)> {
    let mut parts = token.split('.');
    let header = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
    let payload = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
    Some((
        serde_json::from_slice(&header).ok()?,
        serde_json::from_slice(&payload).ok()?,
    ))
}
