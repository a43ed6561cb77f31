//! The loss benchmark's measuring side: the agent moved between its states
//! (off, one fault, many faults) and each configuration's UDP and TCP runs,
//! with the checks and samples taken on the way.

use std::{
    fs,
    net::UdpSocket,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use faultd_proto::agent::v1 as pb;
use faultd_tests::{
    AgentGuard, AgentOptions, CgroupGuard, bpf,
    faults::Loss,
    measure::{FAULT_DURATION, Pinned, children_cpu, prog_runs_during, round_order},
    traffic::{sendto_bench, tcp_send, tcp_sink},
};
use serde_json::{Value, json};

use super::{
    iptables::IptChain,
    plan::{
        Config, NEVER_MATCHING_CIDR, Ns, OTHER_PPM, Options, RUN_TARGET, Run, State,
        TCP_BYTES_BOUNDS, TCP_PROBE, UDP_COUNT_BOUNDS, UDP_PAYLOAD, UDP_PROBE, Who,
    },
};
use crate::bench::{
    api::{Api, BULK_CLIENTS, BoxFut, bulk},
    host::Host,
    netns::NetNs,
    table::group,
};

#[derive(Debug)]
pub(super) struct RunningAgent {
    pub(super) guard: AgentGuard,
    pub(super) api: Arc<Api>,
}

#[derive(Debug)]
pub(super) struct MemorySample {
    pub(super) label: String,
    pub(super) faults: usize,
    pub(super) rss_kib: u64,
}

impl MemorySample {
    /// The agent `pid`'s VmRSS now, with `faults` faults held.
    fn of(pid: u32, label: impl Into<String>, faults: usize) -> anyhow::Result<Self> {
        Ok(Self {
            label: label.into(),
            faults,
            rss_kib: rss_kib(pid)?,
        })
    }
}

#[derive(Debug)]
pub(super) struct Transition {
    pub(super) what: String,
    pub(super) n: usize,
    pub(super) seconds: f64,
}

/// Fields drop in declaration order: the agent and the iptables chains go
/// before the cgroups they refer to (iptables-legacy re-validates every
/// rule's `--path` when a rule is deleted, and fails once a cgroup is gone).
#[derive(Debug)]
pub(super) struct Bench {
    pub(super) agent: Option<RunningAgent>,
    pub(super) ipt: Vec<IptChain>,
    pub(super) clean: NetNs,
    pub(super) bystander: CgroupGuard,
    pub(super) target: CgroupGuard,
    pub(super) others: Vec<CgroupGuard>,
    pub(super) opts: Options,
    pub(super) host: Host,
    pub(super) state: State,
    pub(super) configs: Vec<Config>,
    pub(super) memory: Vec<MemorySample>,
    pub(super) transitions: Vec<Transition>,
    pub(super) checks: Vec<String>,
    /// Kernel objects and their memlock, (at 0 faults, at many faults).
    pub(super) maps: Option<(Value, Value)>,
    /// `faultd_egress` with kernel.bpf_stats_enabled: (runs, ns per run).
    pub(super) prog_stats: Option<(u64, f64)>,
    pub(super) problems: Vec<String>,
    /// Warnings and errors from every agent instance's log.
    pub(super) agent_logs: Vec<String>,
}

impl Bench {
    pub(super) fn per_packet(&mut self) -> anyhow::Result<()> {
        for round in 0..self.opts.rounds {
            let order: &[State] = if round % 2 == 0 {
                &[State::Off, State::One, State::Many]
            } else {
                &[State::Many, State::One, State::Off]
            };
            for &state in order {
                self.goto(state)?;
                let members = (0..self.configs.len())
                    .filter(|&i| self.configs[i].state == state)
                    .collect();
                for i in round_order(members, round, self.opts.reps) {
                    self.measure(i, round)?;
                }
                if round == 0 && state == State::One {
                    self.check_target_fault()?;
                }
            }
            self.host
                .progress(&format!("round {}/{} done", round + 1, self.opts.rounds));
        }
        Ok(())
    }

    pub(super) fn measure(&mut self, i: usize, round: usize) -> anyhow::Result<()> {
        let (who, ns) = (self.configs[i].who, self.configs[i].ns);
        let cgroup = match who {
            Who::Bystander => &self.bystander,
            Who::Target => &self.target,
        };
        let netns = match ns {
            Ns::Clean => &self.clean,
            Ns::Ipt(k) => &self.ipt[k].ns,
        };
        let _in = netns.enter()?;
        let _pinned = Pinned::last_cpu();
        let cfg = &mut self.configs[i];
        if cfg.probe.is_none() {
            // Warm-up and sizing; not recorded.
            let (udp, _) = udp_run(cgroup, UDP_PROBE)?;
            let (tcp, _) = tcp_run(cgroup, TCP_PROBE)?;
            cfg.probe = Some((udp, tcp));
            cfg.udp_count = sized(
                RUN_TARGET.as_secs_f64() * 1e9 / udp.max(1.0),
                UDP_COUNT_BOUNDS,
                1,
            );
            cfg.tcp_bytes = sized(
                RUN_TARGET.as_secs_f64() * tcp * 1e6,
                TCP_BYTES_BOUNDS,
                1 << 20,
            );
        }
        let (udp_wall, udp_cpu) = udp_run(cgroup, cfg.udp_count)?;
        let (tcp_mbs, tcp_mb_per_cpu_s) = tcp_run(cgroup, cfg.tcp_bytes)?;
        cfg.runs.push(Run {
            round,
            udp_wall,
            udp_cpu,
            tcp_mbs,
            tcp_mb_per_cpu_s,
        });
        let line = format!(
            "  {:<11} {:>8.0} ns/packet wall {:>8.0} CPU ({} packets)  {:>7.1} MB/s ({} MiB)",
            cfg.key,
            udp_wall,
            udp_cpu,
            cfg.udp_count,
            tcp_mbs,
            cfg.tcp_bytes >> 20
        );
        drop(_pinned);
        drop(_in);
        self.host.progress(&line);
        Ok(())
    }

    /// Moves the agent to `state`, one step at a time.
    pub(super) fn goto(&mut self, want: State) -> anyhow::Result<()> {
        while self.state != want {
            match (self.state, want) {
                (State::Off, _) => self.start_agent()?,
                (State::One, State::Many) => self.add_others()?,
                (State::One, State::Off) => self.stop_agent()?,
                (State::Many, _) => self.remove_others()?,
                (State::One, State::One) => {}
            }
        }
        Ok(())
    }

    pub(super) fn max_faults(&self) -> usize {
        (self.opts.faults + 64).max(10_240)
    }

    pub(super) fn spawn_agent(&self) -> anyhow::Result<(RunningAgent, f64)> {
        let t = Instant::now();
        let mut guard = AgentGuard::start(AgentOptions {
            bin: Some(self.host.faultd.clone()),
            config_toml: Some(format!("[limits]\nmax_faults = {}\n", self.max_faults())),
            ..AgentOptions::default()
        });
        guard.wait_ready();
        let ready = t.elapsed().as_secs_f64();
        let api = self.host.rt.block_on(Api::connect(&guard.socket()))?;
        Ok((
            RunningAgent {
                guard,
                api: Arc::new(api),
            },
            ready,
        ))
    }

    pub(super) fn start_agent(&mut self) -> anyhow::Result<()> {
        let (agent, ready) = self.spawn_agent()?;
        self.transitions.push(Transition {
            what: format!(
                "agent start until the socket accepts ({} cgroups in the tree)",
                self.others.len() + 2
            ),
            n: 1,
            seconds: ready,
        });
        let pid = agent.guard.pid();
        self.memory
            .push(MemorySample::of(pid, "just started, no fault", 0)?);
        if self.maps.is_none() {
            let objects = self.kernel_objects(&agent.api)?;
            self.maps = Some((objects, Value::Null));
        }
        let req = target_fault(&self.target).request();
        self.host.rt.block_on((agent.api.apply)(req))?;
        self.agent = Some(agent);
        self.state = State::One;
        self.memory.push(MemorySample::of(pid, "1 fault", 1)?);
        self.host.progress(&format!(
            "agent started (ready in {ready:.2} s) with the target's fault"
        ));
        Ok(())
    }

    pub(super) fn stop_agent(&mut self) -> anyhow::Result<()> {
        let Some(agent) = self.agent.take() else {
            self.state = State::Off;
            return Ok(());
        };
        let t = Instant::now();
        self.stop(agent)?;
        self.transitions.push(Transition {
            what: "agent stop (SIGTERM, reverts its 1 fault)".into(),
            n: 1,
            seconds: t.elapsed().as_secs_f64(),
        });
        self.state = State::Off;
        self.host.progress("agent stopped");
        Ok(())
    }

    /// SIGTERM and wait, with the client's connection closed first.
    pub(super) fn stop(&mut self, agent: RunningAgent) -> anyhow::Result<()> {
        let RunningAgent { guard, api } = agent;
        drop(api);
        let (guard, status) = guard.stop_driving(&self.host.rt);
        self.collect_log(&guard);
        if !status.success() {
            self.problems
                .push(format!("the agent exited with {status} after SIGTERM"));
        }
        Ok(())
    }

    pub(super) fn collect_log(&mut self, guard: &AgentGuard) {
        self.agent_logs.extend(guard.warnings());
    }

    /// Runs `call` over `items` from [`BULK_CLIENTS`] connections and
    /// records it as the transition "`verb` N `faults`"; returns N and the
    /// seconds it took.
    fn timed_bulk<T: Send + 'static, R: Send + 'static>(
        &mut self,
        verb: &str,
        faults: &str,
        items: Vec<T>,
        call: fn(&Api, T) -> BoxFut<R>,
    ) -> anyhow::Result<(usize, f64)> {
        let socket = self.agent.as_ref().context("no agent")?.guard.socket();
        let n = items.len();
        let t = Instant::now();
        self.host.rt.block_on(bulk(&socket, items, call))?;
        let seconds = t.elapsed().as_secs_f64();
        let what = format!(
            "{verb} {} {faults}, {BULK_CLIENTS} concurrent clients",
            group(n as u64)
        );
        self.transitions.push(Transition { what, n, seconds });
        Ok((n, seconds))
    }

    pub(super) fn add_others(&mut self) -> anyhow::Result<()> {
        let reqs: Vec<pb::ApplyFaultRequest> = self.others[..self.opts.faults - 1]
            .iter()
            .enumerate()
            .map(|(i, cg)| {
                Loss::new(&format!("bench-other-{i}"), cg.relative_str(), OTHER_PPM)
                    .duration(FAULT_DURATION)
                    .request()
            })
            .collect();
        let (n, secs) =
            self.timed_bulk("apply", "new faults", reqs, |api, req| (api.apply)(req))?;
        let agent = self.agent.as_ref().context("no agent")?;
        self.state = State::Many;
        let label = format!("{} faults", group(self.opts.faults as u64));
        self.memory.push(MemorySample::of(
            agent.guard.pid(),
            label,
            self.opts.faults,
        )?);
        if self.maps.as_ref().is_some_and(|(_, many)| many.is_null()) {
            let api = Arc::clone(&agent.api);
            let objects = self.kernel_objects(&api)?;
            if let Some(m) = self.maps.as_mut() {
                m.1 = objects;
            }
            let links = bpf::links_of_programs_named("faultd_")
                .iter()
                .filter(|l| l.attach_type.as_deref() == Some("cgroup_inet_egress"))
                .count();
            let what = format!(
                "with {} faults the kernel lists {} faultd egress links (bpftool link show)",
                self.opts.faults,
                group(links as u64)
            );
            if links != self.opts.faults {
                self.problems.push(what.clone());
            }
            self.checks.push(what);
        }
        let all = self.opts.faults as u64;
        self.host.progress(&rate(all, "applied", n, secs));
        Ok(())
    }

    pub(super) fn remove_others(&mut self) -> anyhow::Result<()> {
        let ids: Vec<String> = (0..self.opts.faults - 1)
            .map(|i| format!("bench-other-{i}"))
            .collect();
        let (n, secs) = self.timed_bulk("revert", "faults", ids, |api, id| (api.revert)(id))?;
        let pid = self.agent.as_ref().context("no agent")?.guard.pid();
        self.state = State::One;
        let label = format!(
            "1 fault, after {} were reverted",
            group(self.opts.faults as u64 - 1)
        );
        self.memory.push(MemorySample::of(pid, label, 1)?);
        self.host.progress(&rate(n as u64, "reverted", n, secs));
        Ok(())
    }

    /// The program's own run time, from the kernel's BPF run-time statistics
    /// (`kernel.bpf_stats_enabled`, switched on only for these runs: it adds
    /// two clock reads to every BPF program run on the machine).
    pub(super) fn program_stats(&mut self) -> anyhow::Result<()> {
        if self.state == State::Off {
            self.goto(State::One)?;
        }
        let agent = self.agent.as_ref().context("no agent")?;
        let caps = self.host.rt.block_on((agent.api.caps)(()))?;
        let id = caps
            .programs
            .iter()
            .find(|p| p.name == "faultd_egress")
            .context("GetCapabilities lists no faultd_egress program")?
            .id;
        let count = self
            .configs
            .iter()
            .find(|c| c.key == "d1")
            .map_or(UDP_COUNT_BOUNDS.1, |c| c.udp_count);
        let mut sent: anyhow::Result<()> = Ok(());
        let (runs, per_run) = prog_runs_during(id, || {
            sent = (|| {
                let _in = self.clean.enter()?;
                let _pinned = Pinned::last_cpu();
                for _ in 0..3 {
                    udp_run(&self.target, count)?;
                }
                Ok(())
            })();
        });
        sent?;
        self.prog_stats = Some((runs, per_run));
        self.host.progress(&format!(
            "faultd_egress: {runs} runs, {per_run:.0} ns per run (bpf_stats)"
        ));
        Ok(())
    }

    /// The target's program is attached, the bystander's cgroup has none,
    /// and the never-matching filter matched nothing.
    pub(super) fn check_target_fault(&mut self) -> anyhow::Result<()> {
        let agent = self.agent.as_ref().context("no agent")?;
        let fault = self
            .host
            .rt
            .block_on((agent.api.get)("bench-target".to_owned()))?;
        let matched = fault.counters.map_or(0, |c| c.matched);
        let links = bpf::links_of_programs_named("faultd_");
        let on_target = links
            .iter()
            .filter(|l| l.cgroup_id == Some(self.target.id()))
            .count();
        let on_bystander = links
            .iter()
            .filter(|l| l.cgroup_id == Some(self.bystander.id()))
            .count();
        let what = format!(
            "state one: {on_target} faultd link(s) on the target, {on_bystander} on the \
             bystander; the target's fault matched {matched} packets (its filter never matches)"
        );
        if on_target != 1 || on_bystander != 0 || matched != 0 {
            self.problems.push(what.clone());
        }
        self.checks.push(what);
        Ok(())
    }

    pub(super) fn kernel_objects(&self, api: &Api) -> anyhow::Result<Value> {
        let caps = self.host.rt.block_on((api.caps)(()))?;
        let show = |kind: &str, o: &pb::KernelObject| -> Value {
            let id = o.id.to_string();
            let v: Value = bpf::bpftool_json(&[kind, "show", "id", &id]);
            json!({
                "name": o.name,
                "id": o.id,
                "type": v.get("type"),
                "max_entries": v.get("max_entries"),
                "bytes_memlock": v.get("bytes_memlock"),
            })
        };
        Ok(json!({
            "maps": caps.maps.iter().map(|o| show("map", o)).collect::<Vec<_>>(),
            "programs": caps.programs.iter().map(|o| show("prog", o)).collect::<Vec<_>>(),
        }))
    }
}

/// "`count` faults `done` in S s (R/s)", for `n` calls in `secs`.
fn rate(count: u64, done: &str, n: usize, secs: f64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let per_s = n as f64 / secs;
    format!(
        "{} faults {done} in {secs:.1} s ({per_s:.0}/s)",
        group(count)
    )
}

fn target_fault(target: &CgroupGuard) -> Loss {
    Loss::new("bench-target", target.relative_str(), 1_000_000)
        .duration(FAULT_DURATION)
        .filter(pb::PacketFilter {
            remote_cidr: NEVER_MATCHING_CIDR.into(),
            ..pb::PacketFilter::default()
        })
}

fn sized(raw: f64, (lo, hi): (u64, u64), unit: u64) -> u64 {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "clamped to u64 bounds below"
    )]
    let n = raw.max(0.0).min(hi as f64) as u64;
    (n / unit * unit).clamp(lo, hi)
}

