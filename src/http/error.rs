//! API errors: the only place that knows HTTP status codes. Every error
//! body is `{"error": {"code", "message", "field"?}}`.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::ValidationError;
use crate::storage::StorageError;

/// `Retry-After` on a full store: space comes back when an operator acts,
/// so clients should not hammer it.
const FULL_RETRY_AFTER_S: u64 = 30;
/// `Retry-After` on an unreachable or read-only store: a restart or a
/// failover takes seconds.
const UNAVAILABLE_RETRY_AFTER_S: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body parsed but does not describe an acceptable message (422).
    #[error("{}", .0.message)]
    Validation(#[from] ValidationError),
    /// The request itself is malformed: unparsable JSON, a bad query
    /// parameter or path segment (400).
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        field: Option<String>,
    },
    /// No key, or a key that is not configured (401).
    #[error("{message}")]
    Unauthorized {
        message: String,
        /// A key was presented but not recognised (RFC 6750 `invalid_token`).
        invalid_token: bool,
    },
    /// The key is valid but lacks the role the route needs (403).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// A known path asked with a method it does not serve (405, with
    /// `Allow`).
    #[error("{message}")]
    MethodNotAllowed {
        message: String,
        allowed: Vec<actix_web::http::Method>,
    },
    /// The operation does not apply in the resource's current state (409).
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The body did not arrive within `server.body_timeout_ms` (408).
    #[error("the request body did not arrive within {} ms", timeout.as_millis())]
    BodyTimeout { timeout: std::time::Duration },
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A part this process needs is not running (503).
    #[error("{0}")]
    Unavailable(String),
    /// The store cannot write for now: out of space, read-only or out of
    /// reach (503 with `Retry-After`); nothing was changed and the client
    /// may send the same request again. The code names the cause.
    #[error("{message}")]
    StorageOutage {
        code: &'static str,
        message: &'static str,
        retry_after_s: u64,
        /// For the log, not the client.
        cause: String,
    },
    #[error("internal error")]
    Internal(String),
}

/// The error body every route answers with on failure.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid`, `required`, `unknown_field`,
    /// `malformed_json`, `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `payload_too_large`, `request_timeout`,
    /// `unsupported_media_type`, `storage_full`, `storage_unavailable`,
    /// `unavailable`, ...
    pub code: String,
    /// For humans; may change between versions.
    pub message: String,
    /// The offending field as a path into the request
    /// (`messages[3].email.to[0]`, or a query parameter's name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn bad_request(
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// The stable code of the error body.
    pub(crate) fn code(&self) -> &str {
        match self {
            ApiError::Validation(v) => v.code,
            ApiError::BadRequest { code, .. } => code,
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::BodyTimeout { .. } => "request_timeout",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::StorageOutage { code, .. } => code,
            ApiError::Internal(_) => "internal",
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::Validation(v) => Some(v.field.as_str()),
            ApiError::BadRequest { field, .. } => field.as_deref(),
            ApiError::BodyTimeout { .. } => Some("body"),
            _ => None,
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::NotFound(id) => ApiError::NotFound(format!("message {id} not found")),
            StorageError::Conflict { .. } => ApiError::Conflict(err.to_string()),
            StorageError::Invalid(message) => ApiError::BadRequest {
                code: "invalid",
                message,
                field: None,
            },
            StorageError::Full(cause) => ApiError::StorageOutage {
                code: "storage_full",
                message: "storage is full; nothing was changed, try again later",
                retry_after_s: FULL_RETRY_AFTER_S,
                cause,
            },
            StorageError::Unavailable(cause) => ApiError::StorageOutage {
                code: "storage_unavailable",
                message: "storage is unavailable; nothing was changed, try again later",
                retry_after_s: UNAVAILABLE_RETRY_AFTER_S,
                cause,
            },
            e => ApiError::Internal(e.to_string()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            // Text Herald will not carry is a bad request; anything else
            // wrong with a well-formed body is an unacceptable message.
            ApiError::Validation(v) if v.code == crate::domain::FORBIDDEN_CHARACTER => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) | ApiError::StorageOutage { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            // The cause goes to the log, not to the client.
            ApiError::Internal(cause) => tracing::error!(cause = %cause, "request failed"),
            ApiError::Unavailable(cause) => tracing::warn!(cause = %cause, "answered 503"),
            ApiError::StorageOutage { code, cause, .. } => {
                tracing::warn!(code, cause = %cause, "storage cannot write, answered 503")
            }
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::Unauthorized { invalid_token, .. } = self {
            let challenge = if *invalid_token {
                r#"Bearer realm="herald", error="invalid_token""#
            } else {
                r#"Bearer realm="herald""#
            };
            response.insert_header((header::WWW_AUTHENTICATE, challenge));
        }
        if let ApiError::StorageOutage { retry_after_s, .. } = self {
            response.insert_header((header::RETRY_AFTER, retry_after_s.to_string()));
        }
        if let ApiError::MethodNotAllowed { allowed, .. } = self {
            let allow: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
            response.insert_header((header::ALLOW, allow.join(", ")));
        }
        response.json(ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
                field: self.field().map(str::to_owned),
            },
        })
    }
}

/// A known path with a method it does not serve.
pub fn method_not_allowed(
    req: actix_web::HttpRequest,
    allowed: Vec<actix_web::http::Method>,
) -> Result<HttpResponse, ApiError> {
    let names: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
    Err(ApiError::MethodNotAllowed {
        message: format!(
            "{} does not serve {}; it allows {}",
            req.path(),
            req.method(),
            names.join(", ")
        ),
        allowed,
    })
}

/// Unknown paths get the JSON error shape too.
pub async fn not_found(req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(err: StorageError) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = ApiError::from(err).error_response();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = actix_web::body::to_bytes(response.into_body())
            .await
            .expect("a body");
        let body = serde_json::from_slice(&body).expect("a JSON body");
        (status, retry_after, body)
    }

    #[actix_web::test]
    async fn a_full_store_is_503_storage_full_with_retry_after() {
        let (status, retry_after, body) =
            answer(StorageError::Full("database or disk is full".into())).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("30"));
        assert_eq!(body["error"]["code"], "storage_full");
        assert!(body["error"].get("field").is_none(), "{body}");
        assert!(
            !body.to_string().contains("disk is full"),
            "the cause stays in the log: {body}"
        );
    }

    #[actix_web::test]
    async fn an_unavailable_store_is_503_storage_unavailable_with_retry_after() {
        let (status, retry_after, body) =
            answer(StorageError::Unavailable("read-only transaction".into())).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("5"));
        assert_eq!(body["error"]["code"], "storage_unavailable");
    }

    #[actix_web::test]
    async fn other_storage_faults_stay_500_without_retry_after() {
        let (status, retry_after, body) = answer(StorageError::Backend("syntax".into())).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(retry_after, None);
        assert_eq!(body["error"]["code"], "internal");
    }
}
