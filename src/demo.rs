//! `crashmail demo`: a sample application crashes twice (a panic, then a
//! null-pointer write); each report is captured, zipped and emailed to a
//! loopback SMTP server, and the received reports are shown.

use crate::bundle::{self, MINIDUMP_DMP, REPORT_JSON, SUMMARY_TXT, SYSTEM_JSON};
use crate::inspect;
use crate::receiver::LoopbackReceiver;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long the demo waits for each email.
const MAIL_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Default)]
pub struct DemoOptions {
    pub out: Option<PathBuf>,
    pub ini: Option<PathBuf>,
}

/// A demo option that cannot work, said before anything runs (the error
/// [`run`] returns, inside its `anyhow::Error`).
#[derive(Debug, thiserror::Error)]
pub enum BadOption {
    #[error("--out {}: {why}", .path.display())]
    Out { path: PathBuf, why: String },
    /// `--ini` names a file that is missing or invalid.
    #[error(transparent)]
    Ini(crate::config::ConfigError),
    #[error("{}: [report] Enabled = no: crash reports are off, so the demo would have nothing to send (turn them on, or run the demo without --ini)", .0.display())]
    ReportsOff(PathBuf),
}

/// An I/O error naming its path.
fn at(path: &Path) -> impl FnOnce(std::io::Error) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("{}: {e}", path.display())
}

/// Runs the demo; true when both reports arrived complete. A bad option
/// is a [`BadOption`], found before anything runs.
pub fn run(options: DemoOptions) -> anyhow::Result<bool> {
    // The AXIS.INI first: a file that cannot be used would only show as
    // reports that never arrive.
    let config = match &options.ini {
        Some(ini) => {
            let config = crate::config::load(ini).map_err(BadOption::Ini)?;
            if !config.report.enabled {
                return Err(BadOption::ReportsOff(ini.clone()).into());
            }
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
            Some(config)
        }
        None => None,
    };
    let exe = std::env::current_exe()?;
    let out = match &options.out {
        Some(out) => {
            let bad = |why: String| BadOption::Out {
                path: out.clone(),
                why,
            };
            match std::fs::metadata(out) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return Err(bad("exists and is not a folder".into()).into()),
                Err(_) => std::fs::create_dir_all(out)
                    .map_err(|e| bad(format!("cannot create the folder: {e}")))?,
            }
            out.clone()
        }
        None => tempfile::Builder::new()
            .prefix("crashmail-demo-")
            .tempdir()
            .map_err(|e| anyhow::anyhow!("a temporary folder for the demo: {e}"))?
            .keep(),
    };
    println!("crashmail demo: working in {}", out.display());
    let work = out.join("work");
    crashmail_handler::create_private_dir(&work).map_err(at(&work))?;
    let outbox = work.join("outbox");

    let (receiver, ini) = match (&options.ini, &config) {
        (Some(ini), Some(config)) => {
            println!(
                "Using the SMTP server {}:{} of {}",
                config.smtp.host,
                config.smtp.port,
                ini.display()
            );
            (None, ini.clone())
        }
        _ => {
            let receiver = LoopbackReceiver::start()?;
            let ini = work.join("AXIS.INI");
            std::fs::write(
                &ini,
                format!(
                    "; Written by crashmail demo: a loopback SMTP receiver, no TLS on 127.0.0.1.\n\
                     [smtp]\nServer = 127.0.0.1\nPort = {}\nSecurity = none\nDomain = example.com\n\
                     From = crashmail@example.com\nTo = support@example.com\nTimeout = 10\n",
                    receiver.port()
                ),
            )
            .map_err(at(&ini))?;
            println!("Loopback SMTP receiver listening on {}", receiver.address());
            (Some(receiver), ini)
        }
    };

    let mut all_complete = true;
    for (step, kind) in ["panic", "segv"].into_iter().enumerate() {
        println!("\n=== {}. the sample application: {kind} ===", step + 1);
        // Each run logs into its own folder, so that each report carries
        // its own run's lines.
        let run_dir = work.join(kind);
        crashmail_handler::create_private_dir(&run_dir).map_err(at(&run_dir))?;
        let output = Command::new(&exe)
            .args(["sample-app", kind, "--log"])
            .arg(run_dir.join("app.log"))
            .env(crashmail_handler::OUTBOX_ENV, &outbox)
            .env(crate::config::AXIS_INI_ENV, &ini)
            // The application's stderr as a user sees it by default: the
            // panic message, not a second backtrace (the report has one).
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .output()?;
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            println!("  app stderr | {line}");
        }
        println!("  app ended: {}", describe_status(&output.status));

        // With the loopback server the demo keeps the email as received;
        // with a real one it cannot read the mailbox, and keeps the report
        // zip from the outbox's `sent/` folder instead.
        let (saved_path, message) = match &receiver {
            Some(receiver) => (
                out.join(format!("{}-{kind}.eml", step + 1)),
                receiver
                    .wait_for(step + 1, MAIL_WAIT)
                    .get(step)
                    .map(|m| m.data.clone())
                    .ok_or_else(|| format!("no report arrived within {MAIL_WAIT:?}")),
            ),
            None => (
                out.join(format!("{}-{kind}.zip", step + 1)),
                wait_for_sent(&outbox, step + 1, MAIL_WAIT),
            ),
        };
        let message = match message {
            Ok(message) => message,
            Err(why) => {
                println!("  {why}; see {}", outbox.join("watcher.log").display());
                all_complete = false;
                continue;
            }
        };
        std::fs::write(&saved_path, &message).map_err(at(&saved_path))?;
        match &receiver {
            Some(_) => println!("  email received and saved as {}", saved_path.display()),
            None => println!(
                "  report sent; its zip is saved as {}",
                saved_path.display()
            ),
        }
        match check_complete(&message, kind == "segv") {
            Ok(()) => {}
            Err(why) => {
                println!("  the report is incomplete: {why}");
                all_complete = false;
            }
        }
        match inspect::open(&saved_path) {
            Ok(report) => {
                println!();
                for line in inspect::render(
                    &report,
                    &inspect::ShowOptions {
                        log_lines: 3,
                        ..Default::default()
                    },
                )
                .lines()
                {
                    println!("  {line}");
                }
            }
            Err(e) => {
                println!("  cannot inspect: {e:#}");
                all_complete = false;
            }
        }
    }
    println!();
    if all_complete {
        match &receiver {
            Some(_) => println!(
                "Both reports arrived complete. The emails are in {}",
                out.display()
            ),
            None => println!(
                "Both reports were accepted by the server. Their zips are in {}",
                out.display()
            ),
        }
    } else {
        println!(
            "Something was missing; the watcher's log is {}",
            outbox.join("watcher.log").display()
        );
    }
    Ok(all_complete)
}

