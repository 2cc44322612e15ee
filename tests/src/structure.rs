//! The workspace's shape, checked: no module of a crate imports, through
//! `crate::` paths, a module that imports it back, directly or through
//! others. A cycle makes both ends impossible to change or test alone (the
//! buy coordinator could not be tested without a node while `buy` and
//! `node` named each other).
//!
//! The check reads the sources: a crate's top-level modules are the files
//! and folders under its `src/`; an edge is a `crate::<module>` path
//! outside comments and outside unit-test code (`tests.rs` files, `tests/`
//! folders, and a file's `#[cfg(test)] mod ...` and what follows it). Test
//! code may reach anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The workspace's crates, by the folder of their sources.
const CRATES: &[&str] = &["api", "net", "raft-node", "client", "cli", "frontend", "tests"];

/// Each top-level module of the crate whose sources are in `src` and the
/// crate's modules it names.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    collect(src, src, &mut files);
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    files
        .iter()
        .map(|(module, paths)| {
            let mut uses = BTreeSet::new();
            for path in paths {
                let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                for named in crate_paths(&text) {
                    if named != *module && modules.contains(&named) {
                        uses.insert(named);
                    }
                }
            }
            (module.clone(), uses)
        })
        .collect()
}

/// The `.rs` files under `dir`, by the top-level module they belong to;
/// `lib.rs`, `main.rs`, binaries and test files are left out.
fn collect(root: &Path, dir: &Path, files: &mut BTreeMap<String, Vec<PathBuf>>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let rel = path.strip_prefix(root).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if matches!(top.as_str(), "lib" | "main" | "bin") {
            continue;
        }
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "tests") {
                continue;
            }
            collect(root, &path, files);
        } else if path.extension().is_some_and(|e| e == "rs") && path.file_name().is_some_and(|n| n != "tests.rs") {
            files.entry(top).or_default().push(path);
        }
    }
}

/// The modules named by `crate::<module>` in `text`, outside comments and
/// before its unit tests.
fn crate_paths(text: &str) -> Vec<String> {
    let mut named = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") && lines.peek().is_some_and(|next| next.trim_start().starts_with("mod ")) {
            break;
        }
        if code.starts_with("//") {
            continue;
        }
        let code = code.split("//").next().unwrap_or("");
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                named.push(name);
            }
        }
        // `use crate::{a, b::c}` names several.
        if let Some(group) = code.split("crate::{").nth(1) {
            for item in group.split([',', '}']) {
                let name: String = item.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    named.push(name);
                }
            }
        }
    }
    named
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in &s.graph[v] {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut found = Vec::new();
    for krate in CRATES {
        let graph = module_graph(&workspace.join(krate).join("src"));
        assert!(graph.len() > 1 || *krate == "api" || *krate == "net", "{krate}: modules found: {graph:?}");
        for cycle in cycles(&graph) {
            let edges: Vec<String> = cycle
                .iter()
                .map(|m| {
                    let back: Vec<&str> = graph[m].iter().filter(|n| cycle.contains(n)).map(String::as_str).collect();
                    format!("{m} -> {}", back.join(", "))
                })
                .collect();
            found.push(format!("{krate}: {}", edges.join("; ")));
        }
    }
    assert!(found.is_empty(), "import cycles between modules:\n{}", found.join("\n"));
}

#[test]
fn the_check_sees_a_cycle_and_ignores_comments_and_tests() {
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("buy", vec!["node"]), ("node", vec!["http"]), ("http", vec!["buy"]), ("store", vec![])]
            .into_iter()
            .map(|(m, uses)| (m.to_string(), uses.into_iter().map(String::from).collect()))
            .collect();
    assert_eq!(cycles(&graph), vec![vec!["buy".to_string(), "http".into(), "node".into()]]);

    let text = "use crate::{node::Node, store};\n// see crate::http\nfn f() { crate::sm::x(); } // crate::buy\n\
                #[cfg(test)]\nmod tests { use crate::retention; }\n";
    assert_eq!(crate_paths(text), ["node", "store", "sm"]);
}
