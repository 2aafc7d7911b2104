//! The physical layout of PostgreSQL's live table, `messages`: its
//! columns in the order a claim rewrites them least, and room on each
//! page for the claim's new row version; and the one-time re-laying of a
//! table created before that (V1's column order, full pages).
//!
//! Why the layout matters: a claim rewrites the row (status, attempt,
//! lease, token, node, time). When the new version lands on the same page
//! as the old one, PostgreSQL logs only the bytes between the common
//! prefix and the common suffix of the two, and no separate lock record.
//! With the columns a claim changes last and half of each page left free
//! at insert, the claim's WAL is those few columns instead of the whole
//! row with its payload: a fifth of all bytes a message wrote before.

use deadpool_postgres::GenericClient;

use crate::storage::StorageError;

/// The live table's columns, in storage order: what no claim or outcome
/// changes first (the payload among them), then what a retry changes,
/// then what every claim changes, `updated_at` last (the mark of this
/// layout, see [`LAYOUT_SQL`]).
const COLUMNS: &str = "
    id              uuid        NOT NULL,
    channel         text        NOT NULL CONSTRAINT messages_channel_check
                                CHECK (channel IN ('email', 'sms', 'chat', 'push', 'webhook')),
    transport       text        NOT NULL,
    category        text,
    priority        smallint    NOT NULL CONSTRAINT messages_priority_check
                                CHECK (priority BETWEEN 0 AND 9),
    max_attempts    integer     NOT NULL CONSTRAINT messages_max_attempts_check
                                CHECK (max_attempts >= 1),
    created_at      timestamptz NOT NULL,
    payload         json        NOT NULL,
    metadata        json        NOT NULL,
    fingerprint     text        NOT NULL,
    idempotency_key text,
    recipients      text[],
    sent_at         timestamptz,
    available_at    timestamptz NOT NULL,
    effective_at    timestamptz NOT NULL,
    last_error      text,
    status          text        NOT NULL CONSTRAINT messages_status_check
                                CHECK (status IN ('queued', 'processing', 'sent', 'dead', 'cancelled')),
    attempts        integer     NOT NULL DEFAULT 0,
    lease_until     timestamptz,
    claim_token     uuid,
    claimed_by      text,
    updated_at      timestamptz NOT NULL";

/// Every column by name, for the copy.
const NAMES: &str = "id, channel, transport, category, priority, max_attempts, created_at, \
    payload, metadata, fingerprint, idempotency_key, recipients, sent_at, available_at, effective_at, \
    last_error, status, attempts, lease_until, claim_token, claimed_by, updated_at";

/// Inserts fill half a page: the rest takes the claims' new versions.
/// The vacuum settings are V1's: a queue table churns.
const OPTIONS: &str = "fillfactor = 50, autovacuum_vacuum_scale_factor = 0.02, \
    autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0";

/// The live table's indexes once the history indexes are shed (see
/// `finished::finish_split`).
const INDEXES: &str = "
ALTER TABLE messages ADD CONSTRAINT messages_pkey PRIMARY KEY (id);
CREATE INDEX messages_claim ON messages (transport, effective_at, id)
    INCLUDE (priority, channel, category, available_at) WHERE status = 'queued';
CREATE INDEX messages_lease ON messages (lease_until)
    INCLUDE (transport, priority, channel, category) WHERE status = 'processing';
CREATE UNIQUE INDEX messages_idempotency ON messages (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX messages_unmoved ON messages (status, id)
    WHERE status IN ('sent', 'dead', 'cancelled');";

/// The columns `messages` has, in storage order.
const LAYOUT_SQL: &str = "
SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
WHERE attrelid = 'messages'::regclass AND attnum > 0 AND NOT attisdropped";

/// Above this many live rows the table is left as it is until it holds
/// fewer: the copy runs under an exclusive lock, which must last a moment
/// (so does the shedding of history indexes in one transaction).
pub(super) const MOST_ROWS: i64 = 10_000;

/// Whether `table` holds fewer than [`MOST_ROWS`] rows: few enough to
/// change in one short transaction.
pub(super) async fn small(client: &impl GenericClient, table: &str) -> Result<bool, StorageError> {
    Ok(client
        .query_one(
            &format!(
                "SELECT count(*) < {MOST_ROWS} FROM (SELECT 1 FROM {table} LIMIT {MOST_ROWS}) AS t"
            ),
            &[],
        )
        .await?
        .try_get::<_, bool>(0)?)
}

/// Re-lays `messages` if it is [`ready`] for it; otherwise does nothing
/// (and tries again on a later call: upkeep calls it while idle).
/// Returns whether it did. Called only once the history indexes are
/// shed (`finished::finish_split`): the copy builds the lean set.
///
/// One transaction: the table is locked, copied into its new shape,
/// dropped and replaced, its indexes built on the copy. A lock not had
/// within a short wait gives up rather than holding enqueue and delivery
/// behind it in the lock queue. Statements other connections prepared
/// are planned again by PostgreSQL on their next use: none returns the
/// table's `*`, so their result types stay the same.
pub(super) async fn relay(client: &mut deadpool_postgres::Object) -> Result<bool, StorageError> {
    if !ready(&*client).await? {
        return Ok(false);
    }
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL lock_timeout = '500ms'").await?;
    if let Err(err) = tx
        .batch_execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        .await
    {
        tracing::debug!(error = %err, "live table busy; re-laying it later");
        return Ok(false);
    }
    // Again under the lock: another node may have re-laid it meanwhile.
    if !ready(&tx).await? {
        return Ok(false);
    }
    tx.batch_execute(&format!(
        "CREATE TABLE messages_relaid ({COLUMNS}) WITH ({OPTIONS});
         INSERT INTO messages_relaid ({NAMES}) SELECT {NAMES} FROM messages;
         DROP TABLE messages;
         ALTER TABLE messages_relaid RENAME TO messages;
         {INDEXES}"
    ))
    .await?;
    tx.commit().await?;
    // A new table has no statistics; a small one is analysed in a moment.
    client.batch_execute("ANALYZE messages").await?;
    tracing::info!("live table re-laid: claims now rewrite only what they change");
    Ok(true)
}

/// Whether `messages` is to be re-laid now: it has the old layout (the
/// same columns in another order), fewer
/// than [`MOST_ROWS`] rows and none claimed. The
/// copy moves every row to a new `ctid`, and outcomes find their claimed
/// rows by `ctid`: a claim outstanding across the re-laying would be
/// fenced off and its message sent again after its lease.
async fn ready(client: &impl GenericClient) -> Result<bool, StorageError> {
    let mut columns: Vec<String> = client.query_one(LAYOUT_SQL, &[]).await?.try_get(0)?;
    let mut lean: Vec<&str> = NAMES.split(',').map(str::trim).collect();
    if columns == lean {
        return Ok(false);
    }
    columns.sort();
    lean.sort_unstable();
    if columns != lean {
        // A column this layout does not name would be lost by the copy.
        tracing::warn!(
            ?columns,
            "live table has columns its lean layout does not name; left as it is"
        );
        return Ok(false);
    }
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM (SELECT 1 FROM messages LIMIT {MOST_ROWS}) AS live),
                        EXISTS (SELECT 1 FROM messages WHERE status = 'processing')"
            ),
            &[],
        )
        .await?;
    let rows: i64 = row.try_get(0)?;
    let claimed: bool = row.try_get(1)?;
    Ok(rows < MOST_ROWS && !claimed)
}
