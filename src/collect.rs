//! What the watcher gathers beside the dump: system facts and log tails.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// `system.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SystemInfo {
    pub os_name: Option<String>,
    pub os_version: Option<String>,
    pub kernel: Option<String>,
    pub arch: String,
    pub host: Option<String>,
    pub cpu_model: Option<String>,
    pub cpu_count: usize,
    /// Bytes; the cgroup's limit when the process runs under one.
    pub memory_total: u64,
    pub memory_available: u64,
    /// True when `memory_total` is a cgroup limit rather than the machine's RAM.
    pub memory_limited_by_cgroup: bool,
    pub load_average: [f64; 3],
    pub system_uptime_s: Option<u64>,
    pub container: Option<String>,
    /// How long the application had been running when it crashed.
    pub process_uptime_s: Option<f64>,
    pub executable: Option<String>,
    pub working_directory: Option<String>,
    /// The application as it was at the crash, read while it was still alive.
    #[serde(default)]
    pub process: Option<ProcessFacts>,
}

/// The crashed process's own facts.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessFacts {
    /// Resident memory, bytes.
    pub resident: Option<u64>,
    /// Peak resident memory, bytes.
    pub peak_resident: Option<u64>,
    pub threads: Option<u64>,
    /// Its command line, arguments joined by spaces (secrets masked later).
    pub command_line: Option<String>,
}

/// Reads a live process's facts from `/proc`.
pub fn process_facts(pid: u32) -> Option<ProcessFacts> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    let command_line = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|part| !part.is_empty())
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        });
    Some(ProcessFacts {
        resident: field("VmRSS:").map(|kib| kib * 1024),
        peak_resident: field("VmHWM:").map(|kib| kib * 1024),
        threads: field("Threads:"),
        command_line,
    })
}

impl SystemInfo {
    /// What is known without asking the system library.
    fn default_for_this_machine() -> SystemInfo {
        SystemInfo {
            arch: std::env::consts::ARCH.to_string(),
            cpu_count: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            ..SystemInfo::default()
        }
    }

    /// "Debian GNU/Linux 12 (kernel 6.1.0)".
    pub fn os_line(&self) -> String {
        let name = self
            .os_version
            .clone()
            .or_else(|| self.os_name.clone())
            .unwrap_or_else(|| "unknown OS".to_string());
        match &self.kernel {
            Some(kernel) => format!("{name} (kernel {kernel}, {})", self.arch),
            None => format!("{name} ({})", self.arch),
        }
    }
}

/// How long collecting the machine's facts may take before a report goes
/// without them (with what is known without asking: architecture, CPUs).
const SYSTEM_INFO_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The facts of this machine now, within [`SYSTEM_INFO_LIMIT`]. Reads only
/// cheap, local sources (no scan of every process on the machine); the limit
/// is for a `/proc` or `/sys` read that blocks on a machine in trouble.
pub fn system_info() -> SystemInfo {
    let (sender, receiver) = std::sync::mpsc::channel();
    let collecting = std::thread::Builder::new()
        .name("crashmail-system".into())
        .spawn(move || {
            let _ = sender.send(read_system_info());
        });
    match collecting {
        Ok(_) => receiver
            .recv_timeout(SYSTEM_INFO_LIMIT)
            .unwrap_or_else(|_| SystemInfo::default_for_this_machine()),
        Err(_) => read_system_info(),
    }
}

fn read_system_info() -> SystemInfo {
    use sysinfo::{CpuRefreshKind, System};
    let mut system = match System::new() {
        Ok(system) => system,
        Err(_) => return SystemInfo::default_for_this_machine(),
    };
    system.refresh_memory();
    system.refresh_cpu_list(CpuRefreshKind::nothing());
    // The watcher is the application's child, so its memory cgroup is the
    // application's: a container's or a service's limit is what the
    // application had, not the machine's RAM.
    let cgroup = crate::cgroup::MemoryCgroup::of(None);
    let (memory_total, memory_available, limited) = match cgroup
        .as_ref()
        .and_then(|c| c.limit().map(|limit| (c, limit)))
    {
        Some((cgroup, limit)) if limit > 0 && limit < system.total_memory() => {
            let used = cgroup.usage().unwrap_or(0);
            let available = limit.saturating_sub(used).min(system.available_memory());
            (limit, available, true)
        }
        _ => (system.total_memory(), system.available_memory(), false),
    };
    let load = System::load_average().ok();
    SystemInfo {
        os_name: System::name().ok(),
        os_version: System::long_os_version().ok(),
        kernel: System::kernel_version().ok(),
        arch: System::cpu_arch(),
        host: System::host_name().ok(),
        cpu_model: system
            .cpus()
            .first()
            .map(|cpu| cpu.brand().trim().to_string())
            .filter(|b| !b.is_empty()),
        cpu_count: system.cpus().len().max(1),
        memory_total,
        memory_available,
        memory_limited_by_cgroup: limited,
        load_average: load.map(|l| [l.one, l.five, l.fifteen]).unwrap_or_default(),
        system_uptime_s: System::uptime().ok(),
        container: detect_container(),
        process_uptime_s: None,
        executable: None,
        working_directory: None,
        process: None,
    }
}

