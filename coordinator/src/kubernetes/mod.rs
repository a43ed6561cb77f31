//! Discovery through the Kubernetes API: the agents are the ready pods of
//! the agent DaemonSet (one per node, reached at its pod IP), a selector's
//! `pods` are the running pods of a namespace with the given labels, a
//! destination's `service` is the addresses of that Service's
//! EndpointSlices.
//!
//! Everything is answered from reflector caches: one list, then a watch
//! per resource (kube's `watcher`, which relists after a watch ends or
//! its resourceVersion expires, with backoff on errors). A running
//! experiment keeps the targets it was created with; the caches only decide
//! what the next experiment (or dry run) selects.

#[cfg(test)]
pub(crate) mod fake_api;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, net::IpAddr, sync::Arc, time::Duration};

use futures::StreamExt as _;
use k8s_openapi::api::{
    core::v1::{Node, Pod as KPod},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, ResourceExt as _,
    runtime::{WatchStreamExt as _, reflector, watcher},
};
use tracing::warn;

use crate::{
    config::KubernetesConfig,
    experiment::{PodSelector, ServiceRef},
    inventory::{Agent, Discovery, DiscoveryError, Inventory, Pod},
};

/// The label EndpointSlices carry naming their Service
/// (discovery.k8s.io/v1, `kubernetes.io/service-name`).
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error("kubernetes.kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("connecting to the Kubernetes API: {0}")]
    Client(#[from] kube::Error),
    #[error(
        "the Kubernetes API did not list {what} within {timeout:?} \
         (kubernetes.sync_timeout); is it reachable, and may this account list them?"
    )]
    Sync {
        what: &'static str,
        timeout: Duration,
    },
}

/// The caches and the watch tasks that fill them; dropping it stops them.
pub struct Kubernetes {
    config: KubernetesConfig,
    pods: reflector::Store<KPod>,
    nodes: reflector::Store<Node>,
    slices: reflector::Store<EndpointSlice>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for Kubernetes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubernetes")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for Kubernetes {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A client from the config's kubeconfig, else in-cluster or $KUBECONFIG
/// (kube's `Config::infer`).
pub async fn client(config: &KubernetesConfig) -> Result<Client, KubernetesError> {
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| KubernetesError::Kubeconfig(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| KubernetesError::Kubeconfig(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| KubernetesError::Kubeconfig(e.to_string()))?,
    };
    Ok(Client::try_from(kube_config)?)
}

/// Keeps `store` current from `api`'s list and watch, logging (not
/// failing on) API errors: the watcher retries with backoff, and the cache
/// keeps its last state meanwhile.
fn reflect<K>(api: Api<K>, what: &'static str) -> (reflector::Store<K>, tokio::task::AbortHandle)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                warn!(resource = what, error = %e, "kubernetes watch");
            }
        }
    });
    (store, task.abort_handle())
}

impl Kubernetes {
    /// Starts the watches and waits for each cache's first full list.
    pub async fn start(client: Client, config: KubernetesConfig) -> Result<Self, KubernetesError> {
        let (pods, t1) = reflect(Api::<KPod>::all(client.clone()), "pods");
        let (nodes, t2) = reflect(Api::<Node>::all(client.clone()), "nodes");
        let (slices, t3) = reflect(Api::<EndpointSlice>::all(client), "endpointslices");
        let me = Self {
            pods,
            nodes,
            slices,
            tasks: vec![t1, t2, t3],
            config,
        };
        let timeout = me.config.sync_timeout;
        ready(&me.pods, "pods", timeout).await?;
        ready(&me.nodes, "nodes", timeout).await?;
        ready(&me.slices, "endpointslices", timeout).await?;
        Ok(me)
    }
}

/// Waits for `store`'s first full list.
async fn ready<K>(
    store: &reflector::Store<K>,
    what: &'static str,
    timeout: Duration,
) -> Result<(), KubernetesError>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let fail = || KubernetesError::Sync { what, timeout };
    tokio::time::timeout(timeout, store.wait_until_ready())
        .await
        .map_err(|_| fail())?
        .map_err(|_| fail())
}

