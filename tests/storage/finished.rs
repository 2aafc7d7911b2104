//! Finished messages, kept apart from live ones: read, listed, replayed,
//! cancelled, answered by idempotency key, moved over from an older
//! store and expired as if they had never left the live table.

use std::time::Duration;

use chrono::{DateTime, Utc};
use herald::domain::{EventKind, Message, MessageWithEvents, NewMessage, Stamp, Status};
use herald::storage::{
    Enqueued, MessageFilter, Outcome, OutcomeKind, PageRequest, Retention, RetentionOverride,
    RetentionRule, Storage, StorageError,
};

use super::{LEASE, claim, events_of, failed, outcome};
use crate::common::{self, Email, Fixture, secs, t0};

conformance!(
    a_finished_message_is_readable_and_listed_in_order_among_live_ones,
    replay_returns_a_dead_letter_to_the_live_set_and_cancel_keeps_it_finished,
    an_idempotency_key_of_a_finished_message_is_still_known,
    move_finished_moves_what_an_older_version_left_in_messages,
    a_key_an_older_version_stored_stays_known_once_its_message_finishes,
    retention_removes_exactly_what_has_expired_per_transport,
);

/// The id a message minted at `at` would get, `n`-th in its millisecond:
/// listings order by id, and retention reads a message's age from it.
fn minted(at: DateTime<Utc>, n: u128) -> Stamp {
    let ms = u64::try_from(at.timestamp_millis()).expect("after 1970");
    Stamp(ulid::Ulid::from_parts(ms, n))
}

/// An SQL literal of `id` as the store's `id` columns hold it.
fn id_sql(f: &Fixture, id: Stamp) -> String {
    match f.storage.backend() {
        "postgres" => format!("'{}'::uuid", uuid::Uuid::from(id.0)),
        _ => format!("'{id}'"),
    }
}

async fn read(s: &dyn Storage, id: Stamp) -> MessageWithEvents {
    s.get_message(id).await.expect("get").expect("exists")
}

async fn list(s: &dyn Storage, filter: MessageFilter) -> Vec<Message> {
    s.list_messages(
        &filter,
        PageRequest {
            after: None,
            limit: 100,
        },
    )
    .await
    .expect("list")
    .items
}

pub(super) async fn listed_ids(s: &dyn Storage, filter: MessageFilter) -> Vec<Stamp> {
    list(s, filter).await.iter().map(|m| m.id).collect()
}

/// Every page of a listing, by id, following the cursors.
async fn pages(s: &dyn Storage, filter: MessageFilter, limit: usize) -> Vec<Vec<Stamp>> {
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .list_messages(&filter, PageRequest { after, limit })
            .await
            .expect("page");
        pages.push(page.items.iter().map(|m| m.id).collect());
        match page.next {
            Some(cursor) => after = Some(cursor),
            None => return pages,
        }
    }
}

fn status(status: Status) -> MessageFilter {
    MessageFilter {
        status: Some(status),
        ..MessageFilter::default()
    }
}

fn transport(name: &str) -> MessageFilter {
    MessageFilter {
        transport: Some(name.into()),
        ..MessageFilter::default()
    }
}

