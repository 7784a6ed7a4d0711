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
        ConsentError::CardRecordRequired => (StatusCode::BAD_REQUEST, "card_record_required"),
        ConsentError::CardRecordUnexpected => (StatusCode::BAD_REQUEST, "card_record_unexpected"),
        ConsentError::CardRecordMalformed => (StatusCode::BAD_REQUEST, "card_record_malformed"),
        ConsentError::CardRecordSignature => {
            tracing::info!(error = %e, "consent card record refused");
            (StatusCode::UNAUTHORIZED, "card_record_signature_refused")
        }
        ConsentError::CardRecordService => {
            (StatusCode::UNPROCESSABLE_ENTITY, "card_record_service")
        }
        ConsentError::CardRecordStatus => (StatusCode::UNPROCESSABLE_ENTITY, "card_record_status"),
        ConsentError::CardRecordCategories => {
            (StatusCode::UNPROCESSABLE_ENTITY, "card_record_categories")
        }
        ConsentError::CardRecordPeriod => (StatusCode::UNPROCESSABLE_ENTITY, "card_record_period"),
        ConsentError::CardRecordPurpose => {
            (StatusCode::UNPROCESSABLE_ENTITY, "card_record_purpose")
        }
        ConsentError::CardRecordStale { .. } => {
            tracing::info!(error = %e, "consent card record refused");
            (StatusCode::UNPROCESSABLE_ENTITY, "card_record_stale")
        }
        ConsentError::CardRecordReplayed { .. } => {
            tracing::info!(error = %e, "consent card record refused");
            (StatusCode::CONFLICT, "card_record_replayed")
        }
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

/// A commit body with a card record beside the token's fields.
#[derive(Deserialize)]
struct WithCardRecord {
    card_record: String,
    #[serde(flatten)]
    token: serde_json::Map<String, serde_json::Value>,
}

/// `POST /api/consent/commit`: the card token over the prepared document's nonce (the token
/// JSON as the agent made it) and, with a PHR card, `card_record` beside the token's fields:
/// hex or base64 of the consent record the card wrote for this document.
pub async fn commit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_origin(&state, &headers)?;
    require_json(&headers)?;
    let cookie = session_cookie(&headers);
    // Without `card_record` the body is the token itself, passed on unchanged.
    let (token, card_record) = match serde_json::from_slice::<WithCardRecord>(&body) {
        Ok(w) => (
            serde_json::Value::Object(w.token).to_string().into_bytes(),
            Some(w.card_record),
        ),
        Err(_) => (body.to_vec(), None),
    };
    Ok(
        match state
            .consent
            .commit(cookie.as_deref(), &token, card_record.as_deref())
            .await
        {
            Ok(st) => Json(serde_json::json!({ "consent": st })).into_response(),
            Err(e) => consent_error(&e),
        },
    )
}

/// `GET /api/history`: every partner access to the signed-in worker's data, newest first.
pub async fn history(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let cookie = session_cookie(&headers);
    match state.consent.history(cookie.as_deref(), 200).await {
        Ok(entries) => Json(serde_json::json!({ "accesses": entries })).into_response(),
        Err(e) => consent_error(&e),
    }
}
