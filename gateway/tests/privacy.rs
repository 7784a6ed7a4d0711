//! The worker's erasure and export of their own record through the real HTTPS server, on SQLite
//! and PostgreSQL (security-scenarios K1 erasure, K2 export, D6 re-authentication; PHR guideline
//! 消去 and 相互運用性; `docs/privacy.md`).
//!
//! K1: an erasure needs sign-in and a fresh card signature of the signed-in person over the
//! erasure document (single use, 5 minutes); afterwards no partner read path (read, search,
//! `$everything`, bulk `$export` — also a job finished before the erasure —, the Patient list)
//! serves anything of the person, even after a new consent; other persons are untouched; the
//! audit log keeps every entry, verifies, and holds the erasure; re-delivering the same files
//! stores nothing. K2: the export (sign-in within 5 minutes) holds every stored resource of every
//! category; imported into a fresh gateway and exported again it is equal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::seed::{DAY, add_partner, add_person, add_source, change};
use common::*;
use gateway::clock::{Clock, ManualClock, SharedClock};
use gateway::domain::access::{AccessError, PartnerAccess, SearchParams};
use gateway::domain::consent::{Action, Category, Status};
use gateway::domain::trail::{AuditTrail, PrivacyAction, TrailEvent};
use gateway::http::SESSION_COOKIE;
use gateway::importer::{Importer, ImporterError};
use gateway::store::audit::{AuditLog, read_entries, verify_log};
use gateway::store::records::{self, ImportOutcome, Search};
use gateway::store::{Db, consent, erasure};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;

const PARTNER: &str = "partner-a";

/// The fixture files of one worker (all three units), as a source delivers them.
fn worker_files() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sources");
    [
        "kenshin-tokyo/K-0001/kenshin-2024.xml",
        "kyokai-kenpo/H-0001/claims-202406.uke",
        "op-cloud/W003/W003-2026-02.attendance.csv",
        "op-cloud/W003/W003.oh.json",
    ]
    .iter()
    .map(|f| {
        let path = dir.join(f);
        (
            path.file_name().unwrap().to_str().unwrap().to_owned(),
            std::fs::read(&path).unwrap(),
        )
    })
    .collect()
}

/// Imports `files` and links every person key in them to `person`; the keys.
async fn import_for(importer: &Importer, db: &Db, person: &str, files: &[(String, Vec<u8>)]) {
    for (name, bytes) in files {
        let outcome = importer
            .import_bytes(bytes.clone(), name, "cli", None)
            .await
            .unwrap();
        assert!(
            matches!(outcome, ImportOutcome::Imported { resources, .. } if resources > 0),
            "{name}: {outcome:?}"
        );
        let converted = gateway::domain::import::convert(bytes, name, None).unwrap();
        for k in converted.person_keys {
            assert!(
                records::link_person_key(db, &k.person_key, person, 0)
                    .await
                    .unwrap(),
                "{name}: {}",
                k.person_key
            );
        }
    }
}

async fn sign_in(gw: &TestGateway, card: &Card) -> (Browser, String) {
    let mut browser = gw.browser();
    let nonce = browser.nonce().await;
    let r = browser
        .post("/api/auth/token", Some(card.token(&gw.origin, &nonce)))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let person = r.json["person_id"].as_str().unwrap().to_owned();
    (browser, person)
}

/// Grants `PARTNER` every category it requests, signed by the card at the kiosk.
async fn grant_at_kiosk(gw: &TestGateway, browser: &mut Browser, card: &Card) -> Vec<u8> {
    let body = json!({ "service_id": PARTNER, "action": "grant" }).to_string();
    let r = browser
        .post("/api/consent/prepare", Some(body.into_bytes()))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let token = card.token(&gw.origin, r.json["nonce"].as_str().unwrap());
    let r = browser
        .post("/api/consent/commit", Some(token.clone()))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    token
}

/// Moves the clock by `ms` while keeping the session alive (idle timeout 120 s).
async fn pass_time(clock: &ManualClock, browser: &mut Browser, ms: i64) {
    let mut left = ms;
    while left > 0 {
        let step = left.min(100_000);
        clock.advance_ms(step);
        left -= step;
        assert_eq!(browser.get("/api/session").await.status, 200);
    }
}

