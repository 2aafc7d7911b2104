//! Turning a stored email message into a MIME message (lettre's
//! [`lettre::Message`]) for the SMTP and file transports: addresses,
//! bodies, attachments, custom headers, and the stamp headers that tie
//! every copy of the email back to its message.

use std::str::FromStr;

use lettre::address::Envelope;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};

use crate::domain::{Channel, EmailPayload, Message, Payload, Stamp};

use super::TransportError;

/// `X-Stamp-ID: <message id>`: the header mail readers and bounce
/// processors use to find the message an email belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XStampId(pub Stamp);

/// `X-Tracking-ID: <message id>`: the same stamp under the header name
/// older readers were built on, kept so they do not break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XTrackingId(pub Stamp);

/// The headers that carry the stamp, as every email carries them: the
/// HTTP providers set them by name, beside the SMTP transport's typed ones.
pub const STAMP_HEADER: &str = "X-Stamp-ID";
pub const TRACKING_HEADER: &str = "X-Tracking-ID";

macro_rules! stamp_header {
    ($type:ident, $name:expr) => {
        impl Header for $type {
            fn name() -> HeaderName {
                HeaderName::new_from_ascii_str($name)
            }

            fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
                Ok($type(Stamp::from_str(s.trim())?))
            }

            fn display(&self) -> HeaderValue {
                HeaderValue::new(Self::name(), self.0.to_string())
            }
        }
    };
}

stamp_header!(XStampId, STAMP_HEADER);
stamp_header!(XTrackingId, TRACKING_HEADER);

/// Builds the email for `message`. Anything that keeps it from being a
/// valid email is [`TransportError::InvalidMessage`]: no retry can fix it.
pub(crate) fn build_email(message: &Message) -> Result<lettre::Message, TransportError> {
    build_from_payload(message.id, &email_payload(message)?)
}

/// The email `message` carries, checked again as enqueue checked it. The
/// HTTP email providers take this, not MIME, so they share it with
/// [`build_email`] and refuse exactly what it refuses.
pub(crate) fn email_payload(message: &Message) -> Result<EmailPayload, TransportError> {
    if message.channel != Channel::Email {
        return Err(TransportError::InvalidMessage(format!(
            "an email transport cannot deliver a `{}` message",
            message.channel
        )));
    }
    let email = match Payload::from_json(Channel::Email, &message.payload) {
        Ok(Payload::Email(email)) => email,
        Ok(_) => {
            return Err(TransportError::InvalidMessage(
                "the payload is not an email".into(),
            ));
        }
        Err(e) => {
            return Err(TransportError::InvalidMessage(format!(
                "the stored email payload does not parse: {e}"
            )));
        }
    };
    // Enqueue validated this payload already; checking again here means a
    // row written by an older version, or by hand, still cannot forge the
    // stamp headers or smuggle recipients in through custom headers.
    email
        .validate("email")
        .map_err(|e| TransportError::InvalidMessage(e.to_string()))?;
    Ok(email)
}

