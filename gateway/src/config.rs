//! Gateway configuration: a TOML file, then `IPHR_GATEWAY_*` environment variables over it
//! (nested keys with `__`, e.g. `IPHR_GATEWAY_DATABASE__URL`). Trust anchors are configured per
//! card type and card key (DESIGN §4 step 3; domain.md §5.4: JPKI 利用者証明用 CA generations).

use crate::domain::certs::{CardKey, CardType, EkuPolicy, RevocationMode};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable is missing a key or has a wrong value.
    #[error("configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    /// A value is syntactically fine but not usable.
    #[error("configuration: {key}: {reason}")]
    Value {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Everything the gateway reads at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (HTTPS).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The origin browsers use for this gateway, e.g. `https://kiosk.example.jp` (scheme, host,
    /// port when not default; no path). The signed origin is rebuilt from this, never from a request.
    pub public_origin: String,
    /// TLS certificate chain and key (PEM).
    pub tls: TlsConfig,
    /// Database.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// Browser sessions.
    #[serde(default)]
    pub session: SessionConfig,
    /// Challenge nonces.
    #[serde(default)]
    pub nonce: NonceConfig,
    /// Revocation data refresh.
    #[serde(default)]
    pub revocation: RevocationConfig,
    /// Trust anchors per card type and key.
    #[serde(default)]
    pub trust: Vec<TrustConfig>,
    /// The kiosk sign-in page (`/kiosk`).
    #[serde(default)]
    pub kiosk: KioskConfig,
    /// The partner listener (mutual TLS, OAuth, FHIR); none when absent.
    #[serde(default)]
    pub partner: Option<PartnerConfig>,
    /// Imports.
    #[serde(default)]
    pub import: ImportConfig,
    /// The audit log's signed checkpoints.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Pulls from sources with a card-signed grant (`docs/source-protocol.md`); none when absent.
    #[serde(default)]
    pub sources: Option<SourcesConfig>,
    /// The worker's erasure and export (`docs/privacy.md`).
    #[serde(default)]
    pub privacy: PrivacyConfig,
}

/// Erasure (security-scenarios K1): how long backups may still hold erased data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Days after an erasure by which every backup holding the person's data must be purged
    /// (listed by `iphr-gateway purge-due`).
    #[serde(default = "default_backup_purge_days")]
    pub backup_purge_days: u32,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            backup_purge_days: default_backup_purge_days(),
        }
    }
}

fn default_backup_purge_days() -> u32 {
    crate::domain::privacy::DEFAULT_BACKUP_PURGE_DAYS
}

/// The connectors to sources (`docs/source-protocol.md` §7): one mTLS client per source, shared
/// timeouts, retries and circuit-breaker settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesConfig {
    /// This gateway's audience string, as registered at every source (grant field `82`).
    pub gateway_id: String,
    /// PEM certificate chain the gateway presents to sources (mutual TLS).
    pub client_cert: PathBuf,
    /// PEM private key of `client_cert` (never logged).
    pub client_key: PathBuf,
    /// Seconds between scheduled incremental pulls.
    #[serde(default = "default_pull_interval")]
    pub pull_interval_secs: u64,
    /// TCP + TLS connect timeout, milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Whole-request timeout (headers and body), milliseconds.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Attempts per request for retryable failures (§6), at least 1.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First backoff, milliseconds; doubled per attempt, with jitter.
    #[serde(default = "default_backoff_ms")]
    pub backoff_base_ms: u64,
    /// Consecutive failed requests that open a source's circuit breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// Seconds an open breaker fails fast before letting one trial request through.
    #[serde(default = "default_breaker_open")]
    pub breaker_open_secs: u64,
    /// Files per list page (1–500).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Largest file accepted from a source, bytes.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// The sources.
    #[serde(default)]
    pub source: Vec<SourceEntry>,
}

/// One source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceEntry {
    /// The service id (also registered with `register-partner --source`).
    pub id: String,
    /// Base URL, `https://host[:port]` (no path).
    pub url: String,
    /// PEM file of the only CA (or certificate) trusted for this source's server certificate.
    pub server_ca: PathBuf,
}

