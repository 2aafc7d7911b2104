//! Turning a client's enqueue request into a message ready to store: the
//! payload is validated, the transport chosen (explicitly or by the
//! channel's route), the priority defaulted from the category, the
//! fingerprint computed and the stamp given. Whatever is wrong comes back
//! as one [`ValidationError`] naming the field; nothing reaches storage.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{
    Channel, EmailPayload, Fingerprint, GenericPayload, Payload, Priority, SmsPayload, Stamp,
};

/// Longest idempotency key, in characters (as JSON Schema's `maxLength`
/// counts them, so the published description states the same limit).
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Longest category name, in bytes.
const MAX_CATEGORY: usize = 64;

/// A category is 1 to 64 letters, digits, '_', '-' or '.'.
pub fn check_category(category: &str) -> Result<(), String> {
    let valid = !category.is_empty()
        && category.len() <= MAX_CATEGORY
        && category
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "1 to {MAX_CATEGORY} characters of letters, digits, '_', '-', '.'"
        ))
    }
}
/// A category's name in the OpenAPI description: what [`check_category`]
/// accepts.
pub struct Category;

impl utoipa::PartialSchema for Category {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .pattern(Some("^[A-Za-z0-9_.-]{1,64}$"))
            .into()
    }
}

impl utoipa::ToSchema for Category {}

/// An idempotency key is 1 to 255 characters without control characters.
pub fn check_idempotency_key(key: &str) -> Result<(), String> {
    let valid = !key.is_empty()
        && key.chars().count() <= MAX_IDEMPOTENCY_KEY
        && key.chars().all(|c| !c.is_control());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "1 to {MAX_IDEMPOTENCY_KEY} characters without control characters"
        ))
    }
}

/// An idempotency key in the OpenAPI description: what
/// [`check_idempotency_key`] accepts.
pub struct IdempotencyKey;

impl utoipa::PartialSchema for IdempotencyKey {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_IDEMPOTENCY_KEY))
            .pattern(Some(IDEMPOTENCY_KEY_PATTERN))
            .into()
    }
}

impl utoipa::ToSchema for IdempotencyKey {}

/// No control character (General Category Cc), as `char::is_control`.
const IDEMPOTENCY_KEY_PATTERN: &str = "^[^\\x00-\\x1F\\x7F-\\x9F]*$";

/// Most device tokens one push request fans out to (FCM's multicast
/// limit, which clients already batch by).
pub const MAX_PUSH_TOKENS: usize = 500;

/// Largest `metadata` object, serialised, in bytes.
const MAX_METADATA_BYTES: usize = 16 * 1024;

/// The enqueue body of `POST /api/messages` (DESIGN.md).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRequest {
    pub channel: Channel,
    /// A configured transport; without it, the channel's route decides.
    #[serde(default)]
    pub transport: Option<String>,
    /// 0 (lowest) to 9 (highest). Default: the category's priority, else
    /// `[priority] default`.
    #[serde(default)]
    #[schema(value_type = Option<u8>, minimum = 0, maximum = 9)]
    pub priority: Option<Priority>,
    /// Sets the default priority through `[priority] categories`.
    #[serde(default)]
    #[schema(value_type = Option<Category>)]
    pub category: Option<String>,
    /// Deliver no earlier than this (RFC 3339); a past time means now.
    #[serde(default)]
    pub send_at: Option<DateTime<Utc>>,
    /// Enqueueing the same key again returns the existing message (200).
    /// 1 to 255 characters, no control characters.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    pub idempotency_key: Option<String>,
    /// A JSON object kept with the message (at most 16 KiB).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// The payload; exactly the one named by `channel`.
    #[serde(default)]
    pub email: Option<EmailPayload>,
    #[serde(default)]
    pub sms: Option<SmsPayload>,
    /// `{payload, url?}` for a webhook-kind transport, `{channel, text,
    /// ...}` for a chat provider (the server's description names which).
    #[serde(default)]
    #[schema(value_type = Option<GenericPayload>)]
    pub chat: Option<serde_json::Value>,
    /// `{payload, url?}` for a webhook-kind transport, `{token, title,
    /// ...}` for a push provider (the server's description names which).
    #[serde(default)]
    #[schema(value_type = Option<GenericPayload>)]
    pub push: Option<serde_json::Value>,
    #[serde(default)]
    pub webhook: Option<GenericPayload>,
}

