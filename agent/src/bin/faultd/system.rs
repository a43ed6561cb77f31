//! The process's footing on the node: the node lock, resource limits and
//! the shutdown signals.

use std::{fs, io::Write as _, path::Path};

use anyhow::{Context as _, bail};
use nix::fcntl::{Flock, FlockArg};
use tokio::signal::unix::SignalKind;
use tracing::{error, info, warn};

pub async fn shutdown_signal() {
    let term = tokio::signal::unix::signal(SignalKind::terminate());
    let int = tokio::signal::unix::signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: reverting faults and stopping"),
                _ = int.recv() => info!("SIGINT: reverting faults and stopping"),
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            error!(error = %e, "installing signal handlers; stop with SIGKILL only");
            std::future::pending::<()>().await;
        }
    }
}

/// One agent per node. The lock file records the holder's pid for the error
/// message; the flock, not the content, is the lock, and it dies with us.
pub fn take_node_lock(path: &Path) -> anyhow::Result<Flock<fs::File>> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, errno)) => {
            let holder = fs::read_to_string(path).unwrap_or_default();
            bail!(
                "another faultd holds {} (pid {}): {errno}; one agent runs per node",
                path.display(),
                holder.trim()
            );
        }
    };
    lock.set_len(0).context("truncating lock file")?;
    write!(&mut *lock, "{}", std::process::id()).context("writing lock file")?;
    Ok(lock)
}

/// Every attachment is a bpf link fd the agent holds, so faults need file
/// descriptors: take the whole hard limit, as the soft default (often 1024)
/// would cap the agent near that many attachments.
pub fn raise_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                warn!(error = %e, soft, hard, "raising RLIMIT_NOFILE; faults beyond the soft limit will fail to attach");
            }
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "reading RLIMIT_NOFILE"),
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK (kernel/bpf/syscall.c,
/// `bpf_map_charge_memlock`, replaced by memcg accounting in 5.11).
pub fn raise_memlock_limit() {
    let memcg_accounted = aya::util::KernelVersion::current()
        .is_ok_and(|v| v >= aya::util::KernelVersion::new(5, 11, 0));
    if memcg_accounted {
        return;
    }
    let r = nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_MEMLOCK,
        nix::sys::resource::RLIM_INFINITY,
        nix::sys::resource::RLIM_INFINITY,
    );
    if let Err(e) = r {
        warn!(error = %e, "raising RLIMIT_MEMLOCK; map creation may fail on kernels before 5.11");
    }
}
