//! The agent's localhost API for the kiosk page (DESIGN §4 step 2, after web-eid).
//!
//! The page (served by the gateway at an allow-listed origin) POSTs `{"nonce": …}` to
//! `http://127.0.0.1:<port>/v1/authenticate`; the agent asks for the PIN in its own UI (never the
//! page), signs `SHA-256(origin) ‖ SHA-256(nonce)` with the origin taken from the request's
//! `Origin` header (never the body), and answers with the token the gateway verifies.
//!
//! `POST /v1/consent` `{"nonce", "document", "known_categories", "service_kind"}` carries a consent change the
//! gateway prepared (`docs/kiosk.md`, "Consent on the PHR card"): the agent shows it in its own
//! prompt, and with a PHR card writes the consent record to the card and signs the nonce under
//! one PIN entry; the answer is the token plus `card_record` (hex), which the page passes to the
//! gateway's commit as-is. A My Number card only signs. A partner not yet on the PHR card is
//! linked under a random pseudonym; a source is linked under its enrollment's pseudonym, given as
//! `"pseudonym"` (sources only) or already on the card: otherwise 422 `source_not_linked`, and a
//! card linked there under another pseudonym 422 `linked_as_another`, before the PIN.
//!
//! Sources (PHR card only, else 422 `phr_card_required`): `POST /v1/link` `{"service_id",
//! "pseudonym"}` makes the source's key on the card for the pseudonym of the person's enrollment
//! letter and answers `{"holder_cert_der", "binding_cert_der"}` (hex), which the page hands to the
//! gateway's `/api/sources/{id}/link` with the enrollment code; a link already on the card answers
//! without a PIN, one under another pseudonym is refused (422 `linked_as_another`). `POST
//! /v1/grant` `{"request": …}` carries the gateway's `grant-request` answer as-is; the agent shows
//! the source, the categories and the end date in its prompt, signs the grant with the source's key
//! and answers `{"grant_bytes", "signature"}` (hex) for the gateway's `/api/sources/{id}/grant`. A
//! source not on the card (422 `source_not_linked`), a grant already ended (400 `grant_expired`),
//! or a request that does not parse (400 `bad_request`) is refused before the PIN.
//!
//! Refused before any card I/O (security-scenarios A9–A13): a `Host` other than the loopback name
//! and port (DNS rebinding), a missing, doubled or not exactly allow-listed `Origin` (no CORS
//! headers echoed), methods other than POST (OPTIONS preflight only for allowed origins), bodies
//! that are not `application/json`, over 8 KiB, with unknown fields (an `origin` in the body), or
//! with a nonce outside 44–128 base64 characters; for a consent, a nonce that is not
//! base64(SHA-256(document)) (the card would write one document and sign another), a document
//! that does not parse or names another origin than the page's.

use crate::agent::{
    self, AgentError, CardInfo, ConsentRefusal, ConsentSigned, ConsentToSign, GrantToSign,
    LinkToSign, Linked, PinPrompt,
};
use crate::jpki::JpkiError;
use crate::phr::card::{PhrError, SignedGrant};
use crate::phr::kiosk::KioskConsentError;
use crate::piv::PivError;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// Largest request body.
pub const MAX_BODY: usize = 8 * 1024;
/// Nonce length bounds (base64 of 32 bytes is 44 characters).
pub const NONCE_LEN: std::ops::RangeInclusive<usize> = 44..=128;
/// Longest allowed origin.
pub const MAX_ORIGIN_LEN: usize = 255;
/// Token format the gateway expects.
pub const TOKEN_FORMAT: &str = "iphr-auth:1";

