//! Consent (DESIGN §5–§6; security-scenarios E1, E3, E6, E8, E9, D6): the data categories a
//! worker grants to a partner, the decision taken on every partner request, and the consent
//! document the card signs.
//!
//! Decision rules: no consent → deny; a revoke (status `deny`) beats any earlier permit; a permit
//! holds from `period_start_ms` (inclusive) to `period_end_ms` (exclusive) and only for its
//! categories.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A data category: an iPHR unit (A health check, B work status, C occupational health) and a
/// kind within it. The worker consents per category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// A: 健診結果 (特定健診, 事業者健診, 検査値, 判定).
    Checkup,
    /// A: レセプト由来の傷病名・薬剤.
    Claims,
    /// A: ストレスチェック結果.
    StressCheck,
    /// A: 主治医意見書.
    PhysicianOpinion,
    /// B: 勤怠・時間外労働.
    Attendance,
    /// B: 就業状況 (職位, 勤務条件).
    WorkStatus,
    /// C: 面談記録.
    Interview,
    /// C: 産業医意見書・就業判定.
    OhOpinion,
    /// C: 職場巡視記録.
    Patrol,
    /// C: 復職支援評価 (リワーク評価シート).
    Rework,
}

impl Category {
    /// Every category, in display order.
    pub const ALL: [Category; 10] = [
        Category::Checkup,
        Category::Claims,
        Category::StressCheck,
        Category::PhysicianOpinion,
        Category::Attendance,
        Category::WorkStatus,
        Category::Interview,
        Category::OhOpinion,
        Category::Patrol,
        Category::Rework,
    ];

    /// Wire form, e.g. `A.checkup`.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Checkup => "A.checkup",
            Category::Claims => "A.claims",
            Category::StressCheck => "A.stress-check",
            Category::PhysicianOpinion => "A.physician-opinion",
            Category::Attendance => "B.attendance",
            Category::WorkStatus => "B.work-status",
            Category::Interview => "C.interview",
            Category::OhOpinion => "C.oh-opinion",
            Category::Patrol => "C.patrol",
            Category::Rework => "C.rework",
        }
    }

    /// The unit letter.
    pub fn unit(self) -> char {
        self.as_str().chars().next().unwrap_or('A')
    }

    /// What the worker reads at the kiosk.
    pub fn label_ja(self) -> &'static str {
        match self {
            Category::Checkup => "健診結果",
            Category::Claims => "診療情報（傷病名・お薬）",
            Category::StressCheck => "ストレスチェック結果",
            Category::PhysicianOpinion => "主治医意見書",
            Category::Attendance => "勤怠・時間外労働",
            Category::WorkStatus => "就業状況",
            Category::Interview => "産業医面談記録",
            Category::OhOpinion => "産業医意見書・就業判定",
            Category::Patrol => "職場巡視記録",
            Category::Rework => "復職支援の評価",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no category.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown data category {0:?}")]
pub struct UnknownCategory(pub String);

impl FromStr for Category {
    type Err = UnknownCategory;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCategory(s.chars().take(64).collect()))
    }
}

impl Serialize for Category {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Category {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a JSON array of categories (as stored); unknown entries are an error.
pub fn parse_categories(json: &str) -> Result<Vec<Category>, serde_json::Error> {
    let mut v: Vec<Category> = serde_json::from_str(json)?;
    v.sort();
    v.dedup();
    Ok(v)
}

/// The JSON array form of categories (sorted, unique).
pub fn categories_json(categories: &[Category]) -> String {
    let mut v = categories.to_vec();
    v.sort();
    v.dedup();
    let names: Vec<&str> = v.iter().map(|c| c.as_str()).collect();
    // Invariant: a Vec<&str> always serialises.
    serde_json::to_string(&names).unwrap_or_else(|_| "[]".into())
}

/// `permit` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Granted.
    Permit,
    /// Revoked (or refused).
    Deny,
}

impl Status {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Permit => "permit",
            Status::Deny => "deny",
        }
    }

    /// Parses the stored form; anything else is a deny (fail closed).
    pub fn parse(s: &str) -> Status {
        if s == "permit" {
            Status::Permit
        } else {
            Status::Deny
        }
    }
}

