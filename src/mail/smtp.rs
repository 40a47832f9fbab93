//! Sending over SMTP with lettre (rustls): TLS verified, credentials only
//! over TLS, every step bounded by the configured timeout.

use crate::config::{Security, SmtpConfig};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Message, SmtpTransport, Transport};

/// Whether trying again may help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryErrorKind {
    /// 4xx, network trouble, timeouts: try again later.
    Transient,
    /// 5xx: the server refused for good.
    Permanent,
}

/// Why a message was not delivered.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    pub kind: DeliveryErrorKind,
    pub message: String,
}

impl DeliveryError {
    pub fn is_transient(&self) -> bool {
        self.kind == DeliveryErrorKind::Transient
    }

    pub fn is_permanent(&self) -> bool {
        self.kind == DeliveryErrorKind::Permanent
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
    let config_error = |message: String| DeliveryError {
        kind: DeliveryErrorKind::Permanent,
        message,
    };
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

fn transport(smtp: &SmtpConfig) -> Result<SmtpTransport, DeliveryError> {
    let tls = match smtp.security {
        Security::StartTls => Tls::Required(tls_parameters(smtp)?),
        Security::Tls => Tls::Wrapper(tls_parameters(smtp)?),
        Security::None => Tls::None,
    };
    let mut builder = SmtpTransport::builder_dangerous(smtp.host.as_str())
        .port(smtp.port)
        .tls(tls)
        .timeout(Some(smtp.timeout))
        .hello_name(client_id(smtp));
    if let (Some(user), Some(password)) = (&smtp.user, &smtp.password) {
        if smtp.security == Security::None {
            return Err(DeliveryError {
                kind: DeliveryErrorKind::Permanent,
                message: "credentials are never sent without TLS".into(),
            });
        }
        builder = builder
            .credentials(Credentials::new(
                user.clone(),
                password.expose().to_string(),
            ))
            .authentication(vec![Mechanism::Plain, Mechanism::Login]);
    }
    Ok(builder.build())
}

/// Sends one message and says whether a failure is worth retrying.
pub fn send(smtp: &SmtpConfig, message: &Message) -> Result<(), DeliveryError> {
    let transport = transport(smtp)?;
    match transport.send(message) {
        Ok(response) if response.is_positive() => Ok(()),
        Ok(response) => Err(DeliveryError {
            kind: DeliveryErrorKind::Transient,
            message: format!("the server answered {}", response.code()),
        }),
        Err(e) => {
            let kind = if e.is_permanent() {
                DeliveryErrorKind::Permanent
            } else {
                DeliveryErrorKind::Transient
            };
            Err(DeliveryError {
                kind,
                message: format!("{}:{}: {}", smtp.host, smtp.port, error_chain(&e)),
            })
        }
    }
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
