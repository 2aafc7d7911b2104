//! Access control: bearer API keys from config, each with roles. A route
//! states the role it needs by taking an [`Authorized`] argument
//! (`Authorized<AdminRole>`); this module is the only place that reads the
//! `Authorization` header or the console's session cookie, compares keys,
//! or checks a CSRF token.
//!
//! The console signs in by putting a key into an HttpOnly, SameSite=Strict
//! session cookie ([`SESSION_COOKIE`]). A browser sends that cookie by
//! itself, so a state-changing request authenticated by it must also carry
//! [`CSRF_HEADER`], a token derived from the key that only a page able to
//! read the console's own session answer knows. A browser never adds an
//! `Authorization` header by itself, so bearer requests need no token.
//! Without keys (loopback only), a state-changing request a browser marks
//! as coming from another site is refused, so a web page cannot drive a
//! local Herald through its visitor's browser.
//!
//! Keys are compared as SHA-256 digests in constant time, against every
//! configured key, so neither the position of a mismatch nor a key's
//! length shows in the response time. Keys are never logged. With no keys
//! configured the API is open; config validation only allows that on a
//! loopback listen address.

use std::future::{Ready, ready};
use std::marker::PhantomData;

use actix_web::dev::Payload;
use actix_web::http::{Method, header};
use actix_web::{FromRequest, HttpRequest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, app_state};
use crate::config::{ApiKey, Role};

/// The configured keys, kept only as digests.
#[derive(Clone)]
pub struct ApiKeys {
    keys: Vec<([u8; 32], Vec<Role>)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.keys.len())
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    pub fn new(keys: &[ApiKey]) -> ApiKeys {
        ApiKeys {
            keys: keys
                .iter()
                .map(|k| (digest(k.key.expose()), k.roles.clone()))
                .collect(),
        }
    }

    /// No keys: every API route is open.
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// The roles of the presented key, `None` if it is not configured.
    /// Every configured key is compared, matched or not.
    pub fn roles_of(&self, presented: &str) -> Option<Vec<Role>> {
        let presented = digest(presented);
        let mut matched: Option<Vec<Role>> = None;
        for (key, roles) in &self.keys {
            if bool::from(key.ct_eq(&presented)) {
                matched.get_or_insert_with(Vec::new).extend(roles);
            }
        }
        matched
    }

    /// Decides a request that needs `role`.
    pub fn authorize(&self, authorization: Option<&str>, role: Role) -> Result<(), ApiError> {
        if self.is_open() {
            return Ok(());
        }
        let Some(value) = authorization else {
            return Err(ApiError::Unauthorized {
                message: "this route needs an API key: Authorization: Bearer <key>".into(),
                invalid_token: false,
            });
        };
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| ApiError::Unauthorized {
                message: "the Authorization header must be `Bearer <key>`".into(),
                invalid_token: false,
            })?;
        self.grant(token, role, "the API key is not valid")
    }

    /// 401 with `unknown` for a key that is not configured, 403 for one
    /// without `role`.
    fn grant(&self, key: &str, role: Role, unknown: &str) -> Result<(), ApiError> {
        let roles = self.roles_of(key).ok_or_else(|| ApiError::Unauthorized {
            message: unknown.to_owned(),
            invalid_token: true,
        })?;
        if roles.contains(&role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this route needs an API key with the `{}` role",
                role_name(role)
            )))
        }
    }

    /// Says once, at start-up, whether requests are authenticated.
    pub fn log_mode(&self, listen: &[std::net::SocketAddr]) {
        if self.is_open() {
            tracing::warn!(
                ?listen,
                "API authentication is off: no [[api_keys]] configured; this is safe only because \
                 the server listens on loopback (config validation refuses any other address without keys)"
            );
        } else {
            tracing::info!(
                keys = self.keys.len(),
                "API authentication on: bearer keys with roles"
            );
        }
    }
}

/// The console's session cookie; its value is the key, base64url-encoded
/// so that any key fits a cookie value. It has no expiry: it lives as long
/// as the browser session, and no longer than the key stays configured.
pub const SESSION_COOKIE: &str = "herald_session";
/// The header a cookie-authenticated state change carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The cookie value that carries `key`.
pub fn session_value(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key.as_bytes())
}

/// The key a request's session cookie carries, if any.
pub fn session_key(req: &HttpRequest) -> Option<String> {
    let cookie = req.cookie(SESSION_COOKIE)?;
    let bytes = URL_SAFE_NO_PAD.decode(cookie.value()).ok()?;
    String::from_utf8(bytes).ok().filter(|key| !key.is_empty())
}

/// The CSRF token of a session: a MAC of a fixed label under the key, so
/// it is stable for the session, unguessable without the key, and needs
/// no server-side state (any node of a cluster checks it).
pub fn csrf_token(key: &str) -> String {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(b"herald console csrf v1");
    hex::encode(mac.finalize().into_bytes())
}

