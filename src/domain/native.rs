//! The push and chat payloads the provider kinds take natively (`fcm`,
//! `apns`, `slack`): a device token with a title, body and data, or a chat
//! channel with text and blocks. A `webhook`-kind transport takes the
//! generic `{payload, url?}` for these channels instead; which one a
//! message must carry is its transport's (see
//! [`TransportIntake::native`](super::TransportIntake)).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ValidationError;
use super::payload::check_text;
use super::text::Lines;

/// Longest device token: FCM registration tokens run to ~160 characters
/// and APNs tokens are 64 hex digits; anything far longer is not a token.
const MAX_TOKEN_CHARS: usize = 4096;
const MAX_TITLE_CHARS: usize = 256;
const MAX_PUSH_BODY_CHARS: usize = 4096;
/// FCM and APNs both refuse a payload over 4 KiB; the data is most of it.
const MAX_DATA_BYTES: usize = 4096;
/// FCM keeps a message at most four weeks.
const MAX_TTL_S: u64 = 28 * 24 * 3600;
/// APNs' `apns-collapse-id` is at most 64 bytes.
const MAX_COLLAPSE_KEY_BYTES: usize = 64;
/// Slack truncates a message's text past 40,000 characters.
const MAX_CHAT_TEXT_CHARS: usize = 40_000;
/// Slack takes at most 50 blocks in one message.
const MAX_BLOCKS: usize = 50;
const MAX_CHANNEL_CHARS: usize = 255;

/// A push notification to one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushPayload {
    /// The device's registration token (FCM) or device token (APNs).
    #[schema(min_length = 1, max_length = 4096, pattern = "^[!-~]+$")]
    pub token: String,
    /// One line, at most 256 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 256, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$")]
    pub title: Option<String>,
    /// At most 4096 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 4096,
        pattern = "^[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*$"
    )]
    pub body: Option<String>,
    /// Key-value pairs for the app, as strings (FCM takes no other);
    /// at most 4 KiB of JSON. A push needs a `title`, a `body` or `data`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// The app icon's badge count (APNs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 4294967295_u32)]
    pub badge: Option<u32>,
    /// A sound to play: `default` or a sound file in the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256, pattern = "^[!-~]+$")]
    pub sound: Option<String>,
    /// How long the provider keeps it for an offline device, in seconds:
    /// at most 28 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 2419200)]
    pub ttl_s: Option<u64>,
    /// Notifications with one key replace each other on the device; at
    /// most 64 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 64, pattern = "^[!-~]+$")]
    pub collapse_key: Option<String>,
}

/// A chat message to one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatPayload {
    /// The channel's id or name (`C0123456789`, `#alerts`), or a user id.
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    pub channel: String,
    /// The message text (and its notification's), at most 40,000
    /// characters; not blank.
    #[schema(
        max_length = 40000,
        pattern = "^[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*[^\\s\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F][^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*$"
    )]
    pub text: String,
    /// Layout blocks (Slack's Block Kit), at most 50, each an object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>, max_items = 50)]
    pub blocks: Option<Vec<serde_json::Value>>,
    /// Reply in the thread of the message with this timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-9]+\\.[0-9]+$")]
    pub thread_ts: Option<String>,
}

/// Visible ASCII only, not empty, at most `max` characters.
fn check_token(
    value: &str,
    max: usize,
    field: impl FnOnce() -> String,
    what: &str,
) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::required(
            field(),
            format!("{what} is empty"),
        ));
    }
    if value.len() > max || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ValidationError::invalid(
            field(),
            format!("{what}: 1 to {max} visible ASCII characters"),
        ));
    }
    Ok(())
}

impl PushPayload {
    pub fn validate(&self, field: &str) -> Result<(), ValidationError> {
        check_token(
            &self.token,
            MAX_TOKEN_CHARS,
            || format!("{field}.token"),
            "a device token",
        )?;
        if let Some(title) = &self.title {
            if title.chars().count() > MAX_TITLE_CHARS {
                return Err(ValidationError::too_large(
                    format!("{field}.title"),
                    format!("a title is at most {MAX_TITLE_CHARS} characters"),
                ));
            }
            check_text(title, Lines::One, || format!("{field}.title"))?;
        }
        if let Some(body) = &self.body {
            if body.chars().count() > MAX_PUSH_BODY_CHARS {
                return Err(ValidationError::too_large(
                    format!("{field}.body"),
                    format!("a body is at most {MAX_PUSH_BODY_CHARS} characters"),
                ));
            }
            check_text(body, Lines::Many, || format!("{field}.body"))?;
        }
        let data_bytes = serde_json::to_string(&self.data).map_or(usize::MAX, |d| d.len());
        if data_bytes > MAX_DATA_BYTES {
            return Err(ValidationError::too_large(
                format!("{field}.data"),
                format!("data is at most {MAX_DATA_BYTES} bytes of JSON"),
            ));
        }
        let says_something = self.title.is_some() || self.body.is_some() || !self.data.is_empty();
        if !says_something {
            return Err(ValidationError::required(
                format!("{field}.title"),
                "a push needs a `title`, a `body` or `data`",
            ));
        }
        if let Some(sound) = &self.sound {
            check_token(sound, 256, || format!("{field}.sound"), "a sound")?;
        }
        if self.ttl_s.is_some_and(|ttl| ttl > MAX_TTL_S) {
            return Err(ValidationError::invalid(
                format!("{field}.ttl_s"),
                format!("at most {MAX_TTL_S} seconds (28 days)"),
            ));
        }
        if let Some(key) = &self.collapse_key {
            check_token(
                key,
                MAX_COLLAPSE_KEY_BYTES,
                || format!("{field}.collapse_key"),
                "a collapse key",
            )?;
        }
        Ok(())
    }
}

