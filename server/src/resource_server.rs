//! APIs as first-class objects: resource servers (RFC 8707 resources) that clients ask tokens
//! for with `resource` (or `audience`, the seed product's spelling).
//!
//! A registered API decides, for the tokens issued for it:
//! - `aud`: its `identifier` (an absolute https URI, unique, never changed once registered);
//! - which scopes exist (`scopes`), and which clients may get tokens at all (`allowed_clients`:
//!   least privilege, so an empty list lets no client in);
//! - which clients, the API's own credentials, may introspect every token issued for it
//!   (`introspection_clients`; otherwise only the client a token was issued to);
//! - the access-token lifetime (`token_lifetime`, else the server's);
//! - whether the signed token is wrapped in a JWE to the API's own public key
//!   (`token_encryption`, see [`crate::token_encryption`]): the server never holds a private key
//!   for that, so private key material is refused anywhere in a registration.
//!
//! `authorization_details` lists the RFC 9396 types the API accepts, each with a JSON Schema
//! (compiled at registration; no `$ref` outside it is followed). Requests are checked against
//! them by [`crate::authorization_details`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::authz_request::STANDARD_SCOPES;
use crate::error::{ErrorCode, OAuthError};
use crate::model::Client;
use crate::state::AppState;
use crate::token_encryption::TokenEncryption;

/// Bounds of `token_lifetime`, seconds.
pub const TOKEN_LIFETIME_RANGE: std::ops::RangeInclusive<i64> = 60..=86_400;
/// The JWS algorithms access tokens can be signed with (by the keystore's access-token key).
pub const SIGNING_ALGS: [&str; 2] = ["PS256", "ES256"];
const MAX_IDENTIFIER_LEN: usize = 1024;
const MAX_NAME_LEN: usize = 200;
const MAX_SCOPES: usize = 200;
const MAX_DESCRIPTION_LEN: usize = 1000;
pub const MAX_TYPE_LEN: usize = 256;
const MAX_ALLOWED_CLIENTS: usize = 1000;

/// A registered API, as the management API accepts and returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceServer {
    /// The token audience: an absolute https URI, unique, immutable.
    pub identifier: String,
    pub name: String,
    #[serde(default)]
    pub scopes: Vec<ApiScope>,
    /// Seconds an access token for this API lives; unset: the server's access-token lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_lifetime: Option<i64>,
    /// Must be the algorithm of the keystore's access-token key (keys are per purpose, not per
    /// API); unset: whatever that key is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_alg: Option<String>,
    /// The client_ids that may get tokens for this API. Empty: none.
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    /// The client_ids the API itself authenticates as at /introspect (RFC 7662): they learn
    /// about every access token issued for this API, whichever client it was issued to.
    /// Empty: a token is introspected by the client it was issued to only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub introspection_clients: Vec<String>,
    /// RFC 9396 types this API accepts, each with the JSON Schema its objects must meet.
    #[serde(default)]
    pub authorization_details: Vec<AuthorizationDetailsType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_encryption: Option<TokenEncryption>,
}

/// One scope of an API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiScope {
    pub value: String,
    #[serde(default)]
    pub description: String,
}

/// One `authorization_details` type (RFC 9396 §2) and its JSON Schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationDetailsType {
    #[serde(rename = "type")]
    pub kind: String,
    pub schema: Value,
}

fn bad(d: impl Into<String>) -> OAuthError {
    OAuthError::invalid_request(d)
}

impl ResourceServer {
    /// A registration from JSON: private key material anywhere in it is refused before anything
    /// else (and never echoed), then the fields are read (unknown ones refused) and checked.
    pub fn from_json(value: Value) -> Result<Self, OAuthError> {
        if !value.is_object() {
            return Err(bad("an API registration must be a JSON object"));
        }
        if let Some(why) = private_key_material(&value) {
            return Err(bad(format!(
                "private key material is not accepted ({why}): register the API's public key only"
            )));
        }
        let api: ResourceServer =
            serde_json::from_value(value).map_err(|e| bad(format!("API registration: {e}")))?;
        api.validate()?;
        Ok(api)
    }

