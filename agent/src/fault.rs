//! Fault specifications as the agent understands them, independent of the
//! wire format (see `api` for the conversion from protobuf).

use std::{fmt, net::IpAddr, ops::RangeInclusive, time::Duration};

use faultd_common::{
    ACTION_BANDWIDTH, ACTION_LATENCY, ACTION_LOSS, DIR_EGRESS, DIR_INGRESS, DIST_NORMAL,
    DIST_PARETO, DIST_PARETONORMAL, DIST_UNIFORM, FAMILY_ANY, FAMILY_IPV4, FAMILY_IPV6, NetRule,
    PROTO_ANY, PROTO_ICMP, PROTO_TCP, PROTO_UDP, SYS_OP_ACCEPT, SYS_OP_BIND, SYS_OP_CONNECT,
    SYS_OP_EXECVE, SYS_OP_MKDIR, SYS_OP_OPEN, SYS_OP_READ, SYS_OP_RECVMSG, SYS_OP_RENAME,
    SYS_OP_SENDMSG, SYS_OP_SOCKET, SYS_OP_UNLINK, SYS_OP_WRITE, SysRule, THRESHOLD_ALWAYS,
};

use crate::target::TargetSpec;

/// Parts per million: the unit of every probability in the API.
pub const PPM: u32 = 1_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpec {
    pub id: String,
    pub target: TargetSpec,
    pub duration: Duration,
    pub kind: FaultKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Loss(LossSpec),
    Syscall(SyscallSpec),
    Latency(LatencySpec),
    Bandwidth(BandwidthSpec),
}

impl FaultKind {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Loss(_) => "loss",
            Self::Syscall(_) => "syscall",
            Self::Latency(_) => "latency",
            Self::Bandwidth(_) => "bandwidth",
        }
    }

    /// For faults that set departure times: how far ahead of now a packet
    /// may be stamped, which the fq on the target's devices must accept.
    /// Jitter tables reach 4 sigma (iproute2 clips them to 16 bits, 32767
    /// / 8192); pacing stamps at most `BANDWIDTH_HORIZON_NS` ahead.
    pub fn fq_horizon(&self) -> Option<Duration> {
        match self {
            // Ingress delay uses the fq of faultd's ifb (`ingress_delay`).
            Self::Latency(l) if l.direction.bits() & DIR_EGRESS == 0 => None,
            Self::Latency(l) => Some(l.delay + l.jitter * 4),
            Self::Bandwidth(b) if b.direction.bits() & DIR_EGRESS == 0 => None,
            Self::Bandwidth(_) => Some(Duration::from_nanos(faultd_common::BANDWIDTH_HORIZON_NS)),
            Self::Loss(_) | Self::Syscall(_) => None,
        }
    }

    /// Whether this fault delays or paces packets delivered to the target
    /// (tc ingress program and ifb, see `qdisc::QdiscManager::acquire_ifb`).
    pub fn ingress_delay(&self) -> bool {
        match self {
            Self::Latency(LatencySpec { direction, .. })
            | Self::Bandwidth(BandwidthSpec { direction, .. }) => {
                direction.bits() & DIR_INGRESS != 0
            }
            Self::Loss(_) | Self::Syscall(_) => false,
        }
    }

    /// Whether this fault needs the program on `hook`, given the syscall
    /// backends this node offers (ignored for packet faults).
    pub fn uses(&self, hook: Hook, backends: &SysBackends) -> bool {
        match self {
            // Delay and pacing act before the qdiscs: on egress in the
            // cgroup program, on ingress in the tc program (not a cgroup
            // hook). On ingress they still need both cgroup programs: they
            // record the target's sockets' cgroups on the sockets, where
            // the tc program finds them (ebpf/src/net.rs, `tag_socket`).
            Self::Latency(LatencySpec { direction, .. })
            | Self::Bandwidth(BandwidthSpec { direction, .. }) => match hook {
                Hook::Egress => direction.bits() != 0,
                Hook::Ingress => direction.bits() & DIR_INGRESS != 0,
                _ => false,
            },
            Self::Loss(LossSpec { direction, .. }) => match hook {
                Hook::Egress | Hook::Ingress => direction.bits() & hook.dir_bit() != 0,
                _ => false,
            },
            Self::Syscall(s) => match backends.pick(s) {
                Ok(backend) => s.uses(hook, backend),
                Err(_) => false,
            },
        }
    }

    /// The kernel table its rule lives in.
    pub fn table(&self) -> Table {
        match self {
            Self::Loss(_) | Self::Latency(_) | Self::Bandwidth(_) => Table::Net,
            Self::Syscall(_) => Table::Sys,
        }
    }
}

