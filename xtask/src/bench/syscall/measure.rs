//! The syscall benchmark's measuring side: the agent moved between its
//! states, the helper's runs in a namespace with a listener, and the checks
//! and BPF statistics taken on the way.

use std::{
    net::TcpListener,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use faultd_proto::agent::v1 as pb;
use faultd_tests::{
    AgentGuard, AgentOptions, CgroupGuard, Traffic, bpf,
    faults::Syscall,
    listener::Acceptor,
    measure::{FAULT_DURATION, Pinned, Rounds, children_cpu, failed_calls, prog_runs_during},
};

use super::plan::{Config, LoopReport, NEVER_MATCHING_PORT, Op, Options, Run, State, Who};
use crate::bench::{
    api::{Api, bulk},
    host::Host,
    netns::NetNs,
};

/// Fields drop in declaration order: the agent before the cgroups.
#[derive(Debug)]
pub(super) struct Bench {
    pub(super) agent: Option<(AgentGuard, Arc<Api>)>,
    pub(super) place: Place,
    pub(super) bystander: CgroupGuard,
    pub(super) target_connect: CgroupGuard,
    pub(super) target_socket: CgroupGuard,
    pub(super) other_connect: CgroupGuard,
    pub(super) other_socket: CgroupGuard,
    pub(super) others: Vec<CgroupGuard>,
    pub(super) opts: Options,
    pub(super) host: Host,
    pub(super) state: State,
    pub(super) configs: Vec<Config>,
    pub(super) checks: Vec<String>,
    pub(super) problems: Vec<String>,
    pub(super) bpf_lsm: Option<(bool, String)>,
    /// (program, calls made, runs, ns per run).
    pub(super) prog_stats: Vec<(&'static str, u64, u64, f64)>,
}

/// The listener's accept queue (capped by the netns's `net.core.somaxconn`,
/// 4096 by default).
const LISTEN_BACKLOG: i32 = 4096;

/// A network namespace with a loopback TCP listener whose thread accepts and
/// closes every connection. A fresh one per agent-state block: thousands of
/// connects leave TIME_WAIT sockets, and a SYN that lands on one costs a 1 s
/// retransmit. The listener's queue is deep for the same reason.
#[derive(Debug)]
pub(super) struct Place {
    /// Stops accepting before the namespace's fd is closed.
    acceptor: Acceptor,
    netns: NetNs,
}

impl Place {
    pub(super) fn new() -> anyhow::Result<Self> {
        let netns = NetNs::new("syscall")?;
        let _in = netns.enter()?;
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the listener")?;
        // Room for the connects made while the accept thread waits for a CPU:
        // a SYN meeting a full accept queue is dropped and retried after 1 s.
        nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::new(LISTEN_BACKLOG)?)
            .context("listen backlog")?;
        let acceptor = Acceptor::spawn(listener, Duration::from_micros(100));
        drop(_in);
        Ok(Self { acceptor, netns })
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
        self.host.progress(&line);
        Ok(())
    }

    fn round_done(&mut self, round: usize, rounds: usize) {
        self.host
            .progress(&format!("round {}/{rounds} done", round + 1));
    }
}

impl Bench {
    pub(super) fn cgroup(&self, who: Who, op: Op) -> &CgroupGuard {
        match (who, op) {
            (Who::Bystander, _) => &self.bystander,
            (Who::Target, Op::Connect) => &self.target_connect,
            (Who::Target, Op::Socket) => &self.target_socket,
        }
    }

    /// One run of the helper in `cgroup`, in the bench's netns, pinned to
    /// the last CPU like the loss benchmark does.
    pub(super) fn helper(
        &self,
        op: Op,
        cgroup: &CgroupGuard,
        count: u64,
    ) -> anyhow::Result<(LoopReport, f64)> {
        let _in = self.place.netns.enter()?;
        let _pinned = Pinned::last_cpu();
        let (dst, n) = (self.place.acceptor.addr().to_string(), count.to_string());
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

    pub(super) fn goto(&mut self, want: State) -> anyhow::Result<()> {
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

    pub(super) fn api(&self) -> anyhow::Result<Arc<Api>> {
        self.agent
            .as_ref()
            .map(|(_, a)| Arc::clone(a))
            .context("no agent")
    }

    pub(super) fn start_agent(&mut self) -> anyhow::Result<()> {
        let mut guard = AgentGuard::start(AgentOptions {
            bin: Some(self.host.faultd.clone()),
            config_toml: Some(format!(
                "[limits]\nmax_faults = {}\n",
                self.opts.faults + 64
            )),
            ..AgentOptions::default()
        });
        guard.wait_ready();
        let api = Arc::new(self.host.rt.block_on(Api::connect(&guard.socket()))?);
        let caps = self.host.rt.block_on((api.caps)(()))?;
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
            self.host.rt.block_on((api.apply)(req))?;
        }
        self.agent = Some((guard, api));
        self.state = State::Base;
        self.host.progress("agent started with the 4 base faults");
        Ok(())
    }

    pub(super) fn stop_agent(&mut self) -> anyhow::Result<()> {
        if let Some((guard, api)) = self.agent.take() {
            drop(api);
            self.problems.extend(guard.stop_and_review(&self.host.rt));
        }
        self.state = State::Off;
        self.host.progress("agent stopped");
        Ok(())
    }

    /// Applies (`add`) or reverts the extra faults: alternately a connect
    /// fault (ECONNREFUSED) and a socket fault (EPERM), 100%, no filter.
    pub(super) fn add_others(&mut self, add: bool) -> anyhow::Result<()> {
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
            self.host
                .rt
                .block_on(bulk(&socket, reqs, |api, req| (api.apply)(req)))?;
        } else {
            let ids: Vec<String> = (0..self.others.len())
                .map(|i| format!("sys-other-{i}"))
                .collect();
            self.host
                .rt
                .block_on(bulk(&socket, ids, |api, id| (api.revert)(id)))?;
        }
        drop(api);
        self.state = if add { State::Many } else { State::Base };
        self.host.progress(&format!(
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
    pub(super) fn sanity(&mut self) -> anyhow::Result<()> {
        for (op, cgroup, errno, calls) in [
            (Op::Connect, &self.other_connect, "ECONNREFUSED", "connects"),
            (Op::Socket, &self.other_socket, "EPERM", "socket() calls"),
        ] {
            let (r, _) = self.helper(op, cgroup, 200)?;
            let failed = r.errors.get(errno).copied().unwrap_or(0);
            let what = format!(
                "{} fault on the other cgroup: {failed} of {} {calls} failed with {errno}",
                op.name(),
                r.attempted
            );
            if failed != r.attempted {
                self.problems.push(what.clone());
            }
            self.checks.push(what);
        }

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
        self.host.progress(&what);
        self.checks.push(what);

        // Run the targets once so the counters have something to not match.
        for op in [Op::Connect, Op::Socket] {
            self.helper(op, self.cgroup(Who::Target, op), 200)?;
        }
        let api = self.api()?;
        for id in ["sys-target-connect", "sys-target-socket"] {
            let f = self.host.rt.block_on((api.get)(id.to_owned()))?;
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
    pub(super) fn program_stats(&mut self) -> anyhow::Result<()> {
        self.goto(State::Base)?;
        let api = self.api()?;
        let caps = self.host.rt.block_on((api.caps)(()))?;
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
            self.host.progress(&format!(
                "{name}: {runs} runs for {count} calls, {per_run:.0} ns per run (bpf_stats)"
            ));
            self.prog_stats.push((name, count, runs, per_run));
        }
        Ok(())
    }
}
