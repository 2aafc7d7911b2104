//! SQLite's part of delivery feedback and suppression, within the one
//! writer's transactions: suppressed recipients at enqueue, the writing
//! of a batch of provider reports (planned by [`crate::storage::feedback`]),
//! their re-matching, and the suppression list.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Transaction, params};

use super::{NewEvent, insert_event, parse_column};
use crate::domain::{Channel, DeliveryStatus, EventKind, NewMessage, Stamp};
use crate::feedback::FeedbackEvent;
use crate::storage::StorageError;
use crate::storage::feedback::{
    self as shared, FeedbackRecorded, Matched, Received, StoredEvent, Suppression,
    SuppressionCursor, SuppressionFilter, SuppressionPolicy,
};
use crate::storage::rollups::feedback_rollup;
use crate::storage::sql::upsert_suppressions_sql;
use crate::time::{from_millis, to_millis};

/// Whether the suppression list has any entry (expired ones included).
pub(super) fn any_suppressed(tx: &Transaction<'_>) -> rusqlite::Result<bool> {
    tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM suppressions)")?
        .query_row([], |row| row.get(0))
}

/// `message`'s recipients on the suppression list, with the reason.
pub(super) fn suppressed_among(
    tx: &Transaction<'_>,
    message: &NewMessage,
    now: DateTime<Utc>,
) -> rusqlite::Result<Vec<(String, String)>> {
    let mut hits = Vec::new();
    if message.recipients.is_empty() {
        return Ok(hits);
    }
    let mut lookup = tx.prepare_cached(
        "SELECT reason FROM suppressions
         WHERE channel = ?1 AND address = ?2 AND scope IN ('', ?3)
           AND (expires_at IS NULL OR expires_at > ?4)
         ORDER BY scope LIMIT 1",
    )?;
    for recipient in &message.recipients {
        let reason: Option<String> = lookup
            .query_row(
                params![
                    message.channel.as_str(),
                    recipient,
                    message.transport,
                    to_millis(now)
                ],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(reason) = reason {
            hits.push((recipient.clone(), reason));
        }
    }
    Ok(hits)
}

/// Files `id` under each of its recipients, for the recipient filter.
pub(super) fn index_recipients(
    tx: &Transaction<'_>,
    id: Stamp,
    recipients: &[String],
) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO message_recipients (address, message_id) VALUES (?1, ?2)",
    )?;
    for recipient in recipients {
        insert.execute(params![recipient, id.to_string()])?;
    }
    Ok(())
}

/// A `suppressed` event per recipient left out.
pub(super) fn write_suppressed_events(
    tx: &Transaction<'_>,
    id: Stamp,
    hit: &[(String, String)],
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    for (address, reason) in hit {
        insert_event(
            tx,
            NewEvent {
                id,
                kind: EventKind::Suppressed,
                at: now,
                attempt: 0,
                transport: None,
                started_at: None,
                duration_ms: None,
                error: None,
                detail: Some(serde_json::json!({ "recipient": address, "reason": reason })),
            },
        )?;
    }
    Ok(())
}

/// Puts the recipients of `outcome`'s message, dead-lettered because its
/// recipient is gone, on the suppression list.
pub(super) fn suppress_gone(
    tx: &Transaction<'_>,
    outcome: &crate::storage::Outcome,
    reason: &str,
    policy: &SuppressionPolicy,
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(&upsert_suppressions_sql(
        "SELECT ?2, address, ?3, ?4, message_id, ?5, ?6
                 FROM message_recipients WHERE message_id = ?1",
    ))?
    .execute(params![
        outcome.id.to_string(),
        outcome.channel.as_str(),
        policy.scope(&outcome.transport),
        reason,
        to_millis(now),
        policy.expires_at(now).map(to_millis),
    ])?;
    Ok(())
}