/// GET, HEAD and OPTIONS change nothing; every other method may.
fn changes_state(req: &HttpRequest) -> bool {
    !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Refuses a request a browser says comes from another site: by
/// `Sec-Fetch-Site` where the browser sends it, else by an `Origin` that
/// names another host than the request's.
pub fn refuse_cross_site(req: &HttpRequest) -> Result<(), ApiError> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let cross = match header("sec-fetch-site") {
        Some(site) => !matches!(site, "same-origin" | "none"),
        None => header(header::ORIGIN.as_str()).is_some_and(|origin| {
            let host = origin.split_once("://").map_or("", |(_, host)| host);
            origin == "null" || !host.eq_ignore_ascii_case(req.connection_info().host())
        }),
    };
    if cross {
        Err(ApiError::Forbidden(
            "a state-changing request from another site is refused".into(),
        ))
    } else {
        Ok(())
    }
}

/// Decides a request that needs `role`, whichever way it presents its
/// key (see the module doc).
pub fn authorize_request(keys: &ApiKeys, req: &HttpRequest, role: Role) -> Result<(), ApiError> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        // A header that is not visible ASCII cannot hold a valid key.
        return keys.authorize(Some(value.to_str().unwrap_or("")), role);
    }
    let changes = changes_state(req);
    if keys.is_open() {
        return if changes {
            refuse_cross_site(req)
        } else {
            Ok(())
        };
    }
    let Some(key) = session_key(req) else {
        return keys.authorize(None, role);
    };
    keys.grant(
        &key,
        role,
        "the console session's key is no longer configured; sign in again",
    )?;
    if changes {
        refuse_cross_site(req)?;
        let expected = csrf_token(&key);
        let presented = req
            .headers()
            .get(CSRF_HEADER)
            .map_or(&[][..], |v| v.as_bytes());
        if !bool::from(expected.as_bytes().ct_eq(presented)) {
            return Err(ApiError::Forbidden(format!(
                "a state change made with the console's session needs its CSRF token in {CSRF_HEADER}"
            )));
        }
    }
    Ok(())
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Enqueue => "enqueue",
        Role::Read => "read",
        Role::Admin => "admin",
    }
}

/// A role a route can require, as a type.
pub trait RequiredRole {
    const ROLE: Role;
}

/// May enqueue messages.
pub struct EnqueueRole;
/// May read messages and the dead-letter queue.
pub struct ReadRole;
/// May cancel, retry and replay.
pub struct AdminRole;

impl RequiredRole for EnqueueRole {
    const ROLE: Role = Role::Enqueue;
}
impl RequiredRole for ReadRole {
    const ROLE: Role = Role::Read;
}
impl RequiredRole for AdminRole {
    const ROLE: Role = Role::Admin;
}

/// Proof that the request carries a key with role `R`. Taken as a
/// handler's first argument, so a refused request is answered before its
/// body is read.
pub struct Authorized<R>(PhantomData<R>);

impl<R: RequiredRole> FromRequest for Authorized<R> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let decision =
            app_state(req).and_then(|state| authorize_request(&state.api_keys, req, R::ROLE));
        if let Err(err) = &decision {
            tracing::debug!(path = req.path(), role = role_name(R::ROLE), refused = %err, "request refused");
        }
        ready(decision.map(|()| Authorized(PhantomData)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn keys() -> ApiKeys {
        ApiKeys::new(&[
            ApiKey {
                key: Secret::new("reader-key-0123456789"),
                roles: vec![Role::Read],
            },
            ApiKey {
                key: Secret::new("admin-key-0123456789"),
                roles: vec![Role::Admin, Role::Read],
            },
        ])
    }

    fn status(result: Result<(), ApiError>) -> u16 {
        use actix_web::ResponseError;
        result.err().map_or(200, |e| e.status_code().as_u16())
    }

    #[test]
    fn keys_grant_only_their_roles() {
        let keys = keys();
        let bearer = |k: &str| format!("Bearer {k}");
        let reader = bearer("reader-key-0123456789");
        assert_eq!(status(keys.authorize(Some(&reader), Role::Read)), 200);
        assert_eq!(status(keys.authorize(Some(&reader), Role::Admin)), 403);
        let admin = bearer("admin-key-0123456789");
        assert_eq!(status(keys.authorize(Some(&admin), Role::Admin)), 200);
        assert_eq!(status(keys.authorize(Some(&admin), Role::Enqueue)), 403);
    }

    #[test]
    fn missing_malformed_and_unknown_keys_are_401() {
        let keys = keys();
        assert_eq!(status(keys.authorize(None, Role::Read)), 401);
        assert_eq!(status(keys.authorize(Some("Basic abc"), Role::Read)), 401);
        assert_eq!(status(keys.authorize(Some("Bearer "), Role::Read)), 401);
        assert_eq!(
            status(keys.authorize(Some("Bearer reader-key-012345678"), Role::Read)),
            401,
            "a prefix of a key is not the key"
        );
        assert_eq!(
            status(keys.authorize(Some("bearer reader-key-0123456789"), Role::Read)),
            200,
            "the scheme is case-insensitive"
        );
    }

    #[test]
    fn without_keys_everything_is_open() {
        let open = ApiKeys::new(&[]);
        assert!(open.is_open());
        assert_eq!(status(open.authorize(None, Role::Admin)), 200);
    }
}
