//! Helpers shared by the end-to-end tests: a private folder per test, a
//! loopback SMTP server, and a command builder for the sample application.
#![allow(dead_code)]

use crashmail::receiver::{LoopbackReceiver, ReceivedMessage};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// What the benches share: many distinct reports made from one email.
#[path = "../../benches/common/mod.rs"]
mod bench_common;
#[allow(unused_imports)]
pub use bench_common::another_report;

/// How long a test waits for an email.
pub const MAIL_WAIT: Duration = Duration::from_secs(30);

/// One test's world: its folder, `AXIS.INI`, outbox, log file and SMTP server.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub ini: PathBuf,
    pub outbox: PathBuf,
    pub log: PathBuf,
    pub receiver: LoopbackReceiver,
}

impl Harness {
    /// A harness whose `AXIS.INI` points at a fresh loopback receiver.
    pub fn new() -> Harness {
        let receiver = LoopbackReceiver::start().expect("start the loopback SMTP receiver");
        let port = receiver.port();
        Harness::with_server(
            receiver,
            &format!("Server = 127.0.0.1\nPort = {port}\nSecurity = none\n"),
        )
    }

    /// A harness whose `AXIS.INI` has these `[smtp]` server lines.
    pub fn with_server(receiver: LoopbackReceiver, server_lines: &str) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let ini = dir.path().join("AXIS.INI");
        std::fs::write(
            &ini,
            format!(
                "[smtp]\n{server_lines}Domain = example.com\nFrom = crashmail@example.com\nTo = support@example.com\nTimeout = 10\n"
            ),
        )
        .expect("write AXIS.INI");
        Harness {
            ini,
            outbox: dir.path().join("outbox"),
            log: dir.path().join("app.log"),
            receiver,
            dir,
        }
    }

    /// Runs `crashmail outbox flush` in this harness; it must succeed.
    pub fn flush_outbox(&self) -> Output {
        let flush = self
            .crashmail()
            .args(["outbox", "flush"])
            .output()
            .expect("run crashmail outbox flush");
        assert!(flush.status.success(), "flush failed: {flush:?}");
        flush
    }

    /// Adds a `[report]` section with these lines to this harness's AXIS.INI.
    pub fn set_report_lines(&self, lines: &str) {
        let mut ini = std::fs::read_to_string(&self.ini).expect("read AXIS.INI");
        ini.push_str("[report]\n");
        ini.push_str(lines);
        std::fs::write(&self.ini, ini).expect("write AXIS.INI");
    }

    /// The sample application, told to die as `kind`, in this harness.
    pub fn sample_app(&self, kind: &str) -> Command {
        let mut command = Command::new(crashmail_exe());
        command
            .args(["sample-app", kind, "--log"])
            .arg(&self.log)
            .env("CRASHMAIL_OUTBOX", &self.outbox)
            .env("AXIS_INI", &self.ini)
            .env_remove("AXIS_HOME")
            .env_remove("CRASHMAIL_WATCHER");
        command
    }

    /// Runs the sample application to its end.
    pub fn run_sample(&self, kind: &str) -> Output {
        self.sample_app(kind)
            .output()
            .expect("run the sample application")
    }

    /// The first message received, or a failure naming what the watcher logged.
    pub fn first_message(&self) -> ReceivedMessage {
        let messages = self.receiver.wait_for(1, MAIL_WAIT);
        match messages.into_iter().next() {
            Some(message) => message,
            None => panic!("no email arrived; watcher.log:\n{}", self.watcher_log()),
        }
    }

    pub fn watcher_log(&self) -> String {
        std::fs::read_to_string(self.outbox.join("watcher.log")).unwrap_or_default()
    }

    /// `crashy kind` (the example application, at `crashy`) embedding
    /// crashmail and reporting to this harness.
    pub fn crashy(&self, crashy: &Path, kind: &str) -> Command {
        let mut command = Command::new(crashy);
        command
            .arg(kind)
            .env("CRASHY_LOG", &self.log)
            .env("CRASHMAIL_OUTBOX", &self.outbox)
            .env("AXIS_INI", &self.ini)
            .env("CRASHMAIL_WATCHER", crashmail_exe())
            .env_remove("AXIS_HOME")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command
    }

    /// The `crashmail` command with this harness's environment.
    pub fn crashmail(&self) -> Command {
        let mut command = Command::new(crashmail_exe());
        command
            .env("CRASHMAIL_OUTBOX", &self.outbox)
            .env("AXIS_INI", &self.ini)
            .env_remove("AXIS_HOME");
        command
    }
}

pub fn crashmail_exe() -> &'static str {
    env!("CARGO_BIN_EXE_crashmail")
}

/// A received email, taken apart.
pub struct ParsedMail {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub message_id: String,
    pub text: String,
    pub zip_name: String,
    pub entries: BTreeMap<String, Vec<u8>>,
    /// Number of zip attachments.
    pub zip_attachments: usize,
}

