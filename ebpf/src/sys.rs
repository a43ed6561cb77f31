//! Syscall faults on the cgroup socket hooks: fail connect(), bind(),
//! sendmsg() on unconnected UDP, and socket() for a target cgroup with a
//! chosen errno.
//!
//! A hook returning 0 makes the call fail with EPERM; `bpf_set_retval`
//! (kernel/bpf/cgroup.c, `bpf_set_retval`, usable from these hooks since 6.1)
//! replaces that with the errno the fault asks for. These programs run in the
//! calling task's context, so the caller's cgroup is
//! `bpf_get_current_cgroup_id`. They attach, like the packet programs, only
//! at the topmost targeted cgroups. Any error allows the call.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    helpers::generated::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_prandom_u32,
        bpf_ktime_get_boot_ns, bpf_set_retval,
    },
    macros::{cgroup_sock, cgroup_sock_addr, lsm, lsm_cgroup, map},
    maps::HashMap,
    programs::{LsmContext, SockAddrContext, SockContext},
};
use faultd_common::{
    FAMILY_IPV4, FAMILY_IPV6, MAX_RULES_PER_CGROUP, PROTO_ANY, SYS_OP_ACCEPT, SYS_OP_BIND,
    SYS_OP_CONNECT, SYS_OP_EXECVE, SYS_OP_MKDIR, SYS_OP_OPEN, SYS_OP_READ, SYS_OP_RECVMSG,
    SYS_OP_RENAME, SYS_OP_SENDMSG, SYS_OP_SOCKET, SYS_OP_UNLINK, SYS_OP_WRITE, SysRule, SysRules,
};

use crate::{
    lookup::{address_matches, deepest_rules},
    net::COUNTERS,
};

#[map(name = "FAULTD_SYS")]
static SYS_RULES: HashMap<u64, SysRules> = HashMap::with_max_entries(1, 0);

const ALLOW: i32 = 1;
const DENY: i32 = 0;

/// What a rule can filter on.
struct Call {
    family: u8,
    protocol: u8,
    addr: [u32; 4],
    port: Option<u16>,
    /// `struct file *` of file operations, 0 otherwise.
    file: u64,
}

// Offsets for the path walk, written by the agent before load from the
// kernel's BTF (see faultd_common::offsets). Read volatile: the compiler
// must not fold the zero placeholders.
#[unsafe(no_mangle)]
static FAULTD_OFF_FILE_DENTRY: u32 = 0;
#[unsafe(no_mangle)]
static FAULTD_OFF_DENTRY_PARENT: u32 = 0;
#[unsafe(no_mangle)]
static FAULTD_OFF_DENTRY_INODE: u32 = 0;
#[unsafe(no_mangle)]
static FAULTD_OFF_INODE_INO: u32 = 0;
#[unsafe(no_mangle)]
static FAULTD_OFF_INODE_SB: u32 = 0;
#[unsafe(no_mangle)]
static FAULTD_OFF_SB_DEV: u32 = 0;

/// Deepest directory nesting the path walk climbs.
const MAX_PATH_DEPTH: u32 = 32;

#[inline(always)]
pub(crate) fn global(value: &u32) -> u64 {
    // SAFETY: reads a static; volatile so the agent's load-time value is used.
    u64::from(unsafe { core::ptr::read_volatile(value) })
}

#[inline(always)]
pub(crate) fn kread<T>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel copies safely from any kernel address and
    // fails (rather than faults) on a bad one.
    unsafe { bpf_probe_read_kernel(addr as *const T).ok() }
}

/// Whether `file` lies below the directory (`dev`, `ino`): climbs the
/// file's dentry parents (fs/dcache.c: the root is its own parent) and
/// compares each one's inode number and super block device. Any failed read
/// means "no" (fail open).
#[inline(always)]
fn under_prefix(file: u64, dev: u32, ino: u64) -> bool {
    let off_dentry = global(&FAULTD_OFF_FILE_DENTRY);
    if file == 0 || off_dentry == 0 {
        return false;
    }
    let (off_parent, off_inode) = (
        global(&FAULTD_OFF_DENTRY_PARENT),
        global(&FAULTD_OFF_DENTRY_INODE),
    );
    let (off_ino, off_sb, off_dev) = (
        global(&FAULTD_OFF_INODE_INO),
        global(&FAULTD_OFF_INODE_SB),
        global(&FAULTD_OFF_SB_DEV),
    );
    let Some(mut dentry) = kread::<u64>(file + off_dentry) else {
        return false;
    };
    let mut depth = 0;
    while depth < MAX_PATH_DEPTH {
        depth += 1;
        if dentry == 0 {
            return false;
        }
        if let Some(inode) = kread::<u64>(dentry + off_inode)
            && inode != 0
            && kread::<u64>(inode + off_ino) == Some(ino)
            && let Some(sb) = kread::<u64>(inode + off_sb)
            && kread::<u32>(sb + off_dev) == Some(dev)
        {
            return true;
        }
        let Some(parent) = kread::<u64>(dentry + off_parent) else {
            return false;
        };
        if parent == dentry {
            return false;
        }
        dentry = parent;
    }
    false
}

