//! The figures of a run and their two renderings: a table for people and
//! JSON (`--json`) for scripts. Rates and latencies come from the store's
//! own timestamps (`created_at`, `sent_at`, millisecond resolution), never
//! from client-side clocks, except the enqueue rate, which is what the
//! client saw accepted per second.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::BenchArgs;
use super::api::{ListedMessage, ServerInfo};
use super::load::Loaded;
use super::verify::Stored;

/// Everything a report is made from.
pub(crate) struct Inputs<'a> {
    pub args: &'a BenchArgs,
    pub run_id: String,
    pub warmup: u64,
    pub transport: &'a str,
    pub server: ServerInfo,
    /// What the in-process server stores in; `None` with `--url`.
    pub local_store: Option<String>,
    pub loaded: &'a Loaded,
    pub stored: &'a Stored,
    pub verification: Verification,
    pub delivery_wait: Duration,
    /// Time spent reading every sent message's events.
    pub events_read: Duration,
    pub interrupted: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// The run's id: its messages carry it as `metadata.herald_bench`.
    pub run: String,
    pub herald_version: Option<String>,
    pub machine: Machine,
    pub target: Target,
    pub load: Load,
    pub enqueue: Enqueue,
    pub end_to_end: Option<EndToEnd>,
    /// Enqueue (`created_at`) to sent (`sent_at`) of each sent message.
    pub latency_ms: Option<Latency>,
    pub verification: Verification,
    /// Time spent reading every sent message with its events (the
    /// verification's cost, not a figure of the run).
    pub events_read_seconds: f64,
    /// Ctrl-C stopped the run early; the figures cover what was accepted.
    pub interrupted: bool,
}

/// The machine the bench ran on (with `--url`, the client's).
#[derive(Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: Option<String>,
    pub os: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Target {
    /// `in-process` or the `--url`.
    pub server: String,
    /// The in-process server's temporary store.
    pub store: Option<String>,
    /// `sqlite` or `postgres`, as the server reports it.
    pub backend: Option<String>,
    pub transport: String,
}

#[derive(Debug, Serialize)]
pub struct Load {
    pub messages: u64,
    pub batch_size: u64,
    pub clients: u64,
    /// Open-loop rate, messages/s; `None` for closed loop.
    pub rate: Option<u64>,
    pub payload_bytes: usize,
    /// Messages sent before the measured run, not part of its figures.
    pub warmup: u64,
    /// Delivery was held until every message was enqueued.
    pub deliver_after: bool,
}

