//! The group transports, `failover` and `round_robin`: one name in front
//! of several plain transports. A group delivers through its members'
//! own gates (rate limiter and circuit breaker, see
//! [`Gate`](crate::engine::Gate)), the same
//! ones their direct traffic passes through, so a member's limits hold for
//! the sum of both. Within one attempt a group moves on to the next member
//! when one fails transiently; a permanent failure stops there (another
//! member would refuse the message too). A member whose breaker is open is
//! skipped; with every member's breaker open nothing is tried and the
//! attempt comes back [`TransportError::Unavailable`].
//!
//! A member at its rate limit: `failover` waits for it, since a backup is
//! for when the primary fails, not for when it is busy; `round_robin`
//! passes it over for the next member that has room, and waits for the
//! first to free up when none has.
//!
//! It owns the two kinds' part of the config: the `[transports.<name>]` keys
//! they take, their checks, and the transport built from them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use serde::Deserialize;
use tokio::time::Instant;

use super::{
    Attempted, Delivery, Gated, KindSpec, MemberFailure, Transport, TransportError, TransportKind,
    within,
};
use crate::config::{KindTable, TransportSettings};
use crate::domain::Message;
use crate::time::Clock;

// Registered in `super::KINDS`; unregistered, it would be dead code.
pub(super) const FAILOVER: KindSpec = KindSpec {
    name: "failover",
    keys: GROUP_KEYS,
    channels: &[],
    native: &[],
    configure: |table| configure(table, WhenLimited::Wait),
};

pub(super) const ROUND_ROBIN: KindSpec = KindSpec {
    name: "round_robin",
    keys: GROUP_KEYS,
    channels: &[],
    native: &[],
    configure: |table| configure(table, WhenLimited::PassOver),
};

const GROUP_KEYS: &[&str] = &["members"];

/// The group kinds' keys of `[transports.<name>]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupKeys {
    /// Member transports, in order. Required.
    members: Option<Vec<String>>,
}

/// A group's settings. That its members exist and are not groups is
/// checked across transports, once config validation has read them all.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    pub members: Vec<String>,
    when_limited: WhenLimited,
}

fn configure(
    table: &mut KindTable<'_>,
    when_limited: WhenLimited,
) -> Option<Arc<dyn TransportKind>> {
    let keys: GroupKeys = table.keys()?;
    let members = keys.members.unwrap_or_default();
    if members.is_empty() {
        table.problem("members", "a group needs at least one member");
        return None;
    }
    Some(Arc::new(GroupSettings {
        members,
        when_limited,
    }))
}

impl TransportKind for GroupSettings {
    fn name(&self) -> &'static str {
        match self.when_limited {
            WhenLimited::Wait => "failover",
            WhenLimited::PassOver => "round_robin",
        }
    }

    fn members(&self) -> &[String] {
        &self.members
    }

    fn build(
        &self,
        settings: &TransportSettings,
        members: Vec<Gated>,
        _clock: Arc<dyn Clock>,
    ) -> Result<Arc<dyn Transport>, TransportError> {
        let name = settings.name.clone();
        Ok(match self.when_limited {
            WhenLimited::Wait => Arc::new(FailoverTransport::new(name, members)?),
            WhenLimited::PassOver => Arc::new(RoundRobinTransport::new(name, members)?),
        })
    }
}

/// When a member at its rate limit is passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhenLimited {
    /// Wait for the member: the order is a preference.
    Wait,
    /// Use the next member with room: the order only spreads load.
    PassOver,
}

/// The members in the order one delivery tries them.
struct Members {
    group: String,
    members: Vec<Gated>,
    when_limited: WhenLimited,
}

impl Members {
    fn new(
        group: String,
        members: Vec<Gated>,
        when_limited: WhenLimited,
    ) -> Result<Self, TransportError> {
        if members.is_empty() {
            return Err(TransportError::Local(format!(
                "transport `{group}`: a group needs at least one member"
            )));
        }
        Ok(Members {
            group,
            members,
            when_limited,
        })
    }

    /// Any member's breaker lets a call through (asking turns an open
    /// breaker whose open time has passed half-open, ready for a probe).
    fn any_permitted(&self) -> bool {
        // Every breaker is asked, not just up to the first yes: each one
        // that is due moves to half-open now.
        let mut any = false;
        for member in &self.members {
            any |= member.gate.breaker().permits();
        }
        any
    }

