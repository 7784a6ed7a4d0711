//! The audit log (security-scenarios G2–G4, G6, G7; DESIGN §7) on SQLite and PostgreSQL, same test
//! bodies: append-only triggers, 10,000 entries with 200 random single-byte changes, reorder,
//! deletion, insertion, truncation and rollback against a signed checkpoint, hostile field values,
//! audit write failure, concurrent writers (two `AuditLog`s = two gateways on one database), and
//! the `iphr-gateway` audit subcommands on a tampered SQLite file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Backend, TestDb};
use gateway::domain::audit::{
    Actor, AuditAction, AuditRecord, CheckpointSigner, EntryFields, Outcome, StoredEntry,
    Violation, entry_hash,
};
use gateway::store::Db;
use gateway::store::audit::{AuditError, AuditLog, count, read_entries, verify_log};
use serde_json::json;
use std::process::Command;

macro_rules! on {
    ($db:expr, |$p:ident| $body:expr) => {
        match $db {
            Db::Sqlite($p) => $body,
            Db::Postgres($p) => $body,
        }
    };
}

/// xorshift64*, seeded from the clock; the seed is printed so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("AUDIT_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("AUDIT_TEST_SEED={seed}");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn record(i: u64) -> AuditRecord {
    let actions = AuditAction::ALL;
    AuditRecord {
        at_ms: 1_763_700_000_000 + i as i64,
        actor: match i % 4 {
            0 => Actor::Partner(format!("partner-{}", i % 7)),
            1 => Actor::Person(format!("person-{}", i % 97)),
            2 => Actor::Source(format!("source-{}", i % 3)),
            _ => Actor::Staff(format!("staff-{}", i % 5)),
        },
        action: actions[(i as usize) % actions.len()],
        outcome: if i.is_multiple_of(5) {
            Outcome::Deny
        } else {
            Outcome::Permit
        },
        person_id: Some(format!("person-{}", i % 97)),
        resources: vec![format!("Observation/obs-{i}"), format!("Condition/c-{i}")],
        purpose: Some("occupational-health".into()),
        detail: Some(json!({"request": format!("req-{i}"), "status": 200})),
    }
}

/// Appends `n` records from 64 concurrent callers; returns their seqs.
async fn fill(log: &AuditLog, from: u64, n: u64) -> Vec<u64> {
    let mut tasks = Vec::new();
    for t in 0..64u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            let mut i = from + t;
            while i < from + n {
                seqs.push(log.record(record(i)).await.unwrap());
                i += 64;
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    all
}

async fn verify_ok(db: &Db) -> u64 {
    verify_log(db, vec![]).await.unwrap().unwrap().size
}

async fn entry(db: &Db, seq: i64) -> StoredEntry {
    let e = read_entries(db, seq - 1).await.unwrap().remove(0);
    assert_eq!(e.seq, seq);
    e
}

async fn exec(db: &Db, sql: &str) -> Result<u64, sqlx::Error> {
    on!(db, |p| sqlx::raw_sql(sql)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))
}

/// Tests act as an attacker with full database access: the append-only triggers go first.
async fn drop_triggers(db: &Db) {
    match db {
        Db::Sqlite(_) => {
            exec(
                db,
                "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;",
            )
            .await
            .unwrap();
        }
        Db::Postgres(_) => {
            exec(
                db,
                "DROP TRIGGER audit_log_no_update ON audit_log; \
                 DROP TRIGGER audit_log_no_truncate ON audit_log;",
            )
            .await
            .unwrap();
        }
    }
}

