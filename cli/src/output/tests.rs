#![expect(clippy::unwrap_used, reason = "tests")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faultd_proto::agent::v1 as pb;

use super::*;

const APPLIED: i64 = 1_750_000_000; // 2025-06-15T15:06:40Z

fn sample_fault() -> pb::Fault {
    pb::Fault {
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
        target: Some(pb::ResolvedTarget {
            cgroup_path: "system.slice/postgres.service".into(),
            cgroup_id: 4242,
        }),
        state: pb::FaultState::Active.into(),
        applied_at: Some(prost_types::Timestamp {
            seconds: APPLIED,
            nanos: 0,
        }),
        deadline: Some(prost_types::Timestamp {
            seconds: APPLIED + 5_400,
            nanos: 0,
        }),
        counters: Some(pb::Counters {
            matched: 123_456,
            injected: 37_037,
        }),
        backend: "cgroup_skb".into(),
        ..Default::default()
    }
}

fn at(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
}

#[test]
fn view_of_a_fault() {
    let view = FaultView::new(&sample_fault(), at(APPLIED + 600));
    assert_eq!(view.id, "db-loss");
    assert_eq!(view.state, StateView::Active);
    assert_eq!(
        view.target,
        Some(TargetView::SystemdUnit {
            unit: "postgres.service".into()
        })
    );
    assert_eq!(view.duration_ms, Some(5_400_000));
    assert_eq!(view.remaining_ms, Some(4_800_000));
    assert_eq!(view.applied_at.as_deref(), Some("2025-06-15T15:06:40Z"));
    assert_eq!(view.deadline.as_deref(), Some("2025-06-15T16:36:40Z"));
    assert_eq!(
        view.counters,
        CountersView {
            matched: 123_456,
            dropped: 37_037
        }
    );
    let Some(KindView::Loss(loss)) = &view.fault else {
        unreachable!("sample is a loss fault");
    };
    assert_eq!(
        loss.remote_ports,
        Some(PortsView {
            min: 5432,
            max: 5432
        })
    );
}

#[test]
fn remaining_only_for_active_faults() {
    let mut fault = sample_fault();
    // Past the deadline but still reported active: nothing negative.
    let view = FaultView::new(&fault, at(APPLIED + 10_000));
    assert_eq!(view.remaining_ms, Some(0));
    fault.state = pb::FaultState::Reverted.into();
    let view = FaultView::new(&fault, at(APPLIED + 60));
    assert_eq!(view.remaining_ms, None);
}

#[test]
fn table_of_a_fault() {
    let view = FaultView::new(&sample_fault(), at(APPLIED + 600));
    let out = fault_table(&[view]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for header in [
        "ID",
        "KIND",
        "TARGET",
        "STATE",
        "REMAINING",
        "MATCHED",
        "DROPPED",
        "DETAILS",
    ] {
        assert!(lines[0].contains(header), "{out}");
    }
    for cell in [
        "db-loss",
        "loss",
        "unit:postgres.service",
        "active",
        "1h20m",
        "123456",
        "37037",
        "30% egress udp dst 10.0.0.0/8 port 5432",
    ] {
        assert!(lines[1].contains(cell), "missing {cell:?} in\n{out}");
    }
    // Columns line up: each header starts where its cell starts (left
    // aligned) or ends where it ends (right aligned).
    assert_eq!(lines[0].find("DETAILS"), lines[1].find("30% egress"));
    assert_eq!(lines[0].find("TARGET"), lines[1].find("unit:"));
    let end = |line: &str, s: &str| line.find(s).map(|i| i + s.len());
    assert_eq!(end(lines[0], "MATCHED"), end(lines[1], "123456"));
    assert!(
        out.lines().all(|l| l == l.trim_end()),
        "trailing spaces:\n{out}"
    );
}

#[test]
fn details_variants() {
    let mut loss = LossView {
        probability_ppm: 5_000,
        direction: DirectionView::Both,
        protocol: ProtocolView::Any,
        remote_cidr: None,
        remote_ports: None,
    };
    assert_eq!(loss.details(), "0.5% both");
    loss.direction = DirectionView::Ingress;
    loss.protocol = ProtocolView::Tcp;
    loss.remote_cidr = Some("fd00::/8".into());
    loss.remote_ports = Some(PortsView {
        min: 8000,
        max: 8080,
    });
    assert_eq!(
        loss.details(),
        "0.5% ingress tcp src fd00::/8 port 8000-8080"
    );
}

#[test]
fn pod_targets() {
    let whole = TargetView::from(pb::target::Kind::Pod(pb::KubernetesPod {
        uid: "u1".into(),
        container_id: String::new(),
    }));
    assert_eq!(whole.short(), "pod:u1");
    let one = TargetView::from(pb::target::Kind::Pod(pb::KubernetesPod {
        uid: "u1".into(),
        container_id: "abc".into(),
    }));
    assert_eq!(one.short(), "pod:u1/abc");
}

#[test]
fn json_round_trip() {
    let view = FaultView::new(&sample_fault(), at(APPLIED + 600));
    let text = json(&view).unwrap();
    let back: FaultView = serde_json::from_str(&text).unwrap();
    assert_eq!(back, view);
    // The shape scripts rely on.
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["id"], "db-loss");
    assert_eq!(v["state"], "active");
    assert_eq!(v["target"]["type"], "systemd_unit");
    assert_eq!(v["fault"]["kind"], "loss");
    assert_eq!(v["fault"]["probability_ppm"], 300_000);
    assert_eq!(v["fault"]["direction"], "egress");
    assert_eq!(v["counters"]["dropped"], 37_037);
    assert!(text.contains("\n  \"id\""), "not pretty:\n{text}");

    let list = vec![view.clone(), view];
    let back: Vec<FaultView> = serde_json::from_str(&json(&list).unwrap()).unwrap();
    assert_eq!(back, list);
}

