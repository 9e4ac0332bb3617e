//! The bridge between the domain and the journal: an object's state is its snapshot (if any)
//! plus the events that follow it, folded with the domain's `apply`.

use flotilla_journal::{Appended, ExpectedVersion, Fence, Journal, NewEvent, StreamAppend};

use crate::aggregate::Aggregate;
use crate::clock::Timestamp;
use crate::domain::DomainEvent;
use crate::error::Error;

/// Save a snapshot once this many events follow the last one (for most kinds: see
/// [`Aggregate::snapshot_every`]).
pub const SNAPSHOT_EVERY: u64 = 64;

/// An object's state and the stream version it reflects.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<S> {
    /// The state.
    pub state: S,
    /// The version of the stream's last event folded into it (0: none).
    pub version: u64,
    /// The version of the snapshot it started from (0: none).
    pub snapshot_version: u64,
}

/// Rebuilds object `id`'s state from its latest snapshot and the events after it.
pub fn load<A: Aggregate>(journal: &Journal, id: &str) -> Result<Loaded<A::State>, Error> {
    let mut loaded = Loaded {
        state: A::State::default(),
        version: 0,
        snapshot_version: 0,
    };
    if let Some(snapshot) = journal.load_snapshot(id)? {
        match serde_json::from_slice(&snapshot.state) {
            Ok(state) => {
                loaded.state = state;
                loaded.version = snapshot.version;
                loaded.snapshot_version = snapshot.version;
            }
            Err(error) => {
                tracing::warn!(object = id, %error, "ignoring a snapshot that does not decode");
            }
        }
    }
    for record in journal.read_stream(id, loaded.version + 1) {
        let record = record?;
        let event: A::Event = record.decode(A::Event::SCHEMA)?;
        loaded.state = A::apply(std::mem::take(&mut loaded.state), &event);
        loaded.version = record.version;
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

/// Saves `state` as object `id`'s snapshot at `version` (a cache: failure only costs replay).
pub fn snapshot<A: Aggregate>(journal: &Journal, id: &str, version: u64, state: &A::State) {
    let saved = serde_json::to_vec(state)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            journal
                .save_snapshot(id, version, &bytes)
                .map_err(|e| e.to_string())
        });
    if let Err(error) = saved {
        tracing::warn!(object = id, %error, "snapshot not saved");
    }
}
