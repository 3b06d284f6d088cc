//! Architecture invariant: the gateway's modules form one-way layers (docs/ARCHITECTURE.md).
//!
//! A small source scan: every `crate::<module>` a file of `src/` names is an import of that
//! top-level module. No import may point to a higher layer, no two modules may import each
//! other (nor any longer circle form), and no two files of one folder may import each
//! other through `super::`. A new top-level module must be given a layer here, which is the
//! point: its place is decided, not accidental.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every top-level module of `gateway/src` and its layer (0 is the bottom).
const LAYERS: &[(&str, u8)] = &[
    ("vocab", 0),
    ("metrics", 0),
    ("shutdown", 0),
    ("telemetry", 0),
    ("auth", 1),
    ("hub", 1),
    ("broker", 1),
    ("error", 2),
    ("stream", 2),
    ("routes", 2),
    ("demo", 2),
    ("server", 3),
    ("config", 4),
    ("lib", 4),
    ("main", 4),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments (line, block and doc comments) and string literals, so a
/// path named in prose or in a string is not an import.
fn code_only(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'r' if bytes.get(i + 1) == Some(&b'#') && bytes.get(i + 2) == Some(&b'"') => {
                let end = source[i + 3..]
                    .find("\"#")
                    .map_or(bytes.len(), |at| i + 3 + at + 2);
                i = end;
                out.push_str("\"\"");
            }
            byte => {
                out.push(byte as char);
                i += 1;
            }
        }
    }
    out
}

/// The identifiers right after `prefix`: `prefix name` or each first name of a
/// `prefix{a, b::c, {d, e}}` group.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let ident = |text: &str| -> String {
        text.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let preceded_by_ident = rest[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        let after = &rest[at + prefix.len()..];
        rest = after;
        if preceded_by_ident {
            continue;
        }
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 1;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start && depth == 1 => {
                        let name = ident(&group[i..]);
                        if !name.is_empty() {
                            names.insert(name);
                        }
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(after);
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// `gateway/src/a/b.rs` → (`a`, folder `a`, file stem `b`).
fn place(src: &Path, file: &Path) -> (String, PathBuf, String) {
    let relative = file.strip_prefix(src).expect("under src");
    let top = relative
        .components()
        .next()
        .expect("a component")
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_owned();
    let folder = relative.parent().unwrap_or(Path::new("")).to_path_buf();
    let stem = file
        .file_stem()
        .expect("a stem")
        .to_string_lossy()
        .into_owned();
    (top, folder, stem)
}

#[test]
fn imports_point_down_the_layers_and_never_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    // Module → modules it imports.
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // (folder, file) → sibling files it names through `super::`.
    let mut siblings: BTreeMap<(PathBuf, String), BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let (module, folder, stem) = place(&src, file);
        let Some(own_layer) = layer(&module) else {
            problems.push(format!(
                "{}: module `{module}` has no layer in tests/layers.rs LAYERS",
                file.display()
            ));
            continue;
        };
        let code = code_only(&std::fs::read_to_string(file).expect("read source"));
        for imported in names_after(&code, "crate::") {
            if imported == module {
                continue;
            }
            let Some(their_layer) = layer(&imported) else {
                problems.push(format!(
                    "{}: names `crate::{imported}`, which has no layer",
                    file.display()
                ));
                continue;
            };
            if their_layer > own_layer {
                problems.push(format!(
                    "{}: `{module}` (layer {own_layer}) imports `{imported}` (layer {their_layer}), a layer above it",
                    file.display()
                ));
            }
            graph.entry(module.clone()).or_default().insert(imported);
        }
        if stem != "mod" && !folder.as_os_str().is_empty() {
            let named = names_after(&code, "super::");
            siblings.insert((folder, stem), named);
        }
    }
    // No circle among modules (two modules importing each other is the shortest one).
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        problems: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_owned());
            problems.push(format!("modules import each other: {}", circle.join(" → ")));
            return;
        }
        if !done.insert(node.to_owned()) {
            return;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, path, done, problems);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done, &mut problems);
    }
    for ((folder, file), named) in &siblings {
        for other in named {
            let back = siblings
                .get(&(folder.clone(), other.clone()))
                .is_some_and(|theirs| theirs.contains(file));
            if back && file < other {
                problems.push(format!(
                    "{}: `{file}` and `{other}` import each other",
                    folder.display()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the layer rule of docs/ARCHITECTURE.md is broken:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_scan_sees_imports_in_every_form() {
    let code = code_only(
        "use crate::hub::Mailbox;\nuse crate::{auth::Auth, stream::{A, B}, error};\n// use crate::server;\nlet x = \"crate::config\";\nfn f() { crate::metrics::Metrics::new(); }",
    );
    let names: Vec<String> = names_after(&code, "crate::").into_iter().collect();
    assert_eq!(names, ["auth", "error", "hub", "metrics", "stream"]);
}
