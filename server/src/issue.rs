//! Making tokens: RFC 9068 JWT access tokens and OpenID Connect ID tokens, both signed in the
//! HSM through the keystore, and the record of every access token (by `jti`) that
//! introspection and revocation read.
//!
//! An access token for a registered API (RFC 8707) carries the API's identifier as `aud`, lives
//! the API's `token_lifetime`, and, when the API registered `token_encryption`, leaves as a
//! nested JWT: the signed token encrypted to the API's public key
//! ([`crate::token_encryption`]). Such a token is recorded with the hash of its string too, since
//! the server cannot read it back.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use strongroom_keystore::KeyPurpose;

use crate::client_auth::AuthenticatedClient;
use crate::error::OAuthError;
use crate::model::Client;
use crate::policy::Policy;
use crate::resource_server::ResourceServer;
use crate::state::AppState;
use crate::store::{AccessTokenKeys, AccessTokenRow};

/// What an access token says, apart from what the server adds (iss, iat, exp, jti, client_id).
#[derive(Debug, Clone, Default)]
pub struct AccessTokenRequest<'a> {
    /// The user, or the client itself for client_credentials.
    pub sub: &'a str,
    /// Space-separated.
    pub scope: &'a str,
    /// The resource (RFC 8707) the token is for; the issuer when it is for our own endpoints.
    pub audience: &'a str,
    /// The grant the token belongs to (None for client_credentials): revoking the grant
    /// revokes the token.
    pub grant_id: Option<&'a str>,
    pub auth_time: Option<i64>,
    pub acr: Option<&'a str>,
    /// RFC 8705 `cnf.x5t#S256`.
    pub cnf_x5t_s256: Option<&'a str>,
    /// The registered API the token is for: its identifier is the audience (`audience` is then
    /// ignored), and its lifetime, signing algorithm and encryption apply.
    pub api: Option<&'a ResourceServer>,
    /// RFC 9396: the approved details (claim `authorization_details`) and the approval's
    /// transaction reference (claim `txn`).
    pub authorization_details: Option<&'a [Value]>,
    pub txn: Option<&'a str>,
}

#[derive(Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: i64,
}

/// A bearer token is a credential: a Debug print shows only that there is one.
impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// An access token signed (and encrypted, if its API asks) whose record is not written yet: the
/// caller writes it on its own, or in the same write as the code redemption it was issued for.
/// A token whose record is never written was never issued: introspection does not know it.
#[derive(Debug)]
pub struct UnrecordedToken {
    pub issued: IssuedToken,
    pub record: AccessTokenRow,
}

/// Signs an RFC 9068 access token (`typ: at+jwt`) in the HSM, encrypts it to its API's key if
/// the API asks for that, and records its `jti`.
pub async fn access_token(
    state: &AppState,
    client: &Client,
    req: &AccessTokenRequest<'_>,
) -> Result<IssuedToken, OAuthError> {
    let t = unrecorded_access_token(state, client, req).await?;
    state.store.record_access_token(t.record).await?;
    Ok(t.issued)
}

/// As [`access_token`], leaving the record to the caller.
pub async fn unrecorded_access_token(
    state: &AppState,
    client: &Client,
    req: &AccessTokenRequest<'_>,
) -> Result<UnrecordedToken, OAuthError> {
    let now = state.now();
    let jti = crate::store::time_ordered_id()?;
    let (audience, lifetime) = match req.api {
        // Registration keeps an API's lifetime within the keys' retire window; one registered
        // before the window was shortened is cut to it, so no token outlives its key.
        Some(api) => (
            api.identifier.as_str(),
            api.token_lifetime
                .unwrap_or(state.lifetimes.access_token)
                .min(state.keystore.policy().max_token_lifetime),
        ),
        None => (req.audience, state.lifetimes.access_token),
    };
    if let Some(wanted) = req.api.and_then(|a| a.signing_alg.as_deref()) {
        let alg = state.keystore.signing_key(KeyPurpose::AccessToken)?.alg;
        if wanted != alg.jose_name() {
            // Registration refused it; the keys may have changed algorithm since.
            tracing::error!(api = %audience, wanted, signing = alg.jose_name(),
                "an API's signing_alg is not the access-token key's algorithm");
            return Err(OAuthError::server_error(format!(
                "this server signs access tokens with {}, not the API's registered {wanted}",
                alg.jose_name()
            )));
        }
    }
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(state.issuer));
    claims.insert("sub".into(), json!(req.sub));
    claims.insert("aud".into(), json!(audience));
    claims.insert("client_id".into(), json!(client.client_id));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + lifetime));
    claims.insert("jti".into(), json!(jti));
    // No scope granted (a client with none registered, or RAR details alone): no claim rather
    // than an empty one (RFC 9068 §2.2.3).
    if !req.scope.is_empty() {
        claims.insert("scope".into(), json!(req.scope));
    }
    if let Some(t) = req.auth_time {
        claims.insert("auth_time".into(), json!(t));
    }
    if let Some(a) = req.acr {
        claims.insert("acr".into(), json!(a));
    }
    if let Some(t) = req.cnf_x5t_s256 {
        claims.insert("cnf".into(), json!({ "x5t#S256": t }));
    }
    if let Some(d) = req.authorization_details {
        claims.insert("authorization_details".into(), Value::Array(d.to_vec()));
    }
    if let Some(t) = req.txn {
        claims.insert("txn".into(), json!(t));
    }
    let claims = Value::Object(claims);
    let signed = state
        .keystore
        .sign_jwt(KeyPurpose::AccessToken, Some("at+jwt"), &claims)
        .await?;
    let encryption = req.api.and_then(|a| a.token_encryption.as_ref());
    let token = match encryption {
        None => signed,
        Some(settings) => settings
            .shared_encryptor()
            .and_then(|e| e.wrap(&signed))
            .map_err(|why| {
                tracing::error!(api = %audience, error = %why,
                    "an access token could not be encrypted to its API's key");
                OAuthError::server_error("the access token could not be encrypted")
            })?,
    };
    let keys = AccessTokenKeys {
        resource: req.api.map(|a| a.identifier.as_str()),
        opaque_token: encryption.map(|_| token.as_str()),
    };
    let record = AccessTokenRow::new(
        &jti,
        &client.client_id,
        req.grant_id,
        &claims,
        now + lifetime,
        keys,
    )?;
    Ok(UnrecordedToken {
        issued: IssuedToken {
            token,
            expires_in: lifetime,
        },
        record,
    })
}

