//! The PostgreSQL backend: tokio-postgres through a deadpool pool.
//!
//! Every hot-path operation is one statement per batch (arrays in, CTEs
//! doing the update and the event inserts together), prepared once per
//! connection, so a batch of 100 costs the same round trips as a batch of
//! one. Claims use `FOR UPDATE SKIP LOCKED`, so any number of nodes can
//! claim from one table without ever handing out a message twice.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};
use ulid::Ulid;
use uuid::Uuid;

use super::lifecycle;
use super::rollups::{
    CompactionPlan, RollupSpans, cancelled_rollup, metric_columns, metric_values, rollup,
};
use super::sql::{
    ALERT_COLUMNS, FEW_IN_TIME_RANGE, FilterValue, MESSAGE_COLUMNS, READ_SEAL_SQL,
    REPLAY_JOB_COLUMNS, add_bounces_sql, add_failures_sql, add_metrics_sql, bounce_totals_sql,
    compaction_sql, error_class_sql, failure_totals_sql, few_sql, filter_conditions,
    listing_wheres, rollup_rows_sql, rollup_totals_sql, series_sql, time_range_of, write_seal_sql,
};
use super::{
    Alert, AlertNotice, AlertState, BounceCount, DeadLetterGroup, DeadLetterSummary, DepthRow,
    EXACT_COUNT_LIMIT, Enqueued, Expired, FailureCount, FeedbackBatch, FeedbackRecorded,
    MessageCount, MessageFilter, MinuteMetrics, NewAlert, NodeInfo, Outcome, OutcomeKind, Page,
    PageRequest, Recorded, ReplayJob, ReplayJobState, Retention, RollupSeal, Scope, SeriesCounts,
    Storage, StorageError, StorageOptions, Suppression, SuppressionCursor, SuppressionFilter,
    TransportState, WRITE_PROBE, WeakWorkSignal, WorkSignal, clamp_limit, effective_at,
    with_queued_event,
};
use crate::domain::{
    Channel, ClaimToken, Event, Fingerprint, Message, MessageWithEvents, NewMessage, Priority,
    Stamp, Status,
};

mod embedded {
    refinery::embed_migrations!("sql/postgres");
}
mod feedback;
mod finished;
mod live;
mod partition_indexes;

/// Serialises migrations when several nodes start at once.
const MIGRATION_LOCK: i64 = 0x4845_5241_4c44; // "HERALD"
/// With the store's schema, serialises upkeep's changes of the schema
/// (index builds, the live table's re-laying) among the nodes of one
/// store. Only ever tried, never waited for, and never
/// [`MIGRATION_LOCK`]: a concurrent index build waits for every older
/// transaction of the database, and a node waiting for the lock it holds
/// (a starting node's migration) would be a deadlock.
const SCHEMA_UPKEEP_LOCK: i32 = 0x4852_4c55; // "HRLU"

/// Takes [`SCHEMA_UPKEEP_LOCK`] if it is free; whether it did.
pub(super) async fn try_schema_upkeep_lock(
    client: &deadpool_postgres::Object,
) -> Result<bool, StorageError> {
    Ok(client
        .query_one(
            "SELECT pg_try_advisory_lock($1, hashtext(current_schema()))",
            &[&SCHEMA_UPKEEP_LOCK],
        )
        .await?
        .try_get::<_, bool>(0)?)
}

/// Gives [`SCHEMA_UPKEEP_LOCK`] back.
pub(super) async fn schema_upkeep_unlock(
    client: &deadpool_postgres::Object,
) -> Result<(), StorageError> {
    client
        .execute(
            "SELECT pg_advisory_unlock($1, hashtext(current_schema()))",
            &[&SCHEMA_UPKEEP_LOCK],
        )
        .await?;
    Ok(())
}
/// How long a caller waits for a pooled connection before giving up.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// [`MESSAGE_COLUMNS`] of a finished message: it holds no claim.
const FINISHED_COLUMNS: &str = "id, channel, transport, category, status, priority, payload, \
    metadata, fingerprint, idempotency_key, attempts, max_attempts, created_at, available_at, \
    NULL::timestamptz AS lease_until, NULL::uuid AS claim_token, sent_at, last_error, updated_at, \
    delivery_detail";

/// [`MESSAGE_COLUMNS`] of a live message beside [`FINISHED_COLUMNS`] in
/// one result: it has no delivery state yet.
const LIVE_COLUMNS: &str = "id, channel, transport, category, status, priority, payload, \
    metadata, fingerprint, idempotency_key, attempts, max_attempts, created_at, available_at, \
    lease_until, claim_token, sent_at, last_error, updated_at, NULL::jsonb AS delivery_detail";

/// Between a message's recipients in the one text per message the
/// enqueue statement splits (no validated recipient contains it).
const RECIPIENT_SEPARATOR: &str = "\u{1f}";

/// PostgreSQL storage over a connection pool.
#[derive(Clone)]
pub struct PostgresStorage {
    pool: Pool,
    /// Priority aging in milliseconds, as SQL computes `effective_at`.
    aging_ms: f64,
    aging: Duration,
    rollups: bool,
    enqueue_writers: usize,
    signal: WorkSignal,
    state: WorkSignal,
    notifier: Notifier,
    /// For the node lock's own session (see [`Storage::register_node`]).
    url: String,
    /// Ends the session holding this node's advisory lock, when held.
    node_lock: Arc<Mutex<Option<oneshot::Sender<()>>>>,
    retention: Arc<Retention>,
    suppression: Arc<super::SuppressionPolicy>,
    unmatched_keep: Duration,
    nonce_keep: Duration,
    statistics: Statistics,
    /// The outcome and recovery statements, which file finishing messages
    /// by `retention`.
    outcomes_sql: Arc<str>,
    recover_sql: Arc<str>,
}

impl PostgresStorage {
    pub async fn connect(options: &StorageOptions) -> Result<Self, StorageError> {
        let config = tokio_postgres::Config::from_str(&options.url)
            .map_err(|e| StorageError::Config(format!("storage.url: {e}")))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| StorageError::Config(format!("storage: {e}")))?;
        let signal = WorkSignal::default();
        let state = WorkSignal::default();
        tokio::spawn(relay_notifications(
            options.url.clone(),
            signal.downgrade(),
            state.downgrade(),
        ));
        let storage = PostgresStorage {
            notifier: Notifier::start(pool.clone()),
            pool,
            aging_ms: options.priority_aging.as_secs_f64() * 1000.0,
            aging: options.priority_aging,
            rollups: options.rollups,
            enqueue_writers: options.enqueue_writers,
            signal,
            state,
            url: options.url.clone(),
            node_lock: Arc::new(Mutex::new(None)),
            statistics: Statistics::default(),
            outcomes_sql: outcomes_sql(&finished::bucket_sql(
                &options.retention,
                "$9",
                "c0.transport",
                "c0.category",
            ))
            .into(),
            recover_sql: recover_sql(&finished::bucket_sql(
                &options.retention,
                "$1",
                "m.transport",
                "m.category",
            ))
            .into(),
            retention: Arc::new(options.retention.clone()),
            suppression: Arc::new(options.suppression.clone()),
            unmatched_keep: options.unmatched_keep,
            nonce_keep: options.nonce_keep,
        };
        storage.ping().await?;
        Ok(storage)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StorageError> {
        self.pool.get().await.map_err(|e| match e {
            // A refused connection says why: 57P03 while the server
            // starts, 53300 when it has no slots left.
            deadpool_postgres::PoolError::Backend(err) => StorageError::from(err),
            other => StorageError::Unavailable(format!("postgres pool: {other}")),
        })
    }
}

