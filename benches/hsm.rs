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
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use strongroom_hsm::{
    KeyId, KeySpec, KeyUsage, Pin, PoolConfig, SignAlg, SigningPool, Token, WorkerMode,
};

#[path = "common/mod.rs"]
mod common;

use common::{
    Machine, RawSpec, Timing, check_sig, jwt_signing_input, loadavg, median, module_path, rate,
    timed_loop,
};

const LABEL: &str = "strongroom-bench";
const SO_PIN: &str = "bench-so-pin-1234";
const USER_PIN: &str = "bench-user-pin-1234";
const RSA_KEY: &str = "bench-ps256";
const EC_KEY: &str = "bench-es256";

/// Callers driving the pool in the "64 callers" rows.
const POOL_CALLERS: usize = 64;

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
    if let Some(code) = common::child_dispatch() {
        std::process::exit(code);
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
    let m = Machine::describe();
    println!("strongroom HSM signing bench");
    println!("machine:   nproc {}, CPU {}", m.nproc, m.cpu);
    println!("SoftHSM2:  {}", m.softhsm);
    println!("load:      {}", loadavg());
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
    // Each child loads the module, logs in and probes the token (an RSA-2048 key generation for
    // the OAEP probe) before the common start instant; give that plenty of room.
    let spec = RawSpec {
        label: LABEL,
        pin: USER_PIN,
        key: key.as_str(),
        softhsm_conf: None, // inherited: set before anything else ran
        cpus: Vec::new(),
        margin: Duration::from_millis(600) + open_time * 4,
    };
    match common::raw_processes(&spec, alg, n, t) {
        Ok(r) => Some(r),
        Err(e) => {
            report_error(&ctx, e);
            None
        }
    }
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
