//! Writes the seed inputs of every fuzz target into CORPUS/<target>/:
//! the TOML blocks of the docs (configs, policies, inventories), the
//! example experiment files and their wire form, ApplyFault requests for
//! every fault kind and target form, netlink dumps as the kernel sends
//! them, a small BTF blob with the structs the agent looks up, and cgroup
//! names of every layout. Names are content hashes, so running it again
//! adds nothing twice.
//!
//!     seed REPO CORPUS

use std::path::{Path, PathBuf};

use faultd_agent::qdisc::netlink::{
    FqOptions, RTM_NEWLINK, RTM_NEWQDISC, encode_new_ifb, encode_qdisc,
};
use faultd_fuzz::{CONTAINER_ID, POD_UID};
use faultd_proto::{agent::v1 as apb, coordinator::v1 as cpb};
use prost::Message as _;

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [repo, corpus] = args.as_slice() else {
        eprintln!("usage: seed REPO CORPUS");
        std::process::exit(2);
    };
    let mut written = 0;
    let mut put = |target: &str, data: Vec<u8>| {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        let path = dir.join(format!("seed-{:016x}", fnv1a(&data)));
        if !path.exists() {
            std::fs::write(&path, &data).expect("seed");
            written += 1;
        }
    };

    for block in toml_blocks(repo) {
        put("agent_config", block.clone().into_bytes());
        for which in 0..3u8 {
            put(
                "coordinator_files",
                [vec![which], block.clone().into_bytes()].concat(),
            );
        }
    }
    put(
        "coordinator_files",
        [b"\x01".to_vec(), faultd_fuzz::POLICY.as_bytes().to_vec()].concat(),
    );

    let mut kinds = Vec::new();
    for file in files(&repo.join("docs/examples"), "yaml") {
        let text = std::fs::read_to_string(&file).expect("example");
        put("experiment", [b"\x00", text.as_bytes()].concat());
        let spec = faultctl::args::file::parse(&file.display().to_string(), &text)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        kinds.extend(spec.faults.iter().filter_map(|f| f.kind.clone()));
        let req = cpb::CreateExperimentRequest {
            spec: Some(spec),
            ..Default::default()
        };
        put("experiment", [vec![1], req.encode_to_vec()].concat());
    }

    let targets = [
        apb::target::Kind::CgroupPath("system.slice/nginx.service".into()),
        apb::target::Kind::Pid(4242),
        apb::target::Kind::SystemdUnit("nginx.service".into()),
        apb::target::Kind::Pod(apb::KubernetesPod {
            uid: POD_UID.into(),
            container_id: format!("containerd://{CONTAINER_ID}"),
        }),
    ];
    for (i, kind) in kinds.iter().enumerate() {
        let target = targets[i % targets.len()].clone();
        let req = apb::ApplyFaultRequest {
            spec: Some(apb::FaultSpec {
                id: format!("seed-{i}"),
                target: Some(apb::Target { kind: Some(target) }),
                duration: Some(prost_types_duration(30)),
                kind: Some(fault_kind(kind.clone())),
            }),
            lease: Some(apb::Lease {
                id: "lease-1".into(),
                ttl: Some(prost_types_duration(15)),
            }),
        };
        put("agent_request", req.encode_to_vec());
    }

    // A qdisc dump (the agent's own fq and the kernel's mq), an ifb link,
    // then NLMSG_DONE; and a refused request with an extended-ack message.
    let fq = FqOptions {
        plimit: Some(10_000),
        flow_plimit: Some(1_000),
        horizon_us: Some(10_000_000),
        horizon_drop: Some(0),
    };
    let mut dump = encode_qdisc(
        RTM_NEWQDISC,
        2,
        1,
        3,
        0xffff_ffff,
        0x8001_0000,
        Some("fq"),
        Some(&fq),
    );
    dump.extend(encode_qdisc(
        RTM_NEWQDISC,
        2,
        1,
        2,
        0xffff_ffff,
        0,
        Some("mq"),
        None,
    ));
    dump.extend(encode_new_ifb(1, "faultd-ifb0", 4001));
    put("netlink", dump.clone());
    dump.extend(nlmsg(3, 2, 1, &0i32.to_ne_bytes()));
    put("netlink", dump);
    let mut error = (-17i32).to_ne_bytes().to_vec();
    error.extend(
        encode_qdisc(RTM_NEWQDISC, 0x405, 1, 3, 0xffff_ffff, 0, Some("fq"), None)[..16].iter(),
    );
    let text = b"Exclusivity flag on, cannot modify\0\0";
    error.extend(((4 + text.len()) as u16).to_ne_bytes());
    error.extend(1u16.to_ne_bytes());
    error.extend(text);
    put("netlink", nlmsg(2, 0x200, 1, &error));
    let _ = RTM_NEWLINK;

    put("btf", small_btf());

    let pod = POD_UID.replace('-', "_");
    for (which, text) in [
        (0u8, "system.slice/nginx.service".to_owned()),
        (0, "/kubepods.slice/../system.slice".to_owned()),
        (0, "system.slice/escape".to_owned()),
        (1, "user@1000.service".to_owned()),
        (1, "nginx.service".to_owned()),
        (2, format!("{POD_UID}\ncontainerd://{CONTAINER_ID}")),
        (2, pod.clone()),
        (3, format!("0::/kubepods.slice/kubepods-pod{pod}.slice\n")),
        (
            3,
            "12:cpu:/\n0::/system.slice/nginx.service (deleted)\n".to_owned(),
        ),
        (
            4,
            "36 35 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n".to_owned(),
        ),
        (5, "kubepods.slice/**/cri-containerd-*.scope".to_owned()),
        (5, "unit:*.service".to_owned()),
        (5, format!("pod:{POD_UID}")),
    ] {
        put("cgroup_targets", [vec![which], text.into_bytes()].concat());
    }
    println!("seed: {written} new inputs in {}", corpus.display());
}

