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
    /// Start a rotation: a new key is made in the HSM and published (by every running instance
    /// within keys.refresh_interval_seconds), and signs once every client can have seen it; the
    /// current key retires when its tokens have expired. A new request-object decryption key
    /// decrypts as soon as it is published.
    Rotate {
        /// id_token, access_token, request_object_decryption, tls_server or audit.
        #[arg(long)]
        purpose: String,
        /// The current key is compromised: withdraw it at once and sign with the new key at once,
        /// skipping the overlap. Says what that breaks.
        #[arg(long)]
        emergency: bool,
        /// Rotate even though the new key's algorithm (keys.algorithms) differs from the current
        /// key's and clients or APIs registered the current one: they get server_error from the
        /// moment the new key signs.
        #[arg(long)]
        force: bool,
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
    /// Print a certificate signing request (PEM) for a TLS key, signed in the HSM.
    Csr {
        kid: String,
        /// DNS names (or IP addresses) the certificate is for; the first is also the subject CN.
        #[arg(long = "name", required = true)]
        names: Vec<String>,
    },
    /// Install a CA-issued chain (PEM file, leaf first) for a TLS key; a key waiting for its
    /// certificate becomes active.
    SetCert {
        kid: String,
        #[arg(long)]
        chain: std::path::PathBuf,
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
        KeysCommand::Rotate {
            purpose,
            emergency,
            force,
        } => {
            let purpose = KeyPurpose::parse(&purpose).map_err(|e| e.to_string())?;
            let store = crate::store::Store::open(&config.database_url)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(change) = alg_change(&ks, &store, purpose).await? {
                if !(force || emergency) {
                    return Err(format!(
                        "{change}. Unset it in those registrations first, or pass --force"
                    ));
                }
                println!("WARNING: {change}");
            }
            let r = ks
                .rotate(purpose, emergency)
                .await
                .map_err(|e| e.to_string())?;
            // Each running instance sees the new key at its next read of the key table.
            let refresh = config.keys.refresh_interval_seconds.max(1);
            let (verb, ends) = if purpose == KeyPurpose::RequestObjectDecryption {
                (
                    "decrypts at once; the key for JWEs without a kid from",
                    "stops being that",
                )
            } else {
                ("signs from", "stops signing")
            };
            println!(
                "new {} key {} ({}), in every running instance's JWKS within {refresh} s, {verb} {}",
                purpose,
                r.new_key.kid,
                r.new_key.alg,
                when(r.new_key.activates_at)
            );
            // After an emergency the previous key is already withdrawn: the consequences say so.
            if let Some(prev) = r.previous.as_ref().filter(|_| !emergency) {
                let set = ks.snapshot();
                let at = ks.clock().now().max(r.new_key.activates_at);
                let until = set
                    .get(&prev.kid)
                    .and_then(|k| set.status(k, at).unpublished_at);
                if let Some(until) = until {
                    println!(
                        "{} {ends} then and stays published until {}",
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
        KeysCommand::Csr { kid, names } => {
            print!(
                "{}",
                ks.certificate_request(&kid, &names)
                    .await
                    .map_err(|e| e.to_string())?
            );
            Ok(())
        }
        KeysCommand::SetCert { kid, chain } => {
            let pem = std::fs::read_to_string(&chain)
                .map_err(|e| format!("cannot read {}: {e}", chain.display()))?;
            let k = ks
                .install_certificate(&kid, &pem)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "certificate installed for {}; it serves TLS from {}",
                k.kid,
                when(k.activates_at)
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

/// When the next `purpose` key (ID-token or access-token) is made with another algorithm than
/// the one that signs now, and registrations name the current one (a client's
/// `id_token_signed_response_alg`, an API's `signing_alg`): what breaks, in words. Keys are per
/// purpose, so those would get `server_error` once the new key signs. `None` when nothing does.
pub async fn alg_change(
    ks: &KeyStore,
    store: &crate::store::Store,
    purpose: KeyPurpose,
) -> Result<Option<String>, String> {
    let now = ks.clock().now();
    let current = ks.snapshot().active(purpose, now).map(|k| k.alg);
    let (Some(current), Some(next)) = (current, ks.new_key_alg(purpose)) else {
        return Ok(None);
    };
    if current == next {
        return Ok(None);
    }
    let current = current.as_str();
    let named: Vec<String> = match purpose {
        KeyPurpose::IdToken => store
            .list_clients()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|c| c.id_token_signed_response_alg.as_deref() == Some(current))
            .map(|c| format!("client {}", c.client_id))
            .collect(),
        KeyPurpose::AccessToken => store
            .list_resource_servers()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|a| a.signing_alg.as_deref() == Some(current))
            .map(|a| format!("API {}", a.identifier))
            .collect(),
        _ => Vec::new(),
    };
    if named.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "the next {purpose} key is {next} (keys.algorithms), the current one {current}, which {} \
         registered: they get server_error from the moment the new key signs",
        named.join(", ")
    )))
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
            if k.activates_at == strongroom_keystore::AWAITING_CERTIFICATE {
                "awaiting certificate".to_string()
            } else {
                when(k.activates_at)
            },
            status
                .unpublished_at
                .map(when)
                .unwrap_or_else(|| "-".into()),
            if k.compromised { "  COMPROMISED" } else { "" }
        );
    }
    Ok(())
}
