//! What a fault does, as flags: one struct per fault kind, shared by the
//! agent commands (`faultctl loss ...`, with a target) and the coordinator's
//! `experiment create ... loss` (targets chosen by a selector).

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use faultd_proto::agent::v1 as pb;

use super::{ArgsError, target::TargetArgs};
use crate::parse::{
    Cidr, PortRange, generate_id, parse_cidr, parse_duration, parse_fault_id, parse_percent,
    parse_port_range,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    Tcp,
    Udp,
    Icmp,
    Any,
}

impl From<ProtocolArg> for pb::Protocol {
    fn from(p: ProtocolArg) -> Self {
        match p {
            ProtocolArg::Tcp => pb::Protocol::Tcp,
            ProtocolArg::Udp => pb::Protocol::Udp,
            ProtocolArg::Icmp => pb::Protocol::Icmp,
            ProtocolArg::Any => pb::Protocol::Any,
        }
    }
}

/// Which packets a network fault applies to.
#[derive(Debug, Clone, Args)]
pub struct FilterArgs {
    /// Only this protocol.
    #[arg(long, value_enum, default_value_t = ProtocolArg::Any)]
    pub protocol: ProtocolArg,

    /// Only packets to (egress) or from (ingress) this CIDR; a bare address is one host.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub dst: Option<Cidr>,

    /// Only this remote port, or inclusive range A-B (tcp, udp or any).
    #[arg(long, value_name = "N|A-B", value_parser = parse_port_range)]
    pub port: Option<PortRange>,
}

impl FilterArgs {
    fn to_proto(&self) -> Result<pb::PacketFilter, ArgsError> {
        if self.port.is_some() && self.protocol == ProtocolArg::Icmp {
            return Err(ArgsError::PortWithIcmp);
        }
        Ok(packet_filter(self.protocol, self.dst, self.port))
    }
}

fn packet_filter(
    protocol: ProtocolArg,
    cidr: Option<Cidr>,
    port: Option<PortRange>,
) -> pb::PacketFilter {
    let (remote_port_min, remote_port_max) = port.map(PortRange::to_proto).unwrap_or((0, 0));
    pb::PacketFilter {
        protocol: pb::Protocol::from(protocol).into(),
        remote_cidr: cidr.map(|c| c.to_string()).unwrap_or_default(),
        remote_port_min,
        remote_port_max,
    }
}

/// A fault kind's flags, and its request message.
pub trait FaultKindArgs: Args {
    /// The prefix of generated fault ids.
    const NAME: &'static str;
    fn kind(&self) -> Result<pb::fault_spec::Kind, ArgsError>;
}

#[derive(Debug, Args)]
pub struct LossArgs {
    /// Drop probability in percent, 0.0001 to 100 (e.g. 30, 0.5).
    #[arg(long, value_name = "P", value_parser = parse_percent)]
    pub percent: u32,

    /// Only outgoing packets. With neither --egress nor --ingress, both directions.
    #[arg(long)]
    pub egress: bool,

    /// Only incoming packets. With neither --egress nor --ingress, both directions.
    #[arg(long)]
    pub ingress: bool,

    #[command(flatten)]
    pub filter: FilterArgs,
}

impl LossArgs {
    /// Only one side when exactly one flag is given, otherwise both.
    pub fn direction(&self) -> pb::Direction {
        match (self.egress, self.ingress) {
            (true, false) => pb::Direction::Egress,
            (false, true) => pb::Direction::Ingress,
            _ => pb::Direction::Both,
        }
    }
}

impl FaultKindArgs for LossArgs {
    const NAME: &'static str = "loss";

