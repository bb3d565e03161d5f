//! Access tokens presented back to us: RFC 6750 bearer usage, the RFC 9068 JWT profile we issue
//! (see [`crate::issue::access_token`]), and RFC 8705 certificate binding.
//!
//! Verification trusts nothing the token says about how to verify it: the key is chosen by
//! `kid` among our own published access-token keys only, and the algorithm is the key's, so
//! `alg: none` or an HMAC "signed" with a public key can never pass. Only then are the claims
//! read; a token must also be on record (by `jti`) and not revoked, so revocation takes effect
//! at once although the token is a self-contained JWT.
//!
//! Every failure of the token itself is `401 invalid_token` with a Bearer challenge (RFC 6750
//! §3.1); the description says which check failed, since it helps the client's developer and
//! reveals nothing an attacker holding the token could not see.

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rustls::pki_types::CertificateDer;
use serde_json::{Map, Value};
use strongroom_keystore::KeyPurpose;

use crate::client_auth::certificate_thumbprint;
use crate::error::{ErrorCode, OAuthError};
use crate::own_jws;
use crate::state::AppState;

/// A verified access token.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    pub jti: String,
    pub client_id: String,
    pub sub: String,
    pub scope: String,
    pub aud: Vec<String>,
    pub exp: i64,
    /// The user grant the token was issued under; `None` for a client acting for itself
    /// (client_credentials), whose `sub` is its client_id, not a user.
    pub grant_id: Option<String>,
    /// Every claim of the token, as signed.
    pub claims: Value,
}

impl VerifiedToken {
    /// Requires `audience` in `aud` and every scope of `scopes` in `scope`.
    ///
    /// A token meant for another resource is `401 invalid_token` (RFC 9068 §4: the resource
    /// server rejects it, it is no token for us at all); a token for us that lacks a scope is
    /// `403 insufficient_scope` (RFC 6750 §3.1).
    pub fn require(&self, audience: &str, scopes: &[&str]) -> Result<(), OAuthError> {
        if !self.aud.iter().any(|a| a == audience) {
            return Err(OAuthError::invalid_token(format!(
                "the access token is not meant for {audience} (its aud does not name it)"
            )));
        }
        let granted: Vec<&str> = self.scope.split_whitespace().collect();
        let missing: Vec<&str> = scopes
            .iter()
            .copied()
            .filter(|s| !granted.contains(s))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(OAuthError::insufficient_scope(format!(
                "the access token lacks scope {}",
                missing.join(" ")
            )))
        }
    }
}

/// The token from `Authorization: Bearer <token>` (RFC 6750 §2.1).
///
/// No header, or another scheme: `401` whose challenge is a bare `Bearer` (RFC 6750 §3.1: no
/// error code when the request carried no bearer credentials). Two Authorization headers, or a
/// Bearer value that is not a `b64token`: `400 invalid_request`. Tokens in the query or the body
/// (RFC 6750 §2.2, §2.3) are not accepted: see [`refuse_token_in_query`].
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, OAuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(no_credentials(
            "an access token is required: Authorization: Bearer <token>",
        ));
    };
    if values.next().is_some() {
        return Err(OAuthError::invalid_request(
            "more than one Authorization header",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| OAuthError::invalid_request("the Authorization header is not ASCII"))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("Bearer") {
        return Err(no_credentials(
            "the Authorization scheme must be Bearer (RFC 6750)",
        ));
    }
    let token = token.trim_start_matches(' ');
    if token.is_empty() {
        return Err(OAuthError::invalid_request(
            "the Authorization header has no bearer token",
        ));
    }
    if !is_b64token(token) {
        return Err(OAuthError::invalid_request(
            "the bearer token has characters RFC 6750 §2.1 does not allow",
        ));
    }
    Ok(token)
}

/// `access_token` in the query string (RFC 6750 §2.3) is refused: URIs end up in logs and
/// browser history, and FAPI forbids it. `400 invalid_request`.
pub fn refuse_token_in_query(uri: &Uri) -> Result<(), OAuthError> {
    let in_query = uri.query().is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "access_token")
    });
    if in_query {
        Err(OAuthError::invalid_request(
            "access tokens are accepted only in the Authorization header, not in the query",
        ))
    } else {
        Ok(())
    }
}

