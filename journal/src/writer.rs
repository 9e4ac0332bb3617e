//! The single writer: group commit.
//!
//! All appends go through one thread. It takes every request waiting in its queue (up to
//! `max_batch`), checks each against its stream's version, chains the records and writes them and
//! the new head in one atomic write to its [`Log`]: one entry of the sled back end's write-ahead
//! file, or one PostgreSQL transaction. A failed request (a version conflict) is answered at
//! once and leaves the others untouched; a failed write answers all of the batch with the error.
//!
//! Once a batch is written the writer flushes and only then answers its appenders, then has the
//! log make the batch readable ([`Log::publish`]: sled's readers wait for it). A failed
//! flush answers them with the error; what it was flushing may or may not be on disk. On
//! PostgreSQL a later flush may carry it; the sled back end refuses every batch after a failed
//! flush until the journal is opened again, whose replay of the write-ahead file keeps it if it
//! reached the disk. So an appender that got an error must read the journal to know. The head
//! stays where the batch put it.
//!
//! A flusher on a second thread, overlapping the next batch's write with this one's flush, was
//! tried when the sled back end flushed sled itself, and measured: it flushed more often for no
//! more throughput, as sled's flush woke its whole I/O pool each time. (sled's back end now
//! syncs a write-ahead file of its own instead, see `wal`.)
//!
//! Being the only writer is what makes "never overwrite a key" and the chain simple: the next
//! sequence number and previous hash are this thread's own state.

use tokio::sync::{mpsc, oneshot};

use crate::record::Record;
use crate::verify::{Break, BreakKind};
use crate::HashMap;
use crate::{Appended, Error, ExpectedVersion, Fence, Head, NewEvent, Result, StreamAppend};

pub(crate) enum Request {
    Append {
        stream: String,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        reply: oneshot::Sender<Result<Appended>>,
    },
    /// Appends to several streams, all of them or none (see [`crate::Journal::append_all_async`]).
    AppendAll {
        parts: Vec<StreamAppend>,
        fence: Option<Fence>,
        reply: oneshot::Sender<Result<Vec<Appended>>>,
    },
    /// Reads what other writers appended and tells the follower (see
    /// [`crate::Journal::catch_up`]).
    CatchUp {
        reply: oneshot::Sender<Result<Head>>,
    },
    /// Records sealed elsewhere (an import), to be stored exactly as they are.
    Sealed {
        records: Vec<Record>,
        reply: oneshot::Sender<Result<Head>>,
    },
    /// Installs the follower (see [`crate::Journal::follow`]), told every record after `after`.
    Follow {
        after: u64,
        follower: Follower,
        reply: oneshot::Sender<Result<u64>>,
    },
}

/// Told the journal's records in sequence order, without a gap, once they are durable (see
/// [`crate::Journal::follow`]); answers why it could not take them in, if it could not.
pub type Follower = Box<dyn FnMut(&[Record]) -> std::result::Result<(), String> + Send>;

/// Where the writer keeps records: sled (`sled_store`) or PostgreSQL (`postgres`). A batch is
/// [`Log::begin`], then the versions of the streams it appends to, then one [`Log::write`] (or
/// [`Log::abandon`] when nothing of it is written), then [`Log::flush`].
pub(crate) trait Log: Send + 'static {
    /// The head as stored, and the last stored record's sequence number: they differ only in a
    /// damaged journal.
    fn stored_head(&mut self) -> Result<(Head, u64)>;
    /// Starts a batch. Answers the stored head when others may have appended since this writer's
    /// last batch (several nodes on one database), `None` when this writer is the only one.
    fn begin(&mut self) -> Result<Option<Head>>;
    /// The version of `stream`'s last record, as stored (0 when it has none).
    fn stream_version(&mut self, stream: &str) -> Result<u64>;
    /// [`Log::stream_version`] of each of `streams`, in order: a log where a read is a round
    /// trip answers them all in one.
    fn stream_versions(&mut self, streams: &[&str]) -> Result<Vec<u64>> {
        streams.iter().map(|s| self.stream_version(s)).collect()
    }
    /// Writes `records`, consecutive after the stored head, and `head`, the last of them: all or
    /// nothing. A failed write leaves nothing of them stored.
    fn write(&mut self, records: &[Record], head: Head) -> Result<()>;
    /// Ends a batch that wrote nothing.
    fn abandon(&mut self);
    /// Makes what was written durable.
    fn flush(&mut self) -> Result<()>;
    /// Answers a flushed batch's appenders through `answer` and makes the batch readable: at
    /// once where the flush already did (PostgreSQL's commit); sled's answers first and inserts
    /// after, its readers waiting from the flush on (see `published`). An error means that the
    /// batch, durable and answered, could not be made readable: the log takes no more batches,
    /// and opening the journal again reads it. (A log may also stop after a batch it published,
    /// and say so at the next.)
    fn publish(&mut self, answer: impl FnOnce()) -> Result<()> {
        answer();
        Ok(())
    }
    /// The stored records `first..=last`, in order.
    fn read(&mut self, first: u64, last: u64) -> Result<Vec<Record>>;
    /// Whether `fence`'s lease is still held with its token, as of now in the batch (and
    /// until it commits). A log only one process can write to holds every lease.
    fn fence_holds(&mut self, _fence: &Fence) -> Result<bool> {
        Ok(true)
    }
}

