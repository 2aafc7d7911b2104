//! What each channel carries, and the rules a payload must meet before it is
//! stored. Validation names the offending field with its path
//! (`email.to[1]`), so an API client can tell exactly what to fix.

use std::collections::BTreeMap;
use std::str::FromStr;

use base64::Engine;
use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};

use super::native::{ChatPayload, PushPayload};
use super::text::{Lines, describe, forbidden_in_address, forbidden_in_text};
use super::{Channel, ValidationError};

/// Most recipients (to + cc + bcc) one email may have.
pub const MAX_RECIPIENTS: usize = 100;
/// Most attachments one email may carry.
pub const MAX_ATTACHMENTS: usize = 20;
/// Longest subject line, in characters (RFC 5322's line limit).
const MAX_SUBJECT_CHARS: usize = 998;
/// Longest SMS body, in characters (ten concatenated segments).
const MAX_SMS_CHARS: usize = 1600;
/// Most media one SMS (an MMS) may carry, as Twilio takes them.
const MAX_SMS_MEDIA: usize = 10;
/// Most custom headers on one email.
const MAX_HEADERS: usize = 50;

/// Headers Herald writes itself. A client may not set them: the stamp is
/// never forged or reused, and the envelope comes from the typed fields.
const RESERVED_HEADERS: &[&str] = &[
    "x-stamp-id",
    "x-tracking-id",
    "x-herald-stamp",
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
];

/// An email address in the OpenAPI description: `alice@example.com` or
/// `Alice <alice@example.com>`, internationalised forms included.
pub struct Address;

impl utoipa::PartialSchema for Address {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Email,
            )))
            .description(Some(
                "An address, optionally with a display name: `Alice <alice@example.com>`; \
                 no control or invisible formatting characters",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Address {}

// The patterns below state in the OpenAPI description what `validate`
// checks: control characters (and, in one-line fields, line breaks) are
// refused, and a required text is not blank.

/// An email. Needs a non-blank `text` or `html` (or both).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailPayload {
    #[schema(value_type = Address)]
    pub from: String,
    /// 1 to 100 recipients; to, cc and bcc together at most 100.
    #[schema(value_type = Vec<Address>, min_items = 1, max_items = 100)]
    pub to: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Address>, max_items = 100)]
    pub cc: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Address>, max_items = 100)]
    pub bcc: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Address>)]
    pub reply_to: Option<String>,
    /// One line, not blank, at most 998 characters.
    #[schema(
        max_length = 998,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\s\\x00-\\x1F\\x7F-\\x9F][^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*$")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*$")]
    pub html: Option<String>,
    /// At most 50; names are printable ASCII without ':', values one line.
    /// Herald's own headers (From, To, Subject, X-Stamp-ID, ...) are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// At most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 20)]
    pub attachments: Vec<Attachment>,
}

/// A file attached to an email, carried base64-encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// Not blank; no path separators, control or invisible formatting
    /// characters.
    #[schema(
        pattern = "^[^/\\\\\\x00-\\x1F\\x7F-\\x9F\\u00AD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u0890-\\u0891\\u08E2\\u180E\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u2064\\u2066-\\u206F\\uFEFF\\uFFF9-\\uFFFB\u{110BD}\u{110CD}\u{13430}-\u{1343F}\u{1BCA0}-\u{1BCA3}\u{1D173}-\u{1D17A}\u{E0001}\u{E0020}-\u{E007F}]*[^\\s/\\\\\\x00-\\x1F\\x7F-\\x9F\\u00AD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u0890-\\u0891\\u08E2\\u180E\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u2064\\u2066-\\u206F\\uFEFF\\uFFF9-\\uFFFB\u{110BD}\u{110CD}\u{13430}-\u{1343F}\u{1BCA0}-\u{1BCA3}\u{1D173}-\u{1D17A}\u{E0001}\u{E0020}-\u{E007F}][^/\\\\\\x00-\\x1F\\x7F-\\x9F\\u00AD\\u0600-\\u0605\\u061C\\u06DD\\u070F\\u0890-\\u0891\\u08E2\\u180E\\u200B-\\u200F\\u2028-\\u202E\\u2060-\\u2064\\u2066-\\u206F\\uFEFF\\uFFF9-\\uFFFB\u{110BD}\u{110CD}\u{13430}-\u{1343F}\u{1BCA0}-\u{1BCA3}\u{1D173}-\u{1D17A}\u{E0001}\u{E0020}-\u{E007F}]*$"
    )]
    pub filename: String,
    /// A MIME type, e.g. `application/pdf`.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")]
    pub content_type: String,
    /// Standard base64 with padding.
    #[schema(
        pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$"
    )]
    pub content_base64: String,
}

