//! What the syscall benchmark measures: its options, the calls, the agent
//! states and the configurations with the runs recorded for each.

use std::collections::BTreeMap;

use faultd_tests::measure::{FileCalls, Schedule};

use crate::bench::stats::per_round_medians;

#[derive(Debug, Clone, clap::Args)]
// The file calls' own help describes them as the guest makes them; here
// they matter only with --vm, which is what this command's help says.
#[command(
    mut_arg("opens", |a| a.help("open() calls per run (--vm)")),
    mut_arg("reads", |a| a.help("read() calls per run (--vm)")),
    mut_arg("writes", |a| a.help("write() calls per run (--vm)"))
)]
pub struct Options {
    #[command(flatten)]
    pub schedule: Schedule,
    /// connect() calls per run.
    #[arg(long, default_value_t = 2_000)]
    pub connects: u64,
    /// socket() calls per run.
    #[arg(long, default_value_t = 20_000)]
    pub sockets: u64,
    /// Extra faults, on as many other cgroups, in the "many" state
    /// (alternately connect and socket faults).
    #[arg(long, default_value_t = 1_000)]
    pub faults: usize,
    /// Measure open(), read() and write() (BPF LSM) instead, inside the VM
    /// tier's Debian kernels (FAULTD_VM_KERNELS to pick one); writes
    /// docs/benchmarks/syscall-vm.md and syscall-vm.json. No root needed.
    #[arg(long)]
    pub vm: bool,
    #[command(flatten)]
    pub file: FileCalls,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Connect,
    Socket,
}

impl Op {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Socket => "socket",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    Off,
    /// The 4 base faults.
    Base,
    /// The base faults and `faults` more.
    Many,
}

impl State {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Base => "base",
            Self::Many => "many",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Who {
    Bystander,
    Target,
}

#[derive(Debug)]
pub(super) struct Config {
    pub(super) key: &'static str,
    pub(super) op: Op,
    pub(super) state: State,
    pub(super) who: Who,
    pub(super) runs: Vec<Run>,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Run {
    pub(super) round: usize,
    /// ns per call inside the helper's loop (its `elapsed_ns` / attempted).
    pub(super) wall: f64,
    /// CPU ns (user + system) of the helper process per call, its start-up
    /// included.
    pub(super) cpu: f64,
}

impl Config {
    pub(super) fn per_round(&self, metric: fn(&Run) -> f64) -> Vec<f64> {
        per_round_medians(&self.runs, |r| r.round, metric)
    }
}

pub(super) fn wall(r: &Run) -> f64 {
    r.wall
}

pub(super) fn cpu(r: &Run) -> f64 {
    r.cpu
}

pub(super) fn configs() -> Vec<Config> {
    let mut v = Vec::new();
    for (op, keys) in [
        (
            Op::Connect,
            [
                "connect-a",
                "connect-b",
                "connect-c",
                "connect-bN",
                "connect-cN",
            ],
        ),
        (
            Op::Socket,
            ["socket-a", "socket-b", "socket-c", "socket-bN", "socket-cN"],
        ),
    ] {
        for (key, state, who) in [
            (keys[0], State::Off, Who::Bystander),
            (keys[1], State::Base, Who::Bystander),
            (keys[2], State::Base, Who::Target),
            (keys[3], State::Many, Who::Bystander),
            (keys[4], State::Many, Who::Target),
        ] {
            v.push(Config {
                key,
                op,
                state,
                who,
                runs: Vec::new(),
            });
        }
    }
    v
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct LoopReport {
    pub(super) attempted: u64,
    #[serde(alias = "connected", alias = "created")]
    pub(super) ok: u64,
    pub(super) errors: BTreeMap<String, u64>,
    pub(super) elapsed_ns: u64,
}

/// The connect target's filter port: the listeners bind ephemeral ports, so
/// its fault never matches.
pub(super) const NEVER_MATCHING_PORT: u16 = 9;
