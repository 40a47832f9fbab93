//! Code addresses of a backtrace, as module + offset.
//!
//! std prints a backtrace's addresses in its full format (`{:#}`); the
//! process's own memory map says which module each address is in.

use crate::protocol::NativeFrame;
use std::path::PathBuf;

/// The distinct frame addresses of a full-format std backtrace, in order,
/// each placed in its module.
pub(crate) fn native_frames(full_backtrace: &str) -> Vec<NativeFrame> {
    let modules = mapped_modules();
    let mut frames: Vec<NativeFrame> = Vec::new();
    let mut last_address = None;
    for address in frame_addresses(full_backtrace) {
        // Inlined functions repeat their caller's address.
        if last_address == Some(address) {
            continue;
        }
        last_address = Some(address);
        if let Some(module) = modules.iter().find(|m| (m.start..m.end).contains(&address)) {
            frames.push(NativeFrame {
                module: module.path.clone(),
                offset: address - module.base,
            });
        }
    }
    frames
}

/// `   4:     0x55f1dcc4a773 - main::inner` → 0x55f1dcc4a773.
fn frame_addresses(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.lines().filter_map(|line| {
        let (index, rest) = line.trim_start().split_once(':')?;
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let hex = rest.trim_start().strip_prefix("0x")?;
        let hex = hex.split(|c: char| !c.is_ascii_hexdigit()).next()?;
        u64::from_str_radix(hex, 16).ok()
    })
}

/// An executable mapping of a file.
struct MappedModule {
    path: PathBuf,
    start: u64,
    end: u64,
    /// Where the file's first mapping starts: offsets count from here.
    base: u64,
}

fn mapped_modules() -> Vec<MappedModule> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut lowest: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut executable = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms), Some(_offset), Some(_dev), Some(_inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let path: String = fields.collect::<Vec<_>>().join(" ");
        if !path.starts_with('/') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        let base = lowest.entry(path.clone()).or_insert(start);
        *base = (*base).min(start);
        if perms.contains('x') {
            executable.push((path, start, end));
        }
    }
    executable
        .into_iter()
        .map(|(path, start, end)| MappedModule {
            base: lowest[&path],
            path: PathBuf::from(path),
            start,
            end,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_from_the_full_format() {
        let text = "   0:     0x55f1dcc6533b - std::backtrace::trace
                               at /rustc/x/library/std/src/backtrace.rs:331:13
   1:     0x55f1dcc6533b - <std::backtrace::Backtrace>::create
   2:     0x55f1dcc4a773 - main::inner::h7532c820846d1e7a
";
        assert_eq!(
            frame_addresses(text).collect::<Vec<_>>(),
            vec![0x55f1dcc6533b, 0x55f1dcc6533b, 0x55f1dcc4a773]
        );
    }

    #[test]
    fn this_process_maps_its_own_code() {
        let here = addresses_are_read_from_the_full_format as *const () as u64;
        let module = mapped_modules()
            .into_iter()
            .find(|m| (m.start..m.end).contains(&here))
            .expect("the test's own code is mapped");
        assert!(module.base <= module.start);
        assert_eq!(module.path, std::env::current_exe().unwrap());
    }
}
