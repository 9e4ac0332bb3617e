//! A group: a set of servers kept between `min_size` and `max_size` at `desired_capacity`, with
//! a cooldown after each policy execution that changes its capacity, and a pause switch.
//!
//! Every policy execution, whatever its outcome, is recorded as one
//! [`GroupEvent::PolicyExecuted`] carrying the [`Computation`] that
//! explains it. The cooldown's end is stored in the [`Outcome::Executed`] that started it (the
//! event's `at` plus the policy's or the group's cooldown), so a replay never needs a clock.
//!
//! By subject:
//! - this module: the state, its commands and events, `decide` (which hands each command to its
//!   subject) and `apply`;
//! - `config`: creating and changing a group (bounds, cooldown, launch configuration);
//! - `execution`: a policy's execution and its outcome;
//! - [`launch`]: each provider's launch configuration schema;
//! - the server slots (launches, reports, deletions) live beside the servers, in
//!   [`super::server`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::json::JsonText;
use super::policy::Breach;
use super::route::Route;
use super::scaling::Computation;
use super::scheduled::Scheduled;
use super::server::{self, Handle, Server, ServerState, Servers};
use super::{Cause, DomainEvent, GroupId, PolicyId, Rejection, ScheduleId, TenantId};
use crate::clock::Timestamp;

mod config;
mod execution;
pub mod launch;
mod scheduled;
pub mod tracking;

pub use config::{GroupPatch, NewGroup, DEFAULT_COOLDOWN_SECONDS, MAX_GROUP_SIZE};
pub use execution::Outcome;
pub use launch::PROVIDERS;
pub use server::{LaunchRequest, ServerReport};
pub use tracking::{steady, Period, Track, TrackRecord, Tracked};

/// A group as its events built it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Its id.
    pub id: GroupId,
    /// Its owner.
    pub tenant_id: TenantId,
    /// Its name.
    pub name: String,
    /// The fewest servers it keeps.
    pub min_size: u32,
    /// The most servers it keeps.
    pub max_size: u32,
    /// How many servers it should have; always within `[min_size, max_size]`.
    pub desired_capacity: u32,
    /// The cooldown after a policy execution that changed capacity, unless the policy has its own.
    pub cooldown_seconds: u32,
    /// The launch configuration: a JSON object with a `provider` among [`PROVIDERS`], kept as
    /// its text.
    pub launch: JsonText,
    /// Free-form metadata.
    pub metadata: Map<String, Value>,
    /// Which directions of policy execution are suspended (SPEC 2.3). Required, so that a
    /// snapshot from before it does not decode and the group is rebuilt from its events.
    pub pause: Pause,
    /// Whether it was deleted.
    pub deleted: bool,
    /// When the cooldown of the last capacity-changing execution ends, if one was started.
    pub cooldown_until: Option<Timestamp>,
    /// When it was created.
    pub created_at: Timestamp,
    /// sha256 (hex) of the write-only token its servers post metric samples with.
    #[serde(default)]
    pub metrics_token_hash: String,
    /// Its servers by id (SPEC 6): the group's own stream records them, so one actor
    /// serializes its capacity and its servers. A persistent map: the state is cloned into
    /// every command's answer, and a clone must not cost the size of the group (issue 16).
    #[serde(default, deserialize_with = "server::shared_ids")]
    pub servers: Servers,
    /// Whether a forced deletion is removing its servers: nothing is launched any more.
    #[serde(default)]
    pub draining: bool,
    /// The last change of its desired capacity, which its servers' launches and deletions
    /// answer (SPEC 6: "why is this server here?").
    #[serde(default)]
    pub last_change: Option<CapacityChange>,
    /// Capacity that step policies' scale-outs added and that is still warming up (SPEC 2.1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warming: Vec<Warming>,
    /// What it remembers of each target-tracking policy's recommendations (SPEC 2.1).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tracks: BTreeMap<PolicyId, Track>,
}

/// Capacity a step policy's scale-out added, warming up until `until`: the policy's next
/// scale-out adds only what exceeds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warming {
    /// The policy that added it.
    pub policy_id: PolicyId,
    /// How many servers it added.
    pub added: u32,
    /// When they are warm.
    pub until: Timestamp,
}

