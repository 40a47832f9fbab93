//! Delivering messages over SMTP: one, or several in turn on one connection.
//!
//! The conversation runs on lettre's SMTP connection (rustls, no OpenSSL),
//! step by step rather than through its one-call transport, because delivery
//! needs three things that call hides: the server's `SIZE` limit from the
//! EHLO reply (so the message can be made to fit before it is sent), the
//! point the conversation reached when it broke (a connection lost after the
//! message was handed over is *ambiguous*: the server may have it), and a
//! deadline for the whole send (a socket timeout bounds one read, not a
//! server that trickles).

use crate::config::{Security, SmtpConfig};
use lettre::address::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, SmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What a failed delivery means for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryErrorKind {
    /// 4xx replies, network trouble, timeouts: try again later.
    Transient,
    /// 5xx replies: the server refused for good.
    Permanent,
    /// The connection broke after the message was handed over: the server
    /// may have it. Retried; a duplicate is recognisable by its Message-ID.
    Ambiguous,
    /// The server refused the message as too large (552).
    TooLarge,
    /// Credentials refused (535), no way to authenticate, STARTTLS missing,
    /// an untrusted certificate: retrying helps only once the configuration
    /// or the server changes.
    Configuration,
}

/// Why a message was not delivered.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    pub kind: DeliveryErrorKind,
    pub message: String,
    /// The server's reply code, when it gave one.
    pub code: Option<u16>,
    /// It happened while opening the connection (connecting, the greeting,
    /// STARTTLS, EHLO, the login), before any message: the next message
    /// sent now would meet it too.
    pub while_opening: bool,
}

impl DeliveryError {
    fn new(kind: DeliveryErrorKind, message: impl Into<String>) -> Self {
        DeliveryError {
            kind,
            message: message.into(),
            code: None,
            while_opening: false,
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            DeliveryErrorKind::Transient | DeliveryErrorKind::Ambiguous
        )
    }

    pub fn is_permanent(&self) -> bool {
        self.kind == DeliveryErrorKind::Permanent
    }
}

/// How far the conversation got; read when the whole-send deadline passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum Stage {
    /// Connecting, greeting, securing, logging in.
    Opening = 0,
    /// A connection ready for MAIL FROM.
    Ready = 1,
    Envelope = 2,
    /// The message was handed over; only the final reply is missing.
    MessageSent = 3,
}

/// What was sent, once the server accepted it.
#[derive(Clone, Debug)]
pub struct Delivered {
    /// The server's reply to the message ("250 2.0.0 queued as …").
    pub reply: String,
    /// Size of the message sent, bytes.
    pub size: usize,
    /// The server's advertised limit, if any.
    pub server_size_limit: Option<u64>,
}

/// Builds the message once the size limit is known (the smaller of
/// `MaxMessageSize` and the server's `SIZE`). Returns the message's bytes.
/// Called again when the message is retried on a new connection.
pub type MessageBuilder = Box<dyn FnMut(Option<u64>) -> Result<Vec<u8>, String> + Send>;

/// The envelope: bare addresses.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub from: String,
    pub to: Vec<String>,
}

impl Envelope {
    /// The envelope for a sender and recipients as written in headers or
    /// `AXIS.INI` (`Name <a@b>` or `a@b`): bare addresses only.
    pub fn new<'a>(from: &str, recipients: impl IntoIterator<Item = &'a String>) -> Envelope {
        Envelope {
            from: crate::config::bare_address(from).to_string(),
            to: recipients
                .into_iter()
                .map(|a| crate::config::bare_address(a).to_string())
                .collect(),
        }
    }
}

/// The whole send may take this long at most: the connection, then each of
/// a dozen steps at the configured timeout.
pub fn send_deadline(smtp: &SmtpConfig) -> Duration {
    smtp.connect_timeout + smtp.timeout * 12
}

/// Delivers one message on a connection of its own, within `deadline`
/// whatever the server does.
pub fn deliver(
    smtp: &SmtpConfig,
    envelope: Envelope,
    build: MessageBuilder,
    deadline: Duration,
) -> Result<Delivered, DeliveryError> {
    Session::new(smtp).deliver(envelope, build, deadline)
}

