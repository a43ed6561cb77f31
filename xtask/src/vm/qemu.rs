//! Booting a kernel + initramfs in qemu with a hard timeout, and deciding
//! whether KVM can be used on this machine.
//!
//! The serial console (qemu's stdout under `-nographic`) is the only channel
//! out of the VM: it is written to a log file as it arrives and optionally
//! echoed with a prefix, so a hung VM still leaves everything it printed.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::console::MARKER;

/// The kernel command line. `lsm=` replaces the compiled-in `CONFIG_LSM`
/// order, so `bpf` is active whatever the distribution chose (Debian lists it,
/// others do not); `panic=-1` with `-no-reboot` turns a panic into a qemu
/// exit instead of a hang.
pub const CMDLINE: &str = "console=ttyS0 panic=-1 quiet lsm=lockdown,capability,landlock,yama,bpf";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn args(self) -> [&'static str; 4] {
        match self {
            Self::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Self::Tcg => ["-accel", "tcg", "-cpu", "max"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

/// One VM boot.
#[derive(Debug)]
pub struct Boot<'a> {
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    pub extra_cmdline: &'a str,
    pub accel: Accel,
    pub timeout: Duration,
    pub log: &'a Path,
    /// Echo console lines to stderr with this prefix.
    pub echo: Option<&'a str>,
    /// Stop as soon as a console line contains this (the KVM probe).
    pub stop_at: Option<&'a str>,
}

#[derive(Debug)]
pub struct Outcome {
    pub console: String,
    pub timed_out: bool,
    pub stopped_early: bool,
    /// qemu's exit status text (qemu exits 0 after a guest poweroff).
    pub exit: String,
    pub elapsed: Duration,
}

pub fn check_qemu() -> anyhow::Result<()> {
    let ok = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        bail!("qemu-system-x86_64 not found; run `cargo xtask setup` (installs qemu-system-x86)");
    }
    Ok(())
}

pub fn boot(b: &Boot<'_>) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(b.accel.args())
        .args(["-m", "2048", "-smp", "2", "-nographic", "-no-reboot"])
        // No NIC: the tests use loopback and namespaces only.
        .args(["-nic", "none"])
        .arg("-kernel")
        .arg(b.vmlinuz)
        .arg("-initrd")
        .arg(b.initrd)
        .arg("-append")
        .arg(format!("{CMDLINE} {}", b.extra_cmdline).trim_end())
        // A terminal on stdin would be put in raw mode; the VM reads nothing.
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = qemu.spawn().context("starting qemu-system-x86_64")?;
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    let tx_err = tx.clone();
    let readers = [
        std::thread::spawn(move || forward(stdout, &tx, "")),
        std::thread::spawn(move || forward(stderr, &tx_err, "qemu: ")),
    ];

    let mut log =
        fs::File::create(b.log).with_context(|| format!("creating {}", b.log.display()))?;
    let mut console = String::new();
    let deadline = started + b.timeout;
    let (mut timed_out, mut stopped_early) = (false, false);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let _ = writeln!(log, "{line}");
                if let Some(prefix) = b.echo {
                    eprintln!("{prefix}{line}");
                }
                console.push_str(&line);
                console.push('\n');
                if b.stop_at.is_some_and(|m| line.contains(m)) {
                    stopped_early = true;
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            // Both pipes closed: qemu exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if timed_out || stopped_early {
        let _ = child.kill();
    }
    let status = child.wait().context("waiting for qemu")?;
    for reader in readers {
        let _ = reader.join();
    }
    // Lines that arrived between the kill and the pipes closing.
    for line in rx.try_iter() {
        let _ = writeln!(log, "{line}");
        console.push_str(&line);
        console.push('\n');
    }
    if timed_out {
        let _ = writeln!(log, "xtask: killed qemu after {:?}", b.timeout);
    }
    Ok(Outcome {
        console,
        timed_out,
        stopped_early,
        exit: status.to_string(),
        elapsed: started.elapsed(),
    })
}

/// Sends lines (without `\r`, lossily decoded: a test may print anything)
/// until EOF.
fn forward(pipe: impl std::io::Read, tx: &mpsc::Sender<String>, prefix: &str) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf);
                let line = strip_terminal_codes(text.trim_end_matches(['\n', '\r']));
                if tx.send(format!("{prefix}{line}")).is_err() {
                    return;
                }
            }
        }
    }
}

