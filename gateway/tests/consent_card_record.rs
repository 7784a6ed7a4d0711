//! A PHR card's consent is written to the card and committed with the card's record (issue 6
//! deliverable 3, `docs/kiosk.md` "Consent on the PHR card"): through the real HTTPS server, a
//! PHR card (ES256 token from the test PHR CA) commits a prepared document only with a consent
//! record (tag `E1`) that verifies with that card's holder key and says what the document says;
//! each refusal below has its own error code, and nothing is committed. A My Number commit has
//! no card record.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use card_agent::phr::consent::{Category, ConsentRecord, ConsentStatus, ConsentTerms};
use common::seed::add_partner;
use common::*;
use gateway::domain::trail::TrailEvent;
use gateway::store::consent;
use rcgen::{KeyPair, KeyUsagePurpose};
use serde_json::Value;

/// A signed-in PHR card holder at the kiosk.
struct Holder {
    db: TestDb,
    gw: TestGateway,
    clock: std::sync::Arc<gateway::clock::ManualClock>,
    browser: Browser,
    key: KeyPair,
    cert: Vec<u8>,
    person: String,
}

/// A prepared document.
struct Prepared {
    nonce: String,
    document: Value,
}

async fn phr_signed_in(backend: Backend) -> Holder {
    let db = TestDb::new(backend).await;
    add_partner(&db.db, "partner-a").await;
    add_partner(&db.db, "partner-b").await;
    let clock = manual_clock();
    let gw = TestGateway::start(db.db.clone(), default_verifier(), clock.clone()).await;
    let (key, cert) = pki()
        .phr
        .issue_card(vec![KeyUsagePurpose::DigitalSignature]);
    let mut browser = gw.browser();
    let nonce = browser.nonce().await;
    let r = browser
        .post(
            "/api/auth/token",
            Some(es256_token(&cert, &key, &gw.origin, &nonce)),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert_eq!(r.json["card_type"], "phr");
    let person = r.json["person_id"].as_str().unwrap().to_owned();
    Holder {
        db,
        gw,
        clock,
        browser,
        key,
        cert,
        person,
    }
}

/// Signs a record's terms as the card does: ECDSA P-256 (DER) over SHA-256(domain ‖ TLVs).
fn sign_record(key: &KeyPair, terms: ConsentTerms) -> Vec<u8> {
    let rng = ring::rand::SystemRandom::new();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &key.serialize_der(),
        &rng,
    )
    .unwrap();
    let mut message = card_agent::phr::consent::CONSENT_DOMAIN.to_vec();
    message.extend_from_slice(&terms.encode_tbs().unwrap());
    let signature = pair.sign(&rng, &message).unwrap().as_ref().to_vec();
    ConsentRecord { terms, signature }.encode().unwrap()
}

fn card_categories(v: &[&str]) -> Vec<Category> {
    v.iter().map(|c| Category::parse(c).unwrap()).collect()
}

impl Holder {
    fn now_s(&self) -> u32 {
        u32::try_from(now_ms(&*self.clock) / 1000).unwrap()
    }

