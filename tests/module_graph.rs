//! The shape of `src/`, checked: the modules import each other one way
//! only (the library's, and each binary's under `src/bin/`), each opens
//! with a doc comment on what it owns, and none grows past 500 lines of
//! code outside its tests.
//!
//! The module graph is built from every `crate::` path and `super::`
//! reference in the code (not only `use` lines), with comments and test
//! modules left out. A file `src/a.rs` or `src/a/b.rs` belongs to module
//! `a`; references inside one module do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest a file in `src/` may be before its tests.
const MAX_LINES: usize = 500;

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The library's files, by the top-level module each belongs to (the
/// crate root, `main.rs` and the `sse-load` binary are not modules of the
/// library).
fn library_files() -> Vec<(String, PathBuf)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .filter_map(|path| {
            let relative = path.strip_prefix(&src).unwrap().to_owned();
            let first = relative
                .components()
                .next()?
                .as_os_str()
                .to_str()?
                .to_owned();
            let module = first.trim_end_matches(".rs").to_owned();
            (!matches!(module.as_str(), "lib" | "main" | "bin")).then_some((module, path))
        })
        .collect()
}

/// The code of a file: comments removed (doc links are not imports), and
/// every `#[cfg(test)]` item removed with its braces.
fn code_without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut skip_depth: Option<i32> = None;
    let mut pending_test_attr = false;
    let mut depth = 0i32;
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let trimmed = code.trim();
        if skip_depth.is_none() && trimmed == "#[cfg(test)]" {
            pending_test_attr = true;
            continue;
        }
        if pending_test_attr && !trimmed.is_empty() {
            pending_test_attr = false;
            skip_depth = Some(depth);
        }
        let opens = code.matches('{').count() as i32;
        let closes = code.matches('}').count() as i32;
        depth += opens - closes;
        match skip_depth {
            Some(start) => {
                // The item ends when its braces close (or at a `;` on a
                // one-line item such as `use` or `mod x;`).
                if depth <= start && (closes > 0 || trimmed.ends_with(';')) {
                    skip_depth = None;
                }
            }
            None => {
                out.push_str(code);
                out.push('\n');
            }
        }
    }
    out
}

/// The top-level modules `code` refers to: `crate::a`, `crate::{a, b::c}`,
/// and (from a file `depth` levels below the crate root) `super::` paths
/// that climb out of its module.
fn references(code: &str, depth: usize) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = code.as_bytes();
    let ident = |from: usize| -> String {
        code[from..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let add_path_start = |from: usize, found: &mut BTreeSet<String>| {
        if bytes.get(from) == Some(&b'{') {
            // A group: every name at the group's top level.
            let mut level = 0;
            let mut start = from + 1;
            for (i, c) in code[from..].char_indices() {
                let at = from + i;
                match c {
                    '{' => level += 1,
                    '}' => {
                        level -= 1;
                        if level == 0 {
                            found.insert(ident_trim(&code[start..at]));
                            break;
                        }
                    }
                    ',' if level == 1 => {
                        found.insert(ident_trim(&code[start..at]));
                        start = at + 1;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(from));
        }
    };
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `my_crate::`
        }
        add_path_start(at + "crate::".len(), &mut found);
    }
    for (at, _) in code.match_indices("super::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // counted from the first `super::` of a chain
        }
        let mut from = at;
        let mut climbs = 0;
        while code[from..].starts_with("super::") {
            climbs += 1;
            from += "super::".len();
        }
        if climbs >= depth {
            add_path_start(from, &mut found);
        }
    }
    found.retain(|name| !name.is_empty());
    found
}

/// The first path segment of one entry of a `use` group.
fn ident_trim(entry: &str) -> String {
    entry
        .trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// A cycle in `graph`, as the list of modules around it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let start = path.iter().position(|n| n == next).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(cycle) = visit(next, graph, state, path) {
                        return Some(cycle);
                    }
                }
            }
        }
        path.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node.as_str())
            && let Some(cycle) = visit(node, graph, &mut state, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

/// Module -> the modules it refers to.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let files = library_files();
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in &files {
        let depth = path.strip_prefix(&src).unwrap().components().count();
        let text = std::fs::read_to_string(path).unwrap();
        let targets = graph.entry(module.clone()).or_default();
        for target in references(&code_without_tests(&text), depth) {
            if target != *module && modules.contains(&target) {
                targets.insert(target);
            }
        }
    }
    graph
}

