#![expect(clippy::unwrap_used, reason = "tests")]

use clap::CommandFactory;
use clap::error::ErrorKind;
use faultd_proto::agent::v1 as pb;

use super::*;

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
        let Some(pb::fault_spec::Kind::Latency(lat)) = l.to_request().unwrap().spec.unwrap().kind
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

#[test]
fn experiment_create_builds_the_spec() {
    let cli = parse(&[
        "experiment",
        "create",
        "--id",
        "checkout-loss",
        "--duration",
        "2m",
        "--mode",
        "percent=50",
        "--node",
        "web-1",
        "--label",
        "zone=a",
        "--cgroup-glob",
        "kubepods.slice/*/checkout-*",
        "--unit-glob",
        "checkout-*.service",
        "loss",
        "--percent",
        "30",
        "--egress",
        "--protocol",
        "udp",
    ])
    .unwrap();
    assert!(cli.command.is_coordinator());
    let Command::Experiment(ExperimentCommand::Create(create)) = cli.command else {
        panic!("experiment create")
    };
    let spec = create.to_spec().unwrap();
    assert_eq!(spec.id, "checkout-loss");
    assert_eq!(
        spec.mode.unwrap().mode,
        Some(faultd_proto::coordinator::v1::selection_mode::Mode::Percent(50.0))
    );
    let sel = spec.selector.unwrap();
    assert_eq!(sel.node_names, ["web-1"]);
    assert_eq!(sel.node_labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(sel.targets.len(), 2);
    let Some(faultd_proto::coordinator::v1::fault_template::Kind::Loss(l)) =
        spec.faults[0].kind.clone()
    else {
        panic!("loss")
    };
    assert_eq!(l.probability_ppm, 300_000);
    assert_eq!(l.direction(), pb::Direction::Egress);
    assert_eq!(spec.duration.unwrap().seconds, 120);
}

#[test]
fn experiment_flags_are_checked() {
    for (args, flag) in [
        (
            &[
                "experiment",
                "create",
                "--id",
                "x",
                "--duration",
                "1m",
                "--mode",
                "half",
                "loss",
                "--percent",
                "1",
            ][..],
            "--mode",
        ),
        (
            &[
                "experiment",
                "create",
                "--id",
                "x",
                "--duration",
                "1m",
                "--label",
                "zone",
                "loss",
                "--percent",
                "1",
            ][..],
            "--label",
        ),
    ] {
        let err = parse(args).unwrap_err();
        assert!(err.to_string().contains(flag), "{args:?}: {err}");
    }
    let cli = parse(&[
        "experiment",
        "create",
        "--id",
        "x",
        "--duration",
        "1m",
        "loss",
        "--percent",
        "1",
    ])
    .unwrap();
    let Command::Experiment(ExperimentCommand::Create(create)) = cli.command else {
        panic!("create")
    };
    assert_eq!(create.to_spec(), Err(ArgsError::NoTargets));
    assert!(matches!(
        parse(&["halt", "--reason", "incident"]).unwrap().command,
        Command::Halt { reason } if reason == "incident"
    ));
    assert!(parse(&["resume"]).unwrap().command.is_coordinator());
    assert!(parse(&["reload-policy"]).unwrap().command.is_coordinator());
    assert!(!parse(&["list"]).unwrap().command.is_coordinator());
}

#[test]
fn syscall_operations_come_from_the_proto() {
    let help = Cli::command()
        .find_subcommand("syscall")
        .unwrap()
        .clone()
        .render_long_help()
        .to_string();
    for (name, _, _) in ops::operations() {
        assert!(help.contains(name.as_str()), "{name} missing from:\n{help}");
    }
    let err = parse(&[
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
        "1s",
    ])
    .unwrap_err();
    assert!(err.to_string().contains("connect"), "{err}");
}

#[test]
fn partition_flags_make_two_sides() {
    let cli = parse(&[
        "experiment",
        "partition",
        "--id",
        "zones",
        "--duration",
        "2m",
        "--a-label",
        "zone=a",
        "--a-cgroup-glob",
        "app/*",
        "--b-node",
        "n2",
        "--b-unit-glob",
        "pay-*.service",
        "--one-way",
    ])
    .unwrap();
    let Command::Experiment(ExperimentCommand::Partition(p)) = cli.command else {
        panic!("partition")
    };
    let spec = p.to_spec().unwrap();
    assert!(spec.faults.is_empty() && spec.selector.is_none() && spec.mode.is_none());
    let part = spec.partition.unwrap();
    let a = part.a.unwrap();
    assert_eq!(a.node_labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(
        a.targets[0].kind,
        Some(pb::target_pattern::Kind::CgroupGlob("app/*".into()))
    );
    let b = part.b.unwrap();
    assert_eq!(b.node_names, ["n2"]);
    assert_eq!(
        part.direction,
        i32::from(faultd_proto::coordinator::v1::PartitionDirection::AToB)
    );
    assert_eq!(
        part.action,
        i32::from(faultd_proto::coordinator::v1::PartitionAction::Drop)
    );
    // A side without targets is a usage error naming the side's flags.
    let cli = parse(&[
        "experiment",
        "partition",
        "--id",
        "x",
        "--duration",
        "1m",
        "--a-cgroup-glob",
        "app/*",
    ])
    .unwrap();
    let Command::Experiment(ExperimentCommand::Partition(p)) = cli.command else {
        panic!("partition")
    };
    let err = p.to_spec().unwrap_err().to_string();
    assert!(err.contains("--b-cgroup-glob"), "{err}");
}

#[test]
fn stop_conditions_parse_query_comparison_threshold_and_hold() {
    let cli = parse(&[
        "experiment",
        "create",
        "--id",
        "x",
        "--duration",
        "2m",
        "--cgroup-glob",
        "app/*",
        "--stop-when",
        "sum(rate(errors[30s])) / sum(rate(requests[30s])) > 0.05 for 15s",
        "--stop-when",
        "up{job=\"pay\"} < 1",
        "loss",
        "--percent",
        "10",
    ])
    .unwrap();
    let Command::Experiment(ExperimentCommand::Create(create)) = cli.command else {
        panic!("create")
    };
    let spec = create.to_spec().unwrap();
    use faultd_proto::coordinator::v1::Comparison;
    let c = &spec.stop_conditions;
    assert_eq!(
        c[0].query,
        "sum(rate(errors[30s])) / sum(rate(requests[30s]))"
    );
    assert_eq!(c[0].comparison, i32::from(Comparison::Above));
    assert!((c[0].threshold - 0.05).abs() < 1e-12);
    assert_eq!(c[0].hold.map(|d| d.seconds), Some(15));
    assert_eq!(c[1].query, "up{job=\"pay\"}");
    assert_eq!(c[1].comparison, i32::from(Comparison::Below));
    assert_eq!(c[1].hold, None);
    for bad in ["no comparison", "x > many", "> 1"] {
        let err = parse(&[
            "experiment",
            "create",
            "--id",
            "x",
            "--duration",
            "1m",
            "--cgroup-glob",
            "a",
            "--stop-when",
            bad,
            "loss",
            "--percent",
            "1",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad}: {err}");
    }
}

#[test]
fn kubernetes_pods_and_services_by_flags() {
    let cli = parse(&[
        "experiment",
        "create",
        "--id",
        "x",
        "--duration",
        "2m",
        "-n",
        "shop",
        "-l",
        "app=checkout",
        "--pod-label",
        "tier=web",
        "--container",
        "app",
        "--to-service",
        "shop/payment",
        "latency",
        "--delay",
        "400ms",
    ])
    .unwrap();
    let Command::Experiment(ExperimentCommand::Create(create)) = cli.command else {
        panic!("create")
    };
    let spec = create.to_spec().unwrap();
    let pods = spec.selector.unwrap().pods.unwrap();
    assert_eq!(pods.namespace, "shop");
    assert_eq!(pods.labels.len(), 2);
    assert_eq!(pods.labels["tier"], "web");
    assert_eq!(pods.container, "app");
    let service = spec.destination.unwrap().service.unwrap();
    assert_eq!(
        (service.namespace.as_str(), service.name.as_str()),
        ("shop", "payment")
    );
    // A label or container without the namespace is refused by clap.
    assert!(
        parse(&[
            "experiment",
            "create",
            "--id",
            "x",
            "--duration",
            "2m",
            "-l",
            "app=x",
            "latency",
            "--delay",
            "1ms",
        ])
        .is_err()
    );
    let file = super::file::read(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs/examples/checkout-payment-kubernetes.yaml"),
    )
    .unwrap();
    let pods = file.selector.unwrap().pods.unwrap();
    assert_eq!(pods.labels["app.kubernetes.io/name"], "checkout");
    assert_eq!(file.destination.unwrap().service.unwrap().name, "payment");
}

#[test]
fn destination_flags_make_a_destination() {
    let cli = parse(&[
        "experiment",
        "create",
        "--id",
        "x",
        "--duration",
        "2m",
        "--unit-glob",
        "checkout-*.service",
        "--to-node",
        "n2",
        "--to-unit-glob",
        "payment-*.service",
        "--to-cidr",
        "10.2.0.15",
        "--to-port",
        "8443",
        "--to-protocol",
        "tcp",
        "latency",
        "--delay",
        "400ms",
    ])
    .unwrap();
    let Command::Experiment(ExperimentCommand::Create(create)) = cli.command else {
        panic!("create")
    };
    let d = create.to_spec().unwrap().destination.unwrap();
    let sel = d.selector.unwrap();
    assert_eq!(sel.node_names, ["n2"]);
    assert_eq!(
        sel.targets[0].kind,
        Some(pb::target_pattern::Kind::SystemdUnitGlob(
            "payment-*.service".into()
        ))
    );
    assert_eq!(d.cidrs, ["10.2.0.15"]);
    assert_eq!((d.port_min, d.port_max), (8443, 0), "max 0: min only");
    assert_eq!(d.protocol, i32::from(pb::Protocol::Tcp));
}