/// The statements that can meet a day without its partition, written
/// once and retried once [`PostgresStorage::make_day_ready`] made it.
impl PostgresStorage {
    async fn cancel_once(&self, id: Stamp, now: DateTime<Utc>) -> Result<Message, StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let cancelled = cancel_one(&tx, id, now, &self.retention).await;
        finish(tx, cancelled).await
    }

    /// Runs `attempt`; if it met a day without its partition, makes the
    /// day ready and runs it once more.
    async fn on_a_ready_day<T, F>(
        &self,
        now: DateTime<Utc>,
        attempt: impl Fn() -> F,
    ) -> Result<T, StorageError>
    where
        F: std::future::Future<Output = Result<T, StorageError>>,
    {
        match attempt().await {
            Err(err) if finished::is_missing_partition(&err) => {
                self.make_day_ready(now).await?;
                attempt().await
            }
            other => other,
        }
    }

    /// Creates the partition of `now`'s day (and the days after it).
    async fn make_day_ready(&self, now: DateTime<Utc>) -> Result<(), StorageError> {
        let mut client = self.client().await?;
        let created = finished::ensure_partitions(&mut client, finished::day_of(now)).await?;
        tracing::info!(created, day = %finished::day_of(now), "finished-message partitions created on demand");
        Ok(())
    }

    /// Stores `messages` in the live table (the statement and the look-up
    /// of known keys), on `client`: the pool's connection, or the
    /// transaction of an enqueue that also stores suppressed messages.
    /// `None`, with nothing stored, when a recipient is suppressed: the
    /// statement checks, so that the common case, none, costs no round
    /// trip more, and the batch then goes through
    /// [`PostgresStorage::enqueue_suppressing`].
    async fn insert_live(
        &self,
        client: &impl GenericClient,
        messages: &[NewMessage],
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<Enqueued>>, StorageError> {
        if messages.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let ids: Vec<Uuid> = messages.iter().map(|m| uuid(m.id)).collect();
        let channels: Vec<&str> = messages.iter().map(|m| m.channel.as_str()).collect();
        let transports: Vec<&str> = messages.iter().map(|m| m.transport.as_str()).collect();
        let categories: Vec<Option<&str>> =
            messages.iter().map(|m| m.category.as_deref()).collect();
        let priorities: Vec<i16> = messages
            .iter()
            .map(|m| i16::from(m.priority.get()))
            .collect();
        let payloads: Vec<&str> = messages.iter().map(|m| m.payload.as_str()).collect();
        let metadata: Vec<&str> = messages.iter().map(|m| m.metadata.as_str()).collect();
        let fingerprints: Vec<&str> = messages.iter().map(|m| m.fingerprint.as_str()).collect();
        let keys: Vec<Option<&str>> = messages
            .iter()
            .map(|m| m.idempotency_key.as_deref())
            .collect();
        let max_attempts: Vec<i32> = messages
            .iter()
            .map(|m| i32::try_from(m.max_attempts).unwrap_or(i32::MAX))
            .collect();
        let available: Vec<DateTime<Utc>> = messages.iter().map(|m| m.available_at).collect();
        let effective: Vec<DateTime<Utc>> = messages
            .iter()
            .map(|m| effective_at(m.available_at, m.priority, self.aging))
            .collect();

        // One statement stores the messages and their events, atomic
        // without BEGIN and COMMIT, which would cost two more round trips.
        // The lookup of known keys after it needs no transaction either:
        // the insert waited for any conflicting row to commit, so this
        // next statement sees it; and should the lookup fail, the client's
        // retry with the same keys finds the messages stored.
        let recipients: Vec<Option<String>> = messages
            .iter()
            .map(|m| (!m.recipients.is_empty()).then(|| m.recipients.join(RECIPIENT_SEPARATOR)))
            .collect();
        let sql = if keys.iter().any(Option::is_some) {
            &ENQUEUE_SQL
        } else {
            &ENQUEUE_UNKEYED_SQL
        };
        let insert = client.prepare_cached(sql).await?;
        let rows = client
            .query(
                &insert,
                &[
                    &ids,
                    &channels,
                    &transports,
                    &categories,
                    &priorities,
                    &payloads,
                    &metadata,
                    &fingerprints,
                    &keys,
                    &max_attempts,
                    &available,
                    &effective,
                    &now,
                    &recipients,
                ],
            )
            .await?;
        if rows.iter().any(|row| row.get::<_, bool>(2)) {
            return Ok(None);
        }
        let mut inserted = std::collections::HashSet::with_capacity(rows.len());
        let mut new_work = BTreeSet::new();
        for row in &rows {
            inserted.insert(row.try_get::<_, Uuid>(0)?);
            new_work.insert(row.try_get::<_, &str>(1)?);
        }
        self.signal.notify(new_work.iter().copied());
        self.notifier.announce(new_work);

        let mut existing = std::collections::HashMap::new();
        if inserted.len() < messages.len() {
            let skipped: Vec<&str> = messages
                .iter()
                .filter(|m| !inserted.contains(&uuid(m.id)))
                .filter_map(|m| m.idempotency_key.as_deref())
                .collect();
            let lookup = client
                .prepare_cached(
                    "SELECT idempotency_key, id, status, fingerprint FROM messages
                     WHERE idempotency_key = ANY($1)
                     UNION ALL
                     SELECT idempotency_key, id, status, fingerprint FROM finished_messages
                     WHERE idempotency_key = ANY($1)",
                )
                .await?;
            for row in client.query(&lookup, &[&skipped]).await? {
                let key: String = row.try_get(0)?;
                let status: String = row.try_get(2)?;
                existing.insert(
                    key,
                    Enqueued {
                        id: stamp(row.try_get(1)?),
                        status: status.parse().map_err(|e| corrupt("status", e))?,
                        fingerprint: Fingerprint::from_stored(row.try_get(3)?),
                        created: false,
                        suppressed: Vec::new(),
                    },
                );
            }
        }

        messages
            .iter()
            .map(|m| {
                if inserted.contains(&uuid(m.id)) {
                    Ok(Enqueued {
                        id: m.id,
                        status: Status::Queued,
                        fingerprint: m.fingerprint.clone(),
                        created: true,
                        suppressed: Vec::new(),
                    })
                } else {
                    m.idempotency_key
                        .as_ref()
                        .and_then(|key| existing.get(key).cloned())
                        .ok_or_else(|| {
                            StorageError::Backend(format!(
                                "message {} was neither stored nor found",
                                m.id
                            ))
                        })
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    async fn record_outcomes_once(
        &self,
        outcomes: &[Outcome],
        now: DateTime<Utc>,
    ) -> Result<Recorded, StorageError> {
        if outcomes.is_empty() {
            return Ok(Recorded::default());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let tids = lock_claims(&tx, outcomes).await?;
        let current: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| tids.contains_key(&uuid(o.id)))
            .collect();
        let mut ids = Vec::with_capacity(current.len());
        let mut row_tids = Vec::with_capacity(current.len());
        let mut tokens = Vec::with_capacity(current.len());
        let mut kinds = Vec::with_capacity(current.len());
        let mut members = Vec::with_capacity(current.len());
        let mut durations = Vec::with_capacity(current.len());
        let mut errors: Vec<Option<&str>> = Vec::with_capacity(current.len());
        let mut retry_ats: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(current.len());
        let mut details: Vec<Option<serde_json::Value>> = Vec::with_capacity(current.len());
        for outcome in &current {
            ids.push(uuid(outcome.id));
            row_tids.push(tids[&uuid(outcome.id)].as_str());
            tokens.push(Uuid::from(outcome.claim_token.0));
            members.push(outcome.transport.as_str());
            durations.push(millis_i64(outcome.duration_ms));
            let (kind, error, retry_at) = match &outcome.kind {
                OutcomeKind::Sent => ("sent", None, None),
                OutcomeKind::Failed { error, retry_at } => {
                    ("failed", Some(error.as_str()), *retry_at)
                }
                OutcomeKind::Released { .. } => ("released", None, None),
            };
            // One detail per outcome: the ending event's (sent, released)
            // and the retry's never meet, and a recipient's reason comes
            // only with a permanent failure, which schedules no retry.
            let details_of = outcome.event_details();
            let detail = details_of.ending.or(details_of.retry).or_else(|| {
                details_of
                    .dead_reason
                    .map(|reason| serde_json::json!({ "reason": reason }))
            });
            kinds.push(kind);
            errors.push(error);
            retry_ats.push(retry_at);
            details.push(detail);
        }

        // First, so that their events come before the attempt's own.
        record_passed_over(&tx, &current, &tids, now).await?;
        let statement = tx.prepare_cached(&self.outcomes_sql).await?;
        let rows = tx
            .query(
                &statement,
                &[
                    &ids,
                    &tokens,
                    &kinds,
                    &members,
                    &durations,
                    &errors,
                    &retry_ats,
                    &details,
                    &now,
                    &self.aging_ms,
                    &row_tids,
                ],
            )
            .await?;
        let mut applied = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let status: String = row.try_get(1)?;
            applied.insert(
                stamp(row.try_get(0)?),
                status.parse::<Status>().map_err(|e| corrupt("status", e))?,
            );
        }
        let mut recorded = Recorded::default();
        for outcome in outcomes {
            match applied.get(&outcome.id) {
                Some(status) => recorded.applied.push((outcome.id, *status)),
                None => recorded.stale.push(outcome.id),
            }
        }
        let (rollups, failures) = if self.rollups {
            rollup(outcomes, &recorded.applied, now)
        } else {
            Default::default()
        };
        if !failures.is_empty() {
            let minutes: Vec<DateTime<Utc>> = failures.iter().map(|f| f.minute).collect();
            let transports: Vec<&str> = failures.iter().map(|f| f.transport.as_str()).collect();
            let channels: Vec<&str> = failures.iter().map(|f| f.channel.as_str()).collect();
            let categories: Vec<&str> = failures.iter().map(|f| f.category.as_str()).collect();
            let classes: Vec<&str> = failures.iter().map(|f| f.class.as_str()).collect();
            let errors: Vec<&str> = failures.iter().map(|f| f.error.as_str()).collect();
            let counts: Vec<i64> = failures
                .iter()
                .map(|f| i64::try_from(f.failures).unwrap_or(i64::MAX))
                .collect();
            let upsert = tx
                .prepare_cached(&add_failures_sql(
                    "SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[],
                                          $5::text[], $6::text[], $7::int8[])",
                ))
                .await?;
            tx.execute(
                &upsert,
                &[
                    &minutes,
                    &transports,
                    &channels,
                    &categories,
                    &classes,
                    &errors,
                    &counts,
                ],
            )
            .await?;
        }
        add_rollups(&tx, &rollups).await?;
        self.suppress_gone(&tx, outcomes, &recorded, now).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    async fn recover_expired_once(
        &self,
        now: DateTime<Utc>,
        dead_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Stamp>, StorageError> {
        let limit = clamp_limit(limit) as i64;
        let mut client = self.client().await?;
        // Separate statements: if this node dies between them, the dead
        // node's claims already have ended leases and any node recovers them.
        let bury = client.prepare_cached(BURY_NODES_SQL).await?;
        client.execute(&bury, &[&now, &dead_before]).await?;
        let tx = client.transaction().await?;
        let lock = tx.prepare_cached(LOCK_EXPIRED_SQL).await?;
        let tids: Vec<String> = tx
            .query(&lock, &[&now, &limit])
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        if tids.is_empty() {
            // Ended now, not when dropped: a dropped transaction's ROLLBACK
            // waits for the connection's next use, and an open transaction
            // holds back retention's DETACH ... CONCURRENTLY meanwhile.
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let recover = tx.prepare_cached(&self.recover_sql).await?;
        let rows = tx.query(&recover, &[&now, &tids]).await?;
        let recovered = rows
            .iter()
            .map(|row| Ok(stamp(row.try_get(0)?)))
            .collect::<Result<_, StorageError>>()?;
        tx.commit().await?;
        Ok(recovered)
    }
}

impl From<tokio_postgres::Error> for StorageError {
    fn from(err: tokio_postgres::Error) -> Self {
        let Some(db) = err.as_db_error() else {
            // No SQLSTATE: the connection itself failed.
            return StorageError::Unavailable(err.to_string());
        };
        classify_sqlstate(db.code().code(), format!("{err}: {}", db.message()))
    }
}

/// What an SQLSTATE means for a retry. Class 53 (insufficient resources:
/// 53100 disk_full, out of memory, too many connections) is a full
/// store; connection exceptions (08), operator intervention (57: admin
/// shutdown, cannot connect now, a cancelled query), system errors (58:
/// I/O), transaction rollbacks (40: serialization failure, deadlock) and
/// 25006 read_only_sql_transaction (a hot standby,
/// `default_transaction_read_only`) make it unavailable; all of them pass,
/// so callers keep their work and try again. Anything else is a fault of
/// the statement or the data.
fn classify_sqlstate(sqlstate: &str, message: String) -> StorageError {
    match sqlstate.get(..2) {
        Some("53") => StorageError::Full(message),
        Some("08" | "57" | "58" | "40") => StorageError::Unavailable(message),
        _ if sqlstate == "25006" => StorageError::Unavailable(message),
        _ => StorageError::Backend(message),
    }
}

/// Listens for `herald_work` notifications (sent by enqueues on any node)
/// and `herald_state` ones (a transport paused or resumed on any node) and
/// relays them to this process's work and state signals, reconnecting
/// after a lost connection. Ends when nobody can listen any more.
async fn relay_notifications(url: String, signal: WeakWorkSignal, state: WeakWorkSignal) {
    use futures::StreamExt;
    let mut pause = Duration::from_millis(250);
    loop {
        match tokio_postgres::connect(&url, NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                let listen = client.batch_execute("LISTEN herald_work; LISTEN herald_state");
                // The connection must be driven while LISTEN runs.
                let mut listen = std::pin::pin!(listen);
                let listening = loop {
                    tokio::select! {
                        result = &mut listen => break result.is_ok(),
                        message = messages.next() => if message.is_none() { break false },
                    }
                };
                if listening {
                    pause = Duration::from_millis(250);
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                                let target = match n.channel() {
                                    "herald_state" => &state,
                                    _ => &signal,
                                };
                                match target.upgrade() {
                                    Some(target) => target.notify([n.payload()]),
                                    None => return, // the storage is gone
                                }
                            }
                            Ok(_) => {}
                            Err(err) => {
                                tracing::warn!(cause = %err, "work notifications interrupted");
                                break;
                            }
                        }
                    }
                }
            }
            Err(err) => tracing::debug!(cause = %err, "cannot listen for work notifications yet"),
        }
        if signal.upgrade().is_none() {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Tells other nodes (their [`relay_notifications`]) which transports have
/// new work, with `NOTIFY herald_work` sent outside the enqueue
/// transactions. PostgreSQL serialises notifying commits on one global
/// lock, held until the commit record is flushed, so a notify inside each
/// enqueue would stop concurrent enqueues from sharing a WAL flush. This
/// process's own actors are woken at once through the [`WorkSignal`];
/// other nodes hear of new work at most [`NOTIFY_INTERVAL`] later.
///
/// A notification is lost if this process dies between an enqueue's
/// commit and the notify, or if the notify fails: the other nodes' actors
/// then find the work at their next poll (every 500 ms by default).
#[derive(Clone)]
struct Notifier {
    /// Transports announced since the last notify; a set, so it stays as
    /// small as the configured transports whatever the enqueue rate.
    pending: Arc<Mutex<BTreeSet<String>>>,
    /// Wakes the sending task; one ring pending is enough.
    doorbell: mpsc::Sender<()>,
}

/// The shortest time between two notifies of this process: under load,
/// every transport with new work is announced once per interval.
const NOTIFY_INTERVAL: Duration = Duration::from_millis(10);

impl Notifier {
    /// Starts the sending task, which ends when every clone is dropped.
    fn start(pool: Pool) -> Self {
        let pending = Arc::new(Mutex::new(BTreeSet::new()));
        let (doorbell, rings) = mpsc::channel(1);
        tokio::spawn(send_notifications(pool, pending.clone(), rings));
        Notifier { pending, doorbell }
    }

    /// Queues a notify for these transports; never waits.
    fn announce<'a>(&self, transports: impl IntoIterator<Item = &'a str>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let before = pending.len();
        for transport in transports {
            if !pending.contains(transport) {
                pending.insert(transport.to_owned());
            }
        }
        if pending.len() > before {
            // Full: a ring is already pending and will take these too.
            let _ = self.doorbell.try_send(());
        }
    }
}

/// Sends the pending notifies, then waits [`NOTIFY_INTERVAL`] before the
/// next, so a lone enqueue is announced at once and a stream of them once
/// per interval.
async fn send_notifications(
    pool: Pool,
    pending: Arc<Mutex<BTreeSet<String>>>,
    mut rings: mpsc::Receiver<()>,
) {
    while rings.recv().await.is_some() {
        let transports: Vec<String> = {
            let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *pending).into_iter().collect()
        };
        if transports.is_empty() {
            continue;
        }
        let sent = match pool.get().await {
            Ok(client) => client
                .execute(
                    "SELECT pg_notify('herald_work', t) FROM unnest($1::text[]) AS t",
                    &[&transports],
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        };
        if let Err(cause) = sent {
            // Other nodes fall back to their poll for this work.
            tracing::warn!(%cause, "could not notify other nodes of new work");
        }
        tokio::time::sleep(NOTIFY_INTERVAL).await;
    }
}

/// The `WHERE` clauses of a listing of `filter` over the live and the
/// finished table, with the values both bind ([`filter_conditions`]).
struct Listing {
    live_where: String,
    finished_where: String,
    values: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Listing {
    fn new(filter: &MessageFilter, after: Option<Stamp>) -> Listing {
        let (conditions, values) = filter_conditions(filter, after, dollar, |p| {
            // The GIN index's operator; the live table is scanned.
            format!("recipients @> {p}::text[]")
        });
        let (live_where, finished_where) = listing_wheres(conditions, filter.delivery);
        let values = values
            .into_iter()
            .map(|value| -> Box<dyn ToSql + Sync + Send> {
                match value {
                    FilterValue::Text(text) => Box::new(text),
                    FilterValue::Id(id) => Box::new(uuid(id)),
                    FilterValue::Time(at) => Box::new(at),
                    FilterValue::Recipient(address) => Box::new(vec![address]),
                }
            })
            .collect();
        Listing {
            live_where,
            finished_where,
            values,
        }
    }

    fn values(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|value| value.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

fn uuid(id: Stamp) -> Uuid {
    Uuid::from(id.0)
}

fn stamp(id: Uuid) -> Stamp {
    Stamp(Ulid::from(id))
}

fn corrupt(column: &str, err: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(format!("messages.{column}: {err}"))
}

fn message_from_row(row: &Row) -> Result<Message, StorageError> {
    let text =
        |column: &str| -> Result<String, StorageError> { Ok(row.try_get::<_, String>(column)?) };
    let priority: i16 = row.try_get("priority")?;
    let attempts: i32 = row.try_get("attempts")?;
    let max_attempts: i32 = row.try_get("max_attempts")?;
    Ok(Message {
        id: stamp(row.try_get("id")?),
        channel: text("channel")?
            .parse()
            .map_err(|e| corrupt("channel", e))?,
        transport: text("transport")?,
        category: row.try_get("category")?,
        status: text("status")?.parse().map_err(|e| corrupt("status", e))?,
        priority: Priority::new(priority.into()).ok_or_else(|| corrupt("priority", priority))?,
        // NULL once retention dropped it.
        payload: row
            .try_get::<_, Option<serde_json::Value>>("payload")?
            .unwrap_or_default(),
        metadata: row.try_get("metadata")?,
        fingerprint: Fingerprint::from_stored(text("fingerprint")?),
        idempotency_key: row.try_get("idempotency_key")?,
        attempts: attempts.max(0) as u32,
        max_attempts: max_attempts.max(0) as u32,
        created_at: row.try_get("created_at")?,
        available_at: row.try_get("available_at")?,
        lease_until: row.try_get("lease_until")?,
        claim_token: row
            .try_get::<_, Option<Uuid>>("claim_token")?
            .map(|t| ClaimToken(Ulid::from(t))),
        sent_at: row.try_get("sent_at")?,
        last_error: row.try_get("last_error")?,
        updated_at: row.try_get("updated_at")?,
        // Claims read live rows, which have no delivery state.
        delivery: if row.columns().iter().any(|c| c.name() == "delivery_detail") {
            feedback::delivery_of(row.try_get("delivery_detail")?)
        } else {
            crate::domain::DeliveryStatus::default()
        },
    })
}

fn alert_from_row(row: &Row) -> Result<Alert, StorageError> {
    let state: String = row.try_get("state")?;
    Ok(Alert {
        id: Ulid::from(row.try_get::<_, Uuid>("id")?),
        rule: row.try_get("rule")?,
        kind: row.try_get("kind")?,
        transport: row.try_get("transport")?,
        state: AlertState::parse(&state).ok_or_else(|| corrupt("alerts.state", &state))?,
        threshold: row.try_get("threshold")?,
        window_s: row
            .try_get::<_, Option<i32>>("window_s")?
            .map(|w| w.max(0) as u64),
        fired_value: row.try_get("fired_value")?,
        last_value: row.try_get("last_value")?,
        fired_at: row.try_get("fired_at")?,
        checked_at: row.try_get("checked_at")?,
        resolved_at: row.try_get("resolved_at")?,
        notified: row.try_get("notified")?,
        paused_at: row.try_get("paused_at")?,
        fired_message: row
            .try_get::<_, Option<Uuid>>("fired_message_id")?
            .map(stamp),
        resolved_message: row
            .try_get::<_, Option<Uuid>>("resolved_message_id")?
            .map(stamp),
    })
}

fn replay_job_from_row(row: &Row) -> Result<ReplayJob, StorageError> {
    let state: String = row.try_get("state")?;
    let channel = row
        .try_get::<_, Option<String>>("channel")?
        .map(|text| {
            text.parse::<crate::domain::Channel>()
                .map_err(|_| corrupt("replay_jobs.channel", &text))
        })
        .transpose()?;
    Ok(ReplayJob {
        id: stamp(row.try_get("id")?),
        state: ReplayJobState::parse(&state).ok_or_else(|| corrupt("replay_jobs.state", &state))?,
        transport: row.try_get("transport")?,
        channel,
        category: row.try_get("category")?,
        error_class: row.try_get("error_class")?,
        total: row.try_get::<_, i64>("total")?.max(0) as u64,
        replayed: row.try_get::<_, i64>("replayed")?.max(0) as u64,
        owner: row.try_get("owner")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
        error: row.try_get("error")?,
    })
}

fn event_from_row(row: &Row) -> Result<Event, StorageError> {
    let kind: String = row.try_get("kind")?;
    let attempt: i32 = row.try_get("attempt")?;
    Ok(Event {
        kind: kind.parse().map_err(|e| corrupt("kind", e))?,
        at: row.try_get("at")?,
        attempt: attempt.max(0) as u32,
        transport: row.try_get("transport")?,
        started_at: row.try_get("started_at")?,
        duration_ms: row
            .try_get::<_, Option<i64>>("duration_ms")?
            .map(|d| d.max(0) as u64),
        error: row.try_get("error")?,
        detail: row.try_get("detail")?,
    })
}

/// Writes the events of the group members that failed within the
/// outcomes' attempts ([`PASSED_OVER_SQL`]); nothing when there are none.
async fn record_passed_over(
    tx: &deadpool_postgres::Transaction<'_>,
    outcomes: &[&Outcome],
    tids: &std::collections::HashMap<Uuid, String>,
    now: DateTime<Utc>,
) -> Result<(), StorageError> {
    let failed: Vec<(&Outcome, usize, &super::MemberFailed)> = outcomes
        .iter()
        .flat_map(|o| {
            o.passed_over
                .iter()
                .enumerate()
                .map(move |(i, f)| (*o, i, f))
        })
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = failed.iter().map(|(o, _, _)| uuid(o.id)).collect();
    let row_tids: Vec<&str> = ids.iter().map(|id| tids[id].as_str()).collect();
    let tokens: Vec<Uuid> = failed
        .iter()
        .map(|(o, _, _)| Uuid::from(o.claim_token.0))
        .collect();
    let members: Vec<&str> = failed.iter().map(|(_, _, f)| f.member.as_str()).collect();
    let durations: Vec<Option<i64>> = failed
        .iter()
        .map(|(_, _, f)| millis_i64(f.duration_ms))
        .collect();
    let errors: Vec<&str> = failed.iter().map(|(_, _, f)| f.error.as_str()).collect();
    let details: Vec<serde_json::Value> = failed.iter().map(|(_, _, f)| f.detail()).collect();
    let seqs: Vec<i32> = failed
        .iter()
        .map(|(_, i, _)| i32::try_from(*i).unwrap_or(i32::MAX))
        .collect();
    let statement = tx.prepare_cached(PASSED_OVER_SQL).await?;
    tx.execute(
        &statement,
        &[
            &ids, &tokens, &members, &durations, &errors, &details, &seqs, &now, &row_tids,
        ],
    )
    .await?;
    Ok(())
}

/// Locks the outcomes' claims that are still current ([`LOCK_CLAIMS_SQL`]):
/// each one's `ctid` by message id.
async fn lock_claims(
    tx: &deadpool_postgres::Transaction<'_>,
    outcomes: &[Outcome],
) -> Result<std::collections::HashMap<Uuid, String>, StorageError> {
    let ids: Vec<Uuid> = outcomes.iter().map(|o| uuid(o.id)).collect();
    let tokens: Vec<Uuid> = outcomes
        .iter()
        .map(|o| Uuid::from(o.claim_token.0))
        .collect();
    let statement = tx.prepare_cached(LOCK_CLAIMS_SQL).await?;
    tx.query(&statement, &[&ids, &tokens])
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

fn millis_i64(ms: Option<u64>) -> Option<i64> {
    ms.map(|d| i64::try_from(d).unwrap_or(i64::MAX))
}

/// Stores new messages. A message with an idempotency key is stored only
/// if it takes the key in `idempotency_keys`, and only while no live or
/// finished message holds the key: one an older version stored has no
/// row there (its key lives on the message alone, also once it finishes).
/// A key row without its message (retention deleted it) is taken over.
/// The first of several messages of one batch with the same key takes it.
///
/// A key younger than five minutes is never taken over: the look for its
/// message uses this statement's snapshot, which does not see a message
/// another enqueue of the same key committed while this one ran. Older
/// keys' messages are committed long since, and a snapshot sees a message
/// in exactly one of the two tables even while it moves.
static ENQUEUE_SQL: LazyLock<String> = LazyLock::new(|| enqueue_sql(KEY_GUARD));

/// [`ENQUEUE_SQL`] for a batch without idempotency keys: no row can meet
/// the unique index on keys, and without the guard PostgreSQL inserts
/// each row plainly instead of speculatively (one WAL record less per
/// message).
static ENQUEUE_UNKEYED_SQL: LazyLock<String> = LazyLock::new(|| enqueue_sql(""));

/// Stops a message taking a key that a live message stored before keys
/// were kept in their own table holds.
const KEY_GUARD: &str =
    "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING";

fn enqueue_sql(guard: &str) -> String {
    format!(
        "WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int2[], $6::text[],
                         $7::text[], $8::text[], $9::text[], $10::int4[], $11::timestamptz[],
                         $12::timestamptz[], $14::text[])
        WITH ORDINALITY AS t(id, channel, transport, category, priority, payload, metadata,
                             fingerprint, idempotency_key, max_attempts, available_at, effective_at,
                             recipients, ord)
), hits AS (
    SELECT i.id FROM input i
    CROSS JOIN LATERAL unnest(string_to_array(i.recipients, E'\\x1f')) AS r(address)
    JOIN suppressions s ON s.channel = i.channel AND s.address = r.address
                       AND s.scope IN ('', i.transport)
    WHERE (s.expires_at IS NULL OR s.expires_at > $13)
      -- Evaluated once: with no entry at all, no recipient is looked up.
      AND EXISTS (SELECT 1 FROM suppressions)
), keyed AS (
    INSERT INTO idempotency_keys AS k (key, message_id, created_at)
    SELECT DISTINCT ON (idempotency_key) idempotency_key, id, $13 FROM input i
    WHERE idempotency_key IS NOT NULL AND NOT EXISTS (SELECT 1 FROM hits)
      AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.idempotency_key = i.idempotency_key)
      AND NOT EXISTS (SELECT 1 FROM finished_messages f WHERE f.idempotency_key = i.idempotency_key)
    ORDER BY idempotency_key, ord
    ON CONFLICT (key) DO UPDATE SET message_id = excluded.message_id, created_at = excluded.created_at
    WHERE k.created_at < $13 - interval '5 minutes'
    RETURNING message_id
), inserted AS (
    INSERT INTO messages (id, channel, transport, category, status, priority, payload, metadata,
                          fingerprint, idempotency_key, recipients, attempts, max_attempts,
                          created_at, available_at, effective_at, updated_at)
    SELECT id, channel, transport, category, 'queued', priority, payload::json, metadata::json,
           fingerprint, idempotency_key, string_to_array(recipients, E'\\x1f'), 0, max_attempts,
           $13, available_at, effective_at, $13
    FROM input
    WHERE (idempotency_key IS NULL OR id IN (SELECT message_id FROM keyed))
      AND NOT EXISTS (SELECT 1 FROM hits)
    ORDER BY ord
    {guard}
    RETURNING id, transport
)
SELECT id, transport, false AS suppressed FROM inserted
UNION ALL
(SELECT id, NULL, true FROM hits LIMIT 1)"
    )
}

/// Claims due messages. It writes no event: the attempt's start is the
/// `updated_at` it stamps, which nothing else changes while the message
/// is processing (lease renewal, a restarted node's takeover of its claims
/// and the burial of dead nodes move only `lease_until`; cancel and replay
/// refuse a processing message), so the statements that end the claim
/// ([`outcomes_sql`], [`PASSED_OVER_SQL`], [`recover_sql`]) read it from
/// the row as the event's `started_at`.
///
/// The claimed rows are returned by name, never as `m.*`: a statement's
/// result type must not change when the live table is re-laid
/// ([`live::relay`]) under connections that prepared it.
static CLAIM_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "
WITH due AS (
    SELECT id FROM messages
    WHERE status = 'queued' AND transport = $1 AND available_at <= $2
    ORDER BY effective_at, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE messages m
    SET status = 'processing', attempts = m.attempts + 1, lease_until = $4, claim_token = $5,
        claimed_by = $6, updated_at = $2
    WHERE m.id = ANY(ARRAY(SELECT id FROM due))
    RETURNING {MESSAGE_COLUMNS}, effective_at
)
SELECT {MESSAGE_COLUMNS} FROM claimed ORDER BY effective_at, id"
    )
});

/// Applies a batch of outcomes. `current` keeps only rows whose claim
/// token still matches (fencing) and decides each next status by the
/// lifecycle table; a message that stays live is updated, one that ends
/// moves to `finished_messages` (`$11` files it under a day or apart, see
/// [`finished::bucket_sql`]); then the one or two events per message.
fn outcomes_sql(bucket: &str) -> String {
    let moves = move_sql(
        "current",
        "CASE WHEN mv.next_status = 'sent' THEN $9 ELSE mv.sent_at END",
        "CASE WHEN mv.next_status = 'sent' THEN NULL ELSE coalesce(mv.decided_error, mv.last_error) END",
        "$9",
    );
    let follow = follow_sql("current", "next_status");
    let facts = (
        "c0.outcome",
        "c0.retry_at IS NOT NULL",
        "c0.attempts",
        "c0.max_attempts",
    );
    let next_status = lifecycle::sql_status(facts.0, facts.1, facts.2, facts.3);
    let dead_reason = lifecycle::sql_dead_reason(facts.0, facts.1, facts.2, facts.3);
    let attempt_change = lifecycle::sql_attempt_change(facts.0, facts.1, facts.2, facts.3);
    format!(
        "
WITH current AS (
    SELECT c0.*, {next_status} AS next_status, {dead_reason} AS dead_reason,
           {attempt_change} AS attempt_change, {bucket} AS bucket
    FROM (SELECT m.id, m.tid, m.attempts, m.max_attempts, m.updated_at AS claimed_at, m.transport,
                 m.category, i.outcome, i.member, i.duration_ms, i.error, i.retry_at, i.detail
          FROM unnest($11::text[]::tid[], $1::uuid[], $2::uuid[], $3::text[], $4::text[],
                      $5::int8[], $6::text[], $7::timestamptz[], $8::jsonb[])
              AS i(tid, id, token, outcome, member, duration_ms, error, retry_at, detail)
          CROSS JOIN LATERAL (
              SELECT m.ctid AS tid, m.id, m.attempts, m.max_attempts, m.updated_at, m.transport,
                     m.category
              FROM messages m
              WHERE m.ctid = i.tid AND m.id = i.id AND m.claim_token = i.token) AS m) AS c0
), requeued AS (
    UPDATE messages m SET
        status = 'queued',
        attempts = m.attempts + c.attempt_change,
        available_at = coalesce(c.retry_at, m.available_at),
        effective_at = CASE WHEN c.retry_at IS NULL THEN m.effective_at
                            ELSE c.retry_at - m.priority * $10::float8 * interval '1 millisecond' END,
        last_error = coalesce(c.error, m.last_error),
        lease_until = NULL, claim_token = NULL, claimed_by = NULL, updated_at = $9
    FROM current c WHERE m.ctid = c.tid AND c.next_status = 'queued'
    RETURNING m.id, m.status
){moves}{follow}, events AS (
    INSERT INTO message_events (message_id, kind, at, attempt, transport, started_at, duration_ms,
                                error, detail, finished_on)
    SELECT c.id, e.kind, $9, e.attempt, c.member, e.started_at, e.duration_ms, e.error, e.detail,
           CASE WHEN c.next_status = 'queued' THEN DATE '{LIVE_DAY}' ELSE c.bucket END
    FROM current c CROSS JOIN LATERAL (VALUES
        (1,
         CASE c.outcome WHEN 'sent' THEN 'sent' WHEN 'failed' THEN 'attempt_failed' ELSE 'deferred' END,
         c.attempts + c.attempt_change,
         c.claimed_at,
         CASE WHEN c.outcome = 'released' THEN NULL ELSE c.duration_ms END,
         CASE WHEN c.outcome = 'failed' THEN c.error END,
         CASE WHEN c.outcome IN ('released', 'sent') THEN c.detail END),
        (2,
         CASE WHEN c.next_status = 'dead' THEN 'dead_lettered'
              WHEN c.outcome = 'failed' THEN 'retry_scheduled' END,
         c.attempts,
         NULL::timestamptz,
         c.duration_ms,
         CASE WHEN c.next_status = 'dead' THEN c.error END,
         CASE WHEN c.next_status = 'dead'
              THEN jsonb_build_object('reason', coalesce(c.detail->>'reason', c.dead_reason))
              ELSE c.detail END)
    ) AS e(seq, kind, attempt, started_at, duration_ms, error, detail)
    WHERE e.kind IS NOT NULL
    ORDER BY c.id, e.seq
)
SELECT id, status FROM requeued UNION ALL SELECT id, status FROM finished"
    )
}

/// Locks the rows of the claims in `$1` (ids) whose token `$2` is still
/// current, and returns each one's `ctid` (as text). The statements that
/// end the claims in the same transaction then find the rows by `ctid`
/// ([`outcomes_sql`], [`PASSED_OVER_SQL`]): a `ctid` is the one way to a
/// row whose plan does not depend on the live table's statistics. Those
/// are wrong whenever a backlog arrives on a table analysed while nearly
/// empty (a drained queue; autovacuum does it), and a join by `id` was
/// then planned as a scan of the whole table per row: outcome statements
/// of seconds. The lock holds the `ctid` still until the transaction
/// ends, and the statements after this one see the row's latest version.
///
/// The token alone fences: a claim's token is random and cleared when the
/// message is queued again, and a finished message leaves the table. A
/// test of `status` here would let the planner read the `processing`
/// rows' partial index whole instead of the primary key, the same trap.
const LOCK_CLAIMS_SQL: &str = "
SELECT m.id, m.ctid::text
FROM unnest($1::uuid[], $2::uuid[]) AS i(id, token)
CROSS JOIN LATERAL (
    SELECT m.id, m.ctid FROM messages m
    WHERE m.id = i.id AND m.claim_token = i.token
    FOR UPDATE
) AS m";

/// Locks up to `$2` claims whose lease ended before `$1`, oldest first,
/// passing over those another node is ending; `ctid`s for [`recover_sql`],
/// as in [`LOCK_CLAIMS_SQL`].
const LOCK_EXPIRED_SQL: &str = "
SELECT ctid::text FROM messages
WHERE status = 'processing' AND lease_until <= $1
ORDER BY lease_until LIMIT $2
FOR UPDATE SKIP LOCKED";

/// The `attempt_failed` events of group members passed over within an
/// attempt, for the claims [`LOCK_CLAIMS_SQL`] found current (`$9`, their
/// row's `ctid`), each with the attempt's start: the claim's `updated_at`
/// (see [`CLAIM_SQL`]).
const PASSED_OVER_SQL: &str = "
INSERT INTO message_events (message_id, kind, at, attempt, transport, started_at, duration_ms,
                            error, detail, finished_on)
SELECT f.id, 'attempt_failed', $8, h.attempts, f.member, h.updated_at, f.duration_ms, f.error,
       f.detail, DATE '0001-01-01'
FROM unnest($9::text[]::tid[], $1::uuid[], $2::uuid[], $3::text[], $4::int8[], $5::text[],
            $6::jsonb[], $7::int4[])
    AS f(tid, id, token, member, duration_ms, error, detail, seq)
CROSS JOIN LATERAL (
    SELECT m.attempts, m.updated_at FROM messages m
    WHERE m.ctid = f.tid AND m.id = f.id AND m.claim_token = f.token
) AS h
ORDER BY f.id, f.seq";

/// Ends expired leases by the lifecycle table: back to the queue, or,
/// on the final attempt, dead and moved to `finished_messages`.
fn recover_sql(bucket: &str) -> String {
    let moves = move_sql(
        "expired",
        "mv.sent_at",
        &format!("'{FINAL_LEASE_EXPIRED}'"),
        "$1",
    );
    let follow = follow_sql("expired", "next_status");
    let facts = ("'expired'", "false", "m.attempts", "m.max_attempts");
    let next_status = lifecycle::sql_status(facts.0, facts.1, facts.2, facts.3);
    let dead_reason = lifecycle::sql_dead_reason(facts.0, facts.1, facts.2, facts.3);
    format!(
        "
WITH expired AS (
    SELECT m.tid, m.id, m.attempts, m.transport, m.updated_at AS claimed_at, NULL::text AS error,
           {next_status} AS next_status, {dead_reason} AS dead_reason, {bucket} AS bucket
    FROM unnest($2::text[]::tid[]) AS i(tid)
    CROSS JOIN LATERAL (
        SELECT m.ctid AS tid, m.id, m.attempts, m.max_attempts, m.transport, m.category,
               m.updated_at
        FROM messages m
        WHERE m.ctid = i.tid) AS m
), requeued AS (
    UPDATE messages m SET status = 'queued', last_error = 'lease expired',
        lease_until = NULL, claim_token = NULL, claimed_by = NULL, updated_at = $1
    FROM expired e WHERE m.ctid = e.tid AND e.next_status = 'queued'
    RETURNING m.id
){moves}{follow}, events AS (
    INSERT INTO message_events (message_id, kind, at, attempt, transport, started_at, error, detail,
                                finished_on)
    SELECT e.id, v.kind, $1, e.attempts, e.transport, v.started_at, v.error, v.detail,
           CASE WHEN e.next_status = 'queued' THEN DATE '{LIVE_DAY}' ELSE e.bucket END
    FROM expired e CROSS JOIN LATERAL (VALUES
        (1, 'lease_expired', e.claimed_at, NULL::text, NULL::jsonb),
        (2, CASE WHEN e.next_status = 'dead' THEN 'dead_lettered' END, NULL::timestamptz,
         '{FINAL_LEASE_EXPIRED}', jsonb_build_object('reason', e.dead_reason))
    ) AS v(seq, kind, started_at, error, detail)
    WHERE v.kind IS NOT NULL
    ORDER BY e.id, v.seq
)
SELECT id FROM requeued UNION ALL SELECT id FROM finished"
    )
}

/// CTEs `moved` and `finished`: the messages in `decided` that finish
/// (`next_status` is not `queued`) leave `messages` for
/// `finished_messages`, under `decided.bucket`, with `sent_at`,
/// `last_error` and `updated_at` as given (over `mv`, the moved row with
/// its decision's `next_status`, `bucket` and `decided_error`).
///
/// `decided` carries each locked row's `tid` (its `ctid`): rows are found
/// by it and never by a join on `id`, whose plan follows the live table's
/// statistics, and those are wrong whenever a backlog arrives on a table
/// last analysed nearly empty (see [`LOCK_CLAIMS_SQL`]).
fn move_sql(decided: &str, sent_at: &str, last_error: &str, now: &str) -> String {
    format!(
        ", moved AS (
    DELETE FROM messages m USING {decided} d
    WHERE m.ctid = d.tid AND d.next_status <> 'queued'
    RETURNING m.*, d.next_status, d.bucket, d.error AS decided_error
), finished AS (
    INSERT INTO finished_messages ({FINISHED_INSERT})
    SELECT mv.id, mv.channel, mv.transport, mv.category, mv.next_status, mv.priority, mv.payload,
           mv.metadata, mv.fingerprint, mv.idempotency_key, mv.attempts, mv.max_attempts,
           mv.created_at, mv.available_at, {sent_at}, {last_error}, {now}, mv.bucket,
           mv.recipients
    FROM moved mv
    RETURNING id, status
)"
    )
}

