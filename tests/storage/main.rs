//! The storage conformance suite: every test here runs against both
//! backends (a fresh SQLite file and a fresh PostgreSQL schema each), so
//! the two keep one meaning.

#[path = "../common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{Email, Fixture, emails, secs, t0};
use futures::future::join_all;
use herald::domain::Event;
use herald::domain::{Channel, ClaimToken, EventKind, Message, Stamp, Status};
use herald::storage::{
    Alert, AlertNotice, AlertState, GroupCommit, MemberFailed, MessageFilter, MinuteMetrics,
    NewAlert, NodeInfo, Outcome, OutcomeKind, PageRequest, Retention, RetentionOverride,
    RetentionRule, Storage, StorageError,
};
use herald::time::{Clock, ManualClock};
use herald::transports::RecipientGone;

const LEASE: Duration = Duration::from_secs(30);

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let fixture = crate::common::Fixture::sqlite().await;
                    super::$name(&fixture).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let fixture = crate::common::Fixture::postgres().await;
                    super::$name(&fixture).await;
                }
            )*
        }
    };
}

// After the macro, which its cases use too.
mod feedback;
mod finished;
mod migrations;
mod replay_jobs;
mod search;

conformance!(
    a_write_probe_commits_and_leaves_nothing_behind,
    enqueue_stores_the_message_with_a_queued_event,
    claims_go_highest_priority_first_then_oldest,
    waiting_raises_priority_so_low_priority_is_not_starved,
    scheduled_messages_are_not_claimed_early,
    claims_take_only_the_named_transport,
    an_idempotency_key_returns_the_existing_message,
    a_batch_is_one_transaction,
    a_retry_keeps_the_same_id_and_adds_events,
    a_message_is_dead_after_max_attempts,
    a_permanent_failure_dead_letters_at_once,
    a_provider_id_is_kept_and_found_and_a_gone_recipient_named,
    an_expired_lease_is_recovered_and_claimed_again,
    an_expired_lease_on_the_final_attempt_dead_letters,
    an_outcome_under_a_stale_claim_token_is_refused,
    a_claim_writes_no_event,
    the_event_that_ends_an_attempt_carries_its_start,
    members_passed_over_in_an_attempt_leave_events_before_it,
    renewed_leases_are_not_recovered,
    a_released_claim_costs_no_attempt,
    cancel_applies_to_queued_messages_only,
    replay_requeues_a_dead_message_under_the_same_id,
    bulk_replay_takes_dead_letters_of_one_transport,
    retention_removes_exactly_what_has_expired,
    pause_state_persists_across_a_restart,
    listing_pages_without_gaps_or_duplicates,
    listing_filters_and_fingerprint_lookup,
    queue_depth_counts_by_transport_and_priority,
    migrations_can_run_twice,
    concurrent_claimers_claim_each_message_exactly_once,
    outcomes_are_rolled_up_per_minute_and_transport,
    one_node_at_a_time_holds_a_transport,
    a_dead_holder_loses_its_transport_before_its_lease_ends,
    claims_of_a_dead_node_are_recovered_before_their_lease_ends,
    a_restarted_node_takes_over_its_own_claims_at_once,
    old_rollups_compact_to_hours_and_are_purged,
    sealed_hours_answer_as_the_minutes_they_sum,
    rollups_split_by_channel_and_category_with_flow_timings,
    one_alert_is_active_per_rule_and_transport,
    concurrent_evaluations_open_one_alert,
    the_cooldown_is_decided_with_the_opening,
    notices_await_until_recorded,
    alert_history_survives_a_restart,
);

/// Group commit of single enqueues, on both backends. These run on one
/// thread on purpose: `join_all` then hands every request to the
/// [`GroupCommit`] before its writer first runs, so on a backend that
/// groups, the requests form one group, every time.
macro_rules! group_commit {
    ($($name:ident),* $(,)?) => {
        mod group_commit_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let fixture = crate::common::Fixture::sqlite().await;
                    super::$name(&fixture).await;
                }
            )*
        }
        mod group_commit_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let fixture = crate::common::Fixture::postgres().await;
                    super::$name(&fixture).await;
                }
            )*
        }
    };
}

group_commit!(
    concurrent_enqueues_each_get_their_own_result,
    concurrent_enqueues_with_one_new_key_make_one_message,
    a_message_the_database_refuses_fails_only_its_own_enqueue,
);

async fn concurrent_enqueues_each_get_their_own_result(f: &Fixture) {
    let group = GroupCommit::new(f.storage.clone());
    let messages = emails(20, t0());
    let at = |i: usize| t0() + chrono::Duration::milliseconds(i as i64);
    let results = join_all(
        messages
            .iter()
            .enumerate()
            .map(|(i, m)| group.enqueue(m.clone(), at(i))),
    )
    .await;
    for (i, (message, result)) in messages.iter().zip(results).enumerate() {
        let result = result.expect("enqueue");
        assert!(result.created);
        assert_eq!((result.id, result.status), (message.id, Status::Queued));
        assert_eq!(result.fingerprint, message.fingerprint);
        let stored = f
            .storage
            .get_message(message.id)
            .await
            .expect("get")
            .expect("stored");
        // One group, stored at its newest request's time: the requests
        // were all queued before the first writer ran.
        assert_eq!(stored.message.created_at, at(19), "message {i}");
        assert_eq!(
            stored.events.iter().map(|e| e.kind).collect::<Vec<_>>(),
            vec![EventKind::Queued]
        );
    }
}

async fn concurrent_enqueues_with_one_new_key_make_one_message(f: &Fixture) {
    let group = GroupCommit::new(f.storage.clone());
    let keyed = |subject: &str| {
        Email {
            subject: subject.into(),
            idempotency_key: Some("order-7".into()),
            ..Email::default()
        }
        .build(t0())
    };
    let messages: Vec<_> = (0..10).map(|i| keyed(&format!("try {i}"))).collect();
    let results: Vec<_> = join_all(messages.iter().map(|m| group.enqueue(m.clone(), t0())))
        .await
        .into_iter()
        .map(|r| r.expect("enqueue"))
        .collect();
    let created: Vec<_> = results.iter().filter(|r| r.created).collect();
    assert_eq!(created.len(), 1, "one request creates the message");
    let id = created[0].id;
    assert!(results.iter().all(|r| r.id == id), "the others answer it");
    let stored = f
        .storage
        .list_messages(
            &MessageFilter::default(),
            PageRequest {
                after: None,
                limit: 100,
            },
        )
        .await
        .expect("list");
    assert_eq!(stored.items.len(), 1);

    let again = group
        .enqueue(keyed("later"), t0() + secs(1))
        .await
        .expect("enqueue again");
    assert!(!again.created);
    assert_eq!(again.id, id);
}

async fn a_message_the_database_refuses_fails_only_its_own_enqueue(f: &Fixture) {
    let group = GroupCommit::new(f.storage.clone());
    let mut messages = emails(3, t0());
    // A second message under a stamp already taken: the primary key
    // refuses it, as it would any message the database cannot store.
    messages.insert(1, messages[0].clone());
    let results = join_all(messages.iter().map(|m| group.enqueue(m.clone(), t0()))).await;
    let refused = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(
        refused, 1,
        "only one of the two with one stamp: {results:?}"
    );
    for (message, result) in messages.iter().zip(&results).skip(2) {
        assert_eq!(result.as_ref().expect("stored").id, message.id);
    }
    for message in &messages {
        assert!(
            f.storage
                .get_message(message.id)
                .await
                .expect("get")
                .is_some()
        );
    }
}

async fn claim(storage: &dyn Storage, n: usize, at: chrono::DateTime<chrono::Utc>) -> Vec<Message> {
    storage
        .claim_due("mail", common::NODE, n, LEASE, at)
        .await
        .expect("claim")
}

fn outcome(message: &Message, kind: OutcomeKind) -> Outcome {
    let token = message.claim_token.expect("a claimed message has a token");
    Outcome {
        duration_ms: Some(12),
        ..Outcome::new(message, token, kind)
    }
}

fn failed(message: &Message, retry_at: Option<chrono::DateTime<chrono::Utc>>) -> Outcome {
    outcome(
        message,
        OutcomeKind::Failed {
            error: "451 try later".into(),
            retry_at,
        },
    )
}

async fn events_of(storage: &dyn Storage, id: Stamp) -> Vec<EventKind> {
    let found = storage.get_message(id).await.expect("get").expect("exists");
    found.events.iter().map(|e| e.kind).collect()
}

async fn stored_events(storage: &dyn Storage, id: Stamp) -> Vec<Event> {
    storage
        .get_message(id)
        .await
        .expect("get")
        .expect("exists")
        .events
}

async fn status_of(storage: &dyn Storage, id: Stamp) -> Status {
    storage
        .get_message(id)
        .await
        .expect("get")
        .expect("exists")
        .message
        .status
}

async fn enqueue_stores_the_message_with_a_queued_event(f: &Fixture) {
    let s = f.storage.as_ref();
    let message = Email::default().build(t0());
    let result = s.enqueue(message.clone(), t0()).await.expect("enqueue");
    assert!(result.created);
    assert_eq!((result.id, result.status), (message.id, Status::Queued));
    assert_eq!(result.fingerprint, message.fingerprint);

    let stored = s
        .get_message(message.id)
        .await
        .expect("get")
        .expect("exists");
    let m = &stored.message;
    assert_eq!(m.id, message.id);
    assert_eq!(m.transport, "mail");
    assert_eq!(m.status, Status::Queued);
    let sent: serde_json::Value = serde_json::from_str(&message.payload).expect("payload JSON");
    assert_eq!(m.payload, sent);
    assert_eq!(m.metadata, serde_json::json!({}));
    assert_eq!((m.attempts, m.max_attempts), (0, 3));
    assert_eq!((m.created_at, m.available_at), (t0(), t0()));
    assert_eq!(stored.events.len(), 1);
    assert_eq!(stored.events[0].kind, EventKind::Queued);
    assert_eq!(stored.events[0].at, t0());
    assert!(
        s.get_message(Stamp::generate())
            .await
            .expect("get")
            .is_none()
    );
}

async fn claims_go_highest_priority_first_then_oldest(f: &Fixture) {
    let s = f.storage.as_ref();
    let low = Email {
        priority: 1,
        ..Email::default()
    }
    .build(t0());
    let high_late = Email {
        priority: 9,
        ..Email::default()
    }
    .build(t0() + secs(2));
    let high_early = Email {
        priority: 9,
        ..Email::default()
    }
    .build(t0() + secs(1));
    let mid = Email {
        priority: 5,
        ..Email::default()
    }
    .build(t0());
    for m in [&low, &high_late, &high_early, &mid] {
        s.enqueue(m.clone(), t0()).await.expect("enqueue");
    }
    let order: Vec<Stamp> = claim(s, 10, t0() + secs(3))
        .await
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(order, vec![high_early.id, high_late.id, mid.id, low.id]);
}

