//! The coordinator's configuration: a TOML file, validated at start; a bad
//! one exits with status 64 and names the key. The inventory of agents and
//! the blast-radius policy are files of their own (`inventory`, `policy`),
//! so the policy can be reloaded without a restart.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use faultd_proto::tls::TlsFiles;
use serde::Deserialize;

/// Exit status for a bad config (sysexits.h EX_USAGE).
pub const EX_USAGE: i32 = 64;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This coordinator's name, in the audit log.
    #[serde(default = "default_name")]
    pub name: String,
    pub server: ServerConfig,
    pub agents: AgentsConfig,
    pub store: StoreConfig,
    pub policy: PolicyFileConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Where experiments' stop conditions are evaluated; without it, an
    /// experiment with stop conditions is refused.
    #[serde(default)]
    pub prometheus: Option<PrometheusConfig>,
    /// Agents, pods and Services from the Kubernetes API instead of a
    /// static inventory.
    #[serde(default)]
    pub kubernetes: Option<KubernetesConfig>,
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// The coordinator's Prometheus `/metrics` endpoint: plain HTTP,
/// read-only. Off unless configured.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// e.g. "0.0.0.0:9465".
    pub listen: Option<SocketAddr>,
}

/// Discovery through the Kubernetes API: the agents are the ready pods of
/// the agent DaemonSet (node -> pod IP), selectors' `pods` and
/// destinations' `service` are answered from watch caches of pods, nodes
/// and EndpointSlices.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// A kubeconfig file. Absent: the in-cluster service account, else
    /// $KUBECONFIG or ~/.kube/config.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of the agent DaemonSet's pods.
    #[serde(default = "default_agent_namespace")]
    pub agent_namespace: String,
    /// Labels the agent pods carry (equality).
    #[serde(default = "default_agent_labels")]
    pub agent_labels: BTreeMap<String, String>,
    /// The port of the agents' mutual-TLS listener.
    #[serde(default = "default_agent_port")]
    pub agent_port: u16,
    /// The name agent certificates carry; `{node}` is the node's name.
    #[serde(default = "default_agent_tls_name")]
    pub agent_tls_name: String,
    /// How long start waits for the first full list of pods, nodes and
    /// EndpointSlices.
    #[serde(default = "default_sync_timeout", with = "duration_text")]
    pub sync_timeout: Duration,
}

fn default_agent_namespace() -> String {
    "faultd".to_owned()
}

fn default_agent_labels() -> BTreeMap<String, String> {
    [(
        "app.kubernetes.io/name".to_owned(),
        "faultd-agent".to_owned(),
    )]
    .into()
}

fn default_agent_port() -> u16 {
    7443
}

fn default_agent_tls_name() -> String {
    "{node}".to_owned()
}

fn default_sync_timeout() -> Duration {
    Duration::from_secs(30)
}

/// The Prometheus server stop conditions query (HTTP API, plain HTTP: run
/// it on the coordinator's host or behind a local proxy).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// e.g. "http://127.0.0.1:9090".
    pub url: String,
    /// How often a running experiment's conditions are evaluated.
    #[serde(default = "default_prometheus_interval", with = "duration_text")]
    pub interval: Duration,
    /// How long a condition may go unevaluated (Prometheus down, no
    /// sample) before its experiment aborts.
    #[serde(default = "default_prometheus_grace", with = "duration_text")]
    pub grace: Duration,
    /// Longest one query may take.
    #[serde(default = "default_prometheus_timeout", with = "duration_text")]
    pub timeout: Duration,
}

fn default_prometheus_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_prometheus_grace() -> Duration {
    Duration::from_secs(30)
}

fn default_prometheus_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_name() -> String {
    "faultd-coordinator".to_owned()
}

/// The API: mutual TLS 1.3 only.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client identities (certificate SANs) that may create and stop
    /// experiments, halt, resume and reload the policy.
    pub operators: Vec<String>,
    /// Client identities that may only read (get, list, watch, status).
    #[serde(default)]
    pub readers: Vec<String>,
    /// A plaintext TCP port serving gRPC health checking alone, for
    /// Kubernetes gRPC probes. No call on it reads or changes anything.
    #[serde(default)]
    pub health_listen: Option<SocketAddr>,
}

