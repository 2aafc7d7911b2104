//! The enqueue load: what each message looks like, and the two ways of
//! sending them. Closed loop: `--clients` workers, each sending its next
//! request when the previous one is answered (throughput). Open loop:
//! requests start on a fixed schedule at `--rate`, answered or not, as
//! independent clients would send them (latency at a given load).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::api::{Api, BatchResults, Enqueued};
use super::{BenchArgs, Interrupts};

/// Metadata key that marks a run's messages.
pub(crate) const RUN_KEY: &str = "herald_bench";
/// Metadata key of a message's sequence number within its run.
pub(crate) const SEQ_KEY: &str = "seq";
/// The category every bench message carries, so operators can tell them
/// apart in their analytics.
const CATEGORY: &str = "herald-bench";

/// Most open-loop requests in flight at once: a bound on what a stalled
/// server can make the client hold, far above what a healthy one needs.
const MAX_IN_FLIGHT: usize = 4096;

/// What to send.
pub(crate) struct Plan {
    pub messages: u64,
    pub batch_size: u64,
    pub clients: usize,
    pub rate: Option<u64>,
    pub transport: String,
    pub run_id: String,
    text: String,
}

#[derive(Serialize)]
struct Outgoing<'a> {
    channel: &'static str,
    transport: &'a str,
    category: &'static str,
    metadata: Marks<'a>,
    email: Email<'a>,
}

#[derive(Serialize)]
struct Marks<'a> {
    herald_bench: &'a str,
    seq: u64,
}

#[derive(Serialize)]
struct Email<'a> {
    from: &'static str,
    to: [String; 1],
    subject: String,
    text: &'a str,
}

#[derive(Serialize)]
struct Batch<'a> {
    messages: Vec<Outgoing<'a>>,
}

impl Plan {
    /// `messages` of the run `run_id` (the measured run, or its warm-up).
    pub(crate) fn new(args: &BenchArgs, transport: &str, run_id: &str, messages: u64) -> Plan {
        Plan {
            messages,
            batch_size: args.batch_size,
            clients: args.clients as usize,
            rate: args.rate,
            transport: transport.to_owned(),
            run_id: run_id.to_owned(),
            text: body_text(args.payload_bytes),
        }
    }

    /// Requests needed for all messages.
    pub(crate) fn requests(&self) -> u64 {
        self.messages.div_ceil(self.batch_size)
    }

    /// The sequence numbers request `index` carries.
    pub(crate) fn chunk(&self, index: u64) -> Range<u64> {
        let start = index * self.batch_size;
        start..(start + self.batch_size).min(self.messages)
    }

    fn message(&self, seq: u64) -> Outgoing<'_> {
        Outgoing {
            channel: "email",
            transport: &self.transport,
            category: CATEGORY,
            metadata: Marks {
                herald_bench: &self.run_id,
                seq,
            },
            email: Email {
                // `.invalid` never resolves: a run against a real SMTP
                // transport cannot reach anyone by accident.
                from: "herald-bench@example.invalid",
                to: [format!("recipient-{seq}@example.invalid")],
                subject: format!("herald bench {} #{seq}", self.run_id),
                text: &self.text,
            },
        }
    }

    /// The path and body of the request carrying `seqs`.
    pub(crate) fn request(&self, seqs: Range<u64>) -> (&'static str, serde_json::Result<Vec<u8>>) {
        if self.batch_size == 1 {
            (
                "/api/messages",
                serde_json::to_vec(&self.message(seqs.start)),
            )
        } else {
            let batch = Batch {
                messages: seqs.map(|seq| self.message(seq)).collect(),
            };
            ("/api/messages/batch", serde_json::to_vec(&batch))
        }
    }
}

/// `bytes` of readable text (at least one: an email needs a body).
fn body_text(bytes: usize) -> String {
    const FILLER: &str = "Thank you for your order. It will ship within two working days. ";
    FILLER.chars().cycle().take(bytes.max(1)).collect()
}

