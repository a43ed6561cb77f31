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
    lab::{COORDINATOR_ID, COORDINATOR_PORT, HUB_ADDR, Lab, LabOptions, OPERATOR_ID},
    require_root,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn venv_python() -> Option<PathBuf> {
    let cache = std::env::var_os("FAULTD_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/faultd"),
        PathBuf::from,
    );
    let python = cache.join("venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import grpc, grpc_tools"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip("no venv with grpcio and grpcio-tools (`./x setup` makes it)");
        return None;
    }
    Some(python)
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
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display()))
                .arg("--")
                .arg(python);
            c
        }
        None => Command::new(python),
    };
    let out = cmd
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
