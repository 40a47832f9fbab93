//! Every way a process can die, with `crash-handler/examples/crashy.rs`
//! embedding crashmail as the README shows: exactly one delivered report of
//! the right kind and reason, and the process dying the way it dies without
//! crashmail. In debug and release builds, and under `panic = "abort"`.

mod common;

use common::*;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a kind must produce: no report, or one of this kind whose reason
/// contains this text.
struct Expected {
    kind: &'static str,
    report: Option<(&'static str, &'static str)>,
}

const KINDS: &[Expected] = &[
    Expected {
        kind: "segv",
        report: Some(("signal", "SIGSEGV")),
    },
    Expected {
        kind: "segv-thread",
        report: Some(("signal", "SIGSEGV")),
    },
    Expected {
        kind: "bus",
        report: Some(("signal", "SIGBUS")),
    },
    Expected {
        kind: "bus-thread",
        report: Some(("signal", "SIGBUS")),
    },
    Expected {
        kind: "ill",
        report: Some(("signal", "SIGILL")),
    },
    Expected {
        kind: "ill-thread",
        report: Some(("signal", "SIGILL")),
    },
    Expected {
        kind: "fpe",
        report: Some(("signal", "SIGFPE")),
    },
    Expected {
        kind: "fpe-thread",
        report: Some(("signal", "SIGFPE")),
    },
    Expected {
        kind: "abort",
        report: Some(("signal", "SIGABRT")),
    },
    Expected {
        kind: "abort-thread",
        report: Some(("signal", "SIGABRT")),
    },
    Expected {
        kind: "trap",
        report: Some(("signal", "SIGTRAP")),
    },
    Expected {
        kind: "trap-thread",
        report: Some(("signal", "SIGTRAP")),
    },
    Expected {
        kind: "stack-overflow",
        report: Some(("signal", "stack overflow")),
    },
    Expected {
        kind: "stack-overflow-thread",
        report: Some(("signal", "stack overflow")),
    },
    Expected {
        kind: "stack-overflow-pthread",
        report: Some(("signal", "stack overflow")),
    },
    Expected {
        kind: "panic",
        report: Some(("panic", "bad index 7")),
    },
    Expected {
        kind: "panic-thread",
        report: Some(("panic", "bad index 9")),
    },
    Expected {
        kind: "panic-thread-join",
        report: Some(("panic", "bad index 9")),
    },
    Expected {
        kind: "panic-string",
        report: Some(("panic", "order 1042 is missing")),
    },
    Expected {
        kind: "boom",
        report: Some(("panic", "boom")),
    },
    Expected {
        kind: "panic-any",
        report: Some(("panic", "not a string")),
    },
    Expected {
        kind: "double-panic",
        report: Some(("panic", "first panic")),
    },
    Expected {
        kind: "panic-logger-lock",
        report: Some(("panic", "panic while the logger is locked")),
    },
    Expected {
        kind: "double-free",
        report: Some(("signal", "SIGABRT")),
    },
    Expected {
        kind: "kill-segv",
        report: Some(("signal", "sent by another process")),
    },
    Expected {
        kind: "sigkill",
        report: Some(("abnormal-exit", "killed by SIGKILL")),
    },
    Expected {
        kind: "sigterm",
        report: None,
    },
    Expected {
        kind: "exec",
        report: None,
    },
    Expected {
        kind: "exit-at-once",
        report: Some((
            "abnormal-exit",
            "exited with status 4 without a clean shutdown",
        )),
    },
    Expected {
        kind: "exit-3",
        report: None,
    },
    Expected {
        kind: "clean",
        report: None,
    },
];

fn death(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => "unknown".into(),
    }
}

