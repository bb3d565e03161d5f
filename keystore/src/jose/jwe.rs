//! JWE decryption with HSM keys: the CEK is unwrapped in the HSM, the content in software.
//!
//! [`decrypt_compact`] is the entry point for JWEs that clients send (encrypted request
//! objects, RFC 9101 §6.1). It is written so that nothing a client can observe depends on *why*
//! a JWE was refused:
//!
//! - every refusal — malformed input, unknown `kid`, an `alg` or `enc` not allowed, a CEK that
//!   does not unwrap, a CEK of the wrong length, a bad tag, bad padding — returns the same
//!   [`Error::Jose`] text, [`JWE_DECRYPT_FAILED`]; the real cause goes to the log at debug level;
//! - when the CEK does not unwrap (or has the wrong length) decryption goes on with a random CEK,
//!   so that the response time does not tell a bad encrypted key from a bad tag
//!   (RFC 7516 §11.5);
//! - for `A*CBC-HS*` the tag is checked (in constant time) *before* CBC decryption and padding
//!   removal. josekit 0.10.3 decrypts first and compares the tag with `!=` afterwards, which is
//!   the shape of a padding oracle; its content decryption only runs here once the tag is good.
//!
//! Two refusals are not about the JWE at all and are passed on as [`Error::Hsm`]: the pool is
//! [`Busy`](strongroom_hsm::Error::Busy) (the edge answers 503 and the client may retry) or
//! [`PoolClosed`](strongroom_hsm::Error::PoolClosed). Both happen before the HSM sees the
//! ciphertext, so they reveal nothing about it.
//!
//! Why `pool.decrypt().await` and not josekit behind `spawn_blocking`: the only slow step is the
//! RSA private-key operation, and the pool already runs it off the runtime; the content
//! decryption that follows is microseconds of AES. Doing it ourselves also keeps the CEK in a
//! [`Zeroizing`] buffer from the HSM to the cipher, which josekit's `Cow` contract does not.
//!
//! [`HsmJweDecrypter`] is the same HSM unwrap behind josekit's [`JweDecrypter`] trait, for
//! josekit's own deserializers. It reports errors the way josekit's RSA-OAEP decrypter does
//! (distinctly): use [`decrypt_compact`] for anything a client sends.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::JoseError;
use josekit::jwe::{JweAlgorithm, JweContentEncryption, JweDecrypter, JweHeader};
use serde_json::{Map, Value};
use sha2::digest::core_api::BlockSizeUser;
use sha2::{Digest, Sha256, Sha384, Sha512};
use strongroom_hsm::{DecryptAlg, KeyId, SigningPool};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The only text a client ever sees when a JWE is refused.
pub const JWE_DECRYPT_FAILED: &str = "the JWE could not be decrypted";

/// Longest compact JWE accepted, in bytes. Request objects are a few kilobytes; the HTTP edge
/// should cap bodies well below this anyway.
pub const MAX_JWE_LEN: usize = 256 * 1024;

/// A JWE content-encryption algorithm (`enc`), by its JOSE name (RFC 7518 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentEnc {
    A128Gcm,
    A192Gcm,
    A256Gcm,
    A128CbcHs256,
    A192CbcHs384,
    A256CbcHs512,
}

impl ContentEnc {
    pub const ALL: [ContentEnc; 6] = [
        ContentEnc::A128Gcm,
        ContentEnc::A192Gcm,
        ContentEnc::A256Gcm,
        ContentEnc::A128CbcHs256,
        ContentEnc::A192CbcHs384,
        ContentEnc::A256CbcHs512,
    ];

