//! `crashmail setup`: writes only what changes, then checks the server.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn setup(args: &[&str], cwd: &Path) -> (i32, String) {
    let output = Command::new(crashmail_exe())
        .arg("setup")
        .args(args)
        .current_dir(cwd)
        .env_remove("AXIS_INI")
        .env_remove("AXIS_HOME")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned() + &stderr(&output),
    )
}

const EXISTING: &str = "; AXIS configuration\r\n[database]\r\nPath = \\\\fileserver\\axis\\data\r\n\r\n[smtp]\r\n; the old relay\r\nServer = old-relay.example.com\r\nTo = support@example.com\r\n\r\n[ui]\r\nTheme = dark\r\n";

#[test]
fn flags_change_only_their_lines_and_the_check_runs() {
    let receiver = crashmail::receiver::LoopbackReceiver::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("AXIS.INI");
    std::fs::write(&ini, EXISTING).unwrap();
    std::fs::set_permissions(&ini, std::fs::Permissions::from_mode(0o640)).unwrap();
    let server = format!("127.0.0.1:{}", receiver.port());
    let (code, out) = setup(
        &[
            "--server",
            &server,
            "--security",
            "none",
            "--domain",
            "example.com",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("The server works"), "{out}");
    let written = std::fs::read_to_string(&ini).unwrap();
    assert_eq!(
        written,
        EXISTING.replace(
            "Server = old-relay.example.com\r\nTo = support@example.com\r\n",
            &format!("Server = {server}\r\nTo = support@example.com\r\nSecurity = none\r\nDomain = example.com\r\n")
        )
    );
    assert_eq!(
        std::fs::metadata(&ini).unwrap().permissions().mode() & 0o777,
        0o640,
        "permissions kept"
    );
}

#[test]
fn a_new_file_is_private_to_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = setup(
        &[
            "--server",
            "mail.example.com",
            "--to",
            "support@example.com",
            "--domain",
            "example.com",
            "--no-check",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}");
    let ini = dir.path().join("AXIS.INI");
    assert_eq!(
        std::fs::metadata(&ini).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let config = crashmail::config::load(&ini).unwrap();
    assert_eq!(config.smtp.host, "mail.example.com");
    assert_eq!(config.smtp.to, vec!["support@example.com"]);
}

#[test]
fn a_new_file_needs_a_server_and_a_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = setup(&["--server", "mail.example.com", "--no-check"], dir.path());
    assert_eq!(code, 2, "a bad command line: {out}");
    assert!(out.contains("--to"), "{out}");
    assert!(!dir.path().join("AXIS.INI").exists());
}

#[test]
fn an_invalid_value_leaves_the_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("AXIS.INI");
    std::fs::write(&ini, EXISTING).unwrap();
    let (code, out) = setup(&["--security", "maybe", "--no-check"], dir.path());
    assert_eq!(code, 10, "a configuration error: {out}");
    assert!(out.contains("Security") && out.contains("maybe"), "{out}");
    assert_eq!(std::fs::read_to_string(&ini).unwrap(), EXISTING);
}

#[test]
fn on_a_terminal_it_asks_with_defaults_and_checks() {
    use expectrl::Expect;
    let receiver = crashmail::receiver::LoopbackReceiver::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("AXIS.INI");
    std::fs::write(
        &ini,
        format!(
            "[smtp]\nServer = 127.0.0.1:{}\nDomain = example.com\n",
            receiver.port()
        ),
    )
    .unwrap();
    let mut command = Command::new(crashmail_exe());
    command
        .args(["setup", "--ini"])
        .arg(&ini)
        .env("HOME", dir.path())
        .env_remove("AXIS_INI");
    let mut session = expectrl::Session::spawn(command).unwrap();
    session.set_expect_timeout(Some(Duration::from_secs(20)));
    session
        .expect(format!(
            "SMTP server (host or host:port) [127.0.0.1:{}]: ",
            receiver.port()
        ))
        .unwrap();
    session.send_line("").unwrap();
    session
        .expect("Security (starttls, tls or none) [starttls]: ")
        .unwrap();
    session.send_line("2525").unwrap();
    session.expect("expected starttls, tls or none").unwrap();
    session
        .expect("Security (starttls, tls or none) [starttls]: ")
        .unwrap();
    session.send_line("none").unwrap();
    session
        .expect("Port (empty: the usual one for the security): ")
        .unwrap();
    session.send_line("").unwrap();
    session
        .expect("Domain mail is sent from [example.com]: ")
        .unwrap();
    session.send_line("").unwrap();
    session
        .expect("Support address(es), comma-separated: ")
        .unwrap();
    session.send_line("support@example.com").unwrap();
    session
        .expect("User name (empty: no authentication): ")
        .unwrap();
    session.send_line("").unwrap();
    session.expect("The server works").unwrap();
    let config = crashmail::config::load(&ini).unwrap();
    assert_eq!(config.smtp.security, crashmail::config::Security::None);
    assert_eq!(config.smtp.to, vec!["support@example.com"]);
}

#[test]
fn a_bare_file_name_is_written_in_place_and_keeps_its_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("AXIS.INI");
    std::fs::write(
        &ini,
        "[smtp]\nServer = a.example.com\nTo = x@example.com\nDomain = example.com\n",
    )
    .unwrap();
    std::fs::set_permissions(&ini, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out) = setup(
        &[
            "--ini",
            "AXIS.INI",
            "--server",
            "b.example.com",
            "--no-check",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}");
    assert!(std::fs::read_to_string(&ini)
        .unwrap()
        .contains("Server = b.example.com"));
    assert_eq!(
        std::fs::metadata(&ini).unwrap().permissions().mode() & 0o777,
        0o644
    );
}
