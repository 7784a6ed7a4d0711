//! Per-partner rate limits (security-scenarios J3; OWASP API4): a token bucket per client in this
//! gateway process. Over the limit the partner gets 429 with `Retry-After`; other partners are not
//! affected.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ms: i64,
}

/// Token buckets keyed by client id.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        RateLimiter::default()
    }

    /// Takes one token for `client` (rate `per_sec`, burst `per_sec`) at `now_ms`. `Err` carries
    /// the seconds until a token is available.
    pub fn take(&self, client: &str, per_sec: u32, now_ms: i64) -> Result<(), u64> {
        let rate = f64::from(per_sec.max(1));
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = buckets.entry(client.to_owned()).or_insert(Bucket {
            tokens: rate,
            last_ms: now_ms,
        });
        let elapsed = (now_ms - bucket.last_ms).max(0) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.last_ms = now_ms.max(bucket.last_ms);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / rate;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusal_then_refill_and_partners_are_separate() {
        let l = RateLimiter::new();
        for _ in 0..5 {
            assert_eq!(l.take("a", 5, 1_000), Ok(()));
        }
        assert_eq!(l.take("a", 5, 1_000), Err(1));
        assert_eq!(l.take("b", 5, 1_000), Ok(()));
        assert_eq!(l.take("a", 5, 1_200), Ok(()));
        assert_eq!(l.take("a", 5, 1_200), Err(1));
    }
}
