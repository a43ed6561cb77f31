//! The agent's view of the kernel: maps to write and cgroups to attach to.
//!
//! `Datapath` is the seam between the fault manager's bookkeeping, which is
//! unit-tested without root, and the eBPF implementation (`ebpf::EbpfDatapath`).

use std::{collections::HashMap, path::Path};

use faultd_common::{CgroupRules, FaultCounters, MAX_RULES_PER_CGROUP, SysRules};

use crate::fault::{Hook, KernelRule, LsmScope, SysBackends, Table};

pub mod ebpf;

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("eBPF object has no {kind} named {name}")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("map {map}: {op}: {source}")]
    Map {
        map: &'static str,
        op: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("opening cgroup {path}: {source}")]
    OpenCgroup {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The target's devices cannot take the fq qdisc a latency or
    /// bandwidth fault needs, or changing them failed.
    #[error(transparent)]
    Qdisc(#[from] crate::qdisc::QdiscError),
    #[error("attaching the tc ingress program to {device} (netns {netns}): {source}")]
    AttachTc {
        device: String,
        netns: u64,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("ingress latency: {0}")]
    Ingress(String),
    #[error("attaching the {hook} program to cgroup {path}: {source}")]
    Attach {
        hook: Hook,
        path: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
}

/// A loaded kernel object, for `bpftool prog|map show id N`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelObject {
    pub name: String,
    pub id: u32,
}

/// One cgroup's entry in one of the rules maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableRules {
    Net(CgroupRules),
    Sys(SysRules),
}

impl TableRules {
    pub fn empty(table: Table) -> Self {
        match table {
            Table::Net => Self::Net(CgroupRules::default()),
            Table::Sys => Self::Sys(SysRules::default()),
        }
    }

    pub fn table(&self) -> Table {
        match self {
            Self::Net(_) => Table::Net,
            Self::Sys(_) => Table::Sys,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Self::Net(r) => r.count as usize,
            Self::Sys(r) => r.count as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a rule of this table's kind; others and overflow are ignored
    /// (the manager checks counts and kinds before building entries).
    pub fn push(&mut self, rule: KernelRule) {
        match (self, rule) {
            (Self::Net(r), KernelRule::Net(rule)) if (r.count as usize) < MAX_RULES_PER_CGROUP => {
                r.rules[r.count as usize] = rule;
                r.count += 1;
            }
            (Self::Sys(r), KernelRule::Sys(rule)) if (r.count as usize) < MAX_RULES_PER_CGROUP => {
                r.rules[r.count as usize] = rule;
                r.count += 1;
            }
            _ => {}
        }
    }
}

pub trait Datapath: Send + 'static {
    /// Writes (creates or replaces) one cgroup's entry in the rules' table.
    fn set_rules(&mut self, cgroup_id: u64, rules: &TableRules) -> Result<(), DatapathError>;
    fn remove_rules(&mut self, table: Table, cgroup_id: u64) -> Result<(), DatapathError>;
    /// Bit n set: some cgroup at level n has rules.
    fn set_levels(&mut self, mask: u64) -> Result<(), DatapathError>;
    /// Attaches the `hook` program to the cgroup at `path` (absolute).
    fn attach(&mut self, cgroup_id: u64, path: &Path, hook: Hook) -> Result<(), DatapathError>;
    fn detach(&mut self, cgroup_id: u64, hook: Hook) -> Result<(), DatapathError>;
    fn reset_counters(&mut self, slot: u32) -> Result<(), DatapathError>;
    /// Summed over CPUs.
    fn counters(&self, slot: u32) -> Result<FaultCounters, DatapathError>;
    fn programs(&self) -> Vec<KernelObject>;
    fn maps(&self) -> Vec<KernelObject>;
    /// Which syscall backends loaded; fixed for the datapath's life.
    fn sys_backends(&self) -> SysBackends;
    /// Makes sure fq holds the packets of the cgroup at `path` (absolute),
    /// shared by fault `fault_id`, for departure times up to `horizon`
    /// ahead (see `qdisc`).
    fn acquire_fq(
        &mut self,
        fault_id: &str,
        path: &Path,
        horizon: std::time::Duration,
    ) -> Result<(), DatapathError> {
        let _ = (fault_id, path, horizon);
        Ok(())
    }
    /// Drops `fault_id`'s use of fq; devices nobody uses get their qdisc back.
    fn release_fq(&mut self, fault_id: &str) {
        let _ = fault_id;
    }
    /// Makes packets delivered to the cgroup at `path` (absolute) go
    /// through the tc ingress program and faultd's ifb in its network
    /// namespace, shared by fault `fault_id` (ingress latency). On error
    /// nothing changed.
    fn acquire_ingress(&mut self, fault_id: &str, path: &Path) -> Result<(), DatapathError> {
        let _ = (fault_id, path);
        Ok(())
    }
    /// Drops `fault_id`'s use of ingress delay; the last user of a
    /// namespace detaches the tc programs and deletes the ifb.
    fn release_ingress(&mut self, fault_id: &str) {
        let _ = fault_id;
    }
    /// What the agent changed on devices, for GetCapabilities.
    fn qdisc_changes(&self) -> Vec<crate::qdisc::QdiscChange> {
        Vec::new()
    }
}

/// An in-memory datapath for unit tests: it records what the kernel would
/// hold, so tests can assert on exactly that.
#[derive(Debug)]
pub struct FakeDatapath {
    pub rules: HashMap<u64, CgroupRules>,
    pub sys_rules: HashMap<u64, SysRules>,
    pub levels: u64,
    pub links: HashMap<(u64, Hook), String>,
    pub counters: HashMap<u32, FaultCounters>,
    /// Every attach and detach, in order, as "attach egress 42".
    pub log: Vec<String>,
    /// Makes the next attach fail, to test rollback.
    pub fail_next_attach: bool,
    pub backends: SysBackends,
    /// Fault ids holding fq, with the cgroup path.
    pub fq_users: HashMap<String, String>,
    /// Makes the next acquire_fq fail as a refused qdisc.
    pub refuse_next_fq: bool,
    /// Fault ids using ingress delay, with the cgroup path.
    pub ingress_users: HashMap<String, String>,
    /// Makes the next acquire_ingress fail as on a kernel without the
    /// tc program.
    pub refuse_next_ingress: bool,
}

impl Default for FakeDatapath {
    /// Every backend but kprobes, LSM programs node-wide (as on a 5.x kernel
    /// with BPF LSM).
    fn default() -> Self {
        Self {
            rules: HashMap::new(),
            sys_rules: HashMap::new(),
            levels: 0,
            links: HashMap::new(),
            counters: HashMap::new(),
            log: Vec::new(),
            fail_next_attach: false,
            fq_users: HashMap::new(),
            refuse_next_fq: false,
            ingress_users: HashMap::new(),
            refuse_next_ingress: false,
            backends: SysBackends {
                cgroup_hooks: true,
                lsm: Some(LsmScope::Node),
                kprobe: false,
                path_filter: true,
            },
        }
    }
}

impl FakeDatapath {
    pub fn with_backends(backends: SysBackends) -> Self {
        Self {
            backends,
            ..Self::default()
        }
    }
}

impl Datapath for FakeDatapath {
    fn set_rules(&mut self, cgroup_id: u64, rules: &TableRules) -> Result<(), DatapathError> {
        match rules {
            TableRules::Net(r) => {
                self.rules.insert(cgroup_id, *r);
            }
            TableRules::Sys(r) => {
                self.sys_rules.insert(cgroup_id, *r);
            }
        }
        Ok(())
    }

