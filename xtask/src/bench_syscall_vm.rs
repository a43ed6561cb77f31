//! `cargo xtask bench syscall --vm`: what a file fault costs the open(),
//! read() and write() calls it lets through, measured inside the VM tier's
//! Debian kernels (the host has no BPF LSM), written to
//! `docs/benchmarks/syscall-vm.md` and `syscall-vm.json`.
//!
//! The measuring happens in the guest (`tests/src/bin/faultd-vmbench/
//! syscall.rs`, which says what each configuration is); this module runs it
//! through [`crate::vm::bench::run`] and does the statistics: per-round
//! medians, differences and ratios to the same round's no-agent baseline
//! (paired), a sign test, and the programs' own run time from bpf_stats.

use std::{fmt::Write as _, fs};

use anyhow::{Context as _, ensure};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    bench::{
        Environment, loadavg, median, paired, per_round_medians, ratio_cell, signed_cell,
        spread_cell, verdict,
    },
    bench_syscall::Options,
    util::workspace_root,
    vm::bench::{BenchRun, run as run_in_vms},
};

/// The guest's result, as far as the report reads it.
#[derive(Debug, Deserialize)]
struct Guest {
    guest: GuestEnv,
    options: Value,
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
struct Backend {
    fault: String,
    backend: String,
}

#[derive(Debug, Deserialize)]
struct Config {
    key: String,
    op: String,
    agent: bool,
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

/// One kernel's run, parsed.
#[derive(Debug)]
struct Kernel {
    run: BenchRun,
    guest: Guest,
}

impl Kernel {
    fn per_round(c: &Config, metric: fn(&Run) -> f64) -> Vec<f64> {
        per_round_medians(&c.runs, |r| r.round, metric)
    }

