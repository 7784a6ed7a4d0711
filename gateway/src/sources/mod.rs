//! The gateway's connectors to sources (`docs/source-protocol.md` §7, issue 7): linking a card at
//! a source, card-signed grants, and pulls — on demand at the kiosk right after consent, and
//! scheduled while consent and grant last.
//!
//! - [`client`]: one mTLS HTTP client per source (timeouts, bounded retries with backoff and
//!   jitter, body checks);
//! - [`breaker`]: one circuit breaker per source;
//! - [`SourceHub`] (here): the kiosk operations ([`SourceHub::link`],
//!   [`SourceHub::grant_request`], [`SourceHub::submit_grant`]), pulls with progress
//!   ([`SourceHub::pull`]), scheduled pulls ([`run_scheduled`]). Every file goes through the
//!   importer ([`crate::importer::Importer::import_pulled`]): all-or-nothing, idempotent, linked to
//!   the grant's person. Every link, grant, pull and refusal is an audit entry (actor
//!   `source:<id>`).

pub mod breaker;
pub mod client;

use crate::clock::SharedClock;
use crate::config::SourcesConfig;
use crate::domain::consent::{Category, ConsentState, DenyReason, in_force};
use crate::domain::trail::{AuditTrail, SourceAction, SourceEvent, TrailEvent};
use crate::importer::{Importer, ImporterError};
use crate::store::records::{self, ImportOutcome};
use crate::store::services::{self, ServiceKind};
use crate::store::sources::{self as store, PendingNonce, SourceLink, StoredGrant};
use crate::store::{Db, StoreError};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use breaker::{Breaker, BreakerView};
use card_agent::phr::verify::{
    GrantExpectation, ServiceBinding, ServiceGrant, VerifyError, verify_binding, verify_grant,
    verify_holder_cert,
};
use client::{ClientIdentity, ClientSettings, SourceClient, SourceError};
use data_converter::named::FileKind;
use iphr_source::protocol::{
    self, Credential, ErrorCode, FileEntry, GrantAlg, GrantHeader, LinkRequest, NONCE_TTL_SECS,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a pull holds its lease on a (person, source) pair (renewed per page).
pub const LEASE_MS: i64 = 10 * 60 * 1000;
/// Finished pulls remembered for progress queries.
pub const MAX_REMEMBERED_PULLS: usize = 1000;

/// Why a kiosk operation or a pull was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SourcesError {
    /// No such source configured.
    #[error("unknown source")]
    UnknownSource,
    /// The person has no link at the source.
    #[error("not linked at this source")]
    NotLinked,
    /// No consent in force towards the source.
    #[error("no consent in force: {}", .0.as_str())]
    NoConsent(DenyReason),
    /// The holder certificate is not the signed-in card's.
    #[error("the holder certificate is not the signed-in card's")]
    NotYourCard,
    /// A certificate or the grant does not verify.
    #[error("card data refused: {0}")]
    Card(#[from] VerifyError),
    /// The binding or grant names another service than this source.
    #[error("signed for another service")]
    WrongService,
    /// The pseudonym is linked here to another person.
    #[error("the pseudonym is linked to another person")]
    PseudonymTaken,
    /// The nonce is unknown, expired, another session's or used already.
    #[error("nonce unknown or already used")]
    NonceReplayed,
    /// The grant covers a category the person did not consent to for this source.
    #[error("grant scope beyond the consent")]
    ScopeBeyondConsent,
    /// No grant stored, or it expired.
    #[error("no unexpired grant")]
    NoGrant,
    /// Only PHR card credentials are linked at the kiosk for now.
    #[error("unsupported credential")]
    Unsupported,
    /// The source failed or refused.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The source answered something that does not match the request.
    #[error("the source answered for another service or pseudonym")]
    SourceMismatch,
    /// Another pull of the pair runs (here or on another gateway).
    #[error("another pull of this person and source is running")]
    Busy,
    /// No such pull.
    #[error("unknown pull")]
    UnknownPull,
    /// The audit write failed; nothing was done.
    #[error("audit trail unavailable: {0}")]
    Audit(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SourcesError {
    /// A stable code (API and audit).
    pub fn code(&self) -> &'static str {
        match self {
            SourcesError::UnknownSource => "unknown_source",
            SourcesError::NotLinked => "not_linked",
            SourcesError::NoConsent(DenyReason::Expired) => "consent_expired",
            SourcesError::NoConsent(_) => "no_consent",
            SourcesError::NotYourCard => "not_your_card",
            SourcesError::Card(VerifyError::NotValidNow { .. }) => "grant_expired",
            SourcesError::Card(VerifyError::WrongService { .. }) | SourcesError::WrongService => {
                "wrong_service"
            }
            SourcesError::Card(VerifyError::WrongPseudonym) => "wrong_person",
            SourcesError::Card(VerifyError::BadSignature { .. }) => "bad_signature",
            SourcesError::Card(_) => "card_data_invalid",
            SourcesError::PseudonymTaken => "already_linked",
            SourcesError::NonceReplayed => "nonce_replayed",
            SourcesError::ScopeBeyondConsent => "scope_beyond_consent",
            SourcesError::NoGrant => "no_grant",
            SourcesError::Unsupported => "unsupported_credential",
            SourcesError::Source(e) => e.code(),
            SourcesError::SourceMismatch => "source_mismatch",
            SourcesError::Busy => "busy",
            SourcesError::UnknownPull => "unknown_pull",
            SourcesError::Audit(_) | SourcesError::Store(_) => "unavailable",
        }
    }

    /// What the worker reads at the kiosk.
    pub fn message_ja(&self) -> String {
        message_ja(self.code())
    }
}

/// The Japanese kiosk message of an error code.
pub fn message_ja(code: &str) -> String {
    match code {
        "unknown_source" => "この提供元は登録されていません。".into(),
        "not_linked" => "この提供元とはまだ連携していません。".into(),
        "no_consent" => "この提供元への同意がありません。先に同意してください。".into(),
        "consent_expired" => "この提供元への同意の期間が終わっています。".into(),
        "not_your_card" => "サインインしたカードの証明書ではありません。".into(),
        "grant_expired" => {
            "取得の許可の期限が切れています。カードで新しく許可してください。".into()
        }
        "wrong_service" => "別の提供元あての署名です。".into(),
        "wrong_person" => "別の方のための署名です。".into(),
        "bad_signature" | "card_data_invalid" => "カードの署名を確認できませんでした。".into(),
        "already_linked" => "この提供元の利用者番号は別の方と連携済みです。".into(),
        "nonce_replayed" | "nonce_unknown" => {
            "この許可はすでに使われたか期限切れです。もう一度やり直してください。".into()
        }
        "scope_beyond_consent" => "同意した範囲を超える許可です。".into(),
        "no_grant" => "取得の許可（カードの署名）がありません。".into(),
        "unsupported_credential" => "このカードでの連携にはまだ対応していません。".into(),
        "breaker_open" => {
            "提供元が繰り返し応答しないため、しばらく取得を控えています。後で自動的に再試行します。"
                .into()
        }
        "timeout" | "connection" | "unavailable" | "internal" => {
            "提供元に接続できませんでした。後で自動的に再試行します。".into()
        }
        "certificate_not_registered" => {
            "提供元の証明書が登録されたものと一致しないため、取得を中止しました。".into()
        }
        "truncated" | "size_mismatch" | "digest_mismatch" => {
            "ファイルの受信が途中で途切れたため、保存していません。後で再試行します。".into()
        }
        "unknown_format" => "提供元から不明な形式のデータが届いたため、保存していません。".into(),
        "enrollment_code_invalid" => "登録コードが正しくないか、有効期限が切れています。".into(),
        "certificate_invalid" => "提供元がカードの証明書を受け付けませんでした。".into(),
        "source_mismatch" => "提供元の応答が要求と一致しません。".into(),
        "files_refused" => "一部のファイルを受け付けませんでした（記録に残しています）。".into(),
        "busy" => "この提供元からの取得はすでに実行中です。".into(),
        "grant_malformed" | "wrong_audience" | "grant_not_yet_valid" | "unknown_person" => {
            "提供元が許可を受け付けませんでした。カードで新しく許可してください。".into()
        }
        _ => "処理できませんでした。係の者にお声がけください。".into(),
    }
}

/// Source refusals that make the stored grant unusable (§6: stop until a new one is signed).
fn refuses_grant(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::GrantMalformed
            | ErrorCode::BadSignature
            | ErrorCode::GrantExpired
            | ErrorCode::GrantNotYetValid
            | ErrorCode::NonceUnknown
            | ErrorCode::NonceReplayed
            | ErrorCode::WrongService
            | ErrorCode::WrongAudience
            | ErrorCode::UnknownPerson
    )
}

/// The signed-in kiosk user (from the session).
#[derive(Debug, Clone)]
pub struct KioskUser {
    /// The person.
    pub person_id: String,
    /// Hash of the session id.
    pub session_hash: [u8; 32],
    /// SHA-256 of the signed-in card's certificate.
    pub card_fingerprint: Vec<u8>,
}

/// A pull's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PullState {
    /// Running.
    Running,
    /// Every listed file stored or already stored.
    Done,
    /// Some files were refused or could not be fetched; the rest is stored.
    Partial,
    /// Nothing could be pulled (source down, breaker open).
    Failed,
    /// Refused before anything was fetched (no grant, consent, the source refused the grant).
    Refused,
}

