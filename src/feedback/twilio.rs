//! Twilio's message status callbacks: form-encoded posts signed in
//! `X-Twilio-Signature` as base64 HMAC-SHA1, keyed by the account's auth
//! token, of the URL Twilio posted to followed by every form parameter,
//! sorted by name, as name and value. It owns that check and the reading
//! of `MessageStatus` and `ErrorCode` into a [`FeedbackEvent`].

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

use super::{
    Accepted, BounceType, FeedbackEvent, FeedbackKind, FeedbackSource, Inbound, Refusal, Target,
    required_header,
};

const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// Verifies Twilio's status callbacks with one auth token.
pub struct TwilioEvents {
    key: hmac::Key,
    /// The `status_callback` Twilio was given, which it signs; `None`
    /// trusts the URL the request came to.
    url: Option<String>,
}

impl std::fmt::Debug for TwilioEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioEvents")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl TwilioEvents {
    pub fn new(auth_token: &str, status_callback: Option<String>) -> TwilioEvents {
        TwilioEvents {
            key: hmac::Key::new(
                hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
                auth_token.trim().as_bytes(),
            ),
            url: status_callback,
        }
    }

    fn verify(&self, request: &Inbound<'_>, params: &[(String, String)]) -> Result<(), Refusal> {
        let signature = required_header(request, SIGNATURE_HEADER)?;
        let signature = STANDARD
            .decode(signature.trim())
            .map_err(|_| Refusal::Unauthorized(format!("{SIGNATURE_HEADER} is not base64")))?;
        let url = self.url.as_deref().unwrap_or(request.url);
        let mut sorted: Vec<&(String, String)> = params.iter().collect();
        sorted.sort();
        let params: String = sorted
            .iter()
            .flat_map(|(name, value)| [name.as_str(), value.as_str()])
            .collect();
        // Twilio signs the URL as it wrote it, which may or may not name
        // the scheme's default port; either spelling is the same URL.
        let matched = url_spellings(url).iter().any(|url| {
            hmac::verify(&self.key, format!("{url}{params}").as_bytes(), &signature).is_ok()
        });
        if matched {
            Ok(())
        } else {
            Err(Refusal::Unauthorized(
                "the X-Twilio-Signature does not verify".into(),
            ))
        }
    }
}

/// `url`, and `url` with its default port named or left out.
fn url_spellings(url: &str) -> Vec<String> {
    let mut spellings = vec![url.to_owned()];
    let Ok(parsed) = url::Url::parse(url) else {
        return spellings;
    };
    let default = match parsed.scheme() {
        "https" => 443,
        "http" => 80,
        _ => return spellings,
    };
    let Some(host) = parsed.host_str() else {
        return spellings;
    };
    // `Url` drops a default port when it parses, so the text decides.
    let with_port = format!("{}://{host}:{default}", parsed.scheme());
    let without_port = format!("{}://{host}", parsed.scheme());
    if let Some(rest) = url.strip_prefix(&with_port) {
        spellings.push(format!("{without_port}{rest}"));
    } else if let Some(rest) = url.strip_prefix(&without_port) {
        spellings.push(format!("{with_port}{rest}"));
    }
    spellings
}