    /// Takes rate-limit room on one of `candidates` (in order of
    /// preference), waiting if need be; answers its index.
    async fn acquire(&self, candidates: &[&Gated]) -> usize {
        if self.when_limited == WhenLimited::PassOver
            && let Some(free) = candidates.iter().position(|m| m.gate.try_acquire())
        {
            return free;
        }
        match self.when_limited {
            WhenLimited::Wait => {
                candidates[0].gate.until_ready().await;
                0
            }
            WhenLimited::PassOver => {
                // Each wait takes room only when it completes, and
                // select_all stops at the first that does: one is taken.
                let waits = candidates.iter().map(|m| m.gate.until_ready().boxed());
                let ((), index, _) = futures::future::select_all(waits).await;
                index
            }
        }
    }

    /// One attempt over the members, starting at `first` and wrapping
    /// around, each call given at most `limit`.
    async fn attempt(&self, message: &Message, first: usize, limit: Duration) -> Attempted {
        let count = self.members.len();
        let mut candidates: Vec<&Gated> = (0..count)
            .map(|i| &self.members[(first + i) % count])
            .collect();
        let mut passed_over: Vec<MemberFailure> = Vec::new();
        let mut limited = Duration::ZERO;
        let end = |member, result, passed_over, limited| Attempted {
            member,
            result,
            passed_over,
            limited,
        };
        loop {
            candidates.retain(|m| m.gate.breaker().permits());
            if candidates.is_empty() {
                // The last failure ends the attempt; the ones before it
                // were passed over.
                return match passed_over.pop() {
                    Some(last) => end(last.member, Err(last.error), passed_over, limited),
                    None => {
                        let err = TransportError::Unavailable(format!(
                            "every member of `{}` has its circuit open",
                            self.group
                        ));
                        end(self.group.clone(), Err(err), passed_over, limited)
                    }
                };
            }
            let waited = Instant::now();
            let index = self.acquire(&candidates).await;
            limited += waited.elapsed();
            let member = candidates.remove(index);
            // The wait may have been long enough for the breaker to open.
            if !member.gate.breaker().permits() {
                continue;
            }
            let name = member.transport.name().to_owned();
            let started = Instant::now();
            let result = within(limit, member.transport.deliver(message)).await;
            let took = started.elapsed();
            member
                .gate
                .breaker()
                .record_attempt(result.as_ref().map(|_| ()));
            match result {
                Ok(delivery) => {
                    return end(name, Ok(delivery), passed_over, limited);
                }
                Err(err) if err.is_permanent() => {
                    return end(name, Err(err), passed_over, limited);
                }
                Err(err) => {
                    tracing::warn!(
                        group = %self.group,
                        member = %name,
                        stamp = %message.id,
                        cause = %err,
                        "group member failed"
                    );
                    passed_over.push(MemberFailure {
                        member: name,
                        error: err,
                        took,
                    });
                }
            }
        }
    }
}

/// Tries its members in configured order: the first is the primary.
pub struct FailoverTransport {
    members: Members,
}

impl FailoverTransport {
    /// A failover over `members`, the first being the primary.
    pub fn new(name: impl Into<String>, members: Vec<Gated>) -> Result<Self, TransportError> {
        Ok(FailoverTransport {
            members: Members::new(name.into(), members, WhenLimited::Wait)?,
        })
    }
}

#[async_trait]
impl Transport for FailoverTransport {
    fn name(&self) -> &str {
        &self.members.group
    }

    fn kind(&self) -> &'static str {
        "failover"
    }

    async fn deliver(&self, message: &Message) -> Result<Delivery, TransportError> {
        self.attempt(message, Duration::MAX).await.result
    }

    async fn attempt(&self, message: &Message, limit: Duration) -> Attempted {
        self.members.attempt(message, 0, limit).await
    }

    fn is_available(&self) -> bool {
        self.members.any_permitted()
    }
}

/// Spreads deliveries over its members in turn.
pub struct RoundRobinTransport {
    members: Members,
    next: AtomicUsize,
}