/// ns per 64-byte `sendto` from `cgroup` to a socket that nobody reads
/// (created on this thread, so in its current netns). Once its receive
/// buffer is full each datagram is dropped at the socket
/// (`__udp_enqueue_schedule_skb`): the sender pays the whole send path and
/// the loopback receive path up to the socket, but never a reader's wakeup,
/// which in this VM is an IPI, costs microseconds and varies with whatever
/// else the other CPU runs.
/// Returns (wall, CPU) ns per packet.
fn udp_run(cgroup: &CgroupGuard, count: u64) -> anyhow::Result<(f64, f64)> {
    let rx = UdpSocket::bind("127.0.0.1:0").context("binding the UDP receiver")?;
    let dst = rx.local_addr()?;
    let cpu0 = children_cpu();
    let r = sendto_bench(Some(cgroup), dst, count, UDP_PAYLOAD);
    let cpu = children_cpu().saturating_sub(cpu0);
    drop(rx);
    ensure!(
        r.errors.is_empty(),
        "sendto_bench from {} reported errors: {:?}",
        cgroup.relative_str(),
        r.errors
    );
    #[expect(clippy::cast_precision_loss, reason = "a mean")]
    let cpu_ns = cpu.as_nanos() as f64 / count.max(1) as f64;
    Ok((r.ns_per_packet(), cpu_ns))
}

