//! The client management API, `/api/v2/clients` (the seed's Management API): list, create,
//! read, update (JSON merge patch) and delete registered clients. The API management API
//! (`/api/v2/resource-servers`, [`super::resource_servers`]) shares its authorisation and body
//! handling.
//!
//! Authorisation: an RFC 9068 access token for the audience [`AppState::management_api`]
//! (`{issuer}/api/v2/`) in `Authorization: Bearer`, with `read:clients`, `create:clients`,
//! `update:clients` or `delete:clients` as the operation needs. A management client gets one
//! with client_credentials and `audience` (or RFC 8707 `resource`) naming the API.
//!
//! Bodies are RFC 7591 client metadata as [`Client`] reads it (unknown fields refused), at most
//! [`MAX_BODY_BYTES`] of `application/json` (PATCH also takes `application/merge-patch+json`).
//! Unparseable JSON is `invalid_request`; JSON that is not acceptable metadata is
//! `invalid_client_metadata` or `invalid_redirect_uri` (RFC 7591 §3.2.2). Every answer is
//! `Cache-Control: no-store`.
//!
//! Updates are read-merge-write without a lock: of two PATCHes of one client racing, the later
//! write wins whole (the API is for a few operators, not for concurrent editing).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use strongroom_keystore::KeyPurpose;

use crate::bearer;
use crate::error::{ErrorCode, OAuthError};
use crate::model::Client;
use crate::state::AppState;
use crate::tls_edge::Connection;

/// The largest body accepted; a larger one is refused unread (413).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

const READ: &str = "read:clients";
const CREATE: &str = "create:clients";
const UPDATE: &str = "update:clients";
const DELETE: &str = "delete:clients";

/// What every handler receives about the request, besides the body.
pub struct Request {
    headers: HeaderMap,
    uri: Uri,
    conn: Connection,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Request {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Response> {
        let conn = parts
            .extensions
            .get::<Connection>()
            .cloned()
            .ok_or_else(|| {
                OAuthError::server_error("the request has no connection details").into_response()
            })?;
        Ok(Request {
            headers: parts.headers.clone(),
            uri: parts.uri.clone(),
            conn,
        })
    }
}

impl Request {
    pub(crate) fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

/// `GET /api/v2/clients`: every client, oldest first.
pub async fn list(State(state): State<Arc<AppState>>, req: Request) -> Response {
    guarded(&state, &req, READ, async {
        let clients = state.store.list_clients().await?;
        Ok(json(StatusCode::OK, &clients))
    })
    .await
}

/// `POST /api/v2/clients`: registers a client; 201 with the client as stored.
pub async fn create(State(state): State<Arc<AppState>>, req: Request, body: Body) -> Response {
    guarded(&state, &req, CREATE, async {
        let value = read_json(&req.headers, body, &["application/json"]).await?;
        let mut client = metadata(value)?;
        if client.client_id.is_empty() {
            client.client_id = crate::store::random_id()?;
        } else {
            check_client_id(&client.client_id)?;
        }
        check(&state, &client)?;
        let created = state
            .store
            .insert_client(&client, state.now())
            .await?
            .ok_or_else(|| {
                OAuthError::new(
                    StatusCode::CONFLICT,
                    ErrorCode::InvalidClientMetadata,
                    "a client with this client_id already exists",
                )
            })?;
        let location = format!("/api/v2/clients/{}", created.client_id);
        Ok(created_at(&location, &created))
    })
    .await
}

/// `GET /api/v2/clients/{client_id}`.
pub async fn get_one(
    State(state): State<Arc<AppState>>,
    req: Request,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    guarded(&state, &req, READ, async {
        let id = client_id(path)?;
        let client = state.store.get_client(&id).await?.ok_or_else(not_found)?;
        Ok(json(StatusCode::OK, &client))
    })
    .await
}

/// `PATCH /api/v2/clients/{client_id}`: an RFC 7396 JSON merge patch over the stored metadata
/// (`null` removes a member, so the field takes its default). The result is checked as on
/// create; client_id cannot change. Any cached copy of the client's jwks_uri is dropped, so an
/// operator can make the server refetch a client's keys with any PATCH.
pub async fn patch(
    State(state): State<Arc<AppState>>,
    req: Request,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Response {
    guarded(&state, &req, UPDATE, async {
        let id = client_id(path)?;
        let patch = read_merge_patch(&req.headers, body).await?;
        let current = state.store.get_client(&id).await?.ok_or_else(not_found)?;
        if let Some(v) = patch.get("client_id") {
            if v.as_str() != Some(id.as_str()) {
                return Err(OAuthError::invalid_client_metadata(
                    "client_id cannot be changed",
                ));
            }
        }
        if let Some(unknown) = patch
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
            .find(|k| !client_fields().contains(&k.as_str()))
        {
            return Err(OAuthError::invalid_client_metadata(format!(
                "unknown client metadata field {unknown:?}"
            )));
        }
        let client = metadata(patched(&current, &patch, "client")?)?;
        check(&state, &client)?;
        let updated = state
            .store
            .update_client(&id, &client, state.now())
            .await?
            .ok_or_else(not_found)?;
        forget_jwks(&state, &current);
        forget_jwks(&state, &updated);
        state.clients.invalidate(&id);
        Ok(json(StatusCode::OK, &updated))
    })
    .await
}

/// `DELETE /api/v2/clients/{client_id}`: 204, or 404 if there is no such client.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    req: Request,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    guarded(&state, &req, DELETE, async {
        let id = client_id(path)?;
        let existing = state.store.get_client(&id).await?;
        if !state.store.delete_client(&id).await? {
            return Err(not_found());
        }
        state.clients.invalidate(&id);
        if let Some(c) = &existing {
            forget_jwks(&state, c);
        }
        Ok(no_content())
    })
    .await
}

