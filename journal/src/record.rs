//! Records: what one journaled event is, and its byte layout on disk.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// A blake3 hash, as stored in the chain.
pub type Hash = [u8; 32];

/// The hash a journal's first record chains from.
pub const GENESIS: Hash = [0; 32];

/// The only record format this code writes and reads.
pub const FORMAT: u8 = 1;

/// Longest stream id or event type, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Largest payload one event may carry, in bytes.
pub const MAX_PAYLOAD_LEN: usize = 1 << 20;

/// An event offered for appending: the journal gives it a place (sequence number, stream version)
/// and a hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    event_type: String,
    schema: u16,
    timestamp_ms: i64,
    payload: Vec<u8>,
}

impl NewEvent {
    /// An event whose payload is `value` serialized as compact JSON.
    pub fn json<T: Serialize + ?Sized>(
        event_type: &str,
        schema: u16,
        timestamp_ms: i64,
        value: &T,
    ) -> Result<Self> {
        let payload =
            serde_json::to_vec(value).map_err(|e| Error::InvalidEvent(format!("payload: {e}")))?;
        // serde_json writes JSON and nothing else, so it is not parsed again; a raw value it
        // embeds may still hold a line break. (A hand-written `Serialize` could still make it
        // write a map key without its value: debug builds, the tests', parse it to catch that.)
        check_line(&payload).map_err(Error::InvalidEvent)?;
        debug_assert!(
            serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_ok(),
            "serde_json wrote a payload that is not JSON"
        );
        Self::unchecked(event_type, schema, timestamp_ms, payload)
    }

    /// An event whose payload is already JSON text. The text must be one line (exports are JSON
    /// lines that embed payloads byte for byte).
    pub fn raw(event_type: &str, schema: u16, timestamp_ms: i64, payload: Vec<u8>) -> Result<Self> {
        check_payload(&payload).map_err(Error::InvalidEvent)?;
        Self::unchecked(event_type, schema, timestamp_ms, payload)
    }

    /// An event of `payload`, whose text is known to be JSON on one line.
    fn unchecked(
        event_type: &str,
        schema: u16,
        timestamp_ms: i64,
        payload: Vec<u8>,
    ) -> Result<Self> {
        check_name("event type", event_type).map_err(Error::InvalidEvent)?;
        Ok(Self {
            event_type: event_type.to_owned(),
            schema,
            timestamp_ms,
            payload,
        })
    }

    /// Its event type.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }
}

/// One journaled event, with its place in the journal and in its stream, and its link in the
/// hash chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Global sequence number, from 1, without gaps.
    pub seq: u64,
    /// The stream (one per object) the event belongs to.
    pub stream: String,
    /// The event's version within its stream, from 1, without gaps.
    pub version: u64,
    /// What happened, as a name (`group_created`, say).
    pub event_type: String,
    /// Schema version of the payload, so readers can refuse what they do not know.
    pub schema: u16,
    /// When the event happened, Unix milliseconds, as the appender's clock said.
    pub timestamp_ms: i64,
    /// The event's JSON text.
    pub payload: Vec<u8>,
    /// Hash of the record before this one ([`GENESIS`] for the first).
    pub prev_hash: Hash,
    /// blake3 over `prev_hash` and the record's canonical bytes.
    pub hash: Hash,
}

impl Record {
    /// Builds the record that `event` becomes at `seq`/`version`, chained after `prev_hash`.
    pub(crate) fn seal(
        seq: u64,
        stream: &str,
        version: u64,
        event: NewEvent,
        prev_hash: Hash,
    ) -> Record {
        let mut record = Record {
            seq,
            stream: stream.to_owned(),
            version,
            event_type: event.event_type,
            schema: event.schema,
            timestamp_ms: event.timestamp_ms,
            payload: event.payload,
            prev_hash,
            hash: GENESIS,
        };
        record.hash = record.compute_hash();
        record
    }

