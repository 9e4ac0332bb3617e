//! `/v1/groups/{id}/policies`: a group's scaling policies, and executing one directly.

use actix_web::{web, HttpResponse};
use flotilla_actors::aggregate::{Alarms, Groups, Policies, Receivers};
use flotilla_actors::domain::alarm::AlarmCommand;
use flotilla_actors::domain::alarm::Statistic;
use flotilla_actors::domain::policy::{
    Breach, Mode, PolicyCommand, PolicyDefinition, PolicyPatch, PolicyType, Step, Tracking,
    TrackingPatch,
};
use flotilla_actors::domain::scaling::AdjustmentType;
use flotilla_actors::domain::tracking::{MissingData, TargetKind};
use flotilla_actors::domain::{AlarmId, Cause, GroupId, PolicyId, ReceiverId, Rejection, TenantId};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::auth::Tenant;
use super::error::{ReadErrors, RemoveErrors, WriteErrors};
use super::groups::owned as owned_group;
use super::openapi::mirror;
use super::resource;
use super::views::{ExecutionView, PolicyView};
use super::{ApiError, AppState, List, ListQuery};

/// The body of a policy's create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePolicy {
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*[^\\s\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069\\u00ad\\u034f\\u061c\\u115f\\u1160\\u180e\\u200b-\\u200f\\u2060-\\u2064\\u3164\\ufe00-\\ufe0f\\ufeff\\uffa0][^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*$"
    )]
    name: String,
    /// `live` (the default) or `shadow`: executions recorded with what they would have done,
    /// capacity untouched.
    #[schema(value_type = Option<mirror::Mode>)]
    mode: Option<Mode>,
    /// `simple` (the default), `step` or `target_tracking` (SPEC 2.1).
    #[schema(value_type = Option<mirror::PolicyType>)]
    policy_type: Option<PolicyType>,
    /// How a simple or step policy's adjustments are read (required for one).
    #[schema(value_type = Option<mirror::AdjustmentType>)]
    adjustment_type: Option<AdjustmentType>,
    /// A simple policy's adjustment (required for one); may be negative for `change` and
    /// `percent`.
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(minimum = -10000, maximum = 10000)]
    adjustment: Option<i64>,
    /// A step policy's steps, from the lowest: bounds relative to the breach threshold, no
    /// overlap and no gap.
    #[serde(default)]
    #[schema(max_items = 20)]
    steps: Vec<StepBody>,
    /// A step policy's warm-up, seconds.
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(maximum = 86400)]
    warmup_seconds: Option<u32>,
    /// For `percent` only: the smallest magnitude of a non-zero change.
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(minimum = 1, maximum = 10000)]
    min_adjustment_step: Option<u32>,
    /// The cooldown this policy's executions start; the group's when absent.
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(maximum = 604800)]
    cooldown_seconds: Option<u32>,
    /// A target-tracking policy's metric, as samples name it (required for one).
    #[schema(min_length = 1, max_length = 255, pattern = "^[ -~]*[!-~][ -~]*$")]
    metric: Option<String>,
    /// A target-tracking policy's PromQL query instead of a metric (needs the operator's
    /// `--prometheus-url`; SPEC 5.2).
    #[schema(min_length = 1, max_length = 4096)]
    query: Option<String>,
    /// A target-tracking policy's statistic (default `avg`).
    #[schema(value_type = Option<mirror::Statistic>)]
    statistic: Option<Statistic>,
    /// A target-tracking policy's period, seconds (default 60).
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(minimum = 1, maximum = 86400)]
    period_seconds: Option<u32>,
    /// A target-tracking policy's target, above 0 (required for one).
    #[schema(exclusive_minimum = 0)]
    target: Option<f64>,
    /// `average` (the default): a per-server figure; `total`: a group total.
    #[schema(value_type = Option<mirror::TargetKind>)]
    target_kind: Option<TargetKind>,
    /// `average` only: no change while |value / target − 1| is at most this (default 0.1).
    #[schema(minimum = 0, maximum = 1)]
    tolerance: Option<f64>,
    /// `total` only: at capacity 0, the value a period must exceed to scale out (default 0).
    activation_threshold: Option<f64>,
    /// `hold` (the default), `fallback` or `fallback_if_higher`.
    #[schema(value_type = Option<mirror::MissingData>)]
    missing_data: Option<MissingData>,
    /// The capacity a fallback goes to (default 0).
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(maximum = 100000)]
    fallback_capacity: Option<u32>,
    /// Missing periods in a row before a fallback (default 3).
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(minimum = 1, maximum = 100)]
    fallback_after_periods: Option<u32>,
    /// Scale-in goes to the highest recommendation of this many seconds (default 300).
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(maximum = 3600)]
    scale_in_stabilization_seconds: Option<u32>,
    /// Whether the policy never scales in (default false).
    disable_scale_in: Option<bool>,
}

