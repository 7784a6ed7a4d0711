//! A circuit breaker per source (`docs/source-protocol.md` §7): closed → open after
//! `failures_to_open` consecutive failed requests → fails fast for `open_for` → half-open: one
//! trial request; its success closes the breaker, its failure opens it again.

use serde::Serialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The breaker's state as shown at the kiosk and in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Requests go through.
    Closed,
    /// Requests fail fast.
    Open,
    /// The cooldown is over: the next request is a trial (or one is in flight).
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    /// When the half-open trial was let through, until it reports back. A trial that never
    /// reports (its request was cancelled) is given up after `open_for`.
    trial_since: Option<Instant>,
    times_opened: u64,
}

/// One source's breaker.
#[derive(Debug)]
pub struct Breaker {
    failures_to_open: u32,
    open_for: Duration,
    inner: Mutex<Inner>,
}

/// A request may go through; `trial` when it is the half-open trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    /// Whether this is the one trial request of a half-open breaker.
    pub trial: bool,
}

/// A snapshot for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BreakerView {
    /// State.
    pub state: BreakerState,
    /// Consecutive failed requests.
    pub consecutive_failures: u32,
    /// How often it opened since start.
    pub times_opened: u64,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(failures_to_open: u32, open_for: Duration) -> Breaker {
        Breaker {
            failures_to_open: failures_to_open.max(1),
            open_for,
            inner: Mutex::new(Inner {
                consecutive_failures: 0,
                opened_at: None,
                trial_since: None,
                times_opened: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn state_of(&self, inner: &Inner, now: Instant) -> BreakerState {
        match inner.opened_at {
            None => BreakerState::Closed,
            Some(at) if now.duration_since(at) < self.open_for => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether a request may go now (`None`: fail fast).
    pub fn allow(&self) -> Option<Permit> {
        let mut inner = self.lock();
        let now = Instant::now();
        match self.state_of(&inner, now) {
            BreakerState::Closed => Some(Permit { trial: false }),
            BreakerState::Open => None,
            BreakerState::HalfOpen
                if inner
                    .trial_since
                    .is_some_and(|t| now.duration_since(t) < self.open_for) =>
            {
                None
            }
            BreakerState::HalfOpen => {
                inner.trial_since = Some(now);
                Some(Permit { trial: true })
            }
        }
    }

    /// The request succeeded (or the source answered a refusal, which is not a failure of it).
    pub fn success(&self) {
        let mut inner = self.lock();
        inner.consecutive_failures = 0;
        inner.opened_at = None;
        inner.trial_since = None;
    }

    /// The request failed (timeout, reset, 5xx, 429, short or altered body).
    pub fn failure(&self, permit: Permit) {
        let mut inner = self.lock();
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let was_open = inner.opened_at.is_some();
        if permit.trial || (!was_open && inner.consecutive_failures >= self.failures_to_open) {
            inner.opened_at = Some(Instant::now());
            inner.times_opened += 1;
        }
        if permit.trial {
            inner.trial_since = None;
        }
    }

    /// The current state.
    pub fn view(&self) -> BreakerView {
        let inner = self.lock();
        BreakerView {
            state: self.state_of(&inner, Instant::now()),
            consecutive_failures: inner.consecutive_failures,
            times_opened: inner.times_opened,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_n_failures_then_lets_one_trial_through() {
        let b = Breaker::new(3, Duration::from_millis(50));
        for _ in 0..2 {
            let p = b.allow().unwrap_or(Permit { trial: true });
            b.failure(p);
        }
        assert_eq!(b.view().state, BreakerState::Closed);
        let p = b.allow().unwrap_or(Permit { trial: true });
        b.failure(p);
        assert_eq!(b.view().state, BreakerState::Open);
        assert_eq!(b.allow(), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.view().state, BreakerState::HalfOpen);
        let trial = b.allow();
        assert_eq!(trial, Some(Permit { trial: true }));
        assert_eq!(b.allow(), None, "only one trial at a time");
        b.failure(Permit { trial: true });
        assert_eq!(b.view().state, BreakerState::Open);
        assert_eq!(b.view().times_opened, 2);
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow().is_some_and(|p| p.trial));
        b.success();
        assert_eq!(b.view().state, BreakerState::Closed);
        assert_eq!(b.view().consecutive_failures, 0);
        assert_eq!(b.allow(), Some(Permit { trial: false }));
    }

    #[test]
    fn a_trial_that_never_reports_back_is_given_up_after_the_cooldown() {
        let b = Breaker::new(1, Duration::from_millis(40));
        b.failure(b.allow().unwrap());
        assert_eq!(b.view().state, BreakerState::Open);
        std::thread::sleep(Duration::from_millis(50));
        // The trial's request is cancelled: neither success nor failure is reported.
        assert!(b.allow().unwrap().trial);
        assert!(b.allow().is_none(), "one trial at a time");
        std::thread::sleep(Duration::from_millis(50));
        assert!(b.allow().is_some_and(|p| p.trial), "stuck half-open");
    }
}
