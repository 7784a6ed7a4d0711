//! Erasure and export storage (security-scenarios K1/K2; PHR guideline 消去 and 相互運用性; see
//! `docs/privacy.md`): the erasure itself in **one** transaction, the erasure register with its
//! backup-purge due dates, and the rows of a person's export. (The erasure document waiting for
//! the card is kept like a consent document, [`super::consent::put_pending`]: one document per
//! session waits for a signature.)
//!
//! What one erasure removes, all or nothing: the stored resources of every person key linked to
//! the person (their Patient resources included), those person-key links, the person's source
//! links (grants, cursors, enrollment) and source nonces; every consent head not already a deny
//! gets a new `revoke` version holding the erasure document the card signed. It keeps: the audit
//! log (no clinical payload; append-only and hash-chained), the `imports` rows (only the content
//! hash, file name and counts: they make a re-delivery of the same bytes a no-op, so erased data is
//! not brought back), the person and card binding (sign-in still works), and earlier consent
//! versions (the signed evidence of what was consented).

use super::{Db, StoreError, bump_data_version, on_db};
use sqlx::Row;

/// What an erasure removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ErasedCounts {
    /// Stored resources deleted.
    pub resources: i64,
    /// Person keys unlinked (their rows deleted).
    pub person_keys: i64,
    /// Consent heads moved to a `revoke` version.
    pub consents_revoked: i64,
    /// Source links (grant, cursor) deleted.
    pub source_links: i64,
}

/// A committed erasure, as registered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ErasureRecord {
    /// Register id.
    pub id: i64,
    /// The person.
    pub person_id: String,
    /// When (ms).
    pub erased_at_ms: i64,
    /// When backups holding the person's data must have been purged (ms).
    pub backup_purge_due_ms: i64,
    /// When staff recorded the backup purge, if they did.
    pub backup_purged_at_ms: Option<i64>,
    /// What was removed.
    pub counts: ErasedCounts,
}

/// What [`erase`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EraseOutcome {
    /// Committed.
    Erased(ErasureRecord),
    /// A pull from a source holds a live lease on one of the person's links: it could still
    /// store a file after the erasure, so nothing was changed.
    PullInProgress,
}

/// The signed request an erasure commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureCommit<'a> {
    /// The person.
    pub person_id: &'a str,
    /// Now (ms).
    pub now_ms: i64,
    /// Backup purge due (ms).
    pub backup_purge_due_ms: i64,
    /// Canonical erasure document.
    pub document: &'a str,
    /// The card token over the document's nonce.
    pub token: &'a str,
    /// SHA-256 of the signing certificate.
    pub card_fingerprint: &'a [u8],
}

/// What an erasure of the person would remove now (shown before the card signs).
pub async fn preview(db: &Db, person_id: &str) -> Result<ErasedCounts, StoreError> {
    let c = on_db!(db, |pool| {
        macro_rules! count {
            ($sql:expr) => {
                sqlx::query($sql)
                    .bind(person_id)
                    .fetch_one(pool)
                    .await?
                    .try_get::<i64, _>(0)?
            };
        }
        ErasedCounts {
            resources: count!(
                "SELECT COUNT(*) FROM person_keys k \
                 JOIN iphr_resources r ON r.person_key = k.person_key WHERE k.person_id = $1"
            ),
            person_keys: count!("SELECT COUNT(*) FROM person_keys WHERE person_id = $1"),
            consents_revoked: count!(
                "SELECT COUNT(*) FROM consent_heads WHERE person_id = $1 AND status <> 'deny'"
            ),
            source_links: count!("SELECT COUNT(*) FROM source_links WHERE person_id = $1"),
        }
    });
    Ok(c)
}

/// Whether a pull holds an unexpired lease on one of the person's source links.
pub async fn pull_lease_held(db: &Db, person_id: &str, now_ms: i64) -> Result<bool, StoreError> {
    let held = on_db!(db, |pool| {
        sqlx::query(
            "SELECT COUNT(*) FROM source_links WHERE person_id = $1 \
             AND lease_owner IS NOT NULL AND lease_until_ms > $2",
        )
        .bind(person_id)
        .bind(now_ms)
        .fetch_one(pool)
        .await?
        .try_get::<i64, _>(0)?
            > 0
    });
    Ok(held)
}