impl PullState {
    fn as_str(self) -> &'static str {
        match self {
            PullState::Running => "running",
            PullState::Done => "ok",
            PullState::Partial => "partial",
            PullState::Failed => "failed",
            PullState::Refused => "refused",
        }
    }
}

/// Progress of one pull (the kiosk polls it).
#[derive(Debug, Clone, Serialize)]
pub struct PullProgress {
    /// Pull id.
    pub id: String,
    /// The source.
    pub source_id: String,
    /// The person.
    #[serde(skip)]
    pub person_id: String,
    /// State.
    pub state: PullState,
    /// Files listed by the source.
    pub listed: u64,
    /// Files downloaded.
    pub fetched: u64,
    /// Files stored (new).
    pub stored: u64,
    /// Files found already stored.
    pub duplicates: u64,
    /// Files refused (nothing of them stored).
    pub refused: u64,
    /// Files that could not be fetched (retried on the next pull).
    pub failed: u64,
    /// Resources stored.
    pub resources: u64,
    /// Error code, if any.
    pub error: Option<String>,
    /// The error for the worker, in Japanese.
    pub message: Option<String>,
    /// Start and end (ms).
    pub started_at_ms: i64,
    /// End (ms).
    pub finished_at_ms: Option<i64>,
}

/// A shared progress record.
pub type ProgressHandle = Arc<Mutex<PullProgress>>;

