//! Occupational-physician records (issue 5, Deliver 4; domain.md §7.2, §7.4–§7.6; DESIGN §5 unit C):
//! the OP cloud's JSON export `oh-records/1`, specified in `docs/oh-records.md` — interviews
//! (面談記録), OP opinions (意見書), 就業判定 per health check, workplace patrols (巡視記録), attending
//! physician opinions (主治医意見書) and the 12-item rework assessment sheet ([`rework`]).
//!
//! Validation: serde with `deny_unknown_fields` on every object (the schema), then explicit checks
//! of the rules serde cannot express (score ranges, measures required by 就業制限, period order …).
//! Every error names the file, the JSON pointer (`/records/3/scores/coping`) and the field; a file
//! is imported all-or-nothing. Each record becomes one iPHR [`Record`] in unit C; [`fhir`] exports
//! them (and the attendance months) as FHIR.

pub mod fhir;
pub mod rework;

use std::collections::HashMap;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value as Json;
use serde_json::value::RawValue;

use crate::attendance::{Attendance, AttendanceCounts, EMPLOYEE};
use crate::cda::converter_id;
use crate::error::{Error, ErrorKind, Location, Result};
use crate::iphr::{
    Code, ContentHash, Date, Effective, Entry, EntryKind, Header, Identifier, Person, Provenance,
    Record, SCHEMA, Sex, Source, SourceFormat, Unit, Value,
};

/// `format` value of the export.
pub const FORMAT: &str = "oh-records/1";
/// Code system of the record fields.
pub const SYSTEM: &str = "urn:iphr:oh";

/// Whether `head` (the first bytes of a file) looks like an `oh-records/1` document.
pub fn looks_like_oh(head: &[u8]) -> bool {
    let s = String::from_utf8_lossy(head);
    s.trim_start().starts_with('{') && s.contains("\"oh-records/")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document<'a> {
    format: String,
    #[serde(default)]
    exported: Option<Date>,
    #[serde(default)]
    source: Option<String>,
    /// Records as their text in the input (for their line numbers).
    #[serde(borrow)]
    records: Vec<&'a RawValue>,
}

/// Only the `type` of a record.
#[derive(Debug, Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    ty: Option<Json>,
}

/// The worker a record is about.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Worker {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    birth_date: Option<Date>,
    #[serde(default)]
    sex: Option<Sex>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Physician {
    name: String,
    #[serde(default)]
    institution: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct Period {
    start: Date,
    #[serde(default)]
    end: Option<Date>,
}

/// 就業区分 (domain.md §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WorkStatus {
    Normal,
    Restricted,
    Leave,
}

impl WorkStatus {
    fn code(self) -> (&'static str, &'static str) {
        match self {
            Self::Normal => ("normal", "通常勤務"),
            Self::Restricted => ("restricted", "就業制限"),
            Self::Leave => ("leave", "要休業"),
        }
    }
}

/// 就業上の措置 (domain.md §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum MeasureKind {
    ShorterHours,
    LimitBusinessTrips,
    LimitOvertime,
    LimitWorkload,
    ChangeOfWork,
    ChangeOfWorkplace,
    FewerNightShifts,
    DayShift,
    Other,
}

