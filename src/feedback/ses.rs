//! Amazon SES feedback, as SNS posts it: the SNS envelope's signature
//! checked against the signing certificate SNS names (fetched over HTTPS
//! from an allowed host, and cached), subscriptions confirmed, and the SES
//! notification or event-publishing JSON inside read into
//! [`FeedbackEvent`]s.
//!
//! This module owns the SNS side of an `ses` transport: the allowed
//! certificate hosts, the certificate cache, the canonical string SNS
//! signs, and the SES JSON's mapping. The keys that configure it
//! (`sns_cert_hosts`, `sns_ca_file`, `sns_topic_arns`) are read by
//! [`crate::transports::ses`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Utc};
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use serde::Deserialize;
use tokio::sync::OnceCell;
use url::Url;

use super::{
    Accepted, BounceType, FeedbackEvent, FeedbackKind, FeedbackSource, Inbound, MAX_EVENTS,
    Refusal, Target,
};

/// Default `sns_cert_hosts`: SNS's own hosts in every AWS region,
/// China's included.
pub const DEFAULT_CERT_HOSTS: [&str; 2] = ["sns.*.amazonaws.com", "sns.*.amazonaws.com.cn"];

/// Bounds fetching a certificate and confirming a subscription: SNS waits
/// about 15 s for an answer, so both must finish well inside that.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// SNS's certificates are under 2 KiB; a chain would still fit.
const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;
/// SNS signs with one certificate at a time and rotates it rarely; a few
/// entries cover a rotation and the regions a topic may be in.
const MAX_CACHED_CERTIFICATES: usize = 16;
/// The header naming the message's stamp, as the `ses` transport sends it.
const STAMP_HEADER: &str = "x-stamp-id";
/// The email tag carrying the stamp ([`crate::transports::ses`]).
const STAMP_TAG: &str = "stamp";

/// A host pattern of `sns_cert_hosts`: labels matched one by one, `*`
/// standing for any run of characters within its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    labels: Vec<String>,
}

impl HostPattern {
    /// `text` as a pattern: a host name or IP address whose labels may
    /// hold `*`, all but the last (a pattern may never leave the
    /// top-level domain open). The reason it is not one, if it is not.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let text = text.trim().to_ascii_lowercase();
        if text.is_empty() {
            return Err("an empty host pattern".into());
        }
        let labels: Vec<String> = text.split('.').map(str::to_owned).collect();
        for label in &labels {
            if label.is_empty() {
                return Err(format!("`{text}` has an empty label"));
            }
            if !label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
            {
                return Err(format!(
                    "`{text}` is not a host name (letters, digits, `-`, `.`, and `*` within a label)"
                ));
            }
        }
        if labels.last().is_some_and(|label| label.contains('*')) {
            return Err(format!(
                "`{text}` leaves its last label open; name the domain"
            ));
        }
        Ok(HostPattern { labels })
    }

    /// Whether `host` (lowercase, as [`Url::host_str`] gives it) matches.
    pub fn matches(&self, host: &str) -> bool {
        let labels: Vec<&str> = host.split('.').collect();
        labels.len() == self.labels.len()
            && self
                .labels
                .iter()
                .zip(labels)
                .all(|(pattern, label)| label_matches(pattern, label))
    }
}