/// 405 for a method the path does not serve; `allow` lists those it does.
pub fn method_not_allowed(allow: &'static str) -> Response {
    let mut resp = OAuthError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::InvalidRequest,
        format!("this resource accepts {allow}"),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// Runs `work` once the request is authorised for `scope`. Authorisation failures carry the
/// Bearer challenge (RFC 6750 §3); the others are plain error objects.
pub(crate) async fn guarded(
    state: &AppState,
    req: &Request,
    scope: &str,
    work: impl std::future::Future<Output = Result<Response, OAuthError>>,
) -> Response {
    if let Err(e) = authorize(state, req, scope).await {
        return bearer::resource_error(e);
    }
    work.await.unwrap_or_else(IntoResponse::into_response)
}

/// The bearer token, verified (with the connection's certificate for bound tokens), for the
/// management API's audience and `scope`.
async fn authorize(state: &AppState, req: &Request, scope: &str) -> Result<(), OAuthError> {
    bearer::refuse_token_in_query(&req.uri)?;
    let token = bearer::bearer_token(&req.headers)?;
    let verified = bearer::verify_access_token(state, token, req.conn.leaf_certificate()).await?;
    verified.require(&state.management_api(), &[scope])
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`] whose media type is one of `accepted`.
pub(crate) async fn read_json(
    headers: &HeaderMap,
    body: Body,
    accepted: &[&str],
) -> Result<Value, OAuthError> {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if !media_type.is_some_and(|m| accepted.iter().any(|a| a.eq_ignore_ascii_case(m))) {
        return Err(OAuthError::invalid_request(format!(
            "the body must be {}",
            accepted.join(" or ")
        )));
    }
    let bytes = crate::form::read_body(body, MAX_BODY_BYTES).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| OAuthError::invalid_request(format!("the body is not valid JSON: {e}")))
}

/// JSON metadata as a [`Client`]: anything serde refuses (an unknown field, a wrong type, an
/// unknown compliance level) is `invalid_client_metadata`.
fn metadata(value: Value) -> Result<Client, OAuthError> {
    if !value.is_object() {
        return Err(OAuthError::invalid_client_metadata(
            "client metadata must be a JSON object",
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| OAuthError::invalid_client_metadata(format!("client metadata: {e}")))
}

/// RFC 7591 checks ([`Client::validate`]), credentials that could never authenticate
/// ([`crate::client_auth::check_registration`]), the server's keys ([`Client::check_for_server`]),
/// and what the management API adds: a jwks_uri must be an https URL (it is fetched over HTTPS
/// only, so another scheme could never work).
fn check(state: &AppState, client: &Client) -> Result<(), OAuthError> {
    client.validate()?;
    crate::client_auth::check_registration(client)?;
    let id_token_alg = state
        .keystore
        .signing_key(KeyPurpose::IdToken)
        .ok()
        .map(|k| k.alg.jose_name());
    client.check_for_server(id_token_alg)?;
    if let Some(uri) = &client.jwks_uri {
        let https = url::Url::parse(uri).is_ok_and(|u| u.scheme() == "https" && u.has_host());
        if !https {
            return Err(OAuthError::invalid_client_metadata(
                "jwks_uri must be an https URL",
            ));
        }
    }
    Ok(())
}

/// A client_id chosen by the caller: 1 to 128 URL-unreserved characters, so it needs no
/// escaping in a path or a form.
fn check_client_id(id: &str) -> Result<(), OAuthError> {
    let ok = (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(OAuthError::invalid_client_metadata(
            "client_id must be 1 to 128 characters of A-Z a-z 0-9 - . _ ~",
        ))
    }
}

fn client_id(path: Result<Path<String>, PathRejection>) -> Result<String, OAuthError> {
    path_id(path, "the client_id in the path is not valid")
}

fn not_found() -> OAuthError {
    no_such("no client with this client_id")
}

fn forget_jwks(state: &AppState, client: &Client) {
    if let (Some(source), Some(uri)) = (&state.jwks_source, &client.jwks_uri) {
        source.invalidate(uri);
    }
}

/// Reads a PATCH body: a JSON merge patch as `application/json` or
/// `application/merge-patch+json`.
pub(crate) async fn read_merge_patch(headers: &HeaderMap, body: Body) -> Result<Value, OAuthError> {
    read_json(
        headers,
        body,
        &["application/json", "application/merge-patch+json"],
    )
    .await
}

/// The stored record `current` as JSON with `patch` merged over it, for the collection to read
/// back and check as on create; `what` names the record in the (server) error.
pub(crate) fn patched(
    current: &impl serde::Serialize,
    patch: &Value,
    what: &str,
) -> Result<Value, OAuthError> {
    let mut doc = serde_json::to_value(current)
        .map_err(|_| OAuthError::server_error(format!("the stored {what} does not serialize")))?;
    merge_patch(&mut doc, patch);
    Ok(doc)
}

/// The `{id}` of the path, or `invalid_request` saying `invalid`.
pub(crate) fn path_id(
    path: Result<Path<String>, PathRejection>,
    invalid: &'static str,
) -> Result<String, OAuthError> {
    path.map(|Path(id)| id)
        .map_err(|_| OAuthError::invalid_request(invalid))
}

/// 404 `invalid_request` for a record the path names but the store does not hold.
pub(crate) fn no_such(description: &'static str) -> OAuthError {
    OAuthError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::InvalidRequest,
        description,
    )
}

pub(crate) fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    no_store(&mut resp);
    resp
}

/// 201 with the record as stored and `Location: location` (a path the caller has made safe).
pub(crate) fn created_at(location: &str, body: &impl serde::Serialize) -> Response {
    let mut resp = json(StatusCode::CREATED, body);
    if let Ok(location) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    resp
}

/// 204 for a deletion.
pub(crate) fn no_content() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    no_store(&mut resp);
    resp
}

fn no_store(resp: &mut Response) {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// RFC 7396 §2: members of an object patch replace, `null` removes, nested objects merge; any
/// other patch replaces the target whole.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// The metadata field names [`Client`] accepts, as its `Deserialize` declares them: so a patch
/// that only removes (`"x": null`) is refused for an unknown `x` too.
fn client_fields() -> &'static [&'static str] {
    use serde::de::{self, Deserializer, Visitor};
    use std::sync::OnceLock;

    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("probe"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("probe"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    static FIELDS: OnceLock<&'static [&'static str]> = OnceLock::new();
    FIELDS.get_or_init(|| {
        let mut fields: &'static [&'static str] = &[];
        let _ = <Client as serde::Deserialize>::deserialize(Probe(&mut fields));
        fields
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396_appendix_a() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (mut target, patch, want) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "patch {patch}");
        }
    }

    #[test]
    fn client_fields_are_the_metadata_names() {
        let fields = client_fields();
        for f in [
            "client_id",
            "redirect_uris",
            "compliance_level",
            "jwks_uri",
            "oidc_conformant",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        assert!(!fields.contains(&"foo"));
    }

    #[test]
    fn chosen_client_ids() {
        assert!(check_client_id("bank-app_1.v2~x").is_ok());
        for bad in ["", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(check_client_id(bad).is_err(), "{bad:?}");
        }
    }
}