/// The two rules maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `FAULTD_RULES`: packets (cgroup_skb).
    Net,
    /// `FAULTD_SYS`: syscalls (cgroup socket hooks).
    Sys,
}

impl Table {
    pub const ALL: [Table; 2] = [Table::Net, Table::Sys];
}

/// A syscall fault: fail an operation with `errno`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyscallSpec {
    pub op: SyscallOp,
    pub errno: Errno,
    /// 1..=1_000_000.
    pub probability_ppm: u32,
    /// For connect/sendmsg the destination, for bind the local address.
    pub filter: PacketFilter,
    /// open/read/write: only files below this directory.
    pub path: Option<PathPrefix>,
}

/// A directory, identified as the kernel sees it: inode number and the
/// super block's `dev_t` (`MKDEV(major, minor)` = major << 20 | minor,
/// include/linux/kdev_t.h), resolved from the path when the fault is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPrefix {
    pub path: String,
    pub dev: u32,
    pub ino: u64,
}

impl PathPrefix {
    /// Resolves `path` (absolute, an existing directory) in the agent's
    /// mount namespace.
    pub fn resolve(path: &str) -> Result<Self, String> {
        use std::os::unix::fs::MetadataExt as _;
        if !path.starts_with('/') {
            return Err(format!("{path:?} must be an absolute path"));
        }
        let meta = std::fs::metadata(path).map_err(|e| format!("{path}: {e}"))?;
        if !meta.is_dir() {
            return Err(format!("{path} is not a directory"));
        }
        let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
        Ok(Self {
            path: path.to_owned(),
            dev: (major << 20) | minor,
            ino: meta.ino(),
        })
    }
}

impl SyscallSpec {
    /// Whether this fault, served by `backend`, needs the program on `hook`.
    pub fn uses(&self, hook: Hook, backend: SysBackend) -> bool {
        if backend == SysBackend::Kprobe {
            return hook == Hook::Kprobe(self.op);
        }
        let (v4, v6) = match self.filter.remote.map(|c| c.addr()) {
            Some(IpAddr::V4(_)) => (true, false),
            Some(IpAddr::V6(_)) => (false, true),
            None => (true, true),
        };
        match (self.op, hook) {
            (SyscallOp::Connect, Hook::Connect4)
            | (SyscallOp::Bind, Hook::Bind4)
            | (SyscallOp::Sendmsg, Hook::Sendmsg4) => v4,
            (SyscallOp::Connect, Hook::Connect6)
            | (SyscallOp::Bind, Hook::Bind6)
            | (SyscallOp::Sendmsg, Hook::Sendmsg6) => v6,
            (SyscallOp::Socket, Hook::SockCreate) => true,
            (SyscallOp::Open, Hook::FileOpen) => true,
            (SyscallOp::Read | SyscallOp::Write, Hook::FilePermission) => true,
            (SyscallOp::Mkdir, Hook::Mkdir)
            | (SyscallOp::Unlink, Hook::Unlink)
            | (SyscallOp::Rename, Hook::Rename)
            | (SyscallOp::Execve, Hook::Exec)
            | (SyscallOp::Accept, Hook::Accept)
            | (SyscallOp::Recvmsg, Hook::Recvmsg) => true,
            _ => false,
        }
    }

    fn has_filter(&self) -> bool {
        self.filter != PacketFilter::default() || self.path.is_some()
    }
}

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