// ---------------------------------------------------------------- the partner API in process

/// The partner router with one registered partner and a live token, called without TLS: the
/// client certificate is attached as the listener would.
struct Partner {
    router: axum::Router,
    bearer: String,
    certificate: gateway::http::partner::ClientCertificate,
}

impl Partner {
    async fn new(db: &Db, clock: SharedClock, trail: Arc<dyn AuditTrail>) -> Partner {
        use gateway::domain::oauth::{
            AssertionAudience, AssertionTimes, RegisteredClient, TokenBinding, access_token_hash,
        };
        use gateway::domain::partner_auth::{ClientDirectory, PartnerAuth, PartnerAuthConfig};
        let certificate: Vec<u8> = b"partner certificate (test)".to_vec();
        let clients = ClientDirectory::default();
        clients.register(RegisteredClient {
            client_id: PARTNER.into(),
            jwks: jsonwebtoken::jwk::JwkSet { keys: Vec::new() },
            certificate_sha256: vec![gateway::domain::sha256(&certificate)],
            scopes: vec!["system/*.rs".into()],
        });
        let token = "privacy-test-token";
        let now = clock.now_ms();
        gateway::store::oauth::insert_token(
            db,
            &access_token_hash(token),
            &TokenBinding {
                client_id: PARTNER.into(),
                certificate_sha256: gateway::domain::sha256(&certificate),
                scope: "system/*.rs".into(),
                expires_at_ms: now + 10 * DAY,
            },
            now,
        )
        .await
        .unwrap();
        let auth = PartnerAuth::new(
            db.clone(),
            clock.clone(),
            clients,
            PartnerAuthConfig {
                audience: AssertionAudience {
                    issuer: "https://partner.test".into(),
                    token_endpoint: "https://partner.test/oauth/token".into(),
                },
                times: AssertionTimes::default(),
                token_ttl_ms: 300_000,
            },
        );
        let state = gateway::http::partner::PartnerState {
            auth: Arc::new(auth),
            access: Arc::new(PartnerAccess::new(db.clone(), clock.clone(), trail)),
            limiter: Arc::new(gateway::domain::rate_limit::RateLimiter::new()),
            rates: Arc::default(),
            default_rate: 100_000,
            fhir_base: "https://partner.test/fhir".into(),
            exports: Default::default(),
            importer: None,
            clock,
        };
        Partner {
            router: gateway::http::partner::partner_router(state),
            bearer: format!("Bearer {token}"),
            certificate: gateway::http::partner::ClientCertificate(Arc::from(certificate)),
        }
    }

    /// GET `path` (a path under the partner base, or a full `https://partner.test/…` URL).
    async fn get(&self, path: &str, respond_async: bool) -> (u16, axum::http::HeaderMap, String) {
        use tower::ServiceExt;
        let path = path.strip_prefix("https://partner.test").unwrap_or(path);
        let mut builder = axum::http::Request::builder()
            .uri(path)
            .header("authorization", &self.bearer);
        if respond_async {
            builder = builder.header("prefer", "respond-async");
        }
        let mut request = builder.body(axum::body::Body::empty()).unwrap();
        request.extensions_mut().insert(self.certificate.clone());
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    /// Kicks off a bulk export and waits for its manifest; the status URL.
    async fn bulk_export(&self) -> String {
        let (status, headers, body) = self.get("/fhir/$export", true).await;
        assert_eq!(status, 202, "{body}");
        let status_url = headers["content-location"].to_str().unwrap().to_owned();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let (status, _, body) = self.get(&status_url, false).await;
            match status {
                200 => return status_url,
                202 => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "export did not finish"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                other => panic!("export status {other}: {body}"),
            }
        }
    }

    /// The `Type/id` and `subject` of every line of a finished export's files.
    async fn bulk_lines(&self, status_url: &str) -> Vec<Value> {
        let (status, _, body) = self.get(status_url, false).await;
        assert_eq!(status, 200, "{body}");
        let manifest: Value = serde_json::from_str(&body).unwrap();
        let mut lines = Vec::new();
        for out in manifest["output"].as_array().unwrap() {
            let (status, _, body) = self.get(out["url"].as_str().unwrap(), false).await;
            assert_eq!(status, 200, "{body}");
            for line in body.lines() {
                lines.push(serde_json::from_str(line).unwrap());
            }
        }
        lines
    }
}

