//! The embedded back end: the journal in a sled database in a local directory (see `layout`).

use std::ops::Range;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::{Reads, Records, Stored, Table};
use crate::published::{self, Published};
use crate::wal::{self, Wal};
use crate::writer::Log;
use crate::HashMap;
use crate::{layout, Error, Hash, Head, Record, Result};

/// Records a format 1 journal moves into blocks per sled batch while it is migrated.
const MIGRATION_BATCH: usize = 16 * 1024;

/// Streams whose last index run the writer keeps at hand between batches; past this many, it
/// forgets them all and reads them from sled again.
pub(crate) const RUN_CACHE: usize = 4096;

/// Opens the tree of records in `db` for this code: stamps a new journal with
/// [`layout::FORMAT`], migrates a format 1 journal, and refuses one written by a newer build.
pub(crate) fn prepare(db: &sled::Db) -> Result<sled::Tree> {
    let tree = db.open_tree(layout::TREE)?;
    if tree.get(layout::FORMAT_KEY)?.as_deref() == Some(&[layout::FORMAT_2][..]) {
        // Only the stamp changes: from now on a crash may leave batches in the write-ahead file
        // that only a build reading format 3 replays.
        tree.insert(layout::FORMAT_KEY, &[layout::FORMAT])?;
        tree.flush()?;
    }
    match tree.get(layout::FORMAT_KEY)? {
        Some(format) if *format == [layout::FORMAT] => {
            if holds_format_1(db)? {
                // Records in format 1's tree are either what was migrated (a start stopped
                // before letting the tree go) or were written after, by an older build: only
                // the first may go.
                let old = db.open_tree(layout::TREE_V1)?;
                if old.get(layout::HEAD_KEY)? != tree.get(layout::MIGRATED_KEY)? {
                    return Err(Error::Corrupt {
                        seq: 0,
                        reason: format!(
                            "the data directory's tree {:?} holds records written after it was \
                             migrated to layout {}, by an older build; export them with that \
                             build before opening the directory with this one",
                            layout::TREE_V1,
                            layout::FORMAT
                        ),
                    });
                }
                db.drop_tree(layout::TREE_V1)?;
            }
            guard_format_1(db)?;
            Ok(tree)
        }
        Some(format) => Err(Error::Corrupt {
            seq: 0,
            reason: format!(
                "the journal's layout is format {format:?}, which this build does not read \
                 (it reads format {})",
                layout::FORMAT
            ),
        }),
        None => {
            let mut finish = sled::Batch::default();
            if holds_format_1(db)? {
                let old = db.open_tree(layout::TREE_V1)?;
                while migrate_step(&old, &tree, MIGRATION_BATCH)? {}
                if let Some(head) = old.get(layout::HEAD_KEY)? {
                    finish.insert(layout::HEAD_KEY, head.clone());
                    finish.insert(layout::MIGRATED_KEY, head);
                }
                finish.remove(layout::MIGRATION_KEY);
            }
            finish.insert(layout::FORMAT_KEY, &[layout::FORMAT]);
            tree.apply_batch(finish)?;
            tree.flush()?;
            if holds_format_1(db)? {
                db.drop_tree(layout::TREE_V1)?;
            }
            guard_format_1(db)?;
            Ok(tree)
        }
    }
}

/// Whether `db` holds format 1's tree with records or index entries in it.
fn holds_format_1(db: &sled::Db) -> Result<bool> {
    if !db
        .tree_names()
        .iter()
        .any(|name| name == layout::TREE_V1.as_bytes())
    {
        return Ok(false);
    }
    let old = db.open_tree(layout::TREE_V1)?;
    Ok(old.scan_prefix([b'r']).next().is_some() || old.scan_prefix([b's']).next().is_some())
}

/// Leaves in format 1's tree, once it holds no records, a head with none after it, so that a
/// build from before layout 2 opening this directory sees a truncated journal and refuses to
/// append, rather than an empty one it would start anew. Checked at every open, so that a stop
/// between letting the old tree go and writing this cannot leave the directory without it.
fn guard_format_1(db: &sled::Db) -> Result<()> {
    let guard = db.open_tree(layout::TREE_V1)?;
    if guard.get(layout::FORMAT_KEY)?.is_some() {
        return Ok(());
    }
    let head = Head {
        seq: 1,
        hash: [0xff; 32],
    };
    let mut writes = sled::Batch::default();
    writes.insert(layout::HEAD_KEY, &layout::encode_head(&head)[..]);
    writes.insert(layout::FORMAT_KEY, &[layout::FORMAT]);
    guard.apply_batch(writes)?;
    db.flush()?;
    Ok(())
}