async fn a_finished_message_is_readable_and_listed_in_order_among_live_ones(f: &Fixture) {
    let s = f.storage.as_ref();
    // Ten messages in id order, the odd ones on `other`; 8 has 1's content.
    let batch: Vec<NewMessage> = (0..10)
        .map(|i| {
            let mut m = Email {
                transport: if i % 2 == 0 { "mail" } else { "other" },
                subject: format!("Message {}", if i == 8 { 1 } else { i }),
                ..Email::default()
            }
            .build(t0());
            m.id = minted(t0(), i);
            m
        })
        .collect();
    let id = |i: usize| batch[i].id;
    assert_eq!(batch[8].fingerprint, batch[1].fingerprint);
    s.enqueue_many(batch.clone(), t0()).await.expect("enqueue");
    let mail = claim(s, 10, t0() + secs(1)).await;
    let other = s
        .claim_due("other", common::NODE, 10, LEASE, t0() + secs(1))
        .await
        .expect("claim");
    let claimed = |i: usize| {
        mail.iter()
            .chain(&other)
            .find(|m| m.id == id(i))
            .expect("claimed")
    };
    let released = |i: usize| {
        outcome(
            claimed(i),
            OutcomeKind::Released {
                reason: "shutdown".into(),
            },
        )
    };
    // 2 and 9 stay in delivery; 4 and 7 go back to the queue.
    s.record_outcomes(
        vec![
            outcome(claimed(0), OutcomeKind::Sent),
            outcome(claimed(3), OutcomeKind::Sent),
            outcome(claimed(8), OutcomeKind::Sent),
            failed(claimed(5), None),
            failed(claimed(6), None),
            released(1),
            released(4),
            failed(claimed(7), Some(t0() + secs(60))),
        ],
        t0() + secs(2),
    )
    .await
    .expect("record");
    s.cancel(id(1), t0() + secs(3)).await.expect("cancel");

    let sent = read(s, id(0)).await;
    let m = &sent.message;
    assert_eq!(
        (m.id, m.status, m.transport.as_str()),
        (id(0), Status::Sent, "mail")
    );
    let payload: serde_json::Value = serde_json::from_str(&batch[0].payload).expect("JSON");
    assert_eq!(m.payload, payload);
    assert_eq!(m.fingerprint, batch[0].fingerprint);
    assert_eq!((m.attempts, m.max_attempts), (1, 3));
    assert_eq!((m.created_at, m.sent_at), (t0(), Some(t0() + secs(2))));
    assert_eq!((m.lease_until, m.claim_token), (None, None));
    let kinds: Vec<EventKind> = sent.events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Queued, EventKind::Sent]);
    assert_eq!(sent.events[1].started_at, Some(t0() + secs(1)));
    assert_eq!(sent.events[1].duration_ms, Some(12));

    let dead = read(s, id(5)).await;
    assert_eq!(dead.message.status, Status::Dead);
    assert_eq!(dead.message.last_error.as_deref(), Some("451 try later"));
    assert_eq!(
        dead.events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [
            EventKind::Queued,
            EventKind::AttemptFailed,
            EventKind::DeadLettered
        ]
    );
    assert_eq!(
        events_of(s, id(1)).await.last(),
        Some(&EventKind::Cancelled)
    );

    // Newest first across both tables, each message as it reads alone.
    let expected = [
        Status::Sent,
        Status::Cancelled,
        Status::Processing,
        Status::Sent,
        Status::Queued,
        Status::Dead,
        Status::Dead,
        Status::Queued,
        Status::Sent,
        Status::Processing,
    ];
    let all = list(s, MessageFilter::default()).await;
    assert_eq!(
        all.iter().map(|m| m.id).collect::<Vec<_>>(),
        (0..10).rev().map(id).collect::<Vec<_>>()
    );
    for listed in &all {
        let i = batch
            .iter()
            .position(|m| m.id == listed.id)
            .expect("one of ours");
        assert_eq!(listed.status, expected[i], "message {i}");
        assert_eq!(*listed, read(s, listed.id).await.message, "message {i}");
    }

    let ids = |list: &[usize]| list.iter().map(|i| id(*i)).collect::<Vec<_>>();
    for (wanted, members) in [
        (Status::Sent, ids(&[8, 3, 0])),
        (Status::Dead, ids(&[6, 5])),
        (Status::Cancelled, ids(&[1])),
        (Status::Queued, ids(&[7, 4])),
        (Status::Processing, ids(&[9, 2])),
    ] {
        assert_eq!(listed_ids(s, status(wanted)).await, members, "{wanted:?}");
    }
    assert_eq!(
        listed_ids(s, transport("other")).await,
        ids(&[9, 7, 5, 3, 1])
    );
    assert_eq!(
        listed_ids(
            s,
            MessageFilter {
                status: Some(Status::Sent),
                ..transport("other")
            }
        )
        .await,
        ids(&[3])
    );
    let same_content = MessageFilter {
        fingerprint: Some(batch[1].fingerprint.clone()),
        ..MessageFilter::default()
    };
    assert_eq!(listed_ids(s, same_content.clone()).await, ids(&[8, 1]));
    assert_eq!(
        listed_ids(
            s,
            MessageFilter {
                status: Some(Status::Sent),
                ..same_content
            }
        )
        .await,
        ids(&[8])
    );

    // Pages cross between live and finished messages without a gap or a
    // message twice.
    assert_eq!(
        pages(s, MessageFilter::default(), 3).await,
        [ids(&[9, 8, 7]), ids(&[6, 5, 4]), ids(&[3, 2, 1]), ids(&[0])]
    );
    assert_eq!(
        pages(s, transport("mail"), 2).await,
        [ids(&[8, 6]), ids(&[4, 2]), ids(&[0])]
    );
}

async fn replay_returns_a_dead_letter_to_the_live_set_and_cancel_keeps_it_finished(f: &Fixture) {
    let s = f.storage.as_ref();
    let batch = common::emails(2, t0());
    let (a, b) = (batch[0].id, batch[1].id);
    s.enqueue_many(batch, t0()).await.expect("enqueue");
    let claimed = claim(s, 2, t0()).await;
    s.record_outcomes(
        claimed.iter().map(|m| failed(m, None)).collect(),
        t0() + secs(1),
    )
    .await
    .expect("dead");
    let in_table = |table: &str, id: Stamp| {
        format!("SELECT count(*) FROM {table} WHERE id = {}", id_sql(f, id))
    };
    assert_eq!(f.count(&in_table("finished_messages", a)).await, 1);
    let dead_events = read(s, a).await.events;

    let replayed = s.replay(a, t0() + secs(10)).await.expect("replay");
    assert_eq!(
        (replayed.id, replayed.status, replayed.attempts),
        (a, Status::Queued, 0)
    );
    let back = read(s, a).await;
    assert_eq!(
        (back.message.status, back.message.attempts),
        (Status::Queued, 0)
    );
    assert_eq!(back.events[..dead_events.len()], dead_events[..]);
    assert_eq!(
        back.events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [
            EventKind::Queued,
            EventKind::AttemptFailed,
            EventKind::DeadLettered,
            EventKind::Replayed
        ]
    );
    assert_eq!(listed_ids(s, status(Status::Dead)).await, [b]);
    assert_eq!(listed_ids(s, status(Status::Queued)).await, [a]);
    assert_eq!(
        s.dead_letter_summary()
            .await
            .expect("summary")
            .iter()
            .map(|d| d.count)
            .sum::<u64>(),
        1
    );
    assert_eq!(f.count(&in_table("finished_messages", a)).await, 0);
    assert_eq!(f.count(&in_table("messages", a)).await, 1);
    let again = claim(s, 10, t0() + secs(10)).await;
    assert_eq!(
        again.iter().map(|m| (m.id, m.attempts)).collect::<Vec<_>>(),
        [(a, 1)],
        "claimable again, with fresh attempts"
    );

    let cancelled = s.cancel(b, t0() + secs(20)).await.expect("cancel");
    assert_eq!((cancelled.id, cancelled.status), (b, Status::Cancelled));
    assert_eq!(
        events_of(s, b).await,
        [
            EventKind::Queued,
            EventKind::AttemptFailed,
            EventKind::DeadLettered,
            EventKind::Cancelled
        ]
    );
    assert_eq!(listed_ids(s, status(Status::Cancelled)).await, [b]);
    assert!(listed_ids(s, status(Status::Dead)).await.is_empty());
    assert_eq!(f.count(&in_table("finished_messages", b)).await, 1);
    assert_eq!(f.count(&in_table("messages", b)).await, 0);
    assert!(claim(s, 10, t0() + secs(30)).await.is_empty());
    assert!(matches!(
        s.replay(b, t0() + secs(30)).await,
        Err(StorageError::Conflict {
            status: Status::Cancelled,
            ..
        })
    ));
}

