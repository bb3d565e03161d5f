//! RFC 7523 §3 / OpenID Connect Core §9 `private_key_jwt`: a compact JWS signed with PS256 or
//! ES256 by a key of the client's JWK Set. Signatures are checked by josekit (OpenSSL).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwk::Jwk;
use josekit::jws::{ES256, JwsVerifier, PS256};
use serde_json::{Map, Value};

use crate::error::OAuthError;
use crate::model::Client;

/// Assertions larger than this are refused before any parsing.
const MAX_ASSERTION_LEN: usize = 64 * 1024;
/// A jti longer than this is refused (it is stored in the replay cache).
const MAX_JTI_LEN: usize = 1024;

fn fail(d: impl Into<String>) -> OAuthError {
    OAuthError::invalid_client(d)
}

/// A client-supplied string cut to a length fit for an error description.
pub(super) fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

/// The latest time RFC 3339 can write (9999-12-31T23:59:59Z): humantime's formatter fails (and
/// `format!` would panic) beyond it, and an attacker chooses `exp`.
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

fn when(t: i64) -> String {
    let at = u64::try_from(t)
        .ok()
        .filter(|s| *s <= LAST_RFC3339_SECOND)
        .and_then(|s| std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(s)));
    match at {
        Some(at) => format!("{} [{t}]", humantime::format_rfc3339_seconds(at)),
        None => t.to_string(),
    }
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
    let kid = assertion
        .split('.')
        .next()
        .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|h| serde_json::from_slice::<Map<String, Value>>(&h).ok())
        .and_then(|h| h.get("kid").and_then(Value::as_str).map(str::to_owned));
    let Some(kid) = kid else { return false };
    !jwks
        .get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|k| k.get("kid").and_then(Value::as_str) == Some(kid.as_str()))
}

/// The two algorithms FAPI allows for client assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Ps256,
    Es256,
}

impl Alg {
    fn name(self) -> &'static str {
        match self {
            Alg::Ps256 => "PS256",
            Alg::Es256 => "ES256",
        }
    }

    fn key_kind(self) -> &'static str {
        match self {
            Alg::Ps256 => "an RSA key",
            Alg::Es256 => "an EC P-256 key",
        }
    }

    /// Why `jwk` cannot verify this alg, or `None` if it fits.
    fn unfit(self, jwk: &Map<String, Value>) -> Option<String> {
        let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or("");
        let kty_ok = match self {
            Alg::Ps256 => kty == "RSA",
            Alg::Es256 => kty == "EC" && jwk.get("crv").and_then(Value::as_str) == Some("P-256"),
        };
        if !kty_ok {
            let crv = jwk
                .get("crv")
                .and_then(Value::as_str)
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            return Some(format!(
                "it is a {:?}{crv} key and {} needs {}",
                shorten(kty),
                self.name(),
                self.key_kind()
            ));
        }
        // FAPI 2.0 Security Profile §5.4.1: RSA keys of at least 2048 bits.
        if self == Alg::Ps256 {
            let n_bytes = jwk
                .get("n")
                .and_then(Value::as_str)
                .and_then(|n| URL_SAFE_NO_PAD.decode(n).ok())
                .map(|n| n.iter().skip_while(|b| **b == 0).count())
                .unwrap_or(0);
            if n_bytes < 256 {
                return Some(format!(
                    "its modulus is {} bits; at least 2048 are required",
                    n_bytes * 8
                ));
            }
        }
        if let Some(use_) = jwk.get("use").and_then(Value::as_str) {
            if use_ != "sig" {
                return Some(format!("its use is {:?}, not \"sig\"", shorten(use_)));
            }
        }
        if let Some(alg) = jwk.get("alg").and_then(Value::as_str) {
            if alg != self.name() {
                return Some(format!("it is registered for alg {:?}", shorten(alg)));
            }
        }
        if let Some(ops) = jwk.get("key_ops").and_then(Value::as_array) {
            if !ops.iter().any(|o| o.as_str() == Some("verify")) {
                return Some("its key_ops do not include \"verify\"".into());
            }
        }
        None
    }

    fn verifier(self, jwk: &Jwk) -> Result<Box<dyn JwsVerifier>, josekit::JoseError> {
        Ok(match self {
            Alg::Ps256 => Box::new(PS256.verifier_from_jwk(jwk)?),
            Alg::Es256 => Box::new(ES256.verifier_from_jwk(jwk)?),
        })
    }
}

