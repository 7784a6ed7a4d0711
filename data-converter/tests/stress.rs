//! The 57-item stress check (issue 5, Deliver 2 and Acceptance): the worked examples of
//! `tests/fixtures/README.md` (computed by hand from the published method) against the scorer, both
//! methods and both sexes; double and missing marks listed and never scored; the roster's workers
//! who have not answered; department aggregates only for groups of 10 or more; golden output; bad
//! input as errors naming file, line and item.
// Test code: an unwrap failure is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use data_converter::stress::{
    StressOutput, read_roster, read_stress_csv, read_stress_json, report,
};
use data_converter::{ErrorKind, fhir};

fn workers() -> StressOutput {
    read_stress_csv(&common::read("stress/workers.csv"), "workers.csv").unwrap()
}

/// (sum A, B, C, high by sum, points A, B, C, high by points) of a worker.
fn result(o: &StressOutput, id: &str) -> (u16, u16, u16, bool, u16, u16, u16, bool) {
    let s = o
        .scored
        .iter()
        .find(|s| s.record.person.identifiers[0].value == id)
        .unwrap_or_else(|| panic!("{id} not scored"));
    let x = &s.scores;
    (
        x.sum_a,
        x.sum_b,
        x.sum_c,
        x.high_by_sum,
        x.points_a,
        x.points_b,
        x.points_c,
        x.high_by_points,
    )
}

#[test]
fn worked_examples_from_the_fixtures_readme() {
    let o = workers();
    // Example 1: every answer 2 (male / female)
    assert_eq!(result(&o, "W001"), (45, 61, 18, false, 24, 17, 10, false));
    assert_eq!(result(&o, "W002"), (45, 61, 18, false, 23, 18, 10, false));
    // Example 2: the most stressful answer everywhere
    assert_eq!(result(&o, "W003"), (68, 116, 36, true, 9, 6, 3, true));
    assert_eq!(result(&o, "W008"), (68, 116, 36, true, 9, 6, 3, true));
    // Example 3: B = 77 (high by 合計点数) and B = 76 (not), both high by 素点換算表
    assert_eq!(result(&o, "W004"), (45, 77, 18, true, 24, 11, 10, true));
    assert_eq!(result(&o, "W005"), (45, 76, 18, false, 24, 12, 10, true));
    // Example 4: A+C = 77 with B = 63 (high) and B = 62 (not high by 合計点数)
    assert_eq!(result(&o, "W006"), (68, 63, 9, true, 9, 16, 15, true));
    assert_eq!(result(&o, "W007"), (68, 62, 9, false, 9, 17, 15, true));
}

#[test]
fn the_same_answers_differ_by_sex_in_the_conversion_table() {
    // Example 4 answered by a woman (person.json): B = 18 > 17, not high by 素点換算表.
    let o = read_stress_json(&common::read("stress/person.json"), "person.json").unwrap();
    assert_eq!(result(&o, "W101"), (68, 63, 9, true, 9, 18, 15, false));
}

/// Example 5 of tests/fixtures/README.md, built here rather than in `workers.csv` (which would
/// change its department counts): the least stressful answer everywhere, by a man and a woman.
#[test]
fn least_stressful_answers_and_the_female_environment_column() {
    let ids = data_converter::stress::tables::item_ids();
    let answer = |id: &str| -> u8 {
        let n: u8 = id[1..].parse().unwrap();
        match (&id[..1], n) {
            ("A", 1..=7 | 11..=13 | 15) => 4,
            ("A", _) => 1,
            ("B", 1..=3) => 4,
            _ => 1,
        }
    };
    let mut csv = format!("worker_id,sex,answered_on,{}\n", ids.join(","));
    for (id, sex) in [("W201", "M"), ("W202", "F")] {
        csv.push_str(&format!("{id},{sex},2025-06-10"));
        for item in ids {
            csv.push_str(&format!(",{}", answer(item)));
        }
        csv.push('\n');
    }
    let o = read_stress_csv(csv.as_bytes(), "example5.csv").unwrap();
    // 職場環境 raw 5 − 4 = 1: 評価点 4 for men, 5 for women (素点換算表 女性: 「低い/少ない」).
    assert_eq!(result(&o, "W201"), (17, 29, 9, false, 42, 30, 15, false));
    assert_eq!(result(&o, "W202"), (17, 29, 9, false, 43, 30, 15, false));
}

