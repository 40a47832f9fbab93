//! `crashmail triage` over a Maildir, an mbox and a folder of zips.

mod common;

use common::*;
use std::process::Command;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/fixtures/reports/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn reports_from_every_kind_of_mailbox_group_by_signature() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    for n in 0..30 {
        std::fs::write(
            maildir.join("cur").join(format!("{n}.host:2,S")),
            another_report(&fixture("demo-segv.eml"), n),
        )
        .unwrap();
    }
    for n in 0..12 {
        std::fs::write(
            maildir.join("new").join(format!("p{n}.host")),
            another_report(&fixture("demo-panic.eml"), 100 + n),
        )
        .unwrap();
    }
    // A message still being delivered is not read.
    std::fs::write(maildir.join("tmp").join("partial"), b"Subject: half").unwrap();

    let mut mbox = Vec::new();
    for n in 0..3 {
        mbox.extend_from_slice(b"From support@example.com Thu Dec  3 10:00:00 2026\n");
        mbox.extend_from_slice(&another_report(&fixture("demo-panic.eml"), 200 + n));
        mbox.extend_from_slice(b"\n");
    }
    std::fs::write(dir.path().join("archive.mbox"), mbox).unwrap();

    let zips = dir.path().join("zips/nested");
    std::fs::create_dir_all(&zips).unwrap();
    let zip = crashmail::inspect::zip_from_email(&another_report(&fixture("demo-segv.eml"), 300))
        .unwrap();
    std::fs::write(zips.join("crash.zip"), zip).unwrap();
    std::fs::write(zips.join("notes.txt"), b"not a report").unwrap();

    let output = Command::new(crashmail_exe())
        .args(["triage", "--json"])
        .arg(&maildir)
        .arg(dir.path().join("archive.mbox"))
        .arg(dir.path().join("zips"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let triage: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(triage["reports"], 46);
    let groups = triage["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(
        groups[0]["count"], 31,
        "the SIGSEGV first: 30 in the Maildir and one zip"
    );
    assert!(groups[0]["signature"]
        .as_str()
        .unwrap()
        .starts_with("signal | SIGSEGV"));
    assert_eq!(groups[1]["count"], 15);
    assert_eq!(groups[1]["versions"], serde_json::json!(["0.1.0"]));
    assert_eq!(
        triage["skipped"].as_array().unwrap().len(),
        1,
        "notes.txt is named as skipped"
    );

    let table = Command::new(crashmail_exe())
        .arg("triage")
        .arg(&maildir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("42 report(s), 2 distinct crash(es)"),
        "{text}"
    );
    let first_row = text.lines().nth(1).unwrap();
    assert!(
        first_row.trim_start().starts_with("30 "),
        "sorted by count: {first_row}"
    );

    let later = Command::new(crashmail_exe())
        .args(["triage", "--since", "2099-01-01"])
        .arg(&maildir)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&later.stdout).contains("0 report(s)"));
}

#[test]
fn copies_of_one_report_count_once() {
    // The same report in the inbox and in a colleague's forward, and the
    // outbox's zip of it beside them: one crash.
    let dir = tempfile::tempdir().unwrap();
    let email = fixture("demo-segv.eml");
    std::fs::write(dir.path().join("inbox.eml"), &email).unwrap();
    std::fs::write(dir.path().join("copy.eml"), &email).unwrap();
    std::fs::write(
        dir.path().join("sent.zip"),
        crashmail::inspect::zip_from_email(&email).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("other.eml"), another_report(&email, 1)).unwrap();
    // A hidden file (an outbox's claim owner) is not a report to skip.
    std::fs::write(dir.path().join(".owner-123"), b"").unwrap();
    let output = Command::new(crashmail_exe())
        .arg("triage")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(
            "2 report(s) (2 more cop(ies) of the same reports counted once), 1 distinct crash(es)"
        ),
        "{text}"
    );
    assert!(!text.contains("skipped"), "{text}");
}

#[test]
fn a_path_that_is_not_there_is_named() {
    let output = Command::new(crashmail_exe())
        .args(["triage", "/nonexistent/reports"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("/nonexistent/reports: no such file or folder"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_since_that_is_not_a_date_is_a_bad_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(crashmail_exe())
        .args(["triage", "--since", "yesterday"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--since \"yesterday\": expected a date"),
        "{}",
        stderr(&output)
    );
    assert!(output.stdout.is_empty());
}

/// A report zip cut short after its report.json (a copy that stopped
/// half-way) still counts; one cut before it is named as unreadable.
#[test]
fn a_report_cut_short_after_its_report_json_still_counts() {
    let dir = tempfile::tempdir().unwrap();
    let zip = crashmail::inspect::zip_from_email(&fixture("demo-segv.eml")).unwrap();
    std::fs::write(dir.path().join("cut.zip"), &zip[..zip.len() * 3 / 4]).unwrap();
    std::fs::write(dir.path().join("stub.zip"), &zip[..20]).unwrap();
    let output = Command::new(crashmail_exe())
        .arg("triage")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("1 report(s), 1 distinct crash(es)"), "{text}");
    assert!(text.contains("signal | SIGSEGV"), "{text}");
    assert!(text.contains("1 report(s) could not be read:"), "{text}");
    assert!(text.contains("stub.zip: not a readable zip"), "{text}");
}
