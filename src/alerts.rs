//! Alerting: the `[[alerts.rules]]` of the config measured against the
//! per-minute rollups, the indexed queue counts and the engine's live
//! transport state; incidents opened and resolved in the `alerts` table;
//! and their notices sent as ordinary Herald messages (category `alert`)
//! through the configured transport, so alerts are tracked like any other
//! message.
//!
//! One evaluation ([`Evaluator::evaluate`]):
//! 1. measure every rule on every transport it watches ([`measure`]);
//! 2. [`plan`] against the active incidents: open one where a rule
//!    breaches and none is active, record the value where one is, resolve
//!    it where the rule no longer breaches;
//! 3. send every notice still missing ([`crate::storage::Alert::missing_notices`]).
//!
//! Several nodes may evaluate at once: the database keeps one active
//! incident per rule and transport, and each notice carries the
//! idempotency key `alert:<rule>:<incident>:<fired|resolved>`, so an
//! incident is notified once whoever opens it and however often a send is
//! retried. A notice that failed to go out (storage down, node stopped) is
//! sent by the next evaluation on any node.
//!
//! Action: a rule with `action = "pause"` also pauses the transport of
//! each incident it opens, through the persisted pause state that
//! `POST /api/transports/{name}/pause` writes, so every node stops
//! claiming for it within its next pause sync; the incident records when
//! (`paused_at`). An incident pauses once: an operator who resumes the
//! transport while it is still active is not overruled. A pause that
//! failed (storage down between opening and pausing) is made by the next
//! evaluation that finds the incident active and not yet paused. A rule
//! that watches every transport never pauses the one notices go through.
//!
//! Cooldown: an incident that begins within its rule's `cooldown` of the
//! last notified incident of the same rule and transport is recorded (and
//! listed) but sends no notice, neither when it fires nor when it resolves:
//! a flapping condition is one alert per cooldown, not one per flap.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use ulid::Ulid;

use crate::analytics::window_bounds;
use crate::config::{AlertAction, AlertKind, AlertRule, AlertSettings, Settings};
use crate::domain::{
    Channel, EmailPayload, EnqueueRequest, GenericPayload, NewMessage, SmsPayload, Stamp,
    ValidationError,
};
use crate::engine::TransportStatus;
use crate::storage::{
    Alert, AlertNotice, AlertState, DepthRow, MAX_BATCH, MinuteMetrics, NewAlert, Storage,
    StorageError,
};
use crate::time::Clock;

/// The category of notices.
pub const ALERT_CATEGORY: &str = "alert";

/// What the rules are measured against, read once per evaluation.
#[derive(Debug, Default)]
pub struct Inputs {
    pub minutes: Vec<MinuteMetrics>,
    pub depth: Vec<DepthRow>,
    pub statuses: Vec<TransportStatus>,
}

/// One rule measured on one transport.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub rule: String,
    pub transport: String,
    pub value: f64,
    pub breaching: bool,
}

/// The value of `rule` on `transport` now, or `None` when this node cannot
/// tell: a breaker is only known to the node driving the transport.
pub fn measure(
    rule: &AlertRule,
    transport: &str,
    now: DateTime<Utc>,
    inputs: &Inputs,
) -> Option<f64> {
    let windowed = || {
        let (from, to) = window_bounds(now, rule.window.unwrap_or_default());
        let mut total = MinuteMetrics::default();
        for row in inputs
            .minutes
            .iter()
            .filter(|m| m.transport == transport && m.minute >= from && m.minute < to)
        {
            total.merge(row);
        }
        total
    };
    let seconds_since = |at: DateTime<Utc>| ((now - at).num_milliseconds().max(0) as f64) / 1000.0;
    Some(match rule.kind {
        AlertKind::FailureRate => {
            let total = windowed();
            rate(total.failed, total.sent + total.failed)
        }
        AlertKind::DeadLetters => windowed().dead as f64,
        // Reports count in the minute received, sends in the minute sent:
        // the rate is of the window's traffic, and may pass 1 after a
        // quiet window.
        AlertKind::BounceRate => {
            let total = windowed();
            rate(total.bounced(), total.sent)
        }
        AlertKind::ComplaintRate => {
            let total = windowed();
            rate(total.complained, total.sent)
        }
        AlertKind::QueueDepth => inputs
            .depth
            .iter()
            .filter(|d| d.transport == transport)
            .map(|d| d.queued)
            .sum::<u64>() as f64,
        AlertKind::OldestQueued => inputs
            .depth
            .iter()
            .filter(|d| d.transport == transport)
            .filter_map(|d| d.oldest_available)
            .min()
            .map_or(0.0, seconds_since),
        AlertKind::BreakerOpen => {
            let status = inputs.statuses.iter().find(|s| s.name == transport)?;
            if !status.holds_lease {
                return None;
            }
            status.circuit_open_since.map_or(0.0, seconds_since)
        }
    })
}

