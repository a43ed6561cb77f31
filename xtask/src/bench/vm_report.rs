//! What the VM benchmarks' reports share: the host they ran from (its
//! environment, the command as a user types it, qemu's version), the head
//! of the Markdown and JSON reports, and how each kernel's run went.

use serde_json::{Map, Value, json};

use super::env::{Environment, loadavg};
use crate::vm::{bench::BenchRun, qemu_version};

/// The host side of a VM benchmark's report.
#[derive(Debug)]
pub(crate) struct VmHost {
    env: Environment,
    /// The command that started the run, from `cargo` on.
    command: String,
    qemu: String,
}

impl VmHost {
    pub(crate) fn collect() -> anyhow::Result<Self> {
        let env = Environment::collect()?;
        let command = as_a_user_types_it(&env.command);
        Ok(Self {
            env,
            command,
            qemu: qemu_version(),
        })
    }

    /// The head of the Markdown report: the title, the command in a code
    /// block, date, commit and the host the VMs ran on.
    pub(crate) fn markdown_head(&self, title: &str) -> String {
        let e = &self.env;
        format!(
            "# {title}\n\n```\n{}\n```\n\n\
             - date: {}\n- commit: `{}`\n- host: kernel `{}`, {} × {}; {}\n\
             - host load average (1, 5, 15 min) at the start: {}; at the end: {}\n\n",
            self.command,
            e.date,
            e.commit,
            e.kernel,
            e.cpus,
            e.cpu,
            self.qemu,
            e.load_start,
            loadavg(),
        )
    }

    /// The JSON report: command, date, commit, the host the VMs ran on, and
    /// one object per kernel.
    pub(crate) fn json(&self, kernels: Vec<Value>) -> Value {
        let e = &self.env;
        json!({
            "command": self.command,
            "date": e.date,
            "commit": e.commit,
            "host": {
                "kernel": e.kernel,
                "cpu": e.cpu,
                "cpus": e.cpus,
                "qemu": self.qemu,
                "loadavg_start": e.load_start,
                "loadavg_end": loadavg(),
            },
            "kernels": kernels,
        })
    }
}

/// A kernel's object in the JSON report: how it was run, and what the
/// guest reported.
pub(crate) fn run_json(run: &BenchRun) -> Map<String, Value> {
    let Value::Object(fields) = json!({
        "kernel": run.kernel,
        "package": run.package,
        "release": run.release,
        "accel": run.accel,
        "vm_elapsed_s": run.elapsed_secs,
        "result": run.result,
    }) else {
        unreachable!("a JSON object literal")
    };
    fields
}

/// The command from `cargo` on. The VM runs need no root, so a wrapper in
/// front of it (`flock LOCK` to take turns on a shared machine, `sudo`) is
/// how this run was scheduled, not part of what reproduces it.
fn as_a_user_types_it(command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().collect();
    words
        .iter()
        .position(|w| *w == "cargo")
        .map_or_else(|| command.to_owned(), |at| words[at..].join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_starts_at_cargo() {
        assert_eq!(
            as_a_user_types_it("flock /tmp/faultd-root.lock cargo xtask bench syscall --vm"),
            "cargo xtask bench syscall --vm"
        );
        assert_eq!(
            as_a_user_types_it("cargo xtask bench syscall --vm"),
            "cargo xtask bench syscall --vm"
        );
        assert_eq!(as_a_user_types_it("xtask bench"), "xtask bench");
    }
}
