//! Partition and service-to-service experiments across namespaced
//! agents. Partitions: four nodes, zone a
//! (node-1, node-3) against zone b (node-2, node-4), each node in its own
//! network namespace on the lab's bridge. Traffic is measured between every
//! pair of nodes from each node's target cgroup to a sink on the other
//! node's address, and to the hub (outside both sides). Service to
//! service: a fault on node-1's target filtered to node-2's target's
//! address and port, measured against other ports and other nodes. Root
//! only; prints SKIP otherwise.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use faultd_proto::{agent::v1 as apb, coordinator::v1 as pb};
use faultd_tests::{
    CgroupGuard,
    lab::{HUB_ADDR, Lab, LabNode, LabOptions},
    require_root,
    stats::assert_no_loss,
    traffic::{Server, SinkOptions, Traffic, UdpSendOptions, udp_send_with, udp_sink_with},
};

const PACKETS: u64 = 500;

/// Datagrams sent from `cgroup` (or no cgroup) inside `from`'s namespace to
/// a sink at `to_addr` inside `to_ns` (itself in `sink_cgroup` if given):
/// (sent, received).
fn send(
    from: &LabNode,
    cgroup: Option<&CgroupGuard>,
    to_ns: std::path::PathBuf,
    to_addr: Ipv4Addr,
    sink_cgroup: Option<&CgroupGuard>,
) -> (u64, u64) {
    send_to_port(from, cgroup, to_ns, to_addr, 0, sink_cgroup)
}

/// [`send`] to a sink on `port` (0: any free one).
fn send_to_port(
    from: &LabNode,
    cgroup: Option<&CgroupGuard>,
    to_ns: std::path::PathBuf,
    to_addr: Ipv4Addr,
    port: u16,
    sink_cgroup: Option<&CgroupGuard>,
) -> (u64, u64) {
    let sink = udp_sink_with(
        sink_cgroup,
        &format!("{to_addr}:{port}"),
        &SinkOptions {
            netns: Some(to_ns),
            ..SinkOptions::default()
        },
    );
    let sent = udp_send_with(
        cgroup,
        &UdpSendOptions {
            netns: Some(from.netns.path()),
            pps: 20_000,
            ..UdpSendOptions::new(SocketAddr::from((to_addr, sink.port())), PACKETS)
        },
    );
    (sent.sent, sink.stop().received)
}

/// Checks every ordered pair of nodes, target to target's node: `cut(i, j)`
/// says whether node i's target must reach node j (nothing arrives) or not
/// (everything arrives).
fn check_pairs(lab: &Lab, apps: &[CgroupGuard], cut: impl Fn(usize, usize) -> bool, when: &str) {
    for (i, from) in lab.nodes.iter().enumerate() {
        for (j, to) in lab.nodes.iter().enumerate() {
            if i == j {
                continue;
            }
            let (sent, received) = send(from, Some(&apps[i]), to.netns.path(), to.addr, None);
            let label = format!("{when}: {} -> {}", from.name, to.name);
            println!("{label}: {received} of {sent} arrived");
            if cut(i, j) {
                assert!(sent > 0, "{label}: nothing sent");
                assert_eq!(
                    received, 0,
                    "{label}: expected no datagram through the partition"
                );
            } else {
                assert_no_loss(&label, sent, received);
            }
        }
    }
}

/// Zone a holds the odd nodes (index 0, 2), zone b the even ones.
fn zone_a(i: usize) -> bool {
    i.is_multiple_of(2)
}

#[derive(Debug, serde::Deserialize)]
struct ConnectReport {
    connected: u64,
    errors: std::collections::BTreeMap<String, u64>,
}

/// One TCP connect() from `cgroup` on `from` to a listener on `to`'s
/// address: the errno's name, or None when it connected.
fn connect(from: &LabNode, cgroup: &CgroupGuard, to: &LabNode) -> Option<String> {
    let to_ns = to.netns.path().display().to_string();
    let bind = format!("{}:0", to.addr);
    let sink = Server::start(
        &[
            "--netns",
            &to_ns,
            "tcp-sink",
            "--bind",
            &bind,
            "--timeout-ms",
            "5000",
        ],
        &bind,
        None,
    );
    let from_ns = from.netns.path().display().to_string();
    let dst = sink.addr().to_string();
    let r: ConnectReport = Traffic::spawn(
        &[
            "--netns",
            &from_ns,
            "tcp-connect",
            "--dst",
            &dst,
            "--count",
            "1",
            "--timeout-ms",
            "3000",
        ],
        Some(cgroup),
    )
    .finish_as();
    let errno = r.errors.keys().next().cloned();
    assert_eq!(r.connected + u64::from(errno.is_some()), 1, "{r:?}");
    errno
}