/// Copies up to `limit` format 1 entries from `old` into `tree`, in one sled batch with a
/// cursor ([`layout::MIGRATION_KEY`]), so that a migration cut short resumes where it stopped:
/// records (`'r'` keys) into blocks first, then stream index entries (`'s'` keys) into runs.
/// The index is rebuilt from its own entries, not from the records, so that an entry whose
/// record is missing or does not decode still names it. `old` is only read. Answers whether
/// anything was left to copy.
pub(crate) fn migrate_step(old: &sled::Tree, tree: &sled::Tree, limit: usize) -> Result<bool> {
    use std::ops::Bound::{Excluded, Included};
    // The cursor: the phase (b'r', then b's') and the last key of it copied.
    let (mut phase, mut after) = match tree.get(layout::MIGRATION_KEY)? {
        Some(cursor) if cursor.len() > 1 => (cursor[0], Some(cursor[1..].to_vec())),
        _ => (b'r', None),
    };
    loop {
        let start = after.clone().map_or(Included(vec![phase]), Excluded);
        let entries: Vec<(sled::IVec, sled::IVec)> = old
            .range::<Vec<u8>, _>((start, Excluded(vec![phase + 1])))
            .take(limit)
            .collect::<sled::Result<_>>()?;
        let Some((last, _)) = entries.last() else {
            if phase == b'r' {
                phase = b's';
                after = None;
                continue;
            }
            return Ok(false);
        };
        let mut writes = Writes::new();
        let mut cursor = vec![phase];
        cursor.extend_from_slice(last);
        writes.push((layout::MIGRATION_KEY.to_vec(), cursor));
        if phase == b'r' {
            let records: Vec<(u64, &[u8])> = entries
                .iter()
                .filter_map(|(key, bytes)| Some((layout::decode_record_key(key)?, &bytes[..])))
                .collect();
            skipped(entries.len() - records.len(), "record keys");
            write_blocks(&records, &mut writes);
        } else {
            let mut runs = RunWriter::default();
            let mut malformed = 0;
            for (key, seq) in &entries {
                match (layout::decode_index_key(key), layout::decode_seq(seq)) {
                    (Some((stream, version)), Some(seq)) => runs.add(tree, stream, version, seq)?,
                    _ => malformed += 1,
                }
            }
            skipped(malformed, "stream index entries");
            runs.write(&mut writes);
        }
        let mut batch = sled::Batch::default();
        for (key, value) in writes {
            batch.insert(key, value);
        }
        tree.apply_batch(batch)?;
        return Ok(true);
    }
}

/// Says that a migration left out `count` malformed format 1 entries of `what`: keys or values
/// of the wrong length, which no build wrote and which have no place in layout 2.
fn skipped(count: usize, what: &str) {
    if count > 0 {
        tracing::warn!(
            count,
            what,
            "malformed format 1 entries left out of the migration"
        );
    }
}

/// Writes `entries` (slot and stored bytes, in slot order) as blocks of consecutive slots, at
/// most [`layout::BLOCK_RECORDS`] records each, closed once they reach [`layout::BLOCK_BYTES`].
fn write_blocks(entries: &[(u64, &[u8])], writes: &mut Writes) {
    let mut start = 0;
    while start < entries.len() {
        let mut end = start + 1;
        let mut bytes = entries[start].1.len();
        while end < entries.len()
            && end - start < layout::BLOCK_RECORDS
            && bytes < layout::BLOCK_BYTES
            && entries[end].0 == entries[end - 1].0 + 1
        {
            bytes += entries[end].1.len();
            end += 1;
        }
        let first = entries[start].0;
        writes.push((
            layout::block_key(first).to_vec(),
            layout::encode_block(first, &entries[start..end]),
        ));
        start = end;
    }
}

/// A stream's last index run, as the writer extends it.
#[derive(Clone, Debug)]
struct Run {
    /// The version of its first entry.
    first_version: u64,
    /// How many versions it holds.
    len: u64,
    /// The seq of its last version.
    last_seq: u64,
    /// Its stored form.
    value: Vec<u8>,
}

impl Run {
    fn last_version(&self) -> u64 {
        self.first_version + self.len - 1
    }
}

/// The last entry of `tree` with a key in `low..=high`: the block or run holding a place, or
/// the last one of all.
fn last_within(
    tree: &sled::Tree,
    low: &[u8],
    high: &[u8],
) -> Result<Option<(sled::IVec, sled::IVec)>> {
    Ok(tree.range(low..=high).next_back().transpose()?)
}

/// `stream`'s last index run, if it has one.
fn last_run(tree: &sled::Tree, stream: &str) -> Result<Option<Run>> {
    let (low, high) = (
        layout::run_key(stream, 0),
        layout::run_key(stream, u64::MAX),
    );
    let Some((key, value)) = last_within(tree, &low, &high)? else {
        return Ok(None);
    };
    let run = ReadRun::decode(stream, &key, &value)?;
    Ok(Some(Run {
        first_version: run.first_version,
        len: run.seqs.len() as u64,
        // A decoded run has a first seq at least.
        last_seq: run.seqs.last().copied().unwrap_or_default(),
        value: value.to_vec(),
    }))
}

/// The index runs a batch extends or starts, by stream.
#[derive(Default)]
struct RunWriter {
    runs: HashMap<String, Touched>,
}

/// A stream's runs touched by a batch.
struct Touched {
    /// Its last run.
    last: Run,
    /// Whether the batch added to `last`.
    changed: bool,
    /// The runs the batch filled and closed before `last`.
    closed: Vec<Run>,
}

impl RunWriter {
    /// Adds `stream`'s `version` at `seq`, reading its last run from `known` (the writer's cache
    /// of runs, stored or held) or else from `tree` the first time the stream is seen. A version
    /// the run already has is left as it is.
    fn add_known(
        &mut self,
        tree: &sled::Tree,
        known: &HashMap<String, Option<Run>>,
        stream: &str,
        version: u64,
        seq: u64,
    ) -> Result<()> {
        let fresh = || Run {
            first_version: version,
            len: 0,
            last_seq: seq,
            value: Vec::new(),
        };
        if !self.runs.contains_key(stream) {
            let stored = match known.get(stream) {
                Some(run) => run.clone(),
                None => last_run(tree, stream)?,
            };
            let touched = Touched {
                last: stored.unwrap_or_else(fresh),
                changed: false,
                closed: Vec::new(),
            };
            self.runs.insert(stream.to_owned(), touched);
        }
        let Some(touched) = self.runs.get_mut(stream) else {
            return Ok(());
        };
        let run = &mut touched.last;
        if run.len > 0 && version <= run.last_version() {
            // Indexed already (a record indexed again from its block, see
            // `index_past_the_mark`).
            return Ok(());
        }
        let follows = run.len == 0 || run.last_version() + 1 == version;
        if !follows || run.len as usize >= layout::RUN_LEN {
            // Written whether or not this batch added to it: the writer may have held it rather
            // than put it into sled (see `HeldRuns`).
            let full = std::mem::replace(run, fresh());
            touched.changed = false;
            if full.len > 0 {
                touched.closed.push(full);
            }
        }
        layout::extend_run(&mut run.value, run.last_seq, seq);
        run.last_seq = seq;
        run.len += 1;
        touched.changed = true;
        Ok(())
    }

