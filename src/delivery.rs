//! Moving reports out of the outbox: packaging what the application left in
//! `incoming/`, and sending what waits in `pending/`.

use crate::assemble::{self, CrashEvidence};
use crate::bundle::{self, ReportContents, REPORT_JSON, SUMMARY_TXT};
use crate::config::Config;
use crate::mail;
use crate::outbox::Outbox;
use crate::report::ReportMeta;
use crashmail_handler::protocol::{PanicRecord, SignalRecord};

/// Bundles every record in `incoming/` into a pending report. Records that
/// cannot be read are moved aside, never deleted.
pub fn package_incoming(outbox: &Outbox, config: Option<&Config>) -> std::io::Result<Vec<String>> {
    let mut ids = recover_unfinished(outbox, config)?;
    ids.extend(package_records(outbox, outbox, config)?);
    // An application without a watcher writes its records where it looks
    // for the outbox itself ($CRASHMAIL_OUTBOX, else the user's state
    // folder): it does not read AXIS.INI, whose [report] Outbox may name
    // another. Those records are bundled into this outbox too.
    if let Some(own) = crashmail_handler::default_outbox_dir() {
        let elsewhere =
            std::fs::canonicalize(&own).ok() != std::fs::canonicalize(outbox.root()).ok();
        if elsewhere && own.join(crashmail_handler::INCOMING_DIR).is_dir() {
            ids.extend(package_records(&Outbox::open(&own)?, outbox, config)?);
        }
    }
    Ok(ids)
}

/// Bundles the records in `source`'s `incoming/` into reports in
/// `destination`'s `pending/`.
fn package_records(
    source: &Outbox,
    destination: &Outbox,
    config: Option<&Config>,
) -> std::io::Result<Vec<String>> {
    let mut ids = Vec::new();
    let tail = config
        .map(|c| c.report.log_tail_bytes)
        .unwrap_or(crate::config::DEFAULT_LOG_TAIL_BYTES);
    for path in source.incoming()? {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let evidence = if name.ends_with(".panic.json") {
            std::fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<PanicRecord>(&bytes).ok())
                .map(|panic| CrashEvidence {
                    app_name: panic.app_name.clone(),
                    app_version: panic.app_version.clone(),
                    pid: panic.pid,
                    log_files: panic.log_files.clone(),
                    time: chrono::DateTime::from_timestamp_millis(panic.time_ms as i64),
                    panic: Some(panic),
                    minidump: Some(Err("the application had no watcher when it panicked".into())),
                    ..CrashEvidence::default()
                })
        } else if name.ends_with(".signal") {
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| SignalRecord::parse(&text))
                .map(|record| CrashEvidence {
                    app_name: Some(record.app_name.clone())
                        .filter(|n| !n.is_empty())
                        .unwrap_or_else(|| "unknown application".into()),
                    app_version: Some(record.app_version.clone())
                        .filter(|v| !v.is_empty())
                        .unwrap_or_else(|| "unknown".into()),
                    pid: record.pid,
                    time: chrono::DateTime::from_timestamp(record.time_s as i64, 0),
                    signal_record: Some(record),
                    minidump: Some(Err("the application had no watcher when it crashed".into())),
                    ..CrashEvidence::default()
                })
        } else {
            continue;
        };
        let Some(mut evidence) = evidence else {
            let aside = path.with_extension("unreadable");
            std::fs::rename(&path, aside)?;
            continue;
        };
        if let Some(config) = config {
            evidence
                .log_files
                .extend(config.report.log_files.iter().cloned());
        }
        // The application is gone, and with it its environment: what is
        // known here is masked (and every report masks the secrets its own
        // text names, see `assemble`).
        evidence.secrets = local_secrets(config);
        let mut contents = assemble::assemble(evidence, tail);
        let id = contents.meta.id.to_string();
        store(destination, &mut contents)?;
        std::fs::remove_file(&path)?;
        ids.push(id);
    }
    Ok(ids)
}

