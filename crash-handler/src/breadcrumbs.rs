//! Breadcrumbs: the last log records before a panic, carried in its report
//! as `breadcrumbs.txt`.
//!
//! With the `log` feature, [`BreadcrumbLogger`] wraps the application's own
//! logger: every record still reaches it, and the last ones are also kept
//! in memory. With the `tracing` feature, [`BreadcrumbLayer`] does the same
//! for `tracing` events. The panic hook reads them without waiting on a lock
//! a stuck thread might hold.

use std::collections::VecDeque;
use std::sync::Mutex;

/// How many records are kept.
pub const KEPT: usize = 100;

static RECORDS: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

/// Keeps one record.
pub fn record(line: String) {
    let Ok(mut records) = RECORDS.lock() else {
        return;
    };
    if records.len() == KEPT {
        records.pop_front();
    }
    records.push_back(line);
}

/// The records kept, oldest first. Tries the lock a few times and gives up
/// rather than wait on a thread that holds it.
pub(crate) fn snapshot() -> Vec<String> {
    for _ in 0..50 {
        match RECORDS.try_lock() {
            Ok(records) => return records.iter().cloned().collect(),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                return poisoned.into_inner().iter().cloned().collect()
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                std::thread::sleep(std::time::Duration::from_millis(2))
            }
        }
    }
    vec!["(breadcrumbs unavailable: their lock stayed held)".to_string()]
}

#[cfg(any(feature = "log", feature = "tracing"))]
fn now() -> String {
    let millis = crate::unix_millis();
    let seconds = millis / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (seconds / 3600) % 24,
        (seconds / 60) % 60,
        seconds % 60,
        millis % 1000
    )
}

/// A `log` logger that keeps breadcrumbs and passes every record on.
#[cfg(feature = "log")]
pub struct BreadcrumbLogger<L> {
    inner: L,
}

#[cfg(feature = "log")]
impl<L: log::Log> BreadcrumbLogger<L> {
    pub fn new(inner: L) -> Self {
        BreadcrumbLogger { inner }
    }

    /// Makes this the global logger, at `level`.
    pub fn install(self, level: log::LevelFilter) -> Result<(), log::SetLoggerError>
    where
        L: 'static,
    {
        log::set_boxed_logger(Box::new(self))?;
        log::set_max_level(level);
        Ok(())
    }
}

#[cfg(feature = "log")]
impl<L: log::Log> log::Log for BreadcrumbLogger<L> {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        // Breadcrumbs are kept whatever the inner logger shows.
        metadata.level() <= log::max_level()
    }

    fn log(&self, entry: &log::Record<'_>) {
        record(format!(
            "{} {:<5} {}: {}",
            now(),
            entry.level(),
            entry.target(),
            entry.args()
        ));
        if self.inner.enabled(entry.metadata()) {
            self.inner.log(entry);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// A `log` logger that only keeps breadcrumbs, for applications with no
/// logger of their own.
#[cfg(feature = "log")]
pub struct NoLogger;

#[cfg(feature = "log")]
impl log::Log for NoLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        false
    }

    fn log(&self, _: &log::Record<'_>) {}

    fn flush(&self) {}
}

/// A `tracing` layer that keeps breadcrumbs of events.
#[cfg(feature = "tracing")]
pub struct BreadcrumbLayer;

#[cfg(feature = "tracing")]
impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for BreadcrumbLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _context: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if !self.0.is_empty() {
                    self.0.push(' ');
                }
                if field.name() == "message" {
                    self.0.push_str(&format!("{value:?}"));
                } else {
                    self.0.push_str(&format!("{}={value:?}", field.name()));
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let metadata = event.metadata();
        record(format!(
            "{} {:<5} {}: {}",
            now(),
            metadata.level(),
            metadata.target(),
            message.0
        ));
    }
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "tracing")]
    #[test]
    fn tracing_events_become_breadcrumbs() {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(super::BreadcrumbLayer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(order = 1042, "order booked");
        });
        let kept = super::snapshot();
        assert!(
            kept.iter()
                .any(|line| line.contains("order booked") && line.contains("order=1042")),
            "{kept:?}"
        );
    }

    #[test]
    fn only_the_last_records_are_kept() {
        for n in 0..(super::KEPT + 10) {
            super::record(format!("record {n}"));
        }
        let kept = super::snapshot();
        assert_eq!(kept.len(), super::KEPT);
        assert_eq!(kept.last().unwrap(), &format!("record {}", super::KEPT + 9));
    }
}
