//! `cargo xtask bench soak`: the agent under churn for minutes. Every
//! round applies a loss fault to each of N cgroups (alternately egress and
//! both directions, so the tc ingress path attaches and detaches too), half
//! of them with a 2 s deadline left to end on their own and half reverted
//! by request, while one target sends UDP traffic throughout. Sampled each
//! round: the agent's RSS, its open fds and the live faults. Afterwards the
//! node must be as it was after a warm-up fault each way: no fault listed, no entry left in the rules
//! maps, the same bpf links, qdiscs and ifb devices and no more fds than
//! before; every fault left to its deadline ended by it; and RSS must not
//! drift (the last tenth's median against the first's, after warm-up).
//! Writes docs/benchmarks/soak.md, soak.json and soak.png.

use std::{
    fmt::Write as _,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use clap::Args;
use faultd_common::names;
use faultd_proto::agent::v1 as pb;
use faultd_tests::{
    AgentGuard, AgentOptions, CgroupGuard,
    traffic::{UdpSendOptions, spawn_udp_send, udp_sink},
};
use serde_json::json;

use super::{
    env::progress,
    host::{Host, require_root},
    idle::rss_mb,
    report::{report_dir, write_report},
};
use crate::{
    plot::{Panel, Series, write_png},
    util::target_dir,
};

#[derive(Debug, Args)]
pub struct Options {
    /// How long the churn lasts.
    #[arg(long, default_value_t = 300)]
    pub seconds: u64,
    /// Target cgroups, each given a fault every round.
    #[arg(long, default_value_t = 20)]
    pub targets: usize,
}

/// RSS may grow at most this much from the first tenth to the last.
const RSS_DRIFT_GOAL_MB: f64 = 2.0;
/// Datagrams a second the traffic target sends.
const PPS: u64 = 5_000;

/// What must be back to where it was when the churn ends.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeState {
    fds: usize,
    links: usize,
    qdiscs: usize,
    ifbs: usize,
    rule_entries: usize,
}

fn count_json_array(cmd: &mut Command) -> anyhow::Result<usize> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Ok(0);
    }
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{cmd:?}"))?;
    Ok(v.as_array().map_or(0, Vec::len))
}