    fn add(&mut self, tree: &sled::Tree, stream: &str, version: u64, seq: u64) -> Result<()> {
        self.add_known(tree, &HashMap::default(), stream, version, seq)
    }

    /// Puts every run the batch added to or closed into `writes`.
    fn write(&self, writes: &mut Writes) {
        self.write_closed(writes);
        for (stream, touched) in &self.runs {
            if touched.changed {
                let run = &touched.last;
                writes.push((
                    layout::run_key(stream, run.first_version),
                    run.value.clone(),
                ));
            }
        }
    }

    /// Puts the runs the batch filled and closed into `writes`.
    fn write_closed(&self, writes: &mut Writes) {
        for (stream, touched) in &self.runs {
            for run in &touched.closed {
                writes.push((
                    layout::run_key(stream, run.first_version),
                    run.value.clone(),
                ));
            }
        }
    }

    /// Each touched stream's last run (every one of them the batch added to).
    fn into_last(self) -> impl Iterator<Item = (String, Run)> {
        self.runs
            .into_iter()
            .map(|(stream, touched)| (stream, touched.last))
    }
}

/// A batch's sled writes, key and value, in order.
type Writes = Vec<(Vec<u8>, Vec<u8>)>;

/// The journal in `dir`, whose sled database `db` holds its records in `tree` (see [`prepare`]):
/// everyone's reads, and the writer's side.
pub(crate) fn open(
    db: sled::Db,
    tree: sled::Tree,
    dir: &Path,
    wal_capacity: u64,
) -> Result<(SledReads, SledLog)> {
    let log = SledLog::open(db.clone(), tree.clone(), dir, wal_capacity)?;
    let reads = SledReads {
        snapshots: db.open_tree(layout::SNAPSHOTS)?,
        checkpoints: db.open_tree(layout::CHECKPOINTS)?,
        published: log.published.clone(),
        held: log.held.clone(),
        db,
        tree,
    };
    Ok((reads, log))
}

/// The last index runs of the streams the writer extended since it last put them into sled. A
/// batch's runs go into the write-ahead file with it, but into sled only once a round of the file
/// is full (before sled's files are synced and the round rewound), when the writer forgets the
/// runs it keeps at hand ([`RUN_CACHE`]), or at a clean close: a stream that every batch extends
/// costs one sled insert a round rather than one a batch, and sled's inserts were most of the
/// writer's time. Once they are in, the tree's mark [`layout::INDEXED_KEY`] says so. A crash
/// loses none of them: opening replays the round, and indexes from their blocks the records
/// past the mark that a damaged file could not give back (see [`index_past_the_mark`]).
/// Readers take a stream's last run from here before sled's: it is the newer.
#[derive(Default)]
pub(crate) struct HeldRuns(std::sync::Mutex<HashMap<String, Run>>);

impl HeldRuns {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Run>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The last version of `stream`'s held run, if it has one.
    fn last_version(&self, stream: &str) -> Option<u64> {
        self.lock().get(stream).map(Run::last_version)
    }

    /// `stream`'s last run as read, if it is held.
    fn read(&self, stream: &str) -> Result<Option<ReadRun>> {
        let held = self.lock();
        let Some(run) = held.get(stream) else {
            return Ok(None);
        };
        let seqs = layout::decode_run(&run.value).ok_or_else(|| Error::Corrupt {
            seq: run.last_seq,
            reason: format!("the writer's index run of stream {stream} is malformed"),
        })?;
        Ok(Some(ReadRun {
            first_version: run.first_version,
            seqs,
        }))
    }
}

/// The writer's side: each batch's writes into the write-ahead file (`wal`), synced; then its
/// appenders answered; then its writes into the records tree one key at a time, readers waiting
/// for them meanwhile (see [`Published`]). sled's files are synced once a round of the file is
/// full.
pub(crate) struct SledLog {
    pub(crate) db: sled::Db,
    pub(crate) tree: sled::Tree,
    /// The journal's directory: sled's files and the write-ahead file.
    dir: PathBuf,
    pub(crate) wal: Wal,
    /// The writes of the batch written to the file and not yet in sled: sled gets them once they
    /// are synced and answered.
    unapplied: Writes,
    /// The seq of the last record of `unapplied`.
    unapplied_head: u64,
    /// The last index runs the batch of `unapplied` extended, held once it is in sled.
    unapplied_runs: Vec<(String, Run)>,
    /// Streams' last runs not yet in sled (see [`HeldRuns`]), shared with the readers.
    pub(crate) held: Arc<HeldRuns>,
    /// What readers may rely on the tree holding.
    pub(crate) published: Arc<Published>,
    /// Set when the file or sled failed to take a batch: what the file holds may then be
    /// behind what was written after, or sled behind the file, so nothing more is written
    /// until the journal is opened again, whose replay starts from what is on disk.
    failed: Option<String>,
    /// Cleared when sled's files could not be synced: Linux may then have dropped their
    /// unwritten pages and a later sync would not say so, so the file keeps its round (and
    /// grows) until the journal is opened again and replays it.
    rewinds: bool,
    /// Streams' last index runs as stored or held, read by [`Log::stream_version`] or left by
    /// the last batch; this writer is the tree's only one, so they stay true until it writes
    /// again.
    runs: HashMap<String, Option<Run>>,
    /// Tests set it to make sled refuse the next batches' inserts, as a failing disk would.
    #[cfg(test)]
    pub(crate) refusing: Arc<std::sync::atomic::AtomicBool>,
    /// Tests hold it to stop the writer between a batch's answers and its inserts.
    #[cfg(test)]
    pub(crate) between: Arc<Mutex<()>>,
}

