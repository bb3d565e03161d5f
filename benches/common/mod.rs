//! What the benches share: the raw HSM signing rate (child processes, each its own PKCS#11
//! application on one token, signing in one common window), timing windows, medians, CPU
//! pinning and a description of the machine.
//!
//! Included by `hsm.rs` and `load.rs` with `#[path = "common/mod.rs"] mod common;`. The bench
//! binary that uses [`raw_processes`] must call [`child_dispatch`] first thing in `main`: the
//! children are that same binary re-executed with `STRONGROOM_BENCH_CHILD=ps256|es256`.
#![allow(dead_code)]

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use strongroom_hsm::{KeyId, Pin, SignAlg, Token};

// Parent -> child protocol (environment only; nothing on the command line).
const CHILD_ENV: &str = "STRONGROOM_BENCH_CHILD";
const CHILD_KEY: &str = "STRONGROOM_BENCH_CHILD_KEY";
const CHILD_LABEL: &str = "STRONGROOM_BENCH_CHILD_LABEL";
const CHILD_PIN: &str = "STRONGROOM_BENCH_CHILD_PIN";
const CHILD_START_MS: &str = "STRONGROOM_BENCH_CHILD_START_UNIX_MS";
const CHILD_WARM_MS: &str = "STRONGROOM_BENCH_CHILD_WARM_MS";
const CHILD_WINDOW_MS: &str = "STRONGROOM_BENCH_CHILD_WINDOW_MS";
const CHILD_CPU: &str = "STRONGROOM_BENCH_CHILD_CPU";

/// Delay between child process starts (two processes opening one token directory at the same
/// instant once got CKR_GENERAL_ERROR).
pub const CHILD_STAGGER: Duration = Duration::from_millis(50);

/// A measurement: a warm-up, then the window whose completions count.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warm: Duration,
    pub window: Duration,
}

/// The PKCS#11 module: `STRONGROOM_PKCS11_MODULE`, or where Debian installs SoftHSM2.
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
    .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
}

pub fn sig_len(alg: SignAlg) -> usize {
    match alg {
        SignAlg::Es256 => 64,
        _ => 256, // RSA-2048
    }
}

pub fn check_sig(alg: SignAlg, sig: &[u8]) -> Result<(), String> {
    if sig.len() == sig_len(alg) {
        Ok(())
    } else {
        Err(format!(
            "{} signature is {} bytes, expected {}",
            alg.jose_name(),
            sig.len(),
            sig_len(alg)
        ))
    }
}

/// A realistic JWS signing input (BASE64URL(header) '.' BASE64URL(payload)) of about 600 bytes:
/// a FAPI access token bound to a client certificate.
pub fn jwt_signing_input(alg: SignAlg) -> Vec<u8> {
    let header = format!(
        r#"{{"alg":"{}","kid":"strongroom-2024-09-rotating-key-0001","typ":"at+jwt"}}"#,
        alg.jose_name()
    );
    let payload = concat!(
        r#"{"iss":"https://as.strongroom.example.com","sub":"248289761001","#,
        r#""aud":"https://rs.bank.example.com/open-banking/v3.1","client_id":"s6BhdRkqt3-fapi-client","#,
        r#""iat":1726750000,"nbf":1726750000,"exp":1726750300,"jti":"b7c1f0d2-6a3e-4e8b-9f41-2c5d7a9e0b13","#,
        r#""scope":"openid accounts payments fundsconfirmations","#,
        r#""cnf":{"x5t#S256":"bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}}"#
    );
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    )
    .into_bytes()
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Signs in a loop from `start` until `start + warm + window`; returns the signatures that
/// completed inside `[start + warm, start + warm + window)`. Stops at the first error.
pub fn timed_loop<E: Display>(
    alg: SignAlg,
    start: Instant,
    t: Timing,
    mut sign: impl FnMut() -> Result<Vec<u8>, E>,
) -> Result<u64, String> {
    let window_start = start + t.warm;
    let end = window_start + t.window;
    if let Some(wait) = start.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let mut count = 0u64;
    loop {
        let sig = sign().map_err(|e| e.to_string())?;
        check_sig(alg, &sig)?;
        let now = Instant::now();
        if now >= end {
            return Ok(count);
        }
        if now >= window_start {
            count += 1;
        }
    }
}

