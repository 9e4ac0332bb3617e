//! Alertmanager receivers (SPEC 5.3): `/v1/groups/{id}/receivers` to manage them, and
//! `POST /v1/alertmanager/{receiver_id}`, where Alertmanager's `webhook_configs` post their
//! notifications with the receiver's token as bearer.
//!
//! Each alert of a notification is an episode (its fingerprint and `startsAt`): its first
//! firing executes the receiver's firing policy once, its first resolution the resolved policy
//! once, through the supervisor (the receiver records the step in the execution's append).
//! Alertmanager retries only 5xx, so a notification the journal cannot take now gets 503; a
//! repeat of one handled is answered 200 and executes nothing.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use flotilla_actors::aggregate::{Groups, Receivers};
use flotilla_actors::domain::receiver::{EpisodeKey, Receiver, ReceiverCommand};
use flotilla_actors::domain::schedule::parse_instant;
use flotilla_actors::domain::{GroupId, PolicyId, ReceiverId, Rejection, TenantId};
use flotilla_actors::error::Error as ActorError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Tenant;
use super::error::{ErrorBody, ReadErrors, RemoveErrors, WriteErrors};
use super::groups::owned as owned_group;
use super::policies::owned as owned_policy;
use super::resource;
use super::{ApiError, AppState, List, ListQuery};
use crate::audit::format_millis;
use crate::token;

/// The most alerts one notification may carry.
pub const MAX_ALERTS: usize = 1_000;

/// The body of a receiver's create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReceiver {
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*[^\\s\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069\\u00ad\\u034f\\u061c\\u115f\\u1160\\u180e\\u200b-\\u200f\\u2060-\\u2064\\u3164\\ufe00-\\ufe0f\\ufeff\\uffa0][^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*$"
    )]
    name: String,
    /// The policy a firing alert executes (one of the group's).
    #[schema(pattern = "^pol_[!-~]{0,251}$")]
    firing: String,
    /// The policy a resolved alert executes, if any.
    #[schema(pattern = "^pol_[!-~]{0,251}$")]
    resolved: Option<String>,
}

/// A receiver; `token` only in the answer to its create.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiverView {
    /// Its id (`rcv_...`).
    pub id: String,
    /// The group it scales.
    pub group_id: String,
    /// Its name.
    pub name: String,
    /// Where Alertmanager posts: `<public URL>/v1/alertmanager/<id>`.
    pub url: String,
    /// The policy a firing alert executes.
    pub firing: String,
    /// The policy a resolved alert executes.
    pub resolved: Option<String>,
    /// The bearer token for `http_config.authorization.credentials` (shown once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// When it was created.
    pub created_at: String,
}

impl ReceiverView {
    fn of(state: &AppState, r: &Receiver, token: Option<String>) -> ReceiverView {
        ReceiverView {
            id: r.id.to_string(),
            group_id: r.group_id.to_string(),
            name: r.name.clone(),
            url: format!(
                "{}/v1/alertmanager/{}",
                state.settings.public_url().trim_end_matches('/'),
                r.id
            ),
            firing: r.firing.to_string(),
            resolved: r.resolved.as_ref().map(ToString::to_string),
            token,
            created_at: format_millis(r.created_at.as_millis()),
        }
    }
}

/// `POST /v1/groups/{id}/receivers`: 201 with the receiver's URL and token (shown once).
#[utoipa::path(
    post,
    path = "/v1/groups/{id}/receivers",
    tag = "receivers",
    params(("id" = String, Path, description = "group id")),
    request_body = CreateReceiver,
    responses(
        (status = 201, description = "the receiver, with its URL and token (shown once)", body = ReceiverView),
        WriteErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<String>,
    body: super::Json<CreateReceiver>,
) -> Result<HttpResponse, ApiError> {
    let group = owned_group(&state, &tenant, &path).await?;
    resource::load::<Groups>(&state, &group).await?;
    let body = body.into_inner();
    let firing = named_policy(&state, &tenant, &group, "firing", &body.firing).await?;
    let resolved = match &body.resolved {
        Some(pid) => Some(named_policy(&state, &tenant, &group, "resolved", pid).await?),
        None => None,
    };
    let id = ReceiverId::generate();
    let secret = token::generate("flo_am_");
    let command = ReceiverCommand::Create {
        id: id.clone(),
        group_id: group.clone(),
        tenant_id: tenant,
        name: body.name,
        firing,
        resolved,
        token_hash: token::hash(&secret),
    };
    let receiver = state
        .create::<Receivers>(&group, id.as_str(), command)
        .await?
        .state
        .ok_or_else(|| ApiError::not_found("receiver"))?;
    Ok(HttpResponse::Created().json(ReceiverView::of(&state, &receiver, Some(secret))))
}

