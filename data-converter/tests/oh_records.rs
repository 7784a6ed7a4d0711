//! Occupational-physician records `oh-records/1` (issue 5, Deliver 4 and Acceptance: golden files,
//! the rework sheet with item 1 from attendance, schema violations → file + JSON pointer + field,
//! never a panic).
// Test code: an unwrap failure is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use data_converter::attendance::read_attendance;
use data_converter::error::{Error, ErrorKind};
use data_converter::fhir;
use data_converter::iphr::{Record, Unit, Value};
use data_converter::oh::{read_oh, rework};
use serde_json::{Value as Json, json};

fn fixture() -> Json {
    serde_json::from_slice(&common::read("oh/export.json")).unwrap()
}

fn records() -> Vec<Record> {
    let att = read_attendance(&common::read("attendance/feb-2026.csv"), "feb-2026.csv").unwrap();
    read_oh(&common::read("oh/export.json"), "export.json", Some(&att)).unwrap()
}

fn entry<'a>(r: &'a Record, code: &str) -> Vec<&'a Value> {
    r.entries
        .iter()
        .filter(|e| e.code.code == code)
        .filter_map(|e| e.value.as_ref())
        .collect()
}

fn coded(v: &Value) -> &str {
    match v {
        Value::Coded { code } => &code.code,
        other => panic!("not coded: {other:?}"),
    }
}

#[test]
fn golden_iphr_and_fhir() {
    let recs = records();
    assert_eq!(recs.len(), 8);
    assert_eq!(recs.iter().filter(|r| r.unit == Unit::C).count(), 7);
    common::assert_golden("oh-export.iphr.json", &serde_json::to_value(&recs).unwrap());
    common::assert_golden("oh-export.bundle.json", &fhir::bundle(&recs));
    assert_eq!(recs, records(), "stable");
}

#[test]
fn opinion_has_work_status_measures_and_period() {
    let recs = records();
    let op = &recs[1];
    assert_eq!(op.source.document_id.as_deref(), Some("OPN-2026-0001"));
    assert_eq!(coded(entry(op, "work_status")[0]), "restricted");
    let measures: Vec<&str> = entry(op, "measure").into_iter().map(coded).collect();
    assert_eq!(measures, ["limit_overtime", "fewer_night_shifts"]);
    let period = op.entries.iter().find(|e| e.code.code == "period").unwrap();
    assert_eq!(
        serde_json::to_value(period.effective).unwrap(),
        json!({ "period": { "start": "2026-03-05", "end": "2026-05-31" } })
    );
    // 就業判定 with the two-axis 指導区分
    assert_eq!(coded(entry(&recs[2], "guidance_life")[0]), "D");
    assert_eq!(coded(entry(&recs[2], "guidance_medical")[0]), "2");
    // the patrol is about a workplace, not a person
    assert!(recs[4].person.key().is_none());
    assert_eq!(entry(&recs[4], "finding").len(), 2);
    assert_eq!(coded(entry(&recs[5], "verdict")[0]), "fit_with_conditions");
    // DESIGN §5: the attending physician's opinion is unit A, the rest unit C
    assert_eq!(recs[5].unit, Unit::A);
    // 健診 2025-12-10, 判定 2026-02-20: within 3 months (安衛法66条の4)
    assert_eq!(coded(entry(&recs[2], "opinion_within_3_months")[0]), "yes");
    let mut j = fixture();
    j["records"][2]["date"] = json!("2026-03-11");
    let att = read_attendance(&common::read("attendance/feb-2026.csv"), "a.csv").unwrap();
    let late = read_oh(&serde_json::to_vec(&j).unwrap(), "x.json", Some(&att)).unwrap();
    assert_eq!(coded(entry(&late[2], "opinion_within_3_months")[0]), "no");
}

#[test]
fn rework_item_1_from_attendance_and_from_counts() {
    let recs = records();
    // RW-2026-0003: W010 in February from the attendance CSV: 20 days, 1 absence, 1 late, 1 early
    // → (40 − 4) / 40 half-days = 90.0 % → 3
    let rw = &recs[6];
    assert_eq!(coded(entry(rw, "attendance")[0]), "3");
    match entry(rw, "attendance_rate")[0] {
        Value::Quantity { value, unit } => {
            assert_eq!((value.as_str(), unit.as_ref()), ("90.0", "%"));
        }
        v => panic!("{v:?}"),
    }
    // RW-2026-0004: counts given: 20 days, 1 late + 1 early → 95.0 % → 4
    assert_eq!(coded(entry(&recs[7], "attendance")[0]), "4");
    // items 2–12 carry the sheet's anchor for their score
    let items: Vec<(&str, &str)> = rework::ITEMS[1..]
        .iter()
        .map(|it| {
            let v = entry(rw, it.key)[0];
            match v {
                Value::Coded { code } => (code.code.as_ref(), code.display.as_deref().unwrap()),
                _ => panic!(),
            }
        })
        .collect();
    assert_eq!(items.len(), 11);
    assert_eq!(items[7], ("2", rework::ITEMS[8].anchors[1]), "coping = 2");
    assert_eq!(items[0], ("3", rework::ITEMS[1].anchors[2]));
}