/// One step of a step policy (SPEC 2.1).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepBody {
    /// The lower bound, relative to the threshold; null (or absent) is unbounded.
    #[serde(default)]
    lower: Option<f64>,
    /// The upper bound, relative to the threshold; null (or absent) is unbounded.
    #[serde(default)]
    upper: Option<f64>,
    /// The adjustment, read by the policy's `adjustment_type`.
    #[serde(deserialize_with = "super::whole::required")]
    #[schema(minimum = -10000, maximum = 10000)]
    adjustment: i64,
}

impl From<StepBody> for Step {
    fn from(body: StepBody) -> Step {
        Step {
            lower: body.lower,
            upper: body.upper,
            adjustment: body.adjustment,
        }
    }
}

/// The body of a policy's update; `null` clears the optional fields.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*[^\\s\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069\\u00ad\\u034f\\u061c\\u115f\\u1160\\u180e\\u200b-\\u200f\\u2060-\\u2064\\u3164\\ufe00-\\ufe0f\\ufeff\\uffa0][^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*$"
    )]
    name: Option<String>,
    /// Switches the policy between `live` and `shadow`.
    #[schema(value_type = Option<mirror::Mode>)]
    mode: Option<Mode>,
    #[schema(value_type = Option<mirror::AdjustmentType>)]
    adjustment_type: Option<AdjustmentType>,
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(minimum = -10000, maximum = 10000)]
    adjustment: Option<i64>,
    /// A step policy's new steps.
    #[schema(max_items = 20)]
    steps: Option<Vec<StepBody>>,
    /// A step policy's new warm-up; `null` removes it.
    #[schema(value_type = Option<u32>, maximum = 86400)]
    #[serde(default, deserialize_with = "super::whole::nullable")]
    warmup_seconds: Option<Option<u32>>,
    /// `null` clears it.
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    #[serde(default, deserialize_with = "super::whole::nullable")]
    min_adjustment_step: Option<Option<u32>>,
    /// `null` clears it (the group's cooldown applies).
    #[schema(value_type = Option<u32>, maximum = 604800)]
    #[serde(default, deserialize_with = "super::whole::nullable")]
    cooldown_seconds: Option<Option<u32>>,
    /// A target-tracking policy's metric, as samples name it (required for one).
    #[schema(min_length = 1, max_length = 255, pattern = "^[ -~]*[!-~][ -~]*$")]
    metric: Option<String>,
    /// A target-tracking policy's PromQL query instead of a metric (needs the operator's
    /// `--prometheus-url`; SPEC 5.2).
    #[schema(min_length = 1, max_length = 4096)]
    query: Option<String>,
    /// A target-tracking policy's statistic (default `avg`).
    #[schema(value_type = Option<mirror::Statistic>)]
    statistic: Option<Statistic>,
    /// A target-tracking policy's period, seconds (default 60).
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(minimum = 1, maximum = 86400)]
    period_seconds: Option<u32>,
    /// A target-tracking policy's target, above 0 (required for one).
    #[schema(exclusive_minimum = 0)]
    target: Option<f64>,
    /// `average` (the default): a per-server figure; `total`: a group total.
    #[schema(value_type = Option<mirror::TargetKind>)]
    target_kind: Option<TargetKind>,
    /// `average` only: no change while |value / target − 1| is at most this (default 0.1).
    #[schema(minimum = 0, maximum = 1)]
    tolerance: Option<f64>,
    /// `total` only: at capacity 0, the value a period must exceed to scale out (default 0).
    activation_threshold: Option<f64>,
    /// `hold` (the default), `fallback` or `fallback_if_higher`.
    #[schema(value_type = Option<mirror::MissingData>)]
    missing_data: Option<MissingData>,
    /// The capacity a fallback goes to (default 0).
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(maximum = 100000)]
    fallback_capacity: Option<u32>,
    /// Missing periods in a row before a fallback (default 3).
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(minimum = 1, maximum = 100)]
    fallback_after_periods: Option<u32>,
    /// Scale-in goes to the highest recommendation of this many seconds (default 300).
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(maximum = 3600)]
    scale_in_stabilization_seconds: Option<u32>,
    /// Whether the policy never scales in (default false).
    disable_scale_in: Option<bool>,
}

