//! Attendance (勤怠) daily CSV → monthly 時間外・休日労働, flags and the interview list (issue 5,
//! Deliver 3 and Acceptance: golden files, boundaries 79:59 / 80:00 / 80:01, 45 and 100, bad input
//! with file, line and field, no panic).
// Test code: an unwrap failure is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use data_converter::attendance::{
    AttendanceCounts, Category, Interview, Month, interview_csv, monthly, read_attendance, records,
};
use data_converter::error::ErrorKind;
use data_converter::fhir;

const HEADER: &str = "date,worker_id,category,start,end,break_minutes,holiday,absent,late,early\n";

/// A month of `days` days in 2026 (Feb = 28, Apr = 30) for one worker: weekday-like rows of 8 h
/// until `total` minutes are reached (the last row takes the remainder), as an attendance CSV.
fn month_csv(month: u8, category: &str, total: u32) -> String {
    let mut s = String::from(HEADER);
    let mut left = total;
    let mut day = 1;
    while left > 0 {
        // up to 14 h a day: 08:00 + span, 60 min break
        let work = left.min(14 * 60);
        left -= work;
        let end = 8 * 60 + work + 60;
        s.push_str(&format!(
            "2026-{month:02}-{day:02},X1,{category},08:00,{:02}:{:02},60,0,0,0,0\n",
            end / 60,
            end % 60
        ));
        day += 1;
    }
    s
}

fn one_month(csv: &str) -> Month {
    let att = read_attendance(csv.as_bytes(), "t.csv").unwrap();
    let mut m = monthly(&att);
    assert_eq!(m.len(), 1);
    m.remove(0)
}

/// February 2026: statutory 160:00, so worked = 160 h + the overtime.
fn feb(category: &str, overtime_h: u32, overtime_m: u32) -> Month {
    one_month(&month_csv(
        2,
        category,
        160 * 60 + overtime_h * 60 + overtime_m,
    ))
}

#[test]
fn flags_at_the_80_hour_boundary() {
    let a = feb("general", 79, 59);
    let b = feb("general", 80, 0);
    let c = feb("general", 80, 1);
    assert_eq!(a.overtime_hours().as_str(), "79.98");
    assert_eq!(b.overtime_hours().as_str(), "80.00");
    assert_eq!(c.overtime_hours().as_str(), "80.01");
    assert!(!a.over_80 && !b.over_80 && c.over_80);
    assert_eq!(
        (a.interview, b.interview, c.interview),
        (Interview::None, Interview::None, Interview::Offer)
    );
    assert!(a.over_45 && b.over_45 && c.over_45);
}

#[test]
fn flags_at_45_and_100_hours() {
    assert!(!feb("general", 45, 0).over_45);
    assert!(feb("general", 45, 1).over_45);
    assert!(!feb("general", 99, 59).reaches_100);
    // the special clause requires *less than* 100 h: 100:00 already reaches the cap
    assert!(feb("general", 100, 0).reaches_100);
    // 研究開発: over 100 h is mandatory without request, 100:00 is not over 100
    assert_eq!(feb("research", 100, 0).interview, Interview::Offer);
    assert_eq!(feb("research", 100, 1).interview, Interview::Required);
    // 高度プロフェッショナル: only over 100 h
    assert_eq!(
        feb("highly_professional", 100, 0).interview,
        Interview::None
    );
    assert_eq!(
        feb("highly_professional", 100, 1).interview,
        Interview::Required
    );
    // general: over 80 is an offer however high
    assert_eq!(feb("general", 130, 0).interview, Interview::Offer);
}

#[test]
fn thirty_day_month_is_compared_exactly() {
    // April: 40 h × 30/7 = 171 h 25 min 42.9 s; over 80 h needs worked > 251:25:42.9, i.e. 251:26.
    let under = one_month(&month_csv(4, "general", 251 * 60 + 25));
    let over = one_month(&month_csv(4, "general", 251 * 60 + 26));
    assert!(!under.over_80);
    assert!(over.over_80);
    // 15085 − 10285.714 = 4799.29 min = 79.988 h (truncated), 15086 → 4800.29 min = 80.005 h
    assert_eq!(under.overtime_hours().as_str(), "79.98");
    assert_eq!(over.overtime_hours().as_str(), "80.00");
    // below the statutory hours there is no negative overtime
    let short = one_month(&month_csv(4, "general", 100 * 60));
    assert_eq!(short.overtime_minutes_x7, 0);
}

