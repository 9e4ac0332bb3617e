//! Which groups this node acts for (SPEC 9): groups fall into a fixed number of shards, and a
//! node acts for a shard's groups (converges them, evaluates their alarms and policies, runs
//! their schedules) only while it holds the shard's lease in the journal's database.
//!
//! This module holds the rules, as pure functions of the injected clock: which shard a group is
//! in, what a node asks for at each lease tick ([`plan`]), and until when a lease it was granted
//! lets it act ([`Held`]). The service's lease loop (`service`) asks the journal for the leases
//! and keeps the answers in an [`Ownership`].
//!
//! The database is the only judge of expiry, by its own clock; a node never compares its clock
//! with the database's. It counts a grant's remaining time from the instant *before* it asked,
//! less a margin, so that it stops acting before the database can let another node in, however
//! late the answer came back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::RwLock;
use std::time::Duration;

use flotilla_actors::clock::Timestamp;
use flotilla_journal::{Fence, Lease};

/// Shards the groups fall into. Fixed: changing it moves groups between shards.
pub const SHARDS: u32 = 64;

/// How long a lease is granted for.
pub const LEASE_TTL: Duration = Duration::from_secs(5);

/// How often a node renews its leases and looks for free ones: a fifth of [`LEASE_TTL`], so
/// that several renewals can fail before a lease is lost, and a dead node's shards are taken
/// over within about the TTL and two rounds.
pub const LEASE_TICK: Duration = Duration::from_secs(1);

/// How long before the database's expiry a node stops acting for a shard, against a pause (a
/// garbage-collecting neighbour, a stalled disk) between its check and its act.
pub const MARGIN: Duration = Duration::from_secs(1);

/// The shard of group `id`: the first four bytes of its blake3 hash, modulo [`SHARDS`].
pub fn shard_of(id: &str) -> u32 {
    let hash = blake3::hash(id.as_bytes());
    let bytes = hash.as_bytes();
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) % SHARDS
}

/// The lease's name for `shard`.
pub fn lease_name(shard: u32) -> String {
    format!("shard-{shard:02}")
}

/// The name of node `id`'s presence lease: every node renews its own at each lease round, so
/// that the others count it among the live nodes even while it holds no shard.
pub fn presence_name(id: &str) -> String {
    format!("node-{id}")
}

/// The node a presence lease's name names, if it is one.
pub fn node_of_presence(name: &str) -> Option<&str> {
    name.strip_prefix("node-")
}

/// The shard a lease's name names, if it is a shard's.
pub fn shard_of_lease(name: &str) -> Option<u32> {
    let shard: u32 = name.strip_prefix("shard-")?.parse().ok()?;
    (shard < SHARDS).then_some(shard)
}

/// A shard this node holds: its fencing token, and until when (this node's clock) it may act.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// The lease's fencing token.
    pub token: u64,
    /// This node acts for the shard strictly before this instant.
    pub until: Timestamp,
}

