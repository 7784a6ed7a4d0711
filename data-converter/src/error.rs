//! Errors of the converter (issue 4, Acceptance "Bad input"): every error names the file, the line
//! (CSV, XML) or XPath (XML), and the item when one is concerned.

use std::fmt;

/// Where in the input an error is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// File name as given (archive members as `archive.zip!/DATA/h….xml`).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<u64>,
    /// XPath of the element (XML) or column name (CSV).
    pub path: Option<String>,
    /// The item concerned (特定健診項目コード, CSV column → item code).
    pub item: Option<String>,
}

impl Location {
    /// A location naming only the file.
    pub fn file(file: &str) -> Self {
        Self {
            file: file.to_owned(),
            ..Self::default()
        }
    }
    /// Sets the line.
    pub fn at_line(mut self, line: u64) -> Self {
        self.line = Some(line);
        self
    }
    /// Sets the XPath or column.
    pub fn at_path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }
    /// Sets the item.
    pub fn with_item(mut self, item: impl Into<String>) -> Self {
        self.item = Some(item.into());
        self
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(p) = &self.path {
            write!(f, ": at {p}")?;
        }
        if let Some(i) = &self.item {
            write!(f, ": item {i}")?;
        }
        Ok(())
    }
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ErrorKind {
    /// The ZIP archive is truncated or corrupt.
    #[error("broken ZIP archive: {0}")]
    Zip(String),
    /// The archive lacks a required member or has one it should not.
    #[error("archive layout: {0}")]
    ArchiveLayout(String),
    /// The bytes are not well-formed XML.
    #[error("not well-formed XML: {0}")]
    Xml(String),
    /// The root element is in another namespace than the format requires.
    #[error("wrong namespace {found:?}, expected {expected:?}")]
    WrongNamespace {
        /// Namespace found (empty = none).
        found: String,
        /// Namespace required.
        expected: &'static str,
    },
    /// The root element is not the one of the format.
    #[error("root element <{found}> is not <{expected}>")]
    WrongRoot {
        /// Root element found.
        found: String,
        /// Root element required.
        expected: &'static str,
    },
    /// A required element or field is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A field does not parse as its domain type.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// Field name.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The item code is not in the item catalogue.
    #[error("unknown item code {0}")]
    UnknownItemCode(String),
    /// The unit differs from the item's unit in the catalogue.
    #[error("unit {found:?} does not match the item's unit {expected:?}")]
    UnitMismatch {
        /// Unit of the item in the catalogue.
        expected: String,
        /// Unit found.
        found: String,
    },
    /// A quantity lies outside the item's input range without being marked 入力範囲外.
    #[error("value {value} outside the input range {low}–{high}")]
    ValueOutOfRange {
        /// The value.
        value: String,
        /// Lower input limit.
        low: String,
        /// Upper input limit.
        high: String,
    },
    /// The value's data type is not the item's (e.g. text for a quantity item).
    #[error("value type {found} where the item requires {expected}")]
    ValueType {
        /// Type the catalogue requires.
        expected: &'static str,
        /// Type found.
        found: String,
    },
    /// A value that cannot be read (a non-number quantity, a code not in the result table).
    #[error("invalid value {value:?}: {reason}")]
    InvalidValue {
        /// The value as written.
        value: String,
        /// Why.
        reason: String,
    },
    /// The same person (and exam date) appears twice in one file or archive.
    #[error("duplicated person {key} (first at {first})")]
    DuplicatePerson {
        /// The person key (member id).
        key: String,
        /// Where the person was first seen.
        first: String,
    },
    /// The archive's 交換用基本情報 record count does not match its DATA members.
    #[error("ix08 totalRecordCount {declared} but {found} documents")]
    CountMismatch {
        /// Declared count.
        declared: u64,
        /// Documents found.
        found: u64,
    },
    /// The archive's 集計情報 (su08) disagrees with what the archive holds.
    #[error("su08 {field} {declared} but {found}")]
    SummaryMismatch {
        /// The su08 element.
        field: &'static str,
        /// What su08 declares.
        declared: String,
        /// What the archive holds.
        found: String,
    },
    /// The bytes are not valid in the file's encoding.
    #[error("not valid {0}")]
    Encoding(&'static str),
    /// A column named by the mapping is not in the CSV header.
    #[error("missing column {0:?}")]
    MissingColumn(String),
    /// A CSV row cannot be read (wrong field count, broken quoting).
    #[error("bad row: {0}")]
    BadRow(String),
    /// The mapping file is invalid.
    #[error("invalid mapping: {0}")]
    Mapping(String),
    // --- issue 5, claims and stress check (conv2) ---
    /// A UKE record whose record type (field 0) is not one of the 医科 record types.
    #[error("unknown record type {0:?}")]
    UnknownRecordType(String),
    /// A UKE record with fewer fields than its type requires.
    #[error("{record} record has {found} fields, needs at least {expected}")]
    ShortRecord {
        /// Record type.
        record: String,
        /// Fields required.
        expected: usize,
        /// Fields found.
        found: usize,
    },
    /// A UKE record in a place the file structure does not allow (e.g. SY before any RE).
    #[error("record out of order: {0}")]
    RecordOrder(String),
    // --- issue 5 part 2 (conv3) ---
    /// An occupational-health JSON document violates its schema (`docs/oh-records.md`); the
    /// location's path is the JSON pointer.
    #[error("schema violation: {0}")]
    Schema(String),
    /// The bytes are not well-formed JSON (the location has the line).
    #[error("not well-formed JSON: {0}")]
    Json(String),
}

/// A conversion error with its location.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{location}: {kind}")]
pub struct Error {
    /// Where.
    pub location: Box<Location>,
    /// What.
    pub kind: ErrorKind,
}

impl Error {
    /// Builds an error.
    pub fn new(location: Location, kind: ErrorKind) -> Self {
        Self {
            location: Box::new(location),
            kind,
        }
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
