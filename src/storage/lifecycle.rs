//! What the end of a claim does to a message, written once: a decision
//! table that SQLite's Rust walks ([`step`]) and PostgreSQL's statements
//! are generated from ([`sql_case`]), so the two backends cannot drift.
//!
//! A claim ends in one of four ways ([`Ending`]): the transport sent the
//! message, the attempt failed (retryably or not), the claim was handed
//! back unattempted, or its lease expired. The table says, from that and
//! whether the message has attempts left, where the message goes next,
//! whether the attempt is given back, and why it died.

use crate::domain::Status;

/// How a claim ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Sent,
    Failed,
    Released,
    LeaseExpired,
}

impl Ending {
    /// The text PostgreSQL's outcome statements carry for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Sent => "sent",
            Ending::Failed => "failed",
            Ending::Released => "released",
            Ending::LeaseExpired => "expired",
        }
    }
}

/// Why a message was dead-lettered, as the `dead_lettered` event's
/// `detail.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// The transport said the failure will not pass.
    Permanent,
    /// A retryable failure on the last attempt.
    MaxAttempts,
    /// The lease of the last attempt expired.
    LeaseExpired,
}

impl DeadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::Permanent => "permanent",
            DeadReason::MaxAttempts => "max_attempts",
            DeadReason::LeaseExpired => "lease_expired",
        }
    }
}

/// Where a message goes when its claim ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// `Queued` (claimable again), `Sent` or `Dead`.
    pub status: Status,
    /// The claim cost no attempt: `attempts` goes back down by one.
    pub attempt_given_back: bool,
    pub dead: Option<DeadReason>,
}

impl Step {
    /// The message leaves the live set.
    pub fn finishes(&self) -> bool {
        self.status != Status::Queued
    }
}

/// A condition on one fact; `Any` matches both values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Is {
    Yes,
    No,
    Any,
}

impl Is {
    fn holds(self, fact: bool) -> bool {
        match self {
            Is::Yes => fact,
            Is::No => !fact,
            Is::Any => true,
        }
    }
}

struct Rule {
    ending: Ending,
    /// The failure carries a retry time.
    retryable: Is,
    /// `attempts < max_attempts`.
    attempts_left: Is,
    step: Step,
}

const fn to(status: Status, attempt_given_back: bool, dead: Option<DeadReason>) -> Step {
    Step {
        status,
        attempt_given_back,
        dead,
    }
}

/// The first rule that matches decides. Complete: every combination of
/// facts meets a rule (checked by a test).
const RULES: &[Rule] = &[
    Rule {
        ending: Ending::Sent,
        retryable: Is::Any,
        attempts_left: Is::Any,
        step: to(Status::Sent, false, None),
    },
    Rule {
        ending: Ending::Released,
        retryable: Is::Any,
        attempts_left: Is::Any,
        step: to(Status::Queued, true, None),
    },
    Rule {
        ending: Ending::Failed,
        retryable: Is::No,
        attempts_left: Is::Any,
        step: to(Status::Dead, false, Some(DeadReason::Permanent)),
    },
    Rule {
        ending: Ending::Failed,
        retryable: Is::Yes,
        attempts_left: Is::Yes,
        step: to(Status::Queued, false, None),
    },
    Rule {
        ending: Ending::Failed,
        retryable: Is::Yes,
        attempts_left: Is::No,
        step: to(Status::Dead, false, Some(DeadReason::MaxAttempts)),
    },
    Rule {
        ending: Ending::LeaseExpired,
        retryable: Is::Any,
        attempts_left: Is::Yes,
        step: to(Status::Queued, false, None),
    },
    Rule {
        ending: Ending::LeaseExpired,
        retryable: Is::Any,
        attempts_left: Is::No,
        step: to(Status::Dead, false, Some(DeadReason::LeaseExpired)),
    },
];

/// Where a message whose claim ended this way goes. `attempts` is the
/// claimed message's count, which includes the attempt just ended.
pub fn step(ending: Ending, retryable: bool, attempts: u32, max_attempts: u32) -> Step {
    let attempts_left = attempts < max_attempts;
    RULES
        .iter()
        .find(|r| {
            r.ending == ending
                && r.retryable.holds(retryable)
                && r.attempts_left.holds(attempts_left)
        })
        .map(|r| r.step)
        .expect("the rules cover every ending")
}

