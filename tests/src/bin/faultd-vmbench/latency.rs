//! `faultd-vmbench latency`: how precisely faultd's EDT delay and tc netem
//! add a requested delay, on the same kernel and the same path, and what
//! each costs traffic that is not targeted.
//!
//! Topology: a veth pair from this namespace (`fdv0`, 10.77.0.1) to a peer
//! namespace (`fdv1`, 10.77.0.2) holding the sinks. The target cgroup sends
//! one-way-delay probes (`owd-send`, each from a fresh socket so every probe
//! is an independent draw for both tools) to an `owd-sink` in the peer,
//! which reads the kernel's receive stamp; sender and sink share one clock.
//! Only the probes cross the delaying device, so the added one-way delay is
//! exactly what a tool adds.
//!
//! - faultd: a latency fault on the target cgroup; the agent installs fq on
//!   fdv0 (and the namespace's other devices) and restores them on revert.
//! - netem: `tc qdisc add dev fdv0 root netem delay ...` — the whole device,
//!   as interface-level tools do, so the bystander is delayed too.
//!
//! Per requested delay and tool: quantiles of the added delay (one-way delay
//! minus the no-fault median measured in the same run). Then the bystander's
//! TCP throughput over fdv0 with each tool delaying the target by 100 ms, and
//! the CPU cost per packet of a fixed-rate UDP stream from the target with a
//! 10 ms delay (system-wide busy time from /proc/stat, plus faultd_egress's
//! own run time from the kernel's BPF statistics).

use std::{
    net::SocketAddr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use faultd_proto::agent::v1::{self as pb, agent_client::AgentClient};
use faultd_tests::{
    AgentGuard, CgroupGuard,
    faults::Latency,
    measure::{Probes, prog_runs_during},
    stats::{inverse_normal_cdf, quantile},
    traffic::{OwdReport, owd_send, owd_sink, tcp_send, udp_send},
};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::Progress;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    #[command(flatten)]
    pub probe: Probes,
    /// Requested fixed delays, ms, separated by ':' (the kernel command line
    /// carrying the arguments splits on commas).
    #[arg(long, value_delimiter = ':', default_value = "1:10:100:1000")]
    pub delays_ms: Vec<u64>,
    /// The jitter case: this delay with this normal jitter, ms.
    #[arg(long, default_value_t = 10)]
    pub jitter_ms: u64,
    /// Bytes the bystander sends for the throughput measurement.
    #[arg(long, default_value_t = 32 << 20)]
    pub bulk_bytes: u64,
    /// UDP packets per second for the CPU measurement.
    #[arg(long, default_value_t = 10_000)]
    pub cpu_pps: u64,
    /// Seconds of UDP stream per CPU measurement.
    #[arg(long, default_value_t = 3)]
    pub cpu_secs: u64,
    /// Rounds: each requested delay's probes are split into this many
    /// blocks per tool, alternating the tools; the throughput and CPU
    /// measurements repeat this often (each visits no fault, faultd and
    /// netem).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
}

const NETNS: &str = "fdpeer";
const NETNS_FILE: &str = "/run/netns/fdpeer";
const DEV: &str = "fdv0";
const PEER_DEV: &str = "fdv1";
const LOCAL: &str = "10.77.0.1";
const PEER: &str = "10.77.0.2";
/// The quantiles every measurement reports.
const QUANTILES: [f64; 11] = [
    0.001, 0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99, 0.999,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Faultd = 0,
    Netem = 1,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Self::Faultd => "faultd",
            Self::Netem => "netem",
        }
    }
}

/// A requested delay: fixed, or with normal jitter.
#[derive(Clone, Copy, Debug)]
struct Case {
    delay_ms: u64,
    jitter_ms: u64,
}

impl Case {
    fn label(self) -> String {
        if self.jitter_ms == 0 {
            format!("{} ms", self.delay_ms)
        } else {
            format!("{} ms ± {} ms normal", self.delay_ms, self.jitter_ms)
        }
    }