/// Policy `pid`, which the body's `field` names, of group `group`: a reference to a policy the
/// tenant cannot see in this group is a 404 (SPEC 3).
async fn named_policy(
    state: &AppState,
    tenant: &TenantId,
    group: &GroupId,
    field: &str,
    pid: &str,
) -> Result<PolicyId, ApiError> {
    let policy = owned_policy(state, tenant, group.as_str(), pid)
        .await
        .map(|(_, policy)| policy)
        .map_err(|_| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{field} names no policy of group {group}"),
            )
        })?;
    // An alert carries no breach: neither a step policy nor target tracking could execute.
    super::policies::executable(state, &policy, false, field).await?;
    Ok(policy)
}

/// `GET /v1/groups/{id}/receivers`.
#[utoipa::path(
    get,
    path = "/v1/groups/{id}/receivers",
    tag = "receivers",
    params(("id" = String, Path, description = "group id"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "at most this many items (default 100)"), ("cursor" = Option<String>, Query, pattern = "^rcv_[!-~]{0,251}$", description = "the `next_cursor` of the page before")),
    responses(
        (status = 200, description = "a page of receivers", body = List<ReceiverView>),
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
    let cursor: Option<ReceiverId> = query.cursor(ReceiverId::PREFIX)?;
    let page = state
        .index
        .receivers_of(&group, cursor.as_ref(), query.limit()?);
    Ok(resource::page::<Receivers, _>(&state, page, |r| ReceiverView::of(&state, r, None)).await)
}

/// `GET /v1/groups/{id}/receivers/{rid}`.
#[utoipa::path(
    get,
    path = "/v1/groups/{id}/receivers/{rid}",
    tag = "receivers",
    params(("id" = String, Path, description = "group id"), ("rid" = String, Path, description = "receiver id")),
    responses(
        (status = 200, description = "the receiver (never its token)", body = ReceiverView),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn show(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let id = resource::owned_in_group::<Receivers>(&state, &tenant, &path.0, &path.1).await?;
    let receiver = resource::load::<Receivers>(&state, &id).await?;
    Ok(HttpResponse::Ok().json(ReceiverView::of(&state, &receiver, None)))
}

/// `DELETE /v1/groups/{id}/receivers/{rid}`: its URL answers 404 from then on.
#[utoipa::path(
    delete,
    path = "/v1/groups/{id}/receivers/{rid}",
    tag = "receivers",
    params(("id" = String, Path, description = "group id"), ("rid" = String, Path, description = "receiver id")),
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
    let id = resource::owned_in_group::<Receivers>(&state, &tenant, &path.0, &path.1).await?;
    state
        .execute::<Receivers>(id.as_str(), ReceiverCommand::Delete)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// An Alertmanager webhook notification (payload version 4); fields not read are ignored, as
/// Alertmanager adds some from version to version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Always `"4"`.
    #[schema(pattern = "^4$")]
    version: String,
    /// Alerts dropped by the receiver's `max_alerts`.
    #[serde(default)]
    truncated_alerts: u64,
    /// The alerts.
    #[schema(max_items = 1000)]
    alerts: Vec<Alert>,
}

/// One alert of a notification.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing` or `resolved`.
    #[schema(pattern = "^(firing|resolved)$")]
    status: String,
    /// Its labels; `alertname` names it in the activity.
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    /// When the episode started (RFC 3339).
    #[schema(format = DateTime)]
    starts_at: String,
    /// A hash of its labels (16 hex digits; 1 to 64 visible ASCII characters).
    #[schema(min_length = 1, max_length = 64, pattern = "^[!-~]+$")]
    fingerprint: String,
}

/// What a notification did.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Handled {
    /// The alerts read.
    pub alerts: usize,
    /// The policy executions they caused (repeats cause none).
    pub executed: usize,
}

/// Whether two hex digests are equal, in time independent of where they differ.
fn same_digest(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

/// One alert as read: whether it fires (else it resolved), its episode and its `alertname`.
struct Read {
    firing: bool,
    key: EpisodeKey,
    name: String,
}

/// Reads a notification's alerts, and how many Alertmanager left out.
fn alerts_of(body: &[u8]) -> Result<(Vec<Read>, u64), ApiError> {
    let notification: Notification = super::from_json(body)?;
    if notification.version != "4" {
        return Err(ApiError::bad_request(
            "unsupported_version",
            format!(
                "Alertmanager webhook payload version {:?}; version \"4\" is read",
                notification.version
            ),
        ));
    }
    if notification.alerts.len() > MAX_ALERTS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_alerts",
            format!("at most {MAX_ALERTS} alerts a notification"),
        ));
    }
    let mut alerts = Vec::with_capacity(notification.alerts.len());
    for (i, alert) in notification.alerts.into_iter().enumerate() {
        let bad =
            |why: String| ApiError::bad_request("invalid_alert", format!("alerts[{i}]: {why}"));
        let firing = match alert.status.as_str() {
            "firing" => true,
            "resolved" => false,
            other => {
                return Err(bad(format!(
                    "status {other:?} is neither firing nor resolved"
                )))
            }
        };
        // Alertmanager's are 16 hex digits; a key kept in the journal and shown as it is.
        let visible = alert
            .fingerprint
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b));
        if alert.fingerprint.is_empty() || alert.fingerprint.len() > 64 || !visible {
            return Err(bad(
                "fingerprint must have 1 to 64 visible ASCII characters".into(),
            ));
        }
        let starts_at = parse_instant("startsAt", &alert.starts_at)
            .map_err(|rejection| bad(rejection.to_string()))?;
        // Named in the journal's activity and the console: bounded like every name, and shown
        // in the order it is read (a control or bidirectional override stands as U+FFFD).
        let shown = |c: char| {
            if c.is_control() || flotilla_actors::domain::is_bidi_control(c) {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        };
        let name = alert
            .labels
            .get("alertname")
            .map(|name| name.chars().take(255).map(shown).collect())
            .unwrap_or_default();
        let key = EpisodeKey {
            fingerprint: alert.fingerprint,
            starts_at,
        };
        alerts.push(Read { firing, key, name });
    }
    Ok((alerts, notification.truncated_alerts))
}

