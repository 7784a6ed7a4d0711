//! The unified record, iPHR (DESIGN §5): units A/B/C, entries with coded concepts and typed values,
//! reference ranges and flags, effective time, source and provenance, content hash.
//!
//! One [`Record`] is what one source document says about one person (one 特定健診 CDA, one CSV row,
//! later one claim, one stress check, one interview). Imports are idempotent by
//! the source's content hash ([`Source::content_hash`]) and all-or-nothing per file. The JSON form is documented in
//! `docs/iphr-format.md`; it is produced by serde and is stable (field order fixed, no maps, no
//! timestamps of conversion), so converting the same input twice yields identical bytes.

mod locator;
pub mod types;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

pub use compact_str::CompactString;
pub use locator::Locator;
pub use smallvec::SmallVec;
pub use types::{
    ContentHash, Date, Decimal, InstitutionNumber, InsurerNumber, ItemCode, Jlac10, ParseError, Sex,
};

/// Schema identifier written in every record (`"schema": "iphr/1"`).
pub const SCHEMA: &str = "iphr/1";

/// Code systems as URIs (FHIR style: OIDs as `urn:oid:`).
pub mod systems {
    /// 特定健診項目コード.
    pub const TOKUTEI_ITEM: &str = "urn:oid:1.2.392.200119.6.1005";
    /// JLAC10 (MEDIS), 17 digits.
    pub const JLAC10: &str = "urn:oid:1.2.392.200119.4.504";
    /// 報告区分.
    pub const REPORT_KIND: &str = "urn:oid:1.2.392.200119.6.1001";
    /// プログラム種別.
    pub const PROGRAM: &str = "urn:oid:1.2.392.200119.6.1002";
    /// Section codes of the 特定健診 CDA body.
    pub const SECTION: &str = "urn:oid:1.2.392.200119.6.1010";
    /// 保険者番号.
    pub const INSURER: &str = "urn:oid:1.2.392.200119.6.101";
    /// 健診機関番号.
    pub const INSTITUTION: &str = "urn:oid:1.2.392.200119.6.102";
    /// 被保険者証記号.
    pub const INSURED_SYMBOL: &str = "urn:oid:1.2.392.200119.6.204";
    /// 被保険者証番号.
    pub const INSURED_NUMBER: &str = "urn:oid:1.2.392.200119.6.205";
    /// 被保険者証枝番.
    pub const INSURED_BRANCH: &str = "urn:oid:1.2.392.200119.6.211";
    /// 受診券整理番号 etc. (participant HLD).
    pub const VOUCHER: &str = "urn:oid:1.2.392.200119.6.208";
    /// メタボリックシンドローム判定.
    pub const METABOLIC: &str = "urn:oid:1.2.392.200119.6.1008";
    /// 保健指導レベル (支援レベル).
    pub const GUIDANCE_LEVEL: &str = "urn:oid:1.2.392.200119.6.3001";
    /// HL7 v3 ObservationInterpretation (H/L out of input range).
    pub const V3_INTERPRETATION: &str = "urn:oid:2.16.840.1.113883.5.83";
    /// Group identities that the CDA does not carry (一連検査グループ), named by this converter.
    pub const IPHR_GROUP: &str = "urn:iphr:tokutei-group";
    /// Judgements derived by this converter (判定区分, 階層化 …).
    pub const IPHR_DERIVED: &str = "urn:iphr:derived";
    /// UCUM units.
    pub const UCUM: &str = "http://unitsofmeasure.org";
}

/// The three units of the record (from the PHR card concept, DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Unit {
    /// A: health-check data (results, attending-physician opinions, stress check results).
    A,
    /// B: work status (position, attendance/overtime, work conditions).
    B,
    /// C: occupational health (interviews, OP opinions, workplace patrols, 就業判定).
    C,
}

/// A coded concept: system URI + code (+ display text as the source gave it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Code {
    /// Code system URI (see [`systems`]); borrowed for the built-in systems.
    pub system: Cow<'static, str>,
    /// The code.
    pub code: Cow<'static, str>,
    /// Human-readable text, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<Cow<'static, str>>,
}

