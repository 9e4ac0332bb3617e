//! The actor that hosts one object: its state is rebuilt from the journal when it starts (and
//! when its supervisor restarts it), and each command is decided, appended, applied and answered
//! before the next message is looked at.

use std::sync::Arc;

use actix::prelude::*;
use flotilla_journal::{Error as JournalError, Journal, StreamAppend};

use crate::aggregate::Aggregate;
use crate::clock::{Clock, Timestamp};
use crate::domain::webhook::Secret;
use crate::error::Error;
use crate::store;

/// Messages waiting for one object before senders are made to wait (backpressure).
pub const MAILBOX_CAPACITY: usize = 64;

/// An object's actor.
pub struct ObjectActor<A: Aggregate> {
    id: String,
    journal: Journal,
    clock: Arc<dyn Clock>,
    state: A::State,
    version: u64,
    snapshot_version: u64,
    /// What it keeps of its last snapshot saved in parts (see [`store::Split`]).
    parts: store::KeptParts,
    /// Why the state could not be rebuilt, if it could not: every message is then refused.
    broken: Option<String>,
    restarts: u64,
    /// When it last handled a message, on the service clock.
    last_used: Timestamp,
    /// Stops itself once idle this long (see [`Idle`]).
    idle: Option<Idle<A>>,
    /// Whether this node may do a group's owner's work, and under which fence.
    fencing: Option<crate::supervisor::Fencing>,
}

/// How an idle actor lets itself go: asked ([`LetGoIfIdle`], at each tick of the service's idle
/// sweep), it looks whether it has handled nothing for `after_ms` of the service clock; if so it
/// is forgotten by its supervisor and stops, and its state comes back from its snapshot and
/// journal on its next message. Memory then follows the objects in use, not all of them.
pub struct Idle<A: Aggregate> {
    /// Clock milliseconds without a message before it stops.
    pub after_ms: i64,
    /// Forgets this actor's address in the supervisor's registry (if it is still the one there).
    pub forget: Forget<A>,
}

/// See [`Idle::forget`].
pub type Forget<A> = Arc<dyn Fn(&str, &Addr<ObjectActor<A>>) + Send + Sync>;

impl<A: Aggregate> ObjectActor<A> {
    /// An actor for object `id`; its state is loaded when it starts.
    pub fn new(id: String, journal: Journal, clock: Arc<dyn Clock>) -> Self {
        ObjectActor {
            id,
            journal,
            clock,
            state: A::State::default(),
            version: 0,
            snapshot_version: 0,
            parts: None,
            broken: None,
            restarts: 0,
            last_used: Timestamp::EPOCH,
            idle: None,
            fencing: None,
        }
    }

    /// The actor, doing a group's owner's work only under `fencing`'s say.
    pub fn fenced(mut self, fencing: Option<crate::supervisor::Fencing>) -> Self {
        self.fencing = fencing;
        self
    }

    /// The actor, stopping itself once idle as `idle` says.
    pub fn idling(mut self, idle: Option<Idle<A>>) -> Self {
        self.idle = idle;
        self
    }

    /// Notes that a message is being handled now.
    fn touch(&mut self) {
        self.last_used = self.clock.now();
    }

    /// Stops the actor if it has been idle long enough and is not in the middle of a command.
    fn let_go_if_idle(&mut self, ctx: &mut Context<Self>) {
        let Some(idle) = &self.idle else { return };
        let idle_for = self.clock.now().saturating_sub(self.last_used);
        if idle_for < idle.after_ms || ctx.waiting() {
            return;
        }
        (idle.forget)(&self.id, &ctx.address());
        tracing::debug!(kind = A::KIND, object = %self.id, "idle; stopping");
        ctx.stop();
    }

    fn rebuild(&mut self) {
        match store::load::<A>(&self.journal, &self.id) {
            Ok(loaded) => {
                self.state = loaded.state;
                self.version = loaded.version;
                self.snapshot_version = loaded.snapshot_version;
                self.parts = loaded.parts;
                self.broken = None;
            }
            Err(error) => {
                tracing::error!(kind = A::KIND, object = %self.id, %error, "state cannot be rebuilt");
                self.broken = Some(error.to_string());
            }
        }
    }

