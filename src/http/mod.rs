//! The HTTP API (actix-web). [`configure`] registers every route and is
//! shared by `main` and the tests, so tests exercise the real routes.
//! [`routes`] is the one list of them; the OpenAPI spec is checked against
//! it.
//!
//! One file per resource: [`messages`] (`/api/messages`), [`queue`]
//! (`/api/queue/dead-letters`), `alerts` (`/api/alerts`), `feedback`
//! (`/api/feedback/{transport}`, the providers' event webhooks),
//! `suppressions` (`/api/suppressions`), `health`; the operator console's
//! pages and session (`/`, `/console/...`) in `console`; shapes in [`dto`], access control
//! in [`auth`], request reading in `extract`, status codes only in
//! [`error`], the spec and docs page in [`openapi`].

mod alerts;
mod analytics;
pub mod auth;
mod console;
pub mod dto;
mod error;
mod extract;
mod feedback;
mod health;
pub mod messages;
mod metrics;
pub mod openapi;
pub mod queue;
mod suppressions;
pub mod transports;

use std::sync::Arc;

use actix_web::http::Method;
use actix_web::{HttpRequest, Route, web};

pub use error::{ApiError, ErrorBody, ErrorDetail};

use crate::config::Settings;
use crate::domain::EnqueuePolicy;
use crate::engine::Engine;
use crate::storage::{GroupCommit, Storage};
use crate::time::Clock;

/// What every handler can reach.
pub struct AppState {
    pub storage: Arc<dyn Storage>,
    /// Single enqueues go through here, so that, where the backend gains
    /// by it, concurrent ones share a commit.
    pub enqueues: GroupCommit,
    pub clock: Arc<dyn Clock>,
    pub settings: Arc<Settings>,
    /// What enqueue validation checks against; derived from `settings`
    /// once, not per request.
    pub policy: EnqueuePolicy,
    pub api_keys: auth::ApiKeys,
    /// The OpenAPI description for this configuration.
    pub spec: openapi::Spec,
    /// The delivery engine, when this process runs one (the server always
    /// does; API tests of the message routes may not).
    pub engine: Option<Engine>,
}

impl AppState {
    /// Derives what requests need from the settings, and logs whether the
    /// API is authenticated.
    pub fn new(storage: Arc<dyn Storage>, clock: Arc<dyn Clock>, settings: Arc<Settings>) -> Self {
        let api_keys = auth::ApiKeys::new(&settings.api_keys);
        api_keys.log_mode(&settings.server.listen);
        let policy = settings.enqueue_policy();
        AppState {
            enqueues: GroupCommit::new(storage.clone()),
            storage,
            clock,
            spec: openapi::Spec::new(&policy, !api_keys.is_open()),
            policy,
            settings,
            api_keys,
            engine: None,
        }
    }

    /// Attaches the running engine: transport routes, readiness and
    /// `/metrics` report its live state.
    pub fn with_engine(mut self, engine: Engine) -> Self {
        self.engine = Some(engine);
        self
    }

    /// The engine, or 503 when this process runs none.
    pub fn engine(&self) -> Result<&Engine, ApiError> {
        self.engine.as_ref().ok_or_else(|| {
            ApiError::Unavailable("the delivery engine is not running in this process".into())
        })
    }
}

/// The state registered by the caller of [`configure`]; its absence is a
/// wiring bug, answered as a 500.
fn app_state(req: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("AppState is not registered with the app".into()))
}

/// One registered route.
pub struct ApiRoute {
    pub method: Method,
    /// The actix path pattern, which for these routes is also the OpenAPI
    /// path (`/api/messages/{id}`).
    pub path: &'static str,
    handler: fn() -> Route,
}

fn route(method: Method, path: &'static str, handler: fn() -> Route) -> ApiRoute {
    ApiRoute {
        method,
        path,
        handler,
    }
}

