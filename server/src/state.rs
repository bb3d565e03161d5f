//! What every handler shares.

use std::sync::Arc;

use strongroom_keystore::KeyStore;

use crate::client_auth::ClientCaBundle;
use crate::store::Store;

#[derive(Debug)]
pub struct AppState {
    /// `https://host[:port]`, no trailing slash: the `iss` of everything we sign.
    pub issuer: String,
    /// The mTLS listener's base URL (RFC 8705 mtls_endpoint_aliases).
    pub mtls_base_url: String,
    pub keystore: Arc<KeyStore>,
    pub store: Store,
    /// CAs trusted for tls_client_auth, if any.
    pub client_ca: Option<ClientCaBundle>,
    pub access_token_lifetime: i64,
    pub clock_skew: i64,
}
