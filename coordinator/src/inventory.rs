//! The static inventory of agents, for nodes outside Kubernetes: each
//! node's name, where its agent listens, the name its certificate carries,
//! and labels for selectors.
//!
//! ```toml
//! [[agent]]
//! node = "web-1"
//! address = "10.0.0.11:7443"
//! tls_name = "web-1"          # default: the node name
//! labels = { zone = "a", role = "web" }
//! ```

use std::{collections::BTreeMap, net::IpAddr, path::Path};

use serde::Deserialize;

use crate::{
    config::{ConfigError, read_toml},
    experiment::{PodSelector, ServiceRef},
};

/// A running pod, as the Kubernetes API lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    /// metadata.uid: what the agent finds the pod's cgroup by.
    pub uid: String,
    /// spec.nodeName.
    pub node: String,
    /// The runtime's id of the selector's container ("containerd://…"),
    /// when the selector names one.
    pub container_id: Option<String>,
}

/// Why discovery could not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// The coordinator runs from a static inventory: no Kubernetes API.
    #[error("{what} needs the Kubernetes API: the coordinator has no [kubernetes] config")]
    NoKubernetes { what: &'static str },
    #[error("service {namespace}/{name} not found (no EndpointSlice labelled with it)")]
    NoService { namespace: String, name: String },
}

/// Where the coordinator learns its agents, and with Kubernetes, pods and
/// Service endpoints. Answers come from memory (the static file, or watch
/// caches kept current by the API server), so they are cheap and never
/// block on the network.
pub trait Discovery: Send + Sync + 'static {
    /// The agents now known.
    fn inventory(&self) -> Inventory;
    /// The running pods `selector` matches, with the node each is on.
    fn pods(&self, selector: &PodSelector) -> Result<Vec<Pod>, DiscoveryError>;
    /// The endpoint addresses of a Service.
    fn service_addresses(&self, service: &ServiceRef) -> Result<Vec<IpAddr>, DiscoveryError>;
    /// The namespace of the pod with this uid, if it is known.
    fn pod_namespace(&self, uid: &str) -> Option<String>;
}

/// A static inventory: agents only.
impl Discovery for Inventory {
    fn inventory(&self) -> Inventory {
        self.clone()
    }

    fn pods(&self, _: &PodSelector) -> Result<Vec<Pod>, DiscoveryError> {
        Err(DiscoveryError::NoKubernetes {
            what: "a pods selector",
        })
    }

    fn service_addresses(&self, _: &ServiceRef) -> Result<Vec<IpAddr>, DiscoveryError> {
        Err(DiscoveryError::NoKubernetes {
            what: "a service destination",
        })
    }

    fn pod_namespace(&self, _: &str) -> Option<String> {
        None
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub node: String,
    /// "host:port" of the agent's mutual-TLS listener.
    pub address: String,
    /// The DNS name the agent's certificate must carry; the node name when
    /// absent.
    #[serde(default)]
    pub tls_name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Agent {
    pub fn tls_name(&self) -> &str {
        self.tls_name.as_deref().unwrap_or(&self.node)
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    #[serde(default, rename = "agent")]
    pub agents: Vec<Agent>,
}

impl Inventory {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (inv, _): (Self, _) = read_toml("inventory", path)?;
        inv.validate()?;
        Ok(inv)
    }

    /// Parses and checks an inventory file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let inv: Self = crate::config::parse_toml("inventory", path, text)?;
        inv.validate()?;
        Ok(inv)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: String| ConfigError::Invalid {
            what: "inventory",
            key,
            reason,
        };
        let mut seen = std::collections::BTreeSet::new();
        for (i, a) in self.agents.iter().enumerate() {
            if a.node.is_empty() {
                return Err(invalid(format!("agent[{i}].node"), "is empty".into()));
            }
            if !seen.insert(a.node.as_str()) {
                return Err(invalid(
                    format!("agent[{i}].node"),
                    format!("{:?} is listed twice", a.node),
                ));
            }
            if a.address
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(invalid(
                    format!("agent[{i}].address"),
                    format!("{:?} is not host:port", a.address),
                ));
            }
        }
        Ok(())
    }

    pub fn get(&self, node: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.node == node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_duplicates_and_bad_addresses() {
        let inv: Inventory = toml::from_str(
            r#"
[[agent]]
node = "a"
address = "10.0.0.1:7443"
labels = { zone = "z1" }
[[agent]]
node = "b"
address = "10.0.0.2:7443"
tls_name = "b.faultd"
"#,
        )
        .expect("parse");
        inv.validate().expect("valid");
        assert_eq!(inv.get("a").map(Agent::tls_name), Some("a"));
        assert_eq!(inv.get("b").map(Agent::tls_name), Some("b.faultd"));
        let mut dup = inv.clone();
        dup.agents[1].node = "a".into();
        assert!(
            dup.validate()
                .expect_err("dup")
                .to_string()
                .contains("listed twice")
        );
        let mut bad = inv;
        bad.agents[0].address = "10.0.0.1".into();
        assert!(
            bad.validate()
                .expect_err("addr")
                .to_string()
                .contains("host:port")
        );
    }
}