    async fn prepare(&mut self, service: &str, action: &str) -> Prepared {
        let body = serde_json::json!({ "service_id": service, "action": action });
        let r = self
            .browser
            .post("/api/consent/prepare", Some(body.to_string().into_bytes()))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.json);
        assert_eq!(
            r.json["known_categories"].as_array().unwrap().len(),
            10,
            "the prepare answer lists every category for the card's collapse rule"
        );
        Prepared {
            nonce: r.json["nonce"].as_str().unwrap().to_owned(),
            document: serde_json::from_str(r.json["document"].as_str().unwrap()).unwrap(),
        }
    }

    /// The terms a correct card record of `p` has (partner-a's three requested categories).
    fn terms(&self, p: &Prepared, version: u32) -> ConsentTerms {
        let doc = &p.document;
        let grant = doc["action"] == "grant";
        ConsentTerms {
            version,
            service: doc["service_id"].as_str().unwrap().to_owned(),
            slot: 0x82,
            status: if grant {
                ConsentStatus::Granted
            } else {
                ConsentStatus::Revoked
            },
            categories: if grant {
                card_categories(&["A:checkup", "A:claims", "B:attendance"])
            } else {
                Vec::new()
            },
            purpose: doc["purpose"].as_str().unwrap().to_owned(),
            not_before: u32::try_from(doc["period_start_ms"].as_i64().unwrap() / 1000).unwrap(),
            not_after: if grant {
                u32::try_from(doc["period_end_ms"].as_i64().unwrap() / 1000).unwrap()
            } else {
                self.now_s() + 1
            },
            signed_at: self.now_s(),
        }
    }

    /// Commits `p` with this card's token and, when given, `card_record` beside it.
    async fn commit(&mut self, p: &Prepared, card_record: Option<&str>) -> Reply {
        let token = es256_token(&self.cert, &self.key, &self.gw.origin, &p.nonce);
        let mut body: Value = serde_json::from_slice(&token).unwrap();
        if let Some(record) = card_record {
            body["card_record"] = Value::String(record.to_owned());
        }
        self.browser
            .post("/api/consent/commit", Some(body.to_string().into_bytes()))
            .await
    }

    async fn commit_record(&mut self, p: &Prepared, record: &[u8]) -> Reply {
        self.commit(p, Some(&hex::encode(record))).await
    }

    async fn nothing_committed(&self, service: &str) {
        assert!(
            consent::head(&self.db.db, &self.person, service)
                .await
                .unwrap()
                .is_none(),
            "nothing committed"
        );
    }

    async fn done(self) {
        self.gw.stop().await;
        self.db.cleanup().await;
    }
}

