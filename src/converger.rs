//! The converger (SPEC 6): at each tick (see [`crate::ticks`]), every group's servers are
//! reconciled with its desired capacity, at the injected clock's now, so backoffs and start
//! latencies are tested with a manual clock and manual ticks.
//!
//! One pass over a group:
//! 1. [`plan`] (pure, in the domain) says what the group needs;
//! 2. excess slots are marked for deletion, in the termination order (`delete_servers`);
//! 3. each server being deleted is deleted off the pass ([`Deletions`]): a provider whose delete
//!    blocks (a process ignoring SIGTERM for its grace, an orchestrator slow to answer) deletes
//!    every such server at once, each a call on the provider [`Pool`], and records each
//!    deletion when it ends, so a server slow to stop delays neither launches nor other
//!    deletions (SPEC 6);
//! 4. at the same time, two things, so that a provider slow to answer about its servers delays
//!    no launch:
//!    - the provider is asked about the pending servers and the sweep's share of the active
//!      ones, and what it says is recorded (`report_servers`), with the pending servers whose
//!      launch was never recorded (a restart came between) as failed, and those past their
//!      start timeout failed unless they now run ([`Watched`]). A provider that cannot
//!      be reached (an orchestrator down) is asked no more in this pass, and the next pass
//!      asks about the servers this one did not reach;
//!    - new slots, and failed ones whose backoff ran out, are asked of the group
//!      (`launch_servers`), which records each it allows; only those are launched, each with a
//!      fresh metrics token whose hash the launch event records, and their outcome is
//!      recorded. At most [`LAUNCHES_PER_PASS`] a pass: failed slots first, longest due first,
//!      then new ones; the rest wait for the next tick.
//!
//!    Each makes at most [`CALLS_AT_ONCE`] provider calls at once.
//!
//! Provider calls that may block run on the [`Pool`], where each tenant's calls hold at most
//! their share of its threads: a tenant whose orchestrator never answers delays no other's.
//!
//! Every step is a command to the group's actor, so the group's one actor serializes its
//! capacity and its servers, and each step is an event of its stream. A group's passes never
//! overlap (a lock per group; a tick skips a group whose pass is still running).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use flotilla_actors::aggregate::Groups;
use flotilla_actors::clock::Timestamp;
use flotilla_actors::domain::group::{launch, Group};
use flotilla_actors::domain::group::{GroupCommand, GroupEvent, LaunchRequest, ServerReport};
use flotilla_actors::domain::server::{plan, Server, ServerState, Sweep};
use flotilla_actors::domain::{GroupId, TenantId};
use flotilla_actors::error::Error;
use flotilla_actors::object::Executed;
use flotilla_actors::supervisor::Supervisor;
use serde_json::Value;

use crate::index::Index;
use crate::providers::pool::Pool;
use crate::providers::{Launch, ProviderError, Providers, Status};
use crate::service::Readiness;
use crate::ticks::Ticker;
use crate::token;

/// What one pass did, for tests and benches.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Launches attempted.
    pub launched: usize,
    /// Deletions started (a blocking provider's go on after the pass).
    pub deleting: usize,
    /// Events recorded.
    pub events: usize,
}

/// Reconciles groups through their providers.
pub struct Converger {
    supervisor: Supervisor,
    index: Arc<Index>,
    providers: Arc<Providers>,
    metrics_url: String,
    locks: Mutex<HashMap<GroupId, Arc<tokio::sync::Mutex<()>>>>,
    quiet: Arc<Quiet>,
    deletions: Arc<Deletions>,
    /// Per group, where its sweep stands (see [`Round`]).
    sweeps: Mutex<HashMap<GroupId, Round>>,
    /// Per group, the server whose status check halted its last pass: asked last in the
    /// next, so that one server the provider cannot answer about stops no others' checks.
    suspects: Mutex<HashMap<GroupId, String>>,
    /// Which groups this node converges.
    ownership: Arc<crate::cluster::Ownership>,
    /// Where provider calls that may block are made.
    pool: Pool,
    /// How often its passes come: a late pass makes up at most two of them of a round's pace.
    period: std::time::Duration,
}

/// The most active servers of one group a pass asks the provider about: a group of 5,000 is
/// checked over 20 passes, and a pass costs about the same whatever the group's size. Every
/// pending server is asked about at every pass.
pub const ACTIVE_CHECKS_PER_PASS: usize = 256;

/// The most provider calls one pass over a group makes at once, for its status checks and for
/// its launches each: an orchestrator answering in 100 ms is asked about a pass's 256 servers
/// in about 3 s rather than 26.
pub const CALLS_AT_ONCE: usize = 8;

/// The most servers of one group a pass launches (relaunches first): a group of 10,000 is
/// launched over 10 passes. A pass's launches are an append, the provider's calls
/// ([`CALLS_AT_ONCE`] at once), then an append of what they did, and a group launched at once
/// held every launch's events, reports and handles in memory together:
/// 100,000 simulated servers peaked at 2 GiB and settled at 0.8 to 0.95 GiB, against 0.63 and
/// 0.59 GiB in batches of 1,000 (`cargo bench --bench load`, `LOAD_SERVERS`).
pub const LAUNCHES_PER_PASS: usize = 1_000;

/// The report of `server_id`'s deletion the provider failed, with its reason.
fn delete_failed(server_id: String, error: &ProviderError) -> ServerReport {
    ServerReport::DeleteFailed {
        server_id,
        reason: format!("delete failed: {}", error.reason),
    }
}

/// A server a pass asks the provider about: its id, state and handle, and for a pending one
/// past its start timeout, the reason it fails unless it now runs.
type Watched = (String, ServerState, Value, Option<String>);

