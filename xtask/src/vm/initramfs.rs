//! The initramfs each VM boots: busybox, the agent, the traffic helper, the
//! test executables, bpftool, tc and ip, every shared library they load, the
//! kernel's modules and an init script that runs the tests (or, with
//! `faultd.bench=NAME` on the kernel command line, one benchmark) and powers
//! off.
//!
//! Layout inside the VM:
//!
//! ```text
//! /init                       the script below
//! /bin/busybox + applets      userland for init
//! /bin/faultd, /bin/faultd-traffic
//! /bin/faultd-coordinator, /bin/faultctl   the lab's coordinator and CLI (test images)
//! /usr/bin/prometheus         Debian's Prometheus, for the drill's stop condition
//! /usr/share/fonts/...        the face faultctl's report plots are drawn with
//! /bin/faultd-vmbench         benchmarks (bench images only)
//! /tests/<name>               integration test executables
//! /usr/sbin/{bpftool,tc,ip}   the real tools (busybox's tc/ip are toys)
//! /lib/..., /lib64/...        shared libraries at the paths ldd reports
//! /lib/modules/<name>.ko      decompressed modules, in load order
//! /boot/config-<release>      the kernel's build config
//! ```
//!
//! Rust binaries are copied without DWARF (`objcopy --strip-debug`): that
//! cuts the archive from ~400 MB to ~60 MB, and backtraces still name
//! functions from the symbol table.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    io::BufWriter,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::{
    console::{MARKER, RESULT_BEGIN, RESULT_END},
    cpio::CpioWriter,
    kernel::{Kernel, Module},
    suite::TestBinary,
};

/// Where Debian's tc looks for netem distribution tables.
const TC_LIB: &str = "/usr/lib/x86_64-linux-gnu/tc";

/// Host tools the tests and the agent run, by their path on Debian.
const TOOLS: &[&str] = &["/usr/sbin/bpftool", "/usr/sbin/tc", "/usr/sbin/ip"];

/// Host programs and data the lab tests use when present (test images
/// only): Prometheus for the drill's stop condition, and the font
/// faultctl's report plots use. A test that needs a missing one skips,
/// saying so.
const LAB_FILES: &[&str] = &[
    "/usr/bin/prometheus",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
];

/// Packets per statistical test in the VM: emulation is ~20x slower than the
/// host, and 5000 packets still separate a 30% loss from 25%.
const VM_TEST_PACKETS: &str = "5000";

/// What goes into every kernel's initramfs.
#[derive(Debug)]
pub struct Payload {
    pub agent: PathBuf,
    pub traffic: PathBuf,
    pub tests: Vec<TestBinary>,
    /// `faultd-vmbench`, for the benchmark images.
    pub bench: Option<PathBuf>,
    /// `faultd-coordinator` and `faultctl`, for the lab tests (test images).
    pub lab: Option<(PathBuf, PathBuf)>,
    /// Where stripped copies of the Rust binaries are kept.
    pub staging: PathBuf,
    /// Seconds one test executable may run before init kills it.
    pub test_timeout_secs: u64,
}

