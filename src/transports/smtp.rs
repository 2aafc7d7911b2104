//! The `smtp` transport: emails over a pooled SMTP connection (lettre),
//! plain, STARTTLS or implicit TLS through rustls, with optional AUTH, and
//! lettre's errors translated into [`TransportError`] by their SMTP reply.
//!
//! It owns its kind's part of the config: the `[transports.<name>]` keys
//! it takes, their checks, and the transport built from them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::{Error as SmtpError, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;

use crate::config::{KindTable, Secret, TransportSettings};
use crate::domain::{Channel, Message};
use crate::time::Clock;

use super::email::build_email;
use super::{Delivery, Gated, KindSpec, Transport, TransportError, TransportKind};

pub const DEFAULT_SMTP_PORT: u16 = 25;

// Registered in `super::KINDS`; unregistered, it would be dead code.
pub(super) const KIND: KindSpec = KindSpec {
    name: "smtp",
    keys: &[
        "host",
        "port",
        "tls",
        "username",
        "password_env",
        "ca_file",
        "timeout_ms",
    ],
    channels: &[Channel::Email],
    native: &[],
    configure,
};

/// SMTP connection security.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    None,
    Starttls,
    Tls,
}

/// The `smtp` kind's keys of `[transports.<name>]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SmtpKeys {
    /// Server host name. Required.
    host: Option<String>,
    /// Server port. Default 25.
    port: Option<u16>,
    /// none | starttls | tls. Default none.
    tls: Option<TlsMode>,
    /// User for AUTH.
    username: Option<String>,
    /// Environment variable holding the password.
    password_env: Option<String>,
    /// PEM file of certificates to trust besides the public roots (a
    /// relay with a private CA or a self-signed certificate).
    ca_file: Option<String>,
    /// Time-out of one delivery, in ms. Default 10000.
    timeout_ms: Option<u64>,
}

/// An SMTP transport's settings: its [`SmtpOptions`], whose pool size is
/// set from the transport's concurrency when it is built (the kind's keys
/// do not know it).
#[derive(Debug, Clone)]
pub struct SmtpSettings(SmtpOptions);

fn configure(table: &mut KindTable<'_>) -> Option<Arc<dyn TransportKind>> {
    let keys: SmtpKeys = table.keys()?;
    let timeout = table.timeout(keys.timeout_ms);
    let host = keys.host.filter(|h| !h.is_empty());
    if host.is_none() {
        table.problem("host", "an smtp transport needs a host");
    }
    if keys.port == Some(0) {
        table.problem("port", "must be 1 to 65535");
    }
    if keys.password_env.is_some() && keys.username.is_none() {
        table.problem("username", "a password needs a username");
    }
    let password = table.secret("password_env", keys.password_env.as_deref());
    let tls = keys.tls.unwrap_or(TlsMode::None);
    if keys.ca_file.is_some() && tls == TlsMode::None {
        table.problem(
            "ca_file",
            "trusted certificates need tls = \"starttls\" or \"tls\"",
        );
    }
    Some(Arc::new(SmtpSettings(SmtpOptions {
        host: host?,
        port: keys.port.unwrap_or(DEFAULT_SMTP_PORT),
        tls,
        username: keys.username,
        password,
        ca_file: keys.ca_file.map(PathBuf::from),
        timeout: timeout?,
        pool_size: 1,
    })))
}

impl TransportKind for SmtpSettings {
    fn name(&self) -> &'static str {
        "smtp"
    }

    fn build(
        &self,
        settings: &TransportSettings,
        _members: Vec<Gated>,
        _clock: Arc<dyn Clock>,
    ) -> Result<Arc<dyn Transport>, TransportError> {
        let options = SmtpOptions {
            pool_size: u32::try_from(settings.delivery.concurrency.get()).unwrap_or(u32::MAX),
            ..self.0.clone()
        };
        Ok(Arc::new(SmtpTransport::new(
            settings.name.clone(),
            options,
        )?))
    }
}

