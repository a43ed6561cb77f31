//! The real datapath: faultd's eBPF object loaded with aya.
//!
//! `load` finds out what the kernel accepts, `attach` holds the links, `tc`
//! runs ingress delay; this module writes the maps and answers the
//! manager.

use std::{collections::HashMap, path::Path};

use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray, PerCpuValues},
    programs::{Program, tc::SchedClassifierLink},
    util::nr_cpus,
};
use faultd_common::{
    CgroupRules, FaultCounters, LEVELS_INDEX, RuleState, SysRules, names, offsets,
};
use tracing::{debug, info, warn};

use self::{
    attach::Link,
    load::{
        KPROBE_PMU, SYS_PROGRAMS, fill_dist_tables, kprobe_diagnosis, load_kprobes, load_lsm,
        load_object, map_err, skb_program, take_map,
    },
};
use super::{Datapath, DatapathError, Entry, Hook, KernelObject, Table, encode};
use crate::{
    backend::{LsmScope, SysBackends},
    config::LsmAttach,
    error::error_chain,
    qdisc::{QdiscChange, QdiscManager},
};

mod attach;
mod load;
mod tc;

pub struct EbpfDatapath {
    ebpf: Ebpf,
    rules: BpfHashMap<MapData, u64, CgroupRules>,
    sys_rules: BpfHashMap<MapData, u64, SysRules>,
    /// Why the syscall programs could not be loaded, if they could not.
    sys_unavailable: Option<String>,
    /// Why the BPF LSM programs could not be loaded, if they could not.
    lsm_unavailable: Option<String>,
    /// How the loaded LSM programs attach, if they loaded.
    lsm_scope: Option<LsmScope>,
    /// Why the `lsm_cgroup` flavour is not used, if it is not.
    lsm_cgroup_unavailable: Option<String>,
    /// Why the kprobe programs cannot fail calls, if they cannot.
    kprobe_unavailable: Option<String>,
    /// Why path-prefix filters cannot be served (no usable BTF layout).
    path_filter_unavailable: Option<String>,
    counters: PerCpuArray<MapData, FaultCounters>,
    levels: Array<MapData, u64>,
    /// Owned bpf links. Dropping one closes its fd and detaches it; none is
    /// pinned, so they all go when the process does (kernel/bpf/syscall.c,
    /// `bpf_link_release`).
    links: HashMap<(u64, Hook), Link>,
    nr_cpus: usize,
    map_ids: Vec<KernelObject>,
    /// Per-fault latency and bandwidth state, reset with the counters.
    rule_state: Array<MapData, RuleState>,
    /// fq installations for latency and bandwidth faults.
    qdiscs: Option<QdiscManager>,
    /// The tc programs of ingress faults: None until the first such fault
    /// loads them (verifying them costs about as much as the egress
    /// program, which the agent's start should not pay on nodes that never
    /// delay ingress), then loaded or why not.
    tc: Option<Result<(), String>>,
    /// TCX links of the tc ingress program, by network namespace inode.
    /// bpf links: they detach when the agent dies.
    tc_links: HashMap<u64, Vec<SchedClassifierLink>>,
    // Keeps the aya-log ring buffer alive: dropping it closes the map fd the
    // programs reference.
    _logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

impl std::fmt::Debug for EbpfDatapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbpfDatapath")
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

impl EbpfDatapath {
    /// Loads the programs and maps, sized for `max_faults`. Attaches nothing.
    pub fn load(max_faults: u32, lsm_attach: LsmAttach) -> Result<Self, DatapathError> {
        // Offsets for the path-prefix walk; zeros (the object's defaults)
        // make every path-filtered rule a non-match, and the agent refuses
        // such faults up front.
        let path_offsets = super::btf::kernel_file_offsets();
        let o = path_offsets.as_ref().ok();
        let globals = [
            (offsets::FILE_DENTRY, o.map_or(0, |o| o.file_dentry)),
            (offsets::DENTRY_PARENT, o.map_or(0, |o| o.dentry_parent)),
            (offsets::DENTRY_INODE, o.map_or(0, |o| o.dentry_inode)),
            (offsets::INODE_INO, o.map_or(0, |o| o.inode_ino)),
            (offsets::INODE_SB, o.map_or(0, |o| o.inode_sb)),
            (offsets::SB_DEV, o.map_or(0, |o| o.sb_dev)),
        ];
        let mut ebpf = load_object(max_faults, &globals, true)?;
        let path_filter_unavailable = path_offsets.err();
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(e) => {
                // Kernel-side logging is for debugging; faults work without it.
                warn!(error = %e, "eBPF log forwarding unavailable");
                None
            }
        };
        for name in [names::EGRESS_PROG, names::INGRESS_PROG] {
            skb_program(&mut ebpf, name)?
                .load()
                .map_err(|e| DatapathError::Program {
                    name,
                    source: Box::new(e),
                })?;
        }
        // The syscall programs call bpf_set_retval, which older kernels
        // refuse; packet faults must keep working there.
        let mut sys_unavailable = None;
        for name in SYS_PROGRAMS {
            let loaded = match ebpf.program_mut(name) {
                Some(Program::CgroupSockAddr(p)) => p.load(),
                Some(Program::CgroupSock(p)) => p.load(),
                _ => {
                    return Err(DatapathError::Missing {
                        kind: "program",
                        name,
                    });
                }
            };
            if let Err(e) = loaded {
                let why = format!("loading {name}: {}", error_chain(&e));
                warn!(reason = %why, "syscall faults unavailable");
                sys_unavailable = Some(why);
                break;
            }
        }
        let (lsm_scope, lsm_cgroup_unavailable, lsm_unavailable) = load_lsm(&mut ebpf, lsm_attach);
        if let Some(why) = &lsm_unavailable {
            info!(reason = %why, "file syscall faults unavailable (BPF LSM)");
        }
        // aya attaches kprobes through the kprobe PMU (perf_event_open), so
        // they go with the agent's fds; without it (no CONFIG_KPROBES) there
        // is nothing to attach to.
        let kprobe_unavailable = if Path::new(KPROBE_PMU).exists() {
            load_kprobes(&mut ebpf)
                .err()
                .map(|why| kprobe_diagnosis(why, max_faults, &globals))
        } else {
            Some(format!(
                "no kprobe PMU ({KPROBE_PMU}): the kernel is built without CONFIG_KPROBES"
            ))
        };
        if let Some(why) = &kprobe_unavailable {
            info!(reason = %why, "kprobe syscall backend unavailable");
        }
        let map_ids = [
            names::RULES_MAP,
            names::COUNTERS_MAP,
            names::LEVELS_MAP,
            names::SYS_RULES_MAP,
        ]
        .into_iter()
        .filter_map(|name| {
            let data = match ebpf.map(name)? {
                Map::HashMap(d) | Map::PerCpuArray(d) | Map::Array(d) => d,
                _ => return None,
            };
            Some(KernelObject {
                name: name.to_owned(),
                id: data.info().ok()?.id(),
            })
        })
        .collect();
        let rules = take_map(&mut ebpf, names::RULES_MAP, BpfHashMap::try_from)?;
        let counters = take_map(&mut ebpf, names::COUNTERS_MAP, PerCpuArray::try_from)?;
        let sys_rules = take_map(&mut ebpf, names::SYS_RULES_MAP, BpfHashMap::try_from)?;
        let levels = take_map(&mut ebpf, names::LEVELS_MAP, Array::try_from)?;
        let rule_state = take_map(&mut ebpf, names::RULE_STATE_MAP, Array::try_from)?;
        fill_dist_tables(&mut ebpf)?;
        let nr_cpus = nr_cpus().map_err(|(_, source)| DatapathError::Map {
            map: names::COUNTERS_MAP,
            op: "counting possible CPUs",
            source: Box::new(aya::maps::MapError::IoError(source)),
        })?;
        Ok(Self {
            ebpf,
            rules,
            sys_rules,
            sys_unavailable,
            lsm_unavailable,
            lsm_scope,
            lsm_cgroup_unavailable,
            kprobe_unavailable,
            path_filter_unavailable,
            counters,
            levels,
            rule_state,
            qdiscs: None,
            tc: None,
            tc_links: HashMap::new(),
            links: HashMap::new(),
            nr_cpus: nr_cpus.get() as usize,
            map_ids,
            _logger: logger,
        })
    }

