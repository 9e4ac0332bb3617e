//! A scaling policy: the definition of one way to change a group's size. Executing it is the
//! group's business ([`super::group::GroupCommand::ExecutePolicy`]): the policy only hands over
//! its [`Adjustment`] and cooldown.
//!
//! Limits, beyond SPEC section 1: a `change` adjustment lies within ±[`MAX_GROUP_SIZE`], an
//! `exact` one within [0, [`MAX_GROUP_SIZE`]] and a `percent` one within
//! [-[`MAX_PERCENT`], [`MAX_PERCENT`]]; larger values could only ever clamp.

use serde::{Deserialize, Serialize};

use super::alarm::{Statistic, MAX_PERIOD_SECONDS};
use super::group::MAX_GROUP_SIZE;
use super::scaling::{Adjustment, AdjustmentType};
use super::tracking::{MissingData, Target, TargetKind};
use super::{
    validate_cooldown, validate_renamed, DomainEvent, GroupId, PolicyId, Rejection, TenantId,
};
use crate::clock::Timestamp;

/// The largest magnitude of a `percent` adjustment: ±1000 %.
pub const MAX_PERCENT: i64 = 1_000;

/// Whether a policy's executions move capacity (SPEC 2.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Its executions change capacity.
    #[default]
    Live,
    /// Its executions are decided exactly as a live one's, and recorded with the outcome
    /// `shadow` and what they would have done; capacity is left alone.
    Shadow,
}

/// How a policy decides (SPEC 2.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyType {
    /// One adjustment, behind the group's cooldown (SPEC 2).
    #[default]
    Simple,
    /// The adjustment of the step the breach falls in, with a warm-up (AWS step scaling).
    Step,
    /// Capacity follows a metric to a target, at each closed period of the metric (AWS target
    /// tracking, the Kubernetes HPA).
    TargetTracking,
}

/// The longest scale-in stabilization window, in seconds: an hour (the HPA's and AWS's most).
pub const MAX_STABILIZATION_SECONDS: u32 = 3_600;

/// The stabilization window of a policy that names none: five minutes (the HPA's default).
pub const DEFAULT_STABILIZATION_SECONDS: u32 = 300;

/// The most missing periods in a row a fallback may wait for.
pub const MAX_FALLBACK_AFTER_PERIODS: u32 = 100;

/// A target-tracking policy's settings (SPEC 2.1): the metric it follows and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tracking {
    /// The metric, as samples name it (empty with a query).
    pub metric: String,
    /// A PromQL query evaluated at each period's end instead of a metric (SPEC 5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// How a period's samples become its datapoint.
    pub statistic: Statistic,
    /// The period, seconds: each closed period is a decision.
    pub period_seconds: u32,
    /// The target and how the datapoint is read against it.
    #[serde(flatten)]
    pub target: Target,
    /// Scale-in goes to the highest recommendation of this many seconds.
    pub scale_in_stabilization_seconds: u32,
    /// Whether it never scales in.
    pub disable_scale_in: bool,
}

impl Tracking {
    /// Settings for `metric` at `target`, with every default of SPEC 2.1: `avg` over 60 s
    /// periods, `average`, tolerance 0.1, activation 0, hold on missing data (fallback to 0
    /// after 3), a 300 s stabilization window, scale-in allowed.
    pub fn new(metric: &str, target: f64) -> Tracking {
        Tracking {
            metric: metric.to_owned(),
            query: None,
            statistic: Statistic::Avg,
            period_seconds: 60,
            target: Target {
                target,
                kind: TargetKind::Average,
                tolerance: 0.1,
                activation_threshold: 0.0,
                missing_data: MissingData::Hold,
                fallback_capacity: 0,
                fallback_after_periods: 3,
            },
            scale_in_stabilization_seconds: DEFAULT_STABILIZATION_SECONDS,
            disable_scale_in: false,
        }
    }

    /// These settings with `patch`'s present fields in place of theirs.
    pub fn patched(&self, patch: &TrackingPatch) -> Tracking {
        let t = &self.target;
        Tracking {
            // A new query replaces the metric, and a new metric the query.
            metric: match (&patch.metric, &patch.query) {
                (Some(metric), _) => metric.clone(),
                (None, Some(_)) => String::new(),
                (None, None) => self.metric.clone(),
            },
            query: match (&patch.metric, &patch.query) {
                (_, Some(query)) => Some(query.clone()),
                (Some(_), None) => None,
                (None, None) => self.query.clone(),
            },
            statistic: patch.statistic.unwrap_or(self.statistic),
            period_seconds: patch.period_seconds.unwrap_or(self.period_seconds),
            target: Target {
                target: patch.target.unwrap_or(t.target),
                kind: patch.kind.unwrap_or(t.kind),
                tolerance: patch.tolerance.unwrap_or(t.tolerance),
                activation_threshold: patch.activation_threshold.unwrap_or(t.activation_threshold),
                missing_data: patch.missing_data.unwrap_or(t.missing_data),
                fallback_capacity: patch.fallback_capacity.unwrap_or(t.fallback_capacity),
                fallback_after_periods: patch
                    .fallback_after_periods
                    .unwrap_or(t.fallback_after_periods),
            },
            scale_in_stabilization_seconds: patch
                .scale_in_stabilization_seconds
                .unwrap_or(self.scale_in_stabilization_seconds),
            disable_scale_in: patch.disable_scale_in.unwrap_or(self.disable_scale_in),
        }
    }
}