#[test]
fn holiday_hours_count_towards_overtime_and_are_reported() {
    let csv = format!(
        "{HEADER}2026-02-01,X1,general,09:00,18:00,60,1,0,0,0\n2026-02-02,X1,general,08:00,17:00,60,0,0,0,0\n"
    );
    let m = one_month(&csv);
    assert_eq!(m.holiday_minutes, 480);
    assert_eq!(m.worked_minutes, 960);
    let csv = format!("{HEADER}2026-02-01,X1,general,22:00,30:00,0,0,0,0,0\n");
    assert_eq!(
        one_month(&csv).worked_minutes,
        480,
        "night shift past midnight"
    );
}

#[test]
fn fixture_months_and_interview_list() {
    let bytes = common::read("attendance/feb-2026.csv");
    let att = read_attendance(&bytes, "feb-2026.csv").unwrap();
    let months = monthly(&att);
    assert_eq!(
        months.len(),
        13,
        "12 workers in February, W001 also in March"
    );
    let get = |w: &str| months.iter().find(|m| m.worker == w).unwrap();
    assert_eq!(get("W009").holiday_minutes, 480);
    assert_eq!(get("W009").overtime_hours().as_str(), "100.01");
    assert_eq!(get("W011").category, Category::HighlyProfessional);
    let list = interview_csv(&months);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(
        lines[0],
        "worker_id,name,category,month,overtime_holiday_hours,interview"
    );
    let ids: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    // required first (W007 研究開発, W008 高プロ), then offers by hours
    assert_eq!(ids, ["W007", "W008", "W009", "W006", "W003", "W012"]);
    assert!(lines[1].ends_with(",required") && lines[3].ends_with(",offer"));
    let w10 = AttendanceCounts::from_days(
        &att,
        "W010",
        "2026-02-01".parse().unwrap(),
        "2026-02-28".parse().unwrap(),
    );
    assert_eq!(
        (w10.scheduled_days, w10.absent_days, w10.late, w10.early),
        (20, 1, 1, 1)
    );
    // (40 − 2 − 1 − 1) / 40 half-days = 90 % → score 3
    assert_eq!(w10.score(), Some(3));
}

#[test]
fn golden_iphr_fhir_and_interview_list() {
    let bytes = common::read("attendance/feb-2026.csv");
    let att = read_attendance(&bytes, "feb-2026.csv").unwrap();
    let recs = records(&att);
    common::assert_golden(
        "attendance-feb-2026.iphr.json",
        &serde_json::to_value(&recs).unwrap(),
    );
    common::assert_golden("attendance-feb-2026.bundle.json", &fhir::bundle(&recs));
    let list = interview_csv(&monthly(&att));
    common::assert_golden(
        "attendance-feb-2026.interviews.json",
        &serde_json::json!(list.lines().collect::<Vec<_>>()),
    );
    // stable: the same input gives the same records
    assert_eq!(
        recs,
        records(&read_attendance(&bytes, "feb-2026.csv").unwrap())
    );
}

/// The error for a one-row file with `row`, its line and field.
fn bad(row: &str) -> (u64, String, ErrorKind) {
    let csv = format!("{HEADER}2026-02-02,X1,general,08:00,17:00,60,0,0,0,0\n{row}\n");
    let e = read_attendance(csv.as_bytes(), "bad.csv").unwrap_err();
    assert_eq!(e.location.file, "bad.csv");
    (
        e.location.line.unwrap(),
        e.location.path.clone().unwrap_or_default(),
        e.kind,
    )
}

