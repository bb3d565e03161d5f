//! The API management API, `/api/v2/resource-servers`: list, create, read, update (JSON merge
//! patch) and delete registered APIs ([`ResourceServer`]).
//!
//! Authorisation is the client management API's (an access token for `{issuer}/api/v2/`, see
//! [`super::management`]) with `read:resource_servers`, `create:resource_servers`,
//! `update:resource_servers` or `delete:resource_servers`. The path names an API by its
//! identifier, percent-encoded (`/api/v2/resource-servers/https%3A%2F%2Fapi.example.com`).
//!
//! A registration that is not acceptable is `400 invalid_request` saying why; an identifier
//! already registered is `409`; an unknown one `404`. Every answer is `Cache-Control: no-store`.
//! Like clients, updates are read-merge-write without a lock (the later of two racing PATCHes
//! wins whole).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use strongroom_keystore::KeyPurpose;

use super::management::{
    Request, created_at, guarded, json, no_content, no_such, patched, path_id, read_json,
    read_merge_patch,
};
use crate::error::{ErrorCode, OAuthError};
use crate::resource_server::ResourceServer;
use crate::state::AppState;

const READ: &str = "read:resource_servers";
const CREATE: &str = "create:resource_servers";
const UPDATE: &str = "update:resource_servers";
const DELETE: &str = "delete:resource_servers";

/// `GET /api/v2/resource-servers`: every API, oldest first.
pub async fn list(State(state): State<Arc<AppState>>, req: Request) -> Response {
    guarded(&state, &req, READ, async {
        let apis = state.store.list_resource_servers().await?;
        Ok(json(StatusCode::OK, &apis))
    })
    .await
}

/// `POST /api/v2/resource-servers`: registers an API; 201 with the API as stored.
pub async fn create(State(state): State<Arc<AppState>>, req: Request, body: Body) -> Response {
    guarded(&state, &req, CREATE, async {
        let value = read_json(req.headers(), body, &["application/json"]).await?;
        let api = ResourceServer::from_json(value)?;
        check_for_server(&state, &api)?;
        let created = state
            .store
            .insert_resource_server(&api, state.now())
            .await?
            .ok_or_else(|| {
                OAuthError::new(
                    StatusCode::CONFLICT,
                    ErrorCode::InvalidRequest,
                    "an API with this identifier already exists",
                )
            })?;
        let location = format!(
            "/api/v2/resource-servers/{}",
            url::form_urlencoded::byte_serialize(created.identifier.as_bytes()).collect::<String>()
        );
        Ok(created_at(&location, &created))
    })
    .await
}

/// `GET /api/v2/resource-servers/{identifier}`.
pub async fn get_one(
    State(state): State<Arc<AppState>>,
    req: Request,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    guarded(&state, &req, READ, async {
        let id = identifier(path)?;
        let api = state
            .store
            .get_resource_server(&id)
            .await?
            .ok_or_else(not_found)?;
        Ok(json(StatusCode::OK, &api))
    })
    .await
}

/// `PATCH /api/v2/resource-servers/{identifier}`: an RFC 7396 JSON merge patch over the stored
/// registration (`null` removes a member). The result is checked as on create; the identifier
/// cannot change.
pub async fn patch(
    State(state): State<Arc<AppState>>,
    req: Request,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Response {
    guarded(&state, &req, UPDATE, async {
        let id = identifier(path)?;
        let patch = read_merge_patch(req.headers(), body).await?;
        if !patch.is_object() {
            return Err(OAuthError::invalid_request(
                "the merge patch must be a JSON object",
            ));
        }
        if let Some(v) = patch.get("identifier") {
            if v.as_str() != Some(id.as_str()) {
                return Err(OAuthError::invalid_request(
                    "identifier cannot be changed (it is the audience of the API's tokens)",
                ));
            }
        }
        let current = state
            .store
            .get_resource_server(&id)
            .await?
            .ok_or_else(not_found)?;
        let api = ResourceServer::from_json(patched(&current, &patch, "API")?)?;
        check_for_server(&state, &api)?;
        let updated = state
            .store
            .update_resource_server(&id, &api, state.now())
            .await?
            .ok_or_else(not_found)?;
        Ok(json(StatusCode::OK, &updated))
    })
    .await
}

/// `DELETE /api/v2/resource-servers/{identifier}`: 204 (the API's access tokens are revoked
/// with it), or 404.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    req: Request,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    guarded(&state, &req, DELETE, async {
        let id = identifier(path)?;
        if !state.store.delete_resource_server(&id).await? {
            return Err(not_found());
        }
        Ok(no_content())
    })
    .await
}

/// What only the running server can check: the identifier is not one of its own audiences, a
/// `signing_alg` is the access-token key's algorithm, and `token_lifetime` fits the keys'
/// retire window.
fn check_for_server(state: &AppState, api: &ResourceServer) -> Result<(), OAuthError> {
    let alg = state
        .keystore
        .signing_key(KeyPurpose::AccessToken)
        .ok()
        .map(|k| k.alg.jose_name());
    api.check_for_server(
        &state.issuer,
        &state.management_api(),
        alg,
        state.keystore.policy().max_token_lifetime,
    )
}

fn identifier(path: Result<Path<String>, PathRejection>) -> Result<String, OAuthError> {
    path_id(
        path,
        "the API identifier in the path is not valid (percent-encode it)",
    )
}

fn not_found() -> OAuthError {
    no_such("no API with this identifier")
}