/// Glob matching of one label, `*` for any run of characters.
fn label_matches(pattern: &str, label: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = label.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: the label is the pattern.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// What configures an ses transport's SNS webhook.
#[derive(Debug, Clone)]
pub struct SnsSettings {
    /// The hosts `SigningCertURL` and `SubscribeURL` may name.
    pub cert_hosts: Vec<HostPattern>,
    /// Extra trust roots (PEM) for fetching from those hosts, beside the
    /// system's.
    pub extra_roots: Vec<reqwest::Certificate>,
    /// The topics whose messages are taken; `None` takes any topic's.
    pub topic_arns: Option<Vec<String>>,
}

impl Default for SnsSettings {
    fn default() -> Self {
        SnsSettings {
            cert_hosts: DEFAULT_CERT_HOSTS
                .iter()
                .filter_map(|p| HostPattern::parse(p).ok())
                .collect(),
            extra_roots: Vec::new(),
            topic_arns: None,
        }
    }
}

/// An RSA public key (PKCS#1 `RSAPublicKey`), with its certificate's
/// validity.
#[derive(Debug)]
struct SigningKey {
    public_key: Vec<u8>,
    not_before: i64,
    not_after: i64,
}

type CertificateCell = Arc<OnceCell<Arc<SigningKey>>>;

/// The signing certificates fetched so far, by URL. Each URL has one cell:
/// concurrent first requests for it wait on one fetch.
#[derive(Debug, Default)]
struct CertificateCache {
    // A std Mutex: it is held only to find or insert a cell, never across
    // an await; the fetch waits on the cell.
    entries: Mutex<CacheEntries>,
}

#[derive(Debug, Default)]
struct CacheEntries {
    cells: HashMap<String, (u64, CertificateCell)>,
    inserted: u64,
}

impl CertificateCache {
    fn cell(&self, url: &str) -> CertificateCell {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, cell)) = entries.cells.get(url) {
            return Arc::clone(cell);
        }
        if entries.cells.len() >= MAX_CACHED_CERTIFICATES {
            let oldest = entries
                .cells
                .iter()
                .min_by_key(|(_, (order, _))| *order)
                .map(|(url, _)| url.clone());
            if let Some(oldest) = oldest {
                entries.cells.remove(&oldest);
            }
        }
        entries.inserted += 1;
        let order = entries.inserted;
        let cell = CertificateCell::default();
        entries
            .cells
            .insert(url.to_owned(), (order, Arc::clone(&cell)));
        cell
    }

    /// Forgets `url` after a failed fetch, so a URL that never loads holds
    /// no entry and the next message tries again.
    fn forget_failed(&self, url: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries
            .cells
            .get(url)
            .is_some_and(|(_, cell)| !cell.initialized())
        {
            entries.cells.remove(url);
        }
    }
}

/// An `ses` transport's event webhook: SNS messages from the topics its
/// configuration set publishes to.
#[derive(Debug)]
pub struct SnsSource {
    cert_hosts: Vec<HostPattern>,
    topic_arns: Option<Vec<String>>,
    client: reqwest::Client,
    certificates: CertificateCache,
}