    pub fn jose_name(self) -> &'static str {
        match self {
            ContentEnc::A128Gcm => "A128GCM",
            ContentEnc::A192Gcm => "A192GCM",
            ContentEnc::A256Gcm => "A256GCM",
            ContentEnc::A128CbcHs256 => "A128CBC-HS256",
            ContentEnc::A192CbcHs384 => "A192CBC-HS384",
            ContentEnc::A256CbcHs512 => "A256CBC-HS512",
        }
    }

    pub fn from_jose_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.jose_name() == name)
    }

    /// Length of the CEK in bytes (for CBC-HMAC: the MAC key and the AES key together).
    pub fn key_len(self) -> usize {
        match self {
            ContentEnc::A128Gcm => 16,
            ContentEnc::A192Gcm => 24,
            ContentEnc::A256Gcm | ContentEnc::A128CbcHs256 => 32,
            ContentEnc::A192CbcHs384 => 48,
            ContentEnc::A256CbcHs512 => 64,
        }
    }

    fn iv_len(self) -> usize {
        if self.is_cbc_hmac() { 16 } else { 12 }
    }

    /// Exact tag length. OpenSSL would accept a truncated GCM tag, so it is checked here.
    fn tag_len(self) -> usize {
        if self.is_cbc_hmac() {
            self.key_len() / 2
        } else {
            16
        }
    }

    fn is_cbc_hmac(self) -> bool {
        matches!(
            self,
            ContentEnc::A128CbcHs256 | ContentEnc::A192CbcHs384 | ContentEnc::A256CbcHs512
        )
    }

    fn josekit(self) -> &'static dyn JweContentEncryption {
        use josekit::jwe::enc;
        match self {
            ContentEnc::A128Gcm => &enc::A128GCM,
            ContentEnc::A192Gcm => &enc::A192GCM,
            ContentEnc::A256Gcm => &enc::A256GCM,
            ContentEnc::A128CbcHs256 => &enc::A128CBC_HS256,
            ContentEnc::A192CbcHs384 => &enc::A192CBC_HS384,
            ContentEnc::A256CbcHs512 => &enc::A256CBC_HS512,
        }
    }
}

impl std::fmt::Display for ContentEnc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.jose_name())
    }
}

/// How [`decrypt_compact`] finds the decryption key: the keystore implements it (a closure
/// `Fn(Option<&str>) -> Option<(KeyId, DecryptAlg)>` does too).
pub trait DecryptionKeys {
    /// The key named by the JWE header's `kid` (`None` when the header names none: the keystore
    /// may then answer with its one active decryption key, or refuse), and the one algorithm that
    /// key is published for. The header's `alg` must equal that algorithm.
    fn decryption_key(&self, kid: Option<&str>) -> Option<(KeyId, DecryptAlg)>;
}

impl<F> DecryptionKeys for F
where
    F: Fn(Option<&str>) -> Option<(KeyId, DecryptAlg)>,
{
    fn decryption_key(&self, kid: Option<&str>) -> Option<(KeyId, DecryptAlg)> {
        self(kid)
    }
}

/// Decrypts a compact JWE whose CEK is encrypted to one of our HSM keys, and returns the
/// plaintext (for a request object: the nested signed JWT).
///
/// `alg` must be one of `allowed_algs` and the key's own algorithm; `enc` one of
/// `allowed_encs`; `zip` and `crit` are refused. Every refusal is
/// `Error::Jose(JWE_DECRYPT_FAILED)`, except a busy or closed pool (`Error::Hsm`); see the
/// module documentation.
pub async fn decrypt_compact<K>(
    pool: &SigningPool,
    keys: &K,
    jwe: &str,
    allowed_algs: &[DecryptAlg],
    allowed_encs: &[ContentEnc],
) -> Result<Zeroizing<Vec<u8>>>
where
    K: DecryptionKeys + Sync + ?Sized,
{
    match decrypt(pool, keys, jwe, allowed_algs, allowed_encs).await {
        Ok(plaintext) => Ok(plaintext),
        Err(Refusal::Unavailable(e)) => Err(Error::Hsm(e)),
        Err(Refusal::Refused(cause)) => {
            tracing::debug!(%cause, "JWE refused");
            Err(Error::Jose(JWE_DECRYPT_FAILED.to_owned()))
        }
    }
}

/// Why a JWE was not decrypted. Only `Unavailable` ever reaches the caller as such.
enum Refusal {
    /// The pool could not take the job; nothing about the JWE was learnt.
    Unavailable(strongroom_hsm::Error),
    /// The JWE was refused; the cause is for the debug log only.
    Refused(String),
}

fn refused<T>(cause: impl Into<String>) -> std::result::Result<T, Refusal> {
    Err(Refusal::Refused(cause.into()))
}

fn b64(part: &str, what: &str) -> std::result::Result<Vec<u8>, Refusal> {
    URL_SAFE_NO_PAD
        .decode(part)
        .or_else(|e| refused(format!("the {what} is not base64url: {e}")))
}

