//! The signing pool: how Strongroom keeps the HSM busy without blocking the async runtime.
//!
//! # Threading model
//!
//! PKCS#11 calls block, and a PKCS#11 session may be used by one thread at a time. The pool
//! therefore runs `workers` dedicated OS threads (default: the number of cores). Each worker opens
//! its own logged-in [`TokenSession`] when the pool starts and keeps it, together with its own
//! cache of key handles, for the life of the pool; nothing about a session is ever shared.
//!
//! Callers never touch a session. [`SigningPool::sign`] hashes the message on the caller's
//! thread (SHA-256 is cheap, and only 32 bytes then cross the queue), puts a job on a bounded
//! multi-consumer queue and awaits a one-shot reply. Whichever worker is free takes the job, so a
//! slow operation on one worker never holds up the others. The async runtime only ever waits on
//! the one-shot channel: it never blocks on the HSM.
//!
//! When the queue is full the HSM is already working at capacity, and waiting longer would only
//! grow latency without bound; the caller gets [`Error::Busy`] at once (the HTTP edge turns it into
//! 503 with Retry-After). The queue depth is the only back-pressure knob.
//!
//! A worker whose session or login is dropped by the token recovers by itself (see
//! [`TokenSession`]): it reopens, logs in again, finds the key again and retries once. If that
//! fails too, only that job fails; the worker goes on serving the queue.
//!
//! Dropping the pool closes the queue; workers finish the jobs already queued, close their
//! sessions (or end their processes) and exit. Dropping a pool of threads waits for them to
//! close their sessions (a session closing while the process exits can crash the PKCS#11
//! library); dropping a pool of processes waits for its worker processes to end, up to two
//! seconds (a hung HSM must not keep a server from stopping). [`SigningPool::shutdown`] closes
//! the queue and waits for every worker, of either kind, without a limit.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::keys::KeyId;
use crate::mechanisms::{DecryptAlg, SignAlg, sha256};
use crate::session::TokenSession;
use crate::token::Token;
use crate::worker::{MAX_BATCH, Request, WorkerProcess};

/// Where a worker's PKCS#11 session lives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WorkerMode {
    /// In a thread of this process, sharing this process's PKCS#11 instance.
    #[default]
    Threads,
    /// In a child process with a PKCS#11 instance of its own (see [`crate::worker`]); the
    /// pool's thread for that worker only moves frames over a pipe. `program args…` must speak
    /// the worker protocol on stdin/stdout, as `strongroom-hsm-worker` does.
    Processes { program: PathBuf, args: Vec<String> },
}

/// How many workers, of which kind, and how deep a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Workers, each with its own session. Default: the number of cores.
    pub workers: usize,
    /// Jobs that may wait for a worker before callers get `Busy`. Default: 64 per worker.
    pub queue_depth: usize,
    /// Threads or processes. Default: threads.
    pub mode: WorkerMode,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self::with_workers(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }
}

impl PoolConfig {
    pub fn with_workers(workers: usize) -> Self {
        PoolConfig {
            workers,
            queue_depth: workers.max(1) * 64,
            mode: WorkerMode::Threads,
        }
    }
}

/// Where a job's answer goes: an async caller's one-shot, or a blocked thread's channel.
/// (tokio's `blocking_recv` panics inside a runtime; a std channel may be waited on anywhere.)
enum Reply<T> {
    Async(oneshot::Sender<Result<T>>),
    Blocking(std::sync::mpsc::SyncSender<Result<T>>),
}

impl<T> Reply<T> {
    /// Counts the outcome, then answers (so a caller that reads the stats after its answer sees
    /// its own job counted). A caller that gave up (dropped its future) is not an error.
    fn send(self, result: Result<T>, counters: &Counters) {
        let counter = if result.is_ok() {
            &counters.completed
        } else {
            &counters.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let _ = match self {
            Reply::Async(tx) => tx.send(result).map_err(drop),
            Reply::Blocking(tx) => tx.send(result).map_err(drop),
        };
    }
}

enum Op {
    Sign {
        key: KeyId,
        alg: SignAlg,
        digest: [u8; 32],
        reply: Reply<Vec<u8>>,
    },
    Decrypt {
        key: KeyId,
        alg: DecryptAlg,
        ciphertext: Vec<u8>,
        reply: Reply<Zeroizing<Vec<u8>>>,
    },
}

/// Counts since the pool started, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Jobs answered with a result.
    pub completed: u64,
    /// Jobs answered with an error.
    pub failed: u64,
    /// Calls refused with `Busy` because the queue was full.
    pub busy: u64,
    /// Sessions (thread mode) reopened after the token dropped them, and worker processes
    /// restarted (process mode).
    pub recoveries: u64,
}