/// A change to a target-tracking policy's settings: each present field replaces the current one.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrackingPatch {
    /// A new metric (and no query).
    pub metric: Option<String>,
    /// A new query (and no metric).
    pub query: Option<String>,
    /// A new statistic.
    pub statistic: Option<Statistic>,
    /// A new period.
    pub period_seconds: Option<u32>,
    /// A new target.
    pub target: Option<f64>,
    /// A new way to read the metric.
    pub kind: Option<TargetKind>,
    /// A new tolerance.
    pub tolerance: Option<f64>,
    /// A new activation threshold.
    pub activation_threshold: Option<f64>,
    /// A new behaviour on missing data.
    pub missing_data: Option<MissingData>,
    /// A new fallback capacity.
    pub fallback_capacity: Option<u32>,
    /// A new count of missing periods before a fallback.
    pub fallback_after_periods: Option<u32>,
    /// A new stabilization window.
    pub scale_in_stabilization_seconds: Option<u32>,
    /// Whether it never scales in.
    pub disable_scale_in: Option<bool>,
}

impl TrackingPatch {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == TrackingPatch::default()
    }

    /// The API's name of the first field it sets.
    pub fn first_field(&self) -> Option<&'static str> {
        let set = [
            (self.metric.is_some(), "metric"),
            (self.query.is_some(), "query"),
            (self.statistic.is_some(), "statistic"),
            (self.period_seconds.is_some(), "period_seconds"),
            (self.target.is_some(), "target"),
            (self.kind.is_some(), "target_kind"),
            (self.tolerance.is_some(), "tolerance"),
            (self.activation_threshold.is_some(), "activation_threshold"),
            (self.missing_data.is_some(), "missing_data"),
            (self.fallback_capacity.is_some(), "fallback_capacity"),
            (
                self.fallback_after_periods.is_some(),
                "fallback_after_periods",
            ),
            (
                self.scale_in_stabilization_seconds.is_some(),
                "scale_in_stabilization_seconds",
            ),
            (self.disable_scale_in.is_some(), "disable_scale_in"),
        ];
        set.into_iter()
            .find_map(|(present, field)| present.then_some(field))
    }
}

/// One step of a step policy: an adjustment for breaches whose distance from the threshold lies
/// between `lower` and `upper` (null: unbounded). Above the threshold the lower bound is
/// inclusive and the upper exclusive; below it, the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The step's lower bound, relative to the threshold; null is −∞.
    pub lower: Option<f64>,
    /// The step's upper bound, relative to the threshold; null is +∞.
    pub upper: Option<f64>,
    /// The adjustment, read by the policy's `adjustment_type`.
    pub adjustment: i64,
}

impl Step {
    /// Whether the breach `distance` (value − threshold) falls in this step.
    pub fn covers(&self, distance: f64) -> bool {
        let lower = self.lower.unwrap_or(f64::NEG_INFINITY);
        let upper = self.upper.unwrap_or(f64::INFINITY);
        if distance >= 0.0 {
            lower <= distance && distance < upper
        } else {
            lower < distance && distance <= upper
        }
    }
}

/// What a step policy is executed for: the metric's value and the threshold it breached, from
/// the alarm that fired it, or from the body of a webhook call or of `execute`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Breach {
    /// The deciding datapoint.
    pub metric_value: f64,
    /// The threshold it was compared with.
    pub breach_threshold: f64,
}

impl Breach {
    /// How far past the threshold the value lies.
    pub fn distance(&self) -> f64 {
        self.metric_value - self.breach_threshold
    }
}

/// The most steps a step policy may have.
pub const MAX_STEPS: usize = 20;

/// The longest warm-up, in seconds: one day.
pub const MAX_WARMUP_SECONDS: u32 = 86_400;

/// A policy's definition, the part a create sets and an update replaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyDefinition {
    /// 1 to 255 characters.
    pub name: String,
    /// Live or shadow; live in events from before modes.
    #[serde(default)]
    pub mode: Mode,
    /// Simple or step; simple in events from before types.
    #[serde(default)]
    pub policy_type: PolicyType,
    /// A step policy's steps (none for a simple one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    /// A step policy's warm-up: seconds after a scale-out during which the capacity it added
    /// counts against the next scale-out's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_seconds: Option<u32>,
    /// A target-tracking policy's settings (none for the other types).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<Box<Tracking>>,
    /// How `adjustment` is read (`exact` for a target-tracking policy, which has none).
    pub adjustment_type: AdjustmentType,
    /// The adjustment; may be negative for `change` and `percent`.
    pub adjustment: i64,
    /// For `percent` only: the smallest magnitude of a non-zero delta (at least 1).
    pub min_adjustment_step: Option<u32>,
    /// The cooldown after it changes capacity; the group's when absent.
    pub cooldown_seconds: Option<u32>,
}