/// What the enqueue phase achieved.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// (sequence number, id) of every message the API accepted.
    pub accepted: Vec<(u64, String)>,
    /// Sequence numbers sent in requests whose answer never arrived: they
    /// may or may not be stored.
    pub unanswered: Vec<u64>,
    /// Messages not accepted, by HTTP status or by cause.
    pub errors: BTreeMap<String, u64>,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
    pub requests: u64,
    /// First request sent to last answer received.
    pub elapsed: Duration,
    /// Ctrl-C stopped the enqueuing early.
    pub interrupted: bool,
}

impl Loaded {
    fn merge(&mut self, other: Loaded) {
        self.accepted.extend(other.accepted);
        self.unanswered.extend(other.unanswered);
        for (key, count) in other.errors {
            *self.errors.entry(key).or_default() += count;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.requests += other.requests;
    }

    fn error(&mut self, key: String, count: u64, detail: String) {
        *self.errors.entry(key).or_default() += count;
        if self.first_error.is_none() {
            self.first_error = Some(detail);
        }
    }
}

/// Sends one request and records its answer.
async fn send(api: &Api, plan: &Plan, seqs: Range<u64>, into: &mut Loaded) {
    let count = seqs.end - seqs.start;
    into.requests += 1;
    let (path, body) = plan.request(seqs.clone());
    let body = match body {
        Ok(body) => body,
        Err(err) => {
            into.error("unencodable".into(), count, err.to_string());
            return;
        }
    };
    let response = match api.post(path, body).await {
        Ok(response) => response,
        Err(err) => {
            let cause = if err.is_timeout() {
                "timeout"
            } else {
                "connection"
            };
            into.unanswered.extend(seqs);
            into.error(cause.into(), count, format!("POST {path}: {err}"));
            return;
        }
    };
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        into.error(
            status.as_u16().to_string(),
            count,
            format!("POST {path}: {status}: {body}"),
        );
        return;
    }
    let ids = if plan.batch_size == 1 {
        response.json::<Enqueued>().await.map(|e| vec![e.id])
    } else {
        response
            .json::<BatchResults>()
            .await
            .map(|b| b.results.into_iter().map(|r| r.id).collect())
    };
    match ids {
        Ok(ids) if ids.len() as u64 == count => into.accepted.extend(seqs.zip(ids)),
        Ok(ids) => {
            into.unanswered.extend(seqs);
            into.error(
                "unreadable answer".into(),
                count,
                format!("POST {path}: {} results for {count} messages", ids.len()),
            );
        }
        Err(err) => {
            into.unanswered.extend(seqs);
            into.error(
                "unreadable answer".into(),
                count,
                format!("POST {path}: {status}: {err}"),
            );
        }
    }
}

