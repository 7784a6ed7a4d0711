//! Bad input (issue 4, Acceptance): every error names file, line (or XPath) and item; no panic.
// Test code: an unwrap failure is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Cursor;
use std::ops::ControlFlow;

use data_converter::archive::read_archive;
use data_converter::cda::read_cda;
use data_converter::csv_import::{Mapping, read_csv};
use data_converter::{Error, ErrorKind};

fn cda_err(rel: &str) -> Error {
    read_cda(&common::read(rel), rel).expect_err(rel)
}

fn mapping() -> Mapping {
    Mapping::from_toml(
        &String::from_utf8(common::read("csv/clinic-a.toml")).unwrap(),
        "clinic-a.toml",
    )
    .unwrap()
}

fn csv_errs(rel: &str) -> Vec<Error> {
    match read_csv(&common::read(rel), rel, &mapping()) {
        Ok(o) => o.errors,
        Err(e) => vec![e],
    }
}

fn archive_errs(rel: &str) -> Vec<Error> {
    let mut errs = Vec::new();
    let r = read_archive(Cursor::new(common::read(rel)), rel, |r| {
        if let Err(e) = r {
            errs.push(e);
        }
        ControlFlow::Continue(())
    });
    if let Err(e) = r {
        errs.push(e);
    }
    errs
}

#[track_caller]
fn assert_loc(
    e: &Error,
    file: &str,
    line: Option<u64>,
    path_has: Option<&str>,
    item: Option<&str>,
) {
    let s = e.to_string();
    assert!(e.location.file.contains(file), "file in {s}");
    assert_eq!(e.location.line, line, "line in {s}");
    if let Some(p) = path_has {
        assert!(
            e.location.path.as_deref().is_some_and(|x| x.contains(p)),
            "path {p:?} in {s}"
        );
    }
    assert_eq!(e.location.item.as_deref(), item, "item in {s}");
    // the rendered message carries all of them
    assert!(s.contains(file));
    if let Some(l) = line {
        assert!(s.contains(&format!(":{l}")), "{s}");
    }
    if let Some(i) = item {
        assert!(s.contains(i), "{s}");
    }
}

#[test]
fn non_xml() {
    let e = cda_err("bad/not-xml.xml");
    assert!(matches!(e.kind, ErrorKind::Xml(_)), "{e}");
    assert_loc(&e, "not-xml.xml", Some(1), None, None);
}

#[test]
fn truncated_xml() {
    let e = cda_err("bad/truncated.xml");
    assert!(matches!(e.kind, ErrorKind::Xml(_)), "{e}");
    assert!(e.location.line.unwrap() > 20);
    assert!(
        e.location
            .path
            .as_deref()
            .unwrap()
            .starts_with("/ClinicalDocument/"),
        "{e}"
    );
}

#[test]
fn wrong_namespace() {
    let e = cda_err("bad/wrong-namespace.xml");
    assert!(
        matches!(&e.kind, ErrorKind::WrongNamespace { found, .. } if found == "urn:hl7-org:v2"),
        "{e}"
    );
    assert_loc(
        &e,
        "wrong-namespace.xml",
        Some(3),
        Some("/ClinicalDocument"),
        None,
    );
}

#[test]
fn not_utf8() {
    let e = cda_err("bad/not-utf8.xml");
    assert!(matches!(e.kind, ErrorKind::Encoding(_)), "{e}");
    assert_eq!(e.location.line, Some(17));
}

#[test]
fn unknown_item_code() {
    let e = cda_err("bad/unknown-item.xml");
    assert!(
        matches!(&e.kind, ErrorKind::UnknownItemCode(c) if c == "9Z999000000000001"),
        "{e}"
    );
    assert_loc(
        &e,
        "unknown-item.xml",
        Some(77),
        Some("/section/entry[5]/observation"),
        Some("9Z999000000000001"),
    );
}

#[test]
fn unit_mismatch() {
    let e = cda_err("bad/unit-mismatch.xml");
    assert!(
        matches!(&e.kind, ErrorKind::UnitMismatch { found, .. } if found == "[lb_av]"),
        "{e}"
    );
    assert_loc(
        &e,
        "unit-mismatch.xml",
        Some(67),
        Some("/section/entry[2]/observation/value"),
        Some("9N006000000000001"),
    );
}

