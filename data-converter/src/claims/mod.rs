//! レセプト電算処理 (UKE) medical claims (issue 5, Deliver 1): 医科 記録条件仕様 as summarised in
//! domain.md §4 (record layouts §4.2, dates and masters §4.3; errata: IR 請求年月 YYYYMM, Windows-31J).
//!
//! A UKE file is Shift_JIS (read as Windows-31J), CRLF, comma-separated without quoting; field 0 of
//! each line is the record type. `IR` comes once, first; each receipt starts with `RE` and is followed
//! by its `HO KO SN SY SI IY …` records; `GO` closes the file. This reader turns each receipt into
//! one iPHR [`Record`] (unit A) with
//! - one [`EntryKind::Condition`] entry per `SY` (傷病名コード, 修飾語コード, 診療開始日, 転帰区分, 主傷病),
//! - one [`EntryKind::Medication`] entry per `IY` (レセ電算 医薬品コード, 使用量, 回数, and the service
//!   dates rebuilt from the RE 診療年月 and the 算定日 day columns).
//!
//! Read and checked but not exported: `SI` (診療行為). Skipped knowingly (their fields are not
//! needed for conditions or medicines): [`SKIPPED`]. Any other record type is an error.
//! Dates: `YYYYMMDD` / `YYYYMM` or 和暦 `GYYMMDD` / `GYYMM` with the era digit (1 明治, 2 大正, 3 昭和,
//! 4 平成, 5 令和). Names come from optional master files ([`Masters`]); codes are kept either way.

pub mod fhir;

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Location, Result};
use crate::iphr::{
    Code, ContentHash, Date, Decimal, Effective, Entry, EntryKind, Header, Identifier, InsuredId,
    InsurerNumber, Organization, Person, Provenance, Record, SCHEMA, Sex, Source, SourceFormat,
    Unit, Value,
};

/// Code systems of the claims mapping.
pub mod systems {
    /// 傷病名コード (傷病名マスター, B master), JP Core terminology.
    pub const DISEASE: &str = "http://jpfhir.jp/fhir/core/mhlw/CodeSystem/masterB-disease";
    /// 修飾語コード (Z master), JP Core terminology.
    pub const MODIFIER: &str =
        "http://jpfhir.jp/fhir/core/mhlw/CodeSystem/masterZ-disease-modifier";
    /// 転帰区分 of the レセプト (1 継続 / 2 治ゆ / 3 死亡 / 4 中止(転医)), JP Core.
    pub const OUTCOME: &str =
        "http://jpfhir.jp/fhir/core/CodeSystem/JP_ConditionDiseaseOutcomeReceipt_CS";
    /// レセプト電算処理システム用 医薬品コード (Y master, 9 digits). No JP Core URI for it ships in
    /// `testdata/jp-core`, so the converter names it.
    pub const DRUG: &str = "urn:iphr:receipt-drug-code";
    /// 診療識別 (別表20) of the SI/IY line.
    pub const PRACTICE_CLASS: &str = "urn:iphr:receipt-practice-class";
    /// 医療機関コード (7 digits, IR field 4) with its 都道府県 number (`PP-CCCCCCC`).
    pub const MEDICAL_INSTITUTION: &str = "urn:iphr:receipt-medical-institution";
    /// レセプト番号 within the file.
    pub const RECEIPT_NUMBER: &str = "urn:iphr:receipt-number";
    /// ICD-10 (2013), from the B master when given.
    pub const ICD10: &str = "http://jpfhir.jp/fhir/core/mhlw/CodeSystem/ICD10-2013-full";
    /// 公費負担者番号.
    pub const PUBLIC_PAYER: &str = "urn:iphr:public-payer-number";
    /// 未コード化傷病名 (傷病名コード `0000999`: the name is free text).
    pub const UNCODED_DISEASE: &str = "0000999";
}

