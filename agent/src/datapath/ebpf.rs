//! The real datapath: faultd's eBPF object loaded with aya.

use std::{
    collections::HashMap,
    fs::File,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray, PerCpuValues},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, LinkOrder, Program, ProgramError,
        SchedClassifier, TcAttach, TcAttachType, cgroup_skb::CgroupSkbLink,
        cgroup_sock::CgroupSockLink, cgroup_sock_addr::CgroupSockAddrLink, kprobe::KProbeLink,
        lsm::LsmLink, lsm_cgroup::LsmLink as LsmCgroupLink, tc::SchedClassifierLink,
    },
    util::nr_cpus,
};
use faultd_common::{
    CgroupRules, FaultCounters, IFB_IFINDEX, IFB_INDEX, LEVELS_INDEX, RuleState, SysRules, names,
    offsets,
};
use tracing::{debug, info, warn};

use super::{Datapath, DatapathError, KernelObject, TableRules};
use crate::{
    config::LsmAttach,
    fault::{Hook, LsmScope, SysBackends, SyscallOp, Table},
};

/// A link of any of our program types. Dropping it detaches.
#[derive(Debug)]
#[expect(dead_code, reason = "held for its Drop, which detaches the link")]
enum Link {
    Skb(CgroupSkbLink),
    SockAddr(CgroupSockAddrLink),
    Sock(CgroupSockLink),
    Lsm(LsmLink),
    LsmCgroup(LsmCgroupLink),
    /// One perf-event kprobe per syscall entry point of the operation.
    Kprobe(Vec<KProbeLink>),
}

/// The BPF LSM hooks: ours, the node-wide program, the kernel hook; the
/// `lsm_cgroup` flavour is `names::LSM_CGROUP_PROGS` in the same order.
const LSM_PROGRAMS: [(Hook, &str, &str); 8] = [
    (Hook::FileOpen, names::FILE_OPEN_PROG, "file_open"),
    (
        Hook::FilePermission,
        names::FILE_PERM_PROG,
        "file_permission",
    ),
    (Hook::Mkdir, names::MKDIR_PROG, "inode_mkdir"),
    (Hook::Unlink, names::UNLINK_PROG, "inode_unlink"),
    (Hook::Rename, names::RENAME_PROG, "inode_rename"),
    (Hook::Exec, names::EXEC_PROG, "bprm_check_security"),
    (Hook::Accept, names::ACCEPT_PROG, "socket_accept"),
    (Hook::Recvmsg, names::RECVMSG_PROG, "socket_recvmsg"),
];

/// The syscall entry points each kprobe program attaches to, without the
/// architecture's wrapper prefix. 32-bit compat entries are not covered.
fn kprobe_syscalls(op: SyscallOp) -> &'static [&'static str] {
    match op {
        SyscallOp::Open => &["open", "openat", "openat2", "creat"],
        SyscallOp::Read => &["read", "readv", "pread64", "preadv", "preadv2"],
        SyscallOp::Write => &["write", "writev", "pwrite64", "pwritev", "pwritev2"],
        SyscallOp::Connect => &["connect"],
        SyscallOp::Bind => &["bind"],
        SyscallOp::Sendmsg => &["sendto", "sendmsg", "sendmmsg"],
        SyscallOp::Socket => &["socket"],
        SyscallOp::Mkdir => &["mkdir", "mkdirat"],
        SyscallOp::Unlink => &["unlink", "unlinkat"],
        SyscallOp::Rename => &["rename", "renameat", "renameat2"],
        SyscallOp::Execve => &["execve", "execveat"],
        SyscallOp::Accept => &["accept", "accept4"],
        SyscallOp::Recvmsg => &["recvfrom", "recvmsg", "recvmmsg"],
    }
}

/// The syscall wrappers' symbol prefix (arch/*/include/asm/syscall_wrapper.h).
#[cfg(target_arch = "x86_64")]
const SYSCALL_PREFIX: &str = "__x64_sys_";
#[cfg(target_arch = "aarch64")]
const SYSCALL_PREFIX: &str = "__arm64_sys_";
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const SYSCALL_PREFIX: &str = "sys_";

fn kprobe_prog(op: SyscallOp) -> &'static str {
    match op {
        SyscallOp::Open => names::KPROBE_OPEN_PROG,
        SyscallOp::Read => names::KPROBE_READ_PROG,
        SyscallOp::Write => names::KPROBE_WRITE_PROG,
        SyscallOp::Connect => names::KPROBE_CONNECT_PROG,
        SyscallOp::Bind => names::KPROBE_BIND_PROG,
        SyscallOp::Sendmsg => names::KPROBE_SENDMSG_PROG,
        SyscallOp::Socket => names::KPROBE_SOCKET_PROG,
        SyscallOp::Mkdir => names::KPROBE_MKDIR_PROG,
        SyscallOp::Unlink => names::KPROBE_UNLINK_PROG,
        SyscallOp::Rename => names::KPROBE_RENAME_PROG,
        SyscallOp::Execve => names::KPROBE_EXEC_PROG,
        SyscallOp::Accept => names::KPROBE_ACCEPT_PROG,
        SyscallOp::Recvmsg => names::KPROBE_RECVMSG_PROG,
    }
}

