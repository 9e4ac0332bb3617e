//! `POST /v1/tenants`: the operator creates a tenant and receives its token, once; and gives it
//! a new one (`POST /v1/tenants/{id}/token`), the old one failing at once.

use actix_web::{web, HttpResponse};
use flotilla_actors::aggregate::Tenants;
use flotilla_actors::domain::tenant::TenantCommand;
use flotilla_actors::domain::TenantId;
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::Operator;
use super::error::{CreateErrors, ReadErrors};
use super::views::TenantCreated;
use super::{ApiError, AppState};
use crate::token;

/// The body of a tenant's create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*[^\\s\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069\\u00ad\\u034f\\u061c\\u115f\\u1160\\u180e\\u200b-\\u200f\\u2060-\\u2064\\u3164\\ufe00-\\ufe0f\\ufeff\\uffa0][^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*$"
    )]
    name: String,
}

/// 201 `{id, name, token}`; only the token's hash is kept.
#[utoipa::path(
    post,
    path = "/v1/tenants",
    tag = "tenants",
    request_body = CreateTenant,
    responses(
        (status = 201, description = "the tenant and its token (shown once)", body = TenantCreated),
        (status = 403, description = "a tenant's token: only the operator may create tenants", body = super::error::ErrorBody),
        CreateErrors,
    ),
    security(("bearer" = [])),
    description = "Requires the operator token.",
)]
pub async fn create(
    state: web::Data<AppState>,
    _: Operator,
    body: super::Json<CreateTenant>,
) -> Result<HttpResponse, ApiError> {
    let id = TenantId::generate();
    let token = token::generate("flo_t_");
    let command = TenantCommand::Create {
        id: id.clone(),
        name: body.into_inner().name,
        token_hash: token::hash(&token),
    };
    let tenant = state
        .execute::<Tenants>(id.as_str(), command)
        .await?
        .state
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    Ok(HttpResponse::Created().json(TenantCreated {
        id: tenant.id.to_string(),
        name: tenant.name,
        token,
    }))
}

/// `POST /v1/tenants/{id}/token`: a new token for the tenant, shown once; the old one stops
/// working at once.
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/token",
    tag = "tenants",
    params(("id" = String, Path, description = "tenant id")),
    responses(
        (status = 200, description = "the tenant and its new token (shown once)", body = TenantCreated),
        (status = 403, description = "a tenant's token: only the operator may rotate tokens", body = super::error::ErrorBody),
        ReadErrors,
    ),
    security(("bearer" = [])),
    description = "Requires the operator token.",
)]
pub async fn rotate_token(
    state: web::Data<AppState>,
    _: Operator,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    if !id.starts_with(TenantId::PREFIX) || state.supervisor.journal().stream_version(&id)? == 0 {
        return Err(ApiError::not_found("tenant"));
    }
    let token = token::generate("flo_t_");
    let command = TenantCommand::RotateToken {
        token_hash: token::hash(&token),
    };
    let tenant = state
        .execute::<Tenants>(&id, command)
        .await?
        .state
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    Ok(HttpResponse::Ok().json(TenantCreated {
        id: tenant.id.to_string(),
        name: tenant.name,
        token,
    }))
}
