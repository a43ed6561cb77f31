//! Syscall faults for kernels with neither the cgroup socket hooks' custom
//! errno nor BPF LSM: a kprobe on the syscall's entry point
//! (`__x64_sys_openat`, ...) that, for a targeted caller, makes the syscall
//! return `-errno` without running (`bpf_override_return`,
//! kernel/trace/bpf_trace.c; it needs CONFIG_BPF_KPROBE_OVERRIDE and a
//! function on the error-injection list, which every syscall is through
//! `ALLOW_ERROR_INJECTION` in the syscall wrappers,
//! arch/x86/include/asm/syscall_wrapper.h).
//!
//! Kprobes run for every task, like node-wide LSM programs: the cgroup
//! filter is ours (the same rules and ancestor walk), and the agent attaches
//! them only while a fault needs them. They take no address or path filter:
//! the arguments are user memory the program would have to copy and parse
//! before the kernel itself validates them.

use aya_ebpf::{helpers::generated::bpf_override_return, macros::kprobe, programs::ProbeContext};
use faultd_common::{
    SYS_OP_ACCEPT, SYS_OP_BIND, SYS_OP_CONNECT, SYS_OP_EXECVE, SYS_OP_MKDIR, SYS_OP_OPEN,
    SYS_OP_READ, SYS_OP_RECVMSG, SYS_OP_RENAME, SYS_OP_SENDMSG, SYS_OP_SOCKET, SYS_OP_UNLINK,
    SYS_OP_WRITE,
};

use crate::sys::lsm_decide;

/// 1 in the object the agent attaches. The agent also loads these programs
/// with 0, where the override call is dead code the verifier never visits
/// (a frozen read-only global is a known constant to it,
/// kernel/bpf/verifier.c, `bpf_map_direct_read`), to learn whether
/// everything but the override helper verifies on a kernel without it.
#[unsafe(no_mangle)]
static FAULTD_KPROBE_OVERRIDE: u32 = 0;

#[inline(always)]
fn fail_entry(ctx: &ProbeContext, op: u8) -> u32 {
    let errno = lsm_decide(op, 0);
    // SAFETY: reads a static; volatile so the load-time value is used.
    if errno == 0 || unsafe { core::ptr::read_volatile(&FAULTD_KPROBE_OVERRIDE) } == 0 {
        return 0;
    }
    // SAFETY: the probe's own register set. The kernel accepts the call only
    // on functions on the error-injection list, checked at attach
    // (kernel/trace/trace_kprobe.c, `trace_kprobe_error_injectable`).
    unsafe { bpf_override_return(ctx.regs, (-i64::from(errno)) as u64) };
    0
}

macro_rules! kprobe_op {
    ($name:ident, $op:expr) => {
        #[kprobe]
        pub fn $name(ctx: ProbeContext) -> u32 {
            fail_entry(&ctx, $op)
        }
    };
}

kprobe_op!(faultd_k_open, SYS_OP_OPEN);
kprobe_op!(faultd_k_read, SYS_OP_READ);
kprobe_op!(faultd_k_write, SYS_OP_WRITE);
kprobe_op!(faultd_k_conn, SYS_OP_CONNECT);
kprobe_op!(faultd_k_bind, SYS_OP_BIND);
kprobe_op!(faultd_k_send, SYS_OP_SENDMSG);
kprobe_op!(faultd_k_socket, SYS_OP_SOCKET);
kprobe_op!(faultd_k_mkdir, SYS_OP_MKDIR);
kprobe_op!(faultd_k_unlink, SYS_OP_UNLINK);
kprobe_op!(faultd_k_rename, SYS_OP_RENAME);
kprobe_op!(faultd_k_exec, SYS_OP_EXECVE);
kprobe_op!(faultd_k_accept, SYS_OP_ACCEPT);
kprobe_op!(faultd_k_recv, SYS_OP_RECVMSG);
