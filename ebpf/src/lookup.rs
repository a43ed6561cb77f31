//! What the packet and syscall programs share: finding a cgroup's rules and
//! matching an address and port against a rule's filter.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use faultd_common::{LEVELS_INDEX, MAX_CGROUP_LEVEL};

/// Bit n set: some cgroup at level n holds rules (written by the agent),
/// so the ancestor walk looks up only those levels. Shared by the packet
/// and syscall programs.
#[map(name = "FAULTD_LEVELS")]
static LEVELS: Array<u64> = Array::with_max_entries(1, 0);

/// The rules of cgroup `leaf`, else of its deepest targeted ancestor.
/// `ancestor(level)` returns the id of the leaf's ancestor at `level`, or 0
/// when `level` is deeper than the leaf (kernel/bpf/helpers.c,
/// `bpf_get_current_ancestor_cgroup_id`, and net/core/filter.c,
/// `bpf_skb_ancestor_cgroup_id`, both via `cgroup_ancestor`).
#[inline(always)]
pub fn deepest_rules<T>(
    map: &'static HashMap<u64, T>,
    leaf: u64,
    ancestor: impl Fn(i32) -> u64,
) -> Option<&'static T> {
    // SAFETY: map values stay valid for at least the program's run (RCU).
    if let Some(rules) = unsafe { map.get(&leaf) } {
        return Some(rules);
    }
    let levels = *LEVELS.get(LEVELS_INDEX)?;
    if levels == 0 {
        return None;
    }
    // Deepest first: an entry holds its own faults and all its targeted
    // ancestors', so the deepest hit is the complete answer. Only levels
    // that hold a target are looked up.
    let mut level = MAX_CGROUP_LEVEL;
    while level > 0 {
        level -= 1;
        if levels & (1u64 << level) == 0 {
            continue;
        }
        let id = ancestor(level as i32);
        if id == 0 || id == leaf {
            continue;
        }
        // SAFETY: as above.
        if let Some(rules) = unsafe { map.get(&id) } {
            return Some(rules);
        }
    }
    None
}

/// `value & mask == addr` word by word (network order words, pre-masked
/// `addr`), and the port within `lo..=hi` when the rule filters on ports.
#[inline(always)]
pub fn address_matches(
    value: &[u32; 4],
    addr: &[u32; 4],
    mask: &[u32; 4],
    port: Option<u16>,
    has_ports: u8,
    lo: u16,
    hi: u16,
) -> bool {
    let mut w = 0;
    while w < 4 {
        if value[w] & mask[w] != addr[w] {
            return false;
        }
        w += 1;
    }
    if has_ports != 0 {
        return matches!(port, Some(p) if p >= lo && p <= hi);
    }
    true
}
