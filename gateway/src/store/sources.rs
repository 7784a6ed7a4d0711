//! Links to sources (`docs/source-protocol.md` §3, §4, §7): per (person, source) the pseudonym,
//! the card credential the source registered, the current grant, the list cursor past the stored
//! files, the last pull's outcome, and a lease (several gateways on one PostgreSQL never pull the
//! same pair at once); and the nonces a source issued for a grant being signed at a kiosk.

use super::{Db, StoreError, on_db};
use sqlx::Row;

/// A person's link at one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLink {
    /// The person.
    pub person_id: String,
    /// The source's service id.
    pub source_id: String,
    /// The person's id at the source.
    pub pseudonym: String,
    /// `phr` or `jpki`.
    pub credential_type: String,
    /// Holder certificate (PHR card), DER.
    pub holder_certificate: Option<Vec<u8>>,
    /// Service-binding certificate (PHR card) or the JPKI auth certificate, DER.
    pub binding_certificate: Vec<u8>,
    /// When linked (ms).
    pub linked_at_ms: i64,
    /// The current grant, if any.
    pub grant: Option<StoredGrant>,
    /// Where the next pull starts.
    pub cursor: Option<String>,
    /// When the last pull ended (ms).
    pub last_pull_ms: Option<i64>,
    /// `ok`, `partial`, `failed` or `refused`.
    pub last_outcome: Option<String>,
    /// The last pull's error, if any.
    pub last_error: Option<String>,
}

/// A card-signed grant as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGrant {
    /// Canonical TLV.
    pub bytes: Vec<u8>,
    /// Signature.
    pub signature: Vec<u8>,
    /// `p256` or `jpki`.
    pub alg: String,
    /// Expiry (ms).
    pub expires_ms: i64,
}

const COLUMNS: &str = "person_id, source_id, pseudonym, credential_type, holder_certificate, \
     binding_certificate, linked_at_ms, grant_bytes, grant_signature, grant_alg, \
     grant_expires_ms, list_cursor, last_pull_ms, last_outcome, last_error";

macro_rules! link_from_row {
    ($row:expr) => {{
        let row = $row;
        let grant_bytes: Option<Vec<u8>> = row.try_get(7)?;
        let grant_signature: Option<Vec<u8>> = row.try_get(8)?;
        let grant_alg: Option<String> = row.try_get(9)?;
        let grant_expires: Option<i64> = row.try_get(10)?;
        SourceLink {
            person_id: row.try_get(0)?,
            source_id: row.try_get(1)?,
            pseudonym: row.try_get(2)?,
            credential_type: row.try_get(3)?,
            holder_certificate: row.try_get(4)?,
            binding_certificate: row.try_get(5)?,
            linked_at_ms: row.try_get(6)?,
            grant: match (grant_bytes, grant_signature, grant_alg, grant_expires) {
                (Some(bytes), Some(signature), Some(alg), Some(expires_ms)) => Some(StoredGrant {
                    bytes,
                    signature,
                    alg,
                    expires_ms,
                }),
                _ => None,
            },
            cursor: row.try_get(11)?,
            last_pull_ms: row.try_get(12)?,
            last_outcome: row.try_get(13)?,
            last_error: row.try_get(14)?,
        }
    }};
}

/// Stores a new link (or replaces the credential of the person's link at that source, which
/// drops its grant; the cursor stays, files already stored stay stored). False when the
/// pseudonym is linked to another person.
pub async fn put_link(db: &Db, link: &SourceLink) -> Result<bool, StoreError> {
    let n = on_db!(db, |pool| {
        sqlx::query(
            "INSERT INTO source_links (person_id, source_id, pseudonym, credential_type, \
             holder_certificate, binding_certificate, linked_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (person_id, source_id) DO UPDATE SET pseudonym = excluded.pseudonym, \
             credential_type = excluded.credential_type, \
             holder_certificate = excluded.holder_certificate, \
             binding_certificate = excluded.binding_certificate, \
             linked_at_ms = excluded.linked_at_ms, grant_bytes = NULL, grant_signature = NULL, \
             grant_alg = NULL, grant_expires_ms = NULL",
        )
        .bind(&link.person_id)
        .bind(&link.source_id)
        .bind(&link.pseudonym)
        .bind(&link.credential_type)
        .bind(link.holder_certificate.as_deref())
        .bind(&link.binding_certificate)
        .bind(link.linked_at_ms)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    });
    match n {
        Ok(n) => Ok(n == 1),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The person's link at a source.
pub async fn get(
    db: &Db,
    person_id: &str,
    source_id: &str,
) -> Result<Option<SourceLink>, StoreError> {
    let l = on_db!(db, |pool| {
        match sqlx::query(&format!(
            "SELECT {COLUMNS} FROM source_links WHERE person_id = $1 AND source_id = $2"
        ))
        .bind(person_id)
        .bind(source_id)
        .fetch_optional(pool)
        .await?
        {
            Some(row) => Some(link_from_row!(row)),
            None => None,
        }
    });
    Ok(l)
}

/// Every link of a person, by source id.
pub async fn of_person(db: &Db, person_id: &str) -> Result<Vec<SourceLink>, StoreError> {
    let v = on_db!(db, |pool| {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM source_links WHERE person_id = $1 ORDER BY source_id"
        ))
        .bind(person_id)
        .fetch_all(pool)
        .await?;
        let mut v = Vec::with_capacity(rows.len());
        for row in rows {
            v.push(link_from_row!(row));
        }
        v
    });
    Ok(v)
}

