//! Import (issue 6 deliverable 2; DESIGN §5): a delivered file → the data-converter → FHIR
//! resources tagged with person key and data category, ready to be stored all-or-nothing.
//! Pure: no I/O; the whole file converts or nothing does (one bad record refuses the file).

use crate::domain::consent::Category;
use crate::store::records::{NewImport, NewPersonKey, NewResource};
use data_converter::fhir::{RefStyle, record_resources};
use data_converter::iphr::Record;
use data_converter::named::FileKind;
use std::collections::BTreeMap;

/// Largest file accepted (the API and the drop directory).
pub const MAX_IMPORT_BYTES: usize = 64 * 1024 * 1024;

/// Why a file is refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The converter refused the content (its message names file, line or XPath, and item).
    #[error("{0}")]
    Convert(#[from] data_converter::Error),
    /// The file's kind is not known from its name.
    #[error(
        "{file}: unsupported file type (expected one of {}, {})",
        FileKind::SUFFIXES,
        crate::domain::privacy::EXPORT_SUFFIX
    )]
    UnsupportedFormat {
        /// File name.
        file: String,
    },
    /// An iPHR export (`*.iphr-export.json`) was refused (the message names file, entry and
    /// field).
    #[error(transparent)]
    Export(#[from] crate::domain::privacy::ExportFileError),
    /// A record carries no person identity, so it could never be linked or consented.
    #[error("{file}: {locator}: the record names no person (no insurer id, no identifier)")]
    NoPerson {
        /// File.
        file: String,
        /// Record position.
        locator: String,
    },
    /// The file holds no record.
    #[error("{file}: no records")]
    Empty {
        /// File.
        file: String,
    },
    /// A pulled file must hold exactly one person's records (the grant's person).
    #[error("{file}: names {count} persons; a file pulled with a grant must name exactly one")]
    PersonCount {
        /// File.
        file: String,
        /// Distinct person keys found.
        count: usize,
    },
    /// A pulled file holds a record of a category the person did not consent to for the source.
    #[error(
        "{file}: a record of category {category} is outside the person's consent for this source"
    )]
    NotConsented {
        /// File.
        file: String,
        /// The category.
        category: String,
    },
    /// A person key of a pulled file is already linked to another person.
    #[error("{file}: holds the record of another person")]
    OtherPerson {
        /// File.
        file: String,
    },
    /// A person key of a pulled file already holds records from other imports and is not linked
    /// to anyone: staff link it after an identity check; the pull alone does not.
    #[error(
        "{file}: person key {key} already holds records from elsewhere; link it after an identity check (link-person)"
    )]
    IdentityCheck {
        /// File.
        file: String,
        /// The key.
        key: String,
    },
    /// The file is larger than [`MAX_IMPORT_BYTES`].
    #[error("{file}: {size} bytes is more than the {max} accepted")]
    TooLarge {
        /// File.
        file: String,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// The data category of a record's resources (every source format maps to one; a new format
/// fails to compile here until it is given one).
fn category_of(record: &Record) -> Category {
    use data_converter::iphr::SourceFormat;
    use data_converter::oh::DocumentType;
    match record.source.format {
        SourceFormat::TokuteiCda | SourceFormat::HealthCheckCsv => Category::Checkup,
        SourceFormat::UkeClaims => Category::Claims,
        SourceFormat::StressCheck => Category::StressCheck,
        SourceFormat::Attendance => Category::Attendance,
        SourceFormat::OhRecords => match data_converter::oh::document_type(record) {
            Some(DocumentType::Interview) => Category::Interview,
            Some(DocumentType::Patrol) => Category::Patrol,
            Some(DocumentType::ReworkSheet) => Category::Rework,
            Some(DocumentType::AttendingOpinion) => Category::PhysicianOpinion,
            // Opinions, 就業判定, and anything newer: the OP's opinions.
            Some(DocumentType::Opinion | DocumentType::FitnessJudgement) | None => {
                Category::OhOpinion
            }
        },
    }
}

/// A record about a workplace rather than a person (職場巡視記録 without a worker).
fn is_workplace_record(record: &Record) -> bool {
    data_converter::oh::document_type(record) == Some(data_converter::oh::DocumentType::Patrol)
}

/// `system|code` of the first coding of `code`, if any.
fn main_code(json: &serde_json::Value) -> Option<String> {
    let coding = json.get("code")?.get("coding")?.get(0)?;
    Some(format!(
        "{}|{}",
        coding.get("system")?.as_str()?,
        coding.get("code")?.as_str()?
    ))
}

/// The date (`YYYY-MM-DD`) a resource is about.
fn effective_of(json: &serde_json::Value) -> Option<String> {
    [
        "effectiveDateTime",
        "issued",
        "recordedDate",
        "onsetDateTime",
        "authored",
        "date",
    ]
    .iter()
    .find_map(|k| json.get(*k).and_then(|v| v.as_str()))
    .or_else(|| {
        json.get("effectivePeriod")
            .and_then(|p| p.get("start"))
            .and_then(|v| v.as_str())
    })
    .map(|s| s.chars().take(10).collect())
}

/// A resource to store, with the columns searches use: the first FHIR category code, the main
/// code and the effective date, all read from its JSON (imports of source files and of exports
/// derive them the same way, so an exported and re-imported record is stored identically).
pub fn indexed_resource(
    resource_type: &str,
    id: &str,
    person_key: &str,
    category: &str,
    json: &serde_json::Value,
) -> NewResource {
    NewResource {
        resource_type: resource_type.to_owned(),
        id: id.to_owned(),
        person_key: person_key.to_owned(),
        category: category.to_owned(),
        fhir_category: json
            .get("category")
            .and_then(|c| c.get(0))
            .and_then(|c| c.get("coding"))
            .and_then(|c| c.get(0))
            .and_then(|c| c.get("code"))
            .and_then(|c| c.as_str())
            .map(str::to_owned),
        code: main_code(json),
        effective: effective_of(json),
        json: json.to_string(),
    }
}

/// Turns converted records into an import.
pub fn from_records(
    records: &[Record],
    content_sha256: [u8; 32],
    file_name: &str,
    format: &str,
    source_id: Option<&str>,
) -> Result<NewImport, ImportError> {
    if records.is_empty() {
        return Err(ImportError::Empty {
            file: file_name.to_owned(),
        });
    }
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    let mut resources = Vec::new();
    for rec in records {
        let Some(key) = rec.person.key() else {
            if is_workplace_record(rec) {
                // A workplace patrol names no worker: it is the workplace's record, not a
                // person's, so it has no place in a personal record.
                continue;
            }
            return Err(ImportError::NoPerson {
                file: rec.source.file.clone(),
                locator: rec.source.locator.to_string(),
            });
        };
        let category = category_of(rec);
        for r in record_resources(rec, RefStyle::Relative) {
            let is_patient = r.resource_type == "Patient";
            if is_patient {
                keys.entry(key.clone()).or_insert_with(|| r.id.clone());
            }
            resources.push(indexed_resource(
                r.resource_type,
                &r.id,
                &key,
                if is_patient { "" } else { category.as_str() },
                &r.json,
            ));
        }
    }
    Ok(NewImport {
        content_sha256,
        source_id: source_id.map(str::to_owned),
        file_name: file_name.to_owned(),
        format: format.to_owned(),
        records: i64::try_from(records.len()).unwrap_or(i64::MAX),
        person_keys: keys
            .into_iter()
            .map(|(person_key, patient_id)| NewPersonKey {
                person_key,
                patient_id,
            })
            .collect(),
        resources,
    })
}

/// Checks a converted file pulled with a person's grant (`docs/source-protocol.md` §7): it names
/// exactly one person, and every record's category is among `consented`.
pub fn check_pulled(imp: &NewImport, consented: &[Category]) -> Result<(), ImportError> {
    if imp.person_keys.len() != 1 {
        return Err(ImportError::PersonCount {
            file: imp.file_name.clone(),
            count: imp.person_keys.len(),
        });
    }
    if let Some(r) = imp.resources.iter().find(|r| {
        !r.category.is_empty()
            && r.category
                .parse::<Category>()
                .map_or(true, |c| !consented.contains(&c))
    }) {
        return Err(ImportError::NotConsented {
            file: imp.file_name.clone(),
            category: r.category.clone(),
        });
    }
    Ok(())
}

/// Converts a delivered file, by its name: a 特定健診 archive (`.zip`), one CDA document
/// (`.xml`), レセプト claims (`.uke`), stress-check answers (`.stress.csv`, `.stress.json`;
/// incomplete sheets are not imported, they are the employer's follow-up list), 勤怠
/// (`.attendance.csv`), occupational-physician records (`.oh.json`, `oh-records/1`), and a
/// worker's own export from a gateway (`.iphr-export.json`, [`crate::domain::privacy`]).
pub fn convert(
    bytes: &[u8],
    file_name: &str,
    source_id: Option<&str>,
) -> Result<NewImport, ImportError> {
    if bytes.len() > MAX_IMPORT_BYTES {
        return Err(ImportError::TooLarge {
            file: file_name.to_owned(),
            size: bytes.len(),
            max: MAX_IMPORT_BYTES,
        });
    }
    if crate::domain::privacy::is_export_name(file_name) {
        return Ok(crate::domain::privacy::import_of_export(
            bytes, file_name, source_id,
        )?);
    }
    let kind = FileKind::of(file_name).ok_or_else(|| ImportError::UnsupportedFormat {
        file: file_name.to_owned(),
    })?;
    let records = data_converter::named::read(kind, bytes, file_name)?;
    let sha = crate::domain::sha256(bytes);
    let format = kind.tag();
    from_records(&records, sha, file_name, format, source_id)
}
