//! The delivery engine end to end on a real store: claims, rate limits,
//! circuit breaking, pause and shutdown. Transport behaviour here is
//! scripted because the engine, not the transport, is under test; the
//! transports themselves are tested against real servers in
//! tests/transports.

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use common::{Fixture, emails};
use herald::alerts::{Evaluation, Evaluator};
use herald::config::Settings;
use herald::domain::{EnqueueRequest, EventKind, Message, MessageWithEvents, Stamp, Status};
use herald::engine::{CircuitState, Engine, EngineOptions, Gate, MAX_HELD};
use herald::storage::{
    AlertNotice, AlertState, MessageFilter, MinuteMetrics, NewAlert, Outcome, OutcomeKind,
    PageRequest, Storage,
};
use herald::time::{Clock, ManualClock, SystemClock};
use herald::transports::{Delivery, Gated, Transport, TransportError};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// What the scripted transport answers for the n-th delivery (0-based).
type Script = dyn Fn(usize) -> Result<(), TransportError> + Send + Sync;

struct Scripted {
    calls: AtomicUsize,
    script: Mutex<Arc<Script>>,
    delay: Duration,
    delivered: Mutex<Vec<(Stamp, Instant)>>,
}

impl Scripted {
    fn new(
        delay: Duration,
        script: impl Fn(usize) -> Result<(), TransportError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Scripted {
            calls: AtomicUsize::new(0),
            script: Mutex::new(Arc::new(script)),
            delay,
            delivered: Mutex::new(Vec::new()),
        })
    }

    fn ok() -> Arc<Self> {
        Self::new(Duration::ZERO, |_| Ok(()))
    }

    fn set_script(
        &self,
        script: impl Fn(usize) -> Result<(), TransportError> + Send + Sync + 'static,
    ) {
        *self.script.lock().expect("script lock") = Arc::new(script);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn delivered(&self) -> Vec<(Stamp, Instant)> {
        self.delivered.lock().expect("delivered lock").clone()
    }
}

#[async_trait]
impl Transport for Scripted {
    fn name(&self) -> &str {
        "mail"
    }

    fn kind(&self) -> &'static str {
        "null"
    }

    async fn deliver(&self, message: &Message) -> Result<Delivery, TransportError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let script = self.script.lock().expect("script lock").clone();
        script(n)?;
        self.delivered
            .lock()
            .expect("delivered lock")
            .push((message.id, Instant::now()));
        Ok(Delivery {
            provider_message_id: Some(format!("provider-{n}")),
            ..Delivery::by("mail")
        })
    }
}

fn transient() -> TransportError {
    TransportError::Temporary {
        code: Some(503),
        message: "unavailable".into(),
        retry_after: None,
    }
}

/// Settings with one transport `mail` tuned by `tuning` (TOML lines).
fn settings(storage_url: &str, tuning: &str) -> Arc<Settings> {
    let text = format!(
        "[storage]\nurl = \"{storage_url}\"\n\n[transports.mail]\nkind = \"null\"\n{tuning}\n\n[transports.other]\nkind = \"null\"\n"
    );
    Arc::new(
        Settings::from_toml(&text, Path::new("test.toml"), |_| None).expect("valid test settings"),
    )
}

fn fast() -> EngineOptions {
    EngineOptions {
        poll_interval: Duration::from_millis(50),
        recovery_interval: Duration::from_millis(200),
        ..EngineOptions::default()
    }
}

async fn start(fixture: &Fixture, tuning: &str, transport: Arc<Scripted>) -> Engine {
    start_on(
        fixture.storage.clone(),
        &fixture.options.url,
        tuning,
        transport,
    )
    .await
}

async fn start_on(
    storage: Arc<dyn Storage>,
    url: &str,
    tuning: &str,
    transport: Arc<Scripted>,
) -> Engine {
    let settings = settings(url, tuning);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let gated = |name: &str, transport: Arc<Scripted>| Gated {
        transport,
        gate: Gate::for_transport(&settings.transports[name], clock.clone()),
    };
    let transports = BTreeMap::from([
        ("mail".to_string(), gated("mail", transport)),
        ("other".to_string(), gated("other", Scripted::ok())),
    ]);
    Engine::start(storage, clock, settings, transports, fast())
        .await
        .expect("engine starts")
}

fn now() -> chrono::DateTime<chrono::Utc> {
    SystemClock.now()
}

async fn enqueue(storage: &dyn Storage, n: usize) -> Vec<Stamp> {
    let batch = emails(n, now());
    let ids = batch.iter().map(|m| m.id).collect();
    storage.enqueue_many(batch, now()).await.expect("enqueue");
    ids
}

async fn count(storage: &dyn Storage, status: Status) -> usize {
    let filter = MessageFilter {
        status: Some(status),
        ..Default::default()
    };
    storage
        .list_messages(
            &filter,
            PageRequest {
                after: None,
                limit: 1000,
            },
        )
        .await
        .expect("list")
        .items
        .len()
}

/// Waits (generously; this is not a performance assertion) for `check`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[actix::test]
                async fn $name() {
                    super::$name(crate::common::Fixture::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[actix::test]
                async fn $name() {
                    super::$name(crate::common::Fixture::postgres().await).await;
                }
            )*
        }
    };
}

on_both_backends!(
    queued_messages_are_delivered_and_tracked,
    a_transient_failure_is_retried_under_the_same_stamp,
    deliveries_wait_for_the_rate_limiter,
    an_open_breaker_claims_nothing_until_a_probe_succeeds,
    refused_credentials_open_the_breaker_and_cost_no_attempt,
    pause_stops_claims_and_survives_a_restart,
    shutdown_hands_back_unstarted_claims,
    a_panicking_transport_restarts_its_actor_and_delivery_goes_on,
    an_alert_rule_fires_cools_down_and_resolves,
    nodes_evaluating_at_once_notify_an_incident_once,
    a_notice_left_unsent_goes_out_at_the_next_evaluation,
    a_breaker_rule_fires_while_open_and_resolves_once_closed,
    a_complaint_rate_rule_that_pauses_pauses_its_transport_once,
    a_member_rate_limit_holds_for_its_direct_and_group_traffic_together,
    a_group_skips_a_member_whose_breaker_is_open,
    a_member_failing_inside_a_failover_attempt_leaves_an_event,
);

