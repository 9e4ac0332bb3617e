//! Closing the loop (SPEC 5): metric samples go into the series store; at each tick of the
//! injected clock every alarm whose period closed is evaluated; a change of state goes through
//! the alarm's actor (which decides it again and journals it with its datapoints), and its
//! actions execute their policies through the supervisor with the alarm as cause.
//!
//! The [`AlarmTable`] is a read model of each alarm's definition and state, fed by the projector
//! from the journal, so that a tick over 100k alarms costs a pure evaluation each, and a message
//! only for those whose state changes (or that repeat their actions).
//!
//! Target-tracking policies (SPEC 2.1) watch their metric the same way: the table follows each
//! one's definition, and at each tick the groups with a policy whose period closed are sent
//! every such policy of theirs, with the closed period's datapoint; the group decides and
//! journals (see `flotilla_actors::domain::group::tracking`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use flotilla_actors::aggregate::{Alarms, Groups};
use flotilla_actors::clock::Timestamp;
use flotilla_actors::domain::alarm::{
    AlarmCommand, AlarmDefinition, AlarmEvent, AlarmState, Statistic,
};
use flotilla_actors::domain::evaluation::{actions, evaluate, next_state};
use flotilla_actors::domain::group::{steady, Group, GroupCommand, Period, Tracked};
use flotilla_actors::domain::policy::{self, Breach, Policy, PolicyEvent, Tracking};
use flotilla_actors::domain::samples::{period_start, RecordError, Recorded, Sample, SeriesStore};
use flotilla_actors::domain::tracking::{recommend, Recommendation};
use flotilla_actors::domain::{AlarmId, Cause, GroupId, PolicyId, Rejection, TenantId};
use flotilla_actors::error::Error as ActorError;
use flotilla_actors::supervisor::Supervisor;

use crate::service::Readiness;
use crate::ticks::Ticker;

/// How many groups decide their target tracking at once.
const TRACKING_CONCURRENCY: usize = 64;

/// What the evaluator knows of one alarm.
#[derive(Debug, Clone)]
struct Watched {
    /// The tenant whose samples feed it: its owner, none once its group is deleted.
    writer: Option<TenantId>,
    definition: AlarmDefinition,
    state: AlarmState,
    /// The number of its latest transition, and that transition's actions not yet taken.
    transition: u64,
    pending: Vec<PolicyId>,
    /// The end of the next period to close: the next evaluation is due then.
    next_due: Timestamp,
}

/// What the evaluator knows of one target-tracking policy.
#[derive(Debug, Clone)]
struct Followed {
    policy: Policy,
    /// The end of the next period to close.
    next_due: Timestamp,
}

impl Followed {
    fn tracking(&self) -> &Tracking {
        self.policy
            .definition
            .tracking
            .as_ref()
            .expect("only target-tracking policies are followed")
    }
}

/// The series a source's datapoints are kept in: its metric, or for a `query` (SPEC 5.2) a
/// series of the object's own, under a name no sample can give (metric names are printable).
fn series_of<'a>(id: &str, metric: &'a str, query: Option<&str>) -> std::borrow::Cow<'a, str> {
    match query {
        Some(_) => std::borrow::Cow::Owned(format!("\u{1}query {id}")),
        None => std::borrow::Cow::Borrowed(metric),
    }
}

/// How many periods of a series a reader of `n` periods keeps, when they are read `delay_ms`
/// after they close: `n`, and those the delay spans, so that the store (which counts back from
/// the real now) keeps what the evaluator reads.
fn kept(n: u32, period_seconds: u32, delay_ms: i64) -> u32 {
    let period = i64::from(period_seconds.max(1)) * 1000;
    let extra = u32::try_from((delay_ms + period - 1) / period).unwrap_or(u32::MAX);
    n.saturating_add(extra)
}

/// The store's watch of a target-tracking policy: its metric (or query), one period at a time.
fn watch_policy(store: &mut SeriesStore, policy: &Policy, watch: bool, delay_ms: i64) {
    if let Some(t) = &policy.definition.tracking {
        let series = series_of(policy.id.as_str(), &t.metric, t.query.as_deref());
        let n = kept(1, t.period_seconds, delay_ms);
        if watch {
            store.watch(
                &policy.group_id,
                Some(&policy.tenant_id),
                &series,
                t.period_seconds,
                n,
            );
        } else {
            store.unwatch(&policy.group_id, &series, t.period_seconds, n);
        }
    }
}

/// The store's watch of an alarm fed by `writer`'s samples: its metric (or query), N periods.
fn watch_alarm(
    store: &mut SeriesStore,
    id: &AlarmId,
    writer: Option<&TenantId>,
    d: &AlarmDefinition,
    delay_ms: i64,
) {
    let series = series_of(id.as_str(), &d.metric, d.query.as_deref());
    let n = kept(d.evaluation_periods, d.period_seconds, delay_ms);
    store.watch(&d.group_id, writer, &series, d.period_seconds, n);
}

/// Ends the store's watch of an alarm.
fn unwatch_alarm(store: &mut SeriesStore, id: &AlarmId, d: &AlarmDefinition, delay_ms: i64) {
    let series = series_of(id.as_str(), &d.metric, d.query.as_deref());
    let n = kept(d.evaluation_periods, d.period_seconds, delay_ms);
    store.unwatch(&d.group_id, &series, d.period_seconds, n);
}

