//! Test support for Strongroom: real SoftHSM2 tokens, each in a temporary directory of its own,
//! made with the same `softhsm-config/create-token.sh` that developers use. Nothing here touches
//! the system-wide token directory.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once, when the PKCS#11 module is initialised, so one token
//! serves a whole test process ([`process_token`]); under cargo-nextest every test is a process
//! of its own and gets its own token.
#![allow(clippy::panic, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

pub const SO_PIN: &str = "test-so-pin-1234";
pub const USER_PIN: &str = "test-user-pin-1234";

/// The SoftHSM2 module: `STRONGROOM_PKCS11_MODULE`, or where Debian installs it.
pub fn module_path() -> PathBuf {
    if let Ok(m) = std::env::var("STRONGROOM_PKCS11_MODULE") {
        return PathBuf::from(m);
    }
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .unwrap_or_else(|| {
        panic!("SoftHSM2 not found: run `make test`, which installs it (apt-get install softhsm2)")
    })
}

/// Creates a fresh token labelled `label` (PINs [`SO_PIN`], [`USER_PIN`]) in a new temporary
/// directory, which holds `softhsm2.conf`, `tokens/` and the `user-pin` file.
pub fn create_token(label: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../softhsm-config/create-token.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(dir.path())
        .arg(label)
        .env("STRONGROOM_SO_PIN", SO_PIN)
        .env("STRONGROOM_HSM_PIN", USER_PIN)
        .output()
        .expect("run create-token.sh");
    assert!(
        out.status.success(),
        "create-token.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// The token of this test process.
#[derive(Debug)]
pub struct ProcessToken {
    pub dir: tempfile::TempDir,
    pub label: String,
    pub module: PathBuf,
}

/// Creates the process's token on first call (labelled `label`) and points `SOFTHSM2_CONF` at
/// it; later calls return the same token whatever label they name.
pub fn process_token(label: &str) -> &'static ProcessToken {
    static TOKEN: OnceLock<ProcessToken> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let dir = create_token(label);
        use_token_dir(dir.path());
        ProcessToken {
            dir,
            label: label.to_owned(),
            module: module_path(),
        }
    })
}

/// Points this process's `SOFTHSM2_CONF` at the token directory `dir`. Call it before the
/// PKCS#11 module is first loaded, and only once.
pub fn use_token_dir(dir: &Path) {
    // SAFETY of the environment: called once, before the module is loaded and before the test
    // starts threads that read the environment.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
    };
}

/// A name unique to this process and call (`prefix-pid-n`), so tests sharing a token never
/// collide on key ids.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The child processes of `pid` (every thread's children, from /proc), sorted: a server's HSM
/// worker processes. Empty if the process is gone.
pub fn child_processes(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}
