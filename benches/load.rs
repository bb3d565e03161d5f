//! Token-issuance load: the real `strongroom serve` (target/release) on a fresh SoftHSM2 token and
//! SQLite file, driven over HTTPS on 127.0.0.1 by a Rust generator (tokio, hyper HTTP/1.1,
//! rustls on aws-lc-rs), beside the raw signing rate of the same token.
//!
//!     make bench                                    # builds the server, runs this and bench-hsm
//!     cargo build --release -p strongroom-server && cargo bench -p strongroom-benches --bench load
//!     make bench-soak                               # scenario 1 for 10 minutes: RSS over time
//!
//! Scenarios (each a closed loop of `STRONGROOM_LOAD_CONNS` connections or flows in flight):
//! 1. client_credentials, private_key_jwt (PS256 assertions), PS256 access tokens, keep-alive.
//! 2. the same with tls_client_auth on the mTLS listener, certificate-bound tokens.
//! 3. PAR (private_key_jwt) → GET /authorize with a login session and a remembered consent (303
//!    straight to the redirect_uri with the code) → authorization_code + PKCE at /token; a flow
//!    counts when the response has access_token and id_token.
//! 4. 1 and 3 with ES256 access and ID tokens (`[keys] algorithms`; the TLS key stays RSA).
//! 5. 1 with a new TLS connection (a full handshake, no resumption) per request.
//!
//! Three placements: `shared` (server and generator on every core, pool_workers = nproc),
//! `pinned` (server and its worker processes on CPU 0 with pool_workers = 1, the generator's
//! threads on CPU 1) and `offload` (the HSM on a core of its own, as a network HSM signs on its
//! own hardware: pool_workers = 1, the worker process moved to CPU 1, the server and the
//! generator on CPU 0). Each placement's HSM bound is raw processes (as `bench-hsm` measures
//! them) on the same token and key, one per core the server's HSM workers have (offload: CPU 1),
//! measured before and after each run's scenarios: the median of those. Then: an open loop at
//! 80% of scenario 1's maximum (measured again by a short closed loop right before each run, as
//! the machine's speed drifts between minutes), and an overload burst against a small
//! `hsm.queue_depth`.
//!
//! Every client assertion is signed before the measurement that uses it (exp = now + 300 s, a
//! unique jti each); a measurement that runs out of them is repeated with more. Nothing but TLS
//! and HTTP runs in the generator while it measures.
//!
//! Environment:
//! - `STRONGROOM_LOAD_SECS` (5): seconds per measurement window, after a warm-up of a fifth
//!   (at least 0.5 s).
//! - `STRONGROOM_LOAD_RUNS` (3): runs per scenario, interleaved; the table shows medians.
//! - `STRONGROOM_LOAD_CONNS` (32): connections (or flows) in flight in the closed loops.
//! - `STRONGROOM_LOAD_SCENARIOS` (`1,2,3,4,5,80,overload`): which to run.
//! - `STRONGROOM_LOAD_PLACEMENTS` (`shared,pinned,offload`).
//! - `STRONGROOM_LOAD_HSM_SECS` (2): seconds per raw HSM measurement.
//! - `STRONGROOM_LOAD_QUEUE_DEPTH` (16), `STRONGROOM_LOAD_BURST` (512),
//!   `STRONGROOM_LOAD_LOW` (8): the overload run's server queue depth, the connections of the
//!   burst, and those left after it.
//! - `STRONGROOM_LOAD_OPEN_CONNS` (128): connections of the open loop.
//! - `STRONGROOM_LOAD_OPEN_MAX`: scenario 1's maximum rate for the open loop (80% of it is
//!   offered), instead of measuring scenario 1 first and again before each run (to repeat or
//!   profile the open loop alone at a fixed rate).
//! - `STRONGROOM_LOAD_SOAK_SECS` (600), `STRONGROOM_LOAD_SOAK_EVERY` (60): with `--soak`.
//! - `STRONGROOM_BIN`: the server binary (default target/release/strongroom).
//! - `STRONGROOM_LOAD_POOL_MODE` (`processes`): the server's `hsm.pool_mode`, to compare
//!   `threads` (PS256 in the threads mode measured the same or a little worse, session 12).
//!
//! Exits non-zero if any scenario had an error (any answer but the expected one), except the
//! 503s of the overload run, which are its point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "common/mod.rs"]
mod common;
#[path = "load/creds.rs"]
mod creds;
#[path = "load/http.rs"]
mod http;
#[path = "load/report.rs"]
mod report;
#[path = "load/scenarios.rs"]
mod scenarios;
#[path = "load/server.rs"]
mod server;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strongroom_hsm::SignAlg;

