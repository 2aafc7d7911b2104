//! After the load: wait until none of the run's messages is queued or
//! being delivered, read them all back through the API, and check them
//! against what the API accepted: each accepted id is stored once, ended
//! `sent`, and has one `queued` event, then one event per attempt, the
//! last `sent`, each with the attempt's start. Every message is checked,
//! not a sample.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use super::api::{self, Api, EventItem, ListedMessage, MessageDetail, PAGE_SIZE};
use super::load::{Loaded, Plan, RUN_KEY, SEQ_KEY};
use super::report::Verification;
use super::{BenchError, Interrupts};

/// How often the queue is probed for the run's undelivered messages. The
/// probes are single-row index reads; the figures come from the store's
/// timestamps, so this only decides when verification starts.
const POLL: Duration = Duration::from_millis(50);

/// Messages listed before the run started are read past by this much
/// before paging stops, so that a server clock behind the client's
/// cannot hide one of the run's messages.
const CLOCK_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Most problems quoted in the report; the counts cover them all.
const EXAMPLES: usize = 10;

/// The run's messages as stored.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    pub messages: Vec<ListedMessage>,
    /// Ids that paging returned more than once.
    pub listed_twice: u64,
    /// Why waiting for delivery stopped before every message was done.
    pub gave_up: Option<String>,
}

fn is_ours(message: &ListedMessage, run_id: &str) -> bool {
    message.metadata[RUN_KEY].as_str() == Some(run_id)
}

