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

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use faultd_proto::agent::v1 as pb;
use faultd_tests::{
    AgentGuard, AgentOptions, CgroupGuard, Traffic, bpf,
    faults::Syscall,
    measure::{Pinned, Rounds, Schedule, children_cpu, failed_calls, prog_runs_during},
};
use serde_json::{Value, json};

use crate::{
    bench::{
        api::{Api, FAULT_DURATION, bulk},
        env::{Environment, loadavg, progress, raise_priority},
        netns::NetNs,
        stats::verdict,
        stats::{max, median, min, per_round_medians},
        table::{group, signed_cell, spread_cell},
    },
    util::{target_dir, workspace_root},
};

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    #[command(flatten)]
    pub schedule: Schedule,
    /// connect() calls per run.
    #[arg(long, default_value_t = 2_000)]
    pub connects: u64,
    /// socket() calls per run.
    #[arg(long, default_value_t = 20_000)]
    pub sockets: u64,
    /// Extra faults, on as many other cgroups, in the "many" state
    /// (alternately connect and socket faults).
    #[arg(long, default_value_t = 1_000)]
    pub faults: usize,
    /// Measure open(), read() and write() (BPF LSM) instead, inside the VM
    /// tier's Debian kernels (FAULTD_VM_KERNELS to pick one); writes
    /// docs/benchmarks/syscall-vm.md and syscall-vm.json. No root needed.
    #[arg(long)]
    pub vm: bool,
    /// open() calls per run (--vm).
    #[arg(long, default_value_t = 10_000)]
    pub opens: u64,
    /// read() calls per run (--vm).
    #[arg(long, default_value_t = 50_000)]
    pub reads: u64,
    /// write() calls per run (--vm).
    #[arg(long, default_value_t = 50_000)]
    pub writes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Connect,
    Socket,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Socket => "socket",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Off,
    /// The 4 base faults.
    Base,
    /// The base faults and `faults` more.
    Many,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Base => "base",
            Self::Many => "many",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Bystander,
    Target,
}

#[derive(Debug)]
struct Config {
    key: &'static str,
    op: Op,
    state: State,
    who: Who,
    runs: Vec<Run>,
}

#[derive(Clone, Copy, Debug)]
struct Run {
    round: usize,
    /// ns per call inside the helper's loop (its `elapsed_ns` / attempted).
    wall: f64,
    /// CPU ns (user + system) of the helper process per call, its start-up
    /// included.
    cpu: f64,
}

impl Config {
    fn per_round(&self, metric: fn(&Run) -> f64) -> Vec<f64> {
        per_round_medians(&self.runs, |r| r.round, metric)
    }
}

fn wall(r: &Run) -> f64 {
    r.wall
}

fn cpu(r: &Run) -> f64 {
    r.cpu
}

fn configs() -> Vec<Config> {
    let mut v = Vec::new();
    for (op, keys) in [
        (
            Op::Connect,
            [
                "connect-a",
                "connect-b",
                "connect-c",
                "connect-bN",
                "connect-cN",
            ],
        ),
        (
            Op::Socket,
            ["socket-a", "socket-b", "socket-c", "socket-bN", "socket-cN"],
        ),
    ] {
        for (key, state, who) in [
            (keys[0], State::Off, Who::Bystander),
            (keys[1], State::Base, Who::Bystander),
            (keys[2], State::Base, Who::Target),
            (keys[3], State::Many, Who::Bystander),
            (keys[4], State::Many, Who::Target),
        ] {
            v.push(Config {
                key,
                op,
                state,
                who,
                runs: Vec::new(),
            });
        }
    }
    v
}

#[derive(Debug, serde::Deserialize)]
struct LoopReport {
    attempted: u64,
    #[serde(alias = "connected", alias = "created")]
    ok: u64,
    errors: BTreeMap<String, u64>,
    elapsed_ns: u64,
}