pub(crate) struct Writer<L: Log> {
    log: L,
    max_batch: usize,
    head: Head,
    /// Stream versions seen so far; a stream not here is read from the log once. Only kept
    /// across batches while this writer is the journal's only one.
    versions: HashMap<String, u64>,
    /// Set for a batch the log could not begin: its appends are refused with this.
    unavailable: Option<Error>,
    /// The fences checked in this batch, and whether they held.
    fences: HashMap<Fence, bool>,
    /// Set when the stored records end elsewhere than the head: appending would build on a
    /// broken chain, so every append is refused until the journal is repaired.
    broken: Option<Break>,
    /// Told every record once durable, and the last sequence number it was told.
    follower: Option<(Follower, u64)>,
    /// Set when the follower failed: what it builds no longer follows the journal, so nothing
    /// more is acknowledged until a follower is set again (a restart rebuilds it).
    follower_failed: bool,
}

/// What one request of a batch will be answered once the batch is durable.
enum Pending {
    Append(oneshot::Sender<Result<Appended>>, Appended),
    AppendAll(oneshot::Sender<Result<Vec<Appended>>>, Vec<Appended>),
    Sealed(oneshot::Sender<Result<Head>>, Head),
}

impl Pending {
    fn answer(self) {
        match self {
            Pending::Append(reply, appended) => drop(reply.send(Ok(appended))),
            Pending::AppendAll(reply, appended) => drop(reply.send(Ok(appended))),
            Pending::Sealed(reply, head) => drop(reply.send(Ok(head))),
        }
    }

    fn fail(self, error: &Error) {
        match self {
            Pending::Append(reply, _) => drop(reply.send(Err(error.duplicate()))),
            Pending::AppendAll(reply, _) => drop(reply.send(Err(error.duplicate()))),
            Pending::Sealed(reply, _) => drop(reply.send(Err(error.duplicate()))),
        }
    }
}

impl<L: Log> Writer<L> {
    pub(crate) fn start(log: L, max_batch: usize) -> Result<Writer<L>> {
        let mut writer = Writer {
            log,
            max_batch,
            head: Head::EMPTY,
            versions: HashMap::default(),
            unavailable: None,
            fences: HashMap::default(),
            broken: None,
            follower: None,
            follower_failed: false,
        };
        writer.reload()?;
        Ok(writer)
    }

    /// Reads the head back from disk, after opening or after a failed write.
    fn reload(&mut self) -> Result<()> {
        self.versions.clear();
        let (head, last) = self.log.stored_head()?;
        self.head = head;
        self.broken = (last != self.head.seq).then(|| Break {
            seq: last.min(self.head.seq) + 1,
            kind: if last < self.head.seq {
                BreakKind::Truncated {
                    head_seq: self.head.seq,
                }
            } else {
                BreakKind::HeadMismatch {
                    head_seq: self.head.seq,
                    head_hash: crate::hex(&self.head.hash),
                }
            },
        });
        if let Some(broken) = &self.broken {
            tracing::error!(%broken, "journal head and records disagree; appends are refused");
        }
        Ok(())
    }

