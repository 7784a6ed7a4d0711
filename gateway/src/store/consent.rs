//! Consent documents and the current consent per (person, service) (DESIGN §6–§7). A commit
//! writes the new version and moves the head in one transaction, only if the head is still at the
//! version the document was prepared against (monotonic versions: an older document replayed
//! after a newer one is refused, E9). On SQLite the commit runs with `synchronous=FULL` (H2).

use super::{Db, StoreError, on_db};
use crate::domain::consent::{
    ConsentDocument, ConsentState, Status, categories_json, parse_categories,
};
use sqlx::Row;

/// Outcome of a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Written; the head is at the document's version.
    Committed,
    /// The head moved since the document was prepared (or the version was used).
    VersionConflict,
    /// The card record's version of this card is already stored (a replay racing its original).
    CardRecordReplayed,
}

/// The PHR card's consent record committed with a document.
#[derive(Debug, Clone, Copy)]
pub struct CardRecord<'a> {
    /// The record (tag `E1`) as the card wrote it.
    pub bytes: &'a [u8],
    /// Its card-wide version.
    pub version: u32,
}

pub(crate) fn state_from(
    version: i64,
    status: &str,
    categories: &str,
    start: i64,
    end: i64,
) -> ConsentState {
    // A stored category list that does not parse grants nothing (fail closed).
    let categories = parse_categories(categories).unwrap_or_default();
    ConsentState {
        version,
        status: Status::parse(status),
        categories,
        period_start_ms: start,
        period_end_ms: end,
    }
}

/// The current consent of `person_id` towards `service_id`.
pub async fn head(
    db: &Db,
    person_id: &str,
    service_id: &str,
) -> Result<Option<ConsentState>, StoreError> {
    let s = on_db!(db, |pool| {
        match sqlx::query(
            "SELECT version, status, categories, period_start_ms, period_end_ms \
             FROM consent_heads WHERE person_id = $1 AND service_id = $2",
        )
        .bind(person_id)
        .bind(service_id)
        .fetch_optional(pool)
        .await?
        {
            Some(r) => Some(state_from(
                r.try_get(0)?,
                r.try_get::<&str, _>(1)?,
                r.try_get::<&str, _>(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
            )),
            None => None,
        }
    });
    Ok(s)
}

/// The consent head in the five columns of `$row` from `$at` (version, status, categories, start,
/// end), `None` when the version is NULL (no head). Column errors leave the enclosing function
/// through `?`.
macro_rules! head_at {
    ($row:expr, $at:expr) => {
        match $row.try_get::<Option<i64>, _>($at)? {
            Some(version) => Some($crate::store::consent::state_from(
                version,
                $row.try_get::<&str, _>($at + 1)?,
                $row.try_get::<&str, _>($at + 2)?,
                $row.try_get($at + 3)?,
                $row.try_get($at + 4)?,
            )),
            None => None,
        }
    };
}
pub(crate) use head_at;

/// [`head_and_data_version`]'s statement: `$1` person, `$2` service; columns: the data version,
/// then the head's version, status, categories, start and end (NULL without a head).
pub(crate) const HEAD_AND_DATA_VERSION_SQL: &str = "SELECT p.data_version, h.version, h.status, h.categories, h.period_start_ms, \
     h.period_end_ms FROM persons p LEFT JOIN consent_heads h \
     ON h.person_id = p.id AND h.service_id = $2 WHERE p.id = $1";

/// The consent head of (person, service) and the person's data version (0 for no such person),
/// read in one statement.
pub async fn head_and_data_version(
    db: &Db,
    person_id: &str,
    service_id: &str,
) -> Result<(Option<ConsentState>, i64), StoreError> {
    let s = on_db!(db, |pool| {
        match sqlx::query(HEAD_AND_DATA_VERSION_SQL)
            .bind(person_id)
            .bind(service_id)
            .fetch_optional(pool)
            .await?
        {
            Some(r) => (head_at!(r, 1), r.try_get::<i64, _>(0)?),
            None => (None, 0),
        }
    });
    Ok(s)
}

/// Every consent head of a person, by service id.
pub async fn heads_of_person(
    db: &Db,
    person_id: &str,
) -> Result<Vec<(String, ConsentState)>, StoreError> {
    let v = on_db!(db, |pool| {
        let rows = sqlx::query(
            "SELECT service_id, version, status, categories, period_start_ms, period_end_ms \
             FROM consent_heads WHERE person_id = $1 ORDER BY service_id",
        )
        .bind(person_id)
        .fetch_all(pool)
        .await?;
        let mut v = Vec::with_capacity(rows.len());
        for r in rows {
            v.push((
                r.try_get::<String, _>(0)?,
                state_from(
                    r.try_get(1)?,
                    r.try_get::<&str, _>(2)?,
                    r.try_get::<&str, _>(3)?,
                    r.try_get(4)?,
                    r.try_get(5)?,
                ),
            ));
        }
        v
    });
    Ok(v)
}

/// Persons whose consent towards `service_id` is a permit in force at `now_ms`.
pub async fn consenting_persons(
    db: &Db,
    service_id: &str,
    now_ms: i64,
    limit: i64,
    after: &str,
) -> Result<Vec<String>, StoreError> {
    let v = on_db!(db, |pool| {
        sqlx::query(
            "SELECT person_id FROM consent_heads WHERE service_id = $1 AND status = 'permit' \
             AND period_start_ms <= $2 AND period_end_ms > $2 AND person_id > $3 \
             ORDER BY person_id LIMIT $4",
        )
        .bind(service_id)
        .bind(now_ms)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<Vec<_>, _>>()?
    });
    Ok(v)
}

/// Keeps a prepared document until the card signs it (or it expires).
pub async fn put_pending(
    db: &Db,
    nonce: &str,
    session_hash: &[u8],
    document: &str,
    expires_at_ms: i64,
) -> Result<(), StoreError> {
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM consent_pending WHERE session_hash = $1")
            .bind(session_hash)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO consent_pending (nonce, session_hash, document, expires_at_ms) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(nonce)
        .bind(session_hash)
        .bind(document)
        .bind(expires_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    });
    Ok(())
}