async fn an_idempotency_key_of_a_finished_message_is_still_known(f: &Fixture) {
    let s = f.storage.as_ref();
    let keyed = |key: &str, subject: &str| {
        Email {
            idempotency_key: Some(key.into()),
            subject: subject.into(),
            ..Email::default()
        }
        .build(t0())
    };
    let sent = keyed("order-1", "Receipt");
    let dead = keyed("order-2", "Invoice");
    s.enqueue_many(vec![sent.clone(), dead.clone()], t0())
        .await
        .expect("enqueue");
    let claimed = claim(s, 2, t0()).await;
    let by_id = |id: Stamp| claimed.iter().find(|m| m.id == id).expect("claimed");
    s.record_outcomes(
        vec![
            outcome(by_id(sent.id), OutcomeKind::Sent),
            failed(by_id(dead.id), None),
        ],
        t0() + secs(1),
    )
    .await
    .expect("record");
    let known = |m: &NewMessage, status: Status| Enqueued {
        id: m.id,
        status,
        fingerprint: m.fingerprint.clone(),
        created: false,
        suppressed: Vec::new(),
    };

    // At once, and once the keys are older than a takeover could be.
    for (round, at) in [(0, t0() + secs(2)), (1, t0() + secs(3600))] {
        let new = keyed(&format!("order-3-{round}"), "New");
        let repeats = vec![
            keyed("order-1", "Receipt again"),
            keyed("order-2", "Invoice again"),
            keyed("order-1", "Receipt once more"),
            new.clone(),
            keyed(&format!("order-3-{round}"), "New again"),
        ];
        let results = s
            .enqueue_many(repeats.clone(), at)
            .await
            .expect("enqueue again");
        assert_eq!(
            results,
            [
                known(&sent, Status::Sent),
                known(&dead, Status::Dead),
                known(&sent, Status::Sent),
                Enqueued {
                    created: true,
                    ..known(&new, Status::Queued)
                },
                known(&new, Status::Queued),
            ],
            "round {round}"
        );
        for repeat in repeats.iter().filter(|m| m.id != new.id) {
            assert!(s.get_message(repeat.id).await.expect("get").is_none());
        }
    }
    let single = s
        .enqueue(keyed("order-2", "Invoice alone"), t0() + secs(7200))
        .await
        .expect("enqueue");
    assert_eq!(single, known(&dead, Status::Dead));
    assert_eq!(list(s, MessageFilter::default()).await.len(), 4);
}

/// A finished message as a version before V14 stored it: in `messages`,
/// with an event row per claim.
struct Legacy {
    message: NewMessage,
    status: Status,
    attempts: u32,
    finished_at: DateTime<Utc>,
    events: Vec<(EventKind, u32)>,
}

impl Legacy {
    fn sent_at(&self) -> Option<DateTime<Utc>> {
        (self.status == Status::Sent).then_some(self.finished_at)
    }

    fn last_error(&self) -> Option<&str> {
        (self.status == Status::Dead).then_some("550 no such user")
    }
}

async fn store_as_an_older_version(f: &Fixture, legacy: &[Legacy]) {
    if let Some(db) = f.side_postgres().await {
        for l in legacy {
            let m = &l.message;
            let id = uuid::Uuid::from(m.id.0);
            db.execute(
                "INSERT INTO messages (id, channel, transport, category, status, priority, payload,
                     metadata, fingerprint, idempotency_key, attempts, max_attempts, created_at,
                     available_at, effective_at, sent_at, last_error, updated_at)
                 VALUES ($1, 'email', $2, NULL, $3, $4, $5::text::json, $6::text::json, $7, $8,
                     $9, $10, $11, $11, $11, $12, $13, $14)",
                &[
                    &id,
                    &m.transport,
                    &l.status.as_str(),
                    &i16::from(m.priority.get()),
                    &m.payload,
                    &m.metadata,
                    &m.fingerprint.as_str(),
                    &m.idempotency_key,
                    &(l.attempts as i32),
                    &(m.max_attempts as i32),
                    &t0(),
                    &l.sent_at(),
                    &l.last_error(),
                    &l.finished_at,
                ],
            )
            .await
            .expect("an old row");
            for (kind, attempt) in &l.events {
                db.execute(
                    // Where an older version's events are after the upgrade.
                    "INSERT INTO message_events_legacy (message_id, kind, at, attempt, transport)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[&id, &kind.as_str(), &t0(), &(*attempt as i32), &m.transport],
                )
                .await
                .expect("an old event");
            }
        }
    } else {
        let db = f.side_sqlite().expect("a SQLite store");
        // An older version's live table had the indexes this one drops
        // once nothing waits to move (V1 and V9's definitions).
        db.execute_batch(
            "CREATE INDEX IF NOT EXISTS messages_status ON messages (status, id);
             CREATE INDEX IF NOT EXISTS messages_transport ON messages (transport, id);
             CREATE INDEX IF NOT EXISTS messages_fingerprint ON messages (fingerprint, id);
             CREATE INDEX IF NOT EXISTS messages_dead_since
                 ON messages (updated_at, transport, channel, category, status)
                 WHERE status = 'dead';",
        )
        .expect("an older version's indexes");
        for l in legacy {
            let m = &l.message;
            db.execute(
                "INSERT INTO messages (id, channel, transport, category, status, priority, payload,
                     metadata, fingerprint, idempotency_key, attempts, max_attempts, created_at,
                     available_at, effective_at, sent_at, last_error, updated_at)
                 VALUES (?1, 'email', ?2, NULL, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?11,
                     ?12, ?13, ?14)",
                rusqlite::params![
                    m.id.to_string(),
                    m.transport,
                    l.status.as_str(),
                    m.priority.get(),
                    m.payload,
                    m.metadata,
                    m.fingerprint.as_str(),
                    m.idempotency_key,
                    l.attempts,
                    m.max_attempts,
                    t0().timestamp_millis(),
                    l.sent_at().map(|at| at.timestamp_millis()),
                    l.last_error(),
                    l.finished_at.timestamp_millis(),
                ],
            )
            .expect("an old row");
            for (kind, attempt) in &l.events {
                db.execute(
                    "INSERT INTO message_events (message_id, kind, at, attempt, transport)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    rusqlite::params![
                        m.id.to_string(),
                        kind.as_str(),
                        t0().timestamp_millis(),
                        attempt,
                        m.transport
                    ],
                )
                .expect("an old event");
            }
        }
    }
}

