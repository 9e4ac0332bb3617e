//! `/v1/groups/{id}/schedules`: a group's scheduled actions (SPEC 2.2).

use actix_web::{web, HttpResponse};
use flotilla_actors::aggregate::{Groups, Schedules};
use flotilla_actors::domain::schedule::parse_instant;
use flotilla_actors::domain::scheduled::{
    ScheduleDefinition, SchedulePatch, Scheduled, ScheduledCommand, DEFAULT_TIME_ZONE,
};
use flotilla_actors::domain::ScheduleId;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::auth::Tenant;
use super::error::{ReadErrors, RemoveErrors, WriteErrors};
use super::groups::owned as owned_group;
use super::resource;
use super::{ApiError, AppState, List, ListQuery};
use crate::audit::format_millis;

/// The body of a scheduled action's create: `at`, or `recurrence` (with `time_zone`,
/// `start_time`, `end_time`), and at least one of the values it sets.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*[^\\s\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069\\u00ad\\u034f\\u061c\\u115f\\u1160\\u180e\\u200b-\\u200f\\u2060-\\u2064\\u3164\\ufe00-\\ufe0f\\ufeff\\uffa0][^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*$"
    )]
    name: String,
    /// A one-off action's instant (RFC 3339, in the future).
    #[schema(format = DateTime)]
    at: Option<String>,
    /// A recurring action's cron expression: 5 fields (minute hour day-of-month month
    /// day-of-week).
    #[schema(max_length = 255)]
    recurrence: Option<String>,
    /// The IANA time zone the recurrence is read in (default `UTC`).
    #[schema(max_length = 64)]
    time_zone: Option<String>,
    /// No occurrence before this (RFC 3339).
    #[schema(format = DateTime)]
    start_time: Option<String>,
    /// No occurrence after this (RFC 3339).
    #[schema(format = DateTime)]
    end_time: Option<String>,
    /// The group's new lower bound.
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(maximum = 100000)]
    min_size: Option<u32>,
    /// The group's new upper bound.
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(maximum = 100000)]
    max_size: Option<u32>,
    /// The group's new desired capacity, clamped to the resulting bounds.
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(maximum = 100000)]
    desired_capacity: Option<u32>,
}

/// The body of a scheduled action's update; `null` clears an optional field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSchedule {
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*[^\\s\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069\\u00ad\\u034f\\u061c\\u115f\\u1160\\u180e\\u200b-\\u200f\\u2060-\\u2064\\u3164\\ufe00-\\ufe0f\\ufeff\\uffa0][^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*$"
    )]
    name: Option<String>,
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>, format = DateTime)]
    at: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>, max_length = 255)]
    recurrence: Option<Option<String>>,
    #[schema(max_length = 64)]
    time_zone: Option<String>,
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>, format = DateTime)]
    start_time: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>, format = DateTime)]
    end_time: Option<Option<String>>,
    #[serde(default, deserialize_with = "super::whole::nullable")]
    #[schema(value_type = Option<u32>, maximum = 100000)]
    min_size: Option<Option<u32>>,
    #[serde(default, deserialize_with = "super::whole::nullable")]
    #[schema(value_type = Option<u32>, maximum = 100000)]
    max_size: Option<Option<u32>>,
    #[serde(default, deserialize_with = "super::whole::nullable")]
    #[schema(value_type = Option<u32>, maximum = 100000)]
    desired_capacity: Option<Option<u32>>,
}

/// A present field, null or not: `Some(None)` for null.
fn some<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A scheduled action.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    /// Its id (`sch_...`).
    pub id: String,
    /// The group it changes.
    pub group_id: String,
    /// Its name.
    pub name: String,
    /// A one-off action's instant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// A recurring action's cron expression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recurrence: Option<String>,
    /// The time zone the recurrence is read in.
    pub time_zone: String,
    /// No occurrence before this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// No occurrence after this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// The group's new lower bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_size: Option<u32>,
    /// The group's new upper bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u32>,
    /// The group's new desired capacity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired_capacity: Option<u32>,
    /// Its next occurrence; null when none is left.
    pub next_run: Option<String>,
    /// The latest occurrence run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// When it was created.
    pub created_at: String,
}

impl ScheduleView {
    /// The view of `s` at `now` (which its `next_run` is after).
    pub(crate) fn of(s: &Scheduled, now: flotilla_actors::clock::Timestamp) -> ScheduleView {
        let time = |at: flotilla_actors::clock::Timestamp| format_millis(at.as_millis());
        let d = &s.definition;
        ScheduleView {
            id: s.id.to_string(),
            group_id: s.group_id.to_string(),
            name: d.name.clone(),
            at: d.at.map(time),
            recurrence: d.recurrence.clone(),
            time_zone: d.time_zone.clone(),
            start_time: d.start_time.map(time),
            end_time: d.end_time.map(time),
            min_size: d.min_size,
            max_size: d.max_size,
            desired_capacity: d.desired_capacity,
            next_run: s.next_run(now).map(time),
            last_run: s.last_run.map(time),
            created_at: time(s.created_at),
        }
    }
}

/// An optional RFC 3339 field.
fn instant(
    field: &'static str,
    text: Option<&str>,
) -> Result<Option<flotilla_actors::clock::Timestamp>, ApiError> {
    text.map(|text| parse_instant(field, text))
        .transpose()
        .map_err(ApiError::from)
}