/// Record types read for their content.
pub const READ: &[&str] = &["IR", "RE", "HO", "KO", "SN", "SY", "SI", "IY"];

/// Record types skipped knowingly (valid in 医科 files, not needed here): GO 診療報酬請求書 (trailer),
/// TO 特定器材, CO コメント, SJ 症状詳記, JD 受診日等, MF 窓口負担額, KI 臓器提供者, NI 臓器提供医療機関,
/// TI 臓器提供者レセプト, TR 臓器提供者請求, TS 治験概要, GR 包括評価対象外理由, SK 介護保険, ND 出産育児一時金,
/// CD/BU/SB/KK/GA/HH/GT DPC records, RC/HR reserved for 返戻.
pub const SKIPPED: &[&str] = &[
    "GO", "TO", "CO", "SJ", "JD", "MF", "KI", "NI", "TI", "TR", "TS", "GR", "SK", "ND", "CD", "BU",
    "SB", "KK", "GA", "HH", "GT", "RC", "HR",
];

/// Details of a claim line kept in the iPHR entry ([`Entry::claim`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimLine {
    /// SY 主傷病 (`01`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub primary: bool,
    /// SY 補足コメント / 傷病名称 of an uncoded diagnosis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// IY 診療識別 (2 digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub practice_class: Option<String>,
    /// IY 使用量 as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<Decimal>,
    /// Unit of the quantity (Y master 単位), when a master was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// IY 回数 (total count over the month).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    /// Service dates rebuilt from 診療年月 and the 算定日 columns, with the count of each day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<ServiceDay>,
}

/// One 算定日 column with a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDay {
    /// The date.
    pub date: Date,
    /// The count written in the day column.
    pub count: u32,
}

/// One master entry: name and, for the B master, ICD-10; for the Y master, the unit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MasterEntry {
    /// 名称.
    pub name: String,
    /// ICD-10 (B master) or 単位 (Y master).
    pub extra: Option<String>,
}

/// Optional code→name masters (支払基金 基本マスター, CSV, Shift_JIS).
#[derive(Debug, Clone, Default)]
pub struct Masters {
    /// 傷病名マスター: 項番3 (index 2) 傷病名コード, 項番6 (index 5) 基本名称, 項番16 (index 15) ICD-10-1.
    pub disease: HashMap<String, MasterEntry>,
    /// 医薬品マスター: 項番3 (index 2) 医薬品コード, 項番5 (index 4) 漢字名称, 項番10 (index 9) 単位.
    pub drug: HashMap<String, MasterEntry>,
}

/// Which master a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterKind {
    /// 傷病名マスター (B).
    Disease,
    /// 医薬品マスター (Y).
    Drug,
}

impl Masters {
    /// Loads one master file into `self` (replacing entries with the same code).
    pub fn load(&mut self, kind: MasterKind, bytes: &[u8], file: &str) -> Result<()> {
        let (code_ix, name_ix, extra_ix, map) = match kind {
            MasterKind::Disease => (2, 5, 15, &mut self.disease),
            MasterKind::Drug => (2, 4, 9, &mut self.drug),
        };
        for (n, line) in lines(bytes, file)? {
            let f: Vec<&str> = line
                .split(',')
                .map(|x| x.trim().trim_matches('"'))
                .collect();
            if f.len() <= name_ix {
                return Err(Error::new(
                    Location::file(file).at_line(n),
                    ErrorKind::ShortRecord {
                        record: "master".into(),
                        expected: name_ix + 1,
                        found: f.len(),
                    },
                ));
            }
            let code = f[code_ix];
            if code.is_empty() || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::new(
                    Location::file(file).at_line(n).at_path("項番3 コード"),
                    ErrorKind::InvalidValue {
                        value: code.into(),
                        reason: "a master code is digits".into(),
                    },
                ));
            }
            let extra = f
                .get(extra_ix)
                .filter(|x| !x.is_empty())
                .map(|x| (*x).to_owned());
            map.insert(
                code.to_owned(),
                MasterEntry {
                    name: f[name_ix].to_owned(),
                    extra,
                },
            );
        }
        Ok(())
    }
}

