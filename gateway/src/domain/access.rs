//! Partner reads within consent (DESIGN §6; security-scenarios E1–E3, E6, E8, E10, G7): every
//! request checks the current consent of (person, partner) at request time, serves only the
//! consented categories, and is written to the audit trail before any data leaves; when the audit
//! write fails the data is not served. A person without consent and a person that does not exist
//! give the same answer ([`AccessError::NotFound`]).

use crate::clock::SharedClock;
use crate::domain::consent::{self, Category, DenyReason};
use crate::domain::trail::{AuditTrail, TrailEvent};
use crate::store::records::{self, Search, StoredResource};
use crate::store::{Db, StoreError};
use std::sync::Arc;

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
    clock: SharedClock,
    audit: Arc<dyn AuditTrail>,
    /// The Patient ids of a person's linked keys, read in the last [`PATIENT_IDS_CACHE_MS`]
    /// (only used to rewrite references; consent is never cached).
    patient_ids: std::sync::Mutex<std::collections::HashMap<String, CachedIds>>,
}

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

impl PartnerAccess {
    /// A service over `db` writing to `audit`.
    pub fn new(db: Db, clock: SharedClock, audit: Arc<dyn AuditTrail>) -> Self {
        PartnerAccess {
            db,
            clock,
            audit,
            patient_ids: std::sync::Mutex::default(),
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
        let head = crate::store::consent::head(&self.db, person_id, partner).await?;
        Ok(consent::in_force(head.as_ref(), now_ms).map(|s| s.categories.clone()))
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
        if let Err(reason) = self.consented(partner, person_id, now).await? {
            return Err(self
                .deny(partner, Some(person_id), AccessAction::Read, reason, now)
                .await);
        }
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
        let copies = records::get_with_consent(&self.db, resource_type, id, partner).await?;
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
        let granted = match self.consented(partner, &p.patient, now).await? {
            Ok(g) => g,
            Err(reason) => {
                return Err(self
                    .deny(partner, Some(&p.patient), AccessAction::Search, reason, now)
                    .await);
            }
        };
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

    /// `Patient/[id]/$everything`: the Patient and every consented resource.
    pub async fn everything(&self, partner: &str, person_id: &str) -> Result<Served, AccessError> {
        self.all_of(partner, person_id, AccessAction::Everything)
            .await
    }

    /// One person's part of a bulk export: as `$everything`, audited as an export.
    pub async fn export_person(
        &self,
        partner: &str,
        person_id: &str,
    ) -> Result<Served, AccessError> {
        self.all_of(partner, person_id, AccessAction::Export).await
    }

    async fn all_of(
        &self,
        partner: &str,
        person_id: &str,
        action: AccessAction,
    ) -> Result<Served, AccessError> {
        let now = self.clock.now_ms();
        let granted = match self.consented(partner, person_id, now).await? {
            Ok(g) => g,
            Err(reason) => {
                return Err(self
                    .deny(partner, Some(person_id), action, reason, now)
                    .await);
            }
        };
        let categories: Vec<&str> = granted.iter().map(|c| c.as_str()).collect();
        let (patient, rows) =
            records::everything_of(&self.db, person_id, &categories, MAX_EVERYTHING).await?;
        let mut served = Vec::with_capacity(rows.len() + 1);
        served.push(patient_resource(person_id, patient.as_deref()));
        served.extend(self.rewrite(person_id, rows).await?);
        self.permit(partner, Some(person_id), action, served, now)
            .await
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

    /// Rewrites the converter's Patient references of the person's keys to `Patient/{person_id}`.
    async fn rewrite(
        &self,
        person_id: &str,
        rows: Vec<StoredResource>,
    ) -> Result<Served, AccessError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.clock.now_ms();
        let cached = self
            .patient_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(person_id)
            .filter(|(_, at)| now.saturating_sub(*at) < PATIENT_IDS_CACHE_MS && *at <= now)
            .map(|(ids, _)| ids.clone());
        let patient_ids = match cached {
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
        };
        let to = format!("\"Patient/{person_id}\"");
        let from: Vec<String> = patient_ids
            .iter()
            .map(|id| format!("\"Patient/{id}\""))
            .collect();
        let mut seen = std::collections::HashSet::new();
        Ok(rows
            .into_iter()
            .filter(|r| seen.insert((r.resource_type.clone(), r.id.clone())))
            .map(|r| {
                let mut json = r.json;
                for f in &from {
                    if json.contains(f.as_str()) {
                        json = json.replace(f.as_str(), &to);
                    }
                }
                ServedResource {
                    reference: format!("{}/{}", r.resource_type, r.id),
                    json,
                }
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
