//! Interoperability of the PHR card through pcscd + vpcd, in both directions:
//!
//! - our virtual PHR card read by tools nobody here wrote: `yubico-piv-tool` (status, reading
//!   certificates), OpenSC (`pkcs15-tool --list-certificates`, `pkcs11-tool --sign -m ECDSA` with
//!   the 9A key), the signature checked by `openssl`;
//! - our agent against a PIV card nobody here wrote: Nitrokey's `piv-authenticator` 0.7
//!   (`tests/piv-authenticator-vpcd`, built on demand if `IPHR_PIV_AUTHENTICATOR_VPCD` does not
//!   name a built binary).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use card_agent::phr::ca::PhrIssuerCa;
use card_agent::phr::card::{self, ConsentRequest, PhrError};
use card_agent::phr::consent::{Category, ConsentStatus};
use card_agent::phr::verify::{self, GrantExpectation};
use card_agent::pin::LastTry;
use card_agent::piv::{PinState, PivPin, PivPuk, mgmt};
use card_agent::virtual_card::piv::VirtualPivCard;
use iphr_tests::{VPCD_READER_1, insert, on_card, pcsc, pcsc_lock, unix_seconds, watchdog};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const PIN: &str = "246810";

fn pin() -> PivPin {
    PivPin::parse(PIN).unwrap()
}

fn issue(reader: &str, ca: &PhrIssuerCa, mgmt_alg: u8) {
    on_card(reader, |tx| {
        card::issue_factory_fresh(
            tx,
            ca,
            "HOLDER-INTEROP",
            &pin(),
            &PivPuk::parse("13572468").unwrap(),
            time::OffsetDateTime::now_utc() + time::Duration::days(365),
            mgmt_alg,
        )
    })
    .unwrap();
}