/// Fields drop in declaration order: the agent before the cgroups.
#[derive(Debug)]
struct Bench {
    agent: Option<(AgentGuard, Arc<Api>)>,
    place: Place,
    bystander: CgroupGuard,
    target_connect: CgroupGuard,
    target_socket: CgroupGuard,
    other_connect: CgroupGuard,
    other_socket: CgroupGuard,
    others: Vec<CgroupGuard>,
    opts: Options,
    started: Instant,
    rt: tokio::runtime::Runtime,
    faultd: PathBuf,
    state: State,
    configs: Vec<Config>,
    checks: Vec<String>,
    problems: Vec<String>,
    bpf_lsm: Option<(bool, String)>,
    /// (program, calls made, runs, ns per run).
    prog_stats: Vec<(&'static str, u64, u64, f64)>,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the benchmark attaches eBPF programs: run as root");
    }
    ensure!(
        opts.schedule.rounds >= 1 && opts.schedule.reps >= 1,
        "--rounds and --reps >= 1"
    );
    let started = Instant::now();
    let release = target_dir("release");
    let faultd = release.join("faultd");
    let traffic = release.join("faultd-traffic");
    for bin in [&faultd, &traffic] {
        ensure!(bin.is_file(), "{} is missing", bin.display());
    }
    // SAFETY: no other thread exists yet; the kit reads it when spawning.
    unsafe { std::env::set_var("FAULTD_TRAFFIC_BIN", &traffic) };
    let renice = raise_priority();
    let env = Environment::collect()?;
    progress(started, &format!("{}, {}", env.kernel, env.cpu));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;

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
        started,
        rt,
        faultd,
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
    let runtime = started.elapsed().as_secs_f64();
    let md = bench.markdown(&env, &renice, runtime);
    let js = bench.json(&env, &renice, runtime);
    let dir = workspace_root().join("docs/benchmarks");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("syscall.md"), &md).context("writing syscall.md")?;
    let mut text = serde_json::to_string_pretty(&js)?;
    text.push('\n');
    fs::write(dir.join("syscall.json"), text).context("writing syscall.json")?;
    println!("\n{}", bench.table());
    for p in &bench.problems {
        println!("problem: {p}");
    }
    progress(started, "wrote docs/benchmarks/syscall.md and syscall.json");
    Ok(())
}

/// The connect target's filter port: the listeners bind ephemeral ports, so
/// its fault never matches.
const NEVER_MATCHING_PORT: u16 = 9;
/// The listener's accept queue (capped by the netns's `net.core.somaxconn`,
/// 4096 by default).
const LISTEN_BACKLOG: i32 = 4096;

/// A network namespace with a loopback TCP listener whose thread accepts and
/// closes every connection. A fresh one per agent-state block: thousands of
/// connects leave TIME_WAIT sockets, and a SYN that lands on one costs a 1 s
/// retransmit. The listener's queue is deep for the same reason.
#[derive(Debug)]
struct Place {
    netns: NetNs,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Place {
    fn new() -> anyhow::Result<Self> {
        let netns = NetNs::new("syscall")?;
        let _in = netns.enter()?;
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the listener")?;
        let addr = listener.local_addr()?;
        // Room for the connects made while the accept thread waits for a CPU:
        // a SYN meeting a full accept queue is dropped and retried after 1 s.
        nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::new(LISTEN_BACKLOG)?)
            .context("listen backlog")?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => drop(stream),
                    Err(_) => std::thread::sleep(Duration::from_micros(100)),
                }
            }
        });
        drop(_in);
        Ok(Self { netns, addr, stop })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn syscall_spec(
    id: &str,
    cgroup: &CgroupGuard,
    op: Op,
    errno: &str,
    filter: Option<pb::PacketFilter>,
) -> pb::ApplyFaultRequest {
    let op = match op {
        Op::Connect => pb::SyscallOperation::Connect,
        Op::Socket => pb::SyscallOperation::Socket,
    };
    Syscall::new(id, cgroup.relative_str(), op, errno, 1_000_000)
        .duration(FAULT_DURATION)
        .filter(filter)
        .request()
}

