//! The HTTP client of one source (`docs/source-protocol.md` §2, §5, §6): mutual TLS trusting only
//! the CA configured for that source and presenting the gateway's client certificate; a connect
//! timeout and a whole-request timeout; bounded retries with exponential backoff and jitter for
//! retryable failures only; the source's circuit breaker around every attempt; bodies bounded
//! and checked against the listing's size and SHA-256 and the `Repr-Digest` header.

use super::breaker::{Breaker, Permit};
use iphr_source::protocol::{
    self, ErrorBody, ErrorCode, FileEntry, FileList, GrantHeader, LinkRequest, LinkResponse,
    NonceResponse, paths,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Largest JSON answer read.
pub const MAX_JSON_BYTES: usize = 4 * 1024 * 1024;
/// Longest backoff between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a request to a source failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// The source's circuit breaker is open: no request was sent.
    #[error("circuit breaker open: the source failed repeatedly, requests are held back")]
    BreakerOpen,
    /// Connect or whole-request timeout.
    #[error("timed out")]
    Timeout,
    /// The connection failed or was reset.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The source presented a certificate that is not the one registered for it.
    #[error("the source's TLS certificate is not the one registered for it: {0}")]
    Certificate(String),
    /// 408, 429 or 5xx.
    #[error("source unavailable: HTTP {status}")]
    Unavailable {
        /// The status.
        status: u16,
    },
    /// A refusal (4xx) with the protocol's error code.
    #[error("refused by the source: HTTP {status} {}", code.as_str())]
    Refused {
        /// The status.
        status: u16,
        /// The code.
        code: ErrorCode,
    },
    /// The body ended before its length (connection broken mid-stream).
    #[error("body broken mid-stream after {got} bytes")]
    Truncated {
        /// Bytes received.
        got: u64,
    },
    /// The body's length differs from the listing.
    #[error("body is {got} bytes, the listing says {expected}")]
    SizeMismatch {
        /// Listed.
        expected: u64,
        /// Received (so far).
        got: u64,
    },
    /// The body's SHA-256 differs from the listing or the `Repr-Digest` header.
    #[error("body digest differs from the listing or Repr-Digest")]
    DigestMismatch,
    /// The answer is not in the protocol's format.
    #[error("answer in an unknown format: {0}")]
    Malformed(String),
}

impl SourceError {
    /// Whether another attempt may succeed (§6).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            SourceError::Timeout
                | SourceError::Connection(_)
                | SourceError::Unavailable { .. }
                | SourceError::Truncated { .. }
                | SourceError::SizeMismatch { .. }
                | SourceError::DigestMismatch
        )
    }

    /// Whether the source misbehaved (counted by the breaker); refusals are answers, not failures.
    fn is_failure(&self) -> bool {
        !matches!(self, SourceError::Refused { .. } | SourceError::BreakerOpen)
    }

    /// A stable code for the audit trail and the kiosk.
    pub fn code(&self) -> &'static str {
        match self {
            SourceError::BreakerOpen => "breaker_open",
            SourceError::Timeout => "timeout",
            SourceError::Connection(_) => "connection",
            SourceError::Certificate(_) => "certificate_not_registered",
            SourceError::Unavailable { .. } => "unavailable",
            SourceError::Refused { code, .. } => code.as_str(),
            SourceError::Truncated { .. } => "truncated",
            SourceError::SizeMismatch { .. } => "size_mismatch",
            SourceError::DigestMismatch => "digest_mismatch",
            SourceError::Malformed(_) => "unknown_format",
        }
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    /// A PEM file could not be read.
    #[error("{path}: {reason}")]
    File {
        /// File.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls or reqwest refused the configuration.
    #[error("TLS client: {0}")]
    Tls(String),
}

/// Timeouts, retries and limits of a client.
#[derive(Debug, Clone, Copy)]
pub struct ClientSettings {
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Attempts per request (retryable failures only), at least 1.
    pub max_attempts: u32,
    /// First backoff.
    pub backoff_base: Duration,
    /// Largest file.
    pub max_file_bytes: u64,
}

/// The gateway's mTLS identity towards sources (the key is never logged).
#[derive(Clone)]
pub struct ClientIdentity {
    /// Certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Private key.
    pub key: Arc<PrivateKeyDer<'static>>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("chain", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ClientIdentity {
    /// Reads PEM files.
    pub fn from_pem_files(
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<ClientIdentity, ClientSetupError> {
        use rustls_pki_types::pem::PemObject;
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ClientSetupError::File {
                path: cert.display().to_string(),
                reason: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(ClientSetupError::File {
                path: cert.display().to_string(),
                reason: "no certificate in the file".into(),
            });
        }
        // The key's error names the file only, never its content.
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|_| ClientSetupError::File {
            path: key.display().to_string(),
            reason: "no usable PEM private key".into(),
        })?;
        Ok(ClientIdentity {
            chain,
            key: Arc::new(key_der),
        })
    }
}

