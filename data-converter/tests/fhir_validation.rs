//! FHIR export (issue 4, Deliver 5 and Acceptance): golden Bundle, and independent validation of
//! every FHIR fixture output by validators installed from the registries:
//! fhir.resources 6.4.0 + fhirkit-rs (R4 structure) and Medplum 4.5.x (JP Core profiles from
//! `shared/testdata/jp-core`). Set up by `scripts/test-setup.d/20-fhir-validators.sh`.
// Test code: an unwrap failure is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use data_converter::cda::read_cda;
use data_converter::csv_import::{Mapping, read_csv};
use data_converter::fhir;
use data_converter::iphr::Record;

const SETUP: &str = "run `source scripts/test-setup.d/20-fhir-validators.sh` from the repository root (it installs the validators and exports IPHR_FHIR_PYTHON / IPHR_FHIR_NODE_PATH)";

fn tools_dir() -> PathBuf {
    std::env::var_os("IPHR_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").unwrap_or_default()).join(".cache/iphr-tools")
        })
}

/// The validator's location from the env var, else the setup script's default place; panics with
/// instructions when neither exists (a missing validator must never pass silently).
fn tool(var: &str, default: &str) -> PathBuf {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| tools_dir().join(default));
    assert!(
        p.exists(),
        "validator not found: {var}={} does not exist; {SETUP}",
        p.display()
    );
    p
}

fn all_fixture_records() -> Vec<(String, Vec<Record>)> {
    let mut out = Vec::new();
    for f in [
        "full.xml",
        "minimal.xml",
        "out-of-range-pre2013.xml",
        "prefixed-namespace.xml",
    ] {
        let rec = read_cda(&common::read(&format!("cda/{f}")), f).unwrap();
        out.push((f.to_owned(), vec![rec]));
    }
    for layout in ["clinic-a", "clinic-b", "clinic-c"] {
        let toml = String::from_utf8(common::read(&format!("csv/{layout}.toml"))).unwrap();
        let m = Mapping::from_toml(&toml, layout).unwrap();
        let o = read_csv(&common::read(&format!("csv/{layout}.csv")), layout, &m).unwrap();
        assert!(o.errors.is_empty());
        out.push((format!("{layout}.csv"), o.records));
    }
    // --- issue 5 (conv2): claims (with and without masters) and stress checks ---
    let mut masters = data_converter::claims::Masters::default();
    for (kind, f) in [
        (
            data_converter::claims::MasterKind::Disease,
            "uke/disease-master.csv",
        ),
        (
            data_converter::claims::MasterKind::Drug,
            "uke/drug-master.csv",
        ),
    ] {
        masters.load(kind, &common::read(f), f).unwrap();
    }
    let uke = common::read("uke/sample.uke");
    for (name, m) in [
        ("sample.uke", Some(&masters)),
        ("sample-nomaster.uke", None),
    ] {
        let o = data_converter::claims::read_uke(&uke, name, m).unwrap();
        out.push((name.to_owned(), o.records));
    }
    let o =
        data_converter::stress::read_stress_csv(&common::read("stress/workers.csv"), "workers.csv")
            .unwrap();
    out.push(("workers.csv".to_owned(), o.records().cloned().collect()));
    let o = data_converter::stress::read_stress_json(
        &common::read("stress/person.json"),
        "person.json",
    )
    .unwrap();
    out.push(("person.json".to_owned(), o.records().cloned().collect()));
    // issue 5 part 2 (conv3): attendance months and occupational-health records.
    let att = data_converter::attendance::read_attendance(
        &common::read("attendance/feb-2026.csv"),
        "feb-2026.csv",
    )
    .unwrap();
    out.push((
        "attendance-feb-2026.csv".to_owned(),
        data_converter::attendance::records(&att),
    ));
    let oh =
        data_converter::oh::read_oh(&common::read("oh/export.json"), "export.json", Some(&att))
            .unwrap();
    out.push(("oh-export.json".to_owned(), oh));
    out
}

