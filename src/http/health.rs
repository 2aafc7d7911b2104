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

/// Ready to accept and deliver messages: storage answers and every
/// transport actor is running.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    responses(
        (status = 200, description = "Storage answers and the transports run", body = serde_json::Value),
        (status = 503, description = "Storage does not answer or a transport is down; `reason` says why", body = serde_json::Value),
    )
)]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let backend = state.storage.backend();
    let storage_problem = match tokio::time::timeout(READY_TIMEOUT, state.storage.ping()).await {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(err.to_string()),
        Err(_) => Some(format!("storage did not answer within {READY_TIMEOUT:?}")),
    };
    let storage_check = match &storage_problem {
        None => json!({ "status": "ok", "backend": backend }),
        Some(error) => json!({ "status": "down", "backend": backend, "error": error }),
    };
    let mut checks = json!({ "storage": storage_check });
    let mut transport_problem = None;
    if let Some(engine) = &state.engine {
        match tokio::time::timeout(READY_TIMEOUT, engine.status()).await {
            Ok(Ok(statuses)) => {
                let down: Vec<&str> = statuses
                    .iter()
                    .filter(|t| !t.running)
                    .map(|t| t.name.as_str())
                    .collect();
                if statuses.len() < state.settings.transports.len() || !down.is_empty() {
                    transport_problem =
                        Some(format!("transports not running: {}", down.join(", ")));
                }
                checks["transports"] = json!({
                    "status": if transport_problem.is_none() { "ok" } else { "down" },
                    "running": statuses.len() - down.len(),
                    "configured": state.settings.transports.len(),
                });
            }
            Ok(Err(err)) => transport_problem = Some(err.to_string()),
            Err(_) => {
                transport_problem = Some(format!(
                    "the engine did not answer within {READY_TIMEOUT:?}"
                ))
            }
        }
    }
    match storage_problem.or(transport_problem) {
        None => HttpResponse::Ok().json(json!({ "status": "ready", "checks": checks })),
        Some(reason) => {
            tracing::warn!(backend, reason = %reason, "readiness check failed");
            HttpResponse::ServiceUnavailable().json(json!({
                "status": "unavailable",
                "reason": reason,
                "checks": checks,
            }))
        }
    }
}