    /// The checks that need nothing but the registration itself.
    pub fn validate(&self) -> Result<(), OAuthError> {
        check_identifier(&self.identifier)?;
        if self.name.trim().is_empty() || self.name.chars().count() > MAX_NAME_LEN {
            return Err(bad(format!("name must be 1 to {MAX_NAME_LEN} characters")));
        }
        if self
            .name
            .chars()
            .any(|c| c.is_control() || crate::pages::is_bidi_control(c))
        {
            return Err(bad(
                "name must not contain control or bidirectional-override characters",
            ));
        }
        if self.scopes.len() > MAX_SCOPES {
            return Err(bad(format!("at most {MAX_SCOPES} scopes")));
        }
        let mut seen = Vec::with_capacity(self.scopes.len());
        for s in &self.scopes {
            if !is_scope_token(&s.value) {
                return Err(bad(format!(
                    "scope value {:?} is not an RFC 6749 scope-token (printable ASCII, no \
                     space, quote or backslash)",
                    short(&s.value)
                )));
            }
            if STANDARD_SCOPES.contains(&s.value.as_str()) {
                return Err(bad(format!(
                    "scope value {:?} is an OpenID Connect scope, not an API's",
                    s.value
                )));
            }
            if seen.contains(&s.value.as_str()) {
                return Err(bad(format!("scope value {:?} is repeated", s.value)));
            }
            if s.description.chars().count() > MAX_DESCRIPTION_LEN {
                return Err(bad(format!(
                    "a scope description is at most {MAX_DESCRIPTION_LEN} characters"
                )));
            }
            if s.description.chars().any(crate::pages::is_bidi_control) {
                return Err(bad(
                    "a scope description must not contain bidirectional-override characters",
                ));
            }
            seen.push(&s.value);
        }
        if let Some(t) = self.token_lifetime {
            if !TOKEN_LIFETIME_RANGE.contains(&t) {
                return Err(bad(format!(
                    "token_lifetime must be between {} and {} seconds",
                    TOKEN_LIFETIME_RANGE.start(),
                    TOKEN_LIFETIME_RANGE.end()
                )));
            }
        }
        if let Some(alg) = &self.signing_alg {
            if !SIGNING_ALGS.contains(&alg.as_str()) {
                return Err(bad(format!(
                    "signing_alg {:?} is not supported: access tokens are signed with {}",
                    short(alg),
                    SIGNING_ALGS.join(" or ")
                )));
            }
        }
        for (name, list) in [
            ("allowed_clients", &self.allowed_clients),
            ("introspection_clients", &self.introspection_clients),
        ] {
            if list.len() > MAX_ALLOWED_CLIENTS
                || list.iter().any(|c| c.is_empty() || c.len() > 128)
            {
                return Err(bad(format!(
                    "{name} is at most {MAX_ALLOWED_CLIENTS} client_ids of 1 to 128 characters"
                )));
            }
        }
        let mut types = Vec::with_capacity(self.authorization_details.len());
        for t in &self.authorization_details {
            if t.kind.trim().is_empty() || t.kind.len() > MAX_TYPE_LEN {
                return Err(bad(format!(
                    "an authorization_details type must be a non-empty string of at most \
                     {MAX_TYPE_LEN} bytes"
                )));
            }
            if types.contains(&t.kind.as_str()) {
                return Err(bad(format!(
                    "authorization_details type {:?} is repeated",
                    short(&t.kind)
                )));
            }
            if !t.schema.is_object() {
                return Err(bad(format!(
                    "the schema of authorization_details type {:?} must be a JSON Schema object",
                    short(&t.kind)
                )));
            }
            if let Err(why) = crate::authorization_details::compile(&t.schema) {
                return Err(bad(format!(
                    "the schema of authorization_details type {:?} is not a usable JSON Schema \
                     (no $ref outside the schema is followed): {}",
                    short(&t.kind),
                    short(&why)
                )));
            }
            types.push(&t.kind);
        }
        if let Some(enc) = &self.token_encryption {
            enc.encryptor()
                .map_err(|e| bad(format!("token_encryption: {e}")))?;
        }
        Ok(())
    }

    /// The checks that need the server: the identifier is not one of the server's own
    /// audiences, and `signing_alg` (if set) is the algorithm of the access-token key.
    pub fn check_for_server(
        &self,
        issuer: &str,
        management_api: &str,
        access_token_alg: Option<&str>,
        max_token_lifetime: i64,
    ) -> Result<(), OAuthError> {
        if self.identifier == issuer || self.identifier == management_api {
            return Err(bad(
                "identifier must not be this server's issuer or its management API",
            ));
        }
        if let Some(t) = self.token_lifetime.filter(|t| *t > max_token_lifetime) {
            // A superseded key leaves the JWKS max_token_lifetime (+ skew) after it stops
            // signing: a longer-lived token would outlive its key at every rotation.
            return Err(bad(format!(
                "token_lifetime {t} exceeds this server's keys.max_token_lifetime_seconds \
                 ({max_token_lifetime}): the token would outlive its signing key after a rotation"
            )));
        }
        if let (Some(wanted), Some(alg)) = (&self.signing_alg, access_token_alg) {
            if wanted != alg {
                return Err(bad(format!(
                    "signing_alg {wanted:?}: this server signs access tokens with {alg} (keys \
                     are per purpose, not per API); leave signing_alg unset or set it to {alg}"
                )));
            }
        }
        Ok(())
    }

