//! `cargo xtask bench idle`: the agent's footprint when nothing happens.
//! Its resident memory and CPU are sampled over a window with no fault,
//! then over the same window with 1,000 faults live (a 0.1% egress loss on
//! each of 1,000 cgroups, no traffic). Goal: at most 20 MB RSS and 0.1% of
//! one CPU, idle.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use clap::Args;
use faultd_proto::agent::v1 as pb;
use faultd_tests::{AgentGuard, AgentOptions, CgroupGuard};
use serde_json::json;

use super::{
    api::{Api, BoxFut, bulk},
    env::progress,
    host::{Host, require_root},
    report::write_report,
};
use crate::util::target_dir;

#[derive(Debug, Args)]
pub struct Options {
    /// Seconds each window lasts.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Faults live in the second window.
    #[arg(long, default_value_t = 1000)]
    pub faults: usize,
}

const RSS_GOAL_MB: f64 = 20.0;
const CPU_GOAL_PERCENT: f64 = 0.1;

/// One window: RSS each second (MB) and the CPU time the agent used.
#[derive(Debug)]
struct Window {
    rss_mb: Vec<f64>,
    cpu_s: f64,
    seconds: f64,
}

impl Window {
    fn cpu_percent(&self) -> f64 {
        self.cpu_s / self.seconds * 100.0
    }

    fn max_rss(&self) -> f64 {
        self.rss_mb.iter().copied().fold(0.0, f64::max)
    }
}

/// utime + stime of `pid` (all its threads), in seconds: fields 14 and 15
/// of /proc/<pid>/stat, in clock ticks.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; fields after its ')'.
    let rest = stat.rsplit_once(')').context("/proc/pid/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.context("CLK_TCK")?;
    #[expect(clippy::cast_precision_loss, reason = "ticks of a short run")]
    Ok(ticks as f64 / hz as f64)
}

/// VmRSS of `pid`, in MB.
pub(super) fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("VmRSS")?
        .parse()?;
    Ok(kb / 1024.0)
}