#[derive(Debug, Serialize)]
pub struct Enqueue {
    /// Messages the API accepted (2xx with an id).
    pub accepted: u64,
    pub requests: u64,
    /// First request sent to last answer received.
    pub seconds: f64,
    pub messages_per_second: f64,
    /// Messages not accepted, by HTTP status or cause (`connection`,
    /// `timeout`).
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EndToEnd {
    pub sent: u64,
    /// First message created to last message sent.
    pub seconds: f64,
    pub messages_per_second: f64,
    /// Last message created to last message sent: how far delivery
    /// trailed the enqueuing.
    pub last_enqueue_to_last_sent_ms: i64,
    /// Messages already sent when the last one was created: what delivery
    /// kept up with while competing with the enqueues.
    pub sent_while_enqueuing: u64,
    /// Delivery rate after the last enqueue, when delivery had the server
    /// to itself (`null` when nothing was left to deliver by then).
    pub drain_messages_per_second: Option<f64>,
    /// How long the client waited for delivery after enqueuing, including
    /// its polling (not a figure of the server's).
    pub client_wait_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50: i64,
    pub p95: i64,
    pub p99: i64,
    pub max: i64,
    pub mean: f64,
}

/// What the run checked about its own messages.
#[derive(Debug, Serialize)]
pub struct Verification {
    /// `--messages`.
    pub requested: u64,
    /// Accepted by the API.
    pub enqueued: u64,
    /// The run's distinct messages found in the store.
    pub stored: u64,
    /// Messages that ended `sent`, stored once, with one `queued` and one
    /// `sent` event.
    pub sent: u64,
    /// Accepted but not in the store.
    pub lost: u64,
    /// Stored beyond one per message the API accepted.
    pub duplicates: u64,
    /// Messages that ended in another status, by status.
    pub not_sent: BTreeMap<String, u64>,
    /// Messages whose events were read.
    pub events_checked: u64,
    /// Messages whose events were wrong (not one `queued`, one `claimed`
    /// or more, one `sent`) or could not be read.
    pub event_problems: u64,
    /// Stored for requests whose answer never reached the client: counted
    /// as the run's, not as duplicates.
    pub unanswered_stored: u64,
    /// Why waiting for delivery stopped early, if it did.
    pub gave_up: Option<String>,
    /// Some of the problems, quoted.
    pub examples: Vec<String>,
    /// No message lost, duplicated, undelivered or badly tracked.
    pub passed: bool,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn latency(messages: &[ListedMessage]) -> Option<Latency> {
    let mut ms: Vec<i64> = messages
        .iter()
        .filter_map(|m| {
            m.sent_at
                .map(|sent| (sent - m.created_at).num_milliseconds())
        })
        .collect();
    if ms.is_empty() {
        return None;
    }
    ms.sort_unstable();
    let sum: i64 = ms.iter().sum();
    Some(Latency {
        count: ms.len() as u64,
        p50: percentile(&ms, 0.50),
        p95: percentile(&ms, 0.95),
        p99: percentile(&ms, 0.99),
        max: ms[ms.len() - 1],
        mean: sum as f64 / ms.len() as f64,
    })
}

fn end_to_end(messages: &[ListedMessage], wait: Duration) -> Option<EndToEnd> {
    let sent: Vec<&ListedMessage> = messages.iter().filter(|m| m.sent_at.is_some()).collect();
    let first_created = sent.iter().map(|m| m.created_at).min()?;
    let last_created = sent.iter().map(|m| m.created_at).max()?;
    let last_sent = sent.iter().filter_map(|m| m.sent_at).max()?;
    let seconds = (last_sent - first_created).num_milliseconds() as f64 / 1000.0;
    let sent_while_enqueuing = sent
        .iter()
        .filter(|m| m.sent_at.is_some_and(|at| at <= last_created))
        .count() as u64;
    let drain_ms = (last_sent - last_created).num_milliseconds();
    let drained = sent.len() as u64 - sent_while_enqueuing;
    // A rate over a handful of stragglers says nothing.
    const MIN_DRAINED: u64 = 100;
    Some(EndToEnd {
        sent: sent.len() as u64,
        seconds,
        messages_per_second: rate(sent.len() as u64, seconds),
        last_enqueue_to_last_sent_ms: drain_ms,
        sent_while_enqueuing,
        drain_messages_per_second: (drained >= MIN_DRAINED && drain_ms > 0)
            .then(|| rate(drained, drain_ms as f64 / 1000.0)),
        client_wait_seconds: wait.as_secs_f64(),
    })
}

fn rate(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
}

impl Report {
    pub(crate) fn new(inputs: Inputs<'_>) -> Report {
        let Inputs {
            args,
            run_id,
            warmup,
            transport,
            server,
            local_store,
            loaded,
            stored,
            verification,
            delivery_wait,
            events_read,
            interrupted,
        } = inputs;
        let accepted = loaded.accepted.len() as u64;
        let seconds = loaded.elapsed.as_secs_f64();
        Report {
            run: run_id,
            herald_version: server.version,
            machine: Machine {
                cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
                cpu: cpu_model(),
                os: std::env::consts::OS,
            },
            target: Target {
                server: args.url.clone().unwrap_or_else(|| "in-process".into()),
                store: local_store,
                backend: server.backend,
                transport: transport.to_owned(),
            },
            load: Load {
                messages: args.messages,
                batch_size: args.batch_size,
                clients: args.clients,
                rate: args.rate,
                payload_bytes: args.payload_bytes,
                warmup,
                deliver_after: args.deliver_after,
            },
            enqueue: Enqueue {
                accepted,
                requests: loaded.requests,
                seconds,
                messages_per_second: rate(accepted, seconds),
                errors: loaded.errors.clone(),
                first_error: loaded.first_error.clone(),
            },
            end_to_end: end_to_end(&stored.messages, delivery_wait),
            latency_ms: latency(&stored.messages),
            verification,
            events_read_seconds: events_read.as_secs_f64(),
            interrupted,
        }
    }

    /// The report as a table, one figure per line.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = self.write_table(&mut out);
        out
    }

