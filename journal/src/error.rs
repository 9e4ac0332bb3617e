//! The journal's one error type.

use crate::ExpectedVersion;

/// The journal's result: [`Error`] unless told otherwise.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a journal operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Optimistic concurrency: the stream was not at the version the appender expected.
    #[error("stream {stream} is at version {actual}, expected {expected}")]
    Conflict {
        /// The stream appended to.
        stream: String,
        /// The version the appender expected.
        expected: ExpectedVersion,
        /// The version the stream is at.
        actual: u64,
    },
    /// A stream id that is empty, too long or not printable ASCII; says why.
    #[error("invalid stream id: {0}")]
    InvalidStream(String),
    /// An event that cannot be appended (bad type, payload not one line of JSON, too large); says
    /// why.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// A stored record (or an exported line) that does not decode.
    #[error("record {seq} is corrupt: {reason}")]
    Corrupt {
        /// The record's sequence number (0 for the head).
        seq: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A record whose payload has a schema version the reader does not know.
    #[error(
        "record {seq} ({event_type}) has schema version {schema}; this build reads {supported}"
    )]
    UnknownSchema {
        /// The record's sequence number.
        seq: u64,
        /// The record's event type.
        event_type: String,
        /// The schema version the record carries.
        schema: u16,
        /// The schema version the reader asked for.
        supported: u16,
    },
    /// The hash chain does not hold: where and how it first breaks.
    #[error("the journal's chain is broken: {0}")]
    BrokenChain(crate::verify::Break),
    /// An import into a journal that already has records; carries its head's sequence number.
    #[error("the target journal is not empty (head at seq {0})")]
    NotEmpty(u64),
    /// An import stopped part way (a kill, a lost connection): the journal holds the first
    /// `head` records of an export of `expected`. The same import, run again, finishes it.
    #[error(
        "an import stopped part way: the journal holds {head} of the export's {expected} \
         records; run the same import again"
    )]
    ImportUnfinished {
        /// The records imported.
        head: u64,
        /// The export's records.
        expected: u64,
    },
    /// A fenced append whose lease has passed to another holder, or expired.
    #[error("the lease {lease} is no longer held with token {token}")]
    Fenced {
        /// The lease.
        lease: String,
        /// The token the append carried.
        token: u64,
    },
    /// Another process serves this journal (see `Config::sole_service`).
    #[error("another flotilla serve has this database's journal open")]
    Held,
    /// The journal's writer has stopped, so nothing more can be appended.
    #[error("the journal is closed")]
    Closed,
    /// The follower (see `Journal::follow`) failed to take in records: it is dropped, and
    /// appends are refused until a follower is set again.
    #[error("the journal's follower failed; appends are refused until it is set again")]
    FollowerFailed,
    /// sled failed.
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    /// PostgreSQL failed, or could not be reached; says why.
    #[error("postgres: {0}")]
    Postgres(String),
    /// Reading or writing a file (or an export) failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl From<tokio_postgres::Error> for Error {
    fn from(error: tokio_postgres::Error) -> Self {
        // The database's own message (and its SQLSTATE) says more than the client's summary.
        match error.as_db_error() {
            Some(db) => Error::Postgres(format!("{} ({})", db.message(), db.code().code())),
            None => Error::Postgres(error.to_string()),
        }
    }
}

impl Error {
    /// The same error again, for answering every append of a batch that failed as a whole.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Conflict {
                stream,
                expected,
                actual,
            } => Error::Conflict {
                stream: stream.clone(),
                expected: *expected,
                actual: *actual,
            },
            Error::InvalidStream(why) => Error::InvalidStream(why.clone()),
            Error::InvalidEvent(why) => Error::InvalidEvent(why.clone()),
            Error::Corrupt { seq, reason } => Error::Corrupt {
                seq: *seq,
                reason: reason.clone(),
            },
            Error::UnknownSchema {
                seq,
                event_type,
                schema,
                supported,
            } => Error::UnknownSchema {
                seq: *seq,
                event_type: event_type.clone(),
                schema: *schema,
                supported: *supported,
            },
            Error::BrokenChain(at) => Error::BrokenChain(at.clone()),
            Error::NotEmpty(seq) => Error::NotEmpty(*seq),
            Error::ImportUnfinished { head, expected } => Error::ImportUnfinished {
                head: *head,
                expected: *expected,
            },
            Error::Held => Error::Held,
            Error::Fenced { lease, token } => Error::Fenced {
                lease: lease.clone(),
                token: *token,
            },
            Error::Closed => Error::Closed,
            Error::FollowerFailed => Error::FollowerFailed,
            Error::Storage(error) => Error::Storage(error.clone()),
            Error::Postgres(why) => Error::Postgres(why.clone()),
            Error::Io(error) => Error::Io(std::io::Error::new(error.kind(), error.to_string())),
        }
    }
}