/// Runs a tool with a time limit; returns (success, stdout + stderr).
fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("timeout")
        .arg("60")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("{program}: {e} (installed by scripts/test-setup.d/40-phr-piv.sh)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn yubico_piv_tool_and_opensc_accept_the_virtual_phr_card() {
    let _lock = pcsc_lock();
    let _watchdog = watchdog(std::time::Duration::from_secs(300));
    let tmp = tempfile::tempdir().unwrap();
    let ca = PhrIssuerCa::load_or_create(&tmp.path().join("ca")).unwrap();
    let inserted = insert(VirtualPivCard::open(&tmp.path().join("card")).unwrap(), 0);
    let reader = inserted.reader();
    issue(reader, &ca, mgmt::ALG_AES256);
    for svc in ["clinic-a", "insurer-b"] {
        on_card(reader, |tx| {
            card::link(tx, &pin(), LastTry::Refuse, svc, "p-1")
        })
        .unwrap();
    }
    // With consent sets in both consent objects (5FC106, 5FC122), as on a card in use.
    for _ in 0..2 {
        let request = ConsentRequest {
            service: "clinic-a".into(),
            categories: vec![Category::parse("A:health-check").unwrap()],
            purpose: "treatment".into(),
            not_before: unix_seconds(),
            not_after: unix_seconds() + 86_400,
        };
        on_card(reader, |tx| {
            card::grant(tx, &pin(), LastTry::Refuse, &request, None, unix_seconds())
        })
        .unwrap();
    }
    assert!(inserted.card().object(0x5FC106).is_some());
    assert!(inserted.card().object(0x5FC122).is_some());

    // yubico-piv-tool: status and reading the holder certificate.
    let (ok, status) = run("yubico-piv-tool", &["-r", reader, "-a", "status"]);
    assert!(ok, "{status}");
    assert!(status.contains("Slot 9a"), "{status}");
    assert!(status.contains("CN=HOLDER-INTEROP"), "{status}");
    assert!(status.contains("OU=insurer-b"), "{status}");
    assert!(status.contains("PIN tries left:\t3"), "{status}");
    let (ok, pem) = run(
        "yubico-piv-tool",
        &["-r", reader, "-a", "read-certificate", "-s", "9a"],
    );
    assert!(ok, "{pem}");
    let holder_der = inserted.card().object(0x5FC105).unwrap();
    let holder_der = card::cert_from_object(&holder_der).unwrap();
    assert!(pem.contains("BEGIN CERTIFICATE"));
    std::fs::write(tmp.path().join("holder.pem"), &pem).unwrap();

    // OpenSC: the PKCS#15 emulation lists the holder certificate and the retired ones from 82.
    let (ok, listing) = run("pkcs15-tool", &["--reader", reader, "--list-certificates"]);
    assert!(ok, "{listing}");
    assert!(
        listing.contains("Certificate for PIV Authentication"),
        "{listing}"
    );
    assert!(
        listing.contains("Retired Certificate for Key Management 2"),
        "{listing}"
    );

    // OpenSC PKCS#11: ECDSA with the 9A key (id 01); openssl verifies it with the certificate.
    let digest: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(b"origin-hash || nonce-hash").into()
    };
    let hash_path = tmp.path().join("hash.bin");
    let sig_path = tmp.path().join("sig.der");
    std::fs::write(&hash_path, digest).unwrap();
    let slot_index = {
        let (ok, slots) = run("pkcs11-tool", &["--module", OPENSC_PKCS11, "--list-slots"]);
        assert!(ok, "{slots}");
        // "Slot N (0x..): Virtual PCD 00 00" — take the slot of our reader.
        slots
            .lines()
            .find(|l| l.starts_with("Slot ") && l.contains(reader))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .unwrap_or_else(|| panic!("no PKCS#11 slot for {reader}: {slots}"))
    };
    let (ok, signed) = run(
        "pkcs11-tool",
        &[
            "--module",
            OPENSC_PKCS11,
            "--slot-index",
            &slot_index,
            "--login",
            "--pin",
            PIN,
            "--sign",
            "-m",
            "ECDSA",
            "--id",
            "01",
            "--signature-format",
            "openssl",
            "-i",
            hash_path.to_str().unwrap(),
            "-o",
            sig_path.to_str().unwrap(),
        ],
    );
    assert!(ok, "{signed}");
    let pubkey = tmp.path().join("holder.pub.pem");
    let (ok, out) = run(
        "openssl",
        &[
            "x509",
            "-in",
            tmp.path().join("holder.pem").to_str().unwrap(),
            "-pubkey",
            "-noout",
            "-out",
            pubkey.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    let verify_with = |data: &Path| {
        run(
            "openssl",
            &[
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                pubkey.to_str().unwrap(),
                "-in",
                data.to_str().unwrap(),
                "-sigfile",
                sig_path.to_str().unwrap(),
            ],
        )
    };
    let (ok, out) = verify_with(&hash_path);
    assert!(
        ok && out.contains("Signature Verified Successfully"),
        "{out}"
    );
    // Negative control: the signature does not verify another digest.
    let other = tmp.path().join("other.bin");
    std::fs::write(&other, [0u8; 32]).unwrap();
    let (ok, _) = verify_with(&other);
    assert!(!ok, "openssl accepted a signature over another digest");
    // And our own verifier agrees with openssl on the same signature.
    let sig = std::fs::read(&sig_path).unwrap();
    let key = verify::verify_holder_cert(
        &holder_der,
        &ca.cert_der,
        time::OffsetDateTime::now_utc().unix_timestamp(),
    )
    .unwrap()
    .key;
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    key.verify_prehash(&digest, &p256::ecdsa::Signature::from_der(&sig).unwrap())
        .unwrap();
    // OpenSC logged in; nothing is left verified once its session is gone.
    drop(inserted);
}

const OPENSC_PKCS11: &str = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so";

/// The piv-authenticator vpcd runner: `IPHR_PIV_AUTHENTICATOR_VPCD`, or built here.
fn piv_authenticator_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("IPHR_PIV_AUTHENTICATOR_VPCD").map(PathBuf::from)
        && p.exists()
    {
        return p;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("piv-authenticator-vpcd/Cargo.toml");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("piv-authenticator-vpcd");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--locked", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo");
    assert!(
        status.success(),
        "building piv-authenticator-vpcd failed (needs libclang-dev: scripts/test-setup.d/40-phr-piv.sh)"
    );
    target.join("release/piv-authenticator-vpcd")
}