impl Code {
    /// A code without display.
    pub fn new(system: impl Into<Cow<'static, str>>, code: impl Into<Cow<'static, str>>) -> Self {
        Self {
            system: system.into(),
            code: code.into(),
            display: None,
        }
    }
    /// A code with display text.
    pub fn with_display(
        system: impl Into<Cow<'static, str>>,
        code: impl Into<Cow<'static, str>>,
        display: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            system: system.into(),
            code: code.into(),
            display: Some(display.into()),
        }
    }
}

/// A typed value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Value {
    /// A measured quantity; `unit` is a UCUM code.
    Quantity {
        /// The number as written by the source.
        value: Decimal,
        /// UCUM unit code (e.g. `mm[Hg]`, `mg/dL`, `10*4/uL`).
        unit: Cow<'static, str>,
    },
    /// A code from a result table (e.g. 定性 1.2.392.200119.6.2102).
    Coded {
        /// The coded answer.
        code: Code,
    },
    /// Free text (所見, 医師の判断 …).
    Text {
        /// The text.
        text: String,
    },
    /// A document (PDF report, image) stored elsewhere, identified by hash.
    Document {
        /// MIME type.
        media_type: String,
        /// Title, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        /// Hash of the document bytes.
        hash: ContentHash,
    },
}

/// Why an entry has no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Absent {
    /// 未実施: the item was not performed (CDA `negationInd="true"`).
    NotPerformed,
    /// 測定不可能: performed but could not be measured (CDA `value/@nullFlavor`).
    CannotMeasure,
}

/// Side of an out-of-input-range value (CDA CD `H`/`L` in 2.16.840.1.113883.5.83).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// 以上: at or above the upper input limit.
    Above,
    /// 以下: at or below the lower input limit.
    Below,
}

/// The source's own interpretation (CDA `interpretationCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Interpretation {
    /// High.
    H,
    /// Low.
    L,
    /// Normal.
    N,
    /// Abnormal (no direction).
    A,
}

/// A flag derived from a judgement table (issue 4, Deliver 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// At or beyond the 保健指導判定値.
    GuidanceLevel,
    /// At or beyond the 受診勧奨判定値.
    ReferralLevel,
}

/// A 判定区分 grade on the normalised A–E scale (domain.md §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Grade {
    /// 異常なし.
    A,
    /// 軽度異常.
    B,
    /// 要再検査・生活改善.
    C,
    /// 要精密検査・治療.
    D,
    /// 治療中.
    E,
}

/// Reference range as given by the source (CDA `referenceRange/observationRange`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceRange {
    /// Lower limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<Decimal>,
    /// Upper limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<Decimal>,
    /// UCUM unit of the limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Text form (e.g. `陰性`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A result, measurement, finding or answer reported by the source.
    Observation,
    /// A group of entries (一連検査グループ); members point to it with [`Entry::parent`].
    Group,
    /// A judgement computed by this converter (never present in the source).
    Derived,
    /// A document reference.
    Document,
    // --- issue 5, claims (conv2) ---
    /// A diagnosis from a claim (UKE SY record): code = 傷病名コード.
    Condition,
    /// A medicine from a claim (UKE IY record): code = レセ電算 医薬品コード.
    Medication,
}

/// How a member relates to its group (CDA `entryRelationship/@typeCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// COMP: a component of the group.
    Component,
    /// RSON: the reason for the group (e.g. 実施理由).
    Reason,
}

/// When an entry or record applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effective {
    /// A single day (exam date).
    Date(Date),
    /// A period (start inclusive, end inclusive when known).
    Period {
        /// First day.
        start: Date,
        /// Last day, if closed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end: Option<Date>,
    },
}

impl Effective {
    /// The first day.
    pub fn start(&self) -> Date {
        match *self {
            Effective::Date(d) | Effective::Period { start: d, .. } => d,
        }
    }
}

