//! The messages the application sends to its watcher.
//!
//! Both halves of crashmail depend on this module, so the wire format lives in
//! one place. On the socket every message is a [`FrameHeader`] (a kind number
//! and a length) and its body: JSON for the kinds below, the crash context for
//! a dump request.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Version of the message bodies below; the watcher refuses other versions.
pub const PROTOCOL_VERSION: u32 = 1;

/// The kinds of message the application sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MessageKind {
    /// [`Hello`]: who the application is and what to attach to its reports.
    Hello = 1,
    /// [`PanicRecord`]: a Rust panic, sent from the panic hook.
    Panic = 2,
    /// The application is exiting in order; the body is its exit status in
    /// decimal, or empty when unknown.
    Goodbye = 3,
    /// A [`SignalRecord`] line, sent by the signal handler just before it
    /// asks for the dump.
    Signal = 4,
}

impl MessageKind {
    /// Decodes a kind number received from the wire.
    pub fn from_u32(kind: u32) -> Option<Self> {
        match kind {
            1 => Some(Self::Hello),
            2 => Some(Self::Panic),
            3 => Some(Self::Goodbye),
            4 => Some(Self::Signal),
            _ => None,
        }
    }
}

/// The frame around every message on the socket: kind and body length, both
/// little-endian `u32`. Two kinds are the link's own: a dump request (whose
/// body is the crash context) and the watcher's reply once the dump is
/// written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: u32,
    pub length: u32,
}

impl FrameHeader {
    pub const LEN: usize = 8;
    /// From the application: dump me; the body is a `CrashContext`.
    pub const DUMP_REQUEST: u32 = 0xD0;
    /// From the watcher: the dump asked for is written (or failed for good).
    pub const DUMP_WRITTEN: u32 = 0xD1;
    /// Bodies larger than this are refused: nothing the application sends
    /// comes near it.
    pub const MAX_BODY: u32 = 16 * 1024 * 1024;

    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let mut bytes = [0u8; Self::LEN];
        bytes[..4].copy_from_slice(&self.kind.to_le_bytes());
        bytes[4..].copy_from_slice(&self.length.to_le_bytes());
        bytes
    }

    pub fn from_bytes(bytes: &[u8; Self::LEN]) -> Option<FrameHeader> {
        let header = FrameHeader {
            kind: u32::from_le_bytes(bytes[..4].try_into().ok()?),
            length: u32::from_le_bytes(bytes[4..].try_into().ok()?),
        };
        (header.length <= Self::MAX_BODY).then_some(header)
    }
}

/// Sent once, right after the application connects to its watcher.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hello {
    pub protocol: u32,
    pub app_name: String,
    pub app_version: String,
    pub pid: u32,
    /// The application's executable, used to find `AXIS.INI` beside it.
    pub exe: Option<PathBuf>,
    /// The application's working directory, the last place `AXIS.INI` is looked for.
    pub cwd: Option<PathBuf>,
    /// `AXIS.INI` as given to `install`, if the application named one.
    pub ini_path: Option<PathBuf>,
    /// Log files whose tails go into every report.
    pub log_files: Vec<PathBuf>,
    /// Outbox directory the application and the watcher share.
    pub outbox_dir: PathBuf,
    /// True when the application chose the outbox (option or environment);
    /// otherwise `[report] Outbox` of AXIS.INI takes precedence.
    #[serde(default)]
    pub outbox_explicit: bool,
    /// Process start, as Unix milliseconds.
    pub started_at_ms: u64,
}

/// Everything the panic hook knows about a panic.
///
/// The same record is written to the outbox's `incoming/` folder when no
/// watcher is reachable, so it carries the application's identity too.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PanicRecord {
    pub protocol: u32,
    pub app_name: String,
    pub app_version: String,
    pub pid: u32,
    /// The panic message, formatted; a placeholder for non-string payloads.
    pub message: String,
    /// `file:line:column` of the panic, when the runtime knows it.
    pub location: Option<String>,
    /// The panicking thread's name (`main`, or `<unnamed>`).
    pub thread: String,
    /// The symbolised in-process backtrace, as std prints it.
    pub backtrace: String,
    /// The same frames as module + offset, so the watcher can name them
    /// from the module's symbol table the way it names native frames.
    #[serde(default)]
    pub native_frames: Vec<NativeFrame>,
    /// Last log records before the panic, oldest first.
    pub breadcrumbs: Vec<String>,
    /// Log files to attach, for reports written without a watcher.
    pub log_files: Vec<PathBuf>,
    /// Each log file's length at the panic: its tail in the report ends
    /// there, whatever was written after (by threads that ran on, or by the
    /// next run, when the report is bundled later).
    #[serde(default)]
    pub log_sizes: Vec<(PathBuf, u64)>,
    /// Unix milliseconds when the panic happened.
    pub time_ms: u64,
}