    fn baseline(&self, op: &str) -> Option<&Config> {
        self.guest.configs.iter().find(|c| c.op == op && !c.agent)
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

    fn config(&self, op: &str, agent: bool, who: &str) -> Option<&Config> {
        self.guest
            .configs
            .iter()
            .find(|c| c.op == op && c.agent == agent && c.who == who)
    }

    fn stat(&self, op: &str, who: &str) -> Option<&ProgStat> {
        self.guest
            .bpf_stats
            .iter()
            .find(|s| s.op == op && s.who == who)
    }

    /// `backend (fault, fault, ..)` per backend the agent chose.
    fn backends(&self) -> String {
        let mut by: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for b in &self.guest.backends {
            by.entry(&b.backend).or_default().push(&b.fault);
        }
        by.iter()
            .map(|(backend, faults)| format!("`{backend}` ({})", faults.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

const OPS: [&str; 3] = ["open", "read", "write"];

pub fn run(opts: &Options) -> anyhow::Result<()> {
    ensure!(
        opts.schedule.rounds >= 1 && opts.schedule.reps >= 1,
        "--rounds and --reps >= 1"
    );
    let env = Environment::collect()?;
    let args: Vec<String> = [
        ("--rounds", opts.schedule.rounds as u64),
        ("--reps", opts.schedule.reps as u64),
        ("--opens", opts.opens),
        ("--reads", opts.reads),
        ("--writes", opts.writes),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={v}"))
    .collect();
    let runs = run_in_vms("syscall", &args)?;
    let kernels: Vec<Kernel> = runs
        .into_iter()
        .map(|run| {
            let guest: Guest = serde_json::from_value(run.result.clone())
                .with_context(|| format!("{}: unexpected result JSON", run.kernel))?;
            Ok(Kernel { run, guest })
        })
        .collect::<anyhow::Result<_>>()?;
    let qemu = crate::vm::qemu_version();

    let dir = workspace_root().join("docs/benchmarks");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("syscall-vm.md"), markdown(&env, &qemu, &kernels))
        .context("writing syscall-vm.md")?;
    let mut text = serde_json::to_string_pretty(&to_json(&env, &qemu, &kernels))?;
    text.push('\n');
    fs::write(dir.join("syscall-vm.json"), text).context("writing syscall-vm.json")?;
    println!("\n{}", summary(&kernels));
    for k in &kernels {
        for p in &k.guest.problems {
            println!("problem: {}: {p}", k.run.kernel);
        }
    }
    eprintln!("bench: wrote docs/benchmarks/syscall-vm.md and syscall-vm.json");
    Ok(())
}

/// One row per (kernel, call): the robust numbers.
fn summary(kernels: &[Kernel]) -> String {
    let mut out = String::from(
        "| kernel | call | no agent, ns/call | bystander Δ ns/call | bystander ratio | target (no match) Δ ns/call | target ratio | program ns/run, bystander / target |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for k in kernels {
        for op in OPS {
            let cell = |who: &str| -> (String, String) {
                k.config(op, true, who).map_or_else(
                    || ("–".to_owned(), "–".to_owned()),
                    |c| (signed_cell(&k.diffs(c, wall)), ratio_cell(&k.ratios(c))),
                )
            };
            let (bd, br) = cell("bystander");
            let (td, tr) = cell("target");
            let base = k.baseline(op).map_or_else(
                || "–".to_owned(),
                |b| spread_cell(&Kernel::per_round(b, wall), 0),
            );
            let prog = |who: &str| {
                k.stat(op, who)
                    .map_or("–".to_owned(), |s| format!("{:.0}", s.ns_per_run))
            };
            let _ = writeln!(
                out,
                "| {} | `{op}()` | {base} | {bd} | {br} | {td} | {tr} | {} / {} |",
                k.run.kernel,
                prog("bystander"),
                prog("target"),
            );
        }
    }
    out
}

fn label(c: &Config) -> &'static str {
    match (c.agent, c.who.as_str()) {
        (false, _) => "no agent (baseline)",
        (true, "bystander") => "bystander: open, read and write faults on other cgroups",
        _ => "target: open, read and write faults whose path prefix never matches",
    }
}

fn kernel_section(k: &Kernel) -> String {
    let g = &k.guest;
    let mut out = format!(
        "\n## {} (`{}`)\n\n\
         - package: `{}`; accel: **{}**; guest CPU: {} × {}; `bpf_jit_enable` = {}\n\
         - active LSMs: `{}`\n\
         - backend the agent reported (`Fault.backend` of each fault): {}\n\
         - options: `{}`; benchmark runtime in the guest {:.0} s, whole VM {:.0} s\n\
         - console log: `target/vm-logs/{}`\n\n",
        k.run.kernel,
        k.run.release,
        k.run.package,
        k.run.accel,
        g.guest.cpus,
        g.guest.cpu,
        g.guest.bpf_jit_enable,
        g.guest.lsm,
        k.backends(),
        g.options,
        g.runtime_s,
        k.run.elapsed_secs,
        k.run.log.file_name().unwrap_or_default().to_string_lossy(),
    );
    out.push_str(
        "| | call | configuration | wall ns/call | Δ wall vs baseline (per round) | ratio to baseline | CPU ns/call | Δ CPU vs baseline |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for c in &g.configs {
        let (dw, r, dc) = if c.agent {
            (
                signed_cell(&k.diffs(c, wall)),
                ratio_cell(&k.ratios(c)),
                signed_cell(&k.diffs(c, cpu)),
            )
        } else {
            ("–".to_owned(), "–".to_owned(), "–".to_owned())
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
    out.push('\n');
    for c in g.configs.iter().filter(|c| c.agent) {
        let d = k.diffs(c, wall);
        let _ = writeln!(
            out,
            "- **{}**: {:+.0} ns/call ({:.3}× the baseline); {}.",
            c.key,
            median(&d),
            median(&k.ratios(c)),
            verdict(&d)
        );
    }
    out.push_str(
        "\nThe programs' own run time (bpf_stats, one extra run per row with the agent in \
         place):\n\n| program | call | caller | calls made | runs counted | ns per run |\n|---|---|---|---|---|---|\n",
    );
    for s in &g.bpf_stats {
        let _ = writeln!(
            out,
            "| `{}` | `{}()` | {} | {} | {} | {:.0} |",
            s.program, s.op, s.who, s.calls, s.runs, s.ns_per_run
        );
    }
    out.push_str("\nChecks:\n\n");
    for c in &g.checks {
        let _ = writeln!(out, "- {c}");
    }
    if g.problems.is_empty() {
        out.push_str(
            "\nNo problems: every check passed and the agents logged no warning or error.\n",
        );
    } else {
        out.push_str("\nProblems:\n\n");
        for p in &g.problems {
            let _ = writeln!(out, "- {p}");
        }
    }
    out
}

fn markdown(env: &Environment, qemu: &str, kernels: &[Kernel]) -> String {
    let accels: Vec<&str> = kernels.iter().map(|k| k.run.accel).collect();
    let tcg = accels.contains(&"tcg");
    let mut out = format!(
        "# Syscall fault benchmark in the VM: open(), read(), write()\n\n```\n{}\n```\n\n\
         - date: {}\n- commit: `{}`\n- host: kernel `{}`, {} × {}; {qemu}\n\
         - host load average (1, 5, 15 min) at the start: {}; at the end: {}\n\n\
         Generated by `xtask/src/bench_syscall_vm.rs` from what \
         `tests/src/bin/faultd-vmbench/syscall.rs` measured inside each VM; every sample is \
         in `syscall-vm.json`. The host kernel has no BPF LSM, so these operations are \
         measured on the VM tier's Debian kernels (booted with `lsm=...,bpf`, as for the \
         tests); `connect()` and `socket()` are in [syscall.md](syscall.md).\n\n",
        env.command,
        env.date,
        env.commit,
        env.kernel,
        env.cpus,
        env.cpu,
        env.load_start,
        loadavg(),
    );
    if tcg {
        out.push_str(
            "**Emulation.** The VMs ran under TCG (qemu's software CPU emulation: this \
             machine's /dev/kvm cannot boot stock kernels). Every instruction is translated, \
             so absolute times are many times the native ones and are not comparable with \
             [syscall.md](syscall.md). What carries over is the comparison within one VM, \
             measured in alternating rounds against the same baseline: the ratio to the \
             baseline and, less so, the difference in ns (the emulation slows the BPF \
             program and the syscall path alike only roughly). Read the ratio columns; treat \
             ns as emulated ns.\n\n",
        );
    }
    out.push_str("## Summary\n\n");
    out.push_str(&summary(kernels));
    out.push_str(
        "\nCells are the median over rounds [min – max]; Δ and ratio are per-round, paired \
         with the same round's no-agent baseline of the same call. \"program ns/run\" is \
         the kernel's bpf_stats for `faultd_open` (open) or `faultd_rw` (read, write) from \
         that caller.\n\n## Method\n\n\
         - Calls: `faultd-traffic file-ops --op open|read|write` in the measured cgroup, on \
         a 4 KiB file on tmpfs (`/tmp`): `open()` + `close()` per call; for read and write \
         the file is opened once and each call is a 1-byte `pread()` / `pwrite()` at \
         offset 0. Wall ns/call is the helper's loop time per call; CPU ns/call is the \
         helper process's user + system time per call, its start-up included.\n\
         - Configurations, per call: **a** no agent; **b** the agent runs with an open \
         fault (EIO, 100%) on one other cgroup and read and write faults (EIO, 100%) on \
         another, and the caller is a bystander: BPF LSM programs are global, so they run \
         for it and return after the cgroup lookup; **c** the caller's own cgroup has \
         open, read and write faults (EIO, 100%) whose `path_prefix` is a directory on \
         another tmpfs (`/run`): the program finds the rule, walks the file's dentries to \
         the root of its file system without a match and lets the call through. The API \
         rejects probability 0 (`probability_ppm` must be in 1..=1000000), so a path \
         prefix that never matches is how a targeted fault is made to pass every call.\n\
         - Noise control as in `bench syscall`: rounds visit the agent states in \
         alternating order (off, on | on, off), configurations of a state are rotated per \
         round, each runs `reps` times per round and the round's value is their median. \
         The helper is pinned to the guest's last vCPU. The agent (release build) is \
         restarted for every \"on\" block.\n\
         - bpf_stats: `kernel.bpf_stats_enabled=1` only around one extra run per row, run \
         counts and run time read with `bpftool -j prog show id N` (ids from \
         GetCapabilities). The count includes every run in that window, e.g. the helper's \
         own report written to a pipe.\n",
    );
    for k in kernels {
        out.push_str(&kernel_section(k));
    }
    out
}

fn to_json(env: &Environment, qemu: &str, kernels: &[Kernel]) -> Value {
    json!({
        "command": env.command,
        "date": env.date,
        "commit": env.commit,
        "host": {
            "kernel": env.kernel,
            "cpu": env.cpu,
            "cpus": env.cpus,
            "qemu": qemu,
            "loadavg_start": env.load_start,
            "loadavg_end": loadavg(),
        },
        "kernels": kernels.iter().map(|k| json!({
            "kernel": k.run.kernel,
            "package": k.run.package,
            "release": k.run.release,
            "accel": k.run.accel,
            "vm_elapsed_s": k.run.elapsed_secs,
            "summary": k.guest.configs.iter().map(|c| json!({
                "key": c.key,
                "op": c.op,
                "agent": c.agent,
                "who": c.who,
                "per_round_median_wall_ns": Kernel::per_round(c, wall),
                "per_round_median_cpu_ns": Kernel::per_round(c, cpu),
                "per_round_delta_wall_ns": if c.agent { k.diffs(c, wall) } else { Vec::new() },
                "per_round_ratio_wall": if c.agent { k.ratios(c) } else { Vec::new() },
            })).collect::<Vec<_>>(),
            "result": k.run.result,
        })).collect::<Vec<_>>(),
    })
}