struct Runner(std::process::Child);
impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        // Wait until pcscd has seen the card go.
        let ctx = pcsc();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            let present = ctx
                .readers()
                .map(|rs| rs.iter().any(|r| r.name == VPCD_READER_1 && r.card_present))
                .unwrap_or(false);
            if !present {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn agent_works_against_nitrokey_piv_authenticator() {
    let binary = piv_authenticator_binary();
    let _lock = pcsc_lock();
    let _watchdog = watchdog(std::time::Duration::from_secs(300));
    let runner = Runner(
        Command::new(&binary)
            .arg("35964")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    pcsc()
        .wait_for_card(VPCD_READER_1, Duration::from_secs(10))
        .unwrap();
    let reader = VPCD_READER_1;
    let tmp = tempfile::tempdir().unwrap();
    let ca = PhrIssuerCa::load_or_create(&tmp.path().join("ca")).unwrap();

    issue(reader, &ca, mgmt::ALG_AES256);
    for svc in ["clinic-a", "insurer-b", "op-cloud"] {
        on_card(reader, |tx| {
            card::link(tx, &pin(), LastTry::Refuse, svc, &format!("{svc}-p"))
        })
        .unwrap();
    }
    let request = ConsentRequest {
        service: "insurer-b".into(),
        categories: vec![Category::parse("A:specific-checkup").unwrap()],
        purpose: "insurer health guidance".into(),
        not_before: unix_seconds(),
        not_after: unix_seconds() + 86_400,
    };
    on_card(reader, |tx| {
        card::grant(
            tx,
            &pin(),
            LastTry::Refuse,
            &request,
            Some(0),
            unix_seconds(),
        )
    })
    .unwrap();
    on_card(reader, |tx| {
        card::revoke(
            tx,
            &pin(),
            LastTry::Refuse,
            "insurer-b",
            Some(1),
            unix_seconds(),
        )
    })
    .unwrap();
    let nonce = [9u8; 16];
    let signed = on_card(reader, |tx| {
        card::sign_grant(
            tx,
            &pin(),
            LastTry::Refuse,
            "op-cloud",
            "https://gw.example.jp",
            &nonce,
            vec![],
            unix_seconds(),
            300,
        )
    })
    .unwrap();

    let view = on_card(reader, |tx| card::read_card(tx)).unwrap();
    assert_eq!(view.pin, PinState::TriesLeft(3));
    assert_eq!(view.services.len(), 3);
    assert_eq!(view.services[2].slot, 0x84);
    assert!(view.services.iter().all(|s| s.verified));
    assert!(view.unverified_consents.is_empty());
    assert_eq!(view.consents.generation, 2);
    assert_eq!(
        view.consents.for_service("insurer-b").unwrap().terms.status,
        ConsentStatus::Revoked
    );
    let t = time::OffsetDateTime::now_utc().unix_timestamp();
    let holder =
        verify::verify_holder_cert(view.holder_cert_der.as_ref().unwrap(), &ca.cert_der, t)
            .unwrap();
    let binding = verify::verify_binding(&view.services[2].cert_der, &holder, t).unwrap();
    verify::verify_grant(
        &signed.grant_bytes,
        &signed.signature,
        &binding,
        &GrantExpectation {
            audience: "https://gw.example.jp",
            nonce: &nonce,
            now: t,
        },
    )
    .unwrap();
    // A wrong PIN costs exactly one try on this card too, and is reported.
    let wrong = on_card(reader, |tx| {
        card::link(
            tx,
            &PivPin::parse("999999").unwrap(),
            LastTry::Refuse,
            "x-svc",
            "x",
        )
    });
    assert!(
        matches!(
            wrong,
            Err(PhrError::Piv(card_agent::piv::PivError::WrongPin {
                tries_left: 2
            }))
        ),
        "{wrong:?}"
    );
    drop(runner);
}
