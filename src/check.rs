//! `crashmail check`: the SMTP conversation, one step at a time, each with
//! its outcome and duration; on failure, the likely cause in plain words.
//!
//! The old product's SETUP told an operator whether the address was wrong,
//! the line was bad, or the server did not speak SMTP. This does the same,
//! with the finer classes TLS and authentication add. It speaks SMTP itself
//! (rather than through the mail library) so that it can say which step
//! failed; it never sends a credential before TLS is up and verified.

use crate::config::{Security, SmtpConfig};
use crate::mail::tls;
use rustls::{ClientConnection, StreamOwned};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// What kind of failure a check ended in. Each has its own exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// AXIS.INI is missing or invalid.
    Configuration,
    /// The server's name does not resolve.
    Address,
    /// Refused, unreachable, timed out, closed.
    Communication,
    /// Something answered, but not SMTP (no greeting, garbage, TLS mismatch).
    NotSmtp,
    /// STARTTLS missing, untrusted certificate, name mismatch, expired.
    Tls,
    /// Credentials refused, or no way to authenticate offered.
    Authentication,
    /// The server refused the sender or a recipient.
    Refused,
}

impl FailureClass {
    /// The documented exit code of `crashmail check` and `crashmail setup`.
    pub fn exit_code(self) -> u8 {
        match self {
            FailureClass::Configuration => 10,
            FailureClass::Address => 11,
            FailureClass::Communication => 12,
            FailureClass::NotSmtp => 13,
            FailureClass::Tls => 14,
            FailureClass::Authentication => 15,
            FailureClass::Refused => 16,
        }
    }

    /// The likely cause, as the operator should read it.
    pub fn headline(self) -> &'static str {
        match self {
            FailureClass::Configuration => "The configuration cannot be used.",
            FailureClass::Address => "The server address is wrong.",
            FailureClass::Communication => "There is a communications problem.",
            FailureClass::NotSmtp => "The server does not answer SMTP.",
            FailureClass::Tls => "There is a TLS problem.",
            FailureClass::Authentication => "Authentication was refused.",
            FailureClass::Refused => "The server refused the sender or a recipient.",
        }
    }

    /// What to try next.
    pub fn advice(self) -> &'static str {
        match self {
            FailureClass::Configuration => "Fix the line named above, or run `crashmail setup`.",
            FailureClass::Address => "Check the spelling of Server in AXIS.INI; ask your mail provider for the SMTP server's name.",
            FailureClass::Communication => {
                "Check that this machine can reach the server (network, firewall, VPN) and that Port is right; try again later if the server is busy."
            }
            FailureClass::NotSmtp => {
                "Check Port and Security: 587 usually means starttls, 465 means tls, 25 means starttls or none. Another service may be listening on this port."
            }
            FailureClass::Tls => "Check Security, TlsServerName and CaFile; ask your mail provider which certificate the server uses.",
            FailureClass::Authentication => "Check User and Password (or PasswordFile); the server may need an application-specific password.",
            FailureClass::Refused => "Check From and To; the server may allow only its own domain as sender.",
        }
    }
}

/// One step of the conversation.
#[derive(Clone, Debug)]
pub struct Step {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    pub duration: Duration,
}

/// Why the check stopped.
#[derive(Clone, Debug)]
pub struct Failure {
    pub class: FailureClass,
    pub detail: String,
}

/// Everything a check found.
#[derive(Clone, Debug, Default)]
pub struct CheckOutcome {
    pub steps: Vec<Step>,
    pub failure: Option<Failure>,
}

impl Step {
    /// One line of the table, as printed while the check runs.
    pub fn line(&self) -> String {
        format!(
            "  {}  {:<40}  {:>7}  {}",
            if self.ok { "ok  " } else { "FAIL" },
            self.name,
            format!("{} ms", self.duration.as_millis()),
            self.detail
        )
    }
}

impl CheckOutcome {
    /// The cause and what to try, or that the server works.
    pub fn conclusion(&self) -> String {
        match &self.failure {
            None => "\nThe server works: crash reports can be sent.\n".to_string(),
            Some(failure) => format!(
                "\n{} {}\nWhat to try: {}\n",
                failure.class.headline(),
                failure.detail,
                failure.class.advice()
            ),
        }
    }

