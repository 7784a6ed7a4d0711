//! The iPHR as stored FHIR resources (DESIGN §5–§7): one import per file (its SHA-256 makes
//! re-import a no-op), written all-or-nothing in one transaction; resources keyed by type and id,
//! tagged with the person key of their source and their data category; person keys linked to
//! persons.

use super::{Db, StoreError, bump_data_version, on_db};
use crate::domain::consent::ConsentState;
use sqlx::Row;

/// One resource to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewResource {
    /// `resourceType`.
    pub resource_type: String,
    /// `id`.
    pub id: String,
    /// The source's person key.
    pub person_key: String,
    /// Data category (`A.checkup` …), empty for the Patient.
    pub category: String,
    /// Code of the first FHIR `category` (`laboratory`, `vital-signs` …).
    pub fhir_category: Option<String>,
    /// `system|code` of the main coding.
    pub code: Option<String>,
    /// `YYYY-MM-DD`.
    pub effective: Option<String>,
    /// The resource JSON.
    pub json: String,
}

/// A person key with the Patient id its resources reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPersonKey {
    /// The key.
    pub person_key: String,
    /// The converter's Patient id for the key (references are rewritten to the person's id).
    pub patient_id: String,
}

/// One file's content, converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewImport {
    /// SHA-256 of the file's bytes.
    pub content_sha256: [u8; 32],
    /// The delivering service, if any.
    pub source_id: Option<String>,
    /// File name as delivered.
    pub file_name: String,
    /// Format tag.
    pub format: String,
    /// Records converted.
    pub records: i64,
    /// Person keys.
    pub person_keys: Vec<NewPersonKey>,
    /// Resources.
    pub resources: Vec<NewResource>,
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Stored as import `id` with this many new resources.
    Imported {
        /// Import id.
        id: i64,
        /// Resources stored (duplicates of earlier imports are skipped).
        resources: u64,
    },
    /// These bytes were imported before as `id`; nothing was written.
    AlreadyImported {
        /// Import id.
        id: i64,
    },
}

/// Rows per multi-row INSERT (SQLite allows 32,766 parameters; 9 per row).
const CHUNK: usize = 500;

/// What [`import_for_person`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersonImport {
    /// Stored (or found already stored) and its person keys linked to the person.
    Done(ImportOutcome),
    /// A person key of the file is linked to another person: nothing was stored.
    KeyOfAnotherPerson(String),
    /// A person key of the file is not linked yet but already holds records of other imports:
    /// a pull alone does not claim them (a misfiled file would hand them to the wrong person);
    /// staff link it after an identity check (`link-person`). Nothing was stored.
    KeyNeedsIdentityCheck(String),
}

/// Stores an import in one transaction.
pub async fn import(db: &Db, imp: &NewImport, now_ms: i64) -> Result<ImportOutcome, StoreError> {
    match import_inner(db, imp, None, now_ms).await? {
        PersonImport::Done(outcome) => Ok(outcome),
        // Invariant: without a person no key is linked, so none can be refused.
        PersonImport::KeyOfAnotherPerson(key) | PersonImport::KeyNeedsIdentityCheck(key) => {
            Err(StoreError::Database(sqlx::Error::Protocol(format!(
                "unexpected person conflict on {key}"
            ))))
        }
    }
}

/// Stores an import in one transaction and, in the same transaction, links every person key of
/// the file to `person_id` (a pull with that person's grant, `docs/source-protocol.md` §7). A key
/// already linked to another person refuses the whole file. Bytes imported before (e.g. through
/// the drop directory) store nothing again, but their keys are linked the same way.
pub async fn import_for_person(
    db: &Db,
    imp: &NewImport,
    person_id: &str,
    now_ms: i64,
) -> Result<PersonImport, StoreError> {
    import_inner(db, imp, Some(person_id), now_ms).await
}