    pub fn allows_client(&self, client_id: &str) -> bool {
        self.allowed_clients.iter().any(|c| c == client_id)
    }

    /// Whether `client_id` may introspect every access token issued for this API.
    pub fn lets_introspect(&self, client_id: &str) -> bool {
        self.introspection_clients.iter().any(|c| c == client_id)
    }

    /// The API's scope values.
    pub fn scope_values(&self) -> impl Iterator<Item = &str> {
        self.scopes.iter().map(|s| s.value.as_str())
    }

    /// Space-separated, as a token's `scope`.
    pub fn scope_string(&self) -> String {
        self.scope_values().collect::<Vec<_>>().join(" ")
    }

    /// The RFC 9396 types this API accepts.
    pub fn authorization_details_types(&self) -> impl Iterator<Item = &str> {
        self.authorization_details.iter().map(|t| t.kind.as_str())
    }

    /// The JSON Schema registered for `kind`, if the API accepts that type.
    pub fn authorization_details_schema(&self, kind: &str) -> Option<&Value> {
        self.authorization_details
            .iter()
            .find(|t| t.kind == kind)
            .map(|t| &t.schema)
    }

    /// A user grant's scope for this API: each value must be one of the API's, or an OpenID
    /// Connect scope the client may ask for (for the ID token and /userinfo). `invalid_scope`
    /// otherwise (RFC 6749 §5.2).
    pub fn check_user_scope(&self, client: &Client, scope: &str) -> Result<(), OAuthError> {
        for s in scope.split_whitespace() {
            let ours = self.scope_values().any(|v| v == s);
            let oidc =
                STANDARD_SCOPES.contains(&s) && crate::authz_request::client_may_ask(client, s);
            if !ours && !oidc {
                return Err(OAuthError::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidScope,
                    format!("scope {:?} is not a scope of {}", short(s), self.identifier),
                ));
            }
        }
        Ok(())
    }
}

/// RFC 8707 §2: `invalid_target`.
pub fn invalid_target(d: impl Into<String>) -> OAuthError {
    OAuthError::new(
        axum::http::StatusCode::BAD_REQUEST,
        ErrorCode::InvalidTarget,
        d,
    )
}

/// The registered API `identifier`, if `client` may get tokens for it; `invalid_target`
/// otherwise (unknown and forbidden look alike, so a client cannot probe for APIs).
pub async fn resolve(
    state: &AppState,
    client: &Client,
    identifier: &str,
) -> Result<ResourceServer, OAuthError> {
    let api = state.store.get_resource_server(identifier).await?;
    match api {
        Some(api) if api.allows_client(&client.client_id) => Ok(api),
        Some(_) => Err(invalid_target(format!(
            "this client may not get tokens for {}",
            short(identifier)
        ))),
        None => Err(invalid_target(format!(
            "{:?} is not a resource this server issues tokens for",
            short(identifier)
        ))),
    }
}

/// RFC 8707 §2: a resource is an absolute URI without a fragment; ours must be https.
pub fn check_identifier(identifier: &str) -> Result<(), OAuthError> {
    if identifier.is_empty() || identifier.len() > MAX_IDENTIFIER_LEN {
        return Err(bad(format!(
            "identifier must be an absolute https URI of at most {MAX_IDENTIFIER_LEN} bytes"
        )));
    }
    let parsed =
        url::Url::parse(identifier).map_err(|_| bad("identifier must be an absolute https URI"))?;
    if parsed.scheme() != "https" || !parsed.has_host() {
        return Err(bad("identifier must be an absolute https URI"));
    }
    if parsed.fragment().is_some() || identifier.contains('#') {
        return Err(bad(
            "identifier must not contain a fragment (RFC 8707 section 2)",
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("identifier must not contain user information"));
    }
    if identifier
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad(
            "identifier must not contain spaces or control characters",
        ));
    }
    Ok(())
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e))
}

/// A client-supplied value, short enough to quote in an error description.
fn short(s: &str) -> String {
    s.chars().take(60).collect()
}