fn fds(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

fn node_state(pid: u32) -> anyhow::Result<NodeState> {
    let mut entries = 0;
    for map in [names::RULES_MAP, names::SYS_RULES_MAP] {
        entries +=
            count_json_array(Command::new("bpftool").args(["-j", "map", "dump", "name", map]))?;
    }
    Ok(NodeState {
        fds: fds(pid)?,
        links: count_json_array(Command::new("bpftool").args(["-j", "link", "show"]))?,
        qdiscs: count_json_array(Command::new("tc").args(["-j", "qdisc", "show"]))?,
        ifbs: count_json_array(Command::new("ip").args(["-j", "link", "show", "type", "ifb"]))?,
        rule_entries: entries,
    })
}

/// One round's sample.
#[derive(Debug)]
struct Sample {
    t: f64,
    rss_mb: f64,
    fds: usize,
    live: usize,
}

fn spec(
    id: String,
    target: &CgroupGuard,
    seconds: i64,
    direction: pb::Direction,
) -> pb::ApplyFaultRequest {
    pb::ApplyFaultRequest {
        spec: Some(pb::FaultSpec {
            id,
            target: Some(pb::Target {
                kind: Some(pb::target::Kind::CgroupPath(
                    target.relative_str().to_owned(),
                )),
            }),
            duration: Some(prost_types::Duration { seconds, nanos: 0 }),
            kind: Some(pb::fault_spec::Kind::Loss(pb::LossFault {
                probability_ppm: 100_000,
                direction: direction.into(),
                filter: None,
            })),
        }),
        lease: None,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[expect(clippy::too_many_lines, reason = "one benchmark, start to report")]
pub fn run(opts: &Options) -> anyhow::Result<()> {
    require_root("starts the agent and makes cgroups")?;
    let host = Host::start(&["bpftool", "tc", "ip"])?;
    // SAFETY: single-threaded here; the kit reads it when spawning.
    unsafe { std::env::set_var("FAULTD_BIN", target_dir("release").join("faultd")) };
    let parent = CgroupGuard::new("soak-bench");
    let targets: Vec<CgroupGuard> = (0..opts.targets)
        .map(|i| parent.child(&format!("t{i}")))
        .collect();
    let mut agent = AgentGuard::start(AgentOptions {
        extra_args: vec!["--max-faults".into(), (opts.targets * 4 + 16).to_string()],
        ..AgentOptions::default()
    });
    agent.wait_ready();
    let pid = agent.pid();
    let mut client = host
        .rt
        .block_on(faultctl::connect(&agent.socket()))
        .context("connecting to the agent")?;
    // Warm-up: one fault each way, reverted, so what the agent opens once
    // and keeps (the tc ingress program, the client's connection) is in the
    // baseline, and only what churn leaves behind counts against it.
    host.rt.block_on(async {
        for (id, direction) in [
            ("warm-up-egress", pb::Direction::Egress),
            ("warm-up-both", pb::Direction::Both),
        ] {
            client
                .apply_fault(spec(id.into(), &targets[0], 60, direction))
                .await?;
            client
                .revert_fault(pb::RevertFaultRequest { id: id.into() })
                .await?;
        }
        anyhow::Ok(())
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let before = node_state(pid)?;
    let sink = udp_sink(None, "127.0.0.1:0");
    let mut send = UdpSendOptions::new(sink.addr(), PPS * (opts.seconds + 30));
    send.pps = PPS;
    let mut sender = spawn_udp_send(Some(&targets[0]), &send);
    progress(
        host.started,
        &format!("churn for {} s on {} targets", opts.seconds, opts.targets),
    );

    let start = Instant::now();
    let mut samples = Vec::new();
    let mut round = 0u64;
    let (mut applied, mut reverted, mut left_to_deadline) = (0u64, 0u64, 0u64);
    let mut last_deadline_ids = Vec::new();
    while start.elapsed() < Duration::from_secs(opts.seconds) {
        let direction = if round.is_multiple_of(2) {
            pb::Direction::Egress
        } else {
            pb::Direction::Both
        };
        last_deadline_ids.clear();
        host.rt.block_on(async {
            for (i, t) in targets.iter().enumerate() {
                let id = format!("soak-{round}-{i}");
                let seconds = if i % 2 == 0 { 2 } else { 60 };
                client
                    .apply_fault(spec(id.clone(), t, seconds, direction))
                    .await
                    .with_context(|| format!("applying {id}"))?;
                applied += 1;
                if i % 2 == 0 {
                    left_to_deadline += 1;
                    last_deadline_ids.push(id);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            for i in (1..targets.len()).step_by(2) {
                let id = format!("soak-{round}-{i}");
                client
                    .revert_fault(pb::RevertFaultRequest { id: id.clone() })
                    .await
                    .with_context(|| format!("reverting {id}"))?;
                reverted += 1;
            }
            let live = client
                .list_faults(pb::ListFaultsRequest {})
                .await?
                .into_inner()
                .faults
                .len();
            samples.push(Sample {
                t: start.elapsed().as_secs_f64(),
                rss_mb: rss_mb(pid)?,
                fds: fds(pid)?,
                live,
            });
            tokio::time::sleep(Duration::from_millis(500)).await;
            anyhow::Ok(())
        })?;
        round += 1;
        if round.is_multiple_of(60) {
            progress(
                host.started,
                &format!("round {round}, {applied} faults applied"),
            );
        }
    }
    // The last deadline faults (2 s) end on their own.
    std::thread::sleep(Duration::from_secs(4));
    let (listed, last_states) = host.rt.block_on(async {
        let listed = client
            .list_faults(pb::ListFaultsRequest {})
            .await?
            .into_inner()
            .faults;
        let mut states = Vec::new();
        for id in &last_deadline_ids {
            // Gone (removed after expiry) or listed as expired, never active.
            let state = match client
                .get_fault(pb::GetFaultRequest { id: id.clone() })
                .await
            {
                Ok(f) => pb::FaultState::try_from(f.into_inner().state)
                    .map_or_else(|_| "unknown".to_owned(), |s| s.as_str_name().to_owned()),
                Err(s) if s.code() == tonic::Code::NotFound => "removed".to_owned(),
                Err(s) => return Err(anyhow::anyhow!("GetFault {id}: {s}")),
            };
            states.push(state);
        }
        anyhow::Ok((listed, states))
    })?;
    // Measured with the client still connected, as the baseline was.
    let after = node_state(pid)?;
    drop(client);
    let sent = sender.stop()["sent"].as_u64().unwrap_or(0);
    let sink_report = sink.stop();
    let warnings = agent.warnings();
    agent.stop();

    let tenth = (samples.len() / 10).max(1);
    // The first tenth is warm-up (allocator pools, tonic's buffers).
    let early = median(
        samples[tenth..(2 * tenth).min(samples.len())]
            .iter()
            .map(|s| s.rss_mb)
            .collect(),
    );
    let late = median(
        samples[samples.len().saturating_sub(tenth)..]
            .iter()
            .map(|s| s.rss_mb)
            .collect(),
    );
    let drift = late - early;
    let max_live = samples.iter().map(|s| s.live).max().unwrap_or(0);
    let ended_by_deadline = last_states
        .iter()
        .all(|s| s == "removed" || s == "FAULT_STATE_EXPIRED");
    let checks = [
        ("no fault listed at the end", listed.is_empty()),
        ("the rules maps are empty", after.rule_entries == 0),
        ("bpf links as before", after.links == before.links),
        ("qdiscs as before", after.qdiscs == before.qdiscs),
        ("ifb devices as before", after.ifbs == before.ifbs),
        ("no more fds than before", after.fds <= before.fds),
        (
            "faults left to their deadline ended by it",
            ended_by_deadline,
        ),
        ("RSS drift within the goal", drift <= RSS_DRIFT_GOAL_MB),
        ("the agent logged no warning", warnings.is_empty()),
    ];

    let env = &host.env;
    let mut md = host.report_head("Soak: the agent under churn", "xtask/src/bench/soak.rs");
    let _ = write!(
        md,
        "The release agent, {} target cgroups, for {} s. Each round applies a 10% loss fault \
         to every target (egress in even rounds, both directions in odd ones, so the tc \
         ingress path attaches and detaches too), half with a 2 s deadline left to end on \
         its own and half reverted by request 0.5 s later, then samples the agent; one target \
         sends {PPS} UDP datagrams a second to a sink on loopback throughout.\n\n\
         {round} rounds: {applied} faults applied, {reverted} reverted by request, \
         {left_to_deadline} left to their deadline; at most {max_live} listed at once. The \
         traffic: {} datagrams sent, {} received.\n\n\
         | | before | after |\n| --- | ---: | ---: |\n\
         | agent fds | {} | {} |\n| bpf links (node) | {} | {} |\n| qdiscs (node) | {} | {} |\n\
         | ifb devices | {} | {} |\n| rules map entries | {} | {} |\n\n\
         RSS: {early:.1} MB after warm-up (median of the second tenth of the samples), \
         {late:.1} MB at the end (median of the last tenth): drift {drift:+.2} MB, goal at most \
         {RSS_DRIFT_GOAL_MB} MB. The last round's deadline faults 4 s after the end: {}.\n\n\
         | check | result |\n| --- | --- |\n",
        opts.targets,
        opts.seconds,
        sent,
        sink_report.received,
        before.fds,
        after.fds,
        before.links,
        after.links,
        before.qdiscs,
        after.qdiscs,
        before.ifbs,
        after.ifbs,
        before.rule_entries,
        after.rule_entries,
        last_states.join(", "),
    );
    for (name, ok) in &checks {
        let _ = writeln!(md, "| {name} | {} |", if *ok { "yes" } else { "NO" });
    }
    let _ = writeln!(md, "\n![RSS, fds and live faults over the run](soak.png)");
    let series = |name: &str, f: &dyn Fn(&Sample) -> f64| Series {
        name: name.into(),
        points: samples.iter().map(|s| (s.t, f(s))).collect(),
        reference: false,
    };
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let panels = [
        Panel {
            title: "agent RSS".into(),
            x_label: "seconds".into(),
            y_label: "MB".into(),
            series: vec![series("VmRSS", &|s| s.rss_mb)],
            linear: true,
        },
        Panel {
            title: "agent fds and live faults".into(),
            x_label: "seconds".into(),
            y_label: "count".into(),
            series: vec![
                series("open fds", &|s| s.fds as f64),
                series("faults listed", &|s| s.live as f64),
            ],
            linear: true,
        },
    ];
    write_png(&report_dir()?.join("soak.png"), &panels)?;
    let js = env.report_json(json!({
        "seconds": opts.seconds,
        "targets": opts.targets,
        "rounds": round,
        "applied": applied,
        "reverted": reverted,
        "left_to_deadline": left_to_deadline,
        "before": {"fds": before.fds, "links": before.links, "qdiscs": before.qdiscs, "ifbs": before.ifbs, "rule_entries": before.rule_entries},
        "after": {"fds": after.fds, "links": after.links, "qdiscs": after.qdiscs, "ifbs": after.ifbs, "rule_entries": after.rule_entries},
        "rss_mb": samples.iter().map(|s| [s.t, s.rss_mb]).collect::<Vec<_>>(),
        "rss_drift_mb": drift,
        "checks": checks.iter().map(|(n, ok)| json!({"check": n, "ok": ok})).collect::<Vec<_>>(),
        "warnings": warnings,
    }));
    let (path, _) = write_report("soak", &md, &js)?;
    progress(host.started, &format!("wrote {}", path.display()));
    print!("{md}");
    let failed: Vec<&str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    ensure!(failed.is_empty(), "soak checks failed: {failed:?}");
    Ok(())
}
