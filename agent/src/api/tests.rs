use tonic::Code;

use super::*;
use crate::{
    caps::Unsupported, datapath::DatapathError, manager::ManagerError, qdisc::QdiscError,
    target::TargetError,
};

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

fn syscall_spec(op: pb::SyscallOperation, errno: &str, filter: pb::PacketFilter) -> pb::FaultSpec {
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
        (
            ManagerError::Unsupported(Unsupported("tcx".into())),
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
        let text = err.to_string();
        assert_eq!(status(err).code(), code, "{text}");
    }
    assert_eq!(
        status(InvalidField {
            field: "spec",
            reason: "is required".into()
        })
        .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        status(ApiError::Task("panicked".into())).code(),
        Code::Internal
    );
}

#[test]
fn error_chain_includes_sources() {
    let err = ManagerError::Kernel(DatapathError::OpenCgroup {
        path: "/x".into(),
        source: std::io::Error::from_raw_os_error(libc::EACCES),
    });
    let text = status(err).message().to_owned();
    assert!(
        text.contains("/x") && text.contains("ermission denied"),
        "{text}"
    );
}
