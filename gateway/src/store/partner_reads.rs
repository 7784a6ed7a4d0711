//! The partner API's hot reads (DESIGN §6; issue 6 load goals): a resource with its person's
//! consent head, a consent head with the person's data version, a person's `$everything` rows.
//!
//! On PostgreSQL they go through sqlx. On SQLite they run on connections of their own (rusqlite,
//! `query_only`), on the calling thread: sqlx's SQLite driver hands every statement to a worker
//! thread and its rows back, and under load those thread switches cost more than SQLite's own
//! work. The statements are the sqlx functions' own ([`records::GET_WITH_CONSENT_SQL`],
//! [`consent::HEAD_AND_DATA_VERSION_SQL`], [`records::everything_sql`]). Each runs as its own read
//! transaction on the WAL database, so it sees every commit made before it: a revoke that has
//! committed refuses the next read, as on sqlx.

use super::consent::{self, HEAD_AND_DATA_VERSION_SQL, state_from};
use super::records::{self, EverythingRows, GET_WITH_CONSENT_SQL, StoredResource};
use super::{Db, StoreError};
use crate::domain::consent::ConsentState;
use rusqlite::{Connection, OpenFlags, ToSql};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// SQLite read connections open at most (each kept for reuse): a reader waits for one rather
/// than opening more (a new connection parses the schema again).
const MAX_CONNECTIONS: usize = 8;

/// The partner reads over one database.
#[derive(Debug, Clone)]
pub struct PartnerReads {
    db: Db,
    sqlite: Option<Arc<SqliteReaders>>,
}

/// Read-only connections to one SQLite file, opened when first needed.
#[derive(Debug)]
struct SqliteReaders {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection that may be in use.
    permits: Arc<tokio::sync::Semaphore>,
}

impl SqliteReaders {
    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    }

    /// A permit to use one connection (waits while all are in use).
    async fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, StoreError> {
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| StoreError::ReadTask(e.to_string()))
    }

    /// Runs `f` on an idle connection (or a new one), then keeps the connection for reuse. The
    /// caller holds a [`SqliteReaders::permit`].
    fn with<R>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<R>) -> Result<R, StoreError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(c) => c,
            None => self.open()?,
        };
        let r = f(&conn)?;
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
        Ok(r)
    }
}

/// Binds `values` to `$1`, `$2`, … by name (a name may occur more than once in the statement).
fn bind_numbered(
    stmt: &mut rusqlite::Statement<'_>,
    values: &[&dyn ToSql],
) -> rusqlite::Result<()> {
    for (i, v) in values.iter().enumerate() {
        let name = format!("${}", i + 1);
        let index = stmt
            .parameter_index(&name)?
            .ok_or_else(|| rusqlite::Error::InvalidParameterName(name))?;
        stmt.raw_bind_parameter(index, v)?;
    }
    Ok(())
}

