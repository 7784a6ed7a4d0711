//! FHIR R4 export with JP Core profiles (issue 4, Deliver 5; DESIGN §6; domain.md §6.1–§6.3).
//!
//! One [`Record`] becomes: `Patient` (JP_Patient), `Organization` (JP_Organization) for the
//! institution and the insurer, one `Specimen` (JP_Specimen_Common) per specimen material of its lab
//! results, one `Observation` per source entry (JP_Observation_LabResult / _VitalSigns /
//! _BodyMeasurement / _Common by the item's category; groups as an Observation with `hasMember`),
//! and one `DiagnosticReport` (JP_DiagnosticReport_Common) that groups the results.
//!
//! **Why DiagnosticReport, not Composition.** JP Core (the profile set partners are promised, and
//! the one shipped in `testdata/jp-core` for validation) profiles DiagnosticReport but has no
//! health-check Composition; the MHLW 健康診断結果報告書 Composition lives in the separate eCheckup IG
//! and makes the Bundle a signed `document` with fixed sections and narrative. A DiagnosticReport
//! with `result` references is searchable by patient/date/code like the Observations themselves, fits
//! both a `collection` Bundle and NDJSON bulk export, and can later be wrapped by an eCheckup
//! Composition without changing the Observations.
//!
//! Ids are deterministic (UUIDs from SHA-256 of the record's content hash and the entry id; the
//! Patient's from the person key), so exporting twice gives identical output and the same person
//! keeps one Patient id.
//!
//! **Derived judgements** (computed by `judgement.rs`, never present in the source) are exported
//! too, each marked as derived:
//! - 保健指導判定値 / 受診勧奨判定値 flags → extra `Observation.interpretation` codings in
//!   [`FLAG_CS`] (`guidance-level`, `referral-level`); no official code system exists for them.
//! - per-item 判定区分 A–E → a separate `Observation` (JP_Observation_Common, category `exam`), code
//!   [`GRADE_CODE`] in [`JUDGEMENT_CS`], value in [`GRADE_CS`] (the 日本人間ドック・予防医療学会 scale,
//!   domain.md §7.1; no official FHIR code system), `derivedFrom` the item's Observation.
//! - メタボ判定 and 階層化 → `Observation` (JP_Observation_Common, `exam`) coded with the official
//!   特定健診 item codes 9N501000000000011 / 9N506000000000011 (`urn:oid:1.2.392.200119.6.1005`)
//!   plus the iPHR derived code, valued in the official MHLW tables `urn:oid:1.2.392.200119.6.1008`
//!   / `…6.3001`, `derivedFrom` the Observations the rules read.
//!
//! Every derived Observation carries `meta.tag` [`DERIVED_TAG`] and a note naming the judgement
//! tables, so a consumer can tell them from the institution's own judgements.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::{Map, Value as Json, json};

use crate::catalogue::{Catalogue, Category, Item, Material};
use crate::iphr::{
    Absent, Bound, ContentHash, Entry, EntryKind, Flag, Grade, Interpretation, Record, Relation,
    Sex, SourceFormat, Value, systems,
};

const JP: &str = "http://jpfhir.jp/fhir/core/StructureDefinition/";
const CATEGORY_CS: &str = "http://jpfhir.jp/fhir/core/CodeSystem/JP_SimpleObservationCategory_CS";
/// JLAC10 system in JP Core terminology.
pub const JLAC10_FHIR: &str = "http://medis.or.jp/CodeSystem/master-JLAC10-17digits";
/// JP-CLINS member id system (`保険者番号:記号:番号:枝番`).
pub const MEMBER_ID: &str = "http://jpfhir.jp/fhir/clins/Idsystem/JP_Insurance_memberID";
/// JP Core insurer number system.
pub const INSURER_NUMBER: &str = "http://jpfhir.jp/fhir/core/mhlw/IdSystem/InsurerNumber";
/// Identifier system of the source content hash on the DiagnosticReport.
pub const SOURCE_HASH: &str = "urn:iphr:source-content-hash";

