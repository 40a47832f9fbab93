//! No secret in any report: planted in the environment, on the command
//! line, in AXIS.INI and in a log line, then searched for everywhere the report went.

mod common;

use common::*;
use crashmail::receiver::{AuthMechanism, LoopbackReceiver, ReceiverOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const SECRETS: [&str; 4] = ["tok_example123", "pw123", "s3cret", "argv_pw_55"];

fn assert_clean(what: &str, bytes: &[u8]) {
    for secret in SECRETS {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} found in {what}"
        );
    }
}

/// Every file under `dir`, with zips searched entry by entry.
fn assert_tree_clean(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let mode = std::fs::symlink_metadata(&path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        if path.is_dir() {
            assert_eq!(mode, 0o700, "{} is private", path.display());
            assert_tree_clean(&path);
            continue;
        }
        // Every file: reports, records, logs, locks.
        assert_eq!(mode, 0o600, "{} is private", path.display());
        let bytes = std::fs::read(&path).unwrap();
        assert_clean(&path.display().to_string(), &bytes);
        if path.extension().is_some_and(|e| e == "zip") {
            for (name, content) in crashmail::bundle::read_zip_entries(&bytes).unwrap() {
                assert_clean(&format!("{}:{name}", path.display()), &content);
            }
        }
    }
}

#[test]
fn secrets_from_the_environment_the_ini_and_a_log_reach_no_report() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificates(dir.path(), "mail.example.com");
    let receiver = LoopbackReceiver::start_with(ReceiverOptions {
        tls: Some((cert, key)),
        credentials: Some(("support-bot".into(), "s3cret".into())),
        auth: vec![AuthMechanism::Plain],
        port: None,
    })
    .unwrap();
    let home = dir.path().join("home/a");
    let work = home.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let ini = dir.path().join("AXIS.INI");
    std::fs::write(
        &ini,
        format!(
            "[smtp]\nServer = 127.0.0.1:{}\nTlsServerName = mail.example.com\nCaFile = {}\nUser = support-bot\nPassword = s3cret\nDomain = example.com\nTo = support@example.com\n",
            receiver.port(),
            ca.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ini, std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = home.join("app.log");
    std::fs::write(
        &log,
        "user a logged in\nusing token tok_example123 through http://bob:pw123@proxy.example.com:8080\nsmtp password is s3cret\n",
    )
    .unwrap();
    let outbox = dir.path().join("outbox");
    for kind in ["panic", "segv"] {
        let status = Command::new("sh")
            .arg("-c")
            .arg("umask 022; exec \"$0\" sample-app \"$1\" --log \"$2\" --db-password=argv_pw_55 --verbose")
            .arg(crashmail_exe())
            .arg(kind)
            .arg(&log)
            .current_dir(&work)
            .env("HOME", &home)
            .env("USER", "a")
            .env("API_TOKEN", "tok_example123")
            .env("HTTPS_PROXY", "http://bob:pw123@proxy.example.com:8080")
            .env("CRASHMAIL_OUTBOX", &outbox)
            .env("AXIS_INI", &ini)
            .env_remove("XDG_STATE_HOME")
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success());
    }
    let messages = receiver.wait_for(2, MAIL_WAIT);
    assert_eq!(
        messages.len(),
        2,
        "both reports went through TLS with the password"
    );
    assert!(watchers_gone(&outbox, Duration::from_secs(20)));
    for message in &messages {
        assert_clean("the raw email", &message.data);
        let mail = parse_mail(&message.data);
        assert_clean("the email body", mail.text.as_bytes());
        for (name, bytes) in &mail.entries {
            assert_clean(name, bytes);
        }
        let system = String::from_utf8_lossy(&mail.entries["system.json"]).into_owned();
        assert!(
            system.contains("\"working_directory\": \"~/work\""),
            "{system}"
        );
        assert!(
            system.contains("--db-password=********** --verbose"),
            "the command line is shown with its secret masked: {system}"
        );
        let log = String::from_utf8_lossy(&mail.entries["logs/app.log"]).into_owned();
        assert!(
            log.contains("user a logged in"),
            "the one-letter user name is left alone: {log}"
        );
        assert!(log.contains("token **************"), "{log}");
    }
    let segv = messages
        .iter()
        .map(|m| parse_mail(&m.data))
        .find(|m| m.entries.contains_key("minidump.dmp"))
        .unwrap();
    let dump = &segv.entries["minidump.dmp"];
    assert!(
        dump.windows(10).any(|w| w == b"API_TOKEN="),
        "the environment stream is there, its secret masked"
    );
    assert_tree_clean(&outbox);
}