/// Does the card work for a request; runs blocking card I/O (called on a blocking thread).
pub trait CardService: Send + Sync + 'static {
    /// What is in the reader (no PIN).
    fn status(&self) -> Result<CardInfo, AgentError>;
    /// Asks for the PIN through `prompt` and signs `signed_data`.
    fn authenticate(
        &self,
        prompt: &dyn PinPrompt,
        origin: &str,
        signed_data: &[u8],
    ) -> Result<agent::SignedChallenge, AgentError>;
    /// Asks for the PIN through `prompt` (showing the change), writes the consent to a PHR card
    /// and signs `signed_data` (a My Number card only signs).
    fn consent(
        &self,
        prompt: &dyn PinPrompt,
        origin: &str,
        signed_data: &[u8],
        request: &ConsentToSign,
    ) -> Result<ConsentSigned, AgentError>;
    /// Makes the source's key on a PHR card, asking the PIN through `prompt` (a link already on
    /// the card for the same pseudonym needs none).
    fn link(
        &self,
        prompt: &dyn PinPrompt,
        origin: &str,
        request: &LinkToSign,
    ) -> Result<Linked, AgentError>;
    /// Asks the PIN through `prompt` (showing the grant) and signs the grant with the source's
    /// key on a PHR card.
    fn grant(
        &self,
        prompt: &dyn PinPrompt,
        origin: &str,
        request: &GrantToSign,
    ) -> Result<SignedGrant, AgentError>;
}

/// Why the API configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An allowed origin is not `https://host[:port]` (no path, query or fragment, ≤ 255 chars).
    #[error("allowed origin {0:?} must be https://host[:port] with nothing after it")]
    BadOrigin(String),
    /// The agent would listen on a non-loopback address.
    #[error("the agent listens on loopback only, not {0}")]
    NotLoopback(SocketAddr),
}

/// Checks an allow-list entry.
pub fn validate_origin(origin: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::BadOrigin(origin.to_owned());
    let rest = origin.strip_prefix("https://").ok_or_else(bad)?;
    let ok = origin.len() <= MAX_ORIGIN_LEN
        && !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        && rest == rest.to_ascii_lowercase();
    if ok { Ok(()) } else { Err(bad()) }
}

struct Shared {
    origins: Vec<String>,
    port: u16,
    card: Arc<dyn CardService>,
    prompt: Arc<dyn PinPrompt>,
    busy: tokio::sync::Mutex<()>,
}

/// Builds the router for an agent listening on `port`.
pub fn router(
    origins: Vec<String>,
    port: u16,
    card: Arc<dyn CardService>,
    prompt: Arc<dyn PinPrompt>,
) -> Result<Router, ConfigError> {
    for origin in &origins {
        validate_origin(origin)?;
    }
    let shared = Arc::new(Shared {
        origins,
        port,
        card,
        prompt,
        busy: tokio::sync::Mutex::new(()),
    });
    Ok(Router::new()
        .route("/v1/status", post(status).options(preflight))
        .route("/v1/authenticate", post(authenticate).options(preflight))
        .route("/v1/consent", post(consent).options(preflight))
        .route("/v1/link", post(link).options(preflight))
        .route("/v1/grant", post(grant).options(preflight))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            guard,
        ))
        .with_state(shared))
}

/// Serves the API on `listener` (which must be loopback) until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    origins: Vec<String>,
    card: Arc<dyn CardService>,
    prompt: Arc<dyn PinPrompt>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::other(ConfigError::NotLoopback(addr)));
    }
    let app = router(origins, addr.port(), card, prompt).map_err(std::io::Error::other)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

fn error(status: StatusCode, code: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": code }))).into_response()
}

/// Host, Origin and method checks that every request passes before any handler (or card) runs.
async fn guard(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    let hosts: Vec<&HeaderValue> = headers.get_all(header::HOST).iter().collect();
    let host_ok = match hosts.as_slice() {
        [host] => {
            let port = shared.port;
            let allowed = [
                format!("127.0.0.1:{port}"),
                format!("localhost:{port}"),
                format!("[::1]:{port}"),
            ];
            host.to_str().is_ok_and(|h| allowed.iter().any(|a| a == h))
        }
        _ => false,
    };
    if !host_ok {
        return error(StatusCode::FORBIDDEN, "host_not_allowed");
    }
    let origins: Vec<&HeaderValue> = headers.get_all(header::ORIGIN).iter().collect();
    let origin = match origins.as_slice() {
        [origin] => origin
            .to_str()
            .ok()
            .filter(|o| shared.origins.iter().any(|a| a == o)),
        _ => None,
    };
    let Some(origin) = origin.map(str::to_owned) else {
        return error(StatusCode::FORBIDDEN, "origin_not_allowed");
    };
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn preflight(headers: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    // Chrome's private/local network access preflight: answered only for allowed origins
    // (the guard has already refused the others).
    if headers
        .get("access-control-request-private-network")
        .is_some_and(|v| v == "true")
    {
        h.insert(
            "access-control-allow-private-network",
            HeaderValue::from_static("true"),
        );
    }
    response
}

async fn not_found(method: Method) -> Response {
    if method == Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
    error(StatusCode::NOT_FOUND, "not_found")
}

/// The refusal for a body that is not small JSON, if it is not.
fn refuse_unless_json(headers: &HeaderMap, body: &Bytes) -> Option<Response> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Some(error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "json_required"));
    }
    if body.len() > MAX_BODY {
        return Some(error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));
    }
    None
}