/// A message that passed validation, with everything storage needs.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub id: Stamp,
    pub channel: Channel,
    pub transport: String,
    pub category: Option<String>,
    pub priority: Priority,
    /// The payload and metadata as JSON text, serialised once here: storage
    /// writes the text as it is, and a batch of 1,000 would otherwise build
    /// and drop a JSON tree per message only to serialise it again.
    pub payload: String,
    pub metadata: String,
    pub fingerprint: Fingerprint,
    pub idempotency_key: Option<String>,
    pub max_attempts: u32,
    pub available_at: DateTime<Utc>,
    /// [`Payload::recipients`]: what suppression checks at enqueue and
    /// the recipient filter finds.
    pub recipients: Vec<String>,
}

/// What the configuration says about accepting messages; built from the
/// validated config so this module needs no I/O and no config types.
#[derive(Debug, Clone, Default)]
pub struct EnqueuePolicy {
    pub transports: HashMap<String, TransportIntake>,
    pub routes: HashMap<Channel, String>,
    pub default_priority: Priority,
    pub category_priorities: BTreeMap<String, Priority>,
}

/// What one transport accepts.
#[derive(Debug, Clone, Default)]
pub struct TransportIntake {
    pub channels: Vec<Channel>,
    /// `1 + max_retries`.
    pub max_attempts: u32,
    /// Hosts a per-message `url` may point at; `None` refuses every
    /// per-message URL.
    pub allowed_url_hosts: Option<Vec<String>>,
    /// The channels whose provider shape (push: `{token, ...}`, chat:
    /// `{channel, text, ...}`) it takes; for the others it takes the
    /// generic `{payload, url?}`.
    pub native: Vec<Channel>,
}

impl Default for Priority {
    fn default() -> Self {
        Priority::new(4).unwrap_or(Priority::MIN)
    }
}

/// The code of [`ValidationError::forbidden_character`], answered 400.
pub const FORBIDDEN_CHARACTER: &str = "forbidden_character";

/// Why a request was refused, naming the field. `code` is stable for
/// clients; `message` is for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            code,
            message: message.into(),
        }
    }

    pub fn required(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(field, "required", message)
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(field, "invalid", message)
    }

    /// Text the server refuses to carry at all (a control or invisible
    /// formatting character where it could hide or inject something):
    /// a bad request, not merely an unacceptable message.
    pub fn forbidden_character(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(field, FORBIDDEN_CHARACTER, message)
    }

    pub fn too_large(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(field, "too_large", message)
    }

    pub fn too_many(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(field, "too_many", message)
    }
}

impl ValidationError {
    /// A JSON document of the wrong shape, the field named by the error's
    /// path under `prefix` (the whole body when `None`).
    pub fn from_json_error(
        prefix: Option<&str>,
        err: &serde_path_to_error::Error<serde_json::Error>,
    ) -> ValidationError {
        let path = err.path().to_string();
        let path = match (prefix, path.as_str()) {
            (None, ".") => String::new(),
            (None, _) => path,
            (Some(prefix), ".") => prefix.to_owned(),
            (Some(prefix), _) => format!("{prefix}.{path}"),
        };
        let message = err.inner().to_string();
        // serde_path_to_error records an unknown key in the path, but
        // reports a missing one at the enclosing object: its name is only
        // in serde's fixed wording of the message.
        let (code, field) = if message.starts_with("unknown field `") {
            ("unknown_field", path)
        } else if let Some(name) = quoted_after(&message, "missing field `") {
            ("required", join_path(&path, name))
        } else if let Some(name) = quoted_after(&message, "duplicate field `") {
            ("duplicate_field", join_path(&path, name))
        } else {
            ("invalid", path)
        };
        let field = if field.is_empty() {
            "body".to_owned()
        } else {
            field
        };
        ValidationError::new(field, code, message)
    }
}

fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split('`').next()
}

fn join_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