/// The target-tracking fields of a create's or an update's body.
macro_rules! tracking_patch {
    ($body:expr) => {
        TrackingPatch {
            metric: $body.metric,
            query: $body.query,
            statistic: $body.statistic,
            period_seconds: $body.period_seconds,
            target: $body.target,
            kind: $body.target_kind,
            tolerance: $body.tolerance,
            activation_threshold: $body.activation_threshold,
            missing_data: $body.missing_data,
            fallback_capacity: $body.fallback_capacity,
            fallback_after_periods: $body.fallback_after_periods,
            scale_in_stabilization_seconds: $body.scale_in_stabilization_seconds,
            disable_scale_in: $body.disable_scale_in,
        }
    };
}

/// Policy `pid` of group `id`, if `tenant` owns both.
pub async fn owned(
    state: &AppState,
    tenant: &TenantId,
    id: &str,
    pid: &str,
) -> Result<(GroupId, PolicyId), ApiError> {
    let group = owned_group(state, tenant, id).await?;
    let policy = resource::owned::<Policies>(state, tenant, pid, Some(group.as_str())).await?;
    Ok((group, policy))
}

/// `POST /v1/groups/{id}/policies`.
#[utoipa::path(
    post,
    path = "/v1/groups/{id}/policies",
    tag = "policies",
    params(("id" = String, Path, description = "group id")),
    request_body = CreatePolicy,
    responses(
        (status = 201, description = "the policy", body = PolicyView),
        WriteErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
    body: super::Json<CreatePolicy>,
) -> Result<HttpResponse, ApiError> {
    let group = owned_group(&state, &tenant, &path).await?;
    resource::load::<Groups>(&state, &group).await?;
    let body = body.into_inner();
    let policy_type = body.policy_type.unwrap_or_default();
    let invalid = |field, reason: &str| ApiError::from(Rejection::invalid(field, reason));
    let adjustment = match (policy_type, body.adjustment) {
        (PolicyType::Simple, None) => {
            return Err(invalid("adjustment", "a simple policy needs one"));
        }
        (PolicyType::Step, Some(_)) => {
            return Err(invalid(
                "adjustment",
                "belongs to simple policies; each step carries its own",
            ));
        }
        (PolicyType::TargetTracking, Some(_)) => {
            return Err(invalid(
                "adjustment",
                "does not belong to target-tracking policies, which follow their target",
            ));
        }
        (_, adjustment) => adjustment.unwrap_or(0),
    };
    let adjustment_type = match (policy_type, body.adjustment_type) {
        (PolicyType::TargetTracking, None) => AdjustmentType::Exact,
        (PolicyType::TargetTracking, Some(_)) => {
            return Err(invalid(
                "adjustment_type",
                "does not belong to target-tracking policies, which follow their target",
            ));
        }
        (_, Some(adjustment_type)) => adjustment_type,
        (_, None) => {
            return Err(invalid(
                "adjustment_type",
                "a simple or step policy needs one",
            ));
        }
    };
    let patch = tracking_patch!(body);
    if patch.query.is_some() {
        super::source(&state, patch.metric.clone(), patch.query.as_deref())?;
    }
    let tracking = match (policy_type, &patch) {
        (
            PolicyType::TargetTracking,
            TrackingPatch {
                metric: None,
                query: None,
                ..
            },
        ) => {
            return Err(invalid(
                "metric",
                "a target-tracking policy needs one (or a query)",
            ));
        }
        (PolicyType::TargetTracking, TrackingPatch { target: None, .. }) => {
            return Err(invalid("target", "a target-tracking policy needs one"));
        }
        (PolicyType::TargetTracking, _) => Some(Box::new(Tracking::new("", 1.0).patched(&patch))),
        (_, patch) => match patch.first_field() {
            Some(field) => return Err(invalid(field, "belongs to target-tracking policies")),
            None => None,
        },
    };
    let id = PolicyId::generate();
    let command = PolicyCommand::Create {
        id: id.clone(),
        group_id: group.clone(),
        tenant_id: tenant,
        definition: PolicyDefinition {
            name: body.name,
            mode: body.mode.unwrap_or_default(),
            policy_type,
            steps: body.steps.into_iter().map(Step::from).collect(),
            warmup_seconds: body.warmup_seconds,
            tracking,
            adjustment_type,
            adjustment,
            min_adjustment_step: body.min_adjustment_step,
            cooldown_seconds: body.cooldown_seconds,
        },
    };
    let policy = state
        .create::<Policies>(&group, id.as_str(), command)
        .await?
        .state
        .ok_or_else(|| ApiError::not_found("policy"))?;
    Ok(HttpResponse::Created().json(PolicyView::from(&policy)))
}

