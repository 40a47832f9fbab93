//! Delivery throughput for `benches/compare.py`: fills an outbox with
//! reports of about 50 KB, each a distinct crash, and flushes it to the SMTP
//! server on 127.0.0.1:$BENCH_SMTP_PORT. Prints messages per second.
//!
//! Run by `benches/compare.py` (it starts Postfix's smtp-sink first).

mod common;

use common::noisy;
use crashmail::delivery::{Delivery, Due};
use crashmail::outbox::Outbox;
use std::time::Instant;

fn main() {
    let Some(port) = std::env::var("BENCH_SMTP_PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
    else {
        eprintln!("delivery: set BENCH_SMTP_PORT (benches/compare.py does)");
        return;
    };
    let count: usize = std::env::var("BENCH_REPORTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
    let log_path = dir.path().join("app.log");
    // Incompressible text, so that each report zip is about 50 KB.
    let log = noisy(48 * 1024);
    std::fs::write(&log_path, &log).unwrap();
    for n in 0..count {
        let word: String = (0..6)
            .map(|k| (b'a' + ((n >> (k * 4)) % 26) as u8) as char)
            .collect();
        let panic = crashmail_handler::protocol::PanicRecord {
            protocol: crashmail_handler::protocol::PROTOCOL_VERSION,
            app_name: "orders".into(),
            app_version: "2.1.0".into(),
            pid: 4242,
            message: format!("crash {word}"),
            location: Some("src/orders.rs:10:5".into()),
            thread: "main".into(),
            backtrace: "   0: orders::book\n   1: orders::main\n".into(),
            native_frames: Vec::new(),
            breadcrumbs: Vec::new(),
            log_files: vec![log_path.clone()],
            log_sizes: Vec::new(),
            time_ms: 0,
        };
        let evidence = crashmail::assemble::CrashEvidence {
            app_name: "orders".into(),
            app_version: "2.1.0".into(),
            log_files: vec![log_path.clone()],
            panic: Some(panic),
            ..Default::default()
        };
        let contents = crashmail::assemble::assemble(evidence, 64 * 1024);
        outbox
            .add(&contents.meta.id.to_string(), &contents.to_zip().unwrap())
            .unwrap();
    }
    let ini = dir.path().join("AXIS.INI");
    std::fs::write(
        &ini,
        format!("[smtp]\nServer = 127.0.0.1:{port}\nSecurity = none\nDomain = example.com\nTo = support@example.com\n[report]\nMailsPerHour = 100000\n"),
    )
    .unwrap();
    let config = crashmail::config::load(&ini).unwrap();
    let started = Instant::now();
    let outcomes = Delivery {
        config: &config,
        outbox: &outbox,
    }
    .flush(Due::All, &mut |_, _| {})
    .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let sent = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, crashmail::delivery::Outcome::Sent))
        .count();
    let size = std::fs::read_dir(outbox.dir("sent"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0);
    println!(
        "sent={sent} seconds={seconds:.3} rate={:.1} report_zip_bytes={size}",
        sent as f64 / seconds
    );
}
