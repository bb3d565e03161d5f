//! The consent step: `GET /authorize/consent` shows what the client asks for,
//! `POST /authorize/consent` approves (the code) or denies (`access_denied`, as the login page's
//! Cancel: [`super::denied`]), consuming the interaction in one statement so it answers once.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::cookies::{INTERACTION_COOKIE, clear_cookie};
use super::page_form::PageForm;
use super::respond::{Stop, ToClient, finish, page, see_other};
use super::{
    client_origin, consent_resource, context, current_interaction, denied, display_name,
    expired_interaction, issue_code, spent_or,
};
use crate::authorization_details;
use crate::error::OAuthError;
use crate::pages;
use crate::state::AppState;
use crate::store::SubjectType;

/// `GET /authorize/consent`: the consent form of the browser's signed-in interaction.
pub async fn consent_page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    finish(show(&state, &headers).await)
}

/// `POST /authorize/consent`: csrf, decision (approve | deny).
pub async fn consent_submit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    finish(submit(&state, &headers, body).await)
}

async fn show(state: &AppState, headers: &HeaderMap) -> Result<Response, Stop> {
    let (_, interaction) = current_interaction(state, headers).await?;
    if interaction.user.is_none() {
        return Ok(see_other("/authorize/login")?);
    }
    let (client, request) = context(state, &interaction).await?;
    let host = url::Url::parse(&request.redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let api = match request.resource.as_deref().filter(|r| *r != state.issuer) {
        Some(r) => state.store.get_resource_server(r).await.map_err(page)?,
        None => None,
    };
    let scopes: Vec<(String, String)> = request
        .scopes()
        .into_iter()
        .map(|s| {
            let meaning = api
                .as_ref()
                .and_then(|a| {
                    a.scopes
                        .iter()
                        .find(|x| x.value == s && !x.description.is_empty())
                })
                .map_or_else(
                    || pages::describe_scope(&s).to_owned(),
                    |x| x.description.clone(),
                );
            (s, meaning)
        })
        .collect();
    Ok(pages::consent(
        display_name(&client),
        &scopes,
        request.authorization_details.as_deref().unwrap_or_default(),
        &interaction.csrf,
        &host,
        client_origin(&request).as_deref(),
    ))
}

async fn submit(
    state: &AppState,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Response, Stop> {
    let form = PageForm::read(headers, body).await?;
    let approve = match form.decision.as_deref() {
        Some("approve") => true,
        Some("deny") => false,
        _ => {
            return Err(OAuthError::invalid_request("decision must be approve or deny").into());
        }
    };
    let (id, interaction) = current_interaction(state, headers).await?;
    form.check_csrf(&interaction)?;
    let (client, request) = context(state, &interaction).await?;
    let back = ToClient::of(state, &request);
    let now = state.now();
    // Single use: only one submission of this interaction gets past this line.
    let taken = state
        .store
        .take_interaction(&id, now)
        .await
        .map_err(|e| back.fail(e))?
        .ok_or_else(expired_interaction)?;
    let user = taken.user.ok_or_else(expired_interaction)?;
    let answer = if approve {
        async {
            // The point of authorization: the pushed request is spent now, before an approval
            // of its authorization_details is recorded, so a request another tab has already
            // authorized records nothing more.
            if let Some(handle) = &request.pushed {
                state
                    .store
                    .spend_request_uri(handle, &client.client_id)
                    .await
                    .map_err(|e| spent_or(back, e))?;
            }
            let resource = consent_resource(state, &request);
            // A plain request's scopes are remembered, so the page is not shown for them again.
            // An approval of authorization_details is of that transaction only: recorded, then
            // bound to the code, and nothing of it (not even its scopes) answers a later request.
            let txn = match &request.authorization_details {
                None => {
                    state
                        .store
                        .remember_consent(
                            &user.user_id,
                            &client.client_id,
                            resource,
                            &request.scopes(),
                            now,
                        )
                        .await
                        .map_err(|e| back.fail(e))?;
                    None
                }
                Some(details) => Some(
                    authorization_details::approve(
                        state,
                        (&user.user_id, SubjectType::User),
                        &client.client_id,
                        resource,
                        details,
                        now,
                    )
                    .await
                    .map_err(|e| back.fail(e))?,
                ),
            };
            issue_code(state, &client, &request, &user, txn, None, now).await
        }
        .await
    } else {
        Ok(denied(back))
    };
    // The interaction is spent, whatever the answer.
    let mut resp = finish(answer);
    clear_cookie(&mut resp, INTERACTION_COOKIE);
    Ok(resp)
}
