//! Keys in the token: their names (CKA_ID), the kinds Strongroom generates, and the templates
//! that keep every private key sensitive and non-extractable.

use cryptoki::object::{Attribute, KeyType, ObjectClass};

use crate::der;
use crate::error::{Error, Result};

/// A key's id: the JOSE `kid` and, as UTF-8 bytes, its CKA_ID in the token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// 1 to 64 characters of `A-Z a-z 0-9 . _ -`: safe in a JWKS, a URL, a log line and a CKA_ID.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(KeyId(id))
        } else {
            Err(Error::InvalidInput(format!(
                "key id {id:?} must be 1-64 characters of A-Z a-z 0-9 . _ -"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn cka_id(&self) -> Vec<u8> {
        self.0.as_bytes().to_vec()
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The kinds of key pair Strongroom generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySpec {
    Rsa2048,
    Rsa3072,
    EcP256,
}

impl KeySpec {
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "rsa2048" | "rsa-2048" => Ok(KeySpec::Rsa2048),
            "rsa3072" | "rsa-3072" => Ok(KeySpec::Rsa3072),
            "ec-p256" | "p256" | "p-256" | "ecp256" => Ok(KeySpec::EcP256),
            _ => Err(Error::InvalidInput(format!(
                "key spec {s:?}: use rsa2048, rsa3072 or ec-p256"
            ))),
        }
    }
}

impl std::fmt::Display for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeySpec::Rsa2048 => "rsa2048",
            KeySpec::Rsa3072 => "rsa3072",
            KeySpec::EcP256 => "ec-p256",
        })
    }
}

/// What a private key may do. A key signs or decrypts, never both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyUsage {
    Sign,
    Decrypt,
}

/// The kind of a key found in the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa {
        bits: usize,
    },
    EcP256,
    /// Another key type or curve: listed, never used.
    Other,
}

/// A private key on the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: KeyId,
    pub kind: KeyKind,
    pub usage: Vec<KeyUsage>,
    pub label: String,
}

/// How a private key is protected, as the token reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyProtection {
    pub sensitive: bool,
    pub extractable: bool,
    pub always_sensitive: bool,
    pub never_extractable: bool,
    /// True if reading CKA_VALUE returned any bytes (it must not).
    pub value_readable: bool,
}

pub(crate) fn private_key_template(id: &KeyId, label: &str, usage: KeyUsage) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(usage == KeyUsage::Sign),
        Attribute::Decrypt(usage == KeyUsage::Decrypt),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Id(id.cka_id()),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

pub(crate) fn public_key_template(
    id: &KeyId,
    label: &str,
    spec: KeySpec,
    usage: KeyUsage,
) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(usage == KeyUsage::Sign),
        Attribute::Id(id.cka_id()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    match spec {
        KeySpec::Rsa2048 | KeySpec::Rsa3072 => {
            let bits: u64 = if spec == KeySpec::Rsa2048 { 2048 } else { 3072 };
            t.push(Attribute::ModulusBits(bits.into()));
            t.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            t.push(Attribute::Encrypt(usage == KeyUsage::Decrypt));
        }
        KeySpec::EcP256 => t.push(Attribute::EcParams(der::p256_ec_params())),
    }
    t
}

pub(crate) fn find_template(id: &KeyId, class: ObjectClass) -> Vec<Attribute> {
    vec![Attribute::Class(class), Attribute::Id(id.cka_id())]
}

pub(crate) fn kind_of(
    key_type: Option<KeyType>,
    modulus_bits: Option<usize>,
    ec_params: Option<&[u8]>,
) -> KeyKind {
    match key_type {
        Some(KeyType::RSA) => KeyKind::Rsa {
            bits: modulus_bits.unwrap_or(0),
        },
        Some(KeyType::EC) if ec_params == Some(der::p256_ec_params().as_slice()) => KeyKind::EcP256,
        _ => KeyKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids() {
        assert!(KeyId::new("id_token-2026.11.22").is_ok());
        assert!(KeyId::new("").is_err());
        assert!(KeyId::new("a b").is_err());
        assert!(KeyId::new("x".repeat(65)).is_err());
        assert!(KeyId::new("ü").is_err());
    }

    #[test]
    fn private_template_is_sensitive_and_single_use() {
        let id = KeyId::new("k1").unwrap();
        let t = private_key_template(&id, "k1", KeyUsage::Sign);
        assert!(t.contains(&Attribute::Sensitive(true)));
        assert!(t.contains(&Attribute::Extractable(false)));
        assert!(t.contains(&Attribute::Decrypt(false)));
        assert!(t.contains(&Attribute::Sign(true)));
    }
}
