//! The fault manager: the agent's record of active faults and the one place
//! that turns it into kernel state.
//!
//! Model: every targeted cgroup gets one entry in the rules map holding its
//! own faults and those of every targeted ancestor (a fault covers the whole
//! subtree), so the kernel resolves a packet with one lookup of the deepest
//! targeted cgroup. Programs are attached only at the topmost targets of each
//! direction: every packet in a targeted subtree runs our program exactly
//! once, and cgroups outside every targeted subtree never run it.
//!
//! Every change is transactional: the model is changed, the kernel is synced
//! for the affected subtrees, and on any failure both are put back, so a
//! failed request leaves nothing half-applied.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    net::IpAddr,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use faultd_common::{FaultCounters, MAX_CGROUP_LEVEL, MAX_RULES_PER_CGROUP};
use tracing::{info, warn};

use crate::{
    backend::SysBackends,
    caps::{Capabilities, Unsupported},
    datapath::{Datapath, DatapathError, Entry, Hook, KernelObject, Rule, Table, hook::uses},
    fault::{FaultKind, FaultSpec},
    target::{CgroupFs, ResolvedCgroup, TargetError, TargetPattern, TargetSpec},
};

/// How many ended faults `GetFault` still answers for.
const RECENT_LIMIT: usize = 512;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub max_duration: Duration,
    pub max_faults: u32,
    /// Longest lease ttl a caller may ask for.
    pub max_lease_ttl: Duration,
    /// The subtree (relative to the mount) this agent may target; "" for
    /// the whole tree.
    pub scope: String,
    /// Cgroup paths (relative to the mount) that no fault may cover.
    pub protected: Vec<String>,
    /// The agent's own cgroup, always protected.
    pub self_cgroup: Option<String>,
    pub allow_protected: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultState {
    Active,
    /// Past its deadline: inert in the kernel, removed by the next sweep.
    Expired,
    Reverted,
}

/// Why a fault ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// Its own duration ran out.
    Deadline,
    /// Its lease was not renewed within the ttl.
    LeaseLapsed,
    /// RevertFault, RevertLease or RevertAll.
    Reverted,
    /// The agent stopped (SIGTERM) and reverted everything.
    Shutdown,
}

impl EndReason {
    pub fn name(self) -> &'static str {
        match self {
            Self::Deadline => "deadline",
            Self::LeaseLapsed => "lease lapsed",
            Self::Reverted => "reverted",
            Self::Shutdown => "agent shutdown",
        }
    }
}

/// A lease a fault is held under, as requested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSpec {
    pub id: String,
    pub ttl: Duration,
}

/// A fault's lease as reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    pub id: String,
    pub expires_at: SystemTime,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultView {
    pub spec: FaultSpec,
    pub target: ResolvedCgroup,
    pub state: FaultState,
    pub applied_at: SystemTime,
    pub deadline: SystemTime,
    pub counters: FaultCounters,
    /// The kernel mechanism serving it (`SysBackend::name`, or "cgroup_skb").
    pub backend: &'static str,
    pub lease: Option<LeaseView>,
    /// Set once it ended.
    pub end_reason: Option<EndReason>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("target {target} is protected: {reason}")]
    Protected { target: String, reason: String },
    #[error("{0}")]
    Capacity(String),
    /// The node's kernel lacks what the fault needs.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    #[error("{0}")]
    Precondition(String),
    #[error("no fault with id {0:?}")]
    NotFound(String),
    #[error("no lease {0:?} on this agent: no fault was applied under it, or all were reverted")]
    LeaseNotFound(String),
    #[error(
        "lease {id:?} lapsed at {at}: it was not renewed within its ttl, so its {faults} \
         fault(s) ended and cannot be renewed; apply them again"
    )]
    LeaseLapsed {
        id: String,
        at: String,
        faults: usize,
    },
    #[error("kernel: {0}")]
    Kernel(#[from] DatapathError),
    #[error("the agent is shutting down and reverting every fault")]
    ShuttingDown,
}

