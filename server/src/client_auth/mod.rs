//! Client authentication at the token, PAR, introspection and revocation endpoints: RFC 7523
//! `private_key_jwt` and RFC 8705 `tls_client_auth` / `self_signed_tls_client_auth`.
//!
//! Pure logic: no HTTP, no database, the time is passed in. What the caller still owns:
//! - finding the [`Client`] (by `client_id`, or for an assertion by its unverified `iss`, see
//!   [`peek_assertion_client_id`]);
//! - the replay check: [`AuthenticatedClient::assertion`] carries the jti and exp to record
//!   single-use in the database (an `INSERT … ON CONFLICT DO NOTHING` until `exp`);
//! - fetching a `jwks_uri` (a [`JwksSource`], typically an HTTP fetcher with a cache);
//! - the peer certificate chain the TLS layer captured (or an RFC 9440 header, when configured).
//!
//! Every authentication failure is `invalid_client` (401) with a description precise enough
//! for the client's developer, never echoing key material.

mod mtls;
mod private_key_jwt;

use std::future::Future;
use std::pin::Pin;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls::pki_types::CertificateDer;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::client_jws::KeyFitness;
use crate::error::OAuthError;
use crate::model::{AuthMethod, Client};

pub use mtls::{ClientCaBundle, verify_self_signed_tls_client_auth, verify_tls_client_auth};
pub use private_key_jwt::{ClientAssertionCheck, peek_assertion_client_id};

/// What registration must refuse because authentication could never succeed with it (RFC 7591
/// §3.2.2 `invalid_client_metadata`, rather than a 401 at every token request): a jwks key that
/// claims to be an RSA or EC P-256 signing key but is not one, or a jwks none of whose keys can
/// verify (keys for other purposes beside a usable one are left alone, RFC 7517 §5), a `tls_client_auth_subject_dn` that is not an RFC 4514 string, a
/// `tls_client_auth_san_ip` that is not an IP address, a `tls_client_auth_san_uri` that is not an
/// absolute URI. [`Client::validate`] has already checked the shape.
pub fn check_registration(client: &Client) -> Result<(), OAuthError> {
    let meta = OAuthError::invalid_client_metadata;
    let keys = client
        .jwks
        .as_ref()
        .and_then(|j| j.get("keys"))
        .and_then(Value::as_array);
    let mut usable = 0;
    let mut ignored = Vec::new();
    for (i, key) in keys.into_iter().flatten().enumerate() {
        let Some(key) = key.as_object() else {
            return Err(meta(format!("jwks key {i} is not a JSON object")));
        };
        match crate::client_jws::signing_key_fitness(key) {
            KeyFitness::Usable => usable += 1,
            KeyFitness::Ignored(why) => ignored.push(format!("key {i}: {why}")),
            KeyFitness::Broken(why) => {
                return Err(meta(format!(
                    "jwks key {i} cannot verify signatures: {why}"
                )));
            }
        }
    }
    // Keys for other purposes may sit beside ours; but an inline jwks needs one that verifies.
    if usable == 0 && !ignored.is_empty() {
        return Err(meta(format!(
            "no jwks key can verify PS256 or ES256 ({})",
            ignored.join("; ")
        )));
    }
    if let Some(dn) = &client.tls_client_auth_subject_dn {
        mtls::parse_rfc4514(dn).map_err(|why| {
            meta(format!(
                "tls_client_auth_subject_dn is not an RFC 4514 string: {why}"
            ))
        })?;
    }
    if let Some(ip) = &client.tls_client_auth_san_ip {
        ip.trim().parse::<std::net::IpAddr>().map_err(|_| {
            meta("tls_client_auth_san_ip is not an IPv4 or IPv6 address".to_owned())
        })?;
    }
    if let Some(uri) = &client.tls_client_auth_san_uri {
        url::Url::parse(uri)
            .map_err(|_| meta("tls_client_auth_san_uri is not an absolute URI".to_owned()))?;
    }
    Ok(())
}

/// RFC 7523 §2.2: the only `client_assertion_type` this server accepts.
pub const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The future a [`JwksSource`] returns (boxed, so the source can live behind `dyn`).
pub type JwksFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, String>> + Send + 'a>>;

