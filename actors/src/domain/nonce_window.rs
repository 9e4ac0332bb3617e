//! The bounded window of nonces a webhook remembers (SPEC section 4).
//!
//! Each accepted nonce is remembered until its `expires_at` (the request's timestamp plus the
//! tolerance) **inclusive**: it is forgotten only once `now > expires_at`. Since a timestamp is
//! in window while `|now − timestamp| <= tolerance`, the last instant a request with that nonce
//! and timestamp could pass the time check is exactly `expires_at`, at which the nonce is still
//! remembered: a replay is never accepted.
//!
//! The window is bounded: when `capacity` unexpired nonces are remembered, a new one is refused
//! (the caller answers 429); an unexpired nonce is never evicted. Expired entries are pruned
//! in [`NonceWindow::remember`] by the `at` of the accepting event, so a replay of the journal
//! rebuilds exactly the same window.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;

impl From<BTreeMap<String, Timestamp>> for NonceWindow {
    fn from(by_nonce: BTreeMap<String, Timestamp>) -> Self {
        let by_expiry = by_nonce.iter().map(|(n, t)| (*t, n.clone())).collect();
        NonceWindow {
            by_nonce,
            by_expiry,
        }
    }
}

impl From<NonceWindow> for BTreeMap<String, Timestamp> {
    fn from(window: NonceWindow) -> Self {
        window.by_nonce
    }
}

/// How many unexpired nonces a webhook remembers by default.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Why a nonce cannot be accepted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It is remembered and unexpired.
    Replayed,
    /// The window holds `capacity` unexpired nonces; the first is forgotten just after
    /// `earliest_expiry` (or, with a capacity of 0, never).
    Full {
        /// The earliest `expires_at` among the remembered nonces.
        earliest_expiry: Option<Timestamp>,
    },
}

/// Nonce → expiry, with an index by expiry for pruning and for the earliest expiry. Serialized
/// (into snapshots) as the map alone; the index is rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(
    from = "BTreeMap<String, Timestamp>",
    into = "BTreeMap<String, Timestamp>"
)]
pub struct NonceWindow {
    by_nonce: BTreeMap<String, Timestamp>,
    by_expiry: BTreeSet<(Timestamp, String)>,
}

impl NonceWindow {
    /// An empty window.
    pub fn new() -> Self {
        NonceWindow::default()
    }

    /// Whether `nonce` is remembered at `now`, i.e. known with `now <= expires_at`.
    pub fn is_remembered(&self, nonce: &str, now: Timestamp) -> bool {
        self.by_nonce
            .get(nonce)
            .is_some_and(|expires_at| now <= *expires_at)
    }

    /// How many nonces are still remembered at `now`.
    pub fn live_len(&self, now: Timestamp) -> usize {
        let expired = self.by_expiry.range(..(now, String::new())).count();
        self.by_expiry.len() - expired
    }

    /// The earliest expiry among the nonces still remembered at `now`.
    pub fn earliest_expiry(&self, now: Timestamp) -> Option<Timestamp> {
        self.by_expiry
            .range((now, String::new())..)
            .next()
            .map(|(expires_at, _)| *expires_at)
    }

    /// Whether `nonce` could be accepted at `now` into a window of `capacity` nonces.
    pub fn check(&self, nonce: &str, now: Timestamp, capacity: usize) -> Result<(), Refusal> {
        if self.is_remembered(nonce, now) {
            return Err(Refusal::Replayed);
        }
        if self.live_len(now) >= capacity {
            return Err(Refusal::Full {
                earliest_expiry: self.earliest_expiry(now),
            });
        }
        Ok(())
    }

    /// Forgets the nonces that expired before `at`, then remembers `nonce` until `expires_at`.
    /// Never drops an entry with `expires_at >= at`.
    pub fn remember(&mut self, nonce: &str, expires_at: Timestamp, at: Timestamp) {
        while let Some(first) = self.by_expiry.first() {
            if first.0 >= at {
                break;
            }
            if let Some((_, forgotten)) = self.by_expiry.pop_first() {
                self.by_nonce.remove(&forgotten);
            }
        }
        if let Some(previous) = self.by_nonce.insert(nonce.to_owned(), expires_at) {
            self.by_expiry.remove(&(previous, nonce.to_owned()));
        }
        self.by_expiry.insert((expires_at, nonce.to_owned()));
    }

    /// How many entries are stored, expired or not (expired ones linger until the next accept).
    pub fn len(&self) -> usize {
        self.by_nonce.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.by_nonce.is_empty()
    }

    /// The stored entries, nonce and expiry, in nonce order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Timestamp)> {
        self.by_nonce
            .iter()
            .map(|(nonce, at)| (nonce.as_str(), *at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_secs(1_700_000_000);

    fn window_with(entries: &[(&str, i64)]) -> NonceWindow {
        let mut window = NonceWindow::new();
        for (nonce, expires_in_ms) in entries {
            window.remember(nonce, T0.plus_millis(*expires_in_ms), T0);
        }
        window
    }

    #[test]
    fn a_nonce_is_remembered_up_to_and_including_its_expiry() {
        let window = window_with(&[("n1", 1_000)]);
        assert!(window.is_remembered("n1", T0.plus_millis(1_000)));
        assert!(!window.is_remembered("n1", T0.plus_millis(1_001)));
        assert_eq!(
            window.check("n1", T0.plus_millis(1_000), 10),
            Err(Refusal::Replayed)
        );
        assert_eq!(window.check("n1", T0.plus_millis(1_001), 10), Ok(()));
    }

    #[test]
    fn a_full_window_refuses_and_names_the_earliest_expiry() {
        let window = window_with(&[("a", 3_000), ("b", 1_000)]);
        assert_eq!(
            window.check("c", T0, 2),
            Err(Refusal::Full {
                earliest_expiry: Some(T0.plus_millis(1_000))
            })
        );
        assert_eq!(window.check("c", T0.plus_millis(1_001), 2), Ok(()));
    }

    #[test]
    fn remembering_prunes_only_entries_that_expired_before_the_event() {
        let mut window = window_with(&[("a", 1_000), ("b", 2_000)]);
        window.remember("c", T0.plus_millis(5_000), T0.plus_millis(1_000));
        assert_eq!(
            window.len(),
            3,
            "a expires at 1000 and is still kept at 1000"
        );
        window.remember("d", T0.plus_millis(5_000), T0.plus_millis(1_001));
        assert_eq!(window.len(), 3);
        assert!(!window.iter().any(|(nonce, _)| nonce == "a"));
    }

    #[test]
    fn remembering_a_nonce_again_replaces_its_expiry() {
        let mut window = window_with(&[("a", 1_000)]);
        window.remember("a", T0.plus_millis(9_000), T0.plus_millis(500));
        assert_eq!(window.len(), 1);
        assert_eq!(window.earliest_expiry(T0), Some(T0.plus_millis(9_000)));
        assert_eq!(window.live_len(T0.plus_millis(9_000)), 1);
        assert_eq!(window.live_len(T0.plus_millis(9_001)), 0);
    }

    #[test]
    fn a_window_of_capacity_zero_is_always_full() {
        assert_eq!(
            NonceWindow::new().check("a", T0, 0),
            Err(Refusal::Full {
                earliest_expiry: None
            })
        );
    }
}
