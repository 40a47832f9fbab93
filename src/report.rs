//! The report model: what `report.json` holds, the human summary, and the
//! crash signature that groups equal crashes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version of the `report.json` layout.
pub const SCHEMA_VERSION: u32 = 1;

/// How the application died.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportKind {
    /// A Rust panic.
    Panic,
    /// A native crash signal (SIGSEGV, SIGABRT, …).
    Signal,
    /// The application ended without a crash handler seeing it and without a
    /// clean goodbye (SIGKILL, the OOM killer, `_exit`).
    AbnormalExit,
}

impl ReportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::Panic => "panic",
            ReportKind::Signal => "signal",
            ReportKind::AbnormalExit => "abnormal-exit",
        }
    }
}

impl std::fmt::Display for ReportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The panic's own facts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanicFacts {
    pub message: String,
    pub location: Option<String>,
    pub thread: String,
}

/// The signal's own facts, read from the minidump's exception stream or from
/// the handler's fallback record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalFacts {
    pub number: i32,
    pub name: String,
    /// `si_code`, and its meaning where known (`SEGV_MAPERR`, `SI_USER`, …).
    pub code: i64,
    pub code_name: Option<String>,
    pub address: Option<u64>,
    /// The crashing thread.
    pub thread_id: Option<u32>,
    /// Its name, as the minidump gives it (`worker`, `tokio-runtime-w`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_name: Option<String>,
}

/// `report.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportMeta {
    pub schema: u32,
    pub id: Uuid,
    pub kind: ReportKind,
    pub app_name: String,
    pub app_version: String,
    pub time: DateTime<Utc>,
    /// One line: the panic message, or `SIGSEGV (SEGV_MAPERR) at 0x0`.
    pub reason: String,
    pub signature: String,
    pub host: String,
    pub os: String,
    pub pid: u32,
    /// How many crashes this report stands for (more than one once coalesced).
    pub occurrences: u32,
    pub panic: Option<PanicFacts>,
    pub signal: Option<SignalFacts>,
    /// The crashing thread's top frames, most recent first.
    pub frames: Vec<String>,
    /// What is missing from the report and why (no minidump, trimmed logs, …).
    pub notes: Vec<String>,
}

impl ReportMeta {
    /// The one-line subject of the email.
    pub fn subject(&self) -> String {
        format!(
            "[crash] {} {}: {}",
            self.app_name,
            self.app_version,
            cut_at_a_word(&self.reason, SUBJECT_REASON_CHARS)
        )
    }

    /// The plain-text summary: `summary.txt` and the email's body.
    pub fn summary(&self, attachments: &[String]) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} {} crashed ({}).",
            self.app_name, self.app_version, self.kind
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "Reason:     {}", self.reason);
        if let Some(panic) = &self.panic {
            if let Some(location) = &panic.location {
                let _ = writeln!(out, "Location:   {location}");
            }
            let _ = writeln!(out, "Thread:     {}", panic.thread);
        }
        if let Some(signal) = &self.signal {
            match (&signal.thread_name, signal.thread_id) {
                (Some(name), Some(id)) => {
                    let _ = writeln!(out, "Thread:     {name} (id {id})");
                }
                (None, Some(id)) => {
                    let _ = writeln!(out, "Thread id:  {id}");
                }
                (Some(name), None) => {
                    let _ = writeln!(out, "Thread:     {name}");
                }
                (None, None) => {}
            }
        }
        let _ = writeln!(
            out,
            "Time:       {}",
            self.time.format("%Y-%m-%d %H:%M:%S UTC")
        );
        let _ = writeln!(out, "Host:       {}", self.host);
        let _ = writeln!(out, "OS:         {}", self.os);
        let _ = writeln!(out, "Process:    {}", self.pid);
        if self.occurrences > 1 {
            let _ = writeln!(out, "Occurred:   {} times", self.occurrences);
        }
        let _ = writeln!(out, "Signature:  {}", self.signature);
        let _ = writeln!(out, "Report id:  {}", self.id);
        if !self.frames.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "Top frames of the crashing thread:");
            for (index, frame) in self.frames.iter().enumerate() {
                let _ = writeln!(out, "  #{index:<2} {frame}");
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "Notes:");
            for note in &self.notes {
                let _ = writeln!(out, "  - {note}");
            }
        }
        if !attachments.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "Attached report contains: {}", attachments.join(", "));
        }
        out
    }
}

