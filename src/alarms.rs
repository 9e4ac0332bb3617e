//! Closing the loop (SPEC 5): metric samples go into the series store; at each tick of the
//! injected clock every alarm whose period closed is evaluated; a change of state goes through
//! the alarm's actor (which decides it again and journals it with its datapoints), and its
//! actions execute their policies through the supervisor with the alarm as cause.
//!
//! The [`AlarmTable`] is a read model of each alarm's definition and state, fed by the projector
//! from the journal, so that a tick over 100k alarms costs a pure evaluation each, and a message
//! only for those whose state changes (or that repeat their actions).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use flotilla_actors::aggregate::Alarms;
use flotilla_actors::clock::Timestamp;
use flotilla_actors::domain::alarm::{AlarmCommand, AlarmDefinition, AlarmEvent, AlarmState};
use flotilla_actors::domain::evaluation::{actions, evaluate, next_state};
use flotilla_actors::domain::policy::Breach;
use flotilla_actors::domain::samples::{RecordError, Recorded, Sample, SeriesStore};
use flotilla_actors::domain::{AlarmId, Cause, GroupId, PolicyId, Rejection};
use flotilla_actors::error::Error as ActorError;
use flotilla_actors::supervisor::Supervisor;

use crate::service::Readiness;
use crate::ticks::Ticker;

/// What the evaluator knows of one alarm.
#[derive(Debug, Clone)]
struct Watched {
    definition: AlarmDefinition,
    state: AlarmState,
    /// The number of its latest transition, and that transition's actions not yet taken.
    transition: u64,
    pending: Vec<PolicyId>,
    /// The end of the next period to close: the next evaluation is due then.
    next_due: Timestamp,
}

/// Counts of what an ingestion did with its samples.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Ingested {
    /// Stored into at least one alarm's window.
    pub accepted: usize,
    /// No alarm watches their metric.
    pub unwatched: usize,
    /// Older than any alarm can read.
    pub too_old: usize,
    /// More than a period ahead of now.
    pub too_new: usize,
}

/// The alarms as the journal tells them, and the series their metrics feed: a read model fed
/// by the projector (see [`crate::projector`]) alone.
///
/// The projector runs on the journal's writer thread and must never wait long, while a tick
/// holds the table for a pass over every alarm. So the projector only drops events into an
/// inbox, and whoever reads the table next (a tick, an ingestion, a checkpoint) takes the
/// inbox in first, in order.
#[derive(Default)]
pub struct AlarmTable {
    inbox: Mutex<Vec<(AlarmId, AlarmEvent, Timestamp)>>,
    store: Mutex<SeriesStore>,
    alarms: Mutex<HashMap<AlarmId, Watched>>,
}

/// An alarm as a checkpoint keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedAlarm {
    /// Its id.
    pub id: AlarmId,
    /// Its definition.
    pub definition: AlarmDefinition,
    /// Its state.
    pub state: AlarmState,
    /// The number of its latest transition.
    pub transition: u64,
    /// That transition's actions not yet taken.
    pub pending: Vec<PolicyId>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The end of the period holding `at`: when that period closes.
fn period_end(at: Timestamp, period_seconds: u32) -> Timestamp {
    let period = i64::from(period_seconds.max(1)) * 1000;
    Timestamp::from_millis(at.as_millis().div_euclid(period) * period + period)
}

impl AlarmTable {
    /// An empty table whose series store holds at most `max_series` series.
    pub fn with_max_series(max_series: usize) -> AlarmTable {
        AlarmTable {
            store: Mutex::new(SeriesStore::with_max_series(max_series)),
            ..AlarmTable::default()
        }
    }

    /// Takes in an alarm's journaled event, decided at `at` (the projector's only entry).
    pub fn feed(&self, id: AlarmId, event: AlarmEvent, at: Timestamp) {
        lock(&self.inbox).push((id, event, at));
    }

    /// The table and the store, with the inbox taken in.
    fn open(
        &self,
    ) -> (
        MutexGuard<'_, HashMap<AlarmId, Watched>>,
        MutexGuard<'_, SeriesStore>,
    ) {
        let mut alarms = lock(&self.alarms);
        let mut store = lock(&self.store);
        let inbox = std::mem::take(&mut *lock(&self.inbox));
        for (id, event, at) in inbox {
            apply(&mut alarms, &mut store, id, event, at);
        }
        (alarms, store)
    }

    /// The alarms' definitions and states, in id order, for a checkpoint.
    pub fn save(&self) -> Vec<SavedAlarm> {
        let (alarms, store) = self.open();
        drop(store);
        let mut saved: Vec<SavedAlarm> = alarms
            .iter()
            .map(|(id, w)| SavedAlarm {
                id: id.clone(),
                definition: w.definition.clone(),
                state: w.state,
                transition: w.transition,
                pending: w.pending.clone(),
            })
            .collect();
        saved.sort_by(|a, b| a.id.cmp(&b.id));
        saved
    }