    /// The table of steps and, on failure, the cause and what to try.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let width = self
            .steps
            .iter()
            .map(|s| s.name.chars().count())
            .max()
            .unwrap_or(0);
        for step in &self.steps {
            let _ = writeln!(
                out,
                "  {}  {:<width$}  {:>7}  {}",
                if step.ok { "ok  " } else { "FAIL" },
                step.name,
                format!("{} ms", step.duration.as_millis()),
                step.detail,
            );
        }
        match &self.failure {
            None => {
                let _ = writeln!(out, "\nThe server works: crash reports can be sent.");
            }
            Some(failure) => {
                let _ = writeln!(out, "\n{} {}", failure.class.headline(), failure.detail);
                let _ = writeln!(out, "What to try: {}", failure.class.advice());
            }
        }
        out
    }
}

/// Runs the check; with `send_test`, also sends a test message there.
pub fn run(smtp: &SmtpConfig, send_test: Option<&str>) -> CheckOutcome {
    run_with(smtp, send_test, &mut |_| {})
}

/// Runs the check, telling `on_step` about each step as it ends.
pub fn run_with(
    smtp: &SmtpConfig,
    send_test: Option<&str>,
    on_step: &mut dyn FnMut(&Step),
) -> CheckOutcome {
    let mut checker = Checker {
        smtp,
        outcome: CheckOutcome::default(),
        on_step,
    };
    if let Err(failure) = checker.converse(send_test) {
        checker.outcome.failure = Some(failure);
    }
    checker.outcome
}

struct Checker<'a> {
    smtp: &'a SmtpConfig,
    on_step: &'a mut dyn FnMut(&Step),
    outcome: CheckOutcome,
}

type StepResult<T> = Result<T, Failure>;

fn fail(class: FailureClass, detail: impl Into<String>) -> Failure {
    Failure {
        class,
        detail: detail.into(),
    }
}

impl Checker<'_> {
    /// Runs `work` as a named step, recording its outcome and duration.
    fn step<T>(
        &mut self,
        name: impl Into<String>,
        work: impl FnOnce() -> StepResult<(T, String)>,
    ) -> StepResult<T> {
        let started = Instant::now();
        let result = work();
        let duration = started.elapsed();
        match result {
            Ok((value, detail)) => {
                self.record(Step {
                    name: name.into(),
                    ok: true,
                    detail,
                    duration,
                });
                Ok(value)
            }
            Err(failure) => {
                self.record(Step {
                    name: name.into(),
                    ok: false,
                    detail: failure.detail.clone(),
                    duration,
                });
                Err(failure)
            }
        }
    }

    fn record(&mut self, step: Step) {
        (self.on_step)(&step);
        self.outcome.steps.push(step);
    }

    fn converse(&mut self, send_test: Option<&str>) -> StepResult<()> {
        let smtp = self.smtp;
        let addresses = self.step(format!("resolve {}", smtp.host), || {
            let addresses = resolve(&smtp.host, smtp.port, smtp.connect_timeout)?;
            let shown = addresses
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            Ok((addresses, shown))
        })?;
        let tcp = self.step(format!("connect to port {}", smtp.port), || {
            let (stream, address) = connect(&addresses, smtp.connect_timeout)?;
            Ok((stream, format!("connected to {address}")))
        })?;
        let local = tcp
            .local_addr()
            .map(|a| a.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        tcp.set_read_timeout(Some(smtp.timeout)).ok();
        tcp.set_write_timeout(Some(smtp.timeout)).ok();

        let mut session = match smtp.security {
            Security::Tls => self.step("TLS handshake", || {
                let session = Session::tls(tcp, smtp)?;
                Ok((
                    session,
                    format!("certificate verified for {}", smtp.tls_name()),
                ))
            })?,
            _ => Session::plain(tcp),
        };

        self.step("220 greeting", || {
            let reply = session.reply().map_err(|e| e.on_greeting(smtp))?;
            match reply.code {
                220 => Ok(((), reply.text())),
                421 => Err(fail(
                    FailureClass::Communication,
                    format!("the server is not taking connections now: {}", reply.text()),
                )),
                _ => Err(fail(
                    FailureClass::NotSmtp,
                    format!("expected a 220 greeting, got: {}", reply.text()),
                )),
            }
        })?;

        let ehlo_name = ehlo_name(smtp, local);
        let mut extensions = self.step(format!("EHLO {ehlo_name}"), || {
            ehlo(&mut session, &ehlo_name)
        })?;

        if smtp.security == Security::StartTls {
            if !extensions.starttls {
                let failure = fail(
                    FailureClass::Tls,
                    "STARTTLS was required (Security = starttls) but the server does not offer it; nothing else was sent",
                );
                self.record(Step {
                    name: "STARTTLS".into(),
                    ok: false,
                    detail: failure.detail.clone(),
                    duration: Duration::ZERO,
                });
                return Err(failure);
            }
            session = self.step("STARTTLS", || {
                let reply = session
                    .command("STARTTLS")
                    .map_err(|e| e.during("STARTTLS"))?;
                if reply.code != 220 {
                    return Err(fail(
                        FailureClass::Tls,
                        format!("the server refused STARTTLS: {}", reply.text()),
                    ));
                }
                let upgraded = session.into_tls(smtp)?;
                Ok((
                    upgraded,
                    format!("certificate verified for {}", smtp.tls_name()),
                ))
            })?;
            extensions = self.step(format!("EHLO {ehlo_name} (over TLS)"), || {
                ehlo(&mut session, &ehlo_name)
            })?;
        }

        if let (Some(user), Some(password)) = (&smtp.user, &smtp.password) {
            self.step(format!("AUTH as {user}"), || {
                authenticate(&mut session, &extensions, user, password.expose())
            })?;
        }

        match send_test {
            Some(recipient) => self.step(format!("test message to {recipient}"), || {
                send_test_message(&mut session, smtp, recipient)
            })?,
            None => self.step("sender and recipients (nothing is sent)", || {
                check_envelope(&mut session, smtp)
            })?,
        }
        let _ = session.command("QUIT");
        Ok(())
    }
}