    /// Whether the state is usable; a state that could not be rebuilt is tried again first (the
    /// fault may have been passing).
    fn usable(&mut self) -> bool {
        if self.broken.is_some() {
            self.rebuild();
        }
        self.broken.is_none()
    }

    /// Decide, append (with `along`, other streams' parts, all or none), apply, reply: the one
    /// path every command takes.
    fn run(&mut self, command: A::Command, now: Timestamp, along: Vec<StreamAppend>) -> Reply<A> {
        if !self.usable() {
            return ready(Err(Error::Unavailable));
        }
        // The owner's work is refused here unless this node holds the group's lease, and its
        // append carries the lease's token, refused by the journal once the lease passed on.
        let fence = match (A::leased_by(&self.id, &self.state, &command), &self.fencing) {
            (Some(group), Some(fencing)) => match (fencing.0)(&group, now) {
                Some(fence) => fence,
                None => return ready(Err(Error::NotOwner(group))),
            },
            _ => None,
        };
        let events = match A::decide(&self.state, &command, now) {
            Ok(events) => events,
            Err(rejection) => return ready(Err(rejection.into())),
        };
        if events.is_empty() && along.is_empty() {
            return ready(Ok(self.executed(events, None)));
        }
        let (journal, id, version) = (self.journal.clone(), self.id.clone(), self.version);
        let append = {
            let events = events.clone();
            async move { store::append::<A>(&journal, &id, version, &events, now, along, fence).await }
        };
        AtomicResponse::new(Box::pin(append.into_actor(self).map(
            move |appended, actor, ctx| match appended {
                Ok((appended, along)) => {
                    actor.appended(&events, appended.version);
                    Ok(actor.executed(events, along.first().map(|a| a.version)))
                }
                // Another part's stream moved, or the lease passed on: nothing was written, and
                // this object's state is as it was.
                Err(error)
                    if error.conflict_on().is_some_and(|stream| stream != actor.id)
                        || matches!(error, Error::Journal(JournalError::Fenced { .. })) =>
                {
                    Err(error)
                }
                Err(error) => {
                    // The journal's outcome is unknown (or the stream moved under us): stop, and
                    // let the supervisor restart this actor with its state replayed from disk.
                    // Its stream moving is ordinary when several nodes share the journal.
                    if error.conflict_on() == Some(actor.id.as_str()) {
                        tracing::info!(kind = A::KIND, object = %actor.id, %error, "stream moved; rebuilding");
                    } else {
                        tracing::error!(kind = A::KIND, object = %actor.id, %error, "append failed; restarting");
                    }
                    ctx.stop();
                    Err(error)
                }
            },
        )))
    }

    /// Takes in `events`, now durable with its stream at `version`: applies them, and saves a
    /// snapshot when one is due.
    fn appended(&mut self, events: &[A::Event], version: u64) {
        store::Parts::track::<A>(&mut self.parts, &mut self.state, events);
        self.version = version;
        if self.version - self.snapshot_version >= A::snapshot_every(&self.state) {
            store::snapshot::<A>(
                &self.journal,
                &self.id,
                self.version,
                &self.state,
                &mut self.parts,
            );
            self.snapshot_version = self.version;
        }
    }

    fn executed(&self, events: Vec<A::Event>, along_version: Option<u64>) -> Executed<A> {
        Executed {
            events,
            state: self.state.clone(),
            version: self.version,
            along_version,
        }
    }
}

type Reply<A> = AtomicResponse<ObjectActor<A>, Result<Executed<A>, Error>>;

fn ready<A: Aggregate, R: 'static>(
    result: Result<R, Error>,
) -> AtomicResponse<ObjectActor<A>, Result<R, Error>> {
    AtomicResponse::new(Box::pin(fut::ready(result)))
}

impl<A: Aggregate> Actor for ObjectActor<A> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.rebuild();
        self.touch();
    }
}