/// Files from `source_id` stored with records of `person_id` (each counted once).
pub async fn files_stored(db: &Db, person_id: &str, source_id: &str) -> Result<i64, StoreError> {
    let n = on_db!(db, |pool| {
        sqlx::query(
            "SELECT COUNT(DISTINCT i.id) FROM imports i \
             JOIN iphr_resources r ON r.import_id = i.id \
             JOIN person_keys k ON k.person_key = r.person_key \
             WHERE i.source_id = $1 AND k.person_id = $2",
        )
        .bind(source_id)
        .bind(person_id)
        .fetch_one(pool)
        .await?
        .try_get::<i64, _>(0)?
    });
    Ok(n)
}

/// Links of a source whose grant has not expired at `now_ms` (candidates of a scheduled pull;
/// consent is checked by the caller), by person id after `after`.
pub async fn with_live_grant(
    db: &Db,
    source_id: &str,
    now_ms: i64,
    after: &str,
    limit: i64,
) -> Result<Vec<SourceLink>, StoreError> {
    let v = on_db!(db, |pool| {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM source_links WHERE source_id = $1 AND grant_bytes IS NOT NULL \
             AND grant_expires_ms > $2 AND person_id > $3 ORDER BY person_id LIMIT $4"
        ))
        .bind(source_id)
        .bind(now_ms)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?;
        let mut v = Vec::with_capacity(rows.len());
        for row in rows {
            v.push(link_from_row!(row));
        }
        v
    });
    Ok(v)
}