/// Our code system of the 判定値 flags (no official one exists).
pub const FLAG_CS: &str = "http://iphr.example.jp/fhir/CodeSystem/judgement-flag";
/// Our code system of the 判定区分 scale A–E (no official FHIR code system exists).
pub const GRADE_CS: &str = "http://iphr.example.jp/fhir/CodeSystem/judgement-grade";
/// Our code system of the derived judgement kinds (the Observation.code of a 判定区分).
pub const JUDGEMENT_CS: &str = "http://iphr.example.jp/fhir/CodeSystem/derived-judgement";
/// Code of a per-item 判定区分 Observation in [`JUDGEMENT_CS`].
pub const GRADE_CODE: &str = "item-grade";
/// `meta.tag` of every Observation computed by the converter rather than read from the source.
pub const DERIVED_TAG: &str = "http://iphr.example.jp/fhir/CodeSystem/provenance-tag";

/// How resources reference each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefStyle {
    /// `urn:uuid:…`, for Bundles (with `fullUrl`).
    Uuid,
    /// `Type/id`, for NDJSON bulk files.
    Relative,
}

pub(crate) fn uuid_of(parts: &[&str]) -> String {
    let mut buf = Vec::new();
    for p in parts {
        buf.extend_from_slice(p.as_bytes());
        buf.push(0);
    }
    let h = ContentHash::of(&buf);
    let mut b: [u8; 16] = [0; 16];
    b.copy_from_slice(&h.bytes()[..16]);
    b[6] = (b[6] & 0x0F) | 0x50; // version 5-like (name-based, SHA)
    b[8] = (b[8] & 0x3F) | 0x80; // RFC 4122 variant
    let x: String = b.iter().map(|v| format!("{v:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

struct Ctx<'a> {
    rec: &'a Record,
    style: RefStyle,
    hash: String,
}

impl Ctx<'_> {
    fn reference(&self, ty: &str, id: &str) -> Json {
        match self.style {
            RefStyle::Uuid => json!({ "reference": format!("urn:uuid:{id}") }),
            RefStyle::Relative => json!({ "reference": format!("{ty}/{id}") }),
        }
    }
    fn patient_id(&self) -> String {
        uuid_of(&[
            "Patient",
            &self.rec.person.key().unwrap_or_else(|| self.hash.clone()),
        ])
    }
    fn entry_id(&self, e: &str) -> String {
        uuid_of(&["Observation", &self.hash, e])
    }
}

fn fhir_system(system: &str) -> &str {
    if system == systems::JLAC10 {
        JLAC10_FHIR
    } else {
        system
    }
}

fn coding(c: &crate::iphr::Code) -> Json {
    let mut m = Map::new();
    m.insert("system".into(), json!(fhir_system(&c.system)));
    m.insert("code".into(), json!(c.code));
    if let Some(d) = &c.display {
        m.insert("display".into(), json!(d));
    }
    Json::Object(m)
}

fn number(d: &crate::iphr::Decimal) -> Json {
    // FHIR decimals are JSON numbers; trailing zeros of the source ("92.0") may not survive f64.
    serde_json::Number::from_f64(d.to_f64()).map_or(Json::Null, Json::Number)
}

fn quantity(value: &Json, ucum: &str) -> Json {
    json!({ "value": value, "unit": ucum, "system": systems::UCUM, "code": ucum })
}

/// A resource with its type and id.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// `resourceType`.
    pub resource_type: &'static str,
    /// `id`.
    pub id: String,
    /// The JSON.
    pub json: Json,
}

