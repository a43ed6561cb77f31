//! The kernel attach points, one program each, and which of them a fault
//! needs.

use std::{fmt, net::IpAddr};

use crate::{
    backend::{LsmScope, SysBackend, SysBackends},
    fault::{BandwidthSpec, FaultKind, LatencySpec, LossSpec, SyscallOp, SyscallSpec},
};

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

/// Whether `kind` needs the program on `hook`, given the syscall backends
/// this node offers (ignored for packet faults).
pub fn uses(kind: &FaultKind, hook: Hook, backends: &SysBackends) -> bool {
    match kind {
        // Delay and pacing act before the qdiscs: on egress in the cgroup
        // program, on ingress in the tc program (not a cgroup hook). On
        // ingress they still need both cgroup programs: they record the
        // target's sockets' cgroups on the sockets, where the tc program
        // finds them (ebpf/src/net.rs, `tag_socket`).
        FaultKind::Latency(LatencySpec { direction, .. })
        | FaultKind::Bandwidth(BandwidthSpec { direction, .. }) => match hook {
            Hook::Egress => true,
            Hook::Ingress => direction.has_ingress(),
            _ => false,
        },
        FaultKind::Loss(LossSpec { direction, .. }) => match hook {
            Hook::Egress => direction.has_egress(),
            Hook::Ingress => direction.has_ingress(),
            _ => false,
        },
        FaultKind::Syscall(s) => match backends.pick(s) {
            Ok(backend) => sys_uses(s, hook, backend),
            Err(_) => false,
        },
    }
}

/// Whether the syscall fault `s`, served by `backend`, needs the program on
/// `hook`.
fn sys_uses(s: &SyscallSpec, hook: Hook, backend: SysBackend) -> bool {
    if backend == SysBackend::Kprobe {
        return hook == Hook::Kprobe(s.op);
    }
    let (v4, v6) = match s.filter.remote.map(|c| c.addr()) {
        Some(IpAddr::V4(_)) => (true, false),
        Some(IpAddr::V6(_)) => (false, true),
        None => (true, true),
    };
    match (s.op, hook) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::{Direction, Errno, IpCidr, PPM, PacketFilter};

    /// Packet faults on ingress tag sockets through both cgroup programs.
    #[test]
    fn ingress_packet_faults_use_both_cgroup_programs() {
        let none = SysBackends::default();
        for direction in [Direction::Egress, Direction::Ingress, Direction::Both] {
            let bw = FaultKind::Bandwidth(BandwidthSpec {
                rate_bps: 8_000_000,
                direction,
                filter: PacketFilter::default(),
            });
            let ingress = direction != Direction::Egress;
            assert!(uses(&bw, Hook::Egress, &none), "{direction:?}");
            assert_eq!(uses(&bw, Hook::Ingress, &none), ingress, "{direction:?}");
        }
        let loss_in = FaultKind::Loss(LossSpec {
            probability_ppm: 100_000,
            direction: Direction::Ingress,
            filter: PacketFilter::default(),
        });
        assert!(!uses(&loss_in, Hook::Egress, &none) && uses(&loss_in, Hook::Ingress, &none));
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
        assert!(uses(&any, Hook::Connect4, &b) && uses(&any, Hook::Connect6, &b));
        assert!(!uses(&any, Hook::Bind4, &b) && !uses(&any, Hook::Egress, &b));
        assert!(!uses(&any, Hook::Kprobe(SyscallOp::Connect), &b));
        let v4 = connect(Some("10.0.0.0/8"));
        assert!(uses(&v4, Hook::Connect4, &b) && !uses(&v4, Hook::Connect6, &b));
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
