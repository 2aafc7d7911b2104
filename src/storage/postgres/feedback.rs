//! PostgreSQL's part of delivery feedback and suppression: the look-up of
//! suppressed recipients at enqueue and the storing of suppressed
//! messages, the writing of a batch of provider reports (planned by
//! [`crate::storage::feedback`]), their re-matching, and the suppression
//! list's own reads and writes.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::{PostgresStorage, RECIPIENT_SEPARATOR, bucket_of_rule, corrupt, finish, stamp, uuid};
use crate::domain::{
    Channel, DeliveryStatus, Fingerprint, NewMessage, Stamp, Status, email_without,
};
use crate::feedback::FeedbackEvent;
use crate::storage::feedback::{
    self as shared, FeedbackBatch, FeedbackRecorded, Matched, Received, StoredEvent, Suppression,
    SuppressionCursor, SuppressionFilter,
};
use crate::storage::rollups::feedback_rollup;
use crate::storage::sql::upsert_suppressions_sql;
use crate::storage::{Enqueued, Outcome, Recorded, StorageError, clamp_limit};

/// Per message, its recipients on the suppression list with the reason:
/// one statement for the whole batch.
pub(super) async fn suppressed_among(
    client: &impl GenericClient,
    messages: &[NewMessage],
    now: DateTime<Utc>,
) -> Result<Vec<Vec<(String, String)>>, StorageError> {
    let mut channels: Vec<&str> = Vec::new();
    let mut addresses: Vec<&str> = Vec::new();
    for message in messages {
        for recipient in &message.recipients {
            channels.push(message.channel.as_str());
            addresses.push(recipient);
        }
    }
    let mut hits = vec![Vec::new(); messages.len()];
    if addresses.is_empty() {
        return Ok(hits);
    }
    let statement = client
        .prepare_cached(
            "SELECT s.channel, s.address, s.scope, s.reason
             FROM unnest($1::text[], $2::text[]) AS i(channel, address)
             JOIN suppressions s ON s.channel = i.channel AND s.address = i.address
             WHERE s.expires_at IS NULL OR s.expires_at > $3",
        )
        .await?;
    let rows = client
        .query(&statement, &[&channels, &addresses, &now])
        .await?;
    if rows.is_empty() {
        return Ok(hits);
    }
    let mut found: HashMap<(String, String), Vec<(String, String)>> = HashMap::new();
    for row in &rows {
        let key = (row.try_get::<_, String>(0)?, row.try_get::<_, String>(1)?);
        found
            .entry(key)
            .or_default()
            .push((row.try_get(2)?, row.try_get(3)?));
    }
    for (message, hit) in messages.iter().zip(hits.iter_mut()) {
        for recipient in &message.recipients {
            let key = (message.channel.as_str().to_owned(), recipient.clone());
            let entry = found.get(&key).and_then(|scopes| {
                scopes
                    .iter()
                    .find(|(scope, _)| scope.is_empty() || *scope == message.transport)
            });
            if let Some((_, reason)) = entry {
                hit.push((recipient.clone(), reason.clone()));
            }
        }
    }
    Ok(hits)
}

impl PostgresStorage {
    /// An enqueue that meets suppressed recipients: in one transaction,
    /// the messages with recipients left go to the live table (an email
    /// without its suppressed addresses, a `suppressed` event naming
    /// each), the others are stored finished as `suppressed`.
    pub(super) async fn enqueue_suppressing(
        &self,
        messages: Vec<NewMessage>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Enqueued>, StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stored = match suppressed_among(&tx, &messages, now).await {
            Ok(hits) => self.store_suppressing(&tx, messages, hits, now).await,
            Err(err) => Err(err),
        };
        finish(tx, stored).await
    }