impl EnqueueRequest {
    /// Validates the request against `policy` and gives it a stamp. A
    /// request that fans out (a push to `tokens`) is refused here: it
    /// makes several messages, see [`EnqueueRequest::into_new_messages`].
    pub fn into_new_message(
        self,
        policy: &EnqueuePolicy,
        now: DateTime<Utc>,
    ) -> Result<NewMessage, ValidationError> {
        let mut messages = self.into_new_messages(policy, now)?;
        match (messages.pop(), messages.is_empty()) {
            (Some(message), true) => Ok(message),
            _ => Err(ValidationError::invalid(
                "push.tokens",
                "this request makes one message: give `token`",
            )),
        }
    }

    /// Validates the request against `policy` and makes its messages,
    /// each with its own stamp: one, or one per token of a push to
    /// `tokens`. A fanned-out request's idempotency key becomes one per
    /// message (`<key>#<n>`, n from 0 in the order of `tokens`), so that
    /// sending the request again makes none of them twice.
    pub fn into_new_messages(
        self,
        policy: &EnqueuePolicy,
        now: DateTime<Utc>,
    ) -> Result<Vec<NewMessage>, ValidationError> {
        let channel = self.channel;
        // Which shape a push or chat payload has is its transport's; a
        // transport that cannot be found is reported after the payload.
        let native = self
            .transport
            .as_ref()
            .or_else(|| policy.routes.get(&channel))
            .and_then(|name| policy.transports.get(name))
            .is_some_and(|intake| intake.native.contains(&channel));
        let payloads = self.take_payloads(native)?;
        let fanned_out = self.fans_out();

        let transport = match &self.transport {
            Some(name) => name.clone(),
            None => policy.routes.get(&channel).cloned().ok_or_else(|| {
                ValidationError::required(
                    "transport",
                    format!("no transport given and no route configured for channel `{channel}`"),
                )
            })?,
        };
        let intake = policy.transports.get(&transport).ok_or_else(|| {
            ValidationError::new(
                "transport",
                "unknown_transport",
                format!("no transport named `{transport}` is configured"),
            )
        })?;
        if !intake.channels.contains(&channel) {
            return Err(ValidationError::invalid(
                "transport",
                format!("transport `{transport}` does not deliver `{channel}` messages"),
            ));
        }
        for url in payloads.iter().filter_map(Payload::url) {
            check_url_allowed(url, channel, &transport, intake)?;
        }

        if let Some(category) = &self.category {
            check_category(category).map_err(|e| ValidationError::invalid("category", e))?;
        }
        let priority = self
            .priority
            .or_else(|| {
                self.category
                    .as_ref()
                    .and_then(|c| policy.category_priorities.get(c).copied())
            })
            .unwrap_or(policy.default_priority);

        if let Some(key) = &self.idempotency_key {
            check_idempotency_key(key)
                .map_err(|e| ValidationError::invalid("idempotency_key", e))?;
        }

        let metadata = match self.metadata {
            None | Some(serde_json::Value::Null) => "{}".to_owned(),
            Some(value @ serde_json::Value::Object(_)) => {
                let text = value.to_string();
                if text.len() > MAX_METADATA_BYTES {
                    return Err(ValidationError::too_large(
                        "metadata",
                        format!("metadata is limited to {MAX_METADATA_BYTES} bytes of JSON"),
                    ));
                }
                text
            }
            Some(_) => {
                return Err(ValidationError::invalid(
                    "metadata",
                    "metadata must be a JSON object",
                ));
            }
        };

        // A send time in the past means "now": waiting time is measured from
        // `available_at`, and a backdated one would inflate it.
        let available_at = self.send_at.map_or(now, |at| at.max(now));

        Ok(payloads
            .into_iter()
            .enumerate()
            .map(|(n, payload)| NewMessage {
                id: Stamp::generate(),
                channel,
                transport: transport.clone(),
                category: self.category.clone(),
                priority,
                fingerprint: Fingerprint::of(&payload),
                recipients: payload.recipients(),
                payload: payload.to_json_text(),
                metadata: metadata.clone(),
                idempotency_key: match fanned_out {
                    true => self
                        .idempotency_key
                        .as_ref()
                        .map(|key| format!("{key}#{n}")),
                    false => self.idempotency_key.clone(),
                },
                max_attempts: intake.max_attempts,
                available_at: crate::time::truncate_ms(available_at),
            })
            .collect())
    }

    /// A push to `tokens`, which makes a message per token.
    fn fans_out(&self) -> bool {
        self.channel == Channel::Push
            && self
                .push
                .as_ref()
                .is_some_and(|push| push.get("tokens").is_some())
    }

