//! An in-memory datapath for unit tests: it records what the kernel would
//! hold, encoded as the eBPF datapath writes it, so tests can assert on
//! exactly that.

use std::{collections::HashMap, path::Path};

use faultd_common::{CgroupRules, FaultCounters, SysRules};

use super::{Datapath, DatapathError, Entry, Hook, KernelObject, Table, encode};
use crate::backend::{LsmScope, SysBackends};

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
    /// Makes the next rules write fail, to test rollback.
    pub fail_next_set_rules: bool,
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
            fail_next_set_rules: false,
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
    fn set_rules(&mut self, cgroup_id: u64, entry: &Entry) -> Result<(), DatapathError> {
        if std::mem::take(&mut self.fail_next_set_rules) {
            return Err(DatapathError::Missing {
                kind: "map",
                name: "FAULTD_RULES (injected failure)",
            });
        }
        match encode::entry(entry) {
            encode::TableRules::Net(r) => {
                self.rules.insert(cgroup_id, r);
            }
            encode::TableRules::Sys(r) => {
                self.sys_rules.insert(cgroup_id, r);
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