#[cfg(test)]
use std::sync::Mutex;

impl SledLog {
    /// The writer's side of the journal in `dir`: replays into sled what the write-ahead file
    /// holds past sled's head (what a crash kept from it) and makes sled's files durable, then
    /// starts a new round of the file, of `capacity` bytes.
    pub(crate) fn open(
        db: sled::Db,
        tree: sled::Tree,
        dir: &Path,
        capacity: u64,
    ) -> Result<SledLog> {
        let (wal, entries) = Wal::open(dir, capacity)?;
        let replayed = replay(&tree, entries)?;
        let indexed = index_past_the_mark(&tree)?;
        if replayed > 0 || indexed > 0 {
            tracing::info!(
                batches = replayed,
                indexed,
                "replayed the journal's write-ahead file"
            );
            // sled may hold what it recovered only in the page cache; the new round
            // overwrites the entries that hold it too.
            db.flush()?;
            wal::sync_dir(dir)?;
        }
        Ok(SledLog {
            db,
            tree,
            dir: dir.to_owned(),
            wal,
            unapplied: Vec::new(),
            unapplied_head: 0,
            unapplied_runs: Vec::new(),
            held: Arc::default(),
            published: Arc::default(),
            failed: None,
            rewinds: true,
            runs: HashMap::default(),
            #[cfg(test)]
            refusing: Arc::default(),
            #[cfg(test)]
            between: Arc::default(),
        })
    }

    /// Stops the writer for good (until the journal is opened again) after `error`.
    fn fail(&mut self, error: &Error, what: &str) {
        tracing::error!(%error, "{what}; appends are refused until the journal is opened again");
        let reason = format!("{what}: {error}");
        self.published.failed(&reason);
        self.failed = Some(reason);
        self.unapplied.clear();
        self.unapplied_runs.clear();
        self.runs.clear();
    }

    /// Hands sled the synced and answered batch's writes, and tells readers the tree holds it;
    /// syncs sled's files and rewinds the file once its round is full.
    fn apply(&mut self) -> Result<()> {
        #[cfg(test)]
        drop(self.between.lock());
        if let Err(error) = self.insert_unapplied() {
            self.fail(&error, "sled refused a synced batch");
            return Err(error);
        }
        self.unapplied.clear();
        self.held.lock().extend(self.unapplied_runs.drain(..));
        self.published.inserted(self.unapplied_head);
        if self.rewinds && self.wal.full() {
            // Everything the file holds is in sled, its held runs put in: once sled's files are
            // durable, it may go.
            self.put_held()?;
            let durable = self
                .db
                .flush()
                .map_err(Error::from)
                .and_then(|_| wal::sync_dir(&self.dir));
            if let Err(error) = durable {
                // The batch is durable in the file all the same.
                self.rewinds = false;
                tracing::error!(%error, "sled's files could not be synced; the write-ahead file keeps its round until the journal is opened again");
            } else if let Err(error) = self.wal.rewind() {
                // sled's files hold this batch, but the file may have lost its first header
                // and so every entry after it: nothing more may go there.
                self.fail(
                    &error,
                    "the journal's write-ahead file could not be rewound",
                );
            }
        }
        Ok(())
    }

    /// Puts the held runs into sled (see [`HeldRuns`]). Readers go on reading them from the
    /// held ones until they are all in.
    fn put_held(&mut self) -> Result<()> {
        let held: Vec<(String, Run)> = self
            .held
            .lock()
            .iter()
            .map(|(stream, run)| (stream.clone(), run.clone()))
            .collect();
        for (stream, run) in &held {
            if let Err(error) = self
                .tree
                .insert(layout::run_key(stream, run.first_version), &run.value[..])
            {
                let error = Error::from(error);
                self.fail(&error, "sled refused the writer's index runs");
                return Err(error);
            }
        }
        // After the runs: sled recovers a prefix of its inserts.
        if let Err(error) = mark_indexed(&self.tree) {
            self.fail(&error, "sled refused the writer's index runs");
            return Err(error);
        }
        self.held.lock().clear();
        Ok(())
    }

    /// Forgets the runs kept at hand once they are too many, held ones first put into sled,
    /// where they are read from again.
    fn forget_runs_if_many(&mut self) -> Result<()> {
        if self.runs.len() >= RUN_CACHE {
            self.put_held()?;
            self.runs.clear();
        }
        Ok(())
    }

    /// Inserts the batch's writes into the tree, in order.
    fn insert_unapplied(&self) -> Result<()> {
        #[cfg(test)]
        if self.refusing.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(std::io::Error::other("an insert failed (injected by a test)").into());
        }
        for (key, value) in &self.unapplied {
            self.tree.insert(&key[..], &value[..])?;
        }
        Ok(())
    }
}

/// Marks `tree` as indexed through its head (see [`layout::INDEXED_KEY`]).
fn mark_indexed(tree: &sled::Tree) -> Result<()> {
    let head = layout::read_head(tree)?.seq;
    tree.insert(layout::INDEXED_KEY, &head.to_be_bytes())?;
    Ok(())
}

