//! gRPC clients that know nothing of faultd, as users' tooling would be:
//! Python grpcio (Debian's, and the newer one in the venv `./x setup`
//! makes) running tests/clients/grpc_probe.py, and grpc-go running
//! tests/clients/go_probe.go. Each returns None after printing SKIP when
//! it is not installed.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::cgroup::skip;

/// Debian's Python, with its python3-grpcio (1.51).
pub fn debian_python() -> Option<PathBuf> {
    python_with("/usr/bin/python3".into(), "grpc", "no python3-grpcio")
}

/// The venv's Python with grpcio and grpcio-tools (pinned by `./x setup`).
pub fn venv_python() -> Option<PathBuf> {
    let cache = std::env::var_os("FAULTD_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/faultd"),
        PathBuf::from,
    );
    python_with(
        cache.join("venv/bin/python"),
        "grpc, grpc_tools",
        "no venv with grpcio and grpcio-tools",
    )
}

fn python_with(python: PathBuf, modules: &str, missing: &str) -> Option<PathBuf> {
    let ok = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(&format!("{missing} (`./x setup` installs it)"));
        return None;
    }
    Some(python)
}

/// `python`'s grpcio version.
pub fn grpcio_version(python: &Path) -> String {
    let out = Command::new(python)
        .args(["-c", "import grpc; print(grpc.__version__)"])
        .output()
        .expect("python");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// Runs tests/clients/grpc_probe.py with `python` (in `netns` when given)
/// and returns its JSON; panics with the client's error when it fails.
pub fn grpc_probe(python: &Path, netns: Option<&Path>, args: &[&str]) -> serde_json::Value {
    let out = python_in(python, netns)
        .arg(clients_dir().join("grpc_probe.py"))
        .args(args)
        .output()
        .expect("running the Python probe");
    parse_json("grpc_probe.py", args, &out)
}

/// `python`, run inside the network namespace `netns` when given.
pub fn python_in(python: &Path, netns: Option<&Path>) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display()))
                .arg("--")
                .arg(python);
            c
        }
        None => Command::new(python),
    }
}

fn parse_json(what: &str, args: &[&str], out: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} {args:?} failed: {stderr}{stdout}"
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{what} output {stdout:?}: {e}"))
}

/// grpc-go's probe, built into `dir` with Debian's Go and its grpc-go
/// package (golang-google-grpc-dev) in GOPATH mode: no module download.
#[derive(Debug)]
pub struct GoProbe {
    binary: PathBuf,
    /// The grpc-go version it was built with.
    pub grpc_version: String,
}

impl GoProbe {
    pub fn build(dir: &Path) -> Option<Self> {
        const GOPATH: &str = "/usr/share/gocode";
        let version_file = Path::new(GOPATH).join("src/google.golang.org/grpc/version.go");
        let Ok(version) = std::fs::read_to_string(&version_file) else {
            skip("no grpc-go (golang-google-grpc-dev; `./x setup` installs it)");
            return None;
        };
        if Command::new("go").arg("version").output().is_err() {
            skip("no Go toolchain (golang-go; `./x setup` installs it)");
            return None;
        }
        let grpc_version = version
            .lines()
            .find_map(|l| l.trim().strip_prefix("const Version = "))
            .unwrap_or("?")
            .trim_matches('"')
            .to_owned();
        let binary = dir.join("go_probe");
        let out = Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&binary)
            .arg(clients_dir().join("go_probe.go"))
            .env("GO111MODULE", "off")
            .env("GOPATH", GOPATH)
            .env("GOCACHE", dir.join("go-cache"))
            .env("GOFLAGS", "")
            .output()
            .expect("go build");
        assert!(
            out.status.success(),
            "go build go_probe.go: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Self {
            binary,
            grpc_version,
        })
    }

    /// Health, then `method` with an empty request, on `target`.
    pub fn run(&self, target: &str, method: &str) -> serde_json::Value {
        let out = Command::new(&self.binary)
            .args([target, method])
            .output()
            .expect("go_probe");
        parse_json("go_probe", &[target, method], &out)
    }
}
