//! `/v1/groups/{id}/policies/{pid}/webhooks`: create, list, show, rotate and revoke a policy's
//! webhooks. The secret is shown only in the answers to create and rotate.

use actix_web::{web, HttpResponse};
use flotilla_actors::aggregate::Webhooks;
use flotilla_actors::domain::webhook::{Webhook, WebhookCommand};
use flotilla_actors::domain::WebhookId;
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::Tenant;
use super::error::{ReadErrors, WriteErrors};
use super::policies::owned as owned_policy;
use super::resource;
use super::views::WebhookView;
use super::{ApiError, AppState, List, ListQuery};
use crate::token;

/// The body of a webhook's create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*[^\\s\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069\\u00ad\\u034f\\u061c\\u115f\\u1160\\u180e\\u200b-\\u200f\\u2060-\\u2064\\u3164\\ufe00-\\ufe0f\\ufeff\\uffa0][^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*$"
    )]
    name: String,
}

/// The (optional) body of a rotation.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// How long the previous secret stays valid (default 86400).
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(maximum = 604800)]
    grace_seconds: Option<u32>,
}

/// Webhook `wid` of policy `pid` of group `id`, if `tenant` owns them all.
async fn owned(
    state: &AppState,
    tenant: &flotilla_actors::domain::TenantId,
    path: &(String, String, String),
) -> Result<WebhookId, ApiError> {
    let (_, policy) = owned_policy(state, tenant, &path.0, &path.1).await?;
    resource::owned::<Webhooks>(state, tenant, &path.2, Some(policy.as_str())).await
}

fn view(state: &AppState, webhook: &Webhook, with_secret: bool) -> WebhookView {
    WebhookView::new(webhook, &state.settings.public_url(), with_secret)
}

/// `POST .../webhooks`: 201 `{id, name, url, secret}`.
#[utoipa::path(
    post,
    path = "/v1/groups/{id}/policies/{pid}/webhooks",
    tag = "webhooks",
    params(("id" = String, Path, description = "group id"), ("pid" = String, Path, description = "policy id")),
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "the webhook with its secret (shown once)", body = WebhookView),
        WriteErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<(String, String)>,
    body: super::Json<CreateWebhook>,
) -> Result<HttpResponse, ApiError> {
    let (group, policy) = owned_policy(&state, &tenant, &path.0, &path.1).await?;
    // A caller may send the breach a step policy needs; nothing executes target tracking.
    super::policies::executable(&state, &policy, true, "a webhook").await?;
    let id = WebhookId::generate();
    let command = WebhookCommand::Create {
        id: id.clone(),
        policy_id: policy,
        group_id: group.clone(),
        tenant_id: tenant,
        name: body.into_inner().name,
        secret: token::generate_secret(),
    };
    let webhook = state
        .create::<Webhooks>(&group, id.as_str(), command)
        .await?
        .state
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    Ok(HttpResponse::Created().json(view(&state, &webhook, true)))
}

/// `GET .../webhooks`.
#[utoipa::path(
    get,
    path = "/v1/groups/{id}/policies/{pid}/webhooks",
    tag = "webhooks",
    params(("id" = String, Path, description = "group id"), ("pid" = String, Path, description = "policy id"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "at most this many items (default 100)"), ("cursor" = Option<String>, Query, pattern = "^whk_[!-~]{0,251}$", description = "the `next_cursor` of the page before")),
    responses(
        (status = 200, description = "a page of webhooks, without secrets", body = List<WebhookView>),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<(String, String)>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (_, policy) = owned_policy(&state, &tenant, &path.0, &path.1).await?;
    let cursor: Option<WebhookId> = query.cursor(WebhookId::PREFIX)?;
    let page = state
        .index
        .webhooks_of(&policy, cursor.as_ref(), query.limit()?);
    let view = |webhook: &Webhook| view(&state, webhook, false);
    Ok(resource::page::<Webhooks, _>(&state, page, view).await)
}

/// `GET .../webhooks/{wid}`.
#[utoipa::path(
    get,
    path = "/v1/groups/{id}/policies/{pid}/webhooks/{wid}",
    tag = "webhooks",
    params(("id" = String, Path, description = "group id"), ("pid" = String, Path, description = "policy id"), ("wid" = String, Path, description = "webhook id")),
    responses(
        (status = 200, description = "the webhook, without its secret", body = WebhookView),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn show(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let id = owned(&state, &tenant, &path).await?;
    let webhook = resource::load::<Webhooks>(&state, &id).await?;
    Ok(HttpResponse::Ok().json(view(&state, &webhook, false)))
}

/// `POST .../webhooks/{wid}/rotate`: a new secret; the old one stays valid for the grace.
#[utoipa::path(
    post,
    path = "/v1/groups/{id}/policies/{pid}/webhooks/{wid}/rotate",
    tag = "webhooks",
    params(("id" = String, Path, description = "group id"), ("pid" = String, Path, description = "policy id"), ("wid" = String, Path, description = "webhook id")),
    request_body = Option<Rotate>,
    responses(
        (status = 200, description = "the webhook with its new secret (shown once)", body = WebhookView),
        WriteErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn rotate(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<(String, String, String)>,
    body: super::Body,
) -> Result<HttpResponse, ApiError> {
    let id = owned(&state, &tenant, &path).await?;
    let rotate: Rotate = body
        .optional_json::<Option<Rotate>>()?
        .flatten()
        .unwrap_or_default();
    let grace_seconds = rotate.grace_seconds;
    let command = WebhookCommand::Rotate {
        new_secret: token::generate_secret(),
        grace_seconds,
    };
    let group = flotilla_actors::domain::GroupId::new(&path.0);
    let webhook = state
        .change::<Webhooks>(&group, id.as_str(), command)
        .await?
        .state
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    Ok(HttpResponse::Ok().json(view(&state, &webhook, true)))
}

/// `DELETE .../webhooks/{wid}`: revoke; from then on its URL answers 404.
#[utoipa::path(
    delete,
    path = "/v1/groups/{id}/policies/{pid}/webhooks/{wid}",
    tag = "webhooks",
    params(("id" = String, Path, description = "group id"), ("pid" = String, Path, description = "policy id"), ("wid" = String, Path, description = "webhook id")),
    responses(
        (status = 204, description = "revoked: its URL answers 404 from now on"),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn revoke(
    state: web::Data<AppState>,
    Tenant(tenant): Tenant,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let id = owned(&state, &tenant, &path).await?;
    state
        .execute::<Webhooks>(id.as_str(), WebhookCommand::Revoke)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
