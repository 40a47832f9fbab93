//! The report email: a subject naming app, version and reason; the summary
//! as plain text; the zip attached as `crash-<id>.zip`; a `Message-ID`
//! derived from the report id, so a resent report is recognisable.

use crate::config::SmtpConfig;
use crate::report::ReportMeta;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::Message;

/// `<crash-<id>@<domain>>`: stable for a report, whoever sends it and when.
pub fn report_message_id(meta: &ReportMeta, smtp: &SmtpConfig) -> String {
    let domain = smtp
        .domain
        .clone()
        .or_else(|| {
            smtp.from
                .rsplit_once('@')
                .map(|(_, d)| d.trim_end_matches('>').to_string())
        })
        .unwrap_or_else(|| "crashmail.invalid".to_string());
    format!("<crash-{}@{}>", meta.id, domain)
}

/// Builds the email for one report.
pub fn report_message(
    smtp: &SmtpConfig,
    meta: &ReportMeta,
    summary: &str,
    zip: Vec<u8>,
) -> Result<Message, String> {
    let mut from: Mailbox = smtp
        .from
        .parse()
        .map_err(|e| format!("From {:?} is not a valid address: {e}", smtp.from))?;
    if from.name.is_none() {
        from.name = smtp.from_name.clone();
    }
    let mut builder = Message::builder()
        .from(from)
        .subject(meta.subject())
        .message_id(Some(report_message_id(meta, smtp)))
        .date(meta.time.into())
        .user_agent(format!("crashmail {}", env!("CARGO_PKG_VERSION")));
    for to in &smtp.to {
        let mailbox: Mailbox = to
            .parse()
            .map_err(|e| format!("To {to:?} is not a valid address: {e}"))?;
        builder = builder.to(mailbox);
    }
    for cc in &smtp.cc {
        let mailbox: Mailbox = cc
            .parse()
            .map_err(|e| format!("Cc {cc:?} is not a valid address: {e}"))?;
        builder = builder.cc(mailbox);
    }
    let zip_type = ContentType::parse("application/zip").map_err(|e| e.to_string())?;
    builder
        .multipart(
            MultiPart::mixed()
                .singlepart(SinglePart::plain(summary.to_string()))
                .singlepart(Attachment::new(format!("crash-{}.zip", meta.id)).body(zip, zip_type)),
        )
        .map_err(|e| format!("the message could not be built: {e}"))
}
