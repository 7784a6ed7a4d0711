//! The CLI (issue 4, Deliver 6): formats, summary, exit status, all-or-nothing and --keep-going.
// Test code: an unwrap failure is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

fn cli(args: &[&str]) -> (i32, String, Vec<String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_data-converter"))
        .args(args)
        .arg("-o")
        .arg(dir.path())
        .output()
        .unwrap();
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        files,
        dir,
    )
}

fn fx(rel: &str) -> String {
    common::fixture(rel).display().to_string()
}

#[test]
fn converts_archive_cda_and_csv_in_one_run() {
    let mapping = fx("csv/clinic-a.toml");
    let (code, err, files, dir) = cli(&[
        &fx("archive/1399999991_06139999_202406100_1.zip"),
        &fx("cda/minimal.xml"),
        &fx("csv/clinic-a.csv"),
        "--mapping",
        &mapping,
        "--to",
        "ndjson",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("summary: 3 of 3 files, 6 documents, 5 persons"),
        "{err}"
    );
    assert!(err.contains("0 warnings, 0 errors"), "{err}");
    assert_eq!(files.len(), 3, "{files:?}");
    let nd = std::fs::read_to_string(
        dir.path()
            .join("1399999991_06139999_202406100_1.zip.fhir.ndjson"),
    )
    .unwrap();
    for line in nd.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["resourceType"].is_string());
    }
}

#[test]
fn iphr_and_bundle_outputs() {
    let (code, err, files, dir) = cli(&[&fx("cda/full.xml"), "--to", "bundle"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(files, vec!["full.xml.bundle.json"]);
    let b: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(&files[0])).unwrap()).unwrap();
    let rec =
        data_converter::cda::read_cda(&common::read("cda/full.xml"), &fx("cda/full.xml")).unwrap();
    assert_eq!(
        b,
        data_converter::fhir::bundle(std::slice::from_ref(&rec)),
        "streamed Bundle equals the library's"
    );
    let (code, _, files, dir) = cli(&[&fx("cda/full.xml")]);
    assert_eq!(code, 0);
    let line = std::fs::read_to_string(dir.path().join(&files[0])).unwrap();
    let back: data_converter::iphr::Record = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(back, rec, "iPHR JSON round-trips");
}

#[test]
fn bad_archive_writes_nothing_and_fails() {
    let (code, err, files, _d) = cli(&[&fx("bad/archive-bad-document.zip")]);
    assert_eq!(code, 1);
    assert!(files.is_empty(), "all-or-nothing: {files:?}");
    assert!(err.contains("archive-bad-document.zip!/1399999991_06139999_202406100_1/DATA/h13999999912024061001000002.xml:77"), "{err}");
    assert!(err.contains("item 9Z999000000000001"), "{err}");
}

#[test]
fn keep_going_converts_the_rest_and_still_fails() {
    let (code, err, files, dir) = cli(&[
        &fx("bad/archive-bad-document.zip"),
        &fx("bad/not-xml.xml"),
        &fx("cda/minimal.xml"),
        "--keep-going",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("2 errors"), "{err}");
    assert!(err.contains("(kept going)"), "{err}");
    let arch =
        std::fs::read_to_string(dir.path().join("archive-bad-document.zip.iphr.jsonl")).unwrap();
    assert_eq!(arch.lines().count(), 1, "the good document of the archive");
    assert!(files.contains(&"minimal.xml.iphr.jsonl".to_owned()));
}

#[test]
fn truncated_zip_fails_with_file_name() {
    let (code, err, files, _d) = cli(&[&fx("bad/archive-truncated.zip")]);
    assert_eq!(code, 1);
    assert!(files.is_empty());
    assert!(
        err.contains("archive-truncated.zip: broken ZIP archive"),
        "{err}"
    );
}