async fn move_finished_moves_what_an_older_version_left_in_messages(f: &Fixture) {
    use EventKind::{AttemptFailed, Cancelled, Claimed, DeadLettered, Queued, Sent};
    let s = f.storage.as_ref();
    let message = |i: u128, key: Option<&str>| {
        let mut m = Email {
            subject: format!("Old {i}"),
            idempotency_key: key.map(str::to_owned),
            ..Email::default()
        }
        .build(t0());
        m.id = minted(t0(), i);
        m
    };
    let sent = |i, key| Legacy {
        message: message(i, key),
        status: Status::Sent,
        attempts: 1,
        finished_at: t0() + secs(1),
        events: vec![(Queued, 0), (Claimed, 1), (Sent, 1)],
    };
    let dead = |i, key| Legacy {
        message: message(i, key),
        status: Status::Dead,
        attempts: 1,
        finished_at: t0() + secs(1),
        events: vec![
            (Queued, 0),
            (Claimed, 1),
            (AttemptFailed, 1),
            (DeadLettered, 1),
        ],
    };
    let legacy = [
        sent(0, Some("legacy-0")),
        dead(1, Some("legacy-1")),
        Legacy {
            message: message(2, None),
            status: Status::Cancelled,
            attempts: 0,
            finished_at: t0() + secs(1),
            events: vec![(Queued, 0), (Cancelled, 0)],
        },
        sent(4, None),
        dead(5, Some("legacy-5")),
    ];
    store_as_an_older_version(f, &legacy).await;
    // A live message among them, enqueued by this version.
    let live = message(3, None);
    s.enqueue(live.clone(), t0() + secs(2))
        .await
        .expect("enqueue");

    let mut before = Vec::new();
    for l in &legacy {
        let found = read(s, l.message.id).await;
        assert_eq!(found.message.status, l.status);
        assert_eq!(found.message.sent_at, l.sent_at());
        assert_eq!(found.message.last_error.as_deref(), l.last_error());
        let payload: serde_json::Value = serde_json::from_str(&l.message.payload).expect("JSON");
        assert_eq!(found.message.payload, payload);
        assert_eq!(
            found
                .events
                .iter()
                .map(|e| (e.kind, e.attempt))
                .collect::<Vec<_>>(),
            l.events
        );
        before.push(found);
    }
    let listed = list(s, MessageFilter::default()).await;
    let dead_letters = s.dead_letter_summary().await.expect("summary");
    assert_eq!(dead_letters.iter().map(|d| d.count).sum::<u64>(), 2);
    assert_eq!(
        listed.iter().map(|m| m.id).collect::<Vec<_>>(),
        [5, 4, 3, 2, 1, 0].map(|i| minted(t0(), i))
    );
    assert_eq!(
        listed_ids(s, status(Status::Dead)).await,
        [minted(t0(), 5), minted(t0(), 1)]
    );
    let known = |l: &Legacy| Enqueued {
        id: l.message.id,
        status: l.status,
        fingerprint: l.message.fingerprint.clone(),
        created: false,
        suppressed: Vec::new(),
    };
    let again = |key: &str| {
        Email {
            subject: "Again".into(),
            idempotency_key: Some(key.into()),
            ..Email::default()
        }
        .build(t0())
    };
    assert_eq!(
        s.enqueue(again("legacy-0"), t0() + secs(3))
            .await
            .expect("enqueue"),
        known(&legacy[0])
    );

    let mut moved = Vec::new();
    loop {
        let n = s.move_finished(2).await.expect("move");
        moved.push(n);
        // Mid-move, every message reads and lists as before.
        assert_eq!(list(s, MessageFilter::default()).await, listed);
        assert_eq!(
            s.dead_letter_summary().await.expect("summary"),
            dead_letters
        );
        for found in &before {
            assert_eq!(read(s, found.message.id).await, *found);
        }
        if n == 0 {
            break;
        }
    }
    assert_eq!(moved, [2, 2, 1, 0], "bounded batches, then nothing left");
    assert_eq!(
        f.count("SELECT count(*) FROM messages WHERE status IN ('sent', 'dead', 'cancelled')")
            .await,
        0
    );
    assert_eq!(f.count("SELECT count(*) FROM finished_messages").await, 5);
    assert_eq!(f.count("SELECT count(*) FROM messages").await, 1);
    assert_eq!(read(s, live.id).await.message.status, Status::Queued);
    assert_eq!(
        listed_ids(s, status(Status::Dead)).await,
        [minted(t0(), 5), minted(t0(), 1)]
    );

    let results = s
        .enqueue_many(
            vec![again("legacy-0"), again("legacy-1"), again("legacy-5")],
            t0() + secs(3600),
        )
        .await
        .expect("enqueue");
    assert_eq!(
        results,
        [known(&legacy[0]), known(&legacy[1]), known(&legacy[4])]
    );
    assert_eq!(list(s, MessageFilter::default()).await.len(), 6);
    assert_eq!(f.orphan_events().await, 0);
    // A moved dead letter replays like any other.
    let replayed = s
        .replay(legacy[1].message.id, t0() + secs(3600))
        .await
        .expect("replay");
    assert_eq!(replayed.status, Status::Queued);
}

