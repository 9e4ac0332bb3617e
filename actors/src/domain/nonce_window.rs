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

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize, Serializer};

use crate::clock::Timestamp;

impl From<BTreeMap<String, Timestamp>> for NonceWindow {
    fn from(by_nonce: BTreeMap<String, Timestamp>) -> Self {
        let mut window = NonceWindow::default();
        for (nonce, expires_at) in by_nonce {
            let nonce: Arc<str> = nonce.into();
            window.by_nonce.insert(nonce.clone(), expires_at);
            window.by_expiry.entry(expires_at).or_default().push(nonce);
        }
        window
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

/// Nonce → expiry (hashed: a call looks its nonce up, then remembers it), with an index by
/// expiry for pruning and for the earliest expiry; both share each nonce's one allocation.
/// Serialized (into snapshots) as the map alone, in nonce order; the index is rebuilt. Two
/// windows are equal when they remember the same nonces until the same instants.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "BTreeMap<String, Timestamp>")]
pub struct NonceWindow {
    by_nonce: hashbrown::HashMap<Arc<str>, Timestamp, foldhash::fast::RandomState>,
    /// The nonces by expiry, each under the expiry `by_nonce` gives it.
    by_expiry: BTreeMap<Timestamp, Vec<Arc<str>>>,
}

impl PartialEq for NonceWindow {
    fn eq(&self, other: &Self) -> bool {
        // The index too (replay is checked against live with this), but for the order of the
        // nonces sharing an expiry, which depends on how the window was built.
        self.by_nonce == other.by_nonce && self.index() == other.index()
    }
}

impl Eq for NonceWindow {}

impl Serialize for NonceWindow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
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
        let expired: usize = self.by_expiry.range(..now).map(|(_, n)| n.len()).sum();
        debug_assert!(
            expired <= self.by_nonce.len(),
            "the index holds a nonce twice"
        );
        self.by_nonce.len().saturating_sub(expired)
    }

    /// The earliest expiry among the nonces still remembered at `now`.
    pub fn earliest_expiry(&self, now: Timestamp) -> Option<Timestamp> {
        self.by_expiry
            .range(now..)
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
        while let Some(first) = self.by_expiry.first_entry() {
            if *first.key() >= at {
                break;
            }
            for forgotten in first.remove() {
                self.by_nonce.remove(&forgotten);
            }
        }
        let nonce: Arc<str> = nonce.into();
        if let Some(previous) = self.by_nonce.insert(nonce.clone(), expires_at) {
            if let Some(nonces) = self.by_expiry.get_mut(&previous) {
                nonces.retain(|remembered| *remembered != nonce);
                if nonces.is_empty() {
                    self.by_expiry.remove(&previous);
                }
            }
        }
        self.by_expiry.entry(expires_at).or_default().push(nonce);
    }

    /// The expiry index, each expiry's nonces sorted.
    fn index(&self) -> Vec<(Timestamp, Vec<&str>)> {
        fn sorted(nonces: &[Arc<str>]) -> Vec<&str> {
            let mut nonces: Vec<&str> = nonces.iter().map(|nonce| &**nonce).collect();
            nonces.sort_unstable();
            nonces
        }
        self.by_expiry
            .iter()
            .map(|(expires_at, nonces)| (*expires_at, sorted(nonces)))
            .collect()
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
        let mut entries: Vec<(&str, Timestamp)> = self
            .by_nonce
            .iter()
            .map(|(nonce, at)| (&**nonce, *at))
            .collect();
        entries.sort_unstable();
        entries.into_iter()
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
    fn a_window_serializes_in_nonce_order_and_reads_back_equal() {
        let mut window = window_with(&[("c", 3_000), ("a", 1_000), ("b", 1_000)]);
        window.remember("d", T0.plus_millis(1_000), T0);
        let json = serde_json::to_string(&window).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"a":{},"b":{},"c":{},"d":{}}}"#,
                T0.plus_millis(1_000).as_millis(),
                T0.plus_millis(1_000).as_millis(),
                T0.plus_millis(3_000).as_millis(),
                T0.plus_millis(1_000).as_millis()
            )
        );
        let read: NonceWindow = serde_json::from_str(&json).unwrap();
        assert_eq!(read, window);
        let mut astray = read.clone();
        astray.by_expiry.remove(&T0.plus_millis(3_000));
        assert_ne!(
            astray, window,
            "a window whose index lost a nonce is not the same"
        );
        // The index came back too: the three sharing an expiry go together, the last stays.
        assert_eq!(read.live_len(T0.plus_millis(1_001)), 1);
        assert_eq!(read.earliest_expiry(T0), Some(T0.plus_millis(1_000)));
        let mut pruned = read.clone();
        pruned.remember("e", T0.plus_millis(9_000), T0.plus_millis(1_001));
        assert_eq!(
            pruned.iter().map(|(nonce, _)| nonce).collect::<Vec<_>>(),
            ["c", "e"]
        );
    }

    #[test]
    fn a_nonce_remembered_again_under_the_same_expiry_is_one_entry() {
        let mut window = window_with(&[("a", 1_000), ("b", 1_000)]);
        window.remember("a", T0.plus_millis(1_000), T0);
        assert_eq!(window.len(), 2);
        assert_eq!(window.live_len(T0), 2);
        assert_eq!(window.live_len(T0.plus_millis(1_001)), 0);
        window.remember("c", T0.plus_millis(5_000), T0.plus_millis(1_001));
        assert_eq!(window.len(), 1, "both expired entries pruned, once each");
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
