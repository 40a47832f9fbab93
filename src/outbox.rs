//! The outbox: a directory per state, every write atomic, every claim a rename.
//!
//! ```text
//! <outbox>/pending/<id>.zip     waiting to be sent
//! <outbox>/sending/<id>.zip     claimed by a sender
//! <outbox>/sent/<id>.zip        delivered
//! <outbox>/failed/<id>.zip      refused for good (with <id>.json saying why)
//! <outbox>/incoming/            records the application wrote without a watcher
//! <outbox>/run/                 watcher sockets and dumps being written
//! ```
//!
//! Directories are 0700 and files 0600: reports hold private data.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const PENDING: &str = "pending";
pub const SENDING: &str = "sending";
pub const SENT: &str = "sent";
/// `sending/.owner-<pid>`: the owner file of one sender process.
const OWNER_PREFIX: &str = ".owner-";
pub const FAILED: &str = "failed";

/// A report's delivery record, kept beside it as `<id>.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub attempts: u32,
    pub last_error: Option<String>,
    /// RFC 3339 time of the first attempt: give-up time counts from here.
    #[serde(default)]
    pub first_attempt: Option<String>,
    /// RFC 3339 time of the last attempt.
    pub last_attempt: Option<String>,
    /// RFC 3339 time before which the report is not tried again.
    #[serde(default)]
    pub next_attempt: Option<String>,
    /// Set when the last refusal was a configuration problem (credentials
    /// refused, STARTTLS missing…): the fingerprint of the `[smtp]` settings
    /// it happened under. A changed configuration makes the report due at once.
    #[serde(default)]
    pub config_problem: Option<String>,
    /// Why the report waits without having been tried: a repeat held for a
    /// digest, or the hourly limit.
    #[serde(default)]
    pub held: Option<String>,
    /// The report whose email carried this one (a digest of repeats).
    #[serde(default)]
    pub coalesced_into: Option<String>,
    /// Older repeats of this report's crash dropped to keep the outbox
    /// within its limits; told in the email that carries this one.
    #[serde(default)]
    pub dropped_repeats: u32,
    /// Set by `crashmail outbox retry`: the next try ignores the repeat
    /// window and the hourly limit.
    #[serde(default)]
    pub forced: bool,
}

/// The first retry waits this long; each later one twice as long as the
/// one before, up to [`MAX_RETRY_DELAY`].
pub const FIRST_RETRY_DELAY: chrono::TimeDelta = chrono::TimeDelta::minutes(1);
pub const MAX_RETRY_DELAY: chrono::TimeDelta = chrono::TimeDelta::hours(6);

impl DeliveryRecord {
    /// True when the report may be tried at `now` under the `[smtp]`
    /// settings with this fingerprint.
    pub fn is_due(&self, now: chrono::DateTime<chrono::Utc>, config_fingerprint: &str) -> bool {
        if self
            .config_problem
            .as_deref()
            .is_some_and(|problem| problem != config_fingerprint)
        {
            return true;
        }
        match self
            .next_attempt
            .as_deref()
            .map(chrono::DateTime::parse_from_rfc3339)
        {
            Some(Ok(next)) => next <= now,
            _ => true,
        }
    }

    /// When the first attempt was made.
    pub fn first_attempt_time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.first_attempt
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    }
}

/// The wait after `attempts` failed attempts: `first`, doubling, at most `max`.
pub fn retry_delay(
    attempts: u32,
    first: chrono::TimeDelta,
    max: chrono::TimeDelta,
) -> chrono::TimeDelta {
    let doublings = attempts.saturating_sub(1).min(20);
    let delay = first.checked_mul(1i32 << doublings).unwrap_or(max);
    delay.min(max)
}

/// An outbox directory.
#[derive(Clone, Debug)]
pub struct Outbox {
    root: PathBuf,
}

