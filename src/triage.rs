//! `crashmail triage`: many reports, grouped by crash signature.
//!
//! Reads Maildir folders, mbox files, and folders of `.eml` or `.zip` files
//! (recursively); for each report only `report.json` is read from the zip.
//! The signature is the one the reporter computed (`report::signature`), so
//! equal crashes from different machines and builds fall into one group.

use crate::report::{cut_to_width, ReportMeta};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// One distinct crash and how often it came.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Group {
    pub signature: String,
    /// Crashes counted (a digest counts all its occurrences).
    pub count: u64,
    /// Reports read.
    pub reports: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub versions: BTreeSet<String>,
    pub hosts: BTreeSet<String>,
    /// One report of this group: a file, or `mbox#N`.
    pub example: String,
    /// Its reason, for reading the table.
    pub reason: String,
}

/// Groups, most frequent first, and what could not be read.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Triage {
    pub groups: Vec<Group>,
    /// Distinct reports counted.
    pub reports: u64,
    /// Further copies of a report already counted (the same report id: a
    /// resend, the email beside the outbox's zip), not counted again.
    pub copies: u64,
    pub skipped: Vec<(String, String)>,
}

/// One message or zip to read.
enum Item {
    File(PathBuf),
    /// A message of an mbox: its file, index and bytes.
    Mbox(PathBuf, usize, Vec<u8>),
}

impl Item {
    fn name(&self) -> String {
        match self {
            Item::File(path) => path.display().to_string(),
            Item::Mbox(path, index, _) => format!("{}#{}", path.display(), index + 1),
        }
    }
}

/// Every file under `paths`, recursively (Maildir folders included).
fn files_under(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    let named = |path: &std::path::Path, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
    };
    while let Some(path) = stack.pop() {
        let meta = std::fs::metadata(&path).map_err(|e| named(&path, e))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(|e| named(&path, e))? {
                let entry = entry.map_err(|e| named(&path, e))?;
                // Maildir's tmp/ holds messages still being written.
                if entry.file_name() == "tmp" && path.join("cur").is_dir() {
                    continue;
                }
                // Hidden files found in a folder (an outbox's claim owners,
                // editors' leftovers) are not reports; a hidden folder (a
                // Maildir++ subfolder) is walked.
                let hidden = entry.file_name().to_string_lossy().starts_with('.');
                if hidden && entry.file_type().is_ok_and(|t| t.is_file()) {
                    continue;
                }
                stack.push(entry.path());
            }
        } else if meta.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Splits an mbox into its messages (`From ` lines after a blank line).
fn split_mbox(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut previous_blank = true;
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        if previous_blank && line.starts_with(b"From ") {
            if !current.is_empty() {
                messages.push(std::mem::take(&mut current));
            }
            previous_blank = false;
            continue;
        }
        previous_blank = line == b"\n" || line == b"\r\n";
        // mboxrd: ">From " in a body was escaped on the way in.
        let quotes = line.iter().take_while(|b| **b == b'>').count();
        if quotes > 0 && line[quotes..].starts_with(b"From ") {
            current.extend_from_slice(&line[1..]);
        } else {
            current.extend_from_slice(line);
        }
    }
    if !current.is_empty() {
        messages.push(current);
    }
    messages
}

/// Why a file that holds no report at all is skipped.
const NO_REPORT_ATTACHED: &str = "no report attached";

fn meta_from_bytes(bytes: &[u8]) -> Result<ReportMeta, String> {
    if bytes.starts_with(b"PK") {
        return crate::bundle::read_report_meta(bytes);
    }
    let zip = crate::inspect::zip_from_email(bytes).ok_or(NO_REPORT_ATTACHED)?;
    crate::bundle::read_report_meta(&zip)
}

