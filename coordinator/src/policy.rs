//! The blast-radius policy: limits on what one experiment may hit and how
//! hard, as pure checks over the experiment and what it selected. Every
//! refusal names the rule (its key in the policy file) and the value that
//! broke it, and comes before anything is applied anywhere.
//!
//! ```toml
//! [limits]
//! max_nodes = 10                     # nodes one experiment may touch
//! max_node_fraction = 0.5            # of the inventory's nodes
//! max_target_fraction = 1.0          # of the targets its selector matched
//! max_concurrent_experiments = 5
//! max_duration = "1h"
//! max_loss_percent = 100.0
//! max_delay = "10s"
//! min_bandwidth_bps = 8000           # a bandwidth fault may not go below
//! max_syscall_failure_percent = 100.0
//!
//! [protected]                        # never targeted
//! nodes = ["db-1"]
//! units = ["sshd.service"]
//! cgroups = ["system.slice/kubelet.service"]
//! namespaces = ["kube-system"]
//!
//! [allowlist]                        # when enabled, only these
//! enabled = false
//! nodes = []
//! units = []
//! cgroups = []
//! namespaces = []
//! ```

use std::{path::Path, time::Duration};

use faultd_proto::{agent::v1 as apb, coordinator::v1 as pb};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::{
    config::{ConfigError, opt_duration_text, read_toml},
    experiment::ExperimentSpec,
};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_nodes: Option<u32>,
    pub max_node_fraction: Option<f64>,
    pub max_target_fraction: Option<f64>,
    pub max_concurrent_experiments: Option<u32>,
    #[serde(with = "opt_duration_text")]
    pub max_duration: Option<Duration>,
    pub max_loss_percent: Option<f64>,
    #[serde(with = "opt_duration_text")]
    pub max_delay: Option<Duration>,
    pub min_bandwidth_bps: Option<u64>,
    pub max_syscall_failure_percent: Option<f64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_nodes: None,
            max_node_fraction: Some(0.5),
            max_target_fraction: None,
            max_concurrent_experiments: Some(5),
            max_duration: Some(Duration::from_secs(3600)),
            max_loss_percent: None,
            max_delay: None,
            min_bandwidth_bps: None,
            max_syscall_failure_percent: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Protected {
    pub nodes: Vec<String>,
    pub units: Vec<String>,
    pub cgroups: Vec<String>,
    pub namespaces: Vec<String>,
}

impl Default for Protected {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            units: [
                "sshd.service",
                "ssh.service",
                "kubelet.service",
                "containerd.service",
                "crio.service",
                "docker.service",
                "systemd-journald.service",
            ]
            .map(str::to_owned)
            .to_vec(),
            cgroups: Vec::new(),
            namespaces: vec!["kube-system".to_owned()],
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Allowlist {
    pub enabled: bool,
    pub nodes: Vec<String>,
    pub units: Vec<String>,
    pub cgroups: Vec<String>,
    pub namespaces: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    pub limits: Limits,
    pub protected: Protected,
    pub allowlist: Allowlist,
}

/// A rule an experiment breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("policy {rule}: {detail}")]
pub struct Violation {
    /// The rule's key in the policy file, e.g. "limits.max_duration".
    pub rule: &'static str,
    pub detail: String,
    /// True when the rule depends on the coordinator's state or what the
    /// selector matched (FailedPrecondition), false when the experiment's
    /// own spec breaks it (InvalidArgument).
    pub precondition: bool,
}

fn spec_rule(rule: &'static str, detail: String) -> Violation {
    Violation {
        rule,
        detail,
        precondition: false,
    }
}

fn state_rule(rule: &'static str, detail: String) -> Violation {
    Violation {
        rule,
        detail,
        precondition: true,
    }
}

/// A target an experiment selected: which node, what, and its cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selected<'a> {
    pub node: &'a str,
    pub target: &'a apb::Target,
    pub cgroup_path: &'a str,
    /// The pod's namespace, when the target is a pod Kubernetes knows.
    pub namespace: Option<&'a str>,
}

