//! `GET /.well-known/openid-configuration` (OpenID Connect Discovery 1.0, RFC 8414): complete
//! and truthful — only what this server implements is advertised.

use std::sync::Arc;

use axum::extract::State;
use serde_json::json;

use crate::state::AppState;

pub async fn openid_configuration(
    State(state): State<Arc<AppState>>,
) -> axum::Json<serde_json::Value> {
    let issuer = &state.issuer;
    let id_token_alg = state
        .keystore
        .signing_key(strongroom_keystore::KeyPurpose::IdToken)
        .map(|k| k.alg.jose_name())
        .unwrap_or("PS256");
    axum::Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/jwks"),
        "token_endpoint": format!("{issuer}/token"),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported":
            ["private_key_jwt", "tls_client_auth", "self_signed_tls_client_auth"],
        "token_endpoint_auth_signing_alg_values_supported": ["PS256", "ES256"],
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "introspection_endpoint": format!("{issuer}/introspect"),
        "introspection_endpoint_auth_methods_supported":
            ["private_key_jwt", "tls_client_auth", "self_signed_tls_client_auth"],
        "introspection_endpoint_auth_signing_alg_values_supported": ["PS256", "ES256"],
        "revocation_endpoint": format!("{issuer}/revoke"),
        "revocation_endpoint_auth_methods_supported":
            ["private_key_jwt", "tls_client_auth", "self_signed_tls_client_auth"],
        "revocation_endpoint_auth_signing_alg_values_supported": ["PS256", "ES256"],
        "mtls_endpoint_aliases": {
            "token_endpoint": format!("{}/token", state.mtls_base_url),
            "userinfo_endpoint": format!("{}/userinfo", state.mtls_base_url),
            "introspection_endpoint": format!("{}/introspect", state.mtls_base_url),
            "revocation_endpoint": format!("{}/revoke", state.mtls_base_url),
            "pushed_authorization_request_endpoint": format!("{}/par", state.mtls_base_url),
        },
        "claims_supported": super::userinfo::claims_supported(),
        "authorization_endpoint": format!("{issuer}/authorize"),
        "pushed_authorization_request_endpoint": format!("{issuer}/par"),
        "require_pushed_authorization_requests": false,
        // request_uri values come from our PAR endpoint only, never from a client's URL.
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "scopes_supported": crate::authz_request::STANDARD_SCOPES,
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "acr_values_supported": [crate::endpoints::authorize::ACR_PASSWORD],
        "id_token_signing_alg_values_supported": [id_token_alg],
        "subject_types_supported": ["public"],
        "tls_client_certificate_bound_access_tokens": true,
    }))
}