/// Matches, plans and writes `events` from `transport`.
pub(super) fn apply(
    tx: &Transaction<'_>,
    transport: &str,
    events: Vec<Received>,
    policy: &SuppressionPolicy,
    rollups: bool,
    now: DateTime<Utc>,
) -> Result<FeedbackRecorded, StorageError> {
    let mut by_provider = tx.prepare_cached(
        "SELECT message_id FROM message_events
         WHERE transport = ?1 AND kind = 'sent'
           AND json_extract(detail, '$.provider_message_id') = ?2
         ORDER BY id DESC LIMIT 1",
    )?;
    let mut targeted = Vec::with_capacity(events.len());
    for (event, received) in events {
        let stamp = match event.target.stamp() {
            Some(stamp) => Some(stamp),
            None => match event.target.provider_id() {
                Some(id) => by_provider
                    .query_row(params![transport, id], |row| parse_column::<Stamp>(row, 0))
                    .optional()?,
                None => None,
            },
        };
        targeted.push((event, stamp, received));
    }
    let mut load = tx.prepare_cached(
        "SELECT channel, attempts, delivery_detail, category FROM finished_messages
         WHERE id = ?1",
    )?;
    let mut recipients =
        tx.prepare_cached("SELECT address FROM message_recipients WHERE message_id = ?1")?;
    let mut seen = tx.prepare_cached(
        "SELECT kind, at, json_extract(detail, '$.recipient'), json_extract(detail, '$.event_id')
         FROM message_events WHERE message_id = ?1",
    )?;
    let feedback_kinds = shared::feedback_event_kinds();
    let mut matched: BTreeMap<Stamp, Matched> = BTreeMap::new();
    for stamp in targeted.iter().filter_map(|(_, s, _)| *s) {
        if matched.contains_key(&stamp) {
            continue;
        }
        let row = load
            .query_row([stamp.to_string()], |row| {
                Ok((
                    parse_column::<Channel>(row, 0)?,
                    row.get::<_, u32>(1)?,
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, Option<String>>(3)?,
                ))
            })
            .optional()?;
        let Some((channel, attempts, detail, category)) = row else {
            continue;
        };
        let addresses = recipients
            .query_map([stamp.to_string()], |row| row.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut identities = HashSet::new();
        let rows = seen.query_map([stamp.to_string()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, Option<String>>(3)?,
            ))
        })?;
        for row in rows {
            let (kind, at, recipient, event_id) = row?;
            if feedback_kinds.contains(&kind.as_str()) {
                identities.insert(shared::identity(
                    &kind,
                    recipient.as_deref(),
                    from_millis(at),
                    event_id.as_deref(),
                ));
            }
        }
        matched.insert(
            stamp,
            Matched {
                id: stamp,
                channel,
                category: category.unwrap_or_default(),
                attempts,
                recipients: addresses,
                delivery: detail.and_then(|d| serde_json::from_str(&d).ok()),
                seen: identities,
            },
        );
    }
    let plan = shared::plan(targeted, &mut matched, policy);
    if rollups {
        let (rows, bounces) = feedback_rollup(&plan, transport, now);
        for row in &rows {
            super::add_metrics(tx, row)?;
        }
        super::add_bounces(tx, &bounces)?;
    }
    for event in &plan.events {
        tx.prepare_cached(
            "INSERT INTO message_events (message_id, kind, at, attempt, transport, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            event.message.to_string(),
            event.kind.as_str(),
            to_millis(event.at),
            event.attempt,
            transport,
            event.detail.to_string(),
        ])?;
    }
    for (id, status) in &plan.deliveries {
        tx.prepare_cached(
            "UPDATE finished_messages SET delivery = ?2, delivery_detail = ?3 WHERE id = ?1",
        )?
        .execute(params![
            id.to_string(),
            status.state.as_str(),
            serde_json::to_string(status).unwrap_or_default(),
        ])?;
    }
    let scope = policy.scope(transport);
    let expires = policy.expires_at(now).map(to_millis);
    let mut entries: Vec<(Channel, String, &str, Stamp)> = plan
        .suppress
        .iter()
        .map(|e| (e.channel, e.address.clone(), e.reason, e.source))
        .collect();
    let window_start = shared::ago(now, policy.soft_bounce_window);
    for ((channel, address), (n, source)) in &plan.soft_bounces {
        let count: u32 = tx
            .prepare_cached(
                "INSERT INTO soft_bounces AS b (channel, address, scope, first_at, count)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (channel, address, scope) DO UPDATE SET
                     count = CASE WHEN b.first_at < ?6 THEN excluded.count
                                  ELSE b.count + excluded.count END,
                     first_at = CASE WHEN b.first_at < ?6 THEN excluded.first_at
                                     ELSE b.first_at END
                 RETURNING count",
            )?
            .query_row(
                params![
                    channel.as_str(),
                    address,
                    scope,
                    to_millis(now),
                    n,
                    to_millis(window_start)
                ],
                |row| row.get(0),
            )?;
        if count >= policy.soft_bounce_limit {
            entries.push((*channel, address.clone(), "soft_bounce", *source));
        }
    }
    let mut recorded = plan.recorded;
    let unique: BTreeMap<(Channel, String), (&str, Stamp)> = entries
        .into_iter()
        .map(|(channel, address, reason, source)| ((channel, address), (reason, source)))
        .collect();
    recorded.suppressed = unique.len();
    for ((channel, address), (reason, source)) in unique {
        tx.prepare_cached(&upsert_suppressions_sql(
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        ))?
        .execute(params![
            channel.as_str(),
            address,
            scope,
            reason,
            source.to_string(),
            to_millis(now),
            expires
        ])?;
    }
    for (event, received) in &plan.unmatched {
        tx.prepare_cached(
            "INSERT INTO feedback_unmatched (transport, received_at, event) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![
            transport,
            to_millis(*received),
            serde_json::to_string(&StoredEvent::from(event)).unwrap_or_default(),
        ])?;
    }
    Ok(recorded)
}

