//! The `ses` transport: an email sent through Amazon SES's v2 SendEmail
//! API (`POST /v2/email/outbound-emails`, JSON, signed with SigV4) as raw
//! MIME: the same message [`super::email::build_email`] builds for SMTP,
//! so the `X-Stamp-ID` and `X-Tracking-ID` headers, attachments and
//! custom headers travel exactly as they do there. The stamp also goes as
//! the email tag `stamp`, which SES's event publishing hands back; the
//! answer's `MessageId` is kept as the provider's id. SES says why it
//! refused in the error type (`x-amzn-ErrorType` or the body's
//! `__type`), which this module reads.
//!
//! It owns its kind's part of the config: the `[transports.<name>]` keys
//! it takes, their checks, and the transport built from them, and the
//! SNS webhook SES's feedback arrives by ([`crate::feedback::ses`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SigningParams, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine;
use reqwest::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use crate::config::{KindTable, Secret, TransportSettings};
use crate::domain::{Channel, EmailPayload, Message, Stamp};
use crate::feedback::FeedbackSource;
use crate::feedback::ses::{HostPattern, SnsSettings, SnsSource};
use crate::time::Clock;

use super::email::{build_email, email_payload, mailbox};
use super::http::{self, Answer, Caller};
use super::{Delivery, Gated, KindSpec, Transport, TransportError, TransportKind};

// Registered in `super::KINDS`; unregistered, it would be dead code.
pub(super) const KIND: KindSpec = KindSpec {
    name: "ses",
    keys: &[
        "region",
        "access_key_id_env",
        "secret_access_key_env",
        "session_token_env",
        "endpoint",
        "configuration_set",
        "timeout_ms",
        "sns_cert_hosts",
        "sns_ca_file",
        "sns_topic_arns",
    ],
    channels: &[Channel::Email],
    native: &[],
    configure,
};

/// The SendEmail operation, under the endpoint.
const SEND_PATH: &str = "/v2/email/outbound-emails";
/// The service name in SigV4's credential scope.
const SIGNING_SERVICE: &str = "ses";
const JSON: &str = "application/json";
/// The email tag carrying the stamp.
const STAMP_TAG: &str = "stamp";

/// Where and how to call SES.
#[derive(Debug, Clone)]
pub struct SesOptions {
    /// The AWS region (`eu-west-1`): the signature's scope, and the
    /// default endpoint's.
    pub region: String,
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    /// For temporary credentials (an assumed role); signed as
    /// `X-Amz-Security-Token`.
    pub session_token: Option<Secret>,
    /// The API root; [`SEND_PATH`] is appended.
    pub endpoint: Url,
    /// The configuration set the emails are sent with (event publishing,
    /// dedicated IPs); the account's default when unset.
    pub configuration_set: Option<String>,
    /// Bounds the whole request: connect, send, and the answer.
    pub timeout: Duration,
    /// The event webhook (SNS notifications); `None` answers none.
    pub feedback: Option<Arc<SnsSource>>,
}

/// The `ses` kind's keys of `[transports.<name>]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SesKeys {
    /// The AWS region. Required.
    region: Option<String>,
    /// Environment variable holding the access key id. Required.
    access_key_id_env: Option<String>,
    /// Environment variable holding the secret access key. Required.
    secret_access_key_env: Option<String>,
    /// Environment variable holding a session token, for temporary
    /// credentials.
    session_token_env: Option<String>,
    /// The API root. Default `https://email.<region>.amazonaws.com`.
    endpoint: Option<String>,
    /// The configuration set's name.
    configuration_set: Option<String>,
    /// Time-out of one delivery, in ms. Default 10000.
    timeout_ms: Option<u64>,
    /// The hosts SNS's `SigningCertURL` and `SubscribeURL` may name: host
    /// names, `*` standing for any run of characters within a label (not
    /// the last). Default `["sns.*.amazonaws.com", "sns.*.amazonaws.com.cn"]`.
    sns_cert_hosts: Option<Vec<String>>,
    /// A PEM file of extra trust roots for fetching from those hosts
    /// (a private endpoint, a test's server), beside the system's.
    sns_ca_file: Option<String>,
    /// The SNS topics whose messages are taken (their ARNs); any topic's
    /// when unset. Without it, any AWS account's topic may subscribe the
    /// webhook and post to it.
    sns_topic_arns: Option<Vec<String>>,
}