fn update(p: &ProgressHandle, f: impl FnOnce(&mut PullProgress)) {
    f(&mut p.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
}

/// A snapshot of a progress record.
pub fn snapshot(p: &ProgressHandle) -> PullProgress {
    p.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// One source as the kiosk shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SourceView {
    /// Service id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Whether the person linked their card there.
    pub linked: bool,
    /// Whether a consent is in force.
    pub consent_in_force: bool,
    /// Grant expiry (ms), if a grant is stored.
    pub grant_expires_at_ms: Option<i64>,
    /// Last pull end (ms).
    pub last_pull_ms: Option<i64>,
    /// Last pull outcome.
    pub last_outcome: Option<String>,
    /// Last pull error code.
    pub last_error: Option<String>,
    /// Files from this source stored in the person's record.
    pub files_stored: i64,
    /// The source's circuit breaker.
    pub breaker: BreakerView,
}

/// What the card signs for a grant (`phr sign-grant`).
#[derive(Debug, Clone, Serialize)]
pub struct GrantRequest {
    /// Service id (field `80`).
    pub service: String,
    /// Pseudonym (field `81`).
    pub pseudonym: String,
    /// Audience: this gateway (field `82`).
    pub audience: String,
    /// The source's nonce, base64url (field `83`).
    pub nonce: String,
    /// The same nonce, hex (`card-agent phr sign-grant --nonce`).
    pub nonce_hex: String,
    /// Card categories (`A:checkup`), the consented ones.
    pub scope: Vec<String>,
    /// Expiry, Unix seconds (the consent's end).
    pub expires_at: u32,
    /// Seconds from now to `expires_at` (`card-agent phr sign-grant --ttl`).
    pub ttl_secs: u32,
    /// Until when the nonce can be redeemed (ms).
    pub nonce_expires_at_ms: i64,
}

/// The hub's settings.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// This gateway's audience string.
    pub gateway_id: String,
    /// Files per list page.
    pub page_size: u32,
}

/// Everything about sources.
pub struct SourceHub {
    db: Db,
    importer: Importer,
    trail: Arc<dyn AuditTrail>,
    clock: SharedClock,
    settings: HubSettings,
    clients: BTreeMap<String, Arc<SourceClient>>,
    pulls: Mutex<HashMap<String, ProgressHandle>>,
    lease_owner: String,
    phr_anchors: Vec<Vec<u8>>,
    rng: ring::rand::SystemRandom,
}

/// Why the hub could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum HubSetupError {
    /// A TLS file or setting.
    #[error(transparent)]
    Client(#[from] client::ClientSetupError),
    /// The random generator failed.
    #[error("random generator failed")]
    Random,
}

impl SourceHub {
    /// A hub over these clients. `phr_anchors`: the PHR card issuer CA certificates (DER) holder
    /// certificates are checked against at linking.
    pub fn new(
        settings: HubSettings,
        clients: Vec<SourceClient>,
        db: Db,
        trail: Arc<dyn AuditTrail>,
        clock: SharedClock,
        phr_anchors: Vec<Vec<u8>>,
    ) -> Result<Arc<SourceHub>, HubSetupError> {
        let rng = ring::rand::SystemRandom::new();
        let owner: [u8; 16] =
            crate::domain::random_bytes(&rng).map_err(|_| HubSetupError::Random)?;
        Ok(Arc::new(SourceHub {
            importer: Importer::new(db.clone(), trail.clone(), clock.clone()),
            db,
            trail,
            clock,
            settings,
            clients: clients
                .into_iter()
                .map(|c| (c.id().to_owned(), Arc::new(c)))
                .collect(),
            pulls: Mutex::new(HashMap::new()),
            lease_owner: crate::domain::audit::hex(&owner),
            phr_anchors,
            rng,
        }))
    }

    /// A hub from `[sources]`.
    pub fn from_config(
        config: &SourcesConfig,
        db: Db,
        trail: Arc<dyn AuditTrail>,
        clock: SharedClock,
        phr_anchors: Vec<Vec<u8>>,
    ) -> Result<Arc<SourceHub>, HubSetupError> {
        let identity = ClientIdentity::from_pem_files(&config.client_cert, &config.client_key)?;
        let settings = ClientSettings {
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            max_attempts: config.max_attempts,
            backoff_base: Duration::from_millis(config.backoff_base_ms),
            max_file_bytes: config.max_file_bytes,
        };
        let mut clients = Vec::new();
        for s in &config.source {
            let cas = client::read_ca_file(&s.server_ca)?;
            clients.push(SourceClient::new(
                &s.id,
                &s.url,
                &cas,
                &identity,
                settings,
                Breaker::new(
                    config.breaker_failures,
                    Duration::from_secs(config.breaker_open_secs),
                ),
            )?);
        }
        SourceHub::new(
            HubSettings {
                gateway_id: config.gateway_id.clone(),
                page_size: config.page_size,
            },
            clients,
            db,
            trail,
            clock,
            phr_anchors,
        )
    }

    /// The configured source ids.
    pub fn source_ids(&self) -> Vec<String> {
        self.clients.keys().cloned().collect()
    }

    /// A source's client (state, counters).
    pub fn client(&self, source_id: &str) -> Option<&Arc<SourceClient>> {
        self.clients.get(source_id)
    }

    fn client_of(&self, source_id: &str) -> Result<&Arc<SourceClient>, SourcesError> {
        self.clients
            .get(source_id)
            .ok_or(SourcesError::UnknownSource)
    }

    async fn consent(
        &self,
        person_id: &str,
        source_id: &str,
    ) -> Result<ConsentState, SourcesError> {
        let head = crate::store::consent::head(&self.db, person_id, source_id).await?;
        in_force(head.as_ref(), self.clock.now_ms())
            .cloned()
            .map_err(SourcesError::NoConsent)
    }

    async fn audit(&self, event: SourceEvent) -> Result<(), SourcesError> {
        self.trail
            .record(TrailEvent::Source(event))
            .await
            .map_err(SourcesError::Audit)
    }

