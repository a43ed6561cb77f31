//! The coordinator end to end: several agents, each in its own network
//! namespace with its own address, node name, socket, state directory and
//! cgroup scope, and one coordinator, all over mutual TLS (`lab`). Faults
//! are measured with traffic from the targets, as the loss tests do.
//! Root only; each test prints SKIP otherwise.

use std::time::{Duration, Instant};

use faultd_proto::{agent::v1 as apb, coordinator::v1 as pb};
use faultd_tests::{
    CgroupGuard,
    faults::{all, experiment},
    lab::{Lab, LabNode, LabOptions},
    require_root,
    stats::{RATE_CONFIDENCE, assert_loss_rate, assert_no_loss},
};
use tonic::Code;

const PACKETS: u64 = 2_000;
const PPM_50: u32 = 500_000;

/// Loss seen by PACKETS datagrams from `cgroup` on `node`: (sent,
/// received).
fn loss_from(node: &LabNode, cgroup: &CgroupGuard) -> (u64, u64) {
    let (sent, sink) = node.udp_to_loopback(cgroup, PACKETS);
    (sent, sink.received)
}

fn loss_spec(
    id: &str,
    mode: pb::selection_mode::Mode,
    pattern: &str,
    secs: i64,
) -> pb::ExperimentSpec {
    let loss = pb::fault_template::Kind::Loss(apb::LossFault {
        probability_ppm: PPM_50,
        direction: apb::Direction::Egress.into(),
        filter: Some(apb::PacketFilter {
            protocol: apb::Protocol::Udp.into(),
            ..Default::default()
        }),
    });
    experiment(
        id,
        loss,
        apb::target_pattern::Kind::CgroupGlob(pattern.into()),
        mode,
        secs,
    )
}

#[tokio::test]
async fn a_lab_experiment_applies_over_mutual_tls() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(&LabOptions {
        nodes: 2,
        ..LabOptions::default()
    });
    let apps: Vec<CgroupGuard> = lab.children("app");
    let mut op = lab.operator();
    let glob = format!("{}/*/app", lab.root.relative_str());
    let x = op
        .create_experiment(pb::CreateExperimentRequest {
            spec: Some(loss_spec("smoke", all(), &glob, 20)),
            dry_run: false,
        })
        .await
        .expect("create")
        .into_inner();
    assert_eq!(x.state, i32::from(pb::ExperimentState::Running), "{x:?}");
    assert_eq!(x.targets.len(), 2);
    assert_eq!(lab.faults_everywhere().await.len(), 2);
    for (node, app) in lab.nodes.iter().zip(&apps) {
        let (sent, received) = loss_from(node, app);
        assert_loss_rate(
            &format!("{} app", node.name),
            sent,
            received,
            0.5,
            RATE_CONFIDENCE,
        );
    }
    let stopped = op
        .stop_experiment(pb::StopExperimentRequest {
            id: "smoke".into(),
            reason: "done".into(),
        })
        .await
        .expect("stop")
        .into_inner();
    assert_eq!(stopped.state, i32::from(pb::ExperimentState::Stopped));
    assert!(lab.faults_everywhere().await.is_empty());
    for (node, app) in lab.nodes.iter().zip(&apps) {
        let (sent, received) = loss_from(node, app);
        assert_no_loss(&format!("{} after stop", node.name), sent, received);
    }
}

async fn create(lab: &Lab, spec: pb::ExperimentSpec) -> pb::Experiment {
    lab.operator()
        .create_experiment(pb::CreateExperimentRequest {
            spec: Some(spec),
            dry_run: false,
        })
        .await
        .unwrap_or_else(|s| panic!("CreateExperiment: {s}"))
        .into_inner()
}

/// The lab's targets: `per_node` cgroups "app-K" under each node's scope.
fn targets(lab: &Lab, per_node: usize) -> Vec<Vec<CgroupGuard>> {
    lab.nodes
        .iter()
        .map(|n| {
            (1..=per_node)
                .map(|k| n.scope.child(&format!("app-{k}")))
                .collect()
        })
        .collect()
}

