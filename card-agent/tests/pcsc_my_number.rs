//! The My Number card through the real PC/SC stack: pcscd + vsmartcard vpcd + the virtual card.
//!
//! Needs a running pcscd with vpcd (the README's test command starts one). Every test holds the
//! machine-wide reader lock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use card_agent::jpki::{Jpki, JpkiError, PinState};
use card_agent::pin::{JpkiAuthPin, LastTry};
use card_agent::transport::pcsc::{PcscCard, PcscContext};
use card_agent::virtual_card::VirtualCard;
use card_agent::virtual_card::inserted::{InsertedCard, ReaderLock};
use card_agent::virtual_card::jpki::VirtualJpkiCard;
use std::path::Path;
use std::process::{Command, Stdio};

struct Setup {
    inserted: InsertedCard<VirtualJpkiCard>,
    dir: tempfile::TempDir,
    _lock: ReaderLock,
}

fn setup_with(tries: u8) -> Setup {
    let lock = ReaderLock::acquire().unwrap();
    let (dir, mut card) = common::fresh_card();
    card.set_auth_tries_left(tries).unwrap();
    let inserted = InsertedCard::insert(card, 0).unwrap_or_else(|e| {
        panic!("{e}\n(PC/SC tests need pcscd with vsmartcard-vpcd: run `bash scripts/test.sh`)")
    });
    Setup {
        inserted,
        dir,
        _lock: lock,
    }
}

fn setup() -> Setup {
    setup_with(3)
}

fn connect(s: &Setup) -> PcscCard {
    PcscContext::establish()
        .unwrap()
        .connect(s.inserted.reader())
        .unwrap()
}

fn pin(p: &str) -> JpkiAuthPin {
    JpkiAuthPin::parse(p).unwrap()
}

#[test]
fn the_certificate_read_equals_the_cards() {
    let s = setup();
    let want = s.inserted.card().material().auth.cert_der.clone();
    let mut card = connect(&s);
    let got = card
        .transaction(|tx| Jpki::select(tx).and_then(|mut j| j.read_auth_certificate()))
        .unwrap();
    assert_eq!(got, want);
}

