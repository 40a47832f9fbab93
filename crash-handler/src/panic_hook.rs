//! The panic hook: records the panic, hands it to the watcher, then lets the
//! panic go on exactly as it would have without crashmail.

use crate::link;
use crate::protocol::{MessageKind, PanicRecord, PROTOCOL_VERSION};
use std::cell::Cell;
use std::io::Write;
use std::panic::PanicHookInfo;

thread_local! {
    /// Set once this thread has reported a panic. A second panic on the same
    /// thread is a panic while unwinding (then abort): one report, not two.
    static REPORTED_ON_THIS_THREAD: Cell<bool> = const { Cell::new(false) };
}

pub(crate) fn install() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // The application's own hook (by default: the message on stderr) runs
        // first, so the user sees the panic even if reporting is slow.
        previous(info);
        report(info);
    }));
}

fn report(info: &PanicHookInfo<'_>) {
    let Some(installed) = crate::installed() else {
        return;
    };
    let first_on_this_thread = REPORTED_ON_THIS_THREAD
        .try_with(|reported| !reported.replace(true))
        .unwrap_or(true);
    if !first_on_this_thread {
        return;
    }
    let location = info
        .location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
    let record = panic_record(installed, panic_message(info), location);

    if link::wait_connected(link::CRASH_WAIT) {
        let body = serde_json::to_vec(&record).unwrap_or_default();
        if link::send_on_dump_connection(MessageKind::Panic, &body) {
            crate::native::dump_for_panic();
            return;
        }
    }
    if let Err(why) = crate::fallback::write_panic_record(installed, &record) {
        let _ = writeln!(
            std::io::stderr(),
            "crashmail: the crash report could not be written into {}: {why}",
            installed.outbox_dir.join(crate::INCOMING_DIR).display()
        );
    }
}

/// The record of a panic on this thread: the work the hook does before it
/// hands the panic to the watcher.
pub(crate) fn panic_record(
    installed: &crate::Installed,
    message: String,
    location: Option<String>,
) -> PanicRecord {
    // Before anything slow: the logs as they were at the panic.
    let log_sizes = installed
        .log_files
        .iter()
        .filter_map(|path| Some((path.clone(), std::fs::metadata(path).ok()?.len())))
        .collect();
    let thread = std::thread::current();
    // Formatted twice: short for people, full (`{:#}`) for the addresses;
    // symbols are resolved once.
    let backtrace = std::backtrace::Backtrace::force_capture();
    PanicRecord {
        protocol: PROTOCOL_VERSION,
        app_name: installed.app_name.clone(),
        app_version: installed.app_version.clone(),
        pid: installed.pid,
        message,
        location,
        thread: thread.name().unwrap_or("<unnamed>").to_string(),
        backtrace: backtrace.to_string(),
        native_frames: crate::frames::native_frames(&format!("{backtrace:#}")),
        breadcrumbs: crate::breadcrumbs::snapshot(),
        log_files: installed.log_files.clone(),
        log_sizes,
        time_ms: crate::unix_millis(),
    }
}

/// The panic's message: `&str` and `String` payloads as they are (so
/// `panic!("bad index {}", 7)` gives "bad index 7"), a placeholder otherwise.
pub(crate) fn panic_message(info: &PanicHookInfo<'_>) -> String {
    if let Some(text) = info.payload_as_str() {
        return text.to_string();
    }
    "Box<dyn Any> (the panic payload is not a string)".to_string()
}