fn describe_status(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!(
            "killed by {}",
            crashmail_handler::protocol::signal_name(signal)
        ),
        _ => status.to_string(),
    }
}

/// The `count`-th report to reach the outbox's `sent/` folder.
fn wait_for_sent(outbox: &Path, count: usize, timeout: Duration) -> Result<Vec<u8>, String> {
    let deadline = std::time::Instant::now() + timeout;
    let Ok(opened) = crate::outbox::Outbox::open(outbox) else {
        return Err(format!("the outbox {} cannot be opened", outbox.display()));
    };
    loop {
        // Reports the watcher has finished with: sent, refused, or tried
        // and kept for later. The count-th of them is this step's.
        let mut finished: Vec<(std::time::SystemTime, &str, PathBuf)> = Vec::new();
        for state in [
            crate::outbox::SENT,
            crate::outbox::FAILED,
            crate::outbox::PENDING,
        ] {
            for entry in std::fs::read_dir(opened.dir(state))
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = entry.path();
                let Some(id) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                    continue;
                };
                if path.extension().is_none_or(|e| e != "zip") {
                    continue;
                }
                if state == crate::outbox::PENDING && opened.record(state, &id).attempts == 0 {
                    continue;
                }
                let time = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                finished.push((time, state, path));
            }
        }
        finished.sort_by_key(|(time, _, _)| *time);
        if let Some((_, state, path)) = finished.get(count - 1) {
            if *state == crate::outbox::SENT {
                return std::fs::read(path).map_err(|e| e.to_string());
            }
            let id = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let why = opened.record(state, &id).last_error.unwrap_or_default();
            return Err(format!("the report was not delivered ({state}): {why}"));
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("no report was sent within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The demo's promise: each email carries one zip with the report's entries;
/// the segfault's has a minidump naming SIGSEGV.
fn check_complete(message: &[u8], expect_minidump: bool) -> Result<(), String> {
    let zip = if message.starts_with(b"PK") {
        message.to_vec()
    } else {
        inspect::zip_from_email(message).ok_or("no zip attachment")?
    };
    let entries = bundle::read_zip_entries(&zip).map_err(|e| e.to_string())?;
    for required in [REPORT_JSON, SUMMARY_TXT, SYSTEM_JSON] {
        if !entries.contains_key(required) {
            return Err(format!("{required} is missing"));
        }
    }
    if !entries.keys().any(|name| name.starts_with("logs/")) {
        return Err("no log tail".into());
    }
    if expect_minidump {
        let dump = entries.get(MINIDUMP_DMP).ok_or("minidump.dmp is missing")?;
        if !dump.starts_with(b"MDMP") {
            return Err("minidump.dmp does not start with MDMP".into());
        }
    }
    Ok(())
}
