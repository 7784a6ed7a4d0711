//! Helpers for the end-to-end tests that go through the real PC/SC stack (pcscd + vpcd).
//!
//! pcscd is one per machine and its readers are shared: every test that uses a reader holds
//! [`pcsc_lock`], a file lock that also serialises test binaries and other checkouts.

pub mod browser;
pub mod kiosk;

use card_agent::transport::pcsc::PcscContext;
use card_agent::virtual_card::VirtualCard;
pub use card_agent::virtual_card::inserted::{ReaderLock, VPCD_READER_0, VPCD_READER_1};
use std::path::PathBuf;

/// Takes the machine-wide reader lock (blocking).
pub fn pcsc_lock() -> ReaderLock {
    ReaderLock::acquire().unwrap_or_else(|e| panic!("PC/SC reader lock: {e}"))
}

/// Connects to pcscd, failing with a clear message when it is not running.
pub fn pcsc() -> PcscContext {
    PcscContext::establish().unwrap_or_else(|e| {
        panic!("PC/SC is not available ({e}): run the tests with `bash scripts/test.sh`, which starts pcscd")
    })
}

/// A virtual card inserted into a vpcd reader, removed on drop.
pub type InsertedCard<C> = card_agent::virtual_card::inserted::InsertedCard<C>;

/// Inserts `card` into vpcd reader 0 or 1 and waits until pcscd sees it; panics with the reason.
pub fn insert<C: VirtualCard + 'static>(card: C, reader_index: u8) -> InsertedCard<C> {
    let _ = pcsc();
    InsertedCard::insert(card, reader_index).unwrap_or_else(|e| panic!("{e}"))
}

/// A directory under the target dir that persists across test runs (for generated card keys).
pub fn persistent_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("iphr-target"));
    base.join("test-material").join(name)
}

/// Runs `f` on the card in `reader` inside one PC/SC transaction.
pub fn on_card<R, E: From<card_agent::transport::TransportError>>(
    reader: &str,
    f: impl FnOnce(&mut card_agent::transport::pcsc::PcscTransaction<'_>) -> Result<R, E>,
) -> Result<R, E> {
    let mut card = pcsc()
        .connect(reader)
        .unwrap_or_else(|e| panic!("connect {reader}: {e}"));
    card.transaction(f)
}

/// A test that hangs while holding the machine-wide reader lock would stall every other PC/SC
/// test: abort the binary (which releases the lock) if it runs for `limit`. Dropping the returned
/// guard disarms it.
pub fn watchdog(limit: std::time::Duration) -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            eprintln!("a test ran for {limit:?} holding the reader lock: aborting");
            std::process::abort();
        }
    });
    tx
}

/// Seconds since the Unix epoch, as the PHR card's records count time.
pub fn unix_seconds() -> u32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(secs).unwrap_or(u32::MAX)
}