    /// Audits a refusal of a kiosk operation (a failed audit write is logged: the operation is
    /// refused anyway).
    async fn audit_refusal(
        &self,
        user: &KioskUser,
        source_id: &str,
        action: SourceAction,
        e: &SourcesError,
    ) {
        let event = SourceEvent {
            at_ms: self.clock.now_ms(),
            source_id: source_id.to_owned(),
            person_id: Some(user.person_id.clone()),
            action,
            outcome: if matches!(e, SourcesError::Store(_) | SourcesError::Audit(_)) {
                "error"
            } else {
                "deny"
            },
            detail: serde_json::json!({ "reason": e.code() }),
        };
        if let Err(err) = self.audit(event).await {
            tracing::error!(error = %err, "audit of a source refusal failed");
        }
    }

    /// The sources with the person's link, grant, last pull and the breaker state.
    pub async fn overview(&self, person_id: &str) -> Result<Vec<SourceView>, SourcesError> {
        let links = store::of_person(&self.db, person_id).await?;
        let heads = crate::store::consent::heads_of_person(&self.db, person_id).await?;
        let now = self.clock.now_ms();
        let mut out = Vec::new();
        for (id, client) in &self.clients {
            let name = services::get(&self.db, id)
                .await?
                .map_or_else(|| id.clone(), |s| s.name);
            let link = links.iter().find(|l| &l.source_id == id);
            let head = heads.iter().find(|(s, _)| s == id).map(|(_, h)| h);
            out.push(SourceView {
                id: id.clone(),
                name,
                linked: link.is_some(),
                consent_in_force: in_force(head, now).is_ok(),
                grant_expires_at_ms: link.and_then(|l| l.grant.as_ref()).map(|g| g.expires_ms),
                last_pull_ms: link.and_then(|l| l.last_pull_ms),
                last_outcome: link.and_then(|l| l.last_outcome.clone()),
                last_error: link.and_then(|l| l.last_error.clone()),
                files_stored: store::files_stored(&self.db, person_id, id).await?,
                breaker: client.breaker().view(),
            });
        }
        Ok(out)
    }

    /// Verifies the PHR card's holder certificate (it must be the signed-in card's) and the
    /// service binding for `source_id`.
    fn verify_phr(
        &self,
        source_id: &str,
        holder_der: &[u8],
        binding_der: &[u8],
        now_s: i64,
    ) -> Result<ServiceBinding, SourcesError> {
        let mut last = None;
        let holder = self
            .phr_anchors
            .iter()
            .find_map(|ca| match verify_holder_cert(holder_der, ca, now_s) {
                Ok(h) => Some(h),
                Err(e) => {
                    last = Some(e);
                    None
                }
            })
            .ok_or_else(|| {
                SourcesError::Card(last.unwrap_or(VerifyError::WrongIssuer {
                    what: "holder certificate",
                }))
            })?;
        let binding = verify_binding(binding_der, &holder, now_s)?;
        if binding.service != source_id {
            return Err(SourcesError::WrongService);
        }
        Ok(binding)
    }

    /// Links the signed-in card at a source with the person's enrollment code (§3).
    pub async fn link(
        &self,
        user: &KioskUser,
        source_id: &str,
        enrollment_code: &str,
        credential: Credential,
    ) -> Result<SourceView, SourcesError> {
        let result = self
            .link_inner(user, source_id, enrollment_code, credential)
            .await;
        match result {
            Ok(()) => {
                let views = self.overview(&user.person_id).await?;
                views
                    .into_iter()
                    .find(|v| v.id == source_id)
                    .ok_or(SourcesError::UnknownSource)
            }
            Err(e) => {
                if !matches!(e, SourcesError::UnknownSource) {
                    self.audit_refusal(user, source_id, SourceAction::Link, &e)
                        .await;
                }
                Err(e)
            }
        }
    }

    async fn link_inner(
        &self,
        user: &KioskUser,
        source_id: &str,
        enrollment_code: &str,
        credential: Credential,
    ) -> Result<(), SourcesError> {
        let client = self.client_of(source_id)?;
        self.consent(&user.person_id, source_id).await?;
        let Credential::Phr {
            holder_certificate,
            binding_certificate,
        } = &credential
        else {
            return Err(SourcesError::Unsupported);
        };
        if crate::domain::sha256(holder_certificate).as_slice() != user.card_fingerprint {
            return Err(SourcesError::NotYourCard);
        }
        let now = self.clock.now_ms();
        let binding = self.verify_phr(
            source_id,
            holder_certificate,
            binding_certificate,
            now / 1000,
        )?;
        let answer = client
            .link(&LinkRequest {
                enrollment_code: enrollment_code.to_owned(),
                credential: credential.clone(),
            })
            .await?;
        if answer.service != source_id || answer.pseudonym != binding.pseudonym {
            return Err(SourcesError::SourceMismatch);
        }
        let link = SourceLink {
            person_id: user.person_id.clone(),
            source_id: source_id.to_owned(),
            pseudonym: binding.pseudonym.clone(),
            credential_type: "phr".into(),
            holder_certificate: Some(holder_certificate.clone()),
            binding_certificate: binding_certificate.clone(),
            linked_at_ms: now,
            grant: None,
            cursor: None,
            last_pull_ms: None,
            last_outcome: None,
            last_error: None,
        };
        self.audit(SourceEvent {
            at_ms: now,
            source_id: source_id.to_owned(),
            person_id: Some(user.person_id.clone()),
            action: SourceAction::Link,
            outcome: "permit",
            detail: serde_json::json!({ "credential": "phr" }),
        })
        .await?;
        if !store::put_link(&self.db, &link).await? {
            return Err(SourcesError::PseudonymTaken);
        }
        Ok(())
    }

