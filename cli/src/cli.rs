//! The command line (clap derive) and its mapping onto agent requests.
//!
//! Lives in the library rather than `main.rs` so the flag -> request mapping is
//! unit-tested with `Cli::try_parse_from`, without an agent.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use faultd_proto::agent::v1 as pb;

use crate::parse::{
    Cidr, PortRange, generate_id, parse_cidr, parse_duration, parse_fault_id, parse_percent,
    parse_port_range,
};

/// Where the agent listens unless `--socket` or `FAULTD_SOCKET` say otherwise.
pub const DEFAULT_SOCKET: &str = "/run/faultd/faultd.sock";

/// Inject and revert faults through the faultd agent on this node.
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

    #[command(subcommand)]
    pub command: Command,
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
    Loss(LossArgs),
    /// Make a target's connect/bind/sendmsg/socket calls fail with an errno
    /// for a while (creates, or updates the fault with the same --id).
    Syscall(SyscallArgs),
    /// Delay a target's outgoing packets, optionally with jitter (EDT + fq;
    /// creates, or updates the fault with the same --id).
    Latency(LatencyArgs),
    /// Limit a target's outgoing rate (EDT pacing + fq; creates, or updates
    /// the fault with the same --id).
    Bandwidth(BandwidthArgs),
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

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("target")
        .required(true)
        .args(["cgroup", "pid", "unit", "pod"])
))]
pub struct TargetArgs {
    /// Target a cgroup, relative to the cgroup v2 mount (e.g. system.slice/nginx.service).
    #[arg(long, value_name = "PATH", help_heading = "Target (exactly one)")]
    pub cgroup: Option<String>,

    /// Target the cgroup this process is in when the fault is applied.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..),
        help_heading = "Target (exactly one)"
    )]
    pub pid: Option<u32>,

    /// Target a systemd unit or slice (e.g. nginx.service).
    #[arg(long, value_name = "NAME", help_heading = "Target (exactly one)")]
    pub unit: Option<String>,

    /// Target a Kubernetes pod by metadata.uid.
    #[arg(long, value_name = "UID", help_heading = "Target (exactly one)")]
    pub pod: Option<String>,

    /// With --pod: only this container (id, with or without a containerd:// prefix).
    //
    // `requires = "pod"` alone is not enough: clap waives a requirement whose
    // arg conflicts with one present, and the single-choice target group makes
    // --pod conflict with --unit etc. Hence the explicit conflicts.
    #[arg(
        long,
        value_name = "ID",
        requires = "pod",
        conflicts_with_all = ["cgroup", "pid", "unit"],
        help_heading = "Target (exactly one)"
    )]
    pub container: Option<String>,
}

#[derive(Debug, Args)]
pub struct LossArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Drop probability in percent, 0.0001 to 100 (e.g. 30, 0.5).
    #[arg(long, value_name = "P", value_parser = parse_percent)]
    pub percent: u32,

    /// How long the fault lasts (e.g. 60s, 2m, 1h30m, 500ms); the agent reverts it afterwards.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Duration,

    /// Only outgoing packets. With neither --egress nor --ingress, both directions.
    #[arg(long)]
    pub egress: bool,

    /// Only incoming packets. With neither --egress nor --ingress, both directions.
    #[arg(long)]
    pub ingress: bool,

    /// Only this protocol.
    #[arg(long, value_enum, default_value_t = ProtocolArg::Any)]
    pub protocol: ProtocolArg,

    /// Only packets to (egress) or from (ingress) this CIDR; a bare address is one host.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub dst: Option<Cidr>,

    /// Only this remote port, or inclusive range A-B (tcp, udp or any).
    #[arg(long, value_name = "N|A-B", value_parser = parse_port_range)]
    pub port: Option<PortRange>,

    /// Fault id; applying an existing id updates that fault [default: loss-<random hex>].
    #[arg(long, value_parser = parse_fault_id)]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DistributionArg {
    Uniform,
    Normal,
    Pareto,
    Paretonormal,
}

#[derive(Debug, Args)]
pub struct LatencyArgs {
    #[command(flatten)]
    pub target: TargetArgs,

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

