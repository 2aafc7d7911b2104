//! How long finished messages are kept: the rules the configuration
//! (`[retention]`, per transport, per category) resolves to, in the form
//! both backends expire by.

use std::time::Duration;

/// How long the finished messages one rule covers are kept. `None` keeps
/// them for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionRule {
    pub sent: Option<Duration>,
    pub dead: Option<Duration>,
    pub cancelled: Option<Duration>,
    /// A sent message's payload is dropped this long after it was sent;
    /// its metadata, fingerprint and events stay. `None` keeps it.
    pub payload_after_sent: Option<Duration>,
}

/// A rule for the messages of one transport, one category, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionOverride {
    pub transport: Option<String>,
    pub category: Option<String>,
    /// Fully resolved: every key, not only those the override sets.
    pub rule: RetentionRule,
}

/// The retention of every finished message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Retention {
    /// For messages no override matches.
    pub default: RetentionRule,
    /// Most specific first (transport and category, then category, then
    /// transport): a message takes the first that matches it.
    pub overrides: Vec<RetentionOverride>,
}

impl RetentionOverride {
    pub fn matches(&self, transport: &str, category: Option<&str>) -> bool {
        self.transport.as_deref().is_none_or(|t| t == transport)
            && self.category.as_deref().is_none_or(|c| Some(c) == category)
    }
}

impl Retention {
    /// The rule of a message of `transport` and `category`.
    pub fn rule_for(&self, transport: &str, category: Option<&str>) -> &RetentionRule {
        self.overrides
            .iter()
            .find(|o| o.matches(transport, category))
            .map_or(&self.default, |o| &o.rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n * 86_400))
    }

    #[test]
    fn without_overrides_the_sql_is_the_default_alone() {
        let retention = Retention {
            default: RetentionRule {
                sent: days(1),
                ..RetentionRule::default()
            },
            overrides: Vec::new(),
        };
        assert_eq!(retention.keep_ms_sql(Kept::Sent, "t", "c"), "86400000");
        assert_eq!(retention.keep_ms_sql(Kept::Dead, "t", "c"), "NULL");
        assert_eq!(retention.differs_sql("t", "c"), "false");
    }

    #[test]
    fn the_most_specific_override_wins_and_the_default_covers_the_rest() {
        let rule = |sent| RetentionRule {
            sent,
            ..RetentionRule::default()
        };
        let retention = Retention {
            default: rule(days(30)),
            overrides: vec![
                RetentionOverride {
                    transport: Some("smtp".into()),
                    category: Some("otp".into()),
                    rule: rule(days(1)),
                },
                RetentionOverride {
                    transport: None,
                    category: Some("otp".into()),
                    rule: rule(days(2)),
                },
                RetentionOverride {
                    transport: Some("smtp".into()),
                    category: None,
                    rule: rule(None),
                },
            ],
        };
        assert_eq!(retention.rule_for("smtp", Some("otp")).sent, days(1));
        assert_eq!(retention.rule_for("sms", Some("otp")).sent, days(2));
        assert_eq!(retention.rule_for("smtp", Some("receipt")).sent, None);
        assert_eq!(retention.rule_for("smtp", None).sent, None);
        assert_eq!(retention.rule_for("sms", None).sent, days(30));
    }
}

/// What one round of retention did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// Finished messages deleted, with their events.
    pub deleted: u64,
    pub payloads_dropped: u64,
    /// PostgreSQL: whole days of finished messages dropped with their
    /// partitions.
    pub days_dropped: u64,
}

impl Expired {
    pub fn total(&self) -> u64 {
        self.deleted + self.payloads_dropped + self.days_dropped
    }
}

/// The smallest ULID of an instant: every message created before it has
/// a smaller id, and a message finishes after it was created, so rows a
/// rule keeping `shortest` or longer has expired all lie below the id of
/// `now - shortest`.
pub(crate) fn below_id(now: chrono::DateTime<chrono::Utc>, shortest: Duration) -> ulid::Ulid {
    let cutoff = now - chrono::Duration::from_std(shortest).unwrap_or(chrono::Duration::MAX);
    ulid::Ulid::from_parts(u64::try_from(cutoff.timestamp_millis()).unwrap_or(0), 0)
}

/// Which of a rule's keeps an expression is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kept {
    // Sent, dead, cancelled: each status's rows; then sent rows' payloads.
    Sent,
    Dead,
    Cancelled,
    PayloadAfterSent,
}

impl Kept {
    fn of(self, rule: &RetentionRule) -> Option<Duration> {
        match self {
            Kept::Sent => rule.sent,
            Kept::Dead => rule.dead,
            Kept::Cancelled => rule.cancelled,
            Kept::PayloadAfterSent => rule.payload_after_sent,
        }
    }

    /// The finished status whose rows this keep covers.
    pub(crate) fn status(self) -> &'static str {
        match self {
            Kept::Sent | Kept::PayloadAfterSent => "sent",
            Kept::Dead => "dead",
            Kept::Cancelled => "cancelled",
        }
    }
}

/// An SQL string literal (both backends double the quote).
pub(crate) fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl Retention {
    /// An SQL expression over a row's `transport` and `category` columns:
    /// how long `kept` keeps it, in milliseconds, NULL for ever. Arms are
    /// in the overrides' order, so the first match wins as in
    /// [`Retention::rule_for`].
    pub(crate) fn keep_ms_sql(&self, kept: Kept, transport: &str, category: &str) -> String {
        let ms = |rule: &RetentionRule| {
            kept.of(rule)
                .map_or("NULL".to_owned(), |d| d.as_millis().to_string())
        };
        if self.overrides.is_empty() {
            // `CASE ELSE x END` is no SQL.
            return ms(&self.default);
        }
        let mut case = String::from("CASE");
        for o in &self.overrides {
            case.push_str(&format!(
                " WHEN {} THEN {}",
                self.match_sql(o, transport, category),
                ms(&o.rule)
            ));
        }
        case.push_str(&format!(" ELSE {} END", ms(&self.default)));
        case
    }

    /// An SQL condition: the row (`transport`, `category`) follows a rule
    /// other than the default.
    pub(crate) fn differs_sql(&self, transport: &str, category: &str) -> String {
        if self.overrides.is_empty() {
            return "false".to_owned();
        }
        let mut case = String::from("CASE");
        for o in &self.overrides {
            case.push_str(&format!(
                " WHEN {} THEN {}",
                self.match_sql(o, transport, category),
                o.rule != self.default
            ));
        }
        case.push_str(" ELSE false END");
        case
    }

    /// How long the default rule keeps `kept`; `None` for ever.
    pub(crate) fn default_keep(&self, kept: Kept) -> Option<Duration> {
        kept.of(&self.default)
    }

    /// The shortest time any rule keeps `kept`: nothing of it expires
    /// sooner. `None` when every rule keeps it for ever.
    pub(crate) fn shortest(&self, kept: Kept) -> Option<Duration> {
        std::iter::once(&self.default)
            .chain(self.overrides.iter().map(|o| &o.rule))
            .filter_map(|r| kept.of(r))
            .min()
    }

    fn match_sql(&self, o: &RetentionOverride, transport: &str, category: &str) -> String {
        let mut conditions = Vec::new();
        if let Some(t) = &o.transport {
            conditions.push(format!("{transport} = {}", sql_literal(t)));
        }
        if let Some(c) = &o.category {
            conditions.push(format!("{category} = {}", sql_literal(c)));
        }
        if conditions.is_empty() {
            "true".to_owned()
        } else {
            conditions.join(" AND ")
        }
    }
}
