//! data-converter (issue 4; DESIGN §2, §5–§6): source formats into the unified iPHR, and the iPHR
//! into FHIR R4 (JP Core).
//!
//! Pure core: bytes in, [`iphr::Record`]s (or FHIR JSON) out; every error names file, line or
//! XPath, and item ([`error::Error`]).
//!
//! - [`iphr`]: the record model and its domain newtypes.
//! - [`cda`]: one 特定健診 CDA document (hc08).
//! - [`archive`]: a 特定健診 送付用ファイルアーカイブ (ZIP), streamed member by member.
//! - [`csv_import`]: institution CSVs described by a TOML mapping.
//! - [`judgement`]: 判定値 flags, 判定区分, メタボ判定, 階層化 from tables shipped as data.
//! - [`fhir`]: FHIR R4 JP Core export (Bundle, NDJSON).
//! - [`named`]: delivered files by name, read whole (the gateway's imports).
//! - [`fuzzing`]: entry points of the fuzz targets and the random-input harness.
//! - [`attendance`]: 勤怠 daily CSV → monthly overtime, flags and the interview list (issue 5).
//! - [`oh`]: occupational-physician records JSON, the rework sheet, and their FHIR (issue 5).
//! - [`synth`]: synthetic documents and archives for benchmarks and fuzz seeds.
//! - [`claims`]: レセプト電算 (UKE) claims → conditions and medication statements (issue 5).
//! - [`stress`]: the 57-item stress check, its scores and high-stress results (issue 5).

pub mod archive;
pub mod catalogue;
pub mod cda;
pub mod claims;
pub mod csv_import;
pub mod error;
pub mod fhir;
pub mod fuzzing;
pub mod iphr;
pub mod judgement;
pub mod named;
pub mod normalize;
pub mod stress;
pub mod synth;

// issue 5 part 2 (conv3): attendance and occupational-health records.
pub mod attendance;
pub mod oh;

pub use error::{Error, ErrorKind, Location, Result};
