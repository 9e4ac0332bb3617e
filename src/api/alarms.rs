//! `/v1/alarms`: threshold rules over a group's samples (evaluation comes with metrics).

use actix_web::{web, HttpResponse};
use flotilla_actors::aggregate::{Alarms, Policies};
use flotilla_actors::domain::alarm::{
    AlarmCommand, AlarmPatch, Comparison, NewAlarm, Statistic, TreatMissing,
};
use flotilla_actors::domain::{AlarmId, PolicyId, Rejection, TenantId};
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::Tenant;
use super::error::{ListErrors, ReadErrors, WriteErrors};
use super::groups::owned as owned_group;
use super::openapi::mirror;
use super::resource;
use super::views::AlarmView;
use super::{ApiError, AppState, List, ListQuery};

/// The body of an alarm's create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAlarm {
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*[^\\s\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069\\u00ad\\u034f\\u061c\\u115f\\u1160\\u180e\\u200b-\\u200f\\u2060-\\u2064\\u3164\\ufe00-\\ufe0f\\ufeff\\uffa0][^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*$"
    )]
    name: String,
    group_id: String,
    /// The metric it watches (required unless `query`).
    #[schema(min_length = 1, max_length = 255, pattern = "^[ -~]*[!-~][ -~]*$")]
    metric: Option<String>,
    /// A PromQL query evaluated at each period's end instead of a metric (needs the operator's
    /// `--prometheus-url`; SPEC 5.2).
    #[schema(min_length = 1, max_length = 4096)]
    query: Option<String>,
    #[schema(value_type = mirror::Statistic)]
    statistic: Statistic,
    /// At least 1.
    #[serde(deserialize_with = "super::whole::required")]
    #[schema(minimum = 1, maximum = 86400)]
    period_seconds: u32,
    /// N.
    #[serde(deserialize_with = "super::whole::required")]
    #[schema(minimum = 1, maximum = 100)]
    evaluation_periods: u32,
    /// M <= N, default N.
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(minimum = 1, maximum = 100)]
    datapoints_to_alarm: Option<u32>,
    #[schema(value_type = mirror::Comparison)]
    comparison: Comparison,
    threshold: f64,
    /// Default `missing`.
    #[schema(value_type = Option<mirror::TreatMissing>)]
    treat_missing: Option<TreatMissing>,
    /// Policy ids of the alarm's group, executed on a transition into ALARM.
    #[serde(default)]
    #[schema(value_type = Vec<String>, max_items = 10)]
    alarm_actions: Vec<PolicyId>,
    /// Policy ids of the alarm's group, executed on a transition into OK.
    #[serde(default)]
    #[schema(value_type = Vec<String>, max_items = 10)]
    ok_actions: Vec<PolicyId>,
    #[serde(default)]
    repeat_actions: bool,
}

/// The body of an alarm's update.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAlarm {
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*[^\\s\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069\\u00ad\\u034f\\u061c\\u115f\\u1160\\u180e\\u200b-\\u200f\\u2060-\\u2064\\u3164\\ufe00-\\ufe0f\\ufeff\\uffa0][^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*$"
    )]
    name: Option<String>,
    /// A new metric (and no query).
    #[schema(min_length = 1, max_length = 255, pattern = "^[ -~]*[!-~][ -~]*$")]
    metric: Option<String>,
    /// A new query (and no metric).
    #[schema(min_length = 1, max_length = 4096)]
    query: Option<String>,
    #[schema(value_type = Option<mirror::Statistic>)]
    statistic: Option<Statistic>,
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(minimum = 1, maximum = 86400)]
    period_seconds: Option<u32>,
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(minimum = 1, maximum = 100)]
    evaluation_periods: Option<u32>,
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(minimum = 1, maximum = 100)]
    datapoints_to_alarm: Option<u32>,
    #[schema(value_type = Option<mirror::Comparison>)]
    comparison: Option<Comparison>,
    threshold: Option<f64>,
    #[schema(value_type = Option<mirror::TreatMissing>)]
    treat_missing: Option<TreatMissing>,
    #[schema(value_type = Option<Vec<String>>, max_items = 10)]
    alarm_actions: Option<Vec<PolicyId>>,
    #[schema(value_type = Option<Vec<String>>, max_items = 10)]
    ok_actions: Option<Vec<PolicyId>>,
    repeat_actions: Option<bool>,
}

/// Every action must be a policy of the alarm's group: one that is not is a 404, as a body's
/// reference to an object the tenant cannot see (SPEC 3).
async fn check_actions<'a>(
    state: &AppState,
    tenant: &TenantId,
    group: &flotilla_actors::domain::GroupId,
    actions: impl IntoIterator<Item = &'a PolicyId>,
) -> Result<(), ApiError> {
    for policy in actions {
        match resource::owned::<Policies>(state, tenant, policy.as_str(), Some(group.as_str()))
            .await
        {
            // An alarm's datapoint is the breach a step policy needs.
            Ok(_) => {
                super::policies::executable(state, policy, true, &format!("action {policy}"))
                    .await?;
            }
            Err(_) => {
                return Err(ApiError::new(
                    actix_web::http::StatusCode::NOT_FOUND,
                    "not_found",
                    format!("action {policy} is not a policy of group {group}"),
                ))
            }
        }
    }
    Ok(())
}

/// The 409 of a change to an alarm whose group was deleted: no samples feed it any more (its
/// group's tokens are gone), so a change would take effect nowhere.
fn group_deleted(group: &flotilla_actors::domain::GroupId) -> ApiError {
    ApiError::from(Rejection::Conflict {
        reason: format!(
            "its group {group} was deleted: the alarm can be read and deleted, not changed"
        ),
    })
}

