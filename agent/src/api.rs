//! Conversions between the wire types (`faultd.agent.v1`) and the domain,
//! and the one mapping from domain errors to gRPC status codes.
//!
//! Invalid input is rejected here, before anything touches the kernel, with a
//! message that names the field (as its protobuf path) and the rule.

use std::time::{Duration, SystemTime};

use faultd_proto::agent::v1 as pb;
use tonic::{Code, Status};

use crate::{
    datapath::DatapathError,
    fault::{
        BandwidthSpec, Direction, Distribution, ERRNOS, Errno, FaultKind, FaultSpec, IpCidr,
        LatencySpec, LossSpec, MAX_DELAY, MAX_JITTER, MIN_RATE_BPS, PPM, PacketFilter, PathPrefix,
        Protocol, SyscallOp, SyscallSpec,
    },
    manager::{FaultState, FaultView, ManagerError},
    qdisc::QdiscError,
    target::{TargetError, TargetSpec},
};

/// A request field that breaks a rule.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidField {
    InvalidField {
        field,
        reason: reason.into(),
    }
}

pub const MAX_ID_LEN: usize = 128;

pub fn validate_id(field: &'static str, id: &str) -> Result<(), InvalidField> {
    if id.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(invalid(
            field,
            format!("must be at most {MAX_ID_LEN} characters"),
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._:-".contains(*c)))
    {
        return Err(invalid(
            field,
            format!("character {c:?} is not allowed; use [A-Za-z0-9._:-]"),
        ));
    }
    Ok(())
}

impl TryFrom<pb::FaultSpec> for FaultSpec {
    type Error = InvalidField;

    fn try_from(spec: pb::FaultSpec) -> Result<Self, Self::Error> {
        validate_id("spec.id", &spec.id)?;
        let target = spec
            .target
            .ok_or_else(|| invalid("spec.target", "is required"))?;
        let target = target_from_pb(target)?;
        let duration = spec
            .duration
            .ok_or_else(|| invalid("spec.duration", "is required: every fault ends on its own"))?;
        if duration.seconds < 0
            || duration.nanos < 0
            || (duration.seconds == 0 && duration.nanos == 0)
        {
            return Err(invalid("spec.duration", "must be greater than zero"));
        }
        let duration = Duration::try_from(duration)
            .map_err(|e| invalid("spec.duration", format!("is not a valid duration: {e}")))?;
        let kind = match spec
            .kind
            .ok_or_else(|| invalid("spec.kind", "is required (e.g. loss)"))?
        {
            pb::fault_spec::Kind::Loss(loss) => FaultKind::Loss(loss_from_pb(loss)?),
            pb::fault_spec::Kind::Syscall(sys) => FaultKind::Syscall(syscall_from_pb(sys)?),
            pb::fault_spec::Kind::Latency(l) => FaultKind::Latency(latency_from_pb(l)?),
            pb::fault_spec::Kind::Bandwidth(b) => FaultKind::Bandwidth(bandwidth_from_pb(b)?),
        };
        Ok(Self {
            id: spec.id,
            target,
            duration,
            kind,
        })
    }
}

fn target_from_pb(target: pb::Target) -> Result<TargetSpec, InvalidField> {
    use pb::target::Kind;
    match target.kind.ok_or_else(|| {
        invalid(
            "spec.target",
            "needs one of cgroup_path, pid, systemd_unit, pod",
        )
    })? {
        Kind::CgroupPath(p) => {
            if p.is_empty() {
                return Err(invalid(
                    "spec.target.cgroup_path",
                    "is empty; the root cgroup is \"/\"",
                ));
            }
            Ok(TargetSpec::CgroupPath(p))
        }
        Kind::Pid(0) => Err(invalid("spec.target.pid", "must be greater than zero")),
        Kind::Pid(pid) => Ok(TargetSpec::Pid(pid)),
        Kind::SystemdUnit(u) if u.is_empty() => {
            Err(invalid("spec.target.systemd_unit", "is empty"))
        }
        Kind::SystemdUnit(u) => Ok(TargetSpec::SystemdUnit(u)),
        Kind::Pod(pod) => {
            if pod.uid.is_empty() {
                return Err(invalid("spec.target.pod.uid", "is required"));
            }
            Ok(TargetSpec::Pod {
                uid: pod.uid,
                container_id: Some(pod.container_id).filter(|c| !c.is_empty()),
            })
        }
    }
}

fn loss_from_pb(loss: pb::LossFault) -> Result<LossSpec, InvalidField> {
    if loss.probability_ppm == 0 || loss.probability_ppm > PPM {
        return Err(invalid(
            "spec.loss.probability_ppm",
            format!(
                "must be in 1..={PPM} parts per million (100%), got {}",
                loss.probability_ppm
            ),
        ));
    }
    let direction = direction_from_pb(loss.direction, "spec.loss.direction")?;
    let filter = filter_from_pb(loss.filter.unwrap_or_default(), &LOSS_FILTER)?;
    Ok(LossSpec {
        probability_ppm: loss.probability_ppm,
        direction,
        filter,
    })
}

fn pb_duration(
    d: Option<prost_types::Duration>,
    field: &'static str,
) -> Result<Duration, InvalidField> {
    let Some(d) = d else {
        return Ok(Duration::ZERO);
    };
    if d.seconds < 0 || d.nanos < 0 {
        return Err(invalid(field, "must not be negative"));
    }
    Duration::try_from(d).map_err(|e| invalid(field, format!("is not a valid duration: {e}")))
}

/// For latency and bandwidth an unspecified direction means egress, the
/// direction they are built for.
fn shaping_direction(value: i32, field: &'static str) -> Result<Direction, InvalidField> {
    if value == pb::Direction::Unspecified as i32 {
        return Ok(Direction::Egress);
    }
    direction_from_pb(value, field)
}

fn latency_from_pb(l: pb::LatencyFault) -> Result<LatencySpec, InvalidField> {
    if l.delay.is_none() {
        return Err(invalid("spec.latency.delay", "is required"));
    }
    let delay = pb_duration(l.delay, "spec.latency.delay")?;
    if delay < Duration::from_micros(1) || delay > MAX_DELAY {
        return Err(invalid(
            "spec.latency.delay",
            format!(
                "must be in 1us..={}, got {}",
                crate::duration::format(MAX_DELAY),
                crate::duration::format(delay)
            ),
        ));
    }
    let jitter = pb_duration(l.jitter, "spec.latency.jitter")?;
    if jitter > MAX_JITTER {
        return Err(invalid(
            "spec.latency.jitter",
            format!(
                "must be at most {}, got {}",
                crate::duration::format(MAX_JITTER),
                crate::duration::format(jitter)
            ),
        ));
    }
    let distribution = match pb::Distribution::try_from(l.distribution) {
        Ok(pb::Distribution::Unspecified | pb::Distribution::Uniform) => Distribution::Uniform,
        Ok(pb::Distribution::Normal) => Distribution::Normal,
        Ok(pb::Distribution::Pareto) => Distribution::Pareto,
        Ok(pb::Distribution::Paretonormal) => Distribution::ParetoNormal,
        Err(_) => {
            return Err(invalid(
                "spec.latency.distribution",
                format!("unknown distribution {}", l.distribution),
            ));
        }
    };
    if !(0.0..=100.0).contains(&l.correlation_percent) {
        return Err(invalid(
            "spec.latency.correlation_percent",
            format!("must be in 0..=100, got {}", l.correlation_percent),
        ));
    }
    if l.correlation_percent > 0.0 && jitter.is_zero() {
        return Err(invalid(
            "spec.latency.correlation_percent",
            "correlates jitter samples; set spec.latency.jitter too",
        ));
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "checked to lie in 0..=100 above"
    )]
    let correlation_ppm = (l.correlation_percent * 10_000.0).round() as u32;
    Ok(LatencySpec {
        delay,
        jitter,
        distribution,
        correlation_ppm,
        direction: shaping_direction(l.direction, "spec.latency.direction")?,
        filter: filter_from_pb(l.filter.unwrap_or_default(), &LATENCY_FILTER)?,
    })
}

fn bandwidth_from_pb(b: pb::BandwidthFault) -> Result<BandwidthSpec, InvalidField> {
    if b.rate_bps < MIN_RATE_BPS {
        return Err(invalid(
            "spec.bandwidth.rate_bps",
            format!("must be at least {MIN_RATE_BPS} bit/s, got {}", b.rate_bps),
        ));
    }
    Ok(BandwidthSpec {
        rate_bps: b.rate_bps,
        direction: shaping_direction(b.direction, "spec.bandwidth.direction")?,
        filter: filter_from_pb(b.filter.unwrap_or_default(), &BANDWIDTH_FILTER)?,
    })
}

fn syscall_from_pb(sys: pb::SyscallFault) -> Result<SyscallSpec, InvalidField> {
    let op = match pb::SyscallOperation::try_from(sys.operation) {
        Ok(pb::SyscallOperation::Connect) => SyscallOp::Connect,
        Ok(pb::SyscallOperation::Bind) => SyscallOp::Bind,
        Ok(pb::SyscallOperation::Sendmsg) => SyscallOp::Sendmsg,
        Ok(pb::SyscallOperation::Socket) => SyscallOp::Socket,
        Ok(pb::SyscallOperation::Open) => SyscallOp::Open,
        Ok(pb::SyscallOperation::Read) => SyscallOp::Read,
        Ok(pb::SyscallOperation::Write) => SyscallOp::Write,
        Ok(pb::SyscallOperation::Mkdir) => SyscallOp::Mkdir,
        Ok(pb::SyscallOperation::Unlink) => SyscallOp::Unlink,
        Ok(pb::SyscallOperation::Rename) => SyscallOp::Rename,
        Ok(pb::SyscallOperation::Execve) => SyscallOp::Execve,
        Ok(pb::SyscallOperation::Accept) => SyscallOp::Accept,
        Ok(pb::SyscallOperation::Recvmsg) => SyscallOp::Recvmsg,
        Ok(pb::SyscallOperation::Unspecified) => {
            return Err(invalid(
                "spec.syscall.operation",
                "is required: connect, bind, sendmsg, socket, open, read, write, mkdir, \
                 unlink, rename, execve, accept or recvmsg",
            ));
        }
        Err(_) => {
            return Err(invalid(
                "spec.syscall.operation",
                format!("unknown operation {}", sys.operation),
            ));
        }
    };
    let errno = Errno::parse(&sys.errno).ok_or_else(|| {
        let known: Vec<&str> = ERRNOS.iter().map(|e| e.name).collect();
        invalid(
            "spec.syscall.errno",
            format!("unknown errno {:?}; one of {}", sys.errno, known.join(", ")),
        )
    })?;
    if sys.probability_ppm == 0 || sys.probability_ppm > PPM {
        return Err(invalid(
            "spec.syscall.probability_ppm",
            format!(
                "must be in 1..={PPM} parts per million (100%), got {}",
                sys.probability_ppm
            ),
        ));
    }
    let filter = filter_from_pb(sys.filter.unwrap_or_default(), &SYSCALL_FILTER)?;
    if filter.protocol == Protocol::Icmp {
        return Err(invalid(
            SYSCALL_FILTER.protocol,
            format!("{} applies to tcp, udp or any", op.name()),
        ));
    }
    if op == SyscallOp::Socket && (filter.remote.is_some() || filter.remote_ports.is_some()) {
        return Err(invalid(
            SYSCALL_FILTER.cidr,
            "socket() has no address: only the protocol filter applies",
        ));
    }
    if op.is_lsm() && filter != PacketFilter::default() {
        return Err(invalid(
            "spec.syscall.filter",
            format!(
                "{} faults take no address, port or protocol filter",
                op.name()
            ),
        ));
    }
    if op == SyscallOp::Sendmsg && filter.protocol == Protocol::Tcp {
        return Err(invalid(
            SYSCALL_FILTER.protocol,
            "sendmsg faults apply to unconnected UDP sockets (the kernel's sendmsg hook)",
        ));
    }
    let path = if sys.path_prefix.is_empty() {
        None
    } else {
        if !matches!(op, SyscallOp::Open | SyscallOp::Read | SyscallOp::Write) {
            return Err(invalid(
                "spec.syscall.path_prefix",
                "applies to open, read and write only",
            ));
        }
        Some(
            PathPrefix::resolve(&sys.path_prefix)
                .map_err(|e| invalid("spec.syscall.path_prefix", e))?,
        )
    };
    Ok(SyscallSpec {
        op,
        errno,
        probability_ppm: sys.probability_ppm,
        filter,
        path,
    })
}

fn direction_from_pb(value: i32, field: &'static str) -> Result<Direction, InvalidField> {
    match pb::Direction::try_from(value) {
        // Unspecified means both directions, as documented in the proto.
        Ok(pb::Direction::Unspecified | pb::Direction::Both) => Ok(Direction::Both),
        Ok(pb::Direction::Egress) => Ok(Direction::Egress),
        Ok(pb::Direction::Ingress) => Ok(Direction::Ingress),
        Err(_) => Err(invalid(field, format!("unknown direction {value}"))),
    }
}

/// The field paths of one filter, for error messages.
struct FilterFields {
    protocol: &'static str,
    cidr: &'static str,
    ports: &'static str,
}

const LOSS_FILTER: FilterFields = FilterFields {
    protocol: "spec.loss.filter.protocol",
    cidr: "spec.loss.filter.remote_cidr",
    ports: "spec.loss.filter.remote_port_min",
};

const LATENCY_FILTER: FilterFields = FilterFields {
    protocol: "spec.latency.filter.protocol",
    cidr: "spec.latency.filter.remote_cidr",
    ports: "spec.latency.filter.remote_port_min",
};

const BANDWIDTH_FILTER: FilterFields = FilterFields {
    protocol: "spec.bandwidth.filter.protocol",
    cidr: "spec.bandwidth.filter.remote_cidr",
    ports: "spec.bandwidth.filter.remote_port_min",
};

const SYSCALL_FILTER: FilterFields = FilterFields {
    protocol: "spec.syscall.filter.protocol",
    cidr: "spec.syscall.filter.remote_cidr",
    ports: "spec.syscall.filter.remote_port_min",
};

fn filter_from_pb(
    f: pb::PacketFilter,
    fields: &FilterFields,
) -> Result<PacketFilter, InvalidField> {
    let protocol = match pb::Protocol::try_from(f.protocol) {
        Ok(pb::Protocol::Any) => Protocol::Any,
        Ok(pb::Protocol::Tcp) => Protocol::Tcp,
        Ok(pb::Protocol::Udp) => Protocol::Udp,
        Ok(pb::Protocol::Icmp) => Protocol::Icmp,
        Err(_) => {
            return Err(invalid(
                fields.protocol,
                format!("unknown protocol {}", f.protocol),
            ));
        }
    };
    let remote = if f.remote_cidr.is_empty() {
        None
    } else {
        Some(IpCidr::parse(&f.remote_cidr).map_err(|e| invalid(fields.cidr, e.to_string()))?)
    };
    let remote_ports = match (f.remote_port_min, f.remote_port_max) {
        (0, 0) => None,
        (min, max) => {
            let max = if max == 0 { min } else { max };
            if min > u32::from(u16::MAX) || max > u32::from(u16::MAX) {
                return Err(invalid(fields.ports, "ports must be at most 65535"));
            }
            if min > max {
                return Err(invalid(
                    fields.ports,
                    format!("remote_port_min {min} is above remote_port_max {max}"),
                ));
            }
            if protocol == Protocol::Icmp {
                return Err(invalid(
                    fields.ports,
                    "ICMP has no ports; use tcp, udp or any",
                ));
            }
            // Checked above: both fit in u16.
            Some(min as u16..=max as u16)
        }
    };
    Ok(PacketFilter {
        protocol,
        remote,
        remote_ports,
    })
}

pub fn spec_to_pb(spec: &FaultSpec) -> pb::FaultSpec {
    let target = match &spec.target {
        TargetSpec::CgroupPath(p) => pb::target::Kind::CgroupPath(p.clone()),
        TargetSpec::Pid(p) => pb::target::Kind::Pid(*p),
        TargetSpec::SystemdUnit(u) => pb::target::Kind::SystemdUnit(u.clone()),
        TargetSpec::Pod { uid, container_id } => pb::target::Kind::Pod(pb::KubernetesPod {
            uid: uid.clone(),
            container_id: container_id.clone().unwrap_or_default(),
        }),
    };
    let direction = |d: Direction| -> i32 {
        let d = match d {
            Direction::Egress => pb::Direction::Egress,
            Direction::Ingress => pb::Direction::Ingress,
            Direction::Both => pb::Direction::Both,
        };
        d as i32
    };
    let kind = match &spec.kind {
        FaultKind::Loss(l) => pb::fault_spec::Kind::Loss(pb::LossFault {
            probability_ppm: l.probability_ppm,
            direction: direction(l.direction),
            filter: Some(filter_to_pb(&l.filter)),
        }),
        FaultKind::Latency(l) => pb::fault_spec::Kind::Latency(pb::LatencyFault {
            delay: prost_types::Duration::try_from(l.delay).ok(),
            jitter: (!l.jitter.is_zero())
                .then(|| prost_types::Duration::try_from(l.jitter).ok())
                .flatten(),
            distribution: match l.distribution {
                Distribution::Uniform => pb::Distribution::Uniform,
                Distribution::Normal => pb::Distribution::Normal,
                Distribution::Pareto => pb::Distribution::Pareto,
                Distribution::ParetoNormal => pb::Distribution::Paretonormal,
            } as i32,
            correlation_percent: f64::from(l.correlation_ppm) / 10_000.0,
            direction: direction(l.direction),
            filter: Some(filter_to_pb(&l.filter)),
        }),
        FaultKind::Bandwidth(b) => pb::fault_spec::Kind::Bandwidth(pb::BandwidthFault {
            rate_bps: b.rate_bps,
            direction: direction(b.direction),
            filter: Some(filter_to_pb(&b.filter)),
        }),
        FaultKind::Syscall(sys) => pb::fault_spec::Kind::Syscall(pb::SyscallFault {
            operation: match sys.op {
                SyscallOp::Connect => pb::SyscallOperation::Connect,
                SyscallOp::Bind => pb::SyscallOperation::Bind,
                SyscallOp::Sendmsg => pb::SyscallOperation::Sendmsg,
                SyscallOp::Socket => pb::SyscallOperation::Socket,
                SyscallOp::Open => pb::SyscallOperation::Open,
                SyscallOp::Read => pb::SyscallOperation::Read,
                SyscallOp::Write => pb::SyscallOperation::Write,
                SyscallOp::Mkdir => pb::SyscallOperation::Mkdir,
                SyscallOp::Unlink => pb::SyscallOperation::Unlink,
                SyscallOp::Rename => pb::SyscallOperation::Rename,
                SyscallOp::Execve => pb::SyscallOperation::Execve,
                SyscallOp::Accept => pb::SyscallOperation::Accept,
                SyscallOp::Recvmsg => pb::SyscallOperation::Recvmsg,
            } as i32,
            errno: sys.errno.name.to_owned(),
            probability_ppm: sys.probability_ppm,
            filter: Some(filter_to_pb(&sys.filter)),
            path_prefix: sys
                .path
                .as_ref()
                .map(|p| p.path.clone())
                .unwrap_or_default(),
        }),
    };
    pb::FaultSpec {
        id: spec.id.clone(),
        target: Some(pb::Target { kind: Some(target) }),
        duration: prost_types::Duration::try_from(spec.duration).ok(),
        kind: Some(kind),
    }
}

fn filter_to_pb(f: &PacketFilter) -> pb::PacketFilter {
    pb::PacketFilter {
        protocol: match f.protocol {
            Protocol::Any => pb::Protocol::Any,
            Protocol::Tcp => pb::Protocol::Tcp,
            Protocol::Udp => pb::Protocol::Udp,
            Protocol::Icmp => pb::Protocol::Icmp,
        } as i32,
        remote_cidr: f.remote.map(|c| c.to_string()).unwrap_or_default(),
        remote_port_min: f.remote_ports.as_ref().map_or(0, |r| u32::from(*r.start())),
        remote_port_max: f.remote_ports.as_ref().map_or(0, |r| u32::from(*r.end())),
    }
}

pub fn fault_to_pb(v: &FaultView) -> pb::Fault {
    pb::Fault {
        spec: Some(spec_to_pb(&v.spec)),
        target: Some(pb::ResolvedTarget {
            cgroup_path: v.target.path.clone(),
            cgroup_id: v.target.id,
        }),
        state: match v.state {
            FaultState::Active => pb::FaultState::Active,
            FaultState::Expired => pb::FaultState::Expired,
            FaultState::Reverted => pb::FaultState::Reverted,
        } as i32,
        applied_at: Some(timestamp(v.applied_at)),
        deadline: Some(timestamp(v.deadline)),
        counters: Some(pb::Counters {
            matched: v.counters.matched,
            injected: v.counters.dropped,
        }),
        backend: v.backend.to_owned(),
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

/// The single mapping from domain errors to gRPC codes.
pub fn status(err: &ManagerError) -> Status {
    let code = match err {
        ManagerError::Invalid { .. } => Code::InvalidArgument,
        ManagerError::Target(t) => match t {
            TargetError::InvalidTarget { .. } => Code::InvalidArgument,
            TargetError::NotFound { .. } => Code::NotFound,
            TargetError::Ambiguous { .. } => Code::FailedPrecondition,
            TargetError::NoCgroup2 { .. } => Code::FailedPrecondition,
            TargetError::Io { .. } => Code::Internal,
        },
        ManagerError::Protected { .. } => Code::PermissionDenied,
        ManagerError::Capacity(_) => Code::ResourceExhausted,
        ManagerError::Precondition(_) => Code::FailedPrecondition,
        ManagerError::NotFound(_) => Code::NotFound,
        // A device whose qdisc cannot take fq is the node's state, not a
        // fault of the agent: the caller can fix it or pick another target.
        ManagerError::Kernel(DatapathError::Qdisc(QdiscError::Refused { .. })) => {
            Code::FailedPrecondition
        }
        // The tc ingress program did not load on this kernel.
        ManagerError::Kernel(DatapathError::Ingress(_)) => Code::FailedPrecondition,
        ManagerError::Kernel(_) => Code::Internal,
        ManagerError::ShuttingDown => Code::Unavailable,
    };
    Status::new(code, error_chain(err))
}

pub fn invalid_status(err: &InvalidField) -> Status {
    Status::invalid_argument(err.to_string())
}

/// The error and its sources, so an io::Error's text (e.g. "Permission
/// denied") reaches the caller.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss_spec(ppm: u32) -> pb::FaultSpec {
        pb::FaultSpec {
            id: "f1".into(),
            target: Some(pb::Target {
                kind: Some(pb::target::Kind::CgroupPath("app".into())),
            }),
            duration: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            kind: Some(pb::fault_spec::Kind::Loss(pb::LossFault {
                probability_ppm: ppm,
                direction: pb::Direction::Egress as i32,
                filter: None,
            })),
        }
    }

    fn field_of(spec: pb::FaultSpec) -> &'static str {
        FaultSpec::try_from(spec).expect_err("invalid").field
    }

    #[test]
    fn valid_spec_round_trips() {
        let mut pb_spec = loss_spec(300_000);
        if let Some(pb::fault_spec::Kind::Loss(l)) = &mut pb_spec.kind {
            l.filter = Some(pb::PacketFilter {
                protocol: pb::Protocol::Udp as i32,
                remote_cidr: "10.0.0.0/8".into(),
                remote_port_min: 5432,
                remote_port_max: 5433,
            });
        }
        let spec = FaultSpec::try_from(pb_spec.clone()).expect("valid");
        assert_eq!(spec_to_pb(&spec), pb_spec);
    }

    #[test]
    fn each_invalid_field_is_named() {
        let mut s = loss_spec(1);
        s.duration = None;
        assert_eq!(field_of(s), "spec.duration");
        let mut s = loss_spec(1);
        s.duration = Some(prost_types::Duration {
            seconds: 0,
            nanos: 0,
        });
        assert_eq!(field_of(s), "spec.duration");
        assert_eq!(field_of(loss_spec(1_000_001)), "spec.loss.probability_ppm");
        assert_eq!(field_of(loss_spec(0)), "spec.loss.probability_ppm");
        let mut s = loss_spec(1);
        s.id = "bad id".into();
        assert_eq!(field_of(s), "spec.id");
        let mut s = loss_spec(1);
        s.target = None;
        assert_eq!(field_of(s), "spec.target");
        let mut s = loss_spec(1);
        s.kind = None;
        assert_eq!(field_of(s), "spec.kind");
        let with_filter = |f: pb::PacketFilter| {
            let mut s = loss_spec(1);
            if let Some(pb::fault_spec::Kind::Loss(l)) = &mut s.kind {
                l.filter = Some(f);
            }
            s
        };
        let bad_cidr = with_filter(pb::PacketFilter {
            remote_cidr: "10.0.0.0/40".into(),
            ..Default::default()
        });
        let err = FaultSpec::try_from(bad_cidr).expect_err("bad cidr");
        assert_eq!(err.field, "spec.loss.filter.remote_cidr");
        assert!(err.reason.contains("0..=32"), "{err}");
        let reversed = with_filter(pb::PacketFilter {
            remote_port_min: 9,
            remote_port_max: 3,
            ..Default::default()
        });
        assert_eq!(field_of(reversed), "spec.loss.filter.remote_port_min");
        let icmp_ports = with_filter(pb::PacketFilter {
            protocol: pb::Protocol::Icmp as i32,
            remote_port_min: 1,
            ..Default::default()
        });
        assert_eq!(field_of(icmp_ports), "spec.loss.filter.remote_port_min");
        let big_port = with_filter(pb::PacketFilter {
            remote_port_min: 70000,
            ..Default::default()
        });
        assert_eq!(field_of(big_port), "spec.loss.filter.remote_port_min");
    }

    fn syscall_spec(
        op: pb::SyscallOperation,
        errno: &str,
        filter: pb::PacketFilter,
    ) -> pb::FaultSpec {
        let mut s = loss_spec(1);
        s.kind = Some(pb::fault_spec::Kind::Syscall(pb::SyscallFault {
            operation: op as i32,
            errno: errno.into(),
            probability_ppm: 500_000,
            filter: Some(filter),
            path_prefix: String::new(),
        }));
        s
    }

    #[test]
    fn syscall_specs_validate_and_round_trip() {
        let ok = syscall_spec(
            pb::SyscallOperation::Connect,
            "ECONNREFUSED",
            pb::PacketFilter {
                remote_port_min: 5432,
                remote_port_max: 5432,
                ..Default::default()
            },
        );
        let spec = FaultSpec::try_from(ok.clone()).expect("valid");
        assert_eq!(spec_to_pb(&spec), ok);
        let f = pb::PacketFilter::default;
        assert_eq!(
            field_of(syscall_spec(pb::SyscallOperation::Unspecified, "EIO", f())),
            "spec.syscall.operation"
        );
        let err = FaultSpec::try_from(syscall_spec(pb::SyscallOperation::Connect, "EBOGUS", f()))
            .expect_err("errno");
        assert_eq!(err.field, "spec.syscall.errno");
        assert!(
            err.reason.contains("ECONNREFUSED"),
            "lists the known ones: {err}"
        );
        let socket_with_addr = syscall_spec(
            pb::SyscallOperation::Socket,
            "EMFILE",
            pb::PacketFilter {
                remote_cidr: "10.0.0.0/8".into(),
                ..Default::default()
            },
        );
        assert_eq!(
            field_of(socket_with_addr),
            "spec.syscall.filter.remote_cidr"
        );
        let tcp_sendmsg = syscall_spec(
            pb::SyscallOperation::Sendmsg,
            "ENOBUFS",
            pb::PacketFilter {
                protocol: pb::Protocol::Tcp as i32,
                ..Default::default()
            },
        );
        assert_eq!(field_of(tcp_sendmsg), "spec.syscall.filter.protocol");
        let icmp_connect = syscall_spec(
            pb::SyscallOperation::Connect,
            "EIO",
            pb::PacketFilter {
                protocol: pb::Protocol::Icmp as i32,
                ..Default::default()
            },
        );
        assert_eq!(field_of(icmp_connect), "spec.syscall.filter.protocol");
    }

    fn latency_spec(l: pb::LatencyFault) -> pb::FaultSpec {
        let mut s = loss_spec(1);
        s.kind = Some(pb::fault_spec::Kind::Latency(l));
        s
    }

    fn ms(n: i32) -> Option<prost_types::Duration> {
        Some(prost_types::Duration {
            seconds: i64::from(n / 1000),
            nanos: (n % 1000) * 1_000_000,
        })
    }

    #[test]
    fn latency_and_bandwidth_validate_and_round_trip() {
        let ok = latency_spec(pb::LatencyFault {
            delay: ms(100),
            jitter: ms(10),
            distribution: pb::Distribution::Normal as i32,
            correlation_percent: 25.0,
            direction: pb::Direction::Egress as i32,
            filter: Some(pb::PacketFilter {
                protocol: pb::Protocol::Udp as i32,
                ..Default::default()
            }),
        });
        let spec = FaultSpec::try_from(ok.clone()).expect("valid");
        assert_eq!(spec_to_pb(&spec), ok);
        let FaultKind::Latency(l) = &spec.kind else {
            panic!("latency")
        };
        assert_eq!(l.correlation_ppm, 250_000);
        assert_eq!(spec.kind.fq_horizon(), Some(Duration::from_millis(140)));

        let unspecified = latency_spec(pb::LatencyFault {
            delay: ms(5),
            ..Default::default()
        });
        let FaultKind::Latency(l) = FaultSpec::try_from(unspecified).expect("valid").kind else {
            panic!("latency")
        };
        assert_eq!(l.direction, Direction::Egress, "latency defaults to egress");

        let bad = |l: pb::LatencyFault| field_of(latency_spec(l));
        assert_eq!(bad(pb::LatencyFault::default()), "spec.latency.delay");
        assert_eq!(
            bad(pb::LatencyFault {
                delay: ms(61_000),
                ..Default::default()
            }),
            "spec.latency.delay"
        );
        assert_eq!(
            bad(pb::LatencyFault {
                delay: ms(10),
                jitter: ms(5_000),
                ..Default::default()
            }),
            "spec.latency.jitter"
        );
        assert_eq!(
            bad(pb::LatencyFault {
                delay: ms(10),
                jitter: ms(1),
                correlation_percent: 101.0,
                ..Default::default()
            }),
            "spec.latency.correlation_percent"
        );
        assert_eq!(
            bad(pb::LatencyFault {
                delay: ms(10),
                correlation_percent: 5.0,
                ..Default::default()
            }),
            "spec.latency.correlation_percent"
        );
        assert_eq!(
            bad(pb::LatencyFault {
                delay: ms(10),
                distribution: 99,
                ..Default::default()
            }),
            "spec.latency.distribution"
        );
        assert_eq!(
            bad(pb::LatencyFault {
                delay: ms(10),
                filter: Some(pb::PacketFilter {
                    remote_cidr: "nope".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            "spec.latency.filter.remote_cidr"
        );

        let mut bw = loss_spec(1);
        bw.kind = Some(pb::fault_spec::Kind::Bandwidth(pb::BandwidthFault {
            rate_bps: 10_000_000,
            direction: pb::Direction::Egress as i32,
            filter: Some(pb::PacketFilter::default()),
        }));
        let spec = FaultSpec::try_from(bw.clone()).expect("valid");
        assert_eq!(spec_to_pb(&spec), bw);
        if let Some(pb::fault_spec::Kind::Bandwidth(b)) = &mut bw.kind {
            b.rate_bps = 100;
        }
        assert_eq!(field_of(bw), "spec.bandwidth.rate_bps");
    }

    #[test]
    fn single_port_and_unspecified_direction() {
        let mut s = loss_spec(1);
        if let Some(pb::fault_spec::Kind::Loss(l)) = &mut s.kind {
            l.direction = 0;
            l.filter = Some(pb::PacketFilter {
                remote_port_min: 53,
                ..Default::default()
            });
        }
        let spec = FaultSpec::try_from(s).expect("valid");
        let FaultKind::Loss(l) = spec.kind else {
            panic!("loss")
        };
        assert_eq!(l.direction, Direction::Both);
        assert_eq!(l.filter.remote_ports, Some(53..=53));
    }

    #[test]
    fn status_codes() {
        let cases: Vec<(ManagerError, Code)> = vec![
            (
                ManagerError::Invalid {
                    field: "spec.duration",
                    reason: "x".into(),
                },
                Code::InvalidArgument,
            ),
            (
                ManagerError::Target(TargetError::NotFound {
                    target: "cgroup:x".into(),
                    detail: "d".into(),
                }),
                Code::NotFound,
            ),
            (
                ManagerError::Target(TargetError::InvalidTarget {
                    field: "target.cgroup_path",
                    reason: "r".into(),
                }),
                Code::InvalidArgument,
            ),
            (
                ManagerError::Target(TargetError::Ambiguous {
                    target: "t".into(),
                    candidates: vec![],
                }),
                Code::FailedPrecondition,
            ),
            (
                ManagerError::Protected {
                    target: "/".into(),
                    reason: "r".into(),
                },
                Code::PermissionDenied,
            ),
            (ManagerError::Capacity("c".into()), Code::ResourceExhausted),
            (
                ManagerError::Precondition("p".into()),
                Code::FailedPrecondition,
            ),
            (ManagerError::NotFound("id".into()), Code::NotFound),
            (ManagerError::ShuttingDown, Code::Unavailable),
            (
                ManagerError::Kernel(DatapathError::Qdisc(QdiscError::Refused {
                    device: "eth0".into(),
                    reason: "htb".into(),
                })),
                Code::FailedPrecondition,
            ),
            (
                ManagerError::Kernel(DatapathError::Missing {
                    kind: "map",
                    name: "X",
                }),
                Code::Internal,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(status(&err).code(), code, "{err}");
        }
    }

    #[test]
    fn error_chain_includes_sources() {
        let err = ManagerError::Kernel(DatapathError::OpenCgroup {
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        });
        let text = status(&err).message().to_owned();
        assert!(
            text.contains("/x") && text.contains("ermission denied"),
            "{text}"
        );
    }
}
