//! `cargo xtask image`: the container image of both daemons, assembled
//! with buildah from this machine's build, for machines that cannot pull
//! the base images deploy/container/Containerfile names. The runtime layer
//! is what the Containerfile's distroless base gives: the binaries, the
//! shared libraries they load (as `ldd` reports them, at the same paths),
//! an unprivileged user 65532 the image runs as by default, and nothing
//! else (no shell).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::util::{cmd_output, run};

#[derive(Debug, Args)]
pub struct Options {
    /// The image name.
    #[arg(long, default_value = "localhost/faultd:dev")]
    pub tag: String,
    /// Where the binaries are (default: the release build).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

pub const BINARIES: [&str; 3] = ["faultd", "faultd-coordinator", "faultctl"];

fn buildah(args: &[&str]) -> Command {
    let mut c = Command::new("buildah");
    // vfs storage and chroot isolation: no overlayfs or user namespaces
    // needed, so it works inside containers and CI runners too.
    c.args(["--storage-driver", "vfs"]).args(args);
    c.env("BUILDAH_ISOLATION", "chroot");
    c
}

/// Shared libraries `bin` loads, from `ldd`.
fn libraries(bin: &Path) -> anyhow::Result<BTreeSet<PathBuf>> {
    let text = cmd_output(Command::new("ldd").arg(bin))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let path = l
                .split("=>")
                .nth(1)
                .unwrap_or(l)
                .split_whitespace()
                .next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

pub fn run_image(opts: &Options) -> anyhow::Result<()> {
    let bin_dir = match &opts.bin_dir {
        Some(d) => d.clone(),
        None => {
            crate::setup::setup(crate::setup::Scope::Build)?;
            crate::util::build("release")?;
            crate::util::target_dir("release")
        }
    };
    if Command::new("buildah").arg("--version").output().is_err() {
        bail!("buildah not found; `./x setup` installs it");
    }
    let staging = tempfile::tempdir().context("staging dir")?;
    let root = staging.path();
    let mut libs = BTreeSet::new();
    for name in BINARIES {
        let src = bin_dir.join(name);
        if !src.is_file() {
            bail!("{} is missing; build it first", src.display());
        }
        let dst = root.join("usr/local/bin").join(name);
        std::fs::create_dir_all(dst.parent().context("parent")?)?;
        // Without DWARF: a tenth of the size, symbols kept for backtraces.
        run({
            let mut c = Command::new("objcopy");
            c.arg("--strip-debug").arg(&src).arg(&dst);
            c
        })?;
        libs.extend(libraries(&src)?);
    }
    for lib in &libs {
        let dst = root.join(lib.strip_prefix("/").unwrap_or(lib));
        std::fs::create_dir_all(dst.parent().context("parent")?)?;
        std::fs::copy(lib, &dst).with_context(|| format!("copying {}", lib.display()))?;
    }
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc)?;
    std::fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    )?;
    std::fs::write(etc.join("group"), "root:x:0:\nnonroot:x:65532:\n")?;
    for dir in ["tmp", "run", "home/nonroot"] {
        std::fs::create_dir_all(root.join(dir))?;
    }

    let container = cmd_output(&mut buildah(&["from", "scratch"]))?
        .trim()
        .to_owned();
    let result = (|| -> anyhow::Result<()> {
        run(buildah(&[
            "copy",
            &container,
            &format!("{}/", root.display()),
            "/",
        ]))?;
        run(buildah(&[
            "config",
            "--user",
            "65532:65532",
            "--entrypoint",
            r#"["/usr/local/bin/faultd-coordinator"]"#,
            "--label",
            "org.opencontainers.image.title=faultd",
            "--label",
            "org.opencontainers.image.source=https://github.com/faultd/faultd",
            &container,
        ]))?;
        run(buildah(&["commit", "--rm", &container, &opts.tag]))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = buildah(&["rm", &container]).output();
    }
    result?;
    eprintln!(
        "image: built {} ({} binaries, {} libraries)",
        opts.tag,
        BINARIES.len(),
        libs.len()
    );
    Ok(())
}
