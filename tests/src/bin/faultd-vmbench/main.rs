//! `faultd-vmbench`: benchmarks that need a kernel feature the host may not
//! have (BPF LSM, fq, netem), run inside the VM tier.
//!
//! `cargo xtask bench <name> --vm` puts this binary into the initramfs and
//! boots each kernel of the matrix with `faultd.bench=<name>`; init runs
//! `faultd-vmbench --out FILE <name> <args>` and prints FILE on the serial
//! console between `FAULTD-VM: result-begin` / `result-end` markers, where
//! xtask picks it up and writes the report (statistics and prose are the
//! host's job: this side only measures and records every sample).
//!
//! A benchmark is a subcommand returning a JSON object; this file adds what
//! every benchmark reports about the guest. Progress goes to stderr, which
//! the console shows live.

mod latency;
mod syscall;

use std::{fs, path::PathBuf, time::Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(name = "faultd-vmbench")]
struct Cli {
    /// Where to write the JSON result.
    #[arg(long)]
    out: PathBuf,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Per-call cost of open(), read() and write() that a file fault lets
    /// through, and the LSM programs' run time.
    Syscall(syscall::Options),
    /// Added delay of faultd's EDT latency vs tc netem on the same kernel,
    /// the bystander's throughput and the CPU cost per packet.
    Latency(latency::Options),
}

impl Bench {
    fn name(&self) -> &'static str {
        match self {
            Self::Syscall(_) => "syscall",
            Self::Latency(_) => "latency",
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "the benchmarks start the agent: run as root"
    );
    let started = Instant::now();
    let progress = Progress { started };
    let mut result = match &cli.bench {
        Bench::Syscall(opts) => syscall::run(opts, &progress)?,
        Bench::Latency(opts) => latency::run(opts, &progress)?,
    };
    let obj = result
        .as_object_mut()
        .context("a benchmark returns a JSON object")?;
    obj.insert("bench".into(), json!(cli.bench.name()));
    obj.insert("guest".into(), guest());
    obj.insert("runtime_s".into(), json!(started.elapsed().as_secs_f64()));
    let mut text = serde_json::to_string_pretty(&result)?;
    text.push('\n');
    fs::write(&cli.out, text).with_context(|| format!("writing {}", cli.out.display()))?;
    progress.say(&format!("wrote {}", cli.out.display()));
    Ok(())
}

/// Time-stamped progress lines on stderr.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    started: Instant,
}

impl Progress {
    pub fn say(&self, what: &str) {
        eprintln!(
            "vmbench [{:>6.1}s] {what}",
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// What the numbers depend on inside the VM: the kernel, the (emulated)
/// CPU, whether the BPF JIT is on, the active LSMs.
fn guest() -> Value {
    let read = |p: &str| {
        fs::read_to_string(p).map_or_else(|e| format!("unreadable: {e}"), |s| s.trim().to_owned())
    };
    let (cpu, cpus) = faultd_tests::measure::cpu_model();
    json!({
        "kernel": read("/proc/sys/kernel/osrelease"),
        "cpu": cpu,
        "cpus": cpus,
        "bpf_jit_enable": read("/proc/sys/net/core/bpf_jit_enable"),
        "lsm": read("/sys/kernel/security/lsm"),
    })
}
