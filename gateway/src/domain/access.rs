//! Partner reads within consent (DESIGN §6; security-scenarios E1–E3, E6, E8, E10, G7): every
//! request checks the current consent of (person, partner) at request time, serves only the
//! consented categories, and is written to the audit trail before any data leaves; when the audit
//! write fails the data is not served. A person without consent and a person that does not exist
//! give the same answer ([`AccessError::NotFound`]).
//!
//! `$everything` Bundles are kept, bounded by size, per (person, categories in force) with the
//! person's data version they were read at; a request reuses one only when the version read with
//! its consent decision is the same (every change to the person's data bumps it in its own
//! transaction, migration 0010). Consent and the audit write are never skipped.

use crate::clock::SharedClock;
use crate::domain::consent::{self, Category, DenyReason};
use crate::domain::trail::{AuditTrail, TrailEvent};
use crate::store::partner_reads::PartnerReads;
use crate::store::records::{self, Search, StoredResource};
use crate::store::{Db, StoreError};
use bytes::Bytes;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

/// What a partner did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessAction {
    /// `GET [type]/[id]`.
    Read,
    /// `GET [type]?…`.
    Search,
    /// `Patient/[id]/$everything`.
    Everything,
    /// Bulk `$export`.
    Export,
}

impl AccessAction {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessAction::Read => "read",
            AccessAction::Search => "search",
            AccessAction::Everything => "everything",
            AccessAction::Export => "export",
        }
    }
}

/// One access decision, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEvent {
    /// When (ms).
    pub at_ms: i64,
    /// The partner (OAuth client id).
    pub partner: String,
    /// The person, when the request named one.
    pub person_id: Option<String>,
    /// What was asked.
    pub action: AccessAction,
    /// `None` for a permit, the reason for a deny.
    pub denied: Option<&'static str>,
    /// Resource references served (`Type/id`), at most [`MAX_AUDITED_IDS`].
    pub resources: Vec<String>,
    /// Number of resources served.
    pub served: usize,
    /// The partner's purpose (from its registration).
    pub purpose: Option<String>,
}

/// Resource ids listed per audit entry (the count is always exact).
pub const MAX_AUDITED_IDS: usize = 300;

/// Why a partner request is not answered with data.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// No consent, no such person or resource, or not within consent (404, one answer for all).
    #[error("not found")]
    NotFound,
    /// A parameter is out of bounds (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The audit write failed: nothing is served (503).
    #[error("audit trail unavailable: {0}")]
    AuditUnavailable(String),
    /// The store failed (503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Search parameters a partner may give.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchParams {
    /// The person.
    pub patient: String,
    /// Resource type (from the path).
    pub resource_type: String,
    /// `category` mapped to our data categories (None: all consented).
    pub categories: Option<Vec<Category>>,
    /// A FHIR category code (`laboratory` …).
    pub fhir_category: Option<String>,
    /// `system|code`.
    pub code: Option<String>,
    /// `date=ge…`.
    pub date_from: Option<String>,
    /// `date=le…`.
    pub date_to: Option<String>,
    /// Page size.
    pub count: i64,
    /// Offset.
    pub offset: i64,
}

/// Largest page (`_count`); larger requests are refused (J4).
pub const MAX_PAGE: i64 = 500;
/// Largest `$everything` answer, in resources.
pub const MAX_EVERYTHING: i64 = 5_000;

/// The consent-checked read service.
pub struct PartnerAccess {
    db: Db,
    /// The hot reads (own SQLite connections on SQLite).
    reads: PartnerReads,
    clock: SharedClock,
    audit: Arc<dyn AuditTrail>,
    /// The Patient ids of a person's linked keys, read in the last [`PATIENT_IDS_CACHE_MS`]
    /// (only used to rewrite references; consent is never cached).
    patient_ids: std::sync::Mutex<std::collections::HashMap<String, CachedIds>>,
    /// Assembled `$everything` Bundles by (person, categories in force).
    bundles: quick_cache::sync::Cache<BundleKey, VersionedBundle, BundleWeighter>,
}

