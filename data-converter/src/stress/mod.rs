//! The stress check — 職業性ストレス簡易調査票, 57 items (issue 5, Deliver 2; domain.md §3).
//!
//! Input: a CSV (UTF-8, one row per worker; header `worker_id, sex, answered_on, [department],
//! [name], A1 … A17, B1 … B29, C1 … C9, D1, D2`) or a per-person JSON (one object or an array;
//! see `docs/iphr-format.md`). Answers are 1–4. A cell may also hold a **double mark** (`2/3`, or a
//! JSON array of two or more answers) or nothing (**missing**); both are listed per person
//! ([`Incomplete`]) and such a person is **never scored**. Anything else (`5`, `0`, `x`) is an
//! error naming file, line and item.
//!
//! Scoring ([`score`]): 合計点数方式 (reversed items A1–7, A11–13, A15, B1–3; high stress if
//! B ≥ 77 or A+C ≥ 76 and B ≥ 63) and 素点換算表方式 (18 scales → 評価点 1–5 by the sex's table;
//! high stress if B ≤ 12 or A+C ≤ 26 and B ≤ 17), tables in [`tables`]. [`report`] lists the
//! roster's workers who have not answered and aggregates departments of 10 or more scored workers
//! only.

pub mod fhir;
pub mod tables;

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Location, Result};
use crate::iphr::{
    Code, ContentHash, Date, Decimal, Effective, Entry, EntryKind, Header, Identifier, Person,
    Provenance, Record, SCHEMA, Sex, Source, SourceFormat, Unit, Value,
};
use tables::{Domain, SCALES, item_ids, reversed};

/// Code systems of the stress-check mapping.
pub mod systems {
    /// Items of the 57-item questionnaire (`A1` … `D2`).
    pub const ITEM: &str = "urn:iphr:bjsq57:item";
    /// Answers 1–4 of an item.
    pub const ANSWER: &str = "urn:iphr:bjsq57:answer";
    /// Scores and results computed by this converter.
    pub const SCORE: &str = "urn:iphr:bjsq57:score";
    /// Employee number.
    pub const EMPLOYEE: &str = "urn:iphr:employee-id";
}

/// Minimum group size for department aggregates.
pub const MIN_GROUP: usize = 10;

/// One answer cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A single answer 1–4.
    Given(u8),
    /// No answer.
    Missing,
    /// Two or more answers marked.
    Double(Vec<u8>),
}

/// A worker who answered with double or missing marks (not scored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incomplete {
    /// Worker id.
    pub worker_id: String,
    /// Where (file and line or JSON index).
    pub locator: String,
    /// Items without an answer.
    pub missing: Vec<String>,
    /// Items with two or more answers.
    pub double: Vec<String>,
}

/// The scores of one complete answer sheet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scores {
    /// 合計点数: domain A sum (17 items, 17–68).
    pub sum_a: u16,
    /// 合計点数: domain B sum (29 items, 29–116).
    pub sum_b: u16,
    /// 合計点数: domain C sum (9 items, 9–36).
    pub sum_c: u16,
    /// High stress by the 合計点数 method.
    pub high_by_sum: bool,
    /// Raw score and 評価点 of each of the 18 scales, in [`tables::SCALES`] order.
    pub scales: Vec<(u8, u8)>,
    /// 素点換算表: sum of the 評価点 of domain A (9 scales).
    pub points_a: u16,
    /// … domain B (6 scales).
    pub points_b: u16,
    /// … domain C (3 scales).
    pub points_c: u16,
    /// High stress by the 素点換算表 method.
    pub high_by_points: bool,
}

/// Scores a complete answer sheet (index 0 = A1; every answer 1–4).
pub fn score(answers: &[u8; 57], sex: Sex) -> Scores {
    let mut sums = [0u16; 3];
    for (i, &a) in answers.iter().enumerate().take(55) {
        let v = if reversed(i) { 5 - a } else { a };
        let d = match i {
            0..17 => 0,
            17..46 => 1,
            _ => 2,
        };
        sums[d] += u16::from(v);
    }
    let [sum_a, sum_b, sum_c] = sums;
    let high_by_sum = sum_b >= 77 || (sum_a + sum_c >= 76 && sum_b >= 63);
    let mut points = [0u16; 3];
    let mut scales = Vec::with_capacity(SCALES.len());
    for s in &SCALES {
        let raw = s.formula.raw(answers);
        // Invariant: the tables cover every raw score (tested in `tables`).
        let p = s.points(raw, sex).unwrap_or(3);
        let d = match s.domain {
            Domain::A => 0,
            Domain::B => 1,
            Domain::C => 2,
        };
        points[d] += u16::from(p);
        scales.push((raw, p));
    }
    let [points_a, points_b, points_c] = points;
    let high_by_points = points_b <= 12 || (points_a + points_c <= 26 && points_b <= 17);
    Scores {
        sum_a,
        sum_b,
        sum_c,
        high_by_sum,
        scales,
        points_a,
        points_b,
        points_c,
        high_by_points,
    }
}

