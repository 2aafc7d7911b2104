//! What both backends share of delivery feedback and suppression: the
//! policy, the shapes the trait speaks in, and the planning of one batch
//! of provider reports against the messages they name (deduplication,
//! delivery states, suppressions), done here once so the backends only
//! read and write rows.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Channel, DeliveryStatus, EventKind, Report, Stamp, normalise_recipient};
use crate::feedback::{BounceType, FeedbackEvent, FeedbackKind, Target};
use crate::transports::RecipientGone;

/// `[suppression]`: which reports put a recipient on the list, for how
/// long, and whether an entry holds for every transport or only the one
/// that reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct SuppressionPolicy {
    /// Entries hold for the reporting transport only (`scope =
    /// "transport"`), not for every transport (`"global"`, the default).
    pub per_transport: bool,
    pub hard_bounce: bool,
    pub complaint: bool,
    pub unsubscribe: bool,
    /// The providers' recipient-gone dead letters: an invalid number or
    /// token, an SMS STOP.
    pub recipient_gone: bool,
    /// Soft bounces within `soft_bounce_window` that suppress an address;
    /// 0: never.
    pub soft_bounce_limit: u32,
    pub soft_bounce_window: Duration,
    /// How long an automatic entry holds; `None`: until removed.
    pub expire_after: Option<Duration>,
}

impl Default for SuppressionPolicy {
    fn default() -> Self {
        SuppressionPolicy {
            per_transport: false,
            hard_bounce: true,
            complaint: true,
            unsubscribe: true,
            recipient_gone: true,
            soft_bounce_limit: 3,
            soft_bounce_window: Duration::from_secs(7 * 86_400),
            expire_after: None,
        }
    }
}

impl SuppressionPolicy {
    /// The scope an entry made from `transport`'s report holds for.
    pub fn scope(&self, transport: &str) -> String {
        if self.per_transport {
            transport.to_owned()
        } else {
            String::new()
        }
    }

    pub fn expires_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.expire_after
            .and_then(|keep| chrono::Duration::from_std(keep).ok())
            .map(|keep| now + keep)
    }

    /// The suppression reason a report gives, when the policy suppresses on it.
    fn reason_of(&self, kind: FeedbackKind, bounce: Option<BounceType>) -> Option<&'static str> {
        match kind {
            FeedbackKind::Bounced if bounce != Some(BounceType::Soft) && self.hard_bounce => {
                Some("hard_bounce")
            }
            FeedbackKind::Complained if self.complaint => Some("complaint"),
            FeedbackKind::Unsubscribed if self.unsubscribe => Some("unsubscribe"),
            _ => None,
        }
    }

    /// The entry a recipient-gone dead letter makes, if the policy
    /// suppresses on it.
    pub fn for_recipient_gone(&self, gone: RecipientGone) -> Option<&'static str> {
        self.recipient_gone.then_some(gone.as_str())
    }
}

/// One entry of the suppression list.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Suppression {
    pub channel: Channel,
    /// Normalised: an email address lower-cased, a number or token as is.
    pub address: String,
    /// `null` for every transport, else the one it holds for.
    pub transport: Option<String>,
    /// `hard_bounce`, `soft_bounce`, `complaint`, `unsubscribe`,
    /// `recipient_invalid`, `recipient_unsubscribed`, `manual`, or what an
    /// operator gave.
    pub reason: String,
    /// The message whose report put it here.
    #[schema(value_type = Option<String>)]
    pub source_stamp: Option<Stamp>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Suppression {
    /// The stored scope: '' for every transport.
    pub fn scope(&self) -> &str {
        self.transport.as_deref().unwrap_or("")
    }
}

/// Filters of the suppression listing; all optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SuppressionFilter {
    pub channel: Option<Channel>,
    pub address: Option<String>,
    pub reason: Option<String>,
}

/// The listing's cursor: the last (channel, address, scope) of the
/// previous page, in that order.
pub type SuppressionCursor = (String, String, String);

/// One batch of reports from one transport's webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackBatch {
    pub transport: String,
    pub events: Vec<FeedbackEvent>,
    /// See [`crate::feedback::Accepted::nonce`].
    pub nonce: Option<String>,
}

/// What [`crate::storage::Storage::record_feedback`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedbackRecorded {
    /// The nonce was seen before: nothing was recorded.
    pub replay: bool,
    /// Events stored under their message.
    pub applied: usize,
    /// Events already stored (the same provider event, or the same kind,
    /// recipient and time): skipped.
    pub duplicates: usize,
    /// Events whose message was not found: kept to be matched again.
    pub unmatched: usize,
    /// Recipients put on the suppression list.
    pub suppressed: usize,
    /// Per kind (and bounce type), the applied events: the rollups' counts.
    pub counts: BTreeMap<String, u64>,
}

