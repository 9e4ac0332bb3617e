//! `POST /v1/tenants`: the operator creates a tenant and receives its token, once.

use actix_web::{web, HttpResponse};
use flotilla_actors::aggregate::Tenants;
use flotilla_actors::domain::tenant::TenantCommand;
use flotilla_actors::domain::TenantId;
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::Operator;
use super::error::CreateErrors;
use super::views::TenantCreated;
use super::{ApiError, AppState};
use crate::token;

/// The body of a tenant's create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
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
    body: web::Json<CreateTenant>,
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
