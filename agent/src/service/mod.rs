//! The gRPC service: authorize, convert, call the manager, convert back,
//! audit.
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

use faultd_proto::{
    agent::v1::{self as pb, agent_server::Agent},
    caller::Caller,
};
use serde_json::json;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};
use tracing::{Instrument as _, info_span, warn};

use crate::{
    api::{self, ApiError},
    caps::Capabilities,
    datapath::Datapath,
    error::error_chain,
    manager::{Clock, EndReason, FaultState, FaultView, Manager, ManagerError, Resolver},
    metrics::{FaultSample, Metrics, Snapshot},
};

mod guard;

pub use guard::{Access, Auditor, Rpc};

pub struct Shared<D, R, C> {
    manager: Mutex<Manager<D, R, C>>,
    metrics: Metrics,
    caps: Capabilities,
    cgroup_mount: PathBuf,
    node_name: String,
    access: Access,
    audit: Auditor,
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
    pub fn new(
        manager: Manager<D, R, C>,
        caps: Capabilities,
        cgroup_mount: PathBuf,
        access: Access,
        audit: Auditor,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me: &std::sync::Weak<Self>| {
            let me = me.clone();
            let snapshot: Snapshot = Arc::new(move || {
                me.upgrade()
                    .map(|s| s.lock().list().iter().filter_map(sample).collect())
                    .unwrap_or_default()
            });
            let metrics = Metrics::new(env!("CARGO_PKG_VERSION"), &audit.node, snapshot);
            Self {
                manager: Mutex::new(manager),
                metrics,
                caps,
                cgroup_mount,
                node_name: audit.node.clone(),
                access,
                audit,
                changed: Notify::new(),
                closed: AtomicBool::new(false),
            }
        })
    }

    /// The metrics, for the `/metrics` endpoint.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
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
                Ok(Ok(ended)) => {
                    for v in ended {
                        if let Some(r) = v.end_reason {
                            self.metrics.ended(r.name(), 1);
                        }
                    }
                }
                Ok(Err(e)) => warn!(error = %error_chain(&e), "removing expired faults"),
                Err(e) => warn!(error = %e, "expiry task"),
            }
        }
    }

    /// Reverts every fault at shutdown (after `close`).
    pub async fn revert_all(self: &Arc<Self>) -> Result<u32, ApiError> {
        Ok(self
            .with_manager(|m| m.revert_all(EndReason::Shutdown))
            .await??)
    }

    /// Runs `f` unless the agent is shutting down. Checked under the
    /// manager's lock, which the final revert also takes after `close`, so
    /// no fault lands after it.
    async fn unless_closed<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Manager<D, R, C>) -> Result<T, ManagerError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let this = Arc::clone(self);
        Ok(self
            .with_manager(move |m| {
                if this.closed.load(Ordering::SeqCst) {
                    return Err(ManagerError::ShuttingDown);
                }
                f(m)
            })
            .await??)
    }

    /// The caller of `request`, if it may make `rpc`; a refusal is audited.
    fn authorize<T: Auditable>(&self, request: &Request<T>, rpc: Rpc) -> Result<Caller, Status> {
        let caller = Caller::of(request);
        match self.access.check(&caller, rpc) {
            Ok(()) => Ok(caller),
            Err(why) => {
                let denied: Result<(), ApiError> = Err(ApiError::Denied(why.clone()));
                self.audit
                    .call(&caller, rpc, request.get_ref().what(), &denied);
                warn!(caller = %caller, rpc = rpc.name(), "refused: {why}");
                Err(api::status(ApiError::Denied(why)))
            }
        }
    }

    /// The audit log, for the TLS listener's refused handshakes.
    pub fn auditor(&self) -> &Auditor {
        &self.audit
    }
}

