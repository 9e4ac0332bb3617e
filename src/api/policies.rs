//! `/v1/groups/{id}/policies`: a group's scaling policies, and executing one directly.

use actix_web::{web, HttpResponse};
use flotilla_actors::aggregate::{Alarms, Groups, Policies};
use flotilla_actors::domain::alarm::{AlarmCommand, AlarmPatch};
use flotilla_actors::domain::policy::{Mode, PolicyCommand, PolicyDefinition, PolicyPatch};
use flotilla_actors::domain::scaling::AdjustmentType;
use flotilla_actors::domain::{AlarmId, Cause, GroupId, PolicyId, Rejection, TenantId};
use serde::Deserialize;
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
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    name: String,
    /// `live` (the default) or `shadow`: executions recorded with what they would have done,
    /// capacity untouched.
    #[serde(default)]
    #[schema(value_type = Option<mirror::Mode>)]
    mode: Mode,
    #[schema(value_type = mirror::AdjustmentType)]
    adjustment_type: AdjustmentType,
    /// May be negative for `change` and `percent`.
    #[serde(deserialize_with = "super::whole::required")]
    #[schema(minimum = -10000, maximum = 10000)]
    adjustment: i64,
    /// For `percent` only: the smallest magnitude of a non-zero change.
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(minimum = 1, maximum = 10000)]
    min_adjustment_step: Option<u32>,
    /// The cooldown this policy's executions start; the group's when absent.
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(maximum = 604800)]
    cooldown_seconds: Option<u32>,
}

/// The body of a policy's update; `null` clears the optional fields.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
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
    /// `null` clears it.
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    #[serde(default, deserialize_with = "super::whole::nullable")]
    min_adjustment_step: Option<Option<u32>>,
    /// `null` clears it (the group's cooldown applies).
    #[schema(value_type = Option<u32>, maximum = 604800)]
    #[serde(default, deserialize_with = "super::whole::nullable")]
    cooldown_seconds: Option<Option<u32>>,
}

/// Policy `pid` of group `id`, if `tenant` owns both.
pub fn owned(
    state: &AppState,
    tenant: &TenantId,
    id: &str,
    pid: &str,
) -> Result<(GroupId, PolicyId), ApiError> {
    let group = owned_group(state, tenant, id)?;
    let policy = resource::owned::<Policies>(state, tenant, pid, Some(group.as_str()))?;
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
    body: web::Json<CreatePolicy>,
) -> Result<HttpResponse, ApiError> {
    let group = owned_group(&state, &tenant, &path)?;
    resource::load::<Groups>(&state, &group).await?;
    let body = body.into_inner();
    let id = PolicyId::generate();
    let command = PolicyCommand::Create {
        id: id.clone(),
        group_id: group,
        tenant_id: tenant,
        definition: PolicyDefinition {
            name: body.name,
            mode: body.mode,
            adjustment_type: body.adjustment_type,
            adjustment: body.adjustment,
            min_adjustment_step: body.min_adjustment_step,
            cooldown_seconds: body.cooldown_seconds,
        },
    };
    let policy = state
        .execute::<Policies>(id.as_str(), command)
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
    let group = owned_group(&state, &tenant, &path)?;
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
    let (_, policy) = owned(&state, &tenant, &path.0, &path.1)?;
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
    body: web::Json<UpdatePolicy>,
) -> Result<HttpResponse, ApiError> {
    let (_, policy) = owned(&state, &tenant, &path.0, &path.1)?;
    let body = body.into_inner();
    let patch = PolicyPatch {
        name: body.name,
        mode: body.mode,
        adjustment_type: body.adjustment_type,
        adjustment: body.adjustment,
        min_adjustment_step: body.min_adjustment_step,
        cooldown_seconds: body.cooldown_seconds,
    };
    let policy = state
        .execute::<Policies>(policy.as_str(), PolicyCommand::Update(patch))
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
    description = "409 while an alarm names the policy in its actions (the message names them), unless `force=true`, which removes it from their actions first.",
)]
pub async fn delete(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<(String, String)>,
    query: web::Query<DeletePolicyQuery>,
) -> Result<HttpResponse, ApiError> {
    let (_, policy) = owned(&state, &tenant, &path.0, &path.1)?;
    let naming = state.evaluator.table().naming(&policy);
    if !naming.is_empty() && !query.force {
        let names: Vec<&str> = naming.iter().map(AlarmId::as_str).collect();
        return Err(ApiError::from(flotilla_actors::error::Error::from(
            Rejection::Conflict {
                reason: format!(
                    "alarms {} name this policy in their actions; change or delete them, or \
                     delete with force=true",
                    names.join(", ")
                ),
            },
        )));
    }
    for alarm in naming {
        unname(&state, &alarm, &policy).await?;
    }
    state
        .execute::<Policies>(policy.as_str(), PolicyCommand::Delete)
        .await?;
    Ok(HttpResponse::NoContent().finish())
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

/// Removes `policy` from alarm `alarm`'s actions.
async fn unname(state: &AppState, alarm: &AlarmId, policy: &PolicyId) -> Result<(), ApiError> {
    let Ok(current) = resource::load::<Alarms>(state, alarm).await else {
        return Ok(());
    };
    let without = |actions: &[PolicyId]| -> Vec<PolicyId> {
        actions.iter().filter(|p| *p != policy).cloned().collect()
    };
    let patch = AlarmPatch {
        alarm_actions: Some(without(&current.definition.alarm_actions)),
        ok_actions: Some(without(&current.definition.ok_actions)),
        ..AlarmPatch::default()
    };
    state
        .execute::<Alarms>(alarm.as_str(), AlarmCommand::Update(patch))
        .await?;
    Ok(())
}

/// `POST /v1/groups/{id}/policies/{pid}/execute`: runs the policy now; 202 with its outcome.
#[utoipa::path(
    post,
    path = "/v1/groups/{id}/policies/{pid}/execute",
    tag = "policies",
    params(("id" = String, Path, description = "group id"), ("pid" = String, Path, description = "policy id")),
    responses(
        (status = 202, description = "the outcome: executed, no_change, cooldown or paused", body = ExecutionView),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn execute(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, policy) = owned(&state, &tenant, &path.0, &path.1)?;
    let run = state
        .supervisor
        .execute_policy(&policy, Cause::Direct)
        .await?;
    Ok(HttpResponse::Accepted().json(ExecutionView::from(&run)))
}