impl Group {
    /// The capacity `policy` added that is still warming up at `now`.
    pub fn warming_up(&self, policy: &PolicyId, now: Timestamp) -> u32 {
        self.warming
            .iter()
            .filter(|w| w.policy_id == *policy && now < w.until)
            .map(|w| w.added)
            .fold(0, u32::saturating_add)
    }
}

/// A change of a group's desired capacity, as its servers' launches and deletions name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityChange {
    /// The capacity before.
    pub from: u32,
    /// The capacity after.
    pub to: u32,
    /// What set it in motion: the alarm, webhook, schedule or operator.
    pub cause: Cause,
    /// When.
    pub at: Timestamp,
}

impl Group {
    /// How many servers are in `state`.
    pub fn count(&self, state: ServerState) -> u32 {
        self.servers.count(state)
    }

    /// How many slots the converger keeps: `desired_capacity`, or none while draining.
    pub fn target(&self) -> u32 {
        if self.draining {
            0
        } else {
            self.desired_capacity
        }
    }

    /// Whether a policy execution at `now` falls in the cooldown. The cooldown ends at
    /// `cooldown_until` exactly: at that instant an execution is allowed again.
    pub fn in_cooldown(&self, now: Timestamp) -> bool {
        self.cooldown_until.is_some_and(|until| now < until)
    }
}

/// A group's state: `None` until its `Created` event.
pub type GroupState = Option<Group>;

/// The directions of policy execution a group has suspended (SPEC 2.3): an execution that
/// would move capacity in a paused direction has the outcome `paused`; the other direction
/// still executes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// Executions that would lower capacity.
    pub scale_in: bool,
    /// Executions that would raise capacity.
    pub scale_out: bool,
}

impl Pause {
    /// Both directions.
    pub const BOTH: Pause = Pause {
        scale_in: true,
        scale_out: true,
    };

    /// Whether either direction is paused (the API's `paused`).
    pub fn any(self) -> bool {
        self.scale_in || self.scale_out
    }

    /// Whether a move from `from` to `to` is paused.
    pub fn holds(self, from: u32, to: u32) -> bool {
        (to > from && self.scale_out) || (to < from && self.scale_in)
    }
}

fn both() -> bool {
    true
}

/// What can be asked of a group.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupCommand {
    /// Create it.
    Create(NewGroup),
    /// Change its configuration; a bounds change that leaves the capacity out of range moves it
    /// into range (cause `bounds`, no cooldown).
    Update(GroupPatch),
    /// Give it a new metrics token; the old one stops working at once.
    RotateMetricsToken {
        /// sha256 (hex) of the new token.
        metrics_token_hash: String,
    },
    /// Set the desired capacity directly (cause `direct`, no cooldown); must lie within bounds.
    SetDesired {
        /// The new desired capacity.
        desired_capacity: u32,
    },
    /// Stop executing policies that move capacity in these directions (at least one).
    Pause(Pause),
    /// Execute policies again, in both directions.
    Resume,
    /// Delete it; refused while it has servers (drain it first).
    Delete,
    /// Start a forced deletion: stop launching and remove every server.
    Drain,
    /// Ask the provider for servers: new slots, or failed slots whose backoff ran out. Requests
    /// that are no longer needed or allowed are left out of the answer's events, not refused.
    LaunchServers(Vec<LaunchRequest>),
    /// What the provider said about servers. Stale reports (an unknown server, a state already
    /// left) record nothing.
    ReportServers(Vec<ServerReport>),
    /// Remove these servers (scale-in, in the termination order the caller applied): those
    /// that are slots, and only as many as exceed the target when this is decided, so that a
    /// removal planned before the target rose removes no server now needed.
    DeleteServers(Vec<String>),
    /// Execute a policy: its adjustment and cooldown come from the policy, which must be live
    /// with everything the execution passed through (see [`super::route::check`]).
    ExecutePolicy {
        /// The policy, and the webhook the call came through if one did.
        route: Route,
        /// What set it in motion.
        cause: Cause,
        /// The breach a step policy chooses its step by (an alarm's datapoint and threshold,
        /// or a caller's `metric_value` and `breach_threshold`).
        breach: Option<Breach>,
    },
    /// Decide the periods that closed for the group's target-tracking policies: every such
    /// policy of the group, each with its closed period if one did (see [`tracking`]).
    Track(Vec<Tracked>),
    /// Run an occurrence of a scheduled action of the group (see [`scheduled`]).
    RunSchedule {
        /// The action, as its actor held it.
        scheduled: Box<Scheduled>,
        /// The occurrence.
        occurrence: Timestamp,
    },
}

