//! The loss benchmark's report: the tables (for the terminal and
//! `loss.md`) and `loss.json` (every sample).

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use serde_json::{Value, json};

use super::{
    apply::{Latency, Verified},
    measure::Bench,
    plan::{
        Config, Ns, Run, TCP_PROBE, UDP_PAYLOAD, UDP_PROBE, Who, tcp_cpu, tcp_mbs, udp_cpu,
        udp_wall,
    },
};
use crate::bench::{
    api::BULK_CLIENTS,
    stats::{max, median, min, paired, quantile},
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
    pub(super) fn config(&self, key: &str) -> Option<&Config> {
        self.bench.configs.iter().find(|c| c.key == key)
    }

    pub(super) fn per_packet_table(&self) -> String {
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
    pub(super) fn program_cost_table(&self) -> String {
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

    pub(super) fn latency_table(&self) -> String {
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

    pub(super) fn memory_table(&self) -> String {
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

    pub(super) fn maps_table(&self) -> String {
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

    pub(super) fn transitions_table(&self) -> String {
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

pub(super) fn fmt_us(ns: f64) -> String {
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

pub(super) fn kib(bytes: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "for display")]
    let k = bytes as f64 / 1024.0;
    if k >= 1024.0 {
        format!("{:.2} MiB", k / 1024.0)
    } else {
        format!("{k:.1} KiB")
    }
}
