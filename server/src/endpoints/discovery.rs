//! `GET /.well-known/openid-configuration` (OpenID Connect Discovery 1.0) and the same document
//! at `/.well-known/oauth-authorization-server` (RFC 8414 §3, which FAPI 2.0 names beside it):
//! complete and truthful — only what this server implements is advertised.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::OAuthError;
use crate::state::AppState;
use strongroom_keystore::hsm::DecryptAlg;

pub async fn openid_configuration(State(state): State<Arc<AppState>>) -> Response {
    // RFC 9396 §10: the types the registered APIs accept, as registered now.
    let apis = match state.store.list_resource_servers().await {
        Ok(apis) => apis,
        Err(e) => return OAuthError::from(e).into_response(),
    };
    let details_types = crate::authorization_details::types_supported(&apis);
    // The OpenID Connect scopes and those of the registered APIs (a client's own registered
    // scopes for this server's endpoints are its business and are not listed).
    let mut scopes: Vec<&str> = crate::authz_request::STANDARD_SCOPES.to_vec();
    let mut api_scopes: Vec<&str> = apis
        .iter()
        .flat_map(|a| a.scopes.iter().map(|s| s.value.as_str()))
        .filter(|s| !scopes.contains(s))
        .collect();
    api_scopes.sort_unstable();
    api_scopes.dedup();
    scopes.extend(api_scopes);
    // The claims of /userinfo, and those ID tokens carry about the authentication.
    let mut claims = super::userinfo::claims_supported();
    claims.extend(["iss", "auth_time", "acr"]);
    let issuer = &state.issuer;
    let id_token_alg = state
        .keystore
        .signing_key(strongroom_keystore::KeyPurpose::IdToken)
        .map(|k| k.alg.jose_name())
        .unwrap_or("PS256");
    // Only the key-management algorithms this HSM really performs (SoftHSM2 2.6: no OAEP-256).
    let capabilities = state.keystore.token().capabilities();
    let encryption_algs: Vec<&str> = [DecryptAlg::RsaOaep, DecryptAlg::RsaOaep256]
        .into_iter()
        .filter(|a| capabilities.can_decrypt(*a))
        .map(DecryptAlg::jose_name)
        .collect();
    // tls_client_auth needs a client CA to chain certificates to (`client_ca_file`).
    let auth_methods: Vec<&str> = [
        "private_key_jwt",
        "tls_client_auth",
        "self_signed_tls_client_auth",
    ]
    .into_iter()
    .filter(|m| *m != "tls_client_auth" || state.client_ca.is_some())
    .collect();
    axum::Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/jwks"),
        "token_endpoint": format!("{issuer}/token"),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": ["PS256", "ES256"],
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "introspection_endpoint": format!("{issuer}/introspect"),
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_signing_alg_values_supported": ["PS256", "ES256"],
        "revocation_endpoint": format!("{issuer}/revoke"),
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_signing_alg_values_supported": ["PS256", "ES256"],
        "mtls_endpoint_aliases": {
            "token_endpoint": format!("{}/token", state.mtls_base_url),
            "userinfo_endpoint": format!("{}/userinfo", state.mtls_base_url),
            "introspection_endpoint": format!("{}/introspect", state.mtls_base_url),
            "revocation_endpoint": format!("{}/revoke", state.mtls_base_url),
            "pushed_authorization_request_endpoint": format!("{}/par", state.mtls_base_url),
        },
        "claims_supported": claims,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "pushed_authorization_request_endpoint": format!("{issuer}/par"),
        // Per client (its registration or compliance level), not for every client.
        "require_pushed_authorization_requests": false,
        // RFC 9101 request objects, by value (at PAR, or at /authorize for a client that need
        // not push); request_uri values come from our PAR endpoint only, never a client's URL.
        "request_parameter_supported": true,
        "request_uri_parameter_supported": false,
        "request_object_signing_alg_values_supported": ["PS256", "ES256"],
        "request_object_encryption_alg_values_supported": encryption_algs,
        "request_object_encryption_enc_values_supported": ["A256GCM", "A128CBC-HS256"],
        "response_types_supported": crate::authz_request::SUPPORTED_RESPONSE_TYPES,
        "response_modes_supported": ["query", "fragment"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "scopes_supported": scopes,
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        // The `claims` parameter is not advertised (claims_parameter_supported defaults to
        // false): its `acr` member is honoured (acr.rs), as OpenID Connect Core §5.5.1.1
        // requires, but the individual claims it names add nothing to what the scopes
        // release, so clients must not rely on it for those.
        "acr_values_supported": state.acr_values,
        "id_token_signing_alg_values_supported": [id_token_alg],
        "subject_types_supported": ["public"],
        "tls_client_certificate_bound_access_tokens": true,
        "authorization_details_types_supported": details_types,
    }))
    .into_response()
}
