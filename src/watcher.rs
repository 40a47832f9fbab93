//! `crashmail watch`: the out-of-process half.
//!
//! It serves one application over its socket ([`crate::link`]): writes the minidump
//! when asked, receives panic records, and when the application dies builds
//! the report, puts it in the outbox and emails it. It exits once the
//! application is gone and its reports are dealt with.

use crate::assemble::{self, CrashEvidence};
use crate::config::{self, Config};
use crate::delivery::{self, Outcome};
use crate::outbox::Outbox;
use crate::process_end::Fate;
use crashmail_handler::protocol::{Hello, MessageKind, PanicRecord, PROTOCOL_VERSION};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// How long to wait for the application's `Hello` before giving up.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the application is looked at before it has connected.
const APP_ALIVE_POLL: Duration = Duration::from_millis(100);
/// How long a panic waits for its dump before it is reported without one.
const PANIC_DUMP_GRACE: Duration = Duration::from_secs(3);

/// What `crashmail watch` is told on its command line.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// A socket path, or `@name` for an abstract socket.
    pub socket: String,
    pub app_pid: Option<u32>,
    pub ini: Option<PathBuf>,
}

enum Event {
    Hello(Box<Hello>),
    Panic(Box<PanicRecord>),
    /// The minidump's bytes, or why there is none.
    Dump(Result<Vec<u8>, String>, Option<crate::dump::Registers>),
    /// With the exit status, when the application knew it.
    Goodbye(Option<i32>),
    Signal(crashmail_handler::protocol::SignalRecord),
    Process(Box<crate::collect::ProcessFacts>),
    /// The application's last connection closed; what became of it.
    AllDisconnected(Fate),
    ServerFailed(String),
}

struct Handler {
    events: Sender<Event>,
    /// The application's pid, once it has said hello.
    app_pid: AtomicU32,
    /// A watch on the application opened while it runs, for reading how it
    /// ended if it dies without a goodbye.
    end: std::sync::OnceLock<crate::process_end::ProcessEnd>,
}

impl Handler {
    /// The application is alive but stopped in its crash path: its memory
    /// and command line can still be read.
    /// `pid` is the one the crash record names, for when the Hello (read
    /// on another connection's thread) has not been seen yet.
    fn snapshot_process(&self, pid: u32) {
        let pid = match self.app_pid.load(Ordering::Relaxed) {
            0 => pid,
            known => known,
        };
        if pid != 0 {
            if let Some(facts) = crate::collect::process_facts(pid) {
                let _ = self.events.send(Event::Process(Box::new(facts)));
            }
        }
    }
}

