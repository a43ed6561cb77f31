//! What a benchmark report says about the machine and the run: the
//! environment (kernel, CPU, commit, load, the command), the priority the
//! run got, and time-stamped progress lines.

use std::{fs, path::Path, process::Command, time::Instant};

use faultd_tests::measure::cpu_model;

use crate::util::{cmd_output, workspace_root};

/// The iptables tools whose versions the environment records.
const IPTABLES_TOOLS: [&str; 2] = ["iptables-nft", "iptables-legacy"];

/// One time-stamped progress line on stderr.
pub(crate) fn progress(started: Instant, what: &str) {
    eprintln!("bench [{:>6.1}s] {what}", started.elapsed().as_secs_f64());
}

/// Runs the benchmark (and, by inheritance, the agent and the traffic
/// processes) at nice -10: other work on a shared 2-core machine (compilers)
/// otherwise lands in the middle of a run. Returns what was done, for the
/// report.
pub(crate) fn raise_priority() -> String {
    let pid = std::process::id().to_string();
    match Command::new("renice")
        .args(["-n", "-10", "-p", &pid])
        .output()
    {
        Ok(o) if o.status.success() => "nice -10 (benchmark, agent and traffic processes)".into(),
        Ok(o) => format!(
            "default priority (renice failed: {})",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("default priority (renice: {e})"),
    }
}

#[derive(Debug)]
pub(crate) struct Environment {
    pub(crate) command: String,
    pub(crate) date: String,
    pub(crate) kernel: String,
    pub(crate) cpu: String,
    pub(crate) cpus: usize,
    pub(crate) commit: String,
    pub(crate) iptables: Vec<(String, String)>,
    pub(crate) netem: String,
    pub(crate) load_start: String,
}

impl Environment {
    /// A report's JSON: what ran, when, at which commit, on which kernel and
    /// CPU, then the report's own `fields` (an object).
    pub(crate) fn report_json(&self, fields: serde_json::Value) -> serde_json::Value {
        let mut out = serde_json::json!({
            "command": self.command,
            "date": self.date,
            "commit": self.commit,
            "kernel": self.kernel,
            "cpu": self.cpu,
        });
        if let (Some(out), serde_json::Value::Object(fields)) = (out.as_object_mut(), fields) {
            out.extend(fields);
        }
        out
    }
}

/// The 1-, 5- and 15-minute load averages.
pub(crate) fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

impl Environment {
    pub(crate) fn collect() -> anyhow::Result<Self> {
        let date = cmd_output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M:%S UTC"]))?
            .trim()
            .to_owned();
        let kernel = cmd_output(Command::new("uname").arg("-r"))?
            .trim()
            .to_owned();
        let (cpu, cpus) = cpu_model();
        let root = workspace_root();
        let head = cmd_output(
            Command::new("git")
                .args(["rev-parse", "--short", "HEAD"])
                .current_dir(&root),
        )?
        .trim()
        .to_owned();
        let dirty = !cmd_output(
            Command::new("git")
                .args(["status", "--porcelain"])
                .current_dir(&root),
        )?
        .trim()
        .is_empty();
        let commit = if dirty { format!("{head}-dirty") } else { head };
        let iptables = IPTABLES_TOOLS
            .into_iter()
            .map(|tool| {
                let v = cmd_output(Command::new(tool).arg("--version"))
                    .map_or_else(|e| format!("unavailable: {e}"), |v| v.trim().to_owned());
                (tool.to_owned(), v)
            })
            .collect();
        Ok(Self {
            command: invoking_command(),
            date,
            kernel,
            cpu,
            cpus,
            commit,
            iptables,
            netem: netem_status(),
            load_start: loadavg(),
        })
    }
}

/// The command line that started this benchmark: the outermost of the
/// `flock` / `cargo` processes above xtask, so `flock ... cargo xtask bench`
/// is reported as typed.
fn invoking_command() -> String {
    let own: Vec<String> = std::env::args().skip(1).collect();
    let mut found = format!("cargo xtask {}", own.join(" "));
    let mut pid = nix::unistd::getppid().as_raw();
    for _ in 0..6 {
        let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
            break;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let name = args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !matches!(name.as_str(), "cargo" | "flock" | "sudo" | "rustup") {
            break;
        }
        let shown: Vec<String> = args
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let a = if i == 0 {
                    Path::new(a)
                        .file_name()
                        .map_or_else(|| a.clone(), |n| n.to_string_lossy().into_owned())
                } else {
                    a.clone()
                };
                if a.contains(' ') { format!("'{a}'") } else { a }
            })
            .collect();
        found = shown.join(" ");
        let Some(ppid) = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
            })
        else {
            break;
        };
        pid = ppid;
    }
    found
}

fn netem_status() -> String {
    let config = Command::new("sh")
        .args([
            "-c",
            "zcat /proc/config.gz 2>/dev/null | grep -E 'NET_SCH_NETEM'",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    if config.is_empty() {
        "unknown (no /proc/config.gz)".to_owned()
    } else {
        config
    }
}
