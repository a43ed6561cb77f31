//! Faults, as the agent reports them: their JSON views and the table.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use faultd_proto::agent::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{Align, millis, rfc3339, system_time, table};
use crate::parse::{PortRange, format_duration, format_ppm};

/// One fault, as `-o json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultView {
    pub id: String,
    pub state: StateView,
    /// The target as requested; `None` if the agent sent none.
    pub target: Option<TargetView>,
    /// The cgroup the agent resolved the target to.
    pub resolved: Option<ResolvedView>,
    /// What the fault does; `None` for a kind this faultctl does not know.
    pub fault: Option<KindView>,
    pub duration_ms: Option<u64>,
    pub applied_at: Option<String>,
    pub deadline: Option<String>,
    /// Time left before the deadline, for active faults.
    pub remaining_ms: Option<u64>,
    pub counters: CountersView,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateView {
    Unspecified,
    Active,
    Expired,
    Reverted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TargetView {
    Cgroup {
        path: String,
    },
    Pid {
        pid: u32,
    },
    SystemdUnit {
        unit: String,
    },
    Pod {
        uid: String,
        container_id: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedView {
    pub cgroup_path: String,
    pub cgroup_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KindView {
    Loss(LossView),
    Syscall(SyscallView),
    Latency(LatencyView),
    Bandwidth(BandwidthView),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyView {
    pub delay_us: u64,
    pub jitter_us: u64,
    /// "uniform", "normal", "pareto" or "paretonormal".
    pub distribution: String,
    /// Jitter correlation in parts per million (250000 = 25%).
    pub correlation_ppm: u32,
    /// Direction and filter, as for loss (its probability is unused: 1000000).
    pub packets: LossView,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BandwidthView {
    pub rate_bps: u64,
    /// Direction and filter, as for loss (its probability is unused: 1000000).
    pub packets: LossView,
}

fn packets_view(direction: i32, filter: Option<&pb::PacketFilter>) -> LossView {
    LossView::from(&pb::LossFault {
        probability_ppm: 1_000_000,
        direction,
        filter: filter.cloned(),
    })
}

fn duration_us(d: Option<prost_types::Duration>) -> u64 {
    d.and_then(|d| Duration::try_from(d).ok())
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn format_us(us: u64) -> String {
    if us.is_multiple_of(1_000_000) {
        format!("{}s", us / 1_000_000)
    } else if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

impl From<&pb::LatencyFault> for LatencyView {
    fn from(l: &pb::LatencyFault) -> Self {
        Self {
            delay_us: duration_us(l.delay),
            jitter_us: duration_us(l.jitter),
            distribution: match l.distribution() {
                pb::Distribution::Unspecified | pb::Distribution::Uniform => "uniform",
                pb::Distribution::Normal => "normal",
                pb::Distribution::Pareto => "pareto",
                pb::Distribution::Paretonormal => "paretonormal",
            }
            .to_owned(),
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "the agent keeps it within 0..=100"
            )]
            correlation_ppm: (l.correlation_percent * 10_000.0).round() as u32,
            packets: packets_view(l.direction, l.filter.as_ref()),
        }
    }
}

impl LatencyView {
    /// The DETAILS column: "100ms +-10ms normal corr 25% egress udp dst ...".
    pub fn details(&self) -> String {
        let mut out = format_us(self.delay_us);
        if self.jitter_us > 0 {
            let _ = write!(
                out,
                " +-{} {}",
                format_us(self.jitter_us),
                self.distribution
            );
        }
        if self.correlation_ppm > 0 {
            let _ = write!(out, " corr {}%", format_ppm(self.correlation_ppm));
        }
        // The loss details without their leading "100%".
        let packets = self.packets.details();
        out.push_str(packets.trim_start_matches("100%"));
        out
    }
}

impl BandwidthView {
    /// The DETAILS column: "10mbit egress ...".
    pub fn details(&self) -> String {
        let rate = self.rate_bps;
        let mut out = if rate.is_multiple_of(1_000_000) {
            format!("{}mbit", rate / 1_000_000)
        } else if rate.is_multiple_of(1000) {
            format!("{}kbit", rate / 1000)
        } else {
            format!("{rate}bit")
        };
        out.push_str(self.packets.details().trim_start_matches("100%"));
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyscallView {
    /// "connect", "bind", "sendmsg" or "socket".
    pub operation: String,
    pub errno: String,
    /// Failure probability in parts per million.
    pub probability_ppm: u32,
    pub protocol: ProtocolView,
    /// Address filter; `None` matches every address.
    pub addr_cidr: Option<String>,
    pub ports: Option<PortsView>,
    /// Directory the fault is limited to (file operations).
    pub path_prefix: Option<String>,
}

impl From<&pb::SyscallFault> for SyscallView {
    fn from(sys: &pb::SyscallFault) -> Self {
        let filter = sys.filter.clone().unwrap_or_default();
        Self {
            operation: match sys.operation() {
                pb::SyscallOperation::Unspecified => "unspecified",
                pb::SyscallOperation::Connect => "connect",
                pb::SyscallOperation::Bind => "bind",
                pb::SyscallOperation::Sendmsg => "sendmsg",
                pb::SyscallOperation::Socket => "socket",
                pb::SyscallOperation::Open => "open",
                pb::SyscallOperation::Read => "read",
                pb::SyscallOperation::Write => "write",
                pb::SyscallOperation::Mkdir => "mkdir",
                pb::SyscallOperation::Unlink => "unlink",
                pb::SyscallOperation::Rename => "rename",
                pb::SyscallOperation::Execve => "execve",
                pb::SyscallOperation::Accept => "accept",
                pb::SyscallOperation::Recvmsg => "recvmsg",
            }
            .to_owned(),
            errno: sys.errno.clone(),
            probability_ppm: sys.probability_ppm,
            protocol: protocol_view(filter.protocol()),
            addr_cidr: Some(filter.remote_cidr).filter(|c| !c.is_empty()),
            ports: PortRange::from_proto(filter.remote_port_min, filter.remote_port_max).map(|r| {
                PortsView {
                    min: r.min,
                    max: r.max,
                }
            }),
            path_prefix: Some(sys.path_prefix.clone()).filter(|p| !p.is_empty()),
        }
    }
}

impl SyscallView {
    /// The DETAILS column: "50% connect ECONNREFUSED tcp to 10.0.0.0/8 port 5432".
    pub fn details(&self) -> String {
        let mut out = format!(
            "{}% {} {}",
            format_ppm(self.probability_ppm),
            self.operation,
            self.errno
        );
        match self.protocol {
            ProtocolView::Any => {}
            ProtocolView::Tcp => out.push_str(" tcp"),
            ProtocolView::Udp => out.push_str(" udp"),
            ProtocolView::Icmp => out.push_str(" icmp"),
        }
        if let Some(cidr) = &self.addr_cidr {
            let _ = write!(out, " addr {cidr}");
        }
        if let Some(p) = self.ports {
            let _ = write!(
                out,
                " port {}",
                PortRange {
                    min: p.min,
                    max: p.max
                }
            );
        }
        out
    }
}

fn protocol_view(p: pb::Protocol) -> ProtocolView {
    match p {
        pb::Protocol::Any => ProtocolView::Any,
        pb::Protocol::Tcp => ProtocolView::Tcp,
        pb::Protocol::Udp => ProtocolView::Udp,
        pb::Protocol::Icmp => ProtocolView::Icmp,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossView {
    /// Drop probability in parts per million (300000 = 30%).
    pub probability_ppm: u32,
    pub direction: DirectionView,
    pub protocol: ProtocolView,
    /// Remote CIDR; `None` matches every address.
    pub remote_cidr: Option<String>,
    /// Inclusive remote port range; `None` matches every port.
    pub remote_ports: Option<PortsView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectionView {
    Unspecified,
    Egress,
    Ingress,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolView {
    Any,
    Tcp,
    Udp,
    Icmp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortsView {
    pub min: u16,
    pub max: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersView {
    pub matched: u64,
    /// `Counters.injected`: packets dropped.
    pub dropped: u64,
}

impl FaultView {
    /// Converts the agent's message; `now` is the reference for
    /// `remaining_ms` (passed in so tests are deterministic).
    pub fn new(fault: &pb::Fault, now: SystemTime) -> Self {
        let spec = fault.spec.clone().unwrap_or_default();
        let state = match fault.state() {
            pb::FaultState::Unspecified => StateView::Unspecified,
            pb::FaultState::Active => StateView::Active,
            pb::FaultState::Expired => StateView::Expired,
            pb::FaultState::Reverted => StateView::Reverted,
        };
        let deadline = fault.deadline.and_then(system_time);
        let remaining_ms = match (state, deadline) {
            (StateView::Active, Some(deadline)) => Some(millis(
                deadline.duration_since(now).unwrap_or(Duration::ZERO),
            )),
            _ => None,
        };
        let counters = fault.counters.unwrap_or_default();
        Self {
            id: spec.id,
            state,
            target: spec.target.and_then(|t| t.kind).map(TargetView::from),
            resolved: fault.target.as_ref().map(|t| ResolvedView {
                cgroup_path: t.cgroup_path.clone(),
                cgroup_id: t.cgroup_id,
            }),
            fault: spec.kind.map(|kind| match kind {
                pb::fault_spec::Kind::Loss(loss) => KindView::Loss(LossView::from(&loss)),
                pb::fault_spec::Kind::Syscall(sys) => KindView::Syscall(SyscallView::from(&sys)),
                pb::fault_spec::Kind::Latency(l) => KindView::Latency(LatencyView::from(&l)),
                pb::fault_spec::Kind::Bandwidth(b) => KindView::Bandwidth(BandwidthView {
                    rate_bps: b.rate_bps,
                    packets: packets_view(b.direction, b.filter.as_ref()),
                }),
            }),
            duration_ms: spec
                .duration
                .and_then(|d| Duration::try_from(d).ok())
                .map(millis),
            applied_at: fault.applied_at.and_then(system_time).map(rfc3339),
            deadline: deadline.map(rfc3339),
            remaining_ms,
            counters: CountersView {
                matched: counters.matched,
                dropped: counters.injected,
            },
        }
    }
}

impl From<pb::target::Kind> for TargetView {
    fn from(kind: pb::target::Kind) -> Self {
        match kind {
            pb::target::Kind::CgroupPath(path) => Self::Cgroup { path },
            pb::target::Kind::Pid(pid) => Self::Pid { pid },
            pb::target::Kind::SystemdUnit(unit) => Self::SystemdUnit { unit },
            pb::target::Kind::Pod(pod) => Self::Pod {
                uid: pod.uid,
                container_id: Some(pod.container_id).filter(|c| !c.is_empty()),
            },
        }
    }
}

impl From<&pb::LossFault> for LossView {
    fn from(loss: &pb::LossFault) -> Self {
        let filter = loss.filter.clone().unwrap_or_default();
        Self {
            probability_ppm: loss.probability_ppm,
            direction: match loss.direction() {
                pb::Direction::Unspecified => DirectionView::Unspecified,
                pb::Direction::Egress => DirectionView::Egress,
                pb::Direction::Ingress => DirectionView::Ingress,
                pb::Direction::Both => DirectionView::Both,
            },
            protocol: protocol_view(filter.protocol()),
            remote_cidr: Some(filter.remote_cidr).filter(|c| !c.is_empty()),
            remote_ports: PortRange::from_proto(filter.remote_port_min, filter.remote_port_max)
                .map(|r| PortsView {
                    min: r.min,
                    max: r.max,
                }),
        }
    }
}

impl StateView {
    fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unknown",
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Reverted => "reverted",
        }
    }
}

impl TargetView {
    /// Short form for the TARGET column: `unit:nginx.service`.
    pub fn short(&self) -> String {
        match self {
            Self::Cgroup { path } => format!("cgroup:{path}"),
            Self::Pid { pid } => format!("pid:{pid}"),
            Self::SystemdUnit { unit } => format!("unit:{unit}"),
            Self::Pod {
                uid,
                container_id: None,
            } => format!("pod:{uid}"),
            Self::Pod {
                uid,
                container_id: Some(c),
            } => format!("pod:{uid}/{c}"),
        }
    }
}

impl LossView {
    /// The DETAILS column: "30% egress udp dst 10.0.0.0/8 port 5432".
    pub fn details(&self) -> String {
        let mut out = format!("{}%", format_ppm(self.probability_ppm));
        let (direction, remote) = match self.direction {
            DirectionView::Egress => ("egress", "dst"),
            DirectionView::Ingress => ("ingress", "src"),
            DirectionView::Both => ("both", "remote"),
            DirectionView::Unspecified => ("direction?", "remote"),
        };
        out.push(' ');
        out.push_str(direction);
        match self.protocol {
            ProtocolView::Any => {}
            ProtocolView::Tcp => out.push_str(" tcp"),
            ProtocolView::Udp => out.push_str(" udp"),
            ProtocolView::Icmp => out.push_str(" icmp"),
        }
        if let Some(cidr) = &self.remote_cidr {
            let _ = write!(out, " {remote} {cidr}");
        }
        if let Some(p) = self.remote_ports {
            let range = PortRange {
                min: p.min,
                max: p.max,
            };
            let _ = write!(out, " port {range}");
        }
        out
    }
}

/// The fault table: ID, KIND, TARGET, STATE, REMAINING, MATCHED, DROPPED, DETAILS.
pub fn fault_table(faults: &[FaultView]) -> String {
    use Align::{Left, Right};
    let headers = [
        ("ID", Left),
        ("KIND", Left),
        ("TARGET", Left),
        ("STATE", Left),
        ("REMAINING", Right),
        ("MATCHED", Right),
        ("DROPPED", Right),
        ("DETAILS", Left),
    ];
    let rows: Vec<Vec<String>> = faults
        .iter()
        .map(|f| {
            let (kind, details) = match &f.fault {
                Some(KindView::Loss(loss)) => ("loss", loss.details()),
                Some(KindView::Syscall(sys)) => ("syscall", sys.details()),
                Some(KindView::Latency(l)) => ("latency", l.details()),
                Some(KindView::Bandwidth(b)) => ("bandwidth", b.details()),
                None => ("unknown", String::new()),
            };
            vec![
                f.id.clone(),
                kind.to_owned(),
                f.target
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), TargetView::short),
                f.state.as_str().to_owned(),
                f.remaining_ms.map_or_else(
                    || "-".to_owned(),
                    |ms| format_duration(Duration::from_millis(ms)),
                ),
                f.counters.matched.to_string(),
                f.counters.dropped.to_string(),
                details,
            ]
        })
        .collect();
    table(&headers, &rows)
}
