//! The coordinator's blast-radius policy against real agents: for each
//! rule, an experiment that breaks it is refused with the rule named, and
//! nothing is applied on any agent (ListFaults on every one). The rules
//! are loaded one after the other with ReloadPolicy, which is tested on the
//! way. Root only; prints SKIP otherwise.

use faultd_proto::{agent::v1 as apb, coordinator::v1 as pb};
use faultd_tests::{
    lab::{Lab, LabOptions},
    require_root,
};
use tonic::Code;

use faultd_tests::faults::experiment as spec;

fn loss(ppm: u32) -> pb::fault_template::Kind {
    pb::fault_template::Kind::Loss(apb::LossFault {
        probability_ppm: ppm,
        ..Default::default()
    })
}

fn all() -> pb::selection_mode::Mode {
    pb::selection_mode::Mode::All(pb::selection_mode::All {})
}

struct Case {
    rule: &'static str,
    policy: String,
    spec: pb::ExperimentSpec,
    code: Code,
}

#[tokio::test]
async fn each_policy_rule_refuses_and_applies_nothing() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(&LabOptions {
        nodes: 4,
        ..LabOptions::default()
    });
    let root = lab.root.relative_str().to_owned();
    let _apps: Vec<_> = lab
        .nodes
        .iter()
        .flat_map(|n| (1..=2).map(|k| n.scope.child(&format!("app-{k}"))))
        .collect();
    let apps = || apb::target_pattern::Kind::CgroupGlob(format!("{root}/*/app-*"));
    let node1_apps = || apb::target_pattern::Kind::CgroupGlob(format!("{root}/node-1/app-*"));
    let ms = |ms: i32| prost_types::Duration {
        seconds: 0,
        nanos: ms * 1_000_000,
    };
    let cases = vec![
        Case {
            rule: "limits.max_nodes",
            policy: "[limits]\nmax_node_fraction = 1.0\nmax_nodes = 3\n".into(),
            spec: spec("nodes", loss(1000), apps(), all(), 30),
            code: Code::FailedPrecondition,
        },
        Case {
            rule: "limits.max_node_fraction",
            policy: "[limits]\nmax_node_fraction = 0.5\n".into(),
            spec: spec("fraction", loss(1000), apps(), all(), 30),
            code: Code::FailedPrecondition,
        },
        Case {
            rule: "limits.max_target_fraction",
            policy: "[limits]\nmax_node_fraction = 1.0\nmax_target_fraction = 0.5\n".into(),
            spec: spec("targets", loss(1000), apps(), pb::selection_mode::Mode::Percent(75.0), 30),
            code: Code::FailedPrecondition,
        },
        Case {
            rule: "limits.max_duration",
            policy: "[limits]\nmax_node_fraction = 1.0\nmax_duration = \"1m\"\n".into(),
            spec: spec("long", loss(1000), apps(), all(), 120),
            code: Code::InvalidArgument,
        },
        Case {
            rule: "limits.max_loss_percent",
            policy: "[limits]\nmax_node_fraction = 1.0\nmax_loss_percent = 20.0\n".into(),
            spec: spec("lossy", loss(300_000), apps(), all(), 30),
            code: Code::InvalidArgument,
        },
        Case {
            rule: "limits.max_delay",
            policy: "[limits]\nmax_node_fraction = 1.0\nmax_delay = \"100ms\"\n".into(),
            spec: spec(
                "slow",
                pb::fault_template::Kind::Latency(apb::LatencyFault {
                    delay: Some(ms(150)),
                    ..Default::default()
                }),
                apps(),
                all(),
                30,
            ),
            code: Code::InvalidArgument,
        },
        Case {
            rule: "limits.min_bandwidth_bps",
            policy: "[limits]\nmax_node_fraction = 1.0\nmin_bandwidth_bps = 1000000\n".into(),
            spec: spec(
                "narrow",
                pb::fault_template::Kind::Bandwidth(apb::BandwidthFault {
                    rate_bps: 64_000,
                    ..Default::default()
                }),
                apps(),
                all(),
                30,
            ),
            code: Code::InvalidArgument,
        },
        Case {
            rule: "limits.max_syscall_failure_percent",
            policy: "[limits]\nmax_node_fraction = 1.0\nmax_syscall_failure_percent = 10.0\n".into(),
            spec: spec(
                "failing",
                pb::fault_template::Kind::Syscall(apb::SyscallFault {
                    operation: apb::SyscallOperation::Connect.into(),
                    errno: "ECONNREFUSED".into(),
                    probability_ppm: 500_000,
                    ..Default::default()
                }),
                apps(),
                all(),
                30,
            ),
            code: Code::InvalidArgument,
        },
        Case {
            rule: "protected.nodes",
            policy: "[limits]\nmax_node_fraction = 1.0\n[protected]\nnodes = [\"node-2\"]\n".into(),
            spec: spec("protected-node", loss(1000), apps(), all(), 30),
            code: Code::FailedPrecondition,
        },
        Case {
            rule: "protected.cgroups",
            policy: format!(
                "[limits]\nmax_node_fraction = 1.0\n[protected]\ncgroups = [\"{root}/node-3/app-2\"]\n"
            ),
            spec: spec("protected-cgroup", loss(1000), apps(), all(), 30),
            code: Code::FailedPrecondition,
        },
        Case {
            rule: "protected.units",
            policy: "[limits]\nmax_node_fraction = 1.0\n[protected]\nunits = [\"app-1\"]\n".into(),
            spec: spec("protected-unit", loss(1000), apps(), all(), 30),
            code: Code::FailedPrecondition,
        },
        Case {
            rule: "allowlist",
            policy: format!(
                "[limits]\nmax_node_fraction = 1.0\n[allowlist]\nenabled = true\nnodes = \
                 [\"node-1\", \"node-2\", \"node-3\", \"node-4\"]\ncgroups = [\"{root}/node-1\"]\n"
            ),
            spec: spec("not-allowed", loss(1000), apps(), all(), 30),
            code: Code::FailedPrecondition,
        },
        Case {
            rule: "allowlist.nodes",
            policy: "[limits]\nmax_node_fraction = 1.0\n[allowlist]\nenabled = true\nnodes = [\"node-1\"]\n".into(),
            spec: spec("not-allowed-node", loss(1000), apps(), all(), 30),
            code: Code::FailedPrecondition,
        },
    ];
    let mut op = lab.operator();
    for case in cases {
        lab.write_policy(&case.policy);
        op.reload_policy(pb::ReloadPolicyRequest {})
            .await
            .unwrap_or_else(|s| panic!("{}: ReloadPolicy: {s}", case.rule));
        let status = op
            .create_experiment(pb::CreateExperimentRequest {
                spec: Some(case.spec.clone()),
                dry_run: false,
            })
            .await
            .expect_err(case.rule);
        assert_eq!(status.code(), case.code, "{}: {status:?}", case.rule);
        assert!(
            status.message().contains(&format!("policy {}:", case.rule)),
            "{}: {}",
            case.rule,
            status.message()
        );
        for n in &lab.nodes {
            let held = n
                .agent
                .client()
                .await
                .list_faults(apb::ListFaultsRequest {})
                .await
                .expect("ListFaults")
                .into_inner()
                .faults;
            assert!(held.is_empty(), "{}: {} holds {held:?}", case.rule, n.name);
        }
        let recorded = op
            .get_experiment(pb::GetExperimentRequest {
                id: case.spec.id.clone(),
            })
            .await;
        assert_eq!(
            recorded.map_err(|s| s.code()).err(),
            Some(Code::NotFound),
            "{}: no record",
            case.rule
        );
        println!(
            "{}: refused ({:?}): {}",
            case.rule,
            status.code(),
            status.message()
        );
    }

    // Within every rule of the last policy but one: allowed, so the checks
    // refuse what breaks them and nothing else.
    lab.write_policy("[limits]\nmax_node_fraction = 1.0\n[allowlist]\nenabled = true\nnodes = [\"node-1\"]\ncgroups = [\"faultd-test\"]\n");
    op.reload_policy(pb::ReloadPolicyRequest {})
        .await
        .expect("reload");
    let mut within = spec("within", loss(1000), node1_apps(), all(), 30);
    within.selector.as_mut().expect("selector").node_names = vec!["node-1".into()];
    let x = op
        .create_experiment(pb::CreateExperimentRequest {
            spec: Some(within),
            dry_run: false,
        })
        .await
        .expect("an experiment within the policy runs")
        .into_inner();
    assert_eq!(x.state, i32::from(pb::ExperimentState::Running));
    assert_eq!(x.targets.len(), 2);

    // limits.max_concurrent_experiments, with one experiment running.
    lab.write_policy("[limits]\nmax_node_fraction = 1.0\nmax_concurrent_experiments = 1\n");
    op.reload_policy(pb::ReloadPolicyRequest {})
        .await
        .expect("reload");
    let status = op
        .create_experiment(pb::CreateExperimentRequest {
            spec: Some(spec("second", loss(1000), apps(), all(), 30)),
            dry_run: false,
        })
        .await
        .expect_err("one at a time");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .contains("policy limits.max_concurrent_experiments:"),
        "{}",
        status.message()
    );
    let mut held = 0;
    for n in &lab.nodes {
        held += n
            .agent
            .client()
            .await
            .list_faults(apb::ListFaultsRequest {})
            .await
            .expect("ListFaults")
            .into_inner()
            .faults
            .len();
    }
    assert_eq!(held, 2, "only the first experiment's faults");
    println!(
        "limits.max_concurrent_experiments: refused ({:?}): {}",
        status.code(),
        status.message()
    );

    // A policy file that does not parse keeps the old one.
    lab.write_policy("[limits]\nmax_nodes = \"three\"\n");
    let bad = op
        .reload_policy(pb::ReloadPolicyRequest {})
        .await
        .expect_err("bad policy");
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
}