/// (person, categories in force joined by `,`).
type BundleKey = (String, String);

/// A Bundle and the person's data version it was read at.
#[derive(Clone)]
struct VersionedBundle {
    data_version: i64,
    bundle: Arc<EverythingBundle>,
}

/// Weighs a kept Bundle by its bytes.
#[derive(Clone)]
struct BundleWeighter;

impl quick_cache::Weighter<BundleKey, VersionedBundle> for BundleWeighter {
    fn weight(&self, key: &BundleKey, value: &VersionedBundle) -> u64 {
        (key.0.len() + key.1.len()) as u64 + value.bundle.weight
    }
}

/// Bytes of assembled `$everything` Bundles kept by default.
pub const DEFAULT_BUNDLE_CACHE_BYTES: u64 = 64 << 20;

/// A person's Patient ids and when they were read (ms).
type CachedIds = (Arc<Vec<String>>, i64);

/// How long a person's Patient ids are reused (a new link shows in rewritten references at most
/// this late).
pub const PATIENT_IDS_CACHE_MS: i64 = 1_000;

/// One served resource: its reference (`Type/id`) and JSON (already rewritten to the person's
/// Patient id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedResource {
    /// `Type/id`.
    pub reference: String,
    /// The resource.
    pub json: String,
}

/// What a request serves.
pub type Served = Vec<ServedResource>;

/// `Type/id` as (type, id), for ordering by type then id.
fn type_and_id(reference: &str) -> (&str, &str) {
    reference.split_once('/').unwrap_or((reference, ""))
}

/// `text` with every `from` replaced by `to`, in one SIMD search pass (unchanged, without a
/// copy, when `from` does not occur).
fn replace_all(text: String, from: &str, to: &str) -> String {
    let finder = memchr::memmem::Finder::new(from.as_bytes());
    let mut hits = finder.find_iter(text.as_bytes()).peekable();
    if hits.peek().is_none() {
        return text;
    }
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut last = 0;
    for at in hits {
        out.push_str(text.get(last..at).unwrap_or_default());
        out.push_str(to);
        last = at + from.len();
    }
    out.push_str(text.get(last..).unwrap_or_default());
    out
}

/// The converter's Patient references of a person's keys (`"Patient/{patient id}"`, quotes
/// included so only whole references match) and what they become: `"Patient/{person id}"`.
struct PatientRefs {
    to: String,
    from: Vec<String>,
}

impl PatientRefs {
    fn new<'a>(person_id: &str, patient_ids: impl IntoIterator<Item = &'a str>) -> Self {
        PatientRefs {
            to: format!("\"Patient/{person_id}\""),
            from: patient_ids
                .into_iter()
                .map(|id| format!("\"Patient/{id}\""))
                .collect(),
        }
    }

    /// `text` with every one of the keys' references rewritten to the person.
    fn apply(&self, mut text: String) -> String {
        for from in &self.from {
            text = replace_all(text, from, &self.to);
        }
        text
    }
}

/// What `Patient/[id]/$everything` serves: the Patient, then the consented resources by type
/// then id, their references and JSON each back to back in one string.
#[derive(Debug)]
pub struct EverythingBundle {
    /// The person's Patient resource (under the person's id).
    pub patient: ServedResource,
    /// The resources' references (`Type/id`), back to back.
    references: String,
    /// The resources' JSON, back to back.
    json: String,
    /// Per resource: the ranges of its reference and of its JSON.
    spans: Vec<(Range<usize>, Range<usize>)>,
    /// Approximate bytes held, a rendered body included.
    weight: u64,
    /// The body the HTTP layer rendered from this Bundle, once.
    rendered: OnceLock<Bytes>,
}

/// The ranges of the [`records::RECORD_SEPARATOR`]-separated pieces of `text`.
fn pieces(text: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut start = 0;
    text.split(records::RECORD_SEPARATOR).map(move |piece| {
        let range = start..start + piece.len();
        start = range.end + records::RECORD_SEPARATOR.len_utf8();
        range
    })
}