/// An SMTP session that carries several messages in turn, one transaction
/// (MAIL, RCPT, DATA) each: a flush of many reports pays for the connection,
/// TLS and the login once. It connects at the first message, again after a
/// failure, and says QUIT when dropped.
pub struct Session {
    smtp: SmtpConfig,
    worker: Option<Worker>,
}

/// The thread that owns the connection. The deadline is kept by the caller
/// waiting on `results`: a server that trickles cannot hold it, and a
/// worker that overran is abandoned with its connection.
struct Worker {
    jobs: std::sync::mpsc::Sender<Job>,
    results: std::sync::mpsc::Receiver<Result<Delivered, DeliveryError>>,
    stage: Arc<AtomicU8>,
}

enum Job {
    Send(Envelope, MessageBuilder),
    Quit,
}

/// A connection ready for transactions.
struct Open {
    connection: SmtpConnection,
    server_size_limit: Option<u64>,
    /// Messages it carried: a failure on a connection that has carried one
    /// may only mean the server closed it while it waited.
    carried: usize,
}

impl Session {
    pub fn new(smtp: &SmtpConfig) -> Session {
        Session {
            smtp: smtp.clone(),
            worker: None,
        }
    }

    /// Delivers one message, within `deadline` whatever the server does
    /// (the connection, when one must be opened, counts in it).
    pub fn deliver(
        &mut self,
        envelope: Envelope,
        build: MessageBuilder,
        deadline: Duration,
    ) -> Result<Delivered, DeliveryError> {
        if self.worker.is_none() {
            self.worker = Some(Worker::start(&self.smtp)?);
        }
        let worker = self.worker.as_ref().expect("started above");
        worker.stage.store(Stage::Opening as u8, Ordering::Release);
        if worker.jobs.send(Job::Send(envelope, build)).is_err() {
            self.worker = None;
            return Err(DeliveryError::new(
                DeliveryErrorKind::Transient,
                "the delivery thread ended",
            ));
        }
        match worker.results.recv_timeout(deadline) {
            Ok(result) => result,
            Err(_) => {
                let reached = worker.stage.load(Ordering::Acquire);
                // The conversation is abandoned; its thread ends at the next
                // socket timeout, closing the connection, and its result is
                // dropped.
                self.worker = None;
                let kind = if reached >= Stage::MessageSent as u8 {
                    DeliveryErrorKind::Ambiguous
                } else {
                    DeliveryErrorKind::Transient
                };
                Err(DeliveryError {
                    while_opening: reached < Stage::Ready as u8,
                    ..DeliveryError::new(
                        kind,
                        format!(
                            "{}:{}: no end to the conversation within {deadline:?}",
                            self.smtp.host, self.smtp.port
                        ),
                    )
                })
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            if worker.jobs.send(Job::Quit).is_ok() {
                // The thread ends after QUIT's reply; wait for that, but no
                // longer than one step may take.
                let _ = worker.results.recv_timeout(self.smtp.timeout);
            }
        }
    }
}

impl Worker {
    fn start(smtp: &SmtpConfig) -> Result<Worker, DeliveryError> {
        let (jobs, job_receiver) = std::sync::mpsc::channel();
        let (result_sender, results) = std::sync::mpsc::channel();
        let stage = Arc::new(AtomicU8::new(Stage::Opening as u8));
        let worker_stage = stage.clone();
        let smtp = smtp.clone();
        std::thread::Builder::new()
            .name("smtp-delivery".into())
            .spawn(move || {
                let mut open: Option<Open> = None;
                while let Ok(job) = job_receiver.recv() {
                    let (envelope, mut build) = match job {
                        Job::Send(envelope, build) => (envelope, build),
                        Job::Quit => {
                            if let Some(mut open) = open.take() {
                                let _ = open.connection.quit();
                            }
                            return;
                        }
                    };
                    let reused = open.as_ref().is_some_and(|o| o.carried > 0);
                    let mut result =
                        transaction(&smtp, &mut open, &envelope, &mut build, &worker_stage);
                    if reused
                        && result.as_ref().is_err_and(closed_while_idle)
                        && worker_stage.load(Ordering::Acquire) < Stage::MessageSent as u8
                    {
                        // Nothing of this message was handed over: try it
                        // once more on a new connection, within the same
                        // deadline.
                        if let Some(mut stale) = open.take() {
                            stale.connection.abort();
                        }
                        result =
                            transaction(&smtp, &mut open, &envelope, &mut build, &worker_stage);
                    }
                    if result.is_err() {
                        // After a failure the next message starts on a new
                        // connection, whatever state this one is in.
                        if let Some(mut open) = open.take() {
                            open.connection.abort();
                        }
                    }
                    if result_sender.send(result).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| {
                DeliveryError::new(
                    DeliveryErrorKind::Transient,
                    format!("cannot start the delivery: {e}"),
                )
            })?;
        Ok(Worker {
            jobs,
            results,
            stage,
        })
    }
}

/// A failure that a server closing an idle connection explains: the line
/// dropped (no reply), or 421 (the server is closing the channel).
fn closed_while_idle(error: &DeliveryError) -> bool {
    error.kind == DeliveryErrorKind::Transient && matches!(error.code, None | Some(421))
}

/// One message on the open connection, opening one first when there is none.
fn transaction(
    smtp: &SmtpConfig,
    open: &mut Option<Open>,
    envelope: &Envelope,
    build: &mut MessageBuilder,
    stage: &AtomicU8,
) -> Result<Delivered, DeliveryError> {
    let at = |e: lettre::transport::smtp::Error, what: &str| classify(smtp, e, what);
    if open.is_none() {
        stage.store(Stage::Opening as u8, Ordering::Release);
        *open = Some(connect(smtp).map_err(|error| DeliveryError {
            while_opening: true,
            ..error
        })?);
    }
    let open = open.as_mut().expect("opened above");
    stage.store(Stage::Ready as u8, Ordering::Release);
    let limit = match (smtp.max_message_size, open.server_size_limit) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let message = build(limit).map_err(|e| DeliveryError::new(DeliveryErrorKind::Permanent, e))?;
    stage.store(Stage::Envelope as u8, Ordering::Release);

    let connection = &mut open.connection;
    let mut parameters = Vec::new();
    if open.server_size_limit.is_some() {
        parameters.push(MailParameter::Size(message.len()));
    }
    if !message.is_ascii()
        && connection
            .server_info()
            .supports_feature(Extension::EightBitMime)
    {
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    let from = parse_address(&envelope.from)?;
    connection
        .command(Mail::new(Some(from), parameters))
        .map_err(|e| at(e, "MAIL FROM"))?;
    for recipient in &envelope.to {
        let address = parse_address(recipient)?;
        connection
            .command(Rcpt::new(address, vec![]))
            .map_err(|e| at(e, &format!("RCPT TO {recipient}")))?;
    }
    connection.command(Data).map_err(|e| at(e, "DATA"))?;
    stage.store(Stage::MessageSent as u8, Ordering::Release);
    // The message and its final dot in one write: written apart, the dot is
    // a second small segment that Nagle's algorithm holds until the server
    // acknowledges the first, a delayed acknowledgement of up to 40 ms per
    // message on a connection past its first exchanges.
    let sent = match String::from_utf8(with_final_dot(&message)) {
        Ok(text) => connection.command(text),
        Err(_) => connection.message(&message),
    };
    let reply = sent.map_err(|e| {
        let mut error = at(e, "the end of DATA");
        if error.code.is_none() {
            error.kind = DeliveryErrorKind::Ambiguous;
            error.message.push_str(
                " (the server may have the message; a resend carries the same Message-ID)",
            );
        }
        error
    })?;
    open.carried += 1;
    Ok(Delivered {
        reply: format!(
            "{} {}",
            u16::from(reply.code()),
            reply.message().collect::<Vec<_>>().join(" ")
        ),
        size: message.len(),
        server_size_limit: open.server_size_limit,
    })
}

/// Connects, greets, secures and logs in: a connection ready for MAIL FROM.
fn connect(smtp: &SmtpConfig) -> Result<Open, DeliveryError> {
    let at = |e: lettre::transport::smtp::Error, what: &str| classify(smtp, e, what);
    let client_id = client_id(smtp);
    let wrapper = match smtp.security {
        Security::Tls => Some(tls_parameters(smtp)?),
        _ => None,
    };
    let mut connection = SmtpConnection::connect(
        (smtp.host.as_str(), smtp.port),
        Some(smtp.connect_timeout),
        &client_id,
        wrapper.as_ref(),
        None,
    )
    .map_err(|e| connect_failure(smtp, e))?;
    connection
        .set_timeout(Some(smtp.timeout))
        .map_err(|e| DeliveryError::new(DeliveryErrorKind::Transient, e.to_string()))?;

    if smtp.security == Security::StartTls {
        if !connection.can_starttls() {
            return Err(DeliveryError::new(
                DeliveryErrorKind::Configuration,
                format!("{}:{}: STARTTLS was required (Security = starttls) but the server does not offer it; nothing was sent", smtp.host, smtp.port),
            ));
        }
        connection
            .starttls(&tls_parameters(smtp)?, &client_id)
            .map_err(|e| at(e, "STARTTLS"))?;
    }
    // lettre keeps the EHLO reply's keywords but not SIZE's value: ask again.
    let ehlo = connection
        .command(Ehlo::new(client_id.clone()))
        .map_err(|e| at(e, "EHLO"))?;
    let server_size_limit = ehlo
        .message()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            words
                .next()
                .filter(|w| w.eq_ignore_ascii_case("SIZE"))
                .and_then(|_| words.next())
                .and_then(|n| n.parse::<u64>().ok())
        })
        .filter(|n| *n > 0);

    if let (Some(user), Some(password)) = (&smtp.user, &smtp.password) {
        if !connection.is_encrypted() {
            return Err(DeliveryError::new(
                DeliveryErrorKind::Configuration,
                "credentials are never sent without TLS",
            ));
        }
        let credentials = Credentials::new(user.clone(), password.expose().to_string());
        connection
            .auth(&[Mechanism::Plain, Mechanism::Login], &credentials)
            .map_err(|e| {
                let mut error = at(e, "AUTH");
                if error.kind != DeliveryErrorKind::Transient {
                    error.kind = DeliveryErrorKind::Configuration;
                }
                if error.message.contains("No compatible authentication mechanism") {
                    error.message = format!("{}:{}: User and Password are set, but the server offers no authentication crashmail speaks (PLAIN, LOGIN); nothing was sent", smtp.host, smtp.port);
                }
                error
            })?;
    }
    Ok(Open {
        connection,
        server_size_limit,
        carried: 0,
    })
}

/// The message as DATA carries it: a dot that begins a line doubled
/// (RFC 5321 4.5.2), then the line with a lone dot that ends it.
fn with_final_dot(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 5);
    let mut line_start = true;
    for (index, &byte) in message.iter().enumerate() {
        if byte == b'.' && line_start {
            out.push(b'.');
        }
        out.push(byte);
        line_start = byte == b'\n' && index > 0 && message[index - 1] == b'\r';
    }
    out.extend_from_slice(b"\r\n.\r\n");
    out
}

fn parse_address(address: &str) -> Result<Address, DeliveryError> {
    address.parse().map_err(|e| {
        DeliveryError::new(
            DeliveryErrorKind::Configuration,
            format!("{address:?} is not a valid address: {e}"),
        )
    })
}

/// Sorts a lettre error into what it means for the report.
fn classify(smtp: &SmtpConfig, error: lettre::transport::smtp::Error, what: &str) -> DeliveryError {
    let code = error.status().map(u16::from);
    let kind = match code {
        Some(552) => DeliveryErrorKind::TooLarge,
        Some(535) | Some(534) | Some(530) => DeliveryErrorKind::Configuration,
        Some(code) if (500..600).contains(&code) => DeliveryErrorKind::Permanent,
        Some(_) => DeliveryErrorKind::Transient,
        None if error.is_tls() => DeliveryErrorKind::Configuration,
        None => DeliveryErrorKind::Transient,
    };
    // For a refusal, the server's own words: "550 5.7.1 …".
    let detail = match code {
        Some(code) => {
            let text = error.to_string();
            let words = text
                .split_once("): ")
                .map(|(_, words)| words.to_string())
                .unwrap_or(text);
            format!("the server answered {code} {words}")
        }
        None => error_chain(&error),
    };
    DeliveryError {
        kind,
        message: format!("{}:{}: {what}: {detail}", smtp.host, smtp.port),
        code,
        while_opening: false,
    }
}

/// Why opening the connection failed, in the words `crashmail check` uses:
/// lettre waits for the greeting within the connect deadline, and reports
/// its absence as a bare read error.
fn connect_failure(smtp: &SmtpConfig, error: lettre::transport::smtp::Error) -> DeliveryError {
    let io_kind = {
        let mut source = std::error::Error::source(&error);
        let mut kind = None;
        while let Some(cause) = source {
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                kind = Some(io.kind());
            }
            source = cause.source();
        }
        kind
    };
    let silent = matches!(io_kind, Some(std::io::ErrorKind::WouldBlock));
    let closed = error.is_response() && error.to_string().contains("incomplete");
    let detail = if silent {
        format!(
            "the server accepted the connection but sent no greeting within {}s (is this port an SMTP server?)",
            smtp.connect_timeout.as_secs()
        )
    } else if closed {
        "the server accepted the connection and closed it without a greeting (busy, or refusing this client)".to_string()
    } else {
        return classify(smtp, error, "connect");
    };
    DeliveryError::new(
        DeliveryErrorKind::Transient,
        format!("{}:{}: {detail}", smtp.host, smtp.port),
    )
}

