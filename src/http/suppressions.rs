//! `/api/suppressions`: the suppression list, read (role `read`), added to
//! and removed from by hand (role `admin`). Provider reports and
//! recipient-gone dead letters add to it on their own (storage's).

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{AdminRole, Authorized, ReadRole};
use super::error::ErrorBody;
use super::extract::{JsonBody, Query};
use super::messages::page_limit;
use super::openapi::TransportName;
use super::{ApiError, AppState};
use crate::domain::{
    Channel, Stamp, ValidationError, normalise_any_recipient, normalise_recipient,
};
use crate::storage::{Suppression, SuppressionCursor, SuppressionFilter};

/// Longest address: a device token's length. The patterns in the spec
/// below are what [`parse_cursor`] and [`add`] check, character for
/// character.
pub const MAX_ADDRESS: usize = 4096;

/// One entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionEntry {
    pub channel: Channel,
    pub address: String,
    /// The one transport it holds for; `null` for all of them.
    pub transport: Option<String>,
    /// `hard_bounce`, `soft_bounce`, `complaint`, `unsubscribe`,
    /// `recipient_invalid`, `recipient_unsubscribed`, `manual`, or what was
    /// given by hand.
    pub reason: String,
    /// The message whose report put it here.
    #[schema(value_type = Option<Stamp>)]
    pub source_stamp: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; `null`: until removed.
    pub expires_at: Option<String>,
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl From<Suppression> for SuppressionEntry {
    fn from(entry: Suppression) -> Self {
        SuppressionEntry {
            channel: entry.channel,
            address: entry.address,
            transport: entry.transport,
            reason: entry.reason,
            source_stamp: entry.source_stamp.map(|s| s.to_string()),
            created_at: rfc3339(entry.created_at),
            expires_at: entry.expires_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionPage {
    pub items: Vec<SuppressionEntry>,
    /// Pass as `after=` for the next page; `null` on the last page.
    pub next: Option<String>,
}

/// `POST /api/suppressions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSuppression {
    pub channel: Channel,
    /// The address, number, device token or chat channel; an email
    /// address is stored lower-cased, without a display name.
    #[schema(min_length = 1, max_length = 4096, pattern = "^[^\\x00-\\x20\\x7F]+$")]
    pub address: String,
    /// Default `manual`.
    #[serde(default)]
    #[schema(pattern = "^[a-z][a-z0-9_]{0,63}$")]
    pub reason: Option<String>,
    /// When it stops holding; default never.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Holds only for this transport; default every transport.
    #[serde(default)]
    #[schema(value_type = Option<TransportName>)]
    pub transport: Option<String>,
}

/// The suppression list, by channel and address, cursor-paged.
#[utoipa::path(
    get,
    path = "/api/suppressions",
    tag = "suppressions",
    params(
        ("channel" = Option<Channel>, Query, description = "email | sms | chat | push | webhook"),
        ("address" = Option<String>, Query, description = "Entries of this address (an email address matches whatever its case)"),
        ("reason" = Option<String>, Query, description = "Entries of this reason"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Page size, 1 to 1000, default 50"),
        ("after" = Option<String>, Query, pattern = "^(email|sms|chat|push|webhook):[A-Za-z0-9_-]*:[^\\x00-\\x20\\x7F]*$", description = "The `next` cursor of the previous page"),
    ),
    responses(
        (status = 200, body = SuppressionPage),
        (status = 400, description = "A query parameter is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` role", body = ErrorBody),
        (status = 503, description = "Storage unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn list(
    _: Authorized<ReadRole>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &["channel", "address", "reason", "limit", "after"])?;
    let channel = query.get("channel", |s| {
        s.parse::<Channel>().map_err(|e| e.to_string())
    })?;
    let address = query
        .text("address")
        .map(|a| normalise_any_recipient(channel, &a));
    let filter = SuppressionFilter {
        channel,
        address,
        reason: query.text("reason"),
    };
    let limit = page_limit(&query)?;
    let after = query.get("after", |s| {
        parse_cursor(s)
            .ok_or_else(|| "not a cursor: pass the `next` value of the previous page".to_owned())
    })?;
    let mut items = state
        .storage
        .list_suppressions(&filter, after, limit + 1, state.clock.now())
        .await?;
    let next = if items.len() > limit {
        items.truncate(limit);
        items
            .last()
            .map(|e| format!("{}:{}:{}", e.channel, e.scope(), e.address))
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(SuppressionPage {
        items: items.into_iter().map(SuppressionEntry::from).collect(),
        next,
    }))
}

/// The `after` cursor, `channel:scope:address` (scope empty for an entry
/// of every transport), read.
fn parse_cursor(text: &str) -> Option<SuppressionCursor> {
    let (channel, rest) = text.split_once(':')?;
    let (scope, address) = rest.split_once(':')?;
    let channel: Channel = channel.parse().ok()?;
    let scope_ok = scope
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let address_ok = address.chars().all(|c| c > ' ' && c != '\x7f');
    (scope_ok && address_ok).then(|| {
        (
            channel.as_str().to_owned(),
            address.to_owned(),
            scope.to_owned(),
        )
    })
}

/// Put an address on the suppression list by hand (or replace its entry).
#[utoipa::path(
    post,
    path = "/api/suppressions",
    tag = "suppressions",
    request_body = NewSuppression,
    responses(
        (status = 201, description = "On the list", body = SuppressionEntry),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` role", body = ErrorBody),
        (status = 413, description = "Body larger than `server.max_body_bytes`", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "Invalid entry; `field` names the problem", body = ErrorBody),
        (status = 503, description = "Storage unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn add(
    _: Authorized<AdminRole>,
    state: web::Data<AppState>,
    body: JsonBody<NewSuppression>,
) -> Result<HttpResponse, ApiError> {
    let new = body.0;
    let address_ok = !new.address.is_empty()
        && new.address.chars().count() <= MAX_ADDRESS
        && new.address.chars().all(|c| c > ' ' && c != '\x7f');
    if !address_ok {
        return Err(ValidationError::invalid(
            "address",
            format!("1 to {MAX_ADDRESS} characters without spaces or control characters"),
        )
        .into());
    }
    let reason = new.reason.unwrap_or_else(|| "manual".to_owned());
    let reason_ok = reason.len() <= 64
        && reason.starts_with(|c: char| c.is_ascii_lowercase())
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !reason_ok {
        return Err(ValidationError::invalid(
            "reason",
            "a lower-case word of letters, digits and `_`, at most 64",
        )
        .into());
    }
    if let Some(transport) = &new.transport
        && !state.settings.transports.contains_key(transport)
    {
        return Err(ValidationError::invalid(
            "transport",
            format!("`{transport}` is not a configured transport"),
        )
        .into());
    }
    let entry = Suppression {
        channel: new.channel,
        address: normalise_recipient(new.channel, &new.address),
        transport: new.transport,
        reason,
        source_stamp: None,
        created_at: state.clock.now(),
        expires_at: new.expires_at,
    };
    state.storage.add_suppression(entry.clone()).await?;
    Ok(HttpResponse::Created().json(SuppressionEntry::from(entry)))
}

/// Take an address off the suppression list, whatever transport its
/// entries hold for.
#[utoipa::path(
    delete,
    path = "/api/suppressions/{channel}/{address}",
    tag = "suppressions",
    params(
        ("channel" = Channel, Path, description = "email | sms | chat | push | webhook"),
        ("address" = String, Path, description = "The address, number, token or chat channel"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Malformed channel", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `admin` role", body = ErrorBody),
        (status = 404, description = "Not on the list", body = ErrorBody),
        (status = 503, description = "Storage unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn remove(
    _: Authorized<AdminRole>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (channel, address) = path.into_inner();
    let channel: Channel = channel
        .parse()
        .map_err(|e: crate::domain::UnknownVariant| {
            ApiError::bad_request("invalid", "channel", e.to_string())
        })?;
    let address = normalise_recipient(channel, &address);
    match state.storage.remove_suppression(channel, &address).await? {
        0 => Err(ApiError::NotFound(format!(
            "{channel} `{address}` is not on the suppression list"
        ))),
        _ => Ok(HttpResponse::NoContent().finish()),
    }
}
