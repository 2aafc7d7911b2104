//! `/api/messages`: enqueue (one or a batch), read one, list, cancel and
//! retry. Validation is the domain's ([`EnqueueRequest::into_new_message`]);
//! this module turns requests into storage calls and results into the
//! shapes of [`super::dto`]. Every enqueue request is counted with how it
//! was answered, refusals included, so the enqueue handlers read their
//! key and body themselves rather than through extractors that would
//! answer before them.

use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};

use super::auth::{AdminRole, Authorized, EnqueueRole, ReadRole};
use super::dto::{
    BatchRequest, BatchResponse, BatchResult, EnqueueResponse, EnqueuedMessage, MessageCountView,
    MessageDetail, MessagePage,
};
use super::error::ErrorBody;
use super::extract::{JsonBody, Query};
use super::openapi::{Include, Instant};
use super::{ApiError, AppState};
use crate::delivery::errors::CLASSES;
use crate::domain::{
    Category, Channel, DeliveryState, EnqueueRequest, Fingerprint, IdempotencyKey, NewMessage,
    Stamp, Status, ValidationError, check_category, check_idempotency_key, normalise_any_recipient,
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
        ("idempotency_key" = Option<IdempotencyKey>, Query, description = "The message enqueued with this idempotency key (exactly)"),
        ("category" = Option<Category>, Query, description = "Messages of this category"),
        ("since" = Option<Instant>, Query, example = "2026-12-01T00:00:00Z", description = "Created at or after this instant (RFC 3339, e.g. `2026-12-01T09:00:00Z`)"),
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
pub async fn list_messages(
    _: Authorized<ReadRole>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(
        &req,
        &[&FILTERS[..], &["limit", "after", "include"]].concat(),
    )?;
    let filter = message_filter(&query)?;
    let page = page_request(&query)?;
    let include_payload = include_payload(&query)?;
    let page = state.storage.list_messages(&filter, page).await?;
    Ok(HttpResponse::Ok().json(MessagePage::new(page, include_payload)))
}

/// How many messages match, with the filters of `GET /api/messages`.
///
/// Exact up to 10,000 (`estimated: false`): no more than 10,001 matches
/// are ever read to answer. Past that the count is an estimate
/// (`estimated: true`), never below 10,001. PostgreSQL estimates with the
/// planner's row estimate for the same filtered query (its statistics,
/// so it can be off by a wide margin for a rare combination of filters).
/// SQLite extrapolates by time: stamps are ULIDs, made in time order, so
/// the newest 10,001 matches cover a stretch of stamp time, and matches
/// are taken to come as densely over the store's whole span (from its
/// oldest message, or `since`).
#[utoipa::path(
    get,
    path = "/api/messages/count",
    tag = "messages",
    params(
        ("status" = Option<Status>, Query, description = "queued | processing | sent | dead | cancelled | suppressed"),
        ("transport" = Option<String>, Query, description = "Messages of this transport"),
        ("channel" = Option<Channel>, Query, description = "email | sms | chat | push | webhook"),
        ("fingerprint" = Option<Fingerprint>, Query, description = "Messages with this content fingerprint (64 hex digits)"),
        ("recipient" = Option<String>, Query, description = "Messages to this address, number, device token or chat channel"),
        ("delivery" = Option<DeliveryState>, Query, description = "unknown | delivered | bounced | complained | failed"),
        ("idempotency_key" = Option<IdempotencyKey>, Query, description = "The message enqueued with this idempotency key (exactly)"),
        ("category" = Option<Category>, Query, description = "Messages of this category"),
        ("since" = Option<Instant>, Query, example = "2026-12-01T00:00:00Z", description = "Created at or after this instant (RFC 3339)"),
        ("until" = Option<Instant>, Query, example = "2026-12-02T00:00:00Z", description = "Created before this instant (RFC 3339); after `since`"),
    ),
    responses(
        (status = 200, body = MessageCountView),
        (status = 400, description = "A query parameter is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` role", body = ErrorBody),
        (status = 503, description = "Storage unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn count_messages(
    _: Authorized<ReadRole>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &FILTERS)?;
    let filter = message_filter(&query)?;
    let counted = state.storage.count_messages(&filter).await?;
    Ok(HttpResponse::Ok().json(MessageCountView::from(counted)))
}

/// The filters of `GET /api/messages` and its count.
const FILTERS: [&str; 10] = [
    "status",
    "transport",
    "channel",
    "fingerprint",
    "recipient",
    "delivery",
    "idempotency_key",
    "category",
    "since",
    "until",
];

/// The listing filters the query holds; a route's [`Query::parse`] says
/// which it accepts. `until` must come after `since`.
pub(super) fn message_filter(query: &Query) -> Result<MessageFilter, ApiError> {
    let since = query.get("since", parse_instant)?;
    let until = query.get("until", parse_instant)?;
    if let (Some(since), Some(until)) = (since, until)
        && since >= until
    {
        return Err(ApiError::bad_request(
            "invalid",
            "until",
            "until must be later than since",
        ));
    }
    Ok(MessageFilter {
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
        idempotency_key: query.get("idempotency_key", |s| {
            check_idempotency_key(s).map(|()| s.to_owned())
        })?,
        category: query.get("category", |s| check_category(s).map(|()| s.to_owned()))?,
        since,
        until,
        changed_by: None,
        error_class: query.get("error_class", |s| {
            CLASSES
                .iter()
                .find(|class| **class == s)
                .map(|class| (*class).to_owned())
                .ok_or_else(|| format!("`{s}` is not one of {}", CLASSES.join(", ")))
        })?,
    })
}

/// What `since` and `until` take: RFC 3339 with an upper-case `T` and
/// `Z` (or a numeric offset), exactly as [`parse_instant`] does; the
/// `date-time` format beside it rules out days a month lacks.
pub const INSTANT_PATTERN: &str =
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$";

/// An RFC 3339 instant in [`INSTANT_PATTERN`]'s shape, without a leap
/// second, which the stores cannot hold.
pub(super) fn parse_instant(raw: &str) -> Result<DateTime<Utc>, String> {
    let refused = || format!("`{raw}` is not an RFC 3339 instant such as 2026-12-01T09:00:00Z");
    let bytes = raw.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
    };
    let date_and_time = bytes.len() >= 20
        && digits(0..4)
        && bytes[4] == b'-'
        && digits(5..7)
        && bytes[7] == b'-'
        && digits(8..10)
        && bytes[10] == b'T'
        && digits(11..13)
        && bytes[13] == b':'
        && digits(14..16)
        && bytes[16] == b':'
        && digits(17..19);
    if !date_and_time {
        return Err(refused());
    }
    let mut rest = &bytes[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let length = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if length == 0 {
            return Err(refused());
        }
        rest = &fraction[length..];
    }
    let offset = rest == b"Z"
        || (rest.len() == 6
            && matches!(rest[0], b'+' | b'-')
            && rest[1..3].iter().all(u8::is_ascii_digit)
            && rest[3] == b':'
            && rest[4..6].iter().all(u8::is_ascii_digit));
    if !offset || &bytes[17..19] == b"60" {
        return Err(refused());
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| refused())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_instant_pattern_takes_what_the_server_does() {
        let pattern = regex::Regex::new(INSTANT_PATTERN).expect("a valid pattern");
        for (raw, accepted) in [
            ("2026-12-01T09:00:00Z", true),
            ("2026-12-01T09:00:00.123456Z", true),
            ("0001-01-01T00:00:00-23:59", true),
            ("9999-12-31T23:59:59.5+23:59", true),
            ("2026-12-01T09:00:00", false),
            ("2026-12-01t09:00:00z", false),
            ("2026-12-01 09:00:00Z", false),
            ("2026-12-01T09:00Z", false),
            ("2026-12-01T09:00:00.Z", false),
            ("2026-12-01T09:00:00+0100", false),
            ("2026-12-01", false),
            ("", false),
        ] {
            assert_eq!(pattern.is_match(raw), accepted, "pattern: {raw}");
            assert_eq!(parse_instant(raw).is_ok(), accepted, "server: {raw}");
        }
        // In the pattern's shape, but no instant: the `date-time` format
        // beside it rules these out.
        for raw in [
            "2026-02-30T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-01T24:00:00Z",
        ] {
            assert!(
                pattern.is_match(raw) && parse_instant(raw).is_err(),
                "{raw}"
            );
        }
        assert!(
            parse_instant("2026-12-31T23:59:60Z").is_err(),
            "no leap second"
        );
        assert_eq!(
            parse_instant("2026-12-01T10:00:00+01:00"),
            parse_instant("2026-12-01T09:00:00Z")
        );
    }
}