async fn a_key_an_older_version_stored_stays_known_once_its_message_finishes(f: &Fixture) {
    let s = f.storage.as_ref();
    let keyed = |subject: &str| {
        Email {
            subject: subject.into(),
            idempotency_key: Some("legacy-live".into()),
            ..Email::default()
        }
        .build(t0())
    };
    // Queued by the older version, delivered by this one.
    let legacy = Legacy {
        message: keyed("Queued before the upgrade"),
        status: Status::Queued,
        attempts: 0,
        finished_at: t0(),
        events: vec![(EventKind::Queued, 0)],
    };
    store_as_an_older_version(f, std::slice::from_ref(&legacy)).await;
    let claimed = claim(s, 10, t0() + secs(1)).await;
    assert_eq!(claimed.len(), 1);
    s.record_outcomes(
        vec![outcome(&claimed[0], OutcomeKind::Sent)],
        t0() + secs(2),
    )
    .await
    .expect("sent");
    let known = Enqueued {
        id: legacy.message.id,
        status: Status::Sent,
        fingerprint: legacy.message.fingerprint.clone(),
        created: false,
        suppressed: Vec::new(),
    };
    for at in [t0() + secs(3), t0() + secs(3600)] {
        let again = keyed("Again");
        assert_eq!(s.enqueue(again.clone(), at).await.expect("enqueue"), known);
        assert!(s.get_message(again.id).await.expect("get").is_none());
    }
    assert_eq!(list(s, MessageFilter::default()).await.len(), 1);
}

async fn retention_removes_exactly_what_has_expired_per_transport(f: &Fixture) {
    let hour = Duration::from_secs(3600);
    let day = Duration::from_secs(86_400);
    let month = 30 * day;
    let retention = Retention {
        default: RetentionRule {
            sent: Some(month),
            dead: Some(month),
            cancelled: Some(month),
            payload_after_sent: None,
        },
        // Most specific first, each fully resolved.
        overrides: vec![
            RetentionOverride {
                transport: Some("other".into()),
                category: Some("otp".into()),
                rule: RetentionRule {
                    sent: Some(hour),
                    dead: None,
                    cancelled: None,
                    payload_after_sent: None,
                },
            },
            RetentionOverride {
                transport: Some("other".into()),
                category: None,
                rule: RetentionRule {
                    sent: Some(day),
                    dead: Some(2 * hour),
                    cancelled: None,
                    payload_after_sent: None,
                },
            },
        ],
    };
    let s = herald::storage::open(&herald::storage::StorageOptions {
        retention,
        ..f.options.clone()
    })
    .await
    .expect("open with retention");
    let s = s.as_ref();
    // (transport, category, how it ends, when)
    let plan: [(&'static str, Option<&'static str>, Status, i64); 9] = [
        ("other", None, Status::Sent, 0),
        ("other", None, Status::Dead, 0),
        ("other", None, Status::Cancelled, 0),
        ("other", Some("otp"), Status::Sent, 0),
        ("other", Some("otp"), Status::Dead, 0),
        ("mail", None, Status::Sent, 0),
        ("other", None, Status::Sent, 7200),
        ("mail", None, Status::Cancelled, 0),
        // The pair override is `other`'s alone.
        ("mail", Some("otp"), Status::Sent, 0),
    ];
    let batch: Vec<NewMessage> = plan
        .iter()
        .enumerate()
        .map(|(i, (transport, category, _, _))| {
            let mut m = Email {
                transport,
                category: *category,
                idempotency_key: (i == 3).then(|| "otp-3".into()),
                ..Email::default()
            }
            .build(t0());
            m.id = minted(t0(), i as u128);
            m
        })
        .collect();
    s.enqueue_many(batch.clone(), t0()).await.expect("enqueue");
    for (m, (_, _, ends, _)) in batch.iter().zip(&plan) {
        if *ends == Status::Cancelled {
            s.cancel(m.id, t0()).await.expect("cancel");
        }
    }
    let mut claimed = Vec::new();
    for transport in ["mail", "other"] {
        claimed.extend(
            s.claim_due(transport, common::NODE, 10, LEASE, t0())
                .await
                .expect("claim"),
        );
    }
    for (m, (_, _, ends, at)) in batch.iter().zip(&plan) {
        let Some(claimed) = claimed.iter().find(|c| c.id == m.id) else {
            continue;
        };
        let ended = match ends {
            Status::Sent => outcome(claimed, OutcomeKind::Sent),
            _ => failed(claimed, None),
        };
        s.record_outcomes(vec![ended], t0() + secs(*at))
            .await
            .expect("record");
    }

    let keyed = || {
        Email {
            transport: "other",
            category: Some("otp"),
            idempotency_key: Some("otp-3".into()),
            subject: "Again".into(),
            ..Email::default()
        }
        .build(t0())
    };
    let known = s.enqueue(keyed(), t0() + secs(60)).await.expect("enqueue");
    assert_eq!((known.id, known.created), (batch[3].id, false));

    let pg = herald::storage::is_postgres_url(&f.options.url);
    let mut kept: Vec<usize> = (0..plan.len()).collect();
    for (at, gone) in [
        // otp on `other`: sent kept an hour.
        (secs(3601), vec![3]),
        // `other`: dead kept two hours.
        (secs(7201), vec![1]),
        // `other`: sent kept a day, from when each was sent.
        (secs(86_401), vec![0]),
        (secs(86_400 + 7201), vec![6]),
        // The default: 30 days for each status. PostgreSQL expires the
        // default rule's sent messages a whole day at a time, with the
        // partition of the day they were sent: once that day's end is 30
        // days ago.
        (
            secs(30 * 86_400 + 1),
            if pg { vec![7] } else { vec![5, 7, 8] },
        ),
        (secs(31 * 86_400), if pg { vec![5, 8] } else { vec![] }),
        // Kept for ever: `other`'s cancelled and otp dead.
        (secs(400 * 86_400), vec![]),
    ] {
        let now = t0() + at;
        let expired = s.expire_finished(now, 1000).await.expect("expire");
        // PostgreSQL drops the default rule's sent messages with their
        // day's partition instead of counting them as deleted.
        if pg {
            assert!(expired.deleted <= gone.len() as u64, "at {now}");
        } else {
            assert_eq!(expired.deleted, gone.len() as u64, "at {now}");
        }
        kept.retain(|i| !gone.contains(i));
        for (i, m) in batch.iter().enumerate() {
            let found = s.get_message(m.id).await.expect("get");
            assert_eq!(found.is_some(), kept.contains(&i), "message {i} at {now}");
        }
        assert_eq!(
            s.expire_finished(now, 1000).await.expect("expire").total(),
            0,
            "nothing more at {now}"
        );
    }
    assert_eq!(kept, [2, 4]);
    assert_eq!(f.orphan_events().await, 0);
    // The key went with its message: it names a new one now.
    let again = keyed();
    let taken = s
        .enqueue(again.clone(), t0() + secs(3601))
        .await
        .expect("enqueue");
    assert_eq!((taken.id, taken.created), (again.id, true));
}

