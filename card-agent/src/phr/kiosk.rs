//! A kiosk consent written to the PHR card (issue 6 deliverable 3; `docs/phr-card-profile.md`
//! §4, `docs/kiosk.md`): the gateway prepares a consent document, the card writes the matching
//! consent record (tag `E1`, signed by the holder key), and the gateway commits the document only
//! with that record. This module is both halves of the mapping, so that the agent and the gateway
//! cannot disagree on it:
//!
//! - [`KioskConsent`]: the fields of the gateway's document the card needs, and the card terms
//!   they map to ([`KioskConsent::grant_request`]), which the gateway also uses to check a record;
//! - [`write_kiosk_consent`]: one card session that links the service if needed and writes the
//!   grant or revoke record.
//!
//! Mapping rules:
//! - category `A.checkup` → `A:checkup` (unit letter, `:`, the kind cut to its first 16 bytes:
//!   `A.physician-opinion` → `A:physician-opinio`); two categories the gateway knows that would
//!   meet on the card are an error, never a silent merge;
//! - more than 6 categories (a record's limit): units whose every known kind is granted are
//!   written as `U:*`, in the order A, B, C, until the list fits; if it still does not fit, an
//!   error, and nothing is written;
//! - purpose: the document's, cut at a character boundary to at most 48 bytes of UTF-8;
//! - validity of a grant: the document's period in Unix seconds, `floor(ms / 1000)` at both ends;
//! - a revoke: the categories and purpose of the card's current record for the service (valid
//!   from now to the later of its end and now + 1 s), or, when the card has none, no categories,
//!   the document's purpose and a validity of one second from now;
//! - linking an unlinked service: with the pseudonym the caller gives (a source's, from its
//!   enrollment), or else a random one (`p-` and 32 hex digits) that nobody can relate to the
//!   holder or to another service; a service already linked under another pseudonym than the
//!   one given is refused.

use super::card::{
    ConsentRequest, ConsentWritten, HolderSignature, LinkedService, PhrError, check_link_names,
    finish_write, holder_challenge_signature, link_verified, plan_write, revoked_terms, session,
    slot_for_link, snapshot,
};
use super::consent::{
    Category, ConsentStatus, MAX_CATEGORIES, MAX_KIND_LEN, MAX_PURPOSE_LEN, Unit,
};
use super::verify::HolderCert;
use crate::pin::LastTry;
use crate::piv::{PinVerified, Piv, PivPin};
use crate::transport::CardTransport;
use std::collections::BTreeMap;

/// Why a kiosk consent cannot be written (or checked).
#[derive(Debug, thiserror::Error)]
pub enum KioskConsentError {
    /// The gateway's document is not readable.
    #[error("the consent document is not readable: {0}")]
    Document(String),
    /// A gateway category that is not `UNIT.KIND` with unit A, B or C and a kind of a-z 0-9 -.
    #[error("category {0:?} has no form on the card (UNIT.KIND, unit A/B/C, kind of a-z 0-9 -)")]
    Category(String),
    /// Two categories the gateway knows would be the same category on the card.
    #[error("categories {0:?} and {1:?} would be the same category on the card")]
    AmbiguousCategory(String, String),
    /// Too many categories for one record, even with fully granted units collapsed.
    #[error(
        "{count} categories do not fit one card record (at most {MAX_CATEGORIES}, even with fully granted units written as U:*); nothing was written"
    )]
    TooManyCategories {
        /// Categories after collapsing.
        count: usize,
    },
    /// A grant without categories.
    #[error("a grant needs at least one category")]
    NoCategories,
    /// The period is not Unix seconds within u32 with its end after its start.
    #[error("the consent period {start_ms}..{end_ms} ms does not fit the card")]
    Period {
        /// Start (ms).
        start_ms: i64,
        /// End (ms).
        end_ms: i64,
    },
    /// The purpose is empty.
    #[error("the consent document has no purpose")]
    NoPurpose,
    /// The card refused or failed.
    #[error(transparent)]
    Card(#[from] PhrError),
}

impl From<crate::transport::TransportError> for KioskConsentError {
    fn from(e: crate::transport::TransportError) -> Self {
        KioskConsentError::Card(e.into())
    }
}

/// Grant or revoke, as the gateway's document says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KioskAction {
    /// Grant the categories for the period.
    Grant,
    /// Revoke the service's consent.
    Revoke,
}

impl KioskAction {
    /// The record status the action writes.
    pub fn card_status(self) -> ConsentStatus {
        match self {
            KioskAction::Grant => ConsentStatus::Granted,
            KioskAction::Revoke => ConsentStatus::Revoked,
        }
    }
}

