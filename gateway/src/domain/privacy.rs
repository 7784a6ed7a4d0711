//! A worker's own rights over their iPHR at the kiosk (PHR guideline 消去 and 相互運用性;
//! security-scenarios K1 erasure, K2 export, D6 re-authentication; `docs/privacy.md`):
//!
//! - **Erasure (K1).** Like a consent change: [`PrivacyDesk::prepare_erasure`] makes an
//!   [`ErasureDocument`] whose hash is the challenge the card signs (`SHA-256(origin) ‖
//!   SHA-256(nonce)`, DESIGN §4); the signing certificate must be bound to the signed-in person;
//!   the document is single use and lives 5 minutes (a fresh card signature, D6).
//!   [`PrivacyDesk::commit_erasure`] audits the erasure (no audit, no erasure: G7), then removes
//!   the person's data in one transaction ([`crate::store::erasure::erase`]) and registers the
//!   backup-purge due date. Partners then get the same 404 as for a person that never consented
//!   (no existence leak, `docs/partner-api.md`).
//! - **Export (K2).** [`PrivacyDesk::export`]: every stored resource of the person, all
//!   categories, no partner consent involved, audited as the person's own export (`export`,
//!   actor `person`) before anything is served. A session whose card sign-in is older than
//!   [`EXPORT_FRESHNESS_MS`] must sign in again (D6). [`PersonExport::bundle`] is a FHIR R4
//!   `collection` Bundle; each entry says, in an extension, which person key and data category
//!   the resource is stored under, so that the gateway can import the file again
//!   ([`import_of_export`], the file kind `*.iphr-export.json`) and hold equal content.

use crate::domain::audit::rfc3339_ms;
use crate::domain::auth::{AuthError, Authenticator, LiveSession};
use crate::domain::consent::Category;
use crate::domain::consent_desk::{CardSignatureError, verify_persons_card};
use crate::domain::trail::{AuditTrail, PrivacyAction, PrivacyEvent, TrailEvent};
use crate::domain::verifier::VerifyError;
use crate::store::erasure::{self as store, EraseOutcome, ErasedCounts, ErasureRecord, PersonRow};
use crate::store::records::{NewImport, NewPersonKey, NewResource};
use crate::store::{StoreError, consent as pending};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// How long a prepared erasure document waits for the card (security-scenarios D6: < 5 min).
pub const PENDING_TTL_MS: i64 = 300_000;
/// How recent the session's card sign-in must be for an export (D6: < 5 min).
pub const EXPORT_FRESHNESS_MS: i64 = 300_000;
/// Days after an erasure by which backups holding the data must be purged, by default.
pub const DEFAULT_BACKUP_PURGE_DAYS: u32 = 35;
/// The erasure document's format tag.
pub const ERASURE_FORMAT: &str = "iphr-erasure/1";
/// The `meta.tag` system of an export Bundle.
pub const EXPORT_TAG_SYSTEM: &str = "urn:iphr:export";
/// The `meta.tag` code of an export Bundle (the format version).
pub const EXPORT_FORMAT: &str = "iphr-export/1";
/// File names ending so are imported as exports.
pub const EXPORT_SUFFIX: &str = ".iphr-export.json";
/// The entry extension that says how a resource is stored (one per person key).
pub const STORED_EXTENSION: &str = "urn:iphr:export:stored";

/// Why a privacy action is refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// No signed-in session.
    #[error("not signed in")]
    NotSignedIn,
    /// The session's card sign-in is older than [`EXPORT_FRESHNESS_MS`]: sign in again (D6).
    #[error("the card sign-in is too old for this action; sign in again")]
    ReauthenticationRequired,
    /// No erasure document waits for a signature (never prepared, expired or already used).
    #[error("no pending erasure document")]
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
    /// A pull from a source is storing the person's files right now; erase after it ends.
    #[error("a pull from a source is in progress for this person")]
    PullInProgress,
    /// An export parameter names no format or resource type that is offered.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The audit write failed; nothing was erased or served.
    #[error("audit trail unavailable: {0}")]
    AuditUnavailable(String),
    /// The session lookup failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The random generator failed.
    #[error("random generator failed")]
    Random,
}

