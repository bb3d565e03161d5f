//! RFC 7523 §3 / OpenID Connect Core §9 `private_key_jwt`: a compact JWS signed with PS256 or
//! ES256 by a key of the client's JWK Set. Signatures are checked by josekit (OpenSSL).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

pub(super) use crate::client_jws::shorten;
use crate::client_jws::{self, Alg, BadHeader, Compact, Header, when};
use crate::error::OAuthError;
use crate::model::Client;

/// Assertions larger than this are refused before any parsing.
const MAX_ASSERTION_LEN: usize = 64 * 1024;
/// A jti longer than this is refused (it is stored in the replay cache).
const MAX_JTI_LEN: usize = 1024;

fn fail(d: impl Into<String>) -> OAuthError {
    OAuthError::invalid_client(d)
}

/// One private_key_jwt assertion to verify, with the server's rules. Time in seconds since the
/// Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct ClientAssertionCheck<'a> {
    pub client: &'a Client,
    pub assertion: &'a str,
    /// Values `aud` may name (the issuer identifier, the endpoint URLs): one must be in `aud`.
    pub accepted_audiences: &'a [String],
    /// FAPI 2.0 Security Profile §5.3.2.1 item 8: `aud` must be a single string, not an array.
    pub aud_string_only: bool,
    pub now: i64,
    /// How far beyond `now` `exp` may lie (e.g. 300 s).
    pub max_lifetime: i64,
    /// Tolerance for the client's clock (e.g. 30 s).
    pub clock_skew: i64,
}

/// The claims of an assertion that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedAssertion {
    /// Record as used until `exp` (the replay check is the caller's).
    pub jti: String,
    pub exp: i64,
    pub iat: Option<i64>,
    /// The header's alg (PS256 or ES256) and kid.
    pub alg: String,
    pub kid: Option<String>,
    /// Every claim of the payload.
    pub claims: Map<String, Value>,
}

/// The unverified `iss` (or, failing that, `sub`) of an assertion, to find the client when the
/// request has no `client_id`. Nothing may be trusted until [`ClientAssertionCheck`] passed.
pub fn peek_assertion_client_id(assertion: &str) -> Option<String> {
    let mut parts = assertion.split('.');
    let _header = parts.next()?;
    let payload = parts.next()?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    ["iss", "sub"]
        .iter()
        .find_map(|c| claims.get(*c).and_then(Value::as_str).map(str::to_owned))
}

/// Whether the assertion names (in its header's `kid`) a key that `jwks` does not hold: the sign
/// that a `jwks_uri` client rotated its keys since the set was cached. Read without
/// verification.
pub fn names_unknown_kid(assertion: &str, jwks: &Value) -> bool {
    client_jws::peek_header(assertion)
        .and_then(|h| h.get("kid").and_then(Value::as_str).map(str::to_owned))
        .is_some_and(|kid| !client_jws::has_kid(jwks, &kid))
}

/// A NumericDate claim (RFC 7519 §2): a JSON number, fractions truncated.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, OAuthError> {
    client_jws::numeric_date(claims, name)
        .map_err(|why| fail(format!("client assertion claim {name} {why}")))
}

