//! Removal of attachments a previous faultd left in the kernel.
//!
//! faultd attaches only through bpf links it never pins, so the kernel
//! detaches everything when the agent dies. Two things can still leave a
//! program attached: someone pinning one of our links (e.g. `bpftool link
//! pin`), and kernels that lack cgroup bpf links (< 5.7), where attachments
//! are legacy BPF_PROG_ATTACH ones that outlive the process. The agent holds
//! its lock when this runs, so any faultd program attached in its scope
//! belongs to a dead instance. Agents of other scopes (one node split
//! between agents, each with its own `cgroup.scope` and lock) may be alive,
//! so only what is attached inside the scope is removed: cgroup links whose
//! cgroup lies in it, and links of other kinds (tc, LSM, kprobe) only by an
//! agent whose scope is the whole tree.
//!
//! The bpf(2) commands used here are not exposed by aya, so they are issued
//! directly with attribute structs laid out as in include/uapi/linux/bpf.h.

use std::{
    collections::{BTreeSet, VecDeque},
    fs::File,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use faultd_common::names;
use tracing::{info, warn};

const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_DETACH: libc::c_long = 34;
const BPF_CGROUP_INET_INGRESS: u32 = 0;
const BPF_CGROUP_INET_EGRESS: u32 = 1;
/// enum bpf_link_type: BPF_LINK_TYPE_CGROUP.
const BPF_LINK_TYPE_CGROUP: u32 = 3;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Links of dead instances detached.
    pub links_detached: u32,
    /// Legacy attachments detached.
    pub legacy_detached: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("listing loaded BPF programs: {0}")]
    Programs(#[source] Box<aya::programs::ProgramError>),
    #[error("listing BPF links: {0}")]
    Links(#[source] Box<aya::programs::links::LinkError>),
}

/// Finds our programs, then detaches every link and legacy attachment of
/// theirs within `scope` (a cgroup path relative to `mount`, "" for the
/// whole tree). Cheap when there is nothing: one pass over loaded programs.
pub fn remove_leftovers(mount: &Path, scope: &str) -> Result<CleanupReport, CleanupError> {
    let whole_tree = scope.trim_matches('/').is_empty();
    let cgroup_mount = &mount.join(scope.trim_matches('/'));
    let mut ours = BTreeSet::new();
    for prog in aya::programs::loaded_programs() {
        let prog = prog.map_err(|e| CleanupError::Programs(Box::new(e)))?;
        if prog
            .name_as_str()
            .is_some_and(|n| n.starts_with(names::PROG_PREFIX))
        {
            ours.insert(prog.id());
        }
    }
    let mut report = CleanupReport::default();
    if ours.is_empty() {
        return Ok(report);
    }
    // The cgroups of the scope, by id (a cgroup2 directory's inode number
    // is its cgroup id, kernel/cgroup/cgroup.c `cgroup_id`).
    let in_scope: BTreeSet<u64> = walk_cgroups(cgroup_mount)
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .collect();

    for link in aya::programs::loaded_links() {
        let link = link.map_err(|e| CleanupError::Links(Box::new(e)))?;
        if !ours.contains(&link.program_id()) {
            continue;
        }
        let mine = match link_target(link.id()) {
            Ok(LinkTarget::Cgroup(id)) => in_scope.contains(&id),
            Ok(LinkTarget::Other) => whole_tree,
            // Gone meanwhile, or unreadable: not ours to judge.
            Err(e) => {
                tracing::debug!(link_id = link.id(), error = %e, "reading link info");
                false
            }
        };
        if !mine {
            continue;
        }
        warn!(
            link_id = link.id(),
            prog_id = link.program_id(),
            "found a faultd link left by a previous instance; detaching it"
        );
        match detach_link(link.id()) {
            Ok(()) => {
                info!(
                    link_id = link.id(),
                    prog_id = link.program_id(),
                    "detached leftover link"
                );
                report.links_detached += 1;
            }
            Err(e) => warn!(link_id = link.id(), error = %e, "detaching leftover link"),
        }
    }

    // Legacy attachments are only found by asking each cgroup.
    for cgroup in walk_cgroups(cgroup_mount) {
        let Ok(dir) = File::open(&cgroup) else {
            continue;
        };
        for attach_type in [BPF_CGROUP_INET_EGRESS, BPF_CGROUP_INET_INGRESS] {
            let Ok(ids) = query(&dir, attach_type) else {
                continue;
            };
            for id in ids.into_iter().filter(|id| ours.contains(id)) {
                match detach_legacy(&dir, id, attach_type) {
                    Ok(()) => {
                        info!(cgroup = %cgroup.display(), prog_id = id, "detached leftover program");
                        report.legacy_detached += 1;
                    }
                    // Link-based attachments also show up in the query and
                    // refuse PROG_DETACH; they were handled above.
                    Err(e) => {
                        tracing::debug!(cgroup = %cgroup.display(), prog_id = id, error = %e, "legacy detach")
                    }
                }
            }
        }
    }
    Ok(report)
}

fn walk_cgroups(mount: &Path) -> impl Iterator<Item = PathBuf> {
    let mut queue = VecDeque::from([mount.to_path_buf()]);
    std::iter::from_fn(move || {
        let dir = queue.pop_front()?;
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry
                    .file_type()
                    .is_ok_and(|t| t.is_dir() && !t.is_symlink())
                {
                    queue.push_back(entry.path());
                }
            }
        }
        Some(dir)
    })
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised #[repr(C)] struct matching the
    // kernel's layout for `cmd`; the kernel reads at most size_of::<T>() bytes
    // and zero-extends the rest (kernel/bpf/syscall.c, `__sys_bpf` via
    // `bpf_check_uarg_tail_zero`).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            size_of::<T>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn fd_from(ret: libc::c_long) -> io::Result<OwnedFd> {
    let fd = i32::try_from(ret).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this new fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[repr(C)]
