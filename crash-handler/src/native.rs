//! The native crash handler and everything else that needs `unsafe`.
//!
//! The crash callback runs in a compromised context: inside a signal handler,
//! possibly on a corrupted heap. It allocates nothing and takes no lock of
//! ours: it asks the watcher for a dump (one socket send, one receive) or,
//! with no watcher, writes a one-line record with raw system calls.
#![allow(unsafe_code)]

use crate::link;
use crate::Installed;
use crash_handler::{CrashContext, CrashEventResult, CrashHandler};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::OnceLock;

static HANDLER: OnceLock<CrashHandler> = OnceLock::new();
/// Set when the guard is dropped: later signals go to the previous handlers.
static DISABLED: AtomicBool = AtomicBool::new(false);

/// Where the panic path stands, so that the `SIGABRT` that follows a panic
/// under `panic = "abort"` (or a panic while unwinding) is not reported twice.
static PANIC_PHASE: AtomicU8 = AtomicU8::new(PANIC_NONE);
const PANIC_NONE: u8 = 0;
const PANIC_DUMPING: u8 = 1;
const PANIC_DUMPED: u8 = 2;

/// Paths of the fallback signal record and the start of its line, made
/// before any crash so that the handler only copies bytes.
struct SignalRecordPaths {
    temporary: CString,
    record: CString,
    /// `app=… version=… `, percent-encoded.
    prefix: Vec<u8>,
}
static SIGNAL_RECORD: OnceLock<SignalRecordPaths> = OnceLock::new();

/// Keeps the native handler in place; dropping it hands later signals back
/// to whatever handled them before.
pub(crate) struct SignalGuard(());

impl SignalGuard {
    pub(crate) fn attach(installed: &Installed) -> Result<SignalGuard, String> {
        let incoming = installed.outbox_dir.join(crate::INCOMING_DIR);
        // Made now: the signal handler can only write into a folder that
        // exists. An outbox that cannot be made is no reason to refuse the
        // handler: the watcher may still take the crash.
        let _ = crate::create_private_dir(&incoming);
        let name = format!("{}-{}.signal", installed.pid, crate::unix_millis());
        let paths = SignalRecordPaths {
            temporary: CString::new(incoming.join(format!(".{name}.tmp")).as_os_str().as_bytes())
                .map_err(|e| e.to_string())?,
            record: CString::new(incoming.join(name).as_os_str().as_bytes())
                .map_err(|e| e.to_string())?,
            prefix: format!(
                "app={} version={} ",
                crate::protocol::percent_encode(&installed.app_name),
                crate::protocol::percent_encode(&installed.app_version)
            )
            .into_bytes(),
        };
        let _ = SIGNAL_RECORD.set(paths);

        // SAFETY: the callback follows the rules of a signal context: it only
        // loads atomics, sleeps, talks on an already-open socket, and makes
        // raw system calls on buffers that live on its stack.
        let event = unsafe { crash_handler::make_crash_event(on_crash) };
        let handler = CrashHandler::attach(event).map_err(|e| e.to_string())?;
        if HANDLER.set(handler).is_err() {
            return Err("a crash handler is already attached".into());
        }
        register_exit_handler();
        DISABLED.store(false, Ordering::Release);
        Ok(SignalGuard(()))
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        DISABLED.store(true, Ordering::Release);
    }
}

/// `exit()` (from `main` returning or `std::process::exit`) ends the
/// process in order, even after a panic that was already reported: only a
/// death by signal leaves the watcher without a goodbye. glibc's `on_exit`
/// also hands over the exit status, which the watcher reports when
/// `[report] ReportExitCodes` asks it to.
#[cfg(target_env = "gnu")]
fn register_exit_handler() {
    extern "C" {
        fn on_exit(
            function: extern "C" fn(libc::c_int, *mut libc::c_void),
            argument: *mut libc::c_void,
        ) -> libc::c_int;
    }
    extern "C" fn goodbye_at_exit(status: libc::c_int, _: *mut libc::c_void) {
        link::say_goodbye(Some(status));
    }
    // SAFETY: registering a plain `extern "C" fn` with glibc's on_exit.
    unsafe {
        on_exit(goodbye_at_exit, std::ptr::null_mut());
    }
}