/// Runs one kind with and without crashmail; returns a failure, if any.
fn check_kind(crashy: &std::path::Path, expected: &Expected) -> Option<String> {
    let harness = Harness::new();
    let run = |with_crashmail: bool| {
        let mut command = harness.crashy(crashy, expected.kind);
        if !with_crashmail {
            command.env("CRASHY_WITHOUT_CRASHMAIL", "1");
        }
        let started = Instant::now();
        let status = status_within(&mut command, Duration::from_secs(60));
        (status, started.elapsed())
    };
    let kind = expected.kind;
    let (without, with, took) = match (run(false), run(true)) {
        ((Ok(without), _), (Ok(with), took)) => (without, with, took),
        ((Err(why), _), _) => return Some(format!("{kind} without crashmail: {why}")),
        (_, (Err(why), _)) => return Some(format!("{kind} with crashmail: {why}")),
    };
    // Rust's runtime lets a process run on after one SIGSEGV sent with
    // kill(); with crashmail it ends by that signal, as the sender asked.
    let expected_death = if kind == "kill-segv" {
        format!("signal {}", libc::SIGSEGV)
    } else {
        death(&without)
    };
    if death(&with) != expected_death {
        return Some(format!(
            "{kind}: dies by {} with crashmail, expected {expected_death} ({} without)",
            death(&with),
            death(&without)
        ));
    }
    if kind == "panic-logger-lock" {
        // Counted from crashy's start: the report is in within 5 s.
        let limit = Duration::from_secs(5).saturating_sub(took);
        if harness.receiver.wait_for(1, limit).is_empty() {
            return Some(format!("{kind}: no report within 5 s"));
        }
    }
    if !watchers_gone(&harness.outbox, Duration::from_secs(30)) {
        return Some(format!("{kind}: the watcher is still running"));
    }
    let messages = harness.receiver.messages();
    match (expected.report, messages.len()) {
        (None, 0) => None,
        (None, n) => Some(format!("{kind}: {n} report(s) for an orderly end")),
        (Some(_), n) if n != 1 => Some(format!(
            "{kind}: {n} reports instead of one; watcher.log:\n{}",
            harness.watcher_log()
        )),
        (Some((report_kind, reason)), _) => {
            let mail = parse_mail(&messages[0].data);
            let report = report_json(&mail);
            let actual_kind = report["kind"].as_str().unwrap_or_default();
            let actual_reason = report["reason"].as_str().unwrap_or_default();
            if actual_kind != report_kind || !actual_reason.contains(reason) {
                return Some(format!("{kind}: a {actual_kind} report \"{actual_reason}\", expected {report_kind} \"{reason}\""));
            }
            if report["app_name"] != "crashy" {
                return Some(format!(
                    "{kind}: the report names the application {}, not crashy (its binary)",
                    report["app_name"]
                ));
            }
            let log = String::from_utf8_lossy(&mail.entries["logs/app.log"]).into_owned();
            if !log.contains(&format!("last line before the crash: {kind}")) {
                return Some(format!("{kind}: the log tail lacks the last line: {log:?}"));
            }
            // The thread that crashed, by the name crashy gave it.
            let thread = match kind {
                "stack-overflow-thread" => Some("small-stack"),
                kind if kind.ends_with("-thread") => Some("worker"),
                _ => None,
            };
            if let Some(thread) = thread {
                let named = if report_kind == "panic" {
                    &report["panic"]["thread"]
                } else {
                    &report["signal"]["thread_name"]
                };
                if named != thread {
                    return Some(format!(
                        "{kind}: the crashing thread is named {named}, not {thread}"
                    ));
                }
            }
            if report_kind == "panic" {
                // crashy logs through crashmail's BreadcrumbLogger.
                let breadcrumbs = mail
                    .entries
                    .get("breadcrumbs.txt")
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                let traced = format!("about to crash kind={kind}");
                if !breadcrumbs.contains(&format!("last line before the crash: {kind}"))
                    || !breadcrumbs.contains(&traced)
                {
                    return Some(format!(
                        "{kind}: breadcrumbs.txt lacks the last record: {breadcrumbs:?}"
                    ));
                }
            }
            if kind == "kill-segv" {
                // The sender and how it sent, as crashy logged its pid (the
                // last run's: the run without crashmail logged first).
                let sender = log
                    .lines()
                    .filter_map(|line| line.strip_prefix("SIGSEGV comes from pid "))
                    .next_back()
                    .unwrap_or("?");
                let named = format!("(pid {sender}, with kill(), SI_USER)");
                if !actual_reason.contains(&named) {
                    return Some(format!("{kind}: \"{actual_reason}\" does not say {named}"));
                }
            }
            None
        }
    }
}