/// Where the JWK Set of a `jwks_uri` client comes from: the server plugs in an HTTP fetcher
/// with a cache. The verification itself only ever sees the JWK Set as a JSON value.
///
/// The error string is shown to the client's developer (inside an `invalid_client`
/// description), so it should say what went wrong with *their* URI ("HTTP 404", "not JSON",
/// "timed out"), not the server's internals.
pub trait JwksSource: Send + Sync {
    fn fetch<'a>(&'a self, uri: &'a str) -> JwksFuture<'a>;

    /// Forgets what was cached for `uri`, so the next `fetch` goes to the network (after a
    /// client's keys changed, or on an unknown `kid`).
    fn invalidate(&self, _uri: &str) {}

    /// For an assertion naming an unknown `kid`: makes the next `fetch` go to the network if
    /// the cached set is older than `min_age`, and says whether it will. The age limit keeps a
    /// stream of bad assertions from turning into a stream of fetches of the client's URI.
    fn refetch_if_older_than(&self, _uri: &str, _min_age: std::time::Duration) -> bool {
        false
    }
}

/// A cached `jwks_uri` set younger than this is not fetched again for an unknown `kid`.
pub const KID_REFETCH_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(30);

/// base64url(SHA-256(DER)) of a certificate: the `x5t#S256` confirmation method of RFC 8705
/// §3.1, for `cnf` in access tokens and introspection responses.
pub fn certificate_thumbprint(leaf_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(leaf_der))
}

/// The jti and exp of a verified client assertion: the caller records the jti as used until
/// `exp` (plus the clock skew) and refuses the request if it was already recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionJti {
    pub jti: String,
    pub exp: i64,
}

/// A client that proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedClient {
    pub client_id: String,
    pub method: AuthMethod,
    /// `private_key_jwt` only: the jti to record (replay cache).
    pub assertion: Option<AssertionJti>,
    /// `x5t#S256` of the leaf certificate whenever the connection presented one, whatever the
    /// method: a private_key_jwt client can still get certificate-bound tokens.
    pub certificate_thumbprint: Option<String>,
}

/// What the request carried for client authentication.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientCredentials<'a> {
    /// The `client_assertion_type` form parameter.
    pub client_assertion_type: Option<&'a str>,
    /// The `client_assertion` form parameter.
    pub client_assertion: Option<&'a str>,
    /// The peer certificate chain, leaf first, as the TLS layer captured it.
    pub peer_certificates: Option<&'a [CertificateDer<'a>]>,
}

/// The server's side of client authentication: who it is, what it trusts, and the time.
#[derive(Clone, Copy)]
pub struct ClientAuthPolicy<'a> {
    /// Values an assertion's `aud` may name: the issuer identifier and the endpoint URLs.
    pub accepted_audiences: &'a [String],
    /// `aud` must be a string (FAPI 2 levels), not an array.
    pub aud_string_only: bool,
    /// Seconds since the Unix epoch.
    pub now: i64,
    /// How far in the future an assertion's `exp` may lie, e.g. 300 s.
    pub max_assertion_lifetime: i64,
    /// Tolerance for the client's clock, in seconds.
    pub clock_skew: i64,
    /// The CAs trusted for `tls_client_auth`; `None` when the server trusts none.
    pub client_ca: Option<&'a ClientCaBundle>,
    /// Fetches `jwks_uri`; `None` when the server has no fetcher (then only inline `jwks`).
    pub jwks_source: Option<&'a dyn JwksSource>,
}

impl std::fmt::Debug for ClientAuthPolicy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuthPolicy")
            .field("accepted_audiences", &self.accepted_audiences)
            .field("aud_string_only", &self.aud_string_only)
            .field("now", &self.now)
            .field("max_assertion_lifetime", &self.max_assertion_lifetime)
            .field("clock_skew", &self.clock_skew)
            .field("client_ca", &self.client_ca)
            .field("jwks_source", &self.jwks_source.map(|_| "…"))
            .finish()
    }
}

/// The client's JWK Set: inline `jwks`, or `jwks_uri` through the source.
pub async fn client_jwks(
    client: &Client,
    source: Option<&dyn JwksSource>,
) -> Result<Value, OAuthError> {
    if let Some(jwks) = &client.jwks {
        return Ok(jwks.clone());
    }
    let Some(uri) = &client.jwks_uri else {
        return Err(OAuthError::invalid_client(
            "the client has registered neither jwks nor jwks_uri",
        ));
    };
    let Some(source) = source else {
        return Err(OAuthError::server_error(
            "this server cannot fetch jwks_uri; register the keys inline as jwks",
        ));
    };
    source.fetch(uri).await.map_err(|e| {
        OAuthError::invalid_client(format!("the client's jwks_uri could not be fetched: {e}"))
    })
}

