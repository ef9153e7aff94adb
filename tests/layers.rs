//! The shape of the crate: each top-level module of `src/` imports only from the
//! layers below its own, as ARCHITECTURE.md draws them. Reads every `crate::<module>`
//! path in `src/` (in `use` lines and inline), so an import that climbs a layer, or
//! one between siblings of a layer, fails here with its file and line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, bottom-up. A module may import any module of a lower layer, none of
/// its own layer but itself, and none above.
const LAYERS: &[&[&str]] = &[
    &["config", "metrics"],
    &["model"],
    &["entities"],
    &["decision", "plan"],
    &["authzen", "gateway", "policytest", "verify", "fmt"],
    &["http"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/http/app.rs` -> `http`);
/// `None` for the crate root and the binary.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// Every `crate::<module>` named in a line of code (comments skipped), including
/// `use crate::{a, b}` groups.
fn imports(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or_default();
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
        rest = after;
    }
    out
}

/// Violations in `files`: (file:line, importer, imported).
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let Some(module) = module_of(src, &file) else {
            continue;
        };
        let Some(own) = layer_of(&module) else {
            found.push(format!(
                "{}: module `{module}` is in no layer of tests/layers.rs (add it there and to ARCHITECTURE.md)",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for imported in imports(line) {
                if imported == module || imported == "error_chain" {
                    continue;
                }
                let Some(theirs) = layer_of(&imported) else {
                    continue;
                };
                if theirs >= own {
                    found.push(format!(
                        "{}:{}: `{module}` (layer {own}) imports `{imported}` (layer {theirs})",
                        file.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn each_module_imports_only_from_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(
        found.is_empty(),
        "layering violations:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_module_of_the_crate_has_a_layer() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    assert!(declared.len() >= 10, "{declared:?}");
    let missing: Vec<&&str> = declared.iter().filter(|m| layer_of(m).is_none()).collect();
    assert!(missing.is_empty(), "modules without a layer: {missing:?}");
}

#[test]
fn the_check_sees_a_climbing_import_and_a_sibling_import() {
    // The checker itself must be able to fail: a model file importing `http`, and an
    // AuthZEN file importing the gateway, are both reported.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("model")).unwrap();
    std::fs::create_dir_all(src.join("authzen")).unwrap();
    std::fs::write(src.join("model/mod.rs"), "use crate::http::App;\n").unwrap();
    std::fs::write(
        src.join("authzen/mod.rs"),
        "// use crate::http is only a comment\nfn f() { crate::gateway::x(); }\nuse crate::{decision, model};\n",
    )
    .unwrap();
    let found = violations(src);
    let summary: BTreeMap<String, usize> = found.iter().fold(BTreeMap::new(), |mut m, v| {
        *m.entry(v.split(": ").nth(1).unwrap_or_default().to_string())
            .or_default() += 1;
        m
    });
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        summary.contains_key("`model` (layer 1) imports `http` (layer 5)"),
        "{summary:?}"
    );
    assert!(
        summary.contains_key("`authzen` (layer 4) imports `gateway` (layer 4)"),
        "{summary:?}"
    );
}
