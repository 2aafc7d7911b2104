//! SendGrid's Signed Event Webhook: an ECDSA P-256 signature over the
//! timestamp header and the raw body, checked with the public key SendGrid
//! shows for the webhook, and its JSON array of events read into
//! [`FeedbackEvent`]s. It owns the key's parsing (the base64 DER
//! SubjectPublicKeyInfo SendGrid shows) as well.

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::{digest, signature};
use serde_json::{Map, Value};

use super::{
    Accepted, BounceType, FeedbackEvent, FeedbackKind, FeedbackSource, Inbound, Refusal, Target,
    check_batch, from_unix_seconds, parse_json, required_header, timely_unix_seconds,
};

const SIGNATURE_HEADER: &str = "x-twilio-email-event-webhook-signature";
const TIMESTAMP_HEADER: &str = "x-twilio-email-event-webhook-timestamp";

/// The DER of a P-256 SubjectPublicKeyInfo up to its point: the
/// `id-ecPublicKey` and `prime256v1` OIDs, then a 66-byte BIT STRING.
/// Every P-256 key SendGrid shows starts so; the uncompressed point that
/// follows is what ring verifies with.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// `04`, then X and Y of 32 bytes each.
const P256_POINT_LEN: usize = 65;

/// Verifies SendGrid's Signed Event Webhook with one public key.
#[derive(Debug)]
pub struct SendgridEvents {
    /// The uncompressed point of the webhook's public key.
    point: Vec<u8>,
}

impl SendgridEvents {
    /// The source for `key`: base64 of the DER SubjectPublicKeyInfo, as
    /// SendGrid's settings page shows it (PEM armour and line breaks are
    /// allowed). The error says what is wrong, for the config's problem.
    pub fn from_public_key(key: &str) -> Result<SendgridEvents, String> {
        let encoded: String = key
            .lines()
            .map(str::trim)
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der = STANDARD
            .decode(encoded.as_bytes())
            .map_err(|e| format!("the public key is not base64 ({e})"))?;
        let point = der
            .strip_prefix(&P256_SPKI_PREFIX[..])
            .filter(|point| point.len() == P256_POINT_LEN && point[0] == 0x04)
            .ok_or("the public key is not an uncompressed P-256 SubjectPublicKeyInfo")?;
        Ok(SendgridEvents {
            point: point.to_vec(),
        })
    }

    fn verify(&self, request: &Inbound<'_>) -> Result<String, Refusal> {
        let signature = required_header(request, SIGNATURE_HEADER)?;
        let timestamp = required_header(request, TIMESTAMP_HEADER)?;
        timely_unix_seconds(request, timestamp, TIMESTAMP_HEADER)?;
        let signature = STANDARD
            .decode(signature.trim())
            .map_err(|_| Refusal::Unauthorized(format!("{SIGNATURE_HEADER} is not base64")))?;
        let mut signed = Vec::with_capacity(timestamp.len() + request.body.len());
        signed.extend_from_slice(timestamp.as_bytes());
        signed.extend_from_slice(request.body);
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &self.point)
            .verify(&signed, &signature)
            .map_err(|_| {
                Refusal::Unauthorized("the event webhook signature does not verify".into())
            })?;
        // An ECDSA signature can be re-encoded and still verify, so the
        // replay check keys on what was signed, not on the signature.
        let digest = digest::digest(&digest::SHA256, &signed);
        Ok(format!("{timestamp}.{}", hex::encode(digest.as_ref())))
    }
}

