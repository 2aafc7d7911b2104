//! The HTTP API (actix-web). [`configure`] registers every route and is
//! shared by `main` and the tests, so tests exercise the real routes.

mod error;
mod health;

use std::sync::Arc;

use actix_web::web;

pub use error::ApiError;

use crate::config::Settings;
use crate::storage::Storage;
use crate::time::Clock;

/// What every handler can reach.
pub struct AppState {
    pub storage: Arc<dyn Storage>,
    pub clock: Arc<dyn Clock>,
    pub settings: Arc<Settings>,
}

/// Registers all routes. The caller provides `web::Data<AppState>`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/health")
            .route("/live", web::get().to(health::live))
            .route("/ready", web::get().to(health::ready)),
    )
    .default_service(web::to(error::not_found));
}
