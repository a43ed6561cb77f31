//! The gRPC service: convert, call the manager, convert back.
//!
//! Manager calls make syscalls (bpf, cgroupfs), so they run on the blocking
//! pool; the manager's mutex serialises them, which is what makes every
//! request see and leave a consistent kernel state.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use faultd_common::MAX_RULES_PER_CGROUP;
use faultd_proto::agent::v1::{self as pb, agent_server::Agent};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};
use tracing::{Instrument as _, info_span, warn};

use crate::{
    api,
    caps::Capabilities,
    datapath::Datapath,
    fault::{FaultKind, FaultSpec, SysBackends},
    manager::{Clock, Manager, ManagerError, Resolver},
};

/// Kernel features each fault kind needs, with what they are for.
fn required_features(kind: &FaultKind) -> &'static [(&'static str, &'static str)] {
    const LINKS: (&str, &str) = (
        "bpf_link_cgroup",
        "cgroup bpf links (kernel >= 5.7), so faults die with the agent",
    );
    const DEADLINES: (&str, &str) = (
        "ktime_get_boot_ns",
        "bpf_ktime_get_boot_ns (kernel >= 5.8) for kernel-side deadlines",
    );
    match kind {
        FaultKind::Loss(_) => &[("cgroup_skb", "cgroup_skb programs"), LINKS, DEADLINES],
        FaultKind::Latency(_) | FaultKind::Bandwidth(_) => &[
            ("cgroup_skb", "cgroup_skb programs"),
            (
                "fq_qdisc",
                "the sch_fq qdisc (CONFIG_NET_SCH_FQ), which holds packets until the departure \
                 time faultd stamps on them",
            ),
            LINKS,
            DEADLINES,
        ],
        // Which mechanism serves it is decided by `SysBackends::pick`.
        FaultKind::Syscall(_) => &[LINKS, DEADLINES],
    }
}

pub struct Shared<D, R, C> {
    manager: Mutex<Manager<D, R, C>>,
    caps: Capabilities,
    /// The manager's syscall backends, fixed at start.
    backends: SysBackends,
    cgroup_mount: PathBuf,
    /// Woken when faults change, so the expiry task re-reads the next deadline.
    changed: Notify,
    /// Set at shutdown: new faults are refused so none lands after the final
    /// revert.
    closed: AtomicBool,
}

impl<D, R, C> std::fmt::Debug for Shared<D, R, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("cgroup_mount", &self.cgroup_mount)
            .finish_non_exhaustive()
    }
}

impl<D: Datapath, R: Resolver, C: Clock> Shared<D, R, C> {
    pub fn new(manager: Manager<D, R, C>, caps: Capabilities, cgroup_mount: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            backends: manager.backends(),
            manager: Mutex::new(manager),
            caps,
            cgroup_mount,
            changed: Notify::new(),
            closed: AtomicBool::new(false),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Manager<D, R, C>> {
        // A panic while holding the lock would leave the model and kernel
        // out of step; keep serving (the state is still the best we know)
        // rather than wedge every later request.
        self.manager
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Refuses new faults from now on (shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Runs `f` on the manager on the blocking pool.
    async fn with_manager<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Manager<D, R, C>) -> T + Send + 'static,
    ) -> Result<T, Status> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&mut this.lock()))
            .await
            .map_err(|e| Status::internal(format!("agent task failed: {e}")))
    }

    /// Sweeps expired faults at each deadline until `shutdown` resolves.
    pub async fn expiry_loop(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let wait = self
                .lock()
                .next_deadline_in()
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                () = &mut shutdown => return,
                () = self.changed.notified() => continue,
                () = tokio::time::sleep(wait) => {}
            }
            match self.with_manager(|m| m.expire_due()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!(error = %api::error_chain(&e), "removing expired faults"),
                Err(e) => warn!(error = %e, "expiry task"),
            }
        }
    }

    pub async fn revert_all(self: &Arc<Self>) -> Result<u32, ManagerError> {
        self.with_manager(|m| m.revert_all())
            .await
            .unwrap_or_else(|e| Err(ManagerError::Precondition(e.to_string())))
    }
}

#[derive(Debug)]
pub struct AgentService<D, R, C> {
    shared: Arc<Shared<D, R, C>>,
}

impl<D, R, C> AgentService<D, R, C> {
    pub fn new(shared: Arc<Shared<D, R, C>>) -> Self {
        Self { shared }
    }
}

fn ok<T>(t: T) -> Result<Response<T>, Status> {
    Ok(Response::new(t))
}

