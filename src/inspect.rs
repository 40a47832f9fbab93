//! Reading a report back: from its zip, from the email that carried it, or
//! from an extracted folder; and the summary a support engineer reads.

use crate::bundle::{self, BACKTRACE_TXT, MINIDUMP_DMP, REPORT_JSON};
use crate::dump;
use crate::report::{self, ReportMeta};
use mail_parser::MimeHeaders;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// A report as found on disk.
#[derive(Clone, Debug, Default)]
pub struct OpenedReport {
    pub meta: Option<ReportMeta>,
    pub entries: BTreeMap<String, Vec<u8>>,
    /// What could not be read, each in a sentence; the rest is still shown.
    pub problems: Vec<String>,
}

/// Opens a report zip, an `.eml` holding one, or an extracted folder.
pub fn open(path: &Path) -> anyhow::Result<OpenedReport> {
    let entries = if path.is_dir() {
        read_folder(path)?
    } else {
        let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if bytes.starts_with(b"PK") {
            bundle::read_zip_entries(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        } else {
            let zip = zip_from_email(&bytes).ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: neither a zip nor an email with a zip attachment",
                    path.display()
                )
            })?;
            bundle::read_zip_entries(&zip)
                .map_err(|e| anyhow::anyhow!("{}: the attached zip: {e}", path.display()))?
        }
    };
    Ok(from_entries(entries))
}

pub fn from_entries(entries: BTreeMap<String, Vec<u8>>) -> OpenedReport {
    let mut problems = Vec::new();
    let meta = match entries.get(REPORT_JSON) {
        Some(bytes) => match serde_json::from_slice::<ReportMeta>(bytes) {
            Ok(meta) => Some(meta),
            Err(e) => {
                problems.push(format!("report.json is unreadable: {e}"));
                None
            }
        },
        None => {
            problems.push("report.json is missing".into());
            None
        }
    };
    OpenedReport {
        meta,
        entries,
        problems,
    }
}

fn read_folder(dir: &Path) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut entries = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                let relative = entry
                    .path()
                    .strip_prefix(dir)?
                    .to_string_lossy()
                    .replace('\\', "/");
                entries.insert(relative, std::fs::read(entry.path())?);
            }
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::printable_line;

    #[test]
    fn log_lines_cannot_drive_the_terminal() {
        assert_eq!(
            printable_line("ok \u{1b}[31mred\u{0}"),
            "ok \\u{1b}[31mred\\u{0}"
        );
        let long = "x".repeat(1000);
        assert!(printable_line(&long).ends_with("(700 more characters)"));
    }
}

/// The first `.zip` attachment of an email.
pub fn zip_from_email(bytes: &[u8]) -> Option<Vec<u8>> {
    let message = mail_parser::MessageParser::default().parse(bytes)?;
    let zip = message
        .attachments()
        .find(|part| {
            part.attachment_name()
                .is_some_and(|n| n.to_ascii_lowercase().ends_with(".zip"))
                || part.content_type().is_some_and(|t| {
                    t.c_type.eq_ignore_ascii_case("application")
                        && t.subtype().is_some_and(|s| s.eq_ignore_ascii_case("zip"))
                })
        })
        .map(|part| part.contents().to_vec());
    zip
}

/// The longest log line shown; the rest is counted, not printed.
const MAX_SHOWN_LINE: usize = 300;

