//! Registered services (DESIGN §6): partners that read within consent and sources that deliver
//! data, each with the certificate of its mTLS client and, for partners, the keys of its
//! `private_key_jwt` assertions.

use super::{Db, StoreError, on_db};
use crate::domain::consent::{Category, categories_json, parse_categories};
use sqlx::Row;

/// `partner` or `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    /// A PHR service reading within consent.
    Partner,
    /// A health-check institution, insurer or OP cloud delivering data.
    Source,
}

impl ServiceKind {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Partner => "partner",
            ServiceKind::Source => "source",
        }
    }
}

/// One service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Id (also the OAuth `client_id` of a partner).
    pub id: String,
    /// Partner or source.
    pub kind: ServiceKind,
    /// Name shown to the worker.
    pub name: String,
    /// Purpose shown to the worker.
    pub purpose: String,
    /// Requested categories.
    pub categories: Vec<Category>,
    /// Requested consent period in days.
    pub period_days: i64,
    /// SHA-256 of the mTLS client certificate.
    pub certificate_sha256: Option<[u8; 32]>,
    /// JWK Set (JSON) of the assertion keys.
    pub jwks: Option<String>,
    /// Scopes, space separated.
    pub scopes: String,
    /// Requests per second allowed (burst the same).
    pub rate_per_sec: i64,
}

/// Inserts or replaces a service.
pub async fn upsert(db: &Db, s: &Service, now_ms: i64) -> Result<(), StoreError> {
    let categories = categories_json(&s.categories);
    let cert = s.certificate_sha256.map(|c| c.to_vec());
    on_db!(db, |pool| {
        sqlx::query(
            "INSERT INTO services (id, kind, name, purpose, categories, period_days, \
             certificate_sha256, jwks, scopes, rate_per_sec, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, name = excluded.name, \
             purpose = excluded.purpose, categories = excluded.categories, \
             period_days = excluded.period_days, certificate_sha256 = excluded.certificate_sha256, \
             jwks = excluded.jwks, scopes = excluded.scopes, rate_per_sec = excluded.rate_per_sec",
        )
        .bind(&s.id)
        .bind(s.kind.as_str())
        .bind(&s.name)
        .bind(&s.purpose)
        .bind(&categories)
        .bind(s.period_days)
        .bind(cert.as_deref())
        .bind(s.jwks.as_deref())
        .bind(&s.scopes)
        .bind(s.rate_per_sec)
        .bind(now_ms)
        .execute(pool)
        .await?;
    });
    Ok(())
}

const COLUMNS: &str = "id, kind, name, purpose, categories, period_days, certificate_sha256, \
                       jwks, scopes, rate_per_sec";

macro_rules! service_from_row {
    ($row:expr) => {{
        let row = $row;
        let kind: String = row.try_get(1)?;
        let categories: String = row.try_get(4)?;
        let cert: Option<Vec<u8>> = row.try_get(6)?;
        Service {
            id: row.try_get(0)?,
            kind: if kind == "partner" {
                ServiceKind::Partner
            } else {
                ServiceKind::Source
            },
            name: row.try_get(2)?,
            purpose: row.try_get(3)?,
            categories: parse_categories(&categories).unwrap_or_default(),
            period_days: row.try_get(5)?,
            certificate_sha256: cert.and_then(|c| <[u8; 32]>::try_from(c.as_slice()).ok()),
            jwks: row.try_get(7)?,
            scopes: row.try_get(8)?,
            rate_per_sec: row.try_get(9)?,
        }
    }};
}

/// One service by id.
pub async fn get(db: &Db, id: &str) -> Result<Option<Service>, StoreError> {
    let s = on_db!(db, |pool| {
        match sqlx::query(&format!("SELECT {COLUMNS} FROM services WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await?
        {
            Some(row) => Some(service_from_row!(row)),
            None => None,
        }
    });
    Ok(s)
}

/// Every service of a kind, by id.
pub async fn list(db: &Db, kind: ServiceKind) -> Result<Vec<Service>, StoreError> {
    let v = on_db!(db, |pool| {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM services WHERE kind = $1 ORDER BY id"
        ))
        .bind(kind.as_str())
        .fetch_all(pool)
        .await?;
        let mut v = Vec::with_capacity(rows.len());
        for row in rows {
            v.push(service_from_row!(row));
        }
        v
    });
    Ok(v)
}