/// The fields of a prepared gateway consent document the card needs (the document's canonical
/// JSON has more: origin, person, version, salt; they stay with the gateway).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct KioskConsent {
    /// The web origin the gateway prepared the document for (the agent checks it against the
    /// page's `Origin`).
    #[serde(default)]
    pub origin: Option<String>,
    /// The service (partner or source) id.
    #[serde(rename = "service_id")]
    pub service: String,
    /// Grant or revoke.
    pub action: KioskAction,
    /// Granted categories in the gateway's form (`A.checkup`); empty for a revoke.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Start of the period (ms since the epoch).
    pub period_start_ms: i64,
    /// End of the period (ms, exclusive).
    pub period_end_ms: i64,
    /// Purpose of use (利用目的).
    pub purpose: String,
}

impl KioskConsent {
    /// Reads the gateway's canonical document JSON (as `POST /api/consent/prepare` returns it).
    pub fn from_document(json: &str) -> Result<Self, KioskConsentError> {
        serde_json::from_str(json).map_err(|e| KioskConsentError::Document(e.to_string()))
    }

    /// What the grant record for this document says (categories sorted). `known` are every
    /// category the gateway knows (its wire form), for the unit collapse rule.
    pub fn grant_request<S: AsRef<str>>(
        &self,
        known: &[S],
    ) -> Result<ConsentRequest, KioskConsentError> {
        let categories = card_categories(&self.categories, known)?;
        if categories.is_empty() {
            return Err(KioskConsentError::NoCategories);
        }
        let (not_before, not_after) = card_validity(self.period_start_ms, self.period_end_ms)?;
        Ok(ConsentRequest {
            service: self.service.clone(),
            categories,
            purpose: self.card_purpose()?,
            not_before,
            not_after,
        })
    }

    /// The purpose as the card holds it: cut at a character boundary to at most 48 bytes.
    pub fn card_purpose(&self) -> Result<String, KioskConsentError> {
        let purpose = truncate_utf8(&self.purpose, MAX_PURPOSE_LEN);
        if purpose.is_empty() {
            return Err(KioskConsentError::NoPurpose);
        }
        Ok(purpose.to_owned())
    }
}

/// `text` cut at a character boundary to at most `max` bytes.
pub fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One gateway category (`A.checkup`) as a card category (`A:checkup`).
pub fn card_category(gateway: &str) -> Result<Category, KioskConsentError> {
    let bad = || KioskConsentError::Category(gateway.chars().take(64).collect());
    let (unit, kind) = gateway.split_once('.').ok_or_else(bad)?;
    if !kind.is_ascii() {
        return Err(bad());
    }
    let kind = &kind[..kind.len().min(MAX_KIND_LEN)];
    if kind == "*" {
        return Err(bad());
    }
    Category::parse(&format!("{unit}:{kind}")).map_err(|_| bad())
}

/// The card categories of `granted` (gateway form), sorted and unique, collapsed per unit to
/// `U:*` (A, then B, then C; only units whose every category in `known` is granted) only while
/// there are more than [`MAX_CATEGORIES`].
pub fn card_categories<G: AsRef<str>, K: AsRef<str>>(
    granted: &[G],
    known: &[K],
) -> Result<Vec<Category>, KioskConsentError> {
    // Every gateway category seen, by its card form: two that meet are ambiguous.
    let mut seen: BTreeMap<Category, &str> = BTreeMap::new();
    let texts = known.iter().map(|k| k.as_ref());
    for g in texts.chain(granted.iter().map(|g| g.as_ref())) {
        let c = card_category(g)?;
        if let Some(other) = seen.insert(c, g)
            && other != g
        {
            return Err(KioskConsentError::AmbiguousCategory(
                other.to_owned(),
                g.to_owned(),
            ));
        }
    }
    let mut out: Vec<Category> = granted
        .iter()
        .map(|g| card_category(g.as_ref()))
        .collect::<Result<_, _>>()?;
    out.sort();
    out.dedup();
    for unit in [Unit::A, Unit::B, Unit::C] {
        if out.len() <= MAX_CATEGORIES {
            break;
        }
        let of_unit: Vec<Category> = known
            .iter()
            .filter_map(|k| card_category(k.as_ref()).ok())
            .filter(|c| c.unit == unit)
            .collect();
        let all_granted = of_unit.len() > 1 && of_unit.iter().all(|c| out.contains(c));
        if all_granted {
            out.retain(|c| c.unit != unit);
            out.push(Category {
                unit,
                kind: "*".into(),
            });
            out.sort();
        }
    }
    if out.len() > MAX_CATEGORIES {
        return Err(KioskConsentError::TooManyCategories { count: out.len() });
    }
    Ok(out)
}