/// CTEs that take the earlier events of the messages in `decided` that
/// finish (`next` is not `queued`) along to their `bucket`: those waiting
/// with the live messages (looked up per message, and updated by `ctid`,
/// for the reason in [`move_sql`]), and those written before events were
/// filed by finish day.
fn follow_sql(decided: &str, next: &str) -> String {
    format!(
        ", followed AS (
    UPDATE message_events e SET finished_on = f.bucket
    FROM (SELECT l.tid, d.bucket FROM {decided} d
          CROSS JOIN LATERAL (SELECT ctid AS tid FROM message_events_live
                              WHERE message_id = d.id) AS l
          WHERE d.{next} <> 'queued') AS f
    WHERE e.finished_on = DATE '{LIVE_DAY}' AND e.ctid = f.tid
), legacy AS (
    DELETE FROM message_events_legacy l USING {decided} d
    WHERE l.message_id = d.id AND d.{next} <> 'queued'
    RETURNING l.*, d.bucket
), relegated AS (
    INSERT INTO message_events ({EVENT_INSERT})
    SELECT {EVENT_INSERT_FROM_LEGACY} FROM legacy
)"
    )
}

/// The columns of a `message_events` row as a move writes them.
const EVENT_INSERT: &str = "id, message_id, kind, at, attempt, transport, started_at, duration_ms, error, detail, finished_on";
const EVENT_INSERT_FROM_LEGACY: &str =
    "id, message_id, kind, at, attempt, transport, started_at, duration_ms, error, detail, bucket";

