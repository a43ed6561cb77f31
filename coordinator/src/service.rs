//! The gRPC service `faultd.coordinator.v1`: authorize the caller by its
//! client certificate, convert, call the engine, convert back, audit. The
//! one mapping from engine errors to status codes is `status`.

use std::{pin::Pin, time::Duration};

use faultd_proto::{
    audit::AuditLog,
    caller::Caller,
    coordinator::v1::{self as pb, coordinator_server::Coordinator},
};
use serde_json::json;
use tokio_stream::{Stream, StreamExt as _, wrappers::ReceiverStream};
use tonic::{Code, Request, Response, Status};
use tracing::warn;

use crate::{
    agents::AgentApi,
    engine::{Engine, EngineError},
    experiment::{ExperimentSpec, validate_id},
};

/// Who may do what: operators change things, readers read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub operators: Vec<String>,
    pub readers: Vec<String>,
}

/// The coordinator's RPCs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    CreateExperiment,
    StopExperiment,
    HaltAll,
    Resume,
    ReloadPolicy,
    GetExperiment,
    ListExperiments,
    WatchExperiment,
    GetStatus,
    GetExperimentReport,
}

impl Rpc {
    pub fn name(self) -> &'static str {
        match self {
            Self::CreateExperiment => "CreateExperiment",
            Self::StopExperiment => "StopExperiment",
            Self::HaltAll => "HaltAll",
            Self::Resume => "Resume",
            Self::ReloadPolicy => "ReloadPolicy",
            Self::GetExperiment => "GetExperiment",
            Self::ListExperiments => "ListExperiments",
            Self::WatchExperiment => "WatchExperiment",
            Self::GetStatus => "GetStatus",
            Self::GetExperimentReport => "GetExperimentReport",
        }
    }

    pub fn mutates(self) -> bool {
        matches!(
            self,
            Self::CreateExperiment
                | Self::StopExperiment
                | Self::HaltAll
                | Self::Resume
                | Self::ReloadPolicy
        )
    }
}

impl Access {
    pub fn check(&self, caller: &Caller, rpc: Rpc) -> Result<(), String> {
        match caller {
            // In-process callers (tests); the coordinator serves TLS only.
            Caller::Unknown => Ok(()),
            Caller::Tls { identities, .. } => {
                let ok = caller.is_one_of(&self.operators)
                    || (!rpc.mutates() && caller.is_one_of(&self.readers));
                if ok {
                    Ok(())
                } else {
                    Err(format!(
                        "{} needs an {} identity (server.{}); the client presented {}",
                        rpc.name(),
                        if rpc.mutates() {
                            "operator"
                        } else {
                            "operator or reader"
                        },
                        if rpc.mutates() {
                            "operators"
                        } else {
                            "operators or server.readers"
                        },
                        if identities.is_empty() {
                            "no DNS or URI name".to_owned()
                        } else {
                            identities.join(", ")
                        }
                    ))
                }
            }
            other => Err(format!(
                "{} over {other}: the coordinator takes calls over mutual TLS only",
                rpc.name()
            )),
        }
    }
}

/// The one mapping from engine errors to gRPC codes.
pub fn status(err: &EngineError) -> Status {
    let code = match err {
        EngineError::Invalid(_) | EngineError::PolicyFile(_) => Code::InvalidArgument,
        EngineError::Policy(v) if v.precondition => Code::FailedPrecondition,
        EngineError::Policy(_) => Code::InvalidArgument,
        EngineError::NotFound(_) => Code::NotFound,
        EngineError::Conflict(_) => Code::AlreadyExists,
        EngineError::Halted { .. } | EngineError::Selection(_) | EngineError::Condition(_) => {
            Code::FailedPrecondition
        }
        // Nothing was applied; an unreachable agent may come back.
        EngineError::Agent(e) if e.unreachable() => Code::Unavailable,
        EngineError::Agent(_) => Code::FailedPrecondition,
        EngineError::Store(_) => Code::Internal,
    };
    Status::new(code, err.to_string())
}

pub struct CoordinatorService<A> {
    engine: Engine<A>,
    access: Access,
    audit: Option<AuditLog>,
    name: String,
}

