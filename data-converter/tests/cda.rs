//! 特定健診 CDA reader: golden output and every observation form (issue 4, Deliver 2).
// Test code: an unwrap failure is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use data_converter::cda::read_cda;
use data_converter::iphr::{
    Absent, Bound, EntryKind, Flag, Grade, Interpretation, Relation, Sex, Value,
};

#[test]
fn full_document_matches_golden() {
    let rec = read_cda(&common::read("cda/full.xml"), "full.xml").unwrap();
    common::assert_golden("cda-full.iphr.json", &serde_json::to_value(&rec).unwrap());
}

#[test]
fn header_fields() {
    let rec = read_cda(&common::read("cda/full.xml"), "full.xml").unwrap();
    let p = &rec.person;
    let ins = p.insured.as_ref().unwrap();
    assert_eq!(ins.member_id(), "06139999:テスト記号:12345:01");
    assert_eq!(p.sex, Some(Sex::Male));
    assert_eq!(p.birth_date.unwrap().to_string(), "1970-04-15");
    assert_eq!(p.name_kana.as_deref(), Some("シケン タロウ"));
    assert_eq!(p.postal_code.as_deref(), Some("1000001"));
    assert_eq!(rec.effective.start().to_string(), "2024-06-01");
    assert_eq!(rec.header.program.as_ref().unwrap().code, "010");
    assert_eq!(rec.header.report_kind.as_ref().unwrap().code, "10");
    assert_eq!(
        rec.header.performer.as_ref().unwrap().id.value,
        "1399999991"
    );
    assert_eq!(rec.header.sections[0].code, "01010");
    assert!(p.identifiers.iter().any(|i| i.value == "24000001"));
}

#[test]
fn every_observation_form() {
    let rec = read_cda(&common::read("cda/full.xml"), "full.xml").unwrap();
    let by = |code: &str| rec.entries.iter().find(|e| e.code.code == code).unwrap();
    // PQ with precision kept
    let h = by("9N001000000000001");
    assert!(
        matches!(&h.value, Some(Value::Quantity { value, unit }) if value.as_str() == "170.2" && unit == "cm")
    );
    // out of input range: PQ + H
    let w = by("9N006000000000001");
    assert_eq!(w.out_of_range, Some(Bound::Above));
    assert_eq!(w.quantity(), Some(251.5));
    // reference range + interpretation, UCUM unit
    let sbp = by("9A751000000000001");
    assert_eq!(sbp.interpretation, Some(Interpretation::H));
    let rr = sbp.reference_range.as_ref().unwrap();
    assert_eq!(
        (
            rr.low.as_ref().unwrap().as_str(),
            rr.high.as_ref().unwrap().as_str()
        ),
        ("90", "129")
    );
    assert_eq!(rr.unit.as_deref(), Some("mm[Hg]"));
    assert_eq!(
        sbp.flags.as_slice(),
        [Flag::GuidanceLevel, Flag::ReferralLevel]
    );
    assert_eq!(sbp.grade, Some(Grade::D));
    // cannot measure / not performed
    assert_eq!(by("3D010000002227101").absent, Some(Absent::CannotMeasure));
    assert_eq!(by("3D010129902227101").absent, Some(Absent::NotPerformed));
    // CO
    let up = by("1A010000000191111");
    assert_eq!(up.coded(), Some("2"));
    assert_eq!(up.flags.as_slice(), [Flag::GuidanceLevel]);
    // ST with entity, author
    let ecg = by("9A110160800000049");
    assert!(matches!(&ecg.value, Some(Value::Text { text }) if text == "軽度ST変化 & 洞性徐脈"));
    assert_eq!(
        by("9N511000000000049").performer.as_deref(),
        Some("試験 医師")
    );
    // JLAC10 coding on lab items only
    assert_eq!(by("3D046000001906202").codings.len(), 1);
    assert!(h.codings.is_empty());
    // group
    let g = rec
        .entries
        .iter()
        .find(|e| e.kind == EntryKind::Group)
        .unwrap();
    assert_eq!(g.code.code, "serum-creatinine");
    let members: Vec<_> = rec
        .entries
        .iter()
        .filter(|e| e.parent.as_deref() == Some(g.id.as_str()))
        .collect();
    assert_eq!(members.len(), 3);
    assert_eq!(members[0].relation, Some(Relation::Reason));
    assert_eq!(members[1].relation, Some(Relation::Component));
    assert!(
        members[1]
            .locator
            .ends_with("entryRelationship[2]/observation"),
        "{}",
        members[1].locator
    );
}

#[test]
fn derived_judgements() {
    let rec = read_cda(&common::read("cda/full.xml"), "full.xml").unwrap();
    let d: Vec<_> = rec
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Derived)
        .collect();
    assert_eq!(d.len(), 2);
    // waist 92 ≥ 85 (male), risks: lipid (TG 160, HDL 38), bp (142/84) → 基準該当
    assert_eq!(d[0].code.code, "metabolic-syndrome");
    assert_eq!(d[0].coded(), Some("1"));
    // glucose: fasting cannot be measured, HbA1c 5.8 ≥ 5.6 → 3 risks + smoker; age 54 → 積極的支援
    assert_eq!(d[1].code.code, "guidance-level");
    assert_eq!(d[1].coded(), Some("1"));
}

#[test]
fn converting_twice_is_identical() {
    let bytes = common::read("cda/full.xml");
    let a = serde_json::to_vec(&read_cda(&bytes, "full.xml").unwrap()).unwrap();
    let b = serde_json::to_vec(&read_cda(&bytes, "full.xml").unwrap()).unwrap();
    assert_eq!(a, b);
    let rec = read_cda(&bytes, "full.xml").unwrap();
    assert_eq!(
        rec.fingerprint(),
        read_cda(&bytes, "full.xml").unwrap().fingerprint()
    );
    // the hash changes with the content
    let changed = String::from_utf8(bytes)
        .unwrap()
        .replace("value=\"170.2\"", "value=\"170.3\"");
    let rec2 = read_cda(changed.as_bytes(), "full.xml").unwrap();
    assert_ne!(rec.source.content_hash, rec2.source.content_hash);
    assert_ne!(rec.fingerprint(), rec2.fingerprint());
}