/// `finished_on` of the events of live messages (`message_events_live`).
const LIVE_DAY: &str = finished::LIVE_DAY;

/// `last_error` of a message whose last attempt's lease expired.
const FINAL_LEASE_EXPIRED: &str = "lease expired on the final attempt";

/// The columns of a `finished_messages` row, in the order the moves
/// write them.
const FINISHED_INSERT: &str = "id, channel, transport, category, status, priority, payload, \
    metadata, fingerprint, idempotency_key, attempts, max_attempts, created_at, available_at, \
    sent_at, last_error, updated_at, finished_on, recipients";

/// Presumes nodes without a heartbeat since `$2` dead: deletes their rows
/// and ends their claims' leases now, for [`recover_sql`] to take over.
const BURY_NODES_SQL: &str = "
WITH dead AS (
    DELETE FROM nodes WHERE heartbeat_at < $2 RETURNING id
)
UPDATE messages SET lease_until = $1
WHERE status = 'processing' AND claimed_by IN (SELECT id FROM dead)";

/// The advisory-lock key of a node id, per schema: several Herald stores
/// in one database (a schema each) may reuse node ids.
const NODE_LOCK_KEY: &str = "hashtextextended(current_schema() || '/' || $1, 0)";

/// A session holding a node's advisory lock: the client, and the task
/// driving its connection (it ends when the session does).
type NodeSession = (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
);