/// A message finishing on a day whose partition was never made ahead (a
/// clock far from the days maintenance prepared) gets it made then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_makes_a_missing_day_partition_on_demand() {
    let f = Fixture::postgres().await;
    let s = f.storage.as_ref();
    let attached = |day: &str| {
        format!(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'finished_messages'::regclass
               AND c.relname = 'finished_messages_p{day}'"
        )
    };
    let batch = common::emails(2, t0());
    s.enqueue_many(batch.clone(), t0()).await.expect("enqueue");

    let sent_on = t0() + chrono::Duration::days(40);
    assert_eq!(f.count(&attached("20260210")).await, 0);
    let claimed = claim(s, 1, sent_on).await.remove(0);
    let recorded = s
        .record_outcomes(vec![outcome(&claimed, OutcomeKind::Sent)], sent_on)
        .await
        .expect("an outcome on a day without a partition");
    assert_eq!(recorded.applied, [(claimed.id, Status::Sent)]);
    assert_eq!(f.count(&attached("20260210")).await, 1);
    let in_day = |day: &str, id: Stamp| {
        format!(
            "SELECT count(*) FROM finished_messages_p{day} WHERE id = {}",
            id_sql(&f, id)
        )
    };
    assert_eq!(f.count(&in_day("20260210", claimed.id)).await, 1);
    let sent = read(s, claimed.id).await;
    assert_eq!(
        (sent.message.status, sent.message.sent_at),
        (Status::Sent, Some(sent_on))
    );

    // A cancel, beyond the days the outcome made ready.
    let cancelled_on = t0() + chrono::Duration::days(50);
    let queued = batch
        .iter()
        .find(|m| m.id != claimed.id)
        .expect("the other");
    assert_eq!(f.count(&attached("20260220")).await, 0);
    s.cancel(queued.id, cancelled_on).await.expect("cancel");
    assert_eq!(f.count(&in_day("20260220", queued.id)).await, 1);
    assert_eq!(read(s, queued.id).await.message.status, Status::Cancelled);

    // A lease that expires on the final attempt, later still.
    let last = Email::default().build(t0());
    s.enqueue(last.clone(), t0()).await.expect("enqueue");
    for _ in 0..2 {
        let claimed = claim(s, 1, t0()).await.remove(0);
        s.record_outcomes(vec![failed(&claimed, Some(t0()))], t0())
            .await
            .expect("retry");
    }
    assert_eq!(claim(s, 1, t0()).await[0].attempts, 3);
    let expired_on = t0() + chrono::Duration::days(60);
    assert_eq!(f.count(&attached("20260302")).await, 0);
    let recovered = s
        .recover_expired(expired_on, common::no_node_dead(), 100)
        .await
        .expect("recover");
    assert_eq!(recovered, [last.id]);
    assert_eq!(f.count(&in_day("20260302", last.id)).await, 1);
    assert_eq!(read(s, last.id).await.message.status, Status::Dead);
}

