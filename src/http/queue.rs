//! `/api/queue/dead-letters`: the dead-letter queue, listed and replayed
//! in bulk.

use actix_web::{HttpRequest, HttpResponse, web};

use super::auth::{AdminRole, Authorized, ReadRole};
use super::dto::{MessagePage, ReplayRequest, ReplayResponse};
use super::error::ErrorBody;
use super::extract::{OptionalJsonBody, Query};
use super::messages::{include_payload, page_request};
use super::openapi::Include;
use super::{ApiError, AppState};
use crate::domain::{Stamp, Status, ValidationError, WholeNumber};
use crate::storage::{MAX_BATCH, MessageFilter};

/// Dead letters, newest first, cursor-paged like `GET /api/messages`.
#[utoipa::path(
    get,
    path = "/api/queue/dead-letters",
    tag = "queue",
    params(
        ("transport" = Option<String>, Query, description = "Dead letters of this transport"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Page size, 1 to 1000, default 50"),
        ("after" = Option<Stamp>, Query, description = "The `next` cursor of the previous page"),
        ("include" = Option<Include>, Query, description = "`payload` adds each message's payload"),
    ),
    responses(
        (status = 200, body = MessagePage),
        (status = 400, description = "A query parameter is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` role", body = ErrorBody),
        (status = 503, description = "Storage unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn dead_letters(
    _: Authorized<ReadRole>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &["transport", "limit", "after", "include"])?;
    let filter = MessageFilter {
        status: Some(Status::Dead),
        transport: query.text("transport"),
        ..MessageFilter::default()
    };
    let page = page_request(&query)?;
    let include_payload = include_payload(&query)?;
    let page = state.storage.list_messages(&filter, page).await?;
    Ok(HttpResponse::Ok().json(MessagePage::new(page, include_payload)))
}

/// Replay dead letters in bulk, oldest first: each is queued again under
/// its own id with fresh attempts (event `replayed`). An empty body
/// replays up to 1000 of every transport.
#[utoipa::path(
    post,
    path = "/api/queue/dead-letters/replay",
    tag = "queue",
    request_body(content = ReplayRequest, description = "Optional; `{}` or no body replays up to 1000 of every transport"),
    responses(
        (status = 200, description = "The replayed ids (empty when there was nothing to replay)", body = ReplayResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` role", body = ErrorBody),
        (status = 408, description = "Body not received within `server.body_timeout_ms`; nothing stored", body = ErrorBody),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "Unknown transport or limit out of range", body = ErrorBody),
        (status = 503, description = "Storage unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn replay_dead_letters(
    _: Authorized<AdminRole>,
    state: web::Data<AppState>,
    OptionalJsonBody(request): OptionalJsonBody<ReplayRequest>,
) -> Result<HttpResponse, ApiError> {
    let limit = match request.limit.map(|WholeNumber(n)| n) {
        None => MAX_BATCH,
        Some(n) if (1..=MAX_BATCH as i64).contains(&n) => n as usize,
        Some(n) => {
            return Err(ValidationError::invalid(
                "limit",
                format!("limit is 1 to {MAX_BATCH}, got {n}"),
            )
            .into());
        }
    };
    // A dead letter of a transport no longer configured would be queued
    // where nothing delivers it.
    if let Some(transport) = &request.transport
        && !state.policy.transports.contains_key(transport)
    {
        return Err(ValidationError::new(
            "transport",
            "unknown_transport",
            format!("no transport named `{transport}` is configured"),
        )
        .into());
    }
    let replayed = state
        .storage
        .replay_dead(request.transport.as_deref(), limit, state.clock.now())
        .await?;
    Ok(HttpResponse::Ok().json(ReplayResponse {
        replayed: replayed.iter().map(ToString::to_string).collect(),
    }))
}
