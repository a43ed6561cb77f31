//! Syscall faults on the cgroup socket hooks: fail connect(), bind(),
//! sendmsg() on unconnected UDP, and socket() for a target cgroup with a
//! chosen errno.
//!
//! A hook returning 0 makes the call fail with EPERM; `bpf_set_retval`
//! (kernel/bpf/cgroup.c, `bpf_set_retval`, usable from these hooks since 6.1)
//! replaces that with the errno the fault asks for. These programs run in the
//! calling task's context, so the caller's cgroup is
//! `bpf_get_current_cgroup_id`. They attach, like the packet programs, only
//! at the topmost targeted cgroups. Any error allows the call.

use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_prandom_u32,
        bpf_ktime_get_boot_ns, bpf_set_retval,
    },
    macros::{cgroup_sock, cgroup_sock_addr, map},
    maps::HashMap,
    programs::{SockAddrContext, SockContext},
};
use faultd_common::{
    FAMILY_IPV4, FAMILY_IPV6, MAX_RULES_PER_CGROUP, PROTO_ANY, SYS_OP_BIND, SYS_OP_CONNECT,
    SYS_OP_SENDMSG, SYS_OP_SOCKET, SysRule, SysRules,
};

use crate::{
    lookup::{address_matches, deepest_rules},
    net::COUNTERS,
};

#[map(name = "FAULTD_SYS")]
static SYS_RULES: HashMap<u64, SysRules> = HashMap::with_max_entries(1, 0);

const ALLOW: i32 = 1;
const DENY: i32 = 0;

/// What a rule can filter on.
struct Call {
    family: u8,
    protocol: u8,
    addr: [u32; 4],
    port: Option<u16>,
}

#[cgroup_sock_addr(connect4)]
pub fn faultd_connect4(ctx: SockAddrContext) -> i32 {
    verdict(SYS_OP_CONNECT, &call_v4(&ctx))
}

#[cgroup_sock_addr(connect6)]
pub fn faultd_connect6(ctx: SockAddrContext) -> i32 {
    verdict(SYS_OP_CONNECT, &call_v6(&ctx))
}

#[cgroup_sock_addr(bind4)]
pub fn faultd_bind4(ctx: SockAddrContext) -> i32 {
    verdict(SYS_OP_BIND, &call_v4(&ctx))
}

#[cgroup_sock_addr(bind6)]
pub fn faultd_bind6(ctx: SockAddrContext) -> i32 {
    verdict(SYS_OP_BIND, &call_v6(&ctx))
}

#[cgroup_sock_addr(sendmsg4)]
pub fn faultd_sendmsg4(ctx: SockAddrContext) -> i32 {
    verdict(SYS_OP_SENDMSG, &call_v4(&ctx))
}

#[cgroup_sock_addr(sendmsg6)]
pub fn faultd_sendmsg6(ctx: SockAddrContext) -> i32 {
    verdict(SYS_OP_SENDMSG, &call_v6(&ctx))
}

#[cgroup_sock(sock_create)]
pub fn faultd_socket(ctx: SockContext) -> i32 {
    // SAFETY: the context pointer the kernel passed in; these fields are
    // readable from sock_create (net/core/filter.c, `sock_filter_is_valid_access`).
    let (family, protocol) = unsafe { ((*ctx.sock).family, (*ctx.sock).protocol) };
    let family = match family {
        2 => FAMILY_IPV4,
        10 => FAMILY_IPV6,
        // Unix and other families: still the socket() call, but with no
        // address; only rules without address filters match.
        _ => 0,
    };
    let call = Call {
        family,
        protocol: protocol as u8,
        addr: [0; 4],
        port: None,
    };
    verdict(SYS_OP_SOCKET, &call)
}

#[inline(always)]
fn call_v4(ctx: &SockAddrContext) -> Call {
    // SAFETY: context fields readable from every sock_addr hook
    // (`sock_addr_is_valid_access`); user_port is in network order in the
    // low 16 bits.
    let (ip, port, protocol) = unsafe {
        let sa = &*ctx.sock_addr;
        (sa.user_ip4, sa.user_port, sa.protocol)
    };
    Call {
        family: FAMILY_IPV4,
        protocol: protocol as u8,
        addr: [ip, 0, 0, 0],
        port: Some(u16::from_be(port as u16)),
    }
}

#[inline(always)]
fn call_v6(ctx: &SockAddrContext) -> Call {
    // SAFETY: as in `call_v4`; user_ip6 is read a word at a time, the only
    // access size the verifier allows for it.
    let (addr, port, protocol) = unsafe {
        let sa = &*ctx.sock_addr;
        (
            [
                sa.user_ip6[0],
                sa.user_ip6[1],
                sa.user_ip6[2],
                sa.user_ip6[3],
            ],
            sa.user_port,
            sa.protocol,
        )
    };
    Call {
        family: FAMILY_IPV6,
        protocol: protocol as u8,
        addr,
        port: Some(u16::from_be(port as u16)),
    }
}

#[inline(always)]
fn verdict(op: u8, call: &Call) -> i32 {
    match decide(op, call) {
        Some(errno) => {
            // SAFETY: helper with a plain integer argument. A failure leaves
            // the default EPERM, still a failure the fault asked for.
            unsafe { bpf_set_retval(-(errno as i32)) };
            DENY
        }
        None => ALLOW,
    }
}

/// The errno to fail with, if a live rule for `op` matches and wins its roll.
#[inline(always)]
fn decide(op: u8, call: &Call) -> Option<u32> {
    let rules = find_rules()?;
    let count = rules.count as usize;
    if count > MAX_RULES_PER_CGROUP {
        return None;
    }
    // SAFETY: helper with no arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let mut failed = None;
    for i in 0..MAX_RULES_PER_CGROUP {
        if i >= count {
            break;
        }
        let rule = &rules.rules[i];
        if rule.op != op || now >= rule.deadline_ns || !matches(rule, call) {
            continue;
        }
        let Some(counters) = COUNTERS.get_ptr_mut(rule.slot) else {
            continue;
        };
        // SAFETY: this CPU's value in the per-CPU array.
        let counters = unsafe { &mut *counters };
        counters.matched = counters.matched.wrapping_add(1);
        // SAFETY: helper with no arguments.
        let roll = u64::from(unsafe { bpf_get_prandom_u32() });
        if failed.is_none() && roll < rule.threshold {
            counters.dropped = counters.dropped.wrapping_add(1);
            failed = Some(rule.errno);
        }
    }
    failed
}

#[inline(always)]
fn matches(rule: &SysRule, call: &Call) -> bool {
    if rule.family != 0 && rule.family != call.family {
        return false;
    }
    if rule.protocol != PROTO_ANY && rule.protocol != call.protocol {
        return false;
    }
    address_matches(
        &call.addr,
        &rule.addr,
        &rule.mask,
        call.port,
        rule.has_ports,
        rule.port_lo,
        rule.port_hi,
    )
}

/// The caller's cgroup's rules, else its deepest targeted ancestor's.
#[inline(always)]
fn find_rules() -> Option<&'static SysRules> {
    // SAFETY: helper with no arguments.
    let leaf = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: helper with an integer argument.
    deepest_rules(&SYS_RULES, leaf, |level| unsafe {
        bpf_get_current_ancestor_cgroup_id(level)
    })
}
