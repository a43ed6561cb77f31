//! Running commands, and cargo in the workspace, and where the workspace
//! and its build output are.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

pub fn run(mut cmd: Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

pub fn cmd_output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `cargo` in the workspace. agent/build.rs finds the cached bpf-linker
/// itself, so plain cargo works once `setup` ran.
pub fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(args).current_dir(workspace_root());
    cmd
}

pub fn target_dir(profile: &str) -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    base.join(if profile == "dev" { "debug" } else { profile })
}

/// Builds every binary the tasks start: the agent, faultctl and the test
/// traffic generator.
pub fn build(profile: &str) -> anyhow::Result<()> {
    // The fuzz targets are built by cargo-fuzz, with its instrumentation.
    let mut args = vec!["build", "--workspace", "--exclude", "faultd-fuzz", "--bins"];
    if profile == "release" {
        args.push("--release");
    }
    let start = std::time::Instant::now();
    eprintln!("build: {profile} binaries (faultd, faultctl, test helpers)");
    run(cargo(&args))?;
    eprintln!(
        "build: {profile} binaries: done in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