#[test]
fn double_and_missing_marks_are_listed_and_not_scored() {
    let o = workers();
    assert_eq!(o.scored.len(), 14);
    let inc: Vec<_> = o
        .incomplete
        .iter()
        .map(|i| (i.worker_id.as_str(), i.missing.clone(), i.double.clone()))
        .collect();
    assert_eq!(
        inc,
        [
            ("W015", vec!["B10".to_owned()], vec!["A5".to_owned()]),
            ("W016", vec!["C1".to_owned()], vec![]),
        ]
    );
    assert!(
        o.incomplete[0].locator.contains("line 16"),
        "{:?}",
        o.incomplete[0]
    );
    assert!(
        o.scored
            .iter()
            .all(|s| !["W015", "W016"].contains(&s.record.person.identifiers[0].value.as_str()))
    );
    // JSON: an array of two answers is a double mark, null is missing
    let j = read_stress_json(&common::read("stress/persons.json"), "persons.json").unwrap();
    assert_eq!(j.scored.len(), 1);
    assert_eq!(j.incomplete[0].worker_id, "W103");
    assert_eq!(j.incomplete[0].double, ["B3"]);
    assert_eq!(j.incomplete[0].missing, ["C9"]);
    assert_eq!(j.incomplete[0].locator, "persons.json: $[1]");
}

#[test]
fn roster_non_responders_and_department_aggregates() {
    let o = workers();
    let roster = read_roster(&common::read("stress/roster.csv"), "roster.csv").unwrap();
    let r = report(&[&o], Some(&roster));
    assert_eq!(r.not_answered, ["W017", "W018"]);
    assert_eq!(r.scored, 14);
    // 営業部: W001–W012 scored (12 ≥ 10); 総務部: 2 scored + 1 incomplete → suppressed
    assert_eq!(r.departments.len(), 1);
    let d = &r.departments[0];
    assert_eq!((d.department.as_str(), d.n), ("営業部", 12));
    // high by sum: W003 W004 W006 W008; by points: W003 W004 W005 W006 W007 W008
    assert_eq!((d.high_by_sum, d.high_by_points), (4, 6));
    assert_eq!(r.suppressed_departments, ["総務部"]);
    // without a roster nobody is listed as not answered
    assert!(report(&[&o], None).not_answered.is_empty());
}

#[test]
fn a_group_of_nine_is_not_aggregated() {
    let text = String::from_utf8(common::read("stress/workers.csv")).unwrap();
    // keep the header and 営業部 W001–W009 only
    let cut: Vec<&str> = text.lines().take(10).collect();
    let o = read_stress_csv(cut.join("\n").as_bytes(), "nine.csv").unwrap();
    let r = report(&[&o], None);
    assert_eq!(r.scored, 9);
    assert!(r.departments.is_empty());
    assert_eq!(r.suppressed_departments, ["営業部"]);
}

#[test]
fn golden_iphr_and_fhir() {
    let o = read_stress_json(&common::read("stress/person.json"), "person.json").unwrap();
    let recs: Vec<_> = o.records().cloned().collect();
    common::assert_golden(
        "stress-person.iphr.json",
        &serde_json::to_value(&recs).unwrap(),
    );
    common::assert_golden("stress-person.bundle.json", &fhir::bundle(&recs));
    let r = report(&[&workers()], None);
    common::assert_golden(
        "stress-workers.report.json",
        &serde_json::to_value(&r).unwrap(),
    );
}

#[test]
fn csv_and_json_give_the_same_scores() {
    let text = String::from_utf8(common::read("stress/person.json")).unwrap();
    let j = read_stress_json(text.as_bytes(), "person.json").unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids: Vec<String> = data_converter::stress::tables::item_ids()
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let mut csv = format!("worker_id,sex,answered_on,{}\n", ids.join(","));
    csv.push_str("W101,F,2025-06-11");
    for id in &ids {
        csv.push_str(&format!(",{}", v["answers"][id]));
    }
    let c = read_stress_csv(csv.as_bytes(), "same.csv").unwrap();
    assert_eq!(c.scored[0].scores, j.scored[0].scores);
}