/// One scored worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The iPHR record (answers + derived scores).
    pub record: Record,
    /// Department, if given.
    pub department: Option<String>,
    /// The scores.
    pub scores: Scores,
}

/// What one stress-check input gave.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StressOutput {
    /// Workers with a complete sheet, scored.
    pub scored: Vec<Scored>,
    /// Workers with double or missing answers, not scored.
    pub incomplete: Vec<Incomplete>,
    /// Departments of the incomplete workers (for the response list).
    pub incomplete_departments: Vec<Option<String>>,
}

impl StressOutput {
    /// The records of the scored workers.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.scored.iter().map(|s| &s.record)
    }
}

/// One worker's sheet before scoring.
struct Sheet {
    worker_id: String,
    sex: Sex,
    answered_on: Date,
    department: Option<String>,
    name: Option<String>,
    answers: Vec<Answer>,
    locator: String,
    raw: Vec<u8>,
}

fn parse_cell(cell: &str, loc: impl Fn() -> Location) -> Result<Answer> {
    let t = crate::normalize::to_half_width(cell.trim());
    if t.is_empty() {
        return Ok(Answer::Missing);
    }
    let bad = || {
        Error::new(
            loc(),
            ErrorKind::InvalidValue {
                value: cell.chars().take(32).collect(),
                reason: "an answer is 1–4 (a double mark is written like 2/3)".into(),
            },
        )
    };
    let parts: Vec<&str> = t.split(['/', '|', ';']).map(str::trim).collect();
    let mut vals = Vec::with_capacity(parts.len());
    for p in &parts {
        match p.parse::<u8>() {
            Ok(v @ 1..=4) => vals.push(v),
            _ => return Err(bad()),
        }
    }
    vals.dedup();
    Ok(if vals.len() == 1 {
        Answer::Given(vals[0])
    } else {
        Answer::Double(vals)
    })
}

fn sheet_to_output(sheet: Sheet, file: &str, out: &mut StressOutput) {
    let ids = item_ids();
    let mut missing = Vec::new();
    let mut double = Vec::new();
    let mut complete = [0u8; 57];
    for (i, a) in sheet.answers.iter().enumerate() {
        match a {
            Answer::Given(v) => complete[i] = *v,
            Answer::Missing => missing.push(ids[i].to_owned()),
            Answer::Double(_) => double.push(ids[i].to_owned()),
        }
    }
    if !missing.is_empty() || !double.is_empty() {
        out.incomplete.push(Incomplete {
            worker_id: sheet.worker_id,
            locator: format!("{file}: {}", sheet.locator),
            missing,
            double,
        });
        out.incomplete_departments.push(sheet.department);
        return;
    }
    let scores = score(&complete, sheet.sex);
    let record = build_record(&sheet, &complete, &scores, file);
    out.scored.push(Scored {
        record,
        department: sheet.department,
        scores,
    });
}

fn quantity(v: u16) -> Value {
    Value::Quantity {
        value: Decimal::from(u32::from(v)),
        unit: "{score}".into(),
    }
}

fn derived(n: usize, code: &str, display: &str, value: Value, locator: &str) -> Entry {
    let mut e = Entry::observation(
        format!("e{n}"),
        Code::with_display(systems::SCORE, code.to_owned(), display.to_owned()),
        locator.to_owned(),
    );
    e.kind = EntryKind::Derived;
    e.value = Some(value);
    e
}

fn flag(high: bool) -> Value {
    Value::Coded {
        code: if high {
            Code::with_display(systems::SCORE, "high", "高ストレス者に該当")
        } else {
            Code::with_display(systems::SCORE, "not-high", "高ストレス者に該当しない")
        },
    }
}

