//! Partner API under load over loopback (issue 6 acceptance; security-scenarios J1/J2): a single
//! resource read and `Patient/$everything` of a person with 300 resources, through mutual TLS, the
//! bearer-token check, the consent check and the audit write, at 64 connections, on SQLite and on
//! PostgreSQL; beside a plain axum JSON endpoint over the same TLS stack, measured in the same run.
//! `$everything` is measured twice: as served (the Bundle assembled at the person's data version is
//! kept, so after the first request it is reused) and on a second listener that keeps none (every
//! request reads and assembles the 300 resources).
//!
//! ```sh
//! cargo bench -p gateway --bench partner_api -- [SECONDS] [sqlite|postgres|both] [ENDPOINTS]
//! ```
//! ENDPOINTS (default all): a comma-separated subset of `plain,read,everything,cold`, e.g. to
//! profile one of them.
//! PostgreSQL needs `IPHR_TEST_PG_URL` (a role that may CREATE DATABASE). The load comes from
//! `oha` (`cargo install oha`, ≥ 1.10 for `--cert`/`--key`) as a separate process when it is on
//! the PATH (or `IPHR_OHA` names it); otherwise from an in-process generator (64 tasks, one
//! connection each, on their own runtime).

// A measuring harness, not a service: any failed setup step (bind, connect, seed, the check
// request) must stop the run loudly rather than print figures of a broken setup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gateway::clock::{Clock, SharedClock, SystemClock};
use gateway::domain::access::PartnerAccess;
use gateway::domain::consent::{Action, Category, ConsentDocument, DOCUMENT_FORMAT};
use gateway::domain::oauth::{AssertionAudience, AssertionTimes, RegisteredClient};
use gateway::domain::partner_auth::{ClientDirectory, PartnerAuth, PartnerAuthConfig};
use gateway::domain::rate_limit::RateLimiter;
use gateway::http::partner::PartnerState;
use gateway::store::Db;
use gateway::store::audit::AuditLog;
use gateway::store::records::{NewImport, NewPersonKey, NewResource};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 64;
const RESOURCES: usize = 300;
const CLIENT: &str = "bench-partner";
const PERSON: &str = "bench-person";

struct Setup {
    db: Db,
    _dir: Option<tempfile::TempDir>,
    pg_drop: Option<(String, String)>,
}

