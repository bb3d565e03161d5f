//! The login step: `GET /authorize/login` shows the form of the browser's interaction,
//! `POST /authorize/login` checks the password and signs the interaction in, or, with
//! `decision=cancel` (the page's Cancel button), ends it.
//!
//! Cancel is the user declining (RFC 6749 §4.1.2.1, OpenID Connect Core §3.1.2.6): it passes
//! the same cookie and CSRF checks as a sign-in, needs no username or password (its form sends
//! none), counts no password attempt, and consumes the interaction in one statement, signed in
//! or not, so it answers once. The client gets `access_denied` with `state` and `iss`, exactly
//! as the consent page's Deny sends it ([`super::denied`]); a pushed request is not spent.
//!
//! Online password guessing is bounded per *interaction*: each password attempt is counted on
//! the interaction's row before the password is checked (one `UPDATE … RETURNING`, so parallel
//! posts cannot outrun the count), and the [`MAX_FAILED_LOGINS`]th failure deletes the
//! interaction and sends the client `access_denied` (with `state` and `iss`, as Cancel does); a
//! fresh /authorize starts over. Every further batch of guesses thus costs a new authorization
//! request (for clients that must push, a client-authenticated PAR), and the argon2 work behind
//! all guesses together is bounded to one verification per CPU (`store::users`).
//!
//! Not per username: a lockout of the *account* after N failures lets anyone lock a victim out
//! of every client by failing on purpose with the victim's username, and, applied only to
//! existing accounts, tells an attacker which usernames exist. Guessing across many
//! interactions and addresses is left to rate limits in front of the server.
//!
//! On success the interaction gets a new id and CSRF token in the same statement that records
//! the user (the pre-login cookie value, which an attacker may have planted or seen, is dead),
//! and a new login session replaces the one the browser presented, if any.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::cookies::{INTERACTION_COOKIE, SESSION_COOKIE, clear_cookie, cookie, set_cookie};
use super::page_form::PageForm;
use super::respond::{Stop, ToClient, finish, see_other};
use super::{
    client_origin, consented, context, current_interaction, denied, display_name,
    expired_interaction, issue_code,
};
use crate::authz_request::{AuthorizationRequest, Prompt};
use crate::error::{ErrorCode, OAuthError};
use crate::model::Client;
use crate::pages;
use crate::state::AppState;
use crate::store::SignedIn;

/// Password attempts one interaction allows; the last failure ends it.
pub(super) const MAX_FAILED_LOGINS: i64 = 5;

/// `GET /authorize/login`: the login form of the browser's interaction.
pub async fn login_page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    finish(show(&state, &headers).await)
}

/// `POST /authorize/login`: username, password, csrf; or csrf and `decision=cancel`.
pub async fn login_submit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    finish(submit(&state, &headers, body).await)
}

async fn show(state: &AppState, headers: &HeaderMap) -> Result<Response, Stop> {
    let (_, interaction) = current_interaction(state, headers).await?;
    let (client, request) = context(state, &interaction).await?;
    Ok(form_page(
        StatusCode::OK,
        &client,
        &request,
        &interaction.csrf,
        request.login_hint.as_deref(),
        None,
    ))
}

