//! `faultd-vmbench syscall`: what a file fault costs the open(), read() and
//! write() calls it lets through, on a kernel with BPF LSM.
//!
//! Per op, with both ways the agent attaches its LSM programs (the agent's
//! `syscall.lsm_attach`): `lsm_cgroup` (the default, "auto", on 6.0+: the
//! programs are attached at the targeted cgroups and run only for their
//! tasks) and node-wide (`"node"`: one program per hook for the whole node,
//! filtering by the caller's cgroup), five configurations:
//!
//! - `a`: no agent (baseline; no faultd program anywhere);
//! - `b-<flavour>`: the agent holds an open fault and read and write faults
//!   (EIO, 100%) on two other cgroups; the caller is a bystander. Node-wide
//!   programs run for it too and leave at the cgroup lookup; `lsm_cgroup`
//!   ones should not run at all, which bpf_stats counts;
//! - `c-<flavour>`: the caller's cgroup holds open, read and write faults
//!   (EIO, 100%) limited to a directory on another file system (`--path`
//!   elsewhere), so the program finds the rule and walks the file's
//!   dentries to the root without a match: the full pass-through cost. The
//!   API has no probability 0 (`probability_ppm` is 1..=1000000), so a path
//!   filter is the way to make a targeted fault never match.
//!
//! Rounds visit the states (off, lsm_cgroup, node | node, lsm_cgroup, off)
//! through the kit's [`Schedule::run`]; the agent is restarted with the
//! state's config when the state changes. Each configuration runs `reps`
//! times per round; every run is reported and xtask takes the per-round
//! medians and the paired differences. The calls come from
//! `faultd-traffic file-ops`, pinned to the last CPU.

use std::{fs, path::PathBuf};

use anyhow::{Context as _, bail, ensure};
use faultd_proto::agent::v1::{self as pb, agent_client::AgentClient};
use faultd_tests::{
    AgentGuard, AgentOptions, CgroupGuard,
    faults::Syscall,
    measure::{
        FAULT_DURATION, FileCalls, Pinned, Rounds, Schedule, children_cpu, failed_calls,
        prog_runs_during,
    },
    traffic::{FileOpsReport, file_ops},
};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::Progress;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    #[command(flatten)]
    pub schedule: Schedule,
    #[command(flatten)]
    pub calls: FileCalls,
}

/// The file the calls work on (tmpfs in the VM) and the directory the
/// target's faults are limited to (another tmpfs): never an ancestor.
const FILE: &str = "/tmp/faultd-vmbench/data";
const ELSEWHERE: &str = "/run/faultd-vmbench-elsewhere";
const ERRNO: &str = "EIO";

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

/// How the agent attaches its LSM programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavour {
    /// `lsm_attach = "auto"`, which picks `lsm_cgroup` where the kernel has
    /// it (6.0+, so both kernels of the matrix).
    LsmCgroup,
    /// `lsm_attach = "node"`: node-wide BPF LSM programs.
    Node,
}

impl Flavour {
    const ALL: [Self; 2] = [Self::LsmCgroup, Self::Node];

    fn name(self) -> &'static str {
        match self {
            Self::LsmCgroup => "lsm_cgroup",
            Self::Node => "node",
        }
    }

    fn config_toml(self) -> &'static str {
        match self {
            Self::LsmCgroup => "[syscall]\nlsm_attach = \"auto\"\n",
            Self::Node => "[syscall]\nlsm_attach = \"node\"\n",
        }
    }

    /// The `Fault.backend` every fault must report in this flavour: else
    /// the configuration is not what its name says.
    fn backend(self) -> &'static str {
        match self {
            Self::LsmCgroup => "lsm_cgroup",
            Self::Node => "bpf_lsm",
        }
    }

    /// Programs whose run time bpf_stats reports, by the ops that run them.
    fn programs(self) -> [(&'static str, &'static [Op]); 2] {
        match self {
            Self::LsmCgroup => [
                ("faultd_c_open", &[Op::Open]),
                ("faultd_c_rw", &[Op::Read, Op::Write]),
            ],
            Self::Node => [
                ("faultd_open", &[Op::Open]),
                ("faultd_rw", &[Op::Read, Op::Write]),
            ],
        }
    }
}

/// The agent state a configuration needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Off,
    On(Flavour),
}