async fn database(backend: &str) -> Setup {
    if backend == "sqlite" {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        Setup {
            db: Db::connect(&url, 8).await.unwrap(),
            _dir: Some(dir),
            pg_drop: None,
        }
    } else {
        let admin_url = std::env::var("IPHR_TEST_PG_URL").expect("IPHR_TEST_PG_URL");
        let name = format!("iphr_bench_{}", std::process::id());
        let admin = Db::connect_raw_postgres(&admin_url).await.unwrap();
        admin
            .execute_raw(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap();
        admin
            .execute_raw(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        admin.close().await;
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        Setup {
            db: Db::connect(&format!("{base}/{name}"), 16).await.unwrap(),
            _dir: None,
            pg_drop: Some((admin_url, name)),
        }
    }
}

/// The person, 300 resources (1 Patient, 299 Observations), a permit for the partner.
async fn seed(db: &Db) {
    db.execute_raw(&format!(
        "INSERT INTO persons (id, created_at_ms) VALUES ('{PERSON}', 0)"
    ))
    .await
    .unwrap();
    let mut resources = vec![NewResource {
        resource_type: "Patient".into(),
        id: "pat-bench".into(),
        person_key: "key-bench".into(),
        category: String::new(),
        fhir_category: None,
        code: None,
        effective: None,
        json: r#"{"resourceType":"Patient","id":"pat-bench","gender":"female","birthDate":"1980-07-15"}"#.into(),
    }];
    for i in 1..RESOURCES {
        resources.push(NewResource {
            resource_type: "Observation".into(),
            id: format!("obs-{i:04}"),
            person_key: "key-bench".into(),
            category: Category::Checkup.as_str().into(),
            fhir_category: Some("laboratory".into()),
            code: Some("urn:oid:1.2.392.200119.6.1005|3F015000002327101".into()),
            effective: Some(format!("20{:02}-05-01", 10 + i % 15)),
            json: serde_json::json!({
                "resourceType": "Observation", "id": format!("obs-{i:04}"), "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
                "code": {"coding": [{"system": "urn:oid:1.2.392.200119.6.1005", "code": "3F015000002327101", "display": "中性脂肪"}]},
                "subject": {"reference": "Patient/pat-bench"},
                "effectiveDateTime": format!("20{:02}-05-01", 10 + i % 15),
                "valueQuantity": {"value": 100 + i % 50, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"}
            })
            .to_string(),
        });
    }
    gateway::store::records::import(
        db,
        &NewImport {
            content_sha256: [7; 32],
            source_id: None,
            file_name: "bench".into(),
            format: "bench".into(),
            records: 1,
            person_keys: vec![NewPersonKey {
                person_key: "key-bench".into(),
                patient_id: "pat-bench".into(),
            }],
            resources,
        },
        0,
    )
    .await
    .unwrap();
    gateway::store::records::link_person_key(db, "key-bench", PERSON, 0)
        .await
        .unwrap();
    gateway::store::services::upsert(
        db,
        &gateway::store::services::Service {
            id: CLIENT.into(),
            kind: gateway::store::services::ServiceKind::Partner,
            name: "bench".into(),
            purpose: "bench".into(),
            categories: vec![Category::Checkup],
            period_days: 365,
            certificate_sha256: None,
            jwks: None,
            scopes: String::new(),
            rate_per_sec: 1_000_000,
        },
        0,
    )
    .await
    .unwrap();
    let now = SystemClock.now_ms();
    let doc = ConsentDocument {
        format: DOCUMENT_FORMAT.into(),
        origin: "https://bench".into(),
        person_id: PERSON.into(),
        service_id: CLIENT.into(),
        version: 1,
        action: Action::Grant,
        categories: vec![Category::Checkup],
        period_start_ms: now - 1_000,
        period_end_ms: now + 86_400_000,
        purpose: "bench".into(),
        issued_at_ms: now,
        salt: "bench".into(),
    };
    gateway::store::consent::commit(db, &doc, "{}", &[0; 32], None, now)
        .await
        .unwrap();
}

fn self_signed(cn: &str) -> (Vec<u8>, KeyPair) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let der = rcgen::CertificateParams::new(vec![cn.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .der()
        .to_vec();
    (der, key)
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

struct Stats {
    requests: usize,
    errors: usize,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU time of this process per request, µs: the server's when oha makes the load (with the
    /// in-process generator it includes the generator's).
    cpu_us: f64,
}

/// User + system CPU seconds of this process so far (`/proc/self/stat`, clock ticks of 10 ms).
fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with the last ')'): utime is the 12th, stime
    // the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

/// Client certificate and key files for oha.
struct OhaIdentity {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn oha_binary() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("IPHR_OHA") {
        return Some(p.into());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("oha"))
            .find(|p| p.is_file())
    })
}

/// oha, `CONNECTIONS` connections, GET `url` for `secs` seconds; its JSON summary.
fn load_oha(
    oha: &std::path::Path,
    url: &str,
    bearer: Option<&str>,
    identity: Option<&OhaIdentity>,
    secs: u64,
) -> Stats {
    let mut cmd = std::process::Command::new(oha);
    cmd.args(["-z", &format!("{secs}s"), "-c", &CONNECTIONS.to_string()])
        .args(["--no-tui", "--output-format", "json", "--insecure"]);
    if let Some(b) = bearer {
        cmd.arg("-H").arg(format!("authorization: {b}"));
    }
    if let Some(id) = identity {
        cmd.arg("--cert").arg(&id.cert).arg("--key").arg(&id.key);
    }
    let out = cmd.arg(url).output().expect("oha runs");
    assert!(
        out.status.success(),
        "oha failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("oha JSON");
    let codes = &v["statusCodeDistribution"];
    let ok = codes["200"].as_u64().unwrap_or(0);
    let all: u64 = codes
        .as_object()
        .map(|m| m.values().filter_map(serde_json::Value::as_u64).sum())
        .unwrap_or(0);
    // Requests still in flight when the run's time is up are cut by oha, not failed.
    let failed: u64 = v["errorDistribution"].as_object().map_or(0, |m| {
        m.iter()
            .filter(|(reason, _)| !reason.contains("aborted due to deadline"))
            .filter_map(|(_, n)| n.as_u64())
            .sum()
    });
    let ms = |k: &str| v["latencyPercentiles"][k].as_f64().unwrap_or(f64::NAN) * 1000.0;
    Stats {
        requests: ok as usize,
        errors: (all - ok + failed) as usize,
        rps: v["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0) * ok as f64 / all.max(1) as f64,
        p50_ms: ms("p50"),
        p99_ms: ms("p99"),
        cpu_us: 0.0,
    }
}

/// `CONNECTIONS` tasks, one connection each, GET `url` for `secs` seconds.
fn load(
    rt: &tokio::runtime::Runtime,
    clients: &[reqwest::Client],
    url: &str,
    bearer: Option<&str>,
    secs: u64,
) -> Stats {
    rt.block_on(async {
        // Warm the connections.
        for c in clients {
            let mut r = c.get(url);
            if let Some(b) = bearer {
                r = r.header("authorization", b);
            }
            r.send().await.unwrap().bytes().await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in clients {
            let c = c.clone();
            let url = url.to_owned();
            let bearer = bearer.map(str::to_owned);
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0usize;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let mut r = c.get(&url);
                    if let Some(b) = &bearer {
                        r = r.header("authorization", b);
                    }
                    match r.send().await {
                        Ok(resp) if resp.status().is_success() => {
                            let _ = resp.bytes().await;
                            lat.push(t.elapsed());
                        }
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            }));
        }
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await.unwrap();
            all.extend(l);
            errors += e;
        }
        let elapsed = started.elapsed().as_secs_f64();
        all.sort_unstable();
        let pct = |p: f64| {
            all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Stats {
            requests: all.len(),
            errors,
            rps: all.len() as f64 / elapsed,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            cpu_us: 0.0,
        }
    })
}

fn run(backend: &str, secs: u64, endpoints: &[String]) {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let setup = server_rt.block_on(database(backend));
    server_rt.block_on(seed(&setup.db));
    let (client_cert, client_key) = self_signed("bench-partner.example.jp");
    let (server_cert, server_key) = self_signed("localhost");
    let ec = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let point = ec.public_key_raw().to_vec();
    let jwks = serde_json::from_value(serde_json::json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    }]}))
    .unwrap();
    let directory = ClientDirectory::default();
    directory.register(RegisteredClient {
        client_id: CLIENT.into(),
        jwks,
        certificate_sha256: vec![gateway::domain::sha256(&client_cert)],
        scopes: vec!["system/*.rs".into()],
    });
    let clock: SharedClock = Arc::new(SystemClock);
    let (partner_addr, cold_addr, plain_addr) = server_rt.block_on(async {
        let audit = Arc::new(AuditLog::start(setup.db.clone()).await.unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("https://localhost:{}", addr.port());
        let auth = PartnerAuth::new(
            setup.db.clone(),
            clock.clone(),
            directory.clone(),
            PartnerAuthConfig {
                audience: AssertionAudience {
                    issuer: base.clone(),
                    token_endpoint: format!("{base}/oauth/token"),
                },
                times: AssertionTimes::default(),
                token_ttl_ms: 3_600_000,
            },
        );
        let registry = directory.clone();
        let tls = gateway::tls::partner_from_der(
            vec![server_cert.clone().into()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            Arc::new(move |der: &[u8]| registry.knows_certificate(der)),
        )
        .unwrap();
        let state = PartnerState {
            auth: Arc::new(auth),
            access: Arc::new(PartnerAccess::new(
                setup.db.clone(),
                clock.clone(),
                audit.clone(),
            )),
            limiter: Arc::new(RateLimiter::new()),
            rates: Arc::default(),
            default_rate: 1_000_000,
            fhir_base: format!("{base}/fhir"),
            clock: clock.clone(),
            exports: Default::default(),
            importer: None,
        };
        // The same partner API keeping no assembled `$everything` Bundle: every request reads
        // and assembles the 300 resources (what a person's first request costs).
        let cold = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cold_addr = cold.local_addr().unwrap();
        let cold_state = PartnerState {
            access: Arc::new(PartnerAccess::with_bundle_cache(
                setup.db.clone(),
                clock.clone(),
                audit.clone(),
                0,
            )),
            fhir_base: format!("https://localhost:{}/fhir", cold_addr.port()),
            ..state.clone()
        };
        tokio::spawn(gateway::server::serve_partner(
            listener,
            tls.clone(),
            state,
            std::future::pending(),
        ));
        tokio::spawn(gateway::server::serve_partner(
            cold,
            tls,
            cold_state,
            std::future::pending(),
        ));
        // The plain endpoint: axum + the same rustls stack, server authentication only.
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain_addr = plain.local_addr().unwrap();
        let plain_tls = gateway::tls::from_der(
            vec![server_cert.clone().into()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .unwrap();
        let app = axum::Router::new().route(
            "/json",
            axum::routing::get(|| async {
                axum::Json(serde_json::json!({ "message": "Hello, World!" }))
            }),
        );
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(plain_tls);
            loop {
                let (tcp, _) = plain.accept().await.unwrap();
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        (addr, cold_addr, plain_addr)
    });
    let identity = format!(
        "{}{}",
        pem("CERTIFICATE", &client_cert),
        client_key.serialize_pem()
    );
    let make_client = |addr: std::net::SocketAddr, with_identity: bool| {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_der(&server_cert).unwrap())
            .resolve("localhost", addr)
            .pool_max_idle_per_host(1);
        if with_identity {
            b = b.identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap());
        }
        b.build().unwrap()
    };
    let partner_clients: Vec<reqwest::Client> = client_rt.block_on(async {
        (0..CONNECTIONS)
            .map(|_| make_client(partner_addr, true))
            .collect()
    });
    let cold_clients: Vec<reqwest::Client> = client_rt.block_on(async {
        (0..CONNECTIONS)
            .map(|_| make_client(cold_addr, true))
            .collect()
    });
    let plain_clients: Vec<reqwest::Client> = client_rt.block_on(async {
        (0..CONNECTIONS)
            .map(|_| make_client(plain_addr, false))
            .collect()
    });
    let base = format!("https://localhost:{}", partner_addr.port());
    let token = client_rt.block_on(async {
        let now = SystemClock.now_ms() / 1000;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("k1".into());
        let assertion = jsonwebtoken::encode(
            &header,
            &serde_json::json!({"iss": CLIENT, "sub": CLIENT, "aud": format!("{base}/oauth/token"),
                "iat": now, "exp": now + 300, "jti": format!("bench-{now}")}),
            &jsonwebtoken::EncodingKey::from_ec_der(&ec.serialize_der()),
        )
        .unwrap();
        let body: serde_json::Value = partner_clients[0]
            .post(format!("{base}/oauth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.as_str()),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        format!("Bearer {}", body["access_token"].as_str().unwrap())
    });
    let plain_url = format!("https://localhost:{}/json", plain_addr.port());
    let read_url = format!("{base}/fhir/Observation/obs-0150");
    let everything_url = format!("{base}/fhir/Patient/{PERSON}/$everything");
    let cold_everything_url = format!(
        "https://localhost:{}/fhir/Patient/{PERSON}/$everything",
        cold_addr.port()
    );
    // Check the answers once before measuring.
    client_rt.block_on(async {
        for (client, url) in [
            (&partner_clients[0], &everything_url),
            (&cold_clients[0], &cold_everything_url),
        ] {
            let r = client
                .get(url)
                .header("authorization", &token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let b: serde_json::Value = r.json().await.unwrap();
            assert_eq!(b["total"], RESOURCES);
        }
    });
    let oha = oha_binary();
    println!(
        "\n{backend}: {CONNECTIONS} connections, {secs} s each, loopback, 2 cores shared with the load generator ({})",
        oha.as_ref()
            .map_or("in-process generator".to_owned(), |p| format!(
                "{}",
                p.display()
            ))
    );
    println!(
        "| endpoint | requests | req/s | p50 ms | p99 ms | errors | vs plain | CPU µs/req |\n|---|---|---|---|---|---|---|---|"
    );
    let files = tempfile::tempdir().unwrap();
    let id = OhaIdentity {
        cert: files.path().join("client.pem"),
        key: files.path().join("client.key"),
    };
    std::fs::write(&id.cert, pem("CERTIFICATE", &client_cert)).unwrap();
    std::fs::write(&id.key, client_key.serialize_pem()).unwrap();
    let ip = |u: &str| u.replace("https://localhost:", "https://127.0.0.1:");
    let measure = |clients: &[reqwest::Client], url: &str, bearer: Option<&str>, mtls: bool| {
        let cpu = process_cpu_secs();
        let mut s = match &oha {
            Some(o) => load_oha(o, &ip(url), bearer, mtls.then_some(&id), secs),
            None => load(&client_rt, clients, url, bearer, secs),
        };
        s.cpu_us = (process_cpu_secs() - cpu) * 1e6 / s.requests.max(1) as f64;
        s
    };
    let wanted = |name: &str| endpoints.is_empty() || endpoints.iter().any(|e| e == name);
    let mut rows = Vec::new();
    if wanted("plain") {
        rows.push((
            "plain axum JSON (TLS)",
            measure(&plain_clients, &plain_url, None, false),
        ));
    }
    if wanted("read") {
        rows.push((
            "FHIR read Observation/{id} (mTLS)",
            measure(&partner_clients, &read_url, Some(&token), true),
        ));
    }
    if wanted("everything") {
        rows.push((
            "FHIR Patient/$everything, 300 resources (mTLS)",
            measure(&partner_clients, &everything_url, Some(&token), true),
        ));
    }
    if wanted("cold") {
        rows.push((
            "FHIR Patient/$everything, 300 resources, no Bundle kept (mTLS)",
            measure(&cold_clients, &cold_everything_url, Some(&token), true),
        ));
    }
    let plain_rps = wanted("plain").then(|| rows[0].1.rps);
    for (name, s) in &rows {
        println!(
            "| {name} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {:.1} |",
            s.requests,
            s.rps,
            s.p50_ms,
            s.p99_ms,
            s.errors,
            plain_rps.map_or("-".to_owned(), |p| format!("{:.1} %", 100.0 * s.rps / p)),
            s.cpu_us
        );
    }
    let audited = server_rt
        .block_on(gateway::store::audit::count(&setup.db))
        .unwrap();
    println!("audit entries written: {audited}");
    if let Some((admin_url, name)) = &setup.pg_drop {
        server_rt.block_on(async {
            setup.db.close().await;
            let admin = Db::connect_raw_postgres(admin_url).await.unwrap();
            let _ = admin
                .execute_raw(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        });
    }
    server_rt.shutdown_background();
    client_rt.shutdown_background();
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let secs: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(10);
    let which = args.get(1).map_or("both", String::as_str);
    let endpoints: Vec<String> = args
        .get(2)
        .map(|e| e.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    if which == "sqlite" || which == "both" {
        run("sqlite", secs, &endpoints);
    }
    if which == "postgres" || which == "both" {
        if std::env::var("IPHR_TEST_PG_URL").is_ok() {
            run("postgres", secs, &endpoints);
        } else {
            println!("postgres: skipped (IPHR_TEST_PG_URL not set)");
        }
    }
}
