//! Command-line actions for operators. Each prints what it did in words and exits non-zero with
//! a clear message when refused.

pub mod approvals;
pub mod clients;
pub mod hsm;
pub mod keys;
pub mod resource_servers;
pub mod serve;
pub mod users;

/// A Unix time as RFC 3339 (UTC, seconds).
pub use strongroom_keystore::clock::rfc3339 as when;

use strongroom_keystore::KeyPurpose;

use crate::config::Config;
use crate::store::Store;

/// Runs `work` on a single-threaded runtime with the server's database open: the prologue of
/// the actions that read or write it. Errors are the messages the command prints.
fn with_store<F, Fut>(config: &Config, work: F) -> Result<(), String>
where
    F: FnOnce(Store) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let store = Store::open(&config.database_url)
            .await
            .map_err(|e| e.to_string())?;
        work(store).await
    })
}

/// Prints `value` as pretty JSON on standard output.
fn print_json(value: &impl serde::Serialize) -> Result<(), String> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// The algorithm of the `purpose` key that signs now, from the key records in the database (the
/// CLI does not open the HSM for this); `None` before the server has made its keys.
async fn active_alg(
    config: &Config,
    purpose: KeyPurpose,
    now: i64,
) -> Result<Option<String>, String> {
    let keys = strongroom_keystore::Store::open(&config.database_url)
        .await
        .map_err(|e| e.to_string())?;
    let all = keys.all().await.map_err(|e| e.to_string())?;
    Ok(all
        .iter()
        .filter(|k| {
            k.purpose == purpose
                && k.retired_at.is_none()
                && k.destroyed_at.is_none()
                && k.activates_at <= now
        })
        .max_by_key(|k| k.activates_at)
        .map(|k| k.alg.as_str().to_owned()))
}
