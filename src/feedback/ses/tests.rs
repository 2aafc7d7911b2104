use chrono::TimeZone;

use super::*;

fn envelope(json: &str) -> Envelope {
    serde_json::from_str(json).expect("an SNS envelope")
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("a timestamp")
        .with_timezone(&Utc)
}

// AWS's example of an HTTP notification ("HTTP/HTTPS notification JSON
// format"); its signature is elided there, so only the string is checked.
const AWS_NOTIFICATION: &str = r#"{
  "Type" : "Notification",
  "MessageId" : "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
  "TopicArn" : "arn:aws:sns:us-west-2:123456789012:MyTopic",
  "Subject" : "My First Message",
  "Message" : "Hello world!",
  "Timestamp" : "2012-05-02T00:54:06.655Z",
  "SignatureVersion" : "1",
  "Signature" : "EXAMPLEw6JRN=",
  "SigningCertURL" : "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
  "UnsubscribeURL" : "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-west-2:123456789012:MyTopic:c9135db0-26c4-47ec-8998-413945fb5a96"
}"#;

#[test]
fn a_notification_signs_its_fields_in_name_order_with_the_subject() {
    assert_eq!(
        envelope(AWS_NOTIFICATION)
            .string_to_sign()
            .expect("signable"),
        "Message\nHello world!\n\
         MessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\n\
         Subject\nMy First Message\n\
         Timestamp\n2012-05-02T00:54:06.655Z\n\
         TopicArn\narn:aws:sns:us-west-2:123456789012:MyTopic\n\
         Type\nNotification\n"
    );
}

#[test]
fn a_notification_without_a_subject_leaves_the_subject_out() {
    let mut value: serde_json::Value = serde_json::from_str(AWS_NOTIFICATION).expect("json");
    value.as_object_mut().expect("an object").remove("Subject");
    let text = envelope(&value.to_string())
        .string_to_sign()
        .expect("signable");
    assert!(!text.contains("Subject"), "{text}");
    assert!(text.starts_with("Message\nHello world!\nMessageId\n"));
}

#[test]
fn a_subscription_confirmation_signs_its_url_and_token() {
    let confirmation = envelope(
        r#"{
  "Type" : "SubscriptionConfirmation",
  "MessageId" : "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
  "Token" : "2336412f37",
  "TopicArn" : "arn:aws:sns:us-west-2:123456789012:MyTopic",
  "Message" : "You have chosen to subscribe to the topic arn:aws:sns:us-west-2:123456789012:MyTopic.\nTo confirm the subscription, visit the SubscribeURL included in this message.",
  "SubscribeURL" : "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-west-2:123456789012:MyTopic&Token=2336412f37",
  "Timestamp" : "2012-04-26T20:45:04.751Z",
  "SignatureVersion" : "1",
  "Signature" : "EXAMPLEpH+=",
  "SigningCertURL" : "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem"
}"#,
    );
    assert_eq!(
        confirmation.string_to_sign().expect("signable"),
        "Message\nYou have chosen to subscribe to the topic arn:aws:sns:us-west-2:123456789012:MyTopic.\n\
         To confirm the subscription, visit the SubscribeURL included in this message.\n\
         MessageId\n165545c9-2a5c-472c-8df2-7ff2be2b3b1b\n\
         SubscribeURL\nhttps://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-west-2:123456789012:MyTopic&Token=2336412f37\n\
         Timestamp\n2012-04-26T20:45:04.751Z\n\
         Token\n2336412f37\n\
         TopicArn\narn:aws:sns:us-west-2:123456789012:MyTopic\n\
         Type\nSubscriptionConfirmation\n"
    );
}

#[test]
fn a_confirmation_without_its_token_or_an_unknown_type_cannot_be_signed() {
    let mut value: serde_json::Value = serde_json::from_str(AWS_NOTIFICATION).expect("json");
    value["Type"] = "UnsubscribeConfirmation".into();
    value["SubscribeURL"] =
        "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription".into();
    assert!(matches!(
        envelope(&value.to_string()).string_to_sign(),
        Err(Refusal::Unauthorized(_))
    ));
    value["Type"] = "Surprise".into();
    assert!(matches!(
        envelope(&value.to_string()).string_to_sign(),
        Err(Refusal::Unauthorized(_))
    ));
}