async fn decrypt<K>(
    pool: &SigningPool,
    keys: &K,
    jwe: &str,
    allowed_algs: &[DecryptAlg],
    allowed_encs: &[ContentEnc],
) -> std::result::Result<Zeroizing<Vec<u8>>, Refusal>
where
    K: DecryptionKeys + Sync + ?Sized,
{
    // Everything checked before the HSM call is public knowledge (the format, our JWKS, our
    // metadata), so refusing early here tells a client nothing it could not know.
    if jwe.len() > MAX_JWE_LEN {
        return refused(format!("{} bytes, more than {MAX_JWE_LEN}", jwe.len()));
    }
    let mut parts = jwe.split('.');
    let (Some(header_b64), Some(ek_b64), Some(iv_b64), Some(ct_b64), Some(tag_b64), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return refused("not five dot-separated parts");
    };

    let header: Map<String, Value> = serde_json::from_slice(&b64(header_b64, "header")?)
        .or_else(|e| refused(format!("the protected header is not a JSON object: {e}")))?;
    let alg = match header.get("alg").and_then(Value::as_str) {
        Some(name) => match DecryptAlg::from_jose_name(name) {
            Some(alg) if allowed_algs.contains(&alg) => alg,
            _ => return refused(format!("alg {name:?} is not allowed")),
        },
        None => return refused("no alg string"),
    };
    let enc = match header.get("enc").and_then(Value::as_str) {
        Some(name) => match ContentEnc::from_jose_name(name) {
            Some(enc) if allowed_encs.contains(&enc) => enc,
            _ => return refused(format!("enc {name:?} is not allowed")),
        },
        None => return refused("no enc string"),
    };
    for unsupported in ["zip", "crit"] {
        if header.contains_key(unsupported) {
            return refused(format!("header member {unsupported:?} is not supported"));
        }
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return refused("kid is not a string"),
    };
    let Some((key_id, key_alg)) = keys.decryption_key(kid) else {
        return refused(format!("no decryption key for kid {kid:?}"));
    };
    if key_alg != alg {
        return refused(format!("key {key_id} is for {key_alg}, the JWE says {alg}"));
    }

    let encrypted_key = b64(ek_b64, "encrypted key")?;
    let iv = b64(iv_b64, "IV")?;
    let ciphertext = b64(ct_b64, "ciphertext")?;
    let tag = b64(tag_b64, "tag")?;
    if encrypted_key.is_empty() {
        return refused("empty encrypted key");
    }
    if iv.len() != enc.iv_len() || tag.len() != enc.tag_len() {
        return refused(format!(
            "IV of {} bytes and tag of {} bytes; {enc} needs {} and {}",
            iv.len(),
            tag.len(),
            enc.iv_len(),
            enc.tag_len()
        ));
    }

    // From here on, what happens depends on secrets: every path runs the content decryption,
    // with a random CEK if the real one could not be had (RFC 7516 §11.5).
    let mut cause = None;
    let cek = match pool.decrypt(&key_id, alg, &encrypted_key).await {
        Ok(cek) if cek.len() == enc.key_len() => cek,
        Ok(cek) => {
            cause = Some(format!(
                "the CEK is {} bytes, {enc} needs {}",
                cek.len(),
                enc.key_len()
            ));
            random_cek(enc)
        }
        Err(e @ (strongroom_hsm::Error::Busy | strongroom_hsm::Error::PoolClosed)) => {
            return Err(Refusal::Unavailable(e));
        }
        Err(e) => {
            cause = Some(format!("the CEK did not unwrap: {e}"));
            random_cek(enc)
        }
    };
    let content = decrypt_content(enc, &cek, &iv, &ciphertext, header_b64.as_bytes(), &tag);
    match (content, cause) {
        (_, Some(cause)) => refused(cause),
        (Err(cause), None) => refused(cause),
        (Ok(plaintext), None) => Ok(plaintext),
    }
}

fn random_cek(enc: ContentEnc) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(josekit::util::random_bytes(enc.key_len()))
}

/// Authenticated decryption of the content; `aad` is the ASCII of the encoded protected header.
fn decrypt_content(
    enc: ContentEnc,
    cek: &[u8],
    iv: &[u8],
    ciphertext: &[u8],
    aad: &[u8],
    tag: &[u8],
) -> std::result::Result<Zeroizing<Vec<u8>>, String> {
    if enc.is_cbc_hmac() {
        let expected = cbc_hmac_tag(enc, cek, aad, iv, ciphertext)?;
        if !constant_time_eq(&expected, tag) {
            return Err(format!("{enc} tag mismatch"));
        }
    }
    enc.josekit()
        .decrypt(cek, Some(iv), ciphertext, aad, Some(tag))
        .map(Zeroizing::new)
        .map_err(|e| format!("{enc} content decryption failed: {e}"))
}

