//! What the running kernel offers, probed once at start and reported by
//! GetCapabilities. Each probe says how it decided, so an operator can tell a
//! missing feature from a failed probe.

use std::path::Path;

use aya::{
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_program_supported},
    util::KernelVersion,
};

use crate::{backend::SysBackends, fault::FaultKind};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    pub available: bool,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    pub kernel_release: String,
    pub features: Vec<Feature>,
}

impl Capabilities {
    pub fn has(&self, name: &str) -> bool {
        self.features.iter().any(|f| f.name == name && f.available)
    }

    /// Whether this node can serve a fault of `kind`, its syscall faults
    /// served by `backends`: every feature it needs is present, or the
    /// error names each one missing and what provides it.
    pub fn check(&self, kind: &FaultKind, backends: &SysBackends) -> Result<(), Unsupported> {
        if kind.ingress_delay() && !self.has("tcx") {
            // The tc program that picks the packets must be a bpf link that
            // detaches when the agent dies; netlink tc filters on older
            // kernels stay (docs/latency.md, "Ingress latency").
            return Err(Unsupported(format!(
                "{} faults on ingress need tcx (TCX link-based tc attachment, kernel >= \
                 6.6; this kernel is {}): the tc ingress program must be a bpf link that \
                 detaches when the agent dies, which netlink tc filters on older kernels do \
                 not; see docs/latency.md; use direction egress here",
                kind.name(),
                self.kernel_release
            )));
        }
        let mut missing: Vec<String> = required_features(kind)
            .iter()
            .filter(|(name, _)| !self.has(name))
            .map(|(name, what)| format!("{name} ({what})"))
            .collect();
        if let FaultKind::Syscall(s) = kind
            && let Err(e) = backends.pick(s)
        {
            missing.push(e.0);
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(Unsupported(format!(
            "this kernel ({}) lacks what {} faults need: {}",
            self.kernel_release,
            kind.name(),
            missing.join(", ")
        )))
    }

    /// Every feature present: for the manager's unit tests, where the fake
    /// datapath stands in for any kernel.
    #[cfg(test)]
    pub fn every_feature() -> Self {
        let names = [
            "cgroup_skb",
            "bpf_link_cgroup",
            "ktime_get_boot_ns",
            "fq_qdisc",
            "tcx",
        ];
        Self {
            kernel_release: "test".into(),
            features: names
                .into_iter()
                .map(|name| feature(name, true, "assumed by the test"))
                .collect(),
        }
    }

    /// Adds a feature known only after loading (e.g. whether programs
    /// loaded), keeping the list sorted.
    pub fn add(&mut self, feature: Feature) {
        self.features.retain(|f| f.name != feature.name);
        self.features.push(feature);
        self.features.sort_by_key(|f| f.name);
    }
}

/// Why this node cannot serve a fault: the features it lacks, named as
/// GetCapabilities names them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

/// Kernel features each fault kind needs, with what they are for. Which
/// mechanism serves a syscall fault is `SysBackends::pick`'s decision.
fn required_features(kind: &FaultKind) -> &'static [(&'static str, &'static str)] {
    const LINKS: (&str, &str) = (
        "bpf_link_cgroup",
        "cgroup bpf links (kernel >= 5.7), so faults die with the agent",
    );
    const DEADLINES: (&str, &str) = (
        "ktime_get_boot_ns",
        "bpf_ktime_get_boot_ns (kernel >= 5.8) for kernel-side deadlines",
    );
    match kind {
        FaultKind::Loss(_) => &[("cgroup_skb", "cgroup_skb programs"), LINKS, DEADLINES],
        FaultKind::Latency(_) | FaultKind::Bandwidth(_) => &[
            ("cgroup_skb", "cgroup_skb programs"),
            (
                "fq_qdisc",
                "the sch_fq qdisc (CONFIG_NET_SCH_FQ), which holds packets until the departure \
                 time faultd stamps on them",
            ),
            LINKS,
            DEADLINES,
        ],
        FaultKind::Syscall(_) => &[LINKS, DEADLINES],
    }
}

fn feature(name: &'static str, available: bool, detail: impl Into<String>) -> Feature {
    Feature {
        name,
        available,
        detail: detail.into(),
    }
}

/// Runs every probe. Probes load tiny programs or read kernel files; none
/// attaches anything. What is decided by loading faultd's own programs
/// (bpf_lsm, lsm_cgroup, kprobe_override, cgroup_sock_hooks, path_filter) the
/// agent adds after loading them.
pub fn probe() -> Capabilities {
    let kernel_release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let version = KernelVersion::current().ok();
    let at_least = |major, minor| version.is_some_and(|v| v >= KernelVersion::new(major, minor, 0));
    let version_text = version.map_or("unknown".to_owned(), |v| v.to_string());

    let prog = |name: &'static str, ty: ProgramType| match is_program_supported(ty) {
        Ok(true) => feature(name, true, "BPF_PROG_LOAD of a minimal program succeeded"),
        Ok(false) => feature(name, false, "BPF_PROG_LOAD rejected the program type"),
        Err(e) => feature(name, false, format!("probe failed: {e}")),
    };
    let helper =
        |name: &'static str, ty: ProgramType, h: BpfHelper, why: &str| match is_helper_supported(
            ty, h,
        ) {
            Ok(true) => feature(name, true, format!("verifier accepts the helper ({why})")),
            Ok(false) => feature(name, false, format!("verifier rejects the helper ({why})")),
            Err(e) => feature(name, false, format!("probe failed: {e}")),
        };

    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();

    let mut features = vec![
        prog("cgroup_skb", ProgramType::CgroupSkb),
        feature(
            "bpf_link_cgroup",
            at_least(5, 7),
            format!(
                "cgroup bpf_link needs kernel >= 5.7 (running {version_text}); without it \
                 attachments would outlive the agent, so faultd refuses to attach"
            ),
        ),
        helper(
            "ktime_get_boot_ns",
            ProgramType::CgroupSkb,
            BpfHelper::BPF_FUNC_ktime_get_boot_ns,
            "kernel-side deadlines, 5.8+",
        ),
        helper(
            "skb_ancestor_cgroup_id",
            ProgramType::CgroupSkb,
            BpfHelper::BPF_FUNC_skb_ancestor_cgroup_id,
            "faults on cgroups created after the fault, 4.19+",
        ),
        feature(
            "tcx",
            at_least(6, 6),
            format!(
                "TCX link-based tc attachment needs kernel >= 6.6 (running {version_text}); \
                 ingress latency attaches its tc ingress program with it"
            ),
        ),
        feature(
            "btf",
            btf,
            if btf {
                "/sys/kernel/btf/vmlinux present"
            } else {
                "no /sys/kernel/btf/vmlinux"
            },
        ),
        helper(
            "bpf_set_retval",
            ProgramType::CgroupSockAddr,
            BpfHelper::BPF_FUNC_set_retval,
            "custom errno from cgroup hooks, 5.18+",
        ),
        fq_qdisc(),
    ];
    features.sort_by_key(|f| f.name);
    Capabilities {
        kernel_release,
        features,
    }
}

/// fq is what EDT pacing needs. Probed by creating one over netlink in a
/// private network namespace (see `qdisc::probe_fq`), so no device of the
/// node is touched.
fn fq_qdisc() -> Feature {
    match crate::qdisc::probe_fq() {
        Ok(()) => feature(
            "fq_qdisc",
            true,
            "created an fq qdisc (sch_fq) in a private netns over rtnetlink",
        ),
        Err(e) => feature("fq_qdisc", false, e),
    }
}