async fn status(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = refuse_unless_json(&headers, &body) {
        return refused;
    }
    let card = Arc::clone(&shared.card);
    match on_card(&shared, move || card.status()).await {
        Ok(info) => axum::Json(info).into_response(),
        Err(refused) => refused,
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthenticateRequest {
    nonce: String,
}

/// The token, as the gateway parses it.
#[derive(serde::Serialize)]
struct Token {
    format: &'static str,
    #[serde(flatten)]
    signed: agent::SignedChallenge,
    app_version: &'static str,
    /// The consent record written to a PHR card, hex (consent only).
    #[serde(skip_serializing_if = "Option::is_none")]
    card_record: Option<String>,
}

/// The nonce's shape: 44–128 characters of base64 (standard or URL-safe).
fn nonce_ok(nonce: &str) -> bool {
    NONCE_LEN.contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
}

/// `SHA-256(origin) ‖ SHA-256(nonce)`: what the card signs (DESIGN §4).
pub fn signed_data(origin: &str, nonce: &str) -> Vec<u8> {
    let mut signed_data = Vec::with_capacity(64);
    signed_data.extend_from_slice(&Sha256::digest(origin.as_bytes()));
    signed_data.extend_from_slice(&Sha256::digest(nonce.as_bytes()));
    signed_data
}

/// The Origin the guard admitted (exactly one, allow-listed): that, never a body field, is signed.
fn admitted_origin(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Runs a card operation on a blocking thread, one at a time (409 `busy` otherwise).
async fn on_card<R: Send + 'static>(
    shared: &Shared,
    op: impl FnOnce() -> Result<R, AgentError> + Send + 'static,
) -> Result<R, Response> {
    let Ok(_busy) = shared.busy.try_lock() else {
        return Err(error(StatusCode::CONFLICT, "busy"));
    };
    match tokio::task::spawn_blocking(op).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Err(agent_error(&e)),
        Err(_) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, "internal")),
    }
}

fn token(signed: agent::SignedChallenge, card_record: Option<&[u8]>) -> Response {
    let app_version = concat!("card-agent/", env!("CARGO_PKG_VERSION"));
    axum::Json(token_json(signed, app_version, card_record)).into_response()
}

/// The token as the agent answers it and the gateway parses it, from `app_version`; with a
/// consent, the record written to a PHR card.
pub fn token_json(
    signed: agent::SignedChallenge,
    app_version: &'static str,
    card_record: Option<&[u8]>,
) -> serde_json::Value {
    let token = Token {
        format: TOKEN_FORMAT,
        signed,
        app_version,
        card_record: card_record.map(hex::encode),
    };
    // Invariant: every field of the token is a string (base64, hex), which always serialises.
    #[allow(clippy::expect_used)]
    serde_json::to_value(token).expect("the token serialises")
}

