//! What faultctl prints: serde views of the agent's messages (the JSON
//! output), and aligned tables built from them.
//!
//! The views are faultctl's own types, not serde derives on `faultd-proto`:
//! the JSON shape is a CLI interface and should not change with the wire
//! format. Durations are whole milliseconds and timestamps RFC 3339 UTC, so
//! scripts need no protobuf knowledge.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faultd_proto::agent::v1 as pb;
use serde::{Deserialize, Serialize};

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

/// `GetCapabilities`, as `-o json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilitiesView {
    pub kernel_release: String,
    pub agent_version: String,
    pub cgroup2_mount: String,
    pub features: Vec<FeatureView>,
    pub programs: Vec<KernelObjectView>,
    pub maps: Vec<KernelObjectView>,
    pub limits: Option<LimitsView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureView {
    pub name: String,
    pub available: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelObjectView {
    pub name: String,
    pub id: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsView {
    pub max_duration_ms: Option<u64>,
    pub max_faults: u32,
    pub max_rules_per_cgroup: u32,
}

impl From<&pb::Capabilities> for CapabilitiesView {
    fn from(c: &pb::Capabilities) -> Self {
        let objects = |v: &[pb::KernelObject]| {
            v.iter()
                .map(|o| KernelObjectView {
                    name: o.name.clone(),
                    id: o.id,
                })
                .collect()
        };
        Self {
            kernel_release: c.kernel_release.clone(),
            agent_version: c.agent_version.clone(),
            cgroup2_mount: c.cgroup2_mount.clone(),
            features: c
                .features
                .iter()
                .map(|f| FeatureView {
                    name: f.name.clone(),
                    available: f.available,
                    detail: f.detail.clone(),
                })
                .collect(),
            programs: objects(&c.programs),
            maps: objects(&c.maps),
            limits: c.limits.map(|l| LimitsView {
                max_duration_ms: l
                    .max_duration
                    .and_then(|d| Duration::try_from(d).ok())
                    .map(millis),
                max_faults: l.max_faults,
                max_rules_per_cgroup: l.max_rules_per_cgroup,
            }),
        }
    }
}

/// The human form of `faultctl caps`: a header block, then one table each
/// for features, programs and maps.
pub fn capabilities_table(c: &CapabilitiesView) -> String {
    use Align::{Left, Right};
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    let limits = c.limits.map_or_else(
        || "-".to_owned(),
        |l| {
            let max = l.max_duration_ms.map_or_else(
                || "-".to_owned(),
                |ms| format_duration(Duration::from_millis(ms)),
            );
            format!(
                "max duration {max}, max faults {}, max rules per cgroup {}",
                l.max_faults, l.max_rules_per_cgroup
            )
        },
    );
    let header: Vec<Vec<String>> = [
        ("kernel", dash(&c.kernel_release)),
        ("agent", dash(&c.agent_version)),
        ("cgroup2", dash(&c.cgroup2_mount)),
        ("limits", limits),
    ]
    .into_iter()
    .map(|(k, v)| vec![format!("{k}:"), v])
    .collect();
    let mut out = table_rows(&[Left, Left], &header);

    out.push('\n');
    let features: Vec<Vec<String>> = c
        .features
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                if f.available { "yes" } else { "no" }.to_owned(),
                f.detail.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[("FEATURE", Left), ("AVAILABLE", Left), ("DETAIL", Left)],
        &features,
    ));
    for (title, objects) in [("PROGRAM", &c.programs), ("MAP", &c.maps)] {
        out.push('\n');
        let rows: Vec<Vec<String>> = objects
            .iter()
            .map(|o| vec![o.name.clone(), o.id.to_string()])
            .collect();
        out.push_str(&table(&[(title, Left), ("ID", Right)], &rows));
    }
    out
}

/// `RevertFault`, as `-o json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevertView {
    pub id: String,
    pub existed: bool,
    pub fault: Option<FaultView>,
}

/// `RevertAll`, as `-o json` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevertAllView {
    pub reverted: u32,
}

/// Pretty JSON with a trailing newline.
pub fn json<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    let mut s = serde_json::to_string_pretty(value)?;
    s.push('\n');
    Ok(s)
}

#[derive(Debug, Clone, Copy)]
enum Align {
    Left,
    Right,
}

fn table(headers: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let aligns: Vec<Align> = headers.iter().map(|(_, a)| *a).collect();
    let mut all = Vec::with_capacity(rows.len() + 1);
    all.push(headers.iter().map(|(h, _)| (*h).to_owned()).collect());
    all.extend_from_slice(rows);
    table_rows(&aligns, &all)
}