impl<A: Aggregate> Supervised for ObjectActor<A> {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.restarts += 1;
        tracing::warn!(kind = A::KIND, object = %self.id, restarts = self.restarts, "restarting");
    }
}

/// Stop if idle long enough (see [`Idle`]); asking does not count as use.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct LetGoIfIdle;

impl<A: Aggregate> Handler<LetGoIfIdle> for ObjectActor<A> {
    type Result = ();

    fn handle(&mut self, _: LetGoIfIdle, ctx: &mut Self::Context) {
        self.let_go_if_idle(ctx);
    }
}

/// Another writer (a node on the same database) appended `.0`, a version of this object's
/// stream: an actor behind it rebuilds its state from the journal.
/// Its own appends are applied before it reads this (they hold its mailbox until then), so they
/// never stop it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Moved(pub u64);

impl<A: Aggregate> Handler<Moved> for ObjectActor<A> {
    type Result = ();

    fn handle(&mut self, Moved(version): Moved, _: &mut Self::Context) {
        if self.version < version {
            tracing::debug!(kind = A::KIND, object = %self.id, version, "moved by another writer; rebuilding");
            self.rebuild();
        }
    }
}

/// Run a command against the object.
#[derive(Debug)]
pub struct Execute<A: Aggregate>(pub A::Command);

/// A command's result: the events it produced (none if it changed nothing) and the state after.
#[derive(Debug, Clone)]
pub struct Executed<A: Aggregate> {
    /// The events appended.
    pub events: Vec<A::Event>,
    /// The state after them.
    pub state: A::State,
    /// The stream version after them.
    pub version: u64,
    /// For [`ExecuteAlong`]: the version of the first other stream after the append.
    pub along_version: Option<u64>,
}

impl<A: Aggregate> Message for Execute<A> {
    type Result = Result<Executed<A>, Error>;
}

impl<A: Aggregate> Handler<Execute<A>> for ObjectActor<A> {
    type Result = Reply<A>;

    fn handle(&mut self, Execute(command): Execute<A>, _: &mut Self::Context) -> Self::Result {
        self.touch();
        let now = self.clock.now();
        self.run(command, now, Vec::new())
    }
}

/// Run a command, appending its events and `1`'s parts (other streams') together: all of them
/// or none. A part may add nothing and only hold the append to its stream's version
/// ([`store::unchanged`]).
#[derive(Debug)]
pub struct ExecuteAlong<A: Aggregate>(pub A::Command, pub Vec<StreamAppend>);

impl<A: Aggregate> Message for ExecuteAlong<A> {
    type Result = Result<Executed<A>, Error>;
}

impl<A: Aggregate> Handler<ExecuteAlong<A>> for ObjectActor<A> {
    type Result = Reply<A>;

    fn handle(&mut self, message: ExecuteAlong<A>, _: &mut Self::Context) -> Self::Result {
        self.touch();
        let now = self.clock.now();
        self.run(message.0, now, message.1)
    }
}

/// Read the object's current state.
#[derive(Debug)]
pub struct Get<A: Aggregate>(std::marker::PhantomData<A>);

impl<A: Aggregate> Default for Get<A> {
    fn default() -> Self {
        Get(std::marker::PhantomData)
    }
}

impl<A: Aggregate> Message for Get<A> {
    type Result = Result<Observed<A>, Error>;
}

/// An object's state as its actor holds it.
#[derive(Debug, Clone)]
pub struct Observed<A: Aggregate> {
    /// The state.
    pub state: A::State,
    /// The stream version it reflects.
    pub version: u64,
    /// How many times the actor was restarted.
    pub restarts: u64,
}

impl<A: Aggregate> Handler<Get<A>> for ObjectActor<A> {
    type Result = Result<Observed<A>, Error>;

    fn handle(&mut self, _: Get<A>, _: &mut Self::Context) -> Self::Result {
        self.touch();
        if !self.usable() {
            return Err(Error::Unavailable);
        }
        Ok(Observed {
            state: self.state.clone(),
            version: self.version,
            restarts: self.restarts,
        })
    }
}

