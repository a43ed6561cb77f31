//! Resolves a fault target (cgroup path, pid, systemd unit or Kubernetes pod) to a
//! directory of the cgroup v2 hierarchy and its cgroup id.
//!
//! The id is what the eBPF programs compare against `bpf_get_current_cgroup_id()`,
//! so everything here ends in a `stat` of a real cgroup directory. All lookups are
//! plain filesystem reads below two roots (`mount`, `proc_root`), which lets the
//! unit tests build fake nodes in a tempdir without root.

use std::collections::VecDeque;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use names::{
    container_dir_id, normalize_container_id, normalize_pod_uid, unescape_mountinfo,
    validate_cgroup_path, validate_unit_name,
};

mod names;
mod pattern;
#[cfg(test)]
mod tests;

pub use pattern::{TargetPattern, cgroup_glob_matches};

/// Units nest deeper than pods: a kind node's units sit under the node container's
/// scope on the host (system.slice/docker-<id>.scope/system.slice/x.service).
const MAX_UNIT_DEPTH: u32 = 8;
/// The deepest real pod layout is a pod of a kind node seen from the host:
/// system.slice/docker-<id>.scope/kubelet.slice/kubelet-kubepods.slice/
/// kubelet-kubepods-burstable.slice/<pod> = depth 6.
const MAX_POD_DEPTH: u32 = 6;
/// Bounds a search on a pathological tree; real nodes have a few thousand cgroups.
const MAX_WALK_DIRS: usize = 100_000;

/// What a fault applies to, as the API names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    /// Relative to the cgroup2 mount, e.g. "system.slice/nginx.service"; a leading '/'
    /// is accepted and stripped.
    CgroupPath(String),
    Pid(u32),
    /// "nginx.service", "app.slice", "foo.scope", "user@1000.service".
    SystemdUnit(String),
    /// A pod, or one of its containers when `container_id` is set.
    Pod {
        uid: String,
        container_id: Option<String>,
    },
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CgroupPath(path) => {
                write!(f, "cgroup:{}", path.strip_prefix('/').unwrap_or(path))
            }
            Self::Pid(pid) => write!(f, "pid:{pid}"),
            Self::SystemdUnit(unit) => write!(f, "unit:{unit}"),
            Self::Pod {
                uid,
                container_id: None,
            } => write!(f, "pod:{uid}"),
            Self::Pod {
                uid,
                container_id: Some(container),
            } => write!(f, "pod:{uid}/{container}"),
        }
    }
}

/// A cgroup that existed when it was resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedCgroup {
    /// Relative to the mount, no leading or trailing '/', "" for the root cgroup.
    pub path: String,
    /// The kernfs node id, which on 64-bit kernels is also the directory's inode
    /// number (include/linux/kernfs.h `kernfs_ino()`), and what
    /// `bpf_get_current_cgroup_id()` returns (kernel/cgroup/cgroup.c `cgroup_id()`).
    pub id: u64,
    /// Number of path components; the root cgroup is level 0, as in the kernel's
    /// `cgroup->level` used by `bpf_get_current_ancestor_cgroup_id()`.
    pub level: u32,
}

impl ResolvedCgroup {
    /// Whether `other_path` (a path relative to the same mount, as in
    /// [`ResolvedCgroup::path`]) is this cgroup or below it. Compares whole
    /// components, so "a/b" contains "a/b/c" but not "a/bc". The comparison is
    /// lexical: pass resolved paths, not user input with "..".
    pub fn is_ancestor_or_self_of(&self, other_path: &str) -> bool {
        let mut other = other_path.split('/').filter(|c| !c.is_empty());
        self.path
            .split('/')
            .filter(|c| !c.is_empty())
            .all(|component| other.next() == Some(component))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("invalid {field}: {reason}")]
    InvalidTarget { field: &'static str, reason: String },
    #[error("target {target} not found: {detail}")]
    NotFound { target: String, detail: String },
    #[error(
        "target {target} is ambiguous: it matches {} cgroups ({}); target one of them by cgroup path",
        .candidates.len(),
        .candidates.join(", ")
    )]
    Ambiguous {
        target: String,
        candidates: Vec<String>,
    },
    #[error("no cgroup v2 hierarchy: {detail}")]
    NoCgroup2 { detail: String },
    #[error("the addresses of cgroup {cgroup}'s network namespace: {detail}")]
    Addresses { cgroup: String, detail: String },
    #[error("failed to {op} {}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The cgroup2 mount and the procfs to read process cgroups from.
