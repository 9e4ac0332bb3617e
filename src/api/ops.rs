//! Liveness, readiness, metrics and the JSON 404.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{ApiError, AppState};

/// `GET /healthz`: the process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 once the journal is replayed, 503 before.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.is_ready() {
        HttpResponse::Ok().json(json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({"status": "replaying"}))
    }
}

/// `GET /metrics`: Prometheus text exposition (format 0.0.4).
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