/// All resources of one record, in a stable order: Patient, Organizations, Specimens,
/// Observations, DiagnosticReport.
pub fn record_resources(rec: &Record, style: RefStyle) -> Vec<Resource> {
    // --- issue 5 (conv2): claims and stress checks have their own mappings ---
    match rec.source.format {
        SourceFormat::UkeClaims => return crate::claims::fhir::resources(rec, style),
        SourceFormat::StressCheck => return crate::stress::fhir::resources(rec, style),
        _ => {}
    }
    // issue 5 part 2 (conv3): attendance and occupational-health records have their own mapping.
    if matches!(
        rec.source.format,
        crate::iphr::SourceFormat::Attendance | crate::iphr::SourceFormat::OhRecords
    ) {
        return crate::oh::fhir::record_resources(rec, style);
    }
    let cat = Catalogue::builtin();
    let ctx = Ctx {
        rec,
        style,
        hash: rec.source.content_hash.hex(),
    };
    let mut out = Vec::new();
    let pid = ctx.patient_id();
    out.push(Resource {
        resource_type: "Patient",
        id: pid.clone(),
        json: patient(&ctx, &pid),
    });

    let mut performer_ref = None;
    for (org, is_insurer) in [(&rec.header.performer, false), (&rec.header.insurer, true)] {
        let Some(org) = org else { continue };
        let id = uuid_of(&["Organization", &org.id.system, &org.id.value]);
        let mut j = json!({
            "resourceType": "Organization",
            "id": id,
            "meta": { "profile": [format!("{JP}JP_Organization")] },
            "identifier": [{
                "system": if is_insurer { INSURER_NUMBER } else { org.id.system.as_str() },
                "value": org.id.value,
            }],
        });
        if let Some(n) = &org.name {
            j["name"] = json!(n);
        }
        if !is_insurer {
            performer_ref = Some(ctx.reference("Organization", &id));
        }
        out.push(Resource {
            resource_type: "Organization",
            id,
            json: j,
        });
    }

    let date = rec.effective.start().to_string();
    // Specimens per material, in a fixed order.
    let mut materials: BTreeMap<&'static str, (String, Material)> = BTreeMap::new();
    for e in &rec.entries {
        if let Some(m) = item_of(cat, e).and_then(|i| i.material) {
            let key = material_key(m);
            materials
                .entry(key)
                .or_insert_with(|| (uuid_of(&["Specimen", &ctx.hash, key]), m));
        }
    }
    for (key, (id, m)) in &materials {
        let (code, text) = match m {
            Material::BloodSerum => ("023", "血清"),
            Material::Blood => ("019", "全血"),
            Material::Urine => ("001", "尿"),
        };
        out.push(Resource {
            resource_type: "Specimen",
            id: id.clone(),
            json: json!({
                "resourceType": "Specimen",
                "id": id,
                "meta": { "profile": [format!("{JP}JP_Specimen_Common")] },
                "type": { "coding": [{ "system": "urn:iphr:jlac10-material", "code": code, "display": text }], "text": text },
                "subject": ctx.reference("Patient", &pid),
                "collection": { "collectedDateTime": date },
                "note": [{ "text": format!("material {key}") }],
            }),
        });
    }

    let mut results = Vec::new();
    for e in &rec.entries {
        if e.kind == EntryKind::Document {
            continue;
        }
        let id = ctx.entry_id(&e.id);
        let j = if e.kind == EntryKind::Derived {
            derived_observation(&ctx, e, &id, &pid)
        } else {
            observation(&ctx, cat, e, &id, &pid, performer_ref.as_ref(), &materials)
        };
        if e.parent.is_none() {
            results.push(ctx.reference("Observation", &id));
        }
        out.push(Resource {
            resource_type: "Observation",
            id: id.clone(),
            json: j,
        });
        if let Some(g) = e.grade {
            let gid = uuid_of(&["Observation", &ctx.hash, &e.id, GRADE_CODE]);
            results.push(ctx.reference("Observation", &gid));
            out.push(Resource {
                resource_type: "Observation",
                json: grade_observation(&ctx, cat, e, g, &gid, &id, &pid),
                id: gid,
            });
        }
    }

    let rid = uuid_of(&["DiagnosticReport", &ctx.hash]);
    let mut code_codings = Vec::new();
    if let Some(p) = &rec.header.program {
        code_codings.push(coding(p));
    }
    if let Some(k) = &rec.header.report_kind {
        code_codings.push(coding(k));
    }
    let mut dr = json!({
        "resourceType": "DiagnosticReport",
        "id": rid,
        "meta": { "profile": [format!("{JP}JP_DiagnosticReport_Common")] },
        "identifier": [{ "system": SOURCE_HASH, "value": rec.source.content_hash.to_string() }],
        "status": "final",
        "code": { "coding": code_codings, "text": "健康診断結果" },
        "subject": ctx.reference("Patient", &pid),
        "effectiveDateTime": date,
        "result": results,
    });
    if code_codings_empty(&dr) {
        dr["code"] = json!({ "text": "健康診断結果" });
    }
    if let Some(p) = &performer_ref {
        dr["performer"] = json!([p]);
    }
    if !materials.is_empty() {
        dr["specimen"] = Json::Array(
            materials
                .values()
                .map(|(id, _)| ctx.reference("Specimen", id))
                .collect(),
        );
    }
    out.push(Resource {
        resource_type: "DiagnosticReport",
        id: rid,
        json: dr,
    });
    out
}