/// Authenticates `client` with what the request carried, dispatching on the client's
/// registered `token_endpoint_auth_method`.
///
/// - `private_key_jwt`: a `client_assertion` of type [`JWT_BEARER_ASSERTION_TYPE`] is required;
/// - `tls_client_auth` / `self_signed_tls_client_auth`: a certificate is required and a
///   `client_assertion` is refused (one client, one method).
///
/// The certificate thumbprint is returned whenever a certificate was presented.
pub async fn authenticate(
    client: &Client,
    credentials: &ClientCredentials<'_>,
    policy: &ClientAuthPolicy<'_>,
) -> Result<AuthenticatedClient, OAuthError> {
    let method = client.token_endpoint_auth_method;
    match (
        credentials.client_assertion_type,
        credentials.client_assertion,
    ) {
        (Some(t), _) if t != JWT_BEARER_ASSERTION_TYPE => {
            return Err(OAuthError::invalid_client(format!(
                "client_assertion_type {:?} is not supported: use {JWT_BEARER_ASSERTION_TYPE}",
                private_key_jwt::shorten(t)
            )));
        }
        (Some(_), None) => {
            return Err(OAuthError::invalid_client(
                "client_assertion_type was sent without a client_assertion",
            ));
        }
        (None, Some(_)) => {
            return Err(OAuthError::invalid_client(format!(
                "client_assertion was sent without client_assertion_type \
                 {JWT_BEARER_ASSERTION_TYPE}"
            )));
        }
        _ => {}
    }
    let leaf = credentials.peer_certificates.and_then(|c| c.first());
    let certificate_thumbprint = leaf.map(|c| certificate_thumbprint(c));

    let assertion = match method {
        AuthMethod::PrivateKeyJwt => {
            let Some(assertion) = credentials.client_assertion else {
                return Err(OAuthError::invalid_client(
                    "this client authenticates with private_key_jwt: client_assertion and \
                     client_assertion_type are required",
                ));
            };
            let check = ClientAssertionCheck {
                client,
                assertion,
                accepted_audiences: policy.accepted_audiences,
                aud_string_only: policy.aud_string_only,
                now: policy.now,
                max_lifetime: policy.max_assertion_lifetime,
                clock_skew: policy.clock_skew,
            };
            let mut jwks = client_jwks(client, policy.jwks_source).await?;
            // A jwks_uri client that rotated its keys: fetch its set again, once, when the
            // cached copy is old enough.
            if let (Some(uri), Some(source)) = (&client.jwks_uri, policy.jwks_source) {
                if private_key_jwt::names_unknown_kid(assertion, &jwks)
                    && source.refetch_if_older_than(uri, KID_REFETCH_MIN_AGE)
                {
                    jwks = client_jwks(client, Some(source)).await?;
                }
            }
            let verified = check.verify_with_jwks(&jwks)?;
            Some(AssertionJti {
                jti: verified.jti,
                exp: verified.exp,
            })
        }
        AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth => {
            if credentials.client_assertion.is_some() {
                return Err(OAuthError::invalid_client(format!(
                    "this client authenticates with {}: a client_assertion is not accepted",
                    method.as_str()
                )));
            }
            let chain = credentials.peer_certificates.unwrap_or(&[]);
            if method == AuthMethod::TlsClientAuth {
                let Some(ca) = policy.client_ca else {
                    return Err(OAuthError::server_error(
                        "tls_client_auth is not available: this server trusts no client CA",
                    ));
                };
                verify_tls_client_auth(client, chain, ca, policy.now)?;
            } else {
                if chain.is_empty() {
                    return Err(mtls::no_certificate(method));
                }
                let jwks = client_jwks(client, policy.jwks_source).await?;
                verify_self_signed_tls_client_auth(chain, &jwks)?;
            }
            None
        }
    };
    Ok(AuthenticatedClient {
        client_id: client.client_id.clone(),
        method,
        assertion,
        certificate_thumbprint,
    })
}

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests;