/// Where a group's sweep over its active servers stands. A round asks about each once, in id
/// order, paced over the provider's [`Provider::status_interval`] on the service's clock: a pass
/// asks about `active × t / interval` of them, `t` the time since the pace last stood (the
/// remainder carried; at most two passes' worth, or one server, and at most
/// [`ACTIVE_CHECKS_PER_PASS`]), and the next round begins once the interval has passed since this
/// one began (a round with no active server to ask ends at once). An orchestrator is then asked
/// about a group's active servers at a steady rate it can bear (a group of 1,000 on `http`'s
/// default of 30 s: about 33 a second, not bursts of 256). The pace is that of the pass's own moment: a round the
/// provider held up (halts), a group that grew mid-round or passes that came late go on at the
/// group's rate, never in bursts to make up the time; such a round takes longer than its
/// interval, and the next begins when it ends.
///
/// [`Provider::status_interval`]: crate::providers::Provider::status_interval
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Round {
    /// The round under way: the last active server it asked about (empty before the first);
    /// none between rounds.
    after: Option<String>,
    /// When the round under way, or the last, began.
    began: Option<Timestamp>,
    /// The moment up to which the round's pace was spent.
    paced_to: Option<Timestamp>,
    /// How long the group's last pass whose checks were not halted took, its launches
    /// included, in milliseconds of real time: passes over a group come no more often than
    /// that.
    took: i64,
}

impl Round {
    /// The sweep of a pass at `now` over a group of `active` active servers, and the round it
    /// belongs to (a new one when the last ended and its interval passed, or the clock went
    /// back before it began). Passes come every `period`.
    fn sweep(
        &self,
        now: Timestamp,
        (interval, period): (std::time::Duration, std::time::Duration),
        active: usize,
    ) -> (Sweep, Round) {
        let interval = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        let mut round = self.clone();
        if round.after.is_none() {
            // Due once the interval passed since the last began, or the clock went back.
            let due = round.began.is_none_or(|began| {
                let since = now.saturating_sub(began);
                since < 0 || since >= interval
            });
            if !due {
                let sweep = Sweep {
                    after: String::new(),
                    budget: 0,
                };
                return (sweep, round);
            }
            round = Round {
                after: Some(String::new()),
                began: Some(now),
                paced_to: None,
                took: round.took,
            };
        }
        if active == 0 {
            // Nothing to ask about: the round ends, and the next waits out the interval.
            round.after = None;
            let sweep = Sweep {
                after: String::new(),
                budget: 0,
            };
            return (sweep, round);
        }
        let after = round.after.clone().unwrap_or_default();
        if interval == 0 {
            let sweep = Sweep {
                after,
                budget: ACTIVE_CHECKS_PER_PASS,
            };
            return (sweep, round);
        }
        let (active, span) = (active as i128, i128::from(interval));
        let paced_to = match round.paced_to {
            // A clock that went back paces the round from now.
            Some(paced_to) if paced_to > now => now,
            Some(paced_to) => paced_to,
            // A round's first server is due as it begins: one server's share of the interval
            // ago, rounded up.
            None => now.plus_millis(-i64::try_from((span + active - 1) / active).unwrap_or(0)),
        };
        let elapsed = i128::from(now.saturating_sub(paced_to));
        let earned = elapsed * active / span;
        // A pass that came late asks about at most two passes' worth (one server, if that is
        // less), and the time past it is not made up. Passes come every period, or as often as
        // the group's take (a tick skips a group whose pass is under way).
        let period = i128::try_from(period.as_millis()).unwrap_or(i128::MAX / 4);
        let carry = 2 * period.max(i128::from(round.took));
        let carried = ((active * carry + span - 1) / span).max(1);
        let most = carried.min(ACTIVE_CHECKS_PER_PASS as i128);
        let (budget, paced_to) = if earned > most {
            (most, now)
        } else {
            let spent = i64::try_from(earned * span / active).unwrap_or(i64::MAX);
            (earned, paced_to.plus_millis(spent))
        };
        round.paced_to = Some(paced_to);
        let sweep = Sweep {
            after,
            budget: usize::try_from(budget).unwrap_or(0),
        };
        (sweep, round)
    }
}

/// The servers whose deletion is under way, per group: a pass starts no second deletion of a
/// server, and a forced group deletion waits for them to end.
#[derive(Default)]
struct Deletions {
    servers: Mutex<HashMap<GroupId, HashSet<String>>>,
    ended: tokio::sync::Notify,
    /// Per tenant, its blocking deletions at once: each may hold a thread of the pool for a
    /// server's whole grace, and the tenant's share of the pool also serves its launches and
    /// status checks, which must never wait behind deletions. So deletions take at most half
    /// of the share; the others wait their turn.
    blocking: Mutex<HashMap<TenantId, Arc<tokio::sync::Semaphore>>>,
}

/// Ends a deletion when dropped, so that one whose provider panicked is ended too (and tried
/// again by the next pass) rather than counted as under way for ever.
struct Ending {
    deletions: Arc<Deletions>,
    group: GroupId,
    server_id: String,
}

impl Drop for Ending {
    fn drop(&mut self) {
        self.deletions.end(&self.group, &self.server_id);
    }
}

impl Deletions {
    fn servers(&self) -> std::sync::MutexGuard<'_, HashMap<GroupId, HashSet<String>>> {
        self.servers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks `server_id`'s deletion under way; false if it already was.
    fn start(&self, group: &GroupId, server_id: &str) -> bool {
        self.servers()
            .entry(group.clone())
            .or_default()
            .insert(server_id.to_owned())
    }

