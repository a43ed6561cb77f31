//! `cargo xtask bench syscall --vm`: what a file fault costs the open(),
//! read() and write() calls it lets through, measured inside the VM tier's
//! Debian kernels (the host has no BPF LSM), for both ways the agent
//! attaches its LSM programs (`lsm_cgroup` and node-wide), written to
//! `docs/benchmarks/syscall-vm.md` and `syscall-vm.json`.
//!
//! The measuring happens in the guest (`tests/src/bin/faultd-vmbench/
//! syscall.rs`, which says what each configuration is); this module runs it
//! through [`crate::vm::bench::run`] and does the statistics: per-round
//! medians, differences and ratios to the same round's no-agent baseline
//! (paired), the paired difference between the two flavours, a sign test,
//! and the programs' own run time and run count from bpf_stats.

use std::{collections::BTreeMap, fmt::Write as _};

use anyhow::ensure;
use serde::Deserialize;
use serde_json::{Value, json};

use super::syscall::Options;
use crate::{
    bench::{
        report::{checks_and_problems, write_report},
        stats::{median, paired, per_round_medians, verdict},
        table::{ratio_cell, signed_cell, spread_cell},
        vm_report::{VmHost, run_json},
    },
    vm::bench::{KernelResult, run_as},
};

/// The guest's result, as far as the report reads it.
#[derive(Debug, Deserialize)]
struct Guest {
    guest: GuestEnv,
    options: Value,
    agent_configs: Vec<AgentConfig>,
    features: Vec<Feature>,
    backends: Vec<Backend>,
    configs: Vec<Config>,
    bpf_stats: Vec<ProgStat>,
    checks: Vec<String>,
    problems: Vec<String>,
    runtime_s: f64,
}

#[derive(Debug, Deserialize)]
struct GuestEnv {
    cpu: String,
    cpus: usize,
    bpf_jit_enable: String,
    lsm: String,
}

#[derive(Debug, Deserialize)]
struct AgentConfig {
    flavour: String,
    config_toml: String,
}

#[derive(Debug, Deserialize)]
struct Feature {
    flavour: String,
    name: String,
    available: bool,
    detail: String,
}

#[derive(Debug, Deserialize)]
struct Backend {
    flavour: String,
    fault: String,
    backend: String,
}

#[derive(Debug, Deserialize)]
struct Config {
    key: String,
    op: String,
    /// "off", or the flavour the agent ran with.
    state: String,
    who: String,
    runs: Vec<Run>,
}

#[derive(Debug, Deserialize)]
struct Run {
    round: usize,
    wall_ns_per_call: f64,
    cpu_ns_per_call: f64,
}

#[derive(Debug, Deserialize)]
struct ProgStat {
    flavour: String,
    program: String,
    op: String,
    who: String,
    calls: u64,
    runs: u64,
    ns_per_run: f64,
}

fn wall(r: &Run) -> f64 {
    r.wall_ns_per_call
}

fn cpu(r: &Run) -> f64 {
    r.cpu_ns_per_call
}

const OPS: [&str; 3] = ["open", "read", "write"];
const WHO: [&str; 2] = ["bystander", "target"];
/// (state in the guest's JSON, how the report names it).
const FLAVOURS: [(&str, &str); 2] = [("lsm_cgroup", "`lsm_cgroup`"), ("node", "node-wide")];
const OFF: &str = "off";

/// One kernel's run, parsed.
type Kernel = KernelResult<Guest>;

impl Kernel {
    fn per_round(c: &Config, metric: fn(&Run) -> f64) -> Vec<f64> {
        per_round_medians(&c.runs, |r| r.round, metric)
    }

    fn baseline(&self, op: &str) -> Option<&Config> {
        self.guest
            .configs
            .iter()
            .find(|c| c.op == op && c.state == OFF)
    }

    /// Per-round differences to the same round's no-agent baseline.
    fn diffs(&self, c: &Config, metric: fn(&Run) -> f64) -> Vec<f64> {
        let base = self
            .baseline(&c.op)
            .map(|b| Self::per_round(b, metric))
            .unwrap_or_default();
        Self::per_round(c, metric)
            .iter()
            .zip(base)
            .map(|(a, b)| a - b)
            .collect()
    }