impl EverythingBundle {
    /// Splits the aggregated rows (`count` references and as many JSON values, each
    /// [`records::RECORD_SEPARATOR`]-separated), putting them in type-then-id order when they are
    /// not, one copy per reference.
    fn from_rows(
        patient: ServedResource,
        references: String,
        json: String,
        count: i64,
    ) -> Result<Self, StoreError> {
        let mut spans = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        if count > 0 {
            let mut refs = pieces(&references);
            for piece in pieces(&json) {
                let Some(reference) = refs.next() else {
                    spans.clear();
                    break;
                };
                spans.push((reference, piece));
            }
            if refs.next().is_some() || i64::try_from(spans.len()) != Ok(count) {
                return Err(StoreError::Inconsistent(format!(
                    "$everything: {count} rows did not split into as many resources"
                )));
            }
        }
        let key = |r: &Range<usize>| type_and_id(references.get(r.clone()).unwrap_or_default());
        if !spans.windows(2).all(|w| key(&w[0].0) < key(&w[1].0)) {
            spans.sort_by(|a, b| key(&a.0).cmp(&key(&b.0)));
            spans.dedup_by(|a, b| key(&a.0) == key(&b.0));
        }
        let held = patient.json.len() + references.len() + json.len();
        Ok(EverythingBundle {
            weight: (2 * held + spans.len() * 32) as u64,
            patient,
            references,
            json,
            spans,
            rendered: OnceLock::new(),
        })
    }

    /// Assembles the Bundle from the aggregated rows: Patient references to any of the person's
    /// keys' Patient ids rewritten to `Patient/{person_id}`.
    fn assemble(person_id: &str, rows: records::EverythingRows) -> Result<Self, StoreError> {
        let patient = patient_resource(person_id, rows.patient.as_deref());
        let ids = rows
            .patient_ids
            .split(records::RECORD_SEPARATOR)
            .filter(|id| !id.is_empty());
        let resources = PatientRefs::new(person_id, ids).apply(rows.resources);
        Self::from_rows(patient, rows.references, resources, rows.count)
    }

    /// The body `render` makes of this Bundle, rendered on the first call only (a Bundle kept
    /// for later requests is rendered once).
    pub fn rendered(&self, render: impl FnOnce(&Self) -> Bytes) -> Bytes {
        self.rendered.get_or_init(|| render(self)).clone()
    }

    /// Resources served, the Patient included.
    pub fn len(&self) -> usize {
        self.spans.len() + 1
    }

    /// Never empty: the Patient is always served.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// `Type/id` of each resource after the Patient, in Bundle order.
    pub fn references(&self) -> impl Iterator<Item = &str> {
        self.resources().map(|(r, _)| r)
    }

    /// Every resource, the Patient first: its reference and JSON, in Bundle order.
    pub fn all(&self) -> impl Iterator<Item = (&str, &str)> {
        std::iter::once((self.patient.reference.as_str(), self.patient.json.as_str()))
            .chain(self.resources())
    }

    /// Each resource after the Patient: its reference and JSON, in Bundle order.
    pub fn resources(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans.iter().map(|(r, j)| {
            (
                self.references.get(r.clone()).unwrap_or_default(),
                self.json.get(j.clone()).unwrap_or_default(),
            )
        })
    }
}

impl PartnerAccess {
    /// A service over `db` writing to `audit`.
    pub fn new(db: Db, clock: SharedClock, audit: Arc<dyn AuditTrail>) -> Self {
        Self::with_bundle_cache(db, clock, audit, DEFAULT_BUNDLE_CACHE_BYTES)
    }