/// Reads every report under `paths` and groups them. `progress` hears
/// (done, total) as reports are read; the work is spread over the cores.
pub fn triage(
    paths: &[PathBuf],
    since: Option<DateTime<Utc>>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> std::io::Result<Triage> {
    let mut items = Vec::new();
    for file in files_under(paths)? {
        let mut head = [0u8; 5];
        let read = std::fs::File::open(&file)
            .and_then(|mut f| f.read(&mut head))
            .unwrap_or(0);
        if read == 5 && &head == b"From " {
            let bytes = std::fs::read(&file)?;
            for (index, message) in split_mbox(&bytes).into_iter().enumerate() {
                items.push(Item::Mbox(file.clone(), index, message));
            }
        } else {
            items.push(Item::File(file));
        }
    }
    let total = items.len();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<ReportMeta, String>)>> =
        Mutex::new(Vec::with_capacity(total));
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(16);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut local = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(index) else {
                        break;
                    };
                    let meta = match item {
                        Item::File(path) => std::fs::read(path)
                            .map_err(|e| e.to_string())
                            .and_then(|b| meta_from_bytes(&b)),
                        Item::Mbox(_, _, bytes) => meta_from_bytes(bytes),
                    };
                    local.push((index, meta));
                    let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if finished.is_multiple_of(64) || finished == total {
                        progress(finished, total);
                    }
                }
                if let Ok(mut results) = results.lock() {
                    results.extend(local);
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(index, _)| *index);

    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut triage = Triage::default();
    let mut seen = HashSet::new();
    for (index, result) in results {
        let meta = match result {
            Ok(meta) => meta,
            Err(why) => {
                triage.skipped.push((items[index].name(), why));
                continue;
            }
        };
        if since.is_some_and(|since| meta.time < since) {
            continue;
        }
        if !seen.insert(meta.id) {
            triage.copies += 1;
            continue;
        }
        triage.reports += 1;
        let group = groups
            .entry(meta.signature.clone())
            .or_insert_with(|| Group {
                signature: meta.signature.clone(),
                count: 0,
                reports: 0,
                first_seen: meta.time,
                last_seen: meta.time,
                versions: BTreeSet::new(),
                hosts: BTreeSet::new(),
                example: items[index].name(),
                reason: meta.reason.clone(),
            });
        group.count += u64::from(meta.occurrences.max(1));
        group.reports += 1;
        group.first_seen = group.first_seen.min(meta.time);
        if meta.time > group.last_seen {
            group.last_seen = meta.time;
            group.example = items[index].name();
        }
        group.versions.insert(meta.app_version.clone());
        group.hosts.insert(meta.host.clone());
    }
    triage.groups = groups.into_values().collect();
    triage
        .groups
        .sort_by(|a, b| b.count.cmp(&a.count).then(b.last_seen.cmp(&a.last_seen)));
    Ok(triage)
}

/// The table: one line per distinct crash, most frequent first.
pub fn render(triage: &Triage) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6}  {:<16}  {:<16}  {:<14}  {:>5}  {:<60}  example",
        "count", "first seen", "last seen", "versions", "hosts", "signature"
    );
    for group in &triage.groups {
        let versions: Vec<&str> = group.versions.iter().map(String::as_str).collect();
        let _ = writeln!(
            out,
            "{:>6}  {:<16}  {:<16}  {:<14}  {:>5}  {:<60}  {}",
            group.count,
            group.first_seen.format("%Y-%m-%d %H:%M"),
            group.last_seen.format("%Y-%m-%d %H:%M"),
            cut_to_width(&versions.join(","), 14),
            group.hosts.len(),
            shorten_signature(&group.signature, 60),
            group.example
        );
    }
    let copies = match triage.copies {
        0 => String::new(),
        n => format!(" ({n} more cop(ies) of the same reports counted once)"),
    };
    let _ = writeln!(
        out,
        "\n{} report(s){copies}, {} distinct crash(es)",
        triage.reports,
        triage.groups.len()
    );
    // Files that are not reports at all (logs, notes, an outbox's own
    // files) are only counted; what looked like a report and could not be
    // read is named, as that is a report lost to the count.
    let (unreadable, not_reports): (Vec<_>, Vec<_>) = triage
        .skipped
        .iter()
        .partition(|(name, why)| looks_like_a_report(name, why));
    if !unreadable.is_empty() {
        let _ = writeln!(out, "{} report(s) could not be read:", unreadable.len());
        for (name, why) in unreadable.iter().take(10) {
            let _ = writeln!(out, "  {name}: {why}");
        }
        if unreadable.len() > 10 {
            let _ = writeln!(
                out,
                "  … and {} more (--json lists them all)",
                unreadable.len() - 10
            );
        }
    }
    if !not_reports.is_empty() {
        let _ = writeln!(
            out,
            "{} other file(s) without a report left out (--json lists them)",
            not_reports.len()
        );
    }
    out
}

/// Whether a skipped file was meant to be a report: a zip, an `.eml`, or
/// any file whose attached report was there but broken.
fn looks_like_a_report(name: &str, why: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    why != NO_REPORT_ATTACHED || lower.ends_with(".zip") || lower.ends_with(".eml")
}

