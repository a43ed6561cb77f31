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

use std::{fs, time::Instant};

use anyhow::{Context as _, bail, ensure};
use faultd_tests::CgroupGuard;

use self::{
    iptables::{IptChain, Iptables, which},
    measure::Bench,
    plan::{State, configs},
    report::Report,
};
use crate::{
    bench::{
        env::{Environment, loadavg, progress, raise_priority},
        netns::NetNs,
    },
    util::{target_dir, workspace_root},
};

mod apply;
mod iptables;
mod measure;
mod plan;
mod report;

pub use plan::Options;

pub fn run(opts: &Options) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the benchmark attaches eBPF programs and edits iptables: run as root");
    }
    ensure!(opts.rounds >= 1, "--rounds must be at least 1");
    ensure!(opts.reps >= 1, "--reps must be at least 1");
    ensure!(opts.faults >= 2, "--faults must be at least 2");
    let started = Instant::now();
    let release = target_dir("release");
    let faultd = release.join("faultd");
    let traffic = release.join("faultd-traffic");
    for bin in [&faultd, &traffic] {
        ensure!(bin.is_file(), "{} is missing", bin.display());
    }
    // SAFETY: no other thread exists yet; the kit reads it when spawning.
    unsafe { std::env::set_var("FAULTD_TRAFFIC_BIN", &traffic) };
    for tool in ["iptables-nft-restore", "iptables-legacy-restore", "ip"] {
        ensure!(
            which(tool),
            "{tool} not found; `cargo xtask setup` installs it"
        );
    }
    let renice = raise_priority();
    let env = Environment::collect()?;
    progress(started, &format!("{}, {}", env.kernel, env.cpu));

    // One thread: each call is driven by the thread that times it, with no
    // hand-off to a worker and back, so the client adds as little as it can
    // to the round trips measured in section 2.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;

    progress(started, &format!("creating {} cgroups", opts.faults + 1));
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

    progress(started, "network namespaces and iptables rules");
    let clean = NetNs::new("clean")?;
    let mut ipt = Vec::new();
    for tool in [Iptables::Nft, Iptables::Legacy] {
        for (name, paths) in [("1", &many_paths[..1]), ("many", &many_paths[..])] {
            let ns = NetNs::new(if name == "1" { "ipt-1" } else { "ipt-many" })?;
            let t = Instant::now();
            let chain = IptChain::load(ns, tool, paths)?;
            progress(
                started,
                &format!(
                    "{}: {} rule(s) loaded in {:.2} s",
                    tool.name(),
                    paths.len(),
                    t.elapsed().as_secs_f64()
                ),
            );
            ipt.push(chain);
        }
    }
    let mut checks = Vec::new();
    for chain in &ipt {
        checks.push(chain.verify_drops(&target)?);
        progress(started, checks.last().map_or("", String::as_str));
    }

    let mut bench = Bench {
        opts: opts.clone(),
        started,
        rt,
        faultd,
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
    let runtime = started.elapsed();
    progress(started, "writing the report");
    let report = Report {
        env: &env,
        bench: &bench,
        latency: &latency,
        runtime,
        renice: &renice,
        load_end: loadavg(),
    };
    let dir = workspace_root().join("docs/benchmarks");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let md = dir.join("loss.md");
    let js = dir.join("loss.json");
    fs::write(&md, report.markdown()).with_context(|| format!("writing {}", md.display()))?;
    let mut json_text = serde_json::to_string_pretty(&report.json())?;
    json_text.push('\n');
    fs::write(&js, json_text).with_context(|| format!("writing {}", js.display()))?;
    progress(
        started,
        &format!("wrote {} and {}", md.display(), js.display()),
    );
    println!("\n{}", report.tables());
    for p in &bench.problems {
        println!("problem: {p}");
    }
    progress(started, "cleaning up");
    drop(bench);
    progress(started, "done");
    Ok(())
}