/// `part / whole`, 0 when `whole` is.
fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Whether `value` breaks the rule: "grew by N" for dead letters, "above
/// N" for everything else.
pub fn breaches(kind: AlertKind, value: f64, threshold: f64) -> bool {
    match kind {
        AlertKind::DeadLetters => value >= threshold,
        _ => value > threshold,
    }
}

/// The transports a rule watches.
fn watched<'a>(rule: &'a AlertRule, settings: &'a Settings) -> Vec<&'a str> {
    match &rule.transport {
        Some(name) => vec![name.as_str()],
        None => settings.transports.keys().map(String::as_str).collect(),
    }
}

/// Every rule on every transport it watches, where this node can tell.
pub fn readings(settings: &Settings, now: DateTime<Utc>, inputs: &Inputs) -> Vec<Reading> {
    let Some(alerts) = &settings.alerts else {
        return Vec::new();
    };
    let mut readings = Vec::new();
    for rule in &alerts.rules {
        for transport in watched(rule, settings) {
            if let Some(value) = measure(rule, transport, now, inputs) {
                readings.push(Reading {
                    rule: rule.name.clone(),
                    transport: transport.to_owned(),
                    value,
                    breaching: breaches(rule.kind, value, rule.threshold),
                });
            }
        }
    }
    readings
}

/// One change an evaluation makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The rule breaches and no incident is active: open one.
    Open(Reading),
    /// The incident goes on: record the latest value.
    Check { id: Ulid, value: f64 },
    /// The rule is met again (or no longer configured): resolve.
    Resolve { id: Ulid, value: f64 },
}

/// Compares readings with the active incidents. An incident whose rule was
/// not measured here (a breaker this node does not drive) is left alone;
/// one whose rule or transport is gone from the config is resolved.
pub fn plan(settings: &Settings, readings: &[Reading], active: &[Alert]) -> Vec<Step> {
    let by_key: HashMap<(&str, &str), &Alert> = active
        .iter()
        .map(|a| ((a.rule.as_str(), a.transport.as_str()), a))
        .collect();
    let mut steps = Vec::new();
    for reading in readings {
        match (
            by_key.get(&(reading.rule.as_str(), reading.transport.as_str())),
            reading.breaching,
        ) {
            (None, true) => steps.push(Step::Open(reading.clone())),
            (None, false) => {}
            (Some(alert), true) => steps.push(Step::Check {
                id: alert.id,
                value: reading.value,
            }),
            (Some(alert), false) => steps.push(Step::Resolve {
                id: alert.id,
                value: reading.value,
            }),
        }
    }
    let configured = |alert: &Alert| {
        settings.transports.contains_key(&alert.transport)
            && settings.alerts.as_ref().is_some_and(|a| {
                a.rules.iter().any(|r| {
                    r.name == alert.rule && watched(r, settings).contains(&alert.transport.as_str())
                })
            })
    };
    for alert in active.iter().filter(|a| !configured(a)) {
        steps.push(Step::Resolve {
            id: alert.id,
            value: alert.last_value,
        });
    }
    steps
}

/// What one evaluation changed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Evaluation {
    pub opened: Vec<Alert>,
    pub resolved: Vec<Alert>,
    /// Notices enqueued: incident, which notice, the message.
    pub notices: Vec<(Ulid, AlertNotice, Stamp)>,
}

/// Measures the rules and acts on them; see the module docs.
pub struct Evaluator {
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    settings: Arc<Settings>,
}

impl Evaluator {
    pub fn new(storage: Arc<dyn Storage>, clock: Arc<dyn Clock>, settings: Arc<Settings>) -> Self {
        Evaluator {
            storage,
            clock,
            settings,
        }
    }