async fn waiting_raises_priority_so_low_priority_is_not_starved(f: &Fixture) {
    let s = f.storage.as_ref();
    // Priority 0 that has waited 10 minutes outranks priority 5 that is
    // new: aging adds one level per minute (the default).
    let old_low = Email {
        priority: 0,
        ..Email::default()
    }
    .build(t0());
    let new_mid = Email {
        priority: 5,
        ..Email::default()
    }
    .build(t0() + secs(600));
    s.enqueue_many(vec![new_mid.clone(), old_low.clone()], t0())
        .await
        .expect("enqueue");
    let order: Vec<Stamp> = claim(s, 10, t0() + secs(600))
        .await
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(order, vec![old_low.id, new_mid.id]);
}

async fn scheduled_messages_are_not_claimed_early(f: &Fixture) {
    let s = f.storage.as_ref();
    let later = Email {
        send_at: Some(t0() + secs(3600)),
        priority: 9,
        ..Email::default()
    }
    .build(t0());
    s.enqueue(later.clone(), t0()).await.expect("enqueue");
    assert!(claim(s, 10, t0() + secs(3599)).await.is_empty());
    let claimed = claim(s, 10, t0() + secs(3600)).await;
    assert_eq!(
        claimed.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![later.id]
    );
}

async fn claims_take_only_the_named_transport(f: &Fixture) {
    let s = f.storage.as_ref();
    let other = Email {
        transport: "other",
        ..Email::default()
    }
    .build(t0());
    s.enqueue(other.clone(), t0()).await.expect("enqueue");
    assert!(claim(s, 10, t0()).await.is_empty());
    let claimed = s
        .claim_due("other", common::NODE, 10, LEASE, t0())
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].status, Status::Processing);
    assert_eq!(claimed[0].attempts, 1);
    assert_eq!(claimed[0].lease_until, Some(t0() + secs(30)));
}

async fn an_idempotency_key_returns_the_existing_message(f: &Fixture) {
    let s = f.storage.as_ref();
    let key = Some("order-42-receipt".to_string());
    let first = Email {
        idempotency_key: key.clone(),
        ..Email::default()
    }
    .build(t0());
    let again = Email {
        idempotency_key: key.clone(),
        ..Email::default()
    }
    .build(t0());
    let created = s.enqueue(first.clone(), t0()).await.expect("enqueue");
    let repeated = s.enqueue(again.clone(), t0()).await.expect("enqueue again");
    assert!(created.created && !repeated.created);
    assert_eq!(repeated.id, first.id);
    assert!(
        s.get_message(again.id).await.expect("get").is_none(),
        "no second row"
    );

    // Within one batch too: the first holder of a key wins.
    let k2 = Some("batch-key".to_string());
    let a = Email {
        idempotency_key: k2.clone(),
        ..Email::default()
    }
    .build(t0());
    let b = Email {
        idempotency_key: k2,
        ..Email::default()
    }
    .build(t0());
    let c = Email {
        idempotency_key: key,
        ..Email::default()
    }
    .build(t0());
    let results = s
        .enqueue_many(vec![a.clone(), b, c], t0())
        .await
        .expect("batch");
    assert_eq!(
        results
            .iter()
            .map(|r| (r.id, r.created))
            .collect::<Vec<_>>(),
        vec![(a.id, true), (a.id, false), (first.id, false)]
    );
    let all = s
        .list_messages(
            &MessageFilter::default(),
            PageRequest {
                after: None,
                limit: 100,
            },
        )
        .await
        .expect("list");
    assert_eq!(all.items.len(), 2);
}

async fn a_batch_is_one_transaction(f: &Fixture) {
    let s = f.storage.as_ref();
    let mut batch = emails(3, t0());
    // The same id twice violates the primary key: the whole batch fails.
    batch.push(batch[0].clone());
    assert!(s.enqueue_many(batch.clone(), t0()).await.is_err());
    for m in &batch {
        assert!(
            s.get_message(m.id).await.expect("get").is_none(),
            "nothing of a failed batch is stored"
        );
    }
    let ok = s
        .enqueue_many(emails(100, t0()), t0())
        .await
        .expect("batch of 100");
    assert_eq!(ok.len(), 100);
    assert!(ok.iter().all(|r| r.created && r.status == Status::Queued));
}

async fn a_retry_keeps_the_same_id_and_adds_events(f: &Fixture) {
    let s = f.storage.as_ref();
    let message = Email::default().build(t0());
    s.enqueue(message.clone(), t0()).await.expect("enqueue");

    let first = claim(s, 1, t0()).await.remove(0);
    let retry_at = t0() + secs(5);
    let recorded = s
        .record_outcomes(vec![failed(&first, Some(retry_at))], t0() + secs(1))
        .await
        .expect("record");
    assert_eq!(recorded.applied, vec![(message.id, Status::Queued)]);

    assert!(
        claim(s, 1, t0() + secs(4)).await.is_empty(),
        "backoff is respected"
    );
    let second = claim(s, 1, retry_at).await.remove(0);
    assert_eq!((second.id, second.attempts), (message.id, 2));
    assert_ne!(
        second.claim_token, first.claim_token,
        "each claim has its own token"
    );
    s.record_outcomes(
        vec![outcome(&second, OutcomeKind::Sent)],
        retry_at + secs(1),
    )
    .await
    .expect("record");

    let stored = s
        .get_message(message.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(stored.message.status, Status::Sent);
    assert_eq!(stored.message.sent_at, Some(retry_at + secs(1)));
    assert_eq!(stored.message.last_error, None);
    assert_eq!(stored.message.attempts, 2);
    let kinds: Vec<EventKind> = stored.events.iter().map(|e| e.kind).collect();
    use EventKind::*;
    assert_eq!(kinds, vec![Queued, AttemptFailed, RetryScheduled, Sent]);
    let attempts: Vec<u32> = stored.events.iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, vec![0, 1, 1, 2]);
    assert_eq!(stored.events[1].error.as_deref(), Some("451 try later"));
    assert_eq!(stored.events[3].duration_ms, Some(12));
    let all = s
        .list_messages(
            &MessageFilter::default(),
            PageRequest {
                after: None,
                limit: 10,
            },
        )
        .await
        .expect("list");
    assert_eq!(all.items.len(), 1, "a retry is never a new message");
}