/// Links every person key of `imp` to `person` inside `tx` (the import being `import_id`);
/// evaluates to the first key that cannot be linked, if any (the caller rolls back): a key
/// linked to someone else, or an unlinked key that already holds records of other imports.
macro_rules! link_keys {
    ($tx:ident, $imp:ident, $person:ident, $now_ms:ident, $import_id:expr) => {{
        let mut refused = None;
        for k in &$imp.person_keys {
            let linked = sqlx::query(
                "UPDATE person_keys SET person_id = $2, \
                 linked_at_ms = COALESCE(linked_at_ms, $3) \
                 WHERE person_key = $1 AND (person_id = $2 OR (person_id IS NULL AND NOT EXISTS \
                 (SELECT 1 FROM iphr_resources r WHERE r.person_key = $1 AND r.import_id <> $4)))",
            )
            .bind(&k.person_key)
            .bind($person)
            .bind($now_ms)
            .bind($import_id)
            .execute(&mut *$tx)
            .await?
            .rows_affected();
            if linked != 1 {
                let owner: Option<String> =
                    sqlx::query("SELECT person_id FROM person_keys WHERE person_key = $1")
                        .bind(&k.person_key)
                        .fetch_optional(&mut *$tx)
                        .await?
                        .map(|r| r.try_get::<Option<String>, _>(0))
                        .transpose()?
                        .flatten();
                refused = Some(match owner {
                    Some(_) => PersonImport::KeyOfAnotherPerson(k.person_key.clone()),
                    None => PersonImport::KeyNeedsIdentityCheck(k.person_key.clone()),
                });
                break;
            }
        }
        refused
    }};
}

/// Bumps, inside `tx`, the data version of every person linked to one of `imp`'s keys (what
/// their `$everything` serves may have changed).
macro_rules! bump_linked_persons {
    ($tx:ident, $imp:ident) => {
        for chunk in $imp.person_keys.chunks(CHUNK) {
            let mut q = sqlx::QueryBuilder::new(
                "UPDATE persons SET data_version = data_version + 1 WHERE id IN \
                 (SELECT person_id FROM person_keys WHERE person_key IN (",
            );
            let mut keys = q.separated(", ");
            for k in chunk {
                keys.push_bind(&k.person_key);
            }
            q.push("))");
            q.build().execute(&mut *$tx).await?;
        }
    };
}

async fn import_inner(
    db: &Db,
    imp: &NewImport,
    person_id: Option<&str>,
    now_ms: i64,
) -> Result<PersonImport, StoreError> {
    let outcome = on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let id: Option<i64> = sqlx::query(
            "INSERT INTO imports (content_sha256, source_id, file_name, format, records, \
             resources, imported_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (content_sha256) DO NOTHING RETURNING id",
        )
        .bind(imp.content_sha256.as_slice())
        .bind(imp.source_id.as_deref())
        .bind(&imp.file_name)
        .bind(&imp.format)
        .bind(imp.records)
        .bind(i64::try_from(imp.resources.len()).unwrap_or(i64::MAX))
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
        match id {
            None => 'again: {
                let existing: i64 = sqlx::query("SELECT id FROM imports WHERE content_sha256 = $1")
                    .bind(imp.content_sha256.as_slice())
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?;
                if let Some(person) = person_id
                    && let Some(refused) = link_keys!(tx, imp, person, now_ms, existing)
                {
                    tx.rollback().await?;
                    break 'again refused;
                }
                if person_id.is_some() {
                    bump_linked_persons!(tx, imp);
                }
                tx.commit().await?;
                PersonImport::Done(ImportOutcome::AlreadyImported { id: existing })
            }
            Some(id) => 'stored: {
                for chunk in imp.person_keys.chunks(CHUNK) {
                    let mut q = sqlx::QueryBuilder::new(
                        "INSERT INTO person_keys (person_key, patient_id) ",
                    );
                    q.push_values(chunk, |mut b, k| {
                        b.push_bind(&k.person_key).push_bind(&k.patient_id);
                    });
                    q.push(" ON CONFLICT (person_key) DO NOTHING");
                    q.build().execute(&mut *tx).await?;
                }
                if let Some(person) = person_id
                    && let Some(refused) = link_keys!(tx, imp, person, now_ms, id)
                {
                    tx.rollback().await?;
                    break 'stored refused;
                }
                let mut stored = 0u64;
                for chunk in imp.resources.chunks(CHUNK) {
                    let mut q = sqlx::QueryBuilder::new(
                        "INSERT INTO iphr_resources (resource_type, id, person_key, category, \
                         fhir_category, code, effective, import_id, json) ",
                    );
                    q.push_values(chunk, |mut b, r| {
                        b.push_bind(&r.resource_type)
                            .push_bind(&r.id)
                            .push_bind(&r.person_key)
                            .push_bind(&r.category)
                            .push_bind(r.fhir_category.as_deref())
                            .push_bind(r.code.as_deref())
                            .push_bind(r.effective.as_deref())
                            .push_bind(id)
                            .push_bind(&r.json);
                    });
                    q.push(" ON CONFLICT (resource_type, id, person_key) DO NOTHING");
                    stored += q.build().execute(&mut *tx).await?.rows_affected();
                }
                bump_linked_persons!(tx, imp);
                tx.commit().await?;
                PersonImport::Done(ImportOutcome::Imported {
                    id,
                    resources: stored,
                })
            }
        }
    });
    Ok(outcome)
}