#[test]
fn the_default_hosts_are_sns_in_every_region_and_china() {
    let defaults = SnsSettings::default().cert_hosts;
    let allowed = |host: &str| defaults.iter().any(|p| p.matches(host));
    assert!(allowed("sns.us-east-1.amazonaws.com"));
    assert!(allowed("sns.eu-west-1.amazonaws.com"));
    assert!(allowed("sns.cn-north-1.amazonaws.com.cn"));
    assert!(!allowed("sns.amazonaws.com.evil.example"));
    assert!(!allowed("sns.us-east-1.amazonaws.com.evil.example"));
    assert!(!allowed("evil.example"));
    assert!(!allowed("sqs.us-east-1.amazonaws.com"));
    // A wildcard stays within its label.
    assert!(!allowed("sns.a.b.amazonaws.com"));
    assert!(!allowed("sns.amazonaws.com"));
}

#[test]
fn host_patterns_glob_within_labels() {
    let pattern = |text: &str| HostPattern::parse(text).expect("a pattern");
    assert!(pattern("127.0.0.1").matches("127.0.0.1"));
    assert!(!pattern("127.0.0.1").matches("127.0.0.10"));
    assert!(pattern("Localhost").matches("localhost"));
    assert!(pattern("sns-*-east.example.com").matches("sns-us-east.example.com"));
    assert!(pattern("sns-*-east.example.com").matches("sns--east.example.com"));
    assert!(!pattern("sns-*-east.example.com").matches("sns-us-west.example.com"));
    assert!(pattern("*.example.com").matches("a.example.com"));
    assert!(!pattern("*.example.com").matches("example.com"));
    assert!(pattern("a*b*c.example.com").matches("a1b2c.example.com"));
    assert!(!pattern("a*b*c.example.com").matches("a1c2b.example.com"));
    assert!(!pattern("ab*ba.example.com").matches("aba.example.com"));
}

#[test]
fn host_patterns_must_be_host_names_with_a_fixed_last_label() {
    for bad in [
        "",
        "  ",
        "sns..amazonaws.com",
        "sns.amazonaws.*",
        "*",
        "https://x.com",
        "a b.com",
    ] {
        assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
    }
}

fn events(message: &str) -> Accepted {
    ses_events("sns-1", message).expect("SES JSON")
}

// AWS's "Bounce notification with a DSN", shortened.
const BOUNCE: &str = r#"{
  "notificationType":"Bounce",
  "bounce":{
    "bounceType":"Permanent",
    "reportingMTA":"dns; email.example.com",
    "bouncedRecipients":[
      {"emailAddress":"jane@example.com","status":"5.1.1","action":"failed","diagnosticCode":"smtp; 550 5.1.1 <jane@example.com>... User"}
    ],
    "bounceSubType":"General",
    "timestamp":"2016-01-27T14:59:38.237Z",
    "feedbackId":"00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa068a-000000",
    "remoteMtaIp":"127.0.2.0"
  },
  "mail":{
    "timestamp":"2016-01-27T14:59:38.000Z",
    "source":"john@example.com",
    "sourceArn": "arn:aws:ses:us-east-1:888888888888:identity/example.com",
    "sourceIp": "127.0.3.0",
    "sendingAccountId":"123456789012",
    "messageId":"00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
    "destination":["jane@example.com","mary@example.com","richard@example.com"],
    "headersTruncated":false,
    "headers":[
      {"name":"From","value":"\"John Doe\" <john@example.com>"},
      {"name":"To","value":"\"Jane Doe\" <jane@example.com>, \"Mary Doe\" <mary@example.com>, \"Richard Doe\" <richard@example.com>"},
      {"name":"Message-ID","value":"custom-message-ID"},
      {"name":"X-Stamp-ID","value":"01JH0000000000000000000000"}
    ],
    "commonHeaders":{"from":["John Doe <john@example.com>"],"subject":"Hello"}
  }
}"#;

