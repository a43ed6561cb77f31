//! Loading faultd's object and finding out, program by program, what this
//! kernel accepts: the cgroup socket hooks, the BPF LSM flavours, kprobes
//! with `bpf_override_return`.

use aya::{
    Ebpf, EbpfLoader,
    maps::Array,
    programs::{CgroupSkb, Program, ProgramError},
};
use faultd_common::{names, offsets};

use crate::{
    backend::LsmScope,
    config::LsmAttach,
    datapath::{DatapathError, Hook, jitter},
    error::error_chain,
};

/// The object built from ebpf/ by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/faultd-ebpf"));

/// The BPF LSM hooks: ours, the node-wide program, the kernel hook; the
/// `lsm_cgroup` flavour is `names::LSM_CGROUP_PROGS` in the same order.
pub(super) const LSM_PROGRAMS: [(Hook, &str, &str); 8] = [
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

/// The syscall programs, loaded when the kernel accepts them.
pub(super) const SYS_PROGRAMS: [&str; 7] = [
    names::CONNECT4_PROG,
    names::CONNECT6_PROG,
    names::BIND4_PROG,
    names::BIND6_PROG,
    names::SENDMSG4_PROG,
    names::SENDMSG6_PROG,
    names::SOCK_CREATE_PROG,
];

pub(super) const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe/type";

/// Writes the jitter tables (`jitter::kernel_tables`) into `FAULTD_DIST`.
pub(super) fn fill_dist_tables(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    let mut dist: Array<_, i32> = Array::try_from(ebpf.map_mut(names::DIST_MAP).ok_or(
        DatapathError::Missing {
            kind: "map",
            name: names::DIST_MAP,
        },
    )?)
    .map_err(map_err(names::DIST_MAP, "opening"))?;
    for (i, v) in jitter::kernel_tables().into_iter().enumerate() {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        dist.set(i, &v, 0)
            .map_err(map_err(names::DIST_MAP, "update"))?;
    }
    Ok(())
}

pub(super) fn skb_program<'a>(
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
pub(super) fn load_object(
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
pub(super) fn load_lsm(
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
        loaded.map_err(|e| format!("loading {name} on {hook}: {}", error_chain(&e)))?;
    }
    Ok(())
}

pub(super) fn load_kprobes(ebpf: &mut Ebpf) -> Result<(), String> {
    for name in names::KPROBE_PROGS {
        match ebpf.program_mut(name) {
            Some(Program::KProbe(p)) => p
                .load()
                .map_err(|e| format!("loading {name}: {}", error_chain(&e)))?,
            _ => return Err(format!("the eBPF object has no kprobe program {name}")),
        }
    }
    Ok(())
}

/// Why the armed kprobe programs did not load, and whether the rest of them
/// verifies here: a second copy of the object with the override call dead
/// (see ebpf/src/kprobe.rs) tells a kernel that only lacks
/// CONFIG_BPF_KPROBE_OVERRIDE from one that refuses kprobes altogether.
pub(super) fn kprobe_diagnosis(why: String, max_faults: u32, globals: &[(&str, u32)]) -> String {
    let rest = load_object(max_faults, globals, false)
        .map_err(|e| error_chain(&e))
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

pub(super) fn ebpf_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut Program, DatapathError> {
    ebpf.program_mut(name).ok_or(DatapathError::Missing {
        kind: "program",
        name,
    })
}

pub(super) fn take_map<T>(
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

pub(super) fn map_err(
    map: &'static str,
    op: &'static str,
) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
    move |e| DatapathError::Map {
        map,
        op,
        source: Box::new(e),
    }
}
