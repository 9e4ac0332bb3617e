//! Token-bucket rate limits on webhook calls, per webhook and per source address (SPEC 7:
//! a limit of N holds N calls and refills at N a second; 0 turns it off), on governor, driven by
//! the service's injected clock so limits are tested without sleeping.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use flotilla_actors::clock::Clock;
use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

/// The service's clock, as governor reads one.
#[derive(Clone)]
pub struct ClockAdapter(pub Arc<dyn Clock>);

impl GovernorClock for ClockAdapter {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_millis(self.0.now().as_millis().max(0) as u64)
    }
}

type Keyed<K> = RateLimiter<K, HashMapStateStore<K>, ClockAdapter, NoOpMiddleware<Duration>>;

/// A keyed token bucket, or none when the limit is 0.
pub struct Limit<K: Hash + Eq + Clone> {
    limiter: Option<Keyed<K>>,
    clock: ClockAdapter,
}

impl<K: Hash + Eq + Clone> Limit<K> {
    /// `per_second` calls a second per key, in bursts of as many; 0 means unlimited.
    pub fn new(per_second: u32, clock: Arc<dyn Clock>) -> Self {
        let clock = ClockAdapter(clock);
        let limiter = NonZeroU32::new(per_second)
            .map(|n| RateLimiter::hashmap_with_clock(Quota::per_second(n), clock.clone()));
        Limit { limiter, clock }
    }

    /// Takes one call for `key`; when none is left, the whole seconds to wait (at least 1).
    pub fn check(&self, key: &K) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
        })
    }

    /// Forgets keys whose buckets are full again, so the map does not grow without bound.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// The two limits a webhook call passes.
pub struct WebhookLimits {
    /// Per source address.
    pub source: Limit<IpAddr>,
    /// Per webhook id.
    pub webhook: Limit<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_actors::clock::{ManualClock, Timestamp};

    #[test]
    fn a_limit_of_n_allows_a_burst_of_n_then_refills_at_n_a_second() {
        let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
        let limit: Limit<&str> = Limit::new(2, Arc::new(clock.clone()));
        assert_eq!(limit.check(&"a"), Ok(()));
        assert_eq!(limit.check(&"a"), Ok(()));
        assert_eq!(limit.check(&"a"), Err(1));
        assert_eq!(limit.check(&"b"), Ok(()), "keys are independent");
        clock.advance(Duration::from_millis(500));
        assert_eq!(limit.check(&"a"), Ok(()));
        assert_eq!(limit.check(&"a"), Err(1));
    }

    #[test]
    fn a_limit_of_zero_is_off() {
        let clock = ManualClock::new(Timestamp::from_millis(0));
        let limit: Limit<u8> = Limit::new(0, Arc::new(clock));
        for _ in 0..1000 {
            assert_eq!(limit.check(&1), Ok(()));
        }
    }
}