pub fn rate(count: u64, t: Timing) -> f64 {
    count as f64 / t.window.as_secs_f64()
}

pub fn median(samples: &[f64]) -> Option<f64> {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => v.get(n / 2).copied(),
        _ => Some((v.get(n / 2 - 1)? + v.get(n / 2)?) / 2.0),
    }
}

/// (min, max) of `samples`.
pub fn range(samples: &[f64]) -> (f64, f64) {
    samples
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

// ---------------------------------------------------------------------------------------------
// The machine

#[derive(Debug, Clone)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub softhsm: String,
    pub mem: String,
}

impl Machine {
    pub fn describe() -> Self {
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let softhsm = Command::new("softhsm2-util")
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into());
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map_or_else(
                || "unknown".into(),
                |kb| format!("{:.0} GiB", kb / 1024.0 / 1024.0),
            );
        Machine {
            nproc,
            cpu,
            softhsm,
            mem,
        }
    }
}

/// /proc/loadavg: other work on the machine skews every figure.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Pins the calling thread (only it: Linux affinity is per thread) to `cpus`.
#[allow(unsafe_code)]
pub fn pin_current_thread(cpus: &[usize]) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write inside it; sched_setaffinity(0)
    // reads it and applies to the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "sched_setaffinity({cpus:?}): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Raw processes: the HSM's own rate, without any server

/// What the children sign with and where.
#[derive(Debug, Clone)]
pub struct RawSpec<'a> {
    pub label: &'a str,
    pub pin: &'a str,
    /// CKA_ID of the key (the JOSE kid).
    pub key: &'a str,
    /// The children's SOFTHSM2_CONF; `None`: inherited from this process.
    pub softhsm_conf: Option<&'a Path>,
    /// Child `i` is pinned to `cpus[i % len]`; empty: not pinned.
    pub cpus: Vec<usize>,
    /// Time the children get to load the module, log in and probe the token before the
    /// common start instant.
    pub margin: Duration,
}

/// If this process is a raw-signing child, runs it and returns its exit code. Call it first
/// thing in `main`.
pub fn child_dispatch() -> Option<i32> {
    let alg = std::env::var(CHILD_ENV).ok()?;
    Some(match child_run(&alg) {
        Ok(report) => {
            println!("{report}");
            0
        }
        Err(e) => {
            eprintln!("ERROR: {e}");
            1
        }
    })
}

