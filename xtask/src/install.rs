//! How set-up installs what the tasks need: the cache it installs into,
//! `apt-get` (through sudo when not root, its lists updated once per run)
//! and what a set-up step reports.

use std::{
    env,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use crate::util::run;

/// `$FAULTD_CACHE`, else `~/.cache/faultd`: bpf-linker and the VM kernels.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = env::var_os("FAULTD_CACHE") {
        return PathBuf::from(dir);
    }
    let home = env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/faultd")
}

/// What a set-up step found: already there, or installed now.
#[derive(Debug)]
pub enum Done {
    Cached(String),
    Installed(String),
}

/// `apt-get`, through sudo when not root, non-interactive.
pub fn apt(args: &[&str]) -> Command {
    let mut c = if nix::unistd::geteuid().is_root() {
        Command::new("apt-get")
    } else {
        let mut c = Command::new("sudo");
        c.arg("apt-get");
        c
    };
    c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    c
}

/// `apt-get update`, at most once per run: package installs and kernel
/// downloads both need current lists (a fresh image's lists may be months
/// old and miss the pinned kernels), but once is enough.
pub fn apt_update() -> anyhow::Result<()> {
    static UPDATED: AtomicBool = AtomicBool::new(false);
    if UPDATED.load(Ordering::Relaxed) {
        return Ok(());
    }
    eprintln!("setup: apt-get update");
    run(apt(&["update", "-q"]))?;
    UPDATED.store(true, Ordering::Relaxed);
    Ok(())
}
