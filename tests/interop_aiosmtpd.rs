//! The same report through an independent SMTP implementation: Python's
//! aiosmtpd, storing into a Maildir. `scripts/test` installs it.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct AioSmtpd {
    child: Child,
}

impl Drop for AioSmtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn report_is_stored_by_aiosmtpd() {
    let maildir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new("python3")
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(maildir.path().join("Maildir"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 -m aiosmtpd (scripts/test installs it)");
    let _server = AioSmtpd { child };
    assert!(
        eventually(Duration::from_secs(15), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "aiosmtpd did not start listening; is it installed? (pip install aiosmtpd)"
    );

    let unused = crashmail::receiver::LoopbackReceiver::start().unwrap();
    let harness = Harness::with_server(
        unused,
        &format!("Server = 127.0.0.1:{port}\nSecurity = none\n"),
    );
    let output = harness.run_sample("segv");
    assert_eq!(exit_signal(&output), Some(libc::SIGSEGV));

    let new_dir = maildir.path().join("Maildir/new");
    assert!(
        eventually(Duration::from_secs(30), || !files_in(&new_dir).is_empty()),
        "nothing stored in the Maildir; watcher.log:\n{}",
        harness.watcher_log()
    );
    let stored = std::fs::read(&files_in(&new_dir)[0]).unwrap();
    let mail = parse_mail(&stored);
    assert_eq!(mail.from, "crashmail@example.com");
    assert_eq!(mail.to, vec!["support@example.com".to_string()]);
    assert!(mail.subject.contains("SIGSEGV"));
    assert_eq!(
        minidump_signal(&mail.entries["minidump.dmp"]),
        libc::SIGSEGV as u32
    );
    assert!(
        harness.receiver.messages().is_empty(),
        "the report went to aiosmtpd, not elsewhere"
    );
}
