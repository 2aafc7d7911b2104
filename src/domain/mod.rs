//! The data Herald talks about: messages, their events, statuses, channels,
//! priorities, stamps and fingerprints. Plain data and pure functions; no I/O.

mod delivery;
mod fingerprint;
mod native;
mod payload;
mod request;
mod text;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

pub use delivery::{DeliveryState, DeliveryStatus, RecipientDelivery, Report};
pub use fingerprint::Fingerprint;
pub use native::{ChatPayload, PushPayload};
pub use payload::{
    Address, Attachment, EmailPayload, GenericPayload, MAX_ATTACHMENTS, MAX_RECIPIENTS, Payload,
    SmsPayload, email_without, normalise_any_recipient, normalise_recipient,
};
pub use request::{
    Category, EnqueuePolicy, EnqueueRequest, FORBIDDEN_CHARACTER, IdempotencyKey, MAX_PUSH_TOKENS,
    NewMessage, TransportIntake, ValidationError, check_category, check_idempotency_key,
};

/// A message's identity for life: a ULID given at enqueue. Retries,
/// failovers and replays are events under the same stamp, never new stamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Stamp(pub Ulid);

impl Stamp {
    /// A new stamp: see [`monotonic_ulid`].
    pub fn generate() -> Self {
        Stamp(monotonic_ulid())
    }
}

/// A ULID greater than every one this process made before, so that what is
/// listed by id (the messages of one batch, alerts opened in one
/// millisecond) lists in the order it was made rather than by random bits.
pub fn monotonic_ulid() -> Ulid {
    static GENERATOR: std::sync::Mutex<ulid::Generator> =
        std::sync::Mutex::new(ulid::Generator::new());
    let mut generator = GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Overflow takes 2^80 ids in one millisecond; a plain ULID is still
    // unique then.
    generator.generate().unwrap_or_else(|_| Ulid::generate())
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Stamp {
    type Err = ulid::DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // 26 base32 digits hold 130 bits: a first digit above 7 overflows
        // the 128-bit ULID, and the decoder would silently drop the excess,
        // making `8…` name the same message as `0…`.
        if s.as_bytes().first().is_some_and(|first| *first > b'7') {
            return Err(ulid::DecodeError::InvalidChar);
        }
        Ulid::from_string(s).map(Stamp)
    }
}

/// What [`Stamp::from_str`] accepts: 26 Crockford base32 digits, either
/// case, the first at most 7.
pub const STAMP_PATTERN: &str = "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$";

impl utoipa::PartialSchema for Stamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .pattern(Some(STAMP_PATTERN))
            .description(Some("A message's stamp: a ULID, 26 characters"))
            .examples(["01JDQ4Z8Y7M3V2K9W6T5R4P3N2"])
            .into()
    }
}

impl utoipa::ToSchema for Stamp {}

/// Proof that a worker holds the current claim on a message. Each claim
/// gets a new token; an outcome reported under an older token is refused,
/// so a worker whose lease expired cannot overwrite newer state (fencing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClaimToken(pub Ulid);

impl ClaimToken {
    pub fn generate() -> Self {
        ClaimToken(Ulid::generate())
    }
}

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$variant_meta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        // Read from a string only: serde's derived enums also take the map
        // form (`{"chat": null}`) and report a number as a syntax error.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case", try_from = "String")]
        pub enum $name { $($(#[$variant_meta])* $variant),+ }

        impl TryFrom<String> for $name {
            type Error = UnknownVariant;
            fn try_from(text: String) -> Result<Self, Self::Error> {
                text.parse()
            }
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownVariant {
                        kind: stringify!($name),
                        value: other.to_owned(),
                        expected: &[$($text),+],
                    }),
                }
            }
        }
    };
}

text_enum! {
    /// What kind of notification a message is; decides which payload it
    /// carries and which transports can deliver it.
    Channel { Email = "email", Sms = "sms", Chat = "chat", Push = "push", Webhook = "webhook" }
}

text_enum! {
    /// Where a message is in its life. `queued` and `processing` are live;
    /// the others are final (a dead message can be replayed). `suppressed`:
    /// every recipient was on the suppression list at enqueue, so nothing
    /// was sent.
    Status { Queued = "queued", Processing = "processing", Sent = "sent", Dead = "dead", Cancelled = "cancelled", Suppressed = "suppressed" }
}

text_enum! {
    /// What happened to a message, one row in `message_events` per step.
    /// An attempt is one event: the one that ends it (`sent`,
    /// `attempt_failed`, `deferred`, `lease_expired`) carries its start.
    EventKind {
        Queued = "queued",
        /// Legacy, no longer written: stores from before one event per
        /// attempt keep a row per claim, and it stays readable.
        Claimed = "claimed",
        Sent = "sent",
        AttemptFailed = "attempt_failed",
        RetryScheduled = "retry_scheduled",
        DeadLettered = "dead_lettered",
        Replayed = "replayed",
        Cancelled = "cancelled",
        LeaseExpired = "lease_expired",
        Deferred = "deferred",
        /// A recipient left out at enqueue: it is on the suppression list
        /// (`detail`: recipient, reason).
        Suppressed = "suppressed",
        // What the provider reported after hand-over (delivery feedback):
        // `detail` has the recipient, the provider's reason and time.
        Delivered = "delivered",
        Bounced = "bounced",
        Complained = "complained",
        Opened = "opened",
        Clicked = "clicked",
        Unsubscribed = "unsubscribed",
        Rejected = "rejected",
        DeferredDownstream = "deferred_downstream",
    }
}