    fn write_table(&self, out: &mut String) -> std::fmt::Result {
        let unknown = || "?".to_owned();
        writeln!(
            out,
            "herald bench {}: herald {}, {} storage, {} cores{}, {}",
            self.run,
            self.herald_version.clone().unwrap_or_else(unknown),
            self.target.backend.clone().unwrap_or_else(unknown),
            self.machine.cores,
            self.machine
                .cpu
                .as_ref()
                .map_or_else(String::new, |cpu| format!(" ({cpu})")),
            self.machine.os
        )?;
        writeln!(
            out,
            "  target      {} server{}, transport {}",
            self.target.server,
            self.target
                .store
                .as_ref()
                .map_or_else(String::new, |store| format!(" on {store}")),
            self.target.transport
        )?;
        let mode = match self.load.rate {
            Some(rate) => format!("open loop at {} messages/s", thousands(rate as f64)),
            None => format!("closed loop, {} clients", self.load.clients),
        };
        writeln!(
            out,
            "  load        {} messages, {}, {mode}, {}-byte bodies, after {} warm-up messages{}{}",
            thousands(self.load.messages as f64),
            if self.load.batch_size == 1 {
                "single enqueues".to_owned()
            } else {
                format!("batches of {}", self.load.batch_size)
            },
            self.load.payload_bytes,
            thousands(self.load.warmup as f64),
            if self.load.deliver_after {
                ", delivery held until all were enqueued"
            } else {
                ""
            },
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        )?;
        let errors = if self.enqueue.errors.is_empty() {
            "no errors".to_owned()
        } else {
            let list: Vec<String> = self
                .enqueue
                .errors
                .iter()
                .map(|(status, count)| format!("{count} x {status}"))
                .collect();
            format!("errors: {}", list.join(", "))
        };
        writeln!(
            out,
            "  enqueue     {} accepted in {:.2} s: {} messages/s ({} requests, {errors})",
            thousands(self.enqueue.accepted as f64),
            self.enqueue.seconds,
            thousands(self.enqueue.messages_per_second),
            thousands(self.enqueue.requests as f64),
        )?;
        if let Some(first) = &self.enqueue.first_error {
            writeln!(out, "              first error: {first}")?;
        }
        match &self.end_to_end {
            Some(e2e) => {
                writeln!(
                    out,
                    "  end to end  {} sent in {:.2} s: {} messages/s (first enqueue -> last sent)",
                    thousands(e2e.sent as f64),
                    e2e.seconds,
                    thousands(e2e.messages_per_second),
                )?;
                writeln!(
                    out,
                    "              {} sent while enqueuing; the last sent {} ms after the last enqueue{}",
                    thousands(e2e.sent_while_enqueuing as f64),
                    e2e.last_enqueue_to_last_sent_ms,
                    e2e.drain_messages_per_second
                        .map_or_else(String::new, |r| format!(
                            ", the rest at {} messages/s",
                            thousands(r)
                        ))
                )?;
            }
            None => writeln!(out, "  end to end  nothing sent")?,
        }
        if let Some(l) = &self.latency_ms {
            writeln!(
                out,
                "  latency     enqueue -> sent p50 {} ms, p95 {} ms, p99 {} ms, max {} ms (mean {:.1} ms, {} messages)",
                l.p50,
                l.p95,
                l.p99,
                l.max,
                l.mean,
                thousands(l.count as f64)
            )?;
        }
        let v = &self.verification;
        let not_sent: u64 = v.not_sent.values().sum();
        writeln!(
            out,
            "  verified    {} enqueued, {} sent exactly once with their events; {} lost, {} duplicates, {} not sent, {} with wrong events ({} read in {:.1} s): {}",
            thousands(v.enqueued as f64),
            thousands(v.sent as f64),
            v.lost,
            v.duplicates,
            not_sent,
            v.event_problems,
            thousands(v.events_checked as f64),
            self.events_read_seconds,
            if v.passed { "PASSED" } else { "FAILED" }
        )?;
        if let Some(reason) = &v.gave_up {
            writeln!(out, "              stopped waiting: {reason}")?;
        }
        for example in &v.examples {
            writeln!(out, "              {example}")?;
        }
        Ok(())
    }
}

/// `12345.6` -> `12,346`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    fn sent(created: i64, sent: i64) -> ListedMessage {
        ListedMessage {
            id: format!("{created}-{sent}"),
            status: "sent".into(),
            metadata: serde_json::Value::Null,
            created_at: t(created),
            sent_at: Some(t(sent)),
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.50), 50);
        assert_eq!(percentile(&values, 0.99), 99);
        assert_eq!(percentile(&values, 1.0), 100);
        assert_eq!(percentile(&[7], 0.99), 7);
    }

    #[test]
    fn latency_is_sent_at_minus_created_at() {
        let messages: Vec<ListedMessage> = (0..100).map(|i| sent(i, i + 1 + i % 10)).collect();
        let l = latency(&messages).unwrap();
        assert_eq!((l.count, l.p50, l.max), (100, 5, 10));
        assert!((l.mean - 5.5).abs() < 1e-9);
    }

    #[test]
    fn end_to_end_runs_from_the_first_enqueue_to_the_last_send() {
        let messages = vec![sent(0, 100), sent(500, 1000), sent(900, 2000)];
        let e2e = end_to_end(&messages, Duration::from_secs(1)).unwrap();
        assert_eq!(e2e.sent, 3);
        assert!((e2e.seconds - 2.0).abs() < 1e-9);
        assert!((e2e.messages_per_second - 1.5).abs() < 1e-9);
        assert_eq!(e2e.last_enqueue_to_last_sent_ms, 1100);
        assert_eq!(e2e.sent_while_enqueuing, 1);
        assert_eq!(e2e.drain_messages_per_second, None, "too few to rate");

        // 100 created at once, then drained over a second.
        let messages: Vec<ListedMessage> = (0..100).map(|i| sent(0, 10 * (i + 1))).collect();
        let e2e = end_to_end(&messages, Duration::ZERO).unwrap();
        assert_eq!(e2e.sent_while_enqueuing, 0);
        assert!((e2e.drain_messages_per_second.unwrap() - 100.0).abs() < 1e-9);
    }

    #[test]
    fn large_numbers_get_separators() {
        assert_eq!(thousands(12345.6), "12,346");
        assert_eq!(thousands(100.0), "100");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
    }
}