    /// The hash this record should carry given its fields and `prev_hash`.
    pub fn compute_hash(&self) -> Hash {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.prev_hash);
        hasher.update(&self.canonical_bytes());
        *hasher.finalize().as_bytes()
    }

    /// Decodes the payload as `T`, refusing a schema version other than `schema`.
    pub fn decode<T: DeserializeOwned>(&self, schema: u16) -> Result<T> {
        if self.schema != schema {
            return Err(Error::UnknownSchema {
                seq: self.seq,
                event_type: self.event_type.clone(),
                schema: self.schema,
                supported: schema,
            });
        }
        serde_json::from_slice(&self.payload).map_err(|e| Error::Corrupt {
            seq: self.seq,
            reason: format!("payload of {} does not decode: {e}", self.event_type),
        })
    }

    /// The record's canonical bytes: everything but the two hashes.
    ///
    /// Byte layout of a stored record (integers big-endian, strings UTF-8):
    ///
    /// ```text
    /// offset  size  field
    /// 0       1     format (1)
    /// 1       8     seq
    /// 9       8     stream version
    /// 17      8     timestamp, Unix milliseconds (i64)
    /// 25      2     schema version
    /// 27      2     stream id length S
    /// 29      S     stream id
    /// 29+S    2     event type length T
    /// 31+S    T     event type
    /// 31+S+T  4     payload length P
    /// 35+S+T  P     payload (JSON text)
    /// -- end of canonical bytes (length C = 35+S+T+P) --
    /// C       32    previous hash
    /// C+32    32    hash = blake3(previous hash ‖ canonical bytes)
    /// ```
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_canonical(&mut out);
        out
    }

    fn encoded_len(&self) -> usize {
        35 + self.stream.len() + self.event_type.len() + self.payload.len() + 64
    }

    fn write_canonical(&self, out: &mut Vec<u8>) {
        out.push(FORMAT);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.schema.to_be_bytes());
        // Lengths fit: names are checked against MAX_NAME_LEN, payloads against MAX_PAYLOAD_LEN.
        out.extend_from_slice(&(self.stream.len() as u16).to_be_bytes());
        out.extend_from_slice(self.stream.as_bytes());
        out.extend_from_slice(&(self.event_type.len() as u16).to_be_bytes());
        out.extend_from_slice(self.event_type.as_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// The stored form: canonical bytes, then the previous hash and the hash (see
    /// [`Record::canonical_bytes`] for the layout).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_canonical(&mut out);
        out.extend_from_slice(&self.prev_hash);
        out.extend_from_slice(&self.hash);
        out
    }

    /// Decodes a stored record. `seq` is the key it was found under, named in any error.
    pub fn decode_stored(seq: u64, bytes: &[u8]) -> Result<Record> {
        let corrupt = |reason: &str| Error::Corrupt {
            seq,
            reason: reason.to_owned(),
        };
        let mut r = Reader { bytes, at: 0 };
        let format = r.u8().ok_or_else(|| corrupt("empty record"))?;
        if format != FORMAT {
            return Err(corrupt(&format!("unknown record format {format}")));
        }
        let short = || corrupt("record is truncated");
        let record_seq = r.u64().ok_or_else(short)?;
        let version = r.u64().ok_or_else(short)?;
        let timestamp_ms = r.u64().ok_or_else(short)? as i64;
        let schema = r.u16().ok_or_else(short)?;
        let stream_len = r.u16().ok_or_else(short)? as usize;
        let stream = r.take(stream_len).ok_or_else(short)?;
        let type_len = r.u16().ok_or_else(short)? as usize;
        let event_type = r.take(type_len).ok_or_else(short)?;
        let payload_len = r.u32().ok_or_else(short)? as usize;
        let payload = r.take(payload_len).ok_or_else(short)?;
        let prev_hash = r.hash().ok_or_else(short)?;
        let hash = r.hash().ok_or_else(short)?;
        if r.at != bytes.len() {
            return Err(corrupt("trailing bytes after the record"));
        }
        let text = |b: &[u8], what: &str| {
            String::from_utf8(b.to_vec()).map_err(|_| corrupt(&format!("{what} is not UTF-8")))
        };
        Ok(Record {
            seq: record_seq,
            stream: text(stream, "stream id")?,
            version,
            event_type: text(event_type, "event type")?,
            schema,
            timestamp_ms,
            payload: payload.to_vec(),
            prev_hash,
            hash,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }
    fn hash(&mut self) -> Option<Hash> {
        self.array()
    }
}

/// Stream ids and event types: 1 to [`MAX_NAME_LEN`] printable ASCII characters (so a stream id
/// can never contain the index's separator byte).
pub(crate) fn check_name(what: &str, name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("{what} must be 1 to {MAX_NAME_LEN} bytes"));
    }
    if !name.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(format!("{what} must be printable ASCII without spaces"));
    }
    Ok(())
}

fn check_payload(payload: &[u8]) -> std::result::Result<(), String> {
    check_line(payload)?;
    serde_json::from_slice::<serde::de::IgnoredAny>(payload)
        .map_err(|e| format!("payload is not JSON: {e}"))?;
    Ok(())
}

