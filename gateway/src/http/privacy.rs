//! Handlers of the worker's export and erasure (security-scenarios K1/K2, PHR guideline 消去 and
//! 相互運用性; rules in [`crate::domain::privacy`], `docs/privacy.md`). Same rules as the sign-in
//! and consent API: our `Origin` on every POST, JSON bodies, the session cookie.
//!
//! - `POST /api/erasure/prepare` (no body or `{}`) → 200 `{"nonce","origin","document",
//!   "expires_at_ms","preview":{"resources","person_keys","consents_revoked","source_links"}}`:
//!   the card signs this nonce
//! - `POST /api/erasure/commit` (the card token) → 200 `{"erasure":{"id","person_id",
//!   "erased_at_ms","backup_purge_due_ms","counts":{…}}}` / 401 `signature_refused` / 409
//!   `no_pending_document` | `pull_in_progress`
//! - `GET /api/export` → 200 `application/fhir+json`, the whole record as one `collection`
//!   Bundle (`Content-Disposition: attachment; filename="iphr-YYYYMMDD.iphr-export.json"`)
//! - `GET /api/export?format=ndjson` → 200 `{"output":[{"type","count","url"}]}`;
//!   `GET /api/export?format=ndjson&type=T` → 200 `application/fhir+ndjson`
//!
//! Errors: 401 `not_signed_in` | `reauthentication_required` (card sign-in older than 5 minutes),
//! 400 `bad_request`, 503 `unavailable`.

use super::auth::{require_json, require_origin};
use super::{ApiError, AppState, session_cookie};
use crate::domain::privacy::{ExportFormat, PrivacyError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

fn privacy_error(e: &PrivacyError) -> Response {
    let (status, code) = match e {
        PrivacyError::NotSignedIn => (StatusCode::UNAUTHORIZED, "not_signed_in"),
        PrivacyError::ReauthenticationRequired => {
            (StatusCode::UNAUTHORIZED, "reauthentication_required")
        }
        PrivacyError::NoPending => (StatusCode::CONFLICT, "no_pending_document"),
        PrivacyError::Signature(_) | PrivacyError::Malformed | PrivacyError::OtherPersonsCard => {
            tracing::info!(error = %e, "erasure signature refused");
            (StatusCode::UNAUTHORIZED, "signature_refused")
        }
        PrivacyError::PullInProgress => (StatusCode::CONFLICT, "pull_in_progress"),
        PrivacyError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        PrivacyError::AuditUnavailable(_)
        | PrivacyError::Auth(_)
        | PrivacyError::Store(_)
        | PrivacyError::Random => {
            tracing::error!(error = %e, "privacy request failed");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
    };
    (status, Json(serde_json::json!({ "error": code }))).into_response()
}

/// The body of a prepare: nothing, or an empty object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrepareRequest {}

/// `POST /api/erasure/prepare`.
pub async fn prepare(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_origin(&state, &headers)?;
    if !body.is_empty() {
        require_json(&headers)?;
        let _: PrepareRequest = serde_json::from_slice(&body).map_err(|_| ApiError::NotJson)?;
    }
    let cookie = session_cookie(&headers);
    Ok(
        match state.privacy.prepare_erasure(cookie.as_deref()).await {
            Ok(prepared) => Json(prepared).into_response(),
            Err(e) => privacy_error(&e),
        },
    )
}

/// `POST /api/erasure/commit` (the card token over the prepared document's nonce).
pub async fn commit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_origin(&state, &headers)?;
    require_json(&headers)?;
    let cookie = session_cookie(&headers);
    Ok(
        match state.privacy.commit_erasure(cookie.as_deref(), &body).await {
            Ok(record) => Json(serde_json::json!({ "erasure": record })).into_response(),
            Err(e) => privacy_error(&e),
        },
    )
}

/// Query of `GET /api/export`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `bundle` (default) or `ndjson`.
    #[serde(default)]
    format: Option<String>,
    /// With `ndjson`: the resource type.
    #[serde(default, rename = "type")]
    resource_type: Option<String>,
}

fn attachment(body: String, content_type: &'static str, file_name: &str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// `YYYYMMDD` (UTC) of `ms`, for file names.
fn day(ms: i64) -> String {
    crate::domain::audit::rfc3339_ms(ms)
        .chars()
        .take(10)
        .filter(char::is_ascii_digit)
        .collect()
}

/// `GET /api/export`.
pub async fn export(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return privacy_error(&PrivacyError::BadRequest("unknown parameter".into()));
    };
    let cookie = session_cookie(&headers);
    let cookie = cookie.as_deref();
    match (query.format.as_deref(), query.resource_type.as_deref()) {
        (None | Some("bundle"), None) => {
            match state
                .privacy
                .export(cookie, ExportFormat::Bundle, None)
                .await
            {
                Ok(export) => {
                    let base = format!("{}/fhir", state.auth.config().origin);
                    attachment(
                        export.bundle(&base).to_string(),
                        super::fhir::FHIR_JSON,
                        &format!(
                            "iphr-{}{}",
                            day(export.at_ms),
                            crate::domain::privacy::EXPORT_SUFFIX
                        ),
                    )
                }
                Err(e) => privacy_error(&e),
            }
        }
        (Some("ndjson"), None) => match state.privacy.export_types(cookie).await {
            Ok(types) => {
                let output: Vec<serde_json::Value> = types
                    .into_iter()
                    .map(|(ty, count)| {
                        serde_json::json!({
                            "type": ty,
                            "count": count,
                            "url": format!("/api/export?format=ndjson&type={ty}"),
                        })
                    })
                    .collect();
                Json(serde_json::json!({ "output": output })).into_response()
            }
            Err(e) => privacy_error(&e),
        },
        (Some("ndjson"), Some(ty))
            if !ty.is_empty() && ty.bytes().all(|b| b.is_ascii_alphabetic()) =>
        {
            match state
                .privacy
                .export(cookie, ExportFormat::Ndjson, Some(ty))
                .await
            {
                Ok(export) => attachment(
                    export.ndjson(ty),
                    "application/fhir+ndjson",
                    &format!("iphr-{}-{ty}.ndjson", day(export.at_ms)),
                ),
                Err(e) => privacy_error(&e),
            }
        }
        _ => privacy_error(&PrivacyError::BadRequest(
            "format must be bundle or ndjson (with a resource type)".into(),
        )),
    }
}