impl Outbox {
    /// Opens (and creates, privately) the outbox at `root`.
    pub fn open(root: impl Into<PathBuf>) -> std::io::Result<Outbox> {
        let root = root.into();
        if root.exists() && !root.is_dir() {
            return Err(std::io::Error::other(format!(
                "the outbox {} is not a folder",
                root.display()
            )));
        }
        let named = |path: &Path, e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
        };
        for dir in [
            PENDING,
            SENDING,
            SENT,
            FAILED,
            crashmail_handler::INCOMING_DIR,
            crashmail_handler::RUN_DIR,
        ] {
            let dir = root.join(dir);
            crashmail_handler::create_private_dir(&dir).map_err(|e| named(&dir, e))?;
        }
        crashmail_handler::create_private_dir(&root).map_err(|e| named(&root, e))?;
        Ok(Outbox { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir(&self, state: &str) -> PathBuf {
        self.root.join(state)
    }

    /// Puts a report into `pending/`, durably.
    pub fn add(&self, id: &str, zip: &[u8]) -> std::io::Result<PathBuf> {
        let path = self.dir(PENDING).join(format!("{id}.zip"));
        write_atomic(&path, zip)?;
        Ok(path)
    }

    /// Ids waiting in `pending/`, oldest first.
    pub fn pending(&self) -> std::io::Result<Vec<String>> {
        let mut entries: Vec<(std::time::SystemTime, String)> =
            std::fs::read_dir(self.dir(PENDING))?
                .filter_map(Result::ok)
                .filter_map(|entry| {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let id = name.strip_suffix(".zip")?.to_string();
                    let modified = entry.metadata().and_then(|m| m.modified()).ok()?;
                    Some((modified, id))
                })
                .collect();
        entries.sort();
        Ok(entries.into_iter().map(|(_, id)| id).collect())
    }

    /// Claims a pending report by renaming it into `sending/`. `None` when
    /// another sender was first.
    pub fn claim(&self, id: &str) -> std::io::Result<Option<Claim>> {
        let from = self.dir(PENDING).join(format!("{id}.zip"));
        let to = self.dir(SENDING).join(format!("{id}.zip"));
        match std::fs::rename(&from, &to) {
            Ok(()) => {
                // The claim's age counts from now; its owner is this process.
                if let Ok(file) = std::fs::File::options().append(true).open(&to) {
                    let _ = file.set_modified(std::time::SystemTime::now());
                }
                self.mark_owner(id)?;
                Ok(Some(Claim {
                    outbox: self.clone(),
                    id: id.to_string(),
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Names this process as the owner of the claim `id`: `<id>.owner` is a
    /// hard link to one owner file per process (`.owner-<pid>`, holding the
    /// pid). A link allocates no inode, and allocating inodes is most of a
    /// claim's cost on ext4. Not synced: a claim whose owner file is lost
    /// just expires.
    fn mark_owner(&self, id: &str) -> std::io::Result<()> {
        let sending = self.dir(SENDING);
        let owner = sending.join(format!("{id}.owner"));
        let process_owner = sending.join(format!("{OWNER_PREFIX}{}", std::process::id()));
        // A leftover of an earlier claim of the same report.
        let _ = std::fs::remove_file(&owner);
        if std::fs::hard_link(&process_owner, &owner).is_ok() {
            return Ok(());
        }
        let pid = format!("{}\n", std::process::id());
        write_replace(&process_owner, pid.as_bytes())?;
        std::fs::hard_link(&process_owner, &owner)
            .or_else(|_| write_replace(&owner, pid.as_bytes()))
    }

    /// Pending reports that wait without an attempt (held for a digest or
    /// the hourly limit), with their records. Reads only the records there
    /// are: one folder listing, no stat per report.
    pub fn held(&self) -> std::io::Result<Vec<(String, DeliveryRecord)>> {
        let mut held = Vec::new();
        for entry in std::fs::read_dir(self.dir(PENDING))?.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            let record = self.record(PENDING, id);
            if record.held.is_some() && self.dir(PENDING).join(format!("{id}.zip")).exists() {
                held.push((id.to_string(), record));
            }
        }
        Ok(held)
    }

    /// The delivery record of a report in `state`.
    pub fn record(&self, state: &str, id: &str) -> DeliveryRecord {
        std::fs::read(self.dir(state).join(format!("{id}.json")))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Files the application left in `incoming/` without a watcher.
    pub fn incoming(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir(crashmail_handler::INCOMING_DIR))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        Ok(files)
    }
}

/// The table `crashmail outbox list` prints: every report with its state,
/// age, application, reason, attempts and (while unsent) last error.
pub fn listing(outbox: &Outbox) -> std::io::Result<String> {
    use std::fmt::Write as _;
    let now = std::time::SystemTime::now();
    // (state's place, crash time, row): each state's reports oldest first.
    let mut rows = Vec::new();
    for (place, state) in [PENDING, SENDING, FAILED, SENT].into_iter().enumerate() {
        for entry in std::fs::read_dir(outbox.dir(state))?.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".zip") else {
                continue;
            };
            let file_age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok());
            let meta = std::fs::read(entry.path())
                .ok()
                .and_then(|zip| crate::bundle::read_report_meta(&zip).ok());
            let record = outbox.record(state, id);
            let when = meta.as_ref().map(|m| m.time).or_else(|| {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .map(chrono::DateTime::<chrono::Utc>::from)
            });
            // Age of the crash itself, not of the last attempt.
            let age = meta
                .as_ref()
                .and_then(|m| (chrono::Utc::now() - m.time).to_std().ok())
                .or(file_age)
                .map(human_age)
                .unwrap_or_default();
            let next = match (state, record.next_attempt.as_deref()) {
                (PENDING, Some(next)) => chrono::DateTime::parse_from_rfc3339(next)
                    .map(|t| {
                        if t <= chrono::Utc::now() {
                            "now".to_string()
                        } else {
                            t.with_timezone(&chrono::Local).format("%H:%M").to_string()
                        }
                    })
                    .unwrap_or_default(),
                (PENDING, None) => "now".into(),
                _ => String::new(),
            };
            let (app, reason) = match meta {
                Some(m) => (format!("{} {}", m.app_name, m.app_version), m.reason),
                None => match email_subject(&entry.path()) {
                    Some(subject) => ("(email)".into(), subject),
                    None => ("?".into(), "(report.json unreadable)".into()),
                },
            };
            let error = match (state, &record.held) {
                (SENT, _) => record
                    .coalesced_into
                    .as_ref()
                    .map(|c| format!("carried by {c}"))
                    .unwrap_or_default(),
                (PENDING, Some(held)) => format!("held: {held}"),
                _ => record.last_error.clone().unwrap_or_default(),
            };
            rows.push((
                place,
                when,
                [
                    state.to_string(),
                    id.to_string(),
                    age,
                    app,
                    reason,
                    record.attempts.to_string(),
                    next,
                    error,
                ],
            ));
        }
    }
    rows.sort_by_key(|a| (a.0, a.1));
    // Every cell on one line and inert: a subject, a reason or a server's
    // words may hold line breaks or terminal escape sequences.
    let rows: Vec<[String; 8]> = rows
        .into_iter()
        .map(|(_, _, row)| row.map(|cell| table_cell(&cell)))
        .collect();
    let incoming = outbox.incoming()?.len();
    let mut out = String::new();
    if rows.is_empty() {
        let _ = writeln!(out, "The outbox {} is empty.", outbox.root().display());
    } else {
        let header = [
            "state",
            "id",
            "age",
            "application",
            "reason",
            "attempts",
            "next try",
            "last error, or why it waits",
        ];
        // Columns are at most 60 characters wide, a cut marked with `…`;
        // the last one, which nothing follows, is shown whole.
        const WIDEST: usize = 60;
        let last = header.len() - 1;
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row.iter()) {
                *width = (*width).max(cell.chars().count().min(WIDEST));
            }
        }
        let line = |cells: &[String]| -> String {
            cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(column, (cell, width))| {
                    if column == last {
                        format!("{cell:<width$}")
                    } else {
                        let cell = crate::report::cut_to_width(cell, WIDEST);
                        format!("{cell:<width$}")
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let _ = writeln!(out, "{}", line(&header.map(String::from)));
        for row in &rows {
            let _ = writeln!(out, "{}", line(row));
        }
    }
    if incoming > 0 {
        let _ = writeln!(out, "\n{incoming} crash record(s) in incoming/ wait to be bundled: run `crashmail outbox flush`.");
    }
    Ok(out)
}

/// A cell of the `outbox list` table, made inert as `crashmail inspect`
/// shows a report's text ([`crate::inspect::inert`]): a cell can neither
/// break its row nor drive the terminal.
fn table_cell(text: &str) -> String {
    crate::inspect::inert(text).to_string()
}

/// The subject of an application email in the outbox.
fn email_subject(zip: &Path) -> Option<String> {
    let entries = crate::bundle::read_zip_entries(&std::fs::read(zip).ok()?).ok()?;
    crate::outgoing::unpack(&entries)
        .ok()
        .map(|email| email.subject)
}

fn human_age(age: std::time::Duration) -> String {
    let seconds = age.as_secs();
    match seconds {
        0..=59 => format!("{seconds}s"),
        60..=3599 => format!("{}m", seconds / 60),
        3600..=86_399 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86_400),
    }
}

/// A report this process has claimed for sending.
#[derive(Debug)]
pub struct Claim {
    outbox: Outbox,
    id: String,
}

impl Claim {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn path(&self) -> PathBuf {
        self.outbox.dir(SENDING).join(format!("{}.zip", self.id))
    }

    fn owner_path(&self) -> PathBuf {
        self.outbox.dir(SENDING).join(format!("{}.owner", self.id))
    }

    /// The report's delivery record as it stands.
    pub fn record(&self) -> DeliveryRecord {
        self.outbox.record(PENDING, &self.id)
    }

    /// Moves the report to `state` (`pending/`, `sent/`, `failed/`) with its
    /// record updated by `update`.
    pub fn finish(
        self,
        state: &str,
        update: impl FnOnce(&mut DeliveryRecord),
    ) -> std::io::Result<()> {
        let mut syncs = DeferredSync::default();
        self.finish_into(state, &mut syncs, update)?;
        syncs.sync()
    }

    /// [`Claim::finish`], with the folder's sync left to `syncs`.
    fn finish_into(
        self,
        state: &str,
        syncs: &mut DeferredSync,
        update: impl FnOnce(&mut DeliveryRecord),
    ) -> std::io::Result<()> {
        let mut record = self.record();
        update(&mut record);
        let json = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
        let path = self.outbox.dir(state).join(format!("{}.json", self.id));
        if state == SENT {
            // What matters of a sent report is where its zip is, and that
            // rename is synced with its folder; a record lost to a power cut
            // only loses the sending time, never the report.
            write_replace(&path, &json)?;
        } else {
            write_synced_file(&path, &json)?;
        }
        syncs.add(self.outbox.dir(state));
        std::fs::rename(
            self.path(),
            self.outbox.dir(state).join(format!("{}.zip", self.id)),
        )?;
        if state != PENDING {
            let _ =
                std::fs::remove_file(self.outbox.dir(PENDING).join(format!("{}.json", self.id)));
        }
        let _ = std::fs::remove_file(self.owner_path());
        Ok(())
    }

    /// Delivered: to `sent/`. The folder is synced by `syncs`, with others:
    /// until then a power cut can only bring the report back to be resent
    /// with its Message-ID, never lose it.
    pub fn sent(self, syncs: &mut DeferredSync) -> std::io::Result<()> {
        self.finish_into(SENT, syncs, |record| {
            record.attempts += 1;
            record.last_attempt = Some(chrono::Utc::now().to_rfc3339());
            record.next_attempt = None;
            record.held = None;
            record.forced = false;
        })
    }
}

impl Outbox {
    /// Makes a report in `failed/` or `pending/` pending and due now.
    pub fn retry(&self, id: &str) -> std::io::Result<()> {
        let id = &self.resolve_id(id, &[FAILED, PENDING])?;
        for state in [FAILED, PENDING] {
            let zip = self.dir(state).join(format!("{id}.zip"));
            if !zip.exists() {
                continue;
            }
            let mut record = self.record(state, id);
            record.next_attempt = None;
            record.config_problem = None;
            record.held = None;
            record.forced = true;
            let json = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
            write_atomic(&self.dir(PENDING).join(format!("{id}.json")), &json)?;
            if state != PENDING {
                std::fs::rename(&zip, self.dir(PENDING).join(format!("{id}.zip")))?;
                let _ = std::fs::remove_file(self.dir(state).join(format!("{id}.json")));
            }
            return Ok(());
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "no report {id} in pending/ or failed/ of {}",
                self.root.display()
            ),
        ))
    }

    /// The full id of the report in `states` that `given` names: its id, or
    /// the start of exactly one id (as `outbox list` shows them).
    fn resolve_id(&self, given: &str, states: &[&str]) -> std::io::Result<String> {
        let mut matches = Vec::new();
        for state in states {
            for entry in std::fs::read_dir(self.dir(state))?.filter_map(Result::ok) {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_suffix(".zip") {
                    if id == given {
                        return Ok(id.to_string());
                    }
                    if !given.is_empty() && id.starts_with(given) {
                        matches.push(id.to_string());
                    }
                }
            }
        }
        matches.dedup();
        match matches.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no report {given} in {} of {}",
                    states
                        .iter()
                        .map(|s| format!("{s}/"))
                        .collect::<Vec<_>>()
                        .join(" or "),
                    self.root.display()
                ),
            )),
            several => Err(std::io::Error::other(format!(
                "{given} starts {} report ids ({}): give more of it",
                several.len(),
                several.join(", ")
            ))),
        }
    }

    /// Writes a report's delivery record in `state`.
    pub fn write_record(
        &self,
        state: &str,
        id: &str,
        record: &DeliveryRecord,
    ) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        write_atomic(&self.dir(state).join(format!("{id}.json")), &json)
    }

    /// Keeps `pending/` within `max_reports` and `max_bytes`: while over,
    /// the oldest report of the crash signature with the most pending
    /// reports goes, and its newest report counts the drop, so the email
    /// says so. A signature with one report left is never dropped: when
    /// only distinct crashes remain, the outbox stays over its limit.
    /// Returns the ids dropped; each is also logged in `dropped.log`.
    pub fn enforce_limits(
        &self,
        max_reports: usize,
        max_bytes: u64,
    ) -> std::io::Result<Vec<String>> {
        let mut reports: Vec<(String, String, u64)> = Vec::new();
        let mut total = 0u64;
        for id in self.pending()? {
            let path = self.dir(PENDING).join(format!("{id}.zip"));
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            total += size;
            reports.push((id, String::new(), size));
        }
        if reports.len() <= max_reports && total <= max_bytes {
            return Ok(Vec::new());
        }
        for (id, signature, _) in &mut reports {
            *signature = std::fs::read(self.dir(PENDING).join(format!("{id}.zip")))
                .ok()
                .and_then(|zip| crate::bundle::read_report_meta(&zip).ok())
                .map(|meta| meta.signature)
                .unwrap_or_else(|| format!("unreadable {id}"));
        }
        let mut dropped = Vec::new();
        while reports.len() > max_reports || total > max_bytes {
            let mut counts: std::collections::HashMap<&str, usize> =
                std::collections::HashMap::new();
            for (_, signature, _) in &reports {
                *counts.entry(signature.as_str()).or_default() += 1;
            }
            let Some((signature, _)) = counts
                .into_iter()
                .filter(|(_, n)| *n > 1)
                .max_by_key(|(_, n)| *n)
            else {
                break;
            };
            let signature = signature.to_string();
            // `reports` is oldest first: drop the first of this signature,
            // credit the last.
            let index = reports
                .iter()
                .position(|(_, s, _)| *s == signature)
                .expect("counted");
            let (id, _, size) = reports.remove(index);
            let newest = reports
                .iter()
                .rev()
                .find(|(_, s, _)| *s == signature)
                .map(|(id, _, _)| id.clone())
                .expect("counted");
            let mut record = self.record(PENDING, &newest);
            record.dropped_repeats += 1 + self.record(PENDING, &id).dropped_repeats;
            self.write_record(PENDING, &newest, &record)?;
            std::fs::remove_file(self.dir(PENDING).join(format!("{id}.zip")))?;
            let _ = std::fs::remove_file(self.dir(PENDING).join(format!("{id}.json")));
            let line = format!(
                "{} dropped {id}, an older repeat of: {signature} (counted in {newest})\n",
                chrono::Utc::now().to_rfc3339()
            );
            use std::io::Write as _;
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.root.join("dropped.log"))?;
            log.write_all(line.as_bytes())?;
            total = total.saturating_sub(size);
            dropped.push(id);
        }
        Ok(dropped)
    }

    /// Deletes the reports in `failed/`: the only reports ever deleted, and
    /// only when asked. Returns how many.
    pub fn purge_failed(&self) -> std::io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(self.dir(FAILED))?.filter_map(Result::ok) {
            let is_zip = entry.path().extension().is_some_and(|e| e == "zip");
            std::fs::remove_file(entry.path())?;
            removed += usize::from(is_zip);
        }
        Ok(removed)
    }

    /// Removes this process's owner file once it has finished sending: its
    /// claims are all settled, and nothing else would remove it before the
    /// next sender's clean-up.
    pub fn forget_this_sender(&self) {
        let _ = std::fs::remove_file(
            self.dir(SENDING)
                .join(format!("{OWNER_PREFIX}{}", std::process::id())),
        );
    }

    /// Claims whose sender is gone (killed while sending) or that are older
    /// than `max_age` go back to `pending/`: the report is resent later
    /// with the same Message-ID. Returns how many were released.
    pub fn release_stale_claims(&self, max_age: std::time::Duration) -> std::io::Result<usize> {
        let mut released = 0;
        for entry in std::fs::read_dir(self.dir(SENDING))?.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(OWNER_PREFIX) {
                // The owner file of a sender that is gone.
                if pid
                    .parse::<u32>()
                    .is_ok_and(|pid| !crate::watcher::process_alive(pid))
                {
                    let _ = std::fs::remove_file(entry.path());
                }
                continue;
            }
            let Some(id) = name.strip_suffix(".zip") else {
                continue;
            };
            let owner = std::fs::read_to_string(self.dir(SENDING).join(format!("{id}.owner")))
                .unwrap_or_default();
            let owner_pid = owner
                .split_whitespace()
                .next()
                .and_then(|p| p.parse::<u32>().ok());
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            let owner_gone = owner_pid.is_none_or(|pid| !crate::watcher::process_alive(pid));
            let expired = (owner_gone && age > std::time::Duration::from_secs(2)) || age > max_age;
            if expired && std::fs::rename(entry.path(), self.dir(PENDING).join(&name)).is_ok() {
                let _ = std::fs::remove_file(self.dir(SENDING).join(format!("{id}.owner")));
                released += 1;
            }
        }
        Ok(released)
    }
}

