//! A message's delivery state: what its provider reported after
//! hand-over, per recipient and for the message as a whole, and the one
//! rule by which reports move it. Both backends store the result and
//! apply events through [`DeliveryStatus::apply`], so they agree.
//!
//! Reports arrive late, twice and out of order, so the state only moves
//! forward: each report has a rank, and one that does not outrank the
//! state it meets changes nothing (it is still recorded as an event). A
//! soft bounce ranks below delivered (the provider retries, and a later
//! delivery supersedes it); a hard bounce or a drop ranks above it (a
//! late "delivered" does not undo a bounce); a complaint ranks highest
//! (the recipient got it and objected).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::feedback::{BounceType, FeedbackKind};

/// `delivery.state`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Nothing reported yet (or the transport reports nothing).
    #[default]
    Unknown,
    Delivered,
    Bounced,
    Complained,
    /// Dropped by the provider after it accepted the message.
    Failed,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 5] = [
        DeliveryState::Unknown,
        DeliveryState::Delivered,
        DeliveryState::Bounced,
        DeliveryState::Complained,
        DeliveryState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Unknown => "unknown",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Bounced => "bounced",
            DeliveryState::Complained => "complained",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryState> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One recipient's part of [`DeliveryStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecipientDelivery {
    pub address: String,
    pub state: DeliveryState,
    /// When the report that set `state` says it happened.
    pub at: Option<DateTime<Utc>>,
    /// The provider's reason or SMTP diagnostic, for a bounce, complaint
    /// or drop.
    pub reason: Option<String>,
    /// For `bounced`: `hard` or `soft`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub bounce: Option<BounceType>,
}

/// `delivery` of a message.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryStatus {
    /// The message's state: the highest-ranked of what was reported.
    pub state: DeliveryState,
    /// The first report that the message arrived (delivered, or opened,
    /// clicked, complained about).
    pub delivered_at: Option<DateTime<Utc>>,
    /// Per recipient, for messages with several (multi-recipient email).
    pub recipients: Vec<RecipientDelivery>,
    /// A bounce's kind for the message-level state, so a later hard
    /// bounce outranks a soft one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub bounce: Option<BounceType>,
}

/// A report's rank and the state it leads to; `None` for reports that
/// move no state (a downstream deferral).
fn effect(kind: FeedbackKind, bounce: Option<BounceType>) -> Option<(u8, DeliveryState)> {
    Some(match kind {
        FeedbackKind::DeferredDownstream => return None,
        FeedbackKind::Bounced if bounce == Some(BounceType::Soft) => (1, DeliveryState::Bounced),
        FeedbackKind::Delivered
        | FeedbackKind::Opened
        | FeedbackKind::Clicked
        | FeedbackKind::Unsubscribed => (2, DeliveryState::Delivered),
        FeedbackKind::Bounced => (3, DeliveryState::Bounced),
        FeedbackKind::Rejected => (3, DeliveryState::Failed),
        FeedbackKind::Complained => (4, DeliveryState::Complained),
    })
}

/// The rank of a state as stored.
fn rank(state: DeliveryState, bounce: Option<BounceType>) -> u8 {
    match state {
        DeliveryState::Unknown => 0,
        DeliveryState::Bounced if bounce == Some(BounceType::Soft) => 1,
        DeliveryState::Delivered => 2,
        DeliveryState::Bounced | DeliveryState::Failed => 3,
        DeliveryState::Complained => 4,
    }
}

/// One report as [`DeliveryStatus::apply`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    pub kind: FeedbackKind,
    pub bounce: Option<BounceType>,
    /// Normalised; `None` for a report about the whole message.
    pub recipient: Option<&'a str>,
    pub at: DateTime<Utc>,
    pub reason: Option<&'a str>,
}

impl DeliveryStatus {
    /// The state before any report, with a row per recipient.
    pub fn for_recipients(recipients: &[String]) -> DeliveryStatus {
        DeliveryStatus {
            recipients: recipients
                .iter()
                .map(|address| RecipientDelivery {
                    address: address.clone(),
                    state: DeliveryState::Unknown,
                    at: None,
                    reason: None,
                    bounce: None,
                })
                .collect(),
            ..DeliveryStatus::default()
        }
    }

