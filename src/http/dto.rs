//! The JSON shapes of the API (DESIGN.md, "Shapes the clients rely on"),
//! kept apart from the domain types so that storage fields clients must
//! not see (claim tokens, leases) cannot leak by accident. Times are
//! RFC 3339 in UTC with millisecond precision (`2026-01-01T09:00:00.000Z`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

use super::openapi::{ErrorClassName, TransportName};
use crate::domain::{
    Category, Channel, DeliveryStatus, EnqueueRequest, Event, EventKind, Message,
    MessageWithEvents, Payload, Stamp, Status, WholeNumber,
};
use crate::storage::{DeadLetterGroup, Enqueued, MessageCount, Page, ReplayJob, ReplayJobState};

fn rfc3339<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn rfc3339_opt<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339(at, serializer),
        None => serializer.serialize_none(),
    }
}

/// The answer to an enqueue: 202 when stored, 200 when the idempotency key
/// matched an existing message (which this then describes).
#[derive(Debug, Serialize, ToSchema)]
pub struct EnqueueResponse {
    /// The message's stamp (ULID).
    #[schema(example = "01JDQ4Z8Y7M3V2K9W6T5R4P3N2")]
    pub id: String,
    pub status: Status,
    /// SHA-256 of the normalised content, lower-case hex.
    pub fingerprint: String,
    /// For a push to `tokens`, which makes a message per token: each of
    /// them, in the order of `tokens` (the first is the one above).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<EnqueuedMessage>>,
    /// Recipients left out because they are on the suppression list (all
    /// of them when `status` is `suppressed`); absent when none was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<Vec<String>>,
}

/// One message a fanned-out enqueue made.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnqueuedMessage {
    #[schema(example = "01JDQ4Z8Y7M3V2K9W6T5R4P3N2")]
    pub id: String,
    pub status: Status,
    pub fingerprint: String,
    /// As in [`EnqueueResponse`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<Vec<String>>,
}

/// `suppressed` of an answer: absent when no recipient was.
pub fn suppressed_of(enqueued: &Enqueued) -> Option<Vec<String>> {
    (!enqueued.suppressed.is_empty()).then(|| enqueued.suppressed.clone())
}

impl From<&Enqueued> for EnqueuedMessage {
    fn from(enqueued: &Enqueued) -> Self {
        EnqueuedMessage {
            id: enqueued.id.to_string(),
            status: enqueued.status,
            fingerprint: enqueued.fingerprint.to_string(),
            suppressed: suppressed_of(enqueued),
        }
    }
}

impl From<&Enqueued> for EnqueueResponse {
    fn from(enqueued: &Enqueued) -> Self {
        EnqueueResponse {
            id: enqueued.id.to_string(),
            status: enqueued.status,
            fingerprint: enqueued.fingerprint.to_string(),
            messages: None,
            suppressed: suppressed_of(enqueued),
        }
    }
}

/// `POST /api/messages/batch`: up to 1000 messages, stored all or none.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to `MAX_BATCH` (1000) messages.
    #[schema(min_items = 1, max_items = 1000)]
    pub messages: Vec<EnqueueRequest>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    /// One per message, in request order.
    pub results: Vec<BatchResult>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResult {
    /// The message's position in the request (a push to `tokens` makes
    /// one result per token, all with its index, in the order of `tokens`).
    pub index: usize,
    pub id: String,
    pub status: Status,
    pub fingerprint: String,
    /// As in [`EnqueueResponse`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<Vec<String>>,
}

/// A message as listed: everything but its events.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageSummary {
    pub id: String,
    pub channel: Channel,
    pub transport: String,
    pub category: Option<String>,
    pub status: Status,
    /// 0 (lowest) to 9 (highest).
    pub priority: u8,
    /// Attempts made so far (counted when a delivery starts).
    pub attempts: u32,
    pub max_attempts: u32,
    pub fingerprint: String,
    pub idempotency_key: Option<String>,
    pub metadata: serde_json::Value,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// When it may next be delivered: the scheduled send time or the
    /// retry backoff.
    #[serde(serialize_with = "rfc3339")]
    pub available_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub sent_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// What the provider reported after hand-over.
    pub delivery: DeliveryStatus,
    /// The channel's payload as stored; only with `?include=payload`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

