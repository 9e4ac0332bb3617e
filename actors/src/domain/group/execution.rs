//! A policy's execution on its group: the route's liveness (decided by [`route::check`]), the
//! pinned arithmetic ([`scaling::compute`]; a step policy's step and warm-up), then pause,
//! cooldown and whether capacity moves.
//! Whatever the outcome, it is recorded as one [`GroupEvent::PolicyExecuted`]; a shadow
//! policy's, as [`Outcome::Shadow`] wrapping what a live one's would have been. A group being
//! deleted executes nothing: that is a conflict, as a direct change of its capacity is.

use serde::{Deserialize, Serialize};

use super::{Group, GroupEvent, GroupState, Pause};
use crate::clock::{millis_to_secs_rounded_up, Timestamp};
use crate::domain::policy::{Breach, Mode, PolicyType};
use crate::domain::route::{self, Route};
use crate::domain::scaling::{self, Computation};
use crate::domain::{Cause, Rejection};

/// The outcome of a policy execution, as the API shows it in its `outcome` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Capacity changed from `from` to `to`; a simple policy's cooldown runs until
    /// `cooldown_until` (a step policy starts none).
    Executed {
        /// The capacity before.
        from: u32,
        /// The capacity after.
        to: u32,
        /// When the cooldown this execution started ends.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cooldown_until: Option<Timestamp>,
    },
    /// The computed capacity equals the current one (e.g. already at a bound); no cooldown.
    NoChange {
        /// The unchanged capacity.
        capacity: u32,
    },
    /// The group is cooling down from an earlier execution.
    Cooldown {
        /// Seconds until the cooldown ends, rounded up.
        retry_after_seconds: u64,
    },
    /// The group is paused (in the direction the capacity would move).
    Paused,
    /// A shadow policy's execution (SPEC 2.1): capacity stays at `from`; `would` is the
    /// outcome a live policy would have had, and `to` the capacity it computed.
    Shadow {
        /// The capacity, unchanged.
        from: u32,
        /// The capacity the policy computed.
        to: u32,
        /// What a live execution would have done.
        would: Box<Outcome>,
    },
}

/// Executes the route's policy on the group `state`, if the whole route is live: a simple
/// policy's adjustment behind the cooldown, or (SPEC 2.1) the adjustment of the step `breach`
/// falls in, less what the policy's earlier scale-outs still warm up, with no cooldown.
pub(super) fn decide_execution(
    state: &GroupState,
    route: &Route,
    cause: &Cause,
    breach: Option<Breach>,
    now: Timestamp,
) -> Result<Vec<GroupEvent>, Rejection> {
    let (group, policy) = route::check(route, state)?;
    if group.draining {
        // Its servers go whatever its capacity: an execution would take effect nowhere.
        return Err(Rejection::Conflict {
            reason: "the group is being deleted: its policies no longer execute".into(),
        });
    }
    let definition = &policy.definition;
    // A breach or not, step's is checked below: it is a 400 there.
    definition.on_demand(true)?;
    let (computation, breach, step, cooldown, warmup_until) = match definition.policy_type {
        PolicyType::Simple => {
            let computation = scaling::compute(
                group.desired_capacity,
                policy.adjustment(),
                group.min_size,
                group.max_size,
            );
            let cooldown = Some(
                definition
                    .cooldown_seconds
                    .unwrap_or(group.cooldown_seconds),
            );
            (computation, None, None, cooldown, None)
        }
        PolicyType::Step => {
            let breach = breach.ok_or(Rejection::MetricValueRequired)?;
            let chosen = policy.step_for(breach);
            // No step covers the breach: an adjustment of nothing.
            let value = chosen.map_or(0, |(_, step)| step.adjustment);
            let adjustment = match chosen {
                Some(_) => policy.adjustment_of(value),
                None => scaling::Adjustment {
                    kind: scaling::AdjustmentType::Change,
                    value: 0,
                    min_adjustment_step: None,
                },
            };
            let computation = scaling::compute_warming(
                group.desired_capacity,
                adjustment,
                group.warming_up(&policy.id, now),
                group.min_size,
                group.max_size,
            );
            let warmup_until = definition
                .warmup_seconds
                .filter(|seconds| *seconds > 0)
                .map(|seconds| now.plus_secs(seconds));
            (
                computation,
                Some(breach),
                chosen.map(|(i, _)| i),
                None,
                warmup_until,
            )
        }
        PolicyType::TargetTracking => unreachable!("refused above"),
    };
    let mut outcome = execution_outcome(group, &computation, cooldown, now);
    if definition.mode == Mode::Shadow {
        outcome = Outcome::Shadow {
            from: group.desired_capacity,
            to: computation.result,
            would: Box::new(outcome),
        };
    }
    let executed = matches!(outcome, Outcome::Executed { .. });
    Ok(vec![GroupEvent::PolicyExecuted {
        policy_id: policy.id.clone(),
        cause: cause.clone(),
        outcome,
        computation,
        breach,
        step,
        warmup_until: warmup_until.filter(|_| executed),
        tracking: Vec::new(),
        at: now,
    }])
}

/// Pause first (of both directions, or of the one the capacity would move in), then the
/// group's cooldown (for a simple policy, which starts one of `cooldown` seconds), then whether
/// the capacity moves.
pub(super) fn execution_outcome(
    group: &Group,
    computation: &Computation,
    cooldown: Option<u32>,
    now: Timestamp,
) -> Outcome {
    if group.pause == Pause::BOTH
        || group
            .pause
            .holds(group.desired_capacity, computation.result)
    {
        return Outcome::Paused;
    }
    if let Some(until) = group
        .cooldown_until
        .filter(|until| cooldown.is_some() && now < *until)
    {
        return Outcome::Cooldown {
            retry_after_seconds: millis_to_secs_rounded_up(until.saturating_sub(now)),
        };
    }
    if computation.result == group.desired_capacity {
        return Outcome::NoChange {
            capacity: group.desired_capacity,
        };
    }
    Outcome::Executed {
        from: group.desired_capacity,
        to: computation.result,
        cooldown_until: cooldown.map(|seconds| now.plus_secs(seconds)),
    }
}