    /// How long the fault lasts (e.g. 60s, 2m); the agent reverts it afterwards.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Duration,

    /// Delay outgoing packets (the default when --ingress is not given).
    #[arg(long)]
    pub egress: bool,

    /// Delay incoming packets (kernel 6.6+, TCX); with --egress too, both
    /// directions.
    #[arg(long)]
    pub ingress: bool,

    /// Only this protocol.
    #[arg(long, value_enum, default_value_t = ProtocolArg::Any)]
    pub protocol: ProtocolArg,

    /// Only packets to (egress) or from (ingress) this CIDR; a bare address is one host.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub dst: Option<Cidr>,

    /// Only this remote port, or inclusive range A-B (tcp, udp or any).
    #[arg(long, value_name = "N|A-B", value_parser = parse_port_range)]
    pub port: Option<PortRange>,

    /// Fault id; applying an existing id updates that fault [default: latency-<random hex>].
    #[arg(long, value_parser = parse_fault_id)]
    pub id: Option<String>,
}

#[derive(Debug, Args)]
pub struct BandwidthArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Rate limit: bit, kbit, mbit, gbit (powers of 1000), or bps, kbps,
    /// mbps, gbps (bytes per second), as tc writes rates; e.g. 10mbit.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub rate: u64,

    /// How long the fault lasts (e.g. 60s, 2m); the agent reverts it afterwards.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Duration,

    /// Pace outgoing packets (the default when --ingress is not given).
    #[arg(long)]
    pub egress: bool,

    /// Pace incoming packets (kernel 6.6+, TCX); with --egress too, each
    /// direction at the rate.
    #[arg(long)]
    pub ingress: bool,

    /// Only this protocol.
    #[arg(long, value_enum, default_value_t = ProtocolArg::Any)]
    pub protocol: ProtocolArg,

    /// Only packets to this CIDR; a bare address is one host.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub dst: Option<Cidr>,

    /// Only this remote port, or inclusive range A-B (tcp, udp or any).
    #[arg(long, value_name = "N|A-B", value_parser = parse_port_range)]
    pub port: Option<PortRange>,

    /// Fault id; applying an existing id updates that fault [default: bandwidth-<random hex>].
    #[arg(long, value_parser = parse_fault_id)]
    pub id: Option<String>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OperationArg {
    /// connect(2), TCP and UDP.
    Connect,
    /// bind(2).
    Bind,
    /// sendto/sendmsg with an address on unconnected UDP sockets.
    Sendmsg,
    /// socket(2).
    Socket,
    /// open/openat/openat2/creat (BPF LSM, or a kernel with bpf_override_return).
    Open,
    /// read and friends, sockets and pipes included (BPF LSM, or a kernel with bpf_override_return).
    Read,
    /// write and friends, sockets and pipes included (BPF LSM, or a kernel with bpf_override_return).
    Write,
    /// mkdir/mkdirat (BPF LSM, or a kernel with bpf_override_return).
    Mkdir,
    /// unlink/unlinkat of files (BPF LSM, or a kernel with bpf_override_return).
    Unlink,
    /// rename/renameat/renameat2 (BPF LSM, or a kernel with bpf_override_return).
    Rename,
    /// execve/execveat (BPF LSM, or a kernel with bpf_override_return).
    Execve,
    /// accept/accept4 (BPF LSM, or a kernel with bpf_override_return).
    Accept,
    /// recv/recvfrom/recvmsg/recvmmsg (BPF LSM, or a kernel with bpf_override_return).
    Recvmsg,
}

#[derive(Debug, Args)]
pub struct SyscallArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// The operation to fail.
    #[arg(long, value_enum)]
    pub op: OperationArg,

    /// The errno the call fails with, by name (e.g. ECONNREFUSED, ETIMEDOUT, EACCES).
    #[arg(long)]
    pub errno: String,

    /// Failure probability in percent, 0.0001 to 100.
    #[arg(long, value_name = "P", value_parser = parse_percent)]
    pub percent: u32,

    /// How long the fault lasts (e.g. 60s, 2m); the agent reverts it afterwards.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Duration,

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

    /// Fault id; applying an existing id updates that fault [default: syscall-<random hex>].
    #[arg(long, value_parser = parse_fault_id)]
    pub id: Option<String>,
}