/// Pads each column to its widest cell, two spaces apart, with no trailing
/// whitespace. Widths count chars: ids, paths and CIDRs are ASCII in practice.
fn table_rows(aligns: &[Align], rows: &[Vec<String>]) -> String {
    let mut widths = vec![0; aligns.len()];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, ((cell, w), align)) in row.iter().zip(&widths).zip(aligns).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let _ = match align {
                Align::Left => write!(line, "{cell:<w$}"),
                Align::Right => write!(line, "{cell:>w$}"),
            };
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn system_time(ts: prost_types::Timestamp) -> Option<SystemTime> {
    SystemTime::try_from(ts).ok()
}

/// RFC 3339 in UTC with second precision, e.g. "2025-01-31T12:00:00Z".
/// Times before 1970 do not occur here and print as the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date; Howard Hinnant's
/// `civil_from_days` (http://howardhinnant.github.io/date_algorithms.html),
/// restricted to non-negative day counts.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use super::*;

    const APPLIED: i64 = 1_750_000_000; // 2025-06-15T15:06:40Z

    fn sample_fault() -> pb::Fault {
        pb::Fault {
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
            target: Some(pb::ResolvedTarget {
                cgroup_path: "system.slice/postgres.service".into(),
                cgroup_id: 4242,
            }),
            state: pb::FaultState::Active.into(),
            applied_at: Some(prost_types::Timestamp {
                seconds: APPLIED,
                nanos: 0,
            }),
            deadline: Some(prost_types::Timestamp {
                seconds: APPLIED + 5_400,
                nanos: 0,
            }),
            counters: Some(pb::Counters {
                matched: 123_456,
                injected: 37_037,
            }),
            backend: "cgroup_skb".into(),
            ..Default::default()
        }
    }

    fn at(secs: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    }

    #[test]
    fn view_of_a_fault() {
        let view = FaultView::new(&sample_fault(), at(APPLIED + 600));
        assert_eq!(view.id, "db-loss");
        assert_eq!(view.state, StateView::Active);
        assert_eq!(
            view.target,
            Some(TargetView::SystemdUnit {
                unit: "postgres.service".into()
            })
        );
        assert_eq!(view.duration_ms, Some(5_400_000));
        assert_eq!(view.remaining_ms, Some(4_800_000));
        assert_eq!(view.applied_at.as_deref(), Some("2025-06-15T15:06:40Z"));
        assert_eq!(view.deadline.as_deref(), Some("2025-06-15T16:36:40Z"));
        assert_eq!(
            view.counters,
            CountersView {
                matched: 123_456,
                dropped: 37_037
            }
        );
        let Some(KindView::Loss(loss)) = &view.fault else {
            unreachable!("sample is a loss fault");
        };
        assert_eq!(
            loss.remote_ports,
            Some(PortsView {
                min: 5432,
                max: 5432
            })
        );
    }

    #[test]
    fn remaining_only_for_active_faults() {
        let mut fault = sample_fault();
        // Past the deadline but still reported active: nothing negative.
        let view = FaultView::new(&fault, at(APPLIED + 10_000));
        assert_eq!(view.remaining_ms, Some(0));
        fault.state = pb::FaultState::Reverted.into();
        let view = FaultView::new(&fault, at(APPLIED + 60));
        assert_eq!(view.remaining_ms, None);
    }

    #[test]
    fn table_of_a_fault() {
        let view = FaultView::new(&sample_fault(), at(APPLIED + 600));
        let out = fault_table(&[view]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        for header in [
            "ID",
            "KIND",
            "TARGET",
            "STATE",
            "REMAINING",
            "MATCHED",
            "DROPPED",
            "DETAILS",
        ] {
            assert!(lines[0].contains(header), "{out}");
        }
        for cell in [
            "db-loss",
            "loss",
            "unit:postgres.service",
            "active",
            "1h20m",
            "123456",
            "37037",
            "30% egress udp dst 10.0.0.0/8 port 5432",
        ] {
            assert!(lines[1].contains(cell), "missing {cell:?} in\n{out}");
        }
        // Columns line up: each header starts where its cell starts (left
        // aligned) or ends where it ends (right aligned).
        assert_eq!(lines[0].find("DETAILS"), lines[1].find("30% egress"));
        assert_eq!(lines[0].find("TARGET"), lines[1].find("unit:"));
        let end = |line: &str, s: &str| line.find(s).map(|i| i + s.len());
        assert_eq!(end(lines[0], "MATCHED"), end(lines[1], "123456"));
        assert!(
            out.lines().all(|l| l == l.trim_end()),
            "trailing spaces:\n{out}"
        );
    }

    #[test]
    fn details_variants() {
        let mut loss = LossView {
            probability_ppm: 5_000,
            direction: DirectionView::Both,
            protocol: ProtocolView::Any,
            remote_cidr: None,
            remote_ports: None,
        };
        assert_eq!(loss.details(), "0.5% both");
        loss.direction = DirectionView::Ingress;
        loss.protocol = ProtocolView::Tcp;
        loss.remote_cidr = Some("fd00::/8".into());
        loss.remote_ports = Some(PortsView {
            min: 8000,
            max: 8080,
        });
        assert_eq!(
            loss.details(),
            "0.5% ingress tcp src fd00::/8 port 8000-8080"
        );
    }

    #[test]
    fn pod_targets() {
        let whole = TargetView::from(pb::target::Kind::Pod(pb::KubernetesPod {
            uid: "u1".into(),
            container_id: String::new(),
        }));
        assert_eq!(whole.short(), "pod:u1");
        let one = TargetView::from(pb::target::Kind::Pod(pb::KubernetesPod {
            uid: "u1".into(),
            container_id: "abc".into(),
        }));
        assert_eq!(one.short(), "pod:u1/abc");
    }

    #[test]
    fn json_round_trip() {
        let view = FaultView::new(&sample_fault(), at(APPLIED + 600));
        let text = json(&view).unwrap();
        let back: FaultView = serde_json::from_str(&text).unwrap();
        assert_eq!(back, view);
        // The shape scripts rely on.
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["id"], "db-loss");
        assert_eq!(v["state"], "active");
        assert_eq!(v["target"]["type"], "systemd_unit");
        assert_eq!(v["fault"]["kind"], "loss");
        assert_eq!(v["fault"]["probability_ppm"], 300_000);
        assert_eq!(v["fault"]["direction"], "egress");
        assert_eq!(v["counters"]["dropped"], 37_037);
        assert!(text.contains("\n  \"id\""), "not pretty:\n{text}");

        let list = vec![view.clone(), view];
        let back: Vec<FaultView> = serde_json::from_str(&json(&list).unwrap()).unwrap();
        assert_eq!(back, list);
    }

    #[test]
    fn empty_fault_converts() {
        let view = FaultView::new(&pb::Fault::default(), at(APPLIED));
        assert_eq!(view.state, StateView::Unspecified);
        assert_eq!(view.target, None);
        assert_eq!(view.fault, None);
        let out = fault_table(std::slice::from_ref(&view));
        assert!(out.contains("unknown"), "{out}");
        let back: FaultView = serde_json::from_str(&json(&view).unwrap()).unwrap();
        assert_eq!(back, view);
    }

    #[test]
    fn capabilities() {
        let caps = pb::Capabilities {
            kernel_release: "6.8.0-45-generic".into(),
            agent_version: "0.1.0".into(),
            cgroup2_mount: "/sys/fs/cgroup".into(),
            features: vec![
                pb::Feature {
                    name: "cgroup_skb".into(),
                    available: true,
                    detail: "probed BPF_PROG_TYPE_CGROUP_SKB".into(),
                },
                pb::Feature {
                    name: "bpf_lsm".into(),
                    available: false,
                    detail: "bpf not in /sys/kernel/security/lsm".into(),
                },
            ],
            programs: vec![pb::KernelObject {
                name: "loss_egress".into(),
                id: 97,
            }],
            maps: vec![],
            limits: Some(pb::Limits {
                max_duration: Some(prost_types::Duration {
                    seconds: 3_600,
                    nanos: 0,
                }),
                max_faults: 64,
                max_rules_per_cgroup: 16,
                ..Default::default()
            }),
            qdiscs: Vec::new(),
            ..Default::default()
        };
        let view = CapabilitiesView::from(&caps);
        let out = capabilities_table(&view);
        for s in [
            "6.8.0-45-generic",
            "/sys/fs/cgroup",
            "max duration 1h, max faults 64, max rules per cgroup 16",
            "FEATURE",
            "AVAILABLE",
        ] {
            assert!(out.contains(s), "missing {s:?} in\n{out}");
        }
        let line = |name: &str| out.lines().find(|l| l.starts_with(name)).unwrap();
        assert!(line("cgroup_skb").contains("yes"), "{out}");
        assert!(line("bpf_lsm").contains("no"), "{out}");
        assert!(line("loss_egress").ends_with("97"), "{out}");
        let back: CapabilitiesView = serde_json::from_str(&json(&view).unwrap()).unwrap();
        assert_eq!(back, view);
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_709_251_199)), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(at(4_102_444_800)), "2100-01-01T00:00:00Z");
    }
}
