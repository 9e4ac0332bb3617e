//! Where provider calls that may block are made: threads of their own, shared fairly among
//! tenants.
//!
//! A call to an orchestrator may hold its thread for minutes (a 60 s timeout, ten retries), so
//! calls never run on the async runtime's blocking pool, which the checkpointer and the journal
//! use too. There, a probe's 530 groups pointed at an orchestrator that never answered held all
//! 512 of its threads: another tenant's group never launched, and the checkpointer stalled.
//!
//! Here each tenant's calls wait in a queue of their own. A free thread takes the next call of
//! the tenant whose turn it is, tenants taking turns in the order their calls arrived, and no
//! tenant holds more than its share of threads at once. A tenant whose orchestrator hangs slows
//! its own groups only. Threads are started as calls need them, up to the pool's size, and are
//! kept; a thread blocked in a call does not hold up the service's stop.
//!
//! A turn is one call to [`Pool::run`], which may make several provider requests: a pass over
//! a group hands the pool a few calls that each work through its list of servers (see
//! `converger::CALLS_AT_ONCE`).

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use flotilla_actors::domain::TenantId;

/// The pool's threads unless set: as many as the runtime's blocking pool had, which served
/// every provider call before.
pub const DEFAULT_THREADS: usize = 512;

/// The most threads one tenant's calls hold at once unless set: a tenant whose orchestrator
/// never answers leaves the others seven eighths of the pool.
pub const DEFAULT_PER_TENANT: usize = 64;

type Job = Box<dyn FnOnce() + Send>;

/// The pool; clones share it.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    threads: usize,
    per_tenant: usize,
}

#[derive(Default)]
struct State {
    /// The tenants with calls waiting or running.
    tenants: HashMap<TenantId, Lane>,
    /// The tenants with a call waiting and a thread to spare, in turn.
    turns: VecDeque<TenantId>,
    /// Threads waiting for a call.
    idle: usize,
    /// Wake-ups handed to idle threads and not yet taken (a condition variable may also wake
    /// a thread spuriously, which then waits again).
    wakeups: usize,
    /// Threads started.
    started: usize,
}

#[derive(Default)]
struct Lane {
    waiting: VecDeque<Job>,
    running: usize,
    /// Whether the tenant is in [`State::turns`].
    queued: bool,
}

impl Pool {
    /// A pool of at most `threads` threads, of which one tenant's calls hold at most
    /// `per_tenant` at once (each at least 1; `per_tenant` at most `threads`).
    pub fn new(threads: usize, per_tenant: usize) -> Pool {
        let threads = threads.max(1);
        Pool {
            shared: Arc::new(Shared {
                state: Mutex::default(),
                wake: Condvar::new(),
                threads,
                per_tenant: per_tenant.clamp(1, threads),
            }),
        }
    }

    /// The most threads one tenant's calls hold at once.
    pub fn per_tenant(&self) -> usize {
        self.shared.per_tenant
    }

