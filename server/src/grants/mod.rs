//! The grants of the token endpoint (RFC 6749 §4), one file each. The token endpoint has
//! already authenticated the client; a grant checks what the client presented and answers with
//! the token response.

pub mod authorization_code;
pub mod client_credentials;
pub mod refresh_token;

use axum::http::StatusCode;

use serde_json::{Value, json};

use crate::authorization_details;
use crate::error::{ErrorCode, OAuthError};
use crate::form::Form;
use crate::issue::{self, AccessTokenRequest, IdTokenRequest};
use crate::model::Client;
use crate::resource_server::{self, ResourceServer, invalid_target};
use crate::state::AppState;
use crate::store::{AccessTokenRow, AuthorizationGrant, RedeemError};

/// `unauthorized_client` unless the client registered `grant_type` (RFC 6749 §5.2).
pub fn require_grant_type(client: &Client, grant_type: &str) -> Result<(), OAuthError> {
    if client.grant_types.iter().any(|g| g == grant_type) {
        Ok(())
    } else {
        Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnauthorizedClient,
            format!("this client may not use the {grant_type} grant"),
        ))
    }
}

/// The scopes of `requested` (space-separated), each of which must be in `allowed`; an
/// absent or empty request means all of `allowed`. `invalid_scope` otherwise (RFC 6749 §5.2).
pub fn narrow_scope(requested: Option<&str>, allowed: &str) -> Result<String, OAuthError> {
    let allowed: Vec<&str> = allowed.split_whitespace().collect();
    let Some(requested) = requested.filter(|r| !r.trim().is_empty()) else {
        return Ok(allowed.join(" "));
    };
    let mut granted: Vec<&str> = Vec::new();
    for s in requested.split_whitespace() {
        if !allowed.contains(&s) {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidScope,
                format!("scope {s:?} is not allowed here"),
            ));
        }
        if !granted.contains(&s) {
            granted.push(s);
        }
    }
    Ok(granted.join(" "))
}

/// A user's grant, as the code exchange and the refresh see it.
#[derive(Debug)]
pub struct UserGrant<'a> {
    pub grant: &'a AuthorizationGrant,
    pub grant_id: &'a str,
    /// The scope of this token response (a refresh may narrow the grant's).
    pub scope: &'a str,
    pub cnf_x5t_s256: Option<&'a str>,
    /// For the ID token: the authorization request's nonce (a code exchange only).
    pub nonce: Option<&'a str>,
    /// The registered API the grant is for ([`grant_api`]); `None`: the server's own endpoints.
    pub api: Option<&'a ResourceServer>,
    /// RFC 9396: the approved details this token carries (all of the grant's, or the subset the
    /// token request asked for: [`grant_details`]).
    pub authorization_details: Option<&'a [serde_json::Value]>,
}

/// The token response for a user's grant: an access token for our own endpoints (or for the
/// grant's API) and, when `openid` is in scope, an ID token whose at_hash covers it. The access
/// token's record is returned beside the response, for the caller to write (see
/// [`issue::UnrecordedToken`]): the token is not issued until it is. The ID token
/// has no `c_hash`: OpenID Connect Core §3.3.3.6 lets the token endpoint omit it (and §3.1.3.6
/// has none), and versions of the FAPI conformance suite warn on it; only the hybrid flow's
/// front-channel ID token carries one. `s_hash` (FAPI 1) is the grant's, as computed at the
/// authorization.
pub async fn user_tokens(
    state: &AppState,
    client: &Client,
    u: &UserGrant<'_>,
) -> Result<(serde_json::Value, AccessTokenRow), OAuthError> {
    let g = u.grant;
    let issue::UnrecordedToken {
        issued: access,
        record,
    } = issue::unrecorded_access_token(
        state,
        client,
        &AccessTokenRequest {
            sub: &g.sub,
            scope: u.scope,
            audience: &state.issuer,
            grant_id: Some(u.grant_id),
            auth_time: g.auth_time,
            acr: g.acr.as_deref(),
            cnf_x5t_s256: u.cnf_x5t_s256,
            api: u.api,
            authorization_details: u.authorization_details,
            txn: g.txn.as_deref(),
        },
    )
    .await?;
    let mut body = json!({
        "access_token": access.token,
        "token_type": "Bearer",
        "expires_in": access.expires_in,
    });
    if let Some(m) = body.as_object_mut() {
        insert_scope(m, u.scope);
        if let Some(d) = u.authorization_details {
            m.insert("authorization_details".into(), json!(d));
        }
    }
    if u.scope.split_whitespace().any(|s| s == "openid") {
        let id_token = issue::id_token(
            state,
            client,
            &IdTokenRequest {
                sub: &g.sub,
                auth_time: g.auth_time,
                nonce: u.nonce,
                acr: g.acr.as_deref(),
                access_token: Some(&access.token),
                code: None,
                s_hash: g.s_hash.as_deref(),
            },
        )
        .await?;
        insert(&mut body, "id_token", id_token);
    }
    Ok((body, record))
}

