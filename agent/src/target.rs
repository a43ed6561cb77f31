//! Resolves a fault target (cgroup path, pid, systemd unit or Kubernetes pod) to a
//! directory of the cgroup v2 hierarchy and its cgroup id.
//!
//! The id is what the eBPF programs compare against `bpf_get_current_cgroup_id()`,
//! so everything here ends in a `stat` of a real cgroup directory. All lookups are
//! plain filesystem reads below two roots (`mount`, `proc_root`), which lets the
//! unit tests build fake nodes in a tempdir without root.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// PATH_MAX: the kernel refuses longer paths anyway; rejecting early gives a clear message.
const MAX_PATH_LEN: usize = 4096;
/// systemd's own limit for unit names (`UNIT_NAME_MAX` in src/basic/unit-name.h).
const MAX_UNIT_LEN: usize = 256;
const UNIT_SUFFIXES: [&str; 6] = [".service", ".scope", ".slice", ".socket", ".mount", ".swap"];
/// Units nest deeper than pods: a kind node's units sit under the node container's
/// scope on the host (system.slice/docker-<id>.scope/system.slice/x.service).
const MAX_UNIT_DEPTH: u32 = 8;
/// The deepest real pod layout is a pod of a kind node seen from the host:
/// system.slice/docker-<id>.scope/kubelet.slice/kubelet-kubepods.slice/
/// kubelet-kubepods-burstable.slice/<pod> = depth 6.
const MAX_POD_DEPTH: u32 = 6;
/// Bounds a search on a pathological tree; real nodes have a few thousand cgroups.
const MAX_WALK_DIRS: usize = 100_000;
/// Long enough that a prefix collision among the containers of one pod is unlikely,
/// and the length `docker ps` and `crictl ps` print.
const MIN_CONTAINER_ID_LEN: usize = 12;
/// Prefixes of container cgroups: cri-containerd (containerd + systemd driver), crio
/// (CRI-O, both drivers), docker (docker / cri-dockerd + systemd driver). The
/// cgroupfs driver with containerd uses the bare id.
const CONTAINER_DIR_PREFIXES: [&str; 3] = ["cri-containerd-", "crio-", "docker-"];
/// CRI-O's monitor process gets a cgroup whose id part is the container's own id, so
/// it must be excluded or every CRI-O container id would be ambiguous.
const CRIO_CONMON_PREFIX: &str = "crio-conmon-";

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
        mut visit: impl FnMut(&str, &str) -> bool,
    ) -> Result<(), TargetError> {
        let mut queue = VecDeque::from([(self.mount.clone(), String::new(), 0_u32)]);
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

/// Decodes the `\ooo` octal escapes the kernel uses for space, tab, newline and
/// backslash in mountinfo (fs/proc_namespace.c `mangle()`).
fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match escape {
            Some(d) => {
                let value = d.iter().fold(0_u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Returns the path without its leading '/', or why it is not a safe relative path.
fn validate_cgroup_path<'a>(field: &'static str, path: &'a str) -> Result<&'a str, TargetError> {
    let invalid = |reason: String| TargetError::InvalidTarget { field, reason };
    if path.len() > MAX_PATH_LEN {
        return Err(invalid(format!(
            "path is {} bytes long, the limit is {MAX_PATH_LEN}",
            path.len()
        )));
    }
    if path.contains('\0') {
        return Err(invalid(format!("path {path:?} contains a NUL byte")));
    }
    let relative = path.strip_prefix('/').unwrap_or(path);
    if relative.is_empty() {
        return Ok(relative);
    }
    for component in relative.split('/') {
        match component {
            "" => return Err(invalid(format!("path {path:?} has an empty component"))),
            "." | ".." => {
                return Err(invalid(format!(
                    "path {path:?} contains {component:?}; cgroup paths must be plain"
                )));
            }
            _ => {}
        }
    }
    Ok(relative)
}

fn validate_unit_name(unit: &str) -> Result<(), TargetError> {
    let invalid = |reason: String| TargetError::InvalidTarget {
        field: "spec.target.systemd_unit",
        reason,
    };
    if unit.len() > MAX_UNIT_LEN {
        return Err(invalid(format!(
            "unit name is {} bytes long, the limit is {MAX_UNIT_LEN}",
            unit.len()
        )));
    }
    // Same alphabet as systemd's `unit_name_is_valid()` (VALID_CHARS plus '@' and
    // '\' for escapes), which also keeps '/' out so the name is one component.
    if let Some(c) = unit
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ":_.@-\\".contains(*c)))
    {
        return Err(invalid(format!(
            "unit name {unit:?} contains {c:?}; allowed are A-Z a-z 0-9 : _ . @ - \\"
        )));
    }
    let has_stem = UNIT_SUFFIXES
        .iter()
        .any(|s| unit.strip_suffix(s).is_some_and(|stem| !stem.is_empty()));
    if !has_stem {
        return Err(invalid(format!(
            "unit name {unit:?} must be a name followed by one of {}",
            UNIT_SUFFIXES.join(" ")
        )));
    }
    Ok(())
}

/// Returns the uid lowercased with dashes, e.g. "8d9f7c2e-4b1a-...". Kubelet writes
/// the uid with dashes (cgroupfs driver) or underscores (systemd driver, where '-'
/// separates slice levels); static pods have 32 hex digits without either.
fn normalize_pod_uid(uid: &str) -> Result<String, TargetError> {
    let valid = match uid.len() {
        32 => uid.bytes().all(|b| b.is_ascii_hexdigit()),
        36 => uid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-' || b == b'_',
            _ => b.is_ascii_hexdigit(),
        }),
        _ => false,
    };
    if !valid {
        return Err(TargetError::InvalidTarget {
            field: "spec.target.pod.uid",
            reason: format!(
                "{uid:?} is not a pod uid (a UUID of 36 characters with dashes, or 32 hex digits)"
            ),
        });
    }
    Ok(uid.to_ascii_lowercase().replace('_', "-"))
}