impl MeasureKind {
    fn code(self) -> (&'static str, &'static str) {
        match self {
            Self::ShorterHours => ("shorter_hours", "労働時間の短縮"),
            Self::LimitBusinessTrips => ("limit_business_trips", "出張の制限"),
            Self::LimitOvertime => ("limit_overtime", "時間外労働の制限"),
            Self::LimitWorkload => ("limit_workload", "労働負荷の制限"),
            Self::ChangeOfWork => ("change_of_work", "作業の転換"),
            Self::ChangeOfWorkplace => ("change_of_workplace", "就業場所の変更"),
            Self::FewerNightShifts => ("fewer_night_shifts", "深夜業の回数の減少"),
            Self::DayShift => ("day_shift", "昼間勤務への転換"),
            Self::Other => ("other", "その他"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Measure {
    kind: MeasureKind,
    #[serde(default)]
    detail: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reason {
    LongHours,
    StressCheck,
    HealthCheck,
    ReturnToWork,
    Other,
}

impl Reason {
    fn code(self) -> (&'static str, &'static str) {
        match self {
            Self::LongHours => ("long_hours", "長時間労働者の面接指導"),
            Self::StressCheck => ("stress_check", "高ストレス者の面接指導"),
            Self::HealthCheck => ("health_check", "健康診断の事後措置"),
            Self::ReturnToWork => ("return_to_work", "職場復帰支援"),
            Self::Other => ("other", "その他"),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    InPerson,
    Online,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Interview {
    /// The record type (dispatched on before).
    #[serde(rename = "type")]
    _type: IgnoredAny,
    id: String,
    worker: Worker,
    date: Date,
    physician: Physician,
    reason: Reason,
    mode: Mode,
    #[serde(default)]
    work_situation: Option<String>,
    #[serde(default)]
    fatigue: Option<String>,
    #[serde(default)]
    mind_body: Option<String>,
    #[serde(default)]
    notes: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Opinion {
    /// The record type (dispatched on before).
    #[serde(rename = "type")]
    _type: IgnoredAny,
    id: String,
    worker: Worker,
    date: Date,
    physician: Physician,
    reason: Reason,
    work_status: WorkStatus,
    #[serde(default)]
    measures: Vec<Measure>,
    #[serde(default)]
    period: Option<Period>,
    #[serde(default)]
    remarks: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
enum Life {
    A,
    B,
    C,
    D,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Guidance {
    life: Life,
    medical: u8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FitnessJudgement {
    /// The record type (dispatched on before).
    #[serde(rename = "type")]
    _type: IgnoredAny,
    id: String,
    worker: Worker,
    date: Date,
    health_check_date: Date,
    #[serde(default)]
    health_check_id: Option<String>,
    physician: Physician,
    work_status: WorkStatus,
    #[serde(default)]
    measures: Vec<Measure>,
    #[serde(default)]
    period: Option<Period>,
    #[serde(default)]
    guidance: Option<Guidance>,
    #[serde(default)]
    remarks: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Workplace {
    id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Finding {
    area: String,
    finding: String,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    due: Option<Date>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Patrol {
    /// The record type (dispatched on before).
    #[serde(rename = "type")]
    _type: IgnoredAny,
    id: String,
    date: Date,
    physician: Physician,
    workplace: Workplace,
    findings: Vec<Finding>,
    #[serde(default)]
    remarks: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AttendingKind {
    Continuation,
    ReturnToWork,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Verdict {
    Fit,
    FitWithConditions,
    Unfit,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttendingOpinion {
    /// The record type (dispatched on before).
    #[serde(rename = "type")]
    _type: IgnoredAny,
    id: String,
    worker: Worker,
    date: Date,
    kind: AttendingKind,
    institution: String,
    physician: String,
    diagnosis: String,
    #[serde(default)]
    symptoms: Option<String>,
    #[serde(default)]
    treatment_plan: Option<String>,
    verdict: Verdict,
    #[serde(default)]
    measures: Vec<String>,
    #[serde(default)]
    considerations: Option<String>,
    #[serde(default)]
    period: Option<Period>,
    #[serde(default)]
    leave_until: Option<Date>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scores {
    sleepiness_fatigue: u8,
    concentration: u8,
    conversation: u8,
    cooperation: u8,
    assertiveness: u8,
    unpleasant_behaviour: u8,
    role_behaviour: u8,
    coping: u8,
    emotional_stability: u8,
    initiative: u8,
    response_to_feedback: u8,
}

impl Scores {
    fn get(&self, key: &str) -> Option<u8> {
        Some(match key {
            "sleepiness_fatigue" => self.sleepiness_fatigue,
            "concentration" => self.concentration,
            "conversation" => self.conversation,
            "cooperation" => self.cooperation,
            "assertiveness" => self.assertiveness,
            "unpleasant_behaviour" => self.unpleasant_behaviour,
            "role_behaviour" => self.role_behaviour,
            "coping" => self.coping,
            "emotional_stability" => self.emotional_stability,
            "initiative" => self.initiative,
            "response_to_feedback" => self.response_to_feedback,
            _ => return None,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReworkSheet {
    /// The record type (dispatched on before).
    #[serde(rename = "type")]
    _type: IgnoredAny,
    id: String,
    worker: Worker,
    date: Date,
    assessor: String,
    period: Period,
    #[serde(default)]
    attendance: Option<AttendanceCounts>,
    scores: Scores,
    #[serde(default)]
    remarks: Option<String>,
}

/// Builds iPHR records; `err` makes located errors.
struct Builder<'a> {
    file: &'a str,
    /// First line of the record in the file.
    line: u64,
    pointer: String,
    raw: &'a Json,
    entries: Vec<Entry>,
}

impl Builder<'_> {
    fn err(&self, rel: &str, field: &str, reason: impl Into<String>) -> Error {
        Error::new(
            Location::file(self.file)
                .at_line(self.line)
                .at_path(format!("{}{rel}", self.pointer))
                .with_item(field),
            ErrorKind::Schema(reason.into()),
        )
    }
    fn push(&mut self, code: &str, display: &str, value: Value, kind: EntryKind) -> &mut Entry {
        let id = format!("e{}", self.entries.len() + 1);
        let mut e = Entry::observation(
            id,
            Code::with_display(SYSTEM, code.to_owned(), display.to_owned()),
            if kind == EntryKind::Derived {
                format!("{} (derived: {code})", self.pointer)
            } else {
                format!("{}/{code}", self.pointer)
            },
        );
        e.kind = kind;
        e.value = Some(value);
        self.entries.push(e);
        // Invariant: just pushed.
        let n = self.entries.len() - 1;
        &mut self.entries[n]
    }
    fn text(&mut self, code: &str, display: &str, t: Option<&str>) {
        if let Some(t) = t.filter(|t| !t.trim().is_empty()) {
            self.push(
                code,
                display,
                Value::Text { text: t.to_owned() },
                EntryKind::Observation,
            );
        }
    }
    fn coded(&mut self, code: &str, display: &str, system: &str, v: (&str, &str)) -> &mut Entry {
        self.push(
            code,
            display,
            Value::Coded {
                code: Code::with_display(system.to_owned(), v.0.to_owned(), v.1.to_owned()),
            },
            EntryKind::Observation,
        )
    }
    fn physician(&mut self, p: &Physician) {
        self.text("physician", "医師", Some(&p.name));
        self.text("institution", "所属・医療機関", p.institution.as_deref());
    }
    fn period(&mut self, rel: &str, p: Option<Period>) -> Result<Option<Effective>> {
        let Some(p) = p else { return Ok(None) };
        if let Some(end) = p.end
            && end < p.start
        {
            return Err(self.err(
                &format!("{rel}/end"),
                "end",
                format!("period ends {end} before it starts {}", p.start),
            ));
        }
        let eff = Effective::Period {
            start: p.start,
            end: p.end,
        };
        let text = match p.end {
            Some(e) => format!("{}〜{e}", p.start),
            None => format!("{}〜", p.start),
        };
        self.push(
            "period",
            "措置期間",
            Value::Text { text },
            EntryKind::Observation,
        )
        .effective = Some(eff);
        Ok(Some(eff))
    }
    fn measures(
        &mut self,
        status: WorkStatus,
        ms: &[Measure],
        period: Option<Period>,
    ) -> Result<()> {
        match status {
            WorkStatus::Normal if !ms.is_empty() => {
                return Err(self.err("/measures", "measures", "通常勤務 takes no measures"));
            }
            WorkStatus::Restricted if ms.is_empty() => {
                return Err(self.err(
                    "/measures",
                    "measures",
                    "就業制限 needs at least one measure",
                ));
            }
            WorkStatus::Restricted | WorkStatus::Leave if period.is_none() => {
                return Err(self.err("/period", "period", "就業制限 and 要休業 need a period"));
            }
            _ => {}
        }
        self.coded("work_status", "就業区分", SYSTEM_WORK_STATUS, status.code());
        for (i, m) in ms.iter().enumerate() {
            if m.kind == MeasureKind::Other
                && m.detail.as_deref().is_none_or(|d| d.trim().is_empty())
            {
                return Err(self.err(
                    &format!("/measures/{i}/detail"),
                    "detail",
                    "measure `other` needs a detail",
                ));
            }
            let (code, name) = m.kind.code();
            let display = match m.detail.as_deref().filter(|d| !d.trim().is_empty()) {
                Some(d) => format!("{name}: {d}"),
                None => name.to_owned(),
            };
            self.coded("measure", "就業上の措置", SYSTEM_MEASURE, (code, &display));
        }
        self.period("/period", period)?;
        Ok(())
    }
}

/// 就業区分 code system.
pub const SYSTEM_WORK_STATUS: &str = "urn:iphr:oh:work-status";
/// 就業上の措置 code system.
pub const SYSTEM_MEASURE: &str = "urn:iphr:oh:measure";
/// 主治医意見書 就業継続/復職の可否 code system.
pub const SYSTEM_VERDICT: &str = "urn:iphr:oh:attending-verdict";
/// Document kinds (the record `type`).
pub const SYSTEM_DOCUMENT: &str = "urn:iphr:oh:document";

/// The record types of `oh-records/1` with their display names.
pub const TYPES: [(&str, &str); 6] = [
    ("interview", "面談記録"),
    ("opinion", "産業医意見書"),
    ("fitness_judgement", "就業判定"),
    ("patrol", "職場巡視記録"),
    ("attending_opinion", "主治医意見書"),
    ("rework_sheet", "標準化リワークプログラム評価シート"),
];

/// The document type of an `oh-records/1` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentType {
    /// 面談記録.
    Interview,
    /// 産業医意見書.
    Opinion,
    /// 就業判定.
    FitnessJudgement,
    /// 職場巡視記録 (about a workplace; names a worker only when it concerns one).
    Patrol,
    /// 主治医意見書.
    AttendingOpinion,
    /// 標準化リワークプログラム評価シート.
    ReworkSheet,
}

/// The document type of a record read by [`read_oh`]; `None` for any other record.
pub fn document_type(record: &Record) -> Option<DocumentType> {
    let kind = record.header.report_kind.as_ref()?;
    if kind.system != SYSTEM_DOCUMENT {
        return None;
    }
    Some(match &*kind.code {
        "interview" => DocumentType::Interview,
        "opinion" => DocumentType::Opinion,
        "fitness_judgement" => DocumentType::FitnessJudgement,
        "patrol" => DocumentType::Patrol,
        "attending_opinion" => DocumentType::AttendingOpinion,
        "rework_sheet" => DocumentType::ReworkSheet,
        _ => return None,
    })
}

fn schema_error(file: &str, line: u64, pointer: String, field: &str, reason: String) -> Error {
    Error::new(
        Location::file(file)
            .at_line(line)
            .at_path(pointer)
            .with_item(field),
        ErrorKind::Schema(reason),
    )
}

/// Deserialises `text` (which starts on line `line` of the file) as `T`, turning serde's error
/// into one with the line, the JSON pointer of the failing field under `base`, and the field.
fn typed<'a, T: Deserialize<'a>>(text: &'a str, file: &str, base: &str, line: u64) -> Result<T> {
    let mut de = serde_json::Deserializer::from_str(text);
    let v = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let mut pointer = base.to_owned();
        let mut field = String::new();
        for seg in e.path().iter() {
            use serde_path_to_error::Segment;
            match seg {
                Segment::Seq { index } => {
                    pointer.push_str(&format!("/{index}"));
                    field = index.to_string();
                }
                Segment::Map { key } => {
                    pointer.push('/');
                    pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                    field.clone_from(key);
                }
                Segment::Enum { variant } => field.clone_from(variant),
                Segment::Unknown => {}
            }
        }
        let inner = e.into_inner();
        let at = line + (inner.line() as u64).saturating_sub(1);
        let syntax = inner.is_syntax() || inner.is_eof() || inner.is_io();
        // serde_json appends " at line L column C"; the location has the line already.
        let msg = inner.to_string();
        let msg = match msg.rfind(" at line ") {
            Some(p) => msg[..p].to_owned(),
            None => msg,
        };
        if syntax {
            return Error::new(Location::file(file).at_line(at), ErrorKind::Json(msg));
        }
        // serde names an unknown field in the message; make it the field.
        if let Some(rest) = msg.strip_prefix("unknown field `")
            && let Some((name, _)) = rest.split_once('`')
        {
            field = name.to_owned();
            if !pointer.ends_with(&format!("/{name}")) {
                pointer.push('/');
                pointer.push_str(name);
            }
        }
        if field.is_empty() {
            field = "(document)".into();
        }
        schema_error(file, at, pointer, &field, msg)
    })?;
    de.end().map_err(|e| {
        Error::new(
            Location::file(file).at_line(line + (e.line() as u64).saturating_sub(1)),
            ErrorKind::Json(e.to_string()),
        )
    })?;
    Ok(v)
}

/// Reads an `oh-records/1` document. `attendance` supplies item 1 of rework sheets that carry no
/// `attendance` counts (counted over the sheet's period for the sheet's worker).
pub fn read_oh(bytes: &[u8], file: &str, attendance: Option<&Attendance>) -> Result<Vec<Record>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::new(Location::file(file), ErrorKind::Encoding("UTF-8")))?;
    let doc: Document<'_> = typed(text, file, "", 1)?;
    if doc.format != FORMAT {
        return Err(schema_error(
            file,
            1,
            "/format".into(),
            "format",
            format!("{:?} is not {FORMAT:?}", doc.format),
        ));
    }
    let mut out = Vec::with_capacity(doc.records.len());
    let mut ids: HashMap<String, usize> = HashMap::new();
    for (i, raw) in doc.records.iter().enumerate() {
        let pointer = format!("/records/{i}");
        let rt = raw.get();
        // The record's first line: RawValue borrows from `text`.
        let offset = (rt.as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
        let line = 1 + text
            .as_bytes()
            .get(..offset)
            .map_or(0, |b| b.iter().filter(|c| **c == b'\n').count()) as u64;
        let head: TypeOnly = typed(rt, file, &pointer, line)?;
        let ty = match head.ty {
            Some(Json::String(t)) => t,
            _ => {
                return Err(schema_error(
                    file,
                    line,
                    format!("{pointer}/type"),
                    "type",
                    "missing or not a string".into(),
                ));
            }
        };
        // Invariant: `rt` was just parsed as an object, so it parses as a Value.
        let value: Json = serde_json::from_str(rt).unwrap_or(Json::Null);
        let b = Builder {
            file,
            line,
            pointer: pointer.clone(),
            raw: &value,
            entries: Vec::new(),
        };
        let rec = match ty.as_str() {
            "interview" => interview(b, &typed(rt, file, &pointer, line)?)?,
            "opinion" => opinion(b, &typed(rt, file, &pointer, line)?)?,
            "fitness_judgement" => fitness(b, &typed(rt, file, &pointer, line)?)?,
            "patrol" => patrol(b, &typed(rt, file, &pointer, line)?)?,
            "attending_opinion" => attending(b, &typed(rt, file, &pointer, line)?)?,
            "rework_sheet" => rework_sheet(b, &typed(rt, file, &pointer, line)?, attendance)?,
            other => {
                return Err(schema_error(
                    file,
                    line,
                    format!("{pointer}/type"),
                    "type",
                    format!(
                        "unknown record type {other:?} (expected one of {})",
                        TYPES.map(|t| t.0).join(", ")
                    ),
                ));
            }
        };
        let id = rec.source.document_id.clone().unwrap_or_default();
        if let Some(first) = ids.insert(id.clone(), i) {
            return Err(schema_error(
                file,
                line,
                format!("{pointer}/id"),
                "id",
                format!("duplicated record id {id:?} (first at /records/{first})"),
            ));
        }
        out.push(rec);
    }
    // `exported` and `source` are checked (types) but describe the export, not a record.
    let _ = (doc.exported, doc.source);
    Ok(out)
}

/// Head of a record: type, person, date, document id.
struct Head<'w> {
    ty: &'static str,
    worker: Option<&'w Worker>,
    id: &'w str,
    date: Date,
    effective: Option<Effective>,
}

impl Builder<'_> {
    fn finish(self, h: &Head<'_>) -> Result<Record> {
        if h.id.trim().is_empty() {
            return Err(self.err("/id", "id", "empty id"));
        }
        let mut person = Person::default();
        if let Some(w) = h.worker {
            if w.id.trim().is_empty() {
                return Err(self.err("/worker/id", "id", "empty worker id"));
            }
            person.identifiers.push(Identifier {
                system: EMPLOYEE.to_owned(),
                value: w.id.clone(),
            });
            person.name.clone_from(&w.name);
            person.birth_date = w.birth_date;
            person.sex = w.sex;
        }
        let display = TYPES.iter().find(|t| t.0 == h.ty).map_or(h.ty, |t| t.1);
        let raw = serde_json::to_vec(self.raw).unwrap_or_default();
        Ok(Record {
            schema: SCHEMA.into(),
            // DESIGN §5: attending-physician opinions are unit A, the OP's records unit C.
            unit: if h.ty == "attending_opinion" {
                Unit::A
            } else {
                Unit::C
            },
            person,
            effective: h.effective.unwrap_or(Effective::Date(h.date)),
            header: Header {
                report_kind: Some(Code::with_display(SYSTEM_DOCUMENT, h.ty, display)),
                program: None,
                created: Some(h.date),
                performer: None,
                insurer: None,
                sections: Vec::new(),
            },
            entries: self.entries,
            source: Source {
                format: SourceFormat::OhRecords,
                file: self.file.to_owned(),
                locator: self.pointer.into(),
                content_hash: ContentHash::of(&raw),
                document_id: Some(h.id.to_owned()),
                archive: None,
            },
            provenance: Provenance {
                converter: converter_id(),
                mapping: Some(FORMAT.to_owned()),
                tables: Vec::new(),
            },
        })
    }
}

fn interview(mut b: Builder<'_>, r: &Interview) -> Result<Record> {
    b.coded("reason", "面談の区分", SYSTEM, r.reason.code());
    b.coded(
        "mode",
        "実施方法",
        SYSTEM,
        match r.mode {
            Mode::InPerson => ("in_person", "対面"),
            Mode::Online => ("online", "オンライン"),
        },
    );
    b.physician(&r.physician);
    b.text("work_situation", "勤務の状況", r.work_situation.as_deref());
    b.text("fatigue", "疲労の蓄積の状況", r.fatigue.as_deref());
    b.text("mind_body", "その他心身の状況", r.mind_body.as_deref());
    b.text("notes", "所見・指導内容", r.notes.as_deref());
    b.finish(&Head {
        ty: "interview",
        worker: Some(&r.worker),
        id: &r.id,
        date: r.date,
        effective: None,
    })
}

fn opinion(mut b: Builder<'_>, r: &Opinion) -> Result<Record> {
    b.coded("reason", "意見の区分", SYSTEM, r.reason.code());
    b.physician(&r.physician);
    b.measures(r.work_status, &r.measures, r.period)?;
    b.text("remarks", "その他の意見", r.remarks.as_deref());
    b.finish(&Head {
        ty: "opinion",
        worker: Some(&r.worker),
        id: &r.id,
        date: r.date,
        effective: None,
    })
}

fn fitness(mut b: Builder<'_>, r: &FitnessJudgement) -> Result<Record> {
    if r.date < r.health_check_date {
        return Err(b.err(
            "/date",
            "date",
            format!(
                "判定 {} before the health check {}",
                r.date, r.health_check_date
            ),
        ));
    }
    b.push(
        "health_check_date",
        "健康診断実施日",
        Value::Text {
            text: r.health_check_date.to_string(),
        },
        EntryKind::Observation,
    )
    .effective = Some(Effective::Date(r.health_check_date));
    b.text(
        "health_check_id",
        "健康診断の文書番号",
        r.health_check_id.as_deref(),
    );
    // 安衛法66条の4: the physician's opinion is heard within 3 months of the health check.
    let within = plus_three_months(r.health_check_date).is_none_or(|limit| r.date <= limit);
    b.push(
        "opinion_within_3_months",
        "健診後3か月以内の意見聴取",
        Value::Coded {
            code: Code::with_display(
                SYSTEM,
                if within { "yes" } else { "no" },
                if within {
                    "3か月以内"
                } else {
                    "3か月超"
                },
            ),
        },
        EntryKind::Derived,
    );
    b.physician(&r.physician);
    b.measures(r.work_status, &r.measures, r.period)?;
    if let Some(g) = &r.guidance {
        if !(1..=3).contains(&g.medical) {
            return Err(b.err(
                "/guidance/medical",
                "medical",
                format!("医療区分 {} is not 1–3", g.medical),
            ));
        }
        let life = match g.life {
            Life::A => ("A", "要休業"),
            Life::B => ("B", "就業制限"),
            Life::C => ("C", "ほぼ正常"),
            Life::D => ("D", "平常"),
        };
        let med = match g.medical {
            1 => ("1", "要医療"),
            2 => ("2", "要観察"),
            _ => ("3", "不要"),
        };
        b.coded("guidance_life", "指導区分 生活規正", SYSTEM, life);
        b.coded("guidance_medical", "指導区分 医療", SYSTEM, med);
    }
    b.text("remarks", "備考", r.remarks.as_deref());
    b.finish(&Head {
        ty: "fitness_judgement",
        worker: Some(&r.worker),
        id: &r.id,
        date: r.date,
        effective: None,
    })
}

/// The same day three months later (the month's last day when it has no such day).
fn plus_three_months(d: Date) -> Option<Date> {
    let m = u16::from(d.month()) + 3;
    let (y, m) = if m > 12 {
        (d.year() + 1, m - 12)
    } else {
        (d.year(), m)
    };
    let m = u8::try_from(m).ok()?;
    (1..=d.day()).rev().find_map(|day| Date::new(y, m, day))
}

fn patrol(mut b: Builder<'_>, r: &Patrol) -> Result<Record> {
    if r.workplace.id.trim().is_empty() {
        return Err(b.err("/workplace/id", "id", "empty workplace id"));
    }
    b.text(
        "workplace",
        "作業場",
        Some(&format!("{} ({})", r.workplace.name, r.workplace.id)),
    );
    b.physician(&r.physician);
    for (i, f) in r.findings.iter().enumerate() {
        if let Some(d) = f.due
            && d < r.date
        {
            return Err(b.err(
                &format!("/findings/{i}/due"),
                "due",
                format!("due {d} before the patrol {}", r.date),
            ));
        }
        let mut text = format!("{}: {}", f.area, f.finding);
        if let Some(a) = &f.action {
            text.push_str(&format!(" → 措置: {a}"));
        }
        if let Some(d) = f.due {
            text.push_str(&format!(" (期限 {d})"));
        }
        b.push(
            "finding",
            "指摘事項",
            Value::Text { text },
            EntryKind::Observation,
        );
    }
    b.text("remarks", "備考", r.remarks.as_deref());
    b.finish(&Head {
        ty: "patrol",
        worker: None,
        id: &r.id,
        date: r.date,
        effective: None,
    })
}

fn attending(mut b: Builder<'_>, r: &AttendingOpinion) -> Result<Record> {
    let ret = r.kind == AttendingKind::ReturnToWork;
    let verdict = match (r.verdict, ret) {
        (Verdict::Fit, false) => ("fit", "就業継続可"),
        (Verdict::FitWithConditions, false) => (
            "fit_with_conditions",
            "条件付きで可 (就業上の措置があれば可能)",
        ),
        (Verdict::Unfit, false) => ("unfit", "現時点で不可 (療養の継続が望ましい)"),
        (Verdict::Fit, true) => ("fit", "復職可"),
        (Verdict::FitWithConditions, true) => ("fit_with_conditions", "条件付き可"),
        (Verdict::Unfit, true) => ("unfit", "現時点で不可 (休業)"),
    };
    if r.verdict == Verdict::FitWithConditions && r.measures.is_empty() {
        return Err(b.err(
            "/measures",
            "measures",
            "条件付き needs the desired measures",
        ));
    }
    if r.verdict == Verdict::FitWithConditions && r.period.is_none() {
        return Err(b.err(
            "/period",
            "period",
            "条件付き needs the period of the measures",
        ));
    }
    if r.leave_until.is_some() && r.verdict != Verdict::Unfit {
        return Err(b.err(
            "/leave_until",
            "leave_until",
            "leave_until only with verdict unfit",
        ));
    }
    b.coded(
        "kind",
        "意見書の種類",
        SYSTEM,
        if ret {
            ("return_to_work", "職場復帰の可否等についての主治医意見書")
        } else {
            ("continuation", "治療と就業の両立支援 主治医意見書")
        },
    );
    b.text("institution", "医療機関", Some(&r.institution));
    b.text("physician", "主治医", Some(&r.physician));
    b.text("diagnosis", "病名", Some(&r.diagnosis));
    b.text("symptoms", "現在の症状", r.symptoms.as_deref());
    b.text("treatment_plan", "治療の予定", r.treatment_plan.as_deref());
    b.coded(
        "verdict",
        if ret {
            "職場復帰の可否"
        } else {
            "就業継続の可否"
        },
        SYSTEM_VERDICT,
        verdict,
    );
    for m in &r.measures {
        b.text("measure", "望ましい就業上の措置", Some(m));
    }
    b.text(
        "considerations",
        "その他配慮事項",
        r.considerations.as_deref(),
    );
    b.period("/period", r.period)?;
    if let Some(d) = r.leave_until {
        b.push(
            "leave_until",
            "休業 (〜年月日)",
            Value::Text {
                text: d.to_string(),
            },
            EntryKind::Observation,
        )
        .effective = Some(Effective::Date(d));
    }
    b.finish(&Head {
        ty: "attending_opinion",
        worker: Some(&r.worker),
        id: &r.id,
        date: r.date,
        effective: None,
    })
}

fn rework_sheet(mut b: Builder<'_>, r: &ReworkSheet, att: Option<&Attendance>) -> Result<Record> {
    let Some(end) = r.period.end else {
        return Err(b.err(
            "/period/end",
            "end",
            "a rework sheet needs the end of its period",
        ));
    };
    if end < r.period.start {
        return Err(b.err(
            "/period/end",
            "end",
            format!("period ends {end} before it starts {}", r.period.start),
        ));
    }
    let counts = match (r.attendance, att) {
        (Some(c), _) => c,
        (None, Some(a)) => AttendanceCounts::from_days(a, &r.worker.id, r.period.start, end),
        (None, None) => {
            return Err(b.err(
                "/attendance",
                "attendance",
                "item 1 (出席率) needs attendance counts or an attendance CSV",
            ));
        }
    };
    let Some(score1) = counts.score() else {
        return Err(b.err(
            "/attendance",
            "attendance",
            format!(
                "attendance counts give no rate (scheduled {}, absent {}, late {}, early {})",
                counts.scheduled_days, counts.absent_days, counts.late, counts.early
            ),
        ));
    };
    let mut scores = vec![score1];
    for item in &rework::ITEMS[1..] {
        let s = r.scores.get(item.key).unwrap_or(0);
        if !(1..=4).contains(&s) {
            return Err(b.err(
                &format!("/scores/{}", item.key),
                item.key,
                format!(
                    "score {s} of item {} ({}) is not 1–4",
                    item.number, item.name
                ),
            ));
        }
        scores.push(s);
    }
    b.text("assessor", "評価者", Some(&r.assessor));
    b.text(
        "attendance_counts",
        "出席の内訳",
        Some(&format!(
            "予定 {} 日, 欠席 {} 日, 遅刻 {} 回, 早退 {} 回 ({})",
            counts.scheduled_days,
            counts.absent_days,
            counts.late,
            counts.early,
            if r.attendance.is_some() {
                "記録に記載"
            } else {
                "勤怠CSVから算出"
            }
        )),
    );
    let (att_half, sched_half) = counts.half_days().unwrap_or((0, 1));
    // Rate in tenths of a percent, truncated.
    let permille = att_half * 1000 / sched_half;
    b.push(
        "attendance_rate",
        "出席率 (欠席1日, 遅刻・早退0.5日)",
        Value::Quantity {
            value: crate::attendance::dec(&format!("{}.{}", permille / 10, permille % 10)),
            unit: "%".into(),
        },
        EntryKind::Derived,
    );
    for (item, s) in rework::ITEMS.iter().zip(scores) {
        let anchor = rework::anchor(item.number, s).unwrap_or("");
        let e = b.push(
            item.key,
            &format!("{}. {}", item.number, item.name),
            Value::Coded {
                code: Code::with_display(
                    format!("{}/{}", rework::SYSTEM, item.number),
                    s.to_string(),
                    anchor.to_owned(),
                ),
            },
            if item.number == 1 {
                EntryKind::Derived
            } else {
                EntryKind::Observation
            },
        );
        e.code = Code::with_display(
            rework::SYSTEM,
            item.key,
            format!("{}. {}", item.number, item.name),
        );
        e.analyte = Some(item.section.into());
    }
    b.text("remarks", "備考", r.remarks.as_deref());
    let eff = Effective::Period {
        start: r.period.start,
        end: Some(end),
    };
    b.finish(&Head {
        ty: "rework_sheet",
        worker: Some(&r.worker),
        id: &r.id,
        date: r.date,
        effective: Some(eff),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn three_months_later() {
        let d = |s: &str| s.parse::<Date>().unwrap();
        assert_eq!(plus_three_months(d("2025-12-10")), Some(d("2026-03-10")));
        assert_eq!(plus_three_months(d("2025-11-30")), Some(d("2026-02-28")));
        assert_eq!(plus_three_months(d("2026-01-31")), Some(d("2026-04-30")));
    }
}
