//! A group's servers as its events record them: each a slot with a state, the provider's handle
//! and a count of failures; the termination order of a scale-in; the backoff between launch
//! attempts; and [`plan`], which tells a converger what a group needs next.
//!
//! A server id names a slot. A failed slot is retried under the same id, after a backoff that
//! doubles with each failure of that slot (1 s, 2 s, 4 s ... at most [`MAX_BACKOFF_SECONDS`]);
//! its failures are never reset, so a command that crashes as soon as it starts cannot loop.
//!
//! The group's decisions about its slots live here too: which launches it allows
//! ([`LaunchRequest`]) and what a provider's reports ([`ServerReport`]) record.

use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::group::{Group, GroupEvent};
use crate::clock::Timestamp;

/// The longest wait before a failed slot is launched again.
pub const MAX_BACKOFF_SECONDS: u64 = 60;

/// The longest wait before a server whose deletion keeps failing is asked to be deleted again
/// (1 s doubling up to it): each failure is an event, so a provider refusing the deletes of
/// 10,000 servers costs the journal about 17 a second, not 167.
pub const MAX_DELETE_BACKOFF_SECONDS: u64 = 600;

/// A server's state (SPEC 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// Asked of the provider; not yet running.
    Pending,
    /// Running.
    Active,
    /// Its launch failed or it exited; waiting for its backoff to be launched again.
    Failed,
    /// Being deleted by the provider.
    Deleting,
}

/// A provider's handle for a server (`null` until launched), kept as its JSON text: it is read
/// only when the provider is asked about its server, while a group holds one for each of up to
/// 10,000 servers.
pub type Handle = super::json::JsonText;

/// One server of a group. A group holds up to 10,000 of these, in a persistent map whose nodes
/// hold their entries inline, so it stays small: its id is one text shared with the map's key,
/// what is rarely there is boxed, and the hash of its metrics token is not kept (the index has
/// it, from the launch's event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    /// Its id (`srv_...`), also its slot: the same text as its key in [`Servers`].
    pub id: Arc<str>,
    /// Its state.
    pub state: ServerState,
    /// The provider's handle (e.g. `{"pid": 4242, "start_time": 123}`); `null` until launched.
    #[serde(default)]
    pub provider: Handle,
    /// When its latest launch was requested.
    pub launched_at: Timestamp,
    /// When the provider's answer to its latest launch, a handle, was recorded (after the pass's
    /// creates, so a little after the create itself); none before (and in snapshots older than
    /// this field, where [`Self::launched_at`] stands in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made_at: Option<Timestamp>,
    /// How many times this slot failed.
    #[serde(default)]
    pub failures: u32,
    /// Why it failed last (its launch, or its deletion), and when.
    #[serde(default)]
    pub last_failure: Option<Box<(String, Timestamp)>>,
    /// How many times its deletion failed (of a server being deleted, or of a failed one's
    /// remains before its relaunch): a server the provider cannot delete is asked again after a
    /// backoff (1 s doubling, at most [`MAX_DELETE_BACKOFF_SECONDS`]), not at every pass.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delete_failures: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Server {
    /// Whether it counts toward the group's capacity: every slot not being deleted.
    pub fn is_slot(&self) -> bool {
        self.state != ServerState::Deleting
    }

    /// When a server being deleted may be asked to be deleted again (`None`: at once).
    pub fn delete_at(&self) -> Option<Timestamp> {
        match (&self.state, &self.last_failure) {
            (ServerState::Deleting, Some(failure)) if self.delete_failures > 0 => Some(
                failure
                    .1
                    .plus_secs(delete_backoff_seconds(self.delete_failures)),
            ),
            _ => None,
        }
    }

    /// When a failed slot may be launched again: after its launches' backoff, or, when the
    /// deletion of its remains failed last, that of its deletions.
    pub fn retry_at(&self) -> Option<Timestamp> {
        match (&self.state, &self.last_failure) {
            (ServerState::Failed, Some(failure)) => {
                let backoff = backoff_seconds(self.failures)
                    .max(delete_backoff_seconds(self.delete_failures));
                Some(failure.1.plus_secs(backoff))
            }
            _ => None,
        }
    }
}

/// The wait after the `failures`-th failed deletion of a server: 1 s doubling, at most
/// [`MAX_DELETE_BACKOFF_SECONDS`].
fn delete_backoff_seconds(failures: u32) -> u64 {
    doubling(failures, MAX_DELETE_BACKOFF_SECONDS)
}

/// 0 for no failure, then 1 s doubling with each, at most `most`.
fn doubling(failures: u32, most: u64) -> u64 {
    match failures {
        0 => 0,
        n => 1u64.checked_shl(n - 1).unwrap_or(u64::MAX).min(most),
    }
}

/// The wait after the `failures`-th failure of a slot: 1 s doubling, at most a minute.
pub fn backoff_seconds(failures: u32) -> u64 {
    doubling(failures, MAX_BACKOFF_SECONDS)
}

/// The termination order of a scale-in, first removed first: failed slots (they serve
/// nothing), then pending before active, then the oldest launch first, then by id.
pub fn termination_order<'a>(servers: impl IntoIterator<Item = &'a Server>) -> Vec<&'a Server> {
    let rank = |s: &Server| match s.state {
        ServerState::Failed => 0,
        ServerState::Pending => 1,
        ServerState::Active => 2,
        ServerState::Deleting => 3,
    };
    let mut slots: Vec<&Server> = servers.into_iter().filter(|s| s.is_slot()).collect();
    slots.sort_by(|a, b| (rank(a), a.launched_at, &a.id).cmp(&(rank(b), b.launched_at, &b.id)));
    slots
}

