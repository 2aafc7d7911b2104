//! Mailgun's webhooks: one event per request, JSON
//! `{"signature": {timestamp, token, signature}, "event-data": {...}}`,
//! signed with the account's HTTP webhook signing key as hex
//! HMAC-SHA256 of `timestamp + token`. It owns that check and the
//! reading of `event-data` into a [`FeedbackEvent`].

use async_trait::async_trait;
use ring::hmac;
use serde_json::{Map, Value};

use super::{
    Accepted, BounceType, FeedbackEvent, FeedbackKind, FeedbackSource, Inbound, Refusal, Target,
    from_unix_seconds, timely_unix_seconds,
};

/// Verifies Mailgun's webhooks with one signing key.
pub struct MailgunEvents {
    key: hmac::Key,
}

impl std::fmt::Debug for MailgunEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MailgunEvents(***)")
    }
}

impl MailgunEvents {
    /// The source for the HTTP webhook signing key Mailgun shows.
    pub fn new(signing_key: &str) -> MailgunEvents {
        MailgunEvents {
            key: hmac::Key::new(hmac::HMAC_SHA256, signing_key.trim().as_bytes()),
        }
    }

    /// Checks the body's `signature` and answers its token, the nonce.
    fn verify(&self, request: &Inbound<'_>, body: &Value) -> Result<String, Refusal> {
        let unsigned =
            || Refusal::Unauthorized("no signature.timestamp, token and signature".into());
        let signature = body.get("signature").ok_or_else(unsigned)?;
        let field = |name: &str| match signature.get(name) {
            Some(Value::String(text)) => Some(text.clone()),
            // Seen as a number from some senders; signed as its digits.
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let (Some(timestamp), Some(token), Some(sig)) =
            (field("timestamp"), field("token"), field("signature"))
        else {
            return Err(unsigned());
        };
        timely_unix_seconds(request, &timestamp, "signature.timestamp")?;
        let sig = hex::decode(sig.trim())
            .map_err(|_| Refusal::Unauthorized("signature.signature is not hex".into()))?;
        hmac::verify(&self.key, format!("{timestamp}{token}").as_bytes(), &sig)
            .map_err(|_| Refusal::Unauthorized("the webhook signature does not verify".into()))?;
        Ok(token)
    }
}

fn text<'a>(fields: &'a Map<String, Value>, path: &[&str]) -> Option<&'a str> {
    let (last, parents) = path.split_last()?;
    let mut object = fields;
    for name in parents {
        object = object.get(*name)?.as_object()?;
    }
    object
        .get(*last)?
        .as_str()
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// What a `failed` event says: Mailgun's own suppressions are its
/// refusal to send, not a bounce from the receiver.
fn failure(data: &Map<String, Value>) -> (FeedbackKind, Option<BounceType>) {
    let reason = text(data, &["reason"]).unwrap_or_default();
    match text(data, &["severity"]) {
        Some("temporary") => (FeedbackKind::Bounced, Some(BounceType::Soft)),
        _ if reason.starts_with("suppress-") => (FeedbackKind::Rejected, None),
        _ => (FeedbackKind::Bounced, Some(BounceType::Hard)),
    }
}

/// The reason as specific as Mailgun gives it: the SMTP diagnostic,
/// else its code, else its own reason word.
fn reason(data: &Map<String, Value>) -> Option<String> {
    text(data, &["delivery-status", "description"])
        .or_else(|| text(data, &["delivery-status", "message"]))
        .map(str::to_owned)
        .or_else(|| {
            data.get("delivery-status")
                .and_then(|s| s.get("code"))
                .filter(|code| code.is_number())
                .map(|code| code.to_string())
        })
        .or_else(|| text(data, &["reason"]).map(str::to_owned))
}

