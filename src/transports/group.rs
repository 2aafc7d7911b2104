//! The group transports, `failover` and `round_robin`: one name in front
//! of several plain transports. Both move on to the next member when one
//! fails transiently, within the same attempt; a permanent failure stops
//! there (another member would refuse the message too). A member that
//! failed transiently is left alone for a cool-down, so a dead primary is
//! not tried, and waited for, on every message.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::domain::Message;

use super::{Delivery, Transport, TransportError};

/// One member and until when it is being left alone.
struct Member {
    transport: Arc<dyn Transport>,
    cool_down: Duration,
    /// Set after a transient failure, cleared by a success. A std mutex:
    /// it is held for a read or a write, never across an await.
    unhealthy_until: Mutex<Option<Instant>>,
}

impl Member {
    fn is_cooling(&self, now: Instant) -> bool {
        self.unhealthy_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some_and(|until| until > now)
    }

    fn mark(&self, healthy: bool) {
        let mut until = self
            .unhealthy_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *until = if healthy {
            None
        } else {
            Some(Instant::now() + self.cool_down)
        };
    }
}

/// The members in the order one delivery tries them.
struct Members {
    members: Vec<Member>,
}

impl Members {
    fn new(members: Vec<(Arc<dyn Transport>, Duration)>) -> Result<Self, TransportError> {
        if members.is_empty() {
            return Err(TransportError::Local(
                "a group needs at least one member".into(),
            ));
        }
        Ok(Members {
            members: members
                .into_iter()
                .map(|(transport, cool_down)| Member {
                    transport,
                    cool_down,
                    unhealthy_until: Mutex::new(None),
                })
                .collect(),
        })
    }

    /// Tries members starting at `first` and wrapping around, skipping
    /// those cooling down. When every member is cooling down they are all
    /// tried anyway: a group never fails a message without trying.
    async fn deliver(&self, message: &Message, first: usize) -> Result<Delivery, TransportError> {
        let now = Instant::now();
        let count = self.members.len();
        let rotation = (0..count).map(|i| &self.members[(first + i) % count]);
        let healthy: Vec<&Member> = rotation.clone().filter(|m| !m.is_cooling(now)).collect();
        let order = if healthy.is_empty() {
            rotation.collect()
        } else {
            healthy
        };
        let mut last_error = None;
        for member in order {
            match member.transport.deliver(message).await {
                Ok(delivery) => {
                    member.mark(true);
                    return Ok(delivery);
                }
                Err(err) if err.is_permanent() => return Err(err),
                Err(err) => {
                    tracing::warn!(
                        member = member.transport.name(),
                        stamp = %message.id,
                        cause = %err,
                        cool_down_ms = member.cool_down.as_millis() as u64,
                        "group member failed; trying the next"
                    );
                    member.mark(false);
                    last_error = Some(err);
                }
            }
        }
        // `order` is never empty (a group has members), so this fallback
        // is only for the type checker.
        Err(last_error.unwrap_or_else(|| TransportError::Local("the group has no members".into())))
    }
}

/// Tries its members in configured order: the first is the primary.
pub struct FailoverTransport {
    name: String,
    members: Members,
}

impl FailoverTransport {
    /// `members` with each one's cool-down after a transient failure.
    pub fn new(
        name: impl Into<String>,
        members: Vec<(Arc<dyn Transport>, Duration)>,
    ) -> Result<Self, TransportError> {
        let name = name.into();
        let members = Members::new(members)
            .map_err(|e| TransportError::Local(format!("transport `{name}`: {e}")))?;
        Ok(FailoverTransport { name, members })
    }
}

#[async_trait]
impl Transport for FailoverTransport {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "failover"
    }

    async fn deliver(&self, message: &Message) -> Result<Delivery, TransportError> {
        self.members.deliver(message, 0).await
    }
}

/// Spreads deliveries over its members in turn.
pub struct RoundRobinTransport {
    name: String,
    members: Members,
    next: AtomicUsize,
}