    /// Writes batches until every sender is gone, then flushes a last time.
    pub(crate) fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while let Some(first) = requests.blocking_recv() {
            batch.push(first);
            while batch.len() < self.max_batch {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            // A follower is installed before the batch begins, outside its transaction: its
            // catch-up holds no lock that other nodes' appends wait on. It is then told this
            // batch's records like every other, once they are durable.
            let mut appends = Vec::with_capacity(batch.len());
            for request in batch.drain(..) {
                match request {
                    Request::Follow {
                        after,
                        follower,
                        reply,
                    } => {
                        let _ = reply.send(self.follow(after, follower));
                    }
                    Request::CatchUp { reply } => {
                        let _ = reply.send(self.catch_up());
                    }
                    append => appends.push(append),
                }
            }
            if appends.is_empty() {
                continue;
            }
            let mut staged = Vec::new();
            let pending = self.commit(appends, &mut staged);
            if !pending.is_empty() {
                self.flush_and_answer(pending, staged);
            }
        }
        if let Err(error) = self.log.flush() {
            tracing::error!(%error, "final journal flush failed");
        }
    }

    /// Stages and writes one batch. Answers its failed requests, and returns the others, still
    /// to be flushed and answered.
    /// The records written are left in `staged`, for the follower.
    fn commit(&mut self, requests: Vec<Request>, staged: &mut Vec<Record>) -> Vec<Pending> {
        self.unavailable = None;
        self.fences.clear();
        match self.log.begin() {
            Ok(None) => {}
            Ok(Some(head)) => {
                // Another writer may have appended: what this one remembers is stale.
                self.head = head;
                self.versions.clear();
            }
            Err(error) => {
                tracing::error!(%error, "journal batch could not begin; its appends are refused");
                self.unavailable = Some(error);
            }
        }
        if self.unavailable.is_none() {
            if let Err(error) = self.learn_versions(&requests) {
                tracing::error!(%error, "journal batch could not read its streams' versions");
                self.log.abandon();
                self.unavailable = Some(error);
            }
        }
        let mut pending = Vec::new();
        let mut head = self.head;
        for request in requests {
            match request {
                Request::Append {
                    stream,
                    expected,
                    events,
                    reply,
                } => match self.stage(&stream, expected, events, &mut head, staged) {
                    Ok(appended) => pending.push(Pending::Append(reply, appended)),
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                },
                Request::AppendAll {
                    parts,
                    fence,
                    reply,
                } => match self.stage_all(parts, fence.as_ref(), &mut head, staged) {
                    Ok(appended) => pending.push(Pending::AppendAll(reply, appended)),
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                },
                Request::Sealed { records, reply } => {
                    match self.stage_sealed(records, &mut head, staged) {
                        Ok(()) => pending.push(Pending::Sealed(reply, head)),
                        Err(error) => {
                            let _ = reply.send(Err(error));
                        }
                    }
                }
                // `run` takes these out of a batch before committing it.
                Request::Follow { reply, .. } => {
                    let _ = reply.send(Err(Error::Closed));
                }
                Request::CatchUp { reply } => {
                    let _ = reply.send(Err(Error::Closed));
                }
            }
        }
        if pending.is_empty() {
            if self.unavailable.is_none() {
                self.log.abandon();
            }
            return pending;
        }
        if let Some(error) = &self.unavailable {
            // The batch was given up while staging (a fence that could not be checked): what
            // it staged is not written.
            pending.into_iter().for_each(|p| p.fail(error));
            staged.clear();
            return Vec::new();
        }
        match self.log.write(staged, head) {
            Ok(()) => {
                self.head = head;
                pending
            }
            Err(error) => {
                tracing::error!(%error, "journal write failed; nothing of this batch is acknowledged");
                if let Err(error) = self.reload() {
                    tracing::error!(%error, "journal head could not be read back");
                }
                pending.into_iter().for_each(|p| p.fail(&error));
                staged.clear();
                Vec::new()
            }
        }
    }

    /// Flushes, then tells the follower what was staged, then answers `pending`: with success
    /// only once the flush has succeeded, and only once the follower has taken in its records.
    fn flush_and_answer(&mut self, pending: Vec<Pending>, staged: Vec<Record>) {
        match self.log.flush() {
            Ok(()) => {
                // Durable, so answered as such even if the follower fails on them.
                if let Err(error) = self.tell(&staged) {
                    self.told_failed(&error);
                }
                // A failure to publish stops the log, which says so; the answers stand, as
                // their batch is durable.
                let _ = self
                    .log
                    .publish(|| pending.into_iter().for_each(Pending::answer));
            }
            Err(error) => {
                tracing::error!(%error, "journal flush failed; nothing it covered is acknowledged");
                pending.into_iter().for_each(|p| p.fail(&error));
            }
        }
    }