/// What a UKE file gave.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimsOutput {
    /// One record per receipt (RE), in file order.
    pub records: Vec<Record>,
    /// Records skipped knowingly, by type, with their counts (sorted by type).
    pub skipped: Vec<(String, u64)>,
    /// SI (診療行為) lines read and checked but not exported.
    pub procedures: u64,
    /// Lines in the file.
    pub lines: u64,
}

/// Splits Shift_JIS bytes into decoded lines (CRLF or LF), numbered from 1; empty trailing lines
/// (and a final EOF mark 0x1A) are dropped. Shift_JIS trail bytes are never 0x0A, so splitting the
/// raw bytes on LF is safe.
fn lines<'a>(bytes: &'a [u8], file: &str) -> Result<Vec<(u64, Cow<'a, str>)>> {
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let n = i as u64 + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() || raw == b"\x1a" {
            continue;
        }
        let (text, had_errors) = encoding_rs::SHIFT_JIS.decode_without_bom_handling(raw);
        if had_errors {
            return Err(Error::new(
                Location::file(file).at_line(n),
                ErrorKind::Encoding("Shift_JIS (Windows-31J)"),
            ));
        }
        out.push((n, text));
    }
    Ok(out)
}

/// Year of the first year of each era (1 明治 … 5 令和).
fn era_base(digit: u8) -> Option<u16> {
    match digit {
        1 => Some(1868),
        2 => Some(1912),
        3 => Some(1926),
        4 => Some(1989),
        5 => Some(2019),
        _ => None,
    }
}

/// Parses `YYYYMMDD` or 和暦 `GYYMMDD`.
pub fn parse_date(s: &str) -> Option<Date> {
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<u16>().ok());
    match s.len() {
        8 => Date::new(num(0..4)?, num(4..6)? as u8, num(6..8)? as u8),
        7 => {
            let base = era_base(num(0..1)? as u8)?;
            let yy = num(1..3)?;
            if yy == 0 {
                return None;
            }
            Date::new(base + yy - 1, num(3..5)? as u8, num(5..7)? as u8)
        }
        _ => None,
    }
}

/// Parses a 診療年月 / 請求年月: `YYYYMM` or 和暦 `GYYMM`; returns (year, month).
pub fn parse_month(s: &str) -> Option<(u16, u8)> {
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<u16>().ok());
    let (y, m) = match s.len() {
        6 => (num(0..4)?, num(4..6)?),
        5 => {
            let base = era_base(num(0..1)? as u8)?;
            let yy = num(1..3)?;
            if yy == 0 {
                return None;
            }
            (base + yy - 1, num(3..5)?)
        }
        _ => return None,
    };
    Date::new(y, m as u8, 1).map(|_| (y, m as u8))
}

fn last_day(y: u16, m: u8) -> Option<Date> {
    (28..=31).rev().find_map(|d| Date::new(y, m, d))
}

/// Minimum field count of each read record type (up to the last field this reader uses).
fn min_fields(t: &str) -> usize {
    match t {
        "IR" => 8,
        "RE" => 7,
        "HO" => 4,
        "KO" => 3,
        "SN" => 6,
        "SY" => 7,
        "SI" | "IY" => 14,
        _ => 1,
    }
}

/// A receipt being built.
struct Receipt {
    line: u64,
    number: String,
    year: u16,
    month: u8,
    start: Date,
    person: Person,
    entries: Vec<Entry>,
    raw: Vec<u8>,
}

struct Reader<'m> {
    file: String,
    masters: Option<&'m Masters>,
    institution: Option<Organization>,
    claim_month: Option<(u16, u8)>,
    current: Option<Receipt>,
    records: Vec<Record>,
    skipped: std::collections::BTreeMap<String, u64>,
    procedures: u64,
}

