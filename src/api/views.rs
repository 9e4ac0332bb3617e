//! What the API shows of each object (never a secret or a token hash).

use flotilla_actors::clock::Timestamp;
use flotilla_actors::domain::alarm::{Alarm, AlarmState, Comparison, Statistic, TreatMissing};
use flotilla_actors::domain::group::{Group, Outcome};
use flotilla_actors::domain::policy::{Mode, Policy, PolicyType, Step, Tracking};
use flotilla_actors::domain::scaling::AdjustmentType;
use flotilla_actors::domain::server::{Server, ServerState};
use flotilla_actors::domain::tracking::{MissingData, TargetKind};
use flotilla_actors::domain::webhook::Webhook;
use flotilla_actors::supervisor::PolicyExecution;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::openapi::mirror;
use crate::audit::format_millis;

fn time(at: Timestamp) -> String {
    format_millis(at.as_millis())
}

/// A group.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupView {
    /// The group's id (`grp_...`).
    pub id: String,
    /// The group's name, 1 to 255 characters.
    pub name: String,
    /// The fewest servers the group keeps.
    pub min_size: u32,
    /// The most servers the group keeps, at most 10000.
    pub max_size: u32,
    /// The capacity the group converges to, within `min_size`..`max_size`.
    pub desired_capacity: u32,
    /// Seconds after a policy execution that changed capacity during which further executions
    /// answer `cooldown`, unless the policy has its own.
    pub cooldown_seconds: u32,
    /// The launch configuration: `provider` (`process`, `http`, `simulated`) and its fields.
    #[schema(value_type = Object)]
    pub launch: Value,
    /// Free-form JSON object, kept as given.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// Whether policy executions are suspended in either direction (they answer `paused`).
    pub paused: bool,
    /// The directions suspended.
    pub pause: PauseView,
    /// Servers running.
    pub active: u32,
    /// Servers starting.
    pub pending: u32,
    /// Servers being deleted.
    pub deleting: u32,
    /// Whether a forced deletion is under way (`DELETE ?force=true` answered 409 while its
    /// servers were still being deleted): nothing is launched, every server is being deleted,
    /// and the same request deletes the group once they are gone.
    pub draining: bool,
    /// When the running cooldown ends (RFC 3339), if one runs.
    pub cooldown_until: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// The node that owns the group (SPEC 9): converges it and evaluates its alarms and
    /// schedules; `null` while its shard's lease is between holders.
    pub owner: Option<String>,
    /// The fencing token of the owner's lease on the group's shard (1 alone on sled).
    pub fencing_token: Option<u64>,
}

/// A group's paused directions (SPEC 2.3).
#[derive(Debug, Serialize, ToSchema)]
pub struct PauseView {
    /// Executions that would lower capacity answer `paused`.
    pub scale_in: bool,
    /// Executions that would raise capacity answer `paused`.
    pub scale_out: bool,
}

/// The answer to a group's create: the group and its metrics token, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupCreated {
    /// The group created; its fields sit beside `metrics_token`.
    #[serde(flatten)]
    pub group: GroupView,
    /// The write-only token for `POST /v1/metrics`; only its hash is kept.
    pub metrics_token: String,
}

/// The answer to a tenant's create: its token, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantCreated {
    /// The tenant's id (`ten_...`).
    pub id: String,
    /// The tenant's name.
    pub name: String,
    /// The tenant's bearer token; only its hash is kept.
    pub token: String,
}

impl From<&Group> for GroupView {
    fn from(g: &Group) -> Self {
        GroupView {
            id: g.id.to_string(),
            name: g.name.clone(),
            min_size: g.min_size,
            max_size: g.max_size,
            desired_capacity: g.desired_capacity,
            cooldown_seconds: g.cooldown_seconds,
            launch: g.launch.value(),
            metadata: g.metadata.clone(),
            paused: g.pause.any(),
            pause: PauseView {
                scale_in: g.pause.scale_in,
                scale_out: g.pause.scale_out,
            },
            active: g.count(ServerState::Active),
            pending: g.count(ServerState::Pending),
            deleting: g.count(ServerState::Deleting),
            draining: g.draining,
            cooldown_until: g.cooldown_until.map(time),
            created_at: time(g.created_at),
            owner: None,
            fencing_token: None,
        }
    }
}