/// Reads the PEM certificates of a source's `server_ca` file.
pub fn read_ca_file(
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, ClientSetupError> {
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ClientSetupError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(ClientSetupError::File {
            path: path.display().to_string(),
            reason: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

/// One source's client.
#[derive(Debug)]
pub struct SourceClient {
    id: String,
    base_url: String,
    http: reqwest::Client,
    settings: ClientSettings,
    breaker: Breaker,
    attempts: AtomicU64,
    rng: ring::rand::SystemRandom,
}

impl SourceClient {
    /// A client of source `id` at `base_url` whose server certificate must chain to one of
    /// `server_cas` (and nothing else), presenting `identity`.
    pub fn new(
        id: &str,
        base_url: &str,
        server_cas: &[CertificateDer<'static>],
        identity: &ClientIdentity,
        settings: ClientSettings,
        breaker: Breaker,
    ) -> Result<SourceClient, ClientSetupError> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in server_cas {
            roots
                .add(ca.clone())
                .map_err(|e| ClientSetupError::Tls(format!("server_ca of {id}: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientSetupError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|e| ClientSetupError::Tls(e.to_string()))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("iphr-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientSetupError::Tls(e.to_string()))?;
        Ok(SourceClient {
            id: id.to_owned(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            http,
            settings,
            breaker,
            attempts: AtomicU64::new(0),
            rng: ring::rand::SystemRandom::new(),
        })
    }

    /// The source's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The breaker.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Requests sent so far (every attempt).
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// The settings.
    pub fn settings(&self) -> ClientSettings {
        self.settings
    }

    /// `POST /v1/nonces`.
    pub async fn nonce(&self) -> Result<NonceResponse, SourceError> {
        let url = format!("{}{}", self.base_url, paths::NONCES);
        self.with_retries(self.settings.max_attempts, || async {
            let resp = self.send(self.http.post(&url)).await?;
            read_json(resp).await
        })
        .await
    }

    /// `POST /v1/links` (one attempt: a retried link could meet its own burnt code).
    pub async fn link(&self, request: &LinkRequest) -> Result<LinkResponse, SourceError> {
        let url = format!("{}{}", self.base_url, paths::LINKS);
        self.with_retries(1, || async {
            let resp = self.send(self.http.post(&url).json(request)).await?;
            read_json(resp).await
        })
        .await
    }

    /// `GET /v1/files?after=…&limit=…` with the grant.
    pub async fn list(
        &self,
        grant: &GrantHeader,
        after: Option<&str>,
        limit: u32,
    ) -> Result<FileList, SourceError> {
        let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
        if let Some(after) = after {
            query.push(("after", after.to_owned()));
        }
        let url = format!("{}{}", self.base_url, paths::FILES);
        let auth = grant.to_header_value();
        let list: FileList = self
            .with_retries(self.settings.max_attempts, || async {
                let req = self
                    .http
                    .get(&url)
                    .query(&query)
                    .header(reqwest::header::AUTHORIZATION, &auth);
                let resp = self.send(req).await?;
                read_json(resp).await
            })
            .await?;
        if list
            .files
            .iter()
            .any(|f| !FileEntry::id_is_valid(&f.id) || f.sha256_bytes().is_none())
        {
            return Err(SourceError::Malformed(
                "a listed file has an invalid id or SHA-256".into(),
            ));
        }
        Ok(list)
    }

    /// `GET /v1/files/{id}`: the bytes, checked against the listing's size and SHA-256 and the
    /// `Repr-Digest` header.
    pub async fn fetch(
        &self,
        grant: &GrantHeader,
        entry: &FileEntry,
    ) -> Result<Vec<u8>, SourceError> {
        let expected = entry
            .sha256_bytes()
            .ok_or_else(|| SourceError::Malformed("invalid SHA-256 in the listing".into()))?;
        if entry.size > self.settings.max_file_bytes {
            return Err(SourceError::Malformed(format!(
                "{} bytes is more than the {} accepted",
                entry.size, self.settings.max_file_bytes
            )));
        }
        let url = format!("{}{}/{}", self.base_url, paths::FILES, entry.id);
        let auth = grant.to_header_value();
        self.with_retries(self.settings.max_attempts, || async {
            let req = self
                .http
                .get(&url)
                .header(reqwest::header::AUTHORIZATION, &auth);
            let resp = self.send(req).await?;
            if let Some(v) = resp.headers().get(protocol::REPR_DIGEST) {
                let digest = v.to_str().ok().and_then(protocol::parse_repr_digest);
                if digest != Some(expected) {
                    return Err(SourceError::DigestMismatch);
                }
            }
            let body = read_body(resp, entry.size).await?;
            if crate::domain::sha256(&body) != expected {
                return Err(SourceError::DigestMismatch);
            }
            Ok(body)
        })
        .await
    }

    /// Sends one request; a non-success status becomes an error.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, SourceError> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let resp = req.send().await.map_err(|e| transport_error(&e))?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(resp);
        }
        if protocol::status_is_retryable(status) {
            return Err(SourceError::Unavailable { status });
        }
        let body = read_limited(resp, 64 * 1024).await.unwrap_or_default();
        let code = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or(ErrorCode::Unknown);
        Err(SourceError::Refused { status, code })
    }

    /// Runs `attempt` up to `max_attempts` times while it fails retryably, with backoff, each
    /// attempt through the breaker.
    async fn with_retries<T, F, Fut>(&self, max_attempts: u32, attempt: F) -> Result<T, SourceError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, SourceError>>,
    {
        let mut n = 0u32;
        loop {
            n += 1;
            let permit: Permit = self.breaker.allow().ok_or(SourceError::BreakerOpen)?;
            match attempt().await {
                Ok(v) => {
                    self.breaker.success();
                    return Ok(v);
                }
                Err(e) => {
                    if e.is_failure() {
                        self.breaker.failure(permit);
                    } else {
                        self.breaker.success();
                    }
                    if !e.retryable() || n >= max_attempts.max(1) {
                        return Err(e);
                    }
                    let delay = self.backoff(n);
                    tracing::info!(source = %self.id, attempt = n, error = %e, delay_ms = delay.as_millis() as u64, "retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// `base · 2^(n-1)`, capped, with jitter: uniformly in its upper half.
    fn backoff(&self, n: u32) -> Duration {
        let full = self
            .settings
            .backoff_base
            .saturating_mul(1u32 << (n - 1).min(16))
            .min(MAX_BACKOFF);
        let r: [u8; 8] = crate::domain::random_bytes(&self.rng).unwrap_or([0; 8]);
        let half = full / 2;
        let jitter_ms = u64::from_be_bytes(r) % (u64::try_from(half.as_millis()).unwrap_or(0) + 1);
        half + Duration::from_millis(jitter_ms)
    }
}

/// Classifies a transport error (timeout, TLS refusal of the source's certificate, reset).
fn transport_error(e: &reqwest::Error) -> SourceError {
    if e.is_timeout() {
        return SourceError::Timeout;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(tls) = c.downcast_ref::<rustls::Error>() {
            return tls_error(tls);
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return tls_error(tls);
            }
            if io.kind() == std::io::ErrorKind::TimedOut {
                return SourceError::Timeout;
            }
        }
        cause = c.source();
    }
    let chain = error_chain(e);
    // Some layers box the rustls error in types not reachable by downcasting; rustls names an
    // invalid certificate this way in its Display.
    if chain.contains("invalid peer certificate") {
        return SourceError::Certificate(chain);
    }
    SourceError::Connection(chain)
}

fn tls_error(e: &rustls::Error) -> SourceError {
    match e {
        rustls::Error::InvalidCertificate(_) => SourceError::Certificate(e.to_string()),
        other => SourceError::Connection(other.to_string()),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

async fn read_json<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
) -> Result<T, SourceError> {
    let body = read_limited(resp, MAX_JSON_BYTES).await?;
    serde_json::from_slice(&body).map_err(|e| SourceError::Malformed(e.to_string()))
}

/// Reads at most `max` bytes (more is an unknown format).
async fn read_limited(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, SourceError> {
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max {
                    return Err(SourceError::Malformed(format!(
                        "answer longer than {max} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) if e.is_timeout() => return Err(SourceError::Timeout),
            Err(_) => {
                return Err(SourceError::Truncated {
                    got: body.len() as u64,
                });
            }
        }
    }
}

/// Reads a file body of exactly `size` bytes.
async fn read_body(mut resp: reqwest::Response, size: u64) -> Result<Vec<u8>, SourceError> {
    if let Some(len) = resp.content_length()
        && len != size
    {
        return Err(SourceError::SizeMismatch {
            expected: size,
            got: len,
        });
    }
    let mut body = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(1 << 20));
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() as u64 > size {
                    return Err(SourceError::SizeMismatch {
                        expected: size,
                        got: body.len() as u64,
                    });
                }
            }
            Ok(None) => break,
            Err(e) if e.is_timeout() => return Err(SourceError::Timeout),
            Err(_) => {
                return Err(SourceError::Truncated {
                    got: body.len() as u64,
                });
            }
        }
    }
    if body.len() as u64 != size {
        return Err(SourceError::SizeMismatch {
            expected: size,
            got: body.len() as u64,
        });
    }
    Ok(body)
}