use common::{Machine, RawSpec, Timing, loadavg, median, pin_current_thread};
use creds::{ClientKey, MtlsIdentity};
use report::{OpenLoopRow, Row};
use scenarios::{Clients, Issued, Kind, Supply, Target};
use server::{Instance, Server, ServerOptions};

/// A positive, finite number from the environment; `None` if unset or anything else.
fn env_f64_opt(name: &str) -> Option<f64> {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
}

fn env_f64(name: &str, default: f64) -> f64 {
    env_f64_opt(name).unwrap_or(default)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

#[derive(Debug, Clone)]
struct Settings {
    t: Timing,
    runs: usize,
    conns: usize,
    scenarios: Vec<String>,
    placements: Vec<Placement>,
    hsm: Timing,
    queue_depth: usize,
    burst: usize,
    low: usize,
    open_conns: usize,
    /// Scenario 1's maximum for the open loop, given instead of measured.
    open_max: Option<f64>,
    nproc: usize,
}

impl Settings {
    fn from_env(nproc: usize) -> Self {
        let secs = env_f64("STRONGROOM_LOAD_SECS", 5.0);
        let hsm_secs = env_f64("STRONGROOM_LOAD_HSM_SECS", 2.0);
        let mut placements = Vec::new();
        for p in env_list("STRONGROOM_LOAD_PLACEMENTS", "shared,pinned,offload") {
            match p.as_str() {
                "shared" => placements.push(Placement::Shared),
                "pinned" if nproc >= 2 => placements.push(Placement::Pinned),
                "offload" if nproc >= 2 => placements.push(Placement::Offload),
                "pinned" | "offload" => {
                    println!("note: one core only; the {p} placement is skipped")
                }
                other => println!("note: unknown placement {other:?} ignored"),
            }
        }
        Settings {
            t: Timing {
                warm: Duration::from_secs_f64((secs / 5.0).max(0.5)),
                window: Duration::from_secs_f64(secs),
            },
            runs: env_usize("STRONGROOM_LOAD_RUNS", 3),
            conns: env_usize("STRONGROOM_LOAD_CONNS", 32),
            scenarios: env_list("STRONGROOM_LOAD_SCENARIOS", "1,2,3,4,5,80,overload"),
            placements,
            hsm: Timing {
                warm: Duration::from_millis(300),
                window: Duration::from_secs_f64(hsm_secs),
            },
            queue_depth: env_usize("STRONGROOM_LOAD_QUEUE_DEPTH", 16),
            burst: env_usize("STRONGROOM_LOAD_BURST", 512),
            low: env_usize("STRONGROOM_LOAD_LOW", 8),
            open_conns: env_usize("STRONGROOM_LOAD_OPEN_CONNS", 128),
            open_max: env_f64_opt("STRONGROOM_LOAD_OPEN_MAX"),
            nproc,
        }
    }

    fn wants(&self, s: &str) -> bool {
        self.scenarios.iter().any(|x| x == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Placement {
    Shared,
    Pinned,
    /// The HSM on a core of its own, as a network HSM signs on hardware of its own: the
    /// server's one worker process on CPU 1, the server and the generator on CPU 0.
    Offload,
}

impl Placement {
    pub fn label(self) -> &'static str {
        match self {
            Placement::Shared => "shared",
            Placement::Pinned => "pinned",
            Placement::Offload => "offload",
        }
    }

    /// Where everything runs, for the log.
    fn describe(self) -> &'static str {
        match self {
            Placement::Shared => "unpinned; generator unpinned",
            Placement::Pinned => "server and its worker on CPU 0; generator on CPU 1",
            Placement::Offload => "server on CPU 0, its worker moved to CPU 1; generator on CPU 0",
        }
    }

    /// Where the server's HSM worker processes are moved once they run (`None`: left with
    /// the server).
    fn worker_cpus(self) -> Option<&'static str> {
        match self {
            Placement::Offload => Some("1"),
            Placement::Shared | Placement::Pinned => None,
        }
    }

    fn server_options(self, nproc: usize, queue_depth: usize) -> ServerOptions {
        match self {
            Placement::Shared => ServerOptions {
                pool_workers: nproc,
                queue_depth,
                cpus: None,
            },
            Placement::Pinned | Placement::Offload => ServerOptions {
                pool_workers: 1,
                queue_depth,
                cpus: Some("0".into()),
            },
        }
    }

    /// The cores the generator's threads run on.
    fn generator_cpus(self, nproc: usize) -> Vec<usize> {
        match self {
            Placement::Shared => (0..nproc).collect(),
            Placement::Pinned => vec![1],
            Placement::Offload => vec![0],
        }
    }

    /// The raw HSM processes of the bound: one per core the server has, pinned alike.
    fn hsm_processes(self, nproc: usize) -> (usize, Vec<usize>) {
        match self {
            Placement::Shared => (nproc, Vec::new()),
            Placement::Pinned => (1, vec![0]),
            Placement::Offload => (1, vec![1]),
        }
    }
}

/// One scenario of the table.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub id: &'static str,
    pub label: &'static str,
    pub kind: Kind,
    pub alg: &'static str,
    /// HSM signatures per unit.
    pub sigs: f64,
    pub unit: &'static str,
}