impl From<CardSignatureError> for PrivacyError {
    fn from(e: CardSignatureError) -> Self {
        match e {
            CardSignatureError::Malformed => PrivacyError::Malformed,
            CardSignatureError::Signature(e) => PrivacyError::Signature(e),
            CardSignatureError::OtherPersonsCard => PrivacyError::OtherPersonsCard,
            CardSignatureError::Store(e) => PrivacyError::Store(e),
        }
    }
}

/// The erasure request the card signs (by its hash, as the challenge nonce). Canonical JSON:
/// fields in this order, no whitespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureDocument {
    /// Always [`ERASURE_FORMAT`].
    pub format: String,
    /// The gateway origin the worker saw.
    pub origin: String,
    /// The person.
    pub person_id: String,
    /// What goes: always `all` (every stored resource, every consent, every source grant).
    pub scope: String,
    /// Resources the worker was shown (what is stored when the commit runs goes, whatever the
    /// number).
    pub resources_shown: i64,
    /// When the document was prepared (ms).
    pub issued_at_ms: i64,
    /// 32 random bytes, base64: makes every document's hash unpredictable.
    pub salt: String,
}

impl ErasureDocument {
    /// Canonical bytes.
    pub fn canonical(&self) -> String {
        // Invariant: strings and integers always serialise.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The challenge the card signs for this document: base64(SHA-256(canonical)).
    pub fn nonce(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(super::sha256(self.canonical().as_bytes()))
    }
}

/// An erasure document waiting for the card.
#[derive(Debug, Clone, Serialize)]
pub struct ErasurePrepared {
    /// The challenge the card signs (base64 of SHA-256 of `document`).
    pub nonce: String,
    /// The origin the card signs with.
    pub origin: String,
    /// The canonical document.
    pub document: String,
    /// Expiry (ms).
    pub expires_at_ms: i64,
    /// What would be removed now.
    pub preview: ErasedCounts,
}

/// How one exported resource is stored: under which person key (with that key's Patient id)
/// and in which data category.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoredAs {
    /// The source's person key.
    pub person_key: String,
    /// The converter's Patient id of the key.
    pub patient_id: String,
    /// Data category; `None` for a Patient.
    pub category: Option<Category>,
}

/// One resource of an export, with every way it is stored for the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEntry {
    /// `resourceType`.
    pub resource_type: String,
    /// `id`.
    pub id: String,
    /// The resource.
    pub resource: Value,
    /// Its storage (at least one).
    pub stored: Vec<StoredAs>,
}

/// A person's whole record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonExport {
    /// The person.
    pub person_id: String,
    /// When (ms).
    pub at_ms: i64,
    /// Resources by type and id.
    pub entries: Vec<ExportEntry>,
}

/// Groups stored rows (ordered by type, id, key) into entries: copies of one resource with the
/// same content under several keys become one entry with several [`StoredAs`].
pub fn group_rows(rows: Vec<PersonRow>) -> Vec<ExportEntry> {
    let mut out: Vec<ExportEntry> = Vec::new();
    let mut index: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for row in rows {
        let stored = StoredAs {
            person_key: row.person_key,
            patient_id: row.patient_id,
            category: row.category.parse().ok(),
        };
        let slot = (row.resource_type.clone(), row.id.clone(), row.json.clone());
        if let Some(&i) = index.get(&slot) {
            if let Some(e) = out.get_mut(i) {
                e.stored.push(stored);
            }
            continue;
        }
        // A stored resource that is not JSON (impossible through imports) is exported as a JSON
        // string rather than dropped (an import of the file then refuses that entry).
        let resource = serde_json::from_str(&row.json).unwrap_or(Value::String(row.json));
        index.insert(slot, out.len());
        out.push(ExportEntry {
            resource_type: row.resource_type,
            id: row.id,
            resource,
            stored: vec![stored],
        });
    }
    out
}

fn stored_extension(s: &StoredAs) -> Value {
    let mut parts = vec![
        json!({"url": "personKey", "valueString": s.person_key}),
        json!({"url": "patient", "valueString": s.patient_id}),
    ];
    if let Some(c) = s.category {
        parts.push(json!({"url": "category", "valueString": c.as_str()}));
    }
    json!({"url": STORED_EXTENSION, "extension": parts})
}

