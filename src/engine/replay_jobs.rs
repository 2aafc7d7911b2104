//! Running replay jobs (`POST /api/queue/dead-letters/replay-jobs`): the
//! supervisor calls [`run_replay_jobs`] every second; it takes each job
//! this node may run (new, its own from before a restart, or one whose
//! owner stopped advancing it) and replays it batch by batch through
//! [`Storage::replay_dead`], the path `POST /api/queue/dead-letters/replay`
//! takes, recording progress after each batch.

use chrono::{DateTime, Utc};

use crate::storage::{MAX_BATCH, ReplayJob, ReplayJobState, Storage, StorageError};
use crate::time::Clock;

/// Runs every job `node` may take until none is left; a job whose owner
/// has not advanced it since `stale_before` is taken over. Returns how
/// many jobs it ran to their end. A transient storage error leaves the job
/// running, to be resumed on a later call.
pub async fn run_replay_jobs(
    storage: &dyn Storage,
    clock: &dyn Clock,
    node: &str,
    stale_before: DateTime<Utc>,
) -> Result<usize, StorageError> {
    let mut finished = 0;
    while let Some(job) = storage
        .take_replay_job(node, clock.now(), stale_before)
        .await?
    {
        if run_job(storage, clock, node, &job).await? {
            finished += 1;
        }
    }
    Ok(finished)
}

/// True when the job ended here; false when another node took it over.
async fn run_job(
    storage: &dyn Storage,
    clock: &dyn Clock,
    node: &str,
    job: &ReplayJob,
) -> Result<bool, StorageError> {
    let filter = job.dead_letters();
    loop {
        let (replayed, state, error) =
            match storage.replay_dead(&filter, MAX_BATCH, clock.now()).await {
                Ok(ids) if ids.is_empty() => (0, ReplayJobState::Done, None),
                Ok(ids) => (ids.len() as u64, ReplayJobState::Running, None),
                Err(err) if err.is_transient() => return Err(err),
                Err(err) => (0, ReplayJobState::Failed, Some(err.to_string())),
            };
        // The batch is committed before its progress: a crash between the
        // two undercounts `replayed`, never replays anything twice.
        let still_ours = storage
            .advance_replay_job(job.id, node, replayed, state, error, clock.now())
            .await?;
        if !still_ours {
            tracing::warn!(job = %job.id, node, "replay job taken over by another node");
            return Ok(false);
        }
        match state {
            ReplayJobState::Running => continue,
            ReplayJobState::Done => {
                tracing::info!(job = %job.id, "replay job done");
                return Ok(true);
            }
            ReplayJobState::Failed => {
                tracing::warn!(job = %job.id, "replay job failed");
                return Ok(true);
            }
        }
    }
}