/// The pending document of a session, without consuming it.
pub async fn peek_pending(
    db: &Db,
    session_hash: &[u8],
) -> Result<Option<(String, String, i64)>, StoreError> {
    let r = on_db!(db, |pool| {
        match sqlx::query(
            "SELECT nonce, document, expires_at_ms FROM consent_pending WHERE session_hash = $1",
        )
        .bind(session_hash)
        .fetch_optional(pool)
        .await?
        {
            Some(r) => Some((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)),
            None => None,
        }
    });
    Ok(r)
}

/// Consumes the pending document of `nonce` for the session; false when already consumed.
pub async fn take_pending(
    db: &Db,
    nonce: &str,
    session_hash: &[u8],
    now_ms: i64,
) -> Result<bool, StoreError> {
    let taken = on_db!(db, |pool| {
        sqlx::query(
            "DELETE FROM consent_pending WHERE nonce = $1 AND session_hash = $2 \
             AND expires_at_ms > $3 RETURNING nonce",
        )
        .bind(nonce)
        .bind(session_hash)
        .bind(now_ms)
        .fetch_optional(pool)
        .await?
        .is_some()
    });
    Ok(taken)
}

/// Deletes expired pending documents.
pub async fn purge_pending(db: &Db, now_ms: i64) -> Result<u64, StoreError> {
    let n = on_db!(db, |pool| {
        sqlx::query("DELETE FROM consent_pending WHERE expires_at_ms <= $1")
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected()
    });
    Ok(n)
}

const INSERT_VERSION: &str = "INSERT INTO consent_versions (person_id, service_id, version, \
     action, categories, period_start_ms, period_end_ms, document, token, card_fingerprint, \
     committed_at_ms, card_record, card_version) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

/// The highest card-wide version of the consent records stored for `person_id` from the card
/// with `card_fingerprint` (none before its first PHR-card commit).
pub async fn last_card_version(
    db: &Db,
    person_id: &str,
    card_fingerprint: &[u8],
) -> Result<Option<i64>, StoreError> {
    let v = on_db!(db, |pool| {
        sqlx::query(
            "SELECT MAX(card_version) FROM consent_versions \
             WHERE person_id = $1 AND card_fingerprint = $2",
        )
        .bind(person_id)
        .bind(card_fingerprint)
        .fetch_one(pool)
        .await?
        .try_get::<Option<i64>, _>(0)?
    });
    Ok(v)
}