async fn a_message_is_dead_after_max_attempts(f: &Fixture) {
    let s = f.storage.as_ref();
    let message = Email::default().build(t0());
    s.enqueue(message.clone(), t0()).await.expect("enqueue");
    let mut now = t0();
    for attempt in 1..=3 {
        let claimed = claim(s, 1, now).await.remove(0);
        assert_eq!(claimed.attempts, attempt);
        now += secs(1);
        let recorded = s
            .record_outcomes(vec![failed(&claimed, Some(now))], now)
            .await
            .expect("record");
        let expected = if attempt < 3 {
            Status::Queued
        } else {
            Status::Dead
        };
        assert_eq!(recorded.applied, vec![(message.id, expected)]);
    }
    assert!(claim(s, 1, now + secs(60)).await.is_empty());
    let stored = s
        .get_message(message.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(stored.message.status, Status::Dead);
    assert_eq!(stored.message.last_error.as_deref(), Some("451 try later"));
    let last = stored.events.last().expect("events");
    assert_eq!(last.kind, EventKind::DeadLettered);
    assert_eq!(
        last.detail,
        Some(serde_json::json!({ "reason": "max_attempts" }))
    );
}

async fn a_permanent_failure_dead_letters_at_once(f: &Fixture) {
    let s = f.storage.as_ref();
    let message = Email::default().build(t0());
    s.enqueue(message.clone(), t0()).await.expect("enqueue");
    let claimed = claim(s, 1, t0()).await.remove(0);
    let recorded = s
        .record_outcomes(vec![failed(&claimed, None)], t0())
        .await
        .expect("record");
    assert_eq!(recorded.applied, vec![(message.id, Status::Dead)]);
    let kinds = events_of(s, message.id).await;
    assert_eq!(
        kinds,
        [
            EventKind::Queued,
            EventKind::AttemptFailed,
            EventKind::DeadLettered
        ]
    );
    let dead = s
        .get_message(message.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        dead.events.last().and_then(|e| e.detail.clone()),
        Some(serde_json::json!({ "reason": "permanent" }))
    );
}

async fn a_provider_id_is_kept_and_found_and_a_gone_recipient_named(f: &Fixture) {
    let s = f.storage.as_ref();
    let batch = emails(3, t0());
    s.enqueue_many(batch.clone(), t0()).await.expect("enqueue");
    let claimed = claim(s, 3, t0()).await;
    let sent = |m: &Message, id: Option<&str>| Outcome {
        provider_message_id: id.map(str::to_owned),
        ..outcome(m, OutcomeKind::Sent)
    };
    let gone = Outcome {
        recipient_gone: Some(RecipientGone::Unsubscribed),
        ..failed(&claimed[2], None)
    };
    s.record_outcomes(
        vec![
            sent(&claimed[0], Some("SM0001")),
            sent(&claimed[1], None),
            gone,
        ],
        t0() + secs(1),
    )
    .await
    .expect("record");
    let last = |id| async move { stored_events(s, id).await.pop().expect("an event") };
    let first = last(claimed[0].id).await;
    assert_eq!(first.kind, EventKind::Sent);
    assert_eq!(
        first.detail,
        Some(serde_json::json!({ "provider_message_id": "SM0001" }))
    );
    assert_eq!(last(claimed[1].id).await.detail, None);
    let dead = last(claimed[2].id).await;
    assert_eq!(dead.kind, EventKind::DeadLettered);
    assert_eq!(
        dead.detail,
        Some(serde_json::json!({ "reason": "recipient_unsubscribed" }))
    );
    assert_eq!(
        s.find_by_provider_id("mail", "SM0001").await.expect("find"),
        Some(claimed[0].id)
    );
    // The id is the provider's, so it is looked up per transport.
    assert_eq!(
        s.find_by_provider_id("other", "SM0001")
            .await
            .expect("find"),
        None
    );
    assert_eq!(
        s.find_by_provider_id("mail", "SM0002").await.expect("find"),
        None
    );
}

async fn an_expired_lease_is_recovered_and_claimed_again(f: &Fixture) {
    let s = f.storage.as_ref();
    let message = Email::default().build(t0());
    s.enqueue(message.clone(), t0()).await.expect("enqueue");
    claim(s, 1, t0()).await;
    assert!(
        s.recover_expired(t0() + secs(29), common::no_node_dead(), 100)
            .await
            .expect("recover")
            .is_empty(),
        "lease still held"
    );
    assert!(
        claim(s, 1, t0() + secs(29)).await.is_empty(),
        "a held message is not claimed twice"
    );

    let recovered = s
        .recover_expired(t0() + secs(31), common::no_node_dead(), 100)
        .await
        .expect("recover");
    assert_eq!(recovered, vec![message.id]);
    assert_eq!(status_of(s, message.id).await, Status::Queued);
    let again = claim(s, 1, t0() + secs(31)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
    let kinds = events_of(s, message.id).await;
    use EventKind::*;
    assert_eq!(
        kinds,
        vec![Queued, LeaseExpired],
        "the new claim writes none"
    );
}

async fn an_expired_lease_on_the_final_attempt_dead_letters(f: &Fixture) {
    let s = f.storage.as_ref();
    let message = Email::default().build(t0());
    s.enqueue(message.clone(), t0()).await.expect("enqueue");
    let mut now = t0();
    for _ in 0..3 {
        claim(s, 1, now).await;
        now += secs(31);
        assert_eq!(
            s.recover_expired(now, common::no_node_dead(), 100)
                .await
                .expect("recover"),
            vec![message.id]
        );
    }
    let stored = s
        .get_message(message.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        stored.message.status,
        Status::Dead,
        "a message that keeps crashing its worker stops"
    );
    let kinds: Vec<EventKind> = stored.events.iter().rev().take(2).map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![EventKind::DeadLettered, EventKind::LeaseExpired]
    );
}

async fn an_outcome_under_a_stale_claim_token_is_refused(f: &Fixture) {
    let s = f.storage.as_ref();
    let message = Email::default().build(t0());
    s.enqueue(message.clone(), t0()).await.expect("enqueue");
    let lost = claim(s, 1, t0()).await.remove(0);
    s.recover_expired(t0() + secs(31), common::no_node_dead(), 100)
        .await
        .expect("recover");
    let current = claim(s, 1, t0() + secs(31)).await.remove(0);

    let late = s
        .record_outcomes(vec![outcome(&lost, OutcomeKind::Sent)], t0() + secs(32))
        .await
        .expect("record");
    assert_eq!(late.stale, vec![message.id]);
    assert!(late.applied.is_empty());
    assert_eq!(
        status_of(s, message.id).await,
        Status::Processing,
        "the stale worker changed nothing"
    );

    let forged = Outcome {
        claim_token: ClaimToken::generate(),
        ..outcome(&current, OutcomeKind::Sent)
    };
    assert_eq!(
        s.record_outcomes(vec![forged], t0() + secs(32))
            .await
            .expect("record")
            .stale,
        vec![message.id]
    );

    let ok = s
        .record_outcomes(vec![outcome(&current, OutcomeKind::Sent)], t0() + secs(33))
        .await
        .expect("record");
    assert_eq!(ok.applied, vec![(message.id, Status::Sent)]);
    let twice = s
        .record_outcomes(vec![outcome(&current, OutcomeKind::Sent)], t0() + secs(34))
        .await
        .expect("record");
    assert_eq!(twice.stale, vec![message.id], "an outcome applies once");
}

async fn a_claim_writes_no_event(f: &Fixture) {
    let s = f.storage.as_ref();
    let batch = emails(3, t0());
    s.enqueue_many(batch.clone(), t0()).await.expect("enqueue");
    let claimed = claim(s, 3, t0() + secs(1)).await;
    assert_eq!(claimed.len(), 3);
    for message in &claimed {
        // The claim time the attempt's end will carry.
        assert_eq!(message.updated_at, t0() + secs(1));
        assert_eq!(events_of(s, message.id).await, [EventKind::Queued]);
    }
}

/// Each way an attempt ends writes one event carrying the claim time as
/// `started_at`; its follow-on events and the claim itself carry none.
async fn the_event_that_ends_an_attempt_carries_its_start(f: &Fixture) {
    let s = f.storage.as_ref();
    let clock = ManualClock::new(t0());
    let batch = emails(5, clock.now());
    s.enqueue_many(batch.clone(), clock.now())
        .await
        .expect("enqueue");
    // Milliseconds too: both backends keep the instant exactly.
    clock.advance(chrono::Duration::milliseconds(1_234));
    let claimed_at = clock.now();
    let claimed = claim(s, 5, claimed_at).await;
    let by_id = |i: usize| {
        claimed
            .iter()
            .find(|m| m.id == batch[i].id)
            .expect("claimed")
    };
    let (sent, retried, permanent, deferred, expired) =
        (by_id(0), by_id(1), by_id(2), by_id(3), by_id(4));

    // A renewed lease keeps the attempt's start.
    clock.advance(secs(10));
    let renewed: Vec<(Stamp, ClaimToken)> = [sent, retried, permanent, deferred]
        .iter()
        .map(|m| (m.id, m.claim_token.expect("token")))
        .collect();
    assert_eq!(
        s.renew_leases(&renewed, clock.now() + LEASE)
            .await
            .expect("renew"),
        4
    );
    clock.advance(secs(1));
    let ended_at = clock.now();
    let retry_at = ended_at + secs(5);
    let outcomes = vec![
        Outcome {
            transport: "backup".into(),
            passed_over: vec![MemberFailed {
                group: "mail".into(),
                member: "primary".into(),
                error: "timed out: slow".into(),
                duration_ms: Some(7),
            }],
            ..outcome(sent, OutcomeKind::Sent)
        },
        failed(retried, Some(retry_at)),
        failed(permanent, None),
        outcome(
            deferred,
            OutcomeKind::Released {
                reason: "paused".into(),
            },
        ),
    ];
    s.record_outcomes(outcomes, ended_at).await.expect("record");
    clock.set(claimed_at + LEASE);
    assert_eq!(
        s.recover_expired(clock.now(), common::no_node_dead(), 100)
            .await
            .expect("recover"),
        vec![expired.id]
    );

    type Seen = (
        EventKind,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<u64>,
    );
    let seen = |events: Vec<Event>| -> Vec<Seen> {
        events
            .into_iter()
            .map(|e| (e.kind, e.started_at, e.duration_ms))
            .collect()
    };
    let start = Some(claimed_at);
    use EventKind::*;
    assert_eq!(
        seen(stored_events(s, sent.id).await),
        [
            (Queued, None, None),
            (AttemptFailed, start, Some(7)),
            (Sent, start, Some(12)),
        ]
    );
    assert_eq!(
        seen(stored_events(s, retried.id).await),
        [
            (Queued, None, None),
            (AttemptFailed, start, Some(12)),
            (RetryScheduled, None, Some(12)),
        ]
    );
    assert_eq!(
        seen(stored_events(s, permanent.id).await),
        [
            (Queued, None, None),
            (AttemptFailed, start, Some(12)),
            (DeadLettered, None, Some(12)),
        ]
    );
    assert_eq!(
        seen(stored_events(s, deferred.id).await),
        [(Queued, None, None), (Deferred, start, None)]
    );
    assert_eq!(
        seen(stored_events(s, expired.id).await),
        [(Queued, None, None), (LeaseExpired, start, None)]
    );

    // The next attempt carries its own claim's time.
    clock.set(retry_at);
    let second = claim(s, 5, clock.now()).await;
    let again = second
        .iter()
        .find(|m| m.id == retried.id)
        .expect("claimed again");
    clock.advance(secs(1));
    s.record_outcomes(vec![outcome(again, OutcomeKind::Sent)], clock.now())
        .await
        .expect("record");
    let last = stored_events(s, retried.id).await.pop().expect("events");
    assert_eq!(
        (last.kind, last.attempt, last.started_at, last.at),
        (Sent, 2, Some(retry_at), clock.now())
    );
}

async fn members_passed_over_in_an_attempt_leave_events_before_it(f: &Fixture) {
    let s = f.storage.as_ref();
    let batch = emails(2, t0());
    let (id, lost_id) = (batch[0].id, batch[1].id);
    s.enqueue_many(batch, t0()).await.expect("enqueue");
    let claimed = claim(s, 2, t0()).await;
    let (current, lost) = if claimed[0].id == id {
        (&claimed[0], &claimed[1])
    } else {
        (&claimed[1], &claimed[0])
    };
    let failed = |member: &str, error: &str| MemberFailed {
        group: "mail".into(),
        member: member.into(),
        error: error.into(),
        duration_ms: Some(7),
    };
    let passed_over = vec![
        failed("primary", "temporary failure (503): down"),
        failed("secondary", "timed out: slow"),
    ];
    let sent = Outcome {
        transport: "backup".into(),
        passed_over: passed_over.clone(),
        ..outcome(current, OutcomeKind::Sent)
    };
    let stale = Outcome {
        claim_token: ClaimToken::generate(),
        passed_over,
        ..outcome(lost, OutcomeKind::Sent)
    };
    let recorded = s
        .record_outcomes(vec![stale, sent], t0() + secs(1))
        .await
        .expect("record");
    assert_eq!(recorded.applied, vec![(id, Status::Sent)]);
    assert_eq!(recorded.stale, vec![lost_id]);

    let stored = s.get_message(id).await.expect("get").expect("exists");
    let events: Vec<(EventKind, Option<&str>, Option<&str>)> = stored
        .events
        .iter()
        .map(|e| (e.kind, e.transport.as_deref(), e.error.as_deref()))
        .collect();
    assert_eq!(
        events[1..],
        [
            (
                EventKind::AttemptFailed,
                Some("primary"),
                Some("temporary failure (503): down")
            ),
            (
                EventKind::AttemptFailed,
                Some("secondary"),
                Some("timed out: slow")
            ),
            (EventKind::Sent, Some("backup"), None),
        ]
    );
    let first = &stored.events[1];
    assert_eq!(
        first.detail,
        Some(serde_json::json!({"group": "mail", "member": "primary"}))
    );
    assert_eq!((first.attempt, first.duration_ms), (1, Some(7)));
    assert_eq!(
        events_of(s, lost_id).await,
        [EventKind::Queued],
        "a stale claim's members leave nothing"
    );
    // The rollups count the attempt once, under the member that ended it.
    let rollups = s
        .minute_metrics(t0() - secs(60), t0() + secs(60))
        .await
        .expect("rollups");
    let counted: Vec<(&str, u64, u64)> = rollups
        .iter()
        .map(|m| (m.transport.as_str(), m.sent, m.failed))
        .collect();
    assert_eq!(counted, [("backup", 1, 0)]);
}

async fn renewed_leases_are_not_recovered(f: &Fixture) {
    let s = f.storage.as_ref();
    let batch = emails(2, t0());
    s.enqueue_many(batch, t0()).await.expect("enqueue");
    let claimed = claim(s, 2, t0()).await;
    let held: Vec<(Stamp, ClaimToken)> = claimed
        .iter()
        .map(|m| (m.id, m.claim_token.expect("token")))
        .collect();
    let stale = (claimed[1].id, ClaimToken::generate());
    let renewed = s
        .renew_leases(&[held[0], stale], t0() + secs(90))
        .await
        .expect("renew");
    assert_eq!(renewed, 1, "only the current token renews");
    let recovered = s
        .recover_expired(t0() + secs(60), common::no_node_dead(), 100)
        .await
        .expect("recover");
    assert_eq!(recovered, vec![claimed[1].id]);
}

async fn a_released_claim_costs_no_attempt(f: &Fixture) {
    let s = f.storage.as_ref();
    let message = Email::default().build(t0());
    s.enqueue(message.clone(), t0()).await.expect("enqueue");
    let claimed = claim(s, 1, t0()).await.remove(0);
    let released = outcome(
        &claimed,
        OutcomeKind::Released {
            reason: "shutdown".into(),
        },
    );
    let recorded = s
        .record_outcomes(vec![released], t0() + secs(1))
        .await
        .expect("record");
    assert_eq!(recorded.applied, vec![(message.id, Status::Queued)]);
    let stored = s
        .get_message(message.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(stored.message.attempts, 0);
    let deferred = stored.events.last().expect("events");
    assert_eq!(deferred.kind, EventKind::Deferred);
    assert_eq!(
        deferred.detail,
        Some(serde_json::json!({ "reason": "shutdown" }))
    );
    assert_eq!(claim(s, 1, t0() + secs(1)).await[0].attempts, 1);
}

async fn cancel_applies_to_queued_messages_only(f: &Fixture) {
    let s = f.storage.as_ref();
    let batch = emails(2, t0());
    s.enqueue_many(batch.clone(), t0()).await.expect("enqueue");
    let cancelled = s.cancel(batch[0].id, t0() + secs(1)).await.expect("cancel");
    assert_eq!(cancelled.status, Status::Cancelled);
    assert_eq!(
        events_of(s, batch[0].id).await.last(),
        Some(&EventKind::Cancelled)
    );

    let processing = claim(s, 10, t0() + secs(1)).await;
    assert_eq!(
        processing.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![batch[1].id],
        "a cancelled message is never claimed"
    );
    match s.cancel(batch[1].id, t0() + secs(2)).await {
        Err(StorageError::Conflict {
            status: Status::Processing,
            ..
        }) => {}
        other => panic!("cancelling a message in delivery must conflict, got {other:?}"),
    }
    assert!(matches!(
        s.cancel(Stamp::generate(), t0()).await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        s.cancel(batch[0].id, t0()).await,
        Err(StorageError::Conflict { .. })
    ));
    // The one cancellation is counted in its minute's rollup, once.
    let rows = s
        .minute_metrics(t0(), t0() + secs(60))
        .await
        .expect("rollups");
    let cancelled: Vec<(&str, &str, u64)> = rows
        .iter()
        .map(|r| (r.transport.as_str(), r.channel.as_str(), r.cancelled))
        .collect();
    assert_eq!(cancelled, [("mail", "email", 1)]);
}

async fn replay_requeues_a_dead_message_under_the_same_id(f: &Fixture) {
    let s = f.storage.as_ref();
    let message = Email::default().build(t0());
    s.enqueue(message.clone(), t0()).await.expect("enqueue");
    assert!(matches!(
        s.replay(message.id, t0()).await,
        Err(StorageError::Conflict {
            status: Status::Queued,
            ..
        })
    ));
    let claimed = claim(s, 1, t0()).await.remove(0);
    s.record_outcomes(vec![failed(&claimed, None)], t0())
        .await
        .expect("record");

    let replayed = s.replay(message.id, t0() + secs(10)).await.expect("replay");
    assert_eq!(
        (replayed.id, replayed.status, replayed.attempts),
        (message.id, Status::Queued, 0)
    );
    let again = claim(s, 1, t0() + secs(10)).await;
    assert_eq!(again[0].id, message.id);
    let kinds = events_of(s, message.id).await;
    assert_eq!(
        kinds.last(),
        Some(&EventKind::Replayed),
        "the claim after it writes none"
    );
    assert!(matches!(
        s.replay(Stamp::generate(), t0()).await,
        Err(StorageError::NotFound(_))
    ));
}

async fn bulk_replay_takes_dead_letters_of_one_transport(f: &Fixture) {
    let s = f.storage.as_ref();
    let mail = emails(3, t0());
    let other = Email {
        transport: "other",
        ..Email::default()
    }
    .build(t0());
    s.enqueue_many(mail.clone(), t0()).await.expect("enqueue");
    s.enqueue(other.clone(), t0()).await.expect("enqueue");
    for transport in ["mail", "other"] {
        let claimed = s
            .claim_due(transport, common::NODE, 10, LEASE, t0())
            .await
            .expect("claim");
        let outcomes = claimed.iter().map(|m| failed(m, None)).collect();
        s.record_outcomes(outcomes, t0()).await.expect("record");
    }
    let of_mail = MessageFilter {
        transport: Some("mail".into()),
        ..MessageFilter::default()
    };
    let replayed = s
        .replay_dead(&of_mail, 2, t0() + secs(1))
        .await
        .expect("replay");
    assert_eq!(replayed.len(), 2);
    let rest = s
        .replay_dead(&of_mail, 100, t0() + secs(1))
        .await
        .expect("replay");
    assert_eq!(rest.len(), 1);
    let ids: HashSet<Stamp> = replayed.iter().chain(&rest).copied().collect();
    assert_eq!(ids, mail.iter().map(|m| m.id).collect());
    assert_eq!(status_of(s, other.id).await, Status::Dead);
    assert_eq!(
        s.replay_dead(&MessageFilter::default(), 100, t0())
            .await
            .expect("replay"),
        vec![other.id]
    );
}

async fn retention_removes_exactly_what_has_expired(f: &Fixture) {
    let hour = Duration::from_secs(3600);
    let day = Duration::from_secs(86_400);
    let retention = Retention {
        default: RetentionRule {
            sent: Some(30 * day),
            dead: Some(hour),
            cancelled: None,
            payload_after_sent: None,
        },
        overrides: vec![RetentionOverride {
            transport: None,
            category: Some("otp".into()),
            rule: RetentionRule {
                sent: Some(day),
                dead: Some(hour),
                cancelled: None,
                payload_after_sent: Some(hour),
            },
        }],
    };
    let s = herald::storage::open(&herald::storage::StorageOptions {
        retention,
        ..f.options.clone()
    })
    .await
    .expect("open with retention");
    let s = s.as_ref();
    let mut batch = emails(5, t0());
    // Ids are minted at enqueue: retention finds expired messages below
    // the id of their cut-off, so these carry the test clock's time.
    for (i, m) in batch.iter_mut().enumerate() {
        let ms = u64::try_from(t0().timestamp_millis()).expect("after 1970");
        m.id = Stamp(ulid::Ulid::from_parts(ms, i as u128));
    }
    batch[3].category = Some("otp".into());
    batch[4].category = Some("otp".into());
    s.enqueue_many(batch.clone(), t0()).await.expect("enqueue");
    let claimed = claim(s, 5, t0()).await;
    let by_id = |id: Stamp| claimed.iter().find(|m| m.id == id).expect("claimed");
    s.record_outcomes(vec![failed(by_id(batch[0].id), None)], t0())
        .await
        .expect("old dead");
    s.record_outcomes(vec![failed(by_id(batch[1].id), None)], t0() + secs(7200))
        .await
        .expect("new dead");
    let sent = [batch[2].id, batch[3].id];
    s.record_outcomes(
        sent.iter()
            .map(|id| outcome(by_id(*id), OutcomeKind::Sent))
            .collect(),
        t0(),
    )
    .await
    .expect("sent");

    // An hour and a second on: the first dead letter, and the otp
    // message's payload.
    let expired = s
        .expire_finished(t0() + secs(3601), 1000)
        .await
        .expect("expire");
    assert_eq!((expired.deleted, expired.payloads_dropped), (1, 1));
    assert!(s.get_message(batch[0].id).await.expect("get").is_none());
    let otp = s
        .get_message(batch[3].id)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(otp.message.payload, serde_json::Value::Null);
    assert_eq!(otp.message.status, Status::Sent);
    assert!(!otp.events.is_empty(), "its events stay");
    let plain = s
        .get_message(batch[2].id)
        .await
        .expect("get")
        .expect("kept");
    assert_ne!(plain.message.payload, serde_json::Value::Null);
    // Nothing more to do until the next message expires.
    assert_eq!(
        s.expire_finished(t0() + secs(3601), 1000)
            .await
            .expect("expire")
            .total(),
        0
    );

    // A day and two hours on: the second dead letter and the otp
    // message; the message of the default rule stays for 30 days.
    let expired = s
        .expire_finished(t0() + day + secs(7200), 1000)
        .await
        .expect("expire");
    assert_eq!(expired.deleted, 2);
    assert!(s.get_message(batch[1].id).await.expect("get").is_none());
    assert!(s.get_message(batch[3].id).await.expect("get").is_none());
    assert_eq!(status_of(s, batch[2].id).await, Status::Sent);
    assert_eq!(
        f.orphan_events().await,
        0,
        "a deleted message's events go too"
    );
}

async fn a_write_probe_commits_and_leaves_nothing_behind(f: &Fixture) {
    let s = f.storage.as_ref();
    s.set_paused("mail", true, t0()).await.expect("pause");
    s.probe_write()
        .await
        .expect("a healthy store takes a write");
    s.probe_write().await.expect("and another");
    let states = s.transport_states().await.expect("states");
    let names: Vec<&str> = states.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["mail"], "the probe's row is never seen");
    assert!(states[0].paused, "a real transport's row is left alone");
}

async fn pause_state_persists_across_a_restart(f: &Fixture) {
    let s = f.storage.as_ref();
    assert!(s.transport_states().await.expect("states").is_empty());
    s.set_paused("mail", true, t0()).await.expect("pause");
    s.set_paused("other", true, t0()).await.expect("pause");
    s.set_paused("other", false, t0() + secs(1))
        .await
        .expect("resume");
    let reopened = f.reopen().await;
    let states = reopened.transport_states().await.expect("states");
    let summary: Vec<(String, bool)> = states.iter().map(|t| (t.name.clone(), t.paused)).collect();
    assert_eq!(
        summary,
        vec![("mail".into(), true), ("other".into(), false)]
    );
    assert_eq!(states[1].updated_at, t0() + secs(1));
}

async fn listing_pages_without_gaps_or_duplicates(f: &Fixture) {
    let s = f.storage.as_ref();
    let mut all = Vec::new();
    for chunk in 0..5 {
        let batch = emails(5, t0() + secs(chunk));
        all.extend(batch.iter().map(|m| m.id));
        s.enqueue_many(batch, t0()).await.expect("enqueue");
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .list_messages(&MessageFilter::default(), PageRequest { after, limit: 7 })
            .await
            .expect("page");
        assert!(page.items.len() <= 7);
        seen.extend(page.items.iter().map(|m| m.id));
        // A message arriving between pages must not shift later pages.
        s.enqueue(Email::default().build(t0()), t0())
            .await
            .expect("enqueue between pages");
        match page.next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    all.sort();
    all.reverse();
    assert_eq!(seen, all, "newest first, each exactly once");
}

async fn listing_filters_and_fingerprint_lookup(f: &Fixture) {
    let s = f.storage.as_ref();
    let a = Email {
        to: "a@example.com".into(),
        ..Email::default()
    }
    .build(t0());
    let a_again = Email {
        to: "A@Example.com".into(),
        ..Email::default()
    }
    .build(t0());
    let b = Email {
        to: "b@example.com".into(),
        transport: "other",
        ..Email::default()
    }
    .build(t0());
    s.enqueue_many(vec![a.clone(), a_again.clone(), b.clone()], t0())
        .await
        .expect("enqueue");
    assert_eq!(a.fingerprint, a_again.fingerprint);

    let same = s
        .find_by_fingerprint(&a.fingerprint, 10)
        .await
        .expect("lookup");
    assert_eq!(
        same.iter().map(|m| m.id).collect::<HashSet<_>>(),
        HashSet::from([a.id, a_again.id])
    );

    let list = |filter: MessageFilter| async move {
        s.list_messages(
            &filter,
            PageRequest {
                after: None,
                limit: 10,
            },
        )
        .await
        .expect("list")
        .items
    };
    let other = list(MessageFilter {
        transport: Some("other".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(other.iter().map(|m| m.id).collect::<Vec<_>>(), vec![b.id]);
    s.claim_due("other", common::NODE, 1, LEASE, t0())
        .await
        .expect("claim");
    let processing = list(MessageFilter {
        status: Some(Status::Processing),
        ..Default::default()
    })
    .await;
    assert_eq!(
        processing.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![b.id]
    );
    let queued_emails = list(MessageFilter {
        status: Some(Status::Queued),
        channel: Some(herald::domain::Channel::Email),
        ..Default::default()
    })
    .await;
    assert_eq!(queued_emails.len(), 2);
    let none = list(MessageFilter {
        channel: Some(herald::domain::Channel::Sms),
        ..Default::default()
    })
    .await;
    assert!(none.is_empty());
}

async fn queue_depth_counts_by_transport_and_priority(f: &Fixture) {
    let s = f.storage.as_ref();
    let mut batch = Vec::new();
    for priority in [9, 9, 1] {
        batch.push(
            Email {
                priority,
                ..Email::default()
            }
            .build(t0()),
        );
    }
    batch.push(
        Email {
            transport: "other",
            category: Some("receipt"),
            ..Email::default()
        }
        .build(t0() - secs(30)),
    );
    s.enqueue_many(batch, t0()).await.expect("enqueue");
    claim(s, 1, t0()).await; // one priority-9 message goes to processing
    s.enqueue(
        Email {
            transport: "other",
            subject: "Later".into(),
            send_at: Some(t0() + secs(60)),
            ..Email::default()
        }
        .build(t0()),
        t0(),
    )
    .await
    .expect("enqueue a scheduled one");
    let depth: Vec<_> = s
        .queue_depth()
        .await
        .expect("depth")
        .into_iter()
        .map(|d| {
            assert_eq!(d.channel, Channel::Email);
            (
                d.transport,
                d.priority.get(),
                d.category,
                (d.queued, d.processing),
                d.oldest_available,
            )
        })
        .collect();
    assert_eq!(
        depth,
        vec![
            ("mail".into(), 9, "".into(), (1, 1), Some(t0())),
            ("mail".into(), 1, "".into(), (1, 0), Some(t0())),
            ("other".into(), 4, "".into(), (1, 0), Some(t0() + secs(60))),
            (
                "other".into(),
                4,
                "receipt".into(),
                (1, 0),
                Some(t0() - secs(30))
            ),
        ],
        "by transport, priority (highest first), channel and category; no category is the empty one"
    );
    claim(s, 1, t0()).await; // the last priority-9 one
    let mail_9 = s
        .queue_depth()
        .await
        .expect("depth")
        .into_iter()
        .find(|d| d.transport == "mail" && d.priority.get() == 9)
        .expect("mail at 9 is still processing");
    assert_eq!((mail_9.queued, mail_9.oldest_available), (0, None));
}

async fn migrations_can_run_twice(f: &Fixture) {
    f.storage
        .migrate()
        .await
        .expect("second migration is a no-op");
    f.storage.ping().await.expect("ping");
}

async fn concurrent_claimers_claim_each_message_exactly_once(f: &Fixture) {
    const TOTAL: usize = 10_000;
    let s = &f.storage;
    for _ in 0..TOTAL / 1000 {
        s.enqueue_many(emails(1000, t0()), t0())
            .await
            .expect("enqueue");
    }
    let mut workers = Vec::new();
    for _ in 0..4 {
        let storage: Arc<dyn Storage> = Arc::clone(s);
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = storage
                    .claim_due("mail", common::NODE, 100, LEASE, t0())
                    .await
                    .expect("claim");
                if claimed.is_empty() {
                    break mine;
                }
                let outcomes = claimed
                    .iter()
                    .map(|m| outcome(m, OutcomeKind::Sent))
                    .collect();
                let recorded = storage
                    .record_outcomes(outcomes, t0())
                    .await
                    .expect("record");
                assert!(recorded.stale.is_empty());
                mine.extend(claimed.iter().map(|m| m.id));
            }
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.expect("worker"));
    }
    let unique: HashSet<Stamp> = all.iter().copied().collect();
    assert_eq!(all.len(), TOTAL, "claimed in all");
    assert_eq!(unique.len(), TOTAL, "no message claimed twice");
    let sent = s
        .list_messages(
            &MessageFilter {
                status: Some(Status::Sent),
                ..Default::default()
            },
            PageRequest {
                after: None,
                limit: 1000,
            },
        )
        .await
        .expect("list");
    assert_eq!(sent.items.len(), 1000);
    assert!(s.queue_depth().await.expect("depth").is_empty());
}

async fn outcomes_are_rolled_up_per_minute_and_transport(f: &Fixture) {
    let s = f.storage.as_ref();
    s.enqueue_many(emails(5, t0()), t0())
        .await
        .expect("enqueue");
    let claimed = claim(s, 5, t0()).await;
    let at = t0() + secs(75); // the minute starting at t0 + 60 s
    let mut outcomes = vec![
        outcome(&claimed[0], OutcomeKind::Sent),
        Outcome {
            duration_ms: Some(700),
            ..outcome(&claimed[1], OutcomeKind::Sent)
        },
        failed(&claimed[2], Some(at + secs(5))),
        failed(&claimed[3], None),
        outcome(
            &claimed[4],
            OutcomeKind::Released {
                reason: "paused".into(),
            },
        ),
    ];
    outcomes[1].transport = "member-b".into();
    s.record_outcomes(outcomes, at).await.expect("record");
    // A stale outcome is neither applied nor counted.
    s.record_outcomes(vec![outcome(&claimed[0], OutcomeKind::Sent)], at)
        .await
        .expect("record");

    let rows = s
        .minute_metrics(t0(), t0() + secs(3600))
        .await
        .expect("metrics");
    assert_eq!(rows.len(), 2, "{rows:?}");
    let mail = rows
        .iter()
        .find(|r| r.transport == "mail")
        .expect("mail row");
    assert_eq!(mail.minute, t0() + secs(60));
    assert_eq!(
        (
            mail.sent,
            mail.failed,
            mail.retried,
            mail.dead,
            mail.deferred
        ),
        (1, 2, 1, 1, 1)
    );
    assert_eq!(
        (mail.latency_count, mail.latency_sum_ms, mail.latency_max_ms),
        (3, 36, 12)
    );
    assert_eq!(mail.latency_le, [0, 0, 0, 0, 3, 3, 3, 3, 3, 3, 3, 3, 3]);
    let member = rows
        .iter()
        .find(|r| r.transport == "member-b")
        .expect("member row");
    assert_eq!((member.sent, member.latency_max_ms), (1, 700));
    assert_eq!(member.latency_le, [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1]);

    // Later batches in the same minute add to the same row.
    s.enqueue_many(emails(1, t0()), t0())
        .await
        .expect("enqueue");
    let more = claim(s, 1, at).await;
    s.record_outcomes(vec![outcome(&more[0], OutcomeKind::Sent)], at + secs(10))
        .await
        .expect("record");
    let rows = s
        .minute_metrics(t0() + secs(60), t0() + secs(120))
        .await
        .expect("metrics");
    let mail = rows
        .iter()
        .find(|r| r.transport == "mail")
        .expect("mail row");
    assert_eq!((mail.sent, mail.latency_count), (2, 4));
    assert!(
        s.minute_metrics(t0(), t0() + secs(60))
            .await
            .expect("metrics")
            .is_empty()
    );

    // The failures by class and normalised error, and the dead letters.
    let failures = s
        .failure_counts(t0(), t0() + secs(3600))
        .await
        .expect("failures");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(
        (
            failures[0].transport.as_str(),
            failures[0].class.as_str(),
            failures[0].error.as_str(),
            failures[0].failures
        ),
        ("mail", "transient", "# try later", 2)
    );
    let dead = s.dead_letter_summary().await.expect("summary");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].transport.as_str(), dead[0].count, dead[0].oldest),
        ("mail", 1, Some(at))
    );

    // The retried message succeeds on its second attempt.
    let due = s
        .claim_due("mail", common::NODE, 10, LEASE, at + secs(5))
        .await
        .expect("claim");
    let retried = due
        .iter()
        .find(|m| m.id == claimed[2].id)
        .expect("the retried message is due");
    assert_eq!(retried.attempts, 2);
    s.record_outcomes(vec![outcome(retried, OutcomeKind::Sent)], at + secs(6))
        .await
        .expect("record");
    let rows = s
        .minute_metrics(t0() + secs(60), t0() + secs(120))
        .await
        .expect("metrics");
    let mail = rows
        .iter()
        .find(|r| r.transport == "mail")
        .expect("mail row");
    assert_eq!(mail.sent_after_retry, 1);
    assert_eq!(
        mail.finished,
        [3, 1, 0, 0],
        "sent, dead and the later one on attempt 1; the retried one on 2"
    );
}

