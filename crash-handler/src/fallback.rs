//! Reports written from inside the application when no watcher is reachable.
//!
//! The panic record goes to `<outbox>/incoming/` as JSON (temporary name,
//! fsync, rename); the next `crashmail` run bundles and sends it. The signal
//! handler's equivalent lives in `native.rs`, since it must be signal-safe.

use crate::protocol::PanicRecord;
use crate::Installed;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

pub(crate) fn write_panic_record(
    installed: &Installed,
    record: &PanicRecord,
) -> std::io::Result<()> {
    let dir = installed.outbox_dir.join(crate::INCOMING_DIR);
    crate::create_private_dir(&dir)?;
    let name = format!("{}-{}.panic.json", record.pid, record.time_ms);
    let temporary = dir.join(format!(".{name}.tmp"));
    let body = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(&body)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, dir.join(name))?;
    Ok(())
}
