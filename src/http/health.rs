//! Liveness and readiness.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::{ApiError, AppState};
use crate::storage::Storage;

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

/// Ready to accept and deliver messages: storage answers reads and
/// commits a write, and every transport actor is running.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    responses(
        (status = 200, description = "Storage reads and writes and the transports run", body = serde_json::Value),
        (status = 503, description = "Storage does not answer or cannot write (`checks.storage.code`: `storage_full`, `storage_unavailable`), or a transport is down; `reason` says why", body = serde_json::Value),
    )
)]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let backend = state.storage.backend();
    let storage_problem = storage_problem(state.storage.as_ref()).await;
    let storage_check = match &storage_problem {
        None => json!({ "status": "ok", "backend": backend }),
        Some((code, error)) => {
            json!({ "status": "down", "backend": backend, "code": code, "error": error })
        }
    };
    let storage_problem = storage_problem.map(|(_, error)| error);
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

/// Why the store is not ready: its code (`storage_full`,
/// `storage_unavailable`, as the API answers) and the error. A full disk
/// or a read-only server still answers reads, so a write is tried too;
/// it costs one small commit per probe and nothing on the paths that
/// carry messages, and it notices when space comes back as soon as it
/// does.
async fn storage_problem(storage: &dyn Storage) -> Option<(String, String)> {
    let checks = async {
        storage.ping().await?;
        storage.probe_write().await
    };
    match tokio::time::timeout(READY_TIMEOUT, checks).await {
        Ok(Ok(())) => None,
        Ok(Err(err)) => {
            let error = err.to_string();
            Some((ApiError::from(err).code().to_owned(), error))
        }
        Err(_) => Some((
            "storage_unavailable".to_owned(),
            format!("storage did not answer within {READY_TIMEOUT:?}"),
        )),
    }
}
