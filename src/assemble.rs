//! Turning the evidence of one crash into a report.
//!
//! The watcher calls this with what the application sent; `crashmail`
//! commands call it for records the application left in `incoming/` when it
//! had no watcher.

use crate::bundle::ReportContents;
use crate::collect;
use crate::dump;
use crate::report::{self, Frame, PanicFacts, ReportKind, ReportMeta, SignalFacts};
use crate::symbolize;
use chrono::{DateTime, Utc};
use crashmail_handler::protocol::{PanicRecord, SignalRecord};
use std::path::PathBuf;

/// Everything known about one crash.
#[derive(Clone, Debug, Default)]
pub struct CrashEvidence {
    pub app_name: String,
    pub app_version: String,
    pub pid: u32,
    pub started_at_ms: Option<u64>,
    pub exe: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
    pub log_files: Vec<PathBuf>,
    pub panic: Option<PanicRecord>,
    /// The minidump, or why there is none.
    pub minidump: Option<Result<Vec<u8>, String>>,
    /// The signal handler's own record, when it had no watcher.
    pub signal_record: Option<SignalRecord>,
    /// True when the application vanished without a crash or a goodbye.
    pub abnormal_exit: bool,
    pub time: Option<DateTime<Utc>>,
    /// What must not appear in the report.
    pub secrets: crate::privacy::Secrets,
    /// The process as it was at the crash.
    pub process: Option<collect::ProcessFacts>,
    /// An orderly exit with this failing status (`[report] ReportExitCodes`).
    pub exit_status: Option<i32>,
    /// The crashing thread's registers, from the application's own handler.
    pub registers: Option<dump::Registers>,
    /// For a process that vanished: the out-of-memory killer's trace (which
    /// cgroup hit which limit), when it is what ended the process.
    pub out_of_memory: Option<String>,
    /// For a process that vanished: how it ended, when the watcher could
    /// read it before the application's parent collected it.
    pub ended: Option<Ending>,
}

/// How a process that gave no goodbye ended, as the kernel tells it
/// (`/proc/<pid>/stat`'s exit code, in `waitpid`'s encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    Killed(i32),
}

/// "was killed by SIGKILL", "exited with status 4".
impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Exited(status) => write!(f, "exited with status {status}"),
            Ending::Killed(signal) => write!(
                f,
                "was killed by {}",
                crashmail_handler::protocol::signal_name(*signal)
            ),
        }
    }
}

impl Ending {
    /// An end that is not a crash: a death by a signal that asks a process
    /// to stop (`kill`, a service manager stopping it, Ctrl-C, its terminal
    /// closing, a reader gone from its pipe), or a successful `_exit(0)` (a
    /// fast exit that skips the exit handlers on purpose).
    pub fn is_not_a_crash(&self) -> bool {
        matches!(
            self,
            Ending::Exited(0)
                | Ending::Killed(libc::SIGTERM | libc::SIGINT | libc::SIGHUP | libc::SIGPIPE)
        )
    }

    /// Decodes a `waitpid` status.
    pub fn from_wait_status(status: i32) -> Ending {
        match status & 0x7f {
            0 => Ending::Exited((status >> 8) & 0xff),
            signal => Ending::Killed(signal),
        }
    }
}