/// Whether any served JSON mentions the person (the gateway rewrites every reference to the
/// person's Patient to `Patient/{person}`, and serves the Patient with that id).
fn mentions(lines: &[Value], person: &str) -> bool {
    let needle = format!("Patient/{person}");
    lines.iter().any(|v| {
        v["id"].as_str() == Some(person) && v["resourceType"] == "Patient"
            || v.to_string().contains(&needle)
    })
}

fn search_all(person: &str, ty: &str) -> SearchParams {
    SearchParams {
        patient: person.into(),
        resource_type: ty.into(),
        count: 500,
        ..SearchParams::default()
    }
}

fn all_categories() -> Search {
    Search {
        categories: Category::ALL
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect(),
        limit: 100_000,
        ..Search::default()
    }
}

// ---------------------------------------------------------------- K1

/// A person's `$everything` resources read afresh (an export keeps no Bundle): references and JSON.
async fn served_afresh(access: &PartnerAccess, person: &str) -> Vec<(String, String)> {
    access
        .export_person(PARTNER, person)
        .await
        .unwrap()
        .all()
        .map(|(r, j)| (r.to_owned(), j.to_owned()))
        .collect()
}

async fn erasure(backend: Backend) {
    let db = TestDb::new(backend).await;
    add_partner(&db.db, PARTNER).await;
    let clock = manual_clock();
    let log = AuditLog::start(db.db.clone()).await.unwrap();
    let trail: Arc<dyn AuditTrail> = Arc::new(log.clone());
    let gw = TestGateway::start_with_trail(
        db.db.clone(),
        default_verifier(),
        clock.clone(),
        Some(trail.clone()),
    )
    .await;
    let importer = Importer::new(db.db.clone(), trail.clone(), clock.clone());
    let card = Card::new();
    let (mut browser, person) = sign_in(&gw, &card).await;
    let files = worker_files();
    import_for(&importer, &db.db, &person, &files).await;
    // Another worker with a consent to the same partner.
    add_person(&db.db, "p-other").await;
    let other_files = vec![(
        "other.xml".to_owned(),
        data_converter::synth::cda_document(2).into_bytes(),
    )];
    import_for(&importer, &db.db, "p-other", &other_files).await;
    let now = clock.now_ms();
    change(
        &db.db,
        "p-other",
        PARTNER,
        Action::Grant,
        &[Category::Checkup],
        now - 1_000,
        now + DAY,
    )
    .await;
    let consent_token = grant_at_kiosk(&gw, &mut browser, &card).await;

    // Before: the partner reads both persons.
    let access = PartnerAccess::new(db.db.clone(), clock.clone(), trail.clone());
    let partner = Partner::new(&db.db, clock.clone(), trail.clone()).await;
    let mine = erasure::person_rows(&db.db, &person).await.unwrap();
    let stored_before = mine.len();
    assert!(stored_before > 40, "{stored_before} resources stored");
    let observation = mine
        .iter()
        .find(|r| r.resource_type == "Observation" && r.category == "A.checkup")
        .unwrap()
        .id
        .clone();
    let everything_before = access.everything(PARTNER, &person).await.unwrap();
    assert!(everything_before.len() > 10);
    let other_before = served_afresh(&access, "p-other").await;
    let (status, _, _) = partner
        .get(&format!("/fhir/Observation/{observation}"), false)
        .await;
    assert_eq!(status, 200);
    let (status, _, body) = partner.get("/fhir/Patient?_count=50", false).await;
    assert_eq!(status, 200);
    assert!(body.contains(&person), "{body}");
    let job_before = partner.bulk_export().await;
    assert!(mentions(&partner.bulk_lines(&job_before).await, &person));
    let entries_of_person = |entries: &[gateway::domain::audit::StoredEntry]| {
        entries
            .iter()
            .filter(|e| e.fields.person_id.as_deref() == Some(person.as_str()))
            .count()
    };
    let audited_before = entries_of_person(&read_entries(&db.db, 0).await.unwrap());
    assert!(
        audited_before >= 5,
        "{audited_before} entries about the person"
    );

    // Refused: without sign-in, without a pending document, with a token over another
    // challenge, for another origin, by another person's card, malformed, expired, replayed.
    let mut stranger = gw.browser();
    assert_eq!(
        stranger.post("/api/erasure/prepare", None).await.status,
        401
    );
    let r = stranger
        .post("/api/erasure/commit", Some(card.token(&gw.origin, "x")))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json["error"], "not_signed_in");
    let r = browser
        .post("/api/erasure/commit", Some(consent_token.clone()))
        .await;
    assert_eq!(r.status, 409, "nothing prepared: {:?}", r.json);
    let r = browser.post("/api/erasure/prepare", None).await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert_eq!(r.json["preview"]["resources"], stored_before as i64);
    assert_eq!(r.json["preview"]["consents_revoked"], 1);
    let document = r.json["document"].as_str().unwrap().to_owned();
    assert!(document.contains("\"format\":\"iphr-erasure/1\"") && document.contains(&person));
    let nonce = r.json["nonce"].as_str().unwrap().to_owned();
    for (token, why) in [
        (consent_token.clone(), "the consent document's signature"),
        (card.token("https://evil.example", &nonce), "another origin"),
        (
            Card::new().token(&gw.origin, &nonce),
            "another person's card",
        ),
        (b"{\"not\":\"a token\"}".to_vec(), "malformed"),
    ] {
        let r = browser.post("/api/erasure/commit", Some(token)).await;
        assert_eq!(r.status, 401, "{why}: {:?}", r.json);
        assert_eq!(r.json["error"], "signature_refused", "{why}");
    }
    // The document outlives none of that by more than 5 minutes.
    pass_time(&clock, &mut browser, 300_001).await;
    let r = browser
        .post("/api/erasure/commit", Some(card.token(&gw.origin, &nonce)))
        .await;
    assert_eq!(r.status, 409, "expired document: {:?}", r.json);
    assert_eq!(
        erasure::person_rows(&db.db, &person).await.unwrap().len(),
        stored_before,
        "nothing erased by a refused request"
    );

    // One document waits for the card per session: a consent change prepared after the erasure
    // document replaces it.
    let r = browser.post("/api/erasure/prepare", None).await;
    let nonce = r.json["nonce"].as_str().unwrap().to_owned();
    let revoke = json!({ "service_id": PARTNER, "action": "revoke" }).to_string();
    let r = browser
        .post("/api/consent/prepare", Some(revoke.into_bytes()))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let r = browser
        .post("/api/erasure/commit", Some(card.token(&gw.origin, &nonce)))
        .await;
    assert_eq!(r.status, 409, "replaced: {:?}", r.json);

    // The erasure.
    let r = browser
        .post("/api/erasure/prepare", Some(b"{}".to_vec()))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let token = card.token(&gw.origin, r.json["nonce"].as_str().unwrap());
    let r = browser
        .post("/api/erasure/commit", Some(token.clone()))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let erased = &r.json["erasure"];
    assert_eq!(erased["counts"]["resources"], stored_before as i64);
    assert_eq!(erased["counts"]["consents_revoked"], 1);
    assert!(erased["counts"]["person_keys"].as_i64().unwrap() >= 2);
    let erased_at = erased["erased_at_ms"].as_i64().unwrap();
    assert_eq!(
        erased["backup_purge_due_ms"].as_i64().unwrap(),
        erased_at + 35 * DAY
    );
    // Replayed: refused, nothing more happens.
    let r = browser.post("/api/erasure/commit", Some(token)).await;
    assert_eq!(r.status, 409, "{:?}", r.json);

    // Stored: nothing of the person; the consent head is a revoke signed by the erasure.
    assert!(
        erasure::person_rows(&db.db, &person)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        records::search(&db.db, &person, &all_categories())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(records::patient_of(&db.db, &person).await.unwrap(), None);
    assert!(
        records::patient_ids_of(&db.db, &person)
            .await
            .unwrap()
            .is_empty()
    );
    let head = consent::head(&db.db, &person, PARTNER)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((head.version, head.status), (2, Status::Deny));
    let versions = consent::versions(&db.db, &person, PARTNER).await.unwrap();
    assert!(versions[1].1.contains("iphr-erasure/1"));
    let register = erasure::register(&db.db, erasure::RegisterFilter::Person(&person))
        .await
        .unwrap();
    assert_eq!(register.len(), 1);
    assert_eq!(register[0].backup_purge_due_ms, erased_at + 35 * DAY);
    assert_eq!(
        erasure::register(&db.db, erasure::RegisterFilter::DueBy(erased_at + 35 * DAY))
            .await
            .unwrap()
            .len(),
        1,
        "listed as due on its due date"
    );
    assert!(
        erasure::register(
            &db.db,
            erasure::RegisterFilter::DueBy(erased_at + 35 * DAY - 1)
        )
        .await
        .unwrap()
        .is_empty()
    );

    // Partners: the same 404 as for a person who never consented, on every path.
    assert!(matches!(
        access.read(PARTNER, "Observation", &observation).await,
        Err(AccessError::NotFound)
    ));
    assert!(matches!(
        access
            .search(PARTNER, &search_all(&person, "Observation"))
            .await,
        Err(AccessError::NotFound)
    ));
    assert!(matches!(
        access.everything(PARTNER, &person).await,
        Err(AccessError::NotFound)
    ));
    assert!(matches!(
        access.patient(PARTNER, &person).await,
        Err(AccessError::NotFound)
    ));
    for path in [
        format!("/fhir/Observation/{observation}"),
        format!("/fhir/Patient/{person}"),
        format!("/fhir/Observation?patient={person}"),
        format!("/fhir/Patient/{person}/$everything"),
    ] {
        let (status, _, body) = partner.get(&path, false).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.contains("resource not found"), "{path}: {body}");
    }
    let (status, _, body) = partner.get("/fhir/Patient?_count=50", false).await;
    assert_eq!(status, 200);
    assert!(!body.contains(&person), "{body}");
    assert!(body.contains("p-other"), "{body}");
    let job_after = partner.bulk_export().await;
    let lines = partner.bulk_lines(&job_after).await;
    assert!(!mentions(&lines, &person));
    assert!(mentions(&lines, "p-other"));
    // The files of a job built before the erasure no longer hold the person either.
    let lines = partner.bulk_lines(&job_before).await;
    assert!(!mentions(&lines, &person));
    assert!(mentions(&lines, "p-other"));

    // Even a new consent finds nothing: the data is gone, not hidden.
    grant_at_kiosk(&gw, &mut browser, &card).await;
    let everything = access.everything(PARTNER, &person).await.unwrap();
    assert_eq!(everything.len(), 1, "only the Patient the gateway names");
    let patient: Value = serde_json::from_str(&everything.patient.json).unwrap();
    assert_eq!(patient, json!({"resourceType": "Patient", "id": person}));
    for ty in [
        "Observation",
        "Condition",
        "DiagnosticReport",
        "Organization",
    ] {
        assert!(
            access
                .search(PARTNER, &search_all(&person, ty))
                .await
                .unwrap()
                .is_empty(),
            "{ty}"
        );
    }
    assert!(matches!(
        access.read(PARTNER, "Observation", &observation).await,
        Err(AccessError::NotFound)
    ));
    // The worker's own export is empty too (after a fresh sign-in: D6).
    let (mut browser, _) = sign_in(&gw, &card).await;
    let r = browser.get("/api/export").await;
    assert_eq!(r.status, 200);
    assert!(r.json.get("entry").is_none(), "{}", r.json);

    // Other persons untouched.
    let other_after = served_afresh(&access, "p-other").await;
    assert_eq!(other_after, other_before);

    // Re-delivery of the same files stores nothing and links nothing.
    let (_, resources_before) = records::counts(&db.db).await.unwrap();
    for (name, bytes) in files.iter().chain(&other_files) {
        let outcome = importer
            .import_bytes(bytes.clone(), name, "drop-dir", None)
            .await
            .unwrap();
        assert!(
            matches!(outcome, ImportOutcome::AlreadyImported { .. }),
            "{name}"
        );
    }
    assert_eq!(records::counts(&db.db).await.unwrap().1, resources_before);
    assert!(
        erasure::person_rows(&db.db, &person)
            .await
            .unwrap()
            .is_empty()
    );

    // The audit log: every earlier entry kept, the erasure recorded, the chain intact.
    let entries = read_entries(&db.db, 0).await.unwrap();
    assert!(entries_of_person(&entries) > audited_before);
    let erasures: Vec<_> = entries
        .iter()
        .filter(|e| e.fields.action == "erasure")
        .collect();
    assert_eq!(erasures.len(), 1);
    assert_eq!(erasures[0].fields.outcome, "permit");
    assert_eq!(erasures[0].fields.actor_kind, "person");
    assert_eq!(
        erasures[0].fields.person_id.as_deref(),
        Some(person.as_str())
    );
    let summary = verify_log(&db.db, Vec::new()).await.unwrap().unwrap();
    assert_eq!(summary.size, entries.len() as u64);

    gw.stop().await;
    log.shutdown().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k1_erasure_removes_the_record_from_every_read_path_sqlite() {
    erasure(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k1_erasure_removes_the_record_from_every_read_path_postgres() {
    erasure(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k1_erasure_waits_for_a_running_pull_and_fails_closed_without_audit() {
    let db = TestDb::new(Backend::Sqlite).await;
    let clock = manual_clock();
    let gw = TestGateway::start(db.db.clone(), default_verifier(), clock.clone()).await;
    let importer = Importer::new(db.db.clone(), gw.trail.clone(), clock.clone());
    let card = Card::new();
    let (mut browser, person) = sign_in(&gw, &card).await;
    import_for(&importer, &db.db, &person, &worker_files()[..1]).await;
    let stored = erasure::person_rows(&db.db, &person).await.unwrap().len();

    // A pull holds the lease of one of the person's source links.
    add_source(&db.db, "kenshin-tokyo").await;
    db.db
        .execute_raw(&format!(
            "INSERT INTO source_links (person_id, source_id, pseudonym, credential_type, \
             binding_certificate, linked_at_ms) VALUES ('{person}', 'kenshin-tokyo', 'K-0001', \
             'jpki', X'00', 0)"
        ))
        .await
        .unwrap();
    let now = clock.now_ms();
    assert!(
        gateway::store::sources::take_lease(
            &db.db,
            &person,
            "kenshin-tokyo",
            "other-gateway",
            now,
            now + 60_000
        )
        .await
        .unwrap()
    );
    let r = browser.post("/api/erasure/prepare", None).await;
    assert_eq!(r.json["preview"]["source_links"], 1);
    let nonce = r.json["nonce"].as_str().unwrap().to_owned();
    let r = browser
        .post("/api/erasure/commit", Some(card.token(&gw.origin, &nonce)))
        .await;
    assert_eq!(r.status, 409, "{:?}", r.json);
    assert_eq!(r.json["error"], "pull_in_progress");
    assert_eq!(
        erasure::person_rows(&db.db, &person).await.unwrap().len(),
        stored
    );

    // The audit trail down: nothing erased (G7), and the document is used up.
    pass_time(&clock, &mut browser, 61_000).await;
    gw.trail.set_failing(true);
    let r = browser
        .post("/api/erasure/commit", Some(card.token(&gw.origin, &nonce)))
        .await;
    assert_eq!(r.status, 503, "{:?}", r.json);
    assert_eq!(
        erasure::person_rows(&db.db, &person).await.unwrap().len(),
        stored
    );
    gw.trail.set_failing(false);
    let r = browser
        .post("/api/erasure/commit", Some(card.token(&gw.origin, &nonce)))
        .await;
    assert_eq!(r.status, 409, "single use: {:?}", r.json);

    // With the lease expired the erasure goes through and takes the link with it.
    let r = browser.post("/api/erasure/prepare", None).await;
    let r = browser
        .post(
            "/api/erasure/commit",
            Some(card.token(&gw.origin, r.json["nonce"].as_str().unwrap())),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert_eq!(r.json["erasure"]["counts"]["source_links"], 1);
    assert!(
        gateway::store::sources::of_person(&db.db, &person)
            .await
            .unwrap()
            .is_empty()
    );
    let audited: Vec<(PrivacyAction, &str)> = gw
        .trail
        .events()
        .into_iter()
        .filter_map(|e| match e {
            TrailEvent::Privacy(p) => Some((p.action, p.outcome)),
            _ => None,
        })
        .collect();
    assert_eq!(
        audited,
        vec![(PrivacyAction::Erasure, "permit")],
        "the attempt refused for the pull is not an erasure; the failed write stored nothing"
    );
    gw.stop().await;
    db.cleanup().await;
}

// ---------------------------------------------------------------- K2

/// An export's entries without `fullUrl` (it carries the gateway's origin), as sorted canonical
/// JSON texts; and the `Type/id` tails of the fullUrls.
fn canonical_entries(bundle: &Value) -> (Vec<String>, BTreeSet<String>) {
    let mut texts = Vec::new();
    let mut tails = BTreeSet::new();
    for e in bundle["entry"].as_array().unwrap() {
        let full = e["fullUrl"].as_str().unwrap();
        let (_, tail) = full.split_once("/fhir/").unwrap();
        tails.insert(tail.to_owned());
        let mut e = e.clone();
        e.as_object_mut().unwrap().remove("fullUrl");
        texts.push(e.to_string());
    }
    texts.sort();
    (texts, tails)
}

/// Every stored column of the person's resources (the search columns included).
async fn stored_columns(db: &Db, person: &str) -> Vec<Vec<Option<String>>> {
    use sqlx::Row;
    let sql = "SELECT r.resource_type, r.id, r.person_key, k.patient_id, r.category, \
               r.fhir_category, r.code, r.effective, r.json FROM person_keys k \
               JOIN iphr_resources r ON r.person_key = k.person_key WHERE k.person_id = $1 \
               ORDER BY r.resource_type, r.id, r.person_key";
    macro_rules! rows {
        ($pool:expr) => {
            sqlx::query(sql)
                .bind(person)
                .fetch_all($pool)
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (0..9)
                        .map(|i| r.try_get::<Option<String>, _>(i).unwrap())
                        .collect()
                })
                .collect()
        };
    }
    match db {
        Db::Sqlite(pool) => rows!(pool),
        Db::Postgres(pool) => rows!(pool),
    }
}

async fn export_import_export(backend: Backend) {
    let one = TestDb::new(backend).await;
    let clock = manual_clock();
    let gw = TestGateway::start(one.db.clone(), default_verifier(), clock.clone()).await;
    let importer = Importer::new(one.db.clone(), gw.trail.clone(), clock.clone());
    let card = Card::new();

    // Not signed in: refused.
    let mut stranger = gw.browser();
    let r = stranger.get("/api/export").await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (401, Some("not_signed_in"))
    );
    assert_eq!(stranger.get("/api/export?format=ndjson").await.status, 401);

    let (mut browser, person) = sign_in(&gw, &card).await;
    import_for(&importer, &one.db, &person, &worker_files()).await;
    add_person(&one.db, "p-other").await;
    let other = vec![(
        "other.xml".to_owned(),
        data_converter::synth::cda_document(3).into_bytes(),
    )];
    import_for(&importer, &one.db, "p-other", &other).await;
    let stored = stored_columns(&one.db, &person).await;

    // The export over HTTP: a download of one collection Bundle with every stored resource.
    let response = gw
        .client
        .get(gw.url("/api/export"))
        .header(
            "cookie",
            format!("{SESSION_COOKIE}={}", browser.cookie.as_deref().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/fhir+json");
    let disposition = response.headers()["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"iphr-")
            && disposition.ends_with(".iphr-export.json\""),
        "{disposition}"
    );
    let bytes = response.bytes().await.unwrap().to_vec();
    let bundle: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "collection");
    let entries = bundle["entry"].as_array().unwrap();
    let mut stored_as = 0;
    let mut categories = BTreeSet::new();
    for e in entries {
        for s in e["extension"].as_array().unwrap() {
            stored_as += 1;
            for part in s["extension"].as_array().unwrap() {
                if part["url"] == "category" {
                    categories.insert(part["valueString"].as_str().unwrap().to_owned());
                }
            }
        }
    }
    assert_eq!(stored_as, stored.len(), "every stored resource");
    for c in ["A.checkup", "A.claims", "B.attendance", "C.interview"] {
        assert!(categories.contains(c), "{c} in {categories:?}");
    }
    let other_key = &gateway::domain::import::convert(&other[0].1, "other.xml", None)
        .unwrap()
        .person_keys[0]
        .person_key;
    assert!(
        !String::from_utf8_lossy(&bytes).contains(other_key.as_str()),
        "nothing of another person"
    );
    let exports: Vec<usize> = gw
        .trail
        .events()
        .into_iter()
        .filter_map(|e| match e {
            TrailEvent::Privacy(p) if p.action == PrivacyAction::Export => {
                assert_eq!(p.person_id, person);
                p.detail["served"].as_u64().map(|n| n as usize)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        exports,
        vec![entries.len()],
        "audited as the person's export"
    );

    // NDJSON per resource type.
    let r = browser.get("/api/export?format=ndjson").await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let mut ndjson_total = 0;
    for out in r.json["output"].as_array().unwrap() {
        let response = gw
            .client
            .get(gw.url(out["url"].as_str().unwrap()))
            .header(
                "cookie",
                format!("{SESSION_COOKIE}={}", browser.cookie.as_deref().unwrap()),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "application/fhir+ndjson"
        );
        let text = response.text().await.unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len() as u64, out["count"].as_u64().unwrap());
        assert!(lines.iter().all(|l| l["resourceType"] == out["type"]));
        ndjson_total += lines.len();
    }
    assert_eq!(ndjson_total, entries.len());
    assert_eq!(browser.get("/api/export?format=xml").await.status, 400);
    assert_eq!(
        browser
            .get("/api/export?format=ndjson&type=../x")
            .await
            .status,
        400
    );

    // D6: the card sign-in must be recent.
    pass_time(&clock, &mut browser, 300_000).await;
    let r = browser.get("/api/export").await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (401, Some("reauthentication_required"))
    );

    // A fresh gateway imports the export (all-or-nothing, idempotent) …
    let two = TestDb::new(match &one.db {
        Db::Sqlite(_) => Backend::Sqlite,
        Db::Postgres(_) => Backend::Postgres,
    })
    .await;
    let gw2 = TestGateway::start(two.db.clone(), default_verifier(), clock.clone()).await;
    let importer2 = Importer::new(two.db.clone(), gw2.trail.clone(), clock.clone());
    let name = "worker.iphr-export.json";
    let outcome = importer2
        .import_bytes(bytes.clone(), name, "cli", None)
        .await
        .unwrap();
    assert!(
        matches!(outcome, ImportOutcome::Imported { resources, .. } if resources as usize == stored.len()),
        "{outcome:?}"
    );
    assert!(matches!(
        importer2
            .import_bytes(bytes.clone(), name, "cli", None)
            .await
            .unwrap(),
        ImportOutcome::AlreadyImported { .. }
    ));
    // … refuses a broken one naming file, entry and field, storing nothing …
    let mut broken = bundle.clone();
    broken["entry"][5]["resource"]
        .as_object_mut()
        .unwrap()
        .remove("id");
    let counts = records::counts(&two.db).await.unwrap();
    match importer2
        .import_bytes(
            broken.to_string().into_bytes(),
            "broken.iphr-export.json",
            "cli",
            None,
        )
        .await
    {
        Err(ImporterError::Refused(e)) => assert_eq!(
            e.to_string(),
            "broken.iphr-export.json: entry[5].resource.id: missing or not a FHIR id"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(records::counts(&two.db).await.unwrap(), counts);

    // … and, once the same card signs in there and its keys are linked, exports it equally.
    let (mut browser2, person2) = sign_in(&gw2, &card).await;
    let converted = gateway::domain::import::convert(&bytes, name, None).unwrap();
    for k in &converted.person_keys {
        assert!(
            records::link_person_key(&two.db, &k.person_key, &person2, 0)
                .await
                .unwrap()
        );
    }
    let r = browser2.get("/api/export").await;
    assert_eq!(r.status, 200);
    assert_eq!(canonical_entries(&r.json), canonical_entries(&bundle));
    assert_eq!(stored_columns(&two.db, &person2).await, stored);

    gw.stop().await;
    gw2.stop().await;
    one.cleanup().await;
    two.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k2_export_import_into_a_fresh_gateway_export_is_equal_sqlite() {
    export_import_export(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k2_export_import_into_a_fresh_gateway_export_is_equal_postgres() {
    export_import_export(Backend::Postgres).await;
}
