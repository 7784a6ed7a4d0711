//! The PHR card end to end through the real PC/SC stack (pcscd + vpcd), on the virtual PHR card
//! (`card_agent::virtual_card::piv`): issue, link 3 services, grant and revoke, read back and
//! verify; refusals (corrupt object, two agents at once, card pulled mid-write); and what the
//! gateway's verifier rejects (a grant of service A presented as B's, a flipped bit, rollback).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use card_agent::phr::ca::PhrIssuerCa;
use card_agent::phr::card::{self, ConsentRequest, ObjectState, PhrError};
use card_agent::phr::consent::{Category, ConsentStatus};
use card_agent::phr::verify::{self, ConsentLedger, GrantExpectation, LedgerOutcome, VerifyError};
use card_agent::phr::{CONSENT_OBJECTS, consent::ConsentSet};
use card_agent::pin::LastTry;
use card_agent::piv::{PinState, PivPin, PivPuk, mgmt};
use card_agent::transport::TransportError;
use card_agent::virtual_card::piv::VirtualPivCard;
use iphr_tests::{InsertedCard, insert, on_card, pcsc, pcsc_lock, unix_seconds, watchdog};
use std::path::Path;

const PIN: &str = "246810";

fn pin() -> PivPin {
    PivPin::parse(PIN).unwrap()
}

