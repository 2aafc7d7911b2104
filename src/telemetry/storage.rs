//! [`TimedStorage`]: any [`Storage`] with each operation timed and its
//! errors counted, so both backends are measured the same way from one
//! place (the app wraps the store it opens).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    Channel, ClaimToken, Fingerprint, Message, MessageWithEvents, NewMessage, Stamp,
};
use crate::storage::{
    Alert, AlertNotice, AlertState, BounceCount, DeadLetterGroup, DeadLetterSummary, DepthRow,
    Enqueued, FailureCount, FeedbackBatch, FeedbackRecorded, MessageCount, MessageFilter,
    MinuteMetrics, NewAlert, NodeInfo, Outcome, Page, PageRequest, Recorded, ReplayJob,
    ReplayJobState, Scope, SeriesCounts, Storage, StorageError, Suppression, SuppressionCursor,
    SuppressionFilter, TransportState, WorkSignal,
};

/// Delegates every call to the wrapped store, recording its duration in
/// `herald_storage_operation_duration_seconds{op}` and its failure in
/// `herald_storage_errors_total{op,class}`; `op` is the method's name.
pub struct TimedStorage {
    inner: Arc<dyn Storage>,
}

impl TimedStorage {
    pub fn new(inner: Arc<dyn Storage>) -> TimedStorage {
        TimedStorage { inner }
    }
}

async fn timed<T>(
    op: &'static str,
    call: impl Future<Output = Result<T, StorageError>>,
) -> Result<T, StorageError> {
    let started = Instant::now();
    let result = call.await;
    super::storage_operation(op, started.elapsed(), result.as_ref().err());
    result
}

#[async_trait]
impl Storage for TimedStorage {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn enqueue_writers(&self) -> usize {
        self.inner.enqueue_writers()
    }

    fn work_signal(&self) -> &WorkSignal {
        self.inner.work_signal()
    }

    fn state_signal(&self) -> &WorkSignal {
        self.inner.state_signal()
    }

    async fn migrate(&self) -> Result<(), StorageError> {
        timed("migrate", self.inner.migrate()).await
    }

    async fn ping(&self) -> Result<(), StorageError> {
        timed("ping", self.inner.ping()).await
    }

    async fn probe_write(&self) -> Result<(), StorageError> {
        timed("probe_write", self.inner.probe_write()).await
    }

    async fn enqueue(
        &self,
        message: NewMessage,
        now: DateTime<Utc>,
    ) -> Result<Enqueued, StorageError> {
        timed("enqueue", self.inner.enqueue(message, now)).await
    }