#[test]
fn a_permanent_bounce_is_hard_per_recipient_with_its_diagnostic() {
    let accepted = events(BOUNCE);
    assert_eq!(accepted.ignored, 0);
    assert_eq!(accepted.nonce, None);
    let [event] = accepted.events.as_slice() else {
        panic!("one event: {accepted:?}");
    };
    assert_eq!(event.kind, FeedbackKind::Bounced);
    assert_eq!(event.bounce, Some(BounceType::Hard));
    assert_eq!(event.recipient.as_deref(), Some("jane@example.com"));
    assert_eq!(
        event.reason.as_deref(),
        Some("smtp; 550 5.1.1 <jane@example.com>... User")
    );
    assert_eq!(event.at, at("2016-01-27T14:59:38.237Z"));
    assert_eq!(event.event_id.as_deref(), Some("sns-1:0"));
    assert_eq!(
        event.target,
        Target::from_parts(
            Some("01JH0000000000000000000000"),
            Some("00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000")
        )
        .expect("a target")
    );
    assert!(event.target.stamp().is_some(), "the header's stamp is read");
}

// AWS's "Bounce notification without a DSN": no headers, no diagnostic.
#[test]
fn a_transient_bounce_without_a_dsn_is_soft_and_targets_the_ses_id() {
    let message = r#"{
      "notificationType":"Bounce",
      "bounce":{
        "bounceType":"Transient",
        "bounceSubType":"General",
        "bouncedRecipients":[
          {"emailAddress":"jane@example.com"},
          {"emailAddress":"richard@example.com","status":"4.4.7","action":"delayed"}
        ],
        "timestamp":"2012-05-25T14:59:38.605Z",
        "feedbackId":"000001378603176d-5a4b5ad9-6f30-4198-a8c3-b1eb0c270a1d-000000"
      },
      "mail":{
        "timestamp":"2012-05-25T14:59:38.605Z",
        "messageId":"000001378603177f-7a5433e7-8edb-42ae-af10-f0181f34d6ee-000000",
        "source":"email_1337983178605@amazon.com",
        "destination":["jane@example.com","richard@example.com"]
      }
    }"#;
    let accepted = events(message);
    let summary: Vec<_> = accepted
        .events
        .iter()
        .map(|e| {
            (
                e.bounce,
                e.recipient.as_deref(),
                e.reason.as_deref(),
                e.event_id.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                Some(BounceType::Soft),
                Some("jane@example.com"),
                None,
                Some("sns-1:0")
            ),
            (
                Some(BounceType::Soft),
                Some("richard@example.com"),
                Some("4.4.7 delayed"),
                Some("sns-1:1")
            ),
        ]
    );
    assert_eq!(
        accepted.events[0].target,
        Target::ProviderId("000001378603177f-7a5433e7-8edb-42ae-af10-f0181f34d6ee-000000".into())
    );
}

#[test]
fn an_undetermined_bounce_is_soft() {
    let message = BOUNCE.replace("\"Permanent\"", "\"Undetermined\"");
    assert_eq!(events(&message).events[0].bounce, Some(BounceType::Soft));
}

// AWS's "Complaint notification with a feedback report".
#[test]
fn a_complaint_names_each_complainer_and_the_feedback_type() {
    let message = r#"{
      "notificationType":"Complaint",
      "complaint":{
        "userAgent":"AnyCompany Feedback Loop (V0.01)",
        "complainedRecipients":[{"emailAddress":"richard@example.com"}],
        "complaintFeedbackType":"abuse",
        "arrivalDate":"2016-01-27T14:59:38.237Z",
        "timestamp":"2016-01-27T14:59:38.237Z",
        "feedbackId":"000001378603177f-18c07c78-fa81-4a58-9dd1-fedc3cb8f49a-000000"
      },
      "mail":{
        "timestamp":"2016-01-27T14:59:38.237Z",
        "messageId":"000001378603177f-7a5433e7-8edb-42ae-af10-f0181f34d6ee-000000",
        "source":"john@example.com",
        "destination":["jane@example.com","mary@example.com","richard@example.com"]
      }
    }"#;
    let accepted = events(message);
    let [event] = accepted.events.as_slice() else {
        panic!("one event: {accepted:?}");
    };
    assert_eq!(event.kind, FeedbackKind::Complained);
    assert_eq!(event.bounce, None);
    assert_eq!(event.recipient.as_deref(), Some("richard@example.com"));
    assert_eq!(event.reason.as_deref(), Some("abuse"));
}

