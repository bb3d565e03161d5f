//! JWS compact signing with HSM keys.
//!
//! The token endpoint signs thousands of JWTs a second, so the compact form is built by hand
//! into one `String`: the header is written member by member (no map, no intermediate value),
//! claims are serialized straight through a base64url encoder, and the signing input is handed to
//! [`SigningPool::sign`], which hashes it on the caller's thread and awaits a worker. The runtime
//! never blocks on the HSM. ES256 comes back from the token as raw `r‖s`, which is the JWS form.
//!
//! The header is always `{"alg":…,"kid":…[,"typ":…][,extras…]}`. `alg` and `kid` come from the
//! key, never from the caller; `typ` is a parameter (`"at+jwt"` for RFC 9068 access tokens,
//! `"JWT"` or none for ID tokens). Extras may not set `alg`, `kid`, `typ`, `b64` or `crit`: the
//! first three have their own parameters, and the last two would change how the JWS is formed or
//! verified (RFC 7797) in ways this signer does not implement.
//!
//! [`HsmJwsSigner`] is the same key behind josekit's synchronous [`JwsSigner`] trait, for code
//! that wants josekit's serializers; it blocks the calling thread on the pool.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::write::EncoderStringWriter;
use josekit::JoseError;
use josekit::jws::{JwsAlgorithm, JwsSigner};
use serde::Serialize;
use serde_json::{Map, Value};
use strongroom_hsm::{KeyId, PublicKey, SignAlg, SigningPool};

use crate::error::{Error, Result};

/// Header members that callers may not pass as extras (see the module documentation).
const RESERVED_HEADER_MEMBERS: [&str; 5] = ["alg", "kid", "typ", "b64", "crit"];

/// Room for the claims when their serialized size is not known in advance; a typical access
/// token's claims are 300 to 600 bytes of JSON. The output grows if needed.
const CLAIMS_SIZE_HINT: usize = 768;

/// Signs `payload` as a compact JWS with header `{"alg","kid"[,"typ"]}`.
pub async fn sign_compact(
    pool: &SigningPool,
    kid: &KeyId,
    alg: SignAlg,
    typ: Option<&str>,
    payload: &[u8],
) -> Result<String> {
    let header = header_json(kid, alg, typ, None)?;
    let mut out = start(&header, payload.len(), alg);
    URL_SAFE_NO_PAD.encode_string(payload, &mut out);
    finish(pool, kid, alg, out).await
}

/// As [`sign_compact`], with extra header members (for example `x5t#S256`, or `cty` for a
/// nested JWT). Fails if `extra` names a member the signer sets itself.
pub async fn sign_compact_with_header(
    pool: &SigningPool,
    kid: &KeyId,
    alg: SignAlg,
    typ: Option<&str>,
    extra: &Map<String, Value>,
    payload: &[u8],
) -> Result<String> {
    let header = header_json(kid, alg, typ, Some(extra))?;
    let mut out = start(&header, payload.len(), alg);
    URL_SAFE_NO_PAD.encode_string(payload, &mut out);
    finish(pool, kid, alg, out).await
}

/// Signs a claims object (a `serde_json::Value`, or any `Serialize` struct) as a JWT: the claims
/// are serialized as JSON straight into the base64url-encoded payload.
pub async fn sign_claims<T>(
    pool: &SigningPool,
    kid: &KeyId,
    alg: SignAlg,
    typ: Option<&str>,
    claims: &T,
) -> Result<String>
where
    T: Serialize + Sync + ?Sized,
{
    let header = header_json(kid, alg, typ, None)?;
    let out = start(&header, CLAIMS_SIZE_HINT, alg);
    let mut writer = EncoderStringWriter::from_consumer(out, &URL_SAFE_NO_PAD);
    serde_json::to_writer(&mut writer, claims)
        .map_err(|e| Error::Jose(format!("the JWT claims cannot be serialized: {e}")))?;
    let out = writer.into_inner();
    finish(pool, kid, alg, out).await
}