/// A text message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmsPayload {
    /// E.164, e.g. `+14155550100`.
    #[schema(pattern = "^\\+[1-9][0-9]{7,14}$")]
    pub to: String,
    /// An E.164 number or an alphanumeric sender id of up to 11 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(?:\\+[1-9][0-9]{7,14}|[A-Za-z0-9 ]{1,11})$")]
    pub from: Option<String>,
    /// Not blank, at most 1600 characters.
    #[schema(
        max_length = 1600,
        pattern = "^[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*[^\\s\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F][^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*$"
    )]
    pub body: String,
    /// Media sent with it as an MMS: up to 10 http(s) URLs with a DNS host
    /// name, in visible ASCII, each at most 2048 characters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 10, value_type = Vec<MediaUrl>)]
    pub media_urls: Vec<String>,
}

/// A chat, push or webhook notification: a JSON document for the provider,
/// optionally with its own destination URL (subject to the transport's
/// allow-list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenericPayload {
    /// Any JSON but `null`.
    pub payload: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A media URL as [`SmsPayload::media_urls`] takes it, for the OpenAPI
/// description: the pattern states exactly what [`is_media_url`] checks.
pub struct MediaUrl;

impl utoipa::PartialSchema for MediaUrl {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .max_length(Some(MAX_MEDIA_URL_CHARS))
            .pattern(Some(
                "^https?://[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(?::[0-9]{1,4})?(?:[/?#][!-~]*)?$",
            ))
            .into()
    }
}

impl utoipa::ToSchema for MediaUrl {}

/// Longest media URL.
const MAX_MEDIA_URL_CHARS: usize = 2048;

/// `http://` or `https://`, a DNS host name, an optional port of up to
/// four digits, then optionally a path, query or fragment of visible
/// ASCII: an address a provider can fetch, which no parser reads two ways.
fn is_media_url(text: &str) -> bool {
    let Some(rest) = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
    else {
        return false;
    };
    if text.len() > MAX_MEDIA_URL_CHARS {
        return false;
    }
    let end = rest.find(['/', '?', '#', ':']).unwrap_or(rest.len());
    let (host, mut rest) = rest.split_at(end);
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !host.split('.').all(label) {
        return false;
    }
    if let Some(after) = rest.strip_prefix(':') {
        let digits = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (port, tail) = after.split_at(digits);
        if !(1..=4).contains(&port.len()) || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        rest = tail;
    }
    rest.bytes().all(|b| b.is_ascii_graphic())
}

/// A validated payload of one channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Email(EmailPayload),
    Sms(SmsPayload),
    /// A push as the push providers take it.
    Push(PushPayload),
    /// A chat message as the chat providers take it.
    Chat(ChatPayload),
    /// A JSON document for a webhook-kind transport, of any channel but
    /// email and SMS.
    Generic(Channel, GenericPayload),
}

impl Payload {
    pub fn channel(&self) -> Channel {
        match self {
            Payload::Email(_) => Channel::Email,
            Payload::Sms(_) => Channel::Sms,
            Payload::Push(_) => Channel::Push,
            Payload::Chat(_) => Channel::Chat,
            Payload::Generic(channel, _) => *channel,
        }
    }

    /// The JSON text stored in `messages.payload`. Fields that hold their
    /// default are left out (every message writes its payload twice, live
    /// and finished, and empty `cc`, `headers`, ... were a tenth of an
    /// email's row); reading it back fills them in again.
    pub fn to_json_text(&self) -> String {
        // Serialising these plain structs cannot fail: every map key is a string.
        let text = match self {
            Payload::Email(email) => serde_json::to_string(email),
            Payload::Sms(sms) => serde_json::to_string(sms),
            Payload::Push(push) => serde_json::to_string(push),
            Payload::Chat(chat) => serde_json::to_string(chat),
            Payload::Generic(_, generic) => serde_json::to_string(generic),
        };
        text.unwrap_or_else(|_| "null".to_owned())
    }

    /// The payload as the API shows it: every field, those left at their
    /// default too, as a client sent them (see [`Payload::to_json_text`]).
    pub fn to_api_value(&self) -> serde_json::Value {
        // Serialising these plain structs cannot fail: every map key is a string.
        let value = match self {
            Payload::Email(email) => serde_json::to_value(email),
            Payload::Sms(sms) => serde_json::to_value(sms),
            Payload::Push(push) => serde_json::to_value(push),
            Payload::Chat(chat) => serde_json::to_value(chat),
            Payload::Generic(_, generic) => serde_json::to_value(generic),
        };
        let mut value = value.unwrap_or(serde_json::Value::Null);
        let defaults: &[&str] = match self {
            Payload::Email(_) => &[
                "cc",
                "bcc",
                "reply_to",
                "text",
                "html",
                "headers",
                "attachments",
            ],
            Payload::Sms(_) => &["from", "media_urls"],
            Payload::Push(_) => &[
                "title",
                "body",
                "data",
                "badge",
                "sound",
                "ttl_s",
                "collapse_key",
            ],
            Payload::Chat(_) => &["blocks", "thread_ts"],
            Payload::Generic(..) => &["url"],
        };
        if let Some(object) = value.as_object_mut() {
            for key in defaults {
                object.entry(*key).or_insert_with(|| match *key {
                    "cc" | "bcc" | "attachments" | "media_urls" => serde_json::json!([]),
                    "headers" | "data" => serde_json::json!({}),
                    _ => serde_json::Value::Null,
                });
            }
        }
        value
    }

