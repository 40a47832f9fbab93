//! Delivering one message over SMTP.
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
}

impl DeliveryError {
    fn new(kind: DeliveryErrorKind, message: impl Into<String>) -> Self {
        DeliveryError {
            kind,
            message: message.into(),
            code: None,
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
    Connecting = 0,
    Greeted = 1,
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
pub type MessageBuilder = Box<dyn FnOnce(Option<u64>) -> Result<Vec<u8>, String> + Send>;

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

/// Delivers one message, within `deadline` whatever the server does.
pub fn deliver(
    smtp: &SmtpConfig,
    envelope: Envelope,
    build: MessageBuilder,
    deadline: Duration,
) -> Result<Delivered, DeliveryError> {
    let stage = Arc::new(AtomicU8::new(Stage::Connecting as u8));
    let (sender, receiver) = std::sync::mpsc::channel();
    let worker_stage = stage.clone();
    let smtp_owned = smtp.clone();
    std::thread::Builder::new()
        .name("smtp-delivery".into())
        .spawn(move || {
            let result = converse(&smtp_owned, &envelope, build, &worker_stage);
            let _ = sender.send(result);
        })
        .map_err(|e| {
            DeliveryError::new(
                DeliveryErrorKind::Transient,
                format!("cannot start the delivery: {e}"),
            )
        })?;
    match receiver.recv_timeout(deadline) {
        Ok(result) => result,
        Err(_) => {
            // The conversation is abandoned; its thread ends at the next
            // socket timeout and its result is dropped.
            let reached = stage.load(Ordering::Acquire);
            let kind = if reached >= Stage::MessageSent as u8 {
                DeliveryErrorKind::Ambiguous
            } else {
                DeliveryErrorKind::Transient
            };
            Err(DeliveryError::new(
                kind,
                format!(
                    "{}:{}: no end to the conversation within {deadline:?}",
                    smtp.host, smtp.port
                ),
            ))
        }
    }
}

fn converse(
    smtp: &SmtpConfig,
    envelope: &Envelope,
    build: MessageBuilder,
    stage: &AtomicU8,
) -> Result<Delivered, DeliveryError> {
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
    .map_err(|e| at(e, "connect"))?;
    connection
        .set_timeout(Some(smtp.timeout))
        .map_err(|e| DeliveryError::new(DeliveryErrorKind::Transient, e.to_string()))?;
    stage.store(Stage::Greeted as u8, Ordering::Release);

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

    let limit = match (smtp.max_message_size, server_size_limit) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let message = build(limit).map_err(|e| DeliveryError::new(DeliveryErrorKind::Permanent, e))?;
    stage.store(Stage::Envelope as u8, Ordering::Release);

    let mut parameters = Vec::new();
    if server_size_limit.is_some() {
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
    let reply = connection.message(&message).map_err(|e| {
        let mut error = at(e, "the end of DATA");
        if error.code.is_none() {
            error.kind = DeliveryErrorKind::Ambiguous;
            error.message.push_str(
                " (the server may have the message; a resend carries the same Message-ID)",
            );
        }
        error
    })?;
    let _ = connection.quit();
    Ok(Delivered {
        reply: format!(
            "{} {}",
            u16::from(reply.code()),
            reply.message().collect::<Vec<_>>().join(" ")
        ),
        size: message.len(),
        server_size_limit,
    })
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
    }
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