/// An HSM key ready to sign JWS: the pool, the key's id (its `kid`) and its algorithm. Cheap to
/// clone; the server keeps one per active signing key.
#[derive(Debug, Clone)]
pub struct HsmJws {
    pool: Arc<SigningPool>,
    kid: KeyId,
    alg: SignAlg,
}

impl HsmJws {
    pub fn new(pool: Arc<SigningPool>, kid: KeyId, alg: SignAlg) -> Self {
        HsmJws { pool, kid, alg }
    }

    pub fn kid(&self) -> &KeyId {
        &self.kid
    }

    pub fn alg(&self) -> SignAlg {
        self.alg
    }

    pub fn pool(&self) -> &Arc<SigningPool> {
        &self.pool
    }

    /// See [`sign_compact`].
    pub async fn sign_compact(&self, typ: Option<&str>, payload: &[u8]) -> Result<String> {
        sign_compact(&self.pool, &self.kid, self.alg, typ, payload).await
    }

    /// See [`sign_compact_with_header`].
    pub async fn sign_compact_with_header(
        &self,
        typ: Option<&str>,
        extra: &Map<String, Value>,
        payload: &[u8],
    ) -> Result<String> {
        sign_compact_with_header(&self.pool, &self.kid, self.alg, typ, extra, payload).await
    }

    /// See [`sign_claims`].
    pub async fn sign_claims<T>(&self, typ: Option<&str>, claims: &T) -> Result<String>
    where
        T: Serialize + Sync + ?Sized,
    {
        sign_claims(&self.pool, &self.kid, self.alg, typ, claims).await
    }

    /// The same key as a josekit signer (reads the public key from the token once).
    pub fn josekit_signer(&self) -> Result<HsmJwsSigner> {
        HsmJwsSigner::new(self.pool.clone(), self.kid.clone(), self.alg)
    }
}

/// The header's JSON, written member by member. `kid` and `typ` go through serde_json's string
/// writer, so any value is escaped correctly.
fn header_json(
    kid: &KeyId,
    alg: SignAlg,
    typ: Option<&str>,
    extra: Option<&Map<String, Value>>,
) -> Result<Vec<u8>> {
    let mut h = Vec::with_capacity(128);
    h.extend_from_slice(b"{\"alg\":\"");
    h.extend_from_slice(alg.jose_name().as_bytes());
    h.extend_from_slice(b"\",\"kid\":");
    write_json(&mut h, kid.as_str())?;
    if let Some(typ) = typ {
        h.extend_from_slice(b",\"typ\":");
        write_json(&mut h, typ)?;
    }
    for (name, value) in extra.into_iter().flatten() {
        if RESERVED_HEADER_MEMBERS.contains(&name.as_str()) {
            return Err(Error::Jose(format!(
                "the JWS header member {name:?} is set by the signer, not by the caller"
            )));
        }
        h.push(b',');
        write_json(&mut h, name)?;
        h.push(b':');
        write_json(&mut h, value)?;
    }
    h.push(b'}');
    Ok(h)
}

fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<()> {
    serde_json::to_writer(out, value)
        .map_err(|e| Error::Jose(format!("the JWS header cannot be serialized: {e}")))
}

/// Base64url length of `n` bytes, for sizing buffers only.
fn b64_len(n: usize) -> usize {
    base64::encoded_len(n, false).unwrap_or(0)
}

/// The output string, sized for the whole JWS, holding `b64(header).`.
fn start(header: &[u8], payload_len: usize, alg: SignAlg) -> String {
    // ES256 signatures are 64 bytes; RSA ones as long as the modulus (384 covers RSA-3072).
    let signature_len = if alg == SignAlg::Es256 { 64 } else { 384 };
    let capacity = b64_len(header.len())
        .saturating_add(b64_len(payload_len))
        .saturating_add(b64_len(signature_len))
        .saturating_add(2);
    let mut out = String::with_capacity(capacity);
    URL_SAFE_NO_PAD.encode_string(header, &mut out);
    out.push('.');
    out
}

