//! What readers of the sled back end's tree may rely on it holding.
//!
//! The sled back end's writer answers a batch's appenders as soon as the batch's write-ahead
//! entry is synced, and inserts its writes into sled only after: a third of the writer's time,
//! taken out of the wait of every call in the batch (see `sled_store`). Between the answers and
//! the inserts the tree is behind what was acknowledged, so every read first waits here until
//! the tree holds everything answered when the read began: whoever heard an append acknowledged
//! reads it, and a read never sees less than an earlier one did. The wait is the inserts of one
//! batch at most, and a read that asks between two batches (nearly all of them) does not wait.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::{Error, Result};

/// The writer's two marks, answered and inserted, and the readers waiting for them to meet.
#[derive(Default)]
pub(crate) struct Published {
    /// The seq of the last record whose appender was answered (or is being answered).
    answered: AtomicU64,
    /// `State::inserted`, read without the lock.
    inserted: AtomicU64,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// The seq of the last record the tree holds.
    inserted: u64,
    /// Set when the writer stopped with answered records not in the tree: they are there again
    /// once the journal is opened again (its write-ahead file holds them).
    failed: Option<String>,
    /// Readers waiting.
    waiting: usize,
}

impl Published {
    /// The writer is about to answer the appenders of the records up to `seq`: from now on
    /// readers wait for them.
    pub(crate) fn answering(&self, seq: u64) {
        self.answered.fetch_max(seq, Ordering::Release);
    }

    /// The tree holds every record up to `seq`.
    pub(crate) fn inserted(&self, seq: u64) {
        let mut state = self.lock();
        state.inserted = state.inserted.max(seq);
        self.inserted.store(state.inserted, Ordering::Release);
        if state.waiting > 0 {
            self.changed.notify_all();
        }
    }

    /// The writer stopped for `reason`: readers waiting for records it answered hear it.
    pub(crate) fn failed(&self, reason: &str) {
        let mut state = self.lock();
        state.failed = Some(reason.to_owned());
        self.changed.notify_all();
    }

    /// Waits until the tree holds every record answered so far; fails if it never will (until
    /// the journal is opened again).
    pub(crate) fn settle(&self) -> Result<()> {
        let answered = self.answered.load(Ordering::Acquire);
        if self.inserted.load(Ordering::Acquire) >= answered {
            return Ok(());
        }
        let mut state = self.lock();
        state.waiting += 1;
        while state.inserted < answered && state.failed.is_none() {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.waiting -= 1;
        match &state.failed {
            Some(reason) if state.inserted < answered => Err(Error::Io(std::io::Error::other(
                format!("{reason}; the journal must be opened again to read what it answered"),
            ))),
            _ => Ok(()),
        }
    }

    /// How many readers are waiting (for tests).
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.lock().waiting
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