/// Puts a report into `pending/`. When the outbox's disk refuses it (full,
/// over quota), it tries again without the minidump, then without the log
/// tails, and says so in the report: a report with less in it is worth more
/// than none. The frames read from the minidump stay in the report.
pub fn store(
    outbox: &Outbox,
    contents: &mut ReportContents,
) -> std::io::Result<std::path::PathBuf> {
    let id = contents.meta.id.to_string();
    loop {
        let error = match contents.to_zip() {
            Ok(zip) => match outbox.add(&id, &zip) {
                Ok(path) => return Ok(path),
                Err(e) => e,
            },
            Err(e) => std::io::Error::other(e),
        };
        if contents.minidump.take().is_some() {
            contents.meta.notes.push(format!(
                "minidump.dmp was left out: the report could not be stored with it ({error}); the frames shown were read from it"
            ));
        } else if !contents.logs.is_empty() {
            contents.logs.clear();
            // What was said about each log's tail no longer applies.
            contents
                .meta
                .notes
                .retain(|note| !note.starts_with("logs/"));
            contents.meta.notes.push(format!(
                "the log tails were left out: the report could not be stored with them ({error})"
            ));
        } else {
            return Err(error);
        }
    }
}

/// Secrets known here: this process's environment (an application's
/// records are read by the same user's `crashmail`) and the SMTP password.
fn local_secrets(config: Option<&Config>) -> crate::privacy::Secrets {
    crate::privacy::Secrets::gather(
        std::env::vars_os().map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        }),
        config
            .and_then(|c| c.smtp.password.as_ref())
            .map(|p| p.expose()),
    )
}

/// Reports that a watcher began and did not finish (it was killed, or the
/// machine went down): its crash notes and dumps in `run/`, once no live
/// watcher owns them, are turned into pending reports.
pub fn recover_unfinished(
    outbox: &Outbox,
    config: Option<&Config>,
) -> std::io::Result<Vec<String>> {
    use crate::watcher::{process_alive, CrashNote, CRASH_NOTE_SUFFIX};
    let run = outbox.dir(crashmail_handler::RUN_DIR);
    let owner_gone = |name: &str| {
        name.split('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !process_alive(pid))
    };
    let tail = config
        .map(|c| c.report.log_tail_bytes)
        .unwrap_or(crate::config::DEFAULT_LOG_TAIL_BYTES);
    let mut ids = Vec::new();
    let mut entries: Vec<std::path::PathBuf> = std::fs::read_dir(&run)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    let mut claimed_dumps = std::collections::HashSet::new();
    for path in &entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.ends_with(CRASH_NOTE_SUFFIX) || !owner_gone(&name) {
            continue;
        }
        let Some(note) = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<CrashNote>(&b).ok())
        else {
            std::fs::rename(path, path.with_extension("unreadable"))?;
            continue;
        };
        let minidump = note.dump.as_ref().map(|dump| {
            claimed_dumps.insert(dump.clone());
            std::fs::read(dump).map_err(|e| format!("the dump could not be read back: {e}"))
        });
        let mut log_files = note.hello.log_files.clone();
        if let Some(config) = config {
            log_files.extend(config.report.log_files.iter().cloned());
        }
        let evidence = CrashEvidence {
            app_name: note.hello.app_name.clone(),
            app_version: note.hello.app_version.clone(),
            pid: note.hello.pid,
            started_at_ms: Some(note.hello.started_at_ms),
            exe: note.hello.exe.clone(),
            cwd: note.hello.cwd.clone(),
            log_files,
            time: note
                .panic
                .as_ref()
                .and_then(|p| chrono::DateTime::from_timestamp_millis(p.time_ms as i64)),
            panic: note.panic.clone(),
            minidump,
            signal_record: None,
            abnormal_exit: note.abnormal_exit,
            secrets: local_secrets(config),
            process: None,
            exit_status: None,
            registers: None,
            out_of_memory: None,
            ended: None,
        };
        let mut contents = assemble::assemble(evidence, tail);
        contents
            .meta
            .notes
            .push("recovered: the watcher stopped before it finished this report".into());
        let id = contents.meta.id.to_string();
        store(outbox, &mut contents)?;
        if let Some(dump) = &note.dump {
            let _ = std::fs::remove_file(dump);
        }
        std::fs::remove_file(path)?;
        ids.push(id);
    }
    // A dump with no note: the watcher died while the dump was written or
    // right after. What the dump says is still worth a report.
    for path in &entries {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.ends_with(".dmp")
            || claimed_dumps.contains(path)
            || !owner_gone(&name)
            || !path.exists()
        {
            continue;
        }
        let bytes = std::fs::read(path)?;
        let evidence = CrashEvidence {
            app_name: "unknown application".into(),
            app_version: "unknown".into(),
            minidump: Some(Ok(bytes)),
            secrets: local_secrets(config),
            ..CrashEvidence::default()
        };
        let mut contents = assemble::assemble(evidence, tail);
        contents
            .meta
            .notes
            .push("recovered: a minidump whose watcher stopped before it wrote the report".into());
        let id = contents.meta.id.to_string();
        store(outbox, &mut contents)?;
        std::fs::remove_file(path)?;
        ids.push(id);
    }
    Ok(ids)
}