async fn queued_messages_are_delivered_and_tracked(f: Fixture) {
    let transport = Scripted::ok();
    let engine = start(&f, "", transport.clone()).await;
    let ids = enqueue(f.storage.as_ref(), 50).await;
    eventually("all 50 are sent", || async {
        count(f.storage.as_ref(), Status::Sent).await == 50
    })
    .await;
    assert_eq!(transport.calls(), 50, "each message delivered once");
    let stored = f
        .storage
        .get_message(ids[0])
        .await
        .expect("get")
        .expect("exists");
    let kinds: Vec<EventKind> = stored.events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![EventKind::Queued, EventKind::Sent]);
    let sent = &stored.events[1];
    assert!(
        sent.started_at.is_some_and(|start| start <= sent.at),
        "{sent:?}"
    );
    // The provider's id of it is kept, and finds it.
    let provider_id = sent
        .detail
        .as_ref()
        .and_then(|d| d["provider_message_id"].as_str())
        .expect("a provider id on the sent event");
    assert_eq!(
        f.storage
            .find_by_provider_id("mail", provider_id)
            .await
            .expect("find"),
        Some(ids[0])
    );
    assert_eq!(stored.message.attempts, 1);
    assert!(stored.message.sent_at.is_some());
    assert_eq!(engine.shutdown(Duration::from_secs(5)).await, 0);
}

async fn a_transient_failure_is_retried_under_the_same_stamp(f: Fixture) {
    let transport = Scripted::new(Duration::ZERO, |n| {
        if n < 2 { Err(transient()) } else { Ok(()) }
    });
    let engine = start(
        &f,
        "retry_delay_ms = 100\nmax_retry_delay_ms = 200",
        transport.clone(),
    )
    .await;
    let ids = enqueue(f.storage.as_ref(), 1).await;
    eventually("the message is sent", || async {
        count(f.storage.as_ref(), Status::Sent).await == 1
    })
    .await;
    let stored = f
        .storage
        .get_message(ids[0])
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(stored.message.attempts, 3);
    let failed = stored
        .events
        .iter()
        .filter(|e| e.kind == EventKind::AttemptFailed)
        .count();
    let scheduled = stored
        .events
        .iter()
        .filter(|e| e.kind == EventKind::RetryScheduled)
        .count();
    assert_eq!((failed, scheduled), (2, 2));
    let all = f
        .storage
        .list_messages(
            &MessageFilter::default(),
            PageRequest {
                after: None,
                limit: 10,
            },
        )
        .await
        .expect("list");
    assert_eq!(all.items.len(), 1, "a retry never creates a message");
    engine.shutdown(Duration::from_secs(5)).await;
}

async fn deliveries_wait_for_the_rate_limiter(f: Fixture) {
    // 600/min is one every 100 ms after a burst of 5: 30 deliveries need
    // at least 25 intervals, 2.5 s. A lower bound, so it cannot flake.
    let transport = Scripted::ok();
    let engine = start(
        &f,
        "rate_limit = 600\nburst_limit = 5\nconcurrency = 8\nbatch_size = 30",
        transport.clone(),
    )
    .await;
    enqueue(f.storage.as_ref(), 30).await;
    eventually("all 30 are sent", || async {
        count(f.storage.as_ref(), Status::Sent).await == 30
    })
    .await;
    let mut times: Vec<Instant> = transport
        .delivered()
        .into_iter()
        .map(|(_, at)| at)
        .collect();
    times.sort();
    let span = times[29].duration_since(times[0]);
    assert!(
        span >= Duration::from_millis(2400),
        "30 deliveries took only {span:?}"
    );
    engine.shutdown(Duration::from_secs(5)).await;
    // The limiter's hold is in the rollups: beyond the burst, up to 8
    // deliveries at a time wait their turn at 10/s.
    let mail = rollup_of(&f, "mail").await;
    assert_eq!(
        (mail.sent, mail.processing.count, mail.total.count),
        (30, 30, 30)
    );
    assert!(
        mail.limited_sum_ms >= 1000,
        "limiter wait {} ms",
        mail.limited_sum_ms
    );
}

/// Every rollup row of `transport` merged into one.
async fn rollup_of(f: &Fixture, transport: &str) -> MinuteMetrics {
    let rows = f
        .storage
        .minute_metrics(
            chrono::DateTime::UNIX_EPOCH,
            now() + chrono::Duration::days(1),
        )
        .await
        .expect("rollups");
    let mut all = MinuteMetrics::default();
    for row in rows.iter().filter(|r| r.transport == transport) {
        all.merge(row);
    }
    all
}

async fn an_open_breaker_claims_nothing_until_a_probe_succeeds(f: Fixture) {
    let transport = Scripted::new(Duration::ZERO, |_| Err(transient()));
    let tuning = "circuit_failure_threshold = 3\ncircuit_open_ms = 1500\nconcurrency = 1\nbatch_size = 1\nprefetch_count = 0\nretry_delay_ms = 60000\nmax_retry_delay_ms = 60000";
    let engine = start(&f, tuning, transport.clone()).await;
    let ids = enqueue(f.storage.as_ref(), 10).await;
    eventually("the breaker opens", || async {
        engine
            .status()
            .await
            .expect("status")
            .iter()
            .any(|t| t.name == "mail" && t.circuit == CircuitState::Open)
    })
    .await;
    let calls_when_opened = transport.calls();
    assert_eq!(calls_when_opened, 3);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(transport.calls(), 3, "no attempt while open");
    let mut untouched = 0;
    for id in &ids {
        let m = f
            .storage
            .get_message(*id)
            .await
            .expect("get")
            .expect("exists")
            .message;
        if m.attempts == 0 {
            assert_eq!(m.status, Status::Queued);
            untouched += 1;
        }
    }
    assert_eq!(untouched, 7, "waiting costs the other messages no attempt");

    transport.set_script(|_| Ok(()));
    eventually(
        "the 7 untouched messages are sent after the probe",
        || async { count(f.storage.as_ref(), Status::Sent).await == 7 },
    )
    .await;
    let status = engine.status().await.expect("status");
    assert!(
        status
            .iter()
            .any(|t| t.name == "mail" && t.circuit == CircuitState::Closed)
    );
    engine.shutdown(Duration::from_secs(5)).await;
    // Open for at least its 1.5 s, sampled every second.
    let mail = rollup_of(&f, "mail").await;
    assert!(
        mail.breaker_open_ms >= 1000,
        "breaker open {} ms",
        mail.breaker_open_ms
    );
}

