//! A real SMTP server for tests (mailin-embedded on 127.0.0.1) that keeps
//! what it receives.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mailin_embedded::{Handler, Response, Server, SslConfig};

/// One email as the SMTP server received it.
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

impl Received {
    /// The value of the first header `name` in the top-level header block.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        head.split("\r\n").find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

/// Records what arrives; answers RCPT with `rcpt_reply` when set.
#[derive(Clone)]
struct Recorder {
    inbox: Arc<Mutex<Vec<Received>>>,
    /// EHLOs seen: one per SMTP session, so one per connection.
    sessions: Arc<AtomicUsize>,
    rcpt_reply: Option<(u16, &'static str)>,
    /// With AUTH: the only user and password accepted.
    credentials: Option<(&'static str, &'static str)>,
    current: Received,
}

impl Handler for Recorder {
    fn helo(&mut self, _ip: std::net::IpAddr, _domain: &str) -> Response {
        self.sessions.fetch_add(1, Ordering::SeqCst);
        mailin_embedded::response::OK
    }

    fn mail(&mut self, _ip: std::net::IpAddr, _domain: &str, from: &str) -> Response {
        self.current = Received {
            from: from.to_owned(),
            ..Received::default()
        };
        mailin_embedded::response::OK
    }

    fn auth_plain(
        &mut self,
        _authorization_id: &str,
        authentication_id: &str,
        password: &str,
    ) -> Response {
        match self.credentials {
            Some(expected) if expected == (authentication_id, password) => {
                mailin_embedded::response::AUTH_OK
            }
            _ => mailin_embedded::response::INVALID_CREDENTIALS,
        }
    }

    fn rcpt(&mut self, _to: &str) -> Response {
        match self.rcpt_reply {
            Some((code, text)) => Response::custom(code, text.to_owned()),
            None => mailin_embedded::response::OK,
        }
    }

    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.current.to = to.to_vec();
        mailin_embedded::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.data.push_str(&String::from_utf8_lossy(buf));
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        self.inbox
            .lock()
            .expect("inbox lock")
            .push(std::mem::take(&mut self.current));
        mailin_embedded::response::OK
    }
}

/// A running test SMTP server.
pub struct SmtpServer {
    pub port: u16,
    pub inbox: Arc<Mutex<Vec<Received>>>,
    pub sessions: Arc<AtomicUsize>,
}

impl SmtpServer {
    pub fn received(&self) -> Vec<Received> {
        self.inbox.lock().expect("inbox lock").clone()
    }
}

/// Starts an SMTP server on 127.0.0.1. Its thread lives as long as the
/// test process.
pub fn smtp_server(rcpt_reply: Option<(u16, &'static str)>) -> SmtpServer {
    start(rcpt_reply, None, SslConfig::None)
}

/// An SMTP server that offers STARTTLS with a fresh self-signed
/// certificate for 127.0.0.1 and requires AUTH PLAIN as `credentials`
/// (mailin offers AUTH only over TLS). Returns the server and the
/// certificate's PEM file, which a client must trust.
pub fn smtp_tls_server(
    dir: &std::path::Path,
    credentials: (&'static str, &'static str),
) -> (SmtpServer, std::path::PathBuf) {
    herald::transports::install_crypto_provider();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .expect("a self-signed certificate");
    let cert_path = dir.join("smtp-cert.pem");
    let key_path = dir.join("smtp-key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("write key");
    let ssl = SslConfig::SelfSigned {
        cert_path: cert_path.display().to_string(),
        key_path: key_path.display().to_string(),
    };
    (start(None, Some(credentials), ssl), cert_path)
}

fn start(
    rcpt_reply: Option<(u16, &'static str)>,
    credentials: Option<(&'static str, &'static str)>,
    ssl: SslConfig,
) -> SmtpServer {
    let inbox = Arc::new(Mutex::new(Vec::new()));
    let sessions = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let mut server = Server::new(Recorder {
        inbox: Arc::clone(&inbox),
        sessions: Arc::clone(&sessions),
        rcpt_reply,
        credentials,
        current: Received::default(),
    });
    server
        .with_name("mx.test")
        .with_ssl(ssl)
        .expect("TLS set-up")
        .with_tcp_listener(listener);
    if credentials.is_some() {
        server.with_auth(mailin_embedded::AuthMechanism::Plain);
    }
    std::thread::spawn(move || {
        if let Err(e) = server.serve() {
            eprintln!("test SMTP server stopped: {e}");
        }
    });
    SmtpServer {
        port,
        inbox,
        sessions,
    }
}