/// Where `value` holds private key material, if it does: a PEM private key (any kind), or a
/// JWK with a private member. The value itself is never returned.
pub fn private_key_material(value: &Value) -> Option<&'static str> {
    const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
    match value {
        Value::String(s) if s.contains("PRIVATE KEY") => Some("a PEM private key"),
        Value::Array(items) => items.iter().find_map(private_key_material),
        Value::Object(map) => {
            if map.contains_key("kty") && PRIVATE_MEMBERS.iter().any(|m| map.contains_key(*m)) {
                return Some("a JWK with private members");
            }
            map.values().find_map(private_key_material)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({"identifier": "https://api.example.com/payments", "name": "Payments"})
    }

    #[test]
    fn a_minimal_registration_reads_and_round_trips() {
        let api = ResourceServer::from_json(minimal()).unwrap();
        assert!(api.allowed_clients.is_empty());
        assert!(!api.allows_client("anyone"));
        let back: ResourceServer =
            serde_json::from_value(serde_json::to_value(&api).unwrap()).unwrap();
        assert_eq!(back, api);
    }

    #[test]
    fn bad_registrations_are_invalid_request() {
        let cases = [
            json!({"identifier": "http://api.example.com", "name": "x"}),
            json!({"identifier": "api.example.com", "name": "x"}),
            json!({"identifier": "https://api.example.com/#f", "name": "x"}),
            json!({"identifier": "https://api.example.com", "name": ""}),
            json!({"identifier": "https://api.example.com", "name": "x", "extra": 1}),
            json!({"identifier": "https://api.example.com", "name": "x",
                   "scopes": [{"value": "a b"}]}),
            json!({"identifier": "https://api.example.com", "name": "x",
                   "scopes": [{"value": "a"}, {"value": "a"}]}),
            json!({"identifier": "https://api.example.com", "name": "x",
                   "scopes": [{"value": "openid"}]}),
            json!({"identifier": "https://api.example.com", "name": "x", "token_lifetime": 59}),
            json!({"identifier": "https://api.example.com", "name": "x",
                   "token_lifetime": 86_401}),
            json!({"identifier": "https://api.example.com", "name": "x", "signing_alg": "HS256"}),
            json!({"identifier": "https://api.example.com", "name": "x",
                   "authorization_details": [{"type": "", "schema": {}}]}),
            json!({"identifier": "https://api.example.com", "name": "x",
                   "authorization_details": [{"type": "a", "schema": {}},
                                             {"type": "a", "schema": {}}]}),
            json!({"identifier": "https://api.example.com", "name": "x",
                   "authorization_details": [{"type": "a", "schema": []}]}),
            json!({"identifier": "https://api.example.com", "name": "x",
                   "token_encryption": {"format": "compact-nested-jwe",
                       "encryption_key": {"pem": "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----"}}}),
            json!({"identifier": "https://api.example.com", "name": "x",
                   "token_encryption": {"format": "compact-nested-jwe",
                       "encryption_key": {"jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "AQAB"}}}}),
            json!("not an object"),
        ];
        for c in cases {
            let e = ResourceServer::from_json(c.clone()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{c}");
        }
    }

    #[test]
    fn private_material_is_never_echoed() {
        let secret = "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0\n-----END RSA PRIVATE KEY-----";
        let mut v = minimal();
        v.as_object_mut().unwrap().insert(
            "token_encryption".into(),
            json!({"format": "compact-nested-jwe", "encryption_key": {"pem": secret}}),
        );
        let e = ResourceServer::from_json(v).unwrap_err();
        assert!(!e.description.contains("c2VjcmV0"), "{}", e.description);
    }

    #[test]
    fn the_server_checks() {
        let api = ResourceServer::from_json(
            json!({"identifier": "https://as.example", "name": "x", "signing_alg": "ES256",
                   "token_lifetime": 3600}),
        )
        .unwrap();
        assert!(
            api.check_for_server(
                "https://as.example",
                "https://as.example/api/v2/",
                None,
                3600
            )
            .is_err()
        );
        let other = ResourceServer {
            identifier: "https://api.example".into(),
            ..api
        };
        assert!(
            other
                .check_for_server("https://as", "https://as/api/v2/", Some("ES256"), 3600)
                .is_ok()
        );
        let e = other
            .check_for_server("https://as", "https://as/api/v2/", Some("PS256"), 3600)
            .unwrap_err();
        assert!(e.description.contains("PS256"));
        // A token that would outlive its key's retire window.
        let e = other
            .check_for_server("https://as", "https://as/api/v2/", Some("ES256"), 3599)
            .unwrap_err();
        assert!(
            e.description.contains("max_token_lifetime"),
            "{}",
            e.description
        );
    }

    #[test]
    fn authorization_details_accessors() {
        let mut v = minimal();
        v.as_object_mut().unwrap().insert(
            "authorization_details".into(),
            json!([
                {"type": "payment_initiation", "schema": {"type": "object"}},
                {"type": "account_information", "schema": {"type": "object", "required": ["x"]}}
            ]),
        );
        let api = ResourceServer::from_json(v).unwrap();
        assert_eq!(
            api.authorization_details_types().collect::<Vec<_>>(),
            ["payment_initiation", "account_information"]
        );
        assert_eq!(
            api.authorization_details_schema("account_information"),
            Some(&json!({"type": "object", "required": ["x"]}))
        );
        assert_eq!(api.authorization_details_schema("nope"), None);
    }
}