/// Writes every fixture's output as a Bundle (.json) and as NDJSON (.ndjson).
fn write_outputs(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for (name, recs) in all_fixture_records() {
        let b = dir.join(format!("{name}.bundle.json"));
        std::fs::write(&b, serde_json::to_vec_pretty(&fhir::bundle(&recs)).unwrap()).unwrap();
        let n = dir.join(format!("{name}.ndjson"));
        let mut w = Vec::new();
        let mut seen = HashSet::new();
        for r in &recs {
            fhir::write_ndjson(&mut w, r, &mut seen).unwrap();
        }
        std::fs::write(&n, w).unwrap();
        files.push(b);
        files.push(n);
    }
    files
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what} could not start ({e}); {SETUP}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what} reported errors:\n{stdout}\n{stderr}"
    );
    let last = stdout.lines().last().unwrap_or("");
    assert!(
        last.ends_with(" 0 errors"),
        "{what}: unexpected output:\n{stdout}\n{stderr}"
    );
    let n: usize = last
        .split_whitespace()
        .next()
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    assert!(n > 100, "{what} checked only {n} resources:\n{stdout}");
    stdout
}

#[test]
fn fhir_bundle_matches_golden() {
    let rec = read_cda(&common::read("cda/full.xml"), "full.xml").unwrap();
    common::assert_golden("cda-full.bundle.json", &fhir::bundle(&[rec]));
}

#[test]
fn fhir_export_is_stable_and_patient_ids_follow_the_person() {
    let bytes = common::read("cda/full.xml");
    let a = fhir::bundle(&[read_cda(&bytes, "full.xml").unwrap()]);
    let b = fhir::bundle(&[read_cda(&bytes, "full.xml").unwrap()]);
    assert_eq!(a, b);
    // the same person in another document gets the same Patient id
    let changed = String::from_utf8(bytes)
        .unwrap()
        .replace("value=\"170.2\"", "value=\"171.0\"");
    let c = fhir::bundle(&[read_cda(changed.as_bytes(), "full.xml").unwrap()]);
    assert_eq!(
        a["entry"][0]["resource"]["id"],
        c["entry"][0]["resource"]["id"]
    );
    assert_ne!(
        a["entry"].as_array().unwrap().last(),
        c["entry"].as_array().unwrap().last()
    );
}