/// `GET /v1/groups/{id}/policies`.
#[utoipa::path(
    get,
    path = "/v1/groups/{id}/policies",
    tag = "policies",
    params(("id" = String, Path, description = "group id"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "at most this many items (default 100)"), ("cursor" = Option<String>, Query, pattern = "^pol_[!-~]{0,251}$", description = "the `next_cursor` of the page before")),
    responses(
        (status = 200, description = "a page of policies", body = List<PolicyView>),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let group = owned_group(&state, &tenant, &path).await?;
    let cursor: Option<PolicyId> = query.cursor(PolicyId::PREFIX)?;
    let page = state
        .index
        .policies_of(&group, cursor.as_ref(), query.limit()?);
    Ok(resource::page::<Policies, _>(&state, page, |p| PolicyView::from(p)).await)
}

/// `GET /v1/groups/{id}/policies/{pid}`.
#[utoipa::path(
    get,
    path = "/v1/groups/{id}/policies/{pid}",
    tag = "policies",
    params(("id" = String, Path, description = "group id"), ("pid" = String, Path, description = "policy id")),
    responses(
        (status = 200, description = "the policy", body = PolicyView),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn show(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, policy) = owned(&state, &tenant, &path.0, &path.1).await?;
    Ok(HttpResponse::Ok().json(PolicyView::from(
        &resource::load::<Policies>(&state, &policy).await?,
    )))
}