/// Reads the verified `event-data`; `None` when it says nothing Herald
/// tracks or names no message.
fn parse(body: &Value) -> Result<Option<FeedbackEvent>, Refusal> {
    let data = body
        .get("event-data")
        .and_then(Value::as_object)
        .ok_or_else(|| Refusal::malformed("event-data", "an object is required"))?;
    let event = text(data, &["event"])
        .ok_or_else(|| Refusal::malformed("event-data.event", "an event name is required"))?;
    let (kind, bounce) = match event {
        "delivered" => (FeedbackKind::Delivered, None),
        "failed" => failure(data),
        "opened" => (FeedbackKind::Opened, None),
        "clicked" => (FeedbackKind::Clicked, None),
        "unsubscribed" => (FeedbackKind::Unsubscribed, None),
        "complained" => (FeedbackKind::Complained, None),
        _ => return Ok(None),
    };
    let at = data
        .get("timestamp")
        .and_then(Value::as_f64)
        .and_then(from_unix_seconds)
        .ok_or_else(|| Refusal::malformed("event-data.timestamp", "Unix seconds are required"))?;
    // The messages API answers the id in angle brackets, as it was
    // recorded at send; the header here comes without them.
    let provider_id = text(data, &["message", "headers", "message-id"]).map(|id| {
        if id.starts_with('<') {
            id.to_owned()
        } else {
            format!("<{id}>")
        }
    });
    let Some(target) = Target::from_parts(
        text(data, &["user-variables", "stamp"]),
        provider_id.as_deref(),
    ) else {
        return Ok(None);
    };
    Ok(Some(FeedbackEvent {
        target,
        kind,
        bounce,
        recipient: text(data, &["recipient"]).map(str::to_owned),
        at,
        reason: reason(data),
        event_id: text(data, &["id"]).map(str::to_owned),
    }))
}

