//! Moving a journal as JSON lines, chain included.
//!
//! An export is one JSON object per record, in sequence order, then one trailer line naming the
//! head:
//!
//! ```text
//! {"seq":1,"stream":"group-…","version":1,"type":"group_created","schema":1,"timestamp_ms":…,"payload":{…},"prev_hash":"00…","hash":"…"}
//! …
//! {"head":{"seq":1234,"hash":"…"}}
//! ```
//!
//! `payload` is the event's JSON text byte for byte, so every hash can be recomputed from the
//! export alone. The trailer is what makes a truncated export detectable.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::record::{hex, parse_hex, Record};
use crate::verify::{Break, BreakKind, Verifier};
use crate::{Error, Head, Journal, Result};

/// One record as a JSON line (also what `audit log` prints).
#[derive(Debug, Serialize, Deserialize)]
pub struct Line<'a> {
    /// Global sequence number, from 1.
    pub seq: u64,
    /// The stream the event belongs to.
    pub stream: String,
    /// The event's version within its stream, from 1.
    pub version: u64,
    /// The event type, written as `type`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Schema version of the payload.
    pub schema: u16,
    /// When the event happened, Unix milliseconds.
    pub timestamp_ms: i64,
    /// The event's JSON text, byte for byte as stored.
    #[serde(borrow)]
    pub payload: &'a RawValue,
    /// Hash of the record before, in lowercase hex.
    pub prev_hash: String,
    /// The record's hash, in lowercase hex.
    pub hash: String,
}

