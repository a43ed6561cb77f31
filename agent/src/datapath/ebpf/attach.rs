//! Attaching programs: which program serves a hook, and the link that
//! holds it (cgroup links, node-wide LSM links, kprobes on the syscall
//! entry points).

use std::{fs::File, path::Path};

use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupSkbAttachType, Program, cgroup_skb::CgroupSkbLink,
        cgroup_sock::CgroupSockLink, cgroup_sock_addr::CgroupSockAddrLink, kprobe::KProbeLink,
        lsm::LsmLink, lsm_cgroup::LsmLink as LsmCgroupLink,
    },
};
use faultd_common::names;

use super::load::{LSM_PROGRAMS, ebpf_program};
use crate::{
    backend::LsmScope,
    datapath::{DatapathError, Hook},
    fault::SyscallOp,
};

/// A link of any of our program types. Dropping it detaches.
#[derive(Debug)]
#[expect(dead_code, reason = "held for its Drop, which detaches the link")]
pub(super) enum Link {
    Skb(CgroupSkbLink),
    SockAddr(CgroupSockAddrLink),
    Sock(CgroupSockLink),
    Lsm(LsmLink),
    LsmCgroup(LsmCgroupLink),
    /// One perf-event kprobe per syscall entry point of the operation.
    Kprobe(Vec<KProbeLink>),
}

/// The syscall entry points each kprobe program attaches to, without the
/// architecture's wrapper prefix. 32-bit compat entries are not covered.
fn kprobe_syscalls(op: SyscallOp) -> &'static [&'static str] {
    match op {
        SyscallOp::Open => &["open", "openat", "openat2", "creat"],
        SyscallOp::Read => &["read", "readv", "pread64", "preadv", "preadv2"],
        SyscallOp::Write => &["write", "writev", "pwrite64", "pwritev", "pwritev2"],
        SyscallOp::Connect => &["connect"],
        SyscallOp::Bind => &["bind"],
        SyscallOp::Sendmsg => &["sendto", "sendmsg", "sendmmsg"],
        SyscallOp::Socket => &["socket"],
        SyscallOp::Mkdir => &["mkdir", "mkdirat"],
        SyscallOp::Unlink => &["unlink", "unlinkat"],
        SyscallOp::Rename => &["rename", "renameat", "renameat2"],
        SyscallOp::Execve => &["execve", "execveat"],
        SyscallOp::Accept => &["accept", "accept4"],
        SyscallOp::Recvmsg => &["recvfrom", "recvmsg", "recvmmsg"],
    }
}

/// The syscall wrappers' symbol prefix (arch/*/include/asm/syscall_wrapper.h).
#[cfg(target_arch = "x86_64")]
const SYSCALL_PREFIX: &str = "__x64_sys_";
#[cfg(target_arch = "aarch64")]
const SYSCALL_PREFIX: &str = "__arm64_sys_";
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const SYSCALL_PREFIX: &str = "sys_";

fn kprobe_prog(op: SyscallOp) -> &'static str {
    match op {
        SyscallOp::Open => names::KPROBE_OPEN_PROG,
        SyscallOp::Read => names::KPROBE_READ_PROG,
        SyscallOp::Write => names::KPROBE_WRITE_PROG,
        SyscallOp::Connect => names::KPROBE_CONNECT_PROG,
        SyscallOp::Bind => names::KPROBE_BIND_PROG,
        SyscallOp::Sendmsg => names::KPROBE_SENDMSG_PROG,
        SyscallOp::Socket => names::KPROBE_SOCKET_PROG,
        SyscallOp::Mkdir => names::KPROBE_MKDIR_PROG,
        SyscallOp::Unlink => names::KPROBE_UNLINK_PROG,
        SyscallOp::Rename => names::KPROBE_RENAME_PROG,
        SyscallOp::Execve => names::KPROBE_EXEC_PROG,
        SyscallOp::Accept => names::KPROBE_ACCEPT_PROG,
        SyscallOp::Recvmsg => names::KPROBE_RECVMSG_PROG,
    }
}