/// MB/s (10^6 bytes) of one TCP connection from `cgroup` to a sink in it,
/// and MB per CPU-second of both processes.
fn tcp_run(cgroup: &CgroupGuard, bytes: u64) -> anyhow::Result<(f64, f64)> {
    let cpu0 = children_cpu();
    let sink = tcp_sink(Some(cgroup), "127.0.0.1:0", Duration::from_secs(60));
    let r = tcp_send(Some(cgroup), sink.addr(), bytes);
    let got = sink.finish();
    let cpu = children_cpu().saturating_sub(cpu0);
    ensure!(
        r.connect_errno.is_none() && r.write_errno.is_none() && r.bytes == bytes,
        "tcp_send from {}: {r:?}",
        cgroup.relative_str()
    );
    ensure!(
        got.bytes == bytes,
        "tcp_sink received {} of {bytes} bytes",
        got.bytes
    );
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let per_cpu = bytes as f64 / 1e6 / cpu.as_secs_f64().max(1e-9);
    Ok((r.bytes_per_sec() / 1e6, per_cpu))
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(sized(5e9, (100, 200_000), 1), 200_000);
        assert_eq!(sized(10.0, (100, 200_000), 1), 100);
        assert_eq!(
            sized(3.5 * f64::from(1u32 << 20), (1 << 20, 256 << 20), 1 << 20),
            3 << 20
        );
    }
}