/// Resolves targets; the real one is `CgroupFs`.
pub trait Resolver: Send + 'static {
    fn resolve(&self, target: &TargetSpec) -> Result<ResolvedCgroup, TargetError>;
    /// Absolute path of a cgroup given relative to the mount.
    fn absolute(&self, relative: &str) -> PathBuf;
    /// The targets `pattern` matches at or below `scope`, each with its
    /// cgroup.
    fn list(
        &self,
        pattern: &TargetPattern,
        scope: &str,
    ) -> Result<Vec<(TargetSpec, ResolvedCgroup)>, TargetError>;
    /// The addresses peers reach the cgroup's processes by: those of their
    /// network namespace (the agent's own when the cgroup has none).
    fn addresses(&self, cgroup: &ResolvedCgroup) -> Result<Vec<IpAddr>, TargetError>;
}

impl Resolver for CgroupFs {
    fn resolve(&self, target: &TargetSpec) -> Result<ResolvedCgroup, TargetError> {
        CgroupFs::resolve(self, target)
    }

    fn absolute(&self, relative: &str) -> PathBuf {
        self.mount().join(relative)
    }

    fn list(
        &self,
        pattern: &TargetPattern,
        scope: &str,
    ) -> Result<Vec<(TargetSpec, ResolvedCgroup)>, TargetError> {
        CgroupFs::list(self, pattern, scope)
    }

    fn addresses(&self, cgroup: &ResolvedCgroup) -> Result<Vec<IpAddr>, TargetError> {
        crate::qdisc::netlink::target_addresses(&self.absolute(&cgroup.path)).map_err(|e| {
            TargetError::Addresses {
                cgroup: cgroup.path.clone(),
                detail: e.to_string(),
            }
        })
    }
}

/// The kernel clock the programs compare deadlines with, and wall time for
/// display.
pub trait Clock: Send + 'static {
    /// CLOCK_BOOTTIME, as `bpf_ktime_get_boot_ns` reads it.
    fn boottime_ns(&self) -> u64;
    fn now(&self) -> SystemTime;
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn boottime_ns(&self) -> u64 {
        // CLOCK_BOOTTIME keeps counting through suspend, like the kernel-side
        // check, so a suspended node does not stretch a fault.
        match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
            Ok(ts) => {
                u64::try_from(ts.tv_sec()).unwrap_or(0) * 1_000_000_000
                    + u64::try_from(ts.tv_nsec()).unwrap_or(0)
            }
            // Cannot fail on Linux for this clock id; 0 only makes deadlines
            // later in the agent's bookkeeping, never in the kernel.
            Err(_) => 0,
        }
    }

    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

#[derive(Clone, Debug)]
struct Active {
    spec: FaultSpec,
    target: ResolvedCgroup,
    slot: u32,
    applied_at: SystemTime,
    /// Its own deadline, from its duration.
    own_deadline_ns: u64,
    own_deadline_wall: SystemTime,
    /// The deadline in the kernel: the own one, or the lease's expiry when
    /// that comes first.
    deadline_ns: u64,
    deadline_wall: SystemTime,
    lease: Option<String>,
}

#[derive(Clone, Debug)]
struct TargetNode {
    id: u64,
    level: u32,
    /// Ids of the faults targeting exactly this cgroup.
    faults: BTreeSet<String>,
}

#[derive(Debug)]
pub struct Manager<D, R, C> {
    policy: Policy,
    /// What this kernel offers, checked before anything is changed.
    caps: Capabilities,
    dp: D,
    resolver: R,
    clock: C,
    faults: HashMap<String, Active>,
    targets: BTreeMap<String, TargetNode>,
    deadlines: BTreeSet<(u64, String)>,
    /// What the rules maps hold, by cgroup path and table.
    kernel_rules: HashMap<(String, Table), (u64, Entry)>,
    /// Attached programs, by cgroup path and hook, with the cgroup id.
    links: HashMap<(String, Hook), u64>,
    level_counts: [u32; MAX_CGROUP_LEVEL as usize],
    levels_written: u64,
    free_slots: Vec<u32>,
    next_slot: u32,
    recent: VecDeque<FaultView>,
    /// Faults using each node-wide hook (kprobes, node-wide LSM programs).
    node_wide_users: HashMap<Hook, usize>,
    /// The syscall backends the datapath loaded.
    backends: SysBackends,
    /// Leases and the faults held under them.
    leases: HashMap<String, lease::Lease>,
    /// Leases that lapsed recently, so a late renewal hears why it fails.
    lapsed: VecDeque<lease::Lapsed>,
}

