//! What a key is for, and with which algorithm.

use strongroom_hsm::{DecryptAlg, KeySpec, KeyUsage, SignAlg};

use crate::error::{Error, Result};

/// What a key is for. Each purpose has at most one active key at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyPurpose {
    /// Signs ID tokens.
    IdToken,
    /// Signs JWT access tokens.
    AccessToken,
    /// Decrypts request objects that clients encrypt to us (JWE).
    RequestObjectDecryption,
    /// The TLS server key.
    TlsServer,
    /// Signs audit records.
    Audit,
}

impl KeyPurpose {
    pub const ALL: [KeyPurpose; 5] = [
        KeyPurpose::IdToken,
        KeyPurpose::AccessToken,
        KeyPurpose::RequestObjectDecryption,
        KeyPurpose::TlsServer,
        KeyPurpose::Audit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::IdToken => "id_token",
            KeyPurpose::AccessToken => "access_token",
            KeyPurpose::RequestObjectDecryption => "request_object_decryption",
            KeyPurpose::TlsServer => "tls_server",
            KeyPurpose::Audit => "audit",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        KeyPurpose::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown key purpose {s:?}; one of id_token, access_token, \
                     request_object_decryption, tls_server, audit"
                ))
            })
    }

    /// Whether the key is published in the JWKS (`tls_server` and `audit` keys are not: the
    /// first travels in its certificate, the second is for our own records).
    pub fn published_in_jwks(self) -> bool {
        matches!(
            self,
            KeyPurpose::IdToken | KeyPurpose::AccessToken | KeyPurpose::RequestObjectDecryption
        )
    }

    /// JWK `use`.
    pub fn jwk_use(self) -> &'static str {
        if self == KeyPurpose::RequestObjectDecryption {
            "enc"
        } else {
            "sig"
        }
    }
}

impl std::fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The algorithm a key is used with, by its JOSE name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlg {
    Ps256,
    Es256,
    RsaOaep,
    RsaOaep256,
}

impl KeyAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlg::Ps256 => "PS256",
            KeyAlg::Es256 => "ES256",
            KeyAlg::RsaOaep => "RSA-OAEP",
            KeyAlg::RsaOaep256 => "RSA-OAEP-256",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        [
            KeyAlg::Ps256,
            KeyAlg::Es256,
            KeyAlg::RsaOaep,
            KeyAlg::RsaOaep256,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
        .ok_or_else(|| Error::Config(format!("unknown key algorithm {s:?}")))
    }

    pub fn sign_alg(self) -> Option<SignAlg> {
        match self {
            KeyAlg::Ps256 => Some(SignAlg::Ps256),
            KeyAlg::Es256 => Some(SignAlg::Es256),
            _ => None,
        }
    }

    pub fn decrypt_alg(self) -> Option<DecryptAlg> {
        match self {
            KeyAlg::RsaOaep => Some(DecryptAlg::RsaOaep),
            KeyAlg::RsaOaep256 => Some(DecryptAlg::RsaOaep256),
            _ => None,
        }
    }

    pub fn usage(self) -> KeyUsage {
        if self.sign_alg().is_some() {
            KeyUsage::Sign
        } else {
            KeyUsage::Decrypt
        }
    }

    /// Whether this algorithm may serve `purpose`.
    pub fn fits(self, purpose: KeyPurpose) -> bool {
        match purpose {
            KeyPurpose::RequestObjectDecryption => self.decrypt_alg().is_some(),
            _ => self.sign_alg().is_some(),
        }
    }

    /// The key pair to generate: RSA 2048 at least for RSA algorithms.
    pub fn key_spec(self, rsa_bits: u32) -> KeySpec {
        match self {
            KeyAlg::Es256 => KeySpec::EcP256,
            _ if rsa_bits >= 3072 => KeySpec::Rsa3072,
            _ => KeySpec::Rsa2048,
        }
    }
}

impl std::fmt::Display for KeyAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