struct Line<'a> {
    n: u64,
    f: Vec<&'a str>,
    file: &'a str,
}

impl Line<'_> {
    fn loc(&self, field: usize, name: &str) -> Location {
        Location::file(self.file)
            .at_line(self.n)
            .at_path(format!("{}[{field}] {name}", self.f[0]))
    }
    fn get(&self, i: usize) -> &str {
        self.f.get(i).copied().unwrap_or("").trim()
    }
    fn invalid(&self, field: usize, name: &'static str, reason: &str) -> Error {
        Error::new(
            self.loc(field, name),
            ErrorKind::InvalidField {
                field: name,
                reason: format!("{reason} (got {:?})", self.get(field)),
            },
        )
    }
}

impl Reader<'_> {
    fn finish_receipt(&mut self) {
        let Some(r) = self.current.take() else { return };
        let start = r.start;
        let end = last_day(r.year, r.month);
        let mut key = r.raw.clone();
        key.extend_from_slice(self.file.as_bytes());
        self.records.push(Record {
            schema: SCHEMA.into(),
            unit: Unit::A,
            person: r.person,
            effective: Effective::Period { start, end },
            header: Header {
                report_kind: None,
                program: None,
                created: None,
                performer: self.institution.clone(),
                insurer: None,
                sections: Vec::new(),
            },
            entries: r.entries,
            source: Source {
                format: SourceFormat::UkeClaims,
                file: self.file.clone(),
                locator: format!("line {}", r.line).into(),
                content_hash: ContentHash::of(&r.raw),
                document_id: Some(format!("RE {}", r.number)),
                archive: None,
            },
            provenance: Provenance {
                converter: concat!("data-converter ", env!("CARGO_PKG_VERSION")).into(),
                mapping: None,
                tables: Vec::new(),
            },
        });
    }

    fn receipt(&mut self, l: &Line<'_>) -> Result<&mut Receipt> {
        match self.current.as_mut() {
            Some(r) => Ok(r),
            None => Err(Error::new(
                Location::file(l.file)
                    .at_line(l.n)
                    .at_path(l.f[0].to_owned()),
                ErrorKind::RecordOrder(format!("{} before any RE", l.f[0])),
            )),
        }
    }

    fn line(&mut self, l: &Line<'_>, raw: &str) -> Result<()> {
        let t = l.f[0];
        if self.institution.is_none() && t != "IR" {
            return Err(Error::new(
                Location::file(l.file).at_line(l.n).at_path(t.to_owned()),
                ErrorKind::RecordOrder(format!("{t} before IR (IR must be the first record)")),
            ));
        }
        match t {
            "IR" => {
                if self.institution.is_some() {
                    return Err(Error::new(
                        Location::file(l.file).at_line(l.n).at_path("IR"),
                        ErrorKind::RecordOrder("a second IR".into()),
                    ));
                }
                let code = l.get(4);
                if code.len() != 7 || !code.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(l.invalid(4, "医療機関コード", "7 digits"));
                }
                let pref = l.get(2);
                if pref.len() != 2 || !pref.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(l.invalid(2, "都道府県", "2 digits"));
                }
                self.claim_month = Some(
                    parse_month(l.get(7))
                        .ok_or_else(|| l.invalid(7, "請求年月", "YYYYMM or GYYMM"))?,
                );
                let name = l.get(6);
                self.institution = Some(Organization {
                    id: Identifier {
                        system: systems::MEDICAL_INSTITUTION.into(),
                        value: format!("{pref}-{code}"),
                    },
                    name: (!name.is_empty()).then(|| name.to_owned()),
                });
            }
            "RE" => {
                self.finish_receipt();
                let number = l.get(1);
                if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(l.invalid(1, "レセプト番号", "digits"));
                }
                let (year, month, start) = parse_month(l.get(3))
                    .and_then(|(y, m)| Date::new(y, m, 1).map(|d| (y, m, d)))
                    .ok_or_else(|| l.invalid(3, "診療年月", "YYYYMM or GYYMM"))?;
                let sex = match l.get(5) {
                    "" => None,
                    s => Some(
                        s.parse::<Sex>()
                            .map_err(|_| l.invalid(5, "男女区分", "1 or 2"))?,
                    ),
                };
                let birth = match l.get(6) {
                    "" => None,
                    s => Some(
                        parse_date(s)
                            .ok_or_else(|| l.invalid(6, "生年月日", "YYYYMMDD or GYYMMDD"))?,
                    ),
                };
                let name = l.get(4);
                let kana = l.get(36);
                self.current = Some(Receipt {
                    line: l.n,
                    number: number.to_owned(),
                    year,
                    month,
                    start,
                    person: Person {
                        insured: None,
                        identifiers: Vec::new(),
                        name_kana: (!kana.is_empty()).then(|| kana.to_owned()),
                        name: (!name.is_empty()).then(|| name.to_owned()),
                        sex,
                        birth_date: birth,
                        postal_code: None,
                    },
                    entries: Vec::new(),
                    raw: Vec::new(),
                });
            }
            "HO" => {
                let insurer: InsurerNumber = l
                    .get(1)
                    .parse()
                    .map_err(|_| l.invalid(1, "保険者番号", "6 or 8 digits"))?;
                let number = l.get(3);
                if number.is_empty() {
                    return Err(l.invalid(3, "番号", "not empty"));
                }
                let symbol = l.get(2);
                let r = self.receipt(l)?;
                let branch = r.person.insured.as_ref().and_then(|i| i.branch.clone());
                r.person.insured = Some(InsuredId {
                    insurer,
                    symbol: (!symbol.is_empty()).then(|| symbol.to_owned()),
                    number: number.to_owned(),
                    branch,
                });
            }
            "SN" => {
                let branch = l.get(6).to_owned();
                let r = self.receipt(l)?;
                if !branch.is_empty()
                    && let Some(i) = r.person.insured.as_mut()
                {
                    i.branch = Some(branch);
                }
            }
            "KO" => {
                let payer = l.get(1);
                if payer.is_empty() || !payer.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(l.invalid(1, "公費負担者番号", "digits"));
                }
                let p = payer.to_owned();
                let r = self.receipt(l)?;
                r.person.identifiers.push(Identifier {
                    system: systems::PUBLIC_PAYER.into(),
                    value: p,
                });
            }
            "SY" => {
                let e = self.condition(l)?;
                self.receipt(l)?.entries.push(e);
            }
            "IY" => {
                let e = self.medication(l)?;
                self.receipt(l)?.entries.push(e);
            }
            "SI" => {
                let code = l.get(3);
                if code.len() != 9 || !code.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(l.invalid(3, "診療行為コード", "9 digits"));
                }
                let (y, m) = {
                    let r = self.receipt(l)?;
                    (r.year, r.month)
                };
                days(l, y, m)?;
                self.procedures += 1;
            }
            _ => {
                if SKIPPED.contains(&t) {
                    *self.skipped.entry(t.to_owned()).or_insert(0) += 1;
                } else {
                    return Err(Error::new(
                        Location::file(l.file)
                            .at_line(l.n)
                            .at_path("field 0 レコード識別情報"),
                        ErrorKind::UnknownRecordType(t.chars().take(16).collect()),
                    ));
                }
            }
        }
        if let Some(r) = self.current.as_mut() {
            r.raw.extend_from_slice(raw.as_bytes());
            r.raw.push(b'\n');
        }
        Ok(())
    }

    fn condition(&mut self, l: &Line<'_>) -> Result<Entry> {
        let code = l.get(1);
        if code.len() != 7 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(l.invalid(1, "傷病名コード", "7 digits"));
        }
        let start = match l.get(2) {
            "" => None,
            s => Some(
                parse_date(s).ok_or_else(|| l.invalid(2, "診療開始日", "YYYYMMDD or GYYMMDD"))?,
            ),
        };
        let outcome = match l.get(3) {
            "" | "1" => "1",
            "2" => "2",
            "3" => "3",
            "4" => "4",
            _ => return Err(l.invalid(3, "転帰区分", "1 継続, 2 治ゆ, 3 死亡 or 4 中止")),
        };
        let mods = l.get(4);
        if !mods.len().is_multiple_of(4) || !mods.bytes().all(|b| b.is_ascii_digit()) {
            return Err(l.invalid(4, "修飾語コード", "4-digit codes concatenated"));
        }
        let primary = match l.get(6) {
            "" => false,
            "01" => true,
            _ => return Err(l.invalid(6, "主傷病", "01 or empty")),
        };
        let text = l.get(5);
        let comment = l.get(7);
        let master = self.masters.and_then(|m| m.disease.get(code));
        let display = if code == systems::UNCODED_DISEASE {
            (!text.is_empty()).then(|| text.to_owned())
        } else {
            master.map(|m| m.name.clone())
        };
        let mut c = Code::new(systems::DISEASE, code.to_owned());
        c.display = display.map(Cow::Owned);
        let id = self.next_id();
        let mut e = Entry::observation(id, c, format!("line {}", l.n));
        e.kind = EntryKind::Condition;
        e.codings = mods
            .as_bytes()
            .chunks(4)
            .map(|m| Code::new(systems::MODIFIER, String::from_utf8_lossy(m).into_owned()))
            .collect();
        if let Some(icd) = master.and_then(|m| m.extra.clone()) {
            e.codings.push(Code::new(systems::ICD10, icd));
        }
        e.effective = start.map(Effective::Date);
        let outcome_text = match outcome {
            "1" => "治ゆ、死亡、中止以外",
            "2" => "治ゆ",
            "3" => "死亡",
            _ => "中止（転医）",
        };
        e.value = Some(Value::Coded {
            code: Code::with_display(systems::OUTCOME, outcome, outcome_text),
        });
        let note = if !comment.is_empty() {
            Some(comment.to_owned())
        } else if code == systems::UNCODED_DISEASE || text.is_empty() {
            None
        } else {
            Some(text.to_owned())
        };
        e.claim = Some(Box::new(ClaimLine {
            primary,
            text: note,
            practice_class: None,
            quantity: None,
            unit: None,
            times: None,
            days: Vec::new(),
        }));
        Ok(e)
    }

    fn medication(&mut self, l: &Line<'_>) -> Result<Entry> {
        let (y, m) = {
            let r = self.receipt(l)?;
            (r.year, r.month)
        };
        let class = l.get(1);
        if !class.is_empty() && (class.len() != 2 || !class.bytes().all(|b| b.is_ascii_digit())) {
            return Err(l.invalid(1, "診療識別", "2 digits"));
        }
        let code = l.get(3);
        if code.len() != 9 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(l.invalid(3, "医薬品コード", "9 digits"));
        }
        let quantity = match l.get(4) {
            "" => None,
            s => Some(
                s.parse::<Decimal>()
                    .ok()
                    .filter(|d| !d.as_str().starts_with('-'))
                    .ok_or_else(|| l.invalid(4, "使用量", "a non-negative number"))?,
            ),
        };
        let times = match l.get(6) {
            "" => None,
            s => Some(
                s.parse::<u32>()
                    .map_err(|_| l.invalid(6, "回数", "a count"))?,
            ),
        };
        let days = days(l, y, m)?;
        let master = self.masters.and_then(|ms| ms.drug.get(code));
        let mut c = Code::new(systems::DRUG, code.to_owned());
        c.display = master.map(|x| Cow::Owned(x.name.clone()));
        let id = self.next_id();
        let mut e = Entry::observation(id, c, format!("line {}", l.n));
        e.kind = EntryKind::Medication;
        if let (Some(first), Some(last)) = (days.first(), days.last()) {
            e.effective = Some(Effective::Period {
                start: first.date,
                end: Some(last.date),
            });
        }
        e.claim = Some(Box::new(ClaimLine {
            primary: false,
            text: None,
            practice_class: (!class.is_empty()).then(|| class.to_owned()),
            quantity,
            unit: master.and_then(|x| x.extra.clone()),
            times,
            days,
        }));
        Ok(e)
    }

    fn next_id(&self) -> String {
        let n = self.current.as_ref().map_or(0, |r| r.entries.len()) + 1;
        format!("e{n}")
    }
}