#[cfg(not(target_env = "gnu"))]
fn register_exit_handler() {
    extern "C" fn goodbye_at_exit() {
        link::say_goodbye(None);
    }
    // SAFETY: registering a plain `extern "C" fn` with atexit.
    unsafe {
        libc::atexit(goodbye_at_exit);
    }
}

fn on_crash(context: &CrashContext) -> CrashEventResult {
    if DISABLED.load(Ordering::Acquire) {
        return CrashEventResult::Handled(false);
    }
    let signal = context.siginfo.ssi_signo as i32;
    if signal == libc::SIGABRT && PANIC_PHASE.load(Ordering::Acquire) == PANIC_DUMPED {
        // The abort that ends a panic already reported.
        return CrashEventResult::Handled(false);
    }
    let a_real_signal = PANIC_PHASE.load(Ordering::Acquire) == PANIC_NONE;
    let line = signal_line(context);
    let dumped = link::wait_connected(link::CRASH_WAIT)
        && link::dump_client().is_some_and(|client| {
            // The signal's own facts first (who sent it, the fault address):
            // they reach the watcher even when the dump cannot be written.
            if a_real_signal {
                let _ = client
                    .send_message(crate::protocol::MessageKind::Signal as u32, line.as_bytes());
            }
            client.request_dump(context).is_ok()
        });
    if !dumped && a_real_signal {
        write_signal_record(&line);
    }
    if signal == libc::SIGTRAP && a_real_signal && context.siginfo.ssi_code > 0 {
        // A breakpoint is a trap, not a fault: returning runs on past it
        // instead of raising it again. Queue it, so that once the previous
        // handler is back the process ends by SIGTRAP as it would have.
        // SAFETY: tgkill on this very thread.
        unsafe {
            libc::syscall(libc::SYS_tgkill, context.pid, context.tid, libc::SIGTRAP);
        }
    }
    if a_real_signal
        && context.siginfo.ssi_code <= 0
        && [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE].contains(&signal)
    {
        // A fault signal sent with kill(). The crash-handler crate sends it
        // again when this returns; to the previous handler, Rust's runtime
        // one, it is no fault in a stack guard, so that handler returns and
        // the process would run on. "Handled" puts the default action back
        // instead: the process ends by the signal it was sent.
        return CrashEventResult::Handled(true);
    }
    // Not "handled": the previous handlers run again, so the process dies
    // exactly as it would have without crashmail (Rust's stack-overflow
    // message included).
    CrashEventResult::Handled(false)
}

/// Asks the watcher for a dump of the process at the panic site.
pub(crate) fn dump_for_panic() {
    PANIC_PHASE.store(PANIC_DUMPING, Ordering::Release);
    if let Some(handler) = HANDLER.get() {
        handler.simulate_signal(libc::SIGABRT as u32);
    }
    PANIC_PHASE.store(PANIC_DUMPED, Ordering::Release);
}

/// Lets the watcher ptrace this process even under Yama's restricted mode.
///
/// Calls prctl directly rather than `CrashHandler::set_ptracer`, which takes
/// the handler's lock: a crash on another thread holds that lock while it
/// waits for this very connection, and the two would wait for each other.
pub(crate) fn allow_ptrace_by(pid: u32) {
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PTRACER, pid as libc::c_ulong, 0, 0, 0);
    }
}

pub(crate) fn current_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

pub(crate) fn leaked_ref<T>(pointer: *mut T) -> Option<&'static T> {
    // SAFETY: every non-null pointer stored in the link comes from
    // `Box::leak` and is never freed.
    unsafe { pointer.as_ref() }
}