    /// Reads a stored payload back.
    pub fn from_json(channel: Channel, value: &serde_json::Value) -> serde_json::Result<Payload> {
        Ok(match channel {
            Channel::Email => Payload::Email(EmailPayload::deserialize(value)?),
            Channel::Sms => Payload::Sms(SmsPayload::deserialize(value)?),
            // A generic document always has its `payload`; the native
            // shapes never have one.
            Channel::Push if value.get("payload").is_none() => {
                Payload::Push(PushPayload::deserialize(value)?)
            }
            Channel::Chat if value.get("payload").is_none() => {
                Payload::Chat(ChatPayload::deserialize(value)?)
            }
            other => Payload::Generic(other, GenericPayload::deserialize(value)?),
        })
    }

    /// Who the message goes to, each as suppression and the recipient
    /// filter know it ([`normalise_recipient`]): an email's every
    /// address, an SMS's number, a push's device token, a chat's channel;
    /// none for a webhook document.
    pub fn recipients(&self) -> Vec<String> {
        match self {
            Payload::Email(email) => email.normalised_recipients(),
            Payload::Sms(sms) => vec![normalise_recipient(Channel::Sms, &sms.to)],
            Payload::Push(push) => vec![normalise_recipient(Channel::Push, &push.token)],
            Payload::Chat(chat) => vec![normalise_recipient(Channel::Chat, &chat.channel)],
            Payload::Generic(..) => Vec::new(),
        }
    }

    /// The per-message destination URL, if any.
    pub fn url(&self) -> Option<&str> {
        match self {
            Payload::Generic(_, generic) => generic.url.as_deref(),
            _ => None,
        }
    }
}

impl EmailPayload {
    /// Checks addresses, required fields and limits. `field` is the path
    /// prefix for errors (`email`).
    pub fn validate(&self, field: &str) -> Result<(), ValidationError> {
        parse_mailbox(&self.from, || format!("{field}.from"))?;
        if self.to.is_empty() {
            return Err(ValidationError::required(
                format!("{field}.to"),
                "an email needs at least one recipient in `to`",
            ));
        }
        for (name, list) in [("to", &self.to), ("cc", &self.cc), ("bcc", &self.bcc)] {
            for (i, address) in list.iter().enumerate() {
                parse_mailbox(address, || format!("{field}.{name}[{i}]"))?;
            }
        }
        let recipients = self.to.len() + self.cc.len() + self.bcc.len();
        if recipients > MAX_RECIPIENTS {
            return Err(ValidationError::too_many(
                format!("{field}.to"),
                format!("{recipients} recipients; at most {MAX_RECIPIENTS} (to + cc + bcc)"),
            ));
        }
        if let Some(reply_to) = &self.reply_to {
            parse_mailbox(reply_to, || format!("{field}.reply_to"))?;
        }
        if self.subject.trim().is_empty() {
            return Err(ValidationError::required(
                format!("{field}.subject"),
                "an email needs a subject",
            ));
        }
        if self.subject.chars().count() > MAX_SUBJECT_CHARS {
            return Err(ValidationError::too_large(
                format!("{field}.subject"),
                format!("the subject is longer than {MAX_SUBJECT_CHARS} characters"),
            ));
        }
        check_text(&self.subject, Lines::One, || format!("{field}.subject"))?;
        for (name, body) in [("text", &self.text), ("html", &self.html)] {
            if let Some(body) = body {
                check_text(body, Lines::Many, || format!("{field}.{name}"))?;
            }
        }
        let has_text = self.text.as_deref().is_some_and(|t| !t.trim().is_empty());
        let has_html = self.html.as_deref().is_some_and(|t| !t.trim().is_empty());
        if !has_text && !has_html {
            return Err(ValidationError::required(
                format!("{field}.text"),
                "an email needs a body: `text`, `html` or both",
            ));
        }
        self.validate_headers(field)?;
        self.validate_attachments(field)?;
        Ok(())
    }

