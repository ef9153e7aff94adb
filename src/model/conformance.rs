//! Why entity data does not fit the schema, said in terms of the data: the entity's
//! uid, the attribute or parent at fault, and what the schema expects there.
//!
//! Cedar decides whether data conforms; its error names the first misfit in general
//! terms and its parts are not public. When Cedar rejects a data set, [`explain`]
//! walks the same JSON with the schema's [`SchemaTypes`] and names every misfit it can
//! see, so an operator fixes a file (or a Redis import) in one round. Where it sees
//! none (a misfit it does not model, such as an extension value), Cedar's own message
//! stands.

use std::collections::BTreeMap;
use std::str::FromStr;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};
use serde_json::Value;

use super::schema_types::{Attr, SchemaTypes, Ty};

/// Most misfits reported for one data set: enough to show a pattern, few enough to
/// read.
const MAX_MISFITS: usize = 20;

/// Every misfit of `data` (Cedar's JSON entity format: an array of entities) that the
/// schema's types show, one message each, naming the entity's uid, the attribute or
/// parent and the expected type. Empty when none is seen.
pub fn explain(data: &Value, types: &SchemaTypes) -> Vec<String> {
    if !types.known {
        return Vec::new();
    }
    let Some(entities) = data.as_array() else {
        return vec!["entity data must be a JSON array of entities".to_string()];
    };
    let mut out = Vec::new();
    for entity in entities {
        misfits_of(entity, types, &mut out);
        if out.len() >= MAX_MISFITS {
            out.truncate(MAX_MISFITS);
            out.push(format!("(only the first {MAX_MISFITS} misfits are listed)"));
            break;
        }
    }
    out
}

/// The type and id of an entity reference in Cedar JSON: `{"type", "id"}`, or the
/// same under `__entity`.
fn reference(v: &Value) -> Option<(&str, &str)> {
    let v = v.get("__entity").unwrap_or(v);
    Some((v.get("type")?.as_str()?, v.get("id")?.as_str()?))
}

/// A uid as Cedar writes it, `Type::"id"`.
fn uid_text(ty: &str, id: &str) -> String {
    EntityTypeName::from_str(ty).map_or_else(
        |_| format!("{ty}::{id:?}"),
        |t| EntityUid::from_type_name_and_id(t, EntityId::new(id)).to_string(),
    )
}

/// A list of names in backticks.
fn listed(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn misfits_of(entity: &Value, types: &SchemaTypes, out: &mut Vec<String>) {
    let Some((ty, id)) = entity.get("uid").and_then(reference) else {
        out.push(format!(
            "an entity has no `uid` with a `type` and an `id`: {}",
            short(entity)
        ));
        return;
    };
    // Action entities come from the schema; Cedar checks them against it.
    if ty == "Action" || ty.ends_with("::Action") {
        return;
    }
    let uid = uid_text(ty, id);
    let Some(shape) = types.attributes_of(ty) else {
        out.push(format!(
            "entity `{uid}`: entity type `{ty}` is not declared in the schema (declared: {})",
            listed(&types.entity_type_names())
        ));
        return;
    };
    let empty = Value::Object(serde_json::Map::new());
    let attrs = entity.get("attrs").unwrap_or(&empty);
    match shape {
        Ty::Record(declared) => record(&uid, ty, "", attrs, declared, out),
        other => check(&uid, "", attrs, other, out),
    }
    let allowed = types.parent_types(ty).unwrap_or_default();
    for parent in entity
        .get("parents")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
    {
        let Some((parent_ty, parent_id)) = reference(parent) else {
            continue;
        };
        if allowed.iter().any(|a| a == parent_ty) {
            continue;
        }
        let parent_uid = uid_text(parent_ty, parent_id);
        let may = if allowed.is_empty() {
            format!("a `{ty}` may have no parents")
        } else {
            let names: Vec<&str> = allowed.iter().map(String::as_str).collect();
            format!("a `{ty}` may only be in {}", listed(&names))
        };
        out.push(format!(
            "entity `{uid}`: parent `{parent_uid}` has type `{parent_ty}`, but {may}"
        ));
    }
}

/// Checks a record's attributes: required ones present, none undeclared, each of its
/// type. `path` is the attribute path so far (`address.` inside `address`).
fn record(
    uid: &str,
    owner: &str,
    path: &str,
    value: &Value,
    declared: &BTreeMap<String, Attr>,
    out: &mut Vec<String>,
) {
    let Some(given) = value.as_object() else {
        out.push(format!(
            "entity `{uid}`: {} must be a record, found {}",
            if path.is_empty() {
                "`attrs`".to_string()
            } else {
                format!("attribute `{}`", path.trim_end_matches('.'))
            },
            short(value)
        ));
        return;
    };
    for (name, attr) in declared {
        match given.get(name) {
            None if attr.required => out.push(format!(
                "entity `{uid}`: required attribute `{path}{name}` ({}) is missing",
                attr.ty
            )),
            None => {}
            Some(v) => check(uid, &format!("{path}{name}"), v, &attr.ty, out),
        }
    }
    for name in given.keys().filter(|n| !declared.contains_key(*n)) {
        let names: Vec<&str> = declared.keys().map(String::as_str).collect();
        let of = if path.is_empty() {
            format!("`{owner}`")
        } else {
            format!("`{}`", path.trim_end_matches('.'))
        };
        out.push(format!(
            "entity `{uid}`: attribute `{path}{name}` is not declared for {of} (declared: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                listed(&names)
            }
        ));
    }
}