fn build_record(sheet: &Sheet, answers: &[u8; 57], s: &Scores, file: &str) -> Record {
    let ids = item_ids();
    let mut entries = Vec::with_capacity(57 + 26);
    for (i, &a) in answers.iter().enumerate() {
        let mut e = Entry::observation(
            format!("e{}", i + 1),
            Code::with_display(systems::ITEM, ids[i], tables::ITEM_TEXTS[i]),
            format!("{}, item {}", sheet.locator, ids[i]),
        );
        e.value = Some(Value::Coded {
            code: Code::with_display(
                systems::ANSWER,
                a.to_string(),
                tables::answer_labels(i)[usize::from(a) - 1],
            ),
        });
        entries.push(e);
    }
    let loc = "derived";
    let mut n = entries.len();
    let mut push = |code: &str, display: &str, v: Value, entries: &mut Vec<Entry>| {
        n += 1;
        entries.push(derived(n, code, display, v, loc));
    };
    push(
        "sum-A",
        "合計点数 A 仕事のストレス要因",
        quantity(s.sum_a),
        &mut entries,
    );
    push(
        "sum-B",
        "合計点数 B 心身のストレス反応",
        quantity(s.sum_b),
        &mut entries,
    );
    push(
        "sum-C",
        "合計点数 C 周囲のサポート",
        quantity(s.sum_c),
        &mut entries,
    );
    push(
        "high-stress-sum",
        "高ストレス判定 (合計点数方式)",
        flag(s.high_by_sum),
        &mut entries,
    );
    for (scale, (raw, p)) in SCALES.iter().zip(&s.scales) {
        push(
            &format!("raw-{}", scale.id),
            &format!("素点 {}", scale.name),
            quantity(u16::from(*raw)),
            &mut entries,
        );
        push(
            &format!("points-{}", scale.id),
            &format!("評価点 {}", scale.name),
            quantity(u16::from(*p)),
            &mut entries,
        );
    }
    push(
        "points-A",
        "評価点合計 A",
        quantity(s.points_a),
        &mut entries,
    );
    push(
        "points-B",
        "評価点合計 B",
        quantity(s.points_b),
        &mut entries,
    );
    push(
        "points-C",
        "評価点合計 C",
        quantity(s.points_c),
        &mut entries,
    );
    push(
        "high-stress-points",
        "高ストレス判定 (素点換算表方式)",
        flag(s.high_by_points),
        &mut entries,
    );
    Record {
        schema: SCHEMA.into(),
        unit: Unit::A,
        person: Person {
            insured: None,
            identifiers: vec![Identifier {
                system: systems::EMPLOYEE.into(),
                value: sheet.worker_id.clone(),
            }],
            name_kana: None,
            name: sheet.name.clone(),
            sex: Some(sheet.sex),
            birth_date: None,
            postal_code: None,
        },
        effective: Effective::Date(sheet.answered_on),
        header: Header {
            report_kind: None,
            program: None,
            created: None,
            performer: None,
            insurer: None,
            sections: Vec::new(),
        },
        entries,
        source: Source {
            format: SourceFormat::StressCheck,
            file: file.to_owned(),
            locator: sheet.locator.clone().into(),
            content_hash: ContentHash::of(&sheet.raw),
            document_id: None,
            archive: None,
        },
        provenance: Provenance {
            converter: concat!("data-converter ", env!("CARGO_PKG_VERSION")).into(),
            mapping: None,
            tables: vec![tables::TABLES_NAME.into()],
        },
    }
}

fn check_worker(id: &str, seen: &mut HashSet<String>, loc: Location) -> Result<()> {
    if id.is_empty() {
        return Err(Error::new(loc, ErrorKind::Missing("worker_id")));
    }
    if !seen.insert(id.to_owned()) {
        return Err(Error::new(
            loc,
            ErrorKind::DuplicatePerson {
                key: id.to_owned(),
                first: "earlier in the file".into(),
            },
        ));
    }
    Ok(())
}

