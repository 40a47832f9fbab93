//! `crashmail demo`, as the README tells a newcomer to run it.

mod common;

use common::*;
use std::process::Command;

#[test]
fn demo_leaves_two_complete_emails() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(crashmail_exe())
        .args(["demo", "--out"])
        .arg(out.path())
        .env_remove("AXIS_INI")
        .env_remove("CRASHMAIL_OUTBOX")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        stderr(&output)
    );
    assert!(stdout.contains("Both reports arrived complete"), "{stdout}");
    assert!(
        !stdout.contains("stack backtrace:"),
        "the application's stderr as a user sees it by default: {stdout}"
    );

    let panic = parse_mail(&std::fs::read(out.path().join("1-panic.eml")).unwrap());
    assert_eq!(report_json(&panic)["panic"]["message"], "bad index 7");
    let backtrace = String::from_utf8_lossy(&panic.entries["backtrace.txt"]).into_owned();
    assert!(backtrace.contains("parse_order_line"), "{backtrace}");

    let segv = parse_mail(&std::fs::read(out.path().join("2-segv.eml")).unwrap());
    assert!(segv.entries["minidump.dmp"].starts_with(b"MDMP"));
    assert_eq!(
        minidump_signal(&segv.entries["minidump.dmp"]),
        libc::SIGSEGV as u32
    );
    for mail in [&panic, &segv] {
        assert_eq!(mail.zip_attachments, 1);
        for entry in ["report.json", "summary.txt", "system.json"] {
            assert!(mail.entries.contains_key(entry), "{entry}");
        }
        assert!(mail.entries.keys().any(|k| k.starts_with("logs/")));
    }
    // A panic symbolised its own backtrace, mapping its debug files and its
    // executable again: the module list names each module once.
    let inspected = Command::new(crashmail_exe())
        .args(["inspect", "--json", "--threads"])
        .arg(out.path().join("1-panic.eml"))
        .output()
        .unwrap();
    let view: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    let modules: Vec<&str> = view["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().split(" (").next().unwrap())
        .collect();
    assert!(!modules.is_empty());
    let unique: std::collections::BTreeSet<&str> = modules.iter().copied().collect();
    assert_eq!(unique.len(), modules.len(), "{modules:?}");
    assert!(
        !modules.iter().any(|m| m.starts_with("/usr/lib/debug/")),
        "{modules:?}"
    );
    // Each report carries its own run's log, not the other run's lines.
    let segv_log = String::from_utf8_lossy(&segv.entries["logs/app.log"]).into_owned();
    assert!(!segv_log.contains("crash: panic"), "{segv_log}");
    assert!(segv_log.contains("crash: segv"), "{segv_log}");
}

#[test]
fn demo_with_an_ini_sends_through_that_server() {
    let harness = Harness::new();
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(crashmail_exe())
        .args(["demo", "--out"])
        .arg(out.path())
        .arg("--ini")
        .arg(&harness.ini)
        .env_remove("AXIS_INI")
        .env_remove("CRASHMAIL_OUTBOX")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        stderr(&output)
    );
    let received = harness.receiver.wait_for(2, MAIL_WAIT);
    assert_eq!(
        received.len(),
        2,
        "both reports went to the server named in the ini"
    );
    assert!(out.path().join("1-panic.zip").exists());
    assert!(out.path().join("2-segv.zip").exists());
}

#[test]
fn demo_with_an_ini_that_cannot_be_used_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let invalid = dir.path().join("AXIS.INI");
    std::fs::write(&invalid, "[smtp]\nServer = mail.example.com\nPort = abc\n").unwrap();
    let missing = dir.path().join("missing.ini");
    for (ini, why) in [(&missing, "cannot read"), (&invalid, "Port")] {
        let started = std::time::Instant::now();
        let output = Command::new(crashmail_exe())
            .args(["demo", "--out"])
            .arg(dir.path().join("out"))
            .arg("--ini")
            .arg(ini)
            .env_remove("AXIS_INI")
            .env_remove("CRASHMAIL_OUTBOX")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(10),
            "AXIS.INI missing or invalid:\n{stdout}\n{}",
            stderr(&output)
        );
        let err = stderr(&output);
        assert!(
            err.contains(&ini.display().to_string()) && err.contains(why),
            "{err}"
        );
        assert!(stdout.is_empty(), "nothing ran: {stdout}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "at once, not after waiting for reports"
        );
    }
    assert!(!dir.path().join("out").exists());
}

#[test]
fn demo_out_that_is_a_file_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("taken");
    std::fs::write(&file, "mine").unwrap();
    let output = Command::new(crashmail_exe())
        .args(["demo", "--out"])
        .arg(&file)
        .env_remove("AXIS_INI")
        .env_remove("CRASHMAIL_OUTBOX")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_eq!(
        stderr(&output).trim(),
        format!(
            "crashmail: --out {}: exists and is not a folder",
            file.display()
        )
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
}
