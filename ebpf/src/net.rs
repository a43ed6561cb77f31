//! Network faults on `cgroup_skb` (net/core/filter.c, `cg_skb_func_proto`).
//!
//! Loss drops the packet. Latency and bandwidth set the packet's Earliest
//! Departure Time in `skb->tstamp` (CLOCK_MONOTONIC), which the fq qdisc the
//! agent installs on the target's devices honours: `fq_enqueue`
//! (net/sched/sch_fq.c) files the packet by `time_to_send = skb->tstamp` and
//! `fq_dequeue` releases it no earlier. The egress hook runs before the
//! qdisc (`ip_finish_output` -> `BPF_CGROUP_RUN_PROG_INET_EGRESS`, then
//! `dev_queue_xmit`), and writing `tstamp` from cgroup_skb is allowed with
//! CAP_BPF (`cg_skb_is_valid_access`).

use aya_ebpf::{
    EbpfContext,
    bindings::__sk_buff,
    bindings::{
        BPF_F_CLONE, BPF_F_CURRENT_NETNS, BPF_F_NO_PREALLOC, BPF_SK_STORAGE_GET_F_CREATE,
        bpf_hdr_start_off::BPF_HDR_START_NET,
        bpf_map_type, bpf_sock, bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2,
        tcx_action_base::{TCX_DROP, TCX_NEXT},
    },
    helpers::generated::{
        bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_ktime_get_boot_ns, bpf_ktime_get_ns,
        bpf_sk_lookup_tcp, bpf_sk_lookup_udp, bpf_sk_release, bpf_sk_storage_get,
        bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id, bpf_skb_load_bytes_relative,
        bpf_skb_set_tstamp,
    },
    macros::{cgroup_skb, classifier, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::{SkBuffContext, TcContext},
};
use aya_log_ebpf::error;
use faultd_common::{
    ACTION_BANDWIDTH, ACTION_LATENCY, ACTION_LOSS, BANDWIDTH_HORIZON_NS, CgroupRules, DIR_EGRESS,
    DIR_INGRESS, DIST_SIZE, DIST_TABLES, DIST_UNIFORM, FaultCounters, IFB_INDEX, MAX_CGROUP_LEVEL,
    MAX_RULES_PER_CGROUP, NetRule, PROTO_ANY, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
    RuleState, TC_INDEX_DELAY,
};

use crate::lookup::{address_matches, deepest_rules};

/// Sizes are placeholders: the agent sets them from its config before load
/// (`EbpfLoader::set_max_entries`).
#[map(name = "FAULTD_RULES")]
static RULES: HashMap<u64, CgroupRules> = HashMap::with_max_entries(1, 0);

#[map(name = "FAULTD_COUNTERS")]
pub(crate) static COUNTERS: PerCpuArray<FaultCounters> = PerCpuArray::with_max_entries(1, 0);

/// Jitter distribution tables (normal, pareto, paretonormal), filled once by
/// the agent at load: `DIST_SIZE` quantiles each, scaled by `DIST_SCALE`.
#[map(name = "FAULTD_DIST")]
static DIST: Array<i32> = Array::with_max_entries(DIST_SIZE * DIST_TABLES, 0);

/// Per-fault state by slot (sized like the counters by the agent).
#[map(name = "FAULTD_RSTATE")]
static RULE_STATE: Array<RuleState> = Array::with_max_entries(1, 0);

/// Last departure time per socket (`bpf_get_socket_cookie`). sch_fq keeps
/// each flow's packets sorted by `time_to_send` (`flow_queue_add` inserts
/// into an rb-tree), so a later packet with a smaller jittered delay would
/// overtake an earlier one; never stamping a packet before its flow's
/// previous one keeps every flow in order. LRU: idle flows age out.
#[map(name = "FAULTD_FLOWS")]
static FLOWS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65536, 0);

