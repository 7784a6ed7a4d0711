//! Consent at the kiosk (issue 6 deliverable 3; security-scenarios D6, E9): after card sign-in the
//! worker sees each partner's request, and grants or revokes. Every change is a
//! [`ConsentDocument`] whose hash is the challenge the card signs (`SHA-256(origin) ‖
//! SHA-256(nonce)`, DESIGN §4), so the signature covers the document; the signing certificate must
//! be bound to the signed-in person; a prepared document is single use and lives 5 minutes (a fresh
//! card signature, D6); versions are monotonic, so an older document cannot be replayed (E9).
//!
//! With a PHR card the change is also written to the card first (`docs/kiosk.md`, "Consent on
//! the PHR card"): the commit then needs the card's consent record for this document, checked
//! by [`ConsentDesk::commit`] (holder signature of the signing card, service, status,
//! categories, period and purpose as [`card_agent::phr::kiosk`] maps them, signed within
//! [`CARD_CLOCK_SKEW_SECS`] of our clock, a card version above the last one stored for this
//! person and card), and stored with the version. A My Number commit carries no card record;
//! one given is refused ([`ConsentError::CardRecordUnexpected`]) rather than silently dropped.

use crate::domain::auth::{AuthError, Authenticator, LiveSession};
use crate::domain::certs::CardType;
use crate::domain::consent::{
    Action, Category, ConsentDocument, ConsentState, DOCUMENT_FORMAT, Status,
};
use crate::domain::token::AuthToken;
use crate::domain::trail::{AuditTrail, ConsentEvent, TrailEvent};
use crate::domain::verifier::{VerifiedCard, VerifyError};
use crate::store::consent::{self as store, CardRecord, CommitOutcome};
use crate::store::services::{self, ServiceKind};
use crate::store::{StoreError, persons};
use base64::Engine;
use card_agent::phr::consent::ConsentRecord;
use card_agent::phr::kiosk::{KioskAction, KioskConsent};
use serde::Serialize;
use std::sync::Arc;

/// How long a prepared document waits for the card (security-scenarios D6: < 5 min).
pub const PENDING_TTL_MS: i64 = 300_000;
/// Longest consent period a partner may request.
pub const MAX_PERIOD_DAYS: i64 = 3 * 366;
/// How far a card record's `signed at` may be from the gateway's clock (seconds, either way).
pub const CARD_CLOCK_SKEW_SECS: i64 = 300;
/// Longest `card_record` text accepted (a record is at most about 310 bytes).
pub const MAX_CARD_RECORD_TEXT: usize = 1024;

/// Why a consent action is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    /// No signed-in session.
    #[error("not signed in")]
    NotSignedIn,
    /// No such partner.
    #[error("unknown partner service")]
    UnknownService,
    /// A category the partner did not request, or none at all.
    #[error("categories not requested by the partner")]
    CategoriesNotRequested,
    /// No document waits for a signature (never prepared, expired or already used).
    #[error("no pending consent document")]
    NoPending,
    /// The token does not verify against the pending document.
    #[error("card signature refused: {0}")]
    Signature(#[from] VerifyError),
    /// The token is not well formed.
    #[error("card token malformed")]
    Malformed,
    /// The card is not one bound to the signed-in person.
    #[error("the card is not the signed-in person's")]
    OtherPersonsCard,
    /// The consent changed since the document was prepared (another kiosk, a replay).
    #[error("consent changed since the document was prepared")]
    VersionConflict,
    /// The audit write failed; nothing was committed.
    #[error("audit trail unavailable: {0}")]
    AuditUnavailable(String),
    /// The session or the store failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The random generator failed.
    #[error("random generator failed")]
    Random,
    /// A PHR card signed the commit but no card record came with it: the card was not written,
    /// so the gateway does not commit (card and gateway never silently diverge).
    #[error("a PHR card commit needs the consent record the card wrote")]
    CardRecordRequired,
    /// A card record came with a My Number card's commit (a My Number card holds no consents).
    #[error("a card record was given, but the signing card is not a PHR card")]
    CardRecordUnexpected,
    /// The card record is not hex or base64 of one record in the canonical encoding.
    #[error("card record malformed")]
    CardRecordMalformed,
    /// The card record's signature does not verify with the holder key of the card that signed
    /// the commit (altered, or written by another card).
    #[error("card record signature refused")]
    CardRecordSignature,
    /// The card record names another service than the document.
    #[error("card record is for another service")]
    CardRecordService,
    /// The card record's status is not the document's action (granted for a grant, revoked for
    /// a revoke).
    #[error("card record status differs from the document's action")]
    CardRecordStatus,
    /// The card record's categories are not the document's, as mapped to the card.
    #[error("card record categories differ from the document's")]
    CardRecordCategories,
    /// The card record's validity is not the document's period in seconds.
    #[error("card record validity differs from the document's period")]
    CardRecordPeriod,
    /// The card record's purpose is not the document's, as cut for the card.
    #[error("card record purpose differs from the document's")]
    CardRecordPurpose,
    /// The card record was signed more than [`CARD_CLOCK_SKEW_SECS`] from the gateway's clock.
    #[error("card record signed at {signed_at}, too far from now ({now})")]
    CardRecordStale {
        /// The record's `signed at` (Unix seconds).
        signed_at: u32,
        /// The gateway's clock (Unix seconds).
        now: i64,
    },
    /// The card record's version is not above the last one stored from this card for this
    /// person: an older record replayed.
    #[error("card record version {got} is not above the stored {stored}")]
    CardRecordReplayed {
        /// Version presented.
        got: u32,
        /// Highest stored.
        stored: i64,
    },
}

