//! SQL text both backends run, written once: the column lists rows are
//! read by, the rollup reads and the statements over the rollup tables.
//! Where the dialects differ (the parameter syntax, a function's name)
//! the builders take the difference as an argument.

use chrono::{DateTime, Utc};

use super::MessageFilter;
use super::rollups::{SeriesCounts, is_max_column, metric_columns};
use crate::delivery::errors::{ERROR_CLASSES, LEASE_EXPIRED_CLASS, UNKNOWN_CLASS};
use crate::domain::{DeliveryState, Stamp};

/// The `messages` columns every read of a message selects (SQLite's
/// `message_from_row` reads them by position: the order matters).
pub(crate) const MESSAGE_COLUMNS: &str = "id, channel, transport, category, status, priority, \
    payload, metadata, fingerprint, idempotency_key, attempts, max_attempts, created_at, \
    available_at, lease_until, claim_token, sent_at, last_error, updated_at";

/// A value a condition of [`filter_conditions`] binds, which each backend
/// writes in its own types.
pub(crate) enum FilterValue {
    Text(String),
    Id(Stamp),
    Time(DateTime<Utc>),
    /// A normalised recipient, for the backend's recipient condition.
    Recipient(String),
}

/// The conditions of `filter` but its delivery state (which
/// [`listing_wheres`] adds) and, with `after`, ids below it, with the
/// values they bind as `p(1)`, `p(2)`, ... in order. `recipient(p)` is the
/// backend's condition on a recipient bound as `p`.
pub(crate) fn filter_conditions(
    filter: &MessageFilter,
    after: Option<Stamp>,
    p: impl Fn(usize) -> String,
    recipient: impl Fn(&str) -> String,
) -> (Vec<String>, Vec<FilterValue>) {
    let mut conditions = Vec::new();
    let mut values = Vec::new();
    let mut bind = |value: FilterValue, condition: &dyn Fn(&str) -> String| {
        values.push(value);
        conditions.push(condition(&p(values.len())));
    };
    let text = |s: &str| FilterValue::Text(s.to_owned());
    if let Some(transport) = &filter.transport {
        bind(text(transport), &|p| format!("transport = {p}"));
    }
    if let Some(channel) = filter.channel {
        bind(text(channel.as_str()), &|p| format!("channel = {p}"));
    }
    if let Some(fingerprint) = &filter.fingerprint {
        bind(text(fingerprint.as_str()), &|p| {
            format!("fingerprint = {p}")
        });
    }
    if let Some(key) = &filter.idempotency_key {
        bind(text(key), &|p| format!("idempotency_key = {p}"));
    }
    if let Some(category) = &filter.category {
        bind(text(category), &|p| format!("category = {p}"));
    }
    if let Some(since) = filter.since {
        bind(FilterValue::Time(since), &|p| format!("created_at >= {p}"));
    }
    if let Some(until) = filter.until {
        bind(FilterValue::Time(until), &|p| format!("created_at < {p}"));
    }
    if let Some(by) = filter.changed_by {
        bind(FilterValue::Time(by), &|p| format!("updated_at <= {p}"));
    }
    if let Some(class) = &filter.error_class {
        bind(text(class), &|p| format!("{} = {p}", error_class_sql()));
    }
    if let Some(after) = after {
        bind(FilterValue::Id(after), &|p| format!("id < {p}"));
    }
    if let Some(address) = &filter.recipient {
        bind(FilterValue::Recipient(address.clone()), &recipient);
    }
    // A literal, not a parameter: finished messages are indexed by status
    // only where it is not `sent`, an index a plan can use only if it
    // knows the status it looks for.
    if let Some(status) = filter.status {
        conditions.push(format!("status = '{}'", status.as_str()));
    }
    (conditions, values)
}

/// The most finished messages a creation-time range may hold for a
/// listing to read them all by `created_at` and sort them, rather than
/// walk the primary key newest first. Stamps and creation times rise
/// together, so the planner's guess that matches are spread evenly over
/// the key is wrong for a range in the past: the walk passes every newer
/// message before the first match: 0.6 to 2.5 s for the oldest day of
/// 1,000,000 (33,000 matches), against 30 to 95 ms read by `created_at`.
/// A range holding more is walked, which stays short unless it ends long
/// before the newest messages (110 to 170 ms for 660,000 matches ending
/// six days back; sorting them would take a second).
pub(crate) const FEW_IN_TIME_RANGE: u64 = 50_000;

/// The filter of `filter`'s creation-time range alone, whose finished
/// matches [`few_sql`] counts.
pub(crate) fn time_range_of(filter: &MessageFilter) -> Option<MessageFilter> {
    (filter.since.is_some() || filter.until.is_some()).then(|| MessageFilter {
        since: filter.since,
        until: filter.until,
        ..MessageFilter::default()
    })
}

