//! `cargo xtask setup`: everything a fresh Debian machine needs, installed
//! idempotently and cached. Each step checks before it acts, so a warm
//! machine pays a few `dpkg -s` and file checks; each prints what it does
//! and how long it took. (The pinned Rust toolchain comes before all of
//! this, from `./x`: rustup's cargo proxy cannot start xtask without it.)

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{
    install::{Done, apt, apt_update, cache_dir},
    util::{cmd_output, run},
};

/// Debian packages the tests, the demo and the VM tier use.
pub const APT_PACKAGES: &[&str] = &[
    "bpftool",           // the tests check the kernel's view independently of the agent
    "iproute2",          // tc, ip: fq probe, network namespaces
    "qemu-system-x86",   // VM test tier
    "busybox-static",    // VM initramfs userland
    "cpio",              // VM initramfs
    "zstd",              // compressed kernel modules
    "xz-utils",          // compressed kernel modules (Debian 6.12 ships .ko.xz)
    "iptables",          // bench: the iptables cgroup+statistic drop rules faultd is compared with
    "fonts-dejavu-core", // bench: text in the PNG charts
    "prometheus",        // stop-condition tests: a real server the coordinator queries
    "python3-grpcio",    // tests: a generic gRPC client in another language (health, reflection)
    "systemd",           // tests: systemd-analyze verify of the units in deploy/systemd
    "python3-venv",      // tests: the venv kubernetes-validate runs in
    "python3-pip",
    "buildah", // tests: the container image (xtask image)
    // tests: grpc-go, a client the Unix socket must accept as it is (Go
    // packages from Debian, built without the module proxy).
    "golang-go",
    "golang-google-grpc-dev",
];

/// bpf-linker release built against the toolchain's own LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// What a task needs set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Building and running the binaries: Debian packages and bpf-linker.
    Build,
    /// Also the VM tier's kernels (the tests, `cargo xtask setup`).
    Vm,
}

pub fn setup(scope: Scope) -> anyhow::Result<()> {
    step("Debian packages", apt_packages)?;
    step("bpf-linker", bpf_linker)?;
    step("deploy checks", deploy_tools)?;
    if scope == Scope::Vm {
        step("VM kernels", crate::vm::fetch_kernels)?;
    }
    Ok(())
}

/// Runs one step between a start and an end line, so a newcomer sees what is
/// being installed and how long each part took.
pub(crate) fn step(name: &str, f: impl FnOnce() -> anyhow::Result<Done>) -> anyhow::Result<()> {
    let start = Instant::now();
    let done = f().with_context(|| format!("setup step `{name}`"))?;
    let secs = start.elapsed().as_secs_f64();
    match done {
        Done::Cached(what) => eprintln!("setup: [{name}] {what} ({secs:.1} s)"),
        Done::Installed(what) => eprintln!("setup: [{name}] {what}: done in {secs:.1} s"),
    }
    Ok(())
}

fn apt_packages() -> anyhow::Result<Done> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(Done::Cached(format!("all {} present", APT_PACKAGES.len())));
    }
    eprintln!("setup: [Debian packages] installing {}", missing.join(" "));
    apt_update()?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing);
    run(install)?;
    Ok(Done::Installed(format!("installed {}", missing.join(" "))))
}

/// Builds bpf-linker against the LLVM shared library that ships with the
/// pinned rustc: bitcode from rustc must be read by the same LLVM, and no
/// prebuilt binary can be downloaded here. Cached per (bpf-linker version,
/// rustc LLVM version).
fn bpf_linker() -> anyhow::Result<Done> {
    let rustc_vv = cmd_output(Command::new("rustc").arg("-vV"))?;
    let llvm_version = rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("rustc -vV printed no LLVM version")?
        .trim()
        .to_owned();
    let major = llvm_version
        .split('.')
        .next()
        .unwrap_or_default()
        .to_owned();
    let root = cache_dir().join("bpf-linker").join(BPF_LINKER_VERSION);
    let stamp = root.join("llvm-version");
    let bin = root.join("bin/bpf-linker");
    let what = format!("bpf-linker {BPF_LINKER_VERSION} for rustc's LLVM {llvm_version}");
    if bin.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == llvm_version) {
        return Ok(Done::Cached(format!(
            "{what}: cached in {}",
            root.display()
        )));
    }
    eprintln!("setup: [bpf-linker] building {what} (cargo install, about a minute)");
    let sysroot =
        PathBuf::from(cmd_output(Command::new("rustc").args(["--print", "sysroot"]))?.trim());
    let lib = find_libllvm(&sysroot.join("lib"))?;
    let prefix = cache_dir().join(format!("llvm-prefix-{llvm_version}"));
    std::fs::create_dir_all(prefix.join("lib"))?;
    // llvm-sys links against lib/libLLVM.so; the binary's rpath points at
    // this lib/ and the loader looks for the soname there, so both names
    // resolve to the toolchain's library even outside `rustup run`.
    let soname = lib.file_name().context("libLLVM path has no file name")?;
    for name in [std::ffi::OsStr::new("libLLVM.so"), soname] {
        let link = prefix.join("lib").join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), lib.display()))?;
    }
    let mut install = Command::new("cargo");
    install
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--force",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .arg("--root")
        .arg(&root)
        .env("LLVM_PREFIX", &prefix)
        // Build with the pinned toolchain regardless of the caller's cwd.
        .current_dir(crate::util::workspace_root());
    run(install)?;
    std::fs::write(&stamp, &llvm_version)?;
    Ok(Done::Installed(format!(
        "built {what} into {}",
        root.display()
    )))
}

