//! `faultd-vmbench syscall`: what a file fault costs the open(), read() and
//! write() calls it lets through, on a kernel with BPF LSM.
//!
//! Per op, three configurations:
//!
//! - `a`: no agent (baseline; no faultd program anywhere);
//! - `b`: the agent holds an open fault and read and write faults (EIO,
//!   100%) on two other cgroups; the caller is a bystander. LSM programs
//!   are global, so they run for the bystander too and leave at the cgroup
//!   lookup;
//! - `c`: the caller's cgroup holds open, read and write faults (EIO, 100%)
//!   limited to a directory on another file system (`--path` elsewhere), so
//!   the program finds the rule and walks the file's dentries to the root
//!   without a match: the full pass-through cost. The API has no
//!   probability 0 (`probability_ppm` is 1..=1000000), so a path filter is
//!   the way to make a targeted fault never match.
//!
//! Rounds alternate the order of the agent states (off, on | on, off), the
//! configurations of a state are rotated per round, and each is run `reps`
//! times per round; every run is reported and xtask takes the per-round
//! medians and the paired differences. The calls come from
//! `faultd-traffic file-ops`, pinned to the last CPU.

use std::{fs, path::PathBuf, time::Duration};

use anyhow::{Context as _, ensure};
use faultd_proto::agent::v1::{self as pb, agent_client::AgentClient};
use faultd_tests::{
    AgentGuard, AgentOptions, CgroupGuard,
    faults::Syscall,
    measure::{Pinned, Schedule, children_cpu, prog_runs_during, round_order},
    traffic::{FileOpsReport, file_ops},
};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::Progress;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    #[command(flatten)]
    pub schedule: Schedule,
    /// open() + close() calls per run.
    #[arg(long, default_value_t = 10_000)]
    pub opens: u64,
    /// 1-byte pread() calls per run, on a file opened before the loop.
    #[arg(long, default_value_t = 50_000)]
    pub reads: u64,
    /// 1-byte pwrite() calls per run, on a file opened before the loop.
    #[arg(long, default_value_t = 50_000)]
    pub writes: u64,
}

/// The file the calls work on (tmpfs in the VM) and the directory the
/// target's faults are limited to (another tmpfs): never an ancestor.
const FILE: &str = "/tmp/faultd-vmbench/data";
const ELSEWHERE: &str = "/run/faultd-vmbench-elsewhere";
const ERRNO: &str = "EIO";
const FAULT_DURATION: Duration = Duration::from_secs(3_000);
/// Programs whose run time bpf_stats reports, by the ops that run them.
const PROGRAMS: &[(&str, &[Op])] = &[
    ("faultd_open", &[Op::Open]),
    ("faultd_rw", &[Op::Read, Op::Write]),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Open,
    Read,
    Write,
}

impl Op {
    const ALL: [Self; 3] = [Self::Open, Self::Read, Self::Write];

    fn name(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Read => "read",
            Self::Write => "write",
        }
    }

    fn api(self) -> pb::SyscallOperation {
        match self {
            Self::Open => pb::SyscallOperation::Open,
            Self::Read => pb::SyscallOperation::Read,
            Self::Write => pb::SyscallOperation::Write,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Bystander,
    Target,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Self::Bystander => "bystander",
            Self::Target => "target",
        }
    }
}

#[derive(Debug)]
struct Config {
    key: String,
    op: Op,
    agent: bool,
    who: Who,
    /// (round, wall ns per call, CPU ns per call).
    runs: Vec<(usize, f64, f64)>,
}

/// Fields drop in declaration order: the agent before the cgroups.
#[derive(Debug)]
struct Bench {
    agent: Option<(AgentGuard, AgentClient<Channel>)>,
    bystander: CgroupGuard,
    target: CgroupGuard,
    /// Holds the open fault; its own opens are the sanity check.
    other_open: CgroupGuard,
    /// Holds the read and write faults. Apart from the open fault's cgroup
    /// because a helper there could not write its report (a pipe write is a
    /// write(2) too).
    other_rw: CgroupGuard,
    rt: tokio::runtime::Runtime,
    opts: Options,
    progress: Progress,
    configs: Vec<Config>,
    /// `Fault.backend` per fault id, as ApplyFault answered.
    backends: Vec<(String, String)>,
    checks: Vec<String>,
    problems: Vec<String>,
}