/// Whether `payload` is within the size limit, on one line.
fn check_line(payload: &[u8]) -> std::result::Result<(), String> {
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(format!("payload is over {MAX_PAYLOAD_LEN} bytes"));
    }
    if payload.contains(&b'\n') || payload.contains(&b'\r') {
        return Err("payload must be JSON on one line".to_owned());
    }
    Ok(())
}

/// Lowercase hex of a hash, as exports and the command line show it.
pub fn hex(hash: &Hash) -> String {
    use std::fmt::Write;
    hash.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Parses [`hex`]'s output back into a hash: 64 hex digits, nothing else (`from_str_radix`
/// alone would take a sign).
pub fn parse_hex(text: &str) -> Option<Hash> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_parses_from_its_hex_and_from_nothing_else() {
        let hash: Hash = std::array::from_fn(|i| i as u8 * 7);
        assert_eq!(parse_hex(&hex(&hash)), Some(hash));
        assert_eq!(parse_hex(&"+a".repeat(32)), None);
        assert_eq!(parse_hex(&"0g".repeat(32)), None);
        assert_eq!(parse_hex(&hex(&hash)[1..]), None);
    }

    fn sample() -> Record {
        let event = NewEvent::json("group_created", 1, 1_700_000_000_000, &[1, 2, 3]).unwrap();
        Record::seal(7, "group-1", 3, event, [9; 32])
    }

    #[test]
    fn a_record_round_trips_through_its_stored_bytes() {
        let record = sample();
        assert_eq!(Record::decode_stored(7, &record.encode()).unwrap(), record);
    }

    #[test]
    fn the_hash_covers_the_previous_hash_and_every_field() {
        let record = sample();
        let mut other = record.clone();
        other.prev_hash[0] ^= 1;
        assert_ne!(other.compute_hash(), record.hash);
        let mut other = record.clone();
        other.timestamp_ms += 1;
        assert_ne!(other.compute_hash(), record.hash);
        let mut other = record.clone();
        other.payload = b"[1,2,4]".to_vec();
        assert_ne!(other.compute_hash(), record.hash);
    }

    #[test]
    fn every_truncation_of_a_record_is_a_clear_error_naming_its_seq() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            match Record::decode_stored(7, &bytes[..len]) {
                Err(Error::Corrupt { seq: 7, .. }) => {}
                other => panic!("length {len}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_unknown_record_format_is_refused() {
        let mut bytes = sample().encode();
        bytes[0] = 2;
        let err = Record::decode_stored(7, &bytes).unwrap_err();
        assert!(err.to_string().contains("format 2"), "{err}");
    }

    #[test]
    fn an_unknown_schema_version_is_a_clear_error() {
        let err = sample().decode::<Vec<u32>>(2).unwrap_err();
        assert!(matches!(
            err,
            Error::UnknownSchema {
                seq: 7,
                schema: 1,
                supported: 2,
                ..
            }
        ));
        assert_eq!(sample().decode::<Vec<u32>>(1).unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn payloads_must_be_one_line_of_json() {
        assert!(NewEvent::raw("t", 1, 0, b"{\"a\":\n1}".to_vec()).is_err());
        assert!(NewEvent::raw("t", 1, 0, b"{oops".to_vec()).is_err());
        assert!(NewEvent::raw("has space", 1, 0, b"1".to_vec()).is_err());
        assert!(NewEvent::raw("t", 1, 0, b"{\"a\":1}".to_vec()).is_ok());
        // Serialized values are not parsed again, but a raw value they embed is still held to
        // one line, and the name and size to their rules.
        let raw = serde_json::value::RawValue::from_string("{\"a\":\n1}".to_owned()).unwrap();
        assert!(NewEvent::json("t", 1, 0, &raw).is_err());
        assert!(NewEvent::json("t", 1, 0, &[raw]).is_err());
        assert!(NewEvent::json("has space", 1, 0, &1).is_err());
        assert!(NewEvent::json("t", 1, 0, &"x".repeat(MAX_PAYLOAD_LEN)).is_err());
        let event = NewEvent::json("t", 1, 0, &serde_json::json!({"a": "b\nc"})).unwrap();
        assert_eq!(event.payload, br#"{"a":"b\nc"}"#);
    }

    #[test]
    fn hex_round_trips() {
        let hash = sample().hash;
        assert_eq!(parse_hex(&hex(&hash)), Some(hash));
        assert_eq!(parse_hex("zz"), None);
    }
}