/// The current consent of one person towards one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsentState {
    /// Version of the latest document.
    pub version: i64,
    /// Permit or deny.
    pub status: Status,
    /// Granted categories.
    pub categories: Vec<Category>,
    /// Start of the period (inclusive).
    pub period_start_ms: i64,
    /// End of the period (exclusive).
    pub period_end_ms: i64,
}

/// Why a request is refused. All of them look the same to the partner (no existence leak).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// No consent document at all (or no such person).
    NoConsent,
    /// The latest document revokes.
    Revoked,
    /// Before the period starts.
    NotYetValid,
    /// After the period ends.
    Expired,
    /// The category is not among the granted ones.
    CategoryNotGranted,
}

impl DenyReason {
    /// Stable code for the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoConsent => "no_consent",
            DenyReason::Revoked => "revoked",
            DenyReason::NotYetValid => "not_yet_valid",
            DenyReason::Expired => "expired",
            DenyReason::CategoryNotGranted => "category_not_granted",
        }
    }
}

/// Whether the consent is in force at `now_ms` (any category).
pub fn in_force(state: Option<&ConsentState>, now_ms: i64) -> Result<&ConsentState, DenyReason> {
    let state = state.ok_or(DenyReason::NoConsent)?;
    if state.status == Status::Deny {
        return Err(DenyReason::Revoked);
    }
    if now_ms < state.period_start_ms {
        return Err(DenyReason::NotYetValid);
    }
    if now_ms >= state.period_end_ms {
        return Err(DenyReason::Expired);
    }
    Ok(state)
}

/// The decision for one category at `now_ms`.
pub fn decide(
    state: Option<&ConsentState>,
    category: Category,
    now_ms: i64,
) -> Result<(), DenyReason> {
    let state = in_force(state, now_ms)?;
    if state.categories.contains(&category) {
        Ok(())
    } else {
        Err(DenyReason::CategoryNotGranted)
    }
}

/// Grant or revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Grant the categories for the period.
    Grant,
    /// Revoke everything granted to the service.
    Revoke,
}

/// The consent document the card signs (by its hash, as the challenge nonce). Canonical JSON:
/// fields in this order, no whitespace, categories sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentDocument {
    /// Always `iphr-consent/1`.
    pub format: String,
    /// The gateway origin the worker saw.
    pub origin: String,
    /// The person.
    pub person_id: String,
    /// The partner service.
    pub service_id: String,
    /// The version this document creates (previous + 1).
    pub version: i64,
    /// Grant or revoke.
    pub action: Action,
    /// Granted categories (empty for a revoke).
    pub categories: Vec<Category>,
    /// Period start (ms).
    pub period_start_ms: i64,
    /// Period end (ms, exclusive).
    pub period_end_ms: i64,
    /// The purpose the worker was shown.
    pub purpose: String,
    /// When the document was prepared (ms).
    pub issued_at_ms: i64,
    /// 32 random bytes, base64: makes every document's hash unpredictable.
    pub salt: String,
}

/// The document's format tag.
pub const DOCUMENT_FORMAT: &str = "iphr-consent/1";

impl ConsentDocument {
    /// Canonical bytes.
    pub fn canonical(&self) -> String {
        let mut doc = self.clone();
        doc.categories.sort();
        doc.categories.dedup();
        // Invariant: strings, integers and enums always serialise.
        serde_json::to_string(&doc).unwrap_or_default()
    }

    /// The challenge the card signs for this document: base64(SHA-256(canonical)).
    pub fn nonce(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(super::sha256(self.canonical().as_bytes()))
    }