/// A 401 for a request without bearer credentials. Its challenge is a bare `Bearer` (the error
/// object's code is for the body alone).
fn no_credentials(description: &str) -> OAuthError {
    OAuthError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::InvalidRequest,
        description,
    )
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// An error from a protected resource, as a response: a `400 invalid_request` also carries the
/// Bearer challenge (RFC 6750 §3), which the generic error response leaves to 401 and 403.
pub fn resource_error(e: OAuthError) -> Response {
    let add_challenge = e.status == StatusCode::BAD_REQUEST && e.code == ErrorCode::InvalidRequest;
    let mut resp = e.into_response();
    if add_challenge {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_request\""),
        );
    }
    resp
}

/// Verifies a JWT access token we issued, and that it is presented with the certificate it is
/// bound to (RFC 8705 §3: `cnf.x5t#S256` against the client certificate of this connection; a
/// bound token without a certificate fails too). Every failure: `401 invalid_token`.
pub async fn verify_access_token(
    state: &AppState,
    token: &str,
    client_certificate: Option<&CertificateDer<'_>>,
) -> Result<VerifiedToken, OAuthError> {
    let verified = verify_active(state, token).await?;
    check_binding(&verified.claims, client_certificate)?;
    Ok(verified)
}

/// As [`verify_access_token`] without the certificate check: for introspection, where the
/// caller is not the presenter.
pub async fn verify_active(state: &AppState, token: &str) -> Result<VerifiedToken, OAuthError> {
    let claims = verify_signature(state, token)?;
    let now = state.now();
    let exp = numeric_date(&claims, "exp")?
        .ok_or_else(|| OAuthError::invalid_token("the access token has no exp"))?;
    // Our own token, its exp set by our clock: no leeway (RFC 7662 §2.2: active only "before its
    // expiration time"). `keys.clock_skew_seconds` is for other parties' clocks.
    if now >= exp {
        return Err(OAuthError::invalid_token("the access token has expired"));
    }
    if let Some(nbf) = numeric_date(&claims, "nbf")? {
        if nbf > now {
            return Err(OAuthError::invalid_token(
                "the access token is not valid yet (nbf)",
            ));
        }
    }
    let jti = string_claim(&claims, "jti")?;
    let client_id = string_claim(&claims, "client_id")?;
    let sub = string_claim(&claims, "sub")?;
    let scope = match claims.get("scope") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(OAuthError::invalid_token("the scope claim is not a string")),
    };
    let aud = audiences(&claims)?;
    let record = state
        .store
        .get_access_token::<Value>(&jti)
        .await?
        .ok_or_else(|| OAuthError::invalid_token("the access token is unknown"))?;
    if record.revoked {
        return Err(OAuthError::invalid_token(
            "the access token has been revoked",
        ));
    }
    if record.client_id != client_id {
        return Err(OAuthError::invalid_token(
            "the access token does not match its record",
        ));
    }
    Ok(VerifiedToken {
        jti,
        client_id,
        sub,
        scope,
        aud,
        exp,
        grant_id: record.grant_id,
        claims: Value::Object(claims),
    })
}

/// RFC 8705 §3: a token with `cnf.x5t#S256` is accepted only with that certificate.
fn check_binding(
    claims: &Value,
    client_certificate: Option<&CertificateDer<'_>>,
) -> Result<(), OAuthError> {
    let Some(cnf) = claims.get("cnf") else {
        return Ok(());
    };
    let Some(bound) = cnf.get("x5t#S256") else {
        return Ok(());
    };
    let Some(bound) = bound.as_str() else {
        return Err(OAuthError::invalid_token(
            "the access token's cnf.x5t#S256 is not a string",
        ));
    };
    let Some(cert) = client_certificate else {
        return Err(OAuthError::invalid_token(
            "the access token is bound to a client certificate: present it over mutual TLS",
        ));
    };
    if certificate_thumbprint(cert.as_ref()) != bound {
        return Err(OAuthError::invalid_token(
            "the access token is bound to another client certificate",
        ));
    }
    Ok(())
}

