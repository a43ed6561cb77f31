//! The command line (clap derive) and its mapping onto requests: the agent
//! commands on this node's Unix socket, and the coordinator's experiment
//! commands over mutual TLS.
//!
//! Lives in the library rather than `main.rs` so the flag -> request mapping
//! is unit-tested with `Cli::try_parse_from`, without an agent.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

pub mod experiment;
pub mod fault;
pub mod file;
pub mod ops;
pub mod target;

pub use experiment::ExperimentCommand;
pub use fault::{
    AgentFault, BandwidthArgs, FaultKindArgs, KindCommand, LatencyArgs, LossArgs, SyscallArgs,
    parse_correlation, parse_rate,
};
pub use target::TargetArgs;

/// Where the agent listens unless `--socket` or `FAULTD_SOCKET` say otherwise.
pub const DEFAULT_SOCKET: &str = "/run/faultd/faultd.sock";

/// Inject and revert faults through the faultd agent on this node, or run
/// experiments across nodes through the faultd coordinator.
#[derive(Debug, Parser)]
#[command(name = "faultctl", version, propagate_version = true)]
pub struct Cli {
    /// The agent's Unix control socket.
    #[arg(
        long,
        global = true,
        env = "FAULTD_SOCKET",
        value_name = "PATH",
        default_value = DEFAULT_SOCKET
    )]
    pub socket: PathBuf,

    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    #[command(flatten)]
    pub coordinator: CoordinatorArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the coordinator (its commands only).
#[derive(Debug, Clone, Args)]
pub struct CoordinatorArgs {
    /// The coordinator's address, host:port.
    #[arg(
        long,
        global = true,
        env = "FAULTD_COORDINATOR",
        value_name = "HOST:PORT",
        help_heading = "Coordinator"
    )]
    pub coordinator: Option<String>,

    /// The name the coordinator's certificate carries [default: the host of
    /// --coordinator].
    #[arg(
        long,
        global = true,
        env = "FAULTD_COORDINATOR_NAME",
        value_name = "NAME",
        help_heading = "Coordinator"
    )]
    pub coordinator_name: Option<String>,

    /// The CA of the coordinator's certificate (PEM).
    #[arg(
        long,
        global = true,
        env = "FAULTD_TLS_CA",
        value_name = "PEM",
        help_heading = "Coordinator"
    )]
    pub ca: Option<PathBuf>,

    /// Your client certificate (PEM), naming an operator identity for
    /// changes, a reader one for reads.
    #[arg(
        long,
        global = true,
        env = "FAULTD_TLS_CERT",
        value_name = "PEM",
        help_heading = "Coordinator"
    )]
    pub cert: Option<PathBuf>,

    /// The client certificate's key (PEM).
    #[arg(
        long,
        global = true,
        env = "FAULTD_TLS_KEY",
        value_name = "PEM",
        help_heading = "Coordinator"
    )]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// Pretty-printed JSON for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drop a share of a target's packets for a while (creates, or updates
    /// the fault with the same --id).
    Loss(AgentFault<LossArgs>),
    /// Make a target's calls fail with an errno for a while (creates, or
    /// updates the fault with the same --id).
    Syscall(AgentFault<SyscallArgs>),
    /// Delay a target's packets, optionally with jitter (EDT + fq; creates,
    /// or updates the fault with the same --id).
    Latency(AgentFault<LatencyArgs>),
    /// Limit a target's rate (EDT pacing + fq; creates, or updates the fault
    /// with the same --id).
    Bandwidth(AgentFault<BandwidthArgs>),
    /// List the faults the agent holds.
    List,
    /// Show one fault.
    Get {
        /// The fault id.
        id: String,
    },
    /// Remove a fault (an unknown id succeeds), or every fault with --all.
    Revert(RevertArgs),
    /// Show what the kernel offers and what the agent loaded.
    Caps,
    /// Experiments across nodes, through the coordinator.
    #[command(subcommand)]
    Experiment(ExperimentCommand),
    /// Emergency stop: revert every experiment's faults on every agent and
    /// refuse new experiments until `faultctl resume`.
    Halt {
        /// Why, for the audit log and the experiments' events.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Accept experiments again after `faultctl halt`.
    Resume,
    /// The coordinator's state: halted or not, its agents, its policy.
    Status,
    /// Re-read the coordinator's policy file (as SIGHUP does); a policy that
    /// does not parse is refused and the old one stays.
    ReloadPolicy,
}

impl Command {
    /// Whether the command talks to the coordinator rather than the agent.
    pub fn is_coordinator(&self) -> bool {
        matches!(
            self,
            Self::Experiment(_)
                | Self::Halt { .. }
                | Self::Resume
                | Self::Status
                | Self::ReloadPolicy
        )
    }
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["id", "all"])))]
pub struct RevertArgs {
    /// The fault id.
    pub id: Option<String>,
    /// Revert every fault the agent holds.
    #[arg(long)]
    pub all: bool,
}

/// A combination of flags that each parsed but do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("--port needs --protocol tcp, udp or any, not icmp")]
    PortWithIcmp,
    #[error("--duration {0:?} is too long")]
    DurationTooLong(Duration),
    #[error("an experiment needs targets: --cgroup-glob, --unit-glob, --pod-uid or --namespace")]
    NoTargets,
    #[error(
        "partition side {0} needs targets: --{0}-cgroup-glob, --{0}-unit-glob or --{0}-pod-uid"
    )]
    NoSideTargets(&'static str),
}

#[cfg(test)]
mod tests;