impl PolicyDefinition {
    /// Refuses an execution on demand (a call of `execute` or of a webhook, an alarm's action,
    /// an Alertmanager alert) of a target-tracking policy, which executes at each closed period
    /// of its metric; with `breach` false (an Alertmanager alert carries none), of a step
    /// policy too, which chooses its step by the breach. Asked where something that would
    /// execute it is made, so that none is accepted that could never execute it.
    pub fn on_demand(&self, breach: bool) -> Result<(), Rejection> {
        match self.policy_type {
            PolicyType::TargetTracking => Err(Rejection::Conflict {
                reason: "a target-tracking policy executes at each closed period of its metric, \
                         not on demand"
                    .to_owned(),
            }),
            PolicyType::Step if !breach => Err(Rejection::Conflict {
                reason: "a step policy chooses its step by the breach, which an Alertmanager \
                         alert does not carry"
                    .to_owned(),
            }),
            PolicyType::Simple | PolicyType::Step => Ok(()),
        }
    }

    /// A live simple policy named `name`: `adjustment` read as `adjustment_type`, no minimum
    /// step, the group's cooldown.
    pub fn simple(name: &str, adjustment_type: AdjustmentType, adjustment: i64) -> Self {
        PolicyDefinition {
            name: name.to_owned(),
            mode: Mode::Live,
            policy_type: PolicyType::Simple,
            steps: Vec::new(),
            warmup_seconds: None,
            tracking: None,
            adjustment_type,
            adjustment,
            min_adjustment_step: None,
            cooldown_seconds: None,
        }
    }

    /// A live target-tracking policy named `name` with `tracking`'s settings.
    pub fn target_tracking(name: &str, tracking: Tracking) -> Self {
        PolicyDefinition {
            policy_type: PolicyType::TargetTracking,
            tracking: Some(Box::new(tracking)),
            ..PolicyDefinition::simple(name, AdjustmentType::Exact, 0)
        }
    }
}

/// A policy as its events built it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Its id.
    pub id: PolicyId,
    /// The group it resizes.
    pub group_id: GroupId,
    /// Its owner.
    pub tenant_id: TenantId,
    /// What it does.
    #[serde(flatten)]
    pub definition: PolicyDefinition,
    /// Whether it was deleted.
    pub deleted: bool,
    /// When it was created.
    pub created_at: Timestamp,
}

impl Policy {
    /// What the group is asked to do when this (simple) policy executes.
    pub fn adjustment(&self) -> Adjustment {
        self.adjustment_of(self.definition.adjustment)
    }

    /// The adjustment `value`, read as this policy reads adjustments.
    pub fn adjustment_of(&self, value: i64) -> Adjustment {
        Adjustment {
            kind: self.definition.adjustment_type,
            value,
            min_adjustment_step: self.definition.min_adjustment_step,
        }
    }

    /// The step a breach falls in, with its index; none if no step covers it. A breach exactly
    /// at the threshold falls in a step starting there (above) if the policy has one, else in a
    /// step ending there (below): AWS's bounds give both `[0, x)` and `(y, 0]` the threshold.
    pub fn step_for(&self, breach: Breach) -> Option<(usize, &Step)> {
        let distance = breach.distance();
        let steps = self.definition.steps.iter().enumerate();
        let found = steps.clone().find(|(_, step)| step.covers(distance));
        if found.is_some() || distance != 0.0 {
            return found;
        }
        steps
            .into_iter()
            .find(|(_, step)| step.lower.is_none_or(|l| l < 0.0) && step.upper == Some(0.0))
    }
}

/// A policy's state: `None` until its `Created` event.
pub type PolicyState = Option<Policy>;

/// A change to a policy: each present field replaces the current one. For the optional fields,
/// `Some(None)` clears them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PolicyPatch {
    /// A new name.
    pub name: Option<String>,
    /// A new mode.
    pub mode: Option<Mode>,
    /// New steps (a step policy's).
    pub steps: Option<Vec<Step>>,
    /// A new warm-up, or `Some(None)` to remove it.
    pub warmup_seconds: Option<Option<u32>>,
    /// New target-tracking settings (a target-tracking policy's).
    pub tracking: TrackingPatch,
    /// A new adjustment type.
    pub adjustment_type: Option<AdjustmentType>,
    /// A new adjustment.
    pub adjustment: Option<i64>,
    /// A new step, or `Some(None)` to remove it.
    pub min_adjustment_step: Option<Option<u32>>,
    /// A new cooldown, or `Some(None)` to fall back to the group's.
    pub cooldown_seconds: Option<Option<u32>>,
}

/// What can be asked of a policy.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyCommand {
    /// Create it.
    Create {
        /// The id, generated by the caller.
        id: PolicyId,
        /// The group it resizes (whose existence the caller checked).
        group_id: GroupId,
        /// The owner.
        tenant_id: TenantId,
        /// What it does.
        definition: PolicyDefinition,
    },
    /// Change it.
    Update(PolicyPatch),
    /// Delete it.
    Delete,
}

