//! RFC 6749 §4.4: the client acting for itself. The token is for our own endpoints (audience
//! the issuer) unless the client names another resource (RFC 8707 `resource`, or `audience` as
//! the seed's product spells it) that this server knows: today the management API.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::{narrow_scope, require_grant_type};
use crate::client_auth::AuthenticatedClient;
use crate::endpoints::token::token_response;
use crate::error::{ErrorCode, OAuthError};
use crate::form::Form;
use crate::issue::{self, AccessTokenRequest};
use crate::model::Client;
use crate::state::AppState;

pub async fn grant(
    state: &AppState,
    client: &Client,
    authenticated: &AuthenticatedClient,
    form: &Form,
) -> Result<Response, OAuthError> {
    require_grant_type(client, "client_credentials")?;
    let audience = audience(state, form)?;
    let scope = narrow_scope(form.get("scope"), client.scope.as_deref().unwrap_or(""))?;
    let cnf = issue::bound_certificate(client, authenticated)?;
    let issued = issue::access_token(
        state,
        client,
        &AccessTokenRequest {
            sub: &client.client_id,
            scope: &scope,
            audience: &audience,
            cnf_x5t_s256: cnf.as_deref(),
            ..Default::default()
        },
    )
    .await?;
    Ok(token_response(json!({
        "access_token": issued.token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": scope,
    })))
}

/// The token's audience: the issuer by default, or the resource the client names. An unknown
/// resource, or `resource` and `audience` disagreeing: `invalid_target` (RFC 8707 §2).
fn audience(state: &AppState, form: &Form) -> Result<String, OAuthError> {
    let named = match (form.get("resource"), form.get("audience")) {
        (Some(r), Some(a)) if r != a => {
            return Err(invalid_target(
                "resource and audience name different resources",
            ));
        }
        (Some(r), _) | (None, Some(r)) => r,
        (None, None) => return Ok(state.issuer.clone()),
    };
    let known = [state.issuer.clone(), state.management_api()];
    if known.iter().any(|k| k == named) {
        Ok(named.to_owned())
    } else {
        Err(invalid_target(format!(
            "{named:?} is not a resource this server issues tokens for"
        )))
    }
}

fn invalid_target(d: impl Into<String>) -> OAuthError {
    OAuthError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidTarget, d)
}
