//! Replaying the journal on several threads, in order.
//!
//! A replay is dominated by sled's iteration and the records' decoding, not by what the caller
//! does with each record, and most callers want few of the records (the service's index keeps
//! creations and deletions, not every policy execution). So the range is cut into chunks of
//! consecutive sequence numbers; worker threads take the next chunk in turn, read and decode it,
//! and keep the records the caller's filter selects; the calling thread hands the kept records of
//! each chunk to the caller strictly in sequence order, waiting for a chunk that is still being
//! read while later ones finish.
//!
//! Finished chunks wait in a channel bounded at one per worker, so a worker that runs ahead of
//! the hand-over waits for it: at most about two chunks per worker are held at once, and only
//! their kept records. A panic in `keep` or `apply` propagates to the caller.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;

use crate::{Error, Journal, Record, Result};

/// Sequence numbers a worker reads at a time.
const CHUNK: u64 = 16_384;

/// What a worker made of one chunk: how many records it read, and those it kept.
type Chunk = Result<(u64, Vec<Record>)>;

impl Journal {
    /// Every record from `from` to `to` (inclusive; the head when it is past it), in order,
    /// that `keep` selects, handed to `apply` on the calling thread; reading and decoding is
    /// spread over `workers` threads. Answers how many records were read (kept or not). Stops
    /// at the first error, a storage one or `apply`'s own.
    pub fn scan<E: From<Error>>(
        &self,
        from: u64,
        to: u64,
        workers: usize,
        keep: impl Fn(&Record) -> bool + Sync,
        mut apply: impl FnMut(Record) -> std::result::Result<(), E>,
    ) -> std::result::Result<u64, E> {
        let from = from.max(1);
        let head = self.head()?.seq.min(to);
        if head < from {
            return Ok(0);
        }
        let chunks = (head - from) / CHUNK + 1;
        let workers = workers.clamp(1, chunks.try_into().unwrap_or(usize::MAX));
        let next = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        let (done, finished) = mpsc::sync_channel::<(u64, Chunk)>(workers);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let (done, next, stop, keep) = (done.clone(), &next, &stop, &keep);
                scope.spawn(move || loop {
                    let chunk = next.fetch_add(1, Ordering::Relaxed);
                    if chunks <= chunk || stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let first = from + chunk * CHUNK;
                    let last = (first + CHUNK - 1).min(head);
                    let read = self.read_chunk(first, last, keep);
                    if done.send((chunk, read)).is_err() {
                        return;
                    }
                });
            }
            drop(done);
            let outcome = hand_over(chunks, &finished, &mut apply);
            // On an error, workers still reading stop at their next chunk.
            stop.store(true, Ordering::Relaxed);
            drop(finished);
            outcome
        })
    }

    /// Reads the records `first..=last`, keeping those `keep` selects.
    fn read_chunk(&self, first: u64, last: u64, keep: &impl Fn(&Record) -> bool) -> Chunk {
        let mut read = 0;
        let mut kept = Vec::new();
        for record in self.read_range(first, last) {
            let record = record?;
            read += 1;
            if keep(&record) {
                kept.push(record);
            }
        }
        Ok((read, kept))
    }
}

/// Receives the workers' chunks and applies their records in chunk order.
fn hand_over<E: From<Error>>(
    chunks: u64,
    finished: &mpsc::Receiver<(u64, Chunk)>,
    apply: &mut impl FnMut(Record) -> std::result::Result<(), E>,
) -> std::result::Result<u64, E> {
    let mut waiting = BTreeMap::new();
    let mut read = 0;
    for expected in 0..chunks {
        let chunk = loop {
            if let Some(chunk) = waiting.remove(&expected) {
                break chunk;
            }
            // Every worker gone without this chunk means one of them panicked, and the scope
            // carries that panic to the caller once this returns.
            let Ok((number, chunk)) = finished.recv() else {
                return Err(Error::Closed.into());
            };
            waiting.insert(number, chunk);
        };
        let (count, records) = chunk?;
        read += count;
        for record in records {
            apply(record)?;
        }
    }
    Ok(read)
}