/// An edit of the fixture JSON.
type Edit = Box<dyn FnOnce(&mut Json)>;

/// Applies `edit` to the fixture and returns the error.
fn broken(edit: impl FnOnce(&mut Json)) -> Error {
    let mut j = fixture();
    edit(&mut j);
    let bytes = serde_json::to_vec_pretty(&j).unwrap();
    let att = read_attendance(&common::read("attendance/feb-2026.csv"), "feb-2026.csv").unwrap();
    read_oh(&bytes, "broken.json", Some(&att)).unwrap_err()
}

fn at(e: &Error) -> (&str, &str) {
    (
        e.location.path.as_deref().unwrap_or(""),
        e.location.item.as_deref().unwrap_or(""),
    )
}

#[test]
fn schema_violations_name_pointer_and_field() {
    let cases: Vec<(Edit, &str, &str)> = vec![
        (
            Box::new(|j| j["records"][6]["scores"]["coping"] = json!(5)),
            "/records/6/scores/coping",
            "coping",
        ),
        (
            Box::new(|j| j["records"][6]["scores"]["initiative"] = json!(0)),
            "/records/6/scores/initiative",
            "initiative",
        ),
        (
            Box::new(|j| j["records"][6]["scores"]["conversation"] = json!(-1)),
            "/records/6/scores/conversation",
            "conversation",
        ),
        (
            Box::new(|j| j["records"][6]["scores"]["cooperation"] = json!("4")),
            "/records/6/scores/cooperation",
            "cooperation",
        ),
        (
            Box::new(|j| {
                j["records"][6]["scores"]
                    .as_object_mut()
                    .unwrap()
                    .remove("coping");
            }),
            "/records/6/scores",
            "scores",
        ),
        (
            Box::new(|j| j["records"][0]["mood"] = json!("good")),
            "/records/0/mood",
            "mood",
        ),
        (
            Box::new(|j| j["records"][1]["worker"]["dept"] = json!("x")),
            "/records/1/worker/dept",
            "dept",
        ),
        (Box::new(|j| j["extra"] = json!(1)), "/extra", "extra"),
        (
            Box::new(|j| j["records"][1]["work_status"] = json!("part_time")),
            "/records/1/work_status",
            "work_status",
        ),
        (
            Box::new(|j| j["records"][1]["measures"] = json!([])),
            "/records/1/measures",
            "measures",
        ),
        (
            Box::new(|j| j["records"][1]["measures"][0] = json!({ "kind": "other" })),
            "/records/1/measures/0/detail",
            "detail",
        ),
        (
            Box::new(|j| j["records"][1]["period"]["end"] = json!("2026-03-01")),
            "/records/1/period/end",
            "end",
        ),
        (
            Box::new(|j| j["records"][2]["measures"] = json!([{ "kind": "day_shift" }])),
            "/records/2/measures",
            "measures",
        ),
        (
            Box::new(|j| j["records"][2]["date"] = json!("2025-12-01")),
            "/records/2/date",
            "date",
        ),
        (
            Box::new(|j| j["records"][2]["guidance"]["medical"] = json!(4)),
            "/records/2/guidance/medical",
            "medical",
        ),
        (
            Box::new(|j| j["records"][3]["date"] = json!("2026-02-30")),
            "/records/3/date",
            "date",
        ),
        (
            Box::new(|j| {
                j["records"][3].as_object_mut().unwrap().remove("period");
            }),
            "/records/3/period",
            "period",
        ),
        (
            Box::new(|j| j["records"][4]["findings"][0]["due"] = json!("2026-01-01")),
            "/records/4/findings/0/due",
            "due",
        ),
        (
            Box::new(|j| j["records"][5]["measures"] = json!([])),
            "/records/5/measures",
            "measures",
        ),
        (
            Box::new(|j| j["records"][5]["leave_until"] = json!("2026-05-01")),
            "/records/5/leave_until",
            "leave_until",
        ),
        (
            Box::new(|j| j["records"][7]["attendance"]["scheduled_days"] = json!(0)),
            "/records/7/attendance",
            "attendance",
        ),
        (
            Box::new(|j| j["records"][7]["period"]["end"] = json!(null)),
            "/records/7/period/end",
            "end",
        ),
        (
            Box::new(|j| j["records"][5]["type"] = json!("sick_note")),
            "/records/5/type",
            "type",
        ),
        (
            Box::new(|j| j["records"][5]["id"] = json!("OPN-2026-0001")),
            "/records/5/id",
            "id",
        ),
        (
            Box::new(|j| j["records"][0]["worker"]["id"] = json!(" ")),
            "/records/0/worker/id",
            "id",
        ),
        (
            Box::new(|j| j["format"] = json!("oh-records/2")),
            "/format",
            "format",
        ),
    ];
    for (edit, pointer, field) in cases {
        let e = broken(edit);
        assert_eq!(e.location.file, "broken.json");
        assert!(matches!(e.kind, ErrorKind::Schema(_)), "{e}");
        assert_eq!(at(&e), (pointer, field), "{e}");
    }
}

