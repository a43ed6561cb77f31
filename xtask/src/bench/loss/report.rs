//! The loss benchmark's report: the terminal's tables, `loss.md` (tables
//! and what each row shows, from the numbers) and `loss.json` (every
//! sample).

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use serde_json::{Value, json};

use super::{
    apply::{Latency, Verified},
    iptables::CHAIN,
    measure::Bench,
    plan::{
        Config, NEVER_MATCHING_CIDR, Ns, RUN_TARGET, Run, TCP_BYTES_BOUNDS, TCP_PROBE,
        UDP_COUNT_BOUNDS, UDP_PAYLOAD, UDP_PROBE, VERIFY_SEND_GAP, Who, tcp_cpu, tcp_mbs, udp_cpu,
        udp_wall,
    },
};
use crate::bench::{
    api::BULK_CLIENTS,
    stats::{max, median, min, paired, quantile, verdict},
    table::{group, ratio_cell, signed_cell, spread_cell},
};

#[derive(Debug)]
pub(super) struct Report<'a> {
    pub(super) bench: &'a Bench,
    pub(super) latency: &'a Latency,
    pub(super) runtime: Duration,
    pub(super) load_end: String,
}

impl Report<'_> {
    fn config(&self, key: &str) -> Option<&Config> {
        self.bench.configs.iter().find(|c| c.key == key)
    }

    fn per_packet_table(&self) -> String {
        let base = self.config("a");
        let mut t = String::from(
            "| | configuration | UDP CPU ns/packet | × baseline | UDP wall ns/packet | TCP MB/s | × baseline | TCP MB per CPU-s | per run |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for c in &self.bench.configs {
            let ratio = |m: fn(&Run) -> f64| match base {
                Some(b) if c.key != "a" => ratio_cell(&paired(&c.per_round(m), &b.per_round(m))),
                _ => "1".to_owned(),
            };
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} packets, {} MiB |",
                c.key,
                c.label,
                spread_cell(&c.per_round(udp_cpu), 0),
                ratio(udp_cpu),
                spread_cell(&c.per_round(udp_wall), 0),
                spread_cell(&c.per_round(tcp_mbs), 0),
                ratio(tcp_mbs),
                spread_cell(&c.per_round(tcp_cpu), 0),
                group(c.udp_count),
                c.tcp_bytes >> 20
            );
        }
        t
    }

    /// Per-round differences between two configurations measured in the
    /// same agent-state block: the program's own cost with drift removed.
    fn program_cost_table(&self) -> String {
        let mut t = String::from(
            "| difference (same block, per round) | UDP CPU ns/packet | UDP wall ns/packet | TCP MB/s ratio |\n|---|---|---|---|\n",
        );
        for (x, y) in [("d1", "b"), ("dN", "c"), ("c", "b")] {
            let (Some(cx), Some(cy)) = (self.config(x), self.config(y)) else {
                continue;
            };
            let diff = |m: fn(&Run) -> f64| -> Vec<f64> {
                cx.per_round(m)
                    .iter()
                    .zip(cy.per_round(m))
                    .map(|(a, b)| a - b)
                    .collect()
            };
            let _ = writeln!(
                t,
                "| {x} − {y} | {} | {} | {} |",
                signed_cell(&diff(udp_cpu)),
                signed_cell(&diff(udp_wall)),
                ratio_cell(&paired(&cx.per_round(tcp_mbs), &cy.per_round(tcp_mbs))),
            );
        }
        t
    }

    fn latency_table(&self) -> String {
        let l = self.latency;
        let mut t =
            String::from("| operation | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|\n");
        let mut row = |name: &str, v: &[f64]| {
            let _ = writeln!(
                t,
                "| {name} | {} | {} | {} | {} | {} |",
                v.len(),
                fmt_us(quantile(v, 0.5)),
                fmt_us(quantile(v, 0.9)),
                fmt_us(quantile(v, 0.99)),
                fmt_us(max(v)),
            );
        };
        let d = |v: &[Duration]| -> Vec<f64> { v.iter().map(|d| d.as_nanos() as f64).collect() };
        row(
            "GetCapabilities, for reference: the RPC path with no kernel work",
            &d(&l.caps),
        );
        row(
            "ApplyFault, new fault on an untargeted cgroup (RPC round trip)",
            &d(&l.apply_new),
        );
        row(
            "ApplyFault, update of an existing fault (RPC round trip)",
            &d(&l.apply_update),
        );
        row(
            "RevertFault of a fault that owns its cgroup's program (RPC round trip)",
            &d(&l.revert),
        );
        let v = &l.verified;
        #[expect(clippy::cast_precision_loss, reason = "nanoseconds, for display")]
        let f =
            |get: fn(&Verified) -> i64| -> Vec<f64> { v.iter().map(|s| get(s) as f64).collect() };
        row(
            "traffic-verified sample: ApplyFault RPC round trip",
            &f(|s| i64::try_from(s.apply_rpc_ns).unwrap_or(i64::MAX)),
        );
        row(
            "traffic-verified: call start → last packet that got through was sent",
            &f(|s| s.last_through_ns),
        );
        row(
            "traffic-verified: call start → first packet that was dropped was sent",
            &f(|s| s.first_dropped_ns),
        );
        row(
            "traffic-verified sample: RevertFault RPC round trip",
            &f(|s| i64::try_from(s.revert_rpc_ns).unwrap_or(i64::MAX)),
        );
        row(
            "traffic-verified: revert call start → first packet through again was sent",
            &f(|s| s.first_through_after_revert_ns),
        );
        t
    }

    fn memory_table(&self) -> String {
        // In order of first appearance, which follows the states.
        let mut groups: Vec<((usize, String), Vec<f64>)> = Vec::new();
        for m in &self.bench.memory {
            let key = (m.faults, m.label.clone());
            #[expect(clippy::cast_precision_loss, reason = "KiB, for display")]
            let v = m.rss_kib as f64;
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, vs)) => vs.push(v),
                None => groups.push((key, vec![v])),
            }
        }
        let mut t =
            String::from("| agent state | samples | VmRSS, median [min – max] |\n|---|---|---|\n");
        for ((_, label), v) in &groups {
            let _ = writeln!(
                t,
                "| {label} | {} | {} |",
                v.len(),
                if v.len() > 1 {
                    format!(
                        "{:.1} MiB [{:.1} – {:.1}]",
                        median(v) / 1024.0,
                        min(v) / 1024.0,
                        max(v) / 1024.0
                    )
                } else {
                    format!("{:.1} MiB", median(v) / 1024.0)
                }
            );
        }
        t
    }

    fn maps_table(&self) -> String {
        let mut t = String::from(
            "| object | kind | max_entries | bytes_memlock (0 faults) | bytes_memlock (many faults) |\n\
             |---|---|---|---|---|\n",
        );
        let Some((idle, many)) = &self.bench.maps else {
            return t;
        };
        let mut total = (0u64, 0u64);
        for kind in ["maps", "programs"] {
            let empty = Vec::new();
            let a = idle.get(kind).and_then(Value::as_array).unwrap_or(&empty);
            let b = many.get(kind).and_then(Value::as_array).unwrap_or(&empty);
            for (i, o) in a.iter().enumerate() {
                let m0 = o.get("bytes_memlock").and_then(Value::as_u64).unwrap_or(0);
                let m1 = b
                    .get(i)
                    .and_then(|x| x.get("bytes_memlock"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                total.0 += m0;
                total.1 += m1;
                let _ = writeln!(
                    t,
                    "| {} (id {}) | {} {} | {} | {} | {} |",
                    o.get("name").and_then(Value::as_str).unwrap_or("?"),
                    o.get("id").and_then(Value::as_u64).unwrap_or(0),
                    kind.trim_end_matches('s'),
                    o.get("type").and_then(Value::as_str).unwrap_or(""),
                    o.get("max_entries")
                        .and_then(Value::as_u64)
                        .map_or_else(|| "–".to_owned(), group),
                    kib(m0),
                    kib(m1),
                );
            }
        }
        let _ = writeln!(
            t,
            "| **total** | | | **{}** | **{}** |",
            kib(total.0),
            kib(total.1)
        );
        t
    }

    fn transitions_table(&self) -> String {
        let mut groups: BTreeMap<String, (usize, Vec<f64>)> = BTreeMap::new();
        for tr in &self.bench.transitions {
            let e = groups.entry(tr.what.clone()).or_insert((tr.n, Vec::new()));
            e.1.push(tr.seconds);
        }
        let mut t = String::from(
            "| operation | times | seconds, median [min – max] | per second |\n|---|---|---|---|\n",
        );
        for (what, (n, v)) in &groups {
            #[expect(clippy::cast_precision_loss, reason = "a rate")]
            let rate = if *n > 1 {
                format!("{:.0} faults/s", *n as f64 / median(v))
            } else {
                "–".to_owned()
            };
            let _ = writeln!(
                t,
                "| {what} | {} | {:.2} [{:.2} – {:.2}] | {rate} |",
                v.len(),
                median(v),
                min(v),
                max(v)
            );
        }
        t
    }

    /// What the terminal gets.
    pub(super) fn tables(&self) -> String {
        format!(
            "Per-packet cost ({} rounds × {} runs)\n{}\n{}\nTime to apply\n{}\nMemory\n{}\n{}\nState changes\n{}\ntotal runtime {:.0} s",
            self.bench.opts.rounds,
            self.bench.opts.reps,
            self.per_packet_table(),
            self.program_cost_table()
                + &self
                    .bench
                    .prog_stats
                    .map_or(String::new(), |(runs, ns)| format!(
                        "faultd_egress alone (bpf_stats): {runs} runs, {ns:.0} ns per run\n"
                    )),
            self.latency_table(),
            self.memory_table(),
            self.maps_table(),
            self.transitions_table(),
            self.runtime.as_secs_f64()
        )
    }

    pub(super) fn markdown(&self) -> String {
        let e = &self.bench.host.env;
        let o = &self.bench.opts;
        let n = group(o.faults as u64);
        let mut m = String::new();
        let _ = write!(
            m,
            "# Loss fault benchmark\n\n\
             ```\n{}\n```\n\n\
             - date: {}\n\
             - kernel: `{}`\n\
             - CPU: {} × {}\n\
             - commit: `{}`\n\
             - iptables: {}\n\
             - tc netem: not available on this host kernel (`{}`), so there is no netem \
               comparison here; it comes with the VM tier, whose Debian kernels ship `sch_netem`.\n\
             - priority: {}\n\
             - load average (1, 5, 15 min) at the start: {}; at the end: {}\n\
             - total runtime: {:.0} s\n\n\
             Generated by `xtask/src/bench/loss/`; every sample is in `loss.json`. The machine \
             is a 2-vCPU VM shared with other work (builds and tests of other changes ran \
             while this was measured, as the load average shows), so read the spreads, not \
             only the medians.\n\n",
            e.command,
            e.date,
            e.kernel,
            e.cpus,
            e.cpu,
            e.commit,
            e.iptables
                .iter()
                .map(|(t, v)| format!("`{t}`: {v}"))
                .collect::<Vec<_>>()
                .join("; "),
            e.netem,
            self.bench.host.renice,
            e.load_start,
            self.load_end,
            self.runtime.as_secs_f64(),
        );

        let _ = write!(
            m,
            "## 1. Per-packet cost\n\n\
             Each run sends 64-byte UDP datagrams with `sendto` in a tight loop \
             (`faultd-traffic sendto-bench`, in the measured cgroup) and reports the mean time \
             per call, then moves bytes over one TCP connection (`tcp-send` → `tcp-sink`, both \
             in the measured cgroup) and reports MB/s (10^6 bytes/s). On loopback the sender's \
             `sendto` also runs the receive path, so ns/packet is the whole host cost of one \
             packet. The UDP destination is a socket that is never read: once its buffer is \
             full, datagrams are dropped at the socket, so the time excludes waking a reader \
             (an IPI, which in this VM costs microseconds and varies with whatever the other \
             CPU runs). Sender and receivers are pinned to one CPU (the last) for the same \
             reason.\n\n\
             - \"UDP CPU ns/packet\" is the sender process's CPU time (user + system, \
               `getrusage(RUSAGE_CHILDREN)` after it is reaped, process start included) divided \
               by the packets: it leaves out the time the sender sat preempted, which the wall \
               clock (\"UDP wall\", what `sendto-bench` itself reports) does not. \
               \"TCP MB per CPU-s\" divides the bytes by the CPU time of sender and sink.\n\
             - {} rounds × {} runs. Within a round, the configurations that share an agent \
               state run in turn, {} times over; the round's value is the median of its {} \
               runs. Cells show the median over rounds with [min – max] over rounds. The \
               \"× baseline\" columns are per-round ratios to that round's baseline (paired, \
               which cancels drift between rounds), summarised the same way.\n\
             - Agent state is changed once per block: rounds alternate the order off → 1 fault → \
               {n} faults and back, and the configurations sharing a state are rotated per \
               round.\n\
             - Run size: the first visit of each configuration is a discarded probe that also \
               sizes its runs to about {} ms (UDP {}..{} packets, TCP {}..{} MiB), because \
               the iptables configurations are orders of magnitude slower.\n\
             - Every configuration runs in its own network namespace with only `lo` up \
               (created by the bench); the iptables rules live only in theirs.\n\
             - Cgroups: the bystander, the target and {} others are siblings under \
               `faultd-test/` (level 2). Faults are egress loss faults: the target's drops 100% \
               of packets to `{NEVER_MATCHING_CIDR}` (so nothing on 127.0.0.1), the others' drop \
               30% of everything (their cgroups carry no traffic). The agent ran with \
               `max_faults = {}`.\n\
             - iptables: `-A OUTPUT -j {CHAIN}` and per cgroup \
               `-A {CHAIN} -m cgroup --path <cgroup> -m statistic --mode random --probability 0.3 -j DROP`, \
               loaded with `iptables-restore --noflush`.\n\n",
            o.rounds,
            o.reps,
            o.reps,
            o.reps,
            RUN_TARGET.as_millis(),
            UDP_COUNT_BOUNDS.0,
            group(UDP_COUNT_BOUNDS.1),
            TCP_BYTES_BOUNDS.0 >> 20,
            TCP_BYTES_BOUNDS.1 >> 20,
            group(o.faults as u64 - 1),
            self.bench.max_faults(),
        );
        m.push_str(&self.per_packet_table());
        m.push_str(
            "\nThe program's own cost is best read from configurations measured in the same \
             block (same agent state, runs interleaved within seconds of each other), as \
             per-round differences:\n\n",
        );
        m.push_str(&self.program_cost_table());
        if let Some((runs, per_run)) = self.bench.prog_stats {
            let _ = write!(
                m,
                "\nThe program alone: with `kernel.bpf_stats_enabled=1` (switched on only for 3 \
                 extra UDP runs of d after the rounds, then back off), `faultd_egress` ran \
                 {} times at {per_run:.0} ns per run on average (`run_time_ns / run_cnt`, the \
                 kernel's clock reads around the program; the helpers it calls are included). \
                 The rest of the d − b difference is the kernel's cgroup-BPF dispatch around it \
                 (`__cgroup_bpf_run_filter_skb`: walking the effective array, moving `skb->data` \
                 to the network header and back, RCU and migrate-disable).\n",
                group(runs)
            );
        }
        m.push_str("\nWhat each row shows:\n\n");
        for c in &self.bench.configs {
            let _ = writeln!(m, "- **{}**: {}", c.key, self.interpret(c));
        }
        m.push_str("\nSanity checks made during the run:\n\n");
        for c in &self.bench.checks {
            let _ = writeln!(m, "- {c}");
        }

        let _ = write!(
            m,
            "\n## 2. Time to apply\n\n\
             A fresh agent, one client, calls in sequence: {} ApplyFault calls creating faults \
             on cgroups that no fault targets (each attaches the egress program to its cgroup \
             and writes one rules entry), {} ApplyFault calls updating one existing fault \
             (alternating its probability: one map write), and {} RevertFault calls removing \
             the new faults (detach and delete). ApplyFault returns after the kernel state is \
             committed, so its round trip is an upper bound on the time to take effect.\n\n\
             Independent check with traffic, {} times: a thread sends a 64-byte datagram from a \
             fresh cgroup every ~{} µs (each carrying its send time) to a sink thread; the \
             bench applies a 100% egress loss fault to that cgroup, waits 20 ms, reverts it. The \
             fault took effect between the send times of the last packet the sink received and \
             the first it did not; times are relative to the start of the call. The \
             resolution is the sender's spacing (median {}).\n\n",
            o.applies,
            o.applies,
            o.applies,
            o.verified,
            VERIFY_SEND_GAP.as_micros(),
            fmt_us(median(
                &self
                    .latency
                    .verified
                    .iter()
                    .map(|s| s.send_gap_ns as f64)
                    .collect::<Vec<_>>()
            )),
        );
        m.push_str(&self.latency_table());
        m.push('\n');
        m.push_str(&self.latency_notes());

        let _ = write!(
            m,
            "\n## 3. Memory\n\n\
             The agent's VmRSS (`/proc/<pid>/status`), sampled at each state change of \
             section 1, and the kernel memory of what it loaded (`bpftool -j map|prog show id N`, \
             `bytes_memlock`; ids from GetCapabilities).\n\n"
        );
        m.push_str(&self.memory_table());
        m.push('\n');
        m.push_str(&self.maps_table());
        m.push_str(&self.memory_notes());

        let _ = write!(m, "\n## State changes during section 1\n\n");
        m.push_str(&self.transitions_table());
        m.push_str(&self.problems_section());
        m
    }

    fn memory_notes(&self) -> String {
        let n = group(self.bench.opts.faults as u64);
        let rss = |faults: usize, reverted: bool| -> f64 {
            #[expect(clippy::cast_precision_loss, reason = "KiB")]
            let v: Vec<f64> = self
                .bench
                .memory
                .iter()
                .filter(|m| m.faults == faults && m.label.contains("reverted") == reverted)
                .map(|m| m.rss_kib as f64)
                .collect();
            median(&v)
        };
        let (idle, many, after) = (
            rss(0, false),
            rss(self.bench.opts.faults, false),
            rss(1, true),
        );
        let memlock = |k: usize| -> u64 {
            self.bench.maps.as_ref().map_or(0, |m| {
                let v = if k == 0 { &m.0 } else { &m.1 };
                ["maps", "programs"]
                    .iter()
                    .filter_map(|kind| v.get(kind).and_then(Value::as_array))
                    .flatten()
                    .filter_map(|o| o.get("bytes_memlock").and_then(Value::as_u64))
                    .sum()
            })
        };
        let mut out = format!(
            "\n- VmRSS grows from {:.1} MiB with no fault to {:.1} MiB with {n} faults, about \
             {:.1} KiB per fault. After {} of them were reverted it stayed at {:.1} MiB: freed \
             memory is kept by the allocator. Each agent instance in this run went through \
             one such cycle, so this run does not show whether repeated cycles grow it.\n",
            idle / 1024.0,
            many / 1024.0,
            (many - idle) / (self.bench.opts.faults as f64),
            group(self.bench.opts.faults as u64 - 1),
            after / 1024.0,
        );
        let (m0, m1) = (memlock(0), memlock(1));
        if m0 == m1 {
            let _ = writeln!(
                out,
                "- Kernel memory of the agent's maps and programs: {} with 0 and with {n} \
                 faults alike: the maps are preallocated at load, sized by `limits.max_faults` \
                 ({}), not by the number of faults.",
                kib(m0),
                self.bench.max_faults()
            );
        } else {
            let _ = writeln!(
                out,
                "- Kernel memory of the agent's maps and programs: {} with 0 faults, {} with \
                 {n}.",
                kib(m0),
                kib(m1)
            );
        }
        let _ = writeln!(
            out,
            "- Not counted above: the {n} bpf_link objects and the effective program array the \
             kernel allocates per attached cgroup, which bpftool does not report."
        );
        out
    }

    fn latency_notes(&self) -> String {
        let v = &self.latency.verified;
        let viol: usize = v.iter().map(|s| s.violations).sum();
        let before_return = v
            .iter()
            .filter(|s| s.first_dropped_ns <= i64::try_from(s.apply_rpc_ns).unwrap_or(i64::MAX))
            .count();
        let mut out = format!(
            "- Packets sent after ApplyFault returned that still reached the sink: {viol} in {} \
             applies (the API promises 0). In {before_return} of them the first dropped packet \
             was sent before the call returned{}.\n",
            v.len(),
            if before_return < v.len() {
                "; in the others the sender sent nothing between the last packet that got \
                 through and the return (its thread was not running), so traffic cannot place \
                 the moment more precisely than the RPC does"
            } else {
                ""
            }
        );
        let d = |x: &[Duration]| -> Vec<f64> { x.iter().map(|d| d.as_nanos() as f64).collect() };
        let new = d(&self.latency.apply_new);
        let upd = d(&self.latency.apply_update);
        let caps = d(&self.latency.caps);
        let extra = median(&new) - median(&upd);
        let spread = quantile(&upd, 0.9) - quantile(&upd, 0.1);
        let _ = writeln!(
            out,
            "- Medians: GetCapabilities {}, update {}, new fault {}, revert {}. The agent's RPC \
             path (gRPC over the Unix socket, the manager lock on the blocking pool) is most of \
             every call. An update adds one map write to it; a new fault adds the program \
             attach as well (opening the cgroup, `BPF_LINK_CREATE`, the kernel recomputing the \
             cgroup's effective program array). New − update = {}{}.",
            fmt_us(median(&caps)),
            fmt_us(median(&upd)),
            fmt_us(median(&new)),
            fmt_us(median(&d(&self.latency.revert))),
            fmt_us(extra),
            if extra.abs() < spread {
                format!(
                    ", less than the updates' own p10–p90 spread ({}): the attach is not \
                     visible next to the RPC path here",
                    fmt_us(spread)
                )
            } else {
                String::new()
            }
        );
        let lat_first: Vec<f64> = new.iter().take(100).copied().collect();
        let lat_last: Vec<f64> = new.iter().rev().take(100).copied().collect();
        let _ = writeln!(
            out,
            "- The new-fault applies ran with 0 → {} faults present: median of the first 100 \
             {}, of the last 100 {}.",
            new.len(),
            fmt_us(median(&lat_first)),
            fmt_us(median(&lat_last))
        );
        out
    }

    fn problems_section(&self) -> String {
        let mut out = String::from("\n## Problems seen\n\n");
        if self.bench.problems.is_empty() && self.bench.agent_logs.is_empty() {
            out.push_str(
                "None: every sanity check passed and no agent logged a warning or error.\n",
            );
            return out;
        }
        for p in &self.bench.problems {
            let _ = writeln!(out, "- {p}");
        }
        if !self.bench.agent_logs.is_empty() {
            let _ = writeln!(
                out,
                "- The agents logged {} warning/error lines; the first ones:\n\n```",
                self.bench.agent_logs.len()
            );
            for l in self.bench.agent_logs.iter().take(10) {
                let _ = writeln!(out, "{l}");
            }
            out.push_str("```\n");
        }
        out
    }

    /// One line per configuration: what it isolates, and what was measured.
    fn interpret(&self, c: &Config) -> String {
        let n = group(self.bench.opts.faults as u64);
        let Some(base) = self.config("a") else {
            return String::new();
        };
        let rounds = |m| c.per_round(m);
        let du = median(&rounds(udp_cpu)) - median(&base.per_round(udp_cpu));
        let ratios = paired(&rounds(udp_cpu), &base.per_round(udp_cpu));
        let above: Vec<f64> = ratios.iter().map(|r| r - 1.0).collect();
        let noise = |v: &[f64]| (max(v) - min(v)) / median(v) * 100.0;
        let tcp_ratios = paired(&rounds(tcp_mbs), &base.per_round(tcp_mbs));
        let tcp_lower: Vec<f64> = tcp_ratios.iter().map(|r| 1.0 - r).collect();
        let measured = format!(
            "Measured: {du:+.0} CPU ns/packet against the baseline's median; per round, {}; \
             the baseline's own rounds spread over {:.0}% of its median. TCP at {:.2}× the \
             baseline's MB/s; throughput lower in {} of {} rounds",
            verdict(&above),
            noise(&base.per_round(udp_cpu)),
            median(&tcp_ratios),
            tcp_lower.iter().filter(|d| **d > 0.0).count(),
            tcp_lower.len(),
        );
        let same_block = |other: &str| -> String {
            let Some(o) = self.config(other) else {
                return String::new();
            };
            let d: Vec<f64> = rounds(udp_cpu)
                .iter()
                .zip(o.per_round(udp_cpu))
                .map(|(a, b)| a - b)
                .collect();
            format!(
                " Against {other}, measured in the same block: {:+.0} CPU ns/packet (median; \
                 rounds {:+.0} .. {:+.0}; {}).",
                median(&d),
                min(&d),
                max(&d),
                verdict(&d)
            )
        };
        match c.key {
            "a" => format!(
                "no cgroup program attached anywhere (the kernel's `cgroup_bpf_enabled` static \
                 key for inet egress is off, so `__cgroup_bpf_run_filter_skb` is skipped) and no \
                 netfilter rule in the namespace. Its rounds spread over {:.0}% of the median \
                 (UDP CPU), {:.0}% (UDP wall), {:.0}% (TCP MB/s).",
                noise(&rounds(udp_cpu)),
                noise(&rounds(udp_wall)),
                noise(&rounds(tcp_mbs)),
            ),
            "b" => format!(
                "the bystander's cgroup has no program, and faultd attaches only at targeted \
                 cgroups, so no faultd code runs for its packets. What remains is the kernel's own \
                 check once some cgroup has an inet egress program: the static key is on, and \
                 `BPF_CGROUP_RUN_PROG_INET_EGRESS` compares the socket's cgroup's effective \
                 array with the shared empty one (include/linux/bpf-cgroup.h, \
                 `cgroup_bpf_sock_enabled`), a pointer comparison. {measured}."
            ),
            "c" => format!(
                "as b, with {n} programs attached to other cgroups. The bystander's effective \
                 array is still empty, so nothing here should grow with the number of faults. \
                 {measured}.{}",
                same_block("b")
            ),
            "d1" => format!(
                "a packet of a targeted cgroup that its fault does not match: one run of \
                 `faultd_egress` per egress packet (hash lookup of the cgroup id, IP header \
                 parse, filter compare), on the data and on the ACKs for TCP since sender and \
                 sink share the cgroup. {measured}.{}",
                same_block("b")
            ),
            "dN" => format!(
                "as d1, with the target's entry one of {n} in the rules hash map: a hash \
                 lookup, so it should cost what d1 costs. {measured}.{}",
                same_block("c")
            ),
            k if k.ends_with("-1") => format!(
                "one rule behind OUTPUT's jump; every packet of every cgroup evaluates its \
                 cgroup match (for the bystander: no match, so the statistic match never runs). \
                 {measured}."
            ),
            k => {
                let one = self.config(&k.replace("-N", "-1"));
                let per_rule = one.map_or(f64::NAN, |o| {
                    (median(&rounds(udp_cpu)) - median(&o.per_round(udp_cpu)))
                        / (self.bench.opts.faults.saturating_sub(1).max(1) as f64)
                });
                format!(
                    "{n} rules, one per other cgroup, evaluated in order for every packet of \
                     every socket in the namespace, whichever cgroup it belongs to: about \
                     {per_rule:.1} CPU ns per rule per packet. {measured}."
                )
            }
        }
    }

    pub(super) fn json(&self) -> Value {
        let e = &self.bench.host.env;
        let b = self.bench;
        let l = self.latency;
        let ns = |v: &[Duration]| -> Vec<u64> {
            v.iter()
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                .collect()
        };
        json!({
            "command": e.command,
            "date": e.date,
            "kernel": e.kernel,
            "cpu": e.cpu,
            "cpus": e.cpus,
            "commit": e.commit,
            "iptables": e.iptables.iter().map(|(t, v)| json!({"tool": t, "version": v})).collect::<Vec<_>>(),
            "netem": e.netem,
            "priority": self.bench.host.renice,
            "loadavg_start": e.load_start,
            "loadavg_end": self.load_end,
            "runtime_s": self.runtime.as_secs_f64(),
            "options": {
                "rounds": b.opts.rounds,
                "reps": b.opts.reps,
                "faults": b.opts.faults,
                "applies": b.opts.applies,
                "verified": b.opts.verified,
                "max_faults": b.max_faults(),
                "udp_payload": UDP_PAYLOAD,
                "bulk_clients": BULK_CLIENTS,
            },
            "per_packet": b.configs.iter().map(|c| json!({
                "key": c.key,
                "label": c.label,
                "agent_state": c.state.name(),
                "cgroup": match c.who { Who::Bystander => b.bystander.relative_str(), Who::Target => b.target.relative_str() },
                "netns": match c.ns { Ns::Clean => "clean".to_owned(), Ns::Ipt(k) => format!("{} with {} rules", b.ipt[k].tool.tool(), b.ipt[k].rules) },
                "udp_packets_per_run": c.udp_count,
                "tcp_bytes_per_run": c.tcp_bytes,
                "per_round_median": {
                    "udp_cpu_ns_per_packet": c.per_round(udp_cpu),
                    "udp_wall_ns_per_packet": c.per_round(udp_wall),
                    "tcp_mb_per_s": c.per_round(tcp_mbs),
                    "tcp_mb_per_cpu_s": c.per_round(tcp_cpu),
                },
                "runs": c.runs.iter().map(|r| json!({
                    "round": r.round,
                    "udp_wall_ns_per_packet": r.udp_wall,
                    "udp_cpu_ns_per_packet": r.udp_cpu,
                    "tcp_mb_per_s": r.tcp_mbs,
                    "tcp_mb_per_cpu_s": r.tcp_mb_per_cpu_s,
                })).collect::<Vec<_>>(),
                "probe": c.probe.map(|(u, t)| json!({"udp_ns_per_packet": u, "udp_packets": UDP_PROBE, "tcp_mb_per_s": t, "tcp_bytes": TCP_PROBE})),
            })).collect::<Vec<_>>(),
            "latency_ns": {
                "get_capabilities": ns(&l.caps),
                "apply_new": ns(&l.apply_new),
                "apply_update": ns(&l.apply_update),
                "revert": ns(&l.revert),
                "verified": l.verified.iter().map(|s| json!({
                    "apply_rpc": s.apply_rpc_ns,
                    "last_through_after_call_start": s.last_through_ns,
                    "first_dropped_after_call_start": s.first_dropped_ns,
                    "revert_rpc": s.revert_rpc_ns,
                    "first_through_after_revert_start": s.first_through_after_revert_ns,
                    "violations": s.violations,
                    "send_gap_median": s.send_gap_ns,
                    "sent": s.sent,
                    "received": s.received,
                })).collect::<Vec<_>>(),
            },
            "memory": {
                "rss_kib": b.memory.iter().map(|m| json!({"state": m.label, "faults": m.faults, "vm_rss_kib": m.rss_kib})).collect::<Vec<_>>(),
                "kernel_objects": b.maps.as_ref().map(|(idle, many)| json!({"no_faults": idle, "many_faults": many})),
            },
            "faultd_egress_bpf_stats": b.prog_stats.map(|(runs, ns)| json!({"runs": runs, "ns_per_run": ns})),
            "transitions": b.transitions.iter().map(|t| json!({"what": t.what, "n": t.n, "seconds": t.seconds})).collect::<Vec<_>>(),
            "checks": b.checks,
            "problems": b.problems,
            "agent_warnings": b.agent_logs,
        })
    }
}

fn fmt_us(ns: f64) -> String {
    if !ns.is_finite() {
        return "–".into();
    }
    let us = ns / 1e3;
    if us.abs() >= 10_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else if us.abs() >= 100.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.1} µs")
    }
}

fn kib(bytes: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "for display")]
    let k = bytes as f64 / 1024.0;
    if k >= 1024.0 {
        format!("{:.2} MiB", k / 1024.0)
    } else {
        format!("{k:.1} KiB")
    }
}