    /// Moves the head to the stored one if another writer moved it, and tells the follower
    /// what it appended.
    fn catch_up(&mut self) -> Result<Head> {
        let (stored, _) = self.log.stored_head()?;
        if stored.seq > self.head.seq {
            self.head = stored;
            self.versions.clear();
        }
        if let Err(error) = self.tell(&[]) {
            self.told_failed(&error);
            return Err(error);
        }
        Ok(self.head)
    }

    /// Installs `follower` and tells it the records already written after `after`. Answers the
    /// last sequence number told.
    fn follow(&mut self, after: u64, follower: Follower) -> Result<u64> {
        self.follower = Some((follower, after));
        self.follower_failed = false;
        let told = self.tell(&[]);
        if let Err(error) = &told {
            self.told_failed(error);
            // Whoever asked hears the error and has no follower, whatever failed.
            self.follower = None;
        }
        told
    }

    /// After telling the follower failed: a follower that failed is dropped and stops the
    /// appends; records that could not be read for it (a lost connection) are read again
    /// before the next batch's are told, so it misses none, only later.
    fn told_failed(&mut self, error: &Error) {
        match error {
            Error::FollowerFailed => self.follower_fails(),
            error => tracing::warn!(
                %error,
                "records could not be read for the journal's follower; it catches up next batch"
            ),
        }
    }

    /// Drops a follower that failed, and refuses appends until another is set.
    fn follower_fails(&mut self) {
        tracing::error!("the journal's follower failed; appends are refused until it is set again");
        self.follower = None;
        self.follower_failed = true;
    }

    /// Tells the follower the records after the last it was told, up to the head: those it
    /// missed (already written, or a batch whose flush failed) read back from the tree, then
    /// `staged`. Answers the last sequence number it was told.
    fn tell(&mut self, staged: &[Record]) -> Result<u64> {
        let Some((follower, told)) = &mut self.follower else {
            return Ok(0);
        };
        let first_staged = staged.first().map_or(self.head.seq + 1, |r| r.seq);
        let mut next = *told + 1;
        while next < first_staged {
            let last = first_staged.min(next + 1024) - 1;
            let missed = self.log.read(next, last)?;
            *told = deliver(follower, &missed, *told)?;
            next = last + 1;
        }
        *told = deliver(follower, staged, *told)?;
        Ok(*told)
    }

    /// Checks one append and adds its records to `staged`, advancing `head`.
    fn stage(
        &mut self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        head: &mut Head,
        staged: &mut Vec<Record>,
    ) -> Result<Appended> {
        self.writable()?;
        let actual = self.version(stream)?;
        if !expected.admits(actual) {
            return Err(Error::Conflict {
                stream: stream.to_owned(),
                expected,
                actual,
            });
        }
        let first_seq = head.seq + 1;
        let mut version = actual;
        for event in events {
            version += 1;
            let record = Record::seal(head.seq + 1, stream, version, event, head.hash);
            *head = Head {
                seq: record.seq,
                hash: record.hash,
            };
            staged.push(record);
        }
        self.versions.insert(stream.to_owned(), version);
        Ok(Appended {
            first_seq,
            last_seq: head.seq,
            version,
        })
    }

    /// Checks every part of an append across streams, then adds them all, in order; a conflict
    /// in any part refuses the whole and leaves `staged` untouched.
    fn stage_all(
        &mut self,
        parts: Vec<StreamAppend>,
        fence: Option<&Fence>,
        head: &mut Head,
        staged: &mut Vec<Record>,
    ) -> Result<Vec<Appended>> {
        self.writable()?;
        if let Some(fence) = fence {
            let holds = match self.fences.get(fence) {
                Some(holds) => *holds,
                None => match self.log.fence_holds(fence) {
                    Ok(holds) => {
                        self.fences.insert(fence.clone(), holds);
                        holds
                    }
                    Err(error) => {
                        // The batch's transaction may be aborted with it: nothing more of
                        // this batch is tried, and whatever was staged is not written.
                        tracing::error!(%error, "a fence could not be checked; the batch is refused");
                        self.log.abandon();
                        self.unavailable = Some(error.duplicate());
                        return Err(error);
                    }
                },
            };
            if !holds {
                return Err(Error::Fenced {
                    lease: fence.lease.clone(),
                    token: fence.token,
                });
            }
        }
        let mut after: HashMap<String, u64> = HashMap::default();
        for part in &parts {
            let actual = match after.get(&part.stream) {
                Some(version) => *version,
                None => self.version(&part.stream)?,
            };
            if !part.expected.admits(actual) {
                return Err(Error::Conflict {
                    stream: part.stream.clone(),
                    expected: part.expected,
                    actual,
                });
            }
            after.insert(part.stream.clone(), actual + part.events.len() as u64);
        }
        parts
            .into_iter()
            .map(|part| self.stage(&part.stream, part.expected, part.events, head, staged))
            .collect()
    }

