//! Experiments as files (`faultctl experiment run FILE.yaml`): the same
//! experiment `experiment create` and `experiment partition` describe with
//! flags, in YAML. Faults are written as the fault subcommands of `create`
//! ("latency --delay 400ms --jitter 10ms"), so the file and the command
//! line share one parser and one set of rules; stop conditions as
//! `--stop-when` takes them.
//!
//! ```yaml
//! id: checkout-payment-latency
//! hypothesis: checkout's error ratio stays under 5% with 400 ms to payment
//! duration: 2m
//! mode: all                     # one, fixed=N, percent=P
//! targets:
//!   unit_globs: ["checkout-*.service"]
//! faults:
//!   - latency --delay 400ms --jitter 10ms
//! destination:
//!   unit_globs: ["payment-*.service"]
//!   port: "8443"
//!   protocol: tcp
//! stop_when:
//!   - sum(rate(errors_total[30s])) / sum(rate(requests_total[30s])) > 0.05 for 15s
//! observe:                      # in the report, next to the stop conditions
//!   p99: histogram_quantile(0.99, sum by (le) (rate(checkout_seconds_bucket[30s])))
//! ```

use std::{collections::BTreeMap, path::Path};

use clap::Parser;
use faultd_proto::{agent::v1 as apb, coordinator::v1 as pb};
use serde::Deserialize;

use super::{
    experiment::{parse_mode_spec, parse_stop_when, patterns},
    fault::{KindCommand, ProtocolArg},
};
use crate::parse::{parse_duration, parse_port_range};

