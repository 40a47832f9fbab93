//! `crashmail check` against a real TLS server and against broken ones.

mod common;

use common::*;
use crashmail::receiver::{AuthMechanism, LoopbackReceiver, ReceiverOptions};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `crashmail check` with this AXIS.INI; returns (exit code, stdout).
fn check(ini: &Path, extra: &[&str]) -> (i32, String) {
    let output = Command::new(crashmail_exe())
        .arg("check")
        .arg("--ini")
        .arg(ini)
        .args(extra)
        .env_remove("AXIS_INI")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned() + &stderr(&output),
    )
}

fn write_ini(dir: &Path, smtp_lines: &str) -> std::path::PathBuf {
    let ini = dir.join("AXIS.INI");
    std::fs::write(
        &ini,
        format!("[smtp]\n{smtp_lines}To = support@example.com\nTimeout = 3\nConnectTimeout = 3\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ini, std::fs::Permissions::from_mode(0o600)).unwrap();
    ini
}

/// A mailin-embedded server with STARTTLS (a certificate for
/// mail.example.com from a test CA) and one user.
struct TlsServer {
    dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    receiver: LoopbackReceiver,
}

fn tls_server(auth: Vec<AuthMechanism>) -> TlsServer {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificates(dir.path(), "mail.example.com");
    let receiver = LoopbackReceiver::start_with(ReceiverOptions {
        tls: Some((cert, key)),
        credentials: Some(("support-bot".into(), "p@ss;word#1".into())),
        auth,
        port: None,
    })
    .unwrap();
    TlsServer { dir, ca, receiver }
}

impl TlsServer {
    fn ini(&self, extra: &str) -> std::path::PathBuf {
        write_ini(
            self.dir.path(),
            &format!(
                "Server = 127.0.0.1\nPort = {}\nSecurity = starttls\nDomain = example.com\nUser = support-bot\nPassword = p@ss;word#1\nCaFile = {}\n{extra}",
                self.receiver.port(),
                self.ca.display()
            ),
        )
    }
}

#[test]
fn starttls_on_any_port_with_a_verified_certificate_and_auth_plain() {
    let server = tls_server(vec![AuthMechanism::Plain, AuthMechanism::Login]);
    let (code, out) = check(
        &server.ini("TlsServerName = mail.example.com\n"),
        &["--send-test", "ops@example.com"],
    );
    assert_eq!(code, 0, "{out}");
    for step in [
        "STARTTLS",
        "certificate verified for mail.example.com",
        "AUTH as support-bot",
        "test message to ops@example.com",
    ] {
        assert!(out.contains(step), "missing {step:?}:\n{out}");
    }
    assert!(
        !out.contains("p@ss;word#1"),
        "the password must never be printed"
    );
    assert_eq!(
        server.receiver.logins(),
        vec![("PLAIN".to_string(), "support-bot".to_string())]
    );
    let messages = server.receiver.wait_for(1, Duration::from_secs(5));
    assert_eq!(messages[0].rcpt_to, vec!["ops@example.com".to_string()]);
    assert_eq!(messages[0].helo, "example.com");
}

#[test]
fn an_ip_address_against_a_named_certificate_fails_naming_the_mismatch() {
    let server = tls_server(vec![AuthMechanism::Plain]);
    let (code, out) = check(&server.ini(""), &[]);
    assert_eq!(code, 14, "{out}");
    assert!(out.contains("There is a TLS problem."), "{out}");
    assert!(
        out.contains("name mismatch") && out.contains("127.0.0.1"),
        "{out}"
    );
    assert!(
        server.receiver.logins().is_empty(),
        "no credentials before a verified TLS"
    );
}

#[test]
fn a_certificate_from_an_unknown_authority_is_not_trusted() {
    let server = tls_server(vec![AuthMechanism::Plain]);
    let ini = write_ini(
        server.dir.path(),
        &format!(
            "Server = 127.0.0.1:{}\nTlsServerName = mail.example.com\nDomain = example.com\nUser = support-bot\nPassword = p@ss;word#1\n",
            server.receiver.port()
        ),
    );
    let (code, out) = check(&ini, &[]);
    assert_eq!(code, 14, "{out}");
    assert!(out.contains("not trusted"), "{out}");
    assert!(server.receiver.logins().is_empty());
}

#[test]
fn a_server_offering_only_auth_login_gets_login() {
    let server = tls_server(vec![AuthMechanism::Login]);
    let (code, out) = check(&server.ini("TlsServerName = mail.example.com\n"), &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        server.receiver.logins(),
        vec![("LOGIN".to_string(), "support-bot".to_string())]
    );
}

#[test]
fn wrong_password_is_authentication_refused() {
    let server = tls_server(vec![AuthMechanism::Plain]);
    let ini = server.ini("TlsServerName = mail.example.com\n");
    let text = std::fs::read_to_string(&ini)
        .unwrap()
        .replace("p@ss;word#1", "wrong");
    std::fs::write(&ini, text).unwrap();
    let (code, out) = check(&ini, &[]);
    assert_eq!(code, 15, "{out}");
    assert!(
        out.contains("Authentication was refused") && out.contains("535"),
        "{out}"
    );
}

#[test]
fn credentials_but_no_auth_offered_sends_nothing_unauthenticated() {
    let server = tls_server(vec![]);
    let (code, out) = check(
        &server.ini("TlsServerName = mail.example.com\n"),
        &["--send-test", "ops@example.com"],
    );
    assert_eq!(code, 15, "{out}");
    assert!(out.contains("offers no authentication"), "{out}");
    assert!(
        server
            .receiver
            .wait_for(1, Duration::from_millis(300))
            .is_empty(),
        "no message without authentication"
    );
}

#[test]
fn starttls_required_but_not_offered_sends_neither_auth_nor_mail() {
    let peer = ScriptedPeer::start(|c| {
        c.send("220 plain.example.com ESMTP");
        c.serve("250-plain.example.com\r\n250 AUTH PLAIN LOGIN", "235 ok");
    });
    let dir = tempfile::tempdir().unwrap();
    let ini = write_ini(
        dir.path(),
        &format!("Server = 127.0.0.1:{}\nSecurity = starttls\nDomain = example.com\nUser = u\nPassword = secret\n", peer.port),
    );
    let (code, out) = check(&ini, &["--send-test", "ops@example.com"]);
    assert_eq!(code, 14, "{out}");
    assert!(
        out.contains("STARTTLS was required") && out.contains("does not offer it"),
        "{out}"
    );
    let received = peer.received();
    assert!(
        received
            .iter()
            .all(|l| !l.starts_with("AUTH") && !l.starts_with("MAIL")),
        "{received:?}"
    );
}

#[test]
fn a_server_that_never_greets_is_not_smtp_within_the_timeout() {
    let peer = ScriptedPeer::start(|_| std::thread::sleep(Duration::from_secs(30)));
    let dir = tempfile::tempdir().unwrap();
    let ini = write_ini(
        dir.path(),
        &format!(
            "Server = 127.0.0.1:{}\nSecurity = none\nDomain = example.com\n",
            peer.port
        ),
    );
    let started = Instant::now();
    let (code, out) = check(&ini, &[]);
    assert_eq!(code, 13, "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by Timeout = 3"
    );
    assert!(out.contains("sent no greeting"), "{out}");
}

#[test]
fn a_garbage_greeting_is_not_smtp() {
    let peer = ScriptedPeer::start(|c| c.send("HTTP/1.1 400 Bad Request"));
    let dir = tempfile::tempdir().unwrap();
    let ini = write_ini(
        dir.path(),
        &format!(
            "Server = 127.0.0.1:{}\nSecurity = none\nDomain = example.com\n",
            peer.port
        ),
    );
    let (code, out) = check(&ini, &[]);
    assert_eq!(code, 13, "{out}");
    assert!(out.contains("The server does not answer SMTP."), "{out}");
}

#[test]
fn a_421_greeting_is_a_communications_problem() {
    let peer = ScriptedPeer::start(|c| c.send("421 too busy, try later"));
    let dir = tempfile::tempdir().unwrap();
    let ini = write_ini(
        dir.path(),
        &format!(
            "Server = 127.0.0.1:{}\nSecurity = none\nDomain = example.com\n",
            peer.port
        ),
    );
    let (code, out) = check(&ini, &[]);
    assert_eq!(code, 12, "{out}");
    assert!(out.contains("too busy"), "{out}");
}

#[test]
fn nothing_listening_is_a_communications_problem() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let ini = write_ini(
        dir.path(),
        &format!("Server = 127.0.0.1:{port}\nSecurity = none\nDomain = example.com\n"),
    );
    let (code, out) = check(&ini, &[]);
    assert_eq!(code, 12, "{out}");
    assert!(out.contains("refused"), "{out}");
}

#[test]
fn an_unknown_host_is_a_wrong_address() {
    let dir = tempfile::tempdir().unwrap();
    let ini = write_ini(
        dir.path(),
        "Server = no-such-host.invalid\nSecurity = none\nDomain = example.com\n",
    );
    let (code, out) = check(&ini, &[]);
    assert_eq!(code, 11, "{out}");
    assert!(out.contains("The server address is wrong."), "{out}");
}

#[test]
fn implicit_tls_against_a_plaintext_server_fails_clearly_and_quickly() {
    let receiver = LoopbackReceiver::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ini = write_ini(
        dir.path(),
        &format!(
            "Server = 127.0.0.1\nPort = {}\nSecurity = tls\nDomain = example.com\n",
            receiver.port()
        ),
    );
    let started = Instant::now();
    let (code, out) = check(&ini, &[]);
    assert_eq!(code, 13, "{out}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(out.contains("try Security = starttls"), "{out}");
}

#[test]
fn ehlo_never_uses_a_bare_name() {
    // This peer refuses EHLO names that are neither fully qualified nor an
    // address literal, as strict servers do.
    let peer = ScriptedPeer::start(|c| {
        c.send("220 strict.example.com ESMTP");
        while let Some(line) = c.recv() {
            if let Some(name) = line.strip_prefix("EHLO ") {
                if name.contains('.') && !name.ends_with('.') || name.starts_with('[') {
                    c.send("250 strict.example.com");
                } else {
                    c.send("501 5.5.4 a fully qualified name is required");
                }
            } else if line == "QUIT" {
                c.send("221 bye");
                return;
            } else {
                c.send("250 ok");
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    // Neither HeloName nor Domain: an address literal, or this machine's
    // name when it is fully qualified.
    let ini = write_ini(
        dir.path(),
        &format!(
            "Server = 127.0.0.1:{}\nSecurity = none\nFrom = crashmail@example.com\n",
            peer.port
        ),
    );
    let (code, out) = check(&ini, &[]);
    assert_eq!(code, 0, "{out}");
    let ini = write_ini(
        dir.path(),
        &format!("Server = 127.0.0.1:{}\nSecurity = none\nDomain = example.com.\nHeloName = host.example.com.\n", peer.port),
    );
    let (code, out) = check(&ini, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        peer.received()
            .contains(&"EHLO host.example.com".to_string()),
        "{:?}",
        peer.received()
    );
}

#[test]
fn credentials_with_security_none_are_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let ini = write_ini(
        dir.path(),
        "Server = 127.0.0.1:2525\nSecurity = none\nDomain = example.com\nUser = u\nPassword = pw\n",
    );
    let (code, out) = check(&ini, &[]);
    assert_eq!(code, 10, "{out}");
    assert!(out.contains("never sent without TLS"), "{out}");
}

#[test]
fn a_crash_report_goes_out_over_starttls_with_authentication() {
    let server = tls_server(vec![AuthMechanism::Plain]);
    let ini = server.ini("TlsServerName = mail.example.com\n");
    let mut harness = Harness::new();
    harness.ini = ini;
    let output = harness.run_sample("panic");
    assert_eq!(output.status.code(), Some(101));
    let messages = server.receiver.wait_for(1, MAIL_WAIT);
    assert_eq!(messages.len(), 1, "watcher.log:\n{}", harness.watcher_log());
    assert_eq!(
        server.receiver.logins(),
        vec![("PLAIN".to_string(), "support-bot".to_string())]
    );
    let mail = parse_mail(&messages[0].data);
    assert_eq!(report_json(&mail)["reason"], "bad index 7");
}

/// The mail path itself (not only `check`) keeps the security rules.
#[test]
fn a_report_is_never_sent_to_a_server_that_does_not_offer_required_starttls() {
    let peer = ScriptedPeer::start(|c| {
        c.send("220 plain.example.com ESMTP");
        c.serve("250-plain.example.com\r\n250 AUTH PLAIN LOGIN", "235 ok");
    });
    let receiver = LoopbackReceiver::start().unwrap();
    let harness = Harness::with_server(
        receiver,
        &format!(
            "Server = 127.0.0.1:{}\nSecurity = starttls\nUser = u\nPassword = secret\n",
            peer.port
        ),
    );
    harness.run_sample("panic");
    assert!(watchers_gone(&harness.outbox, Duration::from_secs(30)));
    let received = peer.received();
    assert!(
        received.iter().any(|l| l.starts_with("EHLO")),
        "{received:?}"
    );
    assert!(
        received
            .iter()
            .all(|l| !l.starts_with("AUTH") && !l.starts_with("MAIL")),
        "{received:?}"
    );
    let pending = files_in(&harness.outbox.join("pending"));
    let record = pending
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a delivery record");
    let record = std::fs::read_to_string(record).unwrap();
    assert!(record.to_ascii_lowercase().contains("starttls"), "{record}");
    assert!(!record.contains("secret"));
}

#[test]
fn a_report_is_never_sent_unauthenticated_when_no_auth_is_offered() {
    let server = tls_server(vec![]);
    let mut harness = Harness::new();
    harness.ini = server.ini("TlsServerName = mail.example.com\n");
    harness.run_sample("panic");
    assert!(watchers_gone(&harness.outbox, Duration::from_secs(30)));
    assert!(
        server.receiver.messages().is_empty(),
        "nothing sent without authentication"
    );
    let pending = files_in(&harness.outbox.join("pending"));
    assert!(
        pending
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "zip")),
        "the report waits: {pending:?}"
    );
}

#[test]
fn a_server_that_refuses_the_recipient_is_caught_without_sending_anything() {
    let peer = ScriptedPeer::start(|c| {
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
    let dir = tempfile::tempdir().unwrap();
    let ini = write_ini(
        dir.path(),
        &format!(
            "Server = 127.0.0.1:{}\nSecurity = none\nDomain = example.com\n",
            peer.port
        ),
    );
    let (code, out) = check(&ini, &[]);
    assert_eq!(code, 16, "{out}");
    assert!(
        out.contains("support@example.com was refused") && out.contains("no such user"),
        "{out}"
    );
    assert!(
        !peer.received().iter().any(|l| l == "DATA"),
        "nothing is sent"
    );
}

#[test]
fn a_send_test_address_that_is_not_one_is_a_command_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let ini = write_ini(
        dir.path(),
        "Server = 127.0.0.1:1\nSecurity = none\nDomain = example.com\n",
    );
    let (code, out) = check(&ini, &["--send-test", "not-an-address"]);
    assert_eq!(code, 2, "{out}");
}

/// A self-signed certificate (as `openssl req -x509` makes: it is its own
/// authority) named as CaFile and served as the server's: a plain-words
/// reason, not a library's error name.
#[test]
fn a_self_signed_server_certificate_is_explained() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["mail.example.com".to_string()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "mail.example.com");
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("self.pem"), dir.path().join("self.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let receiver = LoopbackReceiver::start_with(ReceiverOptions {
        tls: Some((cert_path.clone(), key_path)),
        credentials: Some(("support-bot".into(), "p@ss;word#1".into())),
        auth: vec![AuthMechanism::Plain],
        port: None,
    })
    .unwrap();
    let ini = write_ini(
        dir.path(),
        &format!(
            "Server = 127.0.0.1\nPort = {}\nSecurity = starttls\nDomain = example.com\nUser = support-bot\nPassword = p@ss;word#1\nCaFile = {}\nTlsServerName = mail.example.com\n",
            receiver.port(),
            cert_path.display()
        ),
    );
    let (code, out) = check(&ini, &[]);
    assert_eq!(code, 14, "{out}");
    assert!(out.contains("a self-signed certificate?"), "{out}");
    assert!(!out.contains("CaUsedAsEndEntity"), "{out}");
    assert!(receiver.logins().is_empty());
}
