//! `/api/transports`: each transport's live state from the engine joined
//! with its queue depth from storage, and the admin pause / resume (which
//! the engine persists before acting, so they survive a restart).

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::{AdminRole, Authorized, ReadRole};
use super::error::ErrorBody;
use super::openapi::TransportName;
use super::{ApiError, AppState};
use crate::engine::{CircuitState, EngineError, TransportStatus};

/// One transport as operators see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransportEntry {
    pub name: String,
    /// smtp, file, webhook, null, failover, round_robin
    pub kind: String,
    pub paused: bool,
    pub circuit: CircuitState,
    /// Messages queued for this transport (due or scheduled).
    pub depth: u64,
    /// Deliveries running now on this node.
    pub in_flight: usize,
    /// Claimed on this node and waiting for a delivery slot.
    pub prefetched: usize,
    pub concurrency: usize,
    /// Deliveries per minute.
    pub rate_limit: u32,
    pub burst_limit: u32,
    /// This node holds the transport's lease, so it is the one delivering.
    pub active_here: bool,
    /// Times the breaker has opened since this process started.
    pub breaker_opened: u64,
    pub last_error: Option<String>,
    /// Last finished delivery on this node (RFC 3339).
    pub last_activity: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransportList {
    pub transports: Vec<TransportEntry>,
}

fn entry(status: TransportStatus, depth: u64) -> TransportEntry {
    TransportEntry {
        name: status.name,
        kind: status.kind.to_owned(),
        paused: status.paused,
        circuit: status.circuit,
        depth,
        in_flight: status.in_flight,
        prefetched: status.prefetched,
        concurrency: status.concurrency,
        rate_limit: status.rate_limit,
        burst_limit: status.burst_limit,
        active_here: status.holds_lease,
        breaker_opened: status.breaker_opened,
        last_error: status.last_error,
        last_activity: status
            .last_activity
            .map(|at: DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::Millis, true)),
    }
}

async fn depths(state: &AppState) -> Result<BTreeMap<String, u64>, ApiError> {
    let mut depths = BTreeMap::new();
    for row in state.storage.queue_depth().await? {
        *depths.entry(row.transport).or_default() += row.queued;
    }
    Ok(depths)
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::UnknownTransport(name) => {
                ApiError::NotFound(format!("no transport named `{name}`"))
            }
            EngineError::Storage(storage) => storage.into(),
            EngineError::Stopped(_) => ApiError::Unavailable(err.to_string()),
        }
    }
}

/// Every transport: kind, paused, circuit state, depth, in flight, rate limit.
#[utoipa::path(
    get,
    path = "/api/transports",
    tag = "transports",
    responses(
        (status = 200, body = TransportList),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` role", body = ErrorBody),
        (status = 503, description = "Storage or engine unavailable", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn list(
    _: Authorized<ReadRole>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let statuses = state.engine()?.status().await?;
    let depths = depths(&state).await?;
    let transports = statuses
        .into_iter()
        .map(|s| {
            let depth = depths.get(&s.name).copied().unwrap_or(0);
            entry(s, depth)
        })
        .collect();
    Ok(HttpResponse::Ok().json(TransportList { transports }))
}

async fn set_paused(state: &AppState, name: &str, paused: bool) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let status = if paused {
        engine.pause(name).await?
    } else {
        engine.resume(name).await?
    };
    let depth = depths(state).await?.get(name).copied().unwrap_or(0);
    Ok(HttpResponse::Ok().json(entry(status, depth)))
}

/// Pause a transport: it claims nothing until resumed, and messages it had
/// claimed but not started go back to the queue without spending an
/// attempt. Persisted: a restart keeps it paused.
#[utoipa::path(
    post,
    path = "/api/transports/{name}/pause",
    tag = "transports",
    params(("name" = TransportName, Path, description = "Transport name")),
    responses(
        (status = 200, description = "The transport's entry, now paused", body = TransportEntry),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` role", body = ErrorBody),
        (status = 404, description = "No such transport", body = ErrorBody),
        (status = 503, description = "Storage or engine unavailable", body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn pause(
    _: Authorized<AdminRole>,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_paused(&state, &name, true).await
}

/// Resume a paused transport (persisted).
#[utoipa::path(
    post,
    path = "/api/transports/{name}/resume",
    tag = "transports",
    params(("name" = TransportName, Path, description = "Transport name")),
    responses(
        (status = 200, description = "The transport's entry, now running", body = TransportEntry),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` role", body = ErrorBody),
        (status = 404, description = "No such transport", body = ErrorBody),
        (status = 503, description = "Storage or engine unavailable", body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn resume(
    _: Authorized<AdminRole>,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_paused(&state, &name, false).await
}
