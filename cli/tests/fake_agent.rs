//! End to end without root: the real `faultctl` binary against a fake agent
//! served on a temporary Unix socket. Checks the socket connector, the
//! request each command sends, what it prints, and its exit status.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use faultctl::output::FaultView;
use faultd_proto::agent::v1 as pb;
use pb::agent_server::{Agent, AgentServer};
use tonic::{Request, Response, Status};

/// Holds faults in memory; ids starting with "boom" fail with INTERNAL and
/// "bad" with INVALID_ARGUMENT, to exercise the exit codes.
#[derive(Debug, Default, Clone)]
struct FakeAgent {
    faults: Arc<Mutex<Vec<pb::Fault>>>,
}

fn unused() -> Status {
    Status::unimplemented("not used by faultctl")
}

/// Where fault `id` is in `faults`.
fn position(faults: &[pb::Fault], id: &str) -> Option<usize> {
    faults
        .iter()
        .position(|f| f.spec.as_ref().is_some_and(|s| s.id == id))
}

#[tonic::async_trait]
impl Agent for FakeAgent {
    async fn apply_fault(
        &self,
        request: Request<pb::ApplyFaultRequest>,
    ) -> Result<Response<pb::ApplyFaultResponse>, Status> {
        let spec = request.into_inner().spec.unwrap_or_default();
        if spec.id.starts_with("boom") {
            return Err(Status::internal("attaching cgroup_skb: EPERM"));
        }
        if spec.id.starts_with("bad") {
            return Err(Status::invalid_argument("spec.target: no such unit"));
        }
        let now = SystemTime::now();
        let duration = Duration::try_from(spec.duration.unwrap_or_default()).unwrap();
        let fault = pb::Fault {
            spec: Some(spec.clone()),
            target: Some(pb::ResolvedTarget {
                cgroup_path: "system.slice/postgres.service".into(),
                cgroup_id: 77,
            }),
            state: pb::FaultState::Active.into(),
            applied_at: Some(now.into()),
            deadline: Some((now + duration).into()),
            counters: Some(pb::Counters {
                matched: 10,
                injected: 3,
            }),
            backend: "cgroup_skb".into(),
            ..Default::default()
        };
        let mut faults = self.faults.lock().unwrap();
        let existing = position(&faults, &spec.id);
        let updated = existing.is_some();
        if let Some(i) = existing {
            faults.remove(i);
        }
        faults.push(fault.clone());
        Ok(Response::new(pb::ApplyFaultResponse {
            fault: Some(fault),
            updated,
        }))
    }

    async fn revert_fault(
        &self,
        request: Request<pb::RevertFaultRequest>,
    ) -> Result<Response<pb::RevertFaultResponse>, Status> {
        let id = request.into_inner().id;
        let mut faults = self.faults.lock().unwrap();
        let fault = position(&faults, &id).map(|i| {
            let mut f = faults.remove(i);
            f.state = pb::FaultState::Reverted.into();
            f
        });
        Ok(Response::new(pb::RevertFaultResponse {
            existed: fault.is_some(),
            fault,
        }))
    }

    async fn get_fault(
        &self,
        request: Request<pb::GetFaultRequest>,
    ) -> Result<Response<pb::Fault>, Status> {
        let id = request.into_inner().id;
        let faults = self.faults.lock().unwrap();
        position(&faults, &id)
            .map(|i| Response::new(faults[i].clone()))
            .ok_or_else(|| Status::not_found(format!("no fault with id {id}")))
    }

    async fn list_faults(
        &self,
        _: Request<pb::ListFaultsRequest>,
    ) -> Result<Response<pb::ListFaultsResponse>, Status> {
        Ok(Response::new(pb::ListFaultsResponse {
            faults: self.faults.lock().unwrap().clone(),
        }))
    }

    async fn revert_all(
        &self,
        _: Request<pb::RevertAllRequest>,
    ) -> Result<Response<pb::RevertAllResponse>, Status> {
        let mut faults = self.faults.lock().unwrap();
        let reverted = u32::try_from(faults.len()).unwrap();
        faults.clear();
        Ok(Response::new(pb::RevertAllResponse { reverted }))
    }

    // faultctl's agent commands do not use leases or target listing.
    async fn renew_lease(
        &self,
        _: Request<pb::RenewLeaseRequest>,
    ) -> Result<Response<pb::RenewLeaseResponse>, Status> {
        Err(unused())
    }

    async fn revert_lease(
        &self,
        _: Request<pb::RevertLeaseRequest>,
    ) -> Result<Response<pb::RevertLeaseResponse>, Status> {
        Err(unused())
    }

    async fn list_targets(
        &self,
        _: Request<pb::ListTargetsRequest>,
    ) -> Result<Response<pb::ListTargetsResponse>, Status> {
        Err(unused())
    }

