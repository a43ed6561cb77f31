//! `faultctl experiment ...`, `halt`, `resume`, `status`: the coordinator's
//! commands, and the experiment spec the create flags describe.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use faultd_proto::{agent::v1 as apb, coordinator::v1 as pb};

use super::{ArgsError, fault::KindCommand};
use crate::parse::parse_duration;

#[derive(Debug, Subcommand)]
pub enum ExperimentCommand {
    /// Check an experiment against the coordinator's policy, apply its fault
    /// on the selected targets of every matching agent (all or nothing), and
    /// run it for --duration.
    Create(Box<CreateArgs>),
    /// Cut traffic between two groups of targets (side A and side B) for
    /// --duration: each side's targets drop packets to and from the other
    /// side's addresses (or, with --refuse-connect, fail connect() to them),
    /// traffic within a side and to anything else untouched. Heals at the
    /// deadline, on stop, on halt and when the lease lapses.
    Partition(Box<PartitionArgs>),
    /// Run the experiment a YAML file describes (docs/examples/): check it,
    /// apply it, follow its events until it ends, show how it ended and,
    /// when it has stop conditions or observe queries, its report once the
    /// after window has passed. With --dry-run, only list what it would hit.
    Run {
        /// The experiment file.
        file: std::path::PathBuf,
        /// Check the file, the policy and the selection, apply nothing, and
        /// list the targets and faults it would have.
        #[arg(long)]
        dry_run: bool,
        /// How long to watch the SLIs after the end for the report's
        /// recovery times (0s: report at once, without them).
        #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "30s")]
        after: Duration,
    },
    /// Show one experiment, its targets and how it ended.
    Get {
        /// The experiment id.
        id: String,
    },
    /// List experiments.
    List {
        /// Only experiments in this state (repeatable).
        #[arg(long, value_enum)]
        state: Vec<StateArg>,
    },
    /// Stop a running experiment, reverting its faults everywhere.
    Stop {
        /// The experiment id.
        id: String,
        /// Why, for the audit log and the experiment's events.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// What an experiment did: its timeline, and each observed SLI (and
    /// stop condition) before, during and after the faults, with the time
    /// it took to come back.
    Report {
        /// The experiment id.
        id: String,
        /// The baseline window before the faults.
        #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "1m")]
        before: Duration,
        /// How long after the faults to look for the recovery.
        #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "1m")]
        after: Duration,
        /// Sample spacing (default: about 200 samples, at least 1s).
        #[arg(long, value_name = "D", value_parser = parse_duration)]
        step: Option<Duration>,
        /// Also draw each SLI over time into this PNG, the faults shaded.
        #[arg(long, value_name = "FILE.png")]
        plot: Option<std::path::PathBuf>,
    },
    /// Follow an experiment's events until it ends.
    Watch {
        /// The experiment id.
        id: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    Applying,
    Running,
    Completed,
    Stopped,
    Aborted,
    Failed,
}

impl From<StateArg> for pb::ExperimentState {
    fn from(s: StateArg) -> Self {
        match s {
            StateArg::Applying => Self::Applying,
            StateArg::Running => Self::Running,
            StateArg::Completed => Self::Completed,
            StateArg::Stopped => Self::Stopped,
            StateArg::Aborted => Self::Aborted,
            StateArg::Failed => Self::Failed,
        }
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The experiment id (1 to 64 of [A-Za-z0-9._-]); creating it again with
    /// the same flags returns the same experiment.
    #[arg(long)]
    pub id: String,

    /// How long the faults stay (e.g. 2m).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Duration,

    /// How many of the matching targets to hit: all, one, fixed=N or
    /// percent=P (rounded down).
    #[arg(long, value_name = "MODE", value_parser = parse_mode, default_value = "all")]
    pub mode: Mode,

    /// Only this node (repeatable); default every node of the inventory.
    #[arg(long = "node", value_name = "NAME", help_heading = "Selector")]
    pub nodes: Vec<String>,

    /// Only nodes with this label (repeatable; all must match).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label, help_heading = "Selector")]
    pub labels: Vec<(String, String)>,

    /// Targets: cgroups matching this glob on each node (`*` within a path
    /// component, `**` across them).
    #[arg(long = "cgroup-glob", value_name = "GLOB", help_heading = "Selector")]
    pub cgroup_globs: Vec<String>,

    /// Targets: systemd units matching this glob (e.g. "checkout-*.service").
    #[arg(long = "unit-glob", value_name = "GLOB", help_heading = "Selector")]
    pub unit_globs: Vec<String>,

    /// Targets: the pod with this uid (repeatable).
    #[arg(long = "pod-uid", value_name = "UID", help_heading = "Selector")]
    pub pod_uids: Vec<String>,

    #[command(flatten)]
    pub pods: PodArgs,

    /// What the experiment is for.
    #[arg(long, default_value = "")]
    pub description: String,

    /// Abort when a Prometheus query crosses a threshold, e.g.
    /// 'sum(rate(http_errors_total[30s])) / sum(rate(http_requests_total[30s])) > 0.05 for 15s'
    /// (repeatable; the comparison is the last > or <).
    #[arg(long = "stop-when", value_name = "QUERY > N [for D]", value_parser = parse_stop_when)]
    pub stop_when: Vec<pb::StopCondition>,

    /// Record this query in the experiment's report, as NAME=QUERY
    /// (repeatable), e.g. 'p99=histogram_quantile(0.99, sum by (le) (rate(rq_seconds_bucket[1m])))'.
    #[arg(long = "observe", value_name = "NAME=QUERY", value_parser = parse_observe)]
    pub observe: Vec<pb::Observe>,

    #[command(flatten)]
    pub to: DestinationArgs,

    /// The fault applied to every selected target.
    #[command(subcommand)]
    pub fault: KindCommand,
}

/// Pods through the coordinator's Kubernetes discovery, as
/// `kubectl get pods -n NS -l K=V`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Selector (Kubernetes)")]
pub struct PodArgs {
    /// Targets: the running pods of this namespace ...
    #[arg(long = "namespace", short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    /// ... carrying this label (repeatable; all must match) ...
    #[arg(long = "pod-label", short = 'l', value_name = "KEY=VALUE", value_parser = parse_label, requires = "namespace")]
    pub pod_labels: Vec<(String, String)>,
    /// ... only this container of each.
    #[arg(
        long = "container",
        short = 'c',
        value_name = "NAME",
        requires = "namespace"
    )]
    pub container: Option<String>,
}

impl PodArgs {
    pub fn to_proto(&self) -> Option<pb::PodSelector> {
        self.namespace.as_ref().map(|ns| pb::PodSelector {
            namespace: ns.clone(),
            labels: self.pod_labels.iter().cloned().collect(),
            container: self.container.clone().unwrap_or_default(),
        })
    }
}

/// Service-to-service faults: only traffic to these destinations.
#[derive(Debug, Args)]
#[command(next_help_heading = "Destination (service-to-service)")]
pub struct DestinationArgs {
    /// Destinations: on these nodes (repeatable) ...
    #[arg(long = "to-node", value_name = "NAME")]
    pub to_nodes: Vec<String>,
    /// ... or nodes with this label (repeatable) ...
    #[arg(long = "to-label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub to_labels: Vec<(String, String)>,
    /// ... the addresses of the cgroups matching this glob.
    #[arg(long = "to-cgroup-glob", value_name = "GLOB")]
    pub to_cgroup_globs: Vec<String>,
    /// ... the addresses of the systemd units matching this glob.
    #[arg(long = "to-unit-glob", value_name = "GLOB")]
    pub to_unit_globs: Vec<String>,
    /// ... the addresses of this pod.
    #[arg(long = "to-pod-uid", value_name = "UID")]
    pub to_pod_uids: Vec<String>,
    /// Destinations: the endpoints of this Kubernetes Service.
    #[arg(long = "to-service", value_name = "NAMESPACE/NAME", value_parser = parse_service)]
    pub to_service: Option<pb::ServiceRef>,
    /// Destinations: this address or CIDR (repeatable).
    #[arg(long = "to-cidr", value_name = "CIDR")]
    pub to_cidrs: Vec<String>,
    /// Only this destination port, or inclusive range A-B.
    #[arg(long = "to-port", value_name = "N|A-B", value_parser = crate::parse::parse_port_range)]
    pub to_port: Option<crate::parse::PortRange>,
    /// Only this protocol (with --to-port: tcp or udp).
    #[arg(long = "to-protocol", value_enum)]
    pub to_protocol: Option<super::fault::ProtocolArg>,
}

impl DestinationArgs {
    /// The destination, or None when no flag names one.
    pub fn to_proto(&self) -> Option<pb::Destination> {
        let targets = patterns(
            &self.to_cgroup_globs,
            &self.to_unit_globs,
            &self.to_pod_uids,
        );
        if targets.is_empty() && self.to_cidrs.is_empty() && self.to_service.is_none() {
            return None;
        }
        let (port_min, port_max) = self
            .to_port
            .map(crate::parse::PortRange::to_proto)
            .unwrap_or((0, 0));
        Some(pb::Destination {
            selector: (!targets.is_empty()).then(|| pb::Selector {
                node_names: self.to_nodes.clone(),
                node_labels: self.to_labels.iter().cloned().collect(),
                targets,
                pods: None,
            }),
            cidrs: self.to_cidrs.clone(),
            service: self.to_service.clone(),
            port_min,
            port_max,
            protocol: self
                .to_protocol
                .map_or(apb::Protocol::Any, apb::Protocol::from)
                .into(),
        })
    }
}

#[derive(Debug, Args)]
pub struct PartitionArgs {
    /// The experiment id (1 to 64 of [A-Za-z0-9._-]).
    #[arg(long)]
    pub id: String,

