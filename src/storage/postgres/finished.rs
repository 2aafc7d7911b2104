//! PostgreSQL's finished messages: the day partitions of
//! `finished_messages` and of `message_events` (created ahead, and on
//! demand for a day that has none), the day a finishing message is filed
//! under, and retention: whole days dropped with their partitions, the
//! rest deleted in bounded batches; and the end of the move of what older
//! stores kept in the live table.

use chrono::{DateTime, NaiveDate, Utc};

use crate::storage::StorageError;
use crate::storage::retention::{Expired, Kept, Retention, below_id};
use crate::storage::sql::HISTORY_INDEXES;

/// `finished_on` of messages filed apart from the days: those whose
/// retention is not the default rule's (the `finished_messages_kept`
/// partition).
pub(super) const KEPT_DAY: &str = "9999-01-01";
/// `finished_on` of the events of live messages: they wait in
/// `message_events_live` and move with their message when it finishes.
pub(super) const LIVE_DAY: &str = "0001-01-01";
/// Day partitions made ready beyond today.
const AHEAD_DAYS: u64 = 7;
/// Serialises partition changes when several nodes make them at once.
const PARTITION_LOCK: i64 = 0x4845_5241_4c45; // "HERALE"

/// The `finished_on` a message finishing at `now` (an SQL expression) is
/// filed under: its UTC day, or [`KEPT_DAY`] when its retention differs
/// from the default, so that dropping a day's partition expires exactly
/// the default rule's messages.
pub(super) fn bucket_sql(
    retention: &Retention,
    now: &str,
    transport: &str,
    category: &str,
) -> String {
    let day = format!("({now} AT TIME ZONE 'UTC')::date");
    if retention
        .overrides
        .iter()
        .all(|o| o.rule == retention.default)
    {
        return day;
    }
    format!(
        "CASE WHEN {} THEN DATE '{KEPT_DAY}' ELSE {day} END",
        retention.differs_sql(transport, category)
    )
}

/// The day partitions of the two tables filed by finish day.
const DAY_TABLES: [&str; 2] = ["finished_messages", "message_events"];

fn partition_name(table: &str, day: NaiveDate) -> String {
    format!("{table}_p{}", day.format("%Y%m%d"))
}

/// The UTC day of an instant.
pub(super) fn day_of(at: DateTime<Utc>) -> NaiveDate {
    at.date_naive()
}

