//! RFC 6749 §4.4: the client acting for itself. The token is for our own endpoints (audience
//! the issuer) unless the client names another resource (RFC 8707 `resource`, or `audience` as
//! the seed's product spells it) that this server knows: the management API, or a registered
//! API ([`crate::resource_server`]).
//!
//! For a registered API the API decides: the client must be in its `allowed_clients`
//! (`invalid_target` otherwise, RFC 8707 §2), the scope must be among the API's scopes
//! (`invalid_scope`, RFC 6749 §5.2; none asked: all of them), and the token takes the API's
//! lifetime and, if configured, its encryption.
//!
//! RFC 9396 `authorization_details` work here too: checked against the API (named, or found
//! from the types), approved by the client for itself (an approval record with the client as
//! subject), and carried with their `txn` by the token and the response.

use axum::response::Response;
use serde_json::{Value, json};

use super::{named_resource, narrow_scope, require_grant_type};
use crate::authorization_details;
use crate::client_auth::AuthenticatedClient;
use crate::endpoints::token::token_response;
use crate::error::OAuthError;
use crate::form::Form;
use crate::issue::{self, AccessTokenRequest};
use crate::model::Client;
use crate::resource_server::{self, ResourceServer};
use crate::state::AppState;
use crate::store::SubjectType;

pub async fn grant(
    state: &AppState,
    client: &Client,
    authenticated: &AuthenticatedClient,
    form: &Form,
) -> Result<Response, OAuthError> {
    require_grant_type(client, "client_credentials")?;
    let details = form
        .get("authorization_details")
        .map(authorization_details::parse)
        .transpose()?;
    let (audience, api) = match &details {
        None => target(state, client, form).await?,
        Some(d) => {
            let api =
                authorization_details::resolve(state, client, named_resource(form)?, d).await?;
            (api.identifier.clone(), Some(api))
        }
    };
    let allowed = match &api {
        Some(api) => api.scope_string(),
        None => client.scope.clone().unwrap_or_default(),
    };
    let scope = narrow_scope(form.get("scope"), &allowed)?;
    let cnf = issue::bound_certificate(client, authenticated)?;
    let txn = match &details {
        None => None,
        Some(d) => Some(
            authorization_details::approve(
                state,
                (&client.client_id, SubjectType::Client),
                &client.client_id,
                &audience,
                d,
                state.now(),
            )
            .await?,
        ),
    };
    let issued = issue::access_token(
        state,
        client,
        &AccessTokenRequest {
            sub: &client.client_id,
            scope: &scope,
            audience: &audience,
            cnf_x5t_s256: cnf.as_deref(),
            api: api.as_ref(),
            authorization_details: details.as_deref(),
            txn: txn.as_deref(),
            ..Default::default()
        },
    )
    .await?;
    let mut body = json!({
        "access_token": issued.token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
    });
    if let Some(m) = body.as_object_mut() {
        super::insert_scope(m, &scope);
        if let Some(d) = details {
            m.insert("authorization_details".into(), Value::Array(d));
        }
    }
    Ok(token_response(body))
}

/// The token's audience: the issuer by default, the management API, or a registered API the
/// client may use (`invalid_target` for anything else).
async fn target(
    state: &AppState,
    client: &Client,
    form: &Form,
) -> Result<(String, Option<ResourceServer>), OAuthError> {
    let Some(named) = named_resource(form)? else {
        return Ok((state.issuer.clone(), None));
    };
    if named == state.issuer || named == state.management_api() {
        return Ok((named.to_owned(), None));
    }
    let api = resource_server::resolve(state, client, named).await?;
    Ok((api.identifier.clone(), Some(api)))
}
