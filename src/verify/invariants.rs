//! Invariant files: what security teams keep beside the policies, in YAML.
//!
//! A file holds a list under `invariants:`. Each invariant names a property and the
//! request environments (principal type, action, resource type) it covers; see
//! `docs/verify.md` for the format.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{PolicySet, RequestEnv, Schema, ValidationMode, Validator};
use serde::Deserialize;

/// The invariants shipped with the portal model, compiled into the binary so that
/// `portcullis verify` runs from anywhere, like the model itself.
pub const EMBEDDED: &[(&str, &str)] = &[(
    "policies/invariants/portal.yaml",
    include_str!("../../policies/invariants/portal.yaml"),
)];

/// A problem with an invariant file, named by file and invariant.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: {message}")]
pub struct InvariantError {
    pub file: String,
    pub message: String,
}

impl InvariantError {
    fn new(file: &str, message: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            message: message.into(),
        }
    }
}

/// One invariant file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    invariants: Vec<InvariantSpec>,
}

/// One invariant as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvariantSpec {
    name: String,
    #[serde(default)]
    description: String,
    property: PropertyKind,
    /// The second policy set of `implies`, `disjoint` and `equivalent`, in Cedar.
    #[serde(default)]
    reference: Option<String>,
    /// The same, read from a `.cedar` file named relative to the invariant file.
    #[serde(default)]
    reference_file: Option<PathBuf>,
    #[serde(default)]
    covers: Covers,
}

/// The property an invariant states about the policy set under check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PropertyKind {
    /// No policy errors on any request (over any entity data).
    NeverErrors,
    /// Every request the policies allow, the reference set allows too: the reference
    /// is an upper bound.
    Implies,
    /// No request is allowed.
    AlwaysDenies,
    /// No request is allowed by both the policies and the reference set.
    Disjoint,
    /// The policies and the reference set decide every request alike.
    Equivalent,
}

impl PropertyKind {
    pub fn name(self) -> &'static str {
        match self {
            PropertyKind::NeverErrors => "never_errors",
            PropertyKind::Implies => "implies",
            PropertyKind::AlwaysDenies => "always_denies",
            PropertyKind::Disjoint => "disjoint",
            PropertyKind::Equivalent => "equivalent",
        }
    }

    fn needs_reference(self) -> bool {
        matches!(
            self,
            PropertyKind::Implies | PropertyKind::Disjoint | PropertyKind::Equivalent
        )
    }
}

/// Which request environments an invariant covers. Each list left empty covers every
/// value; names are full (`Portal::User`, `Portal::Action::"Login"`) or bare (`User`,
/// `Login`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Covers {
    #[serde(default)]
    pub principal_types: Vec<String>,
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub except_actions: Vec<String>,
    #[serde(default)]
    pub resource_types: Vec<String>,
}

impl Covers {
    pub fn covers(&self, env: &RequestEnv) -> bool {
        let principal = env.principal();
        let resource = env.resource();
        let action = env.action();
        let type_matches = |names: &[String], ty: &cedar_policy::EntityTypeName| -> bool {
            names.is_empty() || names.iter().any(|n| type_is(n, ty))
        };
        type_matches(&self.principal_types, principal)
            && type_matches(&self.resource_types, resource)
            && (self.actions.is_empty() || self.actions.iter().any(|n| action_is(n, action)))
            && !self.except_actions.iter().any(|n| action_is(n, action))
    }

    /// Every name must denote something in the schema, so that a typo does not
    /// silently cover nothing.
    fn check(&self, envs: &[RequestEnv]) -> Result<(), String> {
        for (field, names, is_type) in [
            ("principal_types", &self.principal_types, true),
            ("resource_types", &self.resource_types, true),
            ("actions", &self.actions, false),
            ("except_actions", &self.except_actions, false),
        ] {
            for name in names {
                let known = envs.iter().any(|e| {
                    if is_type {
                        type_is(name, e.principal()) || type_is(name, e.resource())
                    } else {
                        action_is(name, e.action())
                    }
                });
                if !known {
                    return Err(format!(
                        "`covers.{field}`: `{name}` names nothing in the schema's request environments"
                    ));
                }
            }
        }
        Ok(())
    }
}

fn type_is(name: &str, ty: &cedar_policy::EntityTypeName) -> bool {
    name == ty.to_string() || name == ty.basename()
}

fn action_is(name: &str, action: &cedar_policy::EntityUid) -> bool {
    name == action.to_string() || name == action.id().unescaped()
}

/// An invariant ready to check: its reference set parsed and validated.
#[derive(Debug, Clone)]
pub struct Invariant {
    pub name: String,
    pub description: String,
    /// The file it came from, for messages.
    pub file: String,
    pub property: PropertyKind,
    pub reference: Option<PolicySet>,
    pub covers: Covers,
}

/// Reads every `*.yaml` / `*.yml` file of a directory, in name order.
pub fn load_dir(dir: &Path, schema: &Schema) -> Result<Vec<Invariant>, InvariantError> {
    let shown = dir.display().to_string();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| InvariantError::new(&shown, format!("cannot read: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(InvariantError::new(
            &shown,
            "no `.yaml` invariant files in this directory",
        ));
    }
    let mut all = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(&file)
            .map_err(|e| InvariantError::new(&name, format!("cannot read: {e}")))?;
        let base = file.parent().unwrap_or(dir).to_path_buf();
        all.extend(parse(&name, &text, Some(&base), schema)?);
    }
    check_unique(all)
}

/// The invariants shipped with the portal model.
pub fn embedded(schema: &Schema) -> Result<Vec<Invariant>, InvariantError> {
    let mut all = Vec::new();
    for (name, text) in EMBEDDED {
        all.extend(parse(name, text, None, schema)?);
    }
    check_unique(all)
}