/// `PATCH /v1/groups/{id}/policies/{pid}`.
#[utoipa::path(
    patch,
    path = "/v1/groups/{id}/policies/{pid}",
    tag = "policies",
    params(("id" = String, Path, description = "group id"), ("pid" = String, Path, description = "policy id")),
    request_body = UpdatePolicy,
    responses(
        (status = 200, description = "the policy after the change", body = PolicyView),
        WriteErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn update(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<(String, String)>,
    body: super::Json<UpdatePolicy>,
) -> Result<HttpResponse, ApiError> {
    let (group, policy) = owned(&state, &tenant, &path.0, &path.1).await?;
    let body = body.into_inner();
    if body.query.is_some() {
        super::source(&state, body.metric.clone(), body.query.as_deref())?;
    }
    let patch = PolicyPatch {
        name: body.name,
        mode: body.mode,
        steps: body
            .steps
            .map(|steps| steps.into_iter().map(Step::from).collect()),
        warmup_seconds: body.warmup_seconds,
        tracking: tracking_patch!(body),
        adjustment_type: body.adjustment_type,
        adjustment: body.adjustment,
        min_adjustment_step: body.min_adjustment_step,
        cooldown_seconds: body.cooldown_seconds,
    };
    let policy = state
        .change::<Policies>(&group, policy.as_str(), PolicyCommand::Update(patch))
        .await?
        .state
        .ok_or_else(|| ApiError::not_found("policy"))?;
    Ok(HttpResponse::Ok().json(PolicyView::from(&policy)))
}

/// `DELETE /v1/groups/{id}/policies/{pid}`.
#[utoipa::path(
    delete,
    path = "/v1/groups/{id}/policies/{pid}",
    tag = "policies",
    params(("id" = String, Path, description = "group id"), ("pid" = String, Path, description = "policy id"), DeletePolicyQuery),
    responses(
        (status = 204, description = "deleted"),
        RemoveErrors,
    ),
    security(("bearer" = [])),
    description = "409 while an alarm names the policy in its actions (the message names them), unless `force=true`, which removes it from their actions first; 409 while an Alertmanager receiver names it as its firing or resolved policy, force or not (delete the receiver first).",
)]
pub async fn delete(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<(String, String)>,
    query: web::Query<DeletePolicyQuery>,
) -> Result<HttpResponse, ApiError> {
    let (group, policy) = owned(&state, &tenant, &path.0, &path.1).await?;
    // A receiver exists to execute its policies: it is not changed here, force or not. One made
    // between this read and the delete is not seen, as an alarm's action made then is not: its
    // notifications then record their steps and execute nothing.
    let receivers = receivers_naming(&state, &group, &policy).await?;
    if !receivers.is_empty() {
        let names: Vec<&str> = receivers.iter().map(ReceiverId::as_str).collect();
        return Err(ApiError::from(Rejection::Conflict {
            reason: format!(
                "receivers {} name this policy; delete them first",
                names.join(", ")
            ),
        }));
    }
    let naming = state.evaluator.table().naming(&policy);
    if !naming.is_empty() && !query.force {
        let names: Vec<&str> = naming.iter().map(AlarmId::as_str).collect();
        return Err(ApiError::from(Rejection::Conflict {
            reason: format!(
                "alarms {} name this policy in their actions; change or delete them, or \
                     delete with force=true",
                names.join(", ")
            ),
        }));
    }
    for alarm in naming {
        unname(&state, &alarm, &policy).await?;
    }
    state
        .execute::<Policies>(policy.as_str(), PolicyCommand::Delete)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Refuses (409 `conflict`) to make `what` (a webhook, an alarm's action, a receiver's policy)
/// execute policy `policy` if it never could: see `PolicyDefinition::on_demand`; `breach` is
/// whether a breach comes with its executions.
pub(crate) async fn executable(
    state: &AppState,
    policy: &PolicyId,
    breach: bool,
    what: &str,
) -> Result<(), ApiError> {
    let loaded = resource::load::<Policies>(state, policy).await?;
    loaded.definition.on_demand(breach).map_err(|rejection| {
        // Named: a receiver's two policies, or an alarm's several actions, are each checked.
        let named = match rejection {
            Rejection::Conflict { reason } => Rejection::Conflict {
                reason: format!("{what}: {reason}"),
            },
            other => other,
        };
        ApiError::from(named)
    })
}

/// The live receivers of `group` whose firing or resolved policy is `policy`.
async fn receivers_naming(
    state: &AppState,
    group: &GroupId,
    policy: &PolicyId,
) -> Result<Vec<ReceiverId>, ApiError> {
    let mut naming = Vec::new();
    let mut cursor = None;
    loop {
        let page = state.index.receivers_of(group, cursor.as_ref(), 1000);
        for id in page.items {
            let receiver = state.supervisor.get::<Receivers>(id.as_str()).await?.state;
            let names = receiver.is_some_and(|r| {
                !r.deleted && (r.firing == *policy || r.resolved.as_ref() == Some(policy))
            });
            if names {
                naming.push(id);
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(naming),
        }
    }
}

/// `?force=` of a policy's delete.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeletePolicyQuery {
    /// Remove the policy from the actions of the alarms that name it, then delete it.
    #[serde(default)]
    force: bool,
}

/// Removes `policy` from alarm `alarm`'s actions (decided on the alarm as it then is); an
/// alarm gone meanwhile has none.
async fn unname(state: &AppState, alarm: &AlarmId, policy: &PolicyId) -> Result<(), ApiError> {
    let removed = state
        .supervisor
        .execute::<Alarms>(alarm.as_str(), AlarmCommand::RemoveAction(policy.clone()))
        .await;
    match removed {
        Ok(_)
        | Err(flotilla_actors::error::Error::Rejected(Rejection::NotFound { object: "alarm" })) => {
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// The optional body of `.../execute`: the breach a step policy chooses its step by. Its
/// values are read by [`breach_of`], as a webhook body's are, so a bad one names its field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteBody {
    /// The metric's value.
    #[serde(default)]
    #[schema(value_type = Option<f64>)]
    metric_value: Option<Value>,
    /// The threshold it breached.
    #[serde(default)]
    #[schema(value_type = Option<f64>)]
    breach_threshold: Option<Value>,
}

/// The breach a webhook call's body names with top-level `metric_value` and `breach_threshold`:
/// none unless the body is a JSON object. Only those two fields are built; the rest is read and
/// checked as a JSON value would be ([`Skip`]), so the answer is the one reading the body whole
/// would give: a field given twice counts as its last, an escaped key is the same key.
pub fn breach_in(body: &[u8]) -> Result<Option<Breach>, Rejection> {
    match serde_json::from_slice::<BreachFields>(body) {
        Ok(BreachFields(metric_value, breach_threshold)) => {
            breach_of(metric_value.as_ref(), breach_threshold.as_ref())
        }
        Err(_) => Ok(None),
    }
}

/// A JSON object's `metric_value` and `breach_threshold`.
struct BreachFields(Option<Value>, Option<Value>);

impl<'de> Deserialize<'de> for BreachFields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "snake_case")]
        enum Field {
            MetricValue,
            BreachThreshold,
            #[serde(other)]
            Other,
        }

        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = BreachFields;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<BreachFields, M::Error> {
                let mut fields = BreachFields(None, None);
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::MetricValue => fields.0 = Some(map.next_value()?),
                        Field::BreachThreshold => fields.1 = Some(map.next_value()?),
                        Field::Other => map.next_value::<Skip>().map(drop)?,
                    }
                }
                Ok(fields)
            }
        }

        deserializer.deserialize_map(Visitor)
    }
}