    async fn store_suppressing(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        messages: Vec<NewMessage>,
        hits: Vec<Vec<(String, String)>>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Enqueued>, StorageError> {
        let mut results: Vec<Option<Enqueued>> = vec![None; messages.len()];
        let mut live = Vec::new();
        let mut live_index = Vec::new();
        let mut live_dropped = Vec::new();
        for (index, (mut message, hit)) in messages.into_iter().zip(hits).enumerate() {
            let left: Vec<String> = message
                .recipients
                .iter()
                .filter(|r| !hit.iter().any(|(a, _)| a == *r))
                .cloned()
                .collect();
            if hit.is_empty() || (!left.is_empty() && message.channel == Channel::Email) {
                if !hit.is_empty() {
                    let dropped: Vec<String> = hit.iter().map(|(a, _)| a.clone()).collect();
                    if let Some(payload) = email_without(&message.payload, &dropped) {
                        message.payload = payload;
                    }
                    message.recipients = left;
                }
                live_index.push(index);
                live_dropped.push(hit);
                live.push(message);
            } else {
                results[index] = Some(self.store_suppressed(tx, message, hit, now).await?);
            }
        }
        // What is left of each message meets no entry, unless one was
        // added since the look-up: the client sends again.
        let stored = self.insert_live(tx, &live, now).await?.ok_or_else(|| {
            StorageError::Unavailable("the suppression list changed during the enqueue".into())
        })?;
        for ((index, mut enqueued), hit) in live_index.into_iter().zip(stored).zip(live_dropped) {
            if enqueued.created && !hit.is_empty() {
                write_suppressed_events(tx, enqueued.id, &hit, now, super::live_day()).await?;
                enqueued.suppressed = hit.into_iter().map(|(a, _)| a).collect();
            }
            results[index] = Some(enqueued);
        }
        results
            .into_iter()
            .map(|r| r.ok_or_else(|| StorageError::Backend("an enqueue result is missing".into())))
            .collect()
    }

    /// Stores one message all of whose recipients are suppressed: finished
    /// at once, status `suppressed`, an event per recipient. Its key is
    /// taken as any message's is; a known key answers its message.
    async fn store_suppressed(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        message: NewMessage,
        hit: Vec<(String, String)>,
        now: DateTime<Utc>,
    ) -> Result<Enqueued, StorageError> {
        if let Some(key) = &message.idempotency_key {
            let taken = tx
                .execute(
                    "INSERT INTO idempotency_keys (key, message_id, created_at)
                     SELECT $1, $2, $3
                     WHERE NOT EXISTS (SELECT 1 FROM messages WHERE idempotency_key = $1)
                     ON CONFLICT (key) DO NOTHING",
                    &[key, &uuid(message.id), &now],
                )
                .await?;
            if taken == 0 {
                let row = tx
                    .query_opt(
                        "SELECT id, status, fingerprint FROM messages WHERE idempotency_key = $1
                         UNION ALL
                         SELECT id, status, fingerprint FROM finished_messages
                         WHERE idempotency_key = $1
                         UNION ALL
                         SELECT k.message_id, f.status, f.fingerprint FROM idempotency_keys k
                         JOIN finished_messages f ON f.id = k.message_id WHERE k.key = $1
                         LIMIT 1",
                        &[key],
                    )
                    .await?;
                if let Some(row) = row {
                    let status: String = row.try_get(1)?;
                    return Ok(Enqueued {
                        id: stamp(row.try_get(0)?),
                        status: status.parse().map_err(|e| corrupt("status", e))?,
                        fingerprint: Fingerprint::from_stored(row.try_get(2)?),
                        created: false,
                        suppressed: Vec::new(),
                    });
                }
                // The key's message is gone (retention): taken over, as the
                // enqueue statement takes such a key over, once it is old
                // enough that no enqueue of it can still be committing.
                let taken_over = tx
                    .execute(
                        "UPDATE idempotency_keys SET message_id = $2, created_at = $3
                         WHERE key = $1 AND created_at < $3 - interval '5 minutes'",
                        &[key, &uuid(message.id), &now],
                    )
                    .await?;
                if taken_over == 0 {
                    return Err(StorageError::Unavailable(
                        "another enqueue with this idempotency key is being stored".into(),
                    ));
                }
            }
        }
        let bucket = bucket_of_rule(
            &self.retention,
            &message.transport,
            message.category.as_deref(),
            now,
        );
        let reasons: Vec<String> = hit.iter().map(|(a, r)| format!("{a} ({r})")).collect();
        let last_error = format!("suppressed: {}", reasons.join(", "));
        let recipients =
            (!message.recipients.is_empty()).then(|| message.recipients.join(RECIPIENT_SEPARATOR));
        let max_attempts = i32::try_from(message.max_attempts).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO finished_messages (id, channel, transport, category, status, priority,
                 payload, metadata, fingerprint, idempotency_key, attempts, max_attempts,
                 created_at, available_at, sent_at, last_error, updated_at, finished_on,
                 recipients)
             VALUES ($1, $2, $3, $4, 'suppressed', $5, $6::text::json, $7::text::json, $8, $9, 0,
                     $10, $11, $12, NULL, $13, $11, $14, string_to_array($15, E'\\x1f'))",
            &[
                &uuid(message.id),
                &message.channel.as_str(),
                &message.transport,
                &message.category,
                &i16::from(message.priority.get()),
                &message.payload,
                &message.metadata,
                &message.fingerprint.as_str(),
                &message.idempotency_key,
                &max_attempts,
                &now,
                &message.available_at,
                &last_error,
                &bucket,
                &recipients,
            ],
        )
        .await?;
        write_suppressed_events(tx, message.id, &hit, now, bucket).await?;
        Ok(Enqueued {
            id: message.id,
            status: Status::Suppressed,
            fingerprint: message.fingerprint,
            created: true,
            suppressed: hit.into_iter().map(|(a, _)| a).collect(),
        })
    }