async fn rollups_split_by_channel_and_category_with_flow_timings(f: &Fixture) {
    let s = f.storage.as_ref();
    let batch = ["receipt", "receipt", "alert"]
        .into_iter()
        .enumerate()
        .map(|(i, category)| {
            Email {
                category: Some(category),
                subject: format!("Message {i}"),
                ..Email::default()
            }
            .build(t0())
        })
        .collect();
    s.enqueue_many(batch, t0()).await.expect("enqueue");
    let claimed = claim(s, 3, t0()).await;
    let at = t0() + secs(10);
    let timed = |m: &Message, wait: u64, processing: u64, total: u64, kind: OutcomeKind| Outcome {
        wait_ms: Some(wait),
        processing_ms: Some(processing),
        limited_ms: Some(processing / 2),
        total_ms: Some(total),
        ..outcome(m, kind)
    };
    let outcomes: Vec<Outcome> = claimed
        .iter()
        .map(|m| match m.category.as_deref() {
            Some("alert") => timed(m, 40, 2000, 2052, OutcomeKind::Sent),
            _ if m.payload["subject"] == "Message 0" => timed(m, 5, 30, 47, OutcomeKind::Sent),
            // A failure to retry: its total is not an end-to-end time.
            _ => timed(
                m,
                700,
                0,
                712,
                OutcomeKind::Failed {
                    error: "451 later".into(),
                    retry_at: Some(at + secs(60)),
                },
            ),
        })
        .collect();
    s.record_outcomes(outcomes, at).await.expect("record");
    s.add_rollups(vec![MinuteMetrics {
        minute: t0(),
        transport: "mail".into(),
        breaker_open_ms: 3000,
        ..MinuteMetrics::default()
    }])
    .await
    .expect("add");
    s.add_rollups(vec![MinuteMetrics {
        minute: t0(),
        transport: "mail".into(),
        breaker_open_ms: 1000,
        ..MinuteMetrics::default()
    }])
    .await
    .expect("add again");

    let rows = s
        .minute_metrics(t0(), t0() + secs(60))
        .await
        .expect("metrics");
    let keys: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.transport.as_str(),
                r.channel.as_str(),
                r.category.as_str(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("mail", "", ""),
            ("mail", "email", "alert"),
            ("mail", "email", "receipt")
        ]
    );
    assert_eq!(rows[0].breaker_open_ms, 4000, "transport rows add up");
    assert_eq!(rows[0].sent + rows[0].failed, 0);

    let alert = &rows[1];
    assert_eq!(
        (alert.sent, alert.wait_count, alert.wait_max_ms),
        (1, 1, 40)
    );
    assert_eq!(
        alert.wait_le,
        [
            0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
        ]
    );
    assert_eq!(
        (
            alert.processing.count,
            alert.processing.sum_ms,
            alert.processing.max_ms
        ),
        (1, 2000, 2000)
    );
    assert_eq!(
        alert.processing.le,
        [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
        ]
    );
    assert_eq!(alert.limited_sum_ms, 1000);
    assert_eq!((alert.total.count, alert.total.sum_ms), (1, 2052));

    let receipt = &rows[2];
    assert_eq!((receipt.sent, receipt.failed, receipt.retried), (1, 1, 1));
    assert_eq!((receipt.wait_count, receipt.wait_sum_ms), (2, 705));
    assert_eq!(
        receipt.wait_le,
        [
            0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2
        ]
    );
    assert_eq!(
        (
            receipt.total.count,
            receipt.total.sum_ms,
            receipt.total.le[5] // at most 50 ms
        ),
        (1, 47, 1),
        "only the finished message has an end-to-end time"
    );
    assert_eq!(receipt.limited_sum_ms, 15);

    let failures = s
        .failure_counts(t0(), t0() + secs(60))
        .await
        .expect("failures");
    assert_eq!(failures.len(), 1);
    assert_eq!(
        (failures[0].channel.as_str(), failures[0].category.as_str()),
        ("email", "receipt")
    );

    // Totals sum every minute of the range per key, labelled `from`.
    s.add_rollups(vec![MinuteMetrics {
        minute: t0() + secs(120),
        transport: "mail".into(),
        breaker_open_ms: 500,
        ..MinuteMetrics::default()
    }])
    .await
    .expect("add later");
    let totals = s
        .rollup_totals(t0() - secs(60), t0() + secs(3600))
        .await
        .expect("totals");
    assert_eq!(totals.len(), 3);
    assert!(totals.iter().all(|r| r.minute == t0() - secs(60)));
    assert_eq!(totals[0].breaker_open_ms, 4500);
    assert_eq!(
        MinuteMetrics {
            minute: t0(),
            ..totals[2].clone()
        },
        *receipt
    );

    // Compaction keeps the dimensions apart.
    s.compact_rollups(t0() + secs(7200), t0() + secs(7200), t0() - secs(3600))
        .await
        .expect("compact");
    let hourly = s
        .minute_metrics(t0() - secs(3600), t0() + secs(3600))
        .await
        .expect("metrics");
    assert_eq!(hourly.len(), 3, "{hourly:?}");
    assert!(hourly.iter().all(|r| r.minute == t0()));
    assert_eq!(hourly[0].breaker_open_ms, 4500);
    assert_eq!(hourly[2].wait_le, receipt.wait_le);
}