    /// One evaluation, given this node's live transport state.
    pub async fn evaluate(
        &self,
        statuses: Vec<TransportStatus>,
    ) -> Result<Evaluation, StorageError> {
        let Some(alerts) = &self.settings.alerts else {
            return Ok(Evaluation::default());
        };
        let now = self.clock.now();
        let inputs = self.inputs(alerts, statuses, now).await?;
        let readings = readings(&self.settings, now, &inputs);
        let active = self
            .storage
            .list_alerts(Some(AlertState::Active), MAX_BATCH)
            .await?;
        let mut evaluation = Evaluation::default();
        for step in plan(&self.settings, &readings, &active) {
            match step {
                Step::Open(reading) => {
                    let Some(rule) = alerts.rules.iter().find(|r| r.name == reading.rule) else {
                        continue;
                    };
                    let cooldown = TimeDelta::from_std(rule.cooldown).unwrap_or(TimeDelta::MAX);
                    let alert = NewAlert {
                        id: crate::domain::monotonic_ulid(),
                        rule: rule.name.clone(),
                        kind: rule.kind.as_str().to_owned(),
                        transport: reading.transport,
                        threshold: rule.threshold,
                        window_s: rule.window.map(|w| w.as_secs()),
                        value: reading.value,
                        fired_at: now,
                    };
                    let quiet_since = now.checked_sub_signed(cooldown).unwrap_or(now);
                    if let Some(mut opened) = self.storage.open_alert(alert, quiet_since).await? {
                        alert_fired(&opened);
                        if rule.action == AlertAction::Pause {
                            opened.paused_at = self.pause_for(alerts, &opened, now).await?;
                        }
                        evaluation.opened.push(opened);
                    }
                }
                Step::Check { id, value } => {
                    self.storage.check_alert(id, value, now).await?;
                    let unpaused = active.iter().find(|a| {
                        a.id == id && a.paused_at.is_none() && a.transport != alerts.transport
                    });
                    let pauses = |alert: &Alert| {
                        alerts
                            .rules
                            .iter()
                            .any(|r| r.name == alert.rule && r.action == AlertAction::Pause)
                    };
                    if let Some(alert) = unpaused.filter(|a| pauses(a)) {
                        self.pause_for(alerts, alert, now).await?;
                    }
                }
                Step::Resolve { id, value } => {
                    if let Some(resolved) = self.storage.resolve_alert(id, value, now).await? {
                        alert_resolved(&resolved);
                        evaluation.resolved.push(resolved);
                    }
                }
            }
        }
        evaluation.notices = self.send_notices(alerts).await?;
        Ok(evaluation)
    }

