//! FHIR R4 export of attendance months (unit B) and occupational-health records (unit C)
//! (issue 5, Deliver 5; JP Core profiles where they exist).
//!
//! - Attendance month → one `Observation` (JP_Observation_Common, category `social-history`) per
//!   figure: hours as `valueQuantity` in UCUM `h`/`d`, the overtime band and the interview status
//!   as `valueCodeableConcept`; `effectivePeriod` is the calendar month.
//! - OH record → one `DocumentReference` (JP_DocumentReference) plus one `Observation`
//!   (JP_Observation_Common; category `exam`, `survey` for the rework sheet) per coded or numeric
//!   field (就業区分, each 就業上の措置, 可否, rework item scores with their anchors, 出席率), linked
//!   from `DocumentReference.context.related`.
//!
//! **Why DocumentReference, not Composition.** JP Core profiles DocumentReference
//! (`JP_DocumentReference`, in `testdata/jp-core`) but has no Composition profile; a Composition
//! makes sense only as the first entry of a signed `document` Bundle, while these records travel in
//! `collection` Bundles and NDJSON bulk files one by one. The DocumentReference carries the whole
//! record as readable text (`content.attachment`, `text/plain`, base64) so nothing of the opinion is
//! lost, and the fields partners query (就業区分, measures, their period) are Observations with codes.
//! A patrol record has no subject (it is about a workplace, not a person).

use serde_json::{Value as Json, json};

use crate::fhir::{RefStyle, Resource, uuid_of};
use crate::iphr::{Code, Effective, EntryKind, Record, Sex, SourceFormat, Unit, Value, systems};

const JP: &str = "http://jpfhir.jp/fhir/core/StructureDefinition/";
const CATEGORY_CS: &str = "http://jpfhir.jp/fhir/core/CodeSystem/JP_SimpleObservationCategory_CS";
/// Identifier system of OH record ids on the DocumentReference.
pub const RECORD_ID: &str = "urn:iphr:oh:record-id";

fn reference(style: RefStyle, ty: &str, id: &str) -> Json {
    match style {
        RefStyle::Uuid => json!({ "reference": format!("urn:uuid:{id}") }),
        RefStyle::Relative => json!({ "reference": format!("{ty}/{id}") }),
    }
}

fn coding(c: &Code) -> Json {
    let mut m = serde_json::Map::new();
    m.insert("system".into(), json!(c.system));
    m.insert("code".into(), json!(c.code));
    if let Some(d) = &c.display {
        m.insert("display".into(), json!(d));
    }
    Json::Object(m)
}

