//! Leases, the remote caller's dead-man's switch: faults held under a
//! lease end when it is not renewed within its ttl. The lease's expiry is
//! part of each fault's deadline in the kernel (min of the two), so the
//! kernel ends them on time even when the agent is frozen; renewing moves
//! those deadlines forward in the rules maps, transactionally like every
//! other change.

use std::{
    collections::BTreeSet,
    time::{Duration, SystemTime},
};

use tracing::{info, warn};

use super::{Clock, EndReason, FaultState, Manager, ManagerError, RECENT_LIMIT, Resolver};
use crate::datapath::Datapath;

/// The shortest ttl: a renewal every few hundred milliseconds would cost
/// more kernel map writes than it buys.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub(super) struct Lease {
    pub(super) expiry_ns: u64,
    pub(super) expiry_wall: SystemTime,
    pub(super) faults: BTreeSet<String>,
}

/// A lease whose faults ended because it was not renewed.
#[derive(Clone, Debug)]
pub(super) struct Lapsed {
    id: String,
    at: SystemTime,
    faults: usize,
}

impl<D: Datapath, R: Resolver, C: Clock> Manager<D, R, C> {
    pub(super) fn check_lease_ttl(&self, ttl: Duration) -> Result<(), ManagerError> {
        let max = self.policy.max_lease_ttl;
        if ttl < MIN_LEASE_TTL || ttl > max {
            return Err(ManagerError::Invalid {
                field: "lease.ttl",
                reason: format!(
                    "must be in {}..={} (limits.max_lease_ttl), got {}",
                    crate::duration::format(MIN_LEASE_TTL),
                    crate::duration::format(max),
                    crate::duration::format(ttl)
                ),
            });
        }
        Ok(())
    }

    /// Renews lease `id` to now + `ttl`. Returns how many faults it holds
    /// and when it expires now. A lease that already lapsed cannot be
    /// renewed: its faults ended in the kernel at its expiry.
    pub fn renew_lease(
        &mut self,
        id: &str,
        ttl: Duration,
    ) -> Result<(usize, SystemTime), ManagerError> {
        self.check_lease_ttl(ttl)?;
        let now_ns = self.clock.boottime_ns();
        if self.leases.get(id).is_some_and(|l| l.expiry_ns <= now_ns) {
            // Expired but not swept yet (a frozen agent, just thawed): the
            // kernel already ended these faults; record it before refusing.
            self.expire_due()?;
        }
        if !self.leases.contains_key(id) {
            return Err(match self.lapsed.iter().rev().find(|l| l.id == id) {
                Some(l) => ManagerError::LeaseLapsed {
                    id: id.to_owned(),
                    at: faultd_proto::audit::timestamp(l.at),
                    faults: l.faults,
                },
                None => ManagerError::LeaseNotFound(id.to_owned()),
            });
        }
        let ttl_ns = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
        let expiry = (now_ns.saturating_add(ttl_ns), self.clock.now() + ttl);
        self.move_lease(id, expiry)?;
        let n = self.leases.get(id).map_or(0, |l| l.faults.len());
        Ok((n, expiry.1))
    }