    /// The requested added delay's q-quantile, ms: both tools draw jitter
    /// from a table of the standard normal clipped at ±4σ (iproute2's
    /// normal.dist; faultd's jitter.rs), and send a negative total at once.
    fn requested_quantile(self, q: f64) -> f64 {
        let z = inverse_normal_cdf(q).clamp(-4.0, 4.0);
        #[expect(clippy::cast_precision_loss, reason = "milliseconds")]
        let (d, j) = (self.delay_ms as f64, self.jitter_ms as f64);
        (d + j * z).max(0.0)
    }
}

pub fn run(opts: &Options, progress: &Progress) -> anyhow::Result<Value> {
    ensure!(opts.probe.probes >= 100, "--probes >= 100");
    let topology = Topology::create()?;
    progress.say("veth pair fdv0 <-> fdv1 (netns fdpeer) up");
    let mut agent = AgentGuard::start(faultd_tests::AgentOptions::default());
    agent.wait_ready();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let mut client = rt.block_on(agent.client());
    let caps = rt
        .block_on(client.get_capabilities(pb::GetCapabilitiesRequest {}))?
        .into_inner();
    let fq = caps.features.iter().find(|f| f.name == "fq_qdisc");
    ensure!(
        fq.is_some_and(|f| f.available),
        "fq unavailable: {}",
        fq.map_or("not reported", |f| f.detail.as_str())
    );
    let egress_prog = caps
        .programs
        .iter()
        .find(|p| p.name == "faultd_egress")
        .map(|p| p.id)
        .context("GetCapabilities lists no faultd_egress program")?;
    let target = CgroupGuard::new("vmbench-lat-target");
    let bystander = CgroupGuard::new("vmbench-lat-bystander");
    let mut b = Bench {
        opts: opts.clone(),
        progress: *progress,
        rt,
        client,
        target,
        bystander,
        qdisc_before: tc_show()?,
        problems: Vec::new(),
    };

    let rounds = u64::try_from(opts.rounds.max(1)).context("rounds")?;
    let probes_per_round = opts.probe.probes.div_ceil(rounds);
    let baseline = b.probe(opts.probe.probes)?;
    let base_median = quantile(&baseline, 0.5);
    progress.say(&format!(
        "no fault: one-way delay median {:.1} µs, p99 {:.1} µs",
        base_median * 1e3,
        quantile(&baseline, 0.99) * 1e3
    ));
    let mut cases: Vec<Case> = opts
        .delays_ms
        .iter()
        .map(|&d| Case {
            delay_ms: d,
            jitter_ms: 0,
        })
        .collect();
    cases.push(Case {
        delay_ms: opts.jitter_ms,
        jitter_ms: opts.jitter_ms,
    });
    let mut results = Vec::new();
    for case in &cases {
        // Each tool's probes are split over `rounds` blocks that alternate
        // with the other tool's (faultd, netem | netem, faultd | ...), so a
        // burst of load on this shared machine lands on both, not on one.
        let mut samples = [Vec::new(), Vec::new()];
        for round in 0..opts.rounds {
            let order = if round % 2 == 0 {
                [Tool::Faultd, Tool::Netem]
            } else {
                [Tool::Netem, Tool::Faultd]
            };
            for tool in order {
                let owd = b.with_delay(tool, *case, |b| b.probe(probes_per_round))?;
                samples[tool as usize].extend(owd);
            }
        }
        for tool in [Tool::Faultd, Tool::Netem] {
            let added: Vec<f64> = samples[tool as usize]
                .iter()
                .map(|v| v - base_median)
                .collect();
            let q: Vec<Value> = QUANTILES
                .iter()
                .map(|&p| {
                    let got = quantile(&added, p);
                    let want = case.requested_quantile(p);
                    json!({"q": p, "added_ms": got, "requested_ms": want, "error_ms": got - want})
                })
                .collect();
            progress.say(&format!(
                "{}: {}: added p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
                tool.name(),
                case.label(),
                quantile(&added, 0.5),
                quantile(&added, 0.99),
                quantile(&added, 0.999)
            ));
            #[expect(clippy::cast_precision_loss, reason = "a count")]
            let mean = added.iter().sum::<f64>() / added.len() as f64;
            results.push(json!({
                "tool": tool.name(),
                "delay_ms": case.delay_ms,
                "jitter_ms": case.jitter_ms,
                "label": case.label(),
                "n": added.len(),
                "mean_ms": mean,
                "min_ms": quantile(&added, 0.0),
                "max_ms": quantile(&added, 1.0),
                "quantiles": q,
            }));
        }
    }

    let throughput = b.bystander_throughput()?;
    let cpu = b.cpu_cost(egress_prog)?;
    b.check_qdiscs_restored()?;
    drop(b.client);
    // The agent says at WARN that it replaced a device's default qdisc (it
    // must say so); that is the expected course here, not a problem.
    b.problems.extend(
        agent
            .stop_and_review(&b.rt)
            .into_iter()
            .filter(|w| !w.contains("replaced the kernel's default root qdisc")),
    );
    drop(topology);
    Ok(json!({
        "options": {
            "probes": opts.probe.probes,
            "interval_us": opts.probe.interval_us,
            "delays_ms": opts.delays_ms,
            "jitter_ms": opts.jitter_ms,
            "bulk_bytes": opts.bulk_bytes,
            "cpu_pps": opts.cpu_pps,
            "cpu_secs": opts.cpu_secs,
            "rounds": opts.rounds,
        },
        "baseline_owd_ms": QUANTILES.iter().map(|&p| json!({"q": p, "ms": quantile(&baseline, p)})).collect::<Vec<_>>(),
        "baseline_median_ms": base_median,
        "delays": results,
        "bystander_throughput": throughput,
        "cpu": cpu,
        "problems": b.problems,
    }))
}

