//! What the console searches by: idempotency key, category and creation
//! time, over live and finished messages alike; counts, exact up to the
//! cap and estimated past it; dead letters grouped by transport and error
//! class, and replayed by filter until none is left.

use std::collections::HashSet;

use herald::domain::{Stamp, Status};
use herald::storage::{
    EXACT_COUNT_LIMIT, MessageCount, MessageFilter, OutcomeKind, PageRequest, Storage,
};

use super::{LEASE, outcome};
use crate::common::{self, Email, Fixture, emails, secs, t0};

conformance!(
    listings_filter_by_key_category_and_creation_time,
    counts_are_exact_to_the_cap_and_estimated_past_it,
    dead_letters_group_by_transport_and_error_class,
    replaying_by_filter_until_none_is_left_replays_each_match_once,
);

async fn ids(s: &dyn Storage, filter: MessageFilter) -> Vec<Stamp> {
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
    .iter()
    .map(|m| m.id)
    .collect()
}

async fn count(s: &dyn Storage, filter: MessageFilter) -> MessageCount {
    s.count_messages(&filter).await.expect("count")
}

/// Claims every due message of `transport` and fails each for good with
/// `error`: each is dead at once.
async fn dead_letter(s: &dyn Storage, transport: &str, error: &str) {
    let claimed = s
        .claim_due(transport, common::NODE, 100, LEASE, t0())
        .await
        .expect("claim");
    let outcomes = claimed
        .iter()
        .map(|m| {
            outcome(
                m,
                OutcomeKind::Failed {
                    error: error.to_owned(),
                    retry_at: None,
                },
            )
        })
        .collect();
    s.record_outcomes(outcomes, t0()).await.expect("record");
}

async fn listings_filter_by_key_category_and_creation_time(f: &Fixture) {
    let s = f.storage.as_ref();
    let receipt = |subject: &str| Email {
        subject: subject.into(),
        category: Some("receipt"),
        ..Email::default()
    };
    let early = receipt("early").build(t0());
    let keyed = Email {
        idempotency_key: Some("order-42".into()),
        ..receipt("keyed")
    }
    .build(t0());
    let late = Email {
        subject: "late".into(),
        category: Some("news"),
        ..Email::default()
    }
    .build(t0());
    s.enqueue(early.clone(), t0()).await.expect("enqueue");
    s.enqueue(keyed.clone(), t0() + secs(10))
        .await
        .expect("enqueue");
    s.enqueue(late.clone(), t0() + secs(20))
        .await
        .expect("enqueue");
    // The first two finish: a filter reads both tables.
    let claimed = s
        .claim_due("mail", common::NODE, 2, LEASE, t0() + secs(30))
        .await
        .expect("claim");
    let outcomes = claimed
        .iter()
        .map(|m| outcome(m, OutcomeKind::Sent))
        .collect();
    s.record_outcomes(outcomes, t0() + secs(30))
        .await
        .expect("record");

    let by_key = MessageFilter {
        idempotency_key: Some("order-42".into()),
        ..MessageFilter::default()
    };
    assert_eq!(ids(s, by_key.clone()).await, vec![keyed.id]);
    assert_eq!(
        ids(
            s,
            MessageFilter {
                idempotency_key: Some("order-4".into()),
                ..MessageFilter::default()
            }
        )
        .await,
        Vec::<Stamp>::new(),
        "a key matches exactly"
    );
    let receipts = MessageFilter {
        category: Some("receipt".into()),
        ..MessageFilter::default()
    };
    assert_eq!(ids(s, receipts.clone()).await, vec![keyed.id, early.id]);
    let window = |since: i64, until: i64| MessageFilter {
        since: Some(t0() + secs(since)),
        until: Some(t0() + secs(until)),
        ..MessageFilter::default()
    };
    assert_eq!(
        ids(s, window(10, 20)).await,
        vec![keyed.id],
        "since is inclusive, until exclusive"
    );
    assert_eq!(
        ids(s, window(0, 21)).await,
        vec![late.id, keyed.id, early.id]
    );
    assert_eq!(
        ids(
            s,
            MessageFilter {
                since: Some(t0() + secs(1)),
                ..receipts.clone()
            }
        )
        .await,
        vec![keyed.id]
    );
    assert_eq!(
        ids(
            s,
            MessageFilter {
                until: Some(t0() + secs(20)),
                status: Some(Status::Queued),
                ..MessageFilter::default()
            }
        )
        .await,
        Vec::<Stamp>::new(),
        "the live one was created at 20 s"
    );

    assert_eq!(
        count(s, receipts).await,
        MessageCount {
            count: 2,
            estimated: false
        }
    );
    assert_eq!(count(s, by_key).await.count, 1);
    assert_eq!(count(s, window(10, 21)).await.count, 2);
    assert_eq!(count(s, MessageFilter::default()).await.count, 3);
}

