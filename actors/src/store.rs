//! The bridge between the domain and the journal: an object's state is its snapshot (if any)
//! plus the events that follow it, folded with the domain's `apply`.

use std::collections::BTreeSet;
use std::fmt::Debug;

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
/// keep every server an event replaced since alive until the next snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Parts {
    /// Each part's version.
    pub versions: Vec<u64>,
    /// The parts changed since (see [`Parts::track`]).
    pub changed: BTreeSet<usize>,
}

impl Parts {
    /// Applies `events` to `state`, noting in `parts` (if any) the parts they changed.
    pub fn track<A: Aggregate>(
        parts: &mut Option<Parts>,
        state: &mut A::State,
        events: &[A::Event],
    ) {
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
    pub parts: Option<Parts>,
}

/// Object `id`'s state from its snapshot `bytes` (saved whole or in parts), with its parts.
fn decode<A: Aggregate>(
    journal: &Journal,
    id: &str,
    bytes: &[u8],
) -> Result<(A::State, Option<Parts>), String> {
    if <A::Split as Split<A::State>>::PARTS > 0 {
        if let Ok(head) = serde_json::from_slice::<LoadedHead<A::State>>(bytes) {
            if head.parts.len() != <A::Split as Split<A::State>>::PARTS {
                return Err(format!("a snapshot in {} parts", head.parts.len()));
            }
            let mut state = head.head;
            for (part, &version) in head.parts.iter().enumerate() {
                let saved = journal
                    .load_snapshot_part(id, part)
                    .map_err(|e| e.to_string())?
                    .filter(|saved| saved.version == version)
                    .ok_or_else(|| format!("part {part} at version {version} is not there"))?;
                state = A::Split::join(state, part, &saved.state).map_err(|e| e.to_string())?;
            }
            let parts = Parts {
                versions: head.parts,
                changed: BTreeSet::new(),
            };
            return Ok((state, Some(parts)));
        }
    }
    let state = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok((state, None))
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
        match decode::<A>(journal, id, &snapshot.state) {
            Ok((state, parts)) => {
                loaded.state = state;
                loaded.version = snapshot.version;
                loaded.snapshot_version = snapshot.version;
                loaded.parts = parts;
            }
            Err(error) => {
                tracing::warn!(object = id, %error, "ignoring a snapshot that does not decode");
            }
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
/// updated (to none if this one is whole or failed, so that the next saves every part).
pub fn snapshot<A: Aggregate>(
    journal: &Journal,
    id: &str,
    version: u64,
    state: &A::State,
    parts: &mut Option<Parts>,
) {
    let last = parts.take();
    let saved = if <A::Split as Split<A::State>>::worth_splitting(state) {
        save_parts::<A>(journal, id, version, state, last).map(|saved| *parts = Some(saved))
    } else {
        serde_json::to_vec(state)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                journal
                    .save_snapshot(id, version, &bytes)
                    .map_err(|e| e.to_string())
            })
    };
    if let Err(error) = saved {
        tracing::warn!(object = id, %error, "snapshot not saved");
    }
}

/// [`snapshot`] in parts: those changed since `last` (all without it), then the head.
fn save_parts<A: Aggregate>(
    journal: &Journal,
    id: &str,
    version: u64,
    state: &A::State,
    last: Option<Parts>,
) -> Result<Parts, String> {
    let count = <A::Split as Split<A::State>>::PARTS;
    let (changed, mut versions) = match last {
        Some(last) => (last.changed, last.versions),
        None => ((0..count).collect(), vec![0; count]),
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
    journal
        .save_snapshot_parts(id, version, &saved, &head)
        .map_err(|e| e.to_string())?;
    Ok(Parts {
        versions,
        changed: BTreeSet::new(),
    })
}