/// Index `IFB_INDEX`: non-zero (the ifb's index, `IFB_IFINDEX`) while some
/// fault delays or paces ingress; 0 otherwise, and then the cgroup
/// programs tag no socket and the tc program marks nothing.
#[map(name = "FAULTD_IFB")]
static IFB: Array<u32> = Array::with_max_entries(1, 0);

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
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    let mut d = Decision::default();
    // SAFETY: reading fields of the context the kernel passed in; the
    // verifier rewrites these loads (`bpf_convert_ctx_access`).
    let (tstamp, len) = unsafe { ((*skb).tstamp, (*skb).len) };
    tag_socket(skb);
    // SAFETY: helper with no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // TCP stamps its own departure time (`tcp_transmit_skb` sets
    // `skb->tstamp = tp->tcp_wstamp_ns`); never send earlier than that.
    d.base_ns = if tstamp > now { tstamp } else { now };
    d.len = len;
    handle(&ctx, DIR_EGRESS, ALL_ACTIONS, &mut d);
    if d.drop != 0 {
        return EGRESS_DROP;
    }
    if d.paced != 0 || d.delayed != 0 {
        // SAFETY: context pointer; 0 for an skb without a socket.
        let cookie = unsafe { bpf_get_socket_cookie(skb.cast()) };
        let t = departure(&d, cookie);
        if t > d.base_ns || t > tstamp {
            // SAFETY: as above; the verifier checks this store is allowed
            // for the program (`cg_skb_is_valid_access`, needs CAP_BPF).
            unsafe { (*skb).tstamp = t };
        }
    }
    PASS
}

#[cgroup_skb(ingress)]
pub fn faultd_ingress(ctx: SkBuffContext) -> i32 {
    tag_socket(ctx.as_ptr().cast());
    let mut d = Decision::default();
    // Only loss here: delay on ingress is the tc program's.
    handle(&ctx, DIR_INGRESS, 1 << ACTION_LOSS, &mut d);
    if d.drop != 0 { INGRESS_DROP } else { PASS }
}

/// What the rules decided for one packet. Plain integers rather than
/// Options: see `decide` in sys.rs on the 6.1 verifier.
#[derive(Default)]
struct Decision {
    /// Egress: when the packet could leave without any fault
    /// (CLOCK_MONOTONIC ns); 0 on ingress, where only loss applies.
    base_ns: u64,
    /// `skb->len`: bytes at the network layer, GSO packets whole.
    len: u32,
    /// Non-zero to drop.
    drop: u32,
    /// Non-zero when a latency rule matched.
    delayed: u32,
    /// Non-zero when a bandwidth rule matched.
    paced: u32,
    /// Sum of the matching latency rules' delays, jitter included.
    delay_ns: i64,
    /// The latest departure any bandwidth rule allows.
    paced_ns: u64,
    /// Non-zero on ingress (the tc program): pacing uses that direction's
    /// clock.
    ingress: u32,
}

/// The departure time: paced, then delayed, never before the previous
/// packet of flow `flow` (0: unknown flow, no ordering).
#[inline(always)]
fn departure(d: &Decision, flow: u64) -> u64 {
    let start = if d.paced_ns > d.base_ns {
        d.paced_ns
    } else {
        d.base_ns
    };
    let delay = if d.delay_ns > 0 { d.delay_ns as u64 } else { 0 };
    let mut t = start + delay;
    if d.delayed == 0 || flow == 0 {
        return t;
    }
    // SAFETY: map values stay valid for the program's run (RCU).
    if let Some(last) = unsafe { FLOWS.get(&flow) } {
        if *last > t {
            t = *last;
        }
    }
    // A full map evicts the least recently used flow; failure only loses
    // ordering for this packet's successor, so it is ignored (fail open).
    let _ = FLOWS.insert(&flow, &t, 0);
    t
}