/// Finds busybox and the tools, failing with a hint when setup has not run.
pub fn check_host_tools() -> anyhow::Result<PathBuf> {
    let busybox = ["/usr/bin/busybox", "/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("busybox not found; run `cargo xtask setup` (installs busybox-static)")?;
    if !is_static(&busybox)? {
        bail!(
            "{} is dynamically linked; install busybox-static (`cargo xtask setup`)",
            busybox.display()
        );
    }
    for tool in TOOLS {
        if !Path::new(tool).is_file() {
            bail!("{tool} not found; run `cargo xtask setup` (installs bpftool and iproute2)");
        }
    }
    Ok(busybox)
}

/// Writes the initramfs for `kernel` to `out` (an uncompressed newc archive:
/// every kernel reads that, and the host copies it to the guest faster than
/// the guest could decompress it under emulation).
pub fn build(
    out: &Path,
    payload: &Payload,
    kernel: &Kernel,
    modules: &[Module],
    busybox: &Path,
) -> anyhow::Result<()> {
    fs::create_dir_all(&payload.staging)?;
    let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut cpio = CpioWriter::new(BufWriter::new(file));

    for dir in [
        "dev", "proc", "sys", "tmp", "run", "root", "etc", "tests", "usr/bin", "sbin", "boot",
    ] {
        cpio.dir(dir)?;
    }
    // The kernel opens /dev/console for init before anything is mounted.
    cpio.char_device("dev/console", 0o600, 5, 1)?;
    cpio.char_device("dev/null", 0o666, 1, 3)?;
    // Some tools look up users; root is all there is.
    cpio.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    cpio.file("etc/group", 0o644, b"root:x:0:\n")?;

    cpio.file_from("bin/busybox", 0o755, busybox)?;
    for applet in busybox_applets(busybox)? {
        let path = format!("bin/{applet}");
        if !cpio.contains(&path) {
            cpio.symlink(&path, "busybox")?;
        }
    }

    let mut dynamic: Vec<PathBuf> = Vec::new();
    let strip = |src: &Path, name: &str| -> anyhow::Result<PathBuf> {
        let dst = payload.staging.join(name);
        strip_debug(src, &dst)?;
        Ok(dst)
    };
    cpio.file_from("bin/faultd", 0o755, &strip(&payload.agent, "faultd")?)?;
    cpio.file_from(
        "bin/faultd-traffic",
        0o755,
        &strip(&payload.traffic, "faultd-traffic")?,
    )?;
    dynamic.extend([payload.agent.clone(), payload.traffic.clone()]);
    if let Some(bench) = &payload.bench {
        cpio.file_from(
            "bin/faultd-vmbench",
            0o755,
            &strip(bench, "faultd-vmbench")?,
        )?;
        dynamic.push(bench.clone());
    }
    if let Some((coordinator, faultctl)) = &payload.lab {
        for (src, name) in [(coordinator, "faultd-coordinator"), (faultctl, "faultctl")] {
            cpio.file_from(&format!("bin/{name}"), 0o755, &strip(src, name)?)?;
            dynamic.push(src.clone());
        }
        for file in LAB_FILES.iter().map(Path::new).filter(|f| f.is_file()) {
            let name = file.to_string_lossy().trim_start_matches('/').to_owned();
            cpio.file_from(&name, 0o755, file)?;
            if file.starts_with("/usr/bin") {
                dynamic.push(file.to_owned());
            }
        }
    }
    for test in &payload.tests {
        let stripped = strip(&test.path, &format!("test-{}", test.name))?;
        cpio.file_from(&format!("tests/{}", test.name), 0o755, &stripped)?;
        dynamic.push(test.path.clone());
    }
    for tool in TOOLS {
        cpio.file_from(tool, 0o755, Path::new(tool))?;
        dynamic.push(PathBuf::from(tool));
    }
    // netem's delay distributions: tc reads them from its library directory
    // when asked for `distribution normal` (iproute2 tc/q_netem.c,
    // `get_distribution`), for the latency benchmark's comparison.
    if let Ok(entries) = fs::read_dir(TC_LIB) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "dist") {
                let name = path.to_string_lossy().trim_start_matches('/').to_owned();
                cpio.file_from(&name, 0o644, &path)?;
            }
        }
    }
    for lib in shared_libraries(&dynamic)? {
        let name = lib.to_string_lossy().into_owned();
        cpio.file_from(&name, 0o755, &lib)?;
    }

    for module in modules {
        cpio.file_from(
            &format!("lib/modules/{}.ko", module.name),
            0o644,
            &module.path,
        )?;
    }

    // The kernel's build config, where bpftool and the tests look for it:
    // some features (CONFIG_BPF_KPROBE_OVERRIDE) are only observable there.
    let config = kernel
        .vmlinuz
        .with_file_name(format!("config-{}", kernel.release));
    if config.is_file() {
        cpio.file_from(&format!("boot/config-{}", kernel.release), 0o644, &config)?;
    }

    let script = init_script(payload, kernel, modules);
    cpio.file("init", 0o755, script.as_bytes())?;
    cpio.finish()?;
    Ok(())
}

/// The init script: mount what the agent and tests expect, load modules,
/// run each test executable with markers around it, power off. The
/// `faultd.probe` kernel argument stops after the first marker (the KVM
/// probe); `faultd.bench=NAME faultd.bench.args=A,B,...` runs
/// `faultd-vmbench NAME A B ...` instead of the tests and prints its JSON
/// result between `result-begin` and `result-end` markers (see `vm::bench`).
fn init_script(payload: &Payload, kernel: &Kernel, modules: &[Module]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"#!/bin/sh
# Generated by xtask/src/vm/initramfs.rs.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TMPDIR=/tmp
mount -t devtmpfs devtmpfs /dev
exec </dev/null >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "{MARKER} init $(uname -r)"
if grep -q faultd.probe /proc/cmdline; then
    poweroff -f
fi
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t securityfs securityfs /sys/kernel/security
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
# Every controller for the test cgroups (the host's root has them enabled too).
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
    echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control
done
ip link set lo up
echo "{MARKER} lsm $(cat /sys/kernel/security/lsm)"
"#
    );
    for module in modules {
        let _ = writeln!(
            s,
            "insmod /lib/modules/{name}.ko || echo \"{MARKER} insmod-failed {name}\"",
            name = module.name
        );
    }
    let _ = write!(
        s,
        r#"export FAULTD_BIN=/bin/faultd FAULTD_TRAFFIC_BIN=/bin/faultd-traffic
export FAULTD_COORDINATOR_BIN=/bin/faultd-coordinator FAULTCTL_BIN=/bin/faultctl
export BPFTOOL=/usr/sbin/bpftool RUST_BACKTRACE=1
export FAULTD_TEST_PACKETS={VM_TEST_PACKETS}
export FAULTD_EXPECT_FEATURES="{features}"
export FAULTD_VM_KERNEL="{kernel}"
"#,
        features = kernel.spec.expect_features,
        kernel = kernel.spec.name,
    );
    let _ = write!(
        s,
        r#"bench=$(sed -n 's/.*faultd\.bench=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "$bench" ]; then
    args=$(sed -n 's/.*faultd\.bench\.args=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
    echo "{MARKER} begin bench-$bench"
    /bin/faultd-vmbench --out /tmp/bench-result.json $bench $args
    echo "{MARKER} end bench-$bench rc=$?"
    if [ -f /tmp/bench-result.json ]; then
        echo "{MARKER} {RESULT_BEGIN} $bench"
        cat /tmp/bench-result.json
        echo "{MARKER} {RESULT_END} $bench"
    fi
    echo "{MARKER} done"
    sync
    poweroff -f
fi
"#
    );
    for test in &payload.tests {
        let _ = write!(
            s,
            r#"echo "{MARKER} begin {name}"
timeout {timeout} /tests/{name} --test-threads=1 --nocapture{filter}
rc=$?
if [ $rc -eq 143 ]; then
    echo "{MARKER} timeout {name} after {timeout} s"
    # SIGTERM skipped the test's drop guards: end the agents and traffic
    # helpers it started, or they hold the node lock for the next binary.
    killall -9 faultd faultd-traffic 2>/dev/null
fi
echo "{MARKER} end {name} rc=$rc"
"#,
            name = test.name,
            timeout = payload.test_timeout_secs,
            filter = test
                .filter
                .as_deref()
                .map(|f| format!(" '{}'", f.replace('\'', "")))
                .unwrap_or_default(),
        );
    }
    let _ = write!(
        s,
        r#"echo "{MARKER} done"
sync
poweroff -f
"#
    );
    s
}

