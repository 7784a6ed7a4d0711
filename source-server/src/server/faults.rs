//! Fault injection for tests of the gateway's connector: slow answers, failures, truncated
//! bodies. All switches are off unless a test turns them on; a production source never does.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Switches read on every request, and a request counter.
#[derive(Debug, Default)]
pub struct Faults {
    delay_ms: AtomicU64,
    fail_next: AtomicU32,
    fail_status: AtomicU16,
    truncate_next: AtomicU32,
    requests: AtomicU64,
    file_requests: AtomicU64,
    clock_offset: AtomicI64,
    list_unknown_formats: AtomicBool,
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Injected {
    /// Answer normally.
    None,
    /// Answer with this status instead.
    Fail(u16),
}

impl Faults {
    /// Delays every answer by `delay` (zero: no delay).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Fails the next `n` requests with `status` (e.g. 500).
    pub fn fail_next(&self, n: u32, status: u16) {
        self.fail_status.store(status, Ordering::SeqCst);
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Sends only half of the next `n` file bodies (with the full `Content-Length`), then
    /// breaks the connection.
    pub fn truncate_next(&self, n: u32) {
        self.truncate_next.store(n, Ordering::SeqCst);
    }

    /// Requests received (every endpoint), counted on arrival: one the client gave up on while
    /// it was delayed counts too.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// File downloads requested (`GET /v1/files/{id}`).
    pub fn file_requests(&self) -> u64 {
        self.file_requests.load(Ordering::SeqCst)
    }

    /// Runs the source's clock `secs` ahead (negative: behind), e.g. to let grants expire.
    pub fn set_clock_offset(&self, secs: i64) {
        self.clock_offset.store(secs, Ordering::SeqCst);
    }

    /// Lists files of formats this source does not know (a misconfigured source), so that a
    /// gateway's refusal of them can be tested; off: such files are never listed.
    pub fn list_unknown_formats(&self, on: bool) {
        self.list_unknown_formats.store(on, Ordering::SeqCst);
    }

    pub(crate) fn lists_unknown_formats(&self) -> bool {
        self.list_unknown_formats.load(Ordering::SeqCst)
    }

    pub(crate) fn clock_offset(&self) -> i64 {
        self.clock_offset.load(Ordering::SeqCst)
    }

    pub(crate) fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms.load(Ordering::SeqCst))
    }

    /// Counts a request as it arrives (before any injected delay).
    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn on_request(&self) -> Injected {
        if take_one(&self.fail_next) {
            Injected::Fail(self.fail_status.load(Ordering::SeqCst))
        } else {
            Injected::None
        }
    }

    pub(crate) fn on_file_request(&self) {
        self.file_requests.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn truncate_this_body(&self) -> bool {
        take_one(&self.truncate_next)
    }
}

/// Decrements `counter` if positive; true when it did.
fn take_one(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}