    /// How long the partition lasts (e.g. 2m).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Duration,

    /// Cut only A -> B: nothing from A reaches B, B's packets still reach A.
    #[arg(long)]
    pub one_way: bool,

    /// Fail connect() to the other side with ECONNREFUSED at once instead
    /// of dropping packets (existing connections keep flowing).
    #[arg(long)]
    pub refuse_connect: bool,

    /// Side A: only this node (repeatable).
    #[arg(long = "a-node", value_name = "NAME", help_heading = "Side A")]
    pub a_nodes: Vec<String>,
    /// Side A: only nodes with this label (repeatable; all must match).
    #[arg(long = "a-label", value_name = "KEY=VALUE", value_parser = parse_label, help_heading = "Side A")]
    pub a_labels: Vec<(String, String)>,
    /// Side A: cgroups matching this glob.
    #[arg(long = "a-cgroup-glob", value_name = "GLOB", help_heading = "Side A")]
    pub a_cgroup_globs: Vec<String>,
    /// Side A: systemd units matching this glob.
    #[arg(long = "a-unit-glob", value_name = "GLOB", help_heading = "Side A")]
    pub a_unit_globs: Vec<String>,
    /// Side A: the pod with this uid (repeatable).
    #[arg(long = "a-pod-uid", value_name = "UID", help_heading = "Side A")]
    pub a_pod_uids: Vec<String>,