/// A code address as module file + offset from the module's load base.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NativeFrame {
    pub module: PathBuf,
    pub offset: u64,
}

/// A native crash noted by the signal handler when no watcher was reachable.
///
/// The handler writes it with async-signal-safe calls only, as one line of
/// `key=value` pairs; see [`SignalRecord::parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignalRecord {
    pub app_name: String,
    pub app_version: String,
    pub signal: i32,
    pub code: i32,
    pub pid: u32,
    pub sender_pid: u32,
    pub address: u64,
    pub time_s: u64,
}

impl SignalRecord {
    /// Parses the line the signal handler writes, for example
    /// `app=orders version=2.1 signal=11 code=1 pid=42 sender=0 addr=0 time=1700000000`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut record = SignalRecord {
            app_name: String::new(),
            app_version: String::new(),
            signal: 0,
            code: 0,
            pid: 0,
            sender_pid: 0,
            address: 0,
            time_s: 0,
        };
        let mut seen_signal = false;
        for field in text.split_whitespace() {
            let (key, value) = field.split_once('=')?;
            match key {
                "signal" => {
                    record.signal = value.parse().ok()?;
                    seen_signal = true;
                }
                "code" => record.code = value.parse().ok()?,
                "pid" => record.pid = value.parse().ok()?,
                "sender" => record.sender_pid = value.parse().ok()?,
                "addr" => record.address = value.parse().ok()?,
                "time" => record.time_s = value.parse().ok()?,
                "app" => record.app_name = percent_decode(value),
                "version" => record.app_version = percent_decode(value),
                _ => {}
            }
        }
        seen_signal.then_some(record)
    }
}

/// `value` with every byte outside `A-Za-z0-9._-` written as `%XX`, so that
/// it is one word of a `key=value` line.
pub fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&value[index + 1..index + 3], 16) {
                out.push(byte);
                index += 3;
                continue;
            }
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a signal's `si_code` says about where it came from.
pub fn signal_origin(code: i32, sender_pid: u32, own_pid: u32) -> String {
    match code {
        // SI_USER, SI_QUEUE, SI_TKILL: sent, not raised by a fault.
        0 | -1 | -6 if sender_pid != 0 && sender_pid != own_pid => {
            let how = match code {
                0 => "kill(), SI_USER",
                -1 => "sigqueue(), SI_QUEUE",
                _ => "tgkill(), SI_TKILL",
            };
            format!("sent by another process (pid {sender_pid}, with {how})")
        }
        0 => "sent with kill()".to_string(),
        -1 => "sent with sigqueue()".to_string(),
        -6 => "raised by the process itself (tgkill, as abort() does)".to_string(),
        code if code > 0 => format!("si_code {code}"),
        code => format!("sent (si_code {code})"),
    }
}

/// The name of a crash signal, `SIG…`, or `signal N` for others.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGABRT => "SIGABRT",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGQUIT => "SIGQUIT",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_record_round_trips_the_handler_format() {
        let record =
            SignalRecord::parse("signal=11 code=1 pid=42 sender=0 addr=16 time=1700000000\n")
                .expect("parses");
        assert_eq!(record.signal, 11);
        assert_eq!(record.code, 1);
        assert_eq!(record.pid, 42);
        assert_eq!(record.address, 16);
        assert_eq!(record.time_s, 1_700_000_000);
    }

    #[test]
    fn signal_record_without_signal_is_refused() {
        assert_eq!(SignalRecord::parse("pid=3 code=1"), None);
        assert_eq!(SignalRecord::parse("garbage"), None);
    }

    #[test]
    fn kinds_decode() {
        assert_eq!(MessageKind::from_u32(2), Some(MessageKind::Panic));
        assert_eq!(MessageKind::from_u32(99), None);
    }
}
