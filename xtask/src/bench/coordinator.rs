//! `cargo xtask bench coordinator`: how long CreateExperiment takes, from
//! the call to every fault live in every agent's kernel, for 1, 10 and 100
//! agents (writes docs/benchmarks/coordinator.md and coordinator.json).
//!
//! CreateExperiment returns once every selected agent answered its
//! ApplyFault, and an agent answers only after the fault's rules are in its
//! kernel maps and its programs attached (the agent's documented contract),
//! so the call's latency is the time to every fault active. Each run's
//! faults are then checked on every agent (GetFault, state active) before
//! the experiment is stopped for the next run.
//!
//! Real agents run each in its own network namespace on this kernel (the
//! test kit's lab), 1, 10 and 100 of them. A second 100-agent row uses
//! `faultd-simagent`: one process serving a hundred agents with faultd's
//! real gRPC service, mutual TLS, authorization, manager and cgroup
//! resolution, over an in-memory datapath, which separates the
//! coordinator's own cost from the agents' kernel work and from a hundred
//! agent processes sharing the machine's CPUs. The report says which row
//! is which.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use faultd_proto::{agent::v1 as apb, coordinator::v1 as pb};
use faultd_tests::{
    faults::{all, experiment},
    lab::{Lab, LabOptions},
};
use serde_json::json;

use super::{
    env::progress,
    host::{Host, require_root},
    report::write_report,
    stats::{max, median, quantile},
};
use crate::util::target_dir;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Experiments measured per agent count (after a few warm-up ones).
    #[arg(long, default_value_t = 60)]
    pub experiments: usize,
    /// Agent counts run with real agents.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 10, 100])]
    pub real: Vec<usize>,
    /// Agent counts run with simulated agents (faultd-simagent).
    #[arg(long, value_delimiter = ',', default_values_t = [100])]
    pub simulated: Vec<usize>,
}

const WARM_UP: usize = 3;

#[derive(Debug)]
struct Series {
    agents: usize,
    simulated: bool,
    latencies_ms: Vec<f64>,
    setup_s: f64,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    require_root("starts agents in network namespaces")?;
    let host = Host::start(&["nsenter", "ip"])?;
    let release = target_dir("release");
    for (var, bin) in [
        ("FAULTD_BIN", "faultd"),
        ("FAULTD_COORDINATOR_BIN", "faultd-coordinator"),
        ("FAULTD_SIMAGENT_BIN", "faultd-simagent"),
    ] {
        let path = release.join(bin);
        ensure!(path.is_file(), "{} is missing", path.display());
        // SAFETY: single-threaded here; the kit reads these when spawning.
        unsafe { std::env::set_var(var, &path) };
    }
    let mut series = Vec::new();
    let runs: Vec<(usize, bool)> = opts
        .real
        .iter()
        .map(|n| (*n, false))
        .chain(opts.simulated.iter().map(|n| (*n, true)))
        .collect();
    for (agents, simulated) in runs {
        progress(
            host.started,
            &format!(
                "{agents} {} agents",
                if simulated { "simulated" } else { "real" }
            ),
        );
        let s = host
            .rt
            .block_on(measure(agents, simulated, opts.experiments))?;
        progress(
            host.started,
            &format!(
                "{agents} agents: p50 {:.1} ms, p99 {:.1} ms",
                median(&s.latencies_ms),
                quantile(&s.latencies_ms, 0.99)
            ),
        );
        series.push(s);
    }
    let (md, js) = report(&host, opts, &series);
    let (md_path, _) = write_report("coordinator", &md, &js)?;
    progress(host.started, &format!("wrote {}", md_path.display()));
    Ok(())
}

