//! The audit log's storage (DESIGN §7; security-scenarios G2–G4, G7, H2): one writer task per
//! gateway process takes records from a channel, appends them in batches ("group commit") in one
//! durable transaction, and only then acknowledges each caller with its seq.
//!
//! - SQLite: the writer runs on a thread of its own with a dedicated connection (rusqlite,
//!   `synchronous=FULL`; the main pool runs NORMAL), each batch in `BEGIN IMMEDIATE`, so writers in
//!   several processes serialise on the database lock. (Through sqlx each of a batch's statements
//!   went to the driver's worker thread and back; under load those switches cost more than the
//!   writes.)
//! - PostgreSQL: the one-row `audit_head` is locked with `SELECT … FOR UPDATE` in each batch's
//!   transaction, so several gateways on one database extend one chain; the batch is one
//!   `INSERT … SELECT FROM UNNEST(…)`.
//!
//! If a batch fails, every caller in it gets [`AuditError::Write`] and must refuse the data access
//! (G7). The chain format is [`crate::domain::audit`].

use super::{Db, on_db};
use crate::domain::audit::AuditRecord;
use crate::domain::audit::{
    ChainVerifier, Checkpoint, CheckpointSigner, EntryFields, SignedCheckpoint, StoredEntry,
    VerifyFailure, VerifySummary, entry_hash,
};
use sqlx::Row;
use sqlx::sqlite::{SqlitePoolOptions, SqliteSynchronous};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most records appended in one transaction.
pub const MAX_BATCH: usize = 1024;
/// Records waiting for the writer before `record` waits for room.
pub const QUEUE: usize = 8192;
/// Rows read per query while verifying.
const VERIFY_PAGE: i64 = 5000;

/// Why an audit operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The batch holding this record could not be committed; nothing of it was written.
    #[error("audit write failed: {0}")]
    Write(Arc<dyn std::error::Error + Send + Sync>),
    /// The writer has stopped ([`AuditLog::shutdown`] or a crash of its task).
    #[error("audit log is closed")]
    Closed,
    /// Reading the log or checkpoints failed.
    #[error("audit read failed: {0}")]
    Read(Arc<sqlx::Error>),
    /// The dedicated writer connection could not be opened.
    #[error("audit writer connection: {0}")]
    Connect(Arc<dyn std::error::Error + Send + Sync>),
    /// The chain head row is missing or malformed (migration not applied or tampered).
    #[error("audit_head row is missing or malformed")]
    BadHead,
}

type Reply = oneshot::Sender<Result<u64, AuditError>>;

/// What the writer receives.
#[derive(Debug)]
// Nearly every message is a record; boxing it would add an allocation per record.
#[allow(clippy::large_enum_variant)]
enum Msg {
    /// A record to append, and where to answer.
    Record(EntryFields, Reply),
    /// Stop taking records; finish what is queued.
    Stop,
}