/// An `undelivered` message's error code, per Twilio's error dictionary.
fn undelivered(error_code: Option<&str>) -> (FeedbackKind, Option<BounceType>) {
    match error_code {
        // Unknown destination handset; landline or unreachable carrier:
        // the number will not take SMS.
        Some("30005" | "30006") => (FeedbackKind::Bounced, Some(BounceType::Hard)),
        // Blocked, or filtered by the carrier: refused before a handset.
        Some("30004" | "30007") => (FeedbackKind::Rejected, None),
        // Queue overflow, account suspended, unreachable handset,
        // unknown error, and the rest: worth another try.
        _ => (FeedbackKind::Bounced, Some(BounceType::Soft)),
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Reads verified callback parameters; `None` for a status Herald does
/// not track (queued, sent, ...).
fn parse(
    params: &[(String, String)],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<FeedbackEvent>, Refusal> {
    let sid = param(params, "MessageSid")
        .ok_or_else(|| Refusal::malformed("MessageSid", "a message SID is required"))?;
    // `SmsStatus` is the older name Twilio still sends beside it.
    let status = param(params, "MessageStatus")
        .or_else(|| param(params, "SmsStatus"))
        .ok_or_else(|| Refusal::malformed("MessageStatus", "a status is required"))?;
    let error_code = param(params, "ErrorCode");
    let (kind, bounce) = match status {
        "delivered" => (FeedbackKind::Delivered, None),
        "undelivered" => undelivered(error_code),
        "failed" => (FeedbackKind::Rejected, None),
        "read" => (FeedbackKind::Opened, None),
        _ => return Ok(None),
    };
    Ok(Some(FeedbackEvent {
        target: Target::ProviderId(sid.to_owned()),
        kind,
        bounce,
        recipient: param(params, "To").map(str::to_owned),
        // Twilio dates nothing in a callback: it is sent as it happens.
        at: now,
        reason: error_code.map(str::to_owned),
        event_id: Some(format!("{sid}:{status}")),
    }))
}

#[async_trait]
impl FeedbackSource for TwilioEvents {
    fn scheme(&self) -> &'static str {
        "twilio"
    }

    async fn accept(&self, request: Inbound<'_>) -> Result<Accepted, Refusal> {
        let params: Vec<(String, String)> = url::form_urlencoded::parse(request.body)
            .into_owned()
            .collect();
        self.verify(&request, &params)?;
        let event = parse(&params, request.now)?;
        let ignored = usize::from(event.is_none());
        Ok(Accepted {
            events: event.into_iter().collect(),
            // Twilio signs no nonce or time; a repeated status is the
            // same event id, applied once.
            nonce: None,
            ignored,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{accept, headers, inbound, is_unauthorized};
    use super::*;

    const TOKEN: &str = "12345";
    const CALLBACK: &str = "https://hooks.example.com/api/feedback/sms";
    const NOW: i64 = 1_700_000_000;

    fn sign(url: &str, params: &[(&str, &str)]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, TOKEN.as_bytes());
        let mut sorted = params.to_vec();
        sorted.sort();
        let signed: String = sorted.iter().map(|(n, v)| format!("{n}{v}")).collect();
        STANDARD.encode(hmac::sign(&key, format!("{url}{signed}").as_bytes()))
    }

    fn form(params: &[(&str, &str)]) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish()
    }

    fn status(status: &str, error_code: Option<&str>) -> Vec<(&'static str, String)> {
        let mut params = vec![
            (
                "AccountSid",
                "AC00000000000000000000000000000000".to_owned(),
            ),
            ("ApiVersion", "2010-04-01".to_owned()),
            ("From", "+15017250604".to_owned()),
            (
                "MessageSid",
                "SM1342fe1b2c904d1ab04f0fc7a58abca9".to_owned(),
            ),
            ("MessageStatus", status.to_owned()),
            ("SmsSid", "SM1342fe1b2c904d1ab04f0fc7a58abca9".to_owned()),
            ("SmsStatus", status.to_owned()),
            ("To", "+15558675310".to_owned()),
        ];
        if let Some(code) = error_code {
            params.push(("ErrorCode", code.to_owned()));
        }
        params
    }

    fn run(params: &[(&str, String)]) -> Result<Accepted, Refusal> {
        let pairs: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let hdrs = headers(&[("X-Twilio-Signature", &sign(CALLBACK, &pairs))]);
        let body = form(&pairs);
        let source = TwilioEvents::new(TOKEN, Some(CALLBACK.to_owned()));
        accept(
            &source,
            inbound(&hdrs, body.as_bytes(), "http://internal:8080/x", NOW),
        )
    }

    #[test]
    fn the_documented_example_signature_verifies() {
        // Twilio's documented example: auth token 12345, this URL and
        // these parameters sign to RSOYDt4T1cUTdK1PDd93/VVr8B8=.
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ];
        let hdrs = headers(&[("X-Twilio-Signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8=")]);
        let body = form(&params);
        let result = accept(
            &TwilioEvents::new(TOKEN, None),
            inbound(&hdrs, body.as_bytes(), url, NOW),
        );
        // Signed, so it reaches parsing, which wants a message's status.
        match result {
            Err(Refusal::Malformed { field, .. }) => assert_eq!(field, "MessageSid"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn statuses_read_into_herald_s_kinds() {
        use FeedbackKind::*;
        for (state, code, expected) in [
            ("delivered", None, Some((Delivered, None))),
            (
                "undelivered",
                Some("30003"),
                Some((Bounced, Some(BounceType::Soft))),
            ),
            (
                "undelivered",
                Some("30005"),
                Some((Bounced, Some(BounceType::Hard))),
            ),
            (
                "undelivered",
                Some("30006"),
                Some((Bounced, Some(BounceType::Hard))),
            ),
            ("undelivered", Some("30007"), Some((Rejected, None))),
            ("undelivered", Some("30004"), Some((Rejected, None))),
            ("failed", Some("30008"), Some((Rejected, None))),
            ("read", None, Some((Opened, None))),
            ("sent", None, None),
            ("queued", None, None),
        ] {
            let accepted = run(&status(state, code)).unwrap();
            let got = accepted.events.first().map(|e| (e.kind, e.bounce));
            assert_eq!(got, expected, "{state} {code:?}");
            assert_eq!(accepted.ignored, usize::from(expected.is_none()));
        }
        let event = run(&status("undelivered", Some("30003"))).unwrap().events[0].clone();
        assert_eq!(
            event.target,
            Target::ProviderId("SM1342fe1b2c904d1ab04f0fc7a58abca9".into())
        );
        assert_eq!(event.recipient.as_deref(), Some("+15558675310"));
        assert_eq!(event.reason.as_deref(), Some("30003"));
        assert_eq!(event.at.timestamp(), NOW);
        assert_eq!(
            event.event_id.as_deref(),
            Some("SM1342fe1b2c904d1ab04f0fc7a58abca9:undelivered")
        );
    }

    #[test]
    fn a_bad_signature_another_url_or_a_missing_header_is_unauthorized() {
        let params = status("delivered", None);
        let pairs: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let body = form(&pairs);
        let source = TwilioEvents::new(TOKEN, Some(CALLBACK.to_owned()));
        let elsewhere = headers(&[(
            "X-Twilio-Signature",
            &sign("https://attacker.example/", &pairs),
        )]);
        assert!(is_unauthorized(&accept(
            &source,
            inbound(&elsewhere, body.as_bytes(), CALLBACK, NOW)
        )));
        let right = headers(&[("X-Twilio-Signature", &sign(CALLBACK, &pairs))]);
        let tampered = body.replace("delivered", "undelivered");
        assert!(is_unauthorized(&accept(
            &source,
            inbound(&right, tampered.as_bytes(), CALLBACK, NOW)
        )));
        let other_token = TwilioEvents::new("54321", Some(CALLBACK.to_owned()));
        assert!(is_unauthorized(&accept(
            &other_token,
            inbound(&right, body.as_bytes(), CALLBACK, NOW)
        )));
        assert!(is_unauthorized(&accept(
            &source,
            inbound(&[], body.as_bytes(), CALLBACK, NOW)
        )));
    }

    #[test]
    fn the_default_port_may_be_named_or_not() {
        let params = status("delivered", None);
        let pairs: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let body = form(&pairs);
        let with_port = "https://hooks.example.com:443/api/feedback/sms";
        let hdrs = headers(&[("X-Twilio-Signature", &sign(with_port, &pairs))]);
        let source = TwilioEvents::new(TOKEN, Some(CALLBACK.to_owned()));
        assert!(accept(&source, inbound(&hdrs, body.as_bytes(), "", NOW)).is_ok());
    }

    #[test]
    fn a_signed_callback_without_a_status_names_the_field() {
        let params: Vec<_> = status("delivered", None)
            .into_iter()
            .filter(|(n, _)| !n.ends_with("Status"))
            .collect();
        match run(&params) {
            Err(Refusal::Malformed { field, .. }) => assert_eq!(field, "MessageStatus"),
            other => panic!("{other:?}"),
        }
    }
}