    /// Takes in a checkpoint's alarms (into an empty table).
    pub fn restore(&self, saved: Vec<SavedAlarm>) {
        let (mut alarms, mut store) = self.open();
        for saved in saved {
            store.watch_alarm(&saved.definition);
            let watched = Watched {
                definition: saved.definition,
                state: saved.state,
                transition: saved.transition,
                pending: saved.pending,
                next_due: Timestamp::EPOCH,
            };
            alarms.insert(saved.id, watched);
        }
    }

    /// Evaluates no alarm before the end of the period holding `now` (at start: the samples of
    /// before are gone, so the period under way is the first with any).
    pub fn start_at(&self, now: Timestamp) {
        let (mut alarms, store) = self.open();
        drop(store);
        for watched in alarms.values_mut() {
            watched.next_due = watched
                .next_due
                .max(period_end(now, watched.definition.period_seconds));
        }
    }

    /// Records `samples` of `group` at `now`. Refuses the whole batch, changing nothing it had
    /// not already stored, only when the store's series cap is reached.
    pub fn ingest(
        &self,
        group: &GroupId,
        samples: &[Sample],
        now: Timestamp,
    ) -> Result<Ingested, RecordError> {
        let (alarms, mut store) = self.open();
        drop(alarms);
        let mut ingested = Ingested::default();
        for sample in samples {
            match store.record(group, sample, now)? {
                Recorded::Stored => ingested.accepted += 1,
                Recorded::Unwatched => ingested.unwatched += 1,
                Recorded::TooOld => ingested.too_old += 1,
                Recorded::TooNew => ingested.too_new += 1,
            }
        }
        Ok(ingested)
    }

    /// The transitions whose actions are not all taken: alarm, transition number, actions left.
    pub fn pending(&self) -> Vec<(AlarmId, u64, Vec<PolicyId>)> {
        let (alarms, store) = self.open();
        drop(store);
        alarms
            .iter()
            .filter(|(_, w)| !w.pending.is_empty())
            .map(|(id, w)| (id.clone(), w.transition, w.pending.clone()))
            .collect()
    }

    /// The alarms whose actions name `policy`, in id order.
    pub fn naming(&self, policy: &PolicyId) -> Vec<AlarmId> {
        let (alarms, store) = self.open();
        drop(store);
        let mut naming: Vec<AlarmId> = alarms
            .iter()
            .filter(|(_, w)| {
                let d = &w.definition;
                d.alarm_actions.contains(policy) || d.ok_actions.contains(policy)
            })
            .map(|(id, _)| id.clone())
            .collect();
        naming.sort();
        naming
    }

    /// How many alarms are watched.
    pub fn len(&self) -> usize {
        self.open().0.len()
    }

    /// Whether no alarm is watched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Evaluates the alarms due at `now` (setting their next evaluation) and returns how many,
    /// with those that change state or repeat their actions, and their datapoints.
    #[allow(clippy::type_complexity)]
    pub fn due(
        &self,
        now: Timestamp,
    ) -> (
        usize,
        Vec<(AlarmId, AlarmDefinition, AlarmState, Vec<Option<f64>>)>,
    ) {
        let (mut alarms, store) = self.open();
        let mut evaluated = 0;
        let mut due = Vec::new();
        for (id, watched) in alarms.iter_mut() {
            if now < watched.next_due {
                continue;
            }
            evaluated += 1;
            watched.next_due = period_end(now, watched.definition.period_seconds);
            let d = &watched.definition;
            let datapoints = store.datapoints(
                &d.group_id,
                &d.metric,
                d.period_seconds,
                d.statistic,
                d.evaluation_periods,
                now,
            );
            let next = next_state(d, watched.state, &datapoints);
            let repeats = watched.state == AlarmState::Alarm && d.repeat_actions;
            if next != watched.state || repeats {
                due.push((id.clone(), d.clone(), watched.state, datapoints));
            }
        }
        (evaluated, due)
    }

    /// Forgets samples no alarm can read any more.
    pub fn prune(&self, now: Timestamp) {
        self.open().1.prune(now);
    }
}

/// What `event` of alarm `id`, decided at `at`, makes of the table and of the store's watch.
fn apply(
    alarms: &mut HashMap<AlarmId, Watched>,
    store: &mut SeriesStore,
    id: AlarmId,
    event: AlarmEvent,
    at: Timestamp,
) {
    match event {
        AlarmEvent::Created { definition, .. } => {
            store.watch_alarm(&definition);
            let next_due = period_end(at, definition.period_seconds);
            let watched = Watched {
                definition,
                state: AlarmState::InsufficientData,
                transition: 0,
                pending: vec![],
                next_due,
            };
            alarms.insert(id, watched);
        }
        AlarmEvent::Updated { definition, .. } => {
            if let Some(watched) = alarms.get_mut(&id) {
                store.unwatch_alarm(&watched.definition);
                store.watch_alarm(&definition);
                watched.next_due = period_end(at, definition.period_seconds);
                watched.definition = definition;
            }
        }
        AlarmEvent::Deleted { .. } => {
            if let Some(watched) = alarms.remove(&id) {
                store.unwatch_alarm(&watched.definition);
            }
        }
        AlarmEvent::StateChanged { to, actions, .. } => {
            if let Some(watched) = alarms.get_mut(&id) {
                watched.state = to;
                watched.transition += 1;
                watched.pending = actions;
            }
        }
        AlarmEvent::ActionTaken { policy_id, .. } => {
            if let Some(watched) = alarms.get_mut(&id) {
                watched.pending.retain(|pending| *pending != policy_id);
            }
        }
    }
}

