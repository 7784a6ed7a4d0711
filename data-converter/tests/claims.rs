//! UKE claims (issue 5, Deliver 1 and Acceptance): golden iPHR and FHIR output of the sample file,
//! diagnoses and medicines as the records say, master names, 和暦 dates, skipped record types, and
//! bad input (wrong encoding, unknown record type, short records, impossible dates) as errors naming
//! file, line and field.
// Test code: an unwrap failure is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use data_converter::claims::{MasterKind, Masters, read_uke, systems};
use data_converter::iphr::{EntryKind, Value};
use data_converter::{ErrorKind, fhir};

fn masters() -> Masters {
    let mut m = Masters::default();
    m.load(
        MasterKind::Disease,
        &common::read("uke/disease-master.csv"),
        "disease-master.csv",
    )
    .unwrap();
    m.load(
        MasterKind::Drug,
        &common::read("uke/drug-master.csv"),
        "drug-master.csv",
    )
    .unwrap();
    m
}

#[test]
fn sample_matches_golden_iphr_and_fhir() {
    let m = masters();
    let out = read_uke(&common::read("uke/sample.uke"), "sample.uke", Some(&m)).unwrap();
    let recs = serde_json::to_value(&out.records).unwrap();
    common::assert_golden("uke-sample.iphr.json", &recs);
    common::assert_golden("uke-sample.bundle.json", &fhir::bundle(&out.records));
}

#[test]
fn receipts_diagnoses_and_medicines() {
    let out = read_uke(&common::read("uke/sample.uke"), "sample.uke", None).unwrap();
    assert_eq!(out.records.len(), 3);
    assert_eq!(out.procedures, 1);
    let skipped: Vec<(&str, u64)> = out.skipped.iter().map(|(t, n)| (t.as_str(), *n)).collect();
    assert_eq!(
        skipped,
        [("CO", 1), ("GO", 1), ("JD", 1), ("MF", 1), ("SJ", 1)]
    );

    let r1 = &out.records[0];
    let ins = r1.person.insured.as_ref().unwrap();
    assert_eq!(ins.member_id(), "06139999:ＡＢ:1001:01");
    assert_eq!(r1.person.birth_date.unwrap().to_string(), "1970-04-01");
    assert_eq!(r1.effective.start().to_string(), "2024-06-01");
    let conds: Vec<_> = r1
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Condition)
        .collect();
    assert_eq!(conds.len(), 2);
    assert_eq!(conds[0].code.code, "8833421");
    assert!(conds[0].claim.as_ref().unwrap().primary);
    assert!(!conds[1].claim.as_ref().unwrap().primary);
    let mods: Vec<&str> = conds[1]
        .codings
        .iter()
        .filter(|c| c.system == systems::MODIFIER)
        .map(|c| c.code.as_ref())
        .collect();
    assert_eq!(mods, ["2057", "8056"]);
    assert_eq!(
        conds[1].effective.unwrap().start().to_string(),
        "2024-06-03"
    );
    // without masters: codes kept, no names
    assert!(conds[0].code.display.is_none());

    let meds: Vec<_> = r1
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Medication)
        .collect();
    assert_eq!(meds.len(), 2);
    let c = meds[0].claim.as_ref().unwrap();
    let days: Vec<String> = c
        .days
        .iter()
        .map(|d| format!("{}x{}", d.date, d.count))
        .collect();
    assert_eq!(days, ["2024-06-03x14", "2024-06-17x14"]);
    assert_eq!(c.times, Some(28));
    assert_eq!(
        meds[1]
            .claim
            .as_ref()
            .unwrap()
            .quantity
            .as_ref()
            .unwrap()
            .as_str(),
        "2.5"
    );

    // 和暦: 診療年月 50606 = 2024-06, 生年月日 3550715 = 1980-07-15, 診療開始日 5060610
    let r2 = &out.records[1];
    assert_eq!(r2.person.birth_date.unwrap().to_string(), "1980-07-15");
    assert_eq!(r2.effective.start().to_string(), "2024-06-01");
    assert_eq!(
        r2.person.insured.as_ref().unwrap().insurer.as_str(),
        "00138990"
    );
    let sy = &r2.entries[0];
    assert_eq!(sy.code.code, systems::UNCODED_DISEASE);
    assert_eq!(sy.code.display.as_deref(), Some("右肩の痛み"));
    assert_eq!(sy.effective.unwrap().start().to_string(), "2024-06-10");
    match &sy.value {
        Some(Value::Coded { code }) => assert_eq!(code.code, "2"),
        v => panic!("outcome {v:?}"),
    }
    let med = r2
        .entries
        .iter()
        .find(|e| e.kind == EntryKind::Medication)
        .unwrap();
    assert_eq!(
        med.claim.as_ref().unwrap().days[0].date.to_string(),
        "2024-06-10"
    );

    let r3 = &out.records[2];
    assert!(r3.entries.iter().all(|e| e.kind == EntryKind::Condition));
    assert_eq!(r3.person.name_kana, None);
}