    fn end(&self, group: &GroupId, server_id: &str) {
        let mut servers = self.servers();
        if let Some(set) = servers.get_mut(group) {
            set.remove(server_id);
            if set.is_empty() {
                servers.remove(group);
            }
        }
        drop(servers);
        self.ended.notify_waiters();
    }

    /// The turns of `tenant`'s blocking deletions, of which `share` run at once.
    fn turns(&self, tenant: &TenantId, share: usize) -> Arc<tokio::sync::Semaphore> {
        self.blocking
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(tenant.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(share)))
            .clone()
    }

    /// Waits until no deletion of `group`'s servers is under way.
    async fn ended(&self, group: &GroupId) {
        loop {
            let mut ended = std::pin::pin!(self.ended.notified());
            ended.as_mut().enable();
            if !self.servers().contains_key(group) {
                return;
            }
            ended.await;
        }
    }
}

/// Groups a tick can skip: with no servers and a target of 0 (or deleted), a group has nothing
/// to converge until its stream grows. The converger marks a group idle after a pass; the
/// projector, told every record of the journal, marks it changed when its stream grows. Groups
/// changed since their pass began are kept apart, so a change that lands during a pass is never
/// lost to it.
#[derive(Default)]
pub struct Quiet {
    sets: Mutex<QuietSets>,
}

#[derive(Default)]
struct QuietSets {
    idle: HashSet<GroupId>,
    changed: HashSet<GroupId>,
}

impl Quiet {
    fn sets(&self) -> std::sync::MutexGuard<'_, QuietSets> {
        self.sets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes in that group `id`'s stream grew (the projector's entry): a group that was idle is
    /// passed over again on the next tick.
    pub fn changed(&self, id: &str) {
        let mut sets = self.sets();
        sets.idle.remove(id);
        // Most records are of a group already marked: no id is made for those.
        if !sets.changed.contains(id) {
            sets.changed.insert(GroupId::new(id));
        }
    }

    /// How many groups ticks now skip.
    pub fn idle(&self) -> usize {
        self.sets().idle.len()
    }
}

impl Converger {
    /// A converger acting through `supervisor`; servers post samples to `metrics_url`.
    pub fn new(
        supervisor: Supervisor,
        index: Arc<Index>,
        providers: Arc<Providers>,
        metrics_url: String,
        quiet: Arc<Quiet>,
    ) -> Converger {
        Converger {
            supervisor,
            index,
            providers,
            metrics_url,
            locks: Mutex::new(HashMap::new()),
            quiet,
            deletions: Arc::default(),
            sweeps: Mutex::default(),
            suspects: Mutex::default(),
            ownership: Arc::new(crate::cluster::Ownership::sole("local")),
            pool: Pool::new(
                crate::providers::pool::DEFAULT_THREADS,
                crate::providers::pool::DEFAULT_PER_TENANT,
            ),
            period: std::time::Duration::from_secs(1),
        }
    }

    /// Passes come every `period` (default a second: see `--converge-tick-ms`).
    pub fn with_period(mut self, period: std::time::Duration) -> Converger {
        self.period = period;
        self
    }

    /// Makes provider calls that may block on `pool`.
    pub fn with_pool(mut self, pool: Pool) -> Converger {
        self.pool = pool;
        self
    }

    /// Converges only the groups `ownership` says this node acts for.
    pub fn with_ownership(mut self, ownership: Arc<crate::cluster::Ownership>) -> Converger {
        self.ownership = ownership;
        self
    }

