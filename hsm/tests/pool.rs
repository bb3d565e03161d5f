//! The signing pool against a real SoftHSM2 token: concurrency, back-pressure and the async API.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use p256::ecdsa::signature::Verifier as _;
use rsa::{BigUint, Oaep, Pss, RsaPublicKey};
use sha2::{Digest, Sha256};
use strongroom_hsm::*;

fn rsa_public(token: &Token, id: &KeyId) -> RsaPublicKey {
    let PublicKey::Rsa { n, e } = token.public_key(id).unwrap() else {
        panic!("not RSA")
    };
    RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e)).unwrap()
}

fn ec_public(token: &Token, id: &KeyId) -> p256::ecdsa::VerifyingKey {
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&token.public_key(id).unwrap().ec_point().unwrap())
        .unwrap()
}

#[test]
fn eight_threads_times_500_signatures_all_verify() {
    let t = &common::fixture().token;
    let rsa_id = common::unique_id("pool-rsa");
    let ec_id = common::unique_id("pool-ec");
    t.generate(&rsa_id, KeySpec::Rsa2048, KeyUsage::Sign)
        .unwrap();
    t.generate(&ec_id, KeySpec::EcP256, KeyUsage::Sign).unwrap();
    let rsa_pk = rsa_public(t, &rsa_id);
    let ec_pk = ec_public(t, &ec_id);
    let pool = Arc::new(
        SigningPool::start(
            t,
            PoolConfig {
                workers: 2,
                queue_depth: 64,
                mode: WorkerMode::Threads,
            },
        )
        .unwrap(),
    );

    let threads: Vec<_> = (0..8)
        .map(|n| {
            let pool = pool.clone();
            let (rsa_id, ec_id) = (rsa_id.clone(), ec_id.clone());
            std::thread::spawn(move || {
                let mut out = Vec::with_capacity(500);
                for i in 0..500 {
                    let msg = format!("thread {n} message {i}").into_bytes();
                    // Even threads sign PS256 every 10th time, the rest ES256: both kinds interleave.
                    let (id, alg) = if i % 10 == n % 10 {
                        (&rsa_id, SignAlg::Ps256)
                    } else {
                        (&ec_id, SignAlg::Es256)
                    };
                    let sig = loop {
                        match pool.sign_blocking(id, alg, &msg) {
                            Err(Error::Busy) => std::thread::yield_now(),
                            other => break other.unwrap(),
                        }
                    };
                    out.push((alg, msg, sig));
                }
                out
            })
        })
        .collect();
    let mut verified = 0;
    for th in threads {
        for (alg, msg, sig) in th.join().unwrap() {
            match alg {
                SignAlg::Ps256 => rsa_pk
                    .verify(Pss::new::<Sha256>(), &Sha256::digest(&msg), &sig)
                    .unwrap(),
                _ => ec_pk
                    .verify(&msg, &p256::ecdsa::Signature::from_slice(&sig).unwrap())
                    .unwrap(),
            }
            verified += 1;
        }
    }
    assert_eq!(verified, 4000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_callers_share_the_pool_and_decrypt_works() {
    let t = &common::fixture().token;
    let ec_id = common::unique_id("async-ec");
    let jwe_id = common::unique_id("async-jwe");
    t.generate(&ec_id, KeySpec::EcP256, KeyUsage::Sign).unwrap();
    t.generate(&jwe_id, KeySpec::Rsa2048, KeyUsage::Decrypt)
        .unwrap();
    let vk = ec_public(t, &ec_id);
    let pool = Arc::new(SigningPool::start(t, PoolConfig::with_workers(2)).unwrap());

    let tasks: Vec<_> = (0..64)
        .map(|n| {
            let pool = pool.clone();
            let id = ec_id.clone();
            tokio::spawn(async move {
                let msg = format!("caller {n}");
                let sig = pool
                    .sign(&id, SignAlg::Es256, msg.as_bytes())
                    .await
                    .unwrap();
                (msg, sig)
            })
        })
        .collect();
    for task in tasks {
        let (msg, sig) = task.await.unwrap();
        vk.verify(
            msg.as_bytes(),
            &p256::ecdsa::Signature::from_slice(&sig).unwrap(),
        )
        .unwrap();
    }

    let cek = [7u8; 16];
    let ct = rsa_public(t, &jwe_id)
        .encrypt(&mut rand::thread_rng(), Oaep::new::<sha1::Sha1>(), &cek)
        .unwrap();
    let plain = pool
        .decrypt(&jwe_id, DecryptAlg::RsaOaep, &ct)
        .await
        .unwrap();
    assert_eq!(plain.as_slice(), &cek);
    // Errors come back through the pool unchanged.
    let missing = KeyId::new("no-such-key").unwrap();
    assert!(matches!(
        pool.sign(&missing, SignAlg::Es256, b"x").await,
        Err(Error::KeyNotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_busy_at_once_and_the_pool_goes_on() {
    let t = &common::fixture().token;
    let id = common::unique_id("busy");
    t.generate(&id, KeySpec::Rsa2048, KeyUsage::Sign).unwrap();
    let pool = SigningPool::start(
        t,
        PoolConfig {
            workers: 1,
            queue_depth: 1,
            mode: WorkerMode::Threads,
        },
    )
    .unwrap();

    // 100 requests submitted in one pass: one is being signed, one waits, the rest cannot queue.
    let results =
        futures::future::join_all((0..100).map(|_| pool.sign(&id, SignAlg::Ps256, b"m"))).await;
    let busy = results
        .iter()
        .filter(|r| matches!(r, Err(Error::Busy)))
        .count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(
        busy >= 90,
        "expected most requests refused as Busy, got {busy}"
    );
    assert!(ok >= 1, "the queued requests still complete");
    assert_eq!(ok + busy, 100, "no other outcome: {results:?}");

    // Once the load drops, the pool serves again.
    assert!(pool.sign(&id, SignAlg::Ps256, b"after").await.is_ok());
    assert_eq!(pool.queued(), 0);
    let stats = pool.stats();
    assert_eq!(stats.busy as usize, busy);
    assert_eq!(stats.completed as usize, ok + 1);
    assert_eq!(stats.failed, 0);
}

#[test]
fn pool_refuses_an_empty_configuration() {
    let t = &common::fixture().token;
    assert!(matches!(
        SigningPool::start(
            t,
            PoolConfig {
                workers: 0,
                queue_depth: 1,
                mode: WorkerMode::Threads
            }
        ),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        SigningPool::start(
            t,
            PoolConfig {
                workers: 1,
                queue_depth: 0,
                mode: WorkerMode::Threads
            }
        ),
        Err(Error::InvalidInput(_))
    ));
}

fn process_mode() -> WorkerMode {
    WorkerMode::Processes {
        program: env!("CARGO_BIN_EXE_strongroom-hsm-worker").into(),
        args: vec![],
    }
}

/// Live worker processes that are children of this test process (zombies, killed but not yet
/// reaped by their worker thread, are not counted).
fn worker_children() -> Vec<i32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...
            let after_comm = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
            let mut fields = after_comm.split_whitespace();
            let (state, ppid) = (fields.next(), fields.next());
            stat.contains("(strongroom-hsm-") && state != Some("Z") && ppid == Some(me.as_str())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_sign_decrypt_and_are_replaced_when_they_die() {
    let t = &common::fixture().token;
    let ec_id = common::unique_id("proc-ec");
    let rsa_id = common::unique_id("proc-rsa");
    let jwe_id = common::unique_id("proc-jwe");
    t.generate(&ec_id, KeySpec::EcP256, KeyUsage::Sign).unwrap();
    t.generate(&rsa_id, KeySpec::Rsa2048, KeyUsage::Sign)
        .unwrap();
    t.generate(&jwe_id, KeySpec::Rsa2048, KeyUsage::Decrypt)
        .unwrap();
    let vk = ec_public(t, &ec_id);
    let rsa_pk = rsa_public(t, &rsa_id);
    let config = PoolConfig {
        mode: process_mode(),
        ..PoolConfig::with_workers(2)
    };
    let pool = Arc::new(SigningPool::start(t, config).unwrap());
    assert_eq!(worker_children().len(), 2);

    let tasks: Vec<_> = (0..64)
        .map(|n| {
            let (pool, ec_id, rsa_id) = (pool.clone(), ec_id.clone(), rsa_id.clone());
            tokio::spawn(async move {
                let msg = format!("process caller {n}");
                let alg = if n % 4 == 0 {
                    SignAlg::Ps256
                } else {
                    SignAlg::Es256
                };
                let id = if alg == SignAlg::Ps256 {
                    &rsa_id
                } else {
                    &ec_id
                };
                (
                    alg,
                    msg.clone(),
                    pool.sign(id, alg, msg.as_bytes()).await.unwrap(),
                )
            })
        })
        .collect();
    for task in tasks {
        let (alg, msg, sig) = task.await.unwrap();
        match alg {
            SignAlg::Ps256 => rsa_pk
                .verify(Pss::new::<Sha256>(), &Sha256::digest(msg.as_bytes()), &sig)
                .unwrap(),
            _ => vk
                .verify(
                    msg.as_bytes(),
                    &p256::ecdsa::Signature::from_slice(&sig).unwrap(),
                )
                .unwrap(),
        }
    }

    // A key generated after the workers started (a rotation) is found by every worker process.
    let late = common::unique_id("proc-late");
    t.generate(&late, KeySpec::EcP256, KeyUsage::Sign).unwrap();
    let late_vk = ec_public(t, &late);
    for i in 0..4 {
        let msg = format!("late key {i}");
        let sig = pool
            .sign(&late, SignAlg::Es256, msg.as_bytes())
            .await
            .unwrap();
        late_vk
            .verify(
                msg.as_bytes(),
                &p256::ecdsa::Signature::from_slice(&sig).unwrap(),
            )
            .unwrap();
    }

    let cek = [9u8; 32];
    let ct = rsa_public(t, &jwe_id)
        .encrypt(&mut rand::thread_rng(), Oaep::new::<sha1::Sha1>(), &cek)
        .unwrap();
    assert_eq!(
        pool.decrypt(&jwe_id, DecryptAlg::RsaOaep, &ct)
            .await
            .unwrap()
            .as_slice(),
        &cek
    );
    let missing = KeyId::new("no-such-key").unwrap();
    assert!(matches!(
        pool.sign(&missing, SignAlg::Es256, b"x").await,
        Err(Error::KeyNotFound { .. })
    ));
    assert!(matches!(
        pool.decrypt(&jwe_id, DecryptAlg::RsaOaep, &[1; 3]).await,
        Err(Error::InvalidInput(_))
    ));

    // A ciphertext the token refuses (right length, not an OAEP block): an answer, not a fault.
    // The worker process is not restarted, so a client cannot make the pool churn or time it.
    let before = worker_children();
    for _ in 0..5 {
        let err = pool
            .decrypt(&jwe_id, DecryptAlg::RsaOaep, &[0x42; 256])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Remote(_)), "{err:?}");
    }
    assert_eq!(pool.stats().recoveries, 0);
    let mut after = worker_children();
    let mut before_sorted = before.clone();
    before_sorted.sort();
    after.sort();
    assert_eq!(after, before_sorted, "no worker process was replaced");

    // Kill every worker process: each next job either fails with a Worker error (it was sent to
    // the dead process) or succeeds on a new one; within a few jobs all succeed again.
    for pid in worker_children() {
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
    }
    let mut failures = 0;
    let mut successes = 0;
    for i in 0..10 {
        let msg = format!("after kill {i}");
        match pool.sign(&ec_id, SignAlg::Es256, msg.as_bytes()).await {
            Ok(sig) => {
                vk.verify(
                    msg.as_bytes(),
                    &p256::ecdsa::Signature::from_slice(&sig).unwrap(),
                )
                .unwrap();
                successes += 1;
            }
            Err(Error::Worker(_)) => failures += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        failures <= 2,
        "at most the one job per dead worker fails, got {failures}"
    );
    assert_eq!(successes + failures, 10);
    // A worker notices its dead process when it next gets a job; ten sequential jobs may all go
    // to one worker, so at least one replacement is certain, two are not.
    let live = worker_children().len();
    assert!((1..=2).contains(&live), "{live} live worker processes");
    let stats = pool.stats();
    assert!(stats.recoveries >= 1, "{stats:?}");
    // Whichever worker takes them, new jobs all succeed: a worker replaces a dead process
    // before sending it anything.
    let jobs: Vec<_> = (0..32)
        .map(|i| {
            let (pool, id) = (pool.clone(), ec_id.clone());
            tokio::spawn(async move {
                pool.sign(&id, SignAlg::Es256, format!("later {i}").as_bytes())
                    .await
            })
        })
        .collect();
    for job in jobs {
        job.await.unwrap().unwrap();
    }

    // Shutting the pool down ends and reaps its worker processes.
    let pool = Arc::into_inner(pool).unwrap();
    tokio::task::spawn_blocking(move || pool.shutdown())
        .await
        .unwrap();
    assert!(worker_children().is_empty());
}

/// Dropping a pool of worker processes returns once they have ended: its threads hold clones
/// of the token, and one of them dropping the last clone while the process exits crashed
/// SoftHSM2 (a server stopped by SIGTERM died of SIGSEGV).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_pool_of_processes_waits_for_them() {
    let t = &common::fixture().token;
    let id = common::unique_id("proc-drop");
    t.generate(&id, KeySpec::EcP256, KeyUsage::Sign).unwrap();
    let config = PoolConfig {
        mode: process_mode(),
        ..PoolConfig::with_workers(2)
    };
    let pool = SigningPool::start(t, config).unwrap();
    pool.sign(&id, SignAlg::Es256, b"before the drop")
        .await
        .unwrap();
    assert_eq!(worker_children().len(), 2);
    // A thread takes its name once it first runs: on a busy machine, a moment after the start.
    let named = Instant::now() + Duration::from_secs(10);
    while pool_threads() < 2 && Instant::now() < named {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(pool_threads(), 2);
    drop(pool);
    assert_eq!(pool_threads(), 0, "the pool's threads outlived it");
    assert_eq!(worker_children(), Vec::<i32>::new());
}

/// Threads of this process that belong to a pool (`hsm-worker-N`) and have not ended. A joined
/// thread can still be listed for a moment while the kernel finishes its exit (join returns when
/// the thread's stack is released, before it leaves /proc), flagged PF_EXITING: not counted.
fn pool_threads() -> usize {
    const PF_EXITING: u64 = 0x4;
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // tid (comm) state ppid pgrp session tty_nr tpgid flags ...
            let (head, rest) = stat.rsplit_once(')').unwrap_or((stat, ""));
            let flags: u64 = rest
                .split_whitespace()
                .nth(6)
                .and_then(|f| f.parse().ok())
                .unwrap_or(0);
            head.contains("(hsm-worker-") && flags & PF_EXITING == 0
        })
        .count()
}

#[test]
fn a_worker_process_that_cannot_log_in_fails_the_start() {
    let t = &common::fixture().token;
    let config = PoolConfig {
        mode: WorkerMode::Processes {
            program: "/nonexistent/worker".into(),
            args: vec![],
        },
        ..PoolConfig::with_workers(1)
    };
    assert!(matches!(
        SigningPool::start(t, config),
        Err(Error::Worker(_))
    ));
}

/// rustls and josekit call their signer and decrypter synchronously, from inside async tasks:
/// the blocking calls must work there, even on a single-threaded runtime.
#[tokio::test(flavor = "current_thread")]
async fn blocking_calls_work_inside_an_async_task() {
    let t = &common::fixture().token;
    let ec_id = common::unique_id("blocking-ec");
    let jwe_id = common::unique_id("blocking-jwe");
    t.generate(&ec_id, KeySpec::EcP256, KeyUsage::Sign).unwrap();
    t.generate(&jwe_id, KeySpec::Rsa2048, KeyUsage::Decrypt)
        .unwrap();
    let vk = ec_public(t, &ec_id);
    let pool = SigningPool::start(t, PoolConfig::with_workers(1)).unwrap();
    let sig = pool
        .sign_blocking(&ec_id, SignAlg::Es256, b"in a task")
        .unwrap();
    vk.verify(
        b"in a task",
        &p256::ecdsa::Signature::from_slice(&sig).unwrap(),
    )
    .unwrap();
    let cek = [3u8; 32];
    let ct = rsa_public(t, &jwe_id)
        .encrypt(&mut rand::thread_rng(), Oaep::new::<sha1::Sha1>(), &cek)
        .unwrap();
    assert_eq!(
        pool.decrypt_blocking(&jwe_id, DecryptAlg::RsaOaep, &ct)
            .unwrap()
            .as_slice(),
        &cek
    );
}
