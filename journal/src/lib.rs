//! An append-only, hash-chained event journal: Flotilla's single source of truth, embedded in a
//! sled directory (the default) or kept in PostgreSQL for several nodes to share.
//!
//! Every event is a [`Record`] with a global sequence number, a place in its object's stream, and
//! a blake3 hash chained over the record before it. Appends are atomic, checked against the
//! stream's expected version, and acknowledged only once durable; concurrent appends share one
//! flush (group commit, see `writer`).
//!
//! # Layout
//! - `record`: the record type and its byte layout on disk.
//! - `backend`: what the journal reads from a back end; `writer::Log` is what it writes.
//! - `sled_store` and `layout`: the embedded back end, and the sled keys records, the stream
//!   index and the head are stored under.
//! - `postgres`: the PostgreSQL back end, its tables and migrations.
//! - `writer`: the single writer thread that batches appends into one durable write, and tells
//!   the follower ([`Journal::follow`]) every durable record in order.
//! - `scan`: replaying the journal on several threads, in order.
//! - `verify`: walking the chain and naming the first break.
//! - `export`: JSON-lines export, verification of an export, and import.
//! - `error`: the journal's error type.

/// The writer's maps, hashed with foldhash: each batch looks up every stream it touches.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

mod backend;
mod error;
pub mod export;
pub mod layout;
mod postgres;
mod published;
mod record;
mod scan;
mod sled_store;
#[doc(hidden)]
pub mod tamper;
pub mod testing;
pub mod verify;
mod wal;
mod writer;

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

pub use error::{Error, Result};
pub use record::{hex, parse_hex, Hash, NewEvent, Record, GENESIS, MAX_NAME_LEN};
pub use verify::{Break, BreakKind};
pub use writer::Follower;

use backend::{Reads, Table};
use record::check_name;
use writer::Request;

/// What an appender expects of the stream it appends to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version.
    Any,
    /// The stream must have no events yet.
    NoStream,
    /// The stream's last event must have exactly this version.
    Exact(u64),
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => write!(f, "any"),
            ExpectedVersion::NoStream => write!(f, "no stream"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

impl ExpectedVersion {
    fn admits(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(v) => actual == v,
        }
    }
}

/// The last record of the journal: its sequence number and hash (seq 0 and [`GENESIS`] when
/// empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Sequence number of the last record.
    pub seq: u64,
    /// Hash of the last record.
    pub hash: Hash,
}

impl Head {
    /// The head of an empty journal.
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: GENESIS,
    };
}

/// Where an acknowledged append landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Sequence number of the first appended record (the head's + 1 when no events were given).
    pub first_seq: u64,
    /// Sequence number of the last appended record.
    pub last_seq: u64,
    /// The stream's version after the append.
    pub version: u64,
}

/// One stream's part of [`Journal::append_all_async`].
#[derive(Clone, Debug)]
pub struct StreamAppend {
    /// The stream.
    pub stream: String,
    /// The version it must be at.
    pub expected: ExpectedVersion,
    /// What to append to it.
    pub events: Vec<NewEvent>,
}

/// A node's hold on a named lease (a shard of the groups): appends that carry it are refused
/// once the lease has passed to another node, or expired ([`Journal::append_all_fenced_async`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The lease's name.
    pub lease: String,
    /// The node holding it.
    pub holder: String,
    /// The fencing token it was granted with; it grows at each takeover.
    pub token: u64,
}

/// A lease as granted ([`Journal::acquire_lease`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The lease's name.
    pub name: String,
    /// The node holding it.
    pub holder: String,
    /// Its fencing token: the same while one holder renews it, one more at each takeover (and
    /// at a holder's own return after it expired).
    pub token: u64,
    /// How long it had left when granted, by the database's clock; a holder counts it from
    /// before it asked, so it stops acting before the database lets another take over.
    pub remaining: std::time::Duration,
}

/// An object's state saved at a version of its stream, so a rebuild replays only what follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The stream version the state is as of.
    pub version: u64,
    /// The saved state, as its owner encoded it.
    pub state: Vec<u8>,
}

/// A stream's snapshot as stored (see [`Journal::stored_snapshot`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// The stream version the state is as of.
    pub version: u64,
    /// The saved state, as its owner encoded it.
    pub state: Vec<u8>,
    /// The stored value, which a save over it expects to find.
    value: Vec<u8>,
}

