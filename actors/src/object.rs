//! The actor that hosts one object: its state is rebuilt from the journal when it starts (and
//! when its supervisor restarts it), and each command is decided, appended, applied and answered
//! before the next message is looked at.

use std::sync::Arc;

use actix::prelude::*;
use flotilla_journal::{Journal, StreamAppend};

use crate::aggregate::{Aggregate, Webhooks};
use crate::clock::{Clock, Timestamp};
use crate::domain::webhook::{Secret, WebhookCommand};
use crate::domain::{PolicyId, Rejection, WebhookId};
use crate::error::Error;
use crate::store;
use crate::supervisor::PolicyExecution;

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
    /// Why the state could not be rebuilt, if it could not: every message is then refused.
    broken: Option<String>,
    restarts: u64,
    /// When it last handled a message, on the service clock.
    last_used: Timestamp,
    /// Stops itself once idle this long (see [`Idle`]).
    idle: Option<Idle<A>>,
}

/// How an idle actor lets itself go: every `check` of real time it looks whether it has handled
/// nothing for `after_ms` of the service clock; if so it is forgotten by its supervisor and
/// stops, and its state comes back from its snapshot and journal on its next message. Memory
/// then follows the objects in use, not all of them.
pub struct Idle<A: Aggregate> {
    /// Clock milliseconds without a message before it stops.
    pub after_ms: i64,
    /// How often it looks, in real time.
    pub check: std::time::Duration,
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
            broken: None,
            restarts: 0,
            last_used: Timestamp::EPOCH,
            idle: None,
        }
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

    /// Decide, append (with `along`, another stream's part, all or none), apply, reply: the one
    /// path every command takes.
    fn run(
        &mut self,
        command: A::Command,
        now: Timestamp,
        along: Option<StreamAppend>,
    ) -> Reply<A> {
        if !self.usable() {
            return ready(Err(Error::Unavailable));
        }
        let events = match A::decide(&self.state, &command, now) {
            Ok(events) => events,
            Err(rejection) => return ready(Err(rejection.into())),
        };
        if events.is_empty() && along.is_none() {
            return ready(Ok(self.executed(events)));
        }
        let (journal, id, version) = (self.journal.clone(), self.id.clone(), self.version);
        let append = {
            let events = events.clone();
            async move { store::append::<A>(&journal, &id, version, &events, now, along).await }
        };
        AtomicResponse::new(Box::pin(append.into_actor(self).map(
            move |appended, actor, ctx| match appended {
                Ok(appended) => {
                    actor.appended(&events, appended.version);
                    Ok(actor.executed(events))
                }
                Err(error) => {
                    // The journal's outcome is unknown (or the stream moved under us): stop, and
                    // let the supervisor restart this actor with its state replayed from disk.
                    tracing::error!(kind = A::KIND, object = %actor.id, %error, "append failed; restarting");
                    ctx.stop();
                    Err(error)
                }
            },
        )))
    }

    /// Takes in `events`, now durable with its stream at `version`: applies them, and saves a
    /// snapshot when one is due.
    fn appended(&mut self, events: &[A::Event], version: u64) {
        for event in events {
            self.state = A::apply(std::mem::take(&mut self.state), event);
        }
        self.version = version;
        if self.version - self.snapshot_version >= A::snapshot_every(&self.state) {
            store::snapshot::<A>(&self.journal, &self.id, self.version, &self.state);
            self.snapshot_version = self.version;
        }
    }

    fn executed(&self, events: Vec<A::Event>) -> Executed<A> {
        Executed {
            events,
            state: self.state.clone(),
            version: self.version,
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
        if let Some(idle) = &self.idle {
            ctx.run_interval(idle.check, |actor, ctx| actor.let_go_if_idle(ctx));
        }
    }
}

impl<A: Aggregate> Supervised for ObjectActor<A> {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.restarts += 1;
        tracing::warn!(kind = A::KIND, object = %self.id, restarts = self.restarts, "restarting");
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
}

impl<A: Aggregate> Message for Execute<A> {
    type Result = Result<Executed<A>, Error>;
}

impl<A: Aggregate> Handler<Execute<A>> for ObjectActor<A> {
    type Result = Reply<A>;

    fn handle(&mut self, Execute(command): Execute<A>, _: &mut Self::Context) -> Self::Result {
        self.touch();
        let now = self.clock.now();
        self.run(command, now, None)
    }
}

/// Run a command, appending its events and `1`'s (another stream's part) together: all of them
/// or none.
#[derive(Debug)]
pub struct ExecuteAlong<A: Aggregate>(pub A::Command, pub StreamAppend);