/// Checks a call's signature against the secrets valid now and, only if one of them signed it,
/// reads the call's nonce and timestamp (which the signature covers). Answers
/// [`Error::InvalidSignature`] when no secret signed it, or a rejection when it is malformed. A
/// `Fn`, so that a delivery that meets a stopping actor is sent again.
pub type SignatureCheck = Arc<dyn Fn(&[Secret]) -> Result<SignedCall, Error> + Send + Sync>;

/// Whether a verified call whose nonce is fresh may go ahead now: the caller's rate limit,
/// asked only for such calls, so that neither a forged call nor a replayed one spends it.
pub type Admission = Arc<dyn Fn() -> Result<(), Error> + Send + Sync>;

/// What a verified call says of itself.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedCall {
    /// Its nonce (`webhook-id`, or the body's `nonce`).
    pub nonce: String,
    /// Its timestamp.
    pub timestamp: Timestamp,
    /// The breach its body names, for a step policy (read only once the signature checked
    /// out: nothing of an unsigned body is trusted).
    pub breach: Option<crate::domain::policy::Breach>,
}

/// A future answered by the next step of an [`Along`].
pub type Next<T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, Error>> + Send>>;

/// Decides a command built from the object's state, then hands its events, as one part of an
/// append (a [`StreamAppend`] built by the store, like every command's), to the next step, which
/// appends them together with its own: all of them or none. The actor takes no other message
/// until the next step answers, and applies its events only once they are durable, at the
/// stream version the append reports. A webhook's nonce rides with its policy execution this
/// way, and an alarm's record of an action with the action's execution.
///
/// Both steps are `Fn`s, so that a delivery that meets a stopping actor is sent again.
pub struct Along<A: Aggregate, C, T> {
    /// The command, and what the next step must know, from the state at `now`.
    pub command: CommandOf<A, C>,
    /// Appends the part with its own events; answers its outcome and this stream's version
    /// after the append.
    pub then: Then<C, T>,
}

/// See [`Along::command`].
pub type CommandOf<A, C> = Arc<
    dyn Fn(&<A as Aggregate>::State, Timestamp) -> Result<(<A as Aggregate>::Command, C), Error>
        + Send
        + Sync,
>;

/// See [`Along::then`].
pub type Then<C, T> = Arc<dyn Fn(C, StreamAppend) -> Next<(T, u64)> + Send + Sync>;

impl<A: Aggregate, C, T> Clone for Along<A, C, T> {
    fn clone(&self) -> Self {
        Along {
            command: self.command.clone(),
            then: self.then.clone(),
        }
    }
}

impl<A: Aggregate, C: 'static, T: 'static> Message for Along<A, C, T> {
    type Result = Result<T, Error>;
}

impl<A: Aggregate, C: 'static, T: 'static> Handler<Along<A, C, T>> for ObjectActor<A> {
    type Result = AtomicResponse<Self, Result<T, Error>>;

    fn handle(&mut self, along: Along<A, C, T>, _: &mut Self::Context) -> Self::Result {
        self.touch();
        if !self.usable() {
            return ready(Err(Error::Unavailable));
        }
        let now = self.clock.now();
        let decided = (along.command)(&self.state, now).and_then(|(command, context)| {
            let events = A::decide(&self.state, &command, now)?;
            let part = store::part::<A>(&self.id, self.version, &events, now)?;
            Ok((events, context, part))
        });
        let (events, context, part) = match decided {
            Ok(decided) => decided,
            Err(error) => return ready(Err(error)),
        };
        let next = (along.then)(context, part);
        AtomicResponse::new(Box::pin(next.into_actor(self).map(
            move |done, actor, _| match done {
                Ok((value, version)) => {
                    actor.appended(&events, version);
                    Ok(value)
                }
                Err(error) => {
                    // Refused before the append (a dead route, a cooldown's record refused) the
                    // part is not on disk; after a fault it may be. The journal tells which.
                    let on_disk = actor.journal.stream_version(&actor.id);
                    if on_disk.map_or(true, |version| version != actor.version) {
                        actor.rebuild();
                    }
                    Err(error)
                }
            },
        )))
    }
}
