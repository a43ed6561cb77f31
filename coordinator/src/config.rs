//! The coordinator's configuration: a TOML file, validated at start; a bad
//! one exits with status 64 and names the key. The inventory of agents and
//! the blast-radius policy are files of their own (`inventory`, `policy`),
//! so the policy can be reloaded without a restart.

use std::{
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
    /// The static inventory file (see `inventory`).
    pub inventory: PathBuf,
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
    let value = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        what,
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    Ok((value, text))
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

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, path) in [
            ("server.ca", &self.server.ca),
            ("server.cert", &self.server.cert),
            ("server.key", &self.server.key),
            ("agents.inventory", &self.agents.inventory),
            ("agents.ca", &self.agents.ca),
            ("agents.cert", &self.agents.cert),
            ("agents.key", &self.agents.key),
            ("store.path", &self.store.path),
            ("policy.path", &self.policy.path),
            ("audit.path", &self.audit.path),
        ] {
            if !path.is_absolute() {
                return Err(invalid(key, "must be an absolute path"));
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
    fn unknown_keys_are_refused_by_name() {
        let text = GOOD.replace("[store]", "[store]\nsize = 3");
        let err = toml::from_str::<Config>(&text).expect_err("unknown key");
        assert!(err.to_string().contains("size"), "{err}");
    }
}