fn prog_name(hook: Hook, lsm: Option<LsmScope>) -> &'static str {
    if lsm == Some(LsmScope::Cgroup)
        && let Some(i) = LSM_PROGRAMS.iter().position(|(h, ..)| *h == hook)
    {
        return names::LSM_CGROUP_PROGS[i];
    }
    match hook {
        Hook::Egress => names::EGRESS_PROG,
        Hook::Ingress => names::INGRESS_PROG,
        Hook::Connect4 => names::CONNECT4_PROG,
        Hook::Connect6 => names::CONNECT6_PROG,
        Hook::Bind4 => names::BIND4_PROG,
        Hook::Bind6 => names::BIND6_PROG,
        Hook::Sendmsg4 => names::SENDMSG4_PROG,
        Hook::Sendmsg6 => names::SENDMSG6_PROG,
        Hook::SockCreate => names::SOCK_CREATE_PROG,
        Hook::FileOpen => names::FILE_OPEN_PROG,
        Hook::FilePermission => names::FILE_PERM_PROG,
        Hook::Mkdir => names::MKDIR_PROG,
        Hook::Unlink => names::UNLINK_PROG,
        Hook::Rename => names::RENAME_PROG,
        Hook::Exec => names::EXEC_PROG,
        Hook::Accept => names::ACCEPT_PROG,
        Hook::Recvmsg => names::RECVMSG_PROG,
        Hook::Kprobe(op) => kprobe_prog(op),
    }
}

/// Opens the cgroup directory at `path` and checks that it is still cgroup
/// `cgroup_id`, the one the target resolved to: the program is attached
/// through this fd, so a cgroup renamed, removed or replaced by another
/// between resolution and attach cannot receive it. A cgroup's id is its
/// kernfs inode number (include/linux/kernfs.h `kernfs_ino()`), which a new
/// directory at the same path does not share. The last component is not
/// followed if it is a symlink. Id 0 is a node-wide attachment at the root,
/// which is not a target and is not checked.
pub(super) fn open_cgroup(path: &Path, cgroup_id: u64) -> Result<File, DatapathError> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let cgroup = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| DatapathError::OpenCgroup {
            path: path.display().to_string(),
            source,
        })?;
    let ino = cgroup
        .metadata()
        .map_err(|source| DatapathError::OpenCgroup {
            path: path.display().to_string(),
            source,
        })?
        .ino();
    if cgroup_id != 0 && ino != cgroup_id {
        return Err(DatapathError::CgroupChanged {
            path: path.display().to_string(),
            resolved: cgroup_id,
            found: format!("id {ino}"),
        });
    }
    Ok(cgroup)
}

