//! Handlers of the kiosk consent API (see [`super`] for the paths and bodies). Same rules as the
//! sign-in API: our `Origin` on every POST, JSON bodies, the session cookie.

use super::auth::{require_json, require_origin};
use super::{ApiError, AppState, session_cookie};
use crate::domain::consent::{Action, Category};
use crate::domain::consent_desk::ConsentError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

fn consent_error(e: &ConsentError) -> Response {
    let (status, code) = match e {
        ConsentError::NotSignedIn => (StatusCode::UNAUTHORIZED, "not_signed_in"),
        ConsentError::UnknownService => (StatusCode::NOT_FOUND, "unknown_service"),
        ConsentError::CategoriesNotRequested => {
            (StatusCode::BAD_REQUEST, "categories_not_requested")
        }
        ConsentError::NoPending => (StatusCode::CONFLICT, "no_pending_document"),
        ConsentError::Signature(_) | ConsentError::Malformed | ConsentError::OtherPersonsCard => {
            tracing::info!(error = %e, "consent signature refused");
            (StatusCode::UNAUTHORIZED, "signature_refused")
        }
        ConsentError::VersionConflict => (StatusCode::CONFLICT, "consent_changed"),
        ConsentError::AuditUnavailable(_)
        | ConsentError::Auth(_)
        | ConsentError::Store(_)
        | ConsentError::Random => {
            tracing::error!(error = %e, "consent change failed");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
    };
    (status, Json(serde_json::json!({ "error": code }))).into_response()
}

/// `GET /api/consent`.
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let cookie = session_cookie(&headers);
    match state.consent.requests(cookie.as_deref()).await {
        Ok(requests) => Json(serde_json::json!({ "partners": requests })).into_response(),
        Err(e) => consent_error(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrepareRequest {
    service_id: String,
    action: Action,
    #[serde(default)]
    categories: Vec<Category>,
}

/// `POST /api/consent/prepare`.
pub async fn prepare(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_origin(&state, &headers)?;
    require_json(&headers)?;
    let request: PrepareRequest = serde_json::from_slice(&body).map_err(|_| ApiError::NotJson)?;
    let cookie = session_cookie(&headers);
    Ok(
        match state
            .consent
            .prepare(
                cookie.as_deref(),
                &request.service_id,
                request.action,
                &request.categories,
            )
            .await
        {
            Ok(prepared) => Json(prepared).into_response(),
            Err(e) => consent_error(&e),
        },
    )
}

/// `POST /api/consent/commit` (the card token over the prepared document's nonce).
pub async fn commit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_origin(&state, &headers)?;
    require_json(&headers)?;
    let cookie = session_cookie(&headers);
    Ok(match state.consent.commit(cookie.as_deref(), &body).await {
        Ok(st) => Json(serde_json::json!({ "consent": st })).into_response(),
        Err(e) => consent_error(&e),
    })
}

/// `GET /api/history`: every partner access to the signed-in worker's data, newest first.
pub async fn history(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let cookie = session_cookie(&headers);
    match state.consent.history(cookie.as_deref(), 200).await {
        Ok(entries) => Json(serde_json::json!({ "accesses": entries })).into_response(),
        Err(e) => consent_error(&e),
    }
}