impl ClientAssertionCheck<'_> {
    /// Verifies against the client's inline `jwks`. For a `jwks_uri` client, fetch the set
    /// (see [`super::client_jwks`]) and call [`Self::verify_with_jwks`].
    #[cfg(test)]
    pub fn verify(&self) -> Result<VerifiedAssertion, OAuthError> {
        let Some(jwks) = &self.client.jwks else {
            return Err(fail(
                "the client has no inline jwks to verify its client assertion with",
            ));
        };
        self.verify_with_jwks(jwks)
    }

    /// Verifies against a JWK Set (`{"keys": [...]}`), wherever it came from.
    pub fn verify_with_jwks(&self, jwks: &Value) -> Result<VerifiedAssertion, OAuthError> {
        let input = match client_jws::compact(self.assertion, MAX_ASSERTION_LEN) {
            Ok(Compact::Jws(jws)) => jws,
            Ok(Compact::Jwe(_)) => {
                return Err(fail(
                    "client_assertion is a JWE (five parts); an encrypted assertion is not \
                     accepted: send a signed JWT (compact JWS, three parts)",
                ));
            }
            Ok(Compact::Json) => {
                return Err(fail(
                    "client_assertion is a JWS JSON serialization; a compact JWS (a signed JWT) \
                     is required",
                ));
            }
            Ok(Compact::Parts(n)) => {
                return Err(fail(format!(
                    "client_assertion is not a compact JWS: {n} dot-separated parts instead of 3"
                )));
            }
            Err(e) => return Err(fail(e.describe("client_assertion"))),
        };
        // The header, before any key is chosen.
        let Header { alg, kid } =
            client_jws::header(input, &self.allowed_algs()).map_err(|e| self.header_refused(e))?;

        // The key: by kid, or the only one that fits.
        let jwk = client_jws::select_key(jwks, kid.as_deref(), alg)
            .map_err(|e| fail(e.describe("client assertion", "assertion", alg)))?;
        let payload = client_jws::verify(input, jwk, alg)
            .map_err(|e| fail(e.describe("client assertion", kid.as_deref(), alg)))?;

        let claims: Map<String, Value> = serde_json::from_slice(&payload)
            .map_err(|_| fail("client assertion payload is not a JSON object"))?;
        let (exp, jti) = self.check_claims(&claims)?;
        let iat = numeric_date(&claims, "iat")?;
        Ok(VerifiedAssertion {
            jti,
            exp,
            iat,
            alg: alg.name().to_owned(),
            kid,
            claims,
        })
    }

    /// The algs the client may sign with: PS256 and ES256, or only the one it registered as its
    /// `token_endpoint_auth_signing_alg` (none, if that is neither).
    fn allowed_algs(&self) -> Vec<Alg> {
        match &self.client.token_endpoint_auth_signing_alg {
            None => vec![Alg::Ps256, Alg::Es256],
            Some(registered) => Alg::from_name(registered).into_iter().collect(),
        }
    }

    /// A refused header in this module's words, where they say more than the shared ones.
    fn header_refused(&self, e: BadHeader) -> OAuthError {
        let registered = self.client.token_endpoint_auth_signing_alg.as_deref();
        fail(match e {
            BadHeader::NotJson => {
                "client assertion header is not base64url-encoded JSON object".to_owned()
            }
            BadHeader::AlgNone => {
                "client assertion alg \"none\" is not accepted: sign with PS256 or ES256".to_owned()
            }
            // PS256 or ES256, but not the alg the client registered.
            BadHeader::AlgRefused(name) => match (Alg::from_name(&name), registered) {
                (Some(alg), Some(registered)) => format!(
                    "client assertion alg {} differs from the registered \
                     token_endpoint_auth_signing_alg {:?}",
                    alg.name(),
                    shorten(registered)
                ),
                _ => format!(
                    "client assertion alg {:?} is not accepted: PS256 or ES256",
                    shorten(&name)
                ),
            },
            other => other.describe("client assertion"),
        })
    }

    /// Checks the claims; returns exp and jti.
    fn check_claims(&self, claims: &Map<String, Value>) -> Result<(i64, String), OAuthError> {
        let client_id = self.client.client_id.as_str();
        for name in ["iss", "sub"] {
            client_jws::claim_is_client_id(claims, name, client_id, "client assertion")
                .map_err(fail)?;
        }

        let audiences: Vec<&str> = match claims.get("aud") {
            None => return Err(fail("client assertion has no aud")),
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(_)) if self.aud_string_only => {
                return Err(fail(format!(
                    "client assertion aud must be the issuer identifier as a string ({:?}), \
                     not an array, under the configured compliance level",
                    self.accepted_audiences.join(" ")
                )));
            }
            Some(Value::Array(items)) => {
                let mut v = Vec::with_capacity(items.len());
                for item in items {
                    match item.as_str() {
                        Some(s) => v.push(s),
                        None => {
                            return Err(fail(
                                "client assertion aud must be a string or an array of strings",
                            ));
                        }
                    }
                }
                v
            }
            Some(_) => {
                return Err(fail(
                    "client assertion aud must be a string or an array of strings",
                ));
            }
        };
        if !audiences
            .iter()
            .any(|a| self.accepted_audiences.iter().any(|ok| ok == a))
        {
            return Err(fail(format!(
                "client assertion aud does not name this server; use one of: {}",
                self.accepted_audiences.join(", ")
            )));
        }

        let now = self.now;
        let skew = self.clock_skew.max(0);
        let Some(exp) = numeric_date(claims, "exp")? else {
            return Err(fail("client assertion has no exp"));
        };
        if now.saturating_sub(skew) >= exp {
            return Err(fail(format!(
                "client assertion expired at {}; server time {}",
                when(exp),
                when(now)
            )));
        }
        let ahead = exp.saturating_sub(now);
        if ahead > self.max_lifetime.saturating_add(skew) {
            return Err(fail(format!(
                "client assertion exp {} is {ahead} s ahead of server time {}; at most {} s \
                 is accepted",
                when(exp),
                when(now),
                self.max_lifetime
            )));
        }
        let ahead_ok = crate::client_jws::future_leeway(skew);
        if let Some(nbf) = numeric_date(claims, "nbf")? {
            if nbf > now.saturating_add(ahead_ok) {
                return Err(fail(format!(
                    "client assertion is not valid before {}; server time {}",
                    when(nbf),
                    when(now)
                )));
            }
        }
        if let Some(iat) = numeric_date(claims, "iat")? {
            if iat > now.saturating_add(ahead_ok) {
                return Err(fail(format!(
                    "client assertion iat {} is in the future; server time {}",
                    when(iat),
                    when(now)
                )));
            }
        }

        let jti = match claims.get("jti") {
            None => {
                return Err(fail(
                    "client assertion has no jti; a unique jti is required",
                ));
            }
            Some(Value::String(j)) if j.is_empty() => {
                return Err(fail("client assertion jti is empty"));
            }
            Some(Value::String(j)) if j.len() > MAX_JTI_LEN => {
                return Err(fail(format!(
                    "client assertion jti is longer than {MAX_JTI_LEN} bytes"
                )));
            }
            Some(Value::String(j)) => j.clone(),
            Some(_) => return Err(fail("client assertion jti must be a string")),
        };
        Ok((exp, jti))
    }
}
