//! A watcher that dies half-way through a report loses nothing: the next
//! `crashmail` run finishes the report from what the watcher left in `run/`.

mod common;

use common::*;
use crashmail::outbox::Outbox;
use crashmail_handler::protocol::{Hello, PROTOCOL_VERSION};

/// The pid of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn fixture_minidump() -> Vec<u8> {
    let raw = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/reports/demo-segv.eml"
    ))
    .unwrap();
    let zip = crashmail::inspect::zip_from_email(&raw).unwrap();
    crashmail::bundle::read_zip_entries(&zip)
        .unwrap()
        .remove("minidump.dmp")
        .unwrap()
}

#[test]
fn a_crash_note_and_its_dump_become_a_pending_report() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path()).unwrap();
    let run = outbox.dir(crashmail_handler::RUN_DIR);
    let pid = dead_pid();
    let dump = run.join(format!("{pid}-0.dmp"));
    std::fs::write(&dump, fixture_minidump()).unwrap();
    let log = dir.path().join("app.log");
    std::fs::write(&log, "before the crash\n").unwrap();
    let note = crashmail::watcher::CrashNote {
        hello: Hello {
            protocol: PROTOCOL_VERSION,
            app_name: "orders".into(),
            app_version: "2.1.0".into(),
            pid: 4242,
            exe: None,
            cwd: None,
            ini_path: None,
            log_files: vec![log],
            outbox_dir: dir.path().to_path_buf(),
            outbox_explicit: true,
            started_at_ms: 0,
        },
        panic: None,
        dump: Some(dump.clone()),
        abnormal_exit: false,
    };
    std::fs::write(
        run.join(format!("{pid}-1.crash.json")),
        serde_json::to_vec(&note).unwrap(),
    )
    .unwrap();

    let ids = crashmail::delivery::package_incoming(&outbox, None).unwrap();
    assert_eq!(ids.len(), 1);
    let zip = std::fs::read(outbox.dir("pending").join(format!("{}.zip", ids[0]))).unwrap();
    let entries = crashmail::bundle::read_zip_entries(&zip).unwrap();
    let report: serde_json::Value = serde_json::from_slice(&entries["report.json"]).unwrap();
    assert_eq!(report["app_name"], "orders");
    assert!(report["reason"].as_str().unwrap().starts_with("SIGSEGV"));
    assert!(report["notes"].to_string().contains("recovered"));
    assert_eq!(entries["logs/app.log"], b"before the crash\n");
    assert!(
        files_in(&run).is_empty(),
        "note and dump are gone once the report is safe: {:?}",
        files_in(&run)
    );
}

#[test]
fn notes_of_a_live_watcher_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path()).unwrap();
    let run = outbox.dir(crashmail_handler::RUN_DIR);
    // This test process is alive: its notes belong to a watcher at work.
    let dump = run.join(format!("{}-0.dmp", std::process::id()));
    std::fs::write(&dump, fixture_minidump()).unwrap();
    let ids = crashmail::delivery::package_incoming(&outbox, None).unwrap();
    assert!(ids.is_empty());
    assert!(dump.exists());
}

#[test]
fn a_dump_without_a_note_is_still_reported() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path()).unwrap();
    let dump = outbox
        .dir(crashmail_handler::RUN_DIR)
        .join(format!("{}-3.dmp", dead_pid()));
    std::fs::write(&dump, fixture_minidump()).unwrap();
    let ids = crashmail::delivery::package_incoming(&outbox, None).unwrap();
    assert_eq!(ids.len(), 1);
    assert!(!dump.exists());
}