#[derive(Debug, Default)]
struct Counters {
    completed: AtomicU64,
    failed: AtomicU64,
    busy: AtomicU64,
    recoveries: AtomicU64,
}

/// Workers with a session each, behind a bounded queue. See the module documentation.
pub struct SigningPool {
    token: Token,
    queue: Option<Sender<Op>>,
    workers: Vec<JoinHandle<()>>,
    config: PoolConfig,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for SigningPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningPool")
            .field("token", &self.token)
            .field("config", &self.config)
            .field("queued", &self.queued())
            .finish()
    }
}

impl SigningPool {
    /// Opens one session per worker (so a bad PIN or a full token fails here, not on the first
    /// request) and starts the workers.
    pub fn start(token: &Token, config: PoolConfig) -> Result<Self> {
        if config.workers == 0 || config.queue_depth == 0 {
            return Err(Error::InvalidInput(
                "a signing pool needs at least one worker and a queue depth of at least one".into(),
            ));
        }
        let (tx, rx) = bounded::<Op>(config.queue_depth);
        let counters = Arc::new(Counters::default());
        let mut workers = Vec::with_capacity(config.workers);
        for n in 0..config.workers {
            let backend: Box<dyn Backend> = match &config.mode {
                WorkerMode::Threads => Box::new(token.session()?),
                WorkerMode::Processes { program, args } => {
                    Box::new(Respawning::start(token, program.clone(), args.clone())?)
                }
            };
            let rx = rx.clone();
            let counters = counters.clone();
            let handle = std::thread::Builder::new()
                .name(format!("hsm-worker-{n}"))
                .spawn(move || work(backend, rx, &counters))
                .map_err(|e| Error::Worker(format!("cannot start thread: {e}")))?;
            workers.push(handle);
        }
        Ok(SigningPool {
            token: token.clone(),
            queue: Some(tx),
            workers,
            config,
            counters,
        })
    }

    /// Counts since the pool started.
    pub fn stats(&self) -> PoolStats {
        let c = &self.counters;
        PoolStats {
            completed: c.completed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            busy: c.busy.load(Ordering::Relaxed),
            recoveries: c.recoveries.load(Ordering::Relaxed),
        }
    }

    /// Closes the queue, lets the workers finish what is queued, and waits for them (and, in
    /// process mode, for their processes) to end. Blocks: call it outside async code.
    pub fn shutdown(mut self) {
        self.queue = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }

    pub fn token(&self) -> &Token {
        &self.token
    }

    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Jobs waiting for a worker right now.
    pub fn queued(&self) -> usize {
        self.queue.as_ref().map_or(0, Sender::len)
    }

    /// The queue is full (or closed): a job submitted now would get `Busy` (or `PoolClosed`).
    /// A hint for shedding load before doing work that leads to a signature; only the
    /// submission itself decides.
    pub fn is_full(&self) -> bool {
        self.queue.as_ref().is_none_or(Sender::is_full)
    }

