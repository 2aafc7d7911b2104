//! The OpenAPI description, generated from the handlers' annotations and
//! the DTOs' types so it cannot drift from the code, served at
//! `GET /api/openapi.json`, and the interactive docs (Swagger UI, its files
//! compiled into the binary) at `/api/docs/`. Both need no API key: the
//! spec holds no data, and the docs page sends the key the reader enters.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::{alerts, analytics, health, messages, metrics, queue, transports};

/// Where the spec is served.
pub const SPEC_PATH: &str = "/api/openapi.json";
/// Where the docs page is served (with the trailing slash).
pub const DOCS_PATH: &str = "/api/docs/";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "Notification delivery and tracking engine. Errors are \
            `{\"error\": {\"code\", \"message\", \"field\"?}}`. With API keys configured, \
            every /api route but this spec needs `Authorization: Bearer <key>` and the role \
            named in its security requirement (enqueue, read or admin)."
    ),
    paths(
        health::live,
        health::ready,
        messages::enqueue,
        messages::enqueue_batch,
        messages::list_messages,
        messages::get_message,
        messages::cancel,
        messages::retry,
        queue::dead_letters,
        queue::replay_dead_letters,
        analytics::queue,
        analytics::transport_performance_report,
        analytics::failures,
        analytics::bottleneck_report,
        analytics::message_flow_report,
        alerts::list,
        transports::list,
        transports::pause,
        transports::resume,
        metrics::render,
        spec,
    ),
    modifiers(&BearerKeys),
    tags(
        (name = "messages", description = "Enqueue, read, cancel and retry messages"),
        (name = "queue", description = "The dead-letter queue"),
        (name = "analytics", description = "Queue and transport analytics from the rollups"),
        (name = "alerts", description = "Alert incidents from the configured rules"),
        (name = "transports", description = "Transports' live state; pause and resume"),
        (name = "health", description = "Liveness and readiness probes"),
        (name = "meta", description = "This description"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme the paths' security requirements name.
struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some(
            "An API key from `[[api_keys]]` in the config; the requirement lists the role it needs."
                .to_owned(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

static SPEC: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);

/// This API's OpenAPI description.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI document", body = serde_json::Value))
)]
pub async fn spec() -> HttpResponse {
    HttpResponse::Ok().json(&*SPEC)
}

/// The docs page and its assets, reading the spec from [`SPEC_PATH`].
pub fn docs() -> SwaggerUi {
    SwaggerUi::new(format!("{DOCS_PATH}{{_:.*}}")).config(Config::new([SPEC_PATH]))
}