/// Makes sure the partitions of `from` and the [`AHEAD_DAYS`] after it
/// exist. Each is created empty and then attached, which takes only a
/// SHARE UPDATE EXCLUSIVE lock on `finished_messages`: outcomes, reads and
/// retention go on meanwhile.
pub(super) async fn ensure_partitions(
    client: &mut deadpool_postgres::Object,
    from: NaiveDate,
) -> Result<u32, StorageError> {
    let days: Vec<NaiveDate> = (0..=AHEAD_DAYS)
        .map(|offset| from + chrono::Days::new(offset))
        .collect();
    let names: Vec<String> = days
        .iter()
        .map(|day| partition_name("finished_messages", *day))
        .collect();
    // One look for all the days: retention calls this every round.
    let present = existing(client, &names).await?;
    let mut created = 0;
    for ((day, name), present) in days.into_iter().zip(names).zip(present) {
        if present {
            continue;
        }
        let tx = client.transaction().await?;
        // Never queue for long behind a long-running statement's lock:
        // the next maintenance round, or the next outcome, tries again.
        tx.batch_execute("SET LOCAL lock_timeout = '5s'").await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
            .await?;
        let raced = tx
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
            .await?
            .try_get::<_, bool>(0)?;
        if raced {
            tx.commit().await?;
            continue;
        }
        let next = day + chrono::Days::new(1);
        // The events' partition first: a day whose messages' partition
        // exists always has its events' one.
        let sql: String = DAY_TABLES
            .iter()
            .rev()
            .map(|table| {
                let part = partition_name(table, day);
                format!(
                    "CREATE TABLE {part} (LIKE {table} INCLUDING DEFAULTS);
                     ALTER TABLE {table} ATTACH PARTITION {part} FOR VALUES FROM ('{day}') TO ('{next}');"
                )
            })
            .collect();
        let made = tx.batch_execute(&sql).await;
        match made {
            Ok(()) => {
                tx.commit().await?;
                created += 1;
            }
            // Another node made it between the look and the lock.
            Err(err) if err.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_TABLE) => {
                tx.rollback().await?;
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(created)
}

/// Which of the relations `names` exist, in their order, in one look.
pub(super) async fn existing(
    client: &deadpool_postgres::Object,
    names: &[impl AsRef<str>],
) -> Result<Vec<bool>, StorageError> {
    let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    Ok(client
        .query_one(
            "SELECT array_agg(to_regclass(n) IS NOT NULL ORDER BY i)
             FROM unnest($1::text[]) WITH ORDINALITY AS t(n, i)",
            &[&names],
        )
        .await?
        .try_get(0)?)
}

async fn exists(client: &deadpool_postgres::Object, name: &str) -> Result<bool, StorageError> {
    Ok(client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .await?
        .try_get::<_, bool>(0)?)
}

/// A finishing message met a day without its partition (a clock far
/// from the days made ready, or maintenance not yet run).
pub(super) fn is_missing_partition(err: &StorageError) -> bool {
    matches!(err, StorageError::Backend(message) if message.contains("no partition of relation"))
}

/// Deletes up to `limit` finished messages of each status that retention
/// no longer keeps, with their events and idempotency keys, and drops up
/// to `limit` payloads of sent messages past `payload_after_sent`. Each
/// statement starts below the id of the newest message any rule could
/// have expired, and finds its rows through the index of unsent ones
/// (dead, cancelled) or the primary key (sent), and touches no live
/// message.
pub(super) async fn expire(
    client: &deadpool_postgres::Object,
    retention: &Retention,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Expired, StorageError> {
    let mut expired = Expired {
        days_dropped: drop_expired_days(client, retention, now).await?,
        ..Expired::default()
    };
    for kept in [Kept::Sent, Kept::Dead, Kept::Cancelled] {
        let Some(shortest) = retention.shortest(kept) else {
            continue;
        };
        let keep = retention.keep_ms_sql(kept, "f.transport", "f.category");
        let below = uuid::Uuid::from(below_id(now, shortest));
        // Sent messages of the default rule expire with their day's
        // partition; dead and cancelled ones the default keeps shorter
        // than that are deleted here, longer ones moved apart at the drop.
        let apart = if kept == Kept::Sent {
            format!("AND f.finished_on = DATE '{KEPT_DAY}'")
        } else {
            String::new()
        };
        let statement = client
            .prepare_cached(&format!(
                "WITH doomed AS (
                     SELECT f.id, f.finished_on, f.idempotency_key FROM finished_messages f
                     WHERE f.status = '{status}' AND f.id < $2 {apart}
                       AND f.updated_at < $1::timestamptz - ({keep}) * interval '1 millisecond'
                     LIMIT $3
                 ), gone AS (
                     DELETE FROM finished_messages f USING doomed d
                     WHERE f.id = d.id AND f.finished_on = d.finished_on
                     RETURNING f.id
                 ), events AS (
                     DELETE FROM message_events WHERE message_id IN (SELECT id FROM gone)
                 ), legacy AS (
                     DELETE FROM message_events_legacy WHERE message_id IN (SELECT id FROM gone)
                 ), keys AS (
                     DELETE FROM idempotency_keys k USING doomed d
                     WHERE k.key = d.idempotency_key AND k.message_id = d.id
                 )
                 SELECT count(*) FROM gone",
                status = kept.status()
            ))
            .await?;
        let row = client
            .query_one(&statement, &[&now, &below, &limit])
            .await?;
        expired.deleted += row.try_get::<_, i64>(0)?.max(0) as u64;
    }
    if let Some(shortest) = retention.shortest(Kept::PayloadAfterSent) {
        let keep = retention.keep_ms_sql(Kept::PayloadAfterSent, "f.transport", "f.category");
        let below = uuid::Uuid::from(below_id(now, shortest));
        let statement = client
            .prepare_cached(&format!(
                "WITH bare AS (
                     SELECT f.id, f.finished_on FROM finished_messages f
                     WHERE f.status = 'sent' AND f.id < $2 AND f.payload IS NOT NULL
                       AND f.sent_at < $1::timestamptz - ({keep}) * interval '1 millisecond'
                     LIMIT $3
                 )
                 UPDATE finished_messages f SET payload = NULL FROM bare b
                 WHERE f.id = b.id AND f.finished_on = b.finished_on"
            ))
            .await?;
        expired.payloads_dropped += client.execute(&statement, &[&now, &below, &limit]).await?;
    }
    Ok(expired)
}

/// Moves up to `limit` finished messages stored before live and finished
/// were kept apart out of `messages`, with their idempotency keys, filed
/// apart ([`KEPT_DAY`]): their finish days have no partitions, and the
/// bounded deletes expire them by their rules.
pub(super) const MOVE_FINISHED_SQL: &str = "
WITH batch AS (
    SELECT id FROM messages WHERE status IN ('sent', 'dead', 'cancelled')
    LIMIT $1 FOR UPDATE SKIP LOCKED
), moved AS (
    DELETE FROM messages m USING batch b WHERE m.id = b.id RETURNING m.*
), keys AS (
    INSERT INTO idempotency_keys (key, message_id, created_at)
    SELECT idempotency_key, id, created_at FROM moved WHERE idempotency_key IS NOT NULL
    ON CONFLICT (key) DO NOTHING
), finished AS (
    INSERT INTO finished_messages (id, channel, transport, category, status, priority, payload,
        metadata, fingerprint, idempotency_key, attempts, max_attempts, created_at, available_at,
        sent_at, last_error, updated_at, finished_on, recipients)
    SELECT id, channel, transport, category, status, priority, payload, metadata, fingerprint,
           idempotency_key, attempts, max_attempts, created_at, available_at, sent_at, last_error,
           updated_at, DATE '9999-01-01', recipients
    FROM moved
    RETURNING id
)
SELECT count(*) FROM finished";

/// Drops the day partitions (messages and their events) of every day the
/// default rule's `sent` keep has passed: the bulk of finished messages
/// expires without a DELETE. The default rule's dead and cancelled
/// messages of such a day that it keeps longer are first moved apart, in
/// bounded batches. Each drop detaches the partition CONCURRENTLY, so
/// outcomes and reads go on meanwhile.
async fn drop_expired_days(
    client: &deadpool_postgres::Object,
    retention: &Retention,
    now: DateTime<Utc>,
) -> Result<u64, StorageError> {
    let Some(sent) = retention.default.sent else {
        return Ok(0);
    };
    let Some(cutoff) = chrono::Duration::from_std(sent)
        .ok()
        .and_then(|keep| now.checked_sub_signed(keep))
    else {
        return Ok(0);
    };
    // A day's messages all finished before its end: the day has expired
    // once its end is at least `sent` ago.
    let before = day_of(cutoff);
    let mut dropped = 0;
    for day in day_partitions(client).await? {
        if day >= before {
            continue;
        }
        let started = std::time::Instant::now();
        let ms = |from: std::time::Instant| from.elapsed().as_millis() as u64;
        for (kept, status) in [(Kept::Dead, "dead"), (Kept::Cancelled, "cancelled")] {
            let longer = retention.default_keep(kept).is_none_or(|keep| keep > sent);
            if longer {
                keep_apart(client, day, status).await?;
            }
        }
        free_keys(client, day).await?;
        let prepared_ms = ms(started);
        let detaching = std::time::Instant::now();
        let parts = DAY_TABLES.map(|table| partition_name(table, day));
        for part in &parts {
            detach(client, part).await?;
        }
        let detach_ms = ms(detaching);
        let dropping = std::time::Instant::now();
        // One statement, one commit, for both.
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {}", parts.join(", ")))
            .await?;
        // The steps' shares tell an operator what a slow drop waited for.
        tracing::info!(
            %day,
            elapsed_ms = ms(started),
            prepared_ms,
            detach_ms,
            drop_ms = ms(dropping),
            "retention dropped a day of finished messages"
        );
        dropped += 1;
    }
    Ok(dropped)
}

/// The days that have partitions of finished messages, oldest first.
async fn day_partitions(
    client: &deadpool_postgres::Object,
) -> Result<Vec<NaiveDate>, StorageError> {
    let rows = client
        .query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'finished_messages'::regclass
               AND c.relname LIKE 'finished\\_messages\\_p%'",
            &[],
        )
        .await?;
    let mut days: Vec<NaiveDate> = rows
        .iter()
        .filter_map(|row| {
            let name: String = row.get(0);
            NaiveDate::parse_from_str(name.strip_prefix("finished_messages_p")?, "%Y%m%d").ok()
        })
        .collect();
    days.sort();
    Ok(days)
}