/// The statistic a source's datapoints are read with: a query's one value a period is its own
/// datapoint (SPEC 5.2: the query does the reduction).
fn statistic_of(statistic: Statistic, query: Option<&str>) -> Statistic {
    if query.is_some() {
        Statistic::Avg
    } else {
        statistic
    }
}

/// A query to run for a period that closed (SPEC 5.2).
#[derive(Debug, Clone)]
pub struct QueryJob {
    /// The alarm's or policy's id.
    owner: String,
    /// The series its answer goes into.
    series: String,
    /// The group whose series it is.
    group: GroupId,
    /// The PromQL.
    pub query: String,
    /// The period's end: the instant the query is evaluated at.
    pub at: Timestamp,
}

/// An event the projector dropped into the table's inbox.
enum Fed {
    Alarm(AlarmId, AlarmEvent, Timestamp),
    Policy(PolicyId, PolicyEvent, Timestamp),
    GroupDeleted(GroupId),
}

/// A group whose target tracking was at rest when it last decided (see
/// [`flotilla_actors::domain::group::steady`]): its capacity then, and each policy's
/// recommendation. While the group's stream does not grow and its policies stay as they are, a
/// period that recommends the same for each due policy would record nothing, so it is not sent:
/// an idle fleet costs a formula a policy, not a message.
struct Steady {
    capacity: u32,
    recommendations: HashMap<PolicyId, Recommendation>,
}

/// The alarms and target-tracking policies the table watches.
#[derive(Default)]
struct Watching {
    alarms: HashMap<AlarmId, Watched>,
    policies: HashMap<PolicyId, Followed>,
    /// Each group's followed policies, in id order.
    by_group: HashMap<GroupId, Vec<PolicyId>>,
    steady: HashMap<GroupId, Steady>,
    /// Why a query's latest period is missing, by the alarm's or policy's id.
    missing: HashMap<String, String>,
}

impl Watching {
    /// Follows `followed` (after any earlier version of it was let go).
    fn follow(&mut self, followed: Followed) {
        let (id, group) = (followed.policy.id.clone(), followed.policy.group_id.clone());
        self.steady.remove(&group);
        // In id order: the order a replay and a live process agree on.
        let ids = self.by_group.entry(group).or_default();
        let at = ids.partition_point(|other| *other < id);
        ids.insert(at, id.clone());
        self.policies.insert(id, followed);
    }

    /// Lets go of policy `id`, answering what was followed of it.
    fn let_go(&mut self, id: &PolicyId) -> Option<Followed> {
        let followed = self.policies.remove(id)?;
        let group = &followed.policy.group_id;
        self.steady.remove(group);
        if let Some(ids) = self.by_group.get_mut(group) {
            ids.retain(|other| other != id);
            if ids.is_empty() {
                self.by_group.remove(group);
            }
        }
        Some(followed)
    }
}

/// An alarm due for a change of state (or a repeat of its actions), with what decides it.
#[derive(Debug, Clone)]
pub struct Due {
    id: AlarmId,
    definition: AlarmDefinition,
    from: AlarmState,
    datapoints: Vec<Option<f64>>,
    /// Why the latest period is missing, if the evaluator knows (a query's reason).
    note: Option<String>,
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

/// What [`AlarmTable::ingest_all`] made of a write's samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written<K> {
    /// What became of them. `unwatched` counts the samples of [`Written::unwatched`].
    pub ingested: Ingested,
    /// How many were skipped at the series cap.
    pub over_cap: usize,
    /// How many were skipped because their series is watched for another tenant.
    pub not_writable: usize,
    /// The keys of the samples nothing watches, in order, each with how many samples in a row
    /// had it: whether their writer may write their group is for the caller to tell (the store
    /// knows only the groups it watches).
    pub unwatched: Vec<(K, usize)>,
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
    /// Milliseconds after a period's end before it is evaluated (SPEC 5).
    delay_ms: i64,
    inbox: Mutex<Vec<Fed>>,
    store: Mutex<SeriesStore>,
    watching: Mutex<Watching>,
    /// Groups whose stream grew since their last target-tracking decision was sent.
    stirred: Mutex<HashSet<GroupId>>,
}

/// An alarm as a checkpoint keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedAlarm {
    /// Its id.
    pub id: AlarmId,
    /// The tenant whose samples feed it: its owner, none once its group is deleted. Required
    /// (serde would read a missing `Option` as none, disowning every alarm): a checkpoint from
    /// before it does not decode, and the read models are rebuilt from the journal.
    #[serde(deserialize_with = "Option::deserialize")]
    pub writer: Option<TenantId>,
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

/// The alarms as a checkpoint keeps them, in no order.
fn saved_alarms(watching: &Watching) -> Vec<SavedAlarm> {
    watching
        .alarms
        .iter()
        .map(|(id, w)| SavedAlarm {
            id: id.clone(),
            writer: w.writer.clone(),
            definition: w.definition.clone(),
            state: w.state,
            transition: w.transition,
            pending: w.pending.clone(),
        })
        .collect()
}

/// The target-tracking policies followed, in no order.
fn saved_policies(watching: &Watching) -> Vec<Policy> {
    (watching.policies.values())
        .map(|f| f.policy.clone())
        .collect()
}

/// The end of the period holding `at`: when that period closes.
fn period_end(at: Timestamp, period_seconds: u32) -> Timestamp {
    let period = i64::from(period_seconds.max(1)) * 1000;
    Timestamp::from_millis(at.as_millis().div_euclid(period) * period + period)
}

