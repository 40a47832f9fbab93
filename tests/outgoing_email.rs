//! The application's own emails, `crashmail send` and `crashmail compose`,
//! and the safety of every header.

mod common;

use common::*;
use crashmail::outbox::{Outbox, PENDING};
use crashmail::outgoing::{Email, Mailer, SendOutcome};
use crashmail::receiver::LoopbackReceiver;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn mailer(dir: &Path, port: u16) -> Mailer {
    let config = config_for(dir, port, "", "");
    Mailer::new(config, Outbox::open(dir.join("outbox")).unwrap())
}

/// The raw header block of a received message, unfolded lines kept as sent.
fn header_lines(raw: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_string();
    head.split("\r\n").map(str::to_string).collect()
}

fn crashmail_with(dir: &Path, port: u16) -> Command {
    let config = config_for(dir, port, "", "");
    let mut command = Command::new(crashmail_exe());
    command
        .env("AXIS_INI", &config.path)
        .env("CRASHMAIL_OUTBOX", dir.join("outbox"))
        .env_remove("AXIS_HOME");
    command
}

#[test]
fn send_now_delivers_text_html_and_attachments_and_says_so() {
    let receiver = LoopbackReceiver::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mailer = mailer(dir.path(), receiver.port());
    let email = Email::new("Order 1042 received", "Thank you.\n")
        .to("customer@example.com")
        .cc("desk@example.com")
        .html("<p>Thank you.</p>")
        .attach("invoice.txt", "text/plain", b"total: 10".to_vec());
    let outcome = mailer.send_now(&email).unwrap();
    let SendOutcome::Delivered { id } = outcome else {
        panic!("{outcome:?}");
    };
    let messages = receiver.wait_for(1, MAIL_WAIT);
    assert_eq!(
        messages[0].rcpt_to.len(),
        2,
        "To and Cc are both recipients"
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(&messages[0].data)
        .unwrap();
    assert_eq!(parsed.subject(), Some("Order 1042 received"));
    assert_eq!(parsed.body_text(0).unwrap().trim(), "Thank you.");
    assert!(parsed.body_html(0).unwrap().contains("<p>Thank you.</p>"));
    assert_eq!(parsed.attachments().count(), 1);
    assert!(parsed.message_id().unwrap().contains(&id));
    assert_eq!(zips_in(mailer.outbox(), "sent"), 1);
}

#[test]
fn send_returns_once_queued_and_delivery_follows() {
    let receiver = LoopbackReceiver::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mailer = mailer(dir.path(), receiver.port());
    let id = mailer
        .send(&Email::new("Nightly summary", "All good.").to("ops@example.com"))
        .unwrap();
    assert!(!id.is_empty());
    assert_eq!(receiver.wait_for(1, MAIL_WAIT).len(), 1);
}

#[test]
fn send_now_to_a_server_that_is_down_queues_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mailer = mailer(dir.path(), unused_port());
    let outcome = mailer
        .send_now(&Email::new("x", "y").to("ops@example.com"))
        .unwrap();
    assert!(matches!(outcome, SendOutcome::Queued { .. }), "{outcome:?}");
    assert_eq!(zips_in(mailer.outbox(), PENDING), 1);
}

