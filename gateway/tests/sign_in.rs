//! Card sign-in through the real HTTPS server (DESIGN §4; security-scenarios B1–B7, B13, C10,
//! D1–D3, D5, D7) on SQLite, and the concurrency and end-to-end cases on PostgreSQL too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::*;
use gateway::clock::ManualClock;
use gateway::domain::auth::{AuthError, Authenticator};
use gateway::domain::nonce::{self, NoncePurpose};
use gateway::store::{auth_events, nonces};
use std::collections::HashSet;
use std::sync::Arc;

async fn start(backend: Backend) -> (TestDb, TestGateway, Arc<ManualClock>) {
    let db = TestDb::new(backend).await;
    let clock = manual_clock();
    let gw = TestGateway::start(db.db.clone(), default_verifier(), clock.clone()).await;
    (db, gw, clock)
}

/// Signs in with `card` in `browser`; returns the response JSON.
async fn sign_in(gw: &TestGateway, browser: &mut Browser, card: &Card) -> Reply {
    let nonce = browser.nonce().await;
    let token = card.token(&gw.origin, &nonce);
    browser.post("/api/auth/token", Some(token)).await
}

async fn end_to_end(backend: Backend) {
    let (db, gw, _clock) = start(backend).await;
    let card = Card::new();
    let mut browser = gw.browser();
    let before = browser.get("/api/session").await;
    assert_eq!(before.status, 401);
    assert_eq!(before.json["error"], "not_signed_in");

    let nonce_reply = browser.post("/api/auth/nonce", None).await;
    assert_eq!(nonce_reply.status, 200);
    assert_eq!(nonce_reply.json["origin"], gw.origin.as_str());
    assert_eq!(nonce_reply.json["ttl_secs"], 300);
    let anonymous = browser.cookie.clone().unwrap();
    let nonce = nonce_reply.json["nonce"].as_str().unwrap().to_owned();
    let reply = browser
        .post("/api/auth/token", Some(card.token(&gw.origin, &nonce)))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(reply.json["new_person"], true);
    assert_eq!(reply.json["card_type"], "jpki");
    let person = reply.json["person_id"].as_str().unwrap().to_owned();
    let cookie = reply.set_cookie.join("\n");
    assert!(cookie.contains("__Host-iphr-session="), "{cookie}");
    assert!(
        cookie.contains("Secure")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
    );
    assert_ne!(
        browser.cookie.as_deref(),
        Some(anonymous.as_str()),
        "session id rotated"
    );

    let who = browser.get("/api/session").await;
    assert_eq!(who.status, 200);
    assert_eq!(who.json["person_id"], person.as_str());
    assert_eq!(who.json["card_type"], "jpki");
    let subject = who.json["certificate"]["subject"].as_str().unwrap();
    assert!(subject.starts_with("C=JP, CN="), "{subject}");
    assert!(
        who.json["certificate"]["not_after_ms"].as_i64().unwrap()
            > who.json["authenticated_at_ms"].as_i64().unwrap()
    );

    // The same card again, from another browser: same person, not new.
    let mut other = gw.browser();
    let again = sign_in(&gw, &mut other, &card).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json["person_id"], person.as_str());
    assert_eq!(again.json["new_person"], false);

    // A PHR card signs in too (ES256).
    let p = pki();
    let (key, cert) = p
        .phr
        .issue_card(vec![rcgen::KeyUsagePurpose::DigitalSignature]);
    let mut third = gw.browser();
    let nonce = third.nonce().await;
    let phr = third
        .post(
            "/api/auth/token",
            Some(es256_token(&cert, &key, &gw.origin, &nonce)),
        )
        .await;
    assert_eq!(phr.status, 200, "{:?}", phr.json);
    assert_eq!(phr.json["card_type"], "phr");
    assert_ne!(phr.json["person_id"], person.as_str());

    // Sign-out (D2): 204, the old cookie is dead at once.
    let old = browser.cookie.clone();
    let out = browser.post("/api/auth/signout", None).await;
    assert_eq!(out.status, 204);
    assert!(browser.cookie.is_none());
    browser.cookie = old;
    assert_eq!(browser.get("/api/session").await.status, 401);

    assert_eq!(
        auth_events::count(&db.db, "success", None).await.unwrap(),
        3
    );
    gw.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b1_d1_d2_sign_in_whoami_sign_out_sqlite() {
    end_to_end(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b1_d1_d2_sign_in_whoami_sign_out_postgres() {
    end_to_end(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b2_replayed_token_is_refused() {
    let (db, gw, _clock) = start(Backend::Sqlite).await;
    let card = Card::new();
    let mut browser = gw.browser();
    let nonce = browser.nonce().await;
    let token = card.token(&gw.origin, &nonce);
    let anonymous = browser.cookie.clone();
    assert_eq!(
        browser
            .post("/api/auth/token", Some(token.clone()))
            .await
            .status,
        200
    );
    // Replay with the new session: no nonce was issued to it.
    let r = browser.post("/api/auth/token", Some(token.clone())).await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (401, Some("authentication_failed"))
    );
    // Replay with a fresh nonce in that session: the signature is over the old nonce.
    browser.nonce().await;
    assert_eq!(
        browser
            .post("/api/auth/token", Some(token.clone()))
            .await
            .status,
        401
    );
    // Replay with the anonymous session the nonce was issued to: that session is gone.
    let mut attacker = gw.browser();
    attacker.cookie = anonymous;
    assert_eq!(
        attacker.post("/api/auth/token", Some(token)).await.status,
        401
    );
    assert_eq!(
        auth_events::count(&db.db, "failure", None).await.unwrap(),
        3
    );
    gw.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b2_the_nonce_is_consumed_once_even_within_one_session() {
    // Domain level: the same session submits the same token twice; the second finds no nonce.
    let db = TestDb::new(Backend::Sqlite).await;
    let clock = manual_clock();
    let origin = "https://kiosk.example.jp";
    let auth = Authenticator::new(
        db.db.clone(),
        clock,
        Arc::new(default_verifier()),
        auth_config(origin),
    );
    let issued = auth.issue_nonce(None, NoncePurpose::Login).await.unwrap();
    let token = Card::new().token(origin, &issued.nonce);
    let cookie = issued.session.as_str().to_owned();
    let first = auth.sign_in(Some(&cookie), &token, None).await.unwrap();
    assert!(first.new_person);
    // The session rotated, so re-submitting with the old cookie finds no session…
    assert!(matches!(
        auth.sign_in(Some(&cookie), &token, None).await,
        Err(AuthError::NoSession)
    ));
    // …and with the new cookie, no nonce.
    assert!(matches!(
        auth.sign_in(Some(first.session.as_str()), &token, None)
            .await,
        Err(AuthError::NoNonce)
    ));
    // Store level: consume is single use.
    let s =
        gateway::domain::session::SessionId::generate(&ring::rand::SystemRandom::new()).unwrap();
    nonces::replace(&db.db, "n", &s.hash(), "login", i64::MAX)
        .await
        .unwrap();
    assert!(
        nonces::consume(&db.db, "n", &s.hash(), "login", 0)
            .await
            .unwrap()
    );
    assert!(
        !nonces::consume(&db.db, "n", &s.hash(), "login", 0)
            .await
            .unwrap()
    );
    db.cleanup().await;
}

async fn concurrent_submissions(backend: Backend) {
    let (db, gw, _clock) = start(backend).await;
    let card = Card::new();
    let mut browser = gw.browser();
    let nonce = browser.nonce().await;
    let token = card.token(&gw.origin, &nonce);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let mut b = browser.clone();
        let token = token.clone();
        tasks.spawn(async move { b.post("/api/auth/token", Some(token)).await.status });
    }
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(status) = tasks.join_next().await {
        *statuses.entry(status.unwrap()).or_insert(0u32) += 1;
    }
    assert_eq!(statuses.get(&200), Some(&1), "{statuses:?}");
    assert_eq!(statuses.get(&401), Some(&999), "{statuses:?}");
    assert_eq!(
        auth_events::count(&db.db, "success", None).await.unwrap(),
        1
    );
    assert_eq!(nonces::count(&db.db).await.unwrap(), 0);
    gw.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_1000_concurrent_submissions_of_one_token_one_success_sqlite() {
    concurrent_submissions(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_1000_concurrent_submissions_of_one_token_one_success_postgres() {
    concurrent_submissions(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b4_nonce_of_session_a_with_token_posted_in_session_b_is_refused() {
    let (db, gw, _clock) = start(Backend::Sqlite).await;
    let card = Card::new();
    let mut a = gw.browser();
    let mut b = gw.browser();
    let nonce_a = a.nonce().await;
    let token = card.token(&gw.origin, &nonce_a);
    // B has no nonce at all.
    assert_eq!(
        b.post("/api/auth/token", Some(token.clone())).await.status,
        401
    );
    // B has its own nonce: the token is over A's.
    b.nonce().await;
    assert_eq!(
        b.post("/api/auth/token", Some(token.clone())).await.status,
        401
    );
    // A's nonce is still there for A (nothing consumed by B's attempts).
    assert_eq!(a.post("/api/auth/token", Some(token)).await.status, 200);
    gw.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b6_nonce_age_299s_accepted_300s_plus_1ms_refused() {
    let db = TestDb::new(Backend::Sqlite).await;
    let clock = manual_clock();
    let origin = "https://kiosk.example.jp";
    // A clinic-like idle timeout (15 min) so that the session outlives the nonce.
    let mut config = auth_config(origin);
    config.session.idle_ms = 15 * 60 * 1000;
    let auth = Authenticator::new(
        db.db.clone(),
        clock.clone(),
        Arc::new(default_verifier()),
        config,
    );
    let card = Card::new();

    let issued = auth.issue_nonce(None, NoncePurpose::Login).await.unwrap();
    clock.advance_ms(299_000);
    let token = card.token(origin, &issued.nonce);
    assert!(
        auth.sign_in(Some(issued.session.as_str()), &token, None)
            .await
            .is_ok()
    );

    let issued = auth.issue_nonce(None, NoncePurpose::Login).await.unwrap();
    clock.advance_ms(300_001);
    let token = card.token(origin, &issued.nonce);
    assert!(matches!(
        auth.sign_in(Some(issued.session.as_str()), &token, None)
            .await,
        Err(AuthError::NonceExpired)
    ));
    // Exactly 300 s is too late as well (lifetime [issue, issue + 300 s)).
    let issued = auth.issue_nonce(None, NoncePurpose::Login).await.unwrap();
    clock.advance_ms(300_000);
    let token = card.token(origin, &issued.nonce);
    assert!(matches!(
        auth.sign_in(Some(issued.session.as_str()), &token, None)
            .await,
        Err(AuthError::NonceExpired)
    ));
    // Expired nonces are purged.
    assert!(nonces::count(&db.db).await.unwrap() >= 1);
    auth.purge_expired().await.unwrap();
    assert_eq!(nonces::count(&db.db).await.unwrap(), 0);
    db.cleanup().await;
}

#[test]
fn b7_a_million_nonces_are_32_random_bytes_base64_44_without_collisions() {
    let rng = ring::rand::SystemRandom::new();
    let mut seen = HashSet::with_capacity(1_000_000);
    for _ in 0..1_000_000 {
        let n = nonce::generate(&rng).unwrap();
        assert_eq!(n.len(), 44);
        let raw = STANDARD.decode(&n).unwrap();
        assert_eq!(raw.len(), 32);
        assert!(seen.insert(raw), "collision");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b13_a_link_nonce_cannot_sign_in_and_a_login_nonce_cannot_link() {
    let (db, gw, _clock) = start(Backend::Sqlite).await;
    let card = Card::new();
    let mut browser = gw.browser();
    assert_eq!(sign_in(&gw, &mut browser, &card).await.status, 200);
    let link = browser
        .post("/api/auth/nonce", Some(br#"{"purpose":"link"}"#.to_vec()))
        .await;
    assert_eq!(link.status, 200);
    let link_nonce = link.json["nonce"].as_str().unwrap().to_owned();
    // A token over the link nonce presented for sign-in.
    let r = browser
        .post("/api/auth/token", Some(card.token(&gw.origin, &link_nonce)))
        .await;
    assert_eq!(r.status, 401);
    // A token over a login nonce presented for linking.
    let login_nonce = browser.nonce().await;
    let other = Card::new();
    let r = browser
        .post(
            "/api/auth/link",
            Some(other.token(&gw.origin, &login_nonce)),
        )
        .await;
    assert_eq!(r.status, 401);
    // A link nonce for an anonymous session is refused.
    let mut anonymous = gw.browser();
    let r = anonymous
        .post("/api/auth/nonce", Some(br#"{"purpose":"link"}"#.to_vec()))
        .await;
    assert_eq!(r.status, 401);
    gw.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c10_renewed_card_is_linked_only_with_the_old_identity_present() {
    let (db, gw, clock) = start(Backend::Sqlite).await;
    let old_card = Card::new();
    let new_card = Card::new();
    let mut browser = gw.browser();
    let first = sign_in(&gw, &mut browser, &old_card).await;
    let person = first.json["person_id"].as_str().unwrap().to_owned();

    // Without a signed-in session: refused.
    let mut stranger = gw.browser();
    stranger.nonce().await;
    let r = stranger
        .post("/api/auth/link", Some(new_card.token(&gw.origin, "x")))
        .await;
    assert_eq!(r.status, 401);

    // Signed in with the old card: the new card links to the same person.
    let link = browser
        .post("/api/auth/nonce", Some(br#"{"purpose":"link"}"#.to_vec()))
        .await;
    let nonce = link.json["nonce"].as_str().unwrap().to_owned();
    let r = browser
        .post("/api/auth/link", Some(new_card.token(&gw.origin, &nonce)))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert_eq!(r.json["person_id"], person.as_str());
    let mut later = gw.browser();
    let r = sign_in(&gw, &mut later, &new_card).await;
    assert_eq!(r.json["person_id"], person.as_str());
    assert_eq!(r.json["new_person"], false);

    // A card already bound to someone else is never merged.
    let third = Card::new();
    let mut elsewhere = gw.browser();
    let r = sign_in(&gw, &mut elsewhere, &third).await;
    assert_ne!(r.json["person_id"], person.as_str());
    let nonce = browser
        .post("/api/auth/nonce", Some(br#"{"purpose":"link"}"#.to_vec()))
        .await
        .json["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = browser
        .post("/api/auth/link", Some(third.token(&gw.origin, &nonce)))
        .await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (409, Some("already_bound"))
    );

    // More than 5 minutes after the old card's sign-in (kept alive meanwhile): re-authenticate.
    for _ in 0..4 {
        clock.advance_ms(100_000);
        assert_eq!(browser.get("/api/session").await.status, 200);
    }
    let fourth = Card::new();
    let nonce = browser
        .post("/api/auth/nonce", Some(br#"{"purpose":"link"}"#.to_vec()))
        .await
        .json["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = browser
        .post("/api/auth/link", Some(fourth.token(&gw.origin, &nonce)))
        .await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (401, Some("reauthentication_required"))
    );
    gw.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d1_session_ids_have_256_bits_and_change_at_sign_in() {
    let (db, gw, _clock) = start(Backend::Sqlite).await;
    let mut ids = HashSet::new();
    for _ in 0..50 {
        let mut b = gw.browser();
        b.nonce().await;
        let id = b.cookie.clone().unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(&id).unwrap().len(), 32);
        assert!(ids.insert(id));
    }
    // Fixation: a session id chosen by an attacker is not adopted.
    let mut b = gw.browser();
    b.cookie = Some("A".repeat(43));
    b.nonce().await;
    assert_ne!(b.cookie.as_deref(), Some("A".repeat(43).as_str()));
    let before = b.cookie.clone();
    let card = Card::new();
    let nonce = b.nonce().await;
    assert_eq!(
        b.cookie, before,
        "a live session keeps its id until sign-in"
    );
    assert_eq!(
        b.post("/api/auth/token", Some(card.token(&gw.origin, &nonce)))
            .await
            .status,
        200
    );
    assert_ne!(b.cookie, before);
    let mut old = gw.browser();
    old.cookie = before;
    assert_eq!(old.get("/api/session").await.status, 401);
    gw.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d3_kiosk_idle_timeout_120s_and_absolute_12h() {
    let (db, gw, clock) = start(Backend::Sqlite).await;
    let card = Card::new();
    let mut b = gw.browser();
    assert_eq!(sign_in(&gw, &mut b, &card).await.status, 200);
    clock.advance_ms(119_999);
    assert_eq!(b.get("/api/session").await.status, 200);
    clock.advance_ms(119_999);
    assert_eq!(
        b.get("/api/session").await.status,
        200,
        "activity resets the idle timer"
    );
    clock.advance_ms(120_000);
    assert_eq!(b.get("/api/session").await.status, 401, "idle for 120 s");
    assert_eq!(b.get("/api/session").await.status, 401);

    // Absolute: active every 100 s, still over after 12 h.
    let mut b = gw.browser();
    assert_eq!(sign_in(&gw, &mut b, &card).await.status, 200);
    let mut elapsed = 0;
    while elapsed + 100_000 < 12 * 3600 * 1000 {
        clock.advance_ms(100_000);
        elapsed += 100_000;
        if elapsed % 3_600_000 == 0 {
            assert_eq!(b.get("/api/session").await.status, 200);
        } else {
            gw.app.auth.whoami(b.cookie.as_deref()).await.unwrap();
        }
    }
    clock.advance_ms(12 * 3600 * 1000 - elapsed);
    assert_eq!(b.get("/api/session").await.status, 401, "absolute 12 h");
    gw.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_requests_need_our_origin_and_json() {
    let (db, gw, _clock) = start(Backend::Sqlite).await;
    let mut b = gw.browser();
    let r = b.post_with_origin("/api/auth/nonce", None, None).await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (403, Some("origin_not_allowed"))
    );
    let r = b
        .post_with_origin("/api/auth/nonce", None, Some("https://evil.example"))
        .await;
    assert_eq!(r.status, 403);
    let nonce = b.nonce().await;
    let token = Card::new().token(&gw.origin, &nonce);
    let r = b
        .post_with_origin("/api/auth/token", Some(token.clone()), Some("null"))
        .await;
    assert_eq!(r.status, 403);
    let resp = gw
        .client
        .post(gw.url("/api/auth/token"))
        .header("origin", &gw.origin)
        .header("content-type", "text/plain")
        .header(
            "cookie",
            format!(
                "{}={}",
                gateway::http::SESSION_COOKIE,
                b.cookie.clone().unwrap()
            ),
        )
        .body(token.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    assert_eq!(resp.headers().get("cache-control").unwrap(), "no-store");
    // A body over the limit.
    let r = b.post("/api/auth/token", Some(vec![b' '; 20_000])).await;
    assert_eq!(r.status, 413);
    // The nonce survived all that: the real token still works.
    assert_eq!(b.post("/api/auth/token", Some(token)).await.status, 200);
    gw.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d5_d7_every_attempt_is_logged_and_failures_look_alike() {
    let (db, gw, _clock) = start(Backend::Sqlite).await;
    let p = pki();
    let card = Card::new();
    let mut b = gw.browser();
    let mut bodies = HashSet::new();
    // Wrong origin signed, unknown CA, malformed, no nonce in the session.
    let nonce = b.nonce().await;
    let attempts = vec![
        card.token("https://evil.example", &nonce),
        rs256_token(
            &p.auth_cert(&p.rogue, &p.key_a),
            &p.key_a,
            &gw.origin,
            &nonce,
        ),
        vec![b'{'; 150],
    ];
    for t in attempts {
        let r = b.post("/api/auth/token", Some(t)).await;
        bodies.insert((r.status, r.json.to_string()));
    }
    let mut fresh = gw.browser();
    fresh.cookie = Some("B".repeat(43));
    let r = fresh
        .post("/api/auth/token", Some(card.token(&gw.origin, &nonce)))
        .await;
    bodies.insert((r.status, r.json.to_string()));
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies.into_iter().next().unwrap().0, 401);
    assert_eq!(
        b.post("/api/auth/token", Some(card.token(&gw.origin, &nonce)))
            .await
            .status,
        200
    );
    assert_eq!(
        auth_events::count(&db.db, "failure", None).await.unwrap(),
        4
    );
    assert_eq!(
        auth_events::count(&db.db, "success", None).await.unwrap(),
        1
    );
    assert_eq!(
        auth_events::count(&db.db, "failure", Some("no_session"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        auth_events::count(
            &db.db,
            "failure",
            Some("signature: signature does not verify")
        )
        .await
        .unwrap(),
        1
    );
    gw.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_card_cannot_sign_in_over_https() {
    let db = TestDb::new(Backend::Sqlite).await;
    let p = pki();
    let card = Card::new();
    let serial = card_agent::testca::certificate_serial(&card.certificate()).unwrap();
    let verifier = verifier_with_crls(
        vec![p.auth_crl(&p.gen1, &[serial]), p.auth_crl(&p.gen2, &[])],
        vec![],
    );
    let gw = TestGateway::start(db.db.clone(), verifier, manual_clock()).await;
    let mut b = gw.browser();
    let r = sign_in(&gw, &mut b, &card).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        auth_events::count(
            &db.db,
            "failure",
            Some("certificate: certificate is revoked")
        )
        .await
        .unwrap(),
        1
    );
    gw.stop().await;
    db.cleanup().await;
}

#[tokio::test]
async fn d4_there_is_no_sign_in_without_a_card_signature() {
    let (db, gw, _clock) = start(Backend::Sqlite).await;
    let mut browser = gw.browser();
    browser.nonce().await;
    // No password or card-only login route exists.
    for path in [
        "/api/auth/password",
        "/api/auth/login",
        "/api/login",
        "/api/auth/card",
    ] {
        let r = browser
            .post(
                path,
                Some(br#"{"user":"worker","password":"secret"}"#.to_vec()),
            )
            .await;
        assert!(r.status == 404 || r.status == 405, "{path}: {}", r.status);
    }
    // A certificate alone (a card read without PIN: no signature) is not a sign-in.
    let card = Card::new();
    let unsigned = token_json(
        &card.certificate(),
        gateway::domain::token::SignatureAlgorithm::Rs256,
        Vec::new(),
    );
    let r = browser.post("/api/auth/token", Some(unsigned)).await;
    assert_eq!(r.status, 401);
    assert_eq!(browser.get("/api/session").await.status, 401);
    gw.stop().await;
    db.cleanup().await;
}
