//! What every HTTP transport shares: the client (keep-alive, bounded, no
//! redirects), sending a request and reading its answer, and the
//! classification every provider starts from (HTTP status, `Retry-After`,
//! no answer at all). A provider's module adds its own reading of the
//! answer's body on top; none of them handles a socket, a redirect or a
//! time-out itself.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use url::Url;

use crate::config::KindTable;
use crate::time::Clock;

use super::{Delivery, TransportError};

/// How much of an error answer's body is kept in the error message.
const MAX_ERROR_BODY_CHARS: usize = 512;
/// The most of a successful answer's body read: enough for any
/// provider's receipt, never a provider's whole stream.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The secret in the environment variable `var` (key `key`) made into a
/// header value by `render` (`Bearer <token>`, or the token alone),
/// marked sensitive so it is never logged; problems are reported under
/// `key`.
pub fn secret_header(
    table: &mut KindTable<'_>,
    key: &str,
    var: Option<&str>,
    render: impl FnOnce(&str) -> String,
) -> Option<HeaderValue> {
    let secret = table.secret(key, var)?;
    match HeaderValue::from_str(&render(secret.expose())) {
        Ok(mut value) => {
            value.set_sensitive(true);
            Some(value)
        }
        Err(_) => {
            table.problem(key, "not a header value (one line of visible ASCII)");
            None
        }
    }
}

/// `Basic base64(user:password)`, marked sensitive so it is never logged.
pub fn basic_auth(user: &str, password: &str) -> Option<HeaderValue> {
    use base64::Engine;
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = HeaderValue::from_str(&format!("Basic {pair}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// An HTTP client for transport `name`: connections kept alive and
/// reused across deliveries (one pool per transport), every request
/// bounded by `timeout`, redirects never followed (a redirect could carry
/// credentials or a signature to a host nobody allowed; a 3xx is an error
/// instead).
pub fn client(name: &str, timeout: Duration) -> Result<reqwest::Client, TransportError> {
    super::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| TransportError::Local(format!("transport `{name}`: HTTP client: {e}")))
}

/// The `base_url` key of a provider kind: the API's root (scheme, host,
/// port; a path prefix is kept, for a proxy in front of the API), or
/// `default` when unset. Problems are reported under `base_url`.
pub fn configure_base_url(
    table: &mut KindTable<'_>,
    base_url: Option<&str>,
    default: &str,
) -> Option<Url> {
    configure_root(table, "base_url", base_url, default)
}

/// An API root under a kind's own key name `key` (SES calls it
/// `endpoint`), checked as [`configure_base_url`] checks `base_url`.
pub fn configure_root(
    table: &mut KindTable<'_>,
    key: &str,
    root: Option<&str>,
    default: &str,
) -> Option<Url> {
    let text = root.unwrap_or(default);
    let url = match Url::parse(text) {
        Ok(url) => url,
        Err(e) => {
            table.problem(key, format!("not a URL: {e}"));
            return None;
        }
    };
    let problem = if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        Some(format!("`{text}` is not an http(s) URL with a host"))
    } else if url.query().is_some() || url.fragment().is_some() {
        // The provider's path is appended; a query or fragment would end
        // up in front of it or be dropped.
        Some(format!("`{text}` is an API root: no query or fragment"))
    } else if !url.username().is_empty() || url.password().is_some() {
        // The credentials have their own `*_env` key, which keeps them
        // out of the file and out of every log line that shows the URL.
        Some(format!(
            "`{text}` carries credentials; use the kind's `*_env` key"
        ))
    } else {
        None
    };
    match problem {
        Some(problem) => {
            table.problem(key, problem);
            None
        }
        None => Some(url),
    }
}

/// The provider's documented `path` under the API root `base`.
pub fn endpoint(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}{path}", base.path().trim_end_matches('/'));
    url.set_path(&joined);
    url
}

/// What every HTTP transport holds to call its provider: its name, one
/// keep-alive client, the API's host (what error messages name) and the
/// clock that dates its tokens and reads `Retry-After` dates.
pub struct Caller {
    pub name: String,
    pub client: reqwest::Client,
    pub host: String,
    pub clock: Arc<dyn Clock>,
}

impl Caller {
    /// A caller of the API at `url` with a [`client`] of `timeout`.
    pub fn new(
        name: String,
        url: &Url,
        timeout: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Caller, TransportError> {
        let client = client(&name, timeout)?;
        Ok(Caller::with_client(name, client, url, clock))
    }

    /// A caller of the API at `url` through a client of the transport's
    /// own making (APNs' HTTP/2).
    pub fn with_client(
        name: String,
        client: reqwest::Client,
        url: &Url,
        clock: Arc<dyn Clock>,
    ) -> Caller {
        Caller {
            name,
            client,
            host: url.host_str().unwrap_or_default().to_owned(),
            clock,
        }
    }

    /// Sends `request` and reads the answer ([`send`]).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, TransportError> {
        send(request, &self.host).await
    }

