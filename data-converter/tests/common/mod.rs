//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// `shared/testdata/<rel>` (the `shared/` beside the checkout, or `$IPHR_SHARED_DIR`); panics
/// when it is missing.
pub fn shared_testdata(rel: &str) -> PathBuf {
    let shared = std::env::var_os("IPHR_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let p = shared.join("testdata").join(rel);
    assert!(
        p.exists(),
        "{} not found (set IPHR_SHARED_DIR to the shared/ directory)",
        p.display()
    );
    p
}

/// The 1-based line of the first `needle` in `text`.
pub fn line_of(text: &str, needle: &str) -> u64 {
    text[..text.find(needle).unwrap()].matches('\n').count() as u64 + 1
}

/// Reads a fixture.
pub fn read(rel: &str) -> Vec<u8> {
    std::fs::read(fixture(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Compares `actual` with `tests/golden/<name>` as JSON values (key order and whitespace do not
/// matter). With `UPDATE_GOLDEN=1` the golden file is (re)written instead.
pub fn assert_golden(name: &str, actual: &serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let mut s = serde_json::to_string_pretty(actual).unwrap();
        s.push('\n');
        std::fs::write(&path, s).unwrap();
        return;
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("golden {name} missing ({e}); run with UPDATE_GOLDEN=1"));
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    if &expected != actual {
        let a = serde_json::to_string_pretty(actual).unwrap();
        panic!("{name} differs from golden:\n{a}");
    }
}
