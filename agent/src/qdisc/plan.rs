//! How to get fq onto a device, decided from its root qdisc alone (the
//! composition rules in the module above), so they are unit-tested.

use std::time::Duration;

use super::{
    OUR_MAJOR,
    netlink::{Qdisc, handle_text},
};

/// What to do with one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Replace the kernel default with our fq (single queue).
    InstallFq,
    /// Replace the kernel default with our mq and an fq per tx queue.
    InstallMq {
        queues: u32,
    },
    /// Ours already: take a reference.
    Share,
    /// Someone's fq with a long enough horizon: use, change nothing.
    UseExisting,
    Refuse(String),
}

/// Decides how to get fq onto a device whose root qdisc is `root`, for
/// departure times up to `horizon` ahead. Pure, so the rules are unit-tested.
pub fn plan(root: &Qdisc, num_tx_queues: u32, horizon: Duration) -> Plan {
    let major = root.handle >> 16;
    if major == OUR_MAJOR {
        return Plan::Share;
    }
    if root.kind == "fq" {
        let fq = root.fq.unwrap_or_default();
        // fq's default horizon is 10 s with horizon_drop on
        // (`fq_init`); absent attributes mean the defaults.
        let current = Duration::from_micros(u64::from(fq.horizon_us.unwrap_or(10_000_000)));
        if current < horizon {
            return Plan::Refuse(format!(
                "its root qdisc is an fq ({}) with a {} horizon; it would {} packets delayed by \
                 up to {}; raise its horizon (tc qdisc change ... horizon) or remove it",
                handle_text(root.handle),
                crate::duration::format(current),
                if fq.horizon_drop.unwrap_or(1) == 0 {
                    "send early"
                } else {
                    "drop"
                },
                crate::duration::format(horizon),
            ));
        }
        return Plan::UseExisting;
    }
    if root.handle != 0 {
        return Plan::Refuse(format!(
            "its root qdisc is {} {}, configured by someone else; faultd needs fq there for \
             timestamp-based delay and will not replace or nest under another qdisc \
             (the outer one would reorder or drop what fq holds); remove it or target a \
             workload on another device",
            root.kind,
            handle_text(root.handle)
        ));
    }
    if root.kind == "mq" && num_tx_queues > 1 {
        Plan::InstallMq {
            queues: num_tx_queues,
        }
    } else {
        Plan::InstallFq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qdisc::{
        OUR_HANDLE,
        netlink::{FqOptions, TC_H_ROOT},
        our_fq_options,
    };

    fn root(kind: &str, handle: u32, fq: Option<FqOptions>) -> Qdisc {
        Qdisc {
            ifindex: 2,
            handle,
            parent: TC_H_ROOT,
            kind: kind.into(),
            fq,
        }
    }

    const TEN_S: Duration = Duration::from_secs(10);

    #[test]
    fn kernel_defaults_are_replaced() {
        for kind in ["noqueue", "pfifo_fast", "fq_codel"] {
            assert_eq!(
                plan(&root(kind, 0, None), 1, TEN_S),
                Plan::InstallFq,
                "{kind}"
            );
        }
        assert_eq!(
            plan(&root("mq", 0, None), 4, TEN_S),
            Plan::InstallMq { queues: 4 }
        );
    }

    #[test]
    fn our_own_is_shared() {
        assert_eq!(
            plan(&root("fq", OUR_HANDLE, Some(our_fq_options())), 1, TEN_S),
            Plan::Share
        );
    }

    #[test]
    fn someone_elses_fq_is_used_when_its_horizon_suffices() {
        // tc's defaults: horizon 10 s, horizon_drop on.
        let default_fq = FqOptions {
            horizon_us: Some(10_000_000),
            horizon_drop: Some(1),
            ..FqOptions::default()
        };
        assert_eq!(
            plan(&root("fq", 0x8001_0000, Some(default_fq)), 1, TEN_S),
            Plan::UseExisting
        );
        let Plan::Refuse(why) = plan(
            &root("fq", 0x8001_0000, Some(default_fq)),
            1,
            Duration::from_secs(11),
        ) else {
            panic!("refused")
        };
        assert!(why.contains("horizon") && why.contains("drop"), "{why}");
    }

    #[test]
    fn configured_qdiscs_are_refused_with_the_reason() {
        for kind in ["htb", "tbf", "prio", "netem", "cake", "fq_codel"] {
            let Plan::Refuse(why) = plan(&root(kind, 0x1_0000, None), 1, TEN_S) else {
                panic!("{kind} refused")
            };
            assert!(why.contains(kind) && why.contains("1:"), "{why}");
        }
    }
}
