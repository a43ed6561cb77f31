//! Network faults on `cgroup_skb` (net/core/filter.c, `cg_skb_func_proto`).

use aya_ebpf::{
    EbpfContext as _,
    bindings::__sk_buff,
    helpers::generated::{
        bpf_get_prandom_u32, bpf_ktime_get_boot_ns, bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id,
    },
    macros::{cgroup_skb, map},
    maps::{Array, HashMap, PerCpuArray},
    programs::SkBuffContext,
};
use aya_log_ebpf::error;
use faultd_common::{
    ACTION_LOSS, CgroupRules, DIR_EGRESS, DIR_INGRESS, FaultCounters, MAX_RULES_PER_CGROUP,
    NetRule, PROTO_ANY, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};

use crate::lookup::{address_matches, deepest_rules};

/// Sizes are placeholders: the agent sets them from its config before load
/// (`EbpfLoader::set_max_entries`).
#[map(name = "FAULTD_RULES")]
static RULES: HashMap<u64, CgroupRules> = HashMap::with_max_entries(1, 0);

#[map(name = "FAULTD_COUNTERS")]
pub(crate) static COUNTERS: PerCpuArray<FaultCounters> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "FAULTD_LEVELS")]
pub(crate) static LEVELS: Array<u64> = Array::with_max_entries(1, 0);

/// cgroup_skb verdicts. On egress, 2 ("drop and congestion notification")
/// becomes NET_XMIT_DROP in `__cgroup_bpf_run_filter_skb` (kernel/bpf/cgroup.c),
/// which UDP reports as success unless IP_RECVERR is set (`udp_send_skb`) and
/// TCP treats as a lost transmission; 0 would make the sender's send() fail
/// with EPERM, which no real network does. Returning 2 needs the program's
/// expected attach type, hence `cgroup_skb(egress)`.
const PASS: i32 = 1;
const EGRESS_DROP: i32 = 2;
const INGRESS_DROP: i32 = 0;

#[cgroup_skb(egress)]
pub fn faultd_egress(ctx: SkBuffContext) -> i32 {
    if handle(&ctx, DIR_EGRESS) {
        EGRESS_DROP
    } else {
        PASS
    }
}

#[cgroup_skb(ingress)]
pub fn faultd_ingress(ctx: SkBuffContext) -> i32 {
    if handle(&ctx, DIR_INGRESS) {
        INGRESS_DROP
    } else {
        PASS
    }
}

/// Returns true to drop. Every error path returns false.
#[inline(always)]
fn handle(ctx: &SkBuffContext, direction: u8) -> bool {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    let Some(rules) = find_rules(skb) else {
        return false;
    };
    let count = rules.count as usize;
    if count > MAX_RULES_PER_CGROUP {
        error!(ctx, "faultd: rules entry holds {} rules", count);
        return false;
    }
    let pkt = Packet::parse(ctx, direction == DIR_INGRESS);
    // SAFETY: helper with no arguments and no preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let mut drop = false;
    for i in 0..MAX_RULES_PER_CGROUP {
        if i >= count {
            break;
        }
        let rule = &rules.rules[i];
        if rule.directions & direction == 0 || now >= rule.deadline_ns {
            continue;
        }
        let Some(pkt) = pkt.as_ref() else {
            // Unparseable (not IP, truncated): only rules without filters match.
            if !rule_is_unfiltered(rule) {
                continue;
            }
            if apply(rule) {
                drop = true;
            }
            continue;
        };
        if !pkt.matches(rule) {
            continue;
        }
        // Every matching rule counts the packet, even after an earlier rule
        // decided to drop it, so each fault's counters stay independent.
        if apply(rule) {
            drop = true;
        }
    }
    drop
}

#[inline(always)]
fn rule_is_unfiltered(rule: &NetRule) -> bool {
    rule.family == 0 && rule.protocol == PROTO_ANY && rule.has_ports == 0 && rule.mask == [0; 4]
}

/// Counts a match and decides. Returns true to drop.
#[inline(always)]
fn apply(rule: &NetRule) -> bool {
    let Some(counters) = COUNTERS.get_ptr_mut(rule.slot) else {
        // A slot outside the array means the entry is not ours to trust.
        return false;
    };
    // SAFETY: per-CPU value pointer returned by the map for this CPU.
    let counters = unsafe { &mut *counters };
    counters.matched = counters.matched.wrapping_add(1);
    if rule.action != ACTION_LOSS {
        return false;
    }
    // SAFETY: helper with no arguments and no preconditions.
    let roll = u64::from(unsafe { bpf_get_prandom_u32() });
    if roll < rule.threshold {
        counters.dropped = counters.dropped.wrapping_add(1);
        return true;
    }
    false
}