    /// Adds records sealed elsewhere, refusing all of them if any would not chain onto `head`.
    fn stage_sealed(
        &mut self,
        records: Vec<Record>,
        head: &mut Head,
        staged: &mut Vec<Record>,
    ) -> Result<()> {
        self.writable()?;
        let mut staged_head = *head;
        let mut staged_versions = HashMap::default();
        for record in &records {
            let version = match staged_versions.get(&record.stream) {
                Some(version) => *version,
                None => self.version(&record.stream)?,
            };
            let kind = if record.seq != staged_head.seq + 1 {
                Some(BreakKind::OutOfPlace { found: record.seq })
            } else if record.prev_hash != staged_head.hash {
                Some(BreakKind::PreviousHashMismatch)
            } else if record.compute_hash() != record.hash {
                Some(BreakKind::HashMismatch)
            } else if record.version != version + 1 {
                Some(BreakKind::StreamVersionGap {
                    stream: record.stream.clone(),
                    expected: version + 1,
                    found: record.version,
                })
            } else {
                None
            };
            if let Some(kind) = kind {
                let seq = staged_head.seq + 1;
                return Err(Error::BrokenChain(Break { seq, kind }));
            }
            staged_versions.insert(record.stream.clone(), record.version);
            staged_head = Head {
                seq: record.seq,
                hash: record.hash,
            };
        }
        staged.extend(records);
        self.versions.extend(staged_versions);
        *head = staged_head;
        Ok(())
    }

    /// Whether anything may be appended: not on a broken chain, nor while the follower is failed.
    fn writable(&self) -> Result<()> {
        if let Some(error) = &self.unavailable {
            return Err(error.duplicate());
        }
        if let Some(broken) = &self.broken {
            return Err(Error::BrokenChain(broken.clone()));
        }
        if self.follower_failed {
            return Err(Error::FollowerFailed);
        }
        Ok(())
    }

    /// Reads the versions of the streams `requests` append to that are not known yet, at once.
    fn learn_versions(&mut self, requests: &[Request]) -> Result<()> {
        let mut unknown: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut note = |stream: &'_ str| {
            if !self.versions.contains_key(stream) && seen.insert(stream.to_owned()) {
                unknown.push(stream.to_owned());
            }
        };
        for request in requests {
            match request {
                Request::Append { stream, .. } => note(stream),
                Request::AppendAll { parts, .. } => parts.iter().for_each(|p| note(&p.stream)),
                Request::Sealed { records, .. } => records.iter().for_each(|r| note(&r.stream)),
                Request::Follow { .. } | Request::CatchUp { .. } => {}
            }
        }
        if unknown.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = unknown.iter().map(String::as_str).collect();
        let versions = self.log.stream_versions(&names)?;
        for (stream, version) in unknown.into_iter().zip(versions) {
            self.versions.insert(stream, version);
        }
        Ok(())
    }

    fn version(&mut self, stream: &str) -> Result<u64> {
        if let Some(version) = self.versions.get(stream) {
            return Ok(*version);
        }
        let version = self.log.stream_version(stream)?;
        self.versions.insert(stream.to_owned(), version);
        Ok(version)
    }
}

/// Tells `follower` the records of `records` after `told`, guarded: a follower that fails or
/// panics is a fault of the follower, not of the journal, and never takes the writer down.
fn deliver(follower: &mut Follower, records: &[Record], told: u64) -> Result<u64> {
    let start = records.partition_point(|r| r.seq <= told);
    let fresh = &records[start..];
    let Some(last) = fresh.last() else {
        return Ok(told);
    };
    let told_now = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| follower(fresh)));
    match told_now {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => {
            tracing::error!(reason, "the journal's follower could not take in a record");
            return Err(Error::FollowerFailed);
        }
        Err(_) => return Err(Error::FollowerFailed),
    }
    Ok(last.seq)
}
