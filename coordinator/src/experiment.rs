//! An experiment as the coordinator understands it, checked on the way in
//! from `faultd.coordinator.v1`: every field the coordinator relies on is
//! validated here, naming the field; the agents validate the faults' own
//! fields again when they apply them.

use std::{collections::BTreeMap, time::Duration};

use faultd_proto::{agent::v1 as apb, coordinator::v1 as pb};

use crate::conditions::{Comparison, StopCondition};

/// Longest experiment id: fault ids on the agents are
/// `fdc:<experiment>:<target>:<fault>` and may be 128 characters.
pub const MAX_ID_LEN: usize = 64;
/// Most faults per experiment, and most target patterns.
pub const MAX_FAULTS: usize = 8;
pub const MAX_PATTERNS: usize = 64;

/// How many of the matching targets to hit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    All,
    One,
    Fixed(u32),
    Percent(f64),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Selector {
    pub node_names: Vec<String>,
    pub node_labels: BTreeMap<String, String>,
    pub targets: Vec<apb::TargetPattern>,
    pub pods: Option<PodSelector>,
}

/// Pods by namespace and labels, found through the Kubernetes API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSelector {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// Only this container of each pod; `None`: the whole pod.
    pub container: Option<String>,
}

/// A Kubernetes Service, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

/// Where a service-to-service fault's traffic goes (validated).
#[derive(Clone, Debug, PartialEq)]
pub struct DestinationSpec {
    pub selector: Option<Selector>,
    pub cidrs: Vec<String>,
    pub service: Option<ServiceRef>,
    pub port_min: u32,
    pub port_max: u32,
    pub protocol: apb::Protocol,
}

impl DestinationSpec {
    /// The packet filter for one destination CIDR.
    pub fn filter(&self, cidr: &str) -> apb::PacketFilter {
        apb::PacketFilter {
            protocol: self.protocol.into(),
            remote_cidr: cidr.to_owned(),
            remote_port_min: self.port_min,
            remote_port_max: self.port_max,
        }
    }
}

/// "a.b.c.d", "a.b.c.d/n", "v6" or "v6/n".
fn valid_cidr(text: &str) -> bool {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    len.is_none_or(|l| l.parse::<u8>().is_ok_and(|l| l <= max))
}

fn destination_from(
    wire: &pb::Destination,
    faults: &[pb::fault_template::Kind],
) -> Result<DestinationSpec, InvalidField> {
    let selector = wire
        .selector
        .clone()
        .map(|s| selector_from("spec.destination.selector", Some(s)))
        .transpose()?;
    let service = wire
        .service
        .as_ref()
        .map(|s| {
            dns_label("spec.destination.service.namespace", &s.namespace)?;
            dns_subdomain("spec.destination.service.name", &s.name)?;
            Ok(ServiceRef {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
            })
        })
        .transpose()?;
    if selector.is_none() && wire.cidrs.is_empty() && service.is_none() {
        return Err(invalid(
            "spec.destination",
            "needs a selector, cidrs or a service: where the traffic goes",
        ));
    }
    if let Some((i, c)) = wire.cidrs.iter().enumerate().find(|(_, c)| !valid_cidr(c)) {
        return Err(invalid(
            format!("spec.destination.cidrs[{i}]"),
            format!("{c:?} is not an IPv4 or IPv6 address or CIDR"),
        ));
    }
    if wire.port_min > 65_535 || wire.port_max > 65_535 {
        return Err(invalid(
            "spec.destination.port_min",
            "ports are at most 65535",
        ));
    }
    if wire.port_max != 0 && wire.port_max < wire.port_min {
        return Err(invalid(
            "spec.destination.port_max",
            "must be 0 or at least port_min",
        ));
    }
    let protocol = apb::Protocol::try_from(wire.protocol).map_err(|_| {
        invalid(
            "spec.destination.protocol",
            format!("unknown value {}", wire.protocol),
        )
    })?;
    for (i, f) in faults.iter().enumerate() {
        if let Some(filter) = crate::addresses::filter_of(f)
            && (!filter.remote_cidr.is_empty()
                || filter.remote_port_min != 0
                || filter.remote_port_max != 0)
        {
            return Err(invalid(
                format!("spec.faults[{i}].filter"),
                "remote_cidr and ports are set by spec.destination; leave them empty",
            ));
        }
    }
    Ok(DestinationSpec {
        selector,
        cidrs: wire.cidrs.clone(),
        service,
        port_min: wire.port_min,
        port_max: wire.port_max,
        protocol,
    })
}