/// Applies the matching rules to `d`. Every error path leaves the packet
/// alone.
#[inline(always)]
fn handle(ctx: &SkBuffContext, direction: u8, actions: u32, d: &mut Decision) {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    let Some(rules) = find_rules(skb) else {
        return;
    };
    // A fully defined packet plus a flag rather than an Option: with an
    // Option, LLVM may read the fields of the None path (undefined, so any
    // register, even the context pointer), which the verifier rejects
    // ("bitwise operator &= on pointer prohibited").
    let (parsed, pkt) = match Packet::parse(ctx, direction == DIR_INGRESS) {
        Some(p) => (true, p),
        None => (false, Packet::UNPARSED),
    };
    apply_rules(ctx, rules, &pkt, parsed, direction, actions, d);
}

/// Bit n: rules with action n apply.
const ALL_ACTIONS: u32 = (1 << ACTION_LOSS) | (1 << ACTION_LATENCY) | (1 << ACTION_BANDWIDTH);

/// Applies `rules` to the packet `pkt` (`parsed` false: not IP, truncated).
#[inline(always)]
fn apply_rules<C: EbpfContext>(
    ctx: &C,
    rules: &CgroupRules,
    pkt: &Packet,
    parsed: bool,
    direction: u8,
    actions: u32,
    d: &mut Decision,
) {
    let count = rules.count as usize;
    if count > MAX_RULES_PER_CGROUP {
        error!(ctx, "faultd: rules entry holds {} rules", count);
        return;
    }
    // SAFETY: helper with no arguments and no preconditions.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    for i in 0..MAX_RULES_PER_CGROUP {
        if i >= count {
            break;
        }
        let rule = &rules.rules[i];
        if rule.directions & direction == 0
            || now >= rule.deadline_ns
            || actions & (1u32 << (rule.action & 31)) == 0
        {
            continue;
        }
        // Unparseable (not IP, truncated): only rules without filters match.
        let matched = if parsed {
            pkt.matches(rule)
        } else {
            rule_is_unfiltered(rule)
        };
        if !matched {
            continue;
        }
        // Every matching rule counts the packet, even after an earlier rule
        // decided to drop it, so each fault's counters stay independent.
        apply(rule, d);
    }
}
#[inline(always)]
fn rule_is_unfiltered(rule: &NetRule) -> bool {
    rule.family == 0 && rule.protocol == PROTO_ANY && rule.has_ports == 0 && rule.mask == [0; 4]
}

/// Counts a match and applies the rule's action to `d`.
#[inline(always)]
fn apply(rule: &NetRule, d: &mut Decision) {
    let Some(counters) = COUNTERS.get_ptr_mut(rule.slot) else {
        // A slot outside the array means the entry is not ours to trust.
        return;
    };
    // SAFETY: per-CPU value pointer returned by the map for this CPU.
    let counters = unsafe { &mut *counters };
    counters.matched = counters.matched.wrapping_add(1);
    match rule.action {
        ACTION_LOSS => {
            // SAFETY: helper with no arguments and no preconditions.
            let roll = u64::from(unsafe { bpf_get_prandom_u32() });
            if roll < rule.threshold {
                counters.dropped = counters.dropped.wrapping_add(1);
                d.drop = 1;
            }
        }
        // Delay and pacing need a departure base: the egress program and
        // the tc ingress program set one, cgroup_skb ingress (after the
        // qdiscs, too late to hold a packet) leaves it 0.
        ACTION_LATENCY if d.base_ns != 0 => {
            let Some(state) = RULE_STATE.get_ptr_mut(rule.slot) else {
                return;
            };
            // SAFETY: array value pointer, valid for the program's run.
            let state = unsafe { &mut *state };
            d.delay_ns += rule.delay_ns as i64 + jitter(rule, state);
            d.delayed = 1;
            counters.dropped = counters.dropped.wrapping_add(1);
        }
        ACTION_BANDWIDTH if d.base_ns != 0 && rule.rate_bytes != 0 => {
            let Some(state) = RULE_STATE.get_ptr_mut(rule.slot) else {
                return;
            };
            // SAFETY: as above.
            let state = unsafe { &mut *state };
            if pace(rule, state, d) {
                counters.dropped = counters.dropped.wrapping_add(1);
            }
        }
        _ => {}
    }
}

