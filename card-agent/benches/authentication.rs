//! APDUs and time per My Number card authentication, with the agent's own time separated from
//! the card's (time inside `CardTransport::transmit`).
//!
//! `cargo bench -p card-agent --bench authentication` prints one table: in-process virtual card
//! always, and the same card through pcscd + vpcd when pcscd runs. Goal: ≤ 6 APDUs for a known
//! card, ≤ 5 ms agent overhead.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark binary: failing loudly is right

use card_agent::agent;
use card_agent::pin::{JpkiAuthPin, LastTry};
use card_agent::transport::{CardTransport, TransportError};
use card_agent::virtual_card::InProcess;
use card_agent::virtual_card::jpki::{JpkiCardMaterial, VirtualJpkiCard};
use std::time::{Duration, Instant};

/// Counts APDUs and the time spent in the transport (card + reader stack).
struct Timed<T> {
    inner: T,
    apdus: u32,
    in_card: Duration,
}

impl<T: CardTransport> CardTransport for Timed<T> {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        let start = Instant::now();
        let out = self.inner.transmit(apdu);
        self.in_card += start.elapsed();
        self.apdus += 1;
        out
    }
    fn supports_extended_length(&self) -> bool {
        self.inner.supports_extended_length()
    }
}

/// Mean figures of one authentication.
struct Figures {
    apdus: u32,
    total: Duration,
    in_card: Duration,
}

/// Runs `n` authentications over transports handed out by `with_transport`, and averages.
fn measure(
    n: u32,
    known_certificate: Option<&[u8]>,
    mut with_transport: impl FnMut(&mut dyn FnMut(&mut dyn CardTransport)),
) -> Figures {
    let pin = JpkiAuthPin::parse("1234").expect("valid test PIN");
    let mut figures = Figures {
        apdus: 0,
        total: Duration::ZERO,
        in_card: Duration::ZERO,
    };
    for _ in 0..n {
        with_transport(&mut |transport: &mut dyn CardTransport| {
            let mut timed = Timed {
                inner: transport,
                apdus: 0,
                in_card: Duration::ZERO,
            };
            let start = Instant::now();
            let signed = agent::sign_challenge(
                &mut timed,
                &pin,
                LastTry::Refuse,
                b"origin nonce",
                known_certificate,
            )
            .expect("authentication");
            figures.total += start.elapsed();
            assert_eq!(signed.signature.len(), 256);
            figures.in_card += timed.in_card;
            figures.apdus = timed.apdus;
        });
    }
    figures.total /= n;
    figures.in_card /= n;
    figures
}

fn row(label: &str, f: &Figures) {
    let agent = f.total.saturating_sub(f.in_card);
    println!(
        "{label:<48} {:>5} {:>10.3} {:>12.3} {:>10.3}",
        f.apdus,
        f.total.as_secs_f64() * 1e3,
        f.in_card.as_secs_f64() * 1e3,
        agent.as_secs_f64() * 1e3
    );
}

fn main() {
    let dir = std::env::temp_dir().join("iphr-bench-my-number-card");
    let mut material = JpkiCardMaterial::load_or_create(&dir).expect("card material");
    material.reset_counters().expect("reset counters");
    let cert = material.auth.cert_der.clone();
    let card = InProcess::new(VirtualJpkiCard::new(material));
    let n = 200;

    println!("My Number card authentication, mean of {n} (ms)");
    println!(
        "{:<48} {:>5} {:>10} {:>12} {:>10}",
        "", "APDUs", "total", "card+stack", "agent"
    );
    for (label, known) in [
        (
            "in-process, known card (certificate cached)",
            Some(cert.as_slice()),
        ),
        ("in-process, first contact (certificate read)", None),
    ] {
        let f = measure(n, known, |auth| auth(&mut card.clone()));
        row(label, &f);
    }

    #[cfg(feature = "pcsc")]
    pcsc_rows(&dir, &cert, n);
}

#[cfg(feature = "pcsc")]
fn pcsc_rows(dir: &std::path::Path, cert: &[u8], n: u32) {
    use card_agent::transport::pcsc::PcscContext;
    use card_agent::virtual_card::inserted::{InsertedCard, ReaderLock};
    if PcscContext::establish().is_err() {
        println!(
            "(pcscd not running: PC/SC rows skipped; run under `bash scripts/test.sh` or start pcscd)"
        );
        return;
    }
    let _lock = ReaderLock::acquire().expect("reader lock");
    let card = VirtualJpkiCard::new(JpkiCardMaterial::load_or_create(dir).expect("card material"));
    let inserted = match InsertedCard::insert(card, 0) {
        Ok(inserted) => inserted,
        Err(e) => {
            println!("(vpcd not reachable: {e})");
            return;
        }
    };
    let ctx = PcscContext::establish().expect("pcscd");
    let mut pcsc_card = ctx.connect(inserted.reader()).expect("connect");
    for (label, known) in [
        ("pcscd + vpcd, known card (certificate cached)", Some(cert)),
        ("pcscd + vpcd, first contact (certificate read)", None),
    ] {
        let f = measure(n, known, |auth| {
            pcsc_card
                .transaction(|tx| -> Result<(), TransportError> {
                    auth(tx);
                    Ok(())
                })
                .expect("transaction");
        });
        row(label, &f);
    }
}
