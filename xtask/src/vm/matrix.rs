//! The VM tier of the tests: the integration executables on every kernel
//! of the matrix, one VM after the other, and the summary table of all
//! tiers.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, bail};

use super::{
    boot::{RunSpec, boot_kernel, env_secs, prepare, target_root},
    console::MARKER,
    initramfs::Payload,
    results::{self, Column},
    suite::{HOST_ONLY, TestBinary, vm_tests},
};

const DEFAULT_VM_TIMEOUT_SECS: u64 = 900;
/// A hang guard, not a speed target: the slowest executable, latency on
/// Debian 6.12 (ingress tests included), took 166 s under emulation on an
/// idle two-core machine and passed 180 s on a busy one.
const DEFAULT_TEST_TIMEOUT_SECS: u64 = 360;

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
    let payload = Payload {
        agent: bin_dir.join("faultd"),
        traffic: bin_dir.join("faultd-traffic"),
        tests: vm_tests(tests)?,
        bench: None,
        lab: Some((bin_dir.join("faultd-coordinator"), bin_dir.join("faultctl"))),
        staging: target_root().join("vm/staging"),
        test_timeout_secs,
    };
    let expected: Vec<String> = payload.tests.iter().map(|t| t.name.clone()).collect();

    let mut columns = Vec::new();
    for kernel in &prepared.kernels {
        let name = kernel.spec.name;
        let log = log_dir.join(format!("{name}.log"));
        let boot = || {
            boot_kernel(
                &prepared,
                kernel,
                &payload,
                &RunSpec {
                    image: "initramfs",
                    extra_cmdline: "",
                    log: log.clone(),
                    timeout: vm_timeout,
                },
            )
        };
        let mut outcome = boot()?.outcome;
        if let Some(why) = died_before_init(&outcome.console) {
            // Nothing of faultd ran: one more boot is fair, and the first
            // console is kept next to the second.
            let kept = log_dir.join(format!("{name}.died-before-init.log"));
            let _ = std::fs::rename(&log, &kept);
            eprintln!(
                "vm: {name}: the kernel died before init ({why}); console kept in {}; booting \
                 it again",
                kept.display()
            );
            outcome = boot()?.outcome;
        }
        for (file, contents) in super::console::artifacts(&outcome.console) {
            let path = log_dir.join(format!("{name}-{file}"));
            match contents {
                Ok(bytes) => {
                    std::fs::write(&path, bytes)
                        .with_context(|| format!("writing {}", path.display()))?;
                    println!("vm: {name}: saved {}", path.display());
                }
                Err(e) => eprintln!("vm: {name}: artifact {file} damaged on the console: {e}"),
            }
        }
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

/// Why the kernel died before init printed its first marker (its first
/// oops or panic line), or None when init ran. Under TCG emulation a
/// Debian 6.12 kernel has oopsed this way at 2.5 s into boot ("Oops:
/// int3" in sched_clock_cpu, while the kernel patches its own text), with
/// no faultd code loaded yet.
fn died_before_init(console: &str) -> Option<String> {
    let init_ran = console.lines().any(|l| {
        l.find(MARKER)
            .is_some_and(|at| l[at + MARKER.len()..].trim().starts_with("init "))
    });
    if init_ran {
        return None;
    }
    let why = console
        .lines()
        .find(|l| l.contains("Oops") || l.contains("Kernel panic") || l.contains("BUG:"))
        .map_or_else(|| "no init marker".to_owned(), |l| l.trim().to_owned());
    Some(why)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_that_dies_before_init_is_told_apart() {
        let crashed = "SeaBIOS\n[    2.47] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n[    2.48] RIP: sched_clock_cpu";
        assert_eq!(
            died_before_init(crashed).as_deref(),
            Some("[    2.47] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI")
        );
        assert_eq!(died_before_init("").as_deref(), Some("no init marker"));
        // Once init ran, a later crash is the tests' business: no reboot.
        let ran = "[    3.1] FAULTD-VM: init 6.12.117\nFAULTD-VM: begin loss\nOops: something";
        assert_eq!(died_before_init(ran), None);
    }
}