/// The group whose lease `command` needs (see `Aggregate::leased_by`): the converger's
/// launches and its reports of what the provider did, target tracking, schedules, and the
/// executions alarms and schedules cause are its owner's work; what callers ask through the
/// API is not. A report comes back under the lease its launch was made under: a node lets go
/// of a shard only once its work there has ended, so a report is refused only from a node
/// whose lease ran out (paused, or cut off), whose launches the next owner resolves as a
/// restart does. Deletions are asked for by callers too (a forced delete drains a group through
/// whichever node it reached), and deleting twice deletes once, so a report of deletions (or
/// of deletions that failed) alone needs no lease.
pub fn leased_by(id: &str, _state: &GroupState, command: &GroupCommand) -> Option<String> {
    let owners = match command {
        GroupCommand::ReportServers(reports) => reports.iter().any(|report| {
            !matches!(
                report,
                ServerReport::Deleted { .. } | ServerReport::DeleteFailed { .. }
            )
        }),
        GroupCommand::LaunchServers(_)
        | GroupCommand::Track(_)
        | GroupCommand::RunSchedule { .. } => true,
        GroupCommand::ExecutePolicy { cause, .. } => {
            matches!(cause, Cause::Alarm { .. } | Cause::Schedule { .. })
        }
        _ => false,
    };
    owners.then(|| id.to_owned())
}