fn configure(table: &mut KindTable<'_>) -> Option<Arc<dyn TransportKind>> {
    let keys: SesKeys = table.keys()?;
    let timeout = table.timeout(keys.timeout_ms);
    let region = match keys.region.as_deref().map(str::trim) {
        None => {
            table.problem("region", "an ses transport needs its AWS region");
            None
        }
        // The region becomes a label of the default endpoint's host and a
        // part of the signature's scope: nothing else may be in it.
        Some(region)
            if region.is_empty()
                || !region
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') =>
        {
            table.problem(
                "region",
                format!("`{region}` is not an AWS region (`eu-west-1`)"),
            );
            None
        }
        Some(region) => Some(region.to_owned()),
    };
    let endpoint = match (&region, keys.endpoint.as_deref()) {
        (_, Some(endpoint)) => http::configure_root(table, "endpoint", Some(endpoint), ""),
        (Some(region), None) => http::configure_root(
            table,
            "endpoint",
            None,
            &format!("https://email.{region}.amazonaws.com"),
        ),
        (None, None) => None,
    };
    let required = |table: &mut KindTable<'_>, key: &str, var: Option<&str>, what: &str| {
        if var.is_none() {
            table.problem(key, format!("an ses transport needs the {what}'s variable"));
        }
        table.secret(key, var)
    };
    let access_key_id = required(
        table,
        "access_key_id_env",
        keys.access_key_id_env.as_deref(),
        "access key id",
    );
    let secret_access_key = required(
        table,
        "secret_access_key_env",
        keys.secret_access_key_env.as_deref(),
        "secret access key",
    );
    let session_token = match keys.session_token_env.as_deref() {
        None => Some(None),
        var => table.secret("session_token_env", var).map(Some),
    };
    let configuration_set = match keys.configuration_set.map(|s| s.trim().to_owned()) {
        Some(set) if set.is_empty() => {
            table.problem(
                "configuration_set",
                "is blank; leave it out for the account's default",
            );
            None
        }
        set => Some(set),
    };
    let feedback = sns_source(
        table,
        keys.sns_cert_hosts,
        keys.sns_ca_file.as_deref(),
        keys.sns_topic_arns,
    );
    Some(Arc::new(SesOptions {
        region: region?,
        access_key_id: access_key_id?,
        secret_access_key: secret_access_key?,
        session_token: session_token?,
        endpoint: endpoint?,
        configuration_set: configuration_set?,
        timeout: timeout?,
        feedback: Some(feedback?),
    }))
}

