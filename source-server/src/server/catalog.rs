//! The files of one person (`<data_dir>/<pseudonym>/`) and their categories (protocol §5).
//! Names starting with `.` are files still being written and are skipped.

use sha2::{Digest, Sha256};
use std::path::Path;

/// A file found in a person's directory.
#[derive(Debug, Clone)]
pub struct Found {
    /// File name.
    pub name: String,
    /// SHA-256, hex.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    /// Categories (empty: a format this source does not know); `None` for a file `known`
    /// already (journaled: its categories were read then).
    pub categories: Option<Vec<String>>,
}

/// Reads every regular file of `dir` (absent directory: none), in name order; classifies only
/// the files `known(name, sha256)` does not know.
pub fn scan(dir: &Path, known: impl Fn(&str, &str) -> bool) -> std::io::Result<Vec<Found>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    let mut found = Vec::with_capacity(names.len());
    for name in names {
        let bytes = std::fs::read(dir.join(&name))?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        found.push(Found {
            categories: (!known(&name, &sha256)).then(|| categories_of(&name, &bytes)),
            sha256,
            size: bytes.len() as u64,
            name,
        });
    }
    Ok(found)
}

/// The categories of a file: its format from its name, as the gateway's importer reads it
/// (`data_converter::named::FileKind`), and for OP records (`oh-records/1`) the document type
/// of each record, read by the data-converter. Empty: a format this source cannot classify
/// (the file is never listed).
pub fn categories_of(name: &str, bytes: &[u8]) -> Vec<String> {
    use data_converter::named::FileKind;
    let category = match FileKind::of(name) {
        None => return Vec::new(),
        Some(FileKind::TokuteiArchive | FileKind::TokuteiCda) => "A.checkup",
        Some(FileKind::UkeClaims) => "A.claims",
        Some(FileKind::StressCsv | FileKind::StressJson) => "A.stress-check",
        Some(FileKind::Attendance) => "B.attendance",
        Some(FileKind::OhRecords) => return oh_categories(name, bytes),
    };
    vec![category.to_owned()]
}

/// The document types of an OP export → categories, sorted, without duplicates; empty when the
/// file does not read or holds a record of no known type.
fn oh_categories(name: &str, bytes: &[u8]) -> Vec<String> {
    use data_converter::oh::{DocumentType, document_type};
    let Ok(records) =
        data_converter::named::read(data_converter::named::FileKind::OhRecords, bytes, name)
    else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for record in &records {
        let category = match document_type(record) {
            Some(DocumentType::Interview) => "C.interview",
            Some(DocumentType::Opinion | DocumentType::FitnessJudgement) => "C.oh-opinion",
            Some(DocumentType::Patrol) => "C.patrol",
            Some(DocumentType::ReworkSheet) => "C.rework",
            Some(DocumentType::AttendingOpinion) => "A.physician-opinion",
            None => return Vec::new(),
        };
        if !out.iter().any(|c| c == category) {
            out.push(category.to_owned());
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_by_name_and_by_op_record_type() {
        assert_eq!(categories_of("a.ZIP", b""), vec!["A.checkup"]);
        assert_eq!(categories_of("x.attendance.csv", b""), vec!["B.attendance"]);
        assert_eq!(categories_of("x.csv", b""), Vec::<String>::new());
        let oh = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/sources/op-cloud/W003/W003.oh.json"
        ))
        .unwrap();
        assert_eq!(
            categories_of("W003.oh.json", &oh),
            vec!["C.interview", "C.oh-opinion"]
        );
        assert!(
            categories_of(
                "w.oh.json",
                br#"{"format":"oh-records/1","records":[{"type":"gossip"}]}"#
            )
            .is_empty()
        );
    }

    #[test]
    fn scan_skips_dot_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.uke"), b"x").unwrap();
        std::fs::write(dir.path().join(".a.uke"), b"partial").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let found = scan(dir.path(), |_, _| false).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "b.uke");
        assert_eq!(found[0].size, 1);
        assert_eq!(
            found[0].categories.as_deref(),
            Some(&["A.claims".to_owned()][..])
        );
        let again = scan(dir.path(), |name, _| name == "b.uke").unwrap();
        assert_eq!(
            again[0].categories, None,
            "a known file is not classified again"
        );
        assert!(
            scan(&dir.path().join("absent"), |_, _| false)
                .unwrap()
                .is_empty()
        );
    }
}
