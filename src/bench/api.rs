//! The client side of the API as the benchmark uses it: one pooled
//! `reqwest` client, bearer auth, and the few response shapes it reads
//! (DESIGN.md, "Shapes the clients rely on").

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{BenchArgs, BenchError};

/// Longest one request may take; a server that stalls longer is counted
/// as an error rather than hanging the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Retries of a GET that could not be sent at all.
const GET_RETRIES: u32 = 3;

/// Page size when reading the run back: the API's largest.
pub(crate) const PAGE_SIZE: usize = 1000;

#[derive(Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

/// What the target says about itself.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServerInfo {
    pub version: Option<String>,
    pub backend: Option<String>,
}

/// One message as `GET /api/messages` lists it (the fields the bench reads).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ListedMessage {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListPage {
    pub items: Vec<ListedMessage>,
    pub next: Option<String>,
}

/// `GET /api/messages/{id}`, the fields the bench checks.
#[derive(Debug, Deserialize)]
pub(crate) struct MessageDetail {
    pub status: String,
    pub sent_at: Option<DateTime<Utc>>,
    pub events: Vec<EventItem>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct EventItem {
    pub kind: String,
    pub at: DateTime<Utc>,
    pub attempt: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub detail: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Enqueued {
    pub id: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct BatchResults {
    pub results: Vec<Enqueued>,
}

impl Api {
    pub(crate) fn new(
        base: &str,
        key: Option<String>,
        args: &BenchArgs,
    ) -> Result<Api, BenchError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(args.clients as usize * 2)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| BenchError::Api {
                context: "HTTP client".into(),
                message: e.to_string(),
            })?;
        Ok(Api {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
        })
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends a JSON body; the caller classifies the answer.
    pub(crate) async fn post(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        self.authorized(self.http.post(format!("{}{path}", self.base)))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
    }

    /// GETs and decodes a 2xx JSON answer; anything else is an error
    /// naming the path and the status.
    pub(crate) async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, BenchError> {
        let error = |message: String| BenchError::Api {
            context: format!("GET {path}"),
            message,
        };
        // A GET is idempotent: retry when the request could not be sent,
        // typically a pooled keep-alive connection the server had closed.
        let mut attempt = 0;
        let response = loop {
            match self
                .authorized(self.http.get(format!("{}{path}", self.base)))
                .send()
                .await
            {
                Ok(response) => break response,
                Err(e) if attempt < GET_RETRIES && !e.is_timeout() => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
                Err(e) => return Err(error(e.to_string())),
            }
        };
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(error(format!("{status}: {body}")));
        }
        response.json::<T>().await.map_err(|e| error(e.to_string()))
    }

    /// Pauses or resumes a transport (`POST /api/transports/{name}/pause`
    /// or `/resume`; needs the `admin` role).
    pub(crate) async fn set_paused(&self, transport: &str, paused: bool) -> Result<(), BenchError> {
        let action = if paused { "pause" } else { "resume" };
        let path = format!("/api/transports/{}/{action}", encode(transport));
        let error = |message: String| BenchError::Api {
            context: format!("POST {path}"),
            message,
        };
        let response = self
            .authorized(self.http.post(format!("{}{path}", self.base)))
            .send()
            .await
            .map_err(|e| error(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            let body = response.text().await.unwrap_or_default();
            Err(error(format!("{status}: {body}")))
        }
    }

    /// One page of `GET /api/messages` with `query` (already encoded).
    pub(crate) async fn list(
        &self,
        query: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<ListPage, BenchError> {
        let mut path = format!("/api/messages?{query}&limit={limit}");
        if let Some(after) = after {
            path.push_str("&after=");
            path.push_str(after);
        }
        self.get_json(&path).await
    }

    /// The version (from the OpenAPI description) and the storage backend
    /// (from readiness); neither needs a key. A target that is not ready
    /// is an error: measuring it would measure its failure.
    pub(crate) async fn server_info(&self) -> Result<ServerInfo, BenchError> {
        let ready: serde_json::Value = self.get_json("/health/ready").await?;
        let spec: serde_json::Value = self.get_json("/api/openapi.json").await.unwrap_or_default();
        Ok(ServerInfo {
            version: spec["info"]["version"].as_str().map(str::to_owned),
            backend: ready["checks"]["storage"]["backend"]
                .as_str()
                .map(str::to_owned),
        })
    }
}

/// Percent-encodes a query value (transport names are plain, but a
/// remote server's could in principle need it).
pub(crate) fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