impl<'a> Line<'a> {
    /// The line for `record`. Fails only if the stored payload is not JSON (a corrupt record).
    pub fn from_record(record: &'a Record) -> Result<Line<'a>> {
        let text = std::str::from_utf8(&record.payload).ok();
        let payload = text
            .and_then(|t| serde_json::from_str::<&RawValue>(t).ok())
            .ok_or_else(|| Error::Corrupt {
                seq: record.seq,
                reason: "payload is not JSON".into(),
            })?;
        Ok(Line {
            seq: record.seq,
            stream: record.stream.clone(),
            version: record.version,
            event_type: record.event_type.clone(),
            schema: record.schema,
            timestamp_ms: record.timestamp_ms,
            payload,
            prev_hash: hex(&record.prev_hash),
            hash: hex(&record.hash),
        })
    }

    /// The record this line describes; hashes are taken as written, for verification to judge.
    pub fn to_record(&self) -> std::result::Result<Record, String> {
        let hash = |text: &str, what: &str| parse_hex(text).ok_or_else(|| format!("bad {what}"));
        Ok(Record {
            seq: self.seq,
            stream: self.stream.clone(),
            version: self.version,
            event_type: self.event_type.clone(),
            schema: self.schema,
            timestamp_ms: self.timestamp_ms,
            payload: self.payload.get().as_bytes().to_vec(),
            prev_hash: hash(&self.prev_hash, "prev_hash")?,
            hash: hash(&self.hash, "hash")?,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Trailer {
    head: HeadLine,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadLine {
    seq: u64,
    hash: String,
}

/// Writes the whole journal to `out`, verifying the chain as it goes: a broken journal is not
/// exported (run `audit verify` to see where it breaks).
pub fn export(journal: &Journal, out: &mut impl Write) -> Result<Head> {
    let head = journal.head()?;
    let mut verifier = Verifier::default();
    for record in journal.read_all(1) {
        let record = match record {
            Ok(record) => record,
            Err(Error::Corrupt { seq, reason }) => {
                let kind = BreakKind::Undecodable { reason };
                return Err(Error::BrokenChain(Break { seq, kind }));
            }
            Err(error) => return Err(error),
        };
        // Records appended while exporting are past the head read above; they stay out.
        if record.seq > head.seq {
            break;
        }
        let line = Line::from_record(&record)?;
        serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        verifier
            .check(record.seq, Ok(record))
            .map_err(Error::BrokenChain)?;
    }
    let head = verifier.finish(head).map_err(Error::BrokenChain)?;
    write_trailer(out, head)?;
    Ok(head)
}

/// Writes every record as stored, then the stored head, without judging the chain: what a
/// client verifies on its own (`audit verify --url`). A record that does not decode is written
/// as a line naming it, which a verifier reports as the break it is.
pub fn dump(journal: &Journal, out: &mut impl Write) -> Result<Head> {
    let head = journal.head()?;
    for record in journal.read_all(1) {
        match record {
            Ok(record) if record.seq > head.seq => break,
            Ok(record) => {
                let line = Line::from_record(&record)?;
                serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
            }
            Err(Error::Corrupt { seq, reason }) => {
                let line = serde_json::json!({ "seq": seq, "corrupt": reason });
                serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
            }
            Err(error) => return Err(error),
        }
        out.write_all(b"\n")?;
    }
    write_trailer(out, head)?;
    Ok(head)
}

fn write_trailer(out: &mut impl Write, head: Head) -> Result<()> {
    let trailer = Trailer {
        head: HeadLine {
            seq: head.seq,
            hash: hex(&head.hash),
        },
    };
    serde_json::to_writer(&mut *out, &trailer).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// The records of an export, in order, unverified (the trailer ends them; an export that ends
/// without one ends in an error, as it was cut short). For reading an export or a live
/// service's dump the way `audit log` and `replay` read a journal.
pub fn records(input: impl BufRead) -> impl Iterator<Item = Result<Record>> {
    let mut lines = input.lines();
    let mut next_seq = 1;
    let mut ended = false;
    std::iter::from_fn(move || {
        if ended {
            return None;
        }
        let line = match lines.next() {
            Some(Ok(line)) => line,
            Some(Err(error)) => return Some(Err(error.into())),
            None => {
                ended = true;
                return Some(Err(Error::Corrupt {
                    seq: next_seq,
                    reason: "the export ends without its trailer: it was cut short".into(),
                }));
            }
        };
        if serde_json::from_str::<Trailer>(&line).is_ok() {
            ended = true;
            return None;
        }
        let record = serde_json::from_str::<Line>(&line)
            .map_err(|e| e.to_string())
            .and_then(|line| line.to_record())
            .map_err(|reason| Error::Corrupt {
                seq: next_seq,
                reason,
            });
        next_seq += 1;
        Some(record)
    })
}

/// Verifies an export on its own. Returns its head, or [`Error::BrokenChain`] naming the first
/// break; a line that does not parse is a break at the sequence number it should have had.
pub fn verify_export(input: impl BufRead) -> Result<Head> {
    read_export(input, |_| Ok(()))
}

/// Walks an export, handing each verified record to `each`.
fn read_export(input: impl BufRead, mut each: impl FnMut(Record) -> Result<()>) -> Result<Head> {
    let mut verifier = Verifier::default();
    let mut next_seq = 1;
    let mut trailer: Option<Head> = None;
    for line in input.lines() {
        let line = line?;
        let broken = |reason: String| {
            Error::BrokenChain(Break {
                seq: next_seq,
                kind: BreakKind::Undecodable { reason },
            })
        };
        if trailer.is_some() {
            // An empty line (an editor's, a copy's) carries nothing; anything else would be
            // records the trailer does not vouch for.
            if line.trim().is_empty() {
                continue;
            }
            return Err(broken("a line follows the trailer".into()));
        }
        if let Ok(t) = serde_json::from_str::<Trailer>(&line) {
            let hash = parse_hex(&t.head.hash).ok_or_else(|| broken("bad head hash".into()))?;
            trailer = Some(Head {
                seq: t.head.seq,
                hash,
            });
            continue;
        }
        let parsed: Line = serde_json::from_str(&line).map_err(|e| broken(e.to_string()))?;
        let record = parsed.to_record();
        let seq = parsed.seq;
        verifier
            .check(seq, record.clone())
            .map_err(Error::BrokenChain)?;
        // `check` has accepted it, so it decoded.
        if let Ok(record) = record {
            each(record)?;
        }
        next_seq = seq + 1;
    }
    let Some(head) = trailer else {
        return Err(Error::BrokenChain(Break {
            seq: next_seq,
            kind: BreakKind::Undecodable {
                reason: "the export has no trailer (truncated)".into(),
            },
        }));
    };
    verifier.finish(head).map_err(Error::BrokenChain)
}

/// Imports an export into an empty journal. The export is verified in full first (`open` is
/// called twice: once to verify, once to write), so a broken chain imports nothing.
///
/// The import is marked under way until its last record is in (see
/// [`Journal::unfinished_import`]): one stopped part way leaves a journal that says so, which
/// the service refuses to serve and verify reports. The same import, run again, goes on from
/// where that one stopped; another export is refused as into any journal with records.
pub fn import<R: BufRead>(journal: &Journal, mut open: impl FnMut() -> Result<R>) -> Result<Head> {
    let head = journal.head()?;
    let unfinished = journal.unfinished_import()?;
    if head.seq != 0 && unfinished.is_none() {
        return Err(Error::NotEmpty(head.seq));
    }
    let expected = verify_export(open()?)?;
    match unfinished {
        // Not the export the import that stopped was bringing in: that one is still owed.
        Some(owed) if owed != expected && head.seq != 0 => {
            return Err(Error::ImportUnfinished {
                head: head.seq,
                expected: owed.seq,
            })
        }
        _ => {}
    }
    journal.start_import(expected)?;
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    let end = read_export(open()?, |record| {
        if record.seq <= head.seq {
            // In already, from the import that stopped: the same record, or this is not the
            // export it was bringing in.
            if record.seq == head.seq && record.hash != head.hash {
                return Err(Error::NotEmpty(head.seq));
            }
            return Ok(());
        }
        batch.push(record);
        if batch.len() == IMPORT_BATCH {
            journal.append_sealed(std::mem::take(&mut batch))?;
        }
        Ok(())
    })?;
    if !batch.is_empty() {
        journal.append_sealed(batch)?;
    }
    journal.finish_import()?;
    Ok(end)
}

const IMPORT_BATCH: usize = 10_000;
