//! The `mailgun` transport: an email sent through Mailgun's messages API
//! (`POST /v3/<domain>/messages`, multipart/form-data, HTTP basic auth as
//! `api:<key>`). The stamp travels as the user variable `v:stamp`, which
//! Mailgun's webhooks hand back with every event, and in the `X-Stamp-ID`
//! and `X-Tracking-ID` headers every email carries; the answer's `id` is
//! kept as the provider's id.
//!
//! It owns its kind's part of the config: the `[transports.<name>]` keys
//! it takes, their checks, and the transport built from them; the
//! webhooks' verifier is [`crate::feedback::mailgun`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::multipart::{Form, Part};
use serde::Deserialize;
use url::Url;

use crate::config::{KindTable, TransportSettings};
use crate::domain::{Channel, EmailPayload, Message, Stamp};
use crate::feedback::FeedbackSource;
use crate::feedback::mailgun::MailgunEvents;
use crate::time::Clock;

use super::email::{STAMP_HEADER, TRACKING_HEADER, email_payload, mailbox};
use super::http::{self, Caller};
use super::{Delivery, Gated, KindSpec, Transport, TransportError, TransportKind};

// Registered in `super::KINDS`; unregistered, it would be dead code.
pub(super) const KIND: KindSpec = KindSpec {
    name: "mailgun",
    keys: &[
        "domain",
        "api_key_env",
        "region",
        "base_url",
        "timeout_ms",
        "webhook_signing_key_env",
    ],
    channels: &[Channel::Email],
    native: &[],
    configure,
};

/// The API root of Mailgun's US region, the default.
pub const US_BASE_URL: &str = "https://api.mailgun.net";
/// The API root of Mailgun's EU region: a domain lives in one region, and
/// the other answers for it as for a domain it does not know.
pub const EU_BASE_URL: &str = "https://api.eu.mailgun.net";
/// The user Mailgun's basic auth takes; the API key is the password.
const API_USER: &str = "api";

/// Where and how to call Mailgun.
#[derive(Debug, Clone)]
pub struct MailgunOptions {
    /// The sending domain, as Mailgun names it (`mg.example.com`).
    pub domain: String,
    /// `Basic base64(api:<key>)`, marked sensitive so it is never shown.
    pub authorization: HeaderValue,
    /// The API root; `/v3/<domain>/messages` is appended.
    pub base_url: Url,
    /// Bounds the whole request: connect, send, and the answer.
    pub timeout: Duration,
    /// The webhooks' verifier, when a signing key is set.
    pub feedback: Option<Arc<dyn FeedbackSource>>,
}

/// The `mailgun` kind's keys of `[transports.<name>]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MailgunKeys {
    /// The sending domain. Required.
    domain: Option<String>,
    /// Environment variable holding the API key. Required.
    api_key_env: Option<String>,
    /// `us` (default) or `eu`: which API root the domain lives under.
    region: Option<String>,
    /// The API root, overriding `region`'s.
    base_url: Option<String>,
    /// Time-out of one delivery, in ms. Default 10000.
    timeout_ms: Option<u64>,
    /// Environment variable holding the HTTP webhook signing key that
    /// signs Mailgun's webhooks. Default unset: no native event webhook.
    webhook_signing_key_env: Option<String>,
}

