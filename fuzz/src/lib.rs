//! What the fuzz targets share: the cgroup tree target resolution runs on,
//! the policy experiments are checked against, and the seeds of their
//! corpora (written by examples/seed.rs, which `cargo xtask fuzz` runs: an
//! example, so that cargo-fuzz, which builds every binary of this crate
//! with its instrumentation, leaves it alone).

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use faultd_agent::target::{CgroupFs, TargetPattern};

/// A policy with every limit set, as an operator's would be.
pub const POLICY: &str = r#"
[limits]
max_nodes = 10
max_node_fraction = 0.5
max_target_fraction = 1.0
max_concurrent_experiments = 5
max_duration = "1h"
max_loss_percent = 100.0
max_delay = "10s"
min_bandwidth_bps = 8000
max_syscall_failure_percent = 100.0

[protected]
nodes = ["db-1"]
units = ["sshd.service"]
cgroups = ["system.slice/kubelet.service"]
namespaces = ["kube-system"]
"#;

/// A pod uid and container id the tree holds.
pub const POD_UID: &str = "3f2a6c1e-7d4b-4c1a-9e2f-0a1b2c3d4e5f";
pub const CONTAINER_ID: &str = "4b8c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f80";
/// The pid whose /proc/<pid>/cgroup holds the input.
pub const PID: u32 = 4242;

/// A cgroup tree laid out as systemd, kubelet (systemd driver) and
/// containerd lay it out, with a symlink out of the tree, and a procfs
/// beside it.
#[derive(Debug)]
pub struct Tree {
    _dir: tempfile::TempDir,
    proc: PathBuf,
    pub fs: CgroupFs,
}

impl Tree {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let mount = dir.path().join("cgroup");
        let proc = dir.path().join("proc");
        let pod = POD_UID.replace('-', "_");
        for path in [
            "system.slice/nginx.service".to_owned(),
            "system.slice/sshd.service".to_owned(),
            "user.slice/user-1000.slice/user@1000.service/app.slice".to_owned(),
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod}.slice/cri-containerd-{CONTAINER_ID}.scope"
            ),
            format!("kubepods.slice/kubepods-pod{pod}.slice/crio-{CONTAINER_ID}.scope"),
        ] {
            // Every directory on the way is a cgroup: it has cgroup.procs.
            let mut dir = mount.clone();
            std::fs::create_dir_all(&dir).expect("tree");
            std::fs::write(dir.join("cgroup.procs"), "").expect("tree");
            for component in path.split('/') {
                dir.push(component);
                std::fs::create_dir_all(&dir).expect("tree");
                std::fs::write(dir.join("cgroup.procs"), "").expect("tree");
            }
        }
        std::fs::create_dir_all(proc.join(PID.to_string())).expect("proc");
        std::os::unix::fs::symlink("/etc", mount.join("system.slice/escape")).expect("symlink");
        std::os::unix::fs::symlink(
            "../system.slice/sshd.service",
            mount.join("user.slice/sshd"),
        )
        .expect("symlink");
        let mount = mount.canonicalize().expect("mount");
        Self {
            fs: CgroupFs::new(mount, proc.clone()),
            proc,
            _dir: dir,
        }
    }

    /// Writes `text` as /proc/<PID>/cgroup and returns PID.
    pub fn write_proc_cgroup(&self, text: &[u8]) -> u32 {
        std::fs::write(self.proc.join(PID.to_string()).join("cgroup"), text).expect("proc");
        PID
    }

    pub fn mount(&self) -> &Path {
        self.fs.mount()
    }
}

/// The tree, made once per fuzzing process.
pub fn tree() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(Tree::new)
}

/// A target pattern from text: "unit:GLOB", "pod:UID" or a cgroup glob.
pub fn pattern(text: &str) -> TargetPattern {
    if let Some(glob) = text.strip_prefix("unit:") {
        TargetPattern::UnitGlob(glob.to_owned())
    } else if let Some(uid) = text.strip_prefix("pod:") {
        TargetPattern::PodUid(uid.to_owned())
    } else {
        TargetPattern::CgroupGlob(text.to_owned())
    }
}
