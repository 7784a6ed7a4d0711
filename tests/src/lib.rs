//! Helpers for the end-to-end tests that go through the real PC/SC stack (pcscd + vpcd).
//!
//! pcscd is one per machine and its readers are shared: every test that uses a reader holds
//! [`pcsc_lock`], a file lock that also serialises test binaries and other checkouts.

use card_agent::transport::pcsc::PcscContext;
use card_agent::virtual_card::VirtualCard;
use card_agent::virtual_card::vpcd::{self, Running};
use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

/// The first vpcd reader (TCP port 35963).
pub const VPCD_READER_0: &str = "Virtual PCD 00 00";
/// The second vpcd reader (TCP port 35964).
pub const VPCD_READER_1: &str = "Virtual PCD 00 01";

/// Exclusive use of the machine's PC/SC readers until dropped.
pub struct PcscLock {
    _file: File,
}

/// Takes the machine-wide reader lock (blocking).
pub fn pcsc_lock() -> PcscLock {
    let path = std::env::temp_dir().join("iphr-pcsc.lock");
    let file = File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    PcscLock { _file: file }
}

/// Connects to pcscd, failing with a clear message when it is not running.
pub fn pcsc() -> PcscContext {
    PcscContext::establish().unwrap_or_else(|e| {
        panic!("PC/SC is not available ({e}): run the tests with `bash scripts/test.sh`, which starts pcscd")
    })
}

/// A virtual card inserted into a vpcd reader, removed (and seen removed) on drop.
pub struct InsertedCard<C: VirtualCard + 'static> {
    running: Option<Running<C>>,
    reader: &'static str,
}

impl<C: VirtualCard + 'static> InsertedCard<C> {
    /// Inserts `card` into reader 0 or 1 and waits until PC/SC reports it present.
    pub fn insert(card: C, reader_index: u8) -> Self {
        let (port, reader) = match reader_index {
            0 => (vpcd::DEFAULT_PORT, VPCD_READER_0),
            _ => (vpcd::DEFAULT_PORT + 1, VPCD_READER_1),
        };
        let ctx = pcsc();
        let running = Running::insert(card, ("127.0.0.1", port), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("cannot reach vpcd on port {port}: {e}"));
        ctx.wait_for_card(reader, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{reader}: card not seen by pcscd: {e}"));
        InsertedCard {
            running: Some(running),
            reader,
        }
    }

    /// The reader's PC/SC name.
    pub fn reader(&self) -> &'static str {
        self.reader
    }

    /// The card, for inspection.
    pub fn card(&self) -> std::sync::MutexGuard<'_, C> {
        self.running
            .as_ref()
            .map(|r| r.card())
            .unwrap_or_else(|| unreachable!("only None after drop"))
    }
}

impl<C: VirtualCard + 'static> Drop for InsertedCard<C> {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.remove();
            // Wait until pcscd has noticed, so the next test starts from an empty reader.
            if let Ok(ctx) = PcscContext::establish() {
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while std::time::Instant::now() < deadline {
                    let present = ctx
                        .readers()
                        .map(|rs| rs.iter().any(|r| r.name == self.reader && r.card_present))
                        .unwrap_or(false);
                    if !present {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// A directory under the target dir that persists across test runs (for generated card keys).
pub fn persistent_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("iphr-target"));
    base.join("test-material").join(name)
}