/// Indexes the records of `tree` past its mark (see [`layout::INDEXED_KEY`]) from their blocks,
/// each version its stream's runs do not have yet, and marks it indexed through its head. Past
/// the mark lie only records whose last runs the writer held when it stopped and the
/// write-ahead file did not give back (it was damaged, or they were in it and the replay put
/// them in already: then nothing is added). A tree without a mark was last opened by a build
/// that indexed as it went. Stops at a record that does not decode, leaving it to `verify`.
/// Answers how many records it went through.
fn index_past_the_mark(tree: &sled::Tree) -> Result<u64> {
    let head = layout::read_head(tree)?.seq;
    let stored = tree.get(layout::INDEXED_KEY)?;
    let mark = match &stored {
        None => head,
        Some(mark) => layout::decode_seq(mark).ok_or_else(|| Error::Corrupt {
            seq: 0,
            reason: "the journal's indexed-through mark is malformed".into(),
        })?,
    };
    if stored.is_some() && mark >= head {
        return Ok(0);
    }
    let mut runs = RunWriter::default();
    let mut through = mark;
    for record in records(tree, mark + 1, head) {
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                tracing::warn!(%error, "a record past the index's mark could not be read; the index stops before it");
                break;
            }
        };
        runs.add(tree, &record.stream, record.version, record.seq)?;
        through = record.seq;
    }
    let mut writes = Writes::new();
    runs.write(&mut writes);
    writes.push((layout::INDEXED_KEY.to_vec(), through.to_be_bytes().to_vec()));
    for (key, value) in writes {
        tree.insert(key, value)?;
    }
    // Durable at once (the first mark above all: from here on only the mark says how far the
    // index goes).
    tree.flush()?;
    Ok(through - mark)
}

/// Inserts into `tree` the writes of every entry of the file's round, in order: sled holds
/// part of them or all, the same keys with the same values or, for an index run and the head,
/// values the later entries write again. Answers how many batches it replayed. A round that
/// starts after sled's head is missing records and is refused; one that ends before it (an
/// entry damaged on disk cut it short) is not replayed, as sled already holds more records
/// (their last index runs, which it may lack, are indexed again from them: see
/// [`index_past_the_mark`]).
fn replay(tree: &sled::Tree, entries: Vec<wal::Entry>) -> Result<usize> {
    let head = layout::read_head(tree)?.seq;
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(0);
    };
    if first.after > head {
        return Err(Error::Corrupt {
            seq: head + 1,
            reason: format!(
                "the journal's head is at seq {head}, but its write-ahead file ({}) goes on \
                 from seq {}: the records between are missing",
                wal::FILE_NAME,
                first.after
            ),
        });
    }
    if last.head < head {
        tracing::warn!(
            head,
            file_ends = last.head,
            "the journal's write-ahead file ends before sled's head; nothing of it is replayed"
        );
        return Ok(0);
    }
    let replayed = entries.len();
    for entry in entries {
        for (key, value) in entry.writes {
            tree.insert(key, value)?;
        }
    }
    Ok(replayed)
}

impl Drop for SledLog {
    /// A clean close: sled's files synced, the file emptied, so that nothing is replayed on
    /// opening, even into a tree changed by hand since. Not after a failure, nor while a panic
    /// unwinds (sled may hold part of a batch the file still has to replay).
    fn drop(&mut self) {
        // Readers still waiting (the writer panicked between its answers and its inserts) hear
        // that they wait in vain; the others read on.
        self.published.failed("the journal's writer stopped");
        if self.failed.is_some()
            || !self.unapplied.is_empty()
            || !self.rewinds
            || std::thread::panicking()
        {
            return;
        }
        if self.put_held().is_err() {
            return;
        }
        let closed = self.db.flush().map_err(Error::from).and_then(|_| {
            wal::sync_dir(&self.dir)?;
            self.wal.clear()
        });
        if let Err(error) = closed {
            tracing::warn!(%error, "the journal's write-ahead file could not be emptied at close; it is replayed on opening");
        }
    }
}

impl Log for SledLog {
    fn stored_head(&mut self) -> Result<(Head, u64)> {
        Ok((layout::read_head(&self.tree)?, last_record_seq(&self.tree)?))
    }

    fn begin(&mut self) -> Result<Option<Head>> {
        // sled's directory lock makes this writer the only one.
        match &self.failed {
            Some(reason) => Err(Error::Io(std::io::Error::other(format!(
                "{reason}; the journal must be opened again"
            )))),
            None => Ok(None),
        }
    }

    fn stream_version(&mut self, stream: &str) -> Result<u64> {
        if let Some(run) = self.runs.get(stream) {
            return Ok(run.as_ref().map_or(0, Run::last_version));
        }
        self.forget_runs_if_many()?;
        let run = last_run(&self.tree, stream)?;
        let version = run.as_ref().map_or(0, Run::last_version);
        self.runs.insert(stream.to_owned(), run);
        Ok(version)
    }

