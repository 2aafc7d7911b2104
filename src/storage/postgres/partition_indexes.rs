//! Indexes of the partitioned tables that a migration declares but does
//! not build: V16's lean indexes of `finished_messages` (and the indexes
//! they replace, dropped once those are valid), V17's index of the
//! providers' message ids on `message_events`, V18's of recipients and
//! delivery states, V21's of categories and creation times.
//!
//! A migration only declares them on the partitioned table (`ON ONLY`),
//! which builds nothing: a partition attached later gets them as it is
//! attached, but one already there has none, and the table's index stays
//! invalid, unused by the planner, until each partition has its own
//! attached. A small store (a new one among them) is completed in one
//! short transaction; a large one partition by partition, CONCURRENTLY,
//! from upkeep, so that outcomes go on writing meanwhile. Upkeep's other
//! concurrent builds (the live table's, when it sheds its history
//! indexes) go through [`build_concurrently`] here too.

use crate::storage::StorageError;

/// Each declared index: its table, its name and the definition that
/// follows `ON <table>` (the migration's own, which an attached
/// partition's index must match). A name is its table's name and a
/// suffix, which names the partitions' indexes after theirs.
const DECLARED: [(&str, &str, &str); 7] = [
    (
        "finished_messages",
        "finished_messages_unsent",
        "(status, id) WHERE status <> 'sent'",
    ),
    (
        "finished_messages",
        "finished_messages_fingerprint_hash",
        "USING hash (fingerprint)",
    ),
    (
        "message_events",
        "message_events_provider_id",
        "(transport, (detail ->> 'provider_message_id')) \
         WHERE kind = 'sent' AND detail ? 'provider_message_id'",
    ),
    (
        "finished_messages",
        "finished_messages_recipients",
        "USING gin (recipients)",
    ),
    (
        "finished_messages",
        "finished_messages_delivery",
        "(delivery, id) WHERE delivery IS NOT NULL",
    ),
    (
        "finished_messages",
        "finished_messages_category",
        "(category, id) WHERE category IS NOT NULL",
    ),
    (
        "finished_messages",
        "finished_messages_created",
        "(created_at)",
    ),
];

/// The indexes V16's replace.
const REPLACED: [&str; 2] = ["finished_messages_status", "finished_messages_fingerprint"];

/// The partitions of table `$2` that have no index attached to its
/// partitioned index `$1` (none detaching: retention drops those).
const UNINDEXED_SQL: &str = "
SELECT c.relname::text FROM pg_inherits p JOIN pg_class c ON c.oid = p.inhrelid
WHERE p.inhparent = to_regclass($2) AND NOT p.inhdetachpending
  AND NOT EXISTS (SELECT 1 FROM pg_inherits x JOIN pg_index i ON i.indexrelid = x.inhrelid
                  WHERE x.inhparent = to_regclass($1) AND i.indrelid = c.oid)
ORDER BY c.relname";

/// Completes [`DECLARED`] and drops [`REPLACED`] if any is left to do:
/// at once when the store is small, otherwise only where `concurrently`
/// allows building partition by partition (upkeep, not the migration a
/// node starts with, which would hold the node's start behind the
/// builds). Returns whether nothing is left.
pub(super) async fn complete(
    client: &mut deadpool_postgres::Object,
    concurrently: bool,
) -> Result<bool, StorageError> {
    let left = super::finished::existing(client, &REPLACED).await?;
    if !left.contains(&true) && all_valid(client).await? {
        return Ok(true);
    }
    // One node at a time.
    if !super::try_schema_upkeep_lock(client).await? {
        return Ok(false);
    }
    let completed = if super::live::small(&*client, "finished_messages").await? {
        at_once(client).await
    } else if concurrently {
        by_partition(client).await
    } else {
        Ok(false)
    };
    super::schema_upkeep_unlock(client).await?;
    completed
}

