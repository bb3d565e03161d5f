//! `GET /jwks`: the public keys relying parties verify our tokens with (and encrypt request
//! objects to). Cached by clients for exactly the keystore's pre-publication window.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

pub async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    let mut resp = axum::Json(state.keystore.jwks()).into_response();
    if let Ok(v) = HeaderValue::from_str(&state.keystore.jwks_cache_control()) {
        resp.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    resp
}