    fn write(&mut self, records: &[Record], head: Head) -> Result<()> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        self.forget_runs_if_many()?;
        let mut writes = Writes::new();
        let mut runs = RunWriter::default();
        for record in records {
            runs.add_known(
                &self.tree,
                &self.runs,
                &record.stream,
                record.version,
                record.seq,
            )?;
        }
        let encoded: Vec<Vec<u8>> = records.iter().map(Record::encode).collect();
        let entries: Vec<(u64, &[u8])> = records
            .iter()
            .zip(&encoded)
            .map(|(record, bytes)| (record.seq, &bytes[..]))
            .collect();
        write_blocks(&entries, &mut writes);
        runs.write_closed(&mut writes);
        // What sled takes with the batch: its blocks and closed runs, then the head. Its last
        // runs are held (see `HeldRuns`), and in the file with the rest.
        let with_the_batch = writes.len();
        let last: Vec<(String, Run)> = runs.into_last().collect();
        for (stream, run) in &last {
            writes.push((
                layout::run_key(stream, run.first_version),
                run.value.clone(),
            ));
        }
        let head_write = (
            layout::HEAD_KEY.to_vec(),
            layout::encode_head(&head).to_vec(),
        );
        writes.push(head_write.clone());
        if let Err(error) = self.wal.append(first.seq - 1, head.seq, &writes) {
            // Part of the entry may be in the file, and entries already there unsynced.
            self.fail(
                &error,
                "the journal's write-ahead file could not be written",
            );
            return Err(error);
        }
        writes.truncate(with_the_batch);
        // The head last: readers wait for the whole batch anyway (see `Published`).
        writes.push(head_write);
        self.unapplied.extend(writes);
        self.unapplied_head = head.seq;
        self.runs.extend(
            last.iter()
                .map(|(stream, run)| (stream.clone(), Some(run.clone()))),
        );
        self.unapplied_runs.extend(last);
        Ok(())
    }

    fn abandon(&mut self) {}

    fn flush(&mut self) -> Result<()> {
        if let Some(reason) = &self.failed {
            return Err(Error::Io(std::io::Error::other(reason.clone())));
        }
        if self.unapplied.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.wal.sync() {
            // A later sync may succeed without this one's pages: nothing after them may be
            // acknowledged.
            self.fail(&error, "the journal's write-ahead file could not be synced");
            return Err(error);
        }
        // Durable: from here on, readers wait for the batch. So before the follower is told it
        // (on this thread, whose own reads do not wait): whoever sees it in what the follower
        // builds finds it in the journal too.
        published::on_the_writer();
        self.published.answering(self.unapplied_head);
        Ok(())
    }

    fn publish(&mut self, answer: impl FnOnce()) -> Result<()> {
        answer();
        if self.unapplied.is_empty() {
            return Ok(());
        }
        self.apply()
    }

    fn read(&mut self, first: u64, last: u64) -> Result<Vec<Record>> {
        // After a failure the tree may lack what the head says was written.
        if let Some(reason) = &self.failed {
            return Err(Error::Io(std::io::Error::other(reason.clone())));
        }
        records(&self.tree, first, last).collect()
    }
}

/// Everyone else's side: reads straight from sled's trees, each once the records tree holds
/// every batch answered (see [`Published`]).
pub(crate) struct SledReads {
    db: sled::Db,
    tree: sled::Tree,
    snapshots: sled::Tree,
    checkpoints: sled::Tree,
    published: Arc<Published>,
    /// Streams' last runs the writer has not put into sled yet.
    held: Arc<HeldRuns>,
}

impl SledReads {
    /// Runs `body` as one transaction on the snapshots' tree (all or none), then, as `put`
    /// does, hands the pages it replaced on to be freed.
    fn snapshots_transaction<T>(
        &self,
        body: impl Fn(
            &sled::transaction::TransactionalTree,
        )
            -> sled::transaction::ConflictableTransactionResult<T, std::convert::Infallible>,
    ) -> Result<T> {
        let done = self
            .snapshots
            .transaction(body)
            .map_err(|error| match error {
                sled::transaction::TransactionError::Storage(error) => Error::from(error),
                sled::transaction::TransactionError::Abort(never) => match never {},
            })?;
        crossbeam_epoch::pin().flush();
        Ok(done)
    }

    /// The records `read` answers, once the tree holds every batch answered; or why it never
    /// will until the journal is opened again.
    fn settled<'a, T: Send + 'a>(
        &self,
        read: impl FnOnce() -> Box<dyn Iterator<Item = Result<T>> + Send + 'a>,
    ) -> Box<dyn Iterator<Item = Result<T>> + Send + 'a> {
        match self.published.settle() {
            Ok(()) => read(),
            Err(error) => Box::new(std::iter::once(Err(error))),
        }
    }

    fn table(&self, table: Table) -> &sled::Tree {
        match table {
            Table::Snapshots => &self.snapshots,
            Table::Checkpoints => &self.checkpoints,
        }
    }

    /// The seq of `stream`'s record at `version`, if the index has it.
    fn indexed_seq(&self, stream: &str, version: u64) -> Result<Option<u64>> {
        if let Some(held) = self.held.read(stream)? {
            if version >= held.first_version {
                return Ok(held.get(version));
            }
        }
        let Some(run) = run_holding(&self.tree, stream, version)? else {
            return Ok(None);
        };
        Ok(run.get(version))
    }
}

impl Reads for SledReads {
    fn head(&self) -> Result<Head> {
        self.published.settle()?;
        layout::read_head(&self.tree)
    }

    fn stream_version(&self, stream: &str) -> Result<u64> {
        self.published.settle()?;
        if let Some(version) = self.held.last_version(stream) {
            return Ok(version);
        }
        Ok(last_run(&self.tree, stream)?.map_or(0, |run| run.last_version()))
    }