/// What happened to a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GroupEvent {
    /// It was created.
    Created {
        /// Its id.
        id: GroupId,
        /// Its owner.
        tenant_id: TenantId,
        /// Its name.
        name: String,
        /// Its lower bound.
        min_size: u32,
        /// Its upper bound.
        max_size: u32,
        /// Its initial desired capacity.
        desired_capacity: u32,
        /// Its cooldown.
        cooldown_seconds: u32,
        /// Its launch configuration.
        launch: Value,
        /// Its metadata.
        metadata: Map<String, Value>,
        /// sha256 (hex) of its metrics token.
        #[serde(default)]
        metrics_token_hash: String,
        /// When.
        at: Timestamp,
    },
    /// Its configuration changed; every field is the new value.
    Updated {
        /// The name.
        name: String,
        /// The lower bound.
        min_size: u32,
        /// The upper bound.
        max_size: u32,
        /// The cooldown.
        cooldown_seconds: u32,
        /// The launch configuration.
        launch: Value,
        /// The metadata.
        metadata: Map<String, Value>,
        /// When.
        at: Timestamp,
    },
    /// Its desired capacity changed outside a policy execution; starts no cooldown.
    CapacityChanged {
        /// Before.
        from: u32,
        /// After.
        to: u32,
        /// `bounds` or `direct`.
        cause: Cause,
        /// When.
        at: Timestamp,
    },
    /// A policy was executed against it, whatever came of it.
    PolicyExecuted {
        /// The policy.
        policy_id: PolicyId,
        /// What set it in motion.
        cause: Cause,
        /// What came of it.
        #[serde(flatten)]
        outcome: Outcome,
        /// How the capacity was computed; computed even when paused or cooling down, to show
        /// what the execution would have done.
        computation: Computation,
        /// A step policy's: the breach its step was chosen by.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        breach: Option<Breach>,
        /// A step policy's: the index of the step chosen (none if no step covers the breach).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<usize>,
        /// A step policy's scale-out with a warm-up: until when the capacity it added warms up.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warmup_until: Option<Timestamp>,
        /// A target-tracking decision's: each policy's datapoint, recommendation and proposal.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tracking: Vec<TrackRecord>,
        /// When.
        at: Timestamp,
    },
    /// An occurrence of a scheduled action ran, whatever came of it (SPEC 2.2).
    ScheduleRan {
        /// The action.
        schedule_id: ScheduleId,
        /// The occurrence.
        occurrence: Timestamp,
        /// The lower bound it gives the group.
        min_size: u32,
        /// The upper bound it gives the group.
        max_size: u32,
        /// What came of it: executed (`from` → `to`), no change, or paused (nothing changed).
        #[serde(flatten)]
        outcome: Outcome,
        /// Why the bounds could not be set, if they could not (nothing changed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refused: Option<String>,
        /// When.
        at: Timestamp,
    },
    /// It was paused: the directions now paused (both, in events from before directions).
    Paused {
        /// Whether executions that would lower capacity are suspended.
        #[serde(default = "both")]
        scale_in: bool,
        /// Whether executions that would raise capacity are suspended.
        #[serde(default = "both")]
        scale_out: bool,
        /// When.
        at: Timestamp,
    },
    /// It was resumed.
    Resumed {
        /// When.
        at: Timestamp,
    },
    /// It was deleted.
    Deleted {
        /// When.
        at: Timestamp,
    },
    /// A forced deletion started: its servers are removed, none launched.
    Draining {
        /// When.
        at: Timestamp,
    },
    /// Its metrics token was replaced: the old one no longer works.
    MetricsTokenRotated {
        /// sha256 (hex) of the new token.
        metrics_token_hash: String,
        /// When.
        at: Timestamp,
    },
    /// A server's launch was asked of the provider (a new slot, or a failed one again).
    ServerLaunchRequested {
        /// The server.
        server_id: String,
        /// sha256 (hex) of the metrics token handed to it.
        metrics_token_hash: String,
        /// When.
        at: Timestamp,
        /// The capacity change it answers (absent in records from before it was named).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        because: Option<CapacityChange>,
        /// Whether it replaces a failed server in its slot.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        replacement: bool,
    },
    /// The provider started a server; its handle.
    ServerLaunched {
        /// The server.
        server_id: String,
        /// The provider's handle.
        provider: Value,
        /// When.
        at: Timestamp,
    },
    /// A server runs.
    ServerActive {
        /// The server.
        server_id: String,
        /// When.
        at: Timestamp,
    },
    /// A server's launch failed or it exited.
    ServerFailed {
        /// The server.
        server_id: String,
        /// Why.
        reason: String,
        /// When.
        at: Timestamp,
    },
    /// A server is to be deleted.
    ServerDeleteRequested {
        /// The server.
        server_id: String,
        /// When.
        at: Timestamp,
        /// The capacity change it answers (absent in records from before it was named).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        because: Option<CapacityChange>,
    },
    /// The provider deleted a server.
    ServerDeleted {
        /// The server.
        server_id: String,
        /// When.
        at: Timestamp,
    },
    /// The provider could not delete a server: it is asked again after a backoff.
    ServerDeleteFailed {
        /// The server.
        server_id: String,
        /// Why.
        reason: String,
        /// When.
        at: Timestamp,
    },
}

impl DomainEvent for GroupEvent {
    const SCHEMA: u16 = 1;

    fn kind(&self) -> &'static str {
        match self {
            GroupEvent::Created { .. } => "created",
            GroupEvent::Updated { .. } => "updated",
            GroupEvent::CapacityChanged { .. } => "capacity_changed",
            GroupEvent::PolicyExecuted { .. } => "policy_executed",
            GroupEvent::ScheduleRan { .. } => "schedule_ran",
            GroupEvent::Paused { .. } => "paused",
            GroupEvent::Resumed { .. } => "resumed",
            GroupEvent::Deleted { .. } => "deleted",
            GroupEvent::Draining { .. } => "draining",
            GroupEvent::MetricsTokenRotated { .. } => "metrics_token_rotated",
            GroupEvent::ServerLaunchRequested { .. } => "server_launch_requested",
            GroupEvent::ServerLaunched { .. } => "server_launched",
            GroupEvent::ServerActive { .. } => "server_active",
            GroupEvent::ServerFailed { .. } => "server_failed",
            GroupEvent::ServerDeleteRequested { .. } => "server_delete_requested",
            GroupEvent::ServerDeleted { .. } => "server_deleted",
            GroupEvent::ServerDeleteFailed { .. } => "server_delete_failed",
        }
    }
}

