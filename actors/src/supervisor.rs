//! The supervisor: starts each object's actor on demand (spread over a few arbiter threads),
//! restarts one that fails with its state replayed, and routes the messages that cross objects:
//! a policy execution (policy → group) and a signed webhook call (webhook's signature and nonce
//! window → policy → group, which decides the whole route's liveness, its outcome, and records
//! both with the nonce in one append).

use std::any::Any;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use flotilla_journal::{Journal, StreamAppend};

use crate::aggregate::{Aggregate, Alarms, Groups, Policies, Receivers, Schedules, Webhooks};
use crate::clock::Clock;
use crate::clock::Timestamp;
use crate::domain::alarm::{Alarm, AlarmCommand};
use crate::domain::group::{GroupCommand, GroupEvent, Outcome};
use crate::domain::policy::Breach;
use crate::domain::receiver::{EpisodeKey, ReceiverCommand, ReceiverState};
use crate::domain::route::{self, Route, Via};
use crate::domain::scheduled::{Scheduled, ScheduledCommand};
use crate::domain::webhook::{Secret, WebhookCommand, WebhookState};
use crate::domain::{
    nonce_window, AlarmId, Cause, GroupId, PolicyId, ReceiverId, Rejection, ScheduleId, WebhookId,
};
use crate::error::Error;
use crate::object::{
    Admission, Along, Execute, ExecuteAlong, Executed, Get, Idle, LetGoIfIdle, Moved, Next,
    ObjectActor, Observed, SignatureCheck,
};
use crate::store;

/// How many times a call is decided again when the journal refused its append because another
/// node moved a stream the call had read (nothing was written; the stream's actor rebuilds).
/// Each refusal means another node's append went in, so a run of them is other calls making
/// progress, and a call answers 503 for it only after this many (SPEC 9 allows a 503 while a
/// group's lease changes hands, not for this). With one group's webhook calls spread over three
/// nodes, 3 tries left 1.3% of calls answered 503 (`cargo bench --bench load`, 3 nodes, no
/// affinity: 342 of 26,714).
pub const CONFLICT_TRIES: u32 = 10;

/// How long [`Supervisor::execute_in_live`] goes on trying a command on a group that keeps
/// moving between its read and the command's append.
pub const LIVE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// How the supervisor runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Allowed skew between a webhook call's timestamp and now (SPEC 4: 300 s by default).
    pub webhook_tolerance_seconds: u32,
    /// Most unexpired nonces one webhook remembers.
    pub nonce_window_capacity: usize,
    /// Arbiter threads hosting the actors.
    pub workers: usize,
    /// Seconds of the service clock without a message after which an actor stops when asked
    /// ([`Supervisor::let_go_of_idle`], at each tick of the service's idle sweep; its state
    /// comes back from the journal on its next message); `None` keeps every actor resident.
    pub idle_after_seconds: Option<u32>,
    /// On a shared database, the fence of a group's shard lease if this node holds it (see
    /// [`Fencing`]); `None` (alone with the journal) fences nothing.
    pub fencing: Option<Fencing>,
    /// The group an object belongs to, if it is known (see [`Placement`]); `None` spreads
    /// objects by their own ids.
    pub placement: Option<Placement>,
}

/// The group object `id` (a policy, webhook, alarm, schedule or receiver) belongs to, if known:
/// an object's actor is started on its group's arbiter, so that a route across a group's
/// objects (webhook → policy → group) asks actors on one thread, and crosses no thread until
/// its append. Where an object lives changes only where its work runs, never what it decides.
/// The price: a group's objects share one thread, so one very busy group's calls are not
/// spread over the arbiters. Asked with no lock of the supervisor's held; it must not call the
/// supervisor.
#[derive(Clone)]
pub struct Placement(pub Arc<GroupOf>);

/// See [`Placement`].
pub type GroupOf = dyn Fn(&str) -> Option<GroupId> + Send + Sync;

impl std::fmt::Debug for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Placement")
    }
}

/// Whether this node may do a group's owner's work at an instant, and under which fence:
/// `Some(Some(fence))` under its lease, `Some(None)` with no lease needed (alone with its
/// journal), `None` not at all (another node holds the group's shard).
#[derive(Clone)]
pub struct Fencing(
    #[allow(clippy::type_complexity)]
    pub  Arc<dyn Fn(&str, Timestamp) -> Option<Option<flotilla_journal::Fence>> + Send + Sync>,
);

