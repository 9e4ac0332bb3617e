//! The write-ahead file of the sled back end: each batch's sled writes, durable before sled
//! holds any of them.
//!
//! Why it exists: sled's `apply_batch` seals and writes two of sled's I/O buffers on every call
//! (`PageCache::pin_log` rolls the buffer before and after the batch's reservation), each
//! through sled's thread pool, whose seven threads all wake for it; its `flush` then syncs them
//! while holding sled's global lock. Per writer batch that was two `pwrite`s, two
//! `sync_file_range`s and some twenty thread wake-ups. So the writer instead appends the batch's
//! writes (block, index runs, head) to this file as one entry, `fdatasync`s it, answers the
//! batch's appenders, and only then inserts them into sled one key at a time (readers wait for
//! that, see `published`), leaving sled to write its buffers when they fill (or on its own
//! flusher's tick).
//!
//! Crash safety: sled never holds a write this file has not synced, and the file holds only
//! the current round: the batches written since sled's files were last synced whole (see
//! [`sync_dir`] and [`Wal::rewind`]). Opening after a crash replays the whole round into sled,
//! in order: the same keys with the same values, so a replay can repeat a write but never
//! change one, and it relies on nothing about which of its inserts sled kept. A batch is
//! acknowledged only once its entry and every one before it are synced; a failed write or sync
//! stops the writer until the journal is opened again, so what was acknowledged is never
//! behind an entry that is not there.
//!
//! The file is preallocated with zeros to its capacity so that, on a file system that writes
//! in place (ext4, xfs), a sync writes no file metadata; a batch larger than what is left grows
//! it until the next rewind. Past the last entry of a round lie zeros or an older round's
//! entries, which the reader stops at: each entry carries its round's random id and names the
//! head it follows.
//!
//! ```text
//! entry:   len u32 | round u64 | after u64 | head u64 | blake3(round, after, head, payload) [32]
//!          | payload
//! payload: (key-len u32 | key | value-len u32 | value)*
//! ```
//! `after` is the seq of the head the batch follows, `head` the seq of its last record;
//! integers are little-endian.

use std::collections::hash_map::RandomState;
use std::fs::{File, OpenOptions};
use std::hash::BuildHasher;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::{Error, Result};

/// The file's name in the journal's directory.
pub const FILE_NAME: &str = "journal.wal";

/// The default bytes the file is preallocated to, and the round's length after which sled is
/// flushed and entries start again from the beginning (see [`crate::Config::wal_capacity`]).
pub const CAPACITY: u64 = 8 << 20;

/// The capacities a journal may ask for: a round of a few batches at least, and no more than a
/// file that is quick to preallocate and to replay.
pub const CAPACITIES: std::ops::RangeInclusive<u64> = (4 << 10)..=(1 << 30);

const HEADER: usize = 4 + 8 + 8 + 8 + 32;

/// One batch's writes, as read back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The seq of the head the batch follows.
    pub(crate) after: u64,
    /// The seq of its last record.
    pub(crate) head: u64,
    /// Its sled writes, in the order they were made.
    pub(crate) writes: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The open file, and where the next entry goes.