/// A consent head from six columns starting at `at` (version NULL: no head).
fn head_at(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Option<ConsentState>> {
    let Some(version) = row.get::<_, Option<i64>>(at)? else {
        return Ok(None);
    };
    Ok(Some(state_from(
        version,
        &row.get::<_, String>(at + 1)?,
        &row.get::<_, String>(at + 2)?,
        row.get(at + 3)?,
        row.get(at + 4)?,
    )))
}

impl PartnerReads {
    /// The reads over `db` (on SQLite, connections to the pool's file are opened when needed).
    pub fn new(db: Db) -> Self {
        let sqlite = match &db {
            Db::Sqlite(pool) => Some(Arc::new(SqliteReaders {
                path: pool.connect_options().get_filename().to_path_buf(),
                idle: Mutex::default(),
                permits: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
            })),
            Db::Postgres(_) => None,
        };
        PartnerReads { db, sqlite }
    }

    /// As [`records::get_with_consent`].
    pub async fn get_with_consent(
        &self,
        resource_type: &str,
        id: &str,
        service_id: &str,
    ) -> Result<Vec<(StoredResource, Option<ConsentState>)>, StoreError> {
        let Some(sqlite) = &self.sqlite else {
            return records::get_with_consent(&self.db, resource_type, id, service_id).await;
        };
        let _permit = sqlite.permit().await?;
        sqlite.with(|conn| {
            let mut stmt = conn.prepare_cached(GET_WITH_CONSENT_SQL)?;
            bind_numbered(&mut stmt, &[&resource_type, &id, &service_id])?;
            let mut rows = stmt.raw_query();
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push((
                    StoredResource {
                        resource_type: row.get(0)?,
                        id: row.get(1)?,
                        person_id: row.get(2)?,
                        category: row.get(3)?,
                        json: row.get(4)?,
                    },
                    head_at(row, 5)?,
                ));
            }
            Ok(out)
        })
    }

    /// As [`consent::head_and_data_version`].
    pub async fn head_and_data_version(
        &self,
        person_id: &str,
        service_id: &str,
    ) -> Result<(Option<ConsentState>, i64), StoreError> {
        let Some(sqlite) = &self.sqlite else {
            return consent::head_and_data_version(&self.db, person_id, service_id).await;
        };
        let _permit = sqlite.permit().await?;
        sqlite.with(|conn| {
            let mut stmt = conn.prepare_cached(HEAD_AND_DATA_VERSION_SQL)?;
            bind_numbered(&mut stmt, &[&person_id, &service_id])?;
            let mut rows = stmt.raw_query();
            match rows.next()? {
                Some(row) => Ok((head_at(row, 1)?, row.get(0)?)),
                None => Ok((None, 0)),
            }
        })
    }

    /// As [`records::everything_rows`]; on SQLite on a blocking-pool thread (up to
    /// [`crate::domain::access::MAX_EVERYTHING`] rows are read and joined).
    pub async fn everything_rows(
        &self,
        person_id: &str,
        categories: &[&str],
        limit: i64,
    ) -> Result<EverythingRows, StoreError> {
        let Some(sqlite) = &self.sqlite else {
            return records::everything_rows(&self.db, person_id, categories, limit).await;
        };
        let permit = sqlite.permit().await?;
        let sqlite = sqlite.clone();
        let person_id = person_id.to_owned();
        let categories: Vec<String> = categories.iter().map(|c| (*c).to_owned()).collect();
        let read = move || {
            let _permit = permit;
            sqlite.with(|conn| {
                let mut stmt =
                    conn.prepare_cached(&records::everything_sql(false, categories.len()))?;
                let mut values: Vec<&dyn ToSql> = vec![&person_id];
                values.extend(categories.iter().map(|c| c as &dyn ToSql));
                values.push(&limit);
                bind_numbered(&mut stmt, &values)?;
                let mut rows = stmt.raw_query();
                let row = rows.next()?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
                Ok(EverythingRows {
                    data_version: row.get::<_, Option<i64>>(0)?.unwrap_or(0),
                    patient_ids: row.get(1)?,
                    patient: row.get(2)?,
                    count: row.get(3)?,
                    references: row.get(4)?,
                    resources: row.get(5)?,
                })
            })
        };
        tokio::task::spawn_blocking(read)
            .await
            .map_err(|e| StoreError::ReadTask(e.to_string()))?
    }
}

#[cfg(test)]
// Test code: an unwrap failure is a test failure with its message.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_readers_share_a_bounded_set_of_connections() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("r.db").display());
        let db = Db::connect(&url, 2).await.unwrap();
        let reads = PartnerReads::new(db.clone());
        let tasks: Vec<_> = (0..48)
            .map(|i| {
                let reads = reads.clone();
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        reads
                            .everything_rows("p", &["A.checkup"], 10)
                            .await
                            .map(|r| r.count)
                    } else {
                        reads.head_and_data_version("p", "s").await.map(|(_, v)| v)
                    }
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), 0);
        }
        let sqlite = reads.sqlite.as_ref().unwrap();
        let open = sqlite.idle.lock().unwrap().len();
        assert!((1..=MAX_CONNECTIONS).contains(&open), "{open} connections");
        db.close().await;
    }
}
