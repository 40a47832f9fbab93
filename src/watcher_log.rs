//! The watcher's log: one timestamped line per record. It starts on stderr,
//! which the application points at the `watcher.log` of the outbox it knows
//! of; once the watcher has read `AXIS.INI` and chosen the outbox the
//! reports go to, the log goes on in that outbox's `watcher.log`.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// Where records go once [`continue_in`] has named a file; stderr before.
static LOG_FILE: Mutex<Option<std::fs::File>> = Mutex::new(None);

struct WatcherLogger;
static LOGGER: WatcherLogger = WatcherLogger;

/// Makes this process's `log` records the watcher's log.
pub fn install() {
    log::set_logger(&LOGGER).ok();
    log::set_max_level(log::LevelFilter::Info);
}

/// Sends the records that follow to `path` (appended, private to its user).
pub fn continue_in(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    *LOG_FILE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(file);
    Ok(())
}

impl log::Log for WatcherLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info && metadata.target().starts_with("crashmail")
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // One write per line: watchers of several applications append to
        // the same watcher.log.
        let line = format!(
            "{} crashmail watch[{}] {}: {}\n",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            std::process::id(),
            record.level(),
            record.args()
        );
        let mut target = LOG_FILE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match target.as_mut() {
            Some(file) => {
                let _ = file.write_all(line.as_bytes());
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}