/// A partition between side A (the spec's `selector`) and side B.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionSpec {
    pub b: Selector,
    /// Only A -> B is cut.
    pub one_way: bool,
    /// connect() fails with ECONNREFUSED instead of packets being dropped.
    pub refuse_connect: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentSpec {
    pub id: String,
    /// The faults each selected target gets; for a partition, the one
    /// fault it applies per peer address (what the policy checks), whose
    /// filter and direction the plan fills in.
    pub faults: Vec<pb::fault_template::Kind>,
    /// For a partition, side A.
    pub selector: Selector,
    pub mode: Mode,
    pub partition: Option<PartitionSpec>,
    pub stop_conditions: Vec<StopCondition>,
    pub destination: Option<DestinationSpec>,
    /// (name, query) of each SLI the report records.
    pub observe: Vec<(String, String)>,
    pub duration: Duration,
    pub description: String,
    /// The spec as received, stored and returned as is.
    pub wire: pb::ExperimentSpec,
}

/// A field of a request that breaks a rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    pub field: String,
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> InvalidField {
    InvalidField {
        field: field.into(),
        reason: reason.into(),
    }
}

pub fn validate_id(field: &str, id: &str) -> Result<(), InvalidField> {
    if id.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(invalid(
            field,
            format!("must be at most {MAX_ID_LEN} characters"),
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
    {
        return Err(invalid(
            field,
            format!("character {c:?} is not allowed; use [A-Za-z0-9._-]"),
        ));
    }
    Ok(())
}

/// The agent's lease for an experiment (one per agent, the same id on
/// each). ':' is not allowed in experiment ids, so these split back
/// unambiguously.
pub fn lease_id(experiment: &str) -> String {
    format!("fdc:{experiment}")
}

/// The id of fault `fault` on target `target` of an experiment.
pub fn fault_id(experiment: &str, target: usize, fault: usize) -> String {
    format!("fdc:{experiment}:{target}:{fault}")
}

/// The experiment a fault id or lease id of this coordinator belongs to.
pub fn experiment_of(id: &str) -> Option<&str> {
    id.strip_prefix("fdc:")?.split(':').next()
}

fn ppm(field: String, v: u32) -> Result<(), InvalidField> {
    if v == 0 || v > 1_000_000 {
        return Err(invalid(
            field,
            format!("must be in 1..=1000000 parts per million, got {v}"),
        ));
    }
    Ok(())
}

impl TryFrom<pb::ExperimentSpec> for ExperimentSpec {
    type Error = InvalidField;

    fn try_from(spec: pb::ExperimentSpec) -> Result<Self, Self::Error> {
        validate_id("spec.id", &spec.id)?;
        let (faults, selector, mode, partition) = match &spec.partition {
            Some(p) => {
                if !spec.faults.is_empty() {
                    return Err(invalid(
                        "spec.faults",
                        "must be empty with spec.partition, which makes its own faults",
                    ));
                }
                if spec.selector.is_some() {
                    return Err(invalid(
                        "spec.selector",
                        "must be unset with spec.partition; use partition.a and partition.b",
                    ));
                }
                if spec.mode.as_ref().is_some_and(|m| {
                    !matches!(m.mode, None | Some(pb::selection_mode::Mode::All(_)))
                }) {
                    return Err(invalid(
                        "spec.mode",
                        "must be unset or all with spec.partition: every target of both sides is in it",
                    ));
                }
                let (fault, partition) = partition_from(p)?;
                let a = selector_from("spec.partition.a", p.a.clone())?;
                (vec![fault], a, Mode::All, Some(partition))
            }
            None => {
                let faults = faults_from(&spec.faults)?;
                let selector = selector_from("spec.selector", spec.selector.clone())?;
                (faults, selector, mode_from(spec.mode.as_ref())?, None)
            }
        };
        let duration = spec
            .duration
            .ok_or_else(|| invalid("spec.duration", "is required: every experiment ends"))?;
        if duration.seconds < 0
            || duration.nanos < 0
            || (duration.seconds == 0 && duration.nanos == 0)
        {
            return Err(invalid("spec.duration", "must be greater than zero"));
        }
        let duration = Duration::try_from(duration)
            .map_err(|e| invalid("spec.duration", format!("is not a valid duration: {e}")))?;
        if spec.description.len() > 4096 {
            return Err(invalid("spec.description", "must be at most 4096 bytes"));
        }
        let stop_conditions = conditions_from(&spec.stop_conditions)?;
        if spec.observe.len() > MAX_STOP_CONDITIONS {
            return Err(invalid(
                "spec.observe",
                format!("at most {MAX_STOP_CONDITIONS}, got {}", spec.observe.len()),
            ));
        }
        let mut observe = Vec::new();
        for (i, o) in spec.observe.iter().enumerate() {
            if o.name.trim().is_empty() || o.name.len() > 64 {
                return Err(invalid(
                    format!("spec.observe[{i}].name"),
                    "is required, at most 64 bytes",
                ));
            }
            if o.query.trim().is_empty() || o.query.len() > 4096 {
                return Err(invalid(
                    format!("spec.observe[{i}].query"),
                    "is required, at most 4096 bytes",
                ));
            }
            observe.push((o.name.clone(), o.query.clone()));
        }
        let destination = match (&spec.destination, &partition) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "spec.destination",
                    "must be unset with spec.partition, which filters by the other side",
                ));
            }
            (Some(d), None) => Some(destination_from(d, &faults)?),
            (None, _) => None,
        };
        Ok(Self {
            id: spec.id.clone(),
            faults,
            selector,
            mode,
            partition,
            stop_conditions,
            destination,
            observe,
            duration,
            description: spec.description.clone(),
            wire: spec,
        })
    }
}