/// Measures every target and checks that exactly the `faulted` ones (by
/// cgroup path) lose half their datagrams, the others none.
fn check_effect(lab: &Lab, apps: &[Vec<CgroupGuard>], faulted: &[String], label: &str) {
    for (node, cgroups) in lab.nodes.iter().zip(apps) {
        for cg in cgroups {
            let (sent, received) = loss_from(node, cg);
            let what = format!("{label}: {} {}", node.name, cg.relative_str());
            if faulted.iter().any(|f| f == cg.relative_str()) {
                assert_loss_rate(&what, sent, received, 0.5, RATE_CONFIDENCE);
            } else {
                assert_no_loss(&what, sent, received);
            }
        }
    }
}

fn paths(x: &pb::Experiment) -> Vec<String> {
    x.targets.iter().map(|t| t.cgroup_path.clone()).collect()
}

/// Three agents, six targets: a percent-mode experiment hits exactly half
/// of them, measured with traffic, and ends at its deadline; StopExperiment
/// and HaltAll revert everything (measured); after HaltAll new experiments
/// are refused until Resume.
#[tokio::test]
async fn percent_mode_deadline_stop_and_halt_across_three_agents() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(&LabOptions::default());
    let apps = targets(&lab, 2);
    let glob = format!("{}/*/app-*", lab.root.relative_str());

    let start = Instant::now();
    let x = create(
        &lab,
        loss_spec("half", pb::selection_mode::Mode::Percent(50.0), &glob, 12),
    )
    .await;
    assert_eq!(x.state, i32::from(pb::ExperimentState::Running), "{x:?}");
    assert_eq!(x.matched_targets, 6);
    assert_eq!(x.targets.len(), 3, "50% of 6 targets");
    let held = lab.faults_everywhere().await;
    assert_eq!(held.len(), 3, "{held:?}");
    assert!(
        held.iter().all(|(_, f)| f.lease_id == "fdc:half"),
        "{held:?}"
    );
    check_effect(&lab, &apps, &paths(&x), "50% selected");
    let (x, _) = lab.wait_ended("half", Duration::from_secs(30)).await;
    let ran = start.elapsed();
    assert_eq!(x.state, i32::from(pb::ExperimentState::Completed), "{x:?}");
    assert!(
        ran >= Duration::from_secs(12) && ran < Duration::from_secs(16),
        "ended after {ran:?}, duration 12 s"
    );
    assert!(lab.faults_everywhere().await.is_empty());
    check_effect(&lab, &apps, &[], "after the deadline");
    println!("percent mode: 3 of 6 targets, ended after {ran:.1?} (duration 12 s)");

    let x = create(&lab, loss_spec("stop-me", all(), &glob, 600)).await;
    assert_eq!(x.targets.len(), 6);
    check_effect(&lab, &apps, &paths(&x), "all mode");
    let stopped = lab
        .operator()
        .stop_experiment(pb::StopExperimentRequest {
            id: "stop-me".into(),
            reason: "test".into(),
        })
        .await
        .expect("stop")
        .into_inner();
    assert_eq!(stopped.state, i32::from(pb::ExperimentState::Stopped));
    assert!(lab.faults_everywhere().await.is_empty());
    check_effect(&lab, &apps, &[], "after StopExperiment");

    let one = create(
        &lab,
        loss_spec("a", pb::selection_mode::Mode::Fixed(2), &glob, 600),
    )
    .await;
    let two = create(
        &lab,
        loss_spec(
            "b",
            pb::selection_mode::Mode::One(pb::selection_mode::One {}),
            &glob,
            600,
        ),
    )
    .await;
    assert_eq!(lab.faults_everywhere().await.len(), 3);
    let mut both = paths(&one);
    both.extend(paths(&two));
    // Two experiments may pick the same target; its loss then compounds,
    // so only check that none is lost outside them.
    let halt = lab
        .operator()
        .halt_all(pb::HaltAllRequest {
            reason: "test incident".into(),
        })
        .await
        .expect("halt")
        .into_inner();
    assert_eq!((halt.stopped, halt.reverted), (2, 3), "{halt:?}");
    assert!(lab.faults_everywhere().await.is_empty());
    check_effect(&lab, &apps, &[], "after HaltAll");
    for id in ["a", "b"] {
        let x = lab.experiment(id).await;
        assert_eq!(x.state, i32::from(pb::ExperimentState::Stopped));
        assert!(x.end_reason.contains("test incident"), "{}", x.end_reason);
    }
    let refused = lab
        .operator()
        .create_experiment(pb::CreateExperimentRequest {
            spec: Some(loss_spec("after-halt", all(), &glob, 60)),
            dry_run: false,
        })
        .await
        .expect_err("halted");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("halted"),
        "{}",
        refused.message()
    );
    assert!(
        lab.faults_everywhere().await.is_empty(),
        "nothing applied while halted"
    );
    let resumed = lab
        .operator()
        .resume(pb::ResumeRequest {})
        .await
        .expect("resume")
        .into_inner();
    assert!(resumed.was_halted);
    let x = create(&lab, loss_spec("after-halt", all(), &glob, 60)).await;
    assert_eq!(x.state, i32::from(pb::ExperimentState::Running));
    drop(both);
}

