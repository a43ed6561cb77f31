//! A check that no module of xtask imports, directly or through others, a
//! module that imports it: the modules form layers, so each can be read
//! (and changed) knowing only the ones below it.
//!
//! The graph is read from the sources: module `a` depends on module `b`
//! when a path in `a` (a `use` declaration, or `crate::`, `super::`,
//! `self::`, a child module's or an imported module's name followed by
//! `::` in code) names `b` or an item of `b`. Declaring a module (`mod b;`)
//! is not a dependency, and neither is test code (`#[cfg(test)] mod ..
//! { .. }`); method calls on another module's types are only seen through
//! the import of the type.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

/// A module, as its path from the crate root (`[]` is the root).
type Module = Vec<String>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    /// `::`
    Colons,
    Punct(char),
}

/// The source without comments, string and character literals.
fn strip(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '/' if c.get(i + 1) == Some(&'/') => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '/' if c.get(i + 1) == Some(&'*') => {
                let mut depth = 0;
                while i < c.len() {
                    if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                out.push(' ');
            }
            'r' if c.get(i + 1) == Some(&'"') || c.get(i + 1) == Some(&'#') => {
                // A raw string r"..." or r#"..."#, else an identifier.
                let mut j = i + 1;
                let mut hashes = 0;
                while c.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if c.get(j) != Some(&'"') {
                    out.push(c[i]);
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= c.len() {
                        break;
                    }
                    if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
            }
            '"' => {
                i += 1;
                while i < c.len() && c[i] != '"' {
                    i += if c[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            '\'' => {
                // 'x', '\n', '\u{..}' are characters; 'a alone is a lifetime.
                if c.get(i + 1) == Some(&'\\') {
                    // Past the quote, the backslash and the escaped character.
                    i += 3;
                    while i < c.len() && c[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if c.get(i + 2) == Some(&'\'') {
                    i += 3;
                } else {
                    i += 1;
                }
                out.push(' ');
            }
            ch => {
                out.push(ch);
                i += 1;
            }
        }
    }
    out
}

fn tokens(src: &str) -> Vec<Token> {
    let c: Vec<char> = strip(src).chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(c[start..i].iter().collect()));
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push(Token::Colons);
            i += 2;
        } else {
            if !ch.is_whitespace() {
                out.push(Token::Punct(ch));
            }
            i += 1;
        }
    }
    out
}

/// The tokens without `#[cfg(test)]` modules written inline.
fn without_test_modules(t: Vec<Token>) -> Vec<Token> {
    let attr: Vec<Token> = tokens("#[cfg(test)]");
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let inline_test_mod = t[i..].starts_with(&attr)
            && t.get(i + attr.len()) == Some(&Token::Ident("mod".into()))
            && t.get(i + attr.len() + 2) == Some(&Token::Punct('{'));
        if !inline_test_mod {
            out.push(t[i].clone());
            i += 1;
            continue;
        }
        i += attr.len() + 2;
        let mut depth = 0;
        while i < t.len() {
            match t[i] {
                Token::Punct('{') => depth += 1,
                Token::Punct('}') => depth -= 1,
                _ => {}
            }
            i += 1;
            if depth == 0 {
                break;
            }
        }
    }
    out
}

/// The paths a `use` tree names, from `t[*i]` (after `use`) to its `;`.
/// Each path comes with the name it binds (`None` for globs).
fn use_tree(
    t: &[Token],
    i: &mut usize,
    prefix: &[String],
    out: &mut Vec<(Module, Option<String>)>,
) {
    let mut path = prefix.to_vec();
    loop {
        match t.get(*i) {
            Some(Token::Ident(name)) if name == "as" => {
                *i += 1;
                if let Some(Token::Ident(alias)) = t.get(*i) {
                    *i += 1;
                    out.push((path.clone(), Some(alias.clone())));
                }
                return;
            }
            Some(Token::Ident(name)) if name == "self" && !path.is_empty() => {
                *i += 1;
                let bound = path.last().cloned();
                out.push((path.clone(), bound));
            }
            Some(Token::Ident(name)) => {
                path.push(name.clone());
                *i += 1;
            }
            Some(Token::Colons) => *i += 1,
            Some(Token::Punct('*')) => {
                *i += 1;
                out.push((path.clone(), None));
                return;
            }
            Some(Token::Punct('{')) => {
                *i += 1;
                loop {
                    match t.get(*i) {
                        Some(Token::Punct('}')) => {
                            *i += 1;
                            return;
                        }
                        Some(Token::Punct(',')) => *i += 1,
                        None => return,
                        _ => use_tree(t, i, &path, out),
                    }
                }
            }
            _ => {
                if path.len() > prefix.len() {
                    let bound = path.last().cloned();
                    out.push((path, bound));
                }
                return;
            }
        }
    }
}

/// Every path in a module's tokens: the `use` trees (with the names they
/// bind) and the `a::b` paths in code.
fn paths(t: &[Token]) -> (Vec<(Module, Option<String>)>, Vec<Module>) {
    let (mut uses, mut code) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < t.len() {
        if t[i] == Token::Ident("use".into()) {
            i += 1;
            use_tree(t, &mut i, &[], &mut uses);
            continue;
        }
        let starts = matches!(t[i], Token::Ident(_))
            && t.get(i + 1) == Some(&Token::Colons)
            && (i == 0 || t[i - 1] != Token::Colons);
        if !starts {
            i += 1;
            continue;
        }
        let mut path = Vec::new();
        while let Some(Token::Ident(name)) = t.get(i) {
            path.push(name.clone());
            i += 1;
            if t.get(i) != Some(&Token::Colons) {
                break;
            }
            i += 1;
        }
        code.push(path);
    }
    (uses, code)
}

/// The module a path names from module `from`, or `None` for another
/// crate, a local item or a generic parameter.
fn resolve(
    from: &Module,
    path: &[String],
    modules: &BTreeSet<Module>,
    bound: &BTreeMap<String, Module>,
) -> Option<Module> {
    let (mut at, mut rest): (Module, &[String]) = match path.first()?.as_str() {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (from.clone(), &path[1..]),
        "super" => {
            let mut at = from.clone();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                at.pop()?;
                rest = &rest[1..];
            }
            (at, rest)
        }
        first => {
            let mut child = from.clone();
            child.push(first.to_owned());
            if modules.contains(&child) {
                (child, &path[1..])
            } else {
                (bound.get(first)?.clone(), &path[1..])
            }
        }
    };
    while let Some(next) = rest.first() {
        let mut child = at.clone();
        child.push(next.clone());
        if !modules.contains(&child) {
            break;
        }
        at = child;
        rest = &rest[1..];
    }
    Some(at)
}