/// One frame of a backtrace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub function: String,
    /// `file:line`, when known.
    pub location: Option<String>,
}

impl Frame {
    pub fn display(&self) -> String {
        match &self.location {
            Some(location) => format!("{} at {}", self.function, location),
            None => self.function.clone(),
        }
    }
}

/// Parses a backtrace as std prints it:
///
/// ```text
///    4: myapp::parse
///              at ./src/parse.rs:12:5
/// ```
pub fn parse_std_backtrace(text: &str) -> Vec<Frame> {
    let mut frames: Vec<Frame> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(location) = trimmed.strip_prefix("at ") {
            if let Some(last) = frames.last_mut() {
                if last.location.is_none() {
                    last.location = Some(location.to_string());
                }
            }
            continue;
        }
        if let Some((index, function)) = trimmed.split_once(": ") {
            if !index.is_empty() && index.chars().all(|c| c.is_ascii_digit()) {
                frames.push(Frame {
                    function: function.trim().to_string(),
                    location: None,
                });
            }
        }
    }
    frames
}

/// A panic's backtrace as `backtrace.txt` shows it: from the panic's entry
/// into the standard library (`rust_begin_unwind`, `begin_panic`), as
/// Rust's own panic message shows it, without the frames of crashmail's
/// hook that captured it. Unchanged when no such frame is found.
pub fn backtrace_from_the_panic(text: &str) -> String {
    let is_frame = |line: &str| {
        line.trim_start()
            .split_once(": ")
            .is_some_and(|(index, _)| {
                !index.is_empty() && index.chars().all(|c| c.is_ascii_digit())
            })
    };
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|line| {
        is_frame(line)
            && (line.contains("rust_begin_unwind") || line.contains("std::panicking::begin_panic"))
    });
    let Some(start) = start else {
        return text.to_string();
    };
    let mut out = String::new();
    let mut number = 0;
    for line in &lines[start..] {
        if is_frame(line) {
            let (index, function) = line.trim_start().split_once(": ").unwrap_or_default();
            let width = line.len() - line.trim_start().len() + index.len();
            out.push_str(&format!("{:>width$}: {function}\n", number));
            number += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Frames that belong to the panic and unwinding machinery, not the application.
fn is_machinery(function: &str) -> bool {
    // `<Type as Trait>::f`: judged by the type when it is a path
    // (`<myapp::Db as core::ops::Drop>::drop` is the application's), by the
    // trait when the type is generic or primitive (`<&T as core::fmt::Display>`).
    let function = match function
        .strip_prefix('<')
        .and_then(|rest| rest.split_once(" as "))
    {
        Some((self_type, rest)) => {
            let self_type = self_type
                .trim_start_matches(['&', '*'])
                .trim_start_matches("mut ")
                .trim_start_matches("dyn ");
            if self_type.contains("::") {
                self_type
            } else {
                rest
            }
        }
        // `<std::backtrace::Backtrace>::create`: an inherent method.
        None => function.trim_start_matches('<'),
    };
    const PREFIXES: &[&str] = &[
        "std::",
        "core::",
        "alloc::",
        "rust_begin_unwind",
        "rust_panic",
        "__rust",
        "__rustc::",
        "__libc_",
        "__GI_",
        "__pthread",
        "crashmail_handler::",
        "crash_handler::",
        "backtrace::",
    ];
    const NAMES: &[&str] = &[
        "main",
        "_start",
        "clone",
        "clone3",
        "start_thread",
        "abort",
        "raise",
        "gsignal",
        // The crash handler's wrapper around every new thread's start
        // routine (it gives the thread an alternate signal stack).
        "set_alt_signal_stack_and_start",
    ];
    NAMES.contains(&function) || PREFIXES.iter().any(|prefix| function.starts_with(prefix))
}

/// True for a frame known only by module and offset (`libfoo.so + 0x1f`).
pub fn is_unnamed(function: &str) -> bool {
    function.contains(" + 0x") || function.starts_with("0x")
}

/// How much of the reason an email's subject carries; the body has it all.
const SUBJECT_REASON_CHARS: usize = 120;

/// `text`, or, when it is longer than `width` characters, its first
/// `width - 1` and `…`: a table cell that shows it was cut.
pub fn cut_to_width(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut kept: String = text.chars().take(width.saturating_sub(1)).collect();
    kept.push('…');
    kept
}

/// `text`, or its start up to `max` characters ending at a word's end,
/// marked `…`, when it is longer.
fn cut_at_a_word(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let start: String = text.chars().take(max - 1).collect();
    let kept = match start.rfind(' ') {
        // A word boundary not too far back; else the cut is mid-word.
        Some(space) if space >= start.len() / 2 => &start[..space],
        _ => start.as_str(),
    };
    format!("{}…", kept.trim_end_matches([' ', ',', ':', ';']))
}

/// The application's frames, top first, with machinery skipped: the panic
/// and unwinding machinery by name, and the Rust runtime's own functions by
/// where their source lives (a function inlined from the standard library
/// is named by its debug info without its path: `call_once<…>`).
pub fn application_frames(frames: &[Frame]) -> Vec<&Frame> {
    frames
        .iter()
        .filter(|f| !is_machinery(&f.function))
        .filter(|f| !f.location.as_deref().is_some_and(is_toolchain_source))
        .collect()
}

/// A source location inside the Rust toolchain's own library: `/rustc/<commit>/library/…`
/// as the release toolchain records it, or the `rust-src` copy of a local one.
fn is_toolchain_source(location: &str) -> bool {
    location.starts_with("/rustc/")
        || location.contains("/lib/rustlib/src/rust/library/")
        || location.contains("/.rustup/toolchains/")
}

/// The frames to show, top first: the application's, ending with its last
/// named one (what lies below it is the runtime's start-up or libc's).
pub fn shown_application_frames<'f, 'a>(frames: &'f [&'a Frame]) -> &'f [&'a Frame] {
    let end = frames
        .iter()
        .rposition(|f| !is_unnamed(&f.function))
        .map_or(frames.len(), |last| last + 1);
    &frames[..end]
}

