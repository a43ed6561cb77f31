//! The module graph of each crate, read from its sources: which module
//! imports which. The unit tests check that no crate has an import loop
//! and that the agent's modules import only what docs/design.md's map
//! allows them.
//!
//! What counts as an import: a `use` of, or a path through, an item of
//! another module (`crate::a::b`, `super::x`, `child::y`), with `pub use`
//! re-exports followed to the module that defines the item. A module
//! using its own submodules is composition, not an import. Loops are
//! looked for at each level of nesting: among a crate's top-level
//! modules, and among the children of each module, with everything below
//! a child counted as the child.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// A module path inside a crate, `[]` for the crate root.
pub type ModPath = Vec<String>;

/// A crate's modules and the imports between them.
#[derive(Debug, Default)]
pub struct Graph {
    /// Every module, with the file that holds it.
    pub modules: BTreeMap<ModPath, PathBuf>,
    /// Importer -> imported modules (defining modules, re-exports followed).
    pub edges: BTreeMap<ModPath, BTreeSet<ModPath>>,
}

/// Reads every module of the crate whose root file is `root` (`src/lib.rs`
/// or `src/main.rs`); `src/bin/` and tests are other crates.
pub fn read_crate(root: &Path) -> anyhow::Result<Graph> {
    let src = root.parent().context("crate root has no directory")?;
    let mut graph = Graph::default();
    let mut sources = BTreeMap::new();
    collect(src, root, Vec::new(), &mut graph.modules, &mut sources)?;
    // Items re-exported by `pub use child::Item` resolve to the child.
    let mut reexports: BTreeMap<(ModPath, String), ModPath> = BTreeMap::new();
    for (module, text) in &sources {
        for n in named_paths(text)
            .into_iter()
            .filter(|n| n.reexport && n.inline.is_empty())
        {
            if let Some(target) = resolve(&graph.modules, module, &[], &n.path) {
                reexports.insert((module.clone(), n.name), target);
            }
        }
    }
    for (module, text) in &sources {
        let mut deps = BTreeSet::new();
        for n in named_paths(text) {
            let Some(mut target) = resolve(&graph.modules, module, &n.inline, &n.path) else {
                continue;
            };
            // `a::Item` where `a` re-exports `Item` from `a::child`.
            if let Some(real) =
                reexports.get(&(target.clone(), n.path.last().cloned().unwrap_or_default()))
            {
                target = real.clone();
            }
            if !target.starts_with(module) {
                deps.insert(target);
            }
        }
        graph.edges.insert(module.clone(), deps);
    }
    Ok(graph)
}

fn collect(
    dir: &Path,
    file: &Path,
    module: ModPath,
    modules: &mut BTreeMap<ModPath, PathBuf>,
    sources: &mut BTreeMap<ModPath, String>,
) -> anyhow::Result<()> {
    let text = fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let clean = strip(&text);
    modules.insert(module.clone(), file.to_path_buf());
    // Children of `foo.rs` or `foo/mod.rs` live in `foo/`.
    let child_dir = match file.file_name().and_then(|n| n.to_str()) {
        Some("mod.rs" | "lib.rs" | "main.rs") => dir.to_path_buf(),
        _ => dir.join(file.file_stem().context("module file without a stem")?),
    };
    for name in child_modules(&clean) {
        let flat = child_dir.join(format!("{name}.rs"));
        let nested = child_dir.join(&name).join("mod.rs");
        let (path, sub_dir) = if flat.is_file() {
            (flat, child_dir.clone())
        } else if nested.is_file() {
            (nested, child_dir.join(&name))
        } else {
            bail!(
                "{}: module {name} has neither {} nor {}",
                file.display(),
                flat.display(),
                nested.display()
            );
        };
        let mut child = module.clone();
        child.push(name);
        collect(&sub_dir, &path, child, modules, sources)?;
    }
    sources.insert(module, clean);
    Ok(())
}

/// `mod x;` declarations (not inline `mod x { ... }`, whose contents stay
/// part of this file's module).
fn child_modules(text: &str) -> Vec<String> {
    let tokens = tokens(text);
    let mut out = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if t == "mod"
            && let (Some(name), Some(end)) = (tokens.get(i + 1), tokens.get(i + 2))
            && end == ";"
        {
            out.push(name.clone());
        }
    }
    out
}