    fn ratios(&self, c: &Config) -> Vec<f64> {
        let base = self
            .baseline(&c.op)
            .map(|b| Self::per_round(b, wall))
            .unwrap_or_default();
        paired(&Self::per_round(c, wall), &base)
    }

    fn config(&self, op: &str, state: &str, who: &str) -> Option<&Config> {
        self.guest
            .configs
            .iter()
            .find(|c| c.op == op && c.state == state && c.who == who)
    }

    /// Per-round wall ns/call of `lsm_cgroup` minus node-wide, same round,
    /// same call and caller: the two flavours compared directly.
    fn flavour_diffs(&self, op: &str, who: &str) -> Vec<f64> {
        match (
            self.config(op, FLAVOURS[0].0, who),
            self.config(op, FLAVOURS[1].0, who),
        ) {
            (Some(a), Some(b)) => Self::per_round(a, wall)
                .iter()
                .zip(Self::per_round(b, wall))
                .map(|(a, b)| a - b)
                .collect(),
            _ => Vec::new(),
        }
    }

    fn stat(&self, flavour: &str, op: &str, who: &str) -> Option<&ProgStat> {
        self.guest
            .bpf_stats
            .iter()
            .find(|s| s.flavour == flavour && s.op == op && s.who == who)
    }

    /// Per flavour, `backend (fault, fault, ..)` per backend the agent chose.
    fn backends(&self, flavour: &str) -> String {
        let mut by: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for b in self.guest.backends.iter().filter(|b| b.flavour == flavour) {
            by.entry(&b.backend).or_default().push(&b.fault);
        }
        if by.is_empty() {
            return "none recorded".to_owned();
        }
        by.iter()
            .map(|(backend, faults)| format!("`{backend}` ({})", faults.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    ensure!(
        opts.schedule.rounds >= 1 && opts.schedule.reps >= 1,
        "--rounds and --reps >= 1"
    );
    let host = VmHost::collect()?;
    let args = [opts.schedule.args(), opts.file.args()].concat();
    let kernels: Vec<Kernel> = run_as("syscall", &args)?;
    write_report(
        "syscall-vm",
        &markdown(&host, &kernels),
        &to_json(&host, &kernels),
    )?;
    for k in &kernels {
        println!("\n{}\n\n{}", k.run.kernel, summary(k));
        for p in &k.guest.problems {
            println!("problem: {}: {p}", k.run.kernel);
        }
    }
    eprintln!("bench: wrote docs/benchmarks/syscall-vm.md and syscall-vm.json");
    Ok(())
}

/// One kernel's table: call × caller × flavour, against no agent.
fn summary(k: &Kernel) -> String {
    let mut out = String::from(
        "| call | caller | LSM programs | Δ wall ns/call vs no agent | ratio to no agent | \
         sign test over rounds | program ns/run | program runs / calls |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for op in OPS {
        for who in WHO {
            for (flavour, name) in FLAVOURS {
                let Some(c) = k.config(op, flavour, who) else {
                    continue;
                };
                let d = k.diffs(c, wall);
                let (ns, runs) = k.stat(flavour, op, who).map_or_else(
                    || ("–".to_owned(), "–".to_owned()),
                    |s| {
                        let ns = if s.runs == 0 {
                            "– (no runs)".to_owned()
                        } else {
                            format!("{:.0}", s.ns_per_run)
                        };
                        (ns, format!("{} / {}", s.runs, s.calls))
                    },
                );
                let _ = writeln!(
                    out,
                    "| `{op}()` | {who} | {name} | {} | {} | {} | {ns} | {runs} |",
                    signed_cell(&d),
                    ratio_cell(&k.ratios(c)),
                    verdict(&d),
                );
            }
        }
    }
    out
}

/// What one kernel's numbers say, from the numbers: the wording follows the
/// run counts and the sign tests, so it stays true for any outcome.
fn interpretation(k: &Kernel) -> String {
    let (cg, node) = (FLAVOURS[0].0, FLAVOURS[1].0);
    let delta = |flavour: &str, op: &str, who: &str| -> String {
        k.config(op, flavour, who).map_or_else(
            || "–".to_owned(),
            |c| {
                let d = k.diffs(c, wall);
                format!("`{op}()` {:+.0} ns ({})", median(&d), verdict(&d))
            },
        )
    };
    let runs = |flavour: &str, who: &str| -> String {
        OPS.iter()
            .filter_map(|op| k.stat(flavour, op, who))
            .map(|s| format!("{} for {} `{}()` calls", s.runs, s.calls, s.op))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ns_per_run = |flavour: &str, who: &str| -> String {
        OPS.iter()
            .filter_map(|op| k.stat(flavour, op, who))
            .filter(|s| s.runs > 0)
            .map(|s| format!("`{}()` {:.0}", s.op, s.ns_per_run))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let versus = |who: &str| -> String {
        OPS.iter()
            .map(|op| {
                let d = k.flavour_diffs(op, who);
                format!("`{op}()` {:+.0} ns ({})", median(&d), verdict(&d))
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let each = |flavour: &str, who: &str| -> String {
        OPS.iter()
            .map(|op| delta(flavour, op, who))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let bystander_runs: u64 = OPS
        .iter()
        .filter_map(|op| k.stat(cg, op, "bystander"))
        .map(|s| s.runs)
        .sum();
    let ran = if bystander_runs == 0 {
        "so no faultd program ran for the bystander. What is left of its difference to no \
         agent is not faultd code: while an `lsm_cgroup` program is attached to a hook \
         anywhere, every task's call of that hook goes through a BPF trampoline into the \
         kernel's shim (kernel/bpf/cgroup.c, `__cgroup_bpf_run_lsm_current`), which finds \
         the caller's cgroup has no program; bpf_stats does not count the shim. (The agent \
         process also exists only in the agent states; this run cannot split the two.)"
    } else {
        "so faultd's programs did run for the bystander, which `lsm_cgroup` should prevent: \
         see the problems below."
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "- **Bystander, `lsm_cgroup`.** bpf_stats counted these runs of `faultd_c_open` / \
         `faultd_c_rw`: {}, {ran} Difference to no agent: {}.",
        runs(cg, "bystander"),
        each(cg, "bystander"),
    );
    let _ = writeln!(
        out,
        "- **Bystander, node-wide.** bpf_stats counted these runs of `faultd_open` / \
         `faultd_rw`: {}, at {} ns per run: the program runs for every caller on the node to \
         find that its cgroup has no fault. Difference to no agent: {}.",
        runs(node, "bystander"),
        ns_per_run(node, "bystander"),
        each(node, "bystander"),
    );
    let _ = writeln!(
        out,
        "- **Bystander, `lsm_cgroup` minus node-wide** (same round): {}.",
        versus("bystander"),
    );
    let _ = writeln!(
        out,
        "- **Target whose fault never matches.** Both flavours run the program on every call \
         and walk the path: `lsm_cgroup` {} ns per run, node-wide {} ns per run. Difference to \
         no agent with `lsm_cgroup`: {}; node-wide: {}. `lsm_cgroup` minus node-wide: {}.",
        ns_per_run(cg, "target"),
        ns_per_run(node, "target"),
        each(cg, "target"),
        each(node, "target"),
        versus("target"),
    );
    out
}

fn label(c: &Config) -> String {
    let flavour = FLAVOURS
        .iter()
        .find(|(s, _)| *s == c.state)
        .map_or(c.state.as_str(), |(_, name)| name);
    match (c.state.as_str(), c.who.as_str()) {
        (OFF, _) => "no agent (baseline)".to_owned(),
        (_, "bystander") => format!("{flavour}; bystander: faults on other cgroups"),
        _ => format!("{flavour}; target: faults whose path prefix never matches"),
    }
}

fn kernel_section(k: &Kernel) -> String {
    let g = &k.guest;
    let mut out = format!(
        "\n## {} (`{}`)\n\n\
         - package: `{}`; accel: **{}**; guest CPU: {} × {}; `bpf_jit_enable` = {}\n\
         - active LSMs: `{}`\n",
        k.run.kernel,
        k.run.release,
        k.run.package,
        k.run.accel,
        g.guest.cpus,
        g.guest.cpu,
        g.guest.bpf_jit_enable,
        g.guest.lsm,
    );
    for (flavour, name) in FLAVOURS {
        let toml = g
            .agent_configs
            .iter()
            .find(|a| a.flavour == flavour)
            .map_or("–".to_owned(), |a| a.config_toml.replace('\n', " "));
        let features = g
            .features
            .iter()
            .filter(|f| f.flavour == flavour)
            .map(|f| {
                format!(
                    "`{}` {} ({})",
                    f.name,
                    if f.available { "available" } else { "off" },
                    f.detail
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(
            out,
            "- {name}: agent config `{}`; capabilities: {features}; `Fault.backend` of each \
             fault: {}",
            toml.trim(),
            k.backends(flavour),
        );
    }
    let _ = write!(
        out,
        "- options: `{}`; benchmark runtime in the guest {:.0} s, whole VM {:.0} s\n\
         - console log: `target/vm-logs/{}`\n\n",
        g.options,
        g.runtime_s,
        k.run.elapsed_secs,
        k.run.log.file_name().unwrap_or_default().to_string_lossy(),
    );
    out.push_str(
        "Every configuration, wall and CPU time:\n\n\
         | | call | configuration | wall ns/call | Δ wall vs baseline (per round) | ratio to baseline | CPU ns/call | Δ CPU vs baseline |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for c in &g.configs {
        let (dw, r, dc) = if c.state == OFF {
            ("–".to_owned(), "–".to_owned(), "–".to_owned())
        } else {
            (
                signed_cell(&k.diffs(c, wall)),
                ratio_cell(&k.ratios(c)),
                signed_cell(&k.diffs(c, cpu)),
            )
        };
        let _ = writeln!(
            out,
            "| {} | `{}()` | {} | {} | {dw} | {r} | {} | {dc} |",
            c.key,
            c.op,
            label(c),
            spread_cell(&Kernel::per_round(c, wall), 0),
            spread_cell(&Kernel::per_round(c, cpu), 0),
        );
    }
    out.push_str(
        "\nThe programs' own run time (bpf_stats, one extra run per row with the agent of \
         that flavour in place):\n\n\
         | LSM programs | program | call | caller | calls made | runs counted | ns per run |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for s in &g.bpf_stats {
        let name = FLAVOURS
            .iter()
            .find(|(f, _)| *f == s.flavour)
            .map_or(s.flavour.as_str(), |(_, n)| n);
        let ns = if s.runs == 0 {
            "–".to_owned()
        } else {
            format!("{:.0}", s.ns_per_run)
        };
        let _ = writeln!(
            out,
            "| {name} | `{}` | `{}()` | {} | {} | {} | {ns} |",
            s.program, s.op, s.who, s.calls, s.runs
        );
    }
    out.push_str("\nChecks:\n\n");
    out.push_str(&checks_and_problems(&g.checks, &g.problems));
    out
}

fn markdown(host: &VmHost, kernels: &[Kernel]) -> String {
    let accels: Vec<&str> = kernels.iter().map(|k| k.run.accel).collect();
    let tcg = accels.contains(&"tcg");
    let mut out = host.markdown_head("Syscall fault benchmark in the VM: open(), read(), write()");
    out.push_str(
        "Generated by `xtask/src/bench/syscall_vm.rs` from what \
         `tests/src/bin/faultd-vmbench/syscall.rs` measured inside each VM; every sample is \
         in `syscall-vm.json`. The host kernel has no BPF LSM, so these operations are \
         measured on the VM tier's Debian kernels (booted with `lsm=...,bpf`, as for the \
         tests); `connect()` and `socket()` are in [syscall.md](syscall.md). Both ways the \
         agent can attach its LSM programs are measured in the same VM, in alternating \
         rounds: `lsm_cgroup` (BPF_LSM_CGROUP, the default `syscall.lsm_attach = \"auto\"` \
         on 6.0+: programs attached at the targeted cgroups) and node-wide (`lsm_attach = \
         \"node\"`: one program per hook for the whole node, filtering by cgroup).\n\n",
    );
    if tcg {
        out.push_str(
            "**Emulation.** The VMs ran under TCG (qemu's software CPU emulation: this \
             machine's /dev/kvm cannot boot stock kernels). Every instruction is translated, \
             so absolute times are many times the native ones and are not comparable with \
             [syscall.md](syscall.md). What carries over is the comparison within one VM, \
             measured in alternating rounds against the same baseline: the ratio to the \
             baseline and, less so, the difference in ns (the emulation slows the BPF \
             program and the syscall path alike only roughly). The run counts are exact \
             whatever the emulation. Read the ratio columns and the counts; treat ns as \
             emulated ns.\n\n",
        );
    }
    out.push_str("## Summary\n");
    for k in kernels {
        let _ = write!(
            out,
            "\n### {} (`{}`)\n\n{}",
            k.run.kernel,
            k.run.release,
            summary(k)
        );
    }
    out.push_str(
        "\nCells are the median over rounds [min – max]; Δ and ratio are per-round, paired \
         with the same round's no-agent baseline of the same call. The sign test counts the \
         rounds in which the configuration was slower than that round's baseline. \"program \
         ns/run\" and \"runs / calls\" are the kernel's bpf_stats for `faultd_c_open` / \
         `faultd_c_rw` (`lsm_cgroup`) or `faultd_open` / `faultd_rw` (node-wide) during one \
         extra run of that caller; \"– (no runs)\" means the program never ran.\n\n\
         ## What the numbers show\n",
    );
    for k in kernels {
        let _ = write!(out, "\n{}:\n\n{}", k.run.kernel, interpretation(k));
    }
    out.push_str(
        "\n## Method\n\n\
         - Calls: `faultd-traffic file-ops --op open|read|write` in the measured cgroup, on \
         a 4 KiB file on tmpfs (`/tmp`): `open()` + `close()` per call; for read and write \
         the file is opened once and each call is a 1-byte `pread()` / `pwrite()` at \
         offset 0. Wall ns/call is the helper's loop time per call; CPU ns/call is the \
         helper process's user + system time per call, its start-up included.\n\
         - Configurations, per call: **a** no agent; then for each flavour (`lsm_cgroup`, \
         node-wide): **b** the agent runs with an open fault (EIO, 100%) on one other \
         cgroup and read and write faults (EIO, 100%) on another, and the caller is a \
         bystander; **c** the caller's own cgroup has open, read and write faults (EIO, \
         100%) whose `path_prefix` is a directory on another tmpfs (`/run`): the program \
         finds the rule, walks the file's dentries to the root of its file system without \
         a match and lets the call through. The API rejects probability 0 \
         (`probability_ppm` must be in 1..=1000000), so a path prefix that never matches is \
         how a targeted fault is made to pass every call.\n\
         - The agent (release build) is started with `[syscall] lsm_attach = \"auto\"` for \
         `lsm_cgroup` and `lsm_attach = \"node\"` for node-wide, and restarted whenever the \
         state changes (the setting is read at start). Every fault's `Fault.backend` must \
         be `lsm_cgroup` or `bpf_lsm` respectively, or the run stops.\n\
         - Noise control as in `bench syscall` (the same round loop, `Schedule::run` in \
         `tests/src/measure.rs`): rounds visit the states in alternating order (off, \
         `lsm_cgroup`, node-wide | node-wide, `lsm_cgroup`, off), configurations of a state \
         are rotated per round, each runs `reps` times per round and the round's value is \
         their median. The helper is pinned to the guest's last vCPU.\n\
         - bpf_stats: `kernel.bpf_stats_enabled=1` only around one extra run per row, run \
         counts and run time read with `bpftool -j prog show id N` (ids from \
         GetCapabilities). The count includes every run of the program in that window by \
         any task, e.g. the helper's own report written to a pipe, so a count of 0 means \
         nothing on the guest ran it.\n",
    );
    for k in kernels {
        out.push_str(&kernel_section(k));
    }
    out
}

fn to_json(host: &VmHost, kernels: &[Kernel]) -> Value {
    host.json(
        kernels
            .iter()
            .map(|k| {
                let mut fields = run_json(&k.run);
                let summary = k.guest.configs.iter().map(|c| {
                    let on = c.state != OFF;
                    json!({
                        "key": c.key,
                        "op": c.op,
                        "state": c.state,
                        "who": c.who,
                        "per_round_median_wall_ns": Kernel::per_round(c, wall),
                        "per_round_median_cpu_ns": Kernel::per_round(c, cpu),
                        "per_round_delta_wall_ns": if on { k.diffs(c, wall) } else { Vec::new() },
                        "per_round_ratio_wall": if on { k.ratios(c) } else { Vec::new() },
                    })
                });
                let versus = OPS.iter().flat_map(|op| {
                    WHO.map(|who| json!({"op": op, "who": who, "values": k.flavour_diffs(op, who)}))
                });
                fields.insert("summary".into(), summary.collect());
                fields.insert(
                    "lsm_cgroup_minus_node_per_round_wall_ns".into(),
                    versus.collect(),
                );
                Value::Object(fields)
            })
            .collect(),
    )
}