/// Reads the 31 算定日 columns (fields 13–43) of an SI/IY line.
fn days(l: &Line<'_>, y: u16, m: u8) -> Result<Vec<ServiceDay>> {
    let mut out = Vec::new();
    for day in 1..=31u8 {
        let ix = 12 + usize::from(day);
        let v = l.get(ix);
        if v.is_empty() {
            continue;
        }
        let count: u32 = v
            .parse()
            .map_err(|_| l.invalid(ix, "算定日", "a count for the day"))?;
        if count == 0 {
            continue;
        }
        let date = Date::new(y, m, day)
            .ok_or_else(|| l.invalid(ix, "算定日", "a day that exists in 診療年月"))?;
        out.push(ServiceDay { date, count });
    }
    Ok(out)
}

/// Reads one UKE file. `file` names it in errors and in the records' source. All-or-nothing: the
/// first error aborts and no record is returned.
pub fn read_uke(bytes: &[u8], file: &str, masters: Option<&Masters>) -> Result<ClaimsOutput> {
    let all = lines(bytes, file)?;
    let mut r = Reader {
        file: file.to_owned(),
        masters,
        institution: None,
        claim_month: None,
        current: None,
        records: Vec::new(),
        skipped: Default::default(),
        procedures: 0,
    };
    let mut count = 0;
    for (n, text) in &all {
        count = *n;
        let f: Vec<&str> = text.split(',').collect();
        let t = f[0].trim();
        if !READ.contains(&t) && !SKIPPED.contains(&t) {
            return Err(Error::new(
                Location::file(file)
                    .at_line(*n)
                    .at_path("field 0 レコード識別情報"),
                ErrorKind::UnknownRecordType(t.chars().take(16).collect()),
            ));
        }
        let need = min_fields(t);
        if f.len() < need {
            return Err(Error::new(
                Location::file(file).at_line(*n).at_path(t.to_owned()),
                ErrorKind::ShortRecord {
                    record: t.to_owned(),
                    expected: need,
                    found: f.len(),
                },
            ));
        }
        let mut f = f;
        f[0] = t;
        r.line(&Line { n: *n, f, file }, text)?;
    }
    if r.institution.is_none() {
        return Err(Error::new(
            Location::file(file).at_line(count.max(1)),
            ErrorKind::Missing("IR record"),
        ));
    }
    r.finish_receipt();
    Ok(ClaimsOutput {
        records: r.records,
        skipped: r.skipped.into_iter().collect(),
        procedures: r.procedures,
        lines: count,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn wareki_and_western_dates() {
        assert_eq!(parse_date("5060401").unwrap().to_string(), "2024-04-01");
        assert_eq!(parse_date("4310430").unwrap().to_string(), "2019-04-30");
        assert_eq!(parse_date("3640107").unwrap().to_string(), "1989-01-07");
        assert_eq!(parse_date("20240229").unwrap().to_string(), "2024-02-29");
        assert!(parse_date("6010101").is_none());
        assert!(parse_date("5000101").is_none());
        assert!(parse_date("20230229").is_none());
        assert_eq!(parse_month("50604"), Some((2024, 4)));
        assert_eq!(parse_month("202406"), Some((2024, 6)));
        assert_eq!(parse_month("202413"), None);
    }
}
