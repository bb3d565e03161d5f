//! Signing throughput of strongroom-hsm on a fresh SoftHSM2 token: PS256 and ES256 signatures per
//! second through one session, the `SigningPool`, raw threads and raw processes.
//!
//!     cargo bench -p strongroom-benches --bench hsm
//!
//! Environment:
//! - `STRONGROOM_PKCS11_MODULE`: the PKCS#11 module (default `/usr/lib/softhsm/libsofthsm2.so`).
//! - `STRONGROOM_BENCH_SECS`: seconds per PS256 measurement (default 1.5); ES256 measurements last
//!   two thirds of that, and every measurement is preceded by a warm-up of a tenth (at least 0.2 s).
//! - `STRONGROOM_BENCH_ROUNDS`: rounds (default 3). A round measures every mode once, in order; the
//!   table shows each mode's median and range, the ratios use medians. Interleaving rounds keeps a
//!   burst of other work on this (noisy, 2-core) machine from landing on one mode only.
//!   `STRONGROOM_BENCH_ROUNDS=1 STRONGROOM_BENCH_SECS=3` gives one 3 s / 2 s shot per mode.
//!
//! Every measurement counts the signatures that complete inside one fixed window, shared by all the
//! threads, tasks or processes of that measurement; rate = count / window. Any error (a failed call,
//! a signature of the wrong length, a child process that fails or starts late) is printed and makes
//! the bench exit non-zero.
//!
//! The raw-process rows re-execute this binary with `STRONGROOM_BENCH_CHILD=ps256|es256`: each child
//! is its own PKCS#11 application on the same token directory (SOFTHSM2_CONF is inherited).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use strongroom_hsm::{
    KeyId, KeySpec, KeyUsage, Pin, PoolConfig, SignAlg, SigningPool, Token, WorkerMode,
};

const LABEL: &str = "strongroom-bench";
const SO_PIN: &str = "bench-so-pin-1234";
const USER_PIN: &str = "bench-user-pin-1234";
const RSA_KEY: &str = "bench-ps256";
const EC_KEY: &str = "bench-es256";

// Parent -> child protocol (environment only; nothing on the command line).
const CHILD_ENV: &str = "STRONGROOM_BENCH_CHILD";
const CHILD_KEY: &str = "STRONGROOM_BENCH_CHILD_KEY";
const CHILD_LABEL: &str = "STRONGROOM_BENCH_CHILD_LABEL";
const CHILD_PIN: &str = "STRONGROOM_BENCH_CHILD_PIN";
const CHILD_START_MS: &str = "STRONGROOM_BENCH_CHILD_START_UNIX_MS";
const CHILD_WARM_MS: &str = "STRONGROOM_BENCH_CHILD_WARM_MS";
const CHILD_WINDOW_MS: &str = "STRONGROOM_BENCH_CHILD_WINDOW_MS";

/// Callers driving the pool in the "64 callers" rows.
const POOL_CALLERS: usize = 64;
/// Delay between child process starts.
const CHILD_STAGGER: Duration = Duration::from_millis(50);

static ERRORS: AtomicUsize = AtomicUsize::new(0);

fn report_error(context: &str, msg: impl Display) {
    ERRORS.fetch_add(1, Ordering::Relaxed);
    eprintln!("ERROR [{context}]: {msg}");
}

/// The argument that makes this binary an HSM worker process of a pool in process mode.
const WORKER_ARG: &str = "--hsm-worker";

