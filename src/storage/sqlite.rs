//! The embedded SQLite backend: zero set-up, one file, WAL mode.
//!
//! SQLite connections are blocking and not `Sync`, so each lives on its own
//! OS thread and async callers send it closures over a bounded channel:
//! database work never runs on the async worker threads. There is exactly
//! one writer connection, since SQLite admits one writer at a time anyway
//! and a single queue of writes avoids busy-retry storms, and a few reader
//! connections, which WAL lets run beside the writer.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::{Type, Value};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior, params,
};
use tokio::sync::{mpsc, oneshot};

use super::lifecycle::{self, Ending};
use super::retention::{Kept, below_id};
use super::rollups::{
    CompactionPlan, RollupSpans, cancelled_rollup, metric_columns, metric_values, rollup,
};
use super::sql::{
    ALERT_COLUMNS, FEW_IN_TIME_RANGE, FilterValue, HISTORY_INDEXES, MESSAGE_COLUMNS, READ_SEAL_SQL,
    REPLAY_JOB_COLUMNS, add_bounces_sql, add_failures_sql, add_metrics_sql, bounce_totals_sql,
    compaction_sql, error_class_sql, failure_totals_sql, few_sql, filter_conditions,
    listing_wheres, rollup_rows_sql, rollup_totals_sql, series_sql, time_range_of, write_seal_sql,
};
use super::{
    Alert, AlertNotice, AlertState, BounceCount, DeadLetterGroup, DeadLetterSummary, DepthRow,
    EXACT_COUNT_LIMIT, Enqueued, FailureCount, FeedbackBatch, FeedbackRecorded, MessageCount,
    MessageFilter, MinuteMetrics, NewAlert, NodeInfo, Outcome, OutcomeKind, Page, PageRequest,
    Recorded, ReplayJob, ReplayJobState, RollupSeal, Scope, SeriesCounts, Storage, StorageError,
    StorageOptions, Suppression, SuppressionCursor, SuppressionFilter, TransportState, WRITE_PROBE,
    WorkSignal, clamp_limit, effective_at,
};
use super::{Expired, Retention, with_queued_event};
use crate::domain::{
    Channel, ClaimToken, Event, EventKind, Fingerprint, Message, MessageWithEvents, NewMessage,
    Priority, Stamp, Status,
};
use crate::time::{from_millis, to_millis};

mod feedback;

mod embedded {
    refinery::embed_migrations!("sql/sqlite");
}

/// Pending closures per connection thread; senders wait when it is full.
const QUEUE_PER_CONNECTION: usize = 256;
/// How long a connection waits for a lock held by another process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// [`MESSAGE_COLUMNS`] of a finished message: it holds no claim.
const FINISHED_COLUMNS: &str = "id, channel, transport, category, status, priority, payload, \
    metadata, fingerprint, idempotency_key, attempts, max_attempts, created_at, available_at, \
    NULL AS lease_until, NULL AS claim_token, sent_at, last_error, updated_at, delivery_detail";

/// The columns a message keeps when it moves between the live and the
/// finished table.
const MOVED_COLUMNS: &str = "id, channel, transport, category, priority, payload, metadata, \
    fingerprint, idempotency_key, max_attempts, created_at";

/// SQLite storage: one writer thread, `pool_size` reader threads.
pub struct SqliteStorage {
    writer: ConnectionThread,
    readers: Vec<ConnectionThread>,
    next_reader: AtomicUsize,
    aging: Duration,
    rollups: bool,
    signal: WorkSignal,
    state: WorkSignal,
    retention: Arc<Retention>,
    suppression: Arc<super::SuppressionPolicy>,
    unmatched_keep: Duration,
    nonce_keep: Duration,
    /// `<file>.lock`, locked while this storage's node is registered: only
    /// one process may deliver from a SQLite file.
    lock_path: std::path::PathBuf,
    node_lock: std::sync::Mutex<Option<std::fs::File>>,
}

impl SqliteStorage {
    pub async fn open(path: &str, options: &StorageOptions) -> Result<Self, StorageError> {
        let path = Path::new(path);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StorageError::Unavailable(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let writer = open_connection(path, false)?;
        let writer = ConnectionThread::spawn("herald-sqlite-writer", writer)?;
        let mut readers = Vec::new();
        for i in 0..options.pool_size.clamp(1, 8) {
            let reader = open_connection(path, true)?;
            readers.push(ConnectionThread::spawn(
                &format!("herald-sqlite-reader-{i}"),
                reader,
            )?);
        }
        Ok(SqliteStorage {
            writer,
            readers,
            next_reader: AtomicUsize::new(0),
            aging: options.priority_aging,
            rollups: options.rollups,
            signal: WorkSignal::default(),
            state: WorkSignal::default(),
            lock_path: lock_path(path),
            node_lock: std::sync::Mutex::new(None),
            retention: Arc::new(options.retention.clone()),
            suppression: Arc::new(options.suppression.clone()),
            unmatched_keep: options.unmatched_keep,
            nonce_keep: options.nonce_keep,
        })
    }

    fn reader(&self) -> &ConnectionThread {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        &self.readers[i]
    }

    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Transaction<'_>) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        self.writer
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let result = work(&tx)?;
                tx.commit()?;
                Ok(result)
            })
            .await
    }
}

/// The file whose lock says a process delivers from the database at `path`.
fn lock_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    name.into()
}

/// Drops [`HISTORY_INDEXES`] once no finished message waits to move out
/// of `messages` (`move_finished` finds them by `messages_status`); true
/// when they are gone. Dropping an index frees its pages, a moment's work.
fn shed_history_indexes(tx: &Transaction<'_>) -> Result<bool, StorageError> {
    let mut left = false;
    for name in HISTORY_INDEXES {
        left |= has_index(tx, name)?;
    }
    if !left {
        return Ok(true);
    }
    if has_index(tx, "messages_status")? {
        let unmoved: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM messages INDEXED BY messages_status
                            WHERE status IN ('sent', 'dead', 'cancelled'))",
            [],
            |row| row.get(0),
        )?;
        if unmoved {
            return Ok(false);
        }
    }
    for name in HISTORY_INDEXES {
        tx.execute_batch(&format!("DROP INDEX IF EXISTS {name}"))?;
    }
    tracing::info!("no finished message left in the live table; its history indexes are dropped");
    Ok(true)
}

fn has_index(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?1)",
        [name],
        |row| row.get(0),
    )
}

fn open_connection(path: &Path, read_only: bool) -> Result<Connection, StorageError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StorageError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if !read_only {
        // Takes effect on a new file only (an existing one would need a
        // full VACUUM): retention's deletes then give pages back with
        // `incremental_vacuum` and the file shrinks.
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")?;
        // 64 MiB of pages for the one writer (SQLite's default is 2 MiB):
        // the fingerprint and transport indexes take inserts all over,
        // and incremental auto-vacuum's pointer-map pages are written with
        // every page allocated or freed; with the default, the writer read
        // them back from the file system all the time (BENCHMARKS.md,
        // "Lean queue, second pass": 3 and 34 % faster end to end).
        conn.execute_batch("PRAGMA cache_size = -65536;")?;
    }
    // FULL: a commit survives power loss, not only a crash of Herald; the
    // promise is that nothing accepted with 202 is lost. Foreign keys
    // off: the only one (events to messages, with ON DELETE CASCADE)
    // would delete a message's events when it moves to the finished table.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;",
    )?;
    if read_only {
        conn.execute_batch("PRAGMA query_only = ON;")?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A connection owned by one OS thread, driven by closures.
struct ConnectionThread {
    jobs: mpsc::Sender<Job>,
}

impl ConnectionThread {
    fn spawn(name: &str, mut conn: Connection) -> Result<Self, StorageError> {
        let (jobs, mut queue) = mpsc::channel::<Job>(QUEUE_PER_CONNECTION);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // Ends when the storage (every sender) is dropped.
                while let Some(job) = queue.blocking_recv() {
                    // A panicking job must not take the connection with it:
                    // its caller sees a dropped reply, later jobs still run.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn)));
                }
            })
            .map_err(|e| StorageError::Unavailable(format!("cannot start sqlite thread: {e}")))?;
        Ok(ConnectionThread { jobs })
    }

    async fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = reply.send(work(conn));
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StorageError::Unavailable("sqlite connection thread stopped".into()))?;
        answer
            .await
            .map_err(|_| StorageError::Backend("sqlite operation panicked".into()))?
    }
}

/// SQLite's result codes by what they mean for a retry: a full disk and a
/// file that cannot be written (read-only, I/O error, gone, locked by
/// another process past the busy timeout) are outages that pass, so
/// callers keep their work and try again; the rest are faults of the
/// statement or the data.
impl From<rusqlite::Error> for StorageError {
    fn from(err: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match err.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StorageError::Full(err.to_string()),
            Some(
                ErrorCode::ReadOnly
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::PermissionDenied
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::OutOfMemory
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked,
            ) => StorageError::Unavailable(err.to_string()),
            _ => match err {
                rusqlite::Error::FromSqlConversionFailure(..) => {
                    StorageError::Corrupt(err.to_string())
                }
                other => StorageError::Backend(other.to_string()),
            },
        }
    }
}

fn conversion_error(
    column: usize,
    err: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(err))
}

/// The `WHERE` clauses of a listing of `filter` over the live and the
/// finished table, with the values both bind ([`filter_conditions`]).
struct Listing {
    live_where: String,
    finished_where: String,
    values: Vec<Value>,
}

impl Listing {
    fn new(filter: &MessageFilter, after: Option<Stamp>) -> Listing {
        let (conditions, values) = filter_conditions(
            filter,
            after,
            |i| format!("?{i}"),
            |p| format!("id IN (SELECT message_id FROM message_recipients WHERE address = {p})"),
        );
        let (live_where, finished_where) = listing_wheres(conditions, filter.delivery);
        let values = values
            .into_iter()
            .map(|value| match value {
                FilterValue::Text(text) | FilterValue::Recipient(text) => Value::Text(text),
                FilterValue::Id(id) => Value::Text(id.to_string()),
                FilterValue::Time(at) => Value::Integer(to_millis(at)),
            })
            .collect();
        Listing {
            live_where,
            finished_where,
            values,
        }
    }
}