/// Whether bytes with this SHA-256 were imported and every person key of their resources is
/// linked to `person_id`.
pub async fn import_held_by(
    db: &Db,
    sha256: &[u8; 32],
    person_id: &str,
) -> Result<bool, StoreError> {
    let held = on_db!(db, |pool| {
        let row = sqlx::query(
            "SELECT COUNT(*), \
             SUM(CASE WHEN k.person_id = $2 THEN 0 ELSE 1 END) \
             FROM imports i \
             JOIN iphr_resources r ON r.import_id = i.id \
             JOIN person_keys k ON k.person_key = r.person_key \
             WHERE i.content_sha256 = $1",
        )
        .bind(sha256.as_slice())
        .bind(person_id)
        .fetch_one(pool)
        .await?;
        let resources: i64 = row.try_get(0)?;
        let foreign: Option<i64> = row.try_get(1)?;
        resources > 0 && foreign.unwrap_or(0) == 0
    });
    Ok(held)
}

/// The import id of bytes with this SHA-256, if they were imported.
pub async fn import_of_sha256(db: &Db, sha256: &[u8; 32]) -> Result<Option<i64>, StoreError> {
    let id = on_db!(db, |pool| {
        sqlx::query("SELECT id FROM imports WHERE content_sha256 = $1")
            .bind(sha256.as_slice())
            .fetch_optional(pool)
            .await?
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?
    });
    Ok(id)
}

/// Links a person key to a person (after the person proved, by card, who they are at the
/// source). False when the key is unknown or already linked to someone else.
pub async fn link_person_key(
    db: &Db,
    person_key: &str,
    person_id: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let n = on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let n = sqlx::query(
            "UPDATE person_keys SET person_id = $2, linked_at_ms = $3 \
             WHERE person_key = $1 AND (person_id IS NULL OR person_id = $2)",
        )
        .bind(person_key)
        .bind(person_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            bump_data_version!(tx, person_id);
        }
        tx.commit().await?;
        n
    });
    Ok(n == 1)
}

/// The Patient ids the person's resources reference (one per linked key).
pub async fn patient_ids_of(db: &Db, person_id: &str) -> Result<Vec<String>, StoreError> {
    let v = on_db!(db, |pool| {
        sqlx::query("SELECT patient_id FROM person_keys WHERE person_id = $1 ORDER BY person_key")
            .bind(person_id)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<Vec<_>, _>>()?
    });
    Ok(v)
}

/// A stored resource with the person it belongs to (if its key is linked) and its category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResource {
    /// Type.
    pub resource_type: String,
    /// Id.
    pub id: String,
    /// Linked person.
    pub person_id: Option<String>,
    /// Category.
    pub category: String,
    /// JSON.
    pub json: String,
}

/// [`get_with_consent`]'s statement: `$1` type, `$2` id, `$3` service; columns: type, id, person,
/// category, JSON, then the consent head's version, status, categories, start and end.
pub(crate) const GET_WITH_CONSENT_SQL: &str = "SELECT r.resource_type, r.id, k.person_id, r.category, r.json, \
     h.version, h.status, h.categories, h.period_start_ms, h.period_end_ms \
     FROM iphr_resources r JOIN person_keys k ON k.person_key = r.person_key \
     LEFT JOIN consent_heads h ON h.person_id = k.person_id AND h.service_id = $3 \
     WHERE r.resource_type = $1 AND r.id = $2 ORDER BY r.person_key LIMIT 64";