#[test]
fn masters_give_names_and_icd10_and_codes_stay() {
    let m = masters();
    let out = read_uke(&common::read("uke/sample.uke"), "sample.uke", Some(&m)).unwrap();
    let e = &out.records[0].entries[0];
    assert_eq!(e.code.code, "8833421");
    assert_eq!(e.code.display.as_deref(), Some("高血圧症"));
    assert!(
        e.codings
            .iter()
            .any(|c| c.system == systems::ICD10 && c.code == "I10")
    );
    let med = out.records[0]
        .entries
        .iter()
        .find(|e| e.kind == EntryKind::Medication)
        .unwrap();
    assert_eq!(med.code.code, "620000001");
    assert_eq!(med.code.display.as_deref(), Some("テスト降圧錠５ｍｇ"));
    assert_eq!(med.claim.as_ref().unwrap().unit.as_deref(), Some("錠"));
    // FHIR: Condition with the receipt outcome extension, MedicationStatement with the period
    let res = fhir::record_resources(&out.records[0], fhir::RefStyle::Relative);
    let types: Vec<&str> = res.iter().map(|r| r.resource_type).collect();
    assert_eq!(
        types,
        [
            "Patient",
            "Organization",
            "Condition",
            "Condition",
            "MedicationStatement",
            "MedicationStatement"
        ]
    );
    assert_eq!(res[2].json["code"]["text"], "高血圧症");
    assert_eq!(
        res[2].json["extension"][0]["valueCodeableConcept"]["coding"][0]["code"],
        "1"
    );
    assert_eq!(res[4].json["effectivePeriod"]["start"], "2024-06-03");
    assert_eq!(res[4].json["effectivePeriod"]["end"], "2024-06-17");
}

#[test]
fn conversion_is_deterministic_and_hash_follows_the_receipt() {
    let bytes = common::read("uke/sample.uke");
    let a = read_uke(&bytes, "sample.uke", None).unwrap();
    let b = read_uke(&bytes, "sample.uke", None).unwrap();
    assert_eq!(a, b);
    let hashes: std::collections::HashSet<_> = a
        .records
        .iter()
        .map(|r| r.source.content_hash.clone())
        .collect();
    assert_eq!(hashes.len(), 3);
}

fn err(rel: &str) -> data_converter::Error {
    read_uke(&common::read(rel), rel, None).expect_err(rel)
}

#[test]
fn bad_files_name_file_line_and_field() {
    let e = err("bad/uke-not-sjis.uke");
    assert_eq!(e.location.line, Some(2), "{e}");
    assert!(matches!(e.kind, ErrorKind::Encoding(_)), "{e}");

    let e = err("bad/uke-unknown-record.uke");
    assert_eq!(e.location.line, Some(3), "{e}");
    assert_eq!(e.kind, ErrorKind::UnknownRecordType("ZZ".into()));

    let e = err("bad/uke-short-sy.uke");
    assert_eq!(e.location.line, Some(3), "{e}");
    assert!(
        matches!(&e.kind, ErrorKind::ShortRecord { record, found: 3, .. } if record == "SY"),
        "{e}"
    );

    let e = err("bad/uke-bad-date.uke");
    assert_eq!(e.location.line, Some(3), "{e}");
    assert!(
        e.location.path.as_deref().unwrap().contains("診療開始日"),
        "{e}"
    );

    let e = err("bad/uke-sy-before-re.uke");
    assert_eq!(e.location.line, Some(2), "{e}");
    assert!(matches!(e.kind, ErrorKind::RecordOrder(_)), "{e}");

    let e = err("bad/uke-no-such-day.uke");
    assert_eq!(e.location.line, Some(3), "{e}");
    assert!(
        e.location
            .path
            .as_deref()
            .unwrap()
            .contains("IY[43] 算定日"),
        "{e}"
    );

    let e = err("bad/uke-bad-outcome.uke");
    assert!(
        e.location.path.as_deref().unwrap().contains("転帰区分"),
        "{e}"
    );
    for e in [err("bad/uke-bad-outcome.uke"), err("bad/uke-short-sy.uke")] {
        assert!(e.to_string().starts_with("bad/uke-"), "{e}");
    }
}

