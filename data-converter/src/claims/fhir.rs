//! FHIR R4 export of claims (issue 5, Deliver 5; domain.md §6.1, §6.8): one receipt record becomes
//! `Patient` (JP_Patient), `Organization` (JP_Organization, the 医療機関), one `Condition`
//! (JP_Condition) per SY diagnosis and one `MedicationStatement` (JP_MedicationStatement) per IY line.
//!
//! - Condition: `code` = 傷病名コード (masterB-disease) + ICD-10 from the master when loaded; 修飾語 as
//!   JP Core's DiseasePrefix/PostfixModifier extensions on `code` (Z-master codes `8xxx` are
//!   接尾語, the rest 接頭語); 転帰区分 as the JP_Condition_DiseaseOutcome extension (receipt slice)
//!   and as `clinicalStatus` (1 active, 2 resolved, 3/4 inactive); 診療開始日 → `onsetDateTime`;
//!   主傷病 and the comment in `note`.
//! - MedicationStatement: `medicationCodeableConcept` = レセ電算 医薬品コード (+ master name);
//!   `effectivePeriod` = first to last 算定日 (else the 診療年月); 使用量 × 回数 and the days in
//!   `dosage.text` and `note`. Claims say what was billed, so `status` is `completed`.
//!
//! Ids are deterministic (from the receipt's content hash and the entry id).

use serde_json::{Value as Json, json};

use super::systems;
use crate::fhir::{RefStyle, Resource, patient_resource, reference, uuid_of};
use crate::iphr::{Entry, EntryKind, Record, Value};

const JP: &str = "http://jpfhir.jp/fhir/core/StructureDefinition/";
const JP_EXT: &str = "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/";

fn coding(c: &crate::iphr::Code) -> Json {
    let mut j = json!({ "system": c.system, "code": c.code });
    if let Some(d) = &c.display {
        j["display"] = json!(d);
    }
    j
}

/// All resources of one claims record: Patient, Organization, Conditions, MedicationStatements.
pub fn resources(rec: &Record, style: RefStyle) -> Vec<Resource> {
    let hash = rec.source.content_hash.hex();
    let patient = patient_resource(rec, style);
    let pref = reference(style, "Patient", &patient.id);
    let mut out = vec![patient];
    if let Some(org) = &rec.header.performer {
        let id = uuid_of(&["Organization", &org.id.system, &org.id.value]);
        let mut j = json!({
            "resourceType": "Organization",
            "id": id,
            "meta": { "profile": [format!("{JP}JP_Organization")] },
            "identifier": [{ "system": org.id.system, "value": org.id.value }],
        });
        if let Some(n) = &org.name {
            j["name"] = json!(n);
        }
        out.push(Resource {
            resource_type: "Organization",
            id,
            json: j,
        });
    }
    for e in &rec.entries {
        match e.kind {
            EntryKind::Condition => {
                let id = uuid_of(&["Condition", &hash, &e.id]);
                let json = condition(e, &id, &pref);
                out.push(Resource {
                    resource_type: "Condition",
                    id,
                    json,
                });
            }
            EntryKind::Medication => {
                let id = uuid_of(&["MedicationStatement", &hash, &e.id]);
                let json = medication(rec, e, &id, &pref);
                out.push(Resource {
                    resource_type: "MedicationStatement",
                    id,
                    json,
                });
            }
            _ => {}
        }
    }
    out
}

fn condition(e: &Entry, id: &str, patient: &Json) -> Json {
    let mut codings = vec![coding(&e.code)];
    let mut modifiers = Vec::new();
    for c in &e.codings {
        if c.system == systems::MODIFIER {
            let kind = if c.code.starts_with('8') {
                "JP_Condition_DiseasePostfixModifier"
            } else {
                "JP_Condition_DiseasePrefixModifier"
            };
            modifiers.push(json!({
                "url": format!("{JP_EXT}{kind}"),
                "valueCodeableConcept": { "coding": [coding(c)] },
            }));
        } else {
            codings.push(coding(c));
        }
    }
    let text = e.code.display.clone().map_or_else(
        || format!("傷病名コード {}", e.code.code),
        |d| d.into_owned(),
    );
    let mut code = json!({ "coding": codings, "text": text });
    if !modifiers.is_empty() {
        code["extension"] = Json::Array(modifiers);
    }
    let outcome = match &e.value {
        Some(Value::Coded { code }) => code.clone(),
        _ => crate::iphr::Code::new(systems::OUTCOME, "1"),
    };
    let clinical = match outcome.code.as_ref() {
        "2" => "resolved",
        "3" | "4" => "inactive",
        _ => "active",
    };
    let mut j = json!({
        "resourceType": "Condition",
        "id": id,
        "meta": { "profile": [format!("{JP}JP_Condition")] },
        "extension": [{
            "url": format!("{JP_EXT}JP_Condition_DiseaseOutcome"),
            "valueCodeableConcept": { "coding": [coding(&outcome)] },
        }],
        "clinicalStatus": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": clinical }] },
        "verificationStatus": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed" }] },
        "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "encounter-diagnosis" }] }],
        "code": code,
        "subject": patient,
    });
    if let Some(eff) = e.effective {
        j["onsetDateTime"] = json!(eff.start().to_string());
    }
    let mut notes = Vec::new();
    if let Some(c) = &e.claim {
        if c.primary {
            notes.push(json!({ "text": "主傷病" }));
        }
        if let Some(t) = &c.text {
            notes.push(json!({ "text": t }));
        }
    }
    if !notes.is_empty() {
        j["note"] = Json::Array(notes);
    }
    j
}

fn medication(rec: &Record, e: &Entry, id: &str, patient: &Json) -> Json {
    let text = e.code.display.clone().map_or_else(
        || format!("医薬品コード {}", e.code.code),
        |d| d.into_owned(),
    );
    let period = match e.effective.unwrap_or(rec.effective) {
        crate::iphr::Effective::Date(d) => json!({ "start": d.to_string(), "end": d.to_string() }),
        crate::iphr::Effective::Period { start, end } => {
            let mut p = json!({ "start": start.to_string() });
            if let Some(end) = end {
                p["end"] = json!(end.to_string());
            }
            p
        }
    };
    let mut j = json!({
        "resourceType": "MedicationStatement",
        "id": id,
        "meta": { "profile": [format!("{JP}JP_MedicationStatement")] },
        "status": "completed",
        "medicationCodeableConcept": { "coding": [coding(&e.code)], "text": text },
        "subject": patient,
        "effectivePeriod": period,
    });
    if let Some(c) = &e.claim {
        let mut dose = Vec::new();
        if let Some(q) = &c.quantity {
            dose.push(format!("使用量 {q}{}", c.unit.as_deref().unwrap_or("")));
        }
        if let Some(t) = c.times {
            dose.push(format!("回数 {t}"));
        }
        if !dose.is_empty() {
            j["dosage"] = json!([{ "text": dose.join(" ") }]);
        }
        if !c.days.is_empty() {
            let days: Vec<String> = c
                .days
                .iter()
                .map(|d| format!("{}×{}", d.date, d.count))
                .collect();
            j["note"] = json!([{ "text": format!("算定日 {}", days.join(", ")) }]);
        }
        if let Some(pc) = &c.practice_class {
            j["category"] =
                json!({ "coding": [{ "system": systems::PRACTICE_CLASS, "code": pc }] });
        }
    }
    j
}