impl ExperimentSpec {
    /// Every selector: side A and, for a partition, side B.
    pub fn selectors(&self) -> impl Iterator<Item = &Selector> {
        std::iter::once(&self.selector).chain(self.partition.as_ref().map(|p| &p.b))
    }
}

/// Most stop conditions per experiment.
pub const MAX_STOP_CONDITIONS: usize = 8;

fn conditions_from(wire: &[pb::StopCondition]) -> Result<Vec<StopCondition>, InvalidField> {
    if wire.len() > MAX_STOP_CONDITIONS {
        return Err(invalid(
            "spec.stop_conditions",
            format!("at most {MAX_STOP_CONDITIONS}, got {}", wire.len()),
        ));
    }
    wire.iter()
        .enumerate()
        .map(|(i, c)| {
            let field = |f: &str| format!("spec.stop_conditions[{i}].{f}");
            if c.query.trim().is_empty() {
                return Err(invalid(field("query"), "is required"));
            }
            if c.query.len() > 4096 {
                return Err(invalid(field("query"), "must be at most 4096 bytes"));
            }
            if !c.threshold.is_finite() {
                return Err(invalid(field("threshold"), "must be a finite number"));
            }
            let comparison = match pb::Comparison::try_from(c.comparison) {
                Ok(pb::Comparison::Unspecified | pb::Comparison::Above) => Comparison::Above,
                Ok(pb::Comparison::Below) => Comparison::Below,
                Err(_) => {
                    return Err(invalid(
                        field("comparison"),
                        format!("unknown value {}", c.comparison),
                    ));
                }
            };
            let hold = match c.hold {
                None => Duration::ZERO,
                Some(d) if d.seconds < 0 || d.nanos < 0 => {
                    return Err(invalid(field("hold"), "must not be negative"));
                }
                Some(d) => Duration::try_from(d)
                    .map_err(|e| invalid(field("hold"), format!("is not a valid duration: {e}")))?,
            };
            Ok(StopCondition {
                query: c.query.clone(),
                comparison,
                threshold: c.threshold,
                hold,
            })
        })
        .collect()
}

/// A partition's sides' options, and the fault it applies per peer
/// address (direction and filter filled in by the plan).
fn partition_from(
    p: &pb::Partition,
) -> Result<(pb::fault_template::Kind, PartitionSpec), InvalidField> {
    let b = selector_from("spec.partition.b", p.b.clone())?;
    let one_way = match pb::PartitionDirection::try_from(p.direction) {
        Ok(pb::PartitionDirection::Unspecified | pb::PartitionDirection::Both) => false,
        Ok(pb::PartitionDirection::AToB) => true,
        Err(_) => {
            return Err(invalid(
                "spec.partition.direction",
                format!("unknown value {}", p.direction),
            ));
        }
    };
    let refuse_connect = match pb::PartitionAction::try_from(p.action) {
        Ok(pb::PartitionAction::Unspecified | pb::PartitionAction::Drop) => false,
        Ok(pb::PartitionAction::RefuseConnect) => true,
        Err(_) => {
            return Err(invalid(
                "spec.partition.action",
                format!("unknown value {}", p.action),
            ));
        }
    };
    let fault = if refuse_connect {
        pb::fault_template::Kind::Syscall(apb::SyscallFault {
            operation: apb::SyscallOperation::Connect.into(),
            errno: "ECONNREFUSED".into(),
            probability_ppm: 1_000_000,
            ..Default::default()
        })
    } else {
        pb::fault_template::Kind::Loss(apb::LossFault {
            probability_ppm: 1_000_000,
            direction: apb::Direction::Both.into(),
            filter: None,
        })
    };
    Ok((
        fault,
        PartitionSpec {
            b,
            one_way,
            refuse_connect,
        },
    ))
}

