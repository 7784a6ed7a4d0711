//! The JPKI client against the in-process virtual My Number card: reads, PIN safety, signing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use card_agent::apdu::ExchangeError;
use card_agent::jpki::{Jpki, JpkiError, PinState};
use card_agent::pin::{JpkiAuthPin, LastTry};
use card_agent::transport::{CardTransport, TransportError};
use card_agent::virtual_card::InProcess;
use card_agent::virtual_card::jpki::VirtualJpkiCard;
use common::{fresh_card, verify_with_cert};
use sha2::Digest;

fn pin(s: &str) -> JpkiAuthPin {
    JpkiAuthPin::parse(s).unwrap()
}

#[test]
fn reads_the_cards_certificates() {
    let (_dir, card) = fresh_card();
    let want_auth = card.material().auth.cert_der.clone();
    let want_ca = card.material().auth_ca_der.clone();
    let t = InProcess::new(card);
    let mut jpki = Jpki::select(t.clone()).unwrap();
    assert_eq!(jpki.read_auth_certificate().unwrap(), want_auth);
    assert_eq!(jpki.read_auth_ca_certificate().unwrap(), want_ca);
    assert_eq!(jpki.read_token_label().unwrap(), "JPKIAPICCTOKEN2");
    // Short APDUs: 255-byte chunks after the 4-byte header.
    let short_apdus = t.card().counters().apdus;

    let (_dir2, card2) = fresh_card();
    let ext = InProcess::new(card2).with_extended_length();
    let mut jpki = Jpki::select(ext.clone()).unwrap();
    jpki.read_auth_certificate().unwrap();
    assert!(
        ext.card().counters().apdus < short_apdus,
        "extended length reads in fewer APDUs"
    );
}

#[test]
fn status_reads_never_spend_a_try() {
    let (_dir, card) = fresh_card();
    let t = InProcess::new(card);
    let mut jpki = Jpki::select(t.clone()).unwrap();
    for _ in 0..1_000 {
        assert_eq!(jpki.auth_pin_state().unwrap(), PinState::TriesLeft(3));
    }
    assert_eq!(t.card().auth_tries_left(), 3);
    assert_eq!(t.card().counters().verify_with_pin, 0);
}

#[test]
fn correct_pin_signs_and_the_signature_verifies() {
    let (_dir, card) = fresh_card();
    let cert = card.material().auth.cert_der.clone();
    let t = InProcess::new(card);
    let jpki = Jpki::select(t.clone()).unwrap();
    let mut verified = jpki.verify_auth_pin(&pin("1234"), LastTry::Refuse).unwrap();
    let message = b"origin-hash || nonce-hash";
    let digest: [u8; 32] = sha2::Sha256::digest(message).into();
    let signature = verified.sign_sha256(&digest).unwrap();
    assert_eq!(signature.len(), 256);
    assert!(verify_with_cert(&cert, message, &signature));
    assert!(!verify_with_cert(&cert, b"another message", &signature));
    assert_eq!(t.card().counters().verify_with_pin, 1);
}

#[test]
fn one_wrong_pin_costs_exactly_one_try() {
    let (_dir, card) = fresh_card();
    let t = InProcess::new(card);
    let jpki = Jpki::select(t.clone()).unwrap();
    let err = jpki
        .verify_auth_pin(&pin("0000"), LastTry::Refuse)
        .err()
        .unwrap();
    assert!(
        matches!(err, JpkiError::WrongPin { tries_left: 2 }),
        "{err:?}"
    );
    assert_eq!(t.card().auth_tries_left(), 2);
    assert_eq!(
        t.card().counters().verify_with_pin,
        1,
        "never an automatic retry"
    );
    // A correct PIN afterwards restores the counter.
    let jpki = Jpki::select(t.clone()).unwrap();
    jpki.verify_auth_pin(&pin("1234"), LastTry::Refuse).unwrap();
    assert_eq!(t.card().auth_tries_left(), 3);
}

#[test]
fn last_try_needs_explicit_confirmation() {
    let (_dir, mut card) = fresh_card();
    card.set_auth_tries_left(1).unwrap();
    let t = InProcess::new(card);
    let jpki = Jpki::select(t.clone()).unwrap();
    let err = jpki
        .verify_auth_pin(&pin("1234"), LastTry::Refuse)
        .err()
        .unwrap();
    assert!(
        matches!(err, JpkiError::LastTryNeedsConfirmation),
        "{err:?}"
    );
    assert_eq!(
        t.card().counters().verify_with_pin,
        0,
        "nothing sent without confirmation"
    );
    let jpki = Jpki::select(t.clone()).unwrap();
    jpki.verify_auth_pin(&pin("1234"), LastTry::Confirmed)
        .unwrap();
    assert_eq!(t.card().counters().verify_with_pin, 1);
}