/// Counts the finished messages `finished_where` matches, at most
/// [`FEW_IN_TIME_RANGE`] + 1: for a time range, a look at the
/// `created_at` index only.
pub(crate) fn few_sql(finished_where: &str) -> String {
    format!(
        "SELECT count(*) FROM (SELECT 1 FROM finished_messages {finished_where} LIMIT {}) AS r",
        FEW_IN_TIME_RANGE + 1
    )
}

/// A message's error class ([`crate::delivery::errors::class_of_error`])
/// as an SQL expression over `last_error`, for both dialects.
pub(crate) fn error_class_sql() -> String {
    let cases: String = ERROR_CLASSES
        .iter()
        .chain([&LEASE_EXPIRED_CLASS])
        .map(|(prefix, class)| {
            format!(
                " WHEN substr(last_error, 1, {}) = '{prefix}' THEN '{class}'",
                prefix.chars().count()
            )
        })
        .collect();
    format!("(CASE{cases} ELSE '{UNKNOWN_CLASS}' END)")
}

/// The `WHERE` clauses of a listing's two halves, live and finished:
/// `conditions` on both, and the delivery filter, which only finished
/// messages can meet beyond `unknown` (a literal, as for status: the
/// partial index serves one state).
pub(crate) fn listing_wheres(
    conditions: Vec<String>,
    delivery: Option<DeliveryState>,
) -> (String, String) {
    let mut live = conditions.clone();
    let mut finished = conditions;
    match delivery {
        None => {}
        Some(DeliveryState::Unknown) => finished.push("delivery IS NULL".into()),
        Some(state) => {
            live.push("false".into());
            finished.push(format!("delivery = '{}'", state.as_str()));
        }
    }
    let where_of = |conditions: Vec<String>| {
        if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        }
    };
    (where_of(live), where_of(finished))
}

/// Adds the suppressions `rows` gives (a `VALUES` list or a `SELECT` of
/// channel, address, scope, reason, source stamp, created and expiry
/// times), each replacing the entry of the same channel, address and
/// scope: the latest report's reason and expiry stand.
pub(crate) fn upsert_suppressions_sql(rows: &str) -> String {
    format!(
        "INSERT INTO suppressions (channel, address, scope, reason, source_stamp, created_at,
                                   expires_at)
         {rows}
         ON CONFLICT (channel, address, scope) DO UPDATE SET
             reason = excluded.reason, source_stamp = excluded.source_stamp,
             created_at = excluded.created_at, expires_at = excluded.expires_at"
    )
}

/// The live table's indexes that served finished messages, listings and
/// history, which it sheds once no finished message waits to move out:
/// `messages_status` (every row, rewritten by every claim) and
/// `messages_dead_since` (finished rows), and the transport and
/// fingerprint listings' `(transport, id)` and `(fingerprint, id)`, which
/// `finished_messages` has for its rows (by fingerprint, a hash index). A listing of live messages by
/// transport or fingerprint scans the live table instead, which holds only
/// the backlog. Each costs every enqueue and every move out an index
/// entry, and on PostgreSQL the last two also trapped the planner: with
/// the live table's statistics taken while it was nearly empty (a drained
/// queue), an index led by another column looked as cheap as the primary
/// key, and claims and listings read all of one to find rows by `id`.
pub(crate) const HISTORY_INDEXES: [&str; 4] = [
    "messages_status",
    "messages_dead_since",
    "messages_transport",
    "messages_fingerprint",
];

/// The `alerts` columns every read of an alert selects (SQLite's
/// `alert_from_row` reads them by position: the order matters).
pub(crate) const ALERT_COLUMNS: &str = "id, rule, kind, transport, state, threshold, window_s, \
    fired_value, last_value, fired_at, checked_at, resolved_at, notified, fired_message_id, \
    resolved_message_id, paused_at";

/// The rows that [`rollup_spans_sql`] names (bounds bound first) with
/// the keys a [`Scope`](super::Scope) keeps (bound 7th to 9th, NULL for
/// all), their series counts summed per row start: one row per minute or
/// hour whatever the keys.
pub(crate) fn series_sql(p: impl Fn(usize) -> String) -> String {
    let columns: Vec<&str> = SeriesCounts::columns().collect();
    let sums: Vec<String> = columns
        .iter()
        .map(|c| format!("CAST(sum({c}) AS BIGINT)"))
        .collect();
    format!(
        "SELECT minute, {sums}
         FROM ({}) AS r
         WHERE ({t} IS NULL OR transport = {t}) AND ({c} IS NULL OR channel = {c})
           AND ({k} IS NULL OR category = {k})
         GROUP BY minute ORDER BY minute",
        rollup_spans_sql(
            "metrics",
            &format!(
                "minute, transport, channel, category, {}",
                columns.join(", ")
            ),
            &p
        ),
        sums = sums.join(", "),
        t = p(7),
        c = p(8),
        k = p(9),
    )
}