/// Operations a syscall fault can fail. Which syscalls each covers, per
/// backend, is documented in docs/syscall-faults.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SyscallOp {
    /// connect(2) on TCP and UDP sockets (BPF_CGROUP_INET{4,6}_CONNECT).
    Connect,
    /// bind(2) (BPF_CGROUP_INET{4,6}_BIND).
    Bind,
    /// sendto/sendmsg with an address on unconnected UDP sockets
    /// (BPF_CGROUP_UDP{4,6}_SENDMSG).
    Sendmsg,
    /// socket(2) for inet sockets and others (BPF_CGROUP_INET_SOCK_CREATE).
    Socket,
    /// open/openat/openat2/creat (BPF LSM `file_open`).
    Open,
    /// read/readv/pread and reads of sockets and pipes (BPF LSM
    /// `file_permission` with MAY_READ).
    Read,
    /// write/writev/pwrite, sockets and pipes included (BPF LSM
    /// `file_permission` with MAY_WRITE).
    Write,
    /// mkdir/mkdirat (BPF LSM `inode_mkdir`).
    Mkdir,
    /// unlink/unlinkat of files (BPF LSM `inode_unlink`).
    Unlink,
    /// rename/renameat/renameat2 (BPF LSM `inode_rename`).
    Rename,
    /// execve/execveat (BPF LSM `bprm_check_security`).
    Execve,
    /// accept/accept4 (BPF LSM `socket_accept`).
    Accept,
    /// recv/recvfrom/recvmsg/recvmmsg (BPF LSM `socket_recvmsg`).
    Recvmsg,
}

impl SyscallOp {
    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Bind => "bind",
            Self::Sendmsg => "sendmsg",
            Self::Socket => "socket",
            Self::Open => "open",
            Self::Read => "read",
            Self::Write => "write",
            Self::Mkdir => "mkdir",
            Self::Unlink => "unlink",
            Self::Rename => "rename",
            Self::Execve => "execve",
            Self::Accept => "accept",
            Self::Recvmsg => "recvmsg",
        }
    }

    /// Operations served by BPF LSM; they take no address filter.
    pub fn is_lsm(self) -> bool {
        !matches!(
            self,
            Self::Connect | Self::Bind | Self::Sendmsg | Self::Socket
        )
    }

    fn code(self) -> u8 {
        match self {
            Self::Connect => SYS_OP_CONNECT,
            Self::Bind => SYS_OP_BIND,
            Self::Sendmsg => SYS_OP_SENDMSG,
            Self::Socket => SYS_OP_SOCKET,
            Self::Open => SYS_OP_OPEN,
            Self::Read => SYS_OP_READ,
            Self::Write => SYS_OP_WRITE,
            Self::Mkdir => SYS_OP_MKDIR,
            Self::Unlink => SYS_OP_UNLINK,
            Self::Rename => SYS_OP_RENAME,
            Self::Execve => SYS_OP_EXECVE,
            Self::Accept => SYS_OP_ACCEPT,
            Self::Recvmsg => SYS_OP_RECVMSG,
        }
    }
}

/// An errno a fault may inject, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno {
    pub name: &'static str,
    pub value: i32,
}

/// The errnos faultd injects: those applications meet in practice for the
/// operations faultd can fail.
pub const ERRNOS: &[Errno] = &[
    Errno {
        name: "EPERM",
        value: libc::EPERM,
    },
    Errno {
        name: "ENOENT",
        value: libc::ENOENT,
    },
    Errno {
        name: "EINTR",
        value: libc::EINTR,
    },
    Errno {
        name: "EIO",
        value: libc::EIO,
    },
    Errno {
        name: "EAGAIN",
        value: libc::EAGAIN,
    },
    Errno {
        name: "ENOMEM",
        value: libc::ENOMEM,
    },
    Errno {
        name: "EACCES",
        value: libc::EACCES,
    },
    Errno {
        name: "EBUSY",
        value: libc::EBUSY,
    },
    Errno {
        name: "EEXIST",
        value: libc::EEXIST,
    },
    Errno {
        name: "EINVAL",
        value: libc::EINVAL,
    },
    Errno {
        name: "ENFILE",
        value: libc::ENFILE,
    },
    Errno {
        name: "EMFILE",
        value: libc::EMFILE,
    },
    Errno {
        name: "ENOSPC",
        value: libc::ENOSPC,
    },
    Errno {
        name: "EROFS",
        value: libc::EROFS,
    },
    Errno {
        name: "EAFNOSUPPORT",
        value: libc::EAFNOSUPPORT,
    },
    Errno {
        name: "EPROTONOSUPPORT",
        value: libc::EPROTONOSUPPORT,
    },
    Errno {
        name: "EADDRINUSE",
        value: libc::EADDRINUSE,
    },
    Errno {
        name: "EADDRNOTAVAIL",
        value: libc::EADDRNOTAVAIL,
    },
    Errno {
        name: "ENETDOWN",
        value: libc::ENETDOWN,
    },
    Errno {
        name: "ENETUNREACH",
        value: libc::ENETUNREACH,
    },
    Errno {
        name: "ECONNABORTED",
        value: libc::ECONNABORTED,
    },
    Errno {
        name: "ECONNRESET",
        value: libc::ECONNRESET,
    },
    Errno {
        name: "ENOBUFS",
        value: libc::ENOBUFS,
    },
    Errno {
        name: "ETIMEDOUT",
        value: libc::ETIMEDOUT,
    },
    Errno {
        name: "ECONNREFUSED",
        value: libc::ECONNREFUSED,
    },
    Errno {
        name: "EHOSTUNREACH",
        value: libc::EHOSTUNREACH,
    },
];