fn main() {
    if std::env::args().nth(1).as_deref() == Some(WORKER_ARG) {
        if let Err(e) = strongroom_hsm::worker::serve_stdio() {
            eprintln!("bench hsm worker: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Ok(alg) = std::env::var(CHILD_ENV) {
        std::process::exit(child_main(&alg));
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` runs bench binaries without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "strongroom HSM bench: run it with `cargo bench -p strongroom-benches --bench hsm`"
        );
        return;
    }
    let started = Instant::now();
    let ok = parent_main();
    let errors = ERRORS.load(Ordering::Relaxed);
    println!(
        "\ntotal bench time: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("load at the end: {}", loadavg());
    if !ok || errors > 0 {
        eprintln!("bench FAILED: {errors} error(s)");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// Settings and helpers

#[derive(Debug, Clone, Copy)]
struct Timing {
    warm: Duration,
    window: Duration,
}

fn timing(alg: SignAlg) -> Timing {
    let ps256_secs = std::env::var("STRONGROOM_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.5);
    let secs = match alg {
        SignAlg::Es256 => ps256_secs * 2.0 / 3.0,
        _ => ps256_secs,
    };
    Timing {
        warm: Duration::from_secs_f64((secs / 10.0).max(0.2)),
        window: Duration::from_secs_f64(secs),
    }
}

fn rounds() -> usize {
    std::env::var("STRONGROOM_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3)
}

fn module_path() -> PathBuf {
    if let Ok(m) = std::env::var("STRONGROOM_PKCS11_MODULE") {
        return PathBuf::from(m);
    }
    PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")
}

fn sig_len(alg: SignAlg) -> usize {
    match alg {
        SignAlg::Es256 => 64,
        _ => 256, // RSA-2048
    }
}

fn check_sig(alg: SignAlg, sig: &[u8]) -> Result<(), String> {
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
fn jwt_signing_input(alg: SignAlg) -> Vec<u8> {
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

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Signs in a loop from `start` until `start + warm + window`; returns the signatures that
/// completed inside `[start + warm, start + warm + window)`. Stops at the first error.
fn timed_loop<E: Display>(
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

fn rate(count: u64, t: Timing) -> f64 {
    count as f64 / t.window.as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// The parent: token, keys, measurements, table

struct Keys {
    rsa: KeyId,
    ec: KeyId,
}

impl Keys {
    fn for_alg(&self, alg: SignAlg) -> &KeyId {
        match alg {
            SignAlg::Es256 => &self.ec,
            _ => &self.rsa,
        }
    }
}

const ALGS: [SignAlg; 2] = [SignAlg::Ps256, SignAlg::Es256];

/// PS256 and ES256 rates of one mode (None: a measurement failed).
type Rates = [Option<f64>; 2];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// (a) One session on one thread.
    Single,
    /// (b) The signing pool, driven by `callers` tokio tasks.
    Pool { workers: usize, callers: usize },
    /// (b') The signing pool in process mode (a worker process each), `callers` tokio tasks.
    ProcessPool { workers: usize, callers: usize },
    /// (c) OS threads, a session each.
    Threads(usize),
    /// (d) Child processes, a PKCS#11 application each.
    Processes(usize),
}

impl Mode {
    fn label(self) -> String {
        match self {
            Mode::Single => "single session, 1 thread".into(),
            Mode::Pool { workers, callers } => {
                format!("pool {workers} worker(s), {callers} callers")
            }
            Mode::ProcessPool { workers, callers } => {
                format!("pool {workers} process(es), {callers} callers")
            }
            Mode::Threads(n) => format!("raw threads x{n}"),
            Mode::Processes(n) => format!("raw processes x{n}"),
        }
    }
}

const MODES: [Mode; 14] = [
    Mode::Single,
    Mode::Pool {
        workers: 1,
        callers: POOL_CALLERS,
    },
    Mode::Pool {
        workers: 2,
        callers: POOL_CALLERS,
    },
    Mode::Pool {
        workers: 4,
        callers: POOL_CALLERS,
    },
    Mode::Pool {
        workers: 2,
        callers: 2,
    },
    Mode::ProcessPool {
        workers: 1,
        callers: POOL_CALLERS,
    },
    Mode::ProcessPool {
        workers: 2,
        callers: POOL_CALLERS,
    },
    Mode::ProcessPool {
        workers: 4,
        callers: POOL_CALLERS,
    },
    Mode::Threads(1),
    Mode::Threads(2),
    Mode::Threads(4),
    Mode::Processes(1),
    Mode::Processes(2),
    Mode::Processes(4),
];

struct Row {
    mode: Mode,
    /// Rates measured, per algorithm, one per round.
    samples: [Vec<f64>; 2],
    failed: [bool; 2],
}

impl Row {
    fn medians(&self) -> Rates {
        [0, 1].map(|i| {
            if self.failed[i] {
                None
            } else {
                median(&self.samples[i])
            }
        })
    }
}

fn median(samples: &[f64]) -> Option<f64> {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn parent_main() -> bool {
    print_machine();

    let dir = match tempfile::Builder::new()
        .prefix("strongroom-bench-")
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => {
            report_error("setup", format!("cannot create a temporary directory: {e}"));
            return false;
        }
    };
    let ok = run_all(dir.path());
    // `dir` is removed here, after every token, pool and child is gone.
    drop(dir);
    ok
}

fn run_all(dir: &Path) -> bool {
    // 1. A fresh token of our own.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../softhsm-config/create-token.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .arg(LABEL)
        .env("STRONGROOM_SO_PIN", SO_PIN)
        .env("STRONGROOM_HSM_PIN", USER_PIN)
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            report_error(
                "setup",
                format!(
                    "create-token.sh failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            );
            return false;
        }
        Err(e) => {
            report_error("setup", format!("cannot run {}: {e}", script.display()));
            return false;
        }
    }
    // SoftHSM2 reads SOFTHSM2_CONF at C_Initialize. This runs before the module is loaded and
    // before this process starts any thread; children inherit it.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("SOFTHSM2_CONF", dir.join("softhsm2.conf"));
    }

    let module = module_path();
    let opened = Instant::now();
    let token = match Token::open_with_pin(&module, LABEL, Pin::new(USER_PIN)) {
        Ok(t) => t,
        Err(e) => {
            report_error(
                "setup",
                format!("cannot open token {LABEL} in {}: {e}", module.display()),
            );
            return false;
        }
    };
    let open_time = opened.elapsed();
    let generated = Instant::now();
    let keys = Keys {
        rsa: KeyId::new(RSA_KEY).expect("valid key id"),
        ec: KeyId::new(EC_KEY).expect("valid key id"),
    };
    for (id, spec) in [(&keys.rsa, KeySpec::Rsa2048), (&keys.ec, KeySpec::EcP256)] {
        if let Err(e) = token.generate(id, spec, KeyUsage::Sign) {
            report_error("setup", format!("cannot generate {spec} key {id}: {e}"));
            return false;
        }
    }
    let keygen_time = generated.elapsed();
    for alg in ALGS {
        if !token.capabilities().can_sign(alg) {
            report_error("setup", format!("the token cannot do {}", alg.jose_name()));
            return false;
        }
        // One signature through the administrative session, as a smoke test.
        match token.sign(keys.for_alg(alg), alg, &jwt_signing_input(alg)) {
            Ok(sig) => {
                if let Err(e) = check_sig(alg, &sig) {
                    report_error("setup", e);
                    return false;
                }
            }
            Err(e) => {
                report_error(
                    "setup",
                    format!("first {} signature failed: {e}", alg.jose_name()),
                );
                return false;
            }
        }
    }
    println!(
        "token:     {LABEL} in {} (module {}); opened in {} ms, RSA-2048 + P-256 generated in {} ms",
        dir.display(),
        module.display(),
        open_time.as_millis(),
        keygen_time.as_millis()
    );
    println!(
        "message:   {}-byte JWS signing input (SHA-256 on the host, digest to the token)",
        jwt_signing_input(SignAlg::Ps256).len()
    );
    let (tp, te) = (timing(SignAlg::Ps256), timing(SignAlg::Es256));
    println!(
        "timing:    PS256 {:.1} s, ES256 {:.1} s per measurement, after a {:.1} s / {:.1} s warm-up",
        tp.window.as_secs_f64(),
        te.window.as_secs_f64(),
        tp.warm.as_secs_f64(),
        te.warm.as_secs_f64()
    );
    println!();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report_error("setup", format!("cannot start the tokio runtime: {e}"));
            return false;
        }
    };
    println!(
        "tokio runtime: multi-thread, {} worker threads\n",
        runtime.metrics().num_workers()
    );

    let rounds = rounds();
    println!("{rounds} round(s); each round measures every mode once, in order; medians below\n");
    let mut rows: Vec<Row> = MODES
        .iter()
        .map(|&mode| Row {
            mode,
            samples: [Vec::new(), Vec::new()],
            failed: [false, false],
        })
        .collect();
    for round in 1..=rounds {
        for row in &mut rows {
            let mut line = format!("  round {round}/{rounds}  {:<32}", row.mode.label());
            for (i, alg) in ALGS.into_iter().enumerate() {
                let key = keys.for_alg(alg);
                let t = timing(alg);
                let r = match row.mode {
                    Mode::Single => bench_single(&token, key, alg, t),
                    Mode::Pool { workers, callers } => bench_pool(
                        &runtime,
                        &token,
                        key,
                        alg,
                        PoolConfig::with_workers(workers),
                        callers,
                        t,
                    ),
                    Mode::ProcessPool { workers, callers } => bench_pool(
                        &runtime,
                        &token,
                        key,
                        alg,
                        process_pool_config(workers),
                        callers,
                        t,
                    ),
                    Mode::Threads(n) => bench_threads(&token, key, alg, n, t),
                    Mode::Processes(n) => bench_processes(key, alg, n, t, open_time),
                };
                match r {
                    Some(r) => {
                        row.samples[i].push(r);
                        line.push_str(&format!("  {} {r:>8.0}/s", alg.jose_name()));
                    }
                    None => {
                        row.failed[i] = true;
                        line.push_str(&format!("  {} {:>8}  ", alg.jose_name(), "FAILED"));
                    }
                }
            }
            println!("{line}");
        }
    }
    drop(runtime);

    print_table(&rows, rounds);
    true
}

fn print_machine() {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
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
    println!("strongroom HSM signing bench");
    println!("machine:   nproc {cores}, CPU {cpu}");
    println!("SoftHSM2:  {softhsm}");
    println!("load:      {}", loadavg());
}

/// /proc/loadavg: other work on the machine skews every figure here.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// (a) One session on the calling thread.
fn bench_single(token: &Token, key: &KeyId, alg: SignAlg, t: Timing) -> Option<f64> {
    let ctx = format!("single session {}", alg.jose_name());
    let mut session = match token.session() {
        Ok(s) => s,
        Err(e) => {
            report_error(&ctx, format!("cannot open a session: {e}"));
            return None;
        }
    };
    let msg = jwt_signing_input(alg);
    let start = Instant::now();
    match timed_loop(alg, start, t, || session.sign(key, alg, &msg)) {
        Ok(n) => Some(rate(n, t)),
        Err(e) => {
            report_error(&ctx, e);
            None
        }
    }
}

/// A pool config in process mode whose workers are this very binary run with `--hsm-worker`.
fn process_pool_config(workers: usize) -> PoolConfig {
    let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    PoolConfig {
        mode: WorkerMode::Processes {
            program,
            args: vec![WORKER_ARG.to_string()],
        },
        ..PoolConfig::with_workers(workers)
    }
}

/// (b) The signing pool as `config` says, driven by `callers` tokio tasks.
fn bench_pool(
    runtime: &tokio::runtime::Runtime,
    token: &Token,
    key: &KeyId,
    alg: SignAlg,
    config: PoolConfig,
    callers: usize,
    t: Timing,
) -> Option<f64> {
    let workers = config.workers;
    let kind = if config.mode == WorkerMode::Threads {
        "w"
    } else {
        "p"
    };
    let ctx = format!("pool {workers}{kind}/{callers}c {}", alg.jose_name());
    let pool = match SigningPool::start(token, config) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            report_error(&ctx, format!("cannot start the pool: {e}"));
            return None;
        }
    };
    let msg: Arc<[u8]> = jwt_signing_input(alg).into();
    let start = Instant::now() + Duration::from_millis(50);
    let window_start = start + t.warm;
    let end = window_start + t.window;
    let total = runtime.block_on(async {
        let mut tasks = Vec::with_capacity(callers);
        for _ in 0..callers {
            let (pool, msg, key, ctx) = (pool.clone(), msg.clone(), key.clone(), ctx.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(start.into()).await;
                let mut count = 0u64;
                loop {
                    match pool.sign(&key, alg, &msg).await {
                        Ok(sig) => {
                            if let Err(e) = check_sig(alg, &sig) {
                                report_error(&ctx, e);
                                return None;
                            }
                        }
                        Err(e) => {
                            report_error(&ctx, e);
                            return None;
                        }
                    }
                    let now = Instant::now();
                    if now >= end {
                        return Some(count);
                    }
                    if now >= window_start {
                        count += 1;
                    }
                }
            }));
        }
        let mut total = Some(0u64);
        for task in tasks {
            match task.await {
                Ok(Some(n)) => total = total.map(|t| t + n),
                Ok(None) => total = None,
                Err(e) => {
                    report_error(&ctx, format!("caller task failed: {e}"));
                    total = None;
                }
            }
        }
        total
    });
    // Wait for the workers (and worker processes) to end before the next measurement.
    if let Some(pool) = Arc::into_inner(pool) {
        pool.shutdown();
    }
    total.map(|n| rate(n, t))
}

/// (c) `n` OS threads, each with a session of its own.
fn bench_threads(token: &Token, key: &KeyId, alg: SignAlg, n: usize, t: Timing) -> Option<f64> {
    let ctx = format!("raw threads x{n} {}", alg.jose_name());
    let start = Instant::now() + Duration::from_millis(100);
    let counts: Vec<Option<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let ctx = &ctx;
                scope.spawn(move || {
                    let mut session = match token.session() {
                        Ok(s) => s,
                        Err(e) => {
                            report_error(ctx, format!("cannot open a session: {e}"));
                            return None;
                        }
                    };
                    if Instant::now() > start + t.warm {
                        report_error(ctx, "thread started after the warm-up ended");
                        return None;
                    }
                    let msg = jwt_signing_input(alg);
                    match timed_loop(alg, start, t, || session.sign(key, alg, &msg)) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            report_error(ctx, e);
                            None
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(None))
            .collect()
    });
    counts.into_iter().sum::<Option<u64>>().map(|c| rate(c, t))
}

/// (d) `n` child processes, each its own PKCS#11 application on the same token directory.
fn bench_processes(
    key: &KeyId,
    alg: SignAlg,
    n: usize,
    t: Timing,
    open_time: Duration,
) -> Option<f64> {
    let ctx = format!("raw processes x{n} {}", alg.jose_name());
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            report_error(&ctx, format!("cannot find this executable: {e}"));
            return None;
        }
    };
    // Each child loads the module, logs in and probes the token (an RSA-2048 key generation for
    // the OAEP probe) before the common start instant; give that plenty of room.
    let margin = Duration::from_millis(600) + open_time * 4 + CHILD_STAGGER * n as u32;
    let start_ms = unix_ms() + margin.as_millis() as u64;
    let mut children = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 {
            std::thread::sleep(CHILD_STAGGER);
        }
        let child = Command::new(&exe)
            .env(CHILD_ENV, alg.jose_name().to_ascii_lowercase())
            .env(CHILD_KEY, key.as_str())
            .env(CHILD_LABEL, LABEL)
            .env(CHILD_PIN, USER_PIN)
            .env(CHILD_START_MS, start_ms.to_string())
            .env(CHILD_WARM_MS, t.warm.as_millis().to_string())
            .env(CHILD_WINDOW_MS, t.window.as_millis().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match child {
            Ok(c) => children.push(c),
            Err(e) => report_error(&ctx, format!("cannot start child {i}: {e}")),
        }
    }
    let mut total = Some(0u64);
    if children.len() != n {
        total = None;
    }
    for (i, child) in children.into_iter().enumerate() {
        let out = match child.wait_with_output() {
            Ok(o) => o,
            Err(e) => {
                report_error(&ctx, format!("child {i}: {e}"));
                total = None;
                continue;
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
            println!("    child {i}: {line}");
        }
        if !out.status.success() {
            report_error(&ctx, format!("child {i} exited with {}", out.status));
            total = None;
            continue;
        }
        match stdout
            .lines()
            .find_map(|l| l.strip_prefix("count "))
            .and_then(|c| c.trim().parse::<u64>().ok())
        {
            Some(c) => total = total.map(|t| t + c),
            None => {
                report_error(&ctx, format!("child {i} printed no count: {stdout:?}"));
                total = None;
            }
        }
    }
    total.map(|c| rate(c, t))
}

fn print_table(rows: &[Row], rounds: usize) {
    let find = |mode: Mode| -> Rates {
        rows.iter()
            .find(|r| r.mode == mode)
            .map_or([None, None], Row::medians)
    };
    let cell = |r: &Row, i: usize| -> String {
        if r.failed[i] {
            return "FAILED".into();
        }
        let v = &r.samples[i];
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        match median(v) {
            Some(m) if v.len() > 1 => format!("{m:.0} ({lo:.0}-{hi:.0})"),
            Some(m) => format!("{m:.0}"),
            None => "n/a".into(),
        }
    };
    let fmt_ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "n/a".to_owned(),
    };

    let spread = if rounds > 1 { " median (min-max)" } else { "" };
    println!(
        "\n{:<34} {:>25} {:>25}",
        "mode",
        format!("PS256/s{spread}"),
        format!("ES256/s{spread}")
    );
    println!("{}", "-".repeat(86));
    for r in rows {
        println!(
            "{:<34} {:>25} {:>25}",
            r.mode.label(),
            cell(r, 0),
            cell(r, 1)
        );
    }

    let single = find(Mode::Single);
    let pool = |workers: usize| {
        find(Mode::Pool {
            workers,
            callers: POOL_CALLERS,
        })
    };
    let process_pool = |workers: usize| {
        find(Mode::ProcessPool {
            workers,
            callers: POOL_CALLERS,
        })
    };
    let threads = |n: usize| find(Mode::Threads(n));
    let procs = |n: usize| find(Mode::Processes(n));
    let mut ratios: Vec<(String, Rates, Rates)> = vec![
        (
            "pool(2w, 64 callers) / single session".into(),
            pool(2),
            single,
        ),
        (
            "raw processes(2) / raw threads(2)".into(),
            procs(2),
            threads(2),
        ),
    ];
    for n in [1, 2, 4] {
        ratios.push((
            format!("pool({n}w, 64 callers) / raw threads({n})"),
            pool(n),
            threads(n),
        ));
    }
    for n in [1, 2, 4] {
        ratios.push((
            format!("pool({n} processes) / raw processes({n})"),
            process_pool(n),
            procs(n),
        ));
    }
    ratios.push((
        "pool(2 processes) / pool(2 threads), 64 callers".into(),
        process_pool(2),
        pool(2),
    ));
    ratios.push((
        "pool(2 processes) / single session".into(),
        process_pool(2),
        single,
    ));
    ratios.push((
        "pool(2w, 2 callers) / pool(2w, 64 callers)".into(),
        find(Mode::Pool {
            workers: 2,
            callers: 2,
        }),
        pool(2),
    ));
    ratios.push((
        "raw threads(2) / raw threads(1)".into(),
        threads(2),
        threads(1),
    ));
    ratios.push((
        "raw processes(2) / raw processes(1)".into(),
        procs(2),
        procs(1),
    ));

    let of = if rounds > 1 { " (of medians)" } else { "" };
    println!(
        "\n{:<46} {:>8} {:>8}",
        format!("ratio{of}"),
        "PS256",
        "ES256"
    );
    println!("{}", "-".repeat(64));
    for (label, a, b) in ratios {
        println!(
            "{:<46} {:>8} {:>8}",
            label,
            fmt_ratio(a[0], b[0]),
            fmt_ratio(a[1], b[1])
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The child: one PKCS#11 application signing until the common window ends

fn child_main(alg: &str) -> i32 {
    match child_run(alg) {
        Ok(report) => {
            println!("{report}");
            0
        }
        Err(e) => {
            eprintln!("ERROR: {e}");
            1
        }
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
