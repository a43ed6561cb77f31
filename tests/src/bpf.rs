//! What the kernel has loaded and attached, read through `bpftool -j`.
//!
//! Tests use these to check that a fault really attached (and really detached on
//! revert or on agent exit) without trusting the agent's own bookkeeping.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// `$BPFTOOL` if set, else `/usr/sbin/bpftool` if present, else `bpftool` on PATH.
pub fn bpftool() -> PathBuf {
    if let Some(path) = std::env::var_os("BPFTOOL") {
        return PathBuf::from(path);
    }
    let sbin = PathBuf::from("/usr/sbin/bpftool");
    if sbin.is_file() {
        sbin
    } else {
        PathBuf::from("bpftool")
    }
}

/// True when bpftool runs; tests that need it can skip otherwise.
pub fn bpftool_available() -> bool {
    Command::new(bpftool())
        .arg("version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Runs `bpftool -j <args>` and parses its JSON output.
///
/// # Panics
/// With the command's stderr if it fails or prints something unexpected.
pub fn bpftool_json<T: DeserializeOwned>(args: &[&str]) -> T {
    let tool = bpftool();
    let out = Command::new(&tool)
        .arg("-j")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {} -j {}: {e}", tool.display(), args.join(" ")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} -j {} failed ({}):\nstderr: {}\nstdout: {stdout}",
        tool.display(),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr),
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{} -j {} printed unexpected JSON ({e}):\n{stdout}",
            tool.display(),
            args.join(" ")
        )
    })
}

