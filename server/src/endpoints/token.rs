//! `POST /token` (RFC 6749 §3.2): client authentication, then the grant.
//!
//! The grants themselves are in [`crate::grants`]: `authorization_code` (with PKCE S256),
//! `refresh_token` (rotating) and `client_credentials`. Tokens are made in [`crate::issue`].

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::client_auth::{self, AuthenticatedClient, ClientAuthPolicy, ClientCredentials};
use crate::error::{ErrorCode, OAuthError};
use crate::fapi_headers;
use crate::form::{Form, form_endpoint};
use crate::grants;
use crate::model::Client;
use crate::policy::{ClientAuth, Policy};
use crate::state::AppState;
use crate::store::{JtiRecord, StoreError, take_unspent_jti, with_unspent_jti};
use crate::tls_edge::Connection;

pub async fn token(req: ClientRequest, body: Body) -> Response {
    // Admission control: at capacity, answer 503 now rather than queue for the CPU. Every grant
    // ends in a signature: with the signing pool's queue full, the request would authenticate
    // its client (an assertion verified, its jti committed) only to hear Busy from the pool.
    if req.state.keystore.pool().is_full() {
        return OAuthError::busy().into_response();
    }
    let Ok(_permit) = req.state.token_admission.try_acquire() else {
        return OAuthError::busy().into_response();
    };
    req.serve(body, "/token", handle).await
}

async fn handle(
    state: &AppState,
    client: &Client,
    auth: &AuthenticatedClient,
    form: &Form,
) -> Result<Response, OAuthError> {
    // Each grant's future is boxed: inline, the largest (5 KB) sized this future, and every
    // future wrapped around it on the way to axum (26 KB in all, allocated and copied whole
    // for every request).
    match form.get("grant_type") {
        None => Err(OAuthError::invalid_request("grant_type is required")),
        Some("client_credentials") => {
            Box::pin(grants::client_credentials::grant(state, client, auth, form)).await
        }
        Some("authorization_code") => {
            Box::pin(grants::authorization_code::grant(state, client, auth, form)).await
        }
        Some("refresh_token") => {
            Box::pin(grants::refresh_token::grant(state, client, auth, form)).await
        }
        Some(other) => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnsupportedGrantType,
            format!("grant_type {other:?} is not supported"),
        )),
    }
}

/// A request to an endpoint where the client authenticates as at /token (/token, /par,
/// /introspect, /revoke): what the handler needs besides the body, which it takes unread.
pub struct ClientRequest {
    state: Arc<AppState>,
    conn: Connection,
    headers: HeaderMap,
}

impl FromRequestParts<Arc<AppState>> for ClientRequest {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Response> {
        let Extension(conn) = Extension::<Connection>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(ClientRequest {
            state: Arc::clone(state),
            conn,
            headers: parts.headers.clone(),
        })
    }
}

impl ClientRequest {
    /// Reads the form from `body`, authenticates the client ([`authenticate_client`], `endpoint`
    /// the path it called), and hands both to `handle`; every failure is answered with an OAuth
    /// error object.
    pub async fn serve(
        &self,
        body: Body,
        endpoint: &str,
        handle: impl AsyncFnOnce(
            &AppState,
            &Client,
            &AuthenticatedClient,
            &Form,
        ) -> Result<Response, OAuthError>,
    ) -> Response {
        let (state, conn, headers) = (&*self.state, &self.conn, &self.headers);
        form_endpoint(headers, body, async |form| {
            let (client, authenticated) =
                authenticate_client(state, conn, headers, &form, endpoint).await?;
            let jti = authenticated.assertion.as_ref().map(|a| JtiRecord {
                client_id: client.client_id.clone(),
                jti: a.jti.clone(),
                expires_at: a.exp + state.clock_skew,
            });
            once_per_assertion(state, jti, handle(state, &client, &authenticated, &form)).await
        })
        .await
    }
}

/// Runs a client-authenticated request's `handler` so that its assertion (`jti`, for
/// private_key_jwt) is used once: a replay of one this instance saw lately is refused before any
/// work ([`crate::recent_jtis`]); otherwise the jti is recorded by the handler's first write, in
/// the same transaction, so a replay the database catches changes nothing (store `jti.rs`), and a
/// handler that wrote nothing has it recorded here, before its answer leaves.
///
/// A request refused for what it asked is refused with its assertion spent, as if the jti had
/// been recorded first. Only a 503 (the server could not take the request) leaves it unspent, so
/// the client may send the same assertion again.
async fn once_per_assertion(
    state: &AppState,
    jti: Option<JtiRecord>,
    handler: impl Future<Output = Result<Response, OAuthError>>,
) -> Result<Response, OAuthError> {
    if jti.as_ref().is_some_and(|j| !state.recent_jtis.claim(j)) {
        return Err(replayed());
    }
    with_unspent_jti(jti, async {
        let outcome = match handler.await {
            Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => Err(e),
            outcome => spend_assertion(state, outcome).await,
        };
        // Ended without recording the jti: the client may send this assertion again.
        if outcome.is_err() {
            if let Some(unused) = take_unspent_jti() {
                state.recent_jtis.release(&unused);
            }
        }
        outcome
    })
    .await
}