    fn sweeps(&self) -> std::sync::MutexGuard<'_, HashMap<GroupId, Round>> {
        self.sweeps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn suspects(&self) -> std::sync::MutexGuard<'_, HashMap<GroupId, String>> {
        self.suspects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn quiet(&self) -> std::sync::MutexGuard<'_, QuietSets> {
        self.quiet.sets()
    }

    /// How many groups ticks now skip.
    pub fn idle(&self) -> usize {
        self.quiet.idle()
    }

    fn lock_of(&self, id: &GroupId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.entry(id.clone()).or_default().clone()
    }

    async fn execute(
        &self,
        id: &GroupId,
        command: GroupCommand,
    ) -> Result<Executed<Groups>, Error> {
        self.supervisor
            .execute::<Groups>(id.as_str(), command)
            .await
    }

    /// One pass over group `id`, waiting for a running one to end first.
    pub async fn reconcile(&self, id: &GroupId) -> Result<Pass, Error> {
        let lock = self.lock_of(id);
        let _held = lock.lock().await;
        self.pass(id).await
    }

    /// One pass over group `id` (as [`Converger::reconcile`]), then waits for every deletion of
    /// its servers under way to end: a forced group deletion waits for its servers this way.
    pub async fn reconcile_and_delete(&self, id: &GroupId) -> Result<Pass, Error> {
        let pass = self.reconcile(id).await?;
        self.deletions.ended(id).await;
        Ok(pass)
    }

    /// The deletion of the server behind `handle`, which records it when it ends; `None` if one
    /// is already under way. A deletion that fails leaves the server `deleting`, its reason
    /// recorded, and a pass tries again once its backoff ran out.
    fn deletion(
        &self,
        (id, tenant): (&GroupId, &TenantId),
        config: &Value,
        blocking: bool,
        (server_id, handle): (String, Value),
    ) -> Option<impl std::future::Future<Output = ()> + 'static> {
        if !self.deletions.start(id, &server_id) {
            return None;
        }
        let (supervisor, providers, pool) = (
            self.supervisor.clone(),
            self.providers.clone(),
            self.pool.clone(),
        );
        let turns = blocking.then(|| {
            self.deletions
                .turns(tenant, (self.pool.per_tenant() / 2).max(1))
        });
        let tenant = tenant.clone();
        let (id, config) = (id.clone(), config.clone());
        let ending = Ending {
            deletions: self.deletions.clone(),
            group: id.clone(),
            server_id: server_id.clone(),
        };
        Some(async move {
            let _ending = ending;
            let _turn = match &turns {
                Some(turns) => turns.acquire().await.ok(),
                None => None,
            };
            let deleted = if handle.is_null() {
                Ok(())
            } else {
                call((&pool, &tenant), blocking, move || {
                    match providers.of(&config) {
                        Some(provider) => provider.delete(&config, &handle),
                        None => Err(ProviderError::new("the group's provider is not known")),
                    }
                })
                .await
            };
            let report = match deleted {
                Ok(()) => ServerReport::Deleted {
                    server_id: server_id.clone(),
                },
                Err(error) => {
                    tracing::warn!(group = %id, server = %server_id, reason = %error.reason, "delete failed; tried again after a backoff");
                    delete_failed(server_id.clone(), &error)
                }
            };
            let report = GroupCommand::ReportServers(vec![report]);
            if let Err(error) = supervisor.execute::<Groups>(id.as_str(), report).await {
                tracing::warn!(group = %id, server = %server_id, %error, "recording a deletion's end failed; tried again next pass");
            }
        })
    }

    async fn pass(&self, id: &GroupId) -> Result<Pass, Error> {
        let mut pass = Pass::default();
        self.quiet().changed.remove(id);
        let Some(group) = self.supervisor.get::<Groups>(id.as_str()).await?.state else {
            self.sweeps().remove(id);
            return Ok(pass);
        };
        if group.deleted || (group.servers.is_empty() && group.target() == 0) {
            self.sweeps().remove(id);
            let mut quiet = self.quiet();
            if !quiet.changed.contains(id) {
                quiet.idle.insert(id.clone());
            }
            return Ok(pass);
        }
        let config = group.launch.value();
        let Some(provider) = self.providers.of(&config) else {
            return Ok(pass);
        };
        let blocking = provider.blocks();
        let now = self.supervisor.clock().now();
        let round = self.sweeps().get(id).cloned().unwrap_or_default();
        let active = group.count(ServerState::Active) as usize;
        let (sweep, round) = round.sweep(
            now,
            (provider.status_interval(&config), self.period),
            active,
        );
        let budget = sweep.budget;
        let start_timeout = launch::start_timeout(&config);
        let mut plan = plan(&group.servers, group.target(), now, &sweep, start_timeout);
        if plan.relaunch.len() > LAUNCHES_PER_PASS {
            // The longest due first (a slot's backoff doubles, so the lowest ids would otherwise
            // come back first each time); the rest wait for the next pass, their remains too.
            plan.relaunch
                .sort_by_key(|sid| group.servers.get(sid.as_str()).and_then(Server::retry_at));
            plan.relaunch.truncate(LAUNCHES_PER_PASS);
        }
        // Moved on only once what this pass learnt is recorded: a pass that fails checks the
        // same servers again.
        let swept_to = plan.swept_to.clone();

        let mut delete = plan.delete;
        if !plan.remove.is_empty() {
            let executed = self
                .execute(id, GroupCommand::DeleteServers(plan.remove))
                .await?;
            pass.events += executed.events.len();
            if let Some(group) = &executed.state {
                for event in &executed.events {
                    if let GroupEvent::ServerDeleteRequested { server_id, .. } = event {
                        let handle = group
                            .servers
                            .get(server_id.as_str())
                            .map(|s| s.provider.value());
                        delete.push((server_id.clone(), handle.unwrap_or(Value::Null)));
                    }
                }
            }
        }

        // Deletions: a blocking provider's each on a task of its own, which the pass does not
        // wait for; a provider that never blocks deletes at once.
        for server in delete {
            if let Some(deletion) = self.deletion((id, &group.tenant_id), &config, blocking, server)
            {
                pass.deleting += 1;
                if blocking {
                    actix_web::rt::spawn(deletion);
                } else {
                    deletion.await;
                }
            }
        }

        // Failures known without asking: servers past twice their start timeout, and launches
        // a restart interrupted.
        let resumed = plan
            .resume
            .into_iter()
            .map(|server_id| ServerReport::Failed {
                server_id,
                reason: "launch interrupted by a restart of flotilla".into(),
            });
        let failed = plan.timed_out.into_iter().chain(resumed);
        // Asked about: the servers past their start timeout (that fail unless they now run or
        // exited), then the plan's others.
        let expiring = plan.expiring.into_iter();
        let mut watch: Vec<Watched> = expiring
            .map(|(id, handle, reason)| (id, ServerState::Pending, handle, Some(reason)))
            .collect();
        watch.extend(
            plan.watch
                .into_iter()
                .map(|(id, state, handle)| (id, state, handle, None)),
        );

        // Statuses and launches at once: an orchestrator slow to answer about the servers it
        // runs delays no launch.
        let on = Calls {
            id,
            tenant: &group.tenant_id,
            config: &config,
            blocking,
        };
        let started = std::time::Instant::now();
        let (checked, launched) = futures_util::future::join(
            self.check(&on, watch, failed.collect(), (round, budget, swept_to)),
            self.launch(&on, &group, plan.relaunch, plan.launch_new),
        )
        .await;
        let (events, halted) = checked?;
        pass.events += events;
        if !halted {
            // The next pass over the group comes no sooner than this one ended (a tick skips a
            // group whose pass is under way): the pace's make-up follows. Real time, as the
            // calls took; the service's clock may stand still (tests) or jump.
            let took = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
            if let Some(round) = self.sweeps().get_mut(id) {
                round.took = took;
            }
        }
        let (launched, events) = launched?;
        pass.launched = launched;
        pass.events += events;
        Ok(pass)
    }

    /// Asks the provider about the `watch`ed servers, and records what it says (one past its
    /// start timeout that answers neither running nor exited fails with the reason given), with
    /// the `failed` ones the plan knew of; answers the events recorded, and whether the provider
    /// halted it. The sweep's `round` (which gave this pass `budget` active servers) then goes
    /// on from `swept_to`; if the provider could not be reached, from the last active server it
    /// was asked about, so that the next pass asks about those not reached.
    async fn check(
        &self,
        on: &Calls<'_>,
        watch: Vec<Watched>,
        failed: Vec<ServerReport>,
        (mut round, budget, swept_to): (Round, usize, Option<String>),
    ) -> Result<(usize, bool), Error> {
        // The server whose check halted the last pass is asked last.
        let mut watch = watch;
        let suspect = self.suspects().remove(on.id);
        if let Some(place) =
            suspect.and_then(|suspect| watch.iter().position(|(id, ..)| *id == suspect))
        {
            let server = watch.remove(place);
            watch.push(server);
        }
        // The active servers watched, by their place in `watch`, in the sweep's order.
        let active: Vec<(usize, String)> = watch
            .iter()
            .enumerate()
            .filter(|(_, (_, state, ..))| *state == ServerState::Active)
            .map(|(place, (id, ..))| (place, id.clone()))
            .collect();
        let watched = watch.len();
        let (providers, config) = (self.providers.clone(), on.config.clone());
        let checked = self
            .fan_out(on, watch, move |(server_id, state, handle, expired)| {
                let provider = providers.of(&config).expect("checked by the pass");
                match provider.status(&config, &handle) {
                    // Nothing is decided of a server not asked, expired or not.
                    Status::Unreachable => Answer::Halt(Err(server_id)),
                    Status::Running if state == ServerState::Pending => {
                        Answer::Go(Ok(Some(ServerReport::Active { server_id })))
                    }
                    Status::Exited => Answer::Go(Ok(Some(ServerReport::Failed {
                        server_id,
                        reason: "exited".into(),
                    }))),
                    Status::Unknown if expired.is_some() => {
                        let reason = expired.unwrap_or_default();
                        Answer::Go(Ok(Some(ServerReport::Failed { server_id, reason })))
                    }
                    Status::Running | Status::Unknown => Answer::Go(Ok(None)),
                }
            })
            .await;
        let halted = checked.halted;
        let mut reports = Vec::new();
        for answer in checked.answers {
            match answer {
                Ok(report) => reports.extend(report),
                Err(halted_at) => {
                    self.suspects().insert(on.id.clone(), halted_at);
                }
            }
        }
        reports.extend(failed);
        let mut events = 0;
        if !reports.is_empty() {
            events = self
                .execute(on.id, GroupCommand::ReportServers(reports))
                .await?
                .events
                .len();
        }
        if budget > 0 {
            if halted {
                // Past the servers asked, even the one that halted: an orchestrator that times
                // out now and then stalls no sweep. The next pass asks from there, at the
                // round's pace: what this pass could not ask is not made up in a burst.
                let asked = watched - checked.left.len();
                tracing::warn!(group = %on.id, asked, of = watched, "the provider could not be asked about every server; the next pass goes on");
                let reached = active.iter().take_while(|(place, _)| *place < asked).last();
                if let Some((_, id)) = reached {
                    round.after = Some(id.clone());
                }
            } else {
                // None: the round reached the last active server, and ended.
                round.after = swept_to;
            }
        }
        let mut sweeps = self.sweeps();
        match sweeps.get_mut(on.id) {
            Some(stands) => *stands = round,
            None => drop(sweeps.insert(on.id.clone(), round)),
        }
        Ok((events, halted))
    }

    /// Launches the failed slots `relaunch` again (deleting what is left of them first) and
    /// `launch_new` new ones, at most [`LAUNCHES_PER_PASS`] in all; answers the launches
    /// attempted and the events recorded.
    async fn launch(
        &self,
        on: &Calls<'_>,
        group: &Group,
        relaunch: Vec<String>,
        launch_new: u32,
    ) -> Result<(usize, usize), Error> {
        let id = on.id;
        // What is left of a failed slot (an exited process, a server its orchestrator still
        // lists) is deleted before the slot is launched again, under the lease (even while
        // the shard drains). The launch records a new handle in place of the old one, so a
        // slot whose remains could not be deleted keeps its handle and waits, rather than leave
        // a server nothing names: a failed deletion is recorded and backs off; one a halted
        // pass left untried is tried at the next.
        let stale: Vec<(String, Value)> = relaunch
            .iter()
            .filter_map(|sid| group.servers.get(sid.as_str()))
            .map(|s| (s.id.to_string(), s.provider.value()))
            .filter(|(_, handle)| !handle.is_null())
            .collect();
        let mut relaunch = relaunch;
        let mut recorded = 0;
        if !stale.is_empty() {
            let leased = self
                .ownership
                .acts_for(id.as_str(), self.supervisor.clock().now());
            let mut gone = HashSet::new();
            if leased {
                let (providers, config) = (self.providers.clone(), on.config.clone());
                let answers = self
                    .fan_out(on, stale.clone(), move |(server_id, handle)| {
                        let provider = providers.of(&config).expect("checked by the pass");
                        match provider.delete(&config, &handle) {
                            Ok(()) => Answer::Go(Ok(server_id)),
                            Err(error) => {
                                let failed = delete_failed(server_id, &error);
                                if error.unreachable {
                                    Answer::Halt(Err(failed))
                                } else {
                                    Answer::Go(Err(failed))
                                }
                            }
                        }
                    })
                    .await
                    .answers;
                // A failed deletion is recorded, as one of a server being deleted is: the
                // slot's relaunch then waits out the deletions' backoff, not the next pass.
                let mut failed = Vec::new();
                for answer in answers {
                    match answer {
                        Ok(server_id) => drop(gone.insert(server_id)),
                        Err(report) => failed.push(report),
                    }
                }
                if !failed.is_empty() {
                    tracing::warn!(group = %id, servers = failed.len(), "deleting failed servers' remains failed; their relaunch waits a backoff");
                    recorded = self
                        .execute(id, GroupCommand::ReportServers(failed))
                        .await?
                        .events
                        .len();
                }
            }
            let kept: HashSet<&str> = stale
                .iter()
                .map(|(sid, _)| sid.as_str())
                .filter(|sid| !gone.contains(*sid))
                .collect();
            relaunch.retain(|sid| !kept.contains(sid.as_str()));
        }

        let mut ids = relaunch;
        let new = usize::try_from(launch_new)
            .unwrap_or(usize::MAX)
            .min(LAUNCHES_PER_PASS - ids.len());
        ids.extend((0..new).map(|_| new_server_id()));
        if ids.is_empty() {
            return Ok((0, recorded));
        }
        let tokens: HashMap<String, String> = ids
            .iter()
            .map(|sid| (sid.clone(), token::generate("flo_mt_")))
            .collect();
        let requests = ids
            .iter()
            .map(|sid| LaunchRequest {
                server_id: sid.clone(),
                metrics_token_hash: token::hash(&tokens[sid]),
            })
            .collect();
        let executed = self
            .execute(id, GroupCommand::LaunchServers(requests))
            .await?;
        let mut events = recorded + executed.events.len();
        // The launches are journaled; the provider is called only under a lease still held.
        // Without one, the shard's next owner finds them pending, as a restart would.
        let Some(fence) = self
            .ownership
            .fence(id.as_str(), self.supervisor.clock().now())
        else {
            tracing::info!(group = %id, "lease lost before launching; the next owner resolves them");
            return Ok((0, events));
        };
        let launches: Vec<Launch> = executed
            .events
            .iter()
            .filter_map(|event| match event {
                GroupEvent::ServerLaunchRequested { server_id, .. } => Some(Launch {
                    group_id: id.clone(),
                    server_id: server_id.clone(),
                    config: on.config.clone(),
                    metrics_url: self.metrics_url.clone(),
                    metrics_token: tokens[server_id].clone(),
                    fence: fence.clone(),
                }),
                _ => None,
            })
            .collect();
        let launched = launches.len();
        let (providers, config) = (self.providers.clone(), on.config.clone());
        let launches = self
            .fan_out(on, launches, move |launch| {
                let provider = providers.of(&config).expect("checked by the pass");
                match provider.launch(&launch) {
                    Ok(provider) => Answer::Go(ServerReport::Launched {
                        server_id: launch.server_id,
                        provider,
                    }),
                    Err(error) => {
                        tracing::warn!(group = %launch.group_id, server = %launch.server_id, %error, "launch failed");
                        let halt = error.unreachable;
                        let failed = ServerReport::Failed {
                            server_id: launch.server_id,
                            reason: error.reason,
                        };
                        if halt {
                            Answer::Halt(failed)
                        } else {
                            Answer::Go(failed)
                        }
                    }
                }
            })
            .await;
        // A provider that could not be reached for one launch is not asked for the rest: at
        // 1,000 launches a pass, each waiting out its timeout and retries, a pass would hold
        // the group for hours. They fail now, and are launched again after their backoff.
        let mut reports = launches.answers;
        reports.extend(
            launches
                .left
                .into_iter()
                .map(|launch| ServerReport::Failed {
                    server_id: launch.server_id,
                    reason: NOT_TRIED.into(),
                }),
        );
        if !reports.is_empty() {
            events += self
                .execute(id, GroupCommand::ReportServers(reports))
                .await?
                .events
                .len();
        }
        Ok((launched, events))
    }

    /// Applies `work` to each of `items` as provider calls of the group's tenant: on the pool,
    /// [`CALLS_AT_ONCE`] at once, if the provider may block, else here one after another.
    /// Once `work` answers [`Answer::Halt`], no item not yet started is.
    async fn fan_out<I: Send + 'static, R: Send + 'static>(
        &self,
        on: &Calls<'_>,
        items: Vec<I>,
        work: impl Fn(I) -> Answer<R> + Send + Sync + 'static,
    ) -> Fanned<I, R> {
        let width = CALLS_AT_ONCE.min(items.len());
        let shared = Arc::new(Shared {
            items: Mutex::new(items.into_iter().enumerate().collect()),
            halted: AtomicBool::new(false),
            work,
        });
        let mut answers = if on.blocking {
            let calls = (0..width).map(|_| {
                let shared = shared.clone();
                self.pool.run(on.tenant, move || shared.drain())
            });
            futures_util::future::join_all(calls)
                .await
                .into_iter()
                .flatten()
                .collect()
        } else {
            shared.drain()
        };
        answers.sort_unstable_by_key(|(index, _)| *index);
        let left = std::mem::take(
            &mut *shared
                .items
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        Fanned {
            answers: answers.into_iter().map(|(_, answer)| answer).collect(),
            halted: shared.halted.load(Ordering::Relaxed),
            left: left.into_iter().map(|(_, item)| item).collect(),
        }
    }

    /// Of `shards`, those with a group whose pass, or a server's deletion, is under way here:
    /// the lease loop lets go of such a shard only once that work has ended.
    pub fn busy_in(&self, shards: &BTreeSet<u32>) -> BTreeSet<u32> {
        if shards.is_empty() {
            return BTreeSet::new();
        }
        let mut busy: BTreeSet<u32> = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(_, pass)| pass.try_lock().is_err())
            .map(|(id, _)| crate::cluster::shard_of(id.as_str()))
            .filter(|shard| shards.contains(shard))
            .collect();
        busy.extend(
            self.deletions
                .servers()
                .iter()
                .filter(|(_, servers)| !servers.is_empty())
                .map(|(id, _)| crate::cluster::shard_of(id.as_str()))
                .filter(|shard| shards.contains(shard)),
        );
        busy
    }

    /// At each of `ticker`'s ticks once `ready` is set, starts a pass over every group whose
    /// previous pass has ended; the tick lasts until those passes end (for a test's manual
    /// tick), while the next real tick does not wait for them: a slow provider delays no other
    /// group.
    pub fn run(self: Arc<Self>, mut ticker: Ticker, ready: Arc<Readiness>) {
        actix_web::rt::spawn(async move {
            while let Some(tick) = ticker.next().await {
                if !ready.is_ready() {
                    continue;
                }
                let due: Vec<GroupId> = {
                    let now = self.supervisor.clock().now();
                    let quiet = self.quiet();
                    let mut groups = self.index.all_groups();
                    groups.retain(|id| {
                        !quiet.idle.contains(id) && self.ownership.converges(id.as_str(), now)
                    });
                    groups
                };
                for id in due {
                    let lock = self.lock_of(&id);
                    let Ok(held) = lock.try_lock_owned() else {
                        continue;
                    };
                    // Asked again under the group's lock: the lease loop marks a shard
                    // draining before it looks for passes under way, so either the pass sees
                    // the mark here or the lease loop sees the lock.
                    if !self
                        .ownership
                        .converges(id.as_str(), self.supervisor.clock().now())
                    {
                        continue;
                    }
                    let (converger, tick) = (self.clone(), tick.clone());
                    actix_web::rt::spawn(async move {
                        if let Err(error) = converger.pass(&id).await {
                            tracing::warn!(group = %id, %error, "convergence pass failed");
                        }
                        drop(held);
                        drop(tick);
                    });
                }
            }
        });
    }
}