impl<A> std::fmt::Debug for CoordinatorService<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorService")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<A: AgentApi> CoordinatorService<A> {
    pub fn new(engine: Engine<A>, access: Access, audit: Option<AuditLog>, name: String) -> Self {
        Self {
            engine,
            access,
            audit,
            name,
        }
    }

    /// The caller, if it may make `rpc`; a refusal is audited.
    fn authorize<T>(&self, request: &Request<T>, rpc: Rpc) -> Result<Caller, Status> {
        let caller = Caller::of(request);
        match self.access.check(&caller, rpc) {
            Ok(()) => Ok(caller),
            Err(why) => {
                let status = Status::permission_denied(why);
                self.audit(&caller, rpc, json!({}), Err(&status));
                warn!(caller = %caller, rpc = rpc.name(), "refused: {}", status.message());
                Err(status)
            }
        }
    }

    fn audit(&self, caller: &Caller, rpc: Rpc, what: serde_json::Value, r: Result<(), &Status>) {
        if let Some(log) = &self.audit
            && let Err(e) = log.call(
                "faultd-coordinator",
                &self.name,
                &caller.to_string(),
                rpc.name(),
                what,
                r,
            )
        {
            warn!(error = %e, "writing the audit log");
        }
    }

    /// Audits a mutating call's outcome and answers.
    fn finish<T>(
        &self,
        caller: &Caller,
        rpc: Rpc,
        what: serde_json::Value,
        r: Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        self.audit(caller, rpc, what, r.as_ref().map(|_| ()));
        r.map(Response::new)
    }
}

fn state_name(state: i32) -> String {
    pb::ExperimentState::try_from(state)
        .map(|s| s.as_str_name().to_owned())
        .unwrap_or_else(|_| state.to_string())
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ExperimentEvent, Status>> + Send>>;

#[tonic::async_trait]
impl<A: AgentApi> Coordinator for CoordinatorService<A> {
    async fn create_experiment(
        &self,
        request: Request<pb::CreateExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        let caller = self.authorize(&request, Rpc::CreateExperiment)?;
        let req = request.into_inner();
        let (spec, dry_run) = (req.spec, req.dry_run);
        let mut what = json!({ "id": spec.as_ref().map(|s| s.id.clone()), "dry_run": dry_run });
        let r = async {
            let spec = spec.ok_or_else(|| Status::invalid_argument("spec: is required"))?;
            let spec =
                ExperimentSpec::try_from(spec).map_err(|e| status(&EngineError::Invalid(e)))?;
            let by = caller.to_string();
            if dry_run {
                self.engine.dry_run(spec, &by).await
            } else {
                self.engine.create(spec, &by).await
            }
            .map_err(|e| status(&e))
        }
        .await;
        if let Ok(e) = &r {
            what["state"] = json!(state_name(e.state));
            what["targets"] = json!(
                e.targets
                    .iter()
                    .map(|t| format!("{}:{}", t.node, t.cgroup_path))
                    .collect::<Vec<_>>()
            );
            if !e.end_reason.is_empty() {
                what["end_reason"] = json!(e.end_reason);
            }
        }
        self.finish(&caller, Rpc::CreateExperiment, what, r)
    }

    async fn get_experiment(
        &self,
        request: Request<pb::GetExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        self.authorize(&request, Rpc::GetExperiment)?;
        let id = request.into_inner().id;
        validate_id("id", &id).map_err(|e| status(&EngineError::Invalid(e)))?;
        self.engine
            .get(&id)
            .map(Response::new)
            .map_err(|e| status(&e))
    }

    async fn list_experiments(
        &self,
        request: Request<pb::ListExperimentsRequest>,
    ) -> Result<Response<pb::ListExperimentsResponse>, Status> {
        self.authorize(&request, Rpc::ListExperiments)?;
        let states = request.into_inner().states;
        let experiments = self.engine.list(&states).map_err(|e| status(&e))?;
        Ok(Response::new(pb::ListExperimentsResponse { experiments }))
    }

    async fn stop_experiment(
        &self,
        request: Request<pb::StopExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        let caller = self.authorize(&request, Rpc::StopExperiment)?;
        let req = request.into_inner();
        let what = json!({ "id": req.id, "reason": req.reason });
        let r = async {
            validate_id("id", &req.id).map_err(|e| status(&EngineError::Invalid(e)))?;
            let reason = if req.reason.is_empty() {
                format!("by {caller}")
            } else {
                format!("{} (by {caller})", req.reason)
            };
            self.engine
                .stop(&req.id, &reason)
                .await
                .map_err(|e| status(&e))
        }
        .await;
        self.finish(&caller, Rpc::StopExperiment, what, r)
    }

    type WatchExperimentStream = EventStream;

    async fn watch_experiment(
        &self,
        request: Request<pb::WatchExperimentRequest>,
    ) -> Result<Response<Self::WatchExperimentStream>, Status> {
        self.authorize(&request, Rpc::WatchExperiment)?;
        let id = request.into_inner().id;
        validate_id("id", &id).map_err(|e| status(&EngineError::Invalid(e)))?;
        let rx = self.engine.watch(&id).map_err(|e| status(&e))?;
        let stream = ReceiverStream::new(rx).map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn halt_all(
        &self,
        request: Request<pb::HaltAllRequest>,
    ) -> Result<Response<pb::HaltAllResponse>, Status> {
        let caller = self.authorize(&request, Rpc::HaltAll)?;
        let reason = request.into_inner().reason;
        let reason = if reason.is_empty() {
            format!("HaltAll by {caller}")
        } else {
            format!("{reason} (HaltAll by {caller})")
        };
        let r = self.engine.halt(&reason).await.map_err(|e| status(&e));
        let mut what = json!({ "reason": reason });
        if let Ok(h) = &r {
            what["stopped"] = json!(h.stopped);
            what["reverted"] = json!(h.reverted);
            what["unreachable"] = json!(h.unreachable);
        }
        self.finish(&caller, Rpc::HaltAll, what, r)
    }

    async fn resume(
        &self,
        request: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        let caller = self.authorize(&request, Rpc::Resume)?;
        let r = self
            .engine
            .resume()
            .await
            .map(|was_halted| pb::ResumeResponse { was_halted })
            .map_err(|e| status(&e));
        self.finish(&caller, Rpc::Resume, json!({}), r)
    }

    async fn reload_policy(
        &self,
        request: Request<pb::ReloadPolicyRequest>,
    ) -> Result<Response<pb::ReloadPolicyResponse>, Status> {
        let caller = self.authorize(&request, Rpc::ReloadPolicy)?;
        let r = self
            .engine
            .reload_policy()
            .map(|policy_sha256| pb::ReloadPolicyResponse { policy_sha256 })
            .map_err(|e| status(&e));
        let what = json!({ "policy_sha256": r.as_ref().ok().map(|p| p.policy_sha256.clone()) });
        self.finish(&caller, Rpc::ReloadPolicy, what, r)
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::CoordinatorStatus>, Status> {
        self.authorize(&request, Rpc::GetStatus)?;
        self.engine
            .status()
            .map(Response::new)
            .map_err(|e| status(&e))
    }

    async fn get_experiment_report(
        &self,
        request: Request<pb::GetExperimentReportRequest>,
    ) -> Result<Response<pb::ExperimentReport>, Status> {
        self.authorize(&request, Rpc::GetExperimentReport)?;
        let req = request.into_inner();
        validate_id("id", &req.id).map_err(|e| status(&EngineError::Invalid(e)))?;
        let span = |field: &str, d: Option<prost_types::Duration>, default: Duration| match d {
            None => Ok(default),
            Some(d) => Duration::try_from(d)
                .ok()
                .filter(|d| *d <= MAX_REPORT_SPAN)
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "{field}: must be between 0 and {}",
                        humantime::format_duration(MAX_REPORT_SPAN)
                    ))
                }),
        };
        let before = span("before", req.before, Duration::from_secs(60))?;
        let after = span("after", req.after, Duration::from_secs(60))?;
        let step = match req.step {
            None => None,
            Some(d) => Some(
                Duration::try_from(d)
                    .ok()
                    .filter(|d| *d >= Duration::from_millis(100))
                    .ok_or_else(|| Status::invalid_argument("step: must be at least 100ms"))?,
            ),
        };
        self.engine
            .report(&req.id, before, after, step)
            .await
            .map(Response::new)
            .map_err(|e| status(&e))
    }
}

