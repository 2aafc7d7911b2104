//! Delivery feedback and suppression, the same on both backends: reports
//! matched by stamp or provider id, applied once, moving the delivery
//! state forward only; what suppresses a recipient, and what an enqueue
//! to a suppressed recipient becomes.

use chrono::{DateTime, Utc};
use herald::domain::{
    Channel, DeliveryState, EnqueueRequest, EventKind, Message, NewMessage, Stamp, Status,
};
use herald::feedback::{BounceType, FeedbackEvent, FeedbackKind, Target};
use herald::storage::{
    FeedbackBatch, MessageFilter, Outcome, OutcomeKind, Storage, Suppression, SuppressionFilter,
};
use herald::transports::RecipientGone;

use super::finished::listed_ids;
use super::{claim, events_of, failed, outcome};
use crate::common::{Fixture, policy, secs, t0};

conformance!(
    reports_move_the_delivery_state_forward_once_and_a_hard_bounce_suppresses,
    an_enqueue_to_suppressed_recipients_drops_them_or_is_suppressed_whole,
    a_report_that_overtakes_its_send_is_kept_and_matched_later,
    a_nonce_is_taken_once,
    messages_are_found_by_recipient_and_by_delivery_state,
    soft_bounces_suppress_at_the_limit,
    a_gone_recipient_is_suppressed_by_its_dead_letter,
    the_suppression_list_is_listed_added_to_and_removed_from,
    reports_are_rolled_up_by_minute_of_receipt_with_bounce_reasons_and_domains,
    entries_scoped_to_a_transport_hold_for_it_alone,
);

fn mail(to: &[&str], key: Option<&str>) -> NewMessage {
    mail_through("mail", to, key)
}

fn mail_through(transport: &str, to: &[&str], key: Option<&str>) -> NewMessage {
    let request: EnqueueRequest = serde_json::from_value(serde_json::json!({
        "channel": "email",
        "transport": transport,
        "idempotency_key": key,
        "email": {
            "from": "shop@example.com",
            "to": to,
            "subject": "Your receipt",
            "text": "Thanks."
        }
    }))
    .expect("a valid request");
    request
        .into_new_message(&policy(), t0())
        .expect("a valid message")
}

fn report(target: Target, kind: FeedbackKind, recipient: Option<&str>, at: i64) -> FeedbackEvent {
    FeedbackEvent {
        target,
        kind,
        bounce: None,
        recipient: recipient.map(str::to_owned),
        at: t0() + secs(at),
        reason: None,
        event_id: None,
    }
}

fn batch(events: Vec<FeedbackEvent>) -> FeedbackBatch {
    FeedbackBatch {
        transport: "mail".into(),
        events,
        nonce: None,
    }
}

/// Enqueues `messages`, claims and sends them, the first with provider id
/// `pid-0`, the next `pid-1`, ...
async fn sent(s: &dyn Storage, messages: Vec<NewMessage>) -> Vec<Message> {
    let n = messages.len();
    s.enqueue_many(messages, t0()).await.expect("enqueue");
    let claimed = claim(s, n, t0()).await;
    let outcomes: Vec<Outcome> = claimed
        .iter()
        .enumerate()
        .map(|(i, m)| Outcome {
            provider_message_id: Some(format!("pid-{i}")),
            ..outcome(m, OutcomeKind::Sent)
        })
        .collect();
    s.record_outcomes(outcomes, t0() + secs(1))
        .await
        .expect("record");
    claimed
}

async fn message(s: &dyn Storage, id: Stamp) -> herald::domain::MessageWithEvents {
    s.get_message(id).await.expect("get").expect("stored")
}

async fn suppressed(s: &dyn Storage, now: DateTime<Utc>) -> Vec<(String, String)> {
    s.list_suppressions(&SuppressionFilter::default(), None, 100, now)
        .await
        .expect("list")
        .into_iter()
        .map(|e| (e.address, e.reason))
        .collect()
}

