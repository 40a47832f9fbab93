//! The in-process half of crashmail: what an application embeds.
//!
//! One call at the top of `main` installs a panic hook and a native crash
//! handler, and starts the out-of-process watcher (`crashmail watch`) that
//! does the heavy work when the application dies:
//!
//! ```no_run
//! // First thing in `main`; keep the guard until `main` returns.
//! let _crashmail = crashmail_handler::install(
//!     crashmail_handler::options!().log_file("/var/log/myapp/app.log"),
//! );
//! // … the application …
//! ```
//!
//! Nothing heavy runs in the application: no SMTP, no zip, no TLS. The panic
//! hook sends the panic to the watcher and asks it for a minidump; the signal
//! handler only asks for the minidump. When no watcher can be reached, both
//! leave a record in the outbox's `incoming/` folder, which the next
//! `crashmail` run turns into a report and sends.

pub mod breadcrumbs;
mod fallback;
mod frames;
mod ipc;
mod link;
mod native;
mod panic_hook;
pub mod protocol;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Folder of the outbox where the application leaves crash records that no
/// watcher took; the next `crashmail` run packages and sends them.
pub const INCOMING_DIR: &str = "incoming";
/// Folder of the outbox holding the watchers' sockets.
pub const RUN_DIR: &str = "run";
/// Environment variable naming the outbox directory.
pub const OUTBOX_ENV: &str = "CRASHMAIL_OUTBOX";
/// Environment variable naming the watcher executable.
pub const WATCHER_ENV: &str = "CRASHMAIL_WATCHER";

/// What [`install`] needs to know about the application.
///
/// Build it with [`options!`], which fills in the name and version from
/// `Cargo.toml`, then add what applies.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct Options {
    /// The application's name, as shown in reports and email subjects.
    pub app_name: String,
    /// The application's version.
    pub app_version: String,
    /// `AXIS.INI` to use; when `None` the watcher searches for it (see the README).
    pub ini_path: Option<PathBuf>,
    /// Log files whose tails are attached to every report.
    pub log_files: Vec<PathBuf>,
    /// The `crashmail` executable that runs as the watcher. When `None`:
    /// `$CRASHMAIL_WATCHER`, then `crashmail` beside the application's
    /// executable, then `crashmail` on `PATH`.
    pub watcher_path: Option<PathBuf>,
    /// The outbox. When `None`: `$CRASHMAIL_OUTBOX`, then
    /// `$XDG_STATE_HOME/crashmail`, then `~/.local/state/crashmail`.
    pub outbox_dir: Option<PathBuf>,
}

impl Options {
    /// Options for an application with this name and version.
    pub fn new(app_name: impl Into<String>, app_version: impl Into<String>) -> Self {
        Options {
            app_name: app_name.into(),
            app_version: app_version.into(),
            ini_path: None,
            log_files: Vec::new(),
            watcher_path: None,
            outbox_dir: None,
        }
    }

    /// Uses this `AXIS.INI` instead of searching for one.
    pub fn ini(mut self, path: impl Into<PathBuf>) -> Self {
        self.ini_path = Some(path.into());
        self
    }

    /// Attaches the tail of this log file to every report.
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_files.push(path.into());
        self
    }

    /// Runs this executable as the watcher.
    pub fn watcher(mut self, path: impl Into<PathBuf>) -> Self {
        self.watcher_path = Some(path.into());
        self
    }

    /// Keeps reports in this outbox directory.
    pub fn outbox(mut self, path: impl Into<PathBuf>) -> Self {
        self.outbox_dir = Some(path.into());
        self
    }
}

/// [`Options`] for the calling application: named after its binary (the
/// package where Cargo names no binary) and versioned from its `Cargo.toml`.
#[macro_export]
macro_rules! options {
    () => {
        // The binary's name where Cargo gives one (a package with several
        // binaries, an example), else the package's.
        $crate::Options::new(
            match option_env!("CARGO_BIN_NAME") {
                Some(name) => name,
                None => env!("CARGO_PKG_NAME"),
            },
            env!("CARGO_PKG_VERSION"),
        )
    };
}

/// Why [`install`] could not install crashmail.
///
/// A watcher that cannot be started is not an error: reports then go to the
/// outbox from inside the application; see [`Guard::watcher_pending`].
#[derive(Debug)]
#[non_exhaustive]
pub enum InstallError {
    /// `install` was already called in this process.
    AlreadyInstalled,
    /// The native crash handler could not be attached.
    SignalHandler(String),
}