    fn validate_headers(&self, field: &str) -> Result<(), ValidationError> {
        if self.headers.len() > MAX_HEADERS {
            return Err(ValidationError::too_many(
                format!("{field}.headers"),
                format!("at most {MAX_HEADERS} custom headers"),
            ));
        }
        for (name, value) in &self.headers {
            let path = format!("{field}.headers.{name}");
            let valid_name =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
            if !valid_name {
                return Err(ValidationError::invalid(
                    path,
                    "a header name is printable ASCII without spaces or ':'",
                ));
            }
            if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(ValidationError::invalid(
                    path,
                    format!("`{name}` is set by Herald and cannot be given as a header"),
                ));
            }
            check_text(value, Lines::One, || path)?;
        }
        Ok(())
    }

    fn validate_attachments(&self, field: &str) -> Result<(), ValidationError> {
        if self.attachments.len() > MAX_ATTACHMENTS {
            return Err(ValidationError::too_many(
                format!("{field}.attachments"),
                format!("at most {MAX_ATTACHMENTS} attachments"),
            ));
        }
        for (i, attachment) in self.attachments.iter().enumerate() {
            let path = format!("{field}.attachments[{i}]");
            let name = attachment.filename.trim();
            // A right-to-left override turns `invoice\u{202E}fdp.exe` into
            // what reads as a PDF: a file name refuses what an address does.
            if let Some(c) = forbidden_in_address(&attachment.filename) {
                return Err(ValidationError::forbidden_character(
                    format!("{path}.filename"),
                    format!(
                        "a file name may not contain control or invisible formatting characters; found {}",
                        describe(c)
                    ),
                ));
            }
            if name.is_empty() || name.contains(['/', '\\']) {
                return Err(ValidationError::invalid(
                    format!("{path}.filename"),
                    "a file name is required and may not contain path separators, \
                     control or invisible formatting characters",
                ));
            }
            if lettre::message::header::ContentType::parse(&attachment.content_type).is_err() {
                return Err(ValidationError::invalid(
                    format!("{path}.content_type"),
                    format!("`{}` is not a MIME type", attachment.content_type),
                ));
            }
            attachment.decode().map_err(|_| {
                ValidationError::invalid(
                    format!("{path}.content_base64"),
                    "not valid standard base64",
                )
            })?;
        }
        Ok(())
    }

    /// Every recipient address, normalised: address part only, lower-cased.
    pub fn normalised_recipients(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .to
            .iter()
            .chain(&self.cc)
            .chain(&self.bcc)
            .map(|raw| normalise_address(raw))
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

impl Attachment {
    pub fn decode(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(self.content_base64.trim())
    }
}

impl SmsPayload {
    pub fn validate(&self, field: &str) -> Result<(), ValidationError> {
        for (name, number) in [("to", Some(&self.to)), ("from", self.from.as_ref())] {
            if let Some(c) = number.and_then(|n| forbidden_in_address(n)) {
                return Err(ValidationError::forbidden_character(
                    format!("{field}.{name}"),
                    format!(
                        "a number may not contain control or invisible formatting characters; found {}",
                        describe(c)
                    ),
                ));
            }
        }
        if !is_e164(&self.to) {
            return Err(ValidationError::invalid(
                format!("{field}.to"),
                "a phone number in E.164 form, e.g. +14155550100",
            ));
        }
        if let Some(from) = &self.from {
            let sender_id = !from.is_empty()
                && from.len() <= 11
                && from.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ');
            if !is_e164(from) && !sender_id {
                return Err(ValidationError::invalid(
                    format!("{field}.from"),
                    "an E.164 phone number or an alphanumeric sender id of up to 11 characters",
                ));
            }
        }
        if self.body.trim().is_empty() {
            return Err(ValidationError::required(
                format!("{field}.body"),
                "an SMS needs a body",
            ));
        }
        if self.body.chars().count() > MAX_SMS_CHARS {
            return Err(ValidationError::too_large(
                format!("{field}.body"),
                format!("an SMS body is at most {MAX_SMS_CHARS} characters"),
            ));
        }
        check_text(&self.body, Lines::Many, || format!("{field}.body"))?;
        if self.media_urls.len() > MAX_SMS_MEDIA {
            return Err(ValidationError::too_many(
                format!("{field}.media_urls"),
                format!("at most {MAX_SMS_MEDIA} media URLs"),
            ));
        }
        for (i, media) in self.media_urls.iter().enumerate() {
            if !is_media_url(media) {
                return Err(ValidationError::invalid(
                    format!("{field}.media_urls[{i}]"),
                    "an http(s) URL with a host, which the provider fetches the media from",
                ));
            }
        }
        Ok(())
    }
}

impl GenericPayload {
    pub fn validate(&self, field: &str) -> Result<(), ValidationError> {
        if self.payload.is_null() {
            return Err(ValidationError::required(
                format!("{field}.payload"),
                "a JSON payload for the provider is required",
            ));
        }
        if let Some(raw) = &self.url {
            let parsed = url::Url::parse(raw).map_err(|e| {
                ValidationError::invalid(format!("{field}.url"), format!("not a URL: {e}"))
            })?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(ValidationError::invalid(
                    format!("{field}.url"),
                    "only http and https URLs with a host are accepted",
                ));
            }
        }
        Ok(())
    }
}