impl GroupView {
    /// The view with the group's owner and its lease's fencing token, as `ownership` knows them.
    pub fn owned(mut self, ownership: &crate::cluster::Ownership, now: Timestamp) -> Self {
        if let Some((owner, token)) = ownership.owner(&self.id, now) {
            self.owner = Some(owner);
            self.fencing_token = Some(token);
        }
        self
    }
}

/// A server of a group.
#[derive(Debug, Serialize)]
pub struct ServerView {
    /// The server's id (`srv_...`).
    pub id: String,
    /// The id of the group it belongs to.
    pub group_id: String,
    /// `pending`, `active`, `failed` or `deleting`.
    pub state: ServerState,
    /// The provider's handle (`{"pid": .., "start_time": ..}` for `process`); null until launched.
    pub provider: Value,
    /// When its latest launch was requested (RFC 3339).
    pub launched_at: String,
    /// How many times this server's slot failed.
    pub failures: u32,
    /// Why it failed last.
    pub last_failure: Option<String>,
    /// When it failed last (RFC 3339).
    pub last_failure_at: Option<String>,
}

impl ServerView {
    /// The view of server `s` of `group`.
    pub fn new(group: &Group, s: &Server) -> Self {
        ServerView {
            id: s.id.to_string(),
            group_id: group.id.to_string(),
            state: s.state,
            provider: s.provider.value(),
            launched_at: time(s.launched_at),
            failures: s.failures,
            last_failure: s.last_failure.as_ref().map(|failure| failure.0.clone()),
            last_failure_at: s.last_failure.as_ref().map(|failure| time(failure.1)),
        }
    }
}

/// A policy.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    /// The policy's id (`pol_...`).
    pub id: String,
    /// The id of the group it resizes.
    pub group_id: String,
    /// The policy's name, 1 to 255 characters.
    pub name: String,
    /// `simple` or `step`.
    #[schema(value_type = mirror::PolicyType)]
    pub policy_type: PolicyType,
    /// A step policy's steps.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub steps: Vec<Step>,
    /// A step policy's warm-up, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_seconds: Option<u32>,
    /// `live` or `shadow`.
    #[schema(value_type = mirror::Mode)]
    pub mode: Mode,
    /// How `adjustment` is read (a simple or step policy's).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<mirror::AdjustmentType>)]
    pub adjustment_type: Option<AdjustmentType>,
    /// The adjustment; may be negative for `change` and `percent` (a simple policy's; 0 for a
    /// step policy's, whose steps carry theirs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adjustment: Option<i64>,
    /// For `percent` only: the smallest magnitude of a non-zero change (at least 1).
    pub min_adjustment_step: Option<u32>,
    /// Seconds of cooldown after this policy changes capacity; the group's when null.
    pub cooldown_seconds: Option<u32>,
    /// A target-tracking policy's settings.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<TrackingView>,
    /// When the policy was created (RFC 3339).
    pub created_at: String,
}