impl FeedbackRecorded {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: FeedbackRecorded) {
        self.applied += other.applied;
        self.duplicates += other.duplicates;
        self.unmatched += other.unmatched;
        self.suppressed += other.suppressed;
        for (kind, n) in other.counts {
            *self.counts.entry(kind).or_default() += n;
        }
    }
}

/// A report with when it reached Herald.
pub type Received = (FeedbackEvent, DateTime<Utc>);

/// An event as `feedback_unmatched` keeps it: Herald's generic event
/// format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<Stamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    pub kind: FeedbackKind,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub bounce: Option<BounceType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl From<&FeedbackEvent> for StoredEvent {
    fn from(event: &FeedbackEvent) -> Self {
        StoredEvent {
            stamp: event.target.stamp(),
            provider_message_id: event.target.provider_id().map(str::to_owned),
            kind: event.kind,
            bounce: event.bounce,
            recipient: event.recipient.clone(),
            at: event.at,
            reason: event.reason.clone(),
            id: event.event_id.clone(),
        }
    }
}

impl StoredEvent {
    pub fn into_event(self) -> Option<FeedbackEvent> {
        let target = match (self.stamp, self.provider_message_id) {
            (Some(s), Some(id)) => Target::Both(s, id),
            (Some(s), None) => Target::Stamp(s),
            (None, Some(id)) => Target::ProviderId(id),
            (None, None) => return None,
        };
        Some(FeedbackEvent {
            target,
            kind: self.kind,
            bounce: self.bounce,
            recipient: self.recipient,
            at: self.at,
            reason: self.reason,
            event_id: self.id,
        })
    }
}

/// The event kind a report is stored as.
pub fn event_kind(kind: FeedbackKind) -> EventKind {
    match kind {
        FeedbackKind::Delivered => EventKind::Delivered,
        FeedbackKind::Bounced => EventKind::Bounced,
        FeedbackKind::Complained => EventKind::Complained,
        FeedbackKind::Opened => EventKind::Opened,
        FeedbackKind::Clicked => EventKind::Clicked,
        FeedbackKind::Unsubscribed => EventKind::Unsubscribed,
        FeedbackKind::Rejected => EventKind::Rejected,
        FeedbackKind::DeferredDownstream => EventKind::DeferredDownstream,
    }
}

/// Every stored feedback event kind, for the reads of a message's earlier
/// reports.
pub fn feedback_event_kinds() -> Vec<&'static str> {
    FeedbackKind::ALL
        .iter()
        .map(|k| event_kind(*k).as_str())
        .collect()
}

/// A report's identity: the provider's event id, or without one its kind,
/// recipient and time.
pub fn identity(
    kind: &str,
    recipient: Option<&str>,
    at: DateTime<Utc>,
    event_id: Option<&str>,
) -> String {
    match event_id {
        Some(id) => format!("id:{id}"),
        None => format!(
            "{kind}|{}|{}",
            recipient.unwrap_or(""),
            at.timestamp_millis()
        ),
    }
}

/// A finished message as matching reads it, locked for the batch.
#[derive(Debug, Clone)]
pub struct Matched {
    pub id: Stamp,
    pub channel: Channel,
    /// Empty for a message without one, as the rollups key it.
    pub category: String,
    pub attempts: u32,
    pub recipients: Vec<String>,
    pub delivery: Option<DeliveryStatus>,
    /// [`identity`] of each report stored under it already.
    pub seen: HashSet<String>,
}

/// One event row to write.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub message: Stamp,
    pub kind: EventKind,
    pub at: DateTime<Utc>,
    pub attempt: u32,
    pub detail: serde_json::Value,
}

/// A suppression to add, or a soft bounce to count.
#[derive(Debug, Clone, PartialEq)]
pub struct ListEntry {
    pub channel: Channel,
    pub address: String,
    pub reason: &'static str,
    pub source: Stamp,
}

/// What one batch comes to, for the backend to write.
#[derive(Debug, Default)]
pub struct Plan {
    pub events: Vec<EventRow>,
    /// Messages whose delivery state changed, with the new one.
    pub deliveries: Vec<(Stamp, DeliveryStatus)>,
    pub suppress: Vec<ListEntry>,
    /// Soft bounces per address (channel, address) -> (count, source).
    pub soft_bounces: BTreeMap<(Channel, String), (u32, Stamp)>,
    pub unmatched: Vec<Received>,
    pub recorded: FeedbackRecorded,
    /// The applied reports' counts (as in [`FeedbackRecorded::counts`])
    /// per message channel and category, for the rollups.
    pub counts: BTreeMap<(Channel, String), BTreeMap<String, u64>>,
    /// Bounces per (channel, category, bounce type, normalised reason,
    /// recipient domain), for the bounce rollups.
    pub bounces: BTreeMap<BounceKey, u64>,
}