/// The resource (RFC 8707 §2) a token request names: `resource`, or `audience` (the seed
/// product's spelling) as a synonym; both, naming different resources: `invalid_target`.
pub fn named_resource(form: &Form) -> Result<Option<&str>, OAuthError> {
    match (form.get("resource"), form.get("audience")) {
        (Some(r), Some(a)) if r != a => Err(invalid_target(
            "resource and audience name different resources",
        )),
        (Some(r), _) | (None, Some(r)) => Ok(Some(r)),
        (None, None) => Ok(None),
    }
}

/// The registered API a user grant's tokens are for: the one its authorization request named.
/// The token request may repeat it, never name another (RFC 8707 §2.2); naming the issuer is
/// naming no API. Checked again now, since the API's registration may have changed: the client
/// must still be allowed (`invalid_target`) and the grant's scope still the API's or OpenID
/// Connect's (`invalid_scope`).
pub async fn grant_api(
    state: &AppState,
    client: &Client,
    grant: &AuthorizationGrant,
    scope: &str,
    form: &Form,
) -> Result<Option<ResourceServer>, OAuthError> {
    let granted = grant
        .resource
        .as_deref()
        .filter(|r| *r != state.issuer.as_str());
    match (granted, named_resource(form)?) {
        (None, None) => Ok(None),
        (None, Some(r)) if r == state.issuer => Ok(None),
        (None, Some(_)) => Err(invalid_target(
            "the authorization request named no resource: the token request cannot add one",
        )),
        (Some(g), Some(r)) if r != g => Err(invalid_target(
            "resource is not the one the authorization request named",
        )),
        (Some(g), _) => {
            let api = resource_server::resolve(state, client, g).await?;
            api.check_user_scope(client, scope)?;
            Ok(Some(api))
        }
    }
}

/// RFC 9396 §6.1: the details a token of this grant carries — the token request's
/// `authorization_details`, each equal to one the user approved, or all that were approved.
/// A grant without details refuses the parameter (`invalid_authorization_details`).
pub fn grant_details(
    grant: &AuthorizationGrant,
    form: &Form,
) -> Result<Option<Vec<serde_json::Value>>, OAuthError> {
    let requested = form.get("authorization_details");
    match &grant.authorization_details {
        Some(approved) => authorization_details::narrow(requested, approved).map(Some),
        None if requested.is_some() => Err(authorization_details::invalid(
            "no authorization_details were approved for this grant",
        )),
        None => Ok(None),
    }
}

/// The answer to a code or refresh token that cannot be redeemed. One presented again after it
/// was spent revokes everything issued under its grant first (RFC 6749 §4.1.2, the OAuth
/// security BCP §4.14.2), and `replayed` is logged.
pub async fn refused(
    state: &AppState,
    client: &Client,
    e: RedeemError,
    replayed: &str,
) -> OAuthError {
    let RedeemError::Reused { grant_id } = e else {
        return e.into();
    };
    match state.store.revoke_grant(&grant_id).await {
        Ok(revoked) => {
            tracing::warn!(client_id = %client.client_id, %grant_id,
                access_tokens = revoked.access_tokens, refresh_tokens = revoked.refresh_tokens,
                "{replayed}");
            RedeemError::Reused { grant_id }.into()
        }
        Err(e) => e.into(),
    }
}

/// Adds a member to a token response under construction.
pub fn insert(body: &mut serde_json::Value, name: &str, value: String) {
    if let Some(m) = body.as_object_mut() {
        m.insert(name.to_owned(), serde_json::Value::String(value));
    }
}

/// The token response's `scope` (RFC 6749 §5.1): left out when nothing was granted, rather than
/// an empty string.
fn insert_scope(body: &mut serde_json::Map<String, Value>, scope: &str) {
    if !scope.is_empty() {
        body.insert("scope".into(), Value::from(scope));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_narrow_but_never_widen() {
        assert_eq!(narrow_scope(None, "a b").unwrap(), "a b");
        assert_eq!(narrow_scope(Some(" "), "a b").unwrap(), "a b");
        assert_eq!(narrow_scope(Some("b b"), "a b").unwrap(), "b");
        let e = narrow_scope(Some("a c"), "a b").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidScope);
        assert_eq!(
            narrow_scope(Some("a"), "").unwrap_err().code,
            ErrorCode::InvalidScope
        );
    }
}