    /// Applies one report; true when it changed anything. A report about
    /// a recipient the message was not known to have is added as one
    /// (providers sometimes name an alias or a forwarded address).
    pub fn apply(&mut self, report: Report<'_>) -> bool {
        let Some((new_rank, state)) = effect(report.kind, report.bounce) else {
            return false;
        };
        let bounce =
            (state == DeliveryState::Bounced).then_some(report.bounce.unwrap_or(BounceType::Hard));
        let arrived = matches!(state, DeliveryState::Delivered | DeliveryState::Complained);
        let mut changed = false;
        // Whether the report moved anyone: a report that moves nobody
        // (a late "delivered" after a bounce) sets no `delivered_at`.
        let mut moved_someone = false;
        if new_rank > rank(self.state, self.bounce) {
            self.state = state;
            self.bounce = bounce;
            changed = true;
            moved_someone = self.recipients.is_empty();
        }
        let moves = |r: &RecipientDelivery| new_rank > rank(r.state, r.bounce);
        let reason = report.reason.map(str::to_owned);
        let set = |r: &mut RecipientDelivery| {
            r.state = state;
            r.bounce = bounce;
            r.at = Some(report.at);
            r.reason = reason.clone();
        };
        match report.recipient {
            Some(address) => match self.recipients.iter_mut().find(|r| r.address == address) {
                Some(r) => {
                    if moves(r) {
                        set(r);
                        moved_someone = true;
                    }
                }
                None => {
                    let mut r = RecipientDelivery {
                        address: address.to_owned(),
                        state: DeliveryState::Unknown,
                        at: None,
                        reason: None,
                        bounce: None,
                    };
                    set(&mut r);
                    self.recipients.push(r);
                    moved_someone = true;
                }
            },
            None => {
                for r in self.recipients.iter_mut().filter(|r| moves(r)) {
                    set(r);
                    moved_someone = true;
                }
            }
        }
        changed |= moved_someone;
        if arrived && moved_someone && self.delivered_at.is_none_or(|at| report.at < at) {
            self.delivered_at = Some(report.at);
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        crate::time::from_millis(1_767_225_600_000 + s * 1000)
    }

    fn report(kind: FeedbackKind, recipient: Option<&str>, s: i64) -> Report<'_> {
        Report {
            kind,
            bounce: None,
            recipient,
            at: at(s),
            reason: None,
        }
    }

    #[test]
    fn a_late_delivered_does_not_undo_a_hard_bounce() {
        let mut status = DeliveryStatus::for_recipients(&["a@x.org".into()]);
        assert!(status.apply(report(FeedbackKind::Bounced, Some("a@x.org"), 2)));
        assert!(!status.apply(report(FeedbackKind::Delivered, Some("a@x.org"), 1)));
        assert_eq!(status.state, DeliveryState::Bounced);
        assert_eq!(status.recipients[0].bounce, Some(BounceType::Hard));
        assert_eq!(status.delivered_at, None);
    }

    #[test]
    fn a_delivery_supersedes_a_soft_bounce_and_a_complaint_outranks_both() {
        let mut status = DeliveryStatus::for_recipients(&["a@x.org".into()]);
        let soft = Report {
            bounce: Some(BounceType::Soft),
            ..report(FeedbackKind::Bounced, Some("a@x.org"), 1)
        };
        assert!(status.apply(soft));
        assert_eq!(status.recipients[0].bounce, Some(BounceType::Soft));
        assert!(status.apply(report(FeedbackKind::Delivered, Some("a@x.org"), 2)));
        assert_eq!(status.state, DeliveryState::Delivered);
        assert_eq!(status.delivered_at, Some(at(2)));
        assert!(status.apply(report(FeedbackKind::Complained, None, 3)));
        assert_eq!(status.state, DeliveryState::Complained);
        assert_eq!(status.recipients[0].state, DeliveryState::Complained);
        // Applying the same report again changes nothing.
        assert!(!status.apply(report(FeedbackKind::Complained, None, 3)));
    }

    #[test]
    fn recipients_move_apart_and_the_message_takes_the_highest() {
        let mut status = DeliveryStatus::for_recipients(&["a@x.org".into(), "b@x.org".into()]);
        status.apply(report(FeedbackKind::Delivered, Some("a@x.org"), 1));
        status.apply(report(FeedbackKind::Bounced, Some("b@x.org"), 2));
        assert_eq!(status.recipients[0].state, DeliveryState::Delivered);
        assert_eq!(status.recipients[1].state, DeliveryState::Bounced);
        assert_eq!(status.state, DeliveryState::Bounced);
        assert_eq!(status.delivered_at, Some(at(1)));
        // A deferral moves nothing.
        assert!(!status.apply(report(FeedbackKind::DeferredDownstream, None, 3)));
    }

    #[test]
    fn states_round_trip_through_their_text() {
        for state in DeliveryState::ALL {
            assert_eq!(DeliveryState::parse(state.as_str()), Some(state));
        }
    }
}
