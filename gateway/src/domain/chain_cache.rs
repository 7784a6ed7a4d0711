//! A bounded, short-lived memory of successful certificate-path validations (the chain step of
//! DESIGN §4 step 3), so that a card seen again costs one RSA verification (the token's) instead
//! of two.
//!
//! What is remembered, per SHA-256 of the card certificate's DER, is only what depends on nothing
//! but those bytes and the (immutable) anchor set: "webpki built a path from this certificate,
//! without intermediates, to anchor `anchor_index`, and its EKU fits the policy", together with the
//! validity window of that path (the intersection of the certificate's and the anchor's validity,
//! in seconds). Everything that depends on time or on changing state is evaluated on every
//! validation by the caller: the window against the current time (outside it the full, uncached
//! validation runs and gives its own answer), the end-entity profile, key usage, and revocation
//! against the CRLs loaded now. Only successes are remembered, and only certificates that chain to
//! a configured anchor can get in, so nobody without a trusted CA can fill the cache.
//!
//! Each [`super::certs::AnchorSet`] owns its cache: a new trust configuration (other anchors or
//! policy) is a new set with an empty cache. Entries expire after [`ChainCachePolicy::ttl_ms`]
//! (also when the clock goes backwards); at [`ChainCachePolicy::capacity`] the expired entries are
//! dropped, then the oldest.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Size and lifetime of a chain cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainCachePolicy {
    /// Most entries kept (0 disables the cache).
    pub capacity: usize,
    /// Lifetime of an entry in milliseconds, from the validation that stored it.
    pub ttl_ms: i64,
}

impl ChainCachePolicy {
    /// No caching: every validation builds and verifies the path.
    pub const DISABLED: ChainCachePolicy = ChainCachePolicy {
        capacity: 0,
        ttl_ms: 0,
    };
}

impl Default for ChainCachePolicy {
    /// 4,096 certificates for 5 minutes.
    fn default() -> Self {
        ChainCachePolicy {
            capacity: 4096,
            ttl_ms: 5 * 60 * 1000,
        }
    }
}

/// A remembered path validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedChain {
    /// Index of the anchor the path ends at.
    pub anchor_index: usize,
    /// First second (Unix time) at which every certificate on the path is valid.
    pub valid_from_secs: i64,
    /// Last second (inclusive) at which every certificate on the path is valid.
    pub valid_to_secs: i64,
}

#[derive(Debug)]
struct Entry {
    chain: CachedChain,
    stored_at_ms: i64,
}

/// Counters of a chain cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChainCacheStats {
    /// Validations that used a remembered path.
    pub hits: u64,
    /// Validations that built the path (no entry, expired entry, or time outside its window).
    pub misses: u64,
    /// Entries held now.
    pub entries: usize,
}