/// Deletes the idempotency keys of a day's messages, a batch at a time in
/// key order (through the day's index of keyed messages, empty on a day
/// without keys), so that `idempotency_keys` shrinks as the days go.
async fn free_keys(client: &deadpool_postgres::Object, day: NaiveDate) -> Result<(), StorageError> {
    let part = partition_name("finished_messages", day);
    let statement = format!(
        "WITH batch AS (
             SELECT id, idempotency_key FROM {part}
             WHERE idempotency_key IS NOT NULL AND idempotency_key > $1
             ORDER BY idempotency_key LIMIT 1000
         ), gone AS (
             DELETE FROM idempotency_keys k USING batch b
             WHERE k.key = b.idempotency_key AND k.message_id = b.id
         )
         SELECT max(idempotency_key) FROM batch"
    );
    let mut after = String::new();
    while let Some(last) = client
        .query_one(&statement, &[&after])
        .await?
        .try_get::<_, Option<String>>(0)?
    {
        after = last;
    }
    Ok(())
}

/// Moves a day's messages of `status`, with their events, to the
/// partitions of messages kept apart, a batch at a time.
async fn keep_apart(
    client: &deadpool_postgres::Object,
    day: NaiveDate,
    status: &str,
) -> Result<(), StorageError> {
    let part = partition_name("finished_messages", day);
    let statement = format!(
        "WITH batch AS (SELECT id FROM {part} WHERE status = $1 LIMIT 1000),
         events AS (
             UPDATE message_events SET finished_on = DATE '{KEPT_DAY}'
             WHERE finished_on = $2 AND message_id IN (SELECT id FROM batch)
         )
         UPDATE finished_messages SET finished_on = DATE '{KEPT_DAY}'
         WHERE finished_on = $2 AND id IN (SELECT id FROM batch)"
    );
    while client.execute(&statement, &[&status, &day]).await? > 0 {}
    Ok(())
}