impl GroupEvent {
    /// Whether it is scaling activity (`GET .../activity`): a capacity's change or a policy's
    /// execution, and each step of convergence it led to.
    pub fn is_activity(&self) -> bool {
        match self {
            GroupEvent::PolicyExecuted { .. }
            | GroupEvent::ScheduleRan { .. }
            | GroupEvent::CapacityChanged { .. }
            | GroupEvent::Draining { .. }
            | GroupEvent::ServerLaunchRequested { .. }
            | GroupEvent::ServerLaunched { .. }
            | GroupEvent::ServerActive { .. }
            | GroupEvent::ServerFailed { .. }
            | GroupEvent::ServerDeleteRequested { .. }
            | GroupEvent::ServerDeleted { .. }
            | GroupEvent::ServerDeleteFailed { .. } => true,
            GroupEvent::Created { .. }
            | GroupEvent::Updated { .. }
            | GroupEvent::Paused { .. }
            | GroupEvent::Resumed { .. }
            | GroupEvent::MetricsTokenRotated { .. }
            | GroupEvent::Deleted { .. } => false,
        }
    }
}

/// Decides what a command does to a group at `now`. Holds every rule.
pub fn decide(
    state: &GroupState,
    cmd: &GroupCommand,
    now: Timestamp,
) -> Result<Vec<GroupEvent>, Rejection> {
    if let GroupCommand::Create(new) = cmd {
        return config::decide_create(state, new, now);
    }
    if let GroupCommand::ExecutePolicy {
        route,
        cause,
        breach,
    } = cmd
    {
        return execution::decide_execution(state, route, cause, *breach, now);
    }
    if let GroupCommand::Track(tracked) = cmd {
        return tracking::decide_tracking(state, tracked, now);
    }
    if let GroupCommand::RunSchedule {
        scheduled,
        occurrence,
    } = cmd
    {
        return scheduled::decide_run(state, scheduled, *occurrence, now);
    }
    let group = match state {
        Some(group) if !group.deleted => group,
        _ => return Err(Rejection::not_found("group")),
    };
    let capacity = match cmd {
        GroupCommand::SetDesired { .. } | GroupCommand::Pause(_) | GroupCommand::Resume => true,
        GroupCommand::Update(patch) => {
            // Only a value that differs: a client sending the whole group back to change its
            // launch changes nothing else.
            let differs = |field: Option<u32>, now: u32| field.is_some_and(|value| value != now);
            differs(patch.desired_capacity, group.desired_capacity)
                || differs(patch.min_size, group.min_size)
                || differs(patch.max_size, group.max_size)
        }
        _ => false,
    };
    if group.draining && capacity {
        // Its servers go whatever its capacity: a change would take effect nowhere. (Its
        // launch may still change: a provider that cannot delete may be pointed elsewhere.)
        return Err(Rejection::Conflict {
            reason: "the group is being deleted: its capacity, bounds and pause no longer change"
                .into(),
        });
    }
    match cmd {
        GroupCommand::Create(_) => Err(Rejection::already_exists("group")),
        GroupCommand::Update(patch) => config::decide_update(group, patch, now),
        GroupCommand::SetDesired { desired_capacity } => {
            config::validate_desired(*desired_capacity, group.min_size, group.max_size)?;
            if *desired_capacity == group.desired_capacity {
                return Ok(vec![]);
            }
            Ok(vec![GroupEvent::CapacityChanged {
                from: group.desired_capacity,
                to: *desired_capacity,
                cause: Cause::Direct,
                at: now,
            }])
        }
        GroupCommand::Pause(pause) if !pause.any() => Err(Rejection::invalid(
            "pause",
            "name a direction to pause: scale_in, scale_out or both",
        )),
        GroupCommand::Pause(pause) if group.pause == *pause => Ok(vec![]),
        GroupCommand::Pause(pause) => Ok(vec![GroupEvent::Paused {
            scale_in: pause.scale_in,
            scale_out: pause.scale_out,
            at: now,
        }]),
        GroupCommand::Resume if !group.pause.any() => Ok(vec![]),
        GroupCommand::Resume => Ok(vec![GroupEvent::Resumed { at: now }]),
        GroupCommand::Delete if group.draining && !group.servers.is_empty() => {
            Err(Rejection::Conflict {
                reason: format!(
                    "the group is being deleted: {} servers are still stopping; the same \
                     DELETE deletes it once they are gone",
                    group.servers.len()
                ),
            })
        }
        GroupCommand::Delete if !group.servers.is_empty() => Err(Rejection::Conflict {
            reason: format!(
                "the group has {} servers; delete it with force=true to remove them first",
                group.servers.len()
            ),
        }),
        GroupCommand::Delete => Ok(vec![GroupEvent::Deleted { at: now }]),
        GroupCommand::RotateMetricsToken { metrics_token_hash } => {
            Ok(vec![GroupEvent::MetricsTokenRotated {
                metrics_token_hash: metrics_token_hash.clone(),
                at: now,
            }])
        }
        GroupCommand::Drain if group.draining => Ok(vec![]),
        GroupCommand::Drain => Ok(vec![GroupEvent::Draining { at: now }]),
        GroupCommand::LaunchServers(requests) => Ok(server::decide_launches(group, requests, now)),
        GroupCommand::ReportServers(reports) => Ok(server::decide_reports(group, reports, now)),
        GroupCommand::DeleteServers(ids) => Ok(ids
            .iter()
            .filter(|id| group.servers.get(id.as_str()).is_some_and(Server::is_slot))
            .take(group.servers.slots().saturating_sub(group.target()) as usize)
            .map(|id| GroupEvent::ServerDeleteRequested {
                server_id: id.clone(),
                at: now,
                because: group.last_change.clone(),
            })
            .collect()),
        GroupCommand::ExecutePolicy { .. }
        | GroupCommand::Track(_)
        | GroupCommand::RunSchedule { .. } => {
            unreachable!("decided above")
        }
    }
}