    /// Puts the recipients of messages dead-lettered because their
    /// recipient is gone (an invalid number, a STOP, an unregistered
    /// token) on the suppression list, as the policy says.
    pub(super) async fn suppress_gone(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        outcomes: &[Outcome],
        recorded: &Recorded,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        let dead: HashSet<Stamp> = recorded
            .applied
            .iter()
            .filter(|(_, status)| *status == Status::Dead)
            .map(|(id, _)| *id)
            .collect();
        let mut ids = Vec::new();
        let mut reasons = Vec::new();
        let mut scopes = Vec::new();
        for outcome in outcomes.iter().filter(|o| dead.contains(&o.id)) {
            let Some(reason) = outcome
                .recipient_gone
                .and_then(|gone| self.suppression.for_recipient_gone(gone))
            else {
                continue;
            };
            ids.push(uuid(outcome.id));
            reasons.push(reason);
            scopes.push(self.suppression.scope(&outcome.transport));
        }
        if ids.is_empty() {
            return Ok(());
        }
        let statement = tx
            .prepare_cached(&upsert_suppressions_sql(
                "SELECT DISTINCT ON (f.channel, r.address, g.scope)
                        f.channel, r.address, g.scope, g.reason, f.id, $4, $5
                 FROM unnest($1::uuid[], $2::text[], $3::text[]) AS g(id, reason, scope)
                 JOIN finished_messages f ON f.id = g.id AND f.finished_on >= $6
                 CROSS JOIN LATERAL unnest(f.recipients) AS r(address)",
            ))
            .await?;
        // They finished just now: today's partition, or the kept one.
        let today = super::finished::day_of(now);
        tx.execute(
            &statement,
            &[
                &ids,
                &reasons,
                &scopes,
                &now,
                &self.suppression.expires_at(now),
                &today,
            ],
        )
        .await?;
        Ok(())
    }