/// Detaches a partition without blocking its table's readers and
/// writers. A detach an earlier round began and did not end is finished.
async fn detach(client: &deadpool_postgres::Object, part: &str) -> Result<(), StorageError> {
    let Some(parent) = DAY_TABLES
        .iter()
        .find(|t| part.starts_with(&format!("{t}_p")))
    else {
        return Ok(());
    };
    if exists(client, part).await? {
        let attached = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1))",
                &[&part],
            )
            .await?
            .try_get::<_, bool>(0)?;
        if attached {
            let pending = client
                .query_one(
                    "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = to_regclass($1)",
                    &[&part],
                )
                .await?
                .try_get::<_, bool>(0)?;
            let how = if pending { "FINALIZE" } else { "CONCURRENTLY" };
            client
                .batch_execute(&format!(
                    "ALTER TABLE {parent} DETACH PARTITION {part} {how}"
                ))
                .await?;
        }
    }
    Ok(())
}

/// Once no finished message is left in `messages`, its indexes that only
/// finished messages needed go ([`HISTORY_INDEXES`]), replaced by
/// `messages_unmoved`, which holds only finished rows and so stays empty.
/// The unique key constraint, which indexes every message (NULL keys
/// too), gives way to `messages_idempotency`, of keyed messages only.
/// On a small table in one short transaction; on a large one CONCURRENTLY,
/// so that enqueue and delivery go on. Nothing while rows wait to move.
/// Then the live table gets its lean layout ([`super::live::relay`]).
pub(super) async fn finish_split(
    client: &mut deadpool_postgres::Object,
) -> Result<(), StorageError> {
    if existing(client, &HISTORY_INDEXES).await?.contains(&true) {
        // One node at a time.
        if !super::try_schema_upkeep_lock(client).await? {
            return Ok(());
        }
        let shed = shed_history_indexes(client).await;
        super::schema_upkeep_unlock(client).await?;
        if !shed? {
            return Ok(());
        }
    }
    super::live::relay(client).await?;
    Ok(())
}

/// Drops the history indexes if no finished message waits to move;
/// returns whether they are gone.
async fn shed_history_indexes(
    client: &mut deadpool_postgres::Object,
) -> Result<bool, StorageError> {
    let unmoved = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE status IN ('sent', 'dead', 'cancelled'))",
            &[],
        )
        .await?
        .try_get::<_, bool>(0)?;
    if unmoved {
        return Ok(false);
    }
    const UNMOVED: &str = "messages_unmoved ON messages (status, id)
        WHERE status IN ('sent', 'dead', 'cancelled')";
    const KEYED: &str = "messages_idempotency ON messages (idempotency_key)
        WHERE idempotency_key IS NOT NULL";
    const KEY_CONSTRAINT: &str = "messages_idempotency_key_key";
    let small = super::live::small(&*client, "messages").await?;
    if small {
        let tx = client.transaction().await?;
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = '5s';
             CREATE INDEX IF NOT EXISTS {UNMOVED};
             CREATE UNIQUE INDEX IF NOT EXISTS {KEYED};
             ALTER TABLE messages DROP CONSTRAINT IF EXISTS {KEY_CONSTRAINT};
             DROP INDEX IF EXISTS {};",
            HISTORY_INDEXES.join(", ")
        ))
        .await?;
        tx.commit().await?;
        return Ok(true);
    }
    for (name, definition) in [
        ("messages_unmoved", UNMOVED),
        ("messages_idempotency", KEYED),
    ] {
        let on = definition.strip_prefix(name).unwrap_or(definition);
        let unique = name == "messages_idempotency";
        super::partition_indexes::build_concurrently(client, unique, name, on).await?;
    }
    // Dropping a constraint takes a moment's exclusive lock.
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '5s';
         ALTER TABLE messages DROP CONSTRAINT IF EXISTS {KEY_CONSTRAINT};"
    ))
    .await?;
    tx.commit().await?;
    // One index per statement: CONCURRENTLY drops one at a time.
    for name in HISTORY_INDEXES {
        client
            .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
            .await?;
    }
    tracing::info!("finished messages all moved; the live table's history indexes are dropped");
    Ok(true)
}
