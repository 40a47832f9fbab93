//! Reading minidumps: the signal, the crashing thread's frames, the modules.
//!
//! Used by the watcher (to name the signal and the top frames in the report)
//! and by `inspect` (to show the stack when there is no text backtrace).

use crate::report::{Frame, SignalFacts};
use crate::symbolize::LocalSymbolizer;
use minidump::{Minidump, MinidumpException, MinidumpModuleList, MinidumpSystemInfo, Module};
use std::path::PathBuf;

/// What a minidump says about a crash.
#[derive(Clone, Debug, Default)]
pub struct DumpAnalysis {
    pub signal: Option<SignalFacts>,
    /// The crashing thread's frames, top first.
    pub frames: Vec<Frame>,
    pub thread_count: usize,
    /// All threads' frames, for `inspect --threads`.
    pub threads: Vec<(u32, Option<String>, Vec<Frame>)>,
    /// `path (build id)` of every module, main executable first.
    pub modules: Vec<String>,
    /// The crashing thread's stack pointer at the crash.
    pub stack_pointer: Option<u64>,
    /// What the dump writer could not read, in words; `None` for a whole dump.
    pub incomplete: Option<String>,
}

/// The dump writer's record of what it could not read (its "soft errors",
/// JSON), in one line for a support engineer. Refused ptrace is the common
/// case and is named; anything else is quoted, shortened.
pub fn describe_soft_errors(json: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    if value.as_array().is_some_and(|errors| errors.is_empty()) || value.is_null() {
        return None;
    }
    let text = value.to_string();
    if let Some(at) = text.find("\"PtraceAttachFailed\":") {
        let errno: i32 = text[at + "\"PtraceAttachFailed\":".len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0);
        let errno = match errno {
            libc::EPERM => "EPERM: not permitted".to_string(),
            libc::ESRCH => "ESRCH: the thread was gone".to_string(),
            other => format!("errno {other}"),
        };
        return Some(format!(
            "minidump incomplete: ptrace refused ({errno}); the watcher could not stop the application's threads, so the dump has no thread stacks, and the signal and fault address come from the application's own handler"
        ));
    }
    let mut shortened: String = text.chars().take(300).collect();
    if shortened.len() < text.len() {
        shortened.push('…');
    }
    Some(format!(
        "minidump incomplete: the dump writer reported {shortened}"
    ))
}

/// Frames shown in a summary.
pub const TOP_FRAMES: usize = 12;

/// Reads a minidump and walks its crashing thread's stack. `symbol_paths`
/// are folders of Breakpad `.sym` files; without them frames show module +
/// offset.
pub fn analyse(bytes: &[u8], symbol_paths: &[PathBuf]) -> Result<DumpAnalysis, String> {
    analyse_threads(bytes, symbol_paths, true, None)
}

/// As [`analyse`], naming the frames of the crashing thread only: what a
/// report needs, in a fraction of the time (naming a frame can mean reading
/// a compilation unit's debug info). `threads` stays empty.
///
/// `registers` are the crashing thread's, as the application's own handler
/// saw them: when the dump has no thread list (ptrace was refused), they
/// still give the stack pointer and the function that crashed.
pub fn analyse_crash(bytes: &[u8], registers: Option<Registers>) -> Result<DumpAnalysis, String> {
    analyse_threads(bytes, &[], false, registers)
}

/// The crashing thread's registers that matter to a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registers {
    pub instruction_pointer: u64,
    pub stack_pointer: u64,
}