// --- issue 5 (conv2): helpers for the claims and stress-check mappings ---
/// The record's `Patient` (JP_Patient) with its deterministic id.
pub(crate) fn patient_resource(rec: &Record, style: RefStyle) -> Resource {
    let ctx = Ctx {
        rec,
        style,
        hash: rec.source.content_hash.hex(),
    };
    let id = ctx.patient_id();
    Resource {
        resource_type: "Patient",
        json: patient(&ctx, &id),
        id,
    }
}

/// A reference to `ty/id` in the given style.
pub(crate) fn reference(style: RefStyle, ty: &str, id: &str) -> Json {
    match style {
        RefStyle::Uuid => json!({ "reference": format!("urn:uuid:{id}") }),
        RefStyle::Relative => json!({ "reference": format!("{ty}/{id}") }),
    }
}

/// Resource types written once per output even when several records carry them.
pub fn is_shared_type(resource_type: &str) -> bool {
    matches!(resource_type, "Patient" | "Organization" | "Questionnaire")
}

fn code_codings_empty(dr: &Json) -> bool {
    dr["code"]["coding"].as_array().is_some_and(Vec::is_empty)
}

fn material_key(m: Material) -> &'static str {
    match m {
        Material::BloodSerum => "blood-serum",
        Material::Blood => "blood",
        Material::Urine => "urine",
    }
}

fn item_of<'c>(cat: &'c Catalogue, e: &Entry) -> Option<&'c Item> {
    if e.code.system == systems::TOKUTEI_ITEM {
        cat.item(&e.code.code)
    } else {
        None
    }
}

fn patient(ctx: &Ctx<'_>, id: &str) -> Json {
    let p = &ctx.rec.person;
    let mut identifiers = Vec::new();
    if let Some(i) = &p.insured {
        identifiers.push(json!({ "system": MEMBER_ID, "value": i.member_id() }));
    }
    for i in &p.identifiers {
        identifiers.push(json!({ "system": i.system, "value": i.value }));
    }
    if identifiers.is_empty() {
        identifiers.push(
            json!({ "system": SOURCE_HASH, "value": ctx.rec.source.content_hash.to_string() }),
        );
    }
    let mut j = json!({
        "resourceType": "Patient",
        "id": id,
        "meta": { "profile": [format!("{JP}JP_Patient")] },
        "identifier": identifiers,
    });
    let mut names = Vec::new();
    if let Some(n) = &p.name {
        names.push(json!({ "use": "official", "text": n }));
    }
    if let Some(k) = &p.name_kana {
        names.push(json!({
            "extension": [{ "url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation", "valueCode": "SYL" }],
            "use": "official",
            "text": k,
        }));
    }
    if !names.is_empty() {
        j["name"] = Json::Array(names);
    }
    if let Some(s) = p.sex {
        j["gender"] = json!(match s {
            Sex::Male => "male",
            Sex::Female => "female",
        });
    }
    if let Some(b) = p.birth_date {
        j["birthDate"] = json!(b.to_string());
    }
    if let Some(pc) = &p.postal_code {
        j["address"] = json!([{ "postalCode": pc }]);
    }
    j
}

