//! The coordinator end to end: several agents, each in its own network
//! namespace with its own address, node name, socket, state directory and
//! cgroup scope, and one coordinator, all over mutual TLS (`lab`). Faults
//! are measured with traffic from the targets, as the loss tests do.
//! Root only; each test prints SKIP otherwise.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use faultd_proto::{agent::v1 as apb, coordinator::v1 as pb};
use faultd_tests::{
    CgroupGuard,
    lab::{Lab, LabNode, LabOptions},
    require_root,
    stats::{RATE_CONFIDENCE, assert_loss_rate, assert_no_loss},
    traffic::{SinkOptions, UdpSendOptions, udp_send_with, udp_sink_with},
};
use tonic::Code;

const PACKETS: u64 = 2_000;
const PPM_50: u32 = 500_000;

/// Loss seen by `count` datagrams from `cgroup` on `node`, sent inside the
/// node's namespace to a sink on its loopback.
fn loss_from(node: &LabNode, cgroup: &CgroupGuard) -> (u64, u64) {
    let sink = udp_sink_with(
        None,
        "127.0.0.1:0",
        &SinkOptions {
            netns: Some(node.netns.path()),
            ..SinkOptions::default()
        },
    );
    let sent = udp_send_with(
        Some(cgroup),
        &UdpSendOptions {
            netns: Some(node.netns.path()),
            pps: 20_000,
            ..UdpSendOptions::new(SocketAddr::from(([127, 0, 0, 1], sink.port())), PACKETS)
        },
    );
    let received = sink.stop().received;
    (sent.sent, received)
}

fn loss_spec(
    id: &str,
    mode: pb::selection_mode::Mode,
    pattern: &str,
    secs: i64,
) -> pb::ExperimentSpec {
    pb::ExperimentSpec {
        id: id.into(),
        faults: vec![pb::FaultTemplate {
            kind: Some(pb::fault_template::Kind::Loss(apb::LossFault {
                probability_ppm: PPM_50,
                direction: apb::Direction::Egress.into(),
                filter: Some(apb::PacketFilter {
                    protocol: apb::Protocol::Udp.into(),
                    ..Default::default()
                }),
            })),
        }],
        selector: Some(pb::Selector {
            targets: vec![apb::TargetPattern {
                kind: Some(apb::target_pattern::Kind::CgroupGlob(pattern.into())),
            }],
            ..Default::default()
        }),
        mode: Some(pb::SelectionMode { mode: Some(mode) }),
        duration: Some(prost_types::Duration {
            seconds: secs,
            nanos: 0,
        }),
        description: "test".into(),
    }
}

fn all() -> pb::selection_mode::Mode {
    pb::selection_mode::Mode::All(pb::selection_mode::All {})
}

/// Every fault every agent holds, asked over each agent's Unix socket.
async fn faults_everywhere(lab: &Lab) -> Vec<(String, apb::Fault)> {
    let mut out = Vec::new();
    for n in &lab.nodes {
        let mut c = n.agent.client().await;
        for f in c
            .list_faults(apb::ListFaultsRequest {})
            .await
            .expect("ListFaults")
            .into_inner()
            .faults
        {
            out.push((n.name.clone(), f));
        }
    }
    out
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
    let apps: Vec<CgroupGuard> = lab.nodes.iter().map(|n| n.scope.child("app")).collect();
    let mut op = lab.operator();
    let glob = format!("{}/*/app", lab.root.relative_str());
    let x = op
        .create_experiment(pb::CreateExperimentRequest {
            spec: Some(loss_spec("smoke", all(), &glob, 20)),
        })
        .await
        .expect("create")
        .into_inner();
    assert_eq!(x.state, i32::from(pb::ExperimentState::Running), "{x:?}");
    assert_eq!(x.targets.len(), 2);
    assert_eq!(faults_everywhere(&lab).await.len(), 2);
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
    assert!(faults_everywhere(&lab).await.is_empty());
    for (node, app) in lab.nodes.iter().zip(&apps) {
        let (sent, received) = loss_from(node, app);
        assert_no_loss(&format!("{} after stop", node.name), sent, received);
    }
    let _ = (Instant::now(), Duration::ZERO, Code::Ok);
}
