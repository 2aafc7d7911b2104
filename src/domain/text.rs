//! Which characters client text may hold. Addresses refuse every control
//! and every invisible formatting character: nothing in an address needs
//! them, and they make one address look like another (a zero-width space
//! in a recipient, a right-to-left override in a sender) or reach the SMTP
//! envelope raw. Subjects and bodies refuse control characters only:
//! formatting characters are part of real prose (a zero-width joiner
//! inside an emoji, a soft hyphen, the marks of right-to-left text).

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Whether a text field may span lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// Tab, CR and LF are allowed (bodies).
    Many,
    /// No control character at all, tab included (a subject or a header
    /// value: a line break there injects a header).
    One,
}

/// The first character of `address` an address may not hold: a control
/// character (C0, DEL, C1), a format character (General Category Cf:
/// zero-width spaces and joiners, the word joiner, BOM, soft hyphen, bidi
/// marks, embeddings, overrides and isolates) or a line or paragraph
/// separator.
pub fn forbidden_in_address(address: &str) -> Option<char> {
    address.chars().find(|&c| {
        c.is_control()
            || matches!(
                c.general_category(),
                GeneralCategory::Format
                    | GeneralCategory::LineSeparator
                    | GeneralCategory::ParagraphSeparator
            )
    })
}

/// The first control character (C0, DEL, C1) of `text` that `lines` does
/// not allow.
pub fn forbidden_in_text(text: &str, lines: Lines) -> Option<char> {
    text.chars()
        .find(|&c| c.is_control() && !(lines == Lines::Many && matches!(c, '\t' | '\r' | '\n')))
}

/// Names a refused character for an error message: the text itself may
/// not show it.
pub fn describe(c: char) -> String {
    let kind = if c.is_control() {
        "a control character"
    } else if c.general_category() == GeneralCategory::Format {
        "an invisible formatting character"
    } else {
        "a line or paragraph separator"
    };
    format!("U+{:04X}, {kind}", u32::from(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_refuse_invisible_bidi_and_control_characters() {
        for c in [
            '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}', '\u{00AD}', '\u{202A}',
            '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}',
            '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}', '\0', '\t', '\n', '\r', '\u{1B}',
            '\u{7F}', '\u{85}', '\u{9F}', '\u{2028}', '\u{2029}',
        ] {
            let address = format!("ali{c}ce@example.com");
            assert_eq!(
                forbidden_in_address(&address),
                Some(c),
                "U+{:04X}",
                c as u32
            );
        }
    }

    #[test]
    fn addresses_keep_their_unicode() {
        for address in [
            "Zoë Åberg <zoe@example.com>",
            "محمد <m@example.com>",
            "\"דוד כהן\" <david@example.com>",
            "用户@例子.广告",
            "josé@bücher.de",
        ] {
            assert_eq!(forbidden_in_address(address), None, "{address}");
        }
    }

    #[test]
    fn text_refuses_controls_but_keeps_line_breaks_where_allowed() {
        let body = "Dear Zoë,\r\n\tthanks.\n👨\u{200D}👩\u{200D}👧 co\u{00AD}operate \u{200F}שלום";
        assert_eq!(forbidden_in_text(body, Lines::Many), None);
        assert_eq!(forbidden_in_text(body, Lines::One), Some('\r'));
        assert_eq!(forbidden_in_text("a\tb", Lines::One), Some('\t'));
        for c in [
            '\0', '\u{7}', '\u{8}', '\u{B}', '\u{C}', '\u{1B}', '\u{7F}', '\u{80}', '\u{9B}',
        ] {
            assert_eq!(forbidden_in_text(&format!("a{c}b"), Lines::Many), Some(c));
        }
    }

    #[test]
    fn refused_characters_are_named_by_code_point() {
        assert_eq!(
            describe('\u{202E}'),
            "U+202E, an invisible formatting character"
        );
        assert_eq!(describe('\0'), "U+0000, a control character");
        assert_eq!(
            describe('\u{2028}'),
            "U+2028, a line or paragraph separator"
        );
    }
}
