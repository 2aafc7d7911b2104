use std::path::Path;

use super::*;
use crate::engine::CircuitState;

fn settings(rules: &str) -> Settings {
    let text = format!(
        r#"
[transports.hooks]
kind = "webhook"
url = "http://127.0.0.1:9/hook"

[transports.flaky]
kind = "webhook"
url = "http://127.0.0.1:9/flaky"

[alerts]
transport = "hooks"
{rules}
"#
    );
    Settings::from_toml(&text, Path::new("test.toml"), |_| None).expect("valid alert settings")
}

fn at(minute: i64, second: i64) -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
        + TimeDelta::days(20_000)
        + TimeDelta::minutes(minute)
        + TimeDelta::seconds(second)
}

fn minute(transport: &str, m: i64, sent: u64, failed: u64, dead: u64) -> MinuteMetrics {
    MinuteMetrics {
        minute: at(m, 0),
        transport: transport.to_owned(),
        sent,
        failed,
        dead,
        ..MinuteMetrics::default()
    }
}

fn status(name: &str, holds_lease: bool, open_since: Option<DateTime<Utc>>) -> TransportStatus {
    TransportStatus {
        name: name.to_owned(),
        kind: "webhook",
        running: true,
        paused: false,
        circuit: if open_since.is_some() {
            CircuitState::Open
        } else {
            CircuitState::Closed
        },
        circuit_open_since: open_since,
        holds_lease,
        in_flight: 0,
        prefetched: 0,
        concurrency: 1,
        rate_limit: 1,
        burst_limit: 1,
        breaker_opened: 0,
        last_error: None,
        last_activity: None,
    }
}

fn rule(settings: &Settings, name: &str) -> AlertRule {
    settings
        .alerts
        .as_ref()
        .and_then(|a| a.rules.iter().find(|r| r.name == name))
        .cloned()
        .expect("the rule is configured")
}

#[test]
fn failure_rate_and_dead_letters_count_only_the_window() {
    let settings = settings(
        r#"
[[alerts.rules]]
name = "failing"
kind = "failure_rate"
threshold = 0.5
window_s = 300

[[alerts.rules]]
name = "dying"
kind = "dead_letters"
threshold = 3
window_s = 120
"#,
    );
    let inputs = Inputs {
        minutes: vec![
            minute("flaky", 0, 0, 10, 10), // outside both windows at minute 6
            minute("flaky", 2, 1, 1, 0),
            minute("flaky", 5, 0, 2, 1),
            minute("flaky", 6, 0, 1, 2),
            minute("hooks", 6, 4, 0, 0),
        ],
        ..Inputs::default()
    };
    let now = at(6, 30);
    let failing = rule(&settings, "failing");
    assert_eq!(measure(&failing, "flaky", now, &inputs), Some(4.0 / 5.0));
    assert_eq!(measure(&failing, "hooks", now, &inputs), Some(0.0));
    assert_eq!(
        measure(&failing, "other", now, &inputs),
        Some(0.0),
        "no attempts is no failure"
    );
    let dying = rule(&settings, "dying");
    assert_eq!(measure(&dying, "flaky", now, &inputs), Some(3.0));
    assert!(breaches(AlertKind::DeadLetters, 3.0, 3.0), "grew by N");
    assert!(!breaches(AlertKind::FailureRate, 0.5, 0.5), "above N");

    let all = readings(&settings, now, &inputs);
    let breaching: Vec<(&str, &str)> = all
        .iter()
        .filter(|r| r.breaching)
        .map(|r| (r.rule.as_str(), r.transport.as_str()))
        .collect();
    assert_eq!(
        breaching,
        [("failing", "flaky"), ("dying", "flaky")],
        "a rule without a transport watches each transport on its own"
    );
}

#[test]
fn bounce_and_complaint_rates_are_reports_over_sends_in_the_window() {
    let settings = settings(
        r#"
[[alerts.rules]]
name = "bouncing"
kind = "bounce_rate"
threshold = 0.05
window_s = 300

[[alerts.rules]]
name = "complaints"
kind = "complaint_rate"
transport = "flaky"
threshold = 0.001
window_s = 300
action = "pause"
"#,
    );
    let reports = |m: i64, hard: u64, soft: u64, complained: u64| MinuteMetrics {
        bounced_hard: hard,
        bounced_soft: soft,
        complained,
        ..minute("flaky", m, 0, 0, 0)
    };
    let inputs = Inputs {
        minutes: vec![
            reports(0, 50, 0, 50), // outside the window at minute 6
            minute("flaky", 2, 100, 0, 0),
            reports(4, 3, 3, 1),
        ],
        ..Inputs::default()
    };
    let now = at(6, 30);
    let bouncing = rule(&settings, "bouncing");
    assert_eq!(measure(&bouncing, "flaky", now, &inputs), Some(0.06));
    assert_eq!(
        measure(&bouncing, "hooks", now, &inputs),
        Some(0.0),
        "nothing sent is no bounce"
    );
    let complaints = rule(&settings, "complaints");
    assert_eq!(complaints.action, AlertAction::Pause);
    assert_eq!(measure(&complaints, "flaky", now, &inputs), Some(0.01));
    let breaching: Vec<String> = readings(&settings, now, &inputs)
        .into_iter()
        .filter(|r| r.breaching)
        .map(|r| r.rule)
        .collect();
    assert_eq!(breaching, ["bouncing", "complaints"]);
}

