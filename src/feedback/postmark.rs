//! Postmark's webhooks: one JSON record per request, named by its
//! `RecordType` (Delivery, Bounce, SpamComplaint, Open, Click,
//! SubscriptionChange), protected by the HTTP basic auth credentials
//! set in the webhook's URL. Postmark neither signs nor dates its
//! requests, so the credentials are the whole check. It owns that check
//! and the reading of the record into a [`FeedbackEvent`].

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use super::{
    Accepted, BounceType, FeedbackEvent, FeedbackKind, FeedbackSource, Inbound, Refusal, Target,
    parse_json,
};

/// Checks Postmark's webhook requests against one user and password.
pub struct PostmarkEvents {
    /// `user:password`, as basic auth encodes it.
    credentials: Vec<u8>,
}

impl std::fmt::Debug for PostmarkEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostmarkEvents(***)")
    }
}

impl PostmarkEvents {
    pub fn new(username: &str, password: &str) -> PostmarkEvents {
        PostmarkEvents {
            credentials: format!("{username}:{password}").into_bytes(),
        }
    }

    fn verify(&self, request: &Inbound<'_>) -> Result<(), Refusal> {
        let refused = || Refusal::Unauthorized("basic auth credentials do not match".into());
        let header = request
            .header("authorization")
            .ok_or_else(|| Refusal::Unauthorized("no authorization header".into()))?;
        let (scheme, encoded) = header.trim().split_once(' ').ok_or_else(refused)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(refused());
        }
        let given = STANDARD.decode(encoded.trim()).map_err(|_| refused())?;
        if bool::from(given.ct_eq(&self.credentials)) {
            Ok(())
        } else {
            Err(refused())
        }
    }
}

/// A bounce record's `Type`, read as Herald's kind, per Postmark's
/// bounce type list; `None` for one that says nothing about delivery.
fn bounce_kind(bounce_type: &str) -> Option<(FeedbackKind, Option<BounceType>)> {
    let hard = (FeedbackKind::Bounced, Some(BounceType::Hard));
    let soft = (FeedbackKind::Bounced, Some(BounceType::Soft));
    Some(match bounce_type {
        "HardBounce" | "BadEmailAddress" | "ManuallyDeactivated" => hard,
        "SpamComplaint" => (FeedbackKind::Complained, None),
        "Unsubscribe" => (FeedbackKind::Unsubscribed, None),
        // Postmark refused it before any receiver saw it.
        "SMTPApiError" | "TemplateRenderingFailed" | "Unconfirmed" => {
            (FeedbackKind::Rejected, None)
        }
        // About mail sent to Postmark, or a subscription: not a delivery.
        "Subscribe" | "InboundError" | "OpenRelayTest" => return None,
        // SoftBounce, Transient, DnsError, AutoResponder, AddressChange,
        // Blocked, DMARCPolicy, the notifications, Unknown and any type
        // Postmark adds later: worth trying again, so never suppressed.
        _ => soft,
    })
}

fn text<'a>(record: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    record
        .get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn date(record: &Map<String, Value>, name: &str) -> Result<DateTime<Utc>, Refusal> {
    text(record, name)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|at| at.with_timezone(&Utc))
        .ok_or_else(|| Refusal::malformed(name, "an RFC 3339 date is required"))
}

/// Reads a verified record; `None` when it says nothing Herald tracks
/// or names no message.
fn parse(body: &[u8]) -> Result<Option<FeedbackEvent>, Refusal> {
    let record: Map<String, Value> = parse_json(body)?;
    let record_type = text(&record, "RecordType")
        .ok_or_else(|| Refusal::malformed("RecordType", "a record type is required"))?;
    // Which kind, and which fields name the recipient and the time.
    let ((kind, bounce), recipient, at) = match record_type {
        "Delivery" => ((FeedbackKind::Delivered, None), "Recipient", "DeliveredAt"),
        "Bounce" => {
            let bounce_type = text(&record, "Type")
                .ok_or_else(|| Refusal::malformed("Type", "a bounce type is required"))?;
            let Some(kind) = bounce_kind(bounce_type) else {
                return Ok(None);
            };
            (kind, "Email", "BouncedAt")
        }
        "SpamComplaint" => ((FeedbackKind::Complained, None), "Email", "BouncedAt"),
        "Open" => ((FeedbackKind::Opened, None), "Recipient", "ReceivedAt"),
        "Click" => ((FeedbackKind::Clicked, None), "Recipient", "ReceivedAt"),
        "SubscriptionChange" => match record.get("SuppressSending").and_then(Value::as_bool) {
            Some(true) => ((FeedbackKind::Unsubscribed, None), "Recipient", "ChangedAt"),
            // A reactivation: Herald keeps no state it would undo.
            Some(false) => return Ok(None),
            None => {
                return Err(Refusal::malformed(
                    "SuppressSending",
                    "true or false is required",
                ));
            }
        },
        _ => return Ok(None),
    };
    let at = date(&record, at)?;
    let message_id = text(&record, "MessageID");
    let stamp = record
        .get("Metadata")
        .and_then(Value::as_object)
        .and_then(|metadata| text(metadata, "stamp"));
    let Some(target) = Target::from_parts(stamp, message_id) else {
        return Ok(None);
    };
    let recipient = text(&record, recipient).map(str::to_owned);
    let reason = ["Details", "Description", "SuppressionReason"]
        .into_iter()
        .find_map(|name| text(&record, name))
        .map(str::to_owned);
    // Bounces and complaints carry Postmark's own id; the others are one
    // per record type, message and recipient.
    let event_id = match record.get("ID") {
        Some(Value::Number(id)) => Some(id.to_string()),
        Some(Value::String(id)) if !id.trim().is_empty() => Some(id.trim().to_owned()),
        _ => Some(format!(
            "{record_type}:{}:{}",
            message_id.unwrap_or_default(),
            recipient.as_deref().unwrap_or_default()
        )),
    };
    Ok(Some(FeedbackEvent {
        target,
        kind,
        bounce,
        recipient,
        at,
        reason,
        event_id,
    }))
}