fn faults_from(wire: &[pb::FaultTemplate]) -> Result<Vec<pb::fault_template::Kind>, InvalidField> {
    if wire.is_empty() {
        return Err(invalid("spec.faults", "needs at least one fault"));
    }
    if wire.len() > MAX_FAULTS {
        return Err(invalid(
            "spec.faults",
            format!("at most {MAX_FAULTS} faults, got {}", wire.len()),
        ));
    }
    let mut faults = Vec::new();
    for (i, f) in wire.iter().enumerate() {
        use pb::fault_template::Kind;
        let kind = f.kind.clone().ok_or_else(|| {
            invalid(
                format!("spec.faults[{i}]"),
                "needs one of loss, syscall, latency, bandwidth",
            )
        })?;
        match &kind {
            Kind::Loss(l) => ppm(
                format!("spec.faults[{i}].loss.probability_ppm"),
                l.probability_ppm,
            )?,
            Kind::Syscall(s) => ppm(
                format!("spec.faults[{i}].syscall.probability_ppm"),
                s.probability_ppm,
            )?,
            Kind::Latency(l) if l.delay.is_none() => {
                return Err(invalid(
                    format!("spec.faults[{i}].latency.delay"),
                    "is required",
                ));
            }
            Kind::Latency(_) => {}
            Kind::Bandwidth(b) if b.rate_bps == 0 => {
                return Err(invalid(
                    format!("spec.faults[{i}].bandwidth.rate_bps"),
                    "is required",
                ));
            }
            Kind::Bandwidth(_) => {}
        }
        faults.push(kind);
    }
    Ok(faults)
}

/// A selector, its fields named under `field` ("spec.selector",
/// "spec.partition.a", ...).
fn selector_from(field: &str, sel: Option<pb::Selector>) -> Result<Selector, InvalidField> {
    let sel = sel.ok_or_else(|| invalid(field, "is required"))?;
    let pods = sel
        .pods
        .as_ref()
        .map(|p| pod_selector_from(&format!("{field}.pods"), p))
        .transpose()?;
    if sel.targets.is_empty() && pods.is_none() {
        return Err(invalid(
            format!("{field}.targets"),
            "needs at least one target pattern (cgroup_glob, systemd_unit_glob or pod_uid), \
             or pods",
        ));
    }
    if sel.targets.len() > MAX_PATTERNS {
        return Err(invalid(
            format!("{field}.targets"),
            format!("at most {MAX_PATTERNS} patterns"),
        ));
    }
    for (i, t) in sel.targets.iter().enumerate() {
        use apb::target_pattern::Kind;
        match &t.kind {
            None => {
                return Err(invalid(
                    format!("{field}.targets[{i}]"),
                    "needs one of cgroup_glob, systemd_unit_glob, pod_uid",
                ));
            }
            Some(Kind::CgroupGlob(g) | Kind::SystemdUnitGlob(g) | Kind::PodUid(g))
                if g.is_empty() =>
            {
                return Err(invalid(format!("{field}.targets[{i}]"), "is empty"));
            }
            Some(_) => {}
        }
    }
    Ok(Selector {
        node_names: sel.node_names,
        node_labels: sel.node_labels.into_iter().collect(),
        targets: sel.targets,
        pods,
    })
}

fn pod_selector_from(field: &str, p: &pb::PodSelector) -> Result<PodSelector, InvalidField> {
    dns_label(&format!("{field}.namespace"), &p.namespace)?;
    for (k, v) in &p.labels {
        label_key(&format!("{field}.labels[{k:?}]"), k)?;
        label_value(&format!("{field}.labels[{k:?}]"), v)?;
    }
    let container = (!p.container.is_empty())
        .then(|| {
            dns_label(&format!("{field}.container"), &p.container).map(|()| p.container.clone())
        })
        .transpose()?;
    Ok(PodSelector {
        namespace: p.namespace.clone(),
        labels: p.labels.clone().into_iter().collect(),
        container,
    })
}

