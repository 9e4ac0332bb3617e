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

pub const TREE: &str = "journal";
pub const SNAPSHOTS: &str = "snapshots";
pub const CHECKPOINTS: &str = "checkpoints";

const RECORD: u8 = b'r';
const INDEX: u8 = b's';
pub const HEAD_KEY: &[u8] = b"h";

pub fn record_key(seq: u64) -> [u8; 9] {
    let mut key = [RECORD; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub fn decode_record_key(key: &[u8]) -> Option<u64> {
    match key {
        [RECORD, rest @ ..] => rest.try_into().ok().map(u64::from_be_bytes),
        _ => None,
    }
}

pub fn index_prefix(stream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 10);
    key.push(INDEX);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key
}

pub fn index_key(stream: &str, version: u64) -> Vec<u8> {
    let mut key = index_prefix(stream);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

pub fn decode_seq(value: &[u8]) -> Option<u64> {
    value.try_into().ok().map(u64::from_be_bytes)
}

pub fn encode_head(head: &Head) -> [u8; 40] {
    let mut value = [0; 40];
    value[..8].copy_from_slice(&head.seq.to_be_bytes());
    value[8..].copy_from_slice(&head.hash);
    value
}

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

pub fn encode_snapshot(version: u64, anchor: &Hash, state: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(40 + state.len());
    value.extend_from_slice(&version.to_be_bytes());
    value.extend_from_slice(anchor);
    value.extend_from_slice(state);
    value
}

pub fn decode_snapshot(value: &[u8]) -> Option<(u64, Hash, &[u8])> {
    let version = decode_seq(value.get(..8)?)?;
    let anchor = Hash::try_from(value.get(8..40)?).ok()?;
    Some((version, anchor, &value[40..]))
}

pub fn encode_checkpoint(head: &Head, state: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(40 + state.len());
    value.extend_from_slice(&encode_head(head));
    value.extend_from_slice(state);
    value
}

pub fn decode_checkpoint(value: &[u8]) -> Option<(Head, &[u8])> {
    let seq = decode_seq(value.get(..8)?)?;
    let hash = Hash::try_from(value.get(8..40)?).ok()?;
    Some((Head { seq, hash }, &value[40..]))
}