/// What one SendGrid event says, or `None` for an event Herald does not
/// track.
fn kind_of(event: &str, fields: &Map<String, Value>) -> Option<(FeedbackKind, Option<BounceType>)> {
    Some(match event {
        "delivered" => (FeedbackKind::Delivered, None),
        // `blocked` is the receiver refusing for now (a reputation, a
        // policy); `bounce` the address being refused for good.
        "bounce" => match fields.get("type").and_then(Value::as_str) {
            Some("blocked") => (FeedbackKind::Bounced, Some(BounceType::Soft)),
            _ => (FeedbackKind::Bounced, Some(BounceType::Hard)),
        },
        "dropped" => (FeedbackKind::Rejected, None),
        "deferred" => (FeedbackKind::DeferredDownstream, None),
        "open" => (FeedbackKind::Opened, None),
        "click" => (FeedbackKind::Clicked, None),
        "spamreport" => (FeedbackKind::Complained, None),
        "unsubscribe" | "group_unsubscribe" => (FeedbackKind::Unsubscribed, None),
        _ => return None,
    })
}

fn text<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    fields
        .get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Reads a verified body: the events Herald tracks, and how many it read
/// but does not.
fn parse(body: &[u8]) -> Result<(Vec<FeedbackEvent>, usize), Refusal> {
    let batch: Vec<Map<String, Value>> = parse_json(body)?;
    check_batch(batch.len(), "body")?;
    let mut events = Vec::with_capacity(batch.len());
    let mut ignored = 0;
    for (i, fields) in batch.iter().enumerate() {
        let field = |name: &str| format!("[{i}].{name}");
        let event = text(fields, "event")
            .ok_or_else(|| Refusal::malformed(field("event"), "an event name is required"))?;
        let Some((kind, bounce)) = kind_of(event, fields) else {
            ignored += 1;
            continue;
        };
        let at = fields
            .get("timestamp")
            .and_then(Value::as_f64)
            .and_then(from_unix_seconds)
            .ok_or_else(|| Refusal::malformed(field("timestamp"), "Unix seconds are required"))?;
        // The X-Message-Id answered at send is the part before the
        // first dot; SendGrid appends its own routing after it.
        let provider_id =
            text(fields, "sg_message_id").map(|id| id.split('.').next().unwrap_or(id));
        // Custom args come back as top-level keys.
        let Some(target) = Target::from_parts(text(fields, "stamp"), provider_id) else {
            // Not a message SendGrid can name to us: nothing to match.
            ignored += 1;
            continue;
        };
        let reason = ["reason", "response", "status"]
            .into_iter()
            .find_map(|name| text(fields, name))
            .map(str::to_owned);
        events.push(FeedbackEvent {
            target,
            kind,
            bounce,
            recipient: text(fields, "email").map(str::to_owned),
            at,
            reason,
            event_id: text(fields, "sg_event_id").map(str::to_owned),
        });
    }
    Ok((events, ignored))
}

