//! `/api/alerts`: alert incidents, active and past, as the evaluator
//! ([`crate::alerts`]) recorded them.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::{Authorized, ReadRole};
use super::error::ErrorBody;
use super::extract::Query;
use super::messages::page_limit;
use super::{ApiError, AppState};
use crate::storage::{Alert, AlertState};

/// One incident of a rule on a transport.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertEntry {
    pub id: String,
    pub rule: String,
    /// failure_rate, breaker_open, dead_letters, oldest_queued,
    /// queue_depth, bounce_rate, complaint_rate
    pub kind: String,
    pub transport: String,
    pub state: AlertState,
    pub threshold: f64,
    /// The window measured, for failure_rate, dead_letters, bounce_rate
    /// and complaint_rate.
    pub window_s: Option<u64>,
    /// What was measured when the rule fired.
    pub fired_value: f64,
    /// The latest measurement (while active), or the one that resolved it.
    pub last_value: f64,
    pub fired_at: String,
    /// When `last_value` was measured.
    pub checked_at: String,
    pub resolved_at: Option<String>,
    /// How long the incident lasted, once resolved.
    pub duration_s: Option<i64>,
    /// False when it began within the rule's cooldown of a notified
    /// incident: recorded, but no notices sent.
    pub notified: bool,
    /// The message that carried the fired notice (`GET /api/messages/{id}`).
    pub fired_message_id: Option<String>,
    /// The message that carried the resolve notice.
    pub resolved_message_id: Option<String>,
    /// When the incident paused its transport (a rule with `action =
    /// "pause"`); null when it did not.
    pub paused_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertList {
    pub alerts: Vec<AlertEntry>,
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl From<Alert> for AlertEntry {
    fn from(alert: Alert) -> Self {
        AlertEntry {
            id: alert.id.to_string(),
            duration_s: alert
                .resolved_at
                .map(|at| (at - alert.fired_at).num_seconds()),
            rule: alert.rule,
            kind: alert.kind,
            transport: alert.transport,
            state: alert.state,
            threshold: alert.threshold,
            window_s: alert.window_s,
            fired_value: alert.fired_value,
            last_value: alert.last_value,
            fired_at: rfc3339(alert.fired_at),
            checked_at: rfc3339(alert.checked_at),
            resolved_at: alert.resolved_at.map(rfc3339),
            notified: alert.notified,
            fired_message_id: alert.fired_message.map(|id| id.to_string()),
            resolved_message_id: alert.resolved_message.map(|id| id.to_string()),
            paused_at: alert.paused_at.map(rfc3339),
        }
    }
}

/// Alert incidents, newest first: active ones and the history of resolved
/// ones.
#[utoipa::path(
    get,
    path = "/api/alerts",
    tag = "alerts",
    params(
        ("state" = Option<AlertState>, Query, description = "`active` or `resolved`; both when absent"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "At most this many, 1 to 1000, default 50"),
    ),
    responses(
        (status = 200, body = AlertList),
        (status = 400, description = "A query parameter is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` role", body = ErrorBody),
        (status = 503, description = "Storage unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn list(
    _: Authorized<ReadRole>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &["state", "limit"])?;
    let alert_state = query.get("state", |s| {
        AlertState::parse(s).ok_or_else(|| format!("`{s}` is not a state: active or resolved"))
    })?;
    let limit = page_limit(&query)?;
    let alerts = state.storage.list_alerts(alert_state, limit).await?;
    Ok(HttpResponse::Ok().json(AlertList {
        alerts: alerts.into_iter().map(AlertEntry::from).collect(),
    }))
}