/// What happened to a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PolicyEvent {
    /// It was created.
    Created {
        /// Its id.
        id: PolicyId,
        /// Its group.
        group_id: GroupId,
        /// Its owner.
        tenant_id: TenantId,
        /// What it does.
        #[serde(flatten)]
        definition: PolicyDefinition,
        /// When.
        at: Timestamp,
    },
    /// Its definition changed; the whole new definition.
    Updated {
        /// What it does now.
        #[serde(flatten)]
        definition: PolicyDefinition,
        /// When.
        at: Timestamp,
    },
    /// It was deleted.
    Deleted {
        /// When.
        at: Timestamp,
    },
}

impl DomainEvent for PolicyEvent {
    const SCHEMA: u16 = 1;

    fn kind(&self) -> &'static str {
        match self {
            PolicyEvent::Created { .. } => "created",
            PolicyEvent::Updated { .. } => "updated",
            PolicyEvent::Deleted { .. } => "deleted",
        }
    }
}

/// Decides what a command does to a policy at `now`. Holds every rule.
pub fn decide(
    state: &PolicyState,
    cmd: &PolicyCommand,
    now: Timestamp,
) -> Result<Vec<PolicyEvent>, Rejection> {
    if let PolicyCommand::Create {
        id,
        group_id,
        tenant_id,
        definition,
    } = cmd
    {
        if state.is_some() {
            return Err(Rejection::already_exists("policy"));
        }
        validate(definition, None)?;
        return Ok(vec![PolicyEvent::Created {
            id: id.clone(),
            group_id: group_id.clone(),
            tenant_id: tenant_id.clone(),
            definition: definition.clone(),
            at: now,
        }]);
    }
    let policy = match state {
        Some(policy) if !policy.deleted => policy,
        _ => return Err(Rejection::not_found("policy")),
    };
    match cmd {
        PolicyCommand::Create { .. } => Err(Rejection::already_exists("policy")),
        PolicyCommand::Update(patch) => {
            let current = &policy.definition;
            if current.tracking.is_some() {
                let adjusting = [
                    (patch.adjustment_type.is_some(), "adjustment_type"),
                    (patch.adjustment.is_some(), "adjustment"),
                ];
                if let Some((_, field)) = adjusting.into_iter().find(|(set, _)| *set) {
                    return Err(Rejection::invalid(
                        field,
                        "does not belong to target-tracking policies, which follow their target",
                    ));
                }
            }
            let definition = PolicyDefinition {
                name: patch.name.clone().unwrap_or_else(|| current.name.clone()),
                mode: patch.mode.unwrap_or(current.mode),
                policy_type: current.policy_type,
                steps: patch.steps.clone().unwrap_or_else(|| current.steps.clone()),
                warmup_seconds: patch.warmup_seconds.unwrap_or(current.warmup_seconds),
                tracking: match &current.tracking {
                    Some(tracking) => Some(Box::new(tracking.patched(&patch.tracking))),
                    None if patch.tracking.is_empty() => None,
                    None => {
                        return Err(Rejection::invalid(
                            patch.tracking.first_field().unwrap_or("policy_type"),
                            "belongs to target-tracking policies",
                        ))
                    }
                },
                adjustment_type: patch.adjustment_type.unwrap_or(current.adjustment_type),
                adjustment: patch.adjustment.unwrap_or(current.adjustment),
                min_adjustment_step: patch
                    .min_adjustment_step
                    .unwrap_or(current.min_adjustment_step),
                cooldown_seconds: patch.cooldown_seconds.unwrap_or(current.cooldown_seconds),
            };
            validate(&definition, Some(&current.name))?;
            if definition == *current {
                return Ok(vec![]);
            }
            Ok(vec![PolicyEvent::Updated {
                definition,
                at: now,
            }])
        }
        PolicyCommand::Delete => Ok(vec![PolicyEvent::Deleted { at: now }]),
    }
}

/// `definition`, replacing one named `current_name` if any, is valid.
fn validate(definition: &PolicyDefinition, current_name: Option<&str>) -> Result<(), Rejection> {
    validate_renamed("name", &definition.name, current_name)?;
    if definition.policy_type != PolicyType::TargetTracking && definition.tracking.is_some() {
        return Err(Rejection::invalid(
            "target",
            "belongs to target-tracking policies",
        ));
    }
    match definition.policy_type {
        PolicyType::TargetTracking => return validate_tracking(definition),
        PolicyType::Simple => {
            if !definition.steps.is_empty() {
                return Err(Rejection::invalid("steps", "belong to step policies"));
            }
            if definition.warmup_seconds.is_some() {
                return Err(Rejection::invalid(
                    "warmup_seconds",
                    "belongs to step policies; a simple policy has a cooldown",
                ));
            }
            validate_adjustment(
                "adjustment",
                definition.adjustment_type,
                definition.adjustment,
            )?;
        }
        PolicyType::Step => {
            if definition.adjustment != 0 {
                return Err(Rejection::invalid(
                    "adjustment",
                    "belongs to simple policies; each step carries its own",
                ));
            }
            if definition.cooldown_seconds.is_some() {
                return Err(Rejection::invalid(
                    "cooldown_seconds",
                    "belongs to simple policies; a step policy has warmup_seconds",
                ));
            }
            validate_steps(definition)?;
            if let Some(warmup) = definition.warmup_seconds {
                if warmup > MAX_WARMUP_SECONDS {
                    return Err(Rejection::invalid(
                        "warmup_seconds",
                        format!("must be at most {MAX_WARMUP_SECONDS}, is {warmup}"),
                    ));
                }
            }
        }
    }
    validate_rest(definition)
}

