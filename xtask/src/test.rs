//! `cargo xtask test`: every tier, in order of cost.
//!
//! 1. Unit tests of every crate: no root, no kernel; then a short run of
//!    every fuzz target over its corpus (see `fuzz`).
//! 2. Host integration tests (tests/): root, this machine's kernel, real
//!    programs on real cgroups. They run one at a time: they share the
//!    node-wide agent lock and measure traffic, which parallel tests would
//!    disturb. Each prints `SKIP: <why>` when the machine cannot run it.
//! 3. The same integration tests on pinned Debian kernels in qemu (see
//!    `vm`), which offer what this host's kernel forbids (BPF LSM, fq).
//!
//! Tiers 2 and 3 end in one summary table (test x kernel); the command fails
//! if any test failed on any kernel.

use crate::util::{cargo, run as run_cmd, target_dir};
use crate::vm;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tiers {
    All,
    UnitOnly,
    NoVm,
    VmOnly,
}

pub fn run(tiers: Tiers) -> anyhow::Result<()> {
    if tiers != Tiers::VmOnly {
        run_cmd(cargo(&[
            "test",
            "--workspace",
            "--exclude",
            "faultd-tests",
            // Its binaries are libFuzzer targets, which --bins would start
            // as endless fuzzing runs; `fuzz` below runs them.
            "--exclude",
            "faultd-fuzz",
            "--lib",
            "--bins",
        ]))?;
        // The kit's own unit tests need no root either.
        run_cmd(cargo(&["test", "-p", "faultd-tests", "--lib"]))?;
    }
    if tiers == Tiers::UnitOnly {
        return Ok(());
    }
    if tiers != Tiers::VmOnly {
        // Every fuzz target briefly, over the corpus and the inputs that
        // once crashed (`cargo xtask fuzz` runs them for longer).
        crate::fuzz::run_fuzz(&crate::fuzz::Options {
            seconds: 10,
            targets: Vec::new(),
        })?;
    }
    // The integration tests start the real agent and traffic binaries.
    crate::util::build("dev")?;
    let bin_dir = target_dir("dev");
    let tests = vm::integration_tests()?;
    let log_dir = vm::log_dir()?;
    let mut columns = Vec::new();
    if tiers != Tiers::VmOnly {
        columns.push(vm::run_host(&tests, &bin_dir, &log_dir)?);
    }
    if tiers != Tiers::NoVm {
        // A broken VM set-up (no qemu, no mirror) still shows the host's
        // results before failing.
        match vm::run_matrix(&tests, &bin_dir, &log_dir) {
            Ok(vm_columns) => columns.extend(vm_columns),
            Err(e) => {
                vm::report(&columns, &log_dir)?;
                return Err(e.context("VM tier"));
            }
        }
    }
    vm::report(&columns, &log_dir)
}
