//! The fq qdiscs latency and bandwidth faults need, installed where the
//! target's packets queue and put back exactly as they were.
//!
//! A delayed packet carries its departure time in `skb->tstamp`; only fq
//! holds packets until then (net/sched/sch_fq.c, `fq_dequeue`). So every
//! device of the target's network namespace that is up gets an fq root
//! (or, on a multiqueue device, an mq root with one fq per queue), unless
//! it already has one.
//!
//! Composition rules, decided by [`plan`] from the device's root qdisc:
//!
//! - handle 0 (the kernel's default: noqueue, pfifo_fast, fq_codel, or mq
//!   with default children, attached by `attach_default_qdiscs` in
//!   net/sched/sch_generic.c): replaced by ours, handle `fa17:`. Restoring
//!   deletes ours; the kernel then re-attaches its default (`qdisc_graft`
//!   grafts noop, `dev_activate` sees noop and calls
//!   `attach_default_qdiscs`), which is what was there.
//! - fq already (someone else's): used as is, nothing installed, provided
//!   its horizon covers the delay (fq caps or drops packets beyond it,
//!   `fq_packet_beyond_horizon`).
//! - ours (`fa17:`) from an earlier fault: shared, reference-counted.
//! - anything else (htb, tbf, prio, netem, cake, a configured fq_codel...):
//!   refused. Replacing it would silently undo someone's shaping; putting
//!   fq below it would have the outer qdisc reorder or drop what fq holds.
//!
//! Every installation is written to the records file *before* the kernel
//! is changed, so an agent that dies (SIGKILL, OOM) restores the devices
//! on its next start ([`restore_leftovers`]). Packets already held in the
//! fq when the agent dies leave at their stamped times; no new packet is
//! delayed because the stamping program's link dies with the agent.

mod ifb;
mod manager;
pub mod netlink;
mod ops;
mod plan;
mod records;

use std::{io, time::Duration};

use netlink::{FqOptions, NLM_F_CREATE, NLM_F_REPLACE, NetlinkError, Rtnl, TC_H_ROOT};

pub use ifb::IngressNetns;
pub use manager::QdiscManager;
pub use plan::{Plan, plan};
pub use records::{IfbRecord, Record, restore_leftovers};

/// The major handle of every qdisc faultd installs ("fa17:"), so the agent
/// recognises its own and never deletes anyone else's.
pub const OUR_MAJOR: u32 = 0xfa17;
pub const OUR_HANDLE: u32 = OUR_MAJOR << 16;

/// fq's horizon for our qdiscs: longer than any delay faultd accepts
/// (60 s + 4 x 4 s jitter), so fq never caps a departure time. With
/// `horizon_drop` off, a stamp beyond it is capped rather than dropped.
pub const FQ_HORIZON: Duration = Duration::from_secs(600);
/// Packet limits of our fq: a 10 s delay at 10 000 packets/s holds 100 000
/// packets; fq's defaults (10 000 total, 100 per flow) would drop them.
/// Memory stays bounded by each sender's socket buffer, which a queued
/// packet keeps charged (`skb_set_owner_w`).
pub const FQ_PLIMIT: u32 = 1_000_000;
pub const FQ_FLOW_PLIMIT: u32 = 200_000;

pub fn our_fq_options() -> FqOptions {
    FqOptions {
        plimit: Some(FQ_PLIMIT),
        flow_plimit: Some(FQ_FLOW_PLIMIT),
        horizon_us: u32::try_from(FQ_HORIZON.as_micros()).ok(),
        horizon_drop: Some(0),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QdiscError {
    /// The device's qdisc cannot be composed with fq: FailedPrecondition.
    #[error("device {device}: {reason}")]
    Refused { device: String, reason: String },
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
    #[error("device {device}: {source}")]
    Netlink {
        device: String,
        #[source]
        source: NetlinkError,
    },
    #[error("qdisc records {path}: {source}")]
    Records {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Preference and handle of faultd's redirect filter on each device
/// (`tc filter show dev X ingress` shows "pref 64023 bpf ... handle 0xfa17
/// faultd_tc_mark").
pub const FILTER_PREF: u16 = 0xfa17;
pub const FILTER_HANDLE: u32 = 0xfa17;

/// The name of faultd's ifb in every namespace (`ip link` shows it).
pub const IFB_NAME: &str = "fdifb0";

/// A device change, for GetCapabilities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QdiscChange {
    pub netns_ino: u64,
    pub device: String,
    pub replaced: String,
    pub installed: String,
    pub faults: Vec<String>,
}

/// Probe for GetCapabilities: creates an fq root on the loopback device of
/// a private network namespace, so no device of the node is touched (the
/// namespace, and the qdisc, vanish with the probe thread).
pub fn probe_fq() -> Result<(), String> {
    std::thread::spawn(|| -> Result<(), String> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
        let mut rtnl = Rtnl::open().map_err(|e| e.to_string())?;
        // lo is ifindex 1 in every new namespace (net/core/dev.c,
        // `dev_new_index` starts at 1 and loopback registers first).
        rtnl.new_qdisc(
            1,
            TC_H_ROOT,
            OUR_HANDLE,
            "fq",
            Some(&our_fq_options()),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map_err(|e| {
            format!(
                "creating an fq qdisc failed ({e}); the kernel lacks sch_fq (CONFIG_NET_SCH_FQ) \
                 or cannot load the module"
            )
        })
    })
    .join()
    .unwrap_or_else(|_| Err("probe thread panicked".into()))
}