/// One refusal: the grant's record altered by `alter` is refused with `status` and `code`, and
/// nothing is committed; the correct record then commits the same document.
async fn refused(
    alter: impl FnOnce(&Holder, &mut ConsentTerms) -> Option<Vec<u8>>,
    status: u16,
    code: &str,
) {
    let mut h = phr_signed_in(Backend::Sqlite).await;
    let p = h.prepare("partner-a", "grant").await;
    let mut terms = h.terms(&p, 1);
    let record = match alter(&h, &mut terms) {
        Some(bytes) => bytes,
        None => sign_record(&h.key, terms),
    };
    let r = h.commit_record(&p, &record).await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (status, Some(code)),
        "{:?}",
        r.json
    );
    h.nothing_committed("partner-a").await;
    // The refusal did not consume the document: the card's correct record commits it.
    let good = sign_record(&h.key, h.terms(&p, 1));
    let r = h.commit_record(&p, &good).await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    h.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phr_commit_without_the_card_record_is_refused() {
    let mut h = phr_signed_in(Backend::Sqlite).await;
    let p = h.prepare("partner-a", "grant").await;
    let r = h.commit(&p, None).await;
    assert_eq!(r.status, 400, "{:?}", r.json);
    assert_eq!(r.json["error"], "card_record_required");
    h.nothing_committed("partner-a").await;
    // Not hex or base64 of a canonical record either.
    for junk in ["", "e1zz", "not base64!", "AAAA"] {
        let r = h.commit(&p, Some(junk)).await;
        assert_eq!(r.status, 400, "{junk}: {:?}", r.json);
        assert_eq!(r.json["error"], "card_record_malformed", "{junk}");
    }
    h.nothing_committed("partner-a").await;
    h.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_for_another_service_is_refused() {
    refused(
        |_, t| {
            t.service = "partner-b".into();
            None
        },
        422,
        "card_record_service",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_record_for_a_grant_is_refused() {
    refused(
        |_, t| {
            t.status = ConsentStatus::Revoked;
            None
        },
        422,
        "card_record_status",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_other_categories_is_refused() {
    refused(
        |_, t| {
            // One more than the document grants (the card would show a wider consent).
            t.categories = card_categories(&["A:checkup", "A:claims", "B:attendance", "C:patrol"]);
            None
        },
        422,
        "card_record_categories",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_another_period_is_refused() {
    refused(
        |_, t| {
            t.not_after += 1;
            None
        },
        422,
        "card_record_period",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_another_purpose_is_refused() {
    refused(
        |_, t| {
            t.purpose = "広告".into();
            None
        },
        422,
        "card_record_purpose",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_one_signature_bit_flipped_is_refused() {
    refused(
        |h, t| {
            let mut bytes = sign_record(&h.key, t.clone());
            // The last byte is the signature's (s): the record still parses canonically.
            *bytes.last_mut().unwrap() ^= 0x01;
            assert!(ConsentRecord::parse(&bytes).is_ok());
            Some(bytes)
        },
        401,
        "card_record_signature_refused",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_signed_by_another_cards_holder_key_is_refused() {
    refused(
        |_, t| {
            let (other, _) = pki()
                .phr
                .issue_card(vec![KeyUsagePurpose::DigitalSignature]);
            Some(sign_record(&other, t.clone()))
        },
        401,
        "card_record_signature_refused",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_signed_more_than_five_minutes_off_the_gateways_clock_is_refused() {
    refused(
        |h, t| {
            t.signed_at = h.now_s() - 301;
            None
        },
        422,
        "card_record_stale",
    )
    .await;
    refused(
        |h, t| {
            t.signed_at = h.now_s() + 301;
            None
        },
        422,
        "card_record_stale",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_card_record_replayed_is_refused() {
    let mut h = phr_signed_in(Backend::Sqlite).await;
    // Grant (card version 4: the card holds other services' records too), then revoke (5).
    let p = h.prepare("partner-a", "grant").await;
    let first_grant = sign_record(&h.key, h.terms(&p, 4));
    let r = h.commit_record(&p, &first_grant).await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let p = h.prepare("partner-a", "revoke").await;
    let r = h
        .commit_record(&p, &sign_record(&h.key, h.terms(&p, 5)))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    // A new grant document (same clock, so the very same terms): the first grant's record,
    // replayed, passes every content check but is not newer than the card's last one.
    let p = h.prepare("partner-a", "grant").await;
    let r = h.commit_record(&p, &first_grant).await;
    assert_eq!(r.status, 409, "{:?}", r.json);
    assert_eq!(r.json["error"], "card_record_replayed");
    // Nor is an older version never stored (3), nor the last one's (5).
    for version in [3, 5] {
        let r = h
            .commit_record(&p, &sign_record(&h.key, h.terms(&p, version)))
            .await;
        assert_eq!(r.status, 409, "{version}: {:?}", r.json);
        assert_eq!(r.json["error"], "card_record_replayed", "{version}");
    }
    let head = consent::head(&h.db.db, &h.person, "partner-a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.status, gateway::domain::consent::Status::Deny);
    // The card's next record (version 6) commits it.
    let r = h
        .commit_record(&p, &sign_record(&h.key, h.terms(&p, 6)))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    h.done().await;
}

/// The store itself never keeps one card version twice (the guard behind the version check, for
/// two commits racing with the same record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_refuses_a_card_version_already_stored() {
    use gateway::domain::consent::{Action, Category as GwCategory};
    use gateway::store::consent::{CardRecord, CommitOutcome};
    let h = phr_signed_in(Backend::Sqlite).await;
    let fingerprint = gateway::domain::sha256(&h.cert);
    let record = CardRecord {
        bytes: b"record",
        version: 9,
    };
    let commit = |service: &'static str| {
        let doc = common::seed::document(
            &h.person,
            service,
            1,
            Action::Grant,
            &[GwCategory::Checkup],
            0,
            i64::MAX,
        );
        let db = h.db.db.clone();
        async move {
            consent::commit(&db, &doc, "{}", &fingerprint, Some(record), 0)
                .await
                .unwrap()
        }
    };
    assert_eq!(commit("partner-a").await, CommitOutcome::Committed);
    assert_eq!(commit("partner-b").await, CommitOutcome::CardRecordReplayed);
    assert!(
        consent::head(&h.db.db, &h.person, "partner-b")
            .await
            .unwrap()
            .is_none(),
        "rolled back"
    );
    assert_eq!(
        consent::last_card_version(&h.db.db, &h.person, &fingerprint)
            .await
            .unwrap(),
        Some(9)
    );
    h.done().await;
}

async fn the_card_record_is_stored_with_the_consent_version(backend: Backend) {
    use base64::Engine as _;
    let mut h = phr_signed_in(backend).await;
    // A partner asking for every category with a purpose longer than a card record holds: the
    // record carries the collapsed categories and the purpose cut at a character boundary.
    let long_purpose = "健康管理と両立支援のための記録の閲覧と産業医面談の準備";
    gateway::store::services::upsert(
        &h.db.db,
        &gateway::store::services::Service {
            id: "partner-all".into(),
            kind: gateway::store::services::ServiceKind::Partner,
            name: "全部".into(),
            purpose: long_purpose.into(),
            categories: gateway::domain::consent::Category::ALL.to_vec(),
            period_days: 30,
            certificate_sha256: None,
            jwks: None,
            scopes: String::new(),
            rate_per_sec: 10,
        },
        0,
    )
    .await
    .unwrap();
    let p = h.prepare("partner-all", "grant").await;
    let mut terms = h.terms(&p, 7);
    // Ten categories: unit A collapses (seven left), then unit B (six: they fit).
    terms.categories = card_categories(&[
        "A:*",
        "B:*",
        "C:interview",
        "C:oh-opinion",
        "C:patrol",
        "C:rework",
    ]);
    terms.purpose = "健康管理と両立支援のための記録の".into(); // 48 bytes
    let granted = sign_record(&h.key, terms);
    // base64 works as well as hex.
    let r = h
        .commit(
            &p,
            Some(&base64::engine::general_purpose::STANDARD.encode(&granted)),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert_eq!(r.json["consent"]["status"], "permit");
    // Revoke: a record with no categories is enough (the card had none to copy).
    let p = h.prepare("partner-all", "revoke").await;
    let mut terms = h.terms(&p, 8);
    terms.purpose = "健康管理".into();
    let revoked = sign_record(&h.key, terms);
    let r = h.commit_record(&p, &revoked).await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert_eq!(r.json["consent"]["status"], "deny");
    let stored = consent::card_records(&h.db.db, &h.person, "partner-all")
        .await
        .unwrap();
    assert_eq!(stored, vec![(1, Some(granted)), (2, Some(revoked))]);
    // The audit records say the card holds each change.
    let card_written: Vec<Value> =
        h.gw.trail
            .events()
            .into_iter()
            .filter(|e| matches!(e, TrailEvent::Consent(_)))
            .map(|e| gateway::domain::trail::to_record(e).detail.unwrap()["card_written"].clone())
            .collect();
    assert_eq!(card_written, [true, true]);
    h.done().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_card_record_is_stored_with_the_consent_version_sqlite() {
    the_card_record_is_stored_with_the_consent_version(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_card_record_is_stored_with_the_consent_version_postgres() {
    the_card_record_is_stored_with_the_consent_version(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_my_number_commit_has_no_card_record_and_refuses_one() {
    let db = TestDb::new(Backend::Sqlite).await;
    add_partner(&db.db, "partner-a").await;
    let gw = TestGateway::start(db.db.clone(), default_verifier(), manual_clock()).await;
    let card = Card::new();
    let mut browser = gw.browser();
    let nonce = browser.nonce().await;
    let r = browser
        .post("/api/auth/token", Some(card.token(&gw.origin, &nonce)))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let person = r.json["person_id"].as_str().unwrap().to_owned();
    let body = br#"{"service_id":"partner-a","action":"grant"}"#.to_vec();
    let r = browser.post("/api/consent/prepare", Some(body)).await;
    let nonce = r.json["nonce"].as_str().unwrap().to_owned();
    // A record beside a My Number token: refused, not ignored.
    let mut with_record: Value = serde_json::from_slice(&card.token(&gw.origin, &nonce)).unwrap();
    with_record["card_record"] = Value::String("e180".into());
    let r = browser
        .post(
            "/api/consent/commit",
            Some(with_record.to_string().into_bytes()),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.json);
    assert_eq!(r.json["error"], "card_record_unexpected");
    // The token alone commits, as before.
    let r = browser
        .post("/api/consent/commit", Some(card.token(&gw.origin, &nonce)))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let stored = consent::card_records(&db.db, &person, "partner-a")
        .await
        .unwrap();
    assert_eq!(stored, vec![(1, None)]);
    let details: Vec<Value> = gw
        .trail
        .events()
        .into_iter()
        .filter(|e| matches!(e, TrailEvent::Consent(_)))
        .map(|e| gateway::domain::trail::to_record(e).detail.unwrap())
        .collect();
    assert_eq!(details.len(), 1, "the refused commit was not audited");
    assert_eq!(details[0]["card_written"], false);
    gw.stop().await;
    db.cleanup().await;
}