impl Rounds for Bench {
    type State = State;
    type Error = anyhow::Error;

    fn enter(&mut self, state: State, round: usize) -> anyhow::Result<()> {
        self.goto(state)?;
        self.place = Place::new()?;
        if round == 0 && state == State::Base {
            self.sanity()?;
        }
        Ok(())
    }

    fn states(&self) -> Vec<State> {
        self.configs.iter().map(|c| c.state).collect()
    }

    fn measure(&mut self, i: usize, round: usize) -> anyhow::Result<()> {
        let (op, who) = (self.configs[i].op, self.configs[i].who);
        let count = match op {
            Op::Connect => self.opts.connects,
            Op::Socket => self.opts.sockets,
        };
        let (r, cpu) = self.helper(op, self.cgroup(who, op), count)?;
        if let Some(why) = failed_calls(r.attempted, r.ok, &r.errors) {
            bail!("{}: {why}", self.configs[i].key);
        }
        #[expect(clippy::cast_precision_loss, reason = "a mean")]
        let wall = r.elapsed_ns as f64 / r.attempted.max(1) as f64;
        let cfg = &mut self.configs[i];
        cfg.runs.push(Run { round, wall, cpu });
        let line = format!("  {:<11} {wall:>7.0} ns/call wall {cpu:>7.0} CPU", cfg.key);
        self.progress(&line);
        Ok(())
    }

    fn round_done(&mut self, round: usize, rounds: usize) {
        self.progress(&format!("round {}/{rounds} done", round + 1));
    }
}

impl Bench {
    fn progress(&self, what: &str) {
        progress(self.started, what);
    }

    fn cgroup(&self, who: Who, op: Op) -> &CgroupGuard {
        match (who, op) {
            (Who::Bystander, _) => &self.bystander,
            (Who::Target, Op::Connect) => &self.target_connect,
            (Who::Target, Op::Socket) => &self.target_socket,
        }
    }

    /// One run of the helper in `cgroup`, in the bench's netns, pinned to
    /// the last CPU like the loss benchmark does.
    fn helper(
        &self,
        op: Op,
        cgroup: &CgroupGuard,
        count: u64,
    ) -> anyhow::Result<(LoopReport, f64)> {
        let _in = self.place.netns.enter()?;
        let _pinned = Pinned::last_cpu();
        let (dst, n) = (self.place.addr.to_string(), count.to_string());
        let args: Vec<&str> = match op {
            Op::Connect => vec!["tcp-connect", "--dst", &dst, "--count", &n],
            Op::Socket => vec!["socket-loop", "--count", &n, "--protocol", "tcp"],
        };
        let cpu0 = children_cpu();
        let r: LoopReport = Traffic::spawn(&args, Some(cgroup)).finish_as();
        let cpu = children_cpu().saturating_sub(cpu0);
        #[expect(clippy::cast_precision_loss, reason = "a mean")]
        let cpu_ns = cpu.as_nanos() as f64 / count.max(1) as f64;
        Ok((r, cpu_ns))
    }

    fn goto(&mut self, want: State) -> anyhow::Result<()> {
        while self.state != want {
            match (self.state, want) {
                (State::Off, _) => self.start_agent()?,
                (State::Base, State::Many) => self.add_others(true)?,
                (State::Base, _) => self.stop_agent()?,
                (State::Many, _) => self.add_others(false)?,
            }
        }
        Ok(())
    }

    fn api(&self) -> anyhow::Result<Arc<Api>> {
        self.agent
            .as_ref()
            .map(|(_, a)| Arc::clone(a))
            .context("no agent")
    }