    fn kind(&self) -> Result<pb::fault_spec::Kind, ArgsError> {
        Ok(pb::fault_spec::Kind::Loss(pb::LossFault {
            probability_ppm: self.percent,
            direction: self.direction().into(),
            filter: Some(self.filter.to_proto()?),
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DistributionArg {
    Uniform,
    Normal,
    Pareto,
    Paretonormal,
}

/// The direction of latency and bandwidth faults: egress unless --ingress;
/// both with both flags.
#[derive(Debug, Clone, Args)]
pub struct ShapingDirection {
    /// Shape outgoing packets (the default when --ingress is not given).
    #[arg(long)]
    pub egress: bool,

    /// Shape incoming packets (kernel 6.6+, TCX); with --egress too, both
    /// directions (bandwidth: each at the rate).
    #[arg(long)]
    pub ingress: bool,
}

impl ShapingDirection {
    fn to_proto(&self) -> pb::Direction {
        match (self.egress, self.ingress) {
            (_, false) => pb::Direction::Egress,
            (false, true) => pb::Direction::Ingress,
            (true, true) => pb::Direction::Both,
        }
    }
}

#[derive(Debug, Args)]
pub struct LatencyArgs {
    /// Fixed delay added to each packet (e.g. 100ms, 1s, 250us).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub delay: Duration,

    /// Jitter scale: half-width for uniform, standard deviation for normal.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub jitter: Option<Duration>,

    /// Jitter distribution, as netem's.
    #[arg(long, value_enum, default_value_t = DistributionArg::Uniform)]
    pub distribution: DistributionArg,

    /// Correlation of consecutive jitter samples in percent (0-100).
    #[arg(long, value_name = "P", value_parser = parse_correlation)]
    pub correlation: Option<f64>,

    #[command(flatten)]
    pub direction: ShapingDirection,

    #[command(flatten)]
    pub filter: FilterArgs,
}

impl FaultKindArgs for LatencyArgs {
    const NAME: &'static str = "latency";

    fn kind(&self) -> Result<pb::fault_spec::Kind, ArgsError> {
        Ok(pb::fault_spec::Kind::Latency(pb::LatencyFault {
            delay: prost_types::Duration::try_from(self.delay).ok(),
            jitter: self
                .jitter
                .and_then(|j| prost_types::Duration::try_from(j).ok()),
            distribution: match self.distribution {
                DistributionArg::Uniform => pb::Distribution::Uniform,
                DistributionArg::Normal => pb::Distribution::Normal,
                DistributionArg::Pareto => pb::Distribution::Pareto,
                DistributionArg::Paretonormal => pb::Distribution::Paretonormal,
            }
            .into(),
            correlation_percent: self.correlation.unwrap_or(0.0),
            direction: self.direction.to_proto().into(),
            filter: Some(self.filter.to_proto()?),
        }))
    }
}

#[derive(Debug, Args)]
pub struct BandwidthArgs {
    /// Rate limit: bit, kbit, mbit, gbit (powers of 1000), or bps, kbps,
    /// mbps, gbps (bytes per second), as tc writes rates; e.g. 10mbit.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub rate: u64,

    #[command(flatten)]
    pub direction: ShapingDirection,

    #[command(flatten)]
    pub filter: FilterArgs,
}

impl FaultKindArgs for BandwidthArgs {
    const NAME: &'static str = "bandwidth";

    fn kind(&self) -> Result<pb::fault_spec::Kind, ArgsError> {
        Ok(pb::fault_spec::Kind::Bandwidth(pb::BandwidthFault {
            rate_bps: self.rate,
            direction: self.direction.to_proto().into(),
            filter: Some(self.filter.to_proto()?),
        }))
    }
}

#[derive(Debug, Args)]
pub struct SyscallArgs {
    /// The operation to fail.
    #[arg(long, value_parser = super::ops::OperationParser)]
    pub op: pb::SyscallOperation,

    /// The errno the call fails with, by name (e.g. ECONNREFUSED, ETIMEDOUT, EACCES).
    #[arg(long)]
    pub errno: String,

    /// Failure probability in percent, 0.0001 to 100.
    #[arg(long, value_name = "P", value_parser = parse_percent)]
    pub percent: u32,

    /// Only this protocol (tcp or udp; sendmsg is UDP only).
    #[arg(long, value_enum, default_value_t = ProtocolArg::Any)]
    pub protocol: ProtocolArg,

    /// Only calls to this CIDR (connect, sendmsg) or binding it (bind).
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub addr: Option<Cidr>,

    /// Only this port, or inclusive range A-B.
    #[arg(long, value_name = "N|A-B", value_parser = parse_port_range)]
    pub port: Option<PortRange>,

    /// open/read/write: only files below this absolute directory (as the
    /// agent's mount namespace sees it).
    #[arg(long, value_name = "DIR")]
    pub path: Option<String>,
}

impl FaultKindArgs for SyscallArgs {
    const NAME: &'static str = "syscall";

    /// The agent validates the combination (e.g. no address for socket()).
    fn kind(&self) -> Result<pb::fault_spec::Kind, ArgsError> {
        Ok(pb::fault_spec::Kind::Syscall(pb::SyscallFault {
            operation: self.op.into(),
            errno: self.errno.clone(),
            probability_ppm: self.percent,
            filter: Some(packet_filter(self.protocol, self.addr, self.port)),
            path_prefix: self.path.clone().unwrap_or_default(),
        }))
    }
}

/// A fault on one target of this node's agent: the target, what the fault
/// does (`K`), how long, and its id.
#[derive(Debug, Args)]
pub struct AgentFault<K: FaultKindArgs> {
    #[command(flatten)]
    pub target: TargetArgs,

    #[command(flatten)]
    pub kind: K,

    /// How long the fault lasts (e.g. 60s, 2m, 1h30m, 500ms); the agent reverts it afterwards.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Duration,

    /// Fault id; applying an existing id updates that fault [default: <kind>-<random hex>].
    #[arg(long, value_parser = parse_fault_id)]
    pub id: Option<String>,
}

impl<K: FaultKindArgs> AgentFault<K> {
    /// The ApplyFault request these flags describe. Without `--id`, a fresh
    /// `<kind>-<hex>` id, so each call creates a new fault.
    pub fn to_request(&self) -> Result<pb::ApplyFaultRequest, ArgsError> {
        let duration = prost_types::Duration::try_from(self.duration)
            .map_err(|_| ArgsError::DurationTooLong(self.duration))?;
        Ok(pb::ApplyFaultRequest {
            spec: Some(pb::FaultSpec {
                id: self
                    .id
                    .as_deref()
                    .map_or_else(|| generate_id(K::NAME), str::to_owned),
                target: Some(pb::Target {
                    kind: self.target.to_proto(),
                }),
                duration: Some(duration),
                kind: Some(self.kind.kind()?),
            }),
            lease: None,
        })
    }
}

/// One fault kind, as the subcommand of `experiment create`.
#[derive(Debug, Subcommand)]
pub enum KindCommand {
    /// Drop a share of the targets' packets.
    Loss(LossArgs),
    /// Fail the targets' calls with an errno.
    Syscall(SyscallArgs),
    /// Delay the targets' packets.
    Latency(LatencyArgs),
    /// Limit the targets' rate.
    Bandwidth(BandwidthArgs),
}

impl KindCommand {
    pub fn kind(&self) -> Result<pb::fault_spec::Kind, ArgsError> {
        match self {
            Self::Loss(k) => k.kind(),
            Self::Syscall(k) => k.kind(),
            Self::Latency(k) => k.kind(),
            Self::Bandwidth(k) => k.kind(),
        }
    }
}

/// A correlation percentage, 0 to 100.
pub fn parse_correlation(input: &str) -> Result<f64, String> {
    let text = input.trim().trim_end_matches('%');
    match text.parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("{input:?} is not a percentage from 0 to 100")),
    }
}

/// A rate as tc writes it (tc/tc_util.c, `get_rate64`): a number with an
/// optional suffix; bit-based suffixes count bits, bps-based ones bytes.
pub fn parse_rate(input: &str) -> Result<u64, String> {
    let text = input.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{input:?} is not a rate (e.g. 10mbit)"))?;
    let factor = match unit {
        "" | "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        other => return Err(format!("unknown rate unit {other:?} in {input:?}")),
    };
    let bits = (value * factor).round();
    if !(1.0..=1e15).contains(&bits) {
        return Err(format!("{input:?} is out of range"));
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "checked to lie in 1..=1e15"
    )]
    Ok(bits as u64)
}
