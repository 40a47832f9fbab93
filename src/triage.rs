//! `crashmail triage`: many reports, grouped by crash signature.
//!
//! Reads Maildir folders, mbox files, and folders of `.eml` or `.zip` files
//! (recursively); for each report only `report.json` is read from the zip.
//! The signature is the one the reporter computed (`report::signature`), so
//! equal crashes from different machines and builds fall into one group.

use crate::report::ReportMeta;
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

fn meta_from_bytes(bytes: &[u8]) -> Result<ReportMeta, String> {
    if bytes.starts_with(b"PK") {
        return crate::bundle::read_report_meta(bytes);
    }
    let zip = crate::inspect::zip_from_email(bytes).ok_or("no report attached")?;
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
    let cut = |text: &str, width: usize| -> String {
        if text.chars().count() <= width {
            text.to_string()
        } else {
            let mut kept: String = text.chars().take(width - 1).collect();
            kept.push('…');
            kept
        }
    };
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
            cut(&versions.join(","), 14),
            group.hosts.len(),
            cut_middle(&group.signature, 60),
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
    if !triage.skipped.is_empty() {
        let _ = writeln!(
            out,
            "{} file(s) skipped (not reports):",
            triage.skipped.len()
        );
        for (name, why) in triage.skipped.iter().take(10) {
            let _ = writeln!(out, "  {name}: {why}");
        }
        if triage.skipped.len() > 10 {
            let _ = writeln!(out, "  … and {} more", triage.skipped.len() - 10);
        }
    }
    out
}

/// A signature cut to `width` in its middle: the reason at its start and the
/// outermost frame at its end both stay, which is where signatures that
/// share their first frames differ.
fn cut_middle(text: &str, width: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= width {
        return text.to_string();
    }
    let head = (width - 1) / 2;
    let tail = width - 1 - head;
    let mut kept: String = chars[..head].iter().collect();
    kept.push('…');
    kept.extend(&chars[chars.len() - tail..]);
    kept
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
    fn signatures_that_share_their_start_stay_apart_when_cut() {
        let a = "panic | bad index N | crashy::parse_order_line < crashy::crash < crashy::main";
        let b = "panic | bad index N | crashy::parse_order_line < crashy::crash::{{closure}} < set_alt_signal_stack_and_start";
        assert_ne!(cut_middle(a, 60), cut_middle(b, 60));
        assert_eq!(cut_middle(a, 60).chars().count(), 60);
        assert!(cut_middle(a, 60).starts_with("panic | bad index N"));
        assert_eq!(cut_middle("short", 60), "short");
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
