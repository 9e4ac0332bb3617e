//! Where things live in sled.
//!
//! Records, the stream index and the head share one tree ([`TREE`]). A writer batch's keys
//! reach it one by one, blocks first and the head last, after the batch is synced in the
//! write-ahead file (see `wal`), which replays them after a crash: so after a crash a batch
//! is in the journal whole or not at all. Readers wait for a synced batch's keys to be in (see
//! `published`). The last index run of each stream a batch extends is in the file with it, but
//! goes into the tree later (see `sled_store::HeldRuns`), which then marks how far it is
//! indexed ([`INDEXED_KEY`]); opening indexes whatever lies past the mark from its blocks. Integers in keys are big-endian, so byte order is numeric order.
//!
//! ```text
//! key                                  value
//! 'f'                                  the layout's format: FORMAT (3)
//! 'b' first-seq(8)                     a block of records (see encode_block)
//! 'x' stream-id 0x00 first-version(8)  a run of that stream's index (see encode_run)
//! 'h'                                  head: seq(8) hash(32) of the last record
//! 'i'                                  seq(8): every record up to it has its index entries
//! 'm'                                  while a migration is under way, its cursor
//! 'g'                                  once migrated, format 1's head then
//! ```
//!
//! Records are stored by the block, a writer batch's records in one or a few values, and a
//! stream's index by the run, up to [`RUN_LEN`] consecutive versions in one value that the
//! writer extends in place. A journal of 10M events is thus well under a million sled keys
//! rather than 20 million: sled's pages, its memory and its open time follow the key count.
//! A block keeps each record's place (its slot) apart from the seq the record carries, so that a
//! record that is missing or out of place is still seen as such.
//!
//! Format 1 kept a key per record (`'r' seq(8)`) and per index entry (`'s' stream-id 0x00
//! version(8)` → seq(8)), in the tree [`TREE_V1`]. Opening such a journal copies it into
//! [`TREE`] (see `sled_store::migrate_step`), then lets the old tree go: copying is several
//! times faster than rewriting 20M keys in place.
//!
//! A stream id is printable ASCII, so it never contains the 0x00 separator.
//! Snapshots live apart, in [`SNAPSHOTS`]: stream-id → version(8) anchor-hash(32) state; the
//! parts of a snapshot saved in parts under stream-id 0x1f part-number, and named snapshots
//! (`Journal::save_named_snapshot`) under stream-id 0x1e name, in the same form.
//! Checkpoints of whole-journal readers, in [`CHECKPOINTS`]: name → seq(8) hash(32) state.

use crate::record::Hash;
use crate::{Error, Head, Result};

/// The tree holding records, the stream index and the head.
pub const TREE: &str = "journal-2";
/// The tree that held them in format 1. Once migrated, it holds only a head with no records
/// after it, which an older build reads as a truncated journal.
pub const TREE_V1: &str = "journal";
/// The tree holding each stream's latest snapshot, by stream id.
pub const SNAPSHOTS: &str = "snapshots";
/// The tree holding whole-journal readers' checkpoints, by name.
pub const CHECKPOINTS: &str = "checkpoints";

const RECORD: u8 = b'r';
const INDEX: u8 = b's';
const BLOCK: u8 = b'b';
const RUN: u8 = b'x';
/// The key of the head in [`TREE`] (and in [`TREE_V1`]).
pub const HEAD_KEY: &[u8] = b"h";
/// The key of the layout's format in [`TREE`] (and, once migrated, in [`TREE_V1`]).
pub const FORMAT_KEY: &[u8] = b"f";
/// The key of a migration's cursor in [`TREE`], while one is under way.
pub const MIGRATION_KEY: &[u8] = b"m";
/// The key in [`TREE`] of the head a format 1 journal had when it was migrated.
pub const MIGRATED_KEY: &[u8] = b"g";
/// The key in [`TREE`] of the seq through which every record is indexed (the writer holds the
/// last runs of the records after it, see `sled_store::HeldRuns`). Absent in a directory last
/// opened by a build that indexed every batch as it went: all of it is indexed.
pub const INDEXED_KEY: &[u8] = b"i";
/// The layout this code writes: format 2's keys, written through the write-ahead file
/// (`wal`), which a build that reads format 2 would not replay after a crash.
pub const FORMAT: u8 = 3;
/// Format 3's keys without the write-ahead file: stamped 3 when opened.
pub const FORMAT_2: u8 = 2;
/// Most records in one block.
pub const BLOCK_RECORDS: usize = 256;
/// A block is closed once its records reach this many bytes. sled splits a leaf past 16 keys
/// and writes an item over a quarter of a 512 KiB segment as a blob of its own; 16 blocks of
/// this size keep a leaf well under that.
pub const BLOCK_BYTES: usize = 6 * 1024;
/// Most versions in one run of a stream's index.
pub const RUN_LEN: usize = 64;