/// The SNS webhook the `sns_*` keys describe.
fn sns_source(
    table: &mut KindTable<'_>,
    cert_hosts: Option<Vec<String>>,
    ca_file: Option<&str>,
    topic_arns: Option<Vec<String>>,
) -> Option<Arc<SnsSource>> {
    let mut settings = SnsSettings::default();
    let mut valid = true;
    if let Some(topics) = topic_arns {
        let topics: Vec<String> = topics.iter().map(|t| t.trim().to_owned()).collect();
        if topics.is_empty() {
            table.problem(
                "sns_topic_arns",
                "is empty, which refuses every SNS message; leave it out for any topic",
            );
            valid = false;
        }
        for topic in &topics {
            if !topic.starts_with("arn:") || topic.split(':').count() != 6 {
                table.problem(
                    "sns_topic_arns",
                    format!(
                        "`{topic}` is not a topic ARN (`arn:aws:sns:<region>:<account>:<name>`)"
                    ),
                );
                valid = false;
            }
        }
        settings.topic_arns = Some(topics);
    }
    if let Some(patterns) = cert_hosts {
        if patterns.is_empty() {
            table.problem(
                "sns_cert_hosts",
                "is empty, which refuses every SNS message; leave it out for SNS's hosts",
            );
            valid = false;
        }
        let mut parsed = Vec::new();
        for pattern in &patterns {
            match HostPattern::parse(pattern) {
                Ok(pattern) => parsed.push(pattern),
                Err(e) => {
                    table.problem("sns_cert_hosts", e);
                    valid = false;
                }
            }
        }
        settings.cert_hosts = parsed;
    }
    if let Some(path) = ca_file {
        let roots = std::fs::read(path)
            .map_err(|e| format!("cannot read `{path}`: {e}"))
            .and_then(|pem| {
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("`{path}`: {e}"))
            })
            .and_then(|roots| {
                if roots.is_empty() {
                    Err(format!("`{path}` holds no PEM certificate"))
                } else {
                    Ok(roots)
                }
            });
        match roots {
            Ok(roots) => settings.extra_roots = roots,
            Err(e) => {
                table.problem("sns_ca_file", e);
                valid = false;
            }
        }
    }
    if !valid {
        return None;
    }
    match SnsSource::new(settings) {
        Ok(source) => Some(Arc::new(source)),
        Err(e) => {
            table.problem("sns_ca_file", e);
            None
        }
    }
}

impl TransportKind for SesOptions {
    fn name(&self) -> &'static str {
        "ses"
    }

    fn feedback(&self) -> Option<Arc<dyn FeedbackSource>> {
        self.feedback
            .clone()
            .map(|source| source as Arc<dyn FeedbackSource>)
    }

    fn build(
        &self,
        settings: &TransportSettings,
        _members: Vec<Gated>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<dyn Transport>, TransportError> {
        Ok(Arc::new(SesTransport::new(
            settings.name.clone(),
            self.clone(),
            clock,
        )?))
    }
}

/// Sends emails through SES's v2 SendEmail API.
pub struct SesTransport {
    http: Caller,
    region: String,
    credentials: Credentials,
    configuration_set: Option<String>,
    endpoint: Url,
    /// The `Host` header as sent, port included: it is signed, so the
    /// value signed and the value sent must be the same string.
    host_header: String,
}

impl SesTransport {
    /// The transport `name` sends through, reading the time
    /// (the signature's, and for `Retry-After` dates) from `clock`.
    pub fn new(
        name: impl Into<String>,
        options: SesOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, TransportError> {
        let endpoint = http::endpoint(&options.endpoint, SEND_PATH);
        let http = Caller::new(name.into(), &endpoint, options.timeout, clock)?;
        let host_header = match endpoint.port() {
            Some(port) => format!("{}:{port}", http.host),
            None => http.host.clone(),
        };
        let credentials = Credentials::new(
            options.access_key_id.expose(),
            options.secret_access_key.expose(),
            options.session_token.map(|t| t.expose().to_owned()),
            None,
            "herald-config",
        );
        Ok(SesTransport {
            http,
            region: options.region,
            credentials,
            configuration_set: options.configuration_set,
            endpoint,
            host_header,
        })
    }

    /// The SigV4 headers (`X-Amz-Date`, `Authorization`, and
    /// `X-Amz-Security-Token` with temporary credentials) for a POST of
    /// `body` at `now`, signed over `Host` and `Content-Type`.
    fn signature(
        &self,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, TransportError> {
        let local = |e: &dyn std::fmt::Display| {
            TransportError::Local(format!("transport `{}`: signing: {e}", self.http.name))
        };
        let identity = self.credentials.clone().into();
        let params: SigningParams<'_> = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SIGNING_SERVICE)
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| local(&e))?
            .into();
        let headers = [("host", self.host_header.as_str()), ("content-type", JSON)];
        let request = SignableRequest::new(
            "POST",
            self.endpoint.as_str(),
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| local(&e))?;
        let (instructions, _) = sign(request, &params).map_err(|e| local(&e))?.into_parts();
        instructions
            .headers()
            .map(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| local(&e))?;
                let mut value = HeaderValue::from_str(value).map_err(|e| local(&e))?;
                value.set_sensitive(true);
                Ok((name, value))
            })
            .collect()
    }
}