pub fn parse_mail(raw: &[u8]) -> ParsedMail {
    use mail_parser::MimeHeaders;
    let message = mail_parser::MessageParser::default()
        .parse(raw)
        .expect("a parsable email");
    let addresses = |list: Option<&mail_parser::Address>| -> Vec<String> {
        list.map(|a| {
            a.iter()
                .filter_map(|addr| addr.address().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
    };
    let zips: Vec<_> = message
        .attachments()
        .filter(|a| a.attachment_name().is_some_and(|n| n.ends_with(".zip")))
        .collect();
    let zip = zips.first().expect("a zip attachment");
    ParsedMail {
        from: addresses(message.from()).join(","),
        to: addresses(message.to()),
        subject: message.subject().unwrap_or_default().to_string(),
        message_id: message.message_id().unwrap_or_default().to_string(),
        text: message
            .body_text(0)
            .map(|t| t.into_owned())
            .unwrap_or_default(),
        zip_name: zip.attachment_name().unwrap_or_default().to_string(),
        entries: crashmail::bundle::read_zip_entries(zip.contents()).expect("a readable zip"),
        zip_attachments: zips.len(),
    }
}

/// `report.json` of a received report.
pub fn report_json(mail: &ParsedMail) -> serde_json::Value {
    serde_json::from_slice(mail.entries.get("report.json").expect("report.json"))
        .expect("valid report.json")
}

/// The signal number in a minidump's exception stream.
pub fn minidump_signal(bytes: &[u8]) -> u32 {
    let dump = minidump::Minidump::read(bytes).expect("a readable minidump");
    let exception = dump
        .get_stream::<minidump::MinidumpException>()
        .expect("an exception stream");
    exception.raw.exception_record.exception_code
}

/// Pids of live `crashmail watch` processes serving this outbox (their
/// socket lives in it).
pub fn live_watchers(outbox: &Path) -> Vec<u32> {
    let needle = outbox.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(" watch ") && cmdline.contains(&needle) && !process_gone(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// Waits until no watcher serves this outbox; false if one is still there.
pub fn watchers_gone(outbox: &Path, timeout: Duration) -> bool {
    eventually(timeout, || live_watchers(outbox).is_empty())
}

/// True once `pid` has exited (gone, or a zombie waiting for its reaper).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| {
                rest.trim_start().starts_with('Z') || rest.trim_start().starts_with('X')
            })
            .unwrap_or(true),
    }
}

/// Runs `command` to its end, killing it (and failing) if it takes longer
/// than `limit`: a crash that hangs fails its test instead of stalling it.
pub fn status_within(
    command: &mut Command,
    limit: Duration,
) -> Result<std::process::ExitStatus, String> {
    let mut child = command.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("still running after {limit:?}: killed"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits up to `timeout` for `condition`.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn exit_signal(output: &Output) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    output.status.signal()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// A scripted SMTP peer for fault injection: it runs `script` on every
/// connection and records every line the client sent.
pub struct ScriptedPeer {
    pub port: u16,
    received: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// One connection to a [`ScriptedPeer`].
pub struct Conversation {
    reader: std::io::BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
    received: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Conversation {
    /// Sends one reply line (CRLF added).
    pub fn send(&mut self, line: &str) {
        use std::io::Write;
        let _ = self.writer.write_all(format!("{line}\r\n").as_bytes());
    }

    /// The next line from the client, `None` when it is gone.
    pub fn recv(&mut self) -> Option<String> {
        use std::io::BufRead;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                let line = line.trim_end().to_string();
                self.received.lock().unwrap().push(line.clone());
                Some(line)
            }
        }
    }

    /// Answers the usual commands until QUIT: `ehlo` for EHLO, `auth` for
    /// AUTH, 250 for the rest; a message after DATA is read and answered 250.
    pub fn serve(&mut self, ehlo: &str, auth: &str) {
        while let Some(line) = self.recv() {
            let verb = line
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            match verb.as_str() {
                "EHLO" => self.send(ehlo),
                "AUTH" => self.send(auth),
                "DATA" => {
                    self.send("354 go ahead");
                    self.read_message();
                    self.send("250 2.0.0 queued");
                }
                "QUIT" => {
                    self.send("221 bye");
                    return;
                }
                _ => self.send("250 ok"),
            }
        }
    }

    /// Reads a message up to the lone `.`; returns it without dot-stuffing.
    pub fn read_message(&mut self) -> Vec<u8> {
        use std::io::BufRead;
        let mut message = Vec::new();
        loop {
            let mut line = Vec::new();
            match self.reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return message,
                Ok(_) => {}
            }
            if line == b".\r\n" || line == b".\n" {
                self.received
                    .lock()
                    .unwrap()
                    .push(format!("<message of {} bytes>", message.len()));
                return message;
            }
            let line = line.strip_prefix(b".").unwrap_or(&line);
            message.extend_from_slice(line);
        }
    }
}

impl ScriptedPeer {
    pub fn start(script: impl Fn(&mut Conversation) + Send + Sync + 'static) -> ScriptedPeer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let shared = received.clone();
        let script = std::sync::Arc::new(script);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let script = script.clone();
                let received = shared.clone();
                std::thread::spawn(move || {
                    let mut conversation = Conversation {
                        reader: std::io::BufReader::new(stream.try_clone().unwrap()),
                        writer: stream,
                        received,
                    };
                    script(&mut conversation);
                });
            }
        });
        ScriptedPeer { port, received }
    }

    /// Every line any client sent so far.
    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }
}