/// A text that names none of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}`, expected one of: {}", expected.join(", "))]
pub struct UnknownVariant {
    pub kind: &'static str,
    pub value: String,
    pub expected: &'static [&'static str],
}

/// 0 (lowest) to 9 (highest); higher priorities are claimed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Priority(u8);

impl Priority {
    pub const MIN: Priority = Priority(0);
    pub const MAX: Priority = Priority(9);

    pub fn new(value: i64) -> Option<Priority> {
        u8::try_from(value)
            .ok()
            .filter(|v| *v <= Self::MAX.0)
            .map(Priority)
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

/// A whole JSON number, written `8` or `8.0`: JSON Schema, and so the
/// published OpenAPI description, counts both as the integer 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WholeNumber(pub i64);

impl<'de> Deserialize<'de> for WholeNumber {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Whole;
        impl serde::de::Visitor<'_> for Whole {
            type Value = WholeNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<WholeNumber, E> {
                Ok(WholeNumber(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<WholeNumber, E> {
                i64::try_from(v)
                    .map(WholeNumber)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<WholeNumber, E> {
                // 2^63 is exact in f64; the range check keeps `as` from saturating.
                let in_range = v >= -(2f64.powi(63)) && v < 2f64.powi(63);
                if v.fract() == 0.0 && in_range {
                    Ok(WholeNumber(v as i64))
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
                }
            }
        }
        deserializer.deserialize_any(Whole)
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let WholeNumber(value) = WholeNumber::deserialize(deserializer)?;
        Priority::new(value).ok_or_else(|| {
            serde::de::Error::custom(format!("priority must be 0 to 9, got {value}"))
        })
    }
}

/// One notification as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub id: Stamp,
    pub channel: Channel,
    pub transport: String,
    pub category: Option<String>,
    pub status: Status,
    pub priority: Priority,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub fingerprint: Fingerprint,
    pub idempotency_key: Option<String>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub created_at: DateTime<Utc>,
    pub available_at: DateTime<Utc>,
    pub lease_until: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub claim_token: Option<ClaimToken>,
    pub sent_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// What the provider reported after hand-over.
    pub delivery: DeliveryStatus,
}

/// One step in a message's life.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub kind: EventKind,
    pub at: DateTime<Utc>,
    /// The attempt this event belongs to (0 before the first claim).
    pub attempt: u32,
    /// The transport that acted; for a group, the member used.
    pub transport: Option<String>,
    /// When the attempt this event ends began (its claim), on the events
    /// that end a claim; none on the others and on rows written before
    /// the column existed.
    pub started_at: Option<DateTime<Utc>>,
    /// The transport call's duration.
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    pub detail: Option<serde_json::Value>,
}

/// A message with its events, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageWithEvents {
    #[serde(flatten)]
    pub message: Message,
    pub events: Vec<Event>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_increase_in_the_order_they_are_made() {
        let stamps: Vec<Stamp> = (0..1000).map(|_| Stamp::generate()).collect();
        assert!(stamps.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn priority_accepts_zero_to_nine_only() {
        assert_eq!(Priority::new(0), Some(Priority::MIN));
        assert_eq!(Priority::new(9), Some(Priority::MAX));
        assert_eq!(Priority::new(10), None);
        assert_eq!(Priority::new(-1), None);
        assert!(serde_json::from_str::<Priority>("12").is_err());
        assert_eq!(
            serde_json::from_str::<Priority>("8.0").ok(),
            Priority::new(8)
        );
        assert!(serde_json::from_str::<Priority>("8.5").is_err());
        assert!(serde_json::from_str::<Priority>("\"8\"").is_err());
    }

    #[test]
    fn enums_round_trip_through_their_text() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(*kind));
        }
        for status in Status::ALL {
            assert_eq!(
                serde_json::to_string(status).ok(),
                Some(format!("\"{status}\""))
            );
        }
        let err = "fax".parse::<Channel>().unwrap_err();
        assert!(err.to_string().contains("email, sms, chat, push, webhook"));
    }

    #[test]
    fn stamps_parse_back_from_their_text() {
        let stamp = Stamp::generate();
        assert_eq!(stamp.to_string().parse::<Stamp>().ok(), Some(stamp));
        assert!("not-a-ulid".parse::<Stamp>().is_err());
        let lower = stamp.to_string().to_lowercase();
        assert_eq!(lower.parse::<Stamp>().ok(), Some(stamp));
    }

    #[test]
    fn a_stamp_that_overflows_128_bits_is_refused() {
        assert!("7ZZZZZZZZZZZZZZZZZZZZZZZZZ".parse::<Stamp>().is_ok());
        // Without the check this decodes to the same stamp as `0000…`.
        assert!("80000000000000000000000000".parse::<Stamp>().is_err());
        assert!("ZZZZZZZZZZZZZZZZZZZZZZZZZZ".parse::<Stamp>().is_err());
    }
}