const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe/type";

/// The syscall programs, loaded when the kernel accepts them.
const SYS_PROGRAMS: [&str; 7] = [
    names::CONNECT4_PROG,
    names::CONNECT6_PROG,
    names::BIND4_PROG,
    names::BIND6_PROG,
    names::SENDMSG4_PROG,
    names::SENDMSG6_PROG,
    names::SOCK_CREATE_PROG,
];

/// The object built from ebpf/ by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/faultd-ebpf"));

pub struct EbpfDatapath {
    ebpf: Ebpf,
    rules: BpfHashMap<MapData, u64, CgroupRules>,
    sys_rules: BpfHashMap<MapData, u64, SysRules>,
    /// Why the syscall programs could not be loaded, if they could not.
    sys_unavailable: Option<String>,
    /// Why the BPF LSM programs could not be loaded, if they could not.
    lsm_unavailable: Option<String>,
    /// How the loaded LSM programs attach, if they loaded.
    lsm_scope: Option<LsmScope>,
    /// Why the `lsm_cgroup` flavour is not used, if it is not.
    lsm_cgroup_unavailable: Option<String>,
    /// Why the kprobe programs cannot fail calls, if they cannot.
    kprobe_unavailable: Option<String>,
    /// Why path-prefix filters cannot be served (no usable BTF layout).
    path_filter_unavailable: Option<String>,
    counters: PerCpuArray<MapData, FaultCounters>,
    levels: Array<MapData, u64>,
    /// Owned bpf links. Dropping one closes its fd and detaches it; none is
    /// pinned, so they all go when the process does (kernel/bpf/syscall.c,
    /// `bpf_link_release`).
    links: HashMap<(u64, Hook), Link>,
    nr_cpus: usize,
    map_ids: Vec<KernelObject>,
    /// Per-fault latency and bandwidth state, reset with the counters.
    rule_state: Array<MapData, RuleState>,
    /// fq installations for latency and bandwidth faults.
    qdiscs: Option<crate::qdisc::QdiscManager>,
    /// The tc programs of ingress faults: None until the first such fault
    /// loads them (verifying them costs about as much as the egress
    /// program, which the agent's start should not pay on nodes that never
    /// delay ingress), then loaded or why not.
    tc: Option<Result<(), String>>,
    /// TCX links of the tc ingress program, by network namespace inode.
    /// bpf links: they detach when the agent dies.
    tc_links: HashMap<u64, Vec<SchedClassifierLink>>,
    // Keeps the aya-log ring buffer alive: dropping it closes the map fd the
    // programs reference.
    _logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

impl std::fmt::Debug for EbpfDatapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbpfDatapath")
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

impl EbpfDatapath {
    /// Loads the programs and maps, sized for `max_faults`. Attaches nothing.
    pub fn load(max_faults: u32, lsm_attach: LsmAttach) -> Result<Self, DatapathError> {
        // Offsets for the path-prefix walk; zeros (the object's defaults)
        // make every path-filtered rule a non-match, and the agent refuses
        // such faults up front.
        let path_offsets = crate::btf::kernel_file_offsets();
        let o = path_offsets.as_ref().ok();
        let globals = [
            (offsets::FILE_DENTRY, o.map_or(0, |o| o.file_dentry)),
            (offsets::DENTRY_PARENT, o.map_or(0, |o| o.dentry_parent)),
            (offsets::DENTRY_INODE, o.map_or(0, |o| o.dentry_inode)),
            (offsets::INODE_INO, o.map_or(0, |o| o.inode_ino)),
            (offsets::INODE_SB, o.map_or(0, |o| o.inode_sb)),
            (offsets::SB_DEV, o.map_or(0, |o| o.sb_dev)),
        ];
        let mut ebpf = load_object(max_faults, &globals, true)?;
        let path_filter_unavailable = path_offsets.err();
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(e) => {
                // Kernel-side logging is for debugging; faults work without it.
                warn!(error = %e, "eBPF log forwarding unavailable");
                None
            }
        };
        for name in [names::EGRESS_PROG, names::INGRESS_PROG] {
            skb_program(&mut ebpf, name)?
                .load()
                .map_err(|e| DatapathError::Program {
                    name,
                    source: Box::new(e),
                })?;
        }
        // The syscall programs call bpf_set_retval, which older kernels
        // refuse; packet faults must keep working there.
        let mut sys_unavailable = None;
        for name in SYS_PROGRAMS {
            let loaded = match ebpf.program_mut(name) {
                Some(Program::CgroupSockAddr(p)) => p.load(),
                Some(Program::CgroupSock(p)) => p.load(),
                _ => {
                    return Err(DatapathError::Missing {
                        kind: "program",
                        name,
                    });
                }
            };
            if let Err(e) = loaded {
                let why = format!("loading {name}: {}", crate::api::error_chain(&e));
                warn!(reason = %why, "syscall faults unavailable");
                sys_unavailable = Some(why);
                break;
            }
        }
        let (lsm_scope, lsm_cgroup_unavailable, lsm_unavailable) = load_lsm(&mut ebpf, lsm_attach);
        if let Some(why) = &lsm_unavailable {
            info!(reason = %why, "file syscall faults unavailable (BPF LSM)");
        }
        // aya attaches kprobes through the kprobe PMU (perf_event_open), so
        // they go with the agent's fds; without it (no CONFIG_KPROBES) there
        // is nothing to attach to.
        let kprobe_unavailable = if Path::new(KPROBE_PMU).exists() {
            load_kprobes(&mut ebpf)
                .err()
                .map(|why| kprobe_diagnosis(why, max_faults, &globals))
        } else {
            Some(format!(
                "no kprobe PMU ({KPROBE_PMU}): the kernel is built without CONFIG_KPROBES"
            ))
        };
        if let Some(why) = &kprobe_unavailable {
            info!(reason = %why, "kprobe syscall backend unavailable");
        }
        let map_ids = [
            names::RULES_MAP,
            names::COUNTERS_MAP,
            names::LEVELS_MAP,
            names::SYS_RULES_MAP,
        ]
        .into_iter()
        .filter_map(|name| {
            let data = match ebpf.map(name)? {
                Map::HashMap(d) | Map::PerCpuArray(d) | Map::Array(d) => d,
                _ => return None,
            };
            Some(KernelObject {
                name: name.to_owned(),
                id: data.info().ok()?.id(),
            })
        })
        .collect();
        let rules = take_map(&mut ebpf, names::RULES_MAP, BpfHashMap::try_from)?;
        let counters = take_map(&mut ebpf, names::COUNTERS_MAP, PerCpuArray::try_from)?;
        let sys_rules = take_map(&mut ebpf, names::SYS_RULES_MAP, BpfHashMap::try_from)?;
        let levels = take_map(&mut ebpf, names::LEVELS_MAP, Array::try_from)?;
        let rule_state = take_map(&mut ebpf, names::RULE_STATE_MAP, Array::try_from)?;
        fill_dist_tables(&mut ebpf)?;
        let nr_cpus = nr_cpus().map_err(|(_, source)| DatapathError::Map {
            map: names::COUNTERS_MAP,
            op: "counting possible CPUs",
            source: Box::new(aya::maps::MapError::IoError(source)),
        })?;
        Ok(Self {
            ebpf,
            rules,
            sys_rules,
            sys_unavailable,
            lsm_unavailable,
            lsm_scope,
            lsm_cgroup_unavailable,
            kprobe_unavailable,
            path_filter_unavailable,
            counters,
            levels,
            rule_state,
            qdiscs: None,
            tc: None,
            tc_links: HashMap::new(),
            links: HashMap::new(),
            nr_cpus: nr_cpus.get() as usize,
            map_ids,
            _logger: logger,
        })
    }

