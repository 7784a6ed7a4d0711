//! Challenge nonces (DESIGN §4 step 1): one row per outstanding nonce, bound to a session hash and
//! a purpose. Consumption is one `DELETE … RETURNING`, so of any number of concurrent consumers
//! on any number of gateways exactly one gets the row.

use super::{Db, StoreError, on_db};
use sqlx::Row;

/// Stores `nonce` for the session and purpose, replacing any earlier one of the same pair.
pub async fn replace(
    db: &Db,
    nonce: &str,
    session_hash: &[u8],
    purpose: &str,
    expires_at_ms: i64,
) -> Result<(), StoreError> {
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM nonces WHERE session_hash = $1 AND purpose = $2")
            .bind(session_hash)
            .bind(purpose)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO nonces (nonce, session_hash, purpose, expires_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(nonce)
        .bind(session_hash)
        .bind(purpose)
        .bind(expires_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    });
    Ok(())
}

/// The outstanding nonce of a session and purpose with its expiry, without consuming it.
pub async fn peek(
    db: &Db,
    session_hash: &[u8],
    purpose: &str,
) -> Result<Option<(String, i64)>, StoreError> {
    let row = on_db!(db, |pool| {
        sqlx::query(
            "SELECT nonce, expires_at_ms FROM nonces WHERE session_hash = $1 AND purpose = $2",
        )
        .bind(session_hash)
        .bind(purpose)
        .fetch_optional(pool)
        .await?
        .map(|row| Ok::<_, sqlx::Error>((row.try_get(0)?, row.try_get(1)?)))
        .transpose()?
    });
    Ok(row)
}

/// Consumes the nonce if it is still there, bound to this session and purpose, and unexpired at
/// `now_ms`. True for exactly one caller.
pub async fn consume(
    db: &Db,
    nonce: &str,
    session_hash: &[u8],
    purpose: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let row = on_db!(db, |pool| {
        sqlx::query(
            "DELETE FROM nonces WHERE nonce = $1 AND session_hash = $2 AND purpose = $3 \
             AND expires_at_ms > $4 RETURNING nonce",
        )
        .bind(nonce)
        .bind(session_hash)
        .bind(purpose)
        .bind(now_ms)
        .fetch_optional(pool)
        .await?
        .is_some()
    });
    Ok(row)
}

/// Deletes the nonces of a session (sign-in rotation, sign-out).
pub async fn delete_for_session(db: &Db, session_hash: &[u8]) -> Result<u64, StoreError> {
    let n = on_db!(db, |pool| {
        sqlx::query("DELETE FROM nonces WHERE session_hash = $1")
            .bind(session_hash)
            .execute(pool)
            .await?
            .rows_affected()
    });
    Ok(n)
}

/// Deletes every nonce expired at `now_ms`; returns how many.
pub async fn purge_expired(db: &Db, now_ms: i64) -> Result<u64, StoreError> {
    let n = on_db!(db, |pool| {
        sqlx::query("DELETE FROM nonces WHERE expires_at_ms <= $1")
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected()
    });
    Ok(n)
}

/// Number of stored nonces (tests, metrics).
pub async fn count(db: &Db) -> Result<i64, StoreError> {
    let n = on_db!(db, |pool| {
        sqlx::query("SELECT COUNT(*) FROM nonces")
            .fetch_one(pool)
            .await?
            .try_get::<i64, _>(0)?
    });
    Ok(n)
}
