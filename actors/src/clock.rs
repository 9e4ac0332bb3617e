//! Time as the domain sees it: a [`Timestamp`] in Unix milliseconds, and a [`Clock`] that is
//! injected wherever "now" is needed, so that every time rule can be tested without sleeping.
//!
//! [`SystemClock`] is the only place in Flotilla that reads the system time. Replays never read
//! a clock at all: they use the `at` stored in each event.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

const MILLIS_PER_SECOND: i64 = 1_000;

/// A point in time, in milliseconds since the Unix epoch. Serializes as a plain integer.
///
/// Arithmetic saturates instead of overflowing: a timestamp derived from input (a request's
/// `webhook-timestamp`, say) can never make the domain panic.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp from Unix milliseconds.
    pub const fn from_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    /// A timestamp from Unix seconds (saturating at the ends of the range).
    pub const fn from_secs(secs: i64) -> Self {
        Timestamp(secs.saturating_mul(MILLIS_PER_SECOND))
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the Unix epoch, rounded down.
    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(MILLIS_PER_SECOND)
    }

    /// This timestamp plus `secs` seconds (saturating).
    pub fn plus_secs(self, secs: impl Into<u64>) -> Self {
        let secs = i64::try_from(secs.into()).unwrap_or(i64::MAX);
        Timestamp(
            self.0
                .saturating_add(secs.saturating_mul(MILLIS_PER_SECOND)),
        )
    }

    /// This timestamp plus `millis` milliseconds (saturating; may be negative).
    pub const fn plus_millis(self, millis: i64) -> Self {
        Timestamp(self.0.saturating_add(millis))
    }

    /// `self - earlier` in milliseconds (negative when `earlier` is later; saturating).
    pub const fn saturating_sub(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// Rounds a positive number of milliseconds up to whole seconds (0 or less gives 0).
pub fn millis_to_secs_rounded_up(millis: i64) -> u64 {
    if millis <= 0 {
        return 0;
    }
    // `millis > 0`, so the conversion cannot fail.
    u64::try_from(millis).unwrap_or(0).div_ceil(1_000)
}

/// Where "now" comes from. Passed in, never read from a global.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The real clock. The only caller of `SystemTime::now()` in Flotilla.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
            // A system clock set before 1970: count backwards.
            Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |m| -m),
        };
        Timestamp(millis)
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    millis: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            millis: Arc::new(AtomicI64::new(start.as_millis())),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let _ = self
            .millis
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(millis))
            });
    }

    /// Moves the clock forward by `secs` seconds.
    pub fn advance_secs(&self, secs: u64) {
        self.advance(Duration::from_secs(secs));
    }

    /// Sets the clock to `to` (which may be in the past).
    pub fn set(&self, to: Timestamp) {
        self.millis.store(to.as_millis(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.millis.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_serializes_as_a_plain_integer_of_milliseconds() {
        let json = serde_json::to_string(&Timestamp::from_secs(2)).unwrap();
        assert_eq!(json, "2000");
        let back: Timestamp = serde_json::from_str("1500").unwrap();
        assert_eq!(back.as_millis(), 1500);
    }

    #[test]
    fn adding_seconds_saturates_instead_of_overflowing() {
        assert_eq!(
            Timestamp::from_millis(i64::MAX - 1)
                .plus_secs(10u32)
                .as_millis(),
            i64::MAX
        );
        assert_eq!(Timestamp::from_secs(i64::MAX).as_millis(), i64::MAX);
        assert_eq!(
            Timestamp::from_millis(i64::MIN).saturating_sub(Timestamp::from_millis(1)),
            i64::MIN
        );
    }

    #[test]
    fn seconds_round_down_and_waits_round_up() {
        assert_eq!(Timestamp::from_millis(1999).as_secs(), 1);
        assert_eq!(Timestamp::from_millis(-1).as_secs(), -1);
        assert_eq!(millis_to_secs_rounded_up(1), 1);
        assert_eq!(millis_to_secs_rounded_up(1000), 1);
        assert_eq!(millis_to_secs_rounded_up(1001), 2);
        assert_eq!(millis_to_secs_rounded_up(0), 0);
        assert_eq!(millis_to_secs_rounded_up(-5), 0);
    }

    #[test]
    fn a_manual_clock_moves_only_when_told_and_its_clones_follow() {
        let clock = ManualClock::new(Timestamp::from_secs(100));
        let other = clock.clone();
        clock.advance_secs(5);
        clock.advance(Duration::from_millis(250));
        assert_eq!(other.now(), Timestamp::from_millis(105_250));
        other.set(Timestamp::from_secs(1));
        assert_eq!(clock.now(), Timestamp::from_secs(1));
    }

    #[test]
    fn the_system_clock_is_after_2020() {
        assert!(SystemClock.now() > Timestamp::from_secs(1_577_836_800));
    }
}