/// The EHLO name (see [`SmtpConfig::ehlo_name`]), else the address literal
/// of the interface that leads to the server.
fn client_id(smtp: &SmtpConfig) -> ClientId {
    if let Some(name) = smtp.ehlo_name() {
        return ClientId::Domain(name);
    }
    match outbound_address(smtp) {
        Some(std::net::IpAddr::V6(v6)) => ClientId::Ipv6(v6),
        Some(std::net::IpAddr::V4(v4)) => ClientId::Ipv4(v4),
        None => ClientId::Ipv4(std::net::Ipv4Addr::LOCALHOST),
    }
}

/// Our address on the route to the server. Connecting a UDP socket sends
/// nothing; it only picks the route.
fn outbound_address(smtp: &SmtpConfig) -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    socket.connect((smtp.host.as_str(), smtp.port)).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

fn tls_parameters(smtp: &SmtpConfig) -> Result<TlsParameters, DeliveryError> {
    let config_error =
        |message: String| DeliveryError::new(DeliveryErrorKind::Configuration, message);
    let mut builder = TlsParameters::builder(smtp.tls_name().to_string());
    if let Some(ca) = &smtp.ca_file {
        for der in super::tls::read_pem_certificates(ca).map_err(config_error)? {
            let certificate = Certificate::from_der(der.to_vec())
                .map_err(|e| config_error(format!("CaFile {}: {e}", ca.display())))?;
            builder = builder.add_root_certificate(certificate);
        }
    }
    if !smtp.tls_verify {
        builder = builder.dangerous_accept_invalid_certs(true);
    }
    builder.build_rustls().map_err(|e| {
        config_error(format!(
            "TLS could not be set up for {}: {e}",
            smtp.tls_name()
        ))
    })
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dot_that_begins_a_line_is_doubled_and_the_message_ends_with_a_lone_dot() {
        assert_eq!(
            with_final_dot(b".a\r\nb.\r\n.\r\n..c\n.d"),
            b"..a\r\nb.\r\n..\r\n...c\n.d\r\n.\r\n".to_vec()
        );
        assert_eq!(with_final_dot(b""), b"\r\n.\r\n".to_vec());
    }
}
