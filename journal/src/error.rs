//! The journal's one error type.

use crate::ExpectedVersion;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Optimistic concurrency: the stream was not at the version the appender expected.
    #[error("stream {stream} is at version {actual}, expected {expected}")]
    Conflict {
        stream: String,
        expected: ExpectedVersion,
        actual: u64,
    },
    #[error("invalid stream id: {0}")]
    InvalidStream(String),
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// A stored record (or an exported line) that does not decode.
    #[error("record {seq} is corrupt: {reason}")]
    Corrupt { seq: u64, reason: String },
    #[error(
        "record {seq} ({event_type}) has schema version {schema}; this build reads {supported}"
    )]
    UnknownSchema {
        seq: u64,
        event_type: String,
        schema: u16,
        supported: u16,
    },
    #[error("the journal's chain is broken: {0}")]
    BrokenChain(crate::verify::Break),
    #[error("the target journal is not empty (head at seq {0})")]
    NotEmpty(u64),
    #[error("the journal is closed")]
    Closed,
    /// The follower (see `Journal::follow`) panicked while taking in records; it is dropped.
    #[error("the journal's follower failed")]
    FollowerFailed,
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