fn detect_container() -> Option<String> {
    detect_container_in(Path::new("/"), std::env::var("container").ok())
}

/// The container a machine whose root is `root` runs in, by the marks
/// container runtimes leave: Docker's `/.dockerenv`, Podman's
/// `/run/.containerenv`, the `container` variable systemd-nspawn and others
/// set, or a runtime's name in init's cgroup path.
fn detect_container_in(root: &Path, container_variable: Option<String>) -> Option<String> {
    if root.join(".dockerenv").exists() {
        return Some("docker".into());
    }
    if root.join("run/.containerenv").exists() {
        return Some("podman".into());
    }
    if let Some(value) = container_variable.filter(|v| !v.is_empty()) {
        return Some(value);
    }
    let cgroup = std::fs::read_to_string(root.join("proc/1/cgroup")).unwrap_or_default();
    ["docker", "kubepods", "lxc", "containerd"]
        .into_iter()
        .find(|marker| cgroup.contains(marker))
        .map(str::to_string)
}

/// The tail of one log file, byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogTail {
    pub source: PathBuf,
    /// Entry name in the zip, unique within the report: `logs/app.log`.
    pub entry: String,
    pub bytes: Vec<u8>,
    /// Bytes dropped from the front of the file.
    pub truncated: u64,
}

/// The log files to read: globs (`*`, `?` in the file name) expanded, and
/// each file's rotated sibling (`app.log.1`) added when it was written after
/// `since` (the application's start): then it holds part of this run, maybe
/// the moments before the crash.
pub fn log_paths(configured: &[PathBuf], since: Option<std::time::SystemTime>) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for path in configured {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.contains(['*', '?']) {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let mut matches: Vec<PathBuf> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|entry| glob_match(&name, &entry.file_name().to_string_lossy()))
                .map(|entry| entry.path())
                .collect();
            matches.sort();
            paths.extend(matches);
        } else {
            paths.push(path.clone());
        }
    }
    let mut with_siblings = Vec::new();
    for path in paths {
        let sibling = PathBuf::from(format!("{}.1", path.display()));
        let recent = since.is_some_and(|since| {
            std::fs::metadata(&sibling)
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified >= since)
        });
        if recent && !with_siblings.contains(&sibling) {
            with_siblings.push(sibling);
        }
        if !with_siblings.contains(&path) {
            with_siblings.push(path);
        }
    }
    with_siblings
}