/// The alarm table held as a tick's pass holds it, its inbox not yet taken in. A checkpoint
/// holds it first and only then stops the projector ([`crate::projector`]) to copy the read
/// models: the projector, on the journal's writer thread, so never waits for a pass.
pub struct Held<'a> {
    table: &'a AlarmTable,
    watching: MutexGuard<'a, Watching>,
    store: MutexGuard<'a, SeriesStore>,
}

impl<'a> Held<'a> {
    /// Takes the inbox in, in order.
    fn opened(mut self) -> (MutexGuard<'a, Watching>, MutexGuard<'a, SeriesStore>) {
        let table = self.table;
        let (watching, store) = (&mut *self.watching, &mut *self.store);
        let inbox = std::mem::take(&mut *lock(&table.inbox));
        for fed in inbox {
            match fed {
                Fed::Alarm(id, event, at) => {
                    apply(watching, store, id, event, at, table.delay_ms);
                }
                Fed::Policy(id, event, at) => {
                    follow(watching, store, id, &event, at, table.delay_ms);
                }
                Fed::GroupDeleted(group) => {
                    for id in watching.by_group.get(&group).cloned().unwrap_or_default() {
                        if let Some(gone) = watching.let_go(&id) {
                            watch_policy(store, &gone.policy, false, table.delay_ms);
                        }
                    }
                    // Its alarms stay until deleted, but no sample feeds them any more: the
                    // group's tokens are gone, and no tenant owns it (SPEC 5.1).
                    for watched in watching.alarms.values_mut() {
                        if watched.definition.group_id == group {
                            watched.writer = None;
                        }
                    }
                    store.disown(&group);
                }
            }
        }
        (self.watching, self.store)
    }

    /// Takes the inbox in, then answers the alarms and the target-tracking policies as a
    /// checkpoint keeps them, but in no order: the checkpoint sorts them once it has let go.
    pub fn copy(self) -> (Vec<SavedAlarm>, Vec<Policy>) {
        let (watching, _store) = self.opened();
        (saved_alarms(&watching), saved_policies(&watching))
    }
}

impl AlarmTable {
    /// An empty table whose series store holds at most `max_series` series.
    pub fn with_max_series(max_series: usize) -> AlarmTable {
        AlarmTable {
            store: Mutex::new(SeriesStore::with_max_series(max_series)),
            ..AlarmTable::default()
        }
    }

    /// The table, evaluating each period `seconds` after it closes (SPEC 5's evaluation delay:
    /// samples that arrive a little late still count).
    pub fn with_evaluation_delay(mut self, seconds: u32) -> AlarmTable {
        self.delay_ms = i64::from(seconds) * 1000;
        self
    }

    /// The instant whose closed periods are evaluable at `now`.
    fn evaluable(&self, now: Timestamp) -> Timestamp {
        now.plus_millis(-self.delay_ms)
    }

    /// Takes in an alarm's journaled event, decided at `at` (the projector's entry for alarms).
    pub fn feed(&self, id: AlarmId, event: AlarmEvent, at: Timestamp) {
        lock(&self.inbox).push(Fed::Alarm(id, event, at));
    }

    /// Takes in a policy's journaled event, decided at `at` (the projector's entry for
    /// policies): target-tracking ones are followed.
    pub fn feed_policy(&self, id: PolicyId, event: PolicyEvent, at: Timestamp) {
        lock(&self.inbox).push(Fed::Policy(id, event, at));
    }

    /// Takes in that group `id` was deleted (the projector's entry): its target-tracking
    /// policies are followed no more, and no tenant's samples feed its alarms.
    pub fn forget_group(&self, id: GroupId) {
        lock(&self.inbox).push(Fed::GroupDeleted(id));
    }

    /// Takes in that group `id`'s stream grew (the projector's entry, for records it sees live):
    /// its next target-tracking period is sent, whatever it recommends.
    pub fn group_changed(&self, id: &str) {
        lock(&self.stirred).insert(GroupId::new(id));
    }

    /// Takes in a group's answer to a target-tracking decision that recorded nothing: if its
    /// tracking is at rest, the periods that recommend the same are not sent again.
    pub fn decided(&self, group: &Group, tracked: &[Tracked], now: Timestamp) {
        if !steady(group, tracked, now) {
            return;
        }
        // Only if the group's policies are still the ones it decided with: a change that came
        // in meanwhile already let go of any rest, and must not find one set after it.
        let (mut watching, store) = self.open();
        drop(store);
        let followed = watching
            .by_group
            .get(&group.id)
            .map_or(&[][..], Vec::as_slice);
        let same = followed.len() == tracked.len()
            && followed.iter().zip(tracked).all(|(id, t)| {
                watching
                    .policies
                    .get(id)
                    .is_some_and(|f| f.policy == t.policy)
            });
        if !same {
            return;
        }
        let recommendations = group
            .tracks
            .iter()
            .map(|(id, track)| (id.clone(), track.recommendation))
            .collect();
        let steady = Steady {
            capacity: group.desired_capacity,
            recommendations,
        };
        watching.steady.insert(group.id.clone(), steady);
    }

