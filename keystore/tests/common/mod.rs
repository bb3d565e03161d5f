//! A real SoftHSM2 token in a temporary directory (once per test process), a signing pool, and
//! a keystore on a temporary SQLite file with a clock the test moves.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, OnceLock};

use strongroom_keystore::hsm::{Pin, PoolConfig, SigningPool, Token};
use strongroom_keystore::{KeyStore, KeyStoreConfig, ManualClock, Policy, Store};

pub const LABEL: &str = "keystore-test";
pub const T0: i64 = 1_800_000_000;

pub struct Hsm {
    pub token: Token,
    pub pool: Arc<SigningPool>,
}

pub fn hsm() -> &'static Hsm {
    static HSM: OnceLock<Hsm> = OnceLock::new();
    HSM.get_or_init(|| {
        let t = strongroom_testkit::process_token(LABEL);
        let token =
            Token::open_with_pin(&t.module, &t.label, Pin::new(strongroom_testkit::USER_PIN))
                .unwrap();
        let pool = Arc::new(SigningPool::start(&token, PoolConfig::with_workers(2)).unwrap());
        Hsm { token, pool }
    })
}

/// Short windows so that a test can walk through them: JWKS max-age 100 s, tokens live 300 s,
/// skew 10 s.
pub fn policy() -> Policy {
    Policy {
        jwks_max_age: 100,
        max_token_lifetime: 300,
        clock_skew: 10,
        rotation_period: 2000,
        destroy_grace: 50,
    }
}

pub fn config() -> KeyStoreConfig {
    let mut c = KeyStoreConfig::defaults_for(&hsm().token);
    c.policy = policy();
    c.refresh_interval = std::time::Duration::from_secs(1);
    c
}

/// A fresh SQLite file in its own directory.
pub fn database_url() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keys.db").display());
    (dir, url)
}

pub async fn keystore(url: &str, clock: &ManualClock) -> KeyStore {
    let h = hsm();
    let store = Store::open(url).await.unwrap();
    KeyStore::open(
        h.token.clone(),
        h.pool.clone(),
        store,
        config(),
        Arc::new(clock.clone()),
    )
    .await
    .unwrap()
}