/// Standard base64 (RFC 4648) of `data`.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for ch in data.chunks(3) {
        let b = [ch[0], *ch.get(1).unwrap_or(&0), *ch.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= ch.len() {
                s.push(char::from(A[((n >> shift) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn patient(rec: &Record, id: &str) -> Json {
    let p = &rec.person;
    let ids: Vec<Json> = p
        .identifiers
        .iter()
        .map(|i| json!({ "system": i.system, "value": i.value }))
        .collect();
    let mut j = json!({
        "resourceType": "Patient",
        "id": id,
        "meta": { "profile": [format!("{JP}JP_Patient")] },
        "identifier": ids,
    });
    if let Some(n) = &p.name {
        j["name"] = json!([{ "use": "official", "text": n }]);
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
    j
}

fn effective(j: &mut Json, e: Effective) {
    match e {
        Effective::Date(d) => j["effectiveDateTime"] = json!(d.to_string()),
        Effective::Period { start, end } => {
            let mut p = json!({ "start": start.to_string() });
            if let Some(e) = end {
                p["end"] = json!(e.to_string());
            }
            j["effectivePeriod"] = p;
        }
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Quantity { value, unit } => format!("{value} {unit}"),
        Value::Coded { code } => match &code.display {
            Some(d) => format!("{} ({d})", code.code),
            None => code.code.to_string(),
        },
        Value::Text { text } => text.clone(),
        Value::Document { title, .. } => title.clone().unwrap_or_default(),
    }
}

/// The resources of one attendance or OH record (Patient first; see the module docs).
pub fn record_resources(rec: &Record, style: RefStyle) -> Vec<Resource> {
    let hash = rec.source.content_hash.hex();
    let mut out = Vec::new();
    let pid = rec.person.key().map(|k| uuid_of(&["Patient", &k]));
    if let Some(pid) = &pid {
        out.push(Resource {
            resource_type: "Patient",
            id: pid.clone(),
            json: patient(rec, pid),
        });
    }
    let is_oh = rec.source.format == SourceFormat::OhRecords;
    let doc_type = rec.header.report_kind.as_ref();
    let category = match (rec.unit, doc_type.map(|c| c.code.as_ref())) {
        (Unit::B, _) => "social-history",
        (_, Some("rework_sheet")) => "survey",
        _ => "exam",
    };
    let mut related = Vec::new();
    for e in &rec.entries {
        let Some(v) = &e.value else { continue };
        if matches!(v, Value::Text { .. } | Value::Document { .. }) {
            continue;
        }
        let id = uuid_of(&["Observation", &hash, &e.id]);
        let mut j = json!({
            "resourceType": "Observation",
            "id": id,
            "meta": { "profile": [format!("{JP}JP_Observation_Common")] },
            "status": "final",
            "category": [{ "coding": [{ "system": CATEGORY_CS, "code": category }] }],
            "code": {
                "coding": [coding(&e.code)],
                "text": e.code.display.clone().unwrap_or_else(|| e.code.code.clone()),
            },
        });
        if let Some(p) = &pid {
            j["subject"] = reference(style, "Patient", p);
        }
        effective(&mut j, e.effective.unwrap_or(rec.effective));
        match v {
            Value::Quantity { value, unit } => {
                let n =
                    serde_json::Number::from_f64(value.to_f64()).map_or(Json::Null, Json::Number);
                j["valueQuantity"] =
                    json!({ "value": n, "unit": unit, "system": systems::UCUM, "code": unit });
            }
            Value::Coded { code } => {
                j["valueCodeableConcept"] = json!({
                    "coding": [coding(code)],
                    "text": code.display.clone().unwrap_or_else(|| code.code.clone()),
                });
            }
            Value::Text { .. } | Value::Document { .. } => {}
        }
        if e.kind == EntryKind::Derived {
            j["method"] = json!({ "text": "computed by data-converter (docs/oh-records.md)" });
        }
        if is_oh {
            related.push(reference(style, "Observation", &id));
        }
        out.push(Resource {
            resource_type: "Observation",
            id,
            json: j,
        });
    }
    if is_oh {
        out.push(document_reference(rec, style, pid.as_deref(), related));
    }
    out
}

fn document_reference(
    rec: &Record,
    style: RefStyle,
    pid: Option<&str>,
    related: Vec<Json>,
) -> Resource {
    let hash = rec.source.content_hash.hex();
    let id = uuid_of(&["DocumentReference", &hash]);
    let ty = rec
        .header
        .report_kind
        .clone()
        .unwrap_or_else(|| Code::new(crate::oh::SYSTEM_DOCUMENT, "unknown"));
    let title = ty.display.clone().unwrap_or_else(|| ty.code.clone());
    let date = rec.header.created.unwrap_or(rec.effective.start());
    let mut text = format!("{title}\n日付: {date}\n");
    let mut authors = Vec::new();
    for e in &rec.entries {
        let Some(v) = &e.value else { continue };
        let label = e
            .code
            .display
            .clone()
            .unwrap_or_else(|| e.code.code.clone());
        text.push_str(&format!("{label}: {}\n", value_text(v)));
        if matches!(e.code.code.as_ref(), "physician" | "assessor")
            && let Value::Text { text } = v
        {
            authors.push(json!({ "display": text }));
        }
    }
    let mut j = json!({
        "resourceType": "DocumentReference",
        "id": id,
        "meta": { "profile": [format!("{JP}JP_DocumentReference")] },
        "identifier": [{ "system": RECORD_ID, "value": rec.source.document_id.clone().unwrap_or_default() }],
        "status": "current",
        "type": { "coding": [coding(&ty)], "text": title },
        "date": format!("{date}T00:00:00+09:00"),
        "description": title,
        "content": [{
            "attachment": {
                "contentType": "text/plain; charset=utf-8",
                "language": "ja",
                "data": base64(text.as_bytes()),
                "title": title,
                "creation": date.to_string(),
            }
        }],
    });
    if let Some(p) = pid {
        j["subject"] = reference(style, "Patient", p);
    }
    if !authors.is_empty() {
        j["author"] = Json::Array(authors);
    }
    let mut ctx = serde_json::Map::new();
    if let Effective::Period { start, end } = rec.effective {
        let mut p = json!({ "start": start.to_string() });
        if let Some(e) = end {
            p["end"] = json!(e.to_string());
        }
        ctx.insert("period".into(), p);
    }
    if !related.is_empty() {
        ctx.insert("related".into(), Json::Array(related));
    }
    if !ctx.is_empty() {
        j["context"] = Json::Object(ctx);
    }
    Resource {
        resource_type: "DocumentReference",
        id,
        json: j,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
