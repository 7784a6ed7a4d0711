//! The partner API's FHIR responses checked by the independent validators (issue 6 acceptance):
//! files of every importable format (特定健診 CDA and archive, レセプト, stress check) imported,
//! linked and consented, then `$everything` of every person, a search and a read, rendered exactly
//! as the API sends them, through fhir.resources 6.4.0 + fhirkit-rs (R4 structure) and Medplum
//! with the JP Core profiles. Set up by `scripts/test-setup.d/20-fhir-validators.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::seed::{DAY, add_partner, add_person, change};
use common::{Backend, TestDb};
use gateway::clock::{Clock, SystemClock};
use gateway::domain::access::{PartnerAccess, SearchParams};
use gateway::domain::consent::{Action, Category};
use gateway::domain::trail::MemoryTrail;
use gateway::http::fhir::{everything_searchset, searchset};
use gateway::store::records;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const SETUP: &str =
    "run `source scripts/test-setup.d/20-fhir-validators.sh` from the repository root";
const BASE: &str = "https://gateway.iphr.test:9443/fhir";

fn tool(var: &str, default: &str) -> PathBuf {
    let p = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        Path::new(&std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/iphr-tools")
            .join(default)
    });
    assert!(
        p.exists(),
        "validator not found: {var}={}; {SETUP}",
        p.display()
    );
    p
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data-converter/tests/fixtures")
}

/// Imports the fixtures, links every person key to a person consenting to everything; returns the
/// partner API's response files.
async fn responses(dir: &Path) -> Vec<PathBuf> {
    let t = TestDb::new(Backend::Sqlite).await;
    let db = t.db.clone();
    add_partner(&db, "partner-a").await;
    let f = fixtures();
    let inputs = [
        (f.join("cda/full.xml"), "full.xml"),
        (
            f.join("archive/1399999991_06139999_202406100_1.zip"),
            "1399999991_06139999_202406100_1.zip",
        ),
        (f.join("uke/sample.uke"), "sample.uke"),
        (f.join("stress/workers.csv"), "workers.stress.csv"),
        (f.join("attendance/feb-2026.csv"), "feb-2026.attendance.csv"),
        (f.join("oh/export.json"), "export.oh.json"),
    ];
    let mut keys = Vec::new();
    for (path, name) in inputs {
        let mut bytes = std::fs::read(&path).unwrap();
        if name.ends_with(".oh.json") {
            // A delivered OP export carries the rework sheets' attendance counts (item 1); the
            // fixture leaves them to the CLI's --attendance file.
            let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            for r in v["records"].as_array_mut().unwrap() {
                if r["type"] == "rework_sheet" && r.get("attendance").is_none() {
                    r["attendance"] = serde_json::json!({
                        "scheduled_days": 20, "absent_days": 1, "late": 1, "early": 0
                    });
                }
            }
            bytes = serde_json::to_vec(&v).unwrap();
        }
        let imp = gateway::domain::import::convert(&bytes, name, None).unwrap();
        keys.extend(imp.person_keys.iter().map(|k| k.person_key.clone()));
        records::import(&db, &imp, 0).await.unwrap();
    }
    keys.sort();
    keys.dedup();
    assert!(keys.len() >= 5, "{keys:?}");
    let now = SystemClock.now_ms();
    let mut persons = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let person = format!("person-{i}");
        add_person(&db, &person).await;
        assert!(
            records::link_person_key(&db, key, &person, 0)
                .await
                .unwrap()
        );
        change(
            &db,
            &person,
            "partner-a",
            Action::Grant,
            &Category::ALL,
            now - 1,
            now + DAY,
        )
        .await;
        persons.push(person);
    }
    let access = PartnerAccess::new(
        db.clone(),
        Arc::new(SystemClock),
        Arc::new(MemoryTrail::new()),
    );
    let mut files = Vec::new();
    let mut total = 0;
    for person in &persons {
        let served = access.everything("partner-a", person).await.unwrap();
        total += served.len();
        let path = dir.join(format!("{person}.everything.json"));
        std::fs::write(&path, everything_searchset(BASE, &served)).unwrap();
        files.push(path);
        let found = access
            .search(
                "partner-a",
                &SearchParams {
                    patient: person.clone(),
                    resource_type: "Observation".into(),
                    count: 20,
                    ..SearchParams::default()
                },
            )
            .await
            .unwrap();
        let path = dir.join(format!("{person}.search.json"));
        std::fs::write(
            &path,
            searchset(
                BASE,
                &found,
                Some(format!("{BASE}/Observation?patient={person}&_offset=20")),
            ),
        )
        .unwrap();
        files.push(path);
        if let Some(first) = found.first() {
            let (ty, id) = first.reference.split_once('/').unwrap();
            let read = access.read("partner-a", ty, id).await.unwrap();
            let path = dir.join(format!("{person}.read.json"));
            std::fs::write(&path, &read.json).unwrap();
            files.push(path);
        }
    }
    assert!(total > 100, "only {total} resources served");
    t.cleanup().await;
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
    stdout
}

#[tokio::test]
async fn partner_api_responses_pass_the_r4_structure_validators() {
    let python = tool("IPHR_FHIR_PYTHON", "fhir-venv/bin/python");
    let dir = tempfile::tempdir().unwrap();
    let files = responses(dir.path()).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data-converter/tests/validators/validate_r4.py");
    run(
        Command::new(python).arg(script).args(&files),
        "fhir.resources 6.4.0 + fhirkit-rs",
    );
}

#[tokio::test]
async fn partner_api_responses_pass_the_jp_core_profiles() {
    let node_path = tool("IPHR_FHIR_NODE_PATH", "medplum/node_modules");
    let shared = std::env::var_os("IPHR_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let jp = shared.join("testdata/jp-core");
    assert!(
        jp.is_dir(),
        "JP Core profiles not found at {}",
        jp.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let files = responses(dir.path()).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data-converter/tests/validators/validate_jpcore.cjs");
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
        "JP_Observation_LabResult",
        "JP_Condition",
        "JP_DocumentReference",
    ] {
        assert!(
            out.contains(&format!("\"{p}\":")),
            "profile {p} not exercised:\n{out}"
        );
    }
}