fn resolve(host: &str, port: u16, timeout: Duration) -> StepResult<Vec<SocketAddr>> {
    let target = (host.to_string(), port);
    let (sender, receiver) = std::sync::mpsc::channel();
    // Name resolution has no timeout of its own; it runs aside and is
    // abandoned when it takes too long.
    std::thread::spawn(move || {
        let _ = sender.send(target.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
    });
    match receiver.recv_timeout(timeout) {
        Ok(Ok(addresses)) if !addresses.is_empty() => Ok(addresses),
        Ok(Ok(_)) => Err(fail(
            FailureClass::Address,
            format!("{host:?} has no address"),
        )),
        Ok(Err(e)) => Err(fail(
            FailureClass::Address,
            format!("{host:?} cannot be found: {e}"),
        )),
        Err(_) => Err(fail(
            FailureClass::Communication,
            format!("looking up {host:?} took longer than {timeout:?}"),
        )),
    }
}

fn connect(addresses: &[SocketAddr], timeout: Duration) -> StepResult<(TcpStream, SocketAddr)> {
    let mut last = None;
    for address in addresses {
        match TcpStream::connect_timeout(address, timeout) {
            Ok(stream) => return Ok((stream, *address)),
            Err(e) => last = Some((address, e)),
        }
    }
    let (address, error) = last.expect("at least one address");
    let why = match error.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            "the connection was refused (nothing listens on that port)".to_string()
        }
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            format!("no answer within {timeout:?}")
        }
        _ => error.to_string(),
    };
    Err(fail(
        FailureClass::Communication,
        format!("{address}: {why}"),
    ))
}

/// [`SmtpConfig::ehlo_name`], else the address literal of our end.
fn ehlo_name(smtp: &SmtpConfig, local: IpAddr) -> String {
    match smtp.ehlo_name() {
        Some(name) => name,
        None => match local {
            IpAddr::V4(v4) => format!("[{v4}]"),
            IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
        },
    }
}

/// What the server offers after EHLO.
#[derive(Clone, Debug, Default)]
struct Extensions {
    starttls: bool,
    auth: Vec<String>,
    size: Option<u64>,
}

