//! The test process's SoftHSM2 token (see strongroom-testkit), opened and logged in.
#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::PathBuf;
use std::sync::OnceLock;

use strongroom_hsm::{Pin, Token};

pub use strongroom_testkit::{USER_PIN, create_token as make_token_dir, module_path};

pub const LABEL: &str = "strongroom-test";

pub struct Fixture {
    pub dir: &'static tempfile::TempDir,
    pub module: PathBuf,
    pub token: Token,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let t = strongroom_testkit::process_token(LABEL);
        let token = Token::open_with_pin(&t.module, &t.label, Pin::new(USER_PIN)).unwrap();
        Fixture {
            dir: &t.dir,
            module: t.module.clone(),
            token,
        }
    })
}

/// A key id unique to this process and call, so tests sharing a token never collide.
pub fn unique_id(prefix: &str) -> strongroom_hsm::KeyId {
    strongroom_hsm::KeyId::new(strongroom_testkit::unique_name(prefix)).unwrap()
}