    /// Latency and bandwidth faults manage fq qdiscs through `qdiscs`.
    pub fn with_qdiscs(mut self, qdiscs: crate::qdisc::QdiscManager) -> Self {
        self.qdiscs = Some(qdiscs);
        self
    }

    /// Why syscall faults cannot be served here, if they cannot.
    pub fn syscall_unavailable(&self) -> Option<&str> {
        self.sys_unavailable.as_deref()
    }

    /// Why file syscall faults (BPF LSM) cannot be served here, if they
    /// cannot. Decided by loading the programs: the LSM list alone is not
    /// enough, lockdown or a missing CONFIG_BPF_LSM refuse the load.
    pub fn lsm_unavailable(&self) -> Option<&str> {
        self.lsm_unavailable.as_deref()
    }

    /// Why the per-cgroup LSM flavour is not used, if it is not.
    pub fn lsm_cgroup_unavailable(&self) -> Option<&str> {
        self.lsm_cgroup_unavailable.as_deref()
    }

    /// Why the kprobe backend cannot fail calls here, if it cannot.
    pub fn kprobe_unavailable(&self) -> Option<&str> {
        self.kprobe_unavailable.as_deref()
    }

    /// Why path-prefix filters cannot be served here, if they cannot.
    pub fn path_filter_unavailable(&self) -> Option<&str> {
        self.path_filter_unavailable.as_deref()
    }

