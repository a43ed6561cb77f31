//! The VM tier of `cargo xtask test`: the integration suite on real
//! distribution kernels, booted in qemu.
//!
//! For each kernel of the pinned [`kernel::MATRIX`]:
//!
//! 1. fetch the Debian package with `apt-get download` and unpack it into
//!    `$FAULTD_CACHE/vm` (default `~/.cache/faultd/vm`), once;
//! 2. build an initramfs in Rust ([`initramfs`], [`cpio`]) holding busybox,
//!    the agent, the test executables of [`VM_TESTS`], bpftool, tc, ip,
//!    their shared libraries and the kernel's modules;
//! 3. boot it ([`qemu`]): TCG emulation, or KVM where a probe boot showed it
//!    works; init runs each executable between `FAULTD-VM: begin/end`
//!    markers on the serial console and powers off;
//! 4. read the console into a [`results::Column`] of the summary table.
//!
//! Console logs and the summary land in `target/vm-logs/`, the initramfs
//! images in `target/vm/`. [`bench`] boots the same kernels to run a
//! benchmark instead of the tests.
//!
//! Knobs (environment):
//! - `FAULTD_VM_KERNELS`: comma-separated names, e.g. `debian-6.12` or `6.12`;
//! - `FAULTD_VM_TIMEOUT`: seconds per VM, default 900: the whole suite
//!   takes about 7 minutes per kernel under emulation, and even two hung
//!   kernels (30 minutes) leave the 90-minute CI budget room for set-up and
//!   the host tiers;
//! - `FAULTD_VM_TEST_TIMEOUT`: seconds per executable inside the VM, default
//!   180 (the slowest, loss, takes ~45 s under emulation);
//! - `FAULTD_VM_ACCEL`: `kvm` or `tcg`, skipping the KVM probe;
//! - `FAULTD_VM_QUIET=1`: do not echo the consoles;
//! - `FAULTD_VM_ONLY=NAME[:FILTER]`: run only the test executable NAME of
//!   [`VM_TESTS`], and within it only the tests whose names contain FILTER
//!   (libtest's filter), to iterate on one test without the whole suite.

pub mod bench;
mod cpio;
mod host;
mod initramfs;
mod kernel;
mod qemu;
pub mod results;

use std::{
    io::BufRead as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context as _, bail};
pub use host::run as run_host;
pub use qemu::version as qemu_version;
use results::Column;

use crate::util::{cargo, target_dir};

/// Prefix of every line init prints for xtask.
pub const MARKER: &str = "FAULTD-VM:";

/// Integration test executables (tests/tests/<name>.rs) that run in the VM.
/// Explicit, so a new slow test does not silently stretch the matrix: add
/// it here or to [`HOST_ONLY`].
pub const VM_TESTS: &[&str] = &["kit_smoke", "loss", "caps", "config", "syscall", "latency"];

/// Integration test executables that run on the host only, and why.
pub const HOST_ONLY: &[(&str, &str)] = &[("stress", "too slow under emulation")];

const DEFAULT_VM_TIMEOUT_SECS: u64 = 900;
const DEFAULT_TEST_TIMEOUT_SECS: u64 = 180;

/// An integration test executable built by cargo.
#[derive(Debug, Clone)]
pub struct TestBinary {
    /// The test target's name, e.g. `loss`.
    pub name: String,
    pub path: PathBuf,
    /// libtest name filter for the VM run (`FAULTD_VM_ONLY`).
    pub filter: Option<String>,
}