pub fn run(opts: &Options, progress: &Progress) -> anyhow::Result<Value> {
    ensure!(
        opts.schedule.rounds >= 1 && opts.schedule.reps >= 1,
        "--rounds and --reps >= 1"
    );
    let file = PathBuf::from(FILE);
    fs::create_dir_all(file.parent().context("FILE has a parent")?)?;
    fs::write(&file, vec![b'x'; 4096]).with_context(|| format!("creating {FILE}"))?;
    fs::create_dir_all(ELSEWHERE).with_context(|| format!("creating {ELSEWHERE}"))?;
    let mut configs = Vec::new();
    for op in Op::ALL {
        for (suffix, agent, who) in [
            ("a", false, Who::Bystander),
            ("b", true, Who::Bystander),
            ("c", true, Who::Target),
        ] {
            configs.push(Config {
                key: format!("{}-{suffix}", op.name()),
                op,
                agent,
                who,
                runs: Vec::new(),
            });
        }
    }
    let mut bench = Bench {
        agent: None,
        bystander: CgroupGuard::new("vmbench-bystander"),
        target: CgroupGuard::new("vmbench-target"),
        other_open: CgroupGuard::new("vmbench-other-open"),
        other_rw: CgroupGuard::new("vmbench-other-rw"),
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?,
        opts: opts.clone(),
        progress: *progress,
        configs,
        backends: Vec::new(),
        checks: Vec::new(),
        problems: Vec::new(),
    };
    bench.measure_all()?;
    let bpf_stats = bench.program_stats()?;
    bench.stop_agent();
    Ok(json!({
        "options": {
            "rounds": opts.schedule.rounds,
            "reps": opts.schedule.reps,
            "opens_per_run": opts.opens,
            "reads_per_run": opts.reads,
            "writes_per_run": opts.writes,
        },
        "file": FILE,
        "path_prefix_elsewhere": ELSEWHERE,
        "errno": ERRNO,
        "cgroups": {
            "bystander": bench.bystander.relative_str(),
            "target": bench.target.relative_str(),
            "other_open": bench.other_open.relative_str(),
            "other_rw": bench.other_rw.relative_str(),
        },
        "backends": bench.backends.iter().map(|(id, b)| json!({"fault": id, "backend": b})).collect::<Vec<_>>(),
        "configs": bench.configs.iter().map(|c| json!({
            "key": c.key,
            "op": c.op.name(),
            "agent": c.agent,
            "who": c.who.name(),
            "runs": c.runs.iter().map(|(round, wall, cpu)| json!({
                "round": round, "wall_ns_per_call": wall, "cpu_ns_per_call": cpu,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "bpf_stats": bpf_stats,
        "checks": bench.checks,
        "problems": bench.problems,
    }))
}

impl Bench {
    fn count(&self, op: Op) -> u64 {
        match op {
            Op::Open => self.opts.opens,
            Op::Read => self.opts.reads,
            Op::Write => self.opts.writes,
        }
    }

    fn cgroup(&self, who: Who) -> &CgroupGuard {
        match who {
            Who::Bystander => &self.bystander,
            Who::Target => &self.target,
        }
    }

    /// One helper run; (report, CPU ns per call of the helper process,
    /// start-up included).
    fn helper(&self, op: Op, cgroup: &CgroupGuard, count: u64) -> (FileOpsReport, f64) {
        let _pinned = Pinned::last_cpu();
        let cpu0 = children_cpu();
        let r = file_ops(Some(cgroup), FILE.as_ref(), op.name(), count);
        let cpu = children_cpu().saturating_sub(cpu0);
        #[expect(clippy::cast_precision_loss, reason = "a mean")]
        let cpu_ns = cpu.as_nanos() as f64 / count.max(1) as f64;
        (r, cpu_ns)
    }

    fn measure_all(&mut self) -> anyhow::Result<()> {
        for round in 0..self.opts.schedule.rounds {
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for agent in order {
                if agent {
                    self.start_agent()?;
                    if round == 0 {
                        self.sanity()?;
                    }
                } else {
                    self.stop_agent();
                }
                let members = (0..self.configs.len())
                    .filter(|&i| self.configs[i].agent == agent)
                    .collect();
                for i in round_order(members, round, self.opts.schedule.reps) {
                    self.measure(i, round)?;
                }
            }
            self.progress.say(&format!(
                "round {}/{} done",
                round + 1,
                self.opts.schedule.rounds
            ));
        }
        Ok(())
    }

    fn measure(&mut self, i: usize, round: usize) -> anyhow::Result<()> {
        let (op, who) = (self.configs[i].op, self.configs[i].who);
        let (r, cpu) = self.helper(op, self.cgroup(who), self.count(op));
        ensure!(
            r.ok == r.attempted && r.errors.is_empty(),
            "{}: {} of {} calls succeeded, errors {:?}",
            self.configs[i].key,
            r.ok,
            r.attempted,
            r.errors
        );
        let wall = r.ns_per_call();
        let cfg = &mut self.configs[i];
        cfg.runs.push((round, wall, cpu));
        self.progress.say(&format!(
            "  {:<8} {wall:>8.0} ns/call wall {cpu:>8.0} CPU",
            cfg.key
        ));
        Ok(())
    }

    fn start_agent(&mut self) -> anyhow::Result<()> {
        if self.agent.is_some() {
            return Ok(());
        }
        let mut agent = AgentGuard::start(AgentOptions::default());
        agent.wait_ready();
        let mut client = self.rt.block_on(agent.client());
        let caps = self
            .rt
            .block_on(client.get_capabilities(pb::GetCapabilitiesRequest {}))?
            .into_inner();
        let lsm = caps.features.iter().find(|f| f.name == "bpf_lsm");
        ensure!(
            lsm.is_some_and(|f| f.available),
            "BPF LSM unavailable on this kernel: {}",
            lsm.map_or("not reported", |f| f.detail.as_str())
        );
        let mut backends = Vec::new();
        for (cgroup, ops, prefix, tag) in [
            (&self.other_open, &[Op::Open][..], "", "other"),
            (&self.other_rw, &[Op::Read, Op::Write][..], "", "other"),
            (&self.target, &Op::ALL[..], ELSEWHERE, "target"),
        ] {
            for &op in ops {
                let id = format!("{tag}-{}", op.name());
                let req = Syscall::new(&id, cgroup.relative_str(), op.api(), ERRNO, 1_000_000)
                    .duration(FAULT_DURATION)
                    .path_prefix(prefix)
                    .request();
                let fault = self
                    .rt
                    .block_on(client.apply_fault(req))
                    .with_context(|| format!("applying {id}"))?
                    .into_inner()
                    .fault
                    .with_context(|| format!("ApplyFault {id} returned no fault"))?;
                backends.push((id, fault.backend));
            }
        }
        if self.backends.is_empty() {
            self.backends = backends;
        }
        self.agent = Some((agent, client));
        self.progress
            .say("agent started: open, read and write faults on other cgroups and on the target");
        Ok(())
    }

    fn stop_agent(&mut self) {
        let Some((agent, client)) = self.agent.take() else {
            return;
        };
        drop(client);
        self.problems.extend(agent.stop_and_review(&self.rt));
        self.progress.say("agent stopped");
    }

    /// A handle on the agent's channel (clones share the connection).
    fn client(&self) -> anyhow::Result<AgentClient<Channel>> {
        Ok(self.agent.as_ref().context("no agent")?.1.clone())
    }

    /// The faults work (the other cgroup's opens fail), the target's filters
    /// never match, and the calls measured from the target succeed.
    fn sanity(&mut self) -> anyhow::Result<()> {
        let (r, _) = self.helper(Op::Open, &self.other_open, 200);
        let what = format!(
            "open fault on the other cgroup: {} of {} opens failed with {ERRNO}",
            r.errors_of(ERRNO),
            r.attempted
        );
        if r.errors_of(ERRNO) != r.attempted {
            self.problems.push(what.clone());
        }
        self.progress.say(&what);
        self.checks.push(what);
        for op in Op::ALL {
            self.helper(op, &self.target, 200);
        }
        for op in Op::ALL {
            let id = format!("target-{}", op.name());
            let mut client = self.client()?;
            let fault = self
                .rt
                .block_on(client.get_fault(pb::GetFaultRequest { id: id.clone() }))?
                .into_inner();
            let matched = fault.counters.map_or(0, |c| c.matched);
            let what = format!(
                "{id}: matched {matched} calls after 200 {} calls from the target (its path \
                 prefix never matches)",
                op.name()
            );
            if matched != 0 {
                self.problems.push(what.clone());
            }
            self.checks.push(what);
        }
        Ok(())
    }

    /// The LSM programs' own run time from the kernel's BPF statistics,
    /// switched on only around one run per (program, op, caller).
    fn program_stats(&mut self) -> anyhow::Result<Vec<Value>> {
        self.start_agent()?;
        let mut client = self.client()?;
        let caps = self
            .rt
            .block_on(client.get_capabilities(pb::GetCapabilitiesRequest {}))?
            .into_inner();
        let mut out = Vec::new();
        for (name, ops) in PROGRAMS {
            let Some(id) = caps.programs.iter().find(|p| p.name == *name).map(|p| p.id) else {
                self.problems
                    .push(format!("GetCapabilities lists no program {name}"));
                continue;
            };
            for &op in *ops {
                for who in [Who::Bystander, Who::Target] {
                    let calls = self.count(op);
                    let mut failed = 0;
                    let (runs, ns_per_run) = prog_runs_during(id, || {
                        let (r, _) = self.helper(op, self.cgroup(who), calls);
                        failed = r.attempted - r.ok;
                    });
                    ensure!(failed == 0, "{name} stats run: {failed} calls failed");
                    self.progress.say(&format!(
                        "{name}: {} {}: {runs} runs for {calls} calls, {ns_per_run:.0} ns per \
                         run (bpf_stats)",
                        who.name(),
                        op.name()
                    ));
                    out.push(json!({
                        "program": name,
                        "op": op.name(),
                        "who": who.name(),
                        "calls": calls,
                        "runs": runs,
                        "ns_per_run": ns_per_run,
                    }));
                }
            }
        }
        Ok(out)
    }
}