/// The table as an SQL `CASE` over the same facts, given as SQL
/// expressions: `ending` (text, [`Ending::as_str`]), `retryable`
/// (boolean), `attempts` and `max_attempts`. `pick` turns a step into the
/// SQL value the expression yields for it.
pub fn sql_case(
    ending: &str,
    retryable: &str,
    attempts: &str,
    max_attempts: &str,
    pick: impl Fn(&Step) -> String,
) -> String {
    let mut case = String::from("CASE");
    for rule in RULES {
        let mut conditions = vec![format!("{ending} = '{}'", rule.ending.as_str())];
        match rule.retryable {
            Is::Yes => conditions.push(retryable.to_owned()),
            Is::No => conditions.push(format!("NOT {retryable}")),
            Is::Any => {}
        }
        match rule.attempts_left {
            Is::Yes => conditions.push(format!("{attempts} < {max_attempts}")),
            Is::No => conditions.push(format!("{attempts} >= {max_attempts}")),
            Is::Any => {}
        }
        case.push_str(&format!(
            " WHEN {} THEN {}",
            conditions.join(" AND "),
            pick(&rule.step)
        ));
    }
    case.push_str(" END");
    case
}

/// [`sql_case`] yielding the next status as text.
pub fn sql_status(ending: &str, retryable: &str, attempts: &str, max_attempts: &str) -> String {
    sql_case(ending, retryable, attempts, max_attempts, |s| {
        format!("'{}'", s.status.as_str())
    })
}

/// [`sql_case`] yielding the dead reason as text, NULL when not dead.
pub fn sql_dead_reason(
    ending: &str,
    retryable: &str,
    attempts: &str,
    max_attempts: &str,
) -> String {
    sql_case(ending, retryable, attempts, max_attempts, |s| {
        s.dead
            .map_or("NULL::text".to_owned(), |r| format!("'{}'", r.as_str()))
    })
}

/// [`sql_case`] yielding how much `attempts` changes (0 or -1).
pub fn sql_attempt_change(
    ending: &str,
    retryable: &str,
    attempts: &str,
    max_attempts: &str,
) -> String {
    sql_case(ending, retryable, attempts, max_attempts, |s| {
        if s.attempt_given_back { "-1" } else { "0" }.to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENDINGS: [Ending; 4] = [
        Ending::Sent,
        Ending::Failed,
        Ending::Released,
        Ending::LeaseExpired,
    ];

    #[test]
    fn the_rules_cover_every_ending_and_fact() {
        for ending in ENDINGS {
            for retryable in [false, true] {
                for (attempts, max) in [(1, 1), (1, 3), (3, 3), (4, 3)] {
                    step(ending, retryable, attempts, max);
                }
            }
        }
    }

    #[test]
    fn each_ending_goes_where_the_retry_policy_says() {
        use Status::*;
        let s = |ending, retryable, attempts| step(ending, retryable, attempts, 3);
        assert_eq!(s(Ending::Sent, false, 3), to(Sent, false, None));
        assert_eq!(s(Ending::Released, false, 3), to(Queued, true, None));
        assert_eq!(s(Ending::Failed, true, 2), to(Queued, false, None));
        assert_eq!(
            s(Ending::Failed, true, 3),
            to(Dead, false, Some(DeadReason::MaxAttempts))
        );
        // A permanent failure dies at once, attempts left or not.
        assert_eq!(
            s(Ending::Failed, false, 1),
            to(Dead, false, Some(DeadReason::Permanent))
        );
        assert_eq!(s(Ending::LeaseExpired, false, 2), to(Queued, false, None));
        assert_eq!(
            s(Ending::LeaseExpired, false, 3),
            to(Dead, false, Some(DeadReason::LeaseExpired))
        );
        assert!(!s(Ending::Released, true, 3).finishes());
        assert!(s(Ending::Sent, false, 1).finishes());
    }

    /// The generated SQL, evaluated by a tiny interpreter of exactly the
    /// shapes [`sql_case`] emits, agrees with [`step`] on every fact.
    #[test]
    fn the_generated_case_agrees_with_the_table() {
        let case = sql_status("e", "r", "a", "m");
        for ending in ENDINGS {
            for retryable in [false, true] {
                for (attempts, max) in [(1u32, 1u32), (1, 3), (3, 3), (4, 3)] {
                    let holds = |condition: &str| -> bool {
                        condition.split(" AND ").all(|c| match c {
                            "r" => retryable,
                            "NOT r" => !retryable,
                            "a < m" => attempts < max,
                            "a >= m" => attempts >= max,
                            other => {
                                let text = other.strip_prefix("e = '").expect(other);
                                text.trim_end_matches('\'') == ending.as_str()
                            }
                        })
                    };
                    let chosen = case
                        .trim_start_matches("CASE WHEN ")
                        .trim_end_matches(" END")
                        .split(" WHEN ")
                        .map(|arm| arm.split_once(" THEN ").expect(arm))
                        .find(|(condition, _)| holds(condition))
                        .map(|(_, value)| value.trim_matches('\''))
                        .expect("an arm matches");
                    let expected = step(ending, retryable, attempts, max).status;
                    assert_eq!(
                        chosen,
                        expected.as_str(),
                        "{ending:?} {retryable} {attempts}/{max}"
                    );
                }
            }
        }
    }
}