/// A live fault as the metrics see it; None once it ended.
fn sample(v: &FaultView) -> Option<FaultSample> {
    (v.state == FaultState::Active).then(|| FaultSample {
        id: v.spec.id.clone(),
        kind: v.spec.kind.name(),
        matched: v.counters.matched,
        injected: v.counters.dropped,
    })
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

impl<D: Datapath, R: Resolver, C: Clock> AgentService<D, R, C> {
    /// The end of a mutating call: audit it, notify the expiry task, and
    /// answer.
    fn finish<T>(
        &self,
        caller: &Caller,
        rpc: Rpc,
        what: serde_json::Value,
        result: Result<T, ApiError>,
    ) -> Result<Response<T>, Status> {
        self.shared.audit.call(caller, rpc, what, &result);
        self.shared.changed.notify_one();
        let result = result.map(Response::new).map_err(api::status);
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        self.shared.metrics.request(rpc.name(), code);
        result
    }
}

#[tonic::async_trait]
impl<D: Datapath, R: Resolver, C: Clock> Agent for AgentService<D, R, C> {
    async fn apply_fault(
        &self,
        request: Request<pb::ApplyFaultRequest>,
    ) -> Result<Response<pb::ApplyFaultResponse>, Status> {
        let caller = self.shared.authorize(&request, Rpc::ApplyFault)?;
        let req = request.into_inner();
        let what = req.what();
        let result = async {
            let (spec, lease) = api::apply_request(req)?;
            let span = info_span!("apply", fault_id = %spec.id, target = %spec.target);
            let start = std::time::Instant::now();
            let (view, updated) = self
                .shared
                .unless_closed(move |m| m.apply_leased(spec, lease))
                .instrument(span)
                .await?;
            self.shared.metrics.applied(start.elapsed().as_secs_f64());
            Ok(pb::ApplyFaultResponse {
                fault: Some(api::fault_to_pb(&view)),
                updated,
            })
        }
        .await;
        let what = match &result {
            Ok(r) => json!({
                "id": what["id"],
                "lease": what["lease"],
                "target": r.fault.as_ref().and_then(|f| f.target.as_ref()).map(|t| t.cgroup_path.clone()),
                "kind": r.fault.as_ref().and_then(|f| f.spec.as_ref()).and_then(|s| s.kind.as_ref()).map(kind_name),
            }),
            Err(_) => what,
        };
        self.finish(&caller, Rpc::ApplyFault, what, result)
    }

    async fn revert_fault(
        &self,
        request: Request<pb::RevertFaultRequest>,
    ) -> Result<Response<pb::RevertFaultResponse>, Status> {
        let caller = self.shared.authorize(&request, Rpc::RevertFault)?;
        let id = request.into_inner().id;
        let what = json!({ "id": id });
        let result = async {
            api::validate_id("id", &id)?;
            let start = std::time::Instant::now();
            let view = self.shared.with_manager(move |m| m.revert(&id)).await??;
            if view.is_some() {
                self.shared.metrics.reverted(start.elapsed().as_secs_f64());
                self.shared.metrics.ended(EndReason::Reverted.name(), 1);
            }
            Ok(pb::RevertFaultResponse {
                existed: view.is_some(),
                fault: view.as_ref().map(api::fault_to_pb),
            })
        }
        .await;
        self.finish(&caller, Rpc::RevertFault, what, result)
    }

    async fn get_fault(
        &self,
        request: Request<pb::GetFaultRequest>,
    ) -> Result<Response<pb::Fault>, Status> {
        self.shared.authorize(&request, Rpc::GetFault)?;
        let id = request.into_inner().id;
        let result: Result<_, ApiError> = async {
            api::validate_id("id", &id)?;
            let view = self.shared.with_manager(move |m| m.get(&id)).await??;
            Ok(api::fault_to_pb(&view))
        }
        .await;
        result.map(Response::new).map_err(api::status)
    }

    async fn list_faults(
        &self,
        request: Request<pb::ListFaultsRequest>,
    ) -> Result<Response<pb::ListFaultsResponse>, Status> {
        self.shared.authorize(&request, Rpc::ListFaults)?;
        let views = self
            .shared
            .with_manager(|m| m.list())
            .await
            .map_err(api::status)?;
        Ok(Response::new(pb::ListFaultsResponse {
            faults: views.iter().map(api::fault_to_pb).collect(),
        }))
    }

    async fn revert_all(
        &self,
        request: Request<pb::RevertAllRequest>,
    ) -> Result<Response<pb::RevertAllResponse>, Status> {
        let caller = self.shared.authorize(&request, Rpc::RevertAll)?;
        let result = async {
            let reverted = self
                .shared
                .with_manager(|m| m.revert_all(EndReason::Reverted))
                .await??;
            self.shared
                .metrics
                .ended(EndReason::Reverted.name(), u64::from(reverted));
            Ok(pb::RevertAllResponse { reverted })
        }
        .await;
        self.finish(&caller, Rpc::RevertAll, json!({}), result)
    }

    async fn renew_lease(
        &self,
        request: Request<pb::RenewLeaseRequest>,
    ) -> Result<Response<pb::RenewLeaseResponse>, Status> {
        let caller = self.shared.authorize(&request, Rpc::RenewLease)?;
        let req = request.into_inner();
        let what = req.what();
        let result = async {
            let lease = api::lease_from_pb(
                req.lease
                    .ok_or_else(|| api::InvalidField::new("lease", "is required"))?,
            )?;
            let (faults, expires) = self
                .shared
                .unless_closed(move |m| m.renew_lease(&lease.id, lease.ttl))
                .await?;
            Ok(pb::RenewLeaseResponse {
                faults: u32::try_from(faults).unwrap_or(u32::MAX),
                expires_at: Some(expires.into()),
            })
        }
        .await;
        self.shared.metrics.renewal(result.is_ok());
        self.finish(&caller, Rpc::RenewLease, what, result)
    }

    async fn revert_lease(
        &self,
        request: Request<pb::RevertLeaseRequest>,
    ) -> Result<Response<pb::RevertLeaseResponse>, Status> {
        let caller = self.shared.authorize(&request, Rpc::RevertLease)?;
        let id = request.into_inner().id;
        let what = json!({ "lease": id });
        let result = async {
            api::validate_id("id", &id)?;
            let reverted = self
                .shared
                .with_manager(move |m| m.revert_lease(&id))
                .await??;
            self.shared
                .metrics
                .ended(EndReason::Reverted.name(), u64::from(reverted));
            Ok(pb::RevertLeaseResponse { reverted })
        }
        .await;
        self.finish(&caller, Rpc::RevertLease, what, result)
    }

    async fn list_targets(
        &self,
        request: Request<pb::ListTargetsRequest>,
    ) -> Result<Response<pb::ListTargetsResponse>, Status> {
        self.shared.authorize(&request, Rpc::ListTargets)?;
        let result: Result<_, ApiError> = async {
            let req = request.into_inner();
            let with_addresses = req.with_addresses;
            let patterns = api::patterns_from_pb(req)?;
            let (targets, addresses, excluded) = self
                .shared
                .with_manager(move |m| {
                    let (targets, excluded) = m.list_targets(&patterns)?;
                    let addresses = if with_addresses {
                        targets
                            .iter()
                            .map(|(_, c)| m.addresses(c))
                            .collect::<Result<Vec<_>, _>>()?
                    } else {
                        Vec::new()
                    };
                    Ok::<_, crate::manager::ManagerError>((targets, addresses, excluded))
                })
                .await??;
            Ok(pb::ListTargetsResponse {
                targets: targets
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let mut m = api::matched_to_pb(t);
                        if let Some(a) = addresses.get(i) {
                            m.addresses = a.iter().map(ToString::to_string).collect();
                        }
                        m
                    })
                    .collect(),
                protected_excluded: excluded,
            })
        }
        .await;
        result.map(Response::new).map_err(api::status)
    }

    async fn get_capabilities(
        &self,
        request: Request<pb::GetCapabilitiesRequest>,
    ) -> Result<Response<pb::Capabilities>, Status> {
        self.shared.authorize(&request, Rpc::GetCapabilities)?;
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
        let mount = self.shared.cgroup_mount.display().to_string();
        Ok(Response::new(api::capabilities_to_pb(api::Capabilities {
            caps: &self.shared.caps,
            node_name: &self.shared.node_name,
            cgroup_mount: &mount,
            programs,
            maps,
            policy,
            qdiscs,
        })))
    }
}

