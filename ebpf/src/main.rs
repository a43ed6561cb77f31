//! faultd's kernel programs.
//!
//! Two `cgroup_skb` programs, one per direction, attached (as bpf links owned by
//! the agent) to the topmost targeted cgroups only. Cgroups outside every
//! targeted subtree never run them. A packet's rules are found with one hash
//! lookup of its socket's cgroup, or, for a descendant created after the fault,
//! of the deepest targeted ancestor.
//!
//! Everything fails open: a parse error, a missing map entry or a bad slot lets
//! the packet through.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod kprobe;
#[cfg(target_arch = "bpf")]
mod lookup;
#[cfg(target_arch = "bpf")]
mod net;
#[cfg(target_arch = "bpf")]
mod sys;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any program that could reach this; it exists only
    // to satisfy no_std.
    loop {}
}

/// The kernel's GPL-only helpers (bpf_skb_ancestor_cgroup_id, among others)
/// require a GPL-compatible license (kernel/bpf/syscall.c, bpf_prog_load).
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// The crate is a workspace member so lints and `cargo check` cover it; on the
/// host it is an empty binary.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
