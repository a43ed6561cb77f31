//! The integration test executables: which cargo built, and which of them
//! run in the VM.

use std::{io::BufRead as _, path::PathBuf, process::Stdio};

use anyhow::{Context as _, bail};

use crate::util::cargo;

/// Integration test executables (`tests/tests/<name>.rs`) that run in the VM.
/// Explicit, so a new slow test does not silently stretch the matrix: add
/// it here or to [`HOST_ONLY`].
pub const VM_TESTS: &[&str] = &[
    "kit_smoke",
    "loss",
    "caps",
    "config",
    "syscall",
    "latency",
    // Needs fq, which the host lacks: a one-node lab, a real Prometheus.
    "drill",
];

/// Integration test executables that run on the host only, and why.
pub const HOST_ONLY: &[(&str, &str)] = &[
    ("stress", "too slow under emulation"),
    // The multi-node lab (a bridge, a namespace and an agent per node, a
    // coordinator, iptables cuts): what it tests is the coordinator's and
    // the listeners' logic; the datapath it drives per kernel is what the
    // VM tier's loss tests cover.
    ("coordinator", LAB),
    ("partition", LAB),
    ("policy", LAB),
    ("stop_conditions", LAB),
    ("tls", LAB),
    // Health and reflection through a Python client: the listeners, not
    // the kernel.
    (
        "ops",
        "a Python gRPC client; tests the listeners, not the kernel",
    ),
    (
        "clients",
        "the Python client against the daemons; tests the API, not the kernel",
    ),
    (
        "deploy",
        "checks files offline (kustomize, schemas) and builds the image; no kernel involved",
    ),
];

const LAB: &str = "multi-node lab; its datapath is covered per kernel by `loss`";

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

/// The executables of [`VM_TESTS`]; warns about executables that are in
/// neither list.
pub fn vm_tests(all: &[TestBinary]) -> anyhow::Result<Vec<TestBinary>> {
    for test in all {
        let known = VM_TESTS.contains(&test.name.as_str())
            || HOST_ONLY.iter().any(|(n, _)| *n == test.name);
        if !known {
            eprintln!(
                "vm: WARNING: integration test `{}` runs on the host only; add it to VM_TESTS or \
                 HOST_ONLY in xtask/src/vm/suite.rs",
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
