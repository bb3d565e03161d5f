//! The server under load: the real `target/release/strongroom serve` on a fresh SoftHSM2 token
//! and a SQLite file in a temporary directory, its CLI, and what /proc says about its CPU time
//! and memory (the server process and its HSM worker processes, which are its children).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const LABEL: &str = "strongroom-load";
pub const SO_PIN: &str = "load-so-pin-1234";
pub const USER_PIN: &str = "load-user-pin-1234";

/// The `strongroom` binary: `STRONGROOM_BIN`, or `target/release/strongroom` of this workspace
/// (`make bench` builds it first).
pub fn binary() -> PathBuf {
    if let Ok(b) = std::env::var("STRONGROOM_BIN") {
        return PathBuf::from(b);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/strongroom")
}

/// A token and a database in a temporary directory: one per key algorithm. Servers started on
/// it one after the other (placements, the overload configuration) share its keys, clients,
/// user and remembered consent.
#[derive(Debug)]
pub struct Instance {
    pub dir: tempfile::TempDir,
    /// `[keys] algorithms` for access and ID tokens (PS256 or ES256).
    pub token_alg: &'static str,
}

impl Instance {
    pub fn create(token_alg: &'static str) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("strongroom-load-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../softhsm-config/create-token.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(dir.path())
            .arg(LABEL)
            .env("STRONGROOM_SO_PIN", SO_PIN)
            .env("STRONGROOM_HSM_PIN", USER_PIN)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "create-token.sh failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Instance { dir, token_alg })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn softhsm_conf(&self) -> PathBuf {
        self.path().join("softhsm2.conf")
    }

    fn config_path(&self) -> PathBuf {
        self.path().join("strongroom.toml")
    }

    /// Runs the CLI on this instance's configuration.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(binary())
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .env("SOFTHSM2_CONF", self.softhsm_conf())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", binary().display()))?;
        if !out.status.success() {
            return Err(format!(
                "strongroom {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `strongroom clients create --file`: returns the client_id.
    pub fn create_client(&self, name: &str, metadata: &Value) -> Result<String, String> {
        let file = self.path().join(format!("client-{name}.json"));
        std::fs::write(&file, metadata.to_string()).map_err(|e| e.to_string())?;
        let out = self.cli(&["clients", "create", "--file", &file.to_string_lossy()])?;
        let created: Value = serde_json::from_str(out.trim())
            .map_err(|e| format!("clients create printed no JSON ({e}): {out}"))?;
        created["client_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("clients create printed no client_id: {out}"))
    }

    /// `strongroom users create --username U --password-file F`.
    pub fn create_user(&self, username: &str, password: &str) -> Result<(), String> {
        let file = self.path().join("user-password");
        std::fs::write(&file, format!("{password}\n")).map_err(|e| e.to_string())?;
        self.cli(&[
            "users",
            "create",
            "--username",
            username,
            "--password-file",
            &file.to_string_lossy(),
        ])
        .map(|_| ())
    }
}

/// How one server is started.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `hsm.pool_workers`: the number of cores the server may use.
    pub pool_workers: usize,
    /// `hsm.queue_depth` (0: the server's default, 64 per worker).
    pub queue_depth: usize,
    /// Run under `taskset -c CPUS` (the server and the worker processes it starts).
    pub cpus: Option<String>,
}

#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    pub pid: u32,
    pub main: SocketAddr,
    pub mtls: SocketAddr,
    pub issuer: String,
    pub options: ServerOptions,
    log: PathBuf,
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

impl Server {
    pub fn start(inst: &Instance, options: ServerOptions) -> Result<Server, String> {
        let (port, mtls_port) = (free_port()?, free_port()?);
        let issuer = format!("https://localhost:{port}");
        let dir = inst.path();
        let config = format!(
            r#"# written by benches/load.rs
database_url = "sqlite://{db}"
[server]
issuer = "{issuer}"
listen = "127.0.0.1:{port}"
mtls_listen = "127.0.0.1:{mtls_port}"
mtls_base_url = "https://localhost:{mtls_port}"
client_ca_file = "{ca}"
[hsm]
module = "{module}"
token_label = "{LABEL}"
pin_file = "{pin}"
pool_mode = "{mode}"
pool_workers = {workers}
queue_depth = {queue}
[keys]
tls_self_signed_names = ["localhost"]
algorithms = {{ access_token = "{alg}", id_token = "{alg}" }}
"#,
            db = dir.join("strongroom.db").display(),
            ca = dir.join("client-ca.pem").display(),
            module = crate::common::module_path().display(),
            pin = dir.join("user-pin").display(),
            workers = options.pool_workers,
            mode =
                std::env::var("STRONGROOM_LOAD_POOL_MODE").unwrap_or_else(|_| "processes".into()),
            queue = options.queue_depth,
            alg = inst.token_alg,
        );
        std::fs::write(inst.config_path(), config).map_err(|e| e.to_string())?;
        let log = dir.join("server.log");
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut cmd = match &options.cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        cmd.arg("--config")
            .arg(inst.config_path())
            .arg("serve")
            .env("SOFTHSM2_CONF", inst.softhsm_conf())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary().display()))?;
        let pid = child.id();
        let stdout = child.stdout.take();
        // The server prints one line once it listens; its first start makes every key.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            if let Some(out) = stdout {
                let mut reader = BufReader::new(out);
                let _ = reader.read_line(&mut line);
                let _ = tx.send(line);
                // Keep draining so the server never blocks on a full pipe.
                let mut sink = String::new();
                while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                    sink.clear();
                }
            }
        });
        let mut server = Server {
            child: Some(child),
            pid,
            main: SocketAddr::from(([127, 0, 0, 1], port)),
            mtls: SocketAddr::from(([127, 0, 0, 1], mtls_port)),
            issuer,
            options,
            log,
        };
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) if line.contains("serving") => Ok(server),
            Ok(line) => {
                server.stop();
                Err(format!(
                    "the server did not start ({:?}); its log:\n{}",
                    line.trim(),
                    server.log_tail()
                ))
            }
            Err(_) => {
                server.stop();
                Err(format!(
                    "the server did not start in 120 s; its log:\n{}",
                    server.log_tail()
                ))
            }
        }
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Whether the server process still runs.
    pub fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGTERM, then SIGKILL after 10 s; waits for it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        send_signal(self.pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// The HSM worker processes: the server's children.
    pub fn workers(&self) -> Vec<u32> {
        strongroom_testkit::child_processes(self.pid)
    }

    /// CPU time so far, in seconds: (server, workers).
    pub fn cpu(&self) -> (f64, f64) {
        let server = cpu_seconds(self.pid).unwrap_or(0.0);
        let workers = self.workers().iter().filter_map(|&p| cpu_seconds(p)).sum();
        (server, workers)
    }

    /// Resets the peak RSS (VmHWM) of the server and its workers.
    pub fn reset_peak_rss(&self) {
        for pid in std::iter::once(self.pid).chain(self.workers()) {
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
    }

    /// (server, workers summed) of a /proc/PID/status field in KiB: `VmHWM` or `VmRSS`.
    pub fn memory_kib(&self, field: &str) -> (u64, u64) {
        let server = status_kib(self.pid, field).unwrap_or(0);
        let workers = self
            .workers()
            .iter()
            .filter_map(|&p| status_kib(p, field))
            .sum();
        (server, workers)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

#[allow(unsafe_code)]
fn send_signal(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) on the PID of a child this process started and has not yet reaped.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

fn clock_ticks() -> f64 {
    #[allow(unsafe_code)]
    // SAFETY: sysconf reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime of `pid` (every thread), in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// Busy CPU time of the whole machine so far (every core; /proc/stat: all but idle and
/// iowait), in seconds.
pub fn machine_busy_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let v: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user)
    let busy: f64 = v.iter().take(8).sum::<f64>()
        - v.get(3).copied().unwrap_or(0.0)
        - v.get(4).copied().unwrap_or(0.0);
    busy / clock_ticks()
}

/// The CPU time of this process (the generator), in seconds.
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id()).unwrap_or(0.0)
}

/// Moves every thread of process `pid` to `cpus` (a taskset list).
pub fn move_process(pid: u32, cpus: &str) -> Result<(), String> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .output()
        .map_err(|e| format!("taskset: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "taskset -a -p -c {cpus} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `Cpus_allowed_list` of `pid`.
pub fn cpus_allowed(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