#[derive(Clone, Debug)]
pub struct CgroupFs {
    mount: PathBuf,
    proc_root: PathBuf,
}

impl CgroupFs {
    pub fn new(mount: PathBuf, proc_root: PathBuf) -> Self {
        Self { mount, proc_root }
    }

    /// Finds the cgroup2 mount from /proc/self/mountinfo (this host:
    /// /sys/fs/cgroup/unified in a hybrid layout; most nodes: /sys/fs/cgroup).
    /// Errors clearly when there is none (cgroup v1 only node).
    pub fn detect() -> Result<Self, TargetError> {
        let mountinfo = Path::new("/proc/self/mountinfo");
        let text = fs::read_to_string(mountinfo).map_err(io_error("read", mountinfo))?;
        let mount = Self::parse_mountinfo(&text).ok_or_else(|| TargetError::NoCgroup2 {
            detail: "/proc/self/mountinfo has no cgroup2 mount; this node runs cgroup v1 only, \
                     and faultd attaches its programs to cgroup v2 (boot with \
                     systemd.unified_cgroup_hierarchy=1, or mount cgroup2 at /sys/fs/cgroup/unified)"
                .to_owned(),
        })?;
        Ok(Self::new(mount, PathBuf::from("/proc")))
    }

    /// The mount point of the first cgroup2 entry of a mountinfo file
    /// (Documentation/filesystems/proc.rst, "3.5 /proc/<pid>/mountinfo").
    pub fn parse_mountinfo(text: &str) -> Option<PathBuf> {
        text.lines().find_map(|line| {
            // Spaces inside fields are escaped as \040, so " - " is only ever the
            // separator before the filesystem type.
            let (mount_fields, fs_fields) = line.split_once(" - ")?;
            if fs_fields.split(' ').next()? != "cgroup2" {
                return None;
            }
            mount_fields.split(' ').nth(4).map(unescape_mountinfo)
        })
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    pub fn resolve(&self, target: &TargetSpec) -> Result<ResolvedCgroup, TargetError> {
        match target {
            TargetSpec::CgroupPath(path) => self.resolve_path(path),
            TargetSpec::Pid(pid) => self.cgroup_of_pid(*pid),
            TargetSpec::SystemdUnit(unit) => self.resolve_unit(target, unit),
            TargetSpec::Pod { uid, container_id } => {
                self.resolve_pod(target, uid, container_id.as_deref())
            }
        }
    }

    /// Validates `relative` (see [`TargetSpec::CgroupPath`]) and stats the cgroup.
    pub fn resolve_path(&self, relative: &str) -> Result<ResolvedCgroup, TargetError> {
        let target = TargetSpec::CgroupPath(relative.to_owned()).to_string();
        self.resolve_relative("spec.target.cgroup_path", &target, relative)
    }

    /// The cgroup of a process: the "0::<path>" line of <proc_root>/<pid>/cgroup
    /// (cgroup v2 entry; present in hybrid layouts too).
    pub fn cgroup_of_pid(&self, pid: u32) -> Result<ResolvedCgroup, TargetError> {
        if pid == 0 {
            return Err(TargetError::InvalidTarget {
                field: "spec.target.pid",
                reason: "pid 0 is not a process".to_owned(),
            });
        }
        let target = TargetSpec::Pid(pid).to_string();
        self.cgroup_from_proc(&pid.to_string(), "spec.target.pid", &target)
    }

    /// The cgroup of the calling process, via "<proc_root>/self/cgroup".
    pub fn self_cgroup(&self) -> Result<ResolvedCgroup, TargetError> {
        self.cgroup_from_proc("self", "spec.target.pid", "self")
    }

    fn cgroup_from_proc(
        &self,
        entry: &str,
        field: &'static str,
        target: &str,
    ) -> Result<ResolvedCgroup, TargetError> {
        let file = self.proc_root.join(entry).join("cgroup");
        let text = match fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(TargetError::NotFound {
                    target: target.to_owned(),
                    detail: format!("no such process ({} does not exist)", file.display()),
                });
            }
            Err(e) => return Err(io_error("read", &file)(e)),
        };
        // The kernel prints the "0::" line only once cgroup2 has been mounted
        // (kernel/cgroup/cgroup.c `proc_cgroup_show()` skips the default root
        // while `cgrp_dfl_visible` is false).
        let Some(path) = text.lines().find_map(|line| line.strip_prefix("0::")) else {
            return Err(TargetError::NotFound {
                target: target.to_owned(),
                detail: format!(
                    "{} has no \"0::\" line: the node has no cgroup v2 entry for this process",
                    file.display()
                ),
            });
        };
        // The path is relative to the *reader's* cgroup namespace root
        // (`cgroup_path_ns()`), so it only matches the mount when the agent runs in
        // the host cgroup namespace, as a node agent must.
        // `proc_cgroup_show()` appends " (deleted)" when a v2 cgroup has been removed
        // while the process (a zombie) still points at it.
        if path.ends_with(" (deleted)") {
            return Err(TargetError::NotFound {
                target: target.to_owned(),
                detail: format!("the process's cgroup {path} has been removed"),
            });
        }
        self.resolve_relative(field, target, path)
    }

    fn resolve_relative(
        &self,
        field: &'static str,
        target: &str,
        relative: &str,
    ) -> Result<ResolvedCgroup, TargetError> {
        let relative = validate_cgroup_path(field, relative)?;
        let mount = fs::canonicalize(&self.mount)
            .map_err(io_error("canonicalize the cgroup2 mount", &self.mount))?;
        let joined = mount.join(relative);
        let canonical = match fs::canonicalize(&joined) {
            Ok(path) => path,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(not_found(
                    target,
                    format!("{} does not exist", joined.display()),
                ));
            }
            Err(e) => return Err(io_error("canonicalize", &joined)(e)),
        };
        // Validation already rejects "..", but a symlink planted in a delegated
        // subtree could still point anywhere; the fault must stay inside the mount.
        let inside = canonical
            .strip_prefix(&mount)
            .map_err(|_| TargetError::InvalidTarget {
                field,
                reason: format!(
                    "{relative:?} leads to {}, outside the cgroup2 mount {}",
                    canonical.display(),
                    mount.display()
                ),
            })?;
        let path = inside.to_str().ok_or_else(|| TargetError::InvalidTarget {
            field,
            reason: format!(
                "{relative:?} leads to a non-UTF-8 path {}",
                inside.display()
            ),
        })?;
        // Only cgroupfs directories have cgroup.procs; this also catches a `mount`
        // that is not a cgroup2 filesystem at all.
        let procs = canonical.join("cgroup.procs");
        match fs::symlink_metadata(&procs) {
            Ok(m) if m.is_file() => {}
            Err(e)
                if !matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Err(io_error("stat", &procs)(e));
            }
            _ => {
                let detail = format!("{} is not a cgroup (no cgroup.procs)", canonical.display());
                return Err(not_found(target, detail));
            }
        }
        let metadata = fs::metadata(&canonical).map_err(io_error("stat", &canonical))?;
        Ok(ResolvedCgroup {
            path: path.to_owned(),
            id: metadata.ino(),
            level: u32::try_from(inside.components().count()).unwrap_or(u32::MAX),
        })
    }

    fn resolve_unit(&self, spec: &TargetSpec, unit: &str) -> Result<ResolvedCgroup, TargetError> {
        validate_unit_name(unit)?;
        let target = spec.to_string();
        let mut matches = Vec::new();
        self.walk(&target, MAX_UNIT_DEPTH, |path, name| {
            if name == unit {
                matches.push(path.to_owned());
            }
            // Keep descending: a unit can contain a same-named unit of a nested
            // systemd (a kind node's containerd.service inside a host scope), which
            // must surface as ambiguity rather than a silent first match.
            true
        })?;
        let detail = || {
            format!(
                "no cgroup named {unit} within {MAX_UNIT_DEPTH} levels of {}",
                self.mount.display()
            )
        };
        self.pick_one(&target, "spec.target.systemd_unit", matches, detail)
    }

    fn resolve_pod(
        &self,
        spec: &TargetSpec,
        uid: &str,
        container_id: Option<&str>,
    ) -> Result<ResolvedCgroup, TargetError> {
        let uid = normalize_pod_uid(uid)?;
        let container_id = container_id.map(normalize_container_id).transpose()?;
        let target = spec.to_string();
        let dashed = format!("pod{uid}");
        let underscored = dashed.replace('-', "_");
        let slice_suffix = format!("-{underscored}.slice");
        let mut matches = Vec::new();
        self.walk(&target, MAX_POD_DEPTH, |path, name| {
            let name = name.to_ascii_lowercase();
            let is_pod = name == dashed || name == underscored || name.ends_with(&slice_suffix);
            if is_pod {
                matches.push(path.to_owned());
            }
            // Containers are the only children of a pod cgroup; no pod is below one.
            !is_pod
        })?;
        let detail = || {
            format!(
                "no pod cgroup for uid {uid} within {MAX_POD_DEPTH} levels of {} \
                 (looked for {dashed} and *-{underscored}.slice)",
                self.mount.display()
            )
        };
        let pod = self.pick_one(&target, "spec.target.pod.uid", matches, detail)?;
        match container_id {
            None => Ok(pod),
            Some(id) => self.resolve_container(&target, &pod, &id),
        }
    }

    fn resolve_container(
        &self,
        target: &str,
        pod: &ResolvedCgroup,
        id: &str,
    ) -> Result<ResolvedCgroup, TargetError> {
        let pod_dir = self.mount.join(&pod.path);
        let entries = fs::read_dir(&pod_dir).map_err(io_error("list the pod cgroup", &pod_dir))?;
        let mut matches = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error("list the pod cgroup", &pod_dir))?;
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if is_dir && container_dir_id(&name).is_some_and(|dir_id| dir_id.starts_with(id)) {
                matches.push(format!("{}/{name}", pod.path));
            }
        }
        let detail = || {
            format!(
                "pod cgroup {} has no container cgroup with id {id}",
                pod.path
            )
        };
        self.pick_one(target, "spec.target.pod.container_id", matches, detail)
    }

    /// Turns the candidates of a search into one resolved cgroup or an error.
    fn pick_one(
        &self,
        target: &str,
        field: &'static str,
        mut matches: Vec<String>,
        detail: impl FnOnce() -> String,
    ) -> Result<ResolvedCgroup, TargetError> {
        matches.sort();
        match matches.as_slice() {
            [] => Err(not_found(target, detail())),
            [one] => self.resolve_relative(field, target, one),
            _ => Err(TargetError::Ambiguous {
                target: target.to_owned(),
                candidates: matches,
            }),
        }
    }

    /// Breadth-first walk of the directories below the mount, up to `max_depth`
    /// (children of the mount are depth 1). `visit(path, name)` returns whether to
    /// descend into the directory. Symlinks are not followed.
    fn walk(
        &self,
        target: &str,
        max_depth: u32,
        visit: impl FnMut(&str, &str) -> bool,
    ) -> Result<(), TargetError> {
        self.walk_from("", target, max_depth, visit)
    }

    /// [`Self::walk`] below `start` (a path relative to the mount, already
    /// validated), whose children are at depth components(start) + 1.
    fn walk_from(
        &self,
        start: &str,
        target: &str,
        max_depth: u32,
        mut visit: impl FnMut(&str, &str) -> bool,
    ) -> Result<(), TargetError> {
        let start_depth = if start.is_empty() {
            0
        } else {
            u32::try_from(start.split('/').count()).unwrap_or(u32::MAX)
        };
        let mut queue = VecDeque::from([(self.mount.join(start), start.to_owned(), start_depth)]);
        let mut visited = 0_usize;
        while let Some((dir, path, depth)) = queue.pop_front() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                // Subtrees delegated to other users may be unreadable, and cgroups
                // vanish while we walk; neither should fail the whole search.
                Err(e) if depth > 0 && is_skippable(&e) => continue,
                Err(e) => return Err(io_error("list the cgroup directory", &dir)(e)),
            };
            for entry in entries {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(e) if is_skippable(&e) => continue,
                    Err(e) => return Err(io_error("list the cgroup directory", &dir)(e)),
                };
                // DirEntry::file_type does not follow symlinks.
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                // Unit names and pod uids are ASCII, so a non-UTF-8 name matches
                // nothing, and nothing we look for lives under one.
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                visited += 1;
                if visited > MAX_WALK_DIRS {
                    // A partial search cannot prove a match unique, and injecting
                    // into the wrong cgroup is worse than refusing.
                    let detail = format!(
                        "the cgroup tree under {} has more than {MAX_WALK_DIRS} directories; \
                         target the cgroup by path instead",
                        self.mount.display()
                    );
                    return Err(not_found(target, detail));
                }
                let child = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}/{name}")
                };
                if visit(&child, &name) && depth + 1 < max_depth {
                    queue.push_back((entry.path(), child, depth + 1));
                }
            }
        }
        Ok(())
    }
}

/// For `map_err`: an I/O failure with what was being done and to which path.
fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TargetError {
    let path = path.to_path_buf();
    move |source| TargetError::Io { op, path, source }
}

fn is_skippable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound
    )
}

fn not_found(target: &str, detail: String) -> TargetError {
    TargetError::NotFound {
        target: target.to_owned(),
        detail,
    }
}