/// `field` is only formatted for an error: valid addresses are the common
/// case, and a batch checks thousands of them.
fn parse_mailbox(raw: &str, field: impl FnOnce() -> String) -> Result<Mailbox, ValidationError> {
    // Checked before parsing: lettre takes a zero-width space or a bidi
    // override as part of an address and would send it on raw.
    if let Some(c) = forbidden_in_address(raw) {
        return Err(ValidationError::forbidden_character(
            field(),
            format!(
                "an address may not contain control or invisible formatting characters; found {}",
                describe(c)
            ),
        ));
    }
    Mailbox::from_str(raw.trim()).map_err(|_| {
        ValidationError::invalid(field(), format!("`{raw}` is not a valid email address"))
    })
}

/// Refuses the control characters `lines` does not allow; `field` is
/// formatted only for an error, as in [`parse_mailbox`].
pub(super) fn check_text(
    text: &str,
    lines: Lines,
    field: impl FnOnce() -> String,
) -> Result<(), ValidationError> {
    match forbidden_in_text(text, lines) {
        None => Ok(()),
        Some(c) => {
            let allowed = match lines {
                Lines::Many => "control characters other than tab, CR and LF",
                Lines::One => "control characters or line breaks",
            };
            Err(ValidationError::forbidden_character(
                field(),
                format!("may not contain {allowed}; found {}", describe(c)),
            ))
        }
    }
}

/// `Alice <Alice@Example.com>` and `alice@example.com` are one recipient.
/// A recipient of `channel` as suppression entries, the recipient filter
/// and provider reports are compared: an email address without its display
/// name, lower-cased; a number, token or channel trimmed.
pub fn normalise_recipient(channel: Channel, raw: &str) -> String {
    match channel {
        Channel::Email => normalise_address(raw),
        _ => raw.trim().to_owned(),
    }
}

/// [`normalise_recipient`] of a recipient whose channel may be unknown (a
/// search by address): only email addresses have an `@`, and those are
/// compared whatever their case.
pub fn normalise_any_recipient(channel: Option<Channel>, raw: &str) -> String {
    let guessed = if raw.contains('@') {
        Channel::Email
    } else {
        Channel::Sms
    };
    normalise_recipient(channel.unwrap_or(guessed), raw)
}

/// `payload` (an email's stored JSON text) without the recipients in
/// `dropped` (normalised): what is sent once suppressed addresses are
/// left out. `None` when the text is not an email payload.
pub fn email_without(payload: &str, dropped: &[String]) -> Option<String> {
    let mut email: EmailPayload = serde_json::from_str(payload).ok()?;
    let keep = |list: &mut Vec<String>| {
        list.retain(|raw| !dropped.contains(&normalise_address(raw)));
    };
    keep(&mut email.to);
    keep(&mut email.cc);
    keep(&mut email.bcc);
    Some(Payload::Email(email).to_json_text())
}

fn normalise_address(raw: &str) -> String {
    match Mailbox::from_str(raw.trim()) {
        Ok(mailbox) => mailbox.email.to_string().to_lowercase(),
        Err(_) => raw.trim().to_lowercase(),
    }
}

fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> EmailPayload {
        EmailPayload {
            from: "Shop <shop@example.com>".into(),
            to: vec!["alice@example.com".into()],
            cc: vec![],
            bcc: vec![],
            reply_to: None,
            subject: "Your receipt".into(),
            text: Some("Thanks".into()),
            html: None,
            headers: BTreeMap::new(),
            attachments: vec![],
        }
    }

    fn field_of(result: Result<(), ValidationError>) -> String {
        result.map(|_| String::new()).unwrap_or_else(|e| e.field)
    }

    #[test]
    fn a_complete_email_is_valid() {
        assert_eq!(email().validate("email"), Ok(()));
    }

    #[test]
    fn email_errors_name_the_field() {
        let mut bad = email();
        bad.to.push("not an address".into());
        assert_eq!(field_of(bad.validate("email")), "email.to[1]");

        let mut bad = email();
        bad.to.clear();
        assert_eq!(field_of(bad.validate("email")), "email.to");

        let mut bad = email();
        bad.subject = "  ".into();
        assert_eq!(field_of(bad.validate("email")), "email.subject");

        let mut bad = email();
        bad.text = None;
        assert_eq!(field_of(bad.validate("email")), "email.text");

        let mut bad = email();
        bad.from = "nobody".into();
        assert_eq!(field_of(bad.validate("email")), "email.from");

        let mut bad = email();
        bad.bcc = (0..MAX_RECIPIENTS)
            .map(|i| format!("u{i}@example.com"))
            .collect();
        assert_eq!(field_of(bad.validate("email")), "email.to");
    }

    #[test]
    fn clients_cannot_set_the_stamp_header() {
        let mut bad = email();
        bad.headers
            .insert("X-Stamp-ID".into(), "01H00000000000000000000000".into());
        assert_eq!(field_of(bad.validate("email")), "email.headers.X-Stamp-ID");

        let mut bad = email();
        bad.headers.insert("x-tracking-id".into(), "x".into());
        assert!(bad.validate("email").is_err());

        let mut ok = email();
        ok.headers.insert("X-Campaign".into(), "winter".into());
        assert_eq!(ok.validate("email"), Ok(()));
    }

    #[test]
    fn header_values_cannot_inject_lines() {
        let mut bad = email();
        bad.headers
            .insert("X-Campaign".into(), "a\r\nBcc: victim@example.com".into());
        assert_eq!(field_of(bad.validate("email")), "email.headers.X-Campaign");
    }

    type SetAddress = fn(&mut EmailPayload, &str);

    #[test]
    fn invisible_and_control_characters_are_refused_in_every_address() {
        let hostile = [
            "ali\u{200B}ce@example.com",
            "\u{202E}moc.elpmaxe@ecila",
            "alice@exam\u{2060}ple.com",
            "Shop\u{202E} <shop@example.com>",
            "\u{FEFF}alice@example.com",
            "alice\u{0}@example.com",
            "alice@example.com\u{85}",
        ];
        for address in hostile {
            let fields: [(&str, SetAddress); 5] = [
                ("email.from", |e, a| e.from = a.into()),
                ("email.to[0]", |e, a| e.to = vec![a.into()]),
                ("email.cc[0]", |e, a| e.cc = vec![a.into()]),
                ("email.bcc[0]", |e, a| e.bcc = vec![a.into()]),
                ("email.reply_to", |e, a| e.reply_to = Some(a.into())),
            ];
            for (field, set) in fields {
                let mut bad = email();
                set(&mut bad, address);
                assert_eq!(field_of(bad.validate("email")), field, "{address:?}");
            }
        }
        let mut bad = email();
        bad.to = vec!["bob@example.com".into(), "ali\u{200B}ce@example.com".into()];
        let err = bad.validate("email").unwrap_err();
        assert_eq!(err.field, "email.to[1]");
        assert!(err.message.contains("U+200B"), "{}", err.message);
    }

    #[test]
    fn display_names_and_internationalised_addresses_keep_their_unicode() {
        for address in [
            "Zoë Åberg <zoe@example.com>",
            "محمد عبد الله <mohammed@example.com>",
            "דוד כהן <david@example.com>",
            "用户@例子.广告",
            "josé@bücher.de",
        ] {
            let mut ok = email();
            ok.from = address.into();
            ok.to = vec![address.into()];
            ok.reply_to = Some(address.into());
            assert_eq!(ok.validate("email"), Ok(()), "{address}");
        }
    }

    #[test]
    fn control_characters_are_refused_in_subject_bodies_and_headers() {
        let mut bad = email();
        bad.subject = "Receipt\u{0}".into();
        assert_eq!(field_of(bad.validate("email")), "email.subject");
        for subject in [
            "a\tb",
            "a\rb",
            "a\nBcc: x@example.com",
            "a\u{7F}",
            "a\u{9B}b",
        ] {
            let mut bad = email();
            bad.subject = subject.into();
            assert_eq!(
                field_of(bad.validate("email")),
                "email.subject",
                "{subject:?}"
            );
        }
        let mut bad = email();
        bad.text = Some("Thanks\u{0}".into());
        assert_eq!(field_of(bad.validate("email")), "email.text");
        let mut bad = email();
        bad.html = Some("<p>\u{1B}[2J</p>".into());
        assert_eq!(field_of(bad.validate("email")), "email.html");
        let mut bad = email();
        bad.headers.insert("X-Campaign".into(), "a\u{0}b".into());
        assert_eq!(field_of(bad.validate("email")), "email.headers.X-Campaign");
        let mut bad = email();
        bad.attachments.push(Attachment {
            filename: "invoice\u{202E}fdp.exe".into(),
            content_type: "application/pdf".into(),
            content_base64: "aGVsbG8=".into(),
        });
        assert_eq!(
            field_of(bad.validate("email")),
            "email.attachments[0].filename"
        );

        let mut ok = email();
        ok.subject = "Zoë's receipt 👨\u{200D}👩\u{200D}👧".into();
        ok.text = Some("Line one\r\n\tLine two\nco\u{00AD}operate".into());
        ok.html = Some("<p dir=\"rtl\">\u{200F}שלום</p>\n".into());
        assert_eq!(ok.validate("email"), Ok(()));
    }

    #[test]
    fn sms_refuses_control_and_invisible_characters() {
        let sms = SmsPayload {
            to: "+14155550100".into(),
            from: Some("+14155550199".into()),
            body: "Your code\nis 123456".into(),
            media_urls: Vec::new(),
        };
        assert_eq!(sms.validate("sms"), Ok(()));
        for (field, bad) in [
            (
                "sms.to",
                SmsPayload {
                    to: "+1415555\u{200B}0100".into(),
                    ..sms.clone()
                },
            ),
            (
                "sms.from",
                SmsPayload {
                    from: Some("Her\u{202E}ald".into()),
                    ..sms.clone()
                },
            ),
            (
                "sms.body",
                SmsPayload {
                    body: "code\u{0}123".into(),
                    ..sms.clone()
                },
            ),
            (
                "sms.body",
                SmsPayload {
                    body: "code\u{7F}".into(),
                    ..sms.clone()
                },
            ),
        ] {
            assert_eq!(field_of(bad.validate("sms")), field, "{bad:?}");
        }
    }

    /// A field's pattern in the published description.
    fn pattern_of<T: utoipa::PartialSchema>(field: &str) -> regex::Regex {
        let schema = serde_json::to_value(T::schema()).expect("a schema as JSON");
        let pattern = schema["properties"][field]["pattern"]
            .as_str()
            .unwrap_or_else(|| panic!("{field} has a pattern"));
        regex::Regex::new(pattern).expect("a valid pattern")
    }

    #[test]
    fn the_published_patterns_refuse_exactly_the_characters_validation_does() {
        let filename = pattern_of::<Attachment>("filename");
        let subject = pattern_of::<EmailPayload>("subject");
        let text = pattern_of::<EmailPayload>("text");
        let body = pattern_of::<SmsPayload>("body");
        let with = |c: char| format!("a{c}b");
        let mut attached = email();
        attached.attachments.push(Attachment {
            filename: String::new(),
            content_type: "text/plain".into(),
            content_base64: "aGVsbG8=".into(),
        });
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            attached.attachments[0].filename = with(c);
            let cp = u32::from(c);
            let accepted = attached.validate_attachments("email").is_ok();
            assert_eq!(filename.is_match(&with(c)), accepted, "filename U+{cp:04X}");
            let one_line = forbidden_in_text(&with(c), Lines::One).is_none();
            assert_eq!(subject.is_match(&with(c)), one_line, "subject U+{cp:04X}");
            let lines = forbidden_in_text(&with(c), Lines::Many).is_none();
            assert_eq!(text.is_match(&with(c)), lines, "text U+{cp:04X}");
            assert_eq!(body.is_match(&with(c)), lines, "sms body U+{cp:04X}");
        }
    }

    #[test]
    fn attachments_must_decode() {
        let mut bad = email();
        bad.attachments.push(Attachment {
            filename: "a.txt".into(),
            content_type: "text/plain".into(),
            content_base64: "!!!".into(),
        });
        assert_eq!(
            field_of(bad.validate("email")),
            "email.attachments[0].content_base64"
        );
    }

    #[test]
    fn sms_numbers_are_e164() {
        let sms = SmsPayload {
            to: "+14155550100".into(),
            from: Some("Herald".into()),
            body: "hi".into(),
            media_urls: Vec::new(),
        };
        assert_eq!(sms.validate("sms"), Ok(()));
        let bad = SmsPayload {
            to: "4155550100".into(),
            ..sms.clone()
        };
        assert_eq!(field_of(bad.validate("sms")), "sms.to");
        let bad = SmsPayload {
            body: String::new(),
            ..sms.clone()
        };
        assert_eq!(field_of(bad.validate("sms")), "sms.body");
        let media = |urls: &[&str]| SmsPayload {
            media_urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            ..sms.clone()
        };
        assert_eq!(
            media(&["https://cdn.example.com/a.png"]).validate("sms"),
            Ok(())
        );
        let bad = media(&["https://cdn.example.com/a.png", "file:///etc/passwd"]);
        assert_eq!(field_of(bad.validate("sms")), "sms.media_urls[1]");
        for bad in [
            "ftp://cdn.example.com/a.png",
            "https://-cdn.example.com/",
            "https://cdn..example.com/",
            "https://cdn.example.com:99999/",
            "https://cdn.example.com/a b",
            "\u{85}\u{b7}",
        ] {
            assert_eq!(
                field_of(media(&[bad]).validate("sms")),
                "sms.media_urls[0]",
                "{bad}"
            );
        }
        for good in [
            "http://cdn.example.com",
            "https://cdn.example.com:8443/a.png?x=1#y",
            "https://a/",
        ] {
            assert_eq!(media(&[good]).validate("sms"), Ok(()), "{good}");
        }
        let bad = media(&["https://cdn.example.com/a.png"; 11]);
        assert_eq!(field_of(bad.validate("sms")), "sms.media_urls");
    }

    #[test]
    fn generic_urls_must_be_http() {
        let ok = GenericPayload {
            payload: serde_json::json!({"a": 1}),
            url: Some("https://x.example/hook".into()),
        };
        assert_eq!(ok.validate("webhook"), Ok(()));
        let bad = GenericPayload {
            url: Some("file:///etc/passwd".into()),
            ..ok.clone()
        };
        assert_eq!(field_of(bad.validate("webhook")), "webhook.url");
        let bad = GenericPayload {
            payload: serde_json::Value::Null,
            url: None,
        };
        assert_eq!(field_of(bad.validate("webhook")), "webhook.payload");
    }

    /// Every field of each payload set, so that its JSON names them all.
    fn complete() -> [Payload; 5] {
        let mut email = email();
        email.cc = vec!["bob@example.com".into()];
        email.bcc = vec!["carol@example.com".into()];
        email.reply_to = Some("help@example.com".into());
        email.html = Some("<p>Thanks</p>".into());
        email.headers.insert("X-Campaign".into(), "spring".into());
        email.attachments.push(Attachment {
            filename: "receipt.txt".into(),
            content_type: "text/plain".into(),
            content_base64: "aGk=".into(),
        });
        [
            Payload::Email(email),
            Payload::Sms(SmsPayload {
                to: "+14155550100".into(),
                from: Some("Shop".into()),
                body: "Thanks".into(),
                media_urls: vec!["https://cdn.example.com/receipt.png".into()],
            }),
            Payload::Generic(
                Channel::Webhook,
                GenericPayload {
                    payload: serde_json::json!({}),
                    url: Some("https://example.com/hook".into()),
                },
            ),
            Payload::Push(PushPayload {
                token: "device-1".into(),
                title: Some("Shipped".into()),
                body: Some("Your order is on its way".into()),
                data: BTreeMap::from([("order".into(), "42".into())]),
                badge: Some(1),
                sound: Some("default".into()),
                ttl_s: Some(3600),
                collapse_key: Some("order-42".into()),
            }),
            Payload::Chat(ChatPayload {
                channel: "C0123456789".into(),
                text: "Deploy finished".into(),
                blocks: Some(vec![serde_json::json!({"type": "divider"})]),
                thread_ts: Some("1712345678.000100".into()),
            }),
        ]
    }

    /// Each payload with only what it must have.
    fn bare() -> [Payload; 5] {
        [
            Payload::Email(email()),
            Payload::Sms(SmsPayload {
                to: "+14155550100".into(),
                from: None,
                body: "Thanks".into(),
                media_urls: Vec::new(),
            }),
            Payload::Generic(
                Channel::Push,
                GenericPayload {
                    // An empty document is a value, never a default.
                    payload: serde_json::json!({}),
                    url: None,
                },
            ),
            Payload::Push(PushPayload {
                token: "device-1".into(),
                title: Some("Shipped".into()),
                body: None,
                data: BTreeMap::new(),
                badge: None,
                sound: None,
                ttl_s: None,
                collapse_key: None,
            }),
            Payload::Chat(ChatPayload {
                channel: "C0123456789".into(),
                text: "Deploy finished".into(),
                blocks: None,
                thread_ts: None,
            }),
        ]
    }

    fn keys(value: &serde_json::Value) -> Vec<String> {
        value
            .as_object()
            .expect("an object")
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn stored_payloads_leave_defaults_out_and_read_back_the_same() {
        let bare = bare();
        let stored: Vec<String> = bare.iter().map(Payload::to_json_text).collect();
        assert_eq!(
            stored,
            [
                r#"{"from":"Shop <shop@example.com>","to":["alice@example.com"],"subject":"Your receipt","text":"Thanks"}"#,
                r#"{"to":"+14155550100","body":"Thanks"}"#,
                r#"{"payload":{}}"#,
                r#"{"token":"device-1","title":"Shipped"}"#,
                r#"{"channel":"C0123456789","text":"Deploy finished"}"#,
            ]
        );
        for payload in bare.into_iter().chain(complete()) {
            let text = payload.to_json_text();
            let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            let back = Payload::from_json(payload.channel(), &value).expect("reads back");
            assert_eq!(back, payload, "{text}");
        }
    }

    #[test]
    fn the_api_shows_every_field_of_a_payload_stored_without_its_defaults() {
        let bare = bare();
        for (bare, complete) in bare.iter().zip(complete()) {
            let shown = bare.to_api_value();
            let all = serde_json::to_value(
                match &complete {
                    Payload::Email(e) => serde_json::to_value(e),
                    Payload::Sms(s) => serde_json::to_value(s),
                    Payload::Push(p) => serde_json::to_value(p),
                    Payload::Chat(c) => serde_json::to_value(c),
                    Payload::Generic(_, g) => serde_json::to_value(g),
                }
                .expect("JSON"),
            )
            .expect("JSON");
            assert_eq!(keys(&shown), keys(&all), "every field is shown");
            let back = Payload::from_json(bare.channel(), &shown).expect("reads back");
            assert_eq!(&back, bare);
        }
        let shown = Payload::Email(email()).to_api_value();
        assert_eq!(
            (
                &shown["cc"],
                &shown["reply_to"],
                &shown["headers"],
                &shown["attachments"]
            ),
            (
                &serde_json::json!([]),
                &serde_json::Value::Null,
                &serde_json::json!({}),
                &serde_json::json!([])
            )
        );
    }
}
