//! What the schema says about attribute and context types, in the small form the
//! AuthZEN conversion needs, and the conversion itself: AuthZEN JSON values (plain
//! strings, numbers, `{type, id}` objects) into Cedar's JSON value format, keeping
//! only what the schema declares.
//!
//! Cedar's public API does not expose attribute types, so they are read from the
//! schema in its JSON form with types resolved. Extension values (`ipaddr`,
//! `decimal`, `datetime`) stay strings: Cedar's schema-based parsing calls their
//! constructors itself.

use std::collections::{BTreeMap, HashMap};

use cedar_policy::{EntityId, EntityTypeName, EntityUid, SchemaFragment};
use serde_json::{Map, Value};
use std::str::FromStr;

use crate::policy::SourceFile;

/// A Cedar type, as far as conversion cares.
#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    String,
    Long,
    Bool,
    /// An entity reference of this (fully qualified) type.
    Entity(String),
    /// An extension type (`ipaddr`, `decimal`, `datetime`, `duration`).
    Extension,
    Set(Box<Ty>),
    Record(BTreeMap<String, Attr>),
    /// Unknown to this module: passed to Cedar unchanged, which checks it.
    Any,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    pub ty: Ty,
    pub required: bool,
}

/// Attribute types of every entity type and the context type of every action.
#[derive(Debug, Default)]
pub struct SchemaInfo {
    entity_attrs: HashMap<String, Ty>,
    action_context: HashMap<EntityUid, Ty>,
    /// False when the schema could not be read this way; conversion then passes values
    /// through and leaves every check to Cedar.
    pub known: bool,
}

/// Nesting deeper than this in common types is treated as unknown (a guard against a
/// cycle, which a valid schema cannot have anyway).
const MAX_DEPTH: usize = 32;

impl SchemaInfo {
    /// Reads the schema source the snapshot was built from.
    pub fn from_source(schema: &SourceFile) -> Self {
        let text = if schema.name.ends_with(".json") {
            let Ok(fragment) = SchemaFragment::from_json_str(&schema.text) else {
                return Self::default();
            };
            let Ok(text) = fragment.to_cedarschema() else {
                return Self::default();
            };
            text
        } else {
            schema.text.clone()
        };
        match cedar_policy::schema_str_to_json_with_resolved_types(&text) {
            Ok((json, _)) => Self::from_resolved_json(&json),
            Err(_) => Self::default(),
        }
    }

    fn from_resolved_json(json: &Value) -> Self {
        let Some(namespaces) = json.as_object() else {
            return Self::default();
        };
        let qualify = |ns: &str, name: &str| {
            if ns.is_empty() {
                name.to_string()
            } else {
                format!("{ns}::{name}")
            }
        };
        let mut common: HashMap<String, Value> = HashMap::new();
        let mut entity_names: Vec<String> = Vec::new();
        for (ns, body) in namespaces {
            if let Some(ct) = body.get("commonTypes").and_then(Value::as_object) {
                for (name, ty) in ct {
                    common.insert(qualify(ns, name), ty.clone());
                }
            }
            if let Some(et) = body.get("entityTypes").and_then(Value::as_object) {
                entity_names.extend(et.keys().map(|k| qualify(ns, k)));
            }
        }
        let resolver = Resolver {
            common: &common,
            entities: &entity_names,
        };
        let mut info = SchemaInfo {
            known: true,
            ..Self::default()
        };
        for (ns, body) in namespaces {
            if let Some(et) = body.get("entityTypes").and_then(Value::as_object) {
                for (name, def) in et {
                    let shape = def
                        .get("shape")
                        .map_or_else(|| Ty::Record(BTreeMap::new()), |s| resolver.ty(s, 0));
                    info.entity_attrs.insert(qualify(ns, name), shape);
                }
            }
            if let Some(actions) = body.get("actions").and_then(Value::as_object) {
                let Ok(action_type) = EntityTypeName::from_str(&qualify(ns, "Action")) else {
                    continue;
                };
                for (id, def) in actions {
                    let ctx = def
                        .get("appliesTo")
                        .and_then(|a| a.get("context"))
                        .map_or_else(|| Ty::Record(BTreeMap::new()), |c| resolver.ty(c, 0));
                    let uid =
                        EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(id));
                    info.action_context.insert(uid, ctx);
                }
            }
        }
        info
    }

    /// The record type of an entity type's attributes.
    pub fn attributes(&self, entity_type: &EntityTypeName) -> Ty {
        if !self.known {
            return Ty::Any;
        }
        self.entity_attrs
            .get(&entity_type.to_string())
            .cloned()
            .unwrap_or_else(|| Ty::Record(BTreeMap::new()))
    }

    /// The context type of an action.
    pub fn context(&self, action: &EntityUid) -> Ty {
        if !self.known {
            return Ty::Any;
        }
        self.action_context
            .get(action)
            .cloned()
            .unwrap_or_else(|| Ty::Record(BTreeMap::new()))
    }
}

