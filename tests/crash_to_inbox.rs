//! A real child process crashes; its report must arrive at a real SMTP
//! server (mailin-embedded, in this process) complete and correct.

mod common;

use common::*;
use std::time::Duration;

const LAST_LOG_LINE: &str = "last line before the crash";

fn assert_common_envelope(mail: &ParsedMail) {
    assert_eq!(mail.from, "crashmail@example.com");
    assert_eq!(mail.to, vec!["support@example.com".to_string()]);
    assert_eq!(mail.zip_attachments, 1, "exactly one zip attachment");
    for entry in ["report.json", "summary.txt", "system.json", "logs/app.log"] {
        assert!(
            mail.entries.contains_key(entry),
            "{entry} missing; entries: {:?}",
            mail.entries.keys()
        );
    }
    let report = report_json(mail);
    let id = report["id"].as_str().expect("report id");
    assert_eq!(mail.zip_name, format!("crash-{id}.zip"));
    assert_eq!(mail.message_id, format!("crash-{id}@example.com"));
    assert!(
        mail.subject.contains("crashmail-sample-app"),
        "{}",
        mail.subject
    );
    assert!(
        mail.subject.contains(env!("CARGO_PKG_VERSION")),
        "{}",
        mail.subject
    );
    let log = String::from_utf8_lossy(&mail.entries["logs/app.log"]).into_owned();
    assert!(
        log.contains(LAST_LOG_LINE),
        "log tail without the last line: {log}"
    );
    assert_eq!(
        std::str::from_utf8(&mail.entries["summary.txt"])
            .unwrap()
            .trim(),
        mail.text.replace("\r\n", "\n").trim(),
        "the email body is the summary"
    );
}

