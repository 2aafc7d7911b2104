//! `/api/messages`: enqueue (one or a batch), read one, list, cancel and
//! retry. Validation is the domain's ([`EnqueueRequest::into_new_message`]);
//! this module turns requests into storage calls and results into the
//! shapes of [`super::dto`]. Every enqueue request is counted with how it
//! was answered, refusals included, so the enqueue handlers read their
//! key and body themselves rather than through extractors that would
//! answer before them.

use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};

use super::auth::{AdminRole, Authorized, EnqueueRole, ReadRole};
use super::dto::{
    BatchRequest, BatchResponse, BatchResult, EnqueueResponse, EnqueuedMessage, MessageDetail,
    MessagePage,
};
use super::error::ErrorBody;
use super::extract::{JsonBody, Query};
use super::openapi::Include;
use super::{ApiError, AppState};
use crate::domain::{
    Channel, DeliveryState, EnqueueRequest, Fingerprint, NewMessage, Stamp, Status,
    ValidationError, normalise_any_recipient,
};
use crate::storage::{Enqueued, MAX_BATCH, MessageFilter, PageRequest};
use crate::telemetry::{self, Endpoint};

/// Page size when a listing names none.
pub const DEFAULT_PAGE_SIZE: usize = 50;

/// Enqueue one message.
#[utoipa::path(
    post,
    path = "/api/messages",
    tag = "messages",
    request_body = EnqueueRequest,
    responses(
        (status = 202, description = "Stored; it will be delivered", body = EnqueueResponse),
        (status = 200, description = "The idempotency key is known: the existing message", body = EnqueueResponse),
        (status = 400, description = "Malformed JSON, or text Herald will not carry (`forbidden_character`, named by `field`); nothing stored", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `enqueue` role", body = ErrorBody),
        (status = 408, description = "Body not received within `server.body_timeout_ms`; nothing stored", body = ErrorBody),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "Invalid message; `field` names the problem", body = ErrorBody),
        (status = 503, description = "The store cannot write (`storage_full`, `storage_unavailable`); nothing stored", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before sending the request again"))),
    ),
    security(("bearer" = ["enqueue"]))
)]
pub async fn enqueue(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let answer = enqueue_one(&req, payload, &state).await;
    telemetry::enqueue_request(Endpoint::Single, request_result(&answer));
    answer
}

async fn enqueue_one(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    // The key first: a refused client's body is never read.
    Authorized::<EnqueueRole>::extract(req).await?;
    let JsonBody(request) =
        JsonBody::<EnqueueRequest>::from_request(req, &mut payload.into_inner()).await?;
    let now = state.clock.now();
    let mut messages = request.into_new_messages(&state.policy, now)?;
    if messages.len() > 1 {
        return enqueue_fanned_out(state, messages, now).await;
    }
    let Some(message) = messages.pop() else {
        return Err(ApiError::Internal("an enqueue made no message".into()));
    };
    let (transport, channel) = (message.transport.clone(), message.channel);
    let enqueued = state.enqueues.enqueue(message, now).await?;
    let status = if enqueued.created {
        telemetry::messages_enqueued([(transport.as_str(), channel)]);
        telemetry::recipients_suppressed(&transport, enqueued.suppressed.len());
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(EnqueueResponse::from(&enqueued)))
}

