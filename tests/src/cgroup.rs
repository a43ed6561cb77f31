//! Throw-away cgroup v2 directories for tests.
//!
//! Every test cgroup lives under `<cgroup2 mount>/faultd-test/`, named
//! `<prefix>-<pid>-<counter>` so parallel tests and parallel test binaries never
//! collide, and a leftover from a crashed run is easy to recognise (and to remove
//! with `rmdir`).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, geteuid};

/// The directory under the cgroup2 mount that holds every test cgroup.
pub const TEST_ROOT: &str = "faultd-test";

/// How long [`CgroupGuard`]'s drop waits for killed processes to leave.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Where cgroup v2 is mounted, read from `/proc/self/mountinfo`:
/// `/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on hybrid ones.
///
/// # Panics
/// If no cgroup2 filesystem is mounted.
pub fn cgroup2_mount() -> PathBuf {
    static MOUNT: OnceLock<PathBuf> = OnceLock::new();
    MOUNT
        .get_or_init(|| {
            let mountinfo =
                fs::read_to_string("/proc/self/mountinfo").expect("reading /proc/self/mountinfo");
            parse_cgroup2_mount(&mountinfo)
                .expect("no cgroup2 filesystem in /proc/self/mountinfo; faultd needs cgroup v2")
        })
        .clone()
}

/// The mount point of the first `cgroup2` filesystem in a mountinfo text
/// (proc(5): `id parent maj:min root mountpoint options [optional...] - fstype ...`).
pub fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        if after.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount_point = before.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The name of the running test: libtest names each test's thread after it.
fn current_test_name() -> String {
    std::thread::current()
        .name()
        .map(str::to_owned)
        .unwrap_or_else(|| "<unnamed test>".to_owned())
}

/// True when running as root. Otherwise prints `SKIP: <test>: needs root (euid N)`
/// and returns false, so a root-only test starts with
/// `if !require_root() { return; }`.
pub fn require_root() -> bool {
    let euid = geteuid();
    if euid.is_root() {
        return true;
    }
    println!("SKIP: {}: needs root (euid {euid})", current_test_name());
    false
}

/// Prints `SKIP: <test>: <reason>`; for tests that skip for another reason
/// (a missing kernel feature, a missing tool).
pub fn skip(reason: &str) {
    println!("SKIP: {}: {reason}", current_test_name());
}

/// The cgroup v2 path of a process relative to the cgroup2 mount, e.g.
/// `faultd-test/loss-123-0`, read from the `0::` line of `/proc/<pid>/cgroup`.
///
/// # Panics
/// If the file cannot be read or has no cgroup v2 line.
pub fn cgroup_of_pid(pid: u32) -> PathBuf {
    let path = format!("/proc/{pid}/cgroup");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|p| PathBuf::from(p.trim_start_matches('/')))
        .unwrap_or_else(|| panic!("{path} has no cgroup v2 (0::) line:\n{text}"))
}

/// A cgroup v2 directory that exists for the guard's lifetime.
///
/// On drop it kills every process in it and in its descendants (`cgroup.kill`,
/// or SIGKILL to each pid on kernels before 5.14), waits up to 2 s for them to
/// leave, and removes the directories, deepest first. Drop never panics; it
/// prints what it could not clean up.
#[derive(Debug)]
pub struct CgroupGuard {
    path: PathBuf,
    relative: PathBuf,
}

