//! Walking the hash chain: the one check shared by a live journal and an export.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use crate::record::{hex, Hash, Record, GENESIS};
use crate::Head;

/// The first place where the chain does not hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Break {
    /// The sequence number where the break is seen.
    pub seq: u64,
    /// What is wrong there.
    pub kind: BreakKind,
}

/// How the chain breaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BreakKind {
    /// The record does not decode.
    Undecodable {
        /// Why it does not decode.
        reason: String,
    },
    /// The record with this sequence number is absent (deleted).
    Missing,
    /// A record carries another sequence number than its place (reordered or moved).
    OutOfPlace {
        /// The sequence number the record carries.
        found: u64,
    },
    /// The record does not chain from the one before it.
    PreviousHashMismatch,
    /// The record's content does not match its hash (edited).
    HashMismatch,
    /// A stream skips or repeats a version.
    StreamVersionGap {
        /// The stream.
        stream: String,
        /// The version due: one past the stream's last.
        expected: u64,
        /// The version the record carries.
        found: u64,
    },
    /// The head says the journal goes further than its records do (tail truncated).
    Truncated {
        /// The head's sequence number.
        head_seq: u64,
    },
    /// Records follow the head, or the head's hash is not the last record's.
    HeadMismatch {
        /// The head's sequence number.
        head_seq: u64,
        /// The head's hash, in lowercase hex.
        head_hash: String,
    },
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at seq {}: ", self.seq)?;
        match &self.kind {
            BreakKind::Undecodable { reason } => write!(f, "record does not decode ({reason})"),
            BreakKind::Missing => write!(f, "record is missing (deleted)"),
            BreakKind::OutOfPlace { found } => write!(f, "found record {found} here (reordered)"),
            BreakKind::PreviousHashMismatch => {
                write!(f, "record does not chain from the one before it")
            }
            BreakKind::HashMismatch => write!(f, "record does not match its hash (edited)"),
            BreakKind::StreamVersionGap {
                stream,
                expected,
                found,
            } => write!(
                f,
                "stream {stream} has version {found} where {expected} was due"
            ),
            BreakKind::Truncated { head_seq } => {
                write!(
                    f,
                    "records end before the head at seq {head_seq} (truncated)"
                )
            }
            BreakKind::HeadMismatch {
                head_seq,
                head_hash,
            } => write!(
                f,
                "the head (seq {head_seq}, hash {head_hash}) does not match the records"
            ),
        }
    }
}

/// Checks records one at a time, in the order they are stored.
#[derive(Debug)]
pub struct Verifier {
    next_seq: u64,
    prev_hash: Hash,
    versions: HashMap<String, u64>,
}

impl Default for Verifier {
    fn default() -> Self {
        Self {
            next_seq: 1,
            prev_hash: GENESIS,
            versions: HashMap::new(),
        }
    }
}

impl Verifier {
    /// Checks the record stored under `key_seq` (or the reason it did not decode).
    pub fn check(&mut self, key_seq: u64, record: Result<Record, String>) -> Result<(), Break> {
        let broken = |seq, kind| Err(Break { seq, kind });
        if key_seq != self.next_seq {
            return if key_seq > self.next_seq {
                broken(self.next_seq, BreakKind::Missing)
            } else {
                broken(key_seq, BreakKind::OutOfPlace { found: key_seq })
            };
        }
        let record = match record {
            Ok(record) => record,
            Err(reason) => return broken(key_seq, BreakKind::Undecodable { reason }),
        };
        if record.seq != key_seq {
            return broken(key_seq, BreakKind::OutOfPlace { found: record.seq });
        }
        if record.prev_hash != self.prev_hash {
            return broken(key_seq, BreakKind::PreviousHashMismatch);
        }
        if record.compute_hash() != record.hash {
            return broken(key_seq, BreakKind::HashMismatch);
        }
        let version = self.versions.entry(record.stream.clone()).or_insert(0);
        if record.version != *version + 1 {
            return broken(
                key_seq,
                BreakKind::StreamVersionGap {
                    stream: record.stream,
                    expected: *version + 1,
                    found: record.version,
                },
            );
        }
        *version = record.version;
        self.prev_hash = record.hash;
        self.next_seq += 1;
        Ok(())
    }

    /// Compares what was walked with the head recorded beside it.
    pub fn finish(self, head: Head) -> Result<Head, Break> {
        let walked = Head {
            seq: self.next_seq - 1,
            hash: self.prev_hash,
        };
        if head.seq > walked.seq {
            return Err(Break {
                seq: walked.seq + 1,
                kind: BreakKind::Truncated { head_seq: head.seq },
            });
        }
        if head != walked {
            return Err(Break {
                seq: if head.seq < walked.seq {
                    head.seq + 1
                } else {
                    head.seq.max(1)
                },
                kind: BreakKind::HeadMismatch {
                    head_seq: head.seq,
                    head_hash: hex(&head.hash),
                },
            });
        }
        Ok(walked)
    }
}
