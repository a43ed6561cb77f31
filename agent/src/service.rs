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
    api::{self, ApiError},
    caps::Capabilities,
    datapath::Datapath,
    error::error_chain,
    manager::{Clock, Manager, Resolver},
};

pub struct Shared<D, R, C> {
    manager: Mutex<Manager<D, R, C>>,
    caps: Capabilities,
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
    ) -> Result<T, ApiError> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&mut this.lock()))
            .await
            .map_err(|e| ApiError::Task(e.to_string()))
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
                Ok(Err(e)) => warn!(error = %error_chain(&e), "removing expired faults"),
                Err(e) => warn!(error = %e, "expiry task"),
            }
        }
    }

    pub async fn revert_all(self: &Arc<Self>) -> Result<u32, ApiError> {
        Ok(self.with_manager(|m| m.revert_all()).await??)
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
        let spec = api::apply_request(request.into_inner()).map_err(api::status)?;
        let span = info_span!("apply", fault_id = %spec.id, target = %spec.target);
        let (view, updated) = self
            .shared
            .with_manager(move |m| m.apply(spec))
            .instrument(span)
            .await
            .map_err(api::status)?
            .map_err(api::status)?;
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
        api::validate_id("id", &id).map_err(api::status)?;
        let view = self
            .shared
            .with_manager(move |m| m.revert(&id))
            .await
            .map_err(api::status)?
            .map_err(api::status)?;
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
        api::validate_id("id", &id).map_err(api::status)?;
        let view = self
            .shared
            .with_manager(move |m| m.get(&id))
            .await
            .map_err(api::status)?
            .map_err(api::status)?;
        ok(api::fault_to_pb(&view))
    }

    async fn list_faults(
        &self,
        _: Request<pb::ListFaultsRequest>,
    ) -> Result<Response<pb::ListFaultsResponse>, Status> {
        let views = self
            .shared
            .with_manager(|m| m.list())
            .await
            .map_err(api::status)?;
        ok(pb::ListFaultsResponse {
            faults: views.iter().map(api::fault_to_pb).collect(),
        })
    }

    async fn revert_all(
        &self,
        _: Request<pb::RevertAllRequest>,
    ) -> Result<Response<pb::RevertAllResponse>, Status> {
        let reverted = self.shared.revert_all().await.map_err(api::status)?;
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
            .await
            .map_err(api::status)?;
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