fn observation(
    ctx: &Ctx<'_>,
    cat: &Catalogue,
    e: &Entry,
    id: &str,
    pid: &str,
    performer: Option<&Json>,
    materials: &BTreeMap<&'static str, (String, Material)>,
) -> Json {
    let item = item_of(cat, e);
    let category = item.map_or(Category::Exam, |i| i.category);
    let (profile, cat_code) = match category {
        Category::Laboratory => ("JP_Observation_LabResult", "laboratory"),
        Category::VitalSigns => ("JP_Observation_VitalSigns", "vital-signs"),
        Category::BodyMeasurement => ("JP_Observation_BodyMeasurement", "body-measurement"),
        Category::Exam => ("JP_Observation_Common", "exam"),
        Category::Survey => ("JP_Observation_Common", "survey"),
    };
    let (profile, cat_code) = if e.kind == EntryKind::Group {
        ("JP_Observation_Common", "laboratory")
    } else {
        (profile, cat_code)
    };
    let mut codings = vec![coding(&e.code)];
    codings.extend(e.codings.iter().map(coding));
    let text = item.map_or_else(
        || {
            e.code
                .display
                .clone()
                .unwrap_or_else(|| e.code.code.clone())
                .into_owned()
        },
        |i| i.name.clone(),
    );
    let date = e.effective.unwrap_or(ctx.rec.effective).start().to_string();
    let mut j = json!({
        "resourceType": "Observation",
        "id": id,
        "meta": { "profile": [format!("{JP}{profile}")] },
        "status": if e.absent == Some(Absent::NotPerformed) { "cancelled" } else { "final" },
        "category": [{ "coding": [{ "system": CATEGORY_CS, "code": cat_code }] }],
        "code": { "coding": codings, "text": text },
        "subject": ctx.reference("Patient", pid),
        "effectiveDateTime": date,
    });
    let mut performers = Vec::new();
    if let Some(p) = performer {
        performers.push(p.clone());
    }
    if let Some(name) = &e.performer {
        performers.push(json!({ "display": name }));
    }
    if !performers.is_empty() {
        j["performer"] = Json::Array(performers);
    }
    let ucum = item.and_then(|i| i.ucum.clone()).unwrap_or_default();
    match (&e.value, e.absent, e.out_of_range) {
        (Some(Value::Quantity { value, unit }), _, _) => {
            j["valueQuantity"] = quantity(&number(value), unit);
        }
        (Some(Value::Coded { code }), _, _) => {
            j["valueCodeableConcept"] = json!({ "coding": [coding(code)], "text": code.display.clone().unwrap_or_else(|| code.code.clone()) });
        }
        (Some(Value::Text { text }), _, _) => j["valueString"] = json!(text),
        (Some(Value::Document { .. }), _, _) => {}
        (None, _, Some(bound)) => {
            // 入力範囲外 without the measured value: the input limit with a comparator.
            if let Some([lo, hi]) = item.and_then(|i| i.range) {
                let (cmp, lim) = match bound {
                    Bound::Above => (">=", hi),
                    Bound::Below => ("<=", lo),
                };
                let mut q = quantity(&json!(lim), &ucum);
                q["comparator"] = json!(cmp);
                j["valueQuantity"] = q;
            } else {
                j["dataAbsentReason"] = json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "unknown" }], "text": "入力範囲外" });
            }
        }
        (None, Some(Absent::NotPerformed), None) => {
            j["dataAbsentReason"] = json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "not-performed" }], "text": "未実施" });
        }
        (None, Some(Absent::CannotMeasure), None) => {
            j["dataAbsentReason"] = json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "error" }], "text": "測定不可能" });
        }
        (None, None, None) => {}
    }
    if let Some(b) = e.out_of_range {
        j["note"] = json!([{ "text": match b { Bound::Above => "入力範囲外(以上)", Bound::Below => "入力範囲外(以下)" } }]);
    }
    let mut interpretations = Vec::new();
    if let Some(i) = e.interpretation {
        let (code, display) = match i {
            Interpretation::H => ("H", "High"),
            Interpretation::L => ("L", "Low"),
            Interpretation::N => ("N", "Normal"),
            Interpretation::A => ("A", "Abnormal"),
        };
        interpretations.push(json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": code, "display": display }] }));
    }
    for f in &e.flags {
        let (code, display) = match f {
            Flag::GuidanceLevel => ("guidance-level", "保健指導判定値以上"),
            Flag::ReferralLevel => ("referral-level", "受診勧奨判定値以上"),
        };
        interpretations.push(json!({
            "coding": [{ "system": FLAG_CS, "code": code, "display": display }],
            "text": format!("{display}(導出)"),
        }));
    }
    if !interpretations.is_empty() {
        j["interpretation"] = Json::Array(interpretations);
    }
    if let Some(r) = &e.reference_range {
        let mut rr = Map::new();
        let unit = r.unit.clone().unwrap_or_else(|| ucum.clone());
        if let Some(l) = &r.low {
            rr.insert("low".into(), quantity(&number(l), &unit));
        }
        if let Some(h) = &r.high {
            rr.insert("high".into(), quantity(&number(h), &unit));
        }
        if let Some(t) = &r.text {
            rr.insert("text".into(), json!(t));
        }
        if !rr.is_empty() {
            j["referenceRange"] = json!([Json::Object(rr)]);
        }
    }
    if let Some(m) = &e.method
        && !item.is_some_and(|i| i.jlac10)
    {
        j["method"] = json!({ "coding": [coding(m)] });
    }
    if let Some(m) = item.and_then(|i| i.material)
        && let Some((sid, _)) = materials.get(material_key(m))
    {
        j["specimen"] = ctx.reference("Specimen", sid);
    }
    if e.kind == EntryKind::Group {
        let members: Vec<Json> = ctx
            .rec
            .entries
            .iter()
            .filter(|m| m.parent.as_deref() == Some(e.id.as_str()))
            .map(|m| {
                let mut r = ctx.reference("Observation", &ctx.entry_id(&m.id));
                if m.relation == Some(Relation::Reason) {
                    r["display"] = json!("実施理由");
                }
                r
            })
            .collect();
        j["hasMember"] = Json::Array(members);
    }
    j
}

