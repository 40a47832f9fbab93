//! Reports from anywhere: hostile zips, broken zips, broken minidumps.
//! A clear error for the broken part, the rest still shown, no panic, and
//! nothing written outside the folder asked for.

mod common;

use common::*;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use zip::write::SimpleFileOptions;

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in entries {
        zip.start_file(*name, SimpleFileOptions::default()).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn crashmail(args: &[&str]) -> std::process::Output {
    Command::new(crashmail_exe()).args(args).output().unwrap()
}

/// Every file under `dir`, relative.
fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            assert!(
                !meta.file_type().is_symlink(),
                "a link was created: {}",
                entry.path().display()
            );
            if meta.is_dir() {
                stack.push(entry.path());
            }
            found.push(
                entry
                    .path()
                    .strip_prefix(dir)
                    .unwrap()
                    .display()
                    .to_string(),
            );
        }
    }
    found.sort();
    found
}

#[test]
fn extract_writes_nothing_outside_the_folder_and_follows_no_link() {
    let dir = tempfile::tempdir().unwrap();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default();
    for name in [
        "../../evil.txt",
        "/tmp/abs.txt",
        "..\\..\\win.txt",
        "..././x.txt",
    ] {
        zip.start_file(name, options).unwrap();
        zip.write_all(b"should not escape").unwrap();
    }
    zip.add_symlink("link", "/etc", options).unwrap();
    zip.start_file("link/passwd", options).unwrap();
    zip.write_all(b"not the real passwd").unwrap();
    zip.start_file("report.json", options).unwrap();
    zip.write_all(b"{}").unwrap();
    let bytes = zip.finish().unwrap().into_inner();
    let hostile = dir.path().join("hostile.zip");
    std::fs::write(&hostile, bytes).unwrap();
    let sandbox = dir.path().join("a/b/out");
    std::fs::create_dir_all(&sandbox).unwrap();
    let passwd_before = std::fs::read("/etc/passwd").unwrap();

    let output = crashmail(&[
        "extract",
        hostile.to_str().unwrap(),
        "--to",
        sandbox.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let warnings = stderr(&output);
    for name in [
        "../../evil.txt",
        "/tmp/abs.txt",
        "..\\..\\win.txt",
        "..././x.txt",
        "link",
    ] {
        assert!(
            warnings.contains(&format!("warning: {name}:")),
            "no warning for {name}:\n{warnings}"
        );
    }
    assert_eq!(
        tree(&sandbox),
        vec!["link", "link/passwd", "report.json"],
        "only safe entries, inside"
    );
    assert!(!dir.path().join("a/evil.txt").exists() && !dir.path().join("evil.txt").exists());
    assert!(
        !Path::new("/tmp/abs.txt").exists()
            || std::fs::read("/tmp/abs.txt").unwrap() != b"should not escape"
    );
    assert_eq!(
        std::fs::read("/etc/passwd").unwrap(),
        passwd_before,
        "the link was not followed"
    );
}

#[test]
fn a_zip_bomb_is_stopped_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("logs/app.log", options).unwrap();
    let zeros = vec![0u8; 1024 * 1024];
    for _ in 0..64 {
        zip.write_all(&zeros).unwrap();
    }
    let bomb = dir.path().join("bomb.zip");
    std::fs::write(&bomb, zip.finish().unwrap().into_inner()).unwrap();
    let out = dir.path().join("out");
    let output = crashmail(&[
        "extract",
        bomb.to_str().unwrap(),
        "--to",
        out.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("compression ratio"),
        "{}",
        stderr(&output)
    );
    assert!(
        !out.join("logs/app.log").exists(),
        "nothing of it was written"
    );
}

#[test]
fn a_truncated_zip_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let whole = zip_of(&[("report.json", b"{}"), ("summary.txt", b"text")]);
    let path = dir.path().join("cut.zip");
    // Cut inside the first entry's header: nothing of it can be read.
    std::fs::write(&path, &whole[..20]).unwrap();
    let output = crashmail(&["inspect", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("cut.zip") && err.contains("zip"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn missing_entries_and_a_broken_minidump_leave_the_rest_shown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial.zip");
    let mut broken_dump = b"MDMP".to_vec();
    broken_dump.extend_from_slice(&[0xff; 60]);
    std::fs::write(
        &path,
        zip_of(&[
            ("minidump.dmp", &broken_dump),
            ("logs/app.log", b"ok\n\xff\xfe raw\nlast words\n"),
        ]),
    )
    .unwrap();
    let output = crashmail(&["inspect", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(out.contains("problem: report.json is missing"), "{out}");
    assert!(out.contains("problem: minidump.dmp:"), "{out}");
    assert!(out.contains("last words"), "the log is still shown:\n{out}");
    assert!(
        out.contains("\u{fffd}\u{fffd} raw"),
        "invalid UTF-8 shown lossily:\n{out}"
    );
}

#[test]
fn a_report_json_of_the_wrong_shape_is_named_and_the_rest_shown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.zip");
    std::fs::write(
        &path,
        zip_of(&[("report.json", b"[1,2,3]"), ("summary.txt", b"still here")]),
    )
    .unwrap();
    let output = crashmail(&["inspect", "--json", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let view: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        view["problems"][0]
            .as_str()
            .unwrap()
            .contains("report.json is unreadable"),
        "{view}"
    );
}

#[test]
fn minidumps_with_absurd_streams_are_refused_without_exhausting_memory() {
    // A header claiming 2^32-1 streams at an offset past the end.
    let mut dump = Vec::new();
    dump.extend_from_slice(b"MDMP");
    dump.extend_from_slice(&0xa793u32.to_le_bytes());
    dump.extend_from_slice(&u32::MAX.to_le_bytes());
    dump.extend_from_slice(&0x20u32.to_le_bytes());
    dump.extend_from_slice(&[0u8; 16]);
    for stream in 0..8u32 {
        dump.extend_from_slice(&(stream + 3).to_le_bytes());
        dump.extend_from_slice(&u32::MAX.to_le_bytes());
        dump.extend_from_slice(&0x1000_0000u32.to_le_bytes());
    }
    let result = crashmail::dump::analyse(&dump, &[]);
    assert!(result.is_err() || result.unwrap().frames.is_empty());
}

#[test]
fn an_entry_over_the_size_limit_is_named_and_the_rest_of_the_report_shown() {
    let dir = tempfile::tempdir().unwrap();
    let report = crashmail::inspect::zip_from_email(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/reports/demo-segv.eml"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut entries = crashmail::bundle::read_zip_entries(&report).unwrap();
    let huge = vec![b'x'; 300 * 1024 * 1024];
    entries.insert("bomb.bin".into(), huge);
    let list: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
        .collect();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in list {
        zip.start_file(name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    let path = dir.path().join("with-bomb.zip");
    std::fs::write(&path, zip.finish().unwrap().into_inner()).unwrap();
    let output = crashmail(&["inspect", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(out.contains("Reason:     SIGSEGV"), "{out}");
    assert!(
        out.contains(
            "problem: bomb.bin: invalid Zip archive: entry bomb.bin is larger than the limit"
        ),
        "{out}"
    );
}

#[test]
fn an_email_cut_short_shows_its_summary_and_says_the_zip_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let email = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/reports/demo-segv.eml"
    ))
    .unwrap();
    let text = String::from_utf8_lossy(&email);
    let attachment = text.find("Content-Type: application/zip").unwrap();
    // Cut inside the attachment, a few lines into its base64.
    let path = dir.path().join("cut.eml");
    std::fs::write(&path, &email[..attachment + 2000]).unwrap();
    let output = crashmail(&["inspect", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        out.contains("Summary (report.json could not be read):"),
        "{out}"
    );
    assert!(out.contains("SIGSEGV"), "the email's own text: {out}");
    assert!(out.contains("problem: the attached zip: "), "{out}");
}

#[test]
fn an_empty_folder_is_not_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let output = crashmail(&["inspect", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("not a report: there is no report.json in this folder"),
        "{}",
        stderr(&output)
    );
}

/// The demo's SIGSEGV report zip.
fn segv_zip() -> Vec<u8> {
    crashmail::inspect::zip_from_email(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/reports/demo-segv.eml"
        ))
        .unwrap(),
    )
    .unwrap()
}

#[test]
fn a_zip_cut_short_shows_the_entries_before_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let whole = segv_zip();
    // Cut by 100 bytes: the directory at the end is gone, every entry is
    // still there.
    let path = dir.path().join("cut.zip");
    std::fs::write(&path, &whole[..whole.len() - 100]).unwrap();
    let output = crashmail(&["inspect", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let out = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "Reason:     SIGSEGV (SEGV_MAPERR) at 0x0",
        "Threads:    1 in the minidump",
        "last line before the crash: segv",
        "problem: the zip is cut short",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }

    // Cut in the middle of the minidump: what comes before it is shown,
    // the minidump is named as cut short.
    let minidump_at = whole
        .windows(12)
        .position(|w| w == b"minidump.dmp")
        .unwrap();
    let path = dir.path().join("half.zip");
    std::fs::write(&path, &whole[..minidump_at + 2000]).unwrap();
    let output = crashmail(&["inspect", "--json", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let view: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(view["report"]["kind"], "signal", "{view}");
    let problems = view["problems"].to_string();
    assert!(problems.contains("the zip is cut short"), "{problems}");
    assert!(problems.contains("minidump.dmp: "), "{problems}");

    // extract writes what is there, and says what is not.
    let out_dir = dir.path().join("out");
    let output = crashmail(&[
        "extract",
        path.to_str().unwrap(),
        "--to",
        out_dir.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("warning: the zip is cut short"),
        "{}",
        stderr(&output)
    );
    assert!(out_dir.join("report.json").is_file());
    assert!(
        !out_dir.join("minidump.dmp").exists(),
        "not half a minidump"
    );
}

#[test]
fn extract_to_a_file_names_it_and_says_what_is_wrong_once() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.zip");
    std::fs::write(&report, segv_zip()).unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "mine").unwrap();
    let output = crashmail(&[
        "extract",
        report.to_str().unwrap(),
        "--to",
        file.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let err = stderr(&output);
    assert_eq!(
        err.trim(),
        format!(
            "crashmail: --to {}: exists and is not a folder",
            file.display()
        )
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");

    // The library says the same, naming the folder.
    let error = crashmail::extract::extract(
        &segv_zip(),
        &file,
        crashmail::extract::ExtractLimits::default(),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("{}: exists and is not a folder", file.display())
    );
    assert!(std::error::Error::source(&error).is_none(), "said once");
}

/// Every control character but the line break, and the bidirectional
/// override and isolate marks: what could drive a terminal or disguise text.
fn unsafe_chars(text: &str) -> Vec<char> {
    text.chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c)
        })
        .collect()
}

/// What a hostile report puts in its fields: colours, a terminal title, a
/// line of its own, a right-to-left override.
const EVIL_REASON: &str = "evil \u{1b}[31mRED\u{1b}[0m reason\nSubject: injected";
const EVIL_APP: &str = "app\u{1b}]0;title\u{7}";

/// The entries of the demo's panic report, with every field a report can
/// carry made hostile; `edit` changes its report.json further.
fn hostile_panic_report(
    edit: impl FnOnce(&mut serde_json::Value),
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let zip = crashmail::inspect::zip_from_email(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/reports/demo-panic.eml"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut entries = crashmail::bundle::read_zip_entries(&zip).unwrap();
    let mut meta: serde_json::Value = serde_json::from_slice(&entries["report.json"]).unwrap();
    meta["reason"] = EVIL_REASON.into();
    meta["app_name"] = EVIL_APP.into();
    meta["app_version"] = "1.0\r\nReport id:  forged".into();
    meta["host"] = "host\u{9b}2J\u{7f}".into();
    meta["os"] = "Linux\u{202e}xuniL\u{2066}".into();
    meta["signature"] = "sig\nSubject: injected".into();
    meta["panic"]["message"] = EVIL_REASON.into();
    meta["panic"]["location"] = "src/x.rs:1\u{1b}[2J\nSubject: injected".into();
    meta["frames"] = serde_json::json!(["evil_fn\u{1b}[31m at src/x.rs:1\nSubject: injected"]);
    meta["notes"] = serde_json::json!(["a note\nSubject: injected\u{8}\u{8}"]);
    edit(&mut meta);
    entries.insert(
        "report.json".into(),
        serde_json::to_vec_pretty(&meta).unwrap(),
    );
    entries.insert(
        "breadcrumbs.txt".into(),
        b"crumb \x1b[31mone\x07\rSubject: injected\nSubject: injected\xe2\x80\xae\n".to_vec(),
    );
    entries.insert(
        "logs/evil\x1b[31m\u{202e}.log".into(),
        b"line \x1b]0;title\x07\n".to_vec(),
    );
    entries
}

fn zip_of_entries(entries: &std::collections::BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let list: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
        .collect();
    zip_of(&list)
}

#[test]
fn inspect_shows_hostile_report_fields_inert() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = zip_of_entries(&hostile_panic_report(|_| {}));
    // No frames in report.json: they come from backtrace.txt.
    let mut backtrace_only = hostile_panic_report(|meta| meta["frames"] = serde_json::json!([]));
    backtrace_only.insert(
        "backtrace.txt".into(),
        b"   0: evil_fn\x1b[31m\x07\n             at ./src/x.rs:1\x1b[2J\n".to_vec(),
    );
    // report.json unreadable: summary.txt is shown.
    let mut summary_only = hostile_panic_report(|meta| meta["kind"] = "no such kind".into());
    summary_only.insert(
        "summary.txt".into(),
        b"summary \x1b[31mRED\x07\nSubject: injected\x1b[0m\n".to_vec(),
    );
    for (name, zip, threads) in [
        ("fields.zip", hostile.clone(), false),
        ("threads.zip", hostile, true),
        ("backtrace.zip", zip_of_entries(&backtrace_only), false),
        ("summary.zip", zip_of_entries(&summary_only), false),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, zip).unwrap();
        let mut args = vec!["inspect"];
        if threads {
            args.push("--threads");
        }
        args.push(path.to_str().unwrap());
        let output = crashmail(&args);
        assert!(output.status.success(), "{name}: {}", stderr(&output));
        let out = String::from_utf8_lossy(&output.stdout);
        assert_eq!(unsafe_chars(&out), Vec::<char>::new(), "{name}:\n{out}");
        for line in out.lines() {
            assert!(
                !line.starts_with("Subject: injected") && !line.starts_with("Report id:  forged"),
                "{name}: a line of the report posed as inspect's own: {line:?} in\n{out}"
            );
        }
        assert_eq!(
            out.lines().filter(|l| l.starts_with("Report id:")).count(),
            usize::from(name != "summary.zip"),
            "{name}:\n{out}"
        );
        assert!(
            out.contains("RED"),
            "{name}: the reason is still shown:\n{out}"
        );
        if name != "summary.zip" {
            assert!(
                out.contains("evil_fn"),
                "{name}: frames still shown:\n{out}"
            );
        }
    }

    // --json is left as it was: JSON escapes the text, and keeps it whole.
    let path = dir.path().join("fields.zip");
    let output = crashmail(&["inspect", "--json", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let view: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(view["report"]["reason"], EVIL_REASON);
    assert_eq!(view["report"]["app_name"], EVIL_APP);
}

#[test]
fn extract_warnings_show_hostile_entry_names_inert() {
    let dir = tempfile::tempdir().unwrap();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default();
    // Refused: control characters in the name.
    zip.start_file("x\x1b[31my\x01.txt", options).unwrap();
    zip.write_all(b"data").unwrap();
    // Refused: climbs out.
    zip.start_file("../\x1b]0;title\x07/evil.txt", options)
        .unwrap();
    zip.write_all(b"data").unwrap();
    // A link, refused.
    zip.add_symlink("link\x1b[2J\u{202e}", "/etc", options)
        .unwrap();
    // Written under another name: the warning names both.
    zip.start_file("dir\\\u{202e}txt.exe", options).unwrap();
    zip.write_all(b"data").unwrap();
    zip.start_file("report.json", options).unwrap();
    zip.write_all(b"{}").unwrap();
    let path = dir.path().join("names.zip");
    std::fs::write(&path, zip.finish().unwrap().into_inner()).unwrap();
    let out = dir.path().join("out");
    let output = crashmail(&[
        "extract",
        path.to_str().unwrap(),
        "--to",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let err = stderr(&output);
    assert_eq!(unsafe_chars(&err), Vec::<char>::new(), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("warning: ")).count(),
        4,
        "one warning for each odd name:\n{err}"
    );
    assert!(
        err.contains("refused: control characters in the name"),
        "{err}"
    );
}