/// Reads a stress-check CSV (UTF-8, optional BOM). All-or-nothing on errors; incomplete sheets are
/// not errors but are listed in [`StressOutput::incomplete`].
pub fn read_stress_csv(bytes: &[u8], file: &str) -> Result<StressOutput> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if let Err(e) = std::str::from_utf8(bytes) {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64
            + 1;
        return Err(Error::new(
            Location::file(file).at_line(line),
            ErrorKind::Encoding("UTF-8"),
        ));
    }
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(bytes);
    let headers = rdr
        .headers()
        .map_err(|e| {
            Error::new(
                Location::file(file).at_line(1),
                ErrorKind::BadRow(e.to_string()),
            )
        })?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let need = |name: &'static str| {
        col(name).ok_or_else(|| {
            Error::new(
                Location::file(file).at_line(1),
                ErrorKind::MissingColumn(name.into()),
            )
        })
    };
    let c_id = need("worker_id")?;
    let c_sex = need("sex")?;
    let c_date = need("answered_on")?;
    let c_dept = col("department");
    let c_name = col("name");
    let mut c_items = Vec::with_capacity(57);
    for id in item_ids() {
        c_items.push(need(id)?);
    }
    let mut out = StressOutput::default();
    let mut seen = HashSet::new();
    for row in rdr.records() {
        let row = row.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            Error::new(
                Location::file(file).at_line(line),
                ErrorKind::BadRow(e.to_string()),
            )
        })?;
        let line = row.position().map_or(0, |p| p.line());
        let at = |c: &str| Location::file(file).at_line(line).at_path(c.to_owned());
        let get = |i: usize| row.get(i).unwrap_or("").trim();
        let id = get(c_id).to_owned();
        check_worker(&id, &mut seen, at("worker_id"))?;
        let sex: Sex = get(c_sex).parse().map_err(|e: crate::iphr::ParseError| {
            Error::new(
                at("sex"),
                ErrorKind::InvalidField {
                    field: "sex",
                    reason: e.to_string(),
                },
            )
        })?;
        let answered_on: Date = get(c_date).parse().map_err(|e: crate::iphr::ParseError| {
            Error::new(
                at("answered_on"),
                ErrorKind::InvalidField {
                    field: "answered_on",
                    reason: e.to_string(),
                },
            )
        })?;
        let mut answers = Vec::with_capacity(57);
        for (k, &c) in c_items.iter().enumerate() {
            let item = item_ids()[k];
            answers.push(parse_cell(get(c), || at(item).with_item(item))?);
        }
        let opt = |c: Option<usize>| c.map(get).filter(|s| !s.is_empty()).map(str::to_owned);
        let raw = row.iter().collect::<Vec<_>>().join("\u{1f}").into_bytes();
        let sheet = Sheet {
            worker_id: id,
            sex,
            answered_on,
            department: opt(c_dept),
            name: opt(c_name),
            answers,
            locator: format!("line {line}"),
            raw,
        };
        sheet_to_output(sheet, file, &mut out);
    }
    Ok(out)
}

