//! `cargo xtask`: the project's tasks. Each does its own set-up first, so a
//! fresh machine needs nothing but this repository and rustup.

mod bench;
mod certs;
mod demo;
mod fuzz;
mod image;
mod install;
#[cfg(test)]
mod layers;
mod plot;
mod pyclient;
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
    /// Install Debian packages, build bpf-linker against rustc's LLVM and
    /// fetch the VM tier's kernels (idempotent, cached under ~/.cache/faultd).
    Setup,
    /// Write a development CA and certificates for a coordinator, agents
    /// and operators (mutual TLS), and the config lines that use them.
    Certs(certs::Options),
    /// Regenerate the Python client's stubs (clients/python) from proto/.
    PythonClient,
    /// Build the container image of both daemons with buildah, from this
    /// machine's build (no registry needed).
    Image(image::Options),
    /// Runs every fuzz target (fuzz/) for a bounded time.
    Fuzz(fuzz::Options),
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
        opts: bench::loss::Options,
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
    Syscall(bench::syscall::Options),
    /// faultd's EDT latency against tc netem on the VM tier's kernels:
    /// added-delay error at p50/p99/p99.9 for 1 ms to 1 s and with jitter,
    /// the bystander's throughput and CPU per packet (writes
    /// docs/benchmarks/latency.md, latency.json and latency.png).
    Latency(bench::latency::Options),
    /// Time from CreateExperiment to every fault active in every agent's
    /// kernel, for 1 and 10 real agents and 100 simulated ones (writes
    /// docs/benchmarks/coordinator.md and coordinator.json).
    Coordinator(bench::coordinator::Options),
    /// The agent's RSS and CPU at rest: a window with no fault, one with
    /// 1,000 faults live (writes docs/benchmarks/idle.md and idle.json).
    Idle(bench::idle::Options),
    /// Minutes of apply/revert churn with traffic, then the leak checks and
    /// RSS drift (writes docs/benchmarks/soak.md, soak.json and soak.png).
    Soak(bench::soak::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Certs(o) => certs::run(&o),
        Task::PythonClient => pyclient::run(),
        Task::Image(o) => image::run_image(&o),
        Task::Fuzz(o) => {
            setup::setup(setup::Scope::Build)?;
            fuzz::run_fuzz(&o)
        }
        Task::Setup => setup::setup(setup::Scope::Vm),
        Task::Build { release } => {
            setup::setup(setup::Scope::Build)?;
            util::build(if release { "release" } else { "dev" })
        }
        Task::Run { no_demo } => {
            setup::setup(setup::Scope::Build)?;
            util::build("release")?;
            demo::run(no_demo)
        }
        Task::Bench { opts, what } => {
            setup::setup(setup::Scope::Build)?;
            util::build("release")?;
            match what {
                None => bench::loss::run(&opts),
                Some(BenchWhat::Syscall(o)) if o.vm => bench::syscall_vm::run(&o),
                Some(BenchWhat::Syscall(o)) => bench::syscall::run(&o),
                Some(BenchWhat::Idle(o)) => bench::idle::run(&o),
                Some(BenchWhat::Soak(o)) => bench::soak::run(&o),
                Some(BenchWhat::Latency(o)) => bench::latency::run(&o),
                Some(BenchWhat::Coordinator(o)) => bench::coordinator::run(&o),
            }
        }
        Task::Test {
            unit_only,
            vm: _,
            no_vm,
            vm_only,
        } => {
            let tiers = match (unit_only, no_vm, vm_only) {
                (true, _, _) => test::Tiers::UnitOnly,
                (_, _, true) => test::Tiers::VmOnly,
                (_, true, _) => test::Tiers::NoVm,
                _ => test::Tiers::All,
            };
            setup::setup(match tiers {
                test::Tiers::UnitOnly | test::Tiers::NoVm => setup::Scope::Build,
                test::Tiers::All | test::Tiers::VmOnly => setup::Scope::Vm,
            })?;
            test::run(tiers)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use clap::Parser as _;

    use super::{BenchWhat, Cli, Task};

    /// The benchmark options parse into the fields the benchmarks read,
    /// including those shared with the VM benchmarks through the kit.
    #[test]
    fn bench_options_parse() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(["xtask", "bench"].iter().chain(args))
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let Task::Bench { what, .. } = cli.task else {
                panic!("{args:?} is not a bench task");
            };
            what
        };
        let Some(BenchWhat::Syscall(o)) = parse(&[
            "syscall", "--vm", "--rounds", "2", "--opens", "5", "--writes", "6",
        ]) else {
            panic!("not bench syscall");
        };
        assert!(o.vm);
        assert_eq!((o.schedule.rounds, o.schedule.reps), (2, 3));
        assert_eq!((o.file.opens, o.file.reads, o.file.writes), (5, 50_000, 6));
        let Some(BenchWhat::Latency(o)) = parse(&["latency", "--interval-us", "500"]) else {
            panic!("not bench latency");
        };
        assert_eq!((o.probes, o.interval_us), (2_000, 500));
        assert!(parse(&["--rounds", "4"]).is_none());
    }

    /// `cargo xtask` is how a fresh machine gets set up, so building it must
    /// need nothing that set-up provides: no crate that builds the eBPF
    /// programs (bpf-linker, rust-src) may be among its dependencies.
    #[test]
    fn xtask_builds_before_setup() {
        let out = Command::new(env!("CARGO"))
            .args(["tree", "--locked", "-p", "xtask", "-e", "normal,build"])
            .args(["--prefix", "none", "--format", "{p}"])
            .current_dir(crate::util::workspace_root())
            .output()
            .expect("running cargo tree");
        assert!(
            out.status.success(),
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tree = String::from_utf8_lossy(&out.stdout);
        let needs_setup: Vec<&str> = tree
            .lines()
            .filter(|l| {
                ["faultd-agent ", "faultd-ebpf ", "aya-build "]
                    .iter()
                    .any(|c| l.starts_with(c))
            })
            .collect();
        assert!(
            needs_setup.is_empty(),
            "xtask depends on crates that need `cargo xtask setup` first: {needs_setup:?}"
        );
        assert!(
            tree.lines().any(|l| l.starts_with("faultd-tests ")),
            "{tree}"
        );
    }
}