    /// Drains kernel-side log records into `log` (and so into tracing).
    pub fn flush_logs(&mut self) {
        if let Some(logger) = self._logger.as_mut() {
            logger.flush();
        }
    }
}

/// Loads the two tc programs of ingress latency.
fn load_tc(ebpf: &mut Ebpf) -> Result<(), String> {
    for name in [names::TC_INGRESS_PROG, names::TC_MARK_PROG] {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or_else(|| format!("no program {name}"))?
            .try_into()
            .map_err(|e: ProgramError| format!("{name}: {e}"))?;
        prog.load()
            .map_err(|e| format!("loading {name}: {}", crate::api::error_chain(&e)))?;
    }
    Ok(())
}

/// Turns socket tagging and the tc ingress program on (the ifb's index)
/// or off (0): they cost nothing while no fault delays ingress.
fn set_ifb(ebpf: &mut Ebpf, on: bool) -> Result<(), String> {
    let mut ifb: Array<_, u32> = Array::try_from(
        ebpf.map_mut(names::IFB_MAP)
            .ok_or_else(|| format!("no map {}", names::IFB_MAP))?,
    )
    .map_err(|e| format!("{}: {e}", names::IFB_MAP))?;
    let value = if on { IFB_IFINDEX } else { 0 };
    ifb.set(IFB_INDEX, &value, 0)
        .map_err(|e| format!("{}: {e}", names::IFB_MAP))
}

/// Attaches `prog` with TCX on ingress of every device in `devices` of the
/// namespace `netns`. TCX takes the ifindex in the caller's namespace
/// (kernel/bpf/tcx.c, `tcx_link_attach`), so a short-lived thread enters it;
/// the links are fds and stay valid wherever they are used from. On error
/// the links made so far are dropped (detached).
fn attach_tc_in(
    prog: &mut SchedClassifier,
    netns: &File,
    netns_ino: u64,
    devices: &[(i32, String)],
) -> Result<Vec<SchedClassifierLink>, DatapathError> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                    DatapathError::Ingress(format!("setns(CLONE_NEWNET) into {netns_ino}: {e}"))
                })?;
                let mut links = Vec::new();
                for (ifindex, name) in devices {
                    let index = u32::try_from(*ifindex).unwrap_or(0);
                    let attached = prog
                        .attach(
                            index,
                            TcAttach::Tcx {
                                attach_type: TcAttachType::Ingress,
                                order: LinkOrder::default(),
                            },
                        )
                        .and_then(|id| prog.take_link(id));
                    match attached {
                        Ok(link) => links.push(link),
                        Err(source) => {
                            return Err(DatapathError::AttachTc {
                                device: name.clone(),
                                netns: netns_ino,
                                source: Box::new(source),
                            });
                        }
                    }
                }
                Ok(links)
            })
            .join()
            .unwrap_or_else(|_| Err(DatapathError::Ingress("attach thread panicked".into())))
    })
}

/// Writes the jitter tables (`jitter::kernel_tables`) into `FAULTD_DIST`.
fn fill_dist_tables(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    let mut dist: Array<_, i32> = Array::try_from(ebpf.map_mut(names::DIST_MAP).ok_or(
        DatapathError::Missing {
            kind: "map",
            name: names::DIST_MAP,
        },
    )?)
    .map_err(map_err(names::DIST_MAP, "opening"))?;
    for (i, v) in crate::jitter::kernel_tables().into_iter().enumerate() {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        dist.set(i, &v, 0)
            .map_err(map_err(names::DIST_MAP, "update"))?;
    }
    Ok(())
}