/// A target-tracking policy: its settings, and none of the other types' fields.
fn validate_tracking(definition: &PolicyDefinition) -> Result<(), Rejection> {
    let Some(tracking) = &definition.tracking else {
        return Err(Rejection::invalid(
            "target",
            "a target-tracking policy needs a metric and a target",
        ));
    };
    let others = [
        (!definition.steps.is_empty(), "steps"),
        (definition.warmup_seconds.is_some(), "warmup_seconds"),
        (definition.adjustment != 0, "adjustment"),
        (
            definition.min_adjustment_step.is_some(),
            "min_adjustment_step",
        ),
        (definition.cooldown_seconds.is_some(), "cooldown_seconds"),
    ];
    if let Some((_, field)) = others.into_iter().find(|(present, _)| *present) {
        return Err(Rejection::invalid(
            field,
            "does not belong to target-tracking policies, which follow their target",
        ));
    }
    super::alarm::validate_source(&tracking.metric, tracking.query.as_deref())?;
    if !(1..=MAX_PERIOD_SECONDS).contains(&tracking.period_seconds) {
        return Err(Rejection::invalid(
            "period_seconds",
            format!(
                "must lie within [1, {MAX_PERIOD_SECONDS}], is {}",
                tracking.period_seconds
            ),
        ));
    }
    let t = &tracking.target;
    if !(t.target.is_finite() && t.target > 0.0) {
        return Err(Rejection::invalid(
            "target",
            format!("must be a finite number above 0, is {}", t.target),
        ));
    }
    if !(0.0..=1.0).contains(&t.tolerance) {
        return Err(Rejection::invalid(
            "tolerance",
            format!("must lie within [0, 1], is {}", t.tolerance),
        ));
    }
    if !t.activation_threshold.is_finite() {
        return Err(Rejection::invalid(
            "activation_threshold",
            "must be a finite number",
        ));
    }
    if t.activation_threshold != 0.0 && t.kind == TargetKind::Average {
        return Err(Rejection::invalid(
            "activation_threshold",
            "belongs to target_kind total; an average cannot scale from zero",
        ));
    }
    if t.fallback_capacity > MAX_GROUP_SIZE {
        return Err(Rejection::invalid(
            "fallback_capacity",
            format!(
                "must be at most {MAX_GROUP_SIZE}, is {}",
                t.fallback_capacity
            ),
        ));
    }
    if !(1..=MAX_FALLBACK_AFTER_PERIODS).contains(&t.fallback_after_periods) {
        return Err(Rejection::invalid(
            "fallback_after_periods",
            format!(
                "must lie within [1, {MAX_FALLBACK_AFTER_PERIODS}], is {}",
                t.fallback_after_periods
            ),
        ));
    }
    if tracking.scale_in_stabilization_seconds > MAX_STABILIZATION_SECONDS {
        return Err(Rejection::invalid(
            "scale_in_stabilization_seconds",
            format!(
                "must be at most {MAX_STABILIZATION_SECONDS}, is {}",
                tracking.scale_in_stabilization_seconds
            ),
        ));
    }
    Ok(())
}

/// Steps (AWS's rules): 1 to [`MAX_STEPS`], listed from the lowest; finite bounds with lower <
/// upper, never both null; only the first open below and only the last open above, and open so
/// whenever a bound lies on that side of the threshold; each step's upper bound the next one's
/// lower (no overlap, no gap); each adjustment within its type's range.
fn validate_steps(definition: &PolicyDefinition) -> Result<(), Rejection> {
    let steps = &definition.steps;
    if steps.is_empty() || steps.len() > MAX_STEPS {
        return Err(Rejection::invalid(
            "steps",
            format!(
                "a step policy has 1 to {MAX_STEPS} steps, has {}",
                steps.len()
            ),
        ));
    }
    if steps.len() == 1 && steps[0].lower.is_none() && steps[0].upper.is_none() {
        return Err(Rejection::invalid(
            "steps",
            "step 0: a step may not leave both bounds null",
        ));
    }
    let below = steps.iter().any(|s| s.lower.is_some_and(|l| l < 0.0));
    if below && steps[0].lower.is_some() {
        return Err(Rejection::invalid(
            "steps",
            "a step below the threshold needs a first step with no lower bound",
        ));
    }
    let above = steps.iter().any(|s| s.upper.is_some_and(|u| u > 0.0));
    if above && steps[steps.len() - 1].upper.is_some() {
        return Err(Rejection::invalid(
            "steps",
            "a step above the threshold needs a last step with no upper bound",
        ));
    }
    for (i, step) in steps.iter().enumerate() {
        let finite = |bound: Option<f64>| bound.is_none_or(f64::is_finite);
        if !finite(step.lower) || !finite(step.upper) {
            return Err(Rejection::invalid(
                "steps",
                format!("step {i}: bounds must be finite numbers or null"),
            ));
        }
        if let (Some(lower), Some(upper)) = (step.lower, step.upper) {
            if lower >= upper {
                return Err(Rejection::invalid(
                    "steps",
                    format!("step {i}: lower ({lower}) must be below upper ({upper})"),
                ));
            }
        }
        if step.lower.is_none() && i != 0 {
            return Err(Rejection::invalid("steps", format!("step {i}: only the first step may have no lower bound (list the steps from the lowest)")));
        }
        if step.upper.is_none() && i + 1 != steps.len() {
            return Err(Rejection::invalid(
                "steps",
                format!("step {i}: only the last step may have no upper bound"),
            ));
        }
        if let Some(next) = steps.get(i + 1) {
            if step.upper != next.lower {
                let (upper, lower) = (
                    step.upper.unwrap_or(f64::INFINITY),
                    next.lower.unwrap_or(f64::NEG_INFINITY),
                );
                let what = if lower < upper {
                    "overlap"
                } else {
                    "leave a gap"
                };
                return Err(Rejection::invalid(
                    "steps",
                    format!("steps {i} and {} {what}: step {i} ends at {upper}, step {} starts at {lower}", i + 1, i + 1),
                ));
            }
        }
        validate_adjustment("steps", definition.adjustment_type, step.adjustment)?;
    }
    Ok(())
}