fn ehlo(session: &mut Session, name: &str) -> StepResult<(Extensions, String)> {
    let reply = session
        .command(&format!("EHLO {name}"))
        .map_err(|e| e.during("EHLO"))?;
    if reply.code != 250 {
        return Err(fail(
            FailureClass::NotSmtp,
            format!("the server refused EHLO {name}: {}", reply.text()),
        ));
    }
    let mut extensions = Extensions::default();
    for line in reply.lines.iter().skip(1) {
        let mut words = line.split_whitespace();
        match words.next().map(str::to_ascii_uppercase).as_deref() {
            Some("STARTTLS") => extensions.starttls = true,
            Some("AUTH") => extensions.auth = words.map(str::to_ascii_uppercase).collect(),
            Some("SIZE") => extensions.size = words.next().and_then(|n| n.parse().ok()),
            _ => {}
        }
    }
    let mut offered = Vec::new();
    if extensions.starttls {
        offered.push("STARTTLS".to_string());
    }
    if !extensions.auth.is_empty() {
        offered.push(format!("AUTH {}", extensions.auth.join(" ")));
    }
    if let Some(size) = extensions.size {
        offered.push(format!("SIZE {size}"));
    }
    let detail = if offered.is_empty() {
        "accepted".to_string()
    } else {
        format!("offers {}", offered.join(", "))
    };
    Ok((extensions, detail))
}

fn authenticate(
    session: &mut Session,
    extensions: &Extensions,
    user: &str,
    password: &str,
) -> StepResult<((), String)> {
    if !session.is_tls() {
        return Err(fail(
            FailureClass::Tls,
            "credentials are never sent without TLS",
        ));
    }
    if extensions.auth.is_empty() {
        return Err(fail(
            FailureClass::Authentication,
            "User and Password are set, but the server offers no authentication; nothing was sent unauthenticated",
        ));
    }
    let reply = if extensions.auth.iter().any(|m| m == "PLAIN") {
        let token = base64(format!("\0{user}\0{password}").as_bytes());
        session
            .command(&format!("AUTH PLAIN {token}"))
            .map_err(|e| e.during("AUTH"))?
    } else if extensions.auth.iter().any(|m| m == "LOGIN") {
        let first = session
            .command("AUTH LOGIN")
            .map_err(|e| e.during("AUTH"))?;
        if first.code != 334 {
            return Err(fail(
                FailureClass::Authentication,
                format!("AUTH LOGIN refused: {}", first.text()),
            ));
        }
        let second = session
            .command(&base64(user.as_bytes()))
            .map_err(|e| e.during("AUTH"))?;
        if second.code != 334 {
            return Err(fail(
                FailureClass::Authentication,
                format!("the user name was refused: {}", second.text()),
            ));
        }
        session
            .command(&base64(password.as_bytes()))
            .map_err(|e| e.during("AUTH"))?
    } else {
        return Err(fail(
            FailureClass::Authentication,
            format!("the server offers only AUTH {}, which crashmail does not speak (it speaks PLAIN and LOGIN)", extensions.auth.join(" ")),
        ));
    };
    match reply.code {
        235 => Ok(((), "accepted".into())),
        _ => Err(fail(
            FailureClass::Authentication,
            format!("the server refused the credentials: {}", reply.text()),
        )),
    }
}

