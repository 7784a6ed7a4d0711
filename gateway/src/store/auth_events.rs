//! Sign-in attempts, successes and failures alike (security-scenarios D5), with the card type, the
//! certificate fingerprint and the device (user agent). Issue 6 folds these into the audit chain.

use super::{Db, StoreError, on_db};
use sqlx::Row;

/// One attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthEvent {
    /// When.
    pub at_ms: i64,
    /// `success` or `failure`.
    pub outcome: &'static str,
    /// A stable reason code (`ok`, `nonce_consumed`, `certificate_revoked`, …).
    pub reason: String,
    /// `jpki` / `phr`, when known.
    pub card_type: Option<String>,
    /// SHA-256 of the certificate, when one was presented and parsed.
    pub cert_fingerprint: Option<Vec<u8>>,
    /// The person, on success.
    pub person_id: Option<String>,
    /// The device (User-Agent), truncated.
    pub device: Option<String>,
}

/// Appends an event.
pub async fn insert(db: &Db, event: &AuthEvent) -> Result<(), StoreError> {
    on_db!(db, |pool| {
        sqlx::query(
            "INSERT INTO auth_events (at_ms, outcome, reason, card_type, cert_fingerprint, person_id, device) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(event.at_ms)
        .bind(event.outcome)
        .bind(&event.reason)
        .bind(event.card_type.as_deref())
        .bind(event.cert_fingerprint.as_deref())
        .bind(event.person_id.as_deref())
        .bind(event.device.as_deref())
        .execute(pool)
        .await?;
    });
    Ok(())
}

/// Counts events by outcome and reason (tests).
pub async fn count(db: &Db, outcome: &str, reason: Option<&str>) -> Result<i64, StoreError> {
    let n = on_db!(db, |pool| {
        sqlx::query(
            "SELECT COUNT(*) FROM auth_events WHERE outcome = $1 AND ($2 IS NULL OR reason = $2)",
        )
        .bind(outcome)
        .bind(reason)
        .fetch_one(pool)
        .await?
        .try_get::<i64, _>(0)?
    });
    Ok(n)
}