    /// Reverts every fault under lease `id`; an unknown lease reverts none.
    pub fn revert_lease(&mut self, id: &str) -> Result<u32, ManagerError> {
        let ids: Vec<String> = self
            .leases
            .get(id)
            .map(|l| l.faults.iter().cloned().collect())
            .unwrap_or_default();
        let mut n = 0;
        for fault in ids {
            if self
                .end(&fault, FaultState::Reverted, EndReason::Reverted)?
                .is_some()
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Sets lease `id`'s expiry and every one of its faults' kernel
    /// deadline to min(own deadline, expiry). On error the old deadlines
    /// are put back, in the model and in the kernel.
    fn move_lease(&mut self, id: &str, expiry: (u64, SystemTime)) -> Result<(), ManagerError> {
        let Some(lease) = self.leases.get(id) else {
            return Ok(());
        };
        let previous = (lease.expiry_ns, lease.expiry_wall);
        let faults: Vec<String> = lease.faults.iter().cloned().collect();
        let set = |this: &mut Self, (ns, wall): (u64, SystemTime)| {
            let mut paths = BTreeSet::new();
            for fid in &faults {
                let Some(a) = this.faults.get_mut(fid) else {
                    continue;
                };
                this.deadlines.remove(&(a.deadline_ns, fid.clone()));
                (a.deadline_ns, a.deadline_wall) = if ns < a.own_deadline_ns {
                    (ns, wall)
                } else {
                    (a.own_deadline_ns, a.own_deadline_wall)
                };
                this.deadlines.insert((a.deadline_ns, fid.clone()));
                paths.insert(a.target.path.clone());
            }
            if let Some(l) = this.leases.get_mut(id) {
                (l.expiry_ns, l.expiry_wall) = (ns, wall);
            }
            paths
                .iter()
                .flat_map(|p| this.subtree(p))
                .collect::<BTreeSet<String>>()
        };
        let affected = set(self, expiry);
        if let Err(e) = self.sync(&affected) {
            set(self, previous);
            if let Err(restore) = self.sync(&affected) {
                warn!(lease = id, error = %restore, "restoring kernel state after a failed renewal");
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// After `fault` was applied: it leaves its old lease, joins its new one
    /// (created when new), and the new lease is renewed to `expiry` for
    /// every fault under it. A failed renewal of the others keeps their
    /// earlier deadlines (they end sooner, never later) and is logged.
    pub(super) fn lease_after_apply(
        &mut self,
        fault: &str,
        old: Option<String>,
        new: Option<(String, (u64, SystemTime))>,
    ) {
        if let Some(old) = old
            && new.as_ref().is_none_or(|(n, _)| *n != old)
        {
            self.leave_lease(fault, &old, None);
        }
        let Some((id, expiry)) = new else {
            return;
        };
        let lease = self.leases.entry(id.clone()).or_insert_with(|| Lease {
            expiry_ns: expiry.0,
            expiry_wall: expiry.1,
            faults: BTreeSet::new(),
        });
        lease.faults.insert(fault.to_owned());
        if lease.expiry_ns != expiry.0
            && let Err(e) = self.move_lease(&id, expiry)
        {
            warn!(lease = %id, error = %e, "renewing the lease's other faults");
        }
    }

    /// After `fault` ended for `reason`: it leaves its lease, and a lease
    /// left with no fault is forgotten, remembered as lapsed when that is
    /// why its last fault ended.
    pub(super) fn lease_after_end(&mut self, fault: &str, lease: Option<&str>, reason: EndReason) {
        if let Some(id) = lease {
            self.leave_lease(fault, id, Some(reason));
        }
    }

    fn leave_lease(&mut self, fault: &str, id: &str, reason: Option<EndReason>) {
        let Some(lease) = self.leases.get_mut(id) else {
            return;
        };
        lease.faults.remove(fault);
        let lapsed = reason == Some(EndReason::LeaseLapsed);
        if lapsed {
            // Count every fault the lapse ended, not only the last one.
            let at = lease.expiry_wall;
            match self
                .lapsed
                .iter_mut()
                .rev()
                .find(|l| l.id == id && l.at == at)
            {
                Some(l) => l.faults += 1,
                None => {
                    if self.lapsed.len() == RECENT_LIMIT {
                        self.lapsed.pop_front();
                    }
                    self.lapsed.push_back(Lapsed {
                        id: id.to_owned(),
                        at,
                        faults: 1,
                    });
                }
            }
        }
        if lease.faults.is_empty() {
            if lapsed {
                info!(lease = id, "lease lapsed: not renewed within its ttl");
            }
            self.leases.remove(id);
        }
    }
}
