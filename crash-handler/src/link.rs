//! The link to the watcher: starting it, connecting, and the two connections.
//!
//! Two connections are kept. The *message* connection carries `Hello` and
//! `Goodbye` and stays open for the life of the process, so the watcher sees
//! the application die when it closes. The *dump* connection carries a panic
//! record followed by its dump request, and the signal handler's record and
//! request.

use crate::ipc::{Client, SocketAddress};
use crate::protocol::{Hello, MessageKind, PROTOCOL_VERSION};
use crate::{Installed, Options};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the connector waits for a freshly started watcher.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a crash waits for a watcher that is still starting.
pub(crate) const CRASH_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum LinkState {
    Connecting = 0,
    Connected = 1,
    Unavailable = 2,
}

static STATE: AtomicU8 = AtomicU8::new(LinkState::Connecting as u8);
static MESSAGES: OnceLock<Client> = OnceLock::new();
/// The dump connection, leaked so that a signal handler can use it without
/// a lock.
static DUMPS: AtomicPtr<Client> = AtomicPtr::new(std::ptr::null_mut());
static SOCKET: OnceLock<SocketAddress> = OnceLock::new();
static GOODBYE_SENT: AtomicBool = AtomicBool::new(false);

/// How long an exit with a failing status waits for a watcher that is
/// still connecting (it usually takes a few milliseconds).
const FAILING_EXIT_WAIT: Duration = Duration::from_secs(2);

pub(crate) fn state() -> LinkState {
    match STATE.load(Ordering::Acquire) {
        1 => LinkState::Connected,
        2 => LinkState::Unavailable,
        _ => LinkState::Connecting,
    }
}

fn set_state(state: LinkState) {
    STATE.store(state as u8, Ordering::Release);
}