async fn reports_move_the_delivery_state_forward_once_and_a_hard_bounce_suppresses(f: &Fixture) {
    let s = f.storage.as_ref();
    let claimed = sent(s, vec![mail(&["Ann <ann@x.org>", "bob@x.org"], None)]).await;
    let id = claimed[0].id;
    let delivered = FeedbackEvent {
        event_id: Some("ev-1".into()),
        ..report(
            Target::Stamp(id),
            FeedbackKind::Delivered,
            Some("ANN@x.org"),
            5,
        )
    };
    let bounce = FeedbackEvent {
        bounce: Some(BounceType::Hard),
        reason: Some("550 5.1.1 no such user".into()),
        event_id: Some("ev-2".into()),
        ..report(
            Target::ProviderId("pid-0".into()),
            FeedbackKind::Bounced,
            Some("bob@x.org"),
            6,
        )
    };
    let recorded = s
        .record_feedback(batch(vec![delivered.clone(), bounce]), t0() + secs(10))
        .await
        .expect("feedback");
    assert_eq!(
        (recorded.applied, recorded.duplicates, recorded.unmatched),
        (2, 0, 0)
    );
    assert_eq!(recorded.suppressed, 1);

    // Late, twice, out of order: a repeat is skipped, a late "delivered"
    // for the bounced recipient is recorded but moves nothing.
    let late = FeedbackEvent {
        event_id: Some("ev-0".into()),
        ..report(
            Target::Stamp(id),
            FeedbackKind::Delivered,
            Some("bob@x.org"),
            4,
        )
    };
    let recorded = s
        .record_feedback(batch(vec![delivered, late]), t0() + secs(11))
        .await
        .expect("feedback");
    assert_eq!((recorded.applied, recorded.duplicates), (1, 1));

    let found = message(s, id).await;
    let delivery = &found.message.delivery;
    assert_eq!(delivery.state, DeliveryState::Bounced);
    assert_eq!(delivery.delivered_at, Some(t0() + secs(5)));
    let states: Vec<(&str, DeliveryState)> = delivery
        .recipients
        .iter()
        .map(|r| (r.address.as_str(), r.state))
        .collect();
    assert_eq!(
        states,
        [
            ("ann@x.org", DeliveryState::Delivered),
            ("bob@x.org", DeliveryState::Bounced)
        ]
    );
    let bob = &delivery.recipients[1];
    assert_eq!(bob.bounce, Some(BounceType::Hard));
    assert_eq!(bob.reason.as_deref(), Some("550 5.1.1 no such user"));
    let kinds = events_of(s, id).await;
    assert_eq!(
        kinds[kinds.len() - 3..],
        [
            EventKind::Delivered,
            EventKind::Bounced,
            EventKind::Delivered
        ]
    );
    let bounced = found
        .events
        .iter()
        .find(|e| e.kind == EventKind::Bounced)
        .expect("a bounced event");
    assert_eq!(bounced.at, t0() + secs(6));
    let detail = bounced.detail.as_ref().expect("detail");
    assert_eq!(detail["recipient"], "bob@x.org");
    assert_eq!(detail["type"], "hard");
    assert_eq!(detail["event_id"], "ev-2");
    assert_eq!(
        suppressed(s, t0() + secs(12)).await,
        [("bob@x.org".to_owned(), "hard_bounce".to_owned())]
    );
}

