//! PHR card operations against the in-process virtual PIV card (no PC/SC): the profile's flows,
//! PIN safety, and the refusals that need fault injection on the card.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use card_agent::phr::ca::PhrIssuerCa;
use card_agent::phr::card::{self, ConsentRequest, PhrError};
use card_agent::phr::consent::{Category, ConsentStatus};
use card_agent::phr::verify;
use card_agent::pin::LastTry;
use card_agent::piv::{PinState, Piv, PivError, PivPin, PivPuk, mgmt};
use card_agent::virtual_card::InProcess;
use card_agent::virtual_card::piv::VirtualPivCard;

const PIN: &str = "246810";
const PUK: &str = "13572468";

fn pin(s: &str) -> PivPin {
    PivPin::parse(s).unwrap()
}

fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

fn issued_card() -> (tempfile::TempDir, PhrIssuerCa, InProcess<VirtualPivCard>) {
    let dir = tempfile::tempdir().unwrap();
    let ca = PhrIssuerCa::load_or_create(&dir.path().join("ca")).unwrap();
    let t = InProcess::new(VirtualPivCard::open(&dir.path().join("card")).unwrap());
    let mut tx = t.clone();
    card::issue_factory_fresh(
        &mut tx,
        &ca,
        "HOLDER-0001",
        &pin(PIN),
        &PivPuk::parse(PUK).unwrap(),
        time::OffsetDateTime::now_utc() + time::Duration::days(365),
        mgmt::ALG_AES256,
    )
    .unwrap();
    (dir, ca, t)
}

fn request(service: &str) -> ConsentRequest {
    ConsentRequest {
        service: service.into(),
        categories: vec![
            Category::parse("A:health-check").unwrap(),
            Category::parse("C:interview").unwrap(),
        ],
        purpose: "occupational-health".into(),
        not_before: now(),
        not_after: now() + 86_400 * 365,
    }
}

#[test]
fn issue_link_grant_revoke_read_back_in_process() {
    let (_dir, ca, mut t) = issued_card();
    // Management key changed from the default; PIN changed.
    let mut piv = Piv::select(t.clone()).unwrap();
    assert!(matches!(
        piv.authenticate_admin(&mgmt::ManagementKey::factory_default()),
        Err(PivError::ManagementKeyRefused { .. })
    ));
    assert_eq!(piv.pin_state().unwrap(), PinState::TriesLeft(3));
    for (svc, pseud) in [
        ("clinic-a", "A-77"),
        ("insurer-b", "B-1"),
        ("op-cloud", "C-x"),
    ] {
        let linked = card::link(&mut t, &pin(PIN), LastTry::Refuse, svc, pseud).unwrap();
        assert_eq!(linked.service, svc);
    }
    let view = card::read_card(&mut t).unwrap();
    assert_eq!(
        view.services.iter().map(|s| s.slot).collect::<Vec<_>>(),
        [0x82, 0x83, 0x84]
    );
    assert!(view.services.iter().all(|s| s.verified));
    let g = card::grant(
        &mut t,
        &pin(PIN),
        LastTry::Refuse,
        &request("insurer-b"),
        Some(0),
        now(),
    )
    .unwrap();
    assert_eq!(g.generation, 1);
    let r = card::revoke(
        &mut t,
        &pin(PIN),
        LastTry::Refuse,
        "insurer-b",
        Some(1),
        now(),
    )
    .unwrap();
    assert_eq!(r.record.terms.version, 2);
    let view = card::read_card(&mut t).unwrap();
    assert_eq!(view.consents.generation, 2);
    assert_eq!(
        view.consents.for_service("insurer-b").unwrap().terms.status,
        ConsentStatus::Revoked
    );
    assert!(view.unverified_consents.is_empty());
    let holder = verify::verify_holder_cert(
        view.holder_cert_der.as_ref().unwrap(),
        &ca.cert_der,
        time::OffsetDateTime::now_utc().unix_timestamp(),
    )
    .unwrap();
    assert_eq!(holder.holder_id, "HOLDER-0001");
    // The PIN was never left verified.
    assert_eq!(t.card().pin_tries_left(), 3);
    let mut piv = Piv::select(t.clone()).unwrap();
    assert_eq!(piv.pin_state().unwrap(), PinState::TriesLeft(3));
}

