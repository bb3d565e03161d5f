//! One file per endpoint. Each handler turns every failure into an [`OAuthError`](crate::error::OAuthError).

pub mod authorize;
pub mod discovery;
pub mod introspect;
pub mod jwks;
pub mod management;
pub mod par;
pub mod resource_servers;
pub mod revoke;
pub mod token;
pub mod userinfo;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use axum::http::StatusCode;

use crate::error::{ErrorCode, OAuthError};
use crate::proxy_cert;
use crate::state::AppState;

/// Every route the server serves (both listeners serve the same routes).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(discovery::openid_configuration),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(discovery::openid_configuration),
        )
        .route("/jwks", get(jwks::jwks))
        .route("/token", post(token::token))
        .route(
            "/userinfo",
            get(userinfo::userinfo).post(userinfo::userinfo),
        )
        .route("/introspect", post(introspect::introspect))
        .route("/revoke", post(revoke::revoke))
        .route(
            "/api/v2/clients",
            get(management::list)
                .post(management::create)
                .fallback(|| async { management::method_not_allowed("GET, POST") }),
        )
        .route(
            "/api/v2/clients/{client_id}",
            get(management::get_one)
                .patch(management::patch)
                .delete(management::delete)
                .fallback(|| async { management::method_not_allowed("GET, PATCH, DELETE") }),
        )
        .route(
            "/api/v2/resource-servers",
            get(resource_servers::list)
                .post(resource_servers::create)
                .fallback(|| async { management::method_not_allowed("GET, POST") }),
        )
        .route(
            "/api/v2/resource-servers/{identifier}",
            get(resource_servers::get_one)
                .patch(resource_servers::patch)
                .delete(resource_servers::delete)
                .fallback(|| async { management::method_not_allowed("GET, PATCH, DELETE") }),
        )
        .route("/par", post(par::par))
        .route(
            "/authorize",
            get(authorize::authorize).post(authorize::authorize_post),
        )
        .route(
            "/authorize/login",
            get(authorize::login_page).post(authorize::login_submit),
        )
        .route(
            "/authorize/consent",
            get(authorize::consent_page).post(authorize::consent_submit),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Last, so that it wraps every route above (axum layers only what exists when added).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            proxy_cert::client_cert_from_proxy,
        ))
        .layer(axum::middleware::from_fn(
            crate::fapi_headers::interaction_id,
        ))
        .with_state(state)
}

/// Unknown paths: an OAuth error object, like every other answer.
async fn not_found() -> OAuthError {
    OAuthError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::InvalidRequest,
        "no such endpoint",
    )
}

/// A known path with a method it does not serve.
async fn method_not_allowed() -> OAuthError {
    OAuthError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::InvalidRequest,
        "this endpoint does not accept this method",
    )
}