/// A signature made to fit `width` for the table (`--json` has it whole).
/// The crashing function matters most, so shortening goes in steps: frames
/// lose their crate and module paths (`module::function`, then `function`),
/// then outer frames are left off (`< …`), and only then is the end cut.
fn shorten_signature(signature: &str, width: usize) -> String {
    let fits = |text: &String| text.chars().count() <= width;
    let mut parts = signature.splitn(3, " | ");
    let (Some(kind), Some(reason), Some(frames)) = (parts.next(), parts.next(), parts.next())
    else {
        return cut_to_width(signature, width);
    };
    let frames: Vec<&str> = frames.split(" < ").collect();
    let whole = signature.to_string();
    if fits(&whole) {
        return whole;
    }
    let mut shortest = Vec::new();
    for segments in [2, 1] {
        let short: Vec<&str> = frames.iter().map(|f| last_segments(f, segments)).collect();
        let text = format!("{kind} | {reason} | {}", short.join(" < "));
        if fits(&text) {
            return text;
        }
        shortest = short;
    }
    for kept in (1..shortest.len()).rev() {
        let text = format!("{kind} | {reason} | {} < …", shortest[..kept].join(" < "));
        if fits(&text) {
            return text;
        }
    }
    cut_to_width(
        &format!("{kind} | {reason} | {}", shortest.join(" < ")),
        width,
    )
}

/// The last `count` `::` segments of a function's path; a closure
/// (`{{closure}}`) keeps the function it is in.
fn last_segments(function: &str, count: usize) -> &str {
    let mut cut = function.len();
    let mut kept = 0;
    while kept < count {
        let Some(at) = function[..cut].rfind("::") else {
            return function;
        };
        if !function[at + 2..cut].starts_with("{{") {
            kept += 1;
        }
        cut = at;
    }
    &function[cut + 2..]
}

/// `2026-12-01`, or an RFC 3339 time.
pub fn parse_since(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(value) {
        return Some(time.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|time| time.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbox_splits_on_from_lines_after_blank_lines() {
        let mbox = b"From a@x Thu Dec  3 10:00:00 2026\nSubject: one\n\nbody\n>From the start\n\nFrom b@x Thu Dec  3 10:01:00 2026\nSubject: two\n\nbody\n";
        let messages = split_mbox(mbox);
        assert_eq!(messages.len(), 2);
        assert!(String::from_utf8_lossy(&messages[0]).contains("\nFrom the start\n"));
        assert!(String::from_utf8_lossy(&messages[1]).starts_with("Subject: two"));
    }

    #[test]
    fn signatures_that_share_their_start_stay_apart_when_shortened() {
        let a = "panic | bad index N | crashy::parse_order_line < crashy::crash < crashy::main";
        let b = "panic | bad index N | crashy::parse_order_line < crashy::crash::{{closure}} < set_alt_signal_stack_and_start";
        assert_eq!(
            shorten_signature(a, 60),
            "panic | bad index N | parse_order_line < crash < main"
        );
        assert_eq!(
            shorten_signature(b, 60),
            "panic | bad index N | parse_order_line < …"
        );
        assert_eq!(shorten_signature("short", 60), "short");
    }

    #[test]
    fn the_crashing_function_stays_when_a_signature_is_shortened() {
        let long = "signal | SIGSEGV | crashmail::sample_app::crash_segv < crashmail::sample_app::run < crashmail::run";
        assert_eq!(
            shorten_signature(long, 60),
            "signal | SIGSEGV | crash_segv < run < run"
        );
        assert_eq!(
            shorten_signature(long, 80),
            "signal | SIGSEGV | sample_app::crash_segv < sample_app::run < crashmail::run"
        );
        // A reason too long for any frame is cut at its end, to the width.
        let wordy = format!("panic | {} | app::f", "x".repeat(80));
        assert_eq!(shorten_signature(&wordy, 60).chars().count(), 60);
        assert!(shorten_signature(&wordy, 60).ends_with('…'));
        assert_eq!(last_segments("a::b::{{closure}}", 1), "b::{{closure}}");
        assert_eq!(last_segments("main", 2), "main");
    }

    #[test]
    fn only_what_looked_like_a_report_is_named_when_skipped() {
        let triage = Triage {
            skipped: vec![
                ("out/sent/1.json".into(), NO_REPORT_ATTACHED.into()),
                ("app.log".into(), NO_REPORT_ATTACHED.into()),
                ("cut.zip".into(), "not a readable zip: invalid".into()),
                ("Maildir/cur/7".into(), "report.json: missing".into()),
            ],
            ..Triage::default()
        };
        let text = render(&triage);
        assert!(text.contains("2 report(s) could not be read:"), "{text}");
        assert!(text.contains("  cut.zip: not a readable zip"), "{text}");
        assert!(
            text.contains("  Maildir/cur/7: report.json: missing"),
            "{text}"
        );
        assert!(!text.contains("app.log"), "{text}");
        assert!(
            text.contains("2 other file(s) without a report left out"),
            "{text}"
        );
    }

    #[test]
    fn since_takes_a_date_or_a_time() {
        assert_eq!(
            parse_since("2026-12-01").unwrap().to_rfc3339(),
            "2026-12-01T00:00:00+00:00"
        );
        assert!(parse_since("2026-12-01T10:00:00Z").is_some());
        assert!(parse_since("yesterday").is_none());
    }
}