fn send_test_message(
    session: &mut Session,
    smtp: &SmtpConfig,
    recipient: &str,
) -> StepResult<((), String)> {
    let message = lettre::Message::builder()
        .from(smtp.from.parse().map_err(|e| fail(FailureClass::Configuration, format!("From: {e}")))?)
        .to(recipient.parse().map_err(|e| fail(FailureClass::Configuration, format!("{recipient:?}: {e}")))?)
        .subject("crashmail test message")
        // A Message-ID and MIME headers like any real mail, so that strict
        // providers judge the test as they will judge the reports.
        .message_id(None)
        .date_now()
        .singlepart(lettre::message::SinglePart::plain(String::from(
            "This message was sent by `crashmail check --send-test`.\nCrash reports from this machine can reach you.\n",
        )))
        .map_err(|e| fail(FailureClass::Configuration, e.to_string()))?;
    let bare_from = crate::config::bare_address(&smtp.from);
    let reply = session
        .command(&format!("MAIL FROM:<{bare_from}>"))
        .map_err(|e| e.during("MAIL FROM"))?;
    if reply.code != 250 {
        return Err(fail(
            FailureClass::Refused,
            format!("the sender {bare_from} was refused: {}", reply.text()),
        ));
    }
    let bare_to = crate::config::bare_address(recipient);
    let reply = session
        .command(&format!("RCPT TO:<{bare_to}>"))
        .map_err(|e| e.during("RCPT TO"))?;
    if !matches!(reply.code, 250 | 251) {
        return Err(fail(
            FailureClass::Refused,
            format!("the recipient {bare_to} was refused: {}", reply.text()),
        ));
    }
    let reply = session.command("DATA").map_err(|e| e.during("DATA"))?;
    if reply.code != 354 {
        return Err(fail(
            FailureClass::Refused,
            format!("DATA was refused: {}", reply.text()),
        ));
    }
    let mut data = Vec::new();
    for line in message.formatted().split_inclusive(|b| *b == b'\n') {
        if line.starts_with(b".") {
            data.push(b'.');
        }
        data.extend_from_slice(line);
    }
    if !data.ends_with(b"\r\n") {
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(b".\r\n");
    session.write_all(&data).map_err(|e| e.during("DATA"))?;
    let reply = session.reply().map_err(|e| e.during("DATA"))?;
    match reply.code {
        250 => Ok(((), format!("accepted: {}", reply.text()))),
        _ => Err(fail(
            FailureClass::Refused,
            format!("the message was refused: {}", reply.text()),
        )),
    }
}

/// MAIL FROM and RCPT TO for the configured addresses, then RSET: the
/// server says whether it would take a report, and nothing is sent.
fn check_envelope(session: &mut Session, smtp: &SmtpConfig) -> StepResult<((), String)> {
    let from = crate::config::bare_address(&smtp.from);
    let reply = session
        .command(&format!("MAIL FROM:<{from}>"))
        .map_err(|e| e.during("MAIL FROM"))?;
    if reply.code != 250 {
        return Err(fail(
            FailureClass::Refused,
            format!("the sender {from} was refused: {}", reply.text()),
        ));
    }
    for recipient in smtp.to.iter().chain(&smtp.cc) {
        let to = crate::config::bare_address(recipient);
        let reply = session
            .command(&format!("RCPT TO:<{to}>"))
            .map_err(|e| e.during("RCPT TO"))?;
        if !matches!(reply.code, 250 | 251) {
            return Err(fail(
                FailureClass::Refused,
                format!("the recipient {to} was refused: {}", reply.text()),
            ));
        }
    }
    let _ = session.command("RSET");
    let count = smtp.to.len() + smtp.cc.len();
    Ok(((), format!("{from} and {count} recipient(s) accepted")))
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for (index, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if index <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A reply: its code and its lines' texts.
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" / "))
    }
}

/// Why a read or write on the connection failed.
enum SessionError {
    TimedOut,
    Closed,
    Garbage(String),
    Io(std::io::Error),
    Tls(rustls::Error),
}