#[async_trait]
impl FeedbackSource for SendgridEvents {
    fn scheme(&self) -> &'static str {
        "sendgrid"
    }

    async fn accept(&self, request: Inbound<'_>) -> Result<Accepted, Refusal> {
        let nonce = self.verify(&request)?;
        let (events, ignored) = parse(request.body)?;
        Ok(Accepted {
            events,
            nonce: Some(nonce),
            ignored,
        })
    }
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    use super::super::test_support::{accept, headers, inbound, is_unauthorized};
    use super::*;

    const NOW: i64 = 1_513_299_569;

    /// SendGrid's published example, one event of each kind, with a
    /// stamp added as a custom arg to the delivered one.
    const EXAMPLE: &str = r#"[
      {"email": "example@test.com", "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event": "processed", "category": "cat facts", "sg_event_id": "sg_event_id", "sg_message_id": "sg_message_id"},
      {"email": "example@test.com", "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event": "deferred", "category": "cat facts", "sg_event_id": "sg_event_id", "sg_message_id": "sg_message_id",
       "response": "400 try again later", "attempt": "5"},
      {"email": "example@test.com", "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event": "delivered", "category": "cat facts", "sg_event_id": "sg_event_id",
       "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0", "response": "250 OK",
       "stamp": "STAMP"},
      {"email": "example@test.com", "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event": "open", "category": "cat facts", "sg_event_id": "sg_event_id", "sg_message_id": "sg_message_id",
       "useragent": "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP; .NET CLR 1.1.4322; .NET CLR 2.0.50727)",
       "ip": "255.255.255.255"},
      {"email": "example@test.com", "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event": "click", "category": "cat facts", "sg_event_id": "sg_event_id", "sg_message_id": "sg_message_id",
       "useragent": "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP; .NET CLR 1.1.4322; .NET CLR 2.0.50727)",
       "ip": "255.255.255.255", "url": "http://www.sendgrid.com/"},
      {"email": "example@test.com", "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event": "bounce", "category": "cat facts", "sg_event_id": "sg_event_id", "sg_message_id": "sg_message_id",
       "reason": "500 unknown recipient", "status": "5.0.0", "type": "bounce"},
      {"email": "example@test.com", "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event": "bounce", "category": "cat facts", "sg_event_id": "sg_event_id", "sg_message_id": "sg_message_id",
       "reason": "550 blocked", "status": "5.7.1", "type": "blocked"},
      {"email": "example@test.com", "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event": "dropped", "category": "cat facts", "sg_event_id": "sg_event_id", "sg_message_id": "sg_message_id",
       "reason": "Bounced Address", "status": "5.0.0"},
      {"email": "example@test.com", "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event": "spamreport", "category": "cat facts", "sg_event_id": "sg_event_id", "sg_message_id": "sg_message_id"},
      {"email": "example@test.com", "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event": "unsubscribe", "category": "cat facts", "sg_event_id": "sg_event_id", "sg_message_id": "sg_message_id"},
      {"email": "example@test.com", "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event": "group_unsubscribe", "category": "cat facts", "sg_event_id": "sg_event_id", "sg_message_id": "sg_message_id",
       "useragent": "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP; .NET CLR 1.1.4322; .NET CLR 2.0.50727)",
       "ip": "255.255.255.255", "url": "http://www.sendgrid.com/", "asm_group_id": 10},
      {"email": "example@test.com", "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
       "event": "group_resubscribe", "category": "cat facts", "sg_event_id": "sg_event_id", "sg_message_id": "sg_message_id",
       "useragent": "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP; .NET CLR 1.1.4322; .NET CLR 2.0.50727)",
       "ip": "255.255.255.255", "url": "http://www.sendgrid.com/", "asm_group_id": 10}
    ]"#;

    struct Signer {
        pair: EcdsaKeyPair,
        rng: SystemRandom,
    }

    impl Signer {
        fn new() -> Signer {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap();
            Signer { pair, rng }
        }

        /// The key as SendGrid shows it: base64 of the SPKI DER.
        fn public_key(&self) -> String {
            let mut der = P256_SPKI_PREFIX.to_vec();
            der.extend_from_slice(self.pair.public_key().as_ref());
            STANDARD.encode(der)
        }

        fn headers(&self, timestamp: i64, body: &str) -> Vec<(String, String)> {
            let signed = format!("{timestamp}{body}");
            let sig = self.pair.sign(&self.rng, signed.as_bytes()).unwrap();
            headers(&[
                (SIGNATURE_HEADER, &STANDARD.encode(sig.as_ref())),
                (TIMESTAMP_HEADER, &timestamp.to_string()),
            ])
        }

        fn source(&self) -> SendgridEvents {
            SendgridEvents::from_public_key(&self.public_key()).unwrap()
        }
    }

    #[test]
    fn a_key_made_by_rcgen_parses_as_sendgrid_shows_it() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let shown = STANDARD.encode(rcgen::PublicKeyData::subject_public_key_info(&pair));
        assert!(SendgridEvents::from_public_key(&shown).is_ok());
        assert!(SendgridEvents::from_public_key(&pair.public_key_pem()).is_ok());
        let rsa_like = STANDARD.encode([0x30, 0x82, 0x01, 0x22]);
        assert!(SendgridEvents::from_public_key(&rsa_like).is_err());
        assert!(SendgridEvents::from_public_key("not base64!").is_err());
    }

    #[test]
    fn the_published_example_reads_into_herald_s_kinds() {
        let signer = Signer::new();
        let stamp = crate::domain::Stamp::generate();
        let body = EXAMPLE.replace("STAMP", &stamp.to_string());
        let hdrs = signer.headers(NOW, &body);
        let accepted = accept(&signer.source(), inbound(&hdrs, body.as_bytes(), "", NOW)).unwrap();
        // `processed` and `group_resubscribe` say nothing Herald tracks.
        assert_eq!(accepted.ignored, 2);
        let kinds: Vec<_> = accepted.events.iter().map(|e| (e.kind, e.bounce)).collect();
        use FeedbackKind::*;
        assert_eq!(
            kinds,
            vec![
                (DeferredDownstream, None),
                (Delivered, None),
                (Opened, None),
                (Clicked, None),
                (Bounced, Some(BounceType::Hard)),
                (Bounced, Some(BounceType::Soft)),
                (Rejected, None),
                (Complained, None),
                (Unsubscribed, None),
                (Unsubscribed, None),
            ]
        );
        let delivered = &accepted.events[1];
        assert_eq!(
            delivered.target,
            Target::Both(stamp, "14c5d75ce93".into()),
            "the id is what X-Message-Id said at send"
        );
        assert_eq!(delivered.recipient.as_deref(), Some("example@test.com"));
        assert_eq!(delivered.at.timestamp(), NOW);
        assert_eq!(delivered.reason.as_deref(), Some("250 OK"));
        assert_eq!(delivered.event_id.as_deref(), Some("sg_event_id"));
        assert_eq!(
            accepted.events[4].reason.as_deref(),
            Some("500 unknown recipient")
        );
        assert!(
            accepted
                .nonce
                .as_deref()
                .unwrap()
                .starts_with("1513299569.")
        );
    }

    #[test]
    fn another_key_a_tampered_body_or_a_missing_header_is_unauthorized() {
        let signer = Signer::new();
        let body = EXAMPLE.replace("STAMP", "");
        let hdrs = signer.headers(NOW, &body);
        let other = Signer::new().source();
        assert!(is_unauthorized(&accept(
            &other,
            inbound(&hdrs, body.as_bytes(), "", NOW)
        )));
        let tampered = body.replace("250 OK", "251 OK");
        assert!(is_unauthorized(&accept(
            &signer.source(),
            inbound(&hdrs, tampered.as_bytes(), "", NOW)
        )));
        for missing in [SIGNATURE_HEADER, TIMESTAMP_HEADER] {
            let partial: Vec<_> = hdrs.iter().filter(|(n, _)| n != missing).cloned().collect();
            let result = accept(
                &signer.source(),
                inbound(&partial, body.as_bytes(), "", NOW),
            );
            assert!(is_unauthorized(&result), "{missing}: {result:?}");
        }
    }

    #[test]
    fn an_old_timestamp_is_unauthorized_even_when_signed() {
        let signer = Signer::new();
        let body = EXAMPLE.replace("STAMP", "");
        let hdrs = signer.headers(NOW - 301, &body);
        let result = accept(&signer.source(), inbound(&hdrs, body.as_bytes(), "", NOW));
        assert!(is_unauthorized(&result), "{result:?}");
    }

    #[test]
    fn a_malformed_event_names_its_field() {
        let signer = Signer::new();
        for (body, expected) in [
            (
                r#"[{"event":"delivered","sg_message_id":"x"}]"#,
                "[0].timestamp",
            ),
            (r#"[{"event":"processed"},{"timestamp":1}]"#, "[1].event"),
            (r#"{"event":"delivered"}"#, "body"),
        ] {
            let hdrs = signer.headers(NOW, body);
            match accept(&signer.source(), inbound(&hdrs, body.as_bytes(), "", NOW)) {
                Err(Refusal::Malformed { field, .. }) => assert_eq!(field, expected, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