async fn insert_raw(db: &Db, e: &StoredEntry) {
    let f = &e.fields;
    on!(db, |p| {
        sqlx::query(
            "INSERT INTO audit_log (seq, at_ms, actor_kind, actor_id, action, outcome, person_id, \
             resources, purpose, detail, prev_hash, entry_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(e.seq)
        .bind(f.at_ms)
        .bind(&f.actor_kind)
        .bind(&f.actor_id)
        .bind(&f.action)
        .bind(&f.outcome)
        .bind(&f.person_id)
        .bind(&f.resources)
        .bind(&f.purpose)
        .bind(&f.detail)
        .bind(&e.prev_hash)
        .bind(&e.entry_hash)
        .execute(p)
        .await
        .unwrap()
        .rows_affected()
    });
}

async fn set_text(db: &Db, column: &str, seq: i64, value: Option<&str>) {
    let sql = format!("UPDATE audit_log SET {column} = $1 WHERE seq = $2");
    on!(db, |p| sqlx::query(&sql)
        .bind(value)
        .bind(seq)
        .execute(p)
        .await
        .unwrap()
        .rows_affected());
}

async fn set_int(db: &Db, column: &str, seq: i64, value: i64) {
    let sql = format!("UPDATE audit_log SET {column} = $1 WHERE seq = $2");
    on!(db, |p| sqlx::query(&sql)
        .bind(value)
        .bind(seq)
        .execute(p)
        .await
        .unwrap()
        .rows_affected());
}

async fn set_blob(db: &Db, column: &str, seq: i64, value: &[u8]) {
    let sql = format!("UPDATE audit_log SET {column} = $1 WHERE seq = $2");
    on!(db, |p| sqlx::query(&sql)
        .bind(value)
        .bind(seq)
        .execute(p)
        .await
        .unwrap()
        .rows_affected());
}

/// Moves every entry with seq > `after` by `delta` (±1) without primary-key clashes.
async fn shift(db: &Db, after: i64, delta: i64) {
    exec(
        db,
        &format!("UPDATE audit_log SET seq = -seq WHERE seq > {after}"),
    )
    .await
    .unwrap();
    exec(
        db,
        &format!("UPDATE audit_log SET seq = -seq + ({delta}) WHERE seq < 0"),
    )
    .await
    .unwrap();
}

async fn expect_failure(
    db: &Db,
    checkpoints: Vec<gateway::domain::audit::Checkpoint>,
) -> (u64, Violation) {
    let f = verify_log(db, checkpoints).await.unwrap().unwrap_err();
    (f.seq, f.violation)
}

const TEXT_COLUMNS: [&str; 8] = [
    "actor_kind",
    "actor_id",
    "action",
    "outcome",
    "person_id",
    "resources",
    "purpose",
    "detail",
];

/// One random single-byte change at `seq`; returns a description. The caller restores.
async fn flip_one(db: &Db, rng: &mut Rng, seq: i64, original: &StoredEntry) -> String {
    let choice = rng.below(12);
    match choice {
        0..=7 => {
            let column = TEXT_COLUMNS[choice as usize];
            let f = &original.fields;
            let value = match column {
                "actor_kind" => f.actor_kind.clone(),
                "actor_id" => f.actor_id.clone(),
                "action" => f.action.clone(),
                "outcome" => f.outcome.clone(),
                "person_id" => f.person_id.clone().unwrap(),
                "resources" => f.resources.clone(),
                "purpose" => f.purpose.clone().unwrap(),
                _ => f.detail.clone().unwrap(),
            };
            let mut bytes = value.into_bytes();
            let at = rng.below(bytes.len() as u64) as usize;
            assert!(bytes[at].is_ascii());
            // Another printable ASCII byte: the value stays valid UTF-8 (PostgreSQL text).
            let old = bytes[at];
            let mut new = b' ' + rng.below(95) as u8;
            if new == old {
                new = if old == b'~' { b' ' } else { old + 1 };
            }
            bytes[at] = new;
            set_text(db, column, seq, Some(std::str::from_utf8(&bytes).unwrap())).await;
            format!("{column}[{at}] {:?}->{:?}", old as char, new as char)
        }
        8 => {
            let bit = rng.below(64);
            set_int(db, "at_ms", seq, original.fields.at_ms ^ (1i64 << bit)).await;
            format!("at_ms bit {bit}")
        }
        9 => {
            // A seq moved beyond the end (bits 14..62: no clash with 1..=10,000, stays positive).
            let bit = 14 + rng.below(49);
            set_int(db, "seq", seq, seq ^ (1i64 << bit)).await;
            format!("seq bit {bit}")
        }
        _ => {
            let column = if choice == 10 {
                "prev_hash"
            } else {
                "entry_hash"
            };
            let mut h = if choice == 10 {
                original.prev_hash.clone()
            } else {
                original.entry_hash.clone()
            };
            let at = rng.below(32) as usize;
            h[at] ^= 1 + rng.below(255) as u8;
            set_blob(db, column, seq, &h).await;
            format!("{column}[{at}]")
        }
    }
}

async fn restore(db: &Db, seq_now: i64, original: &StoredEntry) {
    exec(db, &format!("DELETE FROM audit_log WHERE seq = {seq_now}"))
        .await
        .unwrap();
    insert_raw(db, original).await;
}

// ---------------------------------------------------------------- G2

async fn append_only(backend: Backend) {
    let t = TestDb::new(backend).await;
    let log = AuditLog::start(t.db.clone()).await.unwrap();
    fill(&log, 0, 10).await;
    let signer = signer();
    log.checkpoint(&signer, 1).await.unwrap();
    for sql in [
        "UPDATE audit_log SET outcome = 'permit' WHERE seq = 5",
        "DELETE FROM audit_log WHERE seq = 10",
        "DELETE FROM audit_log",
        "UPDATE audit_checkpoints SET size = 3",
        "DELETE FROM audit_checkpoints",
    ] {
        let e = exec(&t.db, sql).await.unwrap_err();
        assert!(e.to_string().contains("append-only"), "{sql}: {e}");
    }
    if let Db::Postgres(_) = t.db {
        for sql in ["TRUNCATE audit_log", "TRUNCATE audit_checkpoints"] {
            let e = exec(&t.db, sql).await.unwrap_err();
            assert!(e.to_string().contains("append-only"), "{sql}: {e}");
        }
    }
    assert_eq!(count(&t.db).await.unwrap(), 10);
    assert_eq!(verify_ok(&t.db).await, 10);
    log.shutdown().await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g2_update_and_delete_refused_sqlite() {
    append_only(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g2_update_and_delete_refused_postgres() {
    append_only(Backend::Postgres).await;
}

// ---------------------------------------------------------------- G3, G4

fn signer() -> CheckpointSigner {
    CheckpointSigner::from_pkcs8(
        "test.example/audit",
        &CheckpointSigner::generate_pkcs8().unwrap(),
    )
    .unwrap()
}

async fn tampering(backend: Backend) {
    const N: i64 = 10_000;
    let t = TestDb::new(backend).await;
    let db = &t.db;
    let log = AuditLog::start(db.clone()).await.unwrap();
    let seqs = fill(&log, 0, N as u64).await;
    assert_eq!(seqs, (1..=N as u64).collect::<Vec<_>>());
    assert_eq!(verify_ok(db).await, N as u64);
    drop_triggers(db).await;
    let mut rng = Rng::new();

    // G3: 200 random single-byte changes, each detected at its seq, restored in between.
    for round in 0..200 {
        let seq = 1 + rng.below(N as u64) as i64;
        let original = entry(db, seq).await;
        let what = flip_one(db, &mut rng, seq, &original).await;
        let (bad, violation) = expect_failure(db, vec![]).await;
        assert_eq!(bad, seq as u64, "round {round}: {what}: {violation}");
        let seq_now = if what.starts_with("seq") {
            assert!(
                matches!(violation, Violation::Gap { .. }),
                "{what}: {violation}"
            );
            let e = read_entries(db, N).await.unwrap();
            assert_eq!(e.len(), 1, "{what}");
            e[0].seq
        } else {
            assert_eq!(violation, Violation::ContentChanged, "{what}");
            seq
        };
        restore(db, seq_now, &original).await;
        if round % 50 == 49 {
            assert_eq!(verify_ok(db).await, N as u64);
        }
    }
    assert_eq!(verify_ok(db).await, N as u64);

    // Reorder: swap two entries.
    let (i, j) = (1234i64, 8765i64);
    let swap = async |db: &Db| {
        exec(
            db,
            &format!("UPDATE audit_log SET seq = -1 WHERE seq = {i}"),
        )
        .await
        .unwrap();
        exec(
            db,
            &format!("UPDATE audit_log SET seq = {i} WHERE seq = {j}"),
        )
        .await
        .unwrap();
        exec(
            db,
            &format!("UPDATE audit_log SET seq = {j} WHERE seq = -1"),
        )
        .await
        .unwrap();
    };
    swap(db).await;
    assert_eq!(
        expect_failure(db, vec![]).await,
        (i as u64, Violation::ContentChanged)
    );
    swap(db).await;
    assert_eq!(verify_ok(db).await, N as u64);
    // Adjacent swap too.
    let (i, j) = (500i64, 501i64);
    exec(
        db,
        &format!("UPDATE audit_log SET seq = -1 WHERE seq = {i}"),
    )
    .await
    .unwrap();
    exec(
        db,
        &format!("UPDATE audit_log SET seq = {i} WHERE seq = {j}"),
    )
    .await
    .unwrap();
    exec(
        db,
        &format!("UPDATE audit_log SET seq = {j} WHERE seq = -1"),
    )
    .await
    .unwrap();
    assert_eq!(expect_failure(db, vec![]).await.0, i as u64);
    exec(
        db,
        &format!("UPDATE audit_log SET seq = -1 WHERE seq = {i}"),
    )
    .await
    .unwrap();
    exec(
        db,
        &format!("UPDATE audit_log SET seq = {i} WHERE seq = {j}"),
    )
    .await
    .unwrap();
    exec(
        db,
        &format!("UPDATE audit_log SET seq = {j} WHERE seq = -1"),
    )
    .await
    .unwrap();
    assert_eq!(verify_ok(db).await, N as u64);

    // Delete one: leaving a gap, and renumbering the rest to hide it.
    let k = 4321i64;
    let gone = entry(db, k).await;
    exec(db, &format!("DELETE FROM audit_log WHERE seq = {k}"))
        .await
        .unwrap();
    assert_eq!(
        expect_failure(db, vec![]).await,
        (
            k as u64,
            Violation::Gap {
                expected: k as u64,
                found: k + 1
            }
        )
    );
    shift(db, k, -1).await;
    assert_eq!(expect_failure(db, vec![]).await.0, k as u64);
    shift(db, k - 1, 1).await;
    insert_raw(db, &gone).await;
    assert_eq!(verify_ok(db).await, N as u64);

    // Insert one, forged with a correct hash over its own (made-up) prev link.
    let k = 6000i64;
    let before = entry(db, k).await;
    shift(db, k, 1).await;
    let fields = EntryFields::from_record(&record(999_999));
    let prev: [u8; 32] = before.entry_hash.clone().try_into().unwrap();
    let forged = StoredEntry {
        seq: k + 1,
        entry_hash: entry_hash(&prev, (k + 1) as u64, &fields).to_vec(),
        fields,
        prev_hash: prev.to_vec(),
    };
    insert_raw(db, &forged).await;
    assert_eq!(expect_failure(db, vec![]).await.0, (k + 2) as u64);
    exec(db, &format!("DELETE FROM audit_log WHERE seq = {}", k + 1))
        .await
        .unwrap();
    shift(db, k + 1, -1).await;
    assert_eq!(verify_ok(db).await, N as u64);

    // G4: truncation of the last k entries, caught only against the signed checkpoint.
    let signer = signer();
    let signed = log.checkpoint(&signer, 0).await.unwrap();
    let checkpoint = signer.verifier().open(&signed.note).unwrap();
    assert_eq!(checkpoint.size, N as u64);
    for k in [1i64, 7, 100] {
        let tail = read_entries(db, N - k).await.unwrap();
        exec(db, &format!("DELETE FROM audit_log WHERE seq > {}", N - k))
            .await
            .unwrap();
        assert_eq!(
            verify_ok(db).await,
            (N - k) as u64,
            "a truncated chain is itself valid"
        );
        assert_eq!(
            expect_failure(db, vec![checkpoint.clone()]).await,
            (
                (N - k + 1) as u64,
                Violation::Truncated {
                    checkpoint_size: N as u64,
                    log_size: (N - k) as u64
                }
            )
        );
        for e in &tail {
            insert_raw(db, e).await;
        }
        assert_eq!(
            verify_log(db, vec![checkpoint.clone()])
                .await
                .unwrap()
                .unwrap()
                .size,
            N as u64
        );
    }

    // G4: roll back to an older state (9,000 entries, head row too), the gateway carries on and
    // writes 1,500 more: the chain is valid, the checkpoint of size 10,000 refuses it.
    let head_9000 = entry(db, 9000).await;
    exec(db, "DELETE FROM audit_log WHERE seq > 9000")
        .await
        .unwrap();
    on!(db, |p| sqlx::query(
        "UPDATE audit_head SET seq = 9000, head_hash = $1 WHERE id = 1"
    )
    .bind(&head_9000.entry_hash)
    .execute(p)
    .await
    .unwrap()
    .rows_affected());
    let seqs = fill(&log, 50_000, 1500).await;
    assert_eq!(seqs.first(), Some(&9001));
    assert_eq!(verify_ok(db).await, 10_500);
    assert_eq!(
        expect_failure(db, vec![checkpoint.clone()]).await,
        (N as u64, Violation::CheckpointMismatch { size: N as u64 })
    );
    log.shutdown().await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn g3_g4_tampering_detected_sqlite() {
    tampering(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn g3_g4_tampering_detected_postgres() {
    tampering(Backend::Postgres).await;
}

// ---------------------------------------------------------------- G6

fn hostile() -> Vec<AuditRecord> {
    let evil = [
        "p1\r\nseq=2 action=read outcome=permit",
        "\u{1b}[2J\u{1b}[1;1Hpermit",
        "\"},{\"seq\":3,\"action\":\"read\"}]",
        "a\0b",
        "\u{2028}\u{2029}\u{feff}",
    ];
    let mut out = Vec::new();
    for (i, s) in evil.iter().enumerate() {
        let mut r = record(i as u64);
        r.actor = Actor::Partner((*s).into());
        r.person_id = Some((*s).into());
        r.resources = vec![(*s).into(), format!("{s}{s}")];
        r.purpose = Some(format!("treatment\n{s}"));
        r.detail = Some(json!({"q": s, "k\n\"": [s]}));
        out.push(r);
    }
    let mut big = record(99);
    big.actor = Actor::Person("x".repeat(70 * 1024));
    big.purpose = Some("y\n".repeat(40 * 1024));
    big.resources = vec!["z".repeat(1024); 300];
    big.resources.push("v".repeat(70 * 1024));
    big.detail = Some(json!({"blob": "w".repeat(70 * 1024)}));
    out.push(big);
    out
}

async fn hostile_fields(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = &t.db;
    let log = AuditLog::start(db.clone()).await.unwrap();
    fill(&log, 0, 3).await;
    let records = hostile();
    for r in &records {
        log.record(r.clone()).await.unwrap();
    }
    fill(&log, 100, 3).await;
    let n = 6 + records.len() as u64;
    assert_eq!(verify_ok(db).await, n);
    // Stored exactly as normalised; nothing beyond the bounds.
    for (i, r) in records.iter().enumerate() {
        let e = entry(db, 4 + i as i64).await;
        let want = EntryFields::from_record(r);
        assert_eq!(e.fields, want);
        let size = e.fields.actor_id.len()
            + e.fields.resources.len()
            + e.fields.purpose.as_ref().map_or(0, String::len)
            + e.fields.detail.as_ref().map_or(0, String::len);
        assert!(size < 100 * 1024, "entry {i} is {size} bytes");
    }
    drop_triggers(db).await;
    // A forged split: the entry with "treatment\n…" becomes two entries at the line break.
    let k = 4i64;
    let original = entry(db, k).await;
    let purpose = original.fields.purpose.clone().unwrap();
    let (head, tail) = purpose.split_once('\n').unwrap();
    shift(db, k, 1).await;
    set_text(db, "purpose", k, Some(head)).await;
    let mut second = original.clone();
    second.seq = k + 1;
    second.fields.purpose = Some(tail.to_owned());
    insert_raw(db, &second).await;
    assert_eq!(
        expect_failure(db, vec![]).await,
        (k as u64, Violation::ContentChanged)
    );
    exec(db, &format!("DELETE FROM audit_log WHERE seq = {}", k + 1))
        .await
        .unwrap();
    shift(db, k + 1, -1).await;
    set_text(db, "purpose", k, Some(&purpose)).await;
    assert_eq!(verify_ok(db).await, n);
    log.shutdown().await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g6_hostile_fields_cannot_forge_sqlite() {
    hostile_fields(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g6_hostile_fields_cannot_forge_postgres() {
    hostile_fields(Backend::Postgres).await;
}

// ---------------------------------------------------------------- G7

async fn write_failure(backend: Backend) {
    let t = TestDb::new(backend).await;
    let db = &t.db;
    let log = AuditLog::start(db.clone()).await.unwrap();
    fill(&log, 0, 20).await;
    // The failpoint: every INSERT into audit_log fails, as on a full disk.
    match db {
        Db::Sqlite(_) => exec(
            db,
            "CREATE TRIGGER audit_fail BEFORE INSERT ON audit_log \
             BEGIN SELECT RAISE(ABORT, 'disk full (failpoint)'); END;",
        )
        .await
        .unwrap(),
        Db::Postgres(_) => exec(
            db,
            "CREATE FUNCTION audit_fail() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'disk full (failpoint)'; END; $$; \
             CREATE TRIGGER audit_fail BEFORE INSERT ON audit_log \
             FOR EACH ROW EXECUTE FUNCTION audit_fail();",
        )
        .await
        .unwrap(),
    };
    let mut tasks = Vec::new();
    for i in 0..16 {
        let log = log.clone();
        tasks.push(tokio::spawn(
            async move { log.record(record(1000 + i)).await },
        ));
    }
    for task in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, AuditError::Write(_)), "{err}");
        assert!(err.to_string().contains("disk full"), "{err}");
    }
    assert_eq!(count(db).await.unwrap(), 20);
    // Recovery without restart: the chain goes on from where it was.
    match db {
        Db::Sqlite(_) => exec(db, "DROP TRIGGER audit_fail").await.unwrap(),
        Db::Postgres(_) => exec(db, "DROP TRIGGER audit_fail ON audit_log")
            .await
            .unwrap(),
    };
    assert_eq!(log.record(record(5)).await.unwrap(), 21);
    assert_eq!(verify_ok(db).await, 21);
    // A closed log refuses too.
    let other = log.clone();
    log.shutdown().await;
    assert!(matches!(
        other.record(record(6)).await,
        Err(AuditError::Closed)
    ));
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g7_write_failure_is_an_error_sqlite() {
    write_failure(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g7_write_failure_is_an_error_postgres() {
    write_failure(Backend::Postgres).await;
}

// ---------------------------------------------------------------- concurrency

async fn concurrent(backend: Backend) {
    let t = TestDb::new(backend).await;
    // Two gateways: two pools, two writers, one database.
    let db2 = Db::connect(&t.url, 4).await.unwrap();
    let logs = [
        AuditLog::start(t.db.clone()).await.unwrap(),
        AuditLog::start(db2.clone()).await.unwrap(),
    ];
    let mut tasks = Vec::new();
    for task in 0..8u64 {
        let log = logs[(task % 2) as usize].clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..250 {
                seqs.push(log.record(record(task * 1000 + i)).await.unwrap());
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let seqs = task.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one caller's seqs increase"
        );
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=2000).collect::<Vec<u64>>(),
        "no gaps, no duplicates"
    );
    assert_eq!(verify_ok(&t.db).await, 2000);
    let [a, b] = logs;
    a.shutdown().await;
    b.shutdown().await;
    db2.close().await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_one_chain_sqlite() {
    concurrent(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_one_chain_postgres() {
    concurrent(Backend::Postgres).await;
}

// ---------------------------------------------------------------- the CLI

fn gateway_bin(args: &[&str], config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_iphr-gateway"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_keygen_checkpoint_and_verify_a_tampered_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let out = Command::new(env!("CARGO_BIN_EXE_iphr-gateway"))
        .args(["audit-keygen", "--name", "cli.example/audit", "--out"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = keys.join("audit-signing.pk8");
    let vkey = keys.join("audit-signing.vkey");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A second keygen into the same directory must not replace the key.
    let again = Command::new(env!("CARGO_BIN_EXE_iphr-gateway"))
        .args(["audit-keygen", "--name", "cli.example/audit", "--out"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(!again.status.success());

    let db_path = dir.path().join("gateway.db");
    let url = format!("sqlite://{}", db_path.display());
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "public_origin = \"https://kiosk.example.jp\"\n\
             [tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n\
             [database]\nurl = \"{url}\"\n\
             [audit]\nsigning_key = \"{}\"\norigin = \"cli.example/audit\"\n",
            key.display()
        ),
    )
    .unwrap();
    let db = Db::connect(&url, 2).await.unwrap();
    let log = AuditLog::start(db.clone()).await.unwrap();
    fill(&log, 0, 300).await;
    log.shutdown().await;
    // A backup of the database at 300 entries (for the rollback below).
    let backup = dir.path().join("backup.db");
    exec(&db, &format!("VACUUM INTO '{}'", backup.display()))
        .await
        .unwrap();
    let log = AuditLog::start(db.clone()).await.unwrap();
    fill(&log, 300, 200).await;
    log.shutdown().await;

    let out = gateway_bin(&["checkpoint"], &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let note = String::from_utf8(out.stdout).unwrap();
    assert!(note.starts_with("cli.example/audit\n500\n"), "{note}");
    let note_file = dir.path().join("checkpoint-500.txt");
    std::fs::write(&note_file, &note).unwrap();

    let verify = |extra: &[&str]| {
        let mut args = vec!["verify-audit", "--public-key", vkey.to_str().unwrap()];
        args.extend_from_slice(extra);
        gateway_bin(&args, &config)
    };
    let out = verify(&["--checkpoint", note_file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK: 500 entries"), "{stdout}");

    // One changed byte in entry 137.
    drop_triggers(&db).await;
    let original = entry(&db, 137).await;
    let mut changed = original.fields.detail.clone().unwrap();
    changed = changed.replacen("200", "201", 1);
    set_text(&db, "detail", 137, Some(&changed)).await;
    let out = verify(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("seq 137"), "{stdout}");
    restore(&db, 137, &original).await;
    assert_eq!(verify(&[]).status.code(), Some(0));

    // A forged checkpoint file (size changed) is refused.
    let forged = dir.path().join("forged.txt");
    std::fs::write(&forged, note.replacen("\n500\n", "\n400\n", 1)).unwrap();
    let out = verify(&["--checkpoint", forged.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("does not verify"));

    // Rollback: the old copy of the file replaces the database. The off-box checkpoint catches it.
    db.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db_path.display()));
    }
    std::fs::copy(&backup, &db_path).unwrap();
    let out = verify(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the old copy alone looks intact"
    );
    let out = verify(&["--checkpoint", note_file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("seq 301") && stdout.contains("truncated"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_audit_event_of_a_stored_entry() {
    let t = TestDb::new(Backend::Sqlite).await;
    let log = AuditLog::start(t.db.clone()).await.unwrap();
    let mut r = record(0);
    r.action = AuditAction::Everything;
    r.outcome = Outcome::Permit;
    let seq = log.record(r.clone()).await.unwrap();
    let stored = entry(&t.db, seq as i64).await.fields.to_record().unwrap();
    assert_eq!(stored, r);
    let event = gateway::domain::audit::to_fhir_audit_event(&stored);
    assert_eq!(event["resourceType"], "AuditEvent");
    assert_eq!(event["type"]["code"], "110113");
    assert_eq!(event["recorded"], "2025-11-21T04:40:00.000Z");
    assert_eq!(event["entity"].as_array().unwrap().len(), 3);
    log.shutdown().await;
    t.cleanup().await;
}

// ---------------------------------------------------------------- G4: the periodic checkpoint

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_loop_signs_checkpoints() {
    use gateway::server::{AuditCheckpoints, run_maintenance_with_audit};
    use std::sync::Arc;
    use std::time::Duration;
    let t = TestDb::new(Backend::Sqlite).await;
    let auth = gateway::domain::auth::Authenticator::new(
        t.db.clone(),
        Arc::new(gateway::clock::SystemClock),
        Arc::new(common::default_verifier()),
        common::auth_config("https://localhost"),
    );
    let auth = Arc::new(auth);
    let app = gateway::http::AppState {
        consent: Arc::new(gateway::domain::consent_desk::ConsentDesk::new(
            auth.clone(),
            Arc::new(gateway::domain::trail::MemoryTrail::new()),
        )),
        privacy: Arc::new(gateway::domain::privacy::PrivacyDesk::new(
            auth.clone(),
            Arc::new(gateway::domain::trail::MemoryTrail::new()),
            35,
        )),
        auth,
        kiosk: Arc::default(),
        sources: None,
    };
    let log = AuditLog::start(t.db.clone()).await.unwrap();
    fill(&log, 0, 10).await;
    let signer = Arc::new(signer());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_maintenance_with_audit(
        app,
        Duration::from_secs(3600),
        Duration::from_secs(3600),
        Some(AuditCheckpoints {
            log: log.clone(),
            signer: signer.clone(),
            every: Duration::from_millis(50),
        }),
        async {
            let _ = stop_rx.await;
        },
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let notes = loop {
        let notes = gateway::store::audit::stored_checkpoints(&t.db)
            .await
            .unwrap();
        if notes.len() >= 2 {
            break notes;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no periodic checkpoints"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop_tx.send(()).unwrap();
    task.await.unwrap();
    let verifier = signer.verifier();
    let checkpoints: Vec<_> = notes.iter().map(|n| verifier.open(n).unwrap()).collect();
    assert!(checkpoints.iter().all(|c| c.size == 10));
    assert_eq!(
        verify_log(&t.db, checkpoints)
            .await
            .unwrap()
            .unwrap()
            .checkpoints,
        notes.len()
    );
    log.shutdown().await;
    t.cleanup().await;
}

// ---------------------------------------------------------------- WAL size

/// With only audit writes (a read-only partner workload) the WAL must not hold every page ever
/// written: the audit writer's own connection is the one that checkpoints it (a checkpointer on
/// another connection never catches up with a writer that commits every few milliseconds, and
/// the WAL then only grows: 180 MB for a 10 MB database in this test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_audit_writes_alone_sqlite() {
    let t = TestDb::new(Backend::Sqlite).await;
    let db_path = std::path::PathBuf::from(t.url.trim_start_matches("sqlite://"));
    let wal_path = db_path.with_file_name("gateway.db-wal");
    let log = AuditLog::start(t.db.clone()).await.unwrap();
    const ROUNDS: u64 = 8;
    const PER_ROUND: u64 = 5_000;
    let mut largest_wal = 0;
    for round in 0..ROUNDS {
        fill(&log, round * PER_ROUND, PER_ROUND).await;
        largest_wal = largest_wal.max(std::fs::metadata(&wal_path).unwrap().len());
    }
    log.shutdown().await;
    assert_eq!(verify_ok(&t.db).await, ROUNDS * PER_ROUND);
    exec(&t.db, "PRAGMA wal_checkpoint(TRUNCATE)")
        .await
        .unwrap();
    let db_len = std::fs::metadata(&db_path).unwrap().len();
    eprintln!("largest WAL {largest_wal} bytes, database {db_len} bytes");
    assert!(
        largest_wal < db_len / 2,
        "the WAL grew to {largest_wal} bytes for a {db_len}-byte database: not checkpointed"
    );
}
