//! The agent's fq installations on the targets' devices, reference-counted
//! by fault and recorded before every change.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use tracing::{info, warn};

use super::{
    OUR_HANDLE, Plan, QdiscChange, QdiscError, Record,
    netlink::{IFF_UP, Link, Rtnl, TC_H_ROOT, handle_text},
    ops::{install_fq, install_mq, restore_device},
    plan,
    records::{IfbRecord, RecordsFile, restore_record, write_records},
};
use crate::{error::error_chain, netns::target_netns};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct DevKey {
    netns_ino: u64,
    ifindex: i32,
}

#[derive(Debug)]
pub(super) struct DevState {
    record: Record,
    /// False when the device had a usable fq: nothing to restore.
    ours: bool,
    faults: BTreeSet<String>,
}

#[derive(Debug)]
pub(super) struct IfbState {
    pub(super) record: IfbRecord,
    /// Names of the devices in `record.filters`, for GetCapabilities.
    pub(super) device_names: BTreeMap<i32, String>,
    pub(super) faults: BTreeSet<String>,
}

/// The agent's fq installations, reference-counted by fault.
#[derive(Debug)]
pub struct QdiscManager {
    pub(super) records: PathBuf,
    pub(super) devices: BTreeMap<DevKey, DevState>,
    pub(super) by_fault: BTreeMap<String, BTreeSet<DevKey>>,
    /// ifb devices by namespace inode.
    pub(super) ifbs: BTreeMap<u64, IfbState>,
    pub(super) ifb_by_fault: BTreeMap<String, u64>,
}

impl QdiscManager {
    pub fn new(records: PathBuf) -> Self {
        Self {
            records,
            devices: BTreeMap::new(),
            by_fault: BTreeMap::new(),
            ifbs: BTreeMap::new(),
            ifb_by_fault: BTreeMap::new(),
        }
    }

    /// Makes every up device of the target's network namespace hold an fq
    /// that fault `fault_id` shares, for departure times up to `horizon`
    /// ahead. On error nothing changed for this fault.
    pub fn acquire(
        &mut self,
        fault_id: &str,
        cgroup: &Path,
        horizon: Duration,
    ) -> Result<(), QdiscError> {
        let ns = target_netns(cgroup)?;
        let mut rtnl = Rtnl::open_in(&ns.file).map_err(|source| QdiscError::Netlink {
            device: "(netns)".into(),
            source,
        })?;
        let links = rtnl.links().map_err(|source| QdiscError::Netlink {
            device: "(links)".into(),
            source,
        })?;
        let qdiscs = rtnl.qdiscs().map_err(|source| QdiscError::Netlink {
            device: "(qdiscs)".into(),
            source,
        })?;
        let up: Vec<&Link> = links.iter().filter(|l| l.flags & IFF_UP != 0).collect();
        let mut plans = Vec::new();
        for link in &up {
            let Some(root) = qdiscs
                .iter()
                .find(|q| q.ifindex == link.ifindex && q.parent == TC_H_ROOT)
            else {
                // A device with no root qdisc listed (noop): nothing queues.
                continue;
            };
            let key = DevKey {
                netns_ino: ns.ino,
                ifindex: link.ifindex,
            };
            let p = if self.devices.contains_key(&key) {
                Plan::Share
            } else {
                plan(root, link.num_tx_queues, horizon)
            };
            if let Plan::Refuse(reason) = p {
                return Err(QdiscError::Refused {
                    device: link.name.clone(),
                    reason,
                });
            }
            plans.push((key, (*link).clone(), root.clone(), p));
        }
        // Persist before changing anything.
        let mut fresh = Vec::new();
        for (key, link, root, p) in &plans {
            if matches!(
                p,
                Plan::InstallFq | Plan::InstallMq { .. } | Plan::UseExisting
            ) && !self.devices.contains_key(key)
            {
                let record = Record {
                    netns_ino: ns.ino,
                    netns_dev: ns.dev,
                    pid_hint: ns.pid,
                    ifindex: link.ifindex,
                    ifname: link.name.clone(),
                    replaced_kind: root.kind.clone(),
                    replaced_handle: root.handle,
                    installed_kind: match p {
                        Plan::InstallMq { .. } => "mq".into(),
                        _ => "fq".into(),
                    },
                };
                let ours = !matches!(p, Plan::UseExisting);
                self.devices.insert(
                    *key,
                    DevState {
                        record,
                        ours,
                        faults: BTreeSet::new(),
                    },
                );
                fresh.push((*key, p.clone()));
            }
        }
        if !fresh.is_empty()
            && let Err(e) = self.persist()
        {
            for (key, _) in &fresh {
                self.devices.remove(key);
            }
            return Err(e);
        }
        let mut installed = Vec::new();
        for (key, p) in &fresh {
            let name = self.devices[key].record.ifname.clone();
            let result = match p {
                Plan::InstallFq => install_fq(&mut rtnl, key.ifindex),
                Plan::InstallMq { queues } => install_mq(&mut rtnl, key.ifindex, *queues),
                _ => Ok(()),
            };
            match result {
                Ok(()) => {
                    if matches!(p, Plan::InstallFq | Plan::InstallMq { .. }) {
                        let r = &self.devices[key].record;
                        warn!(
                            device = %name,
                            netns = ns.ino,
                            replaced = %format!("{} {}", r.replaced_kind, handle_text(r.replaced_handle)),
                            installed = %r.installed_kind,
                            "replaced the kernel's default root qdisc with faultd's fq for latency/bandwidth faults; restored when the last such fault ends"
                        );
                    }
                    installed.push(*key);
                }
                Err(source) => {
                    // Undo this call's installations, newest first.
                    for k in installed.iter().rev() {
                        let _ = restore_device(&mut rtnl, k.ifindex);
                    }
                    for (k, _) in &fresh {
                        self.devices.remove(k);
                    }
                    let _ = self.persist();
                    return Err(QdiscError::Netlink {
                        device: name,
                        source,
                    });
                }
            }
        }
        let keys: BTreeSet<DevKey> = plans.iter().map(|(k, ..)| *k).collect();
        for key in &keys {
            if let Some(d) = self.devices.get_mut(key) {
                d.faults.insert(fault_id.to_owned());
            }
        }
        // An update that moved the fault: drop what it no longer uses.
        let old = self.by_fault.insert(fault_id.to_owned(), keys.clone());
        if let Some(old) = old {
            for key in old.difference(&keys) {
                self.unref(fault_id, *key);
            }
        }
        Ok(())
    }