/// A period in ms as the card's validity in Unix seconds (`floor(ms / 1000)` at both ends).
pub fn card_validity(start_ms: i64, end_ms: i64) -> Result<(u32, u32), KioskConsentError> {
    let bad = || KioskConsentError::Period { start_ms, end_ms };
    let start = u32::try_from(start_ms.div_euclid(1000)).map_err(|_| bad())?;
    let end = u32::try_from(end_ms.div_euclid(1000)).map_err(|_| bad())?;
    if end <= start {
        return Err(bad());
    }
    Ok((start, end))
}

/// What [`write_kiosk_consent`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KioskWritten {
    /// The link made in the same session, when the service was not linked yet.
    pub linked: Option<LinkedService>,
    /// The record written (its bytes are what the gateway's commit needs).
    pub written: ConsentWritten,
}

impl KioskWritten {
    /// The record's encoding (tag `E1`), for `POST /api/consent/commit`'s `card_record`.
    pub fn record_bytes(&self) -> &[u8] {
        &self.written.record_bytes
    }
}

/// A random pseudonym for a service that gave none (a partner: no enrollment).
fn random_pseudonym() -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
    format!("p-{}", hex::encode(bytes))
}

/// Writes a prepared kiosk consent to the card in one card session: links the service if it
/// is not linked yet (see the module's rules for the pseudonym), then writes the grant or revoke
/// record (version = highest on the card + 1, signed by the holder key at `now`, Unix seconds).
/// Everything that can be refused is checked before the PIN is sent (the mapping, a card that is
/// full, a consent set that would not fit, a service linked as another person); one VERIFY PIN
/// serves both steps; the session ends with a logout whatever happened.
pub fn write_kiosk_consent<T: CardTransport + ?Sized, K: AsRef<str>>(
    t: &mut T,
    pin: &PivPin,
    last_try: LastTry,
    consent: &KioskConsent,
    known: &[K],
    pseudonym: Option<&str>,
    now: u32,
) -> Result<KioskWritten, KioskConsentError> {
    let (written, ()) = write_then(t, pin, last_try, consent, known, pseudonym, now, |_, _| {
        Ok(())
    })?;
    Ok(written)
}

/// [`write_kiosk_consent`], then, under the same VERIFY PIN, the holder key's signature over
/// `challenge` (the token that commits the document at the gateway): one PIN entry, one card
/// session for the whole consent change.
#[allow(clippy::too_many_arguments)]
pub fn write_kiosk_consent_and_sign<T: CardTransport + ?Sized, K: AsRef<str>>(
    t: &mut T,
    pin: &PivPin,
    last_try: LastTry,
    consent: &KioskConsent,
    known: &[K],
    pseudonym: Option<&str>,
    now: u32,
    challenge: &[u8],
) -> Result<(KioskWritten, HolderSignature), KioskConsentError> {
    write_then(
        t,
        pin,
        last_try,
        consent,
        known,
        pseudonym,
        now,
        |piv, holder| holder_challenge_signature(piv, holder, challenge),
    )
}