/// A live table laid out before claims rewrote only what they change
/// (`updated_at` not last, full pages) is re-laid once it is idle: never
/// while a claim is out, since outcomes find their rows where the claim
/// left them. Its rows, indexes and every statement keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_relays_an_old_live_table_once_no_claim_is_out() {
    let f = Fixture::postgres().await;
    let s = f.storage.as_ref();
    let db = f.side_postgres().await.expect("PostgreSQL");
    let last_column = "SELECT attname::text FROM pg_attribute
        WHERE attrelid = 'messages'::regclass AND attnum > 0 AND NOT attisdropped
        ORDER BY attnum DESC LIMIT 1";
    let layout = || async {
        let last: String = db
            .query_one(last_column, &[])
            .await
            .expect("columns")
            .get(0);
        let options: Option<Vec<String>> = db
            .query_one(
                "SELECT reloptions FROM pg_class WHERE oid = 'messages'::regclass",
                &[],
            )
            .await
            .expect("options")
            .get(0);
        let fillfactor = options
            .unwrap_or_default()
            .into_iter()
            .find(|o| o.starts_with("fillfactor="));
        (last, fillfactor)
    };
    let lean = ("updated_at".to_string(), Some("fillfactor=50".to_string()));
    assert_eq!(layout().await, lean, "a new store is laid out lean");

    let batch = common::emails(3, t0());
    s.enqueue_many(batch.clone(), t0()).await.expect("enqueue");
    let claimed = claim(s, 1, t0() + secs(1)).await.remove(0);
    // As an older version laid it out: `status` after `updated_at`, pages
    // filled to the brim.
    db.batch_execute(
        "ALTER TABLE messages RENAME COLUMN status TO status_before;
         ALTER TABLE messages ADD COLUMN status text;
         UPDATE messages SET status = status_before;
         ALTER TABLE messages DROP COLUMN status_before;
         ALTER TABLE messages ALTER COLUMN status SET NOT NULL;
         ALTER TABLE messages RESET (fillfactor);",
    )
    .await
    .expect("the old layout");
    let old = ("status".to_string(), None);
    assert_eq!(layout().await, old);

    assert_eq!(s.move_finished(100).await.expect("upkeep"), 0);
    assert_eq!(layout().await, old, "not while a claim is out");
    let recorded = s
        .record_outcomes(vec![outcome(&claimed, OutcomeKind::Sent)], t0() + secs(2))
        .await
        .expect("the claim's outcome, found where the claim left it");
    assert_eq!(recorded.applied, [(claimed.id, Status::Sent)]);

    assert_eq!(s.move_finished(100).await.expect("upkeep"), 0);
    assert_eq!(layout().await, lean, "re-laid once idle");
    let indexes: Vec<String> = db
        .query(
            "SELECT indexname::text FROM pg_indexes
             WHERE tablename = 'messages' AND schemaname = current_schema() ORDER BY 1",
            &[],
        )
        .await
        .expect("indexes")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        indexes,
        [
            "messages_claim",
            "messages_idempotency",
            "messages_lease",
            "messages_pkey",
            "messages_unmoved"
        ]
    );
    let bad = db
        .execute("UPDATE messages SET status = 'lost'", &[])
        .await
        .expect_err("the status check is kept");
    assert_eq!(
        bad.as_db_error().and_then(|e| e.constraint()),
        Some("messages_status_check"),
        "{bad:?}"
    );

    // The rows, and the statements the pool prepared before, as before.
    assert_eq!(read(s, claimed.id).await.message.status, Status::Sent);
    let rest = claim(s, 10, t0() + secs(3)).await;
    assert_eq!(
        rest.iter().map(|m| m.id).collect::<Vec<_>>(),
        batch
            .iter()
            .map(|m| m.id)
            .filter(|id| *id != claimed.id)
            .collect::<Vec<_>>()
    );
    let recorded = s
        .record_outcomes(
            rest.iter().map(|m| outcome(m, OutcomeKind::Sent)).collect(),
            t0() + secs(4),
        )
        .await
        .expect("outcomes");
    assert_eq!(recorded.applied.len(), 2);
    s.enqueue_many(common::emails(2, t0() + secs(5)), t0() + secs(5))
        .await
        .expect("enqueue");
    assert_eq!(f.count("SELECT count(*) FROM messages").await, 2);
    assert_eq!(f.count("SELECT count(*) FROM finished_messages").await, 3);

    // A column the layout does not name (a later migration's) is never
    // copied away.
    db.batch_execute("ALTER TABLE messages ADD COLUMN later text")
        .await
        .expect("a later column");
    for m in claim(s, 10, t0() + secs(6)).await {
        s.record_outcomes(vec![outcome(&m, OutcomeKind::Sent)], t0() + secs(7))
            .await
            .expect("sent");
    }
    assert_eq!(s.move_finished(100).await.expect("upkeep"), 0);
    assert_eq!(
        layout().await,
        ("later".to_string(), Some("fillfactor=50".to_string()))
    );
}

