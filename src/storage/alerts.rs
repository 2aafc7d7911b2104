//! The stored shape of alert incidents (table `alerts`): what the alert
//! evaluator ([`crate::alerts`]) opens, resolves and notifies, and what
//! `GET /api/alerts` lists.

use chrono::{DateTime, Utc};
use serde::Serialize;
use ulid::Ulid;

use crate::domain::Stamp;

/// Whether an incident is still going on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Active,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Active => "active",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(text: &str) -> Option<AlertState> {
        match text {
            "active" => Some(AlertState::Active),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }
}

/// Which of an incident's two notices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertNotice {
    Fired,
    Resolved,
}

impl AlertNotice {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertNotice::Fired => "fired",
            AlertNotice::Resolved => "resolved",
        }
    }
}

/// An incident about to be opened.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    pub id: Ulid,
    pub rule: String,
    /// The rule's kind (`failure_rate`, ...), kept so history reads the
    /// same after the config changes.
    pub kind: String,
    pub transport: String,
    pub threshold: f64,
    pub window_s: Option<u64>,
    /// What was measured when the rule fired.
    pub value: f64,
    pub fired_at: DateTime<Utc>,
}

/// One incident of a rule on a transport.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub id: Ulid,
    pub rule: String,
    pub kind: String,
    pub transport: String,
    pub state: AlertState,
    pub threshold: f64,
    pub window_s: Option<u64>,
    pub fired_value: f64,
    /// The latest measurement: while active, of the last evaluation; once
    /// resolved, the one that resolved it.
    pub last_value: f64,
    pub fired_at: DateTime<Utc>,
    /// When `last_value` was measured.
    pub checked_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// False when the incident began within the rule's cooldown of a
    /// notified one: it is recorded, but sends no notices.
    pub notified: bool,
    pub fired_message: Option<Stamp>,
    pub resolved_message: Option<Stamp>,
    /// When the incident paused its transport (a rule with `action =
    /// "pause"`); `None` when it did not.
    pub paused_at: Option<DateTime<Utc>>,
}

impl Alert {
    /// The notices this incident should have sent and has not, in the
    /// order they must go.
    pub fn missing_notices(&self) -> Vec<AlertNotice> {
        if !self.notified {
            return Vec::new();
        }
        let mut missing = Vec::new();
        if self.fired_message.is_none() {
            missing.push(AlertNotice::Fired);
        }
        if self.state == AlertState::Resolved && self.resolved_message.is_none() {
            missing.push(AlertNotice::Resolved);
        }
        missing
    }
}
