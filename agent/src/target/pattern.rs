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
    /// The targets `pattern` matches at or below `scope` (a cgroup path
    /// relative to the mount, "" for the whole tree), each as the target to
    /// apply a fault to and the cgroup it resolves to, in path order. Only
    /// the part of the tree both the pattern and the scope reach is read.
    /// A unit name is listed as a unit target only when the whole tree was
    /// searched and it occurs once; otherwise by cgroup path (a unit target
    /// could be ambiguous).
    pub fn list(
        &self,
        pattern: &TargetPattern,
        scope: &str,
    ) -> Result<Vec<(TargetSpec, ResolvedCgroup)>, TargetError> {
        let scope = scope.trim_matches('/');
        let scope_parts: Vec<&str> = if scope.is_empty() {
            Vec::new()
        } else {
            scope.split('/').collect()
        };
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
                // Walk from the deeper of the glob's literal prefix and the
                // scope, and only into directories the rest of the glob can
                // still match: a pattern under one subtree does not read the
                // whole tree, and an agent does not read outside its scope.
                let literal = parts.iter().take_while(|p| !p.contains('*')).count();
                let literal = &parts[..literal.min(parts.len().saturating_sub(1))];
                let start = if scope_parts.len() <= literal.len() {
                    if !literal.starts_with(&scope_parts) {
                        return Ok(Vec::new());
                    }
                    literal.join("/")
                } else {
                    if glob_path(&parts, &scope_parts) {
                        paths.push(scope.to_owned());
                    }
                    if !could_match(&parts, &scope_parts) {
                        return self.resolved(paths);
                    }
                    scope.to_owned()
                };
                if !start.is_empty() && !self.mount.join(&start).is_dir() {
                    return Ok(Vec::new());
                }
                self.walk_from(&start, &format!("cgroup glob {glob}"), depth, |path, _| {
                    let components: Vec<&str> = path.split('/').collect();
                    if glob_path(&parts, &components) {
                        paths.push(path.to_owned());
                    }
                    could_match(&parts, &components)
                })?;
                return self.resolved(paths);
            }
            TargetPattern::UnitGlob(glob) => {
                // The pattern's literal parts must be unit-name characters.
                validate_unit_name(&glob.replace('*', "x"))?;
                let mut found: Vec<(String, String)> = Vec::new();
                if let Some(name) = scope_parts.last()
                    && wildcard(glob, name)
                    && self.mount.join(scope).is_dir()
                {
                    found.push(((*name).to_owned(), scope.to_owned()));
                }
                if scope.is_empty() || self.mount.join(scope).is_dir() {
                    self.walk_from(
                        scope,
                        &format!("unit glob {glob}"),
                        MAX_UNIT_DEPTH,
                        |path, name| {
                            if wildcard(glob, name) {
                                found.push((name.to_owned(), path.to_owned()));
                            }
                            true
                        },
                    )?;
                }
                for (name, path) in &found {
                    let unique =
                        scope.is_empty() && found.iter().filter(|(n, _)| n == name).count() == 1;
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
                    Ok(cgroup) if in_scope(&scope_parts, &cgroup.path) => {
                        out.push((target, cgroup));
                    }
                    Ok(_) => {}
                    Err(TargetError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        out.sort_by(|a, b| a.1.path.cmp(&b.1.path));
        Ok(out)
    }

    /// Glob matches as cgroup path targets, in path order.
    fn resolved(
        &self,
        mut paths: Vec<String>,
    ) -> Result<Vec<(TargetSpec, ResolvedCgroup)>, TargetError> {
        paths.sort();
        paths
            .into_iter()
            .map(|path| {
                let cgroup = self.resolve_path(&path)?;
                Ok((TargetSpec::CgroupPath(path), cgroup))
            })
            .collect()
    }
}

/// Whether `path` is the scope or below it.
fn in_scope(scope: &[&str], path: &str) -> bool {
    scope.is_empty() || path.split('/').take(scope.len()).eq(scope.iter().copied())
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

/// Whether a directory at `path` may hold a match below it: its components
/// match the glob's first ones (up to a `**`, which matches any depth).
fn could_match(glob: &[&str], path: &[&str]) -> bool {
    for (i, p) in path.iter().enumerate() {
        match glob.get(i) {
            Some(&"**") => return true,
            Some(g) if wildcard(g, p) => {}
            _ => return false,
        }
    }
    path.len() < glob.len()
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
        let c = |glob: &str, path: &str| {
            could_match(
                &glob.split('/').collect::<Vec<_>>(),
                &path.split('/').collect::<Vec<_>>(),
            )
        };
        assert!(c("a/*/c", "a/b"));
        assert!(!c("a/*/c", "x/b"));
        assert!(!c("a/*/c", "a/b/c"), "no match lies below a full match");
        assert!(c("a/**/c", "a/b/c/d"));
    }
}