/// The source without comments and string or char literals, so that paths
/// inside them are not read as imports.
fn strip(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1).copied()) {
            (b'/', Some(b'/')) => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            (b'/', Some(b'*')) => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            (b'r', Some(b'"' | b'#')) if i == 0 || !is_ident(b[i - 1]) => {
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                j += 1;
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                while j < b.len() && !b[j..].starts_with(&close) {
                    j += 1;
                }
                out.push_str("\"\"");
                i = j + close.len();
            }
            (b'"', _) => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            // A char literal ('x', '\n'), not a lifetime ('a).
            (b'\'', _) => {
                let rest = &b[i + 1..];
                let len = if rest.first() == Some(&b'\\') {
                    rest.iter().skip(1).position(|&c| c == b'\'').map(|p| p + 2)
                } else {
                    let ch = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                    (rest.get(ch) == Some(&b'\'')).then_some(ch)
                };
                match len {
                    Some(n) => {
                        out.push_str("' '");
                        i += n + 2;
                    }
                    None => {
                        out.push('\'');
                        i += 1;
                    }
                }
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or(' ');
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Identifiers, `::` and single punctuation characters.
fn tokens(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if is_ident(c) {
            let start = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            out.push(text[start..i].to_owned());
        } else if c == b':' && b.get(i + 1) == Some(&b':') {
            out.push("::".to_owned());
            i += 2;
        } else {
            let ch = text[i..].chars().next().unwrap_or(' ');
            out.push(ch.to_string());
            i += ch.len_utf8();
        }
    }
    out
}

/// A path a file names: from where (inline `mod x { }` blocks it sits in),
/// the path, the name it binds, and whether it is a `pub use`.
#[derive(Debug)]
struct Named {
    inline: Vec<String>,
    path: Vec<String>,
    name: String,
    reexport: bool,
}

/// Every `use` path and every inline `crate::`/`super::` path of a file.
fn named_paths(text: &str) -> Vec<Named> {
    let tokens = tokens(text);
    let mut out = Vec::new();
    // Inline modules: (name, brace depth at which it closes).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let tok = tokens[i].as_str();
        match tok {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            "mod" if tokens.get(i + 2).map(String::as_str) == Some("{") => {
                inline.push((tokens[i + 1].clone(), depth));
            }
            "use" => {
                let reexport = i > 0 && (tokens[i - 1] == "pub" || tokens[i - 1] == ")");
                let end = tokens[i..]
                    .iter()
                    .position(|t| t == ";")
                    .map_or(tokens.len(), |p| i + p);
                let mut pos = i + 1;
                for (path, name) in use_tree(&tokens[..end], &mut pos) {
                    out.push(Named {
                        inline: inline.iter().map(|(n, _)| n.clone()).collect(),
                        path,
                        name,
                        reexport,
                    });
                }
                i = end;
            }
            "crate" | "super"
                if tokens.get(i + 1).map(String::as_str) == Some("::")
                    && (i == 0 || tokens[i - 1] != "::") =>
            {
                let mut path = vec![tok.to_owned()];
                let mut j = i + 1;
                while tokens.get(j).map(String::as_str) == Some("::")
                    && tokens.get(j + 1).is_some_and(|t| is_ident(t.as_bytes()[0]))
                {
                    path.push(tokens[j + 1].clone());
                    j += 2;
                }
                let name = path.last().cloned().unwrap_or_default();
                out.push(Named {
                    inline: inline.iter().map(|(n, _)| n.clone()).collect(),
                    path,
                    name,
                    reexport: false,
                });
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// One use tree from `t[*pos]`: its paths, each with the name it binds
/// (`self` in a group binds the group's module).
fn use_tree(t: &[String], pos: &mut usize) -> Vec<(Vec<String>, String)> {
    let mut prefix = Vec::new();
    while let Some(tok) = t.get(*pos) {
        match tok.as_str() {
            "::" => *pos += 1,
            "{" => {
                *pos += 1;
                let mut out = Vec::new();
                while t.get(*pos).is_some_and(|t| t != "}") {
                    for (path, name) in use_tree(t, pos) {
                        let mut full = prefix.clone();
                        if path.as_slice() != ["self"] {
                            full.extend(path);
                        }
                        let name = if name == "self" {
                            prefix.last().cloned().unwrap_or_default()
                        } else {
                            name
                        };
                        out.push((full, name));
                    }
                    if t.get(*pos).map(String::as_str) == Some(",") {
                        *pos += 1;
                    }
                }
                *pos += 1;
                return out;
            }
            "*" => {
                *pos += 1;
                return vec![(prefix, "*".to_owned())];
            }
            "as" => {
                let alias = t.get(*pos + 1).cloned().unwrap_or_default();
                *pos += 2;
                return vec![(prefix, alias)];
            }
            "," | "}" => break,
            ident => {
                prefix.push(ident.to_owned());
                *pos += 1;
            }
        }
    }
    let name = prefix.last().cloned().unwrap_or_default();
    vec![(prefix, name)]
}

/// The module a path leads into (the longest prefix naming a module), or
/// None for paths into other crates.
fn resolve(
    modules: &BTreeMap<ModPath, PathBuf>,
    from: &ModPath,
    inline: &[String],
    path: &[String],
) -> Option<ModPath> {
    let mut base: ModPath;
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            base = Vec::new();
            rest = &path[1..];
        }
        Some("super") => {
            // Inside `mod tests { }` the first `super`s climb out of the
            // inline modules, back to the file's module.
            let mut inline_left = inline.len();
            base = from.clone();
            while rest.first().map(String::as_str) == Some("super") {
                if inline_left > 0 {
                    inline_left -= 1;
                } else {
                    base.pop()?;
                }
                rest = &rest[1..];
            }
            if inline_left > 0 {
                // Still inside an inline module: nothing of another file.
                return Some(from.clone());
            }
        }
        Some("self") => {
            base = from.clone();
            rest = &path[1..];
        }
        Some(first) => {
            // 2018 paths: a child module of this one, named directly (not
            // from inside an inline module, whose children are inline).
            if !inline.is_empty() {
                return None;
            }
            let mut child = from.clone();
            child.push(first.to_owned());
            if !modules.contains_key(&child) {
                return None;
            }
            base = from.clone();
        }
        None => return None,
    }
    for seg in rest {
        let mut next = base.clone();
        next.push(seg.clone());
        if modules.contains_key(&next) {
            base = next;
        } else {
            break;
        }
    }
    Some(base)
}

/// A loop among the modules at one level, as the modules in order, if
/// there is one. Levels: the crate's top-level modules, then the children
/// of each module.
pub fn find_loop(graph: &Graph) -> Option<Vec<ModPath>> {
    let parents: BTreeSet<ModPath> = graph
        .modules
        .keys()
        .filter_map(|m| m.split_last().map(|(_, p)| p.to_vec()))
        .collect();
    for parent in parents {
        // Children of `parent`, and the edges between them.
        let level = parent.len() + 1;
        let child_of = |m: &ModPath| -> Option<ModPath> {
            (m.len() >= level && m.starts_with(&parent)).then(|| m[..level].to_vec())
        };
        let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
        for (from, tos) in &graph.edges {
            let Some(a) = child_of(from) else { continue };
            for to in tos {
                if let Some(b) = child_of(to)
                    && a != b
                {
                    edges.entry(a.clone()).or_default().insert(b);
                }
            }
        }
        if let Some(cycle) = cycle_in(&edges) {
            return Some(cycle);
        }
    }
    None
}

fn cycle_in(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Option<Vec<ModPath>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        n: &ModPath,
        edges: &BTreeMap<ModPath, BTreeSet<ModPath>>,
        marks: &mut BTreeMap<ModPath, Mark>,
        stack: &mut Vec<ModPath>,
    ) -> Option<Vec<ModPath>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = stack.iter().position(|m| m == n).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(n.clone());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(n.clone(), Mark::Open);
        stack.push(n.clone());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, marks, stack) {
                return Some(c);
            }
        }
        stack.pop();
        marks.insert(n.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in edges.keys() {
        if let Some(c) = visit(n, edges, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

/// `a::b` for display; `crate` for the root.
pub fn name(m: &[String]) -> String {
    if m.is_empty() {
        "crate".to_owned()
    } else {
        m.join("::")
    }
}

/// The agent's map in docs/design.md: each top-level module with the
/// modules it may import, from the table rows
/// `| \`module\` | job | \`a\`, \`b\` |` under the heading "Module map".
pub fn design_map(design: &str) -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    let section = design
        .split("\n## ")
        .find(|s| s.starts_with("Module map"))
        .context("docs/design.md has no \"## Module map\" section")?;
    let mut map = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [module, _job, imports] = cells.as_slice() else {
            bail!("module map row with other than three cells: {line}");
        };
        let ticked = |cell: &str| -> BTreeSet<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        };
        let module = ticked(module)
            .into_iter()
            .next()
            .context("module map row without a module name")?;
        map.insert(module, ticked(imports));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::workspace_root;

    /// Every crate's root files (libraries and binaries). `src/bin/*` are
    /// crates of their own.
    fn crate_roots() -> Vec<PathBuf> {
        let root = workspace_root();
        let mut roots = Vec::new();
        for krate in fs::read_dir(&root).expect("workspace root").flatten() {
            let src = krate.path().join("src");
            for file in ["lib.rs", "main.rs"] {
                if src.join(file).is_file() {
                    roots.push(src.join(file));
                }
            }
            for bin in fs::read_dir(src.join("bin"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let p = bin.path();
                if p.extension().is_some_and(|e| e == "rs") {
                    roots.push(p);
                } else if p.join("main.rs").is_file() {
                    roots.push(p.join("main.rs"));
                }
            }
        }
        roots.sort();
        roots
    }

    #[test]
    fn no_crate_has_an_import_loop() {
        let roots = crate_roots();
        assert!(roots.len() >= 6, "found only {roots:?}");
        let mut loops = Vec::new();
        for root in roots {
            let graph = read_crate(&root).expect("reading the crate");
            if let Some(cycle) = find_loop(&graph) {
                let names: Vec<String> = cycle.iter().map(|m| name(m)).collect();
                loops.push(format!("{}: {}", root.display(), names.join(" -> ")));
            }
        }
        assert!(loops.is_empty(), "import loops:\n{}", loops.join("\n"));
    }

    #[test]
    fn the_agent_imports_only_what_the_design_map_allows() {
        let root = workspace_root();
        let design = fs::read_to_string(root.join("docs/design.md")).expect("docs/design.md");
        let map = design_map(&design).expect("module map");
        let graph = read_crate(&root.join("agent/src/lib.rs")).expect("agent");
        let top: BTreeSet<String> = graph
            .modules
            .keys()
            .filter(|m| m.len() == 1)
            .map(|m| m[0].clone())
            .collect();
        let mapped: BTreeSet<String> = map.keys().cloned().collect();
        assert_eq!(
            top, mapped,
            "docs/design.md's module map and agent/src differ"
        );
        for (from, tos) in &graph.edges {
            let Some(a) = from.first() else { continue };
            for to in tos {
                let Some(b) = to.first() else { continue };
                if a != b {
                    assert!(
                        map[a].contains(b),
                        "{} imports {} ({}), which docs/design.md's module map does not allow \
                         for `{a}`",
                        name(from),
                        name(to),
                        graph.modules[from].display()
                    );
                }
            }
        }
    }

    #[test]
    fn reads_uses_reexports_and_inline_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path();
        fs::write(
            src.join("lib.rs"),
            "mod a;\nmod b;\nmod c;\n// use crate::c; in a comment\nconst S: &str = \"crate::c::x\";\n",
        )
        .expect("write");
        fs::create_dir(src.join("a")).expect("mkdir");
        fs::write(src.join("a/mod.rs"), "mod inner;\npub use inner::Thing;\n").expect("write");
        fs::write(
            src.join("a/inner.rs"),
            "use crate::b::{self, x::{Y, Z as W}};\n",
        )
        .expect("write");
        fs::write(src.join("b.rs"), "pub mod x;\nfn f() { crate::c::g(); }\n").expect("write");
        fs::create_dir(src.join("b")).expect("mkdir");
        fs::write(src.join("b/x.rs"), "pub struct Y;\n").expect("write");
        fs::write(src.join("c.rs"), "use super::a::Thing;\n").expect("write");
        let g = read_crate(&src.join("lib.rs")).expect("read");
        let p = |s: &str| -> ModPath { s.split("::").map(str::to_owned).collect() };
        assert_eq!(
            g.edges[&Vec::new()],
            BTreeSet::new(),
            "comments and strings are not imports"
        );
        assert_eq!(g.edges[&p("a::inner")], BTreeSet::from([p("b"), p("b::x")]));
        assert_eq!(g.edges[&p("b")], BTreeSet::from([p("c")]));
        // The re-export leads to the defining module.
        assert_eq!(g.edges[&p("c")], BTreeSet::from([p("a::inner")]));
        let cycle = find_loop(&g).expect("a -> b -> c -> a");
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4, "{cycle:?}");
    }
}
