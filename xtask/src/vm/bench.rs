//! Benchmarks on the VM tier's kernels, for what the host's kernel lacks
//! (BPF LSM; later netem for the latency comparison).
//!
//! The same kernels, initramfs builder and qemu boot as the tests, with a
//! release build and `faultd-vmbench` instead of the test executables:
//!
//! 1. [`run`] builds a bench image per kernel (`target/vm/<kernel>.bench.cpio`)
//!    and boots it with `faultd.bench=<name> faultd.bench.args=<a,b,..>`;
//! 2. init runs `faultd-vmbench --out FILE <name> <args>` and prints FILE
//!    between `FAULTD-VM: result-begin <name>` and `result-end <name>`;
//! 3. [`run`] returns each kernel's JSON with how it was run, and the
//!    caller (e.g. `bench::syscall_vm`) turns them into a report.
//!
//! A new benchmark is a subcommand of `faultd-vmbench` and a report module
//! calling [`run`]; nothing here changes.
//!
//! Knobs: `FAULTD_VM_KERNELS`, `FAULTD_VM_ACCEL`, `FAULTD_VM_QUIET` as for
//! the tests; `FAULTD_VM_BENCH_TIMEOUT`, seconds per VM (default 3600).

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

use super::{
    boot::{RunSpec, boot_kernel, env_secs, log_dir, prepare, target_root},
    console::{MARKER, RESULT_BEGIN, RESULT_END},
    initramfs::Payload,
};
use crate::util::target_dir;

const DEFAULT_BENCH_TIMEOUT_SECS: u64 = 3_600;

/// One kernel's run of a benchmark.
#[derive(Debug)]
pub struct BenchRun {
    /// The matrix name, e.g. `debian-6.12`.
    pub kernel: String,
    /// The Debian package booted.
    pub package: String,
    /// `uname -r` of the guest.
    pub release: String,
    /// `kvm` or `tcg`.
    pub accel: &'static str,
    pub elapsed_secs: f64,
    /// The console log.
    pub log: PathBuf,
    /// What `faultd-vmbench` wrote.
    pub result: Value,
}

/// One kernel's run with its result read as the benchmark's own type.
#[derive(Debug)]
pub struct KernelResult<G> {
    pub run: BenchRun,
    /// The fields of the result that the report uses.
    pub guest: G,
}

/// [`run`], with each kernel's result read as the benchmark's own result
/// type `G` (the fields its report uses).
pub fn run_as<G: serde::de::DeserializeOwned>(
    name: &str,
    args: &[String],
) -> anyhow::Result<Vec<KernelResult<G>>> {
    run(name, args)?
        .into_iter()
        .map(|run| {
            let guest = serde_json::from_value(run.result.clone())
                .with_context(|| format!("{}: unexpected result JSON", run.kernel))?;
            Ok(KernelResult { run, guest })
        })
        .collect()
}

/// Runs benchmark `name` of `faultd-vmbench` with `args` on every kernel of
/// the matrix (or of FAULTD_VM_KERNELS), one VM after the other, from the
/// release build (`cargo xtask build --release` first). Fails on the first
/// kernel whose run produced no result.
pub fn run(name: &str, args: &[String]) -> anyhow::Result<Vec<BenchRun>> {
    for arg in args {
        ensure!(
            !arg.is_empty() && !arg.contains([' ', ',', '"', '\'']),
            "benchmark argument {arg:?}: the kernel command line carries them \
             comma-separated, so no spaces, commas or quotes"
        );
    }
    let bin_dir = target_dir("release");
    let payload = Payload {
        agent: bin_dir.join("faultd"),
        traffic: bin_dir.join("faultd-traffic"),
        tests: Vec::new(),
        bench: Some(bin_dir.join("faultd-vmbench")),
        lab: None,
        staging: target_root().join("vm/staging-bench"),
        test_timeout_secs: 0,
    };
    for bin in [&payload.agent, &payload.traffic]
        .into_iter()
        .chain(&payload.bench)
    {
        ensure!(bin.is_file(), "{} is missing", bin.display());
    }
    let prepared = prepare()?;
    let timeout = Duration::from_secs(env_secs(
        "FAULTD_VM_BENCH_TIMEOUT",
        DEFAULT_BENCH_TIMEOUT_SECS,
    )?);
    let mut cmdline = format!("faultd.bench={name}");
    if !args.is_empty() {
        cmdline.push_str(&format!(" faultd.bench.args={}", args.join(",")));
    }
    let logs = log_dir()?;
    let mut runs = Vec::new();
    for kernel in &prepared.kernels {
        let log = logs.join(format!("{}.bench-{name}.log", kernel.spec.name));
        let booted = boot_kernel(
            &prepared,
            kernel,
            &payload,
            &RunSpec {
                image: "bench",
                extra_cmdline: &cmdline,
                log: log.clone(),
                timeout,
            },
        )?;
        let result = result_of(&booted.outcome.console, name).with_context(|| {
            format!(
                "{}: benchmark {name}{} (console in {})",
                kernel.spec.name,
                if booted.outcome.timed_out {
                    format!(", VM killed after {} s", timeout.as_secs())
                } else {
                    String::new()
                },
                log.display()
            )
        })?;
        runs.push(BenchRun {
            kernel: kernel.spec.name.to_owned(),
            package: kernel.package.clone(),
            release: kernel.release.clone(),
            accel: booted.accel.name(),
            elapsed_secs: booted.outcome.elapsed.as_secs_f64(),
            log,
            result,
        });
    }
    Ok(runs)
}

/// The JSON between the result markers of benchmark `name`, after checking
/// that `faultd-vmbench` exited 0.
fn result_of(console: &str, name: &str) -> anyhow::Result<Value> {
    let marker = |line: &str| -> Option<String> {
        let at = line.find(MARKER)?;
        Some(line[at + MARKER.len()..].trim().to_owned())
    };
    let end = format!("end bench-{name} rc=");
    let rc = console
        .lines()
        .filter_map(marker)
        .find_map(|m| m.strip_prefix(&end).map(str::to_owned))
        .context("faultd-vmbench never finished (no end marker)")?;
    if rc != "0" {
        bail!("faultd-vmbench exited with status {rc}");
    }
    let (begin, finish) = (
        format!("{RESULT_BEGIN} {name}"),
        format!("{RESULT_END} {name}"),
    );
    let mut inside = false;
    let mut json = String::new();
    for line in console.lines() {
        match marker(line) {
            Some(m) if m == begin => inside = true,
            Some(m) if m == finish => {
                return serde_json::from_str(&json).context("parsing the result JSON");
            }
            _ if inside => {
                json.push_str(line);
                json.push('\n');
            }
            _ => {}
        }
    }
    bail!("no complete result between the {RESULT_BEGIN}/{RESULT_END} markers")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_result_between_markers() {
        let console = "FAULTD-VM: begin bench-syscall\n\
                       vmbench [ 1.0s] progress\n\
                       FAULTD-VM: end bench-syscall rc=0\n\
                       FAULTD-VM: result-begin syscall\n\
                       {\"a\":\n 1}\n\
                       FAULTD-VM: result-end syscall\n\
                       FAULTD-VM: done\n";
        assert_eq!(
            result_of(console, "syscall").expect("result")["a"],
            Value::from(1)
        );
        let failed = console.replace("rc=0", "rc=101");
        assert!(
            result_of(&failed, "syscall")
                .expect_err("rc")
                .to_string()
                .contains("101")
        );
        let cut = "FAULTD-VM: end bench-syscall rc=0\nFAULTD-VM: result-begin syscall\n{";
        assert!(result_of(cut, "syscall").is_err());
    }
}