    fn submit(&self, op: Op) -> Result<()> {
        let queue = self.queue.as_ref().ok_or(Error::PoolClosed)?;
        match queue.try_send(op) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.counters.busy.fetch_add(1, Ordering::Relaxed);
                Err(Error::Busy)
            }
            Err(TrySendError::Disconnected(_)) => Err(Error::PoolClosed),
        }
    }

    fn sign_op(
        &self,
        key: &KeyId,
        alg: SignAlg,
        message: &[u8],
        reply: Reply<Vec<u8>>,
    ) -> Result<()> {
        self.token.check_sign(alg)?;
        self.submit(Op::Sign {
            key: key.clone(),
            alg,
            digest: sha256(message),
            reply,
        })
    }

    fn decrypt_op(
        &self,
        key: &KeyId,
        alg: DecryptAlg,
        ciphertext: &[u8],
        reply: Reply<Zeroizing<Vec<u8>>>,
    ) -> Result<()> {
        self.token.check_decrypt(alg)?;
        self.submit(Op::Decrypt {
            key: key.clone(),
            alg,
            ciphertext: ciphertext.to_vec(),
            reply,
        })
    }

    /// Signs `message` with key `key`. Returns when a worker has the HSM's answer; never blocks
    /// the runtime. `Busy` at once if the queue is full.
    pub async fn sign(&self, key: &KeyId, alg: SignAlg, message: &[u8]) -> Result<Vec<u8>> {
        let (tx, rx) = oneshot::channel();
        self.sign_op(key, alg, message, Reply::Async(tx))?;
        rx.await.map_err(|_| Error::PoolClosed)?
    }

    /// As [`SigningPool::sign`], blocking the calling thread: for synchronous callers such as a
    /// TLS handshake signer. Safe to call from any thread, inside an async runtime too (where it
    /// blocks that runtime thread: wrap it in `tokio::task::block_in_place` on a multi-thread
    /// runtime).
    pub fn sign_blocking(&self, key: &KeyId, alg: SignAlg, message: &[u8]) -> Result<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.sign_op(key, alg, message, Reply::Blocking(tx))?;
        rx.recv().map_err(|_| Error::PoolClosed)?
    }

    /// Decrypts a JWE encrypted key with key `key` inside the HSM. The plaintext is zeroized
    /// when dropped.
    pub async fn decrypt(
        &self,
        key: &KeyId,
        alg: DecryptAlg,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let (tx, rx) = oneshot::channel();
        self.decrypt_op(key, alg, ciphertext, Reply::Async(tx))?;
        rx.await.map_err(|_| Error::PoolClosed)?
    }

    /// As [`SigningPool::decrypt`], blocking the calling thread (see [`SigningPool::sign_blocking`]).
    pub fn decrypt_blocking(
        &self,
        key: &KeyId,
        alg: DecryptAlg,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.decrypt_op(key, alg, ciphertext, Reply::Blocking(tx))?;
        rx.recv().map_err(|_| Error::PoolClosed)?
    }
}

impl Drop for SigningPool {
    fn drop(&mut self) {
        // Closing the queue ends each worker's loop once the queued jobs are done.
        self.queue = None;
        // Worker threads close PKCS#11 sessions of this process on their way out. Left to do it
        // on their own, one may still be inside the library when the process exits and tears
        // it down: SoftHSM2 then crashes (a test process that had passed died of SIGSEGV in
        // CI). So a pool of threads waits for them; they need nothing from any async runtime,
        // so this cannot deadlock one.
        //
        // The threads of worker processes sign nothing here, but each holds a clone of the
        // token, and whichever thread drops the last clone closes the token's own session:
        // a server that stopped on SIGTERM died of SIGSEGV when that was a worker's thread,
        // still reaping its process while the main thread ran the library's teardown at exit.
        // So they are waited for too, while this pool's own clone keeps theirs from being the
        // last; but only for so long, since a worker process that hangs (an HSM that does not
        // answer) must not keep the server from stopping.
        let deadline = match self.config.mode {
            WorkerMode::Threads => None,
            WorkerMode::Processes { .. } => Some(Instant::now() + PROCESS_REAP_WAIT),
        };
        for w in self.workers.drain(..) {
            if let Some(deadline) = deadline {
                while !w.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(2));
                }
                if !w.is_finished() {
                    tracing::warn!(
                        "an HSM worker process did not end within {PROCESS_REAP_WAIT:?}; \
                         not waiting for it"
                    );
                    continue;
                }
            }
            let _ = w.join();
        }
    }
}

/// How long dropping a pool of worker processes waits for them to end (a worker process that
/// does not end after its pipe closes is killed after half a second: `worker.rs`).
const PROCESS_REAP_WAIT: Duration = Duration::from_secs(2);

/// What a worker thread drives: a session of its own, or a worker process.
trait Backend: Send {
    /// Sessions reopened or processes restarted so far.
    fn recoveries(&self) -> u64;
    /// How many queued jobs to take at once (1: no batching).
    fn batch(&self) -> usize;
    /// Runs the jobs and answers each, counting the outcomes.
    fn run(&mut self, ops: Vec<Op>, counters: &Counters);
}

