//! Bearer tokens: a tenant's token names its tenant; the operator token creates tenants.

use std::future::{ready, Ready};

use actix_web::{web, FromRequest, HttpRequest};
use flotilla_actors::domain::TenantId;

use super::error::ApiError;
use super::AppState;
use crate::token;

/// The tenant a request acts as.
pub struct Tenant(pub TenantId);

/// A request made with the operator token.
pub struct Operator;

fn bearer(req: &HttpRequest) -> Result<String, ApiError> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
    let text = header
        .to_str()
        .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
    let token = bearer_of(text)
        .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer <token>"))?;
    Ok(token::hash(token))
}

/// The token of an `Authorization` header's value `Bearer <token>`, the scheme's name in any
/// case (RFC 9110 11.1: `bearer` is the same scheme); none if blank.
pub(crate) fn bearer_of(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The bearer token `req` presents, if it presents one.
pub(crate) fn presented(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(actix_web::http::header::AUTHORIZATION)?;
    bearer_of(value.to_str().ok()?)
}

fn state(req: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(ApiError::not_ready)?;
    if !state.is_ready() {
        return Err(ApiError::not_ready());
    }
    Ok(state)
}

impl FromRequest for Tenant {
    type Error = ApiError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let asked = state(req).and_then(|state| Ok((state.clone(), bearer(req)?)));
        Box::pin(async move {
            let (state, hash) = asked?;
            state
                .tenant_of_token(&hash)
                .await
                .map(Tenant)
                .ok_or_else(|| ApiError::unauthorized("unknown token"))
        })
    }
}

impl FromRequest for Operator {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(state(req).and_then(|state| {
            let hash = bearer(req)?;
            if constant_time_eq(state.operator_token_hash.as_bytes(), hash.as_bytes()) {
                return Ok(Operator);
            }
            // A tenant's token is a known identity without the right: 403, not 401.
            if state.index.tenant_of_token(&hash).is_some() {
                return Err(ApiError::forbidden("only the operator token may do this"));
            }
            Err(ApiError::unauthorized("the operator token is required"))
        }))
    }
}

/// Whether `a` and `b` are equal, in time that does not depend on where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::bearer_of;

    #[test]
    fn the_bearer_scheme_is_read_in_any_case_and_a_blank_token_is_none() {
        assert_eq!(bearer_of("Bearer flo_abc"), Some("flo_abc"));
        assert_eq!(bearer_of("bearer flo_abc"), Some("flo_abc"));
        assert_eq!(bearer_of("BEARER  flo_abc "), Some("flo_abc"));
        assert_eq!(bearer_of("Bearer "), None);
        assert_eq!(bearer_of("Basic Zm9vOmJhcg=="), None);
        assert_eq!(bearer_of("Bearerflo_abc"), None);
    }
}
