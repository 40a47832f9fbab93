//! The application's own emails — an order acknowledgment, a nightly
//! summary — through the same `AXIS.INI` settings and the same outbox as
//! crash reports, so they get the same retries and never get lost.
//!
//! ```no_run
//! use crashmail::outgoing::{Email, Mailer};
//! let mailer = Mailer::from_axis_ini(None)?;
//! let email = Email::new("Order 1042 received", "Thank you for your order.")
//!     .to("customer@example.com");
//! mailer.send(&email)?; // safe in the outbox; delivery follows
//! # Ok::<(), crashmail::outgoing::MailerError>(())
//! ```
//!
//! Every header value is made safe here: line breaks and other control
//! characters in a subject or a name are folded into spaces, so nothing
//! typed or received can add a header; recipients must be plain addresses.

use crate::config::{self, Config};
use crate::outbox::Outbox;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One email to send.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    #[serde(skip)]
    pub attachments: Vec<Attachment>,
}

/// A file attached to an email.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

impl Email {
    pub fn new(subject: impl Into<String>, text: impl Into<String>) -> Email {
        Email {
            subject: subject.into(),
            text: text.into(),
            ..Email::default()
        }
    }

    pub fn to(mut self, address: impl Into<String>) -> Email {
        self.to.push(address.into());
        self
    }

    pub fn cc(mut self, address: impl Into<String>) -> Email {
        self.cc.push(address.into());
        self
    }

    /// An HTML alternative to the text body.
    pub fn html(mut self, html: impl Into<String>) -> Email {
        self.html = Some(html.into());
        self
    }

    pub fn attach(
        mut self,
        name: impl Into<String>,
        content_type: impl Into<String>,
        bytes: Vec<u8>,
    ) -> Email {
        self.attachments.push(Attachment {
            name: name.into(),
            content_type: content_type.into(),
            bytes,
        });
        self
    }

    /// Attaches a file, named after it, typed by its extension.
    pub fn attach_file(self, path: &Path) -> Result<Email, MailerError> {
        let bytes = std::fs::read(path)
            .map_err(|e| MailerError::Attachment(format!("{}: {e}", path.display())))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "attachment".into());
        Ok(self.attach(name.clone(), content_type_for(&name), bytes))
    }
}

fn content_type_for(name: &str) -> String {
    let extension = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "zip" => "application/zip",
        "txt" | "log" => "text/plain",
        "pdf" => "application/pdf",
        "json" => "application/json",
        "html" | "htm" => "text/html",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "eml" => "message/rfc822",
        _ => "application/octet-stream",
    }
    .to_string()
}

/// Why an email could not be queued or sent.
#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error(transparent)]
    Configuration(#[from] config::ConfigError),
    #[error("{0:?} is not a valid email address")]
    InvalidAddress(String),
    #[error("the email has no recipient")]
    NoRecipient,
    #[error("attachment {0}")]
    Attachment(String),
    #[error("the outbox: {0}")]
    Outbox(#[from] std::io::Error),
    #[error("the message could not be built: {0}")]
    Message(String),
}

impl MailerError {
    /// A stable short name, for logs and exit codes.
    pub fn name(&self) -> &'static str {
        match self {
            MailerError::Configuration(_) => "configuration",
            MailerError::InvalidAddress(_) => "invalid-address",
            MailerError::NoRecipient => "no-recipient",
            MailerError::Attachment(_) => "attachment",
            MailerError::Outbox(_) => "outbox",
            MailerError::Message(_) => "message",
        }
    }
}

/// What `send_now` achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// The server accepted the message; its reply.
    Delivered { id: String },
    /// Not delivered yet; it waits in the outbox and will be retried. Why.
    Queued { id: String, reason: String },
    /// The server refused it for good; it is in the outbox's `failed/`.
    Refused { id: String, reason: String },
}

/// Sends emails through `AXIS.INI`'s server and the outbox.
#[derive(Clone, Debug)]
pub struct Mailer {
    config: Config,
    outbox: Outbox,
}

/// The entry of an outbox zip that makes it an application email.
pub const MESSAGE_JSON: &str = "message.json";
const ATTACHMENTS: &str = "attachments/";