impl RoundRobinTransport {
    /// `members` with each one's cool-down after a transient failure.
    pub fn new(
        name: impl Into<String>,
        members: Vec<(Arc<dyn Transport>, Duration)>,
    ) -> Result<Self, TransportError> {
        let name = name.into();
        let members = Members::new(members)
            .map_err(|e| TransportError::Local(format!("transport `{name}`: {e}")))?;
        Ok(RoundRobinTransport {
            name,
            members,
            next: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl Transport for RoundRobinTransport {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "round_robin"
    }

    async fn deliver(&self, message: &Message) -> Result<Delivery, TransportError> {
        // Relaxed is enough: the counter only spreads load, it orders
        // nothing else.
        let first = self.next.fetch_add(1, Ordering::Relaxed) % self.members.members.len();
        self.members.deliver(message, first).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;
    use crate::domain::Channel;
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

        fn heal(&self) {
            *self.fail_with.lock().unwrap() = None;
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
                None => Ok(Delivery {
                    transport: self.name.to_owned(),
                    detail: None,
                }),
            }
        }
    }

    fn down() -> Option<TransportError> {
        Some(TransportError::Connection("refused".into()))
    }

    fn email() -> Message {
        message(Channel::Email, serde_json::json!({}))
    }

    const COOL_DOWN: Duration = Duration::from_secs(30);

    fn members(list: &[&Arc<Scripted>]) -> Vec<(Arc<dyn Transport>, Duration)> {
        list.iter()
            .map(|m| (Arc::clone(*m) as Arc<dyn Transport>, COOL_DOWN))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn failover_skips_a_dead_primary_until_its_cool_down_ends() {
        let primary = Scripted::new("primary", down());
        let backup = Scripted::new("backup", None);
        let group = FailoverTransport::new("mail", members(&[&primary, &backup])).unwrap();

        let first = group.deliver(&email()).await.unwrap();
        assert_eq!(first.transport, "backup");
        group.deliver(&email()).await.unwrap();
        assert_eq!(primary.calls(), 1, "the dead primary is skipped");

        primary.heal();
        tokio::time::advance(COOL_DOWN + Duration::from_millis(1)).await;
        let later = group.deliver(&email()).await.unwrap();
        assert_eq!(later.transport, "primary");
        assert_eq!(backup.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_stops_the_failover() {
        let primary = Scripted::new(
            "primary",
            Some(TransportError::Rejected {
                code: Some(550),
                message: "no such user".into(),
            }),
        );
        let backup = Scripted::new("backup", None);
        let group = FailoverTransport::new("mail", members(&[&primary, &backup])).unwrap();
        let err = group.deliver(&email()).await.unwrap_err();
        assert!(err.is_permanent());
        assert_eq!(backup.calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_member_fails_the_last_error_is_returned_and_all_are_tried_again() {
        let a = Scripted::new("a", down());
        let b = Scripted::new("b", Some(TransportError::Timeout("slow".into())));
        let group = FailoverTransport::new("mail", members(&[&a, &b])).unwrap();
        let err = group.deliver(&email()).await.unwrap_err();
        assert!(err.is_timeout());
        // Both are cooling down now; the next message still tries both.
        assert!(group.deliver(&email()).await.is_err());
        assert_eq!((a.calls(), b.calls()), (2, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn round_robin_rotates_and_passes_over_a_failing_member() {
        let a = Scripted::new("a", None);
        let b = Scripted::new("b", None);
        let c = Scripted::new("c", None);
        let group = RoundRobinTransport::new("spread", members(&[&a, &b, &c])).unwrap();
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
    }

    #[test]
    fn a_group_without_members_is_refused() {
        assert!(FailoverTransport::new("empty", Vec::new()).is_err());
        assert!(RoundRobinTransport::new("empty", Vec::new()).is_err());
    }
}
