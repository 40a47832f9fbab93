//! The report email: a subject naming app, version and reason; the summary
//! as plain text; the zip attached as `crash-<id>.zip`; a `Message-ID`
//! derived from the report id, so a resent report is recognisable.

use crate::config::SmtpConfig;
use crate::report::ReportMeta;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart};
use lettre::Message;

/// `<crash-<id>@<domain>>`: stable for a report, whoever sends it and when.
pub fn report_message_id(meta: &ReportMeta, smtp: &SmtpConfig) -> String {
    format!("<crash-{}@{}>", meta.id, smtp.sender_domain())
}

/// Builds the email for one report. `notes` (a digest's count, what was
/// cut to fit) come first in both bodies.
pub fn report_message(
    smtp: &SmtpConfig,
    meta: &ReportMeta,
    summary: &str,
    notes: &[String],
    zip: Vec<u8>,
) -> Result<Message, String> {
    let mut text = String::new();
    for note in notes {
        text.push_str(note);
        text.push_str("\n\n");
    }
    text.push_str(summary);
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
                .multipart(MultiPart::alternative_plain_html(
                    text,
                    report_html(meta, notes),
                ))
                .singlepart(Attachment::new(format!("crash-{}.zip", meta.id)).body(zip, zip_type)),
        )
        .map_err(|e| format!("the message could not be built: {e}"))
}

/// What a report email is made of.
#[derive(Clone, Debug)]
pub struct ReportParts {
    pub meta: ReportMeta,
    pub summary: String,
    /// Said first in the email (a digest's count, the hourly limit).
    pub notes: Vec<String>,
    /// The report zip as stored; its entries are read only when it must be
    /// cut to fit.
    pub zip: Vec<u8>,
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
    report: &ReportParts,
    limit: Option<u64>,
    smaller: bool,
) -> Result<FittedReport, String> {
    let build = |zip: Vec<u8>, cuts: &[String]| -> Result<Vec<u8>, String> {
        let mut notes = report.notes.clone();
        if !cuts.is_empty() {
            notes.push(format!(
                "This email carries a shortened copy of the report: {}",
                cuts.join("; ")
            ));
        }
        Ok(report_message(smtp, &report.meta, &report.summary, &notes, zip)?.formatted())
    };
    let fits = |message: &[u8]| limit.is_none_or(|limit| message.len() as u64 <= limit);

    if !smaller {
        let message = build(report.zip.clone(), &[])?;
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
    let entries = crate::bundle::read_zip_entries(&report.zip)
        .map_err(|e| format!("the report zip is unreadable: {e}"))?;
    for drop_minidump in [false, true] {
        if smaller && !drop_minidump {
            continue;
        }
        // The whole report did not fit (or the server said so): start at
        // half of the longest log.
        let mut keep = entries
            .iter()
            .filter(|(name, _)| name.starts_with("logs/"))
            .map(|(_, bytes)| bytes.len())
            .max()
            .unwrap_or(0)
            / 2;
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

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The HTML body: the summary a support engineer reads at a glance. Inline
/// styles only, no external resources, no scripts: mail clients show it as
/// it is, and it shows nothing it did not carry.
pub fn report_html(meta: &ReportMeta, notes: &[String]) -> String {
    let accent = match meta.kind {
        crate::report::ReportKind::Panic => "#b45309",
        crate::report::ReportKind::Signal => "#b91c1c",
        crate::report::ReportKind::AbnormalExit => "#6d28d9",
    };
    let row = |label: &str, value: &str| {
        format!(
            "<tr><td style=\"padding:3px 12px 3px 0;color:#555;white-space:nowrap;vertical-align:top\">{}</td><td style=\"padding:3px 0\">{}</td></tr>",
            escape(label),
            escape(value)
        )
    };
    let mut rows = vec![
        row(
            "Application",
            &format!("{} {}", meta.app_name, meta.app_version),
        ),
        row("Kind", meta.kind.as_str()),
        row(
            "Time",
            &meta.time.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        ),
        row("Host", &meta.host),
        row("OS", &meta.os),
    ];
    if let Some(location) = meta.panic.as_ref().and_then(|p| p.location.as_ref()) {
        rows.push(row("Location", location));
    }
    if let Some(thread) = meta.panic.as_ref().map(|p| &p.thread) {
        rows.push(row("Thread", thread));
    }
    if meta.occurrences > 1 {
        rows.push(row("Occurrences", &meta.occurrences.to_string()));
    }
    rows.push(row("Signature", &meta.signature));
    rows.push(row("Report id", &meta.id.to_string()));
    let frames: String = meta
        .frames
        .iter()
        .enumerate()
        .map(|(index, frame)| {
            let (function, location) = match frame.split_once(" at ") {
                Some((function, location)) => (function, Some(location)),
                None => (frame.as_str(), None),
            };
            format!(
                "<tr><td style=\"padding:2px 10px 2px 0;color:#888;vertical-align:top\">#{index}</td><td style=\"padding:2px 0\"><code style=\"font-family:Menlo,Consolas,monospace;font-size:13px;color:#111\">{}</code>{}</td></tr>",
                escape(function),
                location
                    .map(|l| format!("<br><span style=\"font-family:Menlo,Consolas,monospace;font-size:12px;color:#666\">{}</span>", escape(l)))
                    .unwrap_or_default()
            )
        })
        .collect();
    let meta_notes: String = meta
        .notes
        .iter()
        .map(|n| format!("<li>{}</li>", escape(n)))
        .collect();
    let extra_notes: String = notes
        .iter()
        .map(|line| format!("<p style=\"margin:0 0 8px;padding:8px 12px;background:#fef3c7;border-radius:4px\">{}</p>", escape(line)))
        .collect();
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
<body style=\"margin:0;padding:16px;background:#f4f4f5;font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;font-size:14px;color:#111\">\
<div style=\"max-width:760px;margin:0 auto;background:#fff;border:1px solid #ddd;border-radius:6px;overflow:hidden\">\
<div style=\"padding:14px 18px;border-left:6px solid {accent};background:#fafafa\">\
<div style=\"font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:{accent};font-weight:600\">{kind} in {app} {version}</div>\
<div style=\"font-size:18px;font-weight:600;margin-top:4px;word-break:break-word\">{reason}</div></div>\
<div style=\"padding:14px 18px\">{extra_notes}\
<table style=\"border-collapse:collapse;font-size:14px\">{rows}</table>\
<h3 style=\"font-size:14px;margin:18px 0 6px\">Top frames of the crashing thread</h3>\
<table style=\"border-collapse:collapse\">{frames}</table>\
{notes_block}\
<p style=\"margin:16px 0 0;color:#666;font-size:12px\">The attached crash-{id}.zip holds the full report: report.json, summary.txt, the backtrace, the minidump, system.json and the log tails. <code>crashmail inspect</code> reads it, or this email.</p>\
</div></div></body></html>",
        title = escape(&meta.subject()),
        accent = accent,
        kind = escape(meta.kind.as_str()),
        app = escape(&meta.app_name),
        version = escape(&meta.app_version),
        reason = escape(&meta.reason),
        extra_notes = extra_notes,
        rows = rows.join(""),
        frames = if frames.is_empty() { "<tr><td style=\"color:#666\">no frames</td></tr>".to_string() } else { frames },
        notes_block = if meta_notes.is_empty() {
            String::new()
        } else {
            format!("<h3 style=\"font-size:14px;margin:18px 0 6px\">Notes</h3><ul style=\"margin:0;padding-left:20px;color:#444\">{meta_notes}</ul>")
        },
        id = meta.id,
    )
}