#[test]
fn full_card_refuses_the_21st_service_and_generates_no_key() {
    let (_dir, _ca, mut t) = issued_card();
    for i in 0..20 {
        card::link(
            &mut t,
            &pin(PIN),
            LastTry::Refuse,
            &format!("svc-{i:02}"),
            "p",
        )
        .unwrap();
    }
    // 20 services each with a consent record: the set still fits one object.
    for i in 0..20 {
        card::grant(
            &mut t,
            &pin(PIN),
            LastTry::Refuse,
            &request(&format!("svc-{i:02}")),
            None,
            now(),
        )
        .unwrap();
    }
    let before = t.card().counters();
    let err = card::link(&mut t, &pin(PIN), LastTry::Refuse, "svc-20", "p").unwrap_err();
    assert!(matches!(err, PhrError::CardFull(20)), "{err}");
    assert_eq!(
        t.card().counters().verify_with_pin,
        before.verify_with_pin,
        "no PIN sent"
    );
    let view = card::read_card(&mut t).unwrap();
    let set_len = view.consents.encode().unwrap().len();
    let record_lens: Vec<usize> = view
        .consents
        .records
        .iter()
        .map(|r| r.encode().unwrap().len())
        .collect();
    eprintln!(
        "20 services: consent set {set_len} bytes, records {}–{} bytes",
        record_lens.iter().min().unwrap(),
        record_lens.iter().max().unwrap()
    );
    assert!(set_len <= card_agent::piv::MAX_OBJECT_LEN);
    assert_eq!(view.services.len(), 20);
    assert_eq!(view.consents.records.len(), 20);
    assert_eq!(view.free_slots, 0);
}

#[test]
fn pin_safety_as_for_the_my_number_card() {
    let (_dir, _ca, mut t) = issued_card();
    let base = t.card().counters().verify_with_pin;
    // A1: reading the counter 1,000 times spends nothing and sends no PIN.
    let mut piv = Piv::select(t.clone()).unwrap();
    for _ in 0..1_000 {
        assert_eq!(piv.pin_state().unwrap(), PinState::TriesLeft(3));
    }
    assert_eq!(t.card().counters().verify_with_pin, base);
    // A3: one wrong PIN costs exactly one try, no retry.
    let err = card::link(&mut t, &pin("999999"), LastTry::Refuse, "svc", "p").unwrap_err();
    assert!(
        matches!(err, PhrError::Piv(PivError::WrongPin { tries_left: 2 })),
        "{err}"
    );
    assert_eq!(t.card().counters().verify_with_pin, base + 1);
    assert_eq!(t.card().pin_tries_left(), 2);
    // A4: at one try left nothing is sent without confirmation.
    t.card().set_pin_tries_left(1).unwrap();
    let err = card::link(&mut t, &pin(PIN), LastTry::Refuse, "svc", "p").unwrap_err();
    assert!(
        matches!(err, PhrError::Piv(PivError::LastTryNeedsConfirmation)),
        "{err}"
    );
    assert_eq!(t.card().counters().verify_with_pin, base + 1);
    card::link(&mut t, &pin(PIN), LastTry::Confirmed, "svc", "p").unwrap();
    assert_eq!(t.card().pin_tries_left(), 3);
    // A5: blocked means no VERIFY at all.
    t.card().set_pin_tries_left(0).unwrap();
    let sent = t.card().counters().verify_with_pin;
    let err = card::grant(
        &mut t,
        &pin(PIN),
        LastTry::Confirmed,
        &request("svc"),
        None,
        now(),
    )
    .unwrap_err();
    assert!(matches!(err, PhrError::Piv(PivError::PinBlocked)), "{err}");
    assert_eq!(t.card().counters().verify_with_pin, sent);
    let view = card::read_card(&mut t).unwrap();
    assert_eq!(view.pin, PinState::Blocked);
}