/// The write, then `after` in the same verified session.
#[allow(clippy::too_many_arguments)]
fn write_then<T: CardTransport + ?Sized, K: AsRef<str>, R>(
    t: &mut T,
    pin: &PivPin,
    last_try: LastTry,
    consent: &KioskConsent,
    known: &[K],
    pseudonym: Option<&str>,
    now: u32,
    after: impl FnOnce(&mut Piv<&mut T, PinVerified>, &HolderCert) -> Result<R, PhrError>,
) -> Result<(KioskWritten, R), KioskConsentError> {
    let service = consent.service.as_str();
    let grant = match consent.action {
        KioskAction::Grant => Some(consent.grant_request(known)?),
        KioskAction::Revoke => None,
    };
    let fallback_purpose = consent.card_purpose()?;
    let new_pseudonym = match pseudonym {
        Some(p) => p.to_owned(),
        None => random_pseudonym(),
    };
    check_link_names(service, &new_pseudonym)?;
    let written = session(t, |t| {
        let mut piv = Piv::select(&mut *t)?;
        let snap = snapshot(&mut piv)?;
        let holder = snap.holder()?.clone();
        let link_slot = match snap.link_for(service, pseudonym)? {
            Some(_) => None,
            None => Some(slot_for_link(&snap, service)?),
        };
        let plan = plan_write(&snap, None, now, service, link_slot, |slot_of, set| {
            let Some(request) = &grant else {
                let slot = slot_of(service)?;
                return Ok(match set.for_service(service) {
                    Some(current) => revoked_terms(slot, current, now),
                    None => (
                        slot,
                        ConsentStatus::Revoked,
                        Vec::new(),
                        fallback_purpose.clone(),
                        now,
                        now.saturating_add(1),
                    ),
                });
            };
            request.grant_terms(slot_of)
        })?;
        let mut piv = piv.verify_pin(pin, last_try)?;
        let linked = match link_slot {
            Some(slot) => Some(link_verified(
                &mut piv,
                &holder,
                slot,
                service,
                &new_pseudonym,
            )?),
            None => None,
        };
        let written = finish_write(&mut piv, plan)?;
        let then = after(&mut piv, &holder)?;
        Ok((KioskWritten { linked, written }, then))
    })?;
    tracing::debug!(
        service,
        version = written.0.written.record.terms.version,
        linked = written.0.linked.is_some(),
        "kiosk consent written to the card"
    );
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: [&str; 10] = [
        "A.checkup",
        "A.claims",
        "A.stress-check",
        "A.physician-opinion",
        "B.attendance",
        "B.work-status",
        "C.interview",
        "C.oh-opinion",
        "C.patrol",
        "C.rework",
    ];

    fn cats(v: &[&str]) -> Vec<String> {
        v.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn gateway_categories_map_to_unit_colon_kind_cut_to_16_bytes() {
        assert_eq!(card_category("A.checkup").unwrap().to_string(), "A:checkup");
        assert_eq!(
            card_category("A.physician-opinion").unwrap().to_string(),
            "A:physician-opinio"
        );
        for bad in ["checkup", "D.checkup", "A.", "A.*", "A.Check", "A.健診"] {
            assert!(card_category(bad).is_err(), "{bad}");
        }
        // Every category the gateway knows has a distinct card form.
        let all = card_categories(&KNOWN, &KNOWN);
        assert!(all.is_ok(), "{all:?}");
    }

    #[test]
    fn units_collapse_only_when_needed_and_only_when_fully_granted() {
        // Six fit: nothing collapses, even a fully granted unit.
        let six = cats(&["B.attendance", "B.work-status", "A.checkup", "C.patrol"]);
        let got = card_categories(&six, &KNOWN).unwrap();
        assert_eq!(
            got.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["A:checkup", "B:attendance", "B:work-status", "C:patrol"]
        );
        // All ten: A collapses (7 left), then B (6: fits), C stays as granted.
        let got = card_categories(&KNOWN, &KNOWN).unwrap();
        assert_eq!(
            got.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "A:*",
                "B:*",
                "C:interview",
                "C:oh-opinion",
                "C:patrol",
                "C:rework"
            ]
        );
        // Seven with no unit fully granted: a clear error.
        let seven = cats(&[
            "A.checkup",
            "A.claims",
            "A.stress-check",
            "B.attendance",
            "C.interview",
            "C.oh-opinion",
            "C.patrol",
        ]);
        assert!(matches!(
            card_categories(&seven, &KNOWN),
            Err(KioskConsentError::TooManyCategories { count: 7 })
        ));
        // Two gateway kinds that would meet on the card.
        let clash = ["A.physician-opinion-1", "A.physician-opinion-2"];
        assert!(matches!(
            card_categories(&clash[..1], &clash),
            Err(KioskConsentError::AmbiguousCategory(..))
        ));
    }

    #[test]
    fn purpose_is_cut_at_a_character_boundary_and_validity_is_floor_seconds() {
        let mut c = KioskConsent::from_document(
            r#"{"format":"x","service_id":"partner-a","action":"grant","categories":["A.checkup"],
               "period_start_ms":1700000000999,"period_end_ms":1731536000999,
               "purpose":"健康管理と両立支援のための記録の取り込み","version":1}"#,
        )
        .unwrap();
        let t = c.grant_request(&KNOWN).unwrap();
        assert_eq!(t.purpose, "健康管理と両立支援のための記録の"); // 16 × 3 bytes
        assert_eq!(t.purpose.len(), 48);
        assert_eq!((t.not_before, t.not_after), (1_700_000_000, 1_731_536_000));
        assert_eq!(truncate_utf8("abcあ", 5), "abc");
        c.purpose = String::new();
        assert!(matches!(
            c.grant_request(&KNOWN),
            Err(KioskConsentError::NoPurpose)
        ));
        assert!(
            card_validity(5_000, 5_999).is_err(),
            "end must be after start"
        );
        assert!(card_validity(-1, 5_000).is_err());
        assert!(card_validity(0, i64::MAX).is_err());
    }
}