    /// Asks the source for a nonce and returns what the card must sign (§4 steps 1–2).
    pub async fn grant_request(
        &self,
        user: &KioskUser,
        source_id: &str,
    ) -> Result<GrantRequest, SourcesError> {
        let result = self.grant_request_inner(user, source_id).await;
        if let Err(e) = &result
            && !matches!(e, SourcesError::UnknownSource)
        {
            self.audit_refusal(user, source_id, SourceAction::Grant, e)
                .await;
        }
        result
    }

    async fn grant_request_inner(
        &self,
        user: &KioskUser,
        source_id: &str,
    ) -> Result<GrantRequest, SourcesError> {
        let client = self.client_of(source_id)?;
        let consent = self.consent(&user.person_id, source_id).await?;
        let link = store::get(&self.db, &user.person_id, source_id)
            .await?
            .ok_or(SourcesError::NotLinked)?;
        let answer = client.nonce().await?;
        let Some(nonce_bytes) = answer.nonce_bytes() else {
            return Err(SourcesError::Source(SourceError::Malformed(
                "the nonce is not 32 bytes of base64url".into(),
            )));
        };
        let now = self.clock.now_ms();
        let nonce_expires = now.saturating_add(NONCE_TTL_SECS * 1000);
        store::put_nonce(
            &self.db,
            &PendingNonce {
                nonce: answer.nonce.clone(),
                source_id: source_id.to_owned(),
                person_id: user.person_id.clone(),
                expires_at_ms: nonce_expires,
            },
            &user.session_hash,
        )
        .await?;
        Ok(GrantRequest {
            service: source_id.to_owned(),
            pseudonym: link.pseudonym,
            audience: self.settings.gateway_id.clone(),
            nonce: answer.nonce,
            nonce_hex: hex::encode(nonce_bytes),
            scope: consent
                .categories
                .iter()
                .map(|c| c.as_str().replacen('.', ":", 1))
                .collect(),
            expires_at: u32::try_from(consent.period_end_ms / 1000).unwrap_or(u32::MAX),
            ttl_secs: u32::try_from((consent.period_end_ms - now) / 1000).unwrap_or(0),
            nonce_expires_at_ms: nonce_expires,
        })
    }

    /// Verifies and stores the card-signed grant, then starts a pull in the background; returns
    /// the pull's id.
    pub async fn submit_grant(
        self: &Arc<Self>,
        user: &KioskUser,
        source_id: &str,
        grant: &[u8],
        signature: &[u8],
    ) -> Result<String, SourcesError> {
        let result = self
            .submit_grant_inner(user, source_id, grant, signature)
            .await;
        match result {
            Ok(()) => Ok(self.start_pull(&user.person_id, source_id)),
            Err(e) => {
                if !matches!(e, SourcesError::UnknownSource) {
                    self.audit_refusal(user, source_id, SourceAction::Grant, &e)
                        .await;
                }
                Err(e)
            }
        }
    }

    async fn submit_grant_inner(
        &self,
        user: &KioskUser,
        source_id: &str,
        grant_bytes: &[u8],
        signature: &[u8],
    ) -> Result<(), SourcesError> {
        self.client_of(source_id)?;
        let consent = self.consent(&user.person_id, source_id).await?;
        let link = store::get(&self.db, &user.person_id, source_id)
            .await?
            .ok_or(SourcesError::NotLinked)?;
        let parsed = ServiceGrant::parse(grant_bytes).map_err(VerifyError::from)?;
        let now = self.clock.now_ms();
        let nonce = URL_SAFE_NO_PAD.encode(&parsed.nonce);
        if !store::take_nonce(
            &self.db,
            &nonce,
            source_id,
            &user.person_id,
            &user.session_hash,
            now,
        )
        .await?
        {
            return Err(SourcesError::NonceReplayed);
        }
        let holder = link
            .holder_certificate
            .as_deref()
            .ok_or(SourcesError::Unsupported)?;
        let binding = self.verify_phr(source_id, holder, &link.binding_certificate, now / 1000)?;
        let verified = verify_grant(
            grant_bytes,
            signature,
            &binding,
            &GrantExpectation {
                audience: &self.settings.gateway_id,
                nonce: &parsed.nonce,
                now: now / 1000,
            },
        )?;
        let consented: Vec<String> = consent
            .categories
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect();
        // The gateway asks for the consented kinds one by one, never a unit's `*`.
        let covered = |c: &card_agent::phr::consent::Category| {
            c.kind != "*"
                && consented.iter().any(|g| {
                    protocol::card_category(g).is_some_and(|k| k.unit == c.unit && k.kind == c.kind)
                })
        };
        if verified.scope.is_empty() || !verified.scope.iter().all(covered) {
            return Err(SourcesError::ScopeBeyondConsent);
        }
        // Redeem the nonce at the source now (a one-file list, with retries): a grant is stored
        // only once the source accepted it, so a source that is down now fails this kiosk step
        // instead of refusing the grant later (an unredeemed nonce expires after 5 minutes).
        let stored = StoredGrant {
            bytes: grant_bytes.to_vec(),
            signature: signature.to_vec(),
            alg: GrantAlg::P256.as_str().into(),
            expires_ms: i64::from(verified.expires_at) * 1000,
        };
        self.client_of(source_id)?
            .list(&grant_header(&stored), None, 1)
            .await?;
        let expires_ms = stored.expires_ms;
        self.audit(SourceEvent {
            at_ms: now,
            source_id: source_id.to_owned(),
            person_id: Some(user.person_id.clone()),
            action: SourceAction::Grant,
            outcome: "permit",
            detail: serde_json::json!({
                "expires_at_ms": expires_ms,
                "scope": verified.scope.iter().map(|c| format!("{}{}", protocol::unit_letter(c.unit), c.kind)).collect::<Vec<_>>(),
            }),
        })
        .await?;
        store::set_grant(&self.db, &user.person_id, source_id, &stored).await?;
        Ok(())
    }

