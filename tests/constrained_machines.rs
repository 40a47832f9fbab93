//! Crashes on machines that make reporting hard: a full disk, ptrace refused,
//! the out-of-memory killer, a container's memory limit. Real mounts, real
//! cgroups and real capabilities, so these tests run as root, as CI does.
// The pre_exec hook below joins a cgroup in the child.
#![allow(unsafe_code)]

mod common;

use common::*;
use crashmail::cgroup::MemoryCgroup;
use std::ffi::CString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

/// Runs a case with a debug and with a release build of `crashy`.
fn in_both_builds(case: fn(&'static str)) {
    for profile in ["dev", "release"] {
        case(profile);
    }
}

/// `crashy kind`, built with `profile`, embedding crashmail and reporting to
/// this harness.
fn crashy_in(profile: &'static str, harness: &Harness, kind: &str) -> Command {
    harness.crashy(&crashy(profile), kind)
}

/// A small tmpfs mounted over a folder for the length of a test.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, bytes: u64) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs needs root");
        Tmpfs(at.to_path_buf())
    }

    /// A tmpfs that holds at most `files` files and folders.
    fn mount_with_files(at: &Path, bytes: u64, files: u64) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes},nr_inodes={files},mode=0700"))
            .arg("tmpfs")
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs needs root");
        Tmpfs(at.to_path_buf())
    }

    /// Makes empty files until only `left` more can be made; returns them.
    fn fill_files_leaving(&self, left: usize) -> Vec<PathBuf> {
        let mut made = Vec::new();
        while let Ok(path) = {
            let path = self.0.join(format!("filler-{}", made.len()));
            std::fs::File::create_new(&path).map(|_| path)
        } {
            made.push(path);
        }
        for path in made.drain(made.len().saturating_sub(left)..) {
            std::fs::remove_file(path).unwrap();
        }
        made
    }

    /// Fills the file system with one file until `free` bytes are left.
    fn fill_leaving(&self, free: u64) {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0x55u8; 64 * 1024];
        while file.write_all(&chunk).and_then(|_| file.flush()).is_ok() {}
        let written = file.metadata().unwrap().len();
        file.set_len(written.saturating_sub(free)).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A memory cgroup of its own under this test process's, with a limit and
/// no swap; processes join it in `pre_exec`.
struct TestCgroup {
    cgroup: MemoryCgroup,
    procs: CString,
}