    /// The table as a tick's pass holds it, once any pass under way is done (see [`Held`]).
    pub fn hold(&self) -> Held<'_> {
        Held {
            table: self,
            watching: lock(&self.watching),
            store: lock(&self.store),
        }
    }

    /// The table and the store, with the inbox taken in.
    fn open(&self) -> (MutexGuard<'_, Watching>, MutexGuard<'_, SeriesStore>) {
        self.hold().opened()
    }

    /// Takes in a checkpoint's target-tracking policies (into an empty table).
    pub fn restore_policies(&self, saved: Vec<Policy>) {
        let (mut watching, mut store) = self.open();
        for policy in saved {
            watch_policy(&mut store, &policy, true, self.delay_ms);
            watching.follow(Followed {
                policy,
                next_due: Timestamp::EPOCH,
            });
        }
    }

    /// Takes in a checkpoint's alarms (into an empty table).
    pub fn restore(&self, saved: Vec<SavedAlarm>) {
        let (mut watching, mut store) = self.open();
        for saved in saved {
            watch_alarm(
                &mut store,
                &saved.id,
                saved.writer.as_ref(),
                &saved.definition,
                self.delay_ms,
            );
            let watched = Watched {
                writer: saved.writer,
                definition: saved.definition,
                state: saved.state,
                transition: saved.transition,
                pending: saved.pending,
                next_due: Timestamp::EPOCH,
            };
            watching.alarms.insert(saved.id, watched);
        }
    }

    /// Evaluates no alarm before the end of the period holding `now` (at start: the samples of
    /// before are gone, so the period under way is the first with any).
    pub fn start_at(&self, now: Timestamp) {
        let (mut watching, store) = self.open();
        drop(store);
        for watched in watching.alarms.values_mut() {
            watched.next_due = watched
                .next_due
                .max(period_end(now, watched.definition.period_seconds));
        }
        for followed in watching.policies.values_mut() {
            let period = followed.tracking().period_seconds;
            followed.next_due = followed.next_due.max(period_end(now, period));
        }
    }

    /// Records `samples` of `group` at `now` (see [`AlarmTable::ingest_groups`]).
    pub fn ingest(
        &self,
        group: &GroupId,
        samples: &[Sample],
        now: Timestamp,
    ) -> Result<Ingested, RecordError> {
        self.ingest_groups(&[(group, samples)], now)
    }

    /// Records the samples of each group at `now`, all or none: refuses the whole batch,
    /// storing nothing, when it would start more series than the store's cap leaves room for
    /// (a caller answered 429 sends it again, which must not count its samples twice).
    pub fn ingest_groups(
        &self,
        batches: &[(&GroupId, &[Sample])],
        now: Timestamp,
    ) -> Result<Ingested, RecordError> {
        let (watching, mut store) = self.open();
        drop(watching);
        // Each sample starts one series at most: with room for all, nothing to count.
        let most: usize = batches.iter().map(|(_, samples)| samples.len()).sum();
        let starting = || -> usize {
            (batches.iter())
                .map(|(group, samples)| store.would_start(group, samples, now))
                .sum()
        };
        if most > store.room() && starting() > store.room() {
            return Err(RecordError::SeriesLimit {
                limit: store.max_series(),
            });
        }
        let mut ingested = Ingested::default();
        for (group, sample) in batches
            .iter()
            .flat_map(|(group, samples)| samples.iter().map(move |s| (*group, s)))
        {
            match store.record(group, sample, now)? {
                Recorded::Stored => ingested.accepted += 1,
                // With no writer named (the caller checked it), never `NotWritable`.
                Recorded::Unwatched | Recorded::NotWritable => ingested.unwatched += 1,
                Recorded::TooOld => ingested.too_old += 1,
                Recorded::TooNew => ingested.too_new += 1,
            }
        }
        Ok(ingested)
    }

    /// Records the samples of several groups at `now`, written by `writer` (none: the caller
    /// checked the writer may write every group), under one lock: a remote write spans many
    /// groups. Each sample is (key, group id, metric, value, timestamp), borrowed, so that
    /// storing one allocates nothing; the key is the caller's, handed back for each sample
    /// nothing watches.
    pub fn ingest_all<'a, K: Copy + PartialEq>(
        &self,
        samples: impl IntoIterator<Item = (K, &'a str, &'a str, f64, Timestamp)>,
        writer: Option<&TenantId>,
        now: Timestamp,
    ) -> Written<K> {
        let (watching, mut store) = self.open();
        drop(watching);
        let mut written = Written {
            ingested: Ingested::default(),
            over_cap: 0,
            not_writable: 0,
            unwatched: Vec::new(),
        };
        for (key, group, metric, value, timestamp) in samples {
            let ingested = &mut written.ingested;
            match store.record_value(group, metric, value, timestamp, now, writer) {
                Ok(Recorded::Stored) => ingested.accepted += 1,
                Ok(Recorded::Unwatched) => {
                    ingested.unwatched += 1;
                    match written.unwatched.last_mut() {
                        Some((last, n)) if *last == key => *n += 1,
                        _ => written.unwatched.push((key, 1)),
                    }
                }
                Ok(Recorded::TooOld) => ingested.too_old += 1,
                Ok(Recorded::TooNew) => ingested.too_new += 1,
                Ok(Recorded::NotWritable) => written.not_writable += 1,
                Err(_) => written.over_cap += 1,
            }
        }
        written
    }

    /// The transitions whose actions are not all taken: alarm, transition number, actions left.
    pub fn pending(
        &self,
        acts_for: impl Fn(&GroupId) -> bool,
    ) -> Vec<(AlarmId, u64, Vec<PolicyId>)> {
        let (watching, store) = self.open();
        drop(store);
        watching
            .alarms
            .iter()
            .filter(|(_, w)| !w.pending.is_empty() && acts_for(&w.definition.group_id))
            .map(|(id, w)| (id.clone(), w.transition, w.pending.clone()))
            .collect()
    }

    /// The alarms whose actions name `policy`, in id order.
    pub fn naming(&self, policy: &PolicyId) -> Vec<AlarmId> {
        let (watching, store) = self.open();
        drop(store);
        let mut naming: Vec<AlarmId> = watching
            .alarms
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
        self.open().0.alarms.len()
    }

    /// Whether no alarm is watched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Alarm `id`'s datapoints of its last evaluation periods as of `now` (oldest first, `None`
    /// for a period without one), as its next evaluation would see them; `None` if the table
    /// does not watch it. Changes nothing (the console shows them).
    pub fn recent(&self, id: &AlarmId, now: Timestamp) -> Option<Vec<Option<f64>>> {
        let now = self.evaluable(now);
        let (watching, store) = self.open();
        let d = &watching.alarms.get(id)?.definition;
        Some(datapoints_of(&store, id, d, now))
    }

    /// Evaluates the alarms due at `now` (setting their next evaluation) and returns how many,
    /// with those that change state or repeat their actions, and their datapoints.
    #[allow(clippy::type_complexity)]
    pub fn due(&self, now: Timestamp) -> (usize, Vec<Due>) {
        let now = self.evaluable(now);
        let (mut watching, store) = self.open();
        let Watching {
            alarms, missing, ..
        } = &mut *watching;
        let mut evaluated = 0;
        let mut due = Vec::new();
        for (id, watched) in alarms.iter_mut() {
            if now < watched.next_due {
                continue;
            }
            evaluated += 1;
            watched.next_due = period_end(now, watched.definition.period_seconds);
            let d = &watched.definition;
            let datapoints = datapoints_of(&store, id, d, now);
            let next = next_state(d, watched.state, &datapoints);
            let repeats = watched.state == AlarmState::Alarm && d.repeat_actions;
            if next != watched.state || repeats {
                let note = match datapoints.last() {
                    Some(None) => missing.get(id.as_str()).cloned(),
                    _ => None,
                };
                due.push(Due {
                    id: id.clone(),
                    definition: d.clone(),
                    from: watched.state,
                    datapoints,
                    note,
                });
            }
        }
        (evaluated, due)
    }

    /// The groups with a target-tracking policy whose period closed by `now` (setting its next
    /// one), each with every target-tracking policy of theirs: the due ones with the closed
    /// period's datapoint. Answers how many policies were due, and the groups.
    pub fn due_tracking(&self, now: Timestamp) -> (usize, Vec<(GroupId, Vec<Tracked>)>) {
        let now = self.evaluable(now);
        let (mut watching, store) = self.open();
        let Watching {
            policies,
            by_group,
            steady,
            missing,
            ..
        } = &mut *watching;
        let mut stirred = lock(&self.stirred);
        let mut due = 0;
        let mut sends = Vec::new();
        let mut periods: Vec<Option<Period>> = Vec::new();
        for (group, ids) in by_group.iter() {
            periods.clear();
            for id in ids {
                let Some(followed) = policies.get_mut(id) else {
                    periods.push(None);
                    continue;
                };
                let t = followed.tracking();
                if now < followed.next_due {
                    periods.push(None);
                    continue;
                }
                let (period_seconds, statistic) = (t.period_seconds, t.statistic);
                let series = series_of(id.as_str(), &t.metric, t.query.as_deref());
                let statistic = statistic_of(statistic, t.query.as_deref());
                let datapoints =
                    store.datapoints(group, &series, period_seconds, statistic, 1, now);
                let datapoint = datapoints.first().copied().flatten();
                let note = datapoint
                    .is_none()
                    .then(|| missing.get(id.as_str()).cloned())
                    .flatten();
                periods.push(Some(Period {
                    end: period_start(now, period_seconds),
                    datapoint,
                    note,
                }));
                followed.next_due = period_end(now, period_seconds);
                due += 1;
            }
            if periods.iter().all(Option::is_none) {
                continue;
            }
            let at_rest = !stirred.contains(group)
                && steady.get(group).is_some_and(|steady| {
                    ids.iter().zip(&periods).all(|(id, period)| {
                        policies.get(id).is_some_and(|f| {
                            recommends_the_same(steady, &f.policy, period.as_ref())
                        })
                    })
                });
            if at_rest {
                continue;
            }
            steady.remove(group);
            stirred.remove(group);
            let tracked = ids
                .iter()
                .zip(&periods)
                .filter_map(|(id, period)| {
                    Some(Tracked {
                        policy: policies.get(id)?.policy.clone(),
                        period: period.clone(),
                    })
                })
                .collect();
            sends.push((group.clone(), tracked));
        }
        // A change matters only to a group at rest; any other is sent when next due anyway.
        stirred.retain(|group| steady.contains_key(group));
        (due, sends)
    }

    /// The queries of the alarms and target-tracking policies whose period closed by `now` and
    /// is evaluated at this tick (SPEC 5.2): each at its period's end.
    pub fn queries_due(&self, now: Timestamp) -> Vec<QueryJob> {
        let now = self.evaluable(now);
        let (watching, store) = self.open();
        drop(store);
        let mut jobs = Vec::new();
        for (id, w) in &watching.alarms {
            let d = &w.definition;
            if let (Some(query), true) = (&d.query, now >= w.next_due) {
                jobs.push(QueryJob {
                    owner: id.to_string(),
                    series: series_of(id.as_str(), &d.metric, Some(query)).into_owned(),
                    group: d.group_id.clone(),
                    query: query.clone(),
                    at: period_start(now, d.period_seconds),
                });
            }
        }
        for (id, f) in &watching.policies {
            let t = f.tracking();
            if let (Some(query), true) = (&t.query, now >= f.next_due) {
                jobs.push(QueryJob {
                    owner: id.to_string(),
                    series: series_of(id.as_str(), &t.metric, Some(query)).into_owned(),
                    group: f.policy.group_id.clone(),
                    query: query.clone(),
                    at: period_start(now, t.period_seconds),
                });
            }
        }
        jobs
    }

    /// Takes in a query's answer: a datapoint for its period, or why it has none.
    pub fn answer(
        &self,
        job: &QueryJob,
        answer: Result<f64, crate::promql::Missing>,
        now: Timestamp,
    ) {
        let (mut watching, mut store) = self.open();
        // An answer to a query changed (or gone) meanwhile belongs to no period any more.
        let current = match flotilla_actors::domain::Kind::of(&job.owner) {
            Some(flotilla_actors::domain::Kind::Alarm) => watching
                .alarms
                .get(&AlarmId::new(job.owner.as_str()))
                .and_then(|w| w.definition.query.clone()),
            _ => watching
                .policies
                .get(&PolicyId::new(job.owner.as_str()))
                .and_then(|f| f.tracking().query.clone()),
        };
        if current.as_deref() != Some(job.query.as_str()) {
            return;
        }
        match answer {
            Ok(value) => {
                watching.missing.remove(&job.owner);
                let sample = Sample {
                    metric: job.series.clone(),
                    value,
                    timestamp: job.at.plus_millis(-1),
                };
                if let Err(error) = store.record(&job.group, &sample, now) {
                    tracing::warn!(%error, "a query's datapoint not kept");
                }
            }
            Err(missing) => {
                let why: String = missing.to_string().chars().take(300).collect();
                watching.missing.insert(job.owner.clone(), why);
            }
        }
    }

    /// Forgets samples no alarm can read any more.
    pub fn prune(&self, now: Timestamp) {
        let now = self.evaluable(now);
        self.open().1.prune(now);
    }
}