fn kid_text(kid: Option<&str>) -> String {
    match kid {
        Some(k) => format!("kid {:?}", shorten(k)),
        None => "the only suitable key".into(),
    }
}

/// A NumericDate claim (RFC 7519 §2): a JSON number, fractions truncated.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, OAuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(Some(f.trunc() as i64)),
                    _ => Err(fail(format!(
                        "client assertion claim {name} is not a usable NumericDate"
                    ))),
                }
            }
        }
        Some(_) => Err(fail(format!(
            "client assertion claim {name} must be a NumericDate (seconds since the epoch)"
        ))),
    }
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
        let input = self.assertion.trim();
        if input.is_empty() {
            return Err(fail("client_assertion is empty"));
        }
        if input.len() > MAX_ASSERTION_LEN {
            return Err(fail(format!(
                "client_assertion is longer than {MAX_ASSERTION_LEN} bytes"
            )));
        }
        if input.starts_with('{') {
            return Err(fail(
                "client_assertion is a JWS JSON serialization; a compact JWS (a signed JWT) \
                 is required",
            ));
        }
        let parts: Vec<&str> = input.split('.').collect();
        let (header_b64, signature_b64) = match parts.as_slice() {
            [h, _, s] => (*h, *s),
            [_, _, _, _, _] => {
                return Err(fail(
                    "client_assertion is a JWE (five parts); an encrypted assertion is not \
                     accepted: send a signed JWT (compact JWS, three parts)",
                ));
            }
            other => {
                return Err(fail(format!(
                    "client_assertion is not a compact JWS: {} dot-separated parts instead of 3",
                    other.len()
                )));
            }
        };

        // The header, before any key is chosen.
        let header: Map<String, Value> = URL_SAFE_NO_PAD
            .decode(header_b64)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| fail("client assertion header is not base64url-encoded JSON object"))?;
        if header.contains_key("enc") {
            return Err(fail(
                "client assertion header has \"enc\": a JWE is not accepted, send a signed JWT",
            ));
        }
        let alg_name = match header.get("alg") {
            Some(Value::String(a)) => a.as_str(),
            Some(_) => return Err(fail("client assertion header alg must be a string")),
            None => return Err(fail("client assertion header has no alg")),
        };
        let alg = match alg_name {
            "PS256" => Alg::Ps256,
            "ES256" => Alg::Es256,
            "none" => {
                return Err(fail(
                    "client assertion alg \"none\" is not accepted: sign with PS256 or ES256",
                ));
            }
            other => {
                return Err(fail(format!(
                    "client assertion alg {:?} is not accepted: PS256 or ES256",
                    shorten(other)
                )));
            }
        };
        if let Some(registered) = &self.client.token_endpoint_auth_signing_alg {
            if registered != alg.name() {
                return Err(fail(format!(
                    "client assertion alg {} differs from the registered \
                     token_endpoint_auth_signing_alg {:?}",
                    alg.name(),
                    shorten(registered)
                )));
            }
        }
        if header.contains_key("crit") {
            return Err(fail(
                "client assertion header has crit: no critical header extension is supported",
            ));
        }
        if signature_b64.is_empty() {
            return Err(fail("client assertion has no signature"));
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(fail("client assertion header kid must be a string")),
        };

        // The key: by kid, or the only one that fits.
        let jwk = select_key(jwks, kid, alg)?;
        let mut jwk = jwk.clone();
        // The kid was matched above; josekit would otherwise insist on it in the header.
        jwk.remove("kid");
        let verifier = crate::jws_keys::verifier(alg.name(), &jwk, |jwk| alg.verifier(jwk))
            .map_err(|_| {
                fail(format!(
                    "the client's JWK ({}) is not a usable {} verification key",
                    kid_text(kid),
                    alg.name()
                ))
            })?;
        let (payload, _header) = josekit::jws::deserialize_compact(input, verifier.as_ref())
            .map_err(|e| match e {
                josekit::JoseError::InvalidSignature(_) => fail(format!(
                    "client assertion signature does not verify with {} of the client's JWK Set",
                    kid_text(kid)
                )),
                _ => fail(format!(
                    "client assertion is not a well-formed {} JWS",
                    alg.name()
                )),
            })?;

        let claims: Map<String, Value> = serde_json::from_slice(&payload)
            .map_err(|_| fail("client assertion payload is not a JSON object"))?;
        let (exp, jti) = self.check_claims(&claims)?;
        let iat = numeric_date(&claims, "iat")?;
        Ok(VerifiedAssertion {
            jti,
            exp,
            iat,
            alg: alg.name().to_owned(),
            kid: kid.map(str::to_owned),
            claims,
        })
    }

    /// Checks the claims; returns exp and jti.
    fn check_claims(&self, claims: &Map<String, Value>) -> Result<(i64, String), OAuthError> {
        let client_id = self.client.client_id.as_str();
        for name in ["iss", "sub"] {
            match claims.get(name) {
                None => {
                    return Err(fail(format!(
                        "client assertion has no {name}; it must be the client_id"
                    )));
                }
                Some(Value::String(v)) if v == client_id => {}
                Some(Value::String(v)) => {
                    return Err(fail(format!(
                        "client assertion {name} {:?} is not the client_id {:?}",
                        shorten(v),
                        shorten(client_id)
                    )));
                }
                Some(_) => {
                    return Err(fail(format!(
                        "client assertion {name} must be a string: the client_id"
                    )));
                }
            }
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
        if let Some(nbf) = numeric_date(claims, "nbf")? {
            if nbf > now.saturating_add(skew) {
                return Err(fail(format!(
                    "client assertion is not valid before {}; server time {}",
                    when(nbf),
                    when(now)
                )));
            }
        }
        if let Some(iat) = numeric_date(claims, "iat")? {
            if iat > now.saturating_add(skew) {
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

/// The JWK that verifies the assertion: the one named by `kid`, or without a kid the only key
/// of the set that fits `alg`.
fn select_key<'j>(
    jwks: &'j Value,
    kid: Option<&str>,
    alg: Alg,
) -> Result<&'j Map<String, Value>, OAuthError> {
    let keys: Vec<&Map<String, Value>> = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| fail("the client's JWK Set is not a JWK Set ({\"keys\": [...]})"))?
        .iter()
        .filter_map(Value::as_object)
        .collect();
    match kid {
        Some(kid) => {
            let named: Vec<_> = keys
                .iter()
                .copied()
                .filter(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
                .collect();
            if named.is_empty() {
                return Err(fail(format!(
                    "client assertion kid {:?} is not in the client's JWK Set",
                    shorten(kid)
                )));
            }
            let mut reasons = Vec::new();
            for k in &named {
                match alg.unfit(k) {
                    None => return Ok(k),
                    Some(why) => reasons.push(why),
                }
            }
            Err(fail(format!(
                "the client's key kid {:?} cannot verify this {} assertion: {}",
                shorten(kid),
                alg.name(),
                reasons.join("; ")
            )))
        }
        None => {
            let fit: Vec<_> = keys
                .iter()
                .copied()
                .filter(|k| alg.unfit(k).is_none())
                .collect();
            match fit.as_slice() {
                [only] => Ok(only),
                [] => Err(fail(format!(
                    "the client's JWK Set has no key for {} ({} with use \"sig\")",
                    alg.name(),
                    alg.key_kind()
                ))),
                many => Err(fail(format!(
                    "client assertion has no kid and the client's JWK Set has {} {} keys: \
                     name the key with kid",
                    many.len(),
                    alg.name()
                ))),
            }
        }
    }
}

#[cfg(test)]
mod limits {
    use super::*;

    #[test]
    fn times_past_year_9999_are_written_as_numbers_not_a_panic() {
        assert!(when(0).starts_with("1970-01-01T00:00:00Z"));
        assert_eq!(when(300_000_000_000), "300000000000");
        assert_eq!(when(i64::MAX), i64::MAX.to_string());
        assert_eq!(when(-5), "-5");
    }

    #[test]
    fn rsa_keys_under_2048_bits_are_unfit() {
        let key = |bits: usize| {
            let mut n = vec![0xffu8; bits / 8];
            n.insert(0, 0); // a leading zero byte does not count
            let jwk =
                serde_json::json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(&n), "e": "AQAB"});
            jwk.as_object().cloned().unwrap()
        };
        assert!(Alg::Ps256.unfit(&key(2048)).is_none());
        let why = Alg::Ps256.unfit(&key(1024)).unwrap();
        assert!(why.contains("1024 bits"), "{why}");
    }
}