/// A JSON value read and dropped, with the checks building it would make: numbers in range,
/// strings UTF-8 with whole escapes, nesting within serde_json's limit. (serde's `IgnoredAny`
/// skips a value without them.)
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Skip;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
                Ok(Skip)
            }

            fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
                Ok(Skip)
            }

            fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
                Ok(Skip)
            }

            fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
                Ok(Skip)
            }

            fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
                Ok(Skip)
            }

            fn visit_unit<E>(self) -> Result<Skip, E> {
                Ok(Skip)
            }

            fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut seq: S) -> Result<Skip, S::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Skip)
            }

            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Skip, M::Error> {
                while map.next_entry::<Skip, Skip>()?.is_some() {}
                Ok(Skip)
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

/// The breach of a `metric_value` and a `breach_threshold` (SPEC 2.1): none unless both are
/// there; either one not a number is a 400 naming it.
fn breach_of(
    metric_value: Option<&Value>,
    breach_threshold: Option<&Value>,
) -> Result<Option<Breach>, Rejection> {
    let number = |field: &'static str, value: Option<&Value>| match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_f64()
            .map(Some)
            .ok_or_else(|| Rejection::invalid(field, "must be a number")),
    };
    Ok(
        match (
            number("metric_value", metric_value)?,
            number("breach_threshold", breach_threshold)?,
        ) {
            (Some(metric_value), Some(breach_threshold)) => Some(Breach {
                metric_value,
                breach_threshold,
            }),
            _ => None,
        },
    )
}