impl PersonExport {
    /// The FHIR R4 `collection` Bundle: `meta.tag` [`EXPORT_TAG_SYSTEM`]|[`EXPORT_FORMAT`], one
    /// entry per resource with `fullUrl` `{base}/{type}/{id}` (so the resources' relative
    /// references resolve inside the Bundle) and the [`STORED_EXTENSION`]s.
    pub fn bundle(&self, base: &str) -> Value {
        let entries: Vec<Value> = self
            .entries
            .iter()
            .map(|e| {
                json!({
                    "fullUrl": format!("{base}/{}/{}", e.resource_type, e.id),
                    "resource": e.resource,
                    "extension": e.stored.iter().map(stored_extension).collect::<Vec<_>>(),
                })
            })
            .collect();
        let mut bundle = json!({
            "resourceType": "Bundle",
            "meta": {"tag": [{"system": EXPORT_TAG_SYSTEM, "code": EXPORT_FORMAT}]},
            "type": "collection",
            "timestamp": rfc3339_ms(self.at_ms),
        });
        // FHIR JSON has no empty arrays: an empty record is a Bundle without entries.
        if !entries.is_empty() {
            bundle["entry"] = Value::Array(entries);
        }
        bundle
    }

    /// The resources of one type as NDJSON (FHIR Bulk Data file format), one line each.
    pub fn ndjson(&self, resource_type: &str) -> String {
        let mut out = String::new();
        for e in self
            .entries
            .iter()
            .filter(|e| e.resource_type == resource_type)
        {
            out.push_str(&e.resource.to_string());
            out.push('\n');
        }
        out
    }

    /// Resource types and how many resources of each.
    pub fn types(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for e in &self.entries {
            *m.entry(e.resource_type.clone()).or_insert(0) += 1;
        }
        m
    }

    /// `Type/id` of every resource.
    pub fn references(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| format!("{}/{}", e.resource_type, e.id))
            .collect()
    }
}

/// What the worker downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One FHIR `collection` Bundle (importable again).
    Bundle,
    /// NDJSON of one resource type.
    Ndjson,
}

impl ExportFormat {
    /// Stable name (audit detail).
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Bundle => "bundle",
            ExportFormat::Ndjson => "ndjson",
        }
    }
}

/// The desk where a signed-in worker exports or erases their record.
pub struct PrivacyDesk {
    auth: Arc<Authenticator>,
    audit: Arc<dyn AuditTrail>,
    rng: ring::rand::SystemRandom,
    backup_purge_ms: i64,
}

impl PrivacyDesk {
    /// A desk over the sign-in service (sessions, verifier, store) writing to `audit`; backups
    /// must be purged `backup_purge_days` after an erasure.
    pub fn new(
        auth: Arc<Authenticator>,
        audit: Arc<dyn AuditTrail>,
        backup_purge_days: u32,
    ) -> Self {
        PrivacyDesk {
            auth,
            audit,
            rng: ring::rand::SystemRandom::new(),
            backup_purge_ms: i64::from(backup_purge_days).saturating_mul(86_400_000),
        }
    }

    async fn signed_in(&self, cookie: Option<&str>) -> Result<(LiveSession, String), PrivacyError> {
        let session = self
            .auth
            .live_session(cookie)
            .await?
            .ok_or(PrivacyError::NotSignedIn)?;
        let person = session
            .row
            .person_id
            .clone()
            .ok_or(PrivacyError::NotSignedIn)?;
        Ok((session, person))
    }

    async fn record(&self, event: PrivacyEvent) -> Result<(), PrivacyError> {
        self.audit
            .record(TrailEvent::Privacy(event))
            .await
            .map_err(PrivacyError::AuditUnavailable)
    }

