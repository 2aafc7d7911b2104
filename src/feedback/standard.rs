//! Standard Webhooks (<https://www.standardwebhooks.com>) over Herald's
//! own event JSON: the scheme any transport takes with
//! `feedback_secret_env`, and the `webhook` kind's only one. It owns the
//! signature check (`webhook-id`, `webhook-timestamp`, `webhook-signature`,
//! HMAC-SHA256 of `{id}.{timestamp}.{body}`) and the reading of
//! `{"events": [...]}` into [`FeedbackEvent`]s.

use crate::transports::webhook::SigningKey;
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{
    Accepted, BounceType, FeedbackEvent, FeedbackKind, FeedbackSource, Inbound, Refusal, Target,
    check_batch, parse_json, required_header, timely_unix_seconds,
};

/// The prefix a Standard Webhooks secret carries before its base64 key.
pub const SECRET_PREFIX: &str = "whsec_";

const ID_HEADER: &str = "webhook-id";
const TIMESTAMP_HEADER: &str = "webhook-timestamp";
const SIGNATURE_HEADER: &str = "webhook-signature";
/// The only signature version the spec defines for a symmetric key.
const SIGNATURE_VERSION: &str = "v1";

/// Verifies Standard Webhooks signatures made with one secret.
pub struct StandardWebhooks {
    key: SigningKey,
}

impl std::fmt::Debug for StandardWebhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StandardWebhooks(***)")
    }
}

impl StandardWebhooks {
    /// The source for `secret` (`whsec_` and base64); the error says what
    /// is wrong with it, for the config's problem.
    pub fn from_secret(secret: &str) -> Result<StandardWebhooks, String> {
        let encoded = secret
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| format!("the secret does not start with `{SECRET_PREFIX}`"))?;
        if encoded.is_empty() {
            return Err(format!("the secret after `{SECRET_PREFIX}` is empty"));
        }
        // The webhook transport's key, which signs what this verifies.
        let key = SigningKey::parse(encoded)?;
        Ok(StandardWebhooks { key })
    }

    fn verify(&self, request: &Inbound<'_>) -> Result<(String, String), Refusal> {
        let id = required_header(request, ID_HEADER)?;
        let timestamp = required_header(request, TIMESTAMP_HEADER)?;
        let signatures = required_header(request, SIGNATURE_HEADER)?;
        timely_unix_seconds(request, timestamp, TIMESTAMP_HEADER)?;
        // Several entries let a sender rotate its secret: any one that
        // matches will do, and entries of other versions are skipped.
        let matched = signatures
            .split_whitespace()
            .filter_map(|entry| entry.split_once(','))
            .filter(|(version, _)| *version == SIGNATURE_VERSION)
            .filter_map(|(_, sig)| STANDARD.decode(sig).ok())
            .any(|sig| self.key.verifies(id, timestamp, request.body, &sig));
        if !matched {
            return Err(Refusal::Unauthorized(
                "no webhook-signature entry matches".into(),
            ));
        }
        Ok((id.to_owned(), timestamp.to_owned()))
    }
}

/// Herald's event JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    events: Vec<RawEvent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    stamp: Option<String>,
    provider_message_id: Option<String>,
    kind: FeedbackKind,
    recipient: Option<String>,
    at: DateTime<Utc>,
    reason: Option<String>,
    id: Option<String>,
    #[serde(rename = "type")]
    bounce: Option<BounceType>,
}

/// Reads a verified body into events, naming the first field that is wrong.
fn parse(body: &[u8]) -> Result<Vec<FeedbackEvent>, Refusal> {
    let body: Body = parse_json(body)?;
    check_batch(body.events.len(), "events")?;
    body.events
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let field = |name: &str| format!("events[{i}].{name}");
            if let Some(stamp) = &raw.stamp
                && stamp.trim().parse::<crate::domain::Stamp>().is_err()
            {
                return Err(Refusal::malformed(field("stamp"), "not a stamp (a ULID)"));
            }
            let target =
                Target::from_parts(raw.stamp.as_deref(), raw.provider_message_id.as_deref())
                    .ok_or_else(|| {
                        Refusal::malformed(
                            format!("events[{i}]"),
                            "needs `stamp` or `provider_message_id`",
                        )
                    })?;
            let bounce = match (raw.kind, raw.bounce) {
                (FeedbackKind::Bounced, bounce) => Some(bounce.unwrap_or(BounceType::Hard)),
                (_, None) => None,
                (kind, Some(_)) => {
                    return Err(Refusal::malformed(
                        field("type"),
                        format!("only a bounced event has a type, not {kind}"),
                    ));
                }
            };
            Ok(FeedbackEvent {
                target,
                kind: raw.kind,
                bounce,
                recipient: raw.recipient.filter(|r| !r.trim().is_empty()),
                at: raw.at,
                reason: raw.reason.filter(|r| !r.trim().is_empty()),
                event_id: raw.id.filter(|id| !id.trim().is_empty()),
            })
        })
        .collect()
}

