//! Fault specifications as the agent understands them, independent of the
//! wire format (`api` converts from protobuf) and of the kernel's encoding
//! (`datapath::encode`).

use std::{ops::RangeInclusive, time::Duration};

use crate::target::TargetSpec;

mod cidr;
mod errno;

pub use cidr::{CidrError, IpCidr};
pub use errno::{ERRNOS, Errno};

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
            Self::Latency(l) if !l.direction.has_egress() => None,
            Self::Latency(l) => Some(l.delay + l.jitter * 4),
            Self::Bandwidth(b) if !b.direction.has_egress() => None,
            Self::Bandwidth(_) => Some(Duration::from_nanos(faultd_common::BANDWIDTH_HORIZON_NS)),
            Self::Loss(_) | Self::Syscall(_) => None,
        }
    }

    /// Whether this fault delays or paces packets delivered to the target
    /// (tc ingress program and ifb, see `qdisc::QdiscManager::acquire_ifb`).
    pub fn ingress_delay(&self) -> bool {
        match self {
            Self::Latency(LatencySpec { direction, .. })
            | Self::Bandwidth(BandwidthSpec { direction, .. }) => direction.has_ingress(),
            Self::Loss(_) | Self::Syscall(_) => false,
        }
    }
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
    /// Whether the fault narrows what it fails (address, port, protocol,
    /// path): kprobes cannot filter (`backend::SysBackends::pick`).
    pub fn has_filter(&self) -> bool {
        self.filter != PacketFilter::default() || self.path.is_some()
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Egress,
    Ingress,
    Both,
}

impl Direction {
    pub fn has_egress(self) -> bool {
        matches!(self, Self::Egress | Self::Both)
    }

    pub fn has_ingress(self) -> bool {
        matches!(self, Self::Ingress | Self::Both)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Ingress shaping uses faultd's ifb; only an egress side needs fq on
    /// the target's devices.
    #[test]
    fn shaping_faults_need_fq_for_egress_and_the_ifb_for_ingress() {
        for direction in [Direction::Egress, Direction::Ingress, Direction::Both] {
            let bw = FaultKind::Bandwidth(BandwidthSpec {
                rate_bps: 8_000_000,
                direction,
                filter: PacketFilter::default(),
            });
            assert_eq!(
                bw.ingress_delay(),
                direction != Direction::Egress,
                "{direction:?}"
            );
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
        assert!(!loss_in.ingress_delay() && loss_in.fq_horizon().is_none());
    }
}