/// The first `n` slots of `servers`' [`termination_order`], without ordering them all: the
/// slots not active (few) in order, then, if they are not enough, the oldest active ones,
/// picked in one walk over the actives and only those ordered. A scale-in by `k` from a group
/// of `n` slots then costs O(n + k log k) rather than O(n log n).
pub fn first_to_terminate(servers: &Servers, n: usize) -> Vec<&Server> {
    let mut first = termination_order(servers.unsettled());
    if first.len() >= n {
        first.truncate(n);
        return first;
    }
    let wanted = n - first.len();
    let older = |a: &&Server, b: &&Server| (a.launched_at, &a.id).cmp(&(b.launched_at, &b.id));
    let mut active: Vec<&Server> = servers
        .values()
        .filter(|s| s.state == ServerState::Active)
        .collect();
    if wanted < active.len() {
        active.select_nth_unstable_by(wanted, older);
        active.truncate(wanted);
    }
    active.sort_by(older);
    first.extend(active);
    first
}

/// What a group needs next, as [`plan`] sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Slots to add (new server ids are the converger's to mint).
    pub launch_new: u32,
    /// Failed slots whose backoff ran out: launch them again.
    pub relaunch: Vec<String>,
    /// Pending slots with no handle: their launch was asked but never recorded (a restart came
    /// between); launch them again (the provider cleans up what it may have started).
    pub resume: Vec<String>,
    /// Slots to remove, in termination order.
    pub remove: Vec<String>,
    /// Servers being deleted: (id, handle) for the provider.
    pub delete: Vec<(String, Value)>,
    /// Pending or active servers with a handle, to ask the provider about: every pending one,
    /// and the active ones the [`Sweep`] reaches.
    pub watch: Vec<(String, ServerState, Value)>,
    /// The last active server watched, where the next pass's sweep goes on from; none when
    /// this pass's round reached the last active server.
    pub swept_to: Option<String>,
    /// Pending servers with a handle that did not run within the launch's start timeout, with
    /// the reason they fail for: (id, handle, reason). Each is asked about once more: running,
    /// it is active; exited, it fails as exited; any other answer fails it with the reason (its
    /// remains are deleted before its slot launches again); a provider that cannot be reached
    /// decides nothing, until twice the timeout.
    pub expiring: Vec<(String, Value, String)>,
    /// Pending servers with a handle past twice their start timeout, which the provider could
    /// not be asked about since the first: they fail without asking (a status call that fails
    /// for one server, always, would hold its slot for ever).
    pub timed_out: Vec<ServerReport>,
}

/// Which active servers a pass asks the provider about: at most `budget`, the first after
/// `after` in id order, up to the last (a round of the sweep; the next begins from the first
/// id, when the converger says so: see `status_interval_seconds`). A pending server is
/// watched at every pass (it is changing); an active one is only checked to see whether it
/// died, so a large group spreads those checks over several passes, and a pass costs the same
/// whatever the group's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// The id the sweep goes on after (empty: from the first).
    pub after: String,
    /// The most active servers one pass checks.
    pub budget: usize,
}

impl Sweep {
    /// Every active server, at every pass.
    pub const ALL: Sweep = Sweep {
        after: String::new(),
        budget: usize::MAX,
    };
}

/// A group's servers by id: a persistent map, so that a group's state clones in constant time;
/// and beside it what a converger's pass reads at every tick, kept up to date by every change:
/// how many servers are in each state, and the ids of those not active. A pass then reads the
/// servers that are changing and its sweep's share of the others, so a quiet group of 10,000
/// costs it what one of 256 does (issue 16; `cargo bench --bench converger`).
///
/// Reads go to the map (through `Deref`); changes go through [`Servers::insert`],
/// [`Servers::update`] and [`Servers::remove`], which keep the rest. Stored as the map alone:
/// the rest is rebuilt when it is read.
#[derive(Debug, Clone, Default)]
pub struct Servers {
    map: imbl::OrdMap<Arc<str>, Server>,
    /// The ids of the servers not active (pending, failed or being deleted), each the same text
    /// as its key.
    unsettled: imbl::OrdSet<Arc<str>>,
    /// How many servers are in each state, in [`ServerState`]'s order.
    counts: [u32; 4],
}

impl Servers {
    /// No servers.
    pub fn new() -> Servers {
        Servers::default()
    }

    /// How many servers are in `state`.
    pub fn count(&self, state: ServerState) -> u32 {
        self.counts[state as usize]
    }

    /// How many slots there are: servers not being deleted (see [`Server::is_slot`]).
    pub fn slots(&self) -> u32 {
        self.map.len() as u32 - self.count(ServerState::Deleting)
    }

    /// The servers not active, in id order.
    pub fn unsettled(&self) -> impl Iterator<Item = &Server> {
        self.unsettled.iter().filter_map(|id| self.map.get(id))
    }

    /// Adds `server` under its id, answering the server it replaced.
    pub fn insert(&mut self, server: Server) -> Option<Server> {
        let (id, state) = (server.id.clone(), server.state);
        let replaced = self.map.insert(id.clone(), server);
        if let Some(old) = &replaced {
            self.forget(&old.id, old.state);
        }
        self.remember(id, state);
        replaced
    }

    /// Changes server `id` with `change` (which must leave its id as it is); false if there is
    /// no such server.
    pub fn update(&mut self, id: &str, change: impl FnOnce(&mut Server)) -> bool {
        let Some(server) = self.map.get_mut(id) else {
            return false;
        };
        let (before, id) = (server.state, server.id.clone());
        change(server);
        debug_assert_eq!(server.id, id, "a change must not change a server's id");
        let after = server.state;
        if before != after {
            self.forget(&id, before);
            self.remember(id, after);
        }
        true
    }