    /// As [`PartnerAccess::new`], keeping up to `bytes` of assembled `$everything` Bundles (0:
    /// none).
    pub fn with_bundle_cache(
        db: Db,
        clock: SharedClock,
        audit: Arc<dyn AuditTrail>,
        bytes: u64,
    ) -> Self {
        PartnerAccess {
            reads: PartnerReads::new(db.clone()),
            db,
            clock,
            audit,
            patient_ids: std::sync::Mutex::default(),
            // About one entry per 256 KiB (a 300-resource Bundle is about that size).
            bundles: quick_cache::sync::Cache::with_weighter(
                usize::try_from(bytes >> 18).unwrap_or(usize::MAX).max(1),
                bytes,
                BundleWeighter,
            ),
        }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    async fn consented(
        &self,
        partner: &str,
        person_id: &str,
        now_ms: i64,
    ) -> Result<Result<Vec<Category>, DenyReason>, StoreError> {
        let (head, _) = self.reads.head_and_data_version(person_id, partner).await?;
        Ok(consent::in_force(head.as_ref(), now_ms).map(|s| s.categories.clone()))
    }

    /// The categories in force, or the refusal (audited) when no consent is.
    async fn granted(
        &self,
        partner: &str,
        person_id: &str,
        action: AccessAction,
        now_ms: i64,
    ) -> Result<Vec<Category>, AccessError> {
        match self.consented(partner, person_id, now_ms).await? {
            Ok(granted) => Ok(granted),
            Err(reason) => Err(self
                .deny(partner, Some(person_id), action, reason, now_ms)
                .await),
        }
    }

    async fn audit(
        &self,
        partner: &str,
        person_id: Option<&str>,
        action: AccessAction,
        outcome: Result<&[ServedResource], DenyReason>,
        now_ms: i64,
    ) -> Result<(), AccessError> {
        let (denied, resources, served) = match outcome {
            Ok(served) => {
                let ids: Vec<String> = served
                    .iter()
                    .take(MAX_AUDITED_IDS)
                    .map(|r| r.reference.clone())
                    .collect();
                (None, ids, served.len())
            }
            Err(reason) => (Some(reason.as_str()), Vec::new(), 0),
        };
        self.record_access(
            partner, person_id, action, denied, resources, served, now_ms,
        )
        .await
    }

    /// Writes one access entry; an audit failure refuses the access.
    #[allow(clippy::too_many_arguments)]
    async fn record_access(
        &self,
        partner: &str,
        person_id: Option<&str>,
        action: AccessAction,
        denied: Option<&'static str>,
        resources: Vec<String>,
        served: usize,
        now_ms: i64,
    ) -> Result<(), AccessError> {
        self.audit
            .record(TrailEvent::Access(AccessEvent {
                at_ms: now_ms,
                partner: partner.to_owned(),
                person_id: person_id.map(str::to_owned),
                action,
                denied,
                resources,
                served,
                purpose: None,
            }))
            .await
            .map_err(AccessError::AuditUnavailable)
    }

    /// Denies (audited) and answers `NotFound`.
    async fn deny(
        &self,
        partner: &str,
        person_id: Option<&str>,
        action: AccessAction,
        reason: DenyReason,
        now_ms: i64,
    ) -> AccessError {
        match self
            .audit(partner, person_id, action, Err(reason), now_ms)
            .await
        {
            Ok(()) => AccessError::NotFound,
            Err(e) => e,
        }
    }

    /// Permits (audited) and hands back what is served.
    async fn permit(
        &self,
        partner: &str,
        person_id: Option<&str>,
        action: AccessAction,
        served: Served,
        now_ms: i64,
    ) -> Result<Served, AccessError> {
        self.audit(partner, person_id, action, Ok(&served), now_ms)
            .await?;
        Ok(served)
    }

    /// `Patient/{id}`: the person's demographics, when any consent is in force.
    pub async fn patient(
        &self,
        partner: &str,
        person_id: &str,
    ) -> Result<ServedResource, AccessError> {
        let now = self.clock.now_ms();
        self.granted(partner, person_id, AccessAction::Read, now)
            .await?;
        let json = self.patient_json(person_id).await?;
        let mut served = self
            .permit(
                partner,
                Some(person_id),
                AccessAction::Read,
                vec![json],
                now,
            )
            .await?;
        served.pop().ok_or(AccessError::NotFound)
    }

    async fn patient_json(&self, person_id: &str) -> Result<ServedResource, AccessError> {
        let stored = records::patient_of(&self.db, person_id).await?;
        Ok(patient_resource(person_id, stored.as_deref()))
    }

    /// `[type]/[id]`: one resource, when its person consented to its category.
    pub async fn read(
        &self,
        partner: &str,
        resource_type: &str,
        id: &str,
    ) -> Result<ServedResource, AccessError> {
        if resource_type == "Patient" {
            return self.patient(partner, id).await;
        }
        let now = self.clock.now_ms();
        let copies = self
            .reads
            .get_with_consent(resource_type, id, partner)
            .await?;
        let mut last_reason = DenyReason::NoConsent;
        for (copy, head) in copies {
            let Some(person) = copy.person_id.clone() else {
                continue;
            };
            let person = person.as_str();
            let Ok(category) = copy.category.parse::<Category>() else {
                continue;
            };
            match consent::decide(head.as_ref(), category, now) {
                Ok(()) => {
                    let json = self.rewrite(person, vec![copy]).await?;
                    let mut served = self
                        .permit(partner, Some(person), AccessAction::Read, json, now)
                        .await?;
                    return served.pop().ok_or(AccessError::NotFound);
                }
                Err(reason) => last_reason = reason,
            }
        }
        Err(self
            .deny(partner, None, AccessAction::Read, last_reason, now)
            .await)
    }

    /// `[type]?patient=…`: the person's resources within consent and the filters.
    pub async fn search(&self, partner: &str, p: &SearchParams) -> Result<Served, AccessError> {
        if !(1..=MAX_PAGE).contains(&p.count) {
            return Err(AccessError::BadRequest(format!(
                "_count must be 1..={MAX_PAGE}"
            )));
        }
        let now = self.clock.now_ms();
        let granted = self
            .granted(partner, &p.patient, AccessAction::Search, now)
            .await?;
        let categories: Vec<String> = granted
            .iter()
            .filter(|c| p.categories.as_ref().is_none_or(|want| want.contains(c)))
            .map(|c| c.as_str().to_owned())
            .collect();
        let found = if p.resource_type == "Patient" {
            vec![self.patient_json(&p.patient).await?]
        } else {
            let rows = records::search(
                &self.db,
                &p.patient,
                &Search {
                    categories,
                    resource_type: Some(p.resource_type.clone()),
                    fhir_category: p.fhir_category.clone(),
                    code: p.code.clone(),
                    date_from: p.date_from.clone(),
                    date_to: p.date_to.clone(),
                    limit: p.count,
                    offset: p.offset,
                },
            )
            .await?;
            self.rewrite(&p.patient, rows).await?
        };
        self.permit(partner, Some(&p.patient), AccessAction::Search, found, now)
            .await
    }

    /// `Patient/[id]/$everything`: the Patient and every consented resource (one copy per
    /// `Type/id`, by type then id), read in one statement as three aggregated values, or kept
    /// from an earlier request at the same data version.
    pub async fn everything(
        &self,
        partner: &str,
        person_id: &str,
    ) -> Result<Arc<EverythingBundle>, AccessError> {
        self.all_of(partner, person_id, AccessAction::Everything)
            .await
    }

    /// One person's part of a bulk export: as `$everything` (one resource per NDJSON line),
    /// audited as an export. Read afresh and not kept (an export walks every person once).
    pub async fn export_person(
        &self,
        partner: &str,
        person_id: &str,
    ) -> Result<Arc<EverythingBundle>, AccessError> {
        self.all_of(partner, person_id, AccessAction::Export).await
    }

    async fn all_of(
        &self,
        partner: &str,
        person_id: &str,
        action: AccessAction,
    ) -> Result<Arc<EverythingBundle>, AccessError> {
        let now = self.clock.now_ms();
        let (head, data_version) = self.reads.head_and_data_version(person_id, partner).await?;
        let granted = match consent::in_force(head.as_ref(), now) {
            Ok(state) => &state.categories,
            Err(reason) => {
                return Err(self
                    .deny(partner, Some(person_id), action, reason, now)
                    .await);
            }
        };
        let categories: Vec<&str> = granted.iter().map(|c| c.as_str()).collect();
        // Bulk export walks every person once: it neither reuses nor keeps Bundles.
        let key = (action == AccessAction::Everything)
            .then(|| (person_id.to_owned(), categories.join(",")));
        let kept = key.as_ref().and_then(|k| self.bundles.get(k));
        let bundle = match kept {
            Some(kept) if kept.data_version == data_version => kept.bundle,
            _ => {
                let rows = self
                    .reads
                    .everything_rows(person_id, &categories, MAX_EVERYTHING)
                    .await?;
                let read_at = rows.data_version;
                let bundle = Arc::new(EverythingBundle::assemble(person_id, rows)?);
                if let Some(key) = key {
                    self.bundles.insert(
                        key,
                        VersionedBundle {
                            data_version: read_at,
                            bundle: bundle.clone(),
                        },
                    );
                }
                bundle
            }
        };
        let audited: Vec<String> = bundle
            .all()
            .map(|(reference, _)| reference.to_owned())
            .take(MAX_AUDITED_IDS)
            .collect();
        self.record_access(
            partner,
            Some(person_id),
            action,
            None,
            audited,
            bundle.len(),
            now,
        )
        .await?;
        Ok(bundle)
    }

    /// Persons whose consent to `partner` is in force (for `GET Patient` and bulk export).
    pub async fn consenting(
        &self,
        partner: &str,
        count: i64,
        after: &str,
    ) -> Result<Vec<String>, AccessError> {
        if !(1..=MAX_PAGE).contains(&count) {
            return Err(AccessError::BadRequest(format!(
                "_count must be 1..={MAX_PAGE}"
            )));
        }
        let now = self.clock.now_ms();
        Ok(crate::store::consent::consenting_persons(&self.db, partner, now, count, after).await?)
    }

    /// The converter's Patient ids of the person's keys (reused for [`PATIENT_IDS_CACHE_MS`]).
    async fn patient_ids(&self, person_id: &str) -> Result<Arc<Vec<String>>, AccessError> {
        let now = self.clock.now_ms();
        let cached = self
            .patient_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(person_id)
            .filter(|(_, at)| now.saturating_sub(*at) < PATIENT_IDS_CACHE_MS && *at <= now)
            .map(|(ids, _)| ids.clone());
        Ok(match cached {
            Some(ids) => ids,
            None => {
                let ids = Arc::new(records::patient_ids_of(&self.db, person_id).await?);
                let mut cache = self
                    .patient_ids
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if cache.len() >= 50_000 {
                    cache.clear();
                }
                cache.insert(person_id.to_owned(), (ids.clone(), now));
                ids
            }
        })
    }

    /// Rewrites the converter's Patient references of the person's keys to `Patient/{person_id}`.
    async fn rewrite(
        &self,
        person_id: &str,
        rows: Vec<StoredResource>,
    ) -> Result<Served, AccessError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let patient_ids = self.patient_ids(person_id).await?;
        let refs = PatientRefs::new(person_id, patient_ids.iter().map(String::as_str));
        let mut seen = std::collections::HashSet::new();
        Ok(rows
            .into_iter()
            .filter(|r| seen.insert((r.resource_type.clone(), r.id.clone())))
            .map(|r| ServedResource {
                reference: format!("{}/{}", r.resource_type, r.id),
                json: refs.apply(r.json),
            })
            .collect())
    }
}

