//! Builds the kernel programs (ebpf/) for bpfel-unknown-none and leaves the
//! object in OUT_DIR, where `include_bytes_aligned!` embeds it in the agent.
//!
//! Needs the toolchain from rust-toolchain.toml with rust-src, RUSTC_BOOTSTRAP=1
//! (for `-Z build-std=core` on a stable compiler) and bpf-linker built against
//! the same LLVM; `cargo xtask setup` provides all three.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    println!("cargo::rerun-if-env-changed=RUSTC_BOOTSTRAP");
    println!("cargo::rerun-if-env-changed=PATH");
    let toolchain = toolchain_channel()?;
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