fn progress_bar(label: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{label} [{{bar:30}}] {{pos}}/{{len}} messages, {{per_sec}}, {{elapsed}} (Ctrl-C stops)"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Enqueues the plan's messages (closed or open loop) until done or
/// interrupted.
pub(crate) async fn run(
    api: &Api,
    plan: &Arc<Plan>,
    label: &str,
    interrupts: &Interrupts,
) -> Loaded {
    let bar = progress_bar(label, plan.messages);
    let started = Instant::now();
    let mut loaded = match plan.rate {
        None => closed_loop(api, plan, interrupts, &bar).await,
        Some(rate) => open_loop(api, plan, rate, interrupts, &bar).await,
    };
    loaded.elapsed = started.elapsed();
    loaded.interrupted = interrupts.count() > 0;
    bar.finish_and_clear();
    loaded
}

async fn closed_loop(
    api: &Api,
    plan: &Arc<Plan>,
    interrupts: &Interrupts,
    bar: &ProgressBar,
) -> Loaded {
    let next_request = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..plan.clients {
        let (api, plan, next_request) = (api.clone(), plan.clone(), next_request.clone());
        let (interrupts, bar) = (interrupts.clone(), bar.clone());
        workers.spawn(async move {
            let mut loaded = Loaded::default();
            while interrupts.count() == 0 {
                let index = next_request.fetch_add(1, Ordering::Relaxed);
                if index >= plan.requests() {
                    break;
                }
                let seqs = plan.chunk(index);
                bar.inc(seqs.end - seqs.start);
                send(&api, &plan, seqs, &mut loaded).await;
            }
            loaded
        });
    }
    let mut loaded = Loaded::default();
    while let Some(done) = workers.join_next().await {
        match done {
            Ok(part) => loaded.merge(part),
            Err(err) => loaded.error("client task failed".into(), 0, err.to_string()),
        }
    }
    loaded
}

async fn open_loop(
    api: &Api,
    plan: &Arc<Plan>,
    rate: u64,
    interrupts: &Interrupts,
    bar: &ProgressBar,
) -> Loaded {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(
        plan.batch_size as f64 / rate as f64,
    ));
    // A late tick fires at once: the schedule, not the previous answer,
    // decides when a request starts.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut requests = JoinSet::new();
    let mut loaded = Loaded::default();
    for index in 0..plan.requests() {
        let permit = tokio::select! {
            biased;
            _ = interrupts.reached(1) => break,
            permit = async {
                tick.tick().await;
                in_flight.clone().acquire_owned().await
            } => permit,
        };
        let Ok(permit) = permit else { break };
        let (api, plan) = (api.clone(), plan.clone());
        let seqs = plan.chunk(index);
        bar.inc(seqs.end - seqs.start);
        requests.spawn(async move {
            let mut part = Loaded::default();
            send(&api, &plan, seqs, &mut part).await;
            drop(permit);
            part
        });
        while let Some(done) = requests.try_join_next() {
            merge_task(&mut loaded, done);
        }
    }
    while let Some(done) = requests.join_next().await {
        merge_task(&mut loaded, done);
    }
    loaded
}

fn merge_task(loaded: &mut Loaded, done: Result<Loaded, tokio::task::JoinError>) {
    match done {
        Ok(part) => loaded.merge(part),
        Err(err) => loaded.error("client task failed".into(), 0, err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(messages: u64, batch_size: u64) -> Plan {
        Plan {
            messages,
            batch_size,
            clients: 1,
            rate: None,
            transport: "null".into(),
            run_id: "run1".into(),
            text: body_text(10),
        }
    }

    #[test]
    fn chunks_cover_every_message_once() {
        let plan = plan(250, 100);
        assert_eq!(plan.requests(), 3);
        let chunks: Vec<_> = (0..plan.requests()).map(|i| plan.chunk(i)).collect();
        assert_eq!(chunks, vec![0..100, 100..200, 200..250]);
    }

    #[test]
    fn a_message_carries_its_run_and_sequence() {
        let plan = plan(3, 1);
        let (path, body) = plan.request(2..3);
        assert_eq!(path, "/api/messages");
        let body: serde_json::Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(body["metadata"][RUN_KEY], "run1");
        assert_eq!(body["metadata"][SEQ_KEY], 2);
        assert_eq!(body["transport"], "null");
        assert_eq!(body["email"]["text"].as_str().unwrap().len(), 10);
    }

    #[test]
    fn a_batch_request_holds_its_chunk() {
        let plan = plan(5, 2);
        let (path, body) = plan.request(plan.chunk(2));
        assert_eq!(path, "/api/messages/batch");
        let body: serde_json::Value = serde_json::from_slice(&body.unwrap()).unwrap();
        let seqs: Vec<_> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["metadata"][SEQ_KEY].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, vec![4]);
    }

    #[test]
    fn the_body_is_never_empty() {
        assert_eq!(body_text(0).len(), 1);
        assert_eq!(body_text(1000).len(), 1000);
    }
}