impl Backend for TokenSession {
    fn recoveries(&self) -> u64 {
        TokenSession::recoveries(self)
    }

    fn batch(&self) -> usize {
        1
    }

    fn run(&mut self, ops: Vec<Op>, counters: &Counters) {
        for op in ops {
            match op {
                Op::Sign {
                    key,
                    alg,
                    digest,
                    reply,
                } => reply.send(self.sign_digest(&key, alg, &digest), counters),
                Op::Decrypt {
                    key,
                    alg,
                    ciphertext,
                    reply,
                } => reply.send(self.decrypt(&key, alg, &ciphertext), counters),
            }
        }
    }
}

/// A worker process that is started again if it dies. The jobs in flight when it died fail;
/// the next jobs get a fresh process.
struct Respawning {
    token: Token,
    program: PathBuf,
    args: Vec<String>,
    process: Option<WorkerProcess>,
    restarts: u64,
}

impl Respawning {
    fn start(token: &Token, program: PathBuf, args: Vec<String>) -> Result<Self> {
        let mut r = Respawning {
            token: token.clone(),
            program,
            args,
            process: None,
            restarts: 0,
        };
        r.process()?;
        Ok(r)
    }

    fn process(&mut self) -> Result<&mut WorkerProcess> {
        if self.process.as_mut().is_some_and(|p| p.has_exited()) {
            tracing::warn!("HSM worker process exited; starting another");
            self.process = None;
            self.restarts += 1;
        }
        if self.process.is_none() {
            let t = &self.token;
            if t.pin().was_refused() {
                return Err(Error::BadPin {
                    rv: crate::error::RvError::PinIncorrect,
                });
            }
            let spawned =
                WorkerProcess::spawn(&self.program, &self.args, t.module(), t.label(), t.pin());
            if let Err(Error::BadPin { .. }) = &spawned {
                t.pin().mark_refused();
            }
            self.process = Some(spawned?);
        }
        self.process.as_mut().ok_or(Error::PoolClosed)
    }
}

impl Backend for Respawning {
    fn recoveries(&self) -> u64 {
        self.restarts
    }

    fn batch(&self) -> usize {
        MAX_BATCH
    }

    fn run(&mut self, ops: Vec<Op>, counters: &Counters) {
        let requests: Vec<Request<'_>> = ops
            .iter()
            .map(|op| match op {
                Op::Sign {
                    key, alg, digest, ..
                } => Request::Sign {
                    key,
                    alg: *alg,
                    digest,
                },
                Op::Decrypt {
                    key,
                    alg,
                    ciphertext,
                    ..
                } => Request::Decrypt {
                    key,
                    alg: *alg,
                    ciphertext,
                },
            })
            .collect();
        let answers = match self.process() {
            Ok(p) => p.call_batch(&requests),
            Err(e) => {
                let msg = e.to_string();
                requests
                    .iter()
                    .map(|_| Err(Error::Worker(msg.clone())))
                    .collect()
            }
        };
        drop(requests);
        // Only a broken pipe or a misbehaving child retires the process; what the token refused
        // (a bad ciphertext, a missing key) is an answer like any other, and must cost no more
        // time than a success, or a client could time the difference.
        let broken = answers.iter().any(|a| matches!(a, Err(Error::Worker(_))));
        for (op, result) in ops.into_iter().zip(answers) {
            match op {
                Op::Sign { reply, .. } => reply.send(result.map(|sig| sig.to_vec()), counters),
                Op::Decrypt { reply, .. } => reply.send(result, counters),
            }
        }
        if broken && self.process.take().is_some() {
            // Dropped after the replies went out: reaping a child may take a moment.
            self.restarts += 1;
        }
    }
}

fn work(mut backend: Box<dyn Backend>, jobs: Receiver<Op>, counters: &Counters) {
    let mut recoveries = 0;
    let batch = backend.batch();
    while let Ok(first) = jobs.recv() {
        let mut ops = vec![first];
        while ops.len() < batch {
            match jobs.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        backend.run(ops, counters);
        let now = backend.recoveries();
        if now != recoveries {
            counters
                .recoveries
                .fetch_add(now - recoveries, Ordering::Relaxed);
            recoveries = now;
        }
    }
}