impl SnsSource {
    /// The source `settings` describe; `Err` when the HTTP client cannot
    /// be built (the extra roots refused).
    pub fn new(settings: SnsSettings) -> Result<SnsSource, String> {
        crate::transports::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            // A redirect could lead to a host nobody allowed.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .tls_certs_merge(settings.extra_roots)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(SnsSource {
            cert_hosts: settings.cert_hosts,
            topic_arns: settings.topic_arns,
            client,
            certificates: CertificateCache::default(),
        })
    }

    /// `text` as a URL SNS may send us to: https, on an allowed host.
    fn allowed_url(&self, field: &str, text: &str) -> Result<Url, String> {
        let url = Url::parse(text).map_err(|e| format!("{field} is not a URL: {e}"))?;
        if url.scheme() != "https" {
            return Err(format!("{field} is not https"));
        }
        let host = url.host_str().unwrap_or_default();
        if !self.cert_hosts.iter().any(|p| p.matches(host)) {
            return Err(format!("{field} names host `{host}`, not an allowed one"));
        }
        Ok(url)
    }

    /// The key of the certificate at `url`, fetched once.
    async fn signing_key(&self, url: &Url) -> Result<Arc<SigningKey>, Refusal> {
        let cell = self.certificates.cell(url.as_str());
        let loaded = cell
            .get_or_try_init(|| async { self.fetch_key(url).await.map(Arc::new) })
            .await
            .cloned();
        if loaded.is_err() {
            self.certificates.forget_failed(url.as_str());
        }
        loaded.map_err(Refusal::Unavailable)
    }

    async fn fetch_key(&self, url: &Url) -> Result<SigningKey, String> {
        let host = url.host_str().unwrap_or_default();
        let fail = |what: String| format!("signing certificate from {host}: {what}");
        let mut response = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(fail(format!("HTTP {}", response.status())));
        }
        let mut pem = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?
        {
            pem.extend_from_slice(&chunk);
            if pem.len() > MAX_CERTIFICATE_BYTES {
                return Err(fail(format!("larger than {MAX_CERTIFICATE_BYTES} bytes")));
            }
        }
        signing_key(&pem).map_err(fail)
    }

    /// Verifies `envelope`'s signature and age.
    async fn verify(&self, envelope: &Envelope, request: &Inbound<'_>) -> Result<(), Refusal> {
        let algorithm: &'static dyn VerificationAlgorithm =
            match envelope.signature_version.as_str() {
                "1" => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                "2" => &signature::RSA_PKCS1_2048_8192_SHA256,
                other => {
                    return Err(Refusal::Unauthorized(format!(
                        "SignatureVersion `{other}` is not one SNS uses"
                    )));
                }
            };
        let timestamp = DateTime::parse_from_rfc3339(&envelope.timestamp)
            .map_err(|e| Refusal::Unauthorized(format!("Timestamp: {e}")))?
            .with_timezone(&Utc);
        // Checked before any fetch: a replayed old message costs nothing.
        if !request.is_timely(timestamp) {
            return Err(Refusal::Unauthorized(
                "Timestamp is outside the tolerance".into(),
            ));
        }
        // SNS signs every topic's messages, anyone's included: the
        // signature alone says only that some AWS account published it.
        if let Some(topics) = &self.topic_arns
            && !topics.contains(&envelope.topic_arn)
        {
            return Err(Refusal::Unauthorized(format!(
                "TopicArn `{}` is not one of sns_topic_arns",
                envelope.topic_arn
            )));
        }
        let cert_url = self
            .allowed_url("SigningCertURL", &envelope.signing_cert_url)
            .map_err(Refusal::Unauthorized)?;
        if !cert_url.path().ends_with(".pem") {
            return Err(Refusal::Unauthorized(
                "SigningCertURL does not name a .pem file".into(),
            ));
        }
        let signature = base64::engine::general_purpose::STANDARD
            .decode(envelope.signature.trim())
            .map_err(|_| Refusal::Unauthorized("Signature is not base64".into()))?;
        let canonical = envelope.string_to_sign()?;
        let key = self.signing_key(&cert_url).await?;
        let now = request.now.timestamp();
        if now < key.not_before || now > key.not_after {
            return Err(Refusal::Unauthorized(
                "the signing certificate is not valid now".into(),
            ));
        }
        UnparsedPublicKey::new(algorithm, &key.public_key)
            .verify(canonical.as_bytes(), &signature)
            .map_err(|_| Refusal::Unauthorized("the signature does not verify".into()))
    }

    /// Confirms a subscription by visiting its `SubscribeURL`, as SNS asks.
    async fn confirm(&self, envelope: &Envelope) -> Result<(), Refusal> {
        let text = envelope
            .subscribe_url
            .as_deref()
            .ok_or_else(|| Refusal::malformed("SubscribeURL", "missing"))?;
        let url = self
            .allowed_url("SubscribeURL", text)
            .map_err(|e| Refusal::malformed("SubscribeURL", e))?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let response = self.client.get(url).send().await.map_err(|e| {
            Refusal::Unavailable(format!("confirming at {host}: {}", e.without_url()))
        })?;
        if !response.status().is_success() {
            return Err(Refusal::Unavailable(format!(
                "confirming at {host}: HTTP {}",
                response.status()
            )));
        }
        tracing::info!(topic = %envelope.topic_arn, "SNS subscription confirmed");
        Ok(())
    }
}

