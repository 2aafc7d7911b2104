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
