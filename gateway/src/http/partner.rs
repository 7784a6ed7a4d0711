//! The partner listener's HTTP layer (DESIGN §6): served only over mutual TLS
//! ([`crate::tls::partner_from_der`]); the connection's client certificate reaches handlers as the
//! [`ClientCertificate`] request extension.
//!
//! - `GET  /healthz` → 200 `ok`
//! - `/fhir/…`: the FHIR API, see [`super::fhir`]
//! - `POST /oauth/token` (`application/x-www-form-urlencoded`, RFC 6749 §4.4.2 with RFC 7523
//!   client assertion) → 200 `{"access_token","token_type":"Bearer","expires_in","scope"}` /
//!   400 `{"error":"invalid_request"|"unsupported_grant_type"|"invalid_scope"}` /
//!   401 `{"error":"invalid_client"}` / 500 `{"error":"server_error"}`; always `Cache-Control:
//!   no-store` (RFC 6749 §5.1).

use crate::clock::SharedClock;
use crate::domain::access::PartnerAccess;
use crate::domain::partner_auth::{PartnerAuth, TokenRequest, TokenRequestError};
use crate::domain::rate_limit::RateLimiter;
use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use std::collections::HashMap;
use std::sync::Arc;

/// Largest partner request body.
pub const MAX_PARTNER_BODY_BYTES: usize = 16 * 1024;

/// The client certificate (DER) of the TLS connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub Arc<[u8]>);

/// State of the partner handlers.
#[derive(Clone)]
pub struct PartnerState {
    /// Token service and token checks.
    pub auth: Arc<PartnerAuth>,
    /// Consent-checked reads.
    pub access: Arc<PartnerAccess>,
    /// Per-partner request rates.
    pub limiter: Arc<RateLimiter>,
    /// Requests per second per partner (by client id); others get `default_rate`.
    pub rates: Arc<std::sync::RwLock<HashMap<String, u32>>>,
    /// Rate of partners not in `rates`.
    pub default_rate: u32,
    /// Absolute base URL of the FHIR API (`https://host:port/fhir`), for `fullUrl` and links.
    pub fhir_base: String,
    /// Clock.
    pub clock: SharedClock,
}

impl PartnerState {
    /// The allowed request rate of a partner.
    pub fn rate_for(&self, client_id: &str) -> u32 {
        self.rates
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(client_id)
            .copied()
            .unwrap_or(self.default_rate)
    }

    /// Now, in ms.
    pub fn access_now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// The partner router.
pub fn partner_router(state: PartnerState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/oauth/token", post(token))
        .merge(super::fhir::routes())
        .layer(DefaultBodyLimit::max(MAX_PARTNER_BODY_BYTES))
        .layer(axum::middleware::map_response(no_store))
        .with_state(state)
}

async fn no_store(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `POST /oauth/token`.
async fn token(
    State(state): State<PartnerState>,
    certificate: Option<Extension<ClientCertificate>>,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Response {
    let Ok(Form(request)) = form else {
        return oauth_error(&TokenRequestError::InvalidRequest("body"));
    };
    let certificate = certificate.as_ref().map(|Extension(c)| c.0.as_ref());
    match state.auth.issue_token(&request, certificate).await {
        Ok(issued) => (StatusCode::OK, Json(issued)).into_response(),
        Err(e) => {
            tracing::info!(error = %e, "token request refused");
            oauth_error(&e)
        }
    }
}

fn oauth_error(e: &TokenRequestError) -> Response {
    let status = match e {
        TokenRequestError::InvalidClient(_) | TokenRequestError::Replayed => {
            StatusCode::UNAUTHORIZED
        }
        TokenRequestError::Store(_) | TokenRequestError::Random => {
            tracing::error!(error = %e, "token endpoint failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_REQUEST,
    };
    (status, Json(serde_json::json!({ "error": e.code() }))).into_response()
}
