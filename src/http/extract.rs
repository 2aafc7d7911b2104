//! Reading requests: JSON bodies (content type, size limit, parse errors
//! that name the field) and query strings (unknown, repeated and malformed
//! parameters refused). Everything here fails with an [`ApiError`], so a
//! bad request never reaches a handler and never becomes a 500.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use actix_web::body::{self, BodyStream};
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{FromRequest, HttpRequest};
use serde::de::DeserializeOwned;

use super::{ApiError, app_state};
use crate::domain::ValidationError;

/// A JSON request body, parsed strictly (`deny_unknown_fields` on the
/// target types) with errors that name the offending field.
pub struct JsonBody<T>(pub T);

/// Like [`JsonBody`], but an empty body stands for `T::default()`, so a
/// bulk operation whose every field is optional can be called bare.
pub struct OptionalJsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let read = read_body(req, payload);
        Box::pin(async move {
            let (bytes, content_type) = read.await?;
            content_type?;
            parse_json(&bytes).map(JsonBody)
        })
    }
}

impl<T: DeserializeOwned + Default + 'static> FromRequest for OptionalJsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let read = read_body(req, payload);
        Box::pin(async move {
            let (bytes, content_type) = read.await?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(OptionalJsonBody(T::default()));
            }
            content_type?;
            parse_json(&bytes).map(OptionalJsonBody)
        })
    }
}

/// The body, up to `server.max_body_bytes`, and whether its content type
/// is JSON. The size is checked first: an oversized body is a 413 whatever
/// its type. A body that takes longer than `server.body_timeout_ms` is a
/// 408: actix-web times out only the head, so without this a client
/// trickling a body would hold its connection and a worker's slot for as
/// long as it liked.
fn read_body(
    req: &HttpRequest,
    payload: &mut Payload,
) -> impl Future<Output = Result<(Bytes, Result<(), ApiError>), ApiError>> + use<> {
    read_body_within(req, payload, None)
}

/// The body as it came, whatever its content type, up to `limit` bytes
/// (or `server.max_body_bytes`): what a signature is computed over.
pub fn raw_body(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: Option<usize>,
) -> impl Future<Output = Result<Bytes, ApiError>> + use<> {
    let read = read_body_within(req, payload, limit);
    async move { Ok(read.await?.0) }
}

fn read_body_within(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: Option<usize>,
) -> impl Future<Output = Result<(Bytes, Result<(), ApiError>), ApiError>> + use<> {
    let limits = app_state(req).map(|state| {
        let server = &state.settings.server;
        (limit.unwrap_or(server.max_body_bytes), server.body_timeout)
    });
    let declared_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let content_type = check_json_content_type(req);
    let payload = payload.take();
    async move {
        let (limit, timeout) = limits?;
        // Refuse what announces itself as too large before reading a byte.
        if declared_length.is_some_and(|length| length > limit as u64) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let read = body::to_bytes_limited(BodyStream::new(payload), limit);
        let read = tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| ApiError::BodyTimeout { timeout })?;
        let bytes = match read {
            Err(_) => return Err(ApiError::PayloadTooLarge { limit }),
            Ok(Err(err)) => {
                return Err(ApiError::bad_request(
                    "malformed_body",
                    "body",
                    format!("the request body could not be read: {err}"),
                ));
            }
            Ok(Ok(bytes)) => bytes,
        };
        Ok((bytes, content_type))
    }
}

/// `application/json` or any `application/*+json`, with any parameters.
fn check_json_content_type(req: &HttpRequest) -> Result<(), ApiError> {
    let given = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
    let is_json = given.as_deref().is_some_and(|value| {
        let essence = value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        essence == "application/json"
            || (essence.starts_with("application/") && essence.ends_with("+json"))
    });
    if is_json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "the body must be JSON (Content-Type: application/json), got {}",
            given.as_deref().unwrap_or("no Content-Type")
        )))
    }
}

/// Parses JSON, naming the field a type error is in. Syntax errors are a
/// 400 (`malformed_json`); well-formed JSON of the wrong shape is a 422,
/// like any other invalid message.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let malformed = |err: serde_json::Error| ApiError::BadRequest {
        code: "malformed_json",
        message: format!("the body is not valid JSON: {err}"),
        field: None,
    };
    // A struct also deserializes from an array, by position: only an
    // object is a body.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map_err(malformed)?;
        return Err(ApiError::Validation(ValidationError::new(
            "body".to_owned(),
            "invalid",
            "the body must be a JSON object".to_owned(),
        )));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Ok(value) => {
            deserializer.end().map_err(malformed)?;
            Ok(value)
        }
        Err(err) if err.inner().is_data() => Err(json_error(&err)),
        // Some wrong types come out of the streaming parser as syntax
        // errors; well-formed JSON is then read again from a tree, where
        // every mismatch is a data error with its path.
        Err(err) => match serde_json::from_slice::<serde_json::Value>(bytes) {
            Err(_) => Err(json_error(&err)),
            Ok(tree) => match serde_path_to_error::deserialize::<_, T>(tree) {
                Ok(value) => Ok(value),
                Err(err) => Err(json_error(&err)),
            },
        },
    }
}