/// Writes `bytes` to `path` through a temporary name, without syncing: for
/// state that may be lost in a power failure (rate counters, a watcher's
/// crash note), never for a report or its record.
pub fn write_replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension(format!("{}.tmp", std::process::id()));
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| file.write_all(bytes))
        .and_then(|_| std::fs::rename(&temporary, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// Writes `bytes` to a new file `path`, private to its user, without
/// syncing; on failure nothing is left at `path`. For copies that matter only
/// while this machine stays up (the watcher's recovery copy of a minidump).
pub fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(bytes));
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Folders whose entries changed and are not synced yet; each is synced
/// once however many entries changed in it.
#[derive(Debug, Default)]
pub struct DeferredSync {
    dirs: std::collections::BTreeSet<PathBuf>,
    changes: usize,
}

impl DeferredSync {
    fn add(&mut self, dir: PathBuf) {
        self.dirs.insert(dir);
        self.changes += 1;
    }

    /// Syncs every folder noted.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.changes = 0;
        for dir in std::mem::take(&mut self.dirs) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Syncs once `changes` entries or more wait for it.
    pub fn sync_beyond(&mut self, changes: usize) -> std::io::Result<()> {
        if self.changes >= changes {
            self.sync()?;
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` so that `path` is either absent or complete:
/// temporary name, fsync, rename, fsync of the folder. The file is 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_synced_file(path, bytes)?;
    std::fs::File::open(parent_dir(path))?.sync_all()
}

/// A bare file name (`AXIS.INI`) has an empty parent: the current folder.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// [`write_atomic`] but for the folder's sync, which the caller owes.
fn write_synced_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn minutes(n: i64) -> chrono::TimeDelta {
        chrono::TimeDelta::minutes(n)
    }

    #[test]
    fn retry_delay_doubles_up_to_the_maximum() {
        let (first, max) = (minutes(1), chrono::TimeDelta::hours(6));
        assert_eq!(retry_delay(1, first, max), minutes(1));
        assert_eq!(retry_delay(2, first, max), minutes(2));
        assert_eq!(retry_delay(4, first, max), minutes(8));
        assert_eq!(retry_delay(30, first, max), max);
    }

    #[test]
    fn add_claim_and_send_moves_through_states_privately() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path().join("box")).unwrap();
        let path = outbox.add("r1", b"zip").unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(outbox.dir(PENDING))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        assert_eq!(outbox.pending().unwrap(), vec!["r1".to_string()]);
        let claim = outbox.claim("r1").unwrap().expect("claimed");
        assert!(
            outbox.claim("r1").unwrap().is_none(),
            "a second claim must fail"
        );
        let mut syncs = DeferredSync::default();
        claim.sent(&mut syncs).unwrap();
        syncs.sync().unwrap();
        assert!(outbox.dir(SENT).join("r1.zip").exists());
        assert!(outbox.pending().unwrap().is_empty());
        assert_eq!(outbox.record(SENT, "r1").attempts, 1);
    }

    #[test]
    fn a_configuration_problem_is_due_again_once_the_configuration_changes() {
        let record = DeliveryRecord {
            next_attempt: Some((chrono::Utc::now() + chrono::TimeDelta::hours(6)).to_rfc3339()),
            config_problem: Some("AXIS.INI:100:1".into()),
            ..DeliveryRecord::default()
        };
        let now = chrono::Utc::now();
        assert!(
            !record.is_due(now, "AXIS.INI:100:1"),
            "not retried in a tight loop"
        );
        assert!(
            record.is_due(now, "AXIS.INI:120:2"),
            "retried at once after a change"
        );
    }

    #[test]
    fn a_claim_whose_sender_died_goes_back_to_pending() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        outbox.add("r3", b"zip").unwrap();
        let claim = outbox.claim("r3").unwrap().unwrap();
        // A live owner (this process) keeps its claim.
        assert_eq!(
            outbox
                .release_stale_claims(std::time::Duration::from_secs(3600))
                .unwrap(),
            0
        );
        // A dead owner's claim expires.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        // (Its own file: the claim's owner file is a link to this process's.)
        std::fs::remove_file(outbox.dir(SENDING).join("r3.owner")).unwrap();
        std::fs::write(outbox.dir(SENDING).join("r3.owner"), format!("{dead} x")).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
        std::fs::File::options()
            .append(true)
            .open(claim.path())
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(
            outbox
                .release_stale_claims(std::time::Duration::from_secs(3600))
                .unwrap(),
            1
        );
        assert_eq!(outbox.pending().unwrap(), vec!["r3".to_string()]);
    }

    #[test]
    fn claims_of_one_process_share_its_owner_file_which_goes_when_it_does() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        outbox.add("r5", b"zip").unwrap();
        outbox.add("r6", b"zip").unwrap();
        outbox.claim("r5").unwrap().unwrap();
        outbox.claim("r6").unwrap().unwrap();
        let sending = outbox.dir(SENDING);
        let own = sending.join(format!("{OWNER_PREFIX}{}", std::process::id()));
        let inode = |path: &std::path::Path| std::fs::metadata(path).unwrap().ino();
        assert_eq!(inode(&sending.join("r5.owner")), inode(&own));
        assert_eq!(inode(&sending.join("r6.owner")), inode(&own));
        assert_eq!(
            std::fs::read_to_string(&own).unwrap().trim(),
            std::process::id().to_string()
        );
        // The owner file of a process that is gone is cleared away.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let theirs = sending.join(format!("{OWNER_PREFIX}{dead}"));
        std::fs::write(&theirs, format!("{dead}\n")).unwrap();
        outbox
            .release_stale_claims(std::time::Duration::from_secs(3600))
            .unwrap();
        assert!(!theirs.exists());
        assert!(own.exists(), "a live process keeps its own");
    }

    #[test]
    fn retry_takes_the_start_of_an_id() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        outbox.add("06cf4283-aaaa", b"zip").unwrap();
        outbox.add("06cf4283-bbbb", b"zip").unwrap();
        outbox.add("7d1e0000-cccc", b"zip").unwrap();
        outbox.retry("7d1e").unwrap();
        assert!(outbox.record(PENDING, "7d1e0000-cccc").forced);
        let several = outbox.retry("06cf").unwrap_err().to_string();
        assert!(several.contains("starts 2 report ids"), "{several}");
        let none = outbox.retry("ffff").unwrap_err().to_string();
        assert!(
            none.contains("no report ffff in failed/ or pending/"),
            "{none}"
        );
    }

    #[test]
    fn retry_brings_a_failed_report_back() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        outbox.add("r4", b"zip").unwrap();
        outbox
            .claim("r4")
            .unwrap()
            .unwrap()
            .finish(FAILED, |r| r.last_error = Some("550 no".into()))
            .unwrap();
        outbox.retry("r4").unwrap();
        assert_eq!(outbox.pending().unwrap(), vec!["r4".to_string()]);
        assert!(outbox.record(PENDING, "r4").is_due(chrono::Utc::now(), ""));
        assert!(outbox.retry("nope").is_err());
    }
}