fn default_pull_interval() -> u64 {
    3600
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_request_timeout_ms() -> u64 {
    60_000
}
fn default_max_attempts() -> u32 {
    3
}
fn default_backoff_ms() -> u64 {
    500
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_open() -> u64 {
    60
}
fn default_page_size() -> u32 {
    100
}
fn default_max_file_bytes() -> u64 {
    64 * 1024 * 1024
}

impl SourcesConfig {
    /// Checks values that parse but cannot work.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, reason: &str| ConfigError::Value {
            key,
            reason: reason.to_owned(),
        };
        if self.gateway_id.is_empty() || self.gateway_id.len() > 255 {
            return Err(bad("sources.gateway_id", "must be 1–255 bytes"));
        }
        if self.max_attempts == 0 || self.breaker_failures == 0 {
            return Err(bad(
                "sources.max_attempts / sources.breaker_failures",
                "must be positive",
            ));
        }
        if self.pull_interval_secs == 0
            || self.connect_timeout_ms == 0
            || self.request_timeout_ms == 0
        {
            return Err(bad(
                "sources.pull_interval_secs / connect_timeout_ms / request_timeout_ms",
                "must be positive",
            ));
        }
        if !(1..=500).contains(&self.page_size) {
            return Err(bad("sources.page_size", "must be 1–500"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.source {
            if card_agent::phr::consent::check_service_id(&s.id).is_err() {
                return Err(bad(
                    "sources.source.id",
                    "must be 1–32 of a-z 0-9 . - _ (the service id)",
                ));
            }
            if !seen.insert(s.id.as_str()) {
                return Err(bad("sources.source.id", "appears twice"));
            }
            let url = s.url.trim_end_matches('/');
            if !url.starts_with("https://") || url["https://".len()..].contains('/') {
                return Err(bad(
                    "sources.source.url",
                    "must be https://host[:port] without a path",
                ));
            }
        }
        Ok(())
    }
}

/// The partner listener (DESIGN §6). Partners are the `partner` services of the database
/// (`iphr-gateway register-partner`), reloaded every `reload_secs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerConfig {
    /// Address of the mTLS listener.
    pub listen: SocketAddr,
    /// Absolute base URL partners use, e.g. `https://gateway.example.jp:9443` (no path). The FHIR
    /// base is `{public_url}/fhir`; the token endpoint `{public_url}/oauth/token`, also the
    /// OAuth issuer identifier.
    pub public_url: String,
    /// Server certificate of this listener; the main one when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Requests per second of a partner registered without a rate.
    #[serde(default = "default_partner_rate")]
    pub default_rate_per_sec: u32,
    /// Access-token lifetime.
    #[serde(default = "default_token_ttl")]
    pub token_ttl_secs: u64,
    /// Seconds between reloads of the registered partners.
    #[serde(default = "default_reload")]
    pub reload_secs: u64,
    /// MiB of assembled `$everything` Bundles kept for reuse at the same data version (0: none).
    #[serde(default = "default_bundle_cache_mib")]
    pub everything_cache_mib: u64,
}

fn default_bundle_cache_mib() -> u64 {
    crate::domain::access::DEFAULT_BUNDLE_CACHE_BYTES >> 20
}

/// Imports from a watched drop directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportConfig {
    /// The drop directory (`incoming/`, `done/`, `failed/` inside); no watching when absent.
    #[serde(default)]
    pub drop_dir: Option<PathBuf>,
    /// Milliseconds between scans.
    #[serde(default = "default_scan_ms")]
    pub scan_interval_ms: u64,
}

impl Default for ImportConfig {
    fn default() -> Self {
        ImportConfig {
            drop_dir: None,
            scan_interval_ms: default_scan_ms(),
        }
    }
}

/// Audit checkpoints (security-scenarios G4: signed at least every 5 minutes, copied off the box).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Ed25519 PKCS#8 signing key (`iphr-gateway audit-keygen`); without it no checkpoints are
    /// signed.
    #[serde(default)]
    pub signing_key: Option<PathBuf>,
    /// Key name and checkpoint origin line, e.g. `kiosk.example.jp/audit`.
    #[serde(default = "default_audit_origin")]
    pub origin: String,
    /// Seconds between signed checkpoints.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            signing_key: None,
            origin: default_audit_origin(),
            checkpoint_interval_secs: default_checkpoint_interval(),
        }
    }
}

fn default_audit_origin() -> String {
    "iphr-gateway/audit".into()
}
fn default_checkpoint_interval() -> u64 {
    300
}

/// The kiosk page: where the browser finds the card agent's localhost API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KioskConfig {
    /// Base URL of the card agent, a loopback `http` origin (`http://127.0.0.1:24700`). It goes
    /// into the page's CSP `connect-src` and nowhere else.
    #[serde(default = "default_agent_url")]
    pub agent_url: String,
}

impl Default for KioskConfig {
    fn default() -> Self {
        KioskConfig {
            agent_url: default_agent_url(),
        }
    }
}

/// TLS files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Database location.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/file.db` (the default, created when missing) or `postgres://…`.
    #[serde(default = "default_db_url")]
    pub url: String,
    /// Pool size.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: default_db_url(),
            max_connections: default_max_connections(),
        }
    }
}