async fn refused_credentials_open_the_breaker_and_cost_no_attempt(f: Fixture) {
    let transport = Scripted::new(Duration::ZERO, |n| {
        if n == 0 {
            Err(TransportError::Unauthorized {
                code: Some(401),
                message: "invalid_auth".into(),
            })
        } else {
            Ok(())
        }
    });
    // One refusal opens it, far below the threshold of transient failures.
    let tuning = "circuit_failure_threshold = 5\ncircuit_open_ms = 1500\nconcurrency = 1\nbatch_size = 1\nprefetch_count = 0";
    let engine = start(&f, tuning, transport.clone()).await;
    let ids = enqueue(f.storage.as_ref(), 5).await;
    eventually("the breaker opens", || async {
        engine
            .status()
            .await
            .expect("status")
            .iter()
            .any(|t| t.name == "mail" && t.circuit == CircuitState::Open)
    })
    .await;
    assert_eq!(transport.calls(), 1);
    eventually("all 5 are sent after the probe", || async {
        count(f.storage.as_ref(), Status::Sent).await == 5
    })
    .await;
    let mut refused = 0;
    for id in &ids {
        let stored = f
            .storage
            .get_message(*id)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(
            stored.message.attempts, 1,
            "the refused attempt was given back"
        );
        assert!(
            !stored
                .events
                .iter()
                .any(|e| e.kind == EventKind::AttemptFailed),
            "a refused credential is no failure of the message: {stored:?}"
        );
        refused += stored
            .events
            .iter()
            .filter(|e| {
                e.kind == EventKind::Deferred
                    && e.detail == Some(serde_json::json!({ "reason": "unauthorized" }))
            })
            .count();
    }
    assert_eq!(refused, 1, "the one refused attempt is on record");
    engine.shutdown(Duration::from_secs(5)).await;
}

async fn pause_stops_claims_and_survives_a_restart(f: Fixture) {
    let transport = Scripted::ok();
    let engine = start(&f, "", transport.clone()).await;
    let paused = engine.pause("mail").await.expect("pause");
    assert!(paused.paused);
    enqueue(f.storage.as_ref(), 5).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(transport.calls(), 0, "a paused transport claims nothing");
    assert_eq!(count(f.storage.as_ref(), Status::Queued).await, 5);
    engine.shutdown(Duration::from_secs(5)).await;

    let restarted = start(&f, "", transport.clone()).await;
    let status = restarted.status().await.expect("status");
    assert!(
        status.iter().any(|t| t.name == "mail" && t.paused),
        "pause survives a restart"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(transport.calls(), 0);
    restarted.resume("mail").await.expect("resume");
    eventually("resumed delivery sends all 5", || async {
        count(f.storage.as_ref(), Status::Sent).await == 5
    })
    .await;
    assert!(matches!(
        restarted.pause("nope").await,
        Err(herald::engine::EngineError::UnknownTransport(_))
    ));
    restarted.shutdown(Duration::from_secs(5)).await;
}

async fn shutdown_hands_back_unstarted_claims(f: Fixture) {
    let transport = Scripted::new(Duration::from_millis(300), |_| Ok(()));
    let engine = start(
        &f,
        "concurrency = 1\nbatch_size = 6\nprefetch_count = 5",
        transport.clone(),
    )
    .await;
    let ids = enqueue(f.storage.as_ref(), 6).await;
    eventually("a delivery is running", || async { transport.calls() >= 1 }).await;
    let unfinished = engine.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        unfinished, 0,
        "the running delivery finished within the grace"
    );
    assert_eq!(count(f.storage.as_ref(), Status::Sent).await, 1);
    assert_eq!(
        count(f.storage.as_ref(), Status::Processing).await,
        0,
        "no claim is left held"
    );
    let mut released = 0;
    for id in ids {
        let stored = f
            .storage
            .get_message(id)
            .await
            .expect("get")
            .expect("exists");
        if stored.message.status == Status::Queued {
            assert_eq!(stored.message.attempts, 0, "handing back costs no attempt");
            assert_eq!(
                stored.events.last().map(|e| e.kind),
                Some(EventKind::Deferred)
            );
            released += 1;
        }
    }
    assert_eq!(released, 5);
}

async fn holds(engine: &Engine) -> bool {
    engine
        .status()
        .await
        .expect("status")
        .iter()
        .any(|t| t.name == "mail" && t.holds_lease)
}

#[actix::test]
async fn two_nodes_drive_a_transport_one_at_a_time() {
    let f = Fixture::postgres().await;
    let tuning = "lease_ms = 1500";
    let (first, second) = (Scripted::ok(), Scripted::ok());
    let node_a = start(&f, tuning, first.clone()).await;
    eventually("node A holds the transport", || holds(&node_a)).await;
    let node_b = start_on(f.reopen().await, &f.options.url, tuning, second.clone()).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!holds(&node_b).await, "only one node drives a transport");

    enqueue(f.storage.as_ref(), 20).await;
    eventually("node A sends all 20", || async {
        count(f.storage.as_ref(), Status::Sent).await == 20
    })
    .await;
    assert_eq!((first.calls(), second.calls()), (20, 0));

    node_a.shutdown(Duration::from_secs(5)).await;
    eventually("node B takes over", || holds(&node_b)).await;
    enqueue(f.storage.as_ref(), 10).await;
    eventually("node B sends the next 10", || async {
        count(f.storage.as_ref(), Status::Sent).await == 30
    })
    .await;
    assert_eq!((first.calls(), second.calls()), (20, 10));
    node_b.shutdown(Duration::from_secs(5)).await;
}