impl SyscallArgs {
    /// The ApplyFault request these flags describe; the agent validates the
    /// combination (e.g. no address for socket()).
    pub fn to_request(&self) -> Result<pb::ApplyFaultRequest, ArgsError> {
        let operation = match self.op {
            OperationArg::Connect => pb::SyscallOperation::Connect,
            OperationArg::Bind => pb::SyscallOperation::Bind,
            OperationArg::Sendmsg => pb::SyscallOperation::Sendmsg,
            OperationArg::Socket => pb::SyscallOperation::Socket,
            OperationArg::Open => pb::SyscallOperation::Open,
            OperationArg::Read => pb::SyscallOperation::Read,
            OperationArg::Write => pb::SyscallOperation::Write,
            OperationArg::Mkdir => pb::SyscallOperation::Mkdir,
            OperationArg::Unlink => pb::SyscallOperation::Unlink,
            OperationArg::Rename => pb::SyscallOperation::Rename,
            OperationArg::Execve => pb::SyscallOperation::Execve,
            OperationArg::Accept => pb::SyscallOperation::Accept,
            OperationArg::Recvmsg => pb::SyscallOperation::Recvmsg,
        };
        let kind = pb::fault_spec::Kind::Syscall(pb::SyscallFault {
            operation: operation.into(),
            errno: self.errno.clone(),
            probability_ppm: self.percent,
            filter: Some(packet_filter(self.protocol, self.addr, self.port)),
            path_prefix: self.path.clone().unwrap_or_default(),
        });
        fault_request(
            self.id.as_deref(),
            "syscall",
            &self.target,
            self.duration,
            kind,
        )
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

/// An ApplyFault request; without an id, a fresh `<prefix>-<hex>` one, so
/// each call creates a new fault.
fn fault_request(
    id: Option<&str>,
    prefix: &str,
    target: &TargetArgs,
    duration: Duration,
    kind: pb::fault_spec::Kind,
) -> Result<pb::ApplyFaultRequest, ArgsError> {
    let proto_duration = prost_types::Duration::try_from(duration)
        .map_err(|_| ArgsError::DurationTooLong(duration))?;
    Ok(pb::ApplyFaultRequest {
        spec: Some(pb::FaultSpec {
            id: id.map_or_else(|| generate_id(prefix), str::to_owned),
            target: Some(pb::Target {
                kind: target.to_proto(),
            }),
            duration: Some(proto_duration),
            kind: Some(kind),
        }),
        lease: None,
    })
}

/// A combination of flags that each parsed but do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("--port needs --protocol tcp, udp or any, not icmp")]
    PortWithIcmp,
    #[error("--duration {0:?} is too long")]
    DurationTooLong(Duration),
}

impl TargetArgs {
    pub fn to_proto(&self) -> Option<pb::target::Kind> {
        use pb::target::Kind;
        // clap's required, single-choice "target" group guarantees exactly one.
        if let Some(path) = &self.cgroup {
            Some(Kind::CgroupPath(path.clone()))
        } else if let Some(pid) = self.pid {
            Some(Kind::Pid(pid))
        } else if let Some(unit) = &self.unit {
            Some(Kind::SystemdUnit(unit.clone()))
        } else {
            self.pod.as_ref().map(|uid| {
                Kind::Pod(pb::KubernetesPod {
                    uid: uid.clone(),
                    container_id: self.container.clone().unwrap_or_default(),
                })
            })
        }
    }
}

impl LossArgs {
    /// The direction the flags ask for: only one side when exactly one flag is
    /// given, otherwise both.
    pub fn direction(&self) -> pb::Direction {
        match (self.egress, self.ingress) {
            (true, false) => pb::Direction::Egress,
            (false, true) => pb::Direction::Ingress,
            _ => pb::Direction::Both,
        }
    }

