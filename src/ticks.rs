//! Where every background loop's ticks come from: the converger, the alarm evaluator, the idle
//! actors' sweep, the checkpointer and the rate limits' cleanup each take a [`Ticker`] from the
//! service's [`Ticks`], and do one round of work per tick, at the injected clock's now.
//!
//! In production the ticks are real time, one every loop's interval. In tests they are
//! [`ManualTicks`]: nothing ticks until the test calls [`ManualTicks::tick`], which runs one
//! round of every loop and returns once each has finished it (work a round hands off, such as a
//! converger pass per group, included). So a test steps the clock, then the loops, and asserts,
//! without ever sleeping for a loop to come round.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// The service's tick source.
#[derive(Clone, Default)]
pub enum Ticks {
    /// Real time: each loop ticks every its own interval.
    #[default]
    Real,
    /// Ticks only when a test says so.
    Manual(ManualTicks),
}

impl Ticks {
    /// A ticker for the loop `name` that ticks every `every` (in real time).
    pub fn ticker(&self, name: &'static str, every: Duration) -> Ticker {
        match self {
            Ticks::Real => {
                // The first tick comes one interval after the start, not at once.
                let first = tokio::time::Instant::now() + every;
                let mut interval = tokio::time::interval_at(first, every);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                Ticker::Real(interval)
            }
            Ticks::Manual(manual) => {
                let (send, receive) = mpsc::unbounded_channel();
                let mut loops = manual
                    .loops
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                loops.push((name, send));
                Ticker::Manual(receive)
            }
        }
    }
}

/// One loop's ticks.
pub enum Ticker {
    /// Every interval of real time.
    Real(tokio::time::Interval),
    /// When a test ticks.
    Manual(mpsc::UnboundedReceiver<oneshot::Sender<()>>),
}

impl Ticker {
    /// Waits for the next tick. `None` once no tick can come any more (the test's handle is
    /// gone): the loop should end.
    pub async fn next(&mut self) -> Option<Tick> {
        match self {
            Ticker::Real(interval) => {
                interval.tick().await;
                Some(Tick(Arc::new(Done(None))))
            }
            Ticker::Manual(receive) => {
                let done = receive.recv().await?;
                Some(Tick(Arc::new(Done(Some(done)))))
            }
        }
    }
}

/// A tick being handled. It is finished when it and every clone of it are dropped: a loop hands
/// a clone to each piece of work it starts, so that the tick covers them.
#[derive(Clone)]
pub struct Tick(#[allow(dead_code)] Arc<Done>);

struct Done(Option<oneshot::Sender<()>>);

impl Drop for Done {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            let _ = done.send(());
        }
    }
}

/// The test's handle on manual ticks. Clones share the loops.
#[derive(Clone, Default)]
pub struct ManualTicks {
    loops: Arc<Mutex<Vec<(&'static str, TickSender)>>>,
}

/// How a manual tick reaches its loop: with the sender the loop answers on once it is done.
type TickSender = mpsc::UnboundedSender<oneshot::Sender<()>>;

impl ManualTicks {
    /// Manual ticks, to hand to the service as [`Ticks::Manual`].
    pub fn new() -> ManualTicks {
        ManualTicks::default()
    }

    /// Runs one tick of every loop, one loop after the other in the order they started, each
    /// finished before the next starts. Blocks: call it from a test's own thread.
    pub fn tick(&self) {
        for receiver in self.send(None) {
            let _ = receiver.blocking_recv();
        }
    }

    /// One tick of the loop `name` only, waited for. Blocks, as [`Self::tick`].
    pub fn tick_only(&self, name: &str) {
        for receiver in self.send(Some(name)) {
            let _ = receiver.blocking_recv();
        }
    }

    /// [`Self::tick`] from async code.
    pub async fn tick_async(&self) {
        for receiver in self.send(None) {
            let _ = receiver.await;
        }
    }

    /// The names of the loops that take ticks.
    pub fn loops(&self) -> Vec<&'static str> {
        let loops = self
            .loops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loops.iter().map(|(name, _)| *name).collect()
    }

    /// Sends a tick to each loop (named `only`, if given), lazily: each is sent when the
    /// previous one's answer is awaited, so the loops run one after the other.
    fn send(&self, only: Option<&str>) -> impl Iterator<Item = oneshot::Receiver<()>> {
        let loops: Vec<_> = {
            let loops = self
                .loops
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            loops
                .iter()
                .filter(|(name, _)| only.is_none_or(|only| only == *name))
                .map(|(_, send)| send.clone())
                .collect()
        };
        loops.into_iter().filter_map(|send| {
            let (done, finished) = oneshot::channel();
            send.send(done).ok().map(|()| finished)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_tick_returns_once_the_loop_and_the_work_it_handed_off_are_done() {
        let manual = ManualTicks::new();
        let ticks = Ticks::Manual(manual.clone());
        let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = count.clone();
        let (started, start) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                let mut ticker = ticks.ticker("count", Duration::from_secs(3600));
                started.send(()).unwrap();
                while let Some(tick) = ticker.next().await {
                    // Work handed off with a clone of the tick: the tick covers it.
                    let (tick, counted) = (tick.clone(), counted.clone());
                    tokio::task::spawn_local(async move {
                        tokio::task::yield_now().await;
                        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        drop(tick);
                    });
                }
            });
        });
        start.recv().unwrap();
        assert_eq!(manual.loops(), ["count"]);
        for expected in 1..=3 {
            manual.tick();
            assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), expected);
        }
        manual.tick_only("another loop");
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