/// `raws` as the bare addresses SES's `Destination` takes.
fn destination(raws: &[String], field: &str) -> Result<Value, TransportError> {
    raws.iter()
        .enumerate()
        .map(|(i, raw)| {
            Ok(Value::String(
                mailbox(raw, &format!("{field}[{i}]"))?.email.to_string(),
            ))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// The SendEmail request body: `mime` as the raw content, stamped with
/// `stamp`, sent to `email`'s recipients.
fn request_body(
    stamp: Stamp,
    email: &EmailPayload,
    mime: &[u8],
    configuration_set: Option<&str>,
) -> Result<Value, TransportError> {
    // SES would read the recipients of a raw email from its headers, and
    // the built email has no Bcc header: the destination names them all.
    let mut destination_fields = json!({ "ToAddresses": destination(&email.to, "to")? });
    if !email.cc.is_empty() {
        destination_fields["CcAddresses"] = destination(&email.cc, "cc")?;
    }
    if !email.bcc.is_empty() {
        destination_fields["BccAddresses"] = destination(&email.bcc, "bcc")?;
    }
    let mut body = json!({
        "Content": {
            "Raw": { "Data": base64::engine::general_purpose::STANDARD.encode(mime) }
        },
        "Destination": destination_fields,
        "EmailTags": [{ "Name": STAMP_TAG, "Value": stamp.to_string() }],
    });
    if let Some(set) = configuration_set {
        body["ConfigurationSetName"] = Value::String(set.to_owned());
    }
    Ok(body)
}

/// The error type SES names, without the namespace (`...#Name`) or the
/// documentation link (`Name:http://...`) either form may carry.
fn error_type(answer: &Answer) -> Option<String> {
    let raw = match answer.header("x-amzn-errortype") {
        Some(header) => header.to_owned(),
        None => {
            let body: Value = answer.json()?;
            ["__type", "code", "Code"]
                .into_iter()
                .find_map(|key| body.get(key)?.as_str().map(str::to_owned))?
        }
    };
    let name = raw.split(':').next().unwrap_or_default();
    let name = name.rsplit('#').next().unwrap_or_default().trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// A refusal, classified by SES's error type where it says more than the
/// status does, else by the status ([`Answer::failure`]).
fn failure(answer: &Answer, now: SystemTime) -> TransportError {
    let code = Some(answer.status);
    let message = || answer.describe();
    match error_type(answer).as_deref() {
        // The message itself (a virus, an unverified sender address) or a
        // sender domain that is not set up: no retry changes either.
        Some("MessageRejected" | "MailFromDomainNotVerifiedException") => {
            TransportError::Rejected {
                code,
                message: message(),
            }
        }
        // The account cannot send at all: the transport's outage, so the
        // breaker opens and no message spends an attempt on it.
        Some(
            "AccountSuspendedException"
            | "SendingPausedException"
            | "SignatureDoesNotMatch"
            | "InvalidClientTokenId"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "ExpiredTokenException",
        ) => TransportError::Unauthorized {
            code,
            message: message(),
        },
        Some(access) if access.starts_with("AccessDenied") => TransportError::Unauthorized {
            code,
            message: message(),
        },
        // A sending quota: SES answers 400 for the daily one and 429 for
        // the rate, and either passes.
        Some("TooManyRequestsException" | "LimitExceededException" | "ThrottlingException") => {
            TransportError::Temporary {
                code,
                message: message(),
                retry_after: answer.retry_after(now),
            }
        }
        _ => answer.failure(now),
    }
}

/// The part of SES's answer this transport reads.
#[derive(Deserialize)]
struct SesAnswer {
    #[serde(rename = "MessageId")]
    message_id: Option<String>,
}

#[async_trait]
impl Transport for SesTransport {
    fn name(&self) -> &str {
        &self.http.name
    }

    fn kind(&self) -> &'static str {
        "ses"
    }

    async fn deliver(&self, message: &Message) -> Result<Delivery, TransportError> {
        let email = email_payload(message)?;
        let mime = build_email(message)?.formatted();
        let body = request_body(message.id, &email, &mime, self.configuration_set.as_deref())?;
        let body = serde_json::to_vec(&body)
            .map_err(|e| TransportError::InvalidMessage(format!("request body: {e}")))?;
        let now = self.http.now();
        let mut request = self
            .http
            .client
            .post(self.endpoint.clone())
            .header(HOST, self.host_header.as_str())
            .header(CONTENT_TYPE, JSON);
        for (name, value) in self.signature(&body, now)? {
            request = request.header(name, value);
        }
        let answer = self.http.send(request.body(body)).await?;
        if answer.is_success() {
            // The email is accepted whether or not the id came with it:
            // failing it now would send it again.
            let provider_message_id = answer
                .json::<SesAnswer>()
                .and_then(|a| a.message_id)
                .filter(|id| !id.trim().is_empty());
            return Ok(self.http.delivered(&answer, provider_message_id));
        }
        Err(failure(&answer, self.http.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, error_type: Option<&str>, body: &str) -> Answer {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(error_type) = error_type {
            headers.insert(
                "x-amzn-errortype",
                HeaderValue::from_str(error_type).unwrap(),
            );
        }
        Answer {
            status,
            headers,
            body: body.as_bytes().to_vec(),
            host: "email.eu-west-1.amazonaws.com".into(),
        }
    }

    #[test]
    fn the_error_type_is_read_from_the_header_or_the_body() {
        let now = SystemTime::UNIX_EPOCH;
        let rejected = failure(
            &answer(
                400,
                Some("MessageRejected:http://internal.amazon.com/"),
                "{}",
            ),
            now,
        );
        assert!(rejected.is_permanent(), "{rejected}");
        let suspended = failure(
            &answer(
                400,
                None,
                r#"{"__type":"com.amazon.ses#AccountSuspendedException","message":"x"}"#,
            ),
            now,
        );
        assert!(suspended.is_unauthorized(), "{suspended}");
        let quota = failure(&answer(400, Some("LimitExceededException"), "{}"), now);
        assert!(quota.is_transient() && !quota.is_unauthorized(), "{quota}");
        let denied = failure(
            &answer(403, None, r#"{"code":"AccessDeniedException"}"#),
            now,
        );
        assert!(denied.is_unauthorized(), "{denied}");
        // Nothing named: the status decides.
        assert!(failure(&answer(400, None, "not json"), now).is_permanent());
        assert!(failure(&answer(503, None, ""), now).is_transient());
    }

    #[test]
    fn every_recipient_is_in_the_destination_bare() {
        let email = EmailPayload {
            from: "shop@example.com".into(),
            to: vec!["\"Doe, Jane\" <jane@example.com>".into()],
            cc: vec![],
            bcc: vec!["audit@example.com".into()],
            reply_to: None,
            subject: "Hi".into(),
            text: Some("Hello".into()),
            html: None,
            headers: Default::default(),
            attachments: vec![],
        };
        let stamp = Stamp::generate();
        let body = request_body(stamp, &email, b"MIME", Some("receipts")).unwrap();
        assert_eq!(
            body,
            json!({
                "Content": {"Raw": {"Data": "TUlNRQ=="}},
                "Destination": {
                    "ToAddresses": ["jane@example.com"],
                    "BccAddresses": ["audit@example.com"]
                },
                "EmailTags": [{"Name": "stamp", "Value": stamp.to_string()}],
                "ConfigurationSetName": "receipts"
            })
        );
    }
}
