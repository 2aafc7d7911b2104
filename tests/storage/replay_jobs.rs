//! Replay jobs: stored and read back, taken by one node at a time,
//! advanced only by their owner, taken over once their owner falls
//! silent; and the filter a job replays by, which takes only what was
//! dead when the job began.

use herald::domain::Status;
use herald::storage::{MessageFilter, ReplayJob, ReplayJobState, Storage};

use super::{LEASE, failed};
use crate::common::{self, Email, Fixture, emails, secs, t0};

conformance!(
    a_replay_job_is_run_by_one_node_and_taken_over_when_it_falls_silent,
    a_replay_job_takes_only_what_was_dead_when_it_began,
);

/// Dead-letters every due message of `transport` at `at`.
async fn kill_all(s: &dyn Storage, transport: &str, at: chrono::DateTime<chrono::Utc>) {
    let claimed = s
        .claim_due(transport, common::NODE, 100, LEASE, at)
        .await
        .expect("claim");
    let outcomes = claimed.iter().map(|m| failed(m, None)).collect();
    s.record_outcomes(outcomes, at).await.expect("record");
}

async fn a_replay_job_is_run_by_one_node_and_taken_over_when_it_falls_silent(f: &Fixture) {
    let s = f.storage.as_ref();
    let of_mail = MessageFilter {
        transport: Some("mail".into()),
        category: Some("receipt".into()),
        ..MessageFilter::default()
    };
    let job = ReplayJob::new(&of_mail, 3, t0());
    s.create_replay_job(&job).await.expect("create");
    assert_eq!(s.replay_job(job.id).await.expect("read"), Some(job.clone()));
    let unknown = herald::domain::Stamp::generate();
    assert_eq!(s.replay_job(unknown).await.expect("read"), None);

    let long_ago = t0() - secs(60);
    let taken = s
        .take_replay_job("a", t0() + secs(1), long_ago)
        .await
        .expect("take")
        .expect("an unowned job is taken");
    assert_eq!(taken.owner.as_deref(), Some("a"));
    assert_eq!(taken.updated_at, t0() + secs(1));
    assert_eq!(
        s.take_replay_job("b", t0() + secs(2), long_ago)
            .await
            .expect("take"),
        None,
        "a job its owner advances is not taken"
    );
    assert!(
        !s.advance_replay_job(job.id, "b", 5, ReplayJobState::Running, None, t0())
            .await
            .expect("advance"),
        "only the owner advances a job"
    );
    assert!(
        s.advance_replay_job(
            job.id,
            "a",
            2,
            ReplayJobState::Running,
            None,
            t0() + secs(3)
        )
        .await
        .expect("advance")
    );
    let advanced = s.replay_job(job.id).await.expect("read").expect("stored");
    assert_eq!(
        (advanced.state, advanced.replayed, advanced.updated_at),
        (ReplayJobState::Running, 2, t0() + secs(3))
    );
    assert_eq!(advanced.finished_at, None);

    // `a` falls silent: its job is taken over, and `a` can no longer
    // advance it.
    let taken = s
        .take_replay_job("b", t0() + secs(20), t0() + secs(10))
        .await
        .expect("take")
        .expect("a silent owner's job is taken over");
    assert_eq!((taken.owner.as_deref(), taken.replayed), (Some("b"), 2));
    assert!(
        !s.advance_replay_job(
            job.id,
            "a",
            1,
            ReplayJobState::Running,
            None,
            t0() + secs(21)
        )
        .await
        .expect("advance")
    );
    assert!(
        s.advance_replay_job(job.id, "b", 1, ReplayJobState::Done, None, t0() + secs(22))
            .await
            .expect("advance")
    );
    let done = s.replay_job(job.id).await.expect("read").expect("stored");
    assert_eq!(
        (done.state, done.replayed, done.finished_at),
        (ReplayJobState::Done, 3, Some(t0() + secs(22)))
    );
    assert_eq!(
        s.take_replay_job("c", t0() + secs(99), t0() + secs(99))
            .await
            .expect("take"),
        None,
        "a finished job is never taken again"
    );

    let second = ReplayJob::new(&MessageFilter::default(), 0, t0() + secs(30));
    s.create_replay_job(&second).await.expect("create");
    let failing = s
        .take_replay_job("b", t0() + secs(31), long_ago)
        .await
        .expect("take")
        .expect("taken");
    assert_eq!(failing.id, second.id);
    s.advance_replay_job(
        second.id,
        "b",
        0,
        ReplayJobState::Failed,
        Some("broken".into()),
        t0() + secs(32),
    )
    .await
    .expect("advance");

    let reopened = f.reopen().await;
    let listed = reopened.list_replay_jobs(10).await.expect("list");
    let summary: Vec<_> = listed
        .iter()
        .map(|j| (j.id, j.state, j.error.as_deref()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (second.id, ReplayJobState::Failed, Some("broken")),
            (job.id, ReplayJobState::Done, None),
        ],
        "newest first, across a restart"
    );
    assert_eq!(listed[1].transport.as_deref(), Some("mail"));
    assert_eq!(listed[1].category.as_deref(), Some("receipt"));
    assert_eq!(reopened.list_replay_jobs(1).await.expect("list").len(), 1);
}

async fn a_replay_job_takes_only_what_was_dead_when_it_began(f: &Fixture) {
    let s = f.storage.as_ref();
    let early = emails(3, t0());
    s.enqueue_many(early.clone(), t0()).await.expect("enqueue");
    let other = Email {
        transport: "other",
        ..Email::default()
    }
    .build(t0());
    s.enqueue(other.clone(), t0()).await.expect("enqueue");
    kill_all(s, "mail", t0()).await;
    kill_all(s, "other", t0()).await;

    let of_mail = MessageFilter {
        transport: Some("mail".into()),
        ..MessageFilter::default()
    };
    let job = ReplayJob::new(&of_mail, 0, t0() + secs(1));
    let late = Email::default().build(t0() + secs(2));
    s.enqueue(late.clone(), t0() + secs(2))
        .await
        .expect("enqueue");
    kill_all(s, "mail", t0() + secs(2)).await;

    let counted = s.count_messages(&job.dead_letters()).await.expect("count");
    assert_eq!(counted.count, 3);
    let replayed = s
        .replay_dead(&job.dead_letters(), 1000, t0() + secs(3))
        .await
        .expect("replay");
    let mut expected: Vec<_> = early.iter().map(|m| m.id).collect();
    expected.sort();
    let mut got = replayed.clone();
    got.sort();
    assert_eq!(got, expected);

    // The replayed die again: after the job began, so it leaves them be.
    kill_all(s, "mail", t0() + secs(4)).await;
    assert!(
        s.replay_dead(&job.dead_letters(), 1000, t0() + secs(5))
            .await
            .expect("replay")
            .is_empty()
    );
    for id in [late.id, other.id, early[0].id] {
        let found = s.get_message(id).await.expect("get").expect("stored");
        assert_eq!(found.message.status, Status::Dead);
    }
}