fn partition(id: &str, lab: &Lab, one_way: bool, secs: i64) -> pb::ExperimentSpec {
    partition_with(id, lab, one_way, pb::PartitionAction::Drop, secs)
}

fn partition_with(
    id: &str,
    lab: &Lab,
    one_way: bool,
    action: pb::PartitionAction,
    secs: i64,
) -> pb::ExperimentSpec {
    let side = |zone: &str| pb::Selector {
        node_labels: [("zone".to_owned(), zone.to_owned())].into(),
        targets: vec![apb::TargetPattern {
            kind: Some(apb::target_pattern::Kind::CgroupGlob(format!(
                "{}/*/app",
                lab.root.relative_str()
            ))),
        }],
        ..Default::default()
    };
    pb::ExperimentSpec {
        id: id.into(),
        duration: Some(prost_types::Duration {
            seconds: secs,
            nanos: 0,
        }),
        description: "zone a against zone b".into(),
        partition: Some(pb::Partition {
            a: Some(side("a")),
            b: Some(side("b")),
            direction: if one_way {
                pb::PartitionDirection::AToB
            } else {
                pb::PartitionDirection::Both
            }
            .into(),
            action: action.into(),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_partition_cuts_between_zones_only_and_heals_on_stop_and_at_its_deadline() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(&LabOptions {
        nodes: 4,
        ..LabOptions::default()
    });
    let apps: Vec<CgroupGuard> = lab.children("app");
    let mut op = lab.operator();
    check_pairs(&lab, &apps, |_, _| false, "before");

    // Both ways.
    let x = op
        .create_experiment(pb::CreateExperimentRequest {
            spec: Some(partition("split", &lab, false, 600)),
            dry_run: false,
        })
        .await
        .expect("CreateExperiment")
        .into_inner();
    assert_eq!(x.state, i32::from(pb::ExperimentState::Running), "{x:?}");
    // Two targets a side, each filtered to the other side's two addresses
    // (10.77.0.11 and .13 are not siblings: two /32s).
    assert_eq!(x.targets.len(), 8, "{x:?}");
    assert_eq!(lab.faults_everywhere().await.len(), 8);
    check_pairs(
        &lab,
        &apps,
        |i, j| zone_a(i) != zone_a(j),
        "split both ways",
    );
    // Outside both sides: a target reaches the hub, and a process outside
    // the targets on node-1 reaches a process outside them on node-2.
    let (sent, received) = send(
        &lab.nodes[0],
        Some(&apps[0]),
        lab.hub.path(),
        HUB_ADDR,
        None,
    );
    assert_no_loss("split: node-1 target -> hub", sent, received);
    let (sent, received) = send(
        &lab.nodes[0],
        None,
        lab.nodes[1].netns.path(),
        lab.nodes[1].addr,
        None,
    );
    assert_no_loss(
        "split: node-1 non-target -> node-2 non-target",
        sent,
        received,
    );

    let stopped = lab.stop_experiment("split").await;
    assert_eq!(stopped.state, i32::from(pb::ExperimentState::Stopped));
    assert_eq!(lab.faults_everywhere().await.len(), 0);
    check_pairs(&lab, &apps, |_, _| false, "after stop");

    // One way, A -> B, healing at its deadline.
    let secs = 6;
    let created = Instant::now();
    let x = op
        .create_experiment(pb::CreateExperimentRequest {
            spec: Some(partition("one-way", &lab, true, secs)),
            dry_run: false,
        })
        .await
        .expect("CreateExperiment")
        .into_inner();
    assert_eq!(x.state, i32::from(pb::ExperimentState::Running), "{x:?}");
    check_pairs(
        &lab,
        &apps,
        |i, j| zone_a(i) && !zone_a(j),
        "one way a -> b",
    );
    // B's targets drop what arrives from A's addresses, whoever sent it.
    let (sent, received) = send(
        &lab.nodes[0],
        None,
        lab.nodes[1].netns.path(),
        lab.nodes[1].addr,
        Some(&apps[1]),
    );
    println!("one way: node-1 non-target -> node-2 target: {received} of {sent} arrived");
    assert_eq!(
        received, 0,
        "node-2's target must drop what arrives from zone a"
    );
    let (x, _) = lab.wait_ended("one-way", Duration::from_secs(30)).await;
    let ended = created.elapsed();
    assert_eq!(x.state, i32::from(pb::ExperimentState::Completed), "{x:?}");
    println!(
        "one-way partition of {secs} s ended {:.2} s after CreateExperiment",
        ended.as_secs_f64()
    );
    assert_eq!(lab.faults_everywhere().await.len(), 0);
    check_pairs(&lab, &apps, |_, _| false, "after the deadline");
}

/// `--refuse-connect` one way: connect() from zone a's target to zone b
/// fails at once with ECONNREFUSED, the other way connects, and after the
/// stop both connect.
#[tokio::test]
async fn a_refusing_partition_fails_connect_across_it_only() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(&LabOptions {
        nodes: 2,
        ..LabOptions::default()
    });
    let apps: Vec<CgroupGuard> = lab.children("app");
    let (a, b) = (&lab.nodes[0], &lab.nodes[1]);
    assert_eq!(connect(a, &apps[0], b), None, "before");
    let mut op = lab.operator();
    let x = op
        .create_experiment(pb::CreateExperimentRequest {
            spec: Some(partition_with(
                "refuse",
                &lab,
                true,
                pb::PartitionAction::RefuseConnect,
                600,
            )),
            dry_run: false,
        })
        .await
        .expect("CreateExperiment")
        .into_inner();
    assert_eq!(x.state, i32::from(pb::ExperimentState::Running), "{x:?}");
    // One way: only zone a's target gets a fault.
    assert_eq!(x.targets.len(), 1, "{x:?}");
    let refused = connect(a, &apps[0], b);
    println!("refusing: node-1 -> node-2: {refused:?}; node-2 -> node-1: connects");
    assert_eq!(refused.as_deref(), Some("ECONNREFUSED"));
    assert_eq!(connect(b, &apps[1], a), None, "b -> a is not cut");
    lab.stop_experiment("refuse").await;
    assert_eq!(lab.faults_everywhere().await.len(), 0);
    assert_eq!(connect(a, &apps[0], b), None, "after stop");
}

/// Service to service: 100% loss from node-1's target ("checkout") to
/// node-2's target ("payment") on UDP port 5000 only, the destination
/// given by selector and resolved to payment's address by its agent.
#[tokio::test]
async fn a_service_to_service_fault_hits_that_destination_and_port_only() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(&LabOptions {
        nodes: 3,
        ..LabOptions::default()
    });
    let apps: Vec<CgroupGuard> = lab.children("app");
    let glob = format!("{}/*/app", lab.root.relative_str());
    let on = |node: &str| pb::Selector {
        node_names: vec![node.into()],
        targets: vec![apb::TargetPattern {
            kind: Some(apb::target_pattern::Kind::CgroupGlob(glob.clone())),
        }],
        ..Default::default()
    };
    let mut spec = faultd_tests::faults::experiment(
        "checkout-to-payment",
        pb::fault_template::Kind::Loss(apb::LossFault {
            probability_ppm: 1_000_000,
            direction: apb::Direction::Egress.into(),
            filter: None,
        }),
        apb::target_pattern::Kind::CgroupGlob(glob.clone()),
        faultd_tests::faults::all(),
        600,
    );
    spec.selector = Some(on("node-1"));
    spec.destination = Some(pb::Destination {
        selector: Some(on("node-2")),
        port_min: 5000,
        protocol: apb::Protocol::Udp.into(),
        ..Default::default()
    });
    let mut op = lab.operator();
    let x = op
        .create_experiment(pb::CreateExperimentRequest {
            spec: Some(spec),
            dry_run: false,
        })
        .await
        .expect("CreateExperiment")
        .into_inner();
    assert_eq!(x.state, i32::from(pb::ExperimentState::Running), "{x:?}");
    assert_eq!(x.targets.len(), 1, "{x:?}");
    let (payment, other) = (&lab.nodes[1], &lab.nodes[2]);
    let measure = |label: &str, from: usize, to: &LabNode, port: u16| {
        let (sent, received) = send_to_port(
            &lab.nodes[from],
            Some(&apps[from]),
            to.netns.path(),
            to.addr,
            port,
            None,
        );
        println!("{label}: {received} of {sent} arrived");
        (sent, received)
    };
    let (sent, received) = measure("checkout -> payment:5000", 0, payment, 5000);
    assert!(sent > 0);
    assert_eq!(received, 0, "the faulted path");
    let (sent, received) = measure("checkout -> payment:5001", 0, payment, 5001);
    assert_no_loss("another port", sent, received);
    let (sent, received) = measure("checkout -> other:5000", 0, other, 5000);
    assert_no_loss("another destination", sent, received);
    let (sent, received) = measure("other -> payment:5000", 2, payment, 5000);
    assert_no_loss("another source", sent, received);
    lab.stop_experiment("checkout-to-payment").await;
    let (sent, received) = measure("after stop: checkout -> payment:5000", 0, payment, 5000);
    assert_no_loss("after stop", sent, received);
    assert_eq!(lab.faults_everywhere().await.len(), 0);
}