// AWS's "Delivery notification".
#[test]
fn a_delivery_names_each_recipient_with_the_smtp_response() {
    let message = r#"{
      "notificationType":"Delivery",
      "mail":{
        "timestamp":"2016-01-27T14:59:38.237Z",
        "messageId":"0000014644fe5ef6-9a483358-9170-4cb4-a269-f5dcdf415321-000000",
        "source":"john@example.com",
        "destination":["jane@example.com"],
        "headersTruncated":false,
        "headers":[{"name":"From","value":"\"John Doe\" <john@example.com>"}]
      },
      "delivery":{
        "timestamp":"2016-01-27T14:59:38.237Z",
        "recipients":["jane@example.com"],
        "processingTimeMillis":546,
        "reportingMTA":"a8-70.smtp-out.amazonses.com",
        "smtpResponse":"250 ok:  Message 64111812 accepted",
        "remoteMtaIp":"127.0.2.0"
      }
    }"#;
    let accepted = events(message);
    let [event] = accepted.events.as_slice() else {
        panic!("one event: {accepted:?}");
    };
    assert_eq!(event.kind, FeedbackKind::Delivered);
    assert_eq!(event.recipient.as_deref(), Some("jane@example.com"));
    assert_eq!(
        event.reason.as_deref(),
        Some("250 ok:  Message 64111812 accepted")
    );
    assert_eq!(
        event.target,
        Target::ProviderId("0000014644fe5ef6-9a483358-9170-4cb4-a269-f5dcdf415321-000000".into()),
        "no X-Stamp-ID among the headers"
    );
}

/// An event-publishing record of `event_type` with `object` under `key`,
/// after AWS's event publishing examples: the stamp in the email tags.
fn published(event_type: &str, key: &str, object: serde_json::Value) -> String {
    let mut record = serde_json::json!({
        "eventType": event_type,
        "mail": {
            "timestamp": "2017-08-09T22:00:19.652Z",
            "source": "sender@example.com",
            "sendingAccountId": "123456789012",
            "messageId": "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000",
            "destination": ["recipient@example.com"],
            "headersTruncated": false,
            "tags": {
                "ses:configuration-set": ["ConfigSet"],
                "stamp": ["01JH0000000000000000000001"]
            }
        }
    });
    record[key] = object;
    record.to_string()
}

#[test]
fn published_opens_and_clicks_name_the_one_destination() {
    let open = events(&published(
        "Open",
        "open",
        serde_json::json!({"ipAddress": "192.0.2.1", "timestamp": "2017-08-09T22:00:40.000Z", "userAgent": "Mozilla/5.0"}),
    ));
    let [opened] = open.events.as_slice() else {
        panic!("one event: {open:?}");
    };
    assert_eq!(opened.kind, FeedbackKind::Opened);
    assert_eq!(opened.recipient.as_deref(), Some("recipient@example.com"));
    assert_eq!(opened.at, at("2017-08-09T22:00:40.000Z"));
    assert!(opened.target.stamp().is_some(), "the stamp tag is read");
    assert!(opened.target.provider_id().is_some());

    let click = events(&published(
        "Click",
        "click",
        serde_json::json!({"ipAddress": "192.0.2.1", "link": "http://docs.aws.amazon.com/ses/latest/DeveloperGuide/send-email-smtp.html", "linkTags": {"samplekey0": ["samplevalue0"]}, "timestamp": "2017-08-09T23:51:25.570Z", "userAgent": "Mozilla/5.0"}),
    ));
    assert_eq!(click.events[0].kind, FeedbackKind::Clicked);
    assert_eq!(
        click.events[0].reason.as_deref(),
        Some("http://docs.aws.amazon.com/ses/latest/DeveloperGuide/send-email-smtp.html")
    );
}