fn skb_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut CgroupSkb, DatapathError> {
    ebpf.program_mut(name)
        .ok_or(DatapathError::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(|e: ProgramError| DatapathError::Program {
            name,
            source: Box::new(e),
        })
}

/// Loads faultd's object with the given read-only globals. `kprobe_armed`
/// sets `FAULTD_KPROBE_OVERRIDE`.
fn load_object(
    max_faults: u32,
    globals: &[(&str, u32)],
    kprobe_armed: bool,
) -> Result<Ebpf, DatapathError> {
    let armed = u32::from(kprobe_armed);
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(names::RULES_MAP, max_faults)
        .map_max_entries(names::COUNTERS_MAP, max_faults)
        .map_max_entries(names::SYS_RULES_MAP, max_faults)
        .map_max_entries(names::RULE_STATE_MAP, max_faults);
    for (name, value) in globals {
        loader.override_global(name, value, true);
    }
    loader.override_global(offsets::KPROBE_OVERRIDE, &armed, true);
    loader
        .load(OBJECT)
        .map_err(|e| DatapathError::Load(Box::new(e)))
}

/// Loads one flavour of the LSM programs. Returns the scope that loaded,
/// why `lsm_cgroup` is not used, and why none loaded.
fn load_lsm(
    ebpf: &mut Ebpf,
    attach: LsmAttach,
) -> (Option<LsmScope>, Option<String>, Option<String>) {
    // With CONFIG_BPF_LSM=y but "bpf" missing from lsm=, the kernel loads
    // and attaches LSM programs that never run: the bpf_lsm_* functions
    // they hook are only called from the hooks the bpf LSM registered at
    // boot (security/security.c, `lsm_order`; security/bpf/hooks.c). A fault
    // would silently do nothing, so check the active list first.
    let list = match std::fs::read_to_string("/sys/kernel/security/lsm") {
        Ok(list) => list,
        Err(e) => {
            // Without securityfs there is no telling whether the programs
            // would run: refuse rather than risk faults that do nothing.
            let why = format!(
                "cannot tell whether the bpf LSM is active: reading /sys/kernel/security/lsm: \
                 {e} (mount securityfs there)"
            );
            return (None, Some(why.clone()), Some(why));
        }
    };
    if !list.split(',').any(|l| l.trim() == "bpf") {
        let why = format!(
            "\"bpf\" is not in /sys/kernel/security/lsm ({}); boot with lsm=...,bpf",
            list.trim()
        );
        return (None, Some(why.clone()), Some(why));
    }
    let btf = match aya::Btf::from_sys_fs() {
        Ok(btf) => btf,
        Err(e) => {
            let why = format!("reading kernel BTF: {e}");
            return (None, Some(why.clone()), Some(why));
        }
    };
    let cgroup = match attach {
        LsmAttach::Node => Err("disabled by syscall.lsm_attach = \"node\"".to_owned()),
        LsmAttach::Auto | LsmAttach::Cgroup => load_lsm_programs(ebpf, &btf, LsmScope::Cgroup),
    };
    let cgroup_why = match cgroup {
        Ok(()) => return (Some(LsmScope::Cgroup), None, None),
        Err(why) => why,
    };
    if attach == LsmAttach::Cgroup {
        return (None, Some(cgroup_why.clone()), Some(cgroup_why));
    }
    match load_lsm_programs(ebpf, &btf, LsmScope::Node) {
        Ok(()) => (Some(LsmScope::Node), Some(cgroup_why), None),
        Err(why) => (None, Some(cgroup_why), Some(why)),
    }
}

fn load_lsm_programs(ebpf: &mut Ebpf, btf: &aya::Btf, scope: LsmScope) -> Result<(), String> {
    for (i, (_, node_name, hook)) in LSM_PROGRAMS.into_iter().enumerate() {
        let name = match scope {
            LsmScope::Node => node_name,
            LsmScope::Cgroup => names::LSM_CGROUP_PROGS[i],
        };
        let loaded = match ebpf.program_mut(name) {
            Some(Program::Lsm(p)) if scope == LsmScope::Node => p.load(hook, btf),
            Some(Program::LsmCgroup(p)) if scope == LsmScope::Cgroup => p.load(hook, btf),
            _ => return Err(format!("the eBPF object has no LSM program {name}")),
        };
        loaded.map_err(|e| format!("loading {name} on {hook}: {}", crate::api::error_chain(&e)))?;
    }
    Ok(())
}

fn load_kprobes(ebpf: &mut Ebpf) -> Result<(), String> {
    for name in names::KPROBE_PROGS {
        match ebpf.program_mut(name) {
            Some(Program::KProbe(p)) => p
                .load()
                .map_err(|e| format!("loading {name}: {}", crate::api::error_chain(&e)))?,
            _ => return Err(format!("the eBPF object has no kprobe program {name}")),
        }
    }
    Ok(())
}

/// Why the armed kprobe programs did not load, and whether the rest of them
/// verifies here: a second copy of the object with the override call dead
/// (see ebpf/src/kprobe.rs) tells a kernel that only lacks
/// CONFIG_BPF_KPROBE_OVERRIDE from one that refuses kprobes altogether.
fn kprobe_diagnosis(why: String, max_faults: u32, globals: &[(&str, u32)]) -> String {
    let rest = load_object(max_faults, globals, false)
        .map_err(|e| crate::api::error_chain(&e))
        .and_then(|mut dry| load_kprobes(&mut dry));
    // The verifier's own line says which helper it refused; the rest of its
    // log is the whole program and does not belong in a capability.
    // "unknown func bpf_override_return#58" before 6.5,
    // "program of this type cannot use helper bpf_override_return#58" since.
    // The log shows the call instruction first, then the refusal.
    let refused = why
        .lines()
        .rfind(|l| l.contains("bpf_override_return#") && !l.contains("call "))
        .map(str::trim);
    match (rest, refused) {
        (Ok(()), Some(line)) => format!(
            "the verifier refuses the helper ({line:?}): the kernel is built without \
             CONFIG_BPF_KPROBE_OVERRIDE; with the bpf_override_return call disabled the same \
             programs load, so this kernel lacks only CONFIG_BPF_KPROBE_OVERRIDE"
        ),
        (Ok(()), None) => format!(
            "{why}; with the bpf_override_return call disabled the same programs load, so only \
             the override is refused"
        ),
        (Err(rest), _) => format!("{why}; without the override call they fail too: {rest}"),
    }
}

fn ebpf_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut Program, DatapathError> {
    ebpf.program_mut(name).ok_or(DatapathError::Missing {
        kind: "program",
        name,
    })
}

fn take_map<T>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<T, aya::maps::MapError>,
) -> Result<T, DatapathError> {
    let map = ebpf
        .take_map(name)
        .ok_or(DatapathError::Missing { kind: "map", name })?;
    convert(map).map_err(|e| DatapathError::Map {
        map: name,
        op: "opening",
        source: Box::new(e),
    })
}