/// A target-tracking policy's settings (SPEC 2.1).
#[derive(Debug, Serialize, ToSchema)]
pub struct TrackingView {
    /// The metric it follows (absent for a policy on a query).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub metric: String,
    /// The PromQL query it follows instead of a metric.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// How a period's samples become its datapoint.
    #[schema(value_type = mirror::Statistic)]
    pub statistic: Statistic,
    /// The period, seconds: each closed period is a decision.
    pub period_seconds: u32,
    /// The target.
    pub target: f64,
    /// `average` or `total`.
    #[schema(value_type = mirror::TargetKind)]
    pub target_kind: TargetKind,
    /// `average`: no change while |value / target − 1| is at most this.
    pub tolerance: f64,
    /// `total`: at capacity 0, the value a period must exceed to scale out.
    pub activation_threshold: f64,
    /// `hold`, `fallback` or `fallback_if_higher`.
    #[schema(value_type = mirror::MissingData)]
    pub missing_data: MissingData,
    /// The capacity a fallback goes to.
    pub fallback_capacity: u32,
    /// Missing periods in a row before a fallback.
    pub fallback_after_periods: u32,
    /// Scale-in goes to the highest recommendation of this many seconds.
    pub scale_in_stabilization_seconds: u32,
    /// Whether it never scales in.
    pub disable_scale_in: bool,
}

impl From<&Tracking> for TrackingView {
    fn from(t: &Tracking) -> Self {
        TrackingView {
            metric: t.metric.clone(),
            query: t.query.clone(),
            statistic: t.statistic,
            period_seconds: t.period_seconds,
            target: t.target.target,
            target_kind: t.target.kind,
            tolerance: t.target.tolerance,
            activation_threshold: t.target.activation_threshold,
            missing_data: t.target.missing_data,
            fallback_capacity: t.target.fallback_capacity,
            fallback_after_periods: t.target.fallback_after_periods,
            scale_in_stabilization_seconds: t.scale_in_stabilization_seconds,
            disable_scale_in: t.disable_scale_in,
        }
    }
}

impl From<&Policy> for PolicyView {
    fn from(p: &Policy) -> Self {
        // A target-tracking policy has no adjustment.
        let adjusts = p.definition.tracking.is_none();
        PolicyView {
            id: p.id.to_string(),
            group_id: p.group_id.to_string(),
            name: p.definition.name.clone(),
            policy_type: p.definition.policy_type,
            steps: p.definition.steps.clone(),
            warmup_seconds: p.definition.warmup_seconds,
            mode: p.definition.mode,
            adjustment_type: adjusts.then_some(p.definition.adjustment_type),
            adjustment: adjusts.then_some(p.definition.adjustment),
            min_adjustment_step: p.definition.min_adjustment_step,
            cooldown_seconds: p.definition.cooldown_seconds,
            tracking: p.definition.tracking.as_deref().map(TrackingView::from),
            created_at: time(p.created_at),
        }
    }
}

/// A webhook; `secret` only in the answers to create and rotate.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    /// The webhook's id, unguessable.
    pub id: String,
    /// The webhook's name.
    pub name: String,
    /// Where to POST signed calls: `<public URL>/v1/hooks/<id>`.
    pub url: String,
    /// The id of the policy a call executes.
    pub policy_id: String,
    /// The id of that policy's group.
    pub group_id: String,
    /// `whsec_<base64>`: only in the answers to create and rotate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// When the last of the replaced secrets stops being valid, during a rotation's grace.
    pub previous_secret_valid_until: Option<String>,
    /// When the webhook was created (RFC 3339).
    pub created_at: String,
}

impl WebhookView {
    /// The view of `w`, reachable at `public_url`.
    pub fn new(w: &Webhook, public_url: &str, with_secret: bool) -> Self {
        WebhookView {
            id: w.id.to_string(),
            name: w.name.clone(),
            url: format!("{}/v1/hooks/{}", public_url.trim_end_matches('/'), w.id),
            policy_id: w.policy_id.to_string(),
            group_id: w.group_id.to_string(),
            secret: with_secret.then(|| w.secret.to_whsec()),
            previous_secret_valid_until: w.previous.iter().map(|p| p.valid_until).max().map(time),
            created_at: time(w.created_at),
        }
    }
}

