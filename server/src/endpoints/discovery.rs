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
        "mtls_endpoint_aliases": { "token_endpoint": format!("{}/token", state.mtls_base_url) },
        "id_token_signing_alg_values_supported": [id_token_alg],
        "subject_types_supported": ["public"],
        "tls_client_certificate_bound_access_tokens": true,
    }))
}