#[test]
fn modules_import_each_other_one_way_only() {
    let graph = module_graph();
    assert!(graph.len() >= 15, "the graph was read: {graph:?}");
    assert!(
        graph["server"].contains("hub") && graph["hub"].contains("ring"),
        "edges are found: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "an import cycle: {}\nthe graph:\n{}",
            cycle.join(" -> "),
            graph
                .iter()
                .map(|(m, t)| format!(
                    "  {m} -> {}",
                    t.iter().cloned().collect::<Vec<_>>().join(", ")
                ))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// A binary's module graph (`src/bin/<name>/`): each file is a module,
/// `main.rs` the root. The root declares (and so depends on) every module;
/// a module that names anything of the root's own (`crate::Args`) depends
/// on the root: an import upward, which closes a cycle.
fn binary_graph(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(dir, &mut files);
    // A file `a.rs` or `a/b.rs` belongs to module `a`, as in the library.
    let module_of = |path: &Path| -> (String, usize) {
        let relative = path.strip_prefix(dir).unwrap();
        let first = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        (
            first.trim_end_matches(".rs").to_owned(),
            relative.components().count(),
        )
    };
    let modules: BTreeSet<String> = files.iter().map(|p| module_of(p).0).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in &files {
        let (module, depth) = module_of(path);
        let code = code_without_tests(&std::fs::read_to_string(path).unwrap());
        let targets = graph.entry(module.clone()).or_default();
        if module == "main" {
            for line in code.lines().map(str::trim) {
                if let Some(name) = line.strip_prefix("mod ").and_then(|l| l.strip_suffix(';')) {
                    targets.insert(name.to_owned());
                }
            }
            continue;
        }
        for target in references(&code, depth) {
            if target == module {
                continue;
            }
            let target = if modules.contains(&target) {
                target
            } else {
                "main".to_owned()
            };
            targets.insert(target);
        }
    }
    graph
}

#[test]
fn the_load_client_imports_one_way_only() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin/sse-load");
    let graph = binary_graph(&dir);
    assert!(
        graph["main"].contains("workers") && graph["connections"].contains("sockets"),
        "edges are found: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "an import cycle in sse-load: {}\n{graph:?}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn an_import_of_the_root_is_an_import_upward() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.rs"),
        "mod a;\npub(crate) struct Args;\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("a.rs"), "use crate::Args;\n").unwrap();
    let graph = binary_graph(dir.path());
    assert!(graph["a"].contains("main"), "{graph:?}");
    assert!(find_cycle(&graph).is_some());
}

#[test]
fn every_module_says_what_it_owns_and_stays_small() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("//!"),
            "{} does not open with a //! doc comment",
            path.display()
        );
        let lines = text
            .lines()
            .take_while(|line| line.trim() != "#[cfg(test)]")
            .count();
        assert!(
            lines <= MAX_LINES,
            "{} has {lines} lines before its tests (at most {MAX_LINES})",
            path.display()
        );
    }
}

#[test]
fn the_reader_finds_every_kind_of_reference() {
    let code = "use crate::{a, b::c, d::{e, f}};\nfn g() { crate::h::i(); my_crate::x(); }\n\
                use super::j;\nuse super::super::k::l;\n";
    let from_top = references(code, 1);
    assert_eq!(
        from_top,
        ["a", "b", "d", "h", "j", "k"].map(String::from).into()
    );
    let nested = references(code, 2);
    assert_eq!(nested, ["a", "b", "d", "h", "k"].map(String::from).into());
}

#[test]
fn test_modules_and_comments_are_left_out() {
    let text = "//! see crate::doc\nuse crate::a;\n// crate::b\n#[cfg(test)]\nmod tests {\n    use crate::c;\n    fn f() { if x { crate::d(); } }\n}\nfn g() { crate::e::f(); }\n#[cfg(test)]\nuse crate::z;\n";
    let code = code_without_tests(text);
    assert_eq!(references(&code, 1), ["a", "e"].map(String::from).into());
}

#[test]
fn a_cycle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(m, t)| (m.to_owned(), t.into_iter().map(String::from).collect()))
    .collect();
    let cycle = find_cycle(&graph).expect("a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
    let acyclic: BTreeMap<String, BTreeSet<String>> = [("a", vec!["b"]), ("b", vec![])]
        .into_iter()
        .map(|(m, t)| (m.to_owned(), t.into_iter().map(String::from).collect()))
        .collect();
    assert_eq!(find_cycle(&acyclic), None);
}

#[test]
fn the_readme_layout_names_every_file_in_src() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let layout = readme
        .split("## Layout")
        .nth(1)
        .expect("a Layout section")
        .split("```")
        .nth(1)
        .expect("the layout block");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    for file in files {
        let name = file
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let folder = name
            .rsplit_once('/')
            .map(|(dir, _)| format!("{dir}/"))
            .unwrap_or_default();
        assert!(
            layout.lines().any(|l| l.starts_with(&format!("{name} ")))
                || (folder.starts_with("src/bin/") && layout.contains(&folder)),
            "the README's layout does not name {name}"
        );
    }
}
