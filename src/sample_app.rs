//! The sample application of `crashmail demo`: it embeds crashmail the way
//! the README tells applications to, writes a few log lines, then dies the
//! way it is told to. Run as `crashmail sample-app KIND --log FILE`.
// The null-pointer write is the point of this module.
#![allow(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;

/// The ways the sample application can end.
pub const KINDS: &[(&str, &str)] = &[
    ("panic", "panic!(\"bad index {}\", 7) on the main thread"),
    (
        "thread-panic",
        "a panic on a spawned thread named \"worker\"",
    ),
    (
        "panic-any",
        "std::panic::panic_any(42u32): a payload that is not a string",
    ),
    ("segv", "a write through a null pointer (SIGSEGV)"),
    ("abort", "std::process::abort() (SIGABRT)"),
    ("exit", "a clean exit once the watcher is up: no report"),
];

/// When set, the sample application prints how long `install` took and
/// when it is about to crash (for the benchmarks).
pub const TIMING_ENV: &str = "CRASHMAIL_SAMPLE_TIMING";

fn unix_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// Runs the sample application. Returns its exit code when it survives.
pub fn run(kind: &str, log: Option<PathBuf>) -> i32 {
    let mut options =
        crashmail_handler::Options::new("crashmail-sample-app", env!("CARGO_PKG_VERSION"));
    // The watcher is this very executable, unless the environment names one.
    if std::env::var_os(crashmail_handler::WATCHER_ENV).is_none() {
        if let Ok(exe) = std::env::current_exe() {
            options = options.watcher(exe);
        }
    }
    if let Some(log) = &log {
        options = options.log_file(log);
    }
    let timing = std::env::var_os(TIMING_ENV).is_some();
    let started = std::time::Instant::now();
    let installed = crashmail_handler::install(options);
    if timing {
        eprintln!("install_us={}", started.elapsed().as_micros());
    }
    let crashmail = match installed {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("sample-app: {e}");
            return 2;
        }
    };
    let mut log_file = log.and_then(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    });
    let mut log_line = |line: &str| {
        if let Some(file) = log_file.as_mut() {
            let _ = writeln!(file, "{} {line}", chrono::Utc::now().format("%H:%M:%S%.3f"));
            let _ = file.flush();
        }
    };
    // Breadcrumbs: the application's log records before the crash.
    let _ = crashmail_handler::breadcrumbs::BreadcrumbLogger::new(
        crashmail_handler::breadcrumbs::NoLogger,
    )
    .install(log::LevelFilter::Info);
    log::info!("sample app started, about to {kind}");
    log_line("sample app started");
    log_line("processing order 42");
    log_line(&format!("last line before the crash: {kind}"));
    if timing {
        eprintln!("crash_at_unix_us={}", unix_micros());
    }
    match kind {
        "panic" => parse_order_line(7),
        "thread-panic" => {
            let worker = std::thread::Builder::new()
                .name("worker".into())
                .spawn(|| parse_order_line(9))
                .expect("spawn worker");
            if worker.join().is_err() {
                return 101;
            }
        }
        "panic-any" => std::panic::panic_any(42u32),
        "segv" => write_through_null(),
        "abort" => std::process::abort(),
        "exit" => {
            // A real application runs for a while; this one waits until its
            // watcher is up, so that a clean exit is seen as one.
            crashmail.wait_for_watcher(std::time::Duration::from_secs(5));
            return 0;
        }
        other => {
            eprintln!("sample-app: unknown kind {other:?}");
            return 2;
        }
    }
    0
}

#[inline(never)]
fn parse_order_line(index: usize) {
    let fields = ["order", "42"];
    if index >= fields.len() {
        panic!("bad index {}", index);
    }
}

#[inline(never)]
fn write_through_null() {
    let target: *mut u64 = std::hint::black_box(std::ptr::null_mut());
    // SAFETY: none; this crash is the demonstration.
    unsafe { target.write_volatile(0xdead) };
}
