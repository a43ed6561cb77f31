//! Discovery against the fake API server (fake_api.rs), through kube's
//! own client, reflectors and watches.

use std::time::Duration;

use super::{
    fake_api::{CHECKOUT_A1, CHECKOUT_B1, COREDNS, FakeApi, config, eventually},
    *,
};

async fn started() -> (FakeApi, Kubernetes) {
    let api = FakeApi::start().await;
    let k = Kubernetes::start(api.client(), config())
        .await
        .expect("discovery syncs");
    (api, k)
}

fn selector(ns: &str, labels: &[(&str, &str)], container: Option<&str>) -> PodSelector {
    PodSelector {
        namespace: ns.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        container: container.map(str::to_owned),
    }
}

#[tokio::test]
async fn agents_are_the_ready_daemonset_pods_with_their_nodes_labels() {
    let (api, k) = started().await;
    let inv = k.inventory();
    let agents: Vec<(&str, &str, &str)> = inv
        .agents
        .iter()
        .map(|a| (a.node.as_str(), a.address.as_str(), a.tls_name()))
        .collect();
    // worker-a2's newer pod (a rolling update) is not ready: the old one
    // is still the node's agent.
    assert_eq!(
        agents,
        [
            ("worker-a1", "10.244.0.5:7443", "worker-a1.agents.faultd"),
            ("worker-a2", "10.244.1.6:7443", "worker-a2.agents.faultd"),
            ("worker-b1", "10.244.2.4:7443", "worker-b1.agents.faultd"),
        ]
    );
    assert_eq!(
        inv.get("worker-b1")
            .and_then(|a| a.labels.get("topology.kubernetes.io/zone"))
            .map(String::as_str),
        Some("eu-west-1b")
    );
    // The new pod turns ready: the node's agent is now the newer pod.
    let pods: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/pods.json")).expect("json");
    let mut new_agent = pods["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|p| p["metadata"]["name"] == "faultd-agent-zr8vb")
        .expect("the new agent pod")
        .clone();
    for c in new_agent["status"]["conditions"]
        .as_array_mut()
        .expect("conditions")
    {
        c["status"] = "True".into();
    }
    api.put("/api/v1/pods", new_agent);
    eventually("the newer agent pod takes over worker-a2", || {
        k.inventory().get("worker-a2").map(|a| a.address.as_str()) == Some("10.244.1.9:7443")
    })
    .await;
    // One list, then one watch, per resource: the caches are not re-listed
    // per question.
    let requests = api.requests();
    for path in [
        "/api/v1/pods",
        "/api/v1/nodes",
        "/apis/discovery.k8s.io/v1/endpointslices",
    ] {
        let of = |watch: bool| {
            requests
                .iter()
                .filter(|r| r.starts_with(&format!("GET {path}?")))
                .filter(|r| r.contains("watch=true") == watch)
                .count()
        };
        assert_eq!((of(false), of(true)), (1, 1), "{path}: {requests:#?}");
    }
}

#[tokio::test]
async fn a_pod_selector_gives_running_pods_and_their_containers() {
    let (_api, k) = started().await;
    let checkout = k
        .pods(&selector("shop", &[("app", "checkout")], None))
        .expect("pods");
    // The Pending replica (no node, no cgroup yet) is left out.
    let found: Vec<(&str, &str)> = checkout
        .iter()
        .map(|p| (p.node.as_str(), p.uid.as_str()))
        .collect();
    assert_eq!(
        found,
        [("worker-a1", CHECKOUT_A1), ("worker-b1", CHECKOUT_B1)]
    );
    assert!(checkout.iter().all(|p| p.container_id.is_none()));

    let app = k
        .pods(&selector("shop", &[("app", "checkout")], Some("checkout")))
        .expect("pods");
    assert_eq!(app.len(), 2);
    for p in &app {
        let id = p.container_id.as_deref().expect("container id");
        assert!(
            id.starts_with("containerd://") && id.len() == 13 + 64,
            "{id}"
        );
    }
    assert_ne!(app[0].container_id, app[1].container_id);
    assert!(
        k.pods(&selector("shop", &[("app", "checkout")], Some("no-such")))
            .expect("pods")
            .is_empty()
    );
    // Every label must match; other namespaces are not searched.
    assert!(
        k.pods(&selector(
            "shop",
            &[("app", "checkout"), ("tier", "backend")],
            None
        ))
        .expect("pods")
        .is_empty()
    );
    assert_eq!(k.pods(&selector("shop", &[], None)).expect("pods").len(), 4);
    assert_eq!(k.pod_namespace(COREDNS).as_deref(), Some("kube-system"));
    assert_eq!(
        k.pod_namespace("00000000-0000-0000-0000-000000000000"),
        None
    );
}

#[tokio::test]
async fn services_resolve_to_their_endpoint_slices_addresses() {
    let (_api, k) = started().await;
    let payment = ServiceRef {
        namespace: "shop".into(),
        name: "payment".into(),
    };
    let addrs = k.service_addresses(&payment).expect("payment");
    assert_eq!(
        addrs,
        [
            "10.244.1.17".parse::<IpAddr>().expect("ip"),
            "10.244.2.23".parse().expect("ip")
        ]
    );
    let missing = ServiceRef {
        namespace: "shop".into(),
        name: "ledger".into(),
    };
    assert_eq!(
        k.service_addresses(&missing),
        Err(DiscoveryError::NoService {
            namespace: "shop".into(),
            name: "ledger".into()
        })
    );
}

#[tokio::test]
async fn an_unreachable_api_fails_the_start_naming_the_setting() {
    // A port nothing listens on: the reflectors retry with backoff, and
    // start gives up at sync_timeout instead of running blind.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let client =
        kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");
    let mut c = config();
    c.sync_timeout = Duration::from_millis(500);
    let err = Kubernetes::start(client, c).await.expect_err("no API");
    assert!(err.to_string().contains("kubernetes.sync_timeout"), "{err}");
}