/// `n` child processes, each its own PKCS#11 application on the token, signing with `key` in
/// one common window; returns signatures per second. A child's stderr lines are printed, as
/// `    child i: …`.
pub fn raw_processes(spec: &RawSpec<'_>, alg: SignAlg, n: usize, t: Timing) -> Result<f64, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let margin = spec.margin + CHILD_STAGGER * n as u32;
    let start_ms = unix_ms() + margin.as_millis() as u64;
    let mut children = Vec::with_capacity(n);
    let mut failure: Option<String> = None;
    for i in 0..n {
        if i > 0 {
            std::thread::sleep(CHILD_STAGGER);
        }
        let mut cmd = Command::new(&exe);
        cmd.env(CHILD_ENV, alg.jose_name().to_ascii_lowercase())
            .env(CHILD_KEY, spec.key)
            .env(CHILD_LABEL, spec.label)
            .env(CHILD_PIN, spec.pin)
            .env(CHILD_START_MS, start_ms.to_string())
            .env(CHILD_WARM_MS, t.warm.as_millis().to_string())
            .env(CHILD_WINDOW_MS, t.window.as_millis().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(conf) = spec.softhsm_conf {
            cmd.env("SOFTHSM2_CONF", conf);
        }
        if let Some(cpu) = spec.cpus.get(i % spec.cpus.len().max(1)) {
            cmd.env(CHILD_CPU, cpu.to_string());
        }
        match cmd.spawn() {
            Ok(c) => children.push(c),
            Err(e) => {
                failure.get_or_insert(format!("cannot start child {i}: {e}"));
            }
        }
    }
    let mut total = 0u64;
    for (i, child) in children.into_iter().enumerate() {
        let out = match child.wait_with_output() {
            Ok(o) => o,
            Err(e) => {
                failure.get_or_insert(format!("child {i}: {e}"));
                continue;
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
            println!("    child {i}: {line}");
        }
        if !out.status.success() {
            failure.get_or_insert(format!("child {i} exited with {}", out.status));
            continue;
        }
        match stdout
            .lines()
            .find_map(|l| l.strip_prefix("count "))
            .and_then(|c| c.trim().parse::<u64>().ok())
        {
            Some(c) => total += c,
            None => {
                failure.get_or_insert(format!("child {i} printed no count: {stdout:?}"));
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(rate(total, t)),
    }
}

fn child_env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|e| format!("{name}: {e}"))
}

fn child_env_u64(name: &str) -> Result<u64, String> {
    child_env(name)?.parse().map_err(|e| format!("{name}: {e}"))
}

fn child_run(alg: &str) -> Result<String, String> {
    let alg = match alg {
        "ps256" => SignAlg::Ps256,
        "es256" => SignAlg::Es256,
        other => return Err(format!("unknown algorithm {other:?}")),
    };
    if let Ok(cpu) = std::env::var(CHILD_CPU) {
        let cpu: usize = cpu.parse().map_err(|e| format!("{CHILD_CPU}: {e}"))?;
        pin_current_thread(&[cpu])?;
    }
    let key = KeyId::new(child_env(CHILD_KEY)?).map_err(|e| e.to_string())?;
    let label = child_env(CHILD_LABEL)?;
    let pin = child_env(CHILD_PIN)?;
    let start_ms = child_env_u64(CHILD_START_MS)?;
    let t = Timing {
        warm: Duration::from_millis(child_env_u64(CHILD_WARM_MS)?),
        window: Duration::from_millis(child_env_u64(CHILD_WINDOW_MS)?),
    };
    let module = module_path();

    let token = match Token::open_with_pin(&module, &label, Pin::new(&pin)) {
        Ok(t) => t,
        Err(first) => {
            eprintln!("note: opening the token failed ({first}); retrying once");
            std::thread::sleep(Duration::from_millis(100));
            Token::open_with_pin(&module, &label, Pin::new(&pin))
                .map_err(|e| format!("opening the token failed twice: {first}; then {e}"))?
        }
    };
    let mut session = token
        .session()
        .map_err(|e| format!("cannot open a session: {e}"))?;
    let msg = jwt_signing_input(alg);
    // One signature before the start: finds and caches the key handle.
    let sig = session
        .sign(&key, alg, &msg)
        .map_err(|e| format!("first signature: {e}"))?;
    check_sig(alg, &sig)?;

    // The common start instant, as an Instant of this process.
    let now_ms = unix_ms();
    let now = Instant::now();
    let start = if start_ms >= now_ms {
        now + Duration::from_millis(start_ms - now_ms)
    } else {
        let late = Duration::from_millis(now_ms - start_ms);
        if late >= t.warm {
            return Err(format!(
                "ready {} ms after the common start, past the {} ms warm-up",
                late.as_millis(),
                t.warm.as_millis()
            ));
        }
        now.checked_sub(late).unwrap_or(now)
    };
    let count = timed_loop(alg, start, t, || session.sign(&key, alg, &msg))?;
    Ok(format!("count {count}"))
}