/// An RFC 1123 label, as Kubernetes names namespaces and containers: 1-63
/// lowercase alphanumerics or '-', starting and ending alphanumeric.
fn dns_label(field: &str, s: &str) -> Result<(), InvalidField> {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if s.is_empty() || s.len() > 63 || !s.chars().all(|c| ok(c) || c == '-') {
        return Err(invalid(
            field,
            format!("{s:?} is not a DNS label (1-63 of a-z, 0-9, '-')"),
        ));
    }
    if !s.starts_with(ok) || !s.ends_with(ok) {
        return Err(invalid(
            field,
            format!("{s:?} must start and end with a letter or digit"),
        ));
    }
    Ok(())
}

/// An RFC 1123 subdomain (Service names): dot-separated labels, at most 253.
fn dns_subdomain(field: &str, s: &str) -> Result<(), InvalidField> {
    if s.len() > 253 {
        return Err(invalid(field, "is longer than 253 characters"));
    }
    s.split('.').try_for_each(|l| dns_label(field, l))
}

/// A label key: an optional DNS subdomain prefix and '/', then a name of
/// 1-63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric.
fn label_key(field: &str, key: &str) -> Result<(), InvalidField> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            dns_subdomain(field, prefix)?;
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err(invalid(field, "the label key's name is empty"));
    }
    label_value(field, name)
}

/// A label value: empty, or 1-63 alphanumerics, '-', '_' or '.', starting
/// and ending alphanumeric.
fn label_value(field: &str, v: &str) -> Result<(), InvalidField> {
    let ok = |c: char| c.is_ascii_alphanumeric();
    let valid = v.is_empty()
        || (v.len() <= 63
            && v.chars().all(|c| ok(c) || matches!(c, '-' | '_' | '.'))
            && v.starts_with(ok)
            && v.ends_with(ok));
    if valid {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{v:?} is not a label value (at most 63 of A-Z, a-z, 0-9, '-', '_', '.', alphanumeric at both ends)"
            ),
        ))
    }
}

fn mode_from(mode: Option<&pb::SelectionMode>) -> Result<Mode, InvalidField> {
    Ok(match mode.and_then(|m| m.mode) {
        None => {
            return Err(invalid(
                "spec.mode",
                "is required: all, one, fixed or percent",
            ));
        }
        Some(pb::selection_mode::Mode::All(_)) => Mode::All,
        Some(pb::selection_mode::Mode::One(_)) => Mode::One,
        Some(pb::selection_mode::Mode::Fixed(0)) => {
            return Err(invalid("spec.mode.fixed", "must be at least 1"));
        }
        Some(pb::selection_mode::Mode::Fixed(n)) => Mode::Fixed(n),
        Some(pb::selection_mode::Mode::Percent(p)) if !(p > 0.0 && p <= 100.0) => {
            return Err(invalid(
                "spec.mode.percent",
                format!("must be in (0, 100], got {p}"),
            ));
        }
        Some(pb::selection_mode::Mode::Percent(p)) => Mode::Percent(p),
    })
}

