//! JWE access tokens: the signed access token (the JWS the keystore makes in the HSM) wrapped as
//! a nested JWT (RFC 7519 §5.2, RFC 7516 compact serialization), encrypted to an API's own RSA
//! public key so that only the API can read it.
//!
//! Everything here is a public-key operation, done in software (josekit on OpenSSL): the server
//! holds no private key for it, and none is ever accepted. The header is
//! `{alg, enc, cty: "JWT", kid?}`; `alg` is RSA-OAEP-256 (default), RSA-OAEP-384, RSA-OAEP-512
//! or RSA-OAEP, `enc` A256GCM
//! (default) or A128CBC-HS256. The content-encryption key is made here, in a buffer that is
//! zeroized when the token is done, and handed to josekit rather than left to it.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::JoseError;
use josekit::jwe::alg::rsaes::RsaesJweEncrypter;
use josekit::jwe::{JweAlgorithm, JweContentEncryption, JweEncrypter, JweHeader};
use josekit::jwk::Jwk;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// An API's token-encryption settings, as registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEncryption {
    pub format: Format,
    pub encryption_key: EncryptionKey,
    #[serde(default)]
    pub enc: ContentEncryption,
}

/// How the token is wrapped: only a nested JWT in JWE compact serialization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    #[serde(rename = "compact-nested-jwe")]
    CompactNestedJwe,
}

/// The API's RSA public key: a PEM (an X.509 certificate or an SPKI public key) or a public JWK.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwk: Option<Value>,
    #[serde(default)]
    pub alg: KeyWrap,
    /// Put in the JWE header; unset: the JWK's `kid`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The operator's label for the key (as the product's Management API takes it): kept and
    /// shown, never used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyWrap {
    #[default]
    #[serde(rename = "RSA-OAEP-256")]
    RsaOaep256,
    #[serde(rename = "RSA-OAEP")]
    RsaOaep,
    #[serde(rename = "RSA-OAEP-384")]
    RsaOaep384,
    #[serde(rename = "RSA-OAEP-512")]
    RsaOaep512,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContentEncryption {
    #[default]
    #[serde(rename = "A256GCM")]
    A256Gcm,
    #[serde(rename = "A128CBC-HS256")]
    A128CbcHs256,
}

impl ContentEncryption {
    pub fn name(self) -> &'static str {
        match self {
            ContentEncryption::A256Gcm => "A256GCM",
            ContentEncryption::A128CbcHs256 => "A128CBC-HS256",
        }
    }
}

/// Ready to wrap tokens for one API.
#[derive(Debug, Clone)]
pub struct Encryptor {
    inner: RsaesJweEncrypter,
    enc: ContentEncryption,
    kid: Option<String>,
}

/// Encrypters built so far, by their settings (an API's key is parsed once, not per token).
static ENCRYPTORS: std::sync::LazyLock<crate::memo::Memo<Encryptor>> =
    std::sync::LazyLock::new(|| crate::memo::Memo::new(256));

impl TokenEncryption {
    /// [`TokenEncryption::encryptor`], built once per distinct settings and shared.
    pub fn shared_encryptor(&self) -> Result<std::sync::Arc<Encryptor>, String> {
        let key = serde_json::to_string(self).map_err(|e| e.to_string())?;
        ENCRYPTORS.get_or_build(key, || self.encryptor().map(std::sync::Arc::new))
    }

    /// Reads the key and checks it (RSA, at least [`MIN_RSA_BITS`], public only); the error
    /// says what is wrong with it.
    pub fn encryptor(&self) -> Result<Encryptor, String> {
        let key = &self.encryption_key;
        let alg = match key.alg {
            KeyWrap::RsaOaep256 => josekit::jwe::RSA_OAEP_256,
            KeyWrap::RsaOaep => josekit::jwe::RSA_OAEP,
            KeyWrap::RsaOaep384 => josekit::jwe::RSA_OAEP_384,
            KeyWrap::RsaOaep512 => josekit::jwe::RSA_OAEP_512,
        };
        if let Some(kid) = &key.kid {
            if kid.is_empty() || kid.len() > 256 {
                return Err("kid must be 1 to 256 characters".into());
            }
        }
        if let Some(name) = &key.name {
            if name.is_empty() || name.chars().count() > 128 {
                return Err("encryption_key.name must be 1 to 128 characters".into());
            }
        }
        let (inner, jwk_kid) = match (&key.pem, &key.jwk) {
            (Some(pem), None) => {
                let spki = spki_from_pem(pem)?;
                check_rsa_spki(&spki)?;
                let e = alg
                    .encrypter_from_der(&spki)
                    .map_err(|_| "the PEM key is not a usable RSA public key".to_owned())?;
                (e, None)
            }
            (None, Some(jwk)) => {
                let map = jwk
                    .as_object()
                    .ok_or("jwk must be a JSON object (one public RSA JWK)")?;
                if map.get("kty").and_then(Value::as_str) != Some("RSA") {
                    return Err("jwk must be an RSA key (kty RSA)".into());
                }
                let n = map
                    .get("n")
                    .and_then(Value::as_str)
                    .and_then(|n| URL_SAFE_NO_PAD.decode(n).ok())
                    .ok_or("jwk n must be the base64url modulus")?;
                let bits = modulus_bits(&n);
                if bits < MIN_RSA_BITS {
                    return Err(format!(
                        "the RSA key has {bits} bits: at least {MIN_RSA_BITS} are required"
                    ));
                }
                let parsed =
                    Jwk::from_map(map.clone()).map_err(|_| "jwk is not a valid JWK".to_owned())?;
                let e = alg.encrypter_from_jwk(&parsed).map_err(|_| {
                    format!(
                        "jwk is not a public RSA encryption key for {} (check its use, key_ops \
                         and alg)",
                        alg.name()
                    )
                })?;
                (e, parsed.key_id().map(str::to_owned))
            }
            _ => return Err("encryption_key needs exactly one of pem or jwk".into()),
        };
        Ok(Encryptor {
            inner,
            enc: self.enc,
            kid: key.kid.clone().or(jwk_kid),
        })
    }
}