    /// Removes server `id`, answering it.
    pub fn remove(&mut self, id: &str) -> Option<Server> {
        let removed = self.map.remove(id)?;
        self.forget(&removed.id, removed.state);
        if self.map.is_empty() {
            // imbl keeps an emptied map's last node allocated.
            self.map = imbl::OrdMap::new();
        }
        Some(removed)
    }

    fn remember(&mut self, id: Arc<str>, state: ServerState) {
        self.counts[state as usize] += 1;
        if state != ServerState::Active {
            self.unsettled.insert(id);
        }
    }

    fn forget(&mut self, id: &str, state: ServerState) {
        self.counts[state as usize] -= 1;
        if state != ServerState::Active {
            self.unsettled.remove(id);
            if self.unsettled.is_empty() {
                // imbl keeps an emptied set's last node allocated: about 300 bytes a group,
                // held by every group whose servers all became active.
                self.unsettled = imbl::OrdSet::new();
            }
        }
    }
}

impl std::ops::Deref for Servers {
    type Target = imbl::OrdMap<Arc<str>, Server>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl PartialEq for Servers {
    /// Equal when their servers are (the rest follows from them).
    fn eq(&self, other: &Servers) -> bool {
        self.map == other.map
    }
}

impl From<imbl::OrdMap<Arc<str>, Server>> for Servers {
    fn from(map: imbl::OrdMap<Arc<str>, Server>) -> Servers {
        let mut servers = Servers::default();
        for (id, server) in &map {
            servers.remember(id.clone(), server.state);
        }
        servers.map = map;
        servers
    }
}

impl FromIterator<Server> for Servers {
    fn from_iter<I: IntoIterator<Item = Server>>(servers: I) -> Servers {
        Servers::from(
            servers
                .into_iter()
                .map(|server| (server.id.clone(), server))
                .collect::<imbl::OrdMap<_, _>>(),
        )
    }
}

impl Serialize for Servers {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(serializer)
    }
}

/// A group's servers as a snapshot holds them, each server's id then the same text as its key
/// (decoded, the two would be two copies).
pub fn shared_ids<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Servers, D::Error> {
    let decoded = imbl::OrdMap::<Arc<str>, Server>::deserialize(deserializer)?;
    Ok(decoded
        .into_iter()
        .map(|(id, mut server)| {
            server.id = id;
            server
        })
        .collect())
}

/// How many parts a group's snapshot splits its servers into, by id (see [`part_of`]).
pub const PARTS: usize = 64;

/// The fewest servers a group has for its snapshot to be split (a smaller one is saved whole).
pub const SPLIT_FROM: usize = 256;

/// Where each part but the first starts: `srv_04`, `srv_08`, ... `srv_fc`.
static PART_STARTS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    (1..PARTS)
        .map(|part| format!("srv_{:02x}", part * 256 / PARTS))
        .collect()
});

/// The part of a group's snapshot that server `id` is saved in. Parts are ranges of ids, in
/// order, so every id has one; the converger's ids (`srv_` and 32 hex digits of a hash) spread
/// evenly over them.
pub fn part_of(id: &str) -> usize {
    PART_STARTS.partition_point(|start| start.as_str() <= id)
}

/// The ids part `part` holds, as bounds.
fn part_range(part: usize) -> (Bound<&'static str>, Bound<&'static str>) {
    let start = match part.checked_sub(1).and_then(|i| PART_STARTS.get(i)) {
        Some(start) => Bound::Included(start.as_str()),
        None => Bound::Unbounded,
    };
    let end = match PART_STARTS.get(part) {
        Some(end) => Bound::Excluded(end.as_str()),
        None => Bound::Unbounded,
    };
    (start, end)
}

/// The parts holding a server that differs between `before` and `now`. Both are usually
/// versions of one map, and the nodes they share are skipped: the cost follows the servers
/// changed, not the group's size.
pub fn changed_parts(before: &Servers, now: &Servers) -> std::collections::BTreeSet<usize> {
    before
        .diff(now)
        .map(|change| match change {
            imbl::ordmap::DiffItem::Add(id, _)
            | imbl::ordmap::DiffItem::Remove(id, _)
            | imbl::ordmap::DiffItem::Update { new: (id, _), .. } => part_of(id),
        })
        .collect()
}

/// Part `part` of `servers`: the servers in it, in order (each holds its id).
pub fn encode_part(servers: &Servers, part: usize) -> serde_json::Result<Vec<u8>> {
    let in_part: Vec<&Server> = servers
        .range::<_, str>(part_range(part))
        .map(|(_, s)| s)
        .collect();
    serde_json::to_vec(&in_part)
}

/// Puts the servers of part `part`, as [`encode_part`] encoded them, into `servers`; refuses
/// a server that is not of that part.
pub fn decode_part(servers: &mut Servers, part: usize, bytes: &[u8]) -> serde_json::Result<()> {
    for server in serde_json::from_slice::<Vec<Server>>(bytes)? {
        if part_of(&server.id) != part {
            return Err(serde::de::Error::custom(format!(
                "server {} is not of part {part}",
                server.id
            )));
        }
        servers.insert(server);
    }
    Ok(())
}

