//! What every gRPC endpoint serves beside its API, checked with a client
//! that knows nothing of faultd: Python grpcio (Debian's python3-grpcio)
//! asking health (grpc.health.v1) and server reflection
//! (grpc.reflection.v1) with its default channel options, over the agent's
//! Unix socket, the agent's mutual-TLS listener and the coordinator's.
//! Root only (the agent and the lab); prints SKIP without the client.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use faultd_tests::{
    AgentGuard,
    cgroup::skip,
    lab::{COORDINATOR_ID, COORDINATOR_PORT, HUB_ADDR, Lab, LabOptions, READER_ID},
    require_root,
};

const PYTHON: &str = "/usr/bin/python3";

fn probe_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/grpc_probe.py")
}

/// Debian's Python with grpcio, or None (SKIP printed).
fn python_grpcio() -> Option<&'static str> {
    let ok = Command::new(PYTHON)
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip("no python3-grpcio (`./x setup` installs it)");
        return None;
    }
    Some(PYTHON)
}

/// Runs the probe (in `netns` when given) and returns its JSON.
fn probe(netns: Option<&Path>, args: &[&str]) -> serde_json::Value {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display()))
                .arg("--")
                .arg(PYTHON);
            c
        }
        None => Command::new(PYTHON),
    };
    let out = cmd
        .arg(probe_script())
        .args(args)
        .output()
        .expect("running the Python probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "probe {args:?} failed: {stderr}{stdout}"
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("probe output {stdout:?}: {e}"))
}

/// Health says SERVING for the server and `service`, NOT_FOUND for a name
/// it does not serve; reflection lists exactly `service`, health and
/// itself, and gives `service`'s methods.
fn check(json: &serde_json::Value, service: &str, some_methods: &[&str]) {
    assert_eq!(json["health"][""], "SERVING", "{json}");
    assert_eq!(json["health"][service], "SERVING", "{json}");
    assert_eq!(json["health"]["no.such.Service"], "NOT_FOUND", "{json}");
    let mut services: Vec<&str> = json["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    services.sort_unstable();
    let mut want = vec![
        service,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ];
    want.sort_unstable();
    assert_eq!(services, want, "{json}");
    let methods: Vec<&str> = json["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    for m in some_methods {
        assert!(methods.contains(m), "{m} in {methods:?}");
    }
    println!("{service}: {json}");
}

#[tokio::test]
async fn a_generic_client_sees_health_and_reflection_on_the_unix_socket() {
    if !require_root() || python_grpcio().is_none() {
        return;
    }
    let (agent, _client) = AgentGuard::start_default().await;
    let target = format!("unix://{}", agent.socket().display());
    let json = probe(None, &[&target, "faultd.agent.v1.Agent"]);
    check(
        &json,
        "faultd.agent.v1.Agent",
        &["ApplyFault", "ListTargets", "RenewLease"],
    );
}

#[test]
fn a_generic_client_sees_health_and_reflection_over_mutual_tls() {
    if !require_root() || python_grpcio().is_none() {
        return;
    }
    let lab = Lab::new(&LabOptions {
        nodes: 1,
        ..LabOptions::default()
    });
    let tls = lab.client_cert(READER_ID);
    let (ca, cert, key) = (
        tls.ca.display().to_string(),
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    let hub = lab.hub.path();
    let node = &lab.nodes[0];
    let agent = node.agent_addr().to_string();
    let json = probe(
        Some(&hub),
        &[
            &agent,
            "faultd.agent.v1.Agent",
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "--name",
            &node.name,
        ],
    );
    check(
        &json,
        "faultd.agent.v1.Agent",
        &["ApplyFault", "GetCapabilities"],
    );
    let coordinator = format!("{HUB_ADDR}:{COORDINATOR_PORT}");
    let json = probe(
        Some(&hub),
        &[
            &coordinator,
            "faultd.coordinator.v1.Coordinator",
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "--name",
            COORDINATOR_ID,
        ],
    );
    check(
        &json,
        "faultd.coordinator.v1.Coordinator",
        &["CreateExperiment", "HaltAll", "GetExperimentReport"],
    );
}