/// The messages of a push to `tokens`, stored in one transaction: all or
/// none, as a batch is.
async fn enqueue_fanned_out(
    state: &AppState,
    messages: Vec<NewMessage>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<HttpResponse, ApiError> {
    let (results, status) = store_together(state, messages, now).await?;
    let Some(first) = results.first() else {
        return Err(ApiError::Internal(
            "a fanned-out enqueue stored nothing".into(),
        ));
    };
    let response = EnqueueResponse {
        messages: Some(results.iter().map(EnqueuedMessage::from).collect()),
        ..EnqueueResponse::from(first)
    };
    Ok(HttpResponse::build(status).json(response))
}

/// Stores `messages` in one transaction, counts the new ones, and says
/// how to answer: 202 when at least one is new, 200 when every one was
/// an idempotent repeat, as for a single enqueue.
async fn store_together(
    state: &AppState,
    messages: Vec<NewMessage>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(Vec<Enqueued>, StatusCode), ApiError> {
    let labels: Vec<(String, Channel)> = messages
        .iter()
        .map(|m| (m.transport.clone(), m.channel))
        .collect();
    let results = state.storage.enqueue_many(messages, now).await?;
    telemetry::messages_enqueued(
        labels
            .iter()
            .zip(&results)
            .filter(|(_, enqueued)| enqueued.created)
            .map(|((transport, channel), _)| (transport.as_str(), *channel)),
    );
    for ((transport, _), enqueued) in labels.iter().zip(&results) {
        telemetry::recipients_suppressed(transport, enqueued.suppressed.len());
    }
    let status = if results.iter().any(|r| r.created) {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((results, status))
}

/// How an enqueue request was answered, as `herald_enqueue_requests_total`
/// labels it: 202 accepted, 200 duplicate (a known idempotency key), or
/// why it was refused.
fn request_result(answer: &Result<HttpResponse, ApiError>) -> &'static str {
    match answer {
        Ok(response) if response.status() == StatusCode::ACCEPTED => "accepted",
        Ok(_) => "duplicate",
        Err(
            ApiError::Validation(_)
            | ApiError::BadRequest { .. }
            | ApiError::UnsupportedMediaType(_),
        ) => "invalid",
        Err(ApiError::PayloadTooLarge { .. }) => "too_large",
        Err(ApiError::Unauthorized { .. } | ApiError::Forbidden(_)) => "unauthorized",
        Err(ApiError::Unavailable(_) | ApiError::StorageOutage { .. }) => "unavailable",
        Err(_) => "error",
    }
}

/// Enqueue up to 1000 messages in one transaction.
///
/// Every message is validated before anything is stored: if one is
/// invalid the answer is 422 naming it (`messages[3].email.to[0]`) and
/// nothing is stored. Otherwise all are stored at once and each gets a
/// result, in request order. The answer is 202 when at least one message
/// was created, and 200 when every message was an idempotent repeat of a
/// stored one (nothing new was accepted), as for a single enqueue.
#[utoipa::path(
    post,
    path = "/api/messages/batch",
    tag = "messages",
    request_body = BatchRequest,
    responses(
        (status = 202, description = "All stored (at least one new)", body = BatchResponse),
        (status = 200, description = "Every message was an idempotent repeat", body = BatchResponse),
        (status = 400, description = "Malformed JSON, or text Herald will not carry (`forbidden_character`, named by `field`); nothing stored", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `enqueue` role", body = ErrorBody),
        (status = 408, description = "Body not received within `server.body_timeout_ms`; nothing stored", body = ErrorBody),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "A message is invalid (named by `field`), or the batch is empty or too large; nothing stored", body = ErrorBody),
        (status = 503, description = "The store cannot write (`storage_full`, `storage_unavailable`); nothing stored", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before sending the request again"))),
    ),
    security(("bearer" = ["enqueue"]))
)]
pub async fn enqueue_batch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let answer = enqueue_many(&req, payload, &state).await;
    telemetry::enqueue_request(Endpoint::Batch, request_result(&answer));
    answer
}

async fn enqueue_many(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    Authorized::<EnqueueRole>::extract(req).await?;
    let JsonBody(batch) =
        JsonBody::<BatchRequest>::from_request(req, &mut payload.into_inner()).await?;
    if batch.messages.is_empty() {
        return Err(
            ValidationError::required("messages", "a batch needs at least one message").into(),
        );
    }
    if batch.messages.len() > MAX_BATCH {
        return Err(ValidationError::too_many(
            "messages",
            format!(
                "{} messages; a batch holds at most {MAX_BATCH}",
                batch.messages.len()
            ),
        )
        .into());
    }
    let now = state.clock.now();
    let made = batch
        .messages
        .into_iter()
        .enumerate()
        .map(|(index, request)| {
            request
                .into_new_messages(&state.policy, now)
                .map(|made| (index, made))
                .map_err(|err| ValidationError {
                    field: format!("messages[{index}].{}", err.field),
                    ..err
                })
        })
        .collect::<Result<Vec<(usize, Vec<NewMessage>)>, ValidationError>>()?;
    let indexes: Vec<usize> = made
        .iter()
        .flat_map(|(index, made)| std::iter::repeat_n(*index, made.len()))
        .collect();
    if indexes.len() > MAX_BATCH {
        return Err(ValidationError::too_many(
            "messages",
            format!(
                "{} messages once pushes to `tokens` fan out; a batch holds at most {MAX_BATCH}",
                indexes.len()
            ),
        )
        .into());
    }
    let messages: Vec<NewMessage> = made.into_iter().flat_map(|(_, made)| made).collect();
    let (results, status) = store_together(state, messages, now).await?;
    let results = results
        .iter()
        .zip(indexes)
        .map(|(enqueued, index)| BatchResult {
            index,
            id: enqueued.id.to_string(),
            status: enqueued.status,
            fingerprint: enqueued.fingerprint.to_string(),
            suppressed: super::dto::suppressed_of(enqueued),
        })
        .collect();
    Ok(HttpResponse::build(status).json(BatchResponse { results }))
}