#[test]
fn queue_rules_read_depth_and_the_oldest_waiting_message() {
    let settings = settings(
        r#"
[[alerts.rules]]
name = "deep"
kind = "queue_depth"
transport = "flaky"
threshold = 2

[[alerts.rules]]
name = "stale"
kind = "oldest_queued"
threshold = 60
"#,
    );
    let inputs = Inputs {
        depth: vec![
            DepthRow {
                transport: "flaky".into(),
                priority: crate::domain::Priority::MAX,
                channel: Channel::Webhook,
                category: String::new(),
                queued: 2,
                processing: 5,
                oldest_available: Some(at(0, 30)),
            },
            DepthRow {
                transport: "flaky".into(),
                priority: crate::domain::Priority::MIN,
                channel: Channel::Sms,
                category: "receipt".into(),
                queued: 1,
                processing: 0,
                oldest_available: Some(at(0, 0)),
            },
            DepthRow {
                transport: "hooks".into(),
                priority: crate::domain::Priority::MIN,
                channel: Channel::Webhook,
                category: String::new(),
                queued: 0,
                processing: 1,
                oldest_available: None,
            },
        ],
        ..Inputs::default()
    };
    let now = at(1, 30);
    assert_eq!(
        measure(&rule(&settings, "deep"), "flaky", now, &inputs),
        Some(3.0),
        "queued only, every priority, channel and category"
    );
    assert_eq!(
        measure(&rule(&settings, "stale"), "flaky", now, &inputs),
        Some(90.0)
    );
    assert_eq!(
        measure(&rule(&settings, "stale"), "hooks", now, &inputs),
        Some(0.0)
    );
}

#[test]
fn a_breaker_is_measured_only_where_it_is_driven() {
    let settings = settings(
        r#"
[[alerts.rules]]
name = "tripped"
kind = "breaker_open"
threshold = 30
"#,
    );
    let tripped = rule(&settings, "tripped");
    let inputs = Inputs {
        statuses: vec![
            status("flaky", true, Some(at(0, 0))),
            status("hooks", false, None),
        ],
        ..Inputs::default()
    };
    assert_eq!(measure(&tripped, "flaky", at(0, 45), &inputs), Some(45.0));
    assert_eq!(
        measure(&tripped, "hooks", at(0, 45), &inputs),
        None,
        "another node drives it"
    );
}

fn active(rule: &str, transport: &str) -> Alert {
    Alert {
        id: Ulid::generate(),
        rule: rule.to_owned(),
        kind: "queue_depth".to_owned(),
        transport: transport.to_owned(),
        state: AlertState::Active,
        threshold: 2.0,
        window_s: None,
        fired_value: 3.0,
        last_value: 3.0,
        fired_at: at(0, 0),
        checked_at: at(0, 0),
        resolved_at: None,
        notified: true,
        fired_message: None,
        resolved_message: None,
        paused_at: None,
    }
}

#[test]
fn plan_opens_checks_resolves_and_retires_incidents() {
    let settings = settings(
        r#"
[[alerts.rules]]
name = "deep"
kind = "queue_depth"
threshold = 2
"#,
    );
    let reading = |transport: &str, value: f64| Reading {
        rule: "deep".into(),
        transport: transport.into(),
        value,
        breaching: value > 2.0,
    };
    let going_on = active("deep", "flaky");
    let retired = active("removed-rule", "flaky");
    let readings = [reading("flaky", 5.0), reading("hooks", 4.0)];
    assert_eq!(
        plan(&settings, &readings, &[going_on.clone(), retired.clone()]),
        [
            Step::Check {
                id: going_on.id,
                value: 5.0
            },
            Step::Open(reading("hooks", 4.0)),
            Step::Resolve {
                id: retired.id,
                value: 3.0
            },
        ]
    );
    assert_eq!(
        plan(
            &settings,
            &[reading("flaky", 1.0)],
            std::slice::from_ref(&going_on)
        ),
        [Step::Resolve {
            id: going_on.id,
            value: 1.0
        }]
    );
    assert_eq!(
        plan(&settings, &[], &[going_on]),
        [],
        "not measured here: left to the node that can"
    );
}

#[test]
fn notices_are_valid_messages_keyed_per_incident() {
    let settings = settings(
        r#"
[[alerts.rules]]
name = "deep"
kind = "queue_depth"
threshold = 2
"#,
    );
    let alerts = settings.alerts.as_ref().expect("alerts");
    let mut alert = active("deep", "flaky");
    let policy = settings.enqueue_policy();
    let fired = notice_message(alerts, &alert, AlertNotice::Fired, &policy, at(0, 0))
        .expect("a valid message");
    assert_eq!(fired.transport, "hooks");
    assert_eq!(fired.category.as_deref(), Some("alert"));
    assert_eq!(
        fired.idempotency_key,
        Some(format!("alert:deep:{}:fired", alert.id))
    );
    let payload: serde_json::Value = serde_json::from_str(&fired.payload).expect("payload JSON");
    assert_eq!(payload["payload"]["alert"]["value"], 3.0);
    assert_eq!(
        payload["payload"]["text"],
        "FIRING deep on transport flaky: messages queued 3 (threshold 2) since 2024-10-04T00:00:00.000Z"
    );
    alert.state = AlertState::Resolved;
    alert.last_value = 0.0;
    alert.resolved_at = Some(at(2, 5));
    let resolved = notice_message(alerts, &alert, AlertNotice::Resolved, &policy, at(2, 5))
        .expect("a valid message");
    assert_eq!(
        resolved.idempotency_key,
        Some(format!("alert:deep:{}:resolved", alert.id))
    );
    let payload: serde_json::Value = serde_json::from_str(&resolved.payload).expect("payload JSON");
    assert_eq!(payload["payload"]["alert"]["duration_s"], 125);
    assert_eq!(
        payload["payload"]["text"],
        "RESOLVED deep on transport flaky after 125 s: messages queued 0 (threshold 2)"
    );
}