/// Cilium's `edt_sched_departure` (bpf/lib/edt.h) for one aggregate: the
/// packet leaves `len / rate` after the aggregate's previous one. Returns
/// true when the packet was delayed or dropped. Updates from several CPUs
/// race as in Cilium (plain stores); a lost update lets one packet through
/// early, it never stalls the aggregate.
#[inline(always)]
fn pace(rule: &NetRule, state: &mut RuleState, d: &mut Decision) -> bool {
    let gap = u64::from(d.len) * 1_000_000_000 / rule.rate_bytes;
    let t = d.base_ns;
    let last = if d.ingress != 0 {
        &mut state.last_departure_in_ns
    } else {
        &mut state.last_departure_ns
    };
    let next = *last + gap;
    if next <= t {
        *last = t;
        return false;
    }
    // Past the horizon the sender is faster than the rate: drop, as a
    // real bottleneck's full queue would, rather than queue without bound.
    if next - t >= BANDWIDTH_HORIZON_NS {
        d.drop = 1;
        return true;
    }
    *last = next;
    if next > d.paced_ns {
        d.paced_ns = next;
    }
    d.paced = 1;
    true
}

/// netem's jitter (net/sched/sch_netem.c, `tabledist`): uniform in
/// `[-sigma, sigma)` without a table, else `sigma * table[rnd] / 8192`.
#[inline(always)]
fn jitter(rule: &NetRule, state: &mut RuleState) -> i64 {
    let sigma = rule.jitter_ns;
    if sigma == 0 {
        return 0;
    }
    let rnd = u64::from(crandom(rule.correlation, state));
    if rule.dist == DIST_UNIFORM {
        // Multiply-shift instead of netem's `rnd % (2 * sigma)`, which is
        // not uniform once 2 * sigma exceeds 2^32; sigma <= 2^32 (the agent
        // checks) keeps the product within 64 bits.
        return ((rnd * sigma) >> 31) as i64 - sigma as i64;
    }
    let index = u32::from(rule.dist - 1) * DIST_SIZE + (rnd as u32 & (DIST_SIZE - 1));
    let Some(t) = DIST.get(index) else {
        return 0;
    };
    // Rounded like netem; an arithmetic shift, as BPF before v4 has no
    // signed division.
    (sigma as i64 * i64::from(*t) + 4096) >> 13
}

/// netem's correlated random number (`get_crandom`): a weighted mix of a
/// fresh value and the previous one.
#[inline(always)]
fn crandom(rho: u32, state: &mut RuleState) -> u32 {
    // SAFETY: helper with no arguments.
    let value = u64::from(unsafe { bpf_get_prandom_u32() });
    if rho == 0 {
        return value as u32;
    }
    let rho = u64::from(rho) + 1;
    let last = u64::from(state.last_random);
    let answer = ((value * ((1u64 << 32) - rho) + last * rho) >> 32) as u32;
    state.last_random = answer;
    answer
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

/// A socket's cgroup v2 and its ancestors, kept on the socket for the tc
/// ingress program: tc programs can look a socket up by its tuple but may
/// not ask for its cgroup (net/core/filter.c, `tc_cls_act_func_proto`
/// offers neither `bpf_sk_cgroup_id` nor `bpf_sk_ancestor_cgroup_id`), while
/// the cgroup programs can (`cg_skb_func_proto`). A socket's cgroup is fixed
/// when it is created (`cgroup_sk_alloc`), so the copy never goes stale.
#[repr(C)]
pub struct SockCgroups {
    /// The socket cgroup's level + 1; 0 while not filled in.
    depth: u32,
    _pad: u32,
    /// `ids[l]`: the id of the ancestor at level l; `ids[depth - 1]` is the
    /// socket's own cgroup.
    ids: [u64; MAX_CGROUP_LEVEL as usize],
}

/// A BTF map definition (socket storage cannot be declared the legacy way:
/// `bpf_local_storage_map_alloc_check` requires BTF for key and value).
/// `BPF_F_CLONE` copies a listener's entry to the sockets it accepts
/// (net/core/bpf_sk_storage.c, `bpf_sk_storage_clone`), so a server's
/// connections carry the tag from their first packet.
#[repr(C)]
pub struct SockCgroupsMap {
    r#type: *const [i32; bpf_map_type::BPF_MAP_TYPE_SK_STORAGE as usize],
    key: *const i32,
    value: *const SockCgroups,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; (BPF_F_NO_PREALLOC | BPF_F_CLONE) as usize],
}