#[async_trait]
impl FeedbackSource for StandardWebhooks {
    fn scheme(&self) -> &'static str {
        "standard_webhooks"
    }

    async fn accept(&self, request: Inbound<'_>) -> Result<Accepted, Refusal> {
        let (id, timestamp) = self.verify(&request)?;
        Ok(Accepted {
            events: parse(request.body)?,
            // A sender's retry is signed anew with a later timestamp; only
            // a byte-for-byte replay repeats both.
            nonce: Some(format!("{id}.{timestamp}")),
            ignored: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{accept, headers, inbound, is_unauthorized};
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const NOW: i64 = 1_614_265_330;

    fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
        let key = STANDARD.decode(&secret[SECRET_PREFIX.len()..]).unwrap();
        // Signed apart from the transport's SigningKey, with ring.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
        let tag = ring::hmac::sign(&key, format!("{id}.{timestamp}.{body}").as_bytes());
        format!("v1,{}", STANDARD.encode(tag.as_ref()))
    }

    fn request_headers(id: &str, timestamp: i64, signature: &str) -> Vec<(String, String)> {
        headers(&[
            ("webhook-id", id),
            ("webhook-timestamp", &timestamp.to_string()),
            ("webhook-signature", signature),
        ])
    }

    fn source() -> StandardWebhooks {
        StandardWebhooks::from_secret(SECRET).unwrap()
    }

    fn body(stamp: &str) -> String {
        format!(
            r#"{{"events": [
                {{"stamp": "{stamp}", "kind": "delivered", "at": "2021-02-25T15:02:10Z", "id": "e1"}},
                {{"provider_message_id": "pm-1", "kind": "bounced", "recipient": "a@example.com",
                  "at": "2021-02-25T15:02:11+01:00", "reason": "550 no such user", "type": "soft"}}
            ]}}"#
        )
    }

    #[test]
    fn the_spec_s_example_signature_verifies() {
        let payload = r#"{"test": 2432232314}"#;
        let hdrs = request_headers(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            NOW,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        );
        let result = accept(&source(), inbound(&hdrs, payload.as_bytes(), "", NOW));
        // Signed, so it reaches parsing, which refuses it as not ours.
        assert!(
            matches!(result, Err(Refusal::Malformed { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn a_signed_batch_reads_into_events_with_a_nonce() {
        let stamp = crate::domain::Stamp::generate();
        let body = body(&stamp.to_string());
        let signature = format!("v1,bm90IGl0 {}", sign(SECRET, "msg_1", NOW, &body));
        let hdrs = request_headers("msg_1", NOW, &signature);
        let accepted = accept(&source(), inbound(&hdrs, body.as_bytes(), "", NOW + 10)).unwrap();
        assert_eq!(accepted.nonce.as_deref(), Some("msg_1.1614265330"));
        assert_eq!(accepted.events.len(), 2);
        let [delivered, bounced] = &accepted.events[..] else {
            panic!("two events")
        };
        assert_eq!(delivered.target, Target::Stamp(stamp));
        assert_eq!(delivered.kind, FeedbackKind::Delivered);
        assert_eq!(delivered.bounce, None);
        assert_eq!(delivered.event_id.as_deref(), Some("e1"));
        assert_eq!(bounced.target, Target::ProviderId("pm-1".into()));
        assert_eq!(bounced.bounce, Some(BounceType::Soft));
        assert_eq!(bounced.recipient.as_deref(), Some("a@example.com"));
        assert_eq!(bounced.at.timestamp(), NOW - 3600 + 1);
        assert_eq!(bounced.reason.as_deref(), Some("550 no such user"));
    }

    #[test]
    fn a_bounce_without_a_type_is_hard() {
        let body = r#"{"events":[{"provider_message_id":"x","kind":"bounced","at":"2021-02-25T15:02:10Z"}]}"#;
        let hdrs = request_headers("msg_2", NOW, &sign(SECRET, "msg_2", NOW, body));
        let accepted = accept(&source(), inbound(&hdrs, body.as_bytes(), "", NOW)).unwrap();
        assert_eq!(accepted.events[0].bounce, Some(BounceType::Hard));
    }

    #[test]
    fn a_wrong_secret_a_tampered_body_or_a_missing_header_is_unauthorized() {
        let body = body(&crate::domain::Stamp::generate().to_string());
        let other = "whsec_c2VjcmV0LXRoYXQtaXMtbm90LXRoZS1zYW1l";
        let wrong = request_headers("msg_1", NOW, &sign(other, "msg_1", NOW, &body));
        assert!(is_unauthorized(&accept(
            &source(),
            inbound(&wrong, body.as_bytes(), "", NOW)
        )));
        let right = request_headers("msg_1", NOW, &sign(SECRET, "msg_1", NOW, &body));
        let tampered = body.replace("delivered", "opened");
        assert!(is_unauthorized(&accept(
            &source(),
            inbound(&right, tampered.as_bytes(), "", NOW)
        )));
        for missing in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            let partial: Vec<_> = right
                .iter()
                .filter(|(n, _)| n != missing)
                .cloned()
                .collect();
            let result = accept(&source(), inbound(&partial, body.as_bytes(), "", NOW));
            assert!(is_unauthorized(&result), "{missing}: {result:?}");
        }
    }

    #[test]
    fn an_old_or_future_timestamp_is_unauthorized_even_when_signed() {
        let body = body(&crate::domain::Stamp::generate().to_string());
        for at in [NOW - 301, NOW + 301] {
            let hdrs = request_headers("msg_1", at, &sign(SECRET, "msg_1", at, &body));
            let result = accept(&source(), inbound(&hdrs, body.as_bytes(), "", NOW));
            assert!(is_unauthorized(&result), "{at}: {result:?}");
        }
    }

    #[test]
    fn a_malformed_event_names_its_field() {
        let cases = [
            (
                r#"{"events":[{"provider_message_id":"x","kind":"delivered","at":"2021-02-25T15:02:10Z"},{"provider_message_id":"x","kind":"lost","at":"2021-02-25T15:02:10Z"}]}"#,
                "events[1].kind",
            ),
            (
                r#"{"events":[{"kind":"delivered","at":"2021-02-25T15:02:10Z"}]}"#,
                "events[0]",
            ),
            (
                r#"{"events":[{"stamp":"nope","kind":"delivered","at":"2021-02-25T15:02:10Z"}]}"#,
                "events[0].stamp",
            ),
            (
                r#"{"events":[{"provider_message_id":"x","kind":"delivered","at":"yesterday"}]}"#,
                "events[0].at",
            ),
            (
                r#"{"events":[{"provider_message_id":"x","kind":"opened","type":"hard","at":"2021-02-25T15:02:10Z"}]}"#,
                "events[0].type",
            ),
        ];
        for (body, expected) in cases {
            let hdrs = request_headers("msg_3", NOW, &sign(SECRET, "msg_3", NOW, body));
            match accept(&source(), inbound(&hdrs, body.as_bytes(), "", NOW)) {
                Err(Refusal::Malformed { field, .. }) => assert_eq!(field, expected, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_unknown_field_is_refused() {
        let body = r#"{"events":[{"provider_message_id":"x","kind":"delivered","at":"2021-02-25T15:02:10Z","colour":"red"}]}"#;
        let hdrs = request_headers("msg_4", NOW, &sign(SECRET, "msg_4", NOW, body));
        let result = accept(&source(), inbound(&hdrs, body.as_bytes(), "", NOW));
        match result {
            Err(Refusal::Malformed { field, message }) => {
                assert!(field.starts_with("events[0]"), "{field}");
                assert!(message.contains("colour"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_secret_must_be_whsec_and_base64() {
        assert!(StandardWebhooks::from_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(StandardWebhooks::from_secret("whsec_not base64!").is_err());
        assert!(StandardWebhooks::from_secret("whsec_").is_err());
    }
}