#[test]
fn value_out_of_range() {
    let e = cda_err("bad/value-out-of-range.xml");
    assert!(
        matches!(&e.kind, ErrorKind::ValueOutOfRange { value, .. } if value == "300"),
        "{e}"
    );
    assert_loc(
        &e,
        "value-out-of-range.xml",
        Some(67),
        Some("entry[2]/observation/value"),
        Some("9N006000000000001"),
    );
}

#[test]
fn truncated_zip() {
    let errs = archive_errs("bad/archive-truncated.zip");
    assert_eq!(errs.len(), 1);
    assert!(matches!(errs[0].kind, ErrorKind::Zip(_)), "{}", errs[0]);
    assert!(
        errs[0]
            .to_string()
            .starts_with("bad/archive-truncated.zip: ")
    );
}

#[test]
fn archive_missing_ix08_and_count_mismatch() {
    let errs = archive_errs("bad/archive-missing-ix08.zip");
    assert!(
        matches!(errs[0].kind, ErrorKind::ArchiveLayout(_)),
        "{}",
        errs[0]
    );
    let errs = archive_errs("bad/archive-count-mismatch.zip");
    assert!(
        matches!(
            errs[0].kind,
            ErrorKind::CountMismatch {
                declared: 3,
                found: 2
            }
        ),
        "{}",
        errs[0]
    );
    assert_loc(
        &errs[0],
        "ix08_V08.xml",
        None,
        Some("totalRecordCount"),
        None,
    );
}

#[test]
fn archive_duplicated_person() {
    let errs = archive_errs("bad/archive-duplicate-person.zip");
    assert_eq!(errs.len(), 1);
    let e = &errs[0];
    assert!(
        matches!(&e.kind, ErrorKind::DuplicatePerson { key, first } if key == "06139999:テスト記号:67890:01" && first.ends_with("h13999999912024061001000001.xml")),
        "{e}"
    );
    assert_loc(
        e,
        "DATA/h13999999912024061001000002.xml",
        None,
        Some("recordTarget/patientRole/id"),
        None,
    );
}

#[test]
fn archive_bad_member_names_member_line_xpath_item() {
    let errs = archive_errs("bad/archive-bad-document.zip");
    assert_eq!(errs.len(), 1);
    assert_loc(
        &errs[0],
        "archive-bad-document.zip!/1399999991_06139999_202406100_1/DATA/h13999999912024061001000002.xml",
        Some(77),
        Some("entry[5]/observation"),
        Some("9Z999000000000001"),
    );
}

#[test]
fn csv_missing_column() {
    let errs = csv_errs("bad/csv-missing-column.csv");
    assert_eq!(errs.len(), 1);
    assert!(
        matches!(&errs[0].kind, ErrorKind::MissingColumn(c) if c == "HbA1c"),
        "{}",
        errs[0]
    );
    assert_loc(
        &errs[0],
        "csv-missing-column.csv",
        Some(1),
        Some("HbA1c"),
        Some("3D046000001906202"),
    );
}

#[test]
fn csv_bad_row() {
    let errs = csv_errs("bad/csv-bad-row.csv");
    assert_eq!(errs.len(), 1);
    assert!(matches!(errs[0].kind, ErrorKind::BadRow(_)), "{}", errs[0]);
    assert_loc(&errs[0], "csv-bad-row.csv", Some(3), None, None);
}

#[test]
fn csv_bad_value_unit_range_code() {
    for (file, height_or_weight) in [
        ("bad/csv-bad-value.csv", "9N001000000000001"),
        ("bad/csv-unit-mismatch.csv", "9N006000000000001"),
        ("bad/csv-out-of-range.csv", "9N006000000000001"),
        ("bad/csv-unknown-code.csv", "1A010000000191111"),
    ] {
        let errs = csv_errs(file);
        assert_eq!(errs.len(), 1, "{file}: {errs:?}");
        assert_loc(
            &errs[0],
            file,
            Some(3),
            Some("column"),
            Some(height_or_weight),
        );
    }
    assert!(matches!(
        csv_errs("bad/csv-unit-mismatch.csv")[0].kind,
        ErrorKind::UnitMismatch { .. }
    ));
    assert!(matches!(
        csv_errs("bad/csv-out-of-range.csv")[0].kind,
        ErrorKind::ValueOutOfRange { .. }
    ));
    assert!(matches!(
        csv_errs("bad/csv-bad-value.csv")[0].kind,
        ErrorKind::InvalidValue { .. }
    ));
}