fn parse_column<T>(row: &Row<'_>, column: usize) -> rusqlite::Result<T>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: String = row.get(column)?;
    text.parse().map_err(|e| conversion_error(column, e))
}

/// A JSON column; NULL (a payload retention dropped) reads as JSON null.
fn json_column(row: &Row<'_>, column: usize) -> rusqlite::Result<serde_json::Value> {
    let Some(text) = row.get::<_, Option<String>>(column)? else {
        return Ok(serde_json::Value::Null);
    };
    serde_json::from_str(&text).map_err(|e| conversion_error(column, e))
}

fn time_column(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    Ok(row.get::<_, Option<i64>>(column)?.map(from_millis))
}

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    let priority: i64 = row.get(5)?;
    let claim_token: Option<String> = row.get(15)?;
    Ok(Message {
        id: parse_column(row, 0)?,
        channel: parse_column(row, 1)?,
        transport: row.get(2)?,
        category: row.get(3)?,
        status: parse_column(row, 4)?,
        priority: Priority::new(priority).ok_or_else(|| {
            conversion_error(
                5,
                crate::domain::ValidationError::invalid("priority", "out of range"),
            )
        })?,
        payload: json_column(row, 6)?,
        metadata: json_column(row, 7)?,
        fingerprint: Fingerprint::from_stored(row.get(8)?),
        idempotency_key: row.get(9)?,
        attempts: row.get(10)?,
        max_attempts: row.get(11)?,
        created_at: from_millis(row.get(12)?),
        available_at: from_millis(row.get(13)?),
        lease_until: time_column(row, 14)?,
        claim_token: claim_token
            .map(|t| ulid::Ulid::from_string(&t).map(ClaimToken))
            .transpose()
            .map_err(|e| conversion_error(15, e))?,
        sent_at: time_column(row, 16)?,
        last_error: row.get(17)?,
        updated_at: from_millis(row.get(18)?),
        // Claims read live rows, which have no delivery state.
        delivery: if row
            .as_ref()
            .column_name(19)
            .is_ok_and(|n| n == "delivery_detail")
        {
            feedback::delivery_of(row.get(19)?)
        } else {
            crate::domain::DeliveryStatus::default()
        },
    })
}

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<Event> {
    let detail: Option<String> = row.get(7)?;
    Ok(Event {
        kind: parse_column(row, 0)?,
        at: from_millis(row.get(1)?),
        attempt: row.get(2)?,
        transport: row.get(3)?,
        started_at: time_column(row, 4)?,
        duration_ms: row.get::<_, Option<i64>>(5)?.map(|d| d.max(0) as u64),
        error: row.get(6)?,
        detail: detail
            .map(|d| serde_json::from_str(&d))
            .transpose()
            .map_err(|e| conversion_error(7, e))?,
    })
}

/// One `message_events` row to write.
struct NewEvent<'a> {
    id: Stamp,
    kind: EventKind,
    at: DateTime<Utc>,
    attempt: u32,
    transport: Option<&'a str>,
    /// The attempt's start, on the event that ends a claim.
    started_at: Option<DateTime<Utc>>,
    duration_ms: Option<u64>,
    error: Option<&'a str>,
    detail: Option<serde_json::Value>,
}

fn insert_event(tx: &Transaction<'_>, event: NewEvent<'_>) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO message_events (message_id, kind, at, attempt, transport, started_at, duration_ms, error, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    stmt.execute(params![
        event.id.to_string(),
        event.kind.as_str(),
        to_millis(event.at),
        event.attempt,
        event.transport,
        event.started_at.map(to_millis),
        event
            .duration_ms
            .map(|d| i64::try_from(d).unwrap_or(i64::MAX)),
        event.error,
        event.detail.map(|d| d.to_string()),
    ])?;
    Ok(())
}

/// Adds one rollup to its minute's row.
/// Writes a node's row, keeping its `started_at` when it is already there.
fn upsert_node(tx: &Transaction<'_>, node: &NodeInfo, now: DateTime<Utc>) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO nodes (id, started_at, heartbeat_at, version, address) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,
             version = excluded.version, address = excluded.address",
    )?
    .execute(params![
        node.id,
        to_millis(node.started_at),
        to_millis(now),
        node.version,
        node.address
    ])?;
    Ok(())
}

fn add_metrics(tx: &Transaction<'_>, metrics: &MinuteMetrics) -> rusqlite::Result<()> {
    let placeholders: Vec<String> = (5..5 + metric_columns().len())
        .map(|i| format!("?{i}"))
        .collect();
    let sql = add_metrics_sql(
        &format!("VALUES (?1, ?2, ?3, ?4, {})", placeholders.join(", ")),
        "max",
    );
    let mut stmt = tx.prepare_cached(&sql)?;
    let mut params: Vec<Value> = vec![
        Value::Integer(to_millis(metrics.minute)),
        Value::Text(metrics.transport.clone()),
        Value::Text(metrics.channel.clone()),
        Value::Text(metrics.category.clone()),
    ];
    params.extend(metric_values(metrics).into_iter().map(Value::Integer));
    stmt.execute(rusqlite::params_from_iter(params))?;
    Ok(())
}

fn add_bounces(tx: &Transaction<'_>, bounces: &[BounceCount]) -> rusqlite::Result<()> {
    let mut add = tx.prepare_cached(&add_bounces_sql("VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"))?;
    for b in bounces {
        add.execute(params![
            to_millis(b.minute),
            b.transport,
            b.channel,
            b.category,
            b.bounce_type,
            b.reason,
            b.domain,
            i64::try_from(b.bounces).unwrap_or(i64::MAX)
        ])?;
    }
    Ok(())
}

/// `?i`, SQLite's i-th parameter.
fn question(i: usize) -> String {
    format!("?{i}")
}

fn millis(spans: &RollupSpans) -> [i64; 6] {
    spans.bounds().map(to_millis)
}

fn read_seal(conn: &Connection) -> rusqlite::Result<RollupSeal> {
    conn.prepare_cached(READ_SEAL_SQL)?.query_row([], |row| {
        Ok(RollupSeal {
            sealed_until: from_millis(row.get(0)?),
            minutes_from: from_millis(row.get(1)?),
        })
    })
}

/// Rollup rows (`minute`, the key, the metric columns) read by `sql`
/// over `spans`.
fn metric_rows(
    conn: &Connection,
    sql: &str,
    spans: RollupSpans,
) -> rusqlite::Result<Vec<MinuteMetrics>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt
        .query_map(millis(&spans), metrics_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

fn metrics_from_row(row: &Row<'_>) -> rusqlite::Result<MinuteMetrics> {
    let values = (4..4 + metric_columns().len())
        .map(|i| row.get::<_, i64>(i))
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok(MinuteMetrics::from_values(
        from_millis(row.get(0)?),
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        &values,
    ))
}

fn alert_from_row(row: &Row<'_>) -> rusqlite::Result<Alert> {
    let state: String = row.get(4)?;
    let stamp_column = |column: usize| -> rusqlite::Result<Option<Stamp>> {
        row.get::<_, Option<String>>(column)?
            .map(|text| {
                text.parse::<Stamp>()
                    .map_err(|e| conversion_error(column, e))
            })
            .transpose()
    };
    Ok(Alert {
        id: ulid::Ulid::from_string(&row.get::<_, String>(0)?)
            .map_err(|e| conversion_error(0, e))?,
        rule: row.get(1)?,
        kind: row.get(2)?,
        transport: row.get(3)?,
        state: AlertState::parse(&state).ok_or_else(|| {
            conversion_error(
                4,
                crate::domain::ValidationError::invalid("state", "unknown alert state"),
            )
        })?,
        threshold: row.get(5)?,
        window_s: row.get::<_, Option<i64>>(6)?.map(|w| w.max(0) as u64),
        fired_value: row.get(7)?,
        last_value: row.get(8)?,
        fired_at: from_millis(row.get(9)?),
        checked_at: from_millis(row.get(10)?),
        resolved_at: time_column(row, 11)?,
        notified: row.get(12)?,
        paused_at: time_column(row, 15)?,
        fired_message: stamp_column(13)?,
        resolved_message: stamp_column(14)?,
    })
}

fn replay_job_from_row(row: &Row<'_>) -> rusqlite::Result<ReplayJob> {
    let state: String = row.get(1)?;
    let count =
        |column: usize| -> rusqlite::Result<u64> { Ok(row.get::<_, i64>(column)?.max(0) as u64) };
    Ok(ReplayJob {
        id: parse_column(row, 0)?,
        state: ReplayJobState::parse(&state).ok_or_else(|| {
            conversion_error(
                1,
                crate::domain::ValidationError::invalid("state", "unknown replay job state"),
            )
        })?,
        transport: row.get(2)?,
        channel: row
            .get::<_, Option<String>>(3)?
            .map(|text| text.parse::<Channel>().map_err(|e| conversion_error(3, e)))
            .transpose()?,
        category: row.get(4)?,
        error_class: row.get(5)?,
        total: count(6)?,
        replayed: count(7)?,
        owner: row.get(8)?,
        created_at: from_millis(row.get(9)?),
        updated_at: from_millis(row.get(10)?),
        finished_at: time_column(row, 11)?,
        error: row.get(12)?,
    })
}

/// A message, live or finished.
fn load_message(conn: &Connection, id: Stamp) -> rusqlite::Result<Option<Message>> {
    let mut live = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1"
    ))?;
    if let Some(message) = live
        .query_row([id.to_string()], message_from_row)
        .optional()?
    {
        return Ok(Some(message));
    }
    let mut finished = conn.prepare_cached(&format!(
        "SELECT {FINISHED_COLUMNS} FROM finished_messages WHERE id = ?1"
    ))?;
    finished
        .query_row([id.to_string()], message_from_row)
        .optional()
}

