//! Handlers of the kiosk's source API (`docs/source-protocol.md` §7, issue 7): link the card at a
//! source, get what the card signs for a grant, hand in the signed grant (a pull starts), watch
//! the pull. Same rules as the consent API: our `Origin` on every POST, JSON bodies, the session
//! cookie; errors carry a Japanese `message` for the kiosk.

use super::auth::{require_json, require_origin};
use super::{ApiError, AppState, session_cookie};
use crate::sources::{KioskUser, SourcesError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use iphr_source::protocol::Credential;
use serde::Deserialize;

fn sources_error(e: &SourcesError) -> Response {
    let status = match e {
        SourcesError::UnknownSource | SourcesError::UnknownPull => StatusCode::NOT_FOUND,
        SourcesError::NoConsent(_) | SourcesError::NotYourCard => StatusCode::FORBIDDEN,
        SourcesError::NotLinked
        | SourcesError::NoGrant
        | SourcesError::PseudonymTaken
        | SourcesError::Busy => StatusCode::CONFLICT,
        SourcesError::Card(_)
        | SourcesError::WrongService
        | SourcesError::NonceReplayed
        | SourcesError::ScopeBeyondConsent
        | SourcesError::Unsupported => StatusCode::UNPROCESSABLE_ENTITY,
        SourcesError::Source(crate::sources::client::SourceError::Refused { .. }) => {
            StatusCode::CONFLICT
        }
        SourcesError::Source(_) | SourcesError::SourceMismatch => StatusCode::BAD_GATEWAY,
        SourcesError::Audit(_) | SourcesError::Store(_) => {
            tracing::error!(error = %e, "source operation failed");
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    (
        status,
        Json(serde_json::json!({ "error": e.code(), "message": e.message_ja() })),
    )
        .into_response()
}

fn not_available() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({
            "error": "sources_not_configured",
            "message": "このゲートウェイでは提供元からの取得は設定されていません。",
        })),
    )
        .into_response()
}

/// The signed-in person and card, or the response to send.
async fn kiosk_user(state: &AppState, headers: &HeaderMap) -> Result<KioskUser, Response> {
    let cookie = session_cookie(headers);
    let session = state
        .auth
        .live_session(cookie.as_deref())
        .await
        .map_err(|e| ApiError::from_session_failure(&e).into_response())?
        .ok_or_else(|| ApiError::NotSignedIn.into_response())?;
    match (session.row.person_id, session.row.card_fingerprint) {
        (Some(person_id), Some(card_fingerprint)) => Ok(KioskUser {
            person_id,
            session_hash: session.id_hash,
            card_fingerprint,
        }),
        _ => Err(ApiError::NotSignedIn.into_response()),
    }
}

macro_rules! hub_or_404 {
    ($state:expr) => {
        match &$state.sources {
            Some(hub) => hub.clone(),
            None => return Ok(not_available()),
        }
    };
}

macro_rules! user_or_reply {
    ($state:expr, $headers:expr) => {
        match kiosk_user(&$state, &$headers).await {
            Ok(u) => u,
            Err(r) => return Ok(r),
        }
    };
}

/// `GET /api/sources`.
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let hub = hub_or_404!(state);
    let user = user_or_reply!(state, headers);
    Ok(match hub.overview(&user.person_id).await {
        Ok(v) => Json(serde_json::json!({ "sources": v })).into_response(),
        Err(e) => sources_error(&e),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkBody {
    enrollment_code: String,
    /// Holder certificate (slot 9A), hex DER as `card-agent phr … --json` prints it.
    holder_cert_der: String,
    /// Service-binding certificate of the source's slot, hex DER.
    binding_cert_der: String,
}

/// `POST /api/sources/{id}/link`.
pub async fn link(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_origin(&state, &headers)?;
    require_json(&headers)?;
    let hub = hub_or_404!(state);
    let user = user_or_reply!(state, headers);
    let body: LinkBody = serde_json::from_slice(&body).map_err(|_| ApiError::NotJson)?;
    let (Ok(holder), Ok(binding)) = (
        hex::decode(&body.holder_cert_der),
        hex::decode(&body.binding_cert_der),
    ) else {
        return Err(ApiError::NotJson);
    };
    if !(8..=64).contains(&body.enrollment_code.len()) {
        return Err(ApiError::NotJson);
    }
    Ok(
        match hub
            .link(
                &user,
                &id,
                &body.enrollment_code,
                Credential::Phr {
                    holder_certificate: holder,
                    binding_certificate: binding,
                },
            )
            .await
        {
            Ok(v) => (
                StatusCode::CREATED,
                Json(serde_json::json!({ "source": v })),
            )
                .into_response(),
            Err(e) => sources_error(&e),
        },
    )
}

/// `POST /api/sources/{id}/grant-request`.
pub async fn grant_request(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_origin(&state, &headers)?;
    let hub = hub_or_404!(state);
    let user = user_or_reply!(state, headers);
    Ok(match hub.grant_request(&user, &id).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => sources_error(&e),
    })
}

#[derive(Deserialize)]
struct GrantBody {
    /// The grant's TLV, hex (`card-agent phr sign-grant --json` field `grant_bytes`).
    grant_bytes: String,
    /// DER ECDSA signature, hex (field `signature`).
    signature: String,
}

/// `POST /api/sources/{id}/grant` → 202 `{"pull": id}`.
pub async fn grant(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_origin(&state, &headers)?;
    require_json(&headers)?;
    let hub = hub_or_404!(state);
    let user = user_or_reply!(state, headers);
    let body: GrantBody = serde_json::from_slice(&body).map_err(|_| ApiError::NotJson)?;
    let (Ok(grant), Ok(signature)) = (hex::decode(&body.grant_bytes), hex::decode(&body.signature))
    else {
        return Err(ApiError::NotJson);
    };
    Ok(
        match hub.submit_grant(&user, &id, &grant, &signature).await {
            Ok(pull) => (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({ "pull": pull })),
            )
                .into_response(),
            Err(e) => sources_error(&e),
        },
    )
}

/// `POST /api/sources/{id}/pull` → 202 `{"pull": id}`: pulls now with the stored grant (the pull
/// itself refuses without a live grant or consent, visible in its progress).
pub async fn pull_now(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_origin(&state, &headers)?;
    let hub = hub_or_404!(state);
    let user = user_or_reply!(state, headers);
    Ok(match hub.pull_now(&user.person_id, &id) {
        Ok(pull) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "pull": pull })),
        )
            .into_response(),
        Err(e) => sources_error(&e),
    })
}

/// `GET /api/sources/pulls/{id}`.
pub async fn pull(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let hub = hub_or_404!(state);
    let user = user_or_reply!(state, headers);
    Ok(match hub.progress(&user.person_id, &id) {
        Ok(p) => Json(p).into_response(),
        Err(e) => sources_error(&e),
    })
}