    fn start_agent(&mut self) -> anyhow::Result<()> {
        let mut guard = AgentGuard::start(AgentOptions {
            bin: Some(self.faultd.clone()),
            config_toml: Some(format!(
                "[limits]\nmax_faults = {}\n",
                self.opts.faults + 64
            )),
            ..AgentOptions::default()
        });
        guard.wait_ready();
        let api = Arc::new(self.rt.block_on(Api::connect(&guard.socket()))?);
        let caps = self.rt.block_on((api.caps)(()))?;
        let hooks = caps.features.iter().find(|f| f.name == "cgroup_sock_hooks");
        ensure!(
            hooks.is_some_and(|f| f.available),
            "cgroup socket hooks unavailable here: {}",
            hooks.map_or("not reported", |f| f.detail.as_str())
        );
        if self.bpf_lsm.is_none() {
            self.bpf_lsm = caps
                .features
                .iter()
                .find(|f| f.name == "bpf_lsm")
                .map(|f| (f.available, f.detail.clone()));
        }
        let reqs = [
            syscall_spec(
                "sys-other-connect",
                &self.other_connect,
                Op::Connect,
                "ECONNREFUSED",
                None,
            ),
            syscall_spec(
                "sys-other-socket",
                &self.other_socket,
                Op::Socket,
                "EPERM",
                None,
            ),
            // Never matches: the listener is on another port.
            syscall_spec(
                "sys-target-connect",
                &self.target_connect,
                Op::Connect,
                "ECONNREFUSED",
                Some(pb::PacketFilter {
                    protocol: pb::Protocol::Tcp as i32,
                    remote_cidr: "127.0.0.0/8".into(),
                    remote_port_min: u32::from(NEVER_MATCHING_PORT),
                    remote_port_max: 0,
                }),
            ),
            // Never matches: the sockets created are TCP.
            syscall_spec(
                "sys-target-socket",
                &self.target_socket,
                Op::Socket,
                "EPERM",
                Some(pb::PacketFilter {
                    protocol: pb::Protocol::Udp as i32,
                    ..pb::PacketFilter::default()
                }),
            ),
        ];
        for req in reqs {
            self.rt.block_on((api.apply)(req))?;
        }
        self.agent = Some((guard, api));
        self.state = State::Base;
        self.progress("agent started with the 4 base faults");
        Ok(())
    }

    fn stop_agent(&mut self) -> anyhow::Result<()> {
        if let Some((guard, api)) = self.agent.take() {
            drop(api);
            self.problems.extend(guard.stop_and_review(&self.rt));
        }
        self.state = State::Off;
        self.progress("agent stopped");
        Ok(())
    }