/// `last_error` of a message whose last attempt's lease expired.
const FINAL_LEASE_EXPIRED: &str = "lease expired on the final attempt";

/// How a message that finishes leaves the live table.
struct Finish<'a> {
    status: Status,
    now: DateTime<Utc>,
    /// `last_error` becomes this; `None` keeps the live row's.
    last_error: Option<Option<&'a str>>,
}

/// Stores a message all of whose recipients are suppressed: finished at
/// once as `suppressed`, an event per recipient.
fn store_suppressed(
    tx: &Transaction<'_>,
    message: &NewMessage,
    hit: &[(String, String)],
    now: DateTime<Utc>,
) -> rusqlite::Result<Enqueued> {
    let reasons: Vec<String> = hit.iter().map(|(a, r)| format!("{a} ({r})")).collect();
    tx.prepare_cached(
        "INSERT INTO finished_messages (id, channel, transport, category, status, priority, payload,
             metadata, fingerprint, idempotency_key, attempts, max_attempts, created_at,
             available_at, sent_at, last_error, updated_at)
         VALUES (?1, ?2, ?3, ?4, 'suppressed', ?5, ?6, ?7, ?8, ?9, 0, ?10, ?11, ?12, NULL, ?13, ?11)",
    )?
    .execute(params![
        message.id.to_string(),
        message.channel.as_str(),
        message.transport,
        message.category,
        message.priority.get(),
        message.payload,
        message.metadata,
        message.fingerprint.as_str(),
        message.idempotency_key,
        message.max_attempts,
        to_millis(now),
        to_millis(message.available_at),
        format!("suppressed: {}", reasons.join(", ")),
    ])?;
    feedback::index_recipients(tx, message.id, &message.recipients)?;
    feedback::write_suppressed_events(tx, message.id, hit, now)?;
    Ok(Enqueued {
        id: message.id,
        status: Status::Suppressed,
        fingerprint: message.fingerprint.clone(),
        created: true,
        suppressed: hit.iter().map(|(a, _)| a.clone()).collect(),
    })
}

/// Moves a live message to the finished table, ended as `finish` says.
fn finish_message(tx: &Transaction<'_>, id: Stamp, finish: Finish<'_>) -> rusqlite::Result<()> {
    let sent = finish.status == Status::Sent;
    tx.prepare_cached(&format!(
        "INSERT INTO finished_messages ({MOVED_COLUMNS}, status, attempts, available_at, sent_at,
             last_error, updated_at)
         SELECT {MOVED_COLUMNS}, ?2, attempts, available_at, CASE WHEN ?3 THEN ?4 ELSE sent_at END,
             CASE WHEN ?5 THEN ?6 ELSE last_error END, ?4
         FROM messages WHERE id = ?1"
    ))?
    .execute(params![
        id.to_string(),
        finish.status.as_str(),
        sent,
        to_millis(finish.now),
        finish.last_error.is_some(),
        finish.last_error.flatten(),
    ])?;
    tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?
        .execute([id.to_string()])?;
    Ok(())
}

/// Requeues a dead message under the same id with fresh attempts.
fn replay_one(
    tx: &Transaction<'_>,
    id: Stamp,
    now: DateTime<Utc>,
    aging: Duration,
) -> Result<Message, StorageError> {
    let message = load_message(tx, id)?.ok_or(StorageError::NotFound(id))?;
    if message.status != Status::Dead {
        return Err(StorageError::Conflict {
            id,
            status: message.status,
            reason: "only a dead message can be replayed",
        });
    }
    // Back to the live table under the same id (a dead letter stored
    // before the tables were split may still be there).
    tx.prepare_cached(&format!(
        "INSERT INTO messages ({MOVED_COLUMNS}, status, attempts, available_at, effective_at,
             sent_at, last_error, updated_at)
         SELECT {MOVED_COLUMNS}, 'dead', attempts, available_at, available_at, sent_at, last_error,
             updated_at
         FROM finished_messages WHERE id = ?1"
    ))?
    .execute([id.to_string()])?;
    tx.prepare_cached("DELETE FROM finished_messages WHERE id = ?1")?
        .execute([id.to_string()])?;
    let mut stmt = tx.prepare_cached(&format!(
        "UPDATE messages SET status = 'queued', attempts = 0, available_at = ?2, effective_at = ?3, updated_at = ?2
         WHERE id = ?1 RETURNING {MESSAGE_COLUMNS}"
    ))?;
    let replayed = stmt.query_row(
        params![
            id.to_string(),
            to_millis(now),
            to_millis(effective_at(now, message.priority, aging))
        ],
        message_from_row,
    )?;
    insert_event(
        tx,
        NewEvent {
            id,
            kind: EventKind::Replayed,
            at: now,
            attempt: 0,
            transport: Some(&message.transport),
            started_at: None,
            duration_ms: None,
            error: None,
            detail: Some(serde_json::json!({ "previous_attempts": message.attempts })),
        },
    )?;
    Ok(replayed)
}

#[async_trait]
impl Storage for SqliteStorage {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn work_signal(&self) -> &WorkSignal {
        &self.signal
    }

    fn state_signal(&self) -> &WorkSignal {
        &self.state
    }

    fn enqueue_writers(&self) -> usize {
        1
    }

    async fn migrate(&self) -> Result<(), StorageError> {
        self.writer
            .call(|conn| {
                embedded::migrations::runner()
                    .run(conn)
                    .map(|_| ())
                    .map_err(|e| StorageError::Migration(e.to_string()))
            })
            .await?;
        // A new store has nothing to move: its live table sheds the
        // history indexes at once.
        self.write(shed_history_indexes).await?;
        Ok(())
    }