/// Drops carriage returns and terminal escape sequences (SeaBIOS clears the
/// screen), which would otherwise glue themselves to the first marker.
fn strip_terminal_codes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\x1b' => {
                // CSI: ESC [ parameters final-byte; otherwise ESC + one char.
                if chars.next_if_eq(&'[').is_some() {
                    while chars.next().is_some_and(|c| !c.is_ascii_alphabetic()) {}
                } else {
                    chars.next();
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Whether KVM boots `vmlinuz` on this machine, decided once per (machine,
/// host kernel, qemu, guest kernel) and cached in `cache_file`. The probe
/// boots with `faultd.probe`, which makes init print its first marker and
/// power off; anything else within 30 s (qemu refusing the CPU model, a
/// guest crash, a hang) means TCG. Some nested hypervisors expose a
/// /dev/kvm on which stock kernels crash, so the device existing is not
/// enough.
pub fn choose_accel(
    cache_file: &Path,
    vmlinuz: &Path,
    initrd: &Path,
    log_dir: &Path,
) -> anyhow::Result<Accel> {
    if let Some(forced) = std::env::var_os("FAULTD_VM_ACCEL") {
        return match forced.to_str() {
            Some("kvm") => Ok(Accel::Kvm),
            Some("tcg") => Ok(Accel::Tcg),
            _ => bail!("FAULTD_VM_ACCEL must be kvm or tcg, not {forced:?}"),
        };
    }
    let kvm_usable = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !kvm_usable {
        return Ok(Accel::Tcg);
    }
    let key = probe_key(vmlinuz);
    if let Ok(cached) = fs::read_to_string(cache_file)
        && let Some(verdict) = cached.strip_prefix(&format!("{key}\n"))
    {
        return Ok(if verdict.trim() == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        });
    }
    let log = log_dir.join(format!(
        "kvm-probe-{}.log",
        vmlinuz.file_name().unwrap_or_default().to_string_lossy()
    ));
    let outcome = boot(&Boot {
        vmlinuz,
        initrd,
        extra_cmdline: "faultd.probe",
        accel: Accel::Kvm,
        timeout: Duration::from_secs(30),
        log: &log,
        echo: None,
        stop_at: Some(&format!("{MARKER} init")),
    })?;
    let accel = if outcome.stopped_early {
        Accel::Kvm
    } else {
        let last = outcome.console.lines().last().unwrap_or("no output");
        eprintln!(
            "vm: KVM cannot boot this kernel here ({}; last line: {last}); using TCG \
             emulation. Verdict cached in {}",
            if outcome.timed_out {
                "no init marker within 30 s"
            } else {
                "qemu exited before init ran"
            },
            cache_file.display()
        );
        Accel::Tcg
    };
    if let Some(parent) = cache_file.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(cache_file, format!("{key}\n{}\n", accel.name()))?;
    Ok(accel)
}

/// The first line of `qemu-system-x86_64 --version`, empty if it fails.
pub fn version() -> String {
    Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default()
}

fn probe_key(vmlinuz: &Path) -> String {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default().trim().to_owned();
    let qemu = version();
    format!(
        "machine={} host-kernel={} qemu={qemu} guest={}",
        read("/etc/machine-id"),
        read("/proc/sys/kernel/osrelease"),
        vmlinuz
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_default()
            .display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_the_bios_screen_codes() {
        assert_eq!(
            strip_terminal_codes("\x1bc\x1b[?7l\x1b[2JFAULTD-VM: init 6.1\r"),
            "FAULTD-VM: init 6.1"
        );
        assert_eq!(strip_terminal_codes("plain ok"), "plain ok");
    }
}
