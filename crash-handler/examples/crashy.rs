//! An application that dies on request, every way a process can die,
//! embedding crashmail exactly as the README shows.
//!
//! ```sh
//! cargo build --example crashy -p crashmail-handler
//! CRASHMAIL_WATCHER=target/debug/crashmail target/debug/examples/crashy segv
//! target/debug/examples/crashy --list
//! ```
//!
//! `CRASHY_WITHOUT_CRASHMAIL=1` runs the same crash without crashmail, to
//! compare how the process ends. `CRASHY_LOG` names the log file (default
//! `crashy.log` in the temporary folder, so that a checkout stays clean).
// Crashing on purpose needs raw pointers, signals and inline assembly.
#![allow(unsafe_code)]

use std::io::Write;
use std::sync::Mutex;

/// Every crash this program knows, with what it does.
const KINDS: &[(&str, &str)] = &[
    ("segv", "writes through a null pointer (SIGSEGV)"),
    ("segv-thread", "the same, on a spawned thread"),
    ("bus", "reads a mapped file past its truncated end (SIGBUS)"),
    ("bus-thread", "the same, on a spawned thread"),
    ("ill", "executes an illegal instruction (SIGILL)"),
    ("ill-thread", "the same, on a spawned thread"),
    ("fpe", "divides an integer by zero in machine code (SIGFPE)"),
    ("fpe-thread", "the same, on a spawned thread"),
    ("abort", "calls libc abort() (SIGABRT)"),
    ("abort-thread", "the same, on a spawned thread"),
    ("trap", "executes a breakpoint instruction (SIGTRAP)"),
    ("trap-thread", "the same, on a spawned thread"),
    (
        "stack-overflow",
        "recurses until the main thread's stack is gone",
    ),
    (
        "stack-overflow-thread",
        "the same on a Rust thread with a 256 KiB stack",
    ),
    (
        "stack-overflow-pthread",
        "the same on a thread made with pthread_create",
    ),
    ("panic", "panic!(\"bad index {}\", 7) on the main thread"),
    (
        "panic-thread",
        "the same on a spawned thread; main exits with 101",
    ),
    (
        "panic-thread-join",
        "panics on a spawned thread; main unwraps the join, and so panics too",
    ),
    ("panic-string", "panics with a String payload"),
    ("boom", "panic!(\"boom\") (build it with panic = \"abort\" too)"),
    ("panic-any", "std::panic::panic_any(42u32): not a string"),
    (
        "double-panic",
        "panics, then panics again in a Drop while unwinding (abort)",
    ),
    (
        "panic-logger-lock",
        "panics while another thread holds its logger's lock (breadcrumbs are kept through that logger)",
    ),
    (
        "double-free",
        "frees a pointer twice: glibc aborts inside malloc",
    ),
    (
        "kill-segv",
        "is sent SIGSEGV by another process (kill -SEGV)",
    ),
    ("sigkill", "is killed with SIGKILL: no handler runs"),
    (
        "sigterm",
        "is sent SIGTERM, a request to stop (not reported)",
    ),
    (
        "exec",
        "replaces itself with `sleep 3` (exec): not reported",
    ),
    (
        "exit-at-once",
        "calls _exit(4): the process ends without its exit handlers",
    ),
    (
        "oom",
        "allocates until the out-of-memory killer ends it (run it under a memory limit, e.g. systemd-run --user -p MemoryMax=64M)",
    ),
    (
        "exit-3",
        "exits with status 3 (an orderly exit: not reported)",
    ),
    (
        "segv-heavy",
        "8 threads and 100 MB of heap, then a null write (for the benchmarks)",
    ),
    (
        "idle-heavy",
        "8 threads and 100 MB of heap, then sleeps 30 s (for the benchmarks)",
    ),
    ("idle", "sleeps 10 s (for the benchmarks)"),
    ("clean", "runs and ends normally: no report"),
];

/// The lock the application's logger uses.
static LOGGER: Mutex<()> = Mutex::new(());

/// The application's log file: `$CRASHY_LOG`, else `crashy.log` in the
/// temporary folder.
fn log_path() -> std::path::PathBuf {
    std::env::var_os("CRASHY_LOG")
        .map(Into::into)
        .unwrap_or_else(|| std::env::temp_dir().join("crashy.log"))
}

/// The application's own logger: a line per record, appended to its log
/// file under a lock.
struct FileLogger;

impl log::Log for FileLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let Ok(_held) = LOGGER.lock() else {
            return;
        };
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path())
        {
            let _ = writeln!(file, "{}", record.args());
        }
    }

    fn flush(&self) {}
}

fn log_line(text: &str) {
    log::info!("{text}");
}