impl<D: Datapath, R: Resolver, C: Clock> Manager<D, R, C> {
    pub fn new(policy: Policy, dp: D, resolver: R, clock: C, caps: Capabilities) -> Self {
        let backends = dp.sys_backends();
        Self {
            policy,
            caps,
            dp,
            resolver,
            clock,
            faults: HashMap::new(),
            targets: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            kernel_rules: HashMap::new(),
            links: HashMap::new(),
            level_counts: [0; MAX_CGROUP_LEVEL as usize],
            levels_written: 0,
            free_slots: Vec::new(),
            next_slot: 0,
            recent: VecDeque::new(),
            node_wide_users: HashMap::new(),
            backends,
            leases: HashMap::new(),
            lapsed: VecDeque::new(),
        }
    }

    /// The syscall backends this node offers.
    pub fn backends(&self) -> SysBackends {
        self.backends
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn datapath(&self) -> &D {
        &self.dp
    }

    pub fn datapath_mut(&mut self) -> &mut D {
        &mut self.dp
    }

    pub fn len(&self) -> usize {
        self.faults.len()
    }

    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }

    /// Creates or updates the fault `spec.id`. Returns its view and whether
    /// it existed. On error nothing changed, in the agent or the kernel.
    pub fn apply(&mut self, spec: FaultSpec) -> Result<(FaultView, bool), ManagerError> {
        self.apply_leased(spec, None)
    }

