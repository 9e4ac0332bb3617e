//! Scheduled actions on the service clock (SPEC 2.2). The [`ScheduleTable`] is a read model of
//! each action as the journal tells it, fed by the projector alone and kept in the checkpoint;
//! at each tick the [`Scheduler`] runs every occurrence that came due, through the supervisor,
//! which records it on the action and on its group in one append: exactly once, and the latest
//! occurrence missed while the service was down runs once when it is back (the action's
//! `since` is the last occurrence run, so the next due is the latest after it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use flotilla_actors::clock::Timestamp;
use flotilla_actors::domain::scheduled::{self, Scheduled, ScheduledEvent};
use flotilla_actors::domain::{GroupId, Rejection, ScheduleId};
use flotilla_actors::error::Error as ActorError;
use flotilla_actors::supervisor::Supervisor;

use crate::cluster::Ownership;
use crate::service::Readiness;
use crate::ticks::Ticker;

/// The scheduled actions as the journal tells them: a read model fed by the projector alone.
#[derive(Default)]
pub struct ScheduleTable {
    schedules: Mutex<HashMap<ScheduleId, Scheduled>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ScheduleTable {
    /// Takes in an action's journaled event (the projector's only entry).
    pub fn feed(&self, id: ScheduleId, event: &ScheduledEvent) {
        let mut schedules = lock(&self.schedules);
        let state = scheduled::apply(schedules.remove(&id), event);
        if let Some(live) = state.filter(|s| !s.deleted) {
            schedules.insert(id, live);
        }
    }

    /// Forgets the actions of a deleted group.
    pub fn forget_group(&self, group: &flotilla_actors::domain::GroupId) {
        lock(&self.schedules).retain(|_, s| s.group_id != *group);
    }

    /// The live actions, in no order, for a checkpoint (which sorts them).
    pub fn copy(&self) -> Vec<Scheduled> {
        lock(&self.schedules).values().cloned().collect()
    }

    /// Takes in a checkpoint's actions (into an empty table).
    pub fn restore(&self, saved: Vec<Scheduled>) {
        let mut schedules = lock(&self.schedules);
        for scheduled in saved {
            schedules.insert(scheduled.id.clone(), scheduled);
        }
    }

    /// The occurrences due at `now` of the actions on groups `acts_for` selects: each action's
    /// latest not yet run, in id order.
    pub fn due(
        &self,
        now: Timestamp,
        acts_for: impl Fn(&GroupId) -> bool,
    ) -> Vec<(ScheduleId, Timestamp)> {
        let mut due: Vec<(ScheduleId, Timestamp)> = lock(&self.schedules)
            .values()
            .filter(|s| acts_for(&s.group_id))
            .filter_map(|s| Some((s.id.clone(), s.due(now)?)))
            .collect();
        due.sort();
        due
    }

    /// How many actions there are.
    pub fn len(&self) -> usize {
        lock(&self.schedules).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Runs the occurrences of a [`ScheduleTable`]'s actions as they come due.
pub struct Scheduler {
    table: Arc<ScheduleTable>,
    supervisor: Supervisor,
    /// Which groups this node runs schedules for.
    ownership: Arc<Ownership>,
    /// Occurrences that cannot run (their group is gone): not tried again.
    given_up: Mutex<HashMap<ScheduleId, Timestamp>>,
}

impl Scheduler {
    /// A scheduler of `table`'s actions, running them through `supervisor`.
    pub fn new(table: Arc<ScheduleTable>, supervisor: Supervisor) -> Scheduler {
        Scheduler {
            table,
            supervisor,
            ownership: Arc::new(Ownership::sole("local")),
            given_up: Mutex::default(),
        }
    }

    /// Runs only the schedules of the groups `ownership` says this node acts for.
    pub fn with_ownership(mut self, ownership: Arc<Ownership>) -> Scheduler {
        self.ownership = ownership;
        self
    }

    /// Runs every occurrence due at `now`; answers how many ran.
    pub async fn tick(&self, now: Timestamp) -> usize {
        let mut ran = 0;
        let acts_for = |group: &GroupId| self.ownership.acts_for(group.as_str(), now);
        for (id, occurrence) in self.table.due(now, acts_for) {
            if lock(&self.given_up).get(&id) == Some(&occurrence) {
                continue;
            }
            match self.supervisor.run_schedule(&id, occurrence).await {
                Ok(_) => ran += 1,
                // Run already (by an earlier tick whose answer was lost, say).
                Err(ActorError::Rejected(Rejection::Replayed)) => {}
                Err(ActorError::Rejected(rejection @ Rejection::NotFound { .. })) => {
                    tracing::warn!(schedule = %id, %rejection, "scheduled action not run");
                    lock(&self.given_up).insert(id, occurrence);
                }
                Err(error) => {
                    tracing::warn!(schedule = %id, %error, "scheduled action not run; will retry");
                }
            }
        }
        ran
    }

    /// Runs at each of `ticker`'s ticks, at the injected clock's now, once `ready` is set.
    pub fn run(self: Arc<Self>, mut ticker: Ticker, ready: Arc<Readiness>) {
        actix_web::rt::spawn(async move {
            while let Some(_tick) = ticker.next().await {
                if !ready.is_ready() {
                    continue;
                }
                let now = self.supervisor.clock().now();
                self.tick(now).await;
            }
        });
    }
}