    /// Runs `work` on one of the pool's threads as a call of `tenant`, and answers what it
    /// returned; a panic in `work` is resumed here. The call runs to its end even if the
    /// future is dropped.
    pub async fn run<T: Send + 'static>(
        &self,
        tenant: &TenantId,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (send, receive) = tokio::sync::oneshot::channel();
        self.submit(
            tenant,
            Box::new(move || {
                // As the runtime's blocking pool did: the panic is resumed by the caller, which
                // sees no state `work` left half-changed.
                let _ = send.send(std::panic::catch_unwind(AssertUnwindSafe(work)));
            }),
        );
        match receive.await {
            Ok(Ok(value)) => value,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => unreachable!("the pool runs every call it takes"),
        }
    }

    fn submit(&self, tenant: &TenantId, job: Job) {
        let shared = &self.shared;
        let mut state = shared.lock();
        let lane = state.tenants.entry(tenant.clone()).or_default();
        lane.waiting.push_back(job);
        if lane.queued || lane.running >= shared.per_tenant {
            // Its turn is already due, or one of its calls running takes it when it ends;
            // unless no thread could ever be started for a turn: then one is tried again now.
            if state.started == 0 && !state.turns.is_empty() {
                shared.dispatch(&mut state);
            }
            return;
        }
        lane.queued = true;
        state.turns.push_back(tenant.clone());
        shared.dispatch(&mut state);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A turn was added: an idle thread is woken to take it, or one more started. If every
    /// thread is busy, the first to end takes it.
    fn dispatch(self: &Arc<Self>, state: &mut State) {
        if state.idle > 0 {
            state.idle -= 1;
            state.wakeups += 1;
            self.wake.notify_one();
        } else if state.started < self.threads {
            state.started += 1;
            let worker = self.clone();
            let spawned = std::thread::Builder::new()
                .name("flotilla-provider".into())
                .spawn(move || worker.work());
            if let Err(error) = spawned {
                // The turn waits for a thread already started.
                state.started -= 1;
                tracing::error!(%error, "cannot start a provider thread");
            }
        }
    }

    /// A thread's life: the next turn's call, or a wait for one.
    fn work(self: &Arc<Self>) {
        let mut state = self.lock();
        loop {
            let Some(tenant) = state.turns.pop_front() else {
                state.idle += 1;
                state = self
                    .wake
                    .wait_while(state, |state| state.wakeups == 0)
                    .unwrap_or_else(PoisonError::into_inner);
                state.wakeups -= 1;
                continue;
            };
            let lane = state
                .tenants
                .get_mut(&tenant)
                .expect("a tenant in turn has a lane");
            let job = lane
                .waiting
                .pop_front()
                .expect("a tenant in turn has a call waiting");
            lane.running += 1;
            let again = !lane.waiting.is_empty() && lane.running < self.per_tenant;
            lane.queued = again;
            if again {
                // Another of its calls may run beside this one, on another thread.
                state.turns.push_back(tenant.clone());
                self.dispatch(&mut state);
            }
            drop(state);
            // A panic is the caller's (`run` sends it back); the thread goes on.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
            state = self.lock();
            let lane = state
                .tenants
                .get_mut(&tenant)
                .expect("a tenant with a call running has a lane");
            lane.running -= 1;
            if lane.waiting.is_empty() {
                if lane.running == 0 {
                    state.tenants.remove(&tenant);
                }
            } else if !lane.queued {
                // This thread takes a turn next, so none is woken for it.
                lane.queued = true;
                state.turns.push_back(tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// Long enough never to be reached when the pool works; a failure waits this long.
    const PATIENCE: Duration = Duration::from_secs(30);

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// A call that says it started, then holds its thread until `release` is dropped or sent to.
    fn holding(
        pool: &Pool,
        tenant: &str,
        started: &mpsc::Sender<&'static str>,
        name: &'static str,
    ) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (release, held) = mpsc::channel::<()>();
        let (pool, tenant, started) = (pool.clone(), TenantId::new(tenant), started.clone());
        let caller = std::thread::spawn(move || {
            block_on(pool.run(&tenant, move || {
                started.send(name).unwrap();
                let _ = held.recv();
            }));
        });
        (release, caller)
    }

    #[test]
    fn a_tenant_whose_calls_hang_leaves_the_other_tenants_threads() {
        let pool = Pool::new(3, 2);
        let (started, starts) = mpsc::channel();
        // Tenant a's calls all hang: two of them hold its share, the third waits.
        let a1 = holding(&pool, "ten_a", &started, "a1");
        let a2 = holding(&pool, "ten_a", &started, "a2");
        let mut first = [
            starts.recv_timeout(PATIENCE).unwrap(),
            starts.recv_timeout(PATIENCE).unwrap(),
        ];
        first.sort_unstable();
        assert_eq!(first, ["a1", "a2"]);
        let a3 = holding(&pool, "ten_a", &started, "a3");
        // Tenant b gets the pool's third thread though a's third call came first.
        let b = holding(&pool, "ten_b", &started, "b");
        assert_eq!(starts.recv_timeout(PATIENCE).unwrap(), "b");
        drop(b.0);
        b.1.join().unwrap();
        assert!(
            starts.try_recv().is_err(),
            "a's third call waits for one of its own to end"
        );
        // One of a's calls ends: its third runs.
        drop(a1.0);
        a1.1.join().unwrap();
        assert_eq!(starts.recv_timeout(PATIENCE).unwrap(), "a3");
        drop((a2.0, a3.0));
        a2.1.join().unwrap();
        a3.1.join().unwrap();
        // A caller hears its answer just before its thread takes the end of the call in.
        until(&pool, |state| {
            state.tenants.is_empty() && state.turns.is_empty()
        });
        assert_eq!(pool.shared.lock().started, 3);
    }

    /// Waits until the pool's state is as `expected` says (a call is queued by another
    /// thread).
    fn until(pool: &Pool, expected: impl Fn(&State) -> bool) {
        let deadline = std::time::Instant::now() + PATIENCE;
        while !expected(&pool.shared.lock()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the pool never got there"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn tenants_take_turns_for_a_busy_pool() {
        let pool = Pool::new(2, 2);
        let (started, starts) = mpsc::channel();
        // One thread stays with tenant c; the other is what a and b share.
        let other = holding(&pool, "ten_c", &started, "c");
        assert_eq!(starts.recv_timeout(PATIENCE).unwrap(), "c");
        let first = holding(&pool, "ten_a", &started, "a1");
        assert_eq!(starts.recv_timeout(PATIENCE).unwrap(), "a1");
        // While both threads are busy: three of a's calls, then one of b's.
        let mut waiting = Vec::new();
        for (queued, name) in ["a2", "a3", "a4"].into_iter().enumerate() {
            waiting.push(holding(&pool, "ten_a", &started, name));
            until(&pool, |state| {
                state.tenants["ten_a"].waiting.len() == queued + 1
            });
        }
        waiting.push(holding(&pool, "ten_b", &started, "b"));
        until(&pool, |state| state.tenants.contains_key("ten_b"));
        drop(first.0);
        first.1.join().unwrap();
        let mut order = Vec::new();
        for _ in 0..waiting.len() {
            let name = starts.recv_timeout(PATIENCE).unwrap();
            order.push(name);
            let index = ["a2", "a3", "a4", "b"]
                .iter()
                .position(|n| *n == name)
                .unwrap();
            // Each call ends before the next starts: the pool has one thread for them.
            drop(std::mem::replace(&mut waiting[index].0, mpsc::channel().0));
        }
        // b's call ran second, not behind all of a's.
        assert_eq!(order, ["a2", "b", "a3", "a4"]);
        drop(other.0);
        for (_, caller) in waiting.into_iter().chain([(mpsc::channel().0, other.1)]) {
            caller.join().unwrap();
        }
    }

    #[test]
    fn a_panic_reaches_its_caller_and_the_thread_serves_on() {
        let pool = Pool::new(1, 1);
        let tenant = TenantId::new("ten_a");
        let panicked = std::panic::catch_unwind(AssertUnwindSafe(|| {
            block_on(pool.run(&tenant, || panic!("the provider broke")));
        }));
        let message = panicked.unwrap_err();
        assert_eq!(message.downcast_ref::<&str>(), Some(&"the provider broke"));
        assert_eq!(block_on(pool.run(&tenant, || 7)), 7);
        assert_eq!(pool.shared.lock().started, 1);
    }
}