/// How the outbox delivers: the `[smtp]` settings and the `[report]` policy.
#[derive(Clone, Debug)]
pub struct Delivery<'a> {
    pub config: &'a Config,
    pub outbox: &'a Outbox,
}

/// Mails sent recently, shared by every sender of one outbox (under a lock):
/// the hourly limit and the repeat window are counted here.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct MailingLog {
    /// Times of the mails sent in the last hour.
    sent: Vec<chrono::DateTime<chrono::Utc>>,
    /// The last mail of each crash signature: when, and which report (a
    /// report resent after its sender died is not a repeat of itself).
    last_by_signature: std::collections::BTreeMap<String, (chrono::DateTime<chrono::Utc>, String)>,
}

const MAILING_LOG: &str = "mailing.json";
const LOCK_FILE: &str = ".lock";

/// Holds the outbox's lock while alive.
struct OutboxLock(std::fs::File);

impl OutboxLock {
    fn take(outbox: &Outbox) -> std::io::Result<OutboxLock> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(outbox.root().join(LOCK_FILE))?;
        file.lock()?;
        Ok(OutboxLock(file))
    }
}

impl Drop for OutboxLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl MailingLog {
    /// Reads the log (under the lock). `known` is the log as this run last
    /// wrote it: when the file still holds exactly those bytes, nobody else
    /// wrote since, and it is not parsed again.
    fn load(outbox: &Outbox, known: &mut Option<(Vec<u8>, MailingLog)>) -> MailingLog {
        let bytes = std::fs::read(outbox.root().join(MAILING_LOG)).unwrap_or_default();
        match known {
            Some((written, log)) if *written == bytes => log.clone(),
            _ => serde_json::from_slice(&bytes).unwrap_or_default(),
        }
    }

    fn save(
        &self,
        outbox: &Outbox,
        known: &mut Option<(Vec<u8>, MailingLog)>,
    ) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        // A counter, not a report: losing it to a power cut costs at most
        // a few extra mails, so it is not synced. Rewritten in place, under
        // the outbox lock that every reader holds too: a new file (inode)
        // per mail is what made this slow, and a log torn by a crash reads
        // as empty.
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(outbox.root().join(MAILING_LOG))?;
        file.write_all(&bytes)?;
        file.set_len(bytes.len() as u64)?;
        *known = Some((bytes, self.clone()));
        Ok(())
    }

    /// Drops what no longer counts, so the log does not grow with every
    /// crash ever mailed: mails older than an hour, and the last mail of a
    /// signature older than its repeat window and a week (a digest says
    /// since when its repeats came, even when sent days later).
    fn forget_old(&mut self, now: chrono::DateTime<chrono::Utc>, repeat_window: chrono::TimeDelta) {
        let hour_ago = now - chrono::TimeDelta::hours(1);
        self.sent.retain(|t| *t > hour_ago);
        let kept_for = repeat_window.max(chrono::TimeDelta::days(7));
        self.last_by_signature
            .retain(|_, (mailed, _)| *mailed + kept_for > now);
    }
}

/// What the sends of one run share, so that each report costs only its own
/// work: the SMTP session, the held reports listed once, the mailing log
/// as this run last wrote it, and the folders to sync.
struct Batch {
    session: mail::Session,
    /// The held reports as listed at the first need, kept up to date with
    /// this run's own holds and claims. A report another sender holds in
    /// the meantime is seen by the next run.
    held: Option<Vec<(String, crate::outbox::DeliveryRecord)>>,
    mailing: Option<(Vec<u8>, MailingLog)>,
    syncs: crate::outbox::DeferredSync,
    /// Why the server could not be reached, once opening a connection
    /// failed: the rest of the run is not tried, rather than each report
    /// waiting out the same timeout.
    unreachable: Option<String>,
}

