//! Group commit of single enqueues: [`GroupCommit`] writes each
//! `POST /api/messages` request through one of a few writers
//! ([`Storage::enqueue_writers`]); requests that arrive while every writer
//! is busy are gathered and stored by the next free one with one
//! [`Storage::enqueue_many`] (one statement or transaction, one commit),
//! each answered with its own result. Nothing waits on purpose: while a
//! writer is free a request is written at once, so grouping only starts
//! when requests outnumber the writers.
//!
//! SQLite has one writer, whose commits (and syncs) are serialised
//! anyway. On PostgreSQL the cost of an enqueue is mostly per statement,
//! not per row (BENCHMARKS.md), so a group of n costs little more than
//! one, and a couple of writers keep the database busy while the next
//! group gathers.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use tokio::sync::oneshot;

use super::{Enqueued, MAX_BATCH, Storage, StorageError};
use crate::domain::NewMessage;

/// The handle the HTTP handler enqueues through; cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    shared: Arc<Shared>,
}

struct Shared {
    storage: Arc<dyn Storage>,
    /// Read once: the storage's answer does not change.
    max_writers: usize,
    /// Held only to push or take, never across an await, hence a std Mutex.
    queue: Mutex<Queue>,
}

/// Requests not yet taken into a group, and how many writers run.
#[derive(Default)]
struct Queue {
    pending: Vec<Request>,
    writers: usize,
}

/// One waiting enqueue.
struct Request {
    message: NewMessage,
    now: DateTime<Utc>,
    reply: oneshot::Sender<Result<Enqueued, StorageError>>,
}

impl GroupCommit {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        GroupCommit {
            shared: Arc::new(Shared {
                max_writers: storage.enqueue_writers().max(1),
                storage,
                queue: Mutex::new(Queue::default()),
            }),
        }
    }

    /// Stores one message, or answers the existing one for a known
    /// idempotency key, exactly as [`Storage::enqueue`] does. A message
    /// written in a group is stored at the time of the group's newest
    /// request (its `created_at` and `queued` event): at most the
    /// duration of one write later than its own `now`.
    pub async fn enqueue(
        &self,
        message: NewMessage,
        now: DateTime<Utc>,
    ) -> Result<Enqueued, StorageError> {
        let (reply, answer) = oneshot::channel();
        let start_writer = {
            let mut queue = self.shared.lock();
            queue.pending.push(Request {
                message,
                now,
                reply,
            });
            if queue.writers < self.shared.max_writers {
                queue.writers += 1;
                true
            } else {
                false
            }
        };
        // While all writers run, the first to end its write takes this
        // request. A writer is a task of its own, so a caller that goes
        // away cannot cut a group's write short.
        if start_writer {
            tokio::spawn(write_while_pending(self.shared.clone()));
        }
        answer
            .await
            .map_err(|_| StorageError::Unavailable("the enqueue was interrupted".into()))?
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding it cannot leave the queue half-changed.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A writer: writes everything pending as one group, again and again,
/// until nothing is. The check and the exit are one step under the lock,
/// so a request is never left without a writer.
async fn write_while_pending(shared: Arc<Shared>) {
    loop {
        let group = {
            let mut queue = shared.lock();
            if queue.pending.is_empty() {
                queue.writers -= 1;
                return;
            }
            let take = queue.pending.len().min(MAX_BATCH);
            queue.pending.drain(..take).collect::<Vec<_>>()
        };
        // A panic fails the group's requests (their replies are dropped),
        // not the writer, which would otherwise never step down.
        let _ = AssertUnwindSafe(write(shared.storage.as_ref(), group))
            .catch_unwind()
            .await;
    }
}

/// Writes one group and answers its requests. Within a group, as within
/// a batch, a repeated new idempotency key maps to its first holder, so
/// two requests racing with one key still make one message: the first is
/// answered as created, the other as its repeat.
async fn write(storage: &dyn Storage, group: Vec<Request>) {
    let now = group.iter().map(|r| r.now).max();
    let (Some(now), true) = (now, group.len() > 1) else {
        for request in group {
            let result = storage.enqueue(request.message, request.now).await;
            let _ = request.reply.send(result);
        }
        return;
    };
    // Kept for the fallback below; a clone of a message is cheap beside
    // a commit.
    let messages: Vec<NewMessage> = group.iter().map(|r| r.message.clone()).collect();
    match storage.enqueue_many(messages, now).await {
        Ok(results) if results.len() == group.len() => {
            for (request, result) in group.into_iter().zip(results) {
                // The caller may have gone (client disconnected): the
                // message is stored all the same, as without grouping.
                let _ = request.reply.send(Ok(result));
            }
        }
        Ok(results) => {
            let err = StorageError::Backend(format!(
                "a group of {} enqueues returned {} results",
                group.len(),
                results.len()
            ));
            for request in group {
                let _ = request.reply.send(Err(err.clone()));
            }
        }
        Err(err) if err.is_transient() => {
            for request in group {
                let _ = request.reply.send(Err(err.clone()));
            }
        }
        // A message the database refuses must fail only its own request:
        // the group's transaction left nothing behind, so write each
        // alone, and the others are stored as without grouping.
        Err(_) => {
            for request in group {
                let result = storage.enqueue(request.message, request.now).await;
                let _ = request.reply.send(result);
            }
        }
    }
}
