//! Which kernel mechanism serves a syscall fault on this node: decided from
//! what the agent's programs loaded, preferring cgroup-scoped mechanisms
//! (bystanders run nothing) to node-wide ones.

use crate::fault::{SyscallOp, SyscallSpec};

/// A kernel mechanism that fails syscalls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysBackend {
    /// cgroup sock_addr programs with `bpf_set_retval` (connect, bind,
    /// sendmsg; 6.1+).
    CgroupSockAddr,
    /// The cgroup sock_create program (socket; 6.1+).
    CgroupSock,
    /// BPF LSM programs attached at the targeted cgroups (6.0+).
    LsmCgroup,
    /// BPF LSM programs attached for the whole node, filtering by cgroup
    /// themselves (5.7+, kernels without `lsm_cgroup`).
    Lsm,
    /// kprobes on the syscall entry points with `bpf_override_return`
    /// (CONFIG_BPF_KPROBE_OVERRIDE).
    Kprobe,
}

impl SysBackend {
    /// As the API reports it.
    pub fn name(self) -> &'static str {
        match self {
            Self::CgroupSockAddr => "cgroup_sock_addr",
            Self::CgroupSock => "cgroup_sock",
            Self::LsmCgroup => "lsm_cgroup",
            Self::Lsm => "bpf_lsm",
            Self::Kprobe => "kprobe_override",
        }
    }
}

/// How the loaded BPF LSM programs attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LsmScope {
    /// `lsm_cgroup`, at the targeted cgroups.
    Cgroup,
    /// Plain `lsm`, once for the node.
    Node,
}

/// Which syscall backends loaded on this node: decided once, when the agent
/// loads its programs, so every fault on an operation uses the same one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SysBackends {
    /// The cgroup socket programs (they need `bpf_set_retval`).
    pub cgroup_hooks: bool,
    pub lsm: Option<LsmScope>,
    /// The kprobe programs with `bpf_override_return`.
    pub kprobe: bool,
    /// Path-prefix filters (kernel BTF offsets) are usable.
    pub path_filter: bool,
}

/// Why no backend can serve a syscall fault: the features it lacks, as
/// GetCapabilities names them, and what provides them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoBackend(pub String);

const NEED_CGROUP_HOOKS: &str = "cgroup_sock_hooks (faultd's cgroup socket programs, which use \
     bpf_set_retval: kernel >= 6.1)";
const NEED_BPF_LSM: &str = "bpf_lsm (BPF LSM programs loadable and running: kernel >= 5.7 with \
     CONFIG_BPF_LSM=y and \"bpf\" in the lsm= boot parameter, e.g. Debian and Ubuntu 6.x kernels \
     booted with lsm=...,bpf)";
const NEED_KPROBE: &str = "kprobe_override (bpf_override_return on syscall entry: \
     a kernel built with CONFIG_BPF_KPROBE_OVERRIDE=y and CONFIG_FUNCTION_ERROR_INJECTION=y, see \
     /boot/config-$(uname -r); it serves faults without address, protocol or path filters)";
const NEED_PATH: &str = "path_filter (kernel BTF at /sys/kernel/btf/vmlinux describing struct \
     file, dentry, inode and super_block)";

impl SysBackends {
    /// The backend for `spec`, in order of preference: the cgroup-scoped
    /// mechanisms first (bystanders run nothing), then node-wide ones.
    pub fn pick(&self, spec: &SyscallSpec) -> Result<SysBackend, NoBackend> {
        let kprobe = self.kprobe && !spec.has_filter();
        let (choice, needs): (Option<SysBackend>, &[&str]) = match spec.op {
            SyscallOp::Connect | SyscallOp::Bind | SyscallOp::Sendmsg => (
                (self.cgroup_hooks.then_some(SysBackend::CgroupSockAddr))
                    .or(kprobe.then_some(SysBackend::Kprobe)),
                &[NEED_CGROUP_HOOKS, NEED_KPROBE],
            ),
            SyscallOp::Socket => (
                (self.cgroup_hooks.then_some(SysBackend::CgroupSock))
                    .or(kprobe.then_some(SysBackend::Kprobe)),
                &[NEED_CGROUP_HOOKS, NEED_KPROBE],
            ),
            _ if spec.path.is_some() => {
                let lsm = match self.lsm {
                    Some(LsmScope::Cgroup) => Some(SysBackend::LsmCgroup),
                    Some(LsmScope::Node) => Some(SysBackend::Lsm),
                    None => None,
                };
                match lsm {
                    Some(b) if self.path_filter => (Some(b), &[]),
                    Some(_) => (None, &[NEED_PATH]),
                    None => (None, &[NEED_BPF_LSM, NEED_PATH]),
                }
            }
            _ => (
                match self.lsm {
                    Some(LsmScope::Cgroup) => Some(SysBackend::LsmCgroup),
                    Some(LsmScope::Node) => Some(SysBackend::Lsm),
                    None => kprobe.then_some(SysBackend::Kprobe),
                },
                &[NEED_BPF_LSM, NEED_KPROBE],
            ),
        };
        choice.ok_or_else(|| {
            let filtered = if self.kprobe && spec.has_filter() {
                " (kprobe_override is available but takes no filters)"
            } else {
                ""
            };
            NoBackend(format!(
                "{} faults need one of: {}{filtered}",
                spec.op.name(),
                needs.join("; or ")
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::{Errno, PPM, PacketFilter, PathPrefix};

    #[test]
    fn backends_are_picked_cgroup_scoped_first() {
        let spec = |op, path: bool| SyscallSpec {
            op,
            errno: Errno::parse("EIO").expect("known"),
            probability_ppm: PPM,
            filter: PacketFilter::default(),
            path: path.then(|| PathPrefix {
                path: "/var".into(),
                dev: 1,
                ino: 2,
            }),
        };
        let all = SysBackends {
            cgroup_hooks: true,
            lsm: Some(LsmScope::Cgroup),
            kprobe: true,
            path_filter: true,
        };
        let pick = |b: &SysBackends, op, path| b.pick(&spec(op, path)).map_err(|e| e.0);
        assert_eq!(
            pick(&all, SyscallOp::Connect, false),
            Ok(SysBackend::CgroupSockAddr)
        );
        assert_eq!(
            pick(&all, SyscallOp::Socket, false),
            Ok(SysBackend::CgroupSock)
        );
        assert_eq!(pick(&all, SyscallOp::Open, true), Ok(SysBackend::LsmCgroup));
        let node = SysBackends {
            lsm: Some(LsmScope::Node),
            ..all
        };
        assert_eq!(pick(&node, SyscallOp::Recvmsg, false), Ok(SysBackend::Lsm));
        let kprobe_only = SysBackends {
            kprobe: true,
            ..SysBackends::default()
        };
        assert_eq!(
            pick(&kprobe_only, SyscallOp::Write, false),
            Ok(SysBackend::Kprobe)
        );
        assert_eq!(
            pick(&kprobe_only, SyscallOp::Socket, false),
            Ok(SysBackend::Kprobe)
        );
        let err = pick(&kprobe_only, SyscallOp::Open, true).expect_err("path needs LSM");
        assert!(
            err.contains("bpf_lsm") && err.contains("path_filter"),
            "{err}"
        );
        let no_btf = SysBackends {
            path_filter: false,
            ..all
        };
        let err = pick(&no_btf, SyscallOp::Open, true).expect_err("no offsets");
        assert!(
            err.contains("path_filter") && !err.contains("bpf_lsm"),
            "{err}"
        );
        assert_eq!(
            pick(&no_btf, SyscallOp::Open, false),
            Ok(SysBackend::LsmCgroup)
        );
    }
}