/// `*` any run of characters, `?` one character.
fn glob_match(pattern: &str, name: &str) -> bool {
    let (pattern, name): (Vec<char>, Vec<char>) =
        (pattern.chars().collect(), name.chars().collect());
    let (mut p, mut n, mut star, mut mark) = (0, 0, None, 0);
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some(p);
            mark = n;
            p += 1;
        } else if let Some(star) = star {
            p = star + 1;
            mark += 1;
            n = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// Reads the last `max_bytes` of each file. Missing or unreadable files are
/// reported in the returned notes, not as errors: a report is never held up
/// by a log.
pub fn log_tails(files: &[PathBuf], max_bytes: u64) -> (Vec<LogTail>, Vec<String>) {
    log_tails_ending_at(files, max_bytes, &[])
}

/// The same, each tail ending where `ends` says the file ended at the crash
/// (when it does), so that what was written later is left out.
pub fn log_tails_ending_at(
    files: &[PathBuf],
    max_bytes: u64,
    ends: &[(PathBuf, u64)],
) -> (Vec<LogTail>, Vec<String>) {
    let mut tails = Vec::new();
    let mut notes = Vec::new();
    let mut used = HashSet::new();
    let mut seen_sources = HashSet::new();
    for path in files {
        if !seen_sources.insert(path.clone()) {
            continue;
        }
        let end = ends.iter().find(|(p, _)| p == path).map(|(_, end)| *end);
        match read_tail(path, max_bytes, end) {
            Ok((bytes, truncated, later)) => {
                let entry = unique_entry_name(path, &mut used);
                if truncated > 0 {
                    notes.push(format!(
                        "{entry}: the first {truncated} bytes of {} were left out",
                        path.display()
                    ));
                }
                if later > 0 {
                    notes.push(format!(
                        "{entry}: the {later} bytes written to {} after the crash were left out",
                        path.display()
                    ));
                }
                tails.push(LogTail {
                    source: path.clone(),
                    entry,
                    bytes,
                    truncated,
                });
            }
            Err(e) => notes.push(format!("log {} could not be read: {e}", path.display())),
        }
    }
    (tails, notes)
}

/// The last `max_bytes` of `path` up to `end` (its length at the crash;
/// the whole file when unknown, or when it has since shrunk: rotated), with
/// the bytes left out before and after.
fn read_tail(
    path: &Path,
    max_bytes: u64,
    end: Option<u64>,
) -> std::io::Result<(Vec<u8>, u64, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking, so that a FIFO or a device named as a log cannot hold
    // the watcher at `open`; then only regular files are read.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let now = metadata.len();
    let length = end.filter(|end| *end <= now).unwrap_or(now);
    let start = length.saturating_sub(max_bytes);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((length - start) as usize);
    file.take(length - start).read_to_end(&mut bytes)?;
    Ok((bytes, start, now - length))
}

/// `logs/<name>`; a second file of the same name gets its folder's name in
/// front (`logs/worker-app.log`), then a number.
fn unique_entry_name(path: &Path, used: &mut HashSet<String>) -> String {
    let name = path
        .file_name()
        .map(|n| sanitise_entry_part(&n.to_string_lossy()))
        .unwrap_or_else(|| "log".to_string());
    let mut candidate = format!("logs/{name}");
    if used.contains(&candidate) {
        let parent = path
            .parent()
            .and_then(|p| p.file_name())
            .map(|p| sanitise_entry_part(&p.to_string_lossy()))
            .unwrap_or_default();
        candidate = format!("logs/{parent}-{name}");
        let mut counter = 2;
        while used.contains(&candidate) {
            candidate = format!("logs/{name}.{counter}");
            counter += 1;
        }
    }
    used.insert(candidate.clone());
    candidate
}

fn sanitise_entry_part(part: &str) -> String {
    part.chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_told_by_their_runtimes_marks() {
        let root = tempfile::tempdir().unwrap();
        let at = |path: &str| root.path().join(path);
        assert_eq!(detect_container_in(root.path(), None), None);
        assert_eq!(detect_container_in(root.path(), Some(String::new())), None);
        std::fs::create_dir_all(at("proc/1")).unwrap();
        std::fs::write(at("proc/1/cgroup"), "0::/\n").unwrap();
        assert_eq!(detect_container_in(root.path(), None), None);
        std::fs::write(at("proc/1/cgroup"), "0::/kubepods/besteffort/pod1\n").unwrap();
        assert_eq!(
            detect_container_in(root.path(), None).as_deref(),
            Some("kubepods")
        );
        assert_eq!(
            detect_container_in(root.path(), Some("systemd-nspawn".into())).as_deref(),
            Some("systemd-nspawn")
        );
        std::fs::create_dir_all(at("run")).unwrap();
        std::fs::write(at("run/.containerenv"), "").unwrap();
        assert_eq!(
            detect_container_in(root.path(), None).as_deref(),
            Some("podman")
        );
        std::fs::write(at(".dockerenv"), "").unwrap();
        assert_eq!(
            detect_container_in(root.path(), None).as_deref(),
            Some("docker")
        );
    }

    #[test]
    fn tail_is_byte_exact_and_counts_what_was_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let mut content = b"first line\n".to_vec();
        content.extend_from_slice(b"ok\n\xff\xfe raw\n");
        std::fs::write(&path, &content).unwrap();
        let (tails, notes) = log_tails(std::slice::from_ref(&path), 9);
        assert_eq!(tails[0].bytes, content[content.len() - 9..].to_vec());
        assert_eq!(tails[0].truncated, content.len() as u64 - 9);
        assert_eq!(notes.len(), 1);
        let (whole, _) = log_tails(&[path], 1 << 20);
        assert_eq!(whole[0].bytes, content);
    }

    #[test]
    fn same_names_in_different_folders_get_distinct_entries() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["a", "b"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            std::fs::write(dir.path().join(sub).join("app.log"), sub).unwrap();
        }
        let files = vec![dir.path().join("a/app.log"), dir.path().join("b/app.log")];
        let (tails, _) = log_tails(&files, 100);
        assert_eq!(tails[0].entry, "logs/app.log");
        assert_eq!(tails[1].entry, "logs/b-app.log");
    }

    #[test]
    fn a_fifo_named_as_a_log_is_skipped_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let (tails, notes) = log_tails(&[fifo], 100);
        assert!(tails.is_empty());
        assert!(notes[0].contains("not a regular file"), "{notes:?}");
    }

    #[test]
    fn globs_expand_and_a_recent_rotated_sibling_comes_along() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["app.log", "app.log.1", "worker.log", "notes.txt"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let started = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let paths = log_paths(&[dir.path().join("*.log")], Some(started));
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["app.log.1", "app.log", "worker.log"]);
        // A sibling older than this run is left out.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        assert_eq!(
            log_paths(&[dir.path().join("app.log")], Some(later)).len(),
            1
        );
        assert!(glob_match("app-*.l?g", "app-2026.log"));
        assert!(!glob_match("app-*.log", "app.log"));
    }

    #[test]
    fn missing_log_is_a_note_not_an_error() {
        let (tails, notes) = log_tails(&[PathBuf::from("/nonexistent/x.log")], 100);
        assert!(tails.is_empty());
        assert!(notes[0].contains("could not be read"));
    }

    #[test]
    fn system_info_has_the_basics() {
        let info = system_info();
        assert!(info.cpu_count >= 1);
        assert!(info.memory_total > 0);
        assert!(!info.arch.is_empty());
    }
}
