//! Whole-process timings of the crash path, printed as a table:
//! the cost of `install()` at start-up, and the time from a SIGSEGV to the
//! email accepted by a loopback SMTP server.
//!
//! Run with `cargo bench --bench crash_to_email`.

use crashmail::receiver::LoopbackReceiver;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

const RUNS: usize = 15;

fn main() {
    let exe = env!("CARGO_BIN_EXE_crashmail");
    let mut install_us = Vec::new();
    let mut crash_to_mail_ms = Vec::new();
    for run in 0..RUNS {
        let dir = tempfile::tempdir().unwrap();
        let receiver = LoopbackReceiver::start().unwrap();
        let ini = dir.path().join("AXIS.INI");
        std::fs::write(
            &ini,
            format!(
                "[smtp]\nServer = 127.0.0.1:{}\nSecurity = none\nDomain = example.com\nTo = support@example.com\n",
                receiver.port()
            ),
        )
        .unwrap();
        let output = Command::new(exe)
            .args(["sample-app", "segv", "--log"])
            .arg(dir.path().join("app.log"))
            .env("CRASHMAIL_OUTBOX", dir.path().join("outbox"))
            .env("AXIS_INI", &ini)
            .env(crashmail::sample_app::TIMING_ENV, "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let field = |name: &str| -> Option<u128> {
            stderr
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        };
        let messages = receiver.wait_for(1, Duration::from_secs(30));
        let (Some(install), Some(crash_at), Some(received)) = (
            field("install_us="),
            field("crash_at_unix_us="),
            messages.first().and_then(|m| m.received_at),
        ) else {
            eprintln!("run {run}: incomplete ({stderr})");
            continue;
        };
        let received_us = received.duration_since(UNIX_EPOCH).unwrap().as_micros();
        install_us.push(install as f64);
        crash_to_mail_ms.push((received_us.saturating_sub(crash_at)) as f64 / 1000.0);
    }
    println!(
        "{:<40} {:>10} {:>10} {:>10} {:>6}",
        "measure", "median", "min", "max", "runs"
    );
    print_row("install() at start-up (µs)", &mut install_us);
    print_row("SIGSEGV → email accepted (ms)", &mut crash_to_mail_ms);
}

fn print_row(name: &str, values: &mut [f64]) {
    if values.is_empty() {
        println!("{name:<40} no complete run");
        return;
    }
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    println!(
        "{name:<40} {median:>10.2} {:>10.2} {:>10.2} {:>6}",
        values[0],
        values[values.len() - 1],
        values.len()
    );
}
