//! How a front-channel step ends: a redirect within this server, an error page, or a redirect
//! back to the client (RFC 6749 §4.1.2 and §4.1.2.1 with RFC 9207's `iss`).
//!
//! Which of the last two an error gets is decided by whether the request's redirect_uri is
//! trusted yet. Before, an error is a page: `?` on an [`OAuthError`] gives one (the only
//! `From` into [`Stop`]). After, every error — a protocol one or the server's own (a store
//! failure becomes `server_error`) — goes back to the client through [`ToClient::fail`]. There
//! is no `From<StoreError>` for [`Stop`] on purpose: a store failure cannot become a page by a
//! bare `?`; the step must say which of the two it is.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::authz_request::AuthorizationRequest;
use crate::error::OAuthError;
use crate::pages;
use crate::state::AppState;

/// A step that stops: the response already chosen (an error page, or the error redirected to
/// the client).
pub(super) struct Stop(pub(super) Response);

/// Before the redirect_uri is trusted: the error page.
impl From<OAuthError> for Stop {
    fn from(e: OAuthError) -> Self {
        Stop(pages::error(&e))
    }
}

/// Any error as a page (e.g. a store failure while the request is still unknown).
pub(super) fn page(e: impl Into<OAuthError>) -> Stop {
    Stop::from(e.into())
}

pub(super) fn finish(r: Result<Response, Stop>) -> Response {
    r.unwrap_or_else(|Stop(resp)| resp)
}

/// The way back to a client whose redirect_uri is registered: `state` is echoed and `iss` added
/// to every answer.
#[derive(Clone, Copy)]
pub(super) struct ToClient<'a> {
    state: &'a AppState,
    redirect_uri: &'a str,
    client_state: Option<&'a str>,
    /// The response goes in the fragment (the hybrid flow) rather than the query.
    fragment: bool,
}

impl<'a> ToClient<'a> {
    /// `redirect_uri` must have passed `authz_request::ensure_registered`.
    pub(super) fn new(
        state: &'a AppState,
        redirect_uri: &'a str,
        client_state: Option<&'a str>,
        fragment: bool,
    ) -> Self {
        ToClient {
            state,
            redirect_uri,
            client_state,
            fragment,
        }
    }

    /// A validated request's way back.
    pub(super) fn of(state: &'a AppState, request: &'a AuthorizationRequest) -> Self {
        Self::new(
            state,
            &request.redirect_uri,
            request.state.as_deref(),
            request.in_fragment(),
        )
    }

    /// Stops with `e` sent to the client; a store failure is logged and sent as `server_error`.
    pub(super) fn fail(self, e: impl Into<OAuthError>) -> Stop {
        Stop(self.error(&e.into()))
    }

    /// RFC 6749 §4.1.2.1: `error` and `error_description`.
    pub(super) fn error(self, e: &OAuthError) -> Response {
        self.redirect(&[
            ("error", e.code.as_str()),
            ("error_description", &e.description),
        ])
    }

    /// RFC 6749 §4.1.2: the code (OpenID Connect Core §3.3.2.5: with the ID token, in the
    /// fragment, for `code id_token`).
    pub(super) fn code(self, code: &str, id_token: Option<&str>) -> Response {
        match id_token {
            None => self.redirect(&[("code", code)]),
            Some(t) => self.redirect(&[("code", code), ("id_token", t)]),
        }
    }

    /// 303 to the redirect_uri with `params`, then `state` and `iss`: added to its query
    /// (keeping any query it has), or for the hybrid flow written as its fragment; each value
    /// URL-encoded.
    fn redirect(self, params: &[(&str, &str)]) -> Response {
        let Ok(mut url) = url::Url::parse(self.redirect_uri) else {
            // Registration only accepts URLs; a row edited by hand is no reason to redirect
            // blindly.
            return pages::error(&OAuthError::server_error(
                "the client's redirect_uri is not a URL",
            ));
        };
        let state = self.client_state.map(|s| ("state", s));
        let all = params
            .iter()
            .copied()
            .chain(state)
            .chain([("iss", self.state.issuer.as_str())]);
        if self.fragment {
            let encoded = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(all)
                .finish();
            url.set_fragment(Some(&encoded));
        } else {
            url.query_pairs_mut().extend_pairs(all);
        }
        see_other(url.as_str()).unwrap_or_else(|e| pages::error(&e))
    }
}

/// 303 See Other, not cached, sending no Referer onwards.
pub(super) fn see_other(location: &str) -> Result<Response, OAuthError> {
    let location = HeaderValue::from_str(location)
        .map_err(|_| OAuthError::server_error("the redirect location is not a valid header"))?;
    let mut resp = StatusCode::SEE_OTHER.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(resp)
}