/// The cache of one anchor set.
#[derive(Debug)]
pub struct ChainCache {
    policy: ChainCachePolicy,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ChainCache {
    /// An empty cache.
    pub fn new(policy: ChainCachePolicy) -> Self {
        ChainCache {
            policy,
            entries: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Its policy.
    pub fn policy(&self) -> ChainCachePolicy {
        self.policy
    }

    fn fresh(&self, entry: &Entry, now_ms: i64) -> bool {
        now_ms >= entry.stored_at_ms && now_ms - entry.stored_at_ms < self.policy.ttl_ms
    }

    /// The remembered path of the certificate with DER hash `key`, if one is stored, not expired,
    /// and valid at `now_ms` (every certificate on it inside its validity period).
    pub fn get(&self, key: &[u8; 32], now_ms: i64) -> Option<CachedChain> {
        if self.policy.capacity == 0 {
            return None;
        }
        let now_secs = now_ms.div_euclid(1000);
        let found = {
            let mut entries = lock(&self.entries);
            match entries.get(key) {
                Some(e) if self.fresh(e, now_ms) => Some(e.chain),
                Some(_) => {
                    entries.remove(key);
                    None
                }
                None => None,
            }
        };
        let usable = found.filter(|c| {
            now_ms >= 0 && now_secs >= c.valid_from_secs && now_secs <= c.valid_to_secs
        });
        let counter = if usable.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        usable
    }

    /// Remembers a path validated at `now_ms`.
    pub fn insert(&self, key: [u8; 32], chain: CachedChain, now_ms: i64) {
        let capacity = self.policy.capacity;
        if capacity == 0 {
            return;
        }
        let mut entries = lock(&self.entries);
        if entries.len() >= capacity && !entries.contains_key(&key) {
            entries.retain(|_, e| self.fresh(e, now_ms));
            while entries.len() >= capacity {
                let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.stored_at_ms)
                    .map(|(k, _)| *k)
                else {
                    break;
                };
                entries.remove(&oldest);
            }
        }
        entries.insert(
            key,
            Entry {
                chain,
                stored_at_ms: now_ms,
            },
        );
    }

    /// Hits, misses and entries so far.
    pub fn stats(&self) -> ChainCacheStats {
        ChainCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: lock(&self.entries).len(),
        }
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        lock(&self.entries).clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAIN: CachedChain = CachedChain {
        anchor_index: 1,
        valid_from_secs: 100,
        valid_to_secs: 200,
    };

    #[test]
    fn window_ttl_and_clock_going_back() {
        let cache = ChainCache::new(ChainCachePolicy {
            capacity: 4,
            ttl_ms: 10_000,
        });
        cache.insert([1; 32], CHAIN, 150_000);
        assert_eq!(cache.get(&[1; 32], 150_000), Some(CHAIN));
        // Validity is inclusive at both ends, in seconds.
        assert_eq!(cache.get(&[1; 32], 159_999), Some(CHAIN));
        let c2 = ChainCache::new(ChainCachePolicy {
            capacity: 4,
            ttl_ms: 1_000_000,
        });
        c2.insert([1; 32], CHAIN, 100_000);
        assert_eq!(c2.get(&[1; 32], 200_999), Some(CHAIN));
        assert_eq!(c2.get(&[1; 32], 201_000), None, "after notAfter");
        // Expired entry: gone.
        assert_eq!(cache.get(&[1; 32], 160_000), None);
        assert_eq!(cache.stats().entries, 0);
        // Clock before the store time: not used.
        cache.insert([1; 32], CHAIN, 150_000);
        assert_eq!(cache.get(&[1; 32], 149_999), None);
        assert_eq!(cache.get(&[2; 32], 150_000), None);
        let s = cache.stats();
        assert_eq!((s.hits, s.misses), (2, 3));
    }

    #[test]
    fn bounded_expired_first_then_oldest() {
        let cache = ChainCache::new(ChainCachePolicy {
            capacity: 2,
            ttl_ms: 10_000,
        });
        cache.insert([1; 32], CHAIN, 100_000);
        cache.insert([2; 32], CHAIN, 105_000);
        cache.insert([3; 32], CHAIN, 106_000);
        assert_eq!(cache.stats().entries, 2);
        assert_eq!(cache.get(&[1; 32], 106_000), None, "oldest evicted");
        assert!(cache.get(&[2; 32], 106_000).is_some());
        // At 115,500 entry 2 has expired: it goes, entry 3 stays.
        cache.insert([4; 32], CHAIN, 115_500);
        assert_eq!(cache.stats().entries, 2);
        assert!(cache.get(&[3; 32], 115_500).is_some());
        assert!(cache.get(&[4; 32], 115_500).is_some());
        for i in 0..100u8 {
            cache.insert([i; 32], CHAIN, 120_000);
            assert!(cache.stats().entries <= 2);
        }
    }

    #[test]
    fn disabled_stores_nothing() {
        let cache = ChainCache::new(ChainCachePolicy::DISABLED);
        cache.insert([1; 32], CHAIN, 150_000);
        assert_eq!(cache.get(&[1; 32], 150_000), None);
        assert_eq!(cache.stats().entries, 0);
    }
}