/// Checks the JWS (compact, `typ: at+jwt`, signed by one of our published access-token keys
/// with that key's algorithm) and `iss`; returns the claims. Time, record and binding are the
/// callers' checks. Revocation uses this alone: a token it cannot verify is left alone.
pub fn verify_signature(state: &AppState, token: &str) -> Result<Map<String, Value>, OAuthError> {
    own_jws::verify(
        state,
        token,
        &own_jws::Expected {
            purpose: KeyPurpose::AccessToken,
            what: "the access token",
            typ: "at+jwt",
            fail: OAuthError::invalid_token,
        },
    )
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<String, OAuthError> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| OAuthError::invalid_token(format!("the access token has no {name}")))
}

fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, OAuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| {
            OAuthError::invalid_token(format!("the access token's {name} is not a NumericDate"))
        }),
    }
}

fn audiences(claims: &Map<String, Value>) -> Result<Vec<String>, OAuthError> {
    let bad = || OAuthError::invalid_token("the access token's aud is malformed");
    match claims.get("aud") {
        None => Ok(Vec::new()),
        Some(Value::String(a)) => Ok(vec![a.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(
            bearer_token(&headers(&["Bearer abc.def-_~+/=="])).unwrap(),
            "abc.def-_~+/=="
        );
        assert_eq!(bearer_token(&headers(&["bearer  x"])).unwrap(), "x");
        let none = bearer_token(&headers(&[])).unwrap_err();
        assert_eq!(none.status, StatusCode::UNAUTHORIZED);
        assert_ne!(none.code, ErrorCode::InvalidToken);
        let basic = bearer_token(&headers(&["Basic YTpi"])).unwrap_err();
        assert_eq!(basic.status, StatusCode::UNAUTHORIZED);
        for bad in [
            &["Bearer"][..],
            &["Bearer a b"],
            &["Bearer a", "Bearer b"],
            &["Bearer ="],
        ] {
            let e = bearer_token(&headers(bad)).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest)
            );
        }
    }

    #[test]
    fn query_tokens_are_refused() {
        let uri: Uri = "/userinfo?a=1&access_token=x".parse().unwrap();
        assert!(refuse_token_in_query(&uri).is_err());
        let uri: Uri = "/userinfo?a=access_token".parse().unwrap();
        assert!(refuse_token_in_query(&uri).is_ok());
    }

    #[test]
    fn require_audience_then_scopes() {
        let t = VerifiedToken {
            jti: "j".into(),
            client_id: "c".into(),
            sub: "s".into(),
            scope: "openid accounts".into(),
            aud: vec!["https://as".into()],
            exp: 0,
            grant_id: None,
            claims: Value::Null,
        };
        assert!(t.require("https://as", &["openid"]).is_ok());
        assert_eq!(
            t.require("https://other", &[]).unwrap_err().code,
            ErrorCode::InvalidToken
        );
        let e = t
            .require("https://as", &["openid", "payments"])
            .unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::FORBIDDEN, ErrorCode::InsufficientScope)
        );
        assert!(e.description.contains("payments"));
    }

    #[test]
    fn binding() {
        let claims = serde_json::json!({"cnf": {"x5t#S256": certificate_thumbprint(b"cert-a")}});
        let a = CertificateDer::from(b"cert-a".to_vec());
        let b = CertificateDer::from(b"cert-b".to_vec());
        assert!(check_binding(&claims, Some(&a)).is_ok());
        assert!(check_binding(&claims, Some(&b)).is_err());
        assert!(check_binding(&claims, None).is_err());
        assert!(check_binding(&serde_json::json!({}), None).is_ok());
    }
}