/// Writes a minidump of the process `context` describes, in memory: a full
/// disk (or a quota) cannot cut it short, and nothing half-written is left
/// behind. The watcher keeps a copy in `run/` afterwards, for recovery only.
#[allow(unsafe_code)]
fn write_minidump(
    context: minidump_writer::crash_context::CrashContext,
) -> Result<Vec<u8>, String> {
    use minidump_writer::minidump_writer::MinidumpWriterConfig;
    // SAFETY: a C string literal and flags; the descriptor returned is owned
    // by the File from here on.
    let fd = unsafe { libc::memfd_create(c"crashmail-minidump".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "no memory file for the dump: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let mut file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut writer = MinidumpWriterConfig::new(context.pid, context.tid);
    writer.set_crash_context(minidump_writer::CrashContextExt { inner: context });
    writer.write(&mut file).map_err(|e| e.to_string())
}

/// The instruction and stack pointers of the crashing thread, from the
/// context its signal handler saw.
fn crash_registers(
    context: &minidump_writer::crash_context::CrashContext,
) -> Option<crate::dump::Registers> {
    #[cfg(target_arch = "x86_64")]
    {
        let registers = &context.context.uc_mcontext.gregs;
        Some(crate::dump::Registers {
            instruction_pointer: registers[libc::REG_RIP as usize] as u64,
            stack_pointer: registers[libc::REG_RSP as usize] as u64,
        })
    }
    #[cfg(target_arch = "aarch64")]
    {
        let registers = &context.context.uc_mcontext;
        Some(crate::dump::Registers {
            instruction_pointer: registers.pc,
            stack_pointer: registers.sp,
        })
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = context;
        None
    }
}

impl crate::link::LinkHandler for Handler {
    fn on_dump_request(
        &self,
        context: Result<minidump_writer::crash_context::CrashContext, String>,
    ) {
        let registers = context.as_ref().ok().and_then(crash_registers);
        let dump = context.and_then(write_minidump);
        let _ = self.events.send(Event::Dump(dump, registers));
    }

    fn on_failure(&self, why: String) {
        let _ = self.events.send(Event::ServerFailed(why));
    }

    fn on_message(&self, kind: u32, buffer: Vec<u8>) {
        let event = match MessageKind::from_u32(kind) {
            Some(MessageKind::Hello) => match serde_json::from_slice::<Hello>(&buffer) {
                Ok(hello) if hello.protocol == PROTOCOL_VERSION => {
                    self.app_pid.store(hello.pid, Ordering::Relaxed);
                    self.end
                        .get_or_init(|| crate::process_end::ProcessEnd::watch(hello.pid));
                    Event::Hello(Box::new(hello))
                }
                Ok(hello) => {
                    log::error!(
                        "the application speaks protocol {}, this watcher {PROTOCOL_VERSION}",
                        hello.protocol
                    );
                    return;
                }
                Err(e) => {
                    log::error!("unreadable Hello: {e}");
                    return;
                }
            },
            Some(MessageKind::Panic) => match serde_json::from_slice::<PanicRecord>(&buffer) {
                Ok(record) => {
                    self.snapshot_process(record.pid);
                    Event::Panic(Box::new(record))
                }
                Err(e) => {
                    log::error!("unreadable panic record: {e}");
                    return;
                }
            },
            Some(MessageKind::Goodbye) => {
                Event::Goodbye(String::from_utf8_lossy(&buffer).trim().parse().ok())
            }
            Some(MessageKind::Signal) => match crashmail_handler::protocol::SignalRecord::parse(
                &String::from_utf8_lossy(&buffer),
            ) {
                Some(record) => {
                    self.snapshot_process(record.pid);
                    Event::Signal(record)
                }
                None => {
                    log::error!("unreadable signal record");
                    return;
                }
            },
            None => {
                log::warn!("unknown message kind {kind}");
                return;
            }
        };
        let _ = self.events.send(event);
    }

    fn on_all_disconnected(&self) {
        let fate = self.end.get().map_or(Fate::Unknown, |end| end.fate());
        let _ = self.events.send(Event::AllDisconnected(fate));
    }
}

/// A crash being put together from its pieces.
#[derive(Default)]
struct PendingCrash {
    panic: Option<PanicRecord>,
    /// An orderly exit with a failing status (reported only when asked).
    exit_status: Option<i32>,
    process: Option<crate::collect::ProcessFacts>,
    signal: Option<crashmail_handler::protocol::SignalRecord>,
    dump: Option<Result<Vec<u8>, String>>,
    /// The out-of-memory killer's trace, for an application that vanished.
    out_of_memory: Option<String>,
    /// How an application that vanished ended, when it could be read.
    ended: Option<crate::assemble::Ending>,
    /// The crashing thread's registers, from the dump request.
    registers: Option<crate::dump::Registers>,
    /// The application's executable being opened for naming frames, started
    /// as soon as a crash is announced, so it is ready when the dump is.
    opening: Option<std::thread::JoinHandle<()>>,
    since: Option<Instant>,
}

impl PendingCrash {
    fn open_executable_ahead(&mut self, hello: Option<&Hello>) {
        let Some(exe) = hello.and_then(|h| h.exe.clone()) else {
            return;
        };
        if self.opening.is_none() {
            self.opening = std::thread::Builder::new()
                .name("crashmail-open".into())
                .spawn(move || crate::symbolize::open_ahead(&exe.to_string_lossy()))
                .ok();
        }
    }

    fn is_empty(&self) -> bool {
        self.panic.is_none() && self.dump.is_none() && self.signal.is_none()
    }
}

/// Suffix of the note a watcher leaves in `run/` while it builds a report.
pub const CRASH_NOTE_SUFFIX: &str = ".crash.json";

/// What a watcher knows about a crash before the report is stored; left in
/// the outbox's `run/` folder so that a report survives a watcher that dies
/// half-way.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CrashNote {
    pub hello: Hello,
    pub panic: Option<PanicRecord>,
    pub dump: Option<PathBuf>,
    pub abnormal_exit: bool,
}

/// The outbox to store reports in: `chosen`, else (when it cannot be made:
/// a file where a folder should be, no room, no permission) the one the
/// application computed, else the user's state folder, else a private
/// folder in the temporary folder. A crash is never dropped for want of a
/// folder; the log says where its report went instead.
fn open_an_outbox(chosen: &Path, applications: &Path) -> Option<Outbox> {
    use std::os::unix::fs::MetadataExt;
    // This process's user: the owner of its own /proc entry.
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    let uid_text = uid
        .map(|u| u.to_string())
        .unwrap_or_else(|| "unknown".into());
    let shared_temp = std::env::temp_dir().join(format!("crashmail-outbox-{uid_text}"));
    let mut candidates = vec![chosen.to_path_buf(), applications.to_path_buf()];
    candidates.extend(crashmail_handler::default_outbox_dir());
    candidates.push(shared_temp.clone());
    let mut tried = Vec::new();
    for candidate in candidates {
        if tried.contains(&candidate) {
            continue;
        }
        // In a folder every user can write to, the outbox must be ours and
        // private (not a link, nor a folder someone else made first).
        let opened = Outbox::open(&candidate).and_then(|outbox| {
            let meta = std::fs::symlink_metadata(&candidate)?;
            let ours = meta.is_dir() && Some(meta.uid()) == uid && meta.mode() & 0o077 == 0;
            if candidate == shared_temp && !ours {
                return Err(std::io::Error::other("not a private folder of this user"));
            }
            Ok(outbox)
        });
        match opened {
            Ok(outbox) => {
                if !tried.is_empty() {
                    log::warn!("reports go to the outbox {} instead", candidate.display());
                }
                return Some(outbox);
            }
            Err(e) => log::error!("the outbox {} cannot be used: {e}", candidate.display()),
        }
        tried.push(candidate);
    }
    None
}

/// A panic that passes on the payload of a thread that panicked:
/// `handle.join().unwrap()` (or `expect`) gives `Any { .. }`, the payload
/// of another panic, as its message.
fn is_a_joined_threads_panic(message: &str) -> bool {
    message.contains("Any { .. }")
}

/// The session with one application.
struct Session {
    options: WatchOptions,
    hello: Option<Hello>,
    config: Option<Config>,
    /// Why there is no `config`: told in each report's delivery record, so
    /// that `crashmail outbox list` says why the report waits.
    config_error: Option<String>,
    outbox: Option<Outbox>,
    goodbye: bool,
    exit_status: Option<i32>,
    crashes_reported: usize,
    notes_written: usize,
    /// The out-of-memory killer's counts when the application said hello.
    oom_kills_at_hello: Option<crate::cgroup::OomKills>,
}

/// Runs the watcher until the application is gone. Returns the number of
/// reports written.
pub fn run(options: WatchOptions) -> anyhow::Result<usize> {
    let socket = options.socket.clone();
    let (events, receiver) = channel();
    let handler = Handler {
        events: events.clone(),
        // Known from the command line before the Hello says it again.
        app_pid: AtomicU32::new(options.app_pid.unwrap_or(0)),
        end: std::sync::OnceLock::new(),
    };
    if let Some(pid) = options.app_pid {
        let _ = handler.end.set(crate::process_end::ProcessEnd::watch(pid));
    }
    let _socket_file =
        crate::link::LinkServer::bind(&socket)?.serve(std::sync::Arc::new(handler))?;

    let mut session = Session {
        options,
        hello: None,
        config: None,
        config_error: None,
        outbox: None,
        goodbye: false,
        exit_status: None,
        crashes_reported: 0,
        notes_written: 0,
        oom_kills_at_hello: None,
    };
    let mut crash = PendingCrash::default();
    // Dumps that come with panics not reported (see below), to be dropped
    // with them rather than taken for a native crash.
    let mut dumps_to_drop = 0usize;
    let mut fate = Fate::Unknown;
    let started = Instant::now();
    loop {
        let timeout = match (&session.hello, crash.since) {
            (_, Some(since)) => PANIC_DUMP_GRACE.saturating_sub(since.elapsed()),
            // Before the Hello, look now and then whether the application
            // is still alive: it may exit before it ever connects.
            (None, None) => APP_ALIVE_POLL.min(HELLO_TIMEOUT.saturating_sub(started.elapsed())),
            (Some(_), None) => Duration::from_secs(3600),
        };
        match receiver.recv_timeout(timeout) {
            Ok(Event::Hello(hello)) => {
                session.greet(*hello);
                // The Hello and a crash travel on two connections, read by
                // two threads: a crash that came first waited for it.
                if crash.dump.is_some() {
                    session.report(std::mem::take(&mut crash), false);
                }
            }
            Ok(Event::Panic(record)) => {
                if is_a_joined_threads_panic(&record.message)
                    && (crash.panic.is_some() || session.crashes_reported > 0)
                {
                    // `handle.join().unwrap()` on a thread whose panic is
                    // reported already: the same incident, not a second.
                    log::info!(
                        "not reported: a panic that passes on another thread's, reported already: {}",
                        record.message
                    );
                    dumps_to_drop += 1;
                } else if crash.panic.is_some() {
                    log::warn!(
                        "a second panic before the first was reported: {}",
                        record.message
                    );
                    dumps_to_drop += 1;
                } else {
                    crash.panic = Some(*record);
                    crash.since = Some(Instant::now());
                    crash.open_executable_ahead(session.hello.as_ref());
                }
            }
            // A panic's dump follows its record on the same connection, and
            // a native crash's dump its signal record: a dump with neither
            // pending is the dump of a panic that was not reported.
            Ok(Event::Dump(_, _))
                if dumps_to_drop > 0 && crash.panic.is_none() && crash.signal.is_none() =>
            {
                dumps_to_drop -= 1;
            }
            Ok(Event::Dump(dump, registers)) => {
                crash.dump = Some(dump);
                crash.registers = registers;
                if session.hello.is_some() {
                    session.report(std::mem::take(&mut crash), false);
                } else {
                    // Reported once the Hello, already on its way, arrives.
                    crash.since.get_or_insert_with(Instant::now);
                }
            }
            Ok(Event::Goodbye(status)) => {
                session.goodbye = true;
                session.exit_status = status;
            }
            Ok(Event::Process(facts)) => {
                crash.process.get_or_insert(*facts);
            }
            Ok(Event::Signal(record)) => {
                crash.signal = Some(record);
                crash.open_executable_ahead(session.hello.as_ref());
                crash.since.get_or_insert_with(Instant::now);
            }
            Ok(Event::AllDisconnected(what_became)) => {
                fate = what_became;
                break;
            }
            Ok(Event::ServerFailed(why)) => {
                log::error!("the IPC server stopped: {why}");
                break;
            }
            Err(RecvTimeoutError::Timeout) => {
                if crash
                    .since
                    .is_some_and(|since| since.elapsed() >= PANIC_DUMP_GRACE)
                {
                    session.report(std::mem::take(&mut crash), false);
                } else if session.hello.is_none() && started.elapsed() >= HELLO_TIMEOUT {
                    log::error!("no application connected within {HELLO_TIMEOUT:?}; exiting");
                    break;
                } else if session.hello.is_none()
                    && session
                        .options
                        .app_pid
                        .is_some_and(|pid| !process_alive(pid))
                {
                    log::info!("the application exited before it connected; exiting");
                    break;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }

    if !crash.is_empty() {
        session.report(crash, false);
    } else if session.goodbye || session.crashes_reported > 0 || session.hello.is_none() {
        if let Some(status) = session.failed_exit_to_report() {
            log::info!("the application exited with status {status}; reported as [report] ReportExitCodes asks");
            let crash = PendingCrash {
                exit_status: Some(status),
                ..PendingCrash::default()
            };
            session.report(crash, true);
        }
    } else {
        session.report_a_death_without_goodbye(fate);
    }
    session.flush_older_reports();
    if let Some(outbox) = &session.outbox {
        outbox.forget_this_sender();
    }
    Ok(session.crashes_reported)
}

impl Session {
    /// The application vanished: no crash, no goodbye. Reported, unless it
    /// was asked to stop or it runs on.
    fn report_a_death_without_goodbye(&mut self, fate: Fate) {
        let ended = match fate {
            Fate::StillRunning => {
                log::info!(
                    "the application closed its link without a goodbye but runs on (it may have \
                     replaced itself with exec): not reported"
                );
                return;
            }
            Fate::Ended(ending) if ending.is_not_a_crash() => {
                log::info!(
                    "the application {ending} without a goodbye (not a crash): not reported"
                );
                return;
            }
            Fate::Ended(ending) => Some(ending),
            Fate::Unknown => None,
        };
        let crash = PendingCrash {
            ended,
            out_of_memory: self
                .oom_kills_at_hello
                .as_ref()
                .and_then(|counts| counts.struck_since()),
            ..PendingCrash::default()
        };
        self.report(crash, true);
    }

    fn greet(&mut self, hello: Hello) {
        log::info!(
            "watching {} {} (pid {})",
            hello.app_name,
            hello.app_version,
            hello.pid
        );
        if let Some(expected) = self.options.app_pid {
            if expected != hello.pid {
                log::warn!("Hello from pid {} while watching pid {expected}", hello.pid);
            }
        }
        let explicit = self.options.ini.clone().or_else(|| hello.ini_path.clone());
        let exe_dir = hello.exe.as_deref().and_then(Path::parent);
        match config::find(explicit.as_deref(), exe_dir, hello.cwd.as_deref())
            .and_then(|path| config::load(&path))
        {
            Ok(config) => {
                log::info!("using {}", config.path.display());
                for warning in &config.warnings {
                    log::warn!("{warning}");
                }
                self.config = Some(config);
            }
            Err(e) => {
                log::error!("reports will wait in the outbox: {e}");
                self.config_error = Some(e.to_string());
            }
        }
        // The application's own choice first, then AXIS.INI's, then the
        // default the application computed.
        let configured = self.config.as_ref().and_then(|c| c.report.outbox.clone());
        let outbox_dir = match (hello.outbox_explicit, configured) {
            (false, Some(configured)) => configured,
            _ => hello.outbox_dir.clone(),
        };
        self.outbox = open_an_outbox(&outbox_dir, &hello.outbox_dir);
        // The application started this watcher with its log in the outbox
        // it knew of; the log follows the reports into the one chosen.
        if let Some(outbox) = &self.outbox {
            if outbox.root() != hello.outbox_dir {
                let path = outbox.root().join("watcher.log");
                log::info!("this watcher's log goes on in {}", path.display());
                if let Err(e) = crate::watcher_log::continue_in(&path) {
                    log::warn!("{}: {e}; the log stays here", path.display());
                }
            }
        }
        self.oom_kills_at_hello = Some(crate::cgroup::OomKills::count(hello.pid));
        self.hello = Some(hello);
    }

    /// Builds, stores and sends one report. Never loses it: when sending
    /// fails it stays in `pending/`.
    fn report(&mut self, crash: PendingCrash, abnormal_exit: bool) {
        let Some(hello) = &self.hello else {
            log::error!(
                "a crash arrived before the application said who it is; it cannot be reported"
            );
            return;
        };
        let Some(outbox) = &self.outbox else {
            log::error!("no outbox: the crash cannot be stored");
            return;
        };
        if self.config.as_ref().is_some_and(|c| !c.report.enabled) {
            log::info!("a crash was seen, but reports are turned off ([report] Enabled = no)");
            return;
        }
        // What is known so far goes to disk while the report is built: should
        // this watcher die before the report is stored, the next `crashmail`
        // run recovers it from these.
        self.notes_written += 1;
        let run = outbox.dir(crashmail_handler::RUN_DIR);
        let name = format!("{}-{}", std::process::id(), self.notes_written);
        let note_path = run.join(format!("{name}{CRASH_NOTE_SUFFIX}"));
        let recovery_dump = match &crash.dump {
            Some(Ok(bytes)) => Some((run.join(format!("{name}.dmp")), bytes.clone())),
            _ => None,
        };
        let note = CrashNote {
            hello: hello.clone(),
            panic: crash.panic.clone(),
            dump: None,
            abnormal_exit,
        };
        let recovery = std::thread::Builder::new()
            .name("crashmail-note".into())
            .spawn({
                let note_path = note_path.clone();
                move || write_recovery_note(note, &note_path, recovery_dump)
            });
        if let Some(opening) = crash.opening {
            let _ = opening.join();
        }
        let minidump = crash.dump;
        let mut log_files = hello.log_files.clone();
        if let Some(config) = &self.config {
            log_files.extend(config.report.log_files.iter().cloned());
        }
        let evidence = CrashEvidence {
            app_name: hello.app_name.clone(),
            app_version: hello.app_version.clone(),
            pid: hello.pid,
            started_at_ms: Some(hello.started_at_ms),
            exe: hello.exe.clone(),
            cwd: hello.cwd.clone(),
            log_files,
            panic: crash.panic,
            minidump,
            signal_record: crash.signal,
            abnormal_exit,
            secrets: self.secrets(hello.pid, crash.process.as_ref()),
            process: crash.process,
            exit_status: crash.exit_status,
            out_of_memory: crash.out_of_memory,
            ended: crash.ended,
            registers: crash.registers,
            time: None,
        };
        let tail = self
            .config
            .as_ref()
            .map(|c| c.report.log_tail_bytes)
            .unwrap_or(config::DEFAULT_LOG_TAIL_BYTES);
        let mut contents = assemble::assemble(evidence, tail);
        let dump_path = recovery
            .ok()
            .and_then(|writing| writing.join().ok())
            .flatten();
        // Once the report is stored or sent, its recovery copy goes: left,
        // the next `crashmail` run would bundle and send it a second time.
        let forget_recovery_copy = || {
            if let Some(dump_path) = &dump_path {
                let _ = std::fs::remove_file(dump_path);
            }
            let _ = std::fs::remove_file(&note_path);
        };
        let id = contents.meta.id.to_string();
        match delivery::store(outbox, &mut contents) {
            Ok(path) => {
                log::info!(
                    "report {id} ({}: {}) stored at {}",
                    contents.meta.kind,
                    contents.meta.reason,
                    path.display()
                );
                forget_recovery_copy();
            }
            Err(e) => {
                log::error!("report {id} could not be stored: {e}");
                let Some(config) = &self.config else {
                    return;
                };
                contents.meta.notes.push(format!(
                    "this report could not be stored in the outbox ({e}); it was sent from memory, once"
                ));
                match (delivery::Delivery { config, outbox }).send_unstored(&contents) {
                    Ok(_) => {
                        log::info!("report {id} sent from memory");
                        self.crashes_reported += 1;
                        forget_recovery_copy();
                    }
                    Err(why) => log::error!("report {id} is lost: {why}"),
                }
                return;
            }
        }
        self.crashes_reported += 1;
        if let Some(config) = &self.config {
            let delivery = delivery::Delivery { config, outbox };
            match delivery.enforce_limits() {
                Ok(dropped) if !dropped.is_empty() => log::warn!(
                    "the outbox is over its limits: {} older repeat(s) dropped (see dropped.log)",
                    dropped.len()
                ),
                Ok(_) => {}
                Err(e) => log::error!("the outbox limits could not be applied: {e}"),
            }
            match delivery.send_one(&id) {
                Ok(Some(Outcome::Sent)) => {
                    log::info!("report {id} sent to {}", config.smtp.to.join(", "))
                }
                Ok(Some(Outcome::SentInDigest { mailed, repeats })) => log::info!(
                    "report {id} sent to {} in a digest: report {mailed} with {repeats} held repeat(s)",
                    config.smtp.to.join(", ")
                ),
                Ok(Some(Outcome::Held(why))) => log::info!("report {id} held: {why}"),
                Ok(Some(Outcome::Kept(why) | Outcome::NotTried(why))) => {
                    log::warn!("report {id} kept for a later try: {why}")
                }
                Ok(Some(Outcome::Failed(why))) => log::error!("report {id} refused: {why}"),
                Ok(None) => log::info!("report {id} was claimed by another sender"),
                Err(e) => log::error!("report {id}: outbox error: {e}"),
            }
        } else if let Some(why) = &self.config_error {
            let record = crate::outbox::DeliveryRecord {
                last_error: Some(format!(
                    "not tried: {why} (once it is fixed, `crashmail outbox flush` sends it)"
                )),
                ..outbox.record(crate::outbox::PENDING, &id)
            };
            if let Err(e) = outbox.write_record(crate::outbox::PENDING, &id, &record) {
                log::error!("report {id}: its delivery record could not be written: {e}");
            }
        }
    }

    /// A non-zero exit status to report: asked for by `[report]
    /// ReportExitCodes`, and no crash already reported.
    fn failed_exit_to_report(&self) -> Option<i32> {
        let asked = self
            .config
            .as_ref()
            .is_some_and(|c| c.report.report_exit_codes);
        self.exit_status
            .filter(|status| asked && *status != 0 && self.crashes_reported == 0)
    }

    /// What must not appear in this application's reports: secrets of its
    /// environment (read while it is alive, else this watcher's own, which it
    /// inherited) and of its command line, and the SMTP password.
    fn secrets(
        &self,
        pid: u32,
        process: Option<&crate::collect::ProcessFacts>,
    ) -> crate::privacy::Secrets {
        // Both: a process that has died (a zombie) shows an empty command
        // line, and the one taken at the crash is joined by spaces.
        let mut command_line = crate::privacy::Secrets::command_line_of(pid).unwrap_or_default();
        if let Some(line) = process.and_then(|p| p.command_line.as_deref()) {
            command_line.extend(line.split_whitespace().map(str::to_string));
        }
        let mut environment = crate::privacy::Secrets::environment_of(pid);
        environment.extend(std::env::vars_os().map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        }));
        crate::privacy::Secrets::gather(
            environment,
            self.config
                .as_ref()
                .and_then(|c| c.smtp.password.as_ref())
                .map(|p| p.expose()),
        )
        .with_command_line(command_line.iter().map(String::as_str))
    }

    /// Sends what earlier runs left behind, now that the application is gone.
    fn flush_older_reports(&self) {
        let (Some(outbox), Some(config)) = (&self.outbox, &self.config) else {
            return;
        };
        if let Err(e) = delivery::package_incoming(outbox, Some(config)) {
            log::error!("records in incoming/ could not be packaged: {e}");
        }
        let delivery = delivery::Delivery { config, outbox };
        match delivery.flush(delivery::Due::Only, &mut |_, _| {}) {
            Ok(outcomes) => {
                for (id, outcome) in outcomes {
                    log::info!("older report {id}: {outcome:?}");
                }
            }
            Err(e) => log::error!("the outbox could not be flushed: {e}"),
        }
    }
}

/// Writes the recovery copy of the minidump (when there is room) and the
/// crash note naming it; returns the copy's path. Neither is synced: they
/// stand in for a watcher that dies, not for a machine that loses power,
/// and the report itself is synced once stored.
fn write_recovery_note(
    mut note: CrashNote,
    note_path: &Path,
    dump: Option<(PathBuf, Vec<u8>)>,
) -> Option<PathBuf> {
    if let Some((path, bytes)) = dump {
        match crate::outbox::write_new(&path, &bytes) {
            Ok(()) => note.dump = Some(path),
            Err(e) => log::warn!(
                "no recovery copy of the minidump ({e}); the report is built from memory"
            ),
        }
    }
    if let Err(e) = serde_json::to_vec(&note)
        .map_err(std::io::Error::other)
        .and_then(|bytes| crate::outbox::write_replace(note_path, &bytes))
    {
        log::warn!(
            "the crash note {} could not be written: {e}",
            note_path.display()
        );
    }
    note.dump
}

/// True while `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}