    /// Prepares the erasure of everything stored for the signed-in person.
    pub async fn prepare_erasure(
        &self,
        cookie: Option<&str>,
    ) -> Result<ErasurePrepared, PrivacyError> {
        let (session, person) = self.signed_in(cookie).await?;
        let db = self.auth.db();
        let preview = store::preview(db, &person).await?;
        let now = self.auth.now_ms();
        let salt: [u8; 32] = super::random_bytes(&self.rng).map_err(|_| PrivacyError::Random)?;
        let document = ErasureDocument {
            format: ERASURE_FORMAT.into(),
            origin: self.auth.config().origin.clone(),
            person_id: person,
            scope: "all".into(),
            resources_shown: preview.resources,
            issued_at_ms: now,
            salt: base64::engine::general_purpose::STANDARD.encode(salt),
        };
        let nonce = document.nonce();
        let canonical = document.canonical();
        let expires_at_ms = now.saturating_add(PENDING_TTL_MS);
        // Kept like a consent document: one document per session waits for the card, so this
        // replaces a consent change being prepared (and a later consent prepare replaces it).
        pending::put_pending(db, &nonce, &session.id_hash, &canonical, expires_at_ms).await?;
        Ok(ErasurePrepared {
            nonce,
            origin: document.origin,
            document: canonical,
            expires_at_ms,
            preview,
        })
    }

    /// Commits the pending erasure with the card's token over it.
    pub async fn commit_erasure(
        &self,
        cookie: Option<&str>,
        token: &[u8],
    ) -> Result<ErasureRecord, PrivacyError> {
        let (session, person) = self.signed_in(cookie).await?;
        let db = self.auth.db();
        let now = self.auth.now_ms();
        let (nonce, canonical, expires_at_ms) = pending::peek_pending(db, &session.id_hash)
            .await?
            .ok_or(PrivacyError::NoPending)?;
        if now >= expires_at_ms {
            return Err(PrivacyError::NoPending);
        }
        // A consent document waiting instead does not parse (unknown fields) or has another
        // format: nothing to erase is pending.
        let document: ErasureDocument =
            serde_json::from_str(&canonical).map_err(|_| PrivacyError::NoPending)?;
        if document.format != ERASURE_FORMAT
            || document.nonce() != nonce
            || document.person_id != person
        {
            return Err(PrivacyError::NoPending);
        }
        let (_, verified) = verify_persons_card(&self.auth, token, &nonce, &person, now).await?;
        // Checked before the document is used up, so that the worker can simply try again.
        if store::pull_lease_held(db, &person, now).await? {
            return Err(PrivacyError::PullInProgress);
        }
        if !pending::take_pending(db, &nonce, &session.id_hash, now).await? {
            return Err(PrivacyError::NoPending);
        }
        let due = now.saturating_add(self.backup_purge_ms);
        let event = |outcome: &'static str, reason: Option<&str>| PrivacyEvent {
            at_ms: now,
            person_id: person.clone(),
            action: PrivacyAction::Erasure,
            outcome,
            resources: Vec::new(),
            detail: json!({
                "document": nonce,
                "backup_purge_due_ms": due,
                "reason": reason,
            }),
        };
        // The erasure is audited before it takes effect; no audit, no erasure (G7). The trail
        // may hold an erasure that then failed (followed by its error entry), never the reverse.
        self.record(event("permit", None)).await?;
        let token_text = String::from_utf8_lossy(token).into_owned();
        let outcome = store::erase(
            db,
            &store::ErasureCommit {
                person_id: &person,
                now_ms: now,
                backup_purge_due_ms: due,
                document: &canonical,
                token: &token_text,
                card_fingerprint: &verified.certificate.fingerprint,
            },
        )
        .await;
        let failure = match &outcome {
            Ok(EraseOutcome::Erased(_)) => None,
            Ok(EraseOutcome::PullInProgress) => Some(("deny", "pull_in_progress".to_owned())),
            Err(e) => Some(("error", e.to_string())),
        };
        if let Some((outcome, reason)) = failure
            && let Err(e) = self.record(event(outcome, Some(&reason))).await
        {
            tracing::error!(error = %e, "erasure failed and its failure could not be audited");
        }
        match outcome? {
            EraseOutcome::Erased(record) => {
                tracing::info!(
                    resources = record.counts.resources,
                    consents = record.counts.consents_revoked,
                    "erasure committed"
                );
                Ok(record)
            }
            EraseOutcome::PullInProgress => Err(PrivacyError::PullInProgress),
        }
    }

    async fn fresh_person(&self, cookie: Option<&str>) -> Result<String, PrivacyError> {
        let (session, person) = self.signed_in(cookie).await?;
        let now = self.auth.now_ms();
        match session.row.authenticated_at_ms {
            Some(at) if now.saturating_sub(at) < EXPORT_FRESHNESS_MS => Ok(person),
            _ => Err(PrivacyError::ReauthenticationRequired),
        }
    }

    /// The resource types of the signed-in person's record and their counts (no resource
    /// content; the list an NDJSON download starts from).
    pub async fn export_types(
        &self,
        cookie: Option<&str>,
    ) -> Result<BTreeMap<String, usize>, PrivacyError> {
        let person = self.fresh_person(cookie).await?;
        let rows = store::person_rows(self.auth.db(), &person).await?;
        Ok(PersonExport {
            person_id: person,
            at_ms: self.auth.now_ms(),
            entries: group_rows(rows),
        }
        .types())
    }

    /// The signed-in person's whole record (`resource_type`: only that type, for NDJSON),
    /// audited as the person's export before it is handed out.
    pub async fn export(
        &self,
        cookie: Option<&str>,
        format: ExportFormat,
        resource_type: Option<&str>,
    ) -> Result<PersonExport, PrivacyError> {
        let person = self.fresh_person(cookie).await?;
        let now = self.auth.now_ms();
        let mut export = PersonExport {
            entries: group_rows(store::person_rows(self.auth.db(), &person).await?),
            person_id: person.clone(),
            at_ms: now,
        };
        if let Some(t) = resource_type {
            export.entries.retain(|e| e.resource_type == t);
        }
        self.record(PrivacyEvent {
            at_ms: now,
            person_id: person,
            action: PrivacyAction::Export,
            outcome: "permit",
            resources: export.references(),
            detail: json!({
                "format": format.as_str(),
                "type": resource_type,
                "served": export.entries.len(),
            }),
        })
        .await?;
        Ok(export)
    }

    /// Deletes expired documents waiting for a card signature (erasure and consent documents).
    pub async fn purge_expired(&self) -> Result<u64, PrivacyError> {
        Ok(pending::purge_pending(self.auth.db(), self.auth.now_ms()).await?)
    }
}

