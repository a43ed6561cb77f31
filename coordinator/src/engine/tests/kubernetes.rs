//! The engine with Kubernetes discovery: kube's client against the fake
//! API server (kubernetes/fake_api.rs), the in-memory agents on the nodes
//! it lists. Real time, not paused: the client talks over real sockets.

use super::*;
use crate::kubernetes::{
    Kubernetes,
    fake_api::{
        CHECKOUT_A1, CHECKOUT_ADDED, CHECKOUT_B1, COREDNS, FakeApi, POD_ADDED, config, eventually,
    },
};

/// The fixtures' nodes, each with an agent holding the pods the API says
/// run there (and coredns's cgroup on worker-a1).
fn cluster_agents() -> Fake {
    let fake = Fake::default();
    let pods: [(&str, &[&str]); 3] = [
        ("worker-a1", &[CHECKOUT_A1, COREDNS]),
        ("worker-a2", &[CHECKOUT_ADDED]),
        ("worker-b1", &[CHECKOUT_B1]),
    ];
    for (node, uids) in pods {
        fake.nodes.lock().expect("lock").insert(
            node.into(),
            Node {
                pods: uids.iter().map(|u| (*u).to_owned()).collect(),
                cgroups: if node == "worker-a1" {
                    vec![format!(
                        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
                        COREDNS.replace('-', "_")
                    )]
                } else {
                    Vec::new()
                },
                ..Node::default()
            },
        );
    }
    fake
}

async fn k8s_engine(fake: &Fake, dir: &std::path::Path) -> (FakeApi, Engine<Fake>) {
    let api = FakeApi::start().await;
    let k = Kubernetes::start(api.client(), config())
        .await
        .expect("discovery");
    (api, engine_with(fake, Arc::new(k), open_policy(), dir))
}

fn pods_spec(id: &str, namespace: &str, container: &str) -> pb::ExperimentSpec {
    let mut wire = spec(id, all(), 600).wire;
    wire.selector = Some(pb::Selector {
        pods: Some(pb::PodSelector {
            namespace: namespace.into(),
            labels: [("app".to_owned(), "checkout".to_owned())].into(),
            container: container.into(),
        }),
        ..Default::default()
    });
    wire
}

