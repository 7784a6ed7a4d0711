//! Crash safety of imports (issue 6 acceptance; security-scenarios H1): the real `iphr-gateway`
//! process imports from its drop directory and is killed with SIGKILL at random moments, again
//! and again on the same SQLite database. After every kill: every acknowledged import (file moved
//! to `done/`) is there in full, no import is partly there, `PRAGMA integrity_check` says ok; at
//! the end, importing every file again adds nothing.
//!
//! Runs: 20 by default; `IPHR_CRASH_RUNS=100` for the longer run (docs/security-tests.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use gateway::store::Db;
use sqlx::Row;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FILES_PER_RUN: u64 = 12;

fn config(dir: &Path) -> PathBuf {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("tls.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    let toml = format!(
        r#"
public_origin = "https://localhost:1"
listen = "127.0.0.1:0"
[tls]
cert = "{d}/tls.pem"
key = "{d}/tls.key"
[database]
url = "sqlite://{d}/gateway.db"
[import]
drop_dir = "{d}/drop"
scan_interval_ms = 20
"#,
        d = dir.display()
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn start(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_iphr-gateway"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A distinct 特定健診 CDA document per `i`, with the number of resources it converts to.
fn document(i: u64) -> (String, Vec<u8>, usize) {
    let name = format!("doc-{i:05}.xml");
    let bytes = data_converter::synth::cda_document(i).into_bytes();
    let converted = gateway::domain::import::convert(&bytes, &name, None).unwrap();
    (name, bytes, converted.resources.len())
}

/// Checks the database against the acknowledged files; returns the number of imports.
async fn check(db_url: &str, acknowledged: &HashMap<[u8; 32], usize>) -> usize {
    let db = Db::connect(db_url, 1).await.unwrap();
    let Db::Sqlite(pool) = &db else {
        unreachable!()
    };
    let integrity: String = sqlx::query("PRAGMA integrity_check")
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(integrity, "ok");
    let imports = sqlx::query(
        "SELECT i.content_sha256, i.resources, \
         (SELECT COUNT(*) FROM iphr_resources r WHERE r.import_id = i.id) FROM imports i",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut present = HashMap::new();
    for row in &imports {
        let sha: Vec<u8> = row.get(0);
        let declared: i64 = row.get(1);
        let stored: i64 = row.get(2);
        assert_eq!(declared, stored, "an import is only partly there");
        present.insert(<[u8; 32]>::try_from(sha.as_slice()).unwrap(), stored);
    }
    for (sha, resources) in acknowledged {
        let stored = present.get(sha).copied();
        assert_eq!(
            stored,
            Some(*resources as i64),
            "acknowledged import missing or incomplete"
        );
    }
    db.close().await;
    imports.len()
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

fn sha256(b: &[u8]) -> [u8; 32] {
    gateway::domain::sha256(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_imports_loses_nothing_acknowledged_and_leaves_nothing_partial() {
    let runs: u64 = std::env::var("IPHR_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let db_url = format!("sqlite://{}/gateway.db", dir.path().display());
    let incoming = dir.path().join("drop/incoming");
    let done = dir.path().join("drop/done");
    std::fs::create_dir_all(&incoming).unwrap();
    let mut expected: HashMap<String, ([u8; 32], usize)> = HashMap::new();
    let mut all_files = Vec::new();
    let mut seed = 0x5eed_u64;
    let mut killed_mid_run = 0;
    for run in 0..runs {
        for k in 0..FILES_PER_RUN {
            let (name, bytes, resources) = document(run * FILES_PER_RUN + k);
            expected.insert(name.clone(), (sha256(&bytes), resources));
            // Written under a dot name, then renamed: the watcher never sees half a file.
            let tmp = incoming.join(format!(".{name}"));
            std::fs::write(&tmp, &bytes).unwrap();
            std::fs::rename(&tmp, incoming.join(&name)).unwrap();
            all_files.push((name, bytes));
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Once the first file of this run is acknowledged, kill within the next 0–60 ms: most kills
        // land between or inside the transactions of the remaining files.
        let done_before = count(&done);
        let mut child = start(&config);
        let started = Instant::now();
        while count(&done) == done_before && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(seed % 60));
        child.kill().unwrap();
        child.wait().unwrap();
        if std::fs::read_dir(&incoming).unwrap().count() > 0 {
            killed_mid_run += 1;
        }
        let acknowledged: HashMap<[u8; 32], usize> = std::fs::read_dir(&done)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .filter_map(|n| expected.get(&n).copied())
                    .collect()
            })
            .unwrap_or_default();
        check(&db_url, &acknowledged).await;
    }
    assert!(
        killed_mid_run > 0,
        "no kill landed while files were waiting: the test exercised nothing"
    );

    // Let it finish, then deliver every file again: nothing is added.
    let mut child = start(&config);
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_dir(&incoming).unwrap().count() > 0 {
        assert!(Instant::now() < deadline, "imports did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let all: HashMap<[u8; 32], usize> = expected.values().copied().collect();
    let imports = check(&db_url, &all).await;
    assert_eq!(imports as u64, runs * FILES_PER_RUN);
    for (name, bytes) in &all_files {
        std::fs::write(incoming.join(format!("again-{name}")), bytes).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_dir(&incoming).unwrap().count() > 0 {
        assert!(Instant::now() < deadline, "re-imports did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        check(&db_url, &all).await,
        imports,
        "re-import added imports"
    );
    eprintln!("{runs} kills, {killed_mid_run} with files still waiting; {imports} imports intact");
}
