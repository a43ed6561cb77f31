//! Target resolution on a cgroup tree laid out as kubelet, containerd and
//! systemd lay it out (in a temporary directory): cgroup paths, systemd
//! units, pods and containers, and pids whose /proc/<pid>/cgroup holds the
//! input; then the cgroup2 line of a mountinfo file. Whatever resolves must
//! lie inside the tree.
#![no_main]

use faultd_agent::target::{CgroupFs, TargetSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let tree = faultd_fuzz::tree();
    let text = String::from_utf8_lossy(rest).into_owned();
    let spec = match which % 6 {
        0 => TargetSpec::CgroupPath(text),
        1 => TargetSpec::SystemdUnit(text),
        2 => {
            let (uid, container) = text.split_once('\n').unwrap_or((&text, ""));
            TargetSpec::Pod {
                uid: uid.to_owned(),
                container_id: (!container.is_empty()).then(|| container.to_owned()),
            }
        }
        3 => TargetSpec::Pid(tree.write_proc_cgroup(rest)),
        4 => {
            let _ = CgroupFs::parse_mountinfo(&text);
            return;
        }
        _ => {
            let _ = tree.fs.list(&faultd_fuzz::pattern(&text), "");
            return;
        }
    };
    if let Ok(cgroup) = tree.fs.resolve(&spec) {
        let path = tree.fs.mount().join(&cgroup.path);
        assert!(
            path.canonicalize()
                .is_ok_and(|p| p.starts_with(tree.fs.mount())),
            "{spec} resolved outside the tree: {}",
            path.display()
        );
    }
});