    async fn get_capabilities(
        &self,
        _: Request<pb::GetCapabilitiesRequest>,
    ) -> Result<Response<pb::Capabilities>, Status> {
        Ok(Response::new(pb::Capabilities {
            kernel_release: "6.8.0-test".into(),
            agent_version: "0.1.0".into(),
            cgroup2_mount: "/sys/fs/cgroup".into(),
            features: vec![pb::Feature {
                name: "cgroup_skb".into(),
                available: true,
                detail: "probed".into(),
            }],
            programs: vec![pb::KernelObject {
                name: "loss_egress".into(),
                id: 12,
            }],
            maps: vec![pb::KernelObject {
                name: "LOSS_RULES".into(),
                id: 34,
            }],
            limits: Some(pb::Limits {
                max_duration: Some(Duration::from_secs(3_600).try_into().unwrap()),
                max_faults: 64,
                max_rules_per_cgroup: 16,
                ..Default::default()
            }),
            qdiscs: Vec::new(),
            ..Default::default()
        }))
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    agent: FakeAgent,
}

async fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("faultd.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let agent = FakeAgent::default();
    let service = AgentServer::new(agent.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await
            .unwrap();
    });
    Harness {
        _dir: dir,
        socket,
        agent,
    }
}

async fn faultctl(socket: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_faultctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("FAULTD_SOCKET")
        .output()
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn loss_list_get_revert() {
    let h = start().await;

    let out = faultctl(
        &h.socket,
        &[
            "loss",
            "--unit",
            "postgres.service",
            "--percent",
            "30",
            "--duration",
            "1h30m",
            "--egress",
            "--protocol",
            "udp",
            "--dst",
            "10.0.0.0/8",
            "--port",
            "5432",
            "--id",
            "db-loss",
        ],
    )
    .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("db-loss"), "{stdout}");
    assert!(stdout.contains("unit:postgres.service"), "{stdout}");
    assert!(
        stdout.contains("30% egress udp dst 10.0.0.0/8 port 5432"),
        "{stdout}"
    );

    // What the agent received.
    let stored = h.agent.faults.lock().unwrap()[0].spec.clone().unwrap();
    let Some(pb::fault_spec::Kind::Loss(loss)) = stored.kind else {
        unreachable!("faultctl loss sends a loss fault");
    };
    assert_eq!(loss.probability_ppm, 300_000);
    assert_eq!(loss.direction(), pb::Direction::Egress);
    assert_eq!(stored.duration.unwrap().seconds, 5_400);

    // Same id again: an update, noted on stderr.
    let out = faultctl(
        &h.socket,
        &[
            "loss",
            "--unit",
            "postgres.service",
            "--percent",
            "50",
            "--duration",
            "1m",
            "--id",
            "db-loss",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("updated"), "{out:?}");

    let out = faultctl(&h.socket, &["-o", "json", "list"]).await;
    assert!(out.status.success(), "{out:?}");
    let list: Vec<FaultView> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, "db-loss");
    assert!(list[0].remaining_ms.is_some_and(|ms| ms <= 60_000));

    let out = faultctl(&h.socket, &["get", "db-loss", "--output", "json"]).await;
    assert!(out.status.success(), "{out:?}");
    let one: FaultView = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(one.counters.dropped, 3);

    let out = faultctl(&h.socket, &["revert", "db-loss"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("reverted db-loss"), "{out:?}");
    // Unknown ids succeed.
    let out = faultctl(&h.socket, &["revert", "db-loss"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("nothing to revert"), "{out:?}");

    let out = faultctl(&h.socket, &["list"]).await;
    assert!(text(&out.stdout).contains("no faults"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn revert_all_and_caps() {
    let h = start().await;
    for id in ["a", "b"] {
        let out = faultctl(
            &h.socket,
            &[
                "loss",
                "--pid",
                "1",
                "--percent",
                "1",
                "--duration",
                "10s",
                "--id",
                id,
            ],
        )
        .await;
        assert!(out.status.success(), "{out:?}");
    }
    let out = faultctl(&h.socket, &["revert", "--all"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout).trim(), "reverted 2 faults");

    let out = faultctl(&h.socket, &["caps"]).await;
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    for s in [
        "6.8.0-test",
        "cgroup_skb",
        "loss_egress",
        "LOSS_RULES",
        "max faults 64",
    ] {
        assert!(stdout.contains(s), "missing {s}:\n{stdout}");
    }
    let out = faultctl(&h.socket, &["caps", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["features"][0]["available"], true);
    assert_eq!(v["limits"]["max_duration_ms"], 3_600_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_and_exit_codes() {
    let h = start().await;

    let out = faultctl(&h.socket, &["get", "nope"]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        text(&out.stderr).trim(),
        "error: NotFound: no fault with id nope"
    );

    let args = |id: &'static str| {
        [
            "loss",
            "--pid",
            "1",
            "--percent",
            "1",
            "--duration",
            "10s",
            "--id",
            id,
        ]
    };
    let out = faultctl(&h.socket, &args("bad-1")).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).starts_with("error: InvalidArgument: "),
        "{out:?}"
    );

    let out = faultctl(&h.socket, &args("boom-1")).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).starts_with("error: Internal: "),
        "{out:?}"
    );

    // No agent at all.
    let missing = h.socket.with_file_name("absent.sock");
    let out = faultctl(&missing, &["list"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    assert!(stderr.contains("is faultd running"), "{stderr}");

    // A bad flag combination is a usage error before any connection.
    let out = faultctl(
        &missing,
        &[
            "loss",
            "--pid",
            "1",
            "--percent",
            "1",
            "--duration",
            "10s",
            "--protocol",
            "icmp",
            "--port",
            "1",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("--port"), "{out:?}");
}