/// Handle to the process's audit writer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    /// Audit writes go here: for SQLite a dedicated one-connection pool with synchronous=FULL;
    /// for PostgreSQL the shared pool (commits are durable with the default synchronous_commit).
    writer: Db,
    task: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl AuditLog {
    /// Starts the writer task on `db`.
    pub async fn start(db: Db) -> Result<AuditLog, AuditError> {
        let writer = match &db {
            Db::Sqlite(pool) => {
                let options = (*pool.connect_options())
                    .clone()
                    .synchronous(SqliteSynchronous::Full);
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(options)
                    .await
                    .map_err(|e| AuditError::Connect(Arc::new(e)))?;
                Db::Sqlite(pool)
            }
            Db::Postgres(pool) => Db::Postgres(pool.clone()),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = match &db {
            Db::Sqlite(pool) => {
                let appender = SqliteAppender::open(pool.connect_options().get_filename())
                    .map_err(|e| AuditError::Connect(Arc::new(e)))?;
                let (done, finished) = oneshot::channel::<()>();
                std::thread::Builder::new()
                    .name("iphr-audit-writer".into())
                    .spawn(move || {
                        run_sqlite_writer(appender, rx);
                        let _ = done.send(());
                    })
                    .map_err(|e| AuditError::Connect(Arc::new(e)))?;
                tokio::spawn(async move {
                    let _ = finished.await;
                })
            }
            Db::Postgres(pool) => tokio::spawn(run_postgres_writer(pool.clone(), rx)),
        };
        Ok(AuditLog {
            tx,
            writer,
            task: Arc::new(tokio::sync::Mutex::new(Some(task))),
        })
    }

    /// Appends a record; returns its seq once it is durably committed. On error the caller must
    /// refuse the access it was about to allow (G7).
    pub async fn record(&self, record: AuditRecord) -> Result<u64, AuditError> {
        let fields = EntryFields::from_record(&record);
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Record(fields, reply))
            .await
            .map_err(|_| AuditError::Closed)?;
        answer.await.map_err(|_| AuditError::Closed)?
    }

    /// Signs the current chain head and stores the checkpoint; returns it (its `note` is what
    /// goes off the box).
    pub async fn checkpoint(
        &self,
        signer: &CheckpointSigner,
        now_ms: i64,
    ) -> Result<SignedCheckpoint, AuditError> {
        let read = |e| AuditError::Read(Arc::new(e));
        let write = |e| AuditError::Write(Arc::new(e));
        let (size, head) = on_db!(&self.writer, |pool| {
            let row = sqlx::query("SELECT seq, head_hash FROM audit_head WHERE id = 1")
                .fetch_one(pool)
                .await
                .map_err(read)?;
            parse_head(
                row.try_get(0).map_err(read)?,
                &row.try_get::<Vec<u8>, _>(1).map_err(read)?,
            )?
        });
        let signed = signer.sign(size, head);
        let size_i64 = i64::try_from(size).map_err(|_| AuditError::BadHead)?;
        on_db!(&self.writer, |pool| {
            sqlx::query(
                "INSERT INTO audit_checkpoints (size, head_hash, at_ms, key_id, signature, note) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(size_i64)
            .bind(&head[..])
            .bind(now_ms)
            .bind(&signed.key_id[..])
            .bind(&signed.signature)
            .bind(&signed.note)
            .execute(pool)
            .await
            .map_err(write)?;
        });
        Ok(signed)
    }

    /// Stops accepting records (also through clones of this handle, which then get
    /// [`AuditError::Closed`]), lets the writer finish what is queued, and waits for it.
    pub async fn shutdown(self) {
        let AuditLog { tx, writer, task } = self;
        let _ = tx.send(Msg::Stop).await;
        drop(tx);
        if let Some(task) = task.lock().await.take() {
            let _ = task.await;
        }
        if let Db::Sqlite(pool) = writer {
            pool.close().await;
        }
    }
}

fn parse_head(seq: i64, hash: &[u8]) -> Result<(u64, [u8; 32]), AuditError> {
    let seq = u64::try_from(seq).map_err(|_| AuditError::BadHead)?;
    let hash = <[u8; 32]>::try_from(hash).map_err(|_| AuditError::BadHead)?;
    Ok((seq, hash))
}

/// Moves the received `msgs` into `batch` (a stop closes `rx`; what is queued is still taken).
fn take_batch(
    msgs: &mut Vec<Msg>,
    batch: &mut Vec<(EntryFields, Reply)>,
    rx: &mut mpsc::Receiver<Msg>,
) {
    for msg in msgs.drain(..) {
        match msg {
            Msg::Record(fields, reply) => batch.push((fields, reply)),
            // Later sends fail; what is already queued is still received and written.
            Msg::Stop => rx.close(),
        }
    }
}

/// Answers every caller of a batch: its seq, or the batch's error.
fn answer(batch: &mut Vec<(EntryFields, Reply)>, result: Result<u64, AuditError>) {
    match result {
        Ok(first) => {
            for (i, (_, reply)) in batch.drain(..).enumerate() {
                let _ = reply.send(Ok(first + i as u64));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, records = batch.len(), "audit write failed");
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// The SQLite writer thread: one batch at a time until every sender is gone.
fn run_sqlite_writer(mut appender: SqliteAppender, mut rx: mpsc::Receiver<Msg>) {
    let mut msgs = Vec::with_capacity(MAX_BATCH);
    let mut batch: Vec<(EntryFields, Reply)> = Vec::with_capacity(MAX_BATCH);
    loop {
        msgs.clear();
        if rx.blocking_recv_many(&mut msgs, MAX_BATCH) == 0 {
            break;
        }
        take_batch(&mut msgs, &mut batch, &mut rx);
        if batch.is_empty() {
            continue;
        }
        let fields: Vec<&EntryFields> = batch.iter().map(|(f, _)| f).collect();
        let result = appender.append(&fields);
        answer(&mut batch, result);
    }
}

/// The SQLite writer's own connection.
struct SqliteAppender {
    path: std::path::PathBuf,
    conn: Option<rusqlite::Connection>,
}

impl SqliteAppender {
    fn open(path: &std::path::Path) -> Result<Self, rusqlite::Error> {
        let mut a = SqliteAppender {
            path: path.to_path_buf(),
            conn: None,
        };
        a.connection()?;
        Ok(a)
    }

    /// The connection, opened again after one was dropped.
    fn connection(&mut self) -> Result<&rusqlite::Connection, rusqlite::Error> {
        if self.conn.is_none() {
            let conn = rusqlite::Connection::open_with_flags(
                &self.path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            self.conn = Some(conn);
        }
        // Invariant: set just above when it was None.
        self.conn.as_ref().ok_or(rusqlite::Error::InvalidQuery)
    }

    /// Appends in one `BEGIN IMMEDIATE` transaction; returns the first seq.
    fn append(&mut self, fields: &[&EntryFields]) -> Result<u64, AuditError> {
        let write = |e: rusqlite::Error| AuditError::Write(Arc::new(e));
        let conn = self.connection().map_err(write)?;
        conn.execute_batch("BEGIN IMMEDIATE").map_err(write)?;
        let result = Self::append_in(conn, fields);
        if result.is_err() && conn.execute_batch("ROLLBACK").is_err() && !conn.is_autocommit() {
            // The connection's state is unknown: open a new one for the next batch.
            self.conn = None;
        }
        result
    }

    fn append_in(conn: &rusqlite::Connection, fields: &[&EntryFields]) -> Result<u64, AuditError> {
        let write = |e: rusqlite::Error| AuditError::Write(Arc::new(e));
        let (seq, hash): (i64, Vec<u8>) = conn
            .prepare_cached("SELECT seq, head_hash FROM audit_head WHERE id = 1")
            .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(write)?;
        let (head_seq, head) = parse_head(seq, &hash)?;
        let rows = chain_batch(head_seq, head, fields);
        {
            let mut insert = conn
                .prepare_cached(
                    "INSERT INTO audit_log (seq, at_ms, actor_kind, actor_id, action, outcome, \
                     person_id, resources, purpose, detail, prev_hash, entry_hash) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .map_err(write)?;
            for ((seq, prev, hash), f) in rows.iter().zip(fields) {
                insert
                    .execute(rusqlite::params![
                        seq,
                        f.at_ms,
                        f.actor_kind,
                        f.actor_id,
                        f.action,
                        f.outcome,
                        f.person_id,
                        f.resources,
                        f.purpose,
                        f.detail,
                        &prev[..],
                        &hash[..],
                    ])
                    .map_err(write)?;
            }
        }
        if let Some((last, _, hash)) = rows.last() {
            conn.prepare_cached("UPDATE audit_head SET seq = ?1, head_hash = ?2 WHERE id = 1")
                .and_then(|mut s| s.execute(rusqlite::params![last, &hash[..]]))
                .map_err(write)?;
        }
        conn.execute_batch("COMMIT").map_err(write)?;
        Ok(head_seq + 1)
    }
}

/// The PostgreSQL writer task: one batch at a time until every sender is gone.
async fn run_postgres_writer(pool: sqlx::PgPool, mut rx: mpsc::Receiver<Msg>) {
    let mut msgs = Vec::with_capacity(MAX_BATCH);
    let mut batch: Vec<(EntryFields, Reply)> = Vec::with_capacity(MAX_BATCH);
    loop {
        msgs.clear();
        if rx.recv_many(&mut msgs, MAX_BATCH).await == 0 {
            break;
        }
        take_batch(&mut msgs, &mut batch, &mut rx);
        if batch.is_empty() {
            continue;
        }
        let fields: Vec<&EntryFields> = batch.iter().map(|(f, _)| f).collect();
        let result = append_postgres(&pool, &fields).await;
        answer(&mut batch, result);
    }
}

/// The rows of a batch after the head `(seq, hash)`: (seq, prev, hash) per record.
fn chain_batch(
    head_seq: u64,
    head: [u8; 32],
    fields: &[&EntryFields],
) -> Vec<(i64, [u8; 32], [u8; 32])> {
    let mut prev = head;
    let mut out = Vec::with_capacity(fields.len());
    for (i, f) in fields.iter().enumerate() {
        let seq = head_seq + 1 + i as u64;
        let h = entry_hash(&prev, seq, f);
        out.push((i64::try_from(seq).unwrap_or(i64::MAX), prev, h));
        prev = h;
    }
    out
}

/// Appends in one transaction holding the `audit_head` row lock; returns the first seq.
async fn append_postgres(pool: &sqlx::PgPool, fields: &[&EntryFields]) -> Result<u64, AuditError> {
    let write = |e| AuditError::Write(Arc::new(e));
    let mut tx = pool.begin().await.map_err(write)?;
    let row = sqlx::query("SELECT seq, head_hash FROM audit_head WHERE id = 1 FOR UPDATE")
        .fetch_one(&mut *tx)
        .await
        .map_err(write)?;
    let (head_seq, head) = parse_head(
        row.try_get(0).map_err(write)?,
        &row.try_get::<Vec<u8>, _>(1).map_err(write)?,
    )?;
    let rows = chain_batch(head_seq, head, fields);
    let n = fields.len();
    let mut seq = Vec::with_capacity(n);
    let mut at = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut actor = Vec::with_capacity(n);
    let mut action = Vec::with_capacity(n);
    let mut outcome = Vec::with_capacity(n);
    let mut person = Vec::with_capacity(n);
    let mut resources = Vec::with_capacity(n);
    let mut purpose = Vec::with_capacity(n);
    let mut detail = Vec::with_capacity(n);
    let mut prevs = Vec::with_capacity(n);
    let mut hashes = Vec::with_capacity(n);
    for ((s, prev, hash), f) in rows.iter().zip(fields) {
        seq.push(*s);
        at.push(f.at_ms);
        kind.push(f.actor_kind.as_str());
        actor.push(f.actor_id.as_str());
        action.push(f.action.as_str());
        outcome.push(f.outcome.as_str());
        person.push(f.person_id.as_deref());
        resources.push(f.resources.as_str());
        purpose.push(f.purpose.as_deref());
        detail.push(f.detail.as_deref());
        prevs.push(prev.to_vec());
        hashes.push(hash.to_vec());
    }
    sqlx::query(
        "INSERT INTO audit_log (seq, at_ms, actor_kind, actor_id, action, outcome, person_id, \
         resources, purpose, detail, prev_hash, entry_hash) \
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
         $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bytea[], $12::bytea[])",
    )
    .bind(&seq)
    .bind(&at)
    .bind(&kind)
    .bind(&actor)
    .bind(&action)
    .bind(&outcome)
    .bind(&person)
    .bind(&resources)
    .bind(&purpose)
    .bind(&detail)
    .bind(&prevs)
    .bind(&hashes)
    .execute(&mut *tx)
    .await
    .map_err(write)?;
    if let Some((last, _, hash)) = rows.last() {
        sqlx::query("UPDATE audit_head SET seq = $1, head_hash = $2 WHERE id = 1")
            .bind(last)
            .bind(&hash[..])
            .execute(&mut *tx)
            .await
            .map_err(write)?;
    }
    tx.commit().await.map_err(write)?;
    Ok(head_seq + 1)
}

// ---------------------------------------------------------------- reading and verifying

const SELECT_ENTRIES: &str = "SELECT seq, at_ms, actor_kind, actor_id, action, outcome, \
     person_id, resources, purpose, detail, prev_hash, entry_hash FROM audit_log \
     WHERE seq > $1 ORDER BY seq LIMIT $2";

/// Text of a SQLite column read as bytes: a tampered value that is not UTF-8 is read lossily, so
/// its hash differs and verification names the entry instead of failing to read it.
fn lossy(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Up to [`VERIFY_PAGE`] entries with seq > `after`, in seq order.
pub async fn read_entries(db: &Db, after: i64) -> Result<Vec<StoredEntry>, AuditError> {
    let read = |e| AuditError::Read(Arc::new(e));
    let entries = match db {
        Db::Sqlite(pool) => {
            let rows = sqlx::query(SELECT_ENTRIES)
                .bind(after)
                .bind(VERIFY_PAGE)
                .fetch_all(pool)
                .await
                .map_err(read)?;
            rows.iter()
                .map(|r| {
                    let text = |i: usize| -> Result<Option<String>, sqlx::Error> {
                        Ok(lossy(r.try_get::<Option<Vec<u8>>, _>(i)?))
                    };
                    Ok(StoredEntry {
                        seq: r.try_get(0)?,
                        fields: EntryFields {
                            at_ms: r.try_get(1)?,
                            actor_kind: text(2)?.unwrap_or_default(),
                            actor_id: text(3)?.unwrap_or_default(),
                            action: text(4)?.unwrap_or_default(),
                            outcome: text(5)?.unwrap_or_default(),
                            person_id: text(6)?,
                            resources: text(7)?.unwrap_or_default(),
                            purpose: text(8)?,
                            detail: text(9)?,
                        },
                        prev_hash: r.try_get(10)?,
                        entry_hash: r.try_get(11)?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(read)?
        }
        Db::Postgres(pool) => {
            let rows = sqlx::query(SELECT_ENTRIES)
                .bind(after)
                .bind(VERIFY_PAGE)
                .fetch_all(pool)
                .await
                .map_err(read)?;
            rows.iter()
                .map(|r| {
                    Ok(StoredEntry {
                        seq: r.try_get(0)?,
                        fields: EntryFields {
                            at_ms: r.try_get(1)?,
                            actor_kind: r.try_get(2)?,
                            actor_id: r.try_get(3)?,
                            action: r.try_get(4)?,
                            outcome: r.try_get(5)?,
                            person_id: r.try_get(6)?,
                            resources: r.try_get(7)?,
                            purpose: r.try_get(8)?,
                            detail: r.try_get(9)?,
                        },
                        prev_hash: r.try_get(10)?,
                        entry_hash: r.try_get(11)?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(read)?
        }
    };
    Ok(entries)
}

/// Walks the whole log in seq order against `checkpoints` (signatures already checked). The outer
/// error is a read failure; the inner one names the first bad seq.
pub async fn verify_log(
    db: &Db,
    checkpoints: Vec<Checkpoint>,
) -> Result<Result<VerifySummary, VerifyFailure>, AuditError> {
    let mut verifier = ChainVerifier::new(checkpoints);
    let mut after = i64::MIN;
    loop {
        let page = read_entries(db, after).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            if let Err(f) = verifier.push(e) {
                return Ok(Err(f));
            }
        }
    }
    Ok(verifier.finish())
}

/// The signed notes of the checkpoints stored in the database, oldest first.
pub async fn stored_checkpoints(db: &Db) -> Result<Vec<String>, AuditError> {
    let notes = on_db!(db, |pool| {
        sqlx::query("SELECT note FROM audit_checkpoints ORDER BY id")
            .fetch_all(pool)
            .await
            .map_err(|e| AuditError::Read(Arc::new(e)))?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AuditError::Read(Arc::new(e)))?
    });
    Ok(notes)
}

/// Number of entries (from the entries themselves, not the head row).
pub async fn count(db: &Db) -> Result<i64, AuditError> {
    let n = on_db!(db, |pool| {
        sqlx::query("SELECT COUNT(*) FROM audit_log")
            .fetch_one(pool)
            .await
            .and_then(|r| r.try_get::<i64, _>(0))
            .map_err(|e| AuditError::Read(Arc::new(e)))?
    });
    Ok(n)
}

/// One partner access to a person's data, for the worker's access history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartnerAccessEntry {
    /// When (ms).
    pub at_ms: i64,
    /// The partner's id.
    pub partner: String,
    /// The partner's name, when registered.
    pub partner_name: Option<String>,
    /// `read`, `search`, `everything`, `export`.
    pub action: String,
    /// `permit` or `deny`.
    pub outcome: String,
    /// Resources served (0 for a deny).
    pub served: i64,
}

/// The newest `limit` partner accesses to `person_id`'s data, newest first.
pub async fn partner_accesses_of(
    db: &Db,
    person_id: &str,
    limit: i64,
) -> Result<Vec<PartnerAccessEntry>, AuditError> {
    let read = |e| AuditError::Read(Arc::new(e));
    const SQL: &str = "SELECT a.at_ms, a.actor_id, s.name, a.action, a.outcome, a.detail \
         FROM audit_log a LEFT JOIN services s ON s.id = a.actor_id \
         WHERE a.person_id = $1 AND a.actor_kind = 'partner' ORDER BY a.seq DESC LIMIT $2";
    let rows = on_db!(db, |pool| {
        sqlx::query(SQL)
            .bind(person_id)
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(read)?
            .into_iter()
            .map(|r| {
                let detail: Option<String> = r.try_get(5)?;
                let served = detail
                    .and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
                    .and_then(|d| d.get("served").and_then(serde_json::Value::as_i64))
                    .unwrap_or(0);
                Ok(PartnerAccessEntry {
                    at_ms: r.try_get(0)?,
                    partner: r.try_get(1)?,
                    partner_name: r.try_get(2)?,
                    action: r.try_get(3)?,
                    outcome: r.try_get(4)?,
                    served,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(read)?
    });
    Ok(rows)
}