    /// Latency and bandwidth faults manage fq qdiscs through `qdiscs`.
    pub fn with_qdiscs(mut self, qdiscs: QdiscManager) -> Self {
        self.qdiscs = Some(qdiscs);
        self
    }

    /// Why syscall faults cannot be served here, if they cannot.
    pub fn syscall_unavailable(&self) -> Option<&str> {
        self.sys_unavailable.as_deref()
    }

    /// Why file syscall faults (BPF LSM) cannot be served here, if they
    /// cannot. Decided by loading the programs: the LSM list alone is not
    /// enough, lockdown or a missing CONFIG_BPF_LSM refuse the load.
    pub fn lsm_unavailable(&self) -> Option<&str> {
        self.lsm_unavailable.as_deref()
    }

    /// Why the per-cgroup LSM flavour is not used, if it is not.
    pub fn lsm_cgroup_unavailable(&self) -> Option<&str> {
        self.lsm_cgroup_unavailable.as_deref()
    }

    /// Why the kprobe backend cannot fail calls here, if it cannot.
    pub fn kprobe_unavailable(&self) -> Option<&str> {
        self.kprobe_unavailable.as_deref()
    }

    /// Why path-prefix filters cannot be served here, if they cannot.
    pub fn path_filter_unavailable(&self) -> Option<&str> {
        self.path_filter_unavailable.as_deref()
    }

    /// Drains kernel-side log records into `log` (and so into tracing).
    pub fn flush_logs(&mut self) {
        if let Some(logger) = self._logger.as_mut() {
            logger.flush();
        }
    }
}

