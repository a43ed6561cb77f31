//! GetCapabilities tells the truth about the kernel it runs on. Root only.
//!
//! Every feature the agent reports is checked against an observation made
//! without the agent's code: bpftool's own probes (libbpf, not aya), the
//! kernel's LSM list, a real `tc qdisc add ... fq` in a scratch network
//! namespace, and the kernel version where a feature is tied to one. The
//! VM tier also passes `FAULTD_EXPECT_FEATURES` (`name=0|1,...`): what we
//! know each pinned kernel offers, so a probe and its oracle that are wrong
//! in the same way still fail.

use std::{collections::BTreeMap, path::Path, process::Command};

use faultd_proto::agent::v1::{self as pb, agent_client::AgentClient};
use faultd_tests::{
    AgentGuard, AgentOptions,
    bpf::{bpftool_available, bpftool_json},
    cgroup::skip,
    cgroup2_mount, require_root,
};
use tonic::transport::Channel;

async fn capabilities() -> (AgentGuard, pb::Capabilities) {
    let mut agent = AgentGuard::start(AgentOptions::default());
    agent.wait_ready();
    let mut client: AgentClient<Channel> = agent.client().await;
    let caps = client
        .get_capabilities(pb::GetCapabilitiesRequest {})
        .await
        .expect("GetCapabilities")
        .into_inner();
    for f in &caps.features {
        println!(
            "agent: {:<24} {:<5} {}",
            f.name,
            if f.available { "yes" } else { "no" },
            f.detail
        );
    }
    (agent, caps)
}

fn uname_release() -> String {
    nix::sys::utsname::uname()
        .expect("uname")
        .release()
        .to_string_lossy()
        .into_owned()
}

/// (major, minor, patch) from a release like `6.12.117+deb12-cloud-amd64`.
fn parse_version(release: &str) -> (u32, u32, u32) {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let mut next = || numbers.next().unwrap_or(0);
    (next(), next(), next())
}

/// The active LSMs. securityfs is often not mounted where the agent runs
/// (this project's hosts), so read it from a private mount when needed.
fn active_lsms() -> String {
    if let Ok(list) = std::fs::read_to_string("/sys/kernel/security/lsm") {
        return list;
    }
    let out = Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            "mount -t securityfs securityfs /sys/kernel/security && cat /sys/kernel/security/lsm",
        ])
        .output()
        .expect("running unshare -m to mount securityfs privately");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `name`'s full path from PATH. busybox's `unshare` would run its own
/// `tc` applet, which knows no fq, for a bare `tc`.
fn which(name: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH"))
}

/// Whether `tc qdisc add dev lo root fq` works in a fresh network namespace.
fn fq_works() -> (bool, String) {
    let out = Command::new("unshare")
        .arg("-n")
        .arg(which("tc"))
        .args(["qdisc", "add", "dev", "lo", "root", "fq"])
        .output()
        .expect("running unshare -n tc");
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    (
        out.status.success(),
        format!(
            "unshare -n tc qdisc add dev lo root fq: {} {stderr}",
            out.status
        ),
    )
}

