//! Handlers of the sign-in API (see [`super`] for the paths and bodies).

use super::{ApiError, AppState, clear_session_cookie, session_cookie, set_session_cookie};
use crate::domain::auth::{AuthError, SignedIn};
use crate::domain::nonce::NoncePurpose;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// `GET /healthz`.
pub async fn healthz(State(state): State<AppState>) -> Response {
    match state.auth.db().ping().await {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}

pub(super) fn require_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let expected = state.auth.config().origin.as_str();
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) if origin == expected => Ok(()),
        _ => Err(ApiError::OriginNotAllowed),
    }
}

pub(super) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if ok { Ok(()) } else { Err(ApiError::NotJson) }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NonceRequest {
    #[serde(default)]
    purpose: Option<String>,
}

/// `POST /api/auth/nonce`.
pub async fn issue_nonce(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_origin(&state, &headers)?;
    let purpose = if body.is_empty() {
        NoncePurpose::Login
    } else {
        require_json(&headers)?;
        let request: NonceRequest = serde_json::from_slice(&body).map_err(|_| ApiError::NotJson)?;
        match request.purpose.as_deref() {
            None | Some("login") => NoncePurpose::Login,
            Some("link") => NoncePurpose::Link,
            Some(_) => return Err(ApiError::NotJson),
        }
    };
    let cookie = session_cookie(&headers);
    let issued = state
        .auth
        .issue_nonce(cookie.as_deref(), purpose)
        .await
        .map_err(|e| match e {
            AuthError::NotSignedIn => ApiError::NotSignedIn,
            other => ApiError::from_session_failure(&other),
        })?;
    let config = state.auth.config();
    let body = Json(serde_json::json!({
        "nonce": issued.nonce,
        "origin": config.origin,
        "expires_at_ms": issued.expires_at_ms,
        "ttl_secs": config.nonce_ttl_ms / 1000,
    }));
    let mut response = body.into_response();
    if issued.session_is_new {
        insert_cookie(&mut response, &set_session_cookie(issued.session.as_str()));
    }
    Ok(response)
}

fn signed_in_body(s: &SignedIn) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "person_id": s.person_id,
        "new_person": s.new_person,
        "card_type": s.card_type,
        "certificate": s.certificate,
    }))
}

fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `POST /api/auth/token`.
pub async fn submit_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_origin(&state, &headers)?;
    require_json(&headers)?;
    let cookie = session_cookie(&headers);
    let signed_in = state
        .auth
        .sign_in(cookie.as_deref(), &body, user_agent(&headers).as_deref())
        .await
        .map_err(|e| ApiError::from_token_failure(&e))?;
    let mut response = signed_in_body(&signed_in).into_response();
    insert_cookie(
        &mut response,
        &set_session_cookie(signed_in.session.as_str()),
    );
    Ok(response)
}

/// `POST /api/auth/link`.
pub async fn link_card(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_origin(&state, &headers)?;
    require_json(&headers)?;
    let cookie = session_cookie(&headers);
    let linked = state
        .auth
        .link(cookie.as_deref(), &body, user_agent(&headers).as_deref())
        .await
        .map_err(|e| ApiError::from_token_failure(&e))?;
    Ok(signed_in_body(&linked).into_response())
}

/// `GET /api/session`.
pub async fn whoami(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cookie = session_cookie(&headers);
    let who = state
        .auth
        .whoami(cookie.as_deref())
        .await
        .map_err(|e| ApiError::from_session_failure(&e))?;
    Ok(Json(who).into_response())
}

/// `POST /api/auth/signout`.
pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_origin(&state, &headers)?;
    let cookie = session_cookie(&headers);
    state
        .auth
        .sign_out(cookie.as_deref())
        .await
        .map_err(|e| ApiError::from_session_failure(&e))?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    insert_cookie(&mut response, &clear_session_cookie());
    Ok(response)
}

fn insert_cookie(response: &mut Response, value: &str) {
    if let Ok(v) = header::HeaderValue::from_str(value) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}
