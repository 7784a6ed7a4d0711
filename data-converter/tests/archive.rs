//! 特定健診 archives (issue 4, Deliver 2): layout, ix08, streaming in name order.
// Test code: an unwrap failure is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Cursor;
use std::ops::ControlFlow;

use data_converter::archive::read_archive;

fn read_all(
    rel: &str,
) -> (
    data_converter::Result<data_converter::archive::ArchiveInfo>,
    Vec<data_converter::Result<data_converter::iphr::Record>>,
) {
    let bytes = common::read(rel);
    let mut out = Vec::new();
    let name = std::path::Path::new(rel)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let info = read_archive(Cursor::new(bytes), &name, |r| {
        out.push(r);
        ControlFlow::Continue(())
    });
    (info, out)
}

#[test]
fn archive_reads_ix08_and_all_documents() {
    let (info, recs) = read_all("archive/1399999991_06139999_202406100_1.zip");
    let info = info.unwrap();
    assert_eq!(info.root, "1399999991_06139999_202406100_1");
    assert_eq!(info.sender.as_deref(), Some("1399999991"));
    assert_eq!(info.receiver.as_deref(), Some("06139999"));
    assert_eq!(info.total_record_count, Some(2));
    assert_eq!(info.checkup_documents, 2);
    assert_eq!(info.claims, 1);
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    let recs: Vec<_> = recs.into_iter().map(Result::unwrap).collect();
    assert_eq!(recs.len(), 2);
    assert!(
        recs[0]
            .source
            .file
            .ends_with("!/1399999991_06139999_202406100_1/DATA/h13999999912024061001000001.xml")
    );
    assert_eq!(
        recs[0].source.archive.as_deref(),
        Some("1399999991_06139999_202406100_1.zip")
    );
    let values: Vec<_> = recs
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    common::assert_golden("archive.iphr.json", &serde_json::Value::Array(values));
}

#[test]
fn archive_with_2007_namespace_and_interaction_type_6() {
    let (info, recs) = read_all("archive/1399999991_06139999_202406101_1.zip");
    let info = info.unwrap();
    assert_eq!(info.interaction_type.as_deref(), Some("6"));
    assert!(info.warnings.is_empty());
    assert_eq!(recs.len(), 1);
    assert!(recs[0].is_ok());
}

#[test]
fn synthetic_archive_round_trip() {
    let buf = data_converter::synth::write_archive(Cursor::new(Vec::new()), 600)
        .unwrap()
        .into_inner();
    let mut n = 0;
    let info = read_archive(Cursor::new(buf), "synthetic.zip", |r| {
        assert!(r.is_ok(), "{:?}", r.err());
        n += 1;
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(n, 600);
    assert_eq!(info.checkup_documents, 600);
}