async fn an_enqueue_to_suppressed_recipients_drops_them_or_is_suppressed_whole(f: &Fixture) {
    let s = f.storage.as_ref();
    let now = t0();
    s.add_suppression(Suppression {
        channel: Channel::Email,
        address: "bob@x.org".into(),
        transport: None,
        reason: "complaint".into(),
        source_stamp: None,
        created_at: now,
        expires_at: None,
    })
    .await
    .expect("add");
    let results = s
        .enqueue_many(
            vec![
                mail(&["Bob <BOB@x.org>"], Some("k-1")),
                mail(&["ann@x.org", "bob@x.org"], None),
            ],
            now,
        )
        .await
        .expect("enqueue");
    assert_eq!(results[0].status, Status::Suppressed);
    assert_eq!(results[0].suppressed, ["bob@x.org"]);
    assert_eq!(results[1].status, Status::Queued);
    assert_eq!(results[1].suppressed, ["bob@x.org"]);

    let whole = message(s, results[0].id).await;
    assert_eq!(whole.message.status, Status::Suppressed);
    assert!(
        whole
            .message
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("bob@x.org (complaint)"))
    );
    let event = whole.events.last().expect("an event");
    assert_eq!(event.kind, EventKind::Suppressed);
    assert_eq!(
        event.detail,
        Some(serde_json::json!({"recipient": "bob@x.org", "reason": "complaint"}))
    );
    // Its key is taken like any message's.
    let again = s
        .enqueue(mail(&["bob@x.org"], Some("k-1")), now)
        .await
        .expect("enqueue");
    assert_eq!((again.id, again.created), (results[0].id, false));

    let part = message(s, results[1].id).await;
    assert_eq!(part.message.payload["to"], serde_json::json!(["ann@x.org"]));
    assert_eq!(
        events_of(s, results[1].id).await.last(),
        Some(&EventKind::Suppressed)
    );
    // Only Ann's message is delivered.
    let claimed = claim(s, 10, now).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, results[1].id);
}

async fn a_report_that_overtakes_its_send_is_kept_and_matched_later(f: &Fixture) {
    let s = f.storage.as_ref();
    let stored = s
        .enqueue(mail(&["ann@x.org"], None), t0())
        .await
        .expect("enqueue");
    let early = report(Target::Stamp(stored.id), FeedbackKind::Delivered, None, 2);
    let stray = report(
        Target::ProviderId("nobody".into()),
        FeedbackKind::Opened,
        None,
        2,
    );
    let recorded = s
        .record_feedback(batch(vec![early, stray]), t0() + secs(2))
        .await
        .expect("feedback");
    assert_eq!((recorded.applied, recorded.unmatched), (0, 2));

    let claimed = claim(s, 1, t0() + secs(3)).await;
    s.record_outcomes(
        vec![outcome(&claimed[0], OutcomeKind::Sent)],
        t0() + secs(4),
    )
    .await
    .expect("sent");
    let matched = s
        .rematch_feedback(t0() + secs(5), 100)
        .await
        .expect("rematch");
    assert_eq!((matched.applied, matched.unmatched), (1, 1));
    let found = message(s, stored.id).await;
    assert_eq!(found.message.delivery.state, DeliveryState::Delivered);
    assert_eq!(
        events_of(s, stored.id).await.last(),
        Some(&EventKind::Delivered)
    );
    // Matching again applies nothing twice; past the keep, the stray goes.
    let again = s
        .rematch_feedback(t0() + secs(6), 100)
        .await
        .expect("rematch");
    assert_eq!((again.applied, again.unmatched), (0, 1));
    let later = s
        .rematch_feedback(t0() + secs(86_400 * 2), 100)
        .await
        .expect("rematch");
    assert_eq!((later.applied, later.unmatched), (0, 0));
}

async fn a_nonce_is_taken_once(f: &Fixture) {
    let s = f.storage.as_ref();
    let claimed = sent(s, vec![mail(&["ann@x.org"], None)]).await;
    let signed = FeedbackBatch {
        nonce: Some("token-1".into()),
        ..batch(vec![report(
            Target::Stamp(claimed[0].id),
            FeedbackKind::Opened,
            None,
            3,
        )])
    };
    let first = s
        .record_feedback(signed.clone(), t0() + secs(3))
        .await
        .expect("feedback");
    assert!(!first.replay);
    assert_eq!(first.applied, 1);
    let replayed = s
        .record_feedback(signed, t0() + secs(4))
        .await
        .expect("feedback");
    assert!(replayed.replay);
    assert_eq!(replayed.applied, 0);
}

