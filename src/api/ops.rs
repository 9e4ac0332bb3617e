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

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut text = String::new();
    text.push_str("# HELP flotilla_objects Live objects by kind.\n# TYPE flotilla_objects gauge\n");
    for (kind, count) in state.index.counts() {
        text.push_str(&format!("flotilla_objects{{kind=\"{kind}\"}} {count}\n"));
    }
    text.push_str("# HELP flotilla_actors_resident Object actors in memory.\n# TYPE flotilla_actors_resident gauge\n");
    text.push_str(&format!(
        "flotilla_actors_resident {}\n",
        state.supervisor.resident()
    ));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text)
}

/// Any other path.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("route"))
}
