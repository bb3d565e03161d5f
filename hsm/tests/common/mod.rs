//! A real SoftHSM2 token in a temporary directory, made once per test process.
//!
//! SoftHSM2 reads SOFTHSM2_CONF at C_Initialize, once per process, so every test in a process
//! shares the token; under cargo-nextest each test is a process of its own and gets its own token.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use strongroom_hsm::{Pin, Token};

pub const LABEL: &str = "strongroom-test";
pub const USER_PIN: &str = "test-user-pin-1234";

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub module: PathBuf,
    pub token: Token,
}

pub fn module_path() -> PathBuf {
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

/// Creates a token with `create-token.sh` in a fresh temporary directory.
pub fn make_token_dir(label: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../softhsm-config/create-token.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(dir.path())
        .arg(label)
        .env("STRONGROOM_SO_PIN", "test-so-pin-1234")
        .env("STRONGROOM_HSM_PIN", USER_PIN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "create-token.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = make_token_dir(LABEL);
        // SAFETY of the process environment: this runs once, before the PKCS#11 module is
        // initialised and before any test thread reads the variable.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("SOFTHSM2_CONF", dir.path().join("softhsm2.conf"))
        };
        let module = module_path();
        let token = Token::open_with_pin(&module, LABEL, Pin::new(USER_PIN)).unwrap();
        Fixture { dir, module, token }
    })
}

/// A key id unique to this process and call, so tests sharing a token never collide.
pub fn unique_id(prefix: &str) -> strongroom_hsm::KeyId {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    strongroom_hsm::KeyId::new(format!("{prefix}-{}-{n}", std::process::id())).unwrap()
}