    async fn enqueue_many(
        &self,
        messages: Vec<NewMessage>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Enqueued>, StorageError> {
        timed("enqueue_many", self.inner.enqueue_many(messages, now)).await
    }

    async fn claim_due(
        &self,
        transport: &str,
        node: &str,
        limit: usize,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Message>, StorageError> {
        timed(
            "claim_due",
            self.inner.claim_due(transport, node, limit, lease, now),
        )
        .await
    }

    async fn renew_leases(
        &self,
        claims: &[(Stamp, ClaimToken)],
        lease_until: DateTime<Utc>,
    ) -> Result<usize, StorageError> {
        timed("renew_leases", self.inner.renew_leases(claims, lease_until)).await
    }

    async fn record_outcomes(
        &self,
        outcomes: Vec<Outcome>,
        now: DateTime<Utc>,
    ) -> Result<Recorded, StorageError> {
        timed("record_outcomes", self.inner.record_outcomes(outcomes, now)).await
    }

    async fn recover_expired(
        &self,
        now: DateTime<Utc>,
        dead_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Stamp>, StorageError> {
        timed(
            "recover_expired",
            self.inner.recover_expired(now, dead_before, limit),
        )
        .await
    }

    async fn register_node(&self, node: &NodeInfo, now: DateTime<Utc>) -> Result<(), StorageError> {
        timed("register_node", self.inner.register_node(node, now)).await
    }

    async fn heartbeat(&self, node: &NodeInfo, now: DateTime<Utc>) -> Result<(), StorageError> {
        timed("heartbeat", self.inner.heartbeat(node, now)).await
    }

    async fn deregister_node(&self, node: &str, now: DateTime<Utc>) -> Result<(), StorageError> {
        timed("deregister_node", self.inner.deregister_node(node, now)).await
    }

    async fn cancel(&self, id: Stamp, now: DateTime<Utc>) -> Result<Message, StorageError> {
        timed("cancel", self.inner.cancel(id, now)).await
    }

    async fn replay(&self, id: Stamp, now: DateTime<Utc>) -> Result<Message, StorageError> {
        timed("replay", self.inner.replay(id, now)).await
    }

    async fn replay_dead(
        &self,
        filter: &MessageFilter,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<Stamp>, StorageError> {
        timed("replay_dead", self.inner.replay_dead(filter, limit, now)).await
    }

    async fn set_paused(
        &self,
        transport: &str,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<TransportState, StorageError> {
        timed("set_paused", self.inner.set_paused(transport, paused, now)).await
    }

    async fn hold_transport(
        &self,
        transport: &str,
        node: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        dead_before: DateTime<Utc>,
    ) -> Result<bool, StorageError> {
        timed(
            "hold_transport",
            self.inner
                .hold_transport(transport, node, until, now, dead_before),
        )
        .await
    }

    async fn release_transport(&self, transport: &str, node: &str) -> Result<(), StorageError> {
        timed(
            "release_transport",
            self.inner.release_transport(transport, node),
        )
        .await
    }

    async fn transport_states(&self) -> Result<Vec<TransportState>, StorageError> {
        timed("transport_states", self.inner.transport_states()).await
    }

    async fn get_message(&self, id: Stamp) -> Result<Option<MessageWithEvents>, StorageError> {
        timed("get_message", self.inner.get_message(id)).await
    }

    async fn record_feedback(
        &self,
        batch: FeedbackBatch,
        now: DateTime<Utc>,
    ) -> Result<FeedbackRecorded, StorageError> {
        timed("record_feedback", self.inner.record_feedback(batch, now)).await
    }

    async fn rematch_feedback(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<FeedbackRecorded, StorageError> {
        timed("rematch_feedback", self.inner.rematch_feedback(now, limit)).await
    }

    async fn list_suppressions(
        &self,
        filter: &SuppressionFilter,
        after: Option<SuppressionCursor>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<Suppression>, StorageError> {
        timed(
            "list_suppressions",
            self.inner.list_suppressions(filter, after, limit, now),
        )
        .await
    }

    async fn add_suppression(&self, entry: Suppression) -> Result<(), StorageError> {
        timed("add_suppression", self.inner.add_suppression(entry)).await
    }

    async fn remove_suppression(
        &self,
        channel: Channel,
        address: &str,
    ) -> Result<u64, StorageError> {
        timed(
            "remove_suppression",
            self.inner.remove_suppression(channel, address),
        )
        .await
    }

    async fn find_by_provider_id(
        &self,
        transport: &str,
        provider_message_id: &str,
    ) -> Result<Option<Stamp>, StorageError> {
        timed(
            "find_by_provider_id",
            self.inner
                .find_by_provider_id(transport, provider_message_id),
        )
        .await
    }

    async fn list_messages(
        &self,
        filter: &MessageFilter,
        page: PageRequest,
    ) -> Result<Page, StorageError> {
        timed("list_messages", self.inner.list_messages(filter, page)).await
    }

    async fn count_messages(&self, filter: &MessageFilter) -> Result<MessageCount, StorageError> {
        timed("count_messages", self.inner.count_messages(filter)).await
    }

    async fn dead_letter_groups(
        &self,
        filter: &MessageFilter,
    ) -> Result<Vec<DeadLetterGroup>, StorageError> {
        timed("dead_letter_groups", self.inner.dead_letter_groups(filter)).await
    }

    async fn find_by_fingerprint(
        &self,
        fingerprint: &Fingerprint,
        limit: usize,
    ) -> Result<Vec<Message>, StorageError> {
        timed(
            "find_by_fingerprint",
            self.inner.find_by_fingerprint(fingerprint, limit),
        )
        .await
    }

    async fn expire_finished(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<crate::storage::Expired, StorageError> {
        timed("expire_finished", self.inner.expire_finished(now, limit)).await
    }

    async fn move_finished(&self, limit: usize) -> Result<u64, StorageError> {
        timed("move_finished", self.inner.move_finished(limit)).await
    }

    async fn queue_depth(&self) -> Result<Vec<DepthRow>, StorageError> {
        timed("queue_depth", self.inner.queue_depth()).await
    }

    async fn failure_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<FailureCount>, StorageError> {
        timed("failure_counts", self.inner.failure_counts(from, to)).await
    }

    async fn bounce_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<BounceCount>, StorageError> {
        timed("bounce_counts", self.inner.bounce_counts(from, to)).await
    }

    async fn compact_rollups(
        &self,
        seal_before: DateTime<Utc>,
        compact_before: DateTime<Utc>,
        purge_before: DateTime<Utc>,
    ) -> Result<(u64, u64), StorageError> {
        timed(
            "compact_rollups",
            self.inner
                .compact_rollups(seal_before, compact_before, purge_before),
        )
        .await
    }

    async fn dead_letter_summary(&self) -> Result<Vec<DeadLetterSummary>, StorageError> {
        timed("dead_letter_summary", self.inner.dead_letter_summary()).await
    }

    async fn minute_metrics(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MinuteMetrics>, StorageError> {
        timed("minute_metrics", self.inner.minute_metrics(from, to)).await
    }

    async fn series_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        hourly: bool,
        scope: &Scope,
    ) -> Result<Vec<SeriesCounts>, StorageError> {
        timed(
            "series_counts",
            self.inner.series_counts(from, to, hourly, scope),
        )
        .await
    }

    async fn rollup_totals(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MinuteMetrics>, StorageError> {
        timed("rollup_totals", self.inner.rollup_totals(from, to)).await
    }

    async fn add_rollups(&self, rows: Vec<MinuteMetrics>) -> Result<(), StorageError> {
        timed("add_rollups", self.inner.add_rollups(rows)).await
    }

    async fn open_alert(
        &self,
        alert: NewAlert,
        quiet_since: DateTime<Utc>,
    ) -> Result<Option<Alert>, StorageError> {
        timed("open_alert", self.inner.open_alert(alert, quiet_since)).await
    }

    async fn check_alert(
        &self,
        id: ulid::Ulid,
        value: f64,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        timed("check_alert", self.inner.check_alert(id, value, now)).await
    }

    async fn set_alert_paused(
        &self,
        id: ulid::Ulid,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        timed("set_alert_paused", self.inner.set_alert_paused(id, now)).await
    }

    async fn resolve_alert(
        &self,
        id: ulid::Ulid,
        value: f64,
        now: DateTime<Utc>,
    ) -> Result<Option<Alert>, StorageError> {
        timed("resolve_alert", self.inner.resolve_alert(id, value, now)).await
    }

    async fn set_alert_notice(
        &self,
        id: ulid::Ulid,
        notice: AlertNotice,
        message: Stamp,
    ) -> Result<(), StorageError> {
        timed(
            "set_alert_notice",
            self.inner.set_alert_notice(id, notice, message),
        )
        .await
    }

    async fn alerts_awaiting_notice(&self) -> Result<Vec<Alert>, StorageError> {
        timed(
            "alerts_awaiting_notice",
            self.inner.alerts_awaiting_notice(),
        )
        .await
    }

    async fn list_alerts(
        &self,
        state: Option<AlertState>,
        limit: usize,
    ) -> Result<Vec<Alert>, StorageError> {
        timed("list_alerts", self.inner.list_alerts(state, limit)).await
    }

    async fn create_replay_job(&self, job: &ReplayJob) -> Result<(), StorageError> {
        timed("create_replay_job", self.inner.create_replay_job(job)).await
    }

    async fn replay_job(&self, id: Stamp) -> Result<Option<ReplayJob>, StorageError> {
        timed("replay_job", self.inner.replay_job(id)).await
    }

    async fn list_replay_jobs(&self, limit: usize) -> Result<Vec<ReplayJob>, StorageError> {
        timed("list_replay_jobs", self.inner.list_replay_jobs(limit)).await
    }

    async fn take_replay_job(
        &self,
        node: &str,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<Option<ReplayJob>, StorageError> {
        timed(
            "take_replay_job",
            self.inner.take_replay_job(node, now, stale_before),
        )
        .await
    }

    async fn advance_replay_job(
        &self,
        id: Stamp,
        node: &str,
        replayed: u64,
        state: ReplayJobState,
        error: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<bool, StorageError> {
        timed(
            "advance_replay_job",
            self.inner
                .advance_replay_job(id, node, replayed, state, error, now),
        )
        .await
    }
}