    fn new_progress(&self, person_id: &str, source_id: &str) -> ProgressHandle {
        let id: [u8; 16] = crate::domain::random_bytes(&self.rng).unwrap_or_default();
        let id = URL_SAFE_NO_PAD.encode(id);
        let progress = Arc::new(Mutex::new(PullProgress {
            id: id.clone(),
            source_id: source_id.to_owned(),
            person_id: person_id.to_owned(),
            state: PullState::Running,
            listed: 0,
            fetched: 0,
            stored: 0,
            duplicates: 0,
            refused: 0,
            failed: 0,
            resources: 0,
            error: None,
            message: None,
            started_at_ms: self.clock.now_ms(),
            finished_at_ms: None,
        }));
        let mut pulls = self
            .pulls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pulls.len() >= MAX_REMEMBERED_PULLS {
            pulls.retain(|_, p| snapshot(p).state == PullState::Running);
        }
        pulls.insert(id, progress.clone());
        progress
    }

    /// Starts a pull now with the person's stored grant (the kiosk's 「今すぐ取り込む」); the
    /// pull itself refuses without a live grant or consent, visible in its progress.
    pub fn pull_now(
        self: &Arc<Self>,
        person_id: &str,
        source_id: &str,
    ) -> Result<String, SourcesError> {
        self.client_of(source_id)?;
        Ok(self.start_pull(person_id, source_id))
    }

    /// Starts a pull in the background; returns its id.
    pub fn start_pull(self: &Arc<Self>, person_id: &str, source_id: &str) -> String {
        let progress = self.new_progress(person_id, source_id);
        let id = snapshot(&progress).id;
        let hub = self.clone();
        tokio::spawn(async move {
            hub.run_pull(&progress).await;
        });
        id
    }

    /// Progress of a pull of the person.
    pub fn progress(&self, person_id: &str, pull_id: &str) -> Result<PullProgress, SourcesError> {
        let pulls = self
            .pulls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pulls
            .get(pull_id)
            .map(snapshot)
            .filter(|p| p.person_id == person_id)
            .ok_or(SourcesError::UnknownPull)
    }

    /// Pulls now (waiting for the end), with a progress record the caller may watch.
    pub async fn pull(&self, person_id: &str, source_id: &str) -> PullProgress {
        let progress = self.new_progress(person_id, source_id);
        self.run_pull(&progress).await;
        snapshot(&progress)
    }

    /// A progress record for [`SourceHub::pull_with`] (CLI progress bars).
    pub fn prepare_pull(&self, person_id: &str, source_id: &str) -> ProgressHandle {
        self.new_progress(person_id, source_id)
    }

    /// Runs a pull prepared with [`SourceHub::prepare_pull`].
    pub async fn pull_with(&self, progress: &ProgressHandle) -> PullProgress {
        self.run_pull(progress).await;
        snapshot(progress)
    }