/// Erases the person's iPHR in one transaction (see the module header for what goes and what
/// stays) and registers the erasure. On SQLite the transaction runs with `synchronous=FULL`, like
/// consent commits (security-scenarios H2); its first statement is a write, so it holds the
/// database's write lock from the start.
pub async fn erase(db: &Db, c: &ErasureCommit<'_>) -> Result<EraseOutcome, StoreError> {
    // The same statements on either backend, in the transaction `$tx`.
    macro_rules! erase_in {
        ($tx:expr) => {{
            let id: i64 = sqlx::query(
                "INSERT INTO erasures (person_id, erased_at_ms, backup_purge_due_ms, document, \
                 token, card_fingerprint) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(c.person_id)
            .bind(c.now_ms)
            .bind(c.backup_purge_due_ms)
            .bind(c.document)
            .bind(c.token)
            .bind(c.card_fingerprint)
            .fetch_one(&mut *$tx)
            .await?
            .try_get(0)?;
            // Links without a live lease go; a live lease (a pull that may still store a file)
            // refuses the whole erasure. On PostgreSQL the DELETE locks the rows it removes, so a
            // lease taken concurrently either waits and then finds no link, or committed first
            // and is seen here.
            let source_links = sqlx::query(
                "DELETE FROM source_links WHERE person_id = $1 AND (lease_owner IS NULL \
                 OR lease_until_ms IS NULL OR lease_until_ms <= $2)",
            )
            .bind(c.person_id)
            .bind(c.now_ms)
            .execute(&mut *$tx)
            .await?
            .rows_affected();
            let leased: i64 = sqlx::query("SELECT COUNT(*) FROM source_links WHERE person_id = $1")
                .bind(c.person_id)
                .fetch_one(&mut *$tx)
                .await?
                .try_get(0)?;
            if leased > 0 {
                $tx.rollback().await?;
                EraseOutcome::PullInProgress
            } else {
                sqlx::query("DELETE FROM source_nonces WHERE person_id = $1")
                    .bind(c.person_id)
                    .execute(&mut *$tx)
                    .await?;
                let resources = sqlx::query(
                    "DELETE FROM iphr_resources WHERE person_key IN \
                     (SELECT person_key FROM person_keys WHERE person_id = $1)",
                )
                .bind(c.person_id)
                .execute(&mut *$tx)
                .await?
                .rows_affected();
                let person_keys = sqlx::query("DELETE FROM person_keys WHERE person_id = $1")
                    .bind(c.person_id)
                    .execute(&mut *$tx)
                    .await?
                    .rows_affected();
                bump_data_version!($tx, c.person_id);
                // Each head moves first (the UPDATE locks its row), then its version is written.
                let moved = sqlx::query(
                    "UPDATE consent_heads SET version = version + 1, status = 'deny', \
                     categories = '[]', period_start_ms = $2, period_end_ms = $2 \
                     WHERE person_id = $1 AND status <> 'deny' RETURNING service_id, version",
                )
                .bind(c.person_id)
                .bind(c.now_ms)
                .fetch_all(&mut *$tx)
                .await?;
                for row in &moved {
                    let service: String = row.try_get(0)?;
                    let version: i64 = row.try_get(1)?;
                    sqlx::query(
                        "INSERT INTO consent_versions (person_id, service_id, version, action, \
                         categories, period_start_ms, period_end_ms, document, token, \
                         card_fingerprint, committed_at_ms) \
                         VALUES ($1, $2, $3, 'revoke', '[]', $4, $4, $5, $6, $7, $4)",
                    )
                    .bind(c.person_id)
                    .bind(&service)
                    .bind(version)
                    .bind(c.now_ms)
                    .bind(c.document)
                    .bind(c.token)
                    .bind(c.card_fingerprint)
                    .execute(&mut *$tx)
                    .await?;
                }
                let counts = ErasedCounts {
                    resources: i64::try_from(resources).unwrap_or(i64::MAX),
                    person_keys: i64::try_from(person_keys).unwrap_or(i64::MAX),
                    consents_revoked: i64::try_from(moved.len()).unwrap_or(i64::MAX),
                    source_links: i64::try_from(source_links).unwrap_or(i64::MAX),
                };
                sqlx::query(
                    "UPDATE erasures SET resources = $2, person_keys = $3, \
                     consents_revoked = $4, source_links = $5 WHERE id = $1",
                )
                .bind(id)
                .bind(counts.resources)
                .bind(counts.person_keys)
                .bind(counts.consents_revoked)
                .bind(counts.source_links)
                .execute(&mut *$tx)
                .await?;
                $tx.commit().await?;
                EraseOutcome::Erased(ErasureRecord {
                    id,
                    person_id: c.person_id.to_owned(),
                    erased_at_ms: c.now_ms,
                    backup_purge_due_ms: c.backup_purge_due_ms,
                    backup_purged_at_ms: None,
                    counts,
                })
            }
        }};
    }
    let outcome = match db {
        Db::Sqlite(pool) => {
            let mut conn = pool.acquire().await?;
            super::sqlite_sync_full(&mut conn).await?;
            let result = async {
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                Ok::<_, sqlx::Error>(erase_in!(tx))
            }
            .await;
            super::sqlite_sync_normal(&mut conn).await;
            result?
        }
        Db::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            erase_in!(tx)
        }
    };
    Ok(outcome)
}