impl ChatPayload {
    pub fn validate(&self, field: &str) -> Result<(), ValidationError> {
        check_token(
            &self.channel,
            MAX_CHANNEL_CHARS,
            || format!("{field}.channel"),
            "a channel",
        )?;
        if self.text.trim().is_empty() {
            return Err(ValidationError::required(
                format!("{field}.text"),
                "a chat message needs a text",
            ));
        }
        if self.text.chars().count() > MAX_CHAT_TEXT_CHARS {
            return Err(ValidationError::too_large(
                format!("{field}.text"),
                format!("a text is at most {MAX_CHAT_TEXT_CHARS} characters"),
            ));
        }
        check_text(&self.text, Lines::Many, || format!("{field}.text"))?;
        if let Some(blocks) = &self.blocks {
            if blocks.len() > MAX_BLOCKS {
                return Err(ValidationError::too_many(
                    format!("{field}.blocks"),
                    format!("at most {MAX_BLOCKS} blocks"),
                ));
            }
            if let Some(i) = blocks.iter().position(|b| !b.is_object()) {
                return Err(ValidationError::invalid(
                    format!("{field}.blocks[{i}]"),
                    "a block is a JSON object",
                ));
            }
        }
        if let Some(ts) = &self.thread_ts {
            let valid = ts.split_once('.').is_some_and(|(s, f)| {
                !s.is_empty()
                    && !f.is_empty()
                    && s.bytes().chain(f.bytes()).all(|b| b.is_ascii_digit())
            });
            if !valid {
                return Err(ValidationError::invalid(
                    format!("{field}.thread_ts"),
                    "a message timestamp, e.g. 1712345678.000100",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(result: Result<(), ValidationError>) -> String {
        result.err().map(|e| e.field).unwrap_or_default()
    }

    fn push() -> PushPayload {
        PushPayload {
            token: "device-token-1".into(),
            title: Some("Your order shipped".into()),
            body: None,
            data: BTreeMap::new(),
            badge: None,
            sound: None,
            ttl_s: None,
            collapse_key: None,
        }
    }

    #[test]
    fn a_push_needs_a_token_and_something_to_say() {
        assert_eq!(push().validate("push"), Ok(()));
        let cases = [
            (
                PushPayload {
                    token: String::new(),
                    ..push()
                },
                "push.token",
            ),
            (
                PushPayload {
                    token: "a b".into(),
                    ..push()
                },
                "push.token",
            ),
            (
                PushPayload {
                    title: None,
                    ..push()
                },
                "push.title",
            ),
            (
                PushPayload {
                    title: Some("a\nb".into()),
                    ..push()
                },
                "push.title",
            ),
            (
                PushPayload {
                    ttl_s: Some(MAX_TTL_S + 1),
                    ..push()
                },
                "push.ttl_s",
            ),
            (
                PushPayload {
                    collapse_key: Some("k".repeat(65)),
                    ..push()
                },
                "push.collapse_key",
            ),
            (
                PushPayload {
                    data: BTreeMap::from([("k".into(), "v".repeat(5000))]),
                    ..push()
                },
                "push.data",
            ),
        ];
        for (payload, field) in cases {
            assert_eq!(field_of(payload.validate("push")), field, "{payload:?}");
        }
        let data_only = PushPayload {
            title: None,
            data: BTreeMap::from([("order".into(), "42".into())]),
            ..push()
        };
        assert_eq!(data_only.validate("push"), Ok(()));
    }

    #[test]
    fn a_chat_message_needs_a_channel_and_text() {
        let chat = ChatPayload {
            channel: "C0123456789".into(),
            text: "Deploy finished".into(),
            blocks: Some(vec![serde_json::json!({"type": "divider"})]),
            thread_ts: Some("1712345678.000100".into()),
        };
        assert_eq!(chat.validate("chat"), Ok(()));
        let cases = [
            (
                ChatPayload {
                    channel: String::new(),
                    ..chat.clone()
                },
                "chat.channel",
            ),
            (
                ChatPayload {
                    text: " ".into(),
                    ..chat.clone()
                },
                "chat.text",
            ),
            (
                ChatPayload {
                    blocks: Some(vec![serde_json::json!("x")]),
                    ..chat.clone()
                },
                "chat.blocks[0]",
            ),
            (
                ChatPayload {
                    thread_ts: Some("yesterday".into()),
                    ..chat.clone()
                },
                "chat.thread_ts",
            ),
        ];
        for (payload, field) in cases {
            assert_eq!(field_of(payload.validate("chat")), field, "{payload:?}");
        }
    }
}