/// FNV-1a: a name that stays the same for the same bytes on every build.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn prost_types_duration(seconds: i64) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos: 0 }
}

fn fault_kind(kind: cpb::fault_template::Kind) -> apb::fault_spec::Kind {
    use apb::fault_spec::Kind as S;
    use cpb::fault_template::Kind as T;
    match kind {
        T::Loss(f) => S::Loss(f),
        T::Syscall(f) => S::Syscall(f),
        T::Latency(f) => S::Latency(f),
        T::Bandwidth(f) => S::Bandwidth(f),
    }
}

fn nlmsg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(
        u32::try_from(16 + payload.len())
            .expect("short")
            .to_ne_bytes(),
    );
    b.extend(ty.to_ne_bytes());
    b.extend(flags.to_ne_bytes());
    b.extend(seq.to_ne_bytes());
    b.extend(0u32.to_ne_bytes());
    b.extend(payload);
    b
}

/// ```toml blocks of the README and docs.
fn toml_blocks(repo: &Path) -> Vec<String> {
    let mut docs = files(&repo.join("docs"), "md");
    docs.push(repo.join("README.md"));
    docs.push(repo.join("deploy/README.md"));
    let mut out = Vec::new();
    for doc in docs {
        let text = std::fs::read_to_string(&doc).unwrap_or_default();
        let mut block: Option<String> = None;
        for line in text.lines() {
            match (&mut block, line.trim_start()) {
                (None, "```toml") => block = Some(String::new()),
                (Some(b), "```") => {
                    out.push(std::mem::take(b));
                    block = None;
                }
                (Some(b), _) => {
                    b.push_str(line);
                    b.push('\n');
                }
                (None, _) => {}
            }
        }
    }
    out
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.retain(|p| p.extension().is_some_and(|e| e == ext));
    out.sort();
    out
}

/// BTF (include/uapi/linux/btf.h) with an int and the structs
/// `file_offsets` reads, `file.f_path` inside an anonymous union as on 6.x.
fn small_btf() -> Vec<u8> {
    struct Blob {
        types: Vec<u8>,
        strings: Vec<u8>,
    }
    impl Blob {
        fn name(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = u32::try_from(self.strings.len()).expect("small");
            self.strings.extend(s.as_bytes());
            self.strings.push(0);
            off
        }
        fn words(&mut self, words: &[u32]) {
            for w in words {
                self.types.extend(w.to_le_bytes());
            }
        }
        /// A struct (kind 4) or union (kind 5) with (name, type id, byte offset) members.
        fn aggregate(&mut self, kind: u32, name: &str, members: &[(&str, u32, u32)]) {
            let n = self.name(name);
            let vlen = u32::try_from(members.len()).expect("small");
            self.words(&[n, kind << 24 | vlen, 128]);
            for (m, ty, off) in members {
                let m = self.name(m);
                self.words(&[m, *ty, off * 8]);
            }
        }
    }
    let mut b = Blob {
        types: Vec::new(),
        strings: vec![0],
    };
    // Ids in order: 1 int, 2 the union, 3 path, 4 file, 5 dentry, 6 inode,
    // 7 super_block.
    let int = b.name("int");
    b.words(&[int, 1 << 24, 8, 64]);
    b.aggregate(5, "", &[("f_path", 3, 0)]);
    b.aggregate(4, "path", &[("mnt", 1, 0), ("dentry", 1, 8)]);
    b.aggregate(4, "file", &[("f_u", 1, 0), ("", 2, 16)]);
    b.aggregate(
        4,
        "dentry",
        &[("d_flags", 1, 0), ("d_parent", 1, 24), ("d_inode", 1, 48)],
    );
    b.aggregate(
        4,
        "inode",
        &[("i_mode", 1, 0), ("i_sb", 1, 40), ("i_ino", 1, 64)],
    );
    b.aggregate(4, "super_block", &[("s_list", 1, 0), ("s_dev", 1, 16)]);
    let len = |v: &Vec<u8>| u32::try_from(v.len()).expect("small");
    let mut out = Vec::new();
    out.extend(0xeb9fu16.to_le_bytes());
    out.extend([1u8, 0]);
    for w in [24, 0, len(&b.types), len(&b.types), len(&b.strings)] {
        out.extend(w.to_le_bytes());
    }
    out.extend(b.types);
    out.extend(b.strings);
    out
}
