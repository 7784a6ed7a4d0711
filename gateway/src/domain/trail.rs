//! What the domain writes to the audit trail (DESIGN §7; security-scenarios E10, G1, G7), and the
//! [`AuditTrail`] port it writes through. A write that fails refuses the action it records.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

pub use super::access::{AccessAction, AccessEvent};

/// A consent change (grant or revoke), signed by the worker's card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentEvent {
    /// When (ms).
    pub at_ms: i64,
    /// The person.
    pub person_id: String,
    /// The partner.
    pub service_id: String,
    /// `grant` or `revoke`.
    pub action: &'static str,
    /// The version created.
    pub version: i64,
    /// Granted categories (wire form).
    pub categories: Vec<String>,
    /// Whether the PHR card holds the change too (its consent record came with the commit).
    pub card_written: bool,
}

/// A file imported (or found already imported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportEvent {
    /// When (ms).
    pub at_ms: i64,
    /// Who delivered it: a source service id, `drop-dir` or `cli`.
    pub actor: String,
    /// File name.
    pub file: String,
    /// Import id.
    pub import_id: i64,
    /// Resources stored (0 for a re-import).
    pub resources: u64,
    /// True when the bytes had been imported before.
    pub duplicate: bool,
    /// The person the file's keys were linked to (a pull with that person's grant).
    pub person_id: Option<String>,
}

/// What happened with a source (`docs/source-protocol.md` §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceAction {
    /// The card was linked at the source.
    Link,
    /// A grant was signed and stored (or refused).
    Grant,
    /// A pull ended, or something in it was refused.
    Pull,
}

/// One event with a source: a link, a grant, a pull's end, a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEvent {
    /// When (ms).
    pub at_ms: i64,
    /// The source's service id (the actor).
    pub source_id: String,
    /// Whose data.
    pub person_id: Option<String>,
    /// What.
    pub action: SourceAction,
    /// `permit` (done), `deny` (refused) or `error` (failed).
    pub outcome: &'static str,
    /// What was done or why it was refused (file names, counts, codes; never file content or
    /// grant bytes).
    pub detail: serde_json::Value,
}

/// What a worker did with their own record (`docs/privacy.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivacyAction {
    /// Downloaded their record (security-scenarios K2).
    Export,
    /// Erased their record (K1).
    Erasure,
}

/// A worker's export or erasure of their own record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivacyEvent {
    /// When (ms).
    pub at_ms: i64,
    /// The person (the actor and whose data).
    pub person_id: String,
    /// What.
    pub action: PrivacyAction,
    /// `permit` (done), `deny` (refused) or `error` (failed).
    pub outcome: &'static str,
    /// Resource references served (`Type/id`; exports).
    pub resources: Vec<String>,
    /// Counts, format, document hash, due dates, reasons (never resource content).
    pub detail: serde_json::Value,
}

/// One audited event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrailEvent {
    /// A partner request, permitted or denied.
    Access(AccessEvent),
    /// A consent document committed.
    Consent(ConsentEvent),
    /// A file imported.
    Import(ImportEvent),
    /// A link, grant, pull or refusal with a source.
    Source(SourceEvent),
    /// A worker's export or erasure of their own record.
    Privacy(PrivacyEvent),
}

/// A boxed future of an audit write.
pub type AuditFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Where events are written durably. `Err` (with a reason) when the write failed.
pub trait AuditTrail: Send + Sync {
    /// Writes one event.
    fn record(&self, event: TrailEvent) -> AuditFuture<'_>;
}

/// An in-memory trail for tests, with a switch that makes every write fail (G7).
#[derive(Debug, Default)]
pub struct MemoryTrail {
    events: Mutex<Vec<TrailEvent>>,
    failing: AtomicBool,
}

impl MemoryTrail {
    /// An empty trail.
    pub fn new() -> Self {
        MemoryTrail::default()
    }

    /// Makes every later write fail (true) or succeed (false).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// The events written so far.
    pub fn events(&self) -> Vec<TrailEvent> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl AuditTrail for MemoryTrail {
    fn record(&self, event: TrailEvent) -> AuditFuture<'_> {
        Box::pin(async move {
            if self.failing.load(Ordering::SeqCst) {
                return Err("audit store unavailable (failpoint)".into());
            }
            self.events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(event);
            Ok(())
        })
    }
}

/// The domain's events as audit-log records (DESIGN §7).
pub fn to_record(event: TrailEvent) -> crate::domain::audit::AuditRecord {
    use crate::domain::audit::{Actor, AuditAction, AuditRecord, Outcome};
    match event {
        TrailEvent::Access(a) => {
            let action = match a.action {
                AccessAction::Read => AuditAction::Read,
                AccessAction::Search => AuditAction::Search,
                AccessAction::Everything => AuditAction::Everything,
                AccessAction::Export => AuditAction::Export,
            };
            let outcome = if a.denied.is_some() {
                Outcome::Deny
            } else {
                Outcome::Permit
            };
            let mut r = AuditRecord::new(a.at_ms, Actor::Partner(a.partner), action, outcome);
            r.person_id = a.person_id;
            r.resources = a.resources;
            r.purpose = a.purpose;
            r.detail = Some(serde_json::json!({
                "served": a.served,
                "reason": a.denied,
            }));
            r
        }
        TrailEvent::Consent(c) => {
            let action = if c.action == "revoke" {
                AuditAction::ConsentRevoke
            } else {
                AuditAction::ConsentGrant
            };
            let mut r = AuditRecord::new(
                c.at_ms,
                Actor::Person(c.person_id.clone()),
                action,
                Outcome::Permit,
            );
            r.person_id = Some(c.person_id);
            r.detail = Some(serde_json::json!({
                "service": c.service_id,
                "version": c.version,
                "categories": c.categories,
                "card_written": c.card_written,
            }));
            r
        }
        TrailEvent::Import(i) => {
            let actor = match i.actor.as_str() {
                "drop-dir" | "cli" => Actor::System,
                other => Actor::Source(other.to_owned()),
            };
            let mut r = AuditRecord::new(i.at_ms, actor, AuditAction::Import, Outcome::Permit);
            r.person_id = i.person_id;
            r.detail = Some(serde_json::json!({
                "file": i.file,
                "import": i.import_id,
                "resources": i.resources,
                "duplicate": i.duplicate,
            }));
            r
        }
        TrailEvent::Source(s) => {
            let action = match s.action {
                SourceAction::Link => AuditAction::SourceLink,
                SourceAction::Grant => AuditAction::SourceGrant,
                SourceAction::Pull => AuditAction::Pull,
            };
            let outcome = Outcome::parse(s.outcome).unwrap_or(Outcome::Error);
            let mut r = AuditRecord::new(s.at_ms, Actor::Source(s.source_id), action, outcome);
            r.person_id = s.person_id;
            r.detail = Some(s.detail);
            r
        }
        TrailEvent::Privacy(p) => {
            let action = match p.action {
                PrivacyAction::Export => AuditAction::Export,
                PrivacyAction::Erasure => AuditAction::Erasure,
            };
            let outcome = Outcome::parse(p.outcome).unwrap_or(Outcome::Error);
            let mut r =
                AuditRecord::new(p.at_ms, Actor::Person(p.person_id.clone()), action, outcome);
            r.person_id = Some(p.person_id);
            r.resources = p.resources;
            r.detail = Some(p.detail);
            r
        }
    }
}

impl AuditTrail for crate::store::audit::AuditLog {
    fn record(&self, event: TrailEvent) -> AuditFuture<'_> {
        Box::pin(async move {
            crate::store::audit::AuditLog::record(self, to_record(event))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}