/// Waits, without allocating or locking, until the link is up or given up.
/// Safe to call from a signal handler.
pub(crate) fn wait_connected(timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match state() {
            LinkState::Connected => return true,
            LinkState::Unavailable => return false,
            LinkState::Connecting if Instant::now() >= deadline => return false,
            LinkState::Connecting => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// The current dump connection, if any. Signal-safe: one atomic load.
pub(crate) fn dump_client() -> Option<&'static Client> {
    let client = DUMPS.load(Ordering::Acquire);
    // SAFETY-free: the pointer comes from Box::leak below and is never freed.
    crate::native::leaked_ref(client)
}

/// Sends a message on the message connection; false if there is none.
pub(crate) fn send_on_dump_connection(kind: MessageKind, body: &[u8]) -> bool {
    dump_client().is_some_and(|client| client.send_message(kind as u32, body).is_ok())
}

/// Tells the watcher the application is ending cleanly. Idempotent.
/// `status` is the exit status, when known.
pub(crate) fn say_goodbye(status: Option<i32>) {
    if GOODBYE_SENT.swap(true, Ordering::AcqRel) {
        return;
    }
    // A failing exit may be a report (`[report] ReportExitCodes`), and a
    // short-lived program can fail before its watcher has connected: such
    // an exit waits for the link, as a crash does. A successful one, or one
    // whose watcher could not start, does not wait.
    if status.is_some_and(|status| status != 0) {
        wait_connected(FAILING_EXIT_WAIT);
    }
    if let Some(client) = MESSAGES.get() {
        let body = status.map(|s| s.to_string()).unwrap_or_default();
        let _ = client.send_message(MessageKind::Goodbye as u32, body.as_bytes());
    }
}

/// Starts the watcher and connects to it on a background thread.
pub(crate) fn start(options: Options, installed: &'static Installed) {
    let started = std::thread::Builder::new()
        .name("crashmail-link".into())
        .spawn(move || {
            let connected = match connect(&options, installed) {
                Ok(()) => true,
                Err(why) => {
                    log_to_outbox(installed, &format!("watcher unavailable: {why}"));
                    false
                }
            };
            set_state(if connected {
                LinkState::Connected
            } else {
                LinkState::Unavailable
            });
        });
    if started.is_err() {
        set_state(LinkState::Unavailable);
    }
}

fn connect(options: &Options, installed: &Installed) -> Result<(), String> {
    crate::create_private_dir(&installed.outbox_dir.join(crate::RUN_DIR)).map_err(|e| {
        format!(
            "cannot create the outbox {}: {e}",
            installed.outbox_dir.display()
        )
    })?;
    let address = SOCKET.get_or_init(|| socket_address(installed));
    let watcher =
        find_watcher(options).ok_or("no crashmail executable found (set CRASHMAIL_WATCHER)")?;

    let log = open_watcher_log(installed)
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    let mut command = Command::new(&watcher);
    command
        .arg("watch")
        .arg("--socket")
        .arg(address.as_arg())
        .arg("--app-pid")
        .arg(installed.pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(ini) = &options.ini_path {
        command.arg("--ini").arg(ini);
    }
    // Its own process group: a Ctrl-C aimed at the application must not kill
    // the watcher before it has sent the report.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", watcher.display()))?;
    crate::native::allow_ptrace_by(child.id());

    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let messages = loop {
        match Client::connect(address) {
            Ok(client) => break client,
            Err(e) => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "{} exited at start ({status}); see watcher.log",
                        watcher.display()
                    ));
                }
                if Instant::now() >= deadline {
                    return Err(format!("cannot connect to the watcher: {e}"));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    };
    let dumps =
        Client::connect(address).map_err(|e| format!("cannot open the dump connection: {e}"))?;

    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        app_name: installed.app_name.clone(),
        app_version: installed.app_version.clone(),
        pid: installed.pid,
        exe: std::env::current_exe().ok(),
        cwd: std::env::current_dir().ok(),
        ini_path: options.ini_path.clone(),
        log_files: installed.log_files.iter().map(|p| absolute(p)).collect(),
        outbox_dir: absolute(&installed.outbox_dir),
        outbox_explicit: options.outbox_dir.is_some()
            || std::env::var_os(crate::OUTBOX_ENV).is_some_and(|v| !v.is_empty()),
        started_at_ms: crate::unix_millis(),
    };
    let body = serde_json::to_vec(&hello).map_err(|e| e.to_string())?;
    messages
        .send_message(MessageKind::Hello as u32, &body)
        .map_err(|e| format!("cannot greet the watcher: {e}"))?;
    DUMPS.store(Box::leak(Box::new(dumps)), Ordering::Release);
    let _ = MESSAGES.set(messages);
    // The watcher outlives us on purpose; it is reaped by init when we exit.
    drop(child);
    Ok(())
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// A socket inside the private outbox when its path fits in `sun_path`,
/// otherwise an abstract socket with an unguessable name.
fn socket_address(installed: &Installed) -> SocketAddress {
    let unique = format!("{}-{}", installed.pid, crate::unix_millis());
    let path = absolute(
        &installed
            .outbox_dir
            .join(crate::RUN_DIR)
            .join(format!("{unique}.sock")),
    );
    if path.as_os_str().len() < 100 {
        SocketAddress::Path(path)
    } else {
        SocketAddress::Abstract(format!("crashmail-{unique}-{:x}", random_u64()))
    }
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(crate::unix_millis());
    hasher.finish()
}

fn find_watcher(options: &Options) -> Option<PathBuf> {
    if let Some(path) = &options.watcher_path {
        return Some(path.clone());
    }
    if let Some(path) = std::env::var_os(crate::WATCHER_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("crashmail")))
        .filter(|candidate| candidate.is_file());
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("crashmail"))
                .find(|candidate| candidate.is_file())
        })
    })
}

/// Notes why the watcher is unavailable where an operator will look: the
/// watcher's own log in the outbox. Never on the application's stderr.
fn log_to_outbox(installed: &Installed, line: &str) {
    use std::io::Write;
    let _ = crate::create_private_dir(&installed.outbox_dir);
    if let Ok(mut file) = open_watcher_log(installed) {
        let _ = writeln!(file, "crashmail-handler[{}]: {line}", installed.pid);
    }
}

/// The outbox's `watcher.log`, private to its user.
fn open_watcher_log(installed: &Installed) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(installed.outbox_dir.join("watcher.log"))
}