#[test]
fn panic_on_the_main_thread_arrives_with_its_formatted_message() {
    let harness = Harness::new();
    let output = harness.run_sample("panic");
    assert_eq!(
        output.status.code(),
        Some(101),
        "a panic still exits with 101"
    );
    assert!(
        stderr(&output).contains("bad index 7"),
        "the panic message still reaches stderr"
    );

    let mail = parse_mail(&harness.first_message().data);
    assert_common_envelope(&mail);
    assert!(mail.subject.contains("bad index 7"), "{}", mail.subject);
    let report = report_json(&mail);
    assert_eq!(report["kind"], "panic");
    assert_eq!(report["reason"], "bad index 7");
    assert_eq!(report["panic"]["message"], "bad index 7");
    assert_eq!(report["panic"]["thread"], "main");
    assert!(report["panic"]["location"]
        .as_str()
        .unwrap()
        .contains("sample_app.rs:"));
    let backtrace = String::from_utf8_lossy(&mail.entries["backtrace.txt"]).into_owned();
    assert!(
        backtrace.contains("parse_order_line"),
        "backtrace names the panicking function: {backtrace}"
    );
    let breadcrumbs = String::from_utf8_lossy(&mail.entries["breadcrumbs.txt"]).into_owned();
    assert!(
        breadcrumbs.contains("sample app started, about to panic"),
        "the log records before the panic: {breadcrumbs}"
    );
    assert!(report["signature"]
        .as_str()
        .unwrap()
        .contains("parse_order_line"));
    // The watcher, done, leaves nothing in sending/.
    assert!(watchers_gone(&harness.outbox, Duration::from_secs(10)));
    let left = files_in(&harness.outbox.join("sending"));
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn panic_on_another_thread_names_that_thread() {
    let harness = Harness::new();
    let output = harness.run_sample("thread-panic");
    assert_eq!(output.status.code(), Some(101));
    let mail = parse_mail(&harness.first_message().data);
    assert_common_envelope(&mail);
    let report = report_json(&mail);
    assert_eq!(report["kind"], "panic");
    assert_eq!(report["panic"]["thread"], "worker");
    assert_eq!(report["reason"], "bad index 9");
}

#[test]
fn non_string_panic_payload_gets_a_clear_placeholder() {
    let harness = Harness::new();
    harness.run_sample("panic-any");
    let mail = parse_mail(&harness.first_message().data);
    let reason = report_json(&mail)["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("not a string"),
        "placeholder expected, got {reason:?}"
    );
}

#[test]
fn segfault_arrives_with_a_minidump_naming_sigsegv() {
    let harness = Harness::new();
    let output = harness.run_sample("segv");
    assert_eq!(
        exit_signal(&output),
        Some(libc::SIGSEGV),
        "the process still dies by SIGSEGV"
    );

    let mail = parse_mail(&harness.first_message().data);
    assert_common_envelope(&mail);
    let dump = &mail.entries["minidump.dmp"];
    assert!(dump.starts_with(b"MDMP"));
    assert_eq!(minidump_signal(dump), libc::SIGSEGV as u32);
    let system: serde_json::Value = serde_json::from_slice(&mail.entries["system.json"]).unwrap();
    assert!(
        system["process"]["resident"].as_u64().unwrap() > 0,
        "{system}"
    );
    assert!(
        system["process"]["command_line"]
            .as_str()
            .unwrap()
            .contains("sample-app segv"),
        "{system}"
    );
    assert!(system["cpu_count"].as_u64().unwrap() >= 1);
    let report = report_json(&mail);
    assert_eq!(report["kind"], "signal");
    assert!(
        report["reason"].as_str().unwrap().starts_with("SIGSEGV"),
        "{}",
        report["reason"]
    );
    assert!(mail.subject.contains("SIGSEGV"), "{}", mail.subject);
    assert!(
        report["signature"]
            .as_str()
            .unwrap()
            .contains("write_through_null"),
        "native frames are named from the binary's own debug info: {}",
        report["signature"]
    );
}

#[test]
fn abort_arrives_with_a_minidump_naming_sigabrt() {
    let harness = Harness::new();
    let output = harness.run_sample("abort");
    assert_eq!(
        exit_signal(&output),
        Some(libc::SIGABRT),
        "the process still dies by SIGABRT"
    );
    let mail = parse_mail(&harness.first_message().data);
    assert_common_envelope(&mail);
    assert_eq!(
        minidump_signal(&mail.entries["minidump.dmp"]),
        libc::SIGABRT as u32
    );
    assert!(report_json(&mail)["reason"]
        .as_str()
        .unwrap()
        .starts_with("SIGABRT"));
}

#[test]
fn clean_exit_sends_nothing_and_leaves_no_watcher_behind() {
    let harness = Harness::new();
    let output = harness.run_sample("exit");
    assert!(output.status.success());
    assert!(
        watchers_gone(&harness.outbox, Duration::from_secs(5)),
        "watcher(s) {:?} still running after the application exited",
        live_watchers(&harness.outbox)
    );
    // The watcher logs the application's greeting before it can see the
    // application go.
    assert!(
        harness.watcher_log().contains("INFO: watching"),
        "the watcher was up before the exit: {}",
        harness.watcher_log()
    );
    assert!(
        harness
            .receiver
            .wait_for(1, Duration::from_millis(300))
            .is_empty(),
        "no report for a clean exit"
    );
    assert!(files_in(&harness.outbox.join("pending")).is_empty());
    assert!(files_in(&harness.outbox.join("sent")).is_empty());
}

#[test]
fn application_that_exits_before_its_watcher_connects_leaves_no_watcher_behind() {
    let harness = Harness::new();
    // `true` is not the sample app: run the sample with an immediate exit by
    // giving it an unknown kind, which returns at once after install.
    let output = harness.run_sample("no-such-kind");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        watchers_gone(&harness.outbox, Duration::from_secs(5)),
        "watcher(s) {:?} outlived an application that never greeted them",
        live_watchers(&harness.outbox)
    );
    assert!(harness
        .receiver
        .wait_for(1, Duration::from_millis(300))
        .is_empty());
}