async fn messages_are_found_by_recipient_and_by_delivery_state(f: &Fixture) {
    let s = f.storage.as_ref();
    let claimed = sent(
        s,
        vec![
            mail(&["ann@x.org"], None),
            mail(&["Bob <bob@x.org>", "ann@x.org"], None),
        ],
    )
    .await;
    let queued = s
        .enqueue(mail(&["ann@x.org"], None), t0() + secs(2))
        .await
        .expect("enqueue");
    s.record_feedback(
        batch(vec![report(
            Target::Stamp(claimed[0].id),
            FeedbackKind::Delivered,
            None,
            3,
        )]),
        t0() + secs(3),
    )
    .await
    .expect("feedback");
    let list = |filter| listed_ids(s, filter);
    let mut ann = vec![queued.id, claimed[0].id, claimed[1].id];
    ann.sort();
    ann.reverse();
    let to_ann = MessageFilter {
        recipient: Some("ann@x.org".into()),
        ..MessageFilter::default()
    };
    assert_eq!(list(to_ann.clone()).await, ann);
    let to_bob = MessageFilter {
        recipient: Some("bob@x.org".into()),
        ..MessageFilter::default()
    };
    assert_eq!(list(to_bob).await, [claimed[1].id]);
    let delivered = MessageFilter {
        delivery: Some(DeliveryState::Delivered),
        ..to_ann.clone()
    };
    assert_eq!(list(delivered).await, [claimed[0].id]);
    let unknown = MessageFilter {
        delivery: Some(DeliveryState::Unknown),
        ..to_ann
    };
    let mut rest = vec![queued.id, claimed[1].id];
    rest.sort();
    rest.reverse();
    assert_eq!(list(unknown).await, rest);
}

async fn soft_bounces_suppress_at_the_limit(f: &Fixture) {
    let s = f.storage.as_ref();
    let claimed = sent(s, (0..3).map(|_| mail(&["ann@x.org"], None)).collect()).await;
    for (i, m) in claimed.iter().enumerate() {
        let soft = FeedbackEvent {
            bounce: Some(BounceType::Soft),
            ..report(Target::Stamp(m.id), FeedbackKind::Bounced, None, 10)
        };
        s.record_feedback(batch(vec![soft]), t0() + secs(10))
            .await
            .expect("feedback");
        let listed = suppressed(s, t0() + secs(11)).await;
        if i < 2 {
            assert!(listed.is_empty(), "{i} soft bounces suppress nothing");
        } else {
            assert_eq!(listed, [("ann@x.org".to_owned(), "soft_bounce".to_owned())]);
        }
    }
    let found = message(s, claimed[0].id).await;
    assert_eq!(found.message.delivery.state, DeliveryState::Bounced);
    assert_eq!(found.message.delivery.bounce, Some(BounceType::Soft));
}

async fn a_gone_recipient_is_suppressed_by_its_dead_letter(f: &Fixture) {
    let s = f.storage.as_ref();
    s.enqueue(mail(&["gone@x.org"], None), t0())
        .await
        .expect("enqueue");
    let claimed = claim(s, 1, t0()).await;
    let gone = Outcome {
        recipient_gone: Some(RecipientGone::Invalid),
        ..failed(&claimed[0], None)
    };
    s.record_outcomes(vec![gone], t0() + secs(1))
        .await
        .expect("record");
    assert_eq!(
        suppressed(s, t0() + secs(2)).await,
        [("gone@x.org".to_owned(), "recipient_invalid".to_owned())]
    );
    let listed = s
        .list_suppressions(&SuppressionFilter::default(), None, 10, t0() + secs(2))
        .await
        .expect("list");
    assert_eq!(listed[0].source_stamp, Some(claimed[0].id));
}