impl TestCgroup {
    fn new(limit: u64) -> TestCgroup {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let own = MemoryCgroup::of(None).expect("this machine has a memory cgroup");
        let number = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = own
            .dir
            .join(format!("crashmail-test-{}-{number}", std::process::id()));
        if !own.v1 {
            // v2 gives a child the memory files only when its parent asks.
            let _ = std::fs::write(own.dir.join("cgroup.subtree_control"), "+memory");
        }
        std::fs::create_dir(&dir).expect("creating a cgroup needs root");
        let write = |name: &str, value: &str| {
            std::fs::write(dir.join(name), value)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
        };
        if own.v1 {
            write("memory.limit_in_bytes", &limit.to_string());
            if dir.join("memory.memsw.limit_in_bytes").exists() {
                write("memory.memsw.limit_in_bytes", &limit.to_string());
            }
        } else {
            write("memory.max", &limit.to_string());
            if dir.join("memory.swap.max").exists() {
                write("memory.swap.max", "0");
            }
        }
        let procs = CString::new(
            dir.join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        TestCgroup {
            cgroup: MemoryCgroup { dir, ..own },
            procs,
        }
    }

    /// Makes `command`'s process (and so its watcher) start in this cgroup.
    fn run_inside(&self, command: &mut Command) {
        let procs = self.procs.clone();
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0": the process that writes.
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The cgroup can go once its last process (the watcher) has.
        eventually(Duration::from_secs(10), || {
            std::fs::remove_dir(&self.cgroup.dir).is_ok() || !self.cgroup.dir.exists()
        });
    }
}

/// A watcher that may not trace the application: started through
/// `setpriv` without `CAP_SYS_PTRACE`, it holds fewer capabilities than the
/// application, so the kernel refuses it ptrace and the application's
/// memory (EPERM), as for a watcher of another user or a confined one.
fn watcher_without_ptrace(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("watcher-without-ptrace");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec setpriv --bounding-set -sys_ptrace --inh-caps -all '{}' \"$@\"\n",
            crashmail_exe()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn every_file(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(every_file(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn a_full_disk_sends_the_report_without_the_minidump_and_leaves_no_partial_file() {
    in_both_builds(
        a_full_disk_sends_the_report_without_the_minidump_and_leaves_no_partial_file_with,
    );
}

fn a_full_disk_sends_the_report_without_the_minidump_and_leaves_no_partial_file_with(
    profile: &'static str,
) {
    let harness = Harness::new();
    let disk = Tmpfs::mount(&harness.outbox, 2 * MIB);
    // Room for the report, not for its minidump: the application's large
    // environment (noise does not compress) is in the minidump.
    disk.fill_leaving(48 * 1024);
    let padding = String::from_utf8(noisy_log(120 * 1024)).unwrap();
    let status = crashy_in(profile, &harness, "segv")
        .env("CRASHY_PADDING", padding)
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "it dies as before");

    let (mail, report) = the_one_report(&harness);
    assert_eq!(report["kind"], "signal");
    assert!(report["reason"].as_str().unwrap().contains("SIGSEGV"));
    let notes = report["notes"].to_string();
    assert!(
        notes.contains("minidump.dmp was left out") && notes.contains("No space left on device"),
        "{notes}"
    );
    assert!(!mail.entries.contains_key("minidump.dmp"));
    // The stack read from the dump before it was left out.
    assert!(
        report["frames"].to_string().contains("crashy::"),
        "{}",
        report["frames"]
    );
    let partial: Vec<PathBuf> = every_file(&harness.outbox)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".dmp") || name.contains(".tmp")
        })
        .collect();
    assert!(partial.is_empty(), "left behind: {partial:?}");
}

#[test]
fn a_disk_without_a_byte_free_still_sends_the_report_from_memory() {
    in_both_builds(a_disk_without_a_byte_free_still_sends_the_report_from_memory_with);
}

fn a_disk_without_a_byte_free_still_sends_the_report_from_memory_with(profile: &'static str) {
    let harness = Harness::new();
    let disk = Tmpfs::mount(&harness.outbox, 2 * MIB);
    disk.fill_leaving(0);
    let status = crashy_in(profile, &harness, "segv").status().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "it dies as before");

    let (_, report) = the_one_report(&harness);
    assert_eq!(report["kind"], "signal");
    assert!(report["reason"].as_str().unwrap().contains("SIGSEGV"));
    let notes = report["notes"].to_string();
    assert!(
        notes.contains("could not be stored in the outbox") && notes.contains("sent from memory"),
        "{notes}"
    );
    assert!(
        report["frames"].to_string().contains("crashy::"),
        "{}",
        report["frames"]
    );
}

/// Room on the disk for the watcher's recovery copy of a crash (its note
/// and raw minidump, two files, written while the report is built) and for
/// no further file, so that the report cannot be stored: it goes from
/// memory, and its recovery copy is not left to be sent a second time by
/// the next flush.
#[test]
fn a_report_sent_from_memory_is_not_sent_again_from_its_recovery_copy() {
    let harness = Harness::new();
    let disk = Tmpfs::mount_with_files(&harness.outbox, 8 * MIB, 64);
    // A first crash makes the outbox's folders and files.
    let status = crashy_in("dev", &harness, "segv").status().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSEGV));
    the_one_report(&harness);

    let fillers = disk.fill_files_leaving(3);
    let status = crashy_in("dev", &harness, "segv").status().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSEGV));
    assert!(watchers_gone(&harness.outbox, Duration::from_secs(30)));
    let messages = harness.receiver.wait_for(2, MAIL_WAIT);
    assert_eq!(messages.len(), 2, "{}", harness.watcher_log());
    let second = report_json(&parse_mail(&messages[1].data));
    assert!(
        second["notes"].to_string().contains("sent from memory"),
        "{}\n{}",
        second["notes"],
        harness.watcher_log()
    );

    for filler in fillers {
        std::fs::remove_file(filler).unwrap();
    }
    let flush = harness.flush_outbox();
    assert_eq!(
        harness.receiver.wait_for(3, Duration::from_secs(2)).len(),
        2,
        "the crash was sent twice: {}",
        String::from_utf8_lossy(&flush.stdout)
    );
    let outbox = crashmail::outbox::Outbox::open(&harness.outbox).unwrap();
    assert_eq!(
        zips_in(&outbox, crashmail::outbox::PENDING),
        0,
        "a second report of the crash waits: {}",
        String::from_utf8_lossy(&flush.stdout)
    );
    let left = every_file(&harness.outbox.join("run"));
    assert!(left.is_empty(), "left in run/: {left:?}");
}

