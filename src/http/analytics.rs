//! The analytics routes, `/api/queue/analytics` and `/api/analytics/*`:
//! query parameters in, figures from [`crate::analytics`] out.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};

use super::auth::{Authorized, ReadRole};
use super::error::ErrorBody;
use super::extract::Query;
use super::openapi::{Bucket, TransportName, Window};
use super::{ApiError, AppState};
use crate::analytics::{
    AnalyticsQuery, MAX_WINDOW, Scope, TransportLimits, bottlenecks, deliverability,
    failure_report, load_queue_analytics, message_flow, parse_span, transport_performance,
    window_bounds,
};
use crate::domain::{Category, Channel, check_category};

/// Buckets a throughput series may use.
pub const BUCKETS: [&str; 5] = ["1m", "5m", "15m", "1h", "1d"];
/// Window when none is asked for.
const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);

/// What `window` accepts, exactly as [`window_and_scope`] does: a whole
/// number of s, m, h or d from 1m to 30d (leading zeros allowed). Spelled
/// out per unit because JSON Schema cannot compare numbers in a string.
pub const WINDOW_PATTERN: &str = concat!(
    "^0*(?:",
    "(?:[6-9][0-9]|[1-9][0-9]{2,5}|1[0-9]{6}|2[0-4][0-9]{5}|25[0-8][0-9]{4}|259[01][0-9]{3}|2592000)s",
    "|(?:[1-9][0-9]{0,3}|[1-3][0-9]{4}|4[0-2][0-9]{3}|43[01][0-9]{2}|43200)m",
    "|(?:[1-9][0-9]?|[1-6][0-9]{2}|7[01][0-9]|720)h",
    "|(?:[1-9]|[12][0-9]|30)d",
    ")$"
);

/// The query parameters every analytics route takes.
const COMMON: [&str; 4] = ["window", "transport", "channel", "category"];

/// `window` (1m to 30d, default 1h), `transport` (must be configured),
/// `channel` (one of the channels) and `category`.
fn window_and_scope(query: &Query, state: &AppState) -> Result<(Duration, Scope), ApiError> {
    let window = query
        .get("window", |raw| {
            parse_span(raw)
                .filter(|w| *w >= Duration::from_secs(60) && *w <= MAX_WINDOW)
                .ok_or_else(|| {
                    format!("`{raw}` is not a window from 1m to 30d (e.g. 15m, 1h, 24h, 7d)")
                })
        })?
        .unwrap_or(DEFAULT_WINDOW);
    let transport = query.text("transport");
    if let Some(name) = transport
        .as_ref()
        .filter(|name| !state.settings.transports.contains_key(*name))
    {
        return Err(ApiError::bad_request(
            "unknown_transport",
            "transport",
            format!("no transport named `{name}`"),
        ));
    }
    let channel = query.get("channel", |raw| {
        raw.parse::<Channel>()
            .map(|c| c.as_str().to_owned())
            .map_err(|_| format!("`{raw}` is not one of email, sms, chat, push, webhook"))
    })?;
    let category = query.get("category", |raw| {
        check_category(raw).map(|()| raw.to_owned())
    })?;
    Ok((
        window,
        Scope {
            transport,
            channel,
            category,
        },
    ))
}

/// The common parameters and `bucket` (one of [`BUCKETS`], default 1m),
/// for the routes with a series.
fn series_query(req: &HttpRequest, state: &AppState) -> Result<AnalyticsQuery, ApiError> {
    let query = Query::parse(req, &[&COMMON[..], &["bucket"]].concat())?;
    let (window, scope) = window_and_scope(&query, state)?;
    let bucket = query
        .get("bucket", |raw| {
            BUCKETS
                .contains(&raw)
                .then(|| parse_span(raw))
                .flatten()
                .ok_or_else(|| format!("`{raw}` is not one of {}", BUCKETS.join(", ")))
        })?
        .unwrap_or(Duration::from_secs(60));
    Ok(AnalyticsQuery {
        window,
        bucket,
        scope,
    })
}

