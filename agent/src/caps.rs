//! What the running kernel offers, probed once at start and reported by
//! GetCapabilities. Each probe says how it decided, so an operator can tell a
//! missing feature from a failed probe.

use std::path::Path;

use aya::{
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_program_supported},
    util::KernelVersion,
};

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

    /// Adds a feature known only after loading (e.g. whether programs
    /// loaded), keeping the list sorted.
    pub fn add(&mut self, feature: Feature) {
        self.features.retain(|f| f.name != feature.name);
        self.features.push(feature);
        self.features.sort_by_key(|f| f.name);
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