async fn a_panicking_transport_restarts_its_actor_and_delivery_goes_on(f: Fixture) {
    let transport = Scripted::new(Duration::ZERO, |n| {
        assert!(n != 0, "the first delivery blows up");
        Ok(())
    });
    let engine = start(
        &f,
        "retry_delay_ms = 50\nmax_retry_delay_ms = 100",
        transport.clone(),
    )
    .await;
    let ids = enqueue(f.storage.as_ref(), 1).await;
    eventually("the message is sent by the restarted actor", || async {
        count(f.storage.as_ref(), Status::Sent).await == 1
    })
    .await;
    let stored = f
        .storage
        .get_message(ids[0])
        .await
        .expect("get")
        .expect("exists");
    let failure = stored
        .events
        .iter()
        .find(|e| e.kind == EventKind::AttemptFailed)
        .expect("the panic is recorded");
    assert!(
        failure
            .error
            .as_deref()
            .is_some_and(|e| e.contains("panicked")),
        "{failure:?}"
    );
    assert_eq!(stored.message.attempts, 2);
    let status = engine.status().await.expect("status");
    assert!(
        status.iter().any(|t| t.name == "mail" && t.running),
        "the transport runs again"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

/// Delivers `sent` and fails (permanently) `failed` new messages of `mail`
/// at `at`, as the tracker would record them.
async fn attempts(storage: &dyn Storage, sent: usize, failed: usize, at: DateTime<Utc>) {
    storage
        .enqueue_many(emails(sent + failed, at), at)
        .await
        .expect("enqueue");
    let claimed = storage
        .claim_due(
            "mail",
            common::NODE,
            sent + failed,
            Duration::from_secs(30),
            at,
        )
        .await
        .expect("claim");
    let outcomes = claimed
        .iter()
        .enumerate()
        .map(|(i, message)| {
            let kind = if i < sent {
                OutcomeKind::Sent
            } else {
                OutcomeKind::Failed {
                    error: "550 no such user".into(),
                    retry_at: None,
                }
            };
            Outcome {
                duration_ms: Some(5),
                error_class: (i >= sent).then(|| "permanent".to_owned()),
                ..Outcome::new(message, message.claim_token.expect("claimed"), kind)
            }
        })
        .collect();
    storage.record_outcomes(outcomes, at).await.expect("record");
}

/// The evaluator on a clock that only moves when told: each evaluation's
/// transitions and notices, exactly.
async fn an_alert_rule_fires_cools_down_and_resolves(f: Fixture) {
    let rules = "[alerts]\ntransport = \"other\"\ncooldown_s = 600\n\n\
        [[alerts.rules]]\nname = \"mail-failing\"\nkind = \"failure_rate\"\ntransport = \"mail\"\nthreshold = 0.5\nwindow_s = 120\n";
    let settings = settings(&f.options.url, &format!("\n{rules}"));
    let s = f.storage.as_ref();
    let start = common::t0();
    let clock = Arc::new(ManualClock::new(start));
    let evaluator = Evaluator::new(f.storage.clone(), clock.clone(), settings);
    let at = |seconds: i64| start + chrono::Duration::seconds(seconds);
    let evaluate = || async { evaluator.evaluate(Vec::new()).await.expect("evaluate") };

    // Minute 0: two of two attempts failed.
    attempts(s, 0, 2, at(5)).await;
    clock.set(at(10));
    let fired = evaluate().await;
    assert_eq!(fired.opened.len(), 1);
    let incident = &fired.opened[0];
    assert_eq!(
        (
            incident.rule.as_str(),
            incident.transport.as_str(),
            incident.fired_value
        ),
        ("mail-failing", "mail", 1.0)
    );
    assert!(incident.notified);
    assert_eq!(fired.notices.len(), 1);
    let (id, notice, message) = fired.notices[0];
    assert_eq!((id, notice), (incident.id, AlertNotice::Fired));
    let stored = s.get_message(message).await.expect("get").expect("stored");
    assert_eq!(stored.message.transport, "other");
    assert_eq!(stored.message.category.as_deref(), Some("alert"));
    assert_eq!(
        stored.message.idempotency_key,
        Some(format!("alert:mail-failing:{}:fired", incident.id))
    );
    assert_eq!(stored.message.payload["payload"]["alert"]["value"], 1.0);

    // Minute 1: one sent; the window still holds minute 0: 2 of 3 failed.
    attempts(s, 1, 0, at(65)).await;
    clock.set(at(70));
    let going_on = evaluate().await;
    assert_eq!(going_on, Evaluation::default(), "one incident, one alert");
    let active = s
        .list_alerts(Some(AlertState::Active), 10)
        .await
        .expect("list");
    assert_eq!(
        (active[0].last_value, active[0].checked_at),
        (2.0 / 3.0, at(70))
    );

    // Minute 2: the window is minutes 1 and 2, where nothing failed.
    clock.set(at(130));
    let resolved = evaluate().await;
    assert_eq!(resolved.resolved.len(), 1);
    assert_eq!(resolved.resolved[0].resolved_at, Some(at(130)));
    assert_eq!(
        resolved
            .notices
            .iter()
            .map(|(id, notice, _)| (*id, *notice))
            .collect::<Vec<_>>(),
        [(incident.id, AlertNotice::Resolved)]
    );
    let notice = s
        .get_message(resolved.notices[0].2)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(
        notice.message.payload["payload"]["alert"]["duration_s"],
        120
    );

    // Minute 3: failing again, within the 600 s cooldown of the first.
    attempts(s, 0, 1, at(185)).await;
    clock.set(at(190));
    let flap = evaluate().await;
    assert_eq!(flap.opened.len(), 1);
    assert!(!flap.opened[0].notified, "recorded, not notified");
    assert!(flap.notices.is_empty());
    clock.set(at(310));
    let flap_over = evaluate().await;
    assert_eq!(flap_over.resolved.len(), 1);
    assert!(
        flap_over.notices.is_empty(),
        "a silent incident resolves silently"
    );

    // Minute 11: past the cooldown, an incident is notified again.
    attempts(s, 0, 1, at(665)).await;
    clock.set(at(670));
    let again = evaluate().await;
    assert_eq!(again.opened.len(), 1);
    assert!(again.opened[0].notified);
    assert_eq!(again.notices.len(), 1);

    let alert_messages = s
        .list_messages(
            &MessageFilter {
                transport: Some("other".into()),
                ..Default::default()
            },
            PageRequest {
                after: None,
                limit: 10,
            },
        )
        .await
        .expect("list");
    assert_eq!(
        alert_messages.items.len(),
        3,
        "fired, resolved, fired: nothing for the incident in the cooldown"
    );
    let history = s.list_alerts(None, 10).await.expect("history");
    assert_eq!(
        history.iter().map(|a| a.state).collect::<Vec<_>>(),
        [
            AlertState::Active,
            AlertState::Resolved,
            AlertState::Resolved
        ]
    );
}

/// A `complaint_rate` rule with `action = "pause"`: reports that push the
/// rate over the threshold open an incident that pauses `mail` through
/// the persisted pause state every node follows, and records it; an
/// operator's resume while the incident lasts is not overruled.
async fn a_complaint_rate_rule_that_pauses_pauses_its_transport_once(f: Fixture) {
    use herald::feedback::{FeedbackEvent, FeedbackKind, Target};
    let rules = "[alerts]\ntransport = \"other\"\n\n\
        [[alerts.rules]]\nname = \"complaints\"\nkind = \"complaint_rate\"\ntransport = \"mail\"\n\
        threshold = 0.05\nwindow_s = 300\naction = \"pause\"\n";
    let settings = settings(&f.options.url, &format!("\n{rules}"));
    let s = f.storage.as_ref();
    let t0 = common::t0();
    let clock = Arc::new(ManualClock::new(t0));
    let evaluator = Evaluator::new(f.storage.clone(), clock.clone(), settings);
    let at = |seconds: i64| t0 + chrono::Duration::seconds(seconds);
    let evaluate = || async { evaluator.evaluate(Vec::new()).await.expect("evaluate") };
    let paused = || async {
        s.transport_states()
            .await
            .expect("states")
            .iter()
            .any(|t| t.name == "mail" && t.paused)
    };

    attempts(s, 10, 0, at(5)).await;
    let sent = s
        .list_messages(
            &MessageFilter {
                transport: Some("mail".into()),
                ..Default::default()
            },
            PageRequest {
                after: None,
                limit: 10,
            },
        )
        .await
        .expect("list")
        .items;
    let complaint = |i: usize| FeedbackEvent {
        target: Target::Stamp(sent[i].id),
        kind: FeedbackKind::Complained,
        bounce: None,
        recipient: None,
        at: at(15),
        reason: None,
        event_id: Some(format!("complaint-{i}")),
    };
    let report = |events| herald::storage::FeedbackBatch {
        transport: "mail".into(),
        events,
        nonce: None,
    };
    clock.set(at(10));
    assert_eq!(evaluate().await.opened.len(), 0, "no report yet");
    assert!(!paused().await);
    // One in ten complained: 0.1 over a 0.05 threshold.
    s.record_feedback(report(vec![complaint(0)]), at(20))
        .await
        .expect("feedback");

    // A running engine (a node) follows the persisted pause.
    let engine = start(&f, "", Scripted::ok()).await;
    clock.set(at(30));
    let fired = evaluate().await;
    assert_eq!(fired.opened.len(), 1);
    eventually("the running engine pauses mail", || async {
        let statuses = engine.status().await.expect("status");
        statuses.iter().any(|t| t.name == "mail" && t.paused)
    })
    .await;
    let incident = &fired.opened[0];
    assert_eq!(
        (incident.kind.as_str(), incident.fired_value),
        ("complaint_rate", 0.1)
    );
    assert_eq!(incident.paused_at, Some(at(30)));
    assert!(paused().await, "paused where every node reads it");
    let stored = s
        .list_alerts(Some(AlertState::Active), 10)
        .await
        .expect("list");
    assert_eq!(stored[0].paused_at, Some(at(30)), "the incident records it");
    let notice = s
        .get_message(fired.notices[0].2)
        .await
        .expect("get")
        .expect("stored");
    let text = notice.message.payload["payload"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(text.ends_with("; transport paused"), "{text}");

    // The operator resumes while the incident is still active.
    s.set_paused("mail", false, at(40)).await.expect("resume");
    s.record_feedback(report(vec![complaint(1)]), at(45))
        .await
        .expect("feedback");
    clock.set(at(50));
    assert_eq!(evaluate().await, Evaluation::default(), "one incident");
    assert!(!paused().await, "an incident pauses once");
    engine.shutdown(Duration::from_secs(5)).await;
}

/// `[alerts]` through `other` with one rule, `deep`: more than one
/// message queued on `mail`.
fn depth_alert_settings(f: &Fixture) -> Arc<Settings> {
    settings(
        &f.options.url,
        "\n[alerts]\ntransport = \"other\"\n\n[[alerts.rules]]\nname = \"deep\"\nkind = \"queue_depth\"\ntransport = \"mail\"\nthreshold = 1\n",
    )
}

async fn alert_messages(storage: &dyn Storage) -> usize {
    let filter = MessageFilter {
        transport: Some("other".into()),
        ..Default::default()
    };
    let page = PageRequest {
        after: None,
        limit: 100,
    };
    storage
        .list_messages(&filter, page)
        .await
        .expect("list")
        .items
        .len()
}

async fn nodes_evaluating_at_once_notify_an_incident_once(f: Fixture) {
    let settings = depth_alert_settings(&f);
    let clock = Arc::new(ManualClock::new(common::t0()));
    f.storage
        .enqueue_many(emails(2, common::t0()), common::t0())
        .await
        .expect("enqueue");
    // Two nodes: separate handles on one store, evaluating the same rules.
    let other_node = f.reopen().await;
    let a = Evaluator::new(f.storage.clone(), clock.clone(), settings.clone());
    let b = Evaluator::new(other_node, clock.clone(), settings);
    let (first, second) = tokio::join!(a.evaluate(Vec::new()), b.evaluate(Vec::new()));
    let (first, second) = (first.expect("evaluate"), second.expect("evaluate"));
    assert_eq!(first.opened.len() + second.opened.len(), 1, "one incident");
    assert_eq!(
        f.storage.list_alerts(None, 10).await.expect("list").len(),
        1
    );
    assert_eq!(alert_messages(f.storage.as_ref()).await, 1, "one notice");
}

async fn a_notice_left_unsent_goes_out_at_the_next_evaluation(f: Fixture) {
    let settings = depth_alert_settings(&f);
    let clock = Arc::new(ManualClock::new(common::t0()));
    // A node opened the incident and stopped before sending its notice.
    let stranded = f
        .storage
        .open_alert(
            NewAlert {
                id: herald::domain::monotonic_ulid(),
                rule: "deep".into(),
                kind: "queue_depth".into(),
                transport: "mail".into(),
                threshold: 1.0,
                window_s: None,
                value: 2.0,
                fired_at: common::t0(),
            },
            common::t0(),
        )
        .await
        .expect("open")
        .expect("opened");
    let evaluator = Evaluator::new(f.storage.clone(), clock.clone(), settings);
    let evaluation = evaluator.evaluate(Vec::new()).await.expect("evaluate");
    assert_eq!(
        evaluation
            .notices
            .iter()
            .map(|(id, notice, _)| (*id, *notice))
            .collect::<Vec<_>>(),
        [
            (stranded.id, AlertNotice::Fired),
            (stranded.id, AlertNotice::Resolved)
        ],
        "nothing is queued now, so it also resolves; the fired notice goes first"
    );
    assert_eq!(evaluation.resolved.len(), 1);
    assert_eq!(alert_messages(f.storage.as_ref()).await, 2);
    let again = evaluator.evaluate(Vec::new()).await.expect("evaluate");
    assert_eq!(again, Evaluation::default());
}

async fn a_breaker_rule_fires_while_open_and_resolves_once_closed(f: Fixture) {
    let transport = Scripted::new(Duration::ZERO, |_| Err(transient()));
    let tuning = "circuit_failure_threshold = 2\ncircuit_open_ms = 1000\nconcurrency = 1\nbatch_size = 1\nprefetch_count = 0\nretry_delay_ms = 60000\nmax_retry_delay_ms = 60000\n\n\
        [alerts]\ntransport = \"other\"\nevaluate_every_s = 1\n\n\
        [[alerts.rules]]\nname = \"tripped\"\nkind = \"breaker_open\"\ntransport = \"mail\"\nthreshold = 0\n";
    let engine = start(&f, tuning, transport.clone()).await;
    enqueue(f.storage.as_ref(), 3).await;
    eventually("the breaker opens", || async {
        engine
            .status()
            .await
            .expect("status")
            .iter()
            .any(|t| t.name == "mail" && t.circuit_open_since.is_some())
    })
    .await;
    eventually("the incident's notice is delivered", || async {
        let active = f
            .storage
            .list_alerts(Some(AlertState::Active), 10)
            .await
            .expect("list");
        match active.first().and_then(|a| a.fired_message) {
            Some(id) => {
                let notice = f.storage.get_message(id).await.expect("get");
                notice.is_some_and(|n| n.message.status == Status::Sent)
            }
            None => false,
        }
    })
    .await;

    transport.set_script(|_| Ok(()));
    // The failed messages wait a minute for their retry: give the probe one
    // that is due.
    enqueue(f.storage.as_ref(), 1).await;
    eventually("the incident resolves and says so", || async {
        let history = f.storage.list_alerts(None, 10).await.expect("list");
        history.len() == 1
            && history[0].state == AlertState::Resolved
            && history[0].resolved_message.is_some()
    })
    .await;
    let incident = &f.storage.list_alerts(None, 10).await.expect("list")[0];
    assert_eq!(
        (incident.rule.as_str(), incident.kind.as_str()),
        ("tripped", "breaker_open")
    );
    assert!(incident.fired_value > 0.0);
    assert_eq!(incident.last_value, 0.0, "resolved by a closed breaker");
    engine.shutdown(Duration::from_secs(5)).await;
}

// ------------------------------------------------ groups over real members

/// Settings of the `[transports.*]` tables in `transports`.
fn settings_with(storage_url: &str, transports: &str) -> Arc<Settings> {
    let text = format!("[storage]\nurl = \"{storage_url}\"\n\n{transports}");
    Arc::new(
        Settings::from_toml(&text, Path::new("test.toml"), |_| None).expect("valid test settings"),
    )
}

/// The engine over the transports `settings` configure, built as `app`
/// builds them.
async fn start_built(f: &Fixture, settings: Arc<Settings>) -> Engine {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let transports =
        herald::transports::build_all(&settings.transports, clock.clone()).expect("transports");
    Engine::start(f.storage.clone(), clock, settings, transports, fast())
        .await
        .expect("engine starts")
}

/// Enqueues `n` webhook messages for `transport`, as the API would.
async fn enqueue_webhooks(
    f: &Fixture,
    settings: &Settings,
    transport: &str,
    n: usize,
) -> Vec<Stamp> {
    let batch: Vec<_> = (0..n)
        .map(|i| {
            let body = serde_json::json!({
                "channel": "webhook", "transport": transport,
                "webhook": {"payload": {"n": i}}
            });
            let request: EnqueueRequest = serde_json::from_value(body).expect("a valid body");
            request
                .into_new_message(&settings.enqueue_policy(), now())
                .expect("a valid message")
        })
        .collect();
    let ids = batch.iter().map(|m| m.id).collect();
    f.storage.enqueue_many(batch, now()).await.expect("enqueue");
    ids
}

/// The message once sent or dead (waiting generously).
async fn settled(f: &Fixture, id: Stamp) -> MessageWithEvents {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stored = f
            .storage
            .get_message(id)
            .await
            .expect("get")
            .expect("exists");
        if matches!(stored.message.status, Status::Sent | Status::Dead) {
            return stored;
        }
        assert!(Instant::now() < deadline, "message {id} did not settle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Answers 200 and notes when each request arrived.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<Vec<Instant>>>);

impl Arrivals {
    fn sorted(&self) -> Vec<Instant> {
        let mut times = self.0.lock().expect("arrivals lock").clone();
        times.sort();
        times
    }
}

impl Respond for Arrivals {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.0.lock().expect("arrivals lock").push(Instant::now());
        ResponseTemplate::new(200)
    }
}

/// A webhook endpoint answering every POST with `status`.
async fn answering(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
}

async fn a_member_rate_limit_holds_for_its_direct_and_group_traffic_together(f: Fixture) {
    let server = MockServer::start().await;
    let arrivals = Arrivals::default();
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(arrivals.clone())
        .mount(&server)
        .await;
    let settings = settings_with(
        &f.options.url,
        &format!(
            "[transports.limited]\nkind = \"webhook\"\nurl = \"{}/hook\"\nrate_limit = 120\nburst_limit = 1\n\n\
             [transports.relay]\nkind = \"failover\"\nmembers = [\"limited\"]\n",
            server.uri()
        ),
    );
    let engine = start_built(&f, settings.clone()).await;
    let mut ids = enqueue_webhooks(&f, &settings, "limited", 4).await;
    ids.extend(enqueue_webhooks(&f, &settings, "relay", 4).await);
    for id in &ids {
        let stored = settled(&f, *id).await;
        assert_eq!(stored.message.status, Status::Sent);
        let sent = stored.events.iter().find(|e| e.kind == EventKind::Sent);
        assert_eq!(sent.and_then(|e| e.transport.as_deref()), Some("limited"));
    }
    // 120/min without a burst is one every 500 ms: the 8 deliveries, direct
    // and through the group together, need at least 7 intervals, 3.5 s.
    // A lower bound, so it cannot flake; 0.5 s is left for one request
    // arriving late. The group's own limit (600/min, bursts of 20) would
    // let its four through at once, beside the direct ones' 1.5 s.
    let times = arrivals.sorted();
    assert_eq!(times.len(), 8);
    let span = times[7].duration_since(times[0]);
    assert!(
        span >= Duration::from_millis(3000),
        "8 deliveries took only {span:?}"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

async fn a_group_skips_a_member_whose_breaker_is_open(f: Fixture) {
    let broken = answering(503).await;
    let healthy = answering(200).await;
    let settings = settings_with(
        &f.options.url,
        &format!(
            "[transports.primary]\nkind = \"webhook\"\nurl = \"{}/hook\"\n\
             circuit_failure_threshold = 1\ncircuit_open_ms = 600000\nretry_delay_ms = 600000\nmax_retry_delay_ms = 600000\n\n\
             [transports.backup]\nkind = \"webhook\"\nurl = \"{}/hook\"\n\n\
             [transports.alerts]\nkind = \"failover\"\nmembers = [\"primary\", \"backup\"]\n\n\
             [transports.solo]\nkind = \"failover\"\nmembers = [\"primary\"]\n",
            broken.uri(),
            healthy.uri()
        ),
    );
    let engine = start_built(&f, settings.clone()).await;
    // Direct traffic opens the primary's breaker...
    enqueue_webhooks(&f, &settings, "primary", 1).await;
    eventually("the primary's breaker opens", || async {
        engine
            .status()
            .await
            .expect("status")
            .iter()
            .any(|t| t.name == "primary" && t.circuit == CircuitState::Open)
    })
    .await;
    // ...and the groups see it: the failover goes straight to the backup.
    for id in enqueue_webhooks(&f, &settings, "alerts", 3).await {
        let stored = settled(&f, id).await;
        let kinds: Vec<EventKind> = stored.events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Queued, EventKind::Sent]);
        assert_eq!(stored.events[1].transport.as_deref(), Some("backup"));
    }
    // A group whose only member is open tries nothing, and that costs its
    // message no attempt.
    let waiting = enqueue_webhooks(&f, &settings, "solo", 1).await[0];
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stored = f
        .storage
        .get_message(waiting)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (stored.message.status, stored.message.attempts),
        (Status::Queued, 0)
    );
    assert_eq!(
        broken.received_requests().await.map(|r| r.len()),
        Some(1),
        "only the direct message reached the open primary"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

async fn a_member_failing_inside_a_failover_attempt_leaves_an_event(f: Fixture) {
    let broken = answering(503).await;
    let healthy = answering(200).await;
    let settings = settings_with(
        &f.options.url,
        &format!(
            "[transports.primary]\nkind = \"webhook\"\nurl = \"{0}/primary\"\n\n\
             [transports.secondary]\nkind = \"webhook\"\nurl = \"{0}/secondary\"\n\n\
             [transports.backup]\nkind = \"webhook\"\nurl = \"{1}/hook\"\n\n\
             [transports.alerts]\nkind = \"failover\"\nmembers = [\"primary\", \"backup\"]\n\n\
             [transports.doomed]\nkind = \"failover\"\nmembers = [\"primary\", \"secondary\"]\nmax_retries = 0\n",
            broken.uri(),
            healthy.uri()
        ),
    );
    let engine = start_built(&f, settings.clone()).await;

    let id = enqueue_webhooks(&f, &settings, "alerts", 1).await[0];
    let stored = settled(&f, id).await;
    assert_eq!(
        (stored.message.status, stored.message.attempts),
        (Status::Sent, 1)
    );
    let events: Vec<(EventKind, Option<&str>)> = stored
        .events
        .iter()
        .map(|e| (e.kind, e.transport.as_deref()))
        .collect();
    assert_eq!(
        events[1..],
        [
            (EventKind::AttemptFailed, Some("primary")),
            (EventKind::Sent, Some("backup")),
        ],
        "the failed member, then the one that delivered, in one attempt"
    );
    let failed = &stored.events[1];
    assert_eq!(
        failed.detail,
        Some(serde_json::json!({"group": "alerts", "member": "primary"}))
    );
    assert_eq!(failed.attempt, 1);
    assert!(
        failed.error.as_deref().is_some_and(|e| e.contains("503")),
        "{:?}",
        failed.error
    );

    // When every member fails, the last one's failure is the attempt's.
    let id = enqueue_webhooks(&f, &settings, "doomed", 1).await[0];
    let stored = settled(&f, id).await;
    assert_eq!(stored.message.status, Status::Dead);
    let events: Vec<(EventKind, Option<&str>)> = stored
        .events
        .iter()
        .map(|e| (e.kind, e.transport.as_deref()))
        .collect();
    assert_eq!(
        events[1..],
        [
            (EventKind::AttemptFailed, Some("primary")),
            (EventKind::AttemptFailed, Some("secondary")),
            (EventKind::DeadLettered, Some("secondary")),
        ]
    );
    assert!(
        stored.events[2].detail.is_none(),
        "the attempt's own failure"
    );
    engine.shutdown(Duration::from_secs(5)).await;

    // Each attempt counts once, under the member that ended it.
    let counted = |m: MinuteMetrics| (m.sent, m.failed, m.dead);
    assert_eq!(counted(rollup_of(&f, "primary").await), (0, 0, 0));
    assert_eq!(counted(rollup_of(&f, "backup").await), (1, 0, 0));
    assert_eq!(counted(rollup_of(&f, "secondary").await), (0, 1, 1));
}

/// Makes the test schema's store claim but refuse every other change of
/// a message with PostgreSQL's own 53100 disk_full (row triggers on the
/// update that requeues and the delete that moves a finished message), as
/// a full disk refuses the larger writes of outcomes; the client lifts it.
async fn refuse_outcomes(url: &str) -> tokio_postgres::Client {
    let (side, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    actix::spawn(async move {
        let _ = connection.await;
    });
    side.batch_execute(
        "CREATE FUNCTION refuse_outcomes() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'simulated: disk full' USING ERRCODE = '53100'; END $$;
         CREATE TRIGGER refuse_outcomes BEFORE UPDATE ON messages FOR EACH ROW
         WHEN (NEW.status <> 'processing') EXECUTE FUNCTION refuse_outcomes();
         CREATE TRIGGER refuse_moves BEFORE DELETE ON messages FOR EACH ROW
         EXECUTE FUNCTION refuse_outcomes();",
    )
    .await
    .expect("refuse outcomes");
    side
}

async fn allow_outcomes(side: &tokio_postgres::Client) {
    side.batch_execute(
        "DROP TRIGGER refuse_outcomes ON messages; DROP TRIGGER refuse_moves ON messages",
    )
    .await
    .expect("allow outcomes");
}

/// A store that claims but cannot take outcomes (a row trigger refuses,
/// with PostgreSQL's own 53100 disk_full, every change of a message but
/// the claim): the tracker holds what it cannot write, up to its bound,
/// and the transport stops claiming there instead of piling up more in
/// memory; once the store takes writes again every outcome is written and
/// every message was delivered once.
#[actix::test]
async fn outcomes_the_store_cannot_take_hold_back_claims_until_written() {
    let f = Fixture::postgres().await;
    let total = MAX_HELD + 2000;
    for _ in 0..total / 1000 {
        enqueue(f.storage.as_ref(), 1000).await;
    }
    let side = refuse_outcomes(&f.options.url).await;

    let transport = Scripted::ok();
    let tuning = "rate_limit = 100000000\nburst_limit = 1000000\nbatch_size = 1000\n\
                  concurrency = 64\nprefetch_count = 1000";
    let capacity = 64 + 1000;
    let engine = start(&f, tuning, transport.clone()).await;
    eventually("deliveries fill the tracker", || async {
        transport.calls() >= MAX_HELD
    })
    .await;
    // Claims stop: what was claimed before the bound was reached is
    // delivered, then nothing more.
    let mut seen = transport.calls();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = transport.calls();
        if now == seen {
            break;
        }
        seen = now;
    }
    assert!(
        seen <= MAX_HELD + capacity,
        "{seen} delivered while the tracker could hold {MAX_HELD}"
    );
    assert!(seen < total, "work waits in the store");
    assert!(common::unfinished(f.storage.as_ref()).await >= (total - seen) as u64);

    allow_outcomes(&side).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while common::unfinished(f.storage.as_ref()).await > 0 {
        assert!(
            Instant::now() < deadline,
            "every message is sent in the end"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(transport.calls(), total, "each message delivered once");
    let delivered: std::collections::HashSet<Stamp> =
        transport.delivered().iter().map(|(id, _)| *id).collect();
    assert_eq!(delivered.len(), total);
    assert_eq!(engine.shutdown(Duration::from_secs(5)).await, 0);
}

/// A shutdown does not wait for an outage to end: it gives up on the
/// outcomes it cannot write, and nothing is lost, since the messages are
/// still `processing` under their leases and come back once the store
/// writes again.
#[actix::test]
async fn a_shutdown_during_an_outage_ends_and_loses_nothing() {
    let f = Fixture::postgres().await;
    let ids = enqueue(f.storage.as_ref(), 3).await;
    let side = refuse_outcomes(&f.options.url).await;
    let first = Scripted::ok();
    let engine = start(&f, "lease_ms = 1000", first.clone()).await;
    eventually("all 3 are delivered", || async { first.calls() >= 3 }).await;
    let shutdown = engine.shutdown(Duration::from_secs(1));
    tokio::time::timeout(Duration::from_secs(60), shutdown)
        .await
        .expect("the shutdown ends while the store cannot write");
    assert_eq!(count(f.storage.as_ref(), Status::Processing).await, 3);

    allow_outcomes(&side).await;
    let second = Scripted::ok();
    let engine = start(&f, "lease_ms = 1000", second.clone()).await;
    eventually("all 3 are sent", || async {
        count(f.storage.as_ref(), Status::Sent).await == 3
    })
    .await;
    for id in ids {
        let stored = f
            .storage
            .get_message(id)
            .await
            .expect("get")
            .expect("exists");
        let sent = stored
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Sent)
            .count();
        assert_eq!(sent, 1, "{:?}", stored.events);
    }
    assert!(first.calls() + second.calls() >= 3);
    assert_eq!(engine.shutdown(Duration::from_secs(5)).await, 0);
}