#[test]
fn log_with_invalid_utf8_arrives_byte_for_byte() {
    let harness = Harness::new();
    std::fs::write(&harness.log, b"ok\n\xff\xfe raw\n").unwrap();
    harness.run_sample("panic");
    let mail = parse_mail(&harness.first_message().data);
    let on_disk = std::fs::read(&harness.log).unwrap();
    assert_eq!(mail.entries["logs/app.log"], on_disk);
    assert!(on_disk.starts_with(b"ok\n\xff\xfe raw\n"));

    // The support engineer reads the received email: the lines are shown,
    // the invalid bytes as replacement characters, and inspect succeeds.
    let eml = harness.dir.path().join("received.eml");
    std::fs::write(&eml, &harness.first_message().data).unwrap();
    let output = harness
        .crashmail()
        .args(["inspect", eml.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(shown.contains("\u{fffd}\u{fffd} raw"), "{shown}");
}

#[test]
fn the_log_tail_is_as_long_as_axis_ini_says() {
    let harness = Harness::new();
    // 40 KB of numbered lines before the application starts.
    let earlier: String = (0..2000)
        .map(|n| format!("line {n:05} of before\n"))
        .collect();
    std::fs::write(&harness.log, &earlier).unwrap();
    harness.set_report_lines("LogTailBytes = 1K\n");
    harness.run_sample("panic");
    let mail = parse_mail(&harness.first_message().data);
    let on_disk = std::fs::read(&harness.log).unwrap();
    assert!(on_disk.len() > 40_000);
    let tail = &mail.entries["logs/app.log"];
    assert_eq!(tail.len(), 1024);
    assert_eq!(
        tail[..],
        on_disk[on_disk.len() - 1024..],
        "the file's last 1 KiB"
    );
}

#[test]
fn a_log_file_dated_before_1980_is_stored_without_error() {
    // Zip timestamps start in 1980; a file restored from an old archive or
    // touched by a broken clock must still travel.
    let harness = Harness::new();
    let old_log = harness.dir.path().join("old.log");
    std::fs::write(&old_log, b"written long ago\n").unwrap();
    let long_ago = std::time::UNIX_EPOCH + Duration::from_secs(86_400 * 365 * 5);
    std::fs::File::options()
        .append(true)
        .open(&old_log)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    harness.set_report_lines(&format!("LogFiles = {}\n", old_log.display()));
    harness.run_sample("panic");
    let mail = parse_mail(&harness.first_message().data);
    assert_eq!(mail.entries["logs/old.log"], b"written long ago\n");
    assert!(
        mail.entries.contains_key("logs/app.log"),
        "{:?}",
        mail.entries.keys()
    );
}

#[test]
fn without_a_watcher_a_panic_waits_in_the_outbox_and_the_next_run_sends_it() {
    let harness = Harness::new();
    let output = harness
        .sample_app("panic")
        .env(
            "CRASHMAIL_WATCHER",
            harness.dir.path().join("no-such-watcher"),
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(101));
    let incoming = files_in(&harness.outbox.join("incoming"));
    assert_eq!(
        incoming.len(),
        1,
        "one record left by the application: {incoming:?}"
    );
    assert!(harness
        .receiver
        .wait_for(1, Duration::from_millis(300))
        .is_empty());
    // The log as it was at the panic; then the application runs again and
    // logs on before the report is bundled.
    let at_the_panic = std::fs::read(&harness.log).unwrap();
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&harness.log)
        .unwrap();
    std::io::Write::write_all(&mut log, b"LATER: the next run started fine\n").unwrap();

    harness.flush_outbox();
    let mail = parse_mail(&harness.first_message().data);
    let report = report_json(&mail);
    assert_eq!(report["reason"], "bad index 7");
    assert!(mail.entries.contains_key("backtrace.txt"));
    assert_eq!(
        mail.entries["logs/app.log"], at_the_panic,
        "the tail ends at the panic"
    );
    let notes = report["notes"].to_string();
    assert!(
        notes.contains("the 33 bytes written to")
            && notes.contains("after the crash were left out"),
        "{notes}"
    );
    assert!(files_in(&harness.outbox.join("incoming")).is_empty());
    assert_eq!(
        files_in(&harness.outbox.join("sent"))
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "zip"))
            .count(),
        1
    );
}