    /// The payload, or for a push to `tokens` one per token, each
    /// validated.
    fn take_payloads(&self, native: bool) -> Result<Vec<Payload>, ValidationError> {
        let push = match (&self.push, native && self.fans_out()) {
            (Some(push), true) => push,
            _ => return self.take_payload(native).map(|p| vec![p]),
        };
        if push.get("token").is_some() {
            return Err(ValidationError::invalid(
                "push.token",
                "give `token` or `tokens`, not both",
            ));
        }
        let tokens = match push.get("tokens") {
            Some(serde_json::Value::Array(tokens)) if !tokens.is_empty() => tokens,
            _ => {
                return Err(ValidationError::invalid(
                    "push.tokens",
                    format!("a list of 1 to {MAX_PUSH_TOKENS} device tokens"),
                ));
            }
        };
        if tokens.len() > MAX_PUSH_TOKENS {
            return Err(ValidationError::too_many(
                "push.tokens",
                format!("at most {MAX_PUSH_TOKENS} device tokens"),
            ));
        }
        tokens
            .iter()
            .enumerate()
            .map(|(i, token)| {
                let mut one = push.clone();
                if let Some(fields) = one.as_object_mut() {
                    fields.remove("tokens");
                    fields.insert("token".into(), token.clone());
                }
                let named = |err: ValidationError| match err.field.as_str() {
                    "push.token" => ValidationError {
                        field: format!("push.tokens[{i}]"),
                        ..err
                    },
                    _ => err,
                };
                let payload: crate::domain::PushPayload = shaped(&one, "push").map_err(named)?;
                payload.validate("push").map_err(named)?;
                Ok(Payload::Push(payload))
            })
            .collect()
    }

    /// Exactly the payload field named by `channel` must be present; a
    /// push or chat payload in the provider shape when `native`.
    fn take_payload(&self, native: bool) -> Result<Payload, ValidationError> {
        let channel = self.channel;
        let present: Vec<Channel> = [
            (Channel::Email, self.email.is_some()),
            (Channel::Sms, self.sms.is_some()),
            (Channel::Chat, self.chat.is_some()),
            (Channel::Push, self.push.is_some()),
            (Channel::Webhook, self.webhook.is_some()),
        ]
        .into_iter()
        .filter_map(|(c, here)| here.then_some(c))
        .collect();
        if let Some(other) = present.iter().find(|c| **c != channel) {
            return Err(ValidationError::invalid(
                other.as_str(),
                format!("a `{channel}` message cannot carry a `{other}` payload"),
            ));
        }
        let field = channel.as_str();
        let payload = match channel {
            Channel::Email => self.email.clone().map(Payload::Email),
            Channel::Sms => self.sms.clone().map(Payload::Sms),
            Channel::Chat => self
                .chat
                .as_ref()
                .map(|value| match native {
                    true => shaped(value, field).map(Payload::Chat),
                    false => shaped(value, field).map(|p| Payload::Generic(channel, p)),
                })
                .transpose()?,
            Channel::Push => self
                .push
                .as_ref()
                .map(|value| match native {
                    true => shaped(value, field).map(Payload::Push),
                    false => shaped(value, field).map(|p| Payload::Generic(channel, p)),
                })
                .transpose()?,
            Channel::Webhook => self.webhook.clone().map(|p| Payload::Generic(channel, p)),
        }
        .ok_or_else(|| {
            ValidationError::required(
                field,
                format!("a `{channel}` message needs an `{field}` object"),
            )
        })?;
        match &payload {
            Payload::Email(email) => email.validate(field)?,
            Payload::Sms(sms) => sms.validate(field)?,
            Payload::Push(push) => push.validate(field)?,
            Payload::Chat(chat) => chat.validate(field)?,
            Payload::Generic(_, generic) => generic.validate(field)?,
        }
        Ok(payload)
    }
}

/// `value`, the payload object under `field`, read as `T`; a wrong shape
/// is named by its path under `field`.
fn shaped<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
    field: &str,
) -> Result<T, ValidationError> {
    serde_path_to_error::deserialize(value)
        .map_err(|err| ValidationError::from_json_error(Some(field), &err))
}

