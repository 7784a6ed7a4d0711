//! The partner listener built from the configuration (DESIGN §6): its mutual-TLS configuration,
//! the OAuth token service and the consent-checked FHIR API, over the partner services registered
//! in the database (reloaded periodically, so a registration or withdrawal takes effect without a
//! restart).

use crate::clock::SharedClock;
use crate::config::{Config, PartnerConfig};
use crate::domain::access::PartnerAccess;
use crate::domain::oauth::{AssertionAudience, AssertionTimes, RegisteredClient};
use crate::domain::partner_auth::{ClientDirectory, PartnerAuth, PartnerAuthConfig};
use crate::domain::rate_limit::RateLimiter;
use crate::domain::trail::AuditTrail;
use crate::http::partner::PartnerState;
use crate::server::GatewayError;
use crate::store::services::{self, Service, ServiceKind};
use crate::store::{Db, StoreError};
use rustls::ServerConfig;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Everything the partner listener serves with.
pub struct PartnerListener {
    /// Handler state.
    pub state: PartnerState,
    /// Mutual TLS.
    pub tls: Arc<ServerConfig>,
    /// The registered partners (shared with the TLS check and the token service).
    pub directory: ClientDirectory,
}

/// A registered partner service as an OAuth client; `None` without keys or certificate.
pub fn client_of(service: &Service) -> Option<RegisteredClient> {
    let jwks = serde_json::from_str(service.jwks.as_deref()?).ok()?;
    Some(RegisteredClient {
        client_id: service.id.clone(),
        jwks,
        certificate_sha256: vec![service.certificate_sha256?],
        scopes: service
            .scopes
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Loads the partner services into `directory` and their rates into `rates`; partners no longer
/// registered are removed. Returns how many are registered.
pub async fn reload(
    db: &Db,
    directory: &ClientDirectory,
    rates: &std::sync::RwLock<HashMap<String, u32>>,
) -> Result<usize, StoreError> {
    let mut partners = services::list(db, ServiceKind::Partner).await?;
    partners.extend(services::list(db, ServiceKind::Source).await?);
    let mut new_rates = HashMap::new();
    let mut live = Vec::new();
    for s in &partners {
        match client_of(s) {
            Some(client) => {
                new_rates.insert(
                    s.id.clone(),
                    u32::try_from(s.rate_per_sec.max(1)).unwrap_or(u32::MAX),
                );
                live.push(s.id.clone());
                directory.register(client);
            }
            None => {
                tracing::warn!(partner = %s.id, "partner without keys or certificate: not served");
            }
        }
    }
    for id in directory.ids() {
        if !live.contains(&id) {
            directory.remove(&id);
        }
    }
    *rates
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = new_rates;
    Ok(live.len())
}

/// Builds the partner listener of `partner` (TLS files default to the main ones).
pub async fn build(
    config: &Config,
    partner: &PartnerConfig,
    db: Db,
    clock: SharedClock,
    trail: Arc<dyn AuditTrail>,
) -> Result<PartnerListener, GatewayError> {
    let directory = ClientDirectory::default();
    let rates = Arc::new(std::sync::RwLock::new(HashMap::new()));
    let n = reload(&db, &directory, &rates).await?;
    tracing::info!(partners = n, "partner services loaded");
    let base = partner.public_url.trim_end_matches('/').to_owned();
    let auth = PartnerAuth::new(
        db.clone(),
        clock.clone(),
        directory.clone(),
        PartnerAuthConfig {
            audience: AssertionAudience {
                issuer: base.clone(),
                token_endpoint: format!("{base}/oauth/token"),
            },
            times: AssertionTimes::default(),
            token_ttl_ms: i64::try_from(partner.token_ttl_secs.saturating_mul(1000))
                .unwrap_or(300_000),
        },
    );
    let tls_files = partner.tls.as_ref().unwrap_or(&config.tls);
    let registry_directory = directory.clone();
    let tls = crate::tls::load_partner(
        &tls_files.cert,
        &tls_files.key,
        Arc::new(move |der: &[u8]| registry_directory.knows_certificate(der)),
    )?;
    let importer = crate::importer::Importer::new(db.clone(), trail.clone(), clock.clone());
    Ok(PartnerListener {
        state: PartnerState {
            auth: Arc::new(auth),
            access: Arc::new(PartnerAccess::with_bundle_cache(
                db,
                clock.clone(),
                trail,
                partner.everything_cache_mib.saturating_mul(1 << 20),
            )),
            limiter: Arc::new(RateLimiter::new()),
            rates,
            default_rate: partner.default_rate_per_sec.max(1),
            fhir_base: format!("{base}/fhir"),
            exports: Default::default(),
            importer: Some(importer),
            clock,
        },
        tls,
        directory,
    })
}

/// Reloads the partners every `every` until `shutdown`.
pub async fn reload_loop(
    db: Db,
    directory: ClientDirectory,
    rates: Arc<std::sync::RwLock<HashMap<String, u32>>>,
    every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {
                if let Err(e) = reload(&db, &directory, &rates).await {
                    tracing::warn!(error = %e, "reloading partners failed");
                }
            }
            () = &mut shutdown => return,
        }
    }
}
