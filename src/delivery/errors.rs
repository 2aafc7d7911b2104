//! Error messages normalised for grouping: the same cause with different
//! ids, numbers or addresses becomes one line in the failure analytics.

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
