//! The TLS server key: a [`rustls::sign::SigningKey`] whose private half stays in the HSM.
//!
//! rustls asks for a handshake signature synchronously, from inside whatever task drives the
//! connection. [`HsmTlsKey`] hands the message to the [`SigningPool`] with
//! [`SigningPool::sign_blocking`] and waits for a worker's answer; on a multi-thread tokio runtime
//! the wait runs under [`tokio::task::block_in_place`], so the runtime moves its other tasks to
//! another thread meanwhile. The HSM never sees more than a SHA-256 digest: every scheme offered
//! here signs SHA-256, hashed on the host.

use std::sync::Arc;

use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use strongroom_hsm::{KeyId, PublicKey, SignAlg, SigningPool};
use tokio::runtime::{Handle, RuntimeFlavor};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::error::{Error, Result};

/// A TLS signature scheme and the HSM algorithm that produces it.
const RSA_SCHEMES: [(SignatureScheme, SignAlg); 2] = [
    // Preferred: TLS 1.3 accepts only PSS for RSA keys, and TLS 1.2 peers offer it too.
    (SignatureScheme::RSA_PSS_SHA256, SignAlg::Ps256),
    (SignatureScheme::RSA_PKCS1_SHA256, SignAlg::Rs256),
];
const EC_SCHEMES: [(SignatureScheme, SignAlg); 1] =
    [(SignatureScheme::ECDSA_NISTP256_SHA256, SignAlg::Es256)];

/// A TLS server key held in the HSM: RSA (PSS or PKCS#1 v1.5 signatures, SHA-256) or EC P-256
/// (ECDSA, SHA-256). Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct HsmTlsKey {
    inner: Arc<KeyRef>,
}

/// What a signature needs: where to send it, which key, and what the key can do.
struct KeyRef {
    pool: Arc<SigningPool>,
    kid: KeyId,
    public_key: PublicKey,
    spki: Vec<u8>,
    /// The schemes this key and this token can produce, most preferred first.
    schemes: Vec<(SignatureScheme, SignAlg)>,
}

