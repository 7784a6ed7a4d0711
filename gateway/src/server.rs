//! Building the gateway from its configuration, and [`serve`]: the TLS accept loop with graceful
//! shutdown. Background maintenance (CRL reload, purge of expired nonces and sessions) runs in
//! [`run_maintenance`].

use crate::clock::SharedClock;
use crate::config::Config;
use crate::domain::audit::CheckpointSigner;
use crate::domain::auth::{AuthConfig, Authenticator};
use crate::domain::certs::{AnchorSet, CertError, CertPolicy, RevocationMode};
use crate::domain::consent_desk::ConsentDesk;
use crate::domain::privacy::PrivacyDesk;
use crate::domain::revocation::{CrlSource, RevocationError, RevocationStore};
use crate::domain::session::SessionPolicy;
use crate::domain::trail::AuditTrail;
use crate::domain::verifier::TokenVerifier;
use crate::http::partner::{ClientCertificate, PartnerState, partner_router};
use crate::http::{AppState, router};
use crate::store::audit::{AuditError, AuditLog};
use crate::store::{Db, StoreError};
use crate::tls::TlsError;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Longest TLS handshake before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for open connections at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How recent the old card's sign-in must be to link a new card (D6: fresh card signature).
pub const LINK_FRESHNESS: Duration = Duration::from_secs(300);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// TLS.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A trust anchor file could not be read.
    #[error("trust anchor {path}: {reason}")]
    AnchorFile {
        /// File.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A trust anchor is not a usable CA certificate.
    #[error(transparent)]
    Anchor(#[from] CertError),
    /// A CRL source is not usable.
    #[error(transparent)]
    Revocation(#[from] RevocationError),
    /// Listening failed.
    #[error("listen: {0}")]
    Io(#[from] std::io::Error),
    /// The audit signing key could not be read or is not an Ed25519 PKCS#8 key.
    #[error("audit signing key {path}: {reason}")]
    AuditKey {
        /// File.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The audit writer could not start.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The source connectors could not be set up.
    #[error("sources: {0}")]
    Sources(String),
}

/// The PHR card issuer CA certificates (DER) of the configuration: holder certificates are
/// checked against them when a card is linked at a source.
pub fn phr_anchors(config: &Config) -> Result<Vec<Vec<u8>>, GatewayError> {
    let mut out = Vec::new();
    for t in &config.trust {
        if t.card_type == crate::domain::certs::CardType::Phr
            && t.key == crate::domain::certs::CardKey::Auth
        {
            for path in &t.anchors {
                out.push(read_cert_file(path)?);
            }
        }
    }
    Ok(out)
}

/// Everything [`serve`] needs.
#[derive(Clone)]
pub struct Gateway {
    /// Handler state.
    pub app: AppState,
    /// TLS.
    pub tls: Arc<ServerConfig>,
    /// The audit log writer (`None` in tests that audit in memory).
    pub audit: Option<AuditLog>,
}

impl Gateway {
    /// Builds the gateway: connects the database (migrations run), reads anchors and loads CRLs
    /// once (a CRL that fails to load is logged; its certificates are refused until it loads).
    pub async fn from_config(config: &Config, clock: SharedClock) -> Result<Gateway, GatewayError> {
        config.check()?;
        let tls = crate::tls::load(&config.tls.cert, &config.tls.key)?;
        let db = Db::connect(&config.database.url, config.database.max_connections).await?;
        let verifier = Arc::new(verifier_from_config(config)?);
        verifier.refresh_revocation().await;
        let kiosk = crate::http::kiosk::KioskPage::new(
            &config.kiosk.agent_url,
            config.session.idle_timeout_secs,
        )
        .map_err(|reason| crate::config::ConfigError::Value {
            key: "kiosk.agent_url",
            reason,
        })?;
        let audit = AuditLog::start(db.clone()).await?;
        let auth = Arc::new(Authenticator::new(
            db,
            clock.clone(),
            verifier,
            auth_config(config),
        ));
        let trail: Arc<dyn AuditTrail> = Arc::new(audit.clone());
        Ok(Gateway {
            app: AppState {
                consent: Arc::new(ConsentDesk::new(auth.clone(), trail.clone())),
                privacy: Arc::new(PrivacyDesk::new(
                    auth.clone(),
                    trail.clone(),
                    config.privacy.backup_purge_days,
                )),
                sources: match &config.sources {
                    Some(sc) => Some(
                        crate::sources::SourceHub::from_config(
                            sc,
                            auth.db().clone(),
                            trail,
                            clock,
                            phr_anchors(config)?,
                        )
                        .map_err(|e| GatewayError::Sources(e.to_string()))?,
                    ),
                    None => None,
                },
                auth,
                kiosk: Arc::new(kiosk),
            },
            tls,
            audit: Some(audit),
        })
    }
}

/// The authenticator settings of a configuration.
pub fn auth_config(config: &Config) -> AuthConfig {
    let ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    AuthConfig {
        origin: config.public_origin.clone(),
        nonce_ttl_ms: ms(config.nonce.ttl_secs),
        session: SessionPolicy {
            idle_ms: ms(config.session.idle_timeout_secs),
            absolute_ms: ms(config.session.absolute_timeout_secs),
        },
        link_freshness_ms: ms(LINK_FRESHNESS.as_secs()),
    }
}

/// Reads the anchor files and CRL sources of a configuration (CRLs are not loaded yet).
pub fn verifier_from_config(config: &Config) -> Result<TokenVerifier, GatewayError> {
    let mut sets = Vec::new();
    for trust in &config.trust {
        let mut anchors = Vec::new();
        for path in &trust.anchors {
            anchors.push(read_cert_file(path)?);
        }
        let sources = trust
            .crls
            .iter()
            .map(|s| CrlSource::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        if trust.revocation == RevocationMode::Disabled {
            tracing::warn!(card_type = ?trust.card_type, "revocation checking is DISABLED for this card type");
        }
        let store = RevocationStore::new(
            sources,
            Duration::from_secs(config.revocation.max_clock_skew_secs),
            Duration::from_secs(config.revocation.fetch_timeout_secs),
        );
        sets.push(AnchorSet::new(
            trust.card_type,
            trust.key,
            anchors,
            CertPolicy {
                eku: trust.eku,
                require_digital_signature: trust.require_digital_signature,
                revocation: trust.revocation,
                max_intermediates: Some(trust.max_intermediates),
            },
            Arc::new(store),
        )?);
    }
    Ok(TokenVerifier::new(sets))
}

/// Reads a DER or PEM certificate file.
fn read_cert_file(path: &PathBuf) -> Result<Vec<u8>, GatewayError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let bytes = std::fs::read(path).map_err(|e| GatewayError::AnchorFile {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if bytes.starts_with(b"-----BEGIN") {
        CertificateDer::from_pem_slice(&bytes)
            .map(|c| c.as_ref().to_vec())
            .map_err(|e| GatewayError::AnchorFile {
                path: path.clone(),
                reason: e.to_string(),
            })
    } else {
        Ok(bytes)
    }
}

/// Serves the kiosk and sign-in API on `listener` (TLS) until `shutdown` resolves, then lets open
/// connections finish for up to [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    serve_router(listener, gateway.tls.clone(), router(gateway.app), shutdown).await
}

/// Serves the partner API on `listener` with `tls` (mutual TLS, see
/// [`crate::tls::partner_from_der`]) until `shutdown` resolves.
pub async fn serve_partner(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    state: PartnerState,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    serve_router(listener, tls, partner_router(state), shutdown).await
}

/// The accept loop: TLS handshake with a timeout, then HTTP/1.1 on the connection; the peer's
/// client certificate, if any, is attached to every request as [`ClientCertificate`].
async fn serve_router(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
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
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| ClientCertificate(Arc::from(leaf.as_ref())));
            let app = app.map_request(move |mut request: axum::extract::Request<_>| {
                if let Some(certificate) = &certificate {
                    request.extensions_mut().insert(certificate.clone());
                }
                request
            });
            let service = TowerToHyperService::new(app);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period");
    }
    Ok(())
}

/// The checkpoint job of [`run_maintenance_with_audit`].
pub struct AuditCheckpoints {
    /// The process's audit writer.
    pub log: AuditLog,
    /// The checkpoint key.
    pub signer: Arc<CheckpointSigner>,
    /// Interval between checkpoints (G4: at most 5 minutes).
    pub every: Duration,
}

/// The configured audit checkpoint signer (`[audit] signing_key`), if any.
pub fn audit_signer(config: &Config) -> Result<Option<CheckpointSigner>, GatewayError> {
    let Some(path) = &config.audit.signing_key else {
        return Ok(None);
    };
    let key_error = |reason: String| GatewayError::AuditKey {
        path: path.clone(),
        reason,
    };
    let pkcs8 = std::fs::read(path).map_err(|e| key_error(e.to_string()))?;
    CheckpointSigner::from_pkcs8(&config.audit.origin, &pkcs8)
        .map(Some)
        .map_err(|e| key_error(e.to_string()))
}

/// Reloads CRLs every `crl_every` and purges expired nonces and sessions every `purge_every`,
/// until `shutdown`.
pub async fn run_maintenance(
    app: AppState,
    crl_every: Duration,
    purge_every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    run_maintenance_with_audit(app, crl_every, purge_every, None, shutdown).await;
}

/// [`run_maintenance`], plus a signed audit checkpoint every `audit.every` when given.
pub async fn run_maintenance_with_audit(
    app: AppState,
    crl_every: Duration,
    purge_every: Duration,
    audit: Option<AuditCheckpoints>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut crl_tick = tokio::time::interval(crl_every);
    let mut purge_tick = tokio::time::interval(purge_every);
    let mut checkpoint_tick = tokio::time::interval(
        audit
            .as_ref()
            .map_or(Duration::from_secs(3600), |a| a.every),
    );
    crl_tick.tick().await;
    loop {
        tokio::select! {
            _ = checkpoint_tick.tick(), if audit.is_some() => {
                if let Some(a) = &audit {
                    match a.log.checkpoint(&a.signer, app.auth.now_ms()).await {
                        Ok(c) => tracing::info!(size = c.checkpoint.size, "audit checkpoint signed"),
                        Err(e) => tracing::error!(error = %e, "audit checkpoint failed"),
                    }
                }
            }
            _ = crl_tick.tick() => {
                app.auth.verifier().refresh_revocation().await;
            }
            _ = purge_tick.tick() => {
                match app.auth.purge_expired().await {
                    Ok((n, s)) if n + s > 0 => tracing::debug!(nonces = n, sessions = s, "purged expired"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "purge failed"),
                }
                if let Err(e) = app.privacy.purge_expired().await {
                    tracing::warn!(error = %e, "purge of documents waiting for a card failed");
                }
            }
            () = &mut shutdown => break,
        }
    }
}
