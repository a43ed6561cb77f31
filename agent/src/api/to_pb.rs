//! Domain -> wire: what the agent reports back.

use std::time::SystemTime;

use faultd_proto::agent::v1 as pb;

use faultd_common::MAX_RULES_PER_CGROUP;

use crate::{
    caps,
    datapath::KernelObject,
    fault::{Direction, Distribution, FaultKind, FaultSpec, PacketFilter, Protocol, SyscallOp},
    manager::{FaultState, FaultView, Policy},
    qdisc::QdiscChange,
    target::{ResolvedCgroup, TargetSpec},
};

pub fn spec_to_pb(spec: &FaultSpec) -> pb::FaultSpec {
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
        target: Some(target_to_pb(&spec.target)),
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
        lease_id: v.lease.as_ref().map(|l| l.id.clone()).unwrap_or_default(),
        lease_expires_at: v.lease.as_ref().map(|l| timestamp(l.expires_at)),
        end_reason: v
            .end_reason
            .map(|r| r.name().to_owned())
            .unwrap_or_default(),
    }
}

fn target_to_pb(t: &TargetSpec) -> pb::Target {
    let kind = match t {
        TargetSpec::CgroupPath(p) => pb::target::Kind::CgroupPath(p.clone()),
        TargetSpec::Pid(p) => pb::target::Kind::Pid(*p),
        TargetSpec::SystemdUnit(u) => pb::target::Kind::SystemdUnit(u.clone()),
        TargetSpec::Pod { uid, container_id } => pb::target::Kind::Pod(pb::KubernetesPod {
            uid: uid.clone(),
            container_id: container_id.clone().unwrap_or_default(),
        }),
    };
    pb::Target { kind: Some(kind) }
}

/// A ListTargets match.
pub fn matched_to_pb((target, cgroup): &(TargetSpec, ResolvedCgroup)) -> pb::MatchedTarget {
    pb::MatchedTarget {
        target: Some(target_to_pb(target)),
        resolved: Some(pb::ResolvedTarget {
            cgroup_path: cgroup.path.clone(),
            cgroup_id: cgroup.id,
        }),
        addresses: Vec::new(),
    }
}

/// What GetCapabilities reports, gathered by the service.
#[derive(Debug)]
pub struct Capabilities<'a> {
    pub caps: &'a caps::Capabilities,
    pub node_name: &'a str,
    pub cgroup_mount: &'a str,
    pub programs: Vec<KernelObject>,
    pub maps: Vec<KernelObject>,
    pub policy: Policy,
    pub qdiscs: Vec<QdiscChange>,
}

pub fn capabilities_to_pb(c: Capabilities<'_>) -> pb::Capabilities {
    let object = |o: KernelObject| pb::KernelObject {
        name: o.name,
        id: o.id,
    };
    pb::Capabilities {
        kernel_release: c.caps.kernel_release.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        cgroup2_mount: c.cgroup_mount.to_owned(),
        features: c
            .caps
            .features
            .iter()
            .map(|f| pb::Feature {
                name: f.name.to_owned(),
                available: f.available,
                detail: f.detail.clone(),
            })
            .collect(),
        programs: c.programs.into_iter().map(object).collect(),
        maps: c.maps.into_iter().map(object).collect(),
        limits: Some(pb::Limits {
            max_duration: prost_types::Duration::try_from(c.policy.max_duration).ok(),
            max_faults: c.policy.max_faults,
            max_rules_per_cgroup: MAX_RULES_PER_CGROUP as u32,
            max_lease_ttl: prost_types::Duration::try_from(c.policy.max_lease_ttl).ok(),
        }),
        qdiscs: c
            .qdiscs
            .into_iter()
            .map(|q| pb::QdiscChange {
                netns_inode: q.netns_ino,
                device: q.device,
                replaced: q.replaced,
                installed: q.installed,
                faults: q.faults,
            })
            .collect(),
        node_name: c.node_name.to_owned(),
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}