    /// Applies (`add`) or reverts the extra faults: alternately a connect
    /// fault (ECONNREFUSED) and a socket fault (EPERM), 100%, no filter.
    fn add_others(&mut self, add: bool) -> anyhow::Result<()> {
        let api = self.api()?;
        let socket = self.agent.as_ref().context("no agent")?.0.socket();
        let t = Instant::now();
        if add {
            let reqs: Vec<pb::ApplyFaultRequest> = self
                .others
                .iter()
                .enumerate()
                .map(|(i, cg)| {
                    let op = if i % 2 == 0 { Op::Connect } else { Op::Socket };
                    let errno = if i % 2 == 0 { "ECONNREFUSED" } else { "EPERM" };
                    syscall_spec(&format!("sys-other-{i}"), cg, op, errno, None)
                })
                .collect();
            self.rt
                .block_on(bulk(&socket, reqs, |api, req| (api.apply)(req)))?;
        } else {
            let ids: Vec<String> = (0..self.others.len())
                .map(|i| format!("sys-other-{i}"))
                .collect();
            self.rt
                .block_on(bulk(&socket, ids, |api, id| (api.revert)(id)))?;
        }
        drop(api);
        self.state = if add { State::Many } else { State::Base };
        self.progress(&format!(
            "{} {} faults in {:.1} s",
            if add { "applied" } else { "reverted" },
            self.others.len(),
            t.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// The faults work (the other cgroups' calls fail with their errno), the
    /// programs sit where expected, and the never-matching filters matched
    /// nothing.
    fn sanity(&mut self) -> anyhow::Result<()> {
        let (r, _) = self.helper(Op::Connect, &self.other_connect, 200)?;
        let refused = r.errors.get("ECONNREFUSED").copied().unwrap_or(0);
        let what = format!(
            "connect fault on the other cgroup: {refused} of {} connects failed with ECONNREFUSED",
            r.attempted
        );
        if refused != r.attempted {
            self.problems.push(what.clone());
        }
        self.checks.push(what);
        let (r, _) = self.helper(Op::Socket, &self.other_socket, 200)?;
        let eperm = r.errors.get("EPERM").copied().unwrap_or(0);
        let what = format!(
            "socket fault on the other cgroup: {eperm} of {} socket() calls failed with EPERM",
            r.attempted
        );
        if eperm != r.attempted {
            self.problems.push(what.clone());
        }
        self.checks.push(what);

        let links = bpf::links_of_programs_named("faultd_");
        let on = |cg: &CgroupGuard| -> Vec<String> {
            let mut v: Vec<String> = links
                .iter()
                .filter(|l| l.cgroup_id == Some(cg.id()))
                .map(|l| l.attach_type.clone().unwrap_or_default())
                .collect();
            v.sort();
            v
        };
        let (b, tc, ts) = (
            on(&self.bystander),
            on(&self.target_connect),
            on(&self.target_socket),
        );
        let what = format!(
            "links: bystander {b:?}, connect target {tc:?}, socket target {ts:?} (bpftool link show)"
        );
        if !b.is_empty() || tc.is_empty() || ts.is_empty() {
            self.problems.push(what.clone());
        }
        self.progress(&what);
        self.checks.push(what);

        // Run the targets once so the counters have something to not match.
        for op in [Op::Connect, Op::Socket] {
            self.helper(op, self.cgroup(Who::Target, op), 200)?;
        }
        let api = self.api()?;
        for id in ["sys-target-connect", "sys-target-socket"] {
            let f = self.rt.block_on((api.get)(id.to_owned()))?;
            let matched = f.counters.map_or(0, |c| c.matched);
            let what = format!("{id}: matched {matched} calls (its filter never matches)");
            if matched != 0 {
                self.problems.push(what.clone());
            }
            self.checks.push(what);
        }
        Ok(())
    }

    /// `faultd_connect4` and `faultd_socket` run times from the kernel's
    /// BPF statistics, switched on only around one run each from the
    /// targets (base state).
    fn program_stats(&mut self) -> anyhow::Result<()> {
        self.goto(State::Base)?;
        let api = self.api()?;
        let caps = self.rt.block_on((api.caps)(()))?;
        let id_of = |name: &str| -> anyhow::Result<u32> {
            Ok(caps
                .programs
                .iter()
                .find(|p| p.name == name)
                .with_context(|| format!("GetCapabilities lists no {name}"))?
                .id)
        };
        for (name, op) in [
            ("faultd_connect4", Op::Connect),
            ("faultd_socket", Op::Socket),
        ] {
            let id = id_of(name)?;
            let count = match op {
                Op::Connect => self.opts.connects,
                Op::Socket => self.opts.sockets,
            };
            let mut ran: anyhow::Result<()> = Ok(());
            let (runs, per_run) = prog_runs_during(id, || {
                ran = self
                    .helper(op, self.cgroup(Who::Target, op), count)
                    .map(drop);
            });
            ran?;
            self.progress(&format!(
                "{name}: {runs} runs for {count} calls, {per_run:.0} ns per run (bpf_stats)"
            ));
            self.prog_stats.push((name, count, runs, per_run));
        }
        Ok(())
    }

    fn config(&self, key: &str) -> Option<&Config> {
        self.configs.iter().find(|c| c.key == key)
    }

    /// Per-round difference to the same round's baseline of the same op.
    fn diffs(&self, c: &Config, metric: fn(&Run) -> f64) -> Vec<f64> {
        let base = self
            .configs
            .iter()
            .find(|b| b.op == c.op && b.state == State::Off)
            .map(|b| b.per_round(metric))
            .unwrap_or_default();
        c.per_round(metric)
            .iter()
            .zip(base)
            .map(|(a, b)| a - b)
            .collect()
    }

    fn label(&self, c: &Config) -> String {
        let n = group(self.opts.faults as u64);
        let state = match c.state {
            State::Off => "no agent".to_owned(),
            State::Base => "agent with the 4 base faults".to_owned(),
            State::Many => format!("agent with the 4 base faults + {n} on {n} other cgroups"),
        };
        let who = match (c.who, c.op) {
            (Who::Bystander, Op::Connect) => {
                "bystander (a connect fault, ECONNREFUSED 100%, on another cgroup)"
            }
            (Who::Bystander, Op::Socket) => {
                "bystander (a socket fault, EPERM 100%, on another cgroup)"
            }
            (Who::Target, Op::Connect) => "target, connect fault whose port never matches",
            (Who::Target, Op::Socket) => "target, socket fault filtered to UDP (never matches)",
        };
        if c.state == State::Off {
            format!("bystander, {state} (baseline)")
        } else {
            format!("{who}; {state}")
        }
    }

    fn table(&self) -> String {
        let mut out = String::from(
            "| | call | configuration | wall ns/call | Δ wall vs baseline (per round) | CPU ns/call | Δ CPU vs baseline (per round) |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for c in &self.configs {
            let (dw, dc) = if c.state == State::Off {
                ("–".to_owned(), "–".to_owned())
            } else {
                (
                    signed_cell(&self.diffs(c, wall)),
                    signed_cell(&self.diffs(c, cpu)),
                )
            };
            let _ = writeln!(
                out,
                "| {} | `{}()` | {} | {} | {dw} | {} | {dc} |",
                c.key,
                c.op.name(),
                self.label(c),
                spread_cell(&c.per_round(wall), 0),
                spread_cell(&c.per_round(cpu), 0),
            );
        }
        out
    }

    fn interpret(&self, c: &Config) -> String {
        let d = self.diffs(c, wall);
        let measured = format!(
            "Measured {:+.0} ns/call wall against the baseline (median of per-round \
             differences, rounds {:+.0} .. {:+.0}); {}",
            median(&d),
            min(&d),
            max(&d),
            verdict(&d)
        );
        let same = |other: &str| -> String {
            let Some(o) = self.config(other) else {
                return String::new();
            };
            let d: Vec<f64> = c
                .per_round(wall)
                .iter()
                .zip(o.per_round(wall))
                .map(|(a, b)| a - b)
                .collect();
            format!(
                " Against {other}: {:+.0} ns/call (rounds {:+.0} .. {:+.0}; {}).",
                median(&d),
                min(&d),
                max(&d),
                verdict(&d)
            )
        };
        let hook = match c.op {
            Op::Connect => "`faultd_connect4` (cgroup_sock_addr, INET4_CONNECT)",
            Op::Socket => "`faultd_socket` (cgroup_sock, INET_SOCK_CREATE)",
        };
        let p = if c.op == Op::Connect {
            "connect"
        } else {
            "socket"
        };
        match (c.state, c.who) {
            (State::Off, _) => {
                let r = c.per_round(wall);
                format!(
                    "no agent, no cgroup program of this type anywhere. Its rounds spread over \
                     {:.0}% of the median.",
                    (max(&r) - min(&r)) / median(&r) * 100.0
                )
            }
            (State::Base, Who::Bystander) => format!(
                "the bystander's cgroup has no program: faultd attaches {hook} only at targeted \
                 cgroups, so what is left is the kernel's check of the cgroup's (empty) \
                 effective array once the hook's static key is on. {measured}."
            ),
            (State::Many, Who::Bystander) => format!(
                "as {p}-b with {} more faults attached elsewhere; the bystander's effective \
                 array is still empty. {measured}.{}",
                group(self.opts.faults as u64),
                same(&format!("{p}-b"))
            ),
            (State::Base, Who::Target) => format!(
                "one run of {hook} per call: cgroup-id hash lookup, rule scan, filter \
                 compare, allow. {measured}.{}",
                same(&format!("{p}-b"))
            ),
            (State::Many, Who::Target) => format!(
                "as {p}-c with the target's entry one of {} in the hash map: the lookup \
                 should not grow. {measured}.{}",
                group(self.opts.faults as u64 + 4),
                same(&format!("{p}-c"))
            ),
        }
    }

    fn markdown(&self, env: &Environment, renice: &str, runtime: f64) -> String {
        let o = &self.opts;
        let mut out = format!(
            "# Syscall fault benchmark\n\n```\n{}\n```\n\n\
             - date: {}\n- kernel: `{}`\n- CPU: {} × {}\n- commit: `{}`\n- priority: {renice}\n\
             - load average (1, 5, 15 min) at the start: {}; at the end: {}\n\
             - total runtime: {runtime:.0} s\n\n\
             Generated by `xtask/src/bench/syscall.rs` (helpers shared with the other benchmarks in `xtask/src/bench/`); every \
             sample is in `syscall.json`. The machine is a shared 2-vCPU VM: read the spreads, \
             not only the medians.\n",
            env.command,
            env.date,
            env.kernel,
            env.cpus,
            env.cpu,
            env.commit,
            env.load_start,
            loadavg(),
        );
        let n = group(o.faults as u64);
        let _ = write!(
            out,
            "\n## 1. Per-call cost of connect() and socket()\n\n\
             - `connect()`: `faultd-traffic tcp-connect --dst 127.0.0.1:PORT --count {}` in the \
             measured cgroup: a fresh TCP socket per call, `connect()` to a loopback listener \
             whose thread accepts and closes every connection, then close. The helper's \
             `elapsed_ns / attempted` is the wall ns per call (socket + connect + close), so \
             differences between rows are what the hook adds.\n\
             - `socket()`: `faultd-traffic socket-loop --count {} --protocol tcp`: `socket()` \
             + close per call.\n\
             - \"CPU ns/call\" is the helper process's user + system time (getrusage of the \
             reaped child, process start-up included) per call.\n\
             - {} rounds × {} runs; a round's value is the median of its runs; cells are the \
             median over rounds [min – max]. Δ columns are per-round differences to the same \
             round's baseline (paired), summarised the same way. Agent states are visited in \
             alternating order (off → base → many, then back) and the configurations of a \
             state are rotated per round. The helper is pinned to the last CPU and runs in a \
             network namespace of its own with only `lo` up, a fresh one (with a fresh \
             listener) for every agent-state block, so no connect meets a TIME_WAIT socket \
             of an earlier block, and the listener's accept queue is 4096 deep (a SYN \
             meeting a full queue costs a 1 s retransmit).\n\
             - Cgroups, all siblings under `faultd-test/`: a bystander; a connect target, whose \
             connect fault (ECONNREFUSED, 100%) is filtered to TCP 127.0.0.0/8 port {} while \
             the listener is on an ephemeral port (never matches); a socket target, whose socket fault \
             (EPERM, 100%) is filtered to UDP while the helper creates TCP sockets (never \
             matches); \"other\" cgroups with a connect fault (ECONNREFUSED, 100%, no filter) \
             and a socket fault (EPERM, 100%, no filter). These are the 4 base faults. The \
             \"many\" state adds {n} faults on {n} more cgroups, alternately connect \
             (ECONNREFUSED) and socket (EPERM), 100%, no filter. Connect and socket targets \
             are separate cgroups because the helper's connect loop also calls `socket()`: \
             the connect rows then run only the connect programs.\n\n",
            o.connects, o.sockets, o.schedule.rounds, o.schedule.reps, NEVER_MATCHING_PORT,
        );
        out.push_str(&self.table());
        out.push_str("\nWhat each row isolates:\n\n");
        for c in &self.configs {
            let _ = writeln!(out, "- **{}**: {}", c.key, self.interpret(c));
        }
        out.push_str("\n## 2. The programs' own run time (bpf_stats)\n\n");
        let _ = writeln!(
            out,
            "`kernel.bpf_stats_enabled=1` only around one extra run per program from its target \
             (base state), then set back; run_cnt and run_time_ns are read with `bpftool -j prog \
             show id <id>` (the ids GetCapabilities reports) before and after. The counts \
             include the kernel's own time stamps around each run.\n"
        );
        out.push_str("| program | calls made | runs counted | ns per run |\n|---|---|---|---|\n");
        for (name, calls, runs, ns) in &self.prog_stats {
            let _ = writeln!(out, "| `{name}` | {calls} | {runs} | {ns:.0} |");
        }
        out.push_str("\n## 3. Checks\n\n");
        for c in &self.checks {
            let _ = writeln!(out, "- {c}");
        }
        if self.problems.is_empty() {
            out.push_str(
                "\nNo problems: every check passed and the agents logged no warning or error.\n",
            );
        } else {
            out.push_str("\nProblems:\n\n");
            for p in &self.problems {
                let _ = writeln!(out, "- {p}");
            }
        }
        let lsm = self.bpf_lsm.as_ref().map_or_else(
            || "not reported".to_owned(),
            |(a, d)| format!("available: {a}; detail: \"{d}\""),
        );
        let _ = write!(
            out,
            "\n## Not measured here: open(), read(), write()\n\n\
             These operations use the BPF LSM backend (`file_open`, `file_permission`), which \
             needs a kernel with `CONFIG_BPF_LSM=y` and `bpf` in `lsm=`. This host does not \
             have it: GetCapabilities reports `bpf_lsm` {lsm}. `cargo xtask bench syscall \
             --vm` measures them inside the VM tier's Debian kernels: see \
             [syscall-vm.md](syscall-vm.md). Unlike the socket hooks, the LSM programs run for \
             every task of the node while a file fault exists (filtering by cgroup inside the \
             program), so their bystander cost is not expected to be zero.\n"
        );
        out
    }

    fn json(&self, env: &Environment, renice: &str, runtime: f64) -> Value {
        json!({
            "command": env.command,
            "date": env.date,
            "kernel": env.kernel,
            "cpu": env.cpu,
            "cpus": env.cpus,
            "commit": env.commit,
            "priority": renice,
            "loadavg_start": env.load_start,
            "loadavg_end": loadavg(),
            "runtime_s": runtime,
            "options": {
                "rounds": self.opts.schedule.rounds,
                "reps": self.opts.schedule.reps,
                "connects_per_run": self.opts.connects,
                "sockets_per_run": self.opts.sockets,
                "extra_faults": self.opts.faults,
            },
            "bpf_lsm": self.bpf_lsm.as_ref().map(|(a, d)| json!({"available": a, "detail": d})),
            "per_call": self.configs.iter().map(|c| json!({
                "key": c.key,
                "call": c.op.name(),
                "label": self.label(c),
                "agent_state": c.state.name(),
                "cgroup": self.cgroup(c.who, c.op).relative_str(),
                "per_round_median": {
                    "wall_ns_per_call": c.per_round(wall),
                    "cpu_ns_per_call": c.per_round(cpu),
                },
                "runs": c.runs.iter().map(|r| json!({
                    "round": r.round,
                    "wall_ns_per_call": r.wall,
                    "cpu_ns_per_call": r.cpu,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "bpf_stats": self.prog_stats.iter().map(|(name, calls, runs, ns)| json!({
                "program": name, "calls": calls, "runs": runs, "ns_per_run": ns,
            })).collect::<Vec<_>>(),
            "checks": self.checks,
            "problems": self.problems,
        })
    }
}