/// (channel, category, bounce type, normalised reason, recipient domain).
pub type BounceKey = (Channel, String, &'static str, String, String);

/// The longest recipient domain kept: DNS's own bound.
const MAX_DOMAIN_LEN: usize = 253;

/// The domain of an email recipient (already normalised), bounded; empty
/// for other channels or without a recipient.
fn recipient_domain(channel: Channel, recipient: Option<&str>) -> String {
    match (channel, recipient.and_then(|r| r.rsplit_once('@'))) {
        (Channel::Email, Some((_, domain))) if domain.len() <= MAX_DOMAIN_LEN => {
            domain.to_lowercase()
        }
        _ => String::new(),
    }
}

/// Plans `events` (each with when it was received) against `matched`
/// (by stamp); events whose stamp is `None` or not in `matched` are
/// unmatched.
pub fn plan(
    events: Vec<(FeedbackEvent, Option<Stamp>, DateTime<Utc>)>,
    matched: &mut BTreeMap<Stamp, Matched>,
    policy: &SuppressionPolicy,
) -> Plan {
    let mut plan = Plan::default();
    let mut changed: BTreeMap<Stamp, DeliveryStatus> = BTreeMap::new();
    for (event, stamp, received_at) in events {
        let Some(message) = stamp.and_then(|s| matched.get_mut(&s)) else {
            plan.recorded.unmatched += 1;
            plan.unmatched.push((event, received_at));
            continue;
        };
        let kind = event_kind(event.kind);
        let recipient = event
            .recipient
            .as_deref()
            .map(|r| normalise_recipient(message.channel, r));
        let key = identity(
            kind.as_str(),
            recipient.as_deref(),
            event.at,
            event.event_id.as_deref(),
        );
        if !message.seen.insert(key) {
            plan.recorded.duplicates += 1;
            continue;
        }
        plan.recorded.applied += 1;
        let counted = match (event.kind, event.bounce) {
            (FeedbackKind::Bounced, Some(BounceType::Soft)) => "bounced_soft".to_owned(),
            (FeedbackKind::Bounced, _) => "bounced_hard".to_owned(),
            (kind, _) => kind.as_str().to_owned(),
        };
        *plan
            .counts
            .entry((message.channel, message.category.clone()))
            .or_default()
            .entry(counted.clone())
            .or_default() += 1;
        *plan.recorded.counts.entry(counted).or_default() += 1;
        if event.kind == FeedbackKind::Bounced {
            let bounce = event.bounce.unwrap_or(BounceType::Hard);
            let reason = event
                .reason
                .as_deref()
                .map(crate::delivery::errors::normalise)
                .unwrap_or_default();
            let domain = recipient_domain(message.channel, recipient.as_deref());
            *plan
                .bounces
                .entry((
                    message.channel,
                    message.category.clone(),
                    bounce.as_str(),
                    reason,
                    domain,
                ))
                .or_default() += 1;
        }
        let status = changed.entry(message.id).or_insert_with(|| {
            message
                .delivery
                .clone()
                .unwrap_or_else(|| DeliveryStatus::for_recipients(&message.recipients))
        });
        // A report that moves no state is still recorded as an event.
        status.apply(Report {
            kind: event.kind,
            bounce: event.bounce,
            recipient: recipient.as_deref(),
            at: event.at,
            reason: event.reason.as_deref(),
        });
        message.delivery = Some(status.clone());
        let mut detail = serde_json::json!({ "received_at": received_at });
        let fields = [
            ("recipient", recipient.clone()),
            ("reason", event.reason.clone()),
            ("type", event.bounce.map(|b| b.as_str().to_owned())),
            ("event_id", event.event_id.clone()),
            (
                "provider_message_id",
                event.target.provider_id().map(str::to_owned),
            ),
        ];
        for (name, value) in fields {
            if let (Some(value), Some(object)) = (value, detail.as_object_mut()) {
                object.insert(name.to_owned(), serde_json::Value::String(value));
            }
        }
        plan.events.push(EventRow {
            message: message.id,
            kind,
            at: event.at,
            attempt: message.attempts,
            detail,
        });
        // Who the report is about: the named recipient, or every one.
        let addresses = match &recipient {
            Some(r) => vec![r.clone()],
            None => message.recipients.clone(),
        };
        if event.kind == FeedbackKind::Bounced
            && event.bounce == Some(BounceType::Soft)
            && policy.soft_bounce_limit > 0
        {
            for address in addresses {
                let entry = plan
                    .soft_bounces
                    .entry((message.channel, address))
                    .or_insert((0, message.id));
                entry.0 += 1;
            }
        } else if let Some(reason) = policy.reason_of(event.kind, event.bounce) {
            for address in addresses {
                plan.suppress.push(ListEntry {
                    channel: message.channel,
                    address,
                    reason,
                    source: message.id,
                });
            }
        }
    }
    plan.deliveries = changed.into_iter().collect();
    plan
}

/// `now` less `span`, or the earliest time when that is before it: a
/// configured span (a window, a keep) as a bound on stored times.
pub fn ago(now: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|span| now.checked_sub_signed(span))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        crate::time::from_millis(1_767_225_600_000 + s * 1000)
    }

    fn event(stamp: Stamp, kind: FeedbackKind, id: Option<&str>) -> FeedbackEvent {
        FeedbackEvent {
            target: Target::Stamp(stamp),
            kind,
            bounce: None,
            recipient: Some("A@Example.org".into()),
            at: at(1),
            reason: Some("550 no such user".into()),
            event_id: id.map(str::to_owned),
        }
    }

    fn matched(stamp: Stamp) -> BTreeMap<Stamp, Matched> {
        BTreeMap::from([(
            stamp,
            Matched {
                id: stamp,
                channel: Channel::Email,
                category: "receipts".into(),
                attempts: 1,
                recipients: vec!["a@example.org".into(), "b@example.org".into()],
                delivery: None,
                seen: HashSet::new(),
            },
        )])
    }

    #[test]
    fn a_hard_bounce_suppresses_its_recipient_once_however_often_reported() {
        let stamp = Stamp::generate();
        let mut messages = matched(stamp);
        let bounce = event(stamp, FeedbackKind::Bounced, Some("ev1"));
        let events = vec![
            (bounce.clone(), Some(stamp), at(2)),
            (bounce, Some(stamp), at(3)),
        ];
        let plan = plan(events, &mut messages, &SuppressionPolicy::default());
        assert_eq!(plan.recorded.applied, 1);
        assert_eq!(plan.recorded.duplicates, 1);
        assert_eq!(plan.suppress.len(), 1);
        assert_eq!(plan.suppress[0].address, "a@example.org");
        assert_eq!(plan.suppress[0].reason, "hard_bounce");
        let counts = &plan.counts[&(Channel::Email, "receipts".to_owned())];
        assert_eq!(counts.get("bounced_hard"), Some(&1));
        let bounces: Vec<_> = plan.bounces.into_iter().collect();
        assert_eq!(
            bounces,
            [(
                (
                    Channel::Email,
                    "receipts".to_owned(),
                    "hard",
                    "# no such user".to_owned(),
                    "example.org".to_owned()
                ),
                1
            )]
        );
        let (_, status) = &plan.deliveries[0];
        assert_eq!(status.state, crate::domain::DeliveryState::Bounced);
        assert_eq!(status.recipients.len(), 2);
    }

    #[test]
    fn events_without_an_id_are_told_apart_by_kind_recipient_and_time() {
        let stamp = Stamp::generate();
        let mut messages = matched(stamp);
        let open = event(stamp, FeedbackKind::Opened, None);
        let later = FeedbackEvent {
            at: at(5),
            ..open.clone()
        };
        let events = vec![
            (open.clone(), Some(stamp), at(2)),
            (open, Some(stamp), at(2)),
            (later, Some(stamp), at(6)),
        ];
        let plan = plan(events, &mut messages, &SuppressionPolicy::default());
        assert_eq!((plan.recorded.applied, plan.recorded.duplicates), (2, 1));
        assert!(plan.suppress.is_empty());
    }

    #[test]
    fn soft_bounces_are_counted_not_suppressed_and_unknown_stamps_kept() {
        let stamp = Stamp::generate();
        let mut messages = matched(stamp);
        let soft = FeedbackEvent {
            bounce: Some(BounceType::Soft),
            ..event(stamp, FeedbackKind::Bounced, Some("s1"))
        };
        let stray = event(Stamp::generate(), FeedbackKind::Delivered, None);
        let events = vec![(soft, Some(stamp), at(2)), (stray, None, at(2))];
        let plan = plan(events, &mut messages, &SuppressionPolicy::default());
        assert!(plan.suppress.is_empty());
        assert_eq!(plan.soft_bounces.len(), 1);
        assert_eq!(plan.recorded.unmatched, 1);
        assert_eq!(plan.recorded.counts.get("bounced_soft"), Some(&1));
    }
}
