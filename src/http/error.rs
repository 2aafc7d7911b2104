//! API errors: the only place that knows HTTP status codes. Every error
//! body is `{"error": {"code", "message", "field"?}}`.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::ValidationError;
use crate::storage::StorageError;

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
    /// Storage cannot be reached; the client may try again (503).
    #[error("{0}")]
    Unavailable(String),
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
    /// `unsupported_media_type`, `unavailable`, ...
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

    fn code(&self) -> &str {
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
            e if e.is_transient() => ApiError::Unavailable(e.to_string()),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
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
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            // The cause goes to the log, not to the client.
            ApiError::Internal(cause) => tracing::error!(cause = %cause, "request failed"),
            ApiError::Unavailable(cause) => {
                tracing::warn!(cause = %cause, "storage unavailable, answered 503")
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