    /// `apply`, the fault held under `lease` when given: its kernel deadline
    /// is then min(its own, the lease's expiry), and the lease is renewed
    /// to now + ttl.
    pub fn apply_leased(
        &mut self,
        spec: FaultSpec,
        lease: Option<LeaseSpec>,
    ) -> Result<(FaultView, bool), ManagerError> {
        if let Some(l) = &lease {
            self.check_lease_ttl(l.ttl)?;
        }
        if spec.duration > self.policy.max_duration {
            return Err(ManagerError::Invalid {
                field: "spec.duration",
                reason: format!(
                    "{} exceeds the agent's limits.max_duration of {}",
                    crate::duration::format(spec.duration),
                    crate::duration::format(self.policy.max_duration)
                ),
            });
        }
        self.caps.check(&spec.kind, &self.backends)?;
        let target = self.resolver.resolve(&spec.target)?;
        if target.level >= MAX_CGROUP_LEVEL {
            return Err(ManagerError::Precondition(format!(
                "target {} is at cgroup level {}; faultd supports levels below {MAX_CGROUP_LEVEL}",
                target.path, target.level
            )));
        }
        self.check_protected(&target)?;
        let existing = self.faults.contains_key(&spec.id);
        if !existing && self.faults.len() >= self.policy.max_faults as usize {
            return Err(ManagerError::Capacity(format!(
                "the agent already holds {} faults (limits.max_faults)",
                self.faults.len()
            )));
        }
        if let Some(node) = self.targets.get(&target.path)
            && node.id != target.id
        {
            return Err(ManagerError::Precondition(format!(
                "cgroup {} was recreated (id {} -> {}) while faults target the old one; \
                 revert those first",
                target.path, node.id, target.id
            )));
        }

        let now_ns = self.clock.boottime_ns();
        let now = self.clock.now();
        let duration_ns = u64::try_from(spec.duration.as_nanos()).unwrap_or(u64::MAX);
        let own = (
            now_ns.saturating_add(duration_ns),
            now + Duration::from_nanos(duration_ns),
        );
        // The lease's new expiry; the deadline the kernel enforces is the
        // earlier of the two.
        let lease_expiry = lease.as_ref().map(|l| {
            let ttl_ns = u64::try_from(l.ttl.as_nanos()).unwrap_or(u64::MAX);
            (now_ns.saturating_add(ttl_ns), now + l.ttl)
        });
        let (deadline_ns, deadline_wall) = match lease_expiry {
            Some(e) if e.0 < own.0 => e,
            _ => own,
        };
        let (slot, fresh_slot) = match self.faults.get(&spec.id) {
            Some(old) => (old.slot, false),
            None => (self.alloc_slot(), true),
        };
        let new = Active {
            spec,
            target,
            slot,
            applied_at: now,
            own_deadline_ns: own.0,
            own_deadline_wall: own.1,
            deadline_ns,
            deadline_wall,
            lease: lease.as_ref().map(|l| l.id.clone()),
        };
        let id = new.spec.id.clone();
        let new_path = new.target.path.clone();
        // fq before the rule: no packet is stamped before a qdisc honours it.
        let fq_horizon = new.spec.kind.fq_horizon();
        let had_fq = self
            .faults
            .get(&id)
            .and_then(|a| a.spec.kind.fq_horizon())
            .is_some();
        if let Some(horizon) = fq_horizon {
            let abs = self.resolver.absolute(&new_path);
            if let Err(e) = self.dp.acquire_fq(&id, &abs, horizon) {
                if fresh_slot {
                    self.free_slots.push(slot);
                }
                return Err(e.into());
            }
        }
        // Likewise the ifb and tc ingress programs before an ingress rule.
        let ingress = new.spec.kind.ingress_delay();
        let had_ingress = self
            .faults
            .get(&id)
            .is_some_and(|a| a.spec.kind.ingress_delay());
        if ingress {
            let abs = self.resolver.absolute(&new_path);
            if let Err(e) = self.dp.acquire_ingress(&id, &abs) {
                if fq_horizon.is_some() && !had_fq {
                    self.dp.release_fq(&id);
                }
                if fresh_slot {
                    self.free_slots.push(slot);
                }
                return Err(e.into());
            }
        }

        let old = self.remove_from_model(&id);
        self.insert_into_model(new);
        let mut affected = self.subtree(&new_path);
        if let Some(old) = &old {
            affected.extend(self.subtree(&old.target.path));
        }
        let undo = |this: &mut Self| {
            if fq_horizon.is_some() && !had_fq {
                this.dp.release_fq(&id);
            }
            if ingress && !had_ingress {
                this.dp.release_ingress(&id);
            }
            this.remove_from_model(&id);
            if let Some(old) = old.clone() {
                this.insert_into_model(old);
            }
            if fresh_slot {
                this.free_slots.push(slot);
            }
        };

        if let Err(e) = self.check_rule_counts(&affected) {
            undo(self);
            return Err(e);
        }
        let result = if fresh_slot {
            self.dp.reset_counters(slot).map_err(ManagerError::from)
        } else {
            Ok(())
        };
        if let Err(e) = result.and_then(|()| self.sync(&affected).map_err(ManagerError::from)) {
            undo(self);
            if let Err(restore) = self.sync(&affected) {
                warn!(fault_id = %id, error = %restore, "restoring kernel state after a failed apply");
            }
            return Err(e);
        }
        if fq_horizon.is_none() && had_fq {
            self.dp.release_fq(&id);
        }
        if !ingress && had_ingress {
            self.dp.release_ingress(&id);
        }
        let old_lease = old.as_ref().and_then(|o| o.lease.clone());
        let new_lease = lease.map(|l| l.id).zip(lease_expiry);
        self.lease_after_apply(&id, old_lease, new_lease);
        let view = self
            .view_active(&id)
            .ok_or_else(|| ManagerError::NotFound(id.clone()))?;
        info!(
            fault_id = %id,
            target = %view.spec.target,
            cgroup = %view.target.path,
            kind = view.spec.kind.name(),
            updated = old.is_some(),
            "fault applied"
        );
        Ok((view, old.is_some()))
    }