/// An enqueue signals waiting workers at once: in-process on both
/// backends, and through LISTEN/NOTIFY to other nodes on PostgreSQL.
async fn expect_signal(receiver: &mut tokio::sync::broadcast::Receiver<Arc<str>>, transport: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = tokio::time::timeout_at(deadline, receiver.recv()).await;
        match got {
            Ok(Ok(name)) if &*name == transport => return,
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            other => panic!("no work signal for {transport}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_enqueue_signals_work_in_process() {
    let f = Fixture::sqlite().await;
    let mut signals = f.storage.work_signal().subscribe();
    f.storage
        .enqueue(
            Email {
                transport: "other",
                ..Email::default()
            }
            .build(t0()),
            t0(),
        )
        .await
        .expect("enqueue");
    expect_signal(&mut signals, "other").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_enqueue_signals_work_on_other_nodes() {
    let f = Fixture::postgres().await;
    let other_node = f.reopen().await;
    let mut signals = other_node.work_signal().subscribe();
    // The other node's listener connects in the background; retry the
    // enqueue until one notification has crossed over.
    for attempt in 0.. {
        f.storage
            .enqueue(
                Email {
                    transport: "other",
                    ..Email::default()
                }
                .build(t0()),
                t0(),
            )
            .await
            .expect("enqueue");
        // Notifications are database-wide: other processes on the same
        // server (other test schemas) may wake us for their transports.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Ok(name)) = tokio::time::timeout_at(deadline, signals.recv()).await {
            if &*name == "other" {
                return;
            }
        }
        assert!(attempt < 20, "no notification reached the other node");
    }
}

fn node(id: &str) -> NodeInfo {
    NodeInfo {
        id: id.to_owned(),
        version: "test".to_owned(),
        address: None,
        started_at: t0(),
    }
}

async fn one_node_at_a_time_holds_a_transport(f: &Fixture) {
    let s = f.storage.as_ref();
    for id in ["node-a", "node-b"] {
        s.heartbeat(&node(id), t0()).await.expect("heartbeat");
    }
    // Both nodes beat after this: only expiry or release moves a lease.
    let alive = t0() - secs(1);
    assert!(
        s.hold_transport("mail", "node-a", t0() + secs(30), t0(), alive)
            .await
            .expect("hold")
    );
    assert!(
        !s.hold_transport("mail", "node-b", t0() + secs(40), t0() + secs(10), alive)
            .await
            .expect("hold")
    );
    assert!(
        s.hold_transport("other", "node-b", t0() + secs(30), t0(), alive)
            .await
            .expect("hold"),
        "leases are per transport"
    );
    assert!(
        s.hold_transport("mail", "node-a", t0() + secs(60), t0() + secs(20), alive)
            .await
            .expect("renew")
    );
    assert!(
        !s.hold_transport("mail", "node-b", t0() + secs(90), t0() + secs(50), alive)
            .await
            .expect("hold"),
        "renewed"
    );
    assert!(
        s.hold_transport("mail", "node-b", t0() + secs(100), t0() + secs(61), alive)
            .await
            .expect("take over"),
        "expired"
    );
    assert!(
        !s.hold_transport("mail", "node-a", t0() + secs(100), t0() + secs(62), alive)
            .await
            .expect("hold")
    );
    s.release_transport("mail", "node-a")
        .await
        .expect("release by a non-holder is a no-op");
    assert!(
        !s.hold_transport("mail", "node-a", t0() + secs(100), t0() + secs(63), alive)
            .await
            .expect("hold")
    );
    s.release_transport("mail", "node-b")
        .await
        .expect("release");
    assert!(
        s.hold_transport("mail", "node-a", t0() + secs(100), t0() + secs(64), alive)
            .await
            .expect("hold after release")
    );
    s.set_paused("mail", true, t0()).await.expect("pause");
    assert!(
        s.hold_transport("mail", "node-a", t0() + secs(130), t0() + secs(65), alive)
            .await
            .expect("renew")
    );
    let states = s.transport_states().await.expect("states");
    assert!(
        states.iter().any(|t| t.name == "mail" && t.paused),
        "leases leave the pause state alone"
    );
}

async fn a_dead_holder_loses_its_transport_before_its_lease_ends(f: &Fixture) {
    let s = f.storage.as_ref();
    s.heartbeat(&node("node-a"), t0()).await.expect("heartbeat");
    s.heartbeat(&node("node-b"), t0() + secs(5))
        .await
        .expect("heartbeat");
    assert!(
        s.hold_transport("mail", "node-a", t0() + secs(30), t0(), t0() - secs(6))
            .await
            .expect("hold")
    );
    assert!(
        !s.hold_transport(
            "mail",
            "node-b",
            t0() + secs(35),
            t0() + secs(5),
            t0() - secs(1)
        )
        .await
        .expect("hold"),
        "node A is alive"
    );
    assert!(
        s.hold_transport(
            "mail",
            "node-b",
            t0() + secs(37),
            t0() + secs(7),
            t0() + secs(1)
        )
        .await
        .expect("take over"),
        "node A missed its beats: its lease is taken over before it ends"
    );
    assert!(
        s.hold_transport("other", "node-c", t0() + secs(30), t0(), t0())
            .await
            .expect("hold")
    );
    assert!(
        s.hold_transport(
            "other",
            "node-b",
            t0() + secs(30),
            t0() + secs(1),
            t0() - secs(6)
        )
        .await
        .expect("take over"),
        "a holder that never registered is not alive"
    );
}

async fn claims_of_a_dead_node_are_recovered_before_their_lease_ends(f: &Fixture) {
    let s = f.storage.as_ref();
    let batch = emails(3, t0());
    s.enqueue_many(batch, t0()).await.expect("enqueue");
    s.heartbeat(&node("node-a"), t0()).await.expect("heartbeat");
    s.heartbeat(&node("node-b"), t0()).await.expect("heartbeat");
    let of_a = s
        .claim_due("mail", "node-a", 2, LEASE, t0())
        .await
        .expect("claim");
    let of_b = s
        .claim_due("mail", "node-b", 1, LEASE, t0())
        .await
        .expect("claim");
    assert_eq!((of_a.len(), of_b.len()), (2, 1));
    s.heartbeat(&node("node-b"), t0() + secs(6))
        .await
        .expect("heartbeat");
    assert!(
        s.recover_expired(t0() + secs(5), t0() - secs(1), 100)
            .await
            .expect("recover")
            .is_empty(),
        "both nodes alive, no lease ended"
    );
    let mut recovered = s
        .recover_expired(t0() + secs(7), t0() + secs(1), 100)
        .await
        .expect("recover");
    recovered.sort();
    let mut expected: Vec<Stamp> = of_a.iter().map(|m| m.id).collect();
    expected.sort();
    assert_eq!(recovered, expected, "node A's claims only, 23 s early");
    for id in &expected {
        assert_eq!(status_of(s, *id).await, Status::Queued);
        let expired = stored_events(s, *id).await.pop().expect("events");
        assert_eq!(expired.kind, EventKind::LeaseExpired);
        assert_eq!(
            expired.started_at,
            Some(t0()),
            "ending the dead node's leases left the claim time"
        );
    }
    assert_eq!(status_of(s, of_b[0].id).await, Status::Processing);
    // Node A comes back (it was only slow): it beats again, its stale
    // outcomes are refused by their claim tokens.
    s.heartbeat(&node("node-a"), t0() + secs(8))
        .await
        .expect("heartbeat");
    let late = s
        .record_outcomes(vec![outcome(&of_a[0], OutcomeKind::Sent)], t0() + secs(8))
        .await
        .expect("record");
    assert_eq!(late.stale, vec![of_a[0].id]);
}

/// Registers `node` once the lock of the process before it is free: on
/// PostgreSQL that takes the server a moment to notice a closed session.
async fn register_once_free(s: &dyn Storage, node: &NodeInfo, at: chrono::DateTime<chrono::Utc>) {
    let mut tries = 0;
    while let Err(err) = s.register_node(node, at).await {
        tries += 1;
        assert!(
            tries < 100,
            "the lock of the process before was never freed: {err}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_restarted_node_takes_over_its_own_claims_at_once(f: &Fixture) {
    f.storage
        .enqueue_many(emails(2, t0()), t0())
        .await
        .expect("enqueue");
    let me = node("node-a");
    let first = f.reopen().await;
    first.register_node(&me, t0()).await.expect("register");
    let held = first
        .claim_due("mail", "node-a", 2, LEASE, t0())
        .await
        .expect("claim");
    assert_eq!(held.len(), 2);
    let again = f.reopen().await;
    assert!(
        matches!(
            again.register_node(&me, t0()).await,
            Err(StorageError::Config(_))
        ),
        "a second live process with the same node (or SQLite file) is refused"
    );
    // The process dies without deregistering (its lock goes with it); its
    // successor, with the same id (on SQLite: any process on the file),
    // starts a second later.
    drop(first);
    let successor = f.reopen().await;
    register_once_free(successor.as_ref(), &me, t0() + secs(1)).await;
    let recovered = successor
        .recover_expired(t0() + secs(1), common::no_node_dead(), 100)
        .await
        .expect("recover");
    assert_eq!(
        recovered.len(),
        2,
        "taken over without waiting for the lease"
    );
    for id in &recovered {
        let expired = stored_events(successor.as_ref(), *id)
            .await
            .pop()
            .expect("events");
        assert_eq!(
            (expired.kind, expired.started_at),
            (EventKind::LeaseExpired, Some(t0())),
            "the takeover left the claim time"
        );
    }
    assert!(
        successor
            .hold_transport("mail", "node-a", t0() + secs(31), t0() + secs(1), t0())
            .await
            .expect("hold")
    );
    successor
        .deregister_node("node-a", t0() + secs(2))
        .await
        .expect("deregister");
    // Free again once the successor deregistered.
    register_once_free(again.as_ref(), &me, t0() + secs(3)).await;
    again
        .deregister_node("node-a", t0() + secs(3))
        .await
        .expect("deregister");
}

async fn old_rollups_compact_to_hours_and_are_purged(f: &Fixture) {
    let s = f.storage.as_ref();
    s.enqueue_many(emails(4, t0()), t0())
        .await
        .expect("enqueue");
    let claimed = claim(s, 4, t0()).await;
    // Minutes 10 and 20 of the first hour, 10 of the second, 5 of the third.
    let at = [secs(600), secs(1200), secs(4200), secs(7500)];
    s.record_outcomes(vec![outcome(&claimed[0], OutcomeKind::Sent)], t0() + at[0])
        .await
        .expect("record");
    s.record_outcomes(vec![failed(&claimed[1], None)], t0() + at[1])
        .await
        .expect("record");
    s.record_outcomes(vec![outcome(&claimed[2], OutcomeKind::Sent)], t0() + at[2])
        .await
        .expect("record");
    s.record_outcomes(vec![outcome(&claimed[3], OutcomeKind::Sent)], t0() + at[3])
        .await
        .expect("record");

    let (merged, purged) = s
        .compact_rollups(t0() + secs(7200), t0() + secs(7200), t0())
        .await
        .expect("compact");
    assert_eq!(
        (merged, purged),
        (4, 0),
        "three minute rows and one failure row merged away"
    );
    let rows = s
        .minute_metrics(t0(), t0() + secs(3 * 3600))
        .await
        .expect("metrics");
    let summary: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.minute,
                r.sent,
                r.failed,
                r.dead,
                r.latency_count,
                r.latency_max_ms,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (t0(), 1, 1, 1, 2, 12),
            (t0() + secs(3600), 1, 0, 0, 1, 12),
            (t0() + secs(7500), 1, 0, 0, 1, 12),
        ]
    );
    let failures = s
        .failure_counts(t0(), t0() + secs(3 * 3600))
        .await
        .expect("failures");
    assert_eq!(failures.len(), 1);
    assert_eq!((failures[0].minute, failures[0].failures), (t0(), 1));

    // Compacting again changes nothing; purging drops the first hour.
    assert_eq!(
        s.compact_rollups(t0() + secs(7200), t0() + secs(7200), t0())
            .await
            .expect("compact"),
        (0, 0)
    );
    let (_, purged) = s
        .compact_rollups(t0() + secs(7200), t0() + secs(7200), t0() + secs(3600))
        .await
        .expect("purge");
    assert_eq!(purged, 2, "the first hour's metrics and failure rows");
    let rows = s
        .minute_metrics(t0(), t0() + secs(3 * 3600))
        .await
        .expect("metrics");
    assert_eq!(rows.len(), 2);
}

/// Totals, failures and series read the same figures before and after the
/// hours are sealed, however the range cuts them; the minute rows stay
/// (they are younger than `compact_before`), so minute-resolution reads
/// are unchanged too.
async fn sealed_hours_answer_as_the_minutes_they_sum(f: &Fixture) {
    let s = f.storage.as_ref();
    s.enqueue_many(emails(6, t0()), t0())
        .await
        .expect("enqueue");
    let claimed = claim(s, 6, t0()).await;
    // 00:10, 00:50 and 01:20 and 02:05 and 02:40; 03:30 is not sealed.
    let at = [600, 3000, 4800, 7500, 9600, 12600];
    for (i, (message, at)) in claimed.iter().zip(at).enumerate() {
        let result = if i % 2 == 0 {
            outcome(message, OutcomeKind::Sent)
        } else {
            failed(message, None)
        };
        s.record_outcomes(vec![result], t0() + secs(at))
            .await
            .expect("record");
    }
    let ranges = [
        (t0(), t0() + secs(4 * 3600)),
        (t0() + secs(1800), t0() + secs(3 * 3600 + 1800)),
        (t0() + secs(3000), t0() + secs(7500)),
        (t0() + secs(3601), t0() + secs(3700)),
    ];
    let mut before = Vec::new();
    for (from, to) in ranges {
        before.push((
            s.rollup_totals(from, to).await.expect("totals"),
            s.failure_counts(from, to).await.expect("failures"),
            s.minute_metrics(from, to).await.expect("minutes"),
        ));
    }

    s.compact_rollups(t0() + secs(3 * 3600 + 60), t0(), t0() - secs(3600))
        .await
        .expect("seal");
    for ((from, to), (totals, failures, minutes)) in ranges.into_iter().zip(before) {
        assert_eq!(s.rollup_totals(from, to).await.expect("totals"), totals);
        assert_eq!(
            s.failure_counts(from, to).await.expect("failures"),
            failures
        );
        assert_eq!(s.minute_metrics(from, to).await.expect("minutes"), minutes);
    }
    // An hourly series has one row per sealed hour and minute rows where
    // the range cuts an hour or the hour is not sealed.
    let hours = s
        .series_counts(
            t0() + secs(1800),
            t0() + secs(4 * 3600),
            true,
            &herald::storage::Scope::default(),
        )
        .await
        .expect("hours");
    let rows: Vec<_> = hours.iter().map(|r| (r.minute, r.sent, r.dead)).collect();
    assert_eq!(
        rows,
        vec![
            (t0() + secs(3000), 0, 1),
            (t0() + secs(3600), 1, 0),
            (t0() + secs(7200), 1, 1),
            (t0() + secs(12600), 0, 1),
        ]
    );
    // Sealing again (late writes) and then dropping the minute rows keeps
    // the hours' figures.
    let whole = (t0(), t0() + secs(3 * 3600));
    let totals = s.rollup_totals(whole.0, whole.1).await.expect("totals");
    s.compact_rollups(
        t0() + secs(3 * 3600 + 60),
        t0() + secs(3 * 3600),
        t0() - secs(3600),
    )
    .await
    .expect("compact");
    assert_eq!(
        s.rollup_totals(whole.0, whole.1).await.expect("totals"),
        totals
    );
    let series = s.minute_metrics(whole.0, whole.1).await.expect("series");
    assert_eq!(
        series.iter().map(|r| r.minute).collect::<Vec<_>>(),
        vec![t0(), t0() + secs(3600), t0() + secs(7200)],
        "before minutes_from only hourly rows remain"
    );
}

fn new_alert(rule: &str, transport: &str, at: chrono::DateTime<chrono::Utc>) -> NewAlert {
    NewAlert {
        id: herald::domain::monotonic_ulid(),
        rule: rule.to_owned(),
        kind: "queue_depth".to_owned(),
        transport: transport.to_owned(),
        threshold: 2.0,
        window_s: None,
        value: 3.0,
        fired_at: at,
    }
}

/// Opens an alert with a cooldown that has long passed.
async fn open(s: &dyn Storage, alert: NewAlert) -> Option<Alert> {
    let quiet_since = alert.fired_at;
    s.open_alert(alert, quiet_since).await.expect("open alert")
}

async fn one_alert_is_active_per_rule_and_transport(f: &Fixture) {
    let s = f.storage.as_ref();
    let first = open(s, new_alert("deep", "mail", t0()))
        .await
        .expect("opened");
    assert_eq!(
        (
            first.state,
            first.notified,
            first.fired_value,
            first.last_value
        ),
        (AlertState::Active, true, 3.0, 3.0)
    );
    assert_eq!(first.fired_at, t0());
    assert!(
        open(s, new_alert("deep", "mail", t0() + secs(30)))
            .await
            .is_none(),
        "already active"
    );
    let other = open(s, new_alert("deep", "other", t0() + secs(30)))
        .await
        .expect("another transport is another incident");

    s.check_alert(first.id, 7.5, t0() + secs(60))
        .await
        .expect("check");
    let resolved = s
        .resolve_alert(first.id, 1.0, t0() + secs(90))
        .await
        .expect("resolve")
        .expect("it was active");
    assert_eq!(resolved.state, AlertState::Resolved);
    assert_eq!(resolved.resolved_at, Some(t0() + secs(90)));
    assert_eq!((resolved.fired_value, resolved.last_value), (3.0, 1.0));
    assert!(
        s.resolve_alert(first.id, 1.0, t0() + secs(95))
            .await
            .expect("resolve")
            .is_none(),
        "resolved once"
    );
    let again = open(s, new_alert("deep", "mail", t0() + secs(120)))
        .await
        .expect("a new incident once the last is resolved");

    let ids = |alerts: Vec<Alert>| alerts.into_iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s
            .list_alerts(Some(AlertState::Active), 10)
            .await
            .expect("list")),
        vec![again.id, other.id],
        "newest first"
    );
    assert_eq!(
        ids(s
            .list_alerts(Some(AlertState::Resolved), 10)
            .await
            .expect("list")),
        vec![first.id]
    );
    assert_eq!(
        ids(s.list_alerts(None, 2).await.expect("list")),
        vec![again.id, other.id]
    );
    let active = s
        .list_alerts(Some(AlertState::Active), 10)
        .await
        .expect("list");
    assert_eq!(active[1].checked_at, t0() + secs(30));
}