/// One message with its events, oldest first.
#[utoipa::path(
    get,
    path = "/api/messages/{id}",
    tag = "messages",
    params(
        ("id" = Stamp, Path, description = "The message's stamp (ULID)"),
        ("include" = Option<Include>, Query, description = "`payload` adds the stored payload"),
    ),
    responses(
        (status = 200, body = MessageDetail),
        (status = 400, description = "Malformed id or query parameter", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` role", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 503, description = "Storage unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn get_message(
    _: Authorized<ReadRole>,
    state: web::Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let query = Query::parse(&req, &["include"])?;
    let include_payload = include_payload(&query)?;
    let found = state
        .storage
        .get_message(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("message {id} not found")))?;
    Ok(HttpResponse::Ok().json(MessageDetail::new(found, include_payload)))
}

/// Messages, newest first, cursor-paged; filters combine with AND.
#[utoipa::path(
    get,
    path = "/api/messages",
    tag = "messages",
    params(
        ("status" = Option<Status>, Query, description = "queued | processing | sent | dead | cancelled | suppressed"),
        ("transport" = Option<String>, Query, description = "Messages of this transport"),
        ("channel" = Option<Channel>, Query, description = "email | sms | chat | push | webhook"),
        ("fingerprint" = Option<Fingerprint>, Query, description = "Messages with this content fingerprint (64 hex digits)"),
        ("recipient" = Option<String>, Query, description = "Messages to this address, number, device token or chat channel (an email address matches whatever its case or display name)"),
        ("delivery" = Option<DeliveryState>, Query, description = "unknown | delivered | bounced | complained | failed: what the provider reported"),
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
pub async fn list_messages(
    _: Authorized<ReadRole>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(
        &req,
        &[
            "status",
            "transport",
            "channel",
            "fingerprint",
            "recipient",
            "delivery",
            "limit",
            "after",
            "include",
        ],
    )?;
    let filter = MessageFilter {
        status: query.get("status", |s| s.parse::<Status>().map_err(|e| e.to_string()))?,
        transport: query.text("transport"),
        channel: query.get("channel", |s| {
            s.parse::<Channel>().map_err(|e| e.to_string())
        })?,
        fingerprint: query.get("fingerprint", |s| {
            Fingerprint::parse(s).ok_or_else(|| "a fingerprint is 64 hex digits".to_owned())
        })?,
        recipient: query.get("recipient", |s| {
            let normalised = normalise_any_recipient(None, s);
            if normalised.is_empty() {
                Err("an address, number, token or channel, not blank".to_owned())
            } else {
                Ok(normalised)
            }
        })?,
        delivery: query.get("delivery", |s| {
            DeliveryState::parse(s)
                .ok_or_else(|| "one of unknown, delivered, bounced, complained, failed".to_owned())
        })?,
    };
    let page = page_request(&query)?;
    let include_payload = include_payload(&query)?;
    let page = state.storage.list_messages(&filter, page).await?;
    Ok(HttpResponse::Ok().json(MessagePage::new(page, include_payload)))
}

/// Cancel a message that is queued (not yet being delivered), or discard
/// a dead letter. Answers the message with its events.
#[utoipa::path(
    post,
    path = "/api/messages/{id}/cancel",
    tag = "messages",
    params(("id" = Stamp, Path, description = "The message's stamp (ULID)")),
    responses(
        (status = 200, description = "Cancelled", body = MessageDetail),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` role", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 409, description = "Being delivered, sent or already cancelled", body = ErrorBody),
        (status = 503, description = "Storage unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn cancel(
    _: Authorized<AdminRole>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    state.storage.cancel(id, state.clock.now()).await?;
    detail(&state, id).await
}

/// Replay a dead message: queued again under the same id with fresh
/// attempts (event `replayed`).
#[utoipa::path(
    post,
    path = "/api/messages/{id}/retry",
    tag = "messages",
    params(("id" = Stamp, Path, description = "The message's stamp (ULID)")),
    responses(
        (status = 200, description = "Queued again", body = MessageDetail),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` role", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 409, description = "The message is not dead", body = ErrorBody),
        (status = 503, description = "Storage unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn retry(
    _: Authorized<AdminRole>,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    state.storage.replay(id, state.clock.now()).await?;
    detail(&state, id).await
}

/// The message as `GET /api/messages/{id}` shows it, after a change.
async fn detail(state: &AppState, id: Stamp) -> Result<HttpResponse, ApiError> {
    let found = state
        .storage
        .get_message(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("message {id} not found")))?;
    Ok(HttpResponse::Ok().json(MessageDetail::new(found, false)))
}

pub(super) fn parse_id(raw: &str) -> Result<Stamp, ApiError> {
    raw.parse::<Stamp>().map_err(|_| {
        ApiError::bad_request(
            "invalid",
            "id",
            format!("`{raw}` is not a message id (a 26-character ULID)"),
        )
    })
}

/// `limit` (1 to 1000, default 50) and `after` (a cursor).
pub(super) fn page_request(query: &Query) -> Result<PageRequest, ApiError> {
    let limit = page_limit(query)?;
    let after = query.get("after", |s| {
        s.parse::<Stamp>()
            .map_err(|_| "not a cursor: pass the `next` value of the previous page".to_owned())
    })?;
    Ok(PageRequest { after, limit })
}

/// `limit`: 1 to 1000, default 50.
pub(super) fn page_limit(query: &Query) -> Result<usize, ApiError> {
    Ok(query
        .get("limit", |s| {
            s.parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_BATCH).contains(n))
                .ok_or_else(|| format!("limit is a whole number from 1 to {MAX_BATCH}"))
        })?
        .unwrap_or(DEFAULT_PAGE_SIZE))
}

pub(super) fn include_payload(query: &Query) -> Result<bool, ApiError> {
    Ok(query
        .get("include", |s| match s {
            "payload" => Ok(true),
            other => Err(format!(
                "cannot include `{other}`; the only option is `payload`"
            )),
        })?
        .unwrap_or(false))
}