impl Errno {
    pub fn parse(name: &str) -> Option<Self> {
        let upper = name.trim().to_ascii_uppercase();
        ERRNOS.iter().copied().find(|e| e.name == upper)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LossSpec {
    /// 1..=1_000_000.
    pub probability_ppm: u32,
    pub direction: Direction,
    pub filter: PacketFilter,
}

/// A delay for a target's packets (EDT + fq).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatencySpec {
    pub delay: Duration,
    /// netem's sigma; zero for none.
    pub jitter: Duration,
    pub distribution: Distribution,
    /// Correlation of consecutive jitter samples, parts per million.
    pub correlation_ppm: u32,
    pub direction: Direction,
    pub filter: PacketFilter,
}

/// A rate limit for a target's packets (EDT pacing + fq).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BandwidthSpec {
    /// Bits per second at the network layer.
    pub rate_bps: u64,
    pub direction: Direction,
    pub filter: PacketFilter,
}

/// Longest fixed delay. fq's horizon is set above delay plus jitter
/// (see qdisc.rs), so no delayed packet is capped or dropped by fq.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// Largest jitter scale: the kernel computes `rnd * sigma` in 64 bits with
/// a 32-bit random number (ebpf/src/net.rs, `jitter`).
pub const MAX_JITTER: Duration = Duration::from_secs(4);
/// Lowest rate: 1 kB/s; below it one full-size packet would wait longer
/// than the 2 s pacing horizon.
pub const MIN_RATE_BPS: u64 = 8_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Distribution {
    #[default]
    Uniform,
    Normal,
    Pareto,
    ParetoNormal,
}

impl Distribution {
    pub fn name(self) -> &'static str {
        match self {
            Self::Uniform => "uniform",
            Self::Normal => "normal",
            Self::Pareto => "pareto",
            Self::ParetoNormal => "paretonormal",
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Self::Uniform => DIST_UNIFORM,
            Self::Normal => DIST_NORMAL,
            Self::Pareto => DIST_PARETO,
            Self::ParetoNormal => DIST_PARETONORMAL,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Egress,
    Ingress,
    Both,
}

impl Direction {
    pub fn bits(self) -> u8 {
        match self {
            Self::Egress => DIR_EGRESS,
            Self::Ingress => DIR_INGRESS,
            Self::Both => DIR_EGRESS | DIR_INGRESS,
        }
    }
}

/// A kernel attach point, one program each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    Egress,
    Ingress,
    Connect4,
    Connect6,
    Bind4,
    Bind6,
    Sendmsg4,
    Sendmsg6,
    SockCreate,
    /// BPF LSM hooks: at the targeted cgroups (`lsm_cgroup`) or once for the
    /// node (`lsm`, the program filters by the caller's cgroup).
    FileOpen,
    FilePermission,
    Mkdir,
    Unlink,
    Rename,
    Exec,
    Accept,
    Recvmsg,
    /// The kprobes on an operation's syscall entry points, node-wide.
    Kprobe(SyscallOp),
}