/// cargo-fuzz, which builds and runs the fuzz targets (`cargo xtask fuzz`).
pub const CARGO_FUZZ_VERSION: &str = "0.13.1";

fn cargo_fuzz_root() -> PathBuf {
    cache_dir().join("cargo-fuzz").join(CARGO_FUZZ_VERSION)
}

pub fn cargo_fuzz_bin() -> PathBuf {
    cargo_fuzz_root().join("bin/cargo-fuzz")
}

/// cargo-fuzz from crates.io into the cache (no prebuilt binary can be
/// downloaded here); installed on first use by `cargo xtask fuzz`.
pub fn cargo_fuzz() -> anyhow::Result<Done> {
    let what = format!("cargo-fuzz {CARGO_FUZZ_VERSION}");
    if cargo_fuzz_bin().exists() {
        return Ok(Done::Cached(format!(
            "{what}: cached in {}",
            cargo_fuzz_root().display()
        )));
    }
    eprintln!("setup: [cargo-fuzz] building {what} (cargo install, under a minute)");
    let mut install = Command::new("cargo");
    install
        .args(["install", "cargo-fuzz", "--locked", "--force", "--version"])
        .arg(CARGO_FUZZ_VERSION)
        .arg("--root")
        .arg(cargo_fuzz_root())
        .current_dir(crate::util::workspace_root());
    run(install)?;
    Ok(Done::Installed(format!(
        "built {what} into {}",
        cargo_fuzz_root().display()
    )))
}

/// kubernetes-validate's pinned release: it carries the Kubernetes OpenAPI
/// schemas, so the deploy tests validate offline.
const KUBERNETES_VALIDATE: &str = "1.31.0";
/// grpcio and grpcio-tools for the Python client (clients/python): its
/// stubs were generated by this release, and the interop test runs it.
const GRPCIO: &str = "1.68.1";

/// What the deploy and client tests run: `kubectl` (for `kubectl
/// kustomize`), and in a venv under the cache kubernetes-validate and
/// grpcio with grpcio-tools.
fn deploy_tools() -> anyhow::Result<Done> {
    let mut did = Vec::new();
    let has_kubectl = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_kubectl {
        // Debian ships kubectl as `kubernetes-client`; Kubernetes's own apt
        // repository (when configured) as `kubectl`, a newer one.
        let candidate = |p: &str| {
            Command::new("apt-cache")
                .args(["policy", p])
                .output()
                .is_ok_and(|o| {
                    let text = String::from_utf8_lossy(&o.stdout);
                    text.contains("Candidate:") && !text.contains("Candidate: (none)")
                })
        };
        let package = if candidate("kubectl") {
            "kubectl"
        } else {
            "kubernetes-client"
        };
        run(apt(&[
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            package,
        ]))?;
        did.push(format!("installed {package}"));
    }
    let venv = cache_dir().join("venv");
    let validate = venv.join("bin/kubernetes-validate");
    let current = Command::new(&validate)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(KUBERNETES_VALIDATE))
        && Command::new(venv.join("bin/python"))
            .args([
                "-c",
                &format!("import grpc, grpc_tools, wheel; assert grpc.__version__ == '{GRPCIO}'"),
            ])
            .output()
            .is_ok_and(|o| o.status.success());
    if !current {
        run({
            let mut c = Command::new("/usr/bin/python3");
            c.args(["-m", "venv"]).arg(&venv);
            c
        })?;
        run({
            let mut c = Command::new(venv.join("bin/pip"));
            c.args([
                "install",
                "-q",
                &format!("kubernetes-validate=={KUBERNETES_VALIDATE}"),
                &format!("grpcio=={GRPCIO}"),
                &format!("grpcio-tools=={GRPCIO}"),
                // Builds clients/python without network (pip install
                // --no-build-isolation).
                "wheel==0.45.1",
            ]);
            c
        })?;
        did.push(format!(
            "kubernetes-validate {KUBERNETES_VALIDATE}, grpcio {GRPCIO} in {}",
            venv.display()
        ));
    }
    Ok(if did.is_empty() {
        Done::Cached(format!(
            "kubectl, kubernetes-validate {KUBERNETES_VALIDATE}, grpcio {GRPCIO} present"
        ))
    } else {
        Done::Installed(did.join(", "))
    })
}

fn find_libllvm(lib_dir: &Path) -> anyhow::Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM") && n.contains(".so"))
        })
        .collect();
    candidates.sort();
    match candidates.pop() {
        Some(p) => Ok(p),
        None => bail!(
            "no libLLVM shared library in {}; the toolchain in rust-toolchain.toml must ship one",
            lib_dir.display()
        ),
    }
}