/// Session timeouts (security-scenarios D3: kiosk idle 120 s, absolute 12 h).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// Idle timeout in seconds.
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: u64,
    /// Absolute timeout in seconds.
    #[serde(default = "default_absolute")]
    pub absolute_timeout_secs: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout_secs: default_idle(),
            absolute_timeout_secs: default_absolute(),
        }
    }
}

/// Nonce lifetime (DESIGN §4: 5 minutes).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonceConfig {
    /// Lifetime in seconds.
    #[serde(default = "default_nonce_ttl")]
    pub ttl_secs: u64,
}

impl Default for NonceConfig {
    fn default() -> Self {
        NonceConfig {
            ttl_secs: default_nonce_ttl(),
        }
    }
}

/// CRL refresh.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationConfig {
    /// Seconds between reloads of every CRL source.
    #[serde(default = "default_refresh")]
    pub refresh_secs: u64,
    /// Timeout of one HTTP fetch.
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_secs: u64,
    /// How far in the future a CRL's thisUpdate may lie (clock skew) before it is refused.
    #[serde(default = "default_skew")]
    pub max_clock_skew_secs: u64,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        RevocationConfig {
            refresh_secs: default_refresh(),
            fetch_timeout_secs: default_fetch_timeout(),
            max_clock_skew_secs: default_skew(),
        }
    }
}

/// The anchors accepted for one card type and key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// `jpki` or `phr`.
    pub card_type: CardType,
    /// Which key of the card (`auth`: JPKI 利用者証明用, PHR slot 9A).
    pub key: CardKey,
    /// CA certificates (DER or PEM files). Several JPKI generations share one DN: the issuer is
    /// picked by signature.
    pub anchors: Vec<PathBuf>,
    /// CRL sources: file paths or `http://` URLs.
    #[serde(default)]
    pub crls: Vec<String>,
    /// Revocation checking: `required` (default; no fresh CRL → refuse) or `disabled`.
    #[serde(default)]
    pub revocation: RevocationMode,
    /// Extended key usage rule.
    #[serde(default)]
    pub eku: EkuPolicy,
    /// Require keyUsage with digitalSignature on the card certificate.
    #[serde(default = "default_true")]
    pub require_digital_signature: bool,
    /// Intermediates allowed between card certificate and anchor (JPKI: 0, single level).
    #[serde(default)]
    pub max_intermediates: usize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}
fn default_db_url() -> String {
    "sqlite://gateway.db".into()
}
fn default_max_connections() -> u32 {
    8
}
fn default_idle() -> u64 {
    120
}
fn default_absolute() -> u64 {
    12 * 3600
}
fn default_nonce_ttl() -> u64 {
    300
}
fn default_refresh() -> u64 {
    300
}
fn default_fetch_timeout() -> u64 {
    5
}
fn default_skew() -> u64 {
    900
}
fn default_agent_url() -> String {
    "http://127.0.0.1:24700".into()
}
fn default_true() -> bool {
    true
}
fn default_partner_rate() -> u32 {
    50
}
fn default_token_ttl() -> u64 {
    300
}
fn default_reload() -> u64 {
    10
}
fn default_scan_ms() -> u64 {
    1000
}

impl Config {
    /// Reads `file` (when given) and the `IPHR_GATEWAY_*` environment variables over it.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let config: Config = figment
            .merge(Env::prefixed("IPHR_GATEWAY_").split("__"))
            .extract()
            .map_err(Box::new)?;
        config.check()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn check(&self) -> Result<(), ConfigError> {
        crate::domain::origin::check_origin(&self.public_origin).map_err(|reason| {
            ConfigError::Value {
                key: "public_origin",
                reason,
            }
        })?;
        crate::http::kiosk::check_agent_url(&self.kiosk.agent_url).map_err(|reason| {
            ConfigError::Value {
                key: "kiosk.agent_url",
                reason,
            }
        })?;
        if let Some(p) = &self.partner {
            let url = p.public_url.trim_end_matches('/');
            if !url.starts_with("https://") || url["https://".len()..].contains('/') {
                return Err(ConfigError::Value {
                    key: "partner.public_url",
                    reason: "must be https://host[:port] without a path".into(),
                });
            }
        }
        if self.audit.checkpoint_interval_secs == 0 {
            return Err(ConfigError::Value {
                key: "audit.checkpoint_interval_secs",
                reason: "must be positive".into(),
            });
        }
        if let Some(sources) = &self.sources {
            sources.check()?;
        }
        if self.nonce.ttl_secs == 0 || self.session.idle_timeout_secs == 0 {
            return Err(ConfigError::Value {
                key: "nonce.ttl_secs / session.idle_timeout_secs",
                reason: "must be positive".into(),
            });
        }
        Ok(())
    }
}