/// One statement in a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Id unique within the record (`e1`, `e2`, … in source order); short ids are stored inline
    /// (no heap allocation).
    pub id: CompactString,
    /// What the entry is.
    pub kind: EntryKind,
    /// The primary code (for 特定健診: the 17-character item code in [`systems::TOKUTEI_ITEM`]).
    pub code: Code,
    /// Further codings of the same concept (e.g. the JLAC10 form of a lab item code); one is
    /// stored inline.
    #[serde(default, skip_serializing_if = "SmallVec::is_empty")]
    pub codings: SmallVec<[Code; 1]>,
    /// Method-independent concept (e.g. `hba1c` for the four HbA1c method codes), for trends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analyte: Option<Cow<'static, str>>,
    /// The value, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// Why there is no value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absent: Option<Absent>,
    /// The value lies outside the item's input range (入力範囲外) on this side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_of_range: Option<Bound>,
    /// Reference range from the source (boxed: few entries have one, keeps [`Entry`] small).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_range: Option<Box<ReferenceRange>>,
    /// Interpretation from the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpretation: Option<Interpretation>,
    /// Flags derived from the judgement tables (both fit inline).
    #[serde(default, skip_serializing_if = "SmallVec::is_empty")]
    pub flags: SmallVec<[Flag; 2]>,
    /// Per-item 判定区分 derived from the grade table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grade: Option<Grade>,
    /// When, if different from the record's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<Effective>,
    /// Method code (CDA `methodCode`; boxed: rare).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Box<Code>>,
    /// Who made the statement (e.g. the physician of 医師の判断, CDA item 9N516).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performer: Option<String>,
    /// Id of the group entry this one belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<CompactString>,
    /// Relation to [`Entry::parent`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation: Option<Relation>,
    /// Where in the source the entry came from (XPath for XML, `line N, column NAME` for CSV).
    pub locator: Locator,
    // --- issue 5, claims (conv2) ---
    /// Claim line details (UKE SY/IY records), see [`crate::claims::ClaimLine`]; boxed, as most
    /// entries have none (keeps [`Entry`] small).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Box<crate::claims::ClaimLine>>,
}

impl Entry {
    /// An empty observation entry with the given id, code and locator.
    pub fn observation(
        id: impl Into<CompactString>,
        code: Code,
        locator: impl Into<Locator>,
    ) -> Self {
        Self {
            id: id.into(),
            kind: EntryKind::Observation,
            code,
            codings: SmallVec::new(),
            analyte: None,
            value: None,
            absent: None,
            out_of_range: None,
            reference_range: None,
            interpretation: None,
            flags: SmallVec::new(),
            grade: None,
            effective: None,
            method: None,
            performer: None,
            parent: None,
            relation: None,
            locator: locator.into(),
            claim: None,
        }
    }

    /// The quantity value as `f64`, if the entry has one.
    pub fn quantity(&self) -> Option<f64> {
        match &self.value {
            Some(Value::Quantity { value, .. }) => Some(value.to_f64()),
            _ => None,
        }
    }

    /// The coded value's code, if the entry has one.
    pub fn coded(&self) -> Option<&str> {
        match &self.value {
            Some(Value::Coded { code }) => Some(&code.code),
            _ => None,
        }
    }
}

/// 被保険者等記号・番号・枝番 with the 保険者番号: the insurance identity of a person.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InsuredId {
    /// 保険者番号.
    pub insurer: InsurerNumber,
    /// 被保険者証記号 (may be absent, e.g. 国保).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    /// 被保険者証番号.
    pub number: String,
    /// 枝番 (2 digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

impl InsuredId {
    /// JP-CLINS member id form `保険者番号:記号:番号:枝番` (domain.md §6.3).
    pub fn member_id(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.insurer,
            self.symbol.as_deref().unwrap_or(""),
            self.number,
            self.branch.as_deref().unwrap_or("")
        )
    }
}

/// Another identifier of a person (employee number, 受診券整理番号 …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identifier {
    /// System URI.
    pub system: String,
    /// Value.
    pub value: String,
}

/// The person a record is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Person {
    /// Insurance identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insured: Option<InsuredId>,
    /// Other identifiers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifiers: Vec<Identifier>,
    /// Name in katakana, as the 特定健診 CDA carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_kana: Option<String>,
    /// Name in kanji, when the source has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Sex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<Sex>,
    /// Birth date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<Date>,
    /// Postal code (7 digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
}

impl Person {
    /// A key identifying the person across files: the member id if insured, else the first
    /// identifier. `None` when the record carries no identity at all.
    pub fn key(&self) -> Option<String> {
        if let Some(i) = &self.insured {
            return Some(i.member_id());
        }
        self.identifiers
            .first()
            .map(|i| format!("{}|{}", i.system, i.value))
    }
}