impl State {
    const ALL: [Self; 3] = [
        Self::Off,
        Self::On(Flavour::LsmCgroup),
        Self::On(Flavour::Node),
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::On(f) => f.name(),
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
    state: State,
    who: Who,
    /// (round, wall ns per call, CPU ns per call).
    runs: Vec<(usize, f64, f64)>,
}

/// Fields drop in declaration order: the agent before the cgroups.
#[derive(Debug)]
struct Bench {
    agent: Option<(Flavour, AgentGuard, AgentClient<Channel>)>,
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
    /// (flavour, fault id, `Fault.backend` as ApplyFault answered), from
    /// each flavour's first start.
    backends: Vec<(Flavour, String, String)>,
    /// (flavour, capability, available, detail) from each flavour's first
    /// start: how the agent decided on its LSM programs.
    features: Vec<(Flavour, String, bool, String)>,
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
        let mut add = |key: String, state, who| {
            configs.push(Config {
                key,
                op,
                state,
                who,
                runs: Vec::new(),
            });
        };
        add(format!("{}-a", op.name()), State::Off, Who::Bystander);
        for flavour in Flavour::ALL {
            for (letter, who) in [("b", Who::Bystander), ("c", Who::Target)] {
                let key = format!("{}-{letter}-{}", op.name(), flavour.name());
                add(key, State::On(flavour), who);
            }
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
        features: Vec::new(),
        checks: Vec::new(),
        problems: Vec::new(),
    };
    opts.schedule.run(&State::ALL, &mut bench)?;
    let mut bpf_stats = Vec::new();
    for flavour in Flavour::ALL {
        bpf_stats.extend(bench.program_stats(flavour)?);
    }
    bench.stop_agent();
    Ok(json!({
        "options": {
            "rounds": opts.schedule.rounds,
            "reps": opts.schedule.reps,
            "opens_per_run": opts.calls.opens,
            "reads_per_run": opts.calls.reads,
            "writes_per_run": opts.calls.writes,
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
        "agent_configs": Flavour::ALL.iter().map(|f| json!({
            "flavour": f.name(), "config_toml": f.config_toml(),
        })).collect::<Vec<_>>(),
        "features": bench.features.iter().map(|(f, name, available, detail)| json!({
            "flavour": f.name(), "name": name, "available": available, "detail": detail,
        })).collect::<Vec<_>>(),
        "backends": bench.backends.iter().map(|(f, id, b)| json!({
            "flavour": f.name(), "fault": id, "backend": b,
        })).collect::<Vec<_>>(),
        "configs": bench.configs.iter().map(|c| json!({
            "key": c.key,
            "op": c.op.name(),
            "state": c.state.name(),
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

impl Rounds for Bench {
    type State = State;
    type Error = anyhow::Error;

    fn enter(&mut self, state: State, round: usize) -> anyhow::Result<()> {
        match state {
            State::Off => self.stop_agent(),
            State::On(flavour) => {
                self.start_agent(flavour)?;
                if round == 0 {
                    self.sanity(flavour)?;
                }
            }
        }
        Ok(())
    }

    fn states(&self) -> Vec<State> {
        self.configs.iter().map(|c| c.state).collect()
    }

    fn measure(&mut self, i: usize, round: usize) -> anyhow::Result<()> {
        let (op, who) = (self.configs[i].op, self.configs[i].who);
        let (r, cpu) = self.helper(op, self.cgroup(who), self.count(op));
        if let Some(why) = failed_calls(r.attempted, r.ok, &r.errors) {
            bail!("{}: {why}", self.configs[i].key);
        }
        let wall = r.ns_per_call();
        let cfg = &mut self.configs[i];
        cfg.runs.push((round, wall, cpu));
        self.progress.say(&format!(
            "  {:<18} {wall:>8.0} ns/call wall {cpu:>8.0} CPU",
            cfg.key
        ));
        Ok(())
    }

    fn round_done(&mut self, round: usize, rounds: usize) {
        self.progress
            .say(&format!("round {}/{rounds} done", round + 1));
    }
}

impl Bench {
    fn count(&self, op: Op) -> u64 {
        match op {
            Op::Open => self.opts.calls.opens,
            Op::Read => self.opts.calls.reads,
            Op::Write => self.opts.calls.writes,
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

    /// Starts the agent with `flavour`'s config and the faults of every
    /// configuration, unless it already runs so; an agent of the other
    /// flavour is stopped first (the config is read at start only).
    fn start_agent(&mut self, flavour: Flavour) -> anyhow::Result<()> {
        if self
            .agent
            .as_ref()
            .is_some_and(|(running, ..)| *running == flavour)
        {
            return Ok(());
        }
        self.stop_agent();
        let mut agent = AgentGuard::start(AgentOptions {
            config_toml: Some(flavour.config_toml().to_owned()),
            ..AgentOptions::default()
        });
        agent.wait_ready();
        let mut client = self.rt.block_on(agent.client());
        let caps = self
            .rt
            .block_on(client.get_capabilities(pb::GetCapabilitiesRequest {}))?
            .into_inner();
        let first = !self.features.iter().any(|(f, ..)| *f == flavour);
        for name in ["bpf_lsm", "lsm_cgroup"] {
            let feature = caps.features.iter().find(|f| f.name == name);
            if first {
                self.features.push((
                    flavour,
                    name.to_owned(),
                    feature.is_some_and(|f| f.available),
                    feature.map_or_else(|| "not reported".to_owned(), |f| f.detail.clone()),
                ));
            }
        }
        let lsm = caps.features.iter().find(|f| f.name == "bpf_lsm");
        ensure!(
            lsm.is_some_and(|f| f.available),
            "BPF LSM unavailable on this kernel: {}",
            lsm.map_or("not reported", |f| f.detail.as_str())
        );
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
                // A fault on the other backend would measure the other
                // flavour under this one's name: stop rather than report it.
                ensure!(
                    fault.backend == flavour.backend(),
                    "{id}: the agent with lsm_attach for {} chose backend {:?}, not {:?}",
                    flavour.name(),
                    fault.backend,
                    flavour.backend()
                );
                if first {
                    self.backends.push((flavour, id, fault.backend));
                }
            }
        }
        self.agent = Some((flavour, agent, client));
        self.progress.say(&format!(
            "agent started ({}): open, read and write faults on other cgroups and on the target",
            flavour.name()
        ));
        Ok(())
    }

    fn stop_agent(&mut self) {
        let Some((flavour, agent, client)) = self.agent.take() else {
            return;
        };
        drop(client);
        self.problems.extend(agent.stop_and_review(&self.rt));
        self.progress
            .say(&format!("agent stopped ({})", flavour.name()));
    }

    /// A handle on the agent's channel (clones share the connection).
    fn client(&self) -> anyhow::Result<AgentClient<Channel>> {
        Ok(self.agent.as_ref().context("no agent")?.2.clone())
    }

    /// The faults work (the other cgroup's opens fail), the target's filters
    /// never match, and the calls measured from the target succeed.
    fn sanity(&mut self, flavour: Flavour) -> anyhow::Result<()> {
        let f = flavour.name();
        let (r, _) = self.helper(Op::Open, &self.other_open, 200);
        let what = format!(
            "{f}: open fault on the other cgroup: {} of {} opens failed with {ERRNO}",
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
                "{f}: {id}: matched {matched} calls after 200 {} calls from the target (its \
                 path prefix never matches)",
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
    /// switched on only around one run per (program, op, caller), with the
    /// agent in `flavour`. For `lsm_cgroup` the bystander's count is the
    /// evidence that it runs no faultd code, so a nonzero one is a problem.
    fn program_stats(&mut self, flavour: Flavour) -> anyhow::Result<Vec<Value>> {
        self.start_agent(flavour)?;
        let mut client = self.client()?;
        let caps = self
            .rt
            .block_on(client.get_capabilities(pb::GetCapabilitiesRequest {}))?
            .into_inner();
        let mut out = Vec::new();
        for (name, ops) in flavour.programs() {
            let Some(id) = caps.programs.iter().find(|p| p.name == name).map(|p| p.id) else {
                self.problems.push(format!(
                    "{}: GetCapabilities lists no program {name}",
                    flavour.name()
                ));
                continue;
            };
            for &op in ops {
                for who in [Who::Bystander, Who::Target] {
                    let calls = self.count(op);
                    let mut failed = 0;
                    let (runs, ns_per_run) = prog_runs_during(id, || {
                        let (r, _) = self.helper(op, self.cgroup(who), calls);
                        failed = r.attempted - r.ok;
                    });
                    ensure!(failed == 0, "{name} stats run: {failed} calls failed");
                    let what = format!(
                        "{}: {name}: {} {}: {runs} runs for {calls} calls, {ns_per_run:.0} ns \
                         per run (bpf_stats)",
                        flavour.name(),
                        who.name(),
                        op.name()
                    );
                    self.progress.say(&what);
                    if flavour == Flavour::LsmCgroup && who == Who::Bystander && runs != 0 {
                        self.problems.push(format!("{what}: expected 0 runs"));
                    }
                    out.push(json!({
                        "flavour": flavour.name(),
                        "program": name,
                        "program_id": id,
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
