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
    // su08 集計情報 read and consistent with the one CLAIMS/ member.
    let su = info.summary.as_ref().unwrap();
    assert_eq!(su.total_subject_count, 1);
    assert_eq!(su.service_event_type.as_deref(), Some("1"));
    assert_eq!(su.total_cost_amount, Some(9800));
    assert_eq!(su.total_payment_amount, Some(1000));
    assert_eq!(su.total_claim_amount, Some(8800));
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

#[test]
fn su08_subject_count_must_match_claims() {
    let (info, recs) = read_all("bad/archive-su08-count-mismatch.zip");
    let e = info.unwrap_err();
    assert!(
        matches!(&e.kind, data_converter::ErrorKind::SummaryMismatch { field: "totalSubjectCount", declared, found } if declared == "2" && found.starts_with("1 CLAIMS")),
        "{e}"
    );
    assert!(
        e.location
            .file
            .ends_with("!/1399999991_06139999_202406100_1/su08_V08.xml"),
        "{e}"
    );
    assert_eq!(
        e.location.path.as_deref(),
        Some("/summary/totalSubjectCount/@value")
    );
    assert!(
        recs.is_empty(),
        "no document is converted from an inconsistent archive"
    );
}

#[test]
fn su08_service_event_type_must_match_ix08() {
    let (info, _) = read_all("bad/archive-su08-service-event-type.zip");
    let e = info.unwrap_err();
    assert!(
        matches!(&e.kind, data_converter::ErrorKind::SummaryMismatch { field: "serviceEventType", declared, .. } if declared == "4"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("su08 serviceEventType 4 but 1 in ix08_V08.xml"),
        "{e}"
    );
}

#[test]
fn claims_without_su08_are_counted_and_warned_about() {
    let (info, recs) = read_all("bad/archive-claims-without-su08.zip");
    let info = info.unwrap();
    assert_eq!(info.claims, 1);
    assert!(info.summary.is_none());
    // (the other warning: the fixture's root folder is not named like this bad-input file)
    let su08: Vec<_> = info
        .warnings
        .iter()
        .filter(|w| w.contains("CLAIMS"))
        .collect();
    assert_eq!(su08.len(), 1, "{:?}", info.warnings);
    assert!(
        su08[0].contains("1 CLAIMS/ members (決済情報) but no su08_V08.xml"),
        "{su08:?}"
    );
    assert_eq!(recs.len(), 1);
    assert!(recs[0].is_ok());
}

/// Writes an archive of the fixture documents with the `zip` crate in streaming mode (sizes in
/// data descriptors after the data, not in the local headers), the ix08 member stored
/// uncompressed, and optionally one member with a corrupted byte.
fn streamed_archive(corrupt: bool) -> Vec<u8> {
    use std::io::Write;
    let root = "1399999991_06139999_202406100_1";
    let mut z = zip::ZipWriter::new_stream(Vec::new());
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let stored = deflated.compression_method(zip::CompressionMethod::Stored);
    z.start_file(format!("{root}/ix08_V08.xml"), stored)
        .unwrap();
    let ix = data_converter::synth::ix08(2);
    z.write_all(ix.as_bytes()).unwrap();
    for (i, f) in ["cda/full.xml", "cda/minimal.xml"].iter().enumerate() {
        z.start_file(
            format!("{root}/DATA/h1399999991202406100100000{}.xml", i + 1),
            deflated,
        )
        .unwrap();
        z.write_all(&common::read(f)).unwrap();
    }
    let mut bytes = z.finish().unwrap().into_inner();
    if corrupt {
        // Flip a byte of the stored ix08 text (after its 30-byte local header and name).
        let at = 30 + root.len() + "/ix08_V08.xml".len() + 10;
        bytes[at] ^= 0x20;
    }
    bytes
}

#[test]
fn streamed_zip_with_data_descriptors_and_stored_members() {
    let mut n = 0;
    let info = read_archive(Cursor::new(streamed_archive(false)), "s.zip", |r| {
        assert!(r.is_ok(), "{:?}", r.err());
        n += 1;
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(n, 2);
    assert_eq!(info.checkup_documents, 2);
    assert_eq!(info.total_record_count, Some(2));
}

#[test]
fn corrupted_member_fails_its_checksum() {
    let err = read_archive(Cursor::new(streamed_archive(true)), "s.zip", |_| {
        ControlFlow::Continue(())
    })
    .unwrap_err();
    assert!(
        matches!(&err.kind, data_converter::ErrorKind::Zip(m) if m.contains("checksum")),
        "{err}"
    );
    assert!(err.location.file.ends_with("ix08_V08.xml"), "{err}");
}