/// An organisation (健診機関, 保険者, employer).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Organization {
    /// Identifier (system + value), e.g. 健診機関番号 in [`systems::INSTITUTION`].
    pub id: Identifier,
    /// Name, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Source format of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// 特定健診 CDA (hc08_V08), standalone or inside an archive.
    TokuteiCda,
    /// Health-check CSV with a TOML mapping.
    HealthCheckCsv,
    // --- issue 5 (conv2) ---
    /// レセプト電算処理 claim file (UKE), one record per receipt (RE).
    UkeClaims,
    /// 職業性ストレス簡易調査票 (57 items), CSV row or per-person JSON.
    StressCheck,
    // --- issue 5 part 2 (conv3): attendance and occupational-health records ---
    /// 勤怠 daily CSV, summarised per worker and month (unit B).
    Attendance,
    /// Occupational-physician records JSON (`oh-records/1`, unit C; `docs/oh-records.md`).
    OhRecords,
}

/// Where a record came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Source {
    /// Format.
    pub format: SourceFormat,
    /// File name as given to the converter (archive path + `!/` + member for archive members).
    pub file: String,
    /// Position of the record in the file (`/ClinicalDocument` or `line 3`).
    pub locator: Cow<'static, str>,
    /// SHA-256 of the bytes the record was read from (the CDA document; for a CSV row, the
    /// mapping name and the row's fields joined by U+001F): the import idempotency key.
    pub content_hash: ContentHash,
    /// Document id given by the source, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_id: Option<String>,
    /// The submitting archive, if any (file name of the ZIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
}

/// How the record was produced.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Provenance {
    /// Converter name and version, e.g. `data-converter 0.1.0`.
    pub converter: Cow<'static, str>,
    /// Mapping used (CSV layout name), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<String>,
    /// Judgement tables used for derived entries and flags (names with versions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
}

/// Document-level facts of a health check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Header {
    /// 報告区分 (1.2.392.200119.6.1001), e.g. `10` 特定健診情報.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_kind: Option<Code>,
    /// プログラム種別 (1.2.392.200119.6.1002), e.g. `010` 特定健診, `030` 事業者健診.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<Code>,
    /// Date the source document was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Date>,
    /// The performing institution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performer: Option<Organization>,
    /// The insurer the record is submitted to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insurer: Option<Organization>,
    /// Sections present (CDA section codes, 1.2.392.200119.6.1010).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sections: Vec<Code>,
}

/// One source document's statements about one person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Always [`SCHEMA`].
    pub schema: Cow<'static, str>,
    /// Unit A, B or C.
    pub unit: Unit,
    /// The person.
    pub person: Person,
    /// When (the exam date for health checks).
    pub effective: Effective,
    /// Document-level facts.
    pub header: Header,
    /// Statements in source order, then derived entries.
    pub entries: Vec<Entry>,
    /// Where it came from.
    pub source: Source,
    /// How it was made.
    pub provenance: Provenance,
}

impl Record {
    /// SHA-256 of the record's JSON form: changes whenever anything in the record changes
    /// (including converter version and tables), unlike [`Source::content_hash`], which identifies
    /// the input. Computed on demand (e.g. to detect re-conversions that changed the output).
    pub fn fingerprint(&self) -> ContentHash {
        self.hash_as_is()
    }

    /// SHA-256 of the JSON form, streamed into the hasher (no intermediate buffer).
    fn hash_as_is(&self) -> ContentHash {
        use sha2::Digest;
        struct HashWriter(sha2::Sha256);
        impl std::io::Write for HashWriter {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.update(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w = std::io::BufWriter::with_capacity(8192, HashWriter(sha2::Sha256::new()));
        // Invariant: the model holds only strings, enums, vecs and options, which serde_json
        // always serialises; the writer never fails.
        let _ = serde_json::to_writer(&mut w, self);
        match w.into_inner() {
            Ok(h) => ContentHash::from_digest(h.0.finalize().into()),
            Err(_) => ContentHash::placeholder(),
        }
    }

    /// Entries of a given analyte (method variants together).
    pub fn by_analyte<'a>(&'a self, analyte: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.analyte.as_deref() == Some(analyte))
    }
}