#[tonic::async_trait]
impl<D: Datapath, R: Resolver, C: Clock> Agent for AgentService<D, R, C> {
    async fn apply_fault(
        &self,
        request: Request<pb::ApplyFaultRequest>,
    ) -> Result<Response<pb::ApplyFaultResponse>, Status> {
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: is required"))?;
        let spec = FaultSpec::try_from(spec).map_err(|e| api::invalid_status(&e))?;
        let mut missing: Vec<String> = required_features(&spec.kind)
            .iter()
            .filter(|(name, _)| !self.shared.caps.has(name))
            .map(|(name, what)| format!("{name} ({what})"))
            .collect();
        if let FaultKind::Syscall(s) = &spec.kind
            && let Err(e) = self.shared.backends.pick(s)
        {
            missing.push(e.0);
        }
        if spec.kind.ingress_delay() && !self.shared.caps.has("tcx") {
            // The tc program that picks the packets must be a bpf link that
            // detaches when the agent dies; netlink tc filters on older
            // kernels stay (docs/latency.md, "Ingress latency").
            return Err(Status::failed_precondition(format!(
                "{} faults on ingress need tcx (TCX link-based tc attachment, kernel >= \
                 6.6; this kernel is {}): the tc ingress program must be a bpf link that \
                 detaches when the agent dies, which netlink tc filters on older kernels do \
                 not; see docs/latency.md; use direction egress here",
                spec.kind.name(),
                self.shared.caps.kernel_release
            )));
        }
        if !missing.is_empty() {
            return Err(Status::failed_precondition(format!(
                "this kernel ({}) lacks what {} faults need: {}",
                self.shared.caps.kernel_release,
                spec.kind.name(),
                missing.join(", ")
            )));
        }
        let span = info_span!("apply", fault_id = %spec.id, target = %spec.target);
        let result = self
            .shared
            .with_manager(move |m| m.apply(spec))
            .instrument(span)
            .await?;
        let (view, updated) = result.map_err(|e| api::status(&e))?;
        self.shared.changed.notify_one();
        ok(pb::ApplyFaultResponse {
            fault: Some(api::fault_to_pb(&view)),
            updated,
        })
    }

    async fn revert_fault(
        &self,
        request: Request<pb::RevertFaultRequest>,
    ) -> Result<Response<pb::RevertFaultResponse>, Status> {
        let id = request.into_inner().id;
        api::validate_id("id", &id).map_err(|e| api::invalid_status(&e))?;
        let result = self.shared.with_manager(move |m| m.revert(&id)).await?;
        let view = result.map_err(|e| api::status(&e))?;
        self.shared.changed.notify_one();
        ok(pb::RevertFaultResponse {
            existed: view.is_some(),
            fault: view.as_ref().map(api::fault_to_pb),
        })
    }

    async fn get_fault(
        &self,
        request: Request<pb::GetFaultRequest>,
    ) -> Result<Response<pb::Fault>, Status> {
        let id = request.into_inner().id;
        api::validate_id("id", &id).map_err(|e| api::invalid_status(&e))?;
        let view = self.shared.with_manager(move |m| m.get(&id)).await?;
        ok(api::fault_to_pb(&view.map_err(|e| api::status(&e))?))
    }

    async fn list_faults(
        &self,
        _: Request<pb::ListFaultsRequest>,
    ) -> Result<Response<pb::ListFaultsResponse>, Status> {
        let views = self.shared.with_manager(|m| m.list()).await?;
        ok(pb::ListFaultsResponse {
            faults: views.iter().map(api::fault_to_pb).collect(),
        })
    }

    async fn revert_all(
        &self,
        _: Request<pb::RevertAllRequest>,
    ) -> Result<Response<pb::RevertAllResponse>, Status> {
        let reverted = self
            .shared
            .revert_all()
            .await
            .map_err(|e| api::status(&e))?;
        self.shared.changed.notify_one();
        ok(pb::RevertAllResponse { reverted })
    }

    async fn get_capabilities(
        &self,
        _: Request<pb::GetCapabilitiesRequest>,
    ) -> Result<Response<pb::Capabilities>, Status> {
        let (programs, maps, policy, qdiscs) = self
            .shared
            .with_manager(|m| {
                (
                    m.kernel_programs(),
                    m.kernel_maps(),
                    m.policy().clone(),
                    m.datapath().qdisc_changes(),
                )
            })
            .await?;
        let caps = &self.shared.caps;
        let object = |o: crate::datapath::KernelObject| pb::KernelObject {
            name: o.name,
            id: o.id,
        };
        ok(pb::Capabilities {
            kernel_release: caps.kernel_release.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            cgroup2_mount: self.shared.cgroup_mount.display().to_string(),
            features: caps
                .features
                .iter()
                .map(|f| pb::Feature {
                    name: f.name.to_owned(),
                    available: f.available,
                    detail: f.detail.clone(),
                })
                .collect(),
            programs: programs.into_iter().map(object).collect(),
            maps: maps.into_iter().map(object).collect(),
            limits: Some(pb::Limits {
                max_duration: prost_types::Duration::try_from(policy.max_duration).ok(),
                max_faults: policy.max_faults,
                max_rules_per_cgroup: MAX_RULES_PER_CGROUP as u32,
            }),
            qdiscs: qdiscs
                .into_iter()
                .map(|q| pb::QdiscChange {
                    netns_inode: q.netns_ino,
                    device: q.device,
                    replaced: q.replaced,
                    installed: q.installed,
                    faults: q.faults,
                })
                .collect(),
        })
    }
}
