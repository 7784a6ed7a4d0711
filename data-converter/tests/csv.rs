//! Health-check CSV import with TOML mappings (issue 4, Deliver 3): three institutions' layouts.
// Test code: an unwrap failure is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use data_converter::csv_import::{Mapping, read_csv};
use data_converter::iphr::{Absent, Flag, Record, Sex, Value};

fn convert(layout: &str) -> Vec<Record> {
    let toml = String::from_utf8(common::read(&format!("csv/{layout}.toml"))).unwrap();
    let m = Mapping::from_toml(&toml, &format!("{layout}.toml")).unwrap();
    let out = read_csv(
        &common::read(&format!("csv/{layout}.csv")),
        &format!("{layout}.csv"),
        &m,
    )
    .unwrap();
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    out.records
}

#[test]
fn clinic_a_utf8_bom_matches_golden() {
    let recs = convert("clinic-a");
    assert_eq!(recs.len(), 3);
    common::assert_golden(
        "csv-clinic-a.iphr.json",
        &serde_json::to_value(&recs).unwrap(),
    );
    let r = &recs[2];
    // 6-digit insurer number zero-padded
    assert_eq!(
        r.person.insured.as_ref().unwrap().member_id(),
        "00139999::1003:01"
    );
    assert_eq!(r.source.locator, "line 4");
    let sbp = r
        .entries
        .iter()
        .find(|e| e.analyte.as_deref() == Some("sbp"))
        .unwrap();
    assert_eq!(
        sbp.flags.as_slice(),
        [Flag::GuidanceLevel, Flag::ReferralLevel]
    );
    assert_eq!(
        sbp.grade,
        Some(data_converter::iphr::Grade::E),
        "服薬(血圧) はい → 治療中"
    );
}

#[test]
fn clinic_b_shift_jis_wareki_full_width() {
    let recs = convert("clinic-b");
    assert_eq!(recs.len(), 2);
    common::assert_golden(
        "csv-clinic-b.iphr.json",
        &serde_json::to_value(&recs).unwrap(),
    );
    let r = &recs[0];
    assert_eq!(r.person.identifiers[0].value, "E001");
    assert_eq!(r.person.name.as_deref(), Some("試験\u{3000}四郎"));
    assert_eq!(r.person.birth_date.unwrap().to_string(), "1970-04-15");
    assert_eq!(r.effective.start().to_string(), "2024-06-03");
    assert_eq!(r.person.sex, Some(Sex::Male));
    let h = r
        .entries
        .iter()
        .find(|e| e.analyte.as_deref() == Some("body-height"))
        .unwrap();
    assert!(matches!(&h.value, Some(Value::Quantity { value, .. }) if value.as_str() == "170.2"));
    let ug = r
        .entries
        .iter()
        .find(|e| e.analyte.as_deref() == Some("urine-glucose"))
        .unwrap();
    assert_eq!(ug.coded(), Some("1"));
    assert_eq!(recs[1].person.birth_date.unwrap().to_string(), "1990-05-05");
}

#[test]
fn clinic_c_tabs_and_absent_values() {
    let recs = convert("clinic-c");
    assert_eq!(recs.len(), 2);
    common::assert_golden(
        "csv-clinic-c.iphr.json",
        &serde_json::to_value(&recs).unwrap(),
    );
    let a1c = recs[0]
        .entries
        .iter()
        .find(|e| e.analyte.as_deref() == Some("hba1c"))
        .unwrap();
    assert_eq!(a1c.absent, Some(Absent::NotPerformed));
    let egfr = recs[1]
        .entries
        .iter()
        .find(|e| e.analyte.as_deref() == Some("egfr"))
        .unwrap();
    assert_eq!(egfr.absent, Some(Absent::CannotMeasure));
    let hb = recs[0]
        .entries
        .iter()
        .find(|e| e.analyte.as_deref() == Some("hemoglobin"))
        .unwrap();
    assert_eq!(
        hb.flags.as_slice(),
        [Flag::GuidanceLevel],
        "female Hb 11.8 ≤ 12.0"
    );
}

#[test]
fn csv_conversion_is_stable() {
    let a = serde_json::to_vec(&convert("clinic-b")).unwrap();
    let b = serde_json::to_vec(&convert("clinic-b")).unwrap();
    assert_eq!(a, b);
}
