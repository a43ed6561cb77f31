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
    pub _pad: [u8; 3],
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

/// Per-fault counters, one copy per CPU (`PerCpuArray`); the agent sums them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounters {
    /// Packets that matched the fault's filters while it was live.
    pub matched: u64,
    /// Packets the fault dropped.
    pub dropped: u64,
}

/// Index 0 of the `LEVELS` array: a bitmask of cgroup levels (bit n = level n)
/// at which some targeted cgroup sits, so the ancestor walk skips levels that
/// cannot hold an entry.
pub const LEVELS_INDEX: u32 = 0;

/// Names of maps and programs, shared so the agent cannot drift from the ELF.
pub mod names {
    pub const RULES_MAP: &str = "FAULTD_RULES";
    pub const COUNTERS_MAP: &str = "FAULTD_COUNTERS";
    pub const LEVELS_MAP: &str = "FAULTD_LEVELS";
    /// Program names are what `bpftool prog` shows (the kernel keeps 15 bytes).
    pub const EGRESS_PROG: &str = "faultd_egress";
    pub const INGRESS_PROG: &str = "faultd_ingress";
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    // The kernel side reads these layouts; an accidental field reorder or an
    // implicit padding byte would silently corrupt rules.
    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<NetRule>(), 8 + 8 + 16 + 16 + 4 + 2 + 2 + 5 + 3);
        assert_eq!(size_of::<NetRule>() % 8, 0);
        assert_eq!(
            size_of::<CgroupRules>(),
            8 + MAX_RULES_PER_CGROUP * size_of::<NetRule>()
        );
        assert_eq!(size_of::<FaultCounters>(), 16);
    }

    #[test]
    fn program_names_fit_the_kernel_limit() {
        // BPF_OBJ_NAME_LEN is 16 including the NUL (include/uapi/linux/bpf.h).
        assert!(names::EGRESS_PROG.len() <= 15);
        assert!(names::INGRESS_PROG.len() <= 15);
        assert!(names::EGRESS_PROG.starts_with(names::PROG_PREFIX));
        assert!(names::INGRESS_PROG.starts_with(names::PROG_PREFIX));
    }
}