impl std::fmt::Debug for Fencing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fencing")
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            webhook_tolerance_seconds: 300,
            nonce_window_capacity: nonce_window::DEFAULT_CAPACITY,
            workers: 2,
            idle_after_seconds: Some(600),
            fencing: None,
            placement: None,
        }
    }
}

/// What a policy execution came to, and the group's capacity after it (the journal's
/// `policy_executed` event holds the rest: its computation, breach and step).
#[derive(Debug, Clone)]
pub struct PolicyExecution {
    /// The executed policy.
    pub policy_id: PolicyId,
    /// Its group.
    pub group_id: GroupId,
    /// The outcome (executed, no change, cooldown, paused).
    pub outcome: Outcome,
    /// The group's desired capacity after the execution.
    pub desired_capacity: u32,
    /// The version of the stream whose part rode along (a webhook's nonce), if one did.
    pub along_version: Option<u64>,
}

/// Hands out actor addresses and routes cross-object messages. Cloning is cheap.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    journal: Journal,
    clock: Arc<dyn Clock>,
    config: Config,
    /// The arbiters and their threads' ids.
    arbiters: Vec<(Arbiter, Option<std::thread::ThreadId>)>,
    /// Object id → its actor.
    actors: Arc<Registry>,
}

/// A resident actor: its `Addr<ObjectActor<A>>` (of its id's kind), and a way to ask it, whatever
/// its kind, whether it is idle.
/// The resident actors, by object id.
type Registry = Mutex<Residents>;

/// Object id → its resident actor, hashed with foldhash: a webhook call looks up four of them.
type Residents = HashMap<String, Resident, foldhash::fast::RandomState>;

/// Tells resident actors that another writer moved their stream ([`Supervisor::mover`]),
/// holding the registry weakly: the journal's follower keeps it, and a strong handle there
/// would keep the supervisor, and through it the journal, alive for ever.
#[derive(Clone)]
pub struct Mover(std::sync::Weak<Registry>);

impl Mover {
    /// [`Supervisor::moved`], while the supervisor lives.
    pub fn moved(&self, id: &str, version: u64) {
        if let Some(registry) = self.0.upgrade() {
            let registry = registry
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(resident) = registry.get(id) {
                (resident.moved)(version);
            }
        }
    }
}

struct Resident {
    addr: Box<dyn Any + Send>,
    /// The arbiter it runs on.
    arbiter: usize,
    look: Box<dyn Fn() -> Next<()> + Send>,
    moved: Box<dyn Fn(u64) + Send>,
}

impl Drop for Inner {
    /// Stops the arbiters and waits for them, so every actor (and its journal handle) is gone
    /// when the last handle on the supervisor is. The last handle may be let go on an arbiter's
    /// own thread (by a route running there): that one is stopped, not waited for, since a
    /// thread cannot join itself; it ends once the route returns.
    fn drop(&mut self) {
        for (arbiter, _) in &self.arbiters {
            arbiter.stop();
        }
        let here = std::thread::current().id();
        for (arbiter, thread) in self.arbiters.drain(..) {
            if thread != Some(here) {
                let _ = arbiter.join();
            }
        }
    }
}

impl Supervisor {
    /// Starts the supervisor's arbiters. Must be called inside an actix system.
    pub fn start(journal: Journal, clock: Arc<dyn Clock>, config: Config) -> Supervisor {
        let arbiters = (0..config.workers.max(1))
            .map(|_| {
                let arbiter = Arbiter::new();
                let (tell, told) = std::sync::mpsc::channel();
                arbiter.spawn_fn(move || {
                    let _ = tell.send(std::thread::current().id());
                });
                (arbiter, told.recv().ok())
            })
            .collect();
        Supervisor {
            inner: Arc::new(Inner {
                journal,
                clock,
                config,
                arbiters,
                actors: Arc::new(Mutex::new(Residents::default())),
            }),
        }
    }

    /// The journal every actor appends to.
    pub fn journal(&self) -> &Journal {
        &self.inner.journal
    }

    /// The clock every decision is made with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Asks every resident actor whether it has been idle long enough (on the service clock)
    /// to let itself go, and waits for their answers (one tick of the service's idle sweep).
    /// Answers how many were asked.
    pub async fn let_go_of_idle(&self) -> usize {
        let looks: Vec<Next<()>> = self.registry().values().map(|r| (r.look)()).collect();
        let asked = looks.len();
        for look in looks {
            let _ = look.await;
        }
        asked
    }

