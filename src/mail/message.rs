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

/// A report email made to fit a size limit.
#[derive(Clone, Debug)]
pub struct FittedReport {
    /// The whole message, as it goes on the wire (before dot-stuffing).
    pub message: Vec<u8>,
    /// What was left out or cut, as told in the email.
    pub notes: Vec<String>,
}

/// Log tails are never cut below this many bytes each.
const MIN_LOG_TAIL: usize = 1024;

/// Builds the report email within `limit` bytes (the whole encoded message,
/// base64 counted). Logs are cut from the front first, then the minidump is
/// left out, then everything but the report itself; each cut is said in the
/// body. `smaller` asks for the minidump to go and the logs to halve
/// whatever the limit (after a 552 reply).
pub fn fit_report(
    smtp: &SmtpConfig,
    meta: &ReportMeta,
    summary: &str,
    entries: &std::collections::BTreeMap<String, Vec<u8>>,
    original_zip: &[u8],
    limit: Option<u64>,
    smaller: bool,
) -> Result<FittedReport, String> {
    let build = |zip: Vec<u8>, notes: &[String]| -> Result<Vec<u8>, String> {
        let mut body = summary.to_string();
        if !notes.is_empty() {
            body.push_str("\nThis email carries a shortened copy of the report:\n");
            for note in notes {
                body.push_str(&format!("  - {note}\n"));
            }
        }
        Ok(report_message(smtp, meta, &body, zip)?.formatted())
    };
    let fits = |message: &[u8]| limit.is_none_or(|limit| message.len() as u64 <= limit);

    if !smaller {
        let message = build(original_zip.to_vec(), &[])?;
        if fits(&message) {
            return Ok(FittedReport {
                message,
                notes: Vec::new(),
            });
        }
    }
    let limit_text = limit
        .map(|l| format!("{l} bytes"))
        .unwrap_or_else(|| "the server's".into());
    let mut last = None;
    for drop_minidump in [false, true] {
        if smaller && !drop_minidump {
            continue;
        }
        let mut keep = entries
            .iter()
            .filter(|(name, _)| name.starts_with("logs/"))
            .map(|(_, bytes)| bytes.len())
            .max()
            .unwrap_or(0);
        if smaller {
            keep /= 2;
        }
        loop {
            let mut notes = Vec::new();
            let mut trimmed = entries.clone();
            if drop_minidump && trimmed.remove(crate::bundle::MINIDUMP_DMP).is_some() {
                notes.push(format!("minidump.dmp was left out to fit the size limit ({limit_text}); it stays in the outbox"));
            }
            for (name, bytes) in trimmed
                .iter_mut()
                .filter(|(name, _)| name.starts_with("logs/"))
            {
                if bytes.len() > keep {
                    let cut = bytes.len() - keep;
                    bytes.drain(..cut);
                    notes.push(format!("{name}: {cut} bytes truncated from the front to fit the size limit ({limit_text})"));
                }
            }
            let zip = zip_entries(&trimmed)?;
            let message = build(zip, &notes)?;
            if fits(&message) {
                return Ok(FittedReport { message, notes });
            }
            last = Some(FittedReport { message, notes });
            if keep <= MIN_LOG_TAIL {
                break;
            }
            keep = (keep / 2).max(MIN_LOG_TAIL);
        }
    }
    // The report itself always goes: report.json and summary.txt alone.
    let essentials: std::collections::BTreeMap<String, Vec<u8>> = entries
        .iter()
        .filter(|(name, _)| {
            [crate::bundle::REPORT_JSON, crate::bundle::SUMMARY_TXT].contains(&name.as_str())
        })
        .map(|(name, bytes)| (name.clone(), bytes.clone()))
        .collect();
    let notes = vec![format!(
        "only report.json and summary.txt are attached: the rest did not fit the size limit ({limit_text}); the whole report stays in the outbox"
    )];
    let message = build(zip_entries(&essentials)?, &notes)?;
    if fits(&message) || last.is_none() {
        return Ok(FittedReport { message, notes });
    }
    Ok(FittedReport { message, notes })
}

fn zip_entries(entries: &std::collections::BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o600);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in entries {
        zip.start_file(name.as_str(), options)
            .map_err(|e| e.to_string())?;
        zip.write_all(bytes).map_err(|e| e.to_string())?;
    }
    Ok(zip.finish().map_err(|e| e.to_string())?.into_inner())
}