    /// The delivery `answer` accepted, under the provider's id for it.
    pub fn delivered(&self, answer: &Answer, provider_message_id: Option<String>) -> Delivery {
        Delivery {
            transport: self.name.clone(),
            detail: Some(serde_json::json!({ "status": answer.status })),
            provider_message_id,
        }
    }

    /// Now, as `Retry-After` dates are read against.
    pub fn now(&self) -> SystemTime {
        SystemTime::from(self.clock.now())
    }
}

/// A provider's answer, its body read (up to a bound).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The host asked, for error messages (never the URL: webhook and
    /// provider URLs often carry tokens).
    pub host: String,
}

/// Sends `request` to `host` and reads the answer. Only the lack of an
/// answer is an error here; every status comes back as an [`Answer`].
pub async fn send(request: reqwest::RequestBuilder, host: &str) -> Result<Answer, TransportError> {
    let response = request
        .send()
        .await
        .map_err(|e| classify_request_error(&e, host))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let limit = if response.status().is_success() {
        MAX_ANSWER_BYTES
    } else {
        MAX_ERROR_BODY_CHARS * 4
    };
    Ok(Answer {
        status,
        headers,
        body: body_prefix(response, limit).await,
        host: host.to_owned(),
    })
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON, if it is.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_slice(&self.body).ok()
    }

    /// A header's value, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The wait `Retry-After` asks for (seconds or an HTTP date, read
    /// against `now`).
    pub fn retry_after(&self, now: SystemTime) -> Option<Duration> {
        self.header(RETRY_AFTER.as_str())
            .and_then(|v| parse_retry_after(v, now))
    }

    /// `host: HTTP <status>: <start of the body>`, or the redirect not
    /// followed.
    pub fn describe(&self) -> String {
        let status = reqwest::StatusCode::from_u16(self.status)
            .map(|s| s.to_string())
            .unwrap_or_else(|_| self.status.to_string());
        let location = (300..400)
            .contains(&self.status)
            .then(|| self.header(reqwest::header::LOCATION.as_str()))
            .flatten();
        let mut text = match location {
            Some(location) => format!("{}: redirect to {location} not followed", self.host),
            None => format!("{}: HTTP {status}", self.host),
        };
        let body: String = String::from_utf8_lossy(&self.body)
            .chars()
            .take(MAX_ERROR_BODY_CHARS)
            .collect();
        if !body.trim().is_empty() {
            text.push_str(": ");
            text.push_str(body.trim());
        }
        text
    }

    /// The failure its status alone says ([`TransportError::from_http_status`]),
    /// honouring `Retry-After` on a 429 or 503.
    pub fn failure(&self, now: SystemTime) -> TransportError {
        let retry_after = match self.status {
            429 | 503 => self.retry_after(now),
            _ => None,
        };
        TransportError::from_http_status(self.status, self.describe(), retry_after)
    }
}

/// A `Retry-After` value: delay-seconds or an HTTP date. A date in the
/// past, or a value that is neither, asks for no particular wait.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    at.duration_since(now).ok().filter(|d| !d.is_zero())
}

/// The start of an answer's body, read chunk by chunk so a provider
/// answering with megabytes costs no more than the prefix kept; a body
/// that fails half-way changes nothing about the status already received.
async fn body_prefix(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    while bytes.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    bytes.truncate(limit);
    bytes
}

/// No answer was received. The URL is left out of the message; the host
/// is enough to act on.
fn classify_request_error(err: &reqwest::Error, host: &str) -> TransportError {
    let message = format!("{host}: {}", error_chain(err));
    if err.is_timeout() {
        TransportError::Timeout(message)
    } else if err.is_builder() {
        TransportError::InvalidMessage(message)
    } else {
        TransportError::Connection(message)
    }
}

fn error_chain(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    if let Some(url) = err.url() {
        text = text
            .replace(&format!(" for url ({url})"), "")
            .replace(&format!(" ({url})"), "");
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_go_under_the_api_root_and_its_path_prefix() {
        let root = |text: &str| Url::parse(text).unwrap();
        assert_eq!(
            endpoint(&root("https://api.sendgrid.com"), "/v3/mail/send").as_str(),
            "https://api.sendgrid.com/v3/mail/send"
        );
        assert_eq!(
            endpoint(&root("http://127.0.0.1:8025/"), "/email").as_str(),
            "http://127.0.0.1:8025/email"
        );
        assert_eq!(
            endpoint(
                &root("https://proxy.example.com/sendgrid/"),
                "/v3/mail/send"
            )
            .as_str(),
            "https://proxy.example.com/sendgrid/v3/mail/send"
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:29:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:00:00 GMT", now),
            None
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
