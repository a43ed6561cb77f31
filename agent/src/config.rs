//! The agent's configuration: a TOML file with documented defaults, where
//! every field may be omitted, then overridden by command-line flags.
//! `Config::validate` runs at startup; a bad config exits with status 64
//! (EX_USAGE) and a message naming the key.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

/// Exit status for a bad config or bad flags (sysexits.h EX_USAGE).
pub const EX_USAGE: i32 = 64;

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub server: ServerConfig,
    pub state: StateConfig,
    pub limits: LimitsConfig,
    pub safety: SafetyConfig,
    pub cgroup: CgroupConfig,
    pub syscall: SyscallConfig,
    pub log: LogConfig,
    pub audit: AuditConfig,
    pub metrics: MetricsConfig,
}

/// The Prometheus `/metrics` endpoint: plain HTTP, read-only. Off unless
/// configured.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// e.g. "0.0.0.0:9464" (a DaemonSet's pod IP) or "127.0.0.1:9464".
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's name, as the coordinator's inventory and GetCapabilities
    /// name it; empty means the hostname.
    pub name: String,
}

impl NodeConfig {
    /// `name`, or the hostname when it is empty.
    pub fn resolved_name(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".to_owned())
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// One JSON line per mutating call (and per refused TLS client).
    pub path: PathBuf,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/log/faultd/audit.jsonl"),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Unix socket the gRPC API is served on. Created with mode 0600: only
    /// root (or the socket's owner) can inject faults.
    pub socket: PathBuf,
    /// The TCP listener for a coordinator: mutual TLS 1.3 only. Off unless
    /// configured.
    pub tls: Option<TlsListenerConfig>,
    /// A plaintext TCP port serving gRPC health checking alone
    /// (grpc.health.v1), for Kubernetes gRPC probes, which cannot present a
    /// client certificate. No call on it reads or changes a fault. Off
    /// unless configured.
    pub health_listen: Option<std::net::SocketAddr>,
}

/// The mutual-TLS listener: who may change faults, who may only read.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    /// Address to listen on, e.g. "0.0.0.0:7443".
    pub listen: std::net::SocketAddr,
    /// CA of the clients' certificates, and the agent's own certificate and
    /// key (PEM).
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Identities (DNS or URI subject alternative names of a client
    /// certificate) allowed to apply, renew and revert faults.
    pub coordinator_identities: Vec<String>,
    /// Identities allowed read-only calls (ListFaults, GetFault,
    /// GetCapabilities, ListTargets).
    #[serde(default)]
    pub reader_identities: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// Directory for runtime state (created 0700).
    pub dir: PathBuf,
    /// Node-wide lock: one agent per node. While held, any faultd program
    /// found attached in the kernel was left by a dead instance and is
    /// removed at start.
    pub lock_file: PathBuf,
    /// Root qdiscs faultd replaced (for latency and bandwidth faults),
    /// written before each change, so the next start restores them if the
    /// agent died. Empty means `<dir>/qdiscs.json`.
    pub qdisc_records: Option<PathBuf>,
}

impl StateConfig {
    pub fn qdisc_records(&self) -> PathBuf {
        self.qdisc_records
            .clone()
            .unwrap_or_else(|| self.dir.join("qdiscs.json"))
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Longest duration a fault may ask for, e.g. "1h", "90s".
    #[serde(with = "humantime_serde_compat")]
    pub max_duration: Duration,
    /// Most faults active at once. Also sizes the kernel maps.
    pub max_faults: u32,
    /// Longest lease ttl a caller may ask for: how long faults may outlive
    /// a caller that stopped renewing.
    #[serde(with = "humantime_serde_compat")]
    pub max_lease_ttl: Duration,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SafetyConfig {
    /// Cgroups (relative to the cgroup2 mount) that no fault may target, nor
    /// any of their ancestors (a fault covers every cgroup below its target).
    /// The root cgroup and the agent's own cgroup are always protected.
    pub protected_cgroups: Vec<String>,
    /// Lifts every protection above. For lab machines only.
    pub allow_protected_targets: bool,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct CgroupConfig {
    /// cgroup v2 mount point; empty means detect from /proc/self/mountinfo.
    pub mount: Option<PathBuf>,
    /// The subtree (relative to the mount) this agent may target and clean
    /// up; empty means the whole tree. For several agents sharing one
    /// kernel, each owning its part (lab setups, the multi-node tests).
    pub scope: String,
}

/// How the BPF LSM programs of syscall faults attach.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LsmAttach {
    /// At the targeted cgroups where the kernel can (`lsm_cgroup`, 6.0+),
    /// else once for the node.
    #[default]
    Auto,
    /// Only at the targeted cgroups; no BPF LSM faults without `lsm_cgroup`.
    Cgroup,
    /// Once for the node, the program filtering by cgroup (every task then
    /// pays a map lookup per hooked call while a fault exists).
    Node,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SyscallConfig {
    /// "auto", "cgroup" or "node".
    pub lsm_attach: LsmAttach,
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
    /// "text" or "json". The level comes from RUST_LOG (default "info").
    pub format: LogFormat,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/faultd/faultd.sock"),
            tls: None,
            health_listen: None,
        }
    }
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/run/faultd"),
            lock_file: PathBuf::from("/run/faultd.lock"),
            qdisc_records: None,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_duration: Duration::from_secs(3600),
            max_faults: 1024,
            max_lease_ttl: Duration::from_secs(300),
        }
    }
}

