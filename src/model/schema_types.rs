//! What the schema says about attribute and context types, in the small form that
//! converting AuthZEN values needs (`authzen::convert`). Derived once per snapshot.
//!
//! Cedar's public API does not expose attribute types, so they are read from the
//! schema in its JSON form with types resolved.

use std::collections::{BTreeMap, HashMap};

use cedar_policy::{EntityId, EntityTypeName, EntityUid, SchemaFragment};
use serde_json::Value;
use std::str::FromStr;

use super::source::SourceFile;

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

impl std::fmt::Display for Ty {
    /// The type as the schema writes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ty::String => write!(f, "String"),
            Ty::Long => write!(f, "Long"),
            Ty::Bool => write!(f, "Bool"),
            Ty::Entity(name) => write!(f, "{name}"),
            Ty::Extension => write!(f, "an extension type"),
            Ty::Set(element) => write!(f, "Set<{element}>"),
            Ty::Record(attrs) => {
                write!(f, "{{")?;
                let mut first = true;
                for (name, attr) in attrs {
                    let sep = if first { " " } else { ", " };
                    first = false;
                    let optional = if attr.required { "" } else { "?" };
                    write!(f, "{sep}{name}{optional}: {}", attr.ty)?;
                }
                write!(f, " }}")
            }
            Ty::Any => write!(f, "any type"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    pub ty: Ty,
    pub required: bool,
}

/// Attribute types of every entity type and the context type of every action.
#[derive(Debug, Default)]
pub struct SchemaTypes {
    entity_attrs: HashMap<String, Ty>,
    action_context: HashMap<EntityUid, Ty>,
    /// The parent types (`in [..]`) each entity type may have, fully qualified.
    member_of: HashMap<String, Vec<String>>,
    /// False when the schema could not be read this way; conversion then passes values
    /// through and leaves every check to Cedar.
    pub known: bool,
}

/// Nesting deeper than this in common types is treated as unknown (a guard against a
/// cycle, which a valid schema cannot have anyway).
const MAX_DEPTH: usize = 32;

impl SchemaTypes {
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
        let mut info = SchemaTypes {
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
                    let parents = def
                        .get("memberOfTypes")
                        .and_then(Value::as_array)
                        .map(|types| {
                            types
                                .iter()
                                .filter_map(Value::as_str)
                                .map(|t| {
                                    if t.contains("::") {
                                        t.to_string()
                                    } else {
                                        qualify(ns, t)
                                    }
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    info.member_of.insert(qualify(ns, name), parents);
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

    /// The declared entity types, sorted; empty when the schema could not be read
    /// this way.
    pub fn entity_type_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.entity_attrs.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The attribute record of a declared entity type (by its full name), `None` for
    /// a type the schema does not declare.
    pub fn attributes_of(&self, entity_type: &str) -> Option<&Ty> {
        self.entity_attrs.get(entity_type)
    }

    /// The attributes of an entity type that hold one entity reference (not in a set
    /// or a nested record), sorted: the attributes a store keeps index sets of.
    pub fn reference_attributes(&self, entity_type: &str) -> Vec<&str> {
        match self.entity_attrs.get(entity_type) {
            Some(Ty::Record(attrs)) => attrs
                .iter()
                .filter(|(_, a)| matches!(a.ty, Ty::Entity(_)))
                .map(|(name, _)| name.as_str())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The parent types an entity type may have, `None` for an undeclared type.
    pub fn parent_types(&self, entity_type: &str) -> Option<&[String]> {
        self.member_of.get(entity_type).map(Vec::as_slice)
    }

    /// Whether an attribute of this name holds an entity reference in some entity type
    /// or some action's context: reading through it reads another entity, which may be
    /// missing from the data.
    pub fn is_reference(&self, attr: &str) -> bool {
        let in_record = |ty: &Ty| match ty {
            Ty::Record(attrs) => attrs
                .get(attr)
                .is_some_and(|a| matches!(a.ty, Ty::Entity(_))),
            _ => false,
        };
        self.entity_attrs.values().any(in_record) || self.action_context.values().any(in_record)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn portal() -> SchemaTypes {
        SchemaTypes::from_source(&SourceFile::new(
            crate::model::embedded::SCHEMA.0,
            crate::model::embedded::SCHEMA.1,
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
            SchemaFragment::from_cedarschema_str(crate::model::embedded::SCHEMA.1).unwrap();
        let json = fragment.to_json_string().unwrap();
        let info = SchemaTypes::from_source(&SourceFile::new("portal.cedarschema.json", json));
        assert!(info.known);
        let invoice = EntityTypeName::from_str("Portal::Invoice").unwrap();
        assert_eq!(info.attributes(&invoice), portal().attributes(&invoice));
    }
}
