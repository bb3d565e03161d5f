//! `POST /par` (RFC 9126): the client pushes its authorization request over an authenticated
//! back channel and gets a one-time `request_uri` to send the browser to /authorize with.
//!
//! Client authentication is the token endpoint's (private_key_jwt, or mTLS on the mTLS
//! listener). The request is checked here, in full, by [`authz_request`](crate::authz_request),
//! so that /authorize only has to take it back.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::authz_request;
use crate::endpoints::token::authenticate_client;
use crate::error::OAuthError;
use crate::form::{Form, form_endpoint};
use crate::state::AppState;
use crate::tls_edge::Connection;

pub async fn par(
    State(state): State<Arc<AppState>>,
    Extension(conn): Extension<Connection>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Response {
    form_endpoint(&headers, body, async |form| {
        handle(&state, &conn, &form).await
    })
    .await
}

async fn handle(state: &AppState, conn: &Connection, form: &Form) -> Result<Response, OAuthError> {
    let (client, _) = authenticate_client(state, conn, form, "/par").await?;
    // RFC 9126 §2.1: a pushed request must not itself point at another one.
    if form.get("request_uri").is_some() {
        return Err(OAuthError::invalid_request(
            "request_uri must not be sent to the pushed authorization request endpoint",
        ));
    }
    let request = authz_request::parse(&client, form)?;
    let json = request
        .to_json()
        .map_err(|_| OAuthError::server_error("the request could not be stored"))?;
    let request_uri = state
        .store
        .insert_par(&client.client_id, &json, state.now() + state.lifetimes.par)
        .await?;
    // RFC 9126 §2.2: 201 Created.
    let mut resp = (
        StatusCode::CREATED,
        axum::Json(json!({"request_uri": request_uri, "expires_in": state.lifetimes.par})),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