// SAFETY: the members are placeholders the loader reads from BTF; they are
// never dereferenced.
unsafe impl Sync for SockCgroupsMap {}

#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "FAULTD_SOCK_CG")]
static SOCK_CG: SockCgroupsMap = SockCgroupsMap {
    r#type: core::ptr::null(),
    key: core::ptr::null(),
    value: core::ptr::null(),
    max_entries: core::ptr::null(),
    map_flags: core::ptr::null(),
};

#[inline(always)]
fn sock_cg_map() -> *mut core::ffi::c_void {
    core::ptr::from_ref(&SOCK_CG).cast_mut().cast()
}

/// Records the packet's socket's cgroups on the socket, once, while some
/// fault delays ingress (the ifb index is set). Failures leave the socket
/// untagged: its packets are then not delayed on ingress (fail open).
///
/// A BPF subprogram, not inlined: the walk can end at any of 32 levels,
/// and inlined, each end would carry its own verifier state into the rest
/// of the caller. Across a call the caller's state is the same whichever
/// way the callee returned (it only clobbers r0-r5), so those paths prune
/// to one (kernel/bpf/verifier.c, `prepare_func_exit`, `states_equal`).
#[inline(never)]
fn tag_socket(skb: *mut __sk_buff) {
    match IFB.get(IFB_INDEX) {
        Some(ifb) if *ifb != 0 => {}
        _ => return,
    }
    // SAFETY: context field read, rewritten by the verifier; may be null.
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return;
    }
    // SAFETY: a socket from the context; the helper returns null for
    // anything but a full socket.
    let tag = unsafe {
        bpf_sk_storage_get(
            sock_cg_map(),
            sk.cast(),
            core::ptr::null_mut(),
            BPF_SK_STORAGE_GET_F_CREATE.into(),
        )
    }
    .cast::<SockCgroups>();
    if tag.is_null() {
        return;
    }
    // SAFETY: a map value of the declared type, valid during this run.
    let tag = unsafe { &mut *tag };
    if tag.depth != 0 {
        return;
    }
    let mut level = 0;
    while level < MAX_CGROUP_LEVEL as usize {
        // SAFETY: context pointer; 0 past the socket cgroup's own level.
        let id = unsafe { bpf_skb_ancestor_cgroup_id(skb, level as i32) };
        if id == 0 {
            break;
        }
        tag.ids[level & LEVEL_MASK as usize] = id;
        level += 1;
    }
    tag.depth = level as u32;
}

const LEVEL_MASK: u32 = MAX_CGROUP_LEVEL - 1;
const _: () = assert!(MAX_CGROUP_LEVEL.is_power_of_two());

/// The rules of socket `sk`'s cgroup (a referenced lookup result), from
/// the cgroups a cgroup program recorded on it (`tag_socket`).
#[inline(always)]
fn sock_rules(sk: *mut bpf_sock) -> Option<&'static CgroupRules> {
    // SAFETY: a referenced socket from a lookup; no creation, so no value.
    let tag = unsafe { bpf_sk_storage_get(sock_cg_map(), sk.cast(), core::ptr::null_mut(), 0) }
        .cast::<SockCgroups>();
    if tag.is_null() {
        return None;
    }
    // SAFETY: a map value of the declared type, valid during this run.
    let tag = unsafe { &*tag };
    let depth = tag.depth;
    if depth == 0 || depth > MAX_CGROUP_LEVEL {
        return None;
    }
    // Indexes masked to the array (MAX_CGROUP_LEVEL is a power of two): the
    // verifier bounds a masked register, while LLVM may test the bound on
    // a copy it then does not use for the access ("unbounded memory
    // access"), and no bounds-check panic path is left without an exit.
    let leaf = tag.ids[((depth - 1) & LEVEL_MASK) as usize];
    // Levels below the socket's cgroup hold 0 (the storage starts zeroed
    // and `tag_socket` fills only levels up to the socket's own), which
    // `deepest_rules` skips. No comparison with `depth` here: the verifier
    // tracks its range, and splitting on it at every level of the walk
    // exceeds the 1M-instruction budget.
    deepest_rules(&RULES, leaf, |l| tag.ids[(l as u32 & LEVEL_MASK) as usize])
}