/// What an ID token says about the authentication (OpenID Connect Core §2).
#[derive(Debug, Clone, Default)]
pub struct IdTokenRequest<'a> {
    pub sub: &'a str,
    pub auth_time: Option<i64>,
    pub nonce: Option<&'a str>,
    pub acr: Option<&'a str>,
    /// The access token issued with it (`at_hash`).
    pub access_token: Option<&'a str>,
    /// The authorization code it is issued with in the hybrid flow's front channel (`c_hash`,
    /// OpenID Connect Core §3.3.2.11). `None` at the token endpoint, which omits `c_hash`
    /// (§3.3.3.6 allows it; versions of the FAPI conformance suite warn on it there).
    pub code: Option<&'a str>,
    /// FAPI 1 (`policy::Policy::s_hash`): the `s_hash` of the authorization request's state.
    pub s_hash: Option<&'a str>,
}

/// Signs an ID token for `client` in the HSM.
pub async fn id_token(
    state: &AppState,
    client: &Client,
    req: &IdTokenRequest<'_>,
) -> Result<String, OAuthError> {
    let key = state.keystore.signing_key(KeyPurpose::IdToken)?;
    let alg = key.alg.jose_name();
    if let Some(wanted) = &client.id_token_signed_response_alg {
        if wanted != alg {
            // Registration should have refused it; the keys may have changed algorithm since.
            tracing::error!(client_id = %client.client_id, wanted, signing = alg,
                "client's id_token_signed_response_alg is not the ID-token key's algorithm");
            return Err(OAuthError::server_error(format!(
                "this server signs ID tokens with {alg}, not the registered {wanted}"
            )));
        }
    }
    let now = state.now();
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(state.issuer));
    claims.insert("sub".into(), json!(req.sub));
    claims.insert("aud".into(), json!(client.client_id));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + state.lifetimes.id_token));
    if let Some(t) = req.auth_time {
        claims.insert("auth_time".into(), json!(t));
    }
    if let Some(n) = req.nonce {
        claims.insert("nonce".into(), json!(n));
    }
    if let Some(a) = req.acr {
        claims.insert("acr".into(), json!(a));
    }
    if let Some(t) = req.access_token {
        claims.insert("at_hash".into(), json!(left_half_hash(t)));
    }
    if let Some(c) = req.code {
        claims.insert("c_hash".into(), json!(left_half_hash(c)));
    }
    if let Some(s) = req.s_hash {
        claims.insert("s_hash".into(), json!(s));
    }
    Ok(state
        .keystore
        .sign_jwt(KeyPurpose::IdToken, Some("JWT"), &Value::Object(claims))
        .await?)
}

/// OpenID Connect Core §3.1.3.6 / §3.3.2.11: base64url of the left half of the hash of the
/// ASCII value, with the hash of the signing algorithm. Every algorithm we sign ID tokens with
/// (PS256, ES256) uses SHA-256.
pub fn left_half_hash(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.get(..16).unwrap_or_default())
}

/// The certificate thumbprint to bind tokens to, when the client asks for bound tokens
/// (RFC 8705 §3): such a client must present its certificate.
pub fn bound_certificate(
    client: &Client,
    authenticated: &AuthenticatedClient,
) -> Result<Option<String>, OAuthError> {
    if !client.tls_client_certificate_bound_access_tokens
        && !Policy::of(client).bound_tokens_required()
    {
        return Ok(None);
    }
    match &authenticated.certificate_thumbprint {
        Some(t) => Ok(Some(t.clone())),
        None => Err(OAuthError::invalid_request(
            "this client's access tokens are certificate-bound: connect to the mTLS endpoint \
             with a client certificate",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_debug_print_does_not_show_the_token() {
        let t = IssuedToken {
            token: "eyJhbGciOiJQUzI1NiJ9.secret.sig".into(),
            expires_in: 300,
        };
        let printed = format!("{t:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(printed.contains("300"), "{printed}");
    }

    #[test]
    fn at_hash_matches_the_openid_connect_example() {
        // OpenID Connect Core, Appendix A.3/A.4: access_token "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"
        // has at_hash "77QmUPtjPfzWtF2AnpK9RQ" (SHA-256, left 128 bits).
        assert_eq!(
            left_half_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
        // c_hash of code "Qcb0Orv1zh30vL1MPRsbm-diHiMwcLyZvn1arpZv-Jxf_11jnpEX3Tgfvk" (A.4).
        assert_eq!(
            left_half_hash("Qcb0Orv1zh30vL1MPRsbm-diHiMwcLyZvn1arpZv-Jxf_11jnpEX3Tgfvk"),
            "LDktKdoQak3Pk0cnXxCltA"
        );
    }
}
