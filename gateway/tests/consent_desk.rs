//! Consent at the kiosk through the real HTTPS server (issue 6 deliverable 3; security-scenarios
//! D6, E9, E10): every change needs a fresh card signature over the consent document, by the
//! signed-in person's card, single use, within 5 minutes, against the current version.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::seed::add_partner;
use common::*;
use gateway::domain::trail::TrailEvent;
use gateway::store::consent;

async fn signed_in(
    backend: Backend,
) -> (
    TestDb,
    TestGateway,
    std::sync::Arc<gateway::clock::ManualClock>,
    Browser,
    Card,
    String,
) {
    let db = TestDb::new(backend).await;
    add_partner(&db.db, "partner-a").await;
    let clock = manual_clock();
    let gw = TestGateway::start(db.db.clone(), default_verifier(), clock.clone()).await;
    let card = Card::new();
    let mut browser = gw.browser();
    let nonce = browser.nonce().await;
    let r = browser
        .post("/api/auth/token", Some(card.token(&gw.origin, &nonce)))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let person = r.json["person_id"].as_str().unwrap().to_owned();
    (db, gw, clock, browser, card, person)
}

fn prepare_body(action: &str, categories: &[&str]) -> Vec<u8> {
    serde_json::json!({ "service_id": "partner-a", "action": action, "categories": categories })
        .to_string()
        .into_bytes()
}

