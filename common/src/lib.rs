//! Types shared by the kernel programs (`faultd-ebpf`) and the agent.
//!
//! Everything here is `#[repr(C)]`, `Copy`, has no `bool` and no implicit
//! padding: the kernel side reads these bytes straight out of BPF maps that the
//! agent writes, so both sides must agree on every byte.
#![no_std]

/// The most rules one cgroup's entry holds. A packet from a targeted cgroup is
/// checked against at most this many rules, whatever the number of faults on the
/// node, so the per-packet cost stays bounded (the verifier also needs a bound).
pub const MAX_RULES_PER_CGROUP: usize = 8;

/// Deepest cgroup level the kernel programs walk when a packet's own cgroup has
/// no entry but one of its ancestors does (`bpf_skb_ancestor_cgroup_id`).
pub const MAX_CGROUP_LEVEL: u32 = 32;

/// `NetRule::directions` bits.
pub const DIR_EGRESS: u8 = 1;
pub const DIR_INGRESS: u8 = 2;

/// `NetRule::protocol` values: IP protocol numbers, 0 for any. ICMP matches both
/// ICMP (1) and ICMPv6 (58).
pub const PROTO_ANY: u8 = 0;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// `NetRule::family` values.
pub const FAMILY_ANY: u8 = 0;
pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

/// `NetRule::action` values.
pub const ACTION_LOSS: u8 = 1;
/// Delay the packet: set its Earliest Departure Time (`skb->tstamp`) for the
/// fq qdisc (net/sched/sch_fq.c) to hold it until then.
pub const ACTION_LATENCY: u8 = 2;
/// Pace the target's packets to a rate, EDT style (Cilium bpf/lib/edt.h).
pub const ACTION_BANDWIDTH: u8 = 3;

/// `NetRule::dist` values: the jitter distribution. Uniform needs no table;
/// the others index `DIST_TABLES` at `(dist - 1) * DIST_SIZE`.
pub const DIST_UNIFORM: u8 = 0;
pub const DIST_NORMAL: u8 = 1;
pub const DIST_PARETO: u8 = 2;
pub const DIST_PARETONORMAL: u8 = 3;
/// Entries per distribution table, as iproute2's netem tables
/// (iproute2 netem/*.c write 4096 values of `quantile * DIST_SCALE`).
pub const DIST_SIZE: u32 = 4096;
/// Table values are standard-distribution quantiles times this
/// (include/uapi/linux/pkt_sched.h, `NETEM_DIST_SCALE`).
pub const DIST_SCALE: i64 = 8192;
/// Number of tables (normal, pareto, paretonormal).
pub const DIST_TABLES: u32 = 3;

/// Packets whose departure time would lie further than this in the future
/// are dropped rather than queued (bandwidth faults only, like Cilium's
/// `EDT_DEFAULT_HORIZON`): a sender faster than the rate must see loss, or
/// the queue grows without bound.
pub const BANDWIDTH_HORIZON_NS: u64 = 2_000_000_000;

/// `SysRule::op` values: the syscall operations the cgroup socket hooks can
/// fail (net/core/filter.c, `sock_addr_func_proto` and `sock_filter_func_proto`).
pub const SYS_OP_CONNECT: u8 = 1;
pub const SYS_OP_BIND: u8 = 2;
pub const SYS_OP_SENDMSG: u8 = 3;
pub const SYS_OP_SOCKET: u8 = 4;
/// File operations, served by BPF LSM hooks (security/security.c).
pub const SYS_OP_OPEN: u8 = 5;
pub const SYS_OP_READ: u8 = 6;
pub const SYS_OP_WRITE: u8 = 7;
pub const SYS_OP_MKDIR: u8 = 8;
pub const SYS_OP_UNLINK: u8 = 9;
pub const SYS_OP_RENAME: u8 = 10;
pub const SYS_OP_EXECVE: u8 = 11;
pub const SYS_OP_ACCEPT: u8 = 12;
pub const SYS_OP_RECVMSG: u8 = 13;

/// `LossRule::threshold` that drops every matching packet: `bpf_get_prandom_u32`
/// returns at most `u32::MAX`, which is below this.
pub const THRESHOLD_ALWAYS: u64 = 1 << 32;

