//! A real SoftHSM2 token in a temporary directory and one signing pool, made once per test
//! process (SoftHSM2 reads SOFTHSM2_CONF once, at C_Initialize), plus helpers that check JOSE
//! objects with independent implementations (jsonwebtoken, rsa, aes-gcm, openssl) — never with
//! josekit or the code under test.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use strongroom_keystore::hsm::{KeyId, Pin, PoolConfig, SigningPool, Token};

pub const LABEL: &str = "strongroom-jose-test";
pub use strongroom_testkit::USER_PIN;

pub struct Fixture {
    pub dir: &'static tempfile::TempDir,
    pub token: Token,
    pub pool: Arc<SigningPool>,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let t = strongroom_testkit::process_token(LABEL);
        let token = Token::open_with_pin(&t.module, &t.label, Pin::new(USER_PIN)).unwrap();
        let pool = Arc::new(SigningPool::start(&token, PoolConfig::with_workers(2)).unwrap());
        Fixture {
            dir: &t.dir,
            token,
            pool,
        }
    })
}

/// A key id unique to this process and call, so tests sharing the token never collide.
pub fn unique_id(prefix: &str) -> KeyId {
    KeyId::new(strongroom_testkit::unique_name(prefix)).unwrap()
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

pub fn member<'a>(jwk: &'a Value, name: &str) -> &'a str {
    jwk[name]
        .as_str()
        .unwrap_or_else(|| panic!("JWK has no {name}: {jwk}"))
}

/// A jsonwebtoken key built only from the JWK members we publish.
pub fn decoding_key(jwk: &Value) -> jsonwebtoken::DecodingKey {
    match member(jwk, "kty") {
        "RSA" => jsonwebtoken::DecodingKey::from_rsa_components(member(jwk, "n"), member(jwk, "e"))
            .unwrap(),
        "EC" => {
            assert_eq!(member(jwk, "crv"), "P-256");
            jsonwebtoken::DecodingKey::from_ec_components(member(jwk, "x"), member(jwk, "y"))
                .unwrap()
        }
        other => panic!("unexpected kty {other}"),
    }
}

/// Verifies a JWT with jsonwebtoken against the published JWK; `alg` must match the JWK's.
pub fn verify_jwt(
    jwt: &str,
    jwk: &Value,
) -> Result<jsonwebtoken::TokenData<Value>, jsonwebtoken::errors::Error> {
    let alg: jsonwebtoken::Algorithm = member(jwk, "alg").parse().unwrap();
    let mut validation = jsonwebtoken::Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(jwt, &decoding_key(jwk), &validation)
}

/// The RSA public key built only from the JWK members we publish.
pub fn rsa_public(jwk: &Value) -> rsa::RsaPublicKey {
    rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(&unb64(member(jwk, "n"))),
        rsa::BigUint::from_bytes_be(&unb64(member(jwk, "e"))),
    )
    .unwrap()
}