/// Reads a per-person stress-check JSON: one object or an array of objects
/// `{ "worker_id", "sex", "answered_on", "department"?, "name"?, "answers": { "A1": 1, "A2": [2, 3],
/// "A3": null, … } }`; an absent or `null` item is missing, an array of two or more is a double mark.
pub fn read_stress_json(bytes: &[u8], file: &str) -> Result<StressOutput> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        let kind = if e.is_syntax() && std::str::from_utf8(bytes).is_err() {
            ErrorKind::Encoding("UTF-8")
        } else {
            ErrorKind::InvalidValue {
                value: String::new(),
                reason: format!("not JSON: {e}"),
            }
        };
        Error::new(Location::file(file).at_line(e.line() as u64), kind)
    })?;
    let list = match &v {
        serde_json::Value::Array(a) => a.iter().collect::<Vec<_>>(),
        o @ serde_json::Value::Object(_) => vec![o],
        _ => {
            return Err(Error::new(
                Location::file(file).at_path("$"),
                ErrorKind::InvalidValue {
                    value: String::new(),
                    reason: "expected an object or an array of objects".into(),
                },
            ));
        }
    };
    let mut out = StressOutput::default();
    let mut seen = HashSet::new();
    for (i, p) in list.into_iter().enumerate() {
        let base = if v.is_array() {
            format!("$[{i}]")
        } else {
            "$".to_owned()
        };
        let at = |f: &str| Location::file(file).at_path(format!("{base}.{f}"));
        let text = |f: &'static str| -> Result<Option<String>> {
            match p.get(f) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.trim().to_owned())),
                Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
                Some(_) => Err(Error::new(
                    at(f),
                    ErrorKind::InvalidField {
                        field: f,
                        reason: "expected a string".into(),
                    },
                )),
            }
        };
        if !p.is_object() {
            return Err(Error::new(
                Location::file(file).at_path(base.clone()),
                ErrorKind::InvalidValue {
                    value: String::new(),
                    reason: "expected an object".into(),
                },
            ));
        }
        let id = text("worker_id")?.unwrap_or_default();
        check_worker(&id, &mut seen, at("worker_id"))?;
        let sex: Sex = text("sex")?
            .ok_or_else(|| Error::new(at("sex"), ErrorKind::Missing("sex")))?
            .parse()
            .map_err(|e: crate::iphr::ParseError| {
                Error::new(
                    at("sex"),
                    ErrorKind::InvalidField {
                        field: "sex",
                        reason: e.to_string(),
                    },
                )
            })?;
        let answered_on: Date = text("answered_on")?
            .ok_or_else(|| Error::new(at("answered_on"), ErrorKind::Missing("answered_on")))?
            .parse()
            .map_err(|e: crate::iphr::ParseError| {
                Error::new(
                    at("answered_on"),
                    ErrorKind::InvalidField {
                        field: "answered_on",
                        reason: e.to_string(),
                    },
                )
            })?;
        let Some(ans) = p.get("answers").and_then(|a| a.as_object()) else {
            return Err(Error::new(at("answers"), ErrorKind::Missing("answers")));
        };
        let known: HashSet<&str> = item_ids().iter().copied().collect();
        if let Some(k) = ans.keys().find(|k| !known.contains(k.as_str())) {
            return Err(Error::new(
                at(&format!("answers.{k}")),
                ErrorKind::InvalidField {
                    field: "answers",
                    reason: format!("unknown item {k:?} (items are A1–A17, B1–B29, C1–C9, D1–D2)"),
                },
            ));
        }
        let mut answers = Vec::with_capacity(57);
        for item in item_ids() {
            let loc = || at(&format!("answers.{item}")).with_item(*item);
            let bad = |v: &serde_json::Value| {
                Error::new(
                    loc(),
                    ErrorKind::InvalidValue {
                        value: v.to_string().chars().take(32).collect(),
                        reason: "an answer is 1–4, null, or an array of answers (double mark)"
                            .into(),
                    },
                )
            };
            let one = |v: &serde_json::Value| -> Result<u8> {
                match v.as_u64() {
                    Some(n @ 1..=4) => Ok(n as u8),
                    _ => match v.as_str().map(str::trim).and_then(|s| s.parse::<u8>().ok()) {
                        Some(n @ 1..=4) => Ok(n),
                        _ => Err(bad(v)),
                    },
                }
            };
            let a = match ans.get(*item) {
                None | Some(serde_json::Value::Null) => Answer::Missing,
                Some(serde_json::Value::Array(xs)) => {
                    let mut vals = xs.iter().map(one).collect::<Result<Vec<u8>>>()?;
                    vals.sort_unstable();
                    vals.dedup();
                    match vals.len() {
                        0 => Answer::Missing,
                        1 => Answer::Given(vals[0]),
                        _ => Answer::Double(vals),
                    }
                }
                Some(x) => Answer::Given(one(x)?),
            };
            answers.push(a);
        }
        let raw = serde_json::to_vec(p).unwrap_or_default();
        let sheet = Sheet {
            worker_id: id,
            sex,
            answered_on,
            department: text("department")?.filter(|s| !s.is_empty()),
            name: text("name")?.filter(|s| !s.is_empty()),
            answers,
            locator: base,
            raw,
        };
        sheet_to_output(sheet, file, &mut out);
    }
    Ok(out)
}