#[test]
fn a_blocked_card_gets_no_verify() {
    let (_dir, mut card) = fresh_card();
    card.set_auth_tries_left(1).unwrap();
    let t = InProcess::new(card);
    let jpki = Jpki::select(t.clone()).unwrap();
    let err = jpki
        .verify_auth_pin(&pin("9999"), LastTry::Confirmed)
        .err()
        .unwrap();
    assert!(
        matches!(err, JpkiError::PinBlocked),
        "the exhausting try reports blocked: {err:?}"
    );
    assert_eq!(t.card().auth_tries_left(), 0);

    let before = t.card().counters().verify_with_pin;
    let mut jpki = Jpki::select(t.clone()).unwrap();
    assert_eq!(jpki.auth_pin_state().unwrap(), PinState::Blocked);
    let err = jpki
        .verify_auth_pin(&pin("1234"), LastTry::Confirmed)
        .err()
        .unwrap();
    assert!(matches!(err, JpkiError::PinBlocked));
    assert_eq!(
        t.card().counters().verify_with_pin,
        before,
        "no VERIFY to a blocked card"
    );
}

#[test]
fn counters_survive_a_card_restart() {
    let (dir, card) = fresh_card();
    let t = InProcess::new(card);
    let jpki = Jpki::select(t.clone()).unwrap();
    let _ = jpki.verify_auth_pin(&pin("0001"), LastTry::Refuse);
    drop(t);
    let reopened = VirtualJpkiCard::open(dir.path()).unwrap();
    assert_eq!(reopened.auth_tries_left(), 2);
}

/// Passes APDUs to a card but fails the first VERIFY that carries data, before or after the card
/// has processed it.
struct FailOnVerify<T> {
    inner: T,
    after_delivery: bool,
    failed: bool,
}

impl<T: CardTransport> CardTransport for FailOnVerify<T> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        let is_pin_verify = apdu.len() > 4 && apdu[1] == 0x20;
        if is_pin_verify && !self.failed {
            self.failed = true;
            if self.after_delivery {
                let _lost = self.inner.transmit(apdu)?;
            }
            return Err(TransportError::CardRemoved);
        }
        self.inner.transmit(apdu)
    }
}

#[test]
fn transport_error_during_verify_rereads_the_counter_and_never_resends() {
    for after_delivery in [false, true] {
        let (_dir, card) = fresh_card();
        let t = InProcess::new(card);
        let faulty = FailOnVerify {
            inner: t.clone(),
            after_delivery,
            failed: false,
        };
        let jpki = Jpki::select(faulty).unwrap();
        let err = jpki
            .verify_auth_pin(&pin("0000"), LastTry::Refuse)
            .err()
            .unwrap();
        let want = if after_delivery { 2 } else { 3 };
        match err {
            JpkiError::VerifyInterrupted { tries_left, source } => {
                assert_eq!(tries_left, Some(PinState::TriesLeft(want)));
                assert!(matches!(
                    source,
                    ExchangeError::Transport(TransportError::CardRemoved)
                ));
            }
            other => panic!("unexpected {other:?}"),
        }
        let sent = t.card().counters().verify_with_pin;
        assert_eq!(
            sent,
            u64::from(after_delivery),
            "the VERIFY is never re-sent"
        );
    }
}

#[test]
fn the_signing_certificate_needs_its_own_pin() {
    let (_dir, card) = fresh_card();
    let mut t = InProcess::new(card);
    let select = |t: &mut InProcess<VirtualJpkiCard>, apdu: &[u8]| t.transmit(apdu).unwrap();
    select(
        &mut t,
        &[
            0x00, 0xA4, 0x04, 0x0C, 0x0A, 0xD3, 0x92, 0xF0, 0x00, 0x26, 0x01, 0, 0, 0, 1,
        ],
    );
    select(&mut t, &[0x00, 0xA4, 0x02, 0x0C, 0x02, 0x00, 0x01]);
    assert_eq!(
        t.transmit(&[0x00, 0xB0, 0x00, 0x00, 0x04]).unwrap(),
        [0x69, 0x82]
    );
}
