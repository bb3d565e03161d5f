//! What every handler shares.

use std::sync::Arc;

use strongroom_keystore::KeyStore;

#[derive(Debug)]
pub struct AppState {
    /// `https://host[:port]`, no trailing slash: the `iss` of everything we sign.
    pub issuer: String,
    pub keystore: Arc<KeyStore>,
}