/// Stores the person's new grant at a source and forgets the cursor: the new grant's scope may
/// cover files an older one skipped (files already held are not downloaded again).
pub async fn set_grant(
    db: &Db,
    person_id: &str,
    source_id: &str,
    grant: &StoredGrant,
) -> Result<bool, StoreError> {
    let n = on_db!(db, |pool| {
        sqlx::query(
            "UPDATE source_links SET grant_bytes = $3, grant_signature = $4, grant_alg = $5, \
             grant_expires_ms = $6, list_cursor = NULL WHERE person_id = $1 AND source_id = $2",
        )
        .bind(person_id)
        .bind(source_id)
        .bind(&grant.bytes)
        .bind(&grant.signature)
        .bind(&grant.alg)
        .bind(grant.expires_ms)
        .execute(pool)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}

/// Drops the grant (the source refused it: scheduled pulls stop until a new one is signed),
/// only if it is still the one given.
pub async fn drop_grant(
    db: &Db,
    person_id: &str,
    source_id: &str,
    grant_bytes: &[u8],
) -> Result<(), StoreError> {
    on_db!(db, |pool| {
        sqlx::query(
            "UPDATE source_links SET grant_bytes = NULL, grant_signature = NULL, \
             grant_alg = NULL, grant_expires_ms = NULL \
             WHERE person_id = $1 AND source_id = $2 AND grant_bytes = $3",
        )
        .bind(person_id)
        .bind(source_id)
        .bind(grant_bytes)
        .execute(pool)
        .await?;
    });
    Ok(())
}

/// Moves the cursor (only past stored files; the caller decides).
pub async fn set_cursor(
    db: &Db,
    person_id: &str,
    source_id: &str,
    grant_bytes: &[u8],
    cursor: &str,
) -> Result<bool, StoreError> {
    let n = on_db!(db, |pool| {
        sqlx::query(
            "UPDATE source_links SET list_cursor = $4 \
             WHERE person_id = $1 AND source_id = $2 AND grant_bytes = $3",
        )
        .bind(person_id)
        .bind(source_id)
        .bind(grant_bytes)
        .bind(cursor)
        .execute(pool)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}

/// Records how a pull ended.
pub async fn record_pull(
    db: &Db,
    person_id: &str,
    source_id: &str,
    at_ms: i64,
    outcome: &str,
    error: Option<&str>,
) -> Result<(), StoreError> {
    on_db!(db, |pool| {
        sqlx::query(
            "UPDATE source_links SET last_pull_ms = $3, last_outcome = $4, last_error = $5 \
             WHERE person_id = $1 AND source_id = $2",
        )
        .bind(person_id)
        .bind(source_id)
        .bind(at_ms)
        .bind(outcome)
        .bind(error)
        .execute(pool)
        .await?;
    });
    Ok(())
}

/// Takes (or renews) the lease on a pair until `until_ms`; false when another owner holds an
/// unexpired lease.
pub async fn take_lease(
    db: &Db,
    person_id: &str,
    source_id: &str,
    owner: &str,
    now_ms: i64,
    until_ms: i64,
) -> Result<bool, StoreError> {
    let n = on_db!(db, |pool| {
        sqlx::query(
            "UPDATE source_links SET lease_owner = $3, lease_until_ms = $5 \
             WHERE person_id = $1 AND source_id = $2 \
             AND (lease_owner IS NULL OR lease_owner = $3 OR lease_until_ms <= $4)",
        )
        .bind(person_id)
        .bind(source_id)
        .bind(owner)
        .bind(now_ms)
        .bind(until_ms)
        .execute(pool)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}

/// Gives the lease back (only if `owner` holds it).
pub async fn release_lease(
    db: &Db,
    person_id: &str,
    source_id: &str,
    owner: &str,
) -> Result<(), StoreError> {
    on_db!(db, |pool| {
        sqlx::query(
            "UPDATE source_links SET lease_owner = NULL, lease_until_ms = NULL \
             WHERE person_id = $1 AND source_id = $2 AND lease_owner = $3",
        )
        .bind(person_id)
        .bind(source_id)
        .bind(owner)
        .execute(pool)
        .await?;
    });
    Ok(())
}

/// A nonce a source issued, waiting for the card's grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingNonce {
    /// base64url of the bytes.
    pub nonce: String,
    /// The source.
    pub source_id: String,
    /// The person.
    pub person_id: String,
    /// Expiry (ms).
    pub expires_at_ms: i64,
}

/// Keeps a nonce for the session (replacing the session's earlier one for that source).
pub async fn put_nonce(
    db: &Db,
    pending: &PendingNonce,
    session_hash: &[u8],
) -> Result<(), StoreError> {
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM source_nonces WHERE session_hash = $1 AND source_id = $2")
            .bind(session_hash)
            .bind(&pending.source_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO source_nonces (nonce, source_id, person_id, session_hash, \
             expires_at_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&pending.nonce)
        .bind(&pending.source_id)
        .bind(&pending.person_id)
        .bind(session_hash)
        .bind(pending.expires_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    });
    Ok(())
}

/// Consumes the session's unexpired nonce `nonce` for (person, source); false when it is
/// unknown, expired, another session's, or already used.
pub async fn take_nonce(
    db: &Db,
    nonce: &str,
    source_id: &str,
    person_id: &str,
    session_hash: &[u8],
    now_ms: i64,
) -> Result<bool, StoreError> {
    let taken = on_db!(db, |pool| {
        sqlx::query(
            "DELETE FROM source_nonces WHERE nonce = $1 AND source_id = $2 AND person_id = $3 \
             AND session_hash = $4 AND expires_at_ms > $5 RETURNING nonce",
        )
        .bind(nonce)
        .bind(source_id)
        .bind(person_id)
        .bind(session_hash)
        .bind(now_ms)
        .fetch_optional(pool)
        .await?
        .is_some()
    });
    Ok(taken)
}

/// Deletes expired nonces.
pub async fn purge_nonces(db: &Db, now_ms: i64) -> Result<u64, StoreError> {
    let n = on_db!(db, |pool| {
        sqlx::query("DELETE FROM source_nonces WHERE expires_at_ms <= $1")
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected()
    });
    Ok(n)
}