/// Each metric column written as `max` or `sum` writes it, by whether it
/// keeps a maximum or a sum when rows merge, as a list in column order.
fn metric_list(max: impl Fn(&str) -> String, sum: impl Fn(&str) -> String) -> String {
    metric_columns()
        .iter()
        .map(|c| if is_max_column(c) { max(c) } else { sum(c) })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `metrics_minutely`'s columns as aggregates for merging many rows into
/// one (sums, and maxima for the `_max_ms` columns), in column order.
fn metric_aggregates() -> String {
    metric_list(
        |c| format!("max({c})"),
        // PostgreSQL sums bigints as numeric.
        |c| format!("CAST(sum({c}) AS BIGINT)"),
    )
}

/// Adds rows into `metrics_minutely`, a row that meets a stored one of
/// the same minute and key merged into it. `rows` is the backend's source
/// of the rows (`VALUES (...)`, `SELECT * FROM unnest(...)`) in
/// `(minute, transport, channel, category, metric columns)` order; `max`
/// is its two-argument maximum (`max` / `greatest`).
pub(crate) fn add_metrics_sql(rows: &str, max: &str) -> String {
    let updates = metric_list(
        |c| format!("{c} = {max}(r.{c}, excluded.{c})"),
        |c| format!("{c} = r.{c} + excluded.{c}"),
    );
    format!(
        "INSERT INTO metrics_minutely AS r (minute, transport, channel, category, {columns})
         {rows}
         ON CONFLICT (minute, transport, channel, category) DO UPDATE SET {updates}",
        columns = metric_columns().join(", "),
    )
}

/// Adds rows into `failures_minutely`, a row that meets a stored one of
/// the same minute and key added into it. `rows` is the backend's source
/// of the rows, in `(minute, FAILURE_KEYS, failures)` order.
pub(crate) fn add_failures_sql(rows: &str) -> String {
    format!(
        "INSERT INTO failures_minutely AS r (minute, {FAILURE_KEYS}, failures)
         {rows}
         ON CONFLICT (minute, {FAILURE_KEYS})
         DO UPDATE SET failures = r.failures + excluded.failures"
    )
}

/// Adds rows into `bounces_minutely`, as [`add_failures_sql`] does
/// failures. `rows` is in `(minute, BOUNCE_KEYS, bounces)` order.
pub(crate) fn add_bounces_sql(rows: &str) -> String {
    format!(
        "INSERT INTO bounces_minutely AS r (minute, {BOUNCE_KEYS}, bounces)
         {rows}
         ON CONFLICT (minute, {BOUNCE_KEYS})
         DO UPDATE SET bounces = r.bounces + excluded.bounces"
    )
}

/// The rows of `{family}_minutely` and `{family}_hourly` (`metrics`, `failures` or
/// `bounces`) that [`RollupSpans`] name, as `columns`; `p(i)` writes the
/// backend's i-th parameter, bound as [`RollupSpans::bounds`].
///
/// [`RollupSpans`]: super::rollups::RollupSpans
/// [`RollupSpans::bounds`]: super::rollups::RollupSpans::bounds
pub(crate) fn rollup_spans_sql(family: &str, columns: &str, p: impl Fn(usize) -> String) -> String {
    format!(
        "SELECT {columns} FROM {family}_minutely
         WHERE (minute >= {} AND minute < {}) OR (minute >= {} AND minute < {})
         UNION ALL
         SELECT {columns} FROM {family}_hourly WHERE minute >= {} AND minute < {}",
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
        p(6)
    )
}

/// The rollup families compaction seals: (family, key columns after
/// `minute`, value columns, their aggregates over many rows).
fn rollup_families() -> [(&'static str, String, String, String); 3] {
    [
        (
            "metrics",
            "transport, channel, category".to_owned(),
            metric_columns().join(", "),
            metric_aggregates(),
        ),
        (
            "failures",
            FAILURE_KEYS.to_owned(),
            "failures".to_owned(),
            "CAST(sum(failures) AS BIGINT)".to_owned(),
        ),
        (
            "bounces",
            BOUNCE_KEYS.to_owned(),
            "bounces".to_owned(),
            "CAST(sum(bounces) AS BIGINT)".to_owned(),
        ),
    ]
}

/// One rollup family's statements of a compaction
/// ([`CompactionPlan`](super::rollups::CompactionPlan)).
pub(crate) struct CompactionSql {
    /// Deletes the hourly rows in `[p(1), p(2))`, to be built again.
    pub clear_hours: String,
    /// Builds the hourly rows in `[p(1), p(2))` from the minute rows.
    pub seal_hours: String,
    /// Deletes the minute rows before `p(1)`.
    pub delete_minutes: String,
    /// Deletes the hourly rows before `p(1)`.
    pub purge_hours: String,
}

/// The compaction statements of each rollup family; `hour` is the
/// backend's expression for the start of a row's hour in UTC, `p(i)`
/// writes its i-th parameter.
pub(crate) fn compaction_sql(hour: &str, p: impl Fn(usize) -> String) -> Vec<CompactionSql> {
    let (from, to) = (p(1), p(2));
    rollup_families()
        .into_iter()
        .map(|(family, keys, columns, aggregates)| CompactionSql {
            clear_hours: format!(
                "DELETE FROM {family}_hourly WHERE minute >= {from} AND minute < {to}"
            ),
            seal_hours: format!(
                "INSERT INTO {family}_hourly (minute, {keys}, {columns})
                 SELECT {hour}, {keys}, {aggregates} FROM {family}_minutely
                 WHERE minute >= {from} AND minute < {to}
                 GROUP BY {hour}, {keys}"
            ),
            delete_minutes: format!("DELETE FROM {family}_minutely WHERE minute < {from}"),
            purge_hours: format!("DELETE FROM {family}_hourly WHERE minute < {from}"),
        })
        .collect()
}

/// The `replay_jobs` columns in the order both backends read them.
pub(crate) const REPLAY_JOB_COLUMNS: &str = "id, state, transport, channel, category, error_class, \
     total, replayed, owner, created_at, updated_at, finished_at, error";

/// Reads the one `rollup_seal` row: (`sealed_until`, `minutes_from`).
pub(crate) const READ_SEAL_SQL: &str =
    "SELECT sealed_until, minutes_from FROM rollup_seal WHERE id = 1";

/// Writes the `rollup_seal` row: `sealed_until` = `p(1)`, `minutes_from`
/// = `p(2)`.
pub(crate) fn write_seal_sql(p: impl Fn(usize) -> String) -> String {
    format!(
        "UPDATE rollup_seal SET sealed_until = {}, minutes_from = {} WHERE id = 1",
        p(1),
        p(2)
    )
}

/// The rollup rows (`minute`, key, metric columns) that
/// [`RollupSpans`](super::rollups::RollupSpans) name, oldest first.
pub(crate) fn rollup_rows_sql(p: impl Fn(usize) -> String) -> String {
    format!(
        "{} ORDER BY 1, 2, 3, 4",
        rollup_spans_sql("metrics", &rollup_row_columns(), p)
    )
}

/// Those rows summed per key (`minute` is the earliest row's).
pub(crate) fn rollup_totals_sql(p: impl Fn(usize) -> String) -> String {
    format!(
        "SELECT min(minute), transport, channel, category, {} FROM ({}) AS r
         GROUP BY transport, channel, category ORDER BY 2, 3, 4",
        metric_aggregates(),
        rollup_spans_sql("metrics", &rollup_row_columns(), p)
    )
}

/// The failure rows that [`RollupSpans`](super::rollups::RollupSpans)
/// name, summed per key.
pub(crate) fn failure_totals_sql(p: impl Fn(usize) -> String) -> String {
    format!(
        "SELECT {FAILURE_KEYS}, CAST(sum(failures) AS BIGINT) FROM ({}) AS f
         GROUP BY {FAILURE_KEYS} ORDER BY {FAILURE_KEYS}",
        rollup_spans_sql("failures", &format!("{FAILURE_KEYS}, failures"), p)
    )
}

/// The bounce rows that [`RollupSpans`](super::rollups::RollupSpans)
/// name, summed per key.
pub(crate) fn bounce_totals_sql(p: impl Fn(usize) -> String) -> String {
    format!(
        "SELECT {BOUNCE_KEYS}, CAST(sum(bounces) AS BIGINT) FROM ({}) AS b
         GROUP BY {BOUNCE_KEYS} ORDER BY {BOUNCE_KEYS}",
        rollup_spans_sql("bounces", &format!("{BOUNCE_KEYS}, bounces"), p)
    )
}

fn rollup_row_columns() -> String {
    format!(
        "minute, transport, channel, category, {}",
        metric_columns().join(", ")
    )
}

/// The key columns of the failure rollups after `minute`.
pub(crate) const FAILURE_KEYS: &str = "transport, channel, category, class, error";

/// The key columns of the bounce rollups after `minute`.
pub(crate) const BOUNCE_KEYS: &str = "transport, channel, category, bounce_type, reason, domain";