/// Writes version `doc.version` (with the card's record, for a PHR card) and moves the head to
/// it, if the head is at `doc.version - 1` (absent for version 1).
pub async fn commit(
    db: &Db,
    doc: &ConsentDocument,
    token: &str,
    card_fingerprint: &[u8],
    card_record: Option<CardRecord<'_>>,
    now_ms: i64,
) -> Result<CommitOutcome, StoreError> {
    let state = doc.resulting_state();
    let categories = categories_json(&state.categories);
    let canonical = doc.canonical();
    let action = match doc.action {
        crate::domain::consent::Action::Grant => "grant",
        crate::domain::consent::Action::Revoke => "revoke",
    };
    // The head moves first (it takes the write lock on SQLite at once): insert for version 1,
    // otherwise update only from the previous version.
    let head_sql = if doc.version == 1 {
        "INSERT INTO consent_heads (person_id, service_id, version, status, categories, \
         period_start_ms, period_end_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (person_id, service_id) DO NOTHING"
    } else {
        "UPDATE consent_heads SET version = $3, status = $4, categories = $5, \
         period_start_ms = $6, period_end_ms = $7 \
         WHERE person_id = $1 AND service_id = $2 AND version = $3 - 1"
    };
    // The same two statements on either backend, in the transaction `$tx`.
    macro_rules! write_version {
        ($tx:expr) => {{
            let moved = sqlx::query(head_sql)
                .bind(&doc.person_id)
                .bind(&doc.service_id)
                .bind(doc.version)
                .bind(state.status.as_str())
                .bind(&categories)
                .bind(state.period_start_ms)
                .bind(state.period_end_ms)
                .execute(&mut *$tx)
                .await?
                .rows_affected();
            if moved == 1 {
                let inserted = sqlx::query(INSERT_VERSION)
                    .bind(&doc.person_id)
                    .bind(&doc.service_id)
                    .bind(doc.version)
                    .bind(action)
                    .bind(&categories)
                    .bind(state.period_start_ms)
                    .bind(state.period_end_ms)
                    .bind(&canonical)
                    .bind(token)
                    .bind(card_fingerprint)
                    .bind(now_ms)
                    .bind(card_record.map(|r| r.bytes))
                    .bind(card_record.map(|r| i64::from(r.version)))
                    .execute(&mut *$tx)
                    .await;
                match inserted {
                    Ok(_) => {
                        $tx.commit().await?;
                        CommitOutcome::Committed
                    }
                    // Only the card-record index can be violated here: the head moved, so the
                    // (person, service, version) key is new.
                    Err(sqlx::Error::Database(e))
                        if card_record.is_some() && e.is_unique_violation() =>
                    {
                        $tx.rollback().await?;
                        CommitOutcome::CardRecordReplayed
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                $tx.rollback().await?;
                CommitOutcome::VersionConflict
            }
        }};
    }
    let outcome = match db {
        Db::Sqlite(pool) => {
            let mut conn = pool.acquire().await?;
            super::sqlite_sync_full(&mut conn).await?;
            let result = async {
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                Ok::<_, sqlx::Error>(write_version!(tx))
            }
            .await;
            super::sqlite_sync_normal(&mut conn).await;
            result?
        }
        Db::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            write_version!(tx)
        }
    };
    Ok(outcome)
}

/// The stored documents of a person towards a service, oldest first (version, canonical JSON).
pub async fn versions(
    db: &Db,
    person_id: &str,
    service_id: &str,
) -> Result<Vec<(i64, String)>, StoreError> {
    Ok(stored_versions(db, person_id, service_id)
        .await?
        .into_iter()
        .map(|(version, document, _)| (version, document))
        .collect())
}

/// The card records stored with a person's documents towards a service, oldest first (version,
/// the record bytes when the commit was made with a PHR card).
pub async fn card_records(
    db: &Db,
    person_id: &str,
    service_id: &str,
) -> Result<Vec<(i64, Option<Vec<u8>>)>, StoreError> {
    Ok(stored_versions(db, person_id, service_id)
        .await?
        .into_iter()
        .map(|(version, _, record)| (version, record))
        .collect())
}

/// Version, document and card record of every stored version, oldest first.
async fn stored_versions(
    db: &Db,
    person_id: &str,
    service_id: &str,
) -> Result<Vec<(i64, String, Option<Vec<u8>>)>, StoreError> {
    let v = on_db!(db, |pool| {
        sqlx::query(
            "SELECT version, document, card_record FROM consent_versions WHERE person_id = $1 \
             AND service_id = $2 ORDER BY version",
        )
        .bind(person_id)
        .bind(service_id)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<Vec<_>, _>>()?
    });
    Ok(v)
}