/// One partner's request as the worker sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PartnerRequest {
    /// Service id.
    pub service_id: String,
    /// `partner` (reads within consent) or `source` (the gateway pulls from it with a grant).
    pub kind: &'static str,
    /// Name.
    pub name: String,
    /// Purpose.
    pub purpose: String,
    /// Requested categories with their Japanese labels.
    pub categories: Vec<CategoryView>,
    /// Requested period in days.
    pub period_days: i64,
    /// The current consent, if any.
    pub current: Option<ConsentState>,
    /// Whether the current consent is in force now.
    pub in_force: bool,
}

/// A category with its label.
#[derive(Debug, Clone, Serialize)]
pub struct CategoryView {
    /// Wire form.
    pub id: Category,
    /// Unit letter.
    pub unit: char,
    /// Japanese label.
    pub label: &'static str,
}

impl From<Category> for CategoryView {
    fn from(c: Category) -> Self {
        CategoryView {
            id: c,
            unit: c.unit(),
            label: c.label_ja(),
        }
    }
}

/// A document waiting for the card.
#[derive(Debug, Clone, Serialize)]
pub struct Prepared {
    /// The challenge the card signs (base64 of SHA-256 of `document`).
    pub nonce: String,
    /// The origin the card signs with.
    pub origin: String,
    /// The canonical document.
    pub document: String,
    /// Expiry (ms).
    pub expires_at_ms: i64,
    /// Every data category the gateway knows (wire form): a PHR card's unit collapse rule
    /// ([`card_agent::phr::kiosk::card_categories`]) needs them.
    pub known_categories: Vec<&'static str>,
}