impl std::fmt::Display for InstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InstallError::AlreadyInstalled => {
                write!(f, "crashmail is already installed in this process")
            }
            InstallError::SignalHandler(why) => {
                write!(f, "the crash signal handler could not be installed: {why}")
            }
        }
    }
}

impl std::error::Error for InstallError {}

/// Keeps crashmail installed until it is dropped (keep it until `main`
/// returns). The process's `exit()` tells the watcher that the application
/// ended in order, and with which status.
#[must_use = "dropping the guard uninstalls the crash handler"]
pub struct Guard {
    _signals: native::SignalGuard,
}

impl Guard {
    /// True while the watcher is still starting; false once it is connected
    /// or known to be unavailable.
    pub fn watcher_pending(&self) -> bool {
        link::state() == link::LinkState::Connecting
    }

    /// True when the watcher is connected.
    pub fn watcher_connected(&self) -> bool {
        link::state() == link::LinkState::Connected
    }

    /// Waits up to `timeout` for the watcher to connect; true if it did.
    /// Applications do not need this: crash paths wait by themselves.
    pub fn wait_for_watcher(&self, timeout: std::time::Duration) -> bool {
        link::wait_connected(timeout)
    }
}

/// What the crash paths need, fixed at install time.
#[derive(Debug)]
pub(crate) struct Installed {
    pub app_name: String,
    pub app_version: String,
    pub log_files: Vec<PathBuf>,
    pub outbox_dir: PathBuf,
    pub pid: u32,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

pub(crate) fn installed() -> Option<&'static Installed> {
    INSTALLED.get()
}

/// Installs crashmail: the panic hook, the native crash handler and the watcher.
///
/// Returns quickly: the watcher starts and connects on a background thread.
/// A crash before it is connected waits for it (a few seconds at most), then
/// falls back to writing the record into the outbox.
pub fn install(options: Options) -> Result<Guard, InstallError> {
    let outbox_dir = options
        .outbox_dir
        .clone()
        .or_else(default_outbox_dir)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("crashmail-{}", current_uid())));
    let installed = Installed {
        app_name: options.app_name.clone(),
        app_version: options.app_version.clone(),
        // Absolute now: a record left for a later `crashmail` run must name
        // the logs wherever that run starts.
        log_files: options
            .log_files
            .iter()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
            .collect(),
        outbox_dir,
        pid: std::process::id(),
    };
    if INSTALLED.set(installed).is_err() {
        return Err(InstallError::AlreadyInstalled);
    }
    let installed = INSTALLED.get().expect("just set");
    let signals = native::SignalGuard::attach(installed).map_err(InstallError::SignalHandler)?;
    panic_hook::install();
    link::start(options, installed);
    Ok(Guard { _signals: signals })
}

/// The panic hook's own work up to the hand-off to the watcher — the
/// backtrace, its frames, the record's JSON — for the benchmarks.
#[doc(hidden)]
pub fn capture_panic_for_benchmarks(message: &str) -> Vec<u8> {
    let installed = Installed {
        app_name: "bench".into(),
        app_version: "0".into(),
        log_files: Vec::new(),
        outbox_dir: PathBuf::new(),
        pid: std::process::id(),
    };
    let record = panic_hook::panic_record(
        &installed,
        message.to_string(),
        Some("src/main.rs:1:1".into()),
    );
    serde_json::to_vec(&record).unwrap_or_default()
}

/// The outbox used when neither the options nor `AXIS.INI` name one:
/// `$CRASHMAIL_OUTBOX`, else `$XDG_STATE_HOME/crashmail`, else
/// `~/.local/state/crashmail`.
pub fn default_outbox_dir() -> Option<PathBuf> {
    if let Some(dir) = non_empty_env(OUTBOX_ENV) {
        return Some(PathBuf::from(dir));
    }
    // The XDG spec: a relative path in the variable is to be ignored.
    if let Some(state) = non_empty_env("XDG_STATE_HOME").filter(|s| Path::new(s).is_absolute()) {
        return Some(Path::new(&state).join("crashmail"));
    }
    non_empty_env("HOME").map(|home| Path::new(&home).join(".local/state/crashmail"))
}

fn non_empty_env(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|value| !value.is_empty())
}

/// Creates `dir` and its parents; the leaf is made private (0700).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn current_uid() -> u32 {
    native::current_uid()
}

pub(crate) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