    /// Tells object `id`'s actor, if resident, that its stream has a record at `version`: one
    /// another writer appended leaves it behind, and it rebuilds (see [`Moved`]). For a journal
    /// several nodes share.
    pub fn moved(&self, id: &str, version: u64) {
        self.mover().moved(id, version);
    }

    /// [`Supervisor::moved`] without a strong handle on the supervisor (see [`Mover`]).
    pub fn mover(&self) -> Mover {
        Mover(Arc::downgrade(&self.inner.actors))
    }

    /// The thread of the arbiter object `id`'s actor runs on, if it is resident.
    pub fn thread_of(&self, id: &str) -> Option<std::thread::ThreadId> {
        let arbiter = self.registry().get(id)?.arbiter;
        self.inner.arbiters[arbiter].1
    }

    /// How many object actors are resident.
    pub fn resident(&self) -> usize {
        self.registry().len()
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Residents> {
        // A panic while holding this lock cannot leave the map half-updated (single inserts and
        // removes), so a poisoned lock is still sound to use.
        self.inner
            .actors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The address of object `id`'s actor, started (and its state replayed) if it is not
    /// resident.
    pub fn address<A: Aggregate>(&self, id: &str) -> Result<Addr<ObjectActor<A>>, Error> {
        self.address_near::<A>(id, None)
    }

    /// [`Self::address`], started, if it is not resident, on the arbiter of group `near` (or of
    /// its [`Placement`], or of its own id).
    fn address_near<A: Aggregate>(
        &self,
        id: &str,
        near: Option<&GroupId>,
    ) -> Result<Addr<ObjectActor<A>>, Error> {
        let printable = id.bytes().all(|b| (0x21..=0x7e).contains(&b));
        if !id.starts_with(A::PREFIX) || !printable || flotilla_journal::MAX_NAME_LEN < id.len() {
            return Err(Rejection::not_found(A::KIND).into());
        }
        let live = |actors: &Residents| {
            actors
                .get(id)
                .and_then(|resident| resident.addr.downcast_ref::<Addr<ObjectActor<A>>>())
                .filter(|addr| addr.connected())
                .cloned()
        };
        if let Some(addr) = live(&self.registry()) {
            return Ok(addr);
        }
        // Placed with no lock of the registry held (the placement reads the index), then
        // looked for again under the lock it is inserted under: one actor an object.
        let index = self.home_of(id, near);
        let mut actors = self.registry();
        if let Some(addr) = live(&actors) {
            return Ok(addr);
        }
        let arbiter = &self.inner.arbiters[index].0;
        let (journal, clock, owned) = (
            self.inner.journal.clone(),
            self.inner.clock.clone(),
            id.to_owned(),
        );
        let idle = self.inner.config.idle_after_seconds.map(|seconds| {
            // A weak handle: an actor must not keep its supervisor alive.
            let registry = Arc::downgrade(&self.inner);
            Idle {
                after_ms: i64::from(seconds) * 1000,
                forget: Arc::new(move |id: &str, addr: &Addr<ObjectActor<A>>| {
                    if let Some(inner) = registry.upgrade() {
                        Supervisor { inner }.forget(id, addr);
                    }
                }),
            }
        });
        let fencing = self.inner.config.fencing.clone();
        let addr = actix::Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
            ObjectActor::<A>::new(owned, journal, clock)
                .idling(idle)
                .fenced(fencing)
        });
        let asked = addr.clone();
        let look = Box::new(move || -> Next<()> {
            let asked = asked.send(LetGoIfIdle);
            Box::pin(async move {
                let _ = asked.await;
                Ok(())
            })
        });
        let told = addr.clone();
        let moved = Box::new(move |version| told.do_send(Moved(version)));
        let resident = Resident {
            addr: Box::new(addr.clone()),
            arbiter: index,
            look,
            moved,
        };
        actors.insert(id.to_owned(), resident);
        Ok(addr)
    }

    /// The arbiter object `id`'s actor is started on: group `near`'s if given, else its group's
    /// if its [`Placement`] knows it, else its own id's.
    fn home_of(&self, id: &str, near: Option<&GroupId>) -> usize {
        let placement = self.inner.config.placement.as_ref();
        let group = near
            .cloned()
            .or_else(|| placement.and_then(|placement| (placement.0)(id)));
        self.worker_of(group.as_ref().map_or(id, GroupId::as_str))
    }

