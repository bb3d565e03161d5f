//! Verification keys parsed once: a josekit verifier built from a JWK, memoised by the JWK's
//! content and the algorithm.
//!
//! Building a verifier decodes the key through OpenSSL's provider machinery (decoders, key
//! managers, read locks), which under load cost more CPU than the signature check itself
//! (README, Performance: a fifth of the server's time in client_credentials). Keyed by content,
//! a cached verifier can never outlive its key: a rotated or edited JWK is a different entry,
//! and the old one is simply never asked for again ([`crate::memo`]).

use std::sync::{Arc, LazyLock};

use josekit::JoseError;
use josekit::jwk::Jwk;
use josekit::jws::JwsVerifier;
use serde_json::{Map, Value};

use crate::memo::Memo;

/// Distinct (alg, JWK) pairs remembered at most.
const MAX_ENTRIES: usize = 1024;

static MEMO: LazyLock<Memo<dyn JwsVerifier>> = LazyLock::new(|| Memo::new(MAX_ENTRIES));

/// The verifier for `jwk` under `alg`, built by `build` the first time this pair is seen.
pub fn verifier(
    alg: &str,
    jwk: &Map<String, Value>,
    build: impl FnOnce(&Jwk) -> Result<Box<dyn JwsVerifier>, JoseError>,
) -> Result<Arc<dyn JwsVerifier>, JoseError> {
    let key = format!("{alg} {}", Value::Object(jwk.clone()));
    MEMO.get_or_build(key, || Ok(Arc::from(build(&Jwk::from_map(jwk.clone())?)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use josekit::jws::ES256;
    use serde_json::json;

    fn jwk(x: &str) -> Map<String, Value> {
        // A P-256 point (RFC 7515 A.3's key) with x as given.
        json!({"kty": "EC", "crv": "P-256", "x": x,
               "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})
        .as_object()
        .cloned()
        .unwrap()
    }

    #[test]
    fn built_once_per_content() {
        let a = jwk("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU");
        let mut builds = 0;
        for _ in 0..3 {
            verifier("ES256", &a, |k| {
                builds += 1;
                Ok(Box::new(ES256.verifier_from_jwk(k)?))
            })
            .unwrap();
        }
        assert_eq!(builds, 1);
        // Another alg name for the same key is another entry; a key that does not parse is an
        // error, not an entry.
        let mut other = 0;
        verifier("ES256-other", &a, |k| {
            other += 1;
            Ok(Box::new(ES256.verifier_from_jwk(k)?))
        })
        .unwrap();
        assert_eq!(other, 1);
        let bad = jwk("not-a-coordinate");
        assert!(verifier("ES256", &bad, |k| Ok(Box::new(ES256.verifier_from_jwk(k)?))).is_err());
    }
}