fn labels_match(have: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

fn condition_true(pod: &KPod, kind: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// Running, on a node, and not being deleted: a pod whose cgroup exists.
fn running(pod: &KPod) -> Option<&str> {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    (phase == Some("Running") && pod.metadata.deletion_timestamp.is_none())
        .then_some(node)
        .flatten()
        .filter(|n| !n.is_empty())
}

/// "host:port", brackets around IPv6.
fn host_port(ip: &str, port: u16) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        _ => format!("{ip}:{port}"),
    }
}

impl Kubernetes {
    fn agent_of(&self, pod: &KPod) -> Option<Agent> {
        let node = running(pod)?;
        let ip = pod
            .status
            .as_ref()?
            .pod_ip
            .as_deref()
            .filter(|ip| !ip.is_empty())?;
        if !condition_true(pod, "Ready") {
            return None;
        }
        let labels = self
            .nodes
            .get(&reflector::ObjectRef::new(node))
            .map(|n| n.labels().clone())
            .unwrap_or_default();
        Some(Agent {
            node: node.to_owned(),
            address: host_port(ip, self.config.agent_port),
            tls_name: Some(self.config.agent_tls_name.replace("{node}", node)),
            labels,
        })
    }
}

impl Discovery for Kubernetes {
    /// The ready agent pods, one per node; during a rolling update a node
    /// may briefly have two, and the newer one (by creationTimestamp, then
    /// name) is the one called.
    fn inventory(&self) -> Inventory {
        let mut agent_pods: Vec<Arc<KPod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| p.namespace().as_deref() == Some(self.config.agent_namespace.as_str()))
            .filter(|p| labels_match(p.labels(), &self.config.agent_labels))
            .collect();
        agent_pods.sort_by(|a, b| {
            (&a.metadata.creation_timestamp, a.name_any())
                .cmp(&(&b.metadata.creation_timestamp, b.name_any()))
        });
        let mut by_node: BTreeMap<String, Agent> = BTreeMap::new();
        for pod in agent_pods {
            if let Some(agent) = self.agent_of(&pod) {
                by_node.insert(agent.node.clone(), agent);
            }
        }
        Inventory {
            agents: by_node.into_values().collect(),
        }
    }

    fn pods(&self, selector: &PodSelector) -> Result<Vec<Pod>, DiscoveryError> {
        let mut out: Vec<Pod> = self
            .pods
            .state()
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(selector.namespace.as_str()))
            .filter(|p| labels_match(p.labels(), &selector.labels))
            .filter_map(|p| {
                let node = running(p)?;
                let container_id = match &selector.container {
                    None => None,
                    Some(name) => Some(running_container(p, name)?),
                };
                Some(Pod {
                    namespace: selector.namespace.clone(),
                    name: p.name_any(),
                    uid: p.uid()?,
                    node: node.to_owned(),
                    container_id,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.node, &a.name).cmp(&(&b.node, &b.name)));
        Ok(out)
    }

    fn service_addresses(&self, service: &ServiceRef) -> Result<Vec<IpAddr>, DiscoveryError> {
        let slices: Vec<Arc<EndpointSlice>> = self
            .slices
            .state()
            .into_iter()
            .filter(|s| s.namespace().as_deref() == Some(service.namespace.as_str()))
            .filter(|s| s.labels().get(SERVICE_NAME_LABEL) == Some(&service.name))
            .collect();
        if slices.is_empty() {
            return Err(DiscoveryError::NoService {
                namespace: service.namespace.clone(),
                name: service.name.clone(),
            });
        }
        let mut out: Vec<IpAddr> = slices
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .flat_map(|e| e.addresses.iter())
            // FQDN slices (addressType FQDN) hold names, not addresses.
            .filter_map(|a| a.parse().ok())
            .collect();
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn pod_namespace(&self, uid: &str) -> Option<String> {
        self.pods
            .state()
            .iter()
            .find(|p| p.metadata.uid.as_deref() == Some(uid))
            .and_then(|p| p.namespace())
    }
}

/// The runtime's id of the running container `name` of `pod`.
fn running_container(pod: &KPod, name: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
        .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        .and_then(|c| c.container_id.clone())
        .filter(|id| !id.is_empty())
}