/// Where and how to reach an SMTP server.
#[derive(Debug, Clone)]
pub struct SmtpOptions {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// AUTH is used when both are set.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// PEM certificates to trust besides the public roots.
    pub ca_file: Option<PathBuf>,
    /// Bounds each network step: connecting, and each SMTP command.
    pub timeout: Duration,
    /// Connections kept open at most; the transport's concurrency is
    /// the natural size, as no more deliveries run at once.
    pub pool_size: u32,
}

/// Delivers emails to one SMTP server.
pub struct SmtpTransport {
    name: String,
    server: String,
    /// Always `Some` until dropped; see the `Drop` impl.
    mailer: Option<AsyncSmtpTransport<Tokio1Executor>>,
}

impl SmtpTransport {
    /// Prepares the transport; no connection is opened until the first
    /// delivery, so a server that is down does not stop Herald starting.
    ///
    /// Must run inside a Tokio runtime: lettre's pool spawns the task that
    /// closes idle connections on the runtime current when it is built.
    pub fn new(name: impl Into<String>, options: SmtpOptions) -> Result<Self, TransportError> {
        let name = name.into();
        if tokio::runtime::Handle::try_current().is_err() {
            // lettre would panic; an error names the transport instead.
            return Err(TransportError::Local(format!(
                "transport `{name}`: an SMTP transport must be built inside a Tokio runtime"
            )));
        }
        super::install_crypto_provider();
        let tls = match options.tls {
            TlsMode::None => Tls::None,
            TlsMode::Starttls => Tls::Required(tls_parameters(&name, &options)?),
            TlsMode::Tls => Tls::Wrapper(tls_parameters(&name, &options)?),
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(options.host.clone())
                .port(options.port)
                .tls(tls)
                .timeout(Some(options.timeout))
                .pool_config(PoolConfig::new().max_size(options.pool_size.max(1)));
        if let (Some(username), Some(password)) = (&options.username, &options.password) {
            builder = builder.credentials(Credentials::new(
                username.clone(),
                password.expose().to_owned(),
            ));
        }
        Ok(SmtpTransport {
            name,
            server: format!("{}:{}", options.host, options.port),
            mailer: Some(builder.build()),
        })
    }
}

fn tls_parameters(name: &str, options: &SmtpOptions) -> Result<TlsParameters, TransportError> {
    let fail = |what: String| TransportError::Local(format!("transport `{name}`: {what}"));
    let mut builder = TlsParameters::builder(options.host.clone());
    if let Some(path) = &options.ca_file {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read ca_file {}: {e}", path.display())))?;
        // One certificate per PEM block: a bundle may hold several.
        const END: &str = "-----END CERTIFICATE-----";
        let blocks: Vec<String> = pem
            .split_inclusive(END)
            .filter(|block| block.contains("-----BEGIN CERTIFICATE-----"))
            .map(str::to_owned)
            .collect();
        if blocks.is_empty() {
            return Err(fail(format!(
                "ca_file {} holds no PEM certificate",
                path.display()
            )));
        }
        for block in blocks {
            let certificate = Certificate::from_pem(block.as_bytes())
                .map_err(|e| fail(format!("ca_file {}: {e}", path.display())))?;
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder
        .build_rustls()
        .map_err(|e| fail(format!("TLS set-up: {e}")))
}

#[async_trait]
impl Transport for SmtpTransport {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "smtp"
    }

    async fn deliver(&self, message: &Message) -> Result<Delivery, TransportError> {
        let email = build_email(message)?;
        let mailer = self.mailer.as_ref().ok_or_else(|| {
            TransportError::Local(format!("transport `{}` is shutting down", self.name))
        })?;
        let response = mailer
            .send(email)
            .await
            .map_err(|e| classify(&e, &self.server))?;
        Ok(Delivery {
            transport: self.name.clone(),
            detail: Some(serde_json::json!({
                "server": self.server,
                "code": u16::from(response.code()),
                "reply": response.message().collect::<Vec<_>>().join(" "),
            })),
            provider_message_id: None,
        })
    }
}

impl Drop for SmtpTransport {
    /// lettre's pool spawns a task to close its connections when dropped,
    /// and panics when no Tokio runtime is current: a shutdown that drops
    /// the transports after the runtime stopped would abort the process.
    /// Then a throw-away runtime takes the task; dropping that runtime
    /// drops the connections with it, closing their sockets.
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_ok() {
            return;
        }
        let Some(mailer) = self.mailer.take() else {
            return;
        };
        match tokio::runtime::Builder::new_current_thread().build() {
            Ok(runtime) => {
                let _entered = runtime.enter();
                drop(mailer);
            }
            // Without any runtime the pool cannot be dropped safely;
            // leaking it at shutdown costs a few sockets the OS reclaims.
            Err(_) => std::mem::forget(mailer),
        }
    }
}

/// Translates lettre's error by the meaning lettre gives it: a 5xx reply
/// is final, a 4xx reply is worth retrying, and anything that went wrong
/// before a reply (no connection, no answer in time, a broken TLS
/// handshake) is the server's reachability, not the message, so it is
/// retried too.
pub(crate) fn classify(err: &SmtpError, server: &str) -> TransportError {
    let message = format!("{server}: {err}");
    let code = err.status().map(u16::from);
    if let Some(code @ (530 | 534 | 535 | 538)) = code {
        // Authentication refused or required: Herald's credentials or TLS
        // settings, not the message. Dead-lettering would lose every
        // message until an operator fixes the config, and retrying would
        // spend their attempts; as every provider's refused credentials,
        // it opens the breaker and the message waits unattempted.
        return TransportError::Unauthorized {
            code: Some(code),
            message: format!(
                "{message} (authentication: check the transport's username, password and tls)"
            ),
        };
    }
    if err.is_permanent() {
        TransportError::Rejected { code, message }
    } else if err.is_transient() {
        TransportError::Temporary {
            code,
            message,
            retry_after: None,
        }
    } else if err.is_timeout() {
        TransportError::Timeout(message)
    } else if err.is_client() || err.is_transport_shutdown() {
        // lettre refused before talking (no common AUTH mechanism, STARTTLS
        // missing, 8BITMIME/SMTPUTF8 unsupported): the server and the
        // configuration disagree, which an operator can fix.
        TransportError::Local(message)
    } else if err.is_response() {
        // A reply that does not parse: a broken or overloaded server.
        TransportError::Temporary {
            code: None,
            message,
            retry_after: None,
        }
    } else {
        // Connection, network and TLS errors.
        TransportError::Connection(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> SmtpOptions {
        SmtpOptions {
            host: "mail.example.com".into(),
            port: 465,
            tls: TlsMode::Tls,
            username: Some("herald".into()),
            password: Some(Secret::new("s3cret")),
            ca_file: None,
            timeout: Duration::from_secs(5),
            pool_size: 4,
        }
    }

    #[tokio::test]
    async fn every_tls_mode_builds_without_connecting() {
        for tls in [TlsMode::None, TlsMode::Starttls, TlsMode::Tls] {
            let transport =
                SmtpTransport::new("smtp-main", SmtpOptions { tls, ..options() }).unwrap();
            assert_eq!(transport.name(), "smtp-main");
            assert_eq!(transport.kind(), "smtp");
            assert_eq!(transport.server, "mail.example.com:465");
        }
    }

    #[test]
    fn dropping_after_the_runtime_stopped_does_not_panic() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let transport = runtime
            .block_on(async { SmtpTransport::new("smtp-main", options()) })
            .unwrap();
        drop(runtime);
        drop(transport);
    }

    #[test]
    fn outside_a_runtime_building_is_an_error_not_a_panic() {
        let err = SmtpTransport::new("smtp-main", options()).err().unwrap();
        assert!(matches!(err, TransportError::Local(_)), "{err}");
    }
}