    /// The state this document leads to.
    pub fn resulting_state(&self) -> ConsentState {
        ConsentState {
            version: self.version,
            status: match self.action {
                Action::Grant => Status::Permit,
                Action::Revoke => Status::Deny,
            },
            categories: match self.action {
                Action::Grant => {
                    let mut c = self.categories.clone();
                    c.sort();
                    c.dedup();
                    c
                }
                Action::Revoke => Vec::new(),
            },
            period_start_ms: self.period_start_ms,
            period_end_ms: self.period_end_ms,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn permit(categories: &[Category], start: i64, end: i64) -> ConsentState {
        ConsentState {
            version: 1,
            status: Status::Permit,
            categories: categories.to_vec(),
            period_start_ms: start,
            period_end_ms: end,
        }
    }

    #[test]
    fn category_names_round_trip_and_unknown_ones_are_refused() {
        for c in Category::ALL {
            assert_eq!(c.as_str().parse::<Category>().unwrap(), c);
            assert_eq!(c.unit(), c.as_str().chars().next().unwrap());
        }
        assert!("A.everything".parse::<Category>().is_err());
        assert!(parse_categories(r#"["A.checkup","Z.x"]"#).is_err());
        assert_eq!(
            parse_categories(r#"["C.patrol","A.checkup","A.checkup"]"#).unwrap(),
            vec![Category::Checkup, Category::Patrol]
        );
    }

    #[test]
    fn decision_table() {
        let s = permit(&[Category::Checkup], 1_000, 2_000);
        assert_eq!(
            decide(None, Category::Checkup, 1_500),
            Err(DenyReason::NoConsent)
        );
        assert_eq!(decide(Some(&s), Category::Checkup, 1_500), Ok(()));
        assert_eq!(
            decide(Some(&s), Category::Claims, 1_500),
            Err(DenyReason::CategoryNotGranted)
        );
        assert_eq!(decide(Some(&s), Category::Checkup, 1_000), Ok(()));
        assert_eq!(
            decide(Some(&s), Category::Checkup, 999),
            Err(DenyReason::NotYetValid)
        );
        assert_eq!(decide(Some(&s), Category::Checkup, 1_999), Ok(()));
        assert_eq!(
            decide(Some(&s), Category::Checkup, 2_000),
            Err(DenyReason::Expired)
        );
        let revoked = ConsentState {
            status: Status::Deny,
            ..s.clone()
        };
        assert_eq!(
            decide(Some(&revoked), Category::Checkup, 1_500),
            Err(DenyReason::Revoked)
        );
        assert_eq!(Status::parse("PERMIT"), Status::Deny);
    }

    #[test]
    fn document_hash_covers_every_field() {
        let doc = ConsentDocument {
            format: DOCUMENT_FORMAT.into(),
            origin: "https://kiosk.example.jp".into(),
            person_id: "p1".into(),
            service_id: "s1".into(),
            version: 2,
            action: Action::Grant,
            categories: vec![Category::Patrol, Category::Checkup],
            period_start_ms: 1,
            period_end_ms: 2,
            purpose: "健康管理".into(),
            issued_at_ms: 3,
            salt: "AAAA".into(),
        };
        let n = doc.nonce();
        let variants: Vec<ConsentDocument> = vec![
            ConsentDocument {
                origin: "https://evil.example".into(),
                ..doc.clone()
            },
            ConsentDocument {
                person_id: "p2".into(),
                ..doc.clone()
            },
            ConsentDocument {
                service_id: "s2".into(),
                ..doc.clone()
            },
            ConsentDocument {
                version: 1,
                ..doc.clone()
            },
            ConsentDocument {
                action: Action::Revoke,
                ..doc.clone()
            },
            ConsentDocument {
                categories: vec![Category::Checkup],
                ..doc.clone()
            },
            ConsentDocument {
                period_end_ms: 3,
                ..doc.clone()
            },
            ConsentDocument {
                salt: "AAAB".into(),
                ..doc.clone()
            },
        ];
        for v in variants {
            assert_ne!(v.nonce(), n, "{v:?}");
        }
        let reordered = ConsentDocument {
            categories: vec![Category::Checkup, Category::Patrol],
            ..doc.clone()
        };
        assert_eq!(reordered.nonce(), n);
        let parsed: ConsentDocument = serde_json::from_str(&doc.canonical()).unwrap();
        assert_eq!(parsed.nonce(), n);
    }
}