async fn the_suppression_list_is_listed_added_to_and_removed_from(f: &Fixture) {
    let s = f.storage.as_ref();
    let now = t0();
    let entry = |address: &str, reason: &str, expires: Option<i64>| Suppression {
        channel: Channel::Email,
        address: address.into(),
        transport: None,
        reason: reason.into(),
        source_stamp: None,
        created_at: now,
        expires_at: expires.map(|e| now + secs(e)),
    };
    for (i, address) in ["a@x.org", "b@x.org", "c@x.org"].iter().enumerate() {
        s.add_suppression(entry(address, "manual", None))
            .await
            .expect("add");
        let _ = i;
    }
    s.add_suppression(entry("old@x.org", "manual", Some(10)))
        .await
        .expect("add");
    s.add_suppression(Suppression {
        channel: Channel::Sms,
        transport: Some("sms".into()),
        ..entry("+14155550100", "recipient_unsubscribed", None)
    })
    .await
    .expect("add");
    let page = s
        .list_suppressions(&SuppressionFilter::default(), None, 2, now + secs(20))
        .await
        .expect("list");
    let addresses: Vec<&str> = page.iter().map(|e| e.address.as_str()).collect();
    assert_eq!(addresses, ["a@x.org", "b@x.org"]);
    let last = page.last().expect("a page");
    let cursor = (
        last.channel.as_str().to_owned(),
        last.address.clone(),
        last.scope().to_owned(),
    );
    let rest = s
        .list_suppressions(
            &SuppressionFilter::default(),
            Some(cursor),
            10,
            now + secs(20),
        )
        .await
        .expect("list");
    let addresses: Vec<&str> = rest.iter().map(|e| e.address.as_str()).collect();
    // The expired entry is not shown.
    assert_eq!(addresses, ["c@x.org", "+14155550100"]);
    assert_eq!(rest[1].transport.as_deref(), Some("sms"));
    let sms = s
        .list_suppressions(
            &SuppressionFilter {
                channel: Some(Channel::Sms),
                ..SuppressionFilter::default()
            },
            None,
            10,
            now,
        )
        .await
        .expect("list");
    assert_eq!(sms.len(), 1);
    assert_eq!(
        s.remove_suppression(Channel::Email, "b@x.org")
            .await
            .expect("remove"),
        1
    );
    assert_eq!(
        s.remove_suppression(Channel::Email, "b@x.org")
            .await
            .expect("remove"),
        0
    );
    // A message to an expired entry's address goes out.
    let later = s
        .enqueue(mail(&["old@x.org"], None), now + secs(20))
        .await
        .expect("enqueue");
    assert_eq!(later.status, Status::Queued);
}