impl SessionError {
    fn from_io(error: std::io::Error) -> SessionError {
        if let Some(tls) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return SessionError::Tls(tls.clone());
        }
        match error.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => SessionError::TimedOut,
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe => SessionError::Closed,
            _ => SessionError::Io(error),
        }
    }

    fn during(self, what: &str) -> Failure {
        match self {
            SessionError::TimedOut => fail(
                FailureClass::Communication,
                format!("no answer to {what} within the timeout"),
            ),
            SessionError::Closed => fail(
                FailureClass::Communication,
                format!("the server closed the connection during {what}"),
            ),
            SessionError::Garbage(text) => fail(
                FailureClass::NotSmtp,
                format!("the answer to {what} is not SMTP: {text:?}"),
            ),
            SessionError::Io(e) => fail(FailureClass::Communication, format!("{what}: {e}")),
            SessionError::Tls(e) => fail(FailureClass::Tls, format!("{what}: {e}")),
        }
    }

    fn on_greeting(self, smtp: &SmtpConfig) -> Failure {
        match self {
            SessionError::TimedOut => {
                let hint = if smtp.security != Security::Tls {
                    " (a server on a TLS port such as 465 waits silently for TLS: try Security = tls)"
                } else {
                    ""
                };
                fail(
                    FailureClass::NotSmtp,
                    format!(
                        "the server accepted the connection but sent no greeting within {:?}{hint}",
                        smtp.timeout
                    ),
                )
            }
            SessionError::Garbage(text) => {
                let hint = if text.starts_with('\u{16}') || text.contains('\u{15}') {
                    " (this looks like TLS: try Security = tls)"
                } else {
                    ""
                };
                fail(
                    FailureClass::NotSmtp,
                    format!("the greeting is not SMTP: {text:?}{hint}"),
                )
            }
            other => other.during("the greeting"),
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// An SMTP connection with its read buffer.
struct Session {
    stream: Stream,
    buffer: Vec<u8>,
}

/// The longest reply line accepted.
const MAX_LINE: usize = 4096;

impl Session {
    fn plain(tcp: TcpStream) -> Session {
        Session {
            stream: Stream::Plain(tcp),
            buffer: Vec::new(),
        }
    }

    fn tls(tcp: TcpStream, smtp: &SmtpConfig) -> Result<Session, Failure> {
        let config = tls::client_config(smtp).map_err(|e| fail(FailureClass::Configuration, e))?;
        let name = tls::server_name(smtp).map_err(|e| fail(FailureClass::Configuration, e))?;
        let connection = ClientConnection::new(config, name)
            .map_err(|e| fail(FailureClass::Tls, e.to_string()))?;
        let mut stream = StreamOwned::new(connection, tcp);
        while stream.conn.is_handshaking() {
            if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
                return Err(match SessionError::from_io(e) {
                    SessionError::Tls(rustls::Error::InvalidMessage(_)) => fail(
                        FailureClass::NotSmtp,
                        "the server did not answer the TLS handshake with TLS (it may expect plain SMTP on this port: try Security = starttls)",
                    ),
                    SessionError::Tls(error) => fail(FailureClass::Tls, tls::describe_tls_error(&error, smtp.tls_name())),
                    SessionError::TimedOut => fail(FailureClass::NotSmtp, "no answer to the TLS handshake within the timeout"),
                    other => other.during("the TLS handshake"),
                });
            }
        }
        Ok(Session {
            stream: Stream::Tls(Box::new(stream)),
            buffer: Vec::new(),
        })
    }

    fn into_tls(self, smtp: &SmtpConfig) -> Result<Session, Failure> {
        match self.stream {
            Stream::Plain(tcp) => Session::tls(tcp, smtp),
            Stream::Tls(_) => Err(fail(FailureClass::Tls, "TLS is already up")),
        }
    }

    fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        self.stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush())
            .map_err(SessionError::from_io)
    }

    fn command(&mut self, line: &str) -> Result<Reply, SessionError> {
        self.write_all(format!("{line}\r\n").as_bytes())?;
        self.reply()
    }

    fn line(&mut self) -> Result<String, SessionError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Ok(String::from_utf8_lossy(&line)
                    .trim_end_matches(['\r', '\n'])
                    .to_string());
            }
            if self.buffer.len() > MAX_LINE {
                return Err(SessionError::Garbage(
                    String::from_utf8_lossy(&self.buffer[..80]).into_owned(),
                ));
            }
            let mut chunk = [0u8; 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) if self.buffer.is_empty() => return Err(SessionError::Closed),
                Ok(0) => {
                    return Err(SessionError::Garbage(
                        String::from_utf8_lossy(&self.buffer).into_owned(),
                    ))
                }
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(SessionError::from_io(e)),
            }
        }
    }

    fn reply(&mut self) -> Result<Reply, SessionError> {
        let mut lines = Vec::new();
        loop {
            let line = self.line()?;
            let bytes = line.as_bytes();
            let well_formed = bytes.len() >= 3
                && bytes[..3].iter().all(u8::is_ascii_digit)
                && (bytes.len() == 3 || bytes[3] == b' ' || bytes[3] == b'-');
            if !well_formed {
                return Err(SessionError::Garbage(line.chars().take(80).collect()));
            }
            let code: u16 = line[..3].parse().unwrap_or(0);
            let last = bytes.len() == 3 || bytes[3] == b' ';
            lines.push(line.get(4..).unwrap_or("").to_string());
            if last {
                return Ok(Reply { code, lines });
            }
            if lines.len() > 100 {
                return Err(SessionError::Garbage(
                    "a reply of more than 100 lines".into(),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"\0user\0pass"), "AHVzZXIAcGFzcw==");
    }

    #[test]
    fn every_class_has_its_own_exit_code() {
        let classes = [
            FailureClass::Configuration,
            FailureClass::Address,
            FailureClass::Communication,
            FailureClass::NotSmtp,
            FailureClass::Tls,
            FailureClass::Authentication,
            FailureClass::Refused,
        ];
        let mut codes: Vec<u8> = classes.iter().map(|c| c.exit_code()).collect();
        codes.dedup();
        assert_eq!(codes.len(), classes.len());
    }
}
