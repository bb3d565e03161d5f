//! The algorithms Strongroom asks of a token, how each maps to a PKCS#11 mechanism, and what the
//! token in hand really supports (found out once, when the token is opened).
//!
//! | algorithm   | mechanism                 | input to the token                      |
//! |-------------|---------------------------|-----------------------------------------|
//! | PS256       | CKM_RSA_PKCS_PSS          | SHA-256 digest; MGF1-SHA-256, salt 32   |
//! | RS256       | CKM_RSA_PKCS              | DER DigestInfo(SHA-256, digest)         |
//! | ES256       | CKM_ECDSA                 | SHA-256 digest; raw r‖s comes back      |
//! | RSA-OAEP    | CKM_RSA_PKCS_OAEP         | SHA-1, MGF1-SHA-1, no label             |
//! | RSA-OAEP-256| CKM_RSA_PKCS_OAEP         | SHA-256, MGF1-SHA-256, no label         |
//!
//! Hashing happens on the host: only 32 bytes travel to the HSM whatever the size of the JWT, which
//! matters for network HSMs, and every token offers the raw-digest mechanisms. Nothing is ever
//! emulated on top of a raw RSA operation: what the token lacks is `Unsupported`.

use std::collections::HashSet;

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use sha2::{Digest, Sha256};

/// A signature algorithm, by its JOSE name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignAlg {
    /// RSASSA-PSS, SHA-256, MGF1-SHA-256, 32-byte salt.
    Ps256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (TLS peers that need it; never for FAPI tokens).
    Rs256,
    /// ECDSA P-256 with SHA-256; the signature is raw r‖s (64 bytes), as JWS wants.
    Es256,
}

impl SignAlg {
    pub fn jose_name(self) -> &'static str {
        match self {
            SignAlg::Ps256 => "PS256",
            SignAlg::Rs256 => "RS256",
            SignAlg::Es256 => "ES256",
        }
    }

    pub fn from_jose_name(name: &str) -> Option<Self> {
        match name {
            "PS256" => Some(SignAlg::Ps256),
            "RS256" => Some(SignAlg::Rs256),
            "ES256" => Some(SignAlg::Es256),
            _ => None,
        }
    }

    pub(crate) fn needs_rsa(self) -> bool {
        matches!(self, SignAlg::Ps256 | SignAlg::Rs256)
    }

    pub(crate) fn mechanism_type(self) -> MechanismType {
        match self {
            SignAlg::Ps256 => MechanismType::RSA_PKCS_PSS,
            SignAlg::Rs256 => MechanismType::RSA_PKCS,
            SignAlg::Es256 => MechanismType::ECDSA,
        }
    }

    /// The mechanism and the bytes to hand to C_Sign for a SHA-256 `digest`.
    pub(crate) fn mechanism_and_input(self, digest: &[u8; 32]) -> (Mechanism<'static>, Vec<u8>) {
        match self {
            SignAlg::Ps256 => (
                Mechanism::RsaPkcsPss(PkcsPssParams {
                    hash_alg: MechanismType::SHA256,
                    mgf: PkcsMgfType::MGF1_SHA256,
                    s_len: 32.into(),
                }),
                digest.to_vec(),
            ),
            SignAlg::Rs256 => {
                let mut input = Vec::with_capacity(SHA256_DIGEST_INFO_PREFIX.len() + 32);
                input.extend_from_slice(&SHA256_DIGEST_INFO_PREFIX);
                input.extend_from_slice(digest);
                (Mechanism::RsaPkcs, input)
            }
            SignAlg::Es256 => (Mechanism::Ecdsa, digest.to_vec()),
        }
    }
}

impl std::fmt::Display for SignAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.jose_name())
    }
}

/// DER of `DigestInfo { AlgorithmIdentifier { sha256, NULL }, OCTET STRING (32) }` up to the digest.
const SHA256_DIGEST_INFO_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// SHA-256 of a message, computed on the host.
pub fn sha256(message: &[u8]) -> [u8; 32] {
    Sha256::digest(message).into()
}

/// A key-decryption algorithm, by its JWE name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecryptAlg {
    /// RSAES-OAEP with SHA-1 and MGF1-SHA-1 (JWE `RSA-OAEP`).
    RsaOaep,
    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256 (JWE `RSA-OAEP-256`).
    RsaOaep256,
}

impl DecryptAlg {
    pub fn jose_name(self) -> &'static str {
        match self {
            DecryptAlg::RsaOaep => "RSA-OAEP",
            DecryptAlg::RsaOaep256 => "RSA-OAEP-256",
        }
    }

    pub fn from_jose_name(name: &str) -> Option<Self> {
        match name {
            "RSA-OAEP" => Some(DecryptAlg::RsaOaep),
            "RSA-OAEP-256" => Some(DecryptAlg::RsaOaep256),
            _ => None,
        }
    }

    pub(crate) fn mechanism(self) -> Mechanism<'static> {
        let (hash, mgf) = match self {
            DecryptAlg::RsaOaep => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
            DecryptAlg::RsaOaep256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        };
        Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()))
    }
}

impl std::fmt::Display for DecryptAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.jose_name())
    }
}

/// What the opened token can do, found out when it was opened.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    pub(crate) sign: HashSet<SignAlg>,
    pub(crate) decrypt: HashSet<DecryptAlg>,
    pub(crate) rsa_keygen: Option<(usize, usize)>,
    pub(crate) ec_keygen: bool,
}

impl Capabilities {
    pub fn can_sign(&self, alg: SignAlg) -> bool {
        self.sign.contains(&alg)
    }

    pub fn can_decrypt(&self, alg: DecryptAlg) -> bool {
        self.decrypt.contains(&alg)
    }

    /// RSA key sizes (bits) the token can generate, if any.
    pub fn rsa_key_sizes(&self) -> Option<(usize, usize)> {
        self.rsa_keygen
    }

    pub fn can_generate_ec_p256(&self) -> bool {
        self.ec_keygen
    }

    pub fn sign_algs(&self) -> Vec<SignAlg> {
        let mut v: Vec<_> = self.sign.iter().copied().collect();
        v.sort_by_key(|a| a.jose_name());
        v
    }

    pub fn decrypt_algs(&self) -> Vec<DecryptAlg> {
        let mut v: Vec<_> = self.decrypt.iter().copied().collect();
        v.sort_by_key(|a| a.jose_name());
        v
    }
}