    /// Removes a fault. `Ok(None)` when there is no such fault.
    pub fn revert(&mut self, id: &str) -> Result<Option<FaultView>, ManagerError> {
        self.end(id, FaultState::Reverted, EndReason::Reverted)
    }

    /// Removes every fault; `reason` is Reverted for RevertAll, Shutdown
    /// when the agent stops.
    pub fn revert_all(&mut self, reason: EndReason) -> Result<u32, ManagerError> {
        let ids: Vec<String> = self.faults.keys().cloned().collect();
        let mut n = 0;
        for id in ids {
            if self.end(&id, FaultState::Reverted, reason)?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Removes every fault whose deadline has passed. The kernel already
    /// ignores them; this frees their slots, entries and links.
    pub fn expire_due(&mut self) -> Result<Vec<FaultView>, ManagerError> {
        let now = self.clock.boottime_ns();
        let due: Vec<String> = self
            .deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|(_, id)| id.clone())
            .collect();
        let mut ended = Vec::with_capacity(due.len());
        for id in due {
            // A deadline set by the lease that came before the fault's own:
            // nobody renewed the lease in time.
            let reason = match self.faults.get(&id) {
                Some(a) if a.lease.is_some() && a.deadline_ns < a.own_deadline_ns => {
                    EndReason::LeaseLapsed
                }
                _ => EndReason::Deadline,
            };
            if let Some(view) = self.end(&id, FaultState::Expired, reason)? {
                ended.push(view);
            }
        }
        Ok(ended)
    }

    /// Time until the next deadline, if any fault is active.
    pub fn next_deadline_in(&self) -> Option<Duration> {
        let (deadline, _) = self.deadlines.first()?;
        Some(Duration::from_nanos(
            deadline.saturating_sub(self.clock.boottime_ns()),
        ))
    }

    pub fn get(&self, id: &str) -> Result<FaultView, ManagerError> {
        self.view_active(id)
            .or_else(|| self.recent.iter().rev().find(|v| v.spec.id == id).cloned())
            .ok_or_else(|| ManagerError::NotFound(id.to_owned()))
    }

    /// Active faults, sorted by id.
    pub fn list(&self) -> Vec<FaultView> {
        let mut ids: Vec<&String> = self.faults.keys().collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|id| self.view_active(id))
            .collect()
    }

    pub fn kernel_programs(&self) -> Vec<KernelObject> {
        self.dp.programs()
    }

    pub fn kernel_maps(&self) -> Vec<KernelObject> {
        self.dp.maps()
    }

    /// The targets `patterns` match that this agent may fault, each once in
    /// path order, and how many matches were left out as protected. Only
    /// the agent's cgroup.scope is searched.
    pub fn list_targets(
        &self,
        patterns: &[TargetPattern],
    ) -> Result<(Vec<(TargetSpec, ResolvedCgroup)>, u32), ManagerError> {
        let mut found = BTreeMap::new();
        let mut excluded = 0;
        for pattern in patterns {
            for (target, cgroup) in self.resolver.list(pattern, &self.policy.scope)? {
                if self.check_protected(&cgroup).is_err() {
                    excluded += 1;
                    continue;
                }
                found.entry(cgroup.path.clone()).or_insert((target, cgroup));
            }
        }
        Ok((found.into_values().collect(), excluded))
    }

    /// The addresses a listed target is reached by (ListTargets with
    /// addresses: the coordinator's partitions filter on them).
    pub fn addresses(&self, cgroup: &ResolvedCgroup) -> Result<Vec<IpAddr>, ManagerError> {
        Ok(self.resolver.addresses(cgroup)?)
    }

    /// Number of attached programs (cgroup, hook), for diagnostics and tests.
    pub fn attachment_count(&self) -> usize {
        self.links.len()
    }