fn main() {
    let kind = std::env::args().nth(1).unwrap_or_default();
    if kind == "--list" || kind.is_empty() {
        for (name, what) in KINDS {
            println!("{name:<24} {what}");
        }
        return;
    }
    if !KINDS.iter().any(|(name, _)| *name == kind) {
        eprintln!("crashy: unknown kind {kind:?}; `crashy --list` lists them");
        std::process::exit(2);
    }

    // The application's logger, its last records kept as breadcrumbs; and
    // its `tracing` events, kept the same way.
    let _ = crashmail_handler::breadcrumbs::BreadcrumbLogger::new(FileLogger)
        .install(log::LevelFilter::Info);
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let _ = tracing_subscriber::registry()
            .with(crashmail_handler::breadcrumbs::BreadcrumbLayer)
            .try_init();
    }

    // Exactly as the README tells applications to embed crashmail.
    let log = log_path();
    let _crashmail = if std::env::var_os("CRASHY_WITHOUT_CRASHMAIL").is_none() {
        let guard = crashmail_handler::install(crashmail_handler::options!().log_file(&log))
            .expect("crashmail installs");
        // A real application has run a while before it crashes;
        // CRASHY_AT_ONCE plays a short-lived program that does not.
        if std::env::var_os("CRASHY_AT_ONCE").is_none() {
            guard.wait_for_watcher(std::time::Duration::from_secs(5));
        }
        Some(guard)
    } else {
        None
    };

    log_line("crashy started");
    tracing::info!(kind = %kind, "about to crash");
    log_line(&format!("last line before the crash: {kind}"));
    crash(&kind);
}

/// 100 MB of touched heap and 8 more threads, as a busy application has.
fn heavy() -> Vec<u8> {
    let heap = vec![1u8; 100 * 1024 * 1024];
    for _ in 0..8 {
        std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_secs(60)));
    }
    std::hint::black_box(heap)
}

fn unix_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

fn on_a_thread(work: fn()) {
    let worker = std::thread::Builder::new()
        .name("worker".into())
        .spawn(work)
        .expect("spawn");
    if worker.join().is_err() {
        std::process::exit(101);
    }
}

fn crash(kind: &str) {
    match kind {
        "segv" => null_write(),
        "segv-thread" => on_a_thread(null_write),
        "bus" => bus_error(),
        "bus-thread" => on_a_thread(bus_error),
        "ill" => illegal_instruction(),
        "ill-thread" => on_a_thread(illegal_instruction),
        "fpe" => divide_by_zero(),
        "fpe-thread" => on_a_thread(divide_by_zero),
        "abort" => abort(),
        "abort-thread" => on_a_thread(abort),
        "trap" => breakpoint(),
        "trap-thread" => on_a_thread(breakpoint),
        "stack-overflow" => {
            recurse(0);
        }
        "stack-overflow-thread" => {
            let worker = std::thread::Builder::new()
                .name("small-stack".into())
                .stack_size(256 * 1024)
                .spawn(|| {
                    recurse(0);
                })
                .expect("spawn");
            let _ = worker.join();
        }
        "stack-overflow-pthread" => overflow_on_a_pthread(),
        "panic" => parse_order_line(7),
        "panic-thread" => on_a_thread(|| parse_order_line(9)),
        "panic-thread-join" => std::thread::Builder::new()
            .name("worker".into())
            .spawn(|| parse_order_line(9))
            .expect("spawn")
            .join()
            .unwrap(),
        "panic-string" => std::panic::panic_any(format!("order {} is missing", 1042)),
        "panic-any" => std::panic::panic_any(42u32),
        "boom" => boom(),
        "double-panic" => {
            let _guard = PanicsOnDrop;
            panic!("first panic");
        }
        "panic-logger-lock" => {
            let (held, wait) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _lock = LOGGER.lock();
                let _ = held.send(());
                std::thread::sleep(std::time::Duration::from_secs(60));
            });
            let _ = wait.recv();
            panic!("panic while the logger is locked");
        }
        "double-free" => double_free(),
        "kill-segv" => {
            // The sender logs its pid before it sends, so that the report's
            // sender can be checked against it.
            let sender = std::process::Command::new("sh")
                .args(["-c", "read go; exec kill -SEGV $PPID"])
                .stdin(std::process::Stdio::piped())
                .spawn();
            if let Ok(mut sender) = sender {
                log_line(&format!("SIGSEGV comes from pid {}", sender.id()));
                if let Some(mut go) = sender.stdin.take() {
                    let _ = go.write_all(b"go\n");
                }
                let _ = sender.wait();
            }
            std::thread::sleep(std::time::Duration::from_secs(10));
        }
        "sigkill" => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &std::process::id().to_string()])
                .status();
            std::thread::sleep(std::time::Duration::from_secs(10));
        }
        "sigterm" => {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &std::process::id().to_string()])
                .status();
            std::thread::sleep(std::time::Duration::from_secs(10));
        }
        "exec" => {
            use std::os::unix::process::CommandExt;
            let failed = std::process::Command::new("sleep").arg("3").exec();
            eprintln!("crashy: exec failed: {failed}");
        }
        // SAFETY: _exit ends the process; nothing runs after it.
        "exit-at-once" => unsafe { libc::_exit(4) },
        "oom" => {
            // Touched, so the pages are really used; kept, so none is freed.
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 4 * 1024 * 1024]);
                std::hint::black_box(&hoard);
            }
        }
        "exit-3" => std::process::exit(3),
        "segv-heavy" => {
            let _heap = heavy();
            if std::env::var_os("CRASHY_TIMING").is_some() {
                eprintln!("crash_at_unix_us={}", unix_micros());
            }
            null_write();
        }
        "idle-heavy" => {
            let _heap = heavy();
            println!("ready");
            std::thread::sleep(std::time::Duration::from_secs(30));
        }
        "idle" => std::thread::sleep(std::time::Duration::from_secs(10)),
        _ => {}
    }
}