/// One BPF link whose program matched, from `bpftool link show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub id: u32,
    pub prog_id: u32,
    pub prog_name: String,
    /// e.g. `cgroup_inet_egress`; None for link types without one.
    pub attach_type: Option<String>,
    /// For cgroup links, the id (inode) of the cgroup it is attached to: compare
    /// with [`crate::CgroupGuard::id`].
    pub cgroup_id: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct RawLink {
    id: u32,
    prog_id: u32,
    attach_type: Option<String>,
    cgroup_id: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct RawProg {
    id: u32,
    name: Option<String>,
}

/// Loaded programs whose name starts with `prefix`, as `(id, name)`, sorted by id.
///
/// The kernel keeps only 15 characters of a program's name (BPF_OBJ_NAME_LEN);
/// bpftool prints the full function name when the program has BTF, so a prefix of
/// at most 15 characters matches either way.
pub fn programs_named(prefix: &str) -> Vec<(u32, String)> {
    let progs: Vec<RawProg> = bpftool_json(&["prog", "show"]);
    select_programs(progs, prefix)
}

fn select_programs(progs: Vec<RawProg>, prefix: &str) -> Vec<(u32, String)> {
    let mut out: Vec<(u32, String)> = progs
        .into_iter()
        .filter_map(|p| Some((p.id, p.name?)))
        .filter(|(_, name)| name.starts_with(prefix))
        .collect();
    out.sort_unstable();
    out
}

/// BPF links whose program's name starts with `prefix`, sorted by link id.
/// Programs attached the legacy way (BPF_PROG_ATTACH) have no link and do not show.
pub fn links_of_programs_named(prefix: &str) -> Vec<LinkInfo> {
    let progs: Vec<RawProg> = bpftool_json(&["prog", "show"]);
    let links: Vec<RawLink> = bpftool_json(&["link", "show"]);
    join_links(progs, links, prefix)
}

fn join_links(progs: Vec<RawProg>, links: Vec<RawLink>, prefix: &str) -> Vec<LinkInfo> {
    let names: HashMap<u32, String> = select_programs(progs, prefix).into_iter().collect();
    let mut out: Vec<LinkInfo> = links
        .into_iter()
        .filter_map(|l| {
            Some(LinkInfo {
                id: l.id,
                prog_id: l.prog_id,
                prog_name: names.get(&l.prog_id)?.clone(),
                attach_type: l.attach_type,
                cgroup_id: l.cgroup_id,
            })
        })
        .collect();
    out.sort_unstable_by_key(|l| l.id);
    out
}

/// The number of entries `bpftool map dump` lists for map `map_id`: one per key,
/// also for per-CPU maps (whose values come as a per-CPU list). Array maps always
/// list every index up to `max_entries`.
///
/// # Panics
/// With bpftool's stderr if the map does not exist or cannot be dumped.
pub fn map_entries(map_id: u32) -> usize {
    let id = map_id.to_string();
    let entries: Vec<serde_json::Value> = bpftool_json(&["map", "dump", "id", &id]);
    entries.len()
}

/// Ids of the maps whose name starts with `prefix` (names are truncated to 15
/// characters by the kernel), sorted.
pub fn maps_named(prefix: &str) -> Vec<(u32, String)> {
    let maps: Vec<RawProg> = bpftool_json(&["map", "show"]);
    select_programs(maps, prefix)
}

/// The running kernel's build config and where it came from:
/// `/boot/config-<release>` (the VM tier ships it there), else
/// `/proc/config.gz` (CONFIG_IKCONFIG_PROC), else empty.
pub fn kernel_config(release: &str) -> (String, String) {
    let boot = format!("/boot/config-{release}");
    if let Ok(text) = std::fs::read_to_string(&boot) {
        return (boot, text);
    }
    let gz = "/proc/config.gz";
    if std::path::Path::new(gz).exists()
        && let Ok(out) = std::process::Command::new("zcat").arg(gz).output()
        && out.status.success()
    {
        return (
            gz.to_owned(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        );
    }
    ("no kernel config found".to_owned(), String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shapes from bpftool v7.1 `-j prog show` / `-j link show`.
    const PROGS: &str = r#"[
        {"id":41,"type":"cgroup_skb","name":"faultd_egress","tag":"0123456789abcdef","gpl_compatible":true,"loaded_at":1,"uid":0,"bytes_xlated":512,"jited":true,"bytes_jited":300,"bytes_memlock":4096,"map_ids":[7,8],"btf_id":12},
        {"id":42,"type":"cgroup_skb","name":"faultd_ingress"},
        {"id":43,"type":"cgroup_device","name":"sd_devices"},
        {"id":44,"type":"socket_filter"}
    ]"#;
    const LINKS: &str = r#"[
        {"id":5,"type":"cgroup","prog_id":42,"cgroup_id":9999,"attach_type":"cgroup_inet_ingress"},
        {"id":3,"type":"cgroup","prog_id":41,"cgroup_id":9999,"attach_type":"cgroup_inet_egress"},
        {"id":4,"type":"cgroup","prog_id":43,"cgroup_id":1,"attach_type":"cgroup_device"},
        {"id":6,"type":"tcx","prog_id":41,"ifindex":1}
    ]"#;

    #[test]
    fn selects_programs_by_prefix() {
        let progs: Vec<RawProg> = serde_json::from_str(PROGS).expect("progs");
        assert_eq!(
            select_programs(progs, "faultd_"),
            vec![
                (41, "faultd_egress".to_owned()),
                (42, "faultd_ingress".to_owned())
            ]
        );
    }

    #[test]
    fn joins_links_to_program_names() {
        let progs: Vec<RawProg> = serde_json::from_str(PROGS).expect("progs");
        let links: Vec<RawLink> = serde_json::from_str(LINKS).expect("links");
        let got = join_links(progs, links, "faultd_");
        assert_eq!(
            got,
            vec![
                LinkInfo {
                    id: 3,
                    prog_id: 41,
                    prog_name: "faultd_egress".to_owned(),
                    attach_type: Some("cgroup_inet_egress".to_owned()),
                    cgroup_id: Some(9999),
                },
                LinkInfo {
                    id: 5,
                    prog_id: 42,
                    prog_name: "faultd_ingress".to_owned(),
                    attach_type: Some("cgroup_inet_ingress".to_owned()),
                    cgroup_id: Some(9999),
                },
                LinkInfo {
                    id: 6,
                    prog_id: 41,
                    prog_name: "faultd_egress".to_owned(),
                    attach_type: None,
                    cgroup_id: None,
                },
            ]
        );
    }

    /// A private bpffs, unmounted on drop, so the test leaves nothing pinned.
    struct BpfFs(tempfile::TempDir);

    impl Drop for BpfFs {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }

    fn bpftool_ok(args: &[&str]) {
        let out = Command::new(bpftool())
            .args(args)
            .output()
            .expect("run bpftool");
        assert!(
            out.status.success(),
            "bpftool {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn counts_map_entries_including_per_cpu_maps() {
        if !crate::require_root() {
            return;
        }
        if !bpftool_available() {
            crate::cgroup::skip("bpftool not found");
            return;
        }
        let fs = BpfFs(tempfile::tempdir().expect("tempdir"));
        nix::mount::mount(
            Some("bpf"),
            fs.0.path(),
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount bpffs");
        let pid = std::process::id();
        for (kind, name) in [("hash", "fdkit_h"), ("percpu_hash", "fdkit_pc")] {
            let name = format!("{name}{}", pid % 100_000);
            let pin = fs.0.path().join(&name);
            let pin = pin.to_str().expect("utf-8 path");
            bpftool_ok(&[
                "map", "create", pin, "type", kind, "key", "4", "value", "8", "entries", "16",
                "name", &name,
            ]);
            let maps = maps_named(&name);
            assert_eq!(maps.len(), 1, "{maps:?}");
            let id = maps[0].0;
            assert_eq!(map_entries(id), 0);
            for key in 0..3u8 {
                let key = key.to_string();
                bpftool_ok(&[
                    "map", "update", "pinned", pin, "key", &key, "0", "0", "0", "value", "1", "0",
                    "0", "0", "0", "0", "0", "0",
                ]);
            }
            assert_eq!(map_entries(id), 3, "{kind}");
        }
    }

    #[test]
    fn map_dump_failure_names_the_command() {
        if !crate::require_root() || !bpftool_available() {
            return;
        }
        let err = std::panic::catch_unwind(|| map_entries(u32::MAX - 1)).expect_err("no such map");
        let msg = err.downcast_ref::<String>().expect("String panic");
        assert!(msg.contains("map dump id 4294967294 failed"), "{msg}");
    }

    #[test]
    fn live_listing_parses() {
        if !crate::require_root() {
            return;
        }
        if !bpftool_available() {
            crate::cgroup::skip("bpftool not found");
            return;
        }
        // Whatever is loaded on this host, the JSON must parse.
        let _ = programs_named("");
        let _ = links_of_programs_named("");
        let _ = maps_named("");
    }
}
