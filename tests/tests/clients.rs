//! The Python client package (clients/python) against real daemons: pip
//! installs it, then it applies, lists and reverts a fault on an agent over
//! the Unix socket, and creates, watches and stops an experiment on a
//! coordinator over mutual TLS. Its stubs are checked to match proto/.
//! Root only (the agent, the lab); the Python side comes from the venv
//! `./x setup` makes (grpcio and grpcio-tools pinned there).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use faultd_tests::{
    AgentGuard, CgroupGuard,
    cgroup::skip,
    clients::{GoProbe, debian_python, grpc_probe, grpcio_version, python_in, venv_python},
    lab::{COORDINATOR_ID, COORDINATOR_PORT, HUB_ADDR, Lab, LabOptions, OPERATOR_ID},
    require_root,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `pip install` of clients/python into a directory of its own.
fn installed(python: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    // From a copy: building writes build/ and egg-info next to the sources.
    let source = dir.path().join("source");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(repo().join("clients/python"))
        .arg(&source)
        .status()
        .expect("cp");
    assert!(copied.success());
    let out = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
        ])
        .arg(dir.path().join("site"))
        .arg(&source)
        .output()
        .expect("pip");
    assert!(
        out.status.success(),
        "pip install clients/python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn interop(python: &Path, site: &Path, netns: Option<&Path>, args: &[&str]) -> serde_json::Value {
    let out = python_in(python, netns)
        .arg(repo().join("tests/clients/interop.py"))
        .args(args)
        .env("PYTHONPATH", site.join("site"))
        .output()
        .expect("interop.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "interop.py {args:?}: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("interop {}: {stdout}", args[0]);
    serde_json::from_str(&stdout).expect("interop JSON")
}

#[tokio::test]
async fn the_python_client_drives_an_agent_over_its_unix_socket() {
    if !require_root() {
        return;
    }
    let Some(python) = venv_python() else {
        return;
    };
    let site = installed(&python);
    let (agent, _client) = AgentGuard::start_default().await;
    let target = CgroupGuard::new("py-interop");
    let socket = agent.socket().display().to_string();
    let json = interop(
        &python,
        site.path(),
        None,
        &["agent", &socket, target.relative_str()],
    );
    assert_eq!(json["applied"], "py-interop");
    assert_eq!(json["cgroup"], target.relative_str());
    assert_eq!(json["listed"], serde_json::json!(["py-interop"]));
    assert_eq!(json["got"], 300_000);
    assert_eq!(json["existed"], true);
    assert_eq!(json["after"], serde_json::json!([]));
}

/// Standard gRPC clients reach the agent's Unix socket as they connect by
/// default, each with what it puts in :authority there: grpcio >= 1.57 the
/// percent-encoded socket path (the venv's), grpcio 1.51 (Debian's) and
/// grpc-go (Debian's) their own defaults. Each asks health and calls
/// GetCapabilities with an empty request; tonic is every other test here.
#[tokio::test]
async fn standard_clients_reach_the_unix_socket_with_their_default_options() {
    if !require_root() {
        return;
    }
    let (agent, _client) = AgentGuard::start_default().await;
    let target = format!("unix://{}", agent.socket().display());
    const CALL: &str = "/faultd.agent.v1.Agent/GetCapabilities";
    let mut tried = 0;
    for python in [venv_python(), debian_python()].into_iter().flatten() {
        let json = grpc_probe(
            &python,
            None,
            &[&target, "faultd.agent.v1.Agent", "--call", CALL],
        );
        let version = grpcio_version(&python);
        assert_eq!(json["health"][""], "SERVING", "grpcio {version}: {json}");
        assert_eq!(json["call"]["code"], "OK", "grpcio {version}: {json}");
        assert!(
            json["call"]["bytes"].as_u64() > Some(0),
            "grpcio {version}: {json}"
        );
        println!("grpcio {version}: {json}");
        tried += 1;
    }
    let dir = tempfile::tempdir().expect("tmp");
    if let Some(go) = GoProbe::build(dir.path()) {
        let json = go.run(&target, CALL);
        assert_eq!(
            json["health"], "SERVING",
            "grpc-go {}: {json}",
            go.grpc_version
        );
        assert_eq!(
            json["call"]["code"], "OK",
            "grpc-go {}: {json}",
            go.grpc_version
        );
        assert!(json["call"]["bytes"].as_u64() > Some(0), "{json}");
        println!("grpc-go {}: {json}", go.grpc_version);
        tried += 1;
    }
    if tried == 0 {
        skip("none of the clients is installed");
    }
}

/// What no generated client sends, sent raw on the agent's socket: each
/// refused with the code and a message naming the type or field, none
/// reaching the manager (no fault afterwards).
#[tokio::test]
async fn hostile_wire_input_is_refused_with_a_clear_code() {
    if !require_root() {
        return;
    }
    let Some(python) = venv_python().or_else(debian_python) else {
        return;
    };
    let (agent, mut client) = AgentGuard::start_default().await;
    let target = format!("unix://{}", agent.socket().display());
    const APPLY: &str = "/faultd.agent.v1.Agent/ApplyFault";
    for (what, request, code, needle) in [
        // ApplyFaultRequest.spec.id (fields 1.1) holding 0xff.
        (
            "a string that is not UTF-8",
            "0a030a01ff",
            "INVALID_ARGUMENT",
            "faultd.agent.v1.ApplyFaultRequest",
        ),
        (
            "a truncated field",
            "0a050a01",
            "INVALID_ARGUMENT",
            "faultd.agent.v1.ApplyFaultRequest",
        ),
        (
            "a NUL byte in the id",
            "0a050a03610062",
            "INVALID_ARGUMENT",
            "spec.id",
        ),
        // 2 MB: over MAX_REQUEST_BYTES, refused before decoding (tonic
        // reports it as OutOfRange, naming the size and the limit).
        (
            "a 2 MB request",
            "repeat:2000000",
            "OUT_OF_RANGE",
            "the limit is: 1048576 bytes",
        ),
    ] {
        let json = grpc_probe(
            &python,
            None,
            &[
                &target,
                "faultd.agent.v1.Agent",
                "--call",
                APPLY,
                "--request-hex",
                request,
            ],
        );
        let call = &json["call"];
        assert_eq!(call["code"], code, "{what}: {call}");
        let details = call["details"].as_str().unwrap_or_default();
        assert!(
            details.contains(needle),
            "{what}: {details:?} lacks {needle:?}"
        );
        println!("{what}: {code}: {details}");
    }
    let faults = client
        .list_faults(faultd_proto::agent::v1::ListFaultsRequest {})
        .await
        .expect("list")
        .into_inner()
        .faults;
    assert!(faults.is_empty(), "{faults:?}");
}

#[test]
fn the_python_client_drives_a_coordinator_over_mutual_tls() {
    if !require_root() {
        return;
    }
    let Some(python) = venv_python() else {
        return;
    };
    let site = installed(&python);
    let lab = Lab::new(&LabOptions {
        nodes: 1,
        ..LabOptions::default()
    });
    let app = lab.children("app").remove(0);
    let tls = lab.client_cert(OPERATOR_ID);
    let target = format!("{HUB_ADDR}:{COORDINATOR_PORT}");
    let (ca, cert, key) = (
        tls.ca.display().to_string(),
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    let json = interop(
        &python,
        site.path(),
        Some(&lab.hub.path()),
        &[
            "coordinator",
            &target,
            COORDINATOR_ID,
            &ca,
            &cert,
            &key,
            app.relative_str(),
        ],
    );
    assert_eq!(json["created"], "EXPERIMENT_STATE_RUNNING", "{json}");
    assert_eq!(json["stopped"], "EXPERIMENT_STATE_STOPPED", "{json}");
    let events: Vec<&str> = json["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert_eq!(
        events,
        [
            "targets_selected",
            "fault_applied",
            "fault_reverted",
            "ended"
        ],
        "{json}"
    );
}

/// The committed stubs are what grpcio-tools makes from proto/ now
/// (`cargo xtask python-client` regenerates them).
#[test]
fn the_python_stubs_match_the_protos() {
    let Some(python) = venv_python() else {
        return;
    };
    let out = tempfile::tempdir().expect("tmp");
    let status = Command::new(&python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(repo().join("proto"))
        .arg(format!("--python_out={}", out.path().display()))
        .arg(format!("--grpc_python_out={}", out.path().display()))
        .arg(format!("--pyi_out={}", out.path().display()))
        .args([
            "faultd/agent/v1/agent.proto",
            "faultd/coordinator/v1/coordinator.proto",
        ])
        .current_dir(repo().join("proto"))
        .status()
        .expect("protoc");
    assert!(status.success());
    for api in ["agent", "coordinator"] {
        for suffix in ["_pb2.py", "_pb2.pyi", "_pb2_grpc.py"] {
            let rel = format!("faultd/{api}/v1/{api}{suffix}");
            let fresh = std::fs::read(out.path().join(&rel)).expect("generated");
            let committed =
                std::fs::read(repo().join("clients/python/src").join(&rel)).unwrap_or_default();
            assert!(
                fresh == committed,
                "clients/python/src/{rel} is stale: run `cargo xtask python-client`"
            );
        }
    }
}