fn busybox_applets(busybox: &Path) -> anyhow::Result<Vec<String>> {
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| format!("running {} --list", busybox.display()))?;
    if !out.status.success() {
        bail!("{} --list failed", busybox.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .map(str::to_owned)
        .collect())
}

fn strip_debug(src: &Path, dst: &Path) -> anyhow::Result<()> {
    let status = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(src)
        .arg(dst)
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        other => {
            eprintln!(
                "vm: objcopy --strip-debug {} failed ({other:?}); copying it whole",
                src.display()
            );
            fs::copy(src, dst).with_context(|| format!("copying {}", src.display()))?;
            Ok(())
        }
    }
}

fn is_static(binary: &Path) -> anyhow::Result<bool> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    Ok(!out.status.success()
        || text.contains("not a dynamic executable")
        || text.contains("statically linked"))
}

/// Every library `ldd` lists for `binaries`, and the dynamic loader, by the
/// path the host's loader resolved (the guest loader finds them there: the
/// init script does not rely on an ld.so.cache).
fn shared_libraries(binaries: &[PathBuf]) -> anyhow::Result<BTreeSet<PathBuf>> {
    let mut libs = BTreeSet::new();
    for binary in binaries {
        let out = Command::new("ldd")
            .arg(binary)
            .output()
            .with_context(|| format!("running ldd {}", binary.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            if text.contains("not a dynamic executable") {
                continue;
            }
            bail!(
                "ldd {} failed: {}",
                binary.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for line in text.lines() {
            match parse_ldd_line(line) {
                LddLine::Path(p) => {
                    libs.insert(p);
                }
                LddLine::NotFound(name) => {
                    bail!("{} needs {name}, which ldd cannot find", binary.display())
                }
                LddLine::Virtual => {}
            }
        }
    }
    Ok(libs)
}

#[derive(Debug, PartialEq, Eq)]
enum LddLine {
    Path(PathBuf),
    NotFound(String),
    /// The vDSO, or a line without a path.
    Virtual,
}

/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`,
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`, `linux-vdso.so.1 (0x...)` or
/// `libfoo.so => not found`.
fn parse_ldd_line(line: &str) -> LddLine {
    let line = line.trim();
    let target = match line.split_once(" => ") {
        Some((name, rest)) => {
            if rest.trim() == "not found" {
                return LddLine::NotFound(name.to_owned());
            }
            rest
        }
        None => line,
    };
    match target.split_whitespace().next() {
        Some(path) if path.starts_with('/') => LddLine::Path(PathBuf::from(path)),
        _ => LddLine::Virtual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldd_lines() {
        assert_eq!(
            parse_ldd_line("\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)"),
            LddLine::Path("/lib/x86_64-linux-gnu/libc.so.6".into())
        );
        assert_eq!(
            parse_ldd_line("\t/lib64/ld-linux-x86-64.so.2 (0x00007f8b1c8db000)"),
            LddLine::Path("/lib64/ld-linux-x86-64.so.2".into())
        );
        assert_eq!(
            parse_ldd_line("\tlinux-vdso.so.1 (0x00007f)"),
            LddLine::Virtual
        );
        assert_eq!(
            parse_ldd_line("\tlibbpf.so.1 => not found"),
            LddLine::NotFound("libbpf.so.1".into())
        );
    }
}