    /// The arbiter object `id`'s actor runs on if it is resident, else the one it would be
    /// started on.
    fn arbiter_of(&self, id: &str) -> usize {
        let resident = self.registry().get(id).map(|resident| resident.arbiter);
        resident.unwrap_or_else(|| self.home_of(id, None))
    }

    fn worker_of(&self, id: &str) -> usize {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        (hasher.finish() % self.inner.arbiters.len() as u64) as usize
    }

    /// Sends `message` to object `id`'s actor; if that actor is gone for good, starts it again
    /// (replaying its state) and sends once more.
    async fn ask<A, M>(&self, id: &str, message: impl Fn() -> M) -> Result<M::Result, Error>
    where
        A: Aggregate,
        M: Message + Send + 'static,
        M::Result: Send,
        ObjectActor<A>: Handler<M>,
        <ObjectActor<A> as Actor>::Context: actix::dev::ToEnvelope<ObjectActor<A>, M>,
    {
        for _ in 0..2 {
            if let Some(result) = self.ask_once::<A, _>(id, message()).await? {
                return Ok(result);
            }
        }
        Err(Error::Unavailable)
    }

    /// Sends `message` to object `id`'s actor once. Answers `None` if that actor was gone for
    /// good: it is forgotten, so the next ask starts it again.
    async fn ask_once<A, M>(&self, id: &str, message: M) -> Result<Option<M::Result>, Error>
    where
        A: Aggregate,
        M: Message + Send + 'static,
        M::Result: Send,
        ObjectActor<A>: Handler<M>,
        <ObjectActor<A> as Actor>::Context: actix::dev::ToEnvelope<ObjectActor<A>, M>,
    {
        let addr = self.address::<A>(id)?;
        match addr.send(message).await {
            Ok(result) => Ok(Some(result)),
            Err(MailboxError::Closed | MailboxError::Timeout) => {
                tracing::warn!(kind = A::KIND, object = id, "actor gone; starting it again");
                self.forget(id, &addr);
                Ok(None)
            }
        }
    }

    /// Forgets `addr` as object `id`'s actor, unless another caller has already put a successor
    /// in its place: forgetting that one would leave two live actors for one object.
    fn forget<A: Aggregate>(&self, id: &str, addr: &Addr<ObjectActor<A>>) {
        let mut actors = self.registry();
        let registered = actors
            .get(id)
            .and_then(|resident| resident.addr.downcast_ref::<Addr<ObjectActor<A>>>());
        if registered == Some(addr) {
            actors.remove(id);
        }
    }

    /// Runs `command` against object `id`; decided again if another node moved its stream
    /// meanwhile (see [`CONFLICT_TRIES`]). A command is decided on the state its object's actor
    /// holds then, so one must not carry what was read of that state before (a list to write
    /// back, a count to act on): a command of this node's in between, or another node's, would
    /// be undone. Commands that need such a thing say it as a rule their `decide` applies (a
    /// group's `DeleteServers` takes no more than the excess over its target).
    pub async fn execute<A: Aggregate>(
        &self,
        id: &str,
        command: A::Command,
    ) -> Result<Executed<A>, Error> {
        let command = &command;
        self.retrying(id, || async move {
            self.ask::<A, _>(id, || Execute::<A>(command.clone()))
                .await?
        })
        .await
    }

