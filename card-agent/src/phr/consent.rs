//! Consent records and the consent set, as `docs/phr-card-profile.md` §4 defines them.
//!
//! A consent record is a BER-TLV (tag `E1`) of fixed field order, signed by the holder key
//! (slot 9A) over `"iPHR-consent-v1\0"` ‖ the field TLVs. The consent set (tag `E0`) holds the
//! latest record per linked service, a generation number and a truncated SHA-256 check value; it
//! is stored in one of two PIV data objects, alternately. Parsing is strict: fields in order, no
//! unknown tags, minimal lengths (the bytes must re-encode to themselves), bounded sizes.

use crate::piv::tlv::{self, TlvError, TlvReader};
use sha2::{Digest, Sha256};

/// Domain separation prefix of the bytes a consent record's signature covers.
pub const CONSENT_DOMAIN: &[u8] = b"iPHR-consent-v1\0";
/// Format version of records and sets.
pub const FORMAT: u8 = 1;
/// Longest service id (bytes).
pub const MAX_SERVICE_LEN: usize = 32;
/// Longest purpose (bytes of UTF-8).
pub const MAX_PURPOSE_LEN: usize = 48;
/// Longest category kind.
pub const MAX_KIND_LEN: usize = 16;
/// Most categories in one record.
pub const MAX_CATEGORIES: usize = 6;
/// Most records in a set (one per retired key slot).
pub const MAX_RECORDS: usize = 20;
/// Longest DER ECDSA P-256 signature.
pub const MAX_SIGNATURE_LEN: usize = 72;

/// Why bytes are not a valid consent record or set, or a record cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentFormatError {
    /// Not well-formed TLV.
    #[error("consent data: {0}")]
    Tlv(#[from] TlvError),
    /// A field breaks the profile's rules.
    #[error("consent data: {field}: {reason}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The bytes parse but are not the canonical encoding.
    #[error("consent data: not in canonical encoding")]
    NotCanonical,
    /// The consent set's check value does not match (torn or altered object).
    #[error("consent set: check value mismatch")]
    CheckValue,
}

fn field(field: &'static str, reason: impl Into<String>) -> ConsentFormatError {
    ConsentFormatError::Field {
        field,
        reason: reason.into(),
    }
}

/// The iPHR record units (DESIGN.md §5).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Unit {
    /// A: health-check data.
    A,
    /// B: work status.
    B,
    /// C: occupational health.
    C,
}

impl Unit {
    fn byte(self) -> u8 {
        match self {
            Unit::A => b'A',
            Unit::B => b'B',
            Unit::C => b'C',
        }
    }
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'A' => Some(Unit::A),
            b'B' => Some(Unit::B),
            b'C' => Some(Unit::C),
            _ => None,
        }
    }
}

/// A data category: unit and kind (e.g. `A:health-check`, `C:interview`, `A:*` for the unit).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Category {
    /// The unit.
    pub unit: Unit,
    /// The kind within the unit: lower-case letters, digits, `-`, or `*` for all.
    pub kind: String,
}

impl Category {
    /// Parses `A:health-check`.
    pub fn parse(text: &str) -> Result<Self, ConsentFormatError> {
        let (unit, kind) = text
            .split_once(':')
            .ok_or_else(|| field("category", format!("{text:?} is not UNIT:KIND")))?;
        let unit = match unit {
            "A" => Unit::A,
            "B" => Unit::B,
            "C" => Unit::C,
            _ => return Err(field("category", format!("unit {unit:?} is not A, B or C"))),
        };
        check_kind(kind)?;
        Ok(Category {
            unit,
            kind: kind.to_owned(),
        })
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}:{}", self.unit, self.kind)
    }
}

fn check_kind(kind: &str) -> Result<(), ConsentFormatError> {
    let ok = kind == "*"
        || (!kind.is_empty()
            && kind.len() <= MAX_KIND_LEN
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
    if ok {
        Ok(())
    } else {
        Err(field(
            "category kind",
            format!("{kind:?}: 1–{MAX_KIND_LEN} of a-z 0-9 -, or *"),
        ))
    }
}

/// Checks a service id: 1–32 of `a-z 0-9 . - _`.
pub fn check_service_id(id: &str) -> Result<(), ConsentFormatError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_SERVICE_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(field(
            "service id",
            format!("{id:?}: 1–{MAX_SERVICE_LEN} of a-z 0-9 . - _"),
        ))
    }
}

/// Granted or revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    /// The service may receive the categories for the purpose within the validity.
    Granted,
    /// Consent withdrawn (撤回); the categories are those withdrawn.
    Revoked,
}