/// Every route [`configure`] registers (besides the docs page's assets).
pub fn routes() -> Vec<ApiRoute> {
    vec![
        route(Method::GET, "/health/live", || {
            web::route().to(health::live)
        }),
        route(Method::GET, "/health/ready", || {
            web::route().to(health::ready)
        }),
        route(Method::POST, "/api/messages", || {
            web::route().to(messages::enqueue)
        }),
        route(Method::GET, "/api/messages", || {
            web::route().to(messages::list_messages)
        }),
        route(Method::POST, "/api/messages/batch", || {
            web::route().to(messages::enqueue_batch)
        }),
        route(Method::GET, "/api/messages/count", || {
            web::route().to(messages::count_messages)
        }),
        route(Method::GET, "/api/messages/{id}", || {
            web::route().to(messages::get_message)
        }),
        route(Method::POST, "/api/messages/{id}/cancel", || {
            web::route().to(messages::cancel)
        }),
        route(Method::POST, "/api/messages/{id}/retry", || {
            web::route().to(messages::retry)
        }),
        route(Method::GET, "/api/queue/dead-letters", || {
            web::route().to(queue::dead_letters)
        }),
        route(Method::GET, "/api/queue/dead-letters/groups", || {
            web::route().to(queue::dead_letter_groups)
        }),
        route(Method::POST, "/api/queue/dead-letters/replay", || {
            web::route().to(queue::replay_dead_letters)
        }),
        route(Method::POST, "/api/queue/dead-letters/replay-jobs", || {
            web::route().to(queue::start_replay_job)
        }),
        route(Method::GET, "/api/queue/dead-letters/replay-jobs", || {
            web::route().to(queue::replay_jobs)
        }),
        route(
            Method::GET,
            "/api/queue/dead-letters/replay-jobs/{id}",
            || web::route().to(queue::replay_job),
        ),
        route(Method::GET, "/api/queue/analytics", || {
            web::route().to(analytics::queue)
        }),
        route(Method::GET, "/api/queue/failures", || {
            web::route().to(analytics::failures)
        }),
        route(Method::GET, "/api/queue/bottlenecks", || {
            web::route().to(analytics::bottleneck_report)
        }),
        route(Method::GET, "/api/analytics/message-flow", || {
            web::route().to(analytics::message_flow_report)
        }),
        route(Method::GET, "/api/analytics/transport-performance", || {
            web::route().to(analytics::transport_performance_report)
        }),
        route(Method::GET, "/api/analytics/deliverability", || {
            web::route().to(analytics::deliverability_report)
        }),
        route(Method::GET, "/api/alerts", || web::route().to(alerts::list)),
        route(Method::POST, "/api/feedback/{transport}", || {
            web::route().to(feedback::receive)
        }),
        route(Method::GET, "/api/suppressions", || {
            web::route().to(suppressions::list)
        }),
        route(Method::POST, "/api/suppressions", || {
            web::route().to(suppressions::add)
        }),
        route(
            Method::DELETE,
            "/api/suppressions/{channel}/{address}",
            || web::route().to(suppressions::remove),
        ),
        route(Method::GET, "/api/transports", || {
            web::route().to(transports::list)
        }),
        route(Method::POST, "/api/transports/{name}/pause", || {
            web::route().to(transports::pause)
        }),
        route(Method::POST, "/api/transports/{name}/resume", || {
            web::route().to(transports::resume)
        }),
        route(Method::GET, "/metrics", || web::route().to(metrics::render)),
        route(Method::GET, openapi::SPEC_PATH, || {
            web::route().to(openapi::spec)
        }),
    ]
}

/// Registers all routes. The caller provides `web::Data<AppState>`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // One resource per path, holding a route per method, so a known path
    // asked with another method answers 405 with `Allow` rather than 404.
    let mut paths: Vec<(&'static str, Vec<ApiRoute>)> = Vec::new();
    for api_route in routes() {
        match paths.iter_mut().find(|(path, _)| *path == api_route.path) {
            Some((_, routes)) => routes.push(api_route),
            None => paths.push((api_route.path, vec![api_route])),
        }
    }
    for (path, routes) in paths {
        let mut allowed: Vec<Method> = routes.iter().map(|r| r.method.clone()).collect();
        let mut resource = web::resource(path);
        for api_route in routes {
            // Every GET answers HEAD too (health checkers send it); the
            // server leaves the body out.
            if api_route.method == Method::GET {
                resource = resource.route((api_route.handler)().method(Method::HEAD));
                allowed.push(Method::HEAD);
            }
            resource = resource.route((api_route.handler)().method(api_route.method));
        }
        cfg.service(resource.default_service(web::to(move |req: HttpRequest| {
            let allowed = allowed.clone();
            async move { error::method_not_allowed(req, allowed) }
        })));
    }
    console::configure(cfg);
    cfg.service(web::redirect(
        openapi::DOCS_PATH.trim_end_matches('/'),
        openapi::DOCS_PATH,
    ))
    .service(openapi::docs())
    .default_service(web::to(error::not_found));
}