fn spinner(message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// True while any of the run's messages is queued or processing. Reads
/// one row per status when the run's own messages are the newest (the
/// in-process server); pages on past other traffic on a shared server.
async fn any_pending(api: &Api, plan: &Plan) -> Result<bool, BenchError> {
    let transport = api::encode(&plan.transport);
    // `processing` first: a message that fails and is queued again moves
    // the other way, and the re-check after collection catches the rest.
    for status in ["processing", "queued"] {
        let query = format!("status={status}&transport={transport}");
        let mut limit = 1;
        let mut after: Option<String> = None;
        loop {
            let page = api.list(&query, limit, after.as_deref()).await?;
            if page.items.iter().any(|m| is_ours(m, &plan.run_id)) {
                return Ok(true);
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
            limit = PAGE_SIZE;
        }
    }
    Ok(false)
}

/// Waits until the newest accepted message has left the queue. Claims
/// go oldest first, so until then nearly all the run is still pending;
/// and a read by id costs the server next to nothing, where a status
/// probe on a table the planner has no statistics for yet (a fresh store)
/// scans every queued row, which would load the server being measured.
/// Returns why it gave up, if it did.
async fn wait_for_newest(
    api: &Api,
    loaded: &Loaded,
    deadline: Instant,
    interrupts: &Interrupts,
) -> Result<Option<String>, BenchError> {
    let Some(newest) = loaded.accepted.iter().map(|(_, id)| id).max() else {
        return Ok(None);
    };
    let path = format!("/api/messages/{newest}");
    loop {
        let message: MessageDetail = api.get_json(&path).await?;
        if message.status != "queued" && message.status != "processing" {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            return Ok(Some(format!("{newest} still {}", message.status)));
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = interrupts.reached(2) => {
                return Ok(Some("interrupted while waiting for delivery".into()));
            }
        }
    }
}

/// Every message of the run, newest first, paging
/// `GET /api/messages?transport=` back to just before the run began.
async fn collect(
    api: &Api,
    plan: &Plan,
    cutoff: DateTime<Utc>,
) -> Result<(Vec<ListedMessage>, u64), BenchError> {
    let query = format!("transport={}", api::encode(&plan.transport));
    let mut ours = Vec::new();
    let mut seen = HashSet::new();
    let mut listed_twice = 0;
    let mut after: Option<String> = None;
    loop {
        let page = api.list(&query, PAGE_SIZE, after.as_deref()).await?;
        let past_start = page.items.last().is_some_and(|m| m.created_at < cutoff);
        for message in page.items {
            if is_ours(&message, &plan.run_id) {
                if seen.insert(message.id.clone()) {
                    ours.push(message);
                } else {
                    listed_twice += 1;
                }
            }
        }
        match page.next {
            Some(next) if !past_start => after = Some(next),
            _ => break,
        }
    }
    Ok((ours, listed_twice))
}

/// The instant before which no message of the run can have been created.
fn cutoff(loaded: &Loaded, started: DateTime<Utc>) -> DateTime<Utc> {
    let first_accepted = loaded
        .accepted
        .iter()
        .filter_map(|(_, id)| ulid::Ulid::from_string(id).ok())
        .map(|id| id.timestamp_ms())
        .min()
        .and_then(|ms| i64::try_from(ms).ok())
        .and_then(DateTime::from_timestamp_millis);
    first_accepted.map_or(started, |at| at.min(started)) - CLOCK_MARGIN
}

/// Waits until none of the run's messages is queued or processing (or
/// `timeout`, or a second Ctrl-C), then reads them all back.
pub(crate) async fn wait_and_collect(
    api: &Api,
    plan: &Plan,
    loaded: &Loaded,
    started: DateTime<Utc>,
    timeout: Duration,
    interrupts: &Interrupts,
) -> Result<Stored, BenchError> {
    let deadline = Instant::now() + timeout;
    let cutoff = cutoff(loaded, started);
    let bar = spinner("waiting for delivery (Ctrl-C again stops waiting)");
    let mut gave_up = wait_for_newest(api, loaded, deadline, interrupts).await?;
    bar.finish_and_clear();
    loop {
        let bar = spinner("waiting for delivery (Ctrl-C again stops waiting)");
        while gave_up.is_none() && any_pending(api, plan).await? {
            if Instant::now() >= deadline {
                gave_up = Some(format!("not delivered within {}s", timeout.as_secs()));
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = interrupts.reached(2) => {
                    gave_up = Some("interrupted while waiting for delivery".into());
                }
            }
        }
        bar.set_message("reading the run back");
        let (messages, listed_twice) = collect(api, plan, cutoff).await?;
        bar.finish_and_clear();
        let settled = messages
            .iter()
            .all(|m| m.status != "queued" && m.status != "processing");
        // A message can slip between the two status probes (claimed
        // between them, or queued again after a failure): wait again.
        if settled || gave_up.is_some() {
            return Ok(Stored {
                messages,
                listed_twice,
                gave_up,
            });
        }
    }
}

/// What reading each sent message's events found.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    pub checked: u64,
    /// id -> what is wrong with its events.
    pub problems: HashMap<String, String>,
}

/// The kinds of event that end a claim, each carrying the attempt's start.
const CLAIM_ENDINGS: [&str; 4] = ["sent", "attempt_failed", "deferred", "lease_expired"];

/// What is wrong with one message's detail, if anything. The rule: one
/// `queued` event first, then one event per attempt that ends it (`sent`,
/// `attempt_failed`, `lease_expired`; attempts 1, 2, ... in order, the
/// last one `sent`), each with its start. A claim writes no event; a
/// `deferred` claim handed back costs no attempt, and a group member passed
/// over within an attempt (`attempt_failed` with `detail.group`) is not
/// the attempt's end.
fn event_problem(detail: &MessageDetail) -> Option<String> {
    let events = &detail.events;
    let count = |kind: &str| events.iter().filter(|e| e.kind == kind).count();
    let (queued, claimed, sent) = (count("queued"), count("claimed"), count("sent"));
    let passed_over = |e: &EventItem| {
        e.kind == "attempt_failed" && e.detail.as_ref().is_some_and(|d| d.get("group").is_some())
    };
    let attempts: Vec<&EventItem> = events
        .iter()
        .filter(|e| ["sent", "attempt_failed", "lease_expired"].contains(&e.kind.as_str()))
        .filter(|e| !passed_over(e))
        .collect();
    let unstarted = events.iter().find(|e| {
        CLAIM_ENDINGS.contains(&e.kind.as_str()) && e.started_at.is_none_or(|s| s > e.at)
    });
    if detail.status != "sent" {
        Some(format!("status {} on reading its events", detail.status))
    } else if sent != 1 {
        Some(format!("{sent} `sent` events"))
    } else if queued != 1 || events.first().is_none_or(|e| e.kind != "queued") {
        Some(format!("{queued} `queued` events, not first"))
    } else if claimed > 0 {
        Some(format!("{claimed} `claimed` events (a claim writes none)"))
    } else if let Some((n, e)) = (1..).zip(&attempts).find(|(n, e)| e.attempt != *n) {
        Some(format!(
            "not one event per attempt: expected attempt {n}'s end, found `{}` of attempt {}",
            e.kind, e.attempt
        ))
    } else if attempts.last().is_none_or(|e| e.kind != "sent") {
        Some("`sent` does not end the last attempt".into())
    } else if let Some(e) = unstarted {
        Some(format!(
            "`{}` of attempt {} without a start at or before it",
            e.kind, e.attempt
        ))
    } else if detail.sent_at.is_none() {
        Some("sent without `sent_at`".into())
    } else {
        None
    }
}

/// Reads every sent message of the run with its events
/// (`GET /api/messages/{id}`, `concurrency` at a time).
pub(crate) async fn check_events(
    api: &Api,
    stored: &Stored,
    concurrency: usize,
) -> Result<Checked, BenchError> {
    let ids: Vec<&str> = stored
        .messages
        .iter()
        .filter(|m| m.status == "sent")
        .map(|m| m.id.as_str())
        .collect();
    let bar = ProgressBar::new(ids.len() as u64);
    if let Ok(style) =
        ProgressStyle::with_template("verify [{bar:30}] {pos}/{len} messages' events, {per_sec}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut checked = Checked::default();
    let mut reads = futures::stream::iter(ids)
        .map(|id| async move {
            let detail = api
                .get_json::<MessageDetail>(&format!("/api/messages/{id}"))
                .await;
            (id, detail)
        })
        .buffer_unordered(concurrency.clamp(4, 64));
    while let Some((id, detail)) = reads.next().await {
        checked.checked += 1;
        bar.inc(1);
        let problem = match detail {
            Ok(detail) => event_problem(&detail),
            Err(err) => Some(format!("not readable: {err}")),
        };
        if let Some(problem) = problem {
            checked.problems.insert(id.to_owned(), problem);
        }
    }
    bar.finish_and_clear();
    Ok(checked)
}

/// Compares what the API accepted with what the store holds.
pub(crate) fn compare(
    requested: u64,
    loaded: &Loaded,
    stored: &Stored,
    checked: &Checked,
) -> Verification {
    let mut examples = Vec::new();
    let mut note = |text: String| {
        if examples.len() < EXAMPLES {
            examples.push(text);
        }
    };
    let by_id: HashMap<&str, &ListedMessage> =
        stored.messages.iter().map(|m| (m.id.as_str(), m)).collect();

    // The messages that should exist: every accepted one, and any stored
    // for a request whose answer never came back (the client cannot know
    // whether the server stored it).
    let mut expected: Vec<&str> = Vec::new();
    let mut lost = 0;
    let mut seqs_claimed: HashSet<u64> = HashSet::new();
    let mut accepted_ids: HashSet<&str> = HashSet::new();
    for (seq, id) in &loaded.accepted {
        seqs_claimed.insert(*seq);
        if !accepted_ids.insert(id.as_str()) {
            lost += 1;
            note(format!(
                "message #{seq} was answered with id {id}, already given to another"
            ));
        } else if by_id.contains_key(id.as_str()) {
            expected.push(id);
        } else {
            lost += 1;
            note(format!(
                "message #{seq} ({id}) was accepted but is not in the store"
            ));
        }
    }
    let unanswered: HashSet<u64> = loaded.unanswered.iter().copied().collect();
    let mut duplicates = stored.listed_twice;
    if stored.listed_twice > 0 {
        note(format!("{} ids were listed twice", stored.listed_twice));
    }
    let mut unanswered_stored = 0;
    for message in &stored.messages {
        if accepted_ids.contains(message.id.as_str()) {
            continue;
        }
        let seq = message.metadata[SEQ_KEY].as_u64();
        match seq {
            Some(seq) if unanswered.contains(&seq) && seqs_claimed.insert(seq) => {
                unanswered_stored += 1;
                expected.push(&message.id);
            }
            _ => {
                duplicates += 1;
                note(format!(
                    "{} (message #{}) is stored but was never accepted as a new message",
                    message.id,
                    seq.map_or_else(|| "?".to_owned(), |s| s.to_string())
                ));
            }
        }
    }

    let mut not_sent: BTreeMap<String, u64> = BTreeMap::new();
    let mut sent = 0;
    for id in &expected {
        let Some(message) = by_id.get(id) else {
            continue;
        };
        if message.status != "sent" {
            *not_sent.entry(message.status.clone()).or_default() += 1;
            note(format!("{id} ended `{}`", message.status));
        } else if let Some(problem) = checked.problems.get(*id) {
            note(format!("{id}: {problem}"));
        } else {
            sent += 1;
        }
    }
    let event_problems = checked.problems.len() as u64;
    let enqueued = loaded.accepted.len() as u64;
    let passed = lost == 0
        && duplicates == 0
        && not_sent.is_empty()
        && event_problems == 0
        && sent == enqueued + unanswered_stored;
    Verification {
        requested,
        enqueued,
        stored: stored.messages.len() as u64,
        sent,
        lost,
        duplicates,
        not_sent,
        events_checked: checked.checked,
        event_problems,
        unanswered_stored,
        gave_up: stored.gave_up.clone(),
        examples,
        passed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    fn listed(id: &str, seq: u64, status: &str) -> ListedMessage {
        ListedMessage {
            id: id.into(),
            status: status.into(),
            metadata: serde_json::json!({ RUN_KEY: "run", SEQ_KEY: seq }),
            created_at: t(0),
            sent_at: (status == "sent").then(|| t(5)),
        }
    }

    fn loaded(accepted: &[(u64, &str)]) -> Loaded {
        Loaded {
            accepted: accepted
                .iter()
                .map(|(s, id)| (*s, id.to_string()))
                .collect(),
            ..Loaded::default()
        }
    }

    fn stored(messages: Vec<ListedMessage>) -> Stored {
        Stored {
            messages,
            ..Stored::default()
        }
    }

    #[test]
    fn a_clean_run_passes() {
        let v = compare(
            2,
            &loaded(&[(0, "a"), (1, "b")]),
            &stored(vec![listed("b", 1, "sent"), listed("a", 0, "sent")]),
            &Checked::default(),
        );
        assert!(v.passed, "{v:?}");
        assert_eq!((v.enqueued, v.sent, v.lost, v.duplicates), (2, 2, 0, 0));
    }

    #[test]
    fn an_accepted_message_missing_from_the_store_is_lost() {
        let v = compare(
            2,
            &loaded(&[(0, "a"), (1, "b")]),
            &stored(vec![listed("a", 0, "sent")]),
            &Checked::default(),
        );
        assert!(!v.passed);
        assert_eq!((v.lost, v.sent), (1, 1));
        assert!(
            v.examples[0].contains("not in the store"),
            "{:?}",
            v.examples
        );
    }

    #[test]
    fn a_second_stored_copy_is_a_duplicate() {
        let v = compare(
            1,
            &loaded(&[(0, "a")]),
            &stored(vec![listed("a", 0, "sent"), listed("a2", 0, "sent")]),
            &Checked::default(),
        );
        assert!(!v.passed);
        assert_eq!(v.duplicates, 1);
    }

    #[test]
    fn a_message_stored_for_an_unanswered_request_is_not_a_duplicate() {
        let mut loaded = loaded(&[(0, "a")]);
        loaded.unanswered = vec![1];
        let v = compare(
            2,
            &loaded,
            &stored(vec![listed("a", 0, "sent"), listed("b", 1, "sent")]),
            &Checked::default(),
        );
        assert!(v.passed, "{v:?}");
        assert_eq!((v.duplicates, v.unanswered_stored, v.sent), (0, 1, 2));
    }

    #[test]
    fn undelivered_and_badly_tracked_messages_fail_the_run() {
        let checked = Checked {
            checked: 1,
            problems: HashMap::from([("a".to_string(), "2 `sent` events".to_string())]),
        };
        let v = compare(
            2,
            &loaded(&[(0, "a"), (1, "b")]),
            &stored(vec![listed("a", 0, "sent"), listed("b", 1, "dead")]),
            &checked,
        );
        assert!(!v.passed);
        assert_eq!(v.not_sent.get("dead"), Some(&1));
        assert_eq!((v.event_problems, v.sent), (1, 0));
    }

    /// An event of `kind` for `attempt` at `at` ms, started at `started` ms.
    fn event(kind: &str, attempt: u32, at: i64, started: Option<i64>) -> EventItem {
        EventItem {
            kind: kind.into(),
            at: t(at),
            attempt,
            started_at: started.map(t),
            detail: None,
        }
    }

    fn sent_with(events: Vec<EventItem>) -> MessageDetail {
        MessageDetail {
            status: "sent".into(),
            sent_at: Some(t(5)),
            events,
        }
    }

    #[test]
    fn events_must_show_queued_then_one_event_per_attempt() {
        let queued = || event("queued", 0, 0, None);
        let sent = |attempt, at| event("sent", attempt, at, Some(at - 2));
        assert_eq!(event_problem(&sent_with(vec![queued(), sent(1, 5)])), None);
        let retried = vec![
            queued(),
            event("attempt_failed", 1, 3, Some(1)),
            event("retry_scheduled", 1, 3, None),
            event("deferred", 1, 4, Some(4)),
            event("lease_expired", 2, 9, Some(5)),
            sent(3, 12),
        ];
        assert_eq!(event_problem(&sent_with(retried)), None);
        let mut member = event("attempt_failed", 1, 5, Some(3));
        member.detail = Some(serde_json::json!({"group": "mail", "member": "primary"}));
        assert_eq!(
            event_problem(&sent_with(vec![queued(), member, sent(1, 5)])),
            None,
            "a member passed over within the attempt does not end it"
        );

        for (why, events) in [
            ("two sent", vec![queued(), sent(1, 5), sent(1, 6)]),
            (
                "no sent",
                vec![queued(), event("attempt_failed", 1, 5, Some(3))],
            ),
            ("no queued", vec![sent(1, 5)]),
            ("queued not first", vec![sent(1, 5), queued()]),
            (
                "a claimed row",
                vec![queued(), event("claimed", 1, 3, None), sent(1, 5)],
            ),
            ("attempt 1 missing", vec![queued(), sent(2, 5)]),
            (
                "attempt 1 ended twice",
                vec![
                    queued(),
                    event("lease_expired", 1, 3, Some(1)),
                    event("attempt_failed", 1, 4, Some(1)),
                    sent(2, 5),
                ],
            ),
            (
                "an attempt after sent",
                vec![queued(), sent(1, 5), event("lease_expired", 2, 9, Some(6))],
            ),
            (
                "sent without a start",
                vec![queued(), event("sent", 1, 5, None)],
            ),
            (
                "sent started after it",
                vec![queued(), event("sent", 1, 5, Some(6))],
            ),
            (
                "a deferral without a start",
                vec![queued(), event("deferred", 0, 2, None), sent(1, 5)],
            ),
        ] {
            assert!(event_problem(&sent_with(events)).is_some(), "{why}");
        }
        let mut unsent = sent_with(vec![queued(), sent(1, 5)]);
        unsent.sent_at = None;
        assert!(event_problem(&unsent).is_some(), "sent without sent_at");
    }

    #[test]
    fn paging_stops_a_margin_before_the_first_accepted_id() {
        let id = ulid::Ulid::from_parts(1_800_000_000_000, 7).to_string();
        let cut = cutoff(&loaded(&[(0, &id)]), t(10_000));
        assert_eq!(cut, t(0) - CLOCK_MARGIN);
        // A client clock behind the server's: the earlier of the two.
        assert_eq!(cutoff(&loaded(&[(0, &id)]), t(-5)), t(-5) - CLOCK_MARGIN);
    }
}