const DEFS: [Def; 6] = [
    Def {
        id: "1",
        label: "client_credentials, private_key_jwt, keep-alive",
        kind: Kind::CcJwt,
        alg: "PS256",
        sigs: 1.0,
        unit: "tokens",
    },
    Def {
        id: "2",
        label: "client_credentials, tls_client_auth, bound, keep-alive",
        kind: Kind::CcMtls,
        alg: "PS256",
        sigs: 1.0,
        unit: "tokens",
    },
    Def {
        id: "3",
        label: "PAR + authorize + code exchange (ID + access token)",
        kind: Kind::CodeFlow,
        alg: "PS256",
        sigs: 2.0,
        unit: "flows",
    },
    Def {
        id: "5",
        label: "client_credentials, new TLS connection per request",
        kind: Kind::CcJwtNewConn,
        alg: "PS256",
        sigs: 2.0,
        unit: "tokens",
    },
    Def {
        id: "4.1",
        label: "= 1 with ES256 tokens",
        kind: Kind::CcJwt,
        alg: "ES256",
        sigs: 1.0,
        unit: "tokens",
    },
    Def {
        id: "4.3",
        label: "= 3 with ES256 tokens",
        kind: Kind::CodeFlow,
        alg: "ES256",
        sigs: 2.0,
        unit: "flows",
    },
];