/// Reports moved to `sent/` whose folder is not yet synced: at most this
/// many resends (each with its Message-ID) after a power cut.
const SENT_UNSYNCED_AT_MOST: usize = 64;

impl Batch {
    fn new(smtp: &crate::config::SmtpConfig) -> Batch {
        Batch {
            session: mail::Session::new(smtp),
            held: None,
            mailing: None,
            syncs: crate::outbox::DeferredSync::default(),
            unreachable: None,
        }
    }

    /// Notes a failed delivery: one that failed while opening the
    /// connection makes the server unreachable for the rest of the run.
    fn failed(&mut self, error: &mail::DeliveryError) {
        if error.while_opening {
            self.unreachable = Some(error.message.clone());
        }
    }

    fn held(
        &mut self,
        outbox: &Outbox,
    ) -> std::io::Result<&mut Vec<(String, crate::outbox::DeliveryRecord)>> {
        if self.held.is_none() {
            self.held = Some(outbox.held()?);
        }
        Ok(self.held.as_mut().expect("listed above"))
    }

    /// `id` was claimed by this run: no longer held.
    fn claimed(&mut self, id: &str) {
        if let Some(held) = &mut self.held {
            held.retain(|(other, _)| other != id);
        }
    }

    /// `id` is held again, with its record as now written.
    fn now_held(&mut self, outbox: &Outbox, id: &str) -> std::io::Result<()> {
        let record = outbox.record(crate::outbox::PENDING, id);
        let held = self.held(outbox)?;
        held.retain(|(other, _)| other != id);
        held.push((id.to_string(), record));
        Ok(())
    }
}

/// What happened to one report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered.
    Sent,
    /// Delivered in a digest: one email for a group of held repeats of one
    /// crash, carrying `mailed`, the newest report of the group (this one
    /// or another), and counting `repeats` others with it.
    SentInDigest { mailed: String, repeats: usize },
    /// Still pending after an attempt; the reason.
    Kept(String),
    /// Still pending, not tried: the server could not be reached for an
    /// earlier report of the same run; the reason.
    NotTried(String),
    /// Not tried: it waits for a digest or for the hourly limit; the reason.
    Held(String),
    /// Moved to `failed/`; the reason.
    Failed(String),
}

fn to_chrono(duration: std::time::Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(duration).unwrap_or(chrono::TimeDelta::MAX)
}

/// Reads a report zip's metadata and summary, and nothing else: the rest
/// travels as the stored zip.
fn read_report(zip: &[u8]) -> Result<(ReportMeta, String), String> {
    let entries =
        bundle::read_zip_entries_where(zip, |name| name == REPORT_JSON || name == SUMMARY_TXT)
            .map_err(|e| format!("the report zip is unreadable: {e}"))?;
    read_opened_report(&entries)
}