/// Records the request's jti if no write has, and says what the client hears: `outcome`, unless
/// the jti turns out to be a replay.
async fn spend_assertion(
    state: &AppState,
    outcome: Result<Response, OAuthError>,
) -> Result<Response, OAuthError> {
    match (state.store.spend_unspent_jti().await, outcome) {
        (Ok(()), outcome) => outcome,
        // A replay after all: that is the answer, whatever else was wrong.
        (Err(StoreError::AssertionReplayed), _) => Err(replayed()),
        (Err(e), Ok(_)) => Err(OAuthError::from(e)),
        // The refusal says more than a failure to record the jti.
        (Err(e), Err(refused)) => {
            tracing::error!(error = %e, "a refused request's assertion could not be recorded");
            Err(refused)
        }
    }
}

fn replayed() -> OAuthError {
    OAuthError::invalid_client("this client assertion has been used before")
}

/// `client_secret_basic` is not offered (no client has a secret), but a client may still try it.
/// RFC 6749 §5.2: alone, a 401 `invalid_client` with a `Basic` challenge; beside a client
/// assertion, a request that "utilizes more than one mechanism" (§2.3: a client "MUST NOT use
/// more than one"): 400 `invalid_request`. A TLS client certificate does not count here: on the
/// mTLS listener every client presents one, for authentication or only for bound tokens.
/// `client_secret_post` (a `client_secret` in the body) likewise: alone, 401 `invalid_client`;
/// beside an assertion or Basic, 400 `invalid_request`.
fn refuse_secrets(headers: &HeaderMap, form: &Form, other_method: bool) -> Result<(), OAuthError> {
    let basic = headers.get(header::AUTHORIZATION).is_some_and(|v| {
        v.as_bytes()
            .get(..6)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"basic "))
    });
    let posted = form.get("client_secret").is_some();
    if [basic, posted, other_method].iter().filter(|m| **m).count() > 1 {
        return Err(OAuthError::invalid_request(
            "more than one client authentication method (RFC 6749 section 2.3)",
        ));
    }
    if basic {
        return Err(OAuthError::invalid_client_basic(
            "client_secret_basic is not supported; see token_endpoint_auth_methods_supported",
        ));
    }
    if posted {
        return Err(OAuthError::invalid_client(
            "client_secret_post is not supported; see token_endpoint_auth_methods_supported",
        ));
    }
    Ok(())
}

/// Finds the client (by `client_id`, or by the assertion's unverified `iss`), authenticates it
/// by the method its registration and compliance level allow, checks the level's `x-fapi-*`
/// headers. The assertion's `jti` is recorded later, with the request's first write (see
/// [`ClientRequest::serve`]).
async fn authenticate_client(
    state: &AppState,
    conn: &Connection,
    headers: &HeaderMap,
    form: &Form,
    endpoint: &str,
) -> Result<(Arc<Client>, AuthenticatedClient), OAuthError> {
    let assertion = form.get("client_assertion");
    refuse_secrets(headers, form, assertion.is_some())?;
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
        .clients
        .get(&state.store, &client_id)
        .await?
        .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
    let level = Policy::of(&client);
    if !level.allows_auth_method(client.token_endpoint_auth_method) {
        return Err(OAuthError::invalid_client(format!(
            "the configured compliance level requires {} client authentication; this client \
             is registered for {}",
            match level.client_auth() {
                Some(ClientAuth::PrivateKeyJwt) => "private_key_jwt",
                _ => "mTLS (tls_client_auth or self_signed_tls_client_auth)",
            },
            client.token_endpoint_auth_method.as_str()
        )));
    }
    if level.fapi_headers_validated() {
        fapi_headers::validate(headers)?;
    }
    let now = state.now();
    // FAPI 2.0 Security Profile §5.3.2.1: the issuer only. Otherwise also the token endpoint's
    // URL and the URL of the endpoint that received the assertion, on either listener (RFC 7523
    // §3, RFC 9126 §2, FAPI 1 Advanced §5.2.2 item 15).
    let audiences: Vec<String> = if level.assertion_aud_is_issuer_only() {
        vec![state.issuer.clone()]
    } else {
        let mut a = vec![state.issuer.clone()];
        for path in ["/token", endpoint] {
            for base in [&state.issuer, &state.mtls_base_url] {
                let url = format!("{base}{path}");
                if !a.contains(&url) {
                    a.push(url);
                }
            }
        }
        a
    };
    let chain = conn.peer_certificates.as_deref();
    let credentials = ClientCredentials {
        client_assertion_type: form.get("client_assertion_type"),
        client_assertion: assertion,
        peer_certificates: chain,
    };
    let policy = ClientAuthPolicy {
        accepted_audiences: &audiences,
        aud_string_only: level.assertion_aud_is_issuer_only(),
        now,
        max_assertion_lifetime: 300,
        clock_skew: state.clock_skew,
        client_ca: state.client_ca.as_ref(),
        jwks_source: state.jwks_source.as_deref(),
    };
    let authenticated = client_auth::authenticate(&client, &credentials, &policy).await?;
    Ok((client, authenticated))
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