    /// Side B: only this node (repeatable).
    #[arg(long = "b-node", value_name = "NAME", help_heading = "Side B")]
    pub b_nodes: Vec<String>,
    /// Side B: only nodes with this label (repeatable; all must match).
    #[arg(long = "b-label", value_name = "KEY=VALUE", value_parser = parse_label, help_heading = "Side B")]
    pub b_labels: Vec<(String, String)>,
    /// Side B: cgroups matching this glob.
    #[arg(long = "b-cgroup-glob", value_name = "GLOB", help_heading = "Side B")]
    pub b_cgroup_globs: Vec<String>,
    /// Side B: systemd units matching this glob.
    #[arg(long = "b-unit-glob", value_name = "GLOB", help_heading = "Side B")]
    pub b_unit_globs: Vec<String>,
    /// Side B: the pod with this uid (repeatable).
    #[arg(long = "b-pod-uid", value_name = "UID", help_heading = "Side B")]
    pub b_pod_uids: Vec<String>,

    /// What the experiment is for.
    #[arg(long, default_value = "")]
    pub description: String,

    /// Abort when a Prometheus query crosses a threshold (as for `create`).
    #[arg(long = "stop-when", value_name = "QUERY > N [for D]", value_parser = parse_stop_when)]
    pub stop_when: Vec<pb::StopCondition>,
}

impl PartitionArgs {
    /// The experiment these flags describe.
    pub fn to_spec(&self) -> Result<pb::ExperimentSpec, ArgsError> {
        let side = |name: &'static str,
                    nodes: &[String],
                    labels: &[(String, String)],
                    cgroups: &[String],
                    units: &[String],
                    pods: &[String]| {
            let targets = patterns(cgroups, units, pods);
            if targets.is_empty() {
                return Err(ArgsError::NoSideTargets(name));
            }
            Ok(pb::Selector {
                node_names: nodes.to_vec(),
                node_labels: labels.iter().cloned().collect(),
                targets,
                pods: None,
            })
        };
        let a = side(
            "a",
            &self.a_nodes,
            &self.a_labels,
            &self.a_cgroup_globs,
            &self.a_unit_globs,
            &self.a_pod_uids,
        )?;
        let b = side(
            "b",
            &self.b_nodes,
            &self.b_labels,
            &self.b_cgroup_globs,
            &self.b_unit_globs,
            &self.b_pod_uids,
        )?;
        Ok(pb::ExperimentSpec {
            id: self.id.clone(),
            duration: Some(
                prost_types::Duration::try_from(self.duration)
                    .map_err(|_| ArgsError::DurationTooLong(self.duration))?,
            ),
            description: self.description.clone(),
            stop_conditions: self.stop_when.clone(),
            partition: Some(pb::Partition {
                a: Some(a),
                b: Some(b),
                direction: if self.one_way {
                    pb::PartitionDirection::AToB
                } else {
                    pb::PartitionDirection::Both
                }
                .into(),
                action: if self.refuse_connect {
                    pb::PartitionAction::RefuseConnect
                } else {
                    pb::PartitionAction::Drop
                }
                .into(),
            }),
            ..Default::default()
        })
    }
}

/// Target patterns from the glob and pod flags, in that order.
/// "NAMESPACE/NAME".
fn parse_service(text: &str) -> Result<pb::ServiceRef, String> {
    match text.split_once('/') {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
            Ok(pb::ServiceRef {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
        }
        _ => Err(format!("{text:?} is not NAMESPACE/NAME")),
    }
}

pub(super) fn patterns(
    cgroups: &[String],
    units: &[String],
    pods: &[String],
) -> Vec<apb::TargetPattern> {
    use apb::target_pattern::Kind;
    cgroups
        .iter()
        .map(|g| Kind::CgroupGlob(g.clone()))
        .chain(units.iter().map(|g| Kind::SystemdUnitGlob(g.clone())))
        .chain(pods.iter().map(|u| Kind::PodUid(u.clone())))
        .map(|k| apb::TargetPattern { kind: Some(k) })
        .collect()
}

/// A selection mode, as `--mode` spells it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    All,
    One,
    Fixed(u32),
    Percent(f64),
}

/// A mode as `--mode` spells it, in the API's form.
pub(super) fn parse_mode_spec(input: &str) -> Result<pb::selection_mode::Mode, String> {
    parse_mode(input).map(Mode::to_proto)
}

impl Mode {
    fn to_proto(self) -> pb::selection_mode::Mode {
        match self {
            Mode::All => pb::selection_mode::Mode::All(pb::selection_mode::All {}),
            Mode::One => pb::selection_mode::Mode::One(pb::selection_mode::One {}),
            Mode::Fixed(n) => pb::selection_mode::Mode::Fixed(n),
            Mode::Percent(p) => pb::selection_mode::Mode::Percent(p),
        }
    }
}

fn parse_mode(input: &str) -> Result<Mode, String> {
    let bad = || format!("{input:?} is not all, one, fixed=N or percent=P");
    match input.split_once('=') {
        None if input == "all" => Ok(Mode::All),
        None if input == "one" => Ok(Mode::One),
        Some(("fixed", n)) => n
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .map(Mode::Fixed)
            .ok_or_else(bad),
        Some(("percent", p)) => p
            .trim_end_matches('%')
            .parse::<f64>()
            .ok()
            .filter(|p| *p > 0.0 && *p <= 100.0)
            .map(Mode::Percent)
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// `QUERY > N`, `QUERY < N`, optionally followed by `for D`.
pub(super) fn parse_stop_when(input: &str) -> Result<pb::StopCondition, String> {
    let (cond, hold) = match input.rsplit_once(" for ") {
        Some((c, d)) => {
            let hold = parse_duration(d.trim()).map_err(|e| format!("{d:?}: {e}"))?;
            (c, Some(hold))
        }
        None => (input, None),
    };
    let at = cond
        .rfind(['>', '<'])
        .ok_or_else(|| format!("{input:?} has no > or < comparison"))?;
    let (query, rest) = cond.split_at(at);
    let comparison = if rest.starts_with('>') {
        pb::Comparison::Above
    } else {
        pb::Comparison::Below
    };
    let number = rest[1..].trim();
    let threshold: f64 = number
        .parse()
        .ok()
        .filter(|t: &f64| t.is_finite())
        .ok_or_else(|| format!("{number:?} after the comparison is not a number"))?;
    if query.trim().is_empty() {
        return Err(format!("{input:?} has no query before the comparison"));
    }
    Ok(pb::StopCondition {
        query: query.trim().to_owned(),
        comparison: comparison.into(),
        threshold,
        hold: hold
            .map(prost_types::Duration::try_from)
            .transpose()
            .map_err(|e| format!("hold: {e}"))?,
    })
}

/// `NAME=QUERY`.
pub(super) fn parse_observe(input: &str) -> Result<pb::Observe, String> {
    match input.split_once('=') {
        Some((name, query)) if !name.trim().is_empty() && !query.trim().is_empty() => {
            Ok(pb::Observe {
                name: name.trim().to_owned(),
                query: query.trim().to_owned(),
            })
        }
        _ => Err(format!("{input:?} is not NAME=QUERY")),
    }
}

fn parse_label(input: &str) -> Result<(String, String), String> {
    match input.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{input:?} is not KEY=VALUE")),
    }
}

impl CreateArgs {
    /// The experiment these flags describe.
    pub fn to_spec(&self) -> Result<pb::ExperimentSpec, ArgsError> {
        let targets = patterns(&self.cgroup_globs, &self.unit_globs, &self.pod_uids);
        let pods = self.pods.to_proto();
        if targets.is_empty() && pods.is_none() {
            return Err(ArgsError::NoTargets);
        }
        let kind = match self.fault.kind()? {
            apb::fault_spec::Kind::Loss(l) => pb::fault_template::Kind::Loss(l),
            apb::fault_spec::Kind::Syscall(s) => pb::fault_template::Kind::Syscall(s),
            apb::fault_spec::Kind::Latency(l) => pb::fault_template::Kind::Latency(l),
            apb::fault_spec::Kind::Bandwidth(b) => pb::fault_template::Kind::Bandwidth(b),
        };
        let mode = self.mode.to_proto();
        Ok(pb::ExperimentSpec {
            id: self.id.clone(),
            faults: vec![pb::FaultTemplate { kind: Some(kind) }],
            selector: Some(pb::Selector {
                node_names: self.nodes.clone(),
                node_labels: self.labels.iter().cloned().collect(),
                targets,
                pods,
            }),
            mode: Some(pb::SelectionMode { mode: Some(mode) }),
            duration: Some(
                prost_types::Duration::try_from(self.duration)
                    .map_err(|_| ArgsError::DurationTooLong(self.duration))?,
            ),
            description: self.description.clone(),
            partition: None,
            stop_conditions: self.stop_when.clone(),
            destination: self.to.to_proto(),
            observe: self.observe.clone(),
        })
    }
}
