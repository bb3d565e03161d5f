//! The JWKS: public keys as JWKs (RFC 7517), and JWK thumbprints (RFC 7638).
//!
//! Only public members are ever written: the key's members pass through an allow-list
//! (`kty`, `n`, `e`, `crv`, `x`, `y`), so even a future key type in the hsm crate could not leak a
//! private member (`d`, `p`, `q`, `dp`, `dq`, `qi`, `k`) into the published set.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use strongroom_hsm::PublicKey;

/// The public key members a JWK may carry here.
const PUBLIC_MEMBERS: [&str; 6] = ["kty", "n", "e", "crv", "x", "y"];

/// One key of a JWKS.
#[derive(Debug, Clone, Copy)]
pub struct JwkEntry<'a> {
    /// `kid`: the key's id.
    pub kid: &'a str,
    /// `use`: `"sig"` or `"enc"`.
    pub use_: &'a str,
    /// `alg`: the one algorithm the key is used with (`"PS256"`, `"RSA-OAEP"`, …).
    pub alg: &'a str,
    pub key: &'a PublicKey,
}

/// A public JWK: `kty`, `kid`, `use`, `alg` and the key's public members.
pub fn jwk(kid: &str, use_: &str, alg: &str, key: &PublicKey) -> Value {
    let mut members = Map::new();
    for (name, value) in key.jwk_members() {
        if PUBLIC_MEMBERS.contains(&name) {
            members.insert(name.to_owned(), Value::String(value));
        }
    }
    members.insert("kid".to_owned(), Value::from(kid));
    members.insert("use".to_owned(), Value::from(use_));
    members.insert("alg".to_owned(), Value::from(alg));
    Value::Object(members)
}

/// A JWK Set, `{"keys":[…]}`, in the order given.
pub fn jwks<'a>(keys: impl IntoIterator<Item = JwkEntry<'a>>) -> Value {
    let keys: Vec<Value> = keys
        .into_iter()
        .map(|k| jwk(k.kid, k.use_, k.alg, k.key))
        .collect();
    serde_json::json!({ "keys": keys })
}

/// The RFC 7638 JWK thumbprint with SHA-256, base64url: the hash of the required members in
/// lexicographic order without whitespace (`{"e","kty","n"}` for RSA,
/// `{"crv","kty","x","y"}` for EC). A stable, collision-resistant name for a key, usable as kid.
pub fn jwk_thumbprint(key: &PublicKey) -> String {
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    // Every value is base64url or a fixed name, so none needs JSON escaping.
    let canonical = match key {
        PublicKey::Rsa { n, e } => {
            format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64(e), b64(n))
        }
        PublicKey::EcP256 { x, y } => format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            b64(x),
            b64(y)
        ),
    };
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}