    /// The ApplyFault request these flags describe. Without `--id`, a fresh
    /// id is generated, so each call creates a new fault.
    pub fn to_request(&self) -> Result<pb::ApplyFaultRequest, ArgsError> {
        if self.port.is_some() && self.protocol == ProtocolArg::Icmp {
            return Err(ArgsError::PortWithIcmp);
        }
        let kind = pb::fault_spec::Kind::Loss(pb::LossFault {
            probability_ppm: self.percent,
            direction: self.direction().into(),
            filter: Some(packet_filter(self.protocol, self.dst, self.port)),
        });
        fault_request(
            self.id.as_deref(),
            "loss",
            &self.target,
            self.duration,
            kind,
        )
    }
}

impl LatencyArgs {
    pub fn to_request(&self) -> Result<pb::ApplyFaultRequest, ArgsError> {
        if self.port.is_some() && self.protocol == ProtocolArg::Icmp {
            return Err(ArgsError::PortWithIcmp);
        }
        let kind = pb::fault_spec::Kind::Latency(pb::LatencyFault {
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
            direction: delay_direction(self.egress, self.ingress).into(),
            filter: Some(packet_filter(self.protocol, self.dst, self.port)),
        });
        fault_request(
            self.id.as_deref(),
            "latency",
            &self.target,
            self.duration,
            kind,
        )
    }
}

/// Latency and bandwidth: egress unless --ingress; both with both flags.
fn delay_direction(egress: bool, ingress: bool) -> pb::Direction {
    match (egress, ingress) {
        (_, false) => pb::Direction::Egress,
        (false, true) => pb::Direction::Ingress,
        (true, true) => pb::Direction::Both,
    }
}

impl BandwidthArgs {
    pub fn to_request(&self) -> Result<pb::ApplyFaultRequest, ArgsError> {
        if self.port.is_some() && self.protocol == ProtocolArg::Icmp {
            return Err(ArgsError::PortWithIcmp);
        }
        let kind = pb::fault_spec::Kind::Bandwidth(pb::BandwidthFault {
            rate_bps: self.rate,
            direction: delay_direction(self.egress, self.ingress).into(),
            filter: Some(packet_filter(self.protocol, self.dst, self.port)),
        });
        fault_request(
            self.id.as_deref(),
            "bandwidth",
            &self.target,
            self.duration,
            kind,
        )
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("faultctl").chain(args.iter().copied()))
    }

    fn loss_request(args: &[&str]) -> pb::ApplyFaultRequest {
        let cli = parse(args).unwrap();
        let Command::Loss(loss) = cli.command else {
            panic!("not a loss command: {:?}", cli.command);
        };
        loss.to_request().unwrap()
    }