async fn measure(agents: usize, simulated: bool, experiments: usize) -> anyhow::Result<Series> {
    let start = Instant::now();
    let lab = Lab::new(&LabOptions {
        nodes: agents,
        simulated,
        lease_ttl: Duration::from_secs(15),
        policy_toml: "[limits]\nmax_node_fraction = 1.0\nmax_concurrent_experiments = 5\n".into(),
        ..LabOptions::default()
    });
    let _apps: Vec<_> = lab.nodes.iter().map(|n| n.scope.child("app")).collect();
    let setup_s = start.elapsed().as_secs_f64();
    let mut op = lab.operator();
    let glob = format!("{}/*/app", lab.root.relative_str());
    let reader = lab.client_cert(faultd_tests::lab::READER_ID);
    let mut agents_tls: std::collections::HashMap<String, _> = lab
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), lab.agent_over_tls(i, &reader)))
        .collect();
    let mut latencies = Vec::new();
    for i in 0..WARM_UP + experiments {
        let id = format!("bench-{agents}-{i}");
        let spec = experiment(
            &id,
            pb::fault_template::Kind::Loss(apb::LossFault {
                probability_ppm: 1_000,
                direction: apb::Direction::Egress.into(),
                filter: None,
            }),
            apb::target_pattern::Kind::CgroupGlob(glob.clone()),
            all(),
            600,
        );
        let t0 = Instant::now();
        let x = op
            .create_experiment(pb::CreateExperimentRequest {
                spec: Some(spec),
                dry_run: false,
            })
            .await
            .with_context(|| format!("CreateExperiment {id}"))?
            .into_inner();
        let took = t0.elapsed();
        if x.state != i32::from(pb::ExperimentState::Running) || x.targets.len() != agents {
            bail!(
                "{id}: {} targets in state {} ({})",
                x.targets.len(),
                x.state,
                x.end_reason
            );
        }
        // Every fault live on its agent (real agents; the simulated ones
        // hold them in memory).
        for t in &x.targets {
            let Some(agent) = agents_tls.get_mut(&t.node) else {
                continue;
            };
            let f = agent
                .get_fault(apb::GetFaultRequest {
                    id: t.fault_id.clone(),
                })
                .await
                .with_context(|| format!("GetFault {} on {}", t.fault_id, t.node))?
                .into_inner();
            ensure!(
                f.state == i32::from(apb::FaultState::Active),
                "{} on {} is not active",
                t.fault_id,
                t.node
            );
        }
        op.stop_experiment(pb::StopExperimentRequest {
            id: id.clone(),
            reason: "bench".into(),
        })
        .await
        .with_context(|| format!("StopExperiment {id}"))?;
        if i >= WARM_UP {
            latencies.push(took.as_secs_f64() * 1e3);
        }
    }
    Ok(Series {
        agents,
        simulated,
        latencies_ms: latencies,
        setup_s,
    })
}

fn report(host: &Host, opts: &Options, series: &[Series]) -> (String, serde_json::Value) {
    let env = &host.env;
    let mut md = host.report_head(
        "Coordinator: time from CreateExperiment to every fault active",
        "xtask/src/bench/coordinator.rs",
    );
    md.push_str(
        "Each run creates an experiment with one loss fault on every agent (mode all), \
         times the CreateExperiment call, checks each fault is active on its agent \
         (GetFault over mutual TLS), and stops it. CreateExperiment returns only after every \
         agent answered its ApplyFault, and an agent answers only once the fault is in its \
         kernel (rules written, programs attached), so the call's latency is the time to \
         every fault active. Everything runs over mutual TLS 1.3: coordinator and agents in \
         their own network namespaces on this machine, the coordinator's store in SQLite \
         with `synchronous = FULL`.\n\n",
    );
    md.push_str(
        "| Agents | Kind | Runs | p50 | p90 | p99 | max | lab set-up |\n\
         | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut rows = Vec::new();
    for s in series {
        let kind = if s.simulated {
            "simulated (faultd-simagent)"
        } else {
            "real faultd, own netns each"
        };
        let q = |p| quantile(&s.latencies_ms, p);
        md.push_str(&format!(
            "| {} | {kind} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} s |\n",
            s.agents,
            s.latencies_ms.len(),
            q(0.5),
            q(0.9),
            q(0.99),
            max(&s.latencies_ms),
            s.setup_s
        ));
        rows.push(json!({
            "agents": s.agents,
            "simulated": s.simulated,
            "runs": s.latencies_ms.len(),
            "p50_ms": q(0.5),
            "p90_ms": q(0.9),
            "p99_ms": q(0.99),
            "max_ms": max(&s.latencies_ms),
            "latencies_ms": s.latencies_ms,
        }));
    }
    md.push_str(&format!(
        "\n{} runs measured per row after {WARM_UP} warm-up runs.\n\n",
        opts.experiments
    ));
    let goal = series
        .iter()
        .filter(|s| s.agents == 100)
        .map(|s| {
            let p99 = quantile(&s.latencies_ms, 0.99);
            format!(
                "{} with {} agents: p99 {p99:.1} ms, {}",
                if s.simulated { "simulated" } else { "real" },
                s.agents,
                if p99 < 100.0 { "met" } else { "**not met**" }
            )
        })
        .collect::<Vec<_>>();
    if !goal.is_empty() {
        md.push_str(&format!(
            "Goal: p99 under 100 ms for 100 agents on this machine. {}.\n\n",
            goal.join("; ")
        ));
    }
    md.push_str(
        "Real rows run faultd itself, one process per agent, each in its own network \
         namespace with its own cgroup scope, loading and attaching its own programs on this \
         kernel. **Simulated** rows run `faultd-simagent` (tests/simagent/): one process \
         serving that many agents, each with its own node name, certificate, TLS port and \
         cgroup scope, and faultd's real gRPC service, authorization, manager and cgroup \
         resolution, over an in-memory datapath. What a simulated row leaves out is the \
         kernel part of an apply and the cost of that many agent processes sharing the \
         machine's CPUs; the difference between the two 100-agent rows is that part.\n",
    );
    let js = env.report_json(json!({
        "series": rows,
    }));
    (md, js)
}