#[derive(Debug)]
struct WrapErr(#[allow(dead_code)] TransportError);
impl From<TransportError> for WrapErr {
    fn from(e: TransportError) -> Self {
        WrapErr(e)
    }
}

fn issue(reader: &str, ca: &PhrIssuerCa, holder: &str) {
    on_card(reader, |tx| {
        card::issue_factory_fresh(
            tx,
            ca,
            holder,
            &pin(),
            &PivPuk::parse("13572468").unwrap(),
            time::OffsetDateTime::now_utc() + time::Duration::days(365),
            mgmt::ALG_AES256,
        )
    })
    .unwrap();
}

fn request(service: &str) -> ConsentRequest {
    ConsentRequest {
        service: service.into(),
        categories: vec![
            Category::parse("A:health-check").unwrap(),
            Category::parse("B:attendance").unwrap(),
        ],
        purpose: "return-to-work support".into(),
        not_before: unix_seconds(),
        not_after: unix_seconds() + 86_400 * 180,
    }
}

/// A fresh issued card with `services` linked, stored in `dir`, inserted into reader 0.
fn issued_with(dir: &Path, ca: &PhrIssuerCa, services: &[&str]) -> InsertedCard<VirtualPivCard> {
    let inserted = insert(VirtualPivCard::open(dir).unwrap(), 0);
    issue(inserted.reader(), ca, "HOLDER-E2E");
    for s in services {
        on_card(inserted.reader(), |tx| {
            card::link(tx, &pin(), LastTry::Refuse, s, &format!("{s}-pseudonym"))
        })
        .unwrap();
    }
    inserted
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[test]
fn issue_link_three_grant_revoke_and_read_back_through_pcscd() {
    let _lock = pcsc_lock();
    let _watchdog = watchdog(std::time::Duration::from_secs(300));
    let tmp = tempfile::tempdir().unwrap();
    let ca = PhrIssuerCa::load_or_create(&tmp.path().join("ca")).unwrap();
    let inserted = issued_with(
        &tmp.path().join("card"),
        &ca,
        &["clinic-a", "insurer-b", "op-cloud"],
    );
    let reader = inserted.reader();

    let view = on_card(reader, |tx| card::read_card(tx)).unwrap();
    assert_eq!(view.pin, PinState::TriesLeft(3));
    assert_eq!(view.holder_id.as_deref(), Some("HOLDER-E2E"));
    let slots: Vec<(u8, &str)> = view
        .services
        .iter()
        .map(|s| (s.slot, s.service.as_str()))
        .collect();
    assert_eq!(
        slots,
        [(0x82, "clinic-a"), (0x83, "insurer-b"), (0x84, "op-cloud")]
    );
    assert_eq!(view.free_slots, 17);

    let g1 = on_card(reader, |tx| {
        card::grant(
            tx,
            &pin(),
            LastTry::Refuse,
            &request("clinic-a"),
            Some(0),
            unix_seconds(),
        )
    })
    .unwrap();
    let g2 = on_card(reader, |tx| {
        card::grant(
            tx,
            &pin(),
            LastTry::Refuse,
            &request("insurer-b"),
            Some(1),
            unix_seconds(),
        )
    })
    .unwrap();
    let r1 = on_card(reader, |tx| {
        card::revoke(
            tx,
            &pin(),
            LastTry::Refuse,
            "clinic-a",
            Some(2),
            unix_seconds(),
        )
    })
    .unwrap();
    assert_eq!(
        (
            g1.record.terms.version,
            g2.record.terms.version,
            r1.record.terms.version
        ),
        (1, 2, 3)
    );
    // Revoking twice is refused, nothing written.
    let again = on_card(reader, |tx| {
        card::revoke(
            tx,
            &pin(),
            LastTry::Refuse,
            "clinic-a",
            None,
            unix_seconds(),
        )
    });
    assert!(
        matches!(again, Err(PhrError::NothingToRevoke { .. })),
        "{again:?}"
    );
    // A service that is not linked cannot be granted.
    let unlinked = on_card(reader, |tx| {
        card::grant(
            tx,
            &pin(),
            LastTry::Refuse,
            &request("stranger"),
            None,
            unix_seconds(),
        )
    });
    assert!(
        matches!(unlinked, Err(PhrError::NotLinked { .. })),
        "{unlinked:?}"
    );

    // Read everything back and verify it as the gateway would.
    let view = on_card(reader, |tx| card::read_card(tx)).unwrap();
    assert_eq!(view.consents.generation, 3);
    assert_eq!(
        view.pin,
        PinState::TriesLeft(3),
        "no session left a PIN verified"
    );
    let holder = verify::verify_holder_cert(
        view.holder_cert_der.as_ref().unwrap(),
        &ca.cert_der,
        unix_now(),
    )
    .unwrap();
    for s in &view.services {
        let b = verify::verify_binding(&s.cert_der, &holder, unix_now()).unwrap();
        assert_eq!(b.pseudonym, format!("{}-pseudonym", s.service));
    }
    let clinic = view.consents.for_service("clinic-a").unwrap();
    assert_eq!(clinic.terms.status, ConsentStatus::Revoked);
    assert_eq!(
        view.consents.for_service("insurer-b").unwrap().terms.status,
        ConsentStatus::Granted
    );
    assert!(view.consents.for_service("op-cloud").is_none());
    let mut ledger = ConsentLedger::new();
    for r in &view.consents.records {
        let (outcome, _) = ledger.accept(&r.encode().unwrap(), &holder).unwrap();
        assert_eq!(outcome, LedgerOutcome::Accepted);
    }
    // Both consent objects are valid: the current set (3) and the previous one (2).
    let generations: Vec<_> = view
        .consent_objects
        .iter()
        .map(|(_, s)| match s {
            ObjectState::Valid { value } => *value,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(generations.iter().max(), Some(&3));
    assert_eq!(generations.iter().min(), Some(&2));
}

#[test]
fn verifier_rejects_cross_service_grants_flipped_bits_and_rollback() {
    let _lock = pcsc_lock();
    let _watchdog = watchdog(std::time::Duration::from_secs(300));
    let tmp = tempfile::tempdir().unwrap();
    let ca = PhrIssuerCa::load_or_create(&tmp.path().join("ca")).unwrap();
    let inserted = issued_with(&tmp.path().join("card"), &ca, &["svc-a", "svc-b"]);
    let reader = inserted.reader();
    let nonce = [0x5Au8; 32];
    let signed = on_card(reader, |tx| {
        card::sign_grant(
            tx,
            &pin(),
            LastTry::Refuse,
            "svc-a",
            "https://gw.example.jp",
            &nonce,
            vec![Category::parse("A:*").unwrap()],
            unix_seconds(),
            300,
        )
    })
    .unwrap();
    let view = on_card(reader, |tx| card::read_card(tx)).unwrap();
    let holder = verify::verify_holder_cert(
        view.holder_cert_der.as_ref().unwrap(),
        &ca.cert_der,
        unix_now(),
    )
    .unwrap();
    let binding = |svc: &str| {
        let s = view.services.iter().find(|s| s.service == svc).unwrap();
        verify::verify_binding(&s.cert_der, &holder, unix_now()).unwrap()
    };
    let expect = GrantExpectation {
        audience: "https://gw.example.jp",
        nonce: &nonce,
        now: unix_now(),
    };
    let ok = verify::verify_grant(
        &signed.grant_bytes,
        &signed.signature,
        &binding("svc-a"),
        &expect,
    )
    .unwrap();
    assert_eq!(ok.pseudonym, "svc-a-pseudonym");
    // Service A's grant presented as service B's: B's key does not verify it.
    let cross = verify::verify_grant(
        &signed.grant_bytes,
        &signed.signature,
        &binding("svc-b"),
        &expect,
    );
    assert!(
        matches!(cross, Err(VerifyError::BadSignature { .. })),
        "{cross:?}"
    );
    // Another nonce is refused too.
    let other_nonce = verify::verify_grant(
        &signed.grant_bytes,
        &signed.signature,
        &binding("svc-a"),
        &GrantExpectation {
            nonce: &[1; 32],
            ..expect.clone()
        },
    );
    assert!(matches!(other_nonce, Err(VerifyError::WrongChallenge)));

    // Consent records: every single flipped bit is rejected.
    let v1 = on_card(reader, |tx| {
        card::grant(
            tx,
            &pin(),
            LastTry::Refuse,
            &request("svc-a"),
            None,
            unix_seconds(),
        )
    })
    .unwrap();
    let v2 = on_card(reader, |tx| {
        card::revoke(tx, &pin(), LastTry::Refuse, "svc-a", None, unix_seconds())
    })
    .unwrap();
    let bytes = &v1.record_bytes;
    assert!(verify::verify_consent(bytes, &holder).is_ok());
    for i in 0..bytes.len() * 8 {
        let mut bad = bytes.clone();
        bad[i / 8] ^= 1 << (i % 8);
        assert!(
            verify::verify_consent(&bad, &holder).is_err(),
            "bit {i} flipped was accepted"
        );
    }
    // Version monotonicity: the older grant after the newer revocation is a rollback.
    let mut ledger = ConsentLedger::new();
    ledger.accept(&v2.record_bytes, &holder).unwrap();
    let rollback = ledger.accept(&v1.record_bytes, &holder);
    assert!(
        matches!(
            rollback,
            Err(VerifyError::Rollback {
                known: 2,
                got: 1,
                ..
            })
        ),
        "{rollback:?}"
    );
    assert_eq!(
        ledger.accept(&v2.record_bytes, &holder).unwrap().0,
        LedgerOutcome::AlreadyKnown
    );
}

#[test]
fn corrupt_consent_object_is_refused_and_nothing_is_overwritten() {
    let _lock = pcsc_lock();
    let _watchdog = watchdog(std::time::Duration::from_secs(300));
    let tmp = tempfile::tempdir().unwrap();
    let ca = PhrIssuerCa::load_or_create(&tmp.path().join("ca")).unwrap();
    let inserted = issued_with(&tmp.path().join("card"), &ca, &["svc-a"]);
    let reader = inserted.reader();
    on_card(reader, |tx| {
        card::grant(
            tx,
            &pin(),
            LastTry::Refuse,
            &request("svc-a"),
            None,
            unix_seconds(),
        )
    })
    .unwrap();
    // Someone (another tool, a fault) leaves garbage in the other consent object.
    let garbage = b"\xE0\x05not a consent set".to_vec();
    inserted
        .card()
        .set_object(CONSENT_OBJECTS[1], &garbage)
        .unwrap();
    let before = inserted.card().counters();
    let err = on_card(reader, |tx| {
        card::grant(
            tx,
            &pin(),
            LastTry::Refuse,
            &request("svc-a"),
            None,
            unix_seconds(),
        )
    })
    .unwrap_err();
    assert!(
        matches!(err, PhrError::CorruptObject { object, .. } if object == CONSENT_OBJECTS[1]),
        "{err}"
    );
    assert!(err.to_string().contains("5FC122") && err.to_string().contains("nothing was written"));
    let after = inserted.card().counters();
    assert_eq!(after.objects_written, before.objects_written);
    assert_eq!(
        after.verify_with_pin, before.verify_with_pin,
        "refused before the PIN"
    );
    assert_eq!(inserted.card().object(CONSENT_OBJECTS[1]).unwrap(), garbage);
    // The valid set is still read.
    let view = on_card(reader, |tx| card::read_card(tx)).unwrap();
    assert_eq!(view.consents.generation, 1);
    assert!(matches!(
        view.consent_objects[1].1,
        ObjectState::Corrupt { .. }
    ));

    // A corrupt service-binding certificate: shown as corrupt, its slot never reused.
    inserted
        .card()
        .set_object(0x5FC10D, b"\x70\x03abc\x71\x01\x00")
        .unwrap();
    let view = on_card(reader, |tx| card::read_card(tx)).unwrap();
    assert_eq!(view.corrupt_slots.len(), 1);
    let linked = on_card(reader, |tx| {
        card::link(tx, &pin(), LastTry::Refuse, "svc-c", "c")
    })
    .unwrap();
    assert_eq!(linked.slot, 0x83);
    assert_eq!(
        inserted.card().object(0x5FC10D).unwrap(),
        b"\x70\x03abc\x71\x01\x00"
    );
}

#[test]
fn two_agents_writing_at_once_one_wins_the_other_reports_it() {
    let _lock = pcsc_lock();
    let _watchdog = watchdog(std::time::Duration::from_secs(300));
    let tmp = tempfile::tempdir().unwrap();
    let ca = PhrIssuerCa::load_or_create(&tmp.path().join("ca")).unwrap();
    let inserted = issued_with(&tmp.path().join("card"), &ca, &["svc-a", "svc-b"]);
    let reader = inserted.reader();
    // Both agents show the person the same state (generation 0), then both write.
    let shown = on_card(reader, |tx| card::read_card(tx))
        .unwrap()
        .consent_generation();
    let barrier = std::sync::Barrier::new(2);
    let results: Vec<Result<_, PhrError>> = std::thread::scope(|s| {
        let handles: Vec<_> = ["svc-a", "svc-b"]
            .into_iter()
            .map(|svc| {
                let barrier = &barrier;
                s.spawn(move || {
                    let ctx = pcsc();
                    barrier.wait();
                    // An agent whose connection was reset by the other one (which disconnects
                    // with a reset, forgetting the PIN) connects again: that is not a write.
                    loop {
                        let mut conn = ctx.connect(reader).unwrap();
                        let outcome = conn.transaction(|tx| {
                            Ok::<_, WrapErr>(card::grant(
                                tx,
                                &pin(),
                                LastTry::Refuse,
                                &request(svc),
                                Some(shown),
                                unix_seconds(),
                            ))
                        });
                        match outcome {
                            Err(WrapErr(TransportError::CardReset)) => continue,
                            Err(e) => panic!("{e:?}"),
                            Ok(result) => break result,
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wins = results.iter().filter(|r| r.is_ok()).count();
    let conflicts: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(wins, 1, "{results:?}");
    assert!(
        matches!(
            conflicts[..],
            [PhrError::ConcurrentUpdate {
                expected: 0,
                found: 1
            }]
        ),
        "{conflicts:?}"
    );
    let winner = results.iter().find_map(|r| r.as_ref().ok()).unwrap();
    let view = on_card(reader, |tx| card::read_card(tx)).unwrap();
    assert_eq!(view.consents.generation, 1);
    assert_eq!(view.consents.records.len(), 1);
    assert_eq!(view.consents.records[0], winner.record);
}

#[test]
fn card_pulled_mid_write_keeps_the_previous_consent_set() {
    let _lock = pcsc_lock();
    let _watchdog = watchdog(std::time::Duration::from_secs(300));
    let tmp = tempfile::tempdir().unwrap();
    let ca = PhrIssuerCa::load_or_create(&tmp.path().join("ca")).unwrap();
    let card_dir = tmp.path().join("card");
    let inserted = issued_with(&card_dir, &ca, &["svc-a", "svc-b"]);
    let reader = inserted.reader();
    let first = on_card(reader, |tx| {
        card::grant(
            tx,
            &pin(),
            LastTry::Refuse,
            &request("svc-a"),
            None,
            unix_seconds(),
        )
    })
    .unwrap();
    let previous: ConsentSet = on_card(reader, |tx| card::read_card(tx)).unwrap().consents;
    // The consent set is longer than one short APDU: the card dies at the 2nd chained link.
    inserted.card().die_at_put_data_link(2);
    let started = std::time::Instant::now();
    let err = on_card(reader, |tx| {
        card::grant(
            tx,
            &pin(),
            LastTry::Refuse,
            &request("svc-b"),
            None,
            unix_seconds(),
        )
    })
    .unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "error within 2 s"
    );
    assert!(matches!(err, PhrError::Piv(_)), "{err}");
    drop(inserted);

    // The card goes back in (into the other reader: vpcd takes seconds to notice a card that
    // vanished mid-command in the first one).
    // Re-inserted, the card shows the previous consent set, intact and verifiable.
    let inserted = insert(VirtualPivCard::open(&card_dir).unwrap(), 1);
    let view = on_card(inserted.reader(), |tx| card::read_card(tx)).unwrap();
    assert_eq!(view.consents, previous);
    assert_eq!(view.consents.records[0], first.record);
    assert!(view.unverified_consents.is_empty());
    assert_eq!(view.pin, PinState::TriesLeft(3));
    // And the next write goes through.
    let next = on_card(inserted.reader(), |tx| {
        card::grant(
            tx,
            &pin(),
            LastTry::Refuse,
            &request("svc-b"),
            Some(1),
            unix_seconds(),
        )
    })
    .unwrap();
    assert_eq!(next.generation, 2);
    drop(inserted);
    // Leave reader 0 empty for whoever takes the reader lock next.
    let ctx = pcsc();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let started = std::time::Instant::now();
    while ctx
        .readers()
        .unwrap()
        .iter()
        .any(|r| r.name == iphr_tests::VPCD_READER_0 && r.card_present)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "reader 0 never emptied"
        );
        let _ = ctx.wait_for_change(iphr_tests::VPCD_READER_0, std::time::Duration::from_secs(1));
    }
    eprintln!("reader 0 empty again after {:?}", started.elapsed());
}