#[cgroup_sock_addr(connect4)]
pub fn faultd_connect4(ctx: SockAddrContext) -> i32 {
    verdict(SYS_OP_CONNECT, &call_v4(&ctx))
}

#[cgroup_sock_addr(connect6)]
pub fn faultd_connect6(ctx: SockAddrContext) -> i32 {
    verdict(SYS_OP_CONNECT, &call_v6(&ctx))
}

#[cgroup_sock_addr(bind4)]
pub fn faultd_bind4(ctx: SockAddrContext) -> i32 {
    verdict(SYS_OP_BIND, &call_v4(&ctx))
}

#[cgroup_sock_addr(bind6)]
pub fn faultd_bind6(ctx: SockAddrContext) -> i32 {
    verdict(SYS_OP_BIND, &call_v6(&ctx))
}

#[cgroup_sock_addr(sendmsg4)]
pub fn faultd_sendmsg4(ctx: SockAddrContext) -> i32 {
    verdict(SYS_OP_SENDMSG, &call_v4(&ctx))
}

#[cgroup_sock_addr(sendmsg6)]
pub fn faultd_sendmsg6(ctx: SockAddrContext) -> i32 {
    verdict(SYS_OP_SENDMSG, &call_v6(&ctx))
}

#[cgroup_sock(sock_create)]
pub fn faultd_socket(ctx: SockContext) -> i32 {
    // SAFETY: the context pointer the kernel passed in; these fields are
    // readable from sock_create (net/core/filter.c, `sock_filter_is_valid_access`).
    let (family, protocol) = unsafe { ((*ctx.sock).family, (*ctx.sock).protocol) };
    let family = match family {
        2 => FAMILY_IPV4,
        10 => FAMILY_IPV6,
        // Unix and other families: still the socket() call, but with no
        // address; only rules without address filters match.
        _ => 0,
    };
    let call = Call {
        family,
        protocol: protocol as u8,
        addr: [0; 4],
        port: None,
        file: 0,
    };
    verdict(SYS_OP_SOCKET, &call)
}

/// Each BPF LSM hook has two programs with the same decision:
///
/// - `lsm` (BPF_LSM_MAC, 5.7+), attached once for the node: it runs for
///   every task, so the cgroup filter is ours and callers outside targeted
///   cgroups pay one map lookup (plus one per targeted level). It returns 0
///   to allow or `-errno`, and must pass on a denial by an earlier BPF LSM
///   program, whose verdict the trampoline hands it as the last argument
///   (kernel/bpf/bpf_lsm.c).
/// - `lsm_cgroup` (BPF_LSM_CGROUP, 6.0+), attached like the socket programs
///   at the topmost targeted cgroups: the kernel runs it only for tasks in
///   those subtrees (kernel/bpf/cgroup.c, `__cgroup_bpf_run_lsm_current`;
///   for hooks whose first argument is a socket, the socket's cgroup,
///   `__cgroup_bpf_run_lsm_socket`), so bystanders run no faultd code. It
///   returns 1 to allow or 0 to deny, with the errno from `bpf_set_retval`
///   (`bpf_prog_run_array_cg` defaults a denial to EPERM); the verifier
///   holds it to [0, 1] (kernel/bpf/verifier.c, `check_return_code`).
///
/// The agent loads one flavour: `lsm_cgroup` where the kernel has it.
macro_rules! lsm_hook {
    (
        $node:ident, $scoped:ident, $hook:literal, $previous:literal,
        | $ctx:ident | $call:expr, $doc:literal
    ) => {
        #[doc = $doc]
        #[lsm(hook = $hook)]
        pub fn $node($ctx: LsmContext) -> i32 {
            let previous: i32 = $ctx.arg($previous);
            if previous != 0 {
                return previous;
            }
            let (op, file): (u8, u64) = $call;
            match lsm_decide(op, file) {
                0 => 0,
                errno => lsm_return(errno),
            }
        }

        #[doc = $doc]
        #[lsm_cgroup(hook = $hook)]
        pub fn $scoped($ctx: LsmContext) -> i32 {
            let _ = &$ctx;
            let (op, file): (u8, u64) = $call;
            retval_verdict(lsm_decide(op, file))
        }
    };
}

