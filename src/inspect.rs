//! Reading a report back: from its zip, from the email that carried it, or
//! from an extracted folder; and the summary a support engineer reads.

use crate::bundle::{self, BACKTRACE_TXT, MINIDUMP_DMP, REPORT_JSON, SUMMARY_TXT};
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

/// Opens a report zip, an `.eml` holding one, or an extracted folder. What
/// is broken (an entry too large, a zip cut short) is a problem of the
/// report, and the rest is read; an error only when nothing of a report is
/// there at all, or for a folder without `report.json` (not every folder
/// is a report).
pub fn open(path: &Path) -> anyhow::Result<OpenedReport> {
    let mut problems = Vec::new();
    let entries = if path.is_dir() {
        if !path.join(REPORT_JSON).is_file() {
            anyhow::bail!("{}", not_a_report_folder(path));
        }
        read_folder(path)?
    } else {
        let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if bytes.starts_with(b"PK") {
            read_zip_leniently(&bytes, "", &mut problems)
        } else {
            let message = mail_parser::MessageParser::default().parse(&bytes[..]);
            let zip = message.as_ref().and_then(zip_of_message).ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: neither a zip nor an email with a zip attachment",
                    path.display()
                )
            })?;
            let mut entries = read_zip_leniently(&zip, "the attached zip: ", &mut problems);
            // The email's own text is the report's summary: shown when the
            // zip has lost it.
            if !entries.contains_key(SUMMARY_TXT) {
                if let Some(text) = message.as_ref().and_then(|m| m.body_text(0)) {
                    entries.insert(SUMMARY_TXT.to_string(), text.as_bytes().to_vec());
                }
            }
            entries
        }
    };
    if entries.is_empty() {
        let why = if problems.is_empty() {
            "no report files in it".to_string()
        } else {
            problems.join("; ")
        };
        anyhow::bail!(
            "{}: nothing of a report could be read: {}",
            path.display(),
            inert(&why)
        );
    }
    let mut report = from_entries(entries);
    problems.append(&mut report.problems);
    report.problems = problems;
    Ok(report)
}

/// The entries of a zip that can be read; each part that cannot is a problem.
fn read_zip_leniently(
    bytes: &[u8],
    context: &str,
    problems: &mut Vec<String>,
) -> BTreeMap<String, Vec<u8>> {
    let (entries, mut found) = bundle::read_zip_leniently(bytes, context);
    problems.append(&mut found);
    entries
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

/// Why a folder without `report.json` is not shown, and what to try.
fn not_a_report_folder(dir: &Path) -> String {
    let mut why = format!(
        "{}: not a report: there is no {REPORT_JSON} in this folder (inspect takes a report zip, an .eml carrying one, or a folder extracted from one)",
        dir.display()
    );
    let mut reports: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            let lower = name.to_ascii_lowercase();
            lower.ends_with(".zip") || lower.ends_with(".eml")
        })
        .collect();
    reports.sort();
    if let Some(first) = reports.first() {
        let _ = write!(
            why,
            "; it holds {} .zip or .eml file(s): inspect one of them (such as {}), or run `crashmail triage` on the folder",
            reports.len(),
            dir.join(first).display()
        );
    }
    why
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

/// The first `.zip` attachment of an email.
pub fn zip_from_email(bytes: &[u8]) -> Option<Vec<u8>> {
    zip_of_message(&mail_parser::MessageParser::default().parse(bytes)?)
}

fn zip_of_message(message: &mail_parser::Message) -> Option<Vec<u8>> {
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

/// Text from a report, made inert for a terminal: see [`inert`].
#[derive(Clone, Copy, Debug)]
pub struct Inert<'a>(&'a str);

/// Text from a report (or a zip's entry names), shown on one line of a
/// terminal without any power over it. A report may come from anywhere, and
/// printed raw its text could colour the terminal or set its title (escape
/// sequences), reorder what is shown (bidirectional overrides), or start a
/// line of its own that poses as ours ("Report id: ..."). So line breaks and
/// tabs become spaces; other control characters (C0, DEL, C1) and the
/// bidirectional override and isolate marks become U+FFFD. The same rule as
/// the outbox's table cells; `--json` needs none of it, JSON escapes them.
pub fn inert(text: &str) -> Inert<'_> {
    Inert(text)
}

impl std::fmt::Display for Inert<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            f.write_char(match c {
                '\n' | '\r' | '\t' => ' ',
                c if c.is_control() => '\u{fffd}',
                '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => '\u{fffd}',
                c => c,
            })?;
        }
        Ok(())
    }
}

/// How much of a report to show, and with what.
#[derive(Clone, Debug, Default)]
pub struct ShowOptions {
    /// Every thread of the minidump, not only the crashing one.
    pub all_threads: bool,
    /// Last lines shown of each log.
    pub log_lines: usize,
    /// Folders of Breakpad `.sym` files or debug files: the minidump's
    /// frames are walked and named again with them.
    pub symbols: Vec<std::path::PathBuf>,
}