async fn authenticate(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = refuse_unless_json(&headers, &body) {
        return refused;
    }
    let Ok(request) = serde_json::from_slice::<AuthenticateRequest>(&body) else {
        return error(StatusCode::BAD_REQUEST, "bad_request");
    };
    if !nonce_ok(&request.nonce) {
        return error(StatusCode::BAD_REQUEST, "bad_nonce");
    }
    let Some(origin) = admitted_origin(&headers) else {
        return error(StatusCode::FORBIDDEN, "origin_not_allowed");
    };
    let signed_data = signed_data(&origin, &request.nonce);
    let (card, prompt) = (Arc::clone(&shared.card), Arc::clone(&shared.prompt));
    match on_card(&shared, move || {
        card.authenticate(prompt.as_ref(), &origin, &signed_data)
    })
    .await
    {
        Ok(signed) => token(signed, None),
        Err(refused) => refused,
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentBody {
    nonce: String,
    document: String,
    known_categories: Vec<String>,
    #[serde(default)]
    service_kind: agent::ServiceKind,
    /// A source only: the pseudonym of the person's enrollment there.
    #[serde(default)]
    pseudonym: Option<String>,
}

async fn consent(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = refuse_unless_json(&headers, &body) {
        return refused;
    }
    let Ok(request) = serde_json::from_slice::<ConsentBody>(&body) else {
        return error(StatusCode::BAD_REQUEST, "bad_request");
    };
    if !nonce_ok(&request.nonce) {
        return error(StatusCode::BAD_REQUEST, "bad_nonce");
    }
    let Some(origin) = admitted_origin(&headers) else {
        return error(StatusCode::FORBIDDEN, "origin_not_allowed");
    };
    let to_sign = match ConsentToSign::from_request(
        &origin,
        &request.nonce,
        &request.document,
        request.known_categories,
        request.service_kind,
        request.pseudonym,
    ) {
        Ok(to_sign) => to_sign,
        Err(refused) => {
            let code = match refused {
                ConsentRefusal::DocumentMismatch => "document_mismatch",
                ConsentRefusal::BadDocument => "bad_document",
                ConsentRefusal::DocumentOrigin => "document_origin",
            };
            return error(StatusCode::BAD_REQUEST, code);
        }
    };
    let signed_data = signed_data(&origin, &request.nonce);
    let (card, prompt) = (Arc::clone(&shared.card), Arc::clone(&shared.prompt));
    match on_card(&shared, move || {
        card.consent(prompt.as_ref(), &origin, &signed_data, &to_sign)
    })
    .await
    {
        Ok(done) => token(done.signed, done.card_record.as_deref()),
        Err(refused) => refused,
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkBody {
    service_id: String,
    pseudonym: String,
}

async fn link(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = refuse_unless_json(&headers, &body) {
        return refused;
    }
    let Ok(request) = serde_json::from_slice::<LinkBody>(&body) else {
        return error(StatusCode::BAD_REQUEST, "bad_request");
    };
    let Some(origin) = admitted_origin(&headers) else {
        return error(StatusCode::FORBIDDEN, "origin_not_allowed");
    };
    let to_link = LinkToSign {
        service: request.service_id,
        pseudonym: request.pseudonym,
    };
    let (card, prompt) = (Arc::clone(&shared.card), Arc::clone(&shared.prompt));
    match on_card(&shared, move || {
        card.link(prompt.as_ref(), &origin, &to_link)
    })
    .await
    {
        Ok(linked) => axum::Json(serde_json::json!({
            "holder_cert_der": hex::encode(linked.holder_cert_der),
            "binding_cert_der": hex::encode(linked.binding_cert_der),
        }))
        .into_response(),
        Err(refused) => refused,
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    request: GrantRequest,
}

/// The fields of the gateway's `grant-request` answer the card signs (the others are ignored).
#[derive(serde::Deserialize)]
struct GrantRequest {
    service: String,
    audience: String,
    nonce_hex: String,
    scope: Vec<String>,
    expires_at: u32,
}

impl GrantRequest {
    fn checked(self) -> Option<GrantToSign> {
        GrantToSign::from_request(
            self.service,
            self.audience,
            &self.nonce_hex,
            &self.scope,
            self.expires_at,
        )
    }
}

async fn grant(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = refuse_unless_json(&headers, &body) {
        return refused;
    }
    let Some(to_sign) = serde_json::from_slice::<GrantBody>(&body)
        .ok()
        .and_then(|b| b.request.checked())
    else {
        return error(StatusCode::BAD_REQUEST, "bad_request");
    };
    let Some(origin) = admitted_origin(&headers) else {
        return error(StatusCode::FORBIDDEN, "origin_not_allowed");
    };
    let (card, prompt) = (Arc::clone(&shared.card), Arc::clone(&shared.prompt));
    match on_card(&shared, move || {
        card.grant(prompt.as_ref(), &origin, &to_sign)
    })
    .await
    {
        Ok(signed) => axum::Json(serde_json::json!({
            "grant_bytes": hex::encode(signed.grant_bytes),
            "signature": hex::encode(signed.signature),
        }))
        .into_response(),
        Err(refused) => refused,
    }
}

fn agent_error(e: &AgentError) -> Response {
    tracing::info!(error = %e, "card operation refused");
    let with_tries = |status: StatusCode, code: &str, tries: u8| {
        (
            status,
            axum::Json(serde_json::json!({ "error": code, "tries_left": tries })),
        )
            .into_response()
    };
    let piv = match e {
        AgentError::Phr(PhrError::Piv(piv)) => Some(piv),
        _ => None,
    };
    match (e, piv) {
        (AgentError::Jpki(JpkiError::WrongPin { tries_left }), _)
        | (_, Some(PivError::WrongPin { tries_left })) => {
            with_tries(StatusCode::UNAUTHORIZED, "wrong_pin", *tries_left)
        }
        (AgentError::Jpki(JpkiError::LastTryNeedsConfirmation), _)
        | (_, Some(PivError::LastTryNeedsConfirmation)) => {
            with_tries(StatusCode::CONFLICT, "last_try_needs_confirmation", 1)
        }
        (AgentError::Jpki(JpkiError::PinBlocked), _) | (_, Some(PivError::PinBlocked)) => {
            error(StatusCode::LOCKED, "pin_blocked")
        }
        (AgentError::PinEntry(_) | AgentError::PinKindMismatch { .. }, _) => {
            error(StatusCode::BAD_REQUEST, "pin_not_entered")
        }
        (AgentError::NotSupported, _) => error(StatusCode::NOT_FOUND, "unsupported_card"),
        (AgentError::NoCard, _) => error(StatusCode::NOT_FOUND, "no_card"),
        (AgentError::CardChanged, _) => error(StatusCode::CONFLICT, "card_changed"),
        (AgentError::Phr(PhrError::NotLinked { .. }), _) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, "source_not_linked")
        }
        (AgentError::Phr(PhrError::LinkedAsAnother { .. }), _) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, "linked_as_another")
        }
        (AgentError::Phr(PhrError::CardFull(_) | PhrError::ConsentStoreFull { .. }), _) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, "card_full")
        }
        (AgentError::Phr(PhrError::ConcurrentUpdate { .. }), _) => {
            error(StatusCode::CONFLICT, "card_changed")
        }
        (AgentError::PhrCardRequired, _) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, "phr_card_required")
        }
        (AgentError::GrantExpired, _) => error(StatusCode::BAD_REQUEST, "grant_expired"),
        (AgentError::PseudonymForPartner | AgentError::BadLinkName(_), _) => {
            error(StatusCode::BAD_REQUEST, "bad_request")
        }
        (AgentError::KioskConsent(k), _) => kiosk_error(k),
        _ => error(StatusCode::BAD_GATEWAY, "card_error"),
    }
}

/// A consent the card cannot hold: refused before the PIN was sent (nothing written).
fn kiosk_error(e: &KioskConsentError) -> Response {
    let unprocessable = |code| error(StatusCode::UNPROCESSABLE_ENTITY, code);
    match e {
        // Not reached through `From`, which makes the card's failures `AgentError::Phr`.
        KioskConsentError::Card(_) => error(StatusCode::BAD_GATEWAY, "card_error"),
        KioskConsentError::TooManyCategories { .. } => unprocessable("too_many_categories"),
        KioskConsentError::Document(_)
        | KioskConsentError::Category(_)
        | KioskConsentError::AmbiguousCategory(..)
        | KioskConsentError::NoCategories
        | KioskConsentError::Period { .. }
        | KioskConsentError::NoPurpose => unprocessable("consent_not_writable"),
    }
}
