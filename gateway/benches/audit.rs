//! Audit appends per second through [`AuditLog`] (group commit: one durable transaction per batch)
//! with 64 concurrent callers, and with one caller (one transaction per record), on SQLite
//! (WAL, `synchronous=FULL` on the audit connection) and on PostgreSQL (when `IPHR_TEST_PG_URL`
//! is set; a fresh database is created and dropped). Each partner read writes one entry, so this
//! bounds the partner API's read rate. Run with
//! `IPHR_BENCH_RECORDS=20000 cargo bench -p gateway --bench audit`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use gateway::domain::audit::{Actor, AuditAction, AuditRecord, Outcome};
use gateway::store::Db;
use gateway::store::audit::{AuditLog, verify_log};
use serde_json::json;
use std::time::Instant;

fn record(i: u64) -> AuditRecord {
    AuditRecord {
        at_ms: 1_763_700_000_000 + i as i64,
        actor: Actor::Partner("partner-phr-app".into()),
        action: AuditAction::Read,
        outcome: Outcome::Permit,
        person_id: Some(format!("person-{}", i % 1000)),
        resources: vec![format!("Observation/{i}")],
        purpose: Some("occupational-health".into()),
        detail: Some(json!({"status": 200})),
    }
}

/// Appends `n` records from `callers` concurrent tasks; returns appends per second.
async fn run(log: &AuditLog, callers: u64, n: u64, offset: u64) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..callers {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while i < n {
                log.record(record(offset + i)).await.unwrap();
                i += callers;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn bench(name: &str, db: &Db, n: u64) {
    let log = AuditLog::start(db.clone()).await.unwrap();
    // Warm-up.
    run(&log, 64, 1000, 0).await;
    let concurrent = run(&log, 64, n, 1000).await;
    let single_n = (n / 20).max(200);
    let single = run(&log, 1, single_n, 1000 + n).await;
    log.shutdown().await;
    let start = Instant::now();
    let summary = verify_log(db, vec![]).await.unwrap().unwrap();
    let verify_rate = summary.size as f64 / start.elapsed().as_secs_f64();
    println!(
        "{name:<10} 64 callers: {concurrent:>9.0} appends/s ({n} records) | 1 caller: {single:>7.0} appends/s ({single_n} records) | verify: {verify_rate:>9.0} entries/s ({} entries)",
        summary.size
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: u64 = std::env::var("IPHR_BENCH_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let db = Db::connect(&url, 8).await.unwrap();
    bench("sqlite", &db, n).await;
    db.close().await;

    match std::env::var("IPHR_TEST_PG_URL") {
        Ok(admin_url) => {
            let name = format!("iphr_audit_bench_{}", std::process::id());
            let admin = Db::connect_raw_postgres(&admin_url).await.unwrap();
            admin
                .execute_raw(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
            let (base, _) = admin_url.rsplit_once('/').unwrap();
            let db = Db::connect(&format!("{base}/{name}"), 8).await.unwrap();
            bench("postgres", &db, n).await;
            db.close().await;
            admin
                .execute_raw(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .unwrap();
            admin.close().await;
        }
        Err(_) => println!("postgres   skipped: IPHR_TEST_PG_URL is not set"),
    }
}