#[test]
fn published_rejects_delays_and_unsubscriptions_map_to_their_kinds() {
    let reject = events(&published(
        "Reject",
        "reject",
        serde_json::json!({"reason": "Bad content"}),
    ));
    assert_eq!(reject.events[0].kind, FeedbackKind::Rejected);
    assert_eq!(reject.events[0].reason.as_deref(), Some("Bad content"));
    // A reject has no time of its own: the mail's.
    assert_eq!(reject.events[0].at, at("2017-08-09T22:00:19.652Z"));

    let delay = events(&published(
        "DeliveryDelay",
        "deliveryDelay",
        serde_json::json!({
            "timestamp": "2020-06-16T03:45:10.000Z",
            "delayType": "TransientCommunicationFailure",
            "expirationTime": "2020-06-16T09:43:09.000Z",
            "delayedRecipients": [{"emailAddress": "recipient@example.com", "status": "4.4.1", "diagnosticCode": "smtp; 421 4.4.0 Unable to lookup DNS for example.com"}]
        }),
    ));
    assert_eq!(delay.events[0].kind, FeedbackKind::DeferredDownstream);
    assert_eq!(
        delay.events[0].reason.as_deref(),
        Some("smtp; 421 4.4.0 Unable to lookup DNS for example.com")
    );

    let unsubscribed = events(&published(
        "Subscription",
        "subscription",
        serde_json::json!({"contactList": "SystemTestContactList", "timestamp": "2022-01-12T01:00:17.910Z", "source": "UnsubscribeHeader", "newTopicPreferences": {"unsubscribeAll": true}, "oldTopicPreferences": {"unsubscribeAll": false}}),
    ));
    assert_eq!(unsubscribed.events[0].kind, FeedbackKind::Unsubscribed);
    assert_eq!(
        unsubscribed.events[0].recipient.as_deref(),
        Some("recipient@example.com")
    );
}

#[test]
fn sends_rendering_failures_and_unknown_kinds_are_ignored() {
    for (kind, key) in [
        ("Send", "send"),
        ("Rendering Failure", "failure"),
        ("Teleport", "teleport"),
    ] {
        let accepted = events(&published(kind, key, serde_json::json!({})));
        assert_eq!(accepted.events, [], "{kind}");
        assert_eq!(accepted.ignored, 1, "{kind}");
    }
}

#[test]
fn ses_json_that_names_no_message_or_is_no_record_is_malformed() {
    let no_id = BOUNCE
        .replace(
            "\"messageId\":\"00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000\",",
            "",
        )
        .replace(
            "{\"name\":\"X-Stamp-ID\",\"value\":\"01JH0000000000000000000000\"}",
            "{\"name\":\"X\",\"value\":\"\"}",
        );
    assert!(matches!(
        ses_events("sns-1", &no_id),
        Err(Refusal::Malformed { .. })
    ));
    assert!(matches!(
        ses_events("sns-1", "Hello world!"),
        Err(Refusal::Malformed { .. })
    ));
    assert!(matches!(
        ses_events(
            "sns-1",
            r#"{"notificationType":"Bounce","mail":{"messageId":"x"}}"#
        ),
        Err(Refusal::Malformed { .. })
    ));
}

#[test]
fn the_cache_keeps_a_bounded_number_of_certificates() {
    let cache = CertificateCache::default();
    let first = cache.cell("https://sns.example.com/0.pem");
    assert!(Arc::ptr_eq(
        &first,
        &cache.cell("https://sns.example.com/0.pem")
    ));
    for i in 1..=MAX_CACHED_CERTIFICATES {
        cache.cell(&format!("https://sns.example.com/{i}.pem"));
    }
    let entries = cache.entries.lock().expect("not poisoned");
    assert_eq!(entries.cells.len(), MAX_CACHED_CERTIFICATES);
    assert!(
        !entries.cells.contains_key("https://sns.example.com/0.pem"),
        "the oldest went first"
    );
}

#[test]
fn a_timestamp_of_sns_reads_as_rfc3339() {
    assert_eq!(
        at("2012-05-02T00:54:06.655Z"),
        Utc.with_ymd_and_hms(2012, 5, 2, 0, 54, 6)
            .single()
            .expect("a date")
            + chrono::Duration::milliseconds(655)
    );
}