/// `meta` of a derived Observation: the JP Core profile and the derived tag.
fn derived_meta() -> Json {
    json!({
        "profile": [format!("{JP}JP_Observation_Common")],
        "tag": [{ "system": DERIVED_TAG, "code": "derived", "display": "変換時に判定表から導出" }],
    })
}

fn derived_note(ctx: &Ctx<'_>) -> Json {
    json!([{ "text": format!("導出: {}", ctx.rec.provenance.tables.join(", ")) }])
}

/// The per-item 判定区分 of `e` as an Observation derived from the item's Observation `obs_id`.
fn grade_observation(
    ctx: &Ctx<'_>,
    cat: &Catalogue,
    e: &Entry,
    g: Grade,
    id: &str,
    obs_id: &str,
    pid: &str,
) -> Json {
    let (code, display) = match g {
        Grade::A => ("A", "異常なし"),
        Grade::B => ("B", "軽度異常"),
        Grade::C => ("C", "要再検査・生活改善"),
        Grade::D => ("D", "要精密検査・治療"),
        Grade::E => ("E", "治療中"),
    };
    let item = item_of(cat, e).map_or_else(
        || {
            e.code
                .display
                .clone()
                .unwrap_or_else(|| e.code.code.clone())
                .into_owned()
        },
        |i| i.name.clone(),
    );
    let date = e.effective.unwrap_or(ctx.rec.effective).start().to_string();
    json!({
        "resourceType": "Observation",
        "id": id,
        "meta": derived_meta(),
        "status": "final",
        "category": [{ "coding": [{ "system": CATEGORY_CS, "code": "exam" }] }],
        "code": {
            "coding": [{ "system": JUDGEMENT_CS, "code": GRADE_CODE, "display": "判定区分(項目別)" }],
            "text": format!("判定区分: {item}"),
        },
        "subject": ctx.reference("Patient", pid),
        "effectiveDateTime": date,
        "valueCodeableConcept": {
            "coding": [{ "system": GRADE_CS, "code": code, "display": display }],
            "text": format!("{code} {display}"),
        },
        "derivedFrom": [ctx.reference("Observation", obs_id)],
        "note": derived_note(ctx),
    })
}

