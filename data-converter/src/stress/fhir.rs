//! FHIR R4 export of a scored stress check (issue 5, Deliver 5): `Patient` (JP_Patient), the
//! `Questionnaire` of the 57 items (one, shared, canonical [`QUESTIONNAIRE_URL`]), one
//! `QuestionnaireResponse` with the answers, and four `Observation`s (JP_Observation_Common,
//! category `survey`): 合計点数 (components A/B/C), 素点換算表 評価点 (a component per scale and the
//! domain totals), and the high-stress result of each method (`valueCodeableConcept`).
//! JP Core has no Questionnaire profiles, so those two use base FHIR R4.

use serde_json::{Value as Json, json};

use super::systems;
use super::tables::{ITEM_TEXTS, SCALES, answer_labels, item_ids};
use crate::fhir::{RefStyle, Resource, patient_resource, reference, uuid_of};
use crate::iphr::{Record, Value};

const JP: &str = "http://jpfhir.jp/fhir/core/StructureDefinition/";
const CATEGORY_CS: &str = "http://jpfhir.jp/fhir/core/CodeSystem/JP_SimpleObservationCategory_CS";
/// Canonical URL of the 57-item Questionnaire.
pub const QUESTIONNAIRE_URL: &str = "urn:iphr:questionnaire:bjsq57";

/// The Questionnaire of the 職業性ストレス簡易調査票 (57 items, answers 1–4).
pub fn questionnaire() -> Resource {
    let id = uuid_of(&["Questionnaire", QUESTIONNAIRE_URL]);
    let ids = item_ids();
    let groups = [
        ("A", "A あなたの仕事についてうかがいます", 0..17),
        (
            "B",
            "B 最近1か月間のあなたの状態についてうかがいます",
            17..46,
        ),
        ("C", "C あなたの周りの方々についてうかがいます", 46..55),
        ("D", "D 満足度について", 55..57),
    ];
    let items: Vec<Json> = groups
        .into_iter()
        .map(|(g, text, range)| {
            let inner: Vec<Json> = range
                .map(|i| {
                    let options: Vec<Json> = answer_labels(i)
                        .iter()
                        .enumerate()
                        .map(|(k, l)| json!({ "valueCoding": { "system": systems::ANSWER, "code": (k + 1).to_string(), "display": l } }))
                        .collect();
                    json!({
                        "linkId": ids[i],
                        "code": [{ "system": systems::ITEM, "code": ids[i] }],
                        "text": ITEM_TEXTS[i],
                        "type": "choice",
                        "required": true,
                        "answerOption": options,
                    })
                })
                .collect();
            json!({ "linkId": g, "text": text, "type": "group", "item": inner })
        })
        .collect();
    Resource {
        resource_type: "Questionnaire",
        id: id.clone(),
        json: json!({
            "resourceType": "Questionnaire",
            "id": id,
            "url": QUESTIONNAIRE_URL,
            "name": "BJSQ57",
            "title": "職業性ストレス簡易調査票（57項目）",
            "status": "active",
            "subjectType": ["Patient"],
            "item": items,
        }),
    }
}

fn quantity(v: &Value) -> Json {
    match v {
        Value::Quantity { value, .. } => json!({
            "value": value.as_str().parse::<u64>().unwrap_or(0),
            "unit": "点",
            "system": "http://unitsofmeasure.org",
            "code": "{score}",
        }),
        _ => Json::Null,
    }
}