/// Accepts the forms kubectl shows in `status.containerStatuses[].containerID`
/// ("containerd://<id>") as well as bare ids and their unique prefixes.
fn normalize_container_id(raw: &str) -> Result<String, TargetError> {
    let id = raw
        .split_once("://")
        .map_or(raw, |(_, id)| id)
        .to_ascii_lowercase();
    let reason = if id.len() < MIN_CONTAINER_ID_LEN || id.len() > 64 {
        format!(
            "{raw:?} must have between {MIN_CONTAINER_ID_LEN} and 64 hex digits after any runtime:// prefix"
        )
    } else if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("{raw:?} is not hexadecimal after any runtime:// prefix")
    } else {
        return Ok(id);
    };
    Err(TargetError::InvalidTarget {
        field: "spec.target.pod.container_id",
        reason,
    })
}

/// The container id in a container cgroup's name, or None for anything else
/// (CRI-O conmon cgroups, stray directories).
fn container_dir_id(name: &str) -> Option<String> {
    if name.starts_with(CRIO_CONMON_PREFIX) {
        return None;
    }
    let stem = name.strip_suffix(".scope").unwrap_or(name);
    let id = CONTAINER_DIR_PREFIXES
        .iter()
        .find_map(|prefix| stem.strip_prefix(prefix))
        .unwrap_or(stem);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests fail loudly on setup errors")]

    use super::*;
    use tempfile::TempDir;

    const UID: &str = "8d9f7c2e-4b1a-4e6f-9c3d-2a7b5e1f0c94";
    const OTHER_UID: &str = "1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b";
    const CID: &str = "3b1f0e2a9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";
    const OTHER_CID: &str = "f00dbabe11112222333344445555666677778888999900001111222233334444";

    /// A fake node: `<tmp>/cgroup` is the cgroup2 mount, `<tmp>/proc` the procfs.
    struct Node {
        dir: TempDir,
    }

    impl Node {
        fn new() -> Self {
            let node = Self {
                dir: TempDir::new().unwrap(),
            };
            node.cg("");
            node
        }

        /// A node with the usual systemd noise around whatever the test adds.
        fn with_noise() -> Self {
            let node = Self::new();
            for path in [
                "init.scope",
                "system.slice/sshd.service",
                "system.slice/containerd.service",
                "system.slice/kubelet.service",
                "system.slice/systemd-journald.service",
                "user.slice/user-1000.slice/user@1000.service/app.slice",
                "user.slice/user-1000.slice/session-3.scope",
            ] {
                node.cg(path);
            }
            node
        }

        fn mount(&self) -> PathBuf {
            self.dir.path().join("cgroup")
        }

        fn fs(&self) -> CgroupFs {
            CgroupFs::new(self.mount(), self.dir.path().join("proc"))
        }

        /// Creates a cgroup (and its ancestors) with the cgroup.procs file.
        fn cg(&self, path: &str) {
            let mut dir = self.mount();
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("cgroup.procs"), "").unwrap();
            for component in path.split('/').filter(|c| !c.is_empty()) {
                dir.push(component);
                fs::create_dir_all(&dir).unwrap();
                fs::write(dir.join("cgroup.procs"), "").unwrap();
            }
        }

        fn proc_cgroup(&self, entry: &str, text: &str) {
            let dir = self.dir.path().join("proc").join(entry);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("cgroup"), text).unwrap();
        }

        fn ino(&self, path: &str) -> u64 {
            fs::metadata(self.mount().join(path)).unwrap().ino()
        }
    }

    fn pod(uid: &str, container_id: Option<&str>) -> TargetSpec {
        TargetSpec::Pod {
            uid: uid.to_owned(),
            container_id: container_id.map(str::to_owned),
        }
    }

    fn unit(name: &str) -> TargetSpec {
        TargetSpec::SystemdUnit(name.to_owned())
    }

    #[track_caller]
    fn assert_invalid(result: Result<ResolvedCgroup, TargetError>, expected_field: &str) -> String {
        match result {
            Err(e @ TargetError::InvalidTarget { field, .. }) => {
                assert_eq!(field, expected_field);
                e.to_string()
            }
            other => panic!("expected InvalidTarget({expected_field}), got {other:?}"),
        }
    }

    #[track_caller]
    fn assert_not_found(result: Result<ResolvedCgroup, TargetError>) -> String {
        match result {
            Err(e @ TargetError::NotFound { .. }) => e.to_string(),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    #[track_caller]
    fn assert_ambiguous(result: Result<ResolvedCgroup, TargetError>, expected: &[&str]) {
        match result {
            Err(TargetError::Ambiguous { candidates, .. }) => {
                let mut expected = expected.to_vec();
                expected.sort_unstable();
                assert_eq!(candidates, expected);
            }
            other => panic!("expected Ambiguous, got {other:?}"),
        }
    }

    const HYBRID_MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
34 31 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
";

    const PURE_V2_MOUNTINFO: &str = "\
24 29 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
29 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn mountinfo_hybrid_and_pure_v2() {
        assert_eq!(
            CgroupFs::parse_mountinfo(HYBRID_MOUNTINFO),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            CgroupFs::parse_mountinfo(PURE_V2_MOUNTINFO),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn mountinfo_without_cgroup2_or_with_escapes() {
        let v1_only: String = HYBRID_MOUNTINFO
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(CgroupFs::parse_mountinfo(&v1_only), None);
        assert_eq!(CgroupFs::parse_mountinfo(""), None);
        // The optional fields before " - " vary in number; a cgroup2 source name
        // elsewhere on the line must not count.
        let escaped =
            "40 22 0:40 / /run/my\\040cgroup\\134x rw shared:3 master:2 - cgroup2 none rw\n";
        assert_eq!(
            CgroupFs::parse_mountinfo(escaped),
            Some(PathBuf::from("/run/my cgroup\\x"))
        );
        let source_only = "40 22 0:40 / /mnt rw - tmpfs cgroup2 rw\n";
        assert_eq!(CgroupFs::parse_mountinfo(source_only), None);
    }

    #[test]
    fn resolves_paths_with_id_and_level() {
        let node = Node::with_noise();
        let fs = node.fs();
        let got = fs.resolve_path("system.slice/sshd.service").unwrap();
        let want = ResolvedCgroup {
            path: "system.slice/sshd.service".to_owned(),
            id: node.ino("system.slice/sshd.service"),
            level: 2,
        };
        assert_eq!(got, want);
        assert_eq!(fs.resolve_path("/system.slice/sshd.service").unwrap(), want);
        let spec = TargetSpec::CgroupPath("/system.slice/sshd.service".to_owned());
        assert_eq!(fs.resolve(&spec).unwrap(), want);
        let root = ResolvedCgroup {
            path: String::new(),
            id: node.ino(""),
            level: 0,
        };
        assert_eq!(fs.resolve_path("").unwrap(), root);
        assert_eq!(fs.resolve_path("/").unwrap(), root);
    }

    #[test]
    fn rejects_malformed_paths() {
        let node = Node::with_noise();
        let fs = node.fs();
        let long = "a/".repeat(2049);
        for bad in [
            "a//b",
            "system.slice/",
            "//",
            "./a",
            "a/./b",
            "../etc",
            "a/../../x",
            "..",
            "a\0b",
            &long,
        ] {
            assert_invalid(fs.resolve_path(bad), "spec.target.cgroup_path");
        }
    }

    #[test]
    fn rejects_symlinks_leaving_the_mount() {
        let node = Node::with_noise();
        let outside = node.dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("cgroup.procs"), "").unwrap();
        std::os::unix::fs::symlink(&outside, node.mount().join("system.slice/escape")).unwrap();
        let message = assert_invalid(
            node.fs().resolve_path("system.slice/escape"),
            "spec.target.cgroup_path",
        );
        assert!(message.contains("outside the cgroup2 mount"), "{message}");
        // The searches do not follow it either.
        fs::create_dir(outside.join("evil.service")).unwrap();
        assert_not_found(node.fs().resolve(&unit("evil.service")));
    }

    #[test]
    fn missing_and_non_cgroup_directories_are_not_found() {
        let node = Node::with_noise();
        let fs = node.fs();
        assert!(
            assert_not_found(fs.resolve_path("system.slice/nope.service"))
                .contains("does not exist")
        );
        fs::create_dir(node.mount().join("system.slice/plain")).unwrap();
        assert!(assert_not_found(fs.resolve_path("system.slice/plain")).contains("not a cgroup"));
        assert!(
            assert_not_found(fs.resolve_path("system.slice/sshd.service/cgroup.procs"))
                .contains("not a cgroup")
        );
        // A mount that is not a cgroup filesystem at all.
        let plain = TempDir::new().unwrap();
        let not_mounted = CgroupFs::new(plain.path().to_path_buf(), PathBuf::from("/proc"));
        assert_not_found(not_mounted.resolve_path(""));
    }

    #[test]
    fn ancestor_checks_compare_whole_components() {
        let at = |path: &str| ResolvedCgroup {
            path: path.to_owned(),
            id: 1,
            level: 0,
        };
        assert!(at("a/b").is_ancestor_or_self_of("a/b"));
        assert!(at("a/b").is_ancestor_or_self_of("a/b/c"));
        assert!(at("a/b").is_ancestor_or_self_of("/a/b/c/"));
        assert!(!at("a/b").is_ancestor_or_self_of("a/bc"));
        assert!(!at("a/b").is_ancestor_or_self_of("a"));
        assert!(!at("a/b").is_ancestor_or_self_of(""));
        assert!(!at("a/b").is_ancestor_or_self_of("x/a/b"));
        assert!(at("").is_ancestor_or_self_of(""));
        assert!(at("").is_ancestor_or_self_of("a/b"));
    }

    #[test]
    fn display_forms() {
        assert_eq!(
            TargetSpec::CgroupPath("/system.slice/x".to_owned()).to_string(),
            "cgroup:system.slice/x"
        );
        assert_eq!(TargetSpec::Pid(123).to_string(), "pid:123");
        assert_eq!(unit("nginx.service").to_string(), "unit:nginx.service");
        assert_eq!(pod(UID, None).to_string(), format!("pod:{UID}"));
        assert_eq!(pod(UID, Some("abc")).to_string(), format!("pod:{UID}/abc"));
    }

    #[test]
    fn pid_resolution_reads_the_v2_line() {
        let node = Node::with_noise();
        node.proc_cgroup("123", "0::/system.slice/sshd.service\n");
        node.proc_cgroup(
            "456",
            "12:memory:/system.slice/kubelet.service\n5:cpu,cpuacct:/system.slice/kubelet.service\n\
             1:name=systemd:/system.slice/kubelet.service\n0::/system.slice/kubelet.service\n",
        );
        node.proc_cgroup("1", "0::/\n");
        node.proc_cgroup("self", "0::/init.scope\n");
        let fs = node.fs();
        let sshd = fs.resolve(&TargetSpec::Pid(123)).unwrap();
        assert_eq!(
            (sshd.path.as_str(), sshd.id),
            (
                "system.slice/sshd.service",
                node.ino("system.slice/sshd.service")
            )
        );
        assert_eq!(
            fs.cgroup_of_pid(456).unwrap().path,
            "system.slice/kubelet.service"
        );
        assert_eq!(
            fs.cgroup_of_pid(1).unwrap(),
            ResolvedCgroup {
                path: String::new(),
                id: node.ino(""),
                level: 0
            }
        );
        assert_eq!(fs.self_cgroup().unwrap().path, "init.scope");
    }

    #[test]
    fn pid_errors() {
        let node = Node::with_noise();
        node.proc_cgroup(
            "77",
            "4:memory:/x\n1:name=systemd:/system.slice/sshd.service\n",
        );
        node.proc_cgroup("78", "0::/system.slice/gone.service (deleted)\n");
        node.proc_cgroup("79", "0::/system.slice/gone.service\n");
        let fs = node.fs();
        assert_invalid(fs.cgroup_of_pid(0), "spec.target.pid");
        assert!(assert_not_found(fs.cgroup_of_pid(999)).contains("no such process"));
        assert!(assert_not_found(fs.cgroup_of_pid(77)).contains("no cgroup v2 entry"));
        assert!(assert_not_found(fs.cgroup_of_pid(78)).contains("removed"));
        assert!(assert_not_found(fs.cgroup_of_pid(79)).contains("does not exist"));
    }

    #[test]
    fn units_are_found_anywhere_in_the_tree() {
        let node = Node::with_noise();
        node.cg("app.slice/app-web.slice/web@1.service");
        let fs = node.fs();
        for (name, path) in [
            ("sshd.service", "system.slice/sshd.service"),
            (
                "user@1000.service",
                "user.slice/user-1000.slice/user@1000.service",
            ),
            (
                "session-3.scope",
                "user.slice/user-1000.slice/session-3.scope",
            ),
            ("app-web.slice", "app.slice/app-web.slice"),
            ("web@1.service", "app.slice/app-web.slice/web@1.service"),
            ("system.slice", "system.slice"),
        ] {
            let got = fs.resolve(&unit(name)).unwrap();
            assert_eq!(
                (got.path.as_str(), got.id),
                (path, node.ino(path)),
                "{name}"
            );
        }
    }

    #[test]
    fn unit_not_found_ambiguous_and_too_deep() {
        let node = Node::with_noise();
        // A kind node's systemd, seen from the host, runs its own containerd.service.
        node.cg("system.slice/docker-0123.scope/system.slice/containerd.service");
        node.cg("a/b/c/d/e/f/g/h/deep.service");
        let fs = node.fs();
        assert_ambiguous(
            fs.resolve(&unit("containerd.service")),
            &[
                "system.slice/containerd.service",
                "system.slice/docker-0123.scope/system.slice/containerd.service",
            ],
        );
        let message = assert_not_found(fs.resolve(&unit("nginx.service")));
        assert!(message.contains("unit:nginx.service"), "{message}");
        assert_not_found(fs.resolve(&unit("deep.service")));
        node.cg("a/b/c/d/e/f/g/ok.service");
        assert_eq!(fs.resolve(&unit("ok.service")).unwrap().level, 8);
    }

    #[test]
    fn rejects_invalid_unit_names() {
        let node = Node::new();
        let fs = node.fs();
        let long = format!("{}.service", "a".repeat(250));
        for bad in [
            "nginx",
            "nginx.timer",
            ".service",
            "",
            "a/b.service",
            "../x.service",
            "a b.service",
            "x\0.slice",
            &long,
        ] {
            assert_invalid(fs.resolve(&unit(bad)), "spec.target.systemd_unit");
        }
        for good in [
            "a-b.slice",
            "dev-disk-by\\x2duuid.swap",
            "x:y_z.mount",
            "sshd.socket",
        ] {
            assert_not_found(fs.resolve(&unit(good)));
        }
    }

    /// Container cgroups of real nodes, "<pod dir>/<container dir>", where `{_}` is
    /// the uid with underscores, `{-}` with dashes and `{}` the container id.
    const POD_LAYOUTS: [&str; 10] = [
        // systemd driver: containerd, CRI-O, docker / cri-dockerd.
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{_}.slice/cri-containerd-{}.scope",
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{_}.slice/crio-{}.scope",
        "kubepods.slice/kubepods-pod{_}.slice/docker-{}.scope",
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{_}.slice/crio-{}.scope",
        // kind: inside the node container, and the same pod seen from the host.
        "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{_}.slice/cri-containerd-{}.scope",
        "system.slice/docker-0123.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{_}.slice/cri-containerd-{}.scope",
        // cgroupfs driver: containerd uses the bare id, CRI-O a crio- prefix.
        "kubepods/burstable/pod{-}/{}",
        "kubepods/besteffort/pod{-}/crio-{}",
        "kubepods/pod{-}/{}",
        "kubepods/pod{-}/crio-{}",
    ];

    fn layout_path(template: &str, uid: &str) -> String {
        template
            .replace("{_}", &uid.replace('-', "_"))
            .replace("{-}", uid)
    }

    /// Builds a node with noise, a sibling pod, and the target pod holding CID
    /// (plus OTHER_CID and, for CRI-O, the conmon cgroups). Returns the node, the
    /// pod dir and the container dir template.
    fn pod_node(layout: &str) -> (Node, String, &str) {
        let (pod_template, container_template) = layout.rsplit_once('/').unwrap();
        let node = Node::with_noise();
        let pod_dir = layout_path(pod_template, UID);
        let sibling = layout_path(pod_template, OTHER_UID);
        for (dir, id) in [
            (&pod_dir, CID),
            (&pod_dir, OTHER_CID),
            (&sibling, &CID.replace('3', "4")),
        ] {
            node.cg(&format!("{dir}/{}", container_template.replace("{}", id)));
            if container_template.starts_with("crio-") {
                node.cg(&format!(
                    "{dir}/{}",
                    container_template
                        .replace("{}", id)
                        .replace("crio-", "crio-conmon-")
                ));
            }
        }
        (node, pod_dir, container_template)
    }

    #[test]
    fn pods_and_containers_in_every_layout() {
        for what in POD_LAYOUTS {
            let (node, pod_dir, container_template) = pod_node(what);
            let fs = node.fs();
            let got = fs.resolve(&pod(UID, None)).unwrap();
            assert_eq!(
                (got.path.as_str(), got.id),
                (pod_dir.as_str(), node.ino(&pod_dir)),
                "{what}"
            );
            assert_eq!(
                fs.resolve(&pod(&UID.replace('-', "_"), None)).unwrap().path,
                pod_dir,
                "{what}"
            );
            assert_eq!(
                fs.resolve(&pod(&UID.to_uppercase(), None)).unwrap().path,
                pod_dir,
                "{what}"
            );
            let container = format!("{pod_dir}/{}", container_template.replace("{}", CID));
            for id in [
                CID.to_owned(),
                CID[..12].to_owned(),
                format!("containerd://{CID}"),
                format!("cri-o://{}", &CID[..20]),
                format!("docker://{}", CID.to_uppercase()),
            ] {
                let got = fs.resolve(&pod(UID, Some(&id))).unwrap();
                assert_eq!(
                    (got.path.as_str(), got.id),
                    (container.as_str(), node.ino(&container)),
                    "{what} {id}"
                );
            }
            let message = assert_not_found(fs.resolve(&pod(UID, Some("abcdefabcdef"))));
            assert!(message.contains("no container cgroup"), "{what}: {message}");
        }
    }

    #[test]
    fn static_pod_uids_have_32_hex_digits() {
        let uid = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
        for template in [
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{_}.slice",
            "kubepods/burstable/pod{-}",
        ] {
            let node = Node::with_noise();
            let dir = layout_path(template, uid);
            node.cg(&dir);
            assert_eq!(node.fs().resolve(&pod(uid, None)).unwrap().path, dir);
        }
    }

    #[test]
    fn pod_not_found_and_ambiguous() {
        let (node, pod_dir, _) = pod_node(POD_LAYOUTS[0]);
        let fs = node.fs();
        let missing = "00000000-0000-0000-0000-000000000000";
        let message = assert_not_found(fs.resolve(&pod(missing, None)));
        assert!(
            message.contains(missing) && message.contains(&node.mount().display().to_string()),
            "{message}"
        );
        // A container id prefix shared by two containers of the pod.
        let twin = format!("{}{}", &CID[..16], "0".repeat(48));
        node.cg(&format!("{pod_dir}/cri-containerd-{twin}.scope"));
        assert_ambiguous(
            fs.resolve(&pod(UID, Some("containerd://3b1f0e2a9c8d"))),
            &[
                format!("{pod_dir}/cri-containerd-{CID}.scope").as_str(),
                format!("{pod_dir}/cri-containerd-{twin}.scope").as_str(),
            ],
        );
        assert_eq!(
            fs.resolve(&pod(UID, Some(CID))).unwrap().path,
            format!("{pod_dir}/cri-containerd-{CID}.scope")
        );
        // The same uid under both drivers (a node that switched drivers).
        let stale = layout_path("kubepods/burstable/pod{-}", UID);
        node.cg(&stale);
        assert_ambiguous(
            fs.resolve(&pod(UID, None)),
            &[pod_dir.as_str(), stale.as_str()],
        );
    }

    #[test]
    fn rejects_invalid_pod_uids_and_container_ids() {
        let (node, pod_dir, _) = pod_node(POD_LAYOUTS[1]);
        let fs = node.fs();
        let bad_uids = [
            "",
            "pod",
            "8d9f7c2e4b1a4e6f9c3d2a7b5e1f0c94aa",
            "8d9f7c2e-4b1a-4e6f-9c3d-2a7b5e1f0c9g",
            "8d9f7c2e-4b1a-4e6f-9c3d2a7b5e1f0c94-",
            "../../../../etc/passwd/aaaaaaaaaaaaa",
        ];
        for bad in bad_uids {
            assert_invalid(fs.resolve(&pod(bad, None)), "spec.target.pod.uid");
        }
        for bad in [
            "",
            "3b1f0e2a9c8",
            "containerd://",
            "3b1f0e2a9c8d-",
            "zz1f0e2a9c8d7e6f",
            &"a".repeat(65),
            "../3b1f0e2a9c8d",
        ] {
            assert_invalid(
                fs.resolve(&pod(UID, Some(bad))),
                "spec.target.pod.container_id",
            );
        }
        // The conmon cgroup carries the container's id but is not the container.
        let conmon_only = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";
        node.cg(&format!("{pod_dir}/crio-conmon-{conmon_only}.scope"));
        assert_not_found(fs.resolve(&pod(UID, Some(conmon_only))));
    }

    /// The only test that touches the real machine: it needs no root, only a
    /// readable /proc and cgroup2 mount.
    #[test]
    fn resolves_own_cgroup_on_this_machine() {
        let fs = match CgroupFs::detect() {
            Ok(fs) => fs,
            Err(e @ TargetError::NoCgroup2 { .. }) => {
                eprintln!("skipping: {e}");
                return;
            }
            Err(e) => panic!("detect failed: {e}"),
        };
        let own = fs
            .self_cgroup()
            .unwrap_or_else(|e| panic!("self_cgroup under {}: {e}", fs.mount().display()));
        let dir = fs.mount().join(&own.path);
        assert_eq!(own.id, fs::metadata(&dir).unwrap().ino());
        assert!(own.is_ancestor_or_self_of(&own.path));
        assert_eq!(
            fs.resolve(&TargetSpec::Pid(std::process::id())).unwrap(),
            own
        );
    }
}