#[test]
fn bad_rows_name_line_and_field() {
    for (row, field) in [
        (
            "2026-02-03,X1,general,08:00,17:00,-30,0,0,0,0",
            "break_minutes",
        ),
        ("2026-02-03,X1,general,25:00,26:00,0,0,0,0,0", "start"),
        ("2026-02-03,X1,general,08:00,17:60,0,0,0,0,0", "end"),
        ("2026-02-03,X1,general,8h,17:00,0,0,0,0,0", "start"),
        ("2026-02-03,X1,general,17:00,08:00,0,0,0,0,0", "end"),
        (
            "2026-02-03,X1,general,08:00,09:00,60,0,0,0,0",
            "break_minutes",
        ),
        (
            "2026-02-03,X1,general,08:00,09:00,90,0,0,0,0",
            "break_minutes",
        ),
        ("2026-02-03,X1,general,08:00,,0,0,0,0,0", "end"),
        ("2026-02-30,X1,general,08:00,17:00,0,0,0,0,0", "date"),
        ("2026-02-03,,general,08:00,17:00,0,0,0,0,0", "worker_id"),
        ("2026-02-03,X1,general,08:00,17:00,0,2,0,0,0", "holiday"),
        ("2026-02-03,X1,general,08:00,17:00,0,0,1,0,0", "absent"),
        ("2026-02-03,X1,general,,,0,0,1,1,0", "absent"),
        ("2026-02-03,X1,general,,,0,0,0,1,0", "late"),
        ("2026-02-03,X1,manager,08:00,17:00,0,0,0,0,0", "category"),
        ("2026-02-03,X1,research,08:00,17:00,0,0,0,0,0", "category"),
        ("2026-02-02,X1,general,08:00,17:00,0,0,0,0,0", "date"),
    ] {
        let (line, path, _) = bad(row);
        assert_eq!(line, 3, "{row}");
        assert_eq!(path, field, "{row}");
    }
    let (_, _, kind) = bad("2026-02-03,X1,general,08:00,17:00,0,0,0,0");
    assert!(matches!(kind, ErrorKind::BadRow(_)), "short row: {kind:?}");
}

#[test]
fn bad_files_are_errors() {
    let e = read_attendance(b"date,worker_id,start\n", "h.csv").unwrap_err();
    assert!(matches!(e.kind, ErrorKind::MissingColumn(_)), "{e}");
    assert_eq!(e.location.line, Some(1));
    let e = read_attendance(
        HEADER.replace("early\n", "early,overtime\n").as_bytes(),
        "u.csv",
    )
    .unwrap_err();
    assert_eq!(e.location.path.as_deref(), Some("overtime"), "{e}");
    let mut sjis = HEADER.as_bytes().to_vec();
    sjis.extend_from_slice(b"2026-02-02,\x8e\x52,general,08:00,17:00,60,0,0,0,0\n");
    let e = read_attendance(&sjis, "s.csv").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Encoding("UTF-8"));
}

#[test]
fn mutated_inputs_never_panic() {
    let seed = common::read("attendance/feb-2026.csv");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
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
        for _ in 0..(next() % 8 + 1) {
            let i = (next() as usize) % b.len();
            match next() % 3 {
                0 => b[i] = next() as u8,
                1 => {
                    b.remove(i);
                }
                _ => {
                    let alphabet = b"0123456789:,-\n";
                    b.insert(i, alphabet[(next() % alphabet.len() as u64) as usize]);
                }
            }
        }
        data_converter::fuzzing::attendance(&b);
    }
}

#[test]
fn cli_converts_and_writes_the_interview_list() {
    let out = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_data-converter"))
        .arg(common::fixture("attendance/feb-2026.csv"))
        .args(["--to", "ndjson", "-q", "-o"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let list = std::fs::read_to_string(out.path().join("feb-2026.csv.interviews.csv")).unwrap();
    let att = read_attendance(&common::read("attendance/feb-2026.csv"), "x").unwrap();
    assert_eq!(list, interview_csv(&monthly(&att)));
    let nd = std::fs::read_to_string(out.path().join("feb-2026.csv.fhir.ndjson")).unwrap();
    // 12 Patients + 13 months × 10 Observations
    assert_eq!(nd.lines().count(), 12 + 13 * 10);

    // a bad row: exit 1, the error names file, line and column, and nothing is written
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        format!("{HEADER}2026-02-02,X1,general,08:00,17:00,-5,0,0,0,0\n"),
    )
    .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_data-converter"))
        .arg(&bad)
        .args(["-q", "-o"])
        .arg(out.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("bad.csv:2: at break_minutes"), "{err}");
    assert!(!out.path().join("bad.csv.iphr.jsonl").exists());
}