/// The signed content of a consent record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConsentTerms {
    /// Card-wide monotonic version: greater than every earlier record on the card.
    pub version: u32,
    /// The service (as named in its binding certificate).
    pub service: String,
    /// The service's retired key slot (`82`–`95`).
    pub slot: u8,
    /// Granted or revoked.
    pub status: ConsentStatus,
    /// Data categories.
    pub categories: Vec<Category>,
    /// Purpose of use (利用目的), short text.
    pub purpose: String,
    /// Valid from (Unix seconds).
    pub not_before: u32,
    /// Valid until (Unix seconds).
    pub not_after: u32,
    /// When the holder signed it (Unix seconds).
    pub signed_at: u32,
}

impl ConsentTerms {
    /// Checks the rules of the profile.
    pub fn check(&self) -> Result<(), ConsentFormatError> {
        check_service_id(&self.service)?;
        if !(0x82..=0x95).contains(&self.slot) {
            return Err(field("slot", format!("{:#04x} is not 82–95", self.slot)));
        }
        if self.categories.len() > MAX_CATEGORIES {
            return Err(field("categories", format!("more than {MAX_CATEGORIES}")));
        }
        if self.status == ConsentStatus::Granted && self.categories.is_empty() {
            return Err(field("categories", "a grant needs at least one"));
        }
        for c in &self.categories {
            check_kind(&c.kind)?;
        }
        if self.purpose.is_empty() || self.purpose.len() > MAX_PURPOSE_LEN {
            return Err(field(
                "purpose",
                format!("1–{MAX_PURPOSE_LEN} bytes of UTF-8"),
            ));
        }
        if self.not_after <= self.not_before {
            return Err(field("validity", "not_after must be after not_before"));
        }
        Ok(())
    }

    /// The field TLVs, in order (what the signature covers, after [`CONSENT_DOMAIN`]).
    pub fn encode_tbs(&self) -> Result<Vec<u8>, ConsentFormatError> {
        self.check()?;
        let mut out = Vec::with_capacity(160);
        tlv::push(&mut out, 0x80, &[FORMAT]);
        tlv::push(&mut out, 0x81, &self.version.to_be_bytes());
        tlv::push(&mut out, 0x82, self.service.as_bytes());
        tlv::push(&mut out, 0x83, &[self.slot]);
        let status = match self.status {
            ConsentStatus::Granted => 1,
            ConsentStatus::Revoked => 2,
        };
        tlv::push(&mut out, 0x84, &[status]);
        let mut cats = Vec::new();
        for c in &self.categories {
            let mut v = vec![c.unit.byte()];
            v.extend_from_slice(c.kind.as_bytes());
            tlv::push(&mut cats, 0x86, &v);
        }
        tlv::push(&mut out, 0xA5, &cats);
        tlv::push(&mut out, 0x87, self.purpose.as_bytes());
        tlv::push(&mut out, 0x88, &self.not_before.to_be_bytes());
        tlv::push(&mut out, 0x89, &self.not_after.to_be_bytes());
        tlv::push(&mut out, 0x8A, &self.signed_at.to_be_bytes());
        Ok(out)
    }

    /// SHA-256 of the domain prefix and the field TLVs: what the holder key signs.
    pub fn digest(&self) -> Result<[u8; 32], ConsentFormatError> {
        let tbs = self.encode_tbs()?;
        Ok(signing_digest(&tbs))
    }
}

fn signing_digest(tbs: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(CONSENT_DOMAIN);
    h.update(tbs);
    h.finalize().into()
}

/// A consent record as stored: terms and the holder's signature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConsentRecord {
    /// What was agreed.
    pub terms: ConsentTerms,
    /// DER ECDSA P-256 signature by the holder key.
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
}

impl ConsentRecord {
    /// The record's encoding (tag `E1`).
    pub fn encode(&self) -> Result<Vec<u8>, ConsentFormatError> {
        if self.signature.is_empty() || self.signature.len() > MAX_SIGNATURE_LEN {
            return Err(field("signature", "1–72 bytes"));
        }
        let mut inner = self.terms.encode_tbs()?;
        tlv::push(&mut inner, 0x9E, &self.signature);
        Ok(tlv::encode(0xE1, &inner))
    }

    /// What the signature covers (SHA-256 over domain ‖ fields).
    pub fn digest(&self) -> Result<[u8; 32], ConsentFormatError> {
        self.terms.digest()
    }

    /// Parses one record (the whole input). Does not check the signature: see
    /// [`crate::phr::verify::verify_consent`].
    pub fn parse(bytes: &[u8]) -> Result<Self, ConsentFormatError> {
        let inner = tlv::parse_single(bytes, 0xE1)?;
        let record = parse_record_fields(inner)?;
        if record.encode()? != bytes {
            return Err(ConsentFormatError::NotCanonical);
        }
        Ok(record)
    }
}

fn u32_field(value: &[u8], name: &'static str) -> Result<u32, ConsentFormatError> {
    let arr: [u8; 4] = value
        .try_into()
        .map_err(|_| field(name, "must be 4 bytes"))?;
    Ok(u32::from_be_bytes(arr))
}

