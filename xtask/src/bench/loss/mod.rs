//! `cargo xtask bench`: what a loss fault costs on this machine, written to
//! `docs/benchmarks/loss.md` (tables and interpretation) and
//! `docs/benchmarks/loss.json` (every sample).
//!
//! Three measurements:
//!
//! 1. Per-packet cost of 64-byte UDP `sendto` and TCP throughput on loopback,
//!    for a bystander cgroup and for a targeted cgroup whose fault never
//!    matches, against no agent and against iptables `cgroup` + `statistic`
//!    rules (the tool a user would otherwise reach for on a host).
//! 2. Time from an ApplyFault call to the fault being live, from the RPC and,
//!    on a sample, from traffic: the last packet a sink receives.
//! 3. The agent's RSS and the kernel memory of its maps.
//!
//! Noise control. The agent state (off, 1 fault, 10 000 faults) is expensive
//! to change, so each round visits the states in a fixed order and measures
//! every configuration of a state back to back; rounds alternate the order
//! (off, one, many | many, one, off | ...) so linear drift cancels, and the
//! configurations within a state are rotated from round to round. Ratios to
//! the baseline are taken per round (paired), then summarised.
//!
//! Every configuration runs in its own network namespace with only `lo` up:
//! iptables rules then touch no traffic but the benchmark's, and they vanish
//! with the namespace if this process dies (the Drop guards flush them first
//! in the normal case). Namespaces are per thread, so the main thread enters
//! one around each measurement, and the traffic processes it spawns inherit
//! it; the agent is namespace-agnostic (cgroup programs run in every netns).

use std::time::Instant;

use anyhow::ensure;
use faultd_tests::CgroupGuard;

use self::{
    iptables::{IptChain, Iptables},
    measure::Bench,
    plan::{State, configs},
    report::Report,
};
use crate::bench::{
    env::{loadavg, progress},
    host::{Host, require_root},
    netns::NetNs,
    report::write_report,
};

mod apply;
mod iptables;
mod markdown;
mod measure;
mod plan;
mod report;

pub use plan::Options;

pub fn run(opts: &Options) -> anyhow::Result<()> {
    require_root("attaches eBPF programs and edits iptables")?;
    ensure!(opts.rounds >= 1, "--rounds must be at least 1");
    ensure!(opts.reps >= 1, "--reps must be at least 1");
    ensure!(opts.faults >= 2, "--faults must be at least 2");
    let host = Host::start(&["iptables-nft-restore", "iptables-legacy-restore", "ip"])?;

    host.progress(&format!("creating {} cgroups", opts.faults + 1));
    let bystander = CgroupGuard::new("bench-bystander");
    let target = CgroupGuard::new("bench-target");
    let extra = opts
        .applies
        .saturating_add(opts.verified)
        .saturating_sub(opts.faults - 1);
    let others: Vec<CgroupGuard> = (0..opts.faults - 1 + extra)
        .map(|_| CgroupGuard::new("bench-other"))
        .collect();
    // The "many" set: the target and faults-1 others.
    let many_paths: Vec<&str> = std::iter::once(target.relative_str())
        .chain(
            others[..opts.faults - 1]
                .iter()
                .map(CgroupGuard::relative_str),
        )
        .collect();

    host.progress("network namespaces and iptables rules");
    let clean = NetNs::new("clean")?;
    let mut ipt = Vec::new();
    for tool in [Iptables::Nft, Iptables::Legacy] {
        for (name, paths) in [("1", &many_paths[..1]), ("many", &many_paths[..])] {
            let ns = NetNs::new(if name == "1" { "ipt-1" } else { "ipt-many" })?;
            let t = Instant::now();
            let chain = IptChain::load(ns, tool, paths)?;
            host.progress(&format!(
                "{}: {} rule(s) loaded in {:.2} s",
                tool.tool(),
                paths.len(),
                t.elapsed().as_secs_f64()
            ));
            ipt.push(chain);
        }
    }
    let mut checks = Vec::new();
    for chain in &ipt {
        checks.push(chain.verify_drops(&target)?);
        host.progress(checks.last().map_or("", String::as_str));
    }

    let mut bench = Bench {
        opts: opts.clone(),
        host,
        bystander,
        target,
        others,
        clean,
        ipt,
        agent: None,
        state: State::Off,
        configs: configs(opts.faults),
        memory: Vec::new(),
        transitions: Vec::new(),
        checks,
        maps: None,
        prog_stats: None,
        problems: Vec::new(),
        agent_logs: Vec::new(),
    };
    bench.per_packet()?;
    bench.program_stats()?;
    let latency = bench.latency()?;
    bench.goto(State::Off)?;
    let runtime = bench.host.started.elapsed();
    bench.host.progress("writing the report");
    let report = Report {
        bench: &bench,
        latency: &latency,
        runtime,
        load_end: loadavg(),
    };
    let (md, js) = write_report("loss", &report.markdown(), &report.json())?;
    bench
        .host
        .progress(&format!("wrote {} and {}", md.display(), js.display()));
    println!("\n{}", report.tables());
    for p in &bench.problems {
        println!("problem: {p}");
    }
    let host_started = bench.host.started;
    bench.host.progress("cleaning up");
    drop(bench);
    progress(host_started, "done");
    Ok(())
}
