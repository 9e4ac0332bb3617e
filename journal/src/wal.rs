//! The write-ahead file of the sled back end: each batch's sled writes, durable before sled
//! holds any of them.
//!
//! Why it exists: sled's `apply_batch` seals and writes two of sled's I/O buffers on every call
//! (`PageCache::pin_log` rolls the buffer before and after the batch's reservation), each
//! through sled's thread pool, whose seven threads all wake for it; its `flush` then syncs them
//! while holding sled's global lock. Per writer batch that was two `pwrite`s, two
//! `sync_file_range`s and some twenty thread wake-ups. So the writer instead appends the batch's
//! writes (block, index runs, head) to this file as one entry, `fdatasync`s it, and only then
//! inserts them into sled one key at a time, leaving sled to write its buffers when they fill
//! (or on its own flusher's tick).
//!
//! Crash safety: sled never holds a write this file has not synced. sled recovers a prefix of
//! its inserts, so after a crash it may hold part of the last batches, without their head (the
//! head is inserted last). Opening replays every entry after sled's head, rewriting the same
//! keys with the same values: replay can repeat a write, never change one. An entry is
//! acknowledged only once synced, so a torn entry at the end was never acknowledged and is
//! dropped.
//!
//! Entries are written from the start of the file again once sled has flushed everything they
//! hold (see [`Wal::rewind`]): the file stays at [`CAPACITY`], preallocated with zeros so that
//! a sync writes no file metadata. What lies past the last entry of this round is either zeros
//! or an older round's entries, which the reader stops at: each entry names the head it
//! follows, and an older round's entries follow heads from before this round's first one.
//!
//! ```text
//! entry:   len u32 | after u64 | head u64 | blake3(after, head, payload) [32] | payload
//! payload: (key-len u32 | key | value-len u32 | value)*
//! ```
//! `after` is the seq of the head the batch follows, `head` the seq of its last record;
//! integers are little-endian.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::Result;

/// The file's name in the journal's directory.
pub const FILE_NAME: &str = "journal.wal";

/// Bytes the file is preallocated to, and the round's length after which sled is flushed and
/// entries start again from the beginning. A batch larger than what is left still goes into
/// this round and grows the file.
pub const CAPACITY: u64 = 8 << 20;

const HEADER: usize = 4 + 8 + 8 + 32;

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
    offset: u64,
}