impl Mailer {
    /// Reads `AXIS.INI` (the given path, else found as the README describes)
    /// and opens the outbox (`$CRASHMAIL_OUTBOX`, `[report] Outbox`, the
    /// user's state folder).
    pub fn from_axis_ini(ini: Option<&Path>) -> Result<Mailer, MailerError> {
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf));
        let cwd = std::env::current_dir().ok();
        let config = config::load(&config::find(ini, exe_dir.as_deref(), cwd.as_deref())?)?;
        let root = std::env::var_os(crashmail_handler::OUTBOX_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| config.report.outbox.clone())
            .or_else(crashmail_handler::default_outbox_dir)
            .ok_or_else(|| {
                MailerError::Outbox(std::io::Error::other(
                    "no outbox: set CRASHMAIL_OUTBOX or HOME",
                ))
            })?;
        Ok(Mailer::new(config, Outbox::open(root)?))
    }

    pub fn new(config: Config, outbox: Outbox) -> Mailer {
        Mailer { config, outbox }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Puts the email safely into the outbox (fsynced) and returns its id;
    /// a background thread then tries to deliver it, and retries follow
    /// (`crashmail outbox flush --due`, or the next watcher).
    pub fn send(&self, email: &Email) -> Result<String, MailerError> {
        let id = self.queue(email)?;
        let (config, outbox, queued) = (self.config.clone(), self.outbox.clone(), id.clone());
        std::thread::spawn(move || {
            let delivery = crate::delivery::Delivery {
                config: &config,
                outbox: &outbox,
            };
            let _ = delivery.send_one(&queued);
        });
        Ok(id)
    }

    /// Queues the email and delivers it now, within the configured
    /// deadline; says exactly what happened. Not delivered means queued
    /// for retry or refused, never lost.
    pub fn send_now(&self, email: &Email) -> Result<SendOutcome, MailerError> {
        let id = self.queue(email)?;
        let delivery = crate::delivery::Delivery {
            config: &self.config,
            outbox: &self.outbox,
        };
        Ok(match delivery.send_one(&id)? {
            Some(crate::delivery::Outcome::Sent)
            | Some(crate::delivery::Outcome::SentInDigest { .. }) => SendOutcome::Delivered { id },
            Some(crate::delivery::Outcome::Failed(reason)) => SendOutcome::Refused { id, reason },
            Some(crate::delivery::Outcome::Kept(reason))
            | Some(crate::delivery::Outcome::NotTried(reason))
            | Some(crate::delivery::Outcome::Held(reason)) => SendOutcome::Queued { id, reason },
            None => SendOutcome::Queued {
                id,
                reason: "another sender took it".into(),
            },
        })
    }

    /// Validates the email and writes it into the outbox's `pending/`.
    pub fn queue(&self, email: &Email) -> Result<String, MailerError> {
        if email.to.is_empty() && email.cc.is_empty() {
            return Err(MailerError::NoRecipient);
        }
        for address in email.to.iter().chain(&email.cc) {
            check_recipient(address)?;
        }
        let id = uuid::Uuid::new_v4().to_string();
        let zip = pack(email).map_err(|e| MailerError::Message(e.to_string()))?;
        self.outbox.add(&id, &zip)?;
        Ok(id)
    }
}

/// A recipient is one address, optionally with a display name: nothing
/// that could carry another header or a second address.
fn check_recipient(address: &str) -> Result<(), MailerError> {
    if address.chars().any(|c| c.is_control()) || address.contains(',') || address.contains(';') {
        return Err(MailerError::InvalidAddress(address.to_string()));
    }
    address
        .parse::<lettre::message::Mailbox>()
        .map(|_| ())
        .map_err(|_| MailerError::InvalidAddress(address.to_string()))
}

/// Header text on one line: control characters (CR, LF, tabs…) become
/// spaces and runs of spaces one space.
pub fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn pack(email: &Email) -> zip::result::ZipResult<Vec<u8>> {
    use std::io::Write;
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o600);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file(MESSAGE_JSON, options)?;
    let names: Vec<(String, String)> = email
        .attachments
        .iter()
        .map(|a| (a.name.clone(), a.content_type.clone()))
        .collect();
    let json = serde_json::json!({
        "email": email,
        "attachments": names,
        "created": chrono::Utc::now().to_rfc3339(),
    });
    zip.write_all(&serde_json::to_vec_pretty(&json).map_err(std::io::Error::other)?)?;
    for (index, attachment) in email.attachments.iter().enumerate() {
        zip.start_file(format!("{ATTACHMENTS}{index}"), options)?;
        zip.write_all(&attachment.bytes)?;
    }
    Ok(zip.finish()?.into_inner())
}