async fn submit(
    state: &AppState,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Response, Stop> {
    let form = PageForm::read(headers, body).await?;
    let cancel = match form.decision.as_deref() {
        None => false,
        Some("cancel") => true,
        Some(_) => {
            return Err(OAuthError::invalid_request(
                "decision must be cancel, or absent to sign in",
            )
            .into());
        }
    };
    let (id, interaction) = current_interaction(state, headers).await?;
    form.check_csrf(&interaction)?;
    let (client, request) = context(state, &interaction).await?;
    let back = ToClient::of(state, &request);
    let now = state.now();
    if cancel {
        return cancel_interaction(state, &id, back, now).await;
    }
    let Some(attempt) = state
        .store
        .count_login_attempt(&id, MAX_FAILED_LOGINS, now)
        .await
        .map_err(|e| back.fail(e))?
    else {
        // Gone meanwhile: expired, spent by parallel attempts, or signed in by another post.
        return Err(expired_interaction().into());
    };
    let username = form.username.unwrap_or_default();
    // The password moves into verify_password, which zeroizes it; it is never logged or shown.
    let verified = state
        .store
        .verify_password(&username, form.password)
        .await
        .map_err(|e| back.fail(e))?;
    let Some(user) = verified else {
        if attempt >= MAX_FAILED_LOGINS {
            // The request has failed: the client hears it (RFC 6749 §4.1.2.1), as for Cancel.
            return end_interaction(
                state,
                &id,
                back,
                ErrorCode::AccessDenied,
                "too many failed sign-in attempts",
            )
            .await;
        }
        return Ok(form_page(
            StatusCode::UNAUTHORIZED,
            &client,
            &request,
            &interaction.csrf,
            Some(&username),
            Some("The username or password is incorrect."),
        ));
    };
    if request
        .subject
        .as_deref()
        .is_some_and(|s| s != user.user_id)
    {
        // OpenID Connect Core §3.1.2.1 / §5.5.1: never an answer for another user than the one
        // the request names.
        return end_interaction(
            state,
            &id,
            back,
            ErrorCode::LoginRequired,
            "the user signed in as another user than the request's id_token_hint or claims name",
        )
        .await;
    }
    let signed_in = SignedIn {
        user_id: user.user_id,
        auth_time: now,
        acr: state
            .acr_values
            .first()
            .map_or(crate::acr::PASSWORD, String::as_str)
            .to_owned(),
    };
    let rotated = state
        .store
        .sign_in_interaction(&id, &signed_in, now)
        .await
        .map_err(|e| back.fail(e))?
        .ok_or_else(expired_interaction)?;
    if let Some(previous) = cookie(headers, SESSION_COOKIE) {
        state
            .store
            .end_login_session(previous)
            .await
            .map_err(|e| back.fail(e))?;
    }
    let session = state
        .store
        .create_login_session(&signed_in, now + state.lifetimes.login_session)
        .await
        .map_err(|e| back.fail(e))?;
    let remembered = !request.has_prompt(Prompt::Consent)
        && consented(state, &signed_in, &request)
            .await
            .map_err(|e| back.fail(e))?;
    let mut resp = if remembered {
        // Consent given before: straight back to the client.
        state
            .store
            .take_interaction(&rotated.id, now)
            .await
            .map_err(|e| back.fail(e))?
            .ok_or_else(expired_interaction)?;
        let spends = request.pushed.as_deref();
        let mut resp = issue_code(state, &client, &request, &signed_in, None, spends, now).await?;
        clear_cookie(&mut resp, INTERACTION_COOKIE);
        resp
    } else {
        let mut resp = see_other("/authorize/consent").map_err(|e| back.fail(e))?;
        set_cookie(
            &mut resp,
            INTERACTION_COOKIE,
            &rotated.id,
            interaction.expires_at - now,
        )
        .map_err(|e| back.fail(e))?;
        resp
    };
    set_cookie(
        &mut resp,
        SESSION_COOKIE,
        &session,
        state.lifetimes.login_session,
    )
    .map_err(|e| back.fail(e))?;
    Ok(resp)
}

/// The interaction ends here with `code` sent to the client (with `state` and `iss`).
async fn end_interaction(
    state: &AppState,
    id: &str,
    back: ToClient<'_>,
    code: ErrorCode,
    description: &str,
) -> Result<Response, Stop> {
    state
        .store
        .delete_interaction(id)
        .await
        .map_err(|e| back.fail(e))?;
    let mut resp = back.error(&OAuthError::new(StatusCode::BAD_REQUEST, code, description));
    clear_cookie(&mut resp, INTERACTION_COOKIE);
    Ok(resp)
}

/// The Cancel button: the interaction ends here, and the client hears `access_denied`. Only the
/// post that consumed the interaction answers; any other (a replay, a parallel post) gets the
/// error page.
async fn cancel_interaction(
    state: &AppState,
    id: &str,
    back: ToClient<'_>,
    now: i64,
) -> Result<Response, Stop> {
    let consumed = state
        .store
        .cancel_interaction(id, now)
        .await
        .map_err(|e| back.fail(e))?;
    if !consumed {
        return Err(expired_interaction().into());
    }
    let mut resp = denied(back);
    clear_cookie(&mut resp, INTERACTION_COOKIE);
    Ok(resp)
}

fn form_page(
    status: StatusCode,
    client: &Client,
    request: &AuthorizationRequest,
    csrf: &str,
    username: Option<&str>,
    message: Option<&str>,
) -> Response {
    pages::login(
        status,
        display_name(client),
        csrf,
        username,
        message,
        client_origin(request).as_deref(),
    )
}