    /// Takes the lease, pulls, records the outcome, audits, gives the lease back.
    async fn run_pull(&self, progress: &ProgressHandle) {
        let (person, source) = {
            let p = snapshot(progress);
            (p.person_id, p.source_id)
        };
        let now = self.clock.now_ms();
        let outcome = match store::take_lease(
            &self.db,
            &person,
            &source,
            &self.lease_owner,
            now,
            now + LEASE_MS,
        )
        .await
        {
            Ok(true) => {
                let r = self.pull_inner(&person, &source, progress).await;
                if let Err(e) =
                    store::release_lease(&self.db, &person, &source, &self.lease_owner).await
                {
                    tracing::warn!(error = %e, "lease release failed (it expires)");
                }
                r
            }
            Ok(false) => {
                // No link at all, or another pull holds the lease.
                match store::get(&self.db, &person, &source).await {
                    Ok(Some(_)) => Err(SourcesError::Busy),
                    Ok(None) => Err(SourcesError::NotLinked),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        };
        let end = self.clock.now_ms();
        // The final state is published only after the pull's record and audit event are written,
        // so whoever sees the pull finished also finds it on the trail.
        let mut p = snapshot(progress);
        p.finished_at_ms = Some(end);
        match &outcome {
            Ok(()) if p.refused + p.failed == 0 => p.state = PullState::Done,
            Ok(()) => {
                p.state = if p.stored + p.duplicates == 0 && p.refused == 0 {
                    PullState::Failed
                } else {
                    PullState::Partial
                };
                if p.error.is_none() {
                    p.error = Some("files_refused".into());
                }
            }
            Err(e) => {
                p.state = match e {
                    SourcesError::Source(s) if !matches!(s, SourceError::Refused { .. }) => {
                        PullState::Failed
                    }
                    SourcesError::Store(_) | SourcesError::Audit(_) => PullState::Failed,
                    _ => PullState::Refused,
                };
                p.error = Some(e.code().to_owned());
            }
        }
        p.message = p.error.as_deref().map(message_ja);
        if !matches!(outcome, Err(SourcesError::Busy | SourcesError::NotLinked))
            && let Err(e) = store::record_pull(
                &self.db,
                &person,
                &source,
                end,
                p.state.as_str(),
                p.error.as_deref(),
            )
            .await
        {
            tracing::error!(error = %e, "recording a pull's outcome failed");
        }
        let outcome_str = match p.state {
            PullState::Done => "permit",
            PullState::Refused => "deny",
            _ => "error",
        };
        let event = SourceEvent {
            at_ms: end,
            source_id: source.clone(),
            person_id: Some(person.clone()),
            action: SourceAction::Pull,
            outcome: outcome_str,
            detail: serde_json::json!({
                "pull": p.id,
                "state": p.state.as_str(),
                "listed": p.listed,
                "fetched": p.fetched,
                "stored": p.stored,
                "duplicates": p.duplicates,
                "refused": p.refused,
                "failed": p.failed,
                "resources": p.resources,
                "error": p.error,
            }),
        };
        if let Err(e) = self.audit(event).await {
            tracing::error!(error = %e, "audit of a pull failed");
        }
        update(progress, |shown| *shown = p.clone());
        tracing::info!(source = %source, pull = %p.id, state = p.state.as_str(), listed = p.listed, stored = p.stored, duplicates = p.duplicates, refused = p.refused, failed = p.failed, error = ?p.error, "pull ended");
    }

    async fn pull_inner(
        &self,
        person: &str,
        source: &str,
        progress: &ProgressHandle,
    ) -> Result<(), SourcesError> {
        let client = self.client_of(source)?;
        let link = store::get(&self.db, person, source)
            .await?
            .ok_or(SourcesError::NotLinked)?;
        let grant = link.grant.clone().ok_or(SourcesError::NoGrant)?;
        if grant.expires_ms <= self.clock.now_ms() {
            return Err(SourcesError::Card(VerifyError::NotValidNow {
                what: "service grant",
                now: self.clock.now_ms() / 1000,
            }));
        }
        let consent = self.consent(person, source).await?;
        let header = grant_header(&grant);
        let mut cursor = link.cursor.clone();
        loop {
            let page = match client
                .list(&header, cursor.as_deref(), self.settings.page_size)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    if let SourceError::Refused { code, .. } = &e
                        && refuses_grant(*code)
                    {
                        store::drop_grant(&self.db, person, source, &grant.bytes).await?;
                    }
                    return Err(e.into());
                }
            };
            update(progress, |p| p.listed += page.files.len() as u64);
            let mut page_stored = true;
            for entry in &page.files {
                // Renew the lease before every file (a file may take minutes): another gateway
                // never takes the pair while this pull goes on, and a lost lease stops it.
                let now = self.clock.now_ms();
                if !store::take_lease(
                    &self.db,
                    person,
                    source,
                    &self.lease_owner,
                    now,
                    now + LEASE_MS,
                )
                .await?
                {
                    return Err(SourcesError::Busy);
                }
                match self
                    .pull_file(
                        client,
                        &header,
                        person,
                        source,
                        entry,
                        &consent.categories,
                        progress,
                    )
                    .await
                {
                    // A refused file is refused for good (these bytes never convert, or are not
                    // this person's or not consented under this grant: a new grant starts over):
                    // audited once, the cursor may pass it.
                    Ok(()) | Err(FileFailure::Refused) => {}
                    Err(FileFailure::Skip) => page_stored = false,
                    Err(FileFailure::Abort(e)) => {
                        if let SourcesError::Source(SourceError::Refused { code, .. }) = &e
                            && refuses_grant(*code)
                        {
                            store::drop_grant(&self.db, person, source, &grant.bytes).await?;
                        }
                        return Err(e);
                    }
                }
            }
            let moved = page.next_cursor.is_some() && page.next_cursor != cursor;
            if page_stored && let Some(next) = &page.next_cursor {
                // Only under the grant this pull started with: a new grant stored meanwhile
                // reset the cursor for its own scope, and this pull stops.
                if !store::set_cursor(&self.db, person, source, &grant.bytes, next).await? {
                    return Err(SourcesError::Busy);
                }
                cursor = Some(next.clone());
            }
            if !page.more || !page_stored || page.files.is_empty() || !moved {
                return Ok(());
            }
        }
    }