// ---------------------------------------------------------------- importing an export

/// Why an export file is refused (every message names the file, and the entry and field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportFileError {
    /// Not JSON at all.
    #[error("{file}: not JSON: {reason}")]
    NotJson {
        /// File.
        file: String,
        /// The parser's message (line and column).
        reason: String,
    },
    /// The top level is not an iPHR export Bundle.
    #[error("{file}: {field}: {reason}")]
    NotAnExport {
        /// File.
        file: String,
        /// The top-level field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// One entry is not usable.
    #[error("{file}: entry[{index}].{field}: {reason}")]
    Entry {
        /// File.
        file: String,
        /// Position in `entry` (from 0).
        index: usize,
        /// The field inside the entry (JSON path).
        field: String,
        /// What is wrong.
        reason: String,
    },
}

/// Whether `file_name` is imported as an export.
pub fn is_export_name(file_name: &str) -> bool {
    file_name.to_ascii_lowercase().ends_with(EXPORT_SUFFIX)
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn valid_type(t: &str) -> bool {
    (1..=64).contains(&t.len())
        && t.starts_with(|c: char| c.is_ascii_uppercase())
        && t.bytes().all(|b| b.is_ascii_alphabetic())
}

/// Longest person key accepted (keys are like `保険者番号:記号:番号:枝番`).
const MAX_KEY_BYTES: usize = 256;

/// Reads one entry's [`STORED_EXTENSION`]s.
fn stored_of(
    entry: &Value,
    resource_type: &str,
    err: &dyn Fn(String, String) -> ExportFileError,
) -> Result<Vec<StoredAs>, ExportFileError> {
    let Some(extensions) = entry.get("extension").and_then(Value::as_array) else {
        return Err(err("extension".into(), "missing (an array)".into()));
    };
    let mut out = Vec::new();
    for (j, ext) in extensions.iter().enumerate() {
        let url = ext.get("url").and_then(Value::as_str);
        if url != Some(STORED_EXTENSION) {
            return Err(err(
                format!("extension[{j}].url"),
                format!("expected {STORED_EXTENSION}"),
            ));
        }
        let Some(parts) = ext.get("extension").and_then(Value::as_array) else {
            return Err(err(
                format!("extension[{j}].extension"),
                "missing (an array)".into(),
            ));
        };
        let (mut key, mut patient, mut category) = (None, None, None);
        for (k, part) in parts.iter().enumerate() {
            let field = |name: &str| format!("extension[{j}].extension[{k}].{name}");
            let value = part
                .get("valueString")
                .and_then(Value::as_str)
                .ok_or_else(|| err(field("valueString"), "missing (a string)".into()))?;
            match part.get("url").and_then(Value::as_str) {
                Some("personKey") if !value.is_empty() && value.len() <= MAX_KEY_BYTES => {
                    key = Some(value.to_owned());
                }
                Some("personKey") => {
                    return Err(err(
                        field("valueString"),
                        format!("a person key must be 1–{MAX_KEY_BYTES} bytes"),
                    ));
                }
                Some("patient") if valid_id(value) => patient = Some(value.to_owned()),
                Some("patient") => {
                    return Err(err(field("valueString"), "not a FHIR id".into()));
                }
                Some("category") => {
                    category = Some(
                        value
                            .parse::<Category>()
                            .map_err(|e| err(field("valueString"), e.to_string()))?,
                    );
                }
                _ => {
                    return Err(err(
                        field("url"),
                        "expected personKey, patient or category".into(),
                    ));
                }
            }
        }
        let person_key = key.ok_or_else(|| {
            err(
                format!("extension[{j}]"),
                "no personKey sub-extension".into(),
            )
        })?;
        let patient_id = patient
            .ok_or_else(|| err(format!("extension[{j}]"), "no patient sub-extension".into()))?;
        if (resource_type == "Patient") != category.is_none() {
            return Err(err(
                format!("extension[{j}]"),
                "a category is required for every resource but a Patient (and none for it)".into(),
            ));
        }
        out.push(StoredAs {
            person_key,
            patient_id,
            category,
        });
    }
    if out.is_empty() {
        return Err(err("extension".into(), format!("no {STORED_EXTENSION}")));
    }
    Ok(out)
}

/// Reads an export file ([`PersonExport::bundle`]) back into its entries, checking everything
/// the store relies on: the format tag, each resource's type and id, `fullUrl`, the storage
/// extensions, one Patient id per person key, no resource twice under one key.
pub fn parse_export(bytes: &[u8], file_name: &str) -> Result<Vec<ExportEntry>, ExportFileError> {
    let file = file_name.to_owned();
    let top: Value = serde_json::from_slice(bytes).map_err(|e| ExportFileError::NotJson {
        file: file.clone(),
        reason: e.to_string(),
    })?;
    let not_export = |field: &'static str, reason: &str| ExportFileError::NotAnExport {
        file: file.clone(),
        field,
        reason: reason.to_owned(),
    };
    if top.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(not_export("resourceType", "expected Bundle"));
    }
    if top.get("type").and_then(Value::as_str) != Some("collection") {
        return Err(not_export("type", "expected collection"));
    }
    let tagged = top
        .pointer("/meta/tag")
        .and_then(Value::as_array)
        .is_some_and(|tags| {
            tags.iter().any(|t| {
                t.get("system").and_then(Value::as_str) == Some(EXPORT_TAG_SYSTEM)
                    && t.get("code").and_then(Value::as_str) == Some(EXPORT_FORMAT)
            })
        });
    if !tagged {
        return Err(not_export(
            "meta.tag",
            &format!(
                "no {EXPORT_TAG_SYSTEM}|{EXPORT_FORMAT} tag (not an iPHR export, or another version)"
            ),
        ));
    }
    let entries = match top.get("entry") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => return Err(not_export("entry", "missing or empty")),
    };
    let mut out = Vec::with_capacity(entries.len());
    let mut patients: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut seen: BTreeSet<(String, String, String)> = BTreeSet::new();
    for (index, entry) in entries.iter().enumerate() {
        let err = |field: String, reason: String| ExportFileError::Entry {
            file: file.clone(),
            index,
            field,
            reason,
        };
        let Some(resource) = entry.get("resource").filter(|r| r.is_object()) else {
            return Err(err("resource".into(), "missing (an object)".into()));
        };
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .filter(|t| valid_type(t))
            .ok_or_else(|| err("resource.resourceType".into(), "missing or invalid".into()))?;
        let id = resource
            .get("id")
            .and_then(Value::as_str)
            .filter(|i| valid_id(i))
            .ok_or_else(|| err("resource.id".into(), "missing or not a FHIR id".into()))?;
        let expected_tail = format!("/{resource_type}/{id}");
        if !entry
            .get("fullUrl")
            .and_then(Value::as_str)
            .is_some_and(|u| u.ends_with(&expected_tail))
        {
            return Err(err(
                "fullUrl".into(),
                format!("missing or not ending in {expected_tail}"),
            ));
        }
        let stored = stored_of(entry, resource_type, &err)?;
        for s in &stored {
            match patients.get(&s.person_key) {
                Some((p, first)) if *p != s.patient_id => {
                    return Err(err(
                        "extension.patient".into(),
                        format!(
                            "person key {} has Patient {} here but {p} in entry[{first}]",
                            s.person_key, s.patient_id
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    patients.insert(s.person_key.clone(), (s.patient_id.clone(), index));
                }
            }
            if !seen.insert((
                resource_type.to_owned(),
                id.to_owned(),
                s.person_key.clone(),
            )) {
                return Err(err(
                    "extension.personKey".into(),
                    format!(
                        "{resource_type}/{id} appears twice under person key {}",
                        s.person_key
                    ),
                ));
            }
        }
        out.push(ExportEntry {
            resource_type: resource_type.to_owned(),
            id: id.to_owned(),
            resource: resource.clone(),
            stored,
        });
    }
    Ok(out)
}

/// An export file as an import: every entry stored under each of its person keys, with its data
/// category and the search columns derived as for any import
/// ([`crate::domain::import::indexed_resource`]); the keys with their Patient ids. Imported
/// all-or-nothing and idempotently like every file (its bytes' SHA-256).
pub fn import_of_export(
    bytes: &[u8],
    file_name: &str,
    source_id: Option<&str>,
) -> Result<NewImport, ExportFileError> {
    let entries = parse_export(bytes, file_name)?;
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    let mut resources: Vec<NewResource> = Vec::new();
    for e in &entries {
        for s in &e.stored {
            keys.entry(s.person_key.clone())
                .or_insert_with(|| s.patient_id.clone());
            resources.push(crate::domain::import::indexed_resource(
                &e.resource_type,
                &e.id,
                &s.person_key,
                s.category.map_or("", Category::as_str),
                &e.resource,
            ));
        }
    }
    Ok(NewImport {
        content_sha256: super::sha256(bytes),
        source_id: source_id.map(str::to_owned),
        file_name: file_name.to_owned(),
        format: "iphr-export".into(),
        records: i64::try_from(entries.len()).unwrap_or(i64::MAX),
        person_keys: keys
            .into_iter()
            .map(|(person_key, patient_id)| NewPersonKey {
                person_key,
                patient_id,
            })
            .collect(),
        resources,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn row(ty: &str, id: &str, key: &str, category: &str, json: &str) -> PersonRow {
        PersonRow {
            resource_type: ty.into(),
            id: id.into(),
            person_key: key.into(),
            patient_id: format!("pat-{key}"),
            category: category.into(),
            json: json.into(),
        }
    }

    fn sample() -> PersonExport {
        PersonExport {
            person_id: "p1".into(),
            at_ms: 1_700_000_000_000,
            entries: group_rows(vec![
                row(
                    "Observation",
                    "o1",
                    "k1",
                    "A.checkup",
                    r#"{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/pat-k1"}}"#,
                ),
                row(
                    "Organization",
                    "org",
                    "k1",
                    "A.checkup",
                    r#"{"resourceType":"Organization","id":"org"}"#,
                ),
                row(
                    "Organization",
                    "org",
                    "k2",
                    "A.claims",
                    r#"{"resourceType":"Organization","id":"org"}"#,
                ),
                row(
                    "Patient",
                    "pat-k1",
                    "k1",
                    "",
                    r#"{"resourceType":"Patient","id":"pat-k1"}"#,
                ),
            ]),
        }
    }

    #[test]
    fn a_resource_shared_by_two_keys_is_one_entry_and_the_bundle_reads_back() {
        let export = sample();
        assert_eq!(export.entries.len(), 3);
        assert_eq!(export.entries[1].stored.len(), 2);
        let bytes = export.bundle("https://kiosk.test/fhir").to_string();
        let back = parse_export(bytes.as_bytes(), "x.iphr-export.json").unwrap();
        assert_eq!(back, export.entries);
        let imp = import_of_export(bytes.as_bytes(), "x.iphr-export.json", None).unwrap();
        assert_eq!(imp.resources.len(), 4);
        assert_eq!(imp.person_keys.len(), 2);
        assert_eq!(imp.resources[0].category, "A.checkup");
        assert_eq!(
            export.ndjson("Organization"),
            "{\"id\":\"org\",\"resourceType\":\"Organization\"}\n"
        );
    }

    fn edited(edit: impl FnOnce(&mut Value)) -> Result<Vec<ExportEntry>, ExportFileError> {
        let mut v = sample().bundle("https://kiosk.test/fhir");
        edit(&mut v);
        parse_export(v.to_string().as_bytes(), "me.iphr-export.json")
    }

    #[test]
    fn refusals_name_the_file_the_entry_and_the_field() {
        let msg = |r: Result<Vec<ExportEntry>, ExportFileError>| r.unwrap_err().to_string();
        assert!(
            msg(parse_export(b"{", "me.iphr-export.json"))
                .starts_with("me.iphr-export.json: not JSON")
        );
        assert_eq!(
            msg(edited(
                |v| v["meta"]["tag"][0]["code"] = json!("iphr-export/9")
            )),
            "me.iphr-export.json: meta.tag: no urn:iphr:export|iphr-export/1 tag (not an iPHR export, or another version)"
        );
        assert_eq!(
            msg(edited(|v| v["type"] = json!("searchset"))),
            "me.iphr-export.json: type: expected collection"
        );
        assert_eq!(
            msg(edited(|v| v["entry"][1]["resource"]["id"] = json!("a b"))),
            "me.iphr-export.json: entry[1].resource.id: missing or not a FHIR id"
        );
        assert_eq!(
            msg(edited(|v| v["entry"][0]["fullUrl"] = json!("urn:uuid:1"))),
            "me.iphr-export.json: entry[0].fullUrl: missing or not ending in /Observation/o1"
        );
        assert_eq!(
            msg(edited(
                |v| v["entry"][0]["extension"][0]["extension"][2]["valueString"] = json!("A.all")
            )),
            "me.iphr-export.json: entry[0].extension[0].extension[2].valueString: unknown data category \"A.all\""
        );
        assert_eq!(
            msg(edited(|v| {
                v["entry"][2]["extension"][0]["extension"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"url": "category", "valueString": "A.checkup"}));
            })),
            "me.iphr-export.json: entry[2].extension[0]: a category is required for every resource but a Patient (and none for it)"
        );
        assert_eq!(
            msg(edited(
                |v| v["entry"][2]["extension"][0]["extension"][1]["valueString"] = json!("other")
            )),
            "me.iphr-export.json: entry[2].extension.patient: person key k1 has Patient other here but pat-k1 in entry[0]"
        );
        assert_eq!(
            msg(edited(|v| {
                let first = v["entry"][0].clone();
                v["entry"].as_array_mut().unwrap().push(first);
            })),
            "me.iphr-export.json: entry[3].extension.personKey: Observation/o1 appears twice under person key k1"
        );
        assert_eq!(
            msg(edited(|v| v["entry"][0]["extension"] = json!([]))),
            "me.iphr-export.json: entry[0].extension: no urn:iphr:export:stored"
        );
    }

    #[test]
    fn erasure_document_hash_covers_every_field() {
        let doc = ErasureDocument {
            format: ERASURE_FORMAT.into(),
            origin: "https://kiosk.example.jp".into(),
            person_id: "p1".into(),
            scope: "all".into(),
            resources_shown: 3,
            issued_at_ms: 1,
            salt: "AAAA".into(),
        };
        let n = doc.nonce();
        for v in [
            ErasureDocument {
                origin: "https://evil.example".into(),
                ..doc.clone()
            },
            ErasureDocument {
                person_id: "p2".into(),
                ..doc.clone()
            },
            ErasureDocument {
                salt: "AAAB".into(),
                ..doc.clone()
            },
        ] {
            assert_ne!(v.nonce(), n);
        }
        let parsed: ErasureDocument = serde_json::from_str(&doc.canonical()).unwrap();
        assert_eq!(parsed.nonce(), n);
    }
}
