//! A loopback SMTP receiver (`mailin-embedded`) for `crashmail demo` and the
//! tests: a real SMTP server on 127.0.0.1 that keeps what it receives.

pub use mailin_embedded::AuthMechanism;
use mailin_embedded::{response, Handler, Response, Server, SslConfig};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One message as the server received it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The EHLO/HELO name the client gave.
    pub helo: String,
    /// The envelope sender (`MAIL FROM`).
    pub mail_from: String,
    /// The envelope recipients (`RCPT TO`).
    pub rcpt_to: Vec<String>,
    /// The message itself, as received after `DATA`.
    pub data: Vec<u8>,
    /// When the server accepted the message (end of `DATA`).
    pub received_at: Option<std::time::SystemTime>,
    /// The SMTP session (connection) that carried it, numbered from 1 in
    /// the order the sessions greeted.
    pub session: usize,
}

#[derive(Default)]
struct Mailbox {
    messages: Mutex<Vec<ReceivedMessage>>,
    arrived: Condvar,
    /// Every authentication attempt: mechanism and user name.
    logins: Mutex<Vec<(String, String)>>,
    /// Sessions that greeted so far.
    sessions: std::sync::atomic::AtomicUsize,
}

/// How the receiver presents itself: STARTTLS with a certificate, and
/// authentication with one user.
#[derive(Clone, Debug, Default)]
pub struct ReceiverOptions {
    /// PEM certificate (chain) and private key; STARTTLS is offered when set.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The one user and password accepted.
    pub credentials: Option<(String, String)>,
    /// The mechanisms offered (after STARTTLS); empty offers no AUTH.
    pub auth: Vec<AuthMechanism>,
    /// The port to listen on (on 127.0.0.1); a free one when `None`.
    pub port: Option<u16>,
}

/// One SMTP session's handler; mailin clones it per connection.
#[derive(Clone)]
struct Collector {
    mailbox: Arc<Mailbox>,
    current: ReceivedMessage,
    credentials: Option<(String, String)>,
    /// This connection's session number; 0 until its first greeting.
    session: usize,
}

impl Collector {
    fn login(&self, mechanism: &str, user: &str, password: &str) -> Response {
        if let Ok(mut logins) = self.mailbox.logins.lock() {
            logins.push((mechanism.to_string(), user.to_string()));
        }
        match &self.credentials {
            Some((expected_user, expected_password))
                if expected_user == user && expected_password == password =>
            {
                response::AUTH_OK
            }
            _ => response::INVALID_CREDENTIALS,
        }
    }
}

impl Handler for Collector {
    fn auth_plain(
        &mut self,
        _authorization_id: &str,
        authentication_id: &str,
        password: &str,
    ) -> Response {
        self.login("PLAIN", authentication_id, password)
    }

    fn auth_login(&mut self, username: &str, password: &str) -> Response {
        self.login("LOGIN", username, password)
    }

    fn helo(&mut self, _ip: IpAddr, domain: &str) -> Response {
        if self.session == 0 {
            self.session = 1 + self
                .mailbox
                .sessions
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.current.helo = domain.to_string();
        response::OK
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.current.mail_from = from.to_string();
        self.current.rcpt_to = to.to_vec();
        self.current.data.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mut message = std::mem::take(&mut self.current);
        message.received_at = Some(std::time::SystemTime::now());
        message.session = self.session;
        self.current.helo = message.helo.clone();
        if let Ok(mut messages) = self.mailbox.messages.lock() {
            messages.push(message);
        }
        self.mailbox.arrived.notify_all();
        response::OK
    }
}

/// A running loopback receiver. It serves until the process exits.
pub struct LoopbackReceiver {
    address: SocketAddr,
    mailbox: Arc<Mailbox>,
}

impl LoopbackReceiver {
    /// Starts a plain receiver on a free port of 127.0.0.1.
    pub fn start() -> std::io::Result<LoopbackReceiver> {
        LoopbackReceiver::start_with(ReceiverOptions::default())
    }

    /// Starts a receiver with STARTTLS and authentication as given.
    pub fn start_with(options: ReceiverOptions) -> std::io::Result<LoopbackReceiver> {
        let listener = TcpListener::bind(("127.0.0.1", options.port.unwrap_or(0)))?;
        let address = listener.local_addr()?;
        let mailbox = Arc::new(Mailbox::default());
        let collector = Collector {
            mailbox: mailbox.clone(),
            current: ReceivedMessage::default(),
            credentials: options.credentials.clone(),
            session: 0,
        };
        let mut server = Server::new(collector);
        server
            .with_name("crashmail-receiver.localhost")
            .with_tcp_listener(listener);
        if let Some((cert, key)) = &options.tls {
            server
                .with_ssl(SslConfig::SelfSigned {
                    cert_path: cert.display().to_string(),
                    key_path: key.display().to_string(),
                })
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        for mechanism in options.auth {
            server.with_auth(mechanism);
        }
        std::thread::Builder::new()
            .name("smtp-receiver".into())
            .spawn(move || {
                if let Err(e) = server.serve() {
                    log::error!("the loopback SMTP receiver stopped: {e}");
                }
            })?;
        Ok(LoopbackReceiver { address, mailbox })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Every authentication attempt so far: mechanism and user name.
    pub fn logins(&self) -> Vec<(String, String)> {
        self.mailbox
            .logins
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// SMTP sessions that greeted so far: connections, not messages.
    pub fn sessions(&self) -> usize {
        self.mailbox
            .sessions
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.mailbox
            .messages
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Waits until at least `count` messages have arrived or `timeout`
    /// passed; returns what arrived.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<ReceivedMessage> {
        let deadline = Instant::now() + timeout;
        let Ok(mut messages) = self.mailbox.messages.lock() else {
            return Vec::new();
        };
        while messages.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            messages = match self.mailbox.arrived.wait_timeout(messages, left) {
                Ok((guard, _)) => guard,
                Err(_) => return Vec::new(),
            };
        }
        messages.clone()
    }
}
