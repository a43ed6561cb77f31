//! The kernel's form of faults: the `#[repr(C)]` rules of faultd-common,
//! as the programs in ebpf/ read them. The manager hands the datapath
//! domain faults ([`Entry`]); only this module knows their encoding.

use std::{net::IpAddr, time::Duration};

use faultd_common::{
    ACTION_BANDWIDTH, ACTION_LATENCY, ACTION_LOSS, CgroupRules, DIR_EGRESS, DIR_INGRESS,
    DIST_NORMAL, DIST_PARETO, DIST_PARETONORMAL, DIST_UNIFORM, FAMILY_ANY, FAMILY_IPV4,
    FAMILY_IPV6, MAX_RULES_PER_CGROUP, NetRule, PROTO_ANY, PROTO_ICMP, PROTO_TCP, PROTO_UDP,
    SYS_OP_ACCEPT, SYS_OP_BIND, SYS_OP_CONNECT, SYS_OP_EXECVE, SYS_OP_MKDIR, SYS_OP_OPEN,
    SYS_OP_READ, SYS_OP_RECVMSG, SYS_OP_RENAME, SYS_OP_SENDMSG, SYS_OP_SOCKET, SYS_OP_UNLINK,
    SYS_OP_WRITE, SysRule, SysRules, THRESHOLD_ALWAYS,
};

use super::{Entry, Rule, Table};
use crate::fault::{
    Direction, Distribution, FaultKind, IpCidr, PPM, PacketFilter, Protocol, SyscallOp,
};

/// One cgroup's entry in one of the rules maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableRules {
    Net(CgroupRules),
    Sys(SysRules),
}