impl ServerConfig {
    pub fn tls(&self) -> TlsFiles {
        TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

/// How the coordinator reaches its agents.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AgentsConfig {
    /// The static inventory file (see `inventory`); exactly one of this and
    /// the `[kubernetes]` section.
    #[serde(default)]
    pub inventory: Option<PathBuf>,
    /// The CA of the agents' certificates, and the coordinator's client
    /// certificate, whose identity the agents list in
    /// `server.tls.coordinator_identities`.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Faults are held under a lease this long, renewed every third of it:
    /// if the coordinator dies or loses an agent, that agent's faults end
    /// within this time.
    #[serde(default = "default_lease_ttl", with = "duration_text")]
    pub lease_ttl: Duration,
    /// Longest an agent call may take before it counts as failed.
    #[serde(default = "default_call_timeout", with = "duration_text")]
    pub call_timeout: Duration,
}

impl AgentsConfig {
    pub fn tls(&self) -> TlsFiles {
        TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

fn default_lease_ttl() -> Duration {
    Duration::from_secs(15)
}

fn default_call_timeout() -> Duration {
    Duration::from_secs(5)
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite database of experiments and their events.
    pub path: PathBuf,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PolicyFileConfig {
    /// The blast-radius policy (see `policy`), reloaded on SIGHUP and by
    /// ReloadPolicy.
    pub path: PathBuf,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    pub path: PathBuf,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/log/faultd/coordinator-audit.jsonl"),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {what} {path}: {message}")]
    Parse {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{what} key `{key}`: {reason}")]
    Invalid {
        what: &'static str,
        key: String,
        reason: String,
    },
}

/// Reads and parses a TOML file.
pub fn read_toml<T: serde::de::DeserializeOwned>(
    what: &'static str,
    path: &Path,
) -> Result<(T, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    let value = parse_toml(what, path, &text)?;
    Ok((value, text))
}

/// Parses `text` as the TOML of a `what` file; `path` names it in errors.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    what: &'static str,
    path: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        what,
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        what: "config",
        key: key.to_owned(),
        reason: reason.into(),
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (config, _): (Self, _) = read_toml("config", path)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses and checks a config file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = parse_toml("config", path, text)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, path) in [
            ("server.ca", &self.server.ca),
            ("server.cert", &self.server.cert),
            ("server.key", &self.server.key),
            ("agents.ca", &self.agents.ca),
            ("agents.cert", &self.agents.cert),
            ("agents.key", &self.agents.key),
            ("store.path", &self.store.path),
            ("policy.path", &self.policy.path),
            ("audit.path", &self.audit.path),
        ]
        .into_iter()
        .chain(
            self.agents
                .inventory
                .iter()
                .map(|p| ("agents.inventory", p)),
        )
        .chain(
            self.kubernetes
                .iter()
                .flat_map(|k| k.kubeconfig.iter().map(|p| ("kubernetes.kubeconfig", p))),
        ) {
            if !path.is_absolute() {
                return Err(invalid(key, "must be an absolute path"));
            }
        }
        match (&self.agents.inventory, &self.kubernetes) {
            (None, None) => {
                return Err(invalid(
                    "agents.inventory",
                    "is required without a [kubernetes] section: where the agents are",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "agents.inventory",
                    "set it or [kubernetes], not both: one source of agents",
                ));
            }
            _ => {}
        }
        if let Some(k) = &self.kubernetes {
            if k.agent_namespace.is_empty() {
                return Err(invalid("kubernetes.agent_namespace", "is empty"));
            }
            if k.agent_labels.is_empty() {
                return Err(invalid(
                    "kubernetes.agent_labels",
                    "is empty: every pod of the namespace would count as an agent",
                ));
            }
            if k.agent_port == 0 {
                return Err(invalid("kubernetes.agent_port", "must be above zero"));
            }
            if k.agent_tls_name.is_empty() {
                return Err(invalid("kubernetes.agent_tls_name", "is empty"));
            }
            if k.sync_timeout.is_zero() {
                return Err(invalid("kubernetes.sync_timeout", "must be above zero"));
            }
        }
        if self.server.operators.is_empty() {
            return Err(invalid(
                "server.operators",
                "must name at least one client identity, or nobody could run experiments",
            ));
        }
        if self.agents.lease_ttl < Duration::from_secs(3) {
            return Err(invalid(
                "agents.lease_ttl",
                "must be at least 3s (renewed every third of it)",
            ));
        }
        if let Some(p) = &self.prometheus {
            if !p.url.starts_with("http://") || p.url.parse::<hyper::Uri>().is_err() {
                return Err(invalid(
                    "prometheus.url",
                    format!("{:?} is not an http:// URL", p.url),
                ));
            }
            if p.interval.is_zero() {
                return Err(invalid("prometheus.interval", "must be above zero"));
            }
            // A query must end before the next renewal is due.
            if p.timeout.is_zero() || p.timeout >= self.agents.lease_ttl / 3 {
                return Err(invalid(
                    "prometheus.timeout",
                    "must be above zero and below a third of agents.lease_ttl",
                ));
            }
        }
        if self.agents.call_timeout.is_zero() || self.agents.call_timeout >= self.agents.lease_ttl {
            return Err(invalid(
                "agents.call_timeout",
                "must be above zero and below agents.lease_ttl",
            ));
        }
        Ok(())
    }
}