/// What `servers` need to reach `target` slots at `now`, watching the active servers `sweep`
/// reaches, and failing the pending ones not running `start_timeout` seconds after the provider
/// made them (none: they wait as long as it takes). It reads the servers not active and the
/// sweep's share of the others, not the whole group, but for a scale-in, which walks the
/// active ones once (see [`first_to_terminate`]).
pub fn plan(
    servers: &Servers,
    target: u32,
    now: Timestamp,
    sweep: &Sweep,
    start_timeout: Option<u64>,
) -> Plan {
    let mut plan = Plan::default();
    let slots = servers.slots();
    let excess = slots.saturating_sub(target) as usize;
    plan.launch_new = target.saturating_sub(slots);
    if excess > 0 {
        plan.remove = first_to_terminate(servers, excess)
            .into_iter()
            .map(|s| s.id.to_string())
            .collect();
    }
    let removed: std::collections::BTreeSet<&str> =
        plan.remove.iter().map(String::as_str).collect();
    for server in servers.unsettled() {
        if removed.contains(&*server.id) {
            continue;
        }
        match server.state {
            ServerState::Deleting if server.delete_at().is_none_or(|at| at <= now) => plan
                .delete
                .push((server.id.to_string(), server.provider.value())),
            ServerState::Failed if server.retry_at().is_some_and(|at| at <= now) => {
                plan.relaunch.push(server.id.to_string());
            }
            ServerState::Pending if server.provider.is_null() => {
                plan.resume.push(server.id.to_string());
            }
            ServerState::Pending => match expired(server, start_timeout, now) {
                Some(Expired::Ask(reason)) => {
                    let handle = server.provider.value();
                    plan.expiring.push((server.id.to_string(), handle, reason));
                }
                Some(Expired::Fail(reason)) => plan.timed_out.push(ServerReport::Failed {
                    server_id: server.id.to_string(),
                    reason,
                }),
                None => {
                    plan.watch
                        .push((server.id.to_string(), server.state, server.provider.value()));
                }
            },
            ServerState::Failed | ServerState::Active | ServerState::Deleting => {}
        }
    }
    let mut active = servers
        .range::<_, str>((Bound::Excluded(sweep.after.as_str()), Bound::Unbounded))
        .map(|(_, server)| server)
        .filter(|s| s.state == ServerState::Active && !removed.contains(&*s.id));
    let mut reached = None;
    for server in active.by_ref().take(sweep.budget) {
        plan.watch
            .push((server.id.to_string(), server.state, server.provider.value()));
        reached = Some(server.id.to_string());
    }
    if active.next().is_some() {
        plan.swept_to = reached;
    }
    plan
}

/// A pending server past its start timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expired {
    /// Asked once more, it fails for this reason unless it runs.
    Ask(String),
    /// Past twice the timeout: it fails for this reason, unasked.
    Fail(String),
}

/// Whether a pending `server` is past its start timeout at `now`: `start_timeout` seconds or
/// more after the provider's making it was recorded (its create answered: a create may take
/// minutes of retries), or twice that; none before.
fn expired(server: &Server, start_timeout: Option<u64>, now: Timestamp) -> Option<Expired> {
    let seconds = start_timeout?;
    let made = server.made_at.unwrap_or(server.launched_at);
    let reason = |seconds: u64, asked: &str| {
        format!(
            "not running {seconds} s after the provider made it{asked} \
             (launch.start_timeout_seconds)"
        )
    };
    if made.plus_secs(seconds.saturating_mul(2)) <= now {
        Some(Expired::Fail(reason(
            seconds.saturating_mul(2),
            ", and not answered",
        )))
    } else if made.plus_secs(seconds) <= now {
        Some(Expired::Ask(reason(seconds, "")))
    } else {
        None
    }
}

/// One server to launch.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchRequest {
    /// A new server id, or a failed slot's.
    pub server_id: String,
    /// sha256 (hex) of the metrics token this launch will hand the server.
    pub metrics_token_hash: String,
}

/// What a provider said about one server.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerReport {
    /// It was started; this is its handle.
    Launched {
        /// The server.
        server_id: String,
        /// The provider's handle.
        provider: Value,
    },
    /// It runs.
    Active {
        /// The server.
        server_id: String,
    },
    /// Its launch failed, or it exited.
    Failed {
        /// The server.
        server_id: String,
        /// Why, in lowercase prose.
        reason: String,
    },
    /// The provider deleted it.
    Deleted {
        /// The server.
        server_id: String,
    },
    /// The provider could not delete it.
    DeleteFailed {
        /// The server.
        server_id: String,
        /// Why, in lowercase prose.
        reason: String,
    },
}

/// A launch is allowed for a failed slot whose backoff ran out, or for a new slot while the
/// group has fewer slots than its target (never while draining).
pub(crate) fn decide_launches(
    group: &Group,
    requests: &[LaunchRequest],
    now: Timestamp,
) -> Vec<GroupEvent> {
    let mut slots = group.servers.slots();
    let mut events = Vec::new();
    for request in requests {
        let existing = group.servers.get(request.server_id.as_str());
        let allowed = match existing {
            Some(server) => server.retry_at().is_some_and(|at| at <= now),
            None if slots < group.target() => {
                slots += 1;
                true
            }
            None => false,
        };
        if allowed && !group.draining {
            events.push(GroupEvent::ServerLaunchRequested {
                server_id: request.server_id.clone(),
                metrics_token_hash: request.metrics_token_hash.clone(),
                at: now,
                because: group.last_change.clone(),
                replacement: existing.is_some(),
            });
        }
    }
    events
}

