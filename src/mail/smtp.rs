//! Sending over SMTP with lettre (rustls): TLS verified, credentials only
//! over TLS, every step bounded by the configured timeout.

use crate::config::{Security, SmtpConfig};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
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

/// The EHLO name: `HeloName`, else `Domain`, else the host name when it is
/// fully qualified, else the address literal `[127.0.0.1]`.
fn client_id(smtp: &SmtpConfig) -> ClientId {
    if let Some(name) = smtp.helo_name.as_ref().or(smtp.domain.as_ref()) {
        return ClientId::Domain(name.trim_end_matches('.').to_string());
    }
    match hostname_fqdn() {
        Some(host) => ClientId::Domain(host),
        None => ClientId::Ipv4(std::net::Ipv4Addr::LOCALHOST),
    }
}

fn hostname_fqdn() -> Option<String> {
    let host = sysinfo::System::host_name().ok()?;
    let host = host.trim_end_matches('.');
    host.contains('.').then(|| host.to_string())
}

fn transport(smtp: &SmtpConfig) -> Result<SmtpTransport, DeliveryError> {
    let tls_parameters = || {
        TlsParameters::new(smtp.host.clone()).map_err(|e| DeliveryError {
            kind: DeliveryErrorKind::Permanent,
            message: format!("TLS could not be set up for {}: {e}", smtp.host),
        })
    };
    let tls = match smtp.security {
        Security::StartTls => Tls::Required(tls_parameters()?),
        Security::Tls => Tls::Wrapper(tls_parameters()?),
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