/// An application email read back from its outbox zip.
pub fn unpack(entries: &std::collections::BTreeMap<String, Vec<u8>>) -> Result<Email, String> {
    #[derive(Deserialize)]
    struct Packed {
        email: Email,
        attachments: Vec<(String, String)>,
    }
    let packed: Packed =
        serde_json::from_slice(entries.get(MESSAGE_JSON).ok_or("message.json is missing")?)
            .map_err(|e| format!("message.json is invalid: {e}"))?;
    let mut email = packed.email;
    for (index, (name, content_type)) in packed.attachments.into_iter().enumerate() {
        let bytes = entries
            .get(&format!("{ATTACHMENTS}{index}"))
            .ok_or_else(|| format!("attachment {name} is missing"))?;
        email.attachments.push(Attachment {
            name,
            content_type,
            bytes: bytes.clone(),
        });
    }
    Ok(email)
}

/// The message on the wire, From and Message-ID from the configuration.
pub fn build_message(
    smtp: &config::SmtpConfig,
    email: &Email,
    id: &str,
) -> Result<lettre::Message, String> {
    use lettre::message::header::ContentType;
    use lettre::message::{Mailbox, MultiPart, SinglePart};
    let mut from: Mailbox = smtp
        .from
        .parse()
        .map_err(|e| format!("From {:?}: {e}", smtp.from))?;
    if from.name.is_none() {
        from.name = smtp.from_name.as_deref().map(header_safe);
    }
    let domain = smtp.sender_domain();
    let mut builder = lettre::Message::builder()
        .from(from)
        .subject(header_safe(&email.subject))
        .message_id(Some(format!("<mail-{id}@{domain}>")))
        .date_now()
        .user_agent(format!("crashmail {}", env!("CARGO_PKG_VERSION")));
    for to in &email.to {
        builder = builder.to(to.parse().map_err(|e| format!("To {to:?}: {e}"))?);
    }
    for cc in &email.cc {
        builder = builder.cc(cc.parse().map_err(|e| format!("Cc {cc:?}: {e}"))?);
    }
    let body = match &email.html {
        Some(html) => MultiPart::alternative_plain_html(email.text.clone(), html.clone()),
        None => MultiPart::mixed().singlepart(SinglePart::plain(email.text.clone())),
    };
    let mut body = if email.attachments.is_empty() {
        body
    } else {
        MultiPart::mixed().multipart(body)
    };
    for attachment in &email.attachments {
        let content_type =
            ContentType::parse(&attachment.content_type).unwrap_or(ContentType::TEXT_PLAIN);
        body = body.singlepart(
            lettre::message::Attachment::new(header_safe(&attachment.name))
                .body(attachment.bytes.clone(), content_type),
        );
    }
    builder.multipart(body).map_err(|e| e.to_string())
}

/// How long `send_now` may take at most with these settings.
pub fn send_now_deadline(smtp: &config::SmtpConfig) -> Duration {
    crate::mail::send_deadline(smtp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_is_one_line() {
        assert_eq!(
            header_safe("boom\r\nBcc: a@example.net\r\n\r\nfake"),
            "boom Bcc: a@example.net fake"
        );
    }

    #[test]
    fn recipients_cannot_smuggle_headers_or_more_addresses() {
        assert!(check_recipient("ops@example.com").is_ok());
        assert!(check_recipient("Ops Team <ops@example.com>").is_ok());
        assert!(check_recipient("ops@example.com\r\nBcc: x@example.net").is_err());
        assert!(check_recipient("a@example.com, b@example.com").is_err());
        assert!(check_recipient("not an address").is_err());
    }

    #[test]
    fn an_email_survives_the_outbox() {
        let email = Email::new("Order 1042", "Thanks.\n.\n.hidden\n")
            .to("c@example.com")
            .html("<p>Thanks.</p>")
            .attach("invoice.txt", "text/plain", b"total 10".to_vec());
        let zip = pack(&email).unwrap();
        let entries = crate::bundle::read_zip_entries(&zip).unwrap();
        assert_eq!(unpack(&entries).unwrap(), email);
    }
}