pub(crate) struct Wal {
    file: File,
    capacity: u64,
    /// This round's id, in every entry of it: chosen afresh at each rewind, so that an older
    /// round's entries (or bytes in their payloads) are never read as this round's.
    round: u64,
    offset: u64,
    /// Tests set it to make the next syncs fail, as a disk's error would.
    #[cfg(test)]
    pub(crate) failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Wal {
    /// Opens (creating and preallocating if needed) the file in `dir`, and answers the entries
    /// of its last round: those from its start that follow one another, each whole and of one
    /// round. Appends go to a new round, from the file's start: the caller must first make
    /// sled hold the entries for good (see [`sync_dir`]).
    pub(crate) fn open(dir: &Path, capacity: u64) -> Result<(Wal, Vec<Entry>)> {
        let path = dir.join(FILE_NAME);
        let named = |error: std::io::Error| {
            Error::Io(std::io::Error::new(
                error.kind(),
                format!("{}: {error}", path.display()),
            ))
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(named)?;
        let capacity = capacity.clamp(*CAPACITIES.start(), *CAPACITIES.end());
        if file.metadata().map_err(named)?.len() < capacity {
            preallocate(&file, capacity).map_err(named)?;
        }
        // The file's name is durable before anything is acknowledged through it, even if a
        // crash came between its creation and a sync of the directory.
        File::open(dir).and_then(|d| d.sync_all()).map_err(named)?;
        let entries = read_entries(&file).map_err(named)?;
        let wal = Wal {
            file,
            capacity,
            round: fresh_round(),
            offset: 0,
            #[cfg(test)]
            failing: Default::default(),
        };
        Ok((wal, entries))
    }

    /// Writes one entry after the last, not yet synced (see [`Wal::sync`]).
    pub(crate) fn append(
        &mut self,
        after: u64,
        head: u64,
        writes: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<()> {
        let entry = encode(self.round, after, head, writes)?;
        self.file.write_all_at(&entry, self.offset)?;
        self.offset += entry.len() as u64;
        Ok(())
    }

    /// Makes every entry written so far durable.
    pub(crate) fn sync(&self) -> Result<()> {
        #[cfg(test)]
        if self.failing.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(std::io::Error::other("a sync failed (injected by a test)").into());
        }
        self.file.sync_data()?;
        Ok(())
    }

    /// Whether this round is full: sled should be flushed and the file rewound.
    pub(crate) fn full(&self) -> bool {
        self.offset >= self.capacity
    }

    /// Starts a new round at the file's beginning, under a new id: only once sled holds for
    /// good every write the file holds, since the old round is overwritten from here on. The
    /// first header is zeroed and synced first, so that the file reads as empty until the new
    /// round's first entry: what it holds is only ever the current round. A file grown past its
    /// capacity by a large batch is cut back to it.
    pub(crate) fn rewind(&mut self) -> Result<()> {
        self.clear()?;
        if self.file.metadata()?.len() > self.capacity {
            self.file.set_len(self.capacity)?;
        }
        self.round = fresh_round();
        Ok(())
    }

    /// Empties the file (its first entry zeroed, synced), once sled holds everything for good:
    /// opening it again then replays nothing.
    pub(crate) fn clear(&mut self) -> Result<()> {
        self.file.write_all_at(&[0; HEADER], 0)?;
        self.sync()?;
        self.offset = 0;
        Ok(())
    }
}

/// Makes sled's files in `dir` durable: sled's `flush` writes its buffers and
/// `sync_file_range`s them, which neither flushes the disk's cache nor commits the file's
/// metadata, and it never syncs its blob files. So every file of the directory and of its
/// `blobs` directory, and both directories, are `fsync`ed. Called before entries of the
/// write-ahead file are let go of: once a round, at open after a crash and at close.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    for dir in [dir.to_owned(), dir.join("blobs")] {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error.into()),
        };
        for entry in entries {
            let entry = entry?;
            if !entry.file_type()?.is_file() || entry.file_name() == FILE_NAME {
                continue;
            }
            // sled's own threads delete blobs and snapshots as they go.
            match File::open(entry.path()) {
                Ok(file) => file.sync_all()?,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error.into()),
            }
        }
        File::open(&dir)?.sync_all()?;
    }
    Ok(())
}

/// A round id no earlier round of this file is likely to have had: std's hasher keys are
/// random per process and differ at every `RandomState::new`, so no clock is read.
fn fresh_round() -> u64 {
    RandomState::new().hash_one(std::process::id())
}

/// Fills the file with zeros up to `capacity` and syncs it, so that later entries overwrite
/// allocated blocks and a sync of them writes no metadata.
fn preallocate(file: &File, capacity: u64) -> std::io::Result<()> {
    let chunk = vec![0; 1 << 20];
    let mut at = file.metadata()?.len();
    while at < capacity {
        let n = chunk
            .len()
            .min(usize::try_from(capacity - at).unwrap_or(usize::MAX));
        file.write_all_at(&chunk[..n], at)?;
        at += n as u64;
    }
    file.sync_all()
}