/// One fault's rule as the kernel sees it.
///
/// Addresses are stored in network byte order as they appear in the packet, as
/// four `u32` words (IPv4 uses the first word only), already masked by the agent
/// so the kernel only has to compare `packet & mask == addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetRule {
    /// Kernel `CLOCK_BOOTTIME` (`bpf_ktime_get_boot_ns`) after which the rule is
    /// inert, whatever the agent does.
    pub deadline_ns: u64,
    /// Loss: drop when `bpf_get_prandom_u32() < threshold`.
    pub threshold: u64,
    /// Remote address (destination on egress, source on ingress), masked.
    pub addr: [u32; 4],
    /// Prefix mask in network byte order; all zero matches any address.
    pub mask: [u32; 4],
    /// Index into the counters array for this fault.
    pub slot: u32,
    /// Remote port range, inclusive, host byte order; `0..=65535` matches all.
    pub port_lo: u16,
    pub port_hi: u16,
    /// `DIR_*` bits.
    pub directions: u8,
    /// `PROTO_*`.
    pub protocol: u8,
    /// `FAMILY_*`.
    pub family: u8,
    /// `ACTION_*`.
    pub action: u8,
    /// 1 when `port_lo..=port_hi` is narrower than all ports, so the program
    /// only parses transport headers for rules that need them.
    pub has_ports: u8,
    /// Latency: `DIST_*` of the jitter.
    pub dist: u8,
    pub _pad: [u8; 2],
    /// Latency: fixed delay added to the departure time.
    pub delay_ns: u64,
    /// Latency: jitter scale (netem's sigma); 0 for none.
    pub jitter_ns: u64,
    /// Bandwidth: bytes per second (> 0 for bandwidth rules).
    pub rate_bytes: u64,
    /// Latency: netem's correlation `rho`, `percent / 100 * 2^32`, 0 for none
    /// (net/sched/sch_netem.c, `get_crandom`).
    pub correlation: u32,
    pub _pad2: u32,
}

/// Per-fault state the programs keep between packets, indexed by slot:
/// the last correlated random value (latency) and the target's last
/// departure time (bandwidth, shared by all its flows as Cilium's
/// per-aggregate `edt_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleState {
    /// Bandwidth: the aggregate's last departure, egress.
    pub last_departure_ns: u64,
    pub last_random: u32,
    pub _pad: u32,
    /// The same on ingress: each direction is paced at the rate on its own.
    pub last_departure_in_ns: u64,
}

/// The rules that apply to one cgroup: its own faults and those of every
/// targeted ancestor, so one lookup of the deepest targeted cgroup is enough.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupRules {
    pub count: u32,
    pub _pad: u32,
    pub rules: [NetRule; MAX_RULES_PER_CGROUP],
}

/// One syscall fault's rule: fail the operation with `errno` when
/// `bpf_get_prandom_u32() < threshold`, if the call's address matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SysRule {
    /// Kernel `CLOCK_BOOTTIME` after which the rule is inert.
    pub deadline_ns: u64,
    pub threshold: u64,
    /// The call's address (connect/sendmsg: destination; bind: local),
    /// masked, network byte order words as in `NetRule`.
    pub addr: [u32; 4],
    pub mask: [u32; 4],
    pub slot: u32,
    /// Positive errno the call fails with.
    pub errno: u32,
    /// Port range, inclusive, host byte order.
    pub port_lo: u16,
    pub port_hi: u16,
    /// `SYS_OP_*`.
    pub op: u8,
    /// `FAMILY_*`.
    pub family: u8,
    /// `PROTO_*` (TCP or UDP or any).
    pub protocol: u8,
    pub has_ports: u8,
    /// File operations: the file must lie below the directory with this
    /// inode number on this device (kernel `dev_t`), when `has_path` is 1.
    pub path_ino: u64,
    pub path_dev: u32,
    pub has_path: u32,
}

/// Read-only globals the agent sets before load. Most are the struct member
/// offsets the path-prefix walk reads, from the running kernel's BTF (Rust
/// eBPF has no CO-RE relocations); all zero disables path filters.
pub mod offsets {
    pub const FILE_DENTRY: &str = "FAULTD_OFF_FILE_DENTRY";
    pub const DENTRY_PARENT: &str = "FAULTD_OFF_DENTRY_PARENT";
    pub const DENTRY_INODE: &str = "FAULTD_OFF_DENTRY_INODE";
    pub const INODE_INO: &str = "FAULTD_OFF_INODE_INO";
    pub const INODE_SB: &str = "FAULTD_OFF_INODE_SB";
    pub const SB_DEV: &str = "FAULTD_OFF_SB_DEV";
    /// 1 arms `bpf_override_return` in the kprobe programs (see
    /// ebpf/src/kprobe.rs); 0 loads them only to verify the rest.
    pub const KPROBE_OVERRIDE: &str = "FAULTD_KPROBE_OVERRIDE";
}

/// The syscall rules that apply to one cgroup (its own and its targeted
/// ancestors'), like `CgroupRules` for packets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SysRules {
    pub count: u32,
    pub _pad: u32,
    pub rules: [SysRule; MAX_RULES_PER_CGROUP],
}