/// `POST /v1/groups/{id}/schedules`.
#[utoipa::path(
    post,
    path = "/v1/groups/{id}/schedules",
    tag = "schedules",
    params(("id" = String, Path, description = "group id")),
    request_body = CreateSchedule,
    responses(
        (status = 201, description = "the scheduled action, with its next run", body = ScheduleView),
        WriteErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
    body: super::Json<CreateSchedule>,
) -> Result<HttpResponse, ApiError> {
    let group = owned_group(&state, &tenant, &path).await?;
    resource::load::<Groups>(&state, &group).await?;
    let body = body.into_inner();
    let definition = ScheduleDefinition {
        name: body.name,
        at: instant("at", body.at.as_deref())?,
        recurrence: body.recurrence,
        time_zone: body
            .time_zone
            .unwrap_or_else(|| DEFAULT_TIME_ZONE.to_owned()),
        start_time: instant("start_time", body.start_time.as_deref())?,
        end_time: instant("end_time", body.end_time.as_deref())?,
        min_size: body.min_size,
        max_size: body.max_size,
        desired_capacity: body.desired_capacity,
    };
    let id = ScheduleId::generate();
    let command = ScheduledCommand::Create {
        id: id.clone(),
        group_id: group.clone(),
        tenant_id: tenant,
        definition,
    };
    let scheduled = state
        .create::<Schedules>(&group, id.as_str(), command)
        .await?
        .state
        .ok_or_else(|| ApiError::not_found("schedule"))?;
    let now = state.supervisor.clock().now();
    Ok(HttpResponse::Created().json(ScheduleView::of(&scheduled, now)))
}

/// `GET /v1/groups/{id}/schedules`.
#[utoipa::path(
    get,
    path = "/v1/groups/{id}/schedules",
    tag = "schedules",
    params(("id" = String, Path, description = "group id"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "at most this many items (default 100)"), ("cursor" = Option<String>, Query, pattern = "^sch_[!-~]{0,251}$", description = "the `next_cursor` of the page before")),
    responses(
        (status = 200, description = "a page of scheduled actions", body = List<ScheduleView>),
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
    let cursor: Option<ScheduleId> = query.cursor(ScheduleId::PREFIX)?;
    let page = state
        .index
        .schedules_of(&group, cursor.as_ref(), query.limit()?);
    let now = state.supervisor.clock().now();
    Ok(resource::page::<Schedules, _>(&state, page, |s| ScheduleView::of(s, now)).await)
}

/// `GET /v1/groups/{id}/schedules/{sid}`.
#[utoipa::path(
    get,
    path = "/v1/groups/{id}/schedules/{sid}",
    tag = "schedules",
    params(("id" = String, Path, description = "group id"), ("sid" = String, Path, description = "schedule id")),
    responses(
        (status = 200, description = "the scheduled action", body = ScheduleView),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn show(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let id = resource::owned_in_group::<Schedules>(&state, &tenant, &path.0, &path.1).await?;
    let scheduled = resource::load::<Schedules>(&state, &id).await?;
    let now = state.supervisor.clock().now();
    Ok(HttpResponse::Ok().json(ScheduleView::of(&scheduled, now)))
}

/// `PATCH /v1/groups/{id}/schedules/{sid}`.
#[utoipa::path(
    patch,
    path = "/v1/groups/{id}/schedules/{sid}",
    tag = "schedules",
    params(("id" = String, Path, description = "group id"), ("sid" = String, Path, description = "schedule id")),
    request_body = UpdateSchedule,
    responses(
        (status = 200, description = "the scheduled action after the change", body = ScheduleView),
        WriteErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn update(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<(String, String)>,
    body: super::Json<UpdateSchedule>,
) -> Result<HttpResponse, ApiError> {
    let id = resource::owned_in_group::<Schedules>(&state, &tenant, &path.0, &path.1).await?;
    let body = body.into_inner();
    let nullable = |field, text: Option<Option<String>>| -> Result<_, ApiError> {
        match text {
            None => Ok(None),
            Some(text) => Ok(Some(instant(field, text.as_deref())?)),
        }
    };
    let patch = SchedulePatch {
        name: body.name,
        at: nullable("at", body.at)?,
        recurrence: body.recurrence,
        time_zone: body.time_zone,
        start_time: nullable("start_time", body.start_time)?,
        end_time: nullable("end_time", body.end_time)?,
        min_size: body.min_size,
        max_size: body.max_size,
        desired_capacity: body.desired_capacity,
    };
    let group = flotilla_actors::domain::GroupId::new(&path.0);
    let scheduled = state
        .change::<Schedules>(&group, id.as_str(), ScheduledCommand::Update(patch))
        .await?
        .state
        .ok_or_else(|| ApiError::not_found("schedule"))?;
    let now = state.supervisor.clock().now();
    Ok(HttpResponse::Ok().json(ScheduleView::of(&scheduled, now)))
}

/// `DELETE /v1/groups/{id}/schedules/{sid}`.
#[utoipa::path(
    delete,
    path = "/v1/groups/{id}/schedules/{sid}",
    tag = "schedules",
    params(("id" = String, Path, description = "group id"), ("sid" = String, Path, description = "schedule id")),
    responses(
        (status = 204, description = "deleted"),
        RemoveErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn delete(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let id = resource::owned_in_group::<Schedules>(&state, &tenant, &path.0, &path.1).await?;
    state
        .execute::<Schedules>(id.as_str(), ScheduledCommand::Delete)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
