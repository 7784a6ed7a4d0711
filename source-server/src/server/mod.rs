//! The reference source server (`docs/source-protocol.md`): mutual TLS with registered gateway
//! certificates, `POST /v1/nonces`, `POST /v1/links`, `GET /v1/files`, `GET /v1/files/{id}`,
//! over `<data_dir>/<pseudonym>/`. [`serve`] is the accept loop; tests bind port 0.

mod catalog;
mod config;
mod faults;
mod grant;
mod state;

pub use config::{ConfigError, FileConfig};
pub use faults::Faults;
pub use state::{State, StateError};

use crate::protocol::{
    self, Credential, ErrorBody, ErrorCode, FileEntry, FileList, LinkRequest, LinkResponse,
    MAX_PAGE, NONCE_BYTES, NONCE_TTL_SECS, NonceResponse,
};
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use faults::Injected;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rand::RngCore as _;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use state::{Link, LinkedKey};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

/// Longest TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for open connections at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A gateway allowed to connect: its TLS client certificate and the audience its grants name.
#[derive(Debug, Clone)]
pub struct RegisteredGateway {
    /// The audience string (the gateway's id).
    pub audience: String,
    /// Its client certificate, DER (matched exactly: RFC 8705 §2.2 self-signed method).
    pub certificate: Vec<u8>,
}

/// A one-time enrollment code handed to a person.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// The code.
    pub code: String,
    /// The person's pseudonym here.
    pub pseudonym: String,
    /// Unix seconds after which it is refused (absent: no expiry).
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// What a source is.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Service id (the OU of the PHR card's binding certificate).
    pub service_id: String,
    /// `<data_dir>/<pseudonym>/<files>`.
    pub data_dir: PathBuf,
    /// Where `state.json` lives.
    pub state_dir: PathBuf,
    /// PHR card issuer CA certificate (DER); `None`: PHR cards cannot link.
    pub phr_issuer_ca: Option<Vec<u8>>,
    /// JPKI 利用者証明用 CA certificates (DER); empty: My Number cards cannot link.
    pub jpki_cas: Vec<Vec<u8>>,
    /// Gateways allowed to connect.
    pub gateways: Vec<RegisteredGateway>,
    /// Enrollment codes.
    pub enrollments: Vec<Enrollment>,
}

/// Why a source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The state file.
    #[error(transparent)]
    State(#[from] StateError),
    /// The service id is not valid.
    #[error("service id {0:?}: 1–32 of a-z 0-9 . - _")]
    ServiceId(String),
    /// A directory could not be created.
    #[error("{path}: {source}")]
    Dir {
        /// Directory.
        path: PathBuf,
        /// Error.
        source: std::io::Error,
    },
    /// TLS settings.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// A running source's state.
pub struct Source {
    config: SourceConfig,
    state: Mutex<State>,
    faults: Arc<Faults>,
    /// Held from a folder scan to the answer built on it, so that a file journaled by a
    /// concurrent request is never passed over by a cursor handed out meanwhile.
    scan: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("service_id", &self.config.service_id)
            .finish_non_exhaustive()
    }
}

/// The audience of the TLS client of a connection.
#[derive(Debug, Clone)]
struct ClientAudience(Arc<str>);

impl Source {
    /// Opens the state (creating the directories).
    pub fn open(config: SourceConfig) -> Result<Arc<Source>, SourceError> {
        card_agent::phr::consent::check_service_id(&config.service_id)
            .map_err(|_| SourceError::ServiceId(config.service_id.clone()))?;
        for dir in [&config.data_dir, &config.state_dir] {
            std::fs::create_dir_all(dir).map_err(|source| SourceError::Dir {
                path: dir.clone(),
                source,
            })?;
        }
        let state = State::load(&config.state_dir)?;
        Ok(Arc::new(Source {
            config,
            state: Mutex::new(state),
            faults: Arc::new(Faults::default()),
            scan: tokio::sync::Mutex::new(()),
        }))
    }

    /// The fault switches (tests).
    pub fn faults(&self) -> Arc<Faults> {
        Arc::clone(&self.faults)
    }

    /// The service id.
    pub fn service_id(&self) -> &str {
        &self.config.service_id
    }