#[test]
fn empty_fault_converts() {
    let view = FaultView::new(&pb::Fault::default(), at(APPLIED));
    assert_eq!(view.state, StateView::Unspecified);
    assert_eq!(view.target, None);
    assert_eq!(view.fault, None);
    let out = fault_table(std::slice::from_ref(&view));
    assert!(out.contains("unknown"), "{out}");
    let back: FaultView = serde_json::from_str(&json(&view).unwrap()).unwrap();
    assert_eq!(back, view);
}

#[test]
fn capabilities() {
    let caps = pb::Capabilities {
        kernel_release: "6.8.0-45-generic".into(),
        agent_version: "0.1.0".into(),
        cgroup2_mount: "/sys/fs/cgroup".into(),
        features: vec![
            pb::Feature {
                name: "cgroup_skb".into(),
                available: true,
                detail: "probed BPF_PROG_TYPE_CGROUP_SKB".into(),
            },
            pb::Feature {
                name: "bpf_lsm".into(),
                available: false,
                detail: "bpf not in /sys/kernel/security/lsm".into(),
            },
        ],
        programs: vec![pb::KernelObject {
            name: "loss_egress".into(),
            id: 97,
        }],
        maps: vec![],
        limits: Some(pb::Limits {
            max_duration: Some(prost_types::Duration {
                seconds: 3_600,
                nanos: 0,
            }),
            max_faults: 64,
            max_rules_per_cgroup: 16,
            ..Default::default()
        }),
        qdiscs: Vec::new(),
        ..Default::default()
    };
    let view = CapabilitiesView::from(&caps);
    let out = capabilities_table(&view);
    for s in [
        "6.8.0-45-generic",
        "/sys/fs/cgroup",
        "max duration 1h, max faults 64, max rules per cgroup 16",
        "FEATURE",
        "AVAILABLE",
    ] {
        assert!(out.contains(s), "missing {s:?} in\n{out}");
    }
    let line = |name: &str| out.lines().find(|l| l.starts_with(name)).unwrap();
    assert!(line("cgroup_skb").contains("yes"), "{out}");
    assert!(line("bpf_lsm").contains("no"), "{out}");
    assert!(line("loss_egress").ends_with("97"), "{out}");
    let back: CapabilitiesView = serde_json::from_str(&json(&view).unwrap()).unwrap();
    assert_eq!(back, view);
}

#[test]
fn rfc3339_dates() {
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(at(1_709_251_199)), "2024-02-29T23:59:59Z");
    assert_eq!(rfc3339(at(4_102_444_800)), "2100-01-01T00:00:00Z");
}