#[test]
fn a_thousand_status_reads_leave_the_counter_unchanged() {
    let s = setup();
    let mut card = connect(&s);
    card.transaction(|tx| -> Result<(), JpkiError> {
        let mut jpki = Jpki::select(tx)?;
        for _ in 0..1_000 {
            assert_eq!(jpki.auth_pin_state()?, PinState::TriesLeft(3));
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(s.inserted.card().auth_tries_left(), 3);
    assert_eq!(s.inserted.card().counters().verify_with_pin, 0);
    assert_eq!(s.inserted.card().counters().verify_queries, 1_000);
}

#[test]
fn one_wrong_pin_costs_exactly_one_try() {
    let s = setup();
    let mut card = connect(&s);
    let err = card
        .transaction(|tx| {
            Jpki::select(tx)?
                .verify_auth_pin(&pin("0000"), LastTry::Refuse)
                .map(|_| ())
        })
        .unwrap_err();
    assert!(
        matches!(err, JpkiError::WrongPin { tries_left: 2 }),
        "{err:?}"
    );
    assert_eq!(s.inserted.card().auth_tries_left(), 2);
    assert_eq!(s.inserted.card().counters().verify_with_pin, 1);
}

#[test]
fn a_blocked_card_gets_no_verify() {
    let s = setup_with(0);
    let mut card = connect(&s);
    let err = card
        .transaction(|tx| {
            Jpki::select(tx)?
                .verify_auth_pin(&pin("1234"), LastTry::Confirmed)
                .map(|_| ())
        })
        .unwrap_err();
    assert!(matches!(err, JpkiError::PinBlocked), "{err:?}");
    assert_eq!(s.inserted.card().counters().verify_with_pin, 0);
}

#[test]
fn at_one_try_left_nothing_is_sent_without_confirmation() {
    let s = setup_with(1);
    let mut card = connect(&s);
    let err = card
        .transaction(|tx| {
            Jpki::select(tx)?
                .verify_auth_pin(&pin("1234"), LastTry::Refuse)
                .map(|_| ())
        })
        .unwrap_err();
    assert!(
        matches!(err, JpkiError::LastTryNeedsConfirmation),
        "{err:?}"
    );
    assert_eq!(s.inserted.card().counters().verify_with_pin, 0);
    assert_eq!(s.inserted.card().auth_tries_left(), 1);
}

fn agent(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_card-agent"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn openssl_verify(dir: &Path, cert_der: &[u8], message: &[u8], signature: &[u8]) -> bool {
    std::fs::write(dir.join("cert.der"), cert_der).unwrap();
    std::fs::write(dir.join("message"), message).unwrap();
    std::fs::write(dir.join("signature"), signature).unwrap();
    let pubkey = Command::new("openssl")
        .args([
            "x509", "-inform", "DER", "-in", "cert.der", "-pubkey", "-noout", "-out", "pub.pem",
        ])
        .current_dir(dir)
        .status()
        .expect("openssl");
    assert!(pubkey.success());
    Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "signature",
            "message",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn cli_signs_with_the_pin_from_stdin_and_openssl_verifies() {
    use base64::Engine;
    let s = setup();
    let reader = s.inserted.reader();
    let challenge = b"https://gateway.example.jp nonce 0123456789";
    let out = agent(
        &[
            "--json",
            "sign",
            "--reader",
            reader,
            "--pin-stdin",
            "--challenge",
            &hex::encode(challenge),
        ],
        "1234\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let b64 = |k: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(signed[k].as_str().unwrap())
            .unwrap()
    };
    let (cert, signature) = (b64("certificate"), b64("signature"));
    assert_eq!(cert, s.inserted.card().material().auth.cert_der);
    assert_eq!(signed["algorithm"], "RS256");
    assert!(openssl_verify(s.dir.path(), &cert, challenge, &signature));
    assert!(!openssl_verify(
        s.dir.path(),
        &cert,
        b"another challenge",
        &signature
    ));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("1234"));
}

#[test]
fn cli_status_spends_no_try_and_refuses_malformed_pins_before_the_card() {
    let s = setup();
    let reader = s.inserted.reader();
    let out = agent(&["--json", "status", "--reader", reader], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["card"]["type"], "my_number");
    assert_eq!(status["card"]["auth_pin"]["tries_left"], 3);
    assert_eq!(status["atr"], "3BE000FF8131FE4514");
    assert!(
        status["card"]["auth_certificate"]["subject"]
            .as_str()
            .unwrap()
            .starts_with("C=JP, CN=")
    );

    for bad in [
        "",
        "123",
        "12345",
        "12a4",
        "１２３４",
        "    ",
        &"9".repeat(100),
    ] {
        let out = agent(
            &[
                "sign",
                "--reader",
                reader,
                "--pin-stdin",
                "--challenge",
                "00",
            ],
            &format!("{bad}\n"),
        );
        assert!(!out.status.success(), "{bad:?} accepted");
    }
    assert_eq!(
        s.inserted.card().counters().verify_with_pin,
        0,
        "no malformed PIN reached the card"
    );
    assert_eq!(s.inserted.card().auth_tries_left(), 3);

    let out = agent(
        &[
            "sign",
            "--reader",
            reader,
            "--pin-stdin",
            "--challenge",
            "00",
        ],
        "4321\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 tries left"));
}

/// A card with no application this agent knows: answers every SELECT with 6A82.
struct ForeignCard;

impl VirtualCard for ForeignCard {
    fn atr(&self) -> Vec<u8> {
        vec![0x3B, 0x80, 0x80, 0x01, 0x01]
    }
    fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        if apdu.get(1) == Some(&0xA4) {
            vec![0x6A, 0x82]
        } else {
            vec![0x6D, 0x00]
        }
    }
    fn reset(&mut self) {}
}

#[test]
fn any_reader_works_even_with_a_card_that_is_not_ours() {
    let _lock = ReaderLock::acquire().unwrap();
    let inserted = InsertedCard::insert(ForeignCard, 0).unwrap();
    let out = agent(&["--json", "status", "--reader", inserted.reader()], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["card"]["type"], "unknown");
    let out = agent(&["--json", "readers"], "");
    let readers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        readers
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == inserted.reader() && r["card_present"] == true)
    );
}

fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn opensc_accepts_the_virtual_card() {
    let s = setup();
    let reader = s.inserted.reader();
    assert_eq!(
        tool("opensc-tool", &["--reader", reader, "-n"]).trim(),
        "jpki"
    );

    let listing = tool("pkcs15-tool", &["--reader", reader, "--list-certificates"]);
    for label in [
        "User Authentication Certificate",
        "Digital Signature Certificate",
        "User Authentication Certificate CA",
        "Digital Signature Certificate CA",
    ] {
        assert!(
            listing.contains(&format!("[{label}]")),
            "{label} missing:\n{listing}"
        );
    }

    let dir = s.dir.path();
    let message = b"signed by OpenSC's PKCS#11 module";
    std::fs::write(dir.join("in"), message).unwrap();
    let module = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so";
    let sig_path = dir.join("sig");
    tool(
        "pkcs11-tool",
        &[
            "--module",
            module,
            "--login",
            "--pin",
            "1234",
            "--sign",
            "-m",
            "SHA256-RSA-PKCS",
            "--id",
            "01",
            "-i",
            dir.join("in").to_str().unwrap(),
            "-o",
            sig_path.to_str().unwrap(),
        ],
    );
    let signature = std::fs::read(&sig_path).unwrap();
    let cert = s.inserted.card().material().auth.cert_der.clone();
    assert!(openssl_verify(dir, &cert, message, &signature));
    assert_eq!(s.inserted.card().counters().signatures, 1);
}

#[test]
fn insertion_and_removal_are_seen_through_get_status_change() {
    use card_agent::transport::pcsc::CardEvent;
    use std::time::Duration;
    let _lock = ReaderLock::acquire().unwrap();
    let ctx = PcscContext::establish().unwrap();
    let reader = card_agent::virtual_card::inserted::VPCD_READER_0;
    let waiter = std::thread::spawn(move || {
        let ctx = PcscContext::establish().unwrap();
        let inserted = ctx
            .wait_for_change(reader, Duration::from_secs(10))
            .unwrap();
        let removed = ctx
            .wait_for_change(reader, Duration::from_secs(10))
            .unwrap();
        (inserted, removed)
    });
    // Give the waiter time to register the empty state: it reports changes relative to it.
    std::thread::sleep(Duration::from_millis(300));
    let inserted = InsertedCard::insert(ForeignCard, 0).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(inserted);
    assert_eq!(
        waiter.join().unwrap(),
        (CardEvent::Inserted, CardEvent::Removed)
    );
    let idle = ctx
        .wait_for_change(reader, Duration::from_millis(200))
        .unwrap();
    assert_eq!(idle, CardEvent::Timeout);
}

/// A My Number card whose chip dies during COMPUTE DIGITAL SIGNATURE (answers nothing).
struct DiesWhileSigning(VirtualJpkiCard);

impl VirtualCard for DiesWhileSigning {
    fn atr(&self) -> Vec<u8> {
        self.0.atr()
    }
    fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        if apdu.get(1) == Some(&0x2A) {
            Vec::new()
        } else {
            self.0.process(apdu)
        }
    }
    fn reset(&mut self) {
        self.0.reset();
    }
}

#[test]
fn a_card_dying_mid_signature_is_an_error_within_two_seconds() {
    let _lock = ReaderLock::acquire().unwrap();
    let (_dir, card) = common::fresh_card();
    let inserted = InsertedCard::insert(DiesWhileSigning(card), 0).unwrap();
    let mut pcsc_card = PcscContext::establish()
        .unwrap()
        .connect(inserted.reader())
        .unwrap();
    let start = std::time::Instant::now();
    let result = pcsc_card.transaction(|tx| {
        card_agent::agent::sign_challenge(tx, &pin("1234"), LastTry::Refuse, b"challenge", None)
    });
    let elapsed = start.elapsed();
    assert!(result.is_err(), "a signature came back from a dead card");
    assert!(
        elapsed < std::time::Duration::from_secs(2),
        "took {elapsed:?}"
    );
    assert_eq!(
        inserted.card().0.counters().verify_with_pin,
        1,
        "PIN verified once, not again"
    );
}