#[test]
fn the_send_command_has_an_exit_code_for_each_outcome() {
    let receiver = LoopbackReceiver::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let attachment = dir.path().join("report.txt");
    std::fs::write(&attachment, "details").unwrap();
    let delivered = crashmail_with(dir.path(), receiver.port())
        .args([
            "send",
            "--to",
            "ops@example.com",
            "--subject",
            "Hello",
            "--body",
            "Text",
            "--now",
            "--attach",
        ])
        .arg(&attachment)
        .output()
        .unwrap();
    assert_eq!(delivered.status.code(), Some(0), "{}", stderr(&delivered));
    assert!(String::from_utf8_lossy(&delivered.stdout).starts_with("delivered"));

    let queued = crashmail_with(dir.path(), receiver.port())
        .args(["send", "--to", "ops@example.com", "--subject", "Later"])
        .stdin(std::fs::File::open(&attachment).unwrap())
        .output()
        .unwrap();
    assert_eq!(queued.status.code(), Some(0), "{}", stderr(&queued));
    assert!(String::from_utf8_lossy(&queued.stdout).starts_with("queued"));
    assert_eq!(
        receiver.wait_for(2, MAIL_WAIT).len(),
        2,
        "delivery follows a queued message"
    );

    let down = crashmail_with(dir.path(), unused_port())
        .args([
            "send",
            "--to",
            "ops@example.com",
            "--subject",
            "x",
            "--body",
            "y",
            "--now",
        ])
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(3), "queued for a later try");

    let refusing = ScriptedPeer::start(|c| {
        c.send("220 ok");
        while let Some(line) = c.recv() {
            if line.starts_with("RCPT") {
                c.send("550 5.1.1 no such user");
            } else if line == "QUIT" {
                c.send("221 bye");
                return;
            } else {
                c.send("250 ok");
            }
        }
    });
    let refused = crashmail_with(dir.path(), refusing.port)
        .args([
            "send",
            "--to",
            "nobody@example.com",
            "--subject",
            "x",
            "--body",
            "y",
            "--now",
        ])
        .output()
        .unwrap();
    assert_eq!(
        refused.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&refused.stdout)
    );
    assert!(String::from_utf8_lossy(&refused.stdout).contains("no such user"));

    let no_config = Command::new(crashmail_exe())
        .args([
            "send",
            "--to",
            "ops@example.com",
            "--subject",
            "x",
            "--body",
            "y",
        ])
        .env("AXIS_INI", dir.path().join("missing.ini"))
        .output()
        .unwrap();
    assert_eq!(no_config.status.code(), Some(10));

    // A valid AXIS.INI and an outbox that cannot be made: not a
    // configuration error (10) but a failure naming the folder.
    let in_the_way = dir.path().join("a-file");
    std::fs::write(&in_the_way, b"x").unwrap();
    let no_outbox = crashmail_with(dir.path(), receiver.port())
        .env("CRASHMAIL_OUTBOX", in_the_way.join("outbox"))
        .args([
            "send",
            "--to",
            "ops@example.com",
            "--subject",
            "x",
            "--body",
            "y",
        ])
        .output()
        .unwrap();
    assert_eq!(no_outbox.status.code(), Some(1));
    let said = String::from_utf8_lossy(&no_outbox.stderr);
    assert!(
        said.contains(&in_the_way.join("outbox").display().to_string()),
        "{said}"
    );

    // compose: a file to attach that is not there is a bad command line.
    let no_attachment = crashmail_with(dir.path(), receiver.port())
        .args(["compose", "--no-client", "--attach"])
        .arg(dir.path().join("missing.zip"))
        .output()
        .unwrap();
    assert_eq!(no_attachment.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_attachment.stderr).contains("missing.zip: no such file"));

    let smuggled = crashmail_with(dir.path(), receiver.port())
        .args([
            "send",
            "--to",
            "ops@example.com\r\nBcc: attacker@example.net",
            "--subject",
            "x",
            "--body",
            "y",
        ])
        .output()
        .unwrap();
    assert_eq!(smuggled.status.code(), Some(2), "{}", stderr(&smuggled));
}

