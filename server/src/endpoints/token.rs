//! `POST /token` (RFC 6749 §3.2): client authentication, then the grant.
//!
//! Implemented grants: `client_credentials`. (`authorization_code` with PKCE and `refresh_token`
//! follow with PAR and /authorize.) Access tokens are RFC 9068 JWTs (`typ: at+jwt`) signed in
//! the HSM, bound to the client certificate (`cnf.x5t#S256`, RFC 8705) when the client asks for
//! bound tokens and presented one, and recorded by `jti` for introspection and revocation.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::client_auth::{self, ClientAuthPolicy, ClientCredentials};
use crate::error::{ErrorCode, OAuthError};
use crate::model::Client;
use crate::state::AppState;
use crate::tls_edge::Connection;

/// A token request's form parameters, each at most once (RFC 6749 §3.2).
pub struct Form(HashMap<String, String>);

impl Form {
    pub fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|_| {
            OAuthError::invalid_request("the body is not application/x-www-form-urlencoded")
        })?;
        let mut map = HashMap::with_capacity(pairs.len());
        for (k, v) in pairs {
            if map.insert(k.clone(), v).is_some() {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {k} is repeated"
                )));
            }
        }
        Ok(Form(map))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// The largest form body accepted; a larger one is refused unread.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// Reads a form body of at most [`MAX_FORM_BYTES`], refusing with OAuth error objects (never a
/// framework's plain-text rejection): `invalid_request` for another content type, 413
/// for an oversized body.
pub async fn read_form(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Form, OAuthError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| {
            OAuthError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::InvalidRequest,
                format!("the body is larger than {MAX_FORM_BYTES} bytes"),
            )
        })?;
    Form::parse(&bytes)
}

pub async fn token(
    State(state): State<Arc<AppState>>,
    Extension(conn): Extension<Connection>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Response {
    let result = match read_form(&headers, body).await {
        Ok(form) => handle(&state, &conn, &form).await,
        Err(e) => Err(e),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn handle(state: &AppState, conn: &Connection, form: &Form) -> Result<Response, OAuthError> {
    let (client, authenticated) = authenticate_client(state, conn, form, "/token").await?;
    match form.get("grant_type") {
        None => Err(OAuthError::invalid_request("grant_type is required")),
        Some("client_credentials") => {
            client_credentials(state, &client, &authenticated, form).await
        }
        Some(g @ ("authorization_code" | "refresh_token")) => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnsupportedGrantType,
            format!("{g} is not available on this server yet"),
        )),
        Some(other) => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnsupportedGrantType,
            format!("grant_type {other:?} is not supported"),
        )),
    }
}

/// Finds the client (by `client_id`, or by the assertion's unverified `iss`), authenticates it,
/// and records the assertion's `jti` so it can never be used again.
pub async fn authenticate_client(
    state: &AppState,
    conn: &Connection,
    form: &Form,
    endpoint: &str,
) -> Result<(Client, client_auth::AuthenticatedClient), OAuthError> {
    let assertion = form.get("client_assertion");
    let client_id = match (
        form.get("client_id"),
        assertion.and_then(client_auth::peek_assertion_client_id),
    ) {
        (Some(id), Some(iss)) if id != iss => {
            return Err(OAuthError::invalid_client(
                "client_id does not match the assertion's issuer",
            ));
        }
        (Some(id), _) => id.to_owned(),
        (None, Some(iss)) => iss,
        (None, None) => return Err(OAuthError::invalid_client("no client authentication")),
    };
    let client = state
        .store
        .get_client(&client_id)
        .await?
        .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
    let now = state.now();
    let audiences = [
        state.issuer.clone(),
        format!("{}{endpoint}", state.issuer),
        format!("{}{endpoint}", state.mtls_base_url),
    ];
    let chain = conn.peer_certificates.as_deref();
    let credentials = ClientCredentials {
        client_assertion_type: form.get("client_assertion_type"),
        client_assertion: assertion,
        peer_certificates: chain,
    };
    let policy = ClientAuthPolicy {
        accepted_audiences: &audiences,
        now,
        max_assertion_lifetime: 300,
        clock_skew: state.clock_skew,
        client_ca: state.client_ca.as_ref(),
        jwks_source: state.jwks_source.as_deref(),
    };
    let authenticated = client_auth::authenticate(&client, &credentials, &policy).await?;
    if let Some(a) = &authenticated.assertion {
        if !state
            .store
            .use_jti(&client.client_id, &a.jti, a.exp + state.clock_skew)
            .await?
        {
            return Err(OAuthError::invalid_client(
                "this client assertion has been used before",
            ));
        }
    }
    Ok((client, authenticated))
}

async fn client_credentials(
    state: &AppState,
    client: &Client,
    authenticated: &client_auth::AuthenticatedClient,
    form: &Form,
) -> Result<Response, OAuthError> {
    if !client.grant_types.iter().any(|g| g == "client_credentials") {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnauthorizedClient,
            "this client may not use the client_credentials grant",
        ));
    }
    let allowed: Vec<&str> = client
        .scope
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let requested: Vec<&str> = form.get("scope").unwrap_or("").split_whitespace().collect();
    if let Some(s) = requested.iter().find(|s| !allowed.contains(s)) {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidScope,
            format!("scope {s:?} is not allowed for this client"),
        ));
    }
    let scope = requested.join(" ");
    let cnf = bound_certificate(client, authenticated)?;
    let issued =
        issue_access_token(state, client, &client.client_id, &scope, cnf.as_deref()).await?;
    Ok(token_response(json!({
        "access_token": issued.token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": scope,
    })))
}

/// The certificate thumbprint to bind the token to, when the client asks for bound tokens.
pub fn bound_certificate(
    client: &Client,
    authenticated: &client_auth::AuthenticatedClient,
) -> Result<Option<String>, OAuthError> {
    if !client.tls_client_certificate_bound_access_tokens {
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

pub struct IssuedToken {
    pub token: String,
    pub expires_in: i64,
}

/// Signs an RFC 9068 access token in the HSM and records its `jti`.
pub async fn issue_access_token(
    state: &AppState,
    client: &Client,
    sub: &str,
    scope: &str,
    cnf_x5t_s256: Option<&str>,
) -> Result<IssuedToken, OAuthError> {
    let now = state.now();
    let jti = crate::store::random_id().map_err(|_| OAuthError::server_error("no randomness"))?;
    let exp = now + state.lifetimes.access_token;
    let mut claims = json!({
        "iss": state.issuer,
        "sub": sub,
        "aud": state.issuer,
        "client_id": client.client_id,
        "iat": now,
        "exp": exp,
        "jti": jti,
        "scope": scope,
    });
    if let (Some(t), Some(map)) = (cnf_x5t_s256, claims.as_object_mut()) {
        map.insert("cnf".into(), json!({ "x5t#S256": t }));
    }
    let token = state
        .keystore
        .sign_jwt(
            strongroom_keystore::KeyPurpose::AccessToken,
            Some("at+jwt"),
            &claims,
        )
        .await?;
    state
        .store
        .insert_access_token(&jti, &client.client_id, None, &claims, exp)
        .await?;
    Ok(IssuedToken {
        token,
        expires_in: state.lifetimes.access_token,
    })
}

/// 200 with `Cache-Control: no-store` (RFC 6749 §5.1).
pub fn token_response(body: serde_json::Value) -> Response {
    let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}