/// A test certificate authority and a server certificate for `name`, as PEM
/// files in `dir`: (CA certificate, server certificate, server key).
pub fn test_certificates(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "crashmail test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);
    let server_key = KeyPair::generate().unwrap();
    let mut server_params = CertificateParams::new(vec![name.to_string()]).unwrap();
    server_params
        .distinguished_name
        .push(DnType::CommonName, name);
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, server_cert.pem()).unwrap();
    std::fs::write(&paths.2, server_key.serialize_pem()).unwrap();
    paths
}

/// A report built by crashmail itself from a panic record, put straight into
/// the outbox: fast enough to queue hundreds. Returns its id.
pub fn queue_report(outbox: &crashmail::outbox::Outbox, message: &str, log: &[u8]) -> String {
    let dir = outbox.root().join("logs-for-queued-reports");
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join(format!("{}.log", uuid::Uuid::new_v4()));
    std::fs::write(&log_path, log).unwrap();
    let panic = crashmail_handler::protocol::PanicRecord {
        protocol: crashmail_handler::protocol::PROTOCOL_VERSION,
        app_name: "orders".into(),
        app_version: "2.1.0".into(),
        pid: 4242,
        message: message.into(),
        location: Some("src/orders.rs:10:5".into()),
        thread: "main".into(),
        backtrace: "   0: orders::book\n             at ./src/orders.rs:10:5\n   1: orders::main\n"
            .into(),
        native_frames: Vec::new(),
        breadcrumbs: Vec::new(),
        log_files: vec![log_path.clone()],
        log_sizes: Vec::new(),
        time_ms: chrono::Utc::now().timestamp_millis() as u64,
    };
    let evidence = crashmail::assemble::CrashEvidence {
        app_name: "orders".into(),
        app_version: "2.1.0".into(),
        pid: 4242,
        log_files: vec![log_path.clone()],
        panic: Some(panic),
        ..Default::default()
    };
    let contents = crashmail::assemble::assemble(evidence, 64 * 1024 * 1024);
    let id = contents.meta.id.to_string();
    outbox.add(&id, &contents.to_zip().unwrap()).unwrap();
    std::fs::remove_file(log_path).unwrap();
    id
}

/// A configuration for a server on 127.0.0.1:`port`, with extra `[report]` lines.
pub fn config_for(
    dir: &Path,
    port: u16,
    smtp_extra: &str,
    report_lines: &str,
) -> crashmail::config::Config {
    let path = dir.join("AXIS.INI");
    std::fs::write(
        &path,
        format!(
            "[smtp]\nServer = 127.0.0.1:{port}\nSecurity = none\nDomain = example.com\nTo = support@example.com\nTimeout = 2\nConnectTimeout = 2\n{smtp_extra}[report]\n{report_lines}"
        ),
    )
    .unwrap();
    crashmail::config::load(&path).unwrap()
}

/// Incompressible printable bytes, as a busy log looks to a zip.
pub fn noisy_log(size: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..size)
        .map(|i| {
            if i % 100 == 99 {
                return b'\n';
            }
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b' ' + (state % 94) as u8
        })
        .collect()
}

/// A free port on 127.0.0.1 that nothing listens on.
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Number of report zips in one state folder of the outbox.
pub fn zips_in(outbox: &crashmail::outbox::Outbox, state: &str) -> usize {
    files_in(&outbox.dir(state))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "zip"))
        .count()
}

/// Builds `crashy` with a cargo profile, once per test run.
pub fn crashy(profile: &'static str) -> PathBuf {
    static BUILT: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<&'static str, PathBuf>>,
    > = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap();
    if let Some(path) = built.get(profile) {
        return path.clone();
    }
    let status = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--example",
            "crashy",
            "-p",
            "crashmail-handler",
            "--profile",
            profile,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo builds crashy");
    assert!(status.success(), "building crashy ({profile}) failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let folder = if profile == "dev" { "debug" } else { profile };
    let path = target.join(folder).join("examples/crashy");
    built.insert(profile, path.clone());
    path
}

/// The one report this harness received, as (mail, report.json).
pub fn the_one_report(harness: &Harness) -> (ParsedMail, serde_json::Value) {
    assert!(
        watchers_gone(&harness.outbox, Duration::from_secs(30)),
        "the watcher is still running"
    );
    let messages = harness.receiver.messages();
    assert_eq!(
        messages.len(),
        1,
        "exactly one report; watcher.log:\n{}",
        harness.watcher_log()
    );
    let mail = parse_mail(&messages[0].data);
    let report = report_json(&mail);
    (mail, report)
}
