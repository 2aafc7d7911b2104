//! Error messages normalised for grouping: the same cause with different
//! ids, numbers or addresses becomes one line in the failure analytics;
//! and the class of a stored error, read back from its text.

/// Longest normalised message kept.
const MAX_LEN: usize = 200;

/// Blanks what varies between occurrences of one cause: email addresses
/// (`address`), runs of digits (`#`), long hex or ULID-like tokens (`*`).
pub fn normalise(error: &str) -> String {
    let mut out = String::with_capacity(error.len().min(MAX_LEN));
    for word in error.split_inclusive(|c: char| c.is_whitespace()) {
        let trimmed = word.trim_end();
        let tail = &word[trimmed.len()..];
        let core = trimmed.trim_matches(|c: char| {
            matches!(c, '<' | '>' | '(' | ')' | ',' | ';' | ':' | '"' | '\'')
        });
        let replaced = if core.contains('@') && core.contains('.') {
            trimmed.replace(core, "address")
        } else if core.len() >= 16
            && core.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && core.chars().any(|c| c.is_ascii_digit())
        {
            trimmed.replace(core, "*")
        } else {
            collapse_digits(trimmed)
        };
        out.push_str(&replaced);
        out.push_str(tail);
        if out.len() >= MAX_LEN {
            break;
        }
    }
    let mut out = out.trim().to_owned();
    if out.len() > MAX_LEN {
        let mut cut = MAX_LEN;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// How each stored error begins, and its class: the
/// [`TransportError`](crate::transports::TransportError) displays (each
/// variant's text starts with its own words), the engine's panic and the
/// store's final lease expiry. A message keeps only its last error's
/// text, so this is how a dead letter's class is known without a column
/// written by every outcome; the tests hold it to every variant's class.
pub const ERROR_CLASSES: [(&str, &str); 11] = [
    ("rejected", "rejected"),
    ("recipient_invalid", "rejected"),
    ("recipient_unsubscribed", "rejected"),
    ("timed out: ", "timeout"),
    ("connection failed: ", "connection"),
    ("invalid message: ", "permanent"),
    ("temporary failure", "transient"),
    ("transport failure: ", "transient"),
    ("credentials refused", "transient"),
    ("unavailable: ", "transient"),
    ("transport panicked: ", "transient"),
];

/// The class of a message whose last attempt's lease expired.
pub const LEASE_EXPIRED_CLASS: (&str, &str) = ("lease expired", "lease_expired");

/// The class of an error none of the others begins (one written by an
/// older version), and of a message without one.
pub const UNKNOWN_CLASS: &str = "unknown";

/// Every class [`class_of_error`] answers, for the API to validate and
/// document.
pub const CLASSES: [&str; 7] = [
    "timeout",
    "connection",
    "rejected",
    "permanent",
    "transient",
    "lease_expired",
    UNKNOWN_CLASS,
];

/// The class of a stored last error.
pub fn class_of_error(error: Option<&str>) -> &'static str {
    let Some(error) = error else {
        return UNKNOWN_CLASS;
    };
    ERROR_CLASSES
        .iter()
        .chain([&LEASE_EXPIRED_CLASS])
        .find(|(prefix, _)| error.starts_with(prefix))
        .map_or(UNKNOWN_CLASS, |(_, class)| class)
}

fn collapse_digits(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut in_digits = false;
    for c in word.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            in_digits = false;
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transports::{RecipientGone, TransportError};

    #[test]
    fn every_transport_error_reads_back_as_its_class() {
        let text = || "550 <bob@example.com> said no".to_owned();
        for err in [
            TransportError::Rejected {
                code: Some(550),
                message: text(),
            },
            TransportError::Rejected {
                code: None,
                message: text(),
            },
            TransportError::RecipientGone {
                reason: RecipientGone::Invalid,
                code: None,
                message: text(),
            },
            TransportError::RecipientGone {
                reason: RecipientGone::Unsubscribed,
                code: Some(21610),
                message: text(),
            },
            TransportError::Unauthorized {
                code: Some(401),
                message: text(),
            },
            TransportError::Temporary {
                code: Some(451),
                message: text(),
                retry_after: None,
            },
            TransportError::Temporary {
                code: None,
                message: text(),
                retry_after: None,
            },
            TransportError::Timeout(text()),
            TransportError::Connection(text()),
            TransportError::InvalidMessage(text()),
            TransportError::Local(text()),
            TransportError::Unavailable(text()),
        ] {
            assert_eq!(
                class_of_error(Some(&err.to_string())),
                err.class().as_str(),
                "{err}"
            );
        }
        assert_eq!(
            class_of_error(Some("transport panicked: boom")),
            "transient"
        );
        assert_eq!(
            class_of_error(Some("lease expired on the final attempt")),
            "lease_expired"
        );
        assert_eq!(class_of_error(Some("451 try later")), UNKNOWN_CLASS);
        assert_eq!(class_of_error(None), UNKNOWN_CLASS);
    }

    #[test]
    fn one_cause_is_one_line() {
        assert_eq!(
            normalise("550 5.1.1 <bob@example.com>: user unknown"),
            normalise("550 5.1.1 <alice@example.org>: user unknown")
        );
        assert_eq!(
            normalise("550 5.1.1 <bob@example.com>: user unknown"),
            "# #.#.# <address>: user unknown"
        );
        assert_eq!(
            normalise("timed out: no result within 30s for 01JDQ4Z8Y7M3V2K9W6T5R4P3N2"),
            "timed out: no result within #s for *"
        );
        assert_eq!(
            normalise("temporary failure (503): 127.0.0.1: HTTP 503"),
            "temporary failure (#): #.#.#.#: HTTP #"
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(300);
        let out = normalise(&long);
        assert!(out.len() <= MAX_LEN);
    }
}
