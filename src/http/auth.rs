//! Access control: bearer API keys from config, each with roles. A route
//! states the role it needs by taking an [`Authorized`] argument
//! (`Authorized<AdminRole>`); this module is the only place that reads the
//! `Authorization` header or compares keys.
//!
//! Keys are compared as SHA-256 digests in constant time, against every
//! configured key, so neither the position of a mismatch nor a key's
//! length shows in the response time. Keys are never logged. With no keys
//! configured the API is open; config validation only allows that on a
//! loopback listen address.

use std::future::{Ready, ready};
use std::marker::PhantomData;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest};
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
    fn roles_of(&self, presented: &str) -> Option<Vec<Role>> {
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
        let roles = self.roles_of(token).ok_or_else(|| ApiError::Unauthorized {
            message: "the API key is not valid".into(),
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
        let decision = app_state(req).and_then(|state| {
            let header = req.headers().get(header::AUTHORIZATION);
            // A header that is not visible ASCII cannot hold a valid key.
            let value = header.map(|v| v.to_str().unwrap_or(""));
            state.api_keys.authorize(value, R::ROLE)
        });
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
