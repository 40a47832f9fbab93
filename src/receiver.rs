//! A loopback SMTP receiver (`mailin-embedded`) for `crashmail demo` and the
//! tests: a real SMTP server on 127.0.0.1 that keeps what it receives.

use mailin_embedded::{response, Handler, Response, Server};
use std::net::{IpAddr, SocketAddr, TcpListener};
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
}

#[derive(Default)]
struct Mailbox {
    messages: Mutex<Vec<ReceivedMessage>>,
    arrived: Condvar,
}

/// One SMTP session's handler; mailin clones it per connection.
#[derive(Clone)]
struct Collector {
    mailbox: Arc<Mailbox>,
    current: ReceivedMessage,
}

impl Handler for Collector {
    fn helo(&mut self, _ip: IpAddr, domain: &str) -> Response {
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
    /// Starts a receiver on a free port of 127.0.0.1.
    pub fn start() -> std::io::Result<LoopbackReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let mailbox = Arc::new(Mailbox::default());
        let collector = Collector {
            mailbox: mailbox.clone(),
            current: ReceivedMessage::default(),
        };
        let mut server = Server::new(collector);
        server
            .with_name("crashmail-receiver.localhost")
            .with_tcp_listener(listener);
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
