//! faultd's ifb for ingress delay: created per network namespace with an
//! fq root and a redirect filter on each device, shared by the faults that
//! need it, deleted with the last of them.

use std::{collections::BTreeSet, fs::File, path::Path};

use tracing::{info, warn};

use super::{
    FILTER_HANDLE, FILTER_PREF, IFB_NAME, OUR_HANDLE, QdiscChange, QdiscError, QdiscManager,
    manager::IfbState,
    netlink::{
        CLSACT_HANDLE, IFF_UP, NLM_F_CREATE, NLM_F_EXCL, Rtnl, TC_H_CLSACT, TC_PARENT_INGRESS,
        handle_text,
    },
    ops::install_fq,
    records::{IfbRecord, delete_ifb},
};
use crate::{error::error_chain, netns::target_netns};

/// A namespace where ingress latency is active: where to attach the tc
/// programs.
#[derive(Debug)]
pub struct IngressNetns {
    pub netns_ino: u64,
    /// The namespace, to attach in (TCX resolves the ifindex in the
    /// caller's namespace, kernel/bpf/tcx.c `tcx_link_attach`).
    pub netns: File,
    /// Every up device but the ifb: (ifindex, name).
    pub devices: Vec<(i32, String)>,
}

impl QdiscManager {
    /// Makes the target's namespace hold faultd's ifb (fq root, up),
    /// shared by fault `fault_id`. Returns the namespace and its devices
    /// when this call created the ifb (the caller attaches the tc
    /// programs there), None when the namespace already had it. On error
    /// nothing changed.
    /// `mark` is the loaded classic filter program (fd and name) that the
    /// redirect filter on each device runs.
    pub fn acquire_ifb(
        &mut self,
        fault_id: &str,
        cgroup: &Path,
        ifindex: i32,
        mark: (u32, &str),
    ) -> Result<Option<IngressNetns>, QdiscError> {
        let ns = target_netns(cgroup)?;
        if let Some(old) = self.ifb_by_fault.get(fault_id).copied() {
            if old == ns.ino {
                return Ok(None);
            }
            return Err(QdiscError::Refused {
                device: IFB_NAME.into(),
                reason: "the target's network namespace changed since the fault was applied;                          revert it and apply again"
                    .into(),
            });
        }
        if let Some(state) = self.ifbs.get_mut(&ns.ino) {
            state.faults.insert(fault_id.to_owned());
            self.ifb_by_fault.insert(fault_id.to_owned(), ns.ino);
            return Ok(None);
        }
        let nl = |device: &str| {
            let device = device.to_owned();
            move |source| QdiscError::Netlink { device, source }
        };
        let mut rtnl = Rtnl::open_in(&ns.file).map_err(nl("(netns)"))?;
        let links = rtnl.links().map_err(nl("(links)"))?;
        if let Some(taken) = links
            .iter()
            .find(|l| l.ifindex == ifindex || l.name == IFB_NAME)
        {
            return Err(QdiscError::Refused {
                device: taken.name.clone(),
                reason: format!(
                    "faultd needs the name {IFB_NAME} and interface index {ifindex} for its ifb                      in this network namespace, and {} (index {}) holds one of them; a previous                      faultd's leftover is deleted on the agent's start",
                    taken.name, taken.ifindex
                ),
            });
        }
        let devices: Vec<(i32, String)> = links
            .iter()
            .filter(|l| l.flags & IFF_UP != 0)
            .map(|l| (l.ifindex, l.name.clone()))
            .collect();
        // Classic ingress filters run in preference order and the first
        // verdict wins, so a device that already has some may never reach
        // faultd's; refuse rather than promise a delay that may not happen.
        let qdiscs = rtnl.qdiscs().map_err(nl("(qdiscs)"))?;
        let mut clsacts = Vec::new();
        for (index, name) in &devices {
            match qdiscs
                .iter()
                .find(|q| q.ifindex == *index && q.parent == TC_H_CLSACT)
            {
                None => clsacts.push(*index),
                Some(q) => {
                    let others = rtnl.filters(*index, TC_PARENT_INGRESS).map_err(nl(name))?;
                    if let Some((pref, _, kind)) = others.first() {
                        return Err(QdiscError::Refused {
                            device: name.clone(),
                            reason: format!(
                                "its {} qdisc has an ingress filter ({kind}, pref {pref}); \
                                 classic filters stop at the first verdict, so faultd's \
                                 redirect to the ifb could be skipped",
                                q.kind
                            ),
                        });
                    }
                }
            }
        }
        let record = IfbRecord {
            netns_ino: ns.ino,
            netns_dev: ns.dev,
            pid_hint: ns.pid,
            ifindex,
            ifname: IFB_NAME.into(),
            filters: devices.iter().map(|(i, _)| *i).collect(),
            clsacts,
        };
        self.ifbs.insert(
            ns.ino,
            IfbState {
                record: record.clone(),
                device_names: devices.iter().cloned().collect(),
                faults: BTreeSet::from([fault_id.to_owned()]),
            },
        );
        // Persist before changing anything.
        if let Err(e) = self.persist() {
            self.ifbs.remove(&ns.ino);
            return Err(e);
        }
        let created = rtnl
            .new_ifb(IFB_NAME, ifindex)
            .and_then(|()| install_fq(&mut rtnl, ifindex))
            .map_err(|source| QdiscError::Netlink {
                device: IFB_NAME.into(),
                source,
            })
            .and_then(|()| {
                for (index, name) in &devices {
                    let added = if record.clsacts.contains(index) {
                        rtnl.new_qdisc(
                            *index,
                            TC_H_CLSACT,
                            CLSACT_HANDLE,
                            "clsact",
                            None,
                            NLM_F_CREATE | NLM_F_EXCL,
                        )
                    } else {
                        Ok(())
                    }
                    .and_then(|()| {
                        rtnl.new_redirect_filter(
                            *index,
                            FILTER_PREF,
                            FILTER_HANDLE,
                            mark.0,
                            mark.1,
                            ifindex,
                        )
                    });
                    added.map_err(|source| QdiscError::Netlink {
                        device: name.clone(),
                        source,
                    })?;
                }
                Ok(())
            });
        if let Err(e) = created {
            if let Err(undo) = delete_ifb(&record) {
                warn!(error = %error_chain(&undo), "undoing a partial ifb set-up");
            }
            self.ifbs.remove(&ns.ino);
            let _ = self.persist();
            return Err(e);
        }
        let names = |indexes: &[i32]| {
            devices
                .iter()
                .filter(|(i, _)| indexes.contains(i))
                .map(|(_, n)| n.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        warn!(
            device = IFB_NAME,
            netns = ns.ino,
            filters_on = %names(&record.filters),
            clsact_added_on = %names(&record.clsacts),
            "created faultd's ifb with an fq root and its redirect filters for ingress delay; \
             all deleted when the last such fault ends"
        );
        self.ifb_by_fault.insert(fault_id.to_owned(), ns.ino);
        Ok(Some(IngressNetns {
            netns_ino: ns.ino,
            netns: ns.file,
            devices,
        }))
    }

    /// Drops `fault_id`'s use of its namespace's ifb. When it was the last
    /// user, `before_delete(netns_ino)` runs (to detach the tc programs
    /// that redirect to it) and the ifb is deleted.
    pub fn release_ifb(&mut self, fault_id: &str, before_delete: impl FnOnce(u64)) {
        let Some(ino) = self.ifb_by_fault.remove(fault_id) else {
            return;
        };
        let Some(state) = self.ifbs.get_mut(&ino) else {
            return;
        };
        state.faults.remove(fault_id);
        if !state.faults.is_empty() {
            return;
        }
        before_delete(ino);
        if let Some(state) = self.ifbs.remove(&ino) {
            match delete_ifb(&state.record) {
                Ok(()) => info!(device = IFB_NAME, netns = ino, "deleted faultd's ifb"),
                Err(e) => warn!(
                    device = IFB_NAME,
                    netns = ino,
                    error = %error_chain(&e),
                    "deleting faultd's ifb"
                ),
            }
        }
        if let Err(e) = self.persist() {
            warn!(error = %error_chain(&e), "writing qdisc records");
        }
    }
}

/// What an ingress set-up changed: the ifb it created, and per device the
/// redirect filter (and the clsact qdisc, when faultd added that too).
impl QdiscManager {
    /// What the ingress set-ups changed, for GetCapabilities.
    pub(super) fn ifb_changes(&self) -> Vec<QdiscChange> {
        self.ifbs.values().flat_map(ifb_changes).collect()
    }
}

fn ifb_changes(ifb: &IfbState) -> Vec<QdiscChange> {
    let faults: Vec<String> = ifb.faults.iter().cloned().collect();
    let change = |device: String, replaced: &str, installed: String| QdiscChange {
        netns_ino: ifb.record.netns_ino,
        device,
        replaced: replaced.to_owned(),
        installed,
        faults: faults.clone(),
    };
    let mut out = vec![change(
        ifb.record.ifname.clone(),
        "nothing (device created by faultd)",
        format!("ifb with fq {}", handle_text(OUR_HANDLE)),
    )];
    for index in &ifb.record.filters {
        let name = ifb
            .device_names
            .get(index)
            .cloned()
            .unwrap_or_else(|| format!("ifindex {index}"));
        let ours = ifb.record.clsacts.contains(index);
        out.push(change(
            name,
            if ours {
                "nothing (no clsact qdisc)"
            } else {
                "nothing (its clsact qdisc is shared)"
            },
            format!(
                "{}ingress filter bpf pref {FILTER_PREF} handle {FILTER_HANDLE:#x} ({}, mirred to \
                 {})",
                if ours { "clsact ffff: with " } else { "" },
                faultd_common::names::TC_MARK_PROG,
                ifb.record.ifname
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn ifb_record(netns_ino: u64, clsacts: Vec<i32>) -> IfbRecord {
        IfbRecord {
            netns_ino,
            netns_dev: 4,
            pid_hint: 1,
            ifindex: faultd_common::IFB_IFINDEX as i32,
            ifname: IFB_NAME.into(),
            filters: vec![1, 2],
            clsacts,
        }
    }

    /// GetCapabilities lists the ifb and, per device, the filter, saying
    /// whether faultd added the clsact qdisc too.
    #[test]
    fn ingress_set_up_is_listed_per_device() {
        let ifb = IfbState {
            record: ifb_record(7, vec![1]),
            device_names: BTreeMap::from([(1, "lo".into()), (2, "eth0".into())]),
            faults: BTreeSet::from(["in".into()]),
        };
        let changes = ifb_changes(&ifb);
        let rows: Vec<(&str, &str)> = changes
            .iter()
            .map(|c| (c.device.as_str(), c.installed.as_str()))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("fdifb0", "ifb with fq fa17:"),
                (
                    "lo",
                    "clsact ffff: with ingress filter bpf pref 64023 handle 0xfa17 \
                     (faultd_tc_mark, mirred to fdifb0)"
                ),
                (
                    "eth0",
                    "ingress filter bpf pref 64023 handle 0xfa17 (faultd_tc_mark, mirred to fdifb0)"
                ),
            ]
        );
        assert!(
            changes
                .iter()
                .all(|c| c.netns_ino == 7 && c.faults == ["in"])
        );
    }
}