impl TableRules {
    pub fn len(&self) -> usize {
        match self {
            Self::Net(r) => r.count as usize,
            Self::Sys(r) => r.count as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The map value for `entry`. Rules of the other table and rules beyond
/// `MAX_RULES_PER_CGROUP` are left out: the manager checks counts and
/// tables before it builds entries.
pub fn entry(entry: &Entry) -> TableRules {
    let mut net = CgroupRules::default();
    let mut sys = SysRules::default();
    for rule in &entry.rules {
        match kernel_rule(rule) {
            KernelRule::Net(r)
                if entry.table == Table::Net && (net.count as usize) < MAX_RULES_PER_CGROUP =>
            {
                net.rules[net.count as usize] = r;
                net.count += 1;
            }
            KernelRule::Sys(r)
                if entry.table == Table::Sys && (sys.count as usize) < MAX_RULES_PER_CGROUP =>
            {
                sys.rules[sys.count as usize] = r;
                sys.count += 1;
            }
            _ => {}
        }
    }
    match entry.table {
        Table::Net => TableRules::Net(net),
        Table::Sys => TableRules::Sys(sys),
    }
}

/// A fault's rule as one of the kernel tables holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelRule {
    Net(NetRule),
    Sys(SysRule),
}

/// The kernel's form of one fault of an entry.
pub fn kernel_rule(rule: &Rule) -> KernelRule {
    let Rule {
        kind,
        slot,
        deadline_ns,
    } = rule;
    let (slot, deadline_ns) = (*slot, *deadline_ns);
    match kind {
        FaultKind::Loss(loss) => {
            let mut rule = filter_rule(&loss.filter);
            rule.action = ACTION_LOSS;
            rule.directions = direction_bits(loss.direction);
            rule.threshold = loss_threshold(loss.probability_ppm);
            rule.slot = slot;
            rule.deadline_ns = deadline_ns;
            KernelRule::Net(rule)
        }
        FaultKind::Latency(lat) => {
            let mut rule = filter_rule(&lat.filter);
            rule.action = ACTION_LATENCY;
            rule.directions = direction_bits(lat.direction);
            rule.delay_ns = duration_ns(lat.delay);
            rule.jitter_ns = duration_ns(lat.jitter);
            rule.dist = dist_code(lat.distribution);
            rule.correlation = correlation_rho(lat.correlation_ppm);
            rule.slot = slot;
            rule.deadline_ns = deadline_ns;
            KernelRule::Net(rule)
        }
        FaultKind::Bandwidth(bw) => {
            let mut rule = filter_rule(&bw.filter);
            rule.action = ACTION_BANDWIDTH;
            rule.directions = direction_bits(bw.direction);
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
                op: op_code(sys.op),
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
        rule.family = match cidr.addr() {
            IpAddr::V4(_) => FAMILY_IPV4,
            IpAddr::V6(_) => FAMILY_IPV6,
        };
        (rule.addr, rule.mask) = cidr_words(cidr);
    }
    if let Some(ports) = &filter.remote_ports {
        rule.port_lo = *ports.start();
        rule.port_hi = *ports.end();
        rule.has_ports = u8::from(!(rule.port_lo == 0 && rule.port_hi == u16::MAX));
    }
    rule
}

/// (address words, mask words) in network byte order, as the kernel
/// program compares them against the packet's bytes.
fn cidr_words(cidr: &IpCidr) -> ([u32; 4], [u32; 4]) {
    let mut addr = [0u8; 16];
    let mut mask = [0u8; 16];
    let (bytes, len): (&[u8], usize) = match &cidr.addr() {
        IpAddr::V4(a) => (&a.octets()[..], 4),
        IpAddr::V6(a) => (&a.octets()[..], 16),
    };
    addr[..len].copy_from_slice(bytes);
    let mut left = usize::from(cidr.prefix());
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

fn direction_bits(d: Direction) -> u8 {
    match d {
        Direction::Egress => DIR_EGRESS,
        Direction::Ingress => DIR_INGRESS,
        Direction::Both => DIR_EGRESS | DIR_INGRESS,
    }
}

/// The `dist` code of a rule, and the index of its table in `FAULTD_DIST`.
pub fn dist_code(d: Distribution) -> u8 {
    match d {
        Distribution::Uniform => DIST_UNIFORM,
        Distribution::Normal => DIST_NORMAL,
        Distribution::Pareto => DIST_PARETO,
        Distribution::ParetoNormal => DIST_PARETONORMAL,
    }
}

fn op_code(op: SyscallOp) -> u8 {
    match op {
        SyscallOp::Connect => SYS_OP_CONNECT,
        SyscallOp::Bind => SYS_OP_BIND,
        SyscallOp::Sendmsg => SYS_OP_SENDMSG,
        SyscallOp::Socket => SYS_OP_SOCKET,
        SyscallOp::Open => SYS_OP_OPEN,
        SyscallOp::Read => SYS_OP_READ,
        SyscallOp::Write => SYS_OP_WRITE,
        SyscallOp::Mkdir => SYS_OP_MKDIR,
        SyscallOp::Unlink => SYS_OP_UNLINK,
        SyscallOp::Rename => SYS_OP_RENAME,
        SyscallOp::Execve => SYS_OP_EXECVE,
        SyscallOp::Accept => SYS_OP_ACCEPT,
        SyscallOp::Recvmsg => SYS_OP_RECVMSG,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::{Errno, LossSpec, SyscallSpec};

    fn rule_of(kind: FaultKind, slot: u32, deadline_ns: u64) -> Rule {
        Rule {
            kind,
            slot,
            deadline_ns,
        }
    }

    #[test]
    fn syscall_rules_carry_op_errno_and_family() {
        let kind = FaultKind::Syscall(SyscallSpec {
            op: SyscallOp::Connect,
            errno: Errno::parse("econnrefused").expect("known"),
            probability_ppm: PPM,
            filter: PacketFilter {
                remote: Some(IpCidr::parse("10.0.0.0/8").expect("valid")),
                ..Default::default()
            },
            path: None,
        });
        let KernelRule::Sys(rule) = kernel_rule(&rule_of(kind, 3, 5)) else {
            panic!("sys rule")
        };
        assert_eq!(
            (rule.op, rule.errno, rule.slot, rule.deadline_ns),
            (SYS_OP_CONNECT, libc::ECONNREFUSED as u32, 3, 5)
        );
        assert_eq!(rule.threshold, THRESHOLD_ALWAYS);
        assert_eq!(rule.family, FAMILY_IPV4);
    }

    /// An entry holds its table's rules in order and nothing of the other
    /// table.
    #[test]
    fn entries_keep_their_tables_rules_in_order() {
        let loss = |ppm| {
            FaultKind::Loss(LossSpec {
                probability_ppm: ppm,
                direction: Direction::Egress,
                filter: PacketFilter::default(),
            })
        };
        let sys = FaultKind::Syscall(SyscallSpec {
            op: SyscallOp::Socket,
            errno: Errno::parse("EMFILE").expect("known"),
            probability_ppm: PPM,
            filter: PacketFilter::default(),
            path: None,
        });
        let e = Entry {
            table: Table::Net,
            rules: vec![
                rule_of(loss(1), 4, 0),
                rule_of(sys.clone(), 5, 0),
                rule_of(loss(2), 6, 0),
            ],
        };
        let TableRules::Net(net) = entry(&e) else {
            panic!("net entry")
        };
        assert_eq!(net.count, 2);
        assert_eq!((net.rules[0].slot, net.rules[1].slot), (4, 6));
        let TableRules::Sys(s) = entry(&Entry {
            table: Table::Sys,
            rules: e.rules,
        }) else {
            panic!("sys entry")
        };
        assert_eq!((s.count, s.rules[0].slot), (1, 5));
    }

    #[test]
    fn cidr_words_are_the_packet_bytes() {
        let (addr, mask) = cidr_words(&IpCidr::parse("10.1.0.0/16").expect("valid"));
        // The program loads 4 bytes of the packet into a u32 without a swap.
        assert_eq!(addr[0], u32::from_ne_bytes([10, 1, 0, 0]));
        assert_eq!(mask[0], u32::from_ne_bytes([255, 255, 0, 0]));
        assert_eq!(&addr[1..], &[0, 0, 0]);
        assert_eq!(&mask[1..], &[0, 0, 0]);
        let (addr, mask) = cidr_words(&IpCidr::parse("fd00:1::/20").expect("valid"));
        assert_eq!(addr[0], u32::from_ne_bytes([0xfd, 0, 0, 0]));
        assert_eq!(mask[0], u32::from_ne_bytes([0xff, 0xff, 0xf0, 0]));
        assert_eq!(mask[1], 0);
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
        let KernelRule::Net(rule) = kernel_rule(&rule_of(kind, 7, 99)) else {
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
        let KernelRule::Net(rule) = kernel_rule(&rule_of(all_ports, 0, 0)) else {
            panic!("net rule")
        };
        assert_eq!(rule.has_ports, 0);
        assert_eq!(rule.directions, DIR_EGRESS | DIR_INGRESS);
    }
}
