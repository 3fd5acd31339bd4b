//! The crate's layers (README "Layout"): imports point down only, from
//! `command` to `repository` to `format` and `io`, and no module imports
//! one that imports it back. Reads `src/` and fails naming the import that
//! runs the wrong way or the circle it closes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// How high a module sits: it may import only modules below it, and
/// modules of its own layer as long as no circle forms. `format` and `io`
/// sit side by side and import neither each other nor anything above.
fn rank(module: &str) -> (u8, &str) {
    let layer = module.split("::").next().unwrap_or(module);
    match layer {
        "main" | "lib" | "cli" | "metrics" => (4, "top"),
        "command" => (3, "command"),
        "repository" => (2, "repository"),
        "format" => (1, "format"),
        "io" => (1, "io"),
        "error" | "log" | "progress" => (0, "base"),
        other => panic!("src/ holds a module outside the layers: {other}"),
    }
}

/// `src/a/b.rs` → `a::b`, `src/a/mod.rs` → `a`, `src/lib.rs` → `lib`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().map(String::as_str) == Some("mod") {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its test module and comments.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules (of `known`) that `module`'s code names: `crate::a::b`,
/// `super::x`, and in `lib.rs` the bare `a::b`.
fn imports(module: &str, code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut resolve = |path: &[&str]| {
        // the longest prefix that is a module
        for n in (1..=path.len().min(3)).rev() {
            let m = path[..n].join("::");
            if known.contains(&m) {
                if m != module {
                    found.insert(m);
                }
                return;
            }
        }
        // crate-root re-exports
        match path.first() {
            Some(&"Log") => {
                found.insert("log".to_string());
            }
            Some(&"Error") | Some(&"Result") => {
                found.insert("error".to_string());
            }
            _ => {}
        }
    };
    // the path at the start of `s`: `a::b::C` of `a::b::C::new(...)`
    let path_at = |s: &str| -> Vec<String> {
        s.split("::")
            .map(|w| {
                w.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|w| !w.is_empty())
            .collect()
    };
    let parent: Vec<&str> = module.split("::").collect();
    for (i, _) in code.match_indices("crate::") {
        let path = path_at(&code[i + "crate::".len()..]);
        resolve(&path.iter().map(String::as_str).collect::<Vec<_>>());
    }
    for (i, _) in code.match_indices("super::") {
        if i > 0 && code[..i].ends_with("::") {
            continue;
        }
        let rest = path_at(&code[i + "super::".len()..]);
        let mut path: Vec<&str> = parent[..parent.len().saturating_sub(1)].to_vec();
        path.extend(rest.iter().map(String::as_str));
        resolve(&path);
    }
    if module == "lib" || module == "main" {
        for line in code.lines() {
            let l = line.trim_start();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            if let Some(rest) = l.strip_prefix("use ") {
                let rest = rest.strip_prefix("repozo::").unwrap_or(rest);
                let path = path_at(rest);
                resolve(&path.iter().map(String::as_str).collect::<Vec<_>>());
            }
        }
    }
    found
}

#[test]
fn imports_point_down_and_form_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeMap<String, PathBuf> = files
        .iter()
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (m, f) in &modules {
        let text = std::fs::read_to_string(f).unwrap();
        let deps = imports(m, &code(&text), &known);
        let (r, layer) = rank(m);
        for d in &deps {
            let (rd, dlayer) = rank(d);
            // a parent module may name its children (`pub mod`), and a
            // child its parent's shared items
            let same_layer = layer == dlayer;
            if !(rd < r || same_layer) {
                wrong.push(format!("{m} ({layer}) imports {d} ({dlayer})"));
            }
        }
        graph.insert(m.clone(), deps);
    }
    assert!(
        wrong.is_empty(),
        "imports that do not point down:\n{}",
        wrong.join("\n")
    );
    // no circles: depth-first search for a back edge
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for d in graph.get(m).into_iter().flatten() {
            match state.get(d.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == d).unwrap();
                    let mut c = stack[at..].to_vec();
                    c.push(d.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(d, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in graph.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(m, &graph, &mut state, &mut Vec::new()) {
                panic!("modules import each other: {}", c.join(" -> "));
            }
        }
    }
    // the check sees imports at all: command::backup names repository and io
    let backup = &graph["command::backup"];
    assert!(
        backup.iter().any(|d| d.starts_with("repository")),
        "{backup:?}"
    );
    assert!(backup.iter().any(|d| d.starts_with("io")), "{backup:?}");
}

/// The checker itself: an upward import and a circle are caught.
#[test]
fn the_layer_check_sees_an_upward_import_and_a_circle() {
    let known: BTreeSet<String> = [
        "io",
        "io::read",
        "io::copy",
        "command",
        "command::backup",
        "format::dat",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let deps = imports(
        "io::read",
        "use crate::command::backup::Outcome;\nfn f() { super::copy::x() }",
        &known,
    );
    assert_eq!(
        deps,
        ["command::backup", "io::copy"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert!(rank("command::backup").0 > rank("io::read").0);
    assert_ne!(rank("format::dat").1, rank("io::read").1);
    // comments and test modules are not imports
    let text = "// crate::command::backup in a comment\nfn f() {}\n#[cfg(test)]\nmod tests {\n    use crate::command::backup;\n}\n";
    assert!(imports("io::read", &code(text), &known).is_empty());
}
