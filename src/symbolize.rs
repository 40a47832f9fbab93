//! Naming native frames from the modules' own debug information.
//!
//! A minidump names a frame only by module and offset. On the machine where
//! the crash happened (the watcher's case) the modules are still on disk, so
//! their symbol tables and DWARF line tables give function, file and line.
//! A module is used only when its build id matches the one recorded in the
//! minidump: a rebuilt binary at the same path must not lend wrong names.
#![allow(unsafe_code)]

use crate::report::Frame;
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};
use std::collections::HashMap;

/// One module file, opened once.
struct ModuleFile {
    loader: addr2line::Loader,
    /// Its build id (hex), when it has one.
    build_id: Option<String>,
    /// The lowest segment address: offsets in the process map onto it.
    base_vaddr: u64,
    /// Address ranges of executable code; a probe elsewhere is not a frame.
    code: Vec<(u64, u64)>,
    /// Function symbols with their sizes, sorted by address. A stripped
    /// library keeps only its exported symbols: an address must lie inside
    /// one, or it gets no name rather than its neighbour's.
    functions: Vec<(u64, u64, String)>,
}

impl ModuleFile {
    fn function_at(&self, probe: u64) -> Option<&str> {
        let index = self
            .functions
            .partition_point(|(address, _, _)| *address <= probe);
        let (address, size, name) = self.functions.get(index.checked_sub(1)?)?;
        (probe < address + size).then_some(name.as_str())
    }
}

/// Symbolises frames by module path and offset, caching opened modules.
#[derive(Default)]
pub struct LocalSymbolizer {
    modules: HashMap<String, Option<ModuleFile>>,
    /// Folders searched for a module (or its `.debug` file) by name when the
    /// path the minidump recorded does not hold the crashed build.
    search: Vec<std::path::PathBuf>,
}

impl LocalSymbolizer {
    /// Also looks for modules in these folders (`inspect --symbols`).
    pub fn with_search_dirs(search: Vec<std::path::PathBuf>) -> LocalSymbolizer {
        LocalSymbolizer {
            modules: HashMap::new(),
            search,
        }
    }
}

impl LocalSymbolizer {
    /// The frames (innermost inlined frame first) at `offset` in the module
    /// at `path` whose build id is `build_id` (hex). `None` when the file is
    /// missing, differs from the crashed build, or has no symbol there.
    pub fn frames(
        &mut self,
        path: &str,
        build_id: Option<&str>,
        offset: u64,
    ) -> Option<Vec<Frame>> {
        let search = &self.search;
        let module = self
            .modules
            .entry(path.to_string())
            .or_insert_with(|| {
                take_opened_ahead(path, build_id)
                    .or_else(|| open_module(path, build_id))
                    .or_else(|| {
                        // Elsewhere, the build id must be known and match.
                        let build_id = build_id?;
                        let name = path.rsplit('/').next()?;
                        search.iter().find_map(|dir| {
                            [dir.join(name), dir.join(format!("{name}.debug"))]
                                .iter()
                                .find_map(|candidate| {
                                    open_module(&candidate.to_string_lossy(), Some(build_id))
                                })
                        })
                    })
            })
            .as_ref()?;
        let probe = module.base_vaddr + offset;
        if !module
            .code
            .iter()
            .any(|(start, end)| (*start..*end).contains(&probe))
        {
            return None;
        }
        // The symbol table names the function the address is in, fully
        // qualified. DWARF adds inlined callees, but in `line-tables-only`
        // builds it knows them by bare names only (`run`, `write_volatile<u64>`),
        // which would make frames and signatures depend on the build profile:
        // bare inlined names are left out and the outer frame takes the
        // symbol table's name.
        let symbol = module.function_at(probe).map(|name| {
            crate::report::strip_hash(&addr2line::demangle_auto(name.into(), None)).to_string()
        });
        if symbol.as_deref().is_some_and(is_runtime_entry) {
            // Below every frame of interest, and its debug info is a large
            // unit of std's: reading it would cost more than the rest of
            // the stack together. The symbol table's name says enough.
            return Some(vec![Frame {
                function: symbol?,
                location: None,
            }]);
        }
        let mut frames = Vec::new();
        if let Ok(mut iter) = module.loader.find_frames(probe) {
            while let Ok(Some(frame)) = iter.next() {
                let function = frame.function.as_ref().and_then(|f| {
                    f.demangle()
                        .ok()
                        .map(|n| crate::report::strip_hash(&n).to_string())
                });
                let location = frame.location.as_ref().and_then(|l| {
                    let file = l.file?;
                    Some(match l.line {
                        Some(line) => format!("{file}:{line}"),
                        None => file.to_string(),
                    })
                });
                frames.push(Frame {
                    function: function.unwrap_or_default(),
                    location,
                });
            }
        }
        if let Some(outer) = frames.last_mut() {
            if !is_qualified(&outer.function) {
                if let Some(symbol) = &symbol {
                    outer.function = symbol.clone();
                }
            }
        }
        let outer = frames.len().saturating_sub(1);
        let mut frames: Vec<Frame> = frames
            .into_iter()
            .enumerate()
            .filter(|(index, frame)| *index == outer || is_qualified(&frame.function))
            .map(|(_, frame)| frame)
            .filter(|frame| !frame.function.is_empty())
            .collect();
        if frames.is_empty() {
            frames.push(Frame {
                function: symbol?,
                location: None,
            });
        }
        Some(frames)
    }
}

