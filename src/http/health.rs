//! Liveness and readiness.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;

/// Longest a readiness probe waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The process is up and serving HTTP.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "health",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = serde_json::Value))
)]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready to accept messages: storage answers.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    responses(
        (status = 200, description = "Storage answers", body = serde_json::Value),
        (status = 503, description = "Storage does not answer; `reason` says why", body = serde_json::Value),
    )
)]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let backend = state.storage.backend();
    let reason = match tokio::time::timeout(READY_TIMEOUT, state.storage.ping()).await {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(err.to_string()),
        Err(_) => Some(format!("storage did not answer within {READY_TIMEOUT:?}")),
    };
    match reason {
        None => HttpResponse::Ok().json(json!({
            "status": "ready",
            "checks": { "storage": { "status": "ok", "backend": backend } },
        })),
        Some(reason) => {
            tracing::warn!(backend, reason = %reason, "readiness check failed");
            HttpResponse::ServiceUnavailable().json(json!({
                "status": "unavailable",
                "reason": reason,
                "checks": { "storage": { "status": "down", "backend": backend, "error": reason } },
            }))
        }
    }
}