/// The tag of AES_CBC_HMAC_SHA2 (RFC 7518 §5.2.2.1): the first half of HMAC(MAC_KEY,
/// A ‖ IV ‖ E ‖ AL), where MAC_KEY is the first half of the CEK and AL is A's length in bits.
fn cbc_hmac_tag(
    enc: ContentEnc,
    cek: &[u8],
    aad: &[u8],
    iv: &[u8],
    ciphertext: &[u8],
) -> std::result::Result<Zeroizing<Vec<u8>>, String> {
    let (mac_key, _) = cek
        .split_at_checked(enc.key_len() / 2)
        .ok_or("CEK too short")?;
    let al = u64::try_from(aad.len())
        .ok()
        .and_then(|n| n.checked_mul(8))
        .ok_or("AAD too long")?
        .to_be_bytes();
    let parts: [&[u8]; 4] = [aad, iv, ciphertext, &al];
    let mut mac = match enc {
        ContentEnc::A128CbcHs256 => hmac::<Sha256>(mac_key, &parts),
        ContentEnc::A192CbcHs384 => hmac::<Sha384>(mac_key, &parts),
        ContentEnc::A256CbcHs512 => hmac::<Sha512>(mac_key, &parts),
        _ => return Err(format!("{enc} is not a CBC-HMAC algorithm")),
    };
    mac.truncate(enc.tag_len());
    Ok(mac)
}

/// HMAC (RFC 2104) over the concatenation of `parts`.
fn hmac<D: Digest + BlockSizeUser>(key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    let mut block = Zeroizing::new(vec![0u8; D::block_size()]);
    let hashed_key;
    let key = if key.len() > block.len() {
        hashed_key = Zeroizing::new(D::digest(key).to_vec());
        hashed_key.as_slice()
    } else {
        key
    };
    for (b, k) in block.iter_mut().zip(key) {
        *b = *k;
    }
    let pad = |byte: u8| -> Zeroizing<Vec<u8>> {
        Zeroizing::new(block.iter().map(|b| b ^ byte).collect())
    };
    let mut inner = D::new();
    inner.update(pad(0x36).as_slice());
    for part in parts {
        inner.update(part);
    }
    let mut outer = D::new();
    outer.update(pad(0x5c).as_slice());
    outer.update(inner.finalize());
    Zeroizing::new(outer.finalize().to_vec())
}

/// Equality whose time depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// An HSM key behind josekit's [`JweDecrypter`] (RSA-OAEP or RSA-OAEP-256): josekit's
/// deserializers call it to unwrap the CEK in the HSM, then decrypt the content themselves.
///
/// **One per JWE.** josekit's contract returns the CEK as a `Cow` borrowed from the decrypter;
/// this decrypter keeps the CEK in a zeroizing slot of its own and lends it out, so the CEK is
/// wiped when the decrypter is dropped (josekit's own decrypter hands out an owned `Vec` that
/// nobody wipes). A second `decrypt` on the same instance fails; clones (`Clone`, `box_clone`)
/// start empty and cost an `Arc` and a key id.
///
/// `decrypt` waits for the pool ([`SigningPool::decrypt_blocking`]): call it from a blocking
/// thread. Errors are distinct, as josekit's are: for client input use [`decrypt_compact`].
pub struct HsmJweDecrypter {
    pool: Arc<SigningPool>,
    kid: KeyId,
    alg: DecryptAlg,
    cek: OnceLock<Zeroizing<Vec<u8>>>,
}

impl HsmJweDecrypter {
    pub fn new(pool: Arc<SigningPool>, kid: KeyId, alg: DecryptAlg) -> Self {
        HsmJweDecrypter {
            pool,
            kid,
            alg,
            cek: OnceLock::new(),
        }
    }
}

impl Clone for HsmJweDecrypter {
    fn clone(&self) -> Self {
        Self::new(self.pool.clone(), self.kid.clone(), self.alg)
    }
}

impl std::fmt::Debug for HsmJweDecrypter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmJweDecrypter")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("used", &self.cek.get().is_some())
            .finish_non_exhaustive()
    }
}

