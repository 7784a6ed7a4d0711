//! The CDA fixtures and the synthetic documents (both layouts, the benchmark's input) against the
//! official 特定健診 schema `hc08_V08.xsd` (`shared/testdata/tokutei-xsd`), by libxml2's `xmllint`
//! (Debian `libxml2-utils`, installed by `scripts/test-setup.d/15-xmllint.sh`).
// Test code: an unwrap failure is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use data_converter::synth::{Layout, cda_document_in};

/// `xmllint --noout --schema hc08_V08.xsd FILES…`: its output when it fails.
fn xmllint(files: &[PathBuf]) -> Result<(), String> {
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(common::shared_testdata("tokutei-xsd/XSD/hc08_V08.xsd"))
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "xmllint: {e}; install Debian's libxml2-utils (scripts/test-setup.d/15-xmllint.sh)"
            )
        });
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn the_cda_fixtures_follow_the_official_schema() {
    let files: Vec<PathBuf> = [
        "full.xml",
        "minimal.xml",
        "out-of-range-pre2013.xml",
        "prefixed-namespace.xml",
    ]
    .iter()
    .map(|f| common::fixture(&format!("cda/{f}")))
    .collect();
    xmllint(&files).unwrap();
}

#[test]
fn synthetic_documents_of_both_layouts_follow_the_official_schema() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (layout, name) in [(Layout::Compact, "compact"), (Layout::Orca, "orca")] {
        for i in [0, 1, 2, 999] {
            let path = dir.path().join(format!("{name}-{i}.xml"));
            std::fs::write(&path, cda_document_in(i, layout)).unwrap();
            files.push(path);
        }
    }
    xmllint(&files).unwrap();
}

#[test]
fn the_schema_check_refuses_a_document_it_should() {
    // An observation without its classCode: the schema requires it, so a check that lets
    // everything through is caught here.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.xml");
    let doc = cda_document_in(5, Layout::Orca).replacen(" classCode=\"OBS\"", "", 1);
    std::fs::write(&path, doc).unwrap();
    let err = xmllint(std::slice::from_ref(&path)).unwrap_err();
    assert!(err.contains("classCode"), "{err}");
}