    async fn probe_write(&self) -> Result<(), StorageError> {
        // Committed, not rolled back: SQLite writes pages (to the WAL) only
        // at commit, so only a commit meets a full disk.
        self.write(|tx| {
            tx.execute(
                "INSERT INTO transport_state (name, paused, updated_at) VALUES (?1, 0, 0)",
                [WRITE_PROBE],
            )?;
            tx.execute("DELETE FROM transport_state WHERE name = ?1", [WRITE_PROBE])?;
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.reader()
            .call(|conn| {
                conn.query_row("SELECT count(*) FROM transport_state", [], |_| Ok(()))?;
                Ok(())
            })
            .await
    }

    async fn enqueue_many(
        &self,
        messages: Vec<NewMessage>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Enqueued>, StorageError> {
        let aging = self.aging;
        let transports: Vec<String> = messages.iter().map(|m| m.transport.clone()).collect();
        let enqueued = self.write(move |tx| {
            let mut insert = tx.prepare_cached(
                "INSERT INTO messages (id, channel, transport, category, status, priority, payload, metadata,
                     fingerprint, idempotency_key, attempts, max_attempts, created_at, available_at,
                     effective_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8, ?9, 0, ?10, ?11, ?12, ?13, ?11)
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )?;
            // A key is taken while its message is live or finished; the
            // one writer makes looking in both and inserting one step.
            let mut existing = tx.prepare_cached(
                "SELECT id, status, fingerprint FROM messages WHERE idempotency_key = ?1
                 UNION ALL
                 SELECT id, status, fingerprint FROM finished_messages WHERE idempotency_key = ?1",
            )?;
            let found = |existing: &mut rusqlite::CachedStatement<'_>, key: &Option<String>| {
                existing
                    .query_row([key], |row| {
                        Ok(Enqueued {
                            id: parse_column(row, 0)?,
                            status: parse_column(row, 1)?,
                            fingerprint: Fingerprint::from_stored(row.get(2)?),
                            created: false,
                            suppressed: Vec::new(),
                        })
                    })
                    .optional()
            };
            // With no entry at all, no recipient is looked up.
            let any_suppressed = feedback::any_suppressed(tx)?;
            let mut results = Vec::with_capacity(messages.len());
            for message in &messages {
                if message.idempotency_key.is_some()
                    && let Some(known) = found(&mut existing, &message.idempotency_key)?
                {
                    results.push(known);
                    continue;
                }
                let hit = match any_suppressed {
                    true => feedback::suppressed_among(tx, message, now)?,
                    false => Vec::new(),
                };
                let mut message = std::borrow::Cow::Borrowed(message);
                if !hit.is_empty() {
                    let dropped: Vec<String> = hit.iter().map(|(a, _)| a.clone()).collect();
                    let left = message.recipients.iter().any(|r| !dropped.contains(r));
                    if !left || message.channel != crate::domain::Channel::Email {
                        results.push(store_suppressed(tx, &message, &hit, now)?);
                        continue;
                    }
                    let mut edited = message.into_owned();
                    if let Some(payload) = crate::domain::email_without(&edited.payload, &dropped) {
                        edited.payload = payload;
                    }
                    edited.recipients.retain(|r| !dropped.contains(r));
                    message = std::borrow::Cow::Owned(edited);
                }
                let inserted = insert.execute(params![
                    message.id.to_string(),
                    message.channel.as_str(),
                    message.transport,
                    message.category,
                    message.priority.get(),
                    message.payload,
                    message.metadata,
                    message.fingerprint.as_str(),
                    message.idempotency_key,
                    message.max_attempts,
                    to_millis(now),
                    to_millis(message.available_at),
                    to_millis(effective_at(message.available_at, message.priority, aging)),
                ])?;
                if inserted == 1 {
                    feedback::index_recipients(tx, message.id, &message.recipients)?;
                    feedback::write_suppressed_events(tx, message.id, &hit, now)?;
                    // No `queued` row: it is the message's created_at.
                    results.push(Enqueued {
                        id: message.id,
                        status: Status::Queued,
                        fingerprint: message.fingerprint.clone(),
                        created: true,
                        suppressed: hit.into_iter().map(|(a, _)| a).collect(),
                    });
                } else {
                    let known = found(&mut existing, &message.idempotency_key)?
                        .ok_or(rusqlite::Error::QueryReturnedNoRows)?;
                    results.push(known);
                }
            }
            Ok(results)
        })
        .await?;
        self.signal.notify(transports.iter().map(String::as_str));
        Ok(enqueued)
    }

    async fn claim_due(
        &self,
        transport: &str,
        node: &str,
        limit: usize,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Message>, StorageError> {
        let (transport, node) = (transport.to_owned(), node.to_owned());
        let limit = clamp_limit(limit);
        let token = ClaimToken::generate();
        let lease_until = now
            + chrono::Duration::from_std(lease)
                .map_err(|e| StorageError::Invalid(e.to_string()))?;
        // No event: the attempt's start is the `updated_at` stamped here,
        // which the outcome and the recovery read back (see record_outcomes).
        self.write(move |tx| {
            let mut claim = tx.prepare_cached(&format!(
                "UPDATE messages
                 SET status = 'processing', attempts = attempts + 1, lease_until = ?1, claim_token = ?2,
                     claimed_by = ?6, updated_at = ?3
                 WHERE id IN (
                     SELECT id FROM messages
                     WHERE status = 'queued' AND transport = ?4 AND available_at <= ?3
                     ORDER BY effective_at, id LIMIT ?5)
                 RETURNING {MESSAGE_COLUMNS}, effective_at"
            ))?;
            let mut claimed = claim
                .query_map(
                    params![to_millis(lease_until), token.0.to_string(), to_millis(now), transport, limit as i64, node],
                    |row| Ok((row.get::<_, i64>(19)?, message_from_row(row)?)),
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            // RETURNING gives no order; hand messages out in claim order.
            claimed.sort_by(|(a_key, a), (b_key, b)| (a_key, a.id).cmp(&(b_key, b.id)));
            Ok(claimed.into_iter().map(|(_, m)| m).collect())
        })
        .await
    }

    async fn renew_leases(
        &self,
        claims: &[(Stamp, ClaimToken)],
        lease_until: DateTime<Utc>,
    ) -> Result<usize, StorageError> {
        let claims = claims.to_vec();
        self.write(move |tx| {
            let mut renew = tx.prepare_cached(
                "UPDATE messages SET lease_until = ?1
                 WHERE id = ?2 AND claim_token = ?3 AND status = 'processing'",
            )?;
            let mut renewed = 0;
            for (id, token) in &claims {
                renewed += renew.execute(params![
                    to_millis(lease_until),
                    id.to_string(),
                    token.0.to_string()
                ])?;
            }
            Ok(renewed)
        })
        .await
    }

    async fn record_outcomes(
        &self,
        outcomes: Vec<Outcome>,
        now: DateTime<Utc>,
    ) -> Result<Recorded, StorageError> {
        let aging = self.aging;
        let rollups = self.rollups;
        let suppression = self.suppression.clone();
        self.write(move |tx| {
            // `updated_at` of a processing row is its claim time, the
            // attempt's start: the claim stamps it, and nothing else
            // changes it while the message is processing (lease renewal and
            // a node's takeover move only `lease_until`; cancel and replay
            // refuse a processing message).
            let mut current = tx.prepare_cached(
                "SELECT status, claim_token, attempts, max_attempts, priority, updated_at FROM messages WHERE id = ?1",
            )?;
            // A retry stays live; everything else is decided by the
            // lifecycle table and, when it finishes the message, moves it.
            let mut retry = tx.prepare_cached(
                "UPDATE messages SET status = 'queued', attempts = attempts + ?6,
                     available_at = coalesce(?3, available_at), effective_at = coalesce(?4, effective_at), lease_until = NULL, claim_token = NULL, claimed_by = NULL,
                     last_error = coalesce(?5, last_error), updated_at = ?2
                 WHERE id = ?1",
            )?;
            let mut recorded = Recorded::default();
            for outcome in &outcomes {
                let id = outcome.id.to_string();
                let row = current
                    .query_row([&id], |row| {
                        Ok((
                            parse_column::<Status>(row, 0)?,
                            row.get::<_, Option<String>>(1)?,
                            row.get::<_, u32>(2)?,
                            row.get::<_, u32>(3)?,
                            row.get::<_, i64>(4)?,
                            from_millis(row.get(5)?),
                        ))
                    })
                    .optional()?;
                let token = outcome.claim_token.0.to_string();
                let Some((Status::Processing, Some(held), attempts, max_attempts, priority, started_at)) = row
                else {
                    recorded.stale.push(outcome.id);
                    continue;
                };
                if held != token {
                    recorded.stale.push(outcome.id);
                    continue;
                }
                // First, so that they come before the attempt's own events.
                for failed in &outcome.passed_over {
                    insert_event(
                        tx,
                        NewEvent {
                            id: outcome.id,
                            kind: EventKind::AttemptFailed,
                            at: now,
                            attempt: attempts,
                            transport: Some(&failed.member),
                            started_at: Some(started_at),
                            duration_ms: failed.duration_ms,
                            error: Some(&failed.error),
                            detail: Some(failed.detail()),
                        },
                    )?;
                }
                let event = |kind, error, detail| NewEvent {
                    id: outcome.id,
                    kind,
                    at: now,
                    attempt: attempts,
                    transport: Some(&outcome.transport),
                    started_at: None,
                    duration_ms: outcome.duration_ms,
                    error,
                    detail,
                };
                let (ending, error, retry_at) = match &outcome.kind {
                    OutcomeKind::Sent => (Ending::Sent, None, None),
                    OutcomeKind::Failed { error, retry_at } => {
                        (Ending::Failed, Some(error.as_str()), *retry_at)
                    }
                    OutcomeKind::Released { .. } => (Ending::Released, None, None),
                };
                let step = lifecycle::step(ending, retry_at.is_some(), attempts, max_attempts);
                // The event that ends the attempt carries its start; the
                // follow-on `retry_scheduled` / `dead_lettered` do not.
                let ending = |kind, error, detail| NewEvent {
                    started_at: Some(started_at),
                    ..event(kind, error, detail)
                };
                let details = outcome.event_details();
                match &outcome.kind {
                    OutcomeKind::Sent => {
                        insert_event(tx, ending(EventKind::Sent, None, details.ending))?
                    }
                    OutcomeKind::Failed { error, .. } => {
                        insert_event(tx, ending(EventKind::AttemptFailed, Some(error), None))?
                    }
                    OutcomeKind::Released { .. } => {
                        let mut deferred = ending(EventKind::Deferred, None, details.ending);
                        deferred.attempt = attempts.saturating_sub(1);
                        deferred.duration_ms = None;
                        insert_event(tx, deferred)?;
                    }
                }
                if step.finishes() {
                    finish_message(
                        tx,
                        outcome.id,
                        Finish {
                            status: step.status,
                            now,
                            last_error: Some(error),
                        },
                    )?;
                } else {
                    // A retry waits for its time; a claim handed back keeps
                    // its place in the queue.
                    let (available, effective) = match retry_at {
                        Some(at) => {
                            let priority = Priority::new(priority).ok_or_else(|| {
                                StorageError::Corrupt(format!(
                                    "messages.priority: {priority} of {}",
                                    outcome.id
                                ))
                            })?;
                            (Some(to_millis(at)), Some(to_millis(effective_at(at, priority, aging))))
                        }
                        None => (None, None),
                    };
                    retry.execute(params![
                        id,
                        to_millis(now),
                        available,
                        effective,
                        error,
                        if step.attempt_given_back { -1 } else { 0 },
                    ])?;
                    if retry_at.is_some() {
                        insert_event(tx, event(EventKind::RetryScheduled, None, details.retry))?;
                    }
                }
                if let Some(reason) = step.dead {
                    let reason = details.dead_reason.unwrap_or(reason.as_str());
                    let detail = serde_json::json!({ "reason": reason });
                    insert_event(tx, event(EventKind::DeadLettered, error, Some(detail)))?;
                    if let Some(reason) = outcome
                        .recipient_gone
                        .and_then(|gone| suppression.for_recipient_gone(gone))
                    {
                        feedback::suppress_gone(tx, outcome, reason, &suppression, now)?;
                    }
                }
                recorded.applied.push((outcome.id, step.status));
            }
            let (metrics, failures) = if rollups {
                rollup(&outcomes, &recorded.applied, now)
            } else {
                Default::default()
            };
            for metrics in &metrics {
                add_metrics(tx, metrics)?;
            }
            let mut add_failure =
                tx.prepare_cached(&add_failures_sql("VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"))?;
            for f in &failures {
                add_failure.execute(params![
                    to_millis(f.minute),
                    f.transport,
                    f.channel,
                    f.category,
                    f.class,
                    f.error,
                    i64::try_from(f.failures).unwrap_or(i64::MAX)
                ])?;
            }
            Ok(recorded)
        })
        .await
    }

    async fn recover_expired(
        &self,
        now: DateTime<Utc>,
        dead_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Stamp>, StorageError> {
        let limit = clamp_limit(limit);
        self.write(move |tx| {
            // Nodes presumed dead: their claims' leases end now.
            tx.prepare_cached(
                "UPDATE messages SET lease_until = ?1
                 WHERE status = 'processing'
                   AND claimed_by IN (SELECT id FROM nodes WHERE heartbeat_at < ?2)",
            )?
            .execute(params![to_millis(now), to_millis(dead_before)])?;
            tx.prepare_cached("DELETE FROM nodes WHERE heartbeat_at < ?1")?
                .execute(params![to_millis(dead_before)])?;
            // `updated_at` is the claim time (see record_outcomes): the
            // start of the attempt that `lease_expired` ends.
            let mut expired = tx.prepare_cached(
                "SELECT id, attempts, max_attempts, transport, updated_at FROM messages
                 WHERE status = 'processing' AND lease_until <= ?1
                 ORDER BY lease_until LIMIT ?2",
            )?;
            let rows = expired
                .query_map(params![to_millis(now), limit as i64], |row| {
                    Ok((
                        parse_column::<Stamp>(row, 0)?,
                        row.get::<_, u32>(1)?,
                        row.get::<_, u32>(2)?,
                        row.get::<_, String>(3)?,
                        from_millis(row.get(4)?),
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            // The original available_at is kept, so a recovered message goes
            // back to the front of its priority rather than the end.
            let mut requeue = tx.prepare_cached(
                "UPDATE messages SET status = 'queued', lease_until = NULL, claim_token = NULL,
                     claimed_by = NULL, last_error = 'lease expired', updated_at = ?2
                 WHERE id = ?1",
            )?;
            let mut recovered = Vec::with_capacity(rows.len());
            for (id, attempts, max_attempts, transport, started_at) in rows {
                let event = |kind, error: Option<&'static str>| NewEvent {
                    id,
                    kind,
                    at: now,
                    attempt: attempts,
                    transport: Some(&transport),
                    started_at: None,
                    duration_ms: None,
                    error,
                    detail: None,
                };
                insert_event(
                    tx,
                    NewEvent {
                        started_at: Some(started_at),
                        ..event(EventKind::LeaseExpired, None)
                    },
                )?;
                let step = lifecycle::step(Ending::LeaseExpired, false, attempts, max_attempts);
                if let Some(reason) = step.dead {
                    finish_message(
                        tx,
                        id,
                        Finish {
                            status: step.status,
                            now,
                            last_error: Some(Some(FINAL_LEASE_EXPIRED)),
                        },
                    )?;
                    let mut dead = event(EventKind::DeadLettered, Some(FINAL_LEASE_EXPIRED));
                    dead.detail = Some(serde_json::json!({ "reason": reason.as_str() }));
                    insert_event(tx, dead)?;
                } else {
                    requeue.execute(params![id.to_string(), to_millis(now)])?;
                }
                recovered.push(id);
            }
            Ok(recovered)
        })
        .await
    }

    async fn cancel(&self, id: Stamp, now: DateTime<Utc>) -> Result<Message, StorageError> {
        self.write(move |tx| {
            let message = load_message(tx, id)?.ok_or(StorageError::NotFound(id))?;
            if !matches!(message.status, Status::Queued | Status::Dead) {
                return Err(StorageError::Conflict {
                    id,
                    status: message.status,
                    reason: "only a queued or dead message can be cancelled",
                });
            }
            // A dead letter is already finished (or, stored before the
            // tables were split, waits to be moved): it only changes status.
            let moved = tx
                .prepare_cached(
                    "UPDATE finished_messages SET status = 'cancelled', updated_at = ?2 WHERE id = ?1",
                )?
                .execute(params![id.to_string(), to_millis(now)])?;
            if moved == 0 {
                finish_message(
                    tx,
                    id,
                    Finish {
                        status: Status::Cancelled,
                        now,
                        last_error: None,
                    },
                )?;
            }
            let cancelled = load_message(tx, id)?.ok_or(StorageError::NotFound(id))?;
            insert_event(
                tx,
                NewEvent {
                    id,
                    kind: EventKind::Cancelled,
                    at: now,
                    attempt: message.attempts,
                    transport: Some(&message.transport),
                    started_at: None,
                    duration_ms: None,
                    error: None,
                    detail: Some(serde_json::json!({ "previous_status": message.status })),
                },
            )?;
            add_metrics(tx, &cancelled_rollup(&message, now))?;
            Ok(cancelled)
        })
        .await
    }

    async fn replay(&self, id: Stamp, now: DateTime<Utc>) -> Result<Message, StorageError> {
        let aging = self.aging;
        self.write(move |tx| replay_one(tx, id, now, aging)).await
    }

    async fn replay_dead(
        &self,
        filter: &MessageFilter,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<Stamp>, StorageError> {
        let aging = self.aging;
        let dead = Listing::new(&filter.dead_letters(), None);
        let limit = clamp_limit(limit);
        self.write(move |tx| {
            // Dead letters an older version left in the live table come
            // from there; one writer moves rows, so none is in both.
            let mut select = tx.prepare_cached(&format!(
                "SELECT id, updated_at FROM finished_messages {}
                 UNION ALL
                 SELECT id, updated_at FROM messages {}
                 ORDER BY updated_at, id LIMIT {limit}",
                dead.finished_where, dead.live_where
            ))?;
            let ids = select
                .query_map(rusqlite::params_from_iter(&dead.values), |row| {
                    parse_column::<Stamp>(row, 0)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for id in &ids {
                replay_one(tx, *id, now, aging)?;
            }
            Ok(ids)
        })
        .await
    }

    async fn set_paused(
        &self,
        transport: &str,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<TransportState, StorageError> {
        let name = transport.to_owned();
        let state = self
            .write(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO transport_state (name, paused, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at",
                )?
                .execute(params![name, paused, to_millis(now)])?;
                Ok(TransportState { name, paused, updated_at: now })
            })
            .await?;
        self.state.notify([transport]);
        Ok(state)
    }

    async fn hold_transport(
        &self,
        transport: &str,
        node: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        dead_before: DateTime<Utc>,
    ) -> Result<bool, StorageError> {
        let (transport, node) = (transport.to_owned(), node.to_owned());
        self.write(move |tx| {
            let held = tx
                .prepare_cached(
                    "INSERT INTO transport_state (name, paused, updated_at, holder, held_until)
                     VALUES (?1, 0, ?3, ?2, ?4)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, held_until = excluded.held_until
                     WHERE transport_state.holder IS NULL OR transport_state.holder = excluded.holder
                        OR transport_state.held_until < ?3
                        OR NOT EXISTS (SELECT 1 FROM nodes
                                       WHERE nodes.id = transport_state.holder AND nodes.heartbeat_at >= ?5)
                     RETURNING holder",
                )?
                .query_row(
                    params![transport, node, to_millis(now), to_millis(until), to_millis(dead_before)],
                    |_| Ok(()),
                )
                .optional()?;
            Ok(held.is_some())
        })
        .await
    }

    async fn register_node(&self, node: &NodeInfo, now: DateTime<Utc>) -> Result<(), StorageError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(|e| {
                StorageError::Unavailable(format!("cannot open {}: {e}", self.lock_path.display()))
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StorageError::Config(format!(
                    "another Herald process is running on this SQLite file ({} is locked); only one process may use a SQLite store, run several nodes on PostgreSQL",
                    self.lock_path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StorageError::Unavailable(format!(
                    "cannot lock {}: {e}",
                    self.lock_path.display()
                )));
            }
        }
        let node = node.clone();
        let taken_over = self
            .write(move |tx| {
                // The lock proves every other process that used the file is
                // gone: whatever it claimed or drove is ours now.
                let taken_over = tx
                    .prepare_cached(
                        "UPDATE messages SET lease_until = ?1 WHERE status = 'processing'",
                    )?
                    .execute(params![to_millis(now)])?;
                tx.prepare_cached("DELETE FROM nodes")?.execute([])?;
                tx.prepare_cached(
                    "UPDATE transport_state SET holder = NULL, held_until = NULL WHERE holder IS NOT NULL",
                )?
                .execute([])?;
                upsert_node(tx, &node, now)?;
                Ok(taken_over)
            })
            .await?;
        if taken_over > 0 {
            tracing::warn!(
                claims = taken_over,
                "taking over the claims of the process that used this file before"
            );
        }
        *self.node_lock.lock().unwrap_or_else(|p| p.into_inner()) = Some(file);
        Ok(())
    }

    async fn heartbeat(&self, node: &NodeInfo, now: DateTime<Utc>) -> Result<(), StorageError> {
        let node = node.clone();
        self.write(move |tx| Ok(upsert_node(tx, &node, now)?)).await
    }

    async fn deregister_node(&self, node: &str, now: DateTime<Utc>) -> Result<(), StorageError> {
        let node = node.to_owned();
        let gone = self
            .write(move |tx| {
                tx.prepare_cached("DELETE FROM nodes WHERE id = ?1")?
                    .execute(params![node])?;
                tx.prepare_cached(
                    "UPDATE messages SET lease_until = ?2 WHERE status = 'processing' AND claimed_by = ?1",
                )?
                .execute(params![node, to_millis(now)])?;
                Ok(())
            })
            .await;
        // Dropping the file releases its lock, whatever happened to the row.
        drop(
            self.node_lock
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        gone
    }

    async fn release_transport(&self, transport: &str, node: &str) -> Result<(), StorageError> {
        let (transport, node) = (transport.to_owned(), node.to_owned());
        self.write(move |tx| {
            tx.prepare_cached(
                "UPDATE transport_state SET holder = NULL, held_until = NULL WHERE name = ?1 AND holder = ?2",
            )?
            .execute(params![transport, node])?;
            Ok(())
        })
        .await
    }

    async fn transport_states(&self) -> Result<Vec<TransportState>, StorageError> {
        self.reader()
            .call(|conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT name, paused, updated_at FROM transport_state ORDER BY name",
                )?;
                let states = stmt
                    .query_map([], |row| {
                        Ok(TransportState {
                            name: row.get(0)?,
                            paused: row.get(1)?,
                            updated_at: from_millis(row.get(2)?),
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(states)
            })
            .await
    }

    async fn find_by_provider_id(
        &self,
        transport: &str,
        provider_message_id: &str,
    ) -> Result<Option<Stamp>, StorageError> {
        let (transport, provider_message_id) =
            (transport.to_owned(), provider_message_id.to_owned());
        self.reader()
            .call(move |conn| {
                // The index's own expression and predicate, so it is used.
                let id: Option<String> = conn
                    .prepare_cached(
                        "SELECT message_id FROM message_events
                         WHERE transport = ?1 AND kind = 'sent'
                           AND json_extract(detail, '$.provider_message_id') = ?2
                         ORDER BY id DESC LIMIT 1",
                    )?
                    .query_row(params![transport, provider_message_id], |row| row.get(0))
                    .optional()?;
                id.map(|text| {
                    text.parse::<Stamp>().map_err(|e| {
                        StorageError::Corrupt(format!("message_events.message_id: {e}"))
                    })
                })
                .transpose()
            })
            .await
    }

    async fn get_message(&self, id: Stamp) -> Result<Option<MessageWithEvents>, StorageError> {
        self.reader()
            .call(move |conn| {
                // One read transaction: the events match the message row.
                let tx = conn.transaction()?;
                let Some(message) = load_message(&tx, id)? else {
                    return Ok(None);
                };
                let events = {
                    let mut stmt = tx.prepare_cached(
                        "SELECT kind, at, attempt, transport, started_at, duration_ms, error, detail
                         FROM message_events WHERE message_id = ?1 ORDER BY id",
                    )?;
                    stmt.query_map([id.to_string()], event_from_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()?
                };
                tx.finish()?;
                let events = with_queued_event(&message, events);
                Ok(Some(MessageWithEvents { message, events }))
            })
            .await
    }

    async fn record_feedback(
        &self,
        batch: FeedbackBatch,
        now: DateTime<Utc>,
    ) -> Result<FeedbackRecorded, StorageError> {
        let policy = self.suppression.clone();
        let rollups = self.rollups;
        self.write(move |tx| {
            if let Some(nonce) = &batch.nonce {
                let fresh = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO feedback_nonces (transport, nonce, seen_at)
                         VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![batch.transport, nonce, to_millis(now)])?;
                if fresh == 0 {
                    return Ok(FeedbackRecorded {
                        replay: true,
                        ..FeedbackRecorded::default()
                    });
                }
            }
            let events = batch.events.into_iter().map(|e| (e, now)).collect();
            feedback::apply(tx, &batch.transport, events, &policy, rollups, now)
        })
        .await
    }

    async fn rematch_feedback(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<FeedbackRecorded, StorageError> {
        let policy = self.suppression.clone();
        let rollups = self.rollups;
        let kept_since = super::feedback::ago(now, self.unmatched_keep);
        let nonces_since = super::feedback::ago(now, self.nonce_keep);
        let window_start = super::feedback::ago(now, self.suppression.soft_bounce_window);
        self.write(move |tx| {
            // What no longer counts: old nonces, expired entries, soft
            // bounces whose window has passed.
            tx.prepare_cached("DELETE FROM feedback_nonces WHERE seen_at < ?1")?
                .execute([to_millis(nonces_since)])?;
            tx.prepare_cached("DELETE FROM suppressions WHERE expires_at <= ?1")?
                .execute([to_millis(now)])?;
            tx.prepare_cached("DELETE FROM soft_bounces WHERE first_at < ?1")?
                .execute([to_millis(window_start)])?;
            let taken = feedback::take_unmatched(tx, clamp_limit(limit) as i64, kept_since)?;
            let mut total = FeedbackRecorded::default();
            for (transport, events) in taken {
                total.add(feedback::apply(
                    tx, &transport, events, &policy, rollups, now,
                )?);
            }
            Ok(total)
        })
        .await
    }

    async fn list_suppressions(
        &self,
        filter: &SuppressionFilter,
        after: Option<SuppressionCursor>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<Suppression>, StorageError> {
        let filter = filter.clone();
        let limit = clamp_limit(limit) as i64;
        self.reader()
            .call(move |conn| Ok(feedback::list(conn, &filter, after, limit, now)?))
            .await
    }

    async fn add_suppression(&self, entry: Suppression) -> Result<(), StorageError> {
        self.write(move |tx| Ok(feedback::put(tx, &entry)?)).await
    }

    async fn remove_suppression(
        &self,
        channel: Channel,
        address: &str,
    ) -> Result<u64, StorageError> {
        let address = address.to_owned();
        self.write(move |tx| {
            Ok(tx
                .prepare_cached("DELETE FROM suppressions WHERE channel = ?1 AND address = ?2")?
                .execute(params![channel.as_str(), address])? as u64)
        })
        .await
    }

    async fn list_messages(
        &self,
        filter: &MessageFilter,
        page: PageRequest,
    ) -> Result<Page, StorageError> {
        let listing = Listing::new(filter, page.after);
        let time_range = time_range_of(filter).map(|range| Listing::new(&range, None));
        let limit = clamp_limit(page.limit);
        self.reader()
            .call(move |conn| {
                let Listing {
                    live_where,
                    finished_where,
                    values,
                } = listing;
                // A time range's few matches are read by creation time
                // and sorted ([`FEW_IN_TIME_RANGE`]); `+id` keeps the
                // primary key from serving the order.
                let few_in_time = match &time_range {
                    None => false,
                    Some(range) => {
                        let counted: i64 = conn
                            .prepare_cached(&few_sql(&range.finished_where))?
                            .query_row(rusqlite::params_from_iter(&range.values), |row| {
                                row.get(0)
                            })?;
                        counted.max(0) as u64 <= FEW_IN_TIME_RANGE
                    }
                };
                let (by, order) = match few_in_time {
                    true => ("INDEXED BY finished_messages_created", "+id"),
                    false => ("", "id"),
                };
                // Newest first across both tables: each gives its own
                // newest, then they are merged.
                let sql = format!(
                    "SELECT * FROM (SELECT {MESSAGE_COLUMNS}, NULL AS delivery_detail
                                    FROM messages {live_where}
                                    ORDER BY id DESC LIMIT {n})
                     UNION ALL
                     SELECT * FROM (SELECT {FINISHED_COLUMNS} FROM finished_messages {by}
                                    {finished_where} ORDER BY {order} DESC LIMIT {n})
                     ORDER BY id DESC LIMIT {n}",
                    n = limit + 1
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let mut items = stmt
                    .query_map(rusqlite::params_from_iter(values), message_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let next = if items.len() > limit {
                    items.truncate(limit);
                    items.last().map(|m| m.id)
                } else {
                    None
                };
                Ok(Page { items, next })
            })
            .await
    }

    async fn count_messages(&self, filter: &MessageFilter) -> Result<MessageCount, StorageError> {
        let listing = Listing::new(filter, None);
        let since = filter.since.map(to_millis);
        self.reader()
            .call(move |conn| {
                let Listing {
                    live_where,
                    finished_where,
                    values,
                } = listing;
                let cap = EXACT_COUNT_LIMIT + 1;
                let matches = format!(
                    "SELECT id FROM messages {live_where}
                     UNION ALL SELECT id FROM finished_messages {finished_where}"
                );
                let counted: i64 = conn
                    .prepare_cached(&format!("SELECT count(*) FROM ({matches} LIMIT {cap})"))?
                    .query_row(rusqlite::params_from_iter(&values), |row| row.get(0))?;
                let counted = counted.max(0) as u64;
                if counted <= EXACT_COUNT_LIMIT {
                    return Ok(MessageCount {
                        count: counted,
                        estimated: false,
                    });
                }
                // Ids are ULIDs, made in time order: the newest `cap`
                // matches span some stretch of id time, and the matches
                // are taken to come as densely over the rest of the
                // store's span (from its oldest id, or `since`).
                let newest: Vec<Stamp> = conn
                    .prepare_cached(&format!(
                        "SELECT id FROM (SELECT id FROM messages {live_where}
                                         ORDER BY id DESC LIMIT {cap})
                         UNION ALL
                         SELECT id FROM (SELECT id FROM finished_messages {finished_where}
                                         ORDER BY id DESC LIMIT {cap})
                         ORDER BY id DESC LIMIT {cap}"
                    ))?
                    .query_map(rusqlite::params_from_iter(&values), |row| {
                        parse_column::<Stamp>(row, 0)
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                let oldest: Option<Stamp> = conn
                    .prepare_cached(
                        "SELECT min(id) FROM (SELECT min(id) AS id FROM messages
                                              UNION ALL SELECT min(id) FROM finished_messages)",
                    )?
                    .query_row([], |row| {
                        row.get::<_, Option<String>>(0)
                            .map(|id| id.and_then(|id| id.parse().ok()))
                    })?;
                let time = |id: &Stamp| id.0.timestamp_ms() as i64;
                let (Some(first), Some(last)) = (newest.first(), newest.last()) else {
                    return Ok(MessageCount {
                        count: cap,
                        estimated: true,
                    });
                };
                let (first, last) = (time(first), time(last));
                let from = oldest
                    .map_or(last, |id| time(&id))
                    .max(since.unwrap_or(i64::MIN))
                    .min(last);
                let sampled = (first - last).max(1) as f64;
                let estimate = cap as f64 * (first - from).max(1) as f64 / sampled;
                Ok(MessageCount {
                    count: (estimate.round() as u64).max(cap),
                    estimated: true,
                })
            })
            .await
    }

    async fn dead_letter_groups(
        &self,
        filter: &MessageFilter,
    ) -> Result<Vec<DeadLetterGroup>, StorageError> {
        let dead = Listing::new(&filter.dead_letters(), None);
        self.reader()
            .call(move |conn| {
                let columns = format!(
                    "transport, {} AS class, updated_at, last_error",
                    error_class_sql()
                );
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT transport, class, count(*), min(updated_at), max(updated_at),
                            max(last_error)
                     FROM (SELECT {columns} FROM finished_messages {finished}
                           UNION ALL
                           SELECT {columns} FROM messages {live})
                     GROUP BY transport, class ORDER BY 3 DESC, 1, 2",
                    finished = dead.finished_where,
                    live = dead.live_where,
                ))?;
                let groups = stmt
                    .query_map(rusqlite::params_from_iter(&dead.values), |row| {
                        Ok(DeadLetterGroup {
                            transport: row.get(0)?,
                            error_class: row.get(1)?,
                            count: row.get::<_, i64>(2)?.max(0) as u64,
                            oldest: from_millis(row.get(3)?),
                            newest: from_millis(row.get(4)?),
                            sample_error: row.get(5)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(groups)
            })
            .await
    }

    async fn expire_finished(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Expired, StorageError> {
        let retention = self.retention.clone();
        let limit = clamp_limit(limit) as i64;
        let expired = self
            .write(move |tx| {
                let mut expired = Expired::default();
                for kept in [Kept::Sent, Kept::Dead, Kept::Cancelled] {
                    let Some(shortest) = retention.shortest(kept) else {
                        continue;
                    };
                    let keep = retention.keep_ms_sql(kept, "transport", "category");
                    // Ordered, so both statements take the same batch.
                    let doomed = format!(
                        "SELECT id FROM finished_messages
                         WHERE status = '{status}' AND id < ?2 AND updated_at < ?1 - ({keep})
                         ORDER BY id LIMIT ?3",
                        status = kept.status()
                    );
                    let below = below_id(now, shortest).to_string();
                    let bounds = params![to_millis(now), below, limit];
                    tx.prepare_cached(&format!(
                        "DELETE FROM message_events WHERE message_id IN ({doomed})"
                    ))?
                    .execute(bounds)?;
                    tx.prepare_cached(&format!(
                        "DELETE FROM message_recipients WHERE message_id IN ({doomed})"
                    ))?
                    .execute(bounds)?;
                    expired.deleted += tx
                        .prepare_cached(&format!(
                            "DELETE FROM finished_messages WHERE id IN ({doomed})"
                        ))?
                        .execute(bounds)? as u64;
                }
                if let Some(shortest) = retention.shortest(Kept::PayloadAfterSent) {
                    let keep =
                        retention.keep_ms_sql(Kept::PayloadAfterSent, "transport", "category");
                    expired.payloads_dropped += tx
                        .prepare_cached(&format!(
                            "UPDATE finished_messages SET payload = NULL WHERE id IN (
                                 SELECT id FROM finished_messages
                                 WHERE status = 'sent' AND id < ?2 AND payload IS NOT NULL
                                   AND sent_at < ?1 - ({keep})
                                 LIMIT ?3)"
                        ))?
                        .execute(params![
                            to_millis(now),
                            below_id(now, shortest).to_string(),
                            limit
                        ])? as u64;
                }
                Ok(expired)
            })
            .await?;
        if expired.deleted > 0 {
            // Give the freed pages back, so the file shrinks (a store
            // created with auto_vacuum = INCREMENTAL; see open_connection).
            self.writer
                .call(|conn| {
                    // Each step of the pragma frees one page: step to the end.
                    let mut vacuum = conn.prepare("PRAGMA incremental_vacuum(2000)")?;
                    let mut steps = vacuum.query([])?;
                    while steps.next()?.is_some() {}
                    Ok(())
                })
                .await?;
        }
        Ok(expired)
    }

    async fn move_finished(&self, limit: usize) -> Result<u64, StorageError> {
        let limit = clamp_limit(limit) as i64;
        self.write(move |tx| {
            if shed_history_indexes(tx)? {
                return Ok(0);
            }
            let batch = "SELECT id FROM messages INDEXED BY messages_status
                         WHERE status IN ('sent', 'dead', 'cancelled') LIMIT ?1";
            let moved = tx
                .prepare_cached(&format!(
                    "INSERT INTO finished_messages ({MOVED_COLUMNS}, status, attempts, available_at,
                         sent_at, last_error, updated_at)
                     SELECT {MOVED_COLUMNS}, status, attempts, available_at, sent_at, last_error,
                         updated_at
                     FROM messages WHERE id IN ({batch})"
                ))?
                .execute([limit])?;
            tx.prepare_cached(&format!("DELETE FROM messages WHERE id IN ({batch})"))?
                .execute([limit])?;
            Ok(moved as u64)
        })
        .await
    }

    async fn failure_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<FailureCount>, StorageError> {
        self.reader()
            .call(move |conn| {
                let spans = RollupSpans::coarse(from, to, read_seal(conn)?);
                let mut stmt = conn.prepare_cached(&failure_totals_sql(question))?;
                let rows = stmt
                    .query_map(millis(&spans), |row| {
                        Ok(FailureCount {
                            minute: from,
                            transport: row.get(0)?,
                            channel: row.get(1)?,
                            category: row.get(2)?,
                            class: row.get(3)?,
                            error: row.get(4)?,
                            failures: row.get::<_, i64>(5)?.max(0) as u64,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await
    }

    async fn bounce_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<BounceCount>, StorageError> {
        self.reader()
            .call(move |conn| {
                let spans = RollupSpans::coarse(from, to, read_seal(conn)?);
                let mut stmt = conn.prepare_cached(&bounce_totals_sql(question))?;
                let rows = stmt
                    .query_map(millis(&spans), |row| {
                        Ok(BounceCount {
                            minute: from,
                            transport: row.get(0)?,
                            channel: row.get(1)?,
                            category: row.get(2)?,
                            bounce_type: row.get(3)?,
                            reason: row.get(4)?,
                            domain: row.get(5)?,
                            bounces: row.get::<_, i64>(6)?.max(0) as u64,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await
    }

    async fn compact_rollups(
        &self,
        seal_before: DateTime<Utc>,
        compact_before: DateTime<Utc>,
        purge_before: DateTime<Utc>,
    ) -> Result<(u64, u64), StorageError> {
        self.write(move |tx| {
            const HOUR: &str = "(minute - minute % 3600000)";
            let plan =
                CompactionPlan::new(read_seal(tx)?, seal_before, compact_before, purge_before);
            let families = compaction_sql(HOUR, question);
            if let Some((from, to)) = plan.seal {
                let span = params![to_millis(from), to_millis(to)];
                for family in &families {
                    tx.prepare_cached(&family.clear_hours)?.execute(span)?;
                    tx.prepare_cached(&family.seal_hours)?.execute(span)?;
                }
            }
            let (mut merged, mut purged) = (0, 0);
            for family in &families {
                merged += tx
                    .prepare_cached(&family.delete_minutes)?
                    .execute([to_millis(plan.delete_minutes_before)])?;
                purged += tx
                    .prepare_cached(&family.purge_hours)?
                    .execute([to_millis(plan.purge_before)])?;
            }
            tx.prepare_cached(&write_seal_sql(question))?.execute([
                to_millis(plan.after.sealed_until),
                to_millis(plan.after.minutes_from),
            ])?;
            Ok((merged as u64, purged as u64))
        })
        .await
    }

    async fn dead_letter_summary(&self) -> Result<Vec<DeadLetterSummary>, StorageError> {
        self.reader()
            .call(|conn| {
                // Dead letters an older version left in the live table,
                // while they wait to move.
                let unmoved = if has_index(conn, "messages_dead_since")? {
                    "UNION ALL
                     SELECT transport, channel, category, updated_at
                     FROM messages INDEXED BY messages_dead_since WHERE status = 'dead'"
                } else {
                    ""
                };
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT transport, channel, coalesce(category, ''), count(*), min(updated_at)
                     FROM (SELECT transport, channel, category, updated_at FROM finished_messages
                           WHERE status = 'dead'
                           {unmoved})
                     GROUP BY transport, channel, category ORDER BY 1, 2, 3"
                ))?;
                let rows = stmt
                    .query_map([], |row| {
                        Ok(DeadLetterSummary {
                            transport: row.get(0)?,
                            channel: parse_column(row, 1)?,
                            category: row.get(2)?,
                            count: row.get::<_, i64>(3)?.max(0) as u64,
                            oldest: time_column(row, 4)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await
    }

    async fn minute_metrics(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MinuteMetrics>, StorageError> {
        self.reader()
            .call(move |conn| {
                Ok(metric_rows(
                    conn,
                    &rollup_rows_sql(question),
                    RollupSpans::fine(from, to, read_seal(conn)?),
                )?)
            })
            .await
    }

    async fn series_counts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        hourly: bool,
        scope: &Scope,
    ) -> Result<Vec<SeriesCounts>, StorageError> {
        let scope = scope.clone();
        self.reader()
            .call(move |conn| {
                let spans = RollupSpans::new(from, to, read_seal(conn)?, hourly);
                let mut stmt = conn.prepare_cached(&series_sql(question))?;
                let [a, b, c, d, e, f] = millis(&spans);
                let count = |row: &Row<'_>, i: usize| -> rusqlite::Result<u64> {
                    Ok(row.get::<_, i64>(i)?.max(0) as u64)
                };
                let rows = stmt
                    .query_map(
                        params![
                            a,
                            b,
                            c,
                            d,
                            e,
                            f,
                            scope.transport,
                            scope.channel,
                            scope.category
                        ],
                        |row| {
                            let counts = (1..=SeriesCounts::columns().count())
                                .map(|i| count(row, i))
                                .collect::<rusqlite::Result<Vec<u64>>>()?;
                            Ok(SeriesCounts::from_counts(from_millis(row.get(0)?), &counts))
                        },
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await
    }

    async fn rollup_totals(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MinuteMetrics>, StorageError> {
        self.reader()
            .call(move |conn| {
                let spans = RollupSpans::coarse(from, to, read_seal(conn)?);
                let rows = metric_rows(conn, &rollup_totals_sql(question), spans)?;
                Ok(rows
                    .into_iter()
                    .map(|m| MinuteMetrics { minute: from, ..m })
                    .collect())
            })
            .await
    }

    async fn add_rollups(&self, rows: Vec<MinuteMetrics>) -> Result<(), StorageError> {
        self.write(move |tx| {
            for metrics in &rows {
                add_metrics(tx, metrics)?;
            }
            Ok(())
        })
        .await
    }

    async fn open_alert(
        &self,
        alert: NewAlert,
        quiet_since: DateTime<Utc>,
    ) -> Result<Option<Alert>, StorageError> {
        self.write(move |tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "INSERT INTO alerts (id, rule, kind, transport, state, threshold, window_s, fired_value,
                     last_value, fired_at, checked_at, notified)
                 VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?6, ?7, ?7, ?8, ?8,
                     NOT EXISTS (SELECT 1 FROM alerts WHERE rule = ?2 AND transport = ?4
                                 AND notified = 1 AND fired_at >= ?9))
                 ON CONFLICT DO NOTHING
                 RETURNING {ALERT_COLUMNS}"
            ))?;
            let opened = stmt
                .query_row(
                    params![
                        alert.id.to_string(),
                        alert.rule,
                        alert.kind,
                        alert.transport,
                        alert.threshold,
                        alert.window_s.map(|w| i64::try_from(w).unwrap_or(i64::MAX)),
                        alert.value,
                        to_millis(alert.fired_at),
                        to_millis(quiet_since),
                    ],
                    alert_from_row,
                )
                .optional()?;
            Ok(opened)
        })
        .await
    }

    async fn check_alert(
        &self,
        id: ulid::Ulid,
        value: f64,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        self.write(move |tx| {
            tx.prepare_cached(
                "UPDATE alerts SET last_value = ?2, checked_at = ?3 WHERE id = ?1 AND state = 'active'",
            )?
            .execute(params![id.to_string(), value, to_millis(now)])?;
            Ok(())
        })
        .await
    }

    async fn set_alert_paused(
        &self,
        id: ulid::Ulid,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        self.write(move |tx| {
            tx.prepare_cached(
                "UPDATE alerts SET paused_at = ?2 WHERE id = ?1 AND paused_at IS NULL",
            )?
            .execute(params![id.to_string(), to_millis(now)])?;
            Ok(())
        })
        .await
    }

    async fn resolve_alert(
        &self,
        id: ulid::Ulid,
        value: f64,
        now: DateTime<Utc>,
    ) -> Result<Option<Alert>, StorageError> {
        self.write(move |tx| {
            let resolved = tx
                .prepare_cached(&format!(
                    "UPDATE alerts SET state = 'resolved', last_value = ?2, checked_at = ?3, resolved_at = ?3
                     WHERE id = ?1 AND state = 'active' RETURNING {ALERT_COLUMNS}"
                ))?
                .query_row(params![id.to_string(), value, to_millis(now)], alert_from_row)
                .optional()?;
            Ok(resolved)
        })
        .await
    }

    async fn set_alert_notice(
        &self,
        id: ulid::Ulid,
        notice: AlertNotice,
        message: Stamp,
    ) -> Result<(), StorageError> {
        let column = match notice {
            AlertNotice::Fired => "fired_message_id",
            AlertNotice::Resolved => "resolved_message_id",
        };
        self.write(move |tx| {
            tx.prepare_cached(&format!("UPDATE alerts SET {column} = ?2 WHERE id = ?1"))?
                .execute(params![id.to_string(), message.to_string()])?;
            Ok(())
        })
        .await
    }

    async fn alerts_awaiting_notice(&self) -> Result<Vec<Alert>, StorageError> {
        self.reader()
            .call(|conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {ALERT_COLUMNS} FROM alerts
                     WHERE notified = 1 AND (fired_message_id IS NULL
                                             OR (state = 'resolved' AND resolved_message_id IS NULL))
                     ORDER BY id"
                ))?;
                let alerts = stmt
                    .query_map([], alert_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(alerts)
            })
            .await
    }

    async fn list_alerts(
        &self,
        state: Option<AlertState>,
        limit: usize,
    ) -> Result<Vec<Alert>, StorageError> {
        let limit = clamp_limit(limit) as i64;
        self.reader()
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {ALERT_COLUMNS} FROM alerts WHERE (?1 IS NULL OR state = ?1)
                     ORDER BY id DESC LIMIT ?2"
                ))?;
                let alerts = stmt
                    .query_map(
                        params![state.map(AlertState::as_str), limit],
                        alert_from_row,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(alerts)
            })
            .await
    }

    async fn create_replay_job(&self, job: &ReplayJob) -> Result<(), StorageError> {
        let job = job.clone();
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO replay_jobs (id, state, transport, channel, category, error_class,
                     total, replayed, owner, created_at, updated_at, finished_at, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                job.id.to_string(),
                job.state.as_str(),
                job.transport,
                job.channel.map(|c| c.as_str()),
                job.category,
                job.error_class,
                job.total.min(i64::MAX as u64) as i64,
                job.replayed.min(i64::MAX as u64) as i64,
                job.owner,
                to_millis(job.created_at),
                to_millis(job.updated_at),
                job.finished_at.map(to_millis),
                job.error,
            ])?;
            Ok(())
        })
        .await
    }

    async fn replay_job(&self, id: Stamp) -> Result<Option<ReplayJob>, StorageError> {
        self.reader()
            .call(move |conn| {
                let job = conn
                    .prepare_cached(&format!(
                        "SELECT {REPLAY_JOB_COLUMNS} FROM replay_jobs WHERE id = ?1"
                    ))?
                    .query_row([id.to_string()], replay_job_from_row)
                    .optional()?;
                Ok(job)
            })
            .await
    }

    async fn list_replay_jobs(&self, limit: usize) -> Result<Vec<ReplayJob>, StorageError> {
        let limit = clamp_limit(limit) as i64;
        self.reader()
            .call(move |conn| {
                let jobs = conn
                    .prepare_cached(&format!(
                        "SELECT {REPLAY_JOB_COLUMNS} FROM replay_jobs ORDER BY id DESC LIMIT ?1"
                    ))?
                    .query_map([limit], replay_job_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(jobs)
            })
            .await
    }

    async fn take_replay_job(
        &self,
        node: &str,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<Option<ReplayJob>, StorageError> {
        let node = node.to_owned();
        // One writer: the statement is atomic against every other one.
        self.write(move |tx| {
            let job = tx
                .prepare_cached(&format!(
                    "UPDATE replay_jobs SET owner = ?1, updated_at = ?2
                     WHERE id = (SELECT id FROM replay_jobs
                                 WHERE state = 'running'
                                   AND (owner IS NULL OR owner = ?1 OR updated_at < ?3)
                                 ORDER BY id LIMIT 1)
                     RETURNING {REPLAY_JOB_COLUMNS}"
                ))?
                .query_row(
                    params![node, to_millis(now), to_millis(stale_before)],
                    replay_job_from_row,
                )
                .optional()?;
            Ok(job)
        })
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
        let node = node.to_owned();
        let finished_at = (state != ReplayJobState::Running).then_some(to_millis(now));
        self.write(move |tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE replay_jobs SET replayed = replayed + ?3, state = ?4, error = ?5,
                         updated_at = ?6, finished_at = ?7
                     WHERE id = ?1 AND owner = ?2 AND state = 'running'",
                )?
                .execute(params![
                    id.to_string(),
                    node,
                    replayed.min(i64::MAX as u64) as i64,
                    state.as_str(),
                    error,
                    to_millis(now),
                    finished_at,
                ])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn queue_depth(&self) -> Result<Vec<DepthRow>, StorageError> {
        self.reader()
            .call(|conn| {
                let mut stmt = conn.prepare_cached(
                    // One scan per status, so that each reads only its
                    // own partial (covering) index; named, since without
                    // statistics SQLite would take messages_status and
                    // visit every row.
                    "SELECT transport, priority, channel, category,
                            sum(queued), sum(processing), min(oldest)
                     FROM (
                         SELECT transport, priority, channel, coalesce(category, '') AS category,
                                count(*) AS queued, 0 AS processing, min(available_at) AS oldest
                         FROM messages INDEXED BY messages_claim WHERE status = 'queued'
                         GROUP BY transport, priority, channel, coalesce(category, '')
                         UNION ALL
                         SELECT transport, priority, channel, coalesce(category, ''),
                                0, count(*), NULL
                         FROM messages INDEXED BY messages_lease WHERE status = 'processing'
                         GROUP BY transport, priority, channel, coalesce(category, '')
                     )
                     GROUP BY transport, priority, channel, category
                     ORDER BY 1, 2 DESC, 3, 4",
                )?;
                let rows = stmt
                    .query_map([], |row| {
                        Ok(DepthRow {
                            transport: row.get(0)?,
                            priority: Priority::new(row.get(1)?).unwrap_or_default(),
                            channel: parse_column(row, 2)?,
                            category: row.get(3)?,
                            queued: row.get::<_, i64>(4)?.max(0) as u64,
                            processing: row.get::<_, i64>(5)?.max(0) as u64,
                            oldest_available: time_column(row, 6)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::ffi;

    use super::*;

    fn failure(code: std::ffi::c_int) -> StorageError {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), None).into()
    }

    #[test]
    fn a_full_disk_is_a_full_store_worth_retrying() {
        let err = failure(ffi::SQLITE_FULL);
        assert!(matches!(err, StorageError::Full(_)), "{err:?}");
        assert!(err.is_transient());
    }

    #[test]
    fn a_file_that_cannot_be_written_is_an_unavailable_store() {
        for code in [
            ffi::SQLITE_READONLY,
            ffi::SQLITE_READONLY_DBMOVED,
            ffi::SQLITE_IOERR,
            ffi::SQLITE_IOERR_WRITE,
            ffi::SQLITE_IOERR_FSYNC,
            ffi::SQLITE_CANTOPEN,
            ffi::SQLITE_PERM,
            ffi::SQLITE_NOMEM,
            ffi::SQLITE_BUSY,
            ffi::SQLITE_LOCKED,
        ] {
            let err = failure(code);
            assert!(
                matches!(err, StorageError::Unavailable(_)),
                "{code}: {err:?}"
            );
            assert!(err.is_transient(), "{code}");
        }
    }

    #[test]
    fn faults_of_the_statement_or_the_data_are_not_retried() {
        for code in [
            ffi::SQLITE_CONSTRAINT,
            ffi::SQLITE_CONSTRAINT_UNIQUE,
            ffi::SQLITE_MISMATCH,
            ffi::SQLITE_TOOBIG,
            ffi::SQLITE_CORRUPT,
            ffi::SQLITE_ERROR,
        ] {
            let err = failure(code);
            assert!(matches!(err, StorageError::Backend(_)), "{code}: {err:?}");
            assert!(!err.is_transient(), "{code}");
        }
    }
}