/// `POST /v1/alertmanager/{receiver_id}`: an Alertmanager notification (SPEC 5.3).
#[utoipa::path(
    post,
    path = "/v1/alertmanager/{rid}",
    tag = "receivers",
    params(("rid" = String, Path, description = "receiver id")),
    request_body = Notification,
    responses(
        (status = 200, description = "handled: each alert's first firing and first resolution executed once, repeats nothing", body = Handled),
        (status = 400, description = "malformed, or not payload version 4", body = ErrorBody),
        (status = 401, description = "not this receiver's token", body = ErrorBody),
        (status = 404, description = "no such receiver, or deleted", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the request body did not arrive in time", body = ErrorBody),
        (status = 413, description = "over 1,000 alerts, or the body over its limit", body = ErrorBody),
        (status = 405, description = "`method_not_allowed`: the path is served with the methods `Allow` names", body = ErrorBody, headers(("Allow" = String, description = "the methods the path serves"))),
        (status = 503, description = "the service cannot take it now; Alertmanager retries", body = ErrorBody),
    ),
    security(("bearer" = [])),
    description = "Bearer: the receiver's own token (Alertmanager's `http_config.authorization.credentials`).",
)]
pub async fn notify(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    super::Body { bytes: body, .. }: super::Body,
) -> Result<HttpResponse, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::not_ready());
    }
    let id = ReceiverId::new(path.into_inner());
    if flotilla_actors::domain::Kind::of(id.as_str())
        != Some(flotilla_actors::domain::Kind::Receiver)
    {
        return Err(ApiError::not_found("receiver"));
    }
    // Asked of the index first: a post to an id no one created (anyone can send one) must not
    // start an actor that replays an empty stream and stays resident.
    let live = || {
        state
            .index
            .owner(flotilla_actors::domain::Kind::Receiver, id.as_str())
            .is_some_and(|owner| state.index.owns_group(&owner.tenant, &owner.group))
    };
    if !state.catch_up.known(live).await {
        return Err(ApiError::not_found("receiver"));
    }
    let presented = super::auth::presented(&req);
    let receiver = state
        .supervisor
        .get::<Receivers>(id.as_str())
        .await
        .map_err(|_| ApiError::unavailable("the receiver cannot be read now; retry"))?
        .state
        .filter(|r| !r.deleted)
        .ok_or_else(|| ApiError::not_found("receiver"))?;
    // A receiver of a deleted group is as gone as the group.
    if !state
        .index
        .owns_group(&receiver.tenant_id, &receiver.group_id)
    {
        return Err(ApiError::not_found("receiver"));
    }
    let Some(presented) = presented else {
        return Err(ApiError::unauthorized(
            "expected Authorization: Bearer <token>",
        ));
    };
    if !same_digest(&token::hash(presented), &receiver.token_hash) {
        return Err(ApiError::unauthorized("not this receiver's token"));
    }
    let (alerts, truncated) = alerts_of(&body)?;
    if truncated > 0 {
        tracing::warn!(receiver = %id, truncated, "Alertmanager truncated a notification's alerts");
        state.telemetry.truncated_alerts(truncated);
    }
    let mut handled = Handled {
        alerts: alerts.len(),
        executed: 0,
    };
    for Read { firing, key, name } in alerts {
        match state
            .supervisor
            .notify_receiver(&id, firing, key, name)
            .await
        {
            Ok(Some(_)) => handled.executed += 1,
            Ok(None) => {}
            Err(ActorError::Rejected(Rejection::NotFound { object: "receiver" })) => {
                return Err(ApiError::not_found("receiver"));
            }
            Err(error) => {
                tracing::warn!(receiver = %id, %error, "an Alertmanager notification not taken");
                return Err(ApiError::unavailable(
                    "the notification cannot be taken now; Alertmanager retries",
                ));
            }
        }
    }
    Ok(HttpResponse::Ok().json(handled))
}
