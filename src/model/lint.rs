//! Warnings about a valid model: places where the decision silently depends on data
//! being present. Cedar skips a policy whose condition errors, so a forbid that reads
//! an attribute of an entity reached through a reference (`resource.account.owner`)
//! is skipped when that entity is missing from the data, and what it guards may then
//! be allowed. `portcullis validate` prints these; they do not stop a load.

use serde_json::Value;

use super::snapshot::{PolicyKind, Snapshot};
use super::source::Problem;

/// The forbids (static and template-linked) that an evaluation error would skip, with
/// the expression that can error.
pub fn forbids_skipped_on_missing_data(snapshot: &Snapshot) -> Vec<Problem> {
    let mut out = Vec::new();
    for policy in snapshot.policies.policies() {
        if policy.effect() != cedar_policy::Effect::Forbid {
            continue;
        }
        let Ok(json) = policy.to_json() else {
            continue;
        };
        let mut reads = Vec::new();
        if let Some(conditions) = json.get("conditions").and_then(Value::as_array) {
            for c in conditions {
                if let Some(body) = c.get("body") {
                    dereferences(body, snapshot, &mut reads);
                }
            }
        }
        reads.sort();
        reads.dedup();
        if reads.is_empty() {
            continue;
        }
        let id = policy.id().to_string();
        let info = snapshot.info.iter().find(|p| p.id == id);
        let (file, line) = info.map_or((String::new(), None), |p| (p.file.clone(), p.line));
        let what = if info.is_some_and(|p| p.kind == PolicyKind::Link) {
            "link"
        } else {
            "forbid"
        };
        out.push(Problem {
            file,
            line,
            column: None,
            message: format!(
                "{what} `{id}` reads {}: when that entity is missing from the data the condition errors and Cedar skips this forbid (guard with `has`, or keep the referenced entities present)",
                reads
                    .iter()
                    .map(|r| format!("`{r}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    out
}

/// The path an expression reads, when it is a variable or an attribute chain on one
/// (`resource.account`).
fn path_of(expr: &Value) -> Option<String> {
    if let Some(var) = expr.get("Var").and_then(Value::as_str) {
        return Some(var.to_string());
    }
    if let Some(e) = expr.get("Value").and_then(|v| v.get("__entity")) {
        let (ty, id) = (e.get("type")?.as_str()?, e.get("id")?.as_str()?);
        return Some(format!("{ty}::{}", Value::from(id)));
    }
    let dot = expr.get(".")?;
    let left = path_of(dot.get("left")?)?;
    let attr = dot.get("attr")?.as_str()?;
    Some(format!("{left}.{attr}"))
}

/// Whether an expression yields an entity other than the request's own principal and
/// resource (which `--require-entities` makes present): an entity literal, or an
/// attribute the schema types as a reference.
fn reaches_other_entity(expr: &Value, snapshot: &Snapshot) -> bool {
    if expr
        .get("Value")
        .is_some_and(|v| v.get("__entity").is_some())
    {
        return true;
    }
    expr.get(".")
        .and_then(|d| d.get("attr"))
        .and_then(Value::as_str)
        .is_some_and(|attr| snapshot.types.is_reference(attr))
}

/// Collects every attribute read (`.`, `has`, `getTag`, `hasTag`) whose left side is
/// another entity.
fn dereferences(expr: &Value, snapshot: &Snapshot, out: &mut Vec<String>) {
    match expr {
        Value::Object(map) => {
            for (op, inner) in map {
                if let ("." | "has" | "getTag" | "hasTag", Some(left)) =
                    (op.as_str(), inner.get("left"))
                {
                    if reaches_other_entity(left, snapshot) {
                        let base = path_of(left).unwrap_or_else(|| "an entity".to_string());
                        let member = inner
                            .get("attr")
                            .and_then(Value::as_str)
                            .map_or_else(|| format!("{base}.{op}(..)"), |a| format!("{base}.{a}"));
                        out.push(member);
                    }
                }
                dereferences(inner, snapshot, out);
            }
        }
        Value::Array(items) => {
            for i in items {
                dereferences(i, snapshot, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{compile, SourceFile, Sources};

    #[test]
    fn the_portal_isolation_guard_is_reported_and_guards_on_the_principal_are_not() {
        let snap = compile(&Sources::embedded()).unwrap();
        let warnings = forbids_skipped_on_missing_data(&snap);
        let text: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|w| w
                .contains("`user-account-isolation` reads `resource.account.owner`")
                && w.starts_with("policies/guards.cedar:")),
            "{text:#?}"
        );
        // `principal.disabled` reads the principal itself, which must exist.
        assert!(
            !text.iter().any(|w| w.contains("disabled-user-denied")),
            "{text:#?}"
        );
    }

    #[test]
    fn a_guarded_permit_is_not_reported_but_a_forbid_through_a_literal_is() {
        let mut sources = Sources::embedded();
        sources.policies.push(SourceFile::new(
            "extra.cedar",
            "@id(\"acme-owner-only\")\nforbid (principal, action, resource is Portal::Invoice)\nwhen { Portal::Account::\"acme\".owner != principal };\n@id(\"permit-through\")\npermit (principal, action, resource is Portal::Invoice)\nwhen { resource.account.owner == principal };\n",
        ));
        let snap = compile(&sources).unwrap();
        let text: Vec<String> = forbids_skipped_on_missing_data(&snap)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            text.iter().any(|w| w.starts_with(
                "extra.cedar:1: forbid `acme-owner-only` reads `Portal::Account::\"acme\".owner`"
            )),
            "{text:#?}"
        );
        assert!(
            !text.iter().any(|w| w.contains("permit-through")),
            "{text:#?}"
        );
    }
}
