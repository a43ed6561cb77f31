//! The host tier: the same integration executables on this machine's kernel,
//! their output shown live and parsed into the summary table's first column.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::Command,
    time::Instant,
};

use anyhow::Context as _;

use super::{results::Column, suite::TestBinary};

/// What this project's machines (Debian 12 in a Firecracker VM, kernel
/// 6.18 booted with lockdown and `nomodule`) offer, for tests/tests/caps.rs:
/// no BPF LSM, no fq, TCX. Other hosts get no expectation beyond the test's
/// own observations unless FAULTD_HOST_EXPECT_FEATURES says otherwise.
const PROJECT_HOST_FEATURES: &str = "bpf_lsm=0,lsm_cgroup=0,btf=1,fq_qdisc=0,tcx=1,bpf_link_cgroup=1,cgroup_skb=1,bpf_set_retval=1,\
     cgroup_sock_hooks=1,path_filter=0,kprobe_override=0";

fn host_expectations() -> Option<String> {
    if let Ok(set) = std::env::var("FAULTD_HOST_EXPECT_FEATURES") {
        return Some(set);
    }
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // Firecracker guest kernels of these machines are named `<ver>-fc-v<n>`.
    release
        .contains("-fc-")
        .then(|| PROJECT_HOST_FEATURES.to_owned())
}

/// Runs every executable one after the other with `--test-threads=1
/// --nocapture` (they share the node-wide agent lock and measure traffic),
/// echoing and recording the output.
pub fn run(tests: &[TestBinary], bin_dir: &Path, log_dir: &Path) -> anyhow::Result<Column> {
    let started = Instant::now();
    let log_path = log_dir.join("host.log");
    let mut log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut column = Column::new("host", log_path.display().to_string());
    let expect = host_expectations();
    for test in tests {
        eprintln!("test: host: {}", test.name);
        let (reader, writer) = std::io::pipe()?;
        let mut cmd = Command::new(&test.path);
        cmd.args(["--test-threads=1", "--nocapture"])
            .env("FAULTD_BIN", bin_dir.join("faultd"))
            .env("FAULTD_TRAFFIC_BIN", bin_dir.join("faultd-traffic"))
            // cargo runs tests from the package directory.
            .current_dir(crate::util::workspace_root().join("tests"))
            .stdout(writer.try_clone()?)
            .stderr(writer);
        if let Some(set) = &expect
            && std::env::var_os("FAULTD_EXPECT_FEATURES").is_none()
        {
            cmd.env("FAULTD_EXPECT_FEATURES", set);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", test.path.display()))?;
        // The Command holds the pipe's write ends; without dropping it the
        // reader would never see EOF.
        drop(cmd);
        let _ = writeln!(log, "=== {} ({})", test.name, test.path.display());
        let mut output = String::new();
        for line in BufReader::new(reader).split(b'\n') {
            let line = String::from_utf8_lossy(&line?).into_owned();
            println!("{line}");
            let _ = writeln!(log, "{line}");
            output.push_str(&line);
            output.push('\n');
        }
        let status = child.wait()?;
        let rc = status
            .code()
            .or_else(|| std::os::unix::process::ExitStatusExt::signal(&status).map(|s| 128 + s))
            .unwrap_or(-1);
        let _ = writeln!(log, "=== {} exit {status}", test.name);
        column.add_binary(&test.name, &output, Some(rc));
    }
    column.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(column)
}
