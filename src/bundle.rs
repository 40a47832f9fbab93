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
    let json = match zip::ZipArchive::new(Cursor::new(zip)) {
        Ok(mut archive) => {
            let mut entry = archive
                .by_name(REPORT_JSON)
                .map_err(|_| "no report.json in the zip".to_string())?;
            let mut json = Vec::new();
            (&mut entry)
                .take(16 * 1024 * 1024)
                .read_to_end(&mut json)
                .map_err(|e| e.to_string())?;
            json
        }
        // A zip cut short (an attachment or a copy that stopped half-way)
        // still counts when its report.json, written first, arrived whole:
        // the walk of its local headers stops there.
        Err(e) => {
            let mut json = None;
            let _ = walk_zip(zip, MAX_ENTRIES, Recover::Yes, |item| match item {
                ZipItem::Entry(mut file) if entry_name(&file) == REPORT_JSON => {
                    json = read_entry(&mut file, REPORT_JSON).ok();
                    Err(())
                }
                _ => Ok(()),
            });
            json.ok_or_else(|| format!("not a readable zip: {e}"))?
        }
    };
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
/// inflated. Strict: a zip without its directory, or any entry that cannot
/// be read, is an error (see [`read_zip_leniently`] for what can be read).
pub fn read_zip_entries_where(
    bytes: &[u8],
    wanted: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, Vec<u8>>, zip::result::ZipError> {
    let mut entries = BTreeMap::new();
    let walked = walk_zip(bytes, MAX_ENTRIES, Recover::No, |item| match item {
        ZipItem::Entry(mut file) => {
            if file.is_dir() {
                return Ok(());
            }
            let name = entry_name(&file);
            if wanted(&name) {
                let content = read_entry(&mut file, &name)?;
                entries.insert(name, content);
            }
            Ok(())
        }
        ZipItem::Unreadable { error, .. } => Err(error),
    });
    match walked {
        Ok(_) => Ok(entries),
        Err(WalkError::Zip(e) | WalkError::Visit(e)) => Err(e),
        Err(WalkError::TooManyEntries(_)) => Err(zip::result::ZipError::InvalidArchive(
            "too many entries".into(),
        )),
    }
}

/// The entries of a zip that can be read, and a sentence for each part
/// that cannot (an entry too large or corrupt, a zip cut short: its
/// entries before the cut are read from their own headers). `context`
/// starts each sentence (`"the attached zip: "`).
pub fn read_zip_leniently(bytes: &[u8], context: &str) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    let mut entries = BTreeMap::new();
    let mut problems = Vec::new();
    let walked = walk_zip(bytes, MAX_ENTRIES, Recover::Yes, |item| {
        match item {
            ZipItem::Entry(mut file) => {
                if !file.is_dir() {
                    let name = entry_name(&file);
                    match read_entry(&mut file, &name) {
                        Ok(content) => {
                            entries.insert(name, content);
                        }
                        Err(e) => problems.push(format!("{context}{name}: {e}")),
                    }
                }
            }
            ZipItem::Unreadable { name, error } => {
                problems.push(format!("{context}{name}: {error}"));
            }
        }
        Ok::<(), std::convert::Infallible>(())
    });
    match walked {
        Ok(None) => {}
        Ok(Some(damage)) => problems.insert(0, format!("{context}{damage}")),
        Err(WalkError::Zip(e)) => problems.insert(0, format!("{context}{e}")),
        Err(WalkError::TooManyEntries(count)) => problems.insert(
            0,
            format!("{context}{count} entries or more, over the limit of {MAX_ENTRIES}"),
        ),
        Err(WalkError::Visit(never)) => match never {},
    }
    (entries, problems)
}

/// An entry's name, lossily: a name that is not UTF-8 still names it.
fn entry_name<R: Read>(file: &zip::read::ZipFile<'_, R>) -> String {
    file.name()
        .map(|name| name.into_owned())
        .unwrap_or_else(|_| String::from_utf8_lossy(file.name_raw()).into_owned())
}

/// An entry's bytes, up to [`MAX_ENTRY_BYTES`].
fn read_entry<R: Read>(
    file: &mut zip::read::ZipFile<'_, R>,
    name: &str,
) -> Result<Vec<u8>, zip::result::ZipError> {
    let mut content = Vec::new();
    file.take(MAX_ENTRY_BYTES + 1).read_to_end(&mut content)?;
    if content.len() as u64 > MAX_ENTRY_BYTES {
        return Err(zip::result::ZipError::InvalidArchive(
            format!("entry {name} is larger than the limit").into(),
        ));
    }
    Ok(content)
}

/// Whether [`walk_zip`] reads a zip whose directory is missing from its
/// entries' own headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recover {
    Yes,
    No,
}

/// One entry met by [`walk_zip`].
pub enum ZipItem<'f, 'a> {
    Entry(zip::read::ZipFile<'f, Cursor<&'a [u8]>>),
    /// Its header or its data cannot be read (cut short, corrupt).
    Unreadable {
        name: String,
        error: zip::result::ZipError,
    },
}

/// Why [`walk_zip`] stopped.
#[derive(Debug)]
pub enum WalkError<E> {
    /// Nothing of the zip can be read (not a zip, or its directory is
    /// missing and nothing is recovered).
    Zip(zip::result::ZipError),
    /// At least this many entries, more than allowed.
    TooManyEntries(usize),
    /// The visitor stopped the walk.
    Visit(E),
}