impl CgroupGuard {
    /// Creates `<mount>/faultd-test/<prefix>-<pid>-<counter>`.
    ///
    /// # Panics
    /// If `prefix` is not a plain name, or the directory cannot be created
    /// (not root, no cgroup2).
    pub fn new(prefix: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        check_name(prefix);
        let mount = cgroup2_mount();
        let root = mount.join(TEST_ROOT);
        match fs::create_dir(&root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("creating the test cgroup root {}: {e}", root.display()),
        }
        let pid = std::process::id();
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let relative = Path::new(TEST_ROOT).join(format!("{prefix}-{pid}-{n}"));
            let path = mount.join(&relative);
            match fs::create_dir(&path) {
                Ok(()) => return Self { path, relative },
                // A leftover of an earlier run that had the same pid: take the next
                // counter value rather than touching it.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("creating test cgroup {}: {e}", path.display()),
            }
        }
    }

    /// Creates a nested cgroup `<self>/<name>`, removed on its own drop or, at the
    /// latest, when this guard drops.
    ///
    /// # Panics
    /// If `name` is not a plain name or the directory cannot be created.
    pub fn child(&self, name: &str) -> CgroupGuard {
        check_name(name);
        let path = self.path.join(name);
        fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("creating child cgroup {}: {e}", path.display()));
        CgroupGuard {
            path,
            relative: self.relative.join(name),
        }
    }

    /// The absolute path, e.g. `/sys/fs/cgroup/faultd-test/loss-123-0`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path relative to the cgroup2 mount, e.g. `faultd-test/loss-123-0`: the
    /// form faultd's API takes.
    pub fn relative(&self) -> &Path {
        &self.relative
    }

    /// [`Self::relative`] as a `&str` (test cgroup names are always UTF-8).
    pub fn relative_str(&self) -> &str {
        self.relative
            .to_str()
            .expect("test cgroup paths are built from UTF-8 names")
    }

    /// The cgroup id: the inode number of the directory, which is what
    /// `bpf_skb_cgroup_id()` and `bpf_get_current_cgroup_id()` return.
    ///
    /// # Panics
    /// If the directory is gone.
    pub fn id(&self) -> u64 {
        fs::metadata(&self.path)
            .unwrap_or_else(|e| panic!("stat {}: {e}", self.path.display()))
            .ino()
    }

    /// Moves a process into this cgroup. Sockets it already has keep their old
    /// cgroup: the kernel records a socket's cgroup when it is created
    /// (`sock_cgroup_set_data` via `cgroup_sk_alloc`).
    ///
    /// # Panics
    /// If the write to `cgroup.procs` fails.
    pub fn add_process(&self, pid: u32) {
        let procs = self.path.join("cgroup.procs");
        fs::write(&procs, pid.to_string())
            .unwrap_or_else(|e| panic!("moving pid {pid} into {}: {e}", procs.display()));
    }

    /// The pids directly in this cgroup (not its children).
    ///
    /// # Panics
    /// If `cgroup.procs` cannot be read.
    pub fn procs(&self) -> Vec<u32> {
        read_procs(&self.path)
            .unwrap_or_else(|e| panic!("reading {}/cgroup.procs: {e}", self.path.display()))
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if !self.path.exists() {
            // A parent guard already removed it.
            return;
        }
        if let Err(e) = remove_tree(&self.path) {
            eprintln!(
                "faultd-tests: could not remove test cgroup {}: {e}",
                self.path.display()
            );
        }
    }
}

fn check_name(name: &str) {
    assert!(
        !name.is_empty() && !name.contains('/') && name != "." && name != "..",
        "cgroup name {name:?} must be a single non-empty path component"
    );
}