#[async_trait]
impl FeedbackSource for MailgunEvents {
    fn scheme(&self) -> &'static str {
        "mailgun"
    }

    async fn accept(&self, request: Inbound<'_>) -> Result<Accepted, Refusal> {
        // The signature travels inside the body, so the body is read as
        // JSON first; what it says is read only once it verifies.
        let body: Value = serde_json::from_slice(request.body)
            .map_err(|_| Refusal::Unauthorized("the body is not JSON with a signature".into()))?;
        let token = self.verify(&request, &body)?;
        let event = parse(&body)?;
        let ignored = usize::from(event.is_none());
        Ok(Accepted {
            events: event.into_iter().collect(),
            nonce: Some(token),
            ignored,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{accept, inbound, is_unauthorized};
    use super::*;

    const KEY: &str = "key-6b5a2b0f3b7e4c1d9a8f7e6d5c4b3a21";
    const NOW: i64 = 1_529_006_854;
    const TOKEN: &str = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0";

    /// Mailgun's published `delivered` example, with a stamp added to
    /// its user variables.
    const DELIVERED: &str = r#"{
      "tags": ["my_tag_1", "my_tag_2"],
      "timestamp": 1521472262.908181,
      "storage": {"url": "https://se.api.mailgun.net/v3/domains/sandbox.mailgun.org/messages/message_key", "key": "message_key"},
      "envelope": {"transport": "smtp", "sender": "bob@sandbox.mailgun.org", "sending-ip": "209.61.154.250", "targets": "alice@example.com"},
      "recipient-domain": "example.com",
      "id": "CPgfbmQMTCKtHW6uIWtuVe",
      "campaigns": [],
      "user-variables": {"my_var_1": "Mailgun Variable #1", "my-var-2": "awesome", "stamp": "STAMP"},
      "flags": {"is-routed": false, "is-authenticated": true, "is-system-test": false, "is-test-mode": false},
      "log-level": "info",
      "message": {
        "headers": {"to": "Alice <alice@example.com>", "message-id": "20130503182626.18666.16540@sandbox.mailgun.org",
                    "from": "Bob <bob@sandbox.mailgun.org>", "subject": "Test delivered webhook"},
        "attachments": [], "size": 111
      },
      "recipient": "alice@example.com",
      "event": "delivered",
      "delivery-status": {"tls": true, "mx-host": "smtp-in.example.com", "attempt-no": 1, "description": "",
                          "session-seconds": 0.4331989288330078, "utf8": true, "code": 250, "message": "OK",
                          "certificate-verified": true}
    }"#;

    /// Mailgun's published permanent `failed` example: its own
    /// suppression of a bounced address.
    const SUPPRESSED: &str = r#"{
      "severity": "permanent",
      "tags": ["my_tag_1", "my_tag_2"],
      "timestamp": 1521233195.375624,
      "storage": {"url": "https://se.api.mailgun.net/v3/domains/sandbox.mailgun.org/messages/message_key", "key": "message_key"},
      "log-level": "error",
      "id": "G9Bn5sl1TC6nu79C8C0bwg",
      "campaigns": [],
      "reason": "suppress-bounce",
      "user-variables": {"my_var_1": "Mailgun Variable #1", "my-var-2": "awesome"},
      "flags": {"is-routed": false, "is-authenticated": true, "is-system-test": false, "is-test-mode": false},
      "recipient-domain": "example.com",
      "envelope": {"sender": "bob@sandbox.mailgun.org", "transport": "smtp", "targets": "alice@example.com"},
      "message": {
        "headers": {"to": "Alice <alice@example.com>", "message-id": "20130503192659.13651.20287@sandbox.mailgun.org",
                    "from": "Bob <bob@sandbox.mailgun.org>", "subject": "Test permanent_fail webhook"},
        "attachments": [], "size": 111
      },
      "recipient": "alice@example.com",
      "event": "failed",
      "delivery-status": {"attempt-no": 1, "message": "", "code": 605,
                          "description": "Not delivering to previously bounced address", "session-seconds": 0.0}
    }"#;

    fn signed(event_data: &str, timestamp: i64) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, KEY.as_bytes());
        let sig = hex::encode(hmac::sign(&key, format!("{timestamp}{TOKEN}").as_bytes()));
        format!(
            r#"{{"signature": {{"timestamp": "{timestamp}", "token": "{TOKEN}", "signature": "{sig}"}},
                "event-data": {event_data}}}"#
        )
    }

    fn run(body: &str) -> Result<Accepted, Refusal> {
        accept(
            &MailgunEvents::new(KEY),
            inbound(&[], body.as_bytes(), "", NOW),
        )
    }

    #[test]
    fn the_published_delivered_example_reads_with_the_id_as_recorded() {
        let stamp = crate::domain::Stamp::generate();
        let body = signed(&DELIVERED.replace("STAMP", &stamp.to_string()), NOW);
        let accepted = run(&body).unwrap();
        assert_eq!(accepted.nonce.as_deref(), Some(TOKEN));
        let [event] = &accepted.events[..] else {
            panic!("one event: {accepted:?}")
        };
        assert_eq!(event.kind, FeedbackKind::Delivered);
        assert_eq!(
            event.target,
            Target::Both(
                stamp,
                "<20130503182626.18666.16540@sandbox.mailgun.org>".into()
            )
        );
        assert_eq!(event.recipient.as_deref(), Some("alice@example.com"));
        assert_eq!(event.at.timestamp_micros(), 1_521_472_262_908_181);
        assert_eq!(event.reason.as_deref(), Some("OK"));
        assert_eq!(event.event_id.as_deref(), Some("CPgfbmQMTCKtHW6uIWtuVe"));
    }

    #[test]
    fn failures_are_rejections_bounces_hard_or_soft() {
        let accepted = run(&signed(SUPPRESSED, NOW)).unwrap();
        let event = &accepted.events[0];
        assert_eq!((event.kind, event.bounce), (FeedbackKind::Rejected, None));
        assert_eq!(
            event.reason.as_deref(),
            Some("Not delivering to previously bounced address")
        );
        let bounced = SUPPRESSED.replace("suppress-bounce", "bounce");
        let event = &run(&signed(&bounced, NOW)).unwrap().events[0];
        assert_eq!(
            (event.kind, event.bounce),
            (FeedbackKind::Bounced, Some(BounceType::Hard))
        );
        let temporary = bounced.replace("permanent", "temporary");
        let event = &run(&signed(&temporary, NOW)).unwrap().events[0];
        assert_eq!(event.bounce, Some(BounceType::Soft));
    }

    #[test]
    fn an_accepted_event_is_ignored() {
        let accepted_event = DELIVERED.replace(r#""event": "delivered""#, r#""event": "accepted""#);
        let accepted = run(&signed(&accepted_event, NOW)).unwrap();
        assert!(accepted.events.is_empty());
        assert_eq!(accepted.ignored, 1);
    }

    #[test]
    fn a_bad_signature_a_missing_one_or_an_old_timestamp_is_unauthorized() {
        let body = signed(SUPPRESSED, NOW);
        let other = accept(
            &MailgunEvents::new("another-key"),
            inbound(&[], body.as_bytes(), "", NOW),
        );
        assert!(is_unauthorized(&other));
        let tampered = body.replace(TOKEN, "b8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0");
        assert!(is_unauthorized(&run(&tampered)));
        let unsigned = format!(r#"{{"event-data": {SUPPRESSED}}}"#);
        assert!(is_unauthorized(&run(&unsigned)));
        assert!(is_unauthorized(&run("not json")));
        assert!(is_unauthorized(&run(&signed(SUPPRESSED, NOW - 301))));
    }

    #[test]
    fn a_malformed_event_names_its_field() {
        let no_time = SUPPRESSED.replace(r#""timestamp": 1521233195.375624,"#, "");
        for (body, expected) in [
            (signed(&no_time, NOW), "event-data.timestamp"),
            (signed(r#"{"recipient": "a@b.c"}"#, NOW), "event-data.event"),
            (signed("[]", NOW), "event-data"),
        ] {
            match run(&body) {
                Err(Refusal::Malformed { field, .. }) => assert_eq!(field, expected),
                other => panic!("{expected}: {other:?}"),
            }
        }
    }
}