/// Opens a session of its own and takes `node`'s advisory lock on it;
/// `None` while a live process holds the lock.
async fn lock_node(url: &str, node: &str) -> Result<Option<NodeSession>, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    let driver = tokio::spawn(connection);
    let row = client
        .query_one(
            &format!("SELECT pg_try_advisory_lock({NODE_LOCK_KEY})"),
            &[&node],
        )
        .await?;
    Ok(row.try_get::<_, bool>(0)?.then_some((client, driver)))
}

/// Keeps this node's lock held until `stop` (or the process dies, which
/// closes the session and frees the lock for a successor). A lost session
/// is replaced and the lock taken again.
async fn hold_node_lock(
    url: String,
    node: String,
    mut stop: oneshot::Receiver<()>,
    mut session: NodeSession,
) {
    loop {
        let (client, driver) = session;
        tokio::select! {
            // Dropping the client ends the session, which frees the lock.
            _ = &mut stop => return,
            ended = driver => {
                tracing::warn!(node = %node, cause = ?ended, "node lock session lost; taking the lock again");
            }
        }
        drop(client);
        session = loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            match lock_node(&url, &node).await {
                Ok(Some(session)) => break session,
                Ok(None) => tracing::error!(
                    node = %node,
                    "another running process took this node id; give each node its own [engine] node_id"
                ),
                Err(err) => tracing::debug!(cause = %err, "cannot take the node lock yet"),
            }
        };
    }
}

#[async_trait]
impl Storage for PostgresStorage {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn work_signal(&self) -> &WorkSignal {
        &self.signal
    }

    fn state_signal(&self) -> &WorkSignal {
        &self.state
    }

    fn enqueue_writers(&self) -> usize {
        self.enqueue_writers
    }

    async fn migrate(&self) -> Result<(), StorageError> {
        let mut client = self.client().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let client_ref: &mut tokio_postgres::Client = &mut client;
        let mut result = embedded::migrations::runner()
            .run_async(client_ref)
            .await
            .map(|_| ())
            .map_err(|e| StorageError::Migration(e.to_string()));
        if result.is_ok() {
            // A new store has nothing to move: its live table sheds the
            // history indexes at once.
            result = finished::finish_split(&mut client).await;
        }
        if result.is_ok() {
            // Never a long build here: a node's start would wait for it.
            result = partition_indexes::complete(&mut client, false)
                .await
                .map(|_| ());
        }
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
        result?;
        warn_without_autovacuum(&client).await;
        Ok(())
    }