fn map_err(
    map: &'static str,
    op: &'static str,
) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
    move |e| DatapathError::Map {
        map,
        op,
        source: Box::new(e),
    }
}

fn prog_name(hook: Hook, lsm: Option<LsmScope>) -> &'static str {
    if lsm == Some(LsmScope::Cgroup)
        && let Some(i) = LSM_PROGRAMS.iter().position(|(h, ..)| *h == hook)
    {
        return names::LSM_CGROUP_PROGS[i];
    }
    match hook {
        Hook::Egress => names::EGRESS_PROG,
        Hook::Ingress => names::INGRESS_PROG,
        Hook::Connect4 => names::CONNECT4_PROG,
        Hook::Connect6 => names::CONNECT6_PROG,
        Hook::Bind4 => names::BIND4_PROG,
        Hook::Bind6 => names::BIND6_PROG,
        Hook::Sendmsg4 => names::SENDMSG4_PROG,
        Hook::Sendmsg6 => names::SENDMSG6_PROG,
        Hook::SockCreate => names::SOCK_CREATE_PROG,
        Hook::FileOpen => names::FILE_OPEN_PROG,
        Hook::FilePermission => names::FILE_PERM_PROG,
        Hook::Mkdir => names::MKDIR_PROG,
        Hook::Unlink => names::UNLINK_PROG,
        Hook::Rename => names::RENAME_PROG,
        Hook::Exec => names::EXEC_PROG,
        Hook::Accept => names::ACCEPT_PROG,
        Hook::Recvmsg => names::RECVMSG_PROG,
        Hook::Kprobe(op) => kprobe_prog(op),
    }
}

impl Datapath for EbpfDatapath {
    fn set_rules(&mut self, cgroup_id: u64, rules: &TableRules) -> Result<(), DatapathError> {
        // BPF_ANY: the kernel replaces the value atomically for readers
        // (kernel/bpf/hashtab.c, htab_map_update_elem swaps the element under
        // RCU), so a packet sees either the old or the new rules, never a mix.
        match rules {
            TableRules::Net(r) => self
                .rules
                .insert(&cgroup_id, r, 0)
                .map_err(map_err(names::RULES_MAP, "update")),
            TableRules::Sys(r) => self
                .sys_rules
                .insert(&cgroup_id, r, 0)
                .map_err(map_err(names::SYS_RULES_MAP, "update")),
        }
    }

    fn remove_rules(&mut self, table: Table, cgroup_id: u64) -> Result<(), DatapathError> {
        let (result, map) = match table {
            Table::Net => (self.rules.remove(&cgroup_id), names::RULES_MAP),
            Table::Sys => (self.sys_rules.remove(&cgroup_id), names::SYS_RULES_MAP),
        };
        match result {
            Err(aya::maps::MapError::ElementNotFound) | Ok(()) => Ok(()),
            Err(e) => Err(map_err(map, "delete")(e)),
        }
    }

    fn set_levels(&mut self, mask: u64) -> Result<(), DatapathError> {
        self.levels
            .set(LEVELS_INDEX, &mask, 0)
            .map_err(map_err(names::LEVELS_MAP, "update"))
    }