/// The RSA key of the first certificate in `pem`, with its validity.
fn signing_key(pem: &[u8]) -> Result<SigningKey, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not PEM: {e}"))?;
    let certificate = pem
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let spki = certificate.public_key();
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
        return Err("its key is not RSA".into());
    }
    let validity = certificate.validity();
    Ok(SigningKey {
        public_key: spki.subject_public_key.data.to_vec(),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

/// What SNS posts: its envelope, the payload in `Message`.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "MessageId")]
    message_id: String,
    #[serde(rename = "TopicArn")]
    topic_arn: String,
    #[serde(rename = "Subject")]
    subject: Option<String>,
    #[serde(rename = "Message")]
    message: String,
    #[serde(rename = "Timestamp")]
    timestamp: String,
    #[serde(rename = "SignatureVersion")]
    signature_version: String,
    #[serde(rename = "Signature")]
    signature: String,
    #[serde(rename = "SigningCertURL")]
    signing_cert_url: String,
    #[serde(rename = "SubscribeURL")]
    subscribe_url: Option<String>,
    #[serde(rename = "Token")]
    token: Option<String>,
}

impl Envelope {
    /// The string SNS signs: each signed field's name and value, a line
    /// each, in byte order of the names, for the fields its type signs.
    fn string_to_sign(&self) -> Result<String, Refusal> {
        let fields: Vec<(&str, Option<&str>)> = match self.kind.as_str() {
            "Notification" => vec![
                ("Message", Some(&self.message)),
                ("MessageId", Some(&self.message_id)),
                // Signed only when the message has one.
                ("Subject", self.subject.as_deref()),
                ("Timestamp", Some(&self.timestamp)),
                ("TopicArn", Some(&self.topic_arn)),
                ("Type", Some(&self.kind)),
            ],
            "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
                vec![
                    ("Message", Some(&self.message)),
                    ("MessageId", Some(&self.message_id)),
                    (
                        "SubscribeURL",
                        required("SubscribeURL", &self.subscribe_url)?,
                    ),
                    ("Timestamp", Some(&self.timestamp)),
                    ("Token", required("Token", &self.token)?),
                    ("TopicArn", Some(&self.topic_arn)),
                    ("Type", Some(&self.kind)),
                ]
            }
            other => {
                return Err(Refusal::Unauthorized(format!(
                    "Type `{other}` is not one SNS sends"
                )));
            }
        };
        let mut text = String::new();
        for (name, value) in fields {
            if let Some(value) = value {
                text.push_str(name);
                text.push('\n');
                text.push_str(value);
                text.push('\n');
            }
        }
        Ok(text)
    }
}

/// A field a confirmation's signature covers, which it must therefore have.
fn required<'a>(name: &str, value: &'a Option<String>) -> Result<Option<&'a str>, Refusal> {
    value
        .as_deref()
        .map(Some)
        .ok_or_else(|| Refusal::Unauthorized(format!("{name} is missing")))
}

#[async_trait]
impl FeedbackSource for SnsSource {
    fn scheme(&self) -> &'static str {
        "sns"
    }

    async fn accept(&self, request: Inbound<'_>) -> Result<Accepted, Refusal> {
        // Nothing in the body can be trusted before the signature is
        // checked, so a body that is no SNS message is unauthorized.
        let envelope: Envelope = serde_json::from_slice(request.body)
            .map_err(|e| Refusal::Unauthorized(format!("not an SNS message: {e}")))?;
        self.verify(&envelope, &request).await?;
        match envelope.kind.as_str() {
            "SubscriptionConfirmation" => {
                self.confirm(&envelope).await?;
                Ok(Accepted::default())
            }
            "Notification" => ses_events(&envelope.message_id, &envelope.message),
            // An unsubscription needs nothing from us; SNS stops posting.
            _ => Ok(Accepted::default()),
        }
    }
}

// ------------------------------------------------------------ SES's JSON

