//! Booting one kernel's VM: what every run needs (qemu, busybox, the
//! kernels fetched), the initramfs built for it, the accelerator chosen,
//! and the boot with its console recorded.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{
    initramfs::{self, Payload},
    kernel::{Kernel, KernelSpec, MATRIX, MODULES, fetch_all, is_cached, resolve_modules},
    qemu,
};
use crate::{
    install::{Done, cache_dir},
    util::target_dir,
};

/// `target/vm-logs`, created.
pub fn log_dir() -> anyhow::Result<PathBuf> {
    let dir = target_root().join("vm-logs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// `target/`, where the profiles' directories are.
pub fn target_root() -> PathBuf {
    let debug = target_dir("dev");
    debug.parent().map_or(debug.clone(), Path::to_path_buf)
}

/// The seconds environment variable `name` sets, else `default`.
pub fn env_secs(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number of seconds")),
        Err(_) => Ok(default),
    }
}

/// What every VM run needs: qemu and busybox present, and the kernels of the
/// matrix (or of FAULTD_VM_KERNELS) fetched and unpacked.
#[derive(Debug)]
pub struct Prepared {
    busybox: PathBuf,
    cache: PathBuf,
    pub kernels: Vec<Kernel>,
}

pub fn prepare() -> anyhow::Result<Prepared> {
    qemu::check_qemu()?;
    let busybox = initramfs::check_host_tools()?;
    let cache = kernel_cache();
    let kernels = fetch_all(&cache, &selected_kernels()?)?;
    Ok(Prepared {
        busybox,
        cache,
        kernels,
    })
}

fn kernel_cache() -> PathBuf {
    cache_dir().join("vm")
}

/// The kernels of the matrix, or those FAULTD_VM_KERNELS names.
fn selected_kernels() -> anyhow::Result<Vec<KernelSpec>> {
    let Ok(filter) = std::env::var("FAULTD_VM_KERNELS") else {
        return Ok(MATRIX.to_vec());
    };
    let wanted: Vec<&str> = filter.split(',').map(str::trim).collect();
    let specs: Vec<_> = MATRIX
        .iter()
        .copied()
        .filter(|k| {
            wanted
                .iter()
                .any(|w| k.name == *w || k.name.rsplit_once('-').map(|(_, v)| v) == Some(w))
        })
        .collect();
    if specs.is_empty() {
        bail!("FAULTD_VM_KERNELS={filter:?} matches no kernel of the matrix");
    }
    Ok(specs)
}

/// The set-up step for the VM tier: downloads and unpacks the kernels the
/// cache lacks.
pub fn fetch_kernels() -> anyhow::Result<Done> {
    let cache = kernel_cache();
    let specs = selected_kernels()?;
    let missing: Vec<&str> = specs
        .iter()
        .filter(|s| !is_cached(&cache, **s))
        .map(|s| s.name)
        .collect();
    let kernels = fetch_all(&cache, &specs)?;
    let names: Vec<String> = kernels
        .iter()
        .map(|k| format!("{} ({})", k.spec.name, k.release))
        .collect();
    Ok(if missing.is_empty() {
        Done::Cached(format!(
            "{}: cached in {}",
            names.join(", "),
            cache.display()
        ))
    } else {
        Done::Installed(format!(
            "downloaded {} into {}",
            missing.join(", "),
            cache.display()
        ))
    })
}

/// One VM run of a kernel: which image, what to add to the command line,
/// where the console log goes.
#[derive(Debug)]
pub struct RunSpec<'a> {
    /// Image file stem beside the kernel's name under `target/vm/`.
    pub image: &'a str,
    pub extra_cmdline: &'a str,
    pub log: PathBuf,
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct Booted {
    pub accel: qemu::Accel,
    pub outcome: qemu::Outcome,
}

/// Builds `kernel`'s initramfs from `payload`, picks the accelerator and
/// boots it once, echoing the console unless FAULTD_VM_QUIET is set.
pub fn boot_kernel(
    p: &Prepared,
    kernel: &Kernel,
    payload: &Payload,
    run: &RunSpec<'_>,
) -> anyhow::Result<Booted> {
    let name = kernel.spec.name;
    let echo = std::env::var_os("FAULTD_VM_QUIET").is_none_or(|v| v == "0");
    let log_dir = run.log.parent().context("log file without a directory")?;
    let modules = resolve_modules(kernel, MODULES)?;
    let initrd = target_root()
        .join("vm")
        .join(format!("{name}.{}.cpio", run.image));
    initramfs::build(&initrd, payload, kernel, &modules, &p.busybox)?;
    let accel = qemu::choose_accel(
        &p.cache.join(format!("kvm-verdict-{}", kernel.package)),
        &kernel.vmlinuz,
        &initrd,
        log_dir,
    )?;
    eprintln!(
        "vm: {name}: booting {} ({}, {} modules, {} MB initramfs) with {}",
        kernel.release,
        kernel.package,
        modules.len(),
        std::fs::metadata(&initrd).map_or(0, |m| m.len() >> 20),
        accel.name()
    );
    let prefix = format!("[{name}] ");
    let outcome = qemu::boot(&qemu::Boot {
        vmlinuz: &kernel.vmlinuz,
        initrd: &initrd,
        extra_cmdline: run.extra_cmdline,
        accel,
        timeout: run.timeout,
        log: &run.log,
        echo: echo.then_some(prefix.as_str()),
        stop_at: None,
    })?;
    if outcome.timed_out {
        let tail: Vec<&str> = outcome.console.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        eprintln!(
            "vm: {name}: killed qemu after {:?}; last console lines:\n{}",
            run.timeout,
            tail.join("\n")
        );
    }
    eprintln!(
        "vm: {name}: finished in {:.0} s (qemu {})",
        outcome.elapsed.as_secs_f64(),
        outcome.exit
    );
    Ok(Booted { accel, outcome })
}