lsm_hook!(
    faultd_open,
    faultd_c_open,
    "file_open",
    1,
    // file_open(struct file *file): fail the open of that file.
    |ctx| (SYS_OP_OPEN, ctx.arg(0)),
    "`security_file_open` runs on every open path: open(2), openat(2), openat2(2), creat(2) and \
     the kernel opening files for execve (fs/namei.c, `do_open` -> `vfs_open`; fs/open.c, \
     `do_dentry_open`)."
);
lsm_hook!(
    faultd_rw,
    faultd_c_rw,
    "file_permission",
    2,
    // file_permission(struct file *file, int mask); include/linux/fs.h:
    // MAY_WRITE 0x2, MAY_READ 0x4. Op 0 (neither) is never failed.
    |ctx| {
        let mask: i32 = ctx.arg(1);
        let op = if mask & 0x2 != 0 {
            SYS_OP_WRITE
        } else if mask & 0x4 != 0 {
            SYS_OP_READ
        } else {
            0
        };
        (op, ctx.arg(0))
    },
    "`security_file_permission(file, mask)` runs before every read and write on an open file, \
     sockets and pipes included (fs/read_write.c, `rw_verify_area`)."
);
lsm_hook!(
    faultd_mkdir,
    faultd_c_mkdir,
    "inode_mkdir",
    3,
    |ctx| (SYS_OP_MKDIR, 0),
    "mkdir(2), mkdirat(2): `security_inode_mkdir(dir, dentry, mode)` (fs/namei.c, `vfs_mkdir`)."
);
lsm_hook!(
    faultd_unlink,
    faultd_c_unlink,
    "inode_unlink",
    2,
    |ctx| (SYS_OP_UNLINK, 0),
    "unlink(2), unlinkat(2) of files: `security_inode_unlink(dir, dentry)` (fs/namei.c, \
     `vfs_unlink`)."
);
lsm_hook!(
    faultd_rename,
    faultd_c_rename,
    "inode_rename",
    4,
    |ctx| (SYS_OP_RENAME, 0),
    "rename(2), renameat(2), renameat2(2): `security_inode_rename(old_dir, old, new_dir, new)` \
     (fs/namei.c, `vfs_rename`)."
);
lsm_hook!(
    faultd_exec,
    faultd_c_exec,
    "bprm_check_security",
    1,
    |ctx| (SYS_OP_EXECVE, 0),
    "execve(2), execveat(2): `security_bprm_check(bprm)` (fs/exec.c, `search_binary_handler`)."
);
lsm_hook!(
    faultd_accept,
    faultd_c_accept,
    "socket_accept",
    2,
    |ctx| (SYS_OP_ACCEPT, 0),
    "accept(2), accept4(2): `security_socket_accept(sock, newsock)` (net/socket.c, `do_accept`)."
);
lsm_hook!(
    faultd_recvmsg,
    faultd_c_recv,
    "socket_recvmsg",
    4,
    |ctx| (SYS_OP_RECVMSG, 0),
    "recv/recvfrom/recvmsg/recvmmsg: `security_socket_recvmsg(sock, msg, size, flags)` \
     (net/socket.c, `sock_recvmsg`)."
);

/// The errno a rule without address filters fails `op` with, or 0 (for
/// the LSM and kprobe programs). Op 0 is "not an operation we fail" (a
/// file_permission check that is neither read nor write).
#[inline(always)]
pub fn lsm_decide(op: u8, file: u64) -> u32 {
    if op == 0 {
        return 0;
    }
    let call = Call {
        family: 0,
        protocol: 0,
        addr: [0; 4],
        port: None,
        file,
    };
    decide(op, &call)
}

/// `-errno` in a form the verifier can bound. Recent verifiers require an
/// LSM program's return value to be provably within [-MAX_ERRNO, 0]
/// (kernel/bpf/verifier.c, `check_return_code` with
/// `bpf_lsm_get_retval_range`), and before 6.15 they track no range through
/// BPF_NEG (`check_alu_op` marks its result unknown). So: mask the errno to
/// [0, 4095], and subtract it from a zero LLVM cannot see (a volatile read of
/// a zeroed local), which compiles to a BPF_SUB the verifier bounds to
/// [-4095, 0] (`scalar_min_max_sub`). The agent only writes errnos in
/// 1..=133, so the mask never changes one.
#[inline(always)]
fn lsm_return(errno: u32) -> i32 {
    let zero = 0i64;
    // SAFETY: reads a local that was just written.
    let zero = unsafe { core::ptr::read_volatile(&zero) };
    (zero - i64::from(errno & 0xfff)) as i32
}