impl Mode {
    /// How many of `matched` targets this mode selects, or why none.
    pub fn count(self, matched: usize) -> Result<usize, String> {
        if matched == 0 {
            return Err("the selector matches no target".to_owned());
        }
        match self {
            Self::All => Ok(matched),
            Self::One => Ok(1),
            Self::Fixed(n) if n as usize > matched => Err(format!(
                "mode fixed {n} needs {n} targets, but only {matched} match"
            )),
            Self::Fixed(n) => Ok(n as usize),
            Self::Percent(p) => {
                // Rounded down, as Chaos Mesh's fixed-percent mode: never
                // more than asked for.
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "p is in (0, 100], so the product is in [0, matched]"
                )]
                let n = (matched as f64 * p / 100.0).floor() as usize;
                if n == 0 {
                    Err(format!(
                        "mode percent {p} of {matched} matching targets selects none"
                    ))
                } else {
                    Ok(n)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> pb::ExperimentSpec {
        pb::ExperimentSpec {
            id: "exp-1".into(),
            faults: vec![pb::FaultTemplate {
                kind: Some(pb::fault_template::Kind::Loss(apb::LossFault {
                    probability_ppm: 300_000,
                    ..Default::default()
                })),
            }],
            selector: Some(pb::Selector {
                targets: vec![apb::TargetPattern {
                    kind: Some(apb::target_pattern::Kind::CgroupGlob("app/*".into())),
                }],
                ..Default::default()
            }),
            mode: Some(pb::SelectionMode {
                mode: Some(pb::selection_mode::Mode::Percent(50.0)),
            }),
            duration: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            description: String::new(),
            partition: None,
            stop_conditions: Vec::new(),
            destination: None,
            observe: Vec::new(),
        }
    }

    fn field(s: pb::ExperimentSpec) -> String {
        ExperimentSpec::try_from(s).expect_err("invalid").field
    }

    #[test]
    fn pod_selectors_and_services_are_checked_as_kubernetes_names() {
        let pods = |namespace: &str, labels: &[(&str, &str)], container: &str| {
            let mut s = spec();
            s.selector = Some(pb::Selector {
                pods: Some(pb::PodSelector {
                    namespace: namespace.into(),
                    labels: labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    container: container.into(),
                }),
                ..Default::default()
            });
            s
        };
        let ok = ExperimentSpec::try_from(pods(
            "shop",
            &[("app.kubernetes.io/name", "checkout"), ("tier", "")],
            "app",
        ))
        .expect("valid");
        assert_eq!(
            ok.selector.pods.and_then(|p| p.container).as_deref(),
            Some("app")
        );
        assert_eq!(field(pods("", &[], "")), "spec.selector.pods.namespace");
        assert_eq!(field(pods("Shop", &[], "")), "spec.selector.pods.namespace");
        assert_eq!(
            field(pods("shop-", &[], "")),
            "spec.selector.pods.namespace"
        );
        assert_eq!(
            field(pods("shop", &[("bad key!", "x")], "")),
            "spec.selector.pods.labels[\"bad key!\"]"
        );
        assert_eq!(
            field(pods("shop", &[("app", "-x")], "")),
            "spec.selector.pods.labels[\"app\"]"
        );
        assert_eq!(
            field(pods("shop", &[], "App")),
            "spec.selector.pods.container"
        );
        let mut svc = spec();
        svc.destination = Some(pb::Destination {
            service: Some(pb::ServiceRef {
                namespace: "shop".into(),
                name: "payment..v2".into(),
            }),
            ..Default::default()
        });
        assert_eq!(field(svc), "spec.destination.service.name");
    }

    #[test]
    fn valid_and_each_invalid_field_named() {
        let ok = ExperimentSpec::try_from(spec()).expect("valid");
        assert_eq!(ok.mode, Mode::Percent(50.0));
        let mut s = spec();
        s.id = "a/b".into();
        assert_eq!(field(s), "spec.id");
        let mut s = spec();
        s.faults.clear();
        assert_eq!(field(s), "spec.faults");
        let mut s = spec();
        s.faults[0].kind = Some(pb::fault_template::Kind::Loss(apb::LossFault::default()));
        assert_eq!(field(s), "spec.faults[0].loss.probability_ppm");
        let mut s = spec();
        s.selector = None;
        assert_eq!(field(s), "spec.selector");
        let mut s = spec();
        s.mode = None;
        assert_eq!(field(s), "spec.mode");
        let mut s = spec();
        s.mode = Some(pb::SelectionMode {
            mode: Some(pb::selection_mode::Mode::Percent(150.0)),
        });
        assert_eq!(field(s), "spec.mode.percent");
        let mut s = spec();
        s.duration = None;
        assert_eq!(field(s), "spec.duration");
    }

    #[test]
    fn modes_count_like_chaos_mesh() {
        assert_eq!(Mode::All.count(7), Ok(7));
        assert_eq!(Mode::One.count(7), Ok(1));
        assert_eq!(Mode::Fixed(3).count(7), Ok(3));
        assert!(Mode::Fixed(8).count(7).is_err());
        assert_eq!(Mode::Percent(50.0).count(7), Ok(3));
        assert_eq!(Mode::Percent(100.0).count(7), Ok(7));
        assert!(Mode::Percent(10.0).count(7).is_err());
        assert!(Mode::All.count(0).is_err());
    }

    #[test]
    fn fault_and_lease_ids_lead_back_to_their_experiment() {
        assert_eq!(lease_id("a.b"), "fdc:a.b");
        assert_eq!(experiment_of(&fault_id("a.b", 12, 0)), Some("a.b"));
        assert_eq!(experiment_of(&lease_id("a.b")), Some("a.b"));
        assert_eq!(experiment_of("someone-else"), None);
        assert!(fault_id(&"x".repeat(MAX_ID_LEN), 9999, 7).len() <= 128);
    }
}