fn text_field(value: &[u8], name: &'static str) -> Result<String, ConsentFormatError> {
    String::from_utf8(value.to_vec()).map_err(|_| field(name, "not UTF-8"))
}

fn parse_record_fields(inner: &[u8]) -> Result<ConsentRecord, ConsentFormatError> {
    let mut r = TlvReader::new(inner);
    if r.expect(0x80)? != [FORMAT] {
        return Err(field("format", "unknown version"));
    }
    let version = u32_field(r.expect(0x81)?, "version")?;
    let service = text_field(r.expect(0x82)?, "service id")?;
    let slot = match r.expect(0x83)? {
        [s] => *s,
        _ => return Err(field("slot", "must be 1 byte")),
    };
    let status = match r.expect(0x84)? {
        [1] => ConsentStatus::Granted,
        [2] => ConsentStatus::Revoked,
        _ => return Err(field("status", "must be 01 or 02")),
    };
    let cats_raw = r.expect(0xA5)?;
    let mut categories = Vec::new();
    let mut cr = TlvReader::new(cats_raw);
    while let Some(t) = cr.next_tlv()? {
        if t.tag != 0x86 {
            return Err(field("categories", "unknown tag"));
        }
        if categories.len() == MAX_CATEGORIES {
            return Err(field("categories", format!("more than {MAX_CATEGORIES}")));
        }
        let (unit, kind) = t
            .value
            .split_first()
            .ok_or_else(|| field("category", "empty"))?;
        let unit = Unit::from_byte(*unit).ok_or_else(|| field("category", "unit not A/B/C"))?;
        let kind = text_field(kind, "category kind")?;
        categories.push(Category { unit, kind });
    }
    let purpose = text_field(r.expect(0x87)?, "purpose")?;
    let not_before = u32_field(r.expect(0x88)?, "not_before")?;
    let not_after = u32_field(r.expect(0x89)?, "not_after")?;
    let signed_at = u32_field(r.expect(0x8A)?, "signed_at")?;
    let signature = r.expect(0x9E)?.to_vec();
    r.finish()?;
    let terms = ConsentTerms {
        version,
        service,
        slot,
        status,
        categories,
        purpose,
        not_before,
        not_after,
        signed_at,
    };
    terms.check()?;
    Ok(ConsentRecord { terms, signature })
}

/// The consent set stored in one PIV data object.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct ConsentSet {
    /// Increases by one with every write; the reader takes the valid object with the highest.
    pub generation: u32,
    /// The latest record per service, in slot order.
    pub records: Vec<ConsentRecord>,
}

impl ConsentSet {
    /// The object content (tag `E0`).
    pub fn encode(&self) -> Result<Vec<u8>, ConsentFormatError> {
        self.check()?;
        let mut inner = Vec::new();
        tlv::push(&mut inner, 0x80, &[FORMAT]);
        tlv::push(&mut inner, 0x81, &self.generation.to_be_bytes());
        let mut records = Vec::new();
        for r in &self.records {
            records.extend_from_slice(&r.encode()?);
        }
        tlv::push(&mut inner, 0xA2, &records);
        let check: [u8; 32] = Sha256::digest(&inner).into();
        tlv::push(&mut inner, 0x8F, &check[..8]);
        Ok(tlv::encode(0xE0, &inner))
    }

    fn check(&self) -> Result<(), ConsentFormatError> {
        if self.records.len() > MAX_RECORDS {
            return Err(field(
                "consent set",
                format!("more than {MAX_RECORDS} records"),
            ));
        }
        let mut services: Vec<&str> = self
            .records
            .iter()
            .map(|r| r.terms.service.as_str())
            .collect();
        services.sort_unstable();
        services.dedup();
        if services.len() != self.records.len() {
            return Err(field("consent set", "two records for one service"));
        }
        Ok(())
    }