/// Metadata and summary out of a zip's entries.
fn read_opened_report(
    entries: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Result<(ReportMeta, String), String> {
    let meta: ReportMeta = entries
        .get(REPORT_JSON)
        .ok_or_else(|| "report.json is missing".to_string())
        .and_then(|b| {
            serde_json::from_slice(b).map_err(|e| format!("report.json is invalid: {e}"))
        })?;
    let summary = entries
        .get(SUMMARY_TXT)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_else(|| meta.summary(&[]));
    Ok((meta, summary))
}

impl Delivery<'_> {
    fn policy(&self) -> &crate::config::DeliveryPolicy {
        &self.config.report.policy
    }

    /// Applies `[report] MaxReports` and `MaxMegabytes` to `pending/`.
    pub fn enforce_limits(&self) -> std::io::Result<Vec<String>> {
        let policy = self.policy();
        self.outbox.enforce_limits(
            policy.max_reports as usize,
            policy.max_megabytes.saturating_mul(1024 * 1024),
        )
    }

    /// Sends a report that could not be stored at all (the outbox's disk is
    /// full) straight from memory: one attempt, with no record and no
    /// crash-loop bookkeeping, which live on that same disk. Better than
    /// losing it.
    pub fn send_unstored(&self, contents: &ReportContents) -> Result<mail::Delivered, String> {
        let report = mail::ReportParts {
            meta: contents.meta.clone(),
            summary: contents.summary(),
            notes: Vec::new(),
            zip: contents.to_zip().map_err(|e| e.to_string())?,
        };
        let mut session = mail::Session::new(&self.config.smtp);
        self.deliver(&mut session, &report, false)
            .map_err(|e| e.message)
    }

    /// Sends one pending report, or holds it (a repeat inside its window,
    /// the hourly limit). `None` when another sender claimed it first.
    pub fn send_one(&self, id: &str) -> std::io::Result<Option<Outcome>> {
        let mut batch = Batch::new(&self.config.smtp);
        let outcome = self.send_one_in(&mut batch, id);
        batch.syncs.sync()?;
        outcome
    }

    /// [`Delivery::send_one`] as part of `batch`, whose session and state
    /// later reports reuse.
    fn send_one_in(&self, batch: &mut Batch, id: &str) -> std::io::Result<Option<Outcome>> {
        let Some(claim) = self.outbox.claim(id)? else {
            return Ok(None);
        };
        batch.claimed(id);
        let zip = std::fs::read(claim.path())?;
        let opened = bundle::read_zip_entries_where(&zip, |name| {
            [crate::outgoing::MESSAGE_JSON, REPORT_JSON, SUMMARY_TXT].contains(&name)
        });
        if let Ok(entries) = &opened {
            if entries.contains_key(crate::outgoing::MESSAGE_JSON) {
                let entries = bundle::read_zip_entries(&zip).unwrap_or_default();
                return self.send_email(batch, claim, &entries).map(Some);
            }
        }
        let report = opened
            .map_err(|e| format!("the report zip is unreadable: {e}"))
            .and_then(|entries| read_opened_report(&entries));
        let (meta, summary) = match report {
            Ok(report) => report,
            Err(why) => {
                claim.finish(crate::outbox::FAILED, |r| r.last_error = Some(why.clone()))?;
                return Ok(Some(Outcome::Failed(why)));
            }
        };
        let forced = claim.record().forced;
        let now = chrono::Utc::now();
        let hour = chrono::TimeDelta::hours(1);

        // Decide under the lock, and reserve what this mail uses (a slot of
        // the hour, the signature's window) before sending, so that senders
        // running at the same time — the watchers of a crash loop — count
        // each other's mails.
        let previous_for_signature;
        let repeats: Vec<crate::outbox::Claim>;
        {
            let _lock = OutboxLock::take(self.outbox)?;
            let mut log = MailingLog::load(self.outbox, &mut batch.mailing);
            log.forget_old(now, to_chrono(self.policy().repeat_window));
            let last_mail = log
                .last_by_signature
                .get(&meta.signature)
                .filter(|(_, mailed)| mailed != id);
            if let Some(last) = last_mail.map(|(time, _)| *time).filter(|_| !forced) {
                let window_end = last + to_chrono(self.policy().repeat_window);
                if window_end > now {
                    let reason = format!(
                        "a repeat of a crash mailed at {}; held for the digest at {}",
                        last.format("%H:%M:%S"),
                        window_end.format("%H:%M:%S")
                    );
                    claim.finish(crate::outbox::PENDING, |r| {
                        r.held = Some(reason.clone());
                        r.next_attempt = Some(window_end.to_rfc3339());
                    })?;
                    batch.now_held(self.outbox, id)?;
                    return Ok(Some(Outcome::Held(reason)));
                }
            }
            if !forced && log.sent.len() as u32 >= self.policy().mails_per_hour {
                let free_at = log.sent.iter().min().copied().unwrap_or(now) + hour;
                let reason = format!(
                    "the limit of {} mails an hour is reached; next mail at {}",
                    self.policy().mails_per_hour,
                    free_at.format("%H:%M:%S")
                );
                claim.finish(crate::outbox::PENDING, |r| {
                    r.held = Some(reason.clone());
                    r.next_attempt = Some(free_at.to_rfc3339());
                })?;
                batch.now_held(self.outbox, id)?;
                return Ok(Some(Outcome::Held(reason)));
            }
            log.sent.push(now);
            previous_for_signature = log
                .last_by_signature
                .insert(meta.signature.clone(), (now, id.to_string()));
            log.save(self.outbox, &mut batch.mailing)?;
            // Earlier repeats of this signature ride along as a digest.
            repeats = self.claim_repeats(batch, &meta.signature, id)?;
        }

        // The digest carries the newest report of the group; the others
        // stay in the outbox, noted as carried by it.
        let mut members = vec![(claim, meta, summary, zip)];
        for repeat in repeats {
            match std::fs::read(repeat.path())
                .map_err(|e| e.to_string())
                .and_then(|z| read_report(&z).map(|r| (r, z)))
            {
                Ok(((meta, summary), zip)) => members.push((repeat, meta, summary, zip)),
                Err(_) => {
                    let other = repeat.id().to_string();
                    repeat.finish(crate::outbox::PENDING, |_| {})?;
                    batch.now_held(self.outbox, &other)?;
                }
            }
        }
        let newest = members
            .iter()
            .enumerate()
            .max_by_key(|(_, member)| member.1.time)
            .map(|(index, _)| index)
            .unwrap_or(0);
        let (claim, mut meta, summary, zip) = members.swap_remove(newest);
        let others = members;
        let first_seen = others
            .iter()
            .map(|m| m.1.time)
            .fold(meta.time, |a, b| a.min(b));
        let occurrences: u32 =
            meta.occurrences.max(1) + others.iter().map(|m| m.1.occurrences.max(1)).sum::<u32>();

        let mut notes = Vec::new();
        if !others.is_empty() {
            // Held repeats follow a mail of the same crash: say so, or the
            // count reads as one short of every occurrence.
            let since = match &previous_for_signature {
                Some((mailed, _)) => format!(
                    " more times since the report mailed at {}:",
                    mailed.format("%Y-%m-%d %H:%M:%S UTC")
                ),
                None => " times".to_string(),
            };
            notes.push(format!(
                "This crash occurred {occurrences}{since} between {} and {}; this email carries the latest report, and the others stay in the outbox.",
                first_seen.format("%Y-%m-%d %H:%M:%S UTC"),
                meta.time.format("%Y-%m-%d %H:%M:%S UTC")
            ));
            meta.occurrences = occurrences;
        }
        let dropped: u32 = claim.record().dropped_repeats
            + others
                .iter()
                .map(|m| m.0.record().dropped_repeats)
                .sum::<u32>();
        if dropped > 0 {
            notes.push(format!(
                "{dropped} older repeat(s) of this crash were dropped from the outbox to keep it within its limits ([report] MaxReports, MaxMegabytes)."
            ));
        }
        let waiting = self.held_back_count(batch, now)?;
        if waiting > 0 {
            notes.push(format!(
                "{waiting} more report(s) wait in the outbox because of the hourly mail limit."
            ));
        }

        let parts = mail::ReportParts {
            meta: meta.clone(),
            summary,
            notes,
            zip,
        };
        let mut result = self.deliver(&mut batch.session, &parts, false);
        if result
            .as_ref()
            .is_err_and(|e| e.kind == mail::DeliveryErrorKind::TooLarge)
        {
            // 552: one more try, minidump left out and logs halved.
            result = self.deliver(&mut batch.session, &parts, true);
        }
        match result {
            Ok(_) => {
                let carrier = claim.id().to_string();
                let repeats = others.len();
                for (other, ..) in others {
                    other.finish(crate::outbox::SENT, |r| {
                        r.coalesced_into = Some(carrier.clone());
                        r.held = None;
                        r.next_attempt = None;
                    })?;
                }
                claim.sent(&mut batch.syncs)?;
                batch.syncs.sync_beyond(SENT_UNSYNCED_AT_MOST)?;
                Ok(Some(if repeats == 0 {
                    Outcome::Sent
                } else {
                    Outcome::SentInDigest {
                        mailed: carrier,
                        repeats,
                    }
                }))
            }
            Err(error) => {
                batch.failed(&error);
                {
                    // Give back what was reserved for this mail.
                    let _lock = OutboxLock::take(self.outbox)?;
                    let mut log = MailingLog::load(self.outbox, &mut batch.mailing);
                    if let Some(position) = log.sent.iter().position(|t| *t == now) {
                        log.sent.remove(position);
                    }
                    if log
                        .last_by_signature
                        .get(&meta.signature)
                        .is_some_and(|(time, _)| *time == now)
                    {
                        match previous_for_signature {
                            Some(previous) => log
                                .last_by_signature
                                .insert(meta.signature.clone(), previous),
                            None => log.last_by_signature.remove(&meta.signature),
                        };
                    }
                    log.save(self.outbox, &mut batch.mailing)?;
                }
                for (other, ..) in others {
                    let id = other.id().to_string();
                    other.finish(crate::outbox::PENDING, |_| {})?;
                    batch.now_held(self.outbox, &id)?;
                }
                self.record_failure(claim, &error, chrono::Utc::now())
                    .map(Some)
            }
        }
    }

    /// An application email: no digests and no hourly limit (those are
    /// for crash loops); the same retries and the same record.
    fn send_email(
        &self,
        batch: &mut Batch,
        claim: crate::outbox::Claim,
        entries: &std::collections::BTreeMap<String, Vec<u8>>,
    ) -> std::io::Result<Outcome> {
        let prepared = crate::outgoing::unpack(entries).and_then(|email| {
            let message = crate::outgoing::build_message(&self.config.smtp, &email, claim.id())?;
            Ok((email, message.formatted()))
        });
        let (email, message) = match prepared {
            Ok(prepared) => prepared,
            Err(why) => {
                claim.finish(crate::outbox::FAILED, |r| r.last_error = Some(why.clone()))?;
                return Ok(Outcome::Failed(why));
            }
        };
        let smtp = self.config.smtp.clone();
        let envelope = mail::Envelope::new(&smtp.from, email.to.iter().chain(&email.cc));
        let build: mail::MessageBuilder = Box::new(move |limit| match limit {
            Some(limit) if message.len() as u64 > limit => Err(format!(
                "the message is {} bytes, more than the limit of {limit} bytes",
                message.len()
            )),
            _ => Ok(message.clone()),
        });
        match batch
            .session
            .deliver(envelope, build, mail::send_deadline(&smtp))
        {
            Ok(_) => {
                claim.sent(&mut batch.syncs)?;
                batch.syncs.sync_beyond(SENT_UNSYNCED_AT_MOST)?;
                Ok(Outcome::Sent)
            }
            Err(error) => {
                batch.failed(&error);
                self.record_failure(claim, &error, chrono::Utc::now())
            }
        }
    }

    fn deliver(
        &self,
        session: &mut mail::Session,
        report: &mail::ReportParts,
        smaller: bool,
    ) -> Result<mail::Delivered, mail::DeliveryError> {
        let smtp = self.config.smtp.clone();
        let report = report.clone();
        let envelope = mail::Envelope::new(&smtp.from, smtp.to.iter().chain(&smtp.cc));
        let builder_smtp = smtp.clone();
        let build: mail::MessageBuilder = Box::new(move |limit| {
            mail::fit_report(&builder_smtp, &report, limit, smaller).map(|fitted| fitted.message)
        });
        session.deliver(envelope, build, mail::send_deadline(&smtp))
    }

    /// Records a failed attempt: back to `pending/` with its next try, or to
    /// `failed/` when refused for good or tried for too long.
    fn record_failure(
        &self,
        claim: crate::outbox::Claim,
        error: &mail::DeliveryError,
        now: chrono::DateTime<chrono::Utc>,
    ) -> std::io::Result<Outcome> {
        use mail::DeliveryErrorKind as K;
        let record = claim.record();
        let first = record.first_attempt_time().unwrap_or(now);
        let gave_up = now - first >= to_chrono(self.policy().give_up_after);
        let note_attempt = |r: &mut crate::outbox::DeliveryRecord| {
            r.attempts += 1;
            r.first_attempt.get_or_insert_with(|| now.to_rfc3339());
            r.last_attempt = Some(now.to_rfc3339());
            r.last_error = Some(error.message.clone());
            r.held = None;
        };
        if error.kind == K::Permanent || error.kind == K::TooLarge {
            claim.finish(crate::outbox::FAILED, |r| {
                note_attempt(r);
                r.next_attempt = None;
            })?;
            return Ok(Outcome::Failed(error.message.clone()));
        }
        if gave_up {
            let why = format!(
                "gave up after {:?} of attempts; last error: {}",
                self.policy().give_up_after,
                error.message
            );
            claim.finish(crate::outbox::FAILED, |r| {
                note_attempt(r);
                r.last_error = Some(why.clone());
                r.next_attempt = None;
            })?;
            return Ok(Outcome::Failed(why));
        }
        let fingerprint = self.config.fingerprint.clone();
        let policy = self.policy().clone();
        claim.finish(crate::outbox::PENDING, |r| {
            note_attempt(r);
            if error.kind == K::Configuration {
                // Not in a tight loop: the long interval, or at once after
                // the configuration changes.
                r.config_problem = Some(fingerprint);
                r.next_attempt = Some((now + to_chrono(policy.retry_max)).to_rfc3339());
            } else {
                r.config_problem = None;
                let delay = crate::outbox::retry_delay(
                    r.attempts,
                    to_chrono(policy.retry_first),
                    to_chrono(policy.retry_max),
                );
                r.next_attempt = Some((now + delay).to_rfc3339());
            }
        })?;
        let marker = if error.kind == K::Configuration {
            "configuration problem: "
        } else {
            ""
        };
        Ok(Outcome::Kept(format!("{marker}{}", error.message)))
    }

    /// Claims the other pending reports of `signature` that wait as repeats.
    fn claim_repeats(
        &self,
        batch: &mut Batch,
        signature: &str,
        except: &str,
    ) -> std::io::Result<Vec<crate::outbox::Claim>> {
        let mut claims = Vec::new();
        let held: Vec<String> = batch
            .held(self.outbox)?
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        for other in held {
            if other == except {
                continue;
            }
            let path = self
                .outbox
                .dir(crate::outbox::PENDING)
                .join(format!("{other}.zip"));
            let same = std::fs::read(&path)
                .ok()
                .and_then(|zip| bundle::read_report_meta(&zip).ok())
                .is_some_and(|meta| meta.signature == signature);
            if same {
                if let Some(claim) = self.outbox.claim(&other)? {
                    batch.claimed(&other);
                    claims.push(claim);
                }
            }
        }
        Ok(claims)
    }

    /// Reports held back by the hourly limit right now.
    fn held_back_count(
        &self,
        batch: &mut Batch,
        now: chrono::DateTime<chrono::Utc>,
    ) -> std::io::Result<usize> {
        Ok(batch
            .held(self.outbox)?
            .iter()
            .filter(|(_, record)| {
                record
                    .held
                    .as_deref()
                    .is_some_and(|h| h.contains("mails an hour"))
                    && !record.is_due(now, &self.config.fingerprint)
            })
            .count())
    }

    /// Sends the pending reports once each, oldest first, over one SMTP
    /// session; `progress` hears (done, total) after each. Returns each id
    /// with its outcome.
    pub fn flush(
        &self,
        due: Due,
        progress: &mut dyn FnMut(usize, usize),
    ) -> std::io::Result<Vec<(String, Outcome)>> {
        self.outbox
            .release_stale_claims(mail::send_deadline(&self.config.smtp) * 2)?;
        let now = chrono::Utc::now();
        let ids: Vec<String> = self
            .outbox
            .pending()?
            .into_iter()
            .filter(|id| {
                due == Due::All
                    || self
                        .outbox
                        .record(crate::outbox::PENDING, id)
                        .is_due(now, &self.config.fingerprint)
            })
            .collect();
        let mut batch = Batch::new(&self.config.smtp);
        let mut outcomes = Vec::new();
        for (done, id) in ids.iter().enumerate() {
            let outcome = match &batch.unreachable {
                Some(why) => Ok(Some(Outcome::NotTried(format!(
                    "not tried, the server could not be reached for an earlier report: {why}"
                )))),
                None => self.send_one_in(&mut batch, id),
            };
            match outcome {
                Ok(Some(outcome)) => outcomes.push((id.clone(), outcome)),
                Ok(None) => {}
                Err(e) => {
                    batch.syncs.sync()?;
                    return Err(e);
                }
            }
            progress(done + 1, ids.len());
        }
        batch.syncs.sync()?;
        Ok(outcomes)
    }
}

/// Which pending reports a flush tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Only those whose retry time has come.
    Only,
    /// All of them, now (an operator asked).
    All,
}
