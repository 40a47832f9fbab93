//! The report zip: writing it in the watcher, reading it back for `inspect`.

use crate::collect::{LogTail, SystemInfo};
use crate::report::ReportMeta;
use chrono::{Datelike, Timelike};
use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use zip::write::SimpleFileOptions;

pub const REPORT_JSON: &str = "report.json";
pub const SUMMARY_TXT: &str = "summary.txt";
pub const BACKTRACE_TXT: &str = "backtrace.txt";
pub const MINIDUMP_DMP: &str = "minidump.dmp";
pub const SYSTEM_JSON: &str = "system.json";
pub const BREADCRUMBS_TXT: &str = "breadcrumbs.txt";

/// Everything that goes into one report.
#[derive(Clone, Debug)]
pub struct ReportContents {
    pub meta: ReportMeta,
    pub backtrace: Option<String>,
    pub minidump: Option<Vec<u8>>,
    pub system: SystemInfo,
    pub logs: Vec<LogTail>,
    pub breadcrumbs: Vec<String>,
}

impl ReportContents {
    /// Removes known secrets from everything the report carries; see
    /// [`crate::privacy`].
    pub fn scrub(&mut self, secrets: &crate::privacy::Secrets) {
        if secrets.is_empty() {
            return;
        }
        let meta = &mut self.meta;
        meta.reason = secrets.scrub_text(&meta.reason);
        meta.signature = secrets.scrub_text(&meta.signature);
        for text in meta.frames.iter_mut().chain(meta.notes.iter_mut()) {
            *text = secrets.scrub_text(text);
        }
        if let Some(panic) = &mut meta.panic {
            panic.message = secrets.scrub_text(&panic.message);
            panic.location = panic.location.as_deref().map(|l| secrets.scrub_text(l));
        }
        self.backtrace = self.backtrace.as_deref().map(|b| secrets.scrub_text(b));
        self.system.executable = self
            .system
            .executable
            .as_deref()
            .map(|p| secrets.scrub_text(p));
        self.system.working_directory = self
            .system
            .working_directory
            .as_deref()
            .map(|p| secrets.scrub_text(p));
        if let Some(process) = &mut self.system.process {
            process.command_line = process
                .command_line
                .as_deref()
                .map(|line| secrets.scrub_text(line));
        }
        for crumb in &mut self.breadcrumbs {
            *crumb = secrets.scrub_text(crumb);
        }
        for log in &mut self.logs {
            secrets.scrub_bytes(&mut log.bytes);
        }
        if let Some(minidump) = &mut self.minidump {
            secrets.scrub_bytes(minidump);
        }
    }

    /// The entry names, in the order they are written.
    pub fn entry_names(&self) -> Vec<String> {
        let mut names = vec![REPORT_JSON.to_string(), SUMMARY_TXT.to_string()];
        if self.backtrace.is_some() {
            names.push(BACKTRACE_TXT.to_string());
        }
        if self.minidump.is_some() {
            names.push(MINIDUMP_DMP.to_string());
        }
        names.push(SYSTEM_JSON.to_string());
        if !self.breadcrumbs.is_empty() {
            names.push(BREADCRUMBS_TXT.to_string());
        }
        names.extend(self.logs.iter().map(|l| l.entry.clone()));
        names
    }

    /// The human summary, as in `summary.txt` and the email body.
    pub fn summary(&self) -> String {
        self.meta.summary(&self.entry_names())
    }

    /// The zip, in memory.
    pub fn to_zip(&self) -> Result<Vec<u8>, zip::result::ZipError> {
        let time = self.meta.time;
        let stamp = zip::DateTime::from_date_and_time(
            time.year().clamp(1980, 2107) as u16,
            time.month() as u8,
            time.day() as u8,
            time.hour() as u8,
            time.minute() as u8,
            time.second() as u8,
        )
        .unwrap_or_default();
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(stamp)
            .unix_permissions(0o600);
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let json = serde_json::to_vec_pretty(&self.meta).map_err(std::io::Error::other)?;
        let system = serde_json::to_vec_pretty(&self.system).map_err(std::io::Error::other)?;
        let mut put = |name: &str, bytes: &[u8]| -> Result<(), zip::result::ZipError> {
            zip.start_file(name, options)?;
            zip.write_all(bytes)?;
            Ok(())
        };
        put(REPORT_JSON, &json)?;
        put(SUMMARY_TXT, self.summary().as_bytes())?;
        if let Some(backtrace) = &self.backtrace {
            put(BACKTRACE_TXT, backtrace.as_bytes())?;
        }
        if let Some(minidump) = &self.minidump {
            put(MINIDUMP_DMP, minidump)?;
        }
        put(SYSTEM_JSON, &system)?;
        if !self.breadcrumbs.is_empty() {
            put(BREADCRUMBS_TXT, self.breadcrumbs.join("\n").as_bytes())?;
        }
        for log in &self.logs {
            put(&log.entry, &log.bytes)?;
        }
        Ok(zip.finish()?.into_inner())
    }
}

/// Limits for reading a zip from anywhere: a report is small; a zip bomb is not.
const MAX_ENTRY_BYTES: u64 = 256 * 1024 * 1024;
const MAX_ENTRIES: usize = 10_000;

/// `report.json` out of a report zip, reading nothing else.
pub fn read_report_meta(zip: &[u8]) -> Result<ReportMeta, String> {
    let mut archive =
        zip::ZipArchive::new(Cursor::new(zip)).map_err(|e| format!("not a readable zip: {e}"))?;
    let mut entry = archive
        .by_name(REPORT_JSON)
        .map_err(|_| "no report.json in the zip".to_string())?;
    let mut json = Vec::new();
    (&mut entry)
        .take(16 * 1024 * 1024)
        .read_to_end(&mut json)
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&json).map_err(|e| format!("report.json is invalid: {e}"))
}

/// The names of a zip's entries (none when its directory cannot be read).
pub fn zip_entry_names(bytes: &[u8]) -> Vec<String> {
    zip::ZipArchive::new(Cursor::new(bytes))
        .map(|archive| {
            archive
                .file_names()
                .take(MAX_ENTRIES)
                .filter_map(|name| name.ok().map(|n| n.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The entries of a report zip, by name.
pub fn read_zip_entries(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, zip::result::ZipError> {
    read_zip_entries_where(bytes, |_| true)
}

/// The entries of a zip whose names `wanted` accepts; the others are not
/// inflated.
pub fn read_zip_entries_where(
    bytes: &[u8],
    wanted: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, Vec<u8>>, zip::result::ZipError> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))?;
    if archive.len() > MAX_ENTRIES {
        return Err(zip::result::ZipError::InvalidArchive(
            "too many entries".into(),
        ));
    }
    let mut entries = BTreeMap::new();
    for index in 0..archive.len() {
        let mut file = archive.by_index(index)?;
        if file.is_dir() {
            continue;
        }
        let name = file
            .name()
            .map(|n| n.into_owned())
            .unwrap_or_else(|_| format!("entry-{index}"));
        if !wanted(&name) {
            continue;
        }
        let mut content = Vec::new();
        (&mut file)
            .take(MAX_ENTRY_BYTES + 1)
            .read_to_end(&mut content)?;
        if content.len() as u64 > MAX_ENTRY_BYTES {
            return Err(zip::result::ZipError::InvalidArchive(
                format!("entry {name} is larger than the limit").into(),
            ));
        }
        entries.insert(name, content);
    }
    Ok(entries)
}
