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