async fn grant_and_revoke(backend: Backend) {
    let (db, gw, _clock, mut browser, card, person) = signed_in(backend).await;

    // The request as the worker sees it.
    let r = browser.get("/api/consent").await;
    assert_eq!(r.status, 200);
    let partner = &r.json["partners"][0];
    assert_eq!(partner["service_id"], "partner-a");
    assert_eq!(partner["in_force"], false);
    assert_eq!(partner["categories"][0]["label"], "健診結果");

    // Grant: the card signs the document's hash.
    let r = browser
        .post(
            "/api/consent/prepare",
            Some(prepare_body("grant", &["A.checkup"])),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let nonce = r.json["nonce"].as_str().unwrap().to_owned();
    let document = r.json["document"].as_str().unwrap().to_owned();
    assert!(document.contains("\"version\":1") && document.contains("A.checkup"));
    let token = card.token(&gw.origin, &nonce);
    let r = browser
        .post("/api/consent/commit", Some(token.clone()))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert_eq!(r.json["consent"]["status"], "permit");
    let head = consent::head(&db.db, &person, "partner-a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.version, 1);

    // The same token again: nothing pending any more.
    let r = browser.post("/api/consent/commit", Some(token)).await;
    assert_eq!(r.status, 409);

    // Revoke.
    let r = browser
        .post("/api/consent/prepare", Some(prepare_body("revoke", &[])))
        .await;
    let nonce = r.json["nonce"].as_str().unwrap().to_owned();
    let r = browser
        .post("/api/consent/commit", Some(card.token(&gw.origin, &nonce)))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert_eq!(r.json["consent"]["status"], "deny");
    let versions = consent::versions(&db.db, &person, "partner-a")
        .await
        .unwrap();
    assert_eq!(versions.len(), 2);
    // The stored document is the one whose hash the card signed.
    assert!(versions[1].1.contains("\"action\":\"revoke\""));

    let consent_events = gw
        .trail
        .events()
        .into_iter()
        .filter(|e| matches!(e, TrailEvent::Consent(_)))
        .count();
    assert_eq!(consent_events, 2, "each change audited");
    gw.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_and_revoke_with_fresh_card_signatures_sqlite() {
    grant_and_revoke(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_and_revoke_with_fresh_card_signatures_postgres() {
    grant_and_revoke(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d6_consent_changes_are_refused_without_a_fresh_signature_of_this_document() {
    let (db, gw, clock, mut browser, card, person) = signed_in(Backend::Sqlite).await;

    // Nothing prepared.
    let nonce = browser.nonce().await;
    let r = browser
        .post("/api/consent/commit", Some(card.token(&gw.origin, &nonce)))
        .await;
    assert_eq!(r.status, 409, "no pending document");

    // A token over another nonce (the login nonce) does not commit the pending document.
    let r = browser
        .post("/api/consent/prepare", Some(prepare_body("grant", &[])))
        .await;
    let doc_nonce = r.json["nonce"].as_str().unwrap().to_owned();
    let r = browser
        .post("/api/consent/commit", Some(card.token(&gw.origin, &nonce)))
        .await;
    assert_eq!(r.status, 401, "signature over another challenge");
    // Over another origin.
    let r = browser
        .post(
            "/api/consent/commit",
            Some(card.token("https://evil.example", &doc_nonce)),
        )
        .await;
    assert_eq!(r.status, 401, "signature for another origin");
    // By another person's (valid) card.
    let other = Card::new();
    let r = browser
        .post(
            "/api/consent/commit",
            Some(other.token(&gw.origin, &doc_nonce)),
        )
        .await;
    assert_eq!(r.status, 401, "another person's card");
    // Malformed token.
    let r = browser
        .post(
            "/api/consent/commit",
            Some(b"{\"not\":\"a token\"}".to_vec()),
        )
        .await;
    assert_eq!(r.status, 401);
    // Categories the partner did not ask for; an unknown partner; an unknown category.
    let r = browser
        .post(
            "/api/consent/prepare",
            Some(prepare_body("grant", &["C.patrol"])),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.json);
    let r = browser
        .post(
            "/api/consent/prepare",
            Some(br#"{"service_id":"nobody","action":"grant"}"#.to_vec()),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = browser
        .post(
            "/api/consent/prepare",
            Some(prepare_body("grant", &["Z.all"])),
        )
        .await;
    assert_eq!(r.status, 415, "not the expected JSON");
    // Prepared again: the new document replaces the pending one.
    let r = browser
        .post("/api/consent/prepare", Some(prepare_body("grant", &[])))
        .await;
    let doc_nonce = r.json["nonce"].as_str().unwrap().to_owned();
    // Older than 5 minutes (the session's idle timeout ends it even sooner).
    clock.advance_ms(300_001);
    let r = browser
        .post(
            "/api/consent/commit",
            Some(card.token(&gw.origin, &doc_nonce)),
        )
        .await;
    assert!(r.status == 409 || r.status == 401, "{}", r.status);
    assert!(
        consent::head(&db.db, &person, "partner-a")
            .await
            .unwrap()
            .is_none()
    );

    // Without a signed-in session, and with another origin.
    let mut anonymous = gw.browser();
    let r = anonymous
        .post("/api/consent/prepare", Some(prepare_body("grant", &[])))
        .await;
    assert_eq!(r.status, 401);
    let r = browser
        .post_with_origin(
            "/api/consent/prepare",
            Some(prepare_body("grant", &[])),
            Some("https://evil.example"),
        )
        .await;
    assert_eq!(r.status, 403);
    gw.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e9_a_document_prepared_before_another_change_cannot_be_committed_after_it() {
    let (db, gw, clock, mut browser, card, person) = signed_in(Backend::Sqlite).await;
    // A second kiosk session of the same person.
    let mut second = gw.browser();
    let nonce = second.nonce().await;
    let r = second
        .post("/api/auth/token", Some(card.token(&gw.origin, &nonce)))
        .await;
    assert_eq!(r.status, 200);

    // Kiosk 1 prepares a grant (version 1) but does not sign yet.
    let r = browser
        .post("/api/consent/prepare", Some(prepare_body("grant", &[])))
        .await;
    let stale = r.json["nonce"].as_str().unwrap().to_owned();
    // Kiosk 2 grants and then revokes (versions 1 and 2).
    for action in ["grant", "revoke"] {
        let r = second
            .post("/api/consent/prepare", Some(prepare_body(action, &[])))
            .await;
        let n = r.json["nonce"].as_str().unwrap().to_owned();
        let r = second
            .post("/api/consent/commit", Some(card.token(&gw.origin, &n)))
            .await;
        assert_eq!(r.status, 200, "{action}: {:?}", r.json);
    }
    // The older grant, signed now, must not undo the revoke.
    clock.advance_ms(1_000);
    let r = browser
        .post("/api/consent/commit", Some(card.token(&gw.origin, &stale)))
        .await;
    assert_eq!(r.status, 409, "{:?}", r.json);
    assert_eq!(r.json["error"], "consent_changed");
    let head = consent::head(&db.db, &person, "partner-a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.version, 2);
    assert_eq!(head.status, gateway::domain::consent::Status::Deny);
    gw.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_history_shows_every_partner_read_of_the_workers_data() {
    use gateway::domain::access::{AccessError, PartnerAccess};
    use gateway::store::audit::AuditLog;
    let (db, gw, _clock, mut browser, card, person) = signed_in(Backend::Sqlite).await;
    let r = browser.get("/api/history").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["accesses"].as_array().unwrap().len(), 0);

    let r = browser
        .post("/api/consent/prepare", Some(prepare_body("grant", &[])))
        .await;
    let nonce = r.json["nonce"].as_str().unwrap().to_owned();
    let r = browser
        .post("/api/consent/commit", Some(card.token(&gw.origin, &nonce)))
        .await;
    assert_eq!(r.status, 200);

    // The partner reads through the real audit log of the same database.
    let audit = AuditLog::start(db.db.clone()).await.unwrap();
    let access = PartnerAccess::new(
        db.db.clone(),
        std::sync::Arc::new(gateway::clock::SystemClock),
        std::sync::Arc::new(audit.clone()),
    );
    access.patient("partner-a", &person).await.unwrap();
    access.everything("partner-a", &person).await.unwrap();
    // Another partner, never consented: refused, and shown as refused.
    add_partner(&db.db, "partner-z").await;
    assert!(matches!(
        access.patient("partner-z", &person).await,
        Err(AccessError::NotFound)
    ));
    // A read of somebody else's id does not appear in this worker's history.
    let _ = access.patient("partner-a", "someone-else").await;

    let r = browser.get("/api/history").await;
    assert_eq!(r.status, 200);
    let accesses = r.json["accesses"].as_array().unwrap();
    let seen: Vec<(String, String, String)> = accesses
        .iter()
        .map(|a| {
            (
                a["partner_name"].as_str().unwrap_or("").to_owned(),
                a["action"].as_str().unwrap().to_owned(),
                a["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("partner-z PHR".into(), "read".into(), "deny".into()),
            ("partner-a PHR".into(), "everything".into(), "permit".into()),
            ("partner-a PHR".into(), "read".into(), "permit".into()),
        ]
    );
    assert_eq!(accesses[2]["served"], 1);
    // Signed out: no history.
    let mut anonymous = gw.browser();
    assert_eq!(anonymous.get("/api/history").await.status, 401);
    audit.shutdown().await;
    gw.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_postgresql_a_revoke_through_one_is_enforced_by_the_other() {
    use gateway::domain::access::{AccessError, PartnerAccess};
    use gateway::domain::trail::MemoryTrail;
    let (db, gw, _clock, mut browser, card, person) = signed_in(Backend::Postgres).await;
    common::seed::seed_person_key(&db.db, &person, 9).await;
    // Gateway B: its own pool on the same database, serving the partner.
    let other_pool = gateway::store::Db::connect(&db.url, 4).await.unwrap();
    let b = PartnerAccess::new(
        other_pool.clone(),
        std::sync::Arc::new(gateway::clock::SystemClock),
        std::sync::Arc::new(MemoryTrail::new()),
    );
    assert!(matches!(
        b.everything("partner-a", &person).await,
        Err(AccessError::NotFound)
    ));
    // Granted at the kiosk of gateway A: gateway B serves at once.
    let r = browser
        .post("/api/consent/prepare", Some(prepare_body("grant", &[])))
        .await;
    let nonce = r.json["nonce"].as_str().unwrap().to_owned();
    let r = browser
        .post("/api/consent/commit", Some(card.token(&gw.origin, &nonce)))
        .await;
    assert_eq!(r.status, 200);
    let served = b.everything("partner-a", &person).await.unwrap();
    assert!(served.len() > 1, "{served:?}");
    // Revoked at gateway A: gateway B's next request is refused.
    let r = browser
        .post("/api/consent/prepare", Some(prepare_body("revoke", &[])))
        .await;
    let nonce = r.json["nonce"].as_str().unwrap().to_owned();
    let r = browser
        .post("/api/consent/commit", Some(card.token(&gw.origin, &nonce)))
        .await;
    assert_eq!(r.status, 200);
    assert!(matches!(
        b.everything("partner-a", &person).await,
        Err(AccessError::NotFound)
    ));
    other_pool.close().await;
    gw.stop().await;
    db.cleanup().await;
}