/// An alarm: its definition, state and reason.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlarmView {
    /// The alarm's id (`alm_...`).
    pub id: String,
    /// The alarm's name, 1 to 255 characters.
    pub name: String,
    /// The id of the group whose metric samples it watches.
    pub group_id: String,
    /// The name of the metric it watches (absent for an alarm on a query).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub metric: String,
    /// The PromQL query it evaluates instead of a metric.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// How a period's samples reduce to its datapoint.
    #[schema(value_type = mirror::Statistic)]
    pub statistic: Statistic,
    /// The length of a period, seconds.
    pub period_seconds: u32,
    /// N: how many of the last closed periods are evaluated.
    pub evaluation_periods: u32,
    /// M: how many of those N must breach for ALARM (1 <= M <= N).
    pub datapoints_to_alarm: u32,
    /// How a datapoint is compared with `threshold`.
    #[schema(value_type = mirror::Comparison)]
    pub comparison: Comparison,
    /// The value a datapoint is compared with.
    pub threshold: f64,
    /// How periods without samples count.
    #[schema(value_type = mirror::TreatMissing)]
    pub treat_missing: TreatMissing,
    /// Policy ids executed on a transition into ALARM.
    pub alarm_actions: Vec<String>,
    /// Policy ids executed on a transition into OK.
    pub ok_actions: Vec<String>,
    /// Whether `alarm_actions` run again at every evaluation while in ALARM.
    pub repeat_actions: bool,
    /// The alarm's current state.
    #[schema(value_type = mirror::AlarmState)]
    pub state: AlarmState,
    /// Why it is in that state (the datapoints that decided it).
    pub state_reason: String,
    /// RFC 3339.
    pub state_changed_at: String,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&Alarm> for AlarmView {
    fn from(a: &Alarm) -> Self {
        let d = &a.definition;
        AlarmView {
            id: a.id.to_string(),
            name: d.name.clone(),
            group_id: d.group_id.to_string(),
            metric: d.metric.clone(),
            query: d.query.clone(),
            statistic: d.statistic,
            period_seconds: d.period_seconds,
            evaluation_periods: d.evaluation_periods,
            datapoints_to_alarm: d.datapoints_to_alarm,
            comparison: d.comparison,
            threshold: d.threshold,
            treat_missing: d.treat_missing,
            alarm_actions: d.alarm_actions.iter().map(ToString::to_string).collect(),
            ok_actions: d.ok_actions.iter().map(ToString::to_string).collect(),
            repeat_actions: d.repeat_actions,
            state: a.state,
            state_reason: a.state_reason.clone(),
            state_changed_at: time(a.state_changed_at),
            created_at: time(a.created_at),
        }
    }
}

/// What a policy execution did, as its `outcome` field names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// Capacity changed `from` → `to`; a cooldown started.
    Executed,
    /// The computed capacity is the current one (`capacity`); no cooldown.
    NoChange,
    /// The group is cooling down; retry after `retry_after_seconds`.
    Cooldown,
    /// The group is paused (in the direction the capacity would move).
    Paused,
    /// A shadow policy's execution: capacity stays at `from`; `to` is what it computed and
    /// `would` what a live execution would have done.
    Shadow,
}

impl OutcomeKind {
    /// The snake_case name, as in the body and the metrics' labels.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Executed => "executed",
            OutcomeKind::NoChange => "no_change",
            OutcomeKind::Cooldown => "cooldown",
            OutcomeKind::Paused => "paused",
            OutcomeKind::Shadow => "shadow",
        }
    }
}

impl From<&Outcome> for OutcomeKind {
    fn from(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Executed { .. } => OutcomeKind::Executed,
            Outcome::NoChange { .. } => OutcomeKind::NoChange,
            Outcome::Cooldown { .. } => OutcomeKind::Cooldown,
            Outcome::Paused => OutcomeKind::Paused,
            Outcome::Shadow { .. } => OutcomeKind::Shadow,
        }
    }
}