impl RoundRobinTransport {
    /// A rotation over `members`.
    pub fn new(name: impl Into<String>, members: Vec<Gated>) -> Result<Self, TransportError> {
        Ok(RoundRobinTransport {
            members: Members::new(name.into(), members, WhenLimited::PassOver)?,
            next: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl Transport for RoundRobinTransport {
    fn name(&self) -> &str {
        &self.members.group
    }

    fn kind(&self) -> &'static str {
        "round_robin"
    }

    async fn deliver(&self, message: &Message) -> Result<Delivery, TransportError> {
        self.attempt(message, Duration::MAX).await.result
    }

    async fn attempt(&self, message: &Message, limit: Duration) -> Attempted {
        // Relaxed is enough: the counter only spreads load, it orders
        // nothing else.
        let first = self.next.fetch_add(1, Ordering::Relaxed) % self.members.members.len();
        self.members.attempt(message, first, limit).await
    }

    fn is_available(&self) -> bool {
        self.members.any_permitted()
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::sync::Arc;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU32;

    use governor::Quota;

    use super::*;
    use crate::domain::Channel;
    use crate::engine::{Breaker, CircuitState, Gate};
    use crate::time::SystemClock;
    use crate::transports::tests::message;

    /// A member whose answers the test scripts; the groups' logic, not
    /// the member, is under test here.
    struct Scripted {
        name: &'static str,
        fail_with: Mutex<Option<TransportError>>,
        calls: AtomicU32,
    }

    impl Scripted {
        fn new(name: &'static str, fail_with: Option<TransportError>) -> Arc<Scripted> {
            Arc::new(Scripted {
                name,
                fail_with: Mutex::new(fail_with),
                calls: AtomicU32::new(0),
            })
        }

        fn calls(&self) -> u32 {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl Transport for Scripted {
        fn name(&self) -> &str {
            self.name
        }
        fn kind(&self) -> &'static str {
            "null"
        }
        async fn deliver(&self, _message: &Message) -> Result<Delivery, TransportError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match self.fail_with.lock().unwrap().clone() {
                Some(err) => Err(err),
                None => Ok(Delivery::by(self.name)),
            }
        }
    }

    fn down() -> Option<TransportError> {
        Some(TransportError::Connection("refused".into()))
    }

    fn email() -> Message {
        message(Channel::Email, serde_json::json!({}))
    }

    fn per_minute(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    /// `member` behind a gate of `quota` whose breaker opens after
    /// `threshold` failures, for long enough that no test sees it end.
    fn gated(member: &Arc<Scripted>, quota: Quota, threshold: u32) -> Gated {
        let breaker = Breaker::new(
            member.name,
            threshold,
            Duration::from_secs(600),
            Arc::new(SystemClock),
        );
        Gated {
            transport: Arc::clone(member) as Arc<dyn Transport>,
            gate: Gate::new(quota, breaker),
        }
    }

    /// No limit to speak of, a breaker that opens after `threshold` failures.
    fn roomy(member: &Arc<Scripted>, threshold: u32) -> Gated {
        gated(member, Quota::per_minute(per_minute(60_000)), threshold)
    }

    #[tokio::test]
    async fn failover_skips_a_member_whose_breaker_is_open() {
        let primary = Scripted::new("primary", down());
        let backup = Scripted::new("backup", None);
        let primary_gate = roomy(&primary, 1);
        let breaker = primary_gate.gate.breaker().clone();
        let group = FailoverTransport::new("mail", vec![primary_gate, roomy(&backup, 5)]).unwrap();

        let first = group.attempt(&email(), Duration::MAX).await;
        assert_eq!(first.result.unwrap().transport, "backup");
        assert_eq!(first.member, "backup");
        let passed: Vec<&str> = first
            .passed_over
            .iter()
            .map(|f| f.member.as_str())
            .collect();
        assert_eq!(passed, ["primary"], "the failed member is reported");
        assert!(first.passed_over[0].error.is_transient());
        assert_eq!(breaker.state(), CircuitState::Open);

        let second = group.attempt(&email(), Duration::MAX).await;
        assert_eq!(second.result.unwrap().transport, "backup");
        assert!(second.passed_over.is_empty());
        assert_eq!(primary.calls(), 1, "the open primary is skipped");
    }

    #[tokio::test]
    async fn a_permanent_failure_stops_the_failover() {
        let primary = Scripted::new(
            "primary",
            Some(TransportError::Rejected {
                code: Some(550),
                message: "no such user".into(),
            }),
        );
        let backup = Scripted::new("backup", None);
        let primary_gate = roomy(&primary, 1);
        let breaker = primary_gate.gate.breaker().clone();
        let group = FailoverTransport::new("mail", vec![primary_gate, roomy(&backup, 5)]).unwrap();
        let err = group.deliver(&email()).await.unwrap_err();
        assert!(err.is_permanent());
        assert_eq!(backup.calls(), 0);
        assert_eq!(
            breaker.state(),
            CircuitState::Closed,
            "a refused message does not count against the member"
        );
    }

    #[tokio::test]
    async fn when_every_member_fails_the_last_one_ends_the_attempt() {
        let a = Scripted::new("a", down());
        let b = Scripted::new("b", Some(TransportError::Timeout("slow".into())));
        let group = FailoverTransport::new("mail", vec![roomy(&a, 5), roomy(&b, 5)]).unwrap();
        let attempted = group.attempt(&email(), Duration::MAX).await;
        assert!(attempted.result.unwrap_err().is_timeout());
        assert_eq!(attempted.member, "b");
        let passed: Vec<&str> = attempted
            .passed_over
            .iter()
            .map(|f| f.member.as_str())
            .collect();
        assert_eq!(passed, ["a"]);
        // Both breakers are still closed: the next message tries both.
        assert!(group.deliver(&email()).await.is_err());
        assert_eq!((a.calls(), b.calls()), (2, 2));
    }

    #[tokio::test]
    async fn with_every_breaker_open_nothing_is_tried() {
        let a = Scripted::new("a", down());
        let b = Scripted::new("b", down());
        let group = RoundRobinTransport::new("spread", vec![roomy(&a, 1), roomy(&b, 1)]).unwrap();
        assert!(group.is_available());
        assert!(group.deliver(&email()).await.is_err());
        assert!(!group.is_available(), "both breakers are open");
        let attempted = group.attempt(&email(), Duration::MAX).await;
        assert!(attempted.result.unwrap_err().is_unavailable());
        assert_eq!(attempted.member, "spread");
        assert_eq!((a.calls(), b.calls()), (1, 1), "nothing more was tried");
    }

    #[tokio::test]
    async fn round_robin_rotates_and_passes_over_a_failing_member() {
        let a = Scripted::new("a", None);
        let b = Scripted::new("b", None);
        let c = Scripted::new("c", None);
        let group =
            RoundRobinTransport::new("spread", vec![roomy(&a, 5), roomy(&b, 1), roomy(&c, 5)])
                .unwrap();
        let mut used = Vec::new();
        for _ in 0..6 {
            used.push(group.deliver(&email()).await.unwrap().transport);
        }
        assert_eq!(used, ["a", "b", "c", "a", "b", "c"]);

        *b.fail_with.lock().unwrap() = down();
        let mut used = Vec::new();
        for _ in 0..3 {
            used.push(group.deliver(&email()).await.unwrap().transport);
        }
        assert_eq!(used, ["a", "c", "c"]);
        assert_eq!(
            b.calls(),
            3,
            "b, open after its failure, is not tried again"
        );
    }

    #[tokio::test]
    async fn round_robin_passes_over_a_member_at_its_rate_limit() {
        let a = Scripted::new("a", None);
        let b = Scripted::new("b", None);
        // One delivery a minute, no burst: `a` has room for one.
        let scarce = gated(&a, Quota::per_minute(per_minute(1)), 5);
        let group = RoundRobinTransport::new("spread", vec![scarce, roomy(&b, 5)]).unwrap();
        let mut used = Vec::new();
        for _ in 0..4 {
            used.push(group.deliver(&email()).await.unwrap().transport);
        }
        assert_eq!(used, ["a", "b", "b", "b"]);
    }

    #[tokio::test]
    async fn failover_waits_for_a_primary_at_its_rate_limit() {
        let primary = Scripted::new("primary", None);
        let backup = Scripted::new("backup", None);
        // One delivery each 100 ms: the second waits for the primary
        // rather than going to the backup.
        let quota = Quota::with_period(Duration::from_millis(100)).unwrap();
        let group =
            FailoverTransport::new("mail", vec![gated(&primary, quota, 5), roomy(&backup, 5)])
                .unwrap();
        for _ in 0..2 {
            let delivery = group.deliver(&email()).await.unwrap();
            assert_eq!(delivery.transport, "primary");
        }
        assert_eq!(backup.calls(), 0);
    }

    #[test]
    fn a_group_without_members_is_refused() {
        assert!(FailoverTransport::new("empty", Vec::new()).is_err());
        assert!(RoundRobinTransport::new("empty", Vec::new()).is_err());
    }
}