/// Why a file is not an experiment.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Yaml { path: String, message: String },
    #[error("{path}: {field}: {reason}")]
    Field {
        path: String,
        field: String,
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    id: String,
    #[serde(default)]
    description: String,
    /// What the experiment is expected to show; kept with the description.
    #[serde(default)]
    hypothesis: String,
    duration: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    targets: Option<Selector>,
    #[serde(default)]
    faults: Vec<String>,
    #[serde(default)]
    destination: Option<Destination>,
    #[serde(default)]
    partition: Option<Partition>,
    #[serde(default)]
    stop_when: Vec<String>,
    /// Queries recorded in the report: name -> PromQL.
    #[serde(default)]
    observe: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Selector {
    #[serde(default)]
    nodes: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    cgroup_globs: Vec<String>,
    #[serde(default)]
    unit_globs: Vec<String>,
    #[serde(default)]
    pod_uids: Vec<String>,
    /// Pods through the coordinator's Kubernetes discovery.
    #[serde(default)]
    pods: Option<Pods>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pods {
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    container: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Destination {
    #[serde(flatten)]
    selector: Selector,
    #[serde(default)]
    cidrs: Vec<String>,
    /// A Kubernetes Service's endpoints, "namespace/name".
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    port: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Partition {
    a: Selector,
    b: Selector,
    #[serde(default)]
    one_way: bool,
    #[serde(default)]
    refuse_connect: bool,
}

/// A fault line, parsed as `experiment create`'s fault subcommand.
#[derive(Debug, Parser)]
#[command(name = "fault", no_binary_name = true)]
struct FaultLine {
    #[command(subcommand)]
    kind: KindCommand,
}

impl Selector {
    fn to_proto(&self) -> pb::Selector {
        pb::Selector {
            node_names: self.nodes.clone(),
            node_labels: self.labels.clone().into_iter().collect(),
            targets: patterns(&self.cgroup_globs, &self.unit_globs, &self.pod_uids),
            pods: self.pods.as_ref().map(|p| pb::PodSelector {
                namespace: p.namespace.clone(),
                labels: p.labels.clone().into_iter().collect(),
                container: p.container.clone(),
            }),
        }
    }
}

/// Reads an experiment file.
///
/// # Errors
/// When it cannot be read, is not YAML of this shape, or a value breaks
/// its rule (the error names the field).
pub fn read(path: &Path) -> Result<pb::ExperimentSpec, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&path.display().to_string(), &text)
}

/// Parses an experiment file's text; `path` names it in errors.
///
/// # Errors
/// As [`read`].
pub fn parse(path: &str, text: &str) -> Result<pb::ExperimentSpec, FileError> {
    let f: File = serde_norway::from_str(text).map_err(|e| FileError::Yaml {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let field = |field: &str, reason: String| FileError::Field {
        path: path.to_owned(),
        field: field.to_owned(),
        reason,
    };
    let duration = parse_duration(&f.duration).map_err(|e| field("duration", e.to_string()))?;
    let mut spec = pb::ExperimentSpec {
        id: f.id.clone(),
        description: match (f.description.is_empty(), f.hypothesis.is_empty()) {
            (_, true) => f.description.clone(),
            (true, false) => format!("hypothesis: {}", f.hypothesis),
            (false, false) => format!("{}\nhypothesis: {}", f.description, f.hypothesis),
        },
        duration: prost_types::Duration::try_from(duration)
            .map(Some)
            .map_err(|e| field("duration", e.to_string()))?,
        ..Default::default()
    };
    spec.observe = f
        .observe
        .iter()
        .map(|(name, query)| pb::Observe {
            name: name.clone(),
            query: query.clone(),
        })
        .collect();
    for (i, s) in f.stop_when.iter().enumerate() {
        spec.stop_conditions
            .push(parse_stop_when(s).map_err(|e| field(&format!("stop_when[{i}]"), e))?);
    }
    if let Some(p) = &f.partition {
        if !f.faults.is_empty() || f.targets.is_some() || f.mode.is_some() {
            return Err(field(
                "partition",
                "a partition makes its own faults: leave out faults, targets and mode".into(),
            ));
        }
        spec.partition = Some(pb::Partition {
            a: Some(p.a.to_proto()),
            b: Some(p.b.to_proto()),
            direction: if p.one_way {
                pb::PartitionDirection::AToB
            } else {
                pb::PartitionDirection::Both
            }
            .into(),
            action: if p.refuse_connect {
                pb::PartitionAction::RefuseConnect
            } else {
                pb::PartitionAction::Drop
            }
            .into(),
        });
        return Ok(spec);
    }
    let targets = f
        .targets
        .as_ref()
        .ok_or_else(|| field("targets", "is required (or a partition)".into()))?;
    spec.selector = Some(targets.to_proto());
    let mode = parse_mode_spec(f.mode.as_deref().unwrap_or("all")).map_err(|e| field("mode", e))?;
    spec.mode = Some(pb::SelectionMode { mode: Some(mode) });
    if f.faults.is_empty() {
        return Err(field("faults", "needs at least one fault".into()));
    }
    for (i, line) in f.faults.iter().enumerate() {
        let name = format!("faults[{i}]");
        let parsed = FaultLine::try_parse_from(line.split_whitespace())
            .map_err(|e| field(&name, e.render().to_string().trim().to_owned()))?;
        let kind = parsed
            .kind
            .kind()
            .map_err(|e| field(&name, e.to_string()))?;
        let kind = match kind {
            apb::fault_spec::Kind::Loss(l) => pb::fault_template::Kind::Loss(l),
            apb::fault_spec::Kind::Syscall(s) => pb::fault_template::Kind::Syscall(s),
            apb::fault_spec::Kind::Latency(l) => pb::fault_template::Kind::Latency(l),
            apb::fault_spec::Kind::Bandwidth(b) => pb::fault_template::Kind::Bandwidth(b),
        };
        spec.faults.push(pb::FaultTemplate { kind: Some(kind) });
    }
    if let Some(d) = &f.destination {
        let (port_min, port_max) = match &d.port {
            Some(p) => parse_port_range(p)
                .map_err(|e| field("destination.port", e.to_string()))?
                .to_proto(),
            None => (0, 0),
        };
        let protocol = match d.protocol.as_deref() {
            None => apb::Protocol::Any,
            Some(p) => <ProtocolArg as clap::ValueEnum>::from_str(p, true)
                .map(apb::Protocol::from)
                .map_err(|_| {
                    field(
                        "destination.protocol",
                        format!("{p:?} is not tcp, udp, icmp or any"),
                    )
                })?,
        };
        let selector = d.selector.to_proto();
        let service = d
            .service
            .as_deref()
            .map(|s| match s.split_once('/') {
                Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
                    Ok(pb::ServiceRef {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                    })
                }
                _ => Err(field(
                    "destination.service",
                    format!("{s:?} is not namespace/name"),
                )),
            })
            .transpose()?;
        spec.destination = Some(pb::Destination {
            selector: (!selector.targets.is_empty() || selector.pods.is_some()).then_some(selector),
            cidrs: d.cidrs.clone(),
            service,
            port_min,
            port_max,
            protocol: protocol.into(),
        });
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("docs/examples") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                read(&path).unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(seen >= 2, "examples in {}", dir.display());
    }

    #[test]
    fn a_drill_file_becomes_the_spec_the_flags_make() {
        let spec = parse(
            "drill.yaml",
            r#"
id: checkout-payment
hypothesis: errors stay under 5%
duration: 2m
targets:
  labels: {zone: a}
  unit_globs: ["checkout-*.service"]
faults:
  - latency --delay 400ms --jitter 10ms
destination:
  unit_globs: ["payment-*.service"]
  port: "8443"
  protocol: tcp
stop_when:
  - errors > 0.05 for 15s
"#,
        )
        .expect("parses");
        assert_eq!(spec.id, "checkout-payment");
        assert_eq!(spec.description, "hypothesis: errors stay under 5%");
        assert_eq!(spec.duration.map(|d| d.seconds), Some(120));
        let sel = spec.selector.expect("selector");
        assert_eq!(sel.node_labels.get("zone").map(String::as_str), Some("a"));
        let Some(pb::fault_template::Kind::Latency(l)) = &spec.faults[0].kind else {
            panic!("latency")
        };
        assert_eq!(l.delay.map(|d| d.nanos), Some(400_000_000));
        let d = spec.destination.expect("destination");
        assert_eq!(
            (d.port_min, d.protocol),
            (8443, i32::from(apb::Protocol::Tcp))
        );
        assert_eq!(spec.stop_conditions[0].threshold, 0.05);
    }

    #[test]
    fn bad_files_name_the_field() {
        let err = |text: &str| parse("x.yaml", text).expect_err("bad").to_string();
        let base = "id: x\nduration: 1m\ntargets: {cgroup_globs: [app]}\n";
        assert!(err(&format!("{base}faults: [loss --percent 500]")).contains("faults[0]"));
        assert!(err(&format!("{base}faults: [jitter]")).contains("faults[0]"));
        assert!(err("id: x\nduration: soon\nfaults: []").contains("duration"));
        assert!(
            err(&format!("{base}faults: [loss --percent 5]\nstop_when: [x]"))
                .contains("stop_when[0]")
        );
        assert!(err(&format!("{base}faults: [loss --percent 5]\nmode: most")).contains("mode"));
        assert!(err(&format!("{base}bogus: 1")).contains("bogus"));
        assert!(err(&format!("{base}partition: {{a: {{}}, b: {{}}}}")).contains("partition"));
    }
}