/// The 202 body of a policy execution (direct or by webhook): the outcome (SPEC 3) with the
/// group's capacity after it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionView {
    /// What the execution did; says which of the fields below are present.
    pub outcome: OutcomeKind,
    /// With `executed` and `shadow`: the capacity before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<u32>,
    /// With `executed`: the capacity after; with `shadow`, the capacity the policy computed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<u32>,
    /// With `shadow`: what a live execution would have done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would: Option<OutcomeKind>,
    /// With `no_change`: the unchanged capacity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    /// With `cooldown`: seconds until the cooldown ends, rounded up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
    /// The id of the policy executed.
    pub policy_id: String,
    /// The id of its group.
    pub group_id: String,
    /// The group's desired capacity after the execution.
    pub desired_capacity: u32,
}

impl From<&PolicyExecution> for ExecutionView {
    fn from(run: &PolicyExecution) -> Self {
        let (mut from, mut to, mut capacity, mut retry_after_seconds) = (None, None, None, None);
        let mut would = None;
        match &run.outcome {
            Outcome::Executed {
                from: before,
                to: after,
                cooldown_until: _,
            } => (from, to) = (Some(*before), Some(*after)),
            Outcome::NoChange { capacity: c } => capacity = Some(*c),
            Outcome::Cooldown {
                retry_after_seconds: seconds,
            } => retry_after_seconds = Some(*seconds),
            Outcome::Paused => {}
            Outcome::Shadow {
                from: before,
                to: after,
                would: live,
            } => {
                (from, to) = (Some(*before), Some(*after));
                would = Some(OutcomeKind::from(live.as_ref()));
            }
        }
        ExecutionView {
            outcome: OutcomeKind::from(&run.outcome),
            from,
            to,
            would,
            capacity,
            retry_after_seconds,
            policy_id: run.policy_id.to_string(),
            group_id: run.group_id.to_string(),
            desired_capacity: run.desired_capacity,
        }
    }
}

/// `{"status": ...}` of the health endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// `ok`, `ready` or `replaying`.
    pub status: String,
}

#[cfg(test)]
mod tests {
    use flotilla_actors::domain::alarm::{AlarmDefinition, AlarmState};
    use flotilla_actors::domain::{AlarmId, GroupId, PolicyId, TenantId};

    use super::*;

    #[test]
    fn an_alarm_shows_its_definition_state_and_times_without_owner_or_deletion() {
        let alarm = Alarm {
            id: AlarmId::new("alm_1"),
            tenant_id: TenantId::new("ten_1"),
            definition: AlarmDefinition {
                name: "cpu high".into(),
                group_id: GroupId::new("grp_1"),
                metric: "cpu".into(),
                query: None,
                statistic: Statistic::Avg,
                period_seconds: 60,
                evaluation_periods: 3,
                datapoints_to_alarm: 2,
                comparison: Comparison::Gt,
                threshold: 0.8,
                treat_missing: TreatMissing::NotBreaching,
                alarm_actions: vec![PolicyId::new("pol_1")],
                ok_actions: vec![],
                repeat_actions: true,
            },
            state: AlarmState::InsufficientData,
            state_reason: "unchecked".into(),
            state_changed_at: Timestamp::from_secs(1),
            deleted: false,
            created_at: Timestamp::EPOCH,
            transitions: 1,
            pending_actions: vec![],
            state_value: None,
        };
        // The alarm's own serialization, less the owner, the deletion flag and the bookkeeping of
        // its actions, with times as RFC 3339: what the API showed before the view had explicit
        // fields.
        let mut expected = serde_json::to_value(&alarm).unwrap();
        let map = expected.as_object_mut().unwrap();
        map.remove("tenant_id");
        map.remove("deleted");
        map.remove("transitions");
        map.remove("pending_actions");
        map.insert(
            "state_changed_at".into(),
            time(alarm.state_changed_at).into(),
        );
        map.insert("created_at".into(), time(alarm.created_at).into());
        assert_eq!(
            serde_json::to_value(AlarmView::from(&alarm)).unwrap(),
            expected
        );
    }
}