/// Queue analytics over a window: depth by transport and priority,
/// processing rate over 1/5/15 minutes, average wait, failure rate,
/// throughput with a series, worker status, per-transport breakdown.
/// Answered from rollups and indexed counts only.
#[utoipa::path(
    get,
    path = "/api/queue/analytics",
    tag = "analytics",
    params(
        ("window" = Option<Window>, Query, description = "How far back: e.g. 15m, 1h (default), 24h, 7d; at most 30d"),
        ("bucket" = Option<Bucket>, Query, description = "Series bucket: 1m (default), 5m, 15m, 1h, 1d"),
        ("transport" = Option<TransportName>, Query, description = "Only this transport"),
        ("channel" = Option<Channel>, Query, description = "Only messages of this channel"),
        ("category" = Option<Category>, Query, description = "Only messages of this category"),
    ),
    responses(
        (status = 200, body = crate::analytics::QueueAnalytics),
        (status = 400, description = "A query parameter is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` role", body = ErrorBody),
        (status = 503, description = "Storage unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn queue(
    _: Authorized<ReadRole>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = series_query(&req, &state)?;
    let now = state.clock.now();
    let analytics =
        load_queue_analytics(state.storage.as_ref(), state.engine.as_ref(), &query, now).await?;
    Ok(HttpResponse::Ok().json(analytics))
}

/// Per transport over a window: attempts, success rate, latency
/// p50/p95/p99 (estimated from the rollups' histogram), attempts per
/// message, a reliability score (README) and cost from the transport's
/// `cost_per_message`.
#[utoipa::path(
    get,
    path = "/api/analytics/transport-performance",
    tag = "analytics",
    params(
        ("window" = Option<Window>, Query, description = "How far back: e.g. 15m, 1h (default), 24h, 7d; at most 30d"),
        ("transport" = Option<TransportName>, Query, description = "Only this transport"),
        ("channel" = Option<Channel>, Query, description = "Only messages of this channel"),
        ("category" = Option<Category>, Query, description = "Only messages of this category"),
    ),
    responses(
        (status = 200, body = crate::analytics::PerformanceReport),
        (status = 400, description = "A query parameter is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` role", body = ErrorBody),
        (status = 503, description = "Storage unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn transport_performance_report(
    _: Authorized<ReadRole>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &COMMON)?;
    let (window, scope) = window_and_scope(&query, &state)?;
    let now = state.clock.now();
    let (from, to) = window_bounds(now, window);
    let minutes = state.storage.rollup_totals(from, to).await?;
    // Group members appear under their own names: they make the attempts.
    let transports: Vec<(String, String, Option<f64>)> = state
        .settings
        .transports
        .values()
        .map(|t| {
            (
                t.name.clone(),
                t.kind.name().to_owned(),
                t.delivery.cost_per_message,
            )
        })
        .collect();
    let report = transport_performance(window, now, &minutes, &transports, &scope);
    Ok(HttpResponse::Ok().json(report))
}

/// Failure patterns over a window: failed attempts by transport and error
/// class, the most frequent normalised errors, the retry success rate (of
/// messages that failed at least once and finished, the share sent), the
/// attempts finished messages took, and the dead-letter queue now.
#[utoipa::path(
    get,
    path = "/api/queue/failures",
    tag = "analytics",
    params(
        ("window" = Option<Window>, Query, description = "How far back: e.g. 15m, 1h (default), 24h, 7d; at most 30d"),
        ("transport" = Option<TransportName>, Query, description = "Only this transport"),
        ("channel" = Option<Channel>, Query, description = "Only messages of this channel"),
        ("category" = Option<Category>, Query, description = "Only messages of this category"),
    ),
    responses(
        (status = 200, body = crate::analytics::FailureReport),
        (status = 400, description = "A query parameter is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` role", body = ErrorBody),
        (status = 503, description = "Storage unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn failures(
    _: Authorized<ReadRole>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &COMMON)?;
    let (window, scope) = window_and_scope(&query, &state)?;
    let now = state.clock.now();
    let (from, to) = window_bounds(now, window);
    let minutes = state.storage.rollup_totals(from, to).await?;
    let failures = state.storage.failure_counts(from, to).await?;
    let dead = state.storage.dead_letter_summary().await?;
    let report = failure_report(window, now, &minutes, &failures, &dead, &scope);
    Ok(HttpResponse::Ok().json(report))
}

/// Where the time goes, per transport, over a window: queue wait vs
/// processing vs delivery, time held by the rate limiter, breaker-open
/// time, concurrency saturation, the oldest queued message, and findings
/// in plain language naming the setting to change (README,
/// "Bottlenecks").
#[utoipa::path(
    get,
    path = "/api/queue/bottlenecks",
    tag = "analytics",
    params(
        ("window" = Option<Window>, Query, description = "How far back: e.g. 15m, 1h (default), 24h, 7d; at most 30d"),
        ("transport" = Option<TransportName>, Query, description = "Only this transport"),
        ("channel" = Option<Channel>, Query, description = "Only messages of this channel"),
        ("category" = Option<Category>, Query, description = "Only messages of this category"),
    ),
    responses(
        (status = 200, body = crate::analytics::BottleneckReport),
        (status = 400, description = "A query parameter is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` role", body = ErrorBody),
        (status = 503, description = "Storage unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn bottleneck_report(
    _: Authorized<ReadRole>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &COMMON)?;
    let (window, scope) = window_and_scope(&query, &state)?;
    let now = state.clock.now();
    let (from, to) = window_bounds(now, window);
    let totals = state.storage.rollup_totals(from, to).await?;
    let recent = state
        .storage
        .minute_metrics(from.max(to - chrono::Duration::minutes(15)), to)
        .await?;
    let depth = state.storage.queue_depth().await?;
    let statuses = match state.engine.as_ref() {
        Some(engine) => engine.status().await.unwrap_or_default(),
        None => Vec::new(),
    };
    let transports: Vec<TransportLimits> = state
        .settings
        .transports
        .values()
        .map(|t| TransportLimits {
            name: t.name.clone(),
            kind: t.kind.name().to_owned(),
            rate_limit: t.delivery.rate_limit.get(),
            concurrency: t.delivery.concurrency.get(),
            members: t.kind.members().to_vec(),
        })
        .collect();
    let report = bottlenecks(
        window,
        now,
        &totals,
        &recent,
        &depth,
        &transports,
        &statuses,
        &scope,
    );
    Ok(HttpResponse::Ok().json(report))
}

/// The end-to-end journey over a window: queue wait, processing,
/// delivery and total time (p50/p95/p99, average, max), overall, per
/// transport and per channel, with the counts at each stage.
#[utoipa::path(
    get,
    path = "/api/analytics/message-flow",
    tag = "analytics",
    params(
        ("window" = Option<Window>, Query, description = "How far back: e.g. 15m, 1h (default), 24h, 7d; at most 30d"),
        ("transport" = Option<TransportName>, Query, description = "Only this transport"),
        ("channel" = Option<Channel>, Query, description = "Only messages of this channel"),
        ("category" = Option<Category>, Query, description = "Only messages of this category"),
    ),
    responses(
        (status = 200, body = crate::analytics::MessageFlow),
        (status = 400, description = "A query parameter is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` role", body = ErrorBody),
        (status = 503, description = "Storage unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn message_flow_report(
    _: Authorized<ReadRole>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = Query::parse(&req, &COMMON)?;
    let (window, scope) = window_and_scope(&query, &state)?;
    let now = state.clock.now();
    let (from, to) = window_bounds(now, window);
    let minutes = state.storage.rollup_totals(from, to).await?;
    let depth = state.storage.queue_depth().await?;
    Ok(HttpResponse::Ok().json(message_flow(window, now, &minutes, &depth, &scope)))
}

/// What providers reported over a window: delivered, bounced (hard,
/// soft), complained, opened, clicked and unsubscribed, counted in the
/// minute received, and their rates over the messages sent in the window;
/// per transport, as a series, and the most frequent bounce reasons and
/// recipient domains. Answered from rollups only.
#[utoipa::path(
    get,
    path = "/api/analytics/deliverability",
    tag = "analytics",
    params(
        ("window" = Option<Window>, Query, description = "How far back: e.g. 15m, 1h (default), 24h, 7d; at most 30d"),
        ("bucket" = Option<Bucket>, Query, description = "Series bucket: 1m (default), 5m, 15m, 1h, 1d"),
        ("transport" = Option<TransportName>, Query, description = "Only this transport (reports count under the transport whose webhook received them)"),
        ("channel" = Option<Channel>, Query, description = "Only messages of this channel"),
        ("category" = Option<Category>, Query, description = "Only messages of this category"),
    ),
    responses(
        (status = 200, body = crate::analytics::DeliverabilityReport),
        (status = 400, description = "A query parameter is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` role", body = ErrorBody),
        (status = 503, description = "Storage unreachable", body = ErrorBody),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn deliverability_report(
    _: Authorized<ReadRole>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = series_query(&req, &state)?;
    let now = state.clock.now();
    let (from, to) = window_bounds(now, query.window);
    let totals = state.storage.rollup_totals(from, to).await?;
    // As the queue analytics' series: hourly rows for whole-hour buckets.
    let hourly = query.bucket.as_secs().is_multiple_of(3600);
    let series = state
        .storage
        .series_counts(from, to, hourly, &query.scope)
        .await?;
    let bounces = state.storage.bounce_counts(from, to).await?;
    let report = deliverability(&query, now, &totals, &series, &bounces);
    Ok(HttpResponse::Ok().json(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the server takes as a window.
    fn accepted(raw: &str) -> bool {
        parse_span(raw).is_some_and(|w| w >= Duration::from_secs(60) && w <= MAX_WINDOW)
    }

    #[test]
    fn the_published_window_pattern_accepts_exactly_what_the_server_does() {
        let pattern = regex::Regex::new(WINDOW_PATTERN).expect("a valid pattern");
        let mut tried = 0;
        for (unit, limit) in [("s", 2_700_000u64), ("m", 45_000), ("h", 800), ("d", 40)] {
            for n in (0..=limit).filter(|n| *n < 2000 || n % 997 == 0 || n.abs_diff(limit) < 5) {
                for raw in [format!("{n}{unit}"), format!("0{n}{unit}")] {
                    assert_eq!(pattern.is_match(&raw), accepted(&raw), "{raw}");
                    tried += 1;
                }
            }
        }
        for edge in [
            "59s", "60s", "2592000s", "2592001s", "43200m", "43201m", "720h", "721h", "30d", "31d",
            "1w", "h", "", "1.5h", "-1h", "1H", "99s", "100s", "999999s", "1000000s", "1999999s",
            "2000000s", "2499999s", "2500000s", "2589999s", "2590000s", "2591999s", "9999m",
            "10000m", "39999m", "40000m", "42999m", "43000m", "43199m", "99h", "100h", "699h",
            "700h", "719h", "9d", "10d", "29d",
        ] {
            assert_eq!(pattern.is_match(edge), accepted(edge), "{edge}");
        }
        assert!(tried > 10_000);
    }
}