/// An adjustment within its type's range.
fn validate_adjustment(
    field: &'static str,
    adjustment_type: AdjustmentType,
    adjustment: i64,
) -> Result<(), Rejection> {
    let max_size = i64::from(MAX_GROUP_SIZE);
    // `unsigned_abs`: `i64::MIN.abs()` overflows (and wraps to a negative in a release build).
    let magnitude = adjustment.unsigned_abs();
    match adjustment_type {
        AdjustmentType::Change if magnitude > u64::from(MAX_GROUP_SIZE) => {
            return Err(Rejection::invalid(
                field,
                format!("a change must lie within [-{max_size}, {max_size}], is {adjustment}"),
            ));
        }
        AdjustmentType::Exact if !(0..=max_size).contains(&adjustment) => {
            return Err(Rejection::invalid(
                field,
                format!("an exact capacity must lie within [0, {max_size}], is {adjustment}"),
            ));
        }
        AdjustmentType::Percent if magnitude > MAX_PERCENT.unsigned_abs() => {
            return Err(Rejection::invalid(
                field,
                format!(
                    "a percent must lie within [-{MAX_PERCENT}, {MAX_PERCENT}], is {adjustment}"
                ),
            ));
        }
        _ => {}
    }
    Ok(())
}

/// The fields both types share.
fn validate_rest(definition: &PolicyDefinition) -> Result<(), Rejection> {
    if let Some(step) = definition.min_adjustment_step {
        if definition.adjustment_type != AdjustmentType::Percent {
            return Err(Rejection::invalid(
                "min_adjustment_step",
                "is only allowed with adjustment_type percent",
            ));
        }
        if step == 0 || step > MAX_GROUP_SIZE {
            return Err(Rejection::invalid(
                "min_adjustment_step",
                format!("must lie within [1, {MAX_GROUP_SIZE}], is {step}"),
            ));
        }
    }
    if let Some(cooldown) = definition.cooldown_seconds {
        validate_cooldown("cooldown_seconds", cooldown)?;
    }
    Ok(())
}

/// Records what an event says. Holds no rules.
pub fn apply(state: PolicyState, event: &PolicyEvent) -> PolicyState {
    if let PolicyEvent::Created {
        id,
        group_id,
        tenant_id,
        definition,
        at,
    } = event
    {
        return Some(Policy {
            id: id.clone(),
            group_id: group_id.clone(),
            tenant_id: tenant_id.clone(),
            definition: definition.clone(),
            deleted: false,
            created_at: *at,
        });
    }
    let mut policy = state?;
    match event {
        PolicyEvent::Created { .. } => {}
        PolicyEvent::Updated { definition, .. } => policy.definition = definition.clone(),
        PolicyEvent::Deleted { .. } => policy.deleted = true,
    }
    Some(policy)
}