async fn concurrent_evaluations_open_one_alert(f: &Fixture) {
    let attempts = (0..8).map(|_| {
        let s = f.storage.clone();
        tokio::spawn(async move { open(s.as_ref(), new_alert("deep", "mail", t0())).await })
    });
    let mut opened = 0;
    for attempt in attempts {
        if attempt.await.expect("no panic").is_some() {
            opened += 1;
        }
    }
    assert_eq!(opened, 1);
}

async fn the_cooldown_is_decided_with_the_opening(f: &Fixture) {
    let s = f.storage.as_ref();
    let cooldown = secs(900);
    let first = open(s, new_alert("deep", "mail", t0()))
        .await
        .expect("opened");
    s.resolve_alert(first.id, 0.0, t0() + secs(60))
        .await
        .expect("resolve");
    let at = t0() + secs(120);
    let flap = s
        .open_alert(new_alert("deep", "mail", at), at - cooldown)
        .await
        .expect("open")
        .expect("recorded");
    assert!(!flap.notified, "within the cooldown of a notified incident");
    s.resolve_alert(flap.id, 0.0, at + secs(60))
        .await
        .expect("resolve");
    let at = t0() + secs(901);
    let later = s
        .open_alert(new_alert("deep", "mail", at), at - cooldown)
        .await
        .expect("open")
        .expect("recorded");
    assert!(
        later.notified,
        "the silent incident does not extend the cooldown"
    );
    let elsewhere = s
        .open_alert(new_alert("deep", "other", at), at - cooldown)
        .await
        .expect("open")
        .expect("recorded");
    assert!(elsewhere.notified, "cooldowns are per transport");
}