async fn counts_are_exact_to_the_cap_and_estimated_past_it(f: &Fixture) {
    let s = f.storage.as_ref();
    let cap = EXACT_COUNT_LIMIT as usize;
    for n in 0..cap / 1000 {
        s.enqueue_many(emails(1000, t0()), t0() + secs(n as i64))
            .await
            .expect("enqueue");
    }
    let other = Email {
        transport: "other",
        ..Email::default()
    }
    .build(t0());
    s.enqueue(other, t0()).await.expect("enqueue");
    let mail = MessageFilter {
        transport: Some("mail".into()),
        ..MessageFilter::default()
    };
    assert_eq!(
        count(s, mail).await,
        MessageCount {
            count: EXACT_COUNT_LIMIT,
            estimated: false
        }
    );
    for filter in [
        MessageFilter::default(),
        MessageFilter {
            since: Some(t0()),
            status: Some(Status::Queued),
            ..MessageFilter::default()
        },
    ] {
        let all = count(s, filter).await;
        assert!(all.estimated, "{all:?}");
        assert!(all.count > EXACT_COUNT_LIMIT, "{all:?}");
    }
}

async fn dead_letters_group_by_transport_and_error_class(f: &Fixture) {
    let s = f.storage.as_ref();
    s.enqueue_many(emails(2, t0()), t0())
        .await
        .expect("enqueue");
    dead_letter(s, "mail", "rejected (550): <bob@example.com> unknown").await;
    s.enqueue(Email::default().build(t0()), t0())
        .await
        .expect("enqueue");
    dead_letter(s, "mail", "timed out: no answer in 30s").await;
    let other = Email {
        transport: "other",
        category: Some("news"),
        ..Email::default()
    }
    .build(t0());
    s.enqueue(other.clone(), t0()).await.expect("enqueue");
    dead_letter(s, "other", "an error an older version wrote").await;
    // Not dead: not grouped.
    s.enqueue(Email::default().build(t0()), t0())
        .await
        .expect("enqueue");

    let groups = s
        .dead_letter_groups(&MessageFilter::default())
        .await
        .expect("groups");
    let keys: Vec<(&str, &str, u64)> = groups
        .iter()
        .map(|g| (g.transport.as_str(), g.error_class.as_str(), g.count))
        .collect();
    assert_eq!(
        keys,
        [
            ("mail", "rejected", 2),
            ("mail", "timeout", 1),
            ("other", "unknown", 1)
        ]
    );
    assert_eq!(
        groups[0].sample_error.as_deref(),
        Some("rejected (550): <bob@example.com> unknown")
    );
    assert!(groups[0].oldest <= groups[0].newest);

    let news = s
        .dead_letter_groups(&MessageFilter {
            category: Some("news".into()),
            ..MessageFilter::default()
        })
        .await
        .expect("groups");
    assert_eq!(news.len(), 1);
    assert_eq!(news[0].transport, "other");

    let timeouts = MessageFilter {
        error_class: Some("timeout".into()),
        ..MessageFilter::default()
    };
    let listed = ids(s, timeouts.dead_letters()).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(count(s, timeouts.dead_letters()).await.count, 1);
}

async fn replaying_by_filter_until_none_is_left_replays_each_match_once(f: &Fixture) {
    let s = f.storage.as_ref();
    let rejected = emails(5, t0());
    s.enqueue_many(rejected.clone(), t0())
        .await
        .expect("enqueue");
    dead_letter(s, "mail", "rejected (550): no such user").await;
    s.enqueue(Email::default().build(t0()), t0())
        .await
        .expect("enqueue");
    dead_letter(s, "mail", "connection failed: refused").await;

    let filter = MessageFilter {
        error_class: Some("rejected".into()),
        ..MessageFilter::default()
    };
    let mut replayed = Vec::new();
    for call in 1.. {
        let batch = s
            .replay_dead(&filter, 2, t0() + secs(call))
            .await
            .expect("replay");
        assert!(batch.len() <= 2);
        if batch.is_empty() {
            break;
        }
        replayed.extend(batch);
        assert!(call < 10, "replaying makes progress");
    }
    assert_eq!(replayed.len(), 5, "each once: {replayed:?}");
    assert_eq!(
        replayed.iter().copied().collect::<HashSet<_>>(),
        rejected.iter().map(|m| m.id).collect()
    );
    let left = s
        .dead_letter_groups(&MessageFilter::default())
        .await
        .expect("groups");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].error_class, "connection");
}