/// `POST /v1/alarms`.
#[utoipa::path(
    post,
    path = "/v1/alarms",
    tag = "alarms",
    request_body = CreateAlarm,
    responses(
        (status = 201, description = "the alarm, in insufficient_data", body = AlarmView),
        WriteErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    body: super::Json<CreateAlarm>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let group = owned_group(&state, &tenant, &body.group_id)
        .await
        .map_err(|_| {
            ApiError::new(
                actix_web::http::StatusCode::NOT_FOUND,
                "not_found",
                "group_id names no group of yours",
            )
        })?;
    check_actions(
        &state,
        &tenant,
        &group,
        body.alarm_actions.iter().chain(&body.ok_actions),
    )
    .await?;
    let metric = super::source(&state, body.metric, body.query.as_deref())?;
    let id = AlarmId::generate();
    let command = AlarmCommand::Create(NewAlarm {
        id: id.clone(),
        tenant_id: tenant,
        name: body.name,
        group_id: group.clone(),
        metric,
        query: body.query,
        statistic: body.statistic,
        period_seconds: body.period_seconds,
        evaluation_periods: body.evaluation_periods,
        datapoints_to_alarm: body.datapoints_to_alarm,
        comparison: body.comparison,
        threshold: body.threshold,
        treat_missing: body.treat_missing,
        alarm_actions: body.alarm_actions,
        ok_actions: body.ok_actions,
        repeat_actions: body.repeat_actions,
    });
    let executed = state.create::<Alarms>(&group, id.as_str(), command).await?;
    let alarm = executed.state.ok_or_else(|| ApiError::not_found("alarm"))?;
    Ok(HttpResponse::Created().json(AlarmView::from(&alarm)))
}

/// `GET /v1/alarms`.
#[utoipa::path(
    get,
    path = "/v1/alarms",
    tag = "alarms",
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "at most this many items (default 100)"), ("cursor" = Option<String>, Query, pattern = "^alm_[!-~]{0,251}$", description = "the `next_cursor` of the page before")),
    responses(
        (status = 200, description = "a page of alarms", body = List<AlarmView>),
        ListErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let cursor: Option<AlarmId> = query.cursor(AlarmId::PREFIX)?;
    let page = state
        .index
        .alarms_of(&tenant, cursor.as_ref(), query.limit()?);
    Ok(resource::page::<Alarms, _>(&state, page, |a| AlarmView::from(a)).await)
}

/// `GET /v1/alarms/{aid}`: with `state` and `state_reason`.
#[utoipa::path(
    get,
    path = "/v1/alarms/{aid}",
    tag = "alarms",
    params(("aid" = String, Path, description = "alarm id")),
    responses(
        (status = 200, description = "the alarm with its state and reason", body = AlarmView),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn show(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = resource::owned::<Alarms>(&state, &tenant, &path, None).await?;
    Ok(HttpResponse::Ok().json(AlarmView::from(
        &resource::load::<Alarms>(&state, &id).await?,
    )))
}

/// `PATCH /v1/alarms/{aid}`.
#[utoipa::path(
    patch,
    path = "/v1/alarms/{aid}",
    tag = "alarms",
    params(("aid" = String, Path, description = "alarm id")),
    request_body = UpdateAlarm,
    responses(
        (status = 200, description = "the alarm after the change", body = AlarmView),
        WriteErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn update(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
    body: super::Json<UpdateAlarm>,
) -> Result<HttpResponse, ApiError> {
    let id = resource::owned::<Alarms>(&state, &tenant, &path, None).await?;
    let body = body.into_inner();
    let current = resource::load::<Alarms>(&state, &id).await?;
    let group = &current.definition.group_id;
    if owned_group(&state, &tenant, group.as_str()).await.is_err() {
        return Err(group_deleted(group));
    }
    let actions = body
        .alarm_actions
        .iter()
        .flatten()
        .chain(body.ok_actions.iter().flatten());
    check_actions(&state, &tenant, group, actions).await?;
    if body.query.is_some() {
        super::source(&state, body.metric.clone(), body.query.as_deref())?;
    }
    let patch = AlarmPatch {
        name: body.name,
        metric: body.metric,
        query: body.query,
        statistic: body.statistic,
        period_seconds: body.period_seconds,
        evaluation_periods: body.evaluation_periods,
        datapoints_to_alarm: body.datapoints_to_alarm,
        comparison: body.comparison,
        threshold: body.threshold,
        treat_missing: body.treat_missing,
        alarm_actions: body.alarm_actions,
        ok_actions: body.ok_actions,
        repeat_actions: body.repeat_actions,
    };
    // While its group is live: a deletion racing the change refuses it as one before it.
    let executed = state
        .supervisor
        .execute_in_live::<Alarms>(group, id.as_str(), AlarmCommand::Update(patch))
        .await
        .map_err(|error| match error {
            flotilla_actors::error::Error::Rejected(Rejection::NotFound { object: "group" }) => {
                group_deleted(group)
            }
            error => ApiError::from(error),
        })?;
    let alarm = executed.state.ok_or_else(|| ApiError::not_found("alarm"))?;
    Ok(HttpResponse::Ok().json(AlarmView::from(&alarm)))
}

/// `DELETE /v1/alarms/{aid}`.
#[utoipa::path(
    delete,
    path = "/v1/alarms/{aid}",
    tag = "alarms",
    params(("aid" = String, Path, description = "alarm id")),
    responses(
        (status = 204, description = "deleted"),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn delete(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = resource::owned::<Alarms>(&state, &tenant, &path, None).await?;
    state
        .execute::<Alarms>(id.as_str(), AlarmCommand::Delete)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
