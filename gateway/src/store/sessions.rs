//! Browser sessions (security-scenarios D1–D3). Rows are keyed by the SHA-256 of the session id,
//! so a database reader cannot hijack sessions. Rotation at sign-in deletes the old row and its
//! nonces and inserts the new one in one transaction.

use super::{Db, StoreError, on_db};
use sqlx::Row;

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// The signed-in person, if any.
    pub person_id: Option<String>,
    /// Fingerprint of the certificate used to sign in.
    pub card_fingerprint: Option<Vec<u8>>,
    /// Creation time.
    pub created_at_ms: i64,
    /// Last request seen.
    pub last_seen_ms: i64,
    /// When the card sign-in happened.
    pub authenticated_at_ms: Option<i64>,
}

/// Inserts a new session.
pub async fn insert(db: &Db, id_hash: &[u8], row: &SessionRow) -> Result<(), StoreError> {
    on_db!(db, |pool| {
        sqlx::query(
            "INSERT INTO sessions (id_hash, person_id, card_fingerprint, created_at_ms, last_seen_ms, \
             authenticated_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id_hash)
        .bind(row.person_id.as_deref())
        .bind(row.card_fingerprint.as_deref())
        .bind(row.created_at_ms)
        .bind(row.last_seen_ms)
        .bind(row.authenticated_at_ms)
        .execute(pool)
        .await?;
    });
    Ok(())
}

/// Reads a session.
pub async fn get(db: &Db, id_hash: &[u8]) -> Result<Option<SessionRow>, StoreError> {
    let row = on_db!(db, |pool| {
        sqlx::query(
            "SELECT person_id, card_fingerprint, created_at_ms, last_seen_ms, authenticated_at_ms \
             FROM sessions WHERE id_hash = $1",
        )
        .bind(id_hash)
        .fetch_optional(pool)
        .await?
        .map(|r| {
            Ok::<_, sqlx::Error>(SessionRow {
                person_id: r.try_get(0)?,
                card_fingerprint: r.try_get(1)?,
                created_at_ms: r.try_get(2)?,
                last_seen_ms: r.try_get(3)?,
                authenticated_at_ms: r.try_get(4)?,
            })
        })
        .transpose()?
    });
    Ok(row)
}

/// Records activity.
pub async fn touch(db: &Db, id_hash: &[u8], now_ms: i64) -> Result<(), StoreError> {
    on_db!(db, |pool| {
        sqlx::query(
            "UPDATE sessions SET last_seen_ms = $2 WHERE id_hash = $1 AND last_seen_ms < $2",
        )
        .bind(id_hash)
        .bind(now_ms)
        .execute(pool)
        .await?;
    });
    Ok(())
}

/// Deletes a session and its nonces; true when it existed.
pub async fn delete(db: &Db, id_hash: &[u8]) -> Result<bool, StoreError> {
    let existed = on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM nonces WHERE session_hash = $1")
            .bind(id_hash)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        n > 0
    });
    Ok(existed)
}

/// Replaces session `old` (if any) by `new` in one transaction.
pub async fn rotate(
    db: &Db,
    old_hash: &[u8],
    new_hash: &[u8],
    row: &SessionRow,
) -> Result<(), StoreError> {
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM nonces WHERE session_hash = $1")
            .bind(old_hash)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(old_hash)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, person_id, card_fingerprint, created_at_ms, last_seen_ms, \
             authenticated_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(new_hash)
        .bind(row.person_id.as_deref())
        .bind(row.card_fingerprint.as_deref())
        .bind(row.created_at_ms)
        .bind(row.last_seen_ms)
        .bind(row.authenticated_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    });
    Ok(())
}

/// Deletes sessions idle since before `idle_cutoff_ms` or created before `absolute_cutoff_ms`.
pub async fn purge_expired(
    db: &Db,
    idle_cutoff_ms: i64,
    absolute_cutoff_ms: i64,
) -> Result<u64, StoreError> {
    let n = on_db!(db, |pool| {
        sqlx::query("DELETE FROM sessions WHERE last_seen_ms <= $1 OR created_at_ms <= $2")
            .bind(idle_cutoff_ms)
            .bind(absolute_cutoff_ms)
            .execute(pool)
            .await?
            .rows_affected()
    });
    Ok(n)
}

/// Deletes every session of a person (account disabled, D2).
pub async fn delete_for_person(db: &Db, person_id: &str) -> Result<u64, StoreError> {
    let n = on_db!(db, |pool| {
        sqlx::query("DELETE FROM sessions WHERE person_id = $1")
            .bind(person_id)
            .execute(pool)
            .await?
            .rows_affected()
    });
    Ok(n)
}