#[test]
fn a_panic_message_cannot_add_headers() {
    let receiver = LoopbackReceiver::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
    queue_report(
        &outbox,
        "boom\r\nBcc: attacker@example.net\r\n\r\nfake",
        b"log\n",
    );
    let config = config_for(dir.path(), receiver.port(), "", "");
    crashmail::delivery::Delivery {
        config: &config,
        outbox: &outbox,
    }
    .flush(crashmail::delivery::Due::All, &mut |_, _| {})
    .unwrap();
    let messages = receiver.wait_for(1, MAIL_WAIT);
    assert_eq!(
        messages[0].rcpt_to,
        vec!["support@example.com".to_string()],
        "no extra recipient"
    );
    let headers = header_lines(&messages[0].data);
    assert_eq!(
        headers
            .iter()
            .filter(|l| l.to_ascii_lowercase().starts_with("subject:"))
            .count(),
        1
    );
    assert!(
        !headers
            .iter()
            .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
        "{headers:?}"
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(&messages[0].data)
        .unwrap();
    assert!(
        parsed
            .subject()
            .unwrap()
            .contains("boom Bcc: attacker@example.net fake"),
        "{:?}",
        parsed.subject()
    );
}

#[test]
fn a_long_non_ascii_subject_is_encoded_within_the_limits_and_decodes_back() {
    let receiver = LoopbackReceiver::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let subject: String = "Übergröße für Straße "
        .repeat(15)
        .chars()
        .take(300)
        .collect();
    assert_eq!(subject.chars().count(), 300);
    let outcome = mailer(dir.path(), receiver.port())
        .send_now(&Email::new(subject.clone(), "body").to("ops@example.com"))
        .unwrap();
    assert!(matches!(outcome, SendOutcome::Delivered { .. }));
    let raw = &receiver.wait_for(1, MAIL_WAIT)[0].data;
    for line in header_lines(raw) {
        assert!(line.len() <= 998, "header line of {} octets", line.len());
        for word in line.split_whitespace().filter(|w| w.starts_with("=?")) {
            assert!(
                word.len() <= 75,
                "encoded word of {} characters: {word}",
                word.len()
            );
        }
    }
    let parsed = mail_parser::MessageParser::default().parse(raw).unwrap();
    assert_eq!(parsed.subject(), Some(subject.trim_end()));
}

#[test]
fn body_lines_starting_with_a_dot_arrive_unchanged() {
    let receiver = LoopbackReceiver::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = "log excerpt:\n.\n.hidden\n..two\nend\n";
    mailer(dir.path(), receiver.port())
        .send_now(&Email::new("dots", text).to("ops@example.com"))
        .unwrap();
    let raw = &receiver.wait_for(1, MAIL_WAIT)[0].data;
    let parsed = mail_parser::MessageParser::default().parse(raw).unwrap();
    assert_eq!(parsed.body_text(0).unwrap().replace("\r\n", "\n"), text);
}

fn report_fixture() -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/reports/demo-segv.eml"
    ))
}

#[test]
fn compose_in_the_terminal_asks_previews_and_sends() {
    use expectrl::{ControlCode, Expect};
    let receiver = LoopbackReceiver::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut command = crashmail_with(dir.path(), receiver.port());
    command
        .args(["compose", "--no-client", "--attach"])
        .arg(report_fixture())
        .env_remove("EDITOR");
    let mut session = expectrl::Session::spawn(command).unwrap();
    session.set_expect_timeout(Some(Duration::from_secs(20)));
    session.expect("To [support@example.com]: ").unwrap();
    session.send_line("").unwrap();
    session
        .expect("Subject [[crash] crashmail-sample-app 0.1.0: SIGSEGV")
        .unwrap();
    session.expect("]: ").unwrap();
    session.send_line("").unwrap();
    session
        .expect("Message (end with Ctrl-D on an empty line):")
        .unwrap();
    session
        .send_line("The customer saw this at 10:02.")
        .unwrap();
    session.send_line(".hidden line").unwrap();
    session.send(ControlCode::EndOfTransmission).unwrap();
    session.expect("--- end of preview ---").unwrap();
    session.expect("Send it? (yes/no) [no]: ").unwrap();
    session.send_line("yes").unwrap();
    session.expect("Sent (").unwrap();
    let messages = receiver.wait_for(1, MAIL_WAIT);
    let parsed = mail_parser::MessageParser::default()
        .parse(&messages[0].data)
        .unwrap();
    assert!(parsed
        .subject()
        .unwrap()
        .starts_with("[crash] crashmail-sample-app 0.1.0: SIGSEGV"));
    let text = parsed.body_text(0).unwrap().replace("\r\n", "\n");
    assert!(
        text.contains("The customer saw this at 10:02.\n.hidden line"),
        "{text:?}"
    );
    assert_eq!(messages[0].rcpt_to, vec!["support@example.com".to_string()]);
    assert_eq!(parsed.attachments().count(), 1);
}