/// `prefix` then `seq`, big-endian.
fn seq_key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut key = [prefix; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The seq in a [`seq_key`] with `prefix`, or `None` if `key` is not one.
fn decode_seq_key(prefix: u8, key: &[u8]) -> Option<u64> {
    match key.split_first() {
        Some((&first, rest)) if first == prefix => decode_seq(rest),
        _ => None,
    }
}

/// The key of the record at `seq` (format 1).
pub fn record_key(seq: u64) -> [u8; 9] {
    seq_key(RECORD, seq)
}

/// The sequence number in a record key (format 1), or `None` if `key` is not one.
pub fn decode_record_key(key: &[u8]) -> Option<u64> {
    decode_seq_key(RECORD, key)
}

/// `prefix`, `stream`, 0x00, then `version` big-endian.
fn stream_key(prefix: u8, stream: &str, version: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 10);
    key.push(prefix);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// The stream and version in a format 1 stream index key, or `None` if `key` is not one.
pub fn decode_index_key(key: &[u8]) -> Option<(&str, u64)> {
    let rest = key.strip_prefix(&[INDEX])?;
    let (stream, version) = rest.split_at(rest.len().checked_sub(9)?);
    let (&0, version) = version.split_first()? else {
        return None;
    };
    Some((std::str::from_utf8(stream).ok()?, decode_seq(version)?))
}

/// The stream index key of `stream` at `version` (format 1).
pub fn index_key(stream: &str, version: u64) -> Vec<u8> {
    stream_key(INDEX, stream, version)
}

/// The key of the block whose first slot is `seq`.
pub fn block_key(seq: u64) -> [u8; 9] {
    seq_key(BLOCK, seq)
}

/// The first slot in a block key, or `None` if `key` is not one.
pub fn decode_block_key(key: &[u8]) -> Option<u64> {
    decode_seq_key(BLOCK, key)
}

/// The key of `stream`'s index run that starts at `version`.
pub fn run_key(stream: &str, version: u64) -> Vec<u8> {
    stream_key(RUN, stream, version)
}

/// The first version in a run key (its last 8 bytes), or `None` if it is too short.
pub fn decode_run_key(key: &[u8]) -> Option<u64> {
    key.get(key.len().checked_sub(8)?..).and_then(decode_seq)
}

/// A block: records with their slots, `slot(4) len(4)` each after a count(2), then the
/// records' bytes in that order. Slots are stored as offsets from the block's key.
pub fn encode_block(first: u64, entries: &[(u64, &[u8])]) -> Vec<u8> {
    let body: usize = entries.iter().map(|(_, bytes)| bytes.len()).sum();
    let mut value = Vec::with_capacity(2 + 8 * entries.len() + body);
    value.extend_from_slice(&(entries.len() as u16).to_be_bytes());
    for (slot, bytes) in entries {
        debug_assert!(
            u32::try_from(slot - first).is_ok(),
            "a slot too far from its block"
        );
        value.extend_from_slice(&((slot - first) as u32).to_be_bytes());
        value.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    }
    for (_, bytes) in entries {
        value.extend_from_slice(bytes);
    }
    value
}

/// A block's slots and the byte range of each record in `value`, or `None` if it is malformed.
pub fn decode_block(first: u64, value: &[u8]) -> Option<Vec<(u64, std::ops::Range<usize>)>> {
    let count = usize::from(u16::from_be_bytes(value.get(..2)?.try_into().ok()?));
    let mut at = 2 + 8 * count;
    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        let entry = value.get(2 + 8 * i..10 + 8 * i)?;
        let slot = u32::from_be_bytes(entry[..4].try_into().ok()?);
        let len = u32::from_be_bytes(entry[4..].try_into().ok()?) as usize;
        let end = at.checked_add(len)?;
        if end > value.len() {
            return None;
        }
        entries.push((first.checked_add(u64::from(slot))?, at..end));
        at = end;
    }
    (at == value.len()).then_some(entries)
}

/// A run of a stream's index: the seq of its first version, then for each next version the
/// difference from the seq before it, as a LEB128 varint.
pub fn encode_run(seqs: &[u64]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + 2 * seqs.len());
    let Some((&first, rest)) = seqs.split_first() else {
        return value;
    };
    value.extend_from_slice(&first.to_be_bytes());
    let mut previous = first;
    for &seq in rest {
        push_varint(seq.wrapping_sub(previous), &mut value);
        previous = seq;
    }
    value
}