fn analyse_threads(
    bytes: &[u8],
    symbol_paths: &[PathBuf],
    all_threads: bool,
    registers: Option<Registers>,
) -> Result<DumpAnalysis, String> {
    let dump = Minidump::read(bytes).map_err(|e| format!("not a readable minidump: {e}"))?;
    let mut analysis = DumpAnalysis::default();

    let system = dump.get_stream::<MinidumpSystemInfo>().ok();
    if let Ok(exception) = dump.get_stream::<MinidumpException>() {
        let record = &exception.raw.exception_record;
        let reason = system
            .as_ref()
            .map(|s| exception.get_crash_reason(s.os, s.cpu).to_string());
        let code_name = reason
            .as_deref()
            .and_then(|r| r.split_once(" / "))
            .map(|(_, code)| code.trim().to_string());
        let number = record.exception_code as i32;
        analysis.signal = Some(SignalFacts {
            number,
            name: crashmail_handler::protocol::signal_name(number),
            code: record.exception_flags as i32 as i64,
            code_name,
            address: Some(record.exception_address),
            thread_id: Some(exception.get_crashing_thread_id()),
            thread_name: None,
        });
        let misc = dump.get_stream::<minidump::MinidumpMiscInfo>().ok();
        analysis.stack_pointer = system
            .as_ref()
            .and_then(|system| exception.context(system, misc.as_ref()))
            .map(|context| context.get_stack_pointer());
    }
    if let Ok(errors) = dump.get_stream::<minidump::MinidumpSoftErrors>() {
        analysis.incomplete = describe_soft_errors(errors.as_ref());
    }
    if let Ok(modules) = dump.get_stream::<MinidumpModuleList>() {
        // A process that symbolised its own backtrace (a panic) has mapped
        // its debug files and its executable again: those mappings are not
        // modules of the program.
        let mut seen = std::collections::HashSet::new();
        analysis.modules = modules
            .iter()
            .filter(|m| !m.code_file().starts_with("/usr/lib/debug/"))
            .filter(|m| seen.insert(m.code_file().to_string()))
            .map(|m| match m.code_identifier() {
                Some(id) => format!("{} ({id})", m.code_file()),
                None => m.code_file().to_string(),
            })
            .collect();
    }

    // Breakpad symbols (`--symbols`) name frames and give CFI; the modules
    // themselves, where this machine has the very build that crashed, give
    // their `.eh_frame` CFI, so the walk need not guess by stack scanning.
    let mut providers = minidump_unwind::MultiSymbolProvider::new();
    let supplier = minidump_unwind::simple_symbol_supplier(symbol_paths.to_vec());
    providers.add(Box::new(minidump_unwind::Symbolizer::new(supplier)));
    if let (Some(system), Ok(modules)) = (&system, dump.get_stream::<MinidumpModuleList>()) {
        let local: Vec<minidump::MinidumpModule> = modules
            .iter()
            .filter(|m| {
                m.code_identifier()
                    .is_some_and(|id| crate::symbolize::is_same_build(&m.code_file(), id.as_ref()))
            })
            .cloned()
            .collect();
        if !local.is_empty() {
            let local = MinidumpModuleList::from_modules(local);
            let unwinder = pollster::block_on(
                minidump_unwind::debuginfo::DebugInfoSymbolProvider::new(system, &local),
            );
            providers.add(Box::new(unwinder));
        }
    }
    let symbolizer = providers;
    let mut local = LocalSymbolizer::with_search_dirs(symbol_paths.to_vec());
    match pollster::block_on(minidump_processor::process_minidump(&dump, &symbolizer)) {
        Ok(state) => {
            analysis.thread_count = state.threads.len();
            for stack in state.threads.iter().filter(|_| all_threads) {
                let frames = stack
                    .frames
                    .iter()
                    .flat_map(|f| frames_of(f, &mut local))
                    .collect();
                analysis
                    .threads
                    .push((stack.thread_id, stack.thread_name.clone(), frames));
            }
            let crashing = state
                .requesting_thread
                .and_then(|index| state.threads.get(index))
                .or_else(|| {
                    let tid = analysis.signal.as_ref().and_then(|s| s.thread_id)?;
                    state.threads.iter().find(|t| t.thread_id == tid)
                });
            if let Some(stack) = crashing {
                if let Some(signal) = analysis.signal.as_mut() {
                    signal.thread_name = stack.thread_name.clone().filter(|n| !n.is_empty());
                }
                analysis.frames = stack
                    .frames
                    .iter()
                    .flat_map(|f| frames_of(f, &mut local))
                    .collect();
            }
        }
        Err(e) => return Err(format!("the stack could not be walked: {e}")),
    }
    if let Some(registers) = registers {
        analysis
            .stack_pointer
            .get_or_insert(registers.stack_pointer);
        // No thread list to walk: the module the instruction pointer is in
        // still names the function that crashed.
        if analysis.frames.is_empty() {
            let address = registers.instruction_pointer;
            let modules = dump.get_stream::<MinidumpModuleList>().ok();
            if let Some(module) = modules
                .as_ref()
                .and_then(|modules| modules.module_at_address(address))
            {
                let build_id = module.code_identifier().map(|id| id.to_string());
                analysis.frames = local
                    .frames(
                        &module.code_file(),
                        build_id.as_deref(),
                        address.saturating_sub(module.base_address()),
                    )
                    .unwrap_or_default();
            }
        }
    }
    // Freeing the parsed debug info takes milliseconds; the report need
    // not wait for it.
    let _ = std::thread::Builder::new()
        .name("crashmail-free".into())
        .spawn(move || drop(local));
    Ok(analysis)
}

