//! The actor that hosts one object: its state is rebuilt from the journal when it starts (and
//! when its supervisor restarts it), and each command is decided, appended, applied and answered
//! before the next message is looked at.

use std::sync::Arc;

use actix::prelude::*;
use flotilla_journal::{Durability, Journal};

use crate::aggregate::{Aggregate, Webhooks};
use crate::clock::{Clock, Timestamp};
use crate::domain::webhook::{Secret, WebhookCommand};
use crate::domain::{PolicyId, Rejection, WebhookId};
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
    /// Why the state could not be rebuilt, if it could not: every message is then refused.
    broken: Option<String>,
    restarts: u64,
}

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
        }
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

    /// Decide, append, apply, reply: the one path every command takes.
    /// Whether the state is usable; a state that could not be rebuilt is tried again first (the
    /// fault may have been passing).
    fn usable(&mut self) -> bool {
        if self.broken.is_some() {
            self.rebuild();
        }
        self.broken.is_none()
    }

    fn run(&mut self, command: A::Command, now: Timestamp, durability: Durability) -> Reply<A> {
        self.run_answering(command, now, durability, Self::executed)
    }

    /// [`Self::run`], answering with `answer(self, events)` once they are applied: a caller that
    /// needs less than a copy of the whole state says so.
    fn run_answering<R: 'static>(
        &mut self,
        command: A::Command,
        now: Timestamp,
        durability: Durability,
        answer: impl FnOnce(&Self, Vec<A::Event>) -> R + 'static,
    ) -> AtomicResponse<Self, Result<R, Error>> {
        if !self.usable() {
            return ready(Err(Error::Unavailable));
        }
        let events = match A::decide(&self.state, &command, now) {
            Ok(events) => events,
            Err(rejection) => return ready(Err(rejection.into())),
        };
        if events.is_empty() {
            return ready(Ok(answer(self, events)));
        }
        let (journal, id, version) = (self.journal.clone(), self.id.clone(), self.version);
        let append = {
            let events = events.clone();
            async move { store::append::<A>(&journal, &id, version, &events, now, durability).await }
        };
        AtomicResponse::new(Box::pin(append.into_actor(self).map(
            move |appended, actor, ctx| match appended {
                Ok(appended) => {
                    for event in &events {
                        actor.state = A::apply(std::mem::take(&mut actor.state), event);
                    }
                    actor.version = appended.version;
                    if actor.version - actor.snapshot_version >= A::snapshot_every(&actor.state) {
                        store::snapshot::<A>(&actor.journal, &actor.id, actor.version, &actor.state);
                        actor.snapshot_version = actor.version;
                    }
                    Ok(answer(actor, events))
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
        let now = self.clock.now();
        self.run(command, now, Durability::Flushed)
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

/// A signed webhook call: the signature is checked against the secrets valid now, and only then
/// is the nonce offered to the window (so a bad signature never records a nonce). Both happen
/// inside the webhook's actor, so concurrent copies of one request are decided one at a time.
pub struct AcceptSigned {
    /// The allowed clock skew.
    pub tolerance_seconds: u32,
    /// The most nonces the webhook remembers.
    pub window_capacity: usize,
    /// The signature check, run against the secrets valid now.
    pub check: SignatureCheck,
}

/// An accepted call: its nonce is recorded; what remains is to execute the webhook's policy.
/// (Not the webhook's whole state: that holds its nonce window, too large to copy per call.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The webhook.
    pub webhook_id: WebhookId,
    /// The policy it executes.
    pub policy_id: PolicyId,
    /// The webhook's stream version after the nonce.
    pub version: u64,
}

impl Message for AcceptSigned {
    type Result = Result<Accepted, Error>;
}

impl Handler<AcceptSigned> for ObjectActor<Webhooks> {
    type Result = AtomicResponse<Self, Result<Accepted, Error>>;

    fn handle(&mut self, call: AcceptSigned, _: &mut Self::Context) -> Self::Result {
        if !self.usable() {
            return ready(Err(Error::Unavailable));
        }
        let now = self.clock.now();
        let webhook = match &self.state {
            Some(webhook) if !webhook.revoked => webhook,
            _ => return ready(Err(Rejection::not_found("webhook").into())),
        };
        let secrets: Vec<Secret> = webhook.valid_secrets(now).cloned().collect();
        let (webhook_id, policy_id) = (webhook.id.clone(), webhook.policy_id.clone());
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
        // The call is acknowledged only after its policy execution's flushed append, which
        // flushes the nonce with it: one flush per call instead of two.
        self.run_answering(command, now, Durability::Deferred, move |actor, _| {
            Accepted {
                webhook_id,
                policy_id,
                version: actor.version,
            }
        })
    }
}