/// The dependency graph of the modules whose sources are given as
/// (module, source).
fn graph(sources: &[(Module, String)]) -> BTreeMap<Module, BTreeSet<Module>> {
    let modules: BTreeSet<Module> = sources.iter().map(|(m, _)| m.clone()).collect();
    let mut edges = BTreeMap::new();
    for (module, src) in sources {
        let (uses, code) = paths(&without_test_modules(tokens(src)));
        let none = BTreeMap::new();
        let mut bound = BTreeMap::new();
        for (path, name) in &uses {
            if let (Some(name), Some(target)) = (name, resolve(module, path, &modules, &none)) {
                // Only a name for the module itself binds a module.
                let names_module = target.last() == path.last() && !target.is_empty();
                if names_module {
                    bound.insert(name.clone(), target);
                }
            }
        }
        let targets: BTreeSet<Module> = uses
            .iter()
            .map(|(p, _)| p)
            .chain(&code)
            .filter_map(|p| resolve(module, p, &modules, &bound))
            .filter(|t| t != module)
            .collect();
        edges.insert(module.clone(), targets);
    }
    edges
}

/// A loop in the graph, as the modules along it, if there is one.
fn find_loop(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        at: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        done: &mut BTreeSet<Module>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(pos) = stack.iter().position(|m| m == at) {
            let mut found = stack[pos..].to_vec();
            found.push(at.clone());
            return Some(found);
        }
        if done.contains(at) {
            return None;
        }
        stack.push(at.clone());
        for next in edges.get(at).into_iter().flatten() {
            if let Some(found) = visit(next, edges, done, stack) {
                return Some(found);
            }
        }
        stack.pop();
        done.insert(at.clone());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|m| visit(m, edges, &mut done, &mut Vec::new()))
}

/// xtask's modules and their sources, from the file layout under `src`.
fn crate_sources(src: &Path) -> Vec<(Module, String)> {
    fn walk(dir: &Path, module: &Module, out: &mut Vec<(Module, String)>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut child = module.clone();
            if path.is_dir() {
                child.push(name);
                walk(&path, &child, out);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            if name != "mod" && !(module.is_empty() && name == "main") {
                child.push(name);
            }
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            out.push((child, text));
        }
    }
    let mut out = Vec::new();
    walk(src, &Vec::new(), &mut out);
    out
}

fn show(m: &Module) -> String {
    if m.is_empty() {
        "crate".to_owned()
    } else {
        m.join("::")
    }
}

#[test]
fn xtask_modules_import_no_loop() {
    let sources = crate_sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let edges = graph(&sources);
    // The reading works: known imports are seen.
    let edge = |a: &str, b: &str| {
        let m = |s: &str| -> Module { s.split("::").map(str::to_owned).collect() };
        edges.get(&m(a)).is_some_and(|t| t.contains(&m(b)))
    };
    assert!(edge("bench::loss::measure", "bench::api"), "{edges:?}");
    assert!(edge("bench::syscall_vm", "bench::syscall"), "{edges:?}");
    assert!(edge("test", "vm"), "{edges:?}");
    assert!(edge("vm::bench", "vm::initramfs"), "{edges:?}");
    if let Some(found) = find_loop(&edges) {
        let path: Vec<String> = found.iter().map(show).collect();
        panic!("xtask's modules import in a loop: {}", path.join(" -> "));
    }
}

#[test]
fn finds_loops_through_super_and_imported_modules() {
    let m = |s: &str| -> Module { s.split("::").map(str::to_owned).collect() };
    let sources = |a: &str, b: &str| {
        vec![
            (Vec::new(), "mod x;".to_owned()),
            (
                m("x"),
                "pub mod a; pub mod b; pub const K: u8 = 1;".to_owned(),
            ),
            (m("x::a"), a.to_owned()),
            (m("x::b"), b.to_owned()),
        ]
    };
    // a -> b through an imported module name, b -> a through super::.
    let looped = sources(
        "use crate::x::b; fn f() { b::g(); }",
        "// use crate::x::a;\nfn g() { super::a::f(); }",
    );
    let found = find_loop(&graph(&looped)).expect("a loop");
    assert!(
        found.contains(&m("x::a")) && found.contains(&m("x::b")),
        "{found:?}"
    );
    // b only names a in a comment, a string, a test module and a char.
    let layered = sources(
        "use super::{b::{self, g}, K as _};",
        "const S: &str = \"crate::x::a\"; fn c() -> char { '\"' }\n\
         #[cfg(test)]\nmod tests { use crate::x::a::*; }",
    );
    let edges = graph(&layered);
    assert!(find_loop(&edges).is_none(), "{edges:?}");
    assert!(edges[&m("x::a")].contains(&m("x::b")), "{edges:?}");
    assert!(edges[&m("x::a")].contains(&m("x")), "{edges:?}");
}