impl Datapath for EbpfDatapath {
    fn set_rules(&mut self, cgroup_id: u64, entry: &Entry) -> Result<(), DatapathError> {
        // BPF_ANY: the kernel replaces the value atomically for readers
        // (kernel/bpf/hashtab.c, htab_map_update_elem swaps the element under
        // RCU), so a packet sees either the old or the new rules, never a mix.
        match encode::entry(entry) {
            encode::TableRules::Net(r) => self
                .rules
                .insert(&cgroup_id, &r, 0)
                .map_err(map_err(names::RULES_MAP, "update")),
            encode::TableRules::Sys(r) => self
                .sys_rules
                .insert(&cgroup_id, &r, 0)
                .map_err(map_err(names::SYS_RULES_MAP, "update")),
        }
    }

    fn remove_rules(&mut self, table: Table, cgroup_id: u64) -> Result<(), DatapathError> {
        let (result, map) = match table {
            Table::Net => (self.rules.remove(&cgroup_id), names::RULES_MAP),
            Table::Sys => (self.sys_rules.remove(&cgroup_id), names::SYS_RULES_MAP),
        };
        match result {
            Err(aya::maps::MapError::ElementNotFound) | Ok(()) => Ok(()),
            Err(e) => Err(map_err(map, "delete")(e)),
        }
    }

    fn set_levels(&mut self, mask: u64) -> Result<(), DatapathError> {
        self.levels
            .set(LEVELS_INDEX, &mask, 0)
            .map_err(map_err(names::LEVELS_MAP, "update"))
    }

    fn attach(&mut self, cgroup_id: u64, path: &Path, hook: Hook) -> Result<(), DatapathError> {
        let link = attach::attach(&mut self.ebpf, self.lsm_scope, cgroup_id, path, hook)?;
        debug!(cgroup_id, %hook, path = %path.display(), "attached");
        self.links.insert((cgroup_id, hook), link);
        Ok(())
    }

    fn detach(&mut self, cgroup_id: u64, hook: Hook) -> Result<(), DatapathError> {
        // Dropping the link closes its only fd, which detaches it.
        if self.links.remove(&(cgroup_id, hook)).is_some() {
            debug!(cgroup_id, %hook, "detached");
        }
        Ok(())
    }

    fn reset_counters(&mut self, slot: u32) -> Result<(), DatapathError> {
        let zeros =
            PerCpuValues::try_from(vec![FaultCounters::default(); self.nr_cpus]).map_err(|e| {
                map_err(names::COUNTERS_MAP, "building per-CPU zeros")(
                    aya::maps::MapError::IoError(e),
                )
            })?;
        self.counters
            .set(slot, zeros, 0)
            .map_err(map_err(names::COUNTERS_MAP, "reset"))?;
        self.rule_state
            .set(slot, &RuleState::default(), 0)
            .map_err(map_err(names::RULE_STATE_MAP, "reset"))
    }

    fn counters(&self, slot: u32) -> Result<FaultCounters, DatapathError> {
        let values = self
            .counters
            .get(&slot, 0)
            .map_err(map_err(names::COUNTERS_MAP, "lookup"))?;
        Ok(values
            .iter()
            .fold(FaultCounters::default(), |acc, c| FaultCounters {
                matched: acc.matched.wrapping_add(c.matched),
                dropped: acc.dropped.wrapping_add(c.dropped),
            }))
    }

    fn programs(&self) -> Vec<KernelObject> {
        names::ALL_PROGS
            .into_iter()
            .filter_map(|name| {
                let info = self.ebpf.program(name)?.info().ok()?;
                Some(KernelObject {
                    name: name.to_owned(),
                    id: info.id(),
                })
            })
            .collect()
    }

    fn maps(&self) -> Vec<KernelObject> {
        self.map_ids.clone()
    }

    fn sys_backends(&self) -> SysBackends {
        SysBackends {
            cgroup_hooks: self.sys_unavailable.is_none(),
            lsm: self.lsm_scope,
            kprobe: self.kprobe_unavailable.is_none(),
            path_filter: self.path_filter_unavailable.is_none(),
        }
    }

    fn acquire_fq(
        &mut self,
        fault_id: &str,
        path: &Path,
        horizon: std::time::Duration,
    ) -> Result<(), DatapathError> {
        match self.qdiscs.as_mut() {
            Some(q) => Ok(q.acquire(fault_id, path, horizon)?),
            None => Ok(()),
        }
    }

    fn release_fq(&mut self, fault_id: &str) {
        if let Some(q) = self.qdiscs.as_mut() {
            q.release(fault_id);
        }
    }

    fn acquire_ingress(&mut self, fault_id: &str, path: &Path) -> Result<(), DatapathError> {
        self.acquire_tc_ingress(fault_id, path)
    }

    fn release_ingress(&mut self, fault_id: &str) {
        self.release_tc_ingress(fault_id);
    }

    fn qdisc_changes(&self) -> Vec<QdiscChange> {
        self.qdiscs
            .as_ref()
            .map(QdiscManager::changes)
            .unwrap_or_default()
    }
}
