//! `cargo xtask fuzz`: the cargo-fuzz (libFuzzer) targets in fuzz/, each
//! for a bounded time, from the corpus kept in the repo (fuzz/corpus,
//! seeded by fuzz/examples/seed.rs, and fuzz/regressions, every input that
//! once crashed). New inputs go to the build directory, not the repo; a
//! crash fails the task and names the input to reproduce it with.
//! `cargo xtask test` runs a short smoke of every target.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::util::{cargo, run, workspace_root};

/// Every target in fuzz/fuzz_targets, in the order they run.
pub const TARGETS: [&str; 7] = [
    "agent_request",
    "agent_config",
    "coordinator_files",
    "experiment",
    "cgroup_targets",
    "netlink",
    "btf",
];

#[derive(Debug, Args)]
pub struct Options {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Only these targets (default: all).
    pub targets: Vec<String>,
}

/// One target's run, from libFuzzer's final statistics.
#[derive(Debug)]
struct Outcome {
    target: &'static str,
    executions: u64,
    seconds: f64,
    corpus: usize,
    crash: Option<PathBuf>,
}

pub fn run_fuzz(opts: &Options) -> anyhow::Result<()> {
    let targets: Vec<&'static str> = if opts.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        opts.targets
            .iter()
            .map(|t| {
                TARGETS
                    .iter()
                    .copied()
                    .find(|k| k == t)
                    .with_context(|| format!("no fuzz target {t:?}; the targets: {TARGETS:?}"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    crate::setup::step("cargo-fuzz", crate::setup::cargo_fuzz)?;
    let root = workspace_root();
    let corpus = root.join("fuzz/corpus");
    // The seeds follow the docs and the protos: write any that are new.
    let mut seed = cargo(&["run", "-q", "-p", "faultd-fuzz", "--example", "seed", "--"]);
    seed.arg(&root).arg(&corpus);
    run(seed)?;
    let start = Instant::now();
    run(cargo_fuzz(&["build"]))?;
    eprintln!(
        "fuzz: built {} targets in {:.0} s",
        TARGETS.len(),
        start.elapsed().as_secs_f64()
    );
    let work = crate::util::target_dir("fuzz");
    let mut outcomes = Vec::new();
    for target in targets {
        outcomes.push(fuzz_one(target, opts.seconds, &root, &work)?);
    }
    let report = report(&outcomes, opts.seconds);
    print!("{report}");
    std::fs::write(work.join("report.md"), &report)?;
    let crashed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            o.crash.as_ref().map(|c| {
                format!(
                    "{}: {} (reproduce: cargo fuzz run --fuzz-dir fuzz -s none -a {} {})",
                    o.target,
                    c.display(),
                    o.target,
                    c.display()
                )
            })
        })
        .collect();
    if !crashed.is_empty() {
        bail!("fuzz targets crashed:\n{}", crashed.join("\n"));
    }
    Ok(())
}

/// `cargo fuzz` on fuzz/ as every run of it here builds: no sanitizer
/// (the code under test is safe Rust; coverage guidance and the panics and
/// overflow checks of debug assertions are what find its bugs), debug
/// assertions on.
fn cargo_fuzz(args: &[&str]) -> Command {
    let mut c = Command::new(crate::setup::cargo_fuzz_bin());
    c.args(["fuzz"])
        .args(args)
        .args(["--fuzz-dir", "fuzz", "-s", "none", "-a"])
        .current_dir(workspace_root())
        // cargo-fuzz passes -Z flags to rustc; the pinned stable toolchain
        // takes them with this, as the eBPF build does.
        .env("RUSTC_BOOTSTRAP", "1");
    c
}

fn fuzz_one(
    target: &'static str,
    seconds: u64,
    root: &Path,
    work: &Path,
) -> anyhow::Result<Outcome> {
    let scratch = work.join("corpus").join(target);
    let artifacts = work.join("artifacts").join(target);
    std::fs::create_dir_all(&scratch)?;
    std::fs::create_dir_all(&artifacts)?;
    let mut cmd = cargo_fuzz(&["run", target]);
    // New inputs are written to the first directory only.
    cmd.arg(&scratch).arg(root.join("fuzz/corpus").join(target));
    let regressions = root.join("fuzz/regressions").join(target);
    if regressions.is_dir() {
        cmd.arg(&regressions);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        // A hang or a runaway allocation is a finding too.
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-max_len=65536");
    eprintln!("fuzz: {target} for {seconds} s");
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    std::fs::write(work.join(format!("{target}.log")), log.as_bytes())?;
    let stat = |name: &str| {
        log.lines().find_map(|l| {
            l.strip_prefix(name)?
                .trim()
                .strip_prefix(':')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    let crash = std::fs::read_dir(&artifacts)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                ["crash-", "timeout-", "oom-", "leak-"]
                    .iter()
                    .any(|k| n.starts_with(k))
            })
        });
    if crash.is_none() && !out.status.success() {
        bail!(
            "fuzz target {target} failed without a crash input: {}\n{}",
            out.status,
            log.lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let corpus = std::fs::read_dir(&scratch)?.count()
        + std::fs::read_dir(root.join("fuzz/corpus").join(target))?.count();
    Ok(Outcome {
        target,
        executions: stat("stat::number_of_executed_units").unwrap_or(0.0) as u64,
        seconds: log
            .lines()
            .find_map(|l| {
                let rest = l.strip_prefix("Done ")?;
                let (_, secs) = rest.split_once(" runs in ")?;
                secs.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or(0.0),
        corpus,
        crash,
    })
}

fn report(outcomes: &[Outcome], seconds: u64) -> String {
    let mut s = format!(
        "Command: `cargo xtask fuzz --seconds {seconds}` (cargo-fuzz {}, libFuzzer, no sanitizer, \
         debug assertions and overflow checks on). Corpus: the repo's inputs plus those \
         this machine's runs found (target/fuzz/corpus).\n\n\
         | target | seconds | executions | per second | corpus | crashes |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |\n",
        crate::setup::CARGO_FUZZ_VERSION
    );
    for o in outcomes {
        let rate = if o.seconds > 0.0 {
            o.executions as f64 / o.seconds
        } else {
            0.0
        };
        s.push_str(&format!(
            "| {} | {:.0} | {} | {:.0} | {} | {} |\n",
            o.target,
            o.seconds,
            o.executions,
            rate,
            o.corpus,
            if o.crash.is_some() { "1" } else { "0" }
        ));
    }
    s
}
