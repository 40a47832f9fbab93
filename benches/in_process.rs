//! In-process costs, with criterion: what the panic hook does before it
//! hands a panic to the watcher, bundling a report with 5 MB of logs, and
//! building its email. (The embedding call runs once per process; its cost
//! is measured whole-process in `crash_to_email` and `compare.py`.)
//!
//! Run with `cargo bench --bench in_process`.

mod common;

use common::noisy;
use criterion::{criterion_group, criterion_main, Criterion};

fn report_with_logs(dir: &std::path::Path) -> crashmail::bundle::ReportContents {
    let log = dir.join("app.log");
    std::fs::write(&log, noisy(5 * 1024 * 1024)).unwrap();
    let evidence = crashmail::assemble::CrashEvidence {
        app_name: "orders".into(),
        app_version: "2.1.0".into(),
        log_files: vec![log],
        panic: Some(crashmail_handler::protocol::PanicRecord {
            protocol: crashmail_handler::protocol::PROTOCOL_VERSION,
            app_name: "orders".into(),
            app_version: "2.1.0".into(),
            pid: 1,
            message: "bad index 7".into(),
            location: Some("src/orders.rs:10:5".into()),
            thread: "main".into(),
            backtrace: "   0: orders::book\n   1: orders::main\n".into(),
            native_frames: Vec::new(),
            breadcrumbs: Vec::new(),
            log_files: Vec::new(),
            log_sizes: Vec::new(),
            time_ms: 0,
        }),
        ..Default::default()
    };
    crashmail::assemble::assemble(evidence, 8 * 1024 * 1024)
}

fn benches(c: &mut Criterion) {
    c.bench_function("panic hook: capture up to the hand-off", |b| {
        b.iter(|| crashmail_handler::capture_panic_for_benchmarks("bad index 7"))
    });
    let dir = tempfile::tempdir().unwrap();
    let contents = report_with_logs(dir.path());
    let mut group = c.benchmark_group("report with 5 MB of logs");
    group.sample_size(10);
    group.bench_function("bundle (zip)", |b| b.iter(|| contents.to_zip().unwrap()));
    let zip = contents.to_zip().unwrap();
    let ini = dir.path().join("AXIS.INI");
    std::fs::write(&ini, "[smtp]\nServer = 127.0.0.1:25\nSecurity = none\nDomain = example.com\nTo = support@example.com\n").unwrap();
    let config = crashmail::config::load(&ini).unwrap();
    let summary = contents.summary();
    group.bench_function("build the email", |b| {
        b.iter(|| {
            crashmail::mail::report_message(
                &config.smtp,
                &contents.meta,
                &summary,
                &[],
                zip.clone(),
            )
            .unwrap()
            .formatted()
        })
    });
    group.finish();
}

criterion_group!(in_process, benches);
criterion_main!(in_process);