/// Durations as "15s", "2m", "1h30m" in TOML.
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Optional durations, for policy limits that may be absent.
pub mod opt_duration_text {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "c1"
[server]
listen = "127.0.0.1:7444"
ca = "/tls/ca.pem"
cert = "/tls/c.pem"
key = "/tls/c.key"
operators = ["operator.faultd"]
[agents]
inventory = "/etc/inv.toml"
ca = "/tls/ca.pem"
cert = "/tls/c.pem"
key = "/tls/c.key"
lease_ttl = "9s"
[store]
path = "/var/lib/c.db"
[policy]
path = "/etc/policy.toml"
"#;

    #[test]
    fn parses_and_validates() {
        let c: Config = toml::from_str(GOOD).expect("parse");
        c.validate().expect("valid");
        assert_eq!(c.agents.lease_ttl, Duration::from_secs(9));
        assert_eq!(c.agents.call_timeout, Duration::from_secs(5));
        let mut bad = c.clone();
        bad.server.operators.clear();
        assert!(
            bad.validate()
                .expect_err("no operators")
                .to_string()
                .contains("server.operators")
        );
        let mut bad = c.clone();
        bad.agents.lease_ttl = Duration::from_secs(1);
        assert!(
            bad.validate()
                .expect_err("short ttl")
                .to_string()
                .contains("agents.lease_ttl")
        );
        let mut bad = c;
        bad.store.path = "relative.db".into();
        assert!(
            bad.validate()
                .expect_err("relative")
                .to_string()
                .contains("store.path")
        );
    }

    #[test]
    fn kubernetes_replaces_the_inventory() {
        let text = GOOD.replace("inventory = \"/etc/inv.toml\"\n", "")
            + "[kubernetes]\nagent_tls_name = \"{node}.agents.faultd\"\n";
        let c: Config = toml::from_str(&text).expect("parse");
        c.validate().expect("valid");
        let k = c.kubernetes.clone().expect("kubernetes");
        assert_eq!(k.agent_namespace, "faultd");
        assert_eq!(k.agent_port, 7443);
        assert_eq!(k.sync_timeout, Duration::from_secs(30));
        let mut both = c.clone();
        both.agents.inventory = Some("/etc/inv.toml".into());
        let err = both.validate().expect_err("both").to_string();
        assert!(
            err.contains("agents.inventory") && err.contains("not both"),
            "{err}"
        );
        let mut neither = c.clone();
        neither.kubernetes = None;
        let err = neither.validate().expect_err("neither").to_string();
        assert!(
            err.contains("agents.inventory") && err.contains("required"),
            "{err}"
        );
        let mut bad = c;
        if let Some(k) = bad.kubernetes.as_mut() {
            k.agent_labels.clear();
        }
        let err = bad.validate().expect_err("labels").to_string();
        assert!(err.contains("kubernetes.agent_labels"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let text = GOOD.replace("[store]", "[store]\nsize = 3");
        let err = toml::from_str::<Config>(&text).expect_err("unknown key");
        assert!(err.to_string().contains("size"), "{err}");
    }
}
