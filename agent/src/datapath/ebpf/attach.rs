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

/// Attaches the `hook` program to the cgroup at `path` (node-wide for
/// kprobes and node-wide LSM programs) and returns the link that keeps it
/// attached.
pub(super) fn attach(
    ebpf: &mut Ebpf,
    lsm_scope: Option<LsmScope>,
    path: &Path,
    hook: Hook,
) -> Result<Link, DatapathError> {
    let cgroup = File::open(path).map_err(|source| DatapathError::OpenCgroup {
        path: path.display().to_string(),
        source,
    })?;
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
