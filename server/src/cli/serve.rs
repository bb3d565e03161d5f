//! `strongroom serve`: the authorization server.

use std::sync::Arc;

use strongroom_keystore::hsm::{SigningPool, Token};
use strongroom_keystore::tls::{OptionalClientCert, server_config};
use strongroom_keystore::{KeyPurpose, KeyStore, Store as KeyTable, SystemClock};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::state::AppState;
use crate::{endpoints, tls_edge};

pub fn run(config: &Config) -> Result<(), String> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    match config.server.worker_threads {
        0 => {}
        n @ 1..=1024 => {
            builder.worker_threads(n);
        }
        n => return Err(format!("server.worker_threads {n}: at most 1024")),
    }
    let runtime = builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(serve(config))
}

async fn serve(config: &Config) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    // Refused before the HSM is opened: a wrong issuer would be published in every token.
    let (issuer, mtls_base_url) = (config.issuer()?, config.mtls_base_url()?);
    let token = Token::open(&config.token_config()?).map_err(|e| err(&e))?;
    let program = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let pool = SigningPool::start(&token, config.pool_config(program)?).map_err(|e| err(&e))?;
    // One pool for the key table and the server's tables.
    let db = strongroom_keystore::store::connect(&config.database_url)
        .await
        .map_err(|e| err(&e))?;
    let key_table = KeyTable::from_pool(db.clone()).await.map_err(|e| err(&e))?;
    let ks_config = config.keystore_config(&token)?;
    let keystore = KeyStore::open(
        token,
        Arc::new(pool),
        key_table,
        ks_config,
        Arc::new(SystemClock),
    )
    .await
    .map_err(|e| err(&e))?;
    for k in keystore
        .ensure_keys(&KeyPurpose::ALL)
        .await
        .map_err(|e| err(&e))?
    {
        tracing::info!(kid = %k.kid, purpose = %k.purpose, "made the first key of its purpose");
    }
    let resolver = keystore.tls_resolver().await.map_err(|e| err(&e))?;
    let tls = Arc::new(server_config(resolver.clone(), None).map_err(|e| err(&e))?);
    let mtls = Arc::new(
        server_config(resolver, Some(Arc::new(OptionalClientCert::default())))
            .map_err(|e| err(&e))?,
    );

    let keystore = Arc::new(keystore);
    // Refreshes the key table and runs scheduled rotations for as long as the server runs.
    let maintenance = keystore.spawn_maintenance();
    let store = crate::store::Store::from_pool(db)
        .await
        .map_err(|e| err(&e))?;
    // A scheduled rotation makes the next key with keys.algorithms: say now what an algorithm
    // change would break, long before it does.
    for purpose in [KeyPurpose::IdToken, KeyPurpose::AccessToken] {
        if let Some(change) = super::keys::alg_change(&keystore, &store, purpose).await? {
            tracing::warn!(%purpose, "{change}");
        }
    }
    let client_ca = match &config.server.client_ca_file {
        Some(path) => {
            let pem =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let bundle = crate::client_auth::ClientCaBundle::from_pem(&pem)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            tracing::info!(cas = ?bundle.subjects(), "tls_client_auth trusts these CAs");
            Some(bundle)
        }
        None => None,
    };
    let lifetimes = config.lifetimes()?;
    let state = Arc::new(AppState {
        issuer,
        mtls_base_url,
        keystore,
        store,
        client_ca,
        jwks_source: Some(Arc::new(jwks_source(config)?)),
        trusted_proxies: config.server.trusted_proxies.clone(),
        lifetimes,
        clients: Default::default(),
        token_admission: tokio::sync::Semaphore::new(
            config.server.max_concurrent_token_requests.max(1),
        ),
        recent_jtis: Default::default(),
        clock_skew: config.keys.clock_skew_seconds,
        acr_values: config.acr_values()?,
    });
    let purge = spawn_purge(
        state.clone(),
        std::time::Duration::from_secs(config.server.purge_interval_seconds.max(1)),
    );
    let app = endpoints::router(state.clone());
    let listener = TcpListener::bind(&config.server.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
    let mtls_listener = TcpListener::bind(&config.server.mtls_listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.mtls_listen))?;
    let (stop, stopped) = watch::channel(false);
    println!(
        "strongroom: serving {} on {} (mTLS on {})",
        state.issuer,
        listener.local_addr().map_err(|e| err(&e))?,
        mtls_listener.local_addr().map_err(|e| err(&e))?
    );
    let timeouts = config.timeouts()?;
    let main = tokio::spawn(tls_edge::serve(
        listener,
        tls,
        app.clone(),
        timeouts,
        stopped.clone(),
    ));
    let alt = tokio::spawn(tls_edge::serve(mtls_listener, mtls, app, timeouts, stopped));
    shutdown_signal().await;
    let _ = stop.send(true);
    maintenance.abort();
    purge.abort();
    let _ = tokio::join!(main, alt);
    Ok(())
}

/// The jwks_uri fetcher, trusting `server.jwks_uri_ca_file` besides the platform's roots.
fn jwks_source(config: &Config) -> Result<crate::jwks_fetch::HttpJwksSource, String> {
    let extra = match &config.server.jwks_uri_ca_file {
        Some(path) => {
            Some(std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?)
        }
        None => None,
    };
    crate::jwks_fetch::HttpJwksSource::new(extra.as_deref())
        .map_err(|e| format!("server.jwks_uri_ca_file: {e}"))
}

/// Deletes expired PAR requests, codes, assertion jtis and tokens every `interval`. Several
/// instances may all run it: each DELETE is idempotent.
///
/// Codes and refresh tokens are kept one lifetime of an access token past their expiry, so that
/// a late replay is still recognised as a replay (and revokes its grant) rather than being
/// merely unknown. PAR requests are kept one interaction lifetime past theirs: a sign-in started
/// from a request_uri spends it only when it authorizes.
fn spawn_purge(state: Arc<AppState>, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = state.now();
            let cutoff = now - state.lifetimes.access_token;
            match state
                .store
                .purge_expired(cutoff, now - state.lifetimes.interaction)
                .await
            {
                Ok(counts) => tracing::debug!(?counts, "purged expired rows"),
                Err(e) => tracing::warn!(error = %e, "purging expired rows failed; will retry"),
            }
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