    async fn probe_write(&self) -> Result<(), StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO transport_state (name, paused, updated_at) VALUES ($1, false, now())",
            &[&WRITE_PROBE],
        )
        .await?;
        tx.execute(
            "DELETE FROM transport_state WHERE name = $1",
            &[&WRITE_PROBE],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StorageError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    async fn enqueue_many(
        &self,
        messages: Vec<NewMessage>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Enqueued>, StorageError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        if let Some(stored) = self.insert_live(&client, &messages, now).await? {
            return Ok(stored);
        }
        drop(client);
        self.on_a_ready_day(now, || self.enqueue_suppressing(messages.clone(), now))
            .await
    }

    async fn claim_due(
        &self,
        transport: &str,
        node: &str,
        limit: usize,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Message>, StorageError> {
        let lease_until = now
            + chrono::Duration::from_std(lease)
                .map_err(|e| StorageError::Invalid(e.to_string()))?;
        let token = Uuid::from(ClaimToken::generate().0);
        let limit = clamp_limit(limit) as i64;
        let client = self.client().await?;
        let claim = client.prepare_cached(&CLAIM_SQL).await?;
        let rows = client
            .query(
                &claim,
                &[&transport, &now, &limit, &lease_until, &token, &node],
            )
            .await?;
        rows.iter().map(message_from_row).collect()
    }

    async fn renew_leases(
        &self,
        claims: &[(Stamp, ClaimToken)],
        lease_until: DateTime<Utc>,
    ) -> Result<usize, StorageError> {
        if claims.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = claims.iter().map(|(id, _)| uuid(*id)).collect();
        let tokens: Vec<Uuid> = claims.iter().map(|(_, t)| Uuid::from(t.0)).collect();
        let client = self.client().await?;
        let renew = client
            .prepare_cached(
                // Found by `ctid`, each claim looked up by its id: no
                // join whose plan would follow the live table's statistics
                // (see LOCK_CLAIMS_SQL). A row changed meanwhile (its
                // outcome recorded, its node buried) is left as it is.
                "UPDATE messages SET lease_until = $3
                 WHERE ctid = ANY(ARRAY(
                     SELECT m.ctid FROM unnest($1::uuid[], $2::uuid[]) AS c(id, token)
                     CROSS JOIN LATERAL (SELECT ctid FROM messages
                                         WHERE id = c.id AND claim_token = c.token) AS m))",
            )
            .await?;
        let renewed = client
            .execute(&renew, &[&ids, &tokens, &lease_until])
            .await?;
        Ok(renewed as usize)
    }

    async fn record_outcomes(
        &self,
        outcomes: Vec<Outcome>,
        now: DateTime<Utc>,
    ) -> Result<Recorded, StorageError> {
        self.on_a_ready_day(now, || self.record_outcomes_once(&outcomes, now))
            .await
    }

    async fn rollup_totals(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MinuteMetrics>, StorageError> {
        let client = self.client().await?;
        let spans = RollupSpans::coarse(from, to, read_seal(&client).await?);
        let rows = metric_rows(&client, &rollup_totals_sql(dollar), &spans).await?;
        Ok(rows
            .into_iter()
            .map(|m| MinuteMetrics { minute: from, ..m })
            .collect())
    }

    async fn add_rollups(&self, rows: Vec<MinuteMetrics>) -> Result<(), StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        add_rollups(&tx, &rows).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn recover_expired(
        &self,
        now: DateTime<Utc>,
        dead_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Stamp>, StorageError> {
        self.on_a_ready_day(now, || self.recover_expired_once(now, dead_before, limit))
            .await
    }

    async fn cancel(&self, id: Stamp, now: DateTime<Utc>) -> Result<Message, StorageError> {
        self.on_a_ready_day(now, || self.cancel_once(id, now)).await
    }

    async fn replay(&self, id: Stamp, now: DateTime<Utc>) -> Result<Message, StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let replayed = replay_one(&tx, id, now, self.aging_ms).await;
        finish(tx, replayed).await
    }

    async fn replay_dead(
        &self,
        filter: &MessageFilter,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<Stamp>, StorageError> {
        let limit = clamp_limit(limit);
        let dead = Listing::new(&filter.dead_letters(), None);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Dead letters stored before the tables were split, not yet
        // moved, come from the live table.
        let mut rows: Vec<(DateTime<Utc>, Uuid)> = Vec::new();
        for (table, where_) in [
            ("finished_messages", &dead.finished_where),
            ("messages", &dead.live_where),
        ] {
            let found = tx
                .query(
                    &format!(
                        "SELECT id, updated_at FROM {table} {where_}
                         ORDER BY updated_at, id LIMIT {limit} FOR UPDATE SKIP LOCKED"
                    ),
                    &dead.values(),
                )
                .await?;
            for row in &found {
                rows.push((row.try_get(1)?, row.try_get(0)?));
            }
        }
        rows.sort();
        // A row caught mid-move would be read from both tables.
        let mut seen = std::collections::HashSet::new();
        rows.retain(|(_, id)| seen.insert(*id));
        rows.truncate(limit);
        let mut ids = Vec::with_capacity(rows.len());
        for (_, id) in rows {
            let id = stamp(id);
            replay_one(&tx, id, now, self.aging_ms).await?;
            ids.push(id);
        }
        tx.commit().await?;
        Ok(ids)
    }

    async fn set_paused(
        &self,
        transport: &str,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<TransportState, StorageError> {
        let client = self.client().await?;
        // The notify is part of the statement's transaction: other nodes
        // hear of the change exactly when it is committed.
        client
            .execute(
                "WITH saved AS (
                     INSERT INTO transport_state (name, paused, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at
                     RETURNING name)
                 SELECT pg_notify('herald_state', name) FROM saved",
                &[&transport, &paused, &now],
            )
            .await?;
        self.state.notify([transport]);
        Ok(TransportState {
            name: transport.to_owned(),
            paused,
            updated_at: now,
        })
    }

    async fn hold_transport(
        &self,
        transport: &str,
        node: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        dead_before: DateTime<Utc>,
    ) -> Result<bool, StorageError> {
        let client = self.client().await?;
        let hold = client
            .prepare_cached(
                "INSERT INTO transport_state (name, paused, updated_at, holder, held_until)
                 VALUES ($1, false, $3, $2, $4)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, held_until = excluded.held_until
                 WHERE transport_state.holder IS NULL OR transport_state.holder = excluded.holder
                    OR transport_state.held_until < $3
                    OR NOT EXISTS (SELECT 1 FROM nodes
                                   WHERE nodes.id = transport_state.holder AND nodes.heartbeat_at >= $5)
                 RETURNING holder",
            )
            .await?;
        let held = client
            .query_opt(&hold, &[&transport, &node, &now, &until, &dead_before])
            .await?;
        Ok(held.is_some())
    }

    async fn register_node(&self, node: &NodeInfo, now: DateTime<Utc>) -> Result<(), StorageError> {
        let session = lock_node(&self.url, &node.id).await?.ok_or_else(|| {
            StorageError::Config(format!(
                "node id `{}` is in use by another running Herald process on this database; give each node its own [engine] node_id",
                node.id
            ))
        })?;
        let client = self.client().await?;
        let taken_over = client
            .execute(
                "WITH predecessor AS (DELETE FROM nodes WHERE id = $1)
                 UPDATE messages SET lease_until = $2 WHERE status = 'processing' AND claimed_by = $1",
                &[&node.id, &now],
            )
            .await?;
        upsert_node(&client, node, now).await?;
        if taken_over > 0 {
            tracing::warn!(node = %node.id, claims = taken_over, "taking over the claims this node held before it restarted");
        }
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(hold_node_lock(
            self.url.clone(),
            node.id.clone(),
            stopped,
            session,
        ));
        let mut lock = self.node_lock.lock().unwrap_or_else(|p| p.into_inner());
        *lock = Some(stop);
        Ok(())
    }

    async fn heartbeat(&self, node: &NodeInfo, now: DateTime<Utc>) -> Result<(), StorageError> {
        let client = self.client().await?;
        upsert_node(&client, node, now).await?;
        self.statistics.tend(self.pool.clone());
        Ok(())
    }

    async fn deregister_node(&self, node: &str, now: DateTime<Utc>) -> Result<(), StorageError> {
        let client = self.client().await?;
        let gone = client
            .execute(
                "WITH gone AS (DELETE FROM nodes WHERE id = $1)
                 UPDATE messages SET lease_until = $2 WHERE status = 'processing' AND claimed_by = $1",
                &[&node, &now],
            )
            .await;
        // The lock goes whatever happened to the row: this process is leaving.
        let stop = self
            .node_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        gone?;
        Ok(())
    }

    async fn release_transport(&self, transport: &str, node: &str) -> Result<(), StorageError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE transport_state SET holder = NULL, held_until = NULL WHERE name = $1 AND holder = $2",
                &[&transport, &node],
            )
            .await?;
        Ok(())
    }

    async fn transport_states(&self) -> Result<Vec<TransportState>, StorageError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name, paused, updated_at FROM transport_state ORDER BY name",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(TransportState {
                    name: row.try_get(0)?,
                    paused: row.try_get(1)?,
                    updated_at: row.try_get(2)?,
                })
            })
            .collect()
    }

    async fn find_by_provider_id(
        &self,
        transport: &str,
        provider_message_id: &str,
    ) -> Result<Option<Stamp>, StorageError> {
        let client = self.client().await?;
        // The predicate repeats the index's own, which is what lets the
        // planner use it.
        let row = client
            .query_opt(
                "SELECT message_id FROM message_events
                 WHERE transport = $1 AND kind = 'sent' AND detail ? 'provider_message_id'
                   AND detail ->> 'provider_message_id' = $2
                 ORDER BY id DESC LIMIT 1",
                &[&transport, &provider_message_id],
            )
            .await?;
        row.map(|row| row.try_get(0).map(stamp))
            .transpose()
            .map_err(StorageError::from)
    }

    async fn get_message(&self, id: Stamp) -> Result<Option<MessageWithEvents>, StorageError> {
        let mut client = self.client().await?;
        // REPEATABLE READ: the events match the message row.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let select = tx
            .prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS}, DATE '{LIVE_DAY}' AS finished_on FROM messages
                 WHERE id = $1"
            ))
            .await?;
        // A message finishes on or after the day its id was minted (less
        // one, for clocks of several nodes apart): the days before, which
        // hold most of what retention keeps, are pruned. Ids minted by
        // another clock than the one that finished the message (an
        // import, a test's simulated time) are found by the look in every
        // day that follows a miss.
        let finished = tx
            .prepare_cached(&format!(
                "SELECT {FINISHED_COLUMNS}, finished_on FROM finished_messages
                 WHERE id = $1 AND finished_on >= $2"
            ))
            .await?;
        let everywhere = tx
            .prepare_cached(&format!(
                "SELECT {FINISHED_COLUMNS}, finished_on FROM finished_messages WHERE id = $1"
            ))
            .await?;
        let minted = finished::day_of(DateTime::<Utc>::from(id.0.datetime()));
        let earliest = minted.pred_opt().unwrap_or(minted);
        let mut row = tx.query_opt(&select, &[&uuid(id)]).await?;
        if row.is_none() {
            row = tx.query_opt(&finished, &[&uuid(id), &earliest]).await?;
        }
        if row.is_none() {
            row = tx.query_opt(&everywhere, &[&uuid(id)]).await?;
        }
        let Some(row) = row else {
            // Close the read transaction now: dropped, its ROLLBACK would
            // only be queued, keeping the connection in a transaction.
            tx.rollback().await?;
            return Ok(None);
        };
        let message = message_from_row(&row)?;
        // A message's events are filed with it: under its finish day, or
        // with the live messages' (see follow_sql), so one partition holds
        // them, besides those written before events were filed by day.
        let bucket: chrono::NaiveDate = row.try_get("finished_on")?;
        let events = tx
            .prepare_cached(
                "SELECT id, kind, at, attempt, transport, started_at, duration_ms, error, detail
                 FROM message_events WHERE message_id = $1 AND finished_on = $2
                 UNION ALL
                 SELECT id, kind, at, attempt, transport, started_at, duration_ms, error, detail
                 FROM message_events_legacy WHERE message_id = $1
                 ORDER BY id",
            )
            .await?;
        let events = tx
            .query(&events, &[&uuid(id), &bucket])
            .await?
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await?;
        let events = with_queued_event(&message, events);
        Ok(Some(MessageWithEvents { message, events }))
    }

    async fn record_feedback(
        &self,
        batch: FeedbackBatch,
        now: DateTime<Utc>,
    ) -> Result<FeedbackRecorded, StorageError> {
        self.record_feedback_batch(batch, now).await
    }

    async fn rematch_feedback(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<FeedbackRecorded, StorageError> {
        self.rematch(now, limit).await
    }

    async fn list_suppressions(
        &self,
        filter: &SuppressionFilter,
        after: Option<SuppressionCursor>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<Suppression>, StorageError> {
        self.suppressions(filter, after, limit, now).await
    }

    async fn add_suppression(&self, entry: Suppression) -> Result<(), StorageError> {
        self.put_suppression(entry).await
    }

    async fn remove_suppression(
        &self,
        channel: Channel,
        address: &str,
    ) -> Result<u64, StorageError> {
        self.delete_suppression(channel, address).await
    }

    async fn list_messages(
        &self,
        filter: &MessageFilter,
        page: PageRequest,
    ) -> Result<Page, StorageError> {
        let limit = clamp_limit(page.limit);
        let listing = Listing::new(filter, page.after);
        let Listing {
            live_where,
            finished_where,
            ..
        } = &listing;
        let client = self.client().await?;
        let few_in_time = match time_range_of(filter) {
            None => false,
            Some(range) => {
                let range = Listing::new(&range, None);
                let counted: i64 = client
                    .query_one(&few_sql(&range.finished_where), &range.values())
                    .await?
                    .try_get(0)?;
                counted.max(0) as u64 <= FEW_IN_TIME_RANGE
            }
        };
        // A recipient's messages are few: found through the GIN index,
        // then sorted. The statement is prepared once, and PostgreSQL's
        // generic plan for it (the address unknown) walked the primary
        // key newest first, filtering every row until a page was full:
        // all 1,000,000 rows for an address with a handful of messages
        // (BENCHMARKS.md, "Delivery feedback"). Materialised, the matches
        // are planned for in full, which only the index serves.
        // So are a time range's few matches, read by creation time
        // ([`FEW_IN_TIME_RANGE`]), and a fingerprint's or an idempotency
        // key's, by their own indexes: the console's bench found the
        // generic plan walking every finished row for those too (0.5-0.9 s
        // over 1,000,000).
        let by_own_index = filter.recipient.is_some()
            || filter.fingerprint.is_some()
            || filter.idempotency_key.is_some();
        let finished = if by_own_index || few_in_time {
            format!(
                "WITH hits AS MATERIALIZED (SELECT {FINISHED_COLUMNS} FROM finished_messages \
                 {finished_where}) SELECT * FROM hits"
            )
        } else {
            format!("SELECT {FINISHED_COLUMNS} FROM finished_messages {finished_where}")
        };
        // Newest first across both tables: each gives its own newest,
        // then they are merged.
        let sql = format!(
            "(SELECT {LIVE_COLUMNS} FROM messages {live_where} ORDER BY id DESC LIMIT {n})
             UNION ALL
             ({finished} ORDER BY id DESC LIMIT {n})
             ORDER BY id DESC LIMIT {n}",
            n = limit + 1
        );
        // Whether a time range is best read by `created_at` or walked
        // newest first by id depends on how many it holds, which only the
        // bounds tell: such a listing is planned afresh for them, as a
        // cached statement's generic plan would not be.
        let statement = if filter.since.is_some() || filter.until.is_some() {
            client.prepare(&sql).await?
        } else {
            client.prepare_cached(&sql).await?
        };
        let rows = client.query(&statement, &listing.values()).await?;
        let mut items = rows
            .iter()
            .map(message_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|m| m.id)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn count_messages(&self, filter: &MessageFilter) -> Result<MessageCount, StorageError> {
        let listing = Listing::new(filter, None);
        let matches = format!(
            "SELECT 1 FROM messages {} UNION ALL SELECT 1 FROM finished_messages {}",
            listing.live_where, listing.finished_where
        );
        let cap = EXACT_COUNT_LIMIT + 1;
        let client = self.client().await?;
        // Prepared afresh, so both statements are planned for the values
        // bound (see `list_messages`).
        let counted: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM ({matches} LIMIT {cap}) AS capped"),
                &listing.values(),
            )
            .await?
            .try_get(0)?;
        let counted = counted.max(0) as u64;
        if counted <= EXACT_COUNT_LIMIT {
            return Ok(MessageCount {
                count: counted,
                estimated: false,
            });
        }
        let plan: serde_json::Value = client
            .query_one(
                &format!("EXPLAIN (FORMAT JSON) {matches}"),
                &listing.values(),
            )
            .await?
            .try_get(0)?;
        let planned = plan[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0);
        Ok(MessageCount {
            // More than the cap were counted, whatever the planner thinks.
            count: (planned.round() as u64).max(cap),
            estimated: true,
        })
    }

    async fn dead_letter_groups(
        &self,
        filter: &MessageFilter,
    ) -> Result<Vec<DeadLetterGroup>, StorageError> {
        let dead = Listing::new(&filter.dead_letters(), None);
        let columns = format!(
            "transport, {} AS class, updated_at, last_error",
            error_class_sql()
        );
        let sql = format!(
            "SELECT transport, class, count(*), min(updated_at), max(updated_at), max(last_error)
             FROM (SELECT {columns} FROM finished_messages {finished}
                   UNION ALL
                   SELECT {columns} FROM messages {live}) AS dead
             GROUP BY transport, class ORDER BY 3 DESC, 1, 2",
            finished = dead.finished_where,
            live = dead.live_where,
        );
        let client = self.client().await?;
        let rows = client.query(&sql, &dead.values()).await?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetterGroup {
                    transport: row.try_get(0)?,
                    error_class: row.try_get(1)?,
                    count: row.try_get::<_, i64>(2)?.max(0) as u64,
                    oldest: row.try_get(3)?,
                    newest: row.try_get(4)?,
                    sample_error: row.try_get(5)?,
                })
            })
            .collect()
    }

    async fn expire_finished(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Expired, StorageError> {
        let mut client = self.client().await?;
        // The days ahead are made ready here, from the maintenance loop;
        // a day that still meets none gets its partition on demand.
        finished::ensure_partitions(&mut client, finished::day_of(now)).await?;
        finished::expire(&client, &self.retention, now, clamp_limit(limit) as i64).await
    }

    async fn move_finished(&self, limit: usize) -> Result<u64, StorageError> {
        let mut client = self.client().await?;
        let statement = client.prepare_cached(finished::MOVE_FINISHED_SQL).await?;
        let row = client
            .query_one(&statement, &[&(clamp_limit(limit) as i64)])
            .await?;
        let moved = row.try_get::<_, i64>(0)?.max(0) as u64;
        if moved == 0 {
            finished::finish_split(&mut client).await?;
            partition_indexes::complete(&mut client, true).await?;
        }
        Ok(moved)
    }

    async fn failure_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<FailureCount>, StorageError> {
        let client = self.client().await?;
        let spans = RollupSpans::coarse(from, to, read_seal(&client).await?);
        let statement = client.prepare_cached(&failure_totals_sql(dollar)).await?;
        let rows = client.query(&statement, &params(&spans.bounds())).await?;
        rows.iter()
            .map(|row| {
                Ok(FailureCount {
                    minute: from,
                    transport: row.try_get(0)?,
                    channel: row.try_get(1)?,
                    category: row.try_get(2)?,
                    class: row.try_get(3)?,
                    error: row.try_get(4)?,
                    failures: row.try_get::<_, i64>(5)?.max(0) as u64,
                })
            })
            .collect()
    }

    async fn bounce_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<BounceCount>, StorageError> {
        let client = self.client().await?;
        let spans = RollupSpans::coarse(from, to, read_seal(&client).await?);
        let statement = client.prepare_cached(&bounce_totals_sql(dollar)).await?;
        let rows = client.query(&statement, &params(&spans.bounds())).await?;
        rows.iter()
            .map(|row| {
                Ok(BounceCount {
                    minute: from,
                    transport: row.try_get(0)?,
                    channel: row.try_get(1)?,
                    category: row.try_get(2)?,
                    bounce_type: row.try_get(3)?,
                    reason: row.try_get(4)?,
                    domain: row.try_get(5)?,
                    bounces: row.try_get::<_, i64>(6)?.max(0) as u64,
                })
            })
            .collect()
    }

    async fn compact_rollups(
        &self,
        seal_before: DateTime<Utc>,
        compact_before: DateTime<Utc>,
        purge_before: DateTime<Utc>,
    ) -> Result<(u64, u64), StorageError> {
        // The hour in UTC whatever the session's time zone.
        const HOUR: &str = "date_bin('1 hour', minute, TIMESTAMPTZ '2000-01-01 00:00:00+00')";
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The row lock makes concurrent compactions on several nodes take
        // turns, each planning from the seal the previous one left.
        let row = tx
            .query_one(&format!("{READ_SEAL_SQL} FOR UPDATE"), &[])
            .await?;
        let seal = RollupSeal {
            sealed_until: row.try_get(0)?,
            minutes_from: row.try_get(1)?,
        };
        let plan = CompactionPlan::new(seal, seal_before, compact_before, purge_before);
        let families = compaction_sql(HOUR, dollar);
        if let Some((from, to)) = plan.seal {
            for family in &families {
                tx.execute(&family.clear_hours, &[&from, &to]).await?;
                tx.execute(&family.seal_hours, &[&from, &to]).await?;
            }
        }
        let mut merged = 0;
        let mut purged = 0;
        for family in &families {
            merged += tx
                .execute(&family.delete_minutes, &[&plan.delete_minutes_before])
                .await?;
            purged += tx
                .execute(&family.purge_hours, &[&plan.purge_before])
                .await?;
        }
        tx.execute(
            &write_seal_sql(dollar),
            &[&plan.after.sealed_until, &plan.after.minutes_from],
        )
        .await?;
        tx.commit().await?;
        Ok((merged, purged))
    }

    async fn dead_letter_summary(&self) -> Result<Vec<DeadLetterSummary>, StorageError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT transport, channel, coalesce(category, ''), count(*), min(updated_at)
                 FROM (SELECT transport, channel, category, updated_at FROM finished_messages
                       WHERE status = 'dead'
                       UNION ALL
                       SELECT transport, channel, category, updated_at FROM messages
                       WHERE status = 'dead') AS dead
                 GROUP BY transport, channel, category ORDER BY 1, 2, 3",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetterSummary {
                    transport: row.try_get(0)?,
                    channel: row
                        .try_get::<_, String>(1)?
                        .parse()
                        .map_err(|e| corrupt("channel", e))?,
                    category: row.try_get(2)?,
                    count: row.try_get::<_, i64>(3)?.max(0) as u64,
                    oldest: row.try_get(4)?,
                })
            })
            .collect()
    }

    async fn minute_metrics(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MinuteMetrics>, StorageError> {
        let client = self.client().await?;
        let spans = RollupSpans::fine(from, to, read_seal(&client).await?);
        metric_rows(&client, &rollup_rows_sql(dollar), &spans).await
    }

    async fn series_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        hourly: bool,
        scope: &Scope,
    ) -> Result<Vec<SeriesCounts>, StorageError> {
        let client = self.client().await?;
        let spans = RollupSpans::new(from, to, read_seal(&client).await?, hourly);
        let statement = client
            .prepare_cached(&series_sql(|i| match i {
                7..=9 => format!("${i}::text"),
                _ => dollar(i),
            }))
            .await?;
        let bounds = spans.bounds();
        let mut values = params(&bounds);
        values.extend(
            [&scope.transport, &scope.channel, &scope.category].map(|v| v as &(dyn ToSql + Sync)),
        );
        let rows = client.query(&statement, &values).await?;
        let count = |row: &Row, i: usize| -> Result<u64, StorageError> {
            Ok(row.try_get::<_, i64>(i)?.max(0) as u64)
        };
        rows.iter()
            .map(|row| {
                let counts = (1..=SeriesCounts::columns().count())
                    .map(|i| count(row, i))
                    .collect::<Result<Vec<u64>, StorageError>>()?;
                Ok(SeriesCounts::from_counts(row.try_get(0)?, &counts))
            })
            .collect()
    }

    async fn open_alert(
        &self,
        alert: NewAlert,
        quiet_since: DateTime<Utc>,
    ) -> Result<Option<Alert>, StorageError> {
        let client = self.client().await?;
        let window_s = alert.window_s.map(|w| i32::try_from(w).unwrap_or(i32::MAX));
        let row = client
            .query_opt(
                &format!(
                    "INSERT INTO alerts (id, rule, kind, transport, state, threshold, window_s, fired_value,
                         last_value, fired_at, checked_at, notified)
                     SELECT $1, $2, $3, $4, 'active', $5, $6, $7, $7, $8, $8,
                         NOT EXISTS (SELECT 1 FROM alerts WHERE rule = $2 AND transport = $4
                                     AND notified AND fired_at >= $9)
                     ON CONFLICT DO NOTHING
                     RETURNING {ALERT_COLUMNS}"
                ),
                &[
                    &Uuid::from(alert.id),
                    &alert.rule,
                    &alert.kind,
                    &alert.transport,
                    &alert.threshold,
                    &window_s,
                    &alert.value,
                    &alert.fired_at,
                    &quiet_since,
                ],
            )
            .await?;
        row.as_ref().map(alert_from_row).transpose()
    }

    async fn check_alert(
        &self,
        id: Ulid,
        value: f64,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE alerts SET last_value = $2, checked_at = $3 WHERE id = $1 AND state = 'active'",
                &[&Uuid::from(id), &value, &now],
            )
            .await?;
        Ok(())
    }

    async fn set_alert_paused(&self, id: Ulid, now: DateTime<Utc>) -> Result<(), StorageError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE alerts SET paused_at = $2 WHERE id = $1 AND paused_at IS NULL",
                &[&Uuid::from(id), &now],
            )
            .await?;
        Ok(())
    }

    async fn resolve_alert(
        &self,
        id: Ulid,
        value: f64,
        now: DateTime<Utc>,
    ) -> Result<Option<Alert>, StorageError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE alerts SET state = 'resolved', last_value = $2, checked_at = $3, resolved_at = $3
                     WHERE id = $1 AND state = 'active' RETURNING {ALERT_COLUMNS}"
                ),
                &[&Uuid::from(id), &value, &now],
            )
            .await?;
        row.as_ref().map(alert_from_row).transpose()
    }

    async fn set_alert_notice(
        &self,
        id: Ulid,
        notice: AlertNotice,
        message: Stamp,
    ) -> Result<(), StorageError> {
        let column = match notice {
            AlertNotice::Fired => "fired_message_id",
            AlertNotice::Resolved => "resolved_message_id",
        };
        let client = self.client().await?;
        client
            .execute(
                &format!("UPDATE alerts SET {column} = $2 WHERE id = $1"),
                &[&Uuid::from(id), &uuid(message)],
            )
            .await?;
        Ok(())
    }

    async fn alerts_awaiting_notice(&self) -> Result<Vec<Alert>, StorageError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {ALERT_COLUMNS} FROM alerts
                     WHERE notified AND (fired_message_id IS NULL
                                         OR (state = 'resolved' AND resolved_message_id IS NULL))
                     ORDER BY id"
                ),
                &[],
            )
            .await?;
        rows.iter().map(alert_from_row).collect()
    }

    async fn list_alerts(
        &self,
        state: Option<AlertState>,
        limit: usize,
    ) -> Result<Vec<Alert>, StorageError> {
        let client = self.client().await?;
        let limit = clamp_limit(limit) as i64;
        let state = state.map(AlertState::as_str);
        let rows = client
            .query(
                &format!(
                    "SELECT {ALERT_COLUMNS} FROM alerts WHERE ($1::text IS NULL OR state = $1)
                     ORDER BY id DESC LIMIT $2"
                ),
                &[&state, &limit],
            )
            .await?;
        rows.iter().map(alert_from_row).collect()
    }

    async fn create_replay_job(&self, job: &ReplayJob) -> Result<(), StorageError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO replay_jobs (id, state, transport, channel, category, error_class,
                     total, replayed, owner, created_at, updated_at, finished_at, error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                &[
                    &Uuid::from(job.id.0),
                    &job.state.as_str(),
                    &job.transport,
                    &job.channel.map(|c| c.as_str()),
                    &job.category,
                    &job.error_class,
                    &(job.total.min(i64::MAX as u64) as i64),
                    &(job.replayed.min(i64::MAX as u64) as i64),
                    &job.owner,
                    &job.created_at,
                    &job.updated_at,
                    &job.finished_at,
                    &job.error,
                ],
            )
            .await?;
        Ok(())
    }

    async fn replay_job(&self, id: Stamp) -> Result<Option<ReplayJob>, StorageError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {REPLAY_JOB_COLUMNS} FROM replay_jobs WHERE id = $1"),
                &[&Uuid::from(id.0)],
            )
            .await?;
        row.as_ref().map(replay_job_from_row).transpose()
    }

    async fn list_replay_jobs(&self, limit: usize) -> Result<Vec<ReplayJob>, StorageError> {
        let client = self.client().await?;
        let limit = clamp_limit(limit) as i64;
        let rows = client
            .query(
                &format!("SELECT {REPLAY_JOB_COLUMNS} FROM replay_jobs ORDER BY id DESC LIMIT $1"),
                &[&limit],
            )
            .await?;
        rows.iter().map(replay_job_from_row).collect()
    }

    async fn take_replay_job(
        &self,
        node: &str,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<Option<ReplayJob>, StorageError> {
        let client = self.client().await?;
        // The outer WHERE repeats the condition: should another node take
        // the row between the subquery and the update, the update re-reads
        // it, finds it fresh and no longer takeable, and takes nothing.
        let row = client
            .query_opt(
                &format!(
                    "UPDATE replay_jobs SET owner = $1, updated_at = $2
                     WHERE state = 'running' AND (owner IS NULL OR owner = $1 OR updated_at < $3)
                       AND id = (SELECT id FROM replay_jobs
                                 WHERE state = 'running'
                                   AND (owner IS NULL OR owner = $1 OR updated_at < $3)
                                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING {REPLAY_JOB_COLUMNS}"
                ),
                &[&node, &now, &stale_before],
            )
            .await?;
        row.as_ref().map(replay_job_from_row).transpose()
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
        let client = self.client().await?;
        let finished_at = (state != ReplayJobState::Running).then_some(now);
        let changed = client
            .execute(
                "UPDATE replay_jobs SET replayed = replayed + $3, state = $4, error = $5,
                     updated_at = $6, finished_at = $7
                 WHERE id = $1 AND owner = $2 AND state = 'running'",
                &[
                    &Uuid::from(id.0),
                    &node,
                    &(replayed.min(i64::MAX as u64) as i64),
                    &state.as_str(),
                    &error,
                    &now,
                    &finished_at,
                ],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn queue_depth(&self) -> Result<Vec<DepthRow>, StorageError> {
        let client = self.client().await?;
        let rows = client
            .query(
                // One scan per status, so that each reads only its own
                // partial index (index-only: the grouped columns are in it).
                "SELECT transport, priority, channel, category,
                        CAST(sum(queued) AS BIGINT), CAST(sum(processing) AS BIGINT), min(oldest)
                 FROM (
                     SELECT transport, priority, channel, coalesce(category, '') AS category,
                            count(*) AS queued, 0::int8 AS processing, min(available_at) AS oldest
                     FROM messages WHERE status = 'queued'
                     GROUP BY transport, priority, channel, category
                     UNION ALL
                     SELECT transport, priority, channel, coalesce(category, ''),
                            0, count(*), NULL::timestamptz
                     FROM messages WHERE status = 'processing'
                     GROUP BY transport, priority, channel, category
                 ) AS live
                 GROUP BY transport, priority, channel, category
                 ORDER BY 1, 2 DESC, 3, 4",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let priority: i16 = row.try_get(1)?;
                Ok(DepthRow {
                    transport: row.try_get(0)?,
                    priority: Priority::new(priority.into())
                        .ok_or_else(|| corrupt("priority", priority))?,
                    channel: row
                        .try_get::<_, String>(2)?
                        .parse()
                        .map_err(|e| corrupt("channel", e))?,
                    category: row.try_get(3)?,
                    queued: row.try_get::<_, i64>(4)?.max(0) as u64,
                    processing: row.try_get::<_, i64>(5)?.max(0) as u64,
                    oldest_available: row.try_get(6)?,
                })
            })
            .collect()
    }
}

/// A queue table churns: every message is inserted and updated twice, so
/// without vacuum its dead tuples pile up and claims walk past them
/// (seen here: a store filled on a server with autovacuum off claimed
/// several times slower after a few hundred thousand messages). Herald
/// does not vacuum by itself; it says so once at start-up.
/// Writes a node's row, keeping its `started_at` when it is already there.
async fn upsert_node(
    client: &deadpool_postgres::Object,
    node: &NodeInfo,
    now: DateTime<Utc>,
) -> Result<(), StorageError> {
    let upsert = client
        .prepare_cached(
            "INSERT INTO nodes (id, started_at, heartbeat_at, version, address) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,
                 version = excluded.version, address = excluded.address",
        )
        .await?;
    client
        .execute(
            &upsert,
            &[
                &node.id,
                &node.started_at,
                &now,
                &node.version,
                &node.address,
            ],
        )
        .await?;
    Ok(())
}

async fn warn_without_autovacuum(client: &deadpool_postgres::Object) {
    match client
        .query_one("SELECT current_setting('autovacuum') = 'on'", &[])
        .await
        .and_then(|row| row.try_get::<_, bool>(0))
    {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "PostgreSQL runs with autovacuum off: the messages and message_events tables will \
             bloat and claims slow down; turn autovacuum on or VACUUM ANALYZE them regularly"
        ),
        Err(err) => tracing::debug!(cause = %err, "could not read the autovacuum setting"),
    }
}

/// Keeps the planner's picture of the live table current. That table is
/// often empty or nearly (a drained queue); analysed then, a backlog that
/// arrives next is planned as if absent (seen here: outcome statements
/// walking every processing row per outcome, 346 messages/s instead of
/// 10,000), until something analyses it again: autovacuum within about a
/// minute when it runs, never when it is off. So each heartbeat looks at
/// how much the table changed since its last analysis and, past a tenth of
/// its size, analyses it (at most every [`ANALYZE_EVERY`], at once when it
/// grew past five times what the planner believes).
#[derive(Clone, Default)]
struct Statistics {
    running: Arc<std::sync::atomic::AtomicBool>,
    last: Arc<Mutex<Option<std::time::Instant>>>,
}

/// The shortest time between two analyses of a steadily changing table.
const ANALYZE_EVERY: Duration = Duration::from_secs(10);

impl Statistics {
    /// Checks, and analyses if needed, in the background; never two at once.
    fn tend(&self, pool: Pool) {
        use std::sync::atomic::Ordering;
        if self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(err) = this.check(&pool).await {
                tracing::debug!(cause = %err, "could not refresh the live table's statistics");
            }
            this.running.store(false, Ordering::Release);
        });
    }

    async fn check(&self, pool: &Pool) -> Result<(), StorageError> {
        let client = pool
            .get()
            .await
            .map_err(|e| StorageError::Unavailable(e.to_string()))?;
        let row = client
            .query_one(
                "SELECT s.n_mod_since_analyze::float8, greatest(c.reltuples, 0)::float8
                 FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
                 WHERE s.relid = 'messages'::regclass",
                &[],
            )
            .await?;
        let (changed, believed): (f64, f64) = (row.try_get(0)?, row.try_get(1)?);
        if changed < 1000.0 + 0.1 * believed {
            return Ok(());
        }
        let due = {
            let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            last.is_none_or(|at| at.elapsed() >= ANALYZE_EVERY) || changed > 4.0 * believed + 1000.0
        };
        if due {
            client.batch_execute("ANALYZE messages").await?;
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        }
        Ok(())
    }
}