/// Analytes each record-level derived judgement reads (for `derivedFrom`).
const RISK_ANALYTES: &[&str] = &[
    "waist",
    "visceral-fat-area",
    "bmi",
    "glucose-fasting",
    "glucose-casual",
    "hba1c",
    "tg-fasting",
    "tg-casual",
    "hdl",
    "sbp",
    "dbp",
    "medication-bp",
    "medication-glucose",
    "medication-lipid",
    "smoking",
];

/// A record-level derived entry (メタボ判定, 階層化) as an Observation.
fn derived_observation(ctx: &Ctx<'_>, e: &Entry, id: &str, pid: &str) -> Json {
    let mut codings = Vec::new();
    let official = match e.code.code.as_ref() {
        "metabolic-syndrome" => Some(("9N501000000000011", "メタボリックシンドローム判定")),
        "guidance-level" => Some(("9N506000000000011", "保健指導レベル")),
        _ => None,
    };
    if let Some((c, d)) = official {
        codings.push(json!({ "system": systems::TOKUTEI_ITEM, "code": c, "display": d }));
    }
    // The iPHR's `urn:iphr:derived` code, in the FHIR-facing code system of derived judgements.
    codings.push(json!({ "system": JUDGEMENT_CS, "code": e.code.code, "display": e.code.display }));
    let text = e
        .code
        .display
        .clone()
        .unwrap_or_else(|| e.code.code.clone())
        .into_owned();
    let date = e.effective.unwrap_or(ctx.rec.effective).start().to_string();
    let mut j = json!({
        "resourceType": "Observation",
        "id": id,
        "meta": derived_meta(),
        "status": "final",
        "category": [{ "coding": [{ "system": CATEGORY_CS, "code": "exam" }] }],
        "code": { "coding": codings, "text": text },
        "subject": ctx.reference("Patient", pid),
        "effectiveDateTime": date,
        "note": derived_note(ctx),
    });
    if let Some(Value::Coded { code }) = &e.value {
        j["valueCodeableConcept"] = json!({ "coding": [coding(code)], "text": code.display.clone().unwrap_or_else(|| code.code.clone()) });
    }
    let from: Vec<Json> = ctx
        .rec
        .entries
        .iter()
        .filter(|m| {
            m.kind == EntryKind::Observation
                && m.absent.is_none()
                && m.analyte
                    .as_deref()
                    .is_some_and(|a| RISK_ANALYTES.contains(&a))
        })
        .map(|m| ctx.reference("Observation", &ctx.entry_id(&m.id)))
        .collect();
    if !from.is_empty() {
        j["derivedFrom"] = Json::Array(from);
    }
    j
}

/// A `collection` Bundle of the records' resources (Patients and Organizations once each).
pub fn bundle(records: &[Record]) -> Json {
    let mut seen = std::collections::HashSet::new();
    let mut entries = Vec::new();
    for r in records {
        for res in record_resources(r, RefStyle::Uuid) {
            if seen.insert((res.resource_type, res.id.clone())) {
                entries.push(
                    json!({ "fullUrl": format!("urn:uuid:{}", res.id), "resource": res.json }),
                );
            }
        }
    }
    json!({ "resourceType": "Bundle", "type": "collection", "entry": entries })
}

/// Writes the records' resources as NDJSON (one resource per line, relative references), skipping
/// Patients and Organizations already written through `seen`.
pub fn write_ndjson<W: Write>(
    w: &mut W,
    rec: &Record,
    seen: &mut std::collections::HashSet<(&'static str, String)>,
) -> std::io::Result<()> {
    for res in record_resources(rec, RefStyle::Relative) {
        let shared = is_shared_type(res.resource_type);
        if shared && !seen.insert((res.resource_type, res.id.clone())) {
            continue;
        }
        serde_json::to_writer(&mut *w, &res.json)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_stable_and_well_formed() {
        let a = uuid_of(&["Patient", "x"]);
        assert_eq!(a, uuid_of(&["Patient", "x"]));
        assert_ne!(a, uuid_of(&["Patient", "y"]));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "5");
    }
}
