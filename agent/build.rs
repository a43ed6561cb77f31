//! Builds the kernel programs (ebpf/) for bpfel-unknown-none and leaves the
//! object in OUT_DIR, where `include_bytes_aligned!` embeds it in the agent.
//!
//! Needs the toolchain from rust-toolchain.toml with rust-src and bpf-linker
//! built against the same LLVM; `cargo xtask setup` provides both (bpf-linker
//! under ~/.cache/faultd, found here without touching PATH).
use std::{env, path::PathBuf};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    println!("cargo::rerun-if-env-changed=PATH");
    let toolchain = toolchain_channel()?;
    let path = search_path();
    // SAFETY: build scripts are single-threaded; nothing reads the
    // environment concurrently. These only reach the inner cargo that
    // aya-build spawns for the eBPF crate:
    // - RUSTC_BOOTSTRAP=1 lets the pinned stable toolchain take
    //   `-Z build-std=core` (aya-build adds it when it sees this), without
    //   enabling unstable features for the host crates;
    // - PATH gains the cached bpf-linker;
    // - quiet, because aya-build forwards every line the inner cargo prints
    //   as a build warning.
    unsafe {
        env::set_var("RUSTC_BOOTSTRAP", "1");
        env::set_var("PATH", path);
        env::set_var("CARGO_TERM_QUIET", "true");
    }
    let ebpf = aya_build::Package {
        name: "faultd-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::Custom(&toolchain)).context(
        "building the eBPF programs failed; run `cargo xtask setup` (toolchain, rust-src, \
         bpf-linker) and build through `cargo xtask build`",
    )
}

/// PATH with the bpf-linker that `cargo xtask setup` caches, if present.
fn search_path() -> std::ffi::OsString {
    println!("cargo::rerun-if-env-changed=FAULTD_CACHE");
    let cache = env::var_os("FAULTD_CACHE")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/faultd")));
    let mut dirs: Vec<PathBuf> = cache
        .and_then(|c| std::fs::read_dir(c.join("bpf-linker")).ok())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("bpf-linker").exists())
        .collect();
    dirs.sort();
    dirs.reverse();
    dirs.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    env::join_paths(dirs).unwrap_or_default()
}

/// The eBPF crate must be built by the same pinned toolchain as the agent,
/// read from rust-toolchain.toml so there is one place to change it.
fn toolchain_channel() -> anyhow::Result<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../rust-toolchain.toml");
    println!("cargo::rerun-if-changed={path}");
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|line| {
            let rest = line
                .trim()
                .strip_prefix("channel")?
                .trim()
                .strip_prefix('=')?;
            Some(rest.trim().trim_matches('"').to_owned())
        })
        .ok_or_else(|| anyhow!("{path} has no `channel = \"...\"` line"))
}
