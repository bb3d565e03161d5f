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

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use strongroom_keystore::hsm::{KeyId, Pin, PoolConfig, SigningPool, Token};

pub const LABEL: &str = "strongroom-jose-test";
pub const USER_PIN: &str = "test-user-pin-1234";

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub token: Token,
    pub pool: Arc<SigningPool>,
}

fn module_path() -> PathBuf {
    if let Ok(m) = std::env::var("STRONGROOM_PKCS11_MODULE") {
        return PathBuf::from(m);
    }
    for m in [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    ] {
        if Path::new(m).exists() {
            return PathBuf::from(m);
        }
    }
    panic!("SoftHSM2 not found: run `make test`, which installs it (apt-get install softhsm2)");
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../softhsm-config/create-token.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg(dir.path())
            .arg(LABEL)
            .env("STRONGROOM_SO_PIN", "test-so-pin-1234")
            .env("STRONGROOM_HSM_PIN", USER_PIN)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "create-token.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // SAFETY of the process environment: this runs once, before the PKCS#11 module is
        // initialised and before any test thread reads the variable.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("SOFTHSM2_CONF", dir.path().join("softhsm2.conf"))
        };
        let token = Token::open_with_pin(&module_path(), LABEL, Pin::new(USER_PIN)).unwrap();
        let pool = Arc::new(SigningPool::start(&token, PoolConfig::with_workers(2)).unwrap());
        Fixture { dir, token, pool }
    })
}

/// A key id unique to this process and call, so tests sharing the token never collide.
pub fn unique_id(prefix: &str) -> KeyId {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    KeyId::new(format!("{prefix}-{}-{n}", std::process::id())).unwrap()
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