/// Why a card's token over a pending kiosk document (consent, erasure) is refused.
#[derive(Debug, thiserror::Error)]
pub enum CardSignatureError {
    /// The token is not well formed.
    #[error("card token malformed")]
    Malformed,
    /// The token does not verify against the document's nonce.
    #[error("card signature refused: {0}")]
    Signature(#[from] VerifyError),
    /// The card is not one bound to the signed-in person.
    #[error("the card is not the signed-in person's")]
    OtherPersonsCard,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<CardSignatureError> for ConsentError {
    fn from(e: CardSignatureError) -> Self {
        match e {
            CardSignatureError::Malformed => ConsentError::Malformed,
            CardSignatureError::Signature(e) => ConsentError::Signature(e),
            CardSignatureError::OtherPersonsCard => ConsentError::OtherPersonsCard,
            CardSignatureError::Store(e) => ConsentError::Store(e),
        }
    }
}

/// Verifies the card's token over `nonce` (a pending document's hash) and that the card is bound
/// to `person`: the fresh card signature a kiosk change needs (D6).
pub(crate) async fn verify_persons_card(
    auth: &Authenticator,
    token: &[u8],
    nonce: &str,
    person: &str,
    now_ms: i64,
) -> Result<(AuthToken, VerifiedCard), CardSignatureError> {
    let parsed = AuthToken::parse(token).map_err(|_| CardSignatureError::Malformed)?;
    let verified = auth
        .verifier()
        .verify(&parsed, &auth.config().origin, nonce, now_ms)?;
    let binding = persons::find_binding(auth.db(), &verified.certificate.fingerprint).await?;
    if binding.is_none_or(|b| b.person_id != person) {
        return Err(CardSignatureError::OtherPersonsCard);
    }
    Ok((parsed, verified))
}

/// The consent desk.
pub struct ConsentDesk {
    auth: Arc<Authenticator>,
    audit: Arc<dyn AuditTrail>,
    rng: ring::rand::SystemRandom,
}

impl ConsentDesk {
    /// A desk over the sign-in service (sessions, verifier, store) writing to `audit`.
    pub fn new(auth: Arc<Authenticator>, audit: Arc<dyn AuditTrail>) -> Self {
        ConsentDesk {
            auth,
            audit,
            rng: ring::rand::SystemRandom::new(),
        }
    }

    async fn signed_in(&self, cookie: Option<&str>) -> Result<(LiveSession, String), ConsentError> {
        let session = self
            .auth
            .live_session(cookie)
            .await?
            .ok_or(ConsentError::NotSignedIn)?;
        let person = session
            .row
            .person_id
            .clone()
            .ok_or(ConsentError::NotSignedIn)?;
        Ok((session, person))
    }

    /// Every partner's request with the worker's current consent.
    pub async fn requests(
        &self,
        cookie: Option<&str>,
    ) -> Result<Vec<PartnerRequest>, ConsentError> {
        let (_, person) = self.signed_in(cookie).await?;
        let db = self.auth.db();
        let heads = store::heads_of_person(db, &person).await?;
        let now = self.auth.now_ms();
        let mut partners = services::list(db, ServiceKind::Partner).await?;
        partners.extend(services::list(db, ServiceKind::Source).await?);
        Ok(partners
            .into_iter()
            .map(|s| {
                let current = heads
                    .iter()
                    .find(|(id, _)| *id == s.id)
                    .map(|(_, st)| st.clone());
                let in_force = crate::domain::consent::in_force(current.as_ref(), now).is_ok();
                PartnerRequest {
                    kind: s.kind.as_str(),
                    service_id: s.id,
                    name: s.name,
                    purpose: s.purpose,
                    categories: s.categories.into_iter().map(CategoryView::from).collect(),
                    period_days: s.period_days,
                    current,
                    in_force,
                }
            })
            .collect())
    }

    /// Prepares a grant of `categories` (all requested ones when empty) or a revoke, towards a
    /// partner or a source (a source's consent bounds what the gateway pulls from it).
    pub async fn prepare(
        &self,
        cookie: Option<&str>,
        service_id: &str,
        action: Action,
        categories: &[Category],
    ) -> Result<Prepared, ConsentError> {
        let (session, person) = self.signed_in(cookie).await?;
        let db = self.auth.db();
        let service = services::get(db, service_id)
            .await?
            .ok_or(ConsentError::UnknownService)?;
        let categories = match action {
            Action::Revoke => Vec::new(),
            Action::Grant => {
                let chosen = if categories.is_empty() {
                    service.categories.clone()
                } else {
                    categories.to_vec()
                };
                if chosen.is_empty() || chosen.iter().any(|c| !service.categories.contains(c)) {
                    return Err(ConsentError::CategoriesNotRequested);
                }
                chosen
            }
        };
        let head = store::head(db, &person, service_id).await?;
        let now = self.auth.now_ms();
        let days = service.period_days.clamp(1, MAX_PERIOD_DAYS);
        let (start, end) = match action {
            Action::Grant => (now, now.saturating_add(days.saturating_mul(86_400_000))),
            Action::Revoke => (now, now),
        };
        let salt: [u8; 32] = super::random_bytes(&self.rng).map_err(|_| ConsentError::Random)?;
        let document = ConsentDocument {
            format: DOCUMENT_FORMAT.into(),
            origin: self.auth.config().origin.clone(),
            person_id: person,
            service_id: service.id.clone(),
            version: head.as_ref().map_or(1, |h| h.version + 1),
            action,
            categories,
            period_start_ms: start,
            period_end_ms: end,
            purpose: service.purpose.clone(),
            issued_at_ms: now,
            salt: base64::engine::general_purpose::STANDARD.encode(salt),
        };
        let nonce = document.nonce();
        let canonical = document.canonical();
        let expires_at_ms = now.saturating_add(PENDING_TTL_MS);
        store::put_pending(db, &nonce, &session.id_hash, &canonical, expires_at_ms).await?;
        Ok(Prepared {
            nonce,
            origin: document.origin,
            document: canonical,
            expires_at_ms,
            known_categories: known_categories(),
        })
    }

    /// Commits the pending document with the card's token over it and, for a PHR card, the
    /// consent record the card wrote for it (`card_record`: hex or base64 of the `E1` bytes).
    pub async fn commit(
        &self,
        cookie: Option<&str>,
        token: &[u8],
        card_record: Option<&str>,
    ) -> Result<ConsentState, ConsentError> {
        let (session, person) = self.signed_in(cookie).await?;
        let db = self.auth.db();
        let now = self.auth.now_ms();
        let (nonce, canonical, expires_at_ms) = store::peek_pending(db, &session.id_hash)
            .await?
            .ok_or(ConsentError::NoPending)?;
        if now >= expires_at_ms {
            return Err(ConsentError::NoPending);
        }
        let document: ConsentDocument =
            serde_json::from_str(&canonical).map_err(|_| ConsentError::NoPending)?;
        if document.nonce() != nonce || document.person_id != person {
            return Err(ConsentError::NoPending);
        }
        let (parsed, verified) =
            verify_persons_card(&self.auth, token, &nonce, &person, now).await?;
        let fingerprint = &verified.certificate.fingerprint;
        // Checked before the pending document is consumed: a refused record can be corrected.
        let card = match (verified.card_type, card_record) {
            (CardType::Jpki, None) => None,
            (CardType::Jpki, Some(_)) => return Err(ConsentError::CardRecordUnexpected),
            (CardType::Phr, None) => return Err(ConsentError::CardRecordRequired),
            (CardType::Phr, Some(text)) => {
                let (bytes, record) =
                    check_card_record(text, &parsed.certificate_der, &document, now)?;
                check_card_version(db, &person, fingerprint, &record).await?;
                Some((bytes, record.terms.version))
            }
        };
        if !store::take_pending(db, &nonce, &session.id_hash, now).await? {
            return Err(ConsentError::NoPending);
        }
        let current = store::head(db, &person, &document.service_id).await?;
        if current.map_or(0, |h| h.version) + 1 != document.version {
            return Err(ConsentError::VersionConflict);
        }
        // The decision is audited before it takes effect; no audit, no change (G7).
        let action = match document.action {
            Action::Grant => "grant",
            Action::Revoke => "revoke",
        };
        self.audit
            .record(TrailEvent::Consent(ConsentEvent {
                at_ms: now,
                person_id: person.clone(),
                service_id: document.service_id.clone(),
                action,
                version: document.version,
                categories: document
                    .categories
                    .iter()
                    .map(|c| c.as_str().to_owned())
                    .collect(),
                card_written: card.is_some(),
            }))
            .await
            .map_err(ConsentError::AuditUnavailable)?;
        let token_text = String::from_utf8_lossy(token).into_owned();
        let card_record = card.as_ref().map(|(bytes, version)| CardRecord {
            bytes,
            version: *version,
        });
        match store::commit(db, &document, &token_text, fingerprint, card_record, now).await? {
            CommitOutcome::Committed => Ok(document.resulting_state()),
            CommitOutcome::VersionConflict => Err(ConsentError::VersionConflict),
            CommitOutcome::CardRecordReplayed => {
                let version = card.as_ref().map_or(0, |(_, v)| *v);
                Err(ConsentError::CardRecordReplayed {
                    got: version,
                    stored: i64::from(version),
                })
            }
        }
    }

    /// The newest partner accesses to the signed-in person's data (the worker's access history).
    pub async fn history(
        &self,
        cookie: Option<&str>,
        limit: i64,
    ) -> Result<Vec<crate::store::audit::PartnerAccessEntry>, ConsentError> {
        let (_, person) = self.signed_in(cookie).await?;
        crate::store::audit::partner_accesses_of(self.auth.db(), &person, limit.clamp(1, 500))
            .await
            .map_err(|e| ConsentError::AuditUnavailable(e.to_string()))
    }

    /// Whether the current consent of the session's person towards `service_id` permits.
    pub async fn status(
        &self,
        cookie: Option<&str>,
        service_id: &str,
    ) -> Result<Option<Status>, ConsentError> {
        let (_, person) = self.signed_in(cookie).await?;
        Ok(store::head(self.auth.db(), &person, service_id)
            .await?
            .map(|h| h.status))
    }
}

/// Refuses a card record whose version is not above the last one stored from this card for
/// this person (card versions are card-wide and only grow: an older record is a replay).
async fn check_card_version(
    db: &crate::store::Db,
    person: &str,
    card_fingerprint: &[u8],
    record: &ConsentRecord,
) -> Result<(), ConsentError> {
    let got = record.terms.version;
    match store::last_card_version(db, person, card_fingerprint).await? {
        Some(stored) if i64::from(got) <= stored => {
            Err(ConsentError::CardRecordReplayed { got, stored })
        }
        _ => Ok(()),
    }
}

/// Every data category's wire form.
fn known_categories() -> Vec<&'static str> {
    Category::ALL.iter().map(|c| c.as_str()).collect()
}

/// Decodes a `card_record`: hex when it starts with `e1`/`E1` (the record's tag), else base64.
fn decode_card_record(text: &str) -> Option<Vec<u8>> {
    if text.len() > MAX_CARD_RECORD_TEXT {
        return None;
    }
    if text.starts_with("e1") || text.starts_with("E1") {
        hex::decode(text).ok()
    } else {
        base64::engine::general_purpose::STANDARD.decode(text).ok()
    }
}

/// Checks a PHR card's record against the document it must carry (everything but the version's
/// anti-replay, which needs the store): canonical encoding, the holder signature of the card
/// whose (already validated) certificate signed the token, service, status, and for a grant the
/// categories, period and purpose as [`KioskConsent::grant_request`] maps them; `signed at`
/// within [`CARD_CLOCK_SKEW_SECS`] of `now_ms`.
fn check_card_record(
    text: &str,
    holder_cert_der: &[u8],
    document: &ConsentDocument,
    now_ms: i64,
) -> Result<(Vec<u8>, ConsentRecord), ConsentError> {
    use card_agent::phr::verify;
    let bytes = decode_card_record(text).ok_or(ConsentError::CardRecordMalformed)?;
    let record = ConsentRecord::parse(&bytes).map_err(|_| ConsentError::CardRecordMalformed)?;
    let holder = verify::holder_of_validated_cert(holder_cert_der)
        .map_err(|_| ConsentError::CardRecordSignature)?;
    verify::verify_consent_record(&record, &holder)
        .map_err(|_| ConsentError::CardRecordSignature)?;
    let terms = &record.terms;
    if terms.service != document.service_id {
        return Err(ConsentError::CardRecordService);
    }
    let consent = KioskConsent {
        origin: Some(document.origin.clone()),
        service: document.service_id.clone(),
        action: match document.action {
            Action::Grant => KioskAction::Grant,
            Action::Revoke => KioskAction::Revoke,
        },
        categories: document
            .categories
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect(),
        period_start_ms: document.period_start_ms,
        period_end_ms: document.period_end_ms,
        purpose: document.purpose.clone(),
    };
    if terms.status != consent.action.card_status() {
        return Err(ConsentError::CardRecordStatus);
    }
    if consent.action == KioskAction::Grant {
        // A document the card cannot hold has no matching record.
        let expected = consent
            .grant_request(&known_categories())
            .map_err(|_| ConsentError::CardRecordCategories)?;
        let mut categories = terms.categories.clone();
        categories.sort();
        if categories != expected.categories {
            return Err(ConsentError::CardRecordCategories);
        }
        if (terms.not_before, terms.not_after) != (expected.not_before, expected.not_after) {
            return Err(ConsentError::CardRecordPeriod);
        }
        if terms.purpose != expected.purpose {
            return Err(ConsentError::CardRecordPurpose);
        }
    }
    let now = now_ms.div_euclid(1000);
    if (i64::from(terms.signed_at) - now).abs() > CARD_CLOCK_SKEW_SECS {
        return Err(ConsentError::CardRecordStale {
            signed_at: terms.signed_at,
            now,
        });
    }
    Ok((bytes, record))
}
