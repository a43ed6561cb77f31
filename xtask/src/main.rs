//! `cargo xtask`: the project's tasks. Each does its own set-up first, so a
//! fresh machine needs nothing but this repository and rustup.

mod demo;
mod setup;
mod test;
mod util;

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
    /// Set up, build and run every test tier.
    Test {
        /// Skip the root-only integration tests.
        #[arg(long)]
        unit_only: bool,
    },
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
        Task::Test { unit_only } => {
            setup::setup()?;
            test::run(unit_only)
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