/// The one way crashmail reads a zip: each entry, in order, through the
/// zip's central directory; or, when that cannot be read (a zip cut short
/// has lost it with its end) and `recover` says so, by walking the local
/// file headers from the start. Ok(Some(sentence)) says what was wrong with
/// the zip when its entries came from the walk.
pub fn walk_zip<'a, E>(
    bytes: &'a [u8],
    max_entries: usize,
    recover: Recover,
    mut visit: impl FnMut(ZipItem<'_, 'a>) -> Result<(), E>,
) -> Result<Option<String>, WalkError<E>> {
    let directory_error = match zip::ZipArchive::new(Cursor::new(bytes)) {
        Ok(mut archive) => {
            if archive.len() > max_entries {
                return Err(WalkError::TooManyEntries(archive.len()));
            }
            for index in 0..archive.len() {
                let name = archive
                    .name_for_index(index)
                    .and_then(Result::ok)
                    .map(|n| n.into_owned())
                    .unwrap_or_else(|| format!("entry {}", index + 1));
                let item = match archive.by_index(index) {
                    Ok(file) => ZipItem::Entry(file),
                    Err(error) => ZipItem::Unreadable { name, error },
                };
                visit(item).map_err(WalkError::Visit)?;
            }
            return Ok(None);
        }
        Err(e) => e,
    };
    if recover == Recover::No {
        return Err(WalkError::Zip(directory_error));
    }
    let mut cursor = Cursor::new(bytes);
    // Entries met, and those read whole.
    let (mut count, mut whole) = (0, 0);
    let end = loop {
        let start = cursor.position() as usize;
        if start >= bytes.len() {
            break Ending::CutShort;
        }
        // The local header's name and extra field lengths: where its data
        // starts, to tell an entry the cut went through.
        let header_len = bytes.get(start + 26..start + 30).map(|b| {
            30 + u64::from(u16::from_le_bytes([b[0], b[1]]))
                + u64::from(u16::from_le_bytes([b[2], b[3]]))
        });
        match zip::read::read_zipfile_from_stream(&mut cursor) {
            Ok(Some(file)) => {
                count += 1;
                if count > max_entries {
                    return Err(WalkError::TooManyEntries(count));
                }
                let data_end = start as u64 + header_len.unwrap_or(30) + file.compressed_size();
                let item = if data_end > bytes.len() as u64 {
                    let present = (bytes.len() as u64)
                        .saturating_sub(start as u64 + header_len.unwrap_or(30));
                    ZipItem::Unreadable {
                        name: entry_name(&file),
                        error: zip::result::ZipError::InvalidArchive(
                            format!(
                                "cut short: {present} of its {} bytes are there",
                                file.compressed_size()
                            )
                            .into(),
                        ),
                    }
                } else {
                    whole += 1;
                    ZipItem::Entry(file)
                };
                visit(item).map_err(WalkError::Visit)?;
            }
            // The central directory begins: every entry was there.
            Ok(None) => break Ending::Directory,
            Err(zip::result::ZipError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break Ending::CutShort
            }
            Err(e) if e.to_string().contains("beyond file boundary") => break Ending::CutShort,
            Err(e) => break Ending::Damaged(start, e),
        }
    };
    if count == 0 {
        return Err(WalkError::Zip(directory_error));
    }
    let entries = |n: usize| format!("{n} entr{}", if n == 1 { "y" } else { "ies" });
    Ok(Some(match end {
        Ending::CutShort => format!(
            "the zip is cut short ({directory_error}): the {} before the cut were read from their own headers",
            entries(whole)
        ),
        Ending::Directory => format!(
            "the zip is cut short or damaged at its end ({directory_error}): its {} were read from their own headers",
            entries(whole)
        ),
        Ending::Damaged(at, e) => format!(
            "the zip is damaged at byte {at} ({e}; its directory: {directory_error}): the {} before were read from their own headers",
            entries(whole)
        ),
    }))
}

/// Where a walk of local headers ended.
enum Ending {
    CutShort,
    Directory,
    Damaged(usize, zip::result::ZipError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, bytes) in entries {
            let stored =
                SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
            zip.start_file(*name, stored).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    #[test]
    fn a_zip_cut_short_is_read_up_to_the_cut_only_when_asked() {
        let whole = zip_of(&[("a.txt", b"first"), ("b.txt", &[b'x'; 500])]);
        let cut = &whole[..whole.len() - 200];
        assert!(read_zip_entries(cut).is_err(), "strict readers refuse it");
        let (entries, problems) = read_zip_leniently(cut, "");
        assert_eq!(entries.keys().collect::<Vec<_>>(), ["a.txt"]);
        assert!(
            problems[0].starts_with("the zip is cut short"),
            "{problems:?}"
        );
        assert!(problems[1].starts_with("b.txt: "), "{problems:?}");

        let (entries, problems) = read_zip_leniently(&whole[..whole.len() - 10], "");
        assert_eq!(entries.len(), 2, "{problems:?}");
        assert_eq!(problems.len(), 1, "{problems:?}");

        let (entries, problems) = read_zip_leniently(&whole[..10], "the attached zip: ");
        assert!(entries.is_empty());
        assert!(
            problems[0].starts_with("the attached zip: "),
            "{problems:?}"
        );

        let (entries, problems) = read_zip_leniently(&whole, "");
        assert_eq!(entries.len(), 2);
        assert!(problems.is_empty(), "{problems:?}");
    }
}