fn read_procs(dir: &Path) -> io::Result<Vec<u32>> {
    Ok(fs::read_to_string(dir.join("cgroup.procs"))?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

fn child_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

/// Kills everything in `dir` and below, then removes the directories bottom-up.
fn remove_tree(dir: &Path) -> io::Result<()> {
    // cgroup.kill (5.14+) kills the whole subtree atomically, including processes
    // forking while we look; kernel/cgroup/cgroup.c: cgroup_kill().
    let kill_file = dir.join("cgroup.kill");
    if !(kill_file.exists() && fs::write(&kill_file, "1").is_ok()) {
        kill_each(dir)?;
    }
    remove_killed_tree(dir)
}

fn kill_each(dir: &Path) -> io::Result<()> {
    for child in child_dirs(dir)? {
        kill_each(&child)?;
    }
    for pid in read_procs(dir)? {
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        // ESRCH: it exited meanwhile, which is what we want anyway.
        let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
    }
    Ok(())
}

fn remove_killed_tree(dir: &Path) -> io::Result<()> {
    for child in child_dirs(dir)? {
        remove_killed_tree(&child)?;
    }
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let procs = read_procs(dir)?;
        if procs.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(io::Error::other(format!(
                "processes {procs:?} still in {} after {DRAIN_TIMEOUT:?}",
                dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // A process leaves cgroup.procs in cgroup_exit() but the cgroup can stay
    // "populated" (rmdir: EBUSY) for a moment after; retry within the deadline.
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 22 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
";

    #[test]
    fn finds_hybrid_cgroup2_mount() {
        assert_eq!(
            parse_cgroup2_mount(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn finds_unified_mount_and_skips_v1() {
        let unified = "\
25 1 0:23 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
26 1 0:24 / /sys/fs/cgroup rw,nosuid shared:4 master:1 - cgroup2 cgroup2 rw
";
        assert_eq!(
            parse_cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn no_cgroup2_is_none() {
        assert_eq!(
            parse_cgroup2_mount("25 1 0:23 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw\n"),
            None
        );
    }

    #[test]
    fn unescapes_octal_in_mount_point() {
        let line = "26 1 0:24 / /mnt/my\\040cgroups rw - cgroup2 none rw\n";
        assert_eq!(
            parse_cgroup2_mount(line),
            Some(PathBuf::from("/mnt/my cgroups"))
        );
        assert_eq!(unescape_mountinfo("a\\134b"), "a\\b");
        assert_eq!(unescape_mountinfo("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn this_host_has_a_cgroup2_mount() {
        let mount = cgroup2_mount();
        assert!(
            mount.join("cgroup.controllers").exists(),
            "{} is not a cgroup2 root",
            mount.display()
        );
    }

    #[test]
    fn rejects_nested_names() {
        for bad in ["", "a/b", "..", "."] {
            assert!(
                std::panic::catch_unwind(|| check_name(bad)).is_err(),
                "{bad:?}"
            );
        }
        check_name("loss");
    }

    #[test]
    fn guard_creates_and_removes_nested_cgroups_with_occupants() {
        if !require_root() {
            return;
        }
        let guard = CgroupGuard::new("kit-guard");
        let rel = guard.relative_str().to_owned();
        assert!(rel.starts_with("faultd-test/kit-guard-"), "{rel}");
        assert_eq!(guard.path(), cgroup2_mount().join(&rel));
        assert_eq!(guard.id(), fs::metadata(guard.path()).expect("stat").ino());

        let child = guard.child("inner");
        assert_eq!(child.relative(), Path::new(&rel).join("inner"));
        assert_ne!(child.id(), guard.id());

        // Occupants in both levels; the parent's drop must kill them all.
        let mut parent_sleeper = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("spawn sleep");
        let mut child_sleeper = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("spawn sleep");
        guard.add_process(parent_sleeper.id());
        child.add_process(child_sleeper.id());
        assert_eq!(guard.procs(), vec![parent_sleeper.id()]);
        assert_eq!(
            cgroup_of_pid(child_sleeper.id()),
            Path::new(&rel).join("inner")
        );

        let parent_path = guard.path().to_owned();
        let child_path = child.path().to_owned();
        // Parent first, on purpose: it has to clean up the child's directory too.
        drop(guard);
        assert!(
            !parent_path.exists(),
            "{} still exists",
            parent_path.display()
        );
        assert!(!child_path.exists());
        drop(child);
        let status = parent_sleeper.wait().expect("wait");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        child_sleeper.wait().expect("wait");
    }

    #[test]
    fn guards_have_unique_names() {
        if !require_root() {
            return;
        }
        let a = CgroupGuard::new("kit-unique");
        let b = CgroupGuard::new("kit-unique");
        assert_ne!(a.path(), b.path());
    }
}
