//! One test per rule: each refuses an experiment that breaks it, naming
//! the rule and the value.

use std::time::Duration;

use faultd_proto::{agent::v1 as apb, coordinator::v1 as pb};

use super::*;

fn spec(faults: Vec<pb::fault_template::Kind>, secs: i64) -> ExperimentSpec {
    ExperimentSpec::try_from(pb::ExperimentSpec {
        id: "e".into(),
        faults: faults
            .into_iter()
            .map(|k| pb::FaultTemplate { kind: Some(k) })
            .collect(),
        selector: Some(pb::Selector {
            targets: vec![apb::TargetPattern {
                kind: Some(apb::target_pattern::Kind::CgroupGlob("app/*".into())),
            }],
            ..Default::default()
        }),
        mode: Some(pb::SelectionMode {
            mode: Some(pb::selection_mode::Mode::All(pb::selection_mode::All {})),
        }),
        duration: Some(prost_types::Duration {
            seconds: secs,
            nanos: 0,
        }),
        description: String::new(),
        partition: None,
        stop_conditions: Vec::new(),
        destination: None,
        observe: Vec::new(),
    })
    .expect("valid")
}

fn loss(ppm: u32) -> pb::fault_template::Kind {
    pb::fault_template::Kind::Loss(apb::LossFault {
        probability_ppm: ppm,
        ..Default::default()
    })
}

fn rule(r: Result<(), Violation>) -> (&'static str, bool, String) {
    let v = r.expect_err("refused");
    (v.rule, v.precondition, v.to_string())
}

fn cgroup(path: &str) -> apb::Target {
    apb::Target {
        kind: Some(apb::target::Kind::CgroupPath(path.into())),
    }
}

#[test]
fn duration_and_magnitudes() {
    let mut p = Policy::default();
    p.limits.max_duration = Some(Duration::from_secs(60));
    p.limits.max_loss_percent = Some(20.0);
    p.limits.max_delay = Some(Duration::from_millis(500));
    p.limits.min_bandwidth_bps = Some(1_000_000);
    p.limits.max_syscall_failure_percent = Some(10.0);
    assert!(p.check_spec(&spec(vec![loss(200_000)], 60)).is_ok());
    let (r, pre, text) = rule(p.check_spec(&spec(vec![loss(1)], 61)));
    assert_eq!((r, pre), ("limits.max_duration", false));
    assert!(text.contains("1m 1s") && text.contains("1m"), "{text}");
    let (r, _, text) = rule(p.check_spec(&spec(vec![loss(300_000)], 10)));
    assert_eq!(r, "limits.max_loss_percent");
    assert!(text.contains("30%"), "{text}");
    let latency = pb::fault_template::Kind::Latency(apb::LatencyFault {
        delay: Some(prost_types::Duration {
            seconds: 0,
            nanos: 400_000_000,
        }),
        jitter: Some(prost_types::Duration {
            seconds: 0,
            nanos: 200_000_000,
        }),
        ..Default::default()
    });
    assert_eq!(
        rule(p.check_spec(&spec(vec![latency], 10))).0,
        "limits.max_delay"
    );
    let bw = pb::fault_template::Kind::Bandwidth(apb::BandwidthFault {
        rate_bps: 64_000,
        ..Default::default()
    });
    assert_eq!(
        rule(p.check_spec(&spec(vec![bw], 10))).0,
        "limits.min_bandwidth_bps"
    );
    let sys = pb::fault_template::Kind::Syscall(apb::SyscallFault {
        probability_ppm: 500_000,
        ..Default::default()
    });
    assert_eq!(
        rule(p.check_spec(&spec(vec![sys], 10))).0,
        "limits.max_syscall_failure_percent"
    );
}

#[test]
fn concurrency() {
    let mut p = Policy::default();
    p.limits.max_concurrent_experiments = Some(2);
    assert!(p.check_concurrency(1).is_ok());
    assert_eq!(
        rule(p.check_concurrency(2)),
        (
            "limits.max_concurrent_experiments",
            true,
            "policy limits.max_concurrent_experiments: 2 running, the limit is 2".to_owned()
        )
    );
}

