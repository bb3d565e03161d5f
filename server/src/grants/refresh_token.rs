//! RFC 6749 §6: a refresh token for a new access token. Every refresh rotates the refresh
//! token (the presented one is revoked in the same write that makes its successor and records
//! the new access token, after the request has been checked and the tokens signed: a refused
//! request or a busy HSM leaves the presented token as it was); a rotated token presented again
//! is a replay, and the whole grant is revoked (OAuth 2.0 Security BCP §4.14.2).
//!
//! Clients of a FAPI 2 level are the exception (FAPI 2.0 Security Profile §5.3.2.1: no rotation
//! unless a retry with the previous token would succeed, which a replay-revokes-all design does
//! not allow): their refresh token is kept, valid until its absolute expiry, and the response
//! carries no new one (RFC 6749 §6 lets the server decide).
//!
//! The refresh token belongs to the client that authenticated (RFC 8705 §4: for confidential
//! clients the client authentication binds it); the new access token is bound to the
//! certificate presented now, when the client asks for bound tokens.

use axum::response::Response;
use serde::de::IgnoredAny;

use super::{
    UserGrant, grant_api, grant_details, insert, narrow_scope, refused, require_grant_type,
    user_tokens,
};
use crate::client_auth::AuthenticatedClient;
use crate::endpoints::token::token_response;
use crate::error::OAuthError;
use crate::form::Form;
use crate::issue;
use crate::model::Client;
use crate::policy::Policy;
use crate::state::AppState;
use crate::store::{AuthorizationGrant, RedeemError};

pub async fn grant(
    state: &AppState,
    client: &Client,
    authenticated: &AuthenticatedClient,
    form: &Form,
) -> Result<Response, OAuthError> {
    require_grant_type(client, "refresh_token")?;
    let presented = form
        .get("refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
    // Checked first, as before anything else: a client that must present its certificate
    // learns that whatever the token.
    let cnf = issue::bound_certificate(client, authenticated)?;
    let rotates = Policy::of(client).rotate_refresh_tokens();
    let now = state.now();
    // A read that decides nothing: the token is spent (rotated) only by the write that records
    // the new access token, so a refused request, or a busy HSM, does not burn it.
    let (grant_id, g) = match state.store.peek_refresh_token::<AuthorizationGrant>(
        presented,
        &client.client_id,
        now,
    ) {
        Ok(found) => found,
        // Without rotation a revoked token is just that; with it, a token presented after its
        // rotation is a replay, and the grant goes.
        Err(RedeemError::Reused { .. }) if !rotates => return Err(revoked()),
        Err(e) => return Err(refused(state, client, e, REPLAYED).await),
    };
    // §6: the new access token's scope may be narrower than the grant's, never wider.
    let scope = narrow_scope(form.get("scope"), &g.scope)?;
    // RFC 8707: the new access token is for the grant's API, as registered now.
    let api = grant_api(state, client, &g, &scope, form).await?;
    let details = grant_details(&g, form)?;
    // OpenID Connect Core §12.2: a refreshed ID token keeps iss, sub, aud and auth_time, and
    // has no nonce.
    let (mut body, record) = user_tokens(
        state,
        client,
        &UserGrant {
            grant: &g,
            grant_id: &grant_id,
            scope: &scope,
            cnf_x5t_s256: cnf.as_deref(),
            nonce: None,
            api: api.as_ref(),
            authorization_details: details.as_deref(),
        },
    )
    .await?;
    if !rotates {
        // Nothing is spent; the write checks the token again, so a revocation racing with this
        // refresh still wins.
        return match state
            .store
            .keep_refresh_token(presented, &client.client_id, now, record)
            .await
        {
            Ok(()) => Ok(token_response(body)),
            Err(RedeemError::Reused { .. }) => Err(revoked()),
            Err(e) => Err(e.into()),
        };
    }
    match state
        .store
        .rotate_refresh_token::<IgnoredAny>(
            presented,
            &client.client_id,
            now,
            now + state.lifetimes.refresh_token,
            Some(record),
        )
        .await
    {
        Ok(r) => {
            insert(&mut body, "refresh_token", r.refresh_token);
            Ok(token_response(body))
        }
        Err(e) => Err(refused(state, client, e, REPLAYED).await),
    }
}

const REPLAYED: &str = "a rotated refresh token was presented again: its grant is revoked";

/// Without rotation a revoked refresh token is just that: no replay, nothing else revoked.
fn revoked() -> OAuthError {
    OAuthError::invalid_grant("the refresh token has been revoked")
}