/// All resources of one stress-check record.
pub fn resources(rec: &Record, style: RefStyle) -> Vec<Resource> {
    let hash = rec.source.content_hash.hex();
    let patient = patient_resource(rec, style);
    let pref = reference(style, "Patient", &patient.id);
    let date = rec.effective.start().to_string();
    let mut out = vec![patient, questionnaire()];
    let ids = item_ids();
    let mut groups: Vec<(&str, Vec<Json>)> =
        vec![("A", vec![]), ("B", vec![]), ("C", vec![]), ("D", vec![])];
    for e in rec
        .entries
        .iter()
        .filter(|e| e.code.system == systems::ITEM)
    {
        let Some(i) = ids.iter().position(|x| *x == e.code.code) else {
            continue;
        };
        let Some(Value::Coded { code }) = &e.value else {
            continue;
        };
        let g = match i {
            0..17 => 0,
            17..46 => 1,
            46..55 => 2,
            _ => 3,
        };
        let mut c = json!({ "system": systems::ANSWER, "code": code.code });
        if let Some(d) = &code.display {
            c["display"] = json!(d);
        }
        groups[g].1.push(
            json!({ "linkId": ids[i], "text": ITEM_TEXTS[i], "answer": [{ "valueCoding": c }] }),
        );
    }
    let qr_id = uuid_of(&["QuestionnaireResponse", &hash]);
    out.push(Resource {
        resource_type: "QuestionnaireResponse",
        id: qr_id.clone(),
        json: json!({
            "resourceType": "QuestionnaireResponse",
            "id": qr_id,
            "questionnaire": QUESTIONNAIRE_URL,
            "status": "completed",
            "subject": pref,
            "authored": date,
            "item": groups.into_iter().filter(|(_, v)| !v.is_empty()).map(|(g, v)| json!({ "linkId": g, "item": v })).collect::<Vec<_>>(),
        }),
    });
    let derived = |code: &str| {
        rec.entries
            .iter()
            .find(|e| e.code.system == systems::SCORE && e.code.code == code)
            .and_then(|e| e.value.as_ref())
    };
    let qr_ref = reference(style, "QuestionnaireResponse", &qr_id);
    let observation = |key: &str, text: &str| -> (String, Json) {
        let id = uuid_of(&["Observation", &hash, key]);
        let j = json!({
            "resourceType": "Observation",
            "id": id,
            "meta": { "profile": [format!("{JP}JP_Observation_Common")] },
            "status": "final",
            "category": [{ "coding": [{ "system": CATEGORY_CS, "code": "survey" }] }],
            "code": { "coding": [{ "system": systems::SCORE, "code": key, "display": text }], "text": text },
            "subject": pref,
            "effectiveDateTime": date,
            "derivedFrom": [qr_ref],
        });
        (id, j)
    };
    let comp = |code: &str, text: &str| -> Json {
        json!({
            "code": { "coding": [{ "system": systems::SCORE, "code": code, "display": text }], "text": text },
            "valueQuantity": derived(code).map_or(Json::Null, quantity),
        })
    };
    // 合計点数
    let (id, mut j) = observation("sum", "合計点数（合計点数方式）");
    j["component"] = json!([
        comp("sum-A", "A 仕事のストレス要因"),
        comp("sum-B", "B 心身のストレス反応"),
        comp("sum-C", "C 周囲のサポート"),
    ]);
    out.push(Resource {
        resource_type: "Observation",
        id,
        json: j,
    });
    // 評価点
    let (id, mut j) = observation("points", "評価点（素点換算表方式）");
    let mut comps: Vec<Json> = SCALES
        .iter()
        .map(|s| comp(&format!("points-{}", s.id), s.name))
        .collect();
    comps.push(comp("points-A", "評価点合計 A"));
    comps.push(comp("points-B", "評価点合計 B"));
    comps.push(comp("points-C", "評価点合計 C"));
    j["component"] = Json::Array(comps);
    out.push(Resource {
        resource_type: "Observation",
        id,
        json: j,
    });
    for (key, text) in [
        ("high-stress-sum", "高ストレス判定（合計点数方式）"),
        ("high-stress-points", "高ストレス判定（素点換算表方式）"),
    ] {
        let (id, mut j) = observation(key, text);
        if let Some(Value::Coded { code }) = derived(key) {
            j["valueCodeableConcept"] = json!({
                "coding": [{ "system": code.system, "code": code.code, "display": code.display }],
                "text": code.display,
            });
        }
        out.push(Resource {
            resource_type: "Observation",
            id,
            json: j,
        });
    }
    out
}