    fn loss_of(spec: &pb::FaultSpec) -> &pb::LossFault {
        match &spec.kind {
            Some(pb::fault_spec::Kind::Loss(l)) => l,
            other => panic!("not a loss fault: {other:?}"),
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_defaults() {
        let cli = parse(&["list"]).unwrap();
        // FAULTD_SOCKET may be set where tests run; only check it without.
        if std::env::var_os("FAULTD_SOCKET").is_none() {
            assert_eq!(cli.socket, PathBuf::from(DEFAULT_SOCKET));
        }
        assert_eq!(cli.output, OutputFormat::Table);
        let cli = parse(&["--socket", "/tmp/f.sock", "list", "-o", "json"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/tmp/f.sock"));
        assert_eq!(cli.output, OutputFormat::Json);
    }

    #[test]
    fn full_loss_command() {
        let req = loss_request(&[
            "loss",
            "--unit",
            "postgres.service",
            "--percent",
            "30",
            "--duration",
            "1h30m",
            "--egress",
            "--protocol",
            "udp",
            "--dst",
            "10.0.0.0/8",
            "--port",
            "5432",
            "--id",
            "db-loss",
        ]);
        let want = pb::ApplyFaultRequest {
            spec: Some(pb::FaultSpec {
                id: "db-loss".into(),
                target: Some(pb::Target {
                    kind: Some(pb::target::Kind::SystemdUnit("postgres.service".into())),
                }),
                duration: Some(prost_types::Duration {
                    seconds: 5_400,
                    nanos: 0,
                }),
                kind: Some(pb::fault_spec::Kind::Loss(pb::LossFault {
                    probability_ppm: 300_000,
                    direction: pb::Direction::Egress.into(),
                    filter: Some(pb::PacketFilter {
                        protocol: pb::Protocol::Udp.into(),
                        remote_cidr: "10.0.0.0/8".into(),
                        remote_port_min: 5432,
                        remote_port_max: 0,
                    }),
                })),
            }),
            lease: None,
        };
        assert_eq!(req, want);
    }

    #[test]
    fn minimal_loss_command_defaults() {
        let req = loss_request(&[
            "loss",
            "--cgroup",
            "system.slice/nginx.service",
            "--percent",
            "0.5",
            "--duration",
            "500ms",
        ]);
        let spec = req.spec.unwrap();
        assert!(spec.id.starts_with("loss-"), "{}", spec.id);
        assert_eq!(
            spec.target.as_ref().unwrap().kind,
            Some(pb::target::Kind::CgroupPath(
                "system.slice/nginx.service".into()
            ))
        );
        assert_eq!(
            spec.duration,
            Some(prost_types::Duration {
                seconds: 0,
                nanos: 500_000_000
            })
        );
        let loss = loss_of(&spec);
        assert_eq!(loss.probability_ppm, 5_000);
        // Neither --egress nor --ingress: both directions.
        assert_eq!(loss.direction(), pb::Direction::Both);
        let filter = loss.filter.as_ref().unwrap();
        assert_eq!(filter.protocol(), pb::Protocol::Any);
        assert_eq!(filter.remote_cidr, "");
        assert_eq!((filter.remote_port_min, filter.remote_port_max), (0, 0));
    }

    #[test]
    fn directions() {
        let base = ["loss", "--pid", "42", "--percent", "1", "--duration", "1m"];
        let dir = |extra: &[&str]| {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            loss_of(loss_request(&args).spec.as_ref().unwrap()).direction()
        };
        assert_eq!(dir(&[]), pb::Direction::Both);
        assert_eq!(dir(&["--egress"]), pb::Direction::Egress);
        assert_eq!(dir(&["--ingress"]), pb::Direction::Ingress);
        assert_eq!(dir(&["--egress", "--ingress"]), pb::Direction::Both);
    }

    #[test]
    fn pod_target_with_port_range_and_host_dst() {
        let req = loss_request(&[
            "loss",
            "--pod",
            "7f9c0e2a-1111-2222-3333-444455556666",
            "--container",
            "containerd://0123456789abcdef",
            "--percent",
            "100",
            "--duration",
            "2m",
            "--ingress",
            "--protocol",
            "tcp",
            "--dst",
            "fd00::1",
            "--port",
            "8000-8080",
        ]);
        let spec = req.spec.unwrap();
        assert_eq!(
            spec.target.as_ref().unwrap().kind,
            Some(pb::target::Kind::Pod(pb::KubernetesPod {
                uid: "7f9c0e2a-1111-2222-3333-444455556666".into(),
                container_id: "containerd://0123456789abcdef".into(),
            }))
        );
        let loss = loss_of(&spec);
        assert_eq!(loss.probability_ppm, 1_000_000);
        assert_eq!(loss.direction(), pb::Direction::Ingress);
        let filter = loss.filter.clone().unwrap();
        assert_eq!(filter.protocol(), pb::Protocol::Tcp);
        assert_eq!(filter.remote_cidr, "fd00::1/128");
        assert_eq!(
            (filter.remote_port_min, filter.remote_port_max),
            (8000, 8080)
        );
    }

    #[test]
    fn rejected_command_lines_name_the_flag() {
        let cases: &[(&[&str], ErrorKind, &str)] = &[
            (
                &["loss", "--pid", "1", "--percent", "0", "--duration", "1m"],
                ErrorKind::ValueValidation,
                "--percent",
            ),
            (
                &["loss", "--pid", "1", "--percent", "101", "--duration", "1m"],
                ErrorKind::ValueValidation,
                "--percent",
            ),
            (
                &["loss", "--pid", "1", "--percent", "5", "--duration", "60"],
                ErrorKind::ValueValidation,
                "--duration",
            ),
            (
                &[
                    "loss",
                    "--pid",
                    "1",
                    "--percent",
                    "5",
                    "--duration",
                    "1m",
                    "--port",
                    "0",
                ],
                ErrorKind::ValueValidation,
                "--port",
            ),
            (
                &[
                    "loss",
                    "--pid",
                    "1",
                    "--percent",
                    "5",
                    "--duration",
                    "1m",
                    "--dst",
                    "10.1.2.3/8",
                ],
                ErrorKind::ValueValidation,
                "--dst",
            ),
            (
                &[
                    "loss",
                    "--pid",
                    "1",
                    "--percent",
                    "5",
                    "--duration",
                    "1m",
                    "--id",
                    "a b",
                ],
                ErrorKind::ValueValidation,
                "--id",
            ),
            (
                &["loss", "--pid", "0", "--percent", "5", "--duration", "1m"],
                ErrorKind::ValueValidation,
                "--pid",
            ),
            // No target, or two targets.
            (
                &["loss", "--percent", "5", "--duration", "1m"],
                ErrorKind::MissingRequiredArgument,
                "--cgroup",
            ),
            (
                &[
                    "loss",
                    "--pid",
                    "1",
                    "--unit",
                    "a.service",
                    "--percent",
                    "5",
                    "--duration",
                    "1m",
                ],
                ErrorKind::ArgumentConflict,
                "--unit",
            ),
            (
                &[
                    "loss",
                    "--unit",
                    "a.service",
                    "--container",
                    "abc",
                    "--percent",
                    "5",
                    "--duration",
                    "1m",
                ],
                ErrorKind::ArgumentConflict,
                "--container",
            ),
            (
                &[
                    "loss",
                    "--container",
                    "abc",
                    "--percent",
                    "5",
                    "--duration",
                    "1m",
                ],
                ErrorKind::MissingRequiredArgument,
                "--pod",
            ),
            (
                &["loss", "--pid", "1", "--duration", "1m"],
                ErrorKind::MissingRequiredArgument,
                "--percent",
            ),
            (&["revert"], ErrorKind::MissingRequiredArgument, "--all"),
            (
                &["revert", "x", "--all"],
                ErrorKind::ArgumentConflict,
                "--all",
            ),
            (
                &["list", "--output", "yaml"],
                ErrorKind::InvalidValue,
                "--output",
            ),
        ];
        for (args, kind, flag) in cases {
            let err = parse(args).unwrap_err();
            assert_eq!(err.kind(), *kind, "{args:?}: {err}");
            assert!(err.to_string().contains(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn port_with_icmp_is_rejected_after_parsing() {
        let cli = parse(&[
            "loss",
            "--pid",
            "1",
            "--percent",
            "5",
            "--duration",
            "1m",
            "--protocol",
            "icmp",
            "--port",
            "80",
        ])
        .unwrap();
        let Command::Loss(loss) = cli.command else {
            panic!("not a loss command");
        };
        assert_eq!(loss.to_request(), Err(ArgsError::PortWithIcmp));
    }

    #[test]
    fn other_subcommands() {
        assert!(matches!(parse(&["list"]).unwrap().command, Command::List));
        assert!(matches!(parse(&["caps"]).unwrap().command, Command::Caps));
        assert!(matches!(
            parse(&["get", "db-loss"]).unwrap().command,
            Command::Get { id } if id == "db-loss"
        ));
        assert!(matches!(
            parse(&["revert", "db-loss"]).unwrap().command,
            Command::Revert(RevertArgs { id: Some(id), all: false }) if id == "db-loss"
        ));
        assert!(matches!(
            parse(&["revert", "--all"]).unwrap().command,
            Command::Revert(RevertArgs {
                id: None,
                all: true
            })
        ));
    }

    #[test]
    fn syscall_flags_build_the_request() {
        let cli = parse(&[
            "syscall",
            "--cgroup",
            "app",
            "--op",
            "connect",
            "--errno",
            "ECONNREFUSED",
            "--percent",
            "50",
            "--duration",
            "2m",
            "--protocol",
            "tcp",
            "--addr",
            "10.0.0.5",
            "--port",
            "5432",
            "--id",
            "db-refuse",
        ])
        .unwrap();
        let Command::Syscall(sys) = cli.command else {
            panic!("syscall")
        };
        let spec = sys.to_request().unwrap().spec.unwrap();
        assert_eq!(spec.id, "db-refuse");
        let Some(pb::fault_spec::Kind::Syscall(f)) = spec.kind else {
            panic!("syscall kind")
        };
        assert_eq!(f.operation(), pb::SyscallOperation::Connect);
        assert_eq!(
            (f.errno.as_str(), f.probability_ppm),
            ("ECONNREFUSED", 500_000)
        );
        let filter = f.filter.unwrap();
        assert_eq!(filter.remote_cidr, "10.0.0.5/32");
        // A single port travels as (port, 0), as the proto documents.
        assert_eq!((filter.remote_port_min, filter.remote_port_max), (5432, 0));
        assert!(
            parse(&[
                "syscall",
                "--cgroup",
                "a",
                "--op",
                "chmod",
                "--errno",
                "EIO",
                "--percent",
                "1",
                "--duration",
                "1s"
            ])
            .is_err()
        );
    }

    #[test]
    fn latency_and_bandwidth_commands() {
        let cli = parse(&[
            "latency",
            "--cgroup",
            "app",
            "--delay",
            "100ms",
            "--jitter",
            "10ms",
            "--distribution",
            "normal",
            "--correlation",
            "25",
            "--duration",
            "1m",
            "--id",
            "slow",
        ])
        .unwrap();
        let Command::Latency(l) = cli.command else {
            panic!("latency")
        };
        let req = l.to_request().unwrap();
        let Some(pb::fault_spec::Kind::Latency(lat)) = req.spec.unwrap().kind else {
            panic!("latency kind")
        };
        assert_eq!(
            lat.delay,
            Some(prost_types::Duration {
                seconds: 0,
                nanos: 100_000_000
            })
        );
        assert_eq!(lat.distribution(), pb::Distribution::Normal);
        assert!((lat.correlation_percent - 25.0).abs() < 1e-9);
        assert_eq!(lat.direction(), pb::Direction::Egress);
        let dir = |flags: &[&str]| {
            let mut args = vec![
                "latency",
                "--cgroup",
                "app",
                "--delay",
                "1ms",
                "--duration",
                "1m",
            ];
            args.extend_from_slice(flags);
            let Command::Latency(l) = parse(&args).unwrap().command else {
                panic!("latency")
            };
            let Some(pb::fault_spec::Kind::Latency(lat)) =
                l.to_request().unwrap().spec.unwrap().kind
            else {
                panic!("latency kind")
            };
            lat.direction()
        };
        assert_eq!(dir(&["--egress"]), pb::Direction::Egress);
        assert_eq!(dir(&["--ingress"]), pb::Direction::Ingress);
        assert_eq!(dir(&["--egress", "--ingress"]), pb::Direction::Both);

        let cli = parse(&[
            "bandwidth",
            "--pid",
            "7",
            "--rate",
            "10mbit",
            "--duration",
            "30s",
        ])
        .unwrap();
        let Command::Bandwidth(b) = cli.command else {
            panic!("bandwidth")
        };
        let req = b.to_request().unwrap();
        let Some(pb::fault_spec::Kind::Bandwidth(bw)) = req.spec.unwrap().kind else {
            panic!("bandwidth kind")
        };
        assert_eq!(bw.rate_bps, 10_000_000);
    }

    #[test]
    fn rates_parse_like_tc() {
        assert_eq!(parse_rate("10mbit"), Ok(10_000_000));
        assert_eq!(parse_rate("1.5Mbit"), Ok(1_500_000));
        assert_eq!(parse_rate("100kbps"), Ok(800_000));
        assert_eq!(parse_rate("8000"), Ok(8000));
        assert!(parse_rate("10 furlongs").is_err());
        assert!(parse_rate("0").is_err());
        assert!(parse_correlation("101").is_err());
        assert_eq!(parse_correlation("25%"), Ok(25.0));
    }
}