    fn records(&self, first: u64, last: u64) -> Records<'_> {
        self.settled(|| Box::new(records(&self.tree, first, last)))
    }

    fn stored(&self, first: u64) -> Stored<'_> {
        self.settled(|| {
            Box::new(stored(&self.tree, first, u64::MAX).map(|entry| {
                let (seq, bytes) = entry?;
                let record = bytes.and_then(|(value, range)| {
                    Record::decode_stored(seq, &value[range]).map_err(|e| match e {
                        Error::Corrupt { reason, .. } => reason,
                        other => other.to_string(),
                    })
                });
                Ok((seq, record))
            }))
        })
    }

    fn stream(&self, stream: &str, from: u64, to: u64, back: bool) -> Records<'_> {
        let mut blocks = BlockCache::default();
        let tree = &self.tree;
        self.settled(|| {
            let held = match self.held.read(stream) {
                Ok(held) => held,
                Err(error) => return Box::new(std::iter::once(Err(error))),
            };
            Box::new(
                run_entries(tree, stream.to_owned(), held, from, to, back).map(move |entry| {
                    let (_, seq) = entry?;
                    blocks.record(tree, seq)?.ok_or(Error::Corrupt {
                        seq,
                        reason: "the stream index names a record that is absent".into(),
                    })
                }),
            )
        })
    }

    fn record(&self, seq: u64) -> Result<Option<Record>> {
        self.published.settle()?;
        BlockCache::default().record(&self.tree, seq)
    }

    fn anchor(&self, stream: &str, version: u64) -> Result<Option<Hash>> {
        self.published.settle()?;
        let Some(seq) = self.indexed_seq(stream, version)? else {
            return Ok(None);
        };
        Ok(self.record(seq)?.map(|r| r.hash))
    }

    fn put(&self, table: Table, key: &str, value: Vec<u8>) -> Result<()> {
        self.table(table).insert(key.as_bytes(), value)?;
        // sled replaces the page holding the key and leaves the old one, with every snapshot it
        // held, to crossbeam-epoch, which hands a thread's deferred garbage on to be freed only
        // once 64 items have gathered. Snapshots are saved from threads that write little else,
        // so the replaced pages of large groups' snapshots stayed alive by the dozen (48 MB of
        // heap with 100k servers in 10 groups). Handing it on now lets the next epoch free it.
        crossbeam_epoch::pin().flush();
        Ok(())
    }

    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.table(table).get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    fn put_snapshots_if(
        &self,
        guard: &str,
        expected: Option<&[u8]>,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<bool> {
        self.snapshots_transaction(|tx| {
            if tx.get(guard.as_bytes())?.as_deref() != expected {
                return Ok(false);
            }
            for (key, value) in &entries {
                tx.insert(key.as_bytes(), value.as_slice())?;
            }
            Ok(true)
        })
    }

    fn put_snapshot_dropping(&self, key: &str, value: Vec<u8>, drop: &[String]) -> Result<()> {
        self.snapshots_transaction(|tx| {
            tx.insert(key.as_bytes(), value.as_slice())?;
            for key in drop {
                tx.remove(key.as_bytes())?;
            }
            Ok(())
        })
    }

    fn drop_snapshots(&self, keys: &[String]) -> Result<()> {
        self.snapshots_transaction(|tx| {
            for key in keys {
                tx.remove(key.as_bytes())?;
            }
            Ok(())
        })
    }

    fn flush(&self) -> Result<()> {
        self.published.settle()?;
        self.db.flush()?;
        Ok(())
    }

    fn raw_tree(&self) -> Option<sled::Tree> {
        // Changed by hand only once the writer has put in what it answered; a writer that
        // failed leaves the tree as it is.
        let _ = self.published.settle();
        Some(self.tree.clone())
    }
}

/// A stream's index run as read: the version of its first entry and each entry's seq.
struct ReadRun {
    first_version: u64,
    seqs: Vec<u64>,
}

impl ReadRun {
    fn decode(stream: &str, key: &[u8], value: &[u8]) -> Result<ReadRun> {
        let corrupt = || Error::Corrupt {
            seq: 0,
            reason: format!("an index run of stream {stream} is malformed"),
        };
        Ok(ReadRun {
            first_version: layout::decode_run_key(key).ok_or_else(corrupt)?,
            seqs: layout::decode_run(value).ok_or_else(corrupt)?,
        })
    }

    fn get(&self, version: u64) -> Option<u64> {
        let at = usize::try_from(version.checked_sub(self.first_version)?).ok()?;
        self.seqs.get(at).copied()
    }

    /// Its (version, seq) entries within `from..=to`.
    fn within(&self, from: u64, to: u64) -> impl DoubleEndedIterator<Item = (u64, u64)> + '_ {
        let first = self.first_version;
        self.seqs
            .iter()
            .enumerate()
            .map(move |(at, seq)| (first + at as u64, *seq))
            .filter(move |(version, _)| (from..=to).contains(version))
    }
}

/// The run of `stream` whose versions include `version`, if any.
fn run_holding(tree: &sled::Tree, stream: &str, version: u64) -> Result<Option<ReadRun>> {
    let (low, high) = (layout::run_key(stream, 0), layout::run_key(stream, version));
    let Some((key, value)) = last_within(tree, &low, &high)? else {
        return Ok(None);
    };
    let run = ReadRun::decode(stream, &key, &value)?;
    Ok(run.get(version).is_some().then_some(run))
}

/// `stream`'s (version, seq) index entries within `from..=to`: oldest first, or newest first
/// when `back`. Its last run is `held` if the writer holds it (see [`HeldRuns`]), which sled
/// has older or not at all: sled's runs are read up to it.
fn run_entries(
    tree: &sled::Tree,
    stream: String,
    held: Option<ReadRun>,
    from: u64,
    to: u64,
    back: bool,
) -> Box<dyn Iterator<Item = Result<(u64, u64)>> + Send + '_> {
    let Some(held) = held else {
        return stored_run_entries(tree, stream, from, to, back);
    };
    let held_entries: Vec<Result<(u64, u64)>> = held.within(from, to).map(Ok).collect();
    let stored = stored_run_entries(
        tree,
        stream,
        from,
        to.min(held.first_version.saturating_sub(1)),
        back,
    );
    if back {
        Box::new(held_entries.into_iter().rev().chain(stored))
    } else {
        Box::new(stored.chain(held_entries))
    }
}

/// [`run_entries`] from sled's runs alone.
fn stored_run_entries(
    tree: &sled::Tree,
    stream: String,
    from: u64,
    to: u64,
    back: bool,
) -> Box<dyn Iterator<Item = Result<(u64, u64)>> + Send + '_> {
    if from > to {
        return Box::new(std::iter::empty());
    }
    // The run holding `from` starts at or before it.
    let (low, high) = (layout::run_key(&stream, 0), layout::run_key(&stream, from));
    let start = match last_within(tree, &low, &high) {
        Ok(Some((key, _))) => key.to_vec(),
        Ok(None) => high,
        Err(error) => return Box::new(std::iter::once(Err(error))),
    };
    let runs = tree.range(start..=layout::run_key(&stream, to));
    let entries = move |entry: sled::Result<(sled::IVec, sled::IVec)>| -> Vec<Result<(u64, u64)>> {
        let run = entry
            .map_err(Error::from)
            .and_then(|(key, value)| ReadRun::decode(&stream, &key, &value));
        match run {
            Ok(run) if back => run.within(from, to).rev().map(Ok).collect(),
            Ok(run) => run.within(from, to).map(Ok).collect(),
            Err(error) => vec![Err(error)],
        }
    };
    if back {
        Box::new(runs.rev().flat_map(entries))
    } else {
        Box::new(runs.flat_map(entries))
    }
}