fn sample(pid: u32, seconds: u64) -> anyhow::Result<Window> {
    let start = Instant::now();
    let cpu0 = cpu_seconds(pid)?;
    let mut rss = Vec::new();
    for i in 1..=seconds {
        std::thread::sleep(
            (start + Duration::from_secs(i)).saturating_duration_since(Instant::now()),
        );
        rss.push(rss_mb(pid)?);
    }
    Ok(Window {
        rss_mb: rss,
        cpu_s: cpu_seconds(pid)? - cpu0,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn apply(api: &Api, req: pb::ApplyFaultRequest) -> BoxFut<pb::ApplyFaultResponse> {
    (api.apply)(req)
}

fn revert(api: &Api, id: String) -> BoxFut<pb::RevertFaultResponse> {
    (api.revert)(id)
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    require_root("starts the agent and makes cgroups")?;
    let host = Host::start(&[])?;
    // SAFETY: single-threaded here; the kit reads it when spawning.
    unsafe { std::env::set_var("FAULTD_BIN", target_dir("release").join("faultd")) };
    let parent = CgroupGuard::new("idle-bench");
    let targets: Vec<CgroupGuard> = (0..opts.faults)
        .map(|i| parent.child(&format!("t{i}")))
        .collect();
    let mut agent = AgentGuard::start(AgentOptions {
        extra_args: vec!["--max-faults".into(), (opts.faults + 16).to_string()],
        ..AgentOptions::default()
    });
    agent.wait_ready();
    let pid = agent.pid();
    // Start-up work (program loads, probes) settles first.
    std::thread::sleep(Duration::from_secs(5));
    progress(
        host.started,
        &format!("no fault: sampling {} s", opts.seconds),
    );
    let idle = sample(pid, opts.seconds)?;
    let requests: Vec<pb::ApplyFaultRequest> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| pb::ApplyFaultRequest {
            spec: Some(pb::FaultSpec {
                id: format!("idle-{i}"),
                target: Some(pb::Target {
                    kind: Some(pb::target::Kind::CgroupPath(t.relative_str().to_owned())),
                }),
                duration: Some(prost_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
                kind: Some(pb::fault_spec::Kind::Loss(pb::LossFault {
                    probability_ppm: 1_000,
                    direction: pb::Direction::Egress.into(),
                    filter: None,
                })),
            }),
            lease: None,
        })
        .collect();
    let socket = agent.socket();
    let t = Instant::now();
    host.rt.block_on(bulk(&socket, requests, apply))?;
    let apply_s = t.elapsed().as_secs_f64();
    progress(
        host.started,
        &format!(
            "{} faults applied in {apply_s:.1} s; sampling {} s",
            opts.faults, opts.seconds
        ),
    );
    std::thread::sleep(Duration::from_secs(2));
    let loaded = sample(pid, opts.seconds)?;
    let ids: Vec<String> = (0..opts.faults).map(|i| format!("idle-{i}")).collect();
    host.rt.block_on(bulk(&socket, ids, revert))?;
    let warnings = agent.warnings();
    agent.stop();
    ensure!(warnings.is_empty(), "the agent warned: {warnings:#?}");

    let env = &host.env;
    let mut md = host.report_head(
        "The agent at rest: memory and CPU",
        "xtask/src/bench/idle.rs",
    );
    let _ = write!(
        md,
        "The release agent, started with its default config (`--max-faults {}`), left alone \
         for 5 s, then sampled for {} s with no fault, then for {} s with {} faults live \
         (0.1% egress loss, one per cgroup, no traffic through them). RSS is `VmRSS` of \
         /proc/<pid>/status each second; CPU is the agent's utime + stime (all threads) over \
         the window, as a share of one CPU. Goal: at most {RSS_GOAL_MB} MB RSS and \
         {CPU_GOAL_PERCENT}% of one CPU.\n\n\
         | Window | RSS first | RSS max | CPU | Goal met |\n| --- | ---: | ---: | ---: | --- |\n",
        opts.faults + 16,
        opts.seconds,
        opts.seconds,
        opts.faults,
    );
    let mut rows = Vec::new();
    for (name, w) in [
        ("no fault", &idle),
        (&*format!("{} faults", opts.faults), &loaded),
    ] {
        let met = w.max_rss() <= RSS_GOAL_MB && w.cpu_percent() <= CPU_GOAL_PERCENT;
        let _ = writeln!(
            md,
            "| {name} | {:.1} MB | {:.1} MB | {:.3}% ({:.2} s) | {} |",
            w.rss_mb.first().copied().unwrap_or_default(),
            w.max_rss(),
            w.cpu_percent(),
            w.cpu_s,
            if met { "yes" } else { "no" }
        );
        rows.push(json!({
            "window": name,
            "rss_mb": w.rss_mb,
            "rss_max_mb": w.max_rss(),
            "cpu_seconds": w.cpu_s,
            "cpu_percent": w.cpu_percent(),
            "seconds": w.seconds,
            "goal_met": met,
        }));
    }
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100);
    #[expect(clippy::cast_precision_loss, reason = "a clock rate")]
    let resolution = 100.0 / (hz as f64 * opts.seconds as f64);
    let _ = writeln!(
        md,
        "\nApplying the {} faults took {apply_s:.1} s ({} concurrent clients). The kernel \
         counts CPU time in clock ticks ({hz} a second), so a {} s window resolves \
         {resolution:.3}% of one CPU.",
        opts.faults,
        super::api::BULK_CLIENTS,
        opts.seconds,
    );
    let js = env.report_json(json!({
        "faults": opts.faults,
        "apply_seconds": apply_s,
        "windows": rows,
        "goal": {"rss_mb": RSS_GOAL_MB, "cpu_percent": CPU_GOAL_PERCENT},
    }));
    let (path, _) = write_report("idle", &md, &js)?;
    progress(host.started, &format!("wrote {}", path.display()));
    print!("{md}");
    Ok(())
}