    /// Audits a file refused or failed during a pull (a failed write is logged).
    async fn audit_file(
        &self,
        person: &str,
        source: &str,
        entry: &FileEntry,
        outcome: &'static str,
        reason: &str,
        message: Option<String>,
    ) {
        let event = SourceEvent {
            at_ms: self.clock.now_ms(),
            source_id: source.to_owned(),
            person_id: Some(person.to_owned()),
            action: SourceAction::Pull,
            outcome,
            detail: serde_json::json!({
                "file": entry.name,
                "id": entry.id,
                "reason": reason,
                "message": message,
            }),
        };
        if let Err(e) = self.audit(event).await {
            tracing::error!(error = %e, "audit of a refused file failed");
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn pull_file(
        &self,
        client: &SourceClient,
        header: &GrantHeader,
        person: &str,
        source: &str,
        entry: &FileEntry,
        consented: &[Category],
        progress: &ProgressHandle,
    ) -> Result<(), FileFailure> {
        let refuse = |reason: &'static str, message: Option<String>| async move {
            self.audit_file(person, source, entry, "deny", reason, message)
                .await;
            update(progress, |p| {
                p.refused += 1;
                p.error.get_or_insert_with(|| reason.to_owned());
            });
            Err(FileFailure::Refused)
        };
        if FileKind::of(&entry.name).is_none() {
            return refuse("unknown_format", None).await;
        }
        if entry.categories.is_empty()
            || entry.categories.iter().any(|c| {
                c.parse::<Category>()
                    .map_or(true, |c| !consented.contains(&c))
            })
        {
            return refuse("not_consented", None).await;
        }
        let Some(sha) = entry.sha256_bytes() else {
            return refuse("unknown_format", None).await;
        };
        // Bytes already stored for this person are not downloaded again; bytes stored by another
        // route (drop directory, CLI) are, so that their keys get linked to the grant's person.
        if records::import_held_by(&self.db, &sha, person)
            .await
            .map_err(|e| FileFailure::Abort(e.into()))?
        {
            update(progress, |p| p.duplicates += 1);
            return Ok(());
        }
        let bytes = match client.fetch(header, entry).await {
            Ok(b) => b,
            Err(SourceError::Refused {
                code: ErrorCode::NotFound,
                ..
            }) => return refuse("not_found", None).await,
            Err(e @ SourceError::Refused { .. }) => return Err(FileFailure::Abort(e.into())),
            // Larger than accepted, or an impossible listing: the same on every pull.
            Err(SourceError::Malformed(m)) => return refuse("malformed_entry", Some(m)).await,
            Err(e @ (SourceError::BreakerOpen | SourceError::Certificate(_))) => {
                self.audit_file(person, source, entry, "error", e.code(), None)
                    .await;
                update(progress, |p| p.failed += 1);
                return Err(FileFailure::Abort(e.into()));
            }
            Err(e) => {
                // Retries exhausted (timeouts, 5xx, truncated or altered bodies): nothing of the
                // file is stored; the cursor stays before it, the next pull tries again.
                self.audit_file(
                    person,
                    source,
                    entry,
                    "error",
                    e.code(),
                    Some(e.to_string()),
                )
                .await;
                update(progress, |p| {
                    p.failed += 1;
                    p.error.get_or_insert_with(|| e.code().to_owned());
                });
                return Err(FileFailure::Skip);
            }
        };
        update(progress, |p| p.fetched += 1);
        match self
            .importer
            .import_pulled(bytes, &entry.name, source, person, consented)
            .await
        {
            Ok(ImportOutcome::Imported { resources, .. }) => {
                update(progress, |p| {
                    p.stored += 1;
                    p.resources += resources;
                });
                Ok(())
            }
            Ok(ImportOutcome::AlreadyImported { .. }) => {
                update(progress, |p| p.duplicates += 1);
                Ok(())
            }
            Err(ImporterError::Refused(e)) => {
                let reason = match &e {
                    crate::domain::import::ImportError::PersonCount { .. } => "person_count",
                    crate::domain::import::ImportError::NotConsented { .. } => "not_consented",
                    crate::domain::import::ImportError::OtherPerson { .. } => "other_person",
                    crate::domain::import::ImportError::IdentityCheck { .. } => "identity_check",
                    crate::domain::import::ImportError::UnsupportedFormat { .. } => {
                        "unknown_format"
                    }
                    _ => "conversion_failed",
                };
                refuse(reason, Some(e.to_string())).await
            }
            Err(ImporterError::Store(e)) => Err(FileFailure::Abort(e.into())),
            // The converter failed on these bytes (it would again): refused, not retried.
            Err(ImporterError::Task(m)) => refuse("conversion_failed", Some(m)).await,
            Err(e) => Err(FileFailure::Abort(SourcesError::Audit(e.to_string()))),
        }
    }

    /// Scheduled pulls of one source: every link with an unexpired grant and a consent in force,
    /// one after the other (each under its lease).
    pub async fn pull_due_of_source(&self, source_id: &str) -> Vec<PullProgress> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let now = self.clock.now_ms();
            let links = match store::with_live_grant(&self.db, source_id, now, &after, 100).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(source = %source_id, error = %e, "listing due pulls failed");
                    return out;
                }
            };
            let Some(last) = links.last() else {
                return out;
            };
            after = last.person_id.clone();
            for link in links {
                if self.consent(&link.person_id, source_id).await.is_err() {
                    continue;
                }
                out.push(self.pull(&link.person_id, source_id).await);
            }
        }
    }

    /// Whether `source_id` is registered as a source service (`register-partner --source`).
    pub async fn is_source_registered(&self, source_id: &str) -> Result<bool, SourcesError> {
        Ok(services::get(&self.db, source_id)
            .await?
            .is_some_and(|s| s.kind == ServiceKind::Source))
    }

    /// Purges expired pending nonces.
    pub async fn purge(&self) -> Result<u64, SourcesError> {
        Ok(store::purge_nonces(&self.db, self.clock.now_ms()).await?)
    }
}

enum FileFailure {
    /// This file could not be fetched now; go on with the others, keep the cursor before it.
    Skip,
    /// This file is refused (audited); go on, the cursor may pass it.
    Refused,
    /// Stop the pull.
    Abort(SourcesError),
}

/// The `Authorization` value of a stored grant.
fn grant_header(grant: &StoredGrant) -> GrantHeader {
    GrantHeader {
        alg: if grant.alg == GrantAlg::Jpki.as_str() {
            GrantAlg::Jpki
        } else {
            GrantAlg::P256
        },
        grant: grant.bytes.clone(),
        signature: grant.signature.clone(),
    }
}

/// Pulls from every source, each on its own task, every `interval` until `shutdown`. A source
/// whose previous round still runs (slow) is skipped this round; the others go on.
pub async fn run_scheduled(
    hub: Arc<SourceHub>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut shutdown => break,
        }
        if let Err(e) = hub.purge().await {
            tracing::warn!(error = %e, "purging source nonces failed");
        }
        for source in hub.source_ids() {
            if running.get(&source).is_some_and(|t| !t.is_finished()) {
                tracing::info!(source = %source, "previous scheduled pull still running");
                continue;
            }
            let h = hub.clone();
            let s = source.clone();
            running.insert(
                source,
                tokio::spawn(async move {
                    let done = h.pull_due_of_source(&s).await;
                    if !done.is_empty() {
                        tracing::info!(source = %s, pulls = done.len(), "scheduled pulls done");
                    }
                }),
            );
        }
    }
    for (_, task) in running {
        task.abort();
    }
}
