//! One file per endpoint. Each handler turns every failure into an [`OAuthError`](crate::error::OAuthError).

pub mod authorize;
pub mod discovery;
pub mod jwks;
pub mod par;
pub mod token;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;

/// Every route the server serves (both listeners serve the same routes).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(discovery::openid_configuration),
        )
        .route("/jwks", get(jwks::jwks))
        .route("/token", post(token::token))
        .route("/par", post(par::par))
        .route("/authorize", get(authorize::authorize))
        .route(
            "/authorize/login",
            get(authorize::login_page).post(authorize::login_submit),
        )
        .route(
            "/authorize/consent",
            get(authorize::consent_page).post(authorize::consent_submit),
        )
        .with_state(state)
}