fn configure(table: &mut KindTable<'_>) -> Option<Arc<dyn TransportKind>> {
    let keys: MailgunKeys = table.keys()?;
    let timeout = table.timeout(keys.timeout_ms);
    let region_root = match keys.region.as_deref().map(str::trim) {
        None | Some("us") => Some(US_BASE_URL),
        Some("eu") => Some(EU_BASE_URL),
        Some(other) => {
            table.problem(
                "region",
                format!("`{other}` is not a Mailgun region: `us` or `eu`"),
            );
            None
        }
    };
    let base_url = match (keys.base_url.as_deref(), region_root) {
        (Some(base_url), _) => http::configure_base_url(table, Some(base_url), US_BASE_URL),
        (None, Some(root)) => http::configure_base_url(table, None, root),
        (None, None) => None,
    };
    let domain = match keys.domain.as_deref().map(str::trim) {
        None => {
            table.problem("domain", "a mailgun transport needs its sending domain");
            None
        }
        // The domain is a segment of the request's path: anything but a
        // host name could point the request at another endpoint.
        Some(domain)
            if domain.is_empty()
                || !domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') =>
        {
            table.problem(
                "domain",
                format!("`{domain}` is not a domain name (`mg.example.com`)"),
            );
            None
        }
        Some(domain) => Some(domain.to_owned()),
    };
    if keys.api_key_env.is_none() {
        table.problem(
            "api_key_env",
            "a mailgun transport needs the API key's variable",
        );
    }
    let authorization = table
        .secret("api_key_env", keys.api_key_env.as_deref())
        .and_then(|key| match http::basic_auth(API_USER, key.expose()) {
            Some(value) => Some(value),
            None => {
                table.problem(
                    "api_key_env",
                    "the key is not a header value (one line of visible ASCII)",
                );
                None
            }
        });
    let feedback = match keys.webhook_signing_key_env.as_deref() {
        None => Some(None),
        Some(var) => table
            .secret("webhook_signing_key_env", Some(var))
            .map(|key| Some(Arc::new(MailgunEvents::new(key.expose())) as Arc<dyn FeedbackSource>)),
    };
    Some(Arc::new(MailgunOptions {
        domain: domain?,
        authorization: authorization?,
        base_url: base_url?,
        timeout: timeout?,
        feedback: feedback?,
    }))
}

impl TransportKind for MailgunOptions {
    fn name(&self) -> &'static str {
        "mailgun"
    }

    fn feedback(&self) -> Option<Arc<dyn FeedbackSource>> {
        self.feedback.clone()
    }

    fn build(
        &self,
        settings: &TransportSettings,
        _members: Vec<Gated>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<dyn Transport>, TransportError> {
        Ok(Arc::new(MailgunTransport::new(
            settings.name.clone(),
            self.clone(),
            clock,
        )?))
    }
}

/// Sends emails through Mailgun's messages API.
pub struct MailgunTransport {
    http: Caller,
    authorization: HeaderValue,
    endpoint: Url,
}

impl MailgunTransport {
    /// The transport `name` sends through, reading the time
    /// (for `Retry-After` dates) from `clock`.
    pub fn new(
        name: impl Into<String>,
        options: MailgunOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, TransportError> {
        let endpoint = http::endpoint(
            &options.base_url,
            &format!("/v3/{}/messages", options.domain),
        );
        Ok(MailgunTransport {
            http: Caller::new(name.into(), &endpoint, options.timeout, clock)?,
            authorization: options.authorization,
            endpoint,
        })
    }
}

/// `raw` written again from its parts, so a display name with a comma is
/// quoted and cannot be read as two recipients.
fn address(raw: &str, field: &str) -> Result<String, TransportError> {
    Ok(mailbox(raw, field)?.to_string())
}

/// The form's text fields for `email`, stamped with `stamp`, in order; a
/// field Mailgun takes more than once (`to`, `h:...`) appears once per
/// value.
fn text_fields(
    stamp: Stamp,
    email: &EmailPayload,
) -> Result<Vec<(String, String)>, TransportError> {
    let stamp = stamp.to_string();
    let text = email.text.as_deref().filter(|t| !t.trim().is_empty());
    let html = email.html.as_deref().filter(|t| !t.trim().is_empty());
    if text.is_none() && html.is_none() {
        return Err(TransportError::InvalidMessage(
            "an email needs a body: `text`, `html` or both".into(),
        ));
    }
    let mut fields = vec![("from".to_owned(), address(&email.from, "from")?)];
    for (field, raws) in [("to", &email.to), ("cc", &email.cc), ("bcc", &email.bcc)] {
        for (i, raw) in raws.iter().enumerate() {
            fields.push((field.to_owned(), address(raw, &format!("{field}[{i}]"))?));
        }
    }
    fields.push(("subject".to_owned(), email.subject.clone()));
    fields.extend(
        [("text", text), ("html", html)]
            .into_iter()
            .filter_map(|(field, body)| body.map(|b| (field.to_owned(), b.to_owned()))),
    );
    if let Some(reply_to) = &email.reply_to {
        fields.push(("h:Reply-To".to_owned(), address(reply_to, "reply_to")?));
    }
    // Validation refuses custom headers named like the stamp's, so these
    // are the only values they can have.
    fields.extend(
        email
            .headers
            .iter()
            .map(|(name, value)| (format!("h:{name}"), value.clone())),
    );
    for name in [STAMP_HEADER, TRACKING_HEADER] {
        fields.push((format!("h:{name}"), stamp.clone()));
    }
    fields.push(("v:stamp".to_owned(), stamp));
    Ok(fields)
}

/// The whole form: the text fields, then each attachment as a file part.
fn form(stamp: Stamp, email: &EmailPayload) -> Result<Form, TransportError> {
    let mut form = text_fields(stamp, email)?
        .into_iter()
        .fold(Form::new(), |form, (name, value)| form.text(name, value));
    for (i, attachment) in email.attachments.iter().enumerate() {
        let content = attachment.decode().map_err(|e| {
            TransportError::InvalidMessage(format!("email.attachments[{i}].content_base64: {e}"))
        })?;
        let part = Part::bytes(content)
            .file_name(attachment.filename.clone())
            .mime_str(&attachment.content_type)
            .map_err(|e| {
                TransportError::InvalidMessage(format!("email.attachments[{i}].content_type: {e}"))
            })?;
        form = form.part("attachment", part);
    }
    Ok(form)
}

/// The part of Mailgun's answer this transport reads.
#[derive(Deserialize)]
struct MailgunAnswer {
    id: Option<String>,
}

#[async_trait]
impl Transport for MailgunTransport {
    fn name(&self) -> &str {
        &self.http.name
    }

