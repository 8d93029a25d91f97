//! Per-key rate limits (per subject, per client address) in bounded memory.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// A rate and a burst: `per_minute` requests a minute on average, up to `burst` at once.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Average requests a minute.
    pub per_minute: NonZeroU32,
    /// Requests allowed at once after a quiet spell.
    pub burst: NonZeroU32,
}

impl From<&crate::config::RateSettings> for Rate {
    /// Validation keeps both numbers above zero; a zero would mean one a minute.
    fn from(r: &crate::config::RateSettings) -> Self {
        Self {
            per_minute: NonZeroU32::new(r.per_minute).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(r.burst).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// One limiter per key. The limiters live in a bounded cache: a key idle for as long as its
/// burst takes to refill is indistinguishable from a new one and is dropped, and a spray of
/// keys seen once cannot push the busy keys out (the cache admits by frequency), so memory
/// stays bounded whatever the callers send.
pub struct KeyedLimit<K> {
    quota: Quota,
    limiters: moka::future::Cache<K, Arc<DefaultDirectRateLimiter>>,
    clock: DefaultClock,
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> KeyedLimit<K> {
    /// Limits each key to `rate`, tracking at most `max_keys` keys.
    pub fn new(rate: Rate, max_keys: u64) -> Self {
        let quota = Quota::per_minute(rate.per_minute).allow_burst(rate.burst);
        let refill = quota.replenish_interval() * rate.burst.get();
        Self {
            quota,
            limiters: moka::future::Cache::builder()
                .max_capacity(max_keys)
                .time_to_idle(refill.max(Duration::from_secs(1)))
                .build(),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request of `key`'s allowance; when none is left, how long until one is.
    pub async fn check(&self, key: K) -> Result<(), Duration> {
        let quota = self.quota;
        let limiter = self
            .limiters
            .get_with(key, async move { Arc::new(RateLimiter::direct(quota)) })
            .await;
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Keys currently tracked (after pending evictions and admissions).
    pub async fn tracked(&self) -> u64 {
        self.limiters.run_pending_tasks().await;
        self.limiters.entry_count()
    }
}

/// Whole seconds to tell a caller to wait: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_spray_of_keys_never_grows_past_the_bound() {
        let rate = Rate {
            per_minute: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(1).unwrap(),
        };
        let limit = KeyedLimit::new(rate, 100);
        for key in 0..5_000u32 {
            // Each key is new, so each is allowed its one request.
            assert!(limit.check(key).await.is_ok());
        }
        assert!(limit.tracked().await <= 100);
    }

    #[tokio::test]
    async fn a_key_past_its_burst_waits_and_others_do_not() {
        let rate = Rate {
            per_minute: NonZeroU32::new(60).unwrap(),
            burst: NonZeroU32::new(2).unwrap(),
        };
        let limit = KeyedLimit::new(rate, 100);
        assert!(limit.check("a").await.is_ok());
        assert!(limit.check("a").await.is_ok());
        let wait = limit.check("a").await.unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limit.check("b").await.is_ok());
    }

    #[test]
    fn retry_after_is_rounded_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