/// How many application frames make up a signature.
const SIGNATURE_FRAMES: usize = 3;

/// The crash signature: kind, reason class and the top application frames,
/// normalised (no addresses, hashes, generic parameters or line numbers), so
/// that equal crashes get equal signatures across builds and machines.
/// `inspect` and `triage` use this same function.
pub fn signature(kind: ReportKind, reason_class: &str, functions: &[&str]) -> String {
    let frames: Vec<String> = functions
        .iter()
        .map(|f| normalise_function(f))
        .filter(|f| !f.is_empty())
        .take(SIGNATURE_FRAMES)
        .collect();
    let mut signature = format!("{kind} | {reason_class}");
    if !frames.is_empty() {
        signature.push_str(" | ");
        signature.push_str(&frames.join(" < "));
    }
    signature
}

/// The reason stripped of what varies between equal crashes: numbers,
/// addresses and quoted values.
pub fn reason_class(reason: &str) -> String {
    let mut out = String::new();
    let mut chars = reason.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            // 0x1f, 42, 3.5: all become N.
            while chars
                .peek()
                .is_some_and(|n| n.is_ascii_alphanumeric() || *n == '.')
            {
                chars.next();
            }
            out.push('N');
        } else if c == '"' || c == '\'' || c == '`' {
            for n in chars.by_ref() {
                if n == c {
                    break;
                }
            }
            out.push_str("\"…\"");
        } else {
            out.push(c);
        }
    }
    let out: String = out.split_whitespace().collect::<Vec<_>>().join(" ");
    out.chars().take(80).collect()
}