/// Modules opened before they were needed, each waiting for the first
/// symbolizer that asks for it.
static OPENED_AHEAD: std::sync::Mutex<Vec<(String, ModuleFile)>> =
    std::sync::Mutex::new(Vec::new());

/// Opens the module at `path` now, so that naming frames in it later does
/// not wait for its symbols and debug info to load. The watcher does this
/// for the application's executable while the dump is being written.
pub fn open_ahead(path: &str) {
    if let Some(module) = open_module(path, None) {
        if let Ok(mut opened) = OPENED_AHEAD.lock() {
            opened.push((path.to_string(), module));
        }
    }
}

fn take_opened_ahead(path: &str, expected_build_id: Option<&str>) -> Option<ModuleFile> {
    let mut opened = OPENED_AHEAD.lock().ok()?;
    let index = opened.iter().position(|(opened_path, module)| {
        opened_path == path && build_id_matches(module.build_id.as_deref(), expected_build_id)
    })?;
    Some(opened.swap_remove(index).1)
}

fn open_module(path: &str, expected_build_id: Option<&str>) -> Option<ModuleFile> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: the mapping is read-only and dropped before this returns; a
    // module replaced underneath us can at worst give a wrong build id.
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let object = object::File::parse(&*map).ok()?;
    let build_id = object.build_id().ok().flatten().map(hex);
    if !build_id_matches(build_id.as_deref(), expected_build_id) {
        return None;
    }
    let base_vaddr = object
        .segments()
        .map(|segment| segment.address())
        .min()
        .unwrap_or(0)
        & !0xfff;
    let code = object
        .sections()
        .filter(|section| section.kind() == object::SectionKind::Text)
        .map(|section| (section.address(), section.address() + section.size()))
        .collect();
    let mut functions: Vec<(u64, u64, String)> = object
        .symbols()
        .chain(object.dynamic_symbols())
        .filter(|symbol| symbol.kind() == object::SymbolKind::Text && symbol.size() > 0)
        .filter_map(|symbol| {
            Some((
                symbol.address(),
                symbol.size(),
                symbol.name().ok()?.to_string(),
            ))
        })
        .collect();
    functions.sort_by_key(|(address, _, _)| *address);
    functions.dedup_by_key(|(address, _, _)| *address);
    let loader = addr2line::Loader::new(path).ok()?;
    Some(ModuleFile {
        loader,
        build_id,
        base_vaddr,
        code,
        functions,
    })
}

/// True when the file at `path` is the build the minidump recorded.
pub fn is_same_build(path: &str, build_id: &str) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    // SAFETY: as in `open_module`.
    let Ok(map) = (unsafe { memmap2::Mmap::map(&file) }) else {
        return false;
    };
    let actual = object::File::parse(&*map)
        .ok()
        .and_then(|object| object.build_id().ok().flatten().map(hex));
    build_id_matches(actual.as_deref(), Some(build_id))
}

/// True when no build id is expected, or the module has exactly that one
/// (hex, either case).
fn build_id_matches(actual: Option<&str>, expected: Option<&str>) -> bool {
    expected
        .is_none_or(|expected| actual.is_some_and(|actual| actual.eq_ignore_ascii_case(expected)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Names the frames of a panic's backtrace (module + offset, as the panic
/// hook recorded them). The first address is where the backtrace was taken;
/// the others are return addresses, looked up one byte back so that a call
/// at the end of a function is not taken for the next one.
pub fn native_frames(raw: &[crashmail_handler::protocol::NativeFrame]) -> Vec<Frame> {
    let mut symbolizer = LocalSymbolizer::default();
    let mut frames = Vec::new();
    for (index, frame) in raw.iter().enumerate() {
        let path = frame.module.to_string_lossy();
        let probe = if index == 0 {
            frame.offset
        } else {
            frame.offset.saturating_sub(1)
        };
        match symbolizer.frames(&path, None, probe) {
            Some(named) => frames.extend(named),
            None => {
                let short = path.rsplit('/').next().unwrap_or(&path);
                frames.push(Frame {
                    function: format!("{short} + {:#x}", frame.offset),
                    location: None,
                });
            }
        }
    }
    frames
}

/// Rust's own entry code under `main` and under a spawned thread's closure.
fn is_runtime_entry(function: &str) -> bool {
    function.starts_with("std::rt::lang_start_internal")
        || (function.starts_with("std::sys::") && function.ends_with("::thread_start"))
}

/// `a::b` is qualified; `call_once<fn() -> std::process::ExitCode>` is not:
/// the path inside its generic parameters does not count.
fn is_qualified(function: &str) -> bool {
    crate::report::normalise_function(function).contains("::")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_entry_frames_are_recognised_and_nothing_else() {
        assert!(is_runtime_entry("std::rt::lang_start_internal"));
        assert!(is_runtime_entry(
            "std::sys::pal::unix::thread::Thread::new::thread_start"
        ));
        assert!(!is_runtime_entry("std::rt::lang_start::{{closure}}"));
        assert!(!is_runtime_entry("crashy::main"));
        assert!(!is_runtime_entry("orders::thread_start"));
    }
}
