//! A process's memory cgroup: the limit a container or a service manager put
//! on it, and how often the out-of-memory killer struck inside it.
//!
//! Read from `/proc/<pid>/cgroup` and `/proc/self/mountinfo`, for both
//! interfaces: cgroup v1 (`memory.limit_in_bytes`, `memory.oom_control`) and
//! v2 (`memory.max`, `memory.events`). Inside a container with its own cgroup
//! namespace the process's cgroup is the mount's root, and this works the
//! same.

use std::path::{Path, PathBuf};

/// One memory cgroup, as folders of the cgroup file system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryCgroup {
    /// The cgroup's own folder.
    pub dir: PathBuf,
    /// Where the hierarchy is mounted: limits are looked for up to here.
    pub mount: PathBuf,
    /// True for the v1 interface (the `memory` controller on its own mount).
    pub v1: bool,
}

impl MemoryCgroup {
    /// The memory cgroup of `pid`, or of this process for `None`.
    pub fn of(pid: Option<u32>) -> Option<MemoryCgroup> {
        let proc_dir = match pid {
            Some(pid) => format!("/proc/{pid}"),
            None => "/proc/self".to_string(),
        };
        let membership = std::fs::read_to_string(format!("{proc_dir}/cgroup")).ok()?;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        Self::from_tables(&membership, &mounts)
    }

    /// The cgroup named in a `/proc/<pid>/cgroup` table, placed by a
    /// `mountinfo` table. A v1 `memory` line wins over the v2 line: when both
    /// are there, the memory controller is on v1.
    pub fn from_tables(membership: &str, mountinfo: &str) -> Option<MemoryCgroup> {
        let mut v2_path = None;
        for line in membership.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if controllers.split(',').any(|c| c == "memory") {
                let (root, mount) = find_mount(mountinfo, |fstype, options| {
                    fstype == "cgroup" && options.split(',').any(|o| o == "memory")
                })?;
                return Some(MemoryCgroup {
                    dir: place(&mount, &root, path),
                    mount,
                    v1: true,
                });
            }
            if id == "0" && controllers.is_empty() {
                v2_path = Some(path.to_string());
            }
        }
        let path = v2_path?;
        let (root, mount) = find_mount(mountinfo, |fstype, _| fstype == "cgroup2")?;
        Some(MemoryCgroup {
            dir: place(&mount, &root, &path),
            mount,
            v1: false,
        })
    }

    /// The smallest memory limit on the way from this cgroup up to the
    /// mount, in bytes; `None` when nothing is limited.
    pub fn limit(&self) -> Option<u64> {
        let file = if self.v1 {
            "memory.limit_in_bytes"
        } else {
            "memory.max"
        };
        let mut smallest: Option<u64> = None;
        let mut dir = Some(self.dir.as_path());
        while let Some(current) = dir {
            if let Some(limit) = read_number(&current.join(file)) {
                // v1 writes "no limit" as a page-rounded i64::MAX.
                if limit < (1 << 62) {
                    smallest = Some(smallest.map_or(limit, |s| s.min(limit)));
                }
            }
            if current == self.mount {
                break;
            }
            dir = current.parent().filter(|p| p.starts_with(&self.mount));
        }
        smallest
    }

    /// Bytes in use by the cgroup now.
    pub fn usage(&self) -> Option<u64> {
        read_number(&self.dir.join(if self.v1 {
            "memory.usage_in_bytes"
        } else {
            "memory.current"
        }))
    }

    /// How many processes the out-of-memory killer has killed in this cgroup.
    pub fn oom_kills(&self) -> Option<u64> {
        let file = if self.v1 {
            "memory.oom_control"
        } else {
            "memory.events"
        };
        counter(
            &std::fs::read_to_string(self.dir.join(file)).ok()?,
            "oom_kill",
        )
    }
}

/// The machine's count of out-of-memory kills since boot (`/proc/vmstat`).
pub fn machine_oom_kills() -> Option<u64> {
    counter(&std::fs::read_to_string("/proc/vmstat").ok()?, "oom_kill")
}

/// The out-of-memory killer's counts for one application, taken while it
/// runs, to tell afterwards whether the killer is what ended it.
#[derive(Clone, Debug)]
pub struct OomKills {
    cgroup: Option<(MemoryCgroup, u64)>,
    machine: Option<u64>,
}

impl OomKills {
    /// The counts now, for the cgroup of `pid` and the machine.
    pub fn count(pid: u32) -> OomKills {
        let cgroup = MemoryCgroup::of(Some(pid))
            .and_then(|cgroup| cgroup.oom_kills().map(|kills| (cgroup, kills)));
        OomKills {
            cgroup,
            machine: machine_oom_kills(),
        }
    }