/// How long after the last renewal a lease's faults may still act: the
/// ttl, plus the agent's sweep and the test's polling granularity.
fn within_ttl(lab_ttl: Duration) -> Duration {
    lab_ttl + Duration::from_millis(1500)
}

/// Polls `node`'s agent (Unix socket) until it holds no fault of
/// experiment `id`; returns how long that took.
async fn until_gone(node: &LabNode, id: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    let lease = format!("fdc:{id}");
    let mut client = node.agent.client().await;
    loop {
        let faults = client
            .list_faults(apb::ListFaultsRequest {})
            .await
            .expect("ListFaults")
            .into_inner()
            .faults;
        if !faults.iter().any(|f| f.lease_id == lease) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{}: faults of {id} still held after {limit:?}",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The dead-man's switch, a network partition: an agent the coordinator
/// cannot reach ends its faults within the lease ttl, measured; the
/// experiment aborts, reverting the others.
#[tokio::test]
async fn an_agent_cut_off_from_the_coordinator_ends_its_faults_within_the_ttl() {
    if !require_root() {
        return;
    }
    let opts = LabOptions::default();
    let lab = Lab::new(&opts);
    let apps = targets(&lab, 1);
    let glob = format!("{}/*/app-1", lab.root.relative_str());
    let x = create(&lab, loss_spec("cut", all(), &glob, 600)).await;
    check_effect(&lab, &apps, &paths(&x), "before the cut");
    let cut = &lab.nodes[1];
    cut.cut_from_coordinator();
    // Still held half a ttl on: the lease was renewed at most a third of a
    // ttl before the cut.
    tokio::time::sleep(opts.lease_ttl / 2).await;
    let (sent, received) = loss_from(cut, &apps[1][0]);
    assert_loss_rate(
        "cut node, half a ttl on",
        sent,
        received,
        0.5,
        RATE_CONFIDENCE,
    );
    let gone = until_gone(cut, "cut", within_ttl(opts.lease_ttl)).await + opts.lease_ttl / 2;
    let (sent, received) = loss_from(cut, &apps[1][0]);
    assert_no_loss("cut node after its lease lapsed", sent, received);
    println!(
        "partitioned agent: faults ended {:.2} s after the cut (lease ttl {:?})",
        gone.as_secs_f64(),
        opts.lease_ttl
    );
    let (x, _) = lab.wait_ended("cut", Duration::from_secs(20)).await;
    assert_eq!(x.state, i32::from(pb::ExperimentState::Aborted), "{x:?}");
    assert!(x.end_reason.contains("node-2"), "{}", x.end_reason);
    cut.heal();
    check_effect(&lab, &apps, &[], "after the abort");
    assert!(lab.faults_everywhere().await.is_empty());
}

/// kill -9 of the coordinator: every agent ends its faults within the ttl
/// (measured); the restarted coordinator lists what the agents hold,
/// records the experiment as aborted, reverts an orphan of its own and
/// reports a fault someone else applied without touching it.
#[tokio::test]
async fn a_killed_coordinators_faults_end_within_the_ttl_and_a_restart_reconciles() {
    if !require_root() {
        return;
    }
    let opts = LabOptions::default();
    let mut lab = Lab::new(&opts);
    let apps = targets(&lab, 1);
    let glob = format!("{}/*/app-1", lab.root.relative_str());
    let x = create(&lab, loss_spec("killed", all(), &glob, 600)).await;
    check_effect(&lab, &apps, &paths(&x), "before kill -9");
    // An orphan under one of the coordinator's leases (as if its record
    // were lost), and a fault applied on the node by hand.
    let spare = lab.nodes[0].scope.child("spare");
    let foreign = lab.nodes[2].scope.child("foreign");
    let mut n1 = lab.nodes[0].agent.client().await;
    n1.apply_fault(apb::ApplyFaultRequest {
        spec: Some(faultd_tests::faults::Loss::new("orphan", spare.relative_str(), 1).spec()),
        lease: Some(apb::Lease {
            id: "fdc:ghost".into(),
            ttl: Some(prost_types::Duration {
                seconds: 120,
                nanos: 0,
            }),
        }),
    })
    .await
    .expect("orphan");
    let mut n3 = lab.nodes[2].agent.client().await;
    n3.apply_fault(faultd_tests::faults::Loss::new("by-hand", foreign.relative_str(), 1).request())
        .await
        .expect("foreign");

    lab.coordinator.kill();
    let mut worst = Duration::ZERO;
    for (i, node) in lab.nodes.iter().enumerate() {
        let took = until_gone(node, "killed", within_ttl(opts.lease_ttl)).await;
        worst = worst.max(took);
        let (sent, received) = loss_from(node, &apps[i][0]);
        assert_no_loss(&format!("{} after the lease", node.name), sent, received);
    }
    println!(
        "coordinator killed: every agent's faults ended within {:.2} s (lease ttl {:?})",
        worst.as_secs_f64(),
        opts.lease_ttl
    );

    lab.coordinator.restart();
    let (x, _) = lab.wait_ended("killed", Duration::from_secs(20)).await;
    assert_eq!(x.state, i32::from(pb::ExperimentState::Aborted), "{x:?}");
    assert!(x.end_reason.contains("lapsed"), "{}", x.end_reason);
    let status = lab
        .operator()
        .get_status(pb::GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let found: Vec<(String, String, String)> = status
        .reconcile
        .iter()
        .map(|f| (f.node.clone(), f.fault_id.clone(), f.action.clone()))
        .collect();
    println!("reconcile findings: {found:?}");
    assert!(
        found.contains(&("node-1".into(), "orphan".into(), "reverted orphan".into())),
        "{found:?}"
    );
    assert!(
        found.contains(&("node-3".into(), "by-hand".into(), "foreign".into())),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .filter(|(_, f, a)| f.starts_with("fdc:killed:") && a == "resumed")
            .count()
            == 3,
        "{found:?}"
    );
    let left: Vec<String> = lab
        .faults_everywhere()
        .await
        .into_iter()
        .map(|(n, f)| format!("{n}:{}", f.spec.map(|s| s.id).unwrap_or_default()))
        .collect();
    assert_eq!(
        left,
        ["node-3:by-hand"],
        "the orphan reverted, the foreign fault kept"
    );
}

/// A coordinator restarted within the lease ttl resumes its experiments:
/// their faults never stop.
#[tokio::test]
async fn a_coordinator_restarted_within_the_ttl_resumes_its_experiments() {
    if !require_root() {
        return;
    }
    let opts = LabOptions {
        lease_ttl: Duration::from_secs(9),
        ..LabOptions::default()
    };
    let mut lab = Lab::new(&opts);
    let apps = targets(&lab, 1);
    let glob = format!("{}/*/app-1", lab.root.relative_str());
    let x = create(&lab, loss_spec("resumed", all(), &glob, 600)).await;
    lab.coordinator.kill();
    lab.coordinator.restart();
    tokio::time::sleep(opts.lease_ttl * 2).await;
    assert_eq!(lab.faults_everywhere().await.len(), 3);
    check_effect(&lab, &apps, &paths(&x), "two ttls after the restart");
    assert_eq!(
        lab.experiment("resumed").await.state,
        i32::from(pb::ExperimentState::Running)
    );
}

/// SIGSTOP an agent: nobody can renew its lease, and its kernel ends the
/// faults at the lease's expiry all the same (measured while it is
/// frozen).
#[tokio::test]
async fn a_frozen_agents_faults_end_at_the_lease_expiry() {
    if !require_root() {
        return;
    }
    let opts = LabOptions::default();
    let lab = Lab::new(&opts);
    let apps = targets(&lab, 1);
    let glob = format!("{}/*/app-1", lab.root.relative_str());
    let x = create(&lab, loss_spec("frozen", all(), &glob, 600)).await;
    check_effect(&lab, &apps, &paths(&x), "before SIGSTOP");
    let frozen = &lab.nodes[0];
    frozen.agent.freeze();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (sent, received) = loss_from(frozen, &apps[0][0]);
    assert_loss_rate(
        "frozen agent, just after",
        sent,
        received,
        0.5,
        RATE_CONFIDENCE,
    );
    tokio::time::sleep(within_ttl(opts.lease_ttl).saturating_sub(t0.elapsed())).await;
    let (sent, received) = loss_from(frozen, &apps[0][0]);
    assert_no_loss("frozen agent past the lease expiry", sent, received);
    println!(
        "frozen agent: no loss {:.2} s after SIGSTOP (lease ttl {:?}); the kernel ended the faults",
        t0.elapsed().as_secs_f64(),
        opts.lease_ttl
    );
    frozen.agent.thaw();
    until_gone(frozen, "frozen", Duration::from_secs(10)).await;
    let (x, _) = lab.wait_ended("frozen", Duration::from_secs(30)).await;
    assert_eq!(x.state, i32::from(pb::ExperimentState::Aborted), "{x:?}");
}

/// `faultctl experiment run FILE`: a dry run lists the targets and applies
/// nothing; the real run follows the events to the end and exits 0 when
/// the experiment completed, its fault gone.
#[tokio::test]
async fn faultctl_runs_an_experiment_file_and_its_dry_run_applies_nothing() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(&LabOptions {
        nodes: 2,
        ..LabOptions::default()
    });
    let _apps = lab.children("app");
    let file = lab.dir().join("drill.yaml");
    std::fs::write(
        &file,
        format!(
            "id: file-drill\nhypothesis: nothing breaks\nduration: 3s\ntargets:\n  \
             cgroup_globs: [\"{}/*/app\"]\nfaults:\n  - loss --percent 50 --egress --protocol udp\n",
            lab.root.relative_str()
        ),
    )
    .expect("experiment file");
    let file = file.display().to_string();
    let (status, out, err) = lab.faultctl(&["experiment", "run", &file, "--dry-run"]);
    println!("dry run:\n{out}{err}");
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("dry run: nothing was applied; 2 faults on 2 targets"),
        "{out}"
    );
    assert!(
        lab.faults_everywhere().await.is_empty(),
        "a dry run applies nothing"
    );
    let listed = lab
        .operator()
        .list_experiments(pb::ListExperimentsRequest::default())
        .await
        .expect("ListExperiments")
        .into_inner()
        .experiments;
    assert!(listed.is_empty(), "a dry run records nothing: {listed:?}");

    let (status, out, err) = lab.faultctl(&["experiment", "run", &file]);
    println!("run:\n{out}{err}");
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("fault applied"),
        "the events as they came: {out}"
    );
    assert!(out.contains("completed"), "{out}");
    assert!(lab.faults_everywhere().await.is_empty());
    assert_eq!(
        lab.experiment("file-drill").await.state,
        i32::from(pb::ExperimentState::Completed)
    );
}