/// `$i`, PostgreSQL's i-th parameter.
fn dollar(i: usize) -> String {
    format!("${i}")
}

fn params(bounds: &[DateTime<Utc>]) -> Vec<&(dyn ToSql + Sync)> {
    bounds.iter().map(|b| b as &(dyn ToSql + Sync)).collect()
}

async fn read_seal(client: &deadpool_postgres::Object) -> Result<RollupSeal, StorageError> {
    let statement = client.prepare_cached(READ_SEAL_SQL).await?;
    let row = client.query_one(&statement, &[]).await?;
    Ok(RollupSeal {
        sealed_until: row.try_get(0)?,
        minutes_from: row.try_get(1)?,
    })
}

/// Rollup rows (`minute`, the key, the metric columns) read by `sql`
/// over `spans`.
async fn metric_rows(
    client: &deadpool_postgres::Object,
    sql: &str,
    spans: &RollupSpans,
) -> Result<Vec<MinuteMetrics>, StorageError> {
    let statement = client.prepare_cached(sql).await?;
    let rows = client.query(&statement, &params(&spans.bounds())).await?;
    rows.iter()
        .map(|row| {
            let values = (4..4 + metric_columns().len())
                .map(|i| row.try_get::<_, i64>(i))
                .collect::<Result<Vec<i64>, _>>()?;
            Ok(MinuteMetrics::from_values(
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
                &values,
            ))
        })
        .collect()
}

