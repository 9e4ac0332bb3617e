//! What readers of the sled back end's tree may rely on it holding.
//!
//! The sled back end's writer answers a batch's appenders as soon as the batch's write-ahead
//! entry is synced, and inserts its writes into sled only after: a third of the writer's time,
//! taken out of the wait of every call in the batch (see `sled_store`). From the sync to the
//! inserts the tree is behind what is durable, so every read first waits here until the tree
//! holds every batch synced when the read began: whoever heard an append acknowledged, or saw it
//! in what the journal's follower builds, reads it, and a read never sees less than an earlier
//! one did. The wait is one batch's inserts at most; a read that asks while the writer is
//! writing or syncing the next batch does not wait.
//!
//! The writer's own thread never waits (it inserts): a follower that read the journal would see
//! the tree without the batch it is being told.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::{Error, Result};

/// The writer's two marks, answered and inserted, and the readers waiting for them to meet.
#[derive(Default)]
pub(crate) struct Published {
    /// The seq of the last record durable, told and answered, or about to be.
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
    /// The records up to `seq` are durable and about to be told and answered: from now on
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
        if self.inserted.load(Ordering::Acquire) >= answered || WRITER.get() {
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

thread_local! {
    /// Whether this thread is a journal's writer, which never waits for its own inserts.
    static WRITER: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as a journal's writer (see [`WRITER`]).
pub(crate) fn on_the_writer() {
    WRITER.set(true);
}