async fn reports_are_rolled_up_by_minute_of_receipt_with_bounce_reasons_and_domains(f: &Fixture) {
    let s = f.storage.as_ref();
    let receipt = NewMessage {
        category: Some("receipts".into()),
        ..mail(&["ann@x.org", "bob@Y.org"], None)
    };
    let id = sent(s, vec![receipt]).await[0].id;
    let on = |kind, recipient: &str, event: &str| FeedbackEvent {
        event_id: Some(event.into()),
        ..report(Target::Stamp(id), kind, Some(recipient), 5)
    };
    let hard = FeedbackEvent {
        bounce: Some(BounceType::Hard),
        reason: Some("550 5.1.1 <bob@y.org> unknown".into()),
        ..on(FeedbackKind::Bounced, "bob@y.org", "e2")
    };
    let soft = FeedbackEvent {
        bounce: Some(BounceType::Soft),
        reason: Some("452 mailbox full".into()),
        ..on(FeedbackKind::Bounced, "ann@x.org", "e3")
    };
    let events = vec![
        on(FeedbackKind::Delivered, "ann@x.org", "e1"),
        hard.clone(),
        soft,
        on(FeedbackKind::Complained, "ann@x.org", "e4"),
        on(FeedbackKind::Opened, "ann@x.org", "e5"),
        on(FeedbackKind::Clicked, "ann@x.org", "e6"),
        on(FeedbackKind::Unsubscribed, "ann@x.org", "e7"),
        on(FeedbackKind::Rejected, "ann@x.org", "e8"),
    ];
    // Received in the second minute; a repeat later counts nothing.
    s.record_feedback(batch(events), t0() + secs(70))
        .await
        .expect("feedback");
    s.record_feedback(batch(vec![hard]), t0() + secs(130))
        .await
        .expect("feedback");

    let figures = |m: &herald::storage::MinuteMetrics| {
        (
            m.sent,
            m.delivered,
            m.bounced_hard,
            m.bounced_soft,
            m.complained,
            m.opened,
            m.clicked,
            m.unsubscribed,
        )
    };
    let totals = s
        .rollup_totals(t0(), t0() + secs(3600))
        .await
        .expect("totals");
    let receipts: Vec<_> = totals
        .iter()
        .map(|m| {
            (
                m.transport.as_str(),
                m.channel.as_str(),
                m.category.as_str(),
                figures(m),
            )
        })
        .collect();
    assert_eq!(
        receipts,
        [("mail", "email", "receipts", (1, 1, 1, 1, 1, 1, 1, 1))]
    );
    let minutes = s
        .minute_metrics(t0(), t0() + secs(3600))
        .await
        .expect("minutes");
    let by_minute: Vec<_> = minutes.iter().map(|m| (m.minute, figures(m))).collect();
    assert_eq!(
        by_minute,
        [
            (t0(), (1, 0, 0, 0, 0, 0, 0, 0)),
            (t0() + secs(60), (0, 1, 1, 1, 1, 1, 1, 1)),
        ]
    );

    let bounces = |rows: Vec<herald::storage::BounceCount>| -> Vec<_> {
        rows.into_iter()
            .map(|b| (b.category, b.bounce_type, b.reason, b.domain, b.bounces))
            .collect()
    };
    let expected = [
        (
            "receipts".to_owned(),
            "hard".to_owned(),
            "# #.#.# <address> unknown".to_owned(),
            "y.org".to_owned(),
            1,
        ),
        (
            "receipts".to_owned(),
            "soft".to_owned(),
            "# mailbox full".to_owned(),
            "x.org".to_owned(),
            1,
        ),
    ];
    let read = s
        .bounce_counts(t0(), t0() + secs(3600))
        .await
        .expect("bounces");
    assert_eq!(bounces(read), expected);

    // Sealed into hourly rows and compacted, they read the same.
    s.compact_rollups(t0() + secs(7200), t0() + secs(7200), t0())
        .await
        .expect("compact");
    let read = s
        .bounce_counts(t0(), t0() + secs(3600))
        .await
        .expect("bounces");
    assert_eq!(bounces(read), expected);
    let totals = s
        .rollup_totals(t0(), t0() + secs(3600))
        .await
        .expect("totals");
    assert_eq!(
        totals.iter().map(figures).collect::<Vec<_>>(),
        [(1, 1, 1, 1, 1, 1, 1, 1)]
    );
    // Purged with the rest.
    s.compact_rollups(t0() + secs(7200), t0() + secs(7200), t0() + secs(3600))
        .await
        .expect("purge");
    let read = s
        .bounce_counts(t0(), t0() + secs(3600))
        .await
        .expect("bounces");
    assert!(read.is_empty());
}

async fn entries_scoped_to_a_transport_hold_for_it_alone(f: &Fixture) {
    // The same store, opened with `[suppression] scope = "transport"`.
    let options = herald::storage::StorageOptions {
        suppression: herald::storage::SuppressionPolicy {
            per_transport: true,
            ..herald::storage::SuppressionPolicy::default()
        },
        ..f.options.clone()
    };
    let s = herald::storage::open(&options).await.expect("open");
    let s = s.as_ref();
    let claimed = sent(s, vec![mail(&["eve@x.org"], None)]).await;
    let bounce = FeedbackEvent {
        bounce: Some(BounceType::Hard),
        ..report(Target::Stamp(claimed[0].id), FeedbackKind::Bounced, None, 3)
    };
    s.record_feedback(batch(vec![bounce]), t0() + secs(3))
        .await
        .expect("feedback");
    let listed = s
        .list_suppressions(&SuppressionFilter::default(), None, 10, t0() + secs(4))
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].transport.as_deref(), Some("mail"));
    let through_mail = s
        .enqueue(mail(&["eve@x.org"], None), t0() + secs(5))
        .await
        .expect("enqueue");
    assert_eq!(through_mail.status, Status::Suppressed);
    let through_other = s
        .enqueue(mail_through("other", &["eve@x.org"], None), t0() + secs(5))
        .await
        .expect("enqueue");
    assert_eq!(through_other.status, Status::Queued);
}
