//! Flotilla's domain and the actix actors that host it.
//!
//! The domain is pure: each object has a state, commands, past-tense events, a `decide` holding
//! every rule and an `apply` holding none. Time is passed in; replays use the `at` of each event.
//!
//! # Layout
//!
//! - [`clock`]: [`clock::Timestamp`] (Unix milliseconds), the [`clock::Clock`] trait, the system and manual clocks.
//! - [`domain`]: ids and their [`domain::Kind`], [`domain::Rejection`], [`domain::Cause`] and the
//!   [`domain::DomainEvent`] trait.
//! - [`domain::tenant`]: a tenant: its name and token hash.
//! - [`domain::group`]: a group: its state, commands, events and `apply`; `config` (bounds,
//!   cooldown, launch configuration) and `execution` (a policy's execution and its outcome).
//! - [`domain::server`]: a group's servers: states, termination order, backoff, the converger's
//!   plan, and the group's decisions about its slots (launches, reports).
//! - [`domain::route`]: whether a policy execution may go ahead: the webhook, the policy and
//!   the group all live, decided once.
//! - [`domain::scaling`]: the pinned scaling arithmetic (change, percent, exact, step, clamp).
//! - [`domain::policy`]: a scaling policy's definition.
//! - [`domain::webhook`]: a signed webhook: secrets, rotation grace, revocation, accepted nonces.
//! - [`domain::nonce_window`]: the bounded window of nonces a webhook remembers.
//! - [`domain::alarm`]: an alarm's definition and state.
//! - [`domain::samples`]: metric samples aggregated into epoch-aligned periods, in bounded memory.
//! - [`domain::evaluation`]: an alarm's next state from its datapoints, and the actions it runs.
//! - [`aggregate`]: the [`aggregate::Aggregate`] trait over the domain's objects.
//! - [`store`]: loading an object from its snapshot and events, appending its new events.
//! - [`object`]: the actor hosting one object: decide, append, apply, reply; and `Along`, a
//!   command whose events ride in another object's append (a webhook's nonce, an alarm's action).
//! - [`supervisor`]: starts actors on demand, restarts failed ones, lets idle ones go when asked,
//!   and routes across objects: policy executions, webhook calls, alarm actions.
//! - [`replay`]: every object's state as of a sequence number or a time, for audits.
//! - [`error`]: what a message answers when it does not go through.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aggregate;
pub mod clock;
pub mod domain;
pub mod error;
pub mod object;
pub mod replay;
pub mod store;
pub mod supervisor;