struct Resolver<'a> {
    common: &'a HashMap<String, Value>,
    entities: &'a [String],
}

impl Resolver<'_> {
    fn ty(&self, v: &Value, depth: usize) -> Ty {
        if depth > MAX_DEPTH {
            return Ty::Any;
        }
        let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
        match v.get("type").and_then(Value::as_str).unwrap_or_default() {
            "String" | "__cedar::String" => Ty::String,
            "Long" | "__cedar::Long" => Ty::Long,
            "Bool" | "Boolean" | "__cedar::Bool" => Ty::Bool,
            "Set" => Ty::Set(Box::new(
                v.get("element").map_or(Ty::Any, |e| self.ty(e, depth + 1)),
            )),
            "Record" => {
                let mut attrs = BTreeMap::new();
                if let Some(a) = v.get("attributes").and_then(Value::as_object) {
                    for (k, t) in a {
                        let required = t.get("required").and_then(Value::as_bool).unwrap_or(true);
                        attrs.insert(
                            k.clone(),
                            Attr {
                                ty: self.ty(t, depth + 1),
                                required,
                            },
                        );
                    }
                }
                Ty::Record(attrs)
            }
            "Entity" => Ty::Entity(name.to_string()),
            "Extension" => Ty::Extension,
            "EntityOrCommon" => self.named(name, depth),
            other => self.named(other, depth),
        }
    }

    fn named(&self, name: &str, depth: usize) -> Ty {
        if let Some(def) = self.common.get(name) {
            return self.ty(def, depth + 1);
        }
        if name.starts_with("__cedar::")
            || ["ipaddr", "decimal", "datetime", "duration"].contains(&name)
        {
            return Ty::Extension;
        }
        if self.entities.iter().any(|e| e == name) {
            return Ty::Entity(name.to_string());
        }
        Ty::Any
    }
}

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
    use serde_json::json;

    fn portal() -> SchemaInfo {
        SchemaInfo::from_source(&SourceFile::new(
            crate::policy::embedded::SCHEMA.0,
            crate::policy::embedded::SCHEMA.1,
        ))
    }

    #[test]
    fn the_portal_schema_reads_with_entity_and_context_types() {
        let info = portal();
        assert!(info.known);
        let Ty::Record(account) =
            info.attributes(&EntityTypeName::from_str("Portal::Account").unwrap())
        else {
            unreachable!("a record")
        };
        assert_eq!(
            account.get("owner").map(|a| a.ty.clone()),
            Some(Ty::Entity("Portal::User".into()))
        );
        let login = EntityUid::from_str(r#"Portal::Action::"Login""#).unwrap();
        let Ty::Record(ctx) = info.context(&login) else {
            unreachable!("a record")
        };
        assert_eq!(
            ctx.get("clientIp").map(|a| a.ty.clone()),
            Some(Ty::Extension)
        );
        assert_eq!(ctx.get("secondFactor").map(|a| a.required), Some(false));
    }

    #[test]
    fn a_schema_in_the_json_format_reads_the_same() {
        let (fragment, _) =
            SchemaFragment::from_cedarschema_str(crate::policy::embedded::SCHEMA.1).unwrap();
        let json = fragment.to_json_string().unwrap();
        let info = SchemaInfo::from_source(&SourceFile::new("portal.cedarschema.json", json));
        assert!(info.known);
        let invoice = EntityTypeName::from_str("Portal::Invoice").unwrap();
        assert_eq!(info.attributes(&invoice), portal().attributes(&invoice));
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