/// An [`ErasureRecord`] from a row of [`RECORD_COLUMNS`] (either backend's row type).
macro_rules! record_from {
    ($r:expr) => {{
        let r = $r;
        Ok::<_, sqlx::Error>(ErasureRecord {
            id: r.try_get(0)?,
            person_id: r.try_get(1)?,
            erased_at_ms: r.try_get(2)?,
            backup_purge_due_ms: r.try_get(3)?,
            backup_purged_at_ms: r.try_get(4)?,
            counts: ErasedCounts {
                resources: r.try_get(5)?,
                person_keys: r.try_get(6)?,
                consents_revoked: r.try_get(7)?,
                source_links: r.try_get(8)?,
            },
        })
    }};
}

const RECORD_COLUMNS: &str = "id, person_id, erased_at_ms, backup_purge_due_ms, \
     backup_purged_at_ms, resources, person_keys, consents_revoked, source_links";

/// Which registered erasures to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterFilter<'a> {
    /// Every one.
    All,
    /// Those whose backup purge is not recorded and due by this time (ms).
    DueBy(i64),
    /// Those of one person.
    Person(&'a str),
}

/// Registered erasures, oldest due first.
pub async fn register(
    db: &Db,
    filter: RegisterFilter<'_>,
) -> Result<Vec<ErasureRecord>, StoreError> {
    let v = on_db!(db, |pool| {
        let mut q = sqlx::QueryBuilder::new(format!("SELECT {RECORD_COLUMNS} FROM erasures"));
        match filter {
            RegisterFilter::All => {}
            RegisterFilter::DueBy(ms) => {
                q.push(" WHERE backup_purged_at_ms IS NULL AND backup_purge_due_ms <= ")
                    .push_bind(ms);
            }
            RegisterFilter::Person(p) => {
                q.push(" WHERE person_id = ").push_bind(p);
            }
        }
        q.push(" ORDER BY backup_purge_due_ms, id");
        q.build()
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| record_from!(r))
            .collect::<Result<Vec<_>, _>>()?
    });
    Ok(v)
}

/// Records that the backups holding erasure `id`'s data were purged; false when there is no such
/// erasure or it was recorded before.
pub async fn mark_purged(db: &Db, id: i64, now_ms: i64) -> Result<bool, StoreError> {
    let n = on_db!(db, |pool| {
        sqlx::query(
            "UPDATE erasures SET backup_purged_at_ms = $2 \
             WHERE id = $1 AND backup_purged_at_ms IS NULL",
        )
        .bind(id)
        .bind(now_ms)
        .execute(pool)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}

/// Persons with an erasure at or after `since_ms` (whatever was read of them before must not be
/// served any more, e.g. a bulk export's files built earlier).
pub async fn erased_since(db: &Db, since_ms: i64) -> Result<Vec<String>, StoreError> {
    let v = on_db!(db, |pool| {
        sqlx::query("SELECT DISTINCT person_id FROM erasures WHERE erased_at_ms >= $1")
            .bind(since_ms)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<Vec<_>, _>>()?
    });
    Ok(v)
}

/// One stored resource of a person, as exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonRow {
    /// `resourceType`.
    pub resource_type: String,
    /// `id`.
    pub id: String,
    /// The source's person key it is stored under.
    pub person_key: String,
    /// The converter's Patient id of that key.
    pub patient_id: String,
    /// Data category (`A.checkup` …; empty for a Patient).
    pub category: String,
    /// The resource JSON as stored.
    pub json: String,
}

/// Every stored resource of the person's linked keys, by type, id and key.
pub async fn person_rows(db: &Db, person_id: &str) -> Result<Vec<PersonRow>, StoreError> {
    let v = on_db!(db, |pool| {
        sqlx::query(
            "SELECT r.resource_type, r.id, r.person_key, k.patient_id, r.category, r.json \
             FROM person_keys k JOIN iphr_resources r ON r.person_key = k.person_key \
             WHERE k.person_id = $1 ORDER BY r.resource_type, r.id, r.person_key",
        )
        .bind(person_id)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| {
            Ok::<_, sqlx::Error>(PersonRow {
                resource_type: r.try_get(0)?,
                id: r.try_get(1)?,
                person_key: r.try_get(2)?,
                patient_id: r.try_get(3)?,
                category: r.try_get(4)?,
                json: r.try_get(5)?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?
    });
    Ok(v)
}