/// The stored copies of `resource_type/id` (one per person key that carries it, e.g. an Organization
/// shared by many records), each with its person's consent head towards `service_id`, read in one
/// statement so that the data and the decision come from one snapshot.
pub async fn get_with_consent(
    db: &Db,
    resource_type: &str,
    id: &str,
    service_id: &str,
) -> Result<Vec<(StoredResource, Option<ConsentState>)>, StoreError> {
    let v = on_db!(db, |pool| {
        sqlx::query(GET_WITH_CONSENT_SQL)
            .bind(resource_type)
            .bind(id)
            .bind(service_id)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| {
                let head = crate::store::consent::head_at!(r, 5);
                Ok::<_, sqlx::Error>((
                    StoredResource {
                        resource_type: r.try_get(0)?,
                        id: r.try_get(1)?,
                        person_id: r.try_get(2)?,
                        category: r.try_get(3)?,
                        json: r.try_get(4)?,
                    },
                    head,
                ))
            })
            .collect::<Result<Vec<_>, _>>()?
    });
    Ok(v)
}

/// A search over one person's resources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    /// Only these categories (never empty in practice: the consented ones).
    pub categories: Vec<String>,
    /// Only this type.
    pub resource_type: Option<String>,
    /// Only this FHIR category code.
    pub fhir_category: Option<String>,
    /// Only this `system|code`.
    pub code: Option<String>,
    /// `effective >= from` (YYYY-MM-DD).
    pub date_from: Option<String>,
    /// `effective <= to` (YYYY-MM-DD).
    pub date_to: Option<String>,
    /// Page size.
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