fn csv_err(rel: &str) -> data_converter::Error {
    read_stress_csv(&common::read(rel), rel).expect_err(rel)
}

#[test]
fn bad_input_names_file_line_and_item() {
    let e = csv_err("bad/stress-out-of-range.csv");
    assert_eq!(e.location.line, Some(3), "{e}");
    assert_eq!(e.location.item.as_deref(), Some("A3"), "{e}");
    assert!(
        matches!(&e.kind, ErrorKind::InvalidValue { value, .. } if value == "5"),
        "{e}"
    );
    let e = csv_err("bad/stress-zero-answer.csv");
    assert_eq!(
        (e.location.line, e.location.item.as_deref()),
        (Some(3), Some("B12")),
        "{e}"
    );
    let e = csv_err("bad/stress-bad-sex.csv");
    assert_eq!(
        (e.location.line, e.location.path.as_deref()),
        (Some(3), Some("sex")),
        "{e}"
    );
    let e = csv_err("bad/stress-missing-column.csv");
    assert_eq!(e.kind, ErrorKind::MissingColumn("D2".into()), "{e}");
    let e = csv_err("bad/stress-duplicate-worker.csv");
    assert!(matches!(e.kind, ErrorKind::DuplicatePerson { .. }), "{e}");
    let e = csv_err("bad/stress-not-utf8.csv");
    assert_eq!(
        (e.location.line, &e.kind),
        (Some(2), &ErrorKind::Encoding("UTF-8")),
        "{e}"
    );

    let rel = "bad/stress-out-of-range.json";
    let e = read_stress_json(&common::read(rel), rel).unwrap_err();
    assert_eq!(e.location.path.as_deref(), Some("$[1].answers.A7"), "{e}");
    assert_eq!(e.location.item.as_deref(), Some("A7"), "{e}");
    let rel = "bad/stress-unknown-item.json";
    let e = read_stress_json(&common::read(rel), rel).unwrap_err();
    assert_eq!(e.location.path.as_deref(), Some("$.answers.E1"), "{e}");
    let e = read_stress_json(b"{\"worker_id\": ", "cut.json").unwrap_err();
    assert_eq!(e.location.line, Some(1), "{e}");
}

#[test]
fn cli_writes_records_and_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let fx = |r: &str| common::fixture(r).display().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_data-converter"))
        .args([
            "--stress",
            &fx("stress/workers.csv"),
            &fx("stress/persons.json"),
            "--roster",
            &fx("stress/roster.csv"),
            "-o",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("worker W015 not scored"), "{err}");
    assert!(err.contains("worker W103 not scored"), "{err}");
    let lines = std::fs::read_to_string(dir.path().join("workers.csv.iphr.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 14);
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("stress-report.json")).unwrap())
            .unwrap();
    assert_eq!(r["scored"], 15);
    assert_eq!(r["incomplete"].as_array().unwrap().len(), 3);
    assert_eq!(r["not_answered"], serde_json::json!(["W017", "W018"]));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_data-converter"))
        .args(["--stress", &fx("bad/stress-out-of-range.csv"), "-o"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stress-out-of-range.csv:3: at A3: item A3"),
        "{err}"
    );
}

/// Deterministic mutations of the fixtures through the fuzz entry point: never a panic.
#[test]
fn mutated_stress_inputs_never_panic() {
    let mut seeds = Vec::new();
    for (sel, f) in [
        (0u8, "stress/workers.csv"),
        (1, "stress/persons.json"),
        (1, "stress/person.json"),
    ] {
        let mut v = vec![sel];
        v.extend(common::read(f));
        seeds.push(v);
    }
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for seed in &seeds {
        for _ in 0..300 {
            let mut m = seed.clone();
            for _ in 0..1 + next() % 4 {
                let i = 1 + (next() as usize) % (m.len() - 1);
                match next() % 4 {
                    0 => m[i] = next() as u8,
                    1 => m[i] = b",/\n[]012345 \""[(next() % 13) as usize],
                    2 => m.truncate(i + 1),
                    _ => m.insert(i, b'9'),
                }
            }
            data_converter::fuzzing::stress(&m);
        }
    }
}
