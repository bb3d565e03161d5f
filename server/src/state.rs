//! What every handler shares.

use std::sync::Arc;

use strongroom_keystore::KeyStore;

use crate::client_auth::{ClientCaBundle, JwksSource};
use crate::store::Store;

pub struct AppState {
    /// `https://host[:port]`, no trailing slash: the `iss` of everything we sign.
    pub issuer: String,
    /// The mTLS listener's base URL (RFC 8705 mtls_endpoint_aliases).
    pub mtls_base_url: String,
    pub keystore: Arc<KeyStore>,
    pub store: Store,
    /// CAs trusted for tls_client_auth, if any.
    pub client_ca: Option<ClientCaBundle>,
    /// Fetches (and caches) the JWK Sets of clients registered with a `jwks_uri`.
    pub jwks_source: Option<Arc<dyn JwksSource>>,
    /// RFC 9440 proxies whose `Client-Cert` header is believed (see `proxy_cert`).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub lifetimes: Lifetimes,
    /// Registered clients, cached for a few seconds (the token endpoint reads one per request).
    pub clients: crate::client_cache::ClientCache,
    /// Admission control of /token: one permit per request being served.
    pub token_admission: tokio::sync::Semaphore,
    /// Client-assertion jtis seen lately: replays refused before any work.
    pub recent_jtis: crate::recent_jtis::RecentJtis,
    pub clock_skew: i64,
    /// `server.acr_values_supported`: never empty (see `acr.rs`).
    pub acr_values: Vec<String>,
}

/// Lifetimes, in seconds, from `[server]` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub access_token: i64,
    pub id_token: i64,
    pub refresh_token: i64,
    pub authorization_code: i64,
    pub par: i64,
    pub login_session: i64,
    pub interaction: i64,
}

impl AppState {
    /// The management API's identifier: the audience of management access tokens.
    pub fn management_api(&self) -> String {
        format!("{}/api/v2/", self.issuer)
    }

    pub fn now(&self) -> i64 {
        self.keystore.clock().now()
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("issuer", &self.issuer)
            .field("mtls_base_url", &self.mtls_base_url)
            .field("lifetimes", &self.lifetimes)
            .finish_non_exhaustive()
    }
}