/// Builds the faultd-tests integration tests and returns their executables,
/// sorted by name.
pub fn integration_tests() -> anyhow::Result<Vec<TestBinary>> {
    let mut cmd = cargo(&[
        "test",
        "-p",
        "faultd-tests",
        "--tests",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().context("starting cargo test --no-run")?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut tests = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let is_test_target = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if let (true, Some(exe), Some(name)) = (
            is_test_target,
            msg["executable"].as_str(),
            msg["target"]["name"].as_str(),
        ) {
            tests.push(TestBinary {
                filter: None,
                name: name.to_owned(),
                path: PathBuf::from(exe),
            });
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo test -p faultd-tests --no-run failed: {status}");
    }
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tests)
}

/// `target/vm-logs`, created.
pub fn log_dir() -> anyhow::Result<PathBuf> {
    let dir = target_root().join("vm-logs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn target_root() -> PathBuf {
    let debug = target_dir("dev");
    debug.parent().map_or(debug.clone(), Path::to_path_buf)
}

fn env_secs(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number of seconds")),
        Err(_) => Ok(default),
    }
}

/// The executables of [`VM_TESTS`]; warns about executables that are in
/// neither list.
fn vm_tests(all: &[TestBinary]) -> anyhow::Result<Vec<TestBinary>> {
    for test in all {
        let known = VM_TESTS.contains(&test.name.as_str())
            || HOST_ONLY.iter().any(|(n, _)| *n == test.name);
        if !known {
            eprintln!(
                "vm: WARNING: integration test `{}` runs on the host only; add it to VM_TESTS or \
                 HOST_ONLY in xtask/src/vm/mod.rs",
                test.name
            );
        }
    }
    let only = std::env::var("FAULTD_VM_ONLY").ok();
    let (only_name, only_filter) = match only.as_deref() {
        Some(o) => match o.split_once(':') {
            Some((n, f)) => (Some(n), Some(f)),
            None => (Some(o), None),
        },
        None => (None, None),
    };
    if let Some(n) = only_name
        && !VM_TESTS.contains(&n)
    {
        bail!("FAULTD_VM_ONLY={n:?} is not one of VM_TESTS {VM_TESTS:?}");
    }
    VM_TESTS
        .iter()
        .filter(|name| only_name.is_none_or(|n| n == **name))
        .map(|name| {
            all.iter()
                .find(|t| t.name == *name)
                .cloned()
                .map(|mut t| {
                    t.filter = only_filter.map(str::to_owned);
                    t
                })
                .with_context(|| format!("VM_TESTS names `{name}`, but cargo built no such test"))
        })
        .collect()
}

/// What every VM run needs: qemu and busybox present, and the kernels of the
/// matrix (or of FAULTD_VM_KERNELS) fetched and unpacked.
#[derive(Debug)]
struct Prepared {
    busybox: PathBuf,
    cache: PathBuf,
    kernels: Vec<kernel::Kernel>,
}

fn prepare() -> anyhow::Result<Prepared> {
    qemu::check_qemu()?;
    let busybox = initramfs::check_host_tools()?;
    let cache = kernel_cache();
    let kernels = kernel::fetch_all(&cache, &selected_kernels()?)?;
    Ok(Prepared {
        busybox,
        cache,
        kernels,
    })
}

fn kernel_cache() -> PathBuf {
    crate::install::cache_dir().join("vm")
}

/// The kernels of the matrix, or those FAULTD_VM_KERNELS names.
fn selected_kernels() -> anyhow::Result<Vec<kernel::KernelSpec>> {
    let Ok(filter) = std::env::var("FAULTD_VM_KERNELS") else {
        return Ok(kernel::MATRIX.to_vec());
    };
    let wanted: Vec<&str> = filter.split(',').map(str::trim).collect();
    let specs: Vec<_> = kernel::MATRIX
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
pub fn fetch_kernels() -> anyhow::Result<crate::install::Done> {
    let cache = kernel_cache();
    let specs = selected_kernels()?;
    let missing: Vec<&str> = specs
        .iter()
        .filter(|s| !kernel::is_cached(&cache, **s))
        .map(|s| s.name)
        .collect();
    let kernels = kernel::fetch_all(&cache, &specs)?;
    let names: Vec<String> = kernels
        .iter()
        .map(|k| format!("{} ({})", k.spec.name, k.release))
        .collect();
    Ok(if missing.is_empty() {
        crate::install::Done::Cached(format!(
            "{}: cached in {}",
            names.join(", "),
            cache.display()
        ))
    } else {
        crate::install::Done::Installed(format!(
            "downloaded {} into {}",
            missing.join(", "),
            cache.display()
        ))
    })
}

/// One VM run of a kernel: which image, what to add to the command line,
/// where the console log goes.
#[derive(Debug)]
struct RunSpec<'a> {
    /// Image file stem beside the kernel's name under `target/vm/`.
    image: &'a str,
    extra_cmdline: &'a str,
    log: PathBuf,
    timeout: Duration,
}

#[derive(Debug)]
struct Booted {
    accel: qemu::Accel,
    outcome: qemu::Outcome,
}

/// Builds `kernel`'s initramfs from `payload`, picks the accelerator and
/// boots it once, echoing the console unless FAULTD_VM_QUIET is set.
fn boot_kernel(
    p: &Prepared,
    kernel: &kernel::Kernel,
    payload: &initramfs::Payload,
    run: &RunSpec<'_>,
) -> anyhow::Result<Booted> {
    let name = kernel.spec.name;
    let echo = std::env::var_os("FAULTD_VM_QUIET").is_none_or(|v| v == "0");
    let log_dir = run.log.parent().context("log file without a directory")?;
    let modules = kernel::resolve_modules(kernel, kernel::MODULES)?;
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

/// Runs the VM tier: every kernel of the matrix (or of FAULTD_VM_KERNELS),
/// one after the other. The tests inside a VM measure traffic rates and
/// time; two emulated VMs on two cores would disturb each other.
pub fn run_matrix(
    tests: &[TestBinary],
    bin_dir: &Path,
    log_dir: &Path,
) -> anyhow::Result<Vec<Column>> {
    let prepared = prepare()?;
    let vm_timeout = Duration::from_secs(env_secs("FAULTD_VM_TIMEOUT", DEFAULT_VM_TIMEOUT_SECS)?);
    let test_timeout_secs = env_secs("FAULTD_VM_TEST_TIMEOUT", DEFAULT_TEST_TIMEOUT_SECS)?;
    let payload = initramfs::Payload {
        agent: bin_dir.join("faultd"),
        traffic: bin_dir.join("faultd-traffic"),
        tests: vm_tests(tests)?,
        bench: None,
        staging: target_root().join("vm/staging"),
        test_timeout_secs,
    };
    let expected: Vec<String> = payload.tests.iter().map(|t| t.name.clone()).collect();

    let mut columns = Vec::new();
    for kernel in &prepared.kernels {
        let name = kernel.spec.name;
        let log = log_dir.join(format!("{name}.log"));
        let booted = boot_kernel(
            &prepared,
            kernel,
            &payload,
            &RunSpec {
                image: "initramfs",
                extra_cmdline: "",
                log: log.clone(),
                timeout: vm_timeout,
            },
        )?;
        let outcome = booted.outcome;
        let mut column = Column::new(name, log.display().to_string());
        column.add_console(&outcome.console, &expected);
        column.elapsed_secs = outcome.elapsed.as_secs_f64();
        if outcome.timed_out {
            column.problems.push(format!(
                "VM killed after {} s (FAULTD_VM_TIMEOUT)",
                vm_timeout.as_secs()
            ));
        }
        columns.push(column);
    }
    Ok(columns)
}

/// Prints the summary table, saves it as `target/vm-logs/summary.txt`, and
/// fails if anything failed anywhere.
pub fn report(columns: &[Column], log_dir: &Path) -> anyhow::Result<()> {
    if columns.is_empty() {
        return Ok(());
    }
    let mut table = results::render(columns);
    let host_only: Vec<String> = HOST_ONLY
        .iter()
        .filter(|(name, _)| {
            let prefix = format!("{name}::");
            columns
                .iter()
                .any(|c| c.tests.keys().any(|k| k.starts_with(&prefix)))
        })
        .map(|(name, why)| format!("{name} ({why})"))
        .collect();
    if !host_only.is_empty() {
        table.push_str(&format!(
            "\n  \"-\": not run there; host only: {}\n",
            host_only.join(", ")
        ));
    }
    let path = log_dir.join("summary.txt");
    std::fs::write(&path, &table).with_context(|| format!("writing {}", path.display()))?;
    println!("\n=== integration tests: host and VM kernels ===\n{table}");
    let failed: Vec<&str> = columns
        .iter()
        .filter(|c| c.failed())
        .map(|c| c.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "integration tests failed on: {} (table in {})",
            failed.join(", "),
            path.display()
        );
    }
    Ok(())
}