#[test]
fn server_down_keeps_the_report_pending() {
    // A port nothing listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let receiver = crashmail::receiver::LoopbackReceiver::start().unwrap();
    let harness = Harness::with_server(
        receiver,
        &format!("Server = 127.0.0.1\nPort = {port}\nSecurity = none\n"),
    );
    harness.run_sample("panic");
    assert!(
        watchers_gone(&harness.outbox, Duration::from_secs(30)),
        "the watcher must give up on a dead server within its timeouts"
    );
    assert!(
        harness.watcher_log().contains("kept for a later try"),
        "watcher.log: {}",
        harness.watcher_log()
    );
    let pending: Vec<_> = files_in(&harness.outbox.join("pending"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "zip"))
        .collect();
    assert_eq!(pending.len(), 1, "the report waits in pending/");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pending[0].with_extension("json")).unwrap()).unwrap();
    assert_eq!(record["attempts"], 1);
    assert!(record["last_error"]
        .as_str()
        .unwrap()
        .contains(&port.to_string()));
}

/// Without a watcher the application's environment is gone by the time
/// its record is bundled: secrets its log writes out by name, and secrets
/// in the bundling process's own environment, are masked all the same.
#[test]
fn without_a_watcher_the_log_tail_still_loses_its_secrets() {
    let harness = Harness::new();
    std::fs::write(
        &harness.log,
        "config API_TOKEN=tok_example123 loaded\nproxy http://bob:pw123@proxy.example.com:8080\nsigned in with zz_bare_secret_42\n",
    )
    .unwrap();
    let output = harness
        .sample_app("panic")
        .env("API_TOKEN", "tok_example123")
        .env(
            "CRASHMAIL_WATCHER",
            harness.dir.path().join("no-such-watcher"),
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(101));
    let flush = harness
        .crashmail()
        .args(["outbox", "flush"])
        .env("DEPLOY_SECRET", "zz_bare_secret_42")
        .output()
        .unwrap();
    assert!(flush.status.success(), "flush failed: {}", stderr(&flush));
    let raw = harness.first_message().data;
    let mail = parse_mail(&raw);
    let log = String::from_utf8_lossy(&mail.entries["logs/app.log"]).into_owned();
    assert!(log.contains("API_TOKEN=**************"), "{log}");
    for secret in ["tok_example123", "pw123", "zz_bare_secret_42"] {
        assert!(!log.contains(secret), "{secret} in the log tail: {log}");
        for (name, bytes) in &mail.entries {
            assert!(
                !String::from_utf8_lossy(bytes).contains(secret),
                "{secret} in {name}"
            );
        }
        assert!(!String::from_utf8_lossy(&raw).contains(secret));
    }
}

#[test]
fn without_a_watcher_a_segfault_leaves_a_record_that_names_the_application() {
    let harness = Harness::new();
    let output = harness
        .sample_app("segv")
        .env(
            "CRASHMAIL_WATCHER",
            harness.dir.path().join("no-such-watcher"),
        )
        .output()
        .unwrap();
    assert_eq!(
        exit_signal(&output),
        Some(libc::SIGSEGV),
        "still dies by SIGSEGV"
    );
    let records = files_in(&harness.outbox.join("incoming"));
    assert_eq!(records.len(), 1, "{records:?}");
    harness.flush_outbox();
    let mail = parse_mail(&harness.first_message().data);
    let report = report_json(&mail);
    assert_eq!(report["app_name"], "crashmail-sample-app");
    assert_eq!(report["kind"], "signal");
    assert!(
        report["reason"].as_str().unwrap().starts_with("SIGSEGV"),
        "{}",
        report["reason"]
    );
    assert!(
        report["notes"].to_string().contains("no watcher"),
        "{}",
        report["notes"]
    );
}

#[test]
fn records_left_without_a_watcher_are_sent_when_axis_ini_names_another_outbox() {
    let harness = Harness::new();
    // The application does not read AXIS.INI: without a watcher its record
    // goes to its own default outbox, under XDG_STATE_HOME.
    let configured = harness.dir.path().join("configured-outbox");
    let state = harness.dir.path().join("state");
    harness.set_report_lines(&format!("Outbox = {}\n", configured.display()));
    let output = harness
        .sample_app("segv")
        .env_remove("CRASHMAIL_OUTBOX")
        .env("XDG_STATE_HOME", &state)
        .env(
            "CRASHMAIL_WATCHER",
            harness.dir.path().join("no-such-watcher"),
        )
        .output()
        .unwrap();
    assert_eq!(exit_signal(&output), Some(libc::SIGSEGV));
    assert_eq!(files_in(&state.join("crashmail/incoming")).len(), 1);

    let flush = harness
        .crashmail()
        .env_remove("CRASHMAIL_OUTBOX")
        .env("XDG_STATE_HOME", &state)
        .args(["outbox", "flush"])
        .output()
        .unwrap();
    assert!(flush.status.success(), "{}", stderr(&flush));
    let report = report_json(&parse_mail(&harness.first_message().data));
    assert_eq!(report["app_name"], "crashmail-sample-app");
    assert!(files_in(&state.join("crashmail/incoming")).is_empty());
    assert_eq!(
        files_in(&configured.join("sent")).len(),
        2,
        "the zip and its record"
    );
}