/// What the rules filter on, and the tuple a socket lookup needs.
struct Packet {
    family: u8,
    protocol: u8,
    /// The remote address, network byte order words (IPv4 in word 0).
    remote: [u32; 4],
    /// Remote port for TCP and UDP first fragments; None otherwise.
    remote_port: Option<u16>,
    /// The local address and port (host order), as `remote`.
    local: [u32; 4],
    local_port: u16,
}

/// Reads packet bytes at an offset from the IP header.
trait Load {
    fn at<T>(&self, offset: usize) -> Option<T>;
}

/// `cgroup_skb` sees the packet from its network header
/// (`__cgroup_bpf_run_filter_skb` pulls data to `skb_network_header`), so
/// offset 0 is the IP header. `bpf_skb_load_bytes` also works on
/// non-linear skbs.
impl Load for SkBuffContext {
    #[inline(always)]
    fn at<T>(&self, offset: usize) -> Option<T> {
        self.load(offset).ok()
    }
}

/// tc sees the packet from its link-layer header, whose length depends on
/// the device (Ethernet, none on an L3 tunnel); loading relative to the
/// network header (`BPF_HDR_START_NET`, net/core/filter.c
/// `bpf_skb_load_bytes_relative`) works on both.
struct TcNet<'a>(&'a TcContext);

impl Load for TcNet<'_> {
    #[inline(always)]
    fn at<T>(&self, offset: usize) -> Option<T> {
        let mut data = core::mem::MaybeUninit::<T>::uninit();
        // SAFETY: context pointer and a writable buffer of the given size.
        let ret = unsafe {
            bpf_skb_load_bytes_relative(
                self.0.as_ptr(),
                offset as u32,
                data.as_mut_ptr().cast(),
                size_of::<T>() as u32,
                BPF_HDR_START_NET,
            )
        };
        // SAFETY: the helper filled every byte when it returned 0.
        (ret == 0).then(|| unsafe { data.assume_init() })
    }
}

impl Packet {
    const UNPARSED: Self = Self {
        family: 0,
        protocol: 0,
        remote: [0; 4],
        remote_port: None,
        local: [0; 4],
        local_port: 0,
    };

    #[inline(always)]
    fn parse<L: Load>(ctx: &L, ingress: bool) -> Option<Self> {
        let first: u8 = ctx.at(0)?;
        match first >> 4 {
            4 => Self::parse_v4(ctx, first, ingress),
            6 => Self::parse_v6(ctx, ingress),
            _ => None,
        }
    }

    #[inline(always)]
    fn parse_v4<L: Load>(ctx: &L, first: u8, ingress: bool) -> Option<Self> {
        let ihl = usize::from(first & 0x0f) * 4;
        if ihl < 20 {
            return None;
        }
        let frag: u16 = u16::from_be(ctx.at(6)?);
        let protocol: u8 = ctx.at(9)?;
        let (r, l) = if ingress { (12, 16) } else { (16, 12) };
        let addr: u32 = ctx.at(r)?;
        let local: u32 = ctx.at(l)?;
        // Only the first fragment carries the transport header.
        let (remote_port, local_port) = if frag & 0x1fff == 0 {
            load_ports(ctx, protocol, ihl, ingress)
        } else {
            (None, 0)
        };
        Some(Self {
            family: 4,
            protocol,
            remote: [addr, 0, 0, 0],
            remote_port,
            local: [local, 0, 0, 0],
            local_port,
        })
    }