/// `app=… version=… signal=… code=… pid=… sender=… addr=… time=…`, built
/// on the stack.
fn signal_line(context: &CrashContext) -> LineBuffer {
    let (sender, address) = sender_and_address(context);
    let mut line = LineBuffer::new();
    if let Some(paths) = SIGNAL_RECORD.get() {
        line.push_str(&paths.prefix);
    }
    line.push_str(b"signal=");
    line.push_u64(context.siginfo.ssi_signo as u64);
    line.push_str(b" code=");
    line.push_i64(context.siginfo.ssi_code as i64);
    line.push_str(b" pid=");
    line.push_u64(context.pid as u64);
    line.push_str(b" sender=");
    line.push_u64(sender as u64);
    line.push_str(b" addr=");
    line.push_u64(address);
    line.push_str(b" time=");
    // SAFETY: time(NULL) is async-signal-safe.
    line.push_u64(unsafe { libc::time(std::ptr::null_mut()) } as u64);
    line.push_str(b"\n");
    line
}

/// The sender's pid (for a signal sent with kill or tgkill) and the fault
/// address (for a fault), read where the kernel's `siginfo_t` keeps them.
///
/// The crash context holds the kernel's `siginfo_t` bytes typed as a
/// `signalfd_siginfo`, whose fields lie elsewhere: its `ssi_pid` and
/// `ssi_addr` read padding. In `siginfo_t` both live at byte 16 on 64-bit
/// Linux (and the signal number and code, at 0 and 8, agree).
fn sender_and_address(context: &CrashContext) -> (u32, u64) {
    const SIGINFO_UNION: usize = 16;
    // SAFETY: `siginfo` is a 128-byte plain-data struct; reading its bytes
    // is always valid.
    let raw: &[u8; 128] = unsafe { &*(std::ptr::addr_of!(context.siginfo).cast::<[u8; 128]>()) };
    let mut pid = [0u8; 4];
    pid.copy_from_slice(&raw[SIGINFO_UNION..SIGINFO_UNION + 4]);
    let mut address = [0u8; 8];
    address.copy_from_slice(&raw[SIGINFO_UNION..SIGINFO_UNION + 8]);
    let code = context.siginfo.ssi_code;
    if code <= 0 {
        // Sent: the union holds the sender.
        (u32::from_ne_bytes(pid), 0)
    } else {
        // A fault: the union holds the address.
        (0, u64::from_ne_bytes(address))
    }
}

/// Writes the signal line to the outbox's `incoming/` folder with
/// async-signal-safe calls only.
fn write_signal_record(line: &LineBuffer) {
    let Some(paths) = SIGNAL_RECORD.get() else {
        return;
    };
    // SAFETY: open/write/fsync/close/rename are async-signal-safe and the
    // paths are NUL-terminated C strings made at install time.
    unsafe {
        let fd = libc::open(
            paths.temporary.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o600,
        );
        if fd < 0 {
            return;
        }
        let bytes = line.as_bytes();
        let written = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        libc::fsync(fd);
        libc::close(fd);
        if written == bytes.len() as isize {
            libc::rename(paths.temporary.as_ptr(), paths.record.as_ptr());
        }
    }
}

/// A fixed-size line built without allocating.
struct LineBuffer {
    bytes: [u8; 256],
    len: usize,
}

impl LineBuffer {
    fn new() -> Self {
        LineBuffer {
            bytes: [0; 256],
            len: 0,
        }
    }

    fn push_str(&mut self, text: &[u8]) {
        for &byte in text {
            if self.len < self.bytes.len() {
                self.bytes[self.len] = byte;
                self.len += 1;
            }
        }
    }

    fn push_u64(&mut self, mut value: u64) {
        let mut digits = [0u8; 20];
        let mut count = 0;
        loop {
            digits[count] = b'0' + (value % 10) as u8;
            count += 1;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        digits[..count].reverse();
        self.push_str(&digits[..count]);
    }

    fn push_i64(&mut self, value: i64) {
        if value < 0 {
            self.push_str(b"-");
        }
        self.push_u64(value.unsigned_abs());
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::LineBuffer;

    #[test]
    fn line_buffer_formats_numbers_without_allocating() {
        let mut line = LineBuffer::new();
        line.push_str(b"a=");
        line.push_u64(0);
        line.push_str(b" b=");
        line.push_u64(18_446_744_073_709_551_615);
        line.push_str(b" c=");
        line.push_i64(-42);
        assert_eq!(line.as_bytes(), b"a=0 b=18446744073709551615 c=-42");
    }
}
