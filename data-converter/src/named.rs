//! Files by name (DESIGN §2): the kinds of delivered file the converter reads, told apart by the
//! file name, and one entry point that reads a whole file into records. For callers that receive
//! bytes with a name (the gateway's imports); the CLI has its own streaming paths.

use crate::Result;
use crate::iphr::Record;

/// A kind of delivered file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// 特定健診 送付用ファイルアーカイブ (`.zip`).
    TokuteiArchive,
    /// One 特定健診 CDA document (`.xml`).
    TokuteiCda,
    /// レセプト電算 claims (`.uke`).
    UkeClaims,
    /// Stress-check answers, one row per worker (`.stress.csv`).
    StressCsv,
    /// Stress-check answers as JSON (`.stress.json`).
    StressJson,
    /// 勤怠 daily records (`.attendance.csv`).
    Attendance,
    /// Occupational-physician records, `oh-records/1` (`.oh.json`).
    OhRecords,
}

impl FileKind {
    /// The kind a file name says, if any (case-insensitive suffixes).
    pub fn of(file_name: &str) -> Option<FileKind> {
        let lower = file_name.to_ascii_lowercase();
        let kinds = [
            (".stress.csv", FileKind::StressCsv),
            (".stress.json", FileKind::StressJson),
            (".attendance.csv", FileKind::Attendance),
            (".oh.json", FileKind::OhRecords),
            (".zip", FileKind::TokuteiArchive),
            (".xml", FileKind::TokuteiCda),
            (".uke", FileKind::UkeClaims),
        ];
        kinds
            .into_iter()
            .find(|(suffix, _)| lower.ends_with(suffix))
            .map(|(_, kind)| kind)
    }

    /// A short stable tag (`tokutei-archive`, `uke-claims` …).
    pub fn tag(self) -> &'static str {
        match self {
            FileKind::TokuteiArchive => "tokutei-archive",
            FileKind::TokuteiCda => "tokutei-cda",
            FileKind::UkeClaims => "uke-claims",
            FileKind::StressCsv | FileKind::StressJson => "stress-check",
            FileKind::Attendance => "attendance",
            FileKind::OhRecords => "oh-records",
        }
    }

    /// The suffixes understood, for messages.
    pub const SUFFIXES: &'static str =
        ".zip, .xml, .uke, .stress.csv, .stress.json, .attendance.csv, .oh.json";
}

/// Reads a whole file of `kind` into records, all-or-nothing: the first error is returned and no
/// record. Stress sheets with double or missing answers are not records (they are the
/// employer's follow-up list); rework sheets need their attendance counts in the file.
pub fn read(kind: FileKind, bytes: &[u8], file_name: &str) -> Result<Vec<Record>> {
    Ok(match kind {
        FileKind::TokuteiArchive => {
            let mut records = Vec::new();
            let mut first_error = None;
            crate::archive::read_archive(std::io::Cursor::new(bytes), file_name, |r| match r {
                Ok(rec) => {
                    records.push(rec);
                    std::ops::ControlFlow::Continue(())
                }
                Err(e) => {
                    first_error = Some(e);
                    std::ops::ControlFlow::Break(())
                }
            })?;
            if let Some(e) = first_error {
                return Err(e);
            }
            records
        }
        FileKind::TokuteiCda => vec![crate::cda::read_cda(bytes, file_name)?],
        FileKind::UkeClaims => crate::claims::read_uke(bytes, file_name, None)?.records,
        FileKind::StressCsv => crate::stress::read_stress_csv(bytes, file_name)?
            .records()
            .cloned()
            .collect(),
        FileKind::StressJson => crate::stress::read_stress_json(bytes, file_name)?
            .records()
            .cloned()
            .collect(),
        FileKind::Attendance => {
            crate::attendance::records(&crate::attendance::read_attendance(bytes, file_name)?)
        }
        FileKind::OhRecords => crate::oh::read_oh(bytes, file_name, None)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_name() {
        assert_eq!(FileKind::of("A.ZIP"), Some(FileKind::TokuteiArchive));
        assert_eq!(FileKind::of("w.stress.csv"), Some(FileKind::StressCsv));
        assert_eq!(
            FileKind::of("feb.attendance.csv"),
            Some(FileKind::Attendance)
        );
        assert_eq!(FileKind::of("export.oh.json"), Some(FileKind::OhRecords));
        assert_eq!(FileKind::of("plain.csv"), None);
        assert_eq!(FileKind::of("plain.json"), None);
    }
}