impl Hook {
    pub const ALL: [Hook; 30] = [
        Hook::Egress,
        Hook::Ingress,
        Hook::Connect4,
        Hook::Connect6,
        Hook::Bind4,
        Hook::Bind6,
        Hook::Sendmsg4,
        Hook::Sendmsg6,
        Hook::SockCreate,
        Hook::FileOpen,
        Hook::FilePermission,
        Hook::Mkdir,
        Hook::Unlink,
        Hook::Rename,
        Hook::Exec,
        Hook::Accept,
        Hook::Recvmsg,
        Hook::Kprobe(SyscallOp::Connect),
        Hook::Kprobe(SyscallOp::Bind),
        Hook::Kprobe(SyscallOp::Sendmsg),
        Hook::Kprobe(SyscallOp::Socket),
        Hook::Kprobe(SyscallOp::Open),
        Hook::Kprobe(SyscallOp::Read),
        Hook::Kprobe(SyscallOp::Write),
        Hook::Kprobe(SyscallOp::Mkdir),
        Hook::Kprobe(SyscallOp::Unlink),
        Hook::Kprobe(SyscallOp::Rename),
        Hook::Kprobe(SyscallOp::Execve),
        Hook::Kprobe(SyscallOp::Accept),
        Hook::Kprobe(SyscallOp::Recvmsg),
    ];

    /// Hooks attached once for the node rather than at targeted cgroups:
    /// kprobes, and the LSM hooks when the LSM programs are node-wide.
    pub fn is_node_wide(self, lsm: Option<LsmScope>) -> bool {
        matches!(self, Self::Kprobe(_)) || (self.is_lsm() && lsm == Some(LsmScope::Node))
    }

    /// BPF LSM hooks.
    pub fn is_lsm(self) -> bool {
        matches!(
            self,
            Self::FileOpen
                | Self::FilePermission
                | Self::Mkdir
                | Self::Unlink
                | Self::Rename
                | Self::Exec
                | Self::Accept
                | Self::Recvmsg
        )
    }