/// Longest baseline or after window a report may ask for.
const MAX_REPORT_SPAN: Duration = Duration::from_secs(24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{agents::AgentError, policy::Violation};

    #[test]
    fn engine_errors_map_to_codes() {
        let v = |precondition| {
            EngineError::Policy(Violation {
                rule: "limits.max_duration",
                detail: "d".into(),
                precondition,
            })
        };
        let agent = |code| {
            EngineError::Agent(AgentError {
                node: "n".into(),
                code,
                message: "m".into(),
            })
        };
        for (err, code) in [
            (v(false), Code::InvalidArgument),
            (v(true), Code::FailedPrecondition),
            (EngineError::NotFound("x".into()), Code::NotFound),
            (EngineError::Conflict("x".into()), Code::AlreadyExists),
            (
                EngineError::Halted {
                    reason: "r".into(),
                    at: "t".into(),
                },
                Code::FailedPrecondition,
            ),
            (EngineError::Selection("s".into()), Code::FailedPrecondition),
            (agent(Code::Unavailable), Code::Unavailable),
            (agent(Code::PermissionDenied), Code::FailedPrecondition),
        ] {
            assert_eq!(status(&err).code(), code, "{err}");
        }
        assert!(status(&v(false)).message().contains("limits.max_duration"));
    }

    #[test]
    fn operators_mutate_readers_read_others_nothing() {
        let access = Access {
            operators: vec!["op".into()],
            readers: vec!["ro".into()],
        };
        let tls = |id: &str| Caller::Tls {
            remote: "r".into(),
            identities: vec![id.into()],
        };
        assert!(access.check(&tls("op"), Rpc::HaltAll).is_ok());
        assert!(access.check(&tls("ro"), Rpc::HaltAll).is_err());
        assert!(access.check(&tls("ro"), Rpc::GetStatus).is_ok());
        assert!(access.check(&tls("x"), Rpc::GetStatus).is_err());
        let local = Caller::Local {
            uid: Some(0),
            pid: None,
        };
        assert!(access.check(&local, Rpc::GetStatus).is_err(), "TLS only");
    }
}