/// The person's resources matching `search`, by type then id; the Patient resources excluded.
pub async fn search(
    db: &Db,
    person_id: &str,
    search: &Search,
) -> Result<Vec<StoredResource>, StoreError> {
    if search.categories.is_empty() {
        return Ok(Vec::new());
    }
    let v = on_db!(db, |pool| {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT r.resource_type, r.id, r.category, r.json FROM person_keys k \
             JOIN iphr_resources r ON r.person_key = k.person_key WHERE k.person_id = ",
        );
        q.push_bind(person_id);
        q.push(" AND r.category IN (");
        let mut sep = q.separated(", ");
        for c in &search.categories {
            sep.push_bind(c);
        }
        q.push(")");
        if let Some(t) = &search.resource_type {
            q.push(" AND r.resource_type = ").push_bind(t);
        }
        if let Some(c) = &search.fhir_category {
            q.push(" AND r.fhir_category = ").push_bind(c);
        }
        if let Some(c) = &search.code {
            q.push(" AND r.code = ").push_bind(c);
        }
        if let Some(d) = &search.date_from {
            q.push(" AND r.effective >= ").push_bind(d);
        }
        if let Some(d) = &search.date_to {
            q.push(" AND r.effective <= ").push_bind(d);
        }
        q.push(" ORDER BY r.resource_type, r.id LIMIT ")
            .push_bind(search.limit)
            .push(" OFFSET ")
            .push_bind(search.offset);
        q.build()
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| {
                Ok::<_, sqlx::Error>(StoredResource {
                    resource_type: r.try_get(0)?,
                    id: r.try_get(1)?,
                    person_id: Some(person_id.to_owned()),
                    category: r.try_get(2)?,
                    json: r.try_get(3)?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    });
    Ok(v)
}

/// Separates the values of [`EverythingRows`]: ASCII RS, which compact JSON never holds raw
/// (inside strings it is escaped as `\u001e`) and FHIR ids cannot contain.
pub const RECORD_SEPARATOR: char = '\u{1e}';

/// A person's `$everything` rows, each column aggregated into one value by the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EverythingRows {
    /// The person's data version when the rows were read (migration 0010).
    pub data_version: i64,
    /// The Patient ids of the person's linked keys, separated by [`RECORD_SEPARATOR`].
    pub patient_ids: String,
    /// The person's newest stored Patient resource.
    pub patient: Option<String>,
    /// Number of resources.
    pub count: i64,
    /// `Type/id` of each resource, separated by [`RECORD_SEPARATOR`].
    pub references: String,
    /// Each resource's JSON as stored, separated by [`RECORD_SEPARATOR`], in the same order.
    pub resources: String,
}

/// Everything of one person within `categories` (at most `limit` rows) and the person's newest
/// Patient resource, in one statement that aggregates the rows into three values: one row to
/// copy instead of hundreds. PostgreSQL returns one copy per `Type/id`, by type then id; SQLite
/// returns the rows in index order (`iphr_resources_person`, migration 0009), copies included,
/// and the caller orders them ([`RECORD_SEPARATOR`] splits the values).
pub async fn everything_rows(
    db: &Db,
    person_id: &str,
    categories: &[&str],
    limit: i64,
) -> Result<EverythingRows, StoreError> {
    let sql = everything_sql(matches!(db, Db::Postgres(_)), categories.len());
    let v = on_db!(db, |pool| {
        let mut q = sqlx::query(&sql).bind(person_id);
        for c in categories {
            q = q.bind(*c);
        }
        let r = q.bind(limit).fetch_one(pool).await?;
        EverythingRows {
            data_version: r.try_get::<Option<i64>, _>(0)?.unwrap_or(0),
            patient_ids: r.try_get(1)?,
            patient: r.try_get(2)?,
            count: r.try_get(3)?,
            references: r.try_get(4)?,
            resources: r.try_get(5)?,
        }
    });
    Ok(v)
}

/// The statement of [`everything_rows`] for `categories` categories: `$1` the person, `$2…` the
/// categories, the last parameter the limit. Its six columns are [`EverythingRows`]' fields in
/// order.
pub(crate) fn everything_sql(postgres: bool, categories: usize) -> String {
    let (agg_open, sep) = if postgres {
        ("string_agg", "chr(30)")
    } else {
        ("group_concat", "char(30)")
    };
    let mut sql = format!(
        "SELECT (SELECT p.data_version FROM persons p WHERE p.id = $1), \
         (SELECT coalesce({agg_open}(k.patient_id, {sep}), '') FROM person_keys k \
         WHERE k.person_id = $1), \
         (SELECT r.json FROM person_keys k JOIN iphr_resources r ON r.person_key = k.person_key \
         WHERE k.person_id = $1 AND r.category = '' ORDER BY r.import_id DESC LIMIT 1), count(*), "
    );
    if postgres {
        sql.push_str(
            "coalesce(string_agg(s.rt || '/' || s.id, chr(30) ORDER BY s.rt, s.id), ''), \
             coalesce(string_agg(s.json, chr(30) ORDER BY s.rt, s.id), '') FROM (\
             SELECT DISTINCT ON (r.resource_type, r.id) r.resource_type AS rt, r.id AS id, \
             r.json AS json FROM person_keys k \
             JOIN iphr_resources r ON r.person_key = k.person_key WHERE k.person_id = $1",
        );
    } else {
        // No sort in SQLite (it costs more than reading the rows): the rows come in index
        // order, and the caller orders them by type then id and keeps one copy of each.
        sql.push_str(
            "coalesce(group_concat(s.reference, char(30)), ''), \
             coalesce(group_concat(s.json, char(30)), '') FROM (\
             SELECT r.resource_type || '/' || r.id AS reference, r.json AS json \
             FROM person_keys k \
             JOIN iphr_resources r ON r.person_key = k.person_key WHERE k.person_id = $1",
        );
    }
    // `IN (NULL)` matches nothing: no category, no resources (the Patient is still read).
    sql.push_str(" AND r.category IN (NULL");
    for i in 0..categories {
        sql.push_str(&format!(", ${}", i + 2));
    }
    sql.push(')');
    if postgres {
        sql.push_str(" ORDER BY r.resource_type, r.id");
    }
    sql.push_str(&format!(" LIMIT ${}) s", categories + 2));
    sql
}

/// The newest stored Patient resource of the person (demographics for `Patient/{id}`).
pub async fn patient_of(db: &Db, person_id: &str) -> Result<Option<String>, StoreError> {
    let r = on_db!(db, |pool| {
        sqlx::query(
            "SELECT r.json FROM person_keys k JOIN iphr_resources r ON r.person_key = k.person_key \
             WHERE k.person_id = $1 AND r.resource_type = 'Patient' \
             ORDER BY r.import_id DESC LIMIT 1",
        )
        .bind(person_id)
        .fetch_optional(pool)
        .await?
        .map(|r| r.try_get::<String, _>(0))
        .transpose()?
    });
    Ok(r)
}

/// Number of imports and resources (tests, status).
pub async fn counts(db: &Db) -> Result<(i64, i64), StoreError> {
    let c = on_db!(db, |pool| {
        let imports: i64 = sqlx::query("SELECT COUNT(*) FROM imports")
            .fetch_one(pool)
            .await?
            .try_get(0)?;
        let resources: i64 = sqlx::query("SELECT COUNT(*) FROM iphr_resources")
            .fetch_one(pool)
            .await?
            .try_get(0)?;
        (imports, resources)
    });
    Ok(c)
}
