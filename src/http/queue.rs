//! `/api/queue/dead-letters`: the dead-letter queue, listed, grouped by
//! transport and error class, and replayed in bulk by filter, either a
//! batch per call or as a replay job the engine runs to the end
//! ([`crate::engine::run_replay_jobs`]).

use actix_web::{HttpRequest, HttpResponse, web};

use super::auth::{AdminRole, Authorized, ReadRole};
use super::dto::{
    DeadLetterGroups, MessagePage, ReplayJobFilter, ReplayJobList, ReplayJobView, ReplayRequest,
    ReplayResponse,
};
use super::error::ErrorBody;
use super::extract::{JsonBody, OptionalJsonBody, Query};
use super::messages::{include_payload, message_filter, page_limit, page_request, parse_id};
use super::openapi::{ErrorClassName, Include, Instant};
use super::{ApiError, AppState};
use crate::delivery::errors::CLASSES;
use crate::domain::{Category, Channel, Stamp, ValidationError, WholeNumber, check_category};
use crate::storage::{MAX_BATCH, MessageFilter, ReplayJob};

/// Dead letters, newest first, cursor-paged like `GET /api/messages`.
#[utoipa::path(
    get,
    path = "/api/queue/dead-letters",
    tag = "queue",
    params(
        ("transport" = Option<String>, Query, description = "Dead letters of this transport"),
        ("channel" = Option<Channel>, Query, description = "email | sms | chat | push | webhook"),
        ("category" = Option<Category>, Query, description = "Dead letters of this category"),
        ("error_class" = Option<ErrorClassName>, Query, description = "Dead letters whose last error is of this class"),
        ("since" = Option<Instant>, Query, example = "2026-12-01T00:00:00Z", description = "Created at or after this instant (RFC 3339)"),
        ("until" = Option<Instant>, Query, example = "2026-12-02T00:00:00Z", description = "Created before this instant (RFC 3339); after `since`"),
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
    let query = Query::parse(
        &req,
        &[&FILTERS[..], &["limit", "after", "include"]].concat(),
    )?;
    let filter = message_filter(&query)?.dead_letters();
    let page = page_request(&query)?;
    let include_payload = include_payload(&query)?;
    let page = state.storage.list_messages(&filter, page).await?;
    Ok(HttpResponse::Ok().json(MessagePage::new(page, include_payload)))
}

/// The filters of the dead-letter listing and its groups.
const FILTERS: [&str; 6] = [
    "transport",
    "channel",
    "category",
    "error_class",
    "since",
    "until",
];

/// Dead letters by transport and the class of their last error, largest
/// group first: how many, and when the first and the latest of them were
/// dead-lettered. The class is read from how the last error begins (the
/// transports' errors each begin with their own words); an error that
/// none begins, as an older version may have written, is `unknown`.
#[utoipa::path(
    get,
    path = "/api/queue/dead-letters/groups",
    tag = "queue",
    params(
        ("transport" = Option<String>, Query, description = "Dead letters of this transport"),
        ("channel" = Option<Channel>, Query, description = "email | sms | chat | push | webhook"),
        ("category" = Option<Category>, Query, description = "Dead letters of this category"),
        ("error_class" = Option<ErrorClassName>, Query, description = "Dead letters whose last error is of this class"),
        ("since" = Option<Instant>, Query, example = "2026-12-01T00:00:00Z", description = "Created at or after this instant (RFC 3339)"),
        ("until" = Option<Instant>, Query, example = "2026-12-02T00:00:00Z", description = "Created before this instant (RFC 3339); after `since`"),
    ),
    responses(
        (status = 200, body = DeadLetterGroups),
        (status = 400, description = "A query parameter is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` role", body = ErrorBody),
        (status = 503, description = "Storage unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn dead_letter_groups(
    _: Authorized<ReadRole>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &FILTERS)?;
    let filter = message_filter(&query)?;
    let groups = state.storage.dead_letter_groups(&filter).await?;
    Ok(HttpResponse::Ok().json(DeadLetterGroups {
        groups: groups.into_iter().map(Into::into).collect(),
    }))
}

