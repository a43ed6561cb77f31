//! Which network namespace a cgroup's processes live in, and finding a
//! recorded namespace again after a restart: what the qdisc and ifb code
//! needs to reach the devices a target's packets cross.

use std::{
    fs::File,
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// A namespace, opened.
#[derive(Debug)]
pub struct Netns {
    /// The nsfs file, to enter (setns) or open rtnetlink in.
    pub file: File,
    /// Inode and device of the nsfs file: the namespace's identity.
    pub ino: u64,
    pub dev: u64,
    /// A process in it, to find it again later.
    pub pid: u32,
}

/// The namespace of the target's processes: the first process found in
/// the cgroup or below it; the agent's own when the subtree is empty
/// (a host workload about to start).
pub fn target_netns(cgroup: &Path) -> Result<Netns, NetnsError> {
    let pid = first_pid(cgroup, 4096);
    let path = match pid {
        Some(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        None => PathBuf::from("/proc/self/ns/net"),
    };
    let err = |source| NetnsError {
        what: path.display().to_string(),
        source,
    };
    let file = File::open(&path).map_err(err)?;
    let meta = file.metadata().map_err(err)?;
    Ok(Netns {
        file,
        ino: meta.ino(),
        dev: meta.dev(),
        pid: pid.unwrap_or_else(std::process::id),
    })
}

/// A pid in `cgroup` or a descendant, breadth first, looking at no more
/// than `budget` cgroups.
fn first_pid(cgroup: &Path, budget: usize) -> Option<u32> {
    let mut queue = std::collections::VecDeque::from([cgroup.to_path_buf()]);
    let mut seen = 0;
    while let Some(dir) = queue.pop_front() {
        seen += 1;
        if seen > budget {
            return None;
        }
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs"))
            && let Some(pid) = procs.lines().find_map(|l| l.trim().parse().ok())
        {
            return Some(pid);
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            queue.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    None
}

/// Finds a recorded namespace again: through the recorded pid if it is
/// still there, else any process or /run/netns mount with that identity.
pub fn find_netns(ino: u64, dev: u64, pid_hint: u32) -> Option<File> {
    let matches = |path: &Path| -> Option<File> {
        let f = File::open(path).ok()?;
        let m = f.metadata().ok()?;
        (m.ino() == ino && m.dev() == dev).then_some(f)
    };
    if let Some(f) = matches(&PathBuf::from(format!("/proc/{pid_hint}/ns/net"))) {
        return Some(f);
    }
    if let Some(f) = matches(Path::new("/proc/self/ns/net")) {
        return Some(f);
    }
    let procs = std::fs::read_dir("/proc").ok()?;
    for e in procs.flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        if let Some(f) = matches(&e.path().join("ns/net")) {
            return Some(f);
        }
    }
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Some(f) = matches(&e.path()) {
            return Some(f);
        }
    }
    None
}

/// Opening the namespace of a target's process failed.
#[derive(Debug, thiserror::Error)]
#[error("network namespace of {what}: {source}")]
pub struct NetnsError {
    pub what: String,
    #[source]
    pub source: io::Error,
}
