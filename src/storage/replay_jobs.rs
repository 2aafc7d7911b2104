//! The stored shape of replay jobs (table `replay_jobs`): a bulk replay of
//! the dead letters that match a filter, run in batches by whichever node
//! owns it ([`crate::engine::run_replay_jobs`]), with its progress.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::MessageFilter;
use crate::domain::{Channel, Stamp};

/// Where a replay job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplayJobState {
    Running,
    /// A batch replayed nothing: every match has been replayed.
    Done,
    /// Replaying failed for a reason retrying would not cure; `error` says
    /// which.
    Failed,
}

impl ReplayJobState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayJobState::Running => "running",
            ReplayJobState::Done => "done",
            ReplayJobState::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<ReplayJobState> {
        match text {
            "running" => Some(ReplayJobState::Running),
            "done" => Some(ReplayJobState::Done),
            "failed" => Some(ReplayJobState::Failed),
            _ => None,
        }
    }
}

/// One replay job.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayJob {
    pub id: Stamp,
    pub state: ReplayJobState,
    pub transport: Option<String>,
    pub channel: Option<Channel>,
    pub category: Option<String>,
    pub error_class: Option<String>,
    /// How many dead letters matched when the job was created (an
    /// estimate past [`super::EXACT_COUNT_LIMIT`]).
    pub total: u64,
    pub replayed: u64,
    /// The node running it; `None` until one takes it.
    pub owner: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When its owner last advanced it: a running job not advanced for a
    /// node timeout is taken over.
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

impl ReplayJob {
    /// A job about to be stored: running, unowned, nothing replayed.
    pub fn new(filter: &MessageFilter, total: u64, now: DateTime<Utc>) -> ReplayJob {
        ReplayJob {
            id: Stamp::generate(),
            state: ReplayJobState::Running,
            transport: filter.transport.clone(),
            channel: filter.channel,
            category: filter.category.clone(),
            error_class: filter.error_class.clone(),
            total,
            replayed: 0,
            owner: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
            error: None,
        }
    }

    /// The dead letters this job replays: those matching its filter that
    /// were dead by its creation. A message it replays that dies again is
    /// dead after that, so no job replays a message twice and every job
    /// ends.
    pub fn dead_letters(&self) -> MessageFilter {
        MessageFilter {
            transport: self.transport.clone(),
            channel: self.channel,
            category: self.category.clone(),
            error_class: self.error_class.clone(),
            changed_by: Some(self.created_at),
            ..MessageFilter::default()
        }
        .dead_letters()
    }
}