    fn end(
        &mut self,
        id: &str,
        state: FaultState,
        reason: EndReason,
    ) -> Result<Option<FaultView>, ManagerError> {
        let Some(mut view) = self.view_active(id) else {
            return Ok(None);
        };
        let Some(old) = self.remove_from_model(id) else {
            return Ok(None);
        };
        let affected = self.subtree(&old.target.path);
        if let Err(e) = self.sync(&affected) {
            self.insert_into_model(old);
            if let Err(restore) = self.sync(&affected) {
                warn!(fault_id = %id, error = %restore, "restoring kernel state after a failed revert");
            }
            return Err(e.into());
        }
        // After the rule is gone: nothing is stamped any more.
        self.dp.release_fq(id);
        self.dp.release_ingress(id);
        self.free_slots.push(old.slot);
        self.lease_after_end(id, old.lease.as_deref(), reason);
        view.state = state;
        view.end_reason = Some(reason);
        info!(
            fault_id = %id,
            target = %view.spec.target,
            cgroup = %view.target.path,
            matched = view.counters.matched,
            dropped = view.counters.dropped,
            state = ?state,
            reason = reason.name(),
            "fault ended"
        );
        if self.recent.len() == RECENT_LIMIT {
            self.recent.pop_front();
        }
        self.recent.push_back(view.clone());
        Ok(Some(view))
    }

    fn view_active(&self, id: &str) -> Option<FaultView> {
        let a = self.faults.get(id)?;
        let counters = self.dp.counters(a.slot).unwrap_or_else(|e| {
            warn!(fault_id = %id, error = %e, "reading counters");
            FaultCounters::default()
        });
        let expired = self.clock.boottime_ns() >= a.deadline_ns;
        let lease = a.lease.as_ref().map(|id| LeaseView {
            id: id.clone(),
            expires_at: self
                .leases
                .get(id)
                .map_or(a.deadline_wall, |l| l.expiry_wall),
        });
        Some(FaultView {
            spec: a.spec.clone(),
            target: a.target.clone(),
            state: if expired {
                FaultState::Expired
            } else {
                FaultState::Active
            },
            applied_at: a.applied_at,
            deadline: a.deadline_wall,
            counters,
            backend: self.backend_name(&a.spec.kind),
            lease,
            // Inert in the kernel already; the sweep will record why.
            end_reason: expired.then(|| {
                if a.lease.is_some() && a.deadline_ns < a.own_deadline_ns {
                    EndReason::LeaseLapsed
                } else {
                    EndReason::Deadline
                }
            }),
        })
    }

