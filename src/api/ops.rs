//! Liveness, readiness, metrics and the JSON 404.

use actix_web::{web, HttpResponse};

use super::error::ErrorBody;
use super::views::Status;
use super::{ApiError, AppState};

fn status(status: &str) -> Status {
    Status {
        status: status.to_owned(),
    }
}

/// `GET /healthz`: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    responses(
        (status = 200, description = "the process answers", body = Status),
    ),
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(status("ok"))
}

/// `GET /readyz`: 200 once the journal is replayed, 503 before.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, description = "the journal is replayed", body = Status),
        (status = 503, description = "still replaying", body = Status),
    ),
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.is_ready() {
        HttpResponse::Ok().json(status("ready"))
    } else {
        HttpResponse::ServiceUnavailable().json(status("replaying"))
    }
}

/// `GET /metrics`: Prometheus text exposition (format 0.0.4).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses(
        (status = 200, description = "Prometheus text exposition (0.0.4)", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 500, description = "a fault of the service", body = ErrorBody),
    ),
)]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let text = state.telemetry.encode().map_err(|_| {
        tracing::error!("the metrics cannot be encoded");
        ApiError::new(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            "metrics",
            "the service failed; try again",
        )
    })?;
    Ok(HttpResponse::Ok()
        .content_type(crate::telemetry::CONTENT_TYPE)
        .body(text))
}

/// Any other path.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("route"))
}