#[test]
fn flush_exit_code_says_reports_are_still_pending_even_when_none_was_due() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let receiver = crashmail::receiver::LoopbackReceiver::start().unwrap();
    let harness = Harness::with_server(
        receiver,
        &format!("Server = 127.0.0.1:{port}\nSecurity = none\n"),
    );
    harness.run_sample("panic");
    assert!(watchers_gone(&harness.outbox, Duration::from_secs(30)));
    let flush = harness
        .crashmail()
        .args(["outbox", "flush", "--due"])
        .output()
        .unwrap();
    assert_eq!(
        flush.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&flush.stdout)
    );
    let list = harness
        .crashmail()
        .args(["outbox", "list"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&list.stdout);
    assert!(
        table.contains("pending")
            && table.contains("crashmail-sample-app")
            && table.contains("bad index 7"),
        "{table}"
    );
}

#[test]
fn the_outbox_named_in_axis_ini_is_used_when_the_application_names_none() {
    let harness = Harness::new();
    let configured = harness.dir.path().join("configured-outbox");
    harness.set_report_lines(&format!("Outbox = {}\n", configured.display()));
    let home = harness.dir.path().join("home");
    let output = harness
        .sample_app("panic")
        .env_remove("CRASHMAIL_OUTBOX")
        .env_remove("XDG_STATE_HOME")
        .env("HOME", &home)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(101));
    harness.first_message();
    let default_outbox = home.join(".local/state/crashmail");
    assert!(watchers_gone(&default_outbox, Duration::from_secs(10)));
    let sent: Vec<_> = files_in(&configured.join("sent"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "zip"))
        .collect();
    assert_eq!(
        sent.len(),
        1,
        "the report went through the configured outbox"
    );
    // The watcher's log follows the reports into that outbox.
    let configured_log =
        std::fs::read_to_string(configured.join("watcher.log")).unwrap_or_default();
    assert!(
        configured_log.contains("stored at") && configured_log.contains("sent to"),
        "{configured_log}"
    );
    let started_log =
        std::fs::read_to_string(default_outbox.join("watcher.log")).unwrap_or_default();
    assert!(
        started_log.contains(&format!(
            "this watcher's log goes on in {}",
            configured.join("watcher.log").display()
        )),
        "{started_log}"
    );
}

/// `[report] Outbox` names a folder that cannot be made (a file is in the
/// way): the crash is still reported, through the application's own
/// outbox, and the watcher says where it went.
#[test]
fn a_configured_outbox_that_cannot_be_made_does_not_lose_the_crash() {
    let harness = Harness::new();
    let in_the_way = harness.dir.path().join("a-file");
    std::fs::write(&in_the_way, b"not a folder").unwrap();
    harness.set_report_lines(&format!(
        "Outbox = {}\n",
        in_the_way.join("outbox").display()
    ));
    let home = harness.dir.path().join("home");
    let output = harness
        .sample_app("panic")
        .env_remove("CRASHMAIL_OUTBOX")
        .env_remove("XDG_STATE_HOME")
        .env("HOME", &home)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(101));
    let default_outbox = home.join(".local/state/crashmail");
    assert!(watchers_gone(&default_outbox, Duration::from_secs(10)));
    let log = std::fs::read_to_string(default_outbox.join("watcher.log")).unwrap_or_default();
    let mail = parse_mail(&harness.first_message().data);
    assert_eq!(report_json(&mail)["reason"], "bad index 7");
    assert!(
        log.contains("cannot be used")
            && log.contains(&format!(
                "reports go to the outbox {}",
                default_outbox.display()
            )),
        "{log}"
    );
    assert_eq!(
        files_in(&default_outbox.join("sent"))
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "zip"))
            .count(),
        1
    );
}