fn pod_targets(x: &pb::Experiment) -> Vec<(String, String, String)> {
    x.targets
        .iter()
        .map(|t| match t.target.as_ref().and_then(|t| t.kind.as_ref()) {
            Some(apb::target::Kind::Pod(p)) => {
                (t.node.clone(), p.uid.clone(), p.container_id.clone())
            }
            other => panic!("not a pod target: {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn a_pod_selector_hits_each_pod_on_its_node_by_uid_and_container() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = cluster_agents();
    let (_api, e) = k8s_engine(&fake, dir.path()).await;
    let x = e
        .create(
            ExperimentSpec::try_from(pods_spec("pods", "shop", "")).expect("valid"),
            "t",
        )
        .await
        .expect("create");
    assert_eq!(state_of(&x), pb::ExperimentState::Running, "{x:?}");
    assert_eq!(
        pod_targets(&x),
        [
            ("worker-a1".into(), CHECKOUT_A1.into(), String::new()),
            ("worker-b1".into(), CHECKOUT_B1.into(), String::new()),
        ]
    );
    assert_eq!(fake.faults(), 2);
    e.stop("pods", "done").await.expect("stop");
    assert_eq!(fake.faults(), 0);

    // With a container: the runtime's id of that container in each pod.
    let x = e
        .create(
            ExperimentSpec::try_from(pods_spec("app", "shop", "checkout")).expect("valid"),
            "t",
        )
        .await
        .expect("create");
    let targets = pod_targets(&x);
    assert_eq!(targets.len(), 2);
    for (_, _, container) in &targets {
        assert!(container.starts_with("containerd://"), "{targets:?}");
    }
    e.stop("app", "done").await.expect("stop");
}

#[tokio::test]
async fn protected_namespaces_are_refused_naming_the_rule() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = cluster_agents();
    let (_api, e) = k8s_engine(&fake, dir.path()).await;
    // Named by the selector: refused as the spec's own fault.
    let err = e
        .create(
            ExperimentSpec::try_from(pods_spec("dns", "kube-system", "")).expect("valid"),
            "t",
        )
        .await
        .expect_err("protected");
    let text = err.to_string();
    assert!(
        text.contains("protected.namespaces") && text.contains("kube-system"),
        "{text}"
    );
    assert!(matches!(
        err,
        EngineError::Policy(Violation {
            precondition: false,
            ..
        })
    ));
    // Reached another way, by a cgroup glob that happens to match a
    // kube-system pod's cgroup: the pod's namespace is looked up by the
    // uid in its cgroup path, and the policy refuses it too.
    let mut by_cgroup = spec("glob", all(), 600).wire;
    by_cgroup.selector = Some(pb::Selector {
        node_names: vec!["worker-a1".into()],
        targets: vec![apb::TargetPattern {
            kind: Some(apb::target_pattern::Kind::CgroupGlob(format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
                COREDNS.replace('-', "_")
            ))),
        }],
        ..Default::default()
    });
    let err = e
        .create(ExperimentSpec::try_from(by_cgroup).expect("valid"), "t")
        .await
        .expect_err("protected");
    let text = err.to_string();
    assert!(text.contains("protected.namespaces"), "{text}");
    assert!(matches!(
        err,
        EngineError::Policy(Violation {
            precondition: true,
            ..
        })
    ));
    assert_eq!(fake.applies(), 0, "nothing applied");
}

/// As docs/coordinator.md says: a running experiment keeps the targets the
/// policy approved when it started; a pod that appears meanwhile (a new
/// replica) is not added, and the next experiment (or dry run) sees it.
#[tokio::test]
async fn a_pod_appearing_during_an_experiment_is_left_for_the_next() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = cluster_agents();
    let (api, e) = k8s_engine(&fake, dir.path()).await;
    let x = e
        .create(
            ExperimentSpec::try_from(pods_spec("running", "shop", "")).expect("valid"),
            "t",
        )
        .await
        .expect("create");
    assert_eq!(pod_targets(&x).len(), 2);

    api.put(
        "/api/v1/pods",
        serde_json::from_str(POD_ADDED).expect("fixture"),
    );
    let watch = e.clone();
    let selector = crate::experiment::PodSelector {
        namespace: "shop".into(),
        labels: [("app".to_owned(), "checkout".to_owned())].into(),
        container: None,
    };
    eventually("the watch delivers the new pod", || {
        watch
            .inner
            .discovery
            .pods(&selector)
            .is_ok_and(|p| p.len() == 3)
    })
    .await;
    // Renewals go on; the running experiment's targets stay as they were.
    tokio::time::sleep(TTL / 2).await;
    let now = e.get("running").expect("get");
    assert_eq!(state_of(&now), pb::ExperimentState::Running);
    assert_eq!(pod_targets(&now), pod_targets(&x));
    assert_eq!(fake.faults(), 2);
    assert_eq!(fake.with("worker-a2", |n| n.applies), 0);

    let dry = e
        .dry_run(
            ExperimentSpec::try_from(pods_spec("next", "shop", "")).expect("valid"),
            "t",
        )
        .await
        .expect("dry run");
    assert_eq!(
        pod_targets(&dry),
        [
            ("worker-a1".into(), CHECKOUT_A1.into(), String::new()),
            ("worker-a2".into(), CHECKOUT_ADDED.into(), String::new()),
            ("worker-b1".into(), CHECKOUT_B1.into(), String::new()),
        ]
    );
    e.stop("running", "done").await.expect("stop");
}