/// What a request is about, for the audit log (also of refused calls).
trait Auditable {
    fn what(&self) -> serde_json::Value {
        json!({})
    }
}

impl Auditable for pb::ApplyFaultRequest {
    fn what(&self) -> serde_json::Value {
        json!({
            "id": self.spec.as_ref().map(|s| s.id.clone()),
            "lease": self.lease.as_ref().map(|l| l.id.clone()),
        })
    }
}

impl Auditable for pb::RevertFaultRequest {
    fn what(&self) -> serde_json::Value {
        json!({ "id": self.id })
    }
}

impl Auditable for pb::RenewLeaseRequest {
    fn what(&self) -> serde_json::Value {
        json!({ "lease": self.lease.as_ref().map(|l| l.id.clone()) })
    }
}

impl Auditable for pb::RevertLeaseRequest {
    fn what(&self) -> serde_json::Value {
        json!({ "lease": self.id })
    }
}

impl Auditable for pb::GetFaultRequest {
    fn what(&self) -> serde_json::Value {
        json!({ "id": self.id })
    }
}

impl Auditable for pb::RevertAllRequest {}
impl Auditable for pb::ListFaultsRequest {}
impl Auditable for pb::ListTargetsRequest {}
impl Auditable for pb::GetCapabilitiesRequest {}

/// The fault kind's name, for the audit log.
fn kind_name(kind: &pb::fault_spec::Kind) -> &'static str {
    match kind {
        pb::fault_spec::Kind::Loss(_) => "loss",
        pb::fault_spec::Kind::Syscall(_) => "syscall",
        pb::fault_spec::Kind::Latency(_) => "latency",
        pb::fault_spec::Kind::Bandwidth(_) => "bandwidth",
    }
}