/// A kiosk consent (issue 6 deliverable 3) in one card session: the service linked on first use,
/// the grant and revoke records as the gateway's document maps them, every refusal before the
/// card is written (and before a PIN try is spent).
#[test]
fn kiosk_consent_links_on_first_use_and_writes_grant_and_revoke() {
    use card_agent::phr::kiosk::{KioskConsent, KioskConsentError, write_kiosk_consent};
    let (_dir, _ca, mut t) = issued_card();
    let known = ["A.checkup", "A.claims", "B.attendance", "C.interview"];
    let start_ms = i64::from(now()) * 1000 + 250;
    let document = |service: &str, action: &str, categories: &[&str]| KioskConsent {
        origin: None,
        service: service.into(),
        action: serde_json::from_value(serde_json::json!(action)).unwrap(),
        categories: categories.iter().map(|c| (*c).to_owned()).collect(),
        period_start_ms: start_ms,
        period_end_ms: start_ms + 30 * 86_400_000,
        purpose: "健康管理".into(),
    };
    let write = |t: &mut InProcess<VirtualPivCard>, doc: &KioskConsent, pseudonym| {
        write_kiosk_consent(t, &pin(PIN), LastTry::Refuse, doc, &known, pseudonym, now())
    };

    // First grant: the partner is linked (random pseudonym) and the grant written.
    let grant = document("partner-x", "grant", &["B.attendance", "A.checkup"]);
    let first = write(&mut t, &grant, None).unwrap();
    let linked = first.linked.as_ref().unwrap();
    assert!(linked.pseudonym.starts_with("p-") && linked.pseudonym.len() == 34);
    let terms = &first.written.record.terms;
    assert_eq!(terms.status, ConsentStatus::Granted);
    assert_eq!(
        terms.categories,
        [
            Category::parse("A:checkup").unwrap(),
            Category::parse("B:attendance").unwrap()
        ]
    );
    assert_eq!(
        (terms.not_before, terms.not_after),
        (now_of(start_ms), now_of(start_ms) + 30 * 86_400)
    );
    assert_eq!(first.written.record.terms.version, 1);
    // Again: no second link, the next version.
    let again = write(&mut t, &grant, None).unwrap();
    assert!(again.linked.is_none());
    assert_eq!(again.written.record.terms.version, 2);
    // A source's pseudonym that differs from the link on the card: refused before the PIN.
    let err = write(&mut t, &grant, Some("K-0001")).unwrap_err();
    assert!(
        matches!(
            err,
            KioskConsentError::Card(PhrError::LinkedAsAnother { .. })
        ),
        "{err}"
    );
    // More categories than a record holds with no unit fully granted: nothing touched.
    let wide = KioskConsent {
        categories: (0..7).map(|i| format!("C.kind-{i}")).collect(),
        ..document("partner-z", "grant", &[])
    };
    assert!(matches!(
        write(&mut t, &wide, None),
        Err(KioskConsentError::TooManyCategories { count: 7 })
    ));
    let view = card::read_card(&mut t).unwrap();
    assert_eq!(view.pin, PinState::TriesLeft(3));
    assert_eq!(
        view.consents.generation, 2,
        "nothing written by the refusals"
    );
    assert_eq!(view.services.len(), 1, "no link made by the refusals");

    // Revoke: the granted record's categories, status revoked.
    let revoked = write(&mut t, &document("partner-x", "revoke", &[]), None).unwrap();
    assert_eq!(revoked.written.record.terms.status, ConsentStatus::Revoked);
    assert_eq!(revoked.written.record.terms.categories, terms.categories);
    // A revoke for a service the card never held: linked, and a revoked record with none.
    let other = write(&mut t, &document("partner-y", "revoke", &[]), None).unwrap();
    assert!(other.linked.is_some());
    assert!(other.written.record.terms.categories.is_empty());
    let view = card::read_card(&mut t).unwrap();
    let holder = verify::holder_of_validated_cert(view.holder_cert_der.as_ref().unwrap()).unwrap();
    for r in &view.consents.records {
        assert_eq!(
            r.terms.status,
            ConsentStatus::Revoked,
            "{}",
            r.terms.service
        );
        verify::verify_consent_record(r, &holder).unwrap();
    }
    assert_eq!(view.consents.max_version(), 4);
}

fn now_of(ms: i64) -> u32 {
    u32::try_from(ms / 1000).unwrap()
}