fn check_all(profile: &'static str) {
    let crashy = crashy(profile);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(expected) = KINDS.get(index) else {
                    break;
                };
                if let Some(failure) = check_kind(&crashy, expected) {
                    failures.lock().unwrap().push(failure);
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} kind(s) failed ({profile}):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_kind_in_a_debug_build() {
    check_all("dev");
}

#[test]
fn every_kind_in_a_release_build() {
    check_all("release");
}

#[test]
fn a_panic_under_panic_abort_is_one_panic_report_at_the_panic_site() {
    for profile in ["panic-abort", "release-panic-abort"] {
        let crashy = crashy(profile);
        let harness = Harness::new();
        let status = status_within(
            harness.crashy(&crashy, "boom").stderr(Stdio::null()),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGABRT),
            "panic = \"abort\" still aborts ({profile})"
        );
        // One report, not a second for the SIGABRT.
        let (_, report) = the_one_report(&harness);
        assert_eq!(report["kind"], "panic", "{profile}");
        assert_eq!(report["panic"]["message"], "boom", "{profile}");
        assert!(
            report["panic"]["location"]
                .as_str()
                .unwrap()
                .contains("crashy.rs"),
            "{profile}: {}",
            report["panic"]["location"]
        );
        assert!(
            report["frames"][0]
                .as_str()
                .unwrap()
                .starts_with("crashy::boom"),
            "{profile}: {}",
            report["frames"]
        );
    }
}

#[test]
fn a_failing_exit_status_is_reported_when_asked() {
    let crashy = crashy("dev");
    let harness = Harness::new();
    harness.set_report_lines("ReportExitCodes = yes\n");
    for (kind, expected) in [("exit-3", Some("exited with status 3")), ("clean", None)] {
        let status = Command::new(&crashy)
            .arg(kind)
            .env("CRASHY_LOG", &harness.log)
            .env("CRASHMAIL_OUTBOX", &harness.outbox)
            .env("AXIS_INI", &harness.ini)
            .env("CRASHMAIL_WATCHER", crashmail_exe())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(if kind == "clean" { 0 } else { 3 }));
        assert!(watchers_gone(&harness.outbox, Duration::from_secs(20)));
        let messages = harness.receiver.messages();
        match expected {
            Some(reason) => {
                assert_eq!(messages.len(), 1, "{}", harness.watcher_log());
                let mail = parse_mail(&messages[0].data);
                let report = report_json(&mail);
                assert_eq!(report["kind"], "abnormal-exit");
                assert!(
                    report["reason"].as_str().unwrap().contains(reason),
                    "{}",
                    report["reason"]
                );
                let log = String::from_utf8_lossy(&mail.entries["logs/app.log"]).into_owned();
                assert!(log.contains("last line before the crash: exit-3"), "{log}");
            }
            None => assert_eq!(messages.len(), 1, "a clean exit adds no report"),
        }
    }
}

/// A short-lived program (a command-line tool) that fails before its
/// watcher has connected: the failing exit waits for the link, and the
/// exit status is still reported when asked.
#[test]
fn a_failing_exit_at_start_up_is_reported_when_asked() {
    let harness = Harness::new();
    harness.set_report_lines("ReportExitCodes = yes\n");
    let status = harness
        .crashy(&crashy("dev"), "exit-3")
        .env("CRASHY_AT_ONCE", "1")
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3));
    assert!(watchers_gone(&harness.outbox, Duration::from_secs(20)));
    let (_, report) = the_one_report(&harness);
    assert_eq!(report["kind"], "abnormal-exit");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("exited with status 3"),
        "{}",
        report["reason"]
    );
}