#[test]
fn ptrace_refused_still_sends_the_report_and_says_why_the_minidump_is_incomplete() {
    in_both_builds(
        ptrace_refused_still_sends_the_report_and_says_why_the_minidump_is_incomplete_with,
    );
}

fn ptrace_refused_still_sends_the_report_and_says_why_the_minidump_is_incomplete_with(
    profile: &'static str,
) {
    let harness = Harness::new();
    let status = crashy_in(profile, &harness, "segv")
        .env(
            "CRASHMAIL_WATCHER",
            watcher_without_ptrace(harness.dir.path()),
        )
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "it dies as before");

    let (mail, report) = the_one_report(&harness);
    assert_eq!(report["kind"], "signal");
    assert!(report["reason"].as_str().unwrap().contains("SIGSEGV"));
    let notes = report["notes"].to_string();
    assert!(
        notes.contains("minidump incomplete: ptrace refused (EPERM"),
        "the note says why: {notes}"
    );
    let log = String::from_utf8_lossy(&mail.entries["logs/app.log"]).into_owned();
    assert!(log.contains("last line before the crash: segv"), "{log}");
    // The function that crashed, from the registers the handler saw: crashes
    // in different places keep different signatures.
    assert!(
        report["frames"].to_string().contains("crashy::"),
        "{}",
        report["frames"]
    );

    // A stack overflow is still named one.
    let harness = Harness::new();
    let status = crashy_in(profile, &harness, "stack-overflow")
        .env(
            "CRASHMAIL_WATCHER",
            watcher_without_ptrace(harness.dir.path()),
        )
        .status()
        .unwrap();
    // Rust's runtime ends an overflow with SIGABRT, after crashmail's report.
    assert_eq!(status.signal(), Some(libc::SIGABRT));
    let (_, report) = the_one_report(&harness);
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .starts_with("stack overflow"),
        "{}",
        report["reason"]
    );
}

fn death(status: &ExitStatus) -> Option<i32> {
    status.signal()
}

#[test]
fn the_out_of_memory_killer_is_named_in_an_abnormal_exit_report() {
    in_both_builds(the_out_of_memory_killer_is_named_in_an_abnormal_exit_report_with);
}

fn the_out_of_memory_killer_is_named_in_an_abnormal_exit_report_with(profile: &'static str) {
    let harness = Harness::new();
    let cgroup = TestCgroup::new(96 * MIB);

    let mut without = crashy_in(profile, &harness, "oom");
    without.env("CRASHY_WITHOUT_CRASHMAIL", "1");
    cgroup.run_inside(&mut without);
    let without = without.status().unwrap();
    assert_eq!(death(&without), Some(libc::SIGKILL), "{without:?}");

    let mut with = crashy_in(profile, &harness, "oom");
    cgroup.run_inside(&mut with);
    let with = with.status().unwrap();
    assert_eq!(death(&with), Some(libc::SIGKILL), "it dies as before");

    let (mail, report) = the_one_report(&harness);
    assert_eq!(report["kind"], "abnormal-exit");
    let reason = report["reason"].as_str().unwrap();
    assert!(
        reason.contains("out-of-memory killer") && reason.contains("limit of 96 MiB"),
        "{reason}"
    );
    let log = String::from_utf8_lossy(&mail.entries["logs/app.log"]).into_owned();
    assert!(log.contains("last line before the crash: oom"), "{log}");
}