    /// The TLS configuration: this certificate chain and key; only registered gateways' client
    /// certificates are accepted.
    pub fn tls_config(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Arc<ServerConfig>, SourceError> {
        let registered: Vec<Vec<u8>> = self
            .config
            .gateways
            .iter()
            .map(|g| g.certificate.clone())
            .collect();
        let registry: crate::tls::CertificateRegistry =
            Arc::new(move |der: &[u8]| registered.iter().any(|r| r == der));
        Ok(crate::tls::server_config(chain, key, registry)?)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now(&self) -> i64 {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        secs + self.faults.clock_offset()
    }

    fn save(&self, state: &State) -> Result<(), Failure> {
        state.save(&self.config.state_dir).map_err(|e| {
            tracing::error!(error = %e, "state not saved");
            Failure::new(ErrorCode::Internal, "the source could not save its state")
        })
    }
}

/// An error answer.
#[derive(Debug)]
struct Failure {
    code: ErrorCode,
    message: String,
}

impl Failure {
    fn new(code: ErrorCode, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<grant::Refusal> for Failure {
    fn from(r: grant::Refusal) -> Failure {
        Failure::new(r.code, r.message)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(ErrorBody {
                error: self.code,
                message: self.message,
            }),
        )
            .into_response()
    }
}

/// The router (the serve loop adds the client's audience to every request).
pub fn router(source: Arc<Source>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(protocol::paths::NONCES, post(issue_nonce))
        .route(protocol::paths::LINKS, post(link))
        .route(protocol::paths::FILES, get(list_files))
        .route("/v1/files/{id}", get(fetch_file))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&source),
            inject_faults,
        ))
        .with_state(source)
}

async fn inject_faults(
    AxState(source): AxState<Arc<Source>>,
    request: Request,
    next: Next,
) -> Response {
    source.faults.count_request();
    let delay = source.faults.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match source.faults.on_request() {
        Injected::None => next.run(request).await,
        Injected::Fail(status) => {
            let code = if status == 503 {
                ErrorCode::Unavailable
            } else {
                ErrorCode::Internal
            };
            let mut response = Failure::new(code, "injected failure").into_response();
            *response.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            response
        }
    }
}

fn audience_of(audience: Option<&Extension<ClientAudience>>) -> Result<Arc<str>, Failure> {
    audience
        .map(|Extension(a)| Arc::clone(&a.0))
        .ok_or_else(|| {
            Failure::new(
                ErrorCode::WrongAudience,
                "no registered TLS client certificate",
            )
        })
}