fn check_url_allowed(
    url: &str,
    channel: Channel,
    transport: &str,
    intake: &TransportIntake,
) -> Result<(), ValidationError> {
    let field = format!("{channel}.url");
    let Some(allowed) = &intake.allowed_url_hosts else {
        return Err(ValidationError::new(
            field,
            "url_not_allowed",
            format!("transport `{transport}` does not accept a per-message url"),
        ));
    };
    let host = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .unwrap_or_default();
    if allowed.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            "url_not_allowed",
            format!("host `{host}` is not on transport `{transport}`'s allow-list"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn policy() -> EnqueuePolicy {
        let mut transports = HashMap::new();
        transports.insert(
            "outbox".to_string(),
            TransportIntake {
                channels: vec![Channel::Email],
                max_attempts: 4,
                allowed_url_hosts: None,
                native: Vec::new(),
            },
        );
        transports.insert(
            "phones".to_string(),
            TransportIntake {
                channels: vec![Channel::Push],
                max_attempts: 3,
                allowed_url_hosts: None,
                native: vec![Channel::Push],
            },
        );
        transports.insert(
            "hooks".to_string(),
            TransportIntake {
                channels: vec![Channel::Chat, Channel::Push, Channel::Webhook],
                max_attempts: 2,
                allowed_url_hosts: Some(vec!["hooks.example.com".into()]),
                native: Vec::new(),
            },
        );
        EnqueuePolicy {
            transports,
            routes: HashMap::from([(Channel::Email, "outbox".to_string())]),
            default_priority: Priority::new(4).unwrap_or_default(),
            category_priorities: BTreeMap::from([("alert".to_string(), Priority::MAX)]),
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn email_request() -> EnqueueRequest {
        serde_json::from_value(serde_json::json!({
            "channel": "email",
            "email": {"from": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"}
        }))
        .expect("a valid request body")
    }

    #[test]
    fn push_payloads_take_their_transport_s_shape_and_name_the_field_at_fault() {
        let push = |transport: &str, push: serde_json::Value| {
            let req: EnqueueRequest = serde_json::from_value(serde_json::json!({
                "channel": "push", "transport": transport, "push": push
            }))
            .expect("a request body");
            req.into_new_message(&policy(), now())
        };
        let native = push(
            "phones",
            serde_json::json!({"token": "device-1", "title": "Hi"}),
        )
        .expect("a provider's push");
        assert_eq!(native.payload, r#"{"token":"device-1","title":"Hi"}"#);
        let generic = push("hooks", serde_json::json!({"payload": {"title": "Hi"}}))
            .expect("a webhook's push");
        assert_eq!(generic.payload, r#"{"payload":{"title":"Hi"}}"#);
        for (transport, body, field, code) in [
            (
                "phones",
                serde_json::json!({"payload": {}}),
                "push.payload",
                "unknown_field",
            ),
            (
                "phones",
                serde_json::json!({"title": "Hi"}),
                "push.token",
                "required",
            ),
            (
                "phones",
                serde_json::json!({"token": 5, "title": "Hi"}),
                "push.token",
                "invalid",
            ),
            (
                "phones",
                serde_json::json!({"token": "d", "badge": -1, "title": "x"}),
                "push.badge",
                "invalid",
            ),
            (
                "phones",
                serde_json::json!({"token": "d"}),
                "push.title",
                "required",
            ),
            (
                "hooks",
                serde_json::json!({"token": "d", "title": "Hi"}),
                "push.title",
                "unknown_field",
            ),
        ] {
            let err = push(transport, body.clone()).expect_err("refused");
            assert_eq!(
                (err.field.as_str(), err.code),
                (field, code),
                "{body}: {err}"
            );
        }
    }

    #[test]
    fn a_push_to_tokens_makes_a_message_per_token_with_a_key_each() {
        let req: EnqueueRequest = serde_json::from_value(serde_json::json!({
            "channel": "push", "transport": "phones", "idempotency_key": "k",
            "push": {"tokens": ["a", "b"], "title": "Hi"}
        }))
        .expect("a request body");
        let made = req
            .clone()
            .into_new_messages(&policy(), now())
            .expect("valid");
        let tokens: Vec<(&str, Option<&str>)> = made
            .iter()
            .map(|m| (m.payload.as_str(), m.idempotency_key.as_deref()))
            .collect();
        assert_eq!(
            tokens,
            [
                (r#"{"token":"a","title":"Hi"}"#, Some("k#0")),
                (r#"{"token":"b","title":"Hi"}"#, Some("k#1")),
            ]
        );
        assert_ne!(made[0].id, made[1].id);
        assert_ne!(made[0].fingerprint, made[1].fingerprint);
        // The one-message entry point refuses what makes several.
        assert_eq!(
            req.into_new_message(&policy(), now()).unwrap_err().field,
            "push.tokens"
        );
    }

    #[test]
    fn routes_pick_the_transport_and_categories_the_priority() {
        let mut req = email_request();
        req.category = Some("alert".into());
        let msg = req.into_new_message(&policy(), now()).expect("valid");
        assert_eq!(msg.transport, "outbox");
        assert_eq!(msg.priority, Priority::MAX);
        assert_eq!(msg.max_attempts, 4);
        assert_eq!(msg.available_at, now());
        assert_eq!(msg.metadata, "{}");
    }

    #[test]
    fn unknown_transport_and_wrong_channel_are_refused() {
        let mut req = email_request();
        req.transport = Some("nope".into());
        let err = req.into_new_message(&policy(), now()).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.code),
            ("transport", "unknown_transport")
        );

        let mut req = email_request();
        req.transport = Some("hooks".into());
        assert_eq!(
            req.into_new_message(&policy(), now()).unwrap_err().field,
            "transport"
        );
    }

    #[test]
    fn the_payload_must_match_the_channel() {
        let mut req = email_request();
        req.channel = Channel::Sms;
        assert_eq!(
            req.into_new_message(&policy(), now()).unwrap_err().field,
            "email"
        );
        let req: EnqueueRequest = serde_json::from_value(serde_json::json!({"channel": "email"}))
            .expect("a parsable body");
        let err = req.into_new_message(&policy(), now()).unwrap_err();
        assert_eq!((err.field.as_str(), err.code), ("email", "required"));
    }

    #[test]
    fn per_message_urls_need_the_allow_list() {
        let body = |url: &str| -> EnqueueRequest {
            serde_json::from_value(serde_json::json!({
                "channel": "webhook", "transport": "hooks",
                "webhook": {"payload": {"x": 1}, "url": url}
            }))
            .expect("a valid request body")
        };
        assert!(
            body("https://hooks.example.com/a")
                .into_new_message(&policy(), now())
                .is_ok()
        );
        let err = body("http://169.254.169.254/latest")
            .into_new_message(&policy(), now())
            .unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.code),
            ("webhook.url", "url_not_allowed")
        );
    }

    #[test]
    fn scheduled_sends_keep_their_time_and_past_ones_mean_now() {
        let mut req = email_request();
        req.send_at = Some(now() + chrono::Duration::hours(1));
        let msg = req.into_new_message(&policy(), now()).expect("valid");
        assert_eq!(msg.available_at, now() + chrono::Duration::hours(1));
        let mut req = email_request();
        req.send_at = Some(now() - chrono::Duration::hours(1));
        assert_eq!(
            req.into_new_message(&policy(), now())
                .expect("valid")
                .available_at,
            now()
        );
    }

    #[test]
    fn metadata_must_be_an_object_and_keys_sane() {
        let mut req = email_request();
        req.metadata = Some(serde_json::json!([1, 2]));
        assert_eq!(
            req.into_new_message(&policy(), now()).unwrap_err().field,
            "metadata"
        );
        let mut req = email_request();
        req.idempotency_key = Some("a\nb".into());
        assert_eq!(
            req.into_new_message(&policy(), now()).unwrap_err().field,
            "idempotency_key"
        );
        let mut req = email_request();
        req.category = Some("has space".into());
        assert_eq!(
            req.into_new_message(&policy(), now()).unwrap_err().field,
            "category"
        );
    }

    #[test]
    fn unknown_fields_and_bad_priorities_do_not_parse() {
        let parsed = serde_json::from_value::<EnqueueRequest>(
            serde_json::json!({"channel": "email", "prio": 1}),
        );
        assert!(parsed.is_err());
        let parsed = serde_json::from_value::<EnqueueRequest>(
            serde_json::json!({"channel": "email", "priority": 10}),
        );
        assert!(parsed.is_err());
    }
}
