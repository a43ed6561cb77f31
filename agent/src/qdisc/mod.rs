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

pub mod netlink;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use netlink::{
    CLSACT_HANDLE, FqOptions, IFF_UP, Link, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NetlinkError,
    Qdisc, Rtnl, TC_H_CLSACT, TC_H_ROOT, TC_PARENT_EGRESS, TC_PARENT_INGRESS, handle_text,
};

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
    #[error("network namespace of {what}: {source}")]
    Netns {
        what: String,
        #[source]
        source: io::Error,
    },
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

/// One device faultd changed, as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Inode and device of the namespace's nsfs file: its identity.
    pub netns_ino: u64,
    pub netns_dev: u64,
    /// A process that was in the namespace, to find it again.
    pub pid_hint: u32,
    pub ifindex: i32,
    pub ifname: String,
    /// What was there: kind and handle ("noqueue", 0).
    pub replaced_kind: String,
    pub replaced_handle: u32,
    /// "fq" or "mq".
    pub installed_kind: String,
}

/// An ifb device faultd created for ingress latency, as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfbRecord {
    pub netns_ino: u64,
    pub netns_dev: u64,
    pub pid_hint: u32,
    pub ifindex: i32,
    pub ifname: String,
    /// Devices that may hold faultd's redirect filter (written before it
    /// is added).
    #[serde(default)]
    pub filters: Vec<i32>,
    /// Devices whose clsact qdisc faultd created for that filter.
    #[serde(default)]
    pub clsacts: Vec<i32>,
}

/// Preference and handle of faultd's redirect filter on each device
/// (`tc filter show dev X ingress` shows "pref 64023 bpf ... handle 0xfa17
/// faultd_tc_mark").
pub const FILTER_PREF: u16 = 0xfa17;
pub const FILTER_HANDLE: u32 = 0xfa17;

#[derive(Debug, Default, Serialize, Deserialize)]
struct RecordsFile {
    devices: Vec<Record>,
    /// Absent in files written before ingress latency existed.
    #[serde(default)]
    ifbs: Vec<IfbRecord>,
}

/// The name of faultd's ifb in every namespace (`ip link` shows it).
pub const IFB_NAME: &str = "fdifb0";

#[derive(Debug)]
struct IfbState {
    record: IfbRecord,
    /// Names of the devices in `record.filters`, for GetCapabilities.
    device_names: BTreeMap<i32, String>,
    faults: BTreeSet<String>,
}

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct DevKey {
    netns_ino: u64,
    ifindex: i32,
}

#[derive(Debug)]
struct DevState {
    record: Record,
    /// False when the device had a usable fq: nothing to restore.
    ours: bool,
    faults: BTreeSet<String>,
}

/// A device change, for GetCapabilities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QdiscChange {
    pub netns_ino: u64,
    pub device: String,
    pub replaced: String,
    pub installed: String,
    pub faults: Vec<String>,
}

/// The agent's fq installations, reference-counted by fault.
#[derive(Debug)]
pub struct QdiscManager {
    records: PathBuf,
    devices: BTreeMap<DevKey, DevState>,
    by_fault: BTreeMap<String, BTreeSet<DevKey>>,
    /// ifb devices by namespace inode.
    ifbs: BTreeMap<u64, IfbState>,
    ifb_by_fault: BTreeMap<String, u64>,
}

