//! `strongroom keys …`: the key life cycle by hand.

use std::sync::Arc;

use strongroom_keystore::hsm::{PoolConfig, SigningPool, Token};
use strongroom_keystore::{KeyPurpose, KeyStore, Store, SystemClock};

use super::when;
use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Every key with its purpose, algorithm and state.
    List {
        /// Also list retired and destroyed keys.
        #[arg(long)]
        all: bool,
    },
    /// Make an active key for every purpose that has none (first start).
    Ensure,
    /// Start a rotation: a new key is made in the HSM and published now, and signs once every
    /// client can have seen it; the current key retires when its tokens have expired.
    Rotate {
        /// id_token, access_token, request_object_decryption, tls_server or audit.
        #[arg(long)]
        purpose: String,
        /// The current key is compromised: withdraw it at once and sign with the new key at once,
        /// skipping the overlap. Says what that breaks.
        #[arg(long)]
        emergency: bool,
    },
    /// Withdraw a pending key (cancelling its rotation) or, with --force, a retiring key.
    Retire {
        kid: String,
        #[arg(long)]
        force: bool,
    },
    /// Destroy a retired key in the HSM (refused while published, and before the grace period
    /// has passed unless --force).
    Destroy {
        kid: String,
        #[arg(long)]
        force: bool,
    },
}

pub fn run(config: &Config, command: KeysCommand) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(run_async(config, command))
}

async fn open(config: &Config) -> Result<KeyStore, String> {
    let token = Token::open(&config.token_config()?).map_err(|e| e.to_string())?;
    // The CLI signs nothing in bulk: one worker thread is enough.
    let pool =
        SigningPool::start(&token, PoolConfig::with_workers(1)).map_err(|e| e.to_string())?;
    let store = Store::open(&config.database_url)
        .await
        .map_err(|e| e.to_string())?;
    let ks_config = config.keystore_config(&token)?;
    KeyStore::open(
        token,
        Arc::new(pool),
        store,
        ks_config,
        Arc::new(SystemClock),
    )
    .await
    .map_err(|e| e.to_string())
}

async fn run_async(config: &Config, command: KeysCommand) -> Result<(), String> {
    let ks = open(config).await?;
    match command {
        KeysCommand::List { all } => list(&ks, all),
        KeysCommand::Ensure => {
            let made = ks
                .ensure_keys(&KeyPurpose::ALL)
                .await
                .map_err(|e| e.to_string())?;
            for k in &made {
                println!("made {} key {} ({})", k.purpose, k.kid, k.alg);
            }
            if made.is_empty() {
                println!("every purpose has an active key");
            }
            Ok(())
        }
        KeysCommand::Rotate { purpose, emergency } => {
            let purpose = KeyPurpose::parse(&purpose).map_err(|e| e.to_string())?;
            let r = ks
                .rotate(purpose, emergency)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "new {} key {} ({}), published now, signs from {}",
                purpose,
                r.new_key.kid,
                r.new_key.alg,
                when(r.new_key.activates_at)
            );
            if let Some(prev) = &r.previous {
                let status = ks
                    .snapshot()
                    .status(prev, ks.clock().now().max(r.new_key.activates_at));
                if let Some(until) = status.unpublished_at {
                    println!(
                        "{} stops signing then and stays published until {}",
                        prev.kid,
                        when(until)
                    );
                }
            }
            for c in &r.consequences {
                println!("EMERGENCY: {c}");
            }
            Ok(())
        }
        KeysCommand::Retire { kid, force } => {
            let k = ks.retire(&kid, force).await.map_err(|e| e.to_string())?;
            println!(
                "{} withdrawn at {}; no longer published",
                k.kid,
                when(k.retired_at.unwrap_or(0))
            );
            Ok(())
        }
        KeysCommand::Destroy { kid, force } => {
            let k = ks.destroy(&kid, force).await.map_err(|e| e.to_string())?;
            println!(
                "{} destroyed in the HSM at {}",
                k.kid,
                when(k.destroyed_at.unwrap_or(0))
            );
            Ok(())
        }
    }
}

fn list(ks: &KeyStore, all: bool) -> Result<(), String> {
    let now = ks.clock().now();
    let set = ks.snapshot();
    println!(
        "{:<36} {:<26} {:<13} {:<9} {:<21} {:<21}",
        "KID", "PURPOSE", "ALG", "STATE", "SIGNS FROM", "UNPUBLISHED"
    );
    for k in set.records() {
        let status = set.status(k, now);
        if !all && !status.state.is_published() {
            continue;
        }
        println!(
            "{:<36} {:<26} {:<13} {:<9} {:<21} {:<21}{}",
            k.kid,
            k.purpose.as_str(),
            k.alg.as_str(),
            status.state.as_str(),
            when(k.activates_at),
            status
                .unpublished_at
                .map(when)
                .unwrap_or_else(|| "-".into()),
            if k.compromised { "  COMPROMISED" } else { "" }
        );
    }
    Ok(())
}