    /// Pauses `alert`'s transport (persisted: every node's supervisor
    /// picks it up) and records it on the incident; `None` for the
    /// transport notices go through, which is left running.
    async fn pause_for(
        &self,
        alerts: &AlertSettings,
        alert: &Alert,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StorageError> {
        if alert.transport == alerts.transport {
            tracing::warn!(
                alert = %alert.id, rule = %alert.rule, transport = %alert.transport,
                "alert rule would pause the transport its notices go through; left running"
            );
            return Ok(None);
        }
        self.storage.set_paused(&alert.transport, true, now).await?;
        self.storage.set_alert_paused(alert.id, now).await?;
        tracing::warn!(
            alert = %alert.id, rule = %alert.rule, transport = %alert.transport,
            "transport paused by alert rule"
        );
        Ok(Some(now))
    }

    /// Reads only what the configured rules need.
    async fn inputs(
        &self,
        alerts: &AlertSettings,
        statuses: Vec<TransportStatus>,
        now: DateTime<Utc>,
    ) -> Result<Inputs, StorageError> {
        let needs = |kind: AlertKind| alerts.rules.iter().any(|r| r.kind == kind);
        let mut inputs = Inputs {
            statuses,
            ..Inputs::default()
        };
        let longest = alerts.rules.iter().filter_map(|r| r.window).max();
        if let Some(window) = longest {
            let (from, to) = window_bounds(now, window);
            inputs.minutes = self.storage.minute_metrics(from, to).await?;
        }
        if needs(AlertKind::QueueDepth) || needs(AlertKind::OldestQueued) {
            inputs.depth = self.storage.queue_depth().await?;
        }
        Ok(inputs)
    }

    /// Enqueues every missing notice and records it on its incident.
    async fn send_notices(
        &self,
        alerts: &AlertSettings,
    ) -> Result<Vec<(Ulid, AlertNotice, Stamp)>, StorageError> {
        let policy = self.settings.enqueue_policy();
        let mut sent = Vec::new();
        for alert in self.storage.alerts_awaiting_notice().await? {
            for notice in alert.missing_notices() {
                let now = self.clock.now();
                let message = match notice_message(alerts, &alert, notice, &policy, now) {
                    Ok(message) => message,
                    Err(err) => {
                        // The config check makes this unreachable unless
                        // the config changed under a stored incident.
                        tracing::error!(alert = %alert.id, cause = %err, "alert notice refused");
                        continue;
                    }
                };
                let enqueued = self.storage.enqueue(message, now).await?;
                self.storage
                    .set_alert_notice(alert.id, notice, enqueued.id)
                    .await?;
                sent.push((alert.id, notice, enqueued.id));
            }
        }
        Ok(sent)
    }
}

fn alert_fired(alert: &Alert) {
    tracing::warn!(
        alert = %alert.id, rule = %alert.rule, transport = %alert.transport,
        value = alert.fired_value, threshold = alert.threshold, notified = alert.notified,
        "alert fired"
    );
}

fn alert_resolved(alert: &Alert) {
    tracing::info!(
        alert = %alert.id, rule = %alert.rule, transport = %alert.transport,
        value = alert.last_value, notified = alert.notified,
        "alert resolved"
    );
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `value` in the rule's unit, for people.
fn describe(kind: &str, value: f64) -> String {
    match AlertKind::parse(kind) {
        Some(AlertKind::FailureRate | AlertKind::BounceRate | AlertKind::ComplaintRate) => {
            format!("{:.1}%", value * 100.0)
        }
        Some(AlertKind::BreakerOpen | AlertKind::OldestQueued) => format!("{value:.0} s"),
        _ => format!("{value:.0}"),
    }
}

/// The one-line account of an incident a notice carries.
pub fn summary(alert: &Alert, notice: AlertNotice) -> String {
    let what = match AlertKind::parse(&alert.kind) {
        Some(AlertKind::FailureRate) => "failure rate",
        Some(AlertKind::BreakerOpen) => "circuit breaker open for",
        Some(AlertKind::DeadLetters) => "new dead letters",
        Some(AlertKind::OldestQueued) => "oldest queued message waiting",
        Some(AlertKind::QueueDepth) => "messages queued",
        Some(AlertKind::BounceRate) => "bounce rate",
        Some(AlertKind::ComplaintRate) => "complaint rate",
        None => alert.kind.as_str(),
    };
    let window = alert
        .window_s
        .map(|w| format!(" over {w} s"))
        .unwrap_or_default();
    let threshold = describe(&alert.kind, alert.threshold);
    let paused = if alert.paused_at.is_some() {
        "; transport paused"
    } else {
        ""
    };
    match (notice, alert.resolved_at) {
        (AlertNotice::Resolved, Some(resolved_at)) => format!(
            "RESOLVED {rule} on transport {transport} after {duration} s: {what} {value}{window} (threshold {threshold})",
            rule = alert.rule,
            transport = alert.transport,
            duration = (resolved_at - alert.fired_at).num_seconds(),
            value = describe(&alert.kind, alert.last_value),
        ),
        _ => format!(
            "FIRING {rule} on transport {transport}: {what} {value}{window} (threshold {threshold}) since {since}{paused}",
            rule = alert.rule,
            transport = alert.transport,
            value = describe(&alert.kind, alert.fired_value),
            since = rfc3339(alert.fired_at),
        ),
    }
}

/// The structured account of an incident, the body of webhook, chat and
/// push notices.
pub fn notice_document(alert: &Alert, notice: AlertNotice) -> serde_json::Value {
    let resolved = notice == AlertNotice::Resolved;
    serde_json::json!({
        "text": summary(alert, notice),
        "alert": {
            "id": alert.id.to_string(),
            "notice": notice.as_str(),
            "rule": alert.rule,
            "kind": alert.kind,
            "transport": alert.transport,
            "threshold": alert.threshold,
            "window_s": alert.window_s,
            "value": if resolved { alert.last_value } else { alert.fired_value },
            "fired_value": alert.fired_value,
            "fired_at": rfc3339(alert.fired_at),
            "resolved_at": alert.resolved_at.filter(|_| resolved).map(rfc3339),
            "duration_s": alert.resolved_at.filter(|_| resolved)
                .map(|at| (at - alert.fired_at).num_seconds()),
            "paused_at": alert.paused_at.map(rfc3339),
        }
    })
}

/// The notice as an enqueue request, through the same validation as the
/// API's, keyed so it is stored once whoever sends it how often.
pub fn notice_message(
    settings: &AlertSettings,
    alert: &Alert,
    notice: AlertNotice,
    policy: &crate::domain::EnqueuePolicy,
    now: DateTime<Utc>,
) -> Result<NewMessage, ValidationError> {
    let document = notice_document(alert, notice);
    let text = summary(alert, notice);
    let native = policy
        .transports
        .get(&settings.transport)
        .is_some_and(|t| t.native.contains(&settings.channel));
    let mut request = EnqueueRequest {
        channel: settings.channel,
        transport: Some(settings.transport.clone()),
        priority: None,
        category: Some(ALERT_CATEGORY.to_owned()),
        send_at: None,
        idempotency_key: Some(format!(
            "alert:{}:{}:{}",
            alert.rule,
            alert.id,
            notice.as_str()
        )),
        metadata: Some(serde_json::json!({
            "herald_alert": alert.id.to_string(),
            "notice": notice.as_str(),
            "rule": alert.rule,
        })),
        email: None,
        sms: None,
        chat: None,
        push: None,
        webhook: None,
    };
    let generic = || GenericPayload {
        payload: document.clone(),
        url: None,
    };
    match settings.channel {
        Channel::Email => {
            let state = match notice {
                AlertNotice::Fired => "FIRING",
                AlertNotice::Resolved => "RESOLVED",
            };
            request.email = Some(EmailPayload {
                from: settings.from.clone().unwrap_or_default(),
                to: settings.to.clone(),
                cc: Vec::new(),
                bcc: Vec::new(),
                reply_to: None,
                subject: format!("[Herald] {state}: {} on {}", alert.rule, alert.transport),
                text: Some(format!(
                    "{text}\n\n{}",
                    serde_json::to_string_pretty(&document["alert"]).unwrap_or_default()
                )),
                html: None,
                headers: Default::default(),
                attachments: Vec::new(),
            });
        }
        Channel::Sms => {
            request.sms = Some(SmsPayload {
                to: settings.to.first().cloned().unwrap_or_default(),
                from: settings.from.clone(),
                body: text,
                media_urls: Vec::new(),
            });
        }
        // A chat provider takes the notice as text to the first of `to`;
        // a webhook-kind transport the JSON document.
        Channel::Chat if native => {
            request.chat = Some(serde_json::json!({
                "channel": settings.to.first().cloned().unwrap_or_default(),
                "text": text,
            }));
        }
        Channel::Chat => request.chat = serde_json::to_value(generic()).ok(),
        Channel::Push => request.push = serde_json::to_value(generic()).ok(),
        Channel::Webhook => request.webhook = Some(generic()),
    }
    request.into_new_message(policy, now)
}

/// Builds a sample notice of the configured shape, so configuration that
/// would make every notice invalid is refused at start-up.
pub fn check_notices(settings: &Settings) -> Option<ValidationError> {
    let alerts = settings.alerts.as_ref()?;
    let at = DateTime::<Utc>::UNIX_EPOCH;
    let sample = Alert {
        id: Ulid::nil(),
        rule: "check".to_owned(),
        kind: AlertKind::QueueDepth.as_str().to_owned(),
        transport: alerts.transport.clone(),
        state: AlertState::Resolved,
        threshold: 1.0,
        window_s: None,
        fired_value: 2.0,
        last_value: 0.0,
        fired_at: at,
        checked_at: at,
        resolved_at: Some(at),
        notified: true,
        fired_message: None,
        resolved_message: None,
        paused_at: None,
    };
    let policy = settings.enqueue_policy();
    [AlertNotice::Fired, AlertNotice::Resolved]
        .into_iter()
        .find_map(|notice| notice_message(alerts, &sample, notice, &policy, at).err())
}

#[cfg(test)]
mod tests;
