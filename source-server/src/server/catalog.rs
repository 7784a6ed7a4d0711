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
    /// Categories (empty: a format this source does not know).
    pub categories: Vec<String>,
}

/// Reads every regular file of `dir` (absent directory: none), in name order.
pub fn scan(dir: &Path) -> std::io::Result<Vec<Found>> {
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
        found.push(Found {
            categories: categories_of(&name, &bytes),
            sha256: hex::encode(Sha256::digest(&bytes)),
            size: bytes.len() as u64,
            name,
        });
    }
    Ok(found)
}

/// The categories of a file: by name, and for OP records (`oh-records/1`) by the record types.
pub fn categories_of(name: &str, bytes: &[u8]) -> Vec<String> {
    let lower = name.to_ascii_lowercase();
    let by_suffix = [
        (".stress.csv", "A.stress-check"),
        (".stress.json", "A.stress-check"),
        (".attendance.csv", "B.attendance"),
        (".zip", "A.checkup"),
        (".xml", "A.checkup"),
        (".uke", "A.claims"),
    ];
    if let Some((_, category)) = by_suffix.iter().find(|(s, _)| lower.ends_with(s)) {
        return vec![(*category).to_owned()];
    }
    if lower.ends_with(".oh.json") {
        return oh_categories(bytes);
    }
    Vec::new()
}

/// `records[].type` of an OP export → categories, sorted, without duplicates.
fn oh_categories(bytes: &[u8]) -> Vec<String> {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Vec::new();
    };
    let Some(records) = doc.get("records").and_then(|r| r.as_array()) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for record in records {
        let category = match record.get("type").and_then(|t| t.as_str()) {
            Some("interview") => "C.interview",
            Some("opinion" | "fitness_judgement") => "C.oh-opinion",
            Some("patrol") => "C.patrol",
            Some("rework_sheet") => "C.rework",
            Some("attending_opinion") => "A.physician-opinion",
            // A type this source cannot classify: the file cannot be matched to a scope.
            _ => return Vec::new(),
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
        let oh = br#"{"format":"oh-records/1","records":[{"type":"opinion"},{"type":"interview"},{"type":"fitness_judgement"}]}"#;
        assert_eq!(
            categories_of("w.oh.json", oh),
            vec!["C.interview", "C.oh-opinion"]
        );
        let unknown = br#"{"records":[{"type":"interview"},{"type":"gossip"}]}"#;
        assert!(categories_of("w.oh.json", unknown).is_empty());
    }

    #[test]
    fn scan_skips_dot_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.uke"), b"x").unwrap();
        std::fs::write(dir.path().join(".a.uke"), b"partial").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let found = scan(dir.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "b.uke");
        assert_eq!(found[0].size, 1);
        assert!(scan(&dir.path().join("absent")).unwrap().is_empty());
    }
}
