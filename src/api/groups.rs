//! `/v1/groups`: create, list, show, change, delete, pause and resume a group; its servers and
//! its scaling activity.

use actix_web::{web, HttpResponse};
use flotilla_actors::aggregate::Groups;
use flotilla_actors::domain::group::{
    Group, GroupCommand, GroupEvent, GroupPatch, NewGroup, Pause,
};
use flotilla_actors::domain::{DomainEvent, GroupId, TenantId};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::auth::Tenant;
use super::error::{ActErrors, CreateErrors, ListErrors, ReadErrors, RemoveErrors, WriteErrors};
use super::resource;
use super::views::{GroupCreated, GroupView, OutcomeKind, ServerView};
use super::{ApiError, AppState, List, ListQuery};
use crate::audit::format_millis;
use crate::token;

/// The body of `POST /v1/groups`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*[^\\s\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069\\u00ad\\u034f\\u061c\\u115f\\u1160\\u180e\\u200b-\\u200f\\u2060-\\u2064\\u3164\\ufe00-\\ufe0f\\ufeff\\uffa0][^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*$"
    )]
    name: String,
    #[serde(deserialize_with = "super::whole::required")]
    #[schema(maximum = 10000)]
    min_size: u32,
    #[serde(deserialize_with = "super::whole::required")]
    #[schema(maximum = 10000)]
    max_size: u32,
    /// Default `min_size`.
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(maximum = 10000)]
    desired_capacity: Option<u32>,
    /// Default 300.
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(maximum = 604800)]
    cooldown_seconds: Option<u32>,
    /// `{"provider": "process" | "http" | "simulated", ...}`; at most 64 KiB of JSON (413).
    #[schema(value_type = Object)]
    launch: Value,
    /// Free-form; at most 64 KiB of JSON (413).
    #[schema(value_type = Option<Object>)]
    metadata: Option<Map<String, Value>>,
}

/// The body of `PATCH /v1/groups/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroup {
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*[^\\s\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069\\u00ad\\u034f\\u061c\\u115f\\u1160\\u180e\\u200b-\\u200f\\u2060-\\u2064\\u3164\\ufe00-\\ufe0f\\ufeff\\uffa0][^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*$"
    )]
    name: Option<String>,
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(maximum = 10000)]
    min_size: Option<u32>,
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(maximum = 10000)]
    max_size: Option<u32>,
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(maximum = 604800)]
    cooldown_seconds: Option<u32>,
    /// Within the (new) bounds, else 400; the change's cause is `direct`, and it neither
    /// honours nor starts a cooldown (SPEC 2.3).
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(maximum = 10000)]
    desired_capacity: Option<u32>,
    /// Replaces the metadata whole; at most 64 KiB of JSON (413).
    #[schema(value_type = Option<Object>)]
    metadata: Option<Map<String, Value>>,
    /// Replaces the launch configuration whole; at most 64 KiB of JSON (413).
    #[schema(value_type = Option<Object>)]
    launch: Option<Value>,
}

/// `?limit=&cursor=&outcome=` of a group's activity.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    /// Only policy executions with this outcome (e.g. `shadow`).
    outcome: Option<OutcomeKind>,
}

/// `?force=` of a delete.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Delete the group's servers first.
    #[serde(default)]
    force: bool,
}

/// What only the service can say of a launch configuration (its schema is the domain's): the
/// `process` provider runs a tenant's command on this host, as the service's user, so it needs
/// the operator's leave; an `http` one needs a secret to sign with, its own or the operator's.
fn check_provider(state: &AppState, launch: Option<&Value>) -> Result<(), ApiError> {
    let Some(launch) = launch else {
        return Ok(());
    };
    match launch.get("provider").and_then(Value::as_str) {
        Some("process") if !state.settings.allow_process_provider => Err(ApiError::bad_request(
            "provider_disabled",
            "the process provider runs commands on the service's host; the operator enables \
                 it with --allow-process-provider",
        )),
        Some("http")
            if launch.get("secret").is_none() && state.settings.provider_http_secret.is_none() =>
        {
            Err(ApiError::bad_request(
                "invalid_input",
                "invalid launch.secret: is required, as the operator set no \
                 --provider-http-secret to sign with",
            ))
        }
        _ => Ok(()),
    }
}