fn main() {
    if let Some(code) = common::child_dispatch() {
        std::process::exit(code);
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` runs bench binaries without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("strongroom load bench: run it with `make bench` (or `make bench-soak`)");
        return;
    }
    let started = Instant::now();
    let soak = std::env::args().any(|a| a == "--soak");
    let errors = if soak { soak_main() } else { bench_main() };
    println!(
        "\ntotal bench time: {:.1} s; load at the end: {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    if errors > 0 {
        eprintln!("load bench FAILED: {errors} error(s)");
        std::process::exit(1);
    }
}

fn print_machine(m: &Machine) {
    println!("strongroom token-issuance load bench");
    println!("machine:  nproc {}, CPU {}, {} RAM", m.nproc, m.cpu, m.mem);
    println!("SoftHSM2: {}", m.softhsm);
    println!("server:   {}", server::binary().display());
    println!("load:     {}", loadavg());
}

fn check_binary() -> Result<(), String> {
    let bin = server::binary();
    if bin.exists() {
        Ok(())
    } else {
        Err(format!(
            "{} not found: `cargo build --release -p strongroom-server` first (make bench does)",
            bin.display()
        ))
    }
}

/// The generator's runtime for a placement: its worker threads pinned where the placement says.
fn runtime(placement: Placement, nproc: usize) -> tokio::runtime::Runtime {
    let cpus = placement.generator_cpus(nproc);
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all().worker_threads(cpus.len().max(1));
    if placement != Placement::Shared {
        b.on_thread_start(move || {
            if let Err(e) = pin_current_thread(&cpus) {
                eprintln!("warning: {e}");
            }
        });
    }
    b.build().expect("tokio runtime")
}

/// Runs `f` with the calling thread on the generator's cores (block_on drives the main future
/// on the calling thread), then on every core again.
fn on_generator_cores<T>(placement: Placement, nproc: usize, f: impl FnOnce() -> T) -> T {
    let _ = pin_current_thread(&placement.generator_cpus(nproc));
    let out = f();
    let _ = pin_current_thread(&(0..nproc).collect::<Vec<_>>());
    out
}

struct Bench {
    s: Settings,
    key: Arc<ClientKey>,
    mtls: MtlsIdentity,
    rows: Vec<Row>,
    /// Raw HSM signatures per second, per (alg, placement).
    hsm: BTreeMap<(&'static str, Placement), Vec<f64>>,
    /// What each instance issued (alg -> description).
    issued: BTreeMap<&'static str, Issued>,
    open_loop: Vec<OpenLoopRow>,
    overload: Option<scenarios::OverloadReport>,
    /// Units per second seen so far per (scenario, placement): sizes the next supply.
    seen: BTreeMap<(&'static str, Placement), f64>,
    setup_errors: Vec<String>,
}

fn bench_main() -> u64 {
    let machine = Machine::describe();
    print_machine(&machine);
    if let Err(e) = check_binary() {
        eprintln!("ERROR: {e}");
        return 1;
    }
    let s = Settings::from_env(machine.nproc);
    println!(
        "timing:   {:.1} s windows after {:.1} s warm-up, {} run(s) per scenario, {} connections \
         in flight; raw HSM {:.1} s",
        s.t.window.as_secs_f64(),
        s.t.warm.as_secs_f64(),
        s.runs,
        s.conns,
        s.hsm.window.as_secs_f64()
    );
    println!(
        "scenarios: {}; placements: {}",
        s.scenarios.join(","),
        s.placements
            .iter()
            .map(|p| p.label())
            .collect::<Vec<_>>()
            .join(",")
    );
    let key = match ClientKey::generate() {
        Ok(k) => Arc::new(k),
        Err(e) => {
            eprintln!("ERROR: {e}");
            return 1;
        }
    };
    let mtls = match MtlsIdentity::generate() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("ERROR: {e}");
            return 1;
        }
    };
    let mut bench = Bench {
        s,
        key,
        mtls,
        rows: Vec::new(),
        hsm: BTreeMap::new(),
        issued: BTreeMap::new(),
        open_loop: Vec::new(),
        overload: None,
        seen: BTreeMap::new(),
        setup_errors: Vec::new(),
    };
    for alg in ["PS256", "ES256"] {
        let defs: Vec<Def> = DEFS
            .iter()
            .filter(|d| d.alg == alg && bench.s.wants(if alg == "ES256" { "4" } else { d.id }))
            .copied()
            .collect();
        let extras = alg == "PS256" && (bench.s.wants("80") || bench.s.wants("overload"));
        if defs.is_empty() && !extras {
            continue;
        }
        if let Err(e) = bench.instance(alg, &defs) {
            eprintln!("ERROR [{alg}]: {e}");
            bench.setup_errors.push(format!("{alg}: {e}"));
        }
    }
    let errors = report::print(&bench, &machine);
    errors + bench.setup_errors.len() as u64
}

impl Bench {
    /// One token + database, its servers one placement after the other.
    fn instance(&mut self, alg: &'static str, defs: &[Def]) -> Result<(), String> {
        println!("\n=== {alg} access and ID tokens: a fresh token and database ===");
        let inst = Instance::create(alg)?;
        std::fs::write(inst.path().join("client-ca.pem"), &self.mtls.ca_pem)
            .map_err(|e| e.to_string())?;
        let mut clients: Option<Clients> = None;
        let placements = self.s.placements.clone();
        for placement in placements {
            let options = placement.server_options(self.s.nproc, 0);
            println!(
                "\n--- placement {}: server pool_workers = {}, {} ---",
                placement.label(),
                options.pool_workers,
                placement.describe()
            );
            let mut server = Server::start(&inst, options)?;
            if let Some(cpus) = placement.worker_cpus() {
                for pid in server.workers() {
                    server::move_process(pid, cpus)?;
                }
            }
            if clients.is_none() {
                clients = Some(scenarios::register(&inst, &self.key, &self.mtls)?);
            }
            let clients = clients.clone().ok_or("no clients")?;
            let rt = runtime(placement, self.s.nproc);
            let (target, issued) = rt.block_on(Target::prepare(
                &server,
                &clients,
                self.key.clone(),
                &self.mtls,
            ))?;
            println!(
                "issued:   access token {} (kid {}), flow access token {}, ID token {}; mTLS token \
                 bound: {}; TLS: {}",
                issued.access_token,
                issued.kid,
                issued.flow_access_token,
                issued.id_token,
                issued.bound,
                issued.tls
            );
            println!(
                "server:   pid {} on CPUs {}, HSM worker processes {:?} on CPUs {}; generator on \
                 CPUs {:?}",
                server.pid,
                server::cpus_allowed(server.pid),
                server.workers(),
                server
                    .workers()
                    .first()
                    .map_or_else(|| "?".into(), |&w| server::cpus_allowed(w)),
                placement.generator_cpus(self.s.nproc)
            );
            let target = Arc::new(target);
            let kid = issued.kid.clone();
            self.issued.insert(alg, issued);
            for round in 1..=self.s.runs {
                // The raw rate before and after each round's scenarios: this VM's speed drifts
                // within minutes, and one measurement taken in a slow (or fast) moment skewed
                // every ratio of its placement (pinned ratios over 100% were seen).
                self.hsm_bound(&inst, alg, &kid, placement, round, "before");
                for def in defs {
                    self.measure(&rt, &target, &server, def, placement, round);
                    if !server.alive() {
                        return Err(format!("the server died; its log:\n{}", server.log_tail()));
                    }
                }
                self.hsm_bound(&inst, alg, &kid, placement, round, "after");
            }
            if alg == "PS256" && placement == Placement::Shared && self.s.wants("80") {
                self.open_loop_80(&rt, &target, &server);
            }
            drop(rt);
            server.stop();
        }
        if alg == "PS256" && self.s.wants("overload") {
            let options = ServerOptions {
                queue_depth: self.s.queue_depth,
                ..Placement::Shared.server_options(self.s.nproc, 0)
            };
            println!(
                "\n--- overload: server pool_workers = {}, queue_depth = {} ---",
                options.pool_workers, options.queue_depth
            );
            let mut server = Server::start(&inst, options)?;
            let clients = match clients {
                Some(c) => c,
                None => scenarios::register(&inst, &self.key, &self.mtls)?,
            };
            let rt = runtime(Placement::Shared, self.s.nproc);
            let (target, _) = rt.block_on(Target::prepare(
                &server,
                &clients,
                self.key.clone(),
                &self.mtls,
            ))?;
            let target = Arc::new(target);
            let phase = self.s.t.window.max(Duration::from_secs(2));
            let r = rt.block_on(scenarios::overload(
                target,
                self.s.burst,
                self.s.low,
                phase,
                &server,
            ));
            println!(
                "  burst of {}: 200 {} ({:.0}/s), 503 {} ({:.0}/s); after the drop to {}: 200 at \
                 {:.0}/s then {:.0}/s, {} 503",
                r.burst_conns,
                r.ok,
                r.ok_rate,
                r.busy,
                r.busy_rate,
                r.low_conns,
                r.low_ok_rate_first,
                r.low_ok_rate_rest,
                r.low_busy
            );
            self.overload = Some(r);
            drop(rt);
            server.stop();
        }
        Ok(())
    }

    fn hsm_bound(
        &mut self,
        inst: &Instance,
        alg: &'static str,
        kid: &str,
        placement: Placement,
        round: usize,
        when: &str,
    ) {
        let (n, cpus) = placement.hsm_processes(self.s.nproc);
        let conf = inst.softhsm_conf();
        let spec = RawSpec {
            label: server::LABEL,
            pin: server::USER_PIN,
            key: kid,
            softhsm_conf: Some(&conf),
            cpus,
            margin: Duration::from_millis(1500),
        };
        let sign_alg = if alg == "ES256" {
            SignAlg::Es256
        } else {
            SignAlg::Ps256
        };
        match common::raw_processes(&spec, sign_alg, n, self.s.hsm) {
            Ok(r) => {
                println!(
                    "  run {round}/{}  raw HSM {alg}, {n} process(es){}, {when} the scenarios: \
                     {r:.0} signatures/s (loadavg {})",
                    self.s.runs,
                    match placement {
                        Placement::Shared => String::new(),
                        Placement::Pinned | Placement::Offload => {
                            format!(" on CPU {}", spec.cpus.first().copied().unwrap_or(0))
                        }
                    },
                    loadavg()
                );
                self.hsm.entry((alg, placement)).or_default().push(r);
            }
            Err(e) => {
                eprintln!("ERROR [raw HSM {alg} {}]: {e}", placement.label());
                self.setup_errors
                    .push(format!("raw HSM {alg} {}: {e}", placement.label()));
            }
        }
    }

    /// Units to pre-sign for a run expected at `rate` per second.
    fn units_for(&self, rate: f64, conns: usize) -> usize {
        let secs = (self.s.t.warm + self.s.t.window).as_secs_f64() + 0.2;
        ((rate * secs * 1.3) as usize).max(conns * 4)
    }

    /// The rate to size the first run's supply by: the HSM bound, at most 2,000 signatures/s
    /// (`STRONGROOM_LOAD_RATE_CAP`); a measurement that runs out is repeated with 2.5x more.
    fn expected_rate(&self, def: &Def, placement: Placement) -> f64 {
        if let Some(&r) = self.seen.get(&(def.id, placement)) {
            return r;
        }
        let bound = self
            .hsm
            .get(&(def.alg, placement))
            .and_then(|v| median(v))
            .unwrap_or(2000.0)
            / def.sigs;
        (bound * 1.2).min(env_f64("STRONGROOM_LOAD_RATE_CAP", 2000.0) / def.sigs)
    }

    fn measure(
        &mut self,
        rt: &tokio::runtime::Runtime,
        target: &Arc<Target>,
        server: &Server,
        def: &Def,
        placement: Placement,
        round: usize,
    ) {
        let conns = self.s.conns;
        let mut rate = self.expected_rate(def, placement);
        for attempt in 0..4 {
            let units = self.units_for(rate, conns);
            let signed = Instant::now();
            let supply = match target.supply(def.kind, units, self.s.nproc) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    self.setup_errors
                        .push(format!("supply for {}: {e}", def.id));
                    return;
                }
            };
            let sign_secs = signed.elapsed().as_secs_f64();
            let t = self.s.t;
            let sample = on_generator_cores(placement, self.s.nproc, || {
                rt.block_on(scenarios::closed_loop(
                    target.clone(),
                    def.kind,
                    supply.clone(),
                    conns,
                    t,
                    server,
                ))
            });
            if sample.starved && attempt < 3 {
                println!(
                    "  run {round}/{}  {:<4} {:<7} ran out of {units} pre-signed units at {:.0}/s; \
                     again with more",
                    self.s.runs,
                    def.id,
                    placement.label(),
                    sample.rate
                );
                rate = rate.max(sample.rate) * 2.5;
                continue;
            }
            let seen = self.seen.entry((def.id, placement)).or_insert(0.0);
            *seen = seen.max(sample.rate * 1.15);
            println!(
                "  run {round}/{}  {:<4} {:<7} {:>7.0} {}/s  p50 {:>6.1} ms  p99 {:>6.1} ms  CPU \
                 {:.2}+{:.2} ms/unit (gen {:.2}; others {:.2} cores)  errors {}{}  [{} pre-signed in \
                 {:.1} s]",
                self.s.runs,
                def.id,
                placement.label(),
                sample.rate,
                def.unit,
                sample.pct_ms(0.5),
                sample.pct_ms(0.99),
                sample.server_cpu * 1000.0 / sample.ok.max(1) as f64,
                sample.worker_cpu * 1000.0 / sample.ok.max(1) as f64,
                sample.gen_cpu_ms_per_unit(),
                sample.other_cores(),
                sample.error_count(),
                if def.kind == Kind::CodeFlow {
                    format!(
                        "  steps PAR {:.1} / authorize {:.1} / token {:.1} ms",
                        sample.steps_us[0] / 1000.0,
                        sample.steps_us[1] / 1000.0,
                        sample.steps_us[2] / 1000.0
                    )
                } else {
                    String::new()
                },
                if def.kind.assertions() > 0 {
                    units.to_string()
                } else {
                    "none".into()
                },
                sign_secs
            );
            for (k, n) in &sample.errors {
                println!(
                    "      error {k}: {n}  e.g. {}",
                    sample.examples.get(k).map_or("", String::as_str)
                );
            }
            match self
                .rows
                .iter_mut()
                .find(|r| r.def.id == def.id && r.placement == placement)
            {
                Some(row) => row.samples.push(sample),
                None => self.rows.push(Row {
                    def: *def,
                    placement,
                    samples: vec![sample],
                }),
            }
            return;
        }
    }

    /// An open loop at 80% of scenario 1's maximum (shared placement). The maximum is measured
    /// again right before each run (a short closed loop of scenario 1), because this VM's speed
    /// drifts by ±10% between minutes: 80% of a median taken minutes earlier was 88–97% of the
    /// machine in a slow minute, and the tail then showed the drift, not the server.
    /// `STRONGROOM_LOAD_OPEN_MAX` fixes the maximum instead.
    fn open_loop_80(
        &mut self,
        rt: &tokio::runtime::Runtime,
        target: &Arc<Target>,
        server: &Server,
    ) {
        let Some(median_max) = self.s.open_max.or_else(|| {
            self.rows
                .iter()
                .find(|r| r.def.id == "1" && r.placement == Placement::Shared)
                .and_then(|r| median(&r.samples.iter().map(|s| s.rate).collect::<Vec<_>>()))
        }) else {
            println!("  (no scenario 1 rate: the 80% run needs scenario 1)");
            return;
        };
        let secs = (self.s.t.warm + self.s.t.window).as_secs_f64();
        for run in 1..=self.s.runs {
            // Signed first, with room for a faster minute, so that nothing runs between the
            // calibration and the run it calibrates.
            let n = (secs * 0.8 * median_max * 1.3) as usize + 16;
            let bodies = match target.supply(Kind::CcJwt, n, self.s.nproc) {
                Ok(Supply::Bodies(b)) => Arc::new(b),
                Ok(_) => return,
                Err(e) => {
                    self.setup_errors
                        .push(format!("supply for the 80% run: {e}"));
                    return;
                }
            };
            let max = match self.s.open_max {
                Some(m) => m,
                None => match self.calibrate(rt, target, server, median_max) {
                    Ok(m) => m,
                    Err(e) => {
                        self.setup_errors
                            .push(format!("the 80% run's calibration: {e}"));
                        return;
                    }
                },
            };
            let rate = (0.8 * max).min((n - 16) as f64 / secs);
            let sample = rt.block_on(scenarios::open_loop(
                target.clone(),
                bodies,
                rate,
                self.s.open_conns,
                self.s.t,
                server,
            ));
            println!(
                "  run {run}/{}  80% open loop at {rate:.0}/s: {:.0}/s answered, p50 {:.1} ms, p99 \
                 {:.1} ms, p99/p50 {:.1}, CPU {:.2}+{:.2} ms/unit (gen {:.2}), errors {} (others \
                 {:.2} cores)",
                self.s.runs,
                sample.rate,
                sample.pct_ms(0.5),
                sample.pct_ms(0.99),
                sample.pct_ms(0.99) / sample.pct_ms(0.5),
                sample.server_cpu * 1000.0 / sample.ok.max(1) as f64,
                sample.worker_cpu * 1000.0 / sample.ok.max(1) as f64,
                sample.gen_cpu_ms_per_unit(),
                sample.error_count(),
                sample.other_cores()
            );
            for (k, n) in &sample.errors {
                println!(
                    "      error {k}: {n}  e.g. {}",
                    sample.examples.get(k).map_or("", String::as_str)
                );
            }
            self.open_loop.push(OpenLoopRow {
                offered: rate,
                max,
                sample,
            });
        }
    }

    /// Scenario 1's maximum right now: a closed loop of a fifth of the window (at least 3 s,
    /// after a 1 s warm-up), shared placement.
    fn calibrate(
        &mut self,
        rt: &tokio::runtime::Runtime,
        target: &Arc<Target>,
        server: &Server,
        median_max: f64,
    ) -> Result<f64, String> {
        let t = Timing {
            warm: Duration::from_secs(1),
            window: (self.s.t.window / 5).max(Duration::from_secs(3)),
        };
        let units =
            ((t.warm + t.window).as_secs_f64() * median_max * 1.5) as usize + self.s.conns * 4;
        let supply = Arc::new(target.supply(Kind::CcJwt, units, self.s.nproc)?);
        let sample = on_generator_cores(Placement::Shared, self.s.nproc, || {
            rt.block_on(scenarios::closed_loop(
                target.clone(),
                Kind::CcJwt,
                supply,
                self.s.conns,
                t,
                server,
            ))
        });
        if sample.starved || sample.error_count() > 0 || sample.ok == 0 {
            return Err(format!(
                "{} tokens/s, {} errors{}",
                sample.rate,
                sample.error_count(),
                if sample.starved {
                    ", ran out of assertions"
                } else {
                    ""
                }
            ));
        }
        println!(
            "  calibration: scenario 1 at {:.0} tokens/s just now (its median above: {median_max:.0}/s)",
            sample.rate
        );
        Ok(sample.rate)
    }
}

// ---------------------------------------------------------------------------------------------
// Soak

fn soak_main() -> u64 {
    let machine = Machine::describe();
    print_machine(&machine);
    if let Err(e) = check_binary() {
        eprintln!("ERROR: {e}");
        return 1;
    }
    let total = Duration::from_secs_f64(env_f64("STRONGROOM_LOAD_SOAK_SECS", 600.0));
    let every = Duration::from_secs_f64(env_f64("STRONGROOM_LOAD_SOAK_EVERY", 60.0)).min(total);
    let conns = env_usize("STRONGROOM_LOAD_CONNS", 32);
    println!(
        "soak:     scenario 1 (client_credentials, private_key_jwt, PS256) for {:.0} s, {conns} \
         connections, shared placement; RSS every {:.0} s",
        total.as_secs_f64(),
        every.as_secs_f64()
    );
    println!(
        "          assertions are signed during the run by one producer thread of the generator \
         (the rate below is bounded by it; memory is the point)"
    );
    let run = || -> Result<u64, String> {
        let key = Arc::new(ClientKey::generate()?);
        let mtls = MtlsIdentity::generate()?;
        let inst = Instance::create("PS256")?;
        std::fs::write(inst.path().join("client-ca.pem"), &mtls.ca_pem)
            .map_err(|e| e.to_string())?;
        let nproc = machine.nproc;
        let server = Server::start(&inst, Placement::Shared.server_options(nproc, 0))?;
        let clients = scenarios::register(&inst, &key, &mtls)?;
        let rt = runtime(Placement::Shared, nproc);
        let (target, _) = rt.block_on(Target::prepare(&server, &clients, key, &mtls))?;
        let (points, errors, examples) = rt.block_on(scenarios::soak(
            Arc::new(target),
            conns,
            total,
            every,
            &server,
            |p| {
                println!(
                    "  {:>6.0} s  {:>6.0} tokens/s  server RSS {:>6.1} MiB (peak {:>6.1})  \
                     workers RSS {:>6.1} MiB",
                    p.at_secs,
                    p.rate,
                    p.rss_server_kib as f64 / 1024.0,
                    p.hwm_server_kib as f64 / 1024.0,
                    p.rss_workers_kib as f64 / 1024.0
                );
            },
        ));
        let first = points.first().cloned();
        let last = points.last().cloned();
        if let (Some(f), Some(l)) = (first, last) {
            let growth = l.rss_server_kib as f64 / f.rss_server_kib.max(1) as f64 - 1.0;
            println!(
                "\nserver RSS after the first {:.0} s: {:.1} MiB; at the end ({:.0} s): {:.1} MiB \
                 ({:+.1}%; target within 10%); peak {:.1} MiB; workers {:.1} -> {:.1} MiB",
                f.at_secs,
                f.rss_server_kib as f64 / 1024.0,
                l.at_secs,
                l.rss_server_kib as f64 / 1024.0,
                growth * 100.0,
                l.hwm_server_kib as f64 / 1024.0,
                f.rss_workers_kib as f64 / 1024.0,
                l.rss_workers_kib as f64 / 1024.0
            );
        }
        let n: u64 = errors.values().sum();
        for (k, c) in &errors {
            println!(
                "  error {k}: {c}  e.g. {}",
                examples.get(k).map_or("", String::as_str)
            );
        }
        println!("errors: {n}");
        Ok(n)
    };
    match run() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("ERROR: {e}");
            1
        }
    }
}