    /// Drops `fault_id`'s references; devices nobody uses any more get
    /// their original qdisc back. Errors are logged: a device that vanished
    /// took its qdisc with it.
    pub fn release(&mut self, fault_id: &str) {
        let Some(keys) = self.by_fault.remove(fault_id) else {
            return;
        };
        for key in keys {
            self.unref(fault_id, key);
        }
    }

    pub fn changes(&self) -> Vec<QdiscChange> {
        self.devices
            .values()
            .map(|d| QdiscChange {
                netns_ino: d.record.netns_ino,
                device: d.record.ifname.clone(),
                replaced: if d.ours {
                    format!(
                        "{} {}{}",
                        d.record.replaced_kind,
                        handle_text(d.record.replaced_handle),
                        if d.record.replaced_handle == 0 {
                            " (kernel default)"
                        } else {
                            ""
                        }
                    )
                } else {
                    "nothing (an existing fq is used)".into()
                },
                installed: if d.ours {
                    format!("{} {}", d.record.installed_kind, handle_text(OUR_HANDLE))
                } else {
                    "nothing".into()
                },
                faults: d.faults.iter().cloned().collect(),
            })
            .chain(self.ifb_changes())
            .collect()
    }

    fn unref(&mut self, fault_id: &str, key: DevKey) {
        let Some(d) = self.devices.get_mut(&key) else {
            return;
        };
        d.faults.remove(fault_id);
        if !d.faults.is_empty() {
            return;
        }
        let Some(d) = self.devices.remove(&key) else {
            return;
        };
        if d.ours {
            match restore_record(&d.record) {
                Ok(()) => info!(
                    device = %d.record.ifname,
                    netns = d.record.netns_ino,
                    restored = %format!("{} {}", d.record.replaced_kind, handle_text(d.record.replaced_handle)),
                    "removed faultd's fq; the kernel's default root qdisc is back"
                ),
                Err(e) => warn!(
                    device = %d.record.ifname,
                    error = %error_chain(&e),
                    "restoring the root qdisc"
                ),
            }
        }
        if let Err(e) = self.persist() {
            warn!(error = %error_chain(&e), "writing qdisc records");
        }
    }

    pub(super) fn persist(&self) -> Result<(), QdiscError> {
        let file = RecordsFile {
            devices: self
                .devices
                .values()
                .filter(|d| d.ours)
                .map(|d| d.record.clone())
                .collect(),
            ifbs: self.ifbs.values().map(|i| i.record.clone()).collect(),
        };
        write_records(&self.records, &file)
    }
}