#[async_trait]
impl FeedbackSource for PostmarkEvents {
    fn scheme(&self) -> &'static str {
        "postmark"
    }

    async fn accept(&self, request: Inbound<'_>) -> Result<Accepted, Refusal> {
        self.verify(&request)?;
        let event = parse(request.body)?;
        let ignored = usize::from(event.is_none());
        Ok(Accepted {
            events: event.into_iter().collect(),
            // Nothing Postmark sends is unique to one request; its
            // retries are deduplicated by the events' ids.
            nonce: None,
            ignored,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{accept, headers, inbound, is_unauthorized};
    use super::*;

    const NOW: i64 = 1_572_971_634;

    // Postmark's published examples of each record type, with a stamp
    // in the delivery's metadata.
    const DELIVERY: &str = r#"{"RecordType": "Delivery", "ServerID": 23, "MessageStream": "outbound",
      "MessageID": "00000000-0000-0000-0000-000000000000", "Recipient": "john@example.com",
      "Tag": "welcome-email", "DeliveredAt": "2019-11-05T16:33:54.9070259Z",
      "Details": "Test delivery webhook details", "Metadata": {"example": "value", "stamp": "STAMP"}}"#;
    const BOUNCE: &str = r#"{"RecordType": "Bounce", "ID": 42, "Type": "HardBounce", "TypeCode": 1,
      "Name": "Hard bounce", "Tag": "Test", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
      "ServerID": 1234, "MessageStream": "outbound",
      "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
      "Details": "Test bounce details", "Email": "john@example.com", "From": "sender@example.com",
      "BouncedAt": "2014-08-01T13:28:10.2735393-04:00", "DumpAvailable": true, "Inactive": true,
      "CanActivate": true, "Subject": "Test subject", "Content": "Test content", "Metadata": {"user_id": 43}}"#;
    const COMPLAINT: &str = r#"{"RecordType": "SpamComplaint", "ID": 42, "Type": "SpamComplaint",
      "TypeCode": 100001, "Name": "Spam complaint", "Tag": "Test", "MessageID": "00000000-0000-0000-0000-000000000000",
      "ServerID": 1234, "MessageStream": "outbound", "Description": "", "Details": "Test spam complaint details",
      "Email": "john@example.com", "From": "sender@example.com", "BouncedAt": "2019-11-05T16:33:54.9070259Z",
      "DumpAvailable": true, "Inactive": true, "CanActivate": false, "Subject": "Test subject"}"#;
    const OPEN: &str = r#"{"RecordType": "Open", "MessageStream": "outbound", "FirstOpen": true,
      "Client": {"Name": "Chrome 35.0.1916.153", "Company": "Google", "Family": "Chrome"},
      "OS": {"Name": "OS X 10.7 Lion", "Company": "Apple Computer, Inc.", "Family": "OS X 10"},
      "Platform": "WebMail", "UserAgent": "Mozilla/5.0", "ReadSeconds": 5,
      "Geo": {"CountryISOCode": "RS", "Country": "Serbia"},
      "MessageID": "00000000-0000-0000-0000-000000000000", "Metadata": {"example": "value"},
      "ReceivedAt": "2019-11-05T16:33:54.9070259Z", "Tag": "welcome-email", "Recipient": "john@example.com"}"#;
    const CLICK: &str = r#"{"RecordType": "Click", "MessageStream": "outbound", "ClickLocation": "HTML",
      "Platform": "Desktop", "UserAgent": "Mozilla/5.0", "OriginalLink": "https://example.com",
      "MessageID": "00000000-0000-0000-0000-000000000000", "Metadata": {"example": "value"},
      "ReceivedAt": "2017-10-25T15:21:11.0000000Z", "Tag": "welcome-email", "Recipient": "john@example.com"}"#;
    const SUBSCRIPTION: &str = r#"{"RecordType": "SubscriptionChange",
      "MessageID": "00000000-0000-0000-0000-000000000000", "ServerID": 23, "MessageStream": "outbound",
      "ChangedAt": "2020-02-01T10:53:34.416071Z", "Recipient": "bounced-address@wildbit.com",
      "Origin": "Recipient", "SuppressSending": true, "SuppressionReason": "ManualSuppression",
      "Tag": "my-tag", "Metadata": {"example": "value"}}"#;

    fn source() -> PostmarkEvents {
        PostmarkEvents::new("postmark", "hunter2")
    }

    fn auth(user: &str, password: &str) -> Vec<(String, String)> {
        let basic = STANDARD.encode(format!("{user}:{password}"));
        headers(&[("Authorization", &format!("Basic {basic}"))])
    }

    fn run(hdrs: &[(String, String)], body: &str) -> Result<Accepted, Refusal> {
        accept(&source(), inbound(hdrs, body.as_bytes(), "", NOW))
    }

    fn one(body: &str) -> FeedbackEvent {
        let accepted = run(&auth("postmark", "hunter2"), body).unwrap();
        let [event] = &accepted.events[..] else {
            panic!("one event: {accepted:?}")
        };
        event.clone()
    }

    #[test]
    fn the_published_examples_read_into_herald_s_kinds() {
        let stamp = crate::domain::Stamp::generate();
        let delivery = one(&DELIVERY.replace("STAMP", &stamp.to_string()));
        assert_eq!(delivery.kind, FeedbackKind::Delivered);
        assert_eq!(
            delivery.target,
            Target::Both(stamp, "00000000-0000-0000-0000-000000000000".into())
        );
        assert_eq!(delivery.recipient.as_deref(), Some("john@example.com"));
        assert_eq!(delivery.at.timestamp(), NOW);
        assert_eq!(
            delivery.event_id.as_deref(),
            Some("Delivery:00000000-0000-0000-0000-000000000000:john@example.com")
        );

        let bounce = one(BOUNCE);
        assert_eq!(
            (bounce.kind, bounce.bounce),
            (FeedbackKind::Bounced, Some(BounceType::Hard))
        );
        assert_eq!(
            bounce.target,
            Target::ProviderId("883953f4-6105-42a2-a16a-77a8eac79483".into())
        );
        assert_eq!(bounce.at.timestamp(), 1_406_914_090);
        assert_eq!(bounce.reason.as_deref(), Some("Test bounce details"));
        assert_eq!(bounce.event_id.as_deref(), Some("42"));

        let soft = one(&BOUNCE.replace(r#""Type": "HardBounce""#, r#""Type": "SoftBounce""#));
        assert_eq!(soft.bounce, Some(BounceType::Soft));

        assert_eq!(one(COMPLAINT).kind, FeedbackKind::Complained);
        assert_eq!(one(OPEN).kind, FeedbackKind::Opened);
        assert_eq!(one(CLICK).kind, FeedbackKind::Clicked);
        let unsubscribed = one(SUBSCRIPTION);
        assert_eq!(unsubscribed.kind, FeedbackKind::Unsubscribed);
        assert_eq!(unsubscribed.reason.as_deref(), Some("ManualSuppression"));
    }

    #[test]
    fn a_reactivation_and_an_unknown_record_are_ignored() {
        let reactivated =
            SUBSCRIPTION.replace(r#""SuppressSending": true"#, r#""SuppressSending": false"#);
        let unknown = OPEN.replace(r#""RecordType": "Open""#, r#""RecordType": "Inbound""#);
        for body in [reactivated, unknown] {
            let accepted = run(&auth("postmark", "hunter2"), &body).unwrap();
            assert!(accepted.events.is_empty());
            assert_eq!(accepted.ignored, 1);
        }
    }

    #[test]
    fn wrong_or_missing_credentials_are_unauthorized() {
        assert!(is_unauthorized(&run(
            &auth("postmark", "hunter3"),
            DELIVERY
        )));
        assert!(is_unauthorized(&run(&auth("other", "hunter2"), DELIVERY)));
        assert!(is_unauthorized(&run(&[], DELIVERY)));
        let bearer = headers(&[("Authorization", "Bearer cG9zdG1hcms6aHVudGVyMg==")]);
        assert!(is_unauthorized(&run(&bearer, DELIVERY)));
    }

    #[test]
    fn a_malformed_record_names_its_field() {
        let hdrs = auth("postmark", "hunter2");
        let no_date = DELIVERY.replace("2019-11-05T16:33:54.9070259Z", "yesterday");
        let no_type = DELIVERY.replace(r#""RecordType": "Delivery","#, "");
        for (body, expected) in [
            (no_date.as_str(), "DeliveredAt"),
            (no_type.as_str(), "RecordType"),
            ("[]", "body"),
        ] {
            match run(&hdrs, body) {
                Err(Refusal::Malformed { field, .. }) => assert_eq!(field, expected),
                other => panic!("{expected}: {other:?}"),
            }
        }
    }
}