/// Where one pass's provider calls go.
struct Calls<'a> {
    id: &'a GroupId,
    tenant: &'a TenantId,
    config: &'a Value,
    /// Whether the group's provider may block (its calls then run on the pool).
    blocking: bool,
}

/// The reason of a launch a pass did not try, once the provider could not be reached for
/// another.
pub const NOT_TRIED: &str =
    "not tried: the provider could not be reached for another launch of this pass";

/// What one call of [`Converger::fan_out`] answers.
enum Answer<R> {
    /// Its answer; the others go on.
    Go(R),
    /// Its answer, and no call not yet started is made.
    Halt(R),
}

/// What [`Converger::fan_out`] did.
struct Fanned<I, R> {
    /// Each call's answer, in the order of the items.
    answers: Vec<R>,
    /// Whether a call halted the others.
    halted: bool,
    /// The items no call was made for (after a halt), in order.
    left: Vec<I>,
}

/// Items that calls of [`Converger::fan_out`] take in turn.
struct Shared<I, W> {
    items: Mutex<std::collections::VecDeque<(usize, I)>>,
    halted: AtomicBool,
    work: W,
}

impl<I, W> Shared<I, W> {
    /// Works through the items left until there are none, or one halts.
    fn drain<R>(&self) -> Vec<(usize, R)>
    where
        W: Fn(I) -> Answer<R>,
    {
        let mut answers = Vec::new();
        while !self.halted.load(Ordering::Relaxed) {
            let next = self
                .items
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop_front();
            let Some((index, item)) = next else { break };
            let halt_on_panic = HaltOnPanic(&self.halted);
            let answer = (self.work)(item);
            std::mem::forget(halt_on_panic);
            match answer {
                Answer::Go(answer) => answers.push((index, answer)),
                Answer::Halt(answer) => {
                    answers.push((index, answer));
                    self.halted.store(true, Ordering::Relaxed);
                }
            }
        }
        answers
    }
}