/// A log line safe for a terminal: control characters (escape sequences,
/// NULs) shown escaped, very long lines cut.
fn printable_line(line: &str) -> String {
    let mut shown = String::new();
    let mut count = 0;
    for c in line.chars() {
        count += 1;
        if count > MAX_SHOWN_LINE {
            continue;
        }
        if c.is_control() && c != '\t' {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    if count > MAX_SHOWN_LINE {
        shown.push_str(&format!(" … ({} more characters)", count - MAX_SHOWN_LINE));
    }
    shown
}

/// How much of a report to show.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShowOptions {
    pub all_threads: bool,
    pub log_lines: usize,
}

/// The text summary of a report.
pub fn render(report: &OpenedReport, options: ShowOptions) -> String {
    let mut out = String::new();
    if let Some(meta) = &report.meta {
        let _ = writeln!(out, "App:        {} {}", meta.app_name, meta.app_version);
        let _ = writeln!(
            out,
            "Time:       {}",
            meta.time.format("%Y-%m-%d %H:%M:%S UTC")
        );
        let _ = writeln!(out, "Host:       {}", meta.host);
        let _ = writeln!(out, "OS:         {}", meta.os);
        let _ = writeln!(out, "Kind:       {}", meta.kind);
        let _ = writeln!(out, "Reason:     {}", meta.reason);
        if let Some(location) = meta.panic.as_ref().and_then(|p| p.location.as_ref()) {
            let _ = writeln!(out, "Location:   {location}");
        }
        let _ = writeln!(out, "Signature:  {}", meta.signature);
        let _ = writeln!(out, "Report id:  {}", meta.id);
    }

    // Frames, best source first: those the watcher named on the machine of
    // the crash (report.json); the panic's own backtrace as std printed it; a
    // fresh walk of the minidump, which names frames only where this
    // machine can.
    let mut shown_frames = false;
    if let Some(meta) = report.meta.as_ref().filter(|m| !m.frames.is_empty()) {
        let _ = writeln!(out, "\nCrashing thread (from report.json):");
        for (index, frame) in meta.frames.iter().enumerate() {
            let _ = writeln!(out, "  #{index:<2} {frame}");
        }
        shown_frames = true;
    }
    if !shown_frames {
        if let Some(backtrace) = report.entries.get(BACKTRACE_TXT) {
            let text = String::from_utf8_lossy(backtrace);
            let frames = report::parse_std_backtrace(&text);
            let application = report::application_frames(&frames);
            if !application.is_empty() {
                let _ = writeln!(out, "\nCrashing thread (from backtrace.txt):");
                for (index, frame) in application.iter().take(dump::TOP_FRAMES).enumerate() {
                    let _ = writeln!(out, "  #{index:<2} {}", frame.display());
                }
                shown_frames = true;
            }
        }
    }
    if let Some(minidump) = report.entries.get(MINIDUMP_DMP) {
        match dump::analyse(minidump, &[]) {
            Ok(analysis) => {
                if !shown_frames {
                    let _ = writeln!(out, "\nCrashing thread (from minidump.dmp):");
                    for (index, frame) in analysis.frames.iter().take(dump::TOP_FRAMES).enumerate()
                    {
                        let _ = writeln!(out, "  #{index:<2} {}", frame.display());
                    }
                }
                let _ = writeln!(out, "Threads:    {} in the minidump", analysis.thread_count);
                if options.all_threads {
                    for (tid, name, frames) in &analysis.threads {
                        let _ = writeln!(out, "\nThread {tid} {}", name.as_deref().unwrap_or(""));
                        for (index, frame) in frames.iter().take(dump::TOP_FRAMES).enumerate() {
                            let _ = writeln!(out, "  #{index:<2} {}", frame.display());
                        }
                    }
                }
            }
            Err(why) => {
                let _ = writeln!(out, "\nminidump.dmp: {why}");
            }
        }
    }
    if let Some(meta) = &report.meta {
        if !meta.notes.is_empty() {
            let _ = writeln!(out, "\nNotes:");
            for note in &meta.notes {
                let _ = writeln!(out, "  - {note}");
            }
        }
    }
    for (name, bytes) in report
        .entries
        .iter()
        .filter(|(name, _)| name.starts_with("logs/"))
    {
        let text = String::from_utf8_lossy(bytes);
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(options.log_lines.max(1));
        let _ = writeln!(
            out,
            "\n{name} (last {} of {} lines):",
            lines.len() - start,
            lines.len()
        );
        for line in &lines[start..] {
            let _ = writeln!(out, "  | {}", printable_line(line));
        }
    }
    for problem in &report.problems {
        let _ = writeln!(out, "\nproblem: {problem}");
    }
    out
}