/// A roster: the workers who should answer (CSV with a `worker_id` column, optional `department`).
pub fn read_roster(bytes: &[u8], file: &str) -> Result<Vec<(String, Option<String>)>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if std::str::from_utf8(bytes).is_err() {
        return Err(Error::new(
            Location::file(file),
            ErrorKind::Encoding("UTF-8"),
        ));
    }
    let mut rdr = csv::ReaderBuilder::new().from_reader(bytes);
    let headers = rdr
        .headers()
        .map_err(|e| {
            Error::new(
                Location::file(file).at_line(1),
                ErrorKind::BadRow(e.to_string()),
            )
        })?
        .clone();
    let Some(c_id) = headers.iter().position(|h| h.trim() == "worker_id") else {
        return Err(Error::new(
            Location::file(file).at_line(1),
            ErrorKind::MissingColumn("worker_id".into()),
        ));
    };
    let c_dept = headers.iter().position(|h| h.trim() == "department");
    let mut out = Vec::new();
    for row in rdr.records() {
        let row = row.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            Error::new(
                Location::file(file).at_line(line),
                ErrorKind::BadRow(e.to_string()),
            )
        })?;
        let id = row.get(c_id).unwrap_or("").trim();
        if id.is_empty() {
            let line = row.position().map_or(0, |p| p.line());
            return Err(Error::new(
                Location::file(file).at_line(line).at_path("worker_id"),
                ErrorKind::Missing("worker_id"),
            ));
        }
        let dept = c_dept
            .and_then(|c| row.get(c))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        out.push((id.to_owned(), dept));
    }
    Ok(out)
}

/// Aggregate of one department (only for groups of at least [`MIN_GROUP`] scored workers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepartmentAggregate {
    /// Department.
    pub department: String,
    /// Scored workers.
    pub n: usize,
    /// High stress by the 合計点数 method.
    pub high_by_sum: usize,
    /// High stress by the 素点換算表 method.
    pub high_by_points: usize,
    /// Mean 合計点数 A, B, C (two decimals).
    pub mean_sums: [f64; 3],
    /// Mean 評価点合計 A, B, C (two decimals).
    pub mean_points: [f64; 3],
}

/// The run's report: who is incomplete, who has not answered, department aggregates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StressReport {
    /// Workers scored.
    pub scored: usize,
    /// High stress by either method.
    pub high_stress: usize,
    /// Workers with double or missing answers (not scored).
    pub incomplete: Vec<Incomplete>,
    /// Roster workers without any answer sheet (empty without a roster).
    pub not_answered: Vec<String>,
    /// Departments with at least [`MIN_GROUP`] scored workers.
    pub departments: Vec<DepartmentAggregate>,
    /// Departments not aggregated because fewer than [`MIN_GROUP`] workers were scored.
    pub suppressed_departments: Vec<String>,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Builds the report over one or more outputs and an optional roster.
pub fn report(
    outputs: &[&StressOutput],
    roster: Option<&[(String, Option<String>)]>,
) -> StressReport {
    let mut answered: HashSet<&str> = HashSet::new();
    let mut incomplete = Vec::new();
    let mut groups: BTreeMap<String, Vec<&Scores>> = BTreeMap::new();
    let mut scored = 0;
    let mut high = 0;
    for o in outputs {
        for s in &o.scored {
            scored += 1;
            if s.scores.high_by_sum || s.scores.high_by_points {
                high += 1;
            }
            if let Some(id) = s.record.person.identifiers.first() {
                answered.insert(id.value.as_str());
            }
            if let Some(d) = &s.department {
                groups.entry(d.clone()).or_default().push(&s.scores);
            }
        }
        for (i, d) in o.incomplete.iter().zip(&o.incomplete_departments) {
            answered.insert(i.worker_id.as_str());
            incomplete.push(i.clone());
            if let Some(d) = d {
                groups.entry(d.clone()).or_default();
            }
        }
    }
    let not_answered = roster
        .unwrap_or(&[])
        .iter()
        .filter(|(id, _)| !answered.contains(id.as_str()))
        .map(|(id, _)| id.clone())
        .collect();
    let mut departments = Vec::new();
    let mut suppressed = Vec::new();
    for (d, list) in groups {
        if list.len() < MIN_GROUP {
            suppressed.push(d);
            continue;
        }
        let n = list.len();
        let mean = |f: &dyn Fn(&Scores) -> u16| {
            round2(list.iter().map(|s| f64::from(f(s))).sum::<f64>() / n as f64)
        };
        departments.push(DepartmentAggregate {
            department: d,
            n,
            high_by_sum: list.iter().filter(|s| s.high_by_sum).count(),
            high_by_points: list.iter().filter(|s| s.high_by_points).count(),
            mean_sums: [mean(&|s| s.sum_a), mean(&|s| s.sum_b), mean(&|s| s.sum_c)],
            mean_points: [
                mean(&|s| s.points_a),
                mean(&|s| s.points_b),
                mean(&|s| s.points_c),
            ],
        });
    }
    StressReport {
        scored,
        high_stress: high,
        incomplete,
        not_answered,
        departments,
        suppressed_departments: suppressed,
    }
}