#[test]
fn system_json_gives_the_memory_limit_of_the_applications_container() {
    in_both_builds(system_json_gives_the_memory_limit_of_the_applications_container_with);
}

fn system_json_gives_the_memory_limit_of_the_applications_container_with(profile: &'static str) {
    let harness = Harness::new();
    let cgroup = TestCgroup::new(256 * MIB);
    let mut command = crashy_in(profile, &harness, "segv");
    cgroup.run_inside(&mut command);
    let status = command.status().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSEGV));

    let (mail, _) = the_one_report(&harness);
    let system: serde_json::Value = serde_json::from_slice(&mail.entries["system.json"]).unwrap();
    assert_eq!(system["memory_total"], 256 * MIB, "{system}");
    assert_eq!(system["memory_limited_by_cgroup"], true);
    let available = system["memory_available"].as_u64().unwrap();
    assert!(available > 0 && available < 256 * MIB, "{available}");
}

#[test]
fn system_json_carries_every_fact_and_names_the_container() {
    in_both_builds(system_json_carries_every_fact_and_names_the_container_with);
}

/// `crashy segv` in a mount namespace that looks like a Podman container
/// (its marker file, `/run/.containerenv`, on a private /run).
fn system_json_carries_every_fact_and_names_the_container_with(profile: &'static str) {
    let harness = Harness::new();
    let crashy = crashy_in(profile, &harness, "segv");
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs tmpfs /run && : > /run/.containerenv && exec \"$0\" \"$@\"")
        .arg(crashy.get_program())
        .args(crashy.get_args())
        .envs(
            crashy
                .get_envs()
                .filter_map(|(key, value)| value.map(|value| (key, value))),
        );
    for (key, value) in crashy.get_envs() {
        if value.is_none() {
            command.env_remove(key);
        }
    }
    let status = status_within(&mut command, Duration::from_secs(60)).unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{profile}");

    let (mail, _) = the_one_report(&harness);
    let system: serde_json::Value = serde_json::from_slice(&mail.entries["system.json"]).unwrap();
    // Podman's, or the mark of a container this test itself runs in.
    assert!(
        ["podman", "docker", "kubepods", "lxc", "containerd"]
            .contains(&system["container"].as_str().unwrap_or_default()),
        "{system}"
    );

    let text = |key: &str| system[key].as_str().unwrap_or_default().to_string();
    let number = |key: &str| system[key].as_f64().unwrap_or(-1.0);
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap();
    assert!(
        os_release.contains(&format!("NAME=\"{}\"", text("os_name"))),
        "os_name {:?} is not this machine's:\n{os_release}",
        text("os_name")
    );
    assert!(!text("os_version").is_empty(), "{system}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(text("kernel"), release.trim());
    assert_eq!(text("arch"), std::env::consts::ARCH);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, model)| model.trim().to_string())
        .unwrap();
    assert_eq!(text("cpu_model"), model);
    let processors = cpuinfo
        .lines()
        .filter(|line| line.starts_with("processor"))
        .count();
    assert_eq!(system["cpu_count"], processors);
    let (total, available) = (number("memory_total"), number("memory_available"));
    assert!(
        total > 0.0 && available > 0.0 && available <= total,
        "{system}"
    );
    let load = system["load_average"].as_array().unwrap();
    assert_eq!(load.len(), 3);
    assert!(load.iter().all(|l| l.as_f64().unwrap() >= 0.0), "{system}");
    assert!(number("system_uptime_s") > 0.0, "{system}");
    // crashy crashes right after it starts (it waits for its watcher first).
    let uptime = number("process_uptime_s");
    assert!(uptime > 0.0 && uptime < 30.0, "{system}");
    assert!(text("executable").ends_with("examples/crashy"), "{system}");
    assert!(!text("working_directory").is_empty(), "{system}");
    let process = &system["process"];
    assert!(process["resident"].as_u64().unwrap() > 0, "{system}");
    assert!(process["threads"].as_u64().unwrap() >= 1, "{system}");
    assert!(
        process["command_line"]
            .as_str()
            .unwrap()
            .ends_with("crashy segv"),
        "{system}"
    );
}