/// What the kernel offers, observed without the agent: feature -> (available,
/// how we know).
fn observe() -> BTreeMap<&'static str, (bool, String)> {
    let release = uname_release();
    let version = parse_version(&release);
    let at_least = |v: (u32, u32)| (version.0, version.1) >= v;
    let probe: serde_json::Value = bpftool_json(&["feature", "probe", "kernel"]);
    let prog_type = |t: &str| probe["program_types"][format!("have_{t}_prog_type")] == true;
    let helper = |t: &str, h: &str| {
        probe["helpers"][format!("{t}_available_helpers")]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == h))
    };
    let lsms = active_lsms();
    let lsm_listed = lsms.trim().split(',').any(|l| l == "bpf");
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    let lsm_loads = prog_type("lsm");
    let bpf_lsm = lsm_listed && btf && lsm_loads;
    let lsm_why = format!(
        "LSMs {:?}, BTF {btf}, bpftool lsm program type {lsm_loads}",
        lsms.trim()
    );
    let ver = format!("kernel {release}");

    let mut o = BTreeMap::new();
    o.insert(
        "cgroup_skb",
        (prog_type("cgroup_skb"), "bpftool feature probe".to_owned()),
    );
    o.insert(
        "bpf_link_cgroup",
        (at_least((5, 7)), format!("{ver} >= 5.7")),
    );
    o.insert(
        "ktime_get_boot_ns",
        (
            helper("cgroup_skb", "bpf_ktime_get_boot_ns"),
            "bpftool: cgroup_skb helpers".to_owned(),
        ),
    );
    o.insert(
        "skb_ancestor_cgroup_id",
        (
            helper("cgroup_skb", "bpf_skb_ancestor_cgroup_id"),
            "bpftool: cgroup_skb helpers".to_owned(),
        ),
    );
    o.insert("tcx", (at_least((6, 6)), format!("{ver} >= 6.6")));
    o.insert("btf", (btf, "/sys/kernel/btf/vmlinux".to_owned()));
    o.insert("bpf_lsm", (bpf_lsm, lsm_why.clone()));
    // Path-prefix filters: BPF LSM plus a BTF layout with the members the
    // walk reads (bpftool's own BTF dump, not the agent's parser).
    let dump = std::process::Command::new(faultd_tests::bpf::bpftool())
        .args([
            "btf",
            "dump",
            "file",
            "/sys/kernel/btf/vmlinux",
            "format",
            "raw",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let members = [
        "'f_path'",
        "'d_parent'",
        "'d_inode'",
        "'i_ino'",
        "'i_sb'",
        "'s_dev'",
    ];
    let layout = members.iter().all(|m| dump.contains(m));
    o.insert(
        "path_filter",
        (
            bpf_lsm && layout,
            format!("BPF LSM {bpf_lsm}, bpftool BTF dump has {members:?}: {layout}"),
        ),
    );
    // BPF_LSM_CGROUP attachment came in 6.0 (commit 69fd337a975c).
    o.insert(
        "lsm_cgroup",
        (
            bpf_lsm && at_least((6, 0)),
            format!("{lsm_why}, {ver} >= 6.0"),
        ),
    );
    o.insert(
        "bpf_set_retval",
        (
            helper("cgroup_sock_addr", "bpf_set_retval"),
            "bpftool: cgroup_sock_addr helpers".to_owned(),
        ),
    );
    // Syscall faults: connect/bind/sendmsg (sock_addr) and socket()
    // (cgroup_sock) programs that set a custom errno.
    o.insert(
        "cgroup_sock_hooks",
        (
            prog_type("cgroup_sock_addr")
                && prog_type("cgroup_sock")
                && helper("cgroup_sock_addr", "bpf_set_retval")
                && helper("cgroup_sock", "bpf_set_retval"),
            "bpftool: cgroup_sock_addr and cgroup_sock program types with bpf_set_retval"
                .to_owned(),
        ),
    );
    o.insert("fq_qdisc", fq_works());
    // Failing syscalls from a kprobe: the helper (CONFIG_BPF_KPROBE_OVERRIDE)
    // and a kprobe PMU to attach through (CONFIG_KPROBES). The helper is read
    // from the kernel's build config: bpftool's helper probe looks for
    // "unknown func" in the verifier log, which 6.x kernels changed to
    // "program of this type cannot use helper", so it reports the helper
    // present where it is not.
    let pmu = Path::new("/sys/bus/event_source/devices/kprobe/type").exists();
    let (config_source, config) = faultd_tests::bpf::kernel_config(&release);
    let override_config = config
        .lines()
        .any(|l| l.trim() == "CONFIG_BPF_KPROBE_OVERRIDE=y");
    o.insert(
        "kprobe_override",
        (
            pmu && override_config,
            format!(
                "kprobe PMU {pmu}, CONFIG_BPF_KPROBE_OVERRIDE=y in {config_source}: \
                 {override_config}"
            ),
        ),
    );
    o
}

#[tokio::test]
async fn capabilities_match_independent_observations() {
    if !require_root() {
        return;
    }
    if !bpftool_available() {
        skip("bpftool is not installed (it is the independent probe)");
        return;
    }
    let (_agent, caps) = capabilities().await;
    let observed = observe();

    assert_eq!(caps.kernel_release, uname_release(), "kernel_release");
    assert_eq!(
        Path::new(&caps.cgroup2_mount),
        cgroup2_mount(),
        "cgroup2_mount"
    );
    let mut mismatches = Vec::new();
    for f in &caps.features {
        match observed.get(f.name.as_str()) {
            None => mismatches.push(format!(
                "{}: reported, but this test has no independent check for it; add one to \
                 tests/tests/caps.rs",
                f.name
            )),
            Some((available, why)) => {
                println!("observed: {:<24} {:<5} {why}", f.name, available);
                if *available != f.available {
                    mismatches.push(format!(
                        "{}: agent says {} ({}), observed {available} ({why})",
                        f.name, f.available, f.detail
                    ));
                }
            }
        }
    }
    for name in observed.keys() {
        if !caps.features.iter().any(|f| f.name == *name) {
            mismatches.push(format!("{name}: not reported by the agent"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "GetCapabilities disagrees with the kernel:\n  {}",
        mismatches.join("\n  ")
    );
}

/// `bpf_lsm=1,tcx=0` -> {bpf_lsm: true, tcx: false}.
fn parse_expectations(text: &str) -> BTreeMap<String, bool> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (name, value) = item
                .split_once('=')
                .unwrap_or_else(|| panic!("FAULTD_EXPECT_FEATURES: {item:?} is not name=0|1"));
            let value = match value {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" => false,
                _ => panic!("FAULTD_EXPECT_FEATURES: {item:?} is not name=0|1"),
            };
            (name.to_owned(), value)
        })
        .collect()
}

#[tokio::test]
async fn capabilities_match_what_this_kernel_is_known_to_offer() {
    if !require_root() {
        return;
    }
    let Ok(text) = std::env::var("FAULTD_EXPECT_FEATURES") else {
        skip("FAULTD_EXPECT_FEATURES is not set (xtask sets it for known kernels)");
        return;
    };
    let expected = parse_expectations(&text);
    let (_agent, caps) = capabilities().await;
    let mut mismatches = Vec::new();
    for (name, want) in &expected {
        match caps.features.iter().find(|f| f.name == *name) {
            None => mismatches.push(format!("{name}: expected {want}, not reported")),
            Some(f) if f.available != *want => mismatches.push(format!(
                "{name}: expected {want}, agent says {} ({})",
                f.available, f.detail
            )),
            Some(_) => {}
        }
    }
    assert!(
        mismatches.is_empty(),
        "kernel {}: GetCapabilities differs from FAULTD_EXPECT_FEATURES={text}:\n  {}",
        caps.kernel_release,
        mismatches.join("\n  ")
    );
}

#[test]
fn parses_versions_and_expectations() {
    assert_eq!(parse_version("6.12.117+deb12-cloud-amd64"), (6, 12, 117));
    assert_eq!(parse_version("6.1.0-56-cloud-amd64"), (6, 1, 0));
    assert_eq!(parse_version("6.18.44-fc-v669"), (6, 18, 44));
    let e = parse_expectations("bpf_lsm=1, tcx=0,");
    assert_eq!(e.len(), 2);
    assert!(e["bpf_lsm"] && !e["tcx"]);
}