    fn remove_rules(&mut self, table: Table, cgroup_id: u64) -> Result<(), DatapathError> {
        match table {
            Table::Net => self.rules.remove(&cgroup_id).map(|_| ()),
            Table::Sys => self.sys_rules.remove(&cgroup_id).map(|_| ()),
        };
        Ok(())
    }

    fn set_levels(&mut self, mask: u64) -> Result<(), DatapathError> {
        self.levels = mask;
        Ok(())
    }

    fn attach(&mut self, cgroup_id: u64, path: &Path, hook: Hook) -> Result<(), DatapathError> {
        if std::mem::take(&mut self.fail_next_attach) {
            return Err(DatapathError::OpenCgroup {
                path: path.display().to_string(),
                source: std::io::Error::from_raw_os_error(libc::EPERM),
            });
        }
        let previous = self
            .links
            .insert((cgroup_id, hook), path.display().to_string());
        assert!(previous.is_none(), "double attach of {hook} on {cgroup_id}");
        self.log.push(format!("attach {hook} {cgroup_id}"));
        Ok(())
    }

    fn detach(&mut self, cgroup_id: u64, hook: Hook) -> Result<(), DatapathError> {
        let previous = self.links.remove(&(cgroup_id, hook));
        assert!(
            previous.is_some(),
            "detach of {hook} on {cgroup_id} that is not attached"
        );
        self.log.push(format!("detach {hook} {cgroup_id}"));
        Ok(())
    }

    fn reset_counters(&mut self, slot: u32) -> Result<(), DatapathError> {
        self.counters.insert(slot, FaultCounters::default());
        Ok(())
    }

    fn counters(&self, slot: u32) -> Result<FaultCounters, DatapathError> {
        Ok(self.counters.get(&slot).copied().unwrap_or_default())
    }

    fn programs(&self) -> Vec<KernelObject> {
        Vec::new()
    }

    fn maps(&self) -> Vec<KernelObject> {
        Vec::new()
    }

    fn sys_backends(&self) -> SysBackends {
        self.backends
    }

    fn acquire_fq(
        &mut self,
        fault_id: &str,
        path: &Path,
        _horizon: std::time::Duration,
    ) -> Result<(), DatapathError> {
        if std::mem::take(&mut self.refuse_next_fq) {
            return Err(DatapathError::Qdisc(crate::qdisc::QdiscError::Refused {
                device: "eth0".into(),
                reason: "its root qdisc is htb 1:".into(),
            }));
        }
        self.fq_users
            .insert(fault_id.to_owned(), path.display().to_string());
        Ok(())
    }

    fn release_fq(&mut self, fault_id: &str) {
        self.fq_users.remove(fault_id);
    }

    fn acquire_ingress(&mut self, fault_id: &str, path: &Path) -> Result<(), DatapathError> {
        if std::mem::take(&mut self.refuse_next_ingress) {
            return Err(DatapathError::Ingress(
                "the tc ingress program is not loaded".into(),
            ));
        }
        self.ingress_users
            .insert(fault_id.to_owned(), path.display().to_string());
        Ok(())
    }

    fn release_ingress(&mut self, fault_id: &str) {
        self.ingress_users.remove(fault_id);
    }
}
