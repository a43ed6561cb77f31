//! Request builders for the agent API, shared by tests, the demo and the
//! benchmarks.

use std::time::Duration;

use faultd_proto::agent::v1 as pb;

/// Builder methods that each set one field and return the builder.
macro_rules! setters {
    ($($field:ident: $ty:ty),* $(,)?) => {
        $(
            pub fn $field(mut self, value: $ty) -> Self {
                self.$field = value;
                self
            }
        )*
    };
}

/// A loss fault on a cgroup path (relative to the cgroup2 mount).
#[derive(Debug, Clone)]
pub struct Loss {
    pub id: String,
    pub cgroup: String,
    pub ppm: u32,
    pub direction: pb::Direction,
    pub duration: Duration,
    pub filter: pb::PacketFilter,
}

impl Loss {
    pub fn new(id: &str, cgroup: &str, ppm: u32) -> Self {
        Self {
            id: id.to_owned(),
            cgroup: cgroup.to_owned(),
            ppm,
            direction: pb::Direction::Egress,
            duration: Duration::from_secs(120),
            filter: pb::PacketFilter::default(),
        }
    }

    setters!(direction: pb::Direction, duration: Duration, filter: pb::PacketFilter);

    pub fn spec(&self) -> pb::FaultSpec {
        on_cgroup(
            &self.id,
            &self.cgroup,
            self.duration,
            pb::fault_spec::Kind::Loss(pb::LossFault {
                probability_ppm: self.ppm,
                direction: self.direction as i32,
                filter: Some(self.filter.clone()),
            }),
        )
    }

    pub fn request(&self) -> pb::ApplyFaultRequest {
        request(self.spec())
    }
}

/// A syscall fault on a cgroup path (relative to the cgroup2 mount).
#[derive(Debug, Clone)]
pub struct Syscall {
    pub id: String,
    pub cgroup: String,
    pub op: pb::SyscallOperation,
    pub errno: String,
    pub ppm: u32,
    pub duration: Duration,
    pub filter: Option<pb::PacketFilter>,
    pub path_prefix: String,
}

impl Syscall {
    pub fn new(id: &str, cgroup: &str, op: pb::SyscallOperation, errno: &str, ppm: u32) -> Self {
        Self {
            id: id.to_owned(),
            cgroup: cgroup.to_owned(),
            op,
            errno: errno.to_owned(),
            ppm,
            duration: Duration::from_secs(120),
            filter: None,
            path_prefix: String::new(),
        }
    }

    setters!(duration: Duration, filter: Option<pb::PacketFilter>);

    pub fn path_prefix(mut self, dir: &str) -> Self {
        dir.clone_into(&mut self.path_prefix);
        self
    }

    pub fn spec(&self) -> pb::FaultSpec {
        on_cgroup(
            &self.id,
            &self.cgroup,
            self.duration,
            pb::fault_spec::Kind::Syscall(pb::SyscallFault {
                operation: self.op as i32,
                errno: self.errno.clone(),
                probability_ppm: self.ppm,
                filter: self.filter.clone(),
                path_prefix: self.path_prefix.clone(),
            }),
        )
    }

    pub fn request(&self) -> pb::ApplyFaultRequest {
        request(self.spec())
    }
}

fn request(spec: pb::FaultSpec) -> pb::ApplyFaultRequest {
    pb::ApplyFaultRequest {
        spec: Some(spec),
        lease: None,
    }
}

fn on_cgroup(
    id: &str,
    cgroup: &str,
    duration: Duration,
    kind: pb::fault_spec::Kind,
) -> pb::FaultSpec {
    pb::FaultSpec {
        id: id.to_owned(),
        target: Some(pb::Target {
            kind: Some(pb::target::Kind::CgroupPath(cgroup.to_owned())),
        }),
        duration: Some(prost_duration(duration)),
        kind: Some(kind),
    }
}

pub fn prost_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A latency fault (egress) on a cgroup path.
#[derive(Debug, Clone)]
pub struct Latency {
    pub id: String,
    pub cgroup: String,
    pub delay: Duration,
    pub jitter: Duration,
    pub distribution: pb::Distribution,
    pub correlation_percent: f64,
    pub direction: pb::Direction,
    pub duration: Duration,
    pub filter: pb::PacketFilter,
}

impl Latency {
    pub fn new(id: &str, cgroup: &str, delay: Duration) -> Self {
        Self {
            id: id.to_owned(),
            cgroup: cgroup.to_owned(),
            delay,
            jitter: Duration::ZERO,
            distribution: pb::Distribution::Uniform,
            correlation_percent: 0.0,
            direction: pb::Direction::Egress,
            duration: Duration::from_secs(120),
            filter: pb::PacketFilter::default(),
        }
    }

    pub fn jitter(mut self, jitter: Duration, distribution: pb::Distribution) -> Self {
        self.jitter = jitter;
        self.distribution = distribution;
        self
    }

    setters!(direction: pb::Direction);

    pub fn request(&self) -> pb::ApplyFaultRequest {
        request(on_cgroup(
            &self.id,
            &self.cgroup,
            self.duration,
            pb::fault_spec::Kind::Latency(pb::LatencyFault {
                delay: Some(prost_duration(self.delay)),
                jitter: (!self.jitter.is_zero()).then(|| prost_duration(self.jitter)),
                distribution: self.distribution as i32,
                correlation_percent: self.correlation_percent,
                direction: self.direction as i32,
                filter: Some(self.filter.clone()),
            }),
        ))
    }
}

/// A bandwidth fault (egress) on a cgroup path.
pub fn bandwidth_request(id: &str, cgroup: &str, rate_bps: u64) -> pb::ApplyFaultRequest {
    request(on_cgroup(
        id,
        cgroup,
        Duration::from_secs(120),
        pb::fault_spec::Kind::Bandwidth(pb::BandwidthFault {
            rate_bps,
            direction: pb::Direction::Egress as i32,
            filter: Some(pb::PacketFilter::default()),
        }),
    ))
}

/// An experiment for the coordinator: `fault` on the targets `pattern`
/// matches on every node, chosen by `mode`, for `secs` seconds.
pub fn experiment(
    id: &str,
    fault: faultd_proto::coordinator::v1::fault_template::Kind,
    pattern: pb::target_pattern::Kind,
    mode: faultd_proto::coordinator::v1::selection_mode::Mode,
    secs: i64,
) -> faultd_proto::coordinator::v1::ExperimentSpec {
    use faultd_proto::coordinator::v1 as cpb;
    cpb::ExperimentSpec {
        id: id.into(),
        faults: vec![cpb::FaultTemplate { kind: Some(fault) }],
        selector: Some(cpb::Selector {
            targets: vec![pb::TargetPattern {
                kind: Some(pattern),
            }],
            ..Default::default()
        }),
        mode: Some(cpb::SelectionMode { mode: Some(mode) }),
        duration: Some(prost_types::Duration {
            seconds: secs,
            nanos: 0,
        }),
        description: "test".into(),
        partition: None,
        stop_conditions: Vec::new(),
        destination: None,
        observe: Vec::new(),
    }
}

/// Mode all: every matching target.
pub fn all() -> faultd_proto::coordinator::v1::selection_mode::Mode {
    use faultd_proto::coordinator::v1::selection_mode;
    selection_mode::Mode::All(selection_mode::All {})
}
