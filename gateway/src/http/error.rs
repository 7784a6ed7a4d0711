//! Domain errors → HTTP statuses. Every refused token gets the same status and body, whatever
//! the reason (security-scenarios D7); the reason goes to the attempt log only.

use crate::domain::auth::AuthError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error response.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A POST without our `Origin` (cross-site request, login CSRF).
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// A body that is not `application/json` or not the expected JSON.
    #[error("unsupported media type")]
    NotJson,
    /// Any refused authentication: 401 `authentication_failed`.
    #[error("authentication failed")]
    AuthenticationFailed,
    /// No signed-in session: 401 `not_signed_in`.
    #[error("not signed in")]
    NotSignedIn,
    /// Linking needs a fresh sign-in with the old card: 401 `reauthentication_required`.
    #[error("reauthentication required")]
    ReauthenticationRequired,
    /// Linking a certificate that is already bound: 409 `already_bound`.
    #[error("already bound")]
    AlreadyBound,
    /// The server failed (database, random generator): 500.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// Maps a failed token submission (sign-in or link).
    pub fn from_token_failure(e: &AuthError) -> ApiError {
        match e {
            _ if e.is_internal() => {
                tracing::error!(error = %e, "internal error during authentication");
                ApiError::Internal
            }
            AuthError::NotSignedIn => ApiError::NotSignedIn,
            AuthError::SignInTooOld => ApiError::ReauthenticationRequired,
            AuthError::AlreadyBound => ApiError::AlreadyBound,
            _ => ApiError::AuthenticationFailed,
        }
    }

    /// Maps a failure of a session query.
    pub fn from_session_failure(e: &AuthError) -> ApiError {
        if e.is_internal() {
            tracing::error!(error = %e, "internal error reading a session");
            ApiError::Internal
        } else {
            ApiError::NotSignedIn
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::OriginNotAllowed => (StatusCode::FORBIDDEN, "origin_not_allowed"),
            ApiError::NotJson => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "json_required"),
            ApiError::AuthenticationFailed => (StatusCode::UNAUTHORIZED, "authentication_failed"),
            ApiError::NotSignedIn => (StatusCode::UNAUTHORIZED, "not_signed_in"),
            ApiError::ReauthenticationRequired => {
                (StatusCode::UNAUTHORIZED, "reauthentication_required")
            }
            ApiError::AlreadyBound => (StatusCode::CONFLICT, "already_bound"),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        (status, Json(serde_json::json!({ "error": code }))).into_response()
    }
}
