//! What the loss benchmark measures: its options, the fixed sizes of its
//! runs, and the configurations (agent state, cgroup, network namespace)
//! with the runs recorded for each.

use std::time::Duration;

use crate::bench::{stats::per_round_medians, table::group};

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Measurement rounds; every configuration is measured once per round.
    #[arg(long, default_value_t = 9)]
    pub rounds: usize,
    /// Faults (and iptables rules) in the "many" configurations.
    #[arg(long, default_value_t = 10_000)]
    pub faults: usize,
    /// Runs of each configuration per round (alternating with the other
    /// configurations of the same agent state); a round's value is their
    /// median.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Sequential applies of each kind (new, update) for the latency
    /// distribution; as many reverts.
    #[arg(long, default_value_t = 1_000)]
    pub applies: usize,
    /// Applies verified with traffic.
    #[arg(long, default_value_t = 50)]
    pub verified: usize,
}

pub(super) const UDP_PAYLOAD: usize = 64;
/// A run is sized to take about this long (after a probe on the first visit
/// of each configuration), within the bounds below: the iptables
/// configurations are up to 3000 times slower than the baseline.
pub(super) const RUN_TARGET: Duration = Duration::from_millis(150);
pub(super) const UDP_PROBE: u64 = 300;
pub(super) const UDP_COUNT_BOUNDS: (u64, u64) = (100, 200_000);
pub(super) const TCP_PROBE: u64 = 4 << 20;
pub(super) const TCP_BYTES_BOUNDS: (u64, u64) = (1 << 20, 256 << 20);
/// The faults on other cgroups: 30% egress loss, no filter.
pub(super) const OTHER_PPM: u32 = 300_000;
/// The target's fault never matches loopback traffic.
pub(super) const NEVER_MATCHING_CIDR: &str = "10.0.0.0/8";
/// Spacing of the verification sender's packets (plus the time to send one).
pub(super) const VERIFY_SEND_GAP: Duration = Duration::from_micros(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum State {
    /// No agent running.
    Off,
    /// The agent holds one fault: the target's never-matching one.
    One,
    /// The target's fault and one on each of faults-1 other cgroups.
    Many,
}

impl State {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::One => "one",
            Self::Many => "many",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Who {
    Bystander,
    Target,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ns {
    Clean,
    /// Index into `Bench::ipt`.
    Ipt(usize),
}

#[derive(Debug)]
pub(super) struct Config {
    pub(super) key: &'static str,
    pub(super) label: String,
    pub(super) state: State,
    pub(super) who: Who,
    pub(super) ns: Ns,
    pub(super) udp_count: u64,
    pub(super) tcp_bytes: u64,
    pub(super) runs: Vec<Run>,
    /// The discarded sizing probe: UDP wall ns/packet, TCP MB/s.
    pub(super) probe: Option<(f64, f64)>,
}

/// One UDP run and one TCP run.
#[derive(Clone, Copy, Debug)]
pub(super) struct Run {
    pub(super) round: usize,
    /// ns per `sendto`, as `sendto-bench` measures it (wall clock).
    pub(super) udp_wall: f64,
    /// CPU time of the sender process (user + system, from getrusage once
    /// it is reaped) per packet: unlike wall time, it does not include
    /// time the sender spent preempted by other work on the machine.
    pub(super) udp_cpu: f64,
    /// MB/s of the TCP transfer (wall clock, as `tcp-send` reports it).
    pub(super) tcp_mbs: f64,
    /// MB moved per CPU-second of sender and sink together.
    pub(super) tcp_mb_per_cpu_s: f64,
}

pub(super) fn udp_wall(r: &Run) -> f64 {
    r.udp_wall
}

pub(super) fn udp_cpu(r: &Run) -> f64 {
    r.udp_cpu
}

pub(super) fn tcp_mbs(r: &Run) -> f64 {
    r.tcp_mbs
}

pub(super) fn tcp_cpu(r: &Run) -> f64 {
    r.tcp_mb_per_cpu_s
}

impl Config {
    /// One value per round: the median of that round's repetitions.
    pub(super) fn per_round(&self, metric: fn(&Run) -> f64) -> Vec<f64> {
        per_round_medians(&self.runs, |r| r.round, metric)
    }
}

pub(super) fn configs(faults: usize) -> Vec<Config> {
    let n = group(faults as u64);
    let c = |key, label: String, state, who, ns| Config {
        key,
        label,
        state,
        who,
        ns,
        udp_count: 0,
        tcp_bytes: 0,
        runs: Vec::new(),
        probe: None,
    };
    let (by, target) = (Who::Bystander, Who::Target);
    let mut v: Vec<Config> = [
        (
            "a",
            State::Off,
            by,
            "bystander, no agent (baseline)".to_owned(),
        ),
        (
            "b",
            State::One,
            by,
            "bystander, agent with 1 fault on another cgroup".into(),
        ),
        (
            "c",
            State::Many,
            by,
            format!("bystander, agent with {n} faults on {n} other cgroups"),
        ),
        (
            "d1",
            State::One,
            target,
            "target, its fault never matches; 1 fault in the agent".into(),
        ),
        (
            "dN",
            State::Many,
            target,
            format!("target, its fault never matches; {n} faults in the agent"),
        ),
    ]
    .into_iter()
    .map(|(key, state, who, label)| c(key, label, state, who, Ns::Clean))
    .collect();
    // One per iptables chain, in the order `run` loads them into `Bench::ipt`.
    for (k, (key, tool, many)) in [
        ("e-nft-1", "iptables-nft", false),
        ("e-nft-N", "iptables-nft", true),
        ("e-legacy-1", "iptables-legacy", false),
        ("e-legacy-N", "iptables-legacy", true),
    ]
    .into_iter()
    .enumerate()
    {
        let rules = if many {
            format!("{n} rules for {n} other cgroups")
        } else {
            "1 rule for another cgroup".to_owned()
        };
        let label = format!("bystander, no agent, {tool}: {rules}");
        v.push(c(key, label, State::Off, by, Ns::Ipt(k)));
    }
    v
}