#[tokio::test]
async fn a_service_destination_filters_to_its_endpoints() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = cluster_agents();
    let (_api, e) = k8s_engine(&fake, dir.path()).await;
    let mut wire = pods_spec("s2s", "shop", "");
    wire.destination = Some(pb::Destination {
        service: Some(pb::ServiceRef {
            namespace: "shop".into(),
            name: "payment".into(),
        }),
        port_min: 8080,
        protocol: apb::Protocol::Tcp.into(),
        ..Default::default()
    });
    let x = e
        .create(ExperimentSpec::try_from(wire.clone()).expect("valid"), "t")
        .await
        .expect("create");
    let mut cidrs: Vec<String> = x
        .targets
        .iter()
        .map(|t| match t.fault.as_ref().and_then(|f| f.kind.as_ref()) {
            Some(pb::fault_template::Kind::Loss(l)) => {
                let f = l.filter.as_ref().expect("filter");
                assert_eq!(f.remote_port_min, 8080);
                f.remote_cidr.clone()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    cidrs.sort();
    cidrs.dedup();
    assert_eq!(cidrs, ["10.244.1.17/32", "10.244.2.23/32"]);
    e.stop("s2s", "done").await.expect("stop");

    let mut missing = wire;
    missing.id = "missing".into();
    if let Some(d) = missing.destination.as_mut() {
        d.service = Some(pb::ServiceRef {
            namespace: "shop".into(),
            name: "ledger".into(),
        });
    }
    let err = e
        .create(ExperimentSpec::try_from(missing).expect("valid"), "t")
        .await
        .expect_err("no such service");
    assert!(err.to_string().contains("shop/ledger not found"), "{err}");
}

#[tokio::test]
async fn a_matching_pod_on_a_node_without_an_agent_refuses_the_experiment() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = cluster_agents();
    let (api, e) = k8s_engine(&fake, dir.path()).await;
    let mut stray: serde_json::Value = serde_json::from_str(POD_ADDED).expect("fixture");
    stray["spec"]["nodeName"] = "worker-c1".into();
    api.put("/api/v1/pods", stray);
    let selector = crate::experiment::PodSelector {
        namespace: "shop".into(),
        labels: [("app".to_owned(), "checkout".to_owned())].into(),
        container: None,
    };
    eventually("the watch delivers the pod", || {
        e.inner
            .discovery
            .pods(&selector)
            .is_ok_and(|p| p.len() == 3)
    })
    .await;
    let err = e
        .create(
            ExperimentSpec::try_from(pods_spec("p", "shop", "")).expect("valid"),
            "t",
        )
        .await
        .expect_err("a pod would be spared");
    assert!(
        err.to_string()
            .contains("node \"worker-c1\", which has no ready faultd agent"),
        "{err}"
    );
    assert_eq!(fake.applies(), 0);
    // Narrowed to nodes by label, the pod is outside the selection.
    let mut zone = pods_spec("zone", "shop", "");
    if let Some(s) = zone.selector.as_mut() {
        s.node_labels = [(
            "topology.kubernetes.io/zone".to_owned(),
            "eu-west-1b".to_owned(),
        )]
        .into();
    }
    let x = e
        .create(ExperimentSpec::try_from(zone).expect("valid"), "t")
        .await
        .expect("create");
    assert_eq!(
        pod_targets(&x),
        [("worker-b1".into(), CHECKOUT_B1.into(), String::new())]
    );
    e.stop("zone", "done").await.expect("stop");
}

#[tokio::test]
async fn pods_without_kubernetes_are_refused_naming_the_config() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = Fake::with_nodes(2, 1);
    let e = engine(&fake, 2, open_policy(), dir.path());
    let err = e
        .create(
            ExperimentSpec::try_from(pods_spec("p", "shop", "")).expect("valid"),
            "t",
        )
        .await
        .expect_err("no kubernetes");
    assert!(err.to_string().contains("[kubernetes]"), "{err}");
}
