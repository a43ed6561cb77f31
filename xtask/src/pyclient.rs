//! `cargo xtask python-client`: regenerates the Python client's stubs
//! (clients/python/src/faultd) from proto/ with grpcio-tools, in the venv
//! setup makes. The test suite checks the committed stubs match.

use std::process::Command;

use anyhow::Context as _;

use crate::{install::cache_dir, util::workspace_root};

/// The .proto files the stubs are generated from.
pub const PROTOS: [&str; 2] = [
    "faultd/agent/v1/agent.proto",
    "faultd/coordinator/v1/coordinator.proto",
];

pub fn run() -> anyhow::Result<()> {
    crate::setup::setup(crate::setup::Scope::Build)?;
    let root = workspace_root();
    let out = root.join("clients/python/src");
    let mut protoc = Command::new(cache_dir().join("venv/bin/python"));
    protoc
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(root.join("proto"))
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .arg(format!("--pyi_out={}", out.display()))
        .args(PROTOS);
    let status = protoc
        .current_dir(root.join("proto"))
        .status()
        .context("running grpc_tools.protoc")?;
    anyhow::ensure!(status.success(), "grpc_tools.protoc failed");
    eprintln!("python-client: stubs written under {}", out.display());
    Ok(())
}