/// Each report applies to a server in the state it speaks of; a stale one records nothing.
/// Reports are taken in order, each seeing what the earlier ones recorded.
pub(crate) fn decide_reports(
    group: &Group,
    reports: &[ServerReport],
    now: Timestamp,
) -> Vec<GroupEvent> {
    use ServerState::*;
    let mut events = Vec::new();
    let mut scratch = Some(group.clone());
    for report in reports {
        let Some(group) = scratch.as_ref() else {
            break;
        };
        let (ServerReport::Launched { server_id, .. }
        | ServerReport::Active { server_id }
        | ServerReport::Failed { server_id, .. }
        | ServerReport::Deleted { server_id }
        | ServerReport::DeleteFailed { server_id, .. }) = report;
        let Some(server) = group.servers.get(server_id.as_str()) else {
            continue;
        };
        let server_id = server_id.clone();
        let event = match (report, server.state) {
            (ServerReport::Launched { provider, .. }, Pending) => GroupEvent::ServerLaunched {
                server_id,
                provider: provider.clone(),
                at: now,
            },
            (ServerReport::Active { .. }, Pending) if !server.provider.is_null() => {
                GroupEvent::ServerActive { server_id, at: now }
            }
            (ServerReport::Failed { reason, .. }, Pending | Active) => GroupEvent::ServerFailed {
                server_id,
                reason: reason.clone(),
                at: now,
            },
            (ServerReport::Deleted { .. }, Deleting) => {
                GroupEvent::ServerDeleted { server_id, at: now }
            }
            // A server being deleted, or a failed one whose remains the provider did not
            // delete before its slot's relaunch.
            (ServerReport::DeleteFailed { reason, .. }, Deleting | Failed) => {
                GroupEvent::ServerDeleteFailed {
                    server_id,
                    reason: reason.clone(),
                    at: now,
                }
            }
            _ => continue,
        };
        scratch = super::group::apply(scratch, &event);
        events.push(event);
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: Timestamp = Timestamp::from_secs(1_700_000_000);

    fn server(id: &str, state: ServerState, launched: i64) -> Server {
        Server {
            id: id.into(),
            state,
            provider: Handle::new(&json!({"pid": 1})),
            launched_at: T0.plus_millis(launched * 1000),
            made_at: None,
            failures: 0,
            last_failure: None,
            delete_failures: 0,
        }
    }

    #[test]
    fn servers_decoded_from_a_snapshot_share_each_id_with_its_key() {
        let servers = map(vec![server("srv_a", ServerState::Active, 0)]);
        let json = serde_json::to_string(&servers).unwrap();
        let decoded = shared_ids(&mut serde_json::Deserializer::from_str(&json)).unwrap();
        assert_eq!(decoded, servers);
        let (key, server) = decoded.iter().next().unwrap();
        assert!(Arc::ptr_eq(key, &server.id));
    }

    #[test]
    fn a_server_from_a_snapshot_of_before_still_decodes_and_keeps_its_last_failure() {
        // Snapshots saved before the token's hash left the server carry it: it is ignored.
        let saved = json!({"id": "srv_a", "state": "failed", "provider": {"pid": 1},
            "launched_at": 1_700_000_000_000_i64, "failures": 2,
            "last_failure": ["exited", 1_700_000_001_000_i64], "metrics_token_hash": "ab"});
        let server: Server = serde_json::from_value(saved.clone()).unwrap();
        let failure = server.last_failure.as_deref().unwrap();
        assert_eq!(failure.0, "exited");
        assert_eq!(
            server.retry_at(),
            Some(failure.1.plus_secs(backoff_seconds(2)))
        );
        let mut again = serde_json::to_value(&server).unwrap();
        again["metrics_token_hash"] = saved["metrics_token_hash"].clone();
        assert_eq!(again, saved);
    }

    fn map(servers: Vec<Server>) -> Servers {
        servers.into_iter().collect()
    }

    /// `n` servers with ids like the converger's (`srv_` and 32 hex digits), spread out.
    fn spread(n: u128) -> Servers {
        map((0..n)
            .map(|i| {
                let id = format!(
                    "srv_{:032x}",
                    i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
                );
                server(&id, ServerState::Active, 0)
            })
            .collect())
    }

    #[test]
    fn every_id_has_one_part_and_the_parts_follow_the_ids_order() {
        assert_eq!(part_of(""), 0);
        assert_eq!(part_of("srv_00ff"), 0);
        assert_eq!(part_of("srv_04"), 1);
        assert_eq!(part_of("srv_fbff"), PARTS - 2);
        assert_eq!(part_of("srv_fc00"), PARTS - 1);
        assert_eq!(part_of("zzz"), PARTS - 1);
        let servers = spread(2_000);
        let parts: Vec<usize> = servers.keys().map(|id| part_of(id)).collect();
        assert!(parts.windows(2).all(|w| w[0] <= w[1]));
        // Spread ids fill every part, none with more than twice its share.
        let mut counts = [0usize; PARTS];
        for part in parts {
            counts[part] += 1;
        }
        assert!(
            counts.iter().all(|&c| c > 0 && c <= 2 * 2_000 / PARTS),
            "{counts:?}"
        );
    }

    #[test]
    fn the_parts_of_a_group_s_servers_hold_each_server_once_and_decode_to_the_same_map() {
        let mut servers = spread(1_000);
        // Ids of any shape have a part too.
        for id in ["srv_a", "other", "srv_ffff"] {
            servers.insert(server(id, ServerState::Pending, 3));
        }
        let mut decoded = Servers::new();
        let mut held = 0;
        for part in 0..PARTS {
            let bytes = encode_part(&servers, part).unwrap();
            held += serde_json::from_slice::<Vec<Value>>(&bytes).unwrap().len();
            decode_part(&mut decoded, part, &bytes).unwrap();
        }
        assert_eq!(held, servers.len());
        assert_eq!(decoded, servers);
        // A server put in the wrong part is refused, not moved.
        let first = encode_part(&servers, 0).unwrap();
        let error = decode_part(&mut Servers::new(), 1, &first).unwrap_err();
        assert!(error.to_string().contains("is not of part 1"), "{error}");
    }

    #[test]
    fn the_changed_parts_are_those_of_the_servers_added_changed_or_removed() {
        let before = spread(1_000);
        assert!(changed_parts(&before, &before.clone()).is_empty());
        let ids: Vec<Arc<str>> = before.keys().cloned().collect();
        let mut now = before.clone();
        now.update(&ids[10], |s| s.state = ServerState::Failed);
        now.remove(&ids[500]);
        now.insert(server("srv_fe", ServerState::Pending, 1));
        let expected = [part_of(&ids[10]), part_of(&ids[500]), PARTS - 1];
        assert_eq!(changed_parts(&before, &now), expected.into_iter().collect());
        // The same, decoded afresh (nothing shared): the comparison is by value.
        let json = serde_json::to_string(&now).unwrap();
        let fresh = shared_ids(&mut serde_json::Deserializer::from_str(&json)).unwrap();
        assert_eq!(
            changed_parts(&before, &fresh),
            expected.into_iter().collect()
        );
    }

    #[test]
    fn a_handle_is_the_json_it_holds_and_null_until_launched() {
        let handle = Handle::new(&json!({"start_time": 123, "pid": 4242}));
        assert_eq!(
            serde_json::to_string(&handle).unwrap(),
            r#"{"pid":4242,"start_time":123}"#
        );
        assert_eq!(handle.value(), json!({"pid": 4242, "start_time": 123}));
        let read: Handle = serde_json::from_str(r#"{ "pid" : 4242, "start_time":123 }"#).unwrap();
        assert_eq!(read, handle, "equal when their values are");
        let from_value: Handle =
            serde_json::from_value(json!({"pid": 4242, "start_time": 123})).unwrap();
        assert_eq!(from_value, handle);
        assert_ne!(Handle::new(&json!({"pid": 1})), handle);
        let null: Handle = serde_json::from_str("null").unwrap();
        assert!(null.is_null());
        assert_eq!(null, Handle::default());
        assert_eq!(serde_json::to_string(&null).unwrap(), "null");
        assert_eq!(null.value(), Value::Null);
        // A server without the field (an old snapshot) reads as not launched.
        let server: Server = serde_json::from_value(json!({"id": "a", "state": "pending",
            "launched_at": 0}))
        .unwrap();
        assert!(server.provider.is_null());
    }

    #[test]
    fn a_sweep_checks_pending_servers_each_pass_and_active_ones_in_turn() {
        let mut servers: Vec<Server> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|id| server(id, ServerState::Active, 0))
            .collect();
        servers.push(server("p", ServerState::Pending, 1));
        let servers = map(servers);
        let watched = |after: &str| {
            let sweep = Sweep {
                after: after.into(),
                budget: 2,
            };
            let plan = plan(&servers, 6, T0, &sweep, None);
            let ids: Vec<String> = plan.watch.into_iter().map(|(id, _, _)| id).collect();
            (ids, plan.swept_to)
        };
        assert_eq!(
            watched(""),
            (vec!["p".into(), "a".into(), "b".into()], Some("b".into()))
        );
        assert_eq!(
            watched("b"),
            (vec!["p".into(), "c".into(), "d".into()], Some("d".into()))
        );
        // The round ends at the last id: the next begins from the first, with another sweep.
        assert_eq!(watched("d"), (vec!["p".into(), "e".into()], None));
        assert_eq!(watched("e"), (vec!["p".into()], None));
        // A budget of none asks about the pending servers only.
        let none = Sweep {
            after: String::new(),
            budget: 0,
        };
        let plan_none = plan(&servers, 6, T0, &none, None);
        assert_eq!((plan_none.watch.len(), plan_none.swept_to), (1, None));
        // A budget that reaches every active server leaves nothing to go on from.
        let all = plan(&servers, 6, T0, &Sweep::ALL, None);
        assert_eq!((all.watch.len(), all.swept_to), (6, None));
    }

    #[test]
    fn the_backoff_doubles_from_one_second_up_to_a_minute() {
        let waits: Vec<u64> = (0..9).map(backoff_seconds).collect();
        assert_eq!(waits, vec![0, 1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff_seconds(u32::MAX), 60);
    }

    #[test]
    fn scale_in_removes_failed_then_pending_then_the_oldest_active_first() {
        let servers = map(vec![
            server("a", ServerState::Active, 5),
            server("b", ServerState::Active, 1),
            server("c", ServerState::Pending, 9),
            server("d", ServerState::Failed, 10),
            server("e", ServerState::Deleting, 0),
        ]);
        let order: Vec<&str> = termination_order(servers.values())
            .iter()
            .map(|s| &*s.id)
            .collect();
        assert_eq!(order, vec!["d", "c", "b", "a"]);
        let plan = plan(&servers, 2, T0, &Sweep::ALL, None);
        assert_eq!(plan.remove, vec!["d", "c"]);
        assert_eq!(plan.launch_new, 0);
        assert_eq!(plan.delete, vec![("e".to_string(), json!({"pid": 1}))]);
    }

    #[test]
    fn a_failed_slot_is_relaunched_only_once_its_backoff_ran_out_and_still_counts() {
        let mut failed = server("a", ServerState::Failed, 0);
        failed.failures = 3;
        failed.last_failure = Some(Box::new(("exited".into(), T0)));
        let servers = map(vec![failed]);
        let early = plan(&servers, 1, T0.plus_secs(3u32), &Sweep::ALL, None);
        assert_eq!((early.launch_new, early.relaunch.len()), (0, 0));
        let due = plan(&servers, 1, T0.plus_secs(4u32), &Sweep::ALL, None);
        assert_eq!(due.relaunch, vec!["a"]);
        // A slot whose remains the provider refused to delete, three times, waits out the
        // deletions' backoff (4 s) where its launches' is shorter (1 s).
        let mut stuck = server("b", ServerState::Failed, 0);
        stuck.failures = 1;
        stuck.delete_failures = 3;
        stuck.last_failure = Some(Box::new(("delete failed: 403".into(), T0)));
        assert_eq!(stuck.retry_at(), Some(T0.plus_secs(4u32)));
    }

    #[test]
    fn missing_slots_are_launched_and_pending_ones_without_a_handle_resumed() {
        let mut lost = server("a", ServerState::Pending, 0);
        lost.provider = Handle::default();
        let plan = plan(
            &map(vec![lost, server("b", ServerState::Active, 0)]),
            4,
            T0,
            &Sweep::ALL,
            None,
        );
        assert_eq!(plan.launch_new, 2);
        assert_eq!(plan.resume, vec!["a"]);
        assert_eq!(plan.watch.len(), 1);
    }

    #[test]
    fn a_pending_server_is_asked_once_more_when_its_start_timeout_ran_out_to_fail_it() {
        // Launched at 0 and at 5 s, with a handle (kept in a snapshot older than `made_at`);
        // one launched at 0 that the provider made at 8 s is timed from then. One without a
        // handle is resumed as before.
        let mut lost = server("c", ServerState::Pending, 0);
        lost.provider = Handle::default();
        let mut slow = server("e", ServerState::Pending, 0);
        slow.made_at = Some(T0.plus_secs(8u32));
        let servers = map(vec![
            server("a", ServerState::Pending, 0),
            server("b", ServerState::Pending, 5),
            lost,
            server("d", ServerState::Active, 0),
            slow,
        ]);
        let at = |seconds: u64, timeout: Option<u64>| {
            let plan = plan(&servers, 5, T0.plus_secs(seconds), &Sweep::ALL, timeout);
            let watched: Vec<String> = plan.watch.into_iter().map(|(id, _, _)| id).collect();
            (plan.expiring, watched, plan.resume)
        };
        let ids = |expiring: &[(String, Value, String)]| -> Vec<String> {
            expiring.iter().map(|(id, _, _)| id.clone()).collect()
        };
        let (expiring, watched, resume) = at(9, Some(10));
        assert!(expiring.is_empty());
        assert_eq!(watched, ["a", "b", "e", "d"]);
        assert_eq!(resume, ["c"]);
        let (expiring, watched, _) = at(10, Some(10));
        assert_eq!(
            expiring,
            [(
                "a".to_string(),
                json!({"pid": 1}),
                "not running 10 s after the provider made it (launch.start_timeout_seconds)"
                    .to_string()
            )]
        );
        assert_eq!(watched, ["b", "e", "d"]);
        let (expiring, watched, _) = at(15, Some(10));
        assert_eq!(ids(&expiring), ["a", "b"]);
        assert_eq!(watched, ["e", "d"]);
        let (expiring, _, _) = at(18, Some(10));
        assert_eq!(ids(&expiring), ["a", "b", "e"]);
        // Twice the timeout: failed unasked (a status call that always fails for one server
        // would hold its slot for ever).
        let plan = plan(&servers, 5, T0.plus_secs(20u32), &Sweep::ALL, Some(10));
        assert_eq!(ids(&plan.expiring), ["b", "e"]);
        assert_eq!(
            plan.timed_out,
            [ServerReport::Failed {
                server_id: "a".into(),
                reason: "not running 20 s after the provider made it, and not answered \
                         (launch.start_timeout_seconds)"
                    .into()
            }]
        );
        // No timeout: they wait as long as it takes.
        let (expiring, watched, _) = at(86_400, None);
        assert!(expiring.is_empty());
        assert_eq!(watched, ["a", "b", "e", "d"]);
    }

    #[test]
    fn a_server_whose_delete_failed_is_asked_again_once_its_backoff_ran_out() {
        let mut stuck = server("d", ServerState::Deleting, 0);
        stuck.delete_failures = 2;
        stuck.last_failure = Some(Box::new(("delete failed: 403".into(), T0)));
        let servers = map(vec![stuck, server("e", ServerState::Deleting, 0)]);
        let deleted = |now: Timestamp| -> Vec<String> {
            let plan = plan(&servers, 0, now, &Sweep::ALL, None);
            plan.delete.into_iter().map(|(id, _)| id).collect()
        };
        // Two failures: 2 s after the last.
        assert_eq!(deleted(T0.plus_millis(1_999)), vec!["e"]);
        assert_eq!(deleted(T0.plus_secs(2u64)), vec!["d", "e"]);
        // Many: at most ten minutes.
        let mut long = server("d", ServerState::Deleting, 0);
        long.delete_failures = 40;
        long.last_failure = Some(Box::new(("delete failed: 403".into(), T0)));
        assert_eq!(
            long.delete_at(),
            Some(T0.plus_secs(MAX_DELETE_BACKOFF_SECONDS))
        );
    }

    /// [`plan`] as it was before [`Servers`] kept its unsettled ids, reading every server: the
    /// oracle of the plan that reads only what it needs.
    fn plan_reading_every_server(
        servers: &Servers,
        target: u32,
        now: Timestamp,
        sweep: &Sweep,
        start_timeout: Option<u64>,
    ) -> Plan {
        let mut plan = Plan::default();
        let slots = servers.values().filter(|s| s.is_slot()).count() as u32;
        let excess = slots.saturating_sub(target) as usize;
        plan.launch_new = target.saturating_sub(slots);
        plan.remove = termination_order(servers.values())
            .into_iter()
            .take(excess)
            .map(|s| s.id.to_string())
            .collect();
        let removed: Vec<&str> = plan.remove.iter().map(String::as_str).collect();
        let kept = |s: &&Server| !removed.contains(&&*s.id);
        for server in servers.values().filter(kept) {
            match server.state {
                ServerState::Deleting if server.delete_at().is_none_or(|at| at <= now) => plan
                    .delete
                    .push((server.id.to_string(), server.provider.value())),
                ServerState::Failed if server.retry_at().is_some_and(|at| at <= now) => {
                    plan.relaunch.push(server.id.to_string());
                }
                ServerState::Pending if server.provider.is_null() => {
                    plan.resume.push(server.id.to_string());
                }
                ServerState::Pending
                    if start_timeout.is_some_and(|seconds| {
                        let made = server.made_at.unwrap_or(server.launched_at);
                        made.plus_millis(2_000 * seconds as i64) <= now
                    }) =>
                {
                    let seconds = 2 * start_timeout.unwrap();
                    plan.timed_out.push(ServerReport::Failed {
                        server_id: server.id.to_string(),
                        reason: format!(
                            "not running {seconds} s after the provider made it, and not \
                             answered (launch.start_timeout_seconds)"
                        ),
                    });
                }
                ServerState::Pending
                    if start_timeout.is_some_and(|seconds| {
                        let made = server.made_at.unwrap_or(server.launched_at);
                        made.plus_millis(1_000 * seconds as i64) <= now
                    }) =>
                {
                    let seconds = start_timeout.unwrap();
                    let handle = server.provider.value();
                    let reason = format!(
                        "not running {seconds} s after the provider made it \
                         (launch.start_timeout_seconds)"
                    );
                    plan.expiring.push((server.id.to_string(), handle, reason));
                }
                ServerState::Pending => {
                    plan.watch
                        .push((server.id.to_string(), server.state, server.provider.value()));
                }
                ServerState::Failed | ServerState::Active | ServerState::Deleting => {}
            }
        }
        let ids: Vec<&Server> = servers
            .values()
            .filter(|s| s.state == ServerState::Active)
            .filter(kept)
            .collect();
        let start = ids.partition_point(|s| *s.id <= *sweep.after);
        let mut round = ids[start..].iter();
        for server in round.by_ref().take(sweep.budget) {
            plan.watch
                .push((server.id.to_string(), server.state, server.provider.value()));
            plan.swept_to = Some(server.id.to_string());
        }
        if round.next().is_none() {
            plan.swept_to = None;
        }
        plan
    }

    /// A change to a group's servers, as its events make them.
    #[derive(Debug, Clone)]
    enum Change {
        Insert(usize, ServerState, i64),
        Launched(usize, bool),
        State(usize, ServerState),
        Failed(usize, i64),
        DeleteFailed(usize, i64),
        Remove(usize),
    }

    fn state() -> impl Strategy<Value = ServerState> {
        prop_oneof![
            Just(ServerState::Pending),
            Just(ServerState::Active),
            Just(ServerState::Failed),
            Just(ServerState::Deleting),
        ]
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            (0..8usize, state(), 0..10i64).prop_map(|(i, s, t)| Change::Insert(i, s, t)),
            (0..8usize, any::<bool>()).prop_map(|(i, h)| Change::Launched(i, h)),
            (0..8usize, state()).prop_map(|(i, s)| Change::State(i, s)),
            (0..8usize, 0..10i64).prop_map(|(i, t)| Change::Failed(i, t)),
            (0..8usize, 0..10i64).prop_map(|(i, t)| Change::DeleteFailed(i, t)),
            (0..8usize).prop_map(Change::Remove),
        ]
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn what_servers_keep_beside_the_map_follows_every_change_and_plans_as_reading_all(
            changes in proptest::collection::vec(change(), 1..40),
            target in 0u32..10,
            budget in 0usize..5,
            after in 0usize..9,
            now in 0i64..80,
            timeout in 0u64..12,
        ) {
            let id = |i: usize| format!("srv_{i}");
            let mut servers = Servers::new();
            for change in changes {
                match change {
                    Change::Insert(i, state, at) => {
                        servers.insert(server(&id(i), state, at));
                    }
                    Change::Launched(i, handle) => {
                        servers.update(&id(i), |s| {
                            s.provider = if handle { Handle::new(&json!({"pid": i})) } else { Handle::default() };
                            s.made_at = handle.then(|| T0.plus_millis(i as i64 * 1000));
                        });
                    }
                    Change::State(i, state) => {
                        servers.update(&id(i), |s| s.state = state);
                    }
                    Change::Failed(i, at) => {
                        servers.update(&id(i), |s| {
                            s.state = ServerState::Failed;
                            s.failures += 1;
                            s.last_failure = Some(Box::new(("exited".into(), T0.plus_millis(at * 1000))));
                        });
                    }
                    Change::DeleteFailed(i, at) => {
                        servers.update(&id(i), |s| {
                            s.delete_failures += 1;
                            s.last_failure = Some(Box::new(("refused".into(), T0.plus_millis(at * 1000))));
                        });
                    }
                    Change::Remove(i) => {
                        servers.remove(&id(i));
                    }
                }
                let rebuilt = Servers::from(servers.map.clone());
                prop_assert_eq!(servers.counts, rebuilt.counts);
                prop_assert_eq!(&servers.unsettled, &rebuilt.unsettled);
            }
            for state in [ServerState::Pending, ServerState::Active, ServerState::Failed, ServerState::Deleting] {
                prop_assert_eq!(servers.count(state) as usize, servers.values().filter(|s| s.state == state).count());
            }
            let sweep = Sweep { after: if after == 8 { String::new() } else { id(after) }, budget };
            let now = T0.plus_millis(now * 1000);
            let start_timeout = (timeout > 0).then_some(timeout);
            prop_assert_eq!(
                plan(&servers, target, now, &sweep, start_timeout),
                plan_reading_every_server(&servers, target, now, &sweep, start_timeout)
            );
            let order: Vec<&str> = termination_order(servers.values()).iter().map(|s| &*s.id).collect();
            for n in 0..=servers.len() + 1 {
                let first: Vec<&str> = first_to_terminate(&servers, n).iter().map(|s| &*s.id).collect();
                prop_assert_eq!(&first[..], &order[..n.min(order.len())]);
            }
        }
    }
}