/// Rebuilds a policy from its events, oldest first.
pub fn replay<'a>(events: impl IntoIterator<Item = &'a PolicyEvent>) -> PolicyState {
    events.into_iter().fold(None, apply)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_secs(1_700_000_000);

    proptest::proptest! {
        #[test]
        fn every_i64_adjustment_is_accepted_exactly_within_its_types_range(
            adjustment in proptest::prelude::any::<i64>(),
            kind in 0usize..3,
        ) {
            let (adjustment_type, low, high) = [
                (AdjustmentType::Change, -10_000i128, 10_000i128),
                (AdjustmentType::Percent, -1_000, 1_000),
                (AdjustmentType::Exact, 0, 10_000),
            ][kind];
            let within = (low..=high).contains(&i128::from(adjustment));
            let accepted = decide(&None, &create(definition(adjustment_type, adjustment)), T0).is_ok();
            proptest::prop_assert_eq!(accepted, within, "{:?} {}", adjustment_type, adjustment);
        }
    }

    #[test]
    fn the_most_negative_adjustment_is_refused_not_wrapped() {
        for kind in [
            AdjustmentType::Change,
            AdjustmentType::Percent,
            AdjustmentType::Exact,
        ] {
            let refused = decide(&None, &create(definition(kind, i64::MIN)), T0);
            assert_eq!(refused.unwrap_err().code(), "invalid_input", "{kind:?}");
        }
    }

    fn definition(adjustment_type: AdjustmentType, adjustment: i64) -> PolicyDefinition {
        PolicyDefinition::simple("scale out", adjustment_type, adjustment)
    }

    fn create(definition: PolicyDefinition) -> PolicyCommand {
        PolicyCommand::Create {
            id: PolicyId::new("pol_1"),
            group_id: GroupId::new("grp_1"),
            tenant_id: TenantId::new("ten_1"),
            definition,
        }
    }

    fn given(definition: PolicyDefinition) -> PolicyState {
        replay(&decide(&None, &create(definition), T0).unwrap())
    }

    fn invalid_field(result: Result<Vec<PolicyEvent>, Rejection>) -> &'static str {
        match result {
            Err(Rejection::Invalid { field, .. }) => field,
            other => panic!("expected an invalid input, got {other:?}"),
        }
    }

    /// A step's (lower, upper, adjustment).
    type Bounds = (Option<f64>, Option<f64>, i64);

    fn step_definition(steps: &[Bounds]) -> PolicyDefinition {
        PolicyDefinition {
            policy_type: PolicyType::Step,
            steps: steps
                .iter()
                .map(|&(lower, upper, adjustment)| Step {
                    lower,
                    upper,
                    adjustment,
                })
                .collect(),
            ..definition(AdjustmentType::Change, 0)
        }
    }

    fn created(definition: PolicyDefinition) -> Result<Vec<PolicyEvent>, Rejection> {
        decide(&None, &create(definition), T0)
    }

    #[test]
    fn steps_that_overlap_leave_a_gap_or_are_open_in_the_middle_are_refused_naming_steps() {
        let fine = [
            (None, Some(0.0), -1),
            (Some(0.0), Some(10.0), 1),
            (Some(10.0), None, 2),
        ];
        assert!(created(step_definition(&fine)).is_ok());
        let refused: [&[Bounds]; 8] = [
            &[],
            &[(None, None, 1)],
            &[(Some(0.0), Some(10.0), 1), (Some(5.0), None, 2)],
            &[(Some(0.0), Some(10.0), 1), (Some(12.0), None, 2)],
            &[(Some(0.0), None, 1), (None, Some(0.0), 2)],
            &[(Some(10.0), Some(0.0), 1), (Some(0.0), None, 1)],
            &[(Some(-10.0), Some(0.0), -1)],
            &[(Some(0.0), Some(10.0), 1)],
        ];
        for steps in refused {
            assert_eq!(
                invalid_field(created(step_definition(steps))),
                "steps",
                "{steps:?}"
            );
        }
        let nan = [(Some(f64::NAN), None, 1)];
        assert_eq!(invalid_field(created(step_definition(&nan))), "steps");
        let exact_negative = PolicyDefinition {
            adjustment_type: AdjustmentType::Exact,
            ..step_definition(&[(Some(0.0), None, -1)])
        };
        assert_eq!(invalid_field(created(exact_negative)), "steps");
    }

    #[test]
    fn each_type_refuses_the_others_fields() {
        let up = [(Some(0.0), None, 1)];
        let cases = [
            (
                PolicyDefinition {
                    adjustment: 3,
                    ..step_definition(&up)
                },
                "adjustment",
            ),
            (
                PolicyDefinition {
                    cooldown_seconds: Some(60),
                    ..step_definition(&up)
                },
                "cooldown_seconds",
            ),
            (
                PolicyDefinition {
                    warmup_seconds: Some(86_401),
                    ..step_definition(&up)
                },
                "warmup_seconds",
            ),
            (
                PolicyDefinition {
                    warmup_seconds: Some(60),
                    ..definition(AdjustmentType::Change, 1)
                },
                "warmup_seconds",
            ),
            (
                PolicyDefinition {
                    steps: step_definition(&up).steps,
                    ..definition(AdjustmentType::Change, 1)
                },
                "steps",
            ),
        ];
        for (definition, field) in cases {
            assert_eq!(invalid_field(created(definition)), field);
        }
    }

    #[test]
    fn a_created_policy_hands_its_adjustment_to_the_group() {
        let policy = given(PolicyDefinition {
            min_adjustment_step: Some(2),
            ..definition(AdjustmentType::Percent, 25)
        })
        .unwrap();
        assert_eq!(
            policy.adjustment(),
            Adjustment {
                kind: AdjustmentType::Percent,
                value: 25,
                min_adjustment_step: Some(2)
            }
        );
    }

    #[test]
    fn a_min_adjustment_step_is_refused_unless_the_policy_is_a_percent() {
        for kind in [AdjustmentType::Change, AdjustmentType::Exact] {
            let def = PolicyDefinition {
                min_adjustment_step: Some(2),
                ..definition(kind, 1)
            };
            assert_eq!(
                invalid_field(decide(&None, &create(def), T0)),
                "min_adjustment_step"
            );
        }
        let zero_step = PolicyDefinition {
            min_adjustment_step: Some(0),
            ..definition(AdjustmentType::Percent, 10)
        };
        assert_eq!(
            invalid_field(decide(&None, &create(zero_step), T0)),
            "min_adjustment_step"
        );
    }

    #[test]
    fn an_exact_adjustment_must_not_be_negative() {
        let result = decide(&None, &create(definition(AdjustmentType::Exact, -1)), T0);
        assert_eq!(invalid_field(result), "adjustment");
        assert!(decide(&None, &create(definition(AdjustmentType::Exact, 0)), T0).is_ok());
    }

    #[test]
    fn a_percent_adjustment_lies_within_plus_or_minus_1000() {
        assert!(decide(
            &None,
            &create(definition(AdjustmentType::Percent, -1000)),
            T0
        )
        .is_ok());
        assert!(decide(
            &None,
            &create(definition(AdjustmentType::Percent, 1000)),
            T0
        )
        .is_ok());
        let result = decide(
            &None,
            &create(definition(AdjustmentType::Percent, 1001)),
            T0,
        );
        assert_eq!(invalid_field(result), "adjustment");
    }

    #[test]
    fn a_change_may_be_negative_but_not_beyond_the_largest_group() {
        assert!(decide(&None, &create(definition(AdjustmentType::Change, -3)), T0).is_ok());
        let result = decide(
            &None,
            &create(definition(AdjustmentType::Change, 10_001)),
            T0,
        );
        assert_eq!(invalid_field(result), "adjustment");
    }

    #[test]
    fn a_blank_name_and_a_cooldown_over_a_week_are_refused() {
        let blank = PolicyDefinition {
            name: "".into(),
            mode: Mode::Live,
            policy_type: PolicyType::Simple,
            steps: Vec::new(),
            warmup_seconds: None,
            ..definition(AdjustmentType::Change, 1)
        };
        assert_eq!(invalid_field(decide(&None, &create(blank), T0)), "name");
        let long = PolicyDefinition {
            cooldown_seconds: Some(86_400 * 7 + 1),
            ..definition(AdjustmentType::Change, 1)
        };
        assert_eq!(
            invalid_field(decide(&None, &create(long), T0)),
            "cooldown_seconds"
        );
    }

    #[test]
    fn an_update_is_validated_as_a_whole_and_replaces_the_definition() {
        let state = given(PolicyDefinition {
            min_adjustment_step: Some(2),
            ..definition(AdjustmentType::Percent, 10)
        });
        let to_change = PolicyPatch {
            adjustment_type: Some(AdjustmentType::Change),
            ..PolicyPatch::default()
        };
        let result = decide(&state, &PolicyCommand::Update(to_change), T0);
        assert_eq!(invalid_field(result), "min_adjustment_step");

        let to_change_without_step = PolicyPatch {
            adjustment_type: Some(AdjustmentType::Change),
            min_adjustment_step: Some(None),
            cooldown_seconds: Some(Some(30)),
            ..PolicyPatch::default()
        };
        let events = decide(&state, &PolicyCommand::Update(to_change_without_step), T0).unwrap();
        let policy = events.iter().fold(state, apply).unwrap();
        assert_eq!(policy.definition.adjustment_type, AdjustmentType::Change);
        assert_eq!(policy.definition.min_adjustment_step, None);
        assert_eq!(policy.definition.cooldown_seconds, Some(30));
    }

    #[test]
    fn an_update_that_changes_nothing_records_nothing() {
        let state = given(definition(AdjustmentType::Change, 1));
        let same = PolicyPatch {
            adjustment: Some(1),
            ..PolicyPatch::default()
        };
        assert_eq!(decide(&state, &PolicyCommand::Update(same), T0), Ok(vec![]));
    }

    #[test]
    fn a_deleted_policy_is_not_found_and_cannot_be_created_again() {
        let state = given(definition(AdjustmentType::Change, 1));
        let events = decide(&state, &PolicyCommand::Delete, T0).unwrap();
        let deleted = events.iter().fold(state, apply);
        assert_eq!(
            decide(&deleted, &PolicyCommand::Delete, T0)
                .unwrap_err()
                .status(),
            404
        );
        let update = PolicyCommand::Update(PolicyPatch::default());
        assert_eq!(decide(&deleted, &update, T0).unwrap_err().status(), 404);
        let again = create(definition(AdjustmentType::Change, 1));
        assert_eq!(decide(&deleted, &again, T0).unwrap_err().status(), 409);
        assert_eq!(
            decide(&None, &PolicyCommand::Delete, T0)
                .unwrap_err()
                .status(),
            404
        );
    }

    #[test]
    fn policy_events_round_trip_through_json_with_a_flat_definition() {
        let events = decide(&None, &create(definition(AdjustmentType::Percent, -25)), T0).unwrap();
        let json = serde_json::to_value(&events[0]).unwrap();
        assert_eq!(json["type"], "created");
        assert_eq!(json["adjustment_type"], "percent");
        assert_eq!(json["adjustment"], -25);
        let back: PolicyEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, events[0]);
    }
}