/// Attaches the `hook` program to the cgroup at `path` (node-wide for
/// kprobes and node-wide LSM programs) and returns the link that keeps it
/// attached.
pub(super) fn attach(
    ebpf: &mut Ebpf,
    lsm_scope: Option<LsmScope>,
    cgroup_id: u64,
    path: &Path,
    hook: Hook,
) -> Result<Link, DatapathError> {
    let cgroup = open_cgroup(path, cgroup_id)?;
    let name = prog_name(hook, lsm_scope);
    let attach_err = |e| DatapathError::Attach {
        hook,
        path: path.display().to_string(),
        source: Box::new(e),
    };
    // Through bpf_link (kernel >= 5.7) the kernel always attaches with
    // BPF_F_ALLOW_MULTI (kernel/bpf/cgroup.c, `cgroup_bpf_link_attach`),
    // so our programs run beside systemd's or Cilium's, never replacing
    // them. `Single` is the mode aya accepts for links.
    let mode = CgroupAttachMode::Single;
    let link = match ebpf_program(ebpf, name)? {
        Program::CgroupSkb(p) => {
            let attach_type = match hook {
                Hook::Ingress => CgroupSkbAttachType::Ingress,
                _ => CgroupSkbAttachType::Egress,
            };
            let id = p.attach(cgroup, attach_type, mode).map_err(attach_err)?;
            Link::Skb(p.take_link(id).map_err(attach_err)?)
        }
        Program::CgroupSockAddr(p) => {
            let id = p.attach(cgroup, mode).map_err(attach_err)?;
            Link::SockAddr(p.take_link(id).map_err(attach_err)?)
        }
        Program::CgroupSock(p) => {
            let id = p.attach(cgroup, mode).map_err(attach_err)?;
            Link::Sock(p.take_link(id).map_err(attach_err)?)
        }
        // Node-wide: the program filters by the caller's cgroup itself.
        Program::Lsm(p) => {
            let id = p.attach().map_err(attach_err)?;
            Link::Lsm(p.take_link(id).map_err(attach_err)?)
        }
        Program::LsmCgroup(p) => {
            let id = p.attach(cgroup).map_err(attach_err)?;
            Link::LsmCgroup(p.take_link(id).map_err(attach_err)?)
        }
        Program::KProbe(p) => {
            let Hook::Kprobe(op) = hook else {
                return Err(DatapathError::Missing {
                    kind: "kprobe hook",
                    name,
                });
            };
            let present = kernel_symbols();
            let mut links = Vec::new();
            for call in kprobe_syscalls(op) {
                let symbol = format!("{SYSCALL_PREFIX}{call}");
                // Not every architecture has every entry point (arm64 has
                // no open(2)); an absent one has nothing to fail.
                if present.as_ref().is_some_and(|p| !p.contains(&symbol)) {
                    continue;
                }
                let id = p.attach(&symbol, 0).map_err(attach_err)?;
                links.push(p.take_link(id).map_err(attach_err)?);
            }
            Link::Kprobe(links)
        }
        _ => {
            return Err(DatapathError::Missing {
                kind: "cgroup program",
                name,
            });
        }
    };
    Ok(link)
}

/// Function names in /proc/kallsyms, or None if it cannot be read (then
/// every entry point is tried).
fn kernel_symbols() -> Option<std::collections::HashSet<String>> {
    let text = std::fs::read_to_string("/proc/kallsyms").ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_whitespace().nth(2))
            .map(str::to_owned)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::open_cgroup;
    use crate::datapath::DatapathError;

    /// Resolved, then renamed away and replaced by a new directory of the
    /// same name before the attach: the fd would be another cgroup's.
    #[test]
    fn a_cgroup_replaced_after_resolution_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("app.slice");
        std::fs::create_dir(&path).expect("mkdir");
        let resolved = std::fs::metadata(&path).expect("stat").ino();
        assert!(open_cgroup(&path, resolved).is_ok());
        std::fs::rename(&path, dir.path().join("moved")).expect("rename");
        std::fs::create_dir(&path).expect("mkdir");
        let err = open_cgroup(&path, resolved).expect_err("a different directory");
        assert!(matches!(err, DatapathError::CgroupChanged { .. }), "{err}");
        assert!(
            err.to_string().contains("changed after it was resolved"),
            "{err}"
        );
        // Removed: nothing to open.
        std::fs::remove_dir(&path).expect("rmdir");
        assert!(matches!(
            open_cgroup(&path, resolved),
            Err(DatapathError::OpenCgroup { .. })
        ));
    }

    /// A symlink put where the cgroup was is not followed.
    #[test]
    fn a_symlink_at_the_resolved_path_is_not_followed() {
        let dir = tempfile::tempdir().expect("tmp");
        let real = dir.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        let ino = std::fs::metadata(&real).expect("stat").ino();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        assert!(matches!(
            open_cgroup(&link, ino),
            Err(DatapathError::OpenCgroup { .. })
        ));
    }
}