/// SES's notification or event record, as far as Herald reads it; SES
/// adds fields as it likes, so unknown ones are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SesRecord {
    /// Notifications' name for the kind.
    notification_type: Option<String>,
    /// Event publishing's.
    event_type: Option<String>,
    mail: Mail,
    bounce: Option<Bounce>,
    complaint: Option<Complaint>,
    delivery: Option<Delivery>,
    open: Option<Dated>,
    click: Option<Click>,
    reject: Option<Reject>,
    delivery_delay: Option<DeliveryDelay>,
    subscription: Option<Dated>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mail {
    timestamp: Option<DateTime<Utc>>,
    message_id: Option<String>,
    #[serde(default)]
    destination: Vec<String>,
    /// Only when the notifications are set to include them.
    #[serde(default)]
    headers: Vec<MailHeader>,
    /// Event publishing's email tags.
    #[serde(default)]
    tags: HashMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct MailHeader {
    name: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bounce {
    bounce_type: Option<String>,
    #[serde(default)]
    bounced_recipients: Vec<RecipientStatus>,
    timestamp: Option<DateTime<Utc>>,
}

/// A bounced or delayed recipient.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecipientStatus {
    email_address: Option<String>,
    action: Option<String>,
    status: Option<String>,
    diagnostic_code: Option<String>,
}

impl RecipientStatus {
    /// The diagnostic, else what status and action say.
    fn reason(&self) -> Option<String> {
        if let Some(code) = &self.diagnostic_code {
            return Some(code.clone());
        }
        let parts: Vec<&str> = [self.status.as_deref(), self.action.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Complaint {
    #[serde(default)]
    complained_recipients: Vec<Address>,
    timestamp: Option<DateTime<Utc>>,
    complaint_feedback_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Address {
    email_address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Delivery {
    #[serde(default)]
    recipients: Vec<String>,
    timestamp: Option<DateTime<Utc>>,
    smtp_response: Option<String>,
}

/// An open or a subscription change: only its time is read.
#[derive(Debug, Deserialize)]
struct Dated {
    timestamp: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
struct Click {
    timestamp: Option<DateTime<Utc>>,
    link: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Reject {
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryDelay {
    #[serde(default)]
    delayed_recipients: Vec<RecipientStatus>,
    timestamp: Option<DateTime<Utc>>,
}

/// One event before it is dated and targeted.
struct Draft {
    kind: FeedbackKind,
    bounce: Option<BounceType>,
    recipient: Option<String>,
    reason: Option<String>,
}

/// The events of SES record `message`, carried in the SNS message
/// `sns_message_id`: its id, with the event's index, is each event's id,
/// so a redelivered SNS message repeats them.
fn ses_events(sns_message_id: &str, message: &str) -> Result<Accepted, Refusal> {
    let record: SesRecord =
        serde_json::from_str(message).map_err(|e| Refusal::malformed("Message", e.to_string()))?;
    let kind = record
        .event_type
        .as_deref()
        .or(record.notification_type.as_deref())
        .ok_or_else(|| Refusal::malformed("Message", "neither eventType nor notificationType"))?;
    let only_destination = || match record.mail.destination.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    };
    let draft = |kind, recipient, reason| Draft {
        kind,
        bounce: None,
        recipient,
        reason,
    };
    let missing =
        |object: &str| Refusal::malformed("Message", format!("{kind} without `{object}`"));
    let (at, drafts): (Option<DateTime<Utc>>, Vec<Draft>) = match kind {
        "Bounce" => {
            let bounce = record.bounce.as_ref().ok_or_else(|| missing("bounce"))?;
            let bounce_type = match bounce.bounce_type.as_deref() {
                Some("Permanent") => BounceType::Hard,
                // Transient, and Undetermined: SES could not tell, so the
                // address is not given up on.
                _ => BounceType::Soft,
            };
            let drafts = recipients_or_one(&bounce.bounced_recipients, |r| Draft {
                bounce: Some(bounce_type),
                ..draft(
                    FeedbackKind::Bounced,
                    r.and_then(|r| r.email_address.clone()),
                    r.and_then(RecipientStatus::reason),
                )
            });
            (bounce.timestamp, drafts)
        }
        "Complaint" => {
            let complaint = record
                .complaint
                .as_ref()
                .ok_or_else(|| missing("complaint"))?;
            let drafts = recipients_or_one(&complaint.complained_recipients, |r| {
                draft(
                    FeedbackKind::Complained,
                    r.and_then(|r| r.email_address.clone()),
                    complaint.complaint_feedback_type.clone(),
                )
            });
            (complaint.timestamp, drafts)
        }
        "Delivery" => {
            let delivery = record
                .delivery
                .as_ref()
                .ok_or_else(|| missing("delivery"))?;
            let drafts = recipients_or_one(&delivery.recipients, |r| {
                draft(
                    FeedbackKind::Delivered,
                    r.cloned(),
                    delivery.smtp_response.clone(),
                )
            });
            (delivery.timestamp, drafts)
        }
        "DeliveryDelay" => {
            let delay = record
                .delivery_delay
                .as_ref()
                .ok_or_else(|| missing("deliveryDelay"))?;
            let drafts = recipients_or_one(&delay.delayed_recipients, |r| {
                draft(
                    FeedbackKind::DeferredDownstream,
                    r.and_then(|r| r.email_address.clone()),
                    r.and_then(RecipientStatus::reason),
                )
            });
            (delay.timestamp, drafts)
        }
        "Open" => (
            record.open.as_ref().and_then(|o| o.timestamp),
            vec![draft(FeedbackKind::Opened, only_destination(), None)],
        ),
        "Click" => (
            record.click.as_ref().and_then(|c| c.timestamp),
            vec![draft(
                FeedbackKind::Clicked,
                only_destination(),
                record.click.as_ref().and_then(|c| c.link.clone()),
            )],
        ),
        "Reject" => (
            None,
            vec![draft(
                FeedbackKind::Rejected,
                None,
                record.reject.as_ref().and_then(|r| r.reason.clone()),
            )],
        ),
        "Subscription" => (
            record.subscription.as_ref().and_then(|s| s.timestamp),
            vec![draft(FeedbackKind::Unsubscribed, only_destination(), None)],
        ),
        // Send, RenderingFailure, and kinds SES adds later: nothing Herald
        // tracks (the send is recorded when the transport hands over).
        _ => {
            return Ok(Accepted {
                ignored: 1,
                ..Accepted::default()
            });
        }
    };
    if drafts.len() > MAX_EVENTS {
        return Err(Refusal::malformed(
            "Message",
            format!("more than {MAX_EVENTS} recipients"),
        ));
    }
    let at = at
        .or(record.mail.timestamp)
        .ok_or_else(|| Refusal::malformed("Message", format!("{kind} with no timestamp")))?;
    let target = Target::from_parts(stamp(&record.mail), record.mail.message_id.as_deref())
        .ok_or_else(|| Refusal::malformed("Message.mail.messageId", "missing"))?;
    let events = drafts
        .into_iter()
        .enumerate()
        .map(|(index, d)| FeedbackEvent {
            target: target.clone(),
            kind: d.kind,
            bounce: d.bounce,
            recipient: d.recipient,
            at,
            reason: d.reason,
            event_id: Some(format!("{sns_message_id}:{index}")),
        })
        .collect();
    Ok(Accepted {
        events,
        nonce: None,
        ignored: 0,
    })
}

/// One draft per recipient in `list`, or a single one naming none when
/// SES lists nobody.
fn recipients_or_one<T>(list: &[T], mut make: impl FnMut(Option<&T>) -> Draft) -> Vec<Draft> {
    if list.is_empty() {
        vec![make(None)]
    } else {
        list.iter().map(|r| make(Some(r))).collect()
    }
}

/// The stamp the mail carried: its `X-Stamp-ID` header when SES includes
/// the headers, else its `stamp` email tag (event publishing).
fn stamp(mail: &Mail) -> Option<&str> {
    mail.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(STAMP_HEADER))
        .map(|h| h.value.as_str())
        .or_else(|| {
            mail.tags
                .get(STAMP_TAG)
                .and_then(|values| values.first())
                .map(String::as_str)
        })
}

#[cfg(test)]
mod tests;