impl Encryptor {
    /// The nested JWT: `jws` (a compact JWS) as the payload of a compact JWE with
    /// `cty: "JWT"`.
    pub fn wrap(&self, jws: &str) -> Result<String, String> {
        let mut header = JweHeader::new();
        header.set_content_encryption(self.enc.name());
        header.set_content_type("JWT");
        if let Some(kid) = &self.kid {
            header.set_key_id(kid);
        }
        // Both A256GCM and A128CBC-HS256 take a 256-bit key.
        let mut cek = Zeroizing::new(vec![0u8; 32]);
        getrandom::getrandom(&mut cek).map_err(|e| format!("random: {e}"))?;
        let encrypter = WithCek {
            inner: self.inner.clone(),
            cek,
        };
        josekit::jwe::serialize_compact(jws.as_bytes(), &header, &encrypter)
            .map_err(|e| format!("JWE encryption failed: {e}"))
    }
}

/// The RSA encrypter with a content-encryption key of ours (zeroized on drop) instead of one
/// josekit would make and leave in memory.
#[derive(Clone)]
struct WithCek {
    inner: RsaesJweEncrypter,
    cek: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for WithCek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithCek")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl JweEncrypter for WithCek {
    fn algorithm(&self) -> &dyn JweAlgorithm {
        self.inner.algorithm()
    }

    fn key_id(&self) -> Option<&str> {
        // The header carries the kid (or none); never the inner JWK's behind its back.
        None
    }

    fn compute_content_encryption_key(
        &self,
        cencryption: &dyn JweContentEncryption,
        _in_header: &JweHeader,
        _out_header: &mut JweHeader,
    ) -> Result<Option<Cow<'_, [u8]>>, JoseError> {
        if cencryption.key_len() == self.cek.len() {
            Ok(Some(Cow::Borrowed(self.cek.as_slice())))
        } else {
            // Not one of our encs; josekit makes a key of the right length.
            Ok(None)
        }
    }

    fn encrypt(
        &self,
        key: &[u8],
        in_header: &JweHeader,
        out_header: &mut JweHeader,
    ) -> Result<Option<Vec<u8>>, JoseError> {
        self.inner.encrypt(key, in_header, out_header)
    }

    fn box_clone(&self) -> Box<dyn JweEncrypter> {
        Box::new(self.clone())
    }
}

/// The SPKI DER of the first PEM block: a CERTIFICATE's subject public key, or a PUBLIC KEY.
fn spki_from_pem(pem: &str) -> Result<Vec<u8>, String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|_| "pem is not a PEM block".to_owned())?;
    match block.label.as_str() {
        "CERTIFICATE" => {
            let (_, cert) = x509_parser::parse_x509_certificate(&block.contents)
                .map_err(|_| "the PEM certificate does not parse".to_owned())?;
            Ok(cert.public_key().raw.to_vec())
        }
        "PUBLIC KEY" => Ok(block.contents.clone()),
        other => Err(format!(
            "pem must be a CERTIFICATE or a PUBLIC KEY (SPKI), not {:?}",
            other.chars().take(40).collect::<String>()
        )),
    }
}

fn check_rsa_spki(spki: &[u8]) -> Result<(), String> {
    use x509_parser::prelude::FromDer as _;
    use x509_parser::public_key::PublicKey;
    let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki)
        .map_err(|_| "the PEM public key does not parse".to_owned())?;
    match info.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let bits = modulus_bits(rsa.modulus);
            if bits < MIN_RSA_BITS {
                Err(format!(
                    "the RSA key has {bits} bits: at least {MIN_RSA_BITS} are required"
                ))
            } else {
                Ok(())
            }
        }
        _ => Err("the key must be an RSA public key".into()),
    }
}

/// The bit length of a big-endian unsigned modulus (leading zero bytes ignored).
fn modulus_bits(n: &[u8]) -> usize {
    let first = n.iter().position(|b| *b != 0);
    match first.and_then(|i| n.get(i..)) {
        Some(rest @ [top, ..]) => {
            (rest.len() - 1) * 8 + (8 - usize::try_from(top.leading_zeros()).unwrap_or(8))
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_bits_ignore_leading_zeros() {
        assert_eq!(modulus_bits(&[]), 0);
        assert_eq!(modulus_bits(&[0, 0]), 0);
        assert_eq!(modulus_bits(&[1]), 1);
        assert_eq!(modulus_bits(&[0, 0x80, 0]), 16);
        let mut n = vec![0u8; 257];
        *n.get_mut(1).unwrap() = 0xc0;
        assert_eq!(modulus_bits(&n), 2048);
    }

    #[test]
    fn defaults_are_rsa_oaep_256_and_a256gcm() {
        let t: TokenEncryption = serde_json::from_value(serde_json::json!({
            "format": "compact-nested-jwe", "encryption_key": {"pem": "x"}
        }))
        .unwrap();
        assert_eq!(t.encryption_key.alg, KeyWrap::RsaOaep256);
        assert_eq!(t.enc, ContentEncryption::A256Gcm);
        assert!(t.encryptor().is_err(), "not a PEM");
        let bad_format: Result<TokenEncryption, _> = serde_json::from_value(serde_json::json!({
            "format": "jwe-json", "encryption_key": {"pem": "x"}
        }));
        assert!(bad_format.is_err());
    }
}
