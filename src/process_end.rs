//! How the watched application ended, for a death no handler saw (SIGKILL,
//! the out-of-memory killer, `_exit`).
//!
//! The watcher is the application's child, not its parent, so it cannot
//! `wait` for it. Two kernel interfaces tell a non-parent the exit status:
//!
//! - `/proc/<pid>/stat`'s exit code, shown from the moment the process starts
//!   exiting until its parent collects it (a zombie keeps it);
//! - a pidfd held from before the death: since Linux 6.15 `PIDFD_GET_INFO`
//!   with `PIDFD_INFO_EXIT` gives the status once the parent has collected
//!   it, which is usually at once.
//!
//! Between them no window is left on a current kernel; on an older one the
//! parent may collect the status first, and the report says that it is
//! unknown.
#![allow(unsafe_code)]

use crate::assemble::Ending;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long to look for the status of an application whose connections
/// closed: its parent collects it at once, or it stays a zombie.
const LOOK_FOR: Duration = Duration::from_secs(2);

/// What became of a process whose connections to the watcher closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Ended(Ending),
    /// It runs on: it closed its link, or replaced itself with `exec`.
    StillRunning,
    /// It ended, and its parent collected the status before it could be read.
    Unknown,
}

/// A watch on one process, opened while it runs.
pub struct ProcessEnd {
    pid: u32,
    pidfd: Option<OwnedFd>,
}

impl ProcessEnd {
    /// Starts watching `pid`. The pidfd must exist before the process dies
    /// for the kernel to keep its exit status for us.
    pub fn watch(pid: u32) -> ProcessEnd {
        // SAFETY: pidfd_open takes a pid and flags and returns a new file
        // descriptor or -1; nothing else is touched.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        let pidfd = (fd >= 0).then(|| {
            // SAFETY: `fd` was just returned by the kernel and is owned by
            // nobody else.
            unsafe { OwnedFd::from_raw_fd(fd as i32) }
        });
        ProcessEnd { pid, pidfd }
    }

    /// How the process ended, once it has. Waits a short time for the
    /// kernel to tell; a process that still runs after it (it closed its
    /// link, or replaced itself with `exec`) did not end.
    pub fn fate(&self) -> Fate {
        let deadline = Instant::now() + LOOK_FOR;
        loop {
            if let Some(ending) = self.told_by_pidfd().or_else(|| told_by_proc_stat(self.pid)) {
                return Fate::Ended(ending);
            }
            if Instant::now() >= deadline {
                return if self.still_running() {
                    Fate::StillRunning
                } else {
                    Fate::Unknown
                };
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// A pidfd becomes readable when its process has exited; without one,
    /// `/proc` shows a live process.
    fn still_running(&self) -> bool {
        use std::os::fd::AsRawFd;
        match &self.pidfd {
            Some(pidfd) => {
                let mut poll = libc::pollfd {
                    fd: pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, no waiting.
                let ready = unsafe { libc::poll(&mut poll, 1, 0) };
                ready == 0
            }
            None => crate::watcher::process_alive(self.pid),
        }
    }

    fn told_by_pidfd(&self) -> Option<Ending> {
        use std::os::fd::AsRawFd;
        let pidfd = self.pidfd.as_ref()?;
        let mut info = PidfdInfo {
            mask: PIDFD_INFO_EXIT,
            ..PidfdInfo::default()
        };
        // SAFETY: PIDFD_GET_INFO fills at most the size encoded in the
        // request, which is the size of `info`.
        let done = unsafe { libc::ioctl(pidfd.as_raw_fd(), PIDFD_GET_INFO, &mut info) };
        (done == 0 && info.mask & PIDFD_INFO_EXIT != 0)
            .then(|| Ending::from_wait_status(info.exit_code))
    }
}

/// The exit code `/proc/<pid>/stat` shows while the process exits or is a
/// zombie (0 while it runs, as for a clean exit: a zombie tells them apart).
fn told_by_proc_stat(pid: u32) -> Option<Ending> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // proc(5) numbers the fields from 1 (pid); `rest` starts at field 3.
    let state = fields.first()?;
    let exit_code: i32 = fields.get(52 - 3)?.parse().ok()?;
    (exit_code != 0 || state.starts_with(['Z', 'X'])).then(|| Ending::from_wait_status(exit_code))
}

/// `struct pidfd_info` as of its first version (64 bytes), whose last field
/// became `exit_code` in Linux 6.15.
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    exit_code: i32,
}

const PIDFD_INFO_EXIT: u64 = 1 << 3;
/// `_IOWR(0xFF, 11, struct pidfd_info)`.
const PIDFD_GET_INFO: libc::c_ulong =
    (3 << 30) | ((std::mem::size_of::<PidfdInfo>() as libc::c_ulong) << 16) | (0xFF << 8) | 11;

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn the_request_has_the_kernels_number() {
        assert_eq!(std::mem::size_of::<PidfdInfo>(), 64);
        assert_eq!(PIDFD_GET_INFO, 0xc040_ff0b);
    }

    #[test]
    fn a_killed_process_is_named_killed_after_its_parent_collected_it() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let end = ProcessEnd::watch(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(end.fate(), Fate::Ended(Ending::Killed(libc::SIGKILL)));
    }

    #[test]
    fn an_exit_status_is_read_while_the_process_is_a_zombie() {
        let child = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        let end = ProcessEnd::watch(child.id());
        // Not collected: the zombie shows its exit code.
        assert_eq!(end.fate(), Fate::Ended(Ending::Exited(7)));
        drop(child);
    }

    #[test]
    fn a_process_that_runs_on_did_not_end() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let end = ProcessEnd::watch(child.id());
        assert_eq!(end.fate(), Fate::StillRunning);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
