//! `POST /revoke` (RFC 7009): an authenticated client withdraws one of its tokens.
//!
//! - A refresh token takes its whole grant down (every refresh and access token issued under
//!   it, and codes not yet redeemed): RFC 7009 §2.1 allows it, and a bank wants a user's
//!   "disconnect" to stop everything at once.
//! - An access token is revoked by its `jti` once its signature verifies (a JWT anyone could
//!   forge must not name what to revoke); it stops working at every resource at once, since
//!   each looks the `jti` up. A JWE access token (encrypted to its API) is found by the hash of
//!   its string instead: only a token this server issued can match.
//! - Another client's token is refused, `400 invalid_request` (RFC 7009 §2.1: the server
//!   verifies that the token was issued to the client asking).
//! - A token we cannot verify or do not know: `200`, nothing done (§2.2: the client cannot do
//!   anything about it, and the answer must not tell a guesser which tokens exist).
//!
//! Both token types are supported, so no `token_type_hint` is ever `unsupported_token_type`
//! (§2.2.1); an unknown hint is ignored.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::bearer;
use crate::endpoints::introspect::{TokenKind, is_compact_jwe, lookup_order};
use crate::endpoints::token::ClientRequest;
use crate::error::OAuthError;
use crate::form::Form;
use crate::model::Client;
use crate::state::AppState;

pub async fn revoke(req: ClientRequest, body: Body) -> Response {
    req.serve(body, "/revoke", async |state, client, _, form| {
        handle(state, client, form).await
    })
    .await
}

/// What became of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Revoked,
    /// Not a token of this kind.
    NotFound,
}

async fn handle(state: &AppState, client: &Client, form: &Form) -> Result<Response, OAuthError> {
    let token = form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    for kind in lookup_order(form.get("token_type_hint")) {
        let outcome = match kind {
            TokenKind::AccessToken => access_token(state, token, &client.client_id).await?,
            TokenKind::RefreshToken => refresh_token(state, token, &client.client_id).await?,
        };
        if outcome == Outcome::Revoked {
            break;
        }
    }
    let mut resp = StatusCode::OK.into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

fn not_yours() -> OAuthError {
    OAuthError::invalid_request("the token was not issued to this client")
}

async fn access_token(
    state: &AppState,
    token: &str,
    client_id: &str,
) -> Result<Outcome, OAuthError> {
    if is_compact_jwe(token) {
        let Some(record) = state
            .store
            .get_access_token_by_token::<Value>(token)
            .await?
        else {
            return Ok(Outcome::NotFound);
        };
        if record.client_id != client_id {
            return Err(not_yours());
        }
        state.store.revoke_access_token(&record.jti).await?;
        return Ok(Outcome::Revoked);
    }
    // Signature, typ and issuer only: an expired token may still be revoked (to no effect).
    let claims = match bearer::verify_signature(state, token) {
        Ok(c) => c,
        Err(e) if e.status.is_server_error() => return Err(e),
        Err(_) => return Ok(Outcome::NotFound),
    };
    let (Some(jti), Some(owner)) = (
        claims.get("jti").and_then(Value::as_str),
        claims.get("client_id").and_then(Value::as_str),
    ) else {
        return Ok(Outcome::NotFound);
    };
    if owner != client_id {
        return Err(not_yours());
    }
    state.store.revoke_access_token(jti).await?;
    Ok(Outcome::Revoked)
}

async fn refresh_token(
    state: &AppState,
    token: &str,
    client_id: &str,
) -> Result<Outcome, OAuthError> {
    let Some(record) = state.store.get_refresh_token::<Value>(token).await? else {
        return Ok(Outcome::NotFound);
    };
    if record.client_id != client_id {
        return Err(not_yours());
    }
    let counts = state.store.revoke_grant(&record.grant_id).await?;
    tracing::info!(
        client_id,
        grant_id = %record.grant_id,
        refresh_tokens = counts.refresh_tokens,
        access_tokens = counts.access_tokens,
        codes = counts.codes,
        "grant revoked by its client"
    );
    Ok(Outcome::Revoked)
}
