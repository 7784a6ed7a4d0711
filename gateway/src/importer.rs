//! Imports on top of [`crate::domain::import`]: a file's bytes → the converter (on a blocking
//! thread) → one transaction ([`crate::store::records::import`]) → an audit entry; and the watched
//! drop directory: files put into `incoming/` are imported one by one and moved to `done/` once
//! committed, or to `failed/` with a `.error.txt` beside them. A crash between the commit and the
//! move is harmless: on restart the same bytes are found already imported (a no-op) and moved.

use crate::clock::SharedClock;
use crate::domain::consent::Category;
use crate::domain::import::{ImportError, MAX_IMPORT_BYTES, check_pulled, convert};
use crate::domain::trail::{AuditTrail, ImportEvent, TrailEvent};
use crate::store::records::{self, ImportOutcome, PersonImport};
use crate::store::{Db, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImporterError {
    /// The file was refused (its message names file, position and item); nothing was stored.
    #[error(transparent)]
    Refused(#[from] ImportError),
    /// The store failed; nothing was stored.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored, but the audit entry could not be written.
    #[error("imported, but the audit trail is unavailable: {0}")]
    Audit(String),
    /// Reading or moving a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The caller is not a registered source service (partners and unknown clients may not import).
    #[error("{0} is not a registered source")]
    NotASource(String),
    /// The converter thread panicked or was cancelled.
    #[error("converter task failed: {0}")]
    Task(String),
}

/// Imports files into one database.
#[derive(Clone)]
pub struct Importer {
    db: Db,
    trail: Arc<dyn AuditTrail>,
    clock: SharedClock,
}

impl Importer {
    /// An importer writing to `db` and auditing to `trail`.
    pub fn new(db: Db, trail: Arc<dyn AuditTrail>, clock: SharedClock) -> Self {
        Importer { db, trail, clock }
    }

    /// Imports one file's bytes, delivered by `actor` (a source id, `drop-dir`, `cli`).
    pub async fn import_bytes(
        &self,
        bytes: Vec<u8>,
        file_name: &str,
        actor: &str,
        source_id: Option<&str>,
    ) -> Result<ImportOutcome, ImporterError> {
        let name = file_name.to_owned();
        let source = source_id.map(str::to_owned);
        let converted =
            tokio::task::spawn_blocking(move || convert(&bytes, &name, source.as_deref()))
                .await
                .map_err(|e| ImporterError::Task(e.to_string()))??;
        let now = self.clock.now_ms();
        let outcome = records::import(&self.db, &converted, now).await?;
        let (import_id, resources, duplicate) = match outcome {
            ImportOutcome::Imported { id, resources } => (id, resources, false),
            ImportOutcome::AlreadyImported { id } => (id, 0, true),
        };
        self.trail
            .record(TrailEvent::Import(ImportEvent {
                at_ms: now,
                actor: actor.to_owned(),
                file: file_name.to_owned(),
                import_id,
                resources,
                duplicate,
                person_id: None,
            }))
            .await
            .map_err(ImporterError::Audit)?;
        Ok(outcome)
    }
}

impl Importer {
    /// Imports a file pulled from `source_id` with `person_id`'s grant
    /// (`docs/source-protocol.md` §7): converted whole, checked ([`check_pulled`]: one person,
    /// every record within `consented`), stored in one transaction that also links the file's
    /// person key to the person (refused whole when the key belongs to someone else). The import
    /// is audited like any other, with the person.
    pub async fn import_pulled(
        &self,
        bytes: Vec<u8>,
        file_name: &str,
        source_id: &str,
        person_id: &str,
        consented: &[Category],
    ) -> Result<ImportOutcome, ImporterError> {
        let name = file_name.to_owned();
        let source = source_id.to_owned();
        let converted = tokio::task::spawn_blocking(move || convert(&bytes, &name, Some(&source)))
            .await
            .map_err(|e| ImporterError::Task(e.to_string()))??;
        check_pulled(&converted, consented)?;
        let now = self.clock.now_ms();
        let outcome = match records::import_for_person(&self.db, &converted, person_id, now).await?
        {
            PersonImport::Done(outcome) => outcome,
            PersonImport::KeyOfAnotherPerson(_) => {
                return Err(ImporterError::Refused(ImportError::OtherPerson {
                    file: file_name.to_owned(),
                }));
            }
            PersonImport::KeyNeedsIdentityCheck(key) => {
                return Err(ImporterError::Refused(ImportError::IdentityCheck {
                    file: file_name.to_owned(),
                    key,
                }));
            }
        };
        let (import_id, resources, duplicate) = match outcome {
            ImportOutcome::Imported { id, resources } => (id, resources, false),
            ImportOutcome::AlreadyImported { id } => (id, 0, true),
        };
        self.trail
            .record(TrailEvent::Import(ImportEvent {
                at_ms: now,
                actor: source_id.to_owned(),
                file: file_name.to_owned(),
                import_id,
                resources,
                duplicate,
                person_id: Some(person_id.to_owned()),
            }))
            .await
            .map_err(ImporterError::Audit)?;
        Ok(outcome)
    }

    /// Imports a file delivered by the service `service_id`, which must be a registered source.
    pub async fn import_from_source(
        &self,
        service_id: &str,
        bytes: Vec<u8>,
        file_name: &str,
    ) -> Result<ImportOutcome, ImporterError> {
        match crate::store::services::get(&self.db, service_id).await? {
            Some(s) if s.kind == crate::store::services::ServiceKind::Source => {}
            _ => return Err(ImporterError::NotASource(service_id.to_owned())),
        }
        self.import_bytes(bytes, file_name, service_id, Some(service_id))
            .await
    }
}

/// What one scan of a drop directory did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanSummary {
    /// Files imported (new).
    pub imported: usize,
    /// Files found already imported.
    pub duplicates: usize,
    /// Files refused (moved to `failed/`).
    pub failed: usize,
}

/// The three folders of a drop directory, created when missing.
fn folders(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf), ImporterError> {
    let io = |path: &Path| {
        let p = path.to_owned();
        move |source| ImporterError::Io { path: p, source }
    };
    let incoming = dir.join("incoming");
    let done = dir.join("done");
    let failed = dir.join("failed");
    for d in [&incoming, &done, &failed] {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    Ok((incoming, done, failed))
}

/// Imports every regular file in `dir/incoming` (name order; names starting with `.` are files
/// still being written and are skipped), moving each to `done/` or `failed/`.
pub async fn scan_drop_dir(importer: &Importer, dir: &Path) -> Result<ScanSummary, ImporterError> {
    let (incoming, done, failed) = folders(dir)?;
    let mut names: Vec<PathBuf> = std::fs::read_dir(&incoming)
        .map_err(|source| ImporterError::Io {
            path: incoming.clone(),
            source,
        })?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    names.sort();
    let mut summary = ScanSummary::default();
    let total = names.len();
    for (i, path) in names.into_iter().enumerate() {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        let io = |source| ImporterError::Io {
            path: path.clone(),
            source,
        };
        let size = std::fs::metadata(&path).map_err(io)?.len();
        let result = if usize::try_from(size).map_or(true, |s| s > MAX_IMPORT_BYTES) {
            Err(ImporterError::Refused(ImportError::TooLarge {
                file: name.clone(),
                size: usize::try_from(size).unwrap_or(usize::MAX),
                max: MAX_IMPORT_BYTES,
            }))
        } else {
            let bytes = std::fs::read(&path).map_err(io)?;
            importer.import_bytes(bytes, &name, "drop-dir", None).await
        };
        match result {
            Ok(outcome) => {
                std::fs::rename(&path, done.join(&name)).map_err(io)?;
                match outcome {
                    ImportOutcome::Imported { resources, .. } => {
                        summary.imported += 1;
                        tracing::info!(file = %name, resources, progress = %format!("{}/{total}", i + 1), "imported");
                    }
                    ImportOutcome::AlreadyImported { .. } => {
                        summary.duplicates += 1;
                        tracing::info!(file = %name, progress = %format!("{}/{total}", i + 1), "already imported");
                    }
                }
            }
            Err(ImporterError::Refused(e)) => {
                summary.failed += 1;
                tracing::warn!(file = %name, error = %e, "import refused");
                std::fs::write(failed.join(format!("{name}.error.txt")), format!("{e}\n"))
                    .map_err(io)?;
                std::fs::rename(&path, failed.join(&name)).map_err(io)?;
            }
            // Store or audit trouble: the file stays in incoming/ for the next scan.
            Err(e) => return Err(e),
        }
    }
    Ok(summary)
}

/// Scans `dir` every `interval` until `shutdown` resolves; errors are logged and retried.
pub async fn watch_drop_dir(
    importer: Importer,
    dir: PathBuf,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        match scan_drop_dir(&importer, &dir).await {
            Ok(s) if s != ScanSummary::default() => {
                tracing::info!(imported = s.imported, duplicates = s.duplicates, failed = s.failed, dir = %dir.display(), "drop directory scanned");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, dir = %dir.display(), "drop directory scan failed");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = &mut shutdown => return,
        }
    }
}