    fn attach(&mut self, cgroup_id: u64, path: &Path, hook: Hook) -> Result<(), DatapathError> {
        let cgroup = File::open(path).map_err(|source| DatapathError::OpenCgroup {
            path: path.display().to_string(),
            source,
        })?;
        let name = prog_name(hook, self.lsm_scope);
        let attach_err = |e| DatapathError::Attach {
            hook,
            path: path.display().to_string(),
            source: Box::new(e),
        };
        // Through bpf_link (kernel >= 5.7) the kernel always attaches with
        // BPF_F_ALLOW_MULTI (kernel/bpf/cgroup.c, `cgroup_bpf_link_attach`),
        // so our programs run beside systemd's or Cilium's, never replacing
        // them. `Single` is the mode aya accepts for links.
        let mode = CgroupAttachMode::Single;
        let link = match ebpf_program(&mut self.ebpf, name)? {
            Program::CgroupSkb(p) => {
                let attach_type = match hook {
                    Hook::Ingress => CgroupSkbAttachType::Ingress,
                    _ => CgroupSkbAttachType::Egress,
                };
                let id = p.attach(cgroup, attach_type, mode).map_err(attach_err)?;
                Link::Skb(p.take_link(id).map_err(attach_err)?)
            }
            Program::CgroupSockAddr(p) => {
                let id = p.attach(cgroup, mode).map_err(attach_err)?;
                Link::SockAddr(p.take_link(id).map_err(attach_err)?)
            }
            Program::CgroupSock(p) => {
                let id = p.attach(cgroup, mode).map_err(attach_err)?;
                Link::Sock(p.take_link(id).map_err(attach_err)?)
            }
            // Node-wide: the program filters by the caller's cgroup itself.
            Program::Lsm(p) => {
                let id = p.attach().map_err(attach_err)?;
                Link::Lsm(p.take_link(id).map_err(attach_err)?)
            }
            Program::LsmCgroup(p) => {
                let id = p.attach(cgroup).map_err(attach_err)?;
                Link::LsmCgroup(p.take_link(id).map_err(attach_err)?)
            }
            Program::KProbe(p) => {
                let Hook::Kprobe(op) = hook else {
                    return Err(DatapathError::Missing {
                        kind: "kprobe hook",
                        name,
                    });
                };
                let present = kernel_symbols();
                let mut links = Vec::new();
                for call in kprobe_syscalls(op) {
                    let symbol = format!("{SYSCALL_PREFIX}{call}");
                    // Not every architecture has every entry point (arm64 has
                    // no open(2)); an absent one has nothing to fail.
                    if present.as_ref().is_some_and(|p| !p.contains(&symbol)) {
                        continue;
                    }
                    let id = p.attach(&symbol, 0).map_err(attach_err)?;
                    links.push(p.take_link(id).map_err(attach_err)?);
                }
                Link::Kprobe(links)
            }
            _ => {
                return Err(DatapathError::Missing {
                    kind: "cgroup program",
                    name,
                });
            }
        };
        debug!(cgroup_id, %hook, path = %path.display(), "attached");
        self.links.insert((cgroup_id, hook), link);
        Ok(())
    }

    fn detach(&mut self, cgroup_id: u64, hook: Hook) -> Result<(), DatapathError> {
        // Dropping the link closes its only fd, which detaches it.
        if self.links.remove(&(cgroup_id, hook)).is_some() {
            debug!(cgroup_id, %hook, "detached");
        }
        Ok(())
    }

    fn reset_counters(&mut self, slot: u32) -> Result<(), DatapathError> {
        let zeros =
            PerCpuValues::try_from(vec![FaultCounters::default(); self.nr_cpus]).map_err(|e| {
                map_err(names::COUNTERS_MAP, "building per-CPU zeros")(
                    aya::maps::MapError::IoError(e),
                )
            })?;
        self.counters
            .set(slot, zeros, 0)
            .map_err(map_err(names::COUNTERS_MAP, "reset"))?;
        self.rule_state
            .set(slot, &RuleState::default(), 0)
            .map_err(map_err(names::RULE_STATE_MAP, "reset"))
    }

    fn counters(&self, slot: u32) -> Result<FaultCounters, DatapathError> {
        let values = self
            .counters
            .get(&slot, 0)
            .map_err(map_err(names::COUNTERS_MAP, "lookup"))?;
        Ok(values
            .iter()
            .fold(FaultCounters::default(), |acc, c| FaultCounters {
                matched: acc.matched.wrapping_add(c.matched),
                dropped: acc.dropped.wrapping_add(c.dropped),
            }))
    }

    fn programs(&self) -> Vec<KernelObject> {
        names::ALL_PROGS
            .into_iter()
            .filter_map(|name| {
                let info = self.ebpf.program(name)?.info().ok()?;
                Some(KernelObject {
                    name: name.to_owned(),
                    id: info.id(),
                })
            })
            .collect()
    }

    fn maps(&self) -> Vec<KernelObject> {
        self.map_ids.clone()
    }