#[inline(always)]
fn call_v4(ctx: &SockAddrContext) -> Call {
    // SAFETY: context fields readable from every sock_addr hook
    // (`sock_addr_is_valid_access`); user_port is in network order in the
    // low 16 bits.
    let (ip, port, protocol) = unsafe {
        let sa = &*ctx.sock_addr;
        (sa.user_ip4, sa.user_port, sa.protocol)
    };
    Call {
        family: FAMILY_IPV4,
        protocol: protocol as u8,
        addr: [ip, 0, 0, 0],
        port: Some(u16::from_be(port as u16)),
        file: 0,
    }
}

#[inline(always)]
fn call_v6(ctx: &SockAddrContext) -> Call {
    // SAFETY: as in `call_v4`; user_ip6 is read a word at a time, the only
    // access size the verifier allows for it.
    let (addr, port, protocol) = unsafe {
        let sa = &*ctx.sock_addr;
        (
            [
                sa.user_ip6[0],
                sa.user_ip6[1],
                sa.user_ip6[2],
                sa.user_ip6[3],
            ],
            sa.user_port,
            sa.protocol,
        )
    };
    Call {
        family: FAMILY_IPV6,
        protocol: protocol as u8,
        addr,
        port: Some(u16::from_be(port as u16)),
        file: 0,
    }
}

#[inline(always)]
fn verdict(op: u8, call: &Call) -> i32 {
    retval_verdict(decide(op, call))
}

/// For the cgroup hooks (socket and `lsm_cgroup`): allow on 0, else deny
/// with `errno` as the call's result.
#[inline(always)]
pub fn retval_verdict(errno: u32) -> i32 {
    match errno {
        0 => ALLOW,
        errno => {
            // SAFETY: helper with a plain integer argument. A failure leaves
            // the default EPERM, still a failure the fault asked for.
            unsafe { bpf_set_retval(-(errno as i32)) };
            DENY
        }
    }
}

/// The errno to fail with if a live rule for `op` matches and wins its
/// roll, else 0. A plain integer rather than an Option: LLVM may keep an
/// Option's payload in a register it only writes on the `Some` path, which
/// the 6.1 verifier rejects as a read of an uninitialised register.
#[inline(always)]
fn decide(op: u8, call: &Call) -> u32 {
    let Some(rules) = find_rules() else {
        return 0;
    };
    let count = rules.count as usize;
    if count > MAX_RULES_PER_CGROUP {
        return 0;
    }
    // SAFETY: helper with no arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let mut failed = 0u32;
    for i in 0..MAX_RULES_PER_CGROUP {
        if i >= count {
            break;
        }
        let rule = &rules.rules[i];
        if rule.op != op || now >= rule.deadline_ns || !matches(rule, call) {
            continue;
        }
        let Some(counters) = COUNTERS.get_ptr_mut(rule.slot) else {
            continue;
        };
        // SAFETY: this CPU's value in the per-CPU array.
        let counters = unsafe { &mut *counters };
        counters.matched = counters.matched.wrapping_add(1);
        // SAFETY: helper with no arguments.
        let roll = u64::from(unsafe { bpf_get_prandom_u32() });
        if failed == 0 && roll < rule.threshold {
            counters.dropped = counters.dropped.wrapping_add(1);
            failed = rule.errno;
        }
    }
    failed
}

#[inline(always)]
fn matches(rule: &SysRule, call: &Call) -> bool {
    if rule.family != 0 && rule.family != call.family {
        return false;
    }
    if rule.protocol != PROTO_ANY && rule.protocol != call.protocol {
        return false;
    }
    if rule.has_path != 0 && !under_prefix(call.file, rule.path_dev, rule.path_ino) {
        return false;
    }
    address_matches(
        &call.addr,
        &rule.addr,
        &rule.mask,
        call.port,
        rule.has_ports,
        rule.port_lo,
        rule.port_hi,
    )
}

/// The caller's cgroup's rules, else its deepest targeted ancestor's.
#[inline(always)]
fn find_rules() -> Option<&'static SysRules> {
    // SAFETY: helper with no arguments.
    let leaf = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: helper with an integer argument.
    deepest_rules(&SYS_RULES, leaf, |level| unsafe {
        bpf_get_current_ancestor_cgroup_id(level)
    })
}
