//! `cargo xtask test`: every tier, in order of cost.
//!
//! 1. Unit tests of every crate: no root, no kernel.
//! 2. Host integration tests (tests/): root, this machine's kernel, real
//!    programs on real cgroups. They run one at a time: they share the
//!    node-wide agent lock and measure traffic, which parallel tests would
//!    disturb. Each prints `SKIP: <why>` when the machine cannot run it.

use crate::util::{cargo, run as run_cmd, target_dir};

pub fn run(unit_only: bool) -> anyhow::Result<()> {
    run_cmd(cargo(&[
        "test",
        "--workspace",
        "--exclude",
        "faultd-tests",
        "--lib",
        "--bins",
    ]))?;
    // The kit's own unit tests need no root either.
    run_cmd(cargo(&["test", "-p", "faultd-tests", "--lib"]))?;
    if unit_only {
        return Ok(());
    }
    // The integration tests start the real agent and traffic binaries.
    crate::build("dev")?;
    let dir = target_dir("dev");
    let mut integration = cargo(&[
        "test",
        "-p",
        "faultd-tests",
        "--tests",
        "--",
        "--test-threads=1",
    ]);
    integration
        .env("FAULTD_BIN", dir.join("faultd"))
        .env("FAULTD_TRAFFIC_BIN", dir.join("faultd-traffic"));
    run_cmd(integration)
}
