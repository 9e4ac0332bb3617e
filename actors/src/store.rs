//! The bridge between the domain and the journal: an object's state is its snapshot (if any)
//! plus the events that follow it, folded with the domain's `apply`.

use std::collections::BTreeSet;

use flotilla_journal::{Appended, ExpectedVersion, Fence, Journal, NewEvent, StreamAppend};
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::clock::Timestamp;
use crate::domain::DomainEvent;
use crate::error::Error;

/// Save a snapshot once this many events follow the last one (for most kinds: see
/// [`Aggregate::snapshot_every`]).
pub const SNAPSHOT_EVERY: u64 = 64;

/// How a kind's snapshots are saved. Most are saved whole ([`Whole`]). A group's servers are
/// split into parts (see [`crate::aggregate::GroupServers`]), and a snapshot saves only the
/// parts that changed since the last one: a group of 5,000 servers whose calls leave its
/// servers as they are snapshots as cheaply as an empty group, where each snapshot used to
/// serialize every server on the actor's thread, which showed in every object's p99 there.
pub trait Split<S>: 'static {
    /// What tells which parts an event changed, taken before it and compared after: cheap to
    /// take and to compare (a group's servers, a persistent map whose unchanged nodes are
    /// shared).
    type Basis;
    /// How many parts a split snapshot has.
    const PARTS: usize;
    /// Whether `state` is worth saving in parts (a small one is saved whole).
    fn worth_splitting(state: &S) -> bool;
    /// What [`Split::changed`] compares, of `state`.
    fn basis(state: &S) -> Self::Basis;
    /// The parts in which `now` differs from `before`.
    fn changed(before: &Self::Basis, now: &Self::Basis) -> BTreeSet<usize>;
    /// `state` without what its parts hold.
    fn head(state: &S) -> S;
    /// Part `part` of `state`, encoded.
    fn part(state: &S, part: usize) -> serde_json::Result<Vec<u8>>;
    /// `head` with part `part` put back, as [`Split::part`] encoded it.
    fn join(head: S, part: usize, bytes: &[u8]) -> serde_json::Result<S>;
}

/// Snapshots saved whole.
#[derive(Debug)]
pub struct Whole;

impl<S: Clone> Split<S> for Whole {
    type Basis = ();
    const PARTS: usize = 0;
    fn worth_splitting(_: &S) -> bool {
        false
    }
    fn basis(_: &S) {}
    fn changed(_: &(), _: &()) -> BTreeSet<usize> {
        BTreeSet::new()
    }
    fn head(state: &S) -> S {
        state.clone()
    }
    fn part(_: &S, _: usize) -> serde_json::Result<Vec<u8>> {
        Ok(Vec::new())
    }
    fn join(head: S, _: usize, _: &[u8]) -> serde_json::Result<S> {
        Ok(head)
    }
}

/// What an object keeps of its last snapshot saved in parts: the version each part was saved
/// at, and which parts its events changed since. Not the state it was saved from: that would
/// keep every server an event replaced since alive until the next snapshot. Kept boxed, so
/// that an object saved whole (most of them) pays a pointer for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parts {
    /// Each part's version.
    pub versions: Vec<u64>,
    /// The parts changed since (see [`Parts::track`]).
    pub changed: BTreeSet<usize>,
}

/// What an object keeps of its last snapshot in parts, if it was saved in parts.
pub type KeptParts = Option<Box<Parts>>;

impl Parts {
    /// Applies `events` to `state`, noting in `parts` (if any) the parts they changed.
    pub fn track<A: Aggregate>(parts: &mut KeptParts, state: &mut A::State, events: &[A::Event]) {
        let before = parts.as_ref().map(|_| A::Split::basis(state));
        for event in events {
            *state = A::apply(std::mem::take(state), event);
        }
        if let (Some(parts), Some(before)) = (parts, before) {
            let changed = A::Split::changed(&before, &A::Split::basis(state));
            parts.changed.extend(changed);
        }
    }
}

/// A snapshot saved in parts, as its head holds it.
#[derive(Serialize)]
struct Head<'a, S> {
    head: &'a S,
    parts: &'a [u64],
}

/// See [`Head`].
#[derive(Deserialize)]
struct LoadedHead<S> {
    head: S,
    parts: Vec<u64>,
}

/// What a [`Head`] says of its parts (its state left unread).
#[derive(Deserialize)]
struct PartVersions {
    parts: Vec<u64>,
}

/// An object's state and the stream version it reflects.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<S> {
    /// The state.
    pub state: S,
    /// The version of the stream's last event folded into it (0: none).
    pub version: u64,
    /// The version of the snapshot it started from (0: none).
    pub snapshot_version: u64,
    /// What the snapshot was, if it was saved in parts.
    pub parts: KeptParts,
}