/// Builds the report: reason, frames, signature, system facts, log tails.
pub fn assemble(evidence: CrashEvidence, log_tail_bytes: u64) -> ReportContents {
    let time = evidence.time.unwrap_or_else(Utc::now);
    let mut notes = Vec::new();

    let mut minidump = None;
    let mut analysis = None;
    match evidence.minidump {
        Some(Ok(bytes)) => {
            match dump::analyse_crash(&bytes, evidence.registers) {
                Ok(found) => {
                    notes.extend(found.incomplete.clone());
                    analysis = Some(found);
                }
                Err(why) => notes.push(format!("minidump: {why}")),
            }
            minidump = Some(bytes);
        }
        Some(Err(why)) => notes.push(format!("no minidump: {why}")),
        None if evidence.panic.is_none() => {
            notes.push("no minidump: the watcher did not receive one".into())
        }
        None => {}
    }

    let backtrace = evidence
        .panic
        .as_ref()
        .map(|p| report::backtrace_from_the_panic(&p.backtrace))
        .filter(|b| !b.trim().is_empty());
    let (kind, reason, reason_class, frames, panic_facts, signal_facts) = if let Some(panic) =
        &evidence.panic
    {
        // Named by the module's symbol table like native frames, so that a
        // signature does not depend on how much debug info the build kept;
        // std's own text when the modules cannot be read.
        let mut frames = symbolize::native_frames(&panic.native_frames);
        if frames.iter().all(|f| report::is_unnamed(&f.function)) {
            frames = report::parse_std_backtrace(&panic.backtrace);
        }
        // Newlines and other control characters folded: a reason is one line.
        let reason = crate::outgoing::header_safe(&panic.message);
        (
            ReportKind::Panic,
            reason.clone(),
            report::reason_class(&reason),
            frames,
            Some(PanicFacts {
                message: panic.message.clone(),
                location: panic.location.clone(),
                thread: panic.thread.clone(),
            }),
            None,
        )
    } else if let Some(mut signal) = analysis
        .as_ref()
        .and_then(|a| a.signal.clone())
        .or_else(|| evidence.signal_record.as_ref().map(signal_from_record))
    {
        // The handler's own record knows who sent a signal and where a
        // fault was; the dump's exception record does not keep them.
        if let Some(record) = evidence
            .signal_record
            .as_ref()
            .filter(|r| r.signal == signal.number)
        {
            if record.code <= 0 {
                signal.code_name = Some(crashmail_handler::protocol::signal_origin(
                    record.code,
                    record.sender_pid,
                    record.pid,
                ));
                signal.address = None;
            } else {
                signal.address = Some(record.address);
            }
        }
        let stack_overflow = dump::is_stack_overflow(
            signal.number,
            signal.address.unwrap_or(0),
            analysis.as_ref().and_then(|a| a.stack_pointer),
        );
        let frames = analysis
            .as_ref()
            .map(|a| a.frames.clone())
            .unwrap_or_default();
        let class = if stack_overflow {
            "stack overflow".to_string()
        } else {
            signal.name.clone()
        };
        (
            ReportKind::Signal,
            dump::crash_reason(&signal, stack_overflow),
            class,
            frames,
            None,
            Some(signal),
        )
    } else if let Some(status) = evidence.exit_status {
        (
            ReportKind::AbnormalExit,
            format!("the application exited with status {status}"),
            format!("exit status {status}"),
            Vec::new(),
            None,
            None,
        )
    } else if let Some(trace) = &evidence.out_of_memory {
        (
            ReportKind::AbnormalExit,
            format!("the application was killed (SIGKILL) by the out-of-memory killer: {trace}"),
            "killed by the out-of-memory killer".to_string(),
            Vec::new(),
            None,
            None,
        )
    } else {
        let (reason, class) = match evidence.ended {
            Some(Ending::Killed(signal)) => {
                let name = crashmail_handler::protocol::signal_name(signal);
                (
                    format!(
                        "the application was killed by {name} without a clean shutdown \
                         (no handler ran: `kill`, a supervisor, or a signal the application does not handle)"
                    ),
                    format!("killed by {name}"),
                )
            }
            Some(Ending::Exited(status)) => (
                format!(
                    "the application exited with status {status} without a clean shutdown \
                     (its exit handlers did not run: `_exit`, or a call that ends the process at once)"
                ),
                format!("exit status {status} without a clean shutdown"),
            ),
            None => (
                "the application ended without a clean shutdown (killed, or exited without running \
                 exit handlers; its exit status was collected before the watcher could read it)"
                    .to_string(),
                "ended without a clean shutdown".to_string(),
            ),
        };
        (
            ReportKind::AbnormalExit,
            reason,
            class,
            Vec::new(),
            None,
            None,
        )
    };

    let application_frames = report::application_frames(&frames);
    // Unnamed frames (`module + 0x…`) say nothing stable about the crash;
    // they count only when no frame has a name.
    let named: Vec<&str> = application_frames
        .iter()
        .map(|f| f.function.as_str())
        .filter(|f| !report::is_unnamed(f))
        .collect();
    let signature_functions: Vec<&str> = if named.is_empty() {
        application_frames
            .iter()
            .take(1)
            .map(|f| f.function.as_str())
            .collect()
    } else {
        named
    };
    let signature = report::signature(kind, &reason_class, &signature_functions);
    let shown_frames: Vec<String> = if kind == ReportKind::Panic {
        report::shown_application_frames(&application_frames)
            .iter()
            .take(dump::TOP_FRAMES)
            .map(|f| f.display())
            .collect()
    } else {
        // A native crash keeps the frames above the application's (the
        // crash may be inside libc), but not the runtime's below its last.
        let last_application = frames
            .iter()
            .rposition(|f| {
                !report::is_unnamed(&f.function)
                    && application_frames.iter().any(|a| std::ptr::eq(*a, f))
            })
            .map(|index| index + 1)
            .unwrap_or(frames.len());
        frames
            .iter()
            .take(last_application.min(dump::TOP_FRAMES))
            .map(Frame::display)
            .collect()
    };

    let mut system = collect::system_info();
    system.process_uptime_s = evidence
        .started_at_ms
        .map(|start| (time.timestamp_millis() as f64 - start as f64).max(0.0) / 1000.0);
    system.executable = evidence.exe.as_ref().map(|p| p.display().to_string());
    system.working_directory = evidence.cwd.as_ref().map(|p| p.display().to_string());
    system.process = evidence.process.clone();

    let started = evidence
        .started_at_ms
        .map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
    let ends = evidence
        .panic
        .as_ref()
        .map(|panic| panic.log_sizes.clone())
        .unwrap_or_default();
    let (logs, log_notes) = collect::log_tails_ending_at(
        &collect::log_paths(&evidence.log_files, started),
        log_tail_bytes,
        &ends,
    );
    notes.extend(log_notes);
    if evidence.time.is_some() {
        // Bundled after the fact: a log whose length at the crash is not
        // known may hold lines written since.
        let crash = std::time::SystemTime::from(time);
        for tail in logs
            .iter()
            .filter(|t| !ends.iter().any(|(p, _)| *p == t.source))
        {
            let written = std::fs::metadata(&tail.source).and_then(|m| m.modified());
            if written.is_ok_and(|w| w > crash + std::time::Duration::from_secs(1)) {
                notes.push(format!(
                    "{}: {} was written to after the crash; its last lines may be later than the crash",
                    tail.entry,
                    tail.source.display()
                ));
            }
        }
    }

    let meta = ReportMeta {
        schema: report::SCHEMA_VERSION,
        id: uuid::Uuid::new_v4(),
        kind,
        app_name: evidence.app_name,
        app_version: evidence.app_version,
        time,
        reason,
        signature,
        host: system.host.clone().unwrap_or_else(|| "unknown host".into()),
        os: system.os_line(),
        pid: evidence.pid,
        occurrences: 1,
        panic: panic_facts,
        signal: signal_facts,
        frames: shown_frames,
        notes,
    };
    let mut contents = ReportContents {
        meta,
        backtrace,
        minidump,
        system,
        logs,
        breadcrumbs: evidence.panic.map(|p| p.breadcrumbs).unwrap_or_default(),
    };
    // Secrets the report's own text names (`API_TOKEN=…` in a log line,
    // `user:pass@` in a URL) are masked too, whether or not the
    // application's environment could be read.
    let mut written = Vec::new();
    for log in &contents.logs {
        written.push(String::from_utf8_lossy(&log.bytes).into_owned());
    }
    written.extend(contents.breadcrumbs.iter().cloned());
    written.extend(contents.backtrace.iter().cloned());
    written.push(contents.meta.reason.clone());
    let secrets = evidence
        .secrets
        .with_secrets_written_in(written.iter().map(String::as_str));
    contents.scrub(&secrets);
    contents
}

fn signal_from_record(record: &SignalRecord) -> SignalFacts {
    SignalFacts {
        number: record.signal,
        name: crashmail_handler::protocol::signal_name(record.signal),
        code: record.code as i64,
        code_name: (record.code <= 0).then(|| {
            crashmail_handler::protocol::signal_origin(record.code, record.sender_pid, record.pid)
        }),
        address: Some(record.address),
        thread_id: None,
        thread_name: None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reasons_are_one_line() {
        assert_eq!(
            crate::outgoing::header_safe("boom\r\nBcc: x@example.net\r\n\r\nfake"),
            "boom Bcc: x@example.net fake"
        );
    }
}