fn json_error(err: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = err.inner();
    if !inner.is_data() {
        return ApiError::BadRequest {
            code: "malformed_json",
            message: format!("the body is not valid JSON: {inner}"),
            field: None,
        };
    }
    ApiError::Validation(ValidationError::from_json_error(None, err))
}

/// A query string checked against the parameters a route accepts.
pub struct Query(HashMap<String, String>);

impl Query {
    /// Refuses unknown and repeated parameters. An empty value counts as
    /// absent, as HTML forms and URL templates send them.
    pub fn parse(req: &HttpRequest, accepted: &[&str]) -> Result<Query, ApiError> {
        let mut params = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
            if !accepted.contains(&name.as_ref()) {
                return Err(ApiError::bad_request(
                    "unknown_parameter",
                    name.as_ref(),
                    format!(
                        "unknown query parameter `{name}`; this route accepts: {}",
                        accepted.join(", ")
                    ),
                ));
            }
            if value.is_empty() {
                continue;
            }
            if params
                .insert(name.to_string(), value.into_owned())
                .is_some()
            {
                return Err(ApiError::bad_request(
                    "invalid",
                    name.as_ref(),
                    format!("query parameter `{name}` is given more than once"),
                ));
            }
        }
        Ok(Query(params))
    }

    /// The parameter parsed with `parse`, or a 400 naming it.
    pub fn get<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ApiError> {
        self.0
            .get(name)
            .map(|raw| {
                parse(raw).map_err(|message| ApiError::bad_request("invalid", name, message))
            })
            .transpose()
    }

    pub fn text(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::domain::EnqueueRequest;

    fn field_of<T: DeserializeOwned>(json: &str) -> (String, String) {
        match parse_json::<T>(json.as_bytes()) {
            Ok(_) => panic!("{json} parsed"),
            Err(ApiError::Validation(v)) => (v.field, v.code.to_owned()),
            Err(ApiError::BadRequest { code, field, .. }) => {
                (field.unwrap_or_default(), code.to_owned())
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Batch {
        messages: Vec<EnqueueRequest>,
    }

    #[test]
    fn unknown_and_missing_fields_are_named_with_their_path() {
        assert_eq!(
            field_of::<EnqueueRequest>(r#"{"channel": "email", "prio": 1}"#),
            ("prio".into(), "unknown_field".into())
        );
        assert_eq!(
            field_of::<EnqueueRequest>(
                r#"{"channel": "email", "email": {"from": "a@b.c", "to": [], "subject": "s", "txt": "x"}}"#
            ),
            ("email.txt".into(), "unknown_field".into())
        );
        assert_eq!(
            field_of::<EnqueueRequest>(r#"{"channel": "email", "email": {"to": []}}"#),
            ("email.from".into(), "required".into())
        );
        assert_eq!(
            field_of::<EnqueueRequest>(r#"{"email": {}}"#).0,
            "email.from".to_owned(),
            "the first missing field found is reported"
        );
    }

    #[test]
    fn type_errors_inside_arrays_name_the_index() {
        let body = r#"{"messages": [
            {"channel": "email"},
            {"channel": "email", "email": {"from": "a@b.c", "to": ["x@y.z", 5], "subject": "s"}}
        ]}"#;
        assert_eq!(
            field_of::<Batch>(body),
            ("messages[1].email.to[1]".into(), "invalid".into())
        );
        assert_eq!(
            field_of::<EnqueueRequest>(r#"{"channel": "fax"}"#),
            ("channel".into(), "invalid".into())
        );
        assert_eq!(
            field_of::<EnqueueRequest>(r#"{"channel": "email", "priority": 12}"#),
            ("priority".into(), "invalid".into())
        );
    }

    #[test]
    fn wrong_shapes_of_well_formed_json_name_their_field() {
        for (body, field, code) in [
            (
                r#"{"channel": 1, "chat": {"payload": 1}}"#,
                "channel",
                "invalid",
            ),
            (
                r#"{"channel": {"chat": null}, "chat": {"payload": 1}}"#,
                "channel",
                "invalid",
            ),
            (r#"["chat", "sink", null]"#, "body", "invalid"),
            ("[1, 2]", "body", "invalid"),
            (
                r#"{"channel": "chat", "transport": "a", "transport": "b", "chat": {"payload": 1}}"#,
                "transport",
                "duplicate_field",
            ),
        ] {
            assert_eq!(
                field_of::<EnqueueRequest>(body),
                (field.to_owned(), code.to_owned()),
                "{body}"
            );
        }
        assert_eq!(
            field_of::<Batch>(r#"{"messages": [{"channel": "chat"}, {"channel": 7}]}"#),
            ("messages[1].channel".into(), "invalid".into())
        );
        assert_eq!(field_of::<Batch>("[[]]"), ("body".into(), "invalid".into()));
    }

    #[test]
    fn syntax_errors_are_malformed_json() {
        assert_eq!(
            field_of::<EnqueueRequest>(r#"{"channel": "email""#).1,
            "malformed_json"
        );
        assert_eq!(
            field_of::<EnqueueRequest>(r#"{"channel": "email"} trailing"#).1,
            "malformed_json"
        );
        assert_eq!(
            field_of::<EnqueueRequest>(r#""an email""#),
            ("body".into(), "invalid".into()),
            "well-formed JSON of the wrong type names the body"
        );
    }
}