/// Adds bounce rollups to their minutes' rows, in one statement.
async fn add_bounces(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &[BounceCount],
) -> Result<(), StorageError> {
    if rows.is_empty() {
        return Ok(());
    }
    let minutes: Vec<DateTime<Utc>> = rows.iter().map(|b| b.minute).collect();
    let text = |f: fn(&BounceCount) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    let transports = text(|b| &b.transport);
    let channels = text(|b| &b.channel);
    let categories = text(|b| &b.category);
    let types = text(|b| &b.bounce_type);
    let reasons = text(|b| &b.reason);
    let domains = text(|b| &b.domain);
    let counts: Vec<i64> = rows
        .iter()
        .map(|b| i64::try_from(b.bounces).unwrap_or(i64::MAX))
        .collect();
    let upsert = tx
        .prepare_cached(&add_bounces_sql(
            "SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[],
                                  $5::text[], $6::text[], $7::text[], $8::int8[])",
        ))
        .await?;
    tx.execute(
        &upsert,
        &[
            &minutes,
            &transports,
            &channels,
            &categories,
            &types,
            &reasons,
            &domains,
            &counts,
        ],
    )
    .await?;
    Ok(())
}

/// Adds rollups to their minutes' rows, in one statement (one array per
/// column).
async fn add_rollups(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &[MinuteMetrics],
) -> Result<(), StorageError> {
    if rows.is_empty() {
        return Ok(());
    }
    let minutes: Vec<DateTime<Utc>> = rows.iter().map(|m| m.minute).collect();
    let transports: Vec<&str> = rows.iter().map(|m| m.transport.as_str()).collect();
    let channels: Vec<&str> = rows.iter().map(|m| m.channel.as_str()).collect();
    let categories: Vec<&str> = rows.iter().map(|m| m.category.as_str()).collect();
    let values: Vec<Vec<i64>> = rows.iter().map(metric_values).collect();
    let columns: Vec<Vec<i64>> = (0..metric_columns().len())
        .map(|c| values.iter().map(|row| row[c]).collect())
        .collect();
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&minutes, &transports, &channels, &categories];
    params.extend(columns.iter().map(|c| c as &(dyn ToSql + Sync)));
    let arrays: Vec<String> = (5..5 + metric_columns().len())
        .map(|i| format!("${i}::int8[]"))
        .collect();
    let sql = add_metrics_sql(
        &format!(
            "SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], {})",
            arrays.join(", ")
        ),
        "greatest",
    );
    let upsert = tx.prepare_cached(&sql).await?;
    tx.execute(&upsert, &params).await?;
    Ok(())
}

/// Commits on success. On failure it rolls back before answering: a
/// dropped transaction is rolled back only when its connection gets to
/// it, and until then its row locks make other claims skip the row.
async fn finish<T>(
    tx: deadpool_postgres::Transaction<'_>,
    result: Result<T, StorageError>,
) -> Result<T, StorageError> {
    match result {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(err) => {
            if let Err(cause) = tx.rollback().await {
                tracing::debug!(%cause, "rollback after a failed operation");
            }
            Err(err)
        }
    }
}

async fn cancel_one(
    tx: &deadpool_postgres::Transaction<'_>,
    id: Stamp,
    now: DateTime<Utc>,
    retention: &Retention,
) -> Result<Message, StorageError> {
    let (current, live) = lock_message(tx, id).await?;
    if !matches!(current.status, Status::Queued | Status::Dead) {
        return Err(StorageError::Conflict {
            id,
            status: current.status,
            reason: "only a queued or dead message can be cancelled",
        });
    }
    let (row, bucket) = if live {
        let bucket = bucket_of(retention, &current, now);
        let row = tx
            .query_one(
                &format!(
                    "WITH moved AS (DELETE FROM messages WHERE id = $1 RETURNING *)
                 INSERT INTO finished_messages ({FINISHED_INSERT})
                 SELECT id, channel, transport, category, 'cancelled', priority, payload, metadata,
                        fingerprint, idempotency_key, attempts, max_attempts, created_at,
                        available_at, sent_at, last_error, $2, $3::date, recipients
                 FROM moved
                 RETURNING {FINISHED_COLUMNS}"
                ),
                &[&uuid(id), &now, &bucket],
            )
            .await?;
        // Its earlier events go where it now is.
        tx.execute(
            &format!(
                "WITH d AS (SELECT $1::uuid AS id, 'cancelled'::text AS next_status, $2::date AS bucket)
                 {follow}
                 SELECT 1",
                follow = follow_sql("d", "next_status")
            ),
            &[&uuid(id), &bucket],
        )
        .await?;
        (row, bucket)
    } else {
        // A dead letter is finished already: only its status changes.
        let row = tx
            .query_one(
                &format!(
                    "UPDATE finished_messages SET status = 'cancelled', updated_at = $2
                     WHERE id = $1 RETURNING {FINISHED_COLUMNS}, finished_on"
                ),
                &[&uuid(id), &now],
            )
            .await?;
        let bucket = row.try_get("finished_on")?;
        (row, bucket)
    };
    let detail = serde_json::json!({ "previous_status": current.status });
    insert_event(
        tx,
        id,
        "cancelled",
        now,
        current.attempts,
        &current.transport,
        Some(&detail),
        bucket,
    )
    .await?;
    add_rollups(tx, &[cancelled_rollup(&current, now)]).await?;
    message_from_row(&row)
}

/// The `finished_on` a message finishing now is filed under, as
/// [`finished::bucket_sql`] decides it in SQL.
fn bucket_of(retention: &Retention, message: &Message, now: DateTime<Utc>) -> chrono::NaiveDate {
    bucket_of_rule(
        retention,
        &message.transport,
        message.category.as_deref(),
        now,
    )
}

/// [`bucket_of`] a message of `transport` and `category`.
fn bucket_of_rule(
    retention: &Retention,
    transport: &str,
    category: Option<&str>,
    now: DateTime<Utc>,
) -> chrono::NaiveDate {
    let rule = retention.rule_for(transport, category);
    if *rule == retention.default {
        finished::day_of(now)
    } else {
        chrono::NaiveDate::from_str(finished::KEPT_DAY).unwrap_or(chrono::NaiveDate::MAX)
    }
}

/// Locks a message, live or finished; true when it is live (which a dead
/// letter stored before the tables were split may still be).
async fn lock_message(
    tx: &deadpool_postgres::Transaction<'_>,
    id: Stamp,
) -> Result<(Message, bool), StorageError> {
    let live = tx
        .query_opt(
            &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1 FOR UPDATE"),
            &[&uuid(id)],
        )
        .await?;
    if let Some(row) = live {
        return Ok((message_from_row(&row)?, true));
    }
    let row = tx
        .query_opt(
            &format!("SELECT {FINISHED_COLUMNS} FROM finished_messages WHERE id = $1 FOR UPDATE"),
            &[&uuid(id)],
        )
        .await?
        .ok_or(StorageError::NotFound(id))?;
    Ok((message_from_row(&row)?, false))
}

/// Writes one event under `bucket`, where its message is kept.
#[allow(clippy::too_many_arguments)]
async fn insert_event(
    tx: &deadpool_postgres::Transaction<'_>,
    id: Stamp,
    kind: &str,
    at: DateTime<Utc>,
    attempt: u32,
    transport: &str,
    detail: Option<&serde_json::Value>,
    bucket: chrono::NaiveDate,
) -> Result<(), StorageError> {
    let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
    tx.execute(
        "INSERT INTO message_events (message_id, kind, at, attempt, transport, detail, finished_on)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &uuid(id),
            &kind,
            &at,
            &attempt,
            &transport,
            &detail,
            &bucket,
        ],
    )
    .await?;
    Ok(())
}

/// The `finished_on` of live messages' events.
fn live_day() -> chrono::NaiveDate {
    chrono::NaiveDate::from_str(LIVE_DAY).unwrap_or(chrono::NaiveDate::MIN)
}

async fn replay_one(
    tx: &deadpool_postgres::Transaction<'_>,
    id: Stamp,
    now: DateTime<Utc>,
    aging_ms: f64,
) -> Result<Message, StorageError> {
    let (current, live) = lock_message(tx, id).await?;
    if current.status != Status::Dead {
        return Err(StorageError::Conflict {
            id,
            status: current.status,
            reason: "only a dead message can be replayed",
        });
    }
    if !live {
        // Back to the live table under the same id, its events with it.
        tx.execute(
            &format!(
                "UPDATE message_events SET finished_on = DATE '{LIVE_DAY}'
                 WHERE message_id = $1 AND finished_on <> DATE '{LIVE_DAY}'"
            ),
            &[&uuid(id)],
        )
        .await?;
        tx.execute(
            "WITH moved AS (DELETE FROM finished_messages WHERE id = $1 RETURNING *)
             INSERT INTO messages (id, channel, transport, category, status, priority, payload,
                                   metadata, fingerprint, idempotency_key, attempts, max_attempts,
                                   created_at, available_at, effective_at, sent_at, last_error,
                                   updated_at, recipients)
             SELECT id, channel, transport, category, 'dead', priority, payload, metadata,
                    fingerprint, idempotency_key, attempts, max_attempts, created_at,
                    available_at, available_at, sent_at, last_error, updated_at, recipients
             FROM moved",
            &[&uuid(id)],
        )
        .await?;
    }
    let row = tx
        .query_one(
            &format!(
                "UPDATE messages SET status = 'queued', attempts = 0, available_at = $2::timestamptz,
                     effective_at = $2::timestamptz - priority * $3::float8 * interval '1 millisecond', updated_at = $2
                 WHERE id = $1 RETURNING {MESSAGE_COLUMNS}"
            ),
            &[&uuid(id), &now, &aging_ms],
        )
        .await?;
    let detail = serde_json::json!({ "previous_attempts": current.attempts });
    insert_event(
        tx,
        id,
        "replayed",
        now,
        0,
        &current.transport,
        Some(&detail),
        live_day(),
    )
    .await?;
    message_from_row(&row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(sqlstate: &str) -> StorageError {
        classify_sqlstate(sqlstate, sqlstate.to_owned())
    }

    #[test]
    fn insufficient_resources_are_a_full_store_worth_retrying() {
        // disk_full, insufficient_resources, out_of_memory,
        // too_many_connections.
        for sqlstate in ["53100", "53000", "53200", "53300"] {
            let err = class(sqlstate);
            assert!(matches!(err, StorageError::Full(_)), "{sqlstate}: {err:?}");
            assert!(err.is_transient());
        }
    }

    #[test]
    fn read_only_lost_or_restarting_servers_are_unavailable() {
        for sqlstate in [
            "25006", // read_only_sql_transaction: hot standby, default_transaction_read_only
            "08000", "08003", "08006", "08001", // connection exceptions
            "57P01", // admin_shutdown
            "57P02", // crash_shutdown
            "57P03", // cannot_connect_now
            "58030", // io_error
            "40001", // serialization_failure
            "40P01", // deadlock_detected
        ] {
            let err = class(sqlstate);
            assert!(
                matches!(err, StorageError::Unavailable(_)),
                "{sqlstate}: {err:?}"
            );
            assert!(err.is_transient());
        }
    }

    #[test]
    fn faults_of_the_statement_or_the_data_are_not_retried() {
        for sqlstate in ["23505", "22P02", "42P01", "25001", "25P02", "2"] {
            let err = class(sqlstate);
            assert!(
                matches!(err, StorageError::Backend(_)),
                "{sqlstate}: {err:?}"
            );
            assert!(!err.is_transient());
        }
    }
}