#[test]
fn csv_duplicate_person() {
    let errs = csv_errs("bad/csv-duplicate-person.csv");
    assert_eq!(errs.len(), 1);
    assert!(
        matches!(&errs[0].kind, ErrorKind::DuplicatePerson { first, .. } if first.ends_with(":2")),
        "{}",
        errs[0]
    );
    assert_loc(&errs[0], "csv-duplicate-person.csv", Some(4), None, None);
}

#[test]
fn mapping_unknown_item_and_unit_mismatch() {
    let text = String::from_utf8(common::read("bad/mapping-unknown-item.toml")).unwrap();
    let e = Mapping::from_toml(&text, "mapping-unknown-item.toml").unwrap_err();
    assert!(matches!(e.kind, ErrorKind::UnknownItemCode(_)), "{e}");
    assert_loc(
        &e,
        "mapping-unknown-item.toml",
        Some(71),
        Some("HbA1c"),
        Some("3D046000009999999"),
    );
    let text = String::from_utf8(common::read("bad/mapping-unit-mismatch.toml")).unwrap();
    let e = Mapping::from_toml(&text, "mapping-unit-mismatch.toml").unwrap_err();
    assert!(
        matches!(&e.kind, ErrorKind::UnitMismatch { found, .. } if found == "mmol/L"),
        "{e}"
    );
    assert_loc(
        &e,
        "mapping-unit-mismatch.toml",
        Some(67),
        Some("空腹時血糖"),
        Some("3D010000002227101"),
    );
}

#[test]
fn a_bad_reference_range_bound_names_its_line_and_xpath() {
    let text = String::from_utf8(common::read("cda/full.xml")).unwrap();
    let good = r#"<high value="129" unit="mm[Hg]"/>"#;
    let line = common::line_of(&text, good);
    let bad = text.replacen(good, r#"<high value="12x9" unit="mm[Hg]"/>"#, 1);
    let e = read_cda(bad.as_bytes(), "range.xml").unwrap_err();
    assert!(
        matches!(&e.kind, ErrorKind::InvalidValue { value, .. } if value == "12x9"),
        "{e}"
    );
    assert_loc(
        &e,
        "range.xml",
        Some(line),
        Some("/observation/referenceRange/observationRange/value/high"),
        None,
    );
}

/// The reader skips whitespace between tags without an event (outside captured text); an error
/// still names the line of the markup or text it is about, not of the whitespace before it.
#[test]
fn errors_after_indentation_name_the_line_of_the_markup_or_text() {
    let text = String::from_utf8(common::read("cda/minimal.xml")).unwrap();
    let err = |doc: &str| read_cda(doc.as_bytes(), "indent.xml").unwrap_err();

    // Text after the root element, two lines down and indented.
    let doc = format!("{}\n\n    stray text\n", text.trim_end());
    let e = err(&doc);
    assert!(
        e.to_string().contains("text outside the root element"),
        "{e}"
    );
    assert_eq!(e.location.path, None, "no XPath outside the root: {e}");
    assert_loc(
        &e,
        "indent.xml",
        Some(common::line_of(&doc, "stray")),
        None,
        None,
    );

    // A DOCTYPE on its own line after the declaration.
    let decl_end = text.find("?>").unwrap() + 2;
    let doc = format!("{}\n\n<!DOCTYPE x>{}", &text[..decl_end], &text[decl_end..]);
    let e = err(&doc);
    assert!(e.to_string().contains("DOCTYPE"), "{e}");
    assert_loc(
        &e,
        "indent.xml",
        Some(common::line_of(&doc, "<!DOCTYPE")),
        None,
        None,
    );

    // An undefined entity in text the reader does not keep, after a newline and indentation.
    let at = text.find("<recordTarget").unwrap();
    let doc = format!("{}\n      &undefined;\n      {}", &text[..at], &text[at..]);
    let e = err(&doc);
    assert!(
        e.to_string().contains("undefined entity &undefined;"),
        "{e}"
    );
    assert_loc(
        &e,
        "indent.xml",
        Some(common::line_of(&doc, "&undefined;")),
        None,
        None,
    );
}
