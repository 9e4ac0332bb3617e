//! Where things live in sled.
//!
//! Records, the stream index and the head share one tree ([`TREE`]) so that one sled batch
//! writes all three atomically. Integers in keys are big-endian, so byte order is numeric order.
//!
//! ```text
//! key                                  value
//! 'r' seq(8)                           the record (see Record::canonical_bytes)
//! 's' stream-id 0x00 version(8)        seq(8) of that stream's record at that version
//! 'h'                                  head: seq(8) hash(32) of the last record
//! ```
//!
//! A stream id is printable ASCII, so it never contains the 0x00 separator.
//! Snapshots live apart, in [`SNAPSHOTS`]: stream-id → version(8) anchor-hash(32) state.
//! Checkpoints of whole-journal readers, in [`CHECKPOINTS`]: name → seq(8) hash(32) state.

use crate::record::Hash;
use crate::{Error, Head, Result};

/// The tree holding records, the stream index and the head.
pub const TREE: &str = "journal";
/// The tree holding each stream's latest snapshot, by stream id.
pub const SNAPSHOTS: &str = "snapshots";
/// The tree holding whole-journal readers' checkpoints, by name.
pub const CHECKPOINTS: &str = "checkpoints";

const RECORD: u8 = b'r';
const INDEX: u8 = b's';
/// The key of the head in [`TREE`].
pub const HEAD_KEY: &[u8] = b"h";

/// The key of the record at `seq`.
pub fn record_key(seq: u64) -> [u8; 9] {
    let mut key = [RECORD; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The sequence number in a record key, or `None` if `key` is not one.
pub fn decode_record_key(key: &[u8]) -> Option<u64> {
    match key {
        [RECORD, rest @ ..] => rest.try_into().ok().map(u64::from_be_bytes),
        _ => None,
    }
}

/// The prefix shared by every stream index key of `stream`.
pub fn index_prefix(stream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 10);
    key.push(INDEX);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key
}

/// The stream index key of `stream` at `version`.
pub fn index_key(stream: &str, version: u64) -> Vec<u8> {
    let mut key = index_prefix(stream);
    key.extend_from_slice(&version.to_be_bytes());
    key
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

/// The sequence number of the last record stored, whatever the head says.
pub fn last_record_seq(tree: &sled::Tree) -> Result<u64> {
    let last = tree
        .range(record_key(0)..=record_key(u64::MAX))
        .next_back()
        .transpose()?;
    Ok(last
        .and_then(|(key, _)| decode_record_key(&key))
        .unwrap_or(0))
}

/// The version of `stream`'s last event, from the stream index (0 when it has none).
pub fn stream_version(tree: &sled::Tree, stream: &str) -> Result<u64> {
    let last = tree
        .scan_prefix(index_prefix(stream))
        .next_back()
        .transpose()?;
    let Some((key, _)) = last else {
        return Ok(0);
    };
    key.get(key.len().saturating_sub(8)..)
        .and_then(decode_seq)
        .ok_or_else(|| Error::Corrupt {
            seq: 0,
            reason: format!("stream index key of {stream} is malformed"),
        })
}

/// The stored form of a snapshot: version(8) anchor-hash(32) state.
pub fn encode_snapshot(version: u64, anchor: &Hash, state: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(40 + state.len());
    value.extend_from_slice(&version.to_be_bytes());
    value.extend_from_slice(anchor);
    value.extend_from_slice(state);
    value
}

/// A stored snapshot's version, anchor hash and state, or `None` if it is too short.
pub fn decode_snapshot(value: &[u8]) -> Option<(u64, Hash, &[u8])> {
    let version = decode_seq(value.get(..8)?)?;
    let anchor = Hash::try_from(value.get(8..40)?).ok()?;
    Some((version, anchor, &value[40..]))
}

/// The stored form of a checkpoint: seq(8) hash(32) of its head, then state.
pub fn encode_checkpoint(head: &Head, state: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(40 + state.len());
    value.extend_from_slice(&encode_head(head));
    value.extend_from_slice(state);
    value
}

/// A stored checkpoint's head and state, or `None` if it is too short.
pub fn decode_checkpoint(value: &[u8]) -> Option<(Head, &[u8])> {
    let seq = decode_seq(value.get(..8)?)?;
    let hash = Hash::try_from(value.get(8..40)?).ok()?;
    Some((Head { seq, hash }, &value[40..]))
}
