//! The server's protocol values: client metadata (RFC 7591 names, plus the seed's
//! `compliance_level`), and the newtypes that keep them apart.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::OAuthError;

/// A client's FAPI profile (seed 004): `null` / absent means none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComplianceLevel {
    /// FAPI 1 Advanced with private_key_jwt and PAR.
    Fapi1AdvPkjPar,
    /// FAPI 1 Advanced with mTLS and PAR.
    Fapi1AdvMtlsPar,
    /// FAPI 2.0 Security Profile with private_key_jwt and mTLS sender-constraining.
    Fapi2SpPkjMtls,
    /// FAPI 2.0 Security Profile with mTLS client authentication and sender-constraining.
    Fapi2SpMtlsMtls,
}

/// How a client authenticates at the token, PAR, introspection and revocation endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// RFC 7523: a JWT signed with a key of the client's jwks.
    PrivateKeyJwt,
    /// RFC 8705: a CA-issued certificate matching the registered subject DN or SAN.
    TlsClientAuth,
    /// RFC 8705: a self-signed certificate whose key is in the client's jwks.
    SelfSignedTlsClientAuth,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
            AuthMethod::TlsClientAuth => "tls_client_auth",
            AuthMethod::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_grant_types() -> Vec<String> {
    vec!["authorization_code".into()]
}

fn default_response_types() -> Vec<String> {
    vec!["code".into()]
}

/// A registered client, as the management API accepts and returns it. Field names follow RFC 7591
/// client metadata; `compliance_level` and `oidc_conformant` follow the seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    /// Assigned by the server; ignored when sent on create.
    #[serde(default)]
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: AuthMethod,
    /// The algorithm of private_key_jwt assertions: PS256 or ES256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_signing_alg: Option<String>,
    /// The client's public keys (a JWK Set), for private_key_jwt, self-signed mTLS and request
    /// objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_subject_dn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_dns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth_san_email: Option<String>,
    /// RFC 8705: access tokens bound to the client certificate (`cnf.x5t#S256`).
    #[serde(default)]
    pub tls_client_certificate_bound_access_tokens: bool,
    #[serde(default)]
    pub require_pushed_authorization_requests: bool,
    #[serde(default = "default_grant_types")]
    pub grant_types: Vec<String>,
    #[serde(default = "default_response_types")]
    pub response_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token_signed_response_alg: Option<String>,
    /// Space-separated scopes the client may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The client's FAPI profile, or null.
    #[serde(default)]
    pub compliance_level: Option<ComplianceLevel>,
    /// Seconds a pushed authorization request lives (below 600); unset: 30 for FAPI 2 levels,
    /// the server's `par_lifetime_seconds` otherwise (`policy::Policy::par_lifetime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub par_request_expiry: Option<i64>,
    #[serde(default = "default_true")]
    pub oidc_conformant: bool,
}

impl Client {
    /// What only the server's keys can decide: a registered `id_token_signed_response_alg`
    /// must be the algorithm of the ID-token key that signs now (`None`: no key yet), or every
    /// token request of the client would fail (OpenID Connect Dynamic Registration §2).
    pub fn check_for_server(&self, id_token_alg: Option<&str>) -> Result<(), OAuthError> {
        match (&self.id_token_signed_response_alg, id_token_alg) {
            (Some(wanted), Some(alg)) if wanted != alg => {
                Err(OAuthError::invalid_client_metadata(format!(
                    "id_token_signed_response_alg {wanted:?}: this server signs ID tokens with \
                     {alg} (keys are per purpose, not per client); leave it unset or set it to \
                     {alg}"
                )))
            }
            _ => Ok(()),
        }
    }