#[test]
fn missing_ir_and_empty_input_are_errors() {
    let e = read_uke(b"RE,1,1112,202406,x,1,19700401\r\n", "x.uke", None).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::RecordOrder(_)), "{e}");
    let e = read_uke(b"", "empty.uke", None).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Missing(_)), "{e}");
}

#[test]
fn cli_converts_uke_with_masters_and_fails_whole_on_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let fx = |r: &str| common::fixture(r).display().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_data-converter"))
        .args([
            &fx("uke/sample.uke"),
            "--disease-master",
            &fx("uke/disease-master.csv"),
            "--drug-master",
            &fx("uke/drug-master.csv"),
            "--to",
            "ndjson",
            "-o",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("1 of 1 files, 3 documents, 3 persons"),
        "{err}"
    );
    let text = std::fs::read_to_string(dir.path().join("sample.uke.fhir.ndjson")).unwrap();
    let types: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["resourceType"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(types.iter().filter(|t| *t == "Condition").count(), 4);
    assert_eq!(
        types.iter().filter(|t| *t == "MedicationStatement").count(),
        3
    );
    assert_eq!(types.iter().filter(|t| *t == "Organization").count(), 1);
    assert!(text.contains("高血圧症"));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_data-converter"))
        .arg(fx("bad/uke-short-sy.uke"))
        .arg("-o")
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("uke-short-sy.uke:3: at SY"), "{err}");
    assert!(!dir.path().join("uke-short-sy.uke.iphr.jsonl").exists());
}

/// Deterministic mutations of the fixtures through the fuzz entry point: never a panic.
#[test]
fn mutated_uke_files_never_panic() {
    let mut seeds = vec![common::read("uke/sample.uke")];
    for f in [
        "uke-short-sy",
        "uke-bad-date",
        "uke-no-such-day",
        "uke-not-sjis",
    ] {
        seeds.push(common::read(&format!("bad/{f}.uke")));
    }
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for seed in &seeds {
        for _ in 0..400 {
            let mut m = seed.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % m.len().max(1);
                match next() % 4 {
                    0 if !m.is_empty() => m[i] = next() as u8,
                    1 if !m.is_empty() => m[i] = b",\r\n0123456789"[(next() % 13) as usize],
                    2 => m.truncate(i),
                    _ => m.insert(i.min(m.len()), b','),
                }
            }
            data_converter::fuzzing::uke(&m);
        }
    }
}

#[test]
fn bad_master_files_name_file_and_line() {
    let mut m = Masters::default();
    let bytes = "0,B,8833421,,,高血圧症\r\n0,B,88X3421,,,誤り\r\n".as_bytes();
    let (enc, _, _) = encoding_rs::SHIFT_JIS.encode(std::str::from_utf8(bytes).unwrap());
    let e = m.load(MasterKind::Disease, &enc, "b.csv").unwrap_err();
    assert_eq!(
        (e.location.file.as_str(), e.location.line),
        ("b.csv", Some(2)),
        "{e}"
    );
    let e = m
        .load(MasterKind::Drug, b"0,Y,620000001\r\n", "y.csv")
        .unwrap_err();
    assert!(matches!(e.kind, ErrorKind::ShortRecord { .. }), "{e}");
    let e = m
        .load(MasterKind::Drug, b"0,Y,620000001,,\xff\xff\r\n", "y.csv")
        .unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Encoding(_)), "{e}");
}