/// `a::b::h0123456789abcdef` → `a::b`: the hash rustc adds to legacy-mangled names.
pub fn strip_hash(function: &str) -> &str {
    match function.rsplit_once("::h") {
        Some((before, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            before
        }
        _ => function,
    }
}

/// `<T as Trait>::f::h0123456789abcdef` → `<T as Trait>::f`; generic
/// parameters (`Vec<u8>`) and address offsets (`+0x1f`) removed.
pub fn normalise_function(function: &str) -> String {
    let mut name = strip_hash(function.trim());
    if let Some((before, _)) = name.split_once(" + 0x").or_else(|| name.split_once("+0x")) {
        name = before;
    }
    // Remove generic parameter lists but keep `<T as Trait>` qualifiers,
    // which start a path rather than follow an identifier.
    let mut out = String::with_capacity(name.len());
    let mut depth = 0usize;
    let mut previous: Option<char> = None;
    let mut skipping_from_depth: Option<usize> = None;
    for c in name.chars() {
        match c {
            '<' => {
                depth += 1;
                let follows_identifier =
                    previous.is_some_and(|p| p.is_alphanumeric() || p == '_' || p == ':');
                if follows_identifier && skipping_from_depth.is_none() && previous != Some(':') {
                    skipping_from_depth = Some(depth);
                } else if follows_identifier
                    && previous == Some(':')
                    && skipping_from_depth.is_none()
                {
                    // `::<T>` turbofish.
                    skipping_from_depth = Some(depth);
                    out.pop();
                    out.pop();
                }
                if skipping_from_depth.is_none() {
                    out.push(c);
                }
            }
            '>' => {
                if skipping_from_depth.is_none() {
                    out.push(c);
                }
                if skipping_from_depth == Some(depth) {
                    skipping_from_depth = None;
                }
                depth = depth.saturating_sub(1);
            }
            _ if skipping_from_depth.is_some() => {}
            _ => out.push(c),
        }
        previous = Some(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STD_BACKTRACE: &str = "   0: std::backtrace_rs::backtrace::libunwind::trace
             at /rustc/abc/library/std/src/../../backtrace/src/backtrace/libunwind.rs:117:9
   1: std::backtrace::Backtrace::create
   2: crashmail_handler::panic_hook::report
             at ./crash-handler/src/panic_hook.rs:40:20
   3: std::panicking::rust_panic_with_hook
   4: myapp::parse::<u8>::h0123456789abcdef
             at ./src/parse.rs:12:5
   5: myapp::main
             at ./src/main.rs:3:5
   6: core::ops::function::FnOnce::call_once
";

    #[test]
    fn std_backtrace_parses_with_locations() {
        let frames = parse_std_backtrace(STD_BACKTRACE);
        assert_eq!(frames.len(), 7);
        assert_eq!(frames[4].function, "myapp::parse::<u8>::h0123456789abcdef");
        assert_eq!(frames[4].location.as_deref(), Some("./src/parse.rs:12:5"));
        assert_eq!(frames[1].location, None);
    }

    #[test]
    fn application_frames_skip_panic_machinery() {
        let frames = parse_std_backtrace(STD_BACKTRACE);
        let app: Vec<&str> = application_frames(&frames)
            .iter()
            .map(|f| f.function.as_str())
            .collect();
        assert_eq!(
            app,
            vec!["myapp::parse::<u8>::h0123456789abcdef", "myapp::main"]
        );
    }

    #[test]
    fn the_toolchains_inlined_runtime_frames_and_what_lies_below_main_are_not_shown() {
        let frame = |function: &str, location: Option<&str>| Frame {
            function: function.to_string(),
            location: location.map(str::to_string),
        };
        let frames = [
            frame("myapp::parse", Some("/src/myapp/src/parse.rs:12")),
            frame("myapp::main", Some("/src/myapp/src/main.rs:3")),
            frame(
                "call_once<fn() -> std::process::ExitCode, ()>",
                Some("/rustc/59807616e1fa/library/core/src/ops/function.rs:250"),
            ),
            frame(
                "{closure#0}<std::process::ExitCode>",
                Some("/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/lib/rustlib/src/rust/library/std/src/rt.rs:206"),
            ),
            frame("libc.so.6 + 0x2724a", None),
        ];
        let application = application_frames(&frames);
        let shown: Vec<&str> = shown_application_frames(&application)
            .iter()
            .map(|f| f.function.as_str())
            .collect();
        assert_eq!(shown, vec!["myapp::parse", "myapp::main"]);
    }

    #[test]
    fn a_spawned_threads_start_is_not_the_applications() {
        let frame = |function: &str, location: Option<&str>| Frame {
            function: function.to_string(),
            location: location.map(str::to_string),
        };
        let frames = [
            frame("myapp::null_write", Some("/src/myapp/src/main.rs:30")),
            frame(
                "std::thread::lifecycle::spawn_unchecked::{{closure}}",
                Some("/rustc/59807616e1fa/library/std/src/thread/lifecycle.rs:89"),
            ),
            frame("set_alt_signal_stack_and_start", None),
            frame("start_thread", None),
            frame("clone3", None),
        ];
        let application: Vec<&str> = application_frames(&frames)
            .iter()
            .map(|f| f.function.as_str())
            .collect();
        assert_eq!(application, vec!["myapp::null_write"]);
    }

    #[test]
    fn a_panics_backtrace_starts_where_the_panic_entered_the_standard_library() {
        let captured = "   0: std::backtrace::Backtrace::force_capture\n             at /rustc/x/library/std/src/backtrace.rs:312:9\n   1: crashmail_handler::panic_hook::panic_record\n   2: std::panicking::rust_panic_with_hook\n   3: __rustc::rust_begin_unwind\n             at /rustc/x/library/std/src/panicking.rs:689:5\n   4: core::panicking::panic_fmt\n   5: myapp::parse\n             at ./src/main.rs:10:5\n  11: myapp::main\n";
        let shown = backtrace_from_the_panic(captured);
        assert!(
            shown.starts_with("   0: __rustc::rust_begin_unwind\n"),
            "{shown}"
        );
        assert!(
            shown.contains("   2: myapp::parse\n             at ./src/main.rs:10:5\n"),
            "{shown}"
        );
        assert!(shown.contains("   3: myapp::main\n"), "{shown}");
        assert!(!shown.contains("crashmail_handler"), "{shown}");
        // No panic entry found: kept whole.
        assert_eq!(backtrace_from_the_panic("   0: a::b\n"), "   0: a::b\n");
    }

    #[test]
    fn a_long_reason_is_cut_at_a_word_in_the_subject() {
        let reason = "killed by SIGKILL: no crash handler could run; the kernel, an administrator or a signal the application did not expect ended it";
        let cut = cut_at_a_word(reason, 60);
        assert!(cut.ends_with('…'), "{cut}");
        assert!(cut.chars().count() <= 60, "{cut}");
        assert!(reason.starts_with(cut.trim_end_matches('…')), "{cut}");
        // Cut between words, not inside one.
        assert!(
            !reason[cut.trim_end_matches('…').len()..].starts_with(char::is_alphanumeric),
            "{cut}"
        );
        assert_eq!(cut_at_a_word("short", 60), "short");
    }

    #[test]
    fn signature_drops_hashes_generics_and_numbers() {
        let a = signature(
            ReportKind::Panic,
            &reason_class("bad index 7 of \"x\""),
            &["myapp::parse::<u8>::h0123456789abcdef", "myapp::main"],
        );
        let b = signature(
            ReportKind::Panic,
            &reason_class("bad index 12 of \"yy\""),
            &["myapp::parse::<u16>::hfedcba9876543210", "myapp::main"],
        );
        assert_eq!(a, b);
        assert_eq!(
            a,
            "panic | bad index N of \"…\" | myapp::parse < myapp::main"
        );
    }

    #[test]
    fn normalise_keeps_trait_qualifiers() {
        assert_eq!(
            normalise_function("<myapp::Db as core::ops::Drop>::drop::h0123456789abcdef"),
            "<myapp::Db as core::ops::Drop>::drop"
        );
        assert_eq!(
            normalise_function("myapp::Vec<T>::push"),
            "myapp::Vec::push"
        );
        assert_eq!(normalise_function("libc.so.6 + 0x1234"), "libc.so.6");
    }

    #[test]
    fn trait_impls_are_judged_by_their_type() {
        let frame = |function: &str| Frame {
            function: function.into(),
            location: None,
        };
        let frames = [
            frame("<&T as core::fmt::Display>::fmt"),
            frame(
                "<&dyn core::ops::function::Fn<()> as core::ops::function::FnOnce<()>>::call_once",
            ),
            frame("<myapp::Db as core::ops::drop::Drop>::drop"),
            frame("maintenance::run"),
            frame("<std::backtrace::Backtrace>::create"),
        ];
        let app: Vec<&str> = application_frames(&frames)
            .iter()
            .map(|f| f.function.as_str())
            .collect();
        assert_eq!(
            app,
            vec![
                "<myapp::Db as core::ops::drop::Drop>::drop",
                "maintenance::run"
            ]
        );
    }

    #[test]
    fn hex_addresses_become_one_class() {
        assert_eq!(
            reason_class("SIGSEGV at 0x7ffe12"),
            reason_class("SIGSEGV at 0x0")
        );
    }
}
