//! The agent's view of the kernel: rules entries to write and cgroups to
//! attach programs to.
//!
//! `Datapath` is the seam between the fault manager's bookkeeping, which is
//! unit-tested without root, and the eBPF implementation
//! (`ebpf::EbpfDatapath`). The manager speaks in domain faults ([`Entry`],
//! [`Hook`]); how they are laid out for the kernel is [`encode`]'s job.

use std::path::Path;

use faultd_common::FaultCounters;

use crate::{backend::SysBackends, fault::FaultKind};

pub mod btf;
pub mod ebpf;
pub mod encode;
#[cfg(test)]
pub mod fake;
pub mod hook;
pub mod jitter;

pub use hook::Hook;

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
    /// The directory at the resolved path is no longer the cgroup that was
    /// resolved (renamed, removed or replaced in between): nothing attached.
    #[error(
        "the cgroup at {path} changed after it was resolved (it was cgroup id {resolved},          the directory there now is {found}); nothing was attached, retry the request"
    )]
    CgroupChanged {
        path: String,
        resolved: u64,
        found: String,
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

/// The two rules maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `FAULTD_RULES`: packets (cgroup_skb, and the tc ingress program).
    Net,
    /// `FAULTD_SYS`: syscalls (cgroup socket hooks, BPF LSM, kprobes).
    Sys,
}

impl Table {
    pub const ALL: [Table; 2] = [Table::Net, Table::Sys];

    /// The table that holds `kind`'s rules.
    pub fn of(kind: &FaultKind) -> Self {
        match kind {
            FaultKind::Loss(_) | FaultKind::Latency(_) | FaultKind::Bandwidth(_) => Self::Net,
            FaultKind::Syscall(_) => Self::Sys,
        }
    }
}

/// One fault as a rules entry carries it: the domain fault, its counter
/// slot and its deadline on the kernel's clock (CLOCK_BOOTTIME ns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub kind: FaultKind,
    pub slot: u32,
    pub deadline_ns: u64,
}

/// One cgroup's entry in one rules table: its own faults and those of its
/// targeted ancestors, in order, at most `MAX_RULES_PER_CGROUP`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub table: Table,
    pub rules: Vec<Rule>,
}

pub trait Datapath: Send + 'static {
    /// Writes (creates or replaces) one cgroup's entry in its table.
    fn set_rules(&mut self, cgroup_id: u64, entry: &Entry) -> Result<(), DatapathError>;
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
