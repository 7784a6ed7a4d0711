//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the plain random-input harness
//! (`tests/robustness.rs`), so the same code is exercised with and without libFuzzer
//! (issue 4, Acceptance: fuzz targets for the CDA and CSV readers, no panic).

use std::sync::OnceLock;

use crate::csv_import::{Mapping, read_csv};

fn mappings() -> &'static [Mapping; 2] {
    static M: OnceLock<[Mapping; 2]> = OnceLock::new();
    M.get_or_init(|| {
        let load = |text: &str, name: &str| {
            // Invariant: the fixture mappings are checked by the csv integration tests.
            Mapping::from_toml(text, name).unwrap_or_else(|e| panic!("fixture mapping {name}: {e}"))
        };
        [
            load(
                include_str!("../tests/fixtures/csv/clinic-a.toml"),
                "clinic-a.toml",
            ),
            load(
                include_str!("../tests/fixtures/csv/clinic-b.toml"),
                "clinic-b.toml",
            ),
        ]
    })
}

/// Runs the CDA reader (and, on success, the FHIR export) on arbitrary bytes.
pub fn cda(data: &[u8]) {
    if let Ok(rec) = crate::cda::read_cda(data, "fuzz.xml") {
        let _ = crate::fhir::record_resources(&rec, crate::fhir::RefStyle::Uuid);
    }
}

/// Runs the CSV reader with the first byte choosing the layout (UTF-8 or Shift_JIS).
pub fn csv(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let m = &mappings()[usize::from(sel & 1)];
    if let Ok(out) = read_csv(rest, "fuzz.csv", m) {
        for rec in &out.records {
            let _ = crate::fhir::record_resources(rec, crate::fhir::RefStyle::Relative);
        }
    }
}

/// Runs the archive reader on arbitrary bytes.
pub fn archive(data: &[u8]) {
    let _ = crate::archive::read_archive(std::io::Cursor::new(data), "fuzz.zip", |_| {
        std::ops::ControlFlow::Continue(())
    });
}

// --- issue 5 (conv2): claims and stress check ---
/// Runs the UKE claims reader (and, on success, the FHIR export) on arbitrary bytes.
pub fn uke(data: &[u8]) {
    if let Ok(out) = crate::claims::read_uke(data, "fuzz.uke", None) {
        for rec in &out.records {
            let _ = crate::fhir::record_resources(rec, crate::fhir::RefStyle::Uuid);
        }
    }
}

// --- issue 5 part 2 (conv3): attendance CSV and oh-records JSON ---

/// Runs the attendance reader, the monthly summary, the interview list and the FHIR export on
/// arbitrary bytes.
pub fn attendance(data: &[u8]) {
    if let Ok(att) = crate::attendance::read_attendance(data, "fuzz.csv") {
        let months = crate::attendance::monthly(&att);
        let _ = crate::attendance::interview_csv(&months);
        for rec in crate::attendance::records(&att) {
            let _ = crate::fhir::record_resources(&rec, crate::fhir::RefStyle::Relative);
        }
    }
}

/// Runs the oh-records reader (and, on success, the FHIR export) on arbitrary bytes; the first
/// byte chooses whether an (empty-day) attendance file is supplied for rework item 1.
pub fn oh_json(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let att = crate::attendance::Attendance {
        file: "fuzz-attendance.csv".into(),
        days: Vec::new(),
    };
    let att = (sel & 1 == 1).then_some(&att);
    if let Ok(recs) = crate::oh::read_oh(rest, "fuzz.json", att) {
        for rec in &recs {
            let _ = crate::fhir::record_resources(rec, crate::fhir::RefStyle::Uuid);
        }
    }
}

/// Runs the stress-check readers on arbitrary bytes: the first byte picks CSV or JSON; successful
/// outputs are reported on and exported to FHIR.
pub fn stress(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let out = if sel & 1 == 0 {
        crate::stress::read_stress_csv(rest, "fuzz.csv")
    } else {
        crate::stress::read_stress_json(rest, "fuzz.json")
    };
    if let Ok(o) = out {
        let _ = crate::stress::report(&[&o], None);
        for rec in o.records() {
            let _ = crate::fhir::record_resources(rec, crate::fhir::RefStyle::Relative);
        }
    }
}