/// Per-fault counters, one copy per CPU (`PerCpuArray`); the agent sums them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounters {
    /// Packets that matched the fault's filters while it was live.
    pub matched: u64,
    /// Packets the fault dropped.
    pub dropped: u64,
}

/// The ifindex faultd gives its ifb device in every network namespace where
/// it delays ingress. Interface indexes are per namespace
/// (net/core/dev.c, `dev_index_reserve`) and RTM_NEWLINK may ask for one
/// (`ifi_index`), so one fixed number serves every namespace: the agent
/// finds and deletes its ifb by name and index, even after a crash. Chosen
/// far above what the kernel allocates sequentially.
pub const IFB_IFINDEX: u32 = 0x0fa1_7000;
/// Index 0 of `FAULTD_IFB`: `IFB_IFINDEX` while some fault delays ingress,
/// else 0 (no socket tagging, no marking).
pub const IFB_INDEX: u32 = 0;
/// The `skb->tc_index` with which the TCX program marks a packet for
/// faultd's classic filter and mirred to the ifb (`tc_index` is 16 bits;
/// nothing else on the ingress path reads it since the tcindex classifier
/// and dsmark were removed in 6.3).
pub const TC_INDEX_DELAY: u32 = 0xfa17;

/// Index 0 of the `LEVELS` array: a bitmask of cgroup levels (bit n = level n)
/// at which some targeted cgroup sits, so the ancestor walk skips levels that
/// cannot hold an entry.
pub const LEVELS_INDEX: u32 = 0;