/// The person's Patient resource: the newest stored one (demographics) under the person's id.
fn patient_resource(person_id: &str, stored: Option<&str>) -> ServedResource {
    let mut value: serde_json::Value = match stored {
        Some(s) => serde_json::from_str(s).unwrap_or_else(|_| serde_json::json!({})),
        None => serde_json::json!({ "resourceType": "Patient" }),
    };
    if let Some(obj) = value.as_object_mut() {
        obj.insert("resourceType".into(), "Patient".into());
        obj.insert("id".into(), person_id.into());
    }
    ServedResource {
        reference: format!("Patient/{person_id}"),
        json: value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(
        references: &[&str],
        json: &[&str],
        count: i64,
    ) -> Result<EverythingBundle, StoreError> {
        let sep = records::RECORD_SEPARATOR.to_string();
        EverythingBundle::from_rows(
            patient_resource("p1", None),
            references.join(&sep),
            json.join(&sep),
            count,
        )
    }

    #[test]
    fn rows_are_split_in_order() {
        let b = bundle(
            &["Condition/c", "Observation/o"],
            &["{\"c\":1}", "{\"o\":2}"],
            2,
        )
        .unwrap();
        let got: Vec<_> = b.resources().collect();
        assert_eq!(
            got,
            [("Condition/c", "{\"c\":1}"), ("Observation/o", "{\"o\":2}")]
        );
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn rows_out_of_order_are_sorted_by_type_then_id_once_each() {
        // `Medication` sorts before `MedicationRequest` as a type, whatever the id.
        let b = bundle(
            &[
                "MedicationRequest/a",
                "Medication/z",
                "Medication/z",
                "Condition/c",
            ],
            &["{\"mr\":1}", "{\"m\":1}", "{\"m\":2}", "{\"c\":1}"],
            4,
        )
        .unwrap();
        let refs: Vec<_> = b.references().collect();
        assert_eq!(refs, ["Condition/c", "Medication/z", "MedicationRequest/a"]);
        let json: Vec<_> = b.resources().map(|(_, j)| j).collect();
        assert_eq!(json, ["{\"c\":1}", "{\"m\":1}", "{\"mr\":1}"]);
    }

    #[test]
    fn patient_references_are_replaced_everywhere_and_only_whole() {
        let text = r#"{"s":"Patient/a"},{"s":"Patient/ab"},{"s":"Patient/a"}"#.to_owned();
        assert_eq!(
            replace_all(text, "\"Patient/a\"", "\"Patient/p1\""),
            r#"{"s":"Patient/p1"},{"s":"Patient/ab"},{"s":"Patient/p1"}"#
        );
        let untouched = "{}".to_owned();
        assert_eq!(replace_all(untouched, "\"Patient/a\"", "x"), "{}");
    }

    #[test]
    fn rows_that_do_not_split_into_the_count_are_refused() {
        // A raw separator inside a stored value: one more piece than rows.
        assert!(matches!(
            bundle(&["Observation/o"], &["{\"a\":1}", "{\"b\":2}"], 1),
            Err(StoreError::Inconsistent(_))
        ));
        assert!(matches!(
            bundle(&["Observation/o", "Observation/p"], &["{}"], 2),
            Err(StoreError::Inconsistent(_))
        ));
        assert_eq!(bundle(&[], &[], 0).unwrap().len(), 1);
    }

    #[test]
    fn a_kept_bundle_is_rendered_once() {
        let b = bundle(&["Observation/o"], &["{}"], 1).unwrap();
        let calls = std::cell::Cell::new(0);
        let render = |b: &EverythingBundle| {
            calls.set(calls.get() + 1);
            Bytes::from(b.len().to_string())
        };
        assert_eq!(b.rendered(render), "2");
        assert_eq!(b.rendered(render), "2");
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn patient_ids_of_every_linked_key_are_rewritten_to_the_person() {
        let sep = records::RECORD_SEPARATOR;
        let rows = records::EverythingRows {
            data_version: 3,
            patient_ids: format!("k1{sep}k2"),
            patient: None,
            count: 2,
            references: format!("Observation/a{sep}Observation/b"),
            resources: format!(r#"{{"s":"Patient/k1"}}{sep}{{"s":"Patient/k2","t":"Patient/k3"}}"#),
        };
        let b = EverythingBundle::assemble("p1", rows).unwrap();
        let json: Vec<_> = b.resources().map(|(_, j)| j).collect();
        assert_eq!(
            json,
            [
                r#"{"s":"Patient/p1"}"#,
                r#"{"s":"Patient/p1","t":"Patient/k3"}"#
            ]
        );
    }
}