/// The veth pair and peer namespace; removed on drop.
#[derive(Debug)]
struct Topology;

impl Topology {
    fn create() -> anyhow::Result<Self> {
        // A leftover of an interrupted run would make `add` fail.
        let _ = ip(&["netns", "del", NETNS]);
        let _ = ip(&["link", "del", DEV]);
        let peer_ns = format!("netns {NETNS}");
        for args in [
            vec!["netns", "add", NETNS],
            vec!["link", "add", DEV, "type", "veth", "peer", "name", PEER_DEV],
            vec!["link", "set", PEER_DEV, "netns", NETNS],
            vec!["addr", "add", &format!("{LOCAL}/24"), "dev", DEV],
            vec!["link", "set", DEV, "up"],
            vec![
                "-n",
                NETNS,
                "addr",
                "add",
                &format!("{PEER}/24"),
                "dev",
                PEER_DEV,
            ],
            vec!["-n", NETNS, "link", "set", PEER_DEV, "up"],
            vec!["-n", NETNS, "link", "set", "lo", "up"],
        ] {
            ip(&args).with_context(|| format!("setting up the veth pair ({peer_ns})"))?;
        }
        Ok(Self)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", DEV]);
        let _ = ip(&["netns", "del", NETNS]);
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    command("ip", args)
}

fn tc(args: &[&str]) -> anyhow::Result<()> {
    command("tc", args)
}

fn command(tool: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .with_context(|| format!("running {tool}"))?;
    if !out.status.success() {
        bail!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `tc qdisc show` of this namespace: what revert must give back.
fn tc_show() -> anyhow::Result<String> {
    let out = Command::new("tc")
        .args(["qdisc", "show"])
        .output()
        .context("running tc qdisc show")?;
    ensure!(out.status.success(), "tc qdisc show failed");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Busy (non-idle, non-iowait) time of all CPUs so far, from /proc/stat.
fn busy_time() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let cpu = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat has no cpu line")?;
    let fields: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(100);
    Ok(Duration::from_nanos(busy * 1_000_000_000 / hz))
}

struct Bench {
    opts: Options,
    progress: Progress,
    rt: tokio::runtime::Runtime,
    client: AgentClient<Channel>,
    target: CgroupGuard,
    bystander: CgroupGuard,
    qdisc_before: String,
    problems: Vec<String>,
}

impl Bench {
    /// One-way delays (ms) of `probes` probes from the target.
    fn probe(&mut self, probes: u64) -> anyhow::Result<Vec<f64>> {
        let interval = Duration::from_micros(self.opts.probe.interval_us);
        #[expect(clippy::cast_possible_truncation, reason = "probes * interval fits")]
        let span = interval * probes as u32;
        let mut sink = owd_sink(
            Some(Path::new(NETNS_FILE)),
            &format!("{PEER}:0"),
            probes,
            span + Duration::from_secs(30),
        );
        let dst = SocketAddr::new(PEER.parse()?, sink.port());
        let sent = owd_send(Some(&self.target), dst, probes, interval, true);
        ensure!(sent.sent == probes, "probes not sent: {sent:?}");
        let report: OwdReport = sink.process().finish_as();
        if report.received < probes {
            self.problems
                .push(format!("{} of {probes} probes arrived", report.received));
        }
        ensure!(report.received > 0, "no probe arrived");
        #[expect(clippy::cast_precision_loss, reason = "nanoseconds to ms")]
        Ok(report.owd_ns.iter().map(|&ns| ns as f64 / 1e6).collect())
    }

    /// Runs `work` while `tool` delays the target's packets by `case`.
    fn with_delay<T>(
        &mut self,
        tool: Tool,
        case: Case,
        work: impl FnOnce(&mut Self) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let delay = Duration::from_millis(case.delay_ms);
        let jitter = Duration::from_millis(case.jitter_ms);
        match tool {
            Tool::Faultd => {
                let mut fault = Latency::new("bench", self.target.relative_str(), delay);
                fault.duration = Duration::from_secs(600);
                if case.jitter_ms > 0 {
                    fault = fault.jitter(jitter, pb::Distribution::Normal);
                }
                self.rt
                    .block_on(self.client.apply_fault(fault.request()))
                    .context("ApplyFault latency")?;
            }
            Tool::Netem => {
                let (d, j) = (
                    format!("{}ms", case.delay_ms),
                    format!("{}ms", case.jitter_ms),
                );
                // netem's default limit (1000 packets) drops what a long
                // delay holds; raise it so both tools deliver every probe.
                let mut args = vec!["qdisc", "add", "dev", DEV, "root", "netem", "delay", &d];
                if case.jitter_ms > 0 {
                    args.extend([j.as_str(), "distribution", "normal"]);
                }
                args.extend(["limit", "1000000"]);
                tc(&args)?;
            }
        }
        let out = work(self);
        match tool {
            Tool::Faultd => {
                self.rt
                    .block_on(
                        self.client
                            .revert_fault(pb::RevertFaultRequest { id: "bench".into() }),
                    )
                    .context("RevertFault")?;
            }
            Tool::Netem => tc(&["qdisc", "del", "dev", DEV, "root"])?,
        }
        out
    }

    /// The bystander's TCP throughput over fdv0, MB/s.
    fn throughput(&mut self) -> anyhow::Result<f64> {
        let mut sink = faultd_tests::traffic::Server::start(
            &[
                "--netns",
                NETNS_FILE,
                "tcp-sink",
                "--bind",
                &format!("{PEER}:0"),
                "--timeout-ms",
                "120000",
            ],
            &format!("{PEER}:0"),
            None,
        );
        let dst = SocketAddr::new(PEER.parse()?, sink.port());
        let started = Instant::now();
        let sent = tcp_send(Some(&self.bystander), dst, self.opts.bulk_bytes);
        let elapsed = started.elapsed();
        let _: Value = sink.process().finish();
        ensure!(
            sent.bytes == self.opts.bulk_bytes,
            "bystander TCP transfer incomplete: {sent:?}"
        );
        #[expect(clippy::cast_precision_loss, reason = "bytes to MB/s")]
        Ok(self.opts.bulk_bytes as f64 / elapsed.as_secs_f64() / 1e6)
    }

    fn bystander_throughput(&mut self) -> anyhow::Result<Value> {
        let case = Case {
            delay_ms: 100,
            jitter_ms: 0,
        };
        let mut rows = Vec::new();
        for round in 0..self.opts.rounds {
            let none = self.throughput()?;
            let faultd = self.with_delay(Tool::Faultd, case, Self::throughput)?;
            let netem = self.with_delay(Tool::Netem, case, Self::throughput)?;
            self.progress.say(&format!(
                "bystander TCP round {round}: no fault {none:.1} MB/s, faultd {faultd:.1}, netem \
                 {netem:.1}"
            ));
            rows.push(json!({"round": round, "none_mb_s": none, "faultd_mb_s": faultd, "netem_mb_s": netem}));
        }
        Ok(
            json!({"target_delay_ms": case.delay_ms, "bulk_bytes": self.opts.bulk_bytes, "rounds": rows}),
        )
    }

    /// System-wide busy CPU per packet of a UDP stream from the target.
    fn stream_cpu(&mut self, prog: Option<u32>) -> anyhow::Result<(f64, Option<f64>)> {
        let count = self.opts.cpu_pps * self.opts.cpu_secs;
        let mut sink = faultd_tests::traffic::Server::start(
            &[
                "--netns",
                NETNS_FILE,
                "udp-sink",
                "--bind",
                &format!("{PEER}:0"),
                "--duration-ms",
                "120000",
                "--idle-ms",
                "3000",
            ],
            &format!("{PEER}:0"),
            None,
        );
        let dst = SocketAddr::new(PEER.parse()?, sink.port());
        let before = busy_time()?;
        let mut ns_per_run = None;
        let pps = self.opts.cpu_pps;
        let target = &self.target;
        match prog {
            Some(id) => {
                let (_, ns) = prog_runs_during(id, || {
                    udp_send(Some(target), dst, count, pps);
                });
                ns_per_run = Some(ns);
            }
            None => {
                udp_send(Some(target), dst, count, pps);
            }
        }
        let report: Value = sink.process().finish();
        let busy = busy_time()? - before;
        let received = report["received"].as_u64().unwrap_or(0);
        if received < count {
            self.problems.push(format!(
                "CPU stream: {received} of {count} datagrams arrived"
            ));
        }
        #[expect(clippy::cast_precision_loss, reason = "ns per packet")]
        Ok((busy.as_nanos() as f64 / count as f64, ns_per_run))
    }

    fn cpu_cost(&mut self, egress_prog: u32) -> anyhow::Result<Value> {
        let case = Case {
            delay_ms: 10,
            jitter_ms: 0,
        };
        let mut rows = Vec::new();
        for round in 0..self.opts.rounds {
            let (none, _) = self.stream_cpu(None)?;
            let (faultd, prog) =
                self.with_delay(Tool::Faultd, case, |b| b.stream_cpu(Some(egress_prog)))?;
            let (netem, _) = self.with_delay(Tool::Netem, case, |b| b.stream_cpu(None))?;
            self.progress.say(&format!(
                "CPU per packet round {round}: no fault {none:.0} ns, faultd {faultd:.0} ns \
                 (faultd_egress {:.0} ns/run), netem {netem:.0} ns",
                prog.unwrap_or(f64::NAN)
            ));
            rows.push(json!({
                "round": round,
                "none_ns": none,
                "faultd_ns": faultd,
                "faultd_egress_ns_per_run": prog,
                "netem_ns": netem,
            }));
        }
        Ok(
            json!({"delay_ms": case.delay_ms, "pps": self.opts.cpu_pps, "secs": self.opts.cpu_secs, "rounds": rows}),
        )
    }

    /// After every revert the devices carry exactly their original qdiscs.
    fn check_qdiscs_restored(&mut self) -> anyhow::Result<()> {
        let after = tc_show()?;
        if after != self.qdisc_before {
            self.problems.push(format!(
                "qdiscs differ after the run:\nbefore:\n{}\nafter:\n{after}",
                self.qdisc_before
            ));
        }
        Ok(())
    }
}
