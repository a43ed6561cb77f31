//! Listing the targets a pattern matches: cgroup path globs, systemd unit
//! name globs, pod uids. The coordinator's selection modes choose among
//! what these return.

use super::{
    CgroupFs, MAX_UNIT_DEPTH, ResolvedCgroup, TargetError, TargetSpec,
    names::{validate_cgroup_path, validate_unit_name},
};

/// Deepest a `**` glob looks (real trees are below 10 levels).
const MAX_GLOB_DEPTH: u32 = 16;

/// Which targets to list (`faultd.agent.v1.TargetPattern`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPattern {
    /// Cgroup paths relative to the mount; `*` within a component, `**`
    /// across components.
    CgroupGlob(String),
    /// systemd unit names anywhere in the tree, `*` as wildcard.
    UnitGlob(String),
    /// One pod, by uid.
    PodUid(String),
}

impl CgroupFs {
    /// The targets `pattern` matches, each as the target to apply a fault
    /// to and the cgroup it resolves to, in path order. A unit name found
    /// at more than one place is listed by cgroup path (a unit target would
    /// be ambiguous).
    pub fn list(
        &self,
        pattern: &TargetPattern,
    ) -> Result<Vec<(TargetSpec, ResolvedCgroup)>, TargetError> {
        let mut out = Vec::new();
        match pattern {
            TargetPattern::CgroupGlob(glob) => {
                let glob = validate_cgroup_path("spec.targets.cgroup_glob", glob)?;
                let parts: Vec<&str> = glob.split('/').collect();
                let depth = if parts.contains(&"**") {
                    MAX_GLOB_DEPTH
                } else {
                    u32::try_from(parts.len()).unwrap_or(MAX_GLOB_DEPTH)
                };
                let mut paths = Vec::new();
                self.walk(&format!("cgroup glob {glob}"), depth, |path, _| {
                    let components: Vec<&str> = path.split('/').collect();
                    if glob_path(&parts, &components) {
                        paths.push(path.to_owned());
                    }
                    true
                })?;
                for path in paths {
                    let cgroup = self.resolve_path(&path)?;
                    out.push((TargetSpec::CgroupPath(path), cgroup));
                }
            }
            TargetPattern::UnitGlob(glob) => {
                // The pattern's literal parts must be unit-name characters.
                validate_unit_name(&glob.replace('*', "x"))?;
                let mut found: Vec<(String, String)> = Vec::new();
                self.walk(
                    &format!("unit glob {glob}"),
                    MAX_UNIT_DEPTH,
                    |path, name| {
                        if wildcard(glob, name) {
                            found.push((name.to_owned(), path.to_owned()));
                        }
                        true
                    },
                )?;
                for (name, path) in &found {
                    let unique = found.iter().filter(|(n, _)| n == name).count() == 1;
                    let cgroup = self.resolve_path(path)?;
                    let target = if unique {
                        TargetSpec::SystemdUnit(name.clone())
                    } else {
                        TargetSpec::CgroupPath(path.clone())
                    };
                    out.push((target, cgroup));
                }
            }
            TargetPattern::PodUid(uid) => {
                let target = TargetSpec::Pod {
                    uid: uid.clone(),
                    container_id: None,
                };
                match self.resolve(&target) {
                    Ok(cgroup) => out.push((target, cgroup)),
                    Err(TargetError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        out.sort_by(|a, b| a.1.path.cmp(&b.1.path));
        Ok(out)
    }
}

/// Whether cgroup path `path` (relative, no leading '/') matches `glob`.
pub fn cgroup_glob_matches(glob: &str, path: &str) -> bool {
    let glob: Vec<&str> = glob.trim_matches('/').split('/').collect();
    let path: Vec<&str> = path.trim_matches('/').split('/').collect();
    glob_path(&glob, &path)
}

/// Whether the path components match the glob's: `**` matches any number
/// of components (none included), other components by [`wildcard`].
fn glob_path(glob: &[&str], path: &[&str]) -> bool {
    match (glob.split_first(), path.split_first()) {
        (None, None) => true,
        (Some((&"**", rest)), _) => {
            glob_path(rest, path) || (!path.is_empty() && glob_path(glob, &path[1..]))
        }
        (Some((g, grest)), Some((p, prest))) => wildcard(g, p) && glob_path(grest, prest),
        _ => false,
    }
}

/// `*` matches any run of characters, everything else itself.
fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    // Classic greedy match with backtracking to the last star.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == t[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_globs() {
        assert!(wildcard("app-*", "app-1"));
        assert!(wildcard("*", ""));
        assert!(wildcard("a*b*c", "axxbyyc"));
        assert!(!wildcard("a*b*c", "axxbyy"));
        assert!(wildcard("checkout-*.service", "checkout-7.service"));
        assert!(!wildcard("checkout-*.service", "checkout-7.scope"));
        let g = |glob: &str, path: &str| {
            glob_path(
                &glob.split('/').collect::<Vec<_>>(),
                &path.split('/').collect::<Vec<_>>(),
            )
        };
        assert!(g("a/*", "a/b"));
        assert!(!g("a/*", "a/b/c"));
        assert!(g("a/**/c", "a/c"));
        assert!(g("a/**/c", "a/x/y/c"));
        assert!(!g("a/**/c", "a/x/y/d"));
        assert!(g("**", "anything/at/all"));
    }
}