async fn notices_await_until_recorded(f: &Fixture) {
    let s = f.storage.as_ref();
    let loud = open(s, new_alert("deep", "mail", t0()))
        .await
        .expect("opened");
    let second = open(s, new_alert("deep", "other", t0()))
        .await
        .expect("opened");
    let awaiting = |alerts: Vec<Alert>| {
        alerts
            .into_iter()
            .map(|a| (a.id, a.missing_notices()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        awaiting(s.alerts_awaiting_notice().await.expect("awaiting")),
        vec![
            (loud.id, vec![AlertNotice::Fired]),
            (second.id, vec![AlertNotice::Fired])
        ]
    );
    let notice = Email::default().build(t0());
    let message = s.enqueue(notice, t0()).await.expect("enqueue").id;
    s.set_alert_notice(loud.id, AlertNotice::Fired, message)
        .await
        .expect("record");
    s.set_alert_notice(second.id, AlertNotice::Fired, message)
        .await
        .expect("record");
    assert!(
        s.alerts_awaiting_notice()
            .await
            .expect("awaiting")
            .is_empty()
    );

    let resolved = s
        .resolve_alert(loud.id, 0.0, t0() + secs(10))
        .await
        .expect("resolve")
        .expect("resolved");
    assert_eq!(resolved.fired_message, Some(message));
    assert_eq!(
        awaiting(s.alerts_awaiting_notice().await.expect("awaiting")),
        vec![(loud.id, vec![AlertNotice::Resolved])]
    );
    s.set_alert_notice(loud.id, AlertNotice::Resolved, message)
        .await
        .expect("record");
    assert!(
        s.alerts_awaiting_notice()
            .await
            .expect("awaiting")
            .is_empty()
    );

    s.resolve_alert(second.id, 0.0, t0() + secs(10))
        .await
        .expect("resolve");
    s.set_alert_notice(second.id, AlertNotice::Resolved, message)
        .await
        .expect("record");
    let quiet = s
        .open_alert(new_alert("deep", "other", t0() + secs(20)), t0())
        .await
        .expect("open")
        .expect("opened");
    assert!(!quiet.notified);
    assert!(
        s.alerts_awaiting_notice()
            .await
            .expect("awaiting")
            .is_empty(),
        "an incident in its cooldown sends nothing, ever"
    );
}

async fn alert_history_survives_a_restart(f: &Fixture) {
    let s = f.storage.as_ref();
    let alert = open(s, new_alert("deep", "mail", t0()))
        .await
        .expect("opened");
    s.resolve_alert(alert.id, 0.5, t0() + secs(30))
        .await
        .expect("resolve");
    let reopened = f.reopen().await;
    let history = reopened.list_alerts(None, 10).await.expect("list");
    assert_eq!(history.len(), 1);
    let stored = &history[0];
    assert_eq!(stored.id, alert.id);
    assert_eq!(stored.state, AlertState::Resolved);
    assert_eq!(stored.resolved_at, Some(t0() + secs(30)));
    assert_eq!(stored.last_value, 0.5);
    assert!(
        open(
            reopened.as_ref(),
            new_alert("deep", "mail", t0() + secs(60))
        )
        .await
        .is_some()
    );
}

/// Expiring a day of finished messages on PostgreSQL is dropping its
/// partitions (messages and their events), not a DELETE: the day's rows
/// that a rule keeps longer were filed apart as they finished, or moved
/// apart before the drop, and outlive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_expiring_a_day_drops_its_partitions() {
    let f = Fixture::postgres().await;
    let day = Duration::from_secs(86_400);
    let rule = |sent, dead| RetentionRule {
        sent,
        dead,
        cancelled: Some(day),
        payload_after_sent: None,
    };
    let retention = Retention {
        default: rule(Some(day), Some(30 * day)),
        overrides: vec![RetentionOverride {
            transport: None,
            category: Some("audit".into()),
            rule: rule(None, Some(30 * day)),
        }],
    };
    let s = herald::storage::open(&herald::storage::StorageOptions {
        retention,
        ..f.options.clone()
    })
    .await
    .expect("open with retention");
    let s = s.as_ref();
    let mut batch = emails(3, t0());
    batch[0].idempotency_key = Some("plain-0".into());
    batch[1].category = Some("audit".into());
    s.enqueue_many(batch.clone(), t0()).await.expect("enqueue");
    let claimed = claim(s, 3, t0()).await;
    let by_id = |id: Stamp| claimed.iter().find(|m| m.id == id).expect("claimed");
    let (plain, audit, dead) = (batch[0].id, batch[1].id, batch[2].id);
    s.record_outcomes(
        vec![
            outcome(by_id(plain), OutcomeKind::Sent),
            outcome(by_id(audit), OutcomeKind::Sent),
            failed(by_id(dead), None),
        ],
        t0(),
    )
    .await
    .expect("outcomes");

    let side = common::connect(&f.options.url).await;
    let filed = |id: Stamp| {
        let side = &side;
        async move {
            side.query_opt(
                "SELECT finished_on::text FROM finished_messages WHERE id = $1",
                &[&uuid::Uuid::from(id.0)],
            )
            .await
            .expect("finished_on")
            .map(|row| row.get::<_, String>(0))
        }
    };
    assert_eq!(filed(plain).await.as_deref(), Some("2026-01-01"));
    assert_eq!(
        filed(audit).await.as_deref(),
        Some("9999-01-01"),
        "a rule of its own"
    );
    assert_eq!(filed(dead).await.as_deref(), Some("2026-01-01"));
    let partition = |name: &'static str| {
        let side = &side;
        async move {
            side.query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
                .await
                .expect("to_regclass")
                .get::<_, bool>(0)
        }
    };
    assert!(partition("finished_messages_p20260101").await);
    assert!(partition("message_events_p20260101").await);
    // A new store has no finished message in its live table to move, so
    // that table carries no index for them but the empty partial one.
    assert!(!partition("messages_status").await);
    assert!(!partition("messages_dead_since").await);
    assert!(partition("messages_unmoved").await);
    assert!(partition("messages_idempotency").await);
    assert!(!partition("messages_idempotency_key_key").await);

    // Not yet: the day's end is not a day ago.
    let early = s
        .expire_finished(t0() + day + Duration::from_secs(3600), 1000)
        .await
        .expect("expire");
    assert_eq!(early.total(), 0);

    let expired = s
        .expire_finished(t0() + 2 * day + Duration::from_secs(1), 1000)
        .await
        .expect("expire");
    assert_eq!((expired.days_dropped, expired.deleted), (1, 0));
    assert!(!partition("finished_messages_p20260101").await);
    assert!(!partition("message_events_p20260101").await);
    assert!(s.get_message(plain).await.expect("get").is_none());
    let events_left: i64 = side
        .query_one(
            "SELECT count(*) FROM message_events WHERE message_id = $1",
            &[&uuid::Uuid::from(plain.0)],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(events_left, 0, "the day's events went with it");
    let keys_left: i64 = side
        .query_one(
            "SELECT count(*) FROM idempotency_keys WHERE key = 'plain-0'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(keys_left, 0, "and its idempotency keys");
    // The dead letter is kept 30 days: moved apart, events and all.
    assert_eq!(filed(dead).await.as_deref(), Some("9999-01-01"));
    let kept = s.get_message(dead).await.expect("get").expect("kept");
    assert_eq!(kept.message.status, Status::Dead);
    assert!(
        kept.events
            .iter()
            .any(|e| e.kind == EventKind::DeadLettered)
    );
    let audit = s.get_message(audit).await.expect("get").expect("kept");
    assert!(audit.events.iter().any(|e| e.kind == EventKind::Sent));
}

/// On SQLite, retention gives the pages of what it deleted back: the
/// file shrinks (a store created with `auto_vacuum = INCREMENTAL`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_the_file_shrinks_as_retention_deletes() {
    let f = Fixture::sqlite().await;
    let day = Duration::from_secs(86_400);
    let s = herald::storage::open(&herald::storage::StorageOptions {
        retention: Retention {
            default: RetentionRule {
                sent: Some(day),
                ..RetentionRule::default()
            },
            overrides: Vec::new(),
        },
        ..f.options.clone()
    })
    .await
    .expect("open with retention");
    let s = s.as_ref();
    let ms = u64::try_from(t0().timestamp_millis()).expect("after 1970");
    let big = "x".repeat(990);
    for chunk in 0..4u128 {
        let batch: Vec<_> = (0..500u128)
            .map(|i| {
                let mut m = Email {
                    subject: big.clone(),
                    ..Email::default()
                }
                .build(t0());
                m.id = Stamp(ulid::Ulid::from_parts(ms, chunk * 1000 + i));
                m
            })
            .collect();
        s.enqueue_many(batch, t0()).await.expect("enqueue");
        let claimed = claim(s, 500, t0()).await;
        let sent = claimed
            .iter()
            .map(|m| outcome(m, OutcomeKind::Sent))
            .collect();
        s.record_outcomes(sent, t0()).await.expect("sent");
    }
    let pages = || {
        f.side_sqlite()
            .expect("sqlite")
            .query_row("PRAGMA page_count", [], |row| row.get::<_, i64>(0))
            .expect("page_count")
    };
    let full = pages();
    let mode: i64 = f
        .side_sqlite()
        .expect("sqlite")
        .query_row("PRAGMA auto_vacuum", [], |row| row.get(0))
        .expect("auto_vacuum");
    assert_eq!(mode, 2, "a new store vacuums incrementally");
    let mut deleted = 0;
    loop {
        let round = s
            .expire_finished(t0() + 2 * day, 1000)
            .await
            .expect("expire");
        if round.total() == 0 {
            break;
        }
        deleted += round.deleted;
    }
    assert_eq!(deleted, 2000);
    let after = pages();
    assert!(
        after * 4 < full,
        "{full} pages before, {after} after: the freed pages went back"
    );
}

/// A live table analysed while empty would have a backlog planned as if
/// absent; the heartbeat sees how much it changed and analyses it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_heartbeats_keep_the_live_tables_statistics_current() {
    let f = Fixture::postgres().await;
    let side = common::connect(&f.options.url).await;
    side.batch_execute("ANALYZE messages")
        .await
        .expect("analyse empty");
    let believed = || {
        let side = &side;
        async move {
            side.query_one(
                "SELECT reltuples::float8 FROM pg_class WHERE oid = 'messages'::regclass",
                &[],
            )
            .await
            .expect("reltuples")
            .get::<_, f64>(0)
        }
    };
    assert!(believed().await <= 0.0);
    for _ in 0..5 {
        f.storage
            .enqueue_many(emails(1000, t0()), t0())
            .await
            .expect("enqueue");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        f.storage
            .heartbeat(&node("stats"), t0())
            .await
            .expect("heartbeat");
        if believed().await > 1000.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the planner still believes the live table empty"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
