#![expect(clippy::unwrap_used, reason = "tests fail loudly on setup errors")]

use super::*;
use tempfile::TempDir;

const UID: &str = "8d9f7c2e-4b1a-4e6f-9c3d-2a7b5e1f0c94";
const OTHER_UID: &str = "1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b";
const CID: &str = "3b1f0e2a9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";
const OTHER_CID: &str = "f00dbabe11112222333344445555666677778888999900001111222233334444";

/// A fake node: `<tmp>/cgroup` is the cgroup2 mount, `<tmp>/proc` the procfs.
struct Node {
    dir: TempDir,
}

impl Node {
    fn new() -> Self {
        let node = Self {
            dir: TempDir::new().unwrap(),
        };
        node.cg("");
        node
    }

    /// A node with the usual systemd noise around whatever the test adds.
    fn with_noise() -> Self {
        let node = Self::new();
        for path in [
            "init.scope",
            "system.slice/sshd.service",
            "system.slice/containerd.service",
            "system.slice/kubelet.service",
            "system.slice/systemd-journald.service",
            "user.slice/user-1000.slice/user@1000.service/app.slice",
            "user.slice/user-1000.slice/session-3.scope",
        ] {
            node.cg(path);
        }
        node
    }

    fn mount(&self) -> PathBuf {
        self.dir.path().join("cgroup")
    }

    fn fs(&self) -> CgroupFs {
        CgroupFs::new(self.mount(), self.dir.path().join("proc"))
    }

    /// Creates a cgroup (and its ancestors) with the cgroup.procs file.
    fn cg(&self, path: &str) {
        let mut dir = self.mount();
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("cgroup.procs"), "").unwrap();
        for component in path.split('/').filter(|c| !c.is_empty()) {
            dir.push(component);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("cgroup.procs"), "").unwrap();
        }
    }

    fn proc_cgroup(&self, entry: &str, text: &str) {
        let dir = self.dir.path().join("proc").join(entry);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("cgroup"), text).unwrap();
    }

    fn ino(&self, path: &str) -> u64 {
        fs::metadata(self.mount().join(path)).unwrap().ino()
    }
}

fn pod(uid: &str, container_id: Option<&str>) -> TargetSpec {
    TargetSpec::Pod {
        uid: uid.to_owned(),
        container_id: container_id.map(str::to_owned),
    }
}

fn unit(name: &str) -> TargetSpec {
    TargetSpec::SystemdUnit(name.to_owned())
}

#[track_caller]
fn assert_invalid(result: Result<ResolvedCgroup, TargetError>, expected_field: &str) -> String {
    match result {
        Err(e @ TargetError::InvalidTarget { field, .. }) => {
            assert_eq!(field, expected_field);
            e.to_string()
        }
        other => panic!("expected InvalidTarget({expected_field}), got {other:?}"),
    }
}