#[test]
fn rework_sheet_without_counts_needs_an_attendance_file() {
    let e = read_oh(&common::read("oh/export.json"), "export.json", None).unwrap_err();
    assert_eq!(at(&e), ("/records/6/attendance", "attendance"), "{e}");
}

#[test]
fn not_json_names_the_line() {
    let e = read_oh(
        b"{\n  \"format\": \"oh-records/1\",\n  \"records\": [,]\n}",
        "x.json",
        None,
    )
    .unwrap_err();
    assert_eq!(e.location.line, Some(3), "{e}");
    assert!(matches!(e.kind, ErrorKind::Json(_)), "{e}");
    let e = read_oh(b"\xff\xfe", "x.json", None).unwrap_err();
    assert_eq!(e.location.file, "x.json");
}

#[test]
fn mutated_inputs_never_panic() {
    let seed = common::read("oh/export.json");
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let n: usize = std::env::var("IPHR_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    for _ in 0..n {
        let mut b = seed.clone();
        for _ in 0..(next() % 6 + 1) {
            let i = (next() as usize) % b.len();
            match next() % 3 {
                0 => b[i] = next() as u8,
                1 => {
                    b.remove(i);
                }
                _ => {
                    let alphabet = b"0123456789-\"{}[],:";
                    b.insert(i, alphabet[(next() % alphabet.len() as u64) as usize]);
                }
            }
        }
        b.insert(0, (next() & 1) as u8);
        data_converter::fuzzing::oh_json(&b);
    }
}

#[test]
fn cli_uses_the_attendance_file_for_item_1() {
    let out = tempfile::tempdir().unwrap();
    let run = |extra: &[&std::ffi::OsStr]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_data-converter"))
            .arg(common::fixture("oh/export.json"))
            .args(["--to", "bundle", "-q", "-o"])
            .arg(out.path())
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("at /records/6/attendance: item attendance"),
        "{err}"
    );
    assert!(!out.path().join("export.json.bundle.json").exists());
    let att = common::fixture("attendance/feb-2026.csv");
    let o = run(&["--attendance".as_ref(), att.as_os_str()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b: Json =
        serde_json::from_slice(&std::fs::read(out.path().join("export.json.bundle.json")).unwrap())
            .unwrap();
    assert_eq!(b, fhir::bundle(&records()));
}

#[test]
fn errors_carry_the_line() {
    let text = String::from_utf8(common::read("oh/export.json")).unwrap();
    let att = read_attendance(&common::read("attendance/feb-2026.csv"), "a.csv").unwrap();
    let run = |t: String| read_oh(t.as_bytes(), "l.json", Some(&att)).unwrap_err();
    // a rule checked after parsing: the record's first line (its `{`, two lines above the id)
    let e = run(text.replacen("\"coping\": 2", "\"coping\": 5", 1));
    let start = common::line_of(&text, "\"id\": \"RW-2026-0003\"") - 2;
    assert_eq!(e.location.line, Some(start));
    assert!(
        e.to_string().starts_with(&format!(
            "l.json:{start}: at /records/6/scores/coping: item coping: "
        )),
        "{e}"
    );
    // a type error: the line of the value
    let e = run(text.replacen("\"cooperation\": 4", "\"cooperation\": \"4\"", 1));
    assert_eq!(
        e.location.line,
        Some(common::line_of(&text, "\"cooperation\": 4")),
        "{e}"
    );
    assert_eq!(at(&e), ("/records/6/scores/cooperation", "cooperation"));
    // an unknown field in a nested object (the opinion's worker)
    let e = run(text.replacen(
        "\"name\": \"鈴木 三郎\" },",
        "\"name\": \"鈴木 三郎\", \"dept\": \"製造\" },",
        1,
    ));
    assert_eq!(
        e.location.line,
        Some(common::line_of(&text, "\"name\": \"鈴木 三郎\" },")),
        "{e}"
    );
    assert_eq!(at(&e), ("/records/1/worker/dept", "dept"));
    // broken JSON in the middle of the file
    let e = run(text.replacen("\"mode\": \"online\",", "\"mode\": \"online\",,", 1));
    assert!(matches!(e.kind, ErrorKind::Json(_)), "{e}");
    assert_eq!(
        e.location.line,
        Some(common::line_of(&text, "\"mode\": \"online\""))
    );
}