/// Group `id`, if `tenant` owns it.
pub async fn owned(state: &AppState, tenant: &TenantId, id: &str) -> Result<GroupId, ApiError> {
    resource::owned::<Groups>(state, tenant, id, None).await
}

/// `POST /v1/groups`: 201 with the group and its metrics token (shown this once).
#[utoipa::path(
    post,
    path = "/v1/groups",
    tag = "groups",
    request_body = CreateGroup,
    responses(
        (status = 201, description = "the group and its metrics token (shown once)", body = GroupCreated),
        CreateErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    body: super::Json<CreateGroup>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    check_provider(&state, Some(&body.launch))?;
    let id = GroupId::generate();
    let metrics_token = token::generate("flo_mt_");
    let command = GroupCommand::Create(NewGroup {
        id: id.clone(),
        tenant_id: tenant,
        name: body.name,
        min_size: body.min_size,
        max_size: body.max_size,
        desired_capacity: body.desired_capacity,
        cooldown_seconds: body.cooldown_seconds,
        launch: body.launch,
        metadata: body.metadata,
        metrics_token_hash: token::hash(&metrics_token),
    });
    let group = state
        .execute::<Groups>(id.as_str(), command)
        .await?
        .state
        .ok_or_else(|| ApiError::not_found("group"))?;
    Ok(HttpResponse::Created().json(GroupCreated {
        group: view(&state, &group),
        metrics_token,
    }))
}

/// `GET /v1/groups`.
#[utoipa::path(
    get,
    path = "/v1/groups",
    tag = "groups",
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "at most this many items (default 100)"), ("cursor" = Option<String>, Query, pattern = "^grp_[!-~]{0,251}$", description = "the `next_cursor` of the page before")),
    responses(
        (status = 200, description = "a page of groups", body = List<GroupView>),
        ListErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let cursor: Option<GroupId> = query.cursor(GroupId::PREFIX)?;
    let page = state
        .index
        .groups_of(&tenant, cursor.as_ref(), query.limit()?);
    Ok(resource::page::<Groups, _>(&state, page, |g| view(&state, g)).await)
}

/// `group`'s view, with its owner and fencing token (SPEC 9).
fn view(state: &AppState, group: &Group) -> GroupView {
    GroupView::from(group).owned(&state.ownership, state.supervisor.clock().now())
}