/// Object `id`'s state from its snapshot `bytes` at `version` (saved whole or in parts), with
/// its parts; none if the snapshot cannot be used (said in a warning), an error if the journal
/// could not be read.
fn decode<A: Aggregate>(
    journal: &Journal,
    id: &str,
    version: u64,
    bytes: &[u8],
) -> Result<Option<(A::State, KeptParts)>, Error> {
    let count = <A::Split as Split<A::State>>::PARTS;
    if count > 0 {
        if let Ok(head) = serde_json::from_slice::<LoadedHead<A::State>>(bytes) {
            if head.parts.len() != count {
                let parts = head.parts.len();
                tracing::warn!(
                    object = id,
                    parts,
                    "ignoring a snapshot in too many or too few parts"
                );
                return Ok(None);
            }
            let Some(saved) = journal.load_snapshot_parts(id, version, &head.parts)? else {
                return Ok(None);
            };
            let mut state = head.head;
            for (part, bytes) in saved.iter().enumerate() {
                state = match A::Split::join(state, part, bytes) {
                    Ok(state) => state,
                    Err(error) => {
                        tracing::warn!(object = id, part, %error, "ignoring a snapshot whose part does not decode");
                        return Ok(None);
                    }
                };
            }
            let parts = Parts {
                versions: head.parts,
                changed: BTreeSet::new(),
            };
            return Ok(Some((state, Some(Box::new(parts)))));
        }
    }
    match serde_json::from_slice(bytes) {
        Ok(state) => Ok(Some((state, None))),
        Err(error) => {
            tracing::warn!(object = id, %error, "ignoring a snapshot that does not decode");
            Ok(None)
        }
    }
}

/// Rebuilds object `id`'s state from its latest snapshot and the events after it.
pub fn load<A: Aggregate>(journal: &Journal, id: &str) -> Result<Loaded<A::State>, Error> {
    let mut loaded = Loaded {
        state: A::State::default(),
        version: 0,
        snapshot_version: 0,
        parts: None,
    };
    if let Some(snapshot) = journal.load_snapshot(id)? {
        if let Some((state, parts)) = decode::<A>(journal, id, snapshot.version, &snapshot.state)? {
            loaded.state = state;
            loaded.version = snapshot.version;
            loaded.snapshot_version = snapshot.version;
            loaded.parts = parts;
        }
    }
    let snapshotted = loaded
        .parts
        .as_ref()
        .map(|_| A::Split::basis(&loaded.state));
    for record in journal.read_stream(id, loaded.version + 1) {
        let record = record?;
        let event: A::Event = record.decode(A::Event::SCHEMA)?;
        loaded.state = A::apply(std::mem::take(&mut loaded.state), &event);
        loaded.version = record.version;
    }
    // The parts the events after the snapshot changed are saved again with the next.
    if let (Some(parts), Some(snapshotted)) = (&mut loaded.parts, snapshotted) {
        parts.changed = A::Split::changed(&snapshotted, &A::Split::basis(&loaded.state));
    }
    Ok(loaded)
}

/// The journal records for `events`, decided at `now`.
pub fn records<A: Aggregate>(events: &[A::Event], now: Timestamp) -> Result<Vec<NewEvent>, Error> {
    events
        .iter()
        .map(|event| {
            NewEvent::json(event.kind(), A::Event::SCHEMA, now.as_millis(), event)
                .map_err(Error::from)
        })
        .collect()
}

/// Object `id`'s part of an append: `events`, decided at `now`, expected at `version`.
pub fn part<A: Aggregate>(
    id: &str,
    version: u64,
    events: &[A::Event],
    now: Timestamp,
) -> Result<StreamAppend, Error> {
    Ok(StreamAppend {
        stream: id.to_owned(),
        expected: expected(version),
        events: records::<A>(events, now)?,
    })
}

/// A part that adds nothing to stream `id` and holds the append it rides in to the stream's
/// `version`: if the stream moved since it was read, the whole append is refused.
pub fn unchanged(id: &str, version: u64) -> StreamAppend {
    StreamAppend {
        stream: id.to_owned(),
        expected: expected(version),
        events: Vec::new(),
    }
}

/// The version an append to a stream now at `version` expects.
fn expected(version: u64) -> ExpectedVersion {
    match version {
        0 => ExpectedVersion::NoStream,
        v => ExpectedVersion::Exact(v),
    }
}

