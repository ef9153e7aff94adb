//! The deployment recipes of docs/gateway.md stay usable: every YAML block parses (each
//! document of it), the recipes for each gateway are there, and every `--flag` any code
//! block names is one `portcullis serve --help` lists.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::process::Command;

use serde::Deserialize;

const DOC: &str = include_str!("../docs/gateway.md");

/// The fenced code blocks of the page: (language, text).
fn code_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in markdown.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(lang)) => open = Some((lang.trim().to_string(), String::new())),
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some((_, text)), None) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(
        open.is_none(),
        "a code block of docs/gateway.md is not closed"
    );
    blocks
}

fn serve_flags() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split(|c: char| c.is_whitespace() || c == '[' || c == ']')
        .map(|w| w.trim_end_matches([',', '=']))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_string)
        .collect()
}

#[test]
fn every_yaml_recipe_parses_and_each_gateway_has_one() {
    let yaml: Vec<String> = code_blocks(DOC)
        .into_iter()
        .filter(|(lang, _)| lang == "yaml")
        .map(|(_, text)| text)
        .collect();
    for text in &yaml {
        for doc in serde_yaml_ng::Deserializer::from_str(text) {
            if let Err(e) = serde_yaml_ng::Value::deserialize(doc) {
                panic!("a YAML recipe does not parse: {e}\n{text}");
            }
        }
    }
    // (gateway, a line its recipe cannot do without)
    let expected = [
        ("Envoy over HTTP", "path_prefix: /ext-authz"),
        ("Envoy over gRPC", "envoy_grpc:"),
        ("Istio's mesh provider", "envoyExtAuthzGrpc:"),
        ("Istio's CUSTOM policy", "action: CUSTOM"),
        ("Envoy Gateway", "kind: SecurityPolicy"),
        ("Traefik", "forwardAuth:"),
        ("a route table", "routes:"),
    ];
    for (gateway, line) in expected {
        assert!(
            yaml.iter().any(|t| t.contains(line)),
            "no YAML recipe for {gateway} (`{line}`) in docs/gateway.md"
        );
    }
    let blocks = code_blocks(DOC);
    for lang in ["nginx", "caddy"] {
        assert!(
            blocks.iter().any(|(l, _)| l == lang),
            "no {lang} recipe in docs/gateway.md"
        );
    }
}

#[test]
fn every_flag_a_recipe_names_is_one_serve_accepts() {
    let known = serve_flags();
    assert!(known.contains("--ext-authz-prefix"), "{known:?}");
    let mut named = BTreeSet::new();
    for (_, text) in code_blocks(DOC) {
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            if word
                .strip_prefix("--")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_lowercase()))
            {
                named.insert(word.to_string());
            }
        }
    }
    let unknown: Vec<&String> = named.iter().filter(|f| !known.contains(*f)).collect();
    assert!(
        unknown.is_empty(),
        "docs/gateway.md recipes name flags `serve` does not have: {unknown:?}"
    );
    assert!(!named.is_empty(), "the recipes name no flag at all");
}