impl Policy {
    /// Reads and checks the policy file; returns it with its sha256.
    pub fn load(path: &Path) -> Result<(Self, String), ConfigError> {
        let (policy, text): (Self, String) = read_toml("policy", path)?;
        policy.validate()?;
        Ok((policy, format!("{:x}", Sha256::digest(text.as_bytes()))))
    }

    /// Parses and checks a policy file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let policy: Self = crate::config::parse_toml("policy", path, text)?;
        policy.validate()?;
        Ok(policy)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            what: "policy",
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        let l = &self.limits;
        for (key, v) in [
            ("limits.max_node_fraction", l.max_node_fraction),
            ("limits.max_target_fraction", l.max_target_fraction),
        ] {
            if v.is_some_and(|v| !(v > 0.0 && v <= 1.0)) {
                return Err(invalid(key, "must be in (0, 1]"));
            }
        }
        for (key, v) in [
            ("limits.max_loss_percent", l.max_loss_percent),
            (
                "limits.max_syscall_failure_percent",
                l.max_syscall_failure_percent,
            ),
        ] {
            if v.is_some_and(|v| !(0.0..=100.0).contains(&v)) {
                return Err(invalid(key, "must be in [0, 100]"));
            }
        }
        Ok(())
    }

    /// Rules on the experiment alone: duration and magnitudes.
    pub fn check_spec(&self, spec: &ExperimentSpec) -> Result<(), Violation> {
        let fields = ["spec.selector", "spec.partition.b"];
        for (field, sel) in fields.iter().zip(spec.selectors()) {
            if let Some(pods) = &sel.pods {
                self.check_namespace(&pods.namespace).map_err(|v| {
                    spec_rule(v.rule, format!("{field}.pods.namespace: {}", v.detail))
                })?;
            }
        }
        let l = &self.limits;
        if let Some(max) = l.max_duration
            && spec.duration > max
        {
            return Err(spec_rule(
                "limits.max_duration",
                format!(
                    "duration {} exceeds {}",
                    humantime::format_duration(spec.duration),
                    humantime::format_duration(max)
                ),
            ));
        }
        for (i, fault) in spec.faults.iter().enumerate() {
            use pb::fault_template::Kind;
            match fault {
                Kind::Loss(loss) => {
                    let pct = f64::from(loss.probability_ppm) / 10_000.0;
                    if let Some(max) = l.max_loss_percent
                        && pct > max
                    {
                        return Err(spec_rule(
                            "limits.max_loss_percent",
                            format!("faults[{i}] drops {pct}% of packets, above {max}%"),
                        ));
                    }
                }
                Kind::Latency(lat) => {
                    let delay = lat
                        .delay
                        .and_then(|d| Duration::try_from(d).ok())
                        .unwrap_or_default();
                    let jitter = lat
                        .jitter
                        .and_then(|d| Duration::try_from(d).ok())
                        .unwrap_or_default();
                    if let Some(max) = l.max_delay
                        && delay + jitter > max
                    {
                        return Err(spec_rule(
                            "limits.max_delay",
                            format!(
                                "faults[{i}] delays by {} (delay + jitter), above {}",
                                humantime::format_duration(delay + jitter),
                                humantime::format_duration(max)
                            ),
                        ));
                    }
                }
                Kind::Bandwidth(bw) => {
                    if let Some(min) = l.min_bandwidth_bps
                        && bw.rate_bps < min
                    {
                        return Err(spec_rule(
                            "limits.min_bandwidth_bps",
                            format!(
                                "faults[{i}] limits to {} bit/s, below the floor of {min} bit/s",
                                bw.rate_bps
                            ),
                        ));
                    }
                }
                Kind::Syscall(sys) => {
                    let pct = f64::from(sys.probability_ppm) / 10_000.0;
                    if let Some(max) = l.max_syscall_failure_percent
                        && pct > max
                    {
                        return Err(spec_rule(
                            "limits.max_syscall_failure_percent",
                            format!("faults[{i}] fails {pct}% of calls, above {max}%"),
                        ));
                    }
                }
            }
        }
        if self.allowlist.enabled {
            // Checked per node below too; this names a listed node early.
            for n in spec.selectors().flat_map(|s| &s.node_names) {
                if !self.allowlist.nodes.is_empty() && !self.allowlist.nodes.contains(n) {
                    return Err(spec_rule(
                        "allowlist.nodes",
                        format!("node {n:?} is not on the allowlist"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether one more experiment may run next to `running` others.
    pub fn check_concurrency(&self, running: usize) -> Result<(), Violation> {
        if let Some(max) = self.limits.max_concurrent_experiments
            && running >= max as usize
        {
            return Err(state_rule(
                "limits.max_concurrent_experiments",
                format!("{running} running, the limit is {max}"),
            ));
        }
        Ok(())
    }

    /// The nodes a selector matched, before their targets are listed:
    /// protected and (in allowlist mode) unlisted nodes are refused.
    pub fn check_matched_nodes(&self, nodes: &[&str]) -> Result<(), Violation> {
        for n in nodes {
            if self.protected.nodes.iter().any(|p| p == n) {
                return Err(state_rule(
                    "protected.nodes",
                    format!("the selector matches protected node {n:?}"),
                ));
            }
            if self.allowlist.enabled && !self.allowlist.nodes.iter().any(|a| a == n) {
                return Err(state_rule(
                    "allowlist.nodes",
                    format!("the selector matches node {n:?}, which is not on the allowlist"),
                ));
            }
        }
        Ok(())
    }

    /// What the experiment would hit: `selected` of `matched` targets on
    /// the nodes they live on, out of `inventory_nodes` nodes.
    pub fn check_selection(
        &self,
        selected: &[Selected<'_>],
        matched: usize,
        inventory_nodes: usize,
    ) -> Result<(), Violation> {
        for s in selected {
            self.check_target(s)?;
        }
        let nodes: std::collections::BTreeSet<&str> = selected.iter().map(|s| s.node).collect();
        let l = &self.limits;
        if let Some(max) = l.max_nodes
            && nodes.len() > max as usize
        {
            return Err(state_rule(
                "limits.max_nodes",
                format!(
                    "the experiment would touch {} nodes, the limit is {max}",
                    nodes.len()
                ),
            ));
        }
        if let Some(max) = l.max_node_fraction {
            let fraction = nodes.len() as f64 / inventory_nodes.max(1) as f64;
            if fraction > max + 1e-9 {
                return Err(state_rule(
                    "limits.max_node_fraction",
                    format!(
                        "the experiment would touch {} of {inventory_nodes} nodes ({:.0}%), above {:.0}%",
                        nodes.len(),
                        fraction * 100.0,
                        max * 100.0
                    ),
                ));
            }
        }
        if let Some(max) = l.max_target_fraction {
            let fraction = selected.len() as f64 / matched.max(1) as f64;
            if fraction > max + 1e-9 {
                return Err(state_rule(
                    "limits.max_target_fraction",
                    format!(
                        "the experiment would hit {} of the {matched} matching targets ({:.0}%), above {:.0}%",
                        selected.len(),
                        fraction * 100.0,
                        max * 100.0
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Pods of `namespace` may be targeted: it is not protected and, with
    /// an allowlist of namespaces, on it.
    pub fn check_namespace(&self, namespace: &str) -> Result<(), Violation> {
        if self.protected.namespaces.iter().any(|n| n == namespace) {
            return Err(state_rule(
                "protected.namespaces",
                format!("namespace {namespace:?} is protected"),
            ));
        }
        if self.allowlist.enabled
            && !self.allowlist.namespaces.is_empty()
            && !self.allowlist.namespaces.iter().any(|n| n == namespace)
        {
            return Err(state_rule(
                "allowlist.namespaces",
                format!("namespace {namespace:?} is not on the allowlist"),
            ));
        }
        Ok(())
    }

    fn check_target(&self, s: &Selected<'_>) -> Result<(), Violation> {
        // A pod the coordinator knows through Kubernetes, however the
        // selector found it (a pods selector, a pod_uid or a cgroup glob).
        if let Some(ns) = s.namespace {
            self.check_namespace(ns).map_err(|v| {
                state_rule(
                    v.rule,
                    format!(
                        "target {} on node {} is in {}",
                        describe(s),
                        s.node,
                        v.detail
                    ),
                )
            })?;
        }
        let unit = unit_of(s);
        let in_cgroup = |c: &String| covers(s.cgroup_path, c) || covers(c, s.cgroup_path);
        if let Some(u) = unit
            && self.protected.units.iter().any(|p| p == u)
        {
            return Err(state_rule(
                "protected.units",
                format!(
                    "target {} on node {} is protected unit {u}",
                    describe(s),
                    s.node
                ),
            ));
        }
        // A fault on a cgroup covers its subtree: protected cgroups may be
        // neither targeted nor below a target, nor may a target be inside one.
        if let Some(c) = self.protected.cgroups.iter().find(|c| in_cgroup(c)) {
            return Err(state_rule(
                "protected.cgroups",
                format!(
                    "target {} on node {} ({}) overlaps protected cgroup {c}",
                    describe(s),
                    s.node,
                    s.cgroup_path
                ),
            ));
        }
        if let Some(u) = self
            .protected
            .units
            .iter()
            .find(|u| s.cgroup_path.split('/').any(|c| c == u.as_str()))
        {
            return Err(state_rule(
                "protected.units",
                format!(
                    "target {} on node {} ({}) is within protected unit {u}",
                    describe(s),
                    s.node,
                    s.cgroup_path
                ),
            ));
        }
        if self.allowlist.enabled {
            let node_ok =
                self.allowlist.nodes.is_empty() || self.allowlist.nodes.iter().any(|n| n == s.node);
            let unit_ok = unit.is_some_and(|u| self.allowlist.units.iter().any(|a| a == u));
            let namespace_ok = s
                .namespace
                .is_some_and(|n| self.allowlist.namespaces.iter().any(|a| a == n));
            let cgroup_ok = self
                .allowlist
                .cgroups
                .iter()
                .any(|c| covers(c, s.cgroup_path));
            if !node_ok || !(unit_ok || cgroup_ok || namespace_ok) {
                return Err(state_rule(
                    "allowlist",
                    format!(
                        "target {} on node {} ({}) is not on the allowlist",
                        describe(s),
                        s.node,
                        s.cgroup_path
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Whether cgroup `outer` is `inner` or one of its ancestors (whole path
/// components).
fn covers(outer: &str, inner: &str) -> bool {
    let mut i = inner.trim_matches('/').split('/');
    outer
        .trim_matches('/')
        .split('/')
        .filter(|c| !c.is_empty())
        .all(|c| i.next() == Some(c))
}

fn unit_of<'a>(s: &Selected<'a>) -> Option<&'a str> {
    match &s.target.kind {
        Some(apb::target::Kind::SystemdUnit(u)) => Some(u),
        _ => s.cgroup_path.rsplit('/').next().filter(|last| {
            [".service", ".scope", ".slice", ".socket"]
                .iter()
                .any(|suffix| last.ends_with(suffix))
        }),
    }
}

/// A target as people write it: "unit:x.service", "cgroup:a/b", "pod:uid".
pub fn describe(s: &Selected<'_>) -> String {
    match &s.target.kind {
        Some(apb::target::Kind::CgroupPath(p)) => format!("cgroup:{p}"),
        Some(apb::target::Kind::SystemdUnit(u)) => format!("unit:{u}"),
        Some(apb::target::Kind::Pod(p)) => format!("pod:{}", p.uid),
        Some(apb::target::Kind::Pid(p)) => format!("pid:{p}"),
        None => "(none)".to_owned(),
    }
}

#[cfg(test)]
mod tests;