/// One thread's frames.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ThreadView {
    pub id: u32,
    pub name: Option<String>,
    pub frames: Vec<String>,
}

/// The last lines of one log.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LogView {
    pub name: String,
    pub bytes: usize,
    pub total_lines: usize,
    /// Decoded lossily, control characters escaped.
    pub last_lines: Vec<String>,
}

/// Everything `inspect` shows, as text or as JSON.
#[derive(Clone, Debug, serde::Serialize)]
pub struct InspectView {
    pub report: Option<ReportMeta>,
    /// Where the frames come from: `report.json`, `backtrace.txt` or `minidump.dmp`.
    pub frames_from: Option<&'static str>,
    /// The crashing thread's frames, top first.
    pub frames: Vec<String>,
    /// Threads in the minidump.
    pub thread_count: Option<usize>,
    /// Every thread, with `--threads`.
    pub threads: Vec<ThreadView>,
    /// Modules with build ids, main executable first.
    pub modules: Vec<String>,
    pub breadcrumbs: Vec<String>,
    pub logs: Vec<LogView>,
    /// `summary.txt` (or the email's text), when `report.json` cannot be read.
    pub summary: Option<String>,
    /// What could not be read, each in a sentence; the rest is still shown.
    pub problems: Vec<String>,
}

/// Gathers what there is to show of a report.
pub fn view(report: &OpenedReport, options: &ShowOptions) -> InspectView {
    let mut problems = report.problems.clone();
    let analysis = report.entries.get(MINIDUMP_DMP).and_then(|minidump| {
        match dump::analyse(minidump, &options.symbols) {
            Ok(analysis) => Some(analysis),
            Err(why) => {
                problems.push(format!("minidump.dmp: {why}"));
                None
            }
        }
    });
    // Frames, best source first: those named on the machine of the crash
    // (report.json); the panic's own backtrace as std printed it; a walk of
    // the minidump here, which names frames only where this machine can. With
    // --symbols, the new walk comes first.
    let from_minidump = analysis
        .as_ref()
        .map(|a| {
            a.frames
                .iter()
                .take(dump::TOP_FRAMES)
                .map(crate::report::Frame::display)
                .collect::<Vec<_>>()
        })
        .filter(|frames| !frames.is_empty());
    let from_report = report
        .meta
        .as_ref()
        .map(|m| m.frames.clone())
        .filter(|f| !f.is_empty());
    let from_backtrace = report.entries.get(BACKTRACE_TXT).map(|bytes| {
        let frames = report::parse_std_backtrace(&String::from_utf8_lossy(bytes));
        report::shown_application_frames(&report::application_frames(&frames))
            .iter()
            .take(dump::TOP_FRAMES)
            .map(|f| f.display())
            .collect::<Vec<_>>()
    });
    let candidates = [
        (
            "minidump.dmp",
            if options.symbols.is_empty() {
                None
            } else {
                from_minidump.clone()
            },
        ),
        ("report.json", from_report),
        ("backtrace.txt", from_backtrace.filter(|f| !f.is_empty())),
        ("minidump.dmp", from_minidump),
    ];
    let (frames_from, frames) = candidates
        .into_iter()
        .find_map(|(source, frames)| frames.map(|f| (Some(source), f)))
        .unwrap_or((None, Vec::new()));

    let threads = match (&analysis, options.all_threads) {
        (Some(analysis), true) => analysis
            .threads
            .iter()
            .map(|(id, name, frames)| ThreadView {
                id: *id,
                name: name.clone(),
                frames: frames
                    .iter()
                    .take(dump::TOP_FRAMES)
                    .map(crate::report::Frame::display)
                    .collect(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let breadcrumbs = report
        .entries
        .get(crate::bundle::BREADCRUMBS_TXT)
        .map(|bytes| {
            String::from_utf8_lossy(bytes)
                .lines()
                .map(printable_line)
                .collect()
        })
        .unwrap_or_default();
    let logs = report
        .entries
        .iter()
        .filter(|(name, _)| name.starts_with("logs/"))
        .map(|(name, bytes)| {
            let text = String::from_utf8_lossy(bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(options.log_lines.max(1));
            LogView {
                name: name.clone(),
                bytes: bytes.len(),
                total_lines: lines.len(),
                last_lines: lines[start..].iter().map(|l| printable_line(l)).collect(),
            }
        })
        .collect();
    InspectView {
        report: report.meta.clone(),
        frames_from,
        frames,
        thread_count: analysis.as_ref().map(|a| a.thread_count),
        threads,
        modules: analysis.map(|a| a.modules).unwrap_or_default(),
        breadcrumbs,
        logs,
        summary: match report.meta {
            Some(_) => None,
            None => report.entries.get(SUMMARY_TXT).map(|bytes| {
                String::from_utf8_lossy(bytes)
                    .lines()
                    .map(printable_line)
                    .collect::<Vec<_>>()
                    .join("\n")
            }),
        },
        problems,
    }
}

/// The text summary of a report.
pub fn render(report: &OpenedReport, options: &ShowOptions) -> String {
    render_view(&view(report, options), options)
}

/// The text of a view. Everything in it that comes from the report goes
/// through [`inert`] as it is written in: a report cannot drive the
/// terminal, nor start a line that poses as one of ours. Text shown as lines
/// (summary, breadcrumbs, logs) is made inert line by line, each indented
/// or prefixed.
pub fn render_view(view: &InspectView, options: &ShowOptions) -> String {
    let mut out = String::new();
    if let Some(meta) = &view.report {
        let _ = writeln!(
            out,
            "App:        {} {}",
            inert(&meta.app_name),
            inert(&meta.app_version)
        );
        let _ = writeln!(
            out,
            "Time:       {}",
            meta.time.format("%Y-%m-%d %H:%M:%S UTC")
        );
        let _ = writeln!(out, "Host:       {}", inert(&meta.host));
        let _ = writeln!(out, "OS:         {}", inert(&meta.os));
        let _ = writeln!(out, "Kind:       {}", meta.kind);
        let _ = writeln!(out, "Reason:     {}", inert(&meta.reason));
        if let Some(location) = meta.panic.as_ref().and_then(|p| p.location.as_ref()) {
            let _ = writeln!(out, "Location:   {}", inert(location));
        }
        if meta.occurrences > 1 {
            let _ = writeln!(out, "Occurred:   {} times", meta.occurrences);
        }
        let _ = writeln!(out, "Signature:  {}", inert(&meta.signature));
        let _ = writeln!(out, "Report id:  {}", meta.id);
    }
    if let Some(summary) = &view.summary {
        let _ = writeln!(out, "Summary (report.json could not be read):");
        for line in summary.lines() {
            let _ = writeln!(out, "  {}", inert(line));
        }
    }
    if let Some(source) = view.frames_from {
        let _ = writeln!(out, "\nCrashing thread (from {source}):");
        for (index, frame) in view.frames.iter().enumerate() {
            let _ = writeln!(out, "  #{index:<2} {}", inert(frame));
        }
    }
    if let Some(count) = view.thread_count {
        let others = count.saturating_sub(1);
        let _ = writeln!(
            out,
            "Threads:    {count} in the minidump ({others} other{})",
            if others == 1 { "" } else { "s" }
        );
    }
    for thread in &view.threads {
        let _ = writeln!(
            out,
            "\nThread {} {}",
            thread.id,
            inert(thread.name.as_deref().unwrap_or(""))
        );
        for (index, frame) in thread.frames.iter().enumerate() {
            let _ = writeln!(out, "  #{index:<2} {}", inert(frame));
        }
    }
    if let Some(main) = view.modules.first() {
        let _ = writeln!(out, "Executable: {}", inert(main));
        if options.all_threads {
            for module in &view.modules[1..] {
                let _ = writeln!(out, "            {}", inert(module));
            }
        } else if view.modules.len() > 1 {
            let _ = writeln!(
                out,
                "            and {} more modules (--threads lists them)",
                view.modules.len() - 1
            );
        }
    }
    if let Some(meta) = view.report.as_ref().filter(|m| !m.notes.is_empty()) {
        let _ = writeln!(out, "\nNotes:");
        for note in &meta.notes {
            let _ = writeln!(out, "  - {}", inert(note));
        }
    }
    if !view.breadcrumbs.is_empty() {
        let _ = writeln!(out, "\nBreadcrumbs (last records before the crash):");
        for line in &view.breadcrumbs {
            let _ = writeln!(out, "  | {}", inert(line));
        }
    }
    for log in &view.logs {
        let _ = writeln!(
            out,
            "\n{} (last {} of {} lines):",
            inert(&log.name),
            log.last_lines.len(),
            log.total_lines
        );
        for line in &log.last_lines {
            let _ = writeln!(out, "  | {}", inert(line));
        }
    }
    for problem in &view.problems {
        let _ = writeln!(out, "\nproblem: {}", inert(problem));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{inert, printable_line};

    #[test]
    fn report_text_is_shown_inert_on_one_line() {
        assert_eq!(
            inert("evil \u{1b}[31mRED\u{1b}[0m\r\nSubject: x\tend").to_string(),
            "evil \u{fffd}[31mRED\u{fffd}[0m  Subject: x end"
        );
        assert_eq!(
            inert("app\u{1b}]0;title\u{7}\u{7f}\u{9b}\u{0}").to_string(),
            "app\u{fffd}]0;title\u{fffd}\u{fffd}\u{fffd}\u{fffd}"
        );
        assert_eq!(
            inert("a\u{202a}b\u{202e}c\u{2066}d\u{2069}e").to_string(),
            "a\u{fffd}b\u{fffd}c\u{fffd}d\u{fffd}e"
        );
        // What is plain is left as it is: accents, other scripts, emoji.
        let plain = "crashmail-sample-app 0.1.0 — déjà vu, 日本語, עברית 🦀";
        assert_eq!(inert(plain).to_string(), plain);
    }

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