fn build_from_payload(
    stamp: Stamp,
    email: &EmailPayload,
) -> Result<lettre::Message, TransportError> {
    let from = mailbox(&email.from, "from")?;
    let mut builder = lettre::Message::builder();
    // Custom headers go in first: the typed headers set afterwards replace
    // any of the same name, so a custom header can only add, never override.
    for (name, value) in &email.headers {
        let header_name = HeaderName::new_from_ascii(name.clone()).map_err(|_| {
            TransportError::InvalidMessage(format!("`{name}` is not a valid header name"))
        })?;
        builder = builder.raw_header(HeaderValue::new(header_name, value.clone()));
    }
    builder = builder
        .from(from.clone())
        .subject(email.subject.clone())
        .header(XStampId(stamp))
        .header(XTrackingId(stamp));
    let mut recipients = Vec::with_capacity(email.to.len() + email.cc.len() + email.bcc.len());
    for address in &email.to {
        let mailbox = mailbox(address, "to")?;
        recipients.push(mailbox.email.clone());
        builder = builder.to(mailbox);
    }
    for address in &email.cc {
        let mailbox = mailbox(address, "cc")?;
        recipients.push(mailbox.email.clone());
        builder = builder.cc(mailbox);
    }
    for address in &email.bcc {
        // Bcc recipients are in the envelope only; lettre drops the header.
        let mailbox = mailbox(address, "bcc")?;
        recipients.push(mailbox.email.clone());
        builder = builder.bcc(mailbox);
    }
    if let Some(reply_to) = &email.reply_to {
        builder = builder.reply_to(mailbox(reply_to, "reply_to")?);
    }
    // The envelope comes from the typed fields alone, so the SMTP
    // conversation can never reach an address the payload did not name.
    let envelope = Envelope::new(Some(from.email), recipients)
        .map_err(|e| TransportError::InvalidMessage(format!("envelope: {e}")))?;
    builder = builder.envelope(envelope);

    let body = body_part(email)?;
    let built = if email.attachments.is_empty() {
        match body {
            Body::Single(part) => builder.singlepart(part),
            Body::Multi(part) => builder.multipart(part),
        }
    } else {
        let mut mixed = match body {
            Body::Single(part) => MultiPart::mixed().singlepart(part),
            Body::Multi(part) => MultiPart::mixed().multipart(part),
        };
        for (i, attachment) in email.attachments.iter().enumerate() {
            let content = attachment.decode().map_err(|e| {
                TransportError::InvalidMessage(format!(
                    "email.attachments[{i}].content_base64: {e}"
                ))
            })?;
            let content_type = ContentType::parse(&attachment.content_type).map_err(|e| {
                TransportError::InvalidMessage(format!("email.attachments[{i}].content_type: {e}"))
            })?;
            mixed = mixed.singlepart(
                Attachment::new(attachment.filename.clone()).body(content, content_type),
            );
        }
        builder.multipart(mixed)
    };
    built.map_err(|e| TransportError::InvalidMessage(format!("cannot build the email: {e}")))
}

enum Body {
    Single(SinglePart),
    Multi(MultiPart),
}

/// Text, HTML, or both as multipart/alternative (plain first, so readers
/// that cannot show HTML fall back to it).
fn body_part(email: &EmailPayload) -> Result<Body, TransportError> {
    let text = email.text.as_deref().filter(|t| !t.trim().is_empty());
    let html = email.html.as_deref().filter(|t| !t.trim().is_empty());
    match (text, html) {
        (Some(text), Some(html)) => Ok(Body::Multi(MultiPart::alternative_plain_html(
            text.to_owned(),
            html.to_owned(),
        ))),
        (Some(text), None) => Ok(Body::Single(SinglePart::plain(text.to_owned()))),
        (None, Some(html)) => Ok(Body::Single(SinglePart::html(html.to_owned()))),
        (None, None) => Err(TransportError::InvalidMessage(
            "an email needs a body: `text`, `html` or both".into(),
        )),
    }
}