async fn issue_nonce(
    AxState(source): AxState<Arc<Source>>,
    audience: Option<Extension<ClientAudience>>,
) -> Result<Response, Failure> {
    audience_of(audience.as_ref())?;
    let mut bytes = [0u8; NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let nonce = URL_SAFE_NO_PAD.encode(bytes);
    let now = source.now();
    let expires_at = now + NONCE_TTL_SECS;
    {
        let mut state = source.lock();
        state.purge_nonces(now);
        state.issued_nonces.insert(nonce.clone(), expires_at);
        source.save(&state)?;
    }
    Ok((
        StatusCode::CREATED,
        Json(NonceResponse { nonce, expires_at }),
    )
        .into_response())
}

async fn link(
    AxState(source): AxState<Arc<Source>>,
    audience: Option<Extension<ClientAudience>>,
    body: Result<Json<LinkRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Failure> {
    audience_of(audience.as_ref())?;
    let Json(request) = body.map_err(|e| Failure::new(ErrorCode::BadRequest, e.body_text()))?;
    let now = source.now();
    let invalid_code = || {
        Failure::new(
            ErrorCode::EnrollmentCodeInvalid,
            "the enrollment code is unknown, used or expired",
        )
    };
    let enrollment = source
        .config
        .enrollments
        .iter()
        .find(|e| e.code == request.enrollment_code)
        .ok_or_else(invalid_code)?;
    if enrollment.expires_at.is_some_and(|t| t < now) {
        return Err(invalid_code());
    }
    let key = verify_credential(
        &source.config,
        &enrollment.pseudonym,
        &request.credential,
        now,
    )?;
    let mut state = source.lock();
    if state.used_codes.contains(&enrollment.code) {
        return Err(invalid_code());
    }
    if state
        .links
        .get(&enrollment.pseudonym)
        .is_some_and(|existing| existing.key != key)
    {
        return Err(Failure::new(
            ErrorCode::AlreadyLinked,
            "this person is already linked to another card",
        ));
    }
    state.used_codes.insert(enrollment.code.clone());
    state.links.insert(
        enrollment.pseudonym.clone(),
        Link {
            key,
            linked_at: now,
        },
    );
    source.save(&state)?;
    tracing::info!(pseudonym = %enrollment.pseudonym, "linked");
    Ok((
        StatusCode::CREATED,
        Json(LinkResponse {
            service: source.config.service_id.clone(),
            pseudonym: enrollment.pseudonym.clone(),
        }),
    )
        .into_response())
}

/// Checks a linking credential (protocol §3 step 4) and returns the key to register.
fn verify_credential(
    config: &SourceConfig,
    pseudonym: &str,
    credential: &Credential,
    now: i64,
) -> Result<LinkedKey, Failure> {
    let invalid = |m: String| Failure::new(ErrorCode::CertificateInvalid, m);
    match credential {
        Credential::Phr {
            holder_certificate,
            binding_certificate,
        } => {
            use card_agent::phr::verify::{verify_binding, verify_holder_cert};
            let ca = config
                .phr_issuer_ca
                .as_deref()
                .ok_or_else(|| invalid("this source does not accept PHR cards".into()))?;
            let holder = verify_holder_cert(holder_certificate, ca, now)
                .map_err(|e| invalid(e.to_string()))?;
            let binding = verify_binding(binding_certificate, &holder, now)
                .map_err(|e| invalid(e.to_string()))?;
            if binding.service != config.service_id {
                return Err(invalid(format!(
                    "the card's key is bound to service {:?}, not {:?}",
                    binding.service, config.service_id
                )));
            }
            if binding.pseudonym != pseudonym {
                return Err(invalid(
                    "the card's key is bound to another person than the enrollment code's".into(),
                ));
            }
            Ok(LinkedKey::P256 {
                sec1: binding.key.to_encoded_point(false).as_bytes().to_vec(),
            })
        }
        Credential::Jpki { certificate } => {
            let spki = config::verify_jpki_certificate(certificate, &config.jpki_cas, now)
                .map_err(invalid)?;
            Ok(LinkedKey::Jpki { spki })
        }
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// Verifies the request's grant (redeeming its nonce on first use).
fn verified_grant(
    source: &Arc<Source>,
    headers: &HeaderMap,
    audience: Option<&Extension<ClientAudience>>,
) -> Result<grant::Verified, Failure> {
    let audience = audience_of(audience)?;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let now = source.now();
    let mut state = source.lock();
    let (verified, changed) = grant::verify(
        &mut state,
        &source.config.service_id,
        authorization,
        &audience,
        now,
    )?;
    if changed {
        source.save(&state)?;
    }
    Ok(verified)
}

/// Verifies the grant and brings the person's journal up to date (lists only: a download is
/// of a file already journaled, and is checked against its journaled SHA-256).
async fn verified_and_scanned(
    source: &Arc<Source>,
    headers: &HeaderMap,
    audience: Option<&Extension<ClientAudience>>,
) -> Result<(grant::Verified, Vec<catalog::Found>), Failure> {
    let verified = verified_grant(source, headers, audience)?;
    let dir = source.config.data_dir.join(&verified.pseudonym);
    let journaled: std::collections::HashSet<(String, String)> = source
        .lock()
        .journal
        .iter()
        .filter(|e| e.pseudonym == verified.pseudonym)
        .map(|e| (e.name.clone(), e.sha256.clone()))
        .collect();
    let found = tokio::task::spawn_blocking(move || {
        catalog::scan(&dir, |name, sha| {
            journaled.contains(&(name.to_owned(), sha.to_owned()))
        })
    })
    .await
    .map_err(|_| Failure::new(ErrorCode::Internal, "scan failed"))?
    .map_err(|e| {
        tracing::error!(error = %e, "scan failed");
        Failure::new(ErrorCode::Internal, "the source could not read its files")
    })?;
    {
        let mut state = source.lock();
        let mut changed = false;
        for f in &found {
            let known = state.journal.iter().any(|e| {
                e.pseudonym == verified.pseudonym && e.name == f.name && e.sha256 == f.sha256
            });
            if let (false, Some(categories)) = (known, &f.categories) {
                let seq = state.next_seq();
                state.journal.push(state::JournalEntry {
                    seq,
                    pseudonym: verified.pseudonym.clone(),
                    name: f.name.clone(),
                    sha256: f.sha256.clone(),
                    size: f.size,
                    categories: categories.clone(),
                });
                changed = true;
            }
        }
        if changed {
            source.save(&state)?;
        }
    }
    Ok((verified, found))
}

fn covered(scope: &[card_agent::phr::consent::Category], categories: &[String]) -> bool {
    categories.iter().all(|c| protocol::scope_covers(scope, c))
}

async fn list_files(
    AxState(source): AxState<Arc<Source>>,
    audience: Option<Extension<ClientAudience>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Failure> {
    let Query(query) = query.map_err(|e| Failure::new(ErrorCode::BadRequest, e.body_text()))?;
    let after = match query.after.as_deref() {
        None => 0,
        Some(a) => a.parse::<u64>().map_err(|_| {
            Failure::new(ErrorCode::BadRequest, "after: not a cursor of this source")
        })?,
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Failure::new(
            ErrorCode::BadRequest,
            format!("limit: 1..={MAX_PAGE}"),
        ));
    }
    let _scan = source.scan.lock().await;
    let (verified, found) = verified_and_scanned(&source, &headers, audience.as_ref()).await?;
    let state = source.lock();
    let mine = state
        .journal
        .iter()
        .filter(|e| e.pseudonym == verified.pseudonym && e.seq > after);
    let mut last_seen = None;
    let mut eligible = Vec::new();
    for e in mine {
        last_seen = Some(e.seq);
        let current = found
            .iter()
            .any(|f| f.name == e.name && f.sha256 == e.sha256);
        // A file of a format this source does not know has no categories: never listed
        // (unless a test asks for a misconfigured source).
        let known = !e.categories.is_empty() || source.faults.lists_unknown_formats();
        if current && known && covered(&verified.scope, &e.categories) {
            eligible.push(e);
        }
    }
    let more = eligible.len() > limit;
    let page: Vec<FileEntry> = eligible
        .iter()
        .take(limit)
        .map(|e| FileEntry {
            id: e.seq.to_string(),
            name: e.name.clone(),
            categories: e.categories.clone(),
            size: e.size,
            sha256: e.sha256.clone(),
        })
        .collect();
    let next = if more {
        page.last().and_then(|f| f.id.parse::<u64>().ok())
    } else {
        last_seen.or((after > 0).then_some(after))
    };
    Ok(Json(FileList {
        files: page,
        next_cursor: next.map(|n| n.to_string()),
        more,
    })
    .into_response())
}

async fn fetch_file(
    AxState(source): AxState<Arc<Source>>,
    audience: Option<Extension<ClientAudience>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, Failure> {
    source.faults.on_file_request();
    let not_found = || Failure::new(ErrorCode::NotFound, "no such file for this person");
    let seq: u64 = id.parse().map_err(|_| not_found())?;
    let verified = verified_grant(&source, &headers, audience.as_ref())?;
    let entry = {
        let state = source.lock();
        state
            .journal
            .iter()
            .find(|e| e.seq == seq && e.pseudonym == verified.pseudonym)
            .cloned()
            .ok_or_else(not_found)?
    };
    let known = !entry.categories.is_empty() || source.faults.lists_unknown_formats();
    if !known || !covered(&verified.scope, &entry.categories) {
        return Err(not_found());
    }
    let path = source
        .config
        .data_dir
        .join(&verified.pseudonym)
        .join(&entry.name);
    let bytes = tokio::fs::read(&path).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            not_found()
        } else {
            // Transient (e.g. too many open files): retryable, never "gone for good".
            tracing::error!(error = %e, "reading a file failed");
            Failure::new(ErrorCode::Internal, "the source could not read the file")
        }
    })?;
    let sha: [u8; 32] = sha2::Digest::finalize(sha2::Digest::chain_update(
        <sha2::Sha256 as sha2::Digest>::new(),
        &bytes,
    ))
    .into();
    if hex::encode(sha) != entry.sha256 {
        // Changed since it was listed: the new content is a new file.
        return Err(not_found());
    }
    let length = bytes.len();
    let body = if source.faults.truncate_this_body() {
        use futures_util::StreamExt as _;
        let half: Result<Vec<u8>, std::io::Error> = Ok(bytes[..length / 2].to_vec());
        // Let the head and the first half reach the client before the connection breaks.
        let broken = futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err(std::io::Error::other("injected truncation"))
        });
        Body::from_stream(futures_util::stream::iter([half]).chain(broken))
    } else {
        Body::from(bytes)
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Ok(v) = HeaderValue::from_str(&protocol::repr_digest(&sha)) {
        h.insert(protocol::REPR_DIGEST, v);
    }
    Ok(response)
}

/// Serves `source` on `listener` with `tls` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    source: Arc<Source>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let app = router(Arc::clone(&source));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let source = Arc::clone(&source);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let audience = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| {
                    source
                        .config
                        .gateways
                        .iter()
                        .find(|g| g.certificate == leaf.as_ref())
                })
                .map(|g| ClientAudience(Arc::from(g.audience.as_str())));
            let app = app.map_request(move |mut request: axum::extract::Request<_>| {
                if let Some(audience) = &audience {
                    request.extensions_mut().insert(audience.clone());
                }
                request
            });
            let service = TowerToHyperService::new(app);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
    Ok(())
}
