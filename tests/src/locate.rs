//! Finding the workspace's binaries from inside a test, bench or example.
//!
//! `env!("CARGO_BIN_EXE_<name>")` exists only for integration tests of the package
//! that owns the binary, so the kit looks next to the running executable instead:
//! cargo puts test and bench executables in `target/<profile>/deps/` and examples in
//! `target/<profile>/examples/`, and binaries in `target/<profile>/`.

use std::path::{Path, PathBuf};

/// Finds `name` in the cargo output directory the current executable was built into
/// (`target/<profile>/`, or `target/<triple>/<profile>/` when cross-building),
/// walking up from the executable but never above a directory called `target`.
pub fn target_sibling(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    sibling_of(&exe, name)
}

fn sibling_of(exe: &Path, name: &str) -> Option<PathBuf> {
    // deps/ -> <profile>/ -> <triple>/ -> target/: four levels cover every layout.
    for dir in exe.ancestors().skip(1).take(4) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Some(candidate);
        }
        if dir.file_name().is_some_and(|n| n == "target") {
            break;
        }
    }
    None
}

/// The binary named by `env_var` if set, else [`target_sibling`]; panics with
/// `build_hint` when neither exists, because every caller needs the binary to go on.
pub(crate) fn locate_binary(env_var: &str, name: &str, build_hint: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{env_var}={} does not name a file; unset it or point it at the `{name}` binary",
            path.display()
        );
        return path;
    }
    target_sibling(name).unwrap_or_else(|| {
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|e| format!("<current_exe failed: {e}>"));
        panic!(
            "cannot find the `{name}` binary next to {exe} (looked in its cargo target \
             profile directory); build it first with `{build_hint}` using the same \
             profile, or set {env_var} to its path"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_binary_in_profile_dir_from_deps() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let profile = tmp.path().join("target/debug");
        std::fs::create_dir_all(profile.join("deps")).expect("mkdir deps");
        std::fs::write(profile.join("faultd-traffic"), b"").expect("write bin");
        let exe = profile.join("deps/kit_smoke-0123456789abcdef");
        assert_eq!(
            sibling_of(&exe, "faultd-traffic"),
            Some(profile.join("faultd-traffic"))
        );
        // An example lives one level down as well.
        let example = profile.join("examples/demo-0123");
        assert_eq!(
            sibling_of(&example, "faultd-traffic"),
            Some(profile.join("faultd-traffic"))
        );
    }

    #[test]
    fn does_not_walk_above_target() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // A stray binary above target/ must not be picked up.
        std::fs::write(tmp.path().join("faultd"), b"").expect("write stray");
        let deps = tmp.path().join("target/release/deps");
        std::fs::create_dir_all(&deps).expect("mkdir");
        assert_eq!(sibling_of(&deps.join("bench-1"), "faultd"), None);
    }
}
