//! Conversion of AuthZEN JSON values (plain strings, numbers, `{type, id}` objects)
//! into Cedar's JSON value format, by the types the schema declares
//! ([`SchemaTypes`](crate::model::SchemaTypes)), keeping only what it declares.
//! Extension values (`ipaddr`, `decimal`, `datetime`) stay strings: Cedar's
//! schema-based parsing calls their constructors itself.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::model::schema_types::{Attr, Ty};

/// Why a value cannot be converted; `path` names it (`subject.properties.email`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{path}`: {message}")]
pub struct ConvertError {
    pub path: String,
    pub message: String,
}

/// Converts a caller's JSON value to Cedar's JSON value format for the type `ty`.
/// Record attributes the type does not declare, and nulls, are dropped (the spec asks
/// for tolerance of unknown data); a declared value of the wrong kind is an error.
/// `reference_type` maps a type written in an entity reference to a Cedar type name.
pub fn convert(
    v: &Value,
    ty: &Ty,
    path: &str,
    reference_type: &dyn Fn(&str) -> String,
) -> Result<Value, ConvertError> {
    let fail = |message: String| ConvertError {
        path: path.to_string(),
        message,
    };
    match ty {
        Ty::Any | Ty::Extension => match v {
            Value::Number(n) if *ty == Ty::Extension => Ok(Value::String(n.to_string())),
            other => Ok(other.clone()),
        },
        Ty::String => match v {
            Value::String(_) => Ok(v.clone()),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            Value::Bool(b) => Ok(Value::String(b.to_string())),
            _ => Err(fail("expected a string".into())),
        },
        Ty::Long => match v {
            Value::Number(n) if n.is_i64() => Ok(v.clone()),
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| fail(format!("expected an integer, got `{s}`"))),
            _ => Err(fail("expected an integer".into())),
        },
        Ty::Bool => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::String(s) if s == "true" || s == "false" => Ok(Value::Bool(s == "true")),
            _ => Err(fail("expected a boolean".into())),
        },
        Ty::Entity(entity_type) => match v {
            Value::String(id) => Ok(entity_ref(entity_type, id)),
            Value::Object(o) if o.contains_key("__entity") => Ok(v.clone()),
            Value::Object(o) => match (
                o.get("type").and_then(Value::as_str),
                o.get("id").and_then(Value::as_str),
            ) {
                (Some(t), Some(id)) => Ok(entity_ref(&reference_type(t), id)),
                _ => Err(fail(format!(
                    "expected an id of a `{entity_type}` or an object with `type` and `id`"
                ))),
            },
            _ => Err(fail(format!(
                "expected an id of a `{entity_type}` or an object with `type` and `id`"
            ))),
        },
        Ty::Set(element) => match v {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| convert(item, element, &format!("{path}[{i}]"), reference_type))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            _ => Err(fail("expected an array".into())),
        },
        Ty::Record(attrs) => match v {
            Value::Object(o) => convert_record(o, attrs, path, reference_type).map(Value::Object),
            _ => Err(fail("expected an object".into())),
        },
    }
}

/// Converts the declared attributes of an object; undeclared ones and nulls are left
/// out.
pub fn convert_record(
    o: &Map<String, Value>,
    attrs: &BTreeMap<String, Attr>,
    path: &str,
    reference_type: &dyn Fn(&str) -> String,
) -> Result<Map<String, Value>, ConvertError> {
    let mut out = Map::new();
    for (k, value) in o {
        if value.is_null() {
            continue;
        }
        let Some(attr) = attrs.get(k) else {
            continue;
        };
        let at = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        out.insert(k.clone(), convert(value, &attr.ty, &at, reference_type)?);
    }
    Ok(out)
}

fn entity_ref(entity_type: &str, id: &str) -> Value {
    serde_json::json!({"__entity": {"type": entity_type, "id": id}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{embedded, SchemaTypes, SourceFile};
    use cedar_policy::EntityUid;
    use serde_json::json;
    use std::str::FromStr;

    fn portal() -> SchemaTypes {
        SchemaTypes::from_source(&SourceFile::new(embedded::SCHEMA.0, embedded::SCHEMA.1))
    }

    #[test]
    fn values_convert_by_declared_type_and_unknown_keys_drop() {
        let info = portal();
        let login = EntityUid::from_str(r#"Portal::Action::"Login""#).unwrap();
        let map = |t: &str| {
            if t == "user" {
                "Portal::User".to_string()
            } else {
                t.to_string()
            }
        };
        let converted = convert(
            &json!({"secondFactor": "true", "clientIp": "10.0.0.1", "time": "noon"}),
            &info.context(&login),
            "context",
            &map,
        );
        assert_eq!(
            converted.ok(),
            Some(json!({"secondFactor": true, "clientIp": "10.0.0.1"}))
        );
        let owner = convert(
            &json!({"type": "user", "id": "olivia"}),
            &Ty::Entity("Portal::User".into()),
            "x",
            &map,
        );
        assert_eq!(
            owner.ok(),
            Some(json!({"__entity": {"type": "Portal::User", "id": "olivia"}}))
        );
        let bad = convert(
            &json!({"secondFactor": 3}),
            &info.context(&login),
            "context",
            &map,
        );
        assert_eq!(
            bad.err().map(|e| e.path),
            Some("context.secondFactor".to_string())
        );
    }
}
