//! The syscall benchmark's report: the table, `syscall.md` (with what each
//! row isolates, from the numbers) and `syscall.json` (every sample).

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{
    measure::Bench,
    plan::{Config, NEVER_MATCHING_PORT, Op, Run, State, Who, cpu, wall},
};
use crate::bench::{
    env::loadavg,
    report::checks_and_problems,
    stats::{max, median, min, verdict},
    table::{group, signed_cell, spread_cell},
};

impl Bench {
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

    pub(super) fn table(&self) -> String {
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

    pub(super) fn markdown(&self, runtime: f64) -> String {
        let (env, renice) = (&self.host.env, &self.host.renice);
        let o = &self.opts;
        let mut out = format!(
            "# Syscall fault benchmark\n\n```\n{}\n```\n\n\
             - date: {}\n- kernel: `{}`\n- CPU: {} × {}\n- commit: `{}`\n- priority: {renice}\n\
             - load average (1, 5, 15 min) at the start: {}; at the end: {}\n\
             - total runtime: {runtime:.0} s\n\n\
             Generated by `xtask/src/bench/syscall/` (helpers shared with the other benchmarks in `xtask/src/bench/`); every \
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
        out.push_str(&checks_and_problems(&self.checks, &self.problems));
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

    pub(super) fn json(&self, runtime: f64) -> Value {
        let (env, renice) = (&self.host.env, &self.host.renice);
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
