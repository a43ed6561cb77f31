//! `cargo xtask`: the project's tasks. Each does its own set-up first, so a
//! fresh machine needs nothing but this repository and rustup.

mod bench;
mod bench_latency;
mod bench_syscall;
mod bench_syscall_vm;
mod demo;
mod plot;
mod setup;
mod test;
mod util;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install Debian packages and build bpf-linker against rustc's LLVM
    /// (idempotent, cached under ~/.cache/faultd).
    Setup,
    /// Set up, then build every binary.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up, build, start faultd with its default config and show a loss
    /// fault working on a scratch cgroup.
    Run {
        /// Keep the agent running (until Ctrl-C) instead of the demo.
        #[arg(long)]
        no_demo: bool,
    },
    /// Set up, build release and measure what a loss fault costs here
    /// (root; writes docs/benchmarks/loss.md and loss.json). `bench syscall`
    /// measures syscall faults instead (docs/benchmarks/syscall.md), `bench
    /// syscall --vm` the BPF LSM ones in the VM tier (syscall-vm.md).
    Bench {
        #[command(flatten)]
        opts: bench::Options,
        #[command(subcommand)]
        what: Option<BenchWhat>,
    },
    /// Set up, build and run every test tier.
    Test {
        /// Skip the root-only integration tests (host and VM).
        #[arg(long)]
        unit_only: bool,
        /// Run the VM tier: the integration tests on pinned Debian kernels
        /// in qemu (the default).
        #[arg(long, overrides_with = "no_vm")]
        vm: bool,
        /// Skip the VM tier.
        #[arg(long, overrides_with = "vm")]
        no_vm: bool,
        /// Run only the VM tier (for working on it).
        #[arg(long, conflicts_with_all = ["no_vm", "unit_only"])]
        vm_only: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchWhat {
    /// What a syscall fault costs connect() and socket() calls it lets
    /// through (root; writes docs/benchmarks/syscall.md and syscall.json).
    /// With --vm: open(), read() and write() in the VM tier's kernels
    /// (docs/benchmarks/syscall-vm.md and syscall-vm.json).
    Syscall(bench_syscall::Options),
    /// faultd's EDT latency against tc netem on the VM tier's kernels:
    /// added-delay error at p50/p99/p99.9 for 1 ms to 1 s and with jitter,
    /// the bystander's throughput and CPU per packet (writes
    /// docs/benchmarks/latency.md, latency.json and latency.png).
    Latency(bench_latency::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::setup(),
        Task::Build { release } => {
            setup::setup()?;
            build(if release { "release" } else { "dev" })
        }
        Task::Run { no_demo } => {
            setup::setup()?;
            build("release")?;
            demo::run(no_demo)
        }
        Task::Bench { opts, what } => {
            setup::setup()?;
            build("release")?;
            match what {
                None => bench::run(&opts),
                Some(BenchWhat::Syscall(o)) if o.vm => bench_syscall_vm::run(&o),
                Some(BenchWhat::Syscall(o)) => bench_syscall::run(&o),
                Some(BenchWhat::Latency(o)) => bench_latency::run(&o),
            }
        }
        Task::Test {
            unit_only,
            vm: _,
            no_vm,
            vm_only,
        } => {
            setup::setup()?;
            let tiers = match (unit_only, no_vm, vm_only) {
                (true, _, _) => test::Tiers::UnitOnly,
                (_, _, true) => test::Tiers::VmOnly,
                (_, true, _) => test::Tiers::NoVm,
                _ => test::Tiers::All,
            };
            test::run(tiers)
        }
    }
}

/// Builds every binary the tasks start: the agent, faultctl and the test
/// traffic generator.
pub fn build(profile: &str) -> anyhow::Result<()> {
    let mut args = vec!["build", "--workspace", "--bins"];
    if profile == "release" {
        args.push("--release");
    }
    util::run(util::cargo(&args))
}