/// Replay dead letters in bulk, oldest first: each is queued again under
/// its own id with fresh attempts (event `replayed`), at most once per
/// call. An empty body replays up to 1000 of every transport.
///
/// To replay every dead letter that matches, call again until `replayed`
/// is empty: the replayed are no longer dead, so each call takes the
/// next ones. One that fails again and is dead-lettered anew joins the
/// end of the queue (dead letters are replayed by when they died), so it
/// is not taken again before those still waiting; a client that must not
/// replay it twice stops at an id it has seen.
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
        (status = 422, description = "Unknown transport, invalid category or error class, or limit out of range; `field` names it", body = ErrorBody),
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
    let filter = replay_filter(
        &state,
        ReplayJobFilter {
            transport: request.transport,
            channel: request.channel,
            category: request.category,
            error_class: request.error_class,
        },
    )?;
    let replayed = state
        .storage
        .replay_dead(&filter, limit, state.clock.now())
        .await?;
    Ok(HttpResponse::Ok().json(ReplayResponse {
        replayed: replayed.iter().map(ToString::to_string).collect(),
    }))
}

/// The dead letters a replay of `request` takes, once its filters are
/// known good.
fn replay_filter(state: &AppState, request: ReplayJobFilter) -> Result<MessageFilter, ApiError> {
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
    if let Some(category) = &request.category {
        check_category(category).map_err(|e| ValidationError::invalid("category", e))?;
    }
    if let Some(class) = request
        .error_class
        .as_ref()
        .filter(|class| !CLASSES.contains(&class.as_str()))
    {
        return Err(ValidationError::invalid(
            "error_class",
            format!("`{class}` is not one of {}", CLASSES.join(", ")),
        )
        .into());
    }
    Ok(MessageFilter {
        transport: request.transport,
        channel: request.channel,
        category: request.category,
        error_class: request.error_class,
        ..MessageFilter::default()
    })
}

/// Starts replaying every dead letter that matches, in the background:
/// the engine replays them a batch of 1000 at a time, as
/// `POST /api/queue/dead-letters/replay` does (event `replayed`), until a
/// batch finds none, and carries on after a restart. It takes only what
/// was dead when the job started, so it replays each message at most
/// once. `total` is the match count at the start.
#[utoipa::path(
    post,
    path = "/api/queue/dead-letters/replay-jobs",
    tag = "queue",
    request_body(content = ReplayJobFilter, description = "`{}` replays every dead letter"),
    responses(
        (status = 202, description = "The job, running", body = ReplayJobView),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` role", body = ErrorBody),
        (status = 408, description = "Body not received within `server.body_timeout_ms`; nothing stored", body = ErrorBody),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "Unknown transport or field, invalid category or error class; `field` names it", body = ErrorBody),
        (status = 503, description = "Storage unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn start_replay_job(
    _: Authorized<AdminRole>,
    state: web::Data<AppState>,
    JsonBody(request): JsonBody<ReplayJobFilter>,
) -> Result<HttpResponse, ApiError> {
    let filter = replay_filter(&state, request)?;
    let mut job = ReplayJob::new(&filter, 0, state.clock.now());
    job.total = state
        .storage
        .count_messages(&job.dead_letters())
        .await?
        .count;
    state.storage.create_replay_job(&job).await?;
    Ok(HttpResponse::Accepted().json(ReplayJobView::from(job)))
}

/// One replay job with its progress.
#[utoipa::path(
    get,
    path = "/api/queue/dead-letters/replay-jobs/{id}",
    tag = "queue",
    params(("id" = Stamp, Path, description = "The job's id (ULID)")),
    responses(
        (status = 200, body = ReplayJobView),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` role", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 503, description = "Storage unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn replay_job(
    _: Authorized<ReadRole>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let job = state
        .storage
        .replay_job(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("replay job {id} not found")))?;
    Ok(HttpResponse::Ok().json(ReplayJobView::from(job)))
}

/// Replay jobs, newest first.
#[utoipa::path(
    get,
    path = "/api/queue/dead-letters/replay-jobs",
    tag = "queue",
    params(
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "At most this many, 1 to 1000, default 50"),
    ),
    responses(
        (status = 200, body = ReplayJobList),
        (status = 400, description = "A query parameter is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` role", body = ErrorBody),
        (status = 503, description = "Storage unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn replay_jobs(
    _: Authorized<ReadRole>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &["limit"])?;
    let limit = page_limit(&query)?;
    let jobs = state.storage.list_replay_jobs(limit).await?;
    Ok(HttpResponse::Ok().json(ReplayJobList {
        items: jobs.into_iter().map(ReplayJobView::from).collect(),
    }))
}