/// Appends `seq` to an encoded run whose last seq is `last`.
pub fn extend_run(value: &mut Vec<u8>, last: u64, seq: u64) {
    if value.is_empty() {
        value.extend_from_slice(&seq.to_be_bytes());
    } else {
        push_varint(seq.wrapping_sub(last), value);
    }
}

/// The seqs of a run, or `None` if it is malformed.
pub fn decode_run(value: &[u8]) -> Option<Vec<u64>> {
    let mut seq = decode_seq(value.get(..8)?)?;
    let mut seqs = vec![seq];
    let mut at = 8;
    while at < value.len() {
        let mut delta = 0u64;
        let mut shift = 0;
        loop {
            let byte = *value.get(at)?;
            at += 1;
            delta |= u64::from(byte & 0x7f).checked_shl(shift)?;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return None;
            }
        }
        seq = seq.checked_add(delta)?;
        seqs.push(seq);
    }
    Some(seqs)
}

fn push_varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A big-endian `u64` from exactly 8 bytes, or `None` for any other length.
pub fn decode_seq(value: &[u8]) -> Option<u64> {
    value.try_into().ok().map(u64::from_be_bytes)
}

/// The stored form of `head`: seq(8) hash(32).
pub fn encode_head(head: &Head) -> [u8; 40] {
    let mut value = [0; 40];
    value[..8].copy_from_slice(&head.seq.to_be_bytes());
    value[8..].copy_from_slice(&head.hash);
    value
}

/// The stored head ([`Head::EMPTY`] when there is none); a malformed one is [`Error::Corrupt`].
pub fn read_head(tree: &sled::Tree) -> Result<Head> {
    let Some(value) = tree.get(HEAD_KEY)? else {
        return Ok(Head::EMPTY);
    };
    let corrupt = || Error::Corrupt {
        seq: 0,
        reason: "the journal head is malformed".into(),
    };
    let seq = value.get(..8).and_then(decode_seq).ok_or_else(corrupt)?;
    let hash = value
        .get(8..)
        .and_then(|h| Hash::try_from(h).ok())
        .ok_or_else(corrupt)?;
    Ok(Head { seq, hash })
}

/// The stored form of a snapshot: version(8) anchor-hash(32) state.
pub fn encode_snapshot(version: u64, anchor: &Hash, state: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(41 + state.len());
    value.extend_from_slice(&version.to_be_bytes());
    value.extend_from_slice(anchor);
    pack(state, &mut value);
    value
}

/// A stored snapshot's version, anchor hash and state, or `None` if it is too short or its
/// state does not unpack.
pub fn decode_snapshot(value: &[u8]) -> Option<(u64, Hash, Vec<u8>)> {
    let version = decode_seq(value.get(..8)?)?;
    let anchor = Hash::try_from(value.get(8..40)?).ok()?;
    Some((version, anchor, unpack(&value[40..])?))
}

/// The stored form of a checkpoint: seq(8) hash(32) of its head, then state.
pub fn encode_checkpoint(head: &Head, state: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(41 + state.len());
    value.extend_from_slice(&encode_head(head));
    pack(state, &mut value);
    value
}

/// A stored checkpoint's head and state, or `None` if it is too short or its state does not
/// unpack.
pub fn decode_checkpoint(value: &[u8]) -> Option<(Head, Vec<u8>)> {
    let seq = decode_seq(value.get(..8)?)?;
    let hash = Hash::try_from(value.get(8..40)?).ok()?;
    Some((Head { seq, hash }, unpack(&value[40..])?))
}

/// A snapshot's or checkpoint's state stored as it is, after this tag.
const RAW: u8 = 0;
/// ... compressed with Snappy (raw format), after this tag. A group's snapshot (JSON, each
/// server's keys repeated) compresses several times over, and sled keeps recently written
/// values in memory: 100k servers' snapshots held about 100 MB of its heap uncompressed.
const SNAPPY: u8 = 1;

/// Appends `state` to `value` behind its tag: compressed when that is smaller.
fn pack(state: &[u8], value: &mut Vec<u8>) {
    match snap::raw::Encoder::new().compress_vec(state) {
        Ok(compressed) if compressed.len() < state.len() => {
            value.push(SNAPPY);
            value.extend_from_slice(&compressed);
        }
        _ => {
            value.push(RAW);
            value.extend_from_slice(state);
        }
    }
}

