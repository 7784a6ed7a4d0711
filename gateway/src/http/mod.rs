//! HTTP layer: routes, extraction (cookie, Origin, JSON), and mapping domain errors to statuses.
//! No authentication rule is decided here; handlers call [`crate::domain::auth::Authenticator`].
//!
//! API (all JSON; POSTs must carry `Origin` equal to the configured origin):
//! - `GET  /healthz` → 200 `ok` (database reachable) / 503
//! - `POST /api/auth/nonce` `{"purpose":"login"|"link"}` (body optional, default login) →
//!   200 `{"nonce","origin","expires_at_ms","ttl_secs"}`, sets the session cookie when new
//! - `POST /api/auth/token` (the token object) → 200 `{"person_id","new_person","card_type",
//!   "certificate":{…}}` with a new session cookie / 401 `{"error":"authentication_failed"}`
//! - `POST /api/auth/link` (a token signed over a `link` nonce by the new card) → 200 as above /
//!   401 / 409 `{"error":"already_bound"}`
//! - `GET  /api/session` → 200 `{"person_id","card_type","certificate",…}` / 401 `not_signed_in`
//! - `POST /api/auth/signout` → 204, cookie cleared
//! - `GET  /api/consent` → 200 `{"partners":[{"service_id","name","purpose","categories":[…],
//!   "period_days","current","in_force"}]}` / 401
//! - `POST /api/consent/prepare` `{"service_id","action":"grant"|"revoke","categories":[…]}` →
//!   200 `{"nonce","origin","document","expires_at_ms","known_categories"}`: the card signs this
//!   nonce (a PHR card first writes the document's consent record, `docs/kiosk.md`)
//! - `POST /api/consent/commit` (the card token; with a PHR card also `"card_record"`, hex or
//!   base64 of the card's record, beside the token's fields) → 200 `{"consent":{…}}` / 401
//!   `signature_refused` | `card_record_signature_refused` / 409 `no_pending_document` |
//!   `consent_changed` | `card_record_replayed` / 400 `card_record_required` |
//!   `card_record_unexpected` | `card_record_malformed` / 422 `card_record_service` |
//!   `card_record_status` | `card_record_categories` | `card_record_period` |
//!   `card_record_purpose` | `card_record_stale`
//! - `GET  /api/history` → 200 `{"accesses":[{"at_ms","partner","partner_name","action",
//!   "outcome","served"}]}`: partner reads of the signed-in worker's data, newest first / 401
//! - `GET  /api/sources` → 200 `{"sources":[{"id","name","linked","consent_in_force",
//!   "grant_expires_at_ms","last_pull_ms","last_outcome","last_error","files_stored","breaker":{"state",…}}]}`
//! - `POST /api/sources/{id}/link` `{"enrollment_code","holder_cert_der","binding_cert_der"}`
//!   (hex DER) → 201 `{"source":{…}}`: the card linked at the source (§3)
//! - `POST /api/sources/{id}/grant-request` → 200 `{"service","pseudonym","audience","nonce",
//!   "nonce_hex","scope":["A:checkup",…],"expires_at","ttl_secs","nonce_expires_at_ms"}`: what the
//!   card signs (`card-agent phr sign-grant`)
//! - `POST /api/sources/{id}/grant` `{"grant_bytes","signature"}` (hex) → 202 `{"pull"}`: the grant
//!   verified and stored, a pull started
//! - `POST /api/sources/{id}/pull` → 202 `{"pull"}`: a pull now with the stored grant (the kiosk
//!   page's 「今すぐ取り込む」)
//! - `GET  /api/sources/pulls/{id}` → 200 `{"state","listed","fetched","stored","duplicates",
//!   "refused","failed","error","message",…}`
//!   Source errors: `{"error": code, "message": 日本語}` (see [`crate::sources::message_ja`])
//! - `POST /api/erasure/prepare`, `POST /api/erasure/commit`, `GET /api/export[?format=ndjson
//!   [&type=T]]`: the worker's erasure (card-signed) and export of their record, see [`privacy`]
//!   and `docs/privacy.md`
//! - `GET  /kiosk` → the kiosk sign-in page (plus `/kiosk/kiosk.js`, `/kiosk/kiosk.css`), see
//!   [`kiosk`] and `docs/kiosk.md`

mod auth;
mod consent;
mod error;
pub mod export;
pub mod fhir;
pub mod kiosk;
pub mod partner;
pub mod privacy;
mod sources;

pub use error::ApiError;

use crate::domain::auth::Authenticator;
use crate::domain::consent_desk::ConsentDesk;
use crate::domain::privacy::PrivacyDesk;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::routing::{get, post};
use std::sync::Arc;

/// Name of the session cookie (`__Host-`: Secure, Path=/, no Domain).
pub const SESSION_COOKIE: &str = "__Host-iphr-session";
/// Largest request body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// Sign-in service.
    pub auth: Arc<Authenticator>,
    /// The rendered kiosk page.
    pub kiosk: Arc<kiosk::KioskPage>,
    /// Consent at the kiosk.
    pub consent: Arc<ConsentDesk>,
    /// The worker's export and erasure of their record.
    pub privacy: Arc<PrivacyDesk>,
    /// Connectors to sources (`[sources]`), if configured.
    pub sources: Option<Arc<crate::sources::SourceHub>>,
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(auth::healthz))
        .route("/api/auth/nonce", post(auth::issue_nonce))
        .route("/api/auth/token", post(auth::submit_token))
        .route("/api/auth/link", post(auth::link_card))
        .route("/api/auth/signout", post(auth::sign_out))
        .route("/api/session", get(auth::whoami))
        .route("/api/consent", get(consent::list))
        .route("/api/consent/prepare", post(consent::prepare))
        .route("/api/consent/commit", post(consent::commit))
        .route("/api/history", get(consent::history))
        .route("/api/erasure/prepare", post(privacy::prepare))
        .route("/api/erasure/commit", post(privacy::commit))
        .route("/api/export", get(privacy::export))
        .route("/api/sources", get(sources::list))
        .route("/api/sources/{id}/link", post(sources::link))
        .route(
            "/api/sources/{id}/grant-request",
            post(sources::grant_request),
        )
        .route("/api/sources/{id}/grant", post(sources::grant))
        .route("/api/sources/{id}/pull", post(sources::pull_now))
        .route("/api/sources/pulls/{id}", get(sources::pull))
        .merge(kiosk::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    response
}

/// The value of the session cookie, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// `Set-Cookie` for a session id.
pub fn set_session_cookie(id: &str) -> String {
    format!("{SESSION_COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_session_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}