/// How to open a journal.
#[derive(Clone, Debug)]
pub struct Config {
    /// Bytes of sled's page cache (sled only).
    pub cache_capacity: u64,
    /// Most appends committed together in one flush.
    pub max_batch: usize,
    /// Appends waiting for the writer before appenders are made to wait (backpressure).
    pub queue_depth: usize,
    /// PostgreSQL only: refuse to open while another process that asked the same has the
    /// database open (a session advisory lock, [`Error::Held`]). The service asks it, so that two
    /// `serve`s on one database never both act on its groups; the audit tools do not. (sled's
    /// directory lock always holds a journal to one process.)
    pub sole_service: bool,
    /// sled only: bytes of the write-ahead file (see `wal`), a round of batches between two
    /// syncs of sled's files; held within 4 KiB and 1 GiB.
    pub wal_capacity: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cache_capacity: 64 << 20,
            max_batch: 1024,
            queue_depth: 4096,
            sole_service: false,
            wal_capacity: wal::CAPACITY,
        }
    }
}

/// A handle on an open journal. Cloning is cheap; all clones share one writer.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    reads: Box<dyn Reads>,
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    /// Appends acknowledged (durable) through this handle's writer since it was opened.
    appends: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue stops the writer once it has committed what it holds.
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Journal {
    /// Opens (creating if needed) the journal in directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Journal> {
        Self::open_with(path, Config::default())
    }

    /// Opens (creating if needed) the journal in directory `path`, tuned by `config`.
    pub fn open_with(path: impl AsRef<Path>, config: Config) -> Result<Journal> {
        let path = path.as_ref();
        let db = open_db(path, config.cache_capacity)?;
        let tree = sled_store::prepare(&db)?;
        let (reads, log) = sled_store::open(db, tree, path, config.wal_capacity)?;
        Self::start(Box::new(reads), log, &config)
    }

    /// Connects to the journal in the PostgreSQL database at `url` (a libpq-style
    /// `postgres://user@host:port/database` URL), creating or migrating its tables first.
    /// Several processes may share one database: appends are serialised by the database, so
    /// sequence numbers and the chain stay whole. The URL may hold a password: it is never
    /// logged, nor put in an error.
    pub fn connect(url: &str, config: Config) -> Result<Journal> {
        let (reads, log) = postgres::connect(url, config.sole_service)?;
        Self::start(Box::new(reads), log, &config)
    }

    fn start(reads: Box<dyn Reads>, log: impl writer::Log, config: &Config) -> Result<Journal> {
        let (requests, receiver) = mpsc::channel(config.queue_depth.max(1));
        let writer = writer::Writer::start(log, config.max_batch.max(1))?;
        let handle = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer.run(receiver))?;
        Ok(Journal {
            inner: Arc::new(Inner {
                reads,
                requests: Some(requests),
                writer: Some(handle),
                appends: AtomicU64::new(0),
            }),
        })
    }

    /// Appends `events` to `stream` if it is at the `expected` version: all of them or none.
    /// Returns once they are durable on disk. Blocks the calling thread: from async code use
    /// [`Journal::append_async`].
    pub fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended> {
        let (request, reply) = self.request(stream, expected, events)?;
        self.sender()?
            .blocking_send(request)
            .map_err(|_| Error::Closed)?;
        let appended = reply.blocking_recv().map_err(|_| Error::Closed)??;
        self.inner.appends.fetch_add(1, Ordering::Relaxed);
        Ok(appended)
    }

    /// [`Journal::append`] for async callers: waits without blocking a runtime thread.
    pub async fn append_async(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended> {
        let (request, reply) = self.request(stream, expected, events)?;
        self.sender()?
            .send(request)
            .await
            .map_err(|_| Error::Closed)?;
        let appended = reply.await.map_err(|_| Error::Closed)??;
        self.inner.appends.fetch_add(1, Ordering::Relaxed);
        Ok(appended)
    }

    /// Appends to several streams at once: every part is checked against its expected version,
    /// then either all of them are written (consecutively, in the order given) and flushed, or
    /// none is. Answers each part's [`Appended`], in order. For a step that spans objects and
    /// must not be half done after a crash (a webhook's nonce and the execution it leads to).
    pub async fn append_all_async(&self, parts: Vec<StreamAppend>) -> Result<Vec<Appended>> {
        self.append_all_fenced_async(parts, None).await
    }

    /// [`Journal::append_all_async`], refused with [`Error::Fenced`] unless `fence`'s lease is
    /// still held by its holder with its token when the append commits (checked in the same
    /// transaction on PostgreSQL; on sled, the one process holds every lease).
    pub async fn append_all_fenced_async(
        &self,
        parts: Vec<StreamAppend>,
        fence: Option<Fence>,
    ) -> Result<Vec<Appended>> {
        for part in &parts {
            check_name("stream id", &part.stream).map_err(Error::InvalidStream)?;
        }
        let (reply, receiver) = oneshot::channel();
        self.sender()?
            .send(Request::AppendAll {
                parts,
                fence,
                reply,
            })
            .await
            .map_err(|_| Error::Closed)?;
        let appended = receiver.await.map_err(|_| Error::Closed)??;
        self.inner.appends.fetch_add(1, Ordering::Relaxed);
        Ok(appended)
    }

    /// Has `follower` told every record after sequence number `after`, in order and without a
    /// gap: at once those already in the journal, then each batch as it becomes durable, before
    /// its appends are answered. So whatever `follower` builds (the service's read models)
    /// holds an append by the time its appender hears of it, and is built from the journal's
    /// records alone: another process following the same journal builds the same thing.
    ///
    /// It runs on the writer's thread and must be quick, and should not read the journal: on
    /// sled, reads from that thread see the tree without the batch being told. One follower per journal: a second
    /// call replaces the first. A follower that fails (answers an error, or panics) is dropped,
    /// and from then on appends are refused ([`Error::FollowerFailed`]) until a follower is set
    /// again: what it builds no longer follows the journal, and a write nobody can read back is
    /// worse than none. Answers the last sequence number told. Blocks: call it from outside an
    /// async runtime.
    pub fn follow(
        &self,
        after: u64,
        follower: impl FnMut(&[Record]) -> std::result::Result<(), String> + Send + 'static,
    ) -> Result<u64> {
        let (reply, receiver) = oneshot::channel();
        self.sender()?
            .blocking_send(Request::Follow {
                after,
                follower: Box::new(follower),
                reply,
            })
            .map_err(|_| Error::Closed)?;
        receiver.blocking_recv().map_err(|_| Error::Closed)?
    }

    /// Reads what other writers (other nodes on the same database) appended since this one last
    /// looked, and tells the follower about it, in order. Answers the head it caught up to.
    /// Blocks: call it from outside an async runtime, or use [`Journal::catch_up_async`]. On
    /// sled, where this process is the only writer, there is never anything to catch up on.
    pub fn catch_up(&self) -> Result<Head> {
        let (reply, receiver) = oneshot::channel();
        self.sender()?
            .blocking_send(Request::CatchUp { reply })
            .map_err(|_| Error::Closed)?;
        receiver.blocking_recv().map_err(|_| Error::Closed)?
    }

    /// [`Journal::catch_up`] for async callers.
    pub async fn catch_up_async(&self) -> Result<Head> {
        let (reply, receiver) = oneshot::channel();
        self.sender()?
            .send(Request::CatchUp { reply })
            .await
            .map_err(|_| Error::Closed)?;
        receiver.await.map_err(|_| Error::Closed)?
    }

    /// Acquires the lease `name` for `holder` for `ttl`, or renews it if `holder` has it: the
    /// lease with its fencing token, or `None` while another holder's lease has not expired.
    /// Expiry is by the database's clock, never a node's. On sled, the one process holds every
    /// lease, with token 1.
    pub fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<Lease>> {
        self.inner.reads.acquire_lease(name, holder, ttl)
    }

    /// Lets go of the lease `name` if `holder` still has it with `token`, so that another may
    /// take it at once; answers whether it did.
    pub fn release_lease(&self, name: &str, holder: &str, token: u64) -> Result<bool> {
        self.inner.reads.release_lease(name, holder, token)
    }

    /// The secret shared by every process on this journal's database under `name` (the
    /// cluster's operator token): the one stored, or `make`'s, stored now if none was (the first
    /// to store wins). `None` on sled, where one process has the journal.
    pub fn shared_secret(
        &self,
        name: &str,
        make: impl FnOnce() -> String,
    ) -> Result<Option<String>> {
        self.inner.reads.shared_secret(name, &make())
    }

    /// Every lease not yet expired, by name.
    pub fn leases(&self) -> Result<Vec<Lease>> {
        self.inner.reads.leases()
    }

    /// How many appends were acknowledged since the journal was opened (an import's sealed
    /// records are not appends). For the service's metrics.
    pub fn appends(&self) -> u64 {
        self.inner.appends.load(Ordering::Relaxed)
    }

    fn request(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<(Request, oneshot::Receiver<Result<Appended>>)> {
        check_name("stream id", stream).map_err(Error::InvalidStream)?;
        let (reply, receiver) = oneshot::channel();
        let request = Request::Append {
            stream: stream.to_owned(),
            expected,
            events,
            reply,
        };
        Ok((request, receiver))
    }

    fn sender(&self) -> Result<&mpsc::Sender<Request>> {
        self.inner.requests.as_ref().ok_or(Error::Closed)
    }

    /// The journal's last record (seq 0 when empty).
    pub fn head(&self) -> Result<Head> {
        self.inner.reads.head()
    }

    /// The version of `stream`'s last event (0 when it has none).
    pub fn stream_version(&self, stream: &str) -> Result<u64> {
        self.inner.reads.stream_version(stream)
    }

    /// The events of `stream` from version `from` (inclusive), in order.
    pub fn read_stream(
        &self,
        stream: &str,
        from: u64,
    ) -> impl Iterator<Item = Result<Record>> + '_ {
        self.inner
            .reads
            .stream(stream, from.max(1), u64::MAX, false)
    }

    /// The events of `stream` from version `to` (inclusive) back to its first, newest first.
    pub fn read_stream_back(
        &self,
        stream: &str,
        to: u64,
    ) -> impl Iterator<Item = Result<Record>> + '_ {
        self.inner.reads.stream(stream, 1, to, true)
    }

    /// Every record from sequence number `from` (inclusive), in order.
    pub fn read_all(&self, from: u64) -> impl Iterator<Item = Result<Record>> + '_ {
        self.read_range(from, u64::MAX)
    }

    /// The records `first..=last` (those that exist), in order.
    fn read_range(&self, first: u64, last: u64) -> impl Iterator<Item = Result<Record>> + '_ {
        self.inner.reads.records(first, last)
    }

    /// The record at `seq`, if any.
    pub fn record(&self, seq: u64) -> Result<Option<Record>> {
        self.inner.reads.record(seq)
    }

    /// Saves `state` as `stream`'s state at `version`. Snapshots are a cache: losing one costs
    /// a longer replay, never data, so they are not flushed on their own.
    pub fn save_snapshot(&self, stream: &str, version: u64, state: &[u8]) -> Result<()> {
        let value = self.snapshot_value(stream, version, state)?;
        self.inner.reads.put(Table::Snapshots, stream, value)
    }

    /// [`Journal::save_snapshot`] over a snapshot saved in parts (see
    /// [`Journal::save_snapshot_parts`]): removes parts `0..parts`, which it no longer names,
    /// in the same write, so a crash leaves the parts with the head that names them or neither.
    /// (On PostgreSQL, parts another writer adds at the same instant may stay, named by no
    /// head, until a snapshot in parts saves over them.)
    pub fn save_snapshot_over_parts(
        &self,
        stream: &str,
        version: u64,
        state: &[u8],
        parts: usize,
    ) -> Result<()> {
        let value = self.snapshot_value(stream, version, state)?;
        let drop: Vec<String> = (0..parts).map(|part| part_key(stream, part)).collect();
        self.inner.reads.put_snapshot_dropping(stream, value, &drop)
    }

    /// Whether parts of `stream`'s snapshot are stored (see [`Journal::save_snapshot_parts`]):
    /// a snapshot in parts saves every part the first time, and only
    /// [`Journal::save_snapshot_over_parts`] removes them, all at once.
    pub fn has_snapshot_parts(&self, stream: &str) -> Result<bool> {
        Ok(self
            .inner
            .reads
            .get(Table::Snapshots, &part_key(stream, 0))?
            .is_some())
    }

    /// What the snapshots' table holds for `state` as `stream`'s state at `version`.
    fn snapshot_value(&self, stream: &str, version: u64, state: &[u8]) -> Result<Vec<u8>> {
        let anchor = self.anchor(stream, version)?.ok_or_else(|| {
            Error::InvalidEvent(format!("stream {stream} has no version {version}"))
        })?;
        Ok(layout::encode_snapshot(version, &anchor, state))
    }

    /// `stream`'s snapshot as stored, not checked against the journal: what
    /// [`Journal::save_snapshot_parts`] saves over. One that does not decode is answered at
    /// version 0 with an empty state, so that it can be saved over.
    pub fn stored_snapshot(&self, stream: &str) -> Result<Option<StoredSnapshot>> {
        let Some(value) = self.inner.reads.get(Table::Snapshots, stream)? else {
            return Ok(None);
        };
        let (version, state) = layout::decode_snapshot(&value)
            .map(|(version, _, state)| (version, state))
            .unwrap_or_default();
        Ok(Some(StoredSnapshot {
            version,
            state,
            value,
        }))
    }

    /// Whether `stored`, read by [`Journal::stored_snapshot`], still matches the journal.
    pub fn matches(&self, stream: &str, stored: &StoredSnapshot) -> Result<bool> {
        let Some((version, anchor, _)) = layout::decode_snapshot(&stored.value) else {
            return Ok(false);
        };
        Ok(self.anchor(stream, version)? == Some(anchor))
    }

    /// Saves a snapshot of `stream` at `version` in parts, in one write (all or none): `parts`
    /// (each a part's number and its state at `version`) and `head`, the snapshot proper, which
    /// says at which version each part was saved (its owner's business: see
    /// [`Journal::load_snapshot_parts`]). A part unchanged since an earlier snapshot need not be
    /// saved again, but only while no one else saved over it: so the write is made only if the
    /// stream's snapshot is still `over` (none: none is stored), as read before, and answers
    /// whether it was. Of two writers that read the same stored snapshot, only the first saves;
    /// on PostgreSQL, two that found none stored (no row to lock) may both save, each a whole
    /// set of parts, the later replacing the earlier.
    pub fn save_snapshot_parts(
        &self,
        stream: &str,
        version: u64,
        parts: &[(usize, Vec<u8>)],
        head: &[u8],
        over: Option<&StoredSnapshot>,
    ) -> Result<bool> {
        let anchor = self.anchor(stream, version)?.ok_or_else(|| {
            Error::InvalidEvent(format!("stream {stream} has no version {version}"))
        })?;
        let mut entries: Vec<(String, Vec<u8>)> = parts
            .iter()
            .map(|(part, state)| {
                let value = layout::encode_snapshot(version, &anchor, state);
                (part_key(stream, *part), value)
            })
            .collect();
        let value = layout::encode_snapshot(version, &anchor, head);
        entries.push((stream.to_owned(), value));
        let expected = over.map(|stored| stored.value.as_slice());
        self.inner.reads.put_snapshots_if(stream, expected, entries)
    }

    /// The parts of `stream`'s snapshot at `version`, part `i` as saved at `versions[i]` (see
    /// [`Journal::save_snapshot_parts`]): all of them, or none if one is missing, was saved at
    /// another version (or after `version`), or no longer matches the journal.
    pub fn load_snapshot_parts(
        &self,
        stream: &str,
        version: u64,
        versions: &[u64],
    ) -> Result<Option<Vec<Vec<u8>>>> {
        let keys: Vec<String> = (0..versions.len()).map(|i| part_key(stream, i)).collect();
        let values = self.inner.reads.get_snapshots(&keys)?;
        let mut parts = Vec::with_capacity(values.len());
        let mut anchors = Vec::with_capacity(values.len());
        for (part, (value, &expected)) in values.into_iter().zip(versions).enumerate() {
            let Some((saved, anchor, state)) = value.as_deref().and_then(layout::decode_snapshot)
            else {
                tracing::warn!(stream, part, "ignoring a snapshot with a part missing");
                return Ok(None);
            };
            if saved != expected || saved > version {
                tracing::warn!(
                    stream,
                    part,
                    saved,
                    expected,
                    "ignoring a snapshot whose part was saved again"
                );
                return Ok(None);
            }
            parts.push(state);
            anchors.push(anchor);
        }
        let mut distinct = versions.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let known: std::collections::HashMap<u64, Option<Hash>> = distinct
            .iter()
            .copied()
            .zip(self.inner.reads.anchors(stream, &distinct)?)
            .collect();
        for (part, (anchor, saved)) in anchors.iter().zip(versions).enumerate() {
            if known.get(saved).copied().flatten() != Some(*anchor) {
                tracing::warn!(
                    stream,
                    part,
                    saved,
                    "ignoring a snapshot whose part no longer matches the journal"
                );
                return Ok(None);
            }
        }
        Ok(Some(parts))
    }

    /// The latest snapshot of `stream`, if there is one and it still matches the journal (a
    /// snapshot whose record was replaced, say by an import, is ignored).
    pub fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>> {
        self.load_snapshot_under(stream, stream)
    }

    /// Saves `state` as `stream`'s state at `version` under `name`: one of the snapshots a
    /// reader keeps of a stream's past beside its own (the console keeps a group's state at the
    /// start of each day, so that a page folds only the days it shows). In the same write,
    /// removes the ones under `drop`. A cache, as snapshots are.
    pub fn save_named_snapshot(
        &self,
        stream: &str,
        name: &str,
        version: u64,
        state: &[u8],
        drop: &[&str],
    ) -> Result<()> {
        let value = self.snapshot_value(stream, version, state)?;
        let drop: Vec<String> = drop.iter().map(|name| named_key(stream, name)).collect();
        self.inner
            .reads
            .put_snapshot_dropping(&named_key(stream, name), value, &drop)
    }

    /// Removes `stream`'s snapshots saved under `names` (see [`Journal::save_named_snapshot`]):
    /// a reader's that it will never read again, a deleted group's, say.
    pub fn drop_named_snapshots(&self, stream: &str, names: &[&str]) -> Result<()> {
        let keys: Vec<String> = names.iter().map(|name| named_key(stream, name)).collect();
        self.inner.reads.drop_snapshots(&keys)
    }

    /// The snapshot of `stream` saved under `name` (see [`Journal::save_named_snapshot`]), if
    /// there is one and it still matches the journal.
    pub fn load_named_snapshot(&self, stream: &str, name: &str) -> Result<Option<Snapshot>> {
        self.load_snapshot_under(&named_key(stream, name), stream)
    }

    /// The snapshot of `stream` stored under `key`, if it still matches the journal.
    fn load_snapshot_under(&self, key: &str, stream: &str) -> Result<Option<Snapshot>> {
        let Some(value) = self.inner.reads.get(Table::Snapshots, key)? else {
            return Ok(None);
        };
        let Some((version, anchor, state)) = layout::decode_snapshot(&value) else {
            tracing::warn!(stream, "ignoring a malformed snapshot");
            return Ok(None);
        };
        if self.anchor(stream, version)? != Some(anchor) {
            tracing::warn!(
                stream,
                version,
                "ignoring a snapshot that no longer matches the journal"
            );
            return Ok(None);
        }
        Ok(Some(Snapshot { version, state }))
    }

    /// Saves `state`, a reader's view of the whole journal up to `head` (the service's index,
    /// say), under `name`, so a restart replays only what follows `head`. Like snapshots, a
    /// cache: it reaches the disk with the back end's next flush (on sled, its flusher's tick, a
    /// round of the write-ahead file or a clean close), and losing it costs a longer replay.
    pub fn save_checkpoint(&self, name: &str, head: Head, state: &[u8]) -> Result<()> {
        let value = layout::encode_checkpoint(&head, state);
        self.inner.reads.put(Table::Checkpoints, name, value)
    }

    /// The checkpoint saved under `name`, if there is one and its head is still a record of
    /// this journal (a checkpoint of a journal since replaced, by an import, is ignored).
    pub fn load_checkpoint(&self, name: &str) -> Result<Option<(Head, Vec<u8>)>> {
        let Some(value) = self.inner.reads.get(Table::Checkpoints, name)? else {
            return Ok(None);
        };
        let Some((head, state)) = layout::decode_checkpoint(&value) else {
            tracing::warn!(name, "ignoring a malformed checkpoint");
            return Ok(None);
        };
        let anchored = match head.seq {
            0 => true,
            seq => self.record(seq)?.is_some_and(|r| r.hash == head.hash),
        };
        if !anchored {
            tracing::warn!(
                name,
                seq = head.seq,
                "ignoring a checkpoint that no longer matches the journal"
            );
            return Ok(None);
        }
        Ok(Some((head, state)))
    }

    /// The hash of `stream`'s record at `version`, which a snapshot is anchored to.
    fn anchor(&self, stream: &str, version: u64) -> Result<Option<Hash>> {
        self.inner.reads.anchor(stream, version)
    }

    /// Walks the whole chain. Returns the verified head, or [`Error::BrokenChain`] naming the
    /// first break by sequence number.
    pub fn verify(&self) -> Result<Head> {
        let mut verifier = verify::Verifier::default();
        for stored in self.inner.reads.stored(1) {
            let (seq, record) = stored?;
            verifier.check(seq, record).map_err(Error::BrokenChain)?;
        }
        let head = verifier.finish(self.head()?).map_err(Error::BrokenChain)?;
        // A whole chain, but only the start of what an import was bringing.
        if let Some(expected) = self.unfinished_import()? {
            return Err(Error::ImportUnfinished {
                head: head.seq,
                expected: expected.seq,
            });
        }
        Ok(head)
    }

    /// The head of the export an import was bringing in when it stopped part way, if one did:
    /// the journal then holds only the export's first records, a whole chain that is not the
    /// whole journal. (On sled an import into a new directory is staged apart, so only one
    /// into a directory holding an empty journal can leave this.)
    pub fn unfinished_import(&self) -> Result<Option<Head>> {
        let value = self.inner.reads.get(Table::Checkpoints, IMPORT_MARK)?;
        Ok(value
            .filter(|value| !value.is_empty())
            .and_then(|value| layout::decode_checkpoint(&value))
            .map(|(head, _)| head))
    }

    /// Marks an import of an export ending at `head` under way, until
    /// [`Journal::finish_import`]. Public for tests that need a journal an import left part
    /// way; only [`export::import`] marks one otherwise.
    #[doc(hidden)]
    pub fn start_import(&self, head: Head) -> Result<()> {
        let value = layout::encode_checkpoint(&head, &[]);
        self.inner.reads.put(Table::Checkpoints, IMPORT_MARK, value)
    }

    /// Ends what [`Journal::start_import`] marked, once every record is in.
    pub(crate) fn finish_import(&self) -> Result<()> {
        self.inner
            .reads
            .put(Table::Checkpoints, IMPORT_MARK, Vec::new())
    }

    /// The sled tree holding records, index and head (see `layout`), for benches that compare
    /// with raw sled and tests that tamper; `None` on PostgreSQL. Writing to it bypasses every
    /// guarantee. While the journal is open, the tree may lack streams' last index runs, which
    /// its writer holds (see `sled_store::HeldRuns`).
    #[doc(hidden)]
    pub fn raw_tree(&self) -> Option<sled::Tree> {
        self.inner.reads.raw_tree()
    }

    /// Flushes everything to disk (appends are already durable when acknowledged).
    pub fn flush(&self) -> Result<()> {
        self.inner.reads.flush()
    }

    /// Appends already-sealed records (an import) through the writer, so they chain after the
    /// current head exactly as they were.
    fn append_sealed(&self, records: Vec<Record>) -> Result<Head> {
        let (reply, receiver) = oneshot::channel();
        self.sender()?
            .blocking_send(Request::Sealed { records, reply })
            .map_err(|_| Error::Closed)?;
        receiver.blocking_recv().map_err(|_| Error::Closed)?
    }
}

/// How long `open` waits for a directory lock that is being let go.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Where part `part` of `stream`'s snapshot is kept, beside the snapshot itself: after a unit
/// separator, which no stream id holds (they are printable ASCII).
fn part_key(stream: &str, part: usize) -> String {
    format!("{stream}\u{1f}{part}")
}

/// Where [`Journal::start_import`] marks an import under way, among the checkpoints: no
/// checkpoint's name starts with a record separator.
const IMPORT_MARK: &str = "\u{1e}import";

/// Where a named snapshot of `stream` is stored: apart from its own snapshot and its parts.
fn named_key(stream: &str, name: &str) -> String {
    format!("{stream}\u{1e}{name}")
}

/// Opens sled, waiting a little for its directory lock: after a journal in this process is
/// dropped, sled's background threads let go of the lock a moment later. A lock held by
/// another live process is still refused, after the wait.
fn open_db(path: &Path, cache_capacity: u64) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            .open()
        {
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

#[cfg(test)]
mod tests;