    fn backend_name(&self, kind: &FaultKind) -> &'static str {
        match kind {
            FaultKind::Loss(_) => "cgroup_skb",
            // Ingress delay: the cgroup programs tag the target's sockets,
            // the tc programs pick and redirect their packets.
            kind if kind.ingress_delay() => "cgroup_skb+tc_ingress+ifb+fq",
            FaultKind::Latency(_) | FaultKind::Bandwidth(_) => "cgroup_skb+fq",
            FaultKind::Syscall(s) => self.backends.pick(s).map_or("none", |b| b.name()),
        }
    }

    /// Whether `a` needs the program on `hook` and that program is attached
    /// once for the node.
    fn uses_node_wide(&self, a: &Active, hook: Hook) -> bool {
        hook.is_node_wide(self.backends.lsm) && uses(&a.spec.kind, hook, &self.backends)
    }

    fn check_protected(&self, target: &ResolvedCgroup) -> Result<(), ManagerError> {
        let deny = |reason: String| ManagerError::Protected {
            target: if target.path.is_empty() {
                "/".into()
            } else {
                target.path.clone()
            },
            reason,
        };
        // Not lifted by allow_protected: the scope says which part of the
        // tree is this agent's at all.
        let scope = self.policy.scope.trim_matches('/');
        let in_scope = ResolvedCgroup {
            path: scope.to_owned(),
            id: 0,
            level: 0,
        }
        .is_ancestor_or_self_of(&target.path);
        if !in_scope {
            return Err(deny(format!(
                "it is outside this agent's cgroup.scope ({scope})"
            )));
        }
        if self.policy.allow_protected {
            return Ok(());
        }
        if target.path.is_empty() {
            return Err(deny(
                "the root cgroup holds every process on the node".into(),
            ));
        }
        if let Some(own) = &self.policy.self_cgroup
            && target.is_ancestor_or_self_of(own)
        {
            return Err(deny(format!("it contains the agent itself ({own})")));
        }
        for p in &self.policy.protected {
            let p = p.trim_matches('/');
            if target.is_ancestor_or_self_of(p) {
                return Err(deny(format!("it contains {p} (safety.protected_cgroups)")));
            }
        }
        Ok(())
    }

    fn alloc_slot(&mut self) -> u32 {
        self.free_slots.pop().unwrap_or_else(|| {
            let slot = self.next_slot;
            self.next_slot += 1;
            slot
        })
    }

    fn insert_into_model(&mut self, a: Active) {
        let node = self
            .targets
            .entry(a.target.path.clone())
            .or_insert_with(|| {
                self.level_counts[a.target.level as usize] += 1;
                TargetNode {
                    id: a.target.id,
                    level: a.target.level,
                    faults: BTreeSet::new(),
                }
            });
        node.faults.insert(a.spec.id.clone());
        for hook in Hook::ALL {
            if self.uses_node_wide(&a, hook) {
                *self.node_wide_users.entry(hook).or_default() += 1;
            }
        }
        self.deadlines.insert((a.deadline_ns, a.spec.id.clone()));
        self.faults.insert(a.spec.id.clone(), a);
    }

    fn remove_from_model(&mut self, id: &str) -> Option<Active> {
        let a = self.faults.remove(id)?;
        self.deadlines.remove(&(a.deadline_ns, a.spec.id.clone()));
        for hook in Hook::ALL {
            if self.uses_node_wide(&a, hook)
                && let Some(n) = self.node_wide_users.get_mut(&hook)
            {
                *n = n.saturating_sub(1);
            }
        }
        if let Some(node) = self.targets.get_mut(&a.target.path) {
            node.faults.remove(id);
            if node.faults.is_empty() {
                self.level_counts[node.level as usize] -= 1;
                self.targets.remove(&a.target.path);
            }
        }
        Some(a)
    }

    /// `path` and every targeted cgroup below it.
    fn subtree(&self, path: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::from([path.to_owned()]);
        if path.is_empty() {
            out.extend(self.targets.keys().cloned());
            return out;
        }
        // Descendants sort between "path/" and "path0" ('0' follows '/').
        let lo = format!("{path}/");
        let hi = format!("{path}0");
        out.extend(self.targets.range(lo..hi).map(|(k, _)| k.clone()));
        out
    }

    /// Proper ancestors of `path` that are targets, outermost first.
    fn targeted_ancestors(&self, path: &str) -> impl Iterator<Item = (&str, &TargetNode)> {
        let mut prefixes = vec![""];
        prefixes.extend(path.match_indices('/').map(|(i, _)| &path[..i]));
        prefixes
            .into_iter()
            .filter(move |p| *p != path)
            .filter_map(move |p| self.targets.get_key_value(p).map(|(k, v)| (k.as_str(), v)))
    }

    fn desired_rules(&self, path: &str, table: Table) -> Option<(u64, Entry)> {
        let node = self.targets.get(path)?;
        let ids = self
            .targeted_ancestors(path)
            .map(|(_, n)| n)
            .chain(std::iter::once(node))
            .flat_map(|n| n.faults.iter());
        // check_rule_counts refuses more than fit before we get here.
        let rules: Vec<Rule> = ids
            .filter_map(|id| self.faults.get(id))
            .filter(|a| Table::of(&a.spec.kind) == table)
            .map(|a| Rule {
                kind: a.spec.kind.clone(),
                slot: a.slot,
                deadline_ns: a.deadline_ns,
            })
            .collect();
        (!rules.is_empty()).then_some((node.id, Entry { table, rules }))
    }

    fn rule_count(&self, path: &str, table: Table) -> usize {
        let own = |n: &TargetNode| {
            n.faults
                .iter()
                .filter(|id| {
                    self.faults
                        .get(*id)
                        .is_some_and(|a| Table::of(&a.spec.kind) == table)
                })
                .count()
        };
        self.targets.get(path).map_or(0, own)
            + self
                .targeted_ancestors(path)
                .map(|(_, n)| own(n))
                .sum::<usize>()
    }

    fn check_rule_counts(&self, affected: &BTreeSet<String>) -> Result<(), ManagerError> {
        for path in affected {
            for table in Table::ALL {
                let n = self.rule_count(path, table);
                if n > MAX_RULES_PER_CGROUP {
                    return Err(ManagerError::Capacity(format!(
                        "cgroup {path} would be covered by {n} {} faults (its own and its \
                         ancestors'); at most {MAX_RULES_PER_CGROUP} may overlap",
                        match table {
                            Table::Net => "network",
                            Table::Sys => "syscall",
                        }
                    )));
                }
            }
        }
        Ok(())
    }

    fn wants_link(&self, path: &str, hook: Hook) -> bool {
        if hook.is_node_wide(self.backends.lsm) {
            // Keyed at "" (never a target path: the root is protected).
            return path.is_empty() && self.node_wide_users.get(&hook).is_some_and(|n| *n > 0);
        }
        let has_own = |n: &TargetNode| {
            n.faults.iter().any(|id| {
                self.faults
                    .get(id)
                    .is_some_and(|a| uses(&a.spec.kind, hook, &self.backends))
            })
        };
        self.targets.get(path).is_some_and(has_own)
            && !self.targeted_ancestors(path).any(|(_, n)| has_own(n))
    }

    fn levels_mask(&self) -> u64 {
        self.level_counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .fold(0, |mask, (level, _)| mask | (1 << level))
    }

    /// Makes the kernel match the model for `affected` cgroups.
    fn sync(&mut self, affected: &BTreeSet<String>) -> Result<(), DatapathError> {
        for path in affected {
            for table in Table::ALL {
                let key = (path.clone(), table);
                let desired = self.desired_rules(path, table);
                match (desired, self.kernel_rules.get(&key)) {
                    (Some(d), current) if current != Some(&d) => {
                        self.dp.set_rules(d.0, &d.1)?;
                        self.kernel_rules.insert(key, d);
                    }
                    (None, Some(&(id, _))) => {
                        self.dp.remove_rules(table, id)?;
                        self.kernel_rules.remove(&key);
                    }
                    _ => {}
                }
            }
        }
        // New levels before attaching, so a new attachment never misses the
        // ancestor walk; vanished levels after detaching.
        let levels = self.levels_mask();
        if levels & !self.levels_written != 0 {
            self.dp.set_levels(self.levels_written | levels)?;
            self.levels_written |= levels;
        }
        // Node-wide hooks live at "" whatever cgroups changed.
        let mut affected = affected.clone();
        affected.insert(String::new());
        let affected = &affected;
        // Detach before attach: moving an attachment up to a new ancestor
        // leaves a brief window with no program (packets pass) rather than
        // one where a packet runs through two and is counted twice.
        for path in affected {
            for hook in Hook::ALL {
                let key = (path.clone(), hook);
                if let Some(&id) = self.links.get(&key)
                    && !self.wants_link(path, hook)
                {
                    self.dp.detach(id, hook)?;
                    self.links.remove(&key);
                }
            }
        }
        for path in affected {
            for hook in Hook::ALL {
                let key = (path.clone(), hook);
                if !self.links.contains_key(&key) && self.wants_link(path, hook) {
                    let id = self.targets.get(path).map_or(0, |n| n.id);
                    let abs = self.resolver.absolute(path);
                    self.dp.attach(id, &abs, hook)?;
                    self.links.insert(key, id);
                }
            }
        }
        if self.levels_written != levels {
            self.dp.set_levels(levels)?;
            self.levels_written = levels;
        }
        Ok(())
    }
}

mod lease;
#[cfg(test)]
mod tests;