struct GetFdById {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C)]
struct LinkDetach {
    link_fd: u32,
}

#[repr(C)]
struct ProgQuery {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
struct ProgDetach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

fn detach_link(link_id: u32) -> io::Result<()> {
    let mut get = GetFdById {
        id: link_id,
        next_id: 0,
        open_flags: 0,
    };
    let fd = fd_from(bpf(BPF_LINK_GET_FD_BY_ID, &mut get)?)?;
    let mut detach = LinkDetach {
        link_fd: fd.as_raw_fd() as u32,
    };
    bpf(BPF_LINK_DETACH, &mut detach).map(|_| ())
}

#[repr(C)]
struct ObjGetInfo {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// struct bpf_link_info up to the `cgroup` member of its union (8-aligned,
/// at offset 16), with room for the larger members the kernel may fill.
#[repr(C)]
#[derive(Default)]
struct LinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    cgroup_id: u64,
    attach_type: u32,
    _rest: [u32; 9],
}

enum LinkTarget {
    Cgroup(u64),
    Other,
}

/// What a link is attached to: a cgroup (its id) or something else.
fn link_target(link_id: u32) -> io::Result<LinkTarget> {
    let mut get = GetFdById {
        id: link_id,
        next_id: 0,
        open_flags: 0,
    };
    let fd = fd_from(bpf(BPF_LINK_GET_FD_BY_ID, &mut get)?)?;
    let mut info = LinkInfo::default();
    let mut attr = ObjGetInfo {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<LinkInfo>() as u32,
        info: std::ptr::from_mut(&mut info) as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(if info.link_type == BPF_LINK_TYPE_CGROUP {
        LinkTarget::Cgroup(info.cgroup_id)
    } else {
        LinkTarget::Other
    })
}

fn query(cgroup: &File, attach_type: u32) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut q = ProgQuery {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type,
        query_flags: 0,
        attach_flags: 0,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        _pad: 0,
    };
    bpf(BPF_PROG_QUERY, &mut q)?;
    ids.truncate(q.prog_cnt.min(64) as usize);
    Ok(ids)
}

fn detach_legacy(cgroup: &File, prog_id: u32, attach_type: u32) -> io::Result<()> {
    let mut get = GetFdById {
        id: prog_id,
        next_id: 0,
        open_flags: 0,
    };
    let prog = fd_from(bpf(BPF_PROG_GET_FD_BY_ID, &mut get)?)?;
    let mut detach = ProgDetach {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        attach_flags: 0,
    };
    bpf(BPF_PROG_DETACH, &mut detach).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The kernel's layouts (include/uapi/linux/bpf.h, union bpf_attr).
    #[test]
    fn attr_layouts_match_the_uapi() {
        assert_eq!(std::mem::offset_of!(ProgQuery, prog_ids), 16);
        assert_eq!(std::mem::offset_of!(ProgQuery, prog_cnt), 24);
        assert_eq!(size_of::<GetFdById>(), 12);
        assert_eq!(size_of::<ProgDetach>(), 16);
        assert_eq!(std::mem::offset_of!(LinkInfo, cgroup_id), 16);
        assert_eq!(std::mem::offset_of!(LinkInfo, attach_type), 24);
        assert_eq!(size_of::<ObjGetInfo>(), 16);
    }

    #[test]
    fn walk_visits_every_directory_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("a/b/c")).expect("mkdir");
        std::fs::create_dir_all(tmp.path().join("d")).expect("mkdir");
        std::fs::write(tmp.path().join("a/file"), "").expect("file");
        let mut seen: Vec<_> = walk_cgroups(tmp.path())
            .map(|p| {
                p.strip_prefix(tmp.path())
                    .expect("under")
                    .display()
                    .to_string()
            })
            .collect();
        seen.sort();
        assert_eq!(seen, ["", "a", "a/b", "a/b/c", "d"]);
    }
}
