//! Moving reports out of the outbox: packaging what the application left in
//! `incoming/`, and sending what waits in `pending/`.

use crate::assemble::{self, CrashEvidence};
use crate::bundle::{self, REPORT_JSON, SUMMARY_TXT};
use crate::config::Config;
use crate::mail;
use crate::outbox::Outbox;
use crate::report::ReportMeta;
use crashmail_handler::protocol::{PanicRecord, SignalRecord};

/// What happened to one report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Still pending; the reason.
    Kept(String),
    /// Moved to `failed/`; the reason.
    Failed(String),
}

/// Bundles every record in `incoming/` into a pending report. Records that
/// cannot be read are moved aside, never deleted.
pub fn package_incoming(outbox: &Outbox, config: Option<&Config>) -> std::io::Result<Vec<String>> {
    let mut ids = recover_unfinished(outbox, config)?;
    let tail = config
        .map(|c| c.report.log_tail_bytes)
        .unwrap_or(crate::config::DEFAULT_LOG_TAIL_BYTES);
    for path in outbox.incoming()? {
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
        let contents = assemble::assemble(evidence, tail);
        let zip = contents.to_zip().map_err(std::io::Error::other)?;
        let id = contents.meta.id.to_string();
        outbox.add(&id, &zip)?;
        std::fs::remove_file(&path)?;
        ids.push(id);
    }
    Ok(ids)
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
        };
        let mut contents = assemble::assemble(evidence, tail);
        contents
            .meta
            .notes
            .push("recovered: the watcher stopped before it finished this report".into());
        let id = contents.meta.id.to_string();
        outbox.add(&id, &contents.to_zip().map_err(std::io::Error::other)?)?;
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
            ..CrashEvidence::default()
        };
        let mut contents = assemble::assemble(evidence, tail);
        contents
            .meta
            .notes
            .push("recovered: a minidump whose watcher stopped before it wrote the report".into());
        let id = contents.meta.id.to_string();
        outbox.add(&id, &contents.to_zip().map_err(std::io::Error::other)?)?;
        std::fs::remove_file(path)?;
        ids.push(id);
    }
    Ok(ids)
}

/// Sends one pending report. A report that is already claimed by another
/// sender is skipped (`None`).
pub fn send_one(outbox: &Outbox, config: &Config, id: &str) -> std::io::Result<Option<Outcome>> {
    let Some(claim) = outbox.claim(id)? else {
        return Ok(None);
    };
    let zip = std::fs::read(claim.path())?;
    let prepared = bundle::read_zip_entries(&zip)
        .map_err(|e| format!("the report zip is unreadable: {e}"))
        .and_then(|entries| {
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
        });
    let (meta, summary) = match prepared {
        Ok(prepared) => prepared,
        Err(why) => {
            claim.failed(&why)?;
            return Ok(Some(Outcome::Failed(why)));
        }
    };
    let message = match mail::report_message(&config.smtp, &meta, &summary, zip) {
        Ok(message) => message,
        Err(why) => {
            // A configuration problem (a bad address): keep it for after the fix.
            claim.retry_later(&why)?;
            return Ok(Some(Outcome::Kept(why)));
        }
    };
    match mail::send(&config.smtp, &message) {
        Ok(()) => {
            claim.sent()?;
            Ok(Some(Outcome::Sent))
        }
        Err(e) if e.is_permanent() => {
            claim.failed(&e.message)?;
            Ok(Some(Outcome::Failed(e.message)))
        }
        Err(e) => {
            claim.retry_later(&e.message)?;
            Ok(Some(Outcome::Kept(e.message)))
        }
    }
}

/// Which pending reports a flush tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Only those whose retry delay has passed.
    Only,
    /// All of them, now (an operator asked).
    All,
}

/// Sends pending reports once each; returns each id with its outcome.
pub fn flush(
    outbox: &Outbox,
    config: &Config,
    due: Due,
) -> std::io::Result<Vec<(String, Outcome)>> {
    let mut outcomes = Vec::new();
    let now = chrono::Utc::now();
    for id in outbox.pending()? {
        if due == Due::Only && !outbox.record(crate::outbox::PENDING, &id).is_due(now) {
            continue;
        }
        if let Some(outcome) = send_one(outbox, config, &id)? {
            outcomes.push((id, outcome));
        }
    }
    Ok(outcomes)
}