    /// Runs `attempt` again while the journal refuses it because another node moved stream `id`
    /// (nothing was written; `id`'s actor is told to rebuild), at most [`CONFLICT_TRIES`]
    /// times in all.
    async fn retrying<T, F, Fut>(&self, id: &str, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let mut tries = 1;
        loop {
            match attempt().await {
                Err(Error::Journal(flotilla_journal::Error::Conflict {
                    stream, actual, ..
                })) if stream == id && tries < CONFLICT_TRIES => {
                    self.moved(id, actual);
                    tries += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// [`Self::execute`] for an object of group `group` whose actor may not be resident yet:
    /// started on its group's arbiter (a new object, which its [`Placement`] cannot know yet).
    pub async fn execute_in<A: Aggregate>(
        &self,
        group: &GroupId,
        id: &str,
        command: A::Command,
    ) -> Result<Executed<A>, Error> {
        // Started here once; from then on `ask` finds it resident.
        self.address_near::<A>(id, Some(group))?;
        self.execute::<A>(id, command).await
    }

    /// [`Self::execute_in`] while group `group` is live: the command's append holds the group's
    /// stream to the version at which it was read live ([`store::unchanged`]), so a deletion
    /// of the group in between refuses it, and it is tried again, the group read again each
    /// time. A busy group (a webhook's executions, the converger's reports) moves its stream
    /// often, so it is tried again for as long as the group is live and moving, for at most
    /// [`LIVE_PATIENCE`] of real time. A group deleted, or never made, is `not_found("group")`.
    /// A child of a group (its policy, alarm, webhook, schedule or receiver) is made or changed
    /// this way, so none is ever recorded after its group's deletion.
    pub async fn execute_in_live<A: Aggregate>(
        &self,
        group: &GroupId,
        id: &str,
        command: A::Command,
    ) -> Result<Executed<A>, Error> {
        self.address_near::<A>(id, Some(group))?;
        let patience = std::time::Instant::now() + LIVE_PATIENCE;
        loop {
            let observed = self.get::<Groups>(group.as_str()).await?;
            if observed.state.as_ref().is_none_or(|g| g.deleted) {
                return Err(Rejection::not_found("group").into());
            }
            let live = store::unchanged(group.as_str(), observed.version);
            let command = &command;
            let executed = self
                .retrying(id, || {
                    let along = vec![live.clone()];
                    async move {
                        self.ask::<A, _>(id, || ExecuteAlong::<A>(command.clone(), along.clone()))
                            .await?
                    }
                })
                .await;
            match executed {
                Err(Error::Journal(flotilla_journal::Error::Conflict {
                    stream, actual, ..
                })) if stream == group.as_str() && std::time::Instant::now() < patience => {
                    // The group moved since it was read (another node's append, or its own
                    // work): read again.
                    self.moved(group.as_str(), actual);
                }
                outcome => return outcome,
            }
        }
    }

    /// Object `id`'s current state.
    pub async fn get<A: Aggregate>(&self, id: &str) -> Result<Observed<A>, Error> {
        self.ask::<A, _>(id, Get::<A>::default).await?
    }

    /// Executes a policy against its group: the group's actor decides (the route's liveness,
    /// bounds, cooldown, pause) and records the outcome, whatever it is.
    pub async fn execute_policy(
        &self,
        policy_id: &PolicyId,
        cause: Cause,
        breach: Option<Breach>,
    ) -> Result<PolicyExecution, Error> {
        let id = policy_id.clone();
        self.on_arbiter_of(policy_id.as_str(), move |this| async move {
            this.execute_policy_here(&id, cause, breach, None, None)
                .await
        })
        .await
    }

    /// [`Self::execute_policy`], on the calling thread, for a call that came through `via`;
    /// with `along` (a webhook's nonce, an alarm's record of its action) the group's append
    /// carries it too, all or none.
    ///
    /// The group decides with the policy as it was read, so the append also holds the policy's
    /// stream to the version read ([`store::unchanged`]): a policy deleted or changed in
    /// between refuses it, and the execution is decided again with the policy as it now is.
    async fn execute_policy_here(
        &self,
        policy_id: &PolicyId,
        cause: Cause,
        breach: Option<Breach>,
        via: Option<Via>,
        along: Option<StreamAppend>,
    ) -> Result<PolicyExecution, Error> {
        let (mut attempts, mut resent) = (0, false);
        loop {
            attempts += 1;
            let observed = self.get::<Policies>(policy_id.as_str()).await?;
            let route = Route {
                policy_id: policy_id.clone(),
                policy: observed.state,
                via: via.clone(),
            };
            let Some(group_id) = route.policy.as_ref().map(|policy| policy.group_id.clone()) else {
                // No policy, no group to ask: the domain names the dead link all the same.
                let dead = route::check(&route, &None).err();
                return Err(dead
                    .unwrap_or_else(|| Rejection::not_found("policy"))
                    .into());
            };
            let mut parts: Vec<StreamAppend> = along.iter().cloned().collect();
            parts.push(store::unchanged(policy_id.as_str(), observed.version));
            let command = GroupCommand::ExecutePolicy {
                route,
                cause: cause.clone(),
                breach,
            };
            let group = group_id.as_str();
            // Sent, not cloned for a second send: a group actor found gone is started again by
            // one more try, which reads the policy again too. That try is not one of those
            // conflicts spend, as `ask` sends any message a second time.
            let executed = match self
                .ask_once::<Groups, _>(group, ExecuteAlong(command, parts))
                .await?
            {
                Some(executed) => executed,
                None if !resent => {
                    (attempts, resent) = (attempts - 1, true);
                    continue;
                }
                None => return Err(Error::Unavailable),
            };
            let executed = match executed {
                Err(error)
                    if error.conflict_on() == Some(policy_id.as_str())
                        && attempts < CONFLICT_TRIES =>
                {
                    // Another node moved the policy: its actor rebuilds before the next try,
                    // rather than at this node's next read of the journal.
                    if let Error::Journal(flotilla_journal::Error::Conflict { actual, .. }) = error
                    {
                        self.moved(policy_id.as_str(), actual);
                    }
                    continue;
                }
                // Another node moved the group: nothing was written, and the group's actor has
                // stopped to rebuild from the journal; decided again on what it finds there.
                Err(error) if error.conflict_on() == Some(group) && attempts < CONFLICT_TRIES => {
                    continue
                }
                executed => executed?,
            };
            let desired_capacity = executed
                .state
                .as_ref()
                .map(|group| group.desired_capacity)
                .ok_or_else(|| Rejection::not_found("group"))?;
            let along_version = along.as_ref().and(executed.along_version);
            let Some(GroupEvent::PolicyExecuted { outcome, .. }) =
                executed.events.into_iter().next()
            else {
                return Err(Rejection::not_found("group").into());
            };
            return Ok(PolicyExecution {
                policy_id: policy_id.clone(),
                group_id,
                outcome,
                desired_capacity,
                along_version,
            });
        }
    }

    /// A signed webhook call: the webhook's actor checks the signature against its valid
    /// secrets, then the timestamp and nonce windows; a call that passed them all is then
    /// `admit`ted (the per-webhook rate limit); then its policy is executed, with the webhook as
    /// cause, and the group's append carries the nonce: both are durable when this returns, or
    /// neither is. A delivery that meets a stopping actor is sent again, like any other message.
    ///
    /// Asked from any thread: the rest of the route (the policy's read, the group's execution)
    /// runs in the webhook's actor, on its arbiter, so the call crosses threads there and back
    /// once, as through [`Self::on_arbiter_of`], without a task spawned to do it. The same holds
    /// for the other routes that start with an [`Along`] (an alarm's action, a receiver's
    /// notification, a scheduled action). On any of them, a retry after a conflict or a gone
    /// actor, and the follow-up that records a dead route (an alarm's, a receiver's), cross
    /// again.
    pub async fn deliver_webhook(
        &self,
        webhook_id: &WebhookId,
        check: SignatureCheck,
        admit: Option<Admission>,
    ) -> Result<PolicyExecution, Error> {
        let (tolerance_seconds, window_capacity) = (
            self.inner.config.webhook_tolerance_seconds,
            self.inner.config.nonce_window_capacity,
        );
        let command = Arc::new(move |state: &WebhookState, now| {
            // An unknown webhook has no secret a signature could be checked against.
            let webhook = state
                .as_ref()
                .ok_or_else(|| Rejection::not_found("webhook"))?;
            let secrets: Vec<Secret> = webhook.valid_secrets(now).cloned().collect();
            let signed = check(&secrets)?;
            let via = Via {
                webhook_id: webhook.id.clone(),
                policy_id: webhook.policy_id.clone(),
                revoked: webhook.revoked,
            };
            let accept = WebhookCommand::AcceptNonce {
                nonce: signed.nonce,
                timestamp: signed.timestamp,
                tolerance_seconds,
                window_capacity,
            };
            Ok((accept, (via, signed.breach)))
        });
        let this = self.clone();
        let then = Arc::new(
            move |(via, breach): (Via, Option<Breach>), nonce: StreamAppend| -> Next<_> {
                let (this, admit) = (this.clone(), admit.clone());
                Box::pin(async move {
                    if let Some(admit) = admit {
                        admit()?;
                    }
                    let cause = Cause::Webhook {
                        webhook_id: via.webhook_id.clone(),
                    };
                    let policy_id = via.policy_id.clone();
                    let execution = this
                        .execute_policy_here(&policy_id, cause, breach, Some(via), Some(nonce))
                        .await?;
                    let version = execution
                        .along_version
                        .ok_or_else(|| Rejection::not_found("webhook"))?;
                    Ok((execution, version))
                })
            },
        );
        let along: Along<Webhooks, (Via, Option<Breach>), PolicyExecution> =
            Along { command, then };
        // Another node accepted a nonce of this webhook meanwhile: nothing was written; the
        // webhook's actor rebuilds, and the call is decided again (a replay of the nonce the
        // other node accepted is then refused as such).
        let (id, along) = (webhook_id.as_str(), &along);
        self.retrying(id, || async move {
            self.ask::<Webhooks, _>(id, || along.clone()).await?
        })
        .await
    }

    /// Takes action `policy_id` of alarm `alarm_id`'s transition number `transition` (SPEC 5,
    /// exactly once): the alarm records the action taken as its nonce, in the same append as the
    /// policy's execution, so a crash leaves both or neither, and a second attempt is refused
    /// ([`Rejection::Replayed`]) by the alarm. An action whose route is dead (its policy
    /// deleted, say) is recorded as taken alone, so it is not tried for ever.
    pub async fn take_alarm_action(
        &self,
        alarm_id: &AlarmId,
        transition: u64,
        policy_id: &PolicyId,
    ) -> Result<PolicyExecution, Error> {
        let take = AlarmCommand::TakeAction {
            transition,
            policy_id: policy_id.clone(),
        };
        let command = {
            let take = take.clone();
            Arc::new(move |state: &Option<Alarm>, _| {
                let reason = state.as_ref().map(|a| a.state_reason.clone());
                // The deciding datapoint against the threshold: a step policy's breach.
                let breach = state.as_ref().and_then(|a| {
                    a.state_value.map(|metric_value| Breach {
                        metric_value,
                        breach_threshold: a.definition.threshold,
                    })
                });
                Ok((take.clone(), (reason.unwrap_or_default(), breach)))
            })
        };
        let this = self.clone();
        let (alarm, policy) = (alarm_id.clone(), policy_id.clone());
        let then = Arc::new(
            move |(reason, breach): (String, Option<Breach>), taken: StreamAppend| -> Next<_> {
                let (this, alarm, policy) = (this.clone(), alarm.clone(), policy.clone());
                Box::pin(async move {
                    let cause = Cause::Alarm {
                        alarm_id: alarm,
                        reason,
                    };
                    let execution = this
                        .execute_policy_here(&policy, cause, breach, None, Some(taken))
                        .await?;
                    let version = execution
                        .along_version
                        .ok_or_else(|| Rejection::not_found("alarm"))?;
                    Ok((execution, version))
                })
            },
        );
        let along: Along<Alarms, (String, Option<Breach>), PolicyExecution> =
            Along { command, then };
        let taken = self
            .ask::<Alarms, _>(alarm_id.as_str(), || along.clone())
            .await?;
        let done_with = match &taken {
            // Nothing to execute.
            Err(Error::Rejected(Rejection::NotFound { object })) => *object != "alarm",
            // A step policy with no datapoint to choose its step by (a transition without
            // one): trying again would not give it one.
            Err(Error::Rejected(Rejection::MetricValueRequired)) => true,
            // A policy that cannot be executed on demand (target tracking): nor later.
            Err(Error::Rejected(Rejection::Conflict { .. })) => true,
            _ => false,
        };
        if done_with {
            self.execute::<Alarms>(alarm_id.as_str(), take).await?;
        }
        taken
    }

    /// Handles one alert of an Alertmanager notification on receiver `receiver_id` (SPEC 5.3,
    /// exactly once per episode step): the receiver records the episode's first firing (or
    /// resolution) in the same append as its policy's execution. Answers the execution, or
    /// `None` when there is nothing to do: a step already handled, or a resolution of an
    /// episode never seen firing. A step whose policy cannot execute (deleted, say) is recorded
    /// alone, so a repeat does not try it again.
    pub async fn notify_receiver(
        &self,
        receiver_id: &ReceiverId,
        firing: bool,
        key: EpisodeKey,
        alertname: String,
    ) -> Result<Option<PolicyExecution>, Error> {
        let step = if firing {
            ReceiverCommand::Fire(key.clone())
        } else {
            ReceiverCommand::Resolve(key.clone())
        };
        let cause = Cause::Alertmanager {
            receiver_id: receiver_id.clone(),
            alertname,
            fingerprint: key.fingerprint.clone(),
        };
        let command = {
            let step = step.clone();
            Arc::new(move |state: &ReceiverState, _| {
                let receiver = state
                    .as_ref()
                    .filter(|r| !r.deleted)
                    .ok_or_else(|| Rejection::not_found("receiver"))?;
                let policy = if firing {
                    Some(receiver.firing.clone())
                } else {
                    receiver.resolved.clone()
                };
                Ok((step.clone(), policy))
            })
        };
        let this = self.clone();
        let then = Arc::new(
            move |policy: Option<PolicyId>, taken: StreamAppend| -> Next<_> {
                let (this, cause) = (this.clone(), cause.clone());
                Box::pin(async move {
                    // No resolved policy: the resolution is recorded, nothing executes.
                    let Some(policy) = policy else {
                        return Err(Rejection::not_found("policy").into());
                    };
                    let execution = this
                        .execute_policy_here(&policy, cause, None, None, Some(taken))
                        .await?;
                    let version = execution
                        .along_version
                        .ok_or_else(|| Rejection::not_found("receiver"))?;
                    Ok((execution, version))
                })
            },
        );
        let along: Along<Receivers, Option<PolicyId>, PolicyExecution> = Along { command, then };
        // Another node handled a notification for this receiver meanwhile: decided again on
        // what it recorded.
        let (id, along) = (receiver_id.as_str(), &along);
        let handled = self
            .retrying(id, || async move {
                self.ask::<Receivers, _>(id, || along.clone()).await?
            })
            .await;
        match handled {
            Ok(execution) => Ok(Some(execution)),
            Err(Error::Rejected(Rejection::Replayed)) => Ok(None),
            Err(Error::Rejected(Rejection::NotFound { object: "episode" })) => Ok(None),
            // Nothing to execute, or a policy that cannot be executed on demand: the step is
            // done with all the same.
            Err(Error::Rejected(
                Rejection::NotFound {
                    object: "policy" | "group",
                }
                | Rejection::MetricValueRequired
                | Rejection::Conflict { .. },
            )) => match self.execute::<Receivers>(receiver_id.as_str(), step).await {
                Ok(_) | Err(Error::Rejected(Rejection::Replayed)) => Ok(None),
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        }
    }

    /// Runs `occurrence` of scheduled action `schedule_id` on its group (SPEC 2.2, exactly
    /// once): the action records the occurrence in the same append as the group's record of
    /// it, so a crash leaves both or neither, and a second attempt is refused
    /// ([`Rejection::Replayed`]) by the action. Answers the group's event.
    pub async fn run_schedule(
        &self,
        schedule_id: &ScheduleId,
        occurrence: Timestamp,
    ) -> Result<GroupEvent, Error> {
        let command = Arc::new(move |state: &Option<Scheduled>, _| {
            let scheduled = state
                .clone()
                .ok_or_else(|| Rejection::not_found("schedule"))?;
            Ok((ScheduledCommand::Run { occurrence }, scheduled))
        });
        let this = self.clone();
        let then = Arc::new(
            move |scheduled: Scheduled, ran: StreamAppend| -> Next<(GroupEvent, u64)> {
                let this = this.clone();
                Box::pin(async move {
                    let group = scheduled.group_id.clone();
                    let command = GroupCommand::RunSchedule {
                        scheduled: Box::new(scheduled),
                        occurrence,
                    };
                    let executed = this
                        .ask::<Groups, _>(group.as_str(), || {
                            ExecuteAlong(command.clone(), vec![ran.clone()])
                        })
                        .await??;
                    let version = executed
                        .along_version
                        .ok_or_else(|| Rejection::not_found("schedule"))?;
                    let event = executed
                        .events
                        .into_iter()
                        .next()
                        .ok_or_else(|| Rejection::not_found("group"))?;
                    Ok((event, version))
                })
            },
        );
        let along: Along<Schedules, Scheduled, GroupEvent> = Along { command, then };
        self.ask::<Schedules, _>(schedule_id.as_str(), || along.clone())
            .await?
    }

    /// Runs `work` on the arbiter that hosts object `id`'s actor and answers its outcome. A
    /// route across several actors (a policy read, then its group's execution) is a chain of
    /// asks; asked from an HTTP worker each ask crosses threads twice, asked from an arbiter the
    /// asks to the actors it hosts stay on that thread: the first always, and the others too
    /// when they were placed with their group ([`Placement`]), as they are unless started before
    /// the service knew their group. (A route that starts with an [`Along`] needs none of this:
    /// its next steps run in the first actor, on its arbiter.)
    async fn on_arbiter_of<F, Fut, T>(&self, id: &str, work: F) -> Result<T, Error>
    where
        F: FnOnce(Supervisor) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, Error>> + Send + 'static,
        T: Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let this = self.clone();
        let arbiter = &self.inner.arbiters[self.arbiter_of(id)].0;
        // Not spawned only when the arbiter is stopping: the answer is then dropped, and the
        // caller told the object is unavailable.
        arbiter.spawn(async move {
            let _ = answer.send(work(this).await);
        });
        answered.await.map_err(|_| Error::Unavailable)?
    }
}