    pub(super) async fn record_feedback_batch(
        &self,
        batch: FeedbackBatch,
        now: DateTime<Utc>,
    ) -> Result<FeedbackRecorded, StorageError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if let Some(nonce) = &batch.nonce {
            let fresh = tx
                .execute(
                    "INSERT INTO feedback_nonces (transport, nonce, seen_at) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                    &[&batch.transport, nonce, &now],
                )
                .await?;
            if fresh == 0 {
                tx.rollback().await?;
                return Ok(FeedbackRecorded {
                    replay: true,
                    ..FeedbackRecorded::default()
                });
            }
        }
        let events = batch.events.into_iter().map(|e| (e, now)).collect();
        let applied = self
            .apply_feedback(&tx, &batch.transport, events, now)
            .await;
        finish(tx, applied).await
    }

    pub(super) async fn rematch(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<FeedbackRecorded, StorageError> {
        let mut client = self.client().await?;
        let kept_since = shared::ago(now, self.unmatched_keep);
        // What no longer counts: old nonces, expired entries, soft
        // bounces whose window has passed.
        client
            .execute(
                "DELETE FROM feedback_nonces WHERE seen_at < $1",
                &[&shared::ago(now, self.nonce_keep)],
            )
            .await?;
        client
            .execute("DELETE FROM suppressions WHERE expires_at <= $1", &[&now])
            .await?;
        client
            .execute(
                "DELETE FROM soft_bounces WHERE first_at < $1",
                &[&shared::ago(now, self.suppression.soft_bounce_window)],
            )
            .await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                "DELETE FROM feedback_unmatched WHERE id IN (
                     SELECT id FROM feedback_unmatched ORDER BY id LIMIT $1
                     FOR UPDATE SKIP LOCKED)
                 RETURNING transport, received_at, event",
                &[&(clamp_limit(limit) as i64)],
            )
            .await?;
        let mut by_transport: BTreeMap<String, Vec<Received>> = BTreeMap::new();
        for row in &rows {
            let received_at: DateTime<Utc> = row.try_get(1)?;
            if received_at < kept_since {
                continue;
            }
            let event: serde_json::Value = row.try_get(2)?;
            let Some(event) = serde_json::from_value::<StoredEvent>(event)
                .ok()
                .and_then(StoredEvent::into_event)
            else {
                continue;
            };
            by_transport
                .entry(row.try_get(0)?)
                .or_default()
                .push((event, received_at));
        }
        let mut total = FeedbackRecorded::default();
        for (transport, events) in by_transport {
            match self.apply_feedback(&tx, &transport, events, now).await {
                Ok(recorded) => total.add(recorded),
                Err(err) => return finish(tx, Err(err)).await,
            }
        }
        finish(tx, Ok(total)).await
    }

    /// Matches, plans and writes `events` within `tx`.
    async fn apply_feedback(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        transport: &str,
        events: Vec<Received>,
        now: DateTime<Utc>,
    ) -> Result<FeedbackRecorded, StorageError> {
        // Reports that name only the provider's id find the stamp by it.
        let wanted: Vec<&str> = events
            .iter()
            .filter(|(e, _)| e.target.stamp().is_none())
            .filter_map(|(e, _)| e.target.provider_id())
            .collect();
        let mut by_provider_id: HashMap<String, Stamp> = HashMap::new();
        if !wanted.is_empty() {
            let statement = tx
                .prepare_cached(
                    "SELECT DISTINCT ON (detail ->> 'provider_message_id')
                            detail ->> 'provider_message_id', message_id
                     FROM message_events
                     WHERE transport = $1 AND kind = 'sent' AND detail ? 'provider_message_id'
                       AND detail ->> 'provider_message_id' = ANY($2)
                     ORDER BY detail ->> 'provider_message_id', id DESC",
                )
                .await?;
            for row in tx.query(&statement, &[&transport, &wanted]).await? {
                by_provider_id.insert(row.try_get(0)?, stamp(row.try_get(1)?));
            }
        }
        let targeted: Vec<(FeedbackEvent, Option<Stamp>, DateTime<Utc>)> = events
            .into_iter()
            .map(|(e, received)| {
                let stamp = e.target.stamp().or_else(|| {
                    e.target
                        .provider_id()
                        .and_then(|id| by_provider_id.get(id).copied())
                });
                (e, stamp, received)
            })
            .collect();
        let ids: Vec<Uuid> = {
            let set: HashSet<Uuid> = targeted
                .iter()
                .filter_map(|(_, s, _)| s.map(uuid))
                .collect();
            set.into_iter().collect()
        };
        let mut matched: BTreeMap<Stamp, Matched> = BTreeMap::new();
        let mut days: HashMap<Stamp, chrono::NaiveDate> = HashMap::new();
        if !ids.is_empty() {
            let lock = tx
                .prepare_cached(
                    "SELECT id, finished_on, channel, attempts, recipients, delivery_detail,
                            category
                     FROM finished_messages WHERE id = ANY($1)
                     ORDER BY id FOR UPDATE",
                )
                .await?;
            for row in tx.query(&lock, &[&ids]).await? {
                let id = stamp(row.try_get(0)?);
                let channel: String = row.try_get(2)?;
                let attempts: i32 = row.try_get(3)?;
                let detail: Option<serde_json::Value> = row.try_get(5)?;
                days.insert(id, row.try_get(1)?);
                matched.insert(
                    id,
                    Matched {
                        id,
                        channel: channel.parse().map_err(|e| corrupt("channel", e))?,
                        category: row.try_get::<_, Option<String>>(6)?.unwrap_or_default(),
                        attempts: attempts.max(0) as u32,
                        recipients: row
                            .try_get::<_, Option<Vec<String>>>(4)?
                            .unwrap_or_default(),
                        delivery: detail.and_then(|d| serde_json::from_value(d).ok()),
                        seen: HashSet::new(),
                    },
                );
            }
        }
        if !matched.is_empty() {
            let found: Vec<Uuid> = matched.keys().map(|s| uuid(*s)).collect();
            let on: Vec<chrono::NaiveDate> = {
                let set: HashSet<chrono::NaiveDate> = days.values().copied().collect();
                set.into_iter().collect()
            };
            let kinds = shared::feedback_event_kinds();
            let seen = tx
                .prepare_cached(
                    "SELECT message_id, kind, at, detail ->> 'recipient', detail ->> 'event_id'
                     FROM message_events
                     WHERE message_id = ANY($1) AND finished_on = ANY($2) AND kind = ANY($3)",
                )
                .await?;
            for row in tx.query(&seen, &[&found, &on, &kinds]).await? {
                let id = stamp(row.try_get(0)?);
                let kind: String = row.try_get(1)?;
                let at: DateTime<Utc> = row.try_get(2)?;
                let recipient: Option<String> = row.try_get(3)?;
                let event_id: Option<String> = row.try_get(4)?;
                if let Some(message) = matched.get_mut(&id) {
                    message.seen.insert(shared::identity(
                        &kind,
                        recipient.as_deref(),
                        at,
                        event_id.as_deref(),
                    ));
                }
            }
        }
        let plan = shared::plan(targeted, &mut matched, &self.suppression);
        self.write_plan(tx, transport, plan, &days, now).await
    }

    async fn write_plan(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        transport: &str,
        plan: shared::Plan,
        days: &HashMap<Stamp, chrono::NaiveDate>,
        now: DateTime<Utc>,
    ) -> Result<FeedbackRecorded, StorageError> {
        let day = |id: &Stamp| days.get(id).copied().unwrap_or_else(super::live_day);
        if self.rollups {
            let (rows, bounces) = feedback_rollup(&plan, transport, now);
            super::add_rollups(tx, &rows).await?;
            super::add_bounces(tx, &bounces).await?;
        }
        if !plan.events.is_empty() {
            let ids: Vec<Uuid> = plan.events.iter().map(|e| uuid(e.message)).collect();
            let kinds: Vec<&str> = plan.events.iter().map(|e| e.kind.as_str()).collect();
            let ats: Vec<DateTime<Utc>> = plan.events.iter().map(|e| e.at).collect();
            let attempts: Vec<i32> = plan
                .events
                .iter()
                .map(|e| i32::try_from(e.attempt).unwrap_or(i32::MAX))
                .collect();
            let details: Vec<&serde_json::Value> = plan.events.iter().map(|e| &e.detail).collect();
            let on: Vec<chrono::NaiveDate> = plan.events.iter().map(|e| day(&e.message)).collect();
            let statement = tx
                .prepare_cached(
                    "INSERT INTO message_events (message_id, kind, at, attempt, transport, detail,
                                                 finished_on)
                     SELECT id, kind, at, attempt, $6, detail, day
                     FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::int4[],
                                 $5::jsonb[], $7::date[])
                         AS t(id, kind, at, attempt, detail, day)",
                )
                .await?;
            tx.execute(
                &statement,
                &[&ids, &kinds, &ats, &attempts, &details, &transport, &on],
            )
            .await?;
        }
        if !plan.deliveries.is_empty() {
            let ids: Vec<Uuid> = plan.deliveries.iter().map(|(id, _)| uuid(*id)).collect();
            let on: Vec<chrono::NaiveDate> =
                plan.deliveries.iter().map(|(id, _)| day(id)).collect();
            let states: Vec<&str> = plan
                .deliveries
                .iter()
                .map(|(_, d)| d.state.as_str())
                .collect();
            let details: Vec<serde_json::Value> = plan
                .deliveries
                .iter()
                .map(|(_, d)| serde_json::to_value(d).unwrap_or_default())
                .collect();
            let statement = tx
                .prepare_cached(
                    "UPDATE finished_messages f SET delivery = u.state, delivery_detail = u.detail
                     FROM unnest($1::uuid[], $2::date[], $3::text[], $4::jsonb[])
                         AS u(id, day, state, detail)
                     WHERE f.id = u.id AND f.finished_on = u.day",
                )
                .await?;
            tx.execute(&statement, &[&ids, &on, &states, &details])
                .await?;
        }
        let scope = self.suppression.scope(transport);
        let expires = self.suppression.expires_at(now);
        let mut entries: Vec<(Channel, String, &str, Stamp)> = plan
            .suppress
            .iter()
            .map(|e| (e.channel, e.address.clone(), e.reason, e.source))
            .collect();
        if !plan.soft_bounces.is_empty() {
            let channels: Vec<&str> = plan.soft_bounces.keys().map(|(c, _)| c.as_str()).collect();
            let addresses: Vec<&str> = plan.soft_bounces.keys().map(|(_, a)| a.as_str()).collect();
            let counts: Vec<i32> = plan
                .soft_bounces
                .values()
                .map(|(n, _)| i32::try_from(*n).unwrap_or(i32::MAX))
                .collect();
            let window_start = shared::ago(now, self.suppression.soft_bounce_window);
            let statement = tx
                .prepare_cached(
                    "INSERT INTO soft_bounces AS b (channel, address, scope, first_at, count)
                     SELECT channel, address, $4, $5, n
                     FROM unnest($1::text[], $2::text[], $3::int4[]) AS t(channel, address, n)
                     ON CONFLICT (channel, address, scope) DO UPDATE SET
                         count = CASE WHEN b.first_at < $6 THEN excluded.count
                                      ELSE b.count + excluded.count END,
                         first_at = CASE WHEN b.first_at < $6 THEN excluded.first_at
                                         ELSE b.first_at END
                     RETURNING channel, address, count",
                )
                .await?;
            let rows = tx
                .query(
                    &statement,
                    &[&channels, &addresses, &counts, &scope, &now, &window_start],
                )
                .await?;
            let limit = i32::try_from(self.suppression.soft_bounce_limit).unwrap_or(i32::MAX);
            for row in rows {
                let count: i32 = row.try_get(2)?;
                if count < limit {
                    continue;
                }
                let channel: String = row.try_get(0)?;
                let channel: Channel = channel.parse().map_err(|e| corrupt("channel", e))?;
                let address: String = row.try_get(1)?;
                if let Some((_, source)) = plan.soft_bounces.get(&(channel, address.clone())) {
                    entries.push((channel, address, "soft_bounce", *source));
                }
            }
        }
        let mut recorded = plan.recorded;
        if !entries.is_empty() {
            // One row per address: a batch naming one twice keeps its last.
            let mut unique: BTreeMap<(Channel, String), (&str, Stamp)> = BTreeMap::new();
            for (channel, address, reason, source) in entries {
                unique.insert((channel, address), (reason, source));
            }
            let channels: Vec<&str> = unique.keys().map(|(c, _)| c.as_str()).collect();
            let addresses: Vec<&str> = unique.keys().map(|(_, a)| a.as_str()).collect();
            let reasons: Vec<&str> = unique.values().map(|(r, _)| *r).collect();
            let sources: Vec<Uuid> = unique.values().map(|(_, s)| uuid(*s)).collect();
            recorded.suppressed = unique.len();
            let statement = tx
                .prepare_cached(&upsert_suppressions_sql(
                    "SELECT channel, address, $5, reason, source, $6, $7
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[])
                     AS t(channel, address, reason, source)",
                ))
                .await?;
            tx.execute(
                &statement,
                &[
                    &channels, &addresses, &reasons, &sources, &scope, &now, &expires,
                ],
            )
            .await?;
        }
        if !plan.unmatched.is_empty() {
            let received: Vec<DateTime<Utc>> = plan.unmatched.iter().map(|(_, at)| *at).collect();
            let events: Vec<serde_json::Value> = plan
                .unmatched
                .iter()
                .map(|(e, _)| serde_json::to_value(StoredEvent::from(e)).unwrap_or_default())
                .collect();
            let statement = tx
                .prepare_cached(
                    "INSERT INTO feedback_unmatched (transport, received_at, event)
                     SELECT $1, received_at, event
                     FROM unnest($2::timestamptz[], $3::jsonb[]) AS t(received_at, event)",
                )
                .await?;
            tx.execute(&statement, &[&transport, &received, &events])
                .await?;
        }
        Ok(recorded)
    }

    pub(super) async fn suppressions(
        &self,
        filter: &SuppressionFilter,
        after: Option<SuppressionCursor>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<Suppression>, StorageError> {
        let client = self.client().await?;
        let channel = filter.channel.map(|c| c.as_str().to_owned());
        let (after_channel, after_address, after_scope) = match after {
            Some((c, a, s)) => (Some(c), Some(a), Some(s)),
            None => (None, None, None),
        };
        let statement = client
            .prepare_cached(
                "SELECT channel, address, scope, reason, source_stamp, created_at, expires_at
                 FROM suppressions
                 WHERE ($1::text IS NULL OR channel = $1)
                   AND ($2::text IS NULL OR address = $2)
                   AND ($3::text IS NULL OR reason = $3)
                   AND (expires_at IS NULL OR expires_at > $4)
                   AND ($5::text IS NULL OR (channel, address, scope) > ($5, $6, $7))
                 ORDER BY channel, address, scope
                 LIMIT $8",
            )
            .await?;
        let rows = client
            .query(
                &statement,
                &[
                    &channel,
                    &filter.address,
                    &filter.reason,
                    &now,
                    &after_channel,
                    &after_address,
                    &after_scope,
                    &(clamp_limit(limit) as i64),
                ],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let channel: String = row.try_get(0)?;
                let scope: String = row.try_get(2)?;
                Ok(Suppression {
                    channel: channel.parse().map_err(|e| corrupt("channel", e))?,
                    address: row.try_get(1)?,
                    transport: (!scope.is_empty()).then_some(scope),
                    reason: row.try_get(3)?,
                    source_stamp: row.try_get::<_, Option<Uuid>>(4)?.map(stamp),
                    created_at: row.try_get(5)?,
                    expires_at: row.try_get(6)?,
                })
            })
            .collect()
    }

    pub(super) async fn put_suppression(&self, entry: Suppression) -> Result<(), StorageError> {
        let client = self.client().await?;
        client
            .execute(
                &upsert_suppressions_sql("VALUES ($1, $2, $3, $4, $5, $6, $7)"),
                &[
                    &entry.channel.as_str(),
                    &entry.address,
                    &entry.scope(),
                    &entry.reason,
                    &entry.source_stamp.map(uuid),
                    &entry.created_at,
                    &entry.expires_at,
                ],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn delete_suppression(
        &self,
        channel: Channel,
        address: &str,
    ) -> Result<u64, StorageError> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "DELETE FROM suppressions WHERE channel = $1 AND address = $2",
                &[&channel.as_str(), &address],
            )
            .await?)
    }
}

/// A `suppressed` event per recipient left out, filed with its message.
async fn write_suppressed_events(
    tx: &deadpool_postgres::Transaction<'_>,
    id: Stamp,
    hit: &[(String, String)],
    now: DateTime<Utc>,
    day: chrono::NaiveDate,
) -> Result<(), StorageError> {
    let details: Vec<serde_json::Value> = hit
        .iter()
        .map(|(address, reason)| serde_json::json!({ "recipient": address, "reason": reason }))
        .collect();
    tx.execute(
        "INSERT INTO message_events (message_id, kind, at, attempt, detail, finished_on)
         SELECT $1, 'suppressed', $2, 0, detail, $4 FROM unnest($3::jsonb[]) AS t(detail)",
        &[&uuid(id), &now, &details, &day],
    )
    .await?;
    Ok(())
}

/// A message's delivery state as stored, for reads.
pub(super) fn delivery_of(detail: Option<serde_json::Value>) -> DeliveryStatus {
    detail
        .and_then(|d| serde_json::from_value(d).ok())
        .unwrap_or_default()
}
