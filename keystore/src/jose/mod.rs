//! JOSE on top of HSM keys: JWS signing, JWE decryption, and the JWKS.
//!
//! - [`jws`]: the token endpoint's hot path, [`sign_compact`] / [`sign_claims`] (and the
//!   [`HsmJws`] handle that carries a pool, kid and alg), which build the compact JWS by hand and
//!   await the [`SigningPool`](strongroom_hsm::SigningPool): the async runtime never blocks on the
//!   HSM. [`HsmJwsSigner`] lets josekit's own serializers sign with an HSM key (synchronously).
//! - [`jwe`]: [`decrypt_compact`], the one entry point for JWEs that clients send (encrypted
//!   request objects). Only the content-encryption key (CEK) is unwrapped in the HSM; the content
//!   is decrypted in software. Every refusal reads the same ([`JWE_DECRYPT_FAILED`]), so the
//!   endpoint is no padding or format oracle. [`HsmJweDecrypter`] plugs an HSM key into josekit's
//!   own deserializers.
//! - [`jwks`]: [`jwk`], [`jwks`](fn@jwks) and the RFC 7638 [`jwk_thumbprint`]; only public
//!   members are ever written.
//!
//! Nothing here holds a private key: the HSM does every private-key operation.

pub mod jwe;
pub mod jwks;
pub mod jws;

pub use jwe::{
    ContentEnc, DecryptionKeys, HsmJweDecrypter, JWE_DECRYPT_FAILED, MAX_JWE_LEN, decrypt_compact,
};
pub use jwks::{JwkEntry, jwk, jwk_thumbprint, jwks};
pub use jws::{HsmJws, HsmJwsSigner, sign_claims, sign_compact, sign_compact_with_header};