/// Halts a fan-out when dropped, which only a panic in a call does: the pass it belongs to
/// unwinds, and nothing would record what its other calls went on to do.
struct HaltOnPanic<'a>(&'a AtomicBool);

impl Drop for HaltOnPanic<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs provider calls as a call of the tenant on the pool, unless the group's provider never
/// blocks.
async fn call<T: Send + 'static>(
    (pool, tenant): (&Pool, &TenantId),
    blocking: bool,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    if blocking {
        pool.run(tenant, work).await
    } else {
        work()
    }
}

fn new_server_id() -> String {
    format!("srv_{}", uuid_like())
}

/// 32 hex digits of randomness.
fn uuid_like() -> String {
    let token = token::generate("");
    token::hash(&token)[..32].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_that_panics_halts_the_others_of_its_fan_out() {
        let shared = Shared {
            items: Mutex::new((0..10).map(|i| (i, i)).collect()),
            halted: AtomicBool::new(false),
            work: |item: usize| {
                assert!(item != 3, "the provider broke");
                Answer::Go(item * 10)
            },
        };
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shared.drain()));
        assert!(panicked.is_err());
        // The other calls, on other threads, take no more items: nothing would record them.
        assert!(shared.drain().is_empty());
        assert_eq!(shared.items.lock().unwrap().len(), 6);
    }

    /// Passes a second apart.
    const SECOND: std::time::Duration = std::time::Duration::from_secs(1);

    #[test]
    fn a_round_of_the_sweep_is_paced_over_its_interval_and_the_next_waits_it_out() {
        let interval = std::time::Duration::from_secs(60);
        let t0 = Timestamp::from_secs(1_000);
        let at = |secs: i64| t0.plus_millis(secs * 1000);
        // The first round begins at once, with the first of its servers (whatever the
        // interval's share of each: 7 do not divide 30 s).
        let (sweep, round) = Round::default().sweep(t0, (interval, SECOND), 10);
        assert_eq!(sweep.budget, 1);
        let thirty = std::time::Duration::from_secs(30);
        assert_eq!(Round::default().sweep(t0, (thirty, SECOND), 7).0.budget, 1);
        assert_eq!(
            Round::default()
                .sweep(t0, (thirty, SECOND), 40_000)
                .0
                .budget,
            1
        );
        assert_eq!(round.began, Some(t0));
        assert_eq!(round.after.as_deref(), Some(""));
        // Ten servers over 60 s: one more every 6 s of the pace, the rest carried.
        let under_way = Round {
            after: Some("srv_3".into()),
            began: Some(t0),
            paced_to: Some(at(18)),
            took: 0,
        };
        let budget =
            |round: &Round, now, active| round.sweep(now, (interval, SECOND), active).0.budget;
        assert_eq!(
            under_way.sweep(at(23), (interval, SECOND), 10).0.after,
            "srv_3"
        );
        assert_eq!(budget(&under_way, at(23), 10), 0);
        let (sweep, paced) = under_way.sweep(at(25), (interval, SECOND), 10);
        assert_eq!((sweep.budget, paced.paced_to), (1, Some(at(24))));
        assert_eq!(budget(&paced, at(29), 10), 0);
        assert_eq!(budget(&paced, at(30), 10), 1);
        // A thousand over 30 s: about 33 a second, never more than a pass's most.
        let begun = Round {
            after: Some("srv_0".into()),
            began: Some(t0),
            paced_to: Some(t0),
            took: 0,
        };
        let mut round = begun.clone();
        let mut asked = Vec::new();
        for second in 1..=3 {
            let (sweep, next) = round.sweep(at(second), (thirty, SECOND), 1_000);
            asked.push(sweep.budget);
            round = next;
        }
        assert_eq!(asked, [33, 33, 34], "a third carried");
        // A pass that came late, or a round the provider held up, is not made up in a burst:
        // at most two passes' worth (67), or one server, or a pass's most; the rest dropped.
        let (sweep, late) = begun.sweep(at(20), (thirty, SECOND), 1_000);
        assert_eq!((sweep.budget, late.paced_to), (67, Some(at(20))));
        assert_eq!(late.sweep(at(21), (thirty, SECOND), 1_000).0.budget, 33);
        assert_eq!(
            budget(&under_way, at(59), 10),
            1,
            "a slow pace's one server"
        );
        let five = std::time::Duration::from_secs(5);
        assert_eq!(
            begun.sweep(at(20), (thirty, five), 100).0.budget,
            34,
            "passes 5 s apart"
        );
        // So with passes that take 5 s (a tick skips a group whose pass is under way): the
        // group keeps its rate.
        let slow = Round {
            took: 5_000,
            ..begun.clone()
        };
        assert_eq!(slow.sweep(at(5), (thirty, SECOND), 1_000).0.budget, 166);
        let huge = begun.sweep(at(2), (thirty, SECOND), 100_000).0.budget;
        assert_eq!(huge, ACTIVE_CHECKS_PER_PASS);
        // A group that grows mid-round asks at its new rate from then on, not for the time
        // it was small.
        let small = Round {
            after: Some("srv_0".into()),
            began: Some(t0),
            paced_to: Some(t0),
            took: 0,
        };
        let (_, small) = small.sweep(at(10), (thirty, SECOND), 3);
        assert_eq!(small.sweep(at(11), (thirty, SECOND), 1_000).0.budget, 33);
        // With nothing active, the round ends; the next waits out the interval.
        let (sweep, empty) = begun.sweep(at(10), (thirty, SECOND), 0);
        assert_eq!((sweep.budget, empty.after.as_deref()), (0, None));
        assert_eq!(empty.sweep(at(11), (thirty, SECOND), 1_000).0.budget, 0);
        assert_eq!(empty.sweep(at(30), (thirty, SECOND), 1_000).0.budget, 1);
        // Once it ended, the next begins only when the interval has passed since it began.
        let ended = Round {
            after: None,
            began: Some(t0),
            paced_to: Some(at(54)),
            took: 0,
        };
        assert_eq!(
            ended.sweep(at(59), (interval, SECOND), 10),
            (
                Sweep {
                    after: String::new(),
                    budget: 0
                },
                ended.clone()
            )
        );
        let (sweep, next) = ended.sweep(at(60), (interval, SECOND), 10);
        assert_eq!((sweep.budget, next.began), (1, Some(at(60))));
        // A round that overran its interval is followed at once.
        let overran = Round {
            after: None,
            began: Some(t0),
            paced_to: Some(at(90)),
            took: 0,
        };
        assert_eq!(budget(&overran, at(91), 10), 1);
        // A clock that went back begins the next round, or paces the one under way, from now.
        let (sweep, next) = ended.sweep(at(-5), (interval, SECOND), 10);
        assert_eq!((sweep.budget, next.began), (1, Some(at(-5))));
        let (sweep, paced) = under_way.sweep(at(-5), (interval, SECOND), 10);
        assert_eq!((sweep.budget, paced.paced_to), (0, Some(at(-5))));
        assert_eq!(budget(&paced, at(1), 10), 1);
        // No interval: every active server at every pass, a pass's most at a time.
        let none = std::time::Duration::ZERO;
        assert_eq!(
            ended.sweep(t0, (none, SECOND), 10).0.budget,
            ACTIVE_CHECKS_PER_PASS
        );
    }
}