/// Evaluates the alarms of an [`AlarmTable`] at each tick, and has their actor record each
/// change of state and execute its actions.
pub struct Evaluator {
    table: Arc<AlarmTable>,
    supervisor: Supervisor,
}

impl Evaluator {
    /// An evaluator of `table`'s alarms, executing through `supervisor`.
    pub fn new(table: Arc<AlarmTable>, supervisor: Supervisor) -> Evaluator {
        Evaluator { table, supervisor }
    }

    /// The alarms it evaluates.
    pub fn table(&self) -> &Arc<AlarmTable> {
        &self.table
    }

    /// Evaluates every alarm whose period closed by `now`; returns how many were evaluated.
    /// First it completes the transitions whose actions were not all taken (a crash, or a
    /// fault, came between): each action is taken exactly once (SPEC 5).
    pub async fn tick(&self, now: Timestamp) -> usize {
        self.complete().await;
        let (evaluated, work) = self.table.due(now);
        for (id, definition, from, datapoints) in work {
            let evaluation = evaluate(&definition, from, &datapoints);
            if evaluation.next != from {
                self.transition(&id, datapoints).await;
            } else if from == AlarmState::Alarm {
                let reason = format!("still in alarm: {}", evaluation.reason);
                let breach = evaluation.value.map(|metric_value| Breach {
                    metric_value,
                    breach_threshold: definition.threshold,
                });
                self.repeat(&id, &definition, &reason, breach).await;
            }
        }
        self.table.prune(now);
        evaluated
    }

    /// Takes every action of a transition not yet taken.
    pub async fn complete(&self) {
        for (id, transition, policies) in self.table.pending() {
            self.take(&id, transition, &policies).await;
        }
    }

    /// Sends the evaluation to the alarm's actor, which decides and journals the change with
    /// the actions it calls for; then takes them.
    async fn transition(&self, id: &AlarmId, datapoints: Vec<Option<f64>>) {
        let command = AlarmCommand::Evaluate { datapoints };
        let executed = match self
            .supervisor
            .execute::<Alarms>(id.as_str(), command)
            .await
        {
            Ok(executed) => executed,
            Err(error) => {
                tracing::warn!(alarm = %id, %error, "alarm evaluation not recorded");
                return;
            }
        };
        let (Some(AlarmEvent::StateChanged { from, to, .. }), Some(alarm)) =
            (executed.events.first(), &executed.state)
        else {
            return;
        };
        tracing::info!(alarm = %id, from = ?from, to = ?to, "alarm changed state");
        self.take(id, alarm.transitions, &alarm.pending_actions)
            .await;
    }

    /// Takes `policies`, actions of `id`'s transition number `transition`, each exactly once.
    async fn take(&self, id: &AlarmId, transition: u64, policies: &[PolicyId]) {
        for policy in policies {
            let taken = self
                .supervisor
                .take_alarm_action(id, transition, policy)
                .await;
            match taken {
                Ok(_) | Err(ActorError::Rejected(Rejection::Replayed)) => {}
                Err(error) => {
                    tracing::warn!(alarm = %id, policy = %policy, %error, "alarm action failed");
                }
            }
        }
    }

    /// Executes the alarm actions of an alarm that stays in ALARM with `repeat_actions` (as
    /// Auto Scaling keeps invoking a policy; the policy's cooldown still applies).
    async fn repeat(
        &self,
        id: &AlarmId,
        definition: &AlarmDefinition,
        reason: &str,
        breach: Option<Breach>,
    ) {
        let repeated = actions(definition, AlarmState::Alarm, AlarmState::Alarm, true);
        for policy in repeated {
            let cause = Cause::Alarm {
                alarm_id: id.clone(),
                reason: reason.to_owned(),
            };
            if let Err(error) = self.supervisor.execute_policy(&policy, cause, breach).await {
                tracing::warn!(alarm = %id, policy = %policy, %error, "alarm action failed");
            }
        }
    }

    /// Evaluates at each of `ticker`'s ticks, at the injected clock's now, once `ready` is set.
    pub fn run(self: Arc<Self>, mut ticker: Ticker, ready: Arc<Readiness>) {
        actix_web::rt::spawn(async move {
            while let Some(_tick) = ticker.next().await {
                // Nothing is evaluated (or journaled) before the startup replay is done.
                if !ready.is_ready() {
                    continue;
                }
                let now = self.supervisor.clock().now();
                self.tick(now).await;
            }
        });
    }
}
