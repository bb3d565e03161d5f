//! `POST /par` (RFC 9126): the client pushes its authorization request over an authenticated
//! back channel and gets a one-time `request_uri` to send the browser to /authorize with.
//!
//! Client authentication is the token endpoint's (private_key_jwt, or mTLS on the mTLS
//! listener). The request is checked here, in full, by [`authz_request`](crate::authz_request),
//! so that /authorize only has to take it back.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::authz_request;
use crate::endpoints::token::ClientRequest;
use crate::error::{ErrorCode, OAuthError};
use crate::form::Form;
use crate::model::Client;
use crate::policy::Policy;
use crate::request_object;
use crate::state::AppState;

pub async fn par(req: ClientRequest, body: Body) -> Response {
    req.serve(body, "/par", async |state, client, _, form| {
        handle(state, client, form).await
    })
    .await
}

async fn handle(state: &AppState, client: &Client, form: &Form) -> Result<Response, OAuthError> {
    let policy = Policy::of(client);
    // RFC 9126 §2.1: a pushed request must not itself point at another one.
    if form.get("request_uri").is_some() {
        return Err(OAuthError::invalid_request(
            "request_uri must not be sent to the pushed authorization request endpoint",
        ));
    }
    if policy.oidc_conformant_required() && !client.oidc_conformant {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnauthorizedClient,
            "the configured compliance level requires the client to be oidc_conformant",
        ));
    }
    if policy.request_object_required() && form.get("request").is_none() {
        return Err(OAuthError::invalid_request(
            "the configured compliance level requires a signed request object (request)",
        ));
    }
    // RFC 9101 §5 / RFC 9126 §3: with a request object, its parameters are the request and
    // nothing sent beside it is used.
    let from_object;
    let params = match form.get("request") {
        Some(jwt) => {
            let rules = policy.request_object_rules();
            from_object = request_object::open(state, client, jwt, rules, state.now()).await?;
            &from_object
        }
        None => form,
    };
    let mut request = authz_request::parse(client, params)?;
    authz_request::check_subject(state, &mut request)?;
    authz_request::check_resource(state, client, &mut request).await?;
    let json = request
        .to_json()
        .map_err(|_| OAuthError::server_error("the request could not be stored"))?;
    let lifetime = policy.par_lifetime(client, state.lifetimes.par);
    let request_uri = state
        .store
        .insert_par(&client.client_id, &json, state.now() + lifetime)
        .await?;
    // RFC 9126 §2.2: 201 Created.
    let mut resp = (
        StatusCode::CREATED,
        axum::Json(json!({"request_uri": request_uri, "expires_in": lifetime})),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
