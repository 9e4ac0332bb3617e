//! What the actors answer when a command does not go through.

use crate::domain::Rejection;

/// Why a message to an object did not succeed: a rejection by the domain (the caller's doing),
/// or a fault of the service (storage, a stopped actor).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 4xx: the domain refused the command; see [`Rejection::status`].
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// 401 `invalid_signature`: no valid secret of the webhook signed the request.
    #[error("invalid signature")]
    InvalidSignature,
    /// 400 with its own `code`: a signed call whose content is malformed (its body lacks a nonce,
    /// say), found once its signature checked out.
    #[error("{message}")]
    Malformed {
        /// Stable snake_case code.
        code: &'static str,
        /// Human text.
        message: String,
    },
    /// Owner's work (see `Aggregate::leased_by`) on a node that does not hold the group's
    /// shard: nothing was written.
    #[error("this node does not hold the lease of group {0}'s shard")]
    NotOwner(String),
    /// 503 `unavailable`: the object's actor is restarting or its mailbox is closed.
    #[error("the object is unavailable, try again")]
    Unavailable,
    /// 500 `journal`: the journal failed; nothing was acknowledged.
    #[error("journal: {0}")]
    Journal(#[from] flotilla_journal::Error),
}

impl Error {
    /// The stream an append was refused on because it had moved, for a conflict.
    pub fn conflict_on(&self) -> Option<&str> {
        match self {
            Error::Journal(flotilla_journal::Error::Conflict { stream, .. }) => Some(stream),
            _ => None,
        }
    }

    /// The stable snake_case code of the API's error body.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Rejected(rejection) => rejection.code(),
            Error::InvalidSignature => "invalid_signature",
            Error::Malformed { code, .. } => code,
            // While a group's lease changes hands, or other nodes keep moving its stream.
            Error::Unavailable
            | Error::NotOwner(_)
            | Error::Journal(
                flotilla_journal::Error::Fenced { .. } | flotilla_journal::Error::Conflict { .. },
            ) => "unavailable",
            Error::Journal(_) => "journal",
        }
    }

    /// The HTTP status it answers with.
    pub fn status(&self) -> u16 {
        match self {
            Error::Rejected(rejection) => rejection.status(),
            Error::InvalidSignature => 401,
            Error::Malformed { .. } => 400,
            Error::Unavailable
            | Error::NotOwner(_)
            | Error::Journal(
                flotilla_journal::Error::Fenced { .. } | flotilla_journal::Error::Conflict { .. },
            ) => 503,
            Error::Journal(_) => 500,
        }
    }
}