impl Default for SafetyConfig {
    fn default() -> Self {
        Self {
            // The node's own control plane: faulting these takes the node out
            // of the cluster rather than testing an application.
            protected_cgroups: vec![
                "system.slice/kubelet.service".into(),
                "system.slice/containerd.service".into(),
                "system.slice/crio.service".into(),
                "system.slice/docker.service".into(),
                "system.slice/sshd.service".into(),
                "system.slice/ssh.service".into(),
                "system.slice/systemd-journald.service".into(),
            ],
            allow_protected_targets: false,
        }
    }
}

/// Largest `max_faults`: map memory grows linearly (about 600 bytes of rules
/// and 16 bytes of counters per CPU per fault).
pub const MAX_FAULTS_CEILING: u32 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.server.socket.is_absolute() {
            return Err(invalid("server.socket", "must be an absolute path"));
        }
        if !self.state.dir.is_absolute() {
            return Err(invalid("state.dir", "must be an absolute path"));
        }
        if !self.state.lock_file.is_absolute() {
            return Err(invalid("state.lock_file", "must be an absolute path"));
        }
        if self.limits.max_duration.is_zero() {
            return Err(invalid("limits.max_duration", "must be greater than zero"));
        }
        if self.limits.max_faults == 0 || self.limits.max_faults > MAX_FAULTS_CEILING {
            return Err(invalid(
                "limits.max_faults",
                format!("must be between 1 and {MAX_FAULTS_CEILING}"),
            ));
        }
        for path in &self.safety.protected_cgroups {
            if path.split('/').any(|c| c == "..") {
                return Err(invalid(
                    "safety.protected_cgroups",
                    format!("{path:?} must not contain `..`"),
                ));
            }
        }
        if let Some(mount) = &self.cgroup.mount
            && !mount.is_absolute()
        {
            return Err(invalid("cgroup.mount", "must be an absolute path"));
        }
        if self.cgroup.scope.split('/').any(|c| c == ".." || c == ".") {
            return Err(invalid("cgroup.scope", "must not contain `.` or `..`"));
        }
        if self.limits.max_lease_ttl < Duration::from_secs(1) {
            return Err(invalid("limits.max_lease_ttl", "must be at least 1s"));
        }
        if !self.audit.path.is_absolute() {
            return Err(invalid("audit.path", "must be an absolute path"));
        }
        if let Some(tls) = &self.server.tls {
            for (key, path) in [
                ("server.tls.ca", &tls.ca),
                ("server.tls.cert", &tls.cert),
                ("server.tls.key", &tls.key),
            ] {
                if !path.is_absolute() {
                    return Err(invalid(key, "must be an absolute path"));
                }
            }
            if tls.coordinator_identities.iter().any(String::is_empty)
                || tls.reader_identities.iter().any(String::is_empty)
            {
                return Err(invalid(
                    "server.tls.coordinator_identities",
                    "identities must not be empty strings",
                ));
            }
            if tls.coordinator_identities.is_empty() {
                return Err(invalid(
                    "server.tls.coordinator_identities",
                    "must name at least one identity: without one nobody could apply faults \
                     over TCP (leave [server.tls] out to serve the Unix socket only)",
                ));
            }
        }
        Ok(())
    }

    /// The defaults as a commented TOML document (`faultd --print-config`).
    pub fn default_toml() -> &'static str {
        DEFAULT_TOML
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

const DEFAULT_TOML: &str = r#"# faultd configuration. Every key is optional; these are the defaults.

