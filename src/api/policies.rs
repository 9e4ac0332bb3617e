//! `/v1/groups/{id}/policies`: a group's scaling policies, and executing one directly.

use actix_web::{web, HttpResponse};
use flotilla_actors::aggregate::Policies;
use flotilla_actors::domain::group::Outcome;
use flotilla_actors::domain::policy::{Policy, PolicyCommand, PolicyDefinition, PolicyPatch};
use flotilla_actors::domain::scaling::AdjustmentType;
use flotilla_actors::domain::{Cause, GroupId, PolicyId, TenantId};
use flotilla_actors::supervisor::PolicyExecution;
use serde::Deserialize;
use serde_json::Value;

use super::auth::Tenant;
use super::groups::owned as owned_group;
use super::views::PolicyView;
use super::{double_option, ApiError, AppState, List, ListQuery};

/// The body of a policy's create.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePolicy {
    name: String,
    adjustment_type: AdjustmentType,
    adjustment: i64,
    min_adjustment_step: Option<u32>,
    cooldown_seconds: Option<u32>,
}

/// The body of a policy's update; `null` clears the optional fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    name: Option<String>,
    adjustment_type: Option<AdjustmentType>,
    adjustment: Option<i64>,
    #[serde(default, deserialize_with = "double_option")]
    min_adjustment_step: Option<Option<u32>>,
    #[serde(default, deserialize_with = "double_option")]
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
    let policy = PolicyId::new(pid);
    match state.index.policy(&policy) {
        Some(owner) if owner.group == group && &owner.tenant == tenant => Ok((group, policy)),
        _ => Err(ApiError::not_found("policy")),
    }
}

async fn load(state: &AppState, id: &PolicyId) -> Result<Policy, ApiError> {
    let observed = state.supervisor.get::<Policies>(id.as_str()).await?;
    observed
        .state
        .filter(|p| !p.deleted)
        .ok_or_else(|| ApiError::not_found("policy"))
}

/// `POST /v1/groups/{id}/policies`.
pub async fn create(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
    body: web::Json<CreatePolicy>,
) -> Result<HttpResponse, ApiError> {
    let group = owned_group(&state, &tenant, &path)?;
    super::groups::load(&state, &group).await?;
    let body = body.into_inner();
    let id = PolicyId::generate();
    let command = PolicyCommand::Create {
        id: id.clone(),
        group_id: group,
        tenant_id: tenant,
        definition: PolicyDefinition {
            name: body.name,
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
pub async fn list(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let group = owned_group(&state, &tenant, &path)?;
    let cursor = query.cursor.as_deref().map(PolicyId::new);
    let page = state
        .index
        .policies_of(&group, cursor.as_ref(), query.limit()?);
    let mut items = Vec::with_capacity(page.items.len());
    for id in &page.items {
        if let Ok(policy) = load(&state, id).await {
            items.push(PolicyView::from(&policy));
        }
    }
    Ok(HttpResponse::Ok().json(List {
        items,
        next_cursor: page.next.map(|id| id.to_string()),
    }))
}

/// `GET /v1/groups/{id}/policies/{pid}`.
pub async fn show(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, policy) = owned(&state, &tenant, &path.0, &path.1)?;
    Ok(HttpResponse::Ok().json(PolicyView::from(&load(&state, &policy).await?)))
}

/// `PATCH /v1/groups/{id}/policies/{pid}`.
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
pub async fn delete(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, policy) = owned(&state, &tenant, &path.0, &path.1)?;
    state
        .execute::<Policies>(policy.as_str(), PolicyCommand::Delete)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The `outcome` of an execution, as the API and the metrics name it.
pub fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Executed { .. } => "executed",
        Outcome::NoChange { .. } => "no_change",
        Outcome::Cooldown { .. } => "cooldown",
        Outcome::Paused => "paused",
    }
}

/// The 202 body of an execution: the outcome (SPEC 3) with the group's capacity after it.
pub fn execution_body(run: &PolicyExecution) -> Value {
    let mut body = serde_json::to_value(&run.outcome).unwrap_or_default();
    if let Value::Object(map) = &mut body {
        map.remove("cooldown_until");
        map.insert("policy_id".into(), run.policy.id.to_string().into());
        map.insert("group_id".into(), run.group.id.to_string().into());
        map.insert("desired_capacity".into(), run.group.desired_capacity.into());
    }
    body
}

/// `POST /v1/groups/{id}/policies/{pid}/execute`: 202 with the outcome.
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
    Ok(HttpResponse::Accepted().json(execution_body(&run)))
}