    fn kind(&self) -> &'static str {
        "mailgun"
    }

    async fn deliver(&self, message: &Message) -> Result<Delivery, TransportError> {
        let email = email_payload(message)?;
        // Multipart, as Mailgun documents it; its url-encoded form would
        // not carry attachments.
        let request = self
            .http
            .client
            .post(self.endpoint.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .multipart(form(message.id, &email)?);
        let answer = self.http.send(request).await?;
        if answer.is_success() {
            // The email is accepted whether or not the id came with it:
            // failing it now would send it again.
            let provider_message_id = answer
                .json::<MailgunAnswer>()
                .and_then(|a| a.id)
                .map(|id| id.trim().to_owned())
                .filter(|id| !id.is_empty());
            return Ok(self.http.delivered(&answer, provider_message_id));
        }
        // Mailgun's statuses mean what HTTP's do and its bodies say no
        // more than `message`: 401 a refused key, 400 a request it will
        // never take, 429 (with Retry-After) and 5xx for now.
        Err(answer.failure(self.http.now()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn email() -> EmailPayload {
        EmailPayload {
            from: "Shop <shop@example.com>".into(),
            to: vec![
                "\"Doe, Jane\" <jane@example.com>".into(),
                "bob@example.com".into(),
            ],
            cc: vec![],
            bcc: vec![],
            reply_to: None,
            subject: "Your receipt".into(),
            text: Some(" ".into()),
            html: Some("<p>Thanks</p>".into()),
            headers: BTreeMap::new(),
            attachments: vec![],
        }
    }

    #[test]
    fn a_minimal_email_sends_only_the_fields_it_has() {
        let stamp = Stamp::generate();
        let fields = text_fields(stamp, &email()).unwrap();
        let stamp = stamp.to_string();
        let expected: Vec<(String, String)> = [
            ("from", "Shop <shop@example.com>"),
            ("to", "\"Doe, Jane\" <jane@example.com>"),
            ("to", "bob@example.com"),
            ("subject", "Your receipt"),
            ("html", "<p>Thanks</p>"),
            ("h:X-Stamp-ID", stamp.as_str()),
            ("h:X-Tracking-ID", stamp.as_str()),
            ("v:stamp", stamp.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(fields, expected);
    }

    #[test]
    fn an_email_without_a_body_is_the_message_s_fault() {
        let mut bare = email();
        bare.html = None;
        let err = text_fields(Stamp::generate(), &bare).unwrap_err();
        assert!(err.is_permanent(), "{err}");
    }
}
