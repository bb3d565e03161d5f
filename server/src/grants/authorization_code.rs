//! RFC 6749 §4.1.3 with RFC 7636 PKCE: exchanging a code for an access token, an ID token (when
//! `openid` was granted) and a refresh token (when the client registered the grant). The access
//! token is for the API the authorization request named (RFC 8707 `resource`), if any.
//!
//! The exchange reads the code's grant first, without consuming it, checks the request against
//! it and signs the tokens; then ONE write consumes the code (the database decides: `UPDATE …
//! WHERE used = FALSE`) and records the tokens, so no token leaves unrecorded and a code yields
//! one set of tokens at most. Signed tokens whose write lost a race are thrown away unissued.
//!
//! A request refused for what it presented (a wrong redirect_uri, PKCE verifier, resource…)
//! spends the code all the same, so a code that has been refused is never tried again (requests
//! already in flight with it are each checked, and at most one of them gets tokens); only the
//! server's own trouble (a 5xx, such as a busy HSM's 503) leaves it for a retry. A code
//! presented again after it was spent revokes everything issued under its grant (RFC 6749
//! §4.1.2).

use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::IgnoredAny;
use sha2::{Digest, Sha256};

use super::{
    UserGrant, grant_api, grant_details, insert, refused, require_grant_type, user_tokens,
};
use crate::client_auth::AuthenticatedClient;
use crate::endpoints::token::token_response;
use crate::error::OAuthError;
use crate::form::Form;
use crate::issue;
use crate::model::Client;
use crate::state::AppState;
use crate::store::{
    AccessTokenRow, AuthorizationGrant, RedeemError, RedeemedCode, RefreshTokenRow,
};

pub async fn grant(
    state: &AppState,
    client: &Client,
    authenticated: &AuthenticatedClient,
    form: &Form,
) -> Result<Response, OAuthError> {
    require_grant_type(client, "authorization_code")?;
    let code = form
        .get("code")
        .ok_or_else(|| OAuthError::invalid_request("code is required"))?;
    let now = state.now();
    let grant = match state
        .store
        .peek_code::<AuthorizationGrant>(code, &client.client_id, now)
    {
        Ok(g) => g,
        Err(e) => return Err(refused(state, client, e, REPLAYED).await),
    };
    let issued = match tokens(state, client, authenticated, form, &grant, now).await {
        Ok(t) => t,
        Err(e) if e.status.is_client_error() => {
            spend(state, client, code, now).await?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    match state
        .store
        .redeem_code_issuing(code, &client.client_id, now, issued.access, issued.refresh)
        .await
    {
        Ok(()) => Ok(token_response(issued.body)),
        Err(e) => Err(refused(state, client, e, REPLAYED).await),
    }
}

/// A token response made for a code, not yet issued: its records are written with the code's
/// redemption.
struct Unissued {
    body: serde_json::Value,
    access: AccessTokenRow,
    refresh: Option<RefreshTokenRow>,
}

/// Checks the token request against the code's grant and makes the tokens.
async fn tokens(
    state: &AppState,
    client: &Client,
    authenticated: &AuthenticatedClient,
    form: &Form,
    redeemed: &RedeemedCode<AuthorizationGrant>,
    now: i64,
) -> Result<Unissued, OAuthError> {
    let g = &redeemed.data;
    // RFC 6749 §4.1.3: the same redirect_uri as in the authorization request, required if that
    // request sent one; if it did not, one sent here must still be the one the code went to.
    let sent = form.get("redirect_uri");
    let may_omit = g.redirect_uri_defaulted && sent.is_none();
    if !g.redirect_uri.is_empty() && !may_omit && sent != Some(g.redirect_uri.as_str()) {
        return Err(OAuthError::invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    check_pkce(g, form.get("code_verifier"))?;
    let api = grant_api(state, client, g, &g.scope, form).await?;
    let details = grant_details(g, form)?;
    let cnf = issue::bound_certificate(client, authenticated)?;
    let (mut body, access) = user_tokens(
        state,
        client,
        &UserGrant {
            grant: g,
            grant_id: &redeemed.grant_id,
            scope: &g.scope,
            cnf_x5t_s256: cnf.as_deref(),
            nonce: g.nonce.as_deref(),
            api: api.as_ref(),
            authorization_details: details.as_deref(),
        },
    )
    .await?;
    let refresh = if client.grant_types.iter().any(|t| t == "refresh_token") {
        let (token, row) = RefreshTokenRow::new(
            &redeemed.grant_id,
            &client.client_id,
            g,
            now,
            now + state.lifetimes.refresh_token,
        )?;
        insert(&mut body, "refresh_token", token);
        Some(row)
    } else {
        None
    };
    Ok(Unissued {
        body,
        access,
        refresh,
    })
}

/// Spends a code whose token request was refused, so that it is never tried again.
async fn spend(state: &AppState, client: &Client, code: &str, now: i64) -> Result<(), OAuthError> {
    match state
        .store
        .redeem_code::<IgnoredAny>(code, &client.client_id, now)
        .await
    {
        Ok(_) | Err(RedeemError::Unknown | RedeemError::Expired | RedeemError::WrongClient) => {
            Ok(())
        }
        Err(e) => Err(refused(state, client, e, REPLAYED).await),
    }
}

const REPLAYED: &str = "authorization code presented twice: its grant is revoked";

/// RFC 7636 §4.6: BASE64URL(SHA256(code_verifier)) == code_challenge, for S256 (the only
/// method /authorize accepts). A code issued without a challenge needs no verifier; a code
/// issued with one refuses a missing, malformed or wrong verifier with `invalid_grant`.
fn check_pkce(g: &AuthorizationGrant, verifier: Option<&str>) -> Result<(), OAuthError> {
    let Some(challenge) = &g.code_challenge else {
        return match verifier {
            None => Ok(()),
            Some(_) => Err(OAuthError::invalid_grant(
                "code_verifier given for a code issued without code_challenge",
            )),
        };
    };
    let fail = || OAuthError::invalid_grant("PKCE verification failed");
    let verifier = verifier.ok_or_else(fail)?;
    // §4.1: 43 to 128 unreserved characters.
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed || g.code_challenge_method.as_deref().unwrap_or("plain") != "S256" {
        return Err(fail());
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if computed.as_bytes() == challenge.as_bytes() {
        Ok(())
    } else {
        Err(fail())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant_with(challenge: Option<&str>) -> AuthorizationGrant {
        AuthorizationGrant {
            code_challenge: challenge.map(str::to_owned),
            code_challenge_method: challenge.map(|_| "S256".to_owned()),
            ..Default::default()
        }
    }

    #[test]
    fn pkce_s256_matches_the_rfc_7636_example() {
        // RFC 7636 Appendix B.
        let g = grant_with(Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(check_pkce(&g, Some("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")).is_ok());
        for bad in [
            None,
            Some("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj"),
            Some("short"),
            Some("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk!"),
        ] {
            let e = check_pkce(&g, bad).unwrap_err();
            assert_eq!(e.code, crate::error::ErrorCode::InvalidGrant, "{bad:?}");
        }
        let mut plain = g.clone();
        plain.code_challenge_method = Some("plain".into());
        assert!(check_pkce(&plain, Some("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")).is_err());
    }

    #[test]
    fn no_challenge_no_verifier() {
        assert!(check_pkce(&grant_with(None), None).is_ok());
        assert!(check_pkce(&grant_with(None), Some("x".repeat(43).as_str())).is_err());
    }
}