/// Signs the signing input `b64(header).b64(payload)` in the HSM and appends `.b64(signature)`.
async fn finish(pool: &SigningPool, kid: &KeyId, alg: SignAlg, mut out: String) -> Result<String> {
    let signature = pool.sign(kid, alg, out.as_bytes()).await?;
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(&signature, &mut out);
    Ok(out)
}

/// An HSM key behind josekit's [`JwsSigner`], so `josekit::jws::serialize_compact` and friends
/// can sign with it. josekit puts `alg` and `kid` (this key's id) into the header itself.
///
/// `sign` is synchronous and waits for the pool ([`SigningPool::sign_blocking`]): call it from a
/// blocking thread, or inside `tokio::task::block_in_place` on a multi-thread runtime. Async code
/// should prefer [`sign_compact`].
#[derive(Debug, Clone)]
pub struct HsmJwsSigner {
    pool: Arc<SigningPool>,
    kid: KeyId,
    alg: SignAlg,
    signature_len: usize,
}

impl HsmJwsSigner {
    /// Reads the key's public half from the token to check that it fits `alg`.
    pub fn new(pool: Arc<SigningPool>, kid: KeyId, alg: SignAlg) -> Result<Self> {
        let public = pool.token().public_key(&kid)?;
        Self::with_public_key(pool, kid, alg, &public)
    }

    /// As [`HsmJwsSigner::new`], with the public key already in hand (no token round trip).
    pub fn with_public_key(
        pool: Arc<SigningPool>,
        kid: KeyId,
        alg: SignAlg,
        public: &PublicKey,
    ) -> Result<Self> {
        let signature_len = match (alg, public) {
            (SignAlg::Es256, PublicKey::EcP256 { .. }) => 64,
            (SignAlg::Ps256 | SignAlg::Rs256, PublicKey::Rsa { .. }) => {
                public.rsa_bits().unwrap_or(2048).div_ceil(8)
            }
            _ => {
                return Err(Error::Jose(format!(
                    "key {kid} ({public:?}) cannot make {alg} signatures"
                )));
            }
        };
        Ok(HsmJwsSigner {
            pool,
            kid,
            alg,
            signature_len,
        })
    }
}

impl JwsSigner for HsmJwsSigner {
    fn algorithm(&self) -> &dyn JwsAlgorithm {
        match self.alg {
            SignAlg::Ps256 => &josekit::jws::PS256,
            SignAlg::Rs256 => &josekit::jws::RS256,
            SignAlg::Es256 => &josekit::jws::ES256,
        }
    }

    fn key_id(&self) -> Option<&str> {
        Some(self.kid.as_str())
    }

    fn signature_len(&self) -> usize {
        self.signature_len
    }

    fn sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, JoseError> {
        self.pool
            .sign_blocking(&self.kid, self.alg, message)
            .map_err(|e| JoseError::InvalidSignature(e.into()))
    }

    fn box_clone(&self) -> Box<dyn JwsSigner> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_members_in_order_and_escaped() {
        let kid = KeyId::new("k-1").unwrap();
        let h = header_json(&kid, SignAlg::Es256, Some("at+jwt\""), None).unwrap();
        assert_eq!(
            std::str::from_utf8(&h).unwrap(),
            r#"{"alg":"ES256","kid":"k-1","typ":"at+jwt\""}"#
        );
        let mut extra = Map::new();
        extra.insert("cty".into(), Value::from("JWT"));
        let h = header_json(&kid, SignAlg::Ps256, None, Some(&extra)).unwrap();
        let v: Value = serde_json::from_slice(&h).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"alg":"PS256","kid":"k-1","cty":"JWT"})
        );
        for reserved in RESERVED_HEADER_MEMBERS {
            let mut extra = Map::new();
            extra.insert(reserved.into(), Value::from("x"));
            assert!(header_json(&kid, SignAlg::Ps256, None, Some(&extra)).is_err());
        }
    }
}