    /// RFC 7591 §2 checks that hold whatever the compliance level.
    pub fn validate(&self) -> Result<(), OAuthError> {
        let meta = |d: String| OAuthError::invalid_client_metadata(d);
        if self.redirect_uris.is_empty()
            && self.grant_types.iter().any(|g| g == "authorization_code")
        {
            return Err(OAuthError::invalid_redirect_uri(
                "redirect_uris is required for the authorization_code grant",
            ));
        }
        let policy = crate::policy::Policy::of(self);
        for uri in &self.redirect_uris {
            if crate::policy::is_wildcard(uri) {
                if !policy.wildcard_callbacks_allowed() {
                    return Err(OAuthError::invalid_redirect_uri(format!(
                        "redirect_uri {uri:?}: the configured compliance level does not allow \
                         wildcards in callbacks"
                    )));
                }
                // One `*`, as the whole leftmost label of an https host.
                let well_placed = uri.starts_with("https://*.")
                    && uri.matches('*').count() == 1
                    && uri
                        .get("https://*.".len()..)
                        .and_then(|rest| rest.split(['/', '?', ':']).next())
                        .is_some_and(|host| host.contains('.'));
                if !well_placed {
                    return Err(OAuthError::invalid_redirect_uri(format!(
                        "redirect_uri {uri:?}: a wildcard may only be the whole leftmost label \
                         of an https host below a registrable domain, e.g. \
                         https://*.example.com/callback"
                    )));
                }
            }
            let parsed = url::Url::parse(uri).map_err(|e| {
                OAuthError::invalid_redirect_uri(format!("redirect_uri {uri:?} is not a URL: {e}"))
            })?;
            if parsed.fragment().is_some() {
                return Err(OAuthError::invalid_redirect_uri(format!(
                    "redirect_uri {uri:?} must not contain a fragment"
                )));
            }
            let loopback = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
            if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
                return Err(OAuthError::invalid_redirect_uri(format!(
                    "redirect_uri {uri:?} must use https"
                )));
            }
        }
        if let Some(s) = self.par_request_expiry {
            if !(1..crate::policy::PAR_EXPIRY_LIMIT).contains(&s) {
                return Err(meta(format!(
                    "par_request_expiry must be between 1 and {} seconds",
                    crate::policy::PAR_EXPIRY_LIMIT - 1
                )));
            }
        }
        if let Some(name) = &self.client_name {
            // Shown to users on the login and consent pages: no control characters, and no
            // bidirectional overrides that could make it read as another name.
            let misleading = |c: char| c.is_control() || crate::pages::is_bidi_control(c);
            if name.chars().count() > 200 || name.chars().any(misleading) {
                return Err(meta(
                    "client_name must be at most 200 characters, without control or \
                     bidirectional-override characters"
                        .into(),
                ));
            }
        }
        if self.jwks.is_some() && self.jwks_uri.is_some() {
            return Err(meta("jwks and jwks_uri are mutually exclusive".into()));
        }
        if let Some(jwks) = &self.jwks {
            let keys = jwks.get("keys").and_then(|k| k.as_array());
            if keys.is_none() {
                return Err(meta("jwks must be a JWK Set: {\"keys\": [...]}".into()));
            }
            let private = ["d", "p", "q", "dp", "dq", "qi", "k"];
            if keys
                .into_iter()
                .flatten()
                .any(|k| private.iter().any(|m| k.get(m).is_some()))
            {
                return Err(meta("jwks must hold public keys only".into()));
            }
            let bad_x5c = keys
                .into_iter()
                .flatten()
                .any(|k| k.get("x5c").is_some_and(|x5c| !is_certificate_list(x5c)));
            if bad_x5c {
                return Err(meta(
                    "a jwks key's x5c must be a non-empty array of base64 DER certificates".into(),
                ));
            }
        }
        match self.token_endpoint_auth_method {
            AuthMethod::PrivateKeyJwt | AuthMethod::SelfSignedTlsClientAuth
                if self.jwks.is_none() && self.jwks_uri.is_none() =>
            {
                return Err(meta(format!(
                    "{} needs jwks or jwks_uri",
                    self.token_endpoint_auth_method.as_str()
                )));
            }
            AuthMethod::TlsClientAuth => {
                let names = [
                    &self.tls_client_auth_subject_dn,
                    &self.tls_client_auth_san_dns,
                    &self.tls_client_auth_san_uri,
                    &self.tls_client_auth_san_ip,
                    &self.tls_client_auth_san_email,
                ];
                if names.iter().filter(|n| n.is_some()).count() != 1 {
                    return Err(meta(
                        "tls_client_auth needs exactly one of tls_client_auth_subject_dn, \
                         tls_client_auth_san_dns, _san_uri, _san_ip or _san_email"
                            .into(),
                    ));
                }
            }
            _ => {}
        }
        if let Some(alg) = &self.token_endpoint_auth_signing_alg {
            if alg != "PS256" && alg != "ES256" {
                return Err(meta(format!(
                    "token_endpoint_auth_signing_alg {alg:?}: PS256 or ES256"
                )));
            }
        }
        if let Some(alg) = &self.id_token_signed_response_alg {
            if alg != "PS256" && alg != "ES256" {
                return Err(meta(format!(
                    "id_token_signed_response_alg {alg:?}: PS256 or ES256"
                )));
            }
        }
        let known_grants = ["authorization_code", "refresh_token", "client_credentials"];
        if let Some(g) = self
            .grant_types
            .iter()
            .find(|g| !known_grants.contains(&g.as_str()))
        {
            return Err(meta(format!("grant type {g:?} is not supported")));
        }
        let known_responses = ["code", "code id_token"];
        if let Some(r) = self
            .response_types
            .iter()
            .find(|r| !known_responses.contains(&r.as_str()))
        {
            return Err(meta(format!("response type {r:?} is not supported")));
        }
        Ok(())
    }
}

/// An `x5c` names certificates the client may present (self_signed_tls_client_auth matches its
/// first): RFC 7517 §4.7, a non-empty array of base64 (not base64url) DER.
fn is_certificate_list(x5c: &serde_json::Value) -> bool {
    let decodes = |c: &serde_json::Value| {
        c.as_str().is_some_and(|c| {
            base64::engine::general_purpose::STANDARD
                .decode(c)
                .is_ok_and(|der| !der.is_empty())
        })
    };
    x5c.as_array()
        .is_some_and(|certs| !certs.is_empty() && certs.iter().all(decodes))
}
