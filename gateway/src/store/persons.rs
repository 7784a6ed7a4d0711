//! Persons and their card bindings (DESIGN §4 step 4). A certificate (by SHA-256 fingerprint)
//! belongs to at most one person; the primary key makes a second binding of the same certificate
//! impossible, also between concurrent sign-ins.

use super::{Db, StoreError, on_db};
use sqlx::Row;

/// The INSERT of a binding, for either backend (ignored when the certificate is already bound).
macro_rules! insert_binding {
    ($binding:expr) => {
        sqlx::query(
            "INSERT INTO card_bindings (cert_fingerprint, person_id, card_type, subject, issuer, \
             serial_hex, not_before_ms, not_after_ms, created_at_ms, linked_from) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (cert_fingerprint) DO NOTHING",
        )
        .bind(&$binding.cert_fingerprint)
        .bind(&$binding.person_id)
        .bind(&$binding.card_type)
        .bind(&$binding.subject)
        .bind(&$binding.issuer)
        .bind(&$binding.serial_hex)
        .bind($binding.not_before_ms)
        .bind($binding.not_after_ms)
        .bind($binding.created_at_ms)
        .bind($binding.linked_from.as_deref())
    };
}

/// A certificate bound to a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// SHA-256 of the certificate DER.
    pub cert_fingerprint: Vec<u8>,
    /// The person.
    pub person_id: String,
    /// `jpki` or `phr`.
    pub card_type: String,
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial, hex.
    pub serial_hex: String,
    /// Validity start.
    pub not_before_ms: i64,
    /// Validity end.
    pub not_after_ms: i64,
    /// When bound.
    pub created_at_ms: i64,
    /// Fingerprint of the certificate that was present when this one was linked.
    pub linked_from: Option<Vec<u8>>,
}

/// The binding of a certificate.
pub async fn find_binding(db: &Db, fingerprint: &[u8]) -> Result<Option<Binding>, StoreError> {
    let row = on_db!(db, |pool| {
        sqlx::query(
            "SELECT cert_fingerprint, person_id, card_type, subject, issuer, serial_hex, not_before_ms, \
             not_after_ms, created_at_ms, linked_from FROM card_bindings WHERE cert_fingerprint = $1",
        )
        .bind(fingerprint)
        .fetch_optional(pool)
        .await?
        .map(|r| {
            Ok::<_, sqlx::Error>(Binding {
                cert_fingerprint: r.try_get(0)?,
                person_id: r.try_get(1)?,
                card_type: r.try_get(2)?,
                subject: r.try_get(3)?,
                issuer: r.try_get(4)?,
                serial_hex: r.try_get(5)?,
                not_before_ms: r.try_get(6)?,
                not_after_ms: r.try_get(7)?,
                created_at_ms: r.try_get(8)?,
                linked_from: r.try_get(9)?,
            })
        })
        .transpose()?
    });
    Ok(row)
}

/// Number of certificates bound to a person.
pub async fn count_bindings(db: &Db, person_id: &str) -> Result<i64, StoreError> {
    let n = on_db!(db, |pool| {
        sqlx::query("SELECT COUNT(*) FROM card_bindings WHERE person_id = $1")
            .bind(person_id)
            .fetch_one(pool)
            .await?
            .try_get::<i64, _>(0)?
    });
    Ok(n)
}

/// Creates a person with `binding` as its first certificate. False (and nothing written) when
/// the certificate is already bound, e.g. by a concurrent first sign-in.
pub async fn register(db: &Db, binding: &Binding) -> Result<bool, StoreError> {
    let inserted = on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        sqlx::query("INSERT INTO persons (id, created_at_ms) VALUES ($1, $2)")
            .bind(&binding.person_id)
            .bind(binding.created_at_ms)
            .execute(&mut *tx)
            .await?;
        let n = insert_binding!(binding)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        n == 1
    });
    Ok(inserted)
}

/// Adds a certificate to an existing person. False when the certificate is already bound.
pub async fn link(db: &Db, binding: &Binding) -> Result<bool, StoreError> {
    let inserted = on_db!(db, |pool| {
        insert_binding!(binding)
            .execute(pool)
            .await?
            .rows_affected()
            == 1
    });
    Ok(inserted)
}