fn jwe_error(message: String) -> JoseError {
    JoseError::InvalidJweFormat(Error::Jose(message).into())
}

impl JweDecrypter for HsmJweDecrypter {
    fn algorithm(&self) -> &dyn JweAlgorithm {
        match self.alg {
            DecryptAlg::RsaOaep => &josekit::jwe::RSA_OAEP,
            DecryptAlg::RsaOaep256 => &josekit::jwe::RSA_OAEP_256,
        }
    }

    fn key_id(&self) -> Option<&str> {
        Some(self.kid.as_str())
    }

    fn decrypt(
        &self,
        encrypted_key: Option<&[u8]>,
        cencryption: &dyn JweContentEncryption,
        _header: &JweHeader,
    ) -> std::result::Result<Cow<'_, [u8]>, JoseError> {
        let Some(encrypted_key) = encrypted_key else {
            return Err(jwe_error("an encrypted key is required".into()));
        };
        if self.cek.get().is_some() {
            return Err(jwe_error(
                "this HsmJweDecrypter has already unwrapped a CEK; use one per JWE".into(),
            ));
        }
        let cek = self
            .pool
            .decrypt_blocking(&self.kid, self.alg, encrypted_key)
            .map_err(|e| JoseError::InvalidJweFormat(e.into()))?;
        if cek.len() != cencryption.key_len() {
            return Err(jwe_error(format!(
                "the CEK is {} bytes, {} needs {}",
                cek.len(),
                cencryption.name(),
                cencryption.key_len()
            )));
        }
        // `set` fails if another thread got here first; the CEK we hold is then dropped (and
        // wiped) and this call fails, rather than lending out the other thread's CEK.
        self.cek.set(cek).map_err(|_| {
            jwe_error("this HsmJweDecrypter is already in use; use one per JWE".into())
        })?;
        match self.cek.get() {
            Some(cek) => Ok(Cow::Borrowed(cek.as_slice())),
            None => Err(jwe_error("the unwrapped CEK was lost".into())),
        }
    }

    fn box_clone(&self) -> Box<dyn JweDecrypter> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn hmac_rfc4231() {
        // Test case 2 (short key) and 6 (key longer than the block).
        let mac = hmac::<Sha256>(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            *mac,
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        let key = [0xaau8; 131];
        let mac = hmac::<Sha512>(
            &key,
            &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
        );
        assert_eq!(
            *mac,
            hex(
                "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f352\
                 6b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598"
            )
        );
    }

    #[test]
    fn a128cbc_hs256_rfc7518_appendix_b1() {
        let k = hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
        let iv = hex("1af38c2dc2b96ffdd86694092341bc04");
        let a = hex(
            "546865207365636f6e64207072696e6369706c65206f66204175677573746520
             4b6572636b686f666673",
        );
        let e = hex(
            "c80edfa32ddf39d5ef00c0b468834279a2e46a1b8049f792f76bfe54b903a9c9
             a94ac9b47ad2655c5f10f9aef71427e2fc6f9b3f399a221489f16362c7032336
             09d45ac69864e3321cf82935ac4096c86e133314c54019e8ca7980dfa4b9cf1b
             384c486f3a54c51078158ee5d79de59fbd34d848b3d69550a67646344427ade5
             4b8851ffb598f7f80074b9473c82e2db",
        );
        let t = hex("652c3fa36b0a7c5b3219fab3a30bc1c4");
        let enc = ContentEnc::A128CbcHs256;
        assert_eq!(*cbc_hmac_tag(enc, &k, &a, &iv, &e).unwrap(), t);
        let p = decrypt_content(enc, &k, &iv, &e, &a, &t).unwrap();
        assert!(p.starts_with(b"A cipher system must not be required to be secret"));
        let mut bad = t.clone();
        bad[15] ^= 1;
        assert!(decrypt_content(enc, &k, &iv, &e, &a, &bad).is_err());
    }

    #[test]
    fn constant_time_eq_lengths() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn names_round_trip() {
        for e in ContentEnc::ALL {
            assert_eq!(ContentEnc::from_jose_name(e.jose_name()), Some(e));
            assert_eq!(e.josekit().name(), e.jose_name());
            assert_eq!(e.josekit().key_len(), e.key_len());
            assert_eq!(e.josekit().iv_len(), e.iv_len());
        }
        assert_eq!(ContentEnc::from_jose_name("dir"), None);
    }
}