impl std::fmt::Debug for HsmTlsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmTlsKey")
            .field("kid", &self.inner.kid)
            .field("public_key", &self.inner.public_key)
            .field(
                "schemes",
                &self
                    .inner
                    .schemes
                    .iter()
                    .map(|(s, _)| s)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl HsmTlsKey {
    /// The key `kid`, whose public half is `public_key` (from [`strongroom_hsm::Token::public_key`]).
    /// Fails if the token can sign none of the schemes this kind of key would need.
    pub fn new(pool: Arc<SigningPool>, kid: KeyId, public_key: PublicKey) -> Result<Self> {
        let caps = pool.token().capabilities();
        let candidates: &[(SignatureScheme, SignAlg)] = match public_key {
            PublicKey::Rsa { .. } => &RSA_SCHEMES,
            PublicKey::EcP256 { .. } => &EC_SCHEMES,
        };
        let schemes: Vec<_> = candidates
            .iter()
            .copied()
            .filter(|(_, alg)| caps.can_sign(*alg))
            .collect();
        if schemes.is_empty() {
            return Err(Error::Tls(format!(
                "the token cannot sign any TLS signature scheme with key {kid} ({public_key:?})"
            )));
        }
        let spki = public_key.spki_der();
        Ok(HsmTlsKey {
            inner: Arc::new(KeyRef {
                pool,
                kid,
                public_key,
                spki,
                schemes,
            }),
        })
    }

    /// As [`HsmTlsKey::new`], reading the public key from the token (a blocking call on the
    /// token's administrative session).
    pub fn load(pool: Arc<SigningPool>, kid: KeyId) -> Result<Self> {
        let public_key = pool.token().public_key(&kid)?;
        Self::new(pool, kid, public_key)
    }

    pub fn kid(&self) -> &KeyId {
        &self.inner.kid
    }

    pub fn public_key_info(&self) -> &PublicKey {
        &self.inner.public_key
    }

    /// The signature schemes this key offers, most preferred first.
    pub fn schemes(&self) -> Vec<SignatureScheme> {
        self.inner.schemes.iter().map(|(s, _)| *s).collect()
    }

    /// Signs a probe with every scheme the key offers and verifies each signature in software
    /// (aws-lc-rs) with the public key: proves that the token's private key `kid` is the one the
    /// public key (and so the certificate) describes, and that it may sign. One HSM signature
    /// per scheme; blocks like a handshake signature does.
    pub fn self_test(&self) -> Result<()> {
        let KeyRef {
            pool, kid, spki, ..
        } = &*self.inner;
        let (_, parsed) = SubjectPublicKeyInfo::from_der(spki)
            .map_err(|e| Error::Tls(format!("the public key of {kid} does not parse: {e}")))?;
        let public = parsed.subject_public_key.data.as_ref();
        let algorithms = rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .mapping;
        let probe = b"strongroom TLS key self-test";
        for (scheme, alg) in &self.inner.schemes {
            let signature = sign_in_place(pool, kid, *alg, probe)?;
            let verifiers = algorithms
                .iter()
                .find(|(s, _)| s == scheme)
                .map_or(&[][..], |(_, v)| *v);
            if !verifiers
                .iter()
                .any(|v| v.verify_signature(public, probe, &signature).is_ok())
            {
                return Err(Error::Tls(format!(
                    "the {scheme:?} signature of HSM key {kid} does not verify with the public key \
                     given for it: the token's private key is another key"
                )));
            }
        }
        Ok(())
    }
}

impl SigningKey for HsmTlsKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        // Our preference order, not the peer's: PSS before PKCS#1 v1.5.
        let (scheme, alg) = self
            .inner
            .schemes
            .iter()
            .find(|(s, _)| offered.contains(s))
            .copied()?;
        Some(Box::new(HsmTlsSigner {
            key: self.inner.clone(),
            scheme,
            alg,
        }))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.inner.spki.as_slice()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.inner.public_key {
            PublicKey::Rsa { .. } => SignatureAlgorithm::RSA,
            PublicKey::EcP256 { .. } => SignatureAlgorithm::ECDSA,
        }
    }
}

/// One handshake's signer, for the scheme chosen.
struct HsmTlsSigner {
    key: Arc<KeyRef>,
    scheme: SignatureScheme,
    alg: SignAlg,
}

impl std::fmt::Debug for HsmTlsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmTlsSigner")
            .field("kid", &self.key.kid)
            .field("scheme", &self.scheme)
            .finish()
    }
}

impl Signer for HsmTlsSigner {
    fn sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, rustls::Error> {
        let key = &self.key;
        sign_in_place(&key.pool, &key.kid, self.alg, message).map_err(|e| {
            tracing::warn!(kid = %key.kid, scheme = ?self.scheme, error = %e, "TLS handshake signature failed");
            rustls::Error::General(format!("HSM signature with key {}: {e}", key.kid))
        })
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// Signs `message` with `alg` (SHA-256, hashed on the host) through the pool and returns the
/// signature in its X.509 and TLS form (DER for ECDSA, as the token gives it for RSA).
/// Synchronous, and safe to call from any thread, async tasks included.
pub(crate) fn sign_in_place(
    pool: &SigningPool,
    kid: &KeyId,
    alg: SignAlg,
    message: &[u8],
) -> Result<Vec<u8>> {
    let sign = || pool.sign_blocking(kid, alg, message);
    // `block_in_place` panics on a current-thread runtime; there (and outside any runtime) the
    // thread simply waits, as the worker that answers is a thread of its own.
    let raw = match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(sign)
        }
        _ => sign(),
    }?;
    match alg {
        SignAlg::Es256 => Ok(strongroom_hsm::ecdsa_raw_to_der(&raw)?),
        SignAlg::Ps256 | SignAlg::Rs256 => Ok(raw),
    }
}