    /// Parses an object's content. Signatures are not checked here.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConsentFormatError> {
        let inner = tlv::parse_single(bytes, 0xE0)?;
        let mut r = TlvReader::new(inner);
        if r.expect(0x80)? != [FORMAT] {
            return Err(field("format", "unknown version"));
        }
        let generation = u32_field(r.expect(0x81)?, "generation")?;
        let records_raw = r.expect(0xA2)?;
        let covered = r.position();
        let check = r.expect(0x8F)?;
        r.finish()?;
        let want: [u8; 32] = Sha256::digest(&inner[..covered]).into();
        if check != &want[..8] {
            return Err(ConsentFormatError::CheckValue);
        }
        let mut records = Vec::new();
        let mut rr = TlvReader::new(records_raw);
        while let Some(t) = rr.next_tlv()? {
            if t.tag != 0xE1 {
                return Err(field("consent set", "unknown record tag"));
            }
            if records.len() == MAX_RECORDS {
                return Err(field(
                    "consent set",
                    format!("more than {MAX_RECORDS} records"),
                ));
            }
            records.push(parse_record_fields(t.value)?);
        }
        let set = ConsentSet {
            generation,
            records,
        };
        if set.encode()? != bytes {
            return Err(ConsentFormatError::NotCanonical);
        }
        Ok(set)
    }

    /// The highest record version in the set (0 when empty).
    pub fn max_version(&self) -> u32 {
        self.records
            .iter()
            .map(|r| r.terms.version)
            .max()
            .unwrap_or(0)
    }

    /// The record for `service`, if any.
    pub fn for_service(&self, service: &str) -> Option<&ConsentRecord> {
        self.records.iter().find(|r| r.terms.service == service)
    }

    /// Replaces (or adds) the record for its service, keeping slot order.
    pub fn put(&mut self, record: ConsentRecord) {
        self.records
            .retain(|r| r.terms.service != record.terms.service);
        self.records.push(record);
        self.records.sort_by_key(|r| r.terms.slot);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn terms(version: u32, service: &str) -> ConsentTerms {
        ConsentTerms {
            version,
            service: service.into(),
            slot: 0x82,
            status: ConsentStatus::Granted,
            categories: vec![
                Category::parse("A:health-check").unwrap(),
                Category::parse("C:*").unwrap(),
            ],
            purpose: "occupational-health".into(),
            not_before: 1_700_000_000,
            not_after: 1_800_000_000,
            signed_at: 1_700_000_000,
        }
    }

    #[test]
    fn record_and_set_round_trip() {
        let record = ConsentRecord {
            terms: terms(3, "clinic-a"),
            signature: vec![0x30; 70],
        };
        let bytes = record.encode().unwrap();
        assert!(bytes.len() < 200, "{} bytes", bytes.len());
        assert_eq!(ConsentRecord::parse(&bytes).unwrap(), record);
        let mut set = ConsentSet {
            generation: 9,
            records: vec![],
        };
        set.put(record.clone());
        let enc = set.encode().unwrap();
        assert_eq!(ConsentSet::parse(&enc).unwrap(), set);
        // A flipped bit anywhere is refused or changes what parses.
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x01;
            assert_ne!(
                ConsentSet::parse(&bad).ok().as_ref(),
                Some(&set),
                "byte {i}"
            );
        }
    }

    #[test]
    fn twenty_worst_case_records_fit_one_object() {
        let mut set = ConsentSet {
            generation: u32::MAX,
            records: vec![],
        };
        for i in 0..MAX_RECORDS {
            let mut t = terms(u32::MAX - i as u32, &format!("{i:02}{}", "s".repeat(30)));
            t.slot = 0x82 + i as u8;
            t.purpose = "p".repeat(MAX_PURPOSE_LEN);
            t.categories = (0..MAX_CATEGORIES)
                .map(|k| Category {
                    unit: Unit::C,
                    kind: format!("{k}{}", "k".repeat(MAX_KIND_LEN - 1)),
                })
                .collect();
            set.put(ConsentRecord {
                terms: t,
                signature: vec![0x30; MAX_SIGNATURE_LEN],
            });
        }
        let len = set.encode().unwrap().len();
        assert!(len <= crate::piv::MAX_OBJECT_LEN, "{len} bytes");
        assert_eq!(ConsentSet::parse(&set.encode().unwrap()).unwrap(), set);
    }

    #[test]
    fn rules_are_enforced() {
        let mut t = terms(1, "Clinic A");
        assert!(t.encode_tbs().is_err());
        t = terms(1, "clinic-a");
        t.categories.clear();
        assert!(t.encode_tbs().is_err());
        t = terms(1, "clinic-a");
        t.not_after = t.not_before;
        assert!(t.encode_tbs().is_err());
        assert!(Category::parse("D:x").is_err());
        assert!(Category::parse("A:Upper").is_err());
    }

    #[test]
    fn random_input_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let good = ConsentSet {
            generation: 1,
            records: vec![ConsentRecord {
                terms: terms(1, "svc"),
                signature: vec![1; 70],
            }],
        }
        .encode()
        .unwrap();
        for _ in 0..5_000 {
            let mut bytes = good.clone();
            for _ in 0..rng.gen_range(1..6) {
                let i = rng.gen_range(0..bytes.len());
                bytes[i] = rng.r#gen();
            }
            bytes.truncate(rng.gen_range(0..=bytes.len()));
            let _ = ConsentSet::parse(&bytes);
            let _ = ConsentRecord::parse(&bytes);
            let junk: Vec<u8> = (0..rng.gen_range(0..80)).map(|_| rng.r#gen()).collect();
            let _ = ConsentSet::parse(&junk);
            let _ = ConsentRecord::parse(&junk);
        }
    }
}
