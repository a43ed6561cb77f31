//! Partitions, destinations, stop conditions and dry runs through the
//! engine, against the same in-memory agents.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use faultd_proto::{agent::v1 as apb, coordinator::v1 as pb};
use tokio::time::Instant;

use super::*;

fn partition_spec(id: &str, one_way: bool, secs: i64) -> ExperimentSpec {
    let side = |zone: &str| pb::Selector {
        node_labels: [("zone".to_owned(), zone.to_owned())].into(),
        targets: vec![apb::TargetPattern {
            kind: Some(apb::target_pattern::Kind::CgroupGlob("app/c0".into())),
        }],
        ..Default::default()
    };
    ExperimentSpec::try_from(pb::ExperimentSpec {
        id: id.into(),
        duration: Some(prost_types::Duration {
            seconds: secs,
            nanos: 0,
        }),
        partition: Some(pb::Partition {
            a: Some(side("a")),
            b: Some(side("b")),
            direction: if one_way {
                pb::PartitionDirection::AToB
            } else {
                pb::PartitionDirection::Both
            }
            .into(),
            action: pb::PartitionAction::Drop.into(),
        }),
        ..Default::default()
    })
    .expect("valid partition")
}

/// (node, direction, remote cidr) of each fault of an experiment.
fn partition_faults(x: &pb::Experiment) -> Vec<(String, i32, String)> {
    x.targets
        .iter()
        .map(|t| match t.fault.as_ref().and_then(|f| f.kind.as_ref()) {
            Some(pb::fault_template::Kind::Loss(l)) => (
                t.node.clone(),
                l.direction,
                l.filter.as_ref().expect("filter").remote_cidr.clone(),
            ),
            other => panic!("not a loss fault: {other:?}"),
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_partition_filters_each_sides_targets_to_the_others_addresses() {
    let dir = tempfile::tempdir().expect("tmp");
    // Zone a: n0, n2; zone b: n1, n3. The fake gives cgroup c0 on node i
    // the address 10.i.0.1.
    let fake = Fake::with_nodes(4, 2);
    let e = engine(&fake, 4, open_policy(), dir.path());
    let x = e
        .create(partition_spec("cut", false, 60), "t")
        .await
        .expect("create");
    assert_eq!(state_of(&x), pb::ExperimentState::Running, "{x:?}");
    assert_eq!(x.matched_targets, 4);
    let both = i32::from(apb::Direction::Both);
    let f = |n: &str, d: i32, c: &str| (n.to_owned(), d, c.to_owned());
    assert_eq!(
        partition_faults(&x),
        [
            f("n0", both, "10.1.0.1/32"),
            f("n0", both, "10.3.0.1/32"),
            f("n2", both, "10.1.0.1/32"),
            f("n2", both, "10.3.0.1/32"),
            f("n1", both, "10.0.0.1/32"),
            f("n1", both, "10.2.0.1/32"),
            f("n3", both, "10.0.0.1/32"),
            f("n3", both, "10.2.0.1/32"),
        ]
    );
    assert_eq!(fake.faults(), 8);
    // Renewed like any experiment, healed at the deadline.
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(fake.faults(), 8);
    let x = wait_ended(&e, "cut").await;
    assert_eq!(state_of(&x), pb::ExperimentState::Completed);
    assert_eq!(fake.faults(), 0);

    // One way: A drops what it sends to B, B what arrives from A.
    let x = e
        .create(partition_spec("one-way", true, 60), "t")
        .await
        .expect("create");
    let (eg, ing) = (
        i32::from(apb::Direction::Egress),
        i32::from(apb::Direction::Ingress),
    );
    let faults = partition_faults(&x);
    assert!(
        faults[..4]
            .iter()
            .all(|(n, d, _)| *d == eg && (n == "n0" || n == "n2"))
    );
    assert!(
        faults[4..]
            .iter()
            .all(|(n, d, _)| *d == ing && (n == "n1" || n == "n3"))
    );
    e.stop("one-way", "done").await.expect("stop");
    assert_eq!(fake.faults(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_partition_that_breaks_a_rule_or_cannot_separate_applies_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = Fake::with_nodes(4, 2);
    let mut policy = open_policy();
    policy.limits.max_loss_percent = Some(50.0);
    let e = engine(&fake, 4, policy, dir.path());
    let err = e
        .create(partition_spec("too-much", false, 60), "t")
        .await
        .expect_err("a partition drops everything");
    assert!(err.to_string().contains("limits.max_loss_percent"), "{err}");
    // Both sides the same nodes and cgroup: nothing to separate.
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine(&fake, 4, open_policy(), dir.path());
    let mut wire = partition_spec("same", false, 60).wire;
    let p = wire.partition.as_mut().expect("partition");
    p.b = p.a.clone();
    let err = e
        .create(ExperimentSpec::try_from(wire).expect("valid"), "t")
        .await
        .expect_err("same targets on both sides");
    assert!(err.to_string().contains("on both sides"), "{err}");
    assert_eq!(fake.applies(), 0);
}

/// A metrics source whose one value the test sets.
#[derive(Clone, Debug)]
struct FakeMetrics(Arc<Mutex<Result<f64, String>>>);

impl crate::conditions::Metrics for FakeMetrics {
    fn query<'a>(&'a self, _: &'a str) -> crate::conditions::MetricsFuture<'a, f64> {
        let v = self.0.lock().expect("lock").clone();
        Box::pin(async move { v.map_err(crate::conditions::QueryError) })
    }
}

fn with_condition(id: &str, hold_s: i64) -> ExperimentSpec {
    let mut wire = spec(id, all(), 600).wire;
    wire.stop_conditions = vec![pb::StopCondition {
        query: "error_ratio".into(),
        comparison: pb::Comparison::Above.into(),
        threshold: 0.05,
        hold: Some(prost_types::Duration {
            seconds: hold_s,
            nanos: 0,
        }),
    }];
    ExperimentSpec::try_from(wire).expect("valid")
}

#[tokio::test(start_paused = true)]
async fn stop_conditions_refuse_abort_and_fail_safe() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = Fake::with_nodes(2, 1);
    // No metrics source: refused, nothing applied.
    let e = engine(&fake, 2, open_policy(), dir.path());
    let err = e
        .create(with_condition("none", 2), "t")
        .await
        .expect_err("no prometheus");
    assert!(err.to_string().contains("[prometheus]"), "{err}");

    let value = Arc::new(Mutex::new(Ok(0.2)));
    let mut settings = Settings::new(TTL, None);
    settings.clock = virtual_clock();
    settings.metrics = Some(Arc::new(FakeMetrics(Arc::clone(&value))));
    settings.metrics_grace = Duration::from_secs(5);
    let dir = tempfile::tempdir().expect("tmp");
    let e = Engine::new(
        fake.clone(),
        Store::open(&dir.path().join("state.db")).expect("store"),
        Arc::new(inventory(2)),
        (open_policy(), "sha".into()),
        settings,
        StdRng::seed_from_u64(1),
    );
    // Already holding: refused before anything is applied.
    let err = e
        .create(with_condition("hot", 2), "t")
        .await
        .expect_err("holds");
    assert!(
        err.to_string().contains("already holds: observed 0.2"),
        "{err}"
    );
    assert_eq!(fake.applies(), 0);

    // Crossing the threshold for the hold aborts and reverts.
    *value.lock().expect("lock") = Ok(0.01);
    e.create(with_condition("watched", 2), "t")
        .await
        .expect("create");
    assert_eq!(fake.faults(), 2);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(fake.faults(), 2, "below the threshold: still running");
    *value.lock().expect("lock") = Ok(0.3);
    let flipped = Instant::now();
    let x = wait_ended(&e, "watched").await;
    let took = flipped.elapsed();
    assert_eq!(state_of(&x), pb::ExperimentState::Aborted);
    assert!(x.end_reason.contains("observed 0.3"), "{}", x.end_reason);
    // Hold (2 s) plus at most one evaluation interval (1 s), plus the
    // waiting loop's 100 ms step.
    assert!(took <= Duration::from_millis(3100), "{took:?}");
    assert_eq!(fake.faults(), 0);

    // Unevaluable for longer than the grace: abort (fail safe).
    *value.lock().expect("lock") = Ok(0.0);
    e.create(with_condition("blind", 2), "t")
        .await
        .expect("create");
    *value.lock().expect("lock") = Err("connection refused".into());
    let x = wait_ended(&e, "blind").await;
    assert_eq!(state_of(&x), pb::ExperimentState::Aborted);
    assert!(
        x.end_reason.contains("could not be evaluated"),
        "{}",
        x.end_reason
    );
    assert!(
        x.end_reason.contains("connection refused"),
        "{}",
        x.end_reason
    );
    assert_eq!(fake.faults(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_destination_filters_every_fault_to_its_addresses_and_ports() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = Fake::with_nodes(3, 2);
    let e = engine(&fake, 3, open_policy(), dir.path());
    // Checkout: app/c0 on n0; payment: app/c1 on n1 and n2 (10.1.1.1,
    // 10.2.1.1), plus a fixed database address.
    let mut wire = spec("s2s", all(), 60).wire;
    wire.selector = Some(pb::Selector {
        node_names: vec!["n0".into()],
        targets: vec![apb::TargetPattern {
            kind: Some(apb::target_pattern::Kind::CgroupGlob("app/c0".into())),
        }],
        ..Default::default()
    });
    wire.destination = Some(pb::Destination {
        selector: Some(pb::Selector {
            node_names: vec!["n1".into(), "n2".into()],
            targets: vec![apb::TargetPattern {
                kind: Some(apb::target_pattern::Kind::CgroupGlob("app/c1".into())),
            }],
            ..Default::default()
        }),
        cidrs: vec!["192.0.2.0/24".into()],
        port_min: 8443,
        port_max: 0,
        protocol: apb::Protocol::Tcp.into(),
        service: None,
    });
    let x = e
        .create(ExperimentSpec::try_from(wire.clone()).expect("valid"), "t")
        .await
        .expect("create");
    assert_eq!(state_of(&x), pb::ExperimentState::Running, "{x:?}");
    let filters: Vec<(String, String, u32, i32)> = x
        .targets
        .iter()
        .map(|t| match t.fault.as_ref().and_then(|f| f.kind.as_ref()) {
            Some(pb::fault_template::Kind::Loss(l)) => {
                let f = l.filter.as_ref().expect("filter");
                (
                    t.node.clone(),
                    f.remote_cidr.clone(),
                    f.remote_port_min,
                    f.protocol,
                )
            }
            other => panic!("{other:?}"),
        })
        .collect();
    let tcp = i32::from(apb::Protocol::Tcp);
    assert_eq!(
        filters,
        [
            ("n0".into(), "10.1.1.1/32".into(), 8443, tcp),
            ("n0".into(), "10.2.1.1/32".into(), 8443, tcp),
            ("n0".into(), "192.0.2.0/24".into(), 8443, tcp),
        ]
    );
    assert_eq!(fake.faults(), 3);
    e.stop("s2s", "done").await.expect("stop");

    // A fault that filters by itself conflicts with the destination.
    let mut own = wire.clone();
    own.id = "own".into();
    own.faults[0].kind = Some(pb::fault_template::Kind::Loss(apb::LossFault {
        probability_ppm: 300_000,
        filter: Some(apb::PacketFilter {
            remote_cidr: "10.0.0.0/8".into(),
            ..Default::default()
        }),
        ..Default::default()
    }));
    let err = ExperimentSpec::try_from(own).expect_err("conflict");
    assert_eq!(err.field, "spec.faults[0].filter");
    let mut bad = wire;
    bad.id = "bad".into();
    if let Some(d) = bad.destination.as_mut() {
        d.cidrs = vec!["10.0.0.0/33".into()];
    }
    let err = ExperimentSpec::try_from(bad).expect_err("bad cidr");
    assert_eq!(err.field, "spec.destination.cidrs[0]");
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_selects_and_checks_but_applies_and_records_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = Fake::with_nodes(3, 2);
    let e = engine(&fake, 3, open_policy(), dir.path());
    let x = e
        .dry_run(spec("dry", all(), 60), "t")
        .await
        .expect("dry run");
    assert_eq!(state_of(&x), pb::ExperimentState::Unspecified);
    assert_eq!(x.targets.len(), 6);
    assert!(x.end_reason.starts_with("dry run"), "{}", x.end_reason);
    assert_eq!(fake.applies(), 0);
    assert!(matches!(e.get("dry"), Err(EngineError::NotFound(_))));
    // The policy is checked as for a real run.
    let mut strict = open_policy();
    strict.limits.max_loss_percent = Some(10.0);
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine(&fake, 3, strict, dir.path());
    let err = e
        .dry_run(spec("dry", all(), 60), "t")
        .await
        .expect_err("30% > 10%");
    assert!(err.to_string().contains("limits.max_loss_percent"), "{err}");
}
