//! What a benchmark on this host starts from: the release binaries it
//! runs, the tools it needs, the raised priority, the environment its report
//! describes and a one-thread runtime for the agent's API.

use std::{path::PathBuf, time::Instant};

use anyhow::{Context as _, bail, ensure};

use super::env::{Environment, progress, raise_priority};
use crate::util::target_dir;

/// A host benchmark's context, from [`Host::start`] until its report.
#[derive(Debug)]
pub(crate) struct Host {
    /// What the progress lines' times count from.
    pub(crate) started: Instant,
    /// The release agent.
    pub(crate) faultd: PathBuf,
    /// How the run's priority was raised, for the report.
    pub(crate) renice: String,
    pub(crate) env: Environment,
    /// One thread: each call is driven by the thread that times it, with no
    /// hand-off to a worker and back, so the client adds as little as it
    /// can to the round trips measured.
    pub(crate) rt: tokio::runtime::Runtime,
}

/// Fails unless this process is root; `why` says what needs it.
pub(crate) fn require_root(why: &str) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the benchmark {why}: run as root");
    }
    Ok(())
}

impl Host {
    /// Checks for the release binaries and the `tools`, points the kit at
    /// the release traffic helper, raises the priority and records the
    /// environment. Call it before any other thread exists.
    pub(crate) fn start(tools: &[&str]) -> anyhow::Result<Self> {
        let started = Instant::now();
        let release = target_dir("release");
        let faultd = release.join("faultd");
        let traffic = release.join("faultd-traffic");
        for bin in [&faultd, &traffic] {
            ensure!(bin.is_file(), "{} is missing", bin.display());
        }
        // SAFETY: no other thread exists yet (the callers start here); the
        // kit reads it when spawning.
        unsafe { std::env::set_var("FAULTD_TRAFFIC_BIN", &traffic) };
        for tool in tools {
            ensure!(
                which(tool),
                "{tool} not found; `cargo xtask setup` installs it"
            );
        }
        let renice = raise_priority();
        let env = Environment::collect()?;
        progress(started, &format!("{}, {}", env.kernel, env.cpu));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?;
        Ok(Self {
            started,
            faultd,
            renice,
            env,
            rt,
        })
    }

    /// One progress line, timed from the start.
    pub(crate) fn progress(&self, what: &str) {
        progress(self.started, what);
    }
}

/// Whether `tool` is on PATH or in the sbin directories.
fn which(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .any(|d| d.join(tool).is_file())
    })
}
