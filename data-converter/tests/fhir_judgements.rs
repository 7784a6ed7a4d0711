//! Derived judgements in the FHIR export (issue 4, Deliver 4–5): 保健指導/受診勧奨 flags as
//! `Observation.interpretation`, per-item 判定区分 and メタボ判定 / 階層化 as derived Observations.
// Test code: an unwrap failure is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use data_converter::cda::read_cda;
use data_converter::fhir::{self, FLAG_CS, GRADE_CS, JUDGEMENT_CS, RefStyle};
use data_converter::iphr::{EntryKind, Flag, Grade, Value};
use serde_json::Value as Json;

fn resources() -> (data_converter::iphr::Record, Vec<fhir::Resource>) {
    let rec = read_cda(&common::read("cda/full.xml"), "full.xml").unwrap();
    let res = fhir::record_resources(&rec, RefStyle::Relative);
    (rec, res)
}

fn codes(cc: &Json) -> Vec<(String, String)> {
    cc["coding"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|c| {
            (
                c["system"].as_str().unwrap().to_owned(),
                c["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn flags_become_interpretations_in_our_code_system() {
    let (rec, res) = resources();
    let flagged: Vec<_> = rec.entries.iter().filter(|e| !e.flags.is_empty()).collect();
    assert!(!flagged.is_empty(), "fixture has flagged items");
    for e in flagged {
        let obs = res
            .iter()
            .find(|r| {
                r.resource_type == "Observation"
                    && r.json["code"]["coding"][0]["code"] == e.code.code.as_ref()
                    && r.json["meta"]["tag"].is_null()
            })
            .unwrap();
        let interp: Vec<(String, String)> = obs.json["interpretation"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(codes)
            .filter(|(s, _)| s == FLAG_CS)
            .collect();
        let want: Vec<(String, String)> = e
            .flags
            .iter()
            .map(|f| {
                let c = match f {
                    Flag::GuidanceLevel => "guidance-level",
                    Flag::ReferralLevel => "referral-level",
                };
                (FLAG_CS.to_owned(), c.to_owned())
            })
            .collect();
        assert_eq!(interp, want, "{}", e.code.code);
    }
}

#[test]
fn grades_are_derived_observations_pointing_at_their_item() {
    let (rec, res) = resources();
    let graded: Vec<_> = rec.entries.iter().filter(|e| e.grade.is_some()).collect();
    let grade_obs: Vec<_> = res
        .iter()
        .filter(|r| codes(&r.json["code"]).contains(&(JUDGEMENT_CS.into(), "item-grade".into())))
        .collect();
    assert_eq!(grade_obs.len(), graded.len());
    for (e, g) in graded.iter().zip(&grade_obs) {
        let letter = match e.grade.unwrap() {
            Grade::A => "A",
            Grade::B => "B",
            Grade::C => "C",
            Grade::D => "D",
            Grade::E => "E",
        };
        assert_eq!(
            codes(&g.json["valueCodeableConcept"]),
            vec![(GRADE_CS.to_owned(), letter.to_owned())]
        );
        let target = g.json["derivedFrom"][0]["reference"].as_str().unwrap();
        let item = res
            .iter()
            .find(|r| format!("Observation/{}", r.id) == target)
            .unwrap();
        assert_eq!(item.json["code"]["coding"][0]["code"], e.code.code.as_ref());
        assert_eq!(g.json["meta"]["tag"][0]["code"], "derived");
    }
}

#[test]
fn metabolic_and_stratification_use_official_item_codes_and_tables() {
    let (rec, res) = resources();
    for (name, item, table) in [
        (
            "metabolic-syndrome",
            "9N501000000000011",
            "urn:oid:1.2.392.200119.6.1008",
        ),
        (
            "guidance-level",
            "9N506000000000011",
            "urn:oid:1.2.392.200119.6.3001",
        ),
    ] {
        let entry = rec
            .entries
            .iter()
            .find(|e| e.kind == EntryKind::Derived && e.code.code == name)
            .unwrap();
        let Some(Value::Coded { code }) = &entry.value else {
            panic!("derived entry without a coded value")
        };
        let obs = res
            .iter()
            .find(|r| codes(&r.json["code"]).contains(&(JUDGEMENT_CS.into(), name.into())))
            .unwrap();
        assert!(
            codes(&obs.json["code"])
                .contains(&("urn:oid:1.2.392.200119.6.1005".into(), item.into()))
        );
        assert_eq!(
            codes(&obs.json["valueCodeableConcept"]),
            vec![(table.to_owned(), code.code.to_string())]
        );
        assert!(!obs.json["derivedFrom"].as_array().unwrap().is_empty());
        // and the DiagnosticReport lists it
        let dr = res
            .iter()
            .find(|r| r.resource_type == "DiagnosticReport")
            .unwrap();
        let want = format!("Observation/{}", obs.id);
        assert!(
            dr.json["result"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["reference"] == want.as_str())
        );
    }
}