/// A store from before V16 (finished messages indexed by `(status, id)`
/// and `(fingerprint, id)` on every partition) too large to change in one
/// transaction: the node's start leaves it as it is, and upkeep builds the
/// lean indexes partition by partition, then drops the old ones. Listings
/// by status and fingerprint answer the same throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replaces_the_finished_indexes_of_a_large_store_partition_by_partition() {
    let f = Fixture::postgres().await;
    let s = f.storage.as_ref();
    let db = f.side_postgres().await.expect("PostgreSQL");
    let indexes = || async {
        db.query(
            "SELECT c.relname::text, i.indisvalid FROM pg_index i
             JOIN pg_class c ON c.oid = i.indexrelid
             WHERE i.indrelid = 'finished_messages'::regclass ORDER BY 1",
            &[],
        )
        .await
        .expect("indexes")
        .iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, bool>(1)))
        .collect::<Vec<_>>()
    };
    let lean = [
        ("finished_messages_category".to_string(), true),
        ("finished_messages_created".to_string(), true),
        ("finished_messages_delivery".to_string(), true),
        ("finished_messages_fingerprint_hash".to_string(), true),
        ("finished_messages_idempotency".to_string(), true),
        ("finished_messages_pkey".to_string(), true),
        ("finished_messages_recipients".to_string(), true),
        ("finished_messages_transport".to_string(), true),
        ("finished_messages_unsent".to_string(), true),
    ];
    assert_eq!(indexes().await, lean, "a new store is indexed lean at once");

    // V15's indexes, on a store with a sent, a dead and a cancelled
    // message among 10,000 sent older ones: V16 then declares its own.
    db.batch_execute(
        "DROP INDEX finished_messages_unsent, finished_messages_fingerprint_hash,
                    message_events_provider_id;
         CREATE INDEX finished_messages_status ON finished_messages (status, id);
         CREATE INDEX finished_messages_fingerprint ON finished_messages (fingerprint, id);",
    )
    .await
    .expect("V15's indexes");
    let batch: Vec<NewMessage> = (0..3)
        .map(|i| {
            Email {
                subject: format!("Message {i}"),
                ..Email::default()
            }
            .build(t0())
        })
        .collect();
    s.enqueue_many(batch.clone(), t0()).await.expect("enqueue");
    let claimed = claim(s, 2, t0() + secs(1)).await;
    let dead = outcome(
        &claimed[1],
        OutcomeKind::Failed {
            error: "550 no such user".into(),
            retry_at: None,
        },
    );
    let sent = Outcome {
        provider_message_id: Some("SM0001".into()),
        ..outcome(&claimed[0], OutcomeKind::Sent)
    };
    s.record_outcomes(vec![sent, dead], t0() + secs(2))
        .await
        .expect("outcomes");
    s.cancel(batch[2].id, t0() + secs(3)).await.expect("cancel");
    db.batch_execute(
        "INSERT INTO finished_messages (id, channel, transport, status, priority, payload,
             metadata, fingerprint, attempts, max_attempts, created_at, available_at, sent_at,
             updated_at, finished_on)
         SELECT ('00000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, 'email', 'mail', 'sent', 5, '{}', '{}', md5(g::text), 1, 3,
                now(), now(), now(), now(), DATE '9999-01-01'
         FROM generate_series(1, 10000) AS g",
    )
    .await
    .expect("a large store");
    db.batch_execute(include_str!(
        "../../sql/postgres/V16__lean_finished_indexes.sql"
    ))
    .await
    .expect("V16");
    db.batch_execute(include_str!(
        "../../sql/postgres/V17__provider_message_ids.sql"
    ))
    .await
    .expect("V17");
    let provider_index_valid = || async {
        db.query_one(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'message_events_provider_id'::regclass",
            &[],
        )
        .await
        .expect("the provider id index")
        .get::<_, bool>(0)
    };
    assert!(!provider_index_valid().await, "declared, not built");
    let answers = || async {
        let by = |filter| async { listed_ids(s, filter).await };
        (
            by(status(Status::Sent)).await.contains(&claimed[0].id),
            by(status(Status::Dead)).await,
            by(status(Status::Cancelled)).await,
            by(MessageFilter {
                fingerprint: Some(batch[1].fingerprint.clone()),
                ..MessageFilter::default()
            })
            .await,
        )
    };
    let expected = (
        true,
        vec![batch[1].id],
        vec![batch[2].id],
        vec![batch[1].id],
    );
    assert_eq!(answers().await, expected);
    let invalid = |all: Vec<(String, bool)>| {
        all.into_iter()
            .filter(|(_, valid)| !valid)
            .map(|(name, _)| name)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        invalid(indexes().await),
        [
            "finished_messages_fingerprint_hash",
            "finished_messages_unsent"
        ]
    );

    s.migrate().await.expect("a node's start");
    assert_eq!(invalid(indexes().await).len(), 2, "no long build at start");
    assert_eq!(answers().await, expected);

    assert_eq!(s.move_finished(100).await.expect("upkeep"), 0);
    assert_eq!(indexes().await, lean);
    // Every partition has both, attached.
    let unindexed = db
        .query_one(
            "SELECT count(*) FROM pg_inherits p
             WHERE p.inhparent = 'finished_messages'::regclass
               AND (SELECT count(*) FROM pg_inherits x JOIN pg_index i ON i.indexrelid = x.inhrelid
                    WHERE x.inhparent IN ('finished_messages_unsent'::regclass,
                                          'finished_messages_fingerprint_hash'::regclass)
                      AND i.indrelid = p.inhrelid) <> 2",
            &[],
        )
        .await
        .expect("partitions")
        .get::<_, i64>(0);
    assert_eq!(unindexed, 0);
    assert_eq!(answers().await, expected);
    assert!(
        provider_index_valid().await,
        "built on every events partition"
    );
    assert_eq!(
        s.find_by_provider_id("mail", "SM0001").await.expect("find"),
        Some(claimed[0].id)
    );
    // A day made after the change gets the lean indexes with it.
    s.expire_finished(t0() + chrono::Duration::days(30), 100)
        .await
        .expect("days made ahead");
    assert_eq!(indexes().await, lean);
}
