//! Conversions between the wire types (`faultd.agent.v1`) and the domain,
//! and the one mapping from errors to gRPC status codes (`status`).
//!
//! Invalid input is rejected here, before anything touches the kernel, with a
//! message that names the field (as its protobuf path) and the rule.

use std::time::Duration;

use faultd_proto::agent::v1 as pb;

use crate::{
    fault::{
        BandwidthSpec, Direction, Distribution, ERRNOS, Errno, FaultKind, FaultSpec, IpCidr,
        LatencySpec, LossSpec, MAX_DELAY, MAX_JITTER, MIN_RATE_BPS, PPM, PacketFilter, PathPrefix,
        Protocol, SyscallOp, SyscallSpec,
    },
    manager::LeaseSpec,
    target::{TargetPattern, TargetSpec},
};

mod status;
#[cfg(test)]
mod tests;
mod to_pb;

pub use status::{ApiError, status, status_ref};
pub use to_pb::{Capabilities, capabilities_to_pb, fault_to_pb, matched_to_pb, spec_to_pb};

/// A request field that breaks a rule.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidField {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        invalid(field, reason)
    }
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

/// The fault an ApplyFault request asks for, and the lease to hold it under.
pub fn apply_request(
    req: pb::ApplyFaultRequest,
) -> Result<(FaultSpec, Option<LeaseSpec>), InvalidField> {
    let spec = FaultSpec::try_from(req.spec.ok_or_else(|| invalid("spec", "is required"))?)?;
    let lease = req.lease.map(lease_from_pb).transpose()?;
    Ok((spec, lease))
}

/// A lease and its ttl (in ApplyFault and RenewLease requests alike); the
/// ttl's range is the manager's to check.
pub fn lease_from_pb(l: pb::Lease) -> Result<LeaseSpec, InvalidField> {
    let ttl_field = "lease.ttl";
    validate_id("lease.id", &l.id)?;
    let ttl = l.ttl.ok_or_else(|| invalid(ttl_field, "is required"))?;
    if ttl.seconds < 0 || ttl.nanos < 0 || (ttl.seconds == 0 && ttl.nanos == 0) {
        return Err(invalid(ttl_field, "must be greater than zero"));
    }
    let ttl = Duration::try_from(ttl)
        .map_err(|e| invalid(ttl_field, format!("is not a valid duration: {e}")))?;
    Ok(LeaseSpec { id: l.id, ttl })
}

/// Longest pattern accepted, in bytes (a cgroup path's limit).
const MAX_PATTERN_LEN: usize = 4096;
/// Most patterns in one ListTargets request.
const MAX_PATTERNS: usize = 64;

/// The patterns of a ListTargets request.
pub fn patterns_from_pb(req: pb::ListTargetsRequest) -> Result<Vec<TargetPattern>, InvalidField> {
    use pb::target_pattern::Kind;
    if req.patterns.is_empty() {
        return Err(invalid("patterns", "needs at least one pattern"));
    }
    if req.patterns.len() > MAX_PATTERNS {
        return Err(invalid(
            "patterns",
            format!(
                "at most {MAX_PATTERNS} patterns, got {}",
                req.patterns.len()
            ),
        ));
    }
    req.patterns
        .into_iter()
        .map(|p| {
            let kind = p.kind.ok_or_else(|| {
                invalid(
                    "patterns.kind",
                    "needs one of cgroup_glob, systemd_unit_glob, pod_uid",
                )
            })?;
            let (field, text) = match &kind {
                Kind::CgroupGlob(g) => ("patterns.cgroup_glob", g),
                Kind::SystemdUnitGlob(g) => ("patterns.systemd_unit_glob", g),
                Kind::PodUid(u) => ("patterns.pod_uid", u),
            };
            if text.is_empty() {
                return Err(invalid(field, "is empty"));
            }
            if text.len() > MAX_PATTERN_LEN || text.contains('\0') {
                return Err(invalid(
                    field,
                    format!("must be at most {MAX_PATTERN_LEN} bytes, without NUL"),
                ));
            }
            Ok(match kind {
                Kind::CgroupGlob(g) => TargetPattern::CgroupGlob(g),
                Kind::SystemdUnitGlob(g) => TargetPattern::UnitGlob(g),
                Kind::PodUid(u) => TargetPattern::PodUid(u),
            })
        })
        .collect()
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