impl MessageSummary {
    pub fn new(message: Message, include_payload: bool) -> Self {
        MessageSummary {
            id: message.id.to_string(),
            channel: message.channel,
            transport: message.transport,
            category: message.category,
            status: message.status,
            priority: message.priority.get(),
            attempts: message.attempts,
            max_attempts: message.max_attempts,
            fingerprint: message.fingerprint.to_string(),
            idempotency_key: message.idempotency_key,
            metadata: message.metadata,
            created_at: message.created_at,
            available_at: message.available_at,
            sent_at: message.sent_at,
            last_error: message.last_error,
            delivery: message.delivery,
            payload: include_payload.then(|| shown_payload(message.channel, message.payload)),
        }
    }
}

/// A stored payload as the API shows it: every field, defaults included
/// ([`Payload::to_api_value`]). One retention dropped (`null`) or one that
/// does not parse is shown as stored.
fn shown_payload(channel: Channel, stored: serde_json::Value) -> serde_json::Value {
    match Payload::from_json(channel, &stored) {
        Ok(payload) => payload.to_api_value(),
        Err(_) => stored,
    }
}

/// A message with its events, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageDetail {
    #[serde(flatten)]
    pub message: MessageSummary,
    pub events: Vec<EventView>,
}

impl MessageDetail {
    pub fn new(found: MessageWithEvents, include_payload: bool) -> Self {
        MessageDetail {
            message: MessageSummary::new(found.message, include_payload),
            events: found.events.into_iter().map(EventView::from).collect(),
        }
    }
}

/// One step in a message's life.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub kind: EventKind,
    #[serde(serialize_with = "rfc3339")]
    pub at: DateTime<Utc>,
    /// The attempt this event belongs to (0 before the first).
    pub attempt: u32,
    /// The transport that acted; for a group, the member used.
    pub transport: Option<String>,
    /// When the attempt began (its claim), on the one event that ends it:
    /// `sent`, `attempt_failed`, `deferred` or `lease_expired`; `null` on
    /// the others.
    #[serde(serialize_with = "rfc3339_opt")]
    pub started_at: Option<DateTime<Utc>>,
    /// How long the transport call took, in milliseconds.
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    pub detail: Option<serde_json::Value>,
}

impl From<Event> for EventView {
    fn from(event: Event) -> Self {
        EventView {
            kind: event.kind,
            at: event.at,
            attempt: event.attempt,
            transport: event.transport,
            started_at: event.started_at,
            duration_ms: event.duration_ms,
            error: event.error,
            detail: event.detail,
        }
    }
}

/// One page of a listing, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    pub items: Vec<MessageSummary>,
    /// Pass as `after=` for the next page; `null` on the last page.
    pub next: Option<String>,
}

impl MessagePage {
    pub fn new(page: Page, include_payload: bool) -> Self {
        MessagePage {
            items: page
                .items
                .into_iter()
                .map(|m| MessageSummary::new(m, include_payload))
                .collect(),
            next: page.next.as_ref().map(Stamp::to_string),
        }
    }
}

/// `POST /api/queue/dead-letters/replay`; an empty body replays the
/// oldest dead letters of every transport.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Only dead letters of this transport.
    #[serde(default)]
    #[schema(value_type = Option<TransportName>)]
    pub transport: Option<String>,
    /// Only dead letters of this channel.
    #[serde(default)]
    pub channel: Option<Channel>,
    /// Only dead letters of this category.
    #[serde(default)]
    #[schema(value_type = Option<Category>)]
    pub category: Option<String>,
    /// Only dead letters whose last error is of this class.
    #[serde(default)]
    #[schema(value_type = Option<ErrorClassName>)]
    pub error_class: Option<String>,
    /// At most this many, oldest first: 1 to 1000, default 1000.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<WholeNumber>,
}