#[track_caller]
fn assert_not_found(result: Result<ResolvedCgroup, TargetError>) -> String {
    match result {
        Err(e @ TargetError::NotFound { .. }) => e.to_string(),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[track_caller]
fn assert_ambiguous(result: Result<ResolvedCgroup, TargetError>, expected: &[&str]) {
    match result {
        Err(TargetError::Ambiguous { candidates, .. }) => {
            let mut expected = expected.to_vec();
            expected.sort_unstable();
            assert_eq!(candidates, expected);
        }
        other => panic!("expected Ambiguous, got {other:?}"),
    }
}

const HYBRID_MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
34 31 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
";

const PURE_V2_MOUNTINFO: &str = "\
24 29 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
29 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

#[test]
fn mountinfo_hybrid_and_pure_v2() {
    assert_eq!(
        CgroupFs::parse_mountinfo(HYBRID_MOUNTINFO),
        Some(PathBuf::from("/sys/fs/cgroup/unified"))
    );
    assert_eq!(
        CgroupFs::parse_mountinfo(PURE_V2_MOUNTINFO),
        Some(PathBuf::from("/sys/fs/cgroup"))
    );
}

#[test]
fn mountinfo_without_cgroup2_or_with_escapes() {
    let v1_only: String = HYBRID_MOUNTINFO
        .lines()
        .filter(|l| !l.contains("cgroup2"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(CgroupFs::parse_mountinfo(&v1_only), None);
    assert_eq!(CgroupFs::parse_mountinfo(""), None);
    // The optional fields before " - " vary in number; a cgroup2 source name
    // elsewhere on the line must not count.
    let escaped = "40 22 0:40 / /run/my\\040cgroup\\134x rw shared:3 master:2 - cgroup2 none rw\n";
    assert_eq!(
        CgroupFs::parse_mountinfo(escaped),
        Some(PathBuf::from("/run/my cgroup\\x"))
    );
    let source_only = "40 22 0:40 / /mnt rw - tmpfs cgroup2 rw\n";
    assert_eq!(CgroupFs::parse_mountinfo(source_only), None);
}

#[test]
fn resolves_paths_with_id_and_level() {
    let node = Node::with_noise();
    let fs = node.fs();
    let got = fs.resolve_path("system.slice/sshd.service").unwrap();
    let want = ResolvedCgroup {
        path: "system.slice/sshd.service".to_owned(),
        id: node.ino("system.slice/sshd.service"),
        level: 2,
    };
    assert_eq!(got, want);
    assert_eq!(fs.resolve_path("/system.slice/sshd.service").unwrap(), want);
    let spec = TargetSpec::CgroupPath("/system.slice/sshd.service".to_owned());
    assert_eq!(fs.resolve(&spec).unwrap(), want);
    let root = ResolvedCgroup {
        path: String::new(),
        id: node.ino(""),
        level: 0,
    };
    assert_eq!(fs.resolve_path("").unwrap(), root);
    assert_eq!(fs.resolve_path("/").unwrap(), root);
}

#[test]
fn rejects_malformed_paths() {
    let node = Node::with_noise();
    let fs = node.fs();
    let long = "a/".repeat(2049);
    for bad in [
        "a//b",
        "system.slice/",
        "//",
        "./a",
        "a/./b",
        "../etc",
        "a/../../x",
        "..",
        "a\0b",
        &long,
    ] {
        assert_invalid(fs.resolve_path(bad), "spec.target.cgroup_path");
    }
}

#[test]
fn rejects_symlinks_leaving_the_mount() {
    let node = Node::with_noise();
    let outside = node.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("cgroup.procs"), "").unwrap();
    std::os::unix::fs::symlink(&outside, node.mount().join("system.slice/escape")).unwrap();
    let message = assert_invalid(
        node.fs().resolve_path("system.slice/escape"),
        "spec.target.cgroup_path",
    );
    assert!(message.contains("outside the cgroup2 mount"), "{message}");
    // The searches do not follow it either.
    fs::create_dir(outside.join("evil.service")).unwrap();
    assert_not_found(node.fs().resolve(&unit("evil.service")));
}

/// A symlink inside the tree that names a protected cgroup resolves to that
/// cgroup's own path and id, never to the link's name: the protection
/// check, which compares resolved paths, sees the cgroup it protects.
#[test]
fn symlinks_inside_the_mount_resolve_to_what_they_name() {
    let node = Node::with_noise();
    node.cg("app.slice");
    std::os::unix::fs::symlink(
        "../system.slice/kubelet.service",
        node.mount().join("app.slice/innocent"),
    )
    .unwrap();
    let resolved = node.fs().resolve_path("app.slice/innocent").unwrap();
    assert_eq!(resolved.path, "system.slice/kubelet.service");
    assert_eq!(resolved.id, node.ino("system.slice/kubelet.service"));
}

#[test]
fn missing_and_non_cgroup_directories_are_not_found() {
    let node = Node::with_noise();
    let fs = node.fs();
    assert!(
        assert_not_found(fs.resolve_path("system.slice/nope.service")).contains("does not exist")
    );
    fs::create_dir(node.mount().join("system.slice/plain")).unwrap();
    assert!(assert_not_found(fs.resolve_path("system.slice/plain")).contains("not a cgroup"));
    assert!(
        assert_not_found(fs.resolve_path("system.slice/sshd.service/cgroup.procs"))
            .contains("not a cgroup")
    );
    // A mount that is not a cgroup filesystem at all.
    let plain = TempDir::new().unwrap();
    let not_mounted = CgroupFs::new(plain.path().to_path_buf(), PathBuf::from("/proc"));
    assert_not_found(not_mounted.resolve_path(""));
}

#[test]
fn ancestor_checks_compare_whole_components() {
    let at = |path: &str| ResolvedCgroup {
        path: path.to_owned(),
        id: 1,
        level: 0,
    };
    assert!(at("a/b").is_ancestor_or_self_of("a/b"));
    assert!(at("a/b").is_ancestor_or_self_of("a/b/c"));
    assert!(at("a/b").is_ancestor_or_self_of("/a/b/c/"));
    assert!(!at("a/b").is_ancestor_or_self_of("a/bc"));
    assert!(!at("a/b").is_ancestor_or_self_of("a"));
    assert!(!at("a/b").is_ancestor_or_self_of(""));
    assert!(!at("a/b").is_ancestor_or_self_of("x/a/b"));
    assert!(at("").is_ancestor_or_self_of(""));
    assert!(at("").is_ancestor_or_self_of("a/b"));
}

#[test]
fn display_forms() {
    assert_eq!(
        TargetSpec::CgroupPath("/system.slice/x".to_owned()).to_string(),
        "cgroup:system.slice/x"
    );
    assert_eq!(TargetSpec::Pid(123).to_string(), "pid:123");
    assert_eq!(unit("nginx.service").to_string(), "unit:nginx.service");
    assert_eq!(pod(UID, None).to_string(), format!("pod:{UID}"));
    assert_eq!(pod(UID, Some("abc")).to_string(), format!("pod:{UID}/abc"));
}

#[test]
fn pid_resolution_reads_the_v2_line() {
    let node = Node::with_noise();
    node.proc_cgroup("123", "0::/system.slice/sshd.service\n");
    node.proc_cgroup(
        "456",
        "12:memory:/system.slice/kubelet.service\n5:cpu,cpuacct:/system.slice/kubelet.service\n\
         1:name=systemd:/system.slice/kubelet.service\n0::/system.slice/kubelet.service\n",
    );
    node.proc_cgroup("1", "0::/\n");
    node.proc_cgroup("self", "0::/init.scope\n");
    let fs = node.fs();
    let sshd = fs.resolve(&TargetSpec::Pid(123)).unwrap();
    assert_eq!(
        (sshd.path.as_str(), sshd.id),
        (
            "system.slice/sshd.service",
            node.ino("system.slice/sshd.service")
        )
    );
    assert_eq!(
        fs.cgroup_of_pid(456).unwrap().path,
        "system.slice/kubelet.service"
    );
    assert_eq!(
        fs.cgroup_of_pid(1).unwrap(),
        ResolvedCgroup {
            path: String::new(),
            id: node.ino(""),
            level: 0
        }
    );
    assert_eq!(fs.self_cgroup().unwrap().path, "init.scope");
}

#[test]
fn pid_errors() {
    let node = Node::with_noise();
    node.proc_cgroup(
        "77",
        "4:memory:/x\n1:name=systemd:/system.slice/sshd.service\n",
    );
    node.proc_cgroup("78", "0::/system.slice/gone.service (deleted)\n");
    node.proc_cgroup("79", "0::/system.slice/gone.service\n");
    let fs = node.fs();
    assert_invalid(fs.cgroup_of_pid(0), "spec.target.pid");
    assert!(assert_not_found(fs.cgroup_of_pid(999)).contains("no such process"));
    assert!(assert_not_found(fs.cgroup_of_pid(77)).contains("no cgroup v2 entry"));
    assert!(assert_not_found(fs.cgroup_of_pid(78)).contains("removed"));
    assert!(assert_not_found(fs.cgroup_of_pid(79)).contains("does not exist"));
}

#[test]
fn units_are_found_anywhere_in_the_tree() {
    let node = Node::with_noise();
    node.cg("app.slice/app-web.slice/web@1.service");
    let fs = node.fs();
    for (name, path) in [
        ("sshd.service", "system.slice/sshd.service"),
        (
            "user@1000.service",
            "user.slice/user-1000.slice/user@1000.service",
        ),
        (
            "session-3.scope",
            "user.slice/user-1000.slice/session-3.scope",
        ),
        ("app-web.slice", "app.slice/app-web.slice"),
        ("web@1.service", "app.slice/app-web.slice/web@1.service"),
        ("system.slice", "system.slice"),
    ] {
        let got = fs.resolve(&unit(name)).unwrap();
        assert_eq!(
            (got.path.as_str(), got.id),
            (path, node.ino(path)),
            "{name}"
        );
    }
}

#[test]
fn unit_not_found_ambiguous_and_too_deep() {
    let node = Node::with_noise();
    // A kind node's systemd, seen from the host, runs its own containerd.service.
    node.cg("system.slice/docker-0123.scope/system.slice/containerd.service");
    node.cg("a/b/c/d/e/f/g/h/deep.service");
    let fs = node.fs();
    assert_ambiguous(
        fs.resolve(&unit("containerd.service")),
        &[
            "system.slice/containerd.service",
            "system.slice/docker-0123.scope/system.slice/containerd.service",
        ],
    );
    let message = assert_not_found(fs.resolve(&unit("nginx.service")));
    assert!(message.contains("unit:nginx.service"), "{message}");
    assert_not_found(fs.resolve(&unit("deep.service")));
    node.cg("a/b/c/d/e/f/g/ok.service");
    assert_eq!(fs.resolve(&unit("ok.service")).unwrap().level, 8);
}

#[test]
fn rejects_invalid_unit_names() {
    let node = Node::new();
    let fs = node.fs();
    let long = format!("{}.service", "a".repeat(250));
    for bad in [
        "nginx",
        "nginx.timer",
        ".service",
        "",
        "a/b.service",
        "../x.service",
        "a b.service",
        "x\0.slice",
        &long,
    ] {
        assert_invalid(fs.resolve(&unit(bad)), "spec.target.systemd_unit");
    }
    for good in [
        "a-b.slice",
        "dev-disk-by\\x2duuid.swap",
        "x:y_z.mount",
        "sshd.socket",
    ] {
        assert_not_found(fs.resolve(&unit(good)));
    }
}

/// Container cgroups of real nodes, "<pod dir>/<container dir>", where `{_}` is
/// the uid with underscores, `{-}` with dashes and `{}` the container id.
const POD_LAYOUTS: [&str; 10] = [
    // systemd driver: containerd, CRI-O, docker / cri-dockerd.
    "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{_}.slice/cri-containerd-{}.scope",
    "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{_}.slice/crio-{}.scope",
    "kubepods.slice/kubepods-pod{_}.slice/docker-{}.scope",
    "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{_}.slice/crio-{}.scope",
    // kind: inside the node container, and the same pod seen from the host.
    "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{_}.slice/cri-containerd-{}.scope",
    "system.slice/docker-0123.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{_}.slice/cri-containerd-{}.scope",
    // cgroupfs driver: containerd uses the bare id, CRI-O a crio- prefix.
    "kubepods/burstable/pod{-}/{}",
    "kubepods/besteffort/pod{-}/crio-{}",
    "kubepods/pod{-}/{}",
    "kubepods/pod{-}/crio-{}",
];

fn layout_path(template: &str, uid: &str) -> String {
    template
        .replace("{_}", &uid.replace('-', "_"))
        .replace("{-}", uid)
}

/// Builds a node with noise, a sibling pod, and the target pod holding CID
/// (plus OTHER_CID and, for CRI-O, the conmon cgroups). Returns the node, the
/// pod dir and the container dir template.
fn pod_node(layout: &str) -> (Node, String, &str) {
    let (pod_template, container_template) = layout.rsplit_once('/').unwrap();
    let node = Node::with_noise();
    let pod_dir = layout_path(pod_template, UID);
    let sibling = layout_path(pod_template, OTHER_UID);
    for (dir, id) in [
        (&pod_dir, CID),
        (&pod_dir, OTHER_CID),
        (&sibling, &CID.replace('3', "4")),
    ] {
        node.cg(&format!("{dir}/{}", container_template.replace("{}", id)));
        if container_template.starts_with("crio-") {
            node.cg(&format!(
                "{dir}/{}",
                container_template
                    .replace("{}", id)
                    .replace("crio-", "crio-conmon-")
            ));
        }
    }
    (node, pod_dir, container_template)
}

#[test]
fn pods_and_containers_in_every_layout() {
    for what in POD_LAYOUTS {
        let (node, pod_dir, container_template) = pod_node(what);
        let fs = node.fs();
        let got = fs.resolve(&pod(UID, None)).unwrap();
        assert_eq!(
            (got.path.as_str(), got.id),
            (pod_dir.as_str(), node.ino(&pod_dir)),
            "{what}"
        );
        assert_eq!(
            fs.resolve(&pod(&UID.replace('-', "_"), None)).unwrap().path,
            pod_dir,
            "{what}"
        );
        assert_eq!(
            fs.resolve(&pod(&UID.to_uppercase(), None)).unwrap().path,
            pod_dir,
            "{what}"
        );
        let container = format!("{pod_dir}/{}", container_template.replace("{}", CID));
        for id in [
            CID.to_owned(),
            CID[..12].to_owned(),
            format!("containerd://{CID}"),
            format!("cri-o://{}", &CID[..20]),
            format!("docker://{}", CID.to_uppercase()),
        ] {
            let got = fs.resolve(&pod(UID, Some(&id))).unwrap();
            assert_eq!(
                (got.path.as_str(), got.id),
                (container.as_str(), node.ino(&container)),
                "{what} {id}"
            );
        }
        let message = assert_not_found(fs.resolve(&pod(UID, Some("abcdefabcdef"))));
        assert!(message.contains("no container cgroup"), "{what}: {message}");
    }
}

#[test]
fn static_pod_uids_have_32_hex_digits() {
    let uid = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
    for template in [
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{_}.slice",
        "kubepods/burstable/pod{-}",
    ] {
        let node = Node::with_noise();
        let dir = layout_path(template, uid);
        node.cg(&dir);
        assert_eq!(node.fs().resolve(&pod(uid, None)).unwrap().path, dir);
    }
}

#[test]
fn pod_not_found_and_ambiguous() {
    let (node, pod_dir, _) = pod_node(POD_LAYOUTS[0]);
    let fs = node.fs();
    let missing = "00000000-0000-0000-0000-000000000000";
    let message = assert_not_found(fs.resolve(&pod(missing, None)));
    assert!(
        message.contains(missing) && message.contains(&node.mount().display().to_string()),
        "{message}"
    );
    // A container id prefix shared by two containers of the pod.
    let twin = format!("{}{}", &CID[..16], "0".repeat(48));
    node.cg(&format!("{pod_dir}/cri-containerd-{twin}.scope"));
    assert_ambiguous(
        fs.resolve(&pod(UID, Some("containerd://3b1f0e2a9c8d"))),
        &[
            format!("{pod_dir}/cri-containerd-{CID}.scope").as_str(),
            format!("{pod_dir}/cri-containerd-{twin}.scope").as_str(),
        ],
    );
    assert_eq!(
        fs.resolve(&pod(UID, Some(CID))).unwrap().path,
        format!("{pod_dir}/cri-containerd-{CID}.scope")
    );
    // The same uid under both drivers (a node that switched drivers).
    let stale = layout_path("kubepods/burstable/pod{-}", UID);
    node.cg(&stale);
    assert_ambiguous(
        fs.resolve(&pod(UID, None)),
        &[pod_dir.as_str(), stale.as_str()],
    );
}

#[test]
fn rejects_invalid_pod_uids_and_container_ids() {
    let (node, pod_dir, _) = pod_node(POD_LAYOUTS[1]);
    let fs = node.fs();
    let bad_uids = [
        "",
        "pod",
        "8d9f7c2e4b1a4e6f9c3d2a7b5e1f0c94aa",
        "8d9f7c2e-4b1a-4e6f-9c3d-2a7b5e1f0c9g",
        "8d9f7c2e-4b1a-4e6f-9c3d2a7b5e1f0c94-",
        "../../../../etc/passwd/aaaaaaaaaaaaa",
    ];
    for bad in bad_uids {
        assert_invalid(fs.resolve(&pod(bad, None)), "spec.target.pod.uid");
    }
    for bad in [
        "",
        "3b1f0e2a9c8",
        "containerd://",
        "3b1f0e2a9c8d-",
        "zz1f0e2a9c8d7e6f",
        &"a".repeat(65),
        "../3b1f0e2a9c8d",
    ] {
        assert_invalid(
            fs.resolve(&pod(UID, Some(bad))),
            "spec.target.pod.container_id",
        );
    }
    // The conmon cgroup carries the container's id but is not the container.
    let conmon_only = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";
    node.cg(&format!("{pod_dir}/crio-conmon-{conmon_only}.scope"));
    assert_not_found(fs.resolve(&pod(UID, Some(conmon_only))));
}

/// The only test that touches the real machine: it needs no root, only a
/// readable /proc and cgroup2 mount.
#[test]
fn resolves_own_cgroup_on_this_machine() {
    let fs = match CgroupFs::detect() {
        Ok(fs) => fs,
        Err(e @ TargetError::NoCgroup2 { .. }) => {
            eprintln!("skipping: {e}");
            return;
        }
        Err(e) => panic!("detect failed: {e}"),
    };
    let own = fs
        .self_cgroup()
        .unwrap_or_else(|e| panic!("self_cgroup under {}: {e}", fs.mount().display()));
    let dir = fs.mount().join(&own.path);
    assert_eq!(own.id, fs::metadata(&dir).unwrap().ino());
    assert!(own.is_ancestor_or_self_of(&own.path));
    assert_eq!(
        fs.resolve(&TargetSpec::Pid(std::process::id())).unwrap(),
        own
    );
}

#[test]
fn patterns_list_what_they_match() {
    let node = Node::with_noise();
    for path in [
        "lab/node-1/app",
        "lab/node-1/db",
        "lab/node-2/app",
        "lab/node-2/app/inner",
        "system.slice/checkout-1.service",
        "system.slice/checkout-2.service",
        "other.slice/checkout-2.service",
    ] {
        node.cg(path);
    }
    let fs = node.fs();
    let paths = |p: TargetPattern| -> Vec<String> {
        fs.list(&p, "")
            .unwrap()
            .into_iter()
            .map(|(_, c)| c.path)
            .collect()
    };
    assert_eq!(
        paths(TargetPattern::CgroupGlob("lab/*/app".into())),
        ["lab/node-1/app", "lab/node-2/app"]
    );
    assert_eq!(
        paths(TargetPattern::CgroupGlob("lab/**/app".into())),
        ["lab/node-1/app", "lab/node-2/app"]
    );
    assert_eq!(
        paths(TargetPattern::CgroupGlob("lab/node-2/app".into())),
        ["lab/node-2/app"]
    );
    assert!(paths(TargetPattern::CgroupGlob("absent/*".into())).is_empty());
    let units = fs
        .list(&TargetPattern::UnitGlob("checkout-*.service".into()), "")
        .unwrap();
    let targets: Vec<String> = units.iter().map(|(t, _)| t.to_string()).collect();
    // checkout-2 exists twice: listed by path, a unit target would be
    // ambiguous.
    assert_eq!(
        targets,
        [
            "cgroup:other.slice/checkout-2.service",
            "unit:checkout-1.service",
            "cgroup:system.slice/checkout-2.service"
        ]
    );
    // Within a scope: only what lies at or below it, the scope included
    // when it matches itself; a disjoint scope finds nothing.
    let scoped = |p: TargetPattern, scope: &str| -> Vec<String> {
        let found = fs.list(&p, scope).unwrap();
        found.into_iter().map(|(t, _)| t.to_string()).collect()
    };
    let glob = |g: &str| TargetPattern::CgroupGlob(g.into());
    assert_eq!(
        scoped(glob("lab/*/app"), "lab/node-2"),
        ["cgroup:lab/node-2/app"]
    );
    assert_eq!(
        scoped(glob("lab/*/app"), "lab/node-2/app"),
        ["cgroup:lab/node-2/app"]
    );
    assert_eq!(
        scoped(glob("lab/**"), "lab/node-2"),
        [
            "cgroup:lab/node-2",
            "cgroup:lab/node-2/app",
            "cgroup:lab/node-2/app/inner"
        ]
    );
    assert_eq!(
        scoped(glob("lab/node-1/*"), "lab"),
        ["cgroup:lab/node-1/app", "cgroup:lab/node-1/db"]
    );
    assert!(scoped(glob("lab/node-1/*"), "system.slice").is_empty());
    assert!(scoped(glob("lab/*/app"), "lab/node-9").is_empty());
    assert!(scoped(glob("other.slice/*"), "lab").is_empty());
    // In a scope a unit is listed by path: a unit target resolves against
    // the whole tree, where the name may occur again.
    assert_eq!(
        scoped(
            TargetPattern::UnitGlob("checkout-*.service".into()),
            "system.slice"
        ),
        [
            "cgroup:system.slice/checkout-1.service",
            "cgroup:system.slice/checkout-2.service"
        ]
    );
    assert_invalid(
        fs.list(&TargetPattern::CgroupGlob("../x".into()), "")
            .map(|_| ResolvedCgroup {
                path: String::new(),
                id: 0,
                level: 0,
            }),
        "spec.targets.cgroup_glob",
    );
}