#[test]
fn the_email_has_an_html_body_with_the_summary_and_nothing_external() {
    let harness = Harness::new();
    harness.run_sample("panic");
    let raw = harness.first_message().data;
    let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
    let html = parsed
        .body_html(0)
        .expect("an HTML alternative")
        .into_owned();
    for expected in [
        "bad index 7",
        "crashmail-sample-app",
        "parse_order_line",
        "Report id",
    ] {
        assert!(
            html.contains(expected),
            "{expected} missing from the HTML body"
        );
    }
    for forbidden in ["<script", "http://", "https://", " src=", "url("] {
        assert!(
            !html.to_ascii_lowercase().contains(forbidden),
            "{forbidden} in the HTML body"
        );
    }
    let text = parsed.body_text(0).unwrap();
    assert!(
        text.contains("Reason:     bad index 7"),
        "the text body stays"
    );
}

#[test]
fn a_burst_of_the_same_crash_at_once_sends_one_mail_and_holds_the_rest() {
    let harness = Harness::new();
    let children: Vec<_> = (0..6)
        .map(|_| {
            harness
                .sample_app("panic")
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert_eq!(child.wait().unwrap().code(), Some(101));
    }
    assert!(
        watchers_gone(&harness.outbox, Duration::from_secs(30)),
        "{}",
        harness.watcher_log()
    );
    assert_eq!(
        harness.receiver.messages().len(),
        1,
        "one mail for six equal crashes:\n{}",
        harness.watcher_log()
    );
    let pending: Vec<_> = files_in(&harness.outbox.join("pending"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "zip"))
        .collect();
    assert_eq!(pending.len(), 5, "the repeats wait for their digest");
}

#[test]
fn a_panic_whose_report_cannot_be_written_still_ends_as_a_panic_and_says_why() {
    let harness = Harness::new();
    // The outbox path is a regular file: nothing can be written under it.
    std::fs::write(&harness.outbox, b"not a folder").unwrap();
    let started = std::time::Instant::now();
    let output = harness.run_sample("panic");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        output.status.code(),
        Some(101),
        "the panic's own exit status"
    );
    let err = stderr(&output);
    assert!(
        err.contains("bad index 7"),
        "the panic message still shows: {err}"
    );
    assert_eq!(
        err.matches("crashmail: the crash report could not be written")
            .count(),
        1,
        "the hook ran once: {err}"
    );
    // Where and why.
    let said = format!(
        "could not be written into {}: Not a directory",
        harness.outbox.join("incoming").display()
    );
    assert!(err.contains(&said), "{err}");
}

/// A crash while AXIS.INI is broken: the report waits in the outbox, `outbox
/// list` says why (the file, line and key), and once the file is fixed a
/// flush sends it.
#[test]
fn a_report_made_under_a_broken_axis_ini_waits_saying_why_and_goes_once_fixed() {
    let harness = Harness::new();
    let good = std::fs::read_to_string(&harness.ini).unwrap();
    std::fs::write(
        &harness.ini,
        good.replace("Security = none", "Security = sometimes"),
    )
    .unwrap();
    let output = harness.run_sample("panic");
    assert_eq!(output.status.code(), Some(101));
    assert!(watchers_gone(&harness.outbox, Duration::from_secs(30)));
    assert!(harness.receiver.messages().is_empty());
    let left = files_in(&harness.outbox.join("sending"));
    assert!(left.is_empty(), "{left:?}");

    let list = harness
        .crashmail()
        .args(["outbox", "list"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&list.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("pending"))
        .unwrap_or_else(|| panic!("no pending report:\n{table}"));
    assert!(
        row.contains("not tried:") && row.contains("AXIS.INI:4: [smtp] Security"),
        "{table}"
    );

    std::fs::write(&harness.ini, good).unwrap();
    harness.flush_outbox();
    let mail = parse_mail(&harness.first_message().data);
    assert_eq!(report_json(&mail)["reason"], "bad index 7");
    // Senders that are done leave nothing in sending/.
    let left = files_in(&harness.outbox.join("sending"));
    assert!(left.is_empty(), "{left:?}");
}
