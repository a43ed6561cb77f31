//! Which cgroup an agent fault applies to.

use clap::{ArgGroup, Args};
use faultd_proto::agent::v1 as pb;

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("target")
        .required(true)
        .args(["cgroup", "pid", "unit", "pod"])
))]
pub struct TargetArgs {
    /// Target a cgroup, relative to the cgroup v2 mount (e.g. system.slice/nginx.service).
    #[arg(long, value_name = "PATH", help_heading = "Target (exactly one)")]
    pub cgroup: Option<String>,

    /// Target the cgroup this process is in when the fault is applied.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..),
        help_heading = "Target (exactly one)"
    )]
    pub pid: Option<u32>,

    /// Target a systemd unit or slice (e.g. nginx.service).
    #[arg(long, value_name = "NAME", help_heading = "Target (exactly one)")]
    pub unit: Option<String>,

    /// Target a Kubernetes pod by metadata.uid.
    #[arg(long, value_name = "UID", help_heading = "Target (exactly one)")]
    pub pod: Option<String>,

    /// With --pod: only this container (id, with or without a containerd:// prefix).
    //
    // `requires = "pod"` alone is not enough: clap waives a requirement whose
    // arg conflicts with one present, and the single-choice target group makes
    // --pod conflict with --unit etc. Hence the explicit conflicts.
    #[arg(
        long,
        value_name = "ID",
        requires = "pod",
        conflicts_with_all = ["cgroup", "pid", "unit"],
        help_heading = "Target (exactly one)"
    )]
    pub container: Option<String>,
}

impl TargetArgs {
    pub fn to_proto(&self) -> Option<pb::target::Kind> {
        use pb::target::Kind;
        // clap's required, single-choice "target" group guarantees exactly one.
        if let Some(path) = &self.cgroup {
            Some(Kind::CgroupPath(path.clone()))
        } else if let Some(pid) = self.pid {
            Some(Kind::Pid(pid))
        } else if let Some(unit) = &self.unit {
            Some(Kind::SystemdUnit(unit.clone()))
        } else {
            self.pod.as_ref().map(|uid| {
                Kind::Pod(pb::KubernetesPod {
                    uid: uid.clone(),
                    container_id: self.container.clone().unwrap_or_default(),
                })
            })
        }
    }
}