fn checksum(round: u64, after: u64, head: u64, payload: &[u8]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&round.to_le_bytes());
    hasher.update(&after.to_le_bytes());
    hasher.update(&head.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// A length as the file stores it.
fn len32(len: usize) -> Result<[u8; 4]> {
    let len = u32::try_from(len).map_err(|_| {
        Error::InvalidEvent(format!(
            "a batch of {len} bytes is too large for the journal's write-ahead file"
        ))
    })?;
    Ok(len.to_le_bytes())
}

fn encode(round: u64, after: u64, head: u64, writes: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<u8>> {
    let size: usize = writes.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut entry = Vec::with_capacity(HEADER + size);
    entry.extend_from_slice(&[0; HEADER]);
    for (key, value) in writes {
        entry.extend_from_slice(&len32(key.len())?);
        entry.extend_from_slice(key);
        entry.extend_from_slice(&len32(value.len())?);
        entry.extend_from_slice(value);
    }
    let payload_len = len32(entry.len() - HEADER)?;
    let sum = checksum(round, after, head, &entry[HEADER..]);
    entry[..4].copy_from_slice(&payload_len);
    entry[4..12].copy_from_slice(&round.to_le_bytes());
    entry[12..20].copy_from_slice(&after.to_le_bytes());
    entry[20..28].copy_from_slice(&head.to_le_bytes());
    entry[28..HEADER].copy_from_slice(sum.as_bytes());
    Ok(entry)
}

/// The entries from the start of `file` that are whole, of the first one's round, and follow
/// one another. Reads one entry at a time, never past the file's end.
fn read_entries(file: &File) -> std::io::Result<Vec<Entry>> {
    let len = file.metadata()?.len();
    let mut entries: Vec<Entry> = Vec::new();
    let mut round = None;
    let mut at = 0u64;
    let mut header = [0; HEADER];
    while at + HEADER as u64 <= len {
        file.read_exact_at(&mut header, at)?;
        let size = u64::from(u32::from_le_bytes(
            header[..4].try_into().unwrap_or_default(),
        ));
        if size == 0 || at + HEADER as u64 + size > len {
            break;
        }
        let mut payload = vec![0; size as usize];
        file.read_exact_at(&mut payload, at + HEADER as u64)?;
        let Some((entry_round, entry)) = decode(&header, &payload) else {
            break;
        };
        let follows = entries.last().is_none_or(|last| last.head == entry.after);
        if !follows || *round.get_or_insert(entry_round) != entry_round {
            break;
        }
        entries.push(entry);
        at += HEADER as u64 + size;
    }
    Ok(entries)
}

/// The entry with `header` and `payload`, and its round, if they are whole and agree.
fn decode(header: &[u8; HEADER], payload: &[u8]) -> Option<(u64, Entry)> {
    let word = |at: usize| Some(u64::from_le_bytes(header[at..at + 8].try_into().ok()?));
    let (round, after, head) = (word(4)?, word(12)?, word(20)?);
    if head <= after || checksum(round, after, head, payload).as_bytes() != &header[28..HEADER] {
        return None;
    }
    let mut writes = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let key = take(&mut rest)?;
        let value = take(&mut rest)?;
        writes.push((key.to_vec(), value.to_vec()));
    }
    Some((
        round,
        Entry {
            after,
            head,
            writes,
        },
    ))
}

/// A length-prefixed field off the front of `rest`.
fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let field = rest.get(4..4usize.checked_add(len)?)?;
    *rest = &rest[4 + len..];
    Some(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(n: u8) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..n).map(|i| (vec![b'k', i], vec![i + 1; 100])).collect()
    }

    fn open(dir: &Path) -> (Wal, Vec<Entry>) {
        Wal::open(dir, 1 << 16).unwrap()
    }

    #[test]
    fn entries_read_back_in_order_and_stop_at_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, entries) = open(dir.path());
        assert!(entries.is_empty());
        wal.append(0, 3, &writes(3)).unwrap();
        wal.append(3, 5, &writes(2)).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, entries) = open(dir.path());
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].after, entries[0].head), (0, 3));
        assert_eq!(entries[0].writes, writes(3));
        assert_eq!((entries[1].after, entries[1].head), (3, 5));
        assert_eq!(entries[1].writes, writes(2));
    }

    #[test]
    fn an_altered_or_torn_entry_ends_the_round() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = open(dir.path());
        wal.append(0, 3, &writes(3)).unwrap();
        let second = wal.offset;
        wal.append(3, 5, &writes(2)).unwrap();
        let third = wal.offset;
        wal.append(5, 6, &writes(1)).unwrap();
        let end = wal.offset;
        // A byte inside the second entry's first value: only the checksum can tell.
        let value_byte = second + HEADER as u64 + 4 + 2 + 4 + 50;
        wal.file.write_all_at(&[0xee], value_byte).unwrap();
        let (_, entries) = open(dir.path());
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].head, 3);
        // Mended, and the third entry torn instead: its second half never reached the file.
        wal.file.write_all_at(&[1], value_byte).unwrap();
        let half = (end - third) / 2;
        wal.file
            .write_all_at(&vec![0; half as usize], third + half)
            .unwrap();
        drop(wal);
        let (_, entries) = open(dir.path());
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].head, 5);
    }

    #[test]
    fn an_older_rounds_entries_past_the_new_ones_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = open(dir.path());
        // The old round: three entries.
        wal.append(0, 1, &writes(1)).unwrap();
        wal.append(1, 2, &writes(1)).unwrap();
        wal.append(2, 3, &writes(1)).unwrap();
        // The new round overwrites the first with an entry of the same length, which the
        // second would follow were it not of the old round.
        wal.rewind().unwrap();
        wal.append(0, 1, &writes(1)).unwrap();
        drop(wal);
        let (_, entries) = open(dir.path());
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].after, entries[0].head), (0, 1));
    }

    #[test]
    fn a_file_grown_by_a_large_batch_is_cut_back_at_the_rewind() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = open(dir.path());
        let large = vec![(b"k".to_vec(), vec![7; 100_000])];
        wal.append(0, 1, &large).unwrap();
        assert!(wal.full());
        let len = || std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len();
        assert!(len() > 1 << 16);
        wal.rewind().unwrap();
        assert_eq!(len(), 1 << 16);
        assert!(!wal.full());
    }

    #[test]
    fn a_cleared_file_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = open(dir.path());
        wal.append(0, 2, &writes(2)).unwrap();
        wal.clear().unwrap();
        drop(wal);
        let (_, entries) = open(dir.path());
        assert!(entries.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_read_as_no_entry_without_a_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4096),
        ) {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(FILE_NAME), &bytes).unwrap();
            let (_, entries) = Wal::open(dir.path(), 64).unwrap();
            proptest::prop_assert!(entries.is_empty());
        }

        /// Past the checksum: any payload under a valid header decodes to writes that encode
        /// back to the same bytes, or is refused, never a panic.
        #[test]
        fn any_payload_under_a_valid_checksum_decodes_exactly_or_not_at_all(
            payload in proptest::collection::vec(proptest::num::u8::ANY, 1..512),
            after in 0u64..10,
            len in 1u64..5,
        ) {
            let (round, head) = (7u64, after + len);
            let mut entry = Vec::new();
            entry.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            entry.extend_from_slice(&round.to_le_bytes());
            entry.extend_from_slice(&after.to_le_bytes());
            entry.extend_from_slice(&head.to_le_bytes());
            entry.extend_from_slice(checksum(round, after, head, &payload).as_bytes());
            entry.extend_from_slice(&payload);
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(FILE_NAME), &entry).unwrap();
            let (_, entries) = Wal::open(dir.path(), 64).unwrap();
            proptest::prop_assert!(entries.len() <= 1);
            for read in entries {
                proptest::prop_assert_eq!(encode(round, after, head, &read.writes).unwrap(), entry.clone());
            }
        }
    }
}