/// `GET /v1/groups/{id}`.
#[utoipa::path(
    get,
    path = "/v1/groups/{id}",
    tag = "groups",
    params(("id" = String, Path, description = "group id")),
    responses(
        (status = 200, description = "the group", body = GroupView),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn show(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = owned(&state, &tenant, &path).await?;
    let group = resource::load::<Groups>(&state, &id).await?;
    Ok(HttpResponse::Ok().json(view(&state, &group)))
}

/// `PATCH /v1/groups/{id}`.
#[utoipa::path(
    patch,
    path = "/v1/groups/{id}",
    tag = "groups",
    params(("id" = String, Path, description = "group id")),
    request_body = UpdateGroup,
    responses(
        (status = 200, description = "the group after the change", body = GroupView),
        WriteErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn update(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
    body: super::Json<UpdateGroup>,
) -> Result<HttpResponse, ApiError> {
    let id = owned(&state, &tenant, &path).await?;
    let body = body.into_inner();
    check_provider(&state, body.launch.as_ref())?;
    let patch = GroupPatch {
        name: body.name,
        min_size: body.min_size,
        max_size: body.max_size,
        cooldown_seconds: body.cooldown_seconds,
        desired_capacity: body.desired_capacity,
        metadata: body.metadata,
        launch: body.launch,
    };
    respond(&state, &id, GroupCommand::Update(patch)).await
}

async fn respond(
    state: &AppState,
    id: &GroupId,
    command: GroupCommand,
) -> Result<HttpResponse, ApiError> {
    let group = state
        .execute::<Groups>(id.as_str(), command)
        .await?
        .state
        .ok_or_else(|| ApiError::not_found("group"))?;
    Ok(HttpResponse::Ok().json(view(state, &group)))
}

/// `DELETE /v1/groups/{id}[?force=true]`.
#[utoipa::path(
    delete,
    path = "/v1/groups/{id}",
    tag = "groups",
    params(("id" = String, Path, description = "group id"), DeleteQuery),
    responses(
        (status = 204, description = "deleted"),
        RemoveErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn delete(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
    query: web::Query<DeleteQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = owned(&state, &tenant, &path).await?;
    if query.force {
        drain(&state, &id).await?;
    }
    state
        .execute::<Groups>(id.as_str(), GroupCommand::Delete)
        .await?;
    crate::console::forget_day_starts(state.supervisor.journal(), &id);
    Ok(HttpResponse::NoContent().finish())
}

/// Passes a forced deletion makes over the group's servers before it answers 409.
const DRAIN_PASSES: usize = 3;

/// How long a forced deletion waits for its servers before it answers 409: a provider slow to
/// answer (an orchestrator timing out, a launch pass retrying) must not hold the request.
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Stops launching for group `id` and deletes its servers through the converger: a few passes,
/// each waited for with the deletions it started (which run at once, so servers slow to stop
/// cost one grace period, not one each), never a sleep, for at most [`DRAIN_WAIT`] of real
/// time. Servers still there after them (a provider that failed to delete, or is slow to)
/// get a 409; the group stays draining, and the converger's ticks go on deleting them.
async fn drain(state: &AppState, id: &GroupId) -> Result<(), ApiError> {
    state
        .execute::<Groups>(id.as_str(), GroupCommand::Drain)
        .await?;
    let passes = async {
        for _ in 0..DRAIN_PASSES {
            state.converger.reconcile_and_delete(id).await?;
            if resource::load::<Groups>(state, id)
                .await?
                .servers
                .is_empty()
            {
                return Ok(true);
            }
        }
        Ok::<_, ApiError>(false)
    };
    match actix_web::rt::time::timeout(DRAIN_WAIT, passes).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Err(error)) => Err(error),
        Ok(Ok(false)) | Err(_) => {
            // Why one of them is not gone yet, if the provider said.
            let why = resource::load::<Groups>(state, id)
                .await
                .ok()
                .and_then(|group| {
                    group.servers.unsettled().find_map(|server| {
                        let failure = server.last_failure.as_ref()?;
                        (server.delete_failures > 0)
                            .then(|| format!(" ({}: {})", server.id, failure.0))
                    })
                });
            Err(ApiError::from(
                flotilla_actors::domain::Rejection::Conflict {
                    reason: format!(
                        "servers are still being deleted{}; try again",
                        why.unwrap_or_default()
                    ),
                },
            ))
        }
    }
}

/// `POST /v1/groups/{id}/metrics-token`: a new metrics token for the group, shown once; the old
/// one stops working at once (the tokens its servers were launched with are untouched).
#[utoipa::path(
    post,
    path = "/v1/groups/{id}/metrics-token",
    tag = "groups",
    params(("id" = String, Path, description = "group id")),
    responses(
        (status = 200, description = "the group and its new metrics token (shown once)", body = GroupCreated),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn rotate_metrics_token(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = owned(&state, &tenant, &path).await?;
    let metrics_token = token::generate("flo_mt_");
    let command = GroupCommand::RotateMetricsToken {
        metrics_token_hash: token::hash(&metrics_token),
    };
    let group = state
        .execute::<Groups>(id.as_str(), command)
        .await?
        .state
        .ok_or_else(|| ApiError::not_found("group"))?;
    Ok(HttpResponse::Ok().json(GroupCreated {
        group: view(&state, &group),
        metrics_token,
    }))
}

/// The optional body of `POST /v1/groups/{id}/pause` (SPEC 2.3): the directions to pause. An
/// absent key is false; no body pauses both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    /// Suspend executions that would lower capacity.
    #[serde(default)]
    scale_in: bool,
    /// Suspend executions that would raise capacity.
    #[serde(default)]
    scale_out: bool,
}

/// `POST /v1/groups/{id}/pause`.
#[utoipa::path(
    post,
    path = "/v1/groups/{id}/pause",
    tag = "groups",
    params(("id" = String, Path, description = "group id")),
    request_body(content = Option<PauseBody>, description = "the directions to pause; no body pauses both", content_type = "application/json"),
    responses(
        (status = 200, description = "the paused group", body = GroupView),
        WriteErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn pause(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
    body: super::Body,
) -> Result<HttpResponse, ApiError> {
    let id = owned(&state, &tenant, &path).await?;
    // No body, or null, pauses both directions.
    let body: Option<PauseBody> = body.optional_json::<Option<PauseBody>>()?.flatten();
    let pause = body.map_or(Pause::BOTH, |body| Pause {
        scale_in: body.scale_in,
        scale_out: body.scale_out,
    });
    respond(&state, &id, GroupCommand::Pause(pause)).await
}

/// `POST /v1/groups/{id}/resume`.
#[utoipa::path(
    post,
    path = "/v1/groups/{id}/resume",
    tag = "groups",
    params(("id" = String, Path, description = "group id")),
    responses(
        (status = 200, description = "the resumed group", body = GroupView),
        ActErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn resume(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = owned(&state, &tenant, &path).await?;
    respond(&state, &id, GroupCommand::Resume).await
}

/// `GET /v1/groups/{id}/servers`: in id order; the cursor is the last id of the page.
#[utoipa::path(
    get,
    path = "/v1/groups/{id}/servers",
    tag = "groups",
    params(("id" = String, Path, description = "group id"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "at most this many items (default 100)"), ("cursor" = Option<String>, Query, pattern = "^srv_[!-~]{0,251}$", description = "the `next_cursor` of the page before")),
    responses(
        (status = 200, description = "a page of the group's servers", body = List<Value>),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn servers(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = owned(&state, &tenant, &path).await?;
    let limit = query.limit()?;
    let group = resource::load::<Groups>(&state, &id).await?;
    let after: String = query.cursor("srv_")?.unwrap_or_default();
    let mut page = group
        .servers
        .range::<_, str>((
            std::ops::Bound::Excluded(after.as_str()),
            std::ops::Bound::Unbounded,
        ))
        .map(|(_, server)| ServerView::new(&group, server));
    let items: Vec<ServerView> = page.by_ref().take(limit).collect();
    let next_cursor = match page.next() {
        Some(_) => items.last().map(|s| s.id.clone()),
        None => None,
    };
    Ok(HttpResponse::Ok().json(List { items, next_cursor }))
}

/// `GET /v1/groups/{id}/activity`: newest first; each item is the recorded event with its
/// journal sequence number and time. The cursor is a stream version.
#[utoipa::path(
    get,
    path = "/v1/groups/{id}/activity",
    tag = "groups",
    params(("id" = String, Path, description = "group id"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "at most this many items (default 100)"), ("cursor" = Option<String>, Query, pattern = "^[1-9][0-9]{0,18}$", description = "the `next_cursor` of the page before"), ("outcome" = Option<OutcomeKind>, Query, description = "only policy executions with this outcome, e.g. `shadow`")),
    responses(
        (status = 200, description = "scaling activity, newest first: each recorded event with its `seq` and `time`", body = List<Value>),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn activity(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
    query: web::Query<ActivityQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = owned(&state, &tenant, &path).await?;
    let query = query.into_inner();
    let outcome = query.outcome;
    let query = ListQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    let limit = query.limit()?;
    let journal = state.supervisor.journal();
    let to = match query.cursor.as_deref() {
        Some(cursor) => cursor
            .parse::<u64>()
            .ok()
            .and_then(|v| v.checked_sub(1))
            .ok_or_else(|| {
                ApiError::bad_request("invalid_cursor", "cursor must come from next_cursor")
            })?,
        None => journal.stream_version(id.as_str())?,
    };
    let mut items = Vec::new();
    let mut next_cursor = None;
    for record in journal.read_stream_back(id.as_str(), to) {
        let record = record?;
        let Ok(event) = record.decode::<GroupEvent>(GroupEvent::SCHEMA) else {
            tracing::warn!(
                seq = record.seq,
                "a group record that does not decode; not shown"
            );
            continue;
        };
        if !event.is_activity() {
            continue;
        }
        if let Some(wanted) = outcome {
            let GroupEvent::PolicyExecuted { outcome, .. } = &event else {
                continue;
            };
            if OutcomeKind::from(outcome) != wanted {
                continue;
            }
        }
        if items.len() == limit {
            next_cursor = Some((record.version + 1).to_string());
            break;
        }
        let mut item: Value = serde_json::from_slice(&record.payload).unwrap_or_default();
        if let Value::Object(map) = &mut item {
            map.insert("seq".into(), record.seq.into());
            map.insert("time".into(), format_millis(record.timestamp_ms).into());
        }
        items.push(item);
    }
    Ok(HttpResponse::Ok().json(List { items, next_cursor }))
}
