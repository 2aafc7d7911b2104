//! The content fingerprint: SHA-256 over a normalised form of what a
//! message says and to whom, so the same content always gives the same
//! fingerprint and any change to it gives another. Sender, metadata,
//! priority and timing are deliberately left out: they do not change what a
//! recipient reads.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Payload;

/// Bumped if the normalised form ever changes, so old and new fingerprints
/// can never collide by accident.
const VERSION_TAG: &[u8] = b"herald-fingerprint-v1";

/// What [`Fingerprint::parse`] accepts.
pub const FINGERPRINT_PATTERN: &str = "^[0-9A-Fa-f]{64}$";

impl utoipa::PartialSchema for Fingerprint {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .pattern(Some(FINGERPRINT_PATTERN))
            .description(Some("SHA-256 of the normalised content, 64 hex digits"))
            .into()
    }
}

impl utoipa::ToSchema for Fingerprint {}

/// Lower-case hex SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn of(payload: &Payload) -> Fingerprint {
        let mut hasher = Hasher::default();
        hasher.field(payload.channel().as_str().as_bytes());
        match payload {
            Payload::Email(email) => {
                let recipients = email.normalised_recipients();
                hasher.list(recipients.iter().map(|r| r.as_bytes()));
                hasher.field(email.subject.trim().as_bytes());
                hasher.optional(email.text.as_deref().map(normalise_newlines).as_deref());
                hasher.optional(email.html.as_deref().map(normalise_newlines).as_deref());
                let mut digests: Vec<String> = email
                    .attachments
                    .iter()
                    .map(|a| hex::encode(Sha256::digest(a.decode().unwrap_or_default())))
                    .collect();
                digests.sort();
                hasher.list(digests.iter().map(|d| d.as_bytes()));
            }
            Payload::Sms(sms) => {
                hasher.field(sms.to.as_bytes());
                hasher.field(normalise_newlines(&sms.body).as_bytes());
                // Only when there are some: a plain SMS keeps the
                // fingerprint it had before media could be sent.
                if !sms.media_urls.is_empty() {
                    hasher.list(sms.media_urls.iter().map(|u| u.as_bytes()));
                }
            }
            Payload::Push(push) => {
                hasher.field(push.token.as_bytes());
                hasher.optional(push.title.as_deref().map(str::trim));
                hasher.optional(push.body.as_deref().map(normalise_newlines).as_deref());
                let data: Vec<&[u8]> = push
                    .data
                    .iter()
                    .flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()])
                    .collect();
                hasher.list(data.into_iter());
            }
            Payload::Chat(chat) => {
                hasher.field(chat.channel.as_bytes());
                hasher.field(normalise_newlines(&chat.text).as_bytes());
                let blocks = chat
                    .blocks
                    .as_ref()
                    .map(|b| serde_json::Value::from(b.clone()).to_string());
                hasher.optional(blocks.as_deref());
            }
            Payload::Generic(_, generic) => {
                hasher.optional(generic.url.as_deref());
                // serde_json's Map is a BTreeMap here (no `preserve_order`),
                // so key order in the request does not change the bytes.
                hasher.field(generic.payload.to_string().as_bytes());
            }
        }
        Fingerprint(hex::encode(hasher.0.finalize()))
    }

    /// Accepts a stored or client-given fingerprint: 64 hex digits
    /// ([`FINGERPRINT_PATTERN`]), either case.
    pub fn parse(text: &str) -> Option<Fingerprint> {
        let text = text.to_ascii_lowercase();
        (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then_some(Fingerprint(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps a fingerprint read back from storage, which only ever holds
    /// values this module computed.
    pub fn from_stored(text: String) -> Fingerprint {
        Fingerprint(text)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Length-prefixes every field so that no two different field lists can
/// produce the same byte stream ("ab" + "c" vs "a" + "bc").
struct Hasher(Sha256);

impl Default for Hasher {
    fn default() -> Self {
        let mut sha = Sha256::new();
        sha.update(VERSION_TAG);
        Hasher(sha)
    }
}

impl Hasher {
    fn field(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
    }

    fn optional(&mut self, value: Option<&str>) {
        match value {
            Some(v) => {
                self.0.update([1]);
                self.field(v.as_bytes());
            }
            None => self.0.update([0]),
        }
    }

    fn list<'a>(&mut self, items: impl ExactSizeIterator<Item = &'a [u8]>) {
        self.0.update((items.len() as u64).to_be_bytes());
        for item in items {
            self.field(item);
        }
    }
}

fn normalise_newlines(text: &str) -> String {
    text.replace("\r\n", "\n")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::{Attachment, Channel, EmailPayload, GenericPayload, SmsPayload};

    fn email() -> EmailPayload {
        EmailPayload {
            from: "shop@example.com".into(),
            to: vec!["Alice <Alice@Example.com>".into(), "bob@example.com".into()],
            cc: vec![],
            bcc: vec![],
            reply_to: None,
            subject: "Receipt".into(),
            text: Some("Thanks\r\n".into()),
            html: Some("<p>Thanks</p>".into()),
            headers: BTreeMap::new(),
            attachments: vec![Attachment {
                filename: "r.txt".into(),
                content_type: "text/plain".into(),
                content_base64: "aGVsbG8=".into(),
            }],
        }
    }

    fn fp(email: EmailPayload) -> Fingerprint {
        Fingerprint::of(&Payload::Email(email))
    }

    #[test]
    fn same_content_same_fingerprint_whatever_the_recipient_spelling() {
        let mut reordered = email();
        reordered.to = vec!["BOB@example.com".into(), "alice@example.com".into()];
        reordered.text = Some("Thanks\n".into());
        reordered.from = "other-sender@example.com".into();
        assert_eq!(fp(email()), fp(reordered));
        assert_eq!(fp(email()).as_str().len(), 64);
    }

    #[test]
    fn any_change_of_content_changes_the_fingerprint() {
        let base = fp(email());
        let mut changed = Vec::new();
        let mut e = email();
        e.subject = "Receipt!".into();
        changed.push(e);
        let mut e = email();
        e.to.push("carol@example.com".into());
        changed.push(e);
        let mut e = email();
        e.html = None;
        changed.push(e);
        let mut e = email();
        e.text = Some("Thanks!".into());
        changed.push(e);
        let mut e = email();
        e.attachments[0].content_base64 = "aGVsbG8h".into();
        changed.push(e);
        for e in changed {
            assert_ne!(fp(e), base);
        }
    }

    #[test]
    fn text_and_html_are_separate_fields() {
        let mut a = email();
        a.text = Some("x".into());
        a.html = None;
        let mut b = email();
        b.text = None;
        b.html = Some("x".into());
        assert_ne!(fp(a), fp(b));
    }

    #[test]
    fn json_key_order_does_not_matter_but_the_channel_does() {
        let a: serde_json::Value = serde_json::from_str(r#"{"a":1,"b":2}"#).unwrap_or_default();
        let b: serde_json::Value = serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap_or_default();
        let chat = |v| {
            Fingerprint::of(&Payload::Generic(
                Channel::Chat,
                GenericPayload {
                    payload: v,
                    url: None,
                },
            ))
        };
        assert_eq!(chat(a.clone()), chat(b));
        let push = Fingerprint::of(&Payload::Generic(
            Channel::Push,
            GenericPayload {
                payload: a.clone(),
                url: None,
            },
        ));
        assert_ne!(chat(a), push);
    }

    #[test]
    fn sms_fingerprint_covers_number_and_body() {
        let sms = |to: &str, body: &str| {
            Fingerprint::of(&Payload::Sms(SmsPayload {
                to: to.into(),
                from: None,
                body: body.into(),
                media_urls: Vec::new(),
            }))
        };
        assert_eq!(sms("+14155550100", "hi"), sms("+14155550100", "hi"));
        assert_ne!(sms("+14155550100", "hi"), sms("+14155550101", "hi"));
        assert_ne!(sms("+14155550100", "hi"), sms("+14155550100", "ho"));
    }

    #[test]
    fn parse_accepts_only_sha256_hex() {
        let f = fp(email());
        assert_eq!(Fingerprint::parse(&f.as_str().to_uppercase()), Some(f));
        assert_eq!(Fingerprint::parse("abc"), None);
    }
}
