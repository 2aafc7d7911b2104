//! `POST /api/feedback/{transport}`: the providers' event webhooks. The
//! request is verified by the transport's own scheme (its provider's, or
//! Standard Webhooks over Herald's event JSON) rather than an API key,
//! then its events are recorded in one write. Refusals record nothing.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::extract::raw_body;
use super::{ApiError, AppState};
use crate::feedback::{FeedbackSource, Inbound, Refusal};
use crate::storage::FeedbackBatch;
use crate::telemetry;

/// What a feedback request came to.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedbackAnswer {
    /// Events read from the request.
    pub received: usize,
    /// Stored under their message.
    pub applied: usize,
    /// Stored already (the same provider event): skipped.
    pub duplicates: usize,
    /// Whose message was not found (yet): kept and matched again.
    pub unmatched: usize,
    /// Events the provider sent that Herald does not track (a SendGrid
    /// `processed`, an SNS subscription confirmation).
    pub ignored: usize,
    /// Recipients put on the suppression list.
    pub suppressed: usize,
}

/// Provider events about messages sent through `transport`.
#[utoipa::path(
    post,
    path = "/api/feedback/{transport}",
    tag = "feedback",
    params(("transport" = String, Path, description = "The configured transport whose provider posts here")),
    request_body(content = String, description = "The provider's own event format: SendGrid's Event Webhook array, Mailgun's signed JSON, Postmark's record, SNS notifications of SES events, Twilio's form-encoded status callback, or Herald's event JSON under Standard Webhooks signatures (`webhook-id`, `webhook-timestamp`, `webhook-signature`)"),
    responses(
        (status = 202, description = "Verified and recorded (events for unknown messages are counted and kept)", body = FeedbackAnswer),
        (status = 400, description = "Signed, but not the provider's format; `field` names what is wrong; nothing recorded", body = ErrorBody),
        (status = 401, description = "Bad or missing signature or credentials, a timestamp outside the tolerance, or a replay; nothing recorded", body = ErrorBody),
        (status = 404, description = "No such transport, or it takes no feedback", body = ErrorBody),
        (status = 413, description = "Body larger than `feedback.max_body_bytes`", body = ErrorBody),
        (status = 503, description = "Could not verify now (the signing certificate did not load) or the store cannot write; the provider retries", body = ErrorBody),
    ),
    security(())
)]
pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    transport: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let transport = transport.into_inner();
    let settings =
        state.settings.transports.get(&transport).ok_or_else(|| {
            ApiError::NotFound(format!("transport `{transport}` is not configured"))
        })?;
    let feedback = &settings.feedback;
    // A Standard Webhooks signature says which scheme the sender used;
    // otherwise the provider's own, and the generic one as a fallback.
    let signed_standard = req.headers().contains_key("webhook-signature");
    let source: &dyn FeedbackSource = match (&feedback.standard, &feedback.native) {
        (Some(standard), _) if signed_standard => standard.as_ref(),
        (_, Some(native)) => native.as_ref(),
        (Some(standard), None) => standard.as_ref(),
        (None, None) => {
            return Err(ApiError::NotFound(format!(
                "transport `{transport}` takes no feedback: configure its provider's webhook keys or `feedback_secret_env`"
            )));
        }
    };
    let limit = state.settings.feedback.max_body_bytes;
    let body = match raw_body(&req, &mut payload.into_inner(), Some(limit)).await {
        Ok(body) => body,
        Err(err) => {
            telemetry::feedback_refused(&transport, "too_large");
            return Err(err);
        }
    };
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let url = {
        let info = req.connection_info();
        format!("{}://{}{}", info.scheme(), info.host(), req.uri())
    };
    let now = state.clock.now();
    let inbound = Inbound {
        headers: &headers,
        body: &body,
        url: &url,
        now,
        tolerance: feedback.tolerance,
    };
    let accepted = match source.accept(inbound).await {
        Ok(accepted) => accepted,
        Err(refusal) => return Err(refused(&transport, source, refusal)),
    };
    let received = accepted.events.len();
    let ignored = accepted.ignored;
    let batch = FeedbackBatch {
        transport: transport.clone(),
        events: accepted.events,
        nonce: accepted.nonce,
    };
    let recorded = if batch.events.is_empty() && batch.nonce.is_none() {
        crate::storage::FeedbackRecorded::default()
    } else {
        state.storage.record_feedback(batch, now).await?
    };
    if recorded.replay {
        telemetry::feedback_refused(&transport, "replay");
        return Err(ApiError::Unauthorized {
            message: "this request was received before: a replay".into(),
            invalid_token: false,
        });
    }
    telemetry::feedback_recorded(&transport, &recorded);
    Ok(HttpResponse::Accepted().json(FeedbackAnswer {
        received,
        applied: recorded.applied,
        duplicates: recorded.duplicates,
        unmatched: recorded.unmatched,
        ignored,
        suppressed: recorded.suppressed,
    }))
}

/// The answer to a refused request, counted and logged.
fn refused(transport: &str, source: &dyn FeedbackSource, refusal: Refusal) -> ApiError {
    let scheme = source.scheme();
    match refusal {
        Refusal::Unauthorized(message) => {
            tracing::info!(transport, scheme, %message, "feedback refused");
            telemetry::feedback_refused(transport, "unauthorized");
            ApiError::Unauthorized {
                message,
                invalid_token: false,
            }
        }
        Refusal::Malformed { field, message } => {
            telemetry::feedback_refused(transport, "malformed");
            ApiError::bad_request("invalid", field, message)
        }
        Refusal::Unavailable(message) => {
            tracing::warn!(transport, scheme, %message, "feedback could not be verified now");
            telemetry::feedback_refused(transport, "unavailable");
            ApiError::Unavailable(message)
        }
    }
}
