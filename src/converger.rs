//! The converger (SPEC 6): at each tick (see [`crate::ticks`]), every group's servers are
//! reconciled with its desired capacity, at the injected clock's now, so backoffs and start
//! latencies are tested with a manual clock and manual ticks.
//!
//! One pass over a group:
//! 1. [`plan`] (pure, in the domain) says what the group needs;
//! 2. excess slots are marked for deletion, in the termination order (`delete_servers`);
//! 3. the provider deletes the servers being deleted, and is asked about the pending and active
//!    ones; pending servers whose launch was never recorded (a restart came between) fail;
//!    what it says is recorded (`report_servers`);
//! 4. new slots, and failed ones whose backoff ran out, are asked of the group
//!    (`launch_servers`), which records each it allows; only those are launched, each with a
//!    fresh metrics token whose hash the launch event records, and their outcome is recorded.
//!
//! Every step is a command to the group's actor, so the group's one actor serializes its
//! capacity and its servers, and each step is an event of its stream. A group's passes never
//! overlap (a lock per group; a tick skips a group whose pass is still running).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use flotilla_actors::aggregate::Groups;
use flotilla_actors::domain::group::{GroupCommand, GroupEvent, LaunchRequest, ServerReport};
use flotilla_actors::domain::server::plan;
use flotilla_actors::domain::GroupId;
use flotilla_actors::error::Error;
use flotilla_actors::object::Executed;
use flotilla_actors::supervisor::Supervisor;
use serde_json::Value;

use crate::index::Index;
use crate::providers::{Launch, Providers, Status};
use crate::service::Readiness;
use crate::ticks::Ticker;
use crate::token;

/// What one pass did, for tests and benches.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Launches attempted.
    pub launched: usize,
    /// Servers deleted by the provider.
    pub deleted: usize,
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
        let id = GroupId::new(id);
        let mut sets = self.sets();
        sets.idle.remove(&id);
        sets.changed.insert(id);
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
        }
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

    async fn pass(&self, id: &GroupId) -> Result<Pass, Error> {
        let mut pass = Pass::default();
        self.quiet().changed.remove(id);
        let Some(group) = self.supervisor.get::<Groups>(id.as_str()).await?.state else {
            return Ok(pass);
        };
        if group.deleted || (group.servers.is_empty() && group.target() == 0) {
            let mut quiet = self.quiet();
            if !quiet.changed.contains(id) {
                quiet.idle.insert(id.clone());
            }
            return Ok(pass);
        }
        let config = group.launch.clone();
        let Some(blocking) = self
            .providers
            .of(&config)
            .map(super::providers::Provider::blocks)
        else {
            return Ok(pass);
        };
        let now = self.supervisor.clock().now();
        let plan = plan(&group.servers, group.target(), now);

        let mut delete = plan.delete;
        if !plan.remove.is_empty() {
            let executed = self
                .execute(id, GroupCommand::DeleteServers(plan.remove))
                .await?;
            pass.events += executed.events.len();
            if let Some(group) = &executed.state {
                for event in &executed.events {
                    if let GroupEvent::ServerDeleteRequested { server_id, .. } = event {
                        let handle = group.servers.get(server_id).map(|s| s.provider.clone());
                        delete.push((server_id.clone(), handle.unwrap_or(Value::Null)));
                    }
                }
            }
        }

        // The provider: deletes, then statuses, then the remains of failed slots.
        let stale: Vec<Value> = plan
            .relaunch
            .iter()
            .filter_map(|sid| group.servers.get(sid))
            .map(|s| s.provider.clone())
            .filter(|h| !h.is_null())
            .collect();
        let watch = plan.watch;
        let (reports, deleted) = {
            let providers = self.providers.clone();
            let config = config.clone();
            self.call(blocking, move || {
                let provider = providers.of(&config).expect("checked above");
                let mut reports = Vec::new();
                let mut deleted = 0;
                for (server_id, handle) in delete {
                    let gone = handle.is_null() || provider.delete(&config, &handle).is_ok();
                    if gone {
                        deleted += 1;
                        reports.push(ServerReport::Deleted { server_id });
                    } else {
                        tracing::warn!(server = %server_id, "delete failed; retrying next pass");
                    }
                }
                for (server_id, state, handle) in watch {
                    match provider.status(&config, &handle) {
                        Status::Running
                            if state == flotilla_actors::domain::server::ServerState::Pending =>
                        {
                            reports.push(ServerReport::Active { server_id });
                        }
                        Status::Exited => reports.push(ServerReport::Failed {
                            server_id,
                            reason: "exited".into(),
                        }),
                        _ => {}
                    }
                }
                for handle in stale {
                    let _ = provider.delete(&config, &handle);
                }
                (reports, deleted)
            })
            .await
        };
        pass.deleted = deleted;
        let mut reports = reports;
        reports.extend(
            plan.resume
                .into_iter()
                .map(|server_id| ServerReport::Failed {
                    server_id,
                    reason: "launch interrupted by a restart of flotilla".into(),
                }),
        );
        if !reports.is_empty() {
            pass.events += self
                .execute(id, GroupCommand::ReportServers(reports))
                .await?
                .events
                .len();
        }

        // Launches.
        let mut ids = plan.relaunch;
        ids.extend((0..plan.launch_new).map(|_| new_server_id()));
        if ids.is_empty() {
            return Ok(pass);
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
        pass.events += executed.events.len();
        let launches: Vec<Launch> = executed
            .events
            .iter()
            .filter_map(|event| match event {
                GroupEvent::ServerLaunchRequested { server_id, .. } => Some(Launch {
                    group_id: id.clone(),
                    server_id: server_id.clone(),
                    config: config.clone(),
                    metrics_url: self.metrics_url.clone(),
                    metrics_token: tokens[server_id].clone(),
                }),
                _ => None,
            })
            .collect();
        pass.launched = launches.len();
        let providers = self.providers.clone();
        let reports = self
            .call(blocking, move || {
                let provider = providers.of(&config).expect("checked above");
                launches
                    .into_iter()
                    .map(|launch| match provider.launch(&launch) {
                        Ok(provider) => ServerReport::Launched {
                            server_id: launch.server_id,
                            provider,
                        },
                        Err(error) => {
                            tracing::warn!(group = %launch.group_id, server = %launch.server_id, %error, "launch failed");
                            ServerReport::Failed {
                                server_id: launch.server_id,
                                reason: error.0,
                            }
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        if !reports.is_empty() {
            pass.events += self
                .execute(id, GroupCommand::ReportServers(reports))
                .await?
                .events
                .len();
        }
        Ok(pass)
    }

    /// Runs provider calls on a blocking thread, unless the group's provider never blocks.
    async fn call<T: Send + 'static>(
        &self,
        blocking: bool,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        if !blocking {
            return work();
        }
        match actix_web::rt::task::spawn_blocking(work).await {
            Ok(value) => value,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
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
                    let quiet = self.quiet();
                    let mut groups = self.index.all_groups();
                    groups.retain(|id| !quiet.idle.contains(id));
                    groups
                };
                for id in due {
                    let lock = self.lock_of(&id);
                    let Ok(held) = lock.try_lock_owned() else {
                        continue;
                    };
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

fn new_server_id() -> String {
    format!("srv_{}", uuid_like())
}

/// 32 hex digits of randomness.
fn uuid_like() -> String {
    let token = token::generate("");
    token::hash(&token)[..32].to_owned()
}