/// Takes up to `limit` kept reports out, oldest first, by transport;
/// those past `keep_before` are dropped.
pub(super) fn take_unmatched(
    tx: &Transaction<'_>,
    limit: i64,
    keep_before: DateTime<Utc>,
) -> rusqlite::Result<BTreeMap<String, Vec<Received>>> {
    let mut select = tx.prepare_cached(
        "DELETE FROM feedback_unmatched WHERE id IN (
             SELECT id FROM feedback_unmatched ORDER BY id LIMIT ?1)
         RETURNING transport, received_at, event",
    )?;
    let rows = select.query_map([limit], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    let mut by_transport: BTreeMap<String, Vec<(FeedbackEvent, DateTime<Utc>)>> = BTreeMap::new();
    for row in rows {
        let (transport, received, event) = row?;
        let received = from_millis(received);
        if received < keep_before {
            continue;
        }
        if let Some(event) = serde_json::from_str::<StoredEvent>(&event)
            .ok()
            .and_then(StoredEvent::into_event)
        {
            by_transport
                .entry(transport)
                .or_default()
                .push((event, received));
        }
    }
    Ok(by_transport)
}

pub(super) fn list(
    conn: &rusqlite::Connection,
    filter: &SuppressionFilter,
    after: Option<SuppressionCursor>,
    limit: i64,
    now: DateTime<Utc>,
) -> rusqlite::Result<Vec<Suppression>> {
    let (after_channel, after_address, after_scope) = match after {
        Some((c, a, s)) => (Some(c), Some(a), Some(s)),
        None => (None, None, None),
    };
    let mut stmt = conn.prepare_cached(
        "SELECT channel, address, scope, reason, source_stamp, created_at, expires_at
         FROM suppressions
         WHERE (?1 IS NULL OR channel = ?1)
           AND (?2 IS NULL OR address = ?2)
           AND (?3 IS NULL OR reason = ?3)
           AND (expires_at IS NULL OR expires_at > ?4)
           AND (?5 IS NULL OR (channel, address, scope) > (?5, ?6, ?7))
         ORDER BY channel, address, scope
         LIMIT ?8",
    )?;
    stmt.query_map(
        params![
            filter.channel.map(Channel::as_str),
            filter.address,
            filter.reason,
            to_millis(now),
            after_channel,
            after_address,
            after_scope,
            limit
        ],
        |row| {
            let scope: String = row.get(2)?;
            let source: Option<String> = row.get(4)?;
            Ok(Suppression {
                channel: parse_column(row, 0)?,
                address: row.get(1)?,
                transport: (!scope.is_empty()).then_some(scope),
                reason: row.get(3)?,
                source_stamp: source.and_then(|s| s.parse().ok()),
                created_at: from_millis(row.get(5)?),
                expires_at: row.get::<_, Option<i64>>(6)?.map(from_millis),
            })
        },
    )?
    .collect()
}

pub(super) fn put(tx: &Transaction<'_>, entry: &Suppression) -> rusqlite::Result<()> {
    tx.prepare_cached(&upsert_suppressions_sql(
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    ))?
    .execute(params![
        entry.channel.as_str(),
        entry.address,
        entry.scope(),
        entry.reason,
        entry.source_stamp.map(|s| s.to_string()),
        to_millis(entry.created_at),
        entry.expires_at.map(to_millis),
    ])?;
    Ok(())
}

/// A message's delivery state as stored, for reads.
pub(super) fn delivery_of(detail: Option<String>) -> DeliveryStatus {
    detail
        .and_then(|d| serde_json::from_str(&d).ok())
        .unwrap_or_default()
}