/// A block as read: its first slot, its value, and where each record lies in it.
pub(crate) struct Block {
    pub(crate) first: u64,
    pub(crate) value: sled::IVec,
    pub(crate) entries: Vec<(u64, Range<usize>)>,
}

impl Block {
    /// Decodes the block stored under `key`; a malformed one is named by its first slot.
    fn decode(key: &[u8], value: sled::IVec) -> std::result::Result<Block, (u64, String)> {
        let first = layout::decode_block_key(key)
            .ok_or_else(|| (0, format!("block key {key:?} is malformed")))?;
        let entries = layout::decode_block(first, &value)
            .ok_or_else(|| (first, "its block is malformed".to_owned()))?;
        Ok(Block {
            first,
            value,
            entries,
        })
    }

    /// The stored bytes at `seq`, if this block has them.
    pub(crate) fn get(&self, seq: u64) -> Option<&[u8]> {
        // Slots are stored in order; a block written otherwise (by hand) is searched through.
        let at = match self.entries.binary_search_by_key(&seq, |(slot, _)| *slot) {
            Ok(at) => Some(at),
            Err(_) if !self.entries.is_sorted_by_key(|(slot, _)| *slot) => {
                self.entries.iter().position(|(slot, _)| *slot == seq)
            }
            Err(_) => None,
        };
        at.map(|at| &self.value[self.entries[at].1.clone()])
    }
}

/// The block whose slots would include `seq`: the last one starting at or before it.
pub(crate) fn block_holding(tree: &sled::Tree, seq: u64) -> Result<Option<Block>> {
    let Some((key, value)) = last_within(tree, &layout::block_key(0), &layout::block_key(seq))?
    else {
        return Ok(None);
    };
    Block::decode(&key, value)
        .map(Some)
        .map_err(|(seq, reason)| Error::Corrupt { seq, reason })
}

/// The block last read, kept so that records read one by one from the same block decode it
/// once.
#[derive(Default)]
struct BlockCache {
    block: Option<Block>,
}

impl BlockCache {
    fn record(&mut self, tree: &sled::Tree, seq: u64) -> Result<Option<Record>> {
        let cached = self.block.as_ref().is_some_and(|b| b.get(seq).is_some());
        if !cached {
            self.block = block_holding(tree, seq)?;
        }
        match self.block.as_ref().and_then(|b| b.get(seq)) {
            Some(bytes) => Ok(Some(Record::decode_stored(seq, bytes)?)),
            None => Ok(None),
        }
    }
}

/// A record's stored bytes (a block's value and the range in it), or why its block is
/// malformed.
type StoredBytes = std::result::Result<(sled::IVec, Range<usize>), String>;

/// The records stored in slots `first..=last`, in slot order, each as stored (see
/// [`StoredBytes`]): a malformed block is one entry, at its first slot.
fn stored(
    tree: &sled::Tree,
    first: u64,
    last: u64,
) -> impl Iterator<Item = Result<(u64, StoredBytes)>> + Send + '_ {
    // The block holding `first` starts at or before it.
    let start = last_within(tree, &layout::block_key(0), &layout::block_key(first))
        .map(|entry| entry.and_then(|(key, _)| layout::decode_block_key(&key)));
    let (start, failed) = match start {
        Ok(start) => (start.unwrap_or(first), None),
        Err(error) => (first, Some(Err(error))),
    };
    let blocks = tree
        .range(layout::block_key(start)..=layout::block_key(last.max(start)))
        .flat_map(move |entry| -> Vec<Result<(u64, StoredBytes)>> {
            let (key, value) = match entry {
                Ok(entry) => entry,
                Err(error) => return vec![Err(error.into())],
            };
            match Block::decode(&key, value) {
                Ok(block) => block
                    .entries
                    .iter()
                    .filter(|(slot, _)| (first..=last).contains(slot))
                    .map(|(slot, range)| Ok((*slot, Ok((block.value.clone(), range.clone())))))
                    .collect(),
                Err((seq, reason)) => vec![Ok((seq, Err(reason)))],
            }
        });
    failed.into_iter().chain(blocks)
}

/// The records `first..=last` of `tree`, decoded, in order.
fn records(
    tree: &sled::Tree,
    first: u64,
    last: u64,
) -> impl Iterator<Item = Result<Record>> + Send + '_ {
    stored(tree, first, last).map(|entry| {
        let (seq, bytes) = entry?;
        let (value, range) = bytes.map_err(|reason| Error::Corrupt { seq, reason })?;
        Record::decode_stored(seq, &value[range])
    })
}

/// The slot of the last record stored, whatever the head says.
fn last_record_seq(tree: &sled::Tree) -> Result<u64> {
    let (low, high) = (layout::block_key(0), layout::block_key(u64::MAX));
    let Some((key, value)) = last_within(tree, &low, &high)? else {
        return Ok(0);
    };
    // A block that does not decode counts as ending at its first slot: the journal opens, and
    // `verify` names it.
    Ok(match Block::decode(&key, value) {
        Ok(block) => block
            .entries
            .iter()
            .map(|(slot, _)| *slot)
            .max()
            .unwrap_or(block.first),
        Err((first, _)) => first,
    })
}
