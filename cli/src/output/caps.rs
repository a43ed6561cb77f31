//! What the agent's kernel offers (GetCapabilities): the JSON view and the
//! table.

use std::time::Duration;

use faultd_proto::agent::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{Align, millis, table, table_rows};
use crate::parse::format_duration;

/// `GetCapabilities`, as `-o json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilitiesView {
    pub kernel_release: String,
    pub agent_version: String,
    pub cgroup2_mount: String,
    pub features: Vec<FeatureView>,
    pub programs: Vec<KernelObjectView>,
    pub maps: Vec<KernelObjectView>,
    pub limits: Option<LimitsView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureView {
    pub name: String,
    pub available: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelObjectView {
    pub name: String,
    pub id: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsView {
    pub max_duration_ms: Option<u64>,
    pub max_faults: u32,
    pub max_rules_per_cgroup: u32,
}

impl From<&pb::Capabilities> for CapabilitiesView {
    fn from(c: &pb::Capabilities) -> Self {
        let objects = |v: &[pb::KernelObject]| {
            v.iter()
                .map(|o| KernelObjectView {
                    name: o.name.clone(),
                    id: o.id,
                })
                .collect()
        };
        Self {
            kernel_release: c.kernel_release.clone(),
            agent_version: c.agent_version.clone(),
            cgroup2_mount: c.cgroup2_mount.clone(),
            features: c
                .features
                .iter()
                .map(|f| FeatureView {
                    name: f.name.clone(),
                    available: f.available,
                    detail: f.detail.clone(),
                })
                .collect(),
            programs: objects(&c.programs),
            maps: objects(&c.maps),
            limits: c.limits.map(|l| LimitsView {
                max_duration_ms: l
                    .max_duration
                    .and_then(|d| Duration::try_from(d).ok())
                    .map(millis),
                max_faults: l.max_faults,
                max_rules_per_cgroup: l.max_rules_per_cgroup,
            }),
        }
    }
}

/// The human form of `faultctl caps`: a header block, then one table each
/// for features, programs and maps.
pub fn capabilities_table(c: &CapabilitiesView) -> String {
    use Align::{Left, Right};
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    let limits = c.limits.map_or_else(
        || "-".to_owned(),
        |l| {
            let max = l.max_duration_ms.map_or_else(
                || "-".to_owned(),
                |ms| format_duration(Duration::from_millis(ms)),
            );
            format!(
                "max duration {max}, max faults {}, max rules per cgroup {}",
                l.max_faults, l.max_rules_per_cgroup
            )
        },
    );
    let header: Vec<Vec<String>> = [
        ("kernel", dash(&c.kernel_release)),
        ("agent", dash(&c.agent_version)),
        ("cgroup2", dash(&c.cgroup2_mount)),
        ("limits", limits),
    ]
    .into_iter()
    .map(|(k, v)| vec![format!("{k}:"), v])
    .collect();
    let mut out = table_rows(&[Left, Left], &header);

    out.push('\n');
    let features: Vec<Vec<String>> = c
        .features
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                if f.available { "yes" } else { "no" }.to_owned(),
                f.detail.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[("FEATURE", Left), ("AVAILABLE", Left), ("DETAIL", Left)],
        &features,
    ));
    for (title, objects) in [("PROGRAM", &c.programs), ("MAP", &c.maps)] {
        out.push('\n');
        let rows: Vec<Vec<String>> = objects
            .iter()
            .map(|o| vec![o.name.clone(), o.id.to_string()])
            .collect();
        out.push_str(&table(&[(title, Left), ("ID", Right)], &rows));
    }
    out
}