/// The rules of the packet's socket cgroup, else of its deepest targeted
/// ancestor. `bpf_skb_cgroup_id` is the cgroup v2 of the socket
/// (`sock_cgroup_ptr`), set when the socket was created, on both directions.
#[inline(always)]
fn find_rules(skb: *mut __sk_buff) -> Option<&'static CgroupRules> {
    // SAFETY: `skb` is the context pointer the kernel passed in.
    let leaf = unsafe { bpf_skb_cgroup_id(skb) };
    // SAFETY: as above.
    deepest_rules(&RULES, leaf, |level| unsafe {
        bpf_skb_ancestor_cgroup_id(skb, level)
    })
}

/// What the rules filter on.
struct Packet {
    family: u8,
    protocol: u8,
    /// The remote address, network byte order words (IPv4 in word 0).
    remote: [u32; 4],
    /// Remote port for TCP and UDP first fragments; None otherwise.
    remote_port: Option<u16>,
}

impl Packet {
    /// `cgroup_skb` sees the packet from its network header
    /// (`__cgroup_bpf_run_filter_skb` pulls data to `skb_network_header`), so
    /// offset 0 is the IP header. Loads go through `bpf_skb_load_bytes`, which
    /// also works on non-linear skbs.
    #[inline(always)]
    fn parse(ctx: &SkBuffContext, ingress: bool) -> Option<Self> {
        let first: u8 = ctx.load(0).ok()?;
        match first >> 4 {
            4 => Self::parse_v4(ctx, first, ingress),
            6 => Self::parse_v6(ctx, ingress),
            _ => None,
        }
    }

    #[inline(always)]
    fn parse_v4(ctx: &SkBuffContext, first: u8, ingress: bool) -> Option<Self> {
        let ihl = usize::from(first & 0x0f) * 4;
        if ihl < 20 {
            return None;
        }
        let frag: u16 = u16::from_be(ctx.load(6).ok()?);
        let protocol: u8 = ctx.load(9).ok()?;
        let addr: u32 = ctx.load(if ingress { 12 } else { 16 }).ok()?;
        // Only the first fragment carries the transport header.
        let remote_port = if frag & 0x1fff == 0 {
            load_port(ctx, protocol, ihl, ingress)
        } else {
            None
        };
        Some(Self {
            family: 4,
            protocol,
            remote: [addr, 0, 0, 0],
            remote_port,
        })
    }

    #[inline(always)]
    fn parse_v6(ctx: &SkBuffContext, ingress: bool) -> Option<Self> {
        let mut next: u8 = ctx.load(6).ok()?;
        let base = if ingress { 8 } else { 24 };
        let remote: [u32; 4] = ctx.load(base).ok()?;
        let mut offset = 40usize;
        let mut first_fragment = true;
        // Walk the extension headers a socket commonly sees; anything longer
        // leaves the port unknown, so port-filtered rules do not match.
        let mut i = 0;
        while i < 4 {
            i += 1;
            match next {
                // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
                0 | 43 | 60 => {
                    let hdr: [u8; 2] = ctx.load(offset).ok()?;
                    next = hdr[0];
                    offset += (usize::from(hdr[1]) + 1) * 8;
                }
                // Fragment header: 8 bytes; offset in the upper 13 bits.
                44 => {
                    let hdr: [u8; 4] = ctx.load(offset).ok()?;
                    next = hdr[0];
                    if u16::from_be_bytes([hdr[2], hdr[3]]) >> 3 != 0 {
                        first_fragment = false;
                    }
                    offset += 8;
                }
                _ => break,
            }
        }
        let remote_port = if first_fragment {
            load_port(ctx, next, offset, ingress)
        } else {
            None
        };
        Some(Self {
            family: 6,
            protocol: next,
            remote,
            remote_port,
        })
    }

    #[inline(always)]
    fn matches(&self, rule: &NetRule) -> bool {
        if rule.family != 0 && rule.family != self.family {
            return false;
        }
        match rule.protocol {
            PROTO_ANY => {}
            PROTO_ICMP => {
                if self.protocol != PROTO_ICMP && self.protocol != PROTO_ICMPV6 {
                    return false;
                }
            }
            p => {
                if p != self.protocol {
                    return false;
                }
            }
        }
        address_matches(
            &self.remote,
            &rule.addr,
            &rule.mask,
            self.remote_port,
            rule.has_ports,
            rule.port_lo,
            rule.port_hi,
        )
    }
}

#[inline(always)]
fn load_port(ctx: &SkBuffContext, protocol: u8, l4: usize, ingress: bool) -> Option<u16> {
    if protocol != PROTO_TCP && protocol != PROTO_UDP {
        return None;
    }
    // Source port at 0, destination port at 2, for both TCP and UDP.
    let port: u16 = ctx.load(l4 + if ingress { 0 } else { 2 }).ok()?;
    Some(u16::from_be(port))
}