impl Held {
    /// What a grant lets this node do, given that it asked at `asked`: act until `asked` plus
    /// the grant's remaining time, less [`MARGIN`].
    pub fn granted(lease: &Lease, asked: Timestamp) -> Held {
        let remaining = lease.remaining.saturating_sub(MARGIN);
        Held {
            token: lease.token,
            until: asked.plus_millis(i64::try_from(remaining.as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// Whether this node may act for the shard at `now`.
    pub fn valid_at(&self, now: Timestamp) -> bool {
        now < self.until
    }
}

/// What a node asks the database for at a lease tick.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Shards it holds and renews.
    pub renew: Vec<u32>,
    /// Free shards it asks for.
    pub acquire: Vec<u32>,
    /// Shards it lets go of, for a node with fewer than its share.
    pub release: Vec<u32>,
    /// Shards whose lease ran out on this node's clock: it no longer acts for them, and asks
    /// for them again (with a new token) only once the database says they are free.
    pub forget: Vec<u32>,
}

/// What node `me` asks for at `now`, holding `held`, with `live` the holder of each shard
/// whose lease has not expired and `nodes` the nodes whose presence lease has not (as the
/// database said at the last tick, this node's included).
///
/// - It renews every shard it still holds.
/// - Its share is the shards divided among the live nodes (itself included), rounded up.
/// - Below its share, it asks for free shards, starting from a place of its own in the ring so
///   that nodes starting together do not all ask for the same ones.
/// - Above its share while another live node holds fewer than its share less one, it lets go
///   of the excess, its highest shards first, so a node that joins gets work.
pub fn plan(
    me: &str,
    now: Timestamp,
    held: &BTreeMap<u32, Held>,
    live: &BTreeMap<u32, String>,
    nodes: &BTreeSet<String>,
) -> Plan {
    let holding: Vec<u32> = held
        .iter()
        .filter(|(_, h)| h.valid_at(now))
        .map(|(shard, _)| *shard)
        .collect();
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    for holder in live.values() {
        *counts.entry(holder.as_str()).or_default() += 1;
    }
    let nodes: BTreeSet<&str> = nodes
        .iter()
        .map(String::as_str)
        .chain(counts.keys().copied())
        .chain([me])
        .collect();
    let share = SHARDS.div_ceil(nodes.len() as u32);
    let mine = holding.len() as u32;
    let mut plan = Plan {
        renew: holding.clone(),
        forget: held
            .iter()
            .filter(|(_, h)| !h.valid_at(now))
            .map(|(shard, _)| *shard)
            .collect(),
        ..Plan::default()
    };
    if mine < share {
        let start = shard_of(me);
        plan.acquire = (0..SHARDS)
            .map(|i| (start + i) % SHARDS)
            .filter(|shard| !live.contains_key(shard) && !held.contains_key(shard))
            .take((share - mine) as usize)
            .collect();
    } else if mine > share {
        let starved = nodes
            .iter()
            .filter(|node| **node != me)
            .any(|node| counts.get(node).copied().unwrap_or(0) + 1 < share);
        if starved {
            plan.release = holding
                .iter()
                .rev()
                .take((mine - share) as usize)
                .copied()
                .collect();
            plan.renew.retain(|shard| !plan.release.contains(shard));
        }
    }
    plan
}

/// The shards this node acts for, as the lease loop last heard from the database. On sled,
/// where one process has the journal, it acts for every group.
#[derive(Debug)]
pub struct Ownership {
    /// This node's id (`--node-id`).
    node: String,
    /// `None` on sled: every shard, always.
    held: Option<RwLock<BTreeMap<u32, Held>>>,
    /// Each shard's holder and fencing token as the lease loop last read them, and until when
    /// (this node's clock) that lease runs (a shared database).
    holders: RwLock<BTreeMap<u32, Holder>>,
    /// Held shards being let go of, since when: the converger starts no pass for them, while
    /// passes under way end under their lease (see [`Ownership::drain`]).
    draining: RwLock<BTreeMap<u32, Timestamp>>,
}

/// The longest a shard drains before it is let go of anyway: a pass stuck on a slow provider
/// must not keep a node that joined short of work, nor the shard's groups without a converger.
/// Its launches are then resolved by the next owner, as a restart resolves them.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

impl Ownership {
    /// A node alone with its journal (sled): it acts for every group.
    pub fn sole(node: impl Into<String>) -> Ownership {
        Ownership {
            node: node.into(),
            held: None,
            holders: RwLock::default(),
            draining: RwLock::default(),
        }
    }

    /// A node among others on a shared database: it acts for no group until it holds leases.
    pub fn shared(node: impl Into<String>) -> Ownership {
        Ownership {
            node: node.into(),
            held: Some(RwLock::new(BTreeMap::new())),
            holders: RwLock::default(),
            draining: RwLock::default(),
        }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether leases decide what this node acts for (a shared database).
    pub fn is_shared(&self) -> bool {
        self.held.is_some()
    }

    /// The fence for acting on group `id` at `now`, if this node may: `None` when another node
    /// has its shard, or this node's lease on it has run out. A draining shard still has its
    /// fence, so that work under way ends under it.
    pub fn fence(&self, id: &str, now: Timestamp) -> Option<Option<Fence>> {
        let Some(held) = &self.held else {
            return Some(None);
        };
        let shard = shard_of(id);
        let held = *read(held).get(&shard)?;
        held.valid_at(now).then(|| {
            Some(Fence {
                lease: lease_name(shard),
                holder: self.node.clone(),
                token: held.token,
            })
        })
    }

    /// The node that owns group `id` at `now`, with its lease's fencing token: this node under
    /// its own lease, else another node whose lease the lease loop last read and has not run
    /// out since (alone on sled: this node, 1). `None` while the shard is between holders, or
    /// the database has not answered for longer than a lease.
    pub fn owner(&self, id: &str, now: Timestamp) -> Option<(String, u64)> {
        match self.fence(id, now) {
            Some(Some(fence)) => Some((fence.holder, fence.token)),
            Some(None) => Some((self.node.clone(), 1)),
            None => read(&self.holders)
                .get(&shard_of(id))
                .filter(|holder| holder.node != self.node && now < holder.until)
                .map(|holder| (holder.node.clone(), holder.token)),
        }
    }

    /// Takes in the shards' live leases as the database answered a read asked at `asked`.
    pub fn seen(&self, leases: &[(u32, Lease)], asked: Timestamp) {
        let holders = leases
            .iter()
            .map(|(shard, lease)| {
                let held = Held::granted(lease, asked);
                let holder = Holder {
                    node: lease.holder.clone(),
                    token: lease.token,
                    until: held.until,
                };
                (*shard, holder)
            })
            .collect();
        *self
            .holders
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = holders;
    }

    /// Whether this node does group `id`'s owner's work at `now` (evaluates its alarms, runs
    /// its schedules and target tracking): it holds the shard's lease.
    pub fn acts_for(&self, id: &str, now: Timestamp) -> bool {
        self.fence(id, now).is_some()
    }

    /// Whether this node starts a converger pass for group `id` at `now`: it holds the shard's
    /// lease and is not letting go of it.
    pub fn converges(&self, id: &str, now: Timestamp) -> bool {
        if self.held.is_none() {
            return true;
        }
        self.acts_for(id, now) && !read(&self.draining).contains_key(&shard_of(id))
    }

    /// Marks `shards` (held, and to be let go of) as draining at `now`, and no other: the
    /// converger starts no pass for them, and the lease loop renews each until its passes under
    /// way have ended, so that a launch under way records its servers under the lease it was
    /// made under rather than being fenced off. Answers those of them draining for
    /// [`DRAIN_LIMIT`] or more, to be let go of anyway.
    pub fn drain(&self, shards: &BTreeSet<u32>, now: Timestamp) -> BTreeSet<u32> {
        let mut draining = self
            .draining
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        draining.retain(|shard, _| shards.contains(shard));
        let limit = i64::try_from(DRAIN_LIMIT.as_millis()).unwrap_or(i64::MAX);
        shards
            .iter()
            .filter(|shard| {
                let since = *draining.entry(**shard).or_insert(now);
                now.as_millis() - since.as_millis() >= limit
            })
            .copied()
            .collect()
    }

    /// The shards held, with their leases.
    pub fn held(&self) -> BTreeMap<u32, Held> {
        match &self.held {
            Some(held) => read(held).clone(),
            None => (0..SHARDS)
                .map(|shard| {
                    let always = Held {
                        token: 1,
                        until: Timestamp::from_millis(i64::MAX),
                    };
                    (shard, always)
                })
                .collect(),
        }
    }

    /// How many shards this node acts for at `now`.
    pub fn shards_at(&self, now: Timestamp) -> usize {
        self.held().values().filter(|h| h.valid_at(now)).count()
    }

    /// Takes in one lease tick's outcome: `granted` shards now held (renewed or acquired),
    /// `lost` shards refused or let go.
    pub fn update(&self, granted: &[(u32, Held)], lost: &[u32]) {
        let Some(held) = &self.held else {
            return;
        };
        let mut held = held
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (shard, lease) in granted {
            held.insert(*shard, *lease);
        }
        for shard in lost {
            held.remove(shard);
        }
    }
}

/// A shard's holder as the lease loop last read it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Holder {
    node: String,
    token: u64,
    /// Until when, on this node's clock, its lease surely runs (as [`Held::until`]).
    until: Timestamp,
}

/// What the lease loop did, for `/metrics`.
#[derive(Debug, Default)]
pub struct LeaseCounts {
    /// Leases renewed.
    pub renewals: AtomicU64,
    /// Shards acquired (new to this node).
    pub acquisitions: AtomicU64,
    /// Of those, shards taken over from another holder, or after an expiry (token above 1).
    pub takeovers: AtomicU64,
    /// Shards this node stopped acting for: refused a renewal, run out, or let go.
    pub losses: AtomicU64,
    /// Commands of a group's owner (a launch, a provider's report, an alarm's action) refused
    /// here because this node did not hold the group's lease when it came to append them.
    pub refused: AtomicU64,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_secs(1_795_564_800);

    fn lease(token: u64, remaining_ms: u64) -> Lease {
        Lease {
            name: lease_name(3),
            holder: "node-a".into(),
            token,
            remaining: Duration::from_millis(remaining_ms),
        }
    }

    fn holding(shards: impl IntoIterator<Item = u32>, until: Timestamp) -> BTreeMap<u32, Held> {
        shards
            .into_iter()
            .map(|shard| (shard, Held { token: 1, until }))
            .collect()
    }

    fn nodes(of: &[&str]) -> BTreeSet<String> {
        of.iter().map(|n| (*n).to_owned()).collect()
    }

    fn live(of: &[(&str, std::ops::Range<u32>)]) -> BTreeMap<u32, String> {
        of.iter()
            .flat_map(|(node, shards)| shards.clone().map(|s| (s, (*node).to_owned())))
            .collect()
    }

    #[test]
    fn a_grant_counts_from_before_the_ask_less_the_margin() {
        // Given a node that asked at T0 and heard back, late, that 6 s were left...
        let held = Held::granted(&lease(4, 6_000), T0);
        // ...then it acts until T0 + 5 s, whenever the answer arrived, and not at that instant.
        assert_eq!(held.token, 4);
        assert!(held.valid_at(T0.plus_millis(4_999)));
        assert!(!held.valid_at(T0.plus_millis(5_000)));
        // A grant with less left than the margin lets it do nothing.
        assert!(!Held::granted(&lease(4, 900), T0).valid_at(T0));
    }

    #[test]
    fn a_lone_node_asks_for_every_free_shard_and_renews_what_it_holds() {
        let until = T0.plus_secs(5u64);
        // Given node-a holds shards 0..10 and nobody else is alive...
        let asked = plan(
            "node-a",
            T0,
            &holding(0..10, until),
            &live(&[("node-a", 0..10)]),
            &nodes(&["node-a"]),
        );
        // ...it renews them and asks for the 54 others.
        assert_eq!(asked.renew, (0..10).collect::<Vec<_>>());
        assert_eq!(asked.acquire.len(), 54);
        assert!(asked.acquire.iter().all(|s| *s >= 10));
        assert!(asked.release.is_empty());
    }

    #[test]
    fn a_node_asks_for_no_more_than_its_share_and_never_for_a_live_lease() {
        // Given node-b holds 0..40 and node-a nothing...
        let asked = plan(
            "node-a",
            T0,
            &BTreeMap::new(),
            &live(&[("node-b", 0..40)]),
            &nodes(&["node-b"]),
        );
        // ...node-a's share of 64 over two nodes is 32, and only 24 are free.
        assert_eq!(asked.acquire.len(), 24);
        assert!(asked.acquire.iter().all(|s| *s >= 40));
        // With three nodes alive its share is 22.
        let three = live(&[("node-b", 0..20), ("node-c", 20..40)]);
        assert_eq!(
            plan(
                "node-a",
                T0,
                &BTreeMap::new(),
                &three,
                &nodes(&["node-b", "node-c"])
            )
            .acquire
            .len(),
            22
        );
    }

    #[test]
    fn a_node_over_its_share_lets_go_only_for_a_node_short_of_work() {
        let until = T0.plus_secs(5u64);
        // Given node-a holds all 64 and node-b has just come up, holding nothing...
        let all = live(&[("node-a", 0..64)]);
        let both = nodes(&["node-a", "node-b"]);
        let over = plan("node-a", T0, &holding(0..64, until), &all, &both);
        // ...node-a lets go of its 32 highest (its share is 32) and renews the rest.
        assert_eq!(over.release, (32..64).rev().collect::<Vec<_>>());
        assert_eq!(over.renew, (0..32).collect::<Vec<_>>());
        // Given a balanced split (32 and 32), nothing moves.
        let even = live(&[("node-a", 0..32), ("node-b", 32..64)]);
        let steady = plan("node-a", T0, &holding(0..32, until), &even, &both);
        assert!(steady.release.is_empty() && steady.acquire.is_empty());
        // Given 33 and 31 (within one of the share), nothing moves either: no flapping.
        let near = live(&[("node-a", 0..33), ("node-b", 33..64)]);
        assert!(plan("node-a", T0, &holding(0..33, until), &near, &both)
            .release
            .is_empty());
    }

    #[test]
    fn a_lease_run_out_on_this_nodes_clock_is_neither_renewed_nor_acted_on() {
        let ownership = Ownership::shared("node-a");
        let shard = shard_of("grp_1");
        let held = Held {
            token: 7,
            until: T0.plus_secs(5u64),
        };
        ownership.update(&[(shard, held)], &[]);
        // Given the lease was granted until T0 + 5 s: the node acts before...
        let fence = ownership.fence("grp_1", T0).unwrap().unwrap();
        assert_eq!(
            (fence.lease.as_str(), fence.token),
            (&*lease_name(shard), 7)
        );
        assert_eq!(fence.holder, "node-a");
        // ...and not from then on, nor does it renew it (it must be acquired again).
        let later = T0.plus_secs(5u64);
        assert!(!ownership.acts_for("grp_1", later));
        let asked = plan(
            "node-a",
            later,
            &ownership.held(),
            &BTreeMap::from([(shard, "node-a".to_owned())]),
            &nodes(&["node-a"]),
        );
        assert!(!asked.renew.contains(&shard));
        assert_eq!(asked.forget, [shard]);
        assert!(
            !asked.acquire.contains(&shard),
            "while the database says it is live"
        );
        // A group of a shard it never held is not its own.
        let other = (0..)
            .map(|n| format!("grp_{n}"))
            .find(|g| shard_of(g) != shard)
            .unwrap();
        assert!(!ownership.acts_for(&other, T0));
        // Lost leases are forgotten.
        ownership.update(&[], &[shard]);
        assert_eq!(ownership.shards_at(T0), 0);
    }

    #[test]
    fn a_draining_shard_starts_no_new_work_but_ends_its_work_under_its_lease() {
        let ownership = Ownership::shared("node-a");
        let shard = shard_of("grp_1");
        let held = Held {
            token: 3,
            until: T0.plus_secs(5u64),
        };
        ownership.update(&[(shard, held)], &[]);
        // Given the shard is being let go of while a launch for grp_1 is under way...
        let draining = BTreeSet::from([shard]);
        assert!(ownership.drain(&draining, T0).is_empty());
        // ...no converger pass starts for it, while the launch's report still carries its
        // fence, and its alarms and schedules go on (short appends, under the same fence).
        assert!(!ownership.converges("grp_1", T0));
        assert!(ownership.acts_for("grp_1", T0));
        assert_eq!(ownership.fence("grp_1", T0).unwrap().unwrap().token, 3);
        assert_eq!(ownership.shards_at(T0), 1, "still held");
        // Once the lease runs out on this node's clock, not even that.
        assert_eq!(ownership.fence("grp_1", T0.plus_secs(5u64)), None);
        // A drain lasts DRAIN_LIMIT at most, counted from when it began.
        let almost = T0.plus_millis(DRAIN_LIMIT.as_millis() as i64 - 1);
        assert!(ownership.drain(&draining, almost).is_empty());
        let limit = T0.plus_millis(DRAIN_LIMIT.as_millis() as i64);
        assert_eq!(ownership.drain(&draining, limit), draining);
        // A shard that no longer drains (the plan kept it) is converged again, and a drain
        // that begins again starts its count again.
        assert!(ownership.drain(&BTreeSet::new(), limit).is_empty());
        assert!(ownership.converges("grp_1", T0));
        assert!(ownership.drain(&draining, limit).is_empty());
    }

    #[test]
    fn a_group_shows_the_holder_read_last_while_its_lease_runs_but_never_a_lease_let_go_here() {
        let ownership = Ownership::shared("node-a");
        let shard = shard_of("grp_1");
        let read_at = |holder: &str, token: u64| {
            let lease = Lease {
                holder: holder.into(),
                token,
                ..lease(token, 5_000)
            };
            ownership.seen(&[(shard, lease)], T0);
        };
        // Given the database said node-b holds the shard with token 4, for 5 s...
        read_at("node-b", 4);
        // ...the group shows node-b while that lease surely runs (less the margin), not after.
        assert_eq!(ownership.owner("grp_1", T0), Some(("node-b".into(), 4)));
        assert_eq!(
            ownership.owner("grp_1", T0.plus_secs(3u64)),
            Some(("node-b".into(), 4))
        );
        assert_eq!(ownership.owner("grp_1", T0.plus_secs(4u64)), None);
        // This node's own lease answers for itself, with its own token.
        let held = Held {
            token: 9,
            until: T0.plus_secs(5u64),
        };
        ownership.update(&[(shard, held)], &[]);
        assert_eq!(ownership.owner("grp_1", T0), Some(("node-a".into(), 9)));
        // Once it lets go, what it read of itself earlier is not shown: the next holder is not
        // known yet.
        read_at("node-a", 9);
        ownership.update(&[], &[shard]);
        assert_eq!(ownership.owner("grp_1", T0), None);
    }

    #[test]
    fn alone_on_sled_a_node_acts_for_every_group_without_a_fence() {
        let ownership = Ownership::sole("node-a");
        assert_eq!(ownership.fence("grp_1", T0), Some(None));
        assert_eq!(ownership.shards_at(T0), SHARDS as usize);
    }

    #[test]
    fn shards_spread_groups_and_name_their_leases() {
        let mut counts = [0u32; SHARDS as usize];
        for n in 0..6_400 {
            counts[shard_of(&format!("grp_{n:032x}")) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (50..=150).contains(c)), "{counts:?}");
        assert_eq!(lease_name(7), "shard-07");
        assert_eq!(presence_name("host:8080"), "node-host:8080");
        assert_eq!(node_of_presence("node-host:8080"), Some("host:8080"));
        assert_eq!(shard_of_lease("node-host:8080"), None);
        assert_eq!(shard_of_lease("shard-07"), Some(7));
        assert_eq!(shard_of_lease("shard-64"), None);
        assert_eq!(shard_of_lease("other"), None);
    }
}