    fn sys_backends(&self) -> SysBackends {
        SysBackends {
            cgroup_hooks: self.sys_unavailable.is_none(),
            lsm: self.lsm_scope,
            kprobe: self.kprobe_unavailable.is_none(),
            path_filter: self.path_filter_unavailable.is_none(),
        }
    }

    fn acquire_fq(
        &mut self,
        fault_id: &str,
        path: &Path,
        horizon: std::time::Duration,
    ) -> Result<(), DatapathError> {
        match self.qdiscs.as_mut() {
            Some(q) => Ok(q.acquire(fault_id, path, horizon)?),
            None => Ok(()),
        }
    }

    fn release_fq(&mut self, fault_id: &str) {
        if let Some(q) = self.qdiscs.as_mut() {
            q.release(fault_id);
        }
    }

    fn acquire_ingress(&mut self, fault_id: &str, path: &Path) -> Result<(), DatapathError> {
        let loaded = self.tc.get_or_insert_with(|| {
            load_tc(&mut self.ebpf)
                .inspect_err(|why| warn!(reason = %why, "ingress delay unavailable"))
        });
        if let Err(why) = loaded {
            // The verifier log can be long; the first line says why (the
            // agent's log holds the whole of it).
            let first = why.lines().next().unwrap_or_default();
            return Err(DatapathError::Ingress(format!(
                "the tc ingress program is not loaded on this kernel ({first})"
            )));
        }
        let Some(q) = self.qdiscs.as_mut() else {
            return Err(DatapathError::Ingress(
                "no qdisc manager (fq unavailable)".into(),
            ));
        };
        let ifindex = i32::try_from(IFB_IFINDEX).unwrap_or(i32::MAX);
        let mark_fd = match self
            .ebpf
            .program(names::TC_MARK_PROG)
            .map(<&SchedClassifier>::try_from)
        {
            Some(Ok(p)) => p
                .fd()
                .map(|fd| fd.as_fd().as_raw_fd())
                .map_err(|e| DatapathError::Ingress(format!("{}: {e}", names::TC_MARK_PROG)))?,
            _ => {
                return Err(DatapathError::Missing {
                    kind: "program",
                    name: names::TC_MARK_PROG,
                });
            }
        };
        let mark_fd = u32::try_from(mark_fd).unwrap_or(u32::MAX);
        let Some(ns) = q.acquire_ifb(fault_id, path, ifindex, (mark_fd, names::TC_MARK_PROG))?
        else {
            return Ok(());
        };
        let devices: Vec<(i32, String)> = ns
            .devices
            .into_iter()
            .filter(|(i, _)| *i != ifindex)
            .collect();
        let prog: &mut SchedClassifier = match self
            .ebpf
            .program_mut(names::TC_INGRESS_PROG)
            .map(TryInto::try_into)
        {
            Some(Ok(p)) => p,
            _ => {
                q.release_ifb(fault_id, |_| {});
                return Err(DatapathError::Missing {
                    kind: "program",
                    name: names::TC_INGRESS_PROG,
                });
            }
        };
        match attach_tc_in(prog, &ns.netns, ns.netns_ino, &devices) {
            Ok(links) => {
                info!(
                    netns = ns.netns_ino,
                    devices = %devices.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>().join(","),
                    "attached the tc ingress program (TCX) for ingress latency"
                );
                self.tc_links.insert(ns.netns_ino, links);
                if let Err(why) = set_ifb(&mut self.ebpf, true) {
                    self.release_ingress(fault_id);
                    return Err(DatapathError::Ingress(why));
                }
                Ok(())
            }
            Err(e) => {
                q.release_ifb(fault_id, |_| {});
                Err(e)
            }
        }
    }

    fn release_ingress(&mut self, fault_id: &str) {
        let Some(q) = self.qdiscs.as_mut() else {
            return;
        };
        let links = &mut self.tc_links;
        // Detach before the ifb goes, so no packet is redirected to a
        // device that no longer exists.
        q.release_ifb(fault_id, |ino| {
            links.remove(&ino);
        });
        if self.tc_links.is_empty()
            && matches!(self.tc, Some(Ok(())))
            && let Err(why) = set_ifb(&mut self.ebpf, false)
        {
            warn!(reason = %why, "turning socket tagging off");
        }
    }

    fn qdisc_changes(&self) -> Vec<crate::qdisc::QdiscChange> {
        self.qdiscs
            .as_ref()
            .map(crate::qdisc::QdiscManager::changes)
            .unwrap_or_default()
    }
}

/// Function names in /proc/kallsyms, or None if it cannot be read (then
/// every entry point is tried).
fn kernel_symbols() -> Option<std::collections::HashSet<String>> {
    let text = std::fs::read_to_string("/proc/kallsyms").ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_whitespace().nth(2))
            .map(str::to_owned)
            .collect(),
    )
}
