//! The operator console: the pages at `/` and their assets, embedded in
//! the binary from `web/` (no CDN, no build step, no network), and the
//! session routes at `/console/session` that sign a browser in with an API
//! key. Every console response carries the same security headers; the
//! pages themselves only call the public `/api` routes, under the same
//! roles as any client (see [`super::auth`] for the cookie and CSRF rules).

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use rust_embed::RustEmbed;
use serde::{Deserialize, Serialize};

use super::auth::{self, SESSION_COOKIE};
use super::extract::JsonBody;
use super::{ApiError, AppState};
use crate::config::Role;

#[derive(RustEmbed)]
#[folder = "src/http/console/web/"]
struct Web;

/// Where the assets are served from; `index.html` names them by it.
const ASSETS: &str = "/console/assets";
pub const SESSION_PATH: &str = "/console/session";

/// No inline script or style, nothing from another origin, never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

/// Registers the page, its assets and the session routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/")
            .route(web::get().to(page))
            .route(web::head().to(page)),
    )
    .service(web::resource(format!("{ASSETS}/{{path:.*}}")).route(web::get().to(asset)))
    .service(
        web::resource(SESSION_PATH)
            .route(web::get().to(session))
            .route(web::post().to(sign_in))
            .route(web::delete().to(sign_out)),
    );
}

/// The security headers every console response carries.
fn secured(mut response: HttpResponseBuilder) -> HttpResponseBuilder {
    response
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header(("cross-origin-opener-policy", "same-origin"));
    response
}

async fn page(req: HttpRequest) -> HttpResponse {
    serve(&req, "index.html")
}

async fn asset(req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    serve(&req, &path)
}

/// An embedded file, revalidated by its digest: a new binary's assets are
/// picked up at once, an unchanged one costs a 304.
fn serve(req: &HttpRequest, path: &str) -> HttpResponse {
    let Some(file) = Web::get(path) else {
        return secured(HttpResponse::NotFound())
            .content_type("text/plain; charset=utf-8")
            .body("no such console asset");
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..12]));
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut response = secured(if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    });
    response
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    if fresh {
        return response.finish();
    }
    response
        .content_type(content_type(path))
        .body(file.data.into_owned())
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("woff2") => "font/woff2",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

const ALL_ROLES: [Role; 3] = [Role::Enqueue, Role::Read, Role::Admin];

/// What the console knows of its session.
#[derive(Debug, Serialize)]
struct SessionInfo {
    /// No keys are configured: everything is open (loopback only).
    open: bool,
    signed_in: bool,
    roles: Vec<&'static str>,
    /// What state-changing requests carry in `X-CSRF-Token`; absent when
    /// open or not signed in.
    #[serde(skip_serializing_if = "Option::is_none")]
    csrf: Option<String>,
}

impl SessionInfo {
    fn of(state: &AppState, key: Option<&str>) -> SessionInfo {
        let names = |has: &dyn Fn(Role) -> bool| {
            ALL_ROLES
                .into_iter()
                .filter(|r| has(*r))
                .map(auth::role_name)
                .collect()
        };
        if state.api_keys.is_open() {
            return SessionInfo {
                open: true,
                signed_in: true,
                roles: names(&|_| true),
                csrf: None,
            };
        }
        let roles = key.and_then(|key| state.api_keys.roles_of(key).map(|r| (key, r)));
        match roles {
            Some((key, roles)) => SessionInfo {
                open: false,
                signed_in: true,
                roles: names(&|r| roles.contains(&r)),
                csrf: Some(auth::csrf_token(key)),
            },
            None => SessionInfo {
                open: false,
                signed_in: false,
                roles: Vec::new(),
                csrf: None,
            },
        }
    }
}

fn session_answer(response: HttpResponseBuilder, info: &SessionInfo) -> HttpResponse {
    let mut response = secured(response);
    // The CSRF token is in the body: never cache it.
    response.insert_header((header::CACHE_CONTROL, "no-store"));
    response.json(info)
}

/// `GET /console/session`: whether this browser is signed in, its roles
/// and its CSRF token.
async fn session(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let key = auth::session_key(&req);
    session_answer(HttpResponse::Ok(), &SessionInfo::of(&state, key.as_deref()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    key: String,
}

/// The session cookie: HttpOnly (no script reads the key), SameSite=Strict
/// (no other site's page sends it), Secure when the browser came over TLS.
fn session_cookie(req: &HttpRequest, value: String) -> Cookie<'static> {
    let secure = req.connection_info().scheme() == "https";
    Cookie::build(SESSION_COOKIE, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .finish()
}

/// `POST /console/session` `{"key": "..."}`: signs in with an API key.
async fn sign_in(
    state: web::Data<AppState>,
    req: HttpRequest,
    JsonBody(body): JsonBody<SignIn>,
) -> Result<HttpResponse, ApiError> {
    // Signing a browser in from another site would plant a session.
    auth::refuse_cross_site(&req)?;
    if state.api_keys.is_open() {
        return Ok(session_answer(
            HttpResponse::Ok(),
            &SessionInfo::of(&state, None),
        ));
    }
    let key = body.key.trim();
    if key.is_empty() {
        return Err(ApiError::bad_request(
            "required",
            "key",
            "an API key is required",
        ));
    }
    if state.api_keys.roles_of(key).is_none() {
        tracing::debug!("console sign-in refused: unknown key");
        return Err(ApiError::Unauthorized {
            message: "the API key is not valid".into(),
            invalid_token: true,
        });
    }
    let mut response = HttpResponse::Ok();
    response.cookie(session_cookie(&req, auth::session_value(key)));
    Ok(session_answer(
        response,
        &SessionInfo::of(&state, Some(key)),
    ))
}

/// `DELETE /console/session`: signs out, removing the cookie.
async fn sign_out(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    auth::refuse_cross_site(&req)?;
    let mut gone = session_cookie(&req, String::new());
    gone.make_removal();
    let mut response = HttpResponse::Ok();
    response.cookie(gone);
    Ok(session_answer(response, &SessionInfo::of(&state, None)))
}