/// `POST /api/queue/dead-letters/replay-jobs`, and the filter a job
/// reports: the replay body's filters, without `limit` (a job replays
/// every match). An empty body replays every dead letter.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayJobFilter {
    /// Only dead letters of this transport.
    #[serde(default)]
    #[schema(value_type = Option<TransportName>)]
    pub transport: Option<String>,
    /// Only dead letters of this channel.
    #[serde(default)]
    pub channel: Option<Channel>,
    /// Only dead letters of this category.
    #[serde(default)]
    #[schema(value_type = Option<Category>)]
    pub category: Option<String>,
    /// Only dead letters whose last error is of this class.
    #[serde(default)]
    #[schema(value_type = Option<ErrorClassName>)]
    pub error_class: Option<String>,
}

/// A replay job and its progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayJobView {
    /// The job's id (ULID).
    #[schema(example = "01JDQ4Z8Y7M3V2K9W6T5R4P3N2")]
    pub id: String,
    pub state: ReplayJobState,
    /// How many dead letters matched when the job started (an estimate
    /// past 10,000).
    pub total: u64,
    /// How many it has replayed so far.
    pub replayed: u64,
    pub filter: ReplayJobFilter,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// When the job last advanced.
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed, when `state` is `failed`.
    pub error: Option<String>,
}

impl From<ReplayJob> for ReplayJobView {
    fn from(job: ReplayJob) -> Self {
        ReplayJobView {
            id: job.id.to_string(),
            state: job.state,
            total: job.total,
            replayed: job.replayed,
            filter: ReplayJobFilter {
                transport: job.transport,
                channel: job.channel,
                category: job.category,
                error_class: job.error_class,
            },
            created_at: job.created_at,
            updated_at: job.updated_at,
            finished_at: job.finished_at,
            error: job.error,
        }
    }
}

/// `GET /api/queue/dead-letters/replay-jobs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayJobList {
    /// Newest first.
    pub items: Vec<ReplayJobView>,
}

/// `GET /api/messages/count`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageCountView {
    /// How many messages match: exact when `estimated` is false.
    pub count: u64,
    /// More than 10,000 match and `count` is the store's estimate.
    pub estimated: bool,
}

impl From<MessageCount> for MessageCountView {
    fn from(counted: MessageCount) -> Self {
        MessageCountView {
            count: counted.count,
            estimated: counted.estimated,
        }
    }
}

/// `GET /api/queue/dead-letters/groups`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterGroups {
    /// Largest first.
    pub groups: Vec<DeadLetterGroupView>,
}

/// The dead letters of one transport whose last errors are of one class.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterGroupView {
    pub transport: String,
    /// The class of the last error: timeout | connection | rejected |
    /// permanent | transient | lease_expired | unknown.
    #[schema(value_type = ErrorClassName)]
    pub error_class: String,
    pub count: u64,
    /// When the group's first dead letter was dead-lettered.
    #[serde(serialize_with = "rfc3339")]
    pub oldest: DateTime<Utc>,
    /// When its latest was.
    #[serde(serialize_with = "rfc3339")]
    pub newest: DateTime<Utc>,
    /// One of the group's last errors, as stored.
    pub sample_error: Option<String>,
}

impl From<DeadLetterGroup> for DeadLetterGroupView {
    fn from(group: DeadLetterGroup) -> Self {
        DeadLetterGroupView {
            transport: group.transport,
            error_class: group.error_class,
            count: group.count,
            oldest: group.oldest,
            newest: group.newest,
            sample_error: group.sample_error,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayResponse {
    /// The replayed messages' ids; they are queued again under the same ids.
    pub replayed: Vec<String>,
}