    #[inline(always)]
    fn parse_v6<L: Load>(ctx: &L, ingress: bool) -> Option<Self> {
        let mut next: u8 = ctx.at(6)?;
        let (r, l) = if ingress { (8, 24) } else { (24, 8) };
        let remote: [u32; 4] = ctx.at(r)?;
        let local: [u32; 4] = ctx.at(l)?;
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
                    let hdr: [u8; 2] = ctx.at(offset)?;
                    next = hdr[0];
                    offset += (usize::from(hdr[1]) + 1) * 8;
                }
                // Fragment header: 8 bytes; offset in the upper 13 bits.
                44 => {
                    let hdr: [u8; 4] = ctx.at(offset)?;
                    next = hdr[0];
                    if u16::from_be_bytes([hdr[2], hdr[3]]) >> 3 != 0 {
                        first_fragment = false;
                    }
                    offset += 8;
                }
                _ => break,
            }
        }
        let (remote_port, local_port) = if first_fragment {
            load_ports(ctx, next, offset, ingress)
        } else {
            (None, 0)
        };
        Some(Self {
            family: 6,
            protocol: next,
            remote,
            remote_port,
            local,
            local_port,
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

    /// A flow key for ingress, where the skb has no socket cookie yet: a
    /// hash of the 5-tuple, top bit set so it never equals a cookie (which
    /// counts up from 1, net/core/sock_diag.c `__sock_gen_cookie`).
    #[inline(always)]
    fn flow_key(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut mix = |v: u64| {
            h ^= v;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        };
        let mut w = 0;
        while w < 4 {
            mix(u64::from(self.remote[w]) << 32 | u64::from(self.local[w]));
            w += 1;
        }
        mix(u64::from(self.remote_port.unwrap_or(0)) << 24
            | u64::from(self.local_port) << 8
            | u64::from(self.protocol));
        h | 1 << 63
    }
}

/// (remote port, local port) in host order, for TCP and UDP.
#[inline(always)]
fn load_ports<L: Load>(ctx: &L, protocol: u8, l4: usize, ingress: bool) -> (Option<u16>, u16) {
    if protocol != PROTO_TCP && protocol != PROTO_UDP {
        return (None, 0);
    }
    // Source port at 0, destination port at 2, for both TCP and UDP.
    let Some(ports) = ctx.at::<[u16; 2]>(l4) else {
        return (None, 0);
    };
    let (src, dst) = (u16::from_be(ports[0]), u16::from_be(ports[1]));
    if ingress {
        (Some(src), dst)
    } else {
        (Some(dst), src)
    }
}

/// tc ingress (TCX): picks the packets to delay or pace for sockets of
/// targeted cgroups (ingress latency and bandwidth; a packet a bandwidth
/// rule drops is dropped here). The owning socket is looked up by the
/// packet's tuple; the cgroups recorded on it (`tag_socket`) select the
/// rules as on egress. A packet to delay gets a mono delivery time and the
/// mark `TC_INDEX_DELAY` in `skb->tc_index`; faultd's classic filter on the
/// same hook (`faultd_tc_mark`, run after TCX programs that say TCX_NEXT:
/// net/core/dev.c, `sch_handle_ingress`) sends marked packets to faultd's
/// ifb with mirred, whose fq holds them until then; the ifb hands them back
/// to this device's receive path (drivers/net/ifb.c, `ifb_ri_tasklet`, with
/// `tc_skip_classify` set so neither program sees them twice).
///
/// The redirect is mirred's, not `bpf_redirect`'s: ifb drops what was not
/// redirected by mirred (`ifb_xmit` requires `skb->redirected`, which only
/// `tcf_mirred_act` sets). The decision is this program's, a bpf link that
/// detaches when the agent dies: with it gone nothing is marked and the
/// classic filter, which outlives the agent until its next start, matches
/// nothing.
#[classifier]
pub fn faultd_tc_in(ctx: TcContext) -> i32 {
    try_tc_ingress(&ctx).unwrap_or(TCX_NEXT)
}

/// `Some(TCX_DROP)` for a packet a bandwidth rule drops (its aggregate is a
/// horizon behind), else None after marking what to delay.
#[inline(always)]
fn try_tc_ingress(ctx: &TcContext) -> Option<i32> {
    let ifb = *IFB.get(IFB_INDEX)?;
    if ifb == 0 {
        return None;
    }
    let pkt = Packet::parse(&TcNet(ctx), true)?;
    let rules = socket_rules(ctx, &pkt)?;
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    let mut d = Decision::default();
    // SAFETY: helper with no arguments.
    d.base_ns = unsafe { bpf_ktime_get_ns() };
    // SAFETY: context field read, rewritten by the verifier.
    d.len = unsafe { (*skb).len };
    d.ingress = 1;
    apply_rules(
        ctx,
        rules,
        &pkt,
        true,
        DIR_INGRESS,
        (1 << ACTION_LATENCY) | (1 << ACTION_BANDWIDTH),
        &mut d,
    );
    if d.drop != 0 {
        return Some(TCX_DROP);
    }
    if d.delayed == 0 && d.paced == 0 {
        return None;
    }
    let t = departure(&d, pkt.flow_key());
    // The mono flag keeps the time through mirred: `skb_set_redirected`
    // clears `tstamp` on packets from ingress (`skb_clear_tstamp`) unless it
    // is a mono delivery time; fq on the ifb then reads it (`fq_enqueue`)
    // as on egress.
    // SAFETY: context pointer.
    if unsafe { bpf_skb_set_tstamp(skb, t, 1) } != 0 {
        return None;
    }
    // SAFETY: context field write, allowed for tc programs
    // (`tc_cls_act_is_valid_access`).
    unsafe { (*skb).tc_index = TC_INDEX_DELAY };
    None
}

/// The classic (netlink, not direct-action) cls_bpf filter under faultd's
/// mirred action: matches the packets `faultd_tc_in` marked and clears the
/// mark. Returning -1 selects the filter's own class and runs its actions
/// (net/sched/cls_bpf.c, `cls_bpf_classify`); 0 is no match.
#[classifier]
pub fn faultd_tc_mark(ctx: TcContext) -> i32 {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: context field read and write (`tc_cls_act_is_valid_access`).
    unsafe {
        if (*skb).tc_index != TC_INDEX_DELAY {
            return 0;
        }
        (*skb).tc_index = 0;
    }
    -1
}

/// The rules of the cgroup owning the local socket the packet is for.
#[inline(always)]
fn socket_rules(ctx: &TcContext, pkt: &Packet) -> Option<&'static CgroupRules> {
    let remote_port = pkt.remote_port?;
    // SAFETY: a plain-integer C union; all zeroes is a valid value.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    let size = if pkt.family == 4 {
        tuple.__bindgen_anon_1.ipv4 = bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
            saddr: pkt.remote[0],
            daddr: pkt.local[0],
            sport: remote_port.to_be(),
            dport: pkt.local_port.to_be(),
        };
        size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>()
    } else {
        tuple.__bindgen_anon_1.ipv6 = bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 {
            saddr: pkt.remote,
            daddr: pkt.local,
            sport: remote_port.to_be(),
            dport: pkt.local_port.to_be(),
        };
        size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2>()
    } as u32;
    let ptr = ctx.as_ptr();
    let netns = BPF_F_CURRENT_NETNS as u64;
    // SAFETY: context pointer and a tuple of the size given; the returned
    // socket holds a reference released below on every path.
    let sk: *mut bpf_sock = unsafe {
        if pkt.protocol == PROTO_TCP {
            bpf_sk_lookup_tcp(ptr, &mut tuple, size, netns, 0)
        } else {
            bpf_sk_lookup_udp(ptr, &mut tuple, size, netns, 0)
        }
    };
    if sk.is_null() {
        return None;
    }
    let rules = sock_rules(sk);
    // SAFETY: releases the lookup's reference; map values stay valid.
    unsafe { bpf_sk_release(sk.cast()) };
    rules
}