    fn dir_bit(self) -> u8 {
        match self {
            Self::Egress => DIR_EGRESS,
            Self::Ingress => DIR_INGRESS,
            _ => 0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Egress => "egress",
            Self::Ingress => "ingress",
            Self::Connect4 => "connect4",
            Self::Connect6 => "connect6",
            Self::Bind4 => "bind4",
            Self::Bind6 => "bind6",
            Self::Sendmsg4 => "sendmsg4",
            Self::Sendmsg6 => "sendmsg6",
            Self::SockCreate => "sock_create",
            Self::FileOpen => "lsm/file_open",
            Self::FilePermission => "lsm/file_permission",
            Self::Mkdir => "lsm/inode_mkdir",
            Self::Unlink => "lsm/inode_unlink",
            Self::Rename => "lsm/inode_rename",
            Self::Exec => "lsm/bprm_check_security",
            Self::Accept => "lsm/socket_accept",
            Self::Recvmsg => "lsm/socket_recvmsg",
            Self::Kprobe(op) => match op {
                SyscallOp::Connect => "kprobe/connect",
                SyscallOp::Bind => "kprobe/bind",
                SyscallOp::Sendmsg => "kprobe/sendmsg",
                SyscallOp::Socket => "kprobe/socket",
                SyscallOp::Open => "kprobe/open",
                SyscallOp::Read => "kprobe/read",
                SyscallOp::Write => "kprobe/write",
                SyscallOp::Mkdir => "kprobe/mkdir",
                SyscallOp::Unlink => "kprobe/unlink",
                SyscallOp::Rename => "kprobe/rename",
                SyscallOp::Execve => "kprobe/execve",
                SyscallOp::Accept => "kprobe/accept",
                SyscallOp::Recvmsg => "kprobe/recvmsg",
            },
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Any,
    Tcp,
    Udp,
    Icmp,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PacketFilter {
    pub protocol: Protocol,
    pub remote: Option<IpCidr>,
    /// None matches every port.
    pub remote_ports: Option<RangeInclusive<u16>>,
}

/// An address prefix; the host bits are cleared on construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpCidr {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("{0:?} is not an IPv4 or IPv6 address")]
    Address(String),
    #[error("prefix length {prefix} is out of range for {family} (0..={max})")]
    Prefix {
        prefix: String,
        family: &'static str,
        max: u8,
    },
}

impl IpCidr {
    pub fn parse(text: &str) -> Result<Self, CidrError> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .trim()
            .parse()
            .map_err(|_| CidrError::Address(addr_text.to_owned()))?;
        let (max, family) = match addr {
            IpAddr::V4(_) => (32, "IPv4"),
            IpAddr::V6(_) => (128, "IPv6"),
        };
        let prefix = match prefix_text {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| CidrError::Prefix {
                    prefix: p.to_owned(),
                    family,
                    max,
                })?,
        };
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Ok(Self { addr, prefix })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// (address words, mask words) in network byte order, as the kernel
    /// program compares them against the packet's bytes.
    fn words(&self) -> ([u32; 4], [u32; 4]) {
        let mut addr = [0u8; 16];
        let mut mask = [0u8; 16];
        let (bytes, len): (&[u8], usize) = match &self.addr {
            IpAddr::V4(a) => (&a.octets()[..], 4),
            IpAddr::V6(a) => (&a.octets()[..], 16),
        };
        addr[..len].copy_from_slice(bytes);
        let mut left = usize::from(self.prefix);
        for m in mask.iter_mut().take(len) {
            let bits = left.min(8);
            *m = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
            left -= bits;
        }
        let to_words = |b: [u8; 16]| {
            // Native-endian words over network-order bytes: the same bytes the
            // program loads from the packet into a u32 with no byte swap.
            std::array::from_fn(|i| {
                u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
            })
        };
        (to_words(addr), to_words(mask))
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A fault's rule as one of the kernel tables holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelRule {
    Net(NetRule),
    Sys(SysRule),
}

/// The kernel's form of a fault.
pub fn kernel_rule(kind: &FaultKind, slot: u32, deadline_ns: u64) -> KernelRule {
    match kind {
        FaultKind::Loss(loss) => {
            let mut rule = filter_rule(&loss.filter);
            rule.action = ACTION_LOSS;
            rule.directions = loss.direction.bits();
            rule.threshold = loss_threshold(loss.probability_ppm);
            rule.slot = slot;
            rule.deadline_ns = deadline_ns;
            KernelRule::Net(rule)
        }
        FaultKind::Latency(lat) => {
            let mut rule = filter_rule(&lat.filter);
            rule.action = ACTION_LATENCY;
            rule.directions = lat.direction.bits();
            rule.delay_ns = duration_ns(lat.delay);
            rule.jitter_ns = duration_ns(lat.jitter);
            rule.dist = lat.distribution.code();
            rule.correlation = correlation_rho(lat.correlation_ppm);
            rule.slot = slot;
            rule.deadline_ns = deadline_ns;
            KernelRule::Net(rule)
        }
        FaultKind::Bandwidth(bw) => {
            let mut rule = filter_rule(&bw.filter);
            rule.action = ACTION_BANDWIDTH;
            rule.directions = bw.direction.bits();
            rule.rate_bytes = (bw.rate_bps / 8).max(1);
            rule.slot = slot;
            rule.deadline_ns = deadline_ns;
            KernelRule::Net(rule)
        }
        FaultKind::Syscall(sys) => {
            let f = filter_rule(&sys.filter);
            KernelRule::Sys(SysRule {
                deadline_ns,
                threshold: loss_threshold(sys.probability_ppm),
                addr: f.addr,
                mask: f.mask,
                slot,
                errno: sys.errno.value.unsigned_abs(),
                port_lo: f.port_lo,
                port_hi: f.port_hi,
                op: sys.op.code(),
                family: f.family,
                protocol: f.protocol,
                has_ports: f.has_ports,
                path_ino: sys.path.as_ref().map_or(0, |p| p.ino),
                path_dev: sys.path.as_ref().map_or(0, |p| p.dev),
                has_path: u32::from(sys.path.is_some()),
            })
        }
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// netem's `rho`: the weight of the previous random value, as a fraction of
/// 2^32 (iproute2 tc/q_netem.c parses "25%" into `0.25 * UINT32_MAX`).
pub fn correlation_rho(ppm: u32) -> u32 {
    let rho = u64::from(ppm.min(PPM)) * u64::from(u32::MAX) / u64::from(PPM);
    u32::try_from(rho).unwrap_or(u32::MAX)
}

/// Drop when a uniform u32 is below `ppm / 1e6 * 2^32`: exact for 100%
/// (`THRESHOLD_ALWAYS` exceeds every u32) and without the modulo bias of
/// `rand % 1e6`.
pub fn loss_threshold(ppm: u32) -> u64 {
    if ppm >= PPM {
        return THRESHOLD_ALWAYS;
    }
    (u64::from(ppm) << 32) / u64::from(PPM)
}

fn filter_rule(filter: &PacketFilter) -> NetRule {
    let mut rule = NetRule {
        protocol: match filter.protocol {
            Protocol::Any => PROTO_ANY,
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
            Protocol::Icmp => PROTO_ICMP,
        },
        family: FAMILY_ANY,
        port_lo: 0,
        port_hi: u16::MAX,
        ..NetRule::default()
    };
    if let Some(cidr) = &filter.remote {
        rule.family = match cidr.addr {
            IpAddr::V4(_) => FAMILY_IPV4,
            IpAddr::V6(_) => FAMILY_IPV6,
        };
        (rule.addr, rule.mask) = cidr.words();
    }
    if let Some(ports) = &filter.remote_ports {
        rule.port_lo = *ports.start();
        rule.port_hi = *ports.end();
        rule.has_ports = u8::from(!(rule.port_lo == 0 && rule.port_hi == u16::MAX));
    }
    rule
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packet faults on ingress hold the ifb and tag sockets through both
    /// cgroup programs; only an egress side needs fq on the devices.
    #[test]
    fn ingress_packet_faults_use_the_ifb_and_both_cgroup_programs() {
        let none = SysBackends::default();
        for direction in [Direction::Egress, Direction::Ingress, Direction::Both] {
            let bw = FaultKind::Bandwidth(BandwidthSpec {
                rate_bps: 8_000_000,
                direction,
                filter: PacketFilter::default(),
            });
            let ingress = direction != Direction::Egress;
            assert_eq!(bw.ingress_delay(), ingress, "{direction:?}");
            assert!(bw.uses(Hook::Egress, &none), "{direction:?}");
            assert_eq!(bw.uses(Hook::Ingress, &none), ingress, "{direction:?}");
            assert_eq!(
                bw.fq_horizon().is_some(),
                direction != Direction::Ingress,
                "{direction:?}"
            );
        }
        let loss_in = FaultKind::Loss(LossSpec {
            probability_ppm: 100_000,
            direction: Direction::Ingress,
            filter: PacketFilter::default(),
        });
        assert!(!loss_in.ingress_delay() && !loss_in.uses(Hook::Egress, &none));
    }

    #[test]
    fn cidr_clears_host_bits_and_defaults_to_a_host_prefix() {
        let c = IpCidr::parse("10.1.2.3/8").expect("valid");
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert_eq!(
            IpCidr::parse("10.1.2.3").expect("valid").to_string(),
            "10.1.2.3/32"
        );
        assert_eq!(
            IpCidr::parse("fd00::1/16").expect("valid").to_string(),
            "fd00::/16"
        );
        assert_eq!(IpCidr::parse("0.0.0.0/0").expect("valid").prefix(), 0);
    }

    #[test]
    fn cidr_errors_say_what_is_wrong() {
        assert!(matches!(
            IpCidr::parse("10.0.0.0/33"),
            Err(CidrError::Prefix { max: 32, .. })
        ));
        assert!(matches!(
            IpCidr::parse("fd00::/129"),
            Err(CidrError::Prefix { max: 128, .. })
        ));
        assert!(matches!(
            IpCidr::parse("10.0.0/8"),
            Err(CidrError::Address(_))
        ));
        assert!(matches!(
            IpCidr::parse("10.0.0.0/x"),
            Err(CidrError::Prefix { .. })
        ));
    }

    #[test]
    fn cidr_words_are_the_packet_bytes() {
        let (addr, mask) = IpCidr::parse("10.1.0.0/16").expect("valid").words();
        // The program loads 4 bytes of the packet into a u32 without a swap.
        assert_eq!(addr[0], u32::from_ne_bytes([10, 1, 0, 0]));
        assert_eq!(mask[0], u32::from_ne_bytes([255, 255, 0, 0]));
        assert_eq!(&addr[1..], &[0, 0, 0]);
        assert_eq!(&mask[1..], &[0, 0, 0]);
        let (addr, mask) = IpCidr::parse("fd00:1::/20").expect("valid").words();
        assert_eq!(addr[0], u32::from_ne_bytes([0xfd, 0, 0, 0]));
        assert_eq!(mask[0], u32::from_ne_bytes([0xff, 0xff, 0xf0, 0]));
        assert_eq!(mask[1], 0);
    }

    #[test]
    fn syscall_faults_use_the_hooks_of_their_family() {
        let connect = |cidr: Option<&str>| {
            FaultKind::Syscall(SyscallSpec {
                op: SyscallOp::Connect,
                errno: Errno::parse("econnrefused").expect("known"),
                probability_ppm: PPM,
                filter: PacketFilter {
                    remote: cidr.map(|c| IpCidr::parse(c).expect("valid")),
                    ..Default::default()
                },
                path: None,
            })
        };
        let b = SysBackends {
            cgroup_hooks: true,
            ..SysBackends::default()
        };
        let any = connect(None);
        assert!(any.uses(Hook::Connect4, &b) && any.uses(Hook::Connect6, &b));
        assert!(!any.uses(Hook::Bind4, &b) && !any.uses(Hook::Egress, &b));
        assert!(!any.uses(Hook::Kprobe(SyscallOp::Connect), &b));
        let v4 = connect(Some("10.0.0.0/8"));
        assert!(v4.uses(Hook::Connect4, &b) && !v4.uses(Hook::Connect6, &b));
        let KernelRule::Sys(rule) = kernel_rule(&v4, 3, 5) else {
            panic!("sys rule")
        };
        assert_eq!(
            (rule.op, rule.errno, rule.slot),
            (SYS_OP_CONNECT, libc::ECONNREFUSED as u32, 3)
        );
        assert_eq!(rule.threshold, THRESHOLD_ALWAYS);
        assert_eq!(rule.family, FAMILY_IPV4);
    }

    #[test]
    fn errno_names() {
        assert_eq!(Errno::parse("EIO").map(|e| e.value), Some(libc::EIO));
        assert_eq!(
            Errno::parse(" etimedout ").map(|e| e.value),
            Some(libc::ETIMEDOUT)
        );
        assert!(Errno::parse("EWHATEVER").is_none());
        assert!(Errno::parse("5").is_none());
    }

    #[test]
    fn thresholds() {
        assert_eq!(loss_threshold(PPM), THRESHOLD_ALWAYS);
        assert_eq!(loss_threshold(500_000), 1 << 31);
        assert_eq!(loss_threshold(0), 0);
        // 30% of 2^32, floor.
        assert_eq!(loss_threshold(300_000), 1_288_490_188);
    }

    #[test]
    fn rule_carries_filters() {
        let kind = FaultKind::Loss(LossSpec {
            probability_ppm: 300_000,
            direction: Direction::Egress,
            filter: PacketFilter {
                protocol: Protocol::Udp,
                remote: Some(IpCidr::parse("127.0.0.0/8").expect("valid")),
                remote_ports: Some(5432..=5432),
            },
        });
        let KernelRule::Net(rule) = kernel_rule(&kind, 7, 99) else {
            panic!("net rule")
        };
        assert_eq!((rule.slot, rule.deadline_ns), (7, 99));
        assert_eq!(rule.directions, DIR_EGRESS);
        assert_eq!((rule.protocol, rule.family), (PROTO_UDP, FAMILY_IPV4));
        assert_eq!(
            (rule.port_lo, rule.port_hi, rule.has_ports),
            (5432, 5432, 1)
        );
        let all_ports = FaultKind::Loss(LossSpec {
            probability_ppm: 1,
            direction: Direction::Both,
            filter: PacketFilter {
                remote_ports: Some(0..=u16::MAX),
                ..Default::default()
            },
        });
        let KernelRule::Net(rule) = kernel_rule(&all_ports, 0, 0) else {
            panic!("net rule")
        };
        assert_eq!(rule.has_ports, 0);
        assert_eq!(rule.directions, DIR_EGRESS | DIR_INGRESS);
    }

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

    #[test]
    fn node_wide_hooks_depend_on_the_lsm_flavour() {
        assert!(Hook::FileOpen.is_node_wide(Some(LsmScope::Node)));
        assert!(!Hook::FileOpen.is_node_wide(Some(LsmScope::Cgroup)));
        assert!(Hook::Kprobe(SyscallOp::Open).is_node_wide(Some(LsmScope::Cgroup)));
        assert!(Hook::Kprobe(SyscallOp::Open).is_node_wide(None));
        assert!(!Hook::Connect4.is_node_wide(Some(LsmScope::Node)));
        let mut names: Vec<&str> = Hook::ALL.iter().map(|h| h.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Hook::ALL.len(), "hook names are unique");
    }
}