/// Records what an event says. Holds no rules.
pub fn apply(state: GroupState, event: &GroupEvent) -> GroupState {
    if let GroupEvent::Created {
        id,
        tenant_id,
        name,
        min_size,
        max_size,
        desired_capacity,
        cooldown_seconds,
        launch,
        metadata,
        metrics_token_hash,
        at,
    } = event
    {
        return Some(Group {
            id: id.clone(),
            tenant_id: tenant_id.clone(),
            name: name.clone(),
            min_size: *min_size,
            max_size: *max_size,
            desired_capacity: *desired_capacity,
            cooldown_seconds: *cooldown_seconds,
            launch: JsonText::new(launch),
            metadata: metadata.clone(),
            pause: Pause::default(),
            deleted: false,
            cooldown_until: None,
            created_at: *at,
            metrics_token_hash: metrics_token_hash.clone(),
            servers: Servers::new(),
            draining: false,
            last_change: None,
            warming: Vec::new(),
            tracks: BTreeMap::new(),
        });
    }
    let mut group = state?;
    match event {
        GroupEvent::Created { .. } => {}
        GroupEvent::Updated {
            name,
            min_size,
            max_size,
            cooldown_seconds,
            launch,
            metadata,
            at: _,
        } => {
            group.name = name.clone();
            group.min_size = *min_size;
            group.max_size = *max_size;
            group.cooldown_seconds = *cooldown_seconds;
            group.launch = JsonText::new(launch);
            group.metadata = metadata.clone();
        }
        GroupEvent::CapacityChanged {
            from,
            to,
            cause,
            at,
        } => {
            group.desired_capacity = *to;
            group.last_change = Some(CapacityChange {
                from: *from,
                to: *to,
                cause: cause.clone(),
                at: *at,
            });
        }
        GroupEvent::PolicyExecuted {
            policy_id,
            outcome,
            cause,
            warmup_until,
            tracking,
            at,
            ..
        } => {
            group.warming.retain(|w| *at < w.until);
            tracking::apply_records(&mut group, tracking);
            if let Outcome::Executed {
                from,
                to,
                cooldown_until,
            } = outcome
            {
                group.desired_capacity = *to;
                if cooldown_until.is_some() {
                    group.cooldown_until = *cooldown_until;
                }
                if let Some(until) = warmup_until.filter(|_| to > from) {
                    group.warming.push(Warming {
                        policy_id: policy_id.clone(),
                        added: to - from,
                        until,
                    });
                }
                group.last_change = Some(CapacityChange {
                    from: *from,
                    to: *to,
                    cause: cause.clone(),
                    at: *at,
                });
            }
        }
        GroupEvent::ScheduleRan {
            schedule_id,
            min_size,
            max_size,
            outcome,
            refused: None,
            at,
            ..
        } if *outcome != Outcome::Paused => {
            group.min_size = *min_size;
            group.max_size = *max_size;
            if let Outcome::Executed { from, to, .. } = outcome {
                group.desired_capacity = *to;
                group.last_change = Some(CapacityChange {
                    from: *from,
                    to: *to,
                    cause: Cause::Schedule {
                        schedule_id: Some(schedule_id.clone()),
                    },
                    at: *at,
                });
            }
        }
        GroupEvent::ScheduleRan { .. } => {}
        GroupEvent::Paused {
            scale_in,
            scale_out,
            ..
        } => {
            group.pause = Pause {
                scale_in: *scale_in,
                scale_out: *scale_out,
            };
        }
        GroupEvent::Resumed { .. } => group.pause = Pause::default(),
        GroupEvent::Deleted { .. } => group.deleted = true,
        GroupEvent::Draining { at } => {
            // A forced deletion: the operator takes the group to nothing.
            group.draining = true;
            group.last_change = Some(CapacityChange {
                from: group.desired_capacity,
                to: 0,
                cause: Cause::Direct,
                at: *at,
            });
        }
        GroupEvent::MetricsTokenRotated {
            metrics_token_hash, ..
        } => group.metrics_token_hash = metrics_token_hash.clone(),
        GroupEvent::ServerLaunchRequested { server_id, at, .. } => {
            let relaunched = group.servers.update(server_id, |server| {
                server.state = ServerState::Pending;
                server.provider = Handle::default();
                server.launched_at = *at;
                server.made_at = None;
                // Its remains were deleted: the slot starts afresh.
                server.delete_failures = 0;
            });
            if !relaunched {
                group.servers.insert(Server {
                    id: server_id.as_str().into(),
                    state: ServerState::Pending,
                    provider: Handle::default(),
                    launched_at: *at,
                    made_at: None,
                    failures: 0,
                    last_failure: None,
                    delete_failures: 0,
                });
            }
        }
        GroupEvent::ServerLaunched {
            server_id,
            provider,
            at,
        } => {
            group.servers.update(server_id, |server| {
                server.provider = Handle::new(provider);
                server.made_at = Some(*at);
            });
        }
        GroupEvent::ServerActive { server_id, .. } => {
            group.servers.update(server_id, |server| {
                server.state = ServerState::Active;
            });
        }
        GroupEvent::ServerFailed {
            server_id,
            reason,
            at,
        } => {
            group.servers.update(server_id, |server| {
                server.state = ServerState::Failed;
                server.failures = server.failures.saturating_add(1);
                server.last_failure = Some(Box::new((reason.clone(), *at)));
            });
        }
        GroupEvent::ServerDeleteRequested { server_id, .. } => {
            group.servers.update(server_id, |server| {
                server.state = ServerState::Deleting;
            });
        }
        GroupEvent::ServerDeleted { server_id, .. } => {
            group.servers.remove(server_id);
        }
        GroupEvent::ServerDeleteFailed {
            server_id,
            reason,
            at,
        } => {
            group.servers.update(server_id, |server| {
                server.delete_failures = server.delete_failures.saturating_add(1);
                server.last_failure = Some(Box::new((reason.clone(), *at)));
            });
        }
    }
    Some(group)
}

/// Rebuilds a group from its events, oldest first.
pub fn replay<'a>(events: impl IntoIterator<Item = &'a GroupEvent>) -> GroupState {
    events.into_iter().fold(None, apply)
}

#[cfg(test)]
mod tests;