/// The state behind a tag. Values stored before tags (their states were JSON, which never
/// starts with byte 0 or 1) are the state as they are.
fn unpack(body: &[u8]) -> Option<Vec<u8>> {
    match body.split_first() {
        Some((&RAW, state)) => Some(state.to_vec()),
        Some((&SNAPPY, compressed)) => snap::raw::Decoder::new().decompress_vec(compressed).ok(),
        _ => Some(body.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANCHOR: Hash = [7; 32];

    #[test]
    fn a_block_reads_back_its_slots_and_records_and_a_damaged_one_does_not_read() {
        let records: [&[u8]; 3] = [b"one", b"", b"three"];
        let entries: Vec<(u64, &[u8])> = [100, 101, 103].into_iter().zip(records).collect();
        let value = encode_block(100, &entries);
        let read = decode_block(100, &value).unwrap();
        let got: Vec<(u64, &[u8])> = read.iter().map(|(s, r)| (*s, &value[r.clone()])).collect();
        assert_eq!(got, entries);
        for cut in 0..value.len() {
            assert_eq!(decode_block(100, &value[..cut]), None, "cut at {cut}");
        }
        let mut longer = value.clone();
        longer.push(0);
        assert_eq!(decode_block(100, &longer), None);
        assert_eq!(decode_block(u64::MAX, &value), None);
    }

    #[test]
    fn a_run_reads_back_its_seqs_however_far_apart_and_a_damaged_one_does_not_read() {
        let seqs = [5, 6, 200, 70_000, 1 << 40, u64::MAX];
        let value = encode_run(&seqs);
        assert_eq!(decode_run(&value).unwrap(), seqs);
        let mut extended = encode_run(&seqs[..1]);
        for pair in seqs.windows(2) {
            extend_run(&mut extended, pair[0], pair[1]);
        }
        assert_eq!(extended, value);
        // A version a record apart costs one byte.
        assert_eq!(encode_run(&[1, 2, 3]).len(), 10);
        assert_eq!(decode_run(&value[..7]), None);
        assert_eq!(decode_run(&value[..value.len() - 1]), None);
        assert_eq!(decode_run(&[0, 0, 0, 0, 0, 0, 0, 1, 0xff]), None);
        let overflow = [&u64::MAX.to_be_bytes()[..], &[1]].concat();
        assert_eq!(decode_run(&overflow), None);
        assert_eq!(decode_run_key(&run_key("grp_1", 257)), Some(257));
        assert_eq!(decode_block_key(&block_key(9)), Some(9));
        assert_eq!(decode_block_key(&record_key(9)), None);
    }

    #[test]
    fn a_large_state_is_stored_compressed_and_read_back_whole() {
        let servers: Vec<String> = (0..1_000)
            .map(|i| format!(r#"{{"id":"srv_{i:032x}","state":"active","failures":0}}"#))
            .collect();
        let state = format!("[{}]", servers.join(",")).into_bytes();
        let value = encode_snapshot(42, &ANCHOR, &state);
        assert_eq!(value[40], SNAPPY);
        assert!(
            value.len() < state.len() / 3,
            "{} of {}",
            value.len(),
            state.len()
        );
        assert_eq!(decode_snapshot(&value), Some((42, ANCHOR, state.clone())));
        let head = Head {
            seq: 9,
            hash: ANCHOR,
        };
        let checkpoint = encode_checkpoint(&head, &state);
        assert_eq!(checkpoint[40], SNAPPY);
        assert_eq!(decode_checkpoint(&checkpoint), Some((head, state)));
    }

    #[test]
    fn a_state_that_does_not_compress_is_stored_as_it_is_and_old_untagged_ones_still_read() {
        let value = encode_snapshot(1, &ANCHOR, b"{}");
        assert_eq!(value[40], RAW);
        assert_eq!(decode_snapshot(&value), Some((1, ANCHOR, b"{}".to_vec())));
        // Stored before states were tagged: JSON straight after the anchor.
        let mut old = Vec::new();
        old.extend_from_slice(&3u64.to_be_bytes());
        old.extend_from_slice(&ANCHOR);
        old.extend_from_slice(br#"{"id":"grp_1"}"#);
        assert_eq!(
            decode_snapshot(&old),
            Some((3, ANCHOR, br#"{"id":"grp_1"}"#.to_vec()))
        );
        // A compressed state that does not decompress is no state (the snapshot is ignored,
        // and the stream replayed).
        let mut broken = old[..40].to_vec();
        broken.extend_from_slice(&[SNAPPY, 0xff, 0xff, 0xff]);
        assert_eq!(decode_snapshot(&broken), None);
        assert_eq!(decode_snapshot(&old[..39]), None);
    }
}