[node]
# This node's name for the coordinator; empty means the hostname.
name = ""

[server]
# gRPC API on a Unix socket, mode 0600: local root only.
socket = "/run/faultd/faultd.sock"

# A TCP listener for the coordinator, off unless configured. Mutual TLS 1.3
# only: clients need a certificate from `ca`; only the coordinator
# identities (SANs of the client certificate) may change faults, readers may
# only list them. There is no plaintext TCP listener.
# [server.tls]
# listen = "0.0.0.0:7443"
# ca = "/etc/faultd/tls/ca.pem"
# cert = "/etc/faultd/tls/agent.pem"
# key = "/etc/faultd/tls/agent.key"
# coordinator_identities = ["coordinator.faultd"]
# reader_identities = []

[state]
dir = "/run/faultd"
# One agent per node; leftovers of a dead instance are removed at start.
lock_file = "/run/faultd.lock"
# Root qdiscs replaced for latency/bandwidth faults, restored on the next
# start if the agent died; default "<dir>/qdiscs.json".
# qdisc_records = "/run/faultd/qdiscs.json"

[limits]
# Every fault needs a duration, at most this long.
max_duration = "1h"
# Most faults active at once (also sizes the kernel maps).
max_faults = 1024
# Longest lease a caller may hold faults under: how long they may outlive a
# caller (the coordinator) that stopped renewing.
max_lease_ttl = "5m"

[safety]
# Neither these cgroups nor their ancestors may be targeted. The root cgroup
# and the agent's own cgroup are always protected.
protected_cgroups = [
  "system.slice/kubelet.service",
  "system.slice/containerd.service",
  "system.slice/crio.service",
  "system.slice/docker.service",
  "system.slice/sshd.service",
  "system.slice/ssh.service",
  "system.slice/systemd-journald.service",
]
allow_protected_targets = false

[cgroup]
# cgroup v2 mount; detected from /proc/self/mountinfo when unset.
# mount = "/sys/fs/cgroup"
# Subtree this agent may target and clean up, relative to the mount; empty
# for the whole tree (one agent per node).
scope = ""

[syscall]
# How BPF LSM programs (file, exec, accept, recv faults) attach: "auto" at the
# targeted cgroups where the kernel has lsm_cgroup (6.0+), else once for the
# node; "cgroup" only per cgroup; "node" always node-wide.
lsm_attach = "auto"

[log]
# "text" or "json"; level from RUST_LOG (default info).
format = "text"

[audit]
# One JSON line per mutating call: who, what, when, outcome.
path = "/var/log/faultd/audit.jsonl"
"#;

/// Durations as "90s", "2m", "1h30m", "500ms" in the config file.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        crate::duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_toml_matches_default_config() {
        let parsed = Config::parse(DEFAULT_TOML, Path::new("default")).expect("parses");
        assert_eq!(parsed, Config::default());
        parsed.validate().expect("defaults are valid");
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(
            Config::parse("", Path::new("x")).expect("parses"),
            Config::default()
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = Config::parse("[limits]\nmax_fault = 3\n", Path::new("f.toml"))
            .expect_err("unknown key");
        assert!(err.to_string().contains("max_fault"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let mut c = Config::default();
        c.limits.max_faults = 0;
        assert!(
            c.validate()
                .expect_err("zero")
                .to_string()
                .contains("limits.max_faults")
        );
        let mut c = Config::default();
        c.server.socket = "relative.sock".into();
        assert!(
            c.validate()
                .expect_err("relative")
                .to_string()
                .contains("server.socket")
        );
        let err = Config::parse("[limits]\nmax_duration = \"forever\"\n", Path::new("f"))
            .expect_err("bad duration");
        assert!(err.to_string().contains("max_duration"), "{err}");
    }

    #[test]
    fn lsm_attach_parses_and_rejects_unknown_values() {
        let c = Config::parse("[syscall]\nlsm_attach = \"node\"\n", Path::new("f")).expect("ok");
        assert_eq!(c.syscall.lsm_attach, LsmAttach::Node);
        let err = Config::parse("[syscall]\nlsm_attach = \"everywhere\"\n", Path::new("f"))
            .expect_err("unknown variant");
        assert!(err.to_string().contains("lsm_attach"), "{err}");
    }

    #[test]
    fn durations_parse() {
        let c = Config::parse("[limits]\nmax_duration = \"90s\"\n", Path::new("f")).expect("ok");
        assert_eq!(c.limits.max_duration, Duration::from_secs(90));
    }
}
