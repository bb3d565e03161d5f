//! JWTs this server signed, presented back to it: an access token (bearer use, introspection,
//! revocation) or an ID token (`id_token_hint`). One check for both, so the rules cannot drift
//! apart.
//!
//! It trusts nothing the token says about how to verify it: the key is chosen by `kid` among our
//! own published keys of the expected purpose only, and the algorithm is the key's, so
//! `alg: none` or an HMAC "signed" with a public key can never pass. Then `iss` must be ours.
//! Time and everything else are the callers' checks.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwk::Jwk;
use josekit::jws::{ES256, JwsVerifier, PS256};
use serde_json::{Map, Value};
use strongroom_keystore::{KeyAlg, KeyPurpose};

use crate::error::OAuthError;
use crate::state::AppState;

/// Tokens longer than this are refused before any parsing (ours are well under 2 KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// What is expected of one kind of token.
pub struct Expected {
    /// The key purpose that signs it.
    pub purpose: KeyPurpose,
    /// How error descriptions name it ("the access token").
    pub what: &'static str,
    /// The header's `typ`, case-insensitively, with or without `application/`.
    pub typ: &'static str,
    /// The error a token that fails a check gets (`invalid_token`, `invalid_request`).
    pub fail: fn(String) -> OAuthError,
}

/// Checks the compact JWS against our published `expected.purpose` keys, and `iss`; returns
/// the claims.
pub fn verify(
    state: &AppState,
    token: &str,
    expected: &Expected,
) -> Result<Map<String, Value>, OAuthError> {
    let what = expected.what;
    let fail = |why: &str| (expected.fail)(format!("{what}{why}"));
    if token.len() > MAX_TOKEN_LEN {
        return Err(fail(" is too long"));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(fail(" is not a compact JWS"));
    };
    let header: Map<String, Value> =
        decode_json(header_b64).ok_or_else(|| fail("'s header is not base64url-encoded JSON"))?;
    let typ_ok = header.get("typ").and_then(Value::as_str).is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t == expected.typ || t.strip_prefix("application/") == Some(expected.typ)
    });
    if !typ_ok {
        return Err(fail(&format!("'s typ is not {}", expected.typ)));
    }
    if header.contains_key("crit") {
        return Err(fail("'s header has crit"));
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or_else(|| fail("'s header has no kid"))?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| fail("'s header has no alg"))?;

    let keys = state.keystore.snapshot();
    let published = keys.published(state.now());
    let (record, public) = published
        .iter()
        .find(|(k, _)| k.kid == kid && k.purpose == expected.purpose)
        .ok_or_else(|| {
            fail(&format!(
                "'s kid is not one of our published {} keys",
                expected.purpose
            ))
        })?;
    if alg != record.alg.as_str() {
        return Err(fail("'s alg is not its key's"));
    }
    let no_jwk = || OAuthError::server_error(format!("a {} key has no JWK form", record.purpose));
    let Value::Object(jwk) =
        strongroom_keystore::jose::jwk(&record.kid, "sig", record.alg.as_str(), public)
    else {
        return Err(no_jwk());
    };
    let jwk = Jwk::from_map(jwk).map_err(|_| no_jwk())?;
    let cannot = || OAuthError::server_error(format!("a {} key cannot verify", record.purpose));
    let verifier: Box<dyn JwsVerifier> = match record.alg {
        KeyAlg::Ps256 => Box::new(PS256.verifier_from_jwk(&jwk).map_err(|_| cannot())?),
        KeyAlg::Es256 => Box::new(ES256.verifier_from_jwk(&jwk).map_err(|_| cannot())?),
        KeyAlg::RsaOaep | KeyAlg::RsaOaep256 => {
            return Err(fail("'s kid is not a signing key"));
        }
    };
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| fail("'s signature is not base64url"))?;
    let signing_input_len = header_b64
        .len()
        .saturating_add(1)
        .saturating_add(payload_b64.len());
    let signing_input = token
        .get(..signing_input_len)
        .ok_or_else(|| fail(" is not a compact JWS"))?;
    verifier
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| fail("'s signature does not verify"))?;

    let claims: Map<String, Value> =
        decode_json(payload_b64).ok_or_else(|| fail("'s payload is not a JSON object"))?;
    if claims.get("iss").and_then(Value::as_str) != Some(state.issuer.as_str()) {
        return Err(fail(" was not issued by this server"));
    }
    Ok(claims)
}

/// Whether `token` is a compact JWS whose header names a `kid` that none of our published keys
/// has: one we may have signed with a key since withdrawn, as far as can be told. (A published
/// key of another purpose is a token of another kind: not this.)
pub fn names_unpublished_key(state: &AppState, token: &str) -> bool {
    let kid = token
        .split('.')
        .next()
        .and_then(decode_json)
        .and_then(|h| h.get("kid").and_then(Value::as_str).map(str::to_owned));
    let Some(kid) = kid.filter(|_| token.len() <= MAX_TOKEN_LEN && token.split('.').count() == 3)
    else {
        return false;
    };
    !state
        .keystore
        .snapshot()
        .published(state.now())
        .iter()
        .any(|(k, _)| k.kid == kid)
}

pub fn decode_json(b64: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(b64).ok()?;
    serde_json::from_slice(&bytes).ok()
}