/// The frame as the walk named it, or, when it could not, as the module on
/// this machine names it (inlined frames included, innermost first).
fn frames_of(frame: &minidump_unwind::StackFrame, local: &mut LocalSymbolizer) -> Vec<Frame> {
    if frame.function_name.is_none() {
        if let Some(module) = &frame.module {
            let build_id = module.code_identifier().map(|id| id.to_string());
            let offset = frame.instruction.saturating_sub(module.base_address());
            if let Some(frames) = local.frames(&module.code_file(), build_id.as_deref(), offset) {
                return frames;
            }
        }
    }
    vec![frame_of(frame)]
}

fn frame_of(frame: &minidump_unwind::StackFrame) -> Frame {
    let module_offset = frame.module.as_ref().map(|module| {
        let name = module.code_file();
        let short = name.rsplit('/').next().unwrap_or(&name).to_string();
        format!(
            "{short} + {:#x}",
            frame.instruction.saturating_sub(module.base_address())
        )
    });
    let function = match (&frame.function_name, &module_offset) {
        (Some(function), _) => function.clone(),
        (None, Some(module_offset)) => module_offset.clone(),
        (None, None) => format!("{:#x}", frame.instruction),
    };
    let location = match (&frame.source_file_name, frame.source_line) {
        (Some(file), Some(line)) => Some(format!("{file}:{line}")),
        (Some(file), None) => Some(file.clone()),
        _ => None,
    };
    Frame { function, location }
}

/// A fault at (or a page or so below) the stack pointer is the stack
/// running into its guard page; a bad pointer faults anywhere else.
pub fn is_stack_overflow(signal: i32, fault_address: u64, stack_pointer: Option<u64>) -> bool {
    let Some(sp) = stack_pointer else {
        return false;
    };
    matches!(signal, libc::SIGSEGV | libc::SIGBUS)
        && fault_address != 0
        && fault_address <= sp.saturating_add(4096)
        && sp.saturating_sub(fault_address) <= 1024 * 1024
}

/// One-line reason for a signal: `SIGSEGV (SEGV_MAPERR) at 0x0`, or
/// `stack overflow (SIGSEGV at 0x7ffe…)`.
pub fn crash_reason(signal: &SignalFacts, stack_overflow: bool) -> String {
    if stack_overflow {
        return format!(
            "stack overflow ({} at {:#x})",
            signal.name,
            signal.address.unwrap_or(0)
        );
    }
    signal_reason(signal)
}

/// One-line reason for a signal: `SIGSEGV (SEGV_MAPERR) at 0x0`.
pub fn signal_reason(signal: &SignalFacts) -> String {
    let mut reason = signal.name.clone();
    if let Some(code) = &signal.code_name {
        reason.push_str(&format!(" ({code})"));
    }
    if let Some(address) = signal.address {
        if matches!(
            signal.number,
            libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE
        ) {
            reason.push_str(&format!(" at {address:#x}"));
        }
    }
    reason
}