impl Wal {
    /// Opens (creating and preallocating if needed) the file in `dir`, and answers the entries
    /// of its last round: those from its start that follow one another, each whole.
    pub(crate) fn open(dir: &Path) -> Result<(Wal, Vec<Entry>)> {
        let path = dir.join(FILE_NAME);
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        if created || file.metadata()?.len() < CAPACITY {
            preallocate(&file)?;
            if created {
                File::open(dir)?.sync_all()?;
            }
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let entries = read_entries(&bytes);
        let wal = Wal { file, offset: 0 };
        Ok((wal, entries))
    }

    /// Writes one entry after the last, not yet synced (see [`Wal::sync`]).
    pub(crate) fn append(
        &mut self,
        after: u64,
        head: u64,
        writes: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<()> {
        let entry = encode(after, head, writes);
        self.file.write_all_at(&entry, self.offset)?;
        self.offset += entry.len() as u64;
        Ok(())
    }

    /// Makes every entry written so far durable.
    pub(crate) fn sync(&self) -> Result<()> {
        self.file.sync_data()?;
        Ok(())
    }

    /// Whether this round is full: sled should be flushed and the file rewound.
    pub(crate) fn full(&self) -> bool {
        self.offset >= CAPACITY
    }

    /// Starts a new round at the file's beginning: only once sled has flushed every write the
    /// file holds, since the old round's entries are overwritten from here on.
    pub(crate) fn rewind(&mut self) {
        self.offset = 0;
    }

    /// Empties the file (its first entry zeroed, synced), once sled has flushed everything:
    /// opening it again then replays nothing.
    pub(crate) fn clear(&mut self) -> Result<()> {
        self.file.write_all_at(&[0; HEADER], 0)?;
        self.sync()?;
        self.offset = 0;
        Ok(())
    }
}

/// Fills the file with zeros up to [`CAPACITY`] and syncs it, so that later entries overwrite
/// allocated blocks and a sync of them writes no metadata.
fn preallocate(file: &File) -> Result<()> {
    let len = file.metadata()?.len();
    let chunk = vec![0; 1 << 20];
    let mut at = len;
    while at < CAPACITY {
        let n = chunk.len().min((CAPACITY - at) as usize);
        file.write_all_at(&chunk[..n], at)?;
        at += n as u64;
    }
    file.sync_all()?;
    Ok(())
}

fn checksum(after: u64, head: u64, payload: &[u8]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&after.to_le_bytes());
    hasher.update(&head.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

fn encode(after: u64, head: u64, writes: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let size: usize = writes.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut entry = Vec::with_capacity(HEADER + size);
    entry.extend_from_slice(&[0; HEADER]);
    for (key, value) in writes {
        entry.extend_from_slice(&(key.len() as u32).to_le_bytes());
        entry.extend_from_slice(key);
        entry.extend_from_slice(&(value.len() as u32).to_le_bytes());
        entry.extend_from_slice(value);
    }
    let payload_len = entry.len() - HEADER;
    let sum = checksum(after, head, &entry[HEADER..]);
    entry[..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    entry[4..12].copy_from_slice(&after.to_le_bytes());
    entry[12..20].copy_from_slice(&head.to_le_bytes());
    entry[20..HEADER].copy_from_slice(sum.as_bytes());
    entry
}

/// The entries at the start of `bytes` that are whole and follow one another.
pub(crate) fn read_entries(bytes: &[u8]) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut at = 0;
    while let Some((entry, len)) = decode(&bytes[at..]) {
        if entries.last().is_some_and(|last| last.head != entry.after) {
            break;
        }
        entries.push(entry);
        at += len;
    }
    entries
}

/// The entry at the start of `bytes` and its length, if one is there whole.
fn decode(bytes: &[u8]) -> Option<(Entry, usize)> {
    let header = bytes.get(..HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let after = u64::from_le_bytes(header[4..12].try_into().ok()?);
    let head = u64::from_le_bytes(header[12..20].try_into().ok()?);
    if len == 0 || head <= after {
        return None;
    }
    let payload = bytes.get(HEADER..HEADER.checked_add(len)?)?;
    if checksum(after, head, payload).as_bytes() != &header[20..HEADER] {
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
        Entry {
            after,
            head,
            writes,
        },
        HEADER + len,
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
        (0..n)
            .map(|i| (vec![b'k', i], vec![i; i as usize * 100]))
            .collect()
    }

    #[test]
    fn entries_read_back_in_order_and_stop_at_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, entries) = Wal::open(dir.path()).unwrap();
        assert!(entries.is_empty());
        wal.append(0, 3, &writes(3)).unwrap();
        wal.append(3, 5, &writes(2)).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, entries) = Wal::open(dir.path()).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].after, entries[0].head), (0, 3));
        assert_eq!(entries[0].writes, writes(3));
        assert_eq!((entries[1].after, entries[1].head), (3, 5));
        assert_eq!(entries[1].writes, writes(2));
    }

    #[test]
    fn a_torn_or_altered_entry_ends_the_round() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(0, 3, &writes(3)).unwrap();
        let first = wal.offset;
        wal.append(3, 5, &writes(2)).unwrap();
        wal.append(5, 6, &writes(1)).unwrap();
        // One byte of the second entry's payload changes: it and what follows are dropped.
        wal.file
            .write_all_at(&[0xee], first + HEADER as u64 + 3)
            .unwrap();
        drop(wal);
        let (_, entries) = Wal::open(dir.path()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].head, 3);
    }

    #[test]
    fn an_older_rounds_entries_past_the_new_ones_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        // The old round: three small entries.
        wal.append(0, 1, &writes(1)).unwrap();
        wal.append(1, 2, &writes(1)).unwrap();
        wal.append(2, 3, &writes(1)).unwrap();
        // The new round overwrites the first with an entry of the same length.
        wal.rewind();
        wal.append(3, 4, &writes(1)).unwrap();
        drop(wal);
        let (_, entries) = Wal::open(dir.path()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].after, entries[0].head), (3, 4));
    }

    #[test]
    fn a_cleared_file_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(0, 2, &writes(2)).unwrap();
        wal.clear().unwrap();
        drop(wal);
        let (_, entries) = Wal::open(dir.path()).unwrap();
        assert!(entries.is_empty());
        assert_eq!(
            std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len(),
            CAPACITY
        );
    }
}
