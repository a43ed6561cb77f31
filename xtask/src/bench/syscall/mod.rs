//! `cargo xtask bench syscall`: what a syscall fault costs the calls it does
//! not fail, written to `docs/benchmarks/syscall.md` and `syscall.json`.
//!
//! Per-call cost of `connect()` (TCP, loopback, to a listener that accepts
//! and closes) and of `socket()` (TCP), for a bystander cgroup (no program
//! runs for it) and for a targeted cgroup whose fault never matches (the
//! program runs and lets the call through), with no agent, with the agent
//! holding the 4 base faults, and with 1 000 more faults on other cgroups.
//! Same noise control as the loss benchmark: each round visits the agent
//! states in alternating order (off, base, many | many, base, off | ...),
//! measures every configuration of a state back to back, and differences to
//! the baseline are taken per round (paired). Plus the programs' own run
//! time from the kernel's BPF run-time statistics.
//!
//! The BPF LSM operations (open, read, write) need a kernel with BPF LSM,
//! which the host does not have: `--vm` measures them in the VM tier
//! ([`super::syscall_vm`]).

use anyhow::ensure;
use faultd_tests::CgroupGuard;

use self::{
    measure::{Bench, Place},
    plan::{State, configs},
};
use crate::bench::{
    host::{Host, require_root},
    report::write_report,
};

mod measure;
mod plan;
mod report;

pub use plan::Options;

pub fn run(opts: &Options) -> anyhow::Result<()> {
    require_root("attaches eBPF programs")?;
    ensure!(
        opts.schedule.rounds >= 1 && opts.schedule.reps >= 1,
        "--rounds and --reps >= 1"
    );
    let host = Host::start(&[])?;

    let mut bench = Bench {
        agent: None,
        place: Place::new()?,
        bystander: CgroupGuard::new("sysbench-bystander"),
        target_connect: CgroupGuard::new("sysbench-target-connect"),
        target_socket: CgroupGuard::new("sysbench-target-socket"),
        other_connect: CgroupGuard::new("sysbench-other-connect"),
        other_socket: CgroupGuard::new("sysbench-other-socket"),
        others: (0..opts.faults)
            .map(|_| CgroupGuard::new("sysbench-other"))
            .collect(),
        opts: opts.clone(),
        host,
        state: State::Off,
        configs: configs(),
        checks: Vec::new(),
        problems: Vec::new(),
        bpf_lsm: None,
        prog_stats: Vec::new(),
    };
    opts.schedule
        .run(&[State::Off, State::Base, State::Many], &mut bench)?;
    bench.program_stats()?;
    bench.goto(State::Off)?;
    let runtime = bench.host.started.elapsed().as_secs_f64();
    write_report("syscall", &bench.markdown(runtime), &bench.json(runtime))?;
    println!("\n{}", bench.table());
    for p in &bench.problems {
        println!("problem: {p}");
    }
    bench
        .host
        .progress("wrote docs/benchmarks/syscall.md and syscall.json");
    Ok(())
}