impl<A: Aggregate> Message for ExecuteAlong<A> {
    type Result = Result<Executed<A>, Error>;
}

impl<A: Aggregate> Handler<ExecuteAlong<A>> for ObjectActor<A> {
    type Result = Reply<A>;

    fn handle(&mut self, message: ExecuteAlong<A>, _: &mut Self::Context) -> Self::Result {
        self.touch();
        let now = self.clock.now();
        self.run(message.0, now, Some(message.1))
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
/// [`Error::InvalidSignature`] when no secret signed it, or a rejection when it is malformed.
pub type SignatureCheck = Box<dyn FnOnce(&[Secret]) -> Result<SignedCall, Error> + Send>;

/// What a verified call says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCall {
    /// Its nonce (`webhook-id`, or the body's `nonce`).
    pub nonce: String,
    /// Its timestamp.
    pub timestamp: Timestamp,
}

/// What a webhook call goes on to once its nonce is accepted: the policy's execution, which must
/// append the webhook's `StreamAppend` (its nonce) together with its own events, all or none.
pub type Proceed = Box<dyn FnOnce(Accepted, StreamAppend) -> Execution + Send>;

/// A policy execution under way.
pub type Execution =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<PolicyExecution, Error>> + Send>>;

/// A signed webhook call: the signature is checked against the secrets valid now, and only then
/// is the nonce offered to the window (so a bad signature never records a nonce). Then the call
/// proceeds to its policy's execution, whose append carries the nonce: both are on disk, or
/// neither is. The webhook's actor takes no other message until then, so concurrent copies of
/// one request are decided one at a time.
pub struct AcceptSigned {
    /// The allowed clock skew.
    pub tolerance_seconds: u32,
    /// The most nonces the webhook remembers.
    pub window_capacity: usize,
    /// The signature check, run against the secrets valid now.
    pub check: SignatureCheck,
    /// What the call proceeds to.
    pub proceed: Proceed,
}

/// An accepted call, before its nonce is recorded: what its execution needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The webhook.
    pub webhook_id: WebhookId,
    /// The policy it executes.
    pub policy_id: PolicyId,
}

impl Message for AcceptSigned {
    type Result = Result<PolicyExecution, Error>;
}

impl Handler<AcceptSigned> for ObjectActor<Webhooks> {
    type Result = AtomicResponse<Self, Result<PolicyExecution, Error>>;

    fn handle(&mut self, call: AcceptSigned, _: &mut Self::Context) -> Self::Result {
        self.touch();
        if !self.usable() {
            return ready(Err(Error::Unavailable));
        }
        let now = self.clock.now();
        let webhook = match &self.state {
            Some(webhook) if !webhook.revoked => webhook,
            _ => return ready(Err(Rejection::not_found("webhook").into())),
        };
        let secrets: Vec<Secret> = webhook.valid_secrets(now).cloned().collect();
        let accepted = Accepted {
            webhook_id: webhook.id.clone(),
            policy_id: webhook.policy_id.clone(),
        };
        let signed = match (call.check)(&secrets) {
            Ok(signed) => signed,
            Err(error) => return ready(Err(error)),
        };
        let command = WebhookCommand::AcceptNonce {
            nonce: signed.nonce,
            timestamp: signed.timestamp,
            tolerance_seconds: call.tolerance_seconds,
            window_capacity: call.window_capacity,
        };
        let events = match Webhooks::decide(&self.state, &command, now) {
            Ok(events) => events,
            Err(rejection) => return ready(Err(rejection.into())),
        };
        let nonce = match store::records::<Webhooks>(&events, now) {
            Ok(records) => StreamAppend {
                stream: self.id.clone(),
                expected: store::expected(self.version),
                events: records,
            },
            Err(error) => return ready(Err(error)),
        };
        let proceed = (call.proceed)(accepted, nonce);
        AtomicResponse::new(Box::pin(proceed.into_actor(self).map(
            move |executed, actor, _| {
                match &executed {
                    Ok(_) => {
                        let version = actor.version + events.len() as u64;
                        actor.appended(&events, version);
                    }
                    // Refused before the append (no such policy, a deleted group) the nonce is
                    // not on disk; after a fault it may be. The journal tells which.
                    Err(_) => {
                        let on_disk = actor.journal.stream_version(&actor.id);
                        if on_disk.map_or(true, |version| version != actor.version) {
                            actor.rebuild();
                        }
                    }
                }
                executed
            },
        )))
    }
}