/// `raw` as an address with its display name, if it has one; `field`
/// names it in the error.
pub(crate) fn mailbox(raw: &str, field: &str) -> Result<Mailbox, TransportError> {
    Mailbox::from_str(raw.trim()).map_err(|e| {
        TransportError::InvalidMessage(format!("email.{field}: `{raw}` is not an address: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use base64::Engine;

    use super::*;
    use crate::domain::Attachment as PayloadAttachment;

    fn email() -> EmailPayload {
        EmailPayload {
            from: "Shop <shop@example.com>".into(),
            to: vec!["alice@example.com".into()],
            cc: vec!["carol@example.com".into()],
            bcc: vec!["audit@example.com".into()],
            reply_to: Some("help@example.com".into()),
            subject: "Your receipt".into(),
            text: Some("Thanks".into()),
            html: None,
            headers: BTreeMap::new(),
            attachments: vec![],
        }
    }

    fn formatted(email: &EmailPayload, stamp: Stamp) -> String {
        let built = build_from_payload(stamp, email).unwrap();
        String::from_utf8(built.formatted()).unwrap()
    }

    #[test]
    fn every_email_carries_the_stamp_under_both_header_names() {
        let stamp = Stamp::generate();
        let built = build_from_payload(stamp, &email()).unwrap();
        assert_eq!(built.headers().get::<XStampId>(), Some(XStampId(stamp)));
        assert_eq!(
            built.headers().get::<XTrackingId>(),
            Some(XTrackingId(stamp))
        );
        let text = String::from_utf8(built.formatted()).unwrap();
        assert!(text.contains(&format!("X-Stamp-ID: {stamp}\r\n")));
        assert!(text.contains(&format!("X-Tracking-ID: {stamp}\r\n")));
    }

    #[test]
    fn stamp_headers_parse_back_and_refuse_what_is_not_a_stamp() {
        let stamp = Stamp::generate();
        assert_eq!(
            XStampId::parse(&stamp.to_string()).ok(),
            Some(XStampId(stamp))
        );
        assert!(XTrackingId::parse("not-a-stamp").is_err());
    }

    #[test]
    fn bcc_reaches_the_envelope_but_not_the_headers() {
        let built = build_from_payload(Stamp::generate(), &email()).unwrap();
        let to: Vec<String> = built
            .envelope()
            .to()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            to,
            [
                "alice@example.com",
                "carol@example.com",
                "audit@example.com"
            ]
        );
        let text = String::from_utf8(built.formatted()).unwrap();
        assert!(!text.contains("audit@example.com"));
        assert!(text.contains("Reply-To: help@example.com"));
        assert!(text.contains("Cc: carol@example.com"));
    }

    #[test]
    fn text_and_html_become_alternatives_and_attachments_make_it_mixed() {
        let mut both = email();
        both.html = Some("<p>Thanks</p>".into());
        let text = formatted(&both, Stamp::generate());
        assert!(text.contains("multipart/alternative"));
        assert!(!text.contains("multipart/mixed"));

        both.attachments.push(PayloadAttachment {
            filename: "receipt.txt".into(),
            content_type: "text/plain".into(),
            content_base64: base64::engine::general_purpose::STANDARD.encode("total: 42"),
        });
        let text = formatted(&both, Stamp::generate());
        assert!(text.contains("multipart/mixed"));
        assert!(text.contains("multipart/alternative"));
        assert!(text.contains("filename=\"receipt.txt\""));
        assert!(text.contains("total: 42"));
    }

    #[test]
    fn custom_headers_are_added_but_cannot_change_the_envelope() {
        let mut with_header = email();
        with_header
            .headers
            .insert("X-Campaign".into(), "winter".into());
        assert!(formatted(&with_header, Stamp::generate()).contains("X-Campaign: winter\r\n"));

        // `validate` refuses this at enqueue; built anyway, the envelope
        // still holds only the typed recipients.
        let mut sneaky = email();
        sneaky
            .headers
            .insert("Sender".into(), "evil@example.net".into());
        let built = build_from_payload(Stamp::generate(), &sneaky).unwrap();
        assert_eq!(
            built.envelope().from().map(ToString::to_string).as_deref(),
            Some("shop@example.com")
        );
        assert_eq!(built.envelope().to().len(), 3);
    }

    #[test]
    fn a_message_that_is_not_an_email_is_invalid() {
        let message = crate::transports::tests::message(
            Channel::Sms,
            serde_json::json!({"to": "+14155550100", "body": "hi"}),
        );
        let err = build_email(&message).unwrap_err();
        assert!(err.is_permanent(), "{err}");

        let mut forged = email();
        forged.headers.insert("X-Stamp-ID".into(), "x".into());
        let message = crate::transports::tests::message(
            Channel::Email,
            serde_json::to_value(&forged).unwrap(),
        );
        assert!(matches!(
            build_email(&message),
            Err(TransportError::InvalidMessage(_))
        ));
    }
}
