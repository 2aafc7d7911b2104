//! The messages the engine's actors exchange.

use std::time::Duration;

use actix::prelude::*;

use super::TransportStatus;
use crate::storage::Outcome;

/// New claimable work may be waiting: claim now rather than at the next poll.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Wake;

/// Stop claiming and hand back claimed-but-unstarted messages; deliveries
/// in flight finish.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Pause;

/// Claim and deliver again.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Resume;

/// A transport's persisted pause state changed, on this node or another:
/// read it again and obey it.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct StateChanged;

/// Report the transport's live state.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "TransportStatus")]
pub struct GetStatus;

/// Every transport's live state, in name order.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Vec<TransportStatus>")]
pub struct GetStatuses;

/// Pause or resume one transport (persisted first).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<TransportStatus, super::EngineError>")]
pub struct SetPaused {
    pub transport: String,
    pub paused: bool,
}

/// Stop for good: no more claims, unstarted claims handed back, in-flight
/// deliveries given until `grace` to finish, outcomes flushed. Answers how
/// many deliveries were still running when the grace ran out.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "usize")]
pub struct Shutdown {
    pub grace: Duration,
}

/// A transport's breaker was open for `ms` (sampled by its actor): added
/// to the transport's rollup.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct BreakerOpen {
    pub transport: String,
    pub ms: u64,
}

/// A delivery outcome to persist.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Record(pub Outcome);

/// Persist everything buffered; answers when the buffer is empty.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Flush;