/// Checks one attribute value against its type.
fn check(uid: &str, path: &str, value: &Value, ty: &Ty, out: &mut Vec<String>) {
    let fits = match ty {
        Ty::String => value.is_string(),
        Ty::Long => value.is_i64(),
        Ty::Bool => value.is_boolean(),
        Ty::Entity(expected) => match reference(value) {
            Some((given, _)) => given == expected,
            None => false,
        },
        Ty::Set(element) => match value.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    check(uid, &format!("{path}[{i}]"), item, element, out);
                }
                true
            }
            None => false,
        },
        Ty::Record(attrs) => {
            record(uid, "", &format!("{path}."), value, attrs, out);
            true
        }
        // Extension values take several JSON forms; Cedar checks them.
        Ty::Extension | Ty::Any => true,
    };
    if !fits {
        out.push(format!(
            "entity `{uid}`: attribute `{path}` must be {ty}, found {}",
            short(value)
        ));
    }
}

/// A JSON value in backticks, cut to a readable length.
fn short(value: &Value) -> String {
    let text = value.to_string();
    let cut: String = text.chars().take(60).collect();
    if cut.len() < text.len() {
        format!("`{cut}…`")
    } else {
        format!("`{cut}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::source::{embedded, SourceFile};
    use serde_json::json;

    fn portal() -> SchemaTypes {
        SchemaTypes::from_source(&SourceFile::new(embedded::SCHEMA.0, embedded::SCHEMA.1))
    }

    fn user(attrs: Value, parents: Value) -> Value {
        json!([{"uid": {"type": "Portal::User", "id": "x"}, "attrs": attrs, "parents": parents}])
    }

    #[test]
    fn each_misfit_names_the_uid_the_attribute_and_the_expected_type() {
        let good = json!({"email": "x@acme.example", "disabled": false, "twoFactorEnrolled": true});
        let cases = [
            (
                user(json!({"email": 3, "disabled": false, "twoFactorEnrolled": true}), json!([])),
                "entity `Portal::User::\"x\"`: attribute `email` must be String, found `3`",
            ),
            (
                user(json!({"email": "a", "twoFactorEnrolled": true}), json!([])),
                "entity `Portal::User::\"x\"`: required attribute `disabled` (Bool) is missing",
            ),
            (
                json!([{"uid": {"type": "Portal::Robot", "id": "r2"}, "attrs": {}, "parents": []}]),
                "entity `Portal::Robot::\"r2\"`: entity type `Portal::Robot` is not declared in the schema (declared: `Portal::Account`",
            ),
            (
                user(good.clone(), json!([{"type": "Portal::Robot", "id": "r2"}])),
                "entity `Portal::User::\"x\"`: parent `Portal::Robot::\"r2\"` has type `Portal::Robot`, but a `Portal::User` may only be in `Portal::Account`",
            ),
        ];
        for (data, expected) in cases {
            let found = explain(&data, &portal());
            assert!(
                found.iter().any(|m| m.starts_with(expected)),
                "{expected}\n{found:#?}"
            );
        }
        assert!(explain(
            &user(good, json!([{"type": "Portal::Account", "id": "acme"}])),
            &portal()
        )
        .is_empty());
    }

    #[test]
    fn the_shipped_demo_data_fits() {
        let data: Value = serde_json::from_str(embedded::ENTITIES.1).unwrap();
        assert_eq!(explain(&data, &portal()), Vec::<String>::new());
    }
}
