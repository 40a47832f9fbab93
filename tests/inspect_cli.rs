//! `crashmail inspect` on reports received by the demo (see fixtures/README.md).

mod common;

use common::*;
use std::process::Command;

fn inspect(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(crashmail_exe())
        .arg("inspect")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr(&output),
    )
}

fn fixture(name: &str) -> String {
    format!("{}/fixtures/reports/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn segv_email_shows_reason_frames_and_log_tail() {
    let (ok, out, err) = inspect(&[&fixture("demo-segv.eml")]);
    assert!(ok, "{err}");
    for expected in [
        "App:        crashmail-sample-app 0.1.0",
        "Kind:       signal",
        "Reason:     SIGSEGV (SEGV_MAPERR) at 0x0",
        "Crashing thread (from report.json):",
        "crashmail::sample_app::write_through_null",
        "Threads:    1 in the minidump",
        "last line before the crash: segv",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[test]
fn panic_email_shows_the_panicking_function_first() {
    let (ok, out, err) = inspect(&[&fixture("demo-panic.eml")]);
    assert!(ok, "{err}");
    assert!(out.contains("Reason:     bad index 7"), "{out}");
    let frames: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with('#'))
        .collect();
    assert!(
        frames[0].contains("parse_order_line"),
        "top frame: {frames:?}"
    );
}

#[test]
fn json_output_is_report_json() {
    let (ok, out, err) = inspect(&["--json", &fixture("demo-panic.eml")]);
    assert!(ok, "{err}");
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["kind"], "panic");
    assert_eq!(value["panic"]["message"], "bad index 7");
}

#[test]
fn a_zip_and_an_extracted_folder_read_the_same_as_the_email() {
    let raw = std::fs::read(fixture("demo-segv.eml")).unwrap();
    let zip = crashmail::inspect::zip_from_email(&raw).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("report.zip");
    std::fs::write(&zip_path, &zip).unwrap();
    let folder = dir.path().join("extracted");
    for (name, bytes) in crashmail::bundle::read_zip_entries(&zip).unwrap() {
        let path = folder.join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let from_email = inspect(&[&fixture("demo-segv.eml")]).1;
    let from_zip = inspect(&[zip_path.to_str().unwrap()]).1;
    let from_folder = inspect(&[folder.to_str().unwrap()]).1;
    assert_eq!(from_email, from_zip);
    assert_eq!(from_email, from_folder);
}

#[test]
fn a_file_that_is_not_a_report_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "hello").unwrap();
    let (ok, _, err) = inspect(&[path.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("neither a zip nor an email"), "{err}");
}
