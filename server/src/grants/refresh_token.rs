//! RFC 6749 §6: a refresh token for a new access token. Every refresh rotates the refresh
//! token (the presented one is revoked in the same transaction that makes its successor); a
//! rotated token presented again is a replay, and the whole grant is revoked (OAuth 2.0
//! Security BCP §4.14.2).
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

use super::{
    UserGrant, grant_api, grant_details, insert, named_resource, narrow_scope, require_grant_type,
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
use crate::store::{AuthorizationGrant, RedeemError, RotatedRefreshToken};

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
    // Checked before the rotation, so a bad request does not burn the token.
    let cnf = issue::bound_certificate(client, authenticated)?;
    if form.get("scope").is_some()
        || named_resource(form)?.is_some()
        || form.get("authorization_details").is_some()
    {
        // A read that decides nothing: the rotation below is still the one atomic step. It
        // refuses a bad scope or resource before the token is spent on it.
        if let Some(r) = state
            .store
            .get_refresh_token::<AuthorizationGrant>(presented)
            .await?
            .filter(|r| r.client_id == client.client_id)
        {
            let scope = narrow_scope(form.get("scope"), &r.data.scope)?;
            grant_api(state, client, &r.data, &scope, form).await?;
            grant_details(&r.data, form)?;
        }
    }
    let now = state.now();
    let (grant_id, g, successor) = if Policy::of(client).rotate_refresh_tokens() {
        let r = rotate(state, client, presented, now).await?;
        (r.grant_id, r.data, Some(r.refresh_token))
    } else {
        let (grant_id, data) = keep(state, client, presented, now).await?;
        (grant_id, data, None)
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
    state.store.record_access_token(record).await?;
    if let Some(t) = successor {
        insert(&mut body, "refresh_token", t);
    }
    Ok(token_response(body))
}

/// The rotation: the presented token is spent and its successor made, or a replay revokes the
/// grant.
async fn rotate(
    state: &AppState,
    client: &Client,
    presented: &str,
    now: i64,
) -> Result<RotatedRefreshToken<AuthorizationGrant>, OAuthError> {
    match state
        .store
        .rotate_refresh_token::<AuthorizationGrant>(
            presented,
            &client.client_id,
            now,
            now + state.lifetimes.refresh_token,
        )
        .await
    {
        Ok(r) => Ok(r),
        Err(RedeemError::Reused { grant_id }) => {
            let revoked = state.store.revoke_grant(&grant_id).await?;
            tracing::warn!(client_id = %client.client_id, %grant_id,
                access_tokens = revoked.access_tokens,
                "a rotated refresh token was presented again: its grant is revoked");
            Err(RedeemError::Reused { grant_id }.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Without rotation: the token must be the client's, live and not revoked. Nothing is spent;
/// a revocation racing with this refresh still wins, since the access token is written only
/// while its grant is not revoked.
async fn keep(
    state: &AppState,
    client: &Client,
    presented: &str,
    now: i64,
) -> Result<(String, AuthorizationGrant), OAuthError> {
    let record = state
        .store
        .get_refresh_token::<AuthorizationGrant>(presented)
        .await?
        .ok_or(RedeemError::Unknown)?;
    if record.client_id != client.client_id {
        return Err(RedeemError::WrongClient.into());
    }
    if record.revoked {
        return Err(OAuthError::invalid_grant(
            "the refresh token has been revoked",
        ));
    }
    if !record.is_active(now) {
        return Err(RedeemError::Expired.into());
    }
    Ok((record.grant_id, record.data))
}