/// `POST /v1/groups/{id}/policies/{pid}/execute`: runs the policy now; 202 with its outcome. A
/// step policy needs the breach in the body; a group being deleted executes nothing (409).
#[utoipa::path(
    post,
    path = "/v1/groups/{id}/policies/{pid}/execute",
    tag = "policies",
    params(("id" = String, Path, description = "group id"), ("pid" = String, Path, description = "policy id")),
    request_body(content = Option<ExecuteBody>, description = "a step policy's breach; no body for the others", content_type = "application/json"),
    responses(
        (status = 202, description = "the outcome: executed, no_change, cooldown, paused or shadow", body = ExecutionView),
        WriteErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn execute(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<(String, String)>,
    body: super::Body,
) -> Result<HttpResponse, ApiError> {
    let (_, policy) = owned(&state, &tenant, &path.0, &path.1).await?;
    let breach = match body.optional_json::<Option<ExecuteBody>>()?.flatten() {
        None => None,
        Some(body) => breach_of(body.metric_value.as_ref(), body.breach_threshold.as_ref())
            .map_err(flotilla_actors::error::Error::from)?,
    };
    let run = state
        .supervisor
        .execute_policy(&policy, Cause::Direct, breach)
        .await?;
    Ok(HttpResponse::Accepted().json(ExecutionView::from(&run)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breach(body: &str) -> Result<Option<(f64, f64)>, Rejection> {
        breach_in(body.as_bytes())
            .map(|breach| breach.map(|b| (b.metric_value, b.breach_threshold)))
    }

    #[test]
    fn a_webhook_body_names_a_breach_with_both_top_level_fields() {
        let both =
            r#"{"alert": {"metric_value": 1}, "metric_value": 91.5, "breach_threshold": 80}"#;
        assert_eq!(breach(both), Ok(Some((91.5, 80.0))));
        // A key spelled with an escape is the same key.
        let escaped = r#"{"metric\u005fvalue": 3, "breach_threshold": 2}"#;
        assert_eq!(breach(escaped), Ok(Some((3.0, 2.0))));
        // Given twice, a field counts as its last.
        let twice = r#"{"metric_value": 1, "breach_threshold": 2, "metric_value": 7}"#;
        assert_eq!(breach(twice), Ok(Some((7.0, 2.0))));
    }

    #[test]
    fn a_webhook_body_without_both_fields_names_no_breach() {
        for body in [
            r#"{"metric_value": 91.5}"#,
            r#"{"metric_value": null, "breach_threshold": 80}"#,
            r#"{"nested": {"metric_value": 1, "breach_threshold": 2}}"#,
            r#"[{"metric_value": 1, "breach_threshold": 2}]"#,
            r#""metric_value""#,
            "17",
            "true",
            "null",
            "",
            "not json",
            r#"{"metric_value": 1, "breach_threshold": 2"#,
            r#"{"metric_value": 1, "breach_threshold": 2} trailing"#,
        ] {
            assert_eq!(breach(body), Ok(None), "{body}");
        }
    }

    #[test]
    fn a_body_that_is_not_json_names_no_breach_whatever_its_fields() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let mut bodies: Vec<Vec<u8>> = [
            r#""huge": 1e400"#.to_owned(),
            r#""lone": "\ud800""#.to_owned(),
            format!(r#""deep": {deep}"#),
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect();
        bodies.push(b"\"bytes\": \"\xff\xfe\"".to_vec());
        for other in bodies {
            for fields in [
                &br#""metric_value": 91.5, "breach_threshold": 80"#[..],
                &br#""metric_value": "high", "breach_threshold": 80"#[..],
            ] {
                let body = [&b"{"[..], fields, b", ", &other, b"}"].concat();
                // As reading the body whole into a JSON value finds: it is not JSON.
                assert!(serde_json::from_slice::<Value>(&body).is_err());
                assert_eq!(
                    breach_in(&body).map(|breach| breach.is_some()),
                    Ok(false),
                    "{}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
    }

    #[test]
    fn a_breach_field_that_is_not_a_number_is_refused_by_name() {
        let field = |body: &str| match breach(body) {
            Err(Rejection::Invalid { field, .. }) => field,
            other => panic!("expected a refusal of {body}, got {other:?}"),
        };
        assert_eq!(
            field(r#"{"metric_value": "high", "breach_threshold": 80}"#),
            "metric_value"
        );
        assert_eq!(
            field(r#"{"metric_value": 1, "breach_threshold": [80]}"#),
            "breach_threshold"
        );
    }
}