/// Whether every declared index is valid: built on every partition.
async fn all_valid(client: &deadpool_postgres::Object) -> Result<bool, StorageError> {
    let names: Vec<&str> = DECLARED.iter().map(|(_, name, _)| *name).collect();
    Ok(client
        .query_one(
            "SELECT count(*) = $2 AND bool_and(indisvalid) FROM pg_index
             WHERE indexrelid IN (SELECT to_regclass(n) FROM unnest($1::text[]) AS n)",
            &[&names, &(names.len() as i64)],
        )
        .await?
        .try_get::<_, Option<bool>>(0)?
        .unwrap_or(false))
}

/// One transaction: the declared indexes not yet valid built afresh on
/// every partition (a moment's work on a small store), the replaced ones
/// dropped.
async fn at_once(client: &mut deadpool_postgres::Object) -> Result<bool, StorageError> {
    let names: Vec<&str> = DECLARED.iter().map(|(_, name, _)| *name).collect();
    let valid: Vec<String> = client
        .query(
            "SELECT n FROM unnest($1::text[]) AS n
             WHERE EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass(n) AND indisvalid)",
            &[&names],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    let build: String = DECLARED
        .iter()
        .filter(|(_, name, _)| !valid.iter().any(|v| v == name))
        .map(|(table, name, definition)| {
            format!(
                "DROP INDEX IF EXISTS {name};
                 CREATE INDEX {name} ON {table} {definition};"
            )
        })
        .collect();
    let done = briefly(
        client,
        &format!("{build} DROP INDEX IF EXISTS {};", REPLACED.join(", ")),
    )
    .await?;
    if done {
        tracing::info!("partitioned tables' declared indexes built");
    }
    Ok(done)
}

/// Each partition without a declared index gets it CONCURRENTLY, then
/// attached; once every declared index is valid, the replaced ones are
/// dropped, which takes a moment's exclusive lock, given up (until the
/// next round) rather than waited for.
async fn by_partition(client: &mut deadpool_postgres::Object) -> Result<bool, StorageError> {
    for (table, parent, definition) in DECLARED {
        let suffix = parent.trim_start_matches(table);
        let parts: Vec<String> = client
            .query(UNINDEXED_SQL, &[&parent, &table])
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        for part in parts {
            let index = format!("{part}{suffix}");
            build_concurrently(client, false, &index, &format!("ON {part} {definition}")).await?;
            client
                .batch_execute(&format!("ALTER INDEX {parent} ATTACH PARTITION {index}"))
                .await?;
            tracing::info!(partition = %part, index = parent, "built a declared index on a partition");
        }
    }
    if !all_valid(client).await? {
        return Ok(false);
    }
    let done = briefly(
        client,
        &format!("DROP INDEX IF EXISTS {}", REPLACED.join(", ")),
    )
    .await?;
    if done {
        tracing::info!("partitioned tables' declared indexes valid; the ones they replace dropped");
    }
    Ok(done)
}

/// Builds the index `name` (`on`: `ON table (...) ...`) CONCURRENTLY,
/// if it is not there: outcomes and enqueues go on meanwhile. An
/// interrupted build leaves an invalid index behind, which is dropped and
/// built again.
pub(super) async fn build_concurrently(
    client: &deadpool_postgres::Object,
    unique: bool,
    name: &str,
    on: &str,
) -> Result<(), StorageError> {
    let invalid = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass($1)
                            AND NOT indisvalid)",
            &[&name],
        )
        .await?
        .try_get::<_, bool>(0)?;
    if invalid {
        client
            .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
            .await?;
    }
    let unique = if unique { "UNIQUE " } else { "" };
    client
        .batch_execute(&format!(
            "CREATE {unique}INDEX CONCURRENTLY IF NOT EXISTS {name} {on}"
        ))
        .await?;
    Ok(())
}

/// Runs `sql` in one transaction that gives up, returning false, when a
/// lock it needs is not had within a moment: outcomes and reads never
/// queue for long behind it.
async fn briefly(client: &mut deadpool_postgres::Object, sql: &str) -> Result<bool, StorageError> {
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL lock_timeout = '500ms'").await?;
    match tx.batch_execute(sql).await {
        Ok(()) => {
            tx.commit().await?;
            Ok(true)
        }
        Err(err) if err.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
            tracing::debug!(error = %err, "partitioned tables busy; their indexes change later");
            Ok(false)
        }
        Err(err) => Err(err.into()),
    }
}