    /// For an application that vanished: why it looks like the work of the
    /// out-of-memory killer, if it does. A kill counted in its own cgroup is
    /// certain; one counted only on the machine is very likely it.
    pub fn struck_since(&self) -> Option<String> {
        if let Some((cgroup, before)) = &self.cgroup {
            if cgroup.oom_kills().is_some_and(|now| now > *before) {
                let limit = cgroup
                    .limit()
                    .map(|bytes| format!(" of {} MiB", bytes / (1024 * 1024)))
                    .unwrap_or_default();
                return Some(format!(
                    "its memory cgroup {} used up the memory limit{limit} set on it or on a parent cgroup",
                    cgroup.dir.display()
                ));
            }
        }
        let before = self.machine?;
        machine_oom_kills().filter(|now| *now > before).map(|_| {
            "the machine ran out of memory as it ended (/proc/vmstat counts a kill)".into()
        })
    }
}

/// The value of a `name value` line.
fn counter(table: &str, name: &str) -> Option<u64> {
    table.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

/// A number file; `max` (v2's "no limit") and anything else unreadable is
/// `None`.
fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The first mount whose file-system type and super options match, as (the
/// hierarchy's folder it shows, where it is mounted).
fn find_mount(mountinfo: &str, matches: impl Fn(&str, &str) -> bool) -> Option<(String, PathBuf)> {
    mountinfo.lines().find_map(|line| {
        let (mount_fields, fs_fields) = line.split_once(" - ")?;
        let mount_fields: Vec<&str> = mount_fields.split(' ').collect();
        let mut fs_fields = fs_fields.split(' ');
        let fstype = fs_fields.next()?;
        let _source = fs_fields.next()?;
        let options = fs_fields.next().unwrap_or_default();
        if !matches(fstype, options) {
            return None;
        }
        let root = unescape(mount_fields.get(3)?);
        let mount = PathBuf::from(unescape(mount_fields.get(4)?));
        Some((root, mount))
    })
}

/// The folder of cgroup `path` under a mount that shows the hierarchy from
/// `root` down.
fn place(mount: &Path, root: &str, path: &str) -> PathBuf {
    let relative = match path.strip_prefix(root) {
        Some(rest) if root != "/" => rest,
        _ => path,
    };
    mount.join(relative.trim_start_matches('/'))
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_MOUNTS: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
35 30 0:31 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
38 30 0:34 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
44 30 0:40 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn a_v1_memory_line_is_placed_under_the_memory_mount() {
        let membership = "9:name=systemd:/\n4:memory:/jobs/build-7\n1:cpu:/\n0::/\n";
        let cgroup = MemoryCgroup::from_tables(membership, V1_MOUNTS).unwrap();
        assert!(cgroup.v1);
        assert_eq!(cgroup.dir, Path::new("/sys/fs/cgroup/memory/jobs/build-7"));
        assert_eq!(cgroup.mount, Path::new("/sys/fs/cgroup/memory"));
    }

    #[test]
    fn a_v2_only_machine_uses_the_cgroup2_mount() {
        let mounts = "29 24 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let membership = "0::/system.slice/orders.service\n";
        let cgroup = MemoryCgroup::from_tables(membership, mounts).unwrap();
        assert!(!cgroup.v1);
        assert_eq!(
            cgroup.dir,
            Path::new("/sys/fs/cgroup/system.slice/orders.service")
        );
    }

    #[test]
    fn a_mount_of_part_of_the_hierarchy_is_placed_relative_to_its_root() {
        // A container that sees only its own branch, without a cgroup namespace.
        let mounts = "29 24 0:26 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let membership = "0::/docker/abc/worker\n";
        let cgroup = MemoryCgroup::from_tables(membership, mounts).unwrap();
        assert_eq!(cgroup.dir, Path::new("/sys/fs/cgroup/worker"));
    }

    #[test]
    fn the_tightest_limit_on_the_way_up_counts_and_max_means_none() {
        let root = tempfile::tempdir().unwrap();
        let mount = root.path().to_path_buf();
        let leaf = mount.join("a/b");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(mount.join("memory.max"), "max\n").unwrap();
        std::fs::write(mount.join("a/memory.max"), "268435456\n").unwrap();
        std::fs::write(leaf.join("memory.max"), "max\n").unwrap();
        std::fs::write(
            leaf.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        let cgroup = MemoryCgroup {
            dir: leaf,
            mount,
            v1: false,
        };
        assert_eq!(cgroup.limit(), Some(268_435_456));
        assert_eq!(cgroup.oom_kills(), Some(1));
        std::fs::write(root.path().join("a/memory.max"), "max\n").unwrap();
        assert_eq!(cgroup.limit(), None);
    }

    #[test]
    fn v1_writes_no_limit_as_a_huge_number() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        std::fs::write(
            root.path().join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        let cgroup = MemoryCgroup {
            dir: root.path().to_path_buf(),
            mount: root.path().to_path_buf(),
            v1: true,
        };
        assert_eq!(cgroup.limit(), None);
        assert_eq!(cgroup.oom_kills(), Some(2));
    }
}