/// A stand-in for `xdg-email` that records its arguments, one per line.
fn fake_xdg_email(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("xdg-email");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > {}\n",
            dir.join("args").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn compose_hands_the_draft_to_the_desktop_mail_client() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_xdg_email(dir.path());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let output = crashmail_with(dir.path(), unused_port())
        .args(["compose", "--attach"])
        .arg(report_fixture())
        .env("PATH", &path)
        .env("DISPLAY", ":99")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let args: Vec<String> = std::fs::read_to_string(dir.path().join("args"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let subject = crashmail::compose::subject_from_attachments(&[report_fixture()]).unwrap();
    assert_eq!(
        args,
        vec![
            "--utf8".to_string(),
            "--subject".to_string(),
            subject,
            "--attach".to_string(),
            report_fixture().display().to_string(),
            "support@example.com".to_string(),
        ]
    );
}

#[test]
fn compose_client_choices_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    // --client without a graphical session: refused, clearly.
    let output = crashmail_with(dir.path(), unused_port())
        .args(["compose", "--client"])
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("no desktop mail client"),
        "{}",
        stderr(&output)
    );
    // --no-client with a client available: the terminal asks.
    let bin = fake_xdg_email(dir.path());
    let output = crashmail_with(dir.path(), unused_port())
        .args(["compose", "--no-client"])
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .env("DISPLAY", ":99")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("To [support@example.com]"));
    assert!(!dir.path().join("args").exists(), "the client was not used");
}

#[test]
fn outbox_list_keeps_every_cell_on_its_row_and_away_from_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let mailer = mailer(dir.path(), unused_port());
    let hostile = "Backup\r\ndone \u{1b}[31mred\u{1b}[0m \u{1b}]0;owned\u{7} \u{9b}2J end";
    mailer
        .queue(&Email::new(hostile, "text").to("ops@example.com"))
        .unwrap();
    // A crash report beside it, its reason as hostile.
    queue_report(mailer.outbox(), hostile, b"log line\n");
    let output = Command::new(crashmail_exe())
        .args(["outbox", "list", "--outbox"])
        .arg(dir.path().join("outbox"))
        .env_remove("AXIS_INI")
        .env_remove("AXIS_HOME")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let table = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        !table.contains(['\u{1b}', '\u{7}', '\r', '\u{9b}']),
        "control characters reach the terminal: {table:?}"
    );
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "a header and one row each: {table:?}");
    let email_row = lines.iter().find(|l| l.contains("(email)")).unwrap();
    assert!(
        email_row.contains("Backup  done") && email_row.contains("[31mred"),
        "the subject, on its row: {email_row:?}"
    );
    let report_row = lines.iter().find(|l| l.contains("orders 2.1.0")).unwrap();
    assert!(report_row.contains("Backup"), "{report_row:?}");
}

#[test]
fn a_file_the_send_command_line_names_must_be_there() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.log");
    for flag in ["--attach", "--body-file", "--html-file"] {
        let output = crashmail_with(dir.path(), unused_port())
            .args(["send", "--to", "ops@example.com", "--subject", "x", flag])
            .arg(&missing)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{flag}: a bad command line: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(&format!("{flag} {}", missing.display())),
            "{flag}: the path named: {}",
            stderr(&output)
        );
    }
    let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
    assert_eq!(zips_in(&outbox, PENDING), 0, "nothing queued");
}
