//! Every status word a card can answer maps to one distinct, documented outcome
//! (`docs/card-status-words.md`). A scripted card answers SELECT with 9000, then the status word
//! under test for the step under test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use card_agent::apdu::{ExchangeError, StatusWord};
use card_agent::jpki::{Jpki, JpkiError, PinState};
use card_agent::pin::{JpkiAuthPin, LastTry};
use card_agent::transport::{CardTransport, TransportError};
use std::collections::VecDeque;

struct Scripted(VecDeque<Vec<u8>>);

impl CardTransport for Scripted {
    fn transmit(&mut self, _apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.0.pop_front().ok_or(TransportError::CardRemoved)
    }
}

fn card(replies: &[&[u8]]) -> Scripted {
    Scripted(replies.iter().map(|r| r.to_vec()).collect())
}

const OK: &[u8] = &[0x90, 0x00];

/// Outcome of VERIFY when the counter query said 3 tries and VERIFY answered `reply`.
fn verify_outcome(reply: &[u8]) -> Result<(), JpkiError> {
    // SELECT AP, SELECT PIN EF, counter query, VERIFY.
    let t = card(&[OK, OK, &[0x63, 0xC3], reply]);
    let jpki = Jpki::select(t)?;
    jpki.verify_auth_pin(&JpkiAuthPin::parse("1234").unwrap(), LastTry::Refuse)
        .map(|_| ())
}

#[test]
fn verify_status_words() {
    assert!(verify_outcome(&[0x90, 0x00]).is_ok());
    assert!(matches!(
        verify_outcome(&[0x63, 0xC2]),
        Err(JpkiError::WrongPin { tries_left: 2 })
    ));
    assert!(matches!(
        verify_outcome(&[0x63, 0xC0]),
        Err(JpkiError::PinBlocked)
    ));
    assert!(matches!(
        verify_outcome(&[0x69, 0x83]),
        Err(JpkiError::PinBlocked)
    ));
    assert!(matches!(
        verify_outcome(&[0x69, 0x84]),
        Err(JpkiError::PinBlocked)
    ));
    assert!(matches!(
        verify_outcome(&[0x69, 0x82]),
        Err(JpkiError::SecurityNotSatisfied { .. })
    ));
    assert!(matches!(
        verify_outcome(&[0x6A, 0x82]),
        Err(JpkiError::FileNotFound { .. })
    ));
    assert!(matches!(
        verify_outcome(&[0x6D, 0x00]),
        Err(JpkiError::InsNotSupported { .. })
    ));
    assert!(matches!(
        verify_outcome(&[0x6A, 0x80]),
        Err(JpkiError::CardStatus {
            sw: StatusWord(0x6A80),
            ..
        })
    ));
    assert!(matches!(
        verify_outcome(&[0x12, 0x34]),
        Err(JpkiError::InvalidStatus {
            sw: StatusWord(0x1234),
            ..
        })
    ));
    // 0- and 1-byte answers during VERIFY: reported as an interrupted VERIFY, never re-sent.
    for short in [&[][..], &[0x90][..]] {
        match verify_outcome(short) {
            Err(JpkiError::VerifyInterrupted {
                source: ExchangeError::TooShort(_),
                ..
            }) => {}
            other => panic!("{short:?}: {other:?}"),
        }
    }
}

#[test]
fn counter_query_status_words() {
    let query = |reply: &[u8]| {
        let mut jpki = Jpki::select(card(&[OK, OK, reply])).unwrap();
        jpki.auth_pin_state()
    };
    assert_eq!(query(&[0x63, 0xC3]).unwrap(), PinState::TriesLeft(3));
    assert_eq!(query(&[0x63, 0xC0]).unwrap(), PinState::Blocked);
    assert_eq!(query(&[0x69, 0x84]).unwrap(), PinState::Blocked);
    assert_eq!(query(&[0x90, 0x00]).unwrap(), PinState::Verified);
    assert!(matches!(
        query(&[0x6D, 0x00]),
        Err(JpkiError::InsNotSupported { .. })
    ));
    assert!(matches!(
        query(&[0x90]),
        Err(JpkiError::Exchange(ExchangeError::TooShort(_)))
    ));
    assert!(matches!(
        query(&[0xAB, 0xCD]),
        Err(JpkiError::InvalidStatus { .. })
    ));
}

#[test]
fn select_status_words() {
    assert!(matches!(
        Jpki::select(card(&[&[0x6A, 0x82]])),
        Err(JpkiError::NotJpki)
    ));
    assert!(matches!(
        Jpki::select(card(&[&[0x6E, 0x00]])),
        Err(JpkiError::CardStatus {
            sw: StatusWord(0x6E00),
            ..
        })
    ));
    assert!(matches!(
        Jpki::select(card(&[&[]])),
        Err(JpkiError::Exchange(ExchangeError::TooShort(_)))
    ));
    assert!(matches!(
        Jpki::select(card(&[])),
        Err(JpkiError::Exchange(ExchangeError::Transport(
            TransportError::CardRemoved
        )))
    ));
}

#[test]
fn blocked_or_last_try_send_no_verify() {
    // Only three replies scripted: a fourth APDU (a VERIFY) would fail with CardRemoved.
    let t = card(&[OK, OK, &[0x63, 0xC0]]);
    let err = Jpki::select(t)
        .unwrap()
        .verify_auth_pin(&JpkiAuthPin::parse("1234").unwrap(), LastTry::Confirmed)
        .err()
        .unwrap();
    assert!(matches!(err, JpkiError::PinBlocked), "{err:?}");
    let t = card(&[OK, OK, &[0x63, 0xC1]]);
    let err = Jpki::select(t)
        .unwrap()
        .verify_auth_pin(&JpkiAuthPin::parse("1234").unwrap(), LastTry::Refuse)
        .err()
        .unwrap();
    assert!(
        matches!(err, JpkiError::LastTryNeedsConfirmation),
        "{err:?}"
    );
}

#[test]
fn signing_status_words() {
    let sign = |reply: &[u8]| {
        // SELECT AP, SELECT PIN, query, VERIFY ok, SELECT key, SIGN.
        let t = card(&[OK, OK, &[0x63, 0xC3], OK, OK, reply]);
        let mut jpki = Jpki::select(t)
            .unwrap()
            .verify_auth_pin(&JpkiAuthPin::parse("1234").unwrap(), LastTry::Refuse)
            .unwrap();
        jpki.sign_sha256(&[0; 32])
    };
    let mut good = vec![0x5A; 256];
    good.extend_from_slice(OK);
    assert_eq!(sign(&good).unwrap().len(), 256);
    assert!(matches!(
        sign(&[0x69, 0x82]),
        Err(JpkiError::SecurityNotSatisfied { .. })
    ));
    assert!(matches!(sign(OK), Err(JpkiError::Malformed { .. })));
}