#[test]
fn r4_structure_validators_accept_every_fixture_output() {
    let python = tool("IPHR_FHIR_PYTHON", "fhir-venv/bin/python");
    let dir = tempfile::tempdir().unwrap();
    let files = write_outputs(dir.path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validators/validate_r4.py");
    run(
        Command::new(python).arg(script).args(&files),
        "fhir.resources 6.4.0 + fhirkit-rs",
    );
}

#[test]
fn jp_core_profiles_accept_every_fixture_output() {
    let node_path = tool("IPHR_FHIR_NODE_PATH", "medplum/node_modules");
    assert!(
        node_path.join("@medplum/core").is_dir(),
        "@medplum/core missing under {}; {SETUP}",
        node_path.display()
    );
    let jp = common::shared_testdata("jp-core");
    let dir = tempfile::tempdir().unwrap();
    let files = write_outputs(dir.path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validators/validate_jpcore.cjs");
    let out = run(
        Command::new("node")
            .env("NODE_PATH", &node_path)
            .arg(script)
            .arg(&jp)
            .args(&files),
        "Medplum JP Core validation",
    );
    for p in [
        "JP_Patient",
        "JP_Organization",
        "JP_Observation_LabResult",
        "JP_Observation_VitalSigns",
        "JP_Observation_BodyMeasurement",
        "JP_Observation_Common",
        "JP_DiagnosticReport_Common",
        "JP_Specimen_Common",
        // issue 5 (conv2)
        "JP_Condition",
        "JP_MedicationStatement",
        // issue 5 part 2 (conv3): OH records
        "JP_DocumentReference",
    ] {
        assert!(
            out.contains(&format!("\"{p}\":")),
            "profile {p} was not exercised:\n{out}"
        );
    }
}

#[test]
fn validators_reject_a_broken_resource() {
    // Guards against a validator that accepts everything: drop a required element.
    let rec = read_cda(&common::read("cda/full.xml"), "full.xml").unwrap();
    let res = fhir::record_resources(&rec, fhir::RefStyle::Relative);
    let mut lab = res
        .iter()
        .find(|r| {
            r.json["meta"]["profile"][0]
                .as_str()
                .unwrap()
                .ends_with("LabResult")
        })
        .unwrap()
        .json
        .clone();
    lab.as_object_mut().unwrap().remove("specimen");
    lab["valueQuantity"]["value"] = serde_json::json!("not a number");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("broken.ndjson");
    std::fs::write(&f, format!("{lab}\n")).unwrap();
    let python = tool("IPHR_FHIR_PYTHON", "fhir-venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validators/validate_r4.py");
    let o = Command::new(python).arg(script).arg(&f).output().unwrap();
    assert!(
        !o.status.success(),
        "R4 validators accepted a string decimal"
    );
    let node_path = tool("IPHR_FHIR_NODE_PATH", "medplum/node_modules");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validators/validate_jpcore.cjs");
    let o = Command::new("node")
        .env("NODE_PATH", &node_path)
        .arg(script)
        .arg(common::shared_testdata("jp-core"))
        .arg(&f)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success() && text.contains("Observation.specimen"),
        "Medplum accepted a LabResult without specimen:\n{text}"
    );
}

// --- issue 5 (conv2) ---
#[test]
fn validators_reject_a_broken_condition() {
    // A JP_Condition without subject (1..1 in R4) and with a string where a CodeableConcept belongs.
    let o = data_converter::claims::read_uke(&common::read("uke/sample.uke"), "sample.uke", None)
        .unwrap();
    let res = fhir::record_resources(&o.records[0], fhir::RefStyle::Relative);
    let mut c = res
        .iter()
        .find(|r| r.resource_type == "Condition")
        .unwrap()
        .json
        .clone();
    c.as_object_mut().unwrap().remove("subject");
    c["clinicalStatus"] = serde_json::json!("active");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("broken-condition.ndjson");
    std::fs::write(&f, format!("{c}\n")).unwrap();
    let python = tool("IPHR_FHIR_PYTHON", "fhir-venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validators/validate_r4.py");
    let o = Command::new(python).arg(script).arg(&f).output().unwrap();
    assert!(
        !o.status.success(),
        "R4 validators accepted a broken Condition"
    );
    let node_path = tool("IPHR_FHIR_NODE_PATH", "medplum/node_modules");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validators/validate_jpcore.cjs");
    let o = Command::new("node")
        .env("NODE_PATH", &node_path)
        .arg(script)
        .arg(common::shared_testdata("jp-core"))
        .arg(&f)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success() && text.contains("JP_Condition") && text.contains("subject"),
        "Medplum accepted a JP_Condition without subject:\n{text}"
    );
}

/// issue 5 part 2 (conv3): both validators reject a DocumentReference of an OH record without its
/// required `content` and with a date that is not an instant.
#[test]
fn validators_reject_a_broken_document_reference() {
    let att = data_converter::attendance::read_attendance(
        &common::read("attendance/feb-2026.csv"),
        "feb-2026.csv",
    )
    .unwrap();
    let oh =
        data_converter::oh::read_oh(&common::read("oh/export.json"), "export.json", Some(&att))
            .unwrap();
    let mut doc = fhir::record_resources(&oh[1], fhir::RefStyle::Relative)
        .into_iter()
        .find(|r| r.resource_type == "DocumentReference")
        .unwrap()
        .json;
    doc.as_object_mut().unwrap().remove("content");
    doc["date"] = serde_json::json!("2026-03-04");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("broken-doc.ndjson");
    std::fs::write(&f, format!("{doc}\n")).unwrap();
    let python = tool("IPHR_FHIR_PYTHON", "fhir-venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validators/validate_r4.py");
    let o = Command::new(python).arg(script).arg(&f).output().unwrap();
    assert!(
        !o.status.success(),
        "R4 validators accepted a DocumentReference without content"
    );
    let node_path = tool("IPHR_FHIR_NODE_PATH", "medplum/node_modules");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validators/validate_jpcore.cjs");
    let o = Command::new("node")
        .env("NODE_PATH", &node_path)
        .arg(script)
        .arg(common::shared_testdata("jp-core"))
        .arg(&f)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success() && text.contains("DocumentReference.content"),
        "Medplum accepted a DocumentReference without content:\n{text}"
    );
}