/// Appends `events` to object `id`'s stream, expected at `version`, and with them `along`
/// (other streams' parts, all or none); returns once they are durable, with where each part
/// landed.
pub async fn append<A: Aggregate>(
    journal: &Journal,
    id: &str,
    version: u64,
    events: &[A::Event],
    now: Timestamp,
    along: Vec<StreamAppend>,
    fence: Option<Fence>,
) -> Result<(Appended, Vec<Appended>), Error> {
    let own = part::<A>(id, version, events, now)?;
    if along.is_empty() && fence.is_none() {
        let appended = journal.append_async(id, own.expected, own.events).await?;
        return Ok((appended, Vec::new()));
    }
    let mut parts = vec![own];
    parts.extend(along);
    let mut appended = journal.append_all_fenced_async(parts, fence).await?;
    if appended.is_empty() {
        return Err(flotilla_journal::Error::InvalidEvent("an append lost a part".into()).into());
    }
    let own = appended.remove(0);
    Ok((own, appended))
}

/// Saves `state` as object `id`'s snapshot at `version` (a cache: failure only costs replay):
/// whole, or in parts when its kind splits it and it is worth it. `parts` is what the object
/// keeps of its last snapshot in parts: only the parts changed since are saved, and it is
/// updated (to none if this one is whole or failed, so that the next saves every part). A
/// whole snapshot over one in parts (a group shrunk below the size worth splitting) removes
/// the parts, which nothing names any more, in the same write.
pub fn snapshot<A: Aggregate>(
    journal: &Journal,
    id: &str,
    version: u64,
    state: &A::State,
    parts: &mut KeptParts,
) {
    let last = parts.take();
    let saved = if <A::Split as Split<A::State>>::worth_splitting(state) {
        save_parts::<A>(journal, id, version, state, last).map(|saved| *parts = saved)
    } else {
        serde_json::to_vec(state)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                let count = <A::Split as Split<A::State>>::PARTS;
                // Parts stored and no longer named: this object's last snapshot was in
                // parts, or another node's was, or a save of its own in parts was refused.
                let parts_stored = || journal.has_snapshot_parts(id).unwrap_or(true);
                if count > 0 && (last.is_some() || parts_stored()) {
                    journal.save_snapshot_over_parts(id, version, &bytes, count)
                } else {
                    journal.save_snapshot(id, version, &bytes)
                }
                .map_err(|e| e.to_string())
            })
    };
    if let Err(error) = saved {
        tracing::warn!(object = id, %error, "snapshot not saved");
    }
}

/// [`snapshot`] in parts: those changed since `last` (all without it) and the head, in one
/// write. Answers what the object keeps for its next snapshot: none (every part saved then) if
/// the journal holds a newer snapshot, saved by another writer, which is left as it is, or if
/// another writer saved one between the read and the write, which refuses the write.
fn save_parts<A: Aggregate>(
    journal: &Journal,
    id: &str,
    version: u64,
    state: &A::State,
    last: KeptParts,
) -> Result<KeptParts, String> {
    let count = <A::Split as Split<A::State>>::PARTS;
    // Only the parts changed since this object's last snapshot are saved, and only over that
    // snapshot: if another writer (another node on a shared database) saved one since, every
    // part is saved, over that one; one newer than this is left as it is. The journal saves
    // nothing if the stored snapshot changed between the read and the write, and the next
    // snapshot then saves every part.
    let stored = journal.stored_snapshot(id).map_err(|e| e.to_string())?;
    if let Some(stored) = stored.as_ref().filter(|stored| stored.version > version) {
        // Newer, unless it is left from a journal since replaced (an import): then it is
        // saved over.
        if journal.matches(id, stored).map_err(|e| e.to_string())? {
            return Ok(None);
        }
    }
    let ours = |last: &Parts| {
        stored.as_ref().is_some_and(|stored| {
            serde_json::from_slice::<PartVersions>(&stored.state)
                .is_ok_and(|saved| saved.parts == last.versions)
        })
    };
    let (changed, mut versions) = match last {
        Some(last) if ours(&last) => (last.changed, last.versions),
        _ => ((0..count).collect(), vec![0; count]),
    };
    let mut saved = Vec::with_capacity(changed.len());
    for part in changed {
        saved.push((
            part,
            A::Split::part(state, part).map_err(|e| e.to_string())?,
        ));
        versions[part] = version;
    }
    let head = serde_json::to_vec(&Head {
        head: &A::Split::head(state),
        parts: &versions,
    })
    .map_err(|e| e.to_string())?;
    let saved = journal
        .save_snapshot_parts(id, version, &saved, &head, stored.as_ref())
        .map_err(|e| e.to_string())?;
    Ok(saved.then(|| {
        Box::new(Parts {
            versions,
            changed: BTreeSet::new(),
        })
    }))
}
