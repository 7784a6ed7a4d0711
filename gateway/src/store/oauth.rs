//! Partner OAuth state (RFC 7523 §3 replay, RFC 8705 §3 binding): used assertion ids and issued
//! access tokens (kept only as SHA-256). Single use of a `jti` is one `INSERT … ON CONFLICT DO
//! NOTHING`, so of concurrent token requests with one assertion, on any number of gateways, one
//! wins.

use super::{Db, StoreError, on_db};
use crate::domain::oauth::TokenBinding;
use sqlx::Row;

/// Records `jti` of `client_id` as used until `expires_at_ms`. False when it was already used.
pub async fn use_jti(
    db: &Db,
    client_id: &str,
    jti: &str,
    expires_at_ms: i64,
) -> Result<bool, StoreError> {
    let inserted = on_db!(db, |pool| {
        sqlx::query(
            "INSERT INTO partner_assertion_jtis (client_id, jti, expires_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (client_id, jti) DO NOTHING",
        )
        .bind(client_id)
        .bind(jti)
        .bind(expires_at_ms)
        .execute(pool)
        .await?
        .rows_affected()
    });
    Ok(inserted == 1)
}

/// Stores an issued access token's hash and binding.
pub async fn insert_token(
    db: &Db,
    token_hash: &[u8; 32],
    binding: &TokenBinding,
    issued_at_ms: i64,
) -> Result<(), StoreError> {
    on_db!(db, |pool| {
        sqlx::query(
            "INSERT INTO partner_access_tokens \
             (token_hash, client_id, certificate_sha256, scope, issued_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_hash.as_slice())
        .bind(&binding.client_id)
        .bind(binding.certificate_sha256.as_slice())
        .bind(&binding.scope)
        .bind(issued_at_ms)
        .bind(binding.expires_at_ms)
        .execute(pool)
        .await?;
    });
    Ok(())
}

/// The binding of the token with this hash, if stored.
pub async fn find_token(
    db: &Db,
    token_hash: &[u8; 32],
) -> Result<Option<TokenBinding>, StoreError> {
    let row = on_db!(db, |pool| {
        sqlx::query(
            "SELECT client_id, certificate_sha256, scope, expires_at_ms \
             FROM partner_access_tokens WHERE token_hash = $1",
        )
        .bind(token_hash.as_slice())
        .fetch_optional(pool)
        .await?
        .map(|row| {
            let cert: Vec<u8> = row.try_get(1)?;
            Ok::<_, sqlx::Error>((row.try_get(0)?, cert, row.try_get(2)?, row.try_get(3)?))
        })
        .transpose()?
    });
    Ok(row.and_then(|(client_id, cert, scope, expires_at_ms)| {
        Some(TokenBinding {
            client_id,
            certificate_sha256: <[u8; 32]>::try_from(cert.as_slice()).ok()?,
            scope,
            expires_at_ms,
        })
    }))
}

/// Revokes every token of a client (its registration was withdrawn or its key rotated).
pub async fn revoke_client_tokens(db: &Db, client_id: &str) -> Result<u64, StoreError> {
    let n = on_db!(db, |pool| {
        sqlx::query("DELETE FROM partner_access_tokens WHERE client_id = $1")
            .bind(client_id)
            .execute(pool)
            .await?
            .rows_affected()
    });
    Ok(n)
}

/// Deletes used assertion ids and tokens that expired before `now_ms`.
pub async fn purge_expired(db: &Db, now_ms: i64) -> Result<u64, StoreError> {
    let n = on_db!(db, |pool| {
        let a = sqlx::query("DELETE FROM partner_assertion_jtis WHERE expires_at_ms < $1")
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected();
        let b = sqlx::query("DELETE FROM partner_access_tokens WHERE expires_at_ms < $1")
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected();
        a + b
    });
    Ok(n)
}