/// What `event` of alarm `id`, decided at `at`, makes of the table and of the store's watch.
fn apply(
    watching: &mut Watching,
    store: &mut SeriesStore,
    id: AlarmId,
    event: AlarmEvent,
    at: Timestamp,
    delay_ms: i64,
) {
    let alarms = &mut watching.alarms;
    if matches!(
        event,
        AlarmEvent::Updated { .. } | AlarmEvent::Deleted { .. }
    ) {
        watching.missing.remove(id.as_str());
    }
    match event {
        AlarmEvent::Created {
            definition,
            tenant_id,
            ..
        } => {
            watch_alarm(store, &id, Some(&tenant_id), &definition, delay_ms);
            let next_due = period_end(at, definition.period_seconds);
            let watched = Watched {
                writer: Some(tenant_id),
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
                unwatch_alarm(store, &id, &watched.definition, delay_ms);
                watch_alarm(store, &id, watched.writer.as_ref(), &definition, delay_ms);
                watched.next_due = period_end(at, definition.period_seconds);
                watched.definition = definition;
            }
        }
        AlarmEvent::Deleted { .. } => {
            if let Some(watched) = alarms.remove(&id) {
                unwatch_alarm(store, &id, &watched.definition, delay_ms);
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

/// Whether `policy`, with the period that closed for it (if one did), recommends what it
/// recommended when its group was last at rest.
fn recommends_the_same(steady: &Steady, policy: &Policy, period: Option<&Period>) -> bool {
    let Some(period) = period else {
        return true;
    };
    let (Some(value), Some(settings)) = (period.datapoint, &policy.definition.tracking) else {
        return false;
    };
    let now = recommend(&settings.target, steady.capacity, Some(value), 0);
    steady.recommendations.get(&policy.id) == Some(&now)
}

/// What `event` of policy `id`, decided at `at`, makes of the followed target-tracking policies
/// and of the store's watch. A group whose policies change is no longer at rest.
fn follow(
    watching: &mut Watching,
    store: &mut SeriesStore,
    id: PolicyId,
    event: &PolicyEvent,
    at: Timestamp,
    delay_ms: i64,
) {
    watching.missing.remove(id.as_str());
    if matches!(event, PolicyEvent::Created { .. }) && watching.policies.contains_key(&id) {
        return;
    }
    let before = watching.let_go(&id);
    if let Some(before) = &before {
        watch_policy(store, &before.policy, false, delay_ms);
    }
    let state = policy::apply(before.map(|f| f.policy), event);
    if let Some(policy) = state.filter(|p| !p.deleted && p.definition.tracking.is_some()) {
        watch_policy(store, &policy, true, delay_ms);
        let period = policy
            .definition
            .tracking
            .as_ref()
            .map_or(60, |t| t.period_seconds);
        watching.follow(Followed {
            next_due: period_end(at, period),
            policy,
        });
    }
}

/// Evaluates the alarms of an [`AlarmTable`] at each tick, and has their actor record each
/// change of state and execute its actions.
pub struct Evaluator {
    table: Arc<AlarmTable>,
    supervisor: Supervisor,
    /// Which groups this node evaluates alarms and policies for.
    ownership: Arc<crate::cluster::Ownership>,
    prometheus: Option<Arc<crate::promql::Prometheus>>,
}

impl Evaluator {
    /// An evaluator of `table`'s alarms, executing through `supervisor`.
    pub fn new(table: Arc<AlarmTable>, supervisor: Supervisor) -> Evaluator {
        Evaluator {
            table,
            supervisor,
            ownership: Arc::new(crate::cluster::Ownership::sole("local")),
            prometheus: None,
        }
    }

    /// Evaluates only the alarms and policies of the groups `ownership` says this node acts
    /// for.
    pub fn with_ownership(mut self, ownership: Arc<crate::cluster::Ownership>) -> Evaluator {
        self.ownership = ownership;
        self
    }

    /// The evaluator, reading queries from `prometheus` (SPEC 5.2).
    pub fn with_prometheus(mut self, prometheus: crate::promql::Prometheus) -> Evaluator {
        self.prometheus = Some(Arc::new(prometheus));
        self
    }

    /// Runs the queries of the periods evaluated at `now`, [`crate::promql::CONCURRENCY`] at a
    /// time, on this task (never on an actor's thread), and takes in their answers.
    async fn query(&self, now: Timestamp) {
        use futures_util::stream::{self, StreamExt};
        let jobs = self.table.queries_due(now);
        let Some(prometheus) = &self.prometheus else {
            // Queries kept from a run that had a Prometheus: missing, and saying why.
            for job in &jobs {
                let why = "no --prometheus-url is set".to_owned();
                self.table
                    .answer(job, Err(crate::promql::Missing::Error(why)), now);
            }
            return;
        };
        // However slow Prometheus is, the step ends in time for the rest of the tick: a query
        // not answered by then is a missing period, saying so.
        let deadline = tokio::time::Instant::now() + crate::promql::STEP_DEADLINE;
        stream::iter(jobs)
            .for_each_concurrent(crate::promql::CONCURRENCY, |job| async move {
                let asked = prometheus.value_at(&job.query, job.at);
                let answer = tokio::time::timeout_at(deadline, asked)
                    .await
                    .unwrap_or_else(|_| {
                        Err(crate::promql::Missing::Error(
                            "not answered within the tick's deadline".into(),
                        ))
                    });
                self.table.answer(&job, answer, now);
            })
            .await;
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
        self.query(now).await;
        let (evaluated, mut work) = self.table.due(now);
        // Another node evaluates the rest (their periods pass here unused).
        work.retain(|due| {
            self.ownership
                .acts_for(due.definition.group_id.as_str(), now)
        });
        for Due {
            id,
            definition,
            from,
            datapoints,
            note,
        } in work
        {
            let evaluation = evaluate(&definition, from, &datapoints);
            if evaluation.next != from {
                self.transition(&id, datapoints, note).await;
            } else if from == AlarmState::Alarm {
                let reason = format!("still in alarm: {}", evaluation.reason);
                let breach = evaluation.value.map(|metric_value| Breach {
                    metric_value,
                    breach_threshold: definition.threshold,
                });
                self.repeat(&id, &definition, &reason, breach).await;
            }
        }
        let (due, mut groups) = self.table.due_tracking(now);
        groups.retain(|(group, _)| self.ownership.acts_for(group.as_str(), now));
        self.track(groups, now).await;
        self.table.prune(now);
        evaluated + due
    }

    /// Has each group decide the periods that closed for its target-tracking policies, a few
    /// groups at a time (each decision is its group's actor's, on its own thread).
    async fn track(&self, groups: Vec<(GroupId, Vec<Tracked>)>, now: Timestamp) {
        use futures_util::stream::{self, StreamExt};
        stream::iter(groups)
            .for_each_concurrent(TRACKING_CONCURRENCY, |(group, tracked)| async move {
                let command = GroupCommand::Track(tracked.clone());
                let decided = self
                    .supervisor
                    .execute::<Groups>(group.as_str(), command)
                    .await;
                match decided {
                    Ok(executed) if executed.events.is_empty() => {
                        if let Some(state) = &executed.state {
                            self.table.decided(state, &tracked, now);
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(group = %group, %error, "target tracking not recorded");
                    }
                }
            })
            .await;
    }

    /// Takes every action of a transition not yet taken.
    pub async fn complete(&self) {
        // Another node's alarms' actions are its own to complete.
        let now = self.supervisor.clock().now();
        let acts_for = |group: &GroupId| self.ownership.acts_for(group.as_str(), now);
        for (id, transition, policies) in self.table.pending(acts_for) {
            self.take(&id, transition, &policies).await;
        }
    }

    /// Sends the evaluation to the alarm's actor, which decides and journals the change with
    /// the actions it calls for; then takes them.
    async fn transition(&self, id: &AlarmId, datapoints: Vec<Option<f64>>, note: Option<String>) {
        let command = AlarmCommand::Evaluate { datapoints, note };
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

    /// Takes `policies`, actions of `id`'s transition number `transition`, each exactly once
    /// (one the domain refuses, such as on a group being deleted, is recorded as taken).
    async fn take(&self, id: &AlarmId, transition: u64, policies: &[PolicyId]) {
        for policy in policies {
            let taken = self
                .supervisor
                .take_alarm_action(id, transition, policy)
                .await;
            match taken {
                Ok(_) | Err(ActorError::Rejected(Rejection::Replayed)) => {}
                Err(error) => refused_or_failed(id, policy, &error),
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
                refused_or_failed(id, &policy, &error);
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

/// Alarm `id`'s datapoints of its last evaluation periods up to `now`, oldest first.
fn datapoints_of(
    store: &SeriesStore,
    id: &AlarmId,
    d: &AlarmDefinition,
    now: Timestamp,
) -> Vec<Option<f64>> {
    let series = series_of(id.as_str(), &d.metric, d.query.as_deref());
    store.datapoints(
        &d.group_id,
        &series,
        d.period_seconds,
        statistic_of(d.statistic, d.query.as_deref()),
        d.evaluation_periods,
        now,
    )
}

/// Logs an alarm action that did not execute: a conflict or a missing object (a group being
/// deleted, a policy gone) is the service working, said at debug level, as it may come at every
/// evaluation of an alarm that repeats its actions; any other error is a warning.
fn refused_or_failed(alarm: &AlarmId, policy: &PolicyId, error: &ActorError) {
    match error {
        ActorError::Rejected(
            rejection @ (Rejection::Conflict { .. } | Rejection::NotFound { .. }),
        ) => {
            tracing::debug!(alarm = %alarm, policy = %policy, %rejection, "alarm action refused");
        }
        _ => tracing::warn!(alarm = %alarm, policy = %policy, %error, "alarm action failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_actors::domain::group::{decide, replay, GroupEvent, NewGroup};
    use flotilla_actors::domain::policy::PolicyDefinition;
    use flotilla_actors::domain::TenantId;

    const T0: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn created(id: &str, group: &str) -> PolicyEvent {
        PolicyEvent::Created {
            id: PolicyId::new(id),
            group_id: GroupId::new(group),
            tenant_id: TenantId::new("ten_1"),
            definition: PolicyDefinition::target_tracking("t", Tracking::new("cpu", 0.5)),
            at: T0,
        }
    }

    fn sample(at: Timestamp) -> Sample {
        Sample {
            metric: "cpu".into(),
            value: 0.5,
            timestamp: at,
        }
    }

    /// A group of 4 and the table's answer for it at rest.
    fn group_at_rest(table: &AlarmTable, now: Timestamp) -> (Group, Vec<Tracked>) {
        let new = NewGroup {
            id: GroupId::new("grp_1"),
            tenant_id: TenantId::new("ten_1"),
            name: "g".into(),
            min_size: 1,
            max_size: 10,
            desired_capacity: Some(4),
            cooldown_seconds: None,
            launch: serde_json::json!({"provider": "simulated"}),
            metadata: None,
            metrics_token_hash: String::new(),
        };
        let mut events: Vec<GroupEvent> = decide(&None, &GroupCommand::Create(new), T0).unwrap();
        let (_, sent) = table.due_tracking(now);
        let tracked = sent[0].1.clone();
        let state = replay(&events);
        events.extend(decide(&state, &GroupCommand::Track(tracked.clone()), now).unwrap());
        (replay(&events).unwrap(), tracked)
    }

    #[test]
    fn a_saved_alarm_decodes_only_with_its_writer_named() {
        let mut saved = serde_json::json!({"id": "alm_1", "state": "ok", "transition": 2,
            "pending": [], "writer": "ten_1",
            "definition": {"name": "cpu", "group_id": "grp_1", "metric": "cpu",
                "statistic": "avg", "period_seconds": 60, "evaluation_periods": 1,
                "datapoints_to_alarm": 1, "comparison": "gt", "threshold": 1.0,
                "treat_missing": "missing", "alarm_actions": [], "ok_actions": [],
                "repeat_actions": false}});
        let read: SavedAlarm = serde_json::from_value(saved.clone()).unwrap();
        assert_eq!(read.writer, Some(TenantId::new("ten_1")));
        saved["writer"] = serde_json::Value::Null;
        let disowned: SavedAlarm = serde_json::from_value(saved.clone()).unwrap();
        assert_eq!(disowned.writer, None);
        // A checkpoint from before the field (or with `tenant_id`, as one commit wrote it) does
        // not decode, so the read models are rebuilt rather than every alarm disowned.
        saved.as_object_mut().unwrap().remove("writer");
        assert!(serde_json::from_value::<SavedAlarm>(saved.clone()).is_err());
        saved["tenant_id"] = "ten_1".into();
        assert!(serde_json::from_value::<SavedAlarm>(saved).is_err());
    }

    #[test]
    fn a_group_at_rest_is_skipped_until_its_policies_change_even_mid_decision() {
        let table = AlarmTable::default();
        table.feed_policy(PolicyId::new("pol_a"), created("pol_a", "grp_1"), T0);
        let at = T0.plus_secs(60u64);
        table
            .ingest(&GroupId::new("grp_1"), &[sample(at)], at)
            .unwrap();
        let now = T0.plus_secs(120u64);
        let (group, tracked) = group_at_rest(&table, now);
        table.decided(&group, &tracked, now);
        let next = now.plus_secs(60u64);
        table
            .ingest(&GroupId::new("grp_1"), &[sample(now)], now)
            .unwrap();
        let (due, sent) = table.due_tracking(next);
        assert_eq!((due, sent.len()), (1, 0), "at rest: due, not sent");

        // A policy joins while a decision is in flight: the answer does not put the group back
        // at rest, and the next period is sent.
        table.feed_policy(PolicyId::new("pol_b"), created("pol_b", "grp_1"), next);
        table.decided(&group, &tracked, next);
        let later = next.plus_secs(60u64);
        table
            .ingest(&GroupId::new("grp_1"), &[sample(next)], next)
            .unwrap();
        let (_, sent) = table.due_tracking(later);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1.len(), 2);

        // A deleted group's policies are followed no more.
        table.forget_group(GroupId::new("grp_1"));
        let (due, sent) = table.due_tracking(later.plus_secs(600u64));
        assert_eq!((due, sent.len()), (0, 0));
    }
}
