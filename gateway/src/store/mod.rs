//! Storage (DESIGN §7): sqlx on SQLite (embedded default: WAL, foreign keys, busy timeout) or
//! PostgreSQL (several stateless gateways on one database). Migrations per backend live in
//! `migrations/sqlite` and `migrations/postgres` and run at start. One file per aggregate; the SQL
//! is written once for both backends where it can be (numbered `$n` parameters work in both).

pub mod audit;
pub mod auth_events;
pub mod consent;
pub mod erasure;
pub mod nonces;
pub mod oauth;
pub mod partner_reads;
pub mod persons;
pub mod records;
pub mod services;
pub mod sessions;
pub mod sources;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;

/// Every way the store fails.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database answered with an error or could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL names no supported backend.
    #[error("unsupported database URL (use sqlite://… or postgres://…): {0}")]
    UnsupportedUrl(String),
    /// Stored rows do not read back as written (e.g. a resource holding a raw separator).
    #[error("inconsistent stored data: {0}")]
    Inconsistent(String),
    /// A read on the partner API's own SQLite connections failed ([`partner_reads`]).
    #[error("database (direct SQLite read): {0}")]
    SqliteRead(#[from] rusqlite::Error),
    /// A blocking read task panicked or was cancelled, or no read connection could be waited for.
    #[error("read task: {0}")]
    ReadTask(String),
}

/// A connection pool on one of the two backends.
#[derive(Debug, Clone)]
pub enum Db {
    /// SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the backend's pool (same SQL, both drivers).
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_db;

/// Bumps, inside the transaction `tx`, the data version of `person_id` (migration 0010): every
/// change to what the person's partner reads can serve does this before it commits.
macro_rules! bump_data_version {
    ($tx:expr, $person_id:expr) => {
        sqlx::query("UPDATE persons SET data_version = data_version + 1 WHERE id = $1")
            .bind($person_id)
            .execute(&mut *$tx)
            .await?
    };
}
pub(crate) use bump_data_version;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

impl Db {
    /// Connects (creating a SQLite file when missing) and applies the migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, StoreError> {
        let db = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            Db::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(max_connections.max(1))
                    .connect_with(options)
                    .await?,
            )
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Db::Postgres(
                PgPoolOptions::new()
                    .max_connections(max_connections.max(1))
                    .acquire_timeout(Duration::from_secs(30))
                    .connect(url)
                    .await?,
            )
        } else {
            return Err(StoreError::UnsupportedUrl(redact(url)));
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Applies the migrations of this backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
            Db::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// Connects to PostgreSQL without migrating (administration, e.g. creating test databases).
    pub async fn connect_raw_postgres(url: &str) -> Result<Db, StoreError> {
        Ok(Db::Postgres(
            PgPoolOptions::new().max_connections(1).connect(url).await?,
        ))
    }

    /// Runs SQL text as is (administration; never with untrusted input).
    pub async fn execute_raw(&self, sql: &str) -> Result<u64, StoreError> {
        let n = on_db!(self, |pool| sqlx::raw_sql(sql)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n)
    }

    /// One round trip (health check).
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_db!(self, |pool| {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        on_db!(self, |pool| pool.close().await);
    }
}

/// Puts a SQLite connection in `synchronous=FULL` for a durable commit (consent, erasure: H2).
pub(crate) async fn sqlite_sync_full(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query("PRAGMA synchronous = FULL")
        .execute(conn)
        .await
        .map(|_| ())
}

/// Back to the pool's `synchronous=NORMAL`; a failure only costs durability of later writes on
/// this connection, so it is logged, not returned.
pub(crate) async fn sqlite_sync_normal(conn: &mut sqlx::SqliteConnection) {
    if let Err(e) = sqlx::query("PRAGMA synchronous = NORMAL")
        .execute(conn)
        .await
    {
        tracing::warn!(error = %e, "could not restore synchronous=NORMAL");
    }
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…{}", &url[..scheme], &url[at..]),
        _ => url.to_owned(),
    }
}
