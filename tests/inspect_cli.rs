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
    assert_eq!(value["report"]["kind"], "panic");
    assert_eq!(value["report"]["panic"]["message"], "bad index 7");
    assert!(
        value["frames"][0]
            .as_str()
            .unwrap()
            .contains("parse_order_line"),
        "{}",
        value["frames"]
    );
    assert_eq!(value["logs"][0]["name"], "logs/app.log");
    assert!(value["logs"][0]["last_lines"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l.as_str().unwrap().contains("last line before the crash")));
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

#[test]
fn symbols_name_the_frames_of_a_binary_that_is_gone() {
    // The application runs from a copy that is then deleted, as on a
    // customer's machine; the support engineer has the same build elsewhere.
    let harness = Harness::new();
    let bin = harness.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let app = bin.join("orders-app");
    std::fs::copy(crashmail_exe(), &app).unwrap();
    let output = Command::new(&app)
        .args(["sample-app", "segv", "--log"])
        .arg(&harness.log)
        .env("CRASHMAIL_OUTBOX", &harness.outbox)
        .env("AXIS_INI", &harness.ini)
        .output()
        .unwrap();
    assert_eq!(exit_signal(&output), Some(libc::SIGSEGV));
    let eml = harness.dir.path().join("report.eml");
    std::fs::write(&eml, harness.first_message().data).unwrap();
    assert!(watchers_gone(
        &harness.outbox,
        std::time::Duration::from_secs(10)
    ));
    let symbols = harness.dir.path().join("symbols");
    std::fs::create_dir_all(&symbols).unwrap();
    std::fs::rename(&app, symbols.join("orders-app")).unwrap();

    let empty = harness.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (ok, without, err) =
        inspect(&["--symbols", empty.to_str().unwrap(), eml.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        without.contains("Crashing thread (from minidump.dmp)"),
        "{without}"
    );
    assert!(
        without.contains("orders-app + 0x"),
        "unnamed without the binary:\n{without}"
    );
    assert!(
        without.contains("Executable: ") && without.contains("orders-app ("),
        "the executable and its build id:\n{without}"
    );

    let (ok, with, err) = inspect(&[
        "--symbols",
        symbols.to_str().unwrap(),
        eml.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        with.contains("crashmail::sample_app::write_through_null"),
        "named with the build:\n{with}"
    );
}

#[test]
fn a_folder_that_is_not_a_report_is_a_clear_error() {
    // The source folder of this crate: files, folders, no report.json.
    let source = format!("{}/src", env!("CARGO_MANIFEST_DIR"));
    let (ok, out, err) = inspect(&[&source]);
    assert!(!ok, "{out}");
    assert!(out.is_empty(), "nothing shown: {out:?}");
    assert!(
        err.contains(&format!(
            "{source}: not a report: there is no report.json in this folder"
        )),
        "{err}"
    );

    // A folder of reports: the message points at them.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("demo-segv.eml"), dir.path().join("crash.eml")).unwrap();
    let (ok, _, err) = inspect(&[dir.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("inspect one of them") && err.contains("crash.eml"),
        "{err}"
    );
}

#[test]
fn a_symbols_folder_that_is_not_there_is_warned_about() {
    let (ok, out, err) = inspect(&[
        "--symbols",
        "/nonexistent/symbols",
        &fixture("demo-segv.eml"),
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains("warning: --symbols /nonexistent/symbols: No such file or directory"),
        "{err}"
    );
    assert!(out.contains("Reason:     SIGSEGV"), "still shown: {out}");
}

/// A mistyped report path is a bad command line (exit 2), for `inspect` and
/// `extract` alike, and nothing is written.
#[test]
fn a_report_path_that_is_not_there_is_a_bad_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("crash-typo.eml");
    let to = dir.path().join("out");
    for args in [
        vec!["inspect".into(), missing.clone().into_os_string()],
        vec![
            "extract".into(),
            missing.clone().into_os_string(),
            "--to".into(),
            to.clone().into_os_string(),
        ],
    ] {
        let output = Command::new(crashmail_exe()).args(&args).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(&format!("{}: no such file or folder", missing.display())),
            "{}",
            stderr(&output)
        );
        assert!(output.stdout.is_empty());
    }
    assert!(!to.exists());
}

/// `extract` of a folder (a report extracted already) says what it takes.
#[test]
fn extract_of_a_folder_says_what_it_takes() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(crashmail_exe())
        .arg("extract")
        .arg(dir.path())
        .arg("--to")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("is a folder: extract takes a report's zip"),
        "{}",
        stderr(&output)
    );
}