/// A namespace, opened.
struct Netns {
    file: File,
    ino: u64,
    dev: u64,
    pid: u32,
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
                warn!(error = %crate::api::error_chain(&undo), "undoing a partial ifb set-up");
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
                    error = %crate::api::error_chain(&e),
                    "deleting faultd's ifb"
                ),
            }
        }
        if let Err(e) = self.persist() {
            warn!(error = %crate::api::error_chain(&e), "writing qdisc records");
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
            .chain(self.ifbs.values().flat_map(ifb_changes))
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
                    error = %crate::api::error_chain(&e),
                    "restoring the root qdisc"
                ),
            }
        }
        if let Err(e) = self.persist() {
            warn!(error = %crate::api::error_chain(&e), "writing qdisc records");
        }
    }

    fn persist(&self) -> Result<(), QdiscError> {
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

fn write_records(path: &Path, file: &RecordsFile) -> Result<(), QdiscError> {
    let err = |source| QdiscError::Records {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let text = serde_json::to_vec_pretty(file).map_err(|e| err(io::Error::other(e)))?;
    // Write-then-rename so a crash never leaves a half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// What an ingress set-up changed: the ifb it created, and per device the
/// redirect filter (and the clsact qdisc, when faultd added that too).
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

fn install_fq(rtnl: &mut Rtnl, ifindex: i32) -> Result<(), NetlinkError> {
    rtnl.new_qdisc(
        ifindex,
        TC_H_ROOT,
        OUR_HANDLE,
        "fq",
        Some(&our_fq_options()),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
}

fn install_mq(rtnl: &mut Rtnl, ifindex: i32, queues: u32) -> Result<(), NetlinkError> {
    rtnl.new_qdisc(
        ifindex,
        TC_H_ROOT,
        OUR_HANDLE,
        "mq",
        None,
        NLM_F_CREATE | NLM_F_REPLACE,
    )?;
    // mq's classes are its tx queues, minor 1..=n (net/sched/sch_mq.c,
    // `mq_queue_get`); each child gets its own fq.
    for q in 1..=queues.min(0xffff) {
        let r = rtnl.new_qdisc(
            ifindex,
            OUR_HANDLE | q,
            0,
            "fq",
            Some(&our_fq_options()),
            NLM_F_CREATE | NLM_F_REPLACE,
        );
        if let Err(e) = r {
            let _ = restore_device(rtnl, ifindex);
            return Err(e);
        }
    }
    Ok(())
}

/// Deletes our root qdisc on `ifindex` if it is still ours.
fn restore_device(rtnl: &mut Rtnl, ifindex: i32) -> Result<bool, NetlinkError> {
    let ours = rtnl
        .qdiscs()?
        .into_iter()
        .any(|q| q.ifindex == ifindex && q.parent == TC_H_ROOT && q.handle == OUR_HANDLE);
    if !ours {
        return Ok(false);
    }
    rtnl.del_qdisc(ifindex, TC_H_ROOT, OUR_HANDLE)?;
    Ok(true)
}

/// Deletes what a recorded ifb set-up added: faultd's redirect filters
/// (found by preference, handle and kind), the clsact qdiscs faultd created
/// when nothing else uses them, and the ifb if the namespace still has a
/// device of that index and name (so nobody else's device is ever deleted).
fn delete_ifb(r: &IfbRecord) -> Result<(), QdiscError> {
    let Some(ns) = find_netns(r.netns_ino, r.netns_dev, r.pid_hint) else {
        return Ok(());
    };
    let nl = |device: String| move |source| QdiscError::Netlink { device, source };
    let mut rtnl = Rtnl::open_in(&ns).map_err(nl(r.ifname.clone()))?;
    let links = rtnl.links().map_err(nl(r.ifname.clone()))?;
    let name_of = |index: i32| {
        links
            .iter()
            .find(|l| l.ifindex == index)
            .map_or_else(|| format!("ifindex {index}"), |l| l.name.clone())
    };
    for &index in &r.filters {
        if !links.iter().any(|l| l.ifindex == index) {
            continue;
        }
        let ours = rtnl
            .filters(index, TC_PARENT_INGRESS)
            .map_err(nl(name_of(index)))?
            .into_iter()
            .any(|(pref, handle, kind)| {
                pref == FILTER_PREF && handle == FILTER_HANDLE && kind == "bpf"
            });
        if ours {
            rtnl.del_filter(index, FILTER_PREF, FILTER_HANDLE)
                .map_err(nl(name_of(index)))?;
        }
    }
    let qdiscs = if r.clsacts.is_empty() {
        Vec::new()
    } else {
        rtnl.qdiscs().map_err(nl(r.ifname.clone()))?
    };
    for &index in &r.clsacts {
        let has_clsact = qdiscs
            .iter()
            .any(|q| q.ifindex == index && q.parent == TC_H_CLSACT && q.kind == "clsact");
        if !has_clsact {
            continue;
        }
        let mut used = false;
        for parent in [TC_PARENT_INGRESS, TC_PARENT_EGRESS] {
            used |= !rtnl
                .filters(index, parent)
                .map_err(nl(name_of(index)))?
                .is_empty();
        }
        if used {
            warn!(
                device = %name_of(index),
                "keeping the clsact qdisc faultd created: filters were added to it since"
            );
        } else {
            rtnl.del_qdisc(index, TC_H_CLSACT, CLSACT_HANDLE)
                .map_err(nl(name_of(index)))?;
        }
    }
    if links
        .iter()
        .any(|l| l.ifindex == r.ifindex && l.name == r.ifname)
    {
        rtnl.del_link(r.ifindex).map_err(nl(r.ifname.clone()))?;
    }
    Ok(())
}

fn restore_record(r: &Record) -> Result<(), QdiscError> {
    let Some(ns) = find_netns(r.netns_ino, r.netns_dev, r.pid_hint) else {
        // The namespace is gone, and its devices with it.
        return Ok(());
    };
    let mut rtnl = Rtnl::open_in(&ns).map_err(|source| QdiscError::Netlink {
        device: r.ifname.clone(),
        source,
    })?;
    restore_device(&mut rtnl, r.ifindex)
        .map(|_| ())
        .map_err(|source| QdiscError::Netlink {
            device: r.ifname.clone(),
            source,
        })
}

/// Runs `undo` on each record, logging each outcome; returns how many
/// succeeded and the records that did not (kept for the next start).
fn undo_each<R>(
    records: Vec<R>,
    undo: impl Fn(&R) -> Result<(), QdiscError>,
    where_: impl Fn(&R) -> (&str, u64),
    done: &str,
    failed: &str,
) -> (usize, Vec<R>) {
    let mut ok = 0;
    let mut kept = Vec::new();
    for r in records {
        let (device, netns) = where_(&r);
        match undo(&r) {
            Ok(()) => {
                ok += 1;
                warn!(device, netns, "{done}");
            }
            Err(e) => {
                warn!(device, netns, error = %crate::api::error_chain(&e), "{failed}");
                kept.push(r);
            }
        }
    }
    (ok, kept)
}

/// Restores every device a previous agent recorded (it died before its
/// faults ended). Returns the number of devices restored.
pub fn restore_leftovers(records: &Path) -> Result<usize, QdiscError> {
    let text = match std::fs::read(records) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(QdiscError::Records {
                path: records.display().to_string(),
                source,
            });
        }
    };
    let file: RecordsFile = serde_json::from_slice(&text).map_err(|e| QdiscError::Records {
        path: records.display().to_string(),
        source: io::Error::other(e),
    })?;
    let (ifbs_done, kept_ifbs) = undo_each(
        file.ifbs,
        delete_ifb,
        |r| (&r.ifname, r.netns_ino),
        "deleted the ifb a previous faultd created",
        "deleting a previous faultd's ifb; kept in the records",
    );
    let (devices_done, kept) = undo_each(
        file.devices,
        restore_record,
        |r| (&r.ifname, r.netns_ino),
        "restored the root qdisc a previous faultd replaced",
        "restoring a previous faultd's qdisc; kept in the records",
    );
    let restored = ifbs_done + devices_done;
    write_records(
        records,
        &RecordsFile {
            devices: kept,
            ifbs: kept_ifbs,
        },
    )?;
    Ok(restored)
}

/// The namespace of the target's processes: the first process found in
/// the cgroup or below it; the agent's own when the subtree is empty
/// (a host workload about to start).
fn target_netns(cgroup: &Path) -> Result<Netns, QdiscError> {
    let pid = first_pid(cgroup, 4096);
    let path = match pid {
        Some(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        None => PathBuf::from("/proc/self/ns/net"),
    };
    let err = |source| QdiscError::Netns {
        what: path.display().to_string(),
        source,
    };
    let file = File::open(&path).map_err(err)?;
    let meta = file.metadata().map_err(err)?;
    Ok(Netns {
        file,
        ino: meta.ino(),
        dev: meta.dev(),
        pid: pid.unwrap_or_else(std::process::id),
    })
}

/// A pid in `cgroup` or a descendant, breadth first, looking at no more
/// than `budget` cgroups.
fn first_pid(cgroup: &Path, budget: usize) -> Option<u32> {
    let mut queue = std::collections::VecDeque::from([cgroup.to_path_buf()]);
    let mut seen = 0;
    while let Some(dir) = queue.pop_front() {
        seen += 1;
        if seen > budget {
            return None;
        }
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs"))
            && let Some(pid) = procs.lines().find_map(|l| l.trim().parse().ok())
        {
            return Some(pid);
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            queue.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    None
}

/// Finds a recorded namespace again: through the recorded pid if it is
/// still there, else any process or /run/netns mount with that identity.
fn find_netns(ino: u64, dev: u64, pid_hint: u32) -> Option<File> {
    let matches = |path: &Path| -> Option<File> {
        let f = File::open(path).ok()?;
        let m = f.metadata().ok()?;
        (m.ino() == ino && m.dev() == dev).then_some(f)
    };
    if let Some(f) = matches(&PathBuf::from(format!("/proc/{pid_hint}/ns/net"))) {
        return Some(f);
    }
    if let Some(f) = matches(Path::new("/proc/self/ns/net")) {
        return Some(f);
    }
    let procs = std::fs::read_dir("/proc").ok()?;
    for e in procs.flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        if let Some(f) = matches(&e.path().join("ns/net")) {
            return Some(f);
        }
    }
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Some(f) = matches(&e.path()) {
            return Some(f);
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qdiscs.json");
        let r = Record {
            netns_ino: 4026531840,
            netns_dev: 4,
            pid_hint: 1,
            ifindex: 1,
            ifname: "lo".into(),
            replaced_kind: "noqueue".into(),
            replaced_handle: 0,
            installed_kind: "fq".into(),
        };
        let ifb = ifb_record(4026531840, vec![2]);
        write_records(
            &path,
            &RecordsFile {
                devices: vec![r.clone()],
                ifbs: vec![ifb.clone()],
            },
        )
        .expect("write");
        let back: RecordsFile =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("parse");
        assert_eq!(back.devices, vec![r]);
        assert_eq!(back.ifbs, vec![ifb]);
    }

    /// An ifb in namespace `netns_ino` with filters on devices 1 and 2 and
    /// clsact qdiscs added on `clsacts`.
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

    #[test]
    fn records_without_ifbs_still_parse() {
        // Files written before ingress latency existed.
        let back: RecordsFile = serde_json::from_str(r#"{"devices":[]}"#).expect("parse");
        assert!(back.devices.is_empty() && back.ifbs.is_empty());
    }
}