fn check_unique(all: Vec<Invariant>) -> Result<Vec<Invariant>, InvariantError> {
    let mut seen = std::collections::HashSet::new();
    for inv in &all {
        if !seen.insert(inv.name.clone()) {
            return Err(InvariantError::new(
                &inv.file,
                format!("invariant `{}` is defined twice", inv.name),
            ));
        }
    }
    Ok(all)
}

/// Parses one invariant file. `base` is the directory `reference_file` paths are
/// relative to; embedded invariants have none and must keep their reference inline.
pub fn parse(
    file: &str,
    text: &str,
    base: Option<&Path>,
    schema: &Schema,
) -> Result<Vec<Invariant>, InvariantError> {
    let spec: FileSpec = serde_yaml_ng::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        InvariantError::new(&format!("{file}{at}"), e.to_string())
    })?;
    let envs: Vec<RequestEnv> = schema.request_envs().collect();
    spec.invariants
        .into_iter()
        .map(|s| build(file, s, base, schema, &envs))
        .collect()
}

fn build(
    file: &str,
    spec: InvariantSpec,
    base: Option<&Path>,
    schema: &Schema,
    envs: &[RequestEnv],
) -> Result<Invariant, InvariantError> {
    let name = spec.name.clone();
    let err = |m: String| InvariantError::new(file, format!("invariant `{name}`: {m}"));
    if name.trim().is_empty() {
        return Err(InvariantError::new(
            file,
            "an invariant has an empty `name`",
        ));
    }
    spec.covers.check(envs).map_err(&err)?;
    let text = match (&spec.reference, &spec.reference_file) {
        (Some(_), Some(_)) => {
            return Err(err(
                "give `reference` or `reference_file`, not both".to_string()
            ))
        }
        (Some(t), None) => Some((format!("{file} ({name})"), t.clone())),
        (None, Some(path)) => {
            let full = match base {
                Some(b) => b.join(path),
                None => path.clone(),
            };
            let t = std::fs::read_to_string(&full)
                .map_err(|e| err(format!("`reference_file` `{}`: {e}", full.display())))?;
            Some((full.display().to_string(), t))
        }
        (None, None) => None,
    };
    let reference = match (spec.property.needs_reference(), text) {
        (true, Some((src, t))) => Some(parse_reference(&src, &t, schema).map_err(&err)?),
        (true, None) => {
            return Err(err(format!(
                "property `{}` needs a `reference` policy set",
                spec.property.name()
            )))
        }
        (false, Some(_)) => {
            return Err(err(format!(
                "property `{}` takes no reference policy set",
                spec.property.name()
            )))
        }
        (false, None) => None,
    };
    Ok(Invariant {
        name: spec.name,
        description: spec.description.trim().to_string(),
        file: file.to_string(),
        property: spec.property,
        reference,
        covers: spec.covers,
    })
}

/// Parses a reference policy set and validates it strictly, as the policies
/// themselves are: the solver is only sound for well-typed policies.
pub fn parse_reference(source: &str, text: &str, schema: &Schema) -> Result<PolicySet, String> {
    let set =
        PolicySet::from_str(text).map_err(|e| format!("`{source}`: {}", crate::error_chain(&e)))?;
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    if !result.validation_passed() {
        let messages: Vec<String> = result.validation_errors().map(|e| e.to_string()).collect();
        return Err(format!(
            "`{source}` does not validate against the schema: {}",
            messages.join("; ")
        ));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;
    use crate::model::{compile, Sources};

    fn schema() -> Schema {
        compile(&Sources::embedded()).unwrap().schema
    }

    fn covered(yaml_covers: &str) -> Vec<String> {
        let schema = schema();
        let text = format!(
            "invariants:\n  - name: t\n    property: always_denies\n    covers:\n{yaml_covers}"
        );
        let inv = parse("t.yaml", &text, None, &schema).unwrap().remove(0);
        let mut names: Vec<String> = schema
            .request_envs()
            .filter(|e| inv.covers.covers(e))
            .map(|e| {
                format!(
                    "{} {} {}",
                    e.principal().basename(),
                    e.action().id().unescaped(),
                    e.resource().basename()
                )
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn covers_take_full_and_bare_names_alike() {
        let full = covered("      principal_types: [Portal::Contact]\n      actions: ['Portal::Action::\"Login\"']\n");
        let bare = covered("      principal_types: [Contact]\n      actions: [Login]\n");
        assert_eq!(full, ["Contact Login Account"]);
        assert_eq!(full, bare);
    }

    #[test]
    fn except_actions_leave_those_actions_out() {
        assert_eq!(
            covered("      principal_types: [Contact]\n      except_actions: [Login]\n"),
            ["Contact ReceiveEmail EmailMessage"]
        );
    }

    #[test]
    fn no_covers_means_every_environment_of_the_schema() {
        let schema = schema();
        let inv = parse(
            "t.yaml",
            "invariants:\n  - name: t\n    property: never_errors\n",
            None,
            &schema,
        )
        .unwrap()
        .remove(0);
        assert!(schema.request_envs().all(|e| inv.covers.covers(&e)));
        assert_eq!(schema.request_envs().count(), 25);
    }

    #[test]
    fn the_shipped_invariants_load() {
        let all = embedded(&schema()).unwrap();
        assert_eq!(all.len(), 6);
        assert!(all
            .iter()
            .filter(|i| i.property != PropertyKind::NeverErrors
                && i.property != PropertyKind::AlwaysDenies)
            .all(|i| i.reference.is_some()));
    }
}