/// Names of maps and programs, shared so the agent cannot drift from the ELF.
pub mod names {
    pub const RULES_MAP: &str = "FAULTD_RULES";
    pub const COUNTERS_MAP: &str = "FAULTD_COUNTERS";
    pub const LEVELS_MAP: &str = "FAULTD_LEVELS";
    pub const SYS_RULES_MAP: &str = "FAULTD_SYS";
    pub const DIST_MAP: &str = "FAULTD_DIST";
    pub const RULE_STATE_MAP: &str = "FAULTD_RSTATE";
    pub const FLOW_MAP: &str = "FAULTD_FLOWS";
    pub const IFB_MAP: &str = "FAULTD_IFB";
    /// Program names are what `bpftool prog` shows (the kernel keeps 15 bytes).
    pub const EGRESS_PROG: &str = "faultd_egress";
    pub const INGRESS_PROG: &str = "faultd_ingress";
    /// tc (TCX) ingress program of ingress latency.
    pub const TC_INGRESS_PROG: &str = "faultd_tc_in";
    /// Classic cls_bpf filter under the mirred action to the ifb.
    pub const TC_MARK_PROG: &str = "faultd_tc_mark";
    /// Socket storage: each socket's cgroups, for the tc ingress program.
    pub const SOCK_CG_MAP: &str = "FAULTD_SOCK_CG";
    pub const CONNECT4_PROG: &str = "faultd_connect4";
    pub const CONNECT6_PROG: &str = "faultd_connect6";
    pub const BIND4_PROG: &str = "faultd_bind4";
    pub const BIND6_PROG: &str = "faultd_bind6";
    pub const SENDMSG4_PROG: &str = "faultd_sendmsg4";
    pub const SENDMSG6_PROG: &str = "faultd_sendmsg6";
    pub const SOCK_CREATE_PROG: &str = "faultd_socket";
    pub const FILE_OPEN_PROG: &str = "faultd_open";
    pub const FILE_PERM_PROG: &str = "faultd_rw";
    pub const MKDIR_PROG: &str = "faultd_mkdir";
    pub const UNLINK_PROG: &str = "faultd_unlink";
    pub const RENAME_PROG: &str = "faultd_rename";
    pub const EXEC_PROG: &str = "faultd_exec";
    pub const ACCEPT_PROG: &str = "faultd_accept";
    pub const RECVMSG_PROG: &str = "faultd_recvmsg";
    /// The `lsm_cgroup` flavour of the LSM programs, in the same order.
    pub const LSM_CGROUP_PROGS: [&str; 8] = [
        "faultd_c_open",
        "faultd_c_rw",
        "faultd_c_mkdir",
        "faultd_c_unlink",
        "faultd_c_rename",
        "faultd_c_exec",
        "faultd_c_accept",
        "faultd_c_recv",
    ];
    /// The kprobe programs, one per operation.
    pub const KPROBE_OPEN_PROG: &str = "faultd_k_open";
    pub const KPROBE_READ_PROG: &str = "faultd_k_read";
    pub const KPROBE_WRITE_PROG: &str = "faultd_k_write";
    pub const KPROBE_CONNECT_PROG: &str = "faultd_k_conn";
    pub const KPROBE_BIND_PROG: &str = "faultd_k_bind";
    pub const KPROBE_SENDMSG_PROG: &str = "faultd_k_send";
    pub const KPROBE_SOCKET_PROG: &str = "faultd_k_socket";
    pub const KPROBE_MKDIR_PROG: &str = "faultd_k_mkdir";
    pub const KPROBE_UNLINK_PROG: &str = "faultd_k_unlink";
    pub const KPROBE_RENAME_PROG: &str = "faultd_k_rename";
    pub const KPROBE_EXEC_PROG: &str = "faultd_k_exec";
    pub const KPROBE_ACCEPT_PROG: &str = "faultd_k_accept";
    pub const KPROBE_RECVMSG_PROG: &str = "faultd_k_recv";
    pub const KPROBE_PROGS: [&str; 13] = [
        KPROBE_OPEN_PROG,
        KPROBE_READ_PROG,
        KPROBE_WRITE_PROG,
        KPROBE_CONNECT_PROG,
        KPROBE_BIND_PROG,
        KPROBE_SENDMSG_PROG,
        KPROBE_SOCKET_PROG,
        KPROBE_MKDIR_PROG,
        KPROBE_UNLINK_PROG,
        KPROBE_RENAME_PROG,
        KPROBE_EXEC_PROG,
        KPROBE_ACCEPT_PROG,
        KPROBE_RECVMSG_PROG,
    ];
    /// Every program, for checks that must cover them all.
    pub const ALL_PROGS: [&str; 40] = [
        EGRESS_PROG,
        INGRESS_PROG,
        TC_INGRESS_PROG,
        TC_MARK_PROG,
        CONNECT4_PROG,
        CONNECT6_PROG,
        BIND4_PROG,
        BIND6_PROG,
        SENDMSG4_PROG,
        SENDMSG6_PROG,
        SOCK_CREATE_PROG,
        FILE_OPEN_PROG,
        FILE_PERM_PROG,
        MKDIR_PROG,
        UNLINK_PROG,
        RENAME_PROG,
        EXEC_PROG,
        ACCEPT_PROG,
        RECVMSG_PROG,
        LSM_CGROUP_PROGS[0],
        LSM_CGROUP_PROGS[1],
        LSM_CGROUP_PROGS[2],
        LSM_CGROUP_PROGS[3],
        LSM_CGROUP_PROGS[4],
        LSM_CGROUP_PROGS[5],
        LSM_CGROUP_PROGS[6],
        LSM_CGROUP_PROGS[7],
        KPROBE_PROGS[0],
        KPROBE_PROGS[1],
        KPROBE_PROGS[2],
        KPROBE_PROGS[3],
        KPROBE_PROGS[4],
        KPROBE_PROGS[5],
        KPROBE_PROGS[6],
        KPROBE_PROGS[7],
        KPROBE_PROGS[8],
        KPROBE_PROGS[9],
        KPROBE_PROGS[10],
        KPROBE_PROGS[11],
        KPROBE_PROGS[12],
    ];
    /// Prefix of every program this project loads; used to find leftovers.
    pub const PROG_PREFIX: &str = "faultd_";
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all three are `#[repr(C)]`, `Copy`, made only of integers and
    // integer arrays with explicit padding fields, so every bit pattern is valid
    // and there are no uninitialised bytes.
    unsafe impl aya::Pod for super::NetRule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CgroupRules {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FaultCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SysRule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SysRules {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RuleState {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    // The kernel side reads these layouts; an accidental field reorder or an
    // implicit padding byte would silently corrupt rules.
    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(
            size_of::<NetRule>(),
            8 + 8 + 16 + 16 + 4 + 2 + 2 + 5 + 1 + 2 + 8 + 8 + 8 + 4 + 4
        );
        assert_eq!(size_of::<RuleState>(), 8 + 4 + 4 + 8);
        assert_eq!(size_of::<NetRule>() % 8, 0);
        assert_eq!(
            size_of::<CgroupRules>(),
            8 + MAX_RULES_PER_CGROUP * size_of::<NetRule>()
        );
        assert_eq!(size_of::<FaultCounters>(), 16);
        assert_eq!(
            size_of::<SysRule>(),
            8 + 8 + 16 + 16 + 4 + 4 + 2 + 2 + 4 + 8 + 4 + 4
        );
        assert_eq!(size_of::<SysRule>() % 8, 0);
        assert_eq!(
            size_of::<SysRules>(),
            8 + MAX_RULES_PER_CGROUP * size_of::<SysRule>()
        );
    }

    #[test]
    fn program_names_fit_the_kernel_limit() {
        // BPF_OBJ_NAME_LEN is 16 including the NUL (include/uapi/linux/bpf.h).
        for name in names::ALL_PROGS {
            assert!(name.len() <= 15, "{name}");
            assert!(name.starts_with(names::PROG_PREFIX), "{name}");
        }
    }
}