#[inline(never)]
fn null_write() {
    let target: *mut u64 = std::hint::black_box(std::ptr::null_mut());
    // SAFETY: none; the crash is the point.
    unsafe { target.write_volatile(0xdead) };
}

#[inline(never)]
fn bus_error() {
    let path = std::env::temp_dir().join(format!("crashy-bus-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("a file to map");
    file.set_len(4096).expect("size");
    // SAFETY: none; reading past the truncated end is the point.
    unsafe {
        use std::os::fd::AsRawFd;
        let map = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(map, libc::MAP_FAILED);
        file.set_len(0).expect("truncate");
        let _ = std::fs::remove_file(&path);
        std::ptr::read_volatile(map as *const u8);
    }
}

#[inline(never)]
fn illegal_instruction() {
    // SAFETY: none; the illegal instruction is the point.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        std::arch::asm!("ud2");
        #[cfg(target_arch = "aarch64")]
        std::arch::asm!("udf #0");
    }
}

#[inline(never)]
fn divide_by_zero() {
    // Rust checks its own divisions; the hardware division does not.
    #[cfg(target_arch = "x86_64")]
    // SAFETY: none; the fault is the point.
    unsafe {
        std::arch::asm!("xor edx, edx", "xor ecx, ecx", "mov eax, 1", "div ecx", out("eax") _, out("ecx") _, out("edx") _);
    }
    #[cfg(not(target_arch = "x86_64"))]
    // aarch64 does not trap on division by zero: raise it.
    unsafe {
        libc::raise(libc::SIGFPE);
    }
}

#[inline(never)]
fn abort() {
    // SAFETY: abort takes no arguments.
    unsafe { libc::abort() };
}

#[inline(never)]
fn breakpoint() {
    // SAFETY: none; the trap is the point.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        std::arch::asm!("int3");
        #[cfg(target_arch = "aarch64")]
        std::arch::asm!("brk #0");
    }
}

/// Real recursion, even in release builds: the optimiser cannot see through
/// `black_box`, so it cannot turn this into a loop.
#[inline(never)]
#[allow(unconditional_recursion)] // it ends when the stack does
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    std::hint::black_box(recurse(depth + 1)) + frame[0]
}

fn overflow_on_a_pthread() {
    extern "C" fn start(_: *mut libc::c_void) -> *mut libc::c_void {
        recurse(0);
        std::ptr::null_mut()
    }
    // SAFETY: plain pthread calls with initialised attributes.
    unsafe {
        let mut attributes: libc::pthread_attr_t = std::mem::zeroed();
        libc::pthread_attr_init(&mut attributes);
        libc::pthread_attr_setstacksize(&mut attributes, 256 * 1024);
        let mut thread: libc::pthread_t = std::mem::zeroed();
        libc::pthread_create(&mut thread, &attributes, start, std::ptr::null_mut());
        libc::pthread_join(thread, std::ptr::null_mut());
    }
}

#[inline(never)]
fn boom() {
    panic!("boom");
}

#[inline(never)]
fn parse_order_line(index: usize) {
    let fields = ["order", "42"];
    if index >= fields.len() {
        panic!("bad index {}", index);
    }
}

struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("second panic, in a destructor");
    }
}

#[inline(never)]
fn double_free() {
    // SAFETY: none; the heap corruption is the point.
    unsafe {
        let pointer = libc::malloc(64);
        libc::free(pointer);
        libc::free(std::hint::black_box(pointer));
    }
}