#[test]
fn protected_and_allowlisted_nodes() {
    let mut p = Policy::default();
    p.protected.nodes = vec!["db-1".into()];
    assert_eq!(
        rule(p.check_matched_nodes(&["web-1", "db-1"])).0,
        "protected.nodes"
    );
    p.allowlist.enabled = true;
    p.allowlist.nodes = vec!["web-1".into()];
    assert!(p.check_matched_nodes(&["web-1"]).is_ok());
    assert_eq!(rule(p.check_matched_nodes(&["web-2"])).0, "allowlist.nodes");
}

#[test]
fn node_count_node_fraction_and_target_fraction() {
    let t = cgroup("app/a");
    let sel = |nodes: &[&'static str]| -> Vec<Selected<'static>> {
        nodes
            .iter()
            .map(|n| Selected {
                node: n,
                target: Box::leak(Box::new(t.clone())),
                cgroup_path: "app/a",
                namespace: None,
            })
            .collect()
    };
    let mut p = Policy::default();
    p.limits.max_node_fraction = None;
    p.limits.max_nodes = Some(2);
    assert!(p.check_selection(&sel(&["a", "b"]), 2, 10).is_ok());
    assert_eq!(
        rule(p.check_selection(&sel(&["a", "b", "c"]), 3, 10)).0,
        "limits.max_nodes"
    );
    p.limits.max_nodes = None;
    p.limits.max_node_fraction = Some(0.5);
    assert!(p.check_selection(&sel(&["a", "b"]), 2, 4).is_ok());
    let (r, _, text) = rule(p.check_selection(&sel(&["a", "b", "c"]), 3, 4));
    assert_eq!(r, "limits.max_node_fraction");
    assert!(text.contains("3 of 4 nodes (75%)"), "{text}");
    p.limits.max_node_fraction = None;
    p.limits.max_target_fraction = Some(0.5);
    assert!(p.check_selection(&sel(&["a"]), 2, 4).is_ok());
    assert_eq!(
        rule(p.check_selection(&sel(&["a", "a"]), 3, 4)).0,
        "limits.max_target_fraction"
    );
}

#[test]
fn protected_units_cgroups_and_the_allowlist() {
    let mut p = Policy::default();
    p.limits.max_node_fraction = None;
    p.protected.cgroups = vec!["system.slice/db.service".into()];
    let check = |p: &Policy, target: apb::Target, path: &str| {
        p.check_selection(
            &[Selected {
                node: "n",
                target: &target,
                cgroup_path: path,
                namespace: None,
            }],
            1,
            1,
        )
    };
    let unit = apb::Target {
        kind: Some(apb::target::Kind::SystemdUnit("sshd.service".into())),
    };
    assert_eq!(
        rule(check(&p, unit, "system.slice/sshd.service")).0,
        "protected.units"
    );
    // Inside a protected unit, and an ancestor of a protected cgroup.
    assert_eq!(
        rule(check(
            &p,
            cgroup("system.slice/sshd.service/x"),
            "system.slice/sshd.service/x"
        ))
        .0,
        "protected.units"
    );
    assert_eq!(
        rule(check(&p, cgroup("system.slice"), "system.slice")).0,
        "protected.cgroups"
    );
    assert!(check(&p, cgroup("app.slice/web"), "app.slice/web").is_ok());
    p.allowlist.enabled = true;
    p.allowlist.cgroups = vec!["app.slice".into()];
    assert!(check(&p, cgroup("app.slice/web"), "app.slice/web").is_ok());
    assert_eq!(rule(check(&p, cgroup("other/x"), "other/x")).0, "allowlist");
}

#[test]
fn bad_policy_files_name_the_key() {
    let bad: Policy = toml::from_str("[limits]\nmax_node_fraction = 1.5").expect("parses");
    assert!(
        bad.validate()
            .expect_err("out of range")
            .to_string()
            .contains("limits.max_node_fraction")
    );
    let err = toml::from_str::<Policy>("[limits]\nmax_nodez = 1").expect_err("unknown key");
    assert!(err.to_string().contains("max_nodez"), "{err}");
}
