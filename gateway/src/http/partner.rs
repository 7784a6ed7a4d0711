//! The partner listener's HTTP layer (DESIGN §6): served only over mutual TLS
//! ([`crate::tls::partner_from_der`]); the connection's client certificate reaches handlers as the
//! [`ClientCertificate`] request extension.
//!
//! - `GET  /healthz` → 200 `ok`
//! - `/fhir/…`: the FHIR API, see [`super::fhir`]; bulk `$export`, see [`super::export`]
//! - `POST /oauth/token` (`application/x-www-form-urlencoded`, RFC 6749 §4.4.2 with RFC 7523
//!   client assertion) → 200 `{"access_token","token_type":"Bearer","expires_in","scope"}` /
//!   400 `{"error":"invalid_request"|"unsupported_grant_type"|"invalid_scope"}` /
//!   401 `{"error":"invalid_client"}` / 500 `{"error":"server_error"}`; always `Cache-Control:
//!   no-store` (RFC 6749 §5.1).
//! - `POST /import?file=NAME` (the file's bytes; bearer token of a registered **source** service
//!   over its own certificate) → 201 `{"import_id","resources"}` / 200 `{"import_id",
//!   "already_imported":true}` / 422 `{"error":"refused","detail":"file:line: … item …"}` / 403
//!   for a partner / 401 / 503; all-or-nothing, the same bytes again are a no-op.

use crate::clock::SharedClock;
use crate::domain::access::PartnerAccess;
use crate::domain::import::MAX_IMPORT_BYTES;
use crate::domain::partner_auth::{PartnerAuth, TokenRequest, TokenRequestError};
use crate::domain::rate_limit::RateLimiter;
use crate::importer::{Importer, ImporterError};
use crate::store::records::ImportOutcome;
use axum::body::Bytes;
use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::extract::{Query, RawQuery};
use axum::http::HeaderMap;
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
    /// Imports delivered by source services (`POST /import`); none: the route answers 404.
    pub importer: Option<Importer>,
    /// Bulk export jobs of this process.
    pub exports: super::export::ExportJobs,
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
        .merge(super::export::routes())
        .merge(super::fhir::routes())
        .layer(DefaultBodyLimit::max(MAX_PARTNER_BODY_BYTES))
        .route(
            "/import",
            post(import).layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES)),
        )
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

#[derive(serde::Deserialize)]
struct ImportQuery {
    file: String,
}

/// `POST /import?file=NAME`: a source service delivers one file.
async fn import(
    State(state): State<PartnerState>,
    headers: HeaderMap,
    certificate: Option<Extension<ClientCertificate>>,
    RawQuery(raw): RawQuery,
    query: Result<Query<ImportQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Response {
    let client = match super::fhir::authorize(
        &state,
        &headers,
        certificate.as_ref(),
        raw.as_deref(),
    )
    .await
    {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(importer) = &state.importer else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let error = |status: StatusCode, code: &str, detail: String| {
        (
            status,
            Json(serde_json::json!({ "error": code, "detail": detail })),
        )
            .into_response()
    };
    let Ok(Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "file=NAME".into(),
        );
    };
    let name = q
        .file
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .to_owned();
    if name.is_empty() || name.len() > 255 || name.starts_with('.') {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "file".into());
    }
    match importer
        .import_from_source(&client, body.to_vec(), &name)
        .await
    {
        Ok(ImportOutcome::Imported { id, resources }) => (
            StatusCode::CREATED,
            Json(serde_json::json!({ "import_id": id, "resources": resources })),
        )
            .into_response(),
        Ok(ImportOutcome::AlreadyImported { id }) => (
            StatusCode::OK,
            Json(serde_json::json!({ "import_id": id, "already_imported": true })),
        )
            .into_response(),
        Err(ImporterError::Refused(e)) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, "refused", e.to_string())
        }
        Err(ImporterError::NotASource(who)) => error(StatusCode::FORBIDDEN, "not_a_source", who),
        Err(e) => {
            tracing::error!(error = %e, "import failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                String::new(),
            )
        }
    }
}
